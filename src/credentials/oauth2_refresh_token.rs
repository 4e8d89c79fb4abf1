//! `oauth2_refresh_token`: access tokens from a refresh token (RFC 6749 section 6), for
//! connections whose provider rotates the refresh token on every use.
//!
//! A rotated refresh token is written to the encrypted state file before the access token is
//! returned, so a crash or restart at any moment never loses the live one. An answer without a
//! refresh token keeps the old one. `invalid_grant` marks the credential `needs_reconnect`: no
//! further calls until a new seed is configured.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;

use super::oauth2_client_credentials::{
    basic_header, basic_pair, exchange, fetched, oauth_error_detail, token_url,
};
use super::{BuildCtx, BuildError, Credential, Kind};
use crate::config::raw::{AuthMethod, RawCache, SecretText};
use crate::secret::{Secret, SecretError};
use crate::store::sealed_file::{parse_key, Saved, SealError, SealedFile, KEY_ENV};
use crate::store::{ChainId, Commit, Link, SharedState, StoreError};
use crate::tokens::{FetchCx, Fetched, Policy, TokenError, TokenSource};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRefreshToken {
    /// https URL (http only to loopback).
    pub token_url: String,
    pub client_id: SecretText,
    pub client_secret: SecretText,
    /// The seed. Rotated refresh tokens are persisted (encrypted) in `proxy.state_dir` and win
    /// over the seed until the seed itself changes.
    pub refresh_token: SecretText,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `basic` or `post_body` (default).
    pub auth_method: Option<AuthMethod>,
    pub cache: Option<RawCache>,
    pub timeout: Option<String>,
}

pub struct RefreshToken {
    url: reqwest::Url,
    endpoint: String,
    client_id: Secret,
    client_secret: Secret,
    scopes: Vec<String>,
    basic_auth: bool,
    policy: Policy,
    timeout: Duration,
    file: SealedFile,
    /// The chain's name in the fleet.
    chain: ChainId,
    /// The refresh token in use (the seed, or the latest rotated one) and its version.
    current: Mutex<Link>,
    reconnect: AtomicBool,
    /// Memory holds a newer token than the state file (a save failed): never adopt the file.
    unsaved: AtomicBool,
}

/// One refresh at a time per state file, across config generations (an old and a new config
/// during a reload, or `check` in the same process) so one refresh token is never spent twice.
static FILE_LOCKS: std::sync::LazyLock<
    dashmap::DashMap<std::path::PathBuf, std::sync::Arc<tokio::sync::Mutex<()>>>,
> = std::sync::LazyLock::new(Default::default);

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshToken")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Answer {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<serde_json::Value>,
}

