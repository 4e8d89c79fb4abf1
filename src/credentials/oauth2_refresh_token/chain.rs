//! A refresh-token chain: the token to redeem next, kept in memory, in the fleet (committed
//! with compare-and-swap before its access token is used) and in a sealed file (the crash
//! record), so a rotated token is never lost and never redeemed twice: a replica claims a
//! link before redeeming it, and the claim holds the others off until its commit lands.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::credentials::{BuildCtx, BuildError};
use crate::secret::{Secret, SecretError};
use crate::store::sealed_file::{parse_key, Saved, SealError, SealedFile, KEY_ENV};
use crate::store::{ChainId, Claim, Commit, Link, SharedState, StoreError};
use crate::tokens::TokenError;

/// How often shared state is asked again while it is unreachable.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// How long a claim keeps the other replicas off a link when its holder goes silent before
/// committing: longer than Redis stalls and failovers last. A holder that died mid-redemption
/// holds the fleet's rotation back this long at most (access tokens that outlive it keep
/// serving).
pub const CLAIM_TTL: Duration = Duration::from_secs(120);

pub struct Chain {
    pub(super) file: SealedFile,
    /// The chain's name in the fleet.
    pub(super) id: ChainId,
    /// The refresh token in use (the seed, or the latest rotated one) and its version. An
    /// `Arc`: a background commit watches it, and stops once this chain moved past its link
    /// (which the fleet then had) or the chain is gone.
    current: Arc<Mutex<Link>>,
    /// Memory holds a newer token than the state file (a save failed): never adopt the file.
    unsaved: AtomicBool,
    /// When the provider said the current refresh token expires.
    expires_at: Mutex<Option<u64>>,
    endpoint: String,
}

pub fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unusable(source_name: &str, e: SealError) -> BuildError {
    BuildError::Unavailable(SecretError::Unusable {
        source_name: source_name.to_string(),
        reason: e.to_string(),
    })
}

fn shared_error(e: StoreError) -> TokenError {
    TokenError::SharedState(format!(
        "refresh tokens do not rotate without shared state: {e}"
    ))
}

impl Chain {
    /// The chain of `seed`: its sealed file (the tenant's, for a connection) and the token to
    /// use next, the file's unless the seed changed since it was written.
    /// `seed_expires`: when the seed stops working, if known; a rotation that says
    /// otherwise replaces it.
    pub fn open(
        ctx: &mut BuildCtx<'_>,
        seed: Secret,
        seed_expires: Option<u64>,
        endpoint: &str,
    ) -> Result<Self, BuildError> {
        let key_text = (ctx.env)(KEY_ENV).ok_or_else(|| unusable(KEY_ENV, SealError::NoKey))?;
        let key = parse_key(&key_text).map_err(|e| unusable(KEY_ENV, e))?;
        let file = match ctx.tenant {
            Some(t) => SealedFile::for_tenant(ctx.state_dir, ctx.name, t, &key),
            None => SealedFile::new(ctx.state_dir, ctx.name, &key),
        }
        .map_err(|e| unusable(KEY_ENV, e))?;
        let seed_sha256 = sha256_hex(seed.expose());
        let mut current = Link {
            refresh_token: seed,
            version: 0,
        };
        let mut expires_at = seed_expires;
        // A state file that cannot be read makes the credential unavailable and is never
        // overwritten: it may hold the only live refresh token.
        let saved = if ctx.dry { None } else { file.load().map_err(|e| unusable("state file", e))? };
        match saved {
            Some(s) if s.seed_sha256 == seed_sha256 => {
                current = Link {
                    refresh_token: Secret::new(s.refresh_token),
                    version: s.version,
                };
                expires_at = s.expires_at.or(expires_at);
            }
            Some(_) => ctx.warnings.push((
                "refresh_token".into(),
                "the seed changed since the state file was written: starting from the new seed"
                    .into(),
            )),
            None => {}
        }
        Ok(Chain {
            file,
            id: ChainId {
                credential: ctx.name.into(),
                tenant: ctx.tenant.map(Into::into),
                seed_sha256,
            },
            current: Arc::new(Mutex::new(current)),
            unsaved: AtomicBool::new(false),
            expires_at: Mutex::new(expires_at),
            endpoint: endpoint.to_string(),
        })
    }

    pub fn current(&self) -> Result<Link, TokenError> {
        self.current
            .lock()
            .map(|c| c.clone())
            .map_err(|_| self.bad("internal lock poisoned".into()))
    }

