//! `oauth2_refresh_token`: access tokens from a refresh token (RFC 6749 section 6), for
//! connections whose provider rotates the refresh token on every use.
//!
//! A rotated refresh token is committed (fleet, then the encrypted state file) before the
//! access token is returned, so a crash or restart at any moment never loses the live one (see
//! `chain`). An answer without a refresh token keeps the old one. `invalid_grant` marks the
//! credential `needs_reconnect`: no further calls until a new seed (or connection) arrives.
//! A connection may also bring an access token: used first, and on its own (until it
//! expires) by providers that issue no refresh token.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::oauth2_client_credentials::{
    basic_header, basic_pair, exchange, fetched, lifetime, oauth_error_detail, token_url,
};
use super::{config_header_name, BuildCtx, BuildError, Credential, Kind};
use crate::config::raw::{AuthMethod, RawCache, SecretValue};
use crate::audit::TokenEvent;
use crate::secret::Secret;
use crate::tokens::{FetchCx, Fetched, Policy, TokenError, TokenSource};

mod chain;
pub use chain::{sha256_hex, Chain};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRefreshToken {
    /// https URL (http only to loopback).
    pub token_url: String,
    pub client_id: SecretValue,
    pub client_secret: SecretValue,
    /// The seed. Rotated refresh tokens are persisted (encrypted) in `proxy.state_dir` and win
    /// over the seed until the seed itself changes.
    pub refresh_token: Option<SecretValue>,
    /// An access token to use before the first refresh (a connection's, from the connect
    /// flow); without a refresh token it is used until it expires.
    pub access_token: Option<SecretValue>,
    /// When `access_token` expires, in seconds since the Unix epoch. Default: never.
    pub access_token_expires_at: Option<String>,
    /// When `refresh_token` stops working, in seconds since the Unix epoch, where the
    /// provider said (the connect flow records it); `/connections` warns ahead of it.
    pub refresh_token_expires_at: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Between scopes in `scope`. Default a space.
    pub scope_separator: Option<String>,
    /// Extra form parameters of every token request.
    #[serde(default)]
    pub token_params: IndexMap<String, String>,
    /// `basic` or `post_body` (default).
    pub auth_method: Option<AuthMethod>,
    /// Header the token goes in. Default `Authorization`.
    pub header: Option<String>,
    /// Text before the token. Default `Bearer ` with `Authorization`, else empty.
    pub prefix: Option<String>,
    pub cache: Option<RawCache>,
    pub timeout: Option<String>,
}

pub struct RefreshToken {
    url: reqwest::Url,
    endpoint: String,
    client_id: Secret,
    client_secret: Secret,
    scope: String,
    token_params: Vec<(String, String)>,
    basic_auth: bool,
    header: http::HeaderName,
    prefix: String,
    policy: Policy,
    timeout: Duration,
    /// None: no refresh token; the access token serves until it expires.
    chain: Option<Chain>,
    /// The access token the connection came with, and when it expires (None: never).
    initial: Option<(Secret, Option<u64>)>,
    /// The initial access token has been handed out (with a chain, refreshes follow).
    initial_used: AtomicBool,
    reconnect: AtomicBool,
    /// Seconds since the epoch of the last successful refresh (0: none yet).
    last_refresh: AtomicU64,
    /// `identity()` hashed, once.
    digest: crate::tokens::IdentityMemo,
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
    /// How long the refresh token lives (Zendesk, Figma; QuickBooks with the `x_` prefix).
    refresh_token_expires_in: Option<serde_json::Value>,
    x_refresh_token_expires_in: Option<serde_json::Value>,
}

impl Answer {
    fn refresh_expires_at(&self) -> Option<u64> {
        let v = self
            .refresh_token_expires_in
            .as_ref()
            .or(self.x_refresh_token_expires_in.as_ref());
        let secs = lifetime(v).ok().flatten()?.as_secs();
        Some(super::jwt_key_pair::unix_now() + secs)
    }
}

