//! Where a rotation ends up (`settle`) against a store that keeps one chain the way the Redis
//! scripts do: committed over its version, lost, already holding the link, or forked.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::store::{
    Embedded, Event, Health, Lease, SharedToken, StoredConnection, TokenId,
};

/// One chain (version and token) with COMMIT and SEED as `store::redis` runs them; the rest
/// is the embedded backend's.
#[derive(Debug, Default)]
struct OneChain {
    link: std::sync::Mutex<Option<(u64, String)>>,
    inner: Embedded,
}

impl OneChain {
    fn at(version: u64, token: &str) -> OneChain {
        let c = OneChain::default();
        *c.link.lock().unwrap() = Some((version, token.into()));
        c
    }
    fn now(&self) -> Option<(u64, String)> {
        self.link.lock().unwrap().clone()
    }
}

fn link(version: u64, token: &str) -> Link {
    Link {
        refresh_token: Secret::new(token.to_string()),
        version,
    }
}

#[async_trait]
impl SharedState for OneChain {
    fn shared(&self) -> bool {
        true
    }
    fn health(&self) -> Health {
        Health::Up
    }
    async fn token(&self, id: &TokenId) -> Result<Option<SharedToken>, StoreError> {
        self.inner.token(id).await
    }
    async fn lease(&self, id: &TokenId, ttl: Duration) -> Result<Lease, StoreError> {
        self.inner.lease(id, ttl).await
    }
    async fn renew(&self, id: &TokenId, fence: u64, ttl: Duration) -> Result<bool, StoreError> {
        self.inner.renew(id, fence, ttl).await
    }
    async fn publish(&self, id: &TokenId, t: &SharedToken, fence: u64) -> Result<(), StoreError> {
        self.inner.publish(id, t, fence).await
    }
    async fn release(&self, id: &TokenId, fence: u64) -> Result<(), StoreError> {
        self.inner.release(id, fence).await
    }
    async fn wait(&self, id: &TokenId, max: Duration) {
        self.inner.wait(id, max).await
    }
    async fn invalidate(
        &self,
        c: &Arc<str>,
        t: Option<&Arc<str>>,
        id: Option<&TokenId>,
    ) -> Result<(), StoreError> {
        self.inner.invalidate(c, t, id).await
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.subscribe()
    }
    async fn chain(&self, _: &ChainId) -> Result<Option<Link>, StoreError> {
        Ok(self.now().map(|(v, t)| link(v, &t)))
    }
    /// COMMIT: a missing chain counts as version 0.
    async fn commit(&self, _: &ChainId, prev: u64, next: &Link) -> Result<Commit, StoreError> {
        let mut l = self.link.lock().unwrap();
        let v = l.as_ref().map_or(0, |(v, _)| *v);
        if v != prev {
            return Ok(Commit::Stale { current: v });
        }
        *l = Some((next.version, next.refresh_token.expose().into()));
        Ok(Commit::Done)
    }
    /// SEED: set when missing or older; the chain afterwards.
    async fn seed(&self, id: &ChainId, next: &Link) -> Result<Option<Link>, StoreError> {
        {
            let mut l = self.link.lock().unwrap();
            if l.as_ref().is_none_or(|(v, _)| *v < next.version) {
                *l = Some((next.version, next.refresh_token.expose().into()));
            }
        }
        self.chain(id).await
    }
    async fn claim(&self, _: &ChainId, _: u64, _: &str, _: Duration) -> Result<Claim, StoreError> {
        Ok(Claim::Mine)
    }
    async fn unclaim(&self, _: &ChainId, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn drop_chain(&self, id: &ChainId) -> Result<(), StoreError> {
        self.inner.drop_chain(id).await
    }
    async fn connections(&self) -> Result<Option<Vec<StoredConnection>>, StoreError> {
        self.inner.connections().await
    }
    async fn connection(&self, c: &str, t: &str) -> Result<Option<StoredConnection>, StoreError> {
        self.inner.connection(c, t).await
    }
    async fn put_connection(&self, c: &StoredConnection) -> Result<bool, StoreError> {
        self.inner.put_connection(c).await
    }
    async fn put_once(&self, k: &str, i: &str, d: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.inner.put_once(k, i, d, ttl).await
    }
    async fn take_once(&self, k: &str, i: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.take_once(k, i).await
    }
}

fn id() -> ChainId {
    ChainId {
        credential: "hub".into(),
        tenant: None,
        seed_sha256: "00".into(),
    }
}

#[tokio::test]
async fn a_rotation_commits_over_its_version() {
    let s = OneChain::at(3, "r3");
    let r = settle(&s, &id(), 3, &link(4, "r4")).await;
    assert!(matches!(r, Ok(Settled::Committed)));
    assert_eq!(s.now(), Some((4, "r4".into())));
}

#[tokio::test]
async fn a_chain_redis_lost_gets_the_link_back_instead_of_a_fork() {
    let s = OneChain::default();
    let r = settle(&s, &id(), 3, &link(4, "r4")).await;
    assert!(matches!(r, Ok(Settled::Committed)));
    assert_eq!(s.now(), Some((4, "r4".into())));
}

#[tokio::test]
async fn an_older_chain_gets_the_link_back() {
    // Redis restarted from an old snapshot: version 2 where the rotation left 3.
    let s = OneChain::at(2, "r2");
    let r = settle(&s, &id(), 3, &link(4, "r4")).await;
    assert!(matches!(r, Ok(Settled::Committed)));
    assert_eq!(s.now(), Some((4, "r4".into())));
}

#[tokio::test]
async fn the_link_already_there_counts_as_committed() {
    // This replica's own restore (seed) landed before the retried commit.
    let s = OneChain::at(4, "r4");
    let r = settle(&s, &id(), 3, &link(4, "r4")).await;
    assert!(matches!(r, Ok(Settled::Committed)));
}

#[tokio::test]
async fn another_token_at_that_version_is_a_fork() {
    let s = OneChain::at(4, "someone-elses-r4");
    let r = settle(&s, &id(), 3, &link(4, "r4")).await;
    assert!(matches!(r, Ok(Settled::Forked { current: 4 })));
    assert_eq!(s.now(), Some((4, "someone-elses-r4".into())), "theirs is left");
    let s = OneChain::at(6, "r6");
    let r = settle(&s, &id(), 3, &link(4, "r4")).await;
    assert!(matches!(r, Ok(Settled::Forked { current: 6 })));
}
