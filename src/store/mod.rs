//! What must outlive one request, one process, or be shared by a fleet: the one seam the token
//! cache and the rotation of refresh tokens use (and, later, connections), with two backends.
//!
//! - `Embedded` (the default, one process): nothing is shared; tokens live in the process's
//!   cache, and a refresh-token chain lives in its sealed file under `proxy.state_dir`.
//! - `redis::RedisState` (`proxy.shared_state`): replicas that share a Redis behave as one
//!   proxy. A token fetched by one serves all; a fleet-wide lease makes one replica fetch; a
//!   rotated refresh token is committed with compare-and-swap before its access token is
//!   used. Every value is sealed (`seal`), bound to prefix, kind, credential and tenant.
//!
//! The cache and the credential types see only `SharedState`; Redis is known only here.

pub mod redis;
pub mod seal;
pub mod sealed_file;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::secret::Secret;

/// Why shared state could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("shared state (Redis) is unreachable: {0}")]
    Unreachable(String),
    #[error("a shared value for {0} cannot be opened (written under another CREDPROXY_STATE_KEY, or tampered with)")]
    Unsealable(String),
}

/// What names one token across the fleet: the credential, what it was configured with (a
/// digest: a changed secret or scope names another token), and its tenant and target host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenId {
    pub credential: Arc<str>,
    /// SHA-256 of the source's identity (see `TokenSource::identity`).
    pub identity: [u8; 32],
    pub tenant: Option<Arc<str>>,
    /// For tokens minted per target host.
    pub target: Option<Arc<str>>,
}

/// A token as replicas share it: the header value and its timeline in wall-clock time.
#[derive(Debug, Clone)]
pub struct SharedToken {
    pub header: Secret,
    pub fetched_at: SystemTime,
    pub refresh_at: SystemTime,
    pub expires_at: SystemTime,
}

/// The fleet-wide right to fetch one token, with its fencing number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// Held by this replica until released or `ttl` passes.
    Held { fence: u64 },
    /// Another replica holds it: wait for its publish.
    Busy,
}

/// What names a refresh-token chain: the credential, its tenant, and the seed it started from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChainId {
    pub credential: Arc<str>,
    pub tenant: Option<Arc<str>>,
    /// SHA-256 of the seed refresh token, hex: a new seed starts a new chain.
    pub seed_sha256: String,
}

/// One link of a refresh-token chain: the token to redeem next, and how many rotations led
/// to it.
#[derive(Debug, Clone)]
pub struct Link {
    pub refresh_token: Secret,
    pub version: u64,
}

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    Done,
    /// Another replica committed first: re-read instead of using what was redeemed.
    Stale {
        current: u64,
    },
}

/// Whether this replica may redeem a chain's link now (a redemption intent, see
/// `SharedState::claim`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours, until a commit ends it, `unclaim` drops it, or its time-to-live passes.
    Mine,
    /// Another replica is redeeming this link and has not committed what it got.
    Busy,
    /// The chain is not at that version (it moved on, or is gone): read it again.
    Stale,
}

/// Whether shared state is in use and reachable, for `/credentials` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Embedded,
    Up,
    Unreachable,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Embedded => "embedded",
            Health::Up => "up",
            Health::Unreachable => "unreachable",
        }
    }
}

/// An event one replica tells all the others (or the backend tells its own replica).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Drop this credential's tokens (an admin refresh on another replica).
    Invalidate {
        credential: Arc<str>,
        tenant: Option<Arc<str>>,
    },
    /// A connection was created, replaced or deleted: read it again.
    Connection {
        credential: Arc<str>,
        tenant: Arc<str>,
    },
    /// Events may have been missed (the subscription was re-made), or the shared state lost
    /// its data: compare every connection with it.
    Resync,
}

/// A connection document as the fleet holds it, with the revision that orders changes.
#[derive(Debug, Clone)]
pub struct StoredConnection {
    pub credential: String,
    pub tenant: String,
    pub revision: u64,
    pub doc: Vec<u8>,
}