    fn set_current(&self, link: Link) {
        if let Ok(mut c) = self.current.lock() {
            *c = link;
        }
    }

    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at.lock().ok().and_then(|e| *e)
    }

    pub fn set_expires_at(&self, at: Option<u64>) {
        if let Ok(mut e) = self.expires_at.lock() {
            *e = at;
        }
    }

    fn bad(&self, reason: String) -> TokenError {
        TokenError::BadResponse {
            endpoint: self.endpoint.clone(),
            reason,
        }
    }

    /// Writes `link` to the sealed file, the crash record.
    fn save(&self, link: &Link) -> Result<(), TokenError> {
        let saved = Saved {
            refresh_token: link.refresh_token.expose().to_string(),
            seed_sha256: self.id.seed_sha256.clone(),
            updated_at: crate::credentials::jwt_key_pair::unix_now(),
            version: link.version,
            expires_at: self.expires_at(),
        };
        self.unsaved.store(true, Ordering::SeqCst);
        self.file.save(&saved).map_err(|e| {
            self.bad(format!(
                "rotated refresh token kept in memory but not persisted: {e}"
            ))
        })?;
        self.unsaved.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// The link to redeem now: the newest of memory, the file and the fleet. A fleet that
    /// lags behind (it lost data, or a commit never landed) gets ours back; a fleet that
    /// cannot be reached stops rotation (the current access token keeps serving).
    /// `wait`: how long a request may wait for shared state that is failing over.
    pub async fn link_to_redeem(
        &self,
        shared: &dyn SharedState,
        wait: Duration,
    ) -> Result<Link, TokenError> {
        let mut link = self.current()?;
        if self.unsaved.load(Ordering::SeqCst) {
            // The live token is only in memory: persist it before spending it.
            self.save(&link)?;
        }
        // Another instance in this process (an old config during a reload) may have rotated.
        match self.file.load() {
            Ok(Some(s)) if s.seed_sha256 == self.id.seed_sha256 && s.version >= link.version => {
                link = Link {
                    refresh_token: Secret::new(s.refresh_token),
                    version: s.version,
                };
            }
            Ok(_) => {}
            Err(e) => return Err(self.bad(e.to_string())),
        }
        let fleet = self.fleet_link(shared, &link, wait).await?;
        if let Some(f) = fleet.filter(|f| f.version > link.version) {
            self.save(&f)?;
            link = f;
        }
        self.set_current(link.clone());
        Ok(link)
    }

    /// The fleet's link, if newer than `link` (a fleet without one is seeded with it). While
    /// shared state is unreachable it is asked again until `wait` passes: a Cluster failing
    /// over is back in a few seconds, and the request still has that budget.
    async fn fleet_link(
        &self,
        shared: &dyn SharedState,
        link: &Link,
        wait: Duration,
    ) -> Result<Option<Link>, TokenError> {
        let deadline = Instant::now() + wait;
        loop {
            let r = match shared.chain(&self.id).await {
                Ok(Some(f)) if f.version >= link.version => Ok(Some(f)),
                Ok(_) if shared.shared() => shared.seed(&self.id, link).await,
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            };
            match r {
                Ok(f) => return Ok(f),
                Err(_) if Instant::now() + RETRY_EVERY < deadline => {
                    tokio::time::sleep(RETRY_EVERY).await
                }
                Err(e) => return Err(shared_error(e)),
            }
        }
    }

    /// The link to redeem, claimed for this replica (see `SharedState::claim`). While another
    /// replica's claim on it is live (it redeemed, and its commit has not landed) this waits,
    /// at most `wait`: redeeming the same token again would fork the chain.
    pub async fn claim(
        &self,
        shared: &dyn SharedState,
        wait: Duration,
    ) -> Result<Link, TokenError> {
        let deadline = Instant::now() + wait;
        let (mut reread, mut told) = (false, false);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let link = self.link_to_redeem(shared, left).await?;
            let claim = shared
                .claim(&self.id, link.version, owner(), CLAIM_TTL)
                .await
                .map_err(shared_error)?;
            let why = match claim {
                Claim::Mine => return Ok(link),
                // The chain moved between our read and the claim: read it again at once.
                Claim::Stale if !reread => {
                    reread = true;
                    continue;
                }
                Claim::Stale => "the chain kept moving while this replica tried to claim it",
                Claim::Busy => {
                    if !std::mem::replace(&mut told, true) {
                        tracing::info!(
                            credential = &*self.id.credential,
                            version = link.version,
                            "another replica is redeeming this refresh token: waiting for its commit"
                        );
                    }
                    "another replica redeemed this refresh token and has not committed the \
                     rotated one yet"
                }
            };
            if Instant::now() + RETRY_EVERY >= deadline {
                return Err(TokenError::SharedState(format!("{why} (version {})", link.version)));
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Ends a claim whose redemption rotated nothing (best effort: it lapses anyway, and this
    /// replica may take its own claim again meanwhile).
    pub async fn unclaim(&self, shared: &dyn SharedState) {
        if let Err(e) = shared.unclaim(&self.id, owner()).await {
            tracing::debug!(
                credential = &*self.id.credential,
                "redemption claim left to lapse: {e}"
            );
        }
    }

    /// Keeps a rotated token: memory first (never lost while running), then the fleet
    /// (compare-and-swap on the version, before the access token is used), then the file.
    /// A commit shared state did not take is retried in the background; the claim on `prev`
    /// keeps the other replicas off it meanwhile.
    pub async fn rotate(
        &self,
        shared: &Arc<dyn SharedState>,
        prev: &Link,
        new: String,
    ) -> Result<(), TokenError> {
        let next = Link {
            refresh_token: Secret::new(new),
            version: prev.version + 1,
        };
        self.set_current(next.clone());
        self.unsaved.store(true, Ordering::SeqCst);
        match settle(&**shared, &self.id, prev.version, &next).await {
            Ok(Settled::Committed) => {}
            Ok(Settled::Forked { current }) => {
                forked(&self.id, next.version, current);
                return Err(self.bad("another replica rotated this refresh token first".into()));
            }
            // Redeemed but not committed: kept here and on disk, committed in the background.
            Err(e) => {
                tracing::warn!(
                    credential = &*self.id.credential,
                    "rotated refresh token not yet in shared state, retrying: {e}"
                );
                let current = Arc::downgrade(&self.current);
                keep_committing(shared.clone(), self.id.clone(), prev.version, next.clone(), current);
            }
        }
        self.save(&next)
    }
}

/// This process's name in redemption claims: one for its lifetime, so a claim it left behind
/// (its unclaim failed) is its own to take again rather than a wait for everyone.
fn owner() -> &'static str {
    static OWNER: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(crate::credentials::jwt_key_pair::random_id);
    &OWNER
}

/// Where a rotation ended up in the fleet.
enum Settled {
    /// Committed, or found already there, or restored into a chain Redis had lost.
    Committed,
    /// Another replica's link holds that version or a later one.
    Forked { current: u64 },
}

/// Commits `next` over `prev`; a chain that is gone (Redis lost its data) or older gets
/// `next` put back; one already holding `next` counts as committed.
async fn settle(
    shared: &dyn SharedState,
    id: &ChainId,
    prev: u64,
    next: &Link,
) -> Result<Settled, StoreError> {
    if shared.commit(id, prev, next).await? == Commit::Done {
        return Ok(Settled::Committed);
    }
    let theirs = match shared.chain(id).await? {
        Some(l) if l.version >= next.version => l,
        // Gone or behind: ours is the newest link anywhere.
        _ => shared.seed(id, next).await?.unwrap_or_else(|| next.clone()),
    };
    let same = |l: &Link| l.refresh_token.ct_eq(next.refresh_token.expose().as_bytes());
    if theirs.version == next.version && same(&theirs) {
        return Ok(Settled::Committed);
    }
    Ok(Settled::Forked {
        current: theirs.version,
    })
}

fn forked(id: &ChainId, version: u64, current: u64) {
    tracing::error!(
        credential = &*id.credential,
        tenant = id.tenant.as_deref(),
        version,
        current,
        "another replica rotated this refresh token first: the chain may have forked; the \
         provider may revoke it"
    );
}

/// How long the background commit waits at most between attempts.
const RETRY_AT_MOST: Duration = Duration::from_secs(5);

/// Commits a rotation until shared state takes it (backing off to `RETRY_AT_MOST`), while
/// its chain is in use (`current`: a deleted connection's chain is not put back) and has not
/// moved past it (this replica redeems a later link only once the fleet holds this one).
fn keep_committing(
    shared: Arc<dyn SharedState>,
    id: ChainId,
    prev: u64,
    next: Link,
    current: std::sync::Weak<Mutex<Link>>,
) {
    tokio::spawn(async move {
        let mut pause = RETRY_EVERY;
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_AT_MOST);
            let in_use = current
                .upgrade()
                .is_some_and(|c| c.lock().is_ok_and(|c| c.version <= next.version));
            if !in_use {
                return;
            }
            match settle(&*shared, &id, prev, &next).await {
                Ok(Settled::Committed) => {
                    return tracing::info!(
                        credential = &*id.credential,
                        "rotated refresh token committed to shared state"
                    );
                }
                Ok(Settled::Forked { current }) => return forked(&id, next.version, current),
                Err(_) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests;
