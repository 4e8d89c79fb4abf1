//! A refresh-token chain: the token to redeem next, kept in memory, in the fleet (committed
//! with compare-and-swap before its access token is used) and in a sealed file (the crash
//! record), so a rotated token is never lost and never redeemed twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::credentials::{BuildCtx, BuildError};
use crate::secret::{Secret, SecretError};
use crate::store::sealed_file::{parse_key, Saved, SealError, SealedFile, KEY_ENV};
use crate::store::{ChainId, Commit, Link, SharedState, StoreError};
use crate::tokens::TokenError;

/// How often shared state is asked again while it is unreachable.
const RETRY_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

pub struct Chain {
    pub(super) file: SealedFile,
    /// The chain's name in the fleet.
    pub(super) id: ChainId,
    /// The refresh token in use (the seed, or the latest rotated one) and its version.
    current: Mutex<Link>,
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
            current: Mutex::new(current),
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
        wait: std::time::Duration,
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
        wait: std::time::Duration,
    ) -> Result<Option<Link>, TokenError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let r = match shared.chain(&self.id).await {
                Ok(Some(f)) if f.version >= link.version => Ok(Some(f)),
                Ok(_) if shared.shared() => shared.seed(&self.id, link).await,
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            };
            match r {
                Ok(f) => return Ok(f),
                Err(_) if tokio::time::Instant::now() + RETRY_EVERY < deadline => {
                    tokio::time::sleep(RETRY_EVERY).await
                }
                Err(e) => return Err(shared_error(e)),
            }
        }
    }

    /// Keeps a rotated token: memory first (never lost while running), then the fleet
    /// (compare-and-swap on the version, before the access token is used), then the file.
    pub async fn rotate(
        &self,
        shared: &dyn SharedState,
        prev: &Link,
        new: String,
    ) -> Result<(), TokenError> {
        let next = Link {
            refresh_token: Secret::new(new),
            version: prev.version + 1,
        };
        self.set_current(next.clone());
        self.unsaved.store(true, Ordering::SeqCst);
        match shared.commit(&self.id, prev.version, &next).await {
            Ok(Commit::Done) => {}
            Ok(Commit::Stale { current }) => {
                tracing::error!(
                    credential = &*self.id.credential,
                    tenant = self.id.tenant.as_deref(),
                    version = prev.version,
                    current,
                    "another replica rotated this refresh token first: the chain forked; the \
                     provider may revoke it"
                );
                return Err(self.bad("another replica rotated this refresh token first".into()));
            }
            // Redeemed but not committed: kept here and on disk, restored into the fleet when
            // it is back (a fleet behind this replica gets its link).
            Err(e) => tracing::warn!(
                credential = &*self.id.credential,
                "rotated refresh token not yet in shared state: {e}"
            ),
        }
        self.save(&next)
    }
}