/// The seam. Every method of the embedded backend succeeds at once and shares nothing.
#[async_trait]
pub trait SharedState: Send + Sync + std::fmt::Debug {
    /// Whether tokens are shared at all (the cache skips the rest when not).
    fn shared(&self) -> bool;
    fn health(&self) -> Health;
    /// A token another replica published, if still there.
    async fn token(&self, id: &TokenId) -> Result<Option<SharedToken>, StoreError>;
    /// Takes the fleet-wide lease to fetch `id`, for at most `ttl`.
    async fn lease(&self, id: &TokenId, ttl: Duration) -> Result<Lease, StoreError>;
    /// Extends a held lease while its fetch runs; false when it is no longer ours.
    async fn renew(&self, id: &TokenId, fence: u64, ttl: Duration) -> Result<bool, StoreError>;
    /// Publishes a fetched token (kept until it expires) and releases the lease.
    async fn publish(
        &self,
        id: &TokenId,
        token: &SharedToken,
        fence: u64,
    ) -> Result<(), StoreError>;
    /// Releases the lease without a token (the fetch failed).
    async fn release(&self, id: &TokenId, fence: u64) -> Result<(), StoreError>;
    /// Waits until something is published for `id`, or `max` passes.
    async fn wait(&self, id: &TokenId, max: Duration);
    /// Drops the shared token `id` (if given) and tells every replica to drop its tokens of
    /// `credential` (for `tenant`).
    async fn invalidate(
        &self,
        credential: &Arc<str>,
        tenant: Option<&Arc<str>>,
        id: Option<&TokenId>,
    ) -> Result<(), StoreError>;
    /// Events from other replicas, for the cache to act on (embedded: none ever).
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event>;
    /// The chain's latest committed link, if the fleet has one.
    async fn chain(&self, id: &ChainId) -> Result<Option<Link>, StoreError>;
    /// Commits `next` if the chain is still at `prev` (0: no link yet).
    async fn commit(&self, id: &ChainId, prev: u64, next: &Link) -> Result<Commit, StoreError>;
    /// Puts `link` in place if the fleet has no link or an older one (a first use, or a
    /// restore after Redis lost its data); returns the fleet's link afterwards.
    async fn seed(&self, id: &ChainId, link: &Link) -> Result<Option<Link>, StoreError>;
    /// Marks the chain's link `version` as being redeemed by `owner` for at most `ttl`, unless
    /// another owner's mark is live. A commit, or a seed of a newer link, ends the mark: a
    /// replica whose commit failed after the provider rotated keeps the others off the old
    /// token until its commit lands.
    async fn claim(
        &self,
        id: &ChainId,
        version: u64,
        owner: &str,
        ttl: Duration,
    ) -> Result<Claim, StoreError>;
    /// Drops `owner`'s mark: its redemption rotated nothing.
    async fn unclaim(&self, id: &ChainId, owner: &str) -> Result<(), StoreError>;
    /// Forgets a chain (its connection was deleted or replaced).
    async fn drop_chain(&self, id: &ChainId) -> Result<(), StoreError>;
    /// Every connection document the fleet holds; None: this backend holds none (one
    /// process keeps them in `state_dir`).
    async fn connections(&self) -> Result<Option<Vec<StoredConnection>>, StoreError>;
    /// One connection document.
    async fn connection(
        &self,
        credential: &str,
        tenant: &str,
    ) -> Result<Option<StoredConnection>, StoreError>;
    /// Stores a connection document unless the fleet's is as new or newer (true: stored),
    /// and tells every replica.
    async fn put_connection(&self, c: &StoredConnection) -> Result<bool, StoreError>;
    /// Keeps a short-lived value (a connect link, an OAuth state) for `ttl`.
    async fn put_once(
        &self,
        kind: &str,
        id: &str,
        doc: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Takes a short-lived value: whoever takes it first gets it, and it is gone.
    async fn take_once(&self, kind: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Short-lived values of one process, with their expiry.
type OnceMap = std::collections::HashMap<(String, String), (Vec<u8>, std::time::Instant)>;

/// Most short-lived values one process keeps (links and states nobody used expire anyway).
const MAX_ONCE: usize = 100_000;

/// One process: nothing is shared, nothing can fail.
#[derive(Debug)]
pub struct Embedded {
    events: tokio::sync::broadcast::Sender<Event>,
    once: std::sync::Mutex<OnceMap>,
}

impl Default for Embedded {
    fn default() -> Self {
        Embedded {
            events: tokio::sync::broadcast::channel(1).0,
            once: std::sync::Mutex::new(OnceMap::new()),
        }
    }
}

#[async_trait]
impl SharedState for Embedded {
    fn shared(&self) -> bool {
        false
    }
    fn health(&self) -> Health {
        Health::Embedded
    }
    async fn token(&self, _: &TokenId) -> Result<Option<SharedToken>, StoreError> {
        Ok(None)
    }
    async fn lease(&self, _: &TokenId, _: Duration) -> Result<Lease, StoreError> {
        Ok(Lease::Held { fence: 0 })
    }
    async fn renew(&self, _: &TokenId, _: u64, _: Duration) -> Result<bool, StoreError> {
        Ok(true)
    }
    async fn publish(&self, _: &TokenId, _: &SharedToken, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
    async fn release(&self, _: &TokenId, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
    async fn wait(&self, _: &TokenId, _: Duration) {}
    async fn invalidate(
        &self,
        _: &Arc<str>,
        _: Option<&Arc<str>>,
        _: Option<&TokenId>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }
    async fn chain(&self, _: &ChainId) -> Result<Option<Link>, StoreError> {
        Ok(None)
    }
    async fn commit(&self, _: &ChainId, _: u64, _: &Link) -> Result<Commit, StoreError> {
        Ok(Commit::Done)
    }
    async fn seed(&self, _: &ChainId, link: &Link) -> Result<Option<Link>, StoreError> {
        Ok(Some(link.clone()))
    }
    async fn claim(&self, _: &ChainId, _: u64, _: &str, _: Duration) -> Result<Claim, StoreError> {
        Ok(Claim::Mine)
    }
    async fn unclaim(&self, _: &ChainId, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn drop_chain(&self, _: &ChainId) -> Result<(), StoreError> {
        Ok(())
    }
    async fn connections(&self) -> Result<Option<Vec<StoredConnection>>, StoreError> {
        Ok(None)
    }
    async fn connection(&self, _: &str, _: &str) -> Result<Option<StoredConnection>, StoreError> {
        Ok(None)
    }
    async fn put_connection(&self, _: &StoredConnection) -> Result<bool, StoreError> {
        Ok(true)
    }
    async fn put_once(
        &self,
        kind: &str,
        id: &str,
        doc: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut once = self
            .once
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        once.retain(|_, (_, until)| *until > now);
        if once.len() >= MAX_ONCE {
            return Err(StoreError::Unreachable(format!(
                "{MAX_ONCE} connect links and states are pending: try again later"
            )));
        }
        once.insert((kind.into(), id.into()), (doc.to_vec(), now + ttl));
        Ok(())
    }
    async fn take_once(&self, kind: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut once = self
            .once
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let taken = once.remove(&(kind.to_string(), id.to_string()));
        Ok(taken
            .filter(|(_, until)| *until > std::time::Instant::now())
            .map(|(d, _)| d))
    }
}