fn invalid(key: &str, message: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The header and prefix a token goes in.
fn injection(raw: &RawRefreshToken) -> Result<(http::HeaderName, String), BuildError> {
    let header = match &raw.header {
        Some(h) => config_header_name("header", h)?,
        None => http::header::AUTHORIZATION,
    };
    let prefix = match &raw.prefix {
        Some(p) if p.bytes().any(|b| b.is_ascii_control()) => {
            return Err(invalid("prefix", "prefix contains control characters"))
        }
        Some(p) => p.clone(),
        None if header == http::header::AUTHORIZATION => "Bearer ".into(),
        None => String::new(),
    };
    Ok((header, prefix))
}

/// The access token a connection came with, and when it expires.
/// Seconds since the epoch in the field `key`.
fn epoch_field(key: &str, value: Option<&str>) -> Result<Option<u64>, BuildError> {
    value
        .map(|t| t.trim().parse::<u64>())
        .transpose()
        .map_err(|_| invalid(key, "expected seconds since the Unix epoch"))
}

fn initial(
    raw: &RawRefreshToken,
    ctx: &mut BuildCtx<'_>,
) -> Result<Option<(Secret, Option<u64>)>, BuildError> {
    let Some(a) = &raw.access_token else {
        return Ok(None);
    };
    let token = ctx.secret("access_token", a)?;
    let expires = epoch_field("access_token_expires_at", raw.access_token_expires_at.as_deref())?;
    Ok(Some((token, expires)))
}

impl RefreshToken {
    pub fn build(raw: &RawRefreshToken, ctx: &mut BuildCtx<'_>) -> Result<Self, BuildError> {
        let (url, endpoint) = token_url(&raw.token_url).map_err(|m| invalid("token_url", m))?;
        let basic_auth = match raw.auth_method.unwrap_or(AuthMethod::PostBody) {
            AuthMethod::Basic => true,
            AuthMethod::PostBody => false,
            _ => return Err(invalid("auth_method", "refresh-token grants take `basic` or `post_body`")),
        };
        let (header, prefix) = injection(raw)?;
        let ttl = super::cache_ttl(raw.cache.as_ref())?;
        let timeout = super::endpoint_timeout(raw.timeout.as_ref())?;
        let client_id = ctx.identifier("client_id", &raw.client_id)?;
        let client_secret = ctx.sent_secret("client_secret", &raw.client_secret)?;
        let initial = initial(raw, ctx)?;
        let seed = raw
            .refresh_token
            .as_ref()
            .map(|r| ctx.sent_secret("refresh_token", r))
            .transpose()?;
        if seed.is_none() && initial.is_none() {
            return Err(invalid("refresh_token", "missing: a refresh token (or an access token) is needed"));
        }
        let seed_expires = epoch_field("refresh_token_expires_at", raw.refresh_token_expires_at.as_deref())?;
        let chain = seed.map(|s| Chain::open(ctx, s, seed_expires, &endpoint)).transpose()?;
        let scope = raw.scopes.join(raw.scope_separator.as_deref().unwrap_or(" "));
        Ok(RefreshToken {
            digest: crate::tokens::IdentityMemo::default(),
            url,
            endpoint,
            client_id,
            client_secret,
            scope,
            token_params: raw.token_params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            basic_auth,
            header,
            prefix,
            policy: Policy {
                default_lifetime: Duration::from_secs(45),
                ttl,
                keep: None,
            },
            timeout,
            chain,
            initial,
            initial_used: AtomicBool::new(false),
            reconnect: AtomicBool::new(false),
            last_refresh: AtomicU64::new(0),
        })
    }

    fn bad(&self, reason: String) -> TokenError {
        TokenError::BadResponse {
            endpoint: self.endpoint.clone(),
            reason,
        }
    }

    fn request(&self, http: &reqwest::Client, rt: &Secret) -> reqwest::RequestBuilder {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.expose()),
        ];
        if !self.scope.is_empty() {
            form.push(("scope", &self.scope));
        }
        form.extend(self.token_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
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

    /// The connection's own access token while it is good for a minute more: always when
    /// there is no refresh token, else only before the first refresh.
    fn initial_token(&self) -> Option<Result<Fetched, TokenError>> {
        let (token, expires) = self.initial.as_ref()?;
        if self.chain.is_some() && self.initial_used.swap(true, Ordering::SeqCst) {
            return None;
        }
        let now = super::jwt_key_pair::unix_now();
        match expires {
            Some(at) if *at <= now + 60 => None,
            _ => Some(Ok(Fetched {
                value: token.clone(),
                lifetime: expires.map(|at| Duration::from_secs(at - now)),
            })),
        }
        .or_else(|| {
            self.chain.is_none().then(|| {
                self.reconnect.store(true, Ordering::Relaxed);
                Err(self.bad("needs reconnect: the access token expired and there is no refresh token".into()))
            })
        })
    }

    /// Redeems `link` under the fleet's lease (confirmed just before): the status and answer.
    async fn redeem(
        &self,
        cx: &FetchCx<'_>,
        link: &crate::store::Link,
    ) -> Result<(u16, Answer), TokenError> {
        cx.confirm_lease().await?;
        let (status, body) =
            exchange(self.request(cx.http, &link.refresh_token), &self.endpoint).await?;
        Ok((status, self.read_answer(status, &body)?))
    }

    /// How the provider's answer ended the refresh: an error (and `invalid_grant` marks the
    /// credential for reconnection), or the answer's JSON.
    fn read_answer(&self, status: u16, body: &[u8]) -> Result<Answer, TokenError> {
        if !(200..300).contains(&status) {
            if matches!(status, 400 | 401) && is_invalid_grant(body) {
                self.reconnect.store(true, Ordering::Relaxed);
                tracing::error!(endpoint = %self.endpoint, "refresh token refused (invalid_grant): credential needs reconnect");
                if let Some(c) = &self.chain {
                    let e = TokenError::Status {
                        endpoint: self.endpoint.clone(),
                        status,
                        detail: oauth_error_detail(body),
                    };
                    let (name, tenant) = (&c.id.credential, c.id.tenant.as_deref());
                    crate::audit::token(name, tenant, TokenEvent::NeedsReconnect, Duration::ZERO, Some(&e));
                }
            }
            return Err(TokenError::Status {
                endpoint: self.endpoint.clone(),
                status,
                detail: oauth_error_detail(body),
            });
        }
        serde_json::from_slice(body)
            .map_err(|_| self.bad(format!("status {status} with a body that is not JSON")))
    }

    /// Seconds since the epoch: the last successful refresh, and when the provider said the
    /// refresh token expires (for `/connections`).
    pub fn refresh_times(&self) -> (Option<u64>, Option<u64>) {
        let last = self.last_refresh.load(Ordering::Relaxed);
        (
            (last > 0).then_some(last),
            self.chain.as_ref().and_then(Chain::expires_at),
        )
    }

    pub fn has_refresh_token(&self) -> bool {
        self.chain.is_some()
    }
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
    fn identity_digest(&self) -> [u8; 32] {
        self.digest.get(|| self.identity())
    }

    async fn fetch(&self, cx: &FetchCx<'_>) -> Result<Fetched, TokenError> {
        if self.reconnect.load(Ordering::Relaxed) {
            return Err(self.bad("needs reconnect: the provider refused the refresh token (invalid_grant); connect again, or configure a new refresh_token seed".into()));
        }
        if let Some(r) = self.initial_token() {
            return r;
        }
        let Some(chain) = &self.chain else {
            return Err(self.bad("needs reconnect: no refresh token".into()));
        };
        let lock = FILE_LOCKS
            .entry(chain.file.path().to_path_buf())
            .or_default()
            .clone();
        let _file = lock.lock().await;
        let link = chain.claim(cx.shared.as_ref(), self.timeout).await?;
        let answer = self.redeem(cx, &link).await;
        let rotated = match &answer {
            Ok((_, a)) => a.refresh_token.clone(),
            Err(_) => None,
        }
        .filter(|n| !n.is_empty() && n != link.refresh_token.expose());
        if rotated.is_none() {
            chain.unclaim(cx.shared.as_ref()).await;
        }
        let (status, a) = answer?;
        // Keep a rotated refresh token before anything else, even if the rest is unusable.
        if let Some(at) = a.refresh_expires_at() {
            chain.set_expires_at(Some(at));
        }
        if let Some(new) = rotated {
            let started = std::time::Instant::now();
            let rotated = chain.rotate(cx.shared, &link, new).await;
            let (name, tenant) = (&chain.id.credential, chain.id.tenant.as_deref());
            crate::audit::token(name, tenant, TokenEvent::Rotation, started.elapsed(), rotated.as_ref().err());
            rotated?;
        }
        self.last_refresh
            .store(super::jwt_key_pair::unix_now(), Ordering::Relaxed);
        fetched(a.access_token, a.expires_in.as_ref(), status).map_err(|r| self.bad(r))
    }

    fn policy(&self) -> Policy {
        self.policy
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn header_name(&self) -> http::HeaderName {
        self.header.clone()
    }

    fn sent_secrets(&self) -> Vec<Secret> {
        let mut v = vec![
            self.client_secret.clone(),
            basic_pair(&self.client_id, &self.client_secret),
        ];
        v.extend(self.chain.as_ref().and_then(|c| c.current().ok()).map(|l| l.refresh_token));
        v
    }

    fn rotates(&self) -> bool {
        true
    }
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn identity(&self) -> String {
        let grant = match (&self.chain, &self.initial) {
            (Some(c), _) => c.id.seed_sha256.clone(),
            (None, Some((a, _))) => format!("access:{}", sha256_hex(a.expose())),
            (None, None) => String::new(),
        };
        let params: Vec<String> = self.token_params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "oauth2_refresh_token|{}|{}|{}|{grant}|{}|{}|{}|{}|{}",
            self.url,
            self.client_id.expose(),
            self.client_secret.expose(),
            self.scope,
            self.basic_auth,
            params.join("&"),
            self.header,
            self.prefix
        )
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn needs_reconnect(&self) -> bool {
        self.reconnect.load(Ordering::Relaxed)
    }

    fn as_refresh_token(&self) -> Option<&RefreshToken> {
        Some(self)
    }
}

/// `type: oauth2_refresh_token`: the refresh-token grant, rotation kept.
pub struct RefreshTokenKind;

impl Kind for RefreshTokenKind {
    const NAME: &'static str = "oauth2_refresh_token";
    const TENANT_FIELDS: &'static [super::TenantField] = &[super::TenantField::optional("refresh_token"), super::TenantField::optional("access_token"), super::TenantField::optional("access_token_expires_at"), super::TenantField::optional("refresh_token_expires_at")];
    type Raw = RawRefreshToken;
    fn build(raw: &RawRefreshToken, ctx: &mut BuildCtx<'_>) -> Result<Credential, BuildError> {
        Ok(Credential::Token(Arc::new(RefreshToken::build(raw, ctx)?)))
    }
}

#[cfg(test)]
mod tests;