fn sha256_hex(s: &str) -> String {
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

/// The sealed file of the credential's chain and the refresh token to use next: the file's,
/// unless the seed changed since it was written.
fn open_chain(
    ctx: &mut BuildCtx<'_>,
    seed: Secret,
    seed_sha256: &str,
) -> Result<(SealedFile, Link), BuildError> {
    let key_text = (ctx.env)(KEY_ENV).ok_or_else(|| unusable(KEY_ENV, SealError::NoKey))?;
    let key = parse_key(&key_text).map_err(|e| unusable(KEY_ENV, e))?;
    let file = SealedFile::new(ctx.state_dir, ctx.name, &key).map_err(|e| unusable(KEY_ENV, e))?;
    // A state file that cannot be read makes the credential unavailable and is never
    // overwritten: it may hold the only live refresh token.
    let seed = Link {
        refresh_token: seed,
        version: 0,
    };
    let current = match file.load().map_err(|e| unusable("state file", e))? {
        Some(s) if s.seed_sha256 == seed_sha256 => Link {
            refresh_token: Secret::new(s.refresh_token),
            version: s.version,
        },
        Some(_) => {
            ctx.warnings.push((
                "refresh_token".into(),
                "the seed changed since the state file was written: starting from the new seed"
                    .into(),
            ));
            seed
        }
        None => seed,
    };
    Ok((file, current))
}

impl RefreshToken {
    pub fn build(raw: &RawRefreshToken, ctx: &mut BuildCtx<'_>) -> Result<Self, BuildError> {
        let invalid = |key: &str, message: String| BuildError::Invalid {
            key: key.into(),
            message,
        };
        let (url, endpoint) = token_url(&raw.token_url).map_err(|m| invalid("token_url", m))?;
        let basic_auth = match raw.auth_method.unwrap_or(AuthMethod::PostBody) {
            AuthMethod::Basic => true,
            AuthMethod::PostBody => false,
            _ => {
                return Err(invalid(
                    "auth_method",
                    "refresh-token grants take `basic` or `post_body`".into(),
                ))
            }
        };
        let ttl = super::cache_ttl(raw.cache.as_ref())?;
        let timeout = super::endpoint_timeout(raw.timeout.as_ref())?;
        let client_id = ctx.identifier("client_id", &raw.client_id)?;
        let client_secret = ctx.sent_secret("client_secret", &raw.client_secret)?;
        let seed = ctx.sent_secret("refresh_token", &raw.refresh_token)?;
        let seed_sha256 = sha256_hex(seed.expose());
        let (file, current) = open_chain(ctx, seed, &seed_sha256)?;
        Ok(RefreshToken {
            url,
            endpoint,
            client_id,
            client_secret,
            scopes: raw.scopes.clone(),
            basic_auth,
            policy: Policy {
                default_lifetime: Duration::from_secs(45),
                ttl,
                keep: None,
            },
            timeout,
            file,
            chain: ChainId {
                credential: ctx.name.into(),
                tenant: None,
                seed_sha256: seed_sha256.clone(),
            },
            current: Mutex::new(current),
            reconnect: AtomicBool::new(false),
            unsaved: AtomicBool::new(false),
        })
    }

    fn current(&self) -> Result<Link, TokenError> {
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

    fn bad(&self, reason: String) -> TokenError {
        TokenError::BadResponse {
            endpoint: self.endpoint.clone(),
            reason,
        }
    }

    fn request(&self, http: &reqwest::Client, rt: &Secret) -> reqwest::RequestBuilder {
        let scope = self.scopes.join(" ");
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.expose()),
        ];
        if !scope.is_empty() {
            form.push(("scope", &scope));
        }
        let mut rb = http
            .post(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .timeout(self.timeout);
        if self.basic_auth {
            let pair = basic_pair(&self.client_id, &self.client_secret);
            rb = rb.header(http::header::AUTHORIZATION, basic_header(&pair));
        } else {
            form.push(("client_id", self.client_id.expose()));
            form.push(("client_secret", self.client_secret.expose()));
        }
        rb.form(&form)
    }

    /// Writes `link` to the sealed file, the crash record.
    fn save(&self, link: &Link) -> Result<(), TokenError> {
        let saved = Saved {
            refresh_token: link.refresh_token.expose().to_string(),
            seed_sha256: self.chain.seed_sha256.clone(),
            updated_at: super::jwt_key_pair::unix_now(),
            version: link.version,
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
    async fn link_to_redeem(&self, shared: &dyn SharedState) -> Result<Link, TokenError> {
        let mut link = self.current()?;
        if self.unsaved.load(Ordering::SeqCst) {
            // The live token is only in memory: persist it before spending it.
            self.save(&link)?;
        }
        // Another instance in this process (an old config during a reload) may have rotated.
        match self.file.load() {
            Ok(Some(s)) if s.seed_sha256 == self.chain.seed_sha256 && s.version >= link.version => {
                link = Link {
                    refresh_token: Secret::new(s.refresh_token),
                    version: s.version,
                };
            }
            Ok(_) => {}
            Err(e) => return Err(self.bad(e.to_string())),
        }
        let fleet = match shared.chain(&self.chain).await {
            Ok(Some(f)) if f.version >= link.version => Some(f),
            Ok(_) if shared.shared() => shared.seed(&self.chain, &link).await.map_err(shared_error)?,
            Ok(_) => None,
            Err(e) => return Err(shared_error(e)),
        };
        if let Some(f) = fleet.filter(|f| f.version > link.version) {
            self.save(&f)?;
            link = f;
        }
        self.set_current(link.clone());
        Ok(link)
    }

    /// Keeps a rotated token: memory first (never lost while running), then the fleet
    /// (compare-and-swap on the version, before the access token is used), then the file.
    async fn rotate(&self, shared: &dyn SharedState, prev: &Link, new: String) -> Result<(), TokenError> {
        let next = Link {
            refresh_token: Secret::new(new),
            version: prev.version + 1,
        };
        self.set_current(next.clone());
        self.unsaved.store(true, Ordering::SeqCst);
        match shared.commit(&self.chain, prev.version, &next).await {
            Ok(Commit::Done) => {}
            Ok(Commit::Stale { current }) => {
                tracing::error!(credential = &*self.chain.credential, version = prev.version, current, "another replica rotated this refresh token first: the chain forked; the provider may revoke it");
                return Err(self.bad("another replica rotated this refresh token first".into()));
            }
            // Redeemed but not committed: kept here and on disk, restored into the fleet when
            // it is back (a fleet behind this replica gets its link).
            Err(e) => tracing::warn!(credential = &*self.chain.credential, "rotated refresh token not yet in shared state: {e}"),
        }
        self.save(&next)
    }
}

fn shared_error(e: StoreError) -> TokenError {
    TokenError::SharedState(format!("refresh tokens do not rotate without shared state: {e}"))
}

fn is_invalid_grant(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct E {
        error: Option<String>,
    }
    serde_json::from_slice::<E>(body)
        .ok()
        .and_then(|e| e.error)
        .is_some_and(|e| e == "invalid_grant")
}

#[async_trait]
impl TokenSource for RefreshToken {
    async fn fetch(&self, cx: &FetchCx<'_>) -> Result<Fetched, TokenError> {
        let http = cx.http;
        if self.reconnect.load(Ordering::Relaxed) {
            return Err(self.bad("needs reconnect: the provider refused the refresh token (invalid_grant); configure a new refresh_token seed".into()));
        }
        let lock = FILE_LOCKS
            .entry(self.file.path().to_path_buf())
            .or_default()
            .clone();
        let _file = lock.lock().await;
        let link = self.link_to_redeem(cx.shared).await?;
        let (status, body) = exchange(self.request(http, &link.refresh_token), &self.endpoint).await?;
        if !(200..300).contains(&status) {
            if matches!(status, 400 | 401) && is_invalid_grant(&body) {
                self.reconnect.store(true, Ordering::Relaxed);
                tracing::error!(endpoint = %self.endpoint, "refresh token refused (invalid_grant): credential needs reconnect");
            }
            return Err(TokenError::Status {
                endpoint: self.endpoint.clone(),
                status,
                detail: oauth_error_detail(&body),
            });
        }
        let a: Answer = serde_json::from_slice(&body)
            .map_err(|_| self.bad(format!("status {status} with a body that is not JSON")))?;
        // Keep a rotated refresh token before anything else, even if the rest is unusable.
        if let Some(new) = a
            .refresh_token
            .filter(|n| !n.is_empty() && n != link.refresh_token.expose())
        {
            self.rotate(cx.shared, &link, new).await?;
        }
        fetched(a.access_token, a.expires_in.as_ref(), status).map_err(|r| self.bad(r))
    }

    fn policy(&self) -> Policy {
        self.policy
    }

    fn sent_secrets(&self) -> Vec<Secret> {
        let mut v = vec![
            self.client_secret.clone(),
            basic_pair(&self.client_id, &self.client_secret),
        ];
        v.extend(self.current().ok().map(|l| l.refresh_token));
        v
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn identity(&self) -> String {
        format!(
            "oauth2_refresh_token|{}|{}|{}|{}|{}|{}",
            self.url,
            self.client_id.expose(),
            self.client_secret.expose(),
            self.chain.seed_sha256,
            self.scopes.join(" "),
            self.basic_auth
        )
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn needs_reconnect(&self) -> bool {
        self.reconnect.load(Ordering::Relaxed)
    }
}

/// `type: oauth2_refresh_token`: the refresh-token grant, rotation kept.
pub struct RefreshTokenKind;

impl Kind for RefreshTokenKind {
    const NAME: &'static str = "oauth2_refresh_token";
    type Raw = RawRefreshToken;
    fn build(raw: &RawRefreshToken, ctx: &mut BuildCtx<'_>) -> Result<Credential, BuildError> {
        Ok(Credential::Token(Arc::new(RefreshToken::build(raw, ctx)?)))
    }
}

#[cfg(test)]
mod tests;
