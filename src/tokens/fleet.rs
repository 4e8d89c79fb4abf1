//! The cache in a fleet: on a local miss, a token another replica published is taken; if
//! there is none, one replica takes the fleet-wide lease and fetches while the others wait
//! for its publish, so each refresh is one token request however many replicas there are.
//! The request path never waits on shared state while its replica holds a valid token.
//!
//! When shared state is unreachable, each replica fetches for itself (rotating refresh
//! tokens refuse, see `oauth2_refresh_token`), and recovers when it is back.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use tokio::time::Instant;

use super::{Slot, Token, TokenCache, TokenError};
use crate::secret::Secret;
use crate::store::{Event, Lease, SharedToken, StoreError};

/// How long a lease lives without renewal: a replica that dies while fetching is replaced
/// after this.
pub const LEASE_TTL: Duration = Duration::from_secs(5);

impl TokenCache {
    /// A token for `slot`, fetched here or (in a fleet) by whichever replica holds the lease.
    /// `stale` is a token known to be bad or due: an equal shared one does not count.
    pub(super) async fn obtain(
        &self,
        slot: &Slot,
        after_reject: bool,
        stale: Option<&Token>,
    ) -> Result<Arc<Token>, TokenError> {
        if !self.shared.shared() || !slot.source.fleet_shared() {
            return self.fetch(slot.source.as_ref(), after_reject, None).await;
        }
        let budget = slot.source.timeout() * self.retry.attempts + LEASE_TTL;
        let deadline = Instant::now() + budget;
        loop {
            match self.shared.token(&slot.id).await {
                Ok(Some(t)) => {
                    if let Some(token) = adopt(slot, &t, stale) {
                        return Ok(token);
                    }
                }
                Ok(None) => {}
                Err(e) => return self.fetch_alone(slot, after_reject, &e).await,
            }
            match self.shared.lease(&slot.id, LEASE_TTL).await {
                Ok(Lease::Held { fence }) => {
                    // The holder before us may have published and released between our
                    // read and our lease: look once more before fetching again.
                    if let Ok(Some(t)) = self.shared.token(&slot.id).await {
                        if let Some(token) = adopt(slot, &t, stale) {
                            let _ = self.shared.release(&slot.id, fence).await;
                            return Ok(token);
                        }
                    }
                    return self.fetch_leased(slot, fence, after_reject).await;
                }
                Ok(Lease::Busy) if Instant::now() < deadline => {
                    self.shared.wait(&slot.id, deadline - Instant::now()).await;
                }
                Ok(Lease::Busy) => {
                    return Err(TokenError::Timeout {
                        endpoint: format!(
                            "{} (fetched by another replica)",
                            slot.source.endpoint()
                        ),
                    })
                }
                Err(e) => return self.fetch_alone(slot, after_reject, &e).await,
            }
        }
    }

    /// Fetches under the lease (renewed while the fetch runs) and publishes the result.
    async fn fetch_leased(
        &self,
        slot: &Slot,
        fence: u64,
        after_reject: bool,
    ) -> Result<Arc<Token>, TokenError> {
        let renew = async {
            loop {
                tokio::time::sleep(LEASE_TTL / 3).await;
                match self.shared.renew(&slot.id, fence, LEASE_TTL).await {
                    Ok(true) => {}
                    _ => break,
                }
            }
            std::future::pending::<()>().await
        };
        let result = tokio::select! {
            r = self.fetch(slot.source.as_ref(), after_reject, Some((&slot.id, fence))) => r,
            _ = renew => unreachable!("renew never completes"),
        };
        let shared = match &result {
            Ok(t) => match to_shared(t) {
                Some(st) => self.shared.publish(&slot.id, &st, fence).await,
                None => self.shared.release(&slot.id, fence).await,
            },
            Err(_) => self.shared.release(&slot.id, fence).await,
        };
        if let Err(e) = shared {
            tracing::debug!(
                credential = &*slot.name,
                "could not share the fetched token: {e}"
            );
        }
        result
    }

    async fn fetch_alone(
        &self,
        slot: &Slot,
        after_reject: bool,
        e: &StoreError,
    ) -> Result<Arc<Token>, TokenError> {
        if slot.source.rotates() {
            return Err(TokenError::SharedState(format!(
                "{e}; a rotating refresh token is redeemed only under the fleet's lease"
            )));
        }
        tracing::debug!(credential = &*slot.name, "fetching without the fleet: {e}");
        self.fetch(slot.source.as_ref(), after_reject, None).await
    }

    /// Acts on another replica's event: an admin refresh elsewhere drops this replica's
    /// tokens of that credential (and tenant) too.
    pub fn on_event(&self, event: &Event) {
        if let Event::Invalidate { credential, tenant } = event {
            self.drop_credential(credential, tenant.as_deref());
        }
    }

    fn drop_credential(&self, credential: &str, tenant: Option<&str>) {
        let mut dropped = 0;
        let theirs = |s: &Slot| &*s.name == credential && s.id.tenant.as_deref() == tenant;
        for slot in self.slots.iter().filter(|s| theirs(s)) {
            if slot.current.swap(None).is_some() {
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::info!(
                credential,
                tenant,
                "token dropped: refreshed on another replica"
            );
        }
    }
}

/// A token in shared form, its instants as wall-clock times.
fn to_shared(t: &Token) -> Option<SharedToken> {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let wall_of = |i: Instant| {
        if i >= now {
            wall + (i - now)
        } else {
            wall - (now - i)
        }
    };
    Some(SharedToken {
        header: Secret::new(t.header.to_str().ok()?.to_string()),
        fetched_at: wall_of(t.fetched_at),
        refresh_at: wall_of(t.refresh_at),
        expires_at: wall_of(t.expires_at),
    })
}

/// A shared token as a local one, if it is still good and not the `stale` one.
fn adopt(slot: &Slot, t: &SharedToken, stale: Option<&Token>) -> Option<Arc<Token>> {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let instant_of = |w: SystemTime| match w.duration_since(wall) {
        Ok(ahead) => now + ahead,
        Err(e) => now.checked_sub(e.duration()).unwrap_or(now),
    };
    let (refresh_at, expires_at) = (instant_of(t.refresh_at), instant_of(t.expires_at));
    if refresh_at <= now || expires_at <= now {
        return None;
    }
    if stale.is_some_and(|s| s.header.as_bytes() == t.header.expose().as_bytes()) {
        return None;
    }
    let mut header = HeaderValue::from_str(t.header.expose()).ok()?;
    header.set_sensitive(true);
    Some(Arc::new(Token {
        name: slot.source.header_name(),
        header,
        fetched_at: instant_of(t.fetched_at),
        refresh_at,
        expires_at,
        after_reject: false,
    }))
}
