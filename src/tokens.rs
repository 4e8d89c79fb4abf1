//! The token cache: one slot per token credential, shared by all requests.
//!
//! - single flight: a cold or expired slot is filled by exactly one fetch; concurrent requests
//!   wait on the slot's lock and then read what that fetch stored (token or failure);
//! - refresh ahead: a token inside its refresh window is still served while one background task
//!   renews it;
//! - failures: retryable ones (timeouts, connection errors, 5xx, 429) are retried a bounded
//!   number of times with exponential backoff and jitter, never 4xx; a failure is remembered for
//!   a short negative TTL so a dead endpoint is not hammered; a still-valid token keeps being
//!   served, an expired one never is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use dashmap::DashMap;
use http::HeaderValue;

use crate::audit::TokenEvent;
use crate::scrub::Scrubber;
use crate::secret::Secret;
use crate::store::{Embedded, SharedState, TokenId};
use renewal::Renewals;

/// Why a token could not be obtained. Names the endpoint and its status, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token endpoint {endpoint} timed out")]
    Timeout { endpoint: String },
    #[error("token endpoint {endpoint} unreachable: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("token endpoint {endpoint} answered {status}{detail}")]
    Status {
        endpoint: String,
        status: u16,
        detail: String,
    },
    #[error("token endpoint {endpoint} gave an unusable answer: {reason}")]
    BadResponse { endpoint: String, reason: String },
    /// The fleet's shared state is needed and cannot be used.
    #[error("{0}")]
    SharedState(String),
}

/// How long a failure of the fleet's shared state is remembered (see `Slot::record`).
const SHARED_STATE_NEGATIVE_TTL: Duration = Duration::from_millis(200);

/// Longest endpoint-supplied text kept in an error.
const MAX_DETAIL: usize = 300;

impl TokenError {
    /// The error with every form of every `sent` value replaced by `***` (see `scrub`),
    /// then made printable and cut: an endpoint's error text is shown to clients and in logs,
    /// and a careless endpoint may quote what it was sent.
    pub fn redacted(self, sent: &[Secret]) -> TokenError {
        let scrubber = Scrubber::new(sent);
        let clean = |text: String| {
            let text: String = scrubber
                .scrub(&text)
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            if text.chars().count() > MAX_DETAIL {
                text.chars().take(MAX_DETAIL).collect::<String>() + "..."
            } else {
                text
            }
        };
        match self {
            TokenError::Status {
                endpoint,
                status,
                detail,
            } => TokenError::Status {
                endpoint,
                status,
                detail: clean(detail),
            },
            TokenError::BadResponse { endpoint, reason } => TokenError::BadResponse {
                endpoint,
                reason: clean(reason),
            },
            TokenError::Connect { endpoint, reason } => TokenError::Connect {
                endpoint,
                reason: clean(reason),
            },
            e @ (TokenError::Timeout { .. } | TokenError::SharedState(_)) => e,
        }
    }

    /// The OAuth error code (RFC 6749 5.2 `error`) of an endpoint's refusal, if it gave one.
    /// The token endpoint's HTTP status, when it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            TokenError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn oauth_code(&self) -> Option<&str> {
        let TokenError::Status { detail, .. } = self else {
            return None;
        };
        let inner = detail.trim().strip_prefix('(')?;
        let code = inner.split([':', ')']).next()?.trim();
        let valid = !code.is_empty()
            && code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        valid.then_some(code)
    }

    /// Worth another try: the endpoint may answer differently in a moment.
    pub fn retryable(&self) -> bool {
        match self {
            TokenError::Timeout { .. } | TokenError::Connect { .. } => true,
            TokenError::Status { status, .. } => *status >= 500 || *status == 429,
            TokenError::BadResponse { .. } | TokenError::SharedState(_) => false,
        }
    }
}

/// A token as fetched, before the cache applies its policy. (`Secret` keeps Debug redacted.)
#[derive(Debug)]
pub struct Fetched {
    pub value: Secret,
    /// What the endpoint said (`expires_in`), if anything.
    pub lifetime: Option<Duration>,
}

/// A cached token and its timeline.
#[derive(Debug)]
pub struct Token {
    pub name: http::HeaderName,
    /// The full header value to inject (`Bearer ...`), marked sensitive.
    pub header: HeaderValue,
    pub fetched_at: Instant,
    /// Renewal starts here (in the background).
    pub refresh_at: Instant,
    /// Never served at or after this instant.
    pub expires_at: Instant,
    /// Fetched because an upstream rejected the previous token (see `renewal`).
    pub after_reject: bool,
}

/// How long a type's tokens are kept.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Used when the endpoint gives no lifetime.
    pub default_lifetime: Duration,
    /// `cache.ttl` from the config: an upper bound, never past the token's own expiry.
    pub ttl: Option<Duration>,
    /// Fraction of the lifetime a token is used for (JWTs: 0.9); None: lifetime less a margin.
    pub keep: Option<f64>,
}

impl Policy {
    /// The token's timeline: expires a little early (so it is not presented while expiring in
    /// transit) and is refreshed ahead, a quarter of its life (at most 5 minutes) before that.
    pub fn timeline(&self, now: Instant, lifetime: Option<Duration>) -> (Instant, Instant) {
        let mut life = lifetime.unwrap_or(self.default_lifetime);
        if let Some(ttl) = self.ttl {
            life = life.min(ttl);
        }
        let usable = match self.keep {
            Some(f) => life.mul_f64(f.clamp(0.0, 1.0)),
            None => life - (life / 10).min(Duration::from_secs(30)),
        };
        let ahead = (usable / 4).min(Duration::from_secs(300));
        (now + usable - ahead, now + usable)
    }
}

/// What a fetch may use: the HTTP client for token endpoints, and the fleet's shared state
/// (a rotating refresh token is committed there before its access token is used).
pub struct FetchCx<'a> {
    pub http: &'a reqwest::Client,
    /// An `Arc`: a rotation whose commit failed keeps trying in a task of its own.
    pub shared: &'a Arc<dyn SharedState>,
    /// The fleet lease this fetch runs under (token and fencing number), if any.
    pub lease: Option<(&'a TokenId, u64)>,
}

impl<'a> FetchCx<'a> {
    /// A fetch by a single process (`check`, tests).
    pub fn local(http: &'a reqwest::Client) -> Self {
        static EMBEDDED: std::sync::LazyLock<Arc<dyn SharedState>> =
            std::sync::LazyLock::new(|| Arc::new(Embedded::default()));
        FetchCx {
            http,
            shared: &EMBEDDED,
            lease: None,
        }
    }

    /// Before an act another replica must never repeat (redeeming a refresh token): the
    /// fleet's lease is still this fetch's, and is extended for the act. A lease lost (its
    /// renewals failed and it expired) or unconfirmable fails closed.
    pub async fn confirm_lease(&self) -> Result<(), TokenError> {
        let Some((id, fence)) = self.lease else {
            return Ok(());
        };
        match self.shared.renew(id, fence, fleet::LEASE_TTL).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(TokenError::SharedState(
                "the fleet's lease expired before the refresh token was redeemed; \
                 another replica holds it now"
                    .into(),
            )),
            Err(e) => Err(TokenError::SharedState(format!(
                "the fleet's lease could not be confirmed before redeeming: {e}"
            ))),
        }
    }
}

/// A credential that injects a fetched token.
#[async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    async fn fetch(&self, cx: &FetchCx<'_>) -> Result<Fetched, TokenError>;
    fn policy(&self) -> Policy;
    /// Text before the token in the header value.
    fn prefix(&self) -> &str {
        "Bearer "
    }
    /// The endpoint, for messages (no query, no secret).
    fn endpoint(&self) -> &str;
    /// Everything that decides which token this source fetches (URLs, ids, scopes, secrets),
    /// as text. It is only ever hashed: equal identities share a token (across a reload and
    /// across a fleet), and a changed secret or scope names another token.
    fn identity(&self) -> String {
        format!(
            "{}|{}|{}",
            self.endpoint(),
            self.header_name(),
            self.prefix()
        )
    }
    /// `identity()` hashed (sources built once keep it in an `IdentityMemo`).
    fn identity_digest(&self) -> [u8; 32] {
        digest_identity(&self.identity())
    }
    /// Whether replicas share this source's tokens; local signers make their own.
    fn fleet_shared(&self) -> bool {
        true
    }
    /// Whether each fetch spends what it was fetched with (a rotating refresh token): then it
    /// is never fetched without the fleet's lease, since two replicas redeeming the same
    /// token fork the chain and providers revoke the family.
    fn rotates(&self) -> bool {
        false
    }
    /// The time one request to the token endpoint may take.
    fn timeout(&self) -> Duration {
        Duration::from_secs(10)
    }
    /// The header the token goes into.
    fn header_name(&self) -> http::HeaderName {
        http::header::AUTHORIZATION
    }
    /// For tokens that depend on the destination (self-signed JWTs whose `aud` is the target
    /// API): the source for `https://host/`, stable per host so it keeps its cache slot.
    fn for_target(&self, _host: &str) -> Option<Arc<dyn TokenSource>> {
        None
    }
    /// Tokens are minted per target host (see `for_target`); the source itself holds none.
    fn per_target(&self) -> bool {
        false
    }
    /// The provider revoked the grant: a person has to reconnect; fetching again is pointless.
    fn needs_reconnect(&self) -> bool {
        false
    }
    /// The refresh-token source itself (its refresh times, for `/connections`).
    fn as_refresh_token(&self) -> Option<&crate::credentials::oauth2_refresh_token::RefreshToken> {
        None
    }
    /// Values this source sends to its endpoint that an endpoint might echo back in an
    /// error (a client secret, a refresh token, the `id:secret` of a Basic header): every
    /// form of them is scrubbed from every error message.
    fn sent_secrets(&self) -> Vec<Secret> {
        Vec::new()
    }
}

/// What `/credentials` and `/metrics` show about one slot.
#[derive(Debug, Clone, Default)]
pub struct SlotStatus {
    pub seconds_to_expiry: Option<u64>,
    pub last_error: Option<String>,
    pub fetches_ok: u64,
    pub fetches_failed: u64,
    pub cache_hits: u64,
    /// Tokens replaced because an upstream answered 401.
    pub renewals: u64,
    /// 401s passed to the client without a renewal (too soon, or over the rate).
    pub renewals_limited: u64,
    /// For a credential that mints tokens per target host: the hosts it holds tokens for
    /// (the counts above are summed over them).
    pub targets: usize,
}

/// One token's place in the cache: a credential's, or one target host's of a credential that
/// mints tokens per host.
pub struct Slot {
    /// Its source; also keeps the source's address (a per-target key) from being reused.
    source: Arc<dyn TokenSource>,
    /// The credential's name, for logs.
    name: Arc<str>,
    /// Its name in the fleet.
    id: TokenId,
    current: ArcSwapOption<Token>,
    failure: Mutex<Option<(TokenError, Instant)>>,
    lock: tokio::sync::Mutex<()>,
    fetches_ok: AtomicU64,
    fetches_failed: AtomicU64,
    hits: AtomicU64,
    last_error: Mutex<Option<String>>,
    renewals: Renewals,
}

impl Slot {
    fn valid(&self, now: Instant) -> Option<Arc<Token>> {
        self.current.load_full().filter(|t| t.expires_at > now)
    }

    fn recent_failure(&self, now: Instant) -> Option<TokenError> {
        let f = self.failure.lock().ok()?;
        f.as_ref()
            .filter(|(_, until)| *until > now)
            .map(|(e, _)| e.clone())
    }

    fn record(
        &self,
        (event, started): (TokenEvent, Instant),
        result: &Result<Arc<Token>, TokenError>,
        negative_ttl: Duration,
    ) {
        let tenant = self.id.tenant.as_deref();
        let took = started.elapsed();
        crate::audit::token(&self.name, tenant, event, took, result.as_ref().err());
        match result {
            Ok(t) => {
                self.current.store(Some(t.clone()));
                self.fetches_ok.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut f) = self.failure.lock() {
                    *f = None;
                }
                let was = self.last_error.lock().ok().and_then(|mut l| l.take());
                if let Some(was) = was {
                    tracing::info!(
                        credential = &*self.name,
                        "token fetch recovered (after: {was})"
                    );
                }
            }
            Err(e) => {
                self.fetches_failed.fetch_add(1, Ordering::Relaxed);
                let ttl = match e {
                    // Nothing was asked of the endpoint, and the store comes back on its own
                    // (a failover, a restart): remembered only long enough to spare it a storm.
                    TokenError::SharedState(_) => negative_ttl.min(SHARED_STATE_NEGATIVE_TTL),
                    _ => negative_ttl,
                };
                if let Ok(mut f) = self.failure.lock() {
                    *f = Some((e.clone(), Instant::now() + ttl));
                }
                if let Ok(mut l) = self.last_error.lock() {
                    *l = Some(e.to_string());
                }
                log_failure(&self.name, e);
            }
        }
    }
}

/// One WARN line per failed fetch (failures are remembered for the negative TTL, so an
/// endpoint that is down is not logged on every request).
fn log_failure(credential: &str, e: &TokenError) {
    match e {
        TokenError::Status { status, .. } => tracing::warn!(
            credential,
            status,
            oauth_error = e.oauth_code().unwrap_or(""),
            "token fetch failed: {e}"
        ),
        _ => tracing::warn!(credential, "token fetch failed: {e}"),
    }
}

/// Retry schedule for token endpoints.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub base_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 3,
            base_delay: Duration::from_millis(100),
        }
    }
}

/// Credential name, tenant, and the digest of its source's identity.
type SlotKey = (Arc<str>, Option<Arc<str>>, [u8; 32]);

/// Most target hosts one credential keeps tokens for (self-signed JWTs, one per audience);
/// the least recently used goes first.
pub const TARGETS_PER_CREDENTIAL: usize = 256;

/// A per-target credential's slots, by host.
struct Targets {
    /// Kept alive so its address (the key) cannot be reused.
    _parent: Arc<dyn TokenSource>,
    hosts: Mutex<lru::LruCache<String, Arc<Slot>>>,
}

#[derive(Clone)]
pub struct TokenCache {
    /// Keyed by credential name and source identity: a reloaded credential gets its own slot,
    /// and requests still on the old config keep theirs.
    slots: Arc<DashMap<SlotKey, Arc<Slot>>>,
    /// Per-target credentials' slots, by source identity: bounded, whatever hosts a wildcard
    /// route lets clients name.
    targets: Arc<DashMap<usize, Targets>>,
    http: reqwest::Client,
    negative_ttl: Duration,
    retry: Retry,
    /// The fleet's shared state, or the embedded nothing.
    shared: Arc<dyn SharedState>,
}

/// Up to `base` of jitter, without a random-number dependency: the clock's nanoseconds.
fn jitter(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    base.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

/// SHA-256 of a source's `identity()`: the cache key of its token.
pub fn digest_identity(identity: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, identity.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A source's identity digest, made once: a source is immutable once built, and the cache
/// looks its slot up by this digest on every request (formatting and hashing the identity
/// each time cost the cached-token route a few thousand instructions per request).
#[derive(Debug, Default)]
pub struct IdentityMemo(std::sync::OnceLock<[u8; 32]>);

impl IdentityMemo {
    pub fn get(&self, identity: impl FnOnce() -> String) -> [u8; 32] {
        *self.0.get_or_init(|| digest_identity(&identity()))
    }
}

fn new_slot(
    name: &Arc<str>,
    tenant: Option<&Arc<str>>,
    source: Arc<dyn TokenSource>,
    target: Option<&str>,
) -> Arc<Slot> {
    let id = TokenId {
        credential: name.clone(),
        identity: source.identity_digest(),
        tenant: tenant.cloned(),
        target: target.map(Arc::from),
    };
    Arc::new(Slot {
        source,
        name: name.clone(),
        id,
        current: ArcSwapOption::empty(),
        failure: Mutex::new(None),
        lock: tokio::sync::Mutex::new(()),
        fetches_ok: AtomicU64::new(0),
        fetches_failed: AtomicU64::new(0),
        hits: AtomicU64::new(0),
        last_error: Mutex::new(None),
        renewals: Renewals::default(),
    })
}

fn source_id(src: &Arc<dyn TokenSource>) -> usize {
    Arc::as_ptr(src) as *const () as usize
}

impl TokenCache {
    pub fn new(http: reqwest::Client, negative_ttl: Duration, retry: Retry) -> Self {
        TokenCache {
            slots: Arc::new(DashMap::new()),
            targets: Arc::new(DashMap::new()),
            http,
            negative_ttl,
            retry,
            shared: Arc::new(Embedded::default()),
        }
    }

    /// The same cache, sharing tokens through `shared` (a fleet's Redis).
    pub fn with_shared(mut self, shared: Arc<dyn SharedState>) -> Self {
        self.shared = shared;
        self
    }

    pub fn shared(&self) -> &Arc<dyn SharedState> {
        &self.shared
    }

    /// The HTTP client for token endpoints (and the connect flow's calls).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The slot of `src`, the source of the credential `name` (for `tenant`, when it is per
    /// tenant: tenants never share a slot).
    pub fn slot(
        &self,
        name: &Arc<str>,
        tenant: Option<&Arc<str>>,
        src: &Arc<dyn TokenSource>,
    ) -> Arc<Slot> {
        let key = (name.clone(), tenant.cloned(), src.identity_digest());
        if let Some(s) = self.slots.get(&key) {
            return s.clone();
        }
        self.slots
            .entry(key)
            .or_insert_with(|| new_slot(name, tenant, src.clone(), None))
            .clone()
    }

    /// Forgets every token of `credential` for `tenant` (its connection changed or is gone).
    pub fn forget(&self, credential: &str, tenant: &str) {
        self.slots
            .retain(|(c, t, _), _| !(&**c == credential && t.as_deref() == Some(tenant)));
    }

    /// The slot a request to `host` uses: the credential's own, or for a credential that
    /// mints tokens per target host, that host's (among its `TARGETS_PER_CREDENTIAL` most
    /// recently used).
    pub fn slot_for(
        &self,
        name: &Arc<str>,
        tenant: Option<&Arc<str>>,
        src: &Arc<dyn TokenSource>,
        host: &str,
    ) -> Arc<Slot> {
        if !src.per_target() {
            return self.slot(name, tenant, src);
        }
        let targets = self
            .targets
            .entry(source_id(src))
            .or_insert_with(|| Targets {
                _parent: src.clone(),
                hosts: Mutex::new(lru::LruCache::new(
                    std::num::NonZeroUsize::new(TARGETS_PER_CREDENTIAL)
                        .unwrap_or(std::num::NonZeroUsize::MIN),
                )),
            });
        let mut hosts = targets
            .hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = hosts.get(host) {
            return s.clone();
        }
        let child = src.for_target(host).unwrap_or_else(|| src.clone());
        let slot = new_slot(name, tenant, child, Some(host));
        hosts.put(host.to_string(), slot.clone());
        slot
    }

    /// A valid token for the credential, fetching it (once, for all waiters) when needed.
    pub async fn get(
        &self,
        name: &Arc<str>,
        src: &Arc<dyn TokenSource>,
    ) -> Result<Arc<Token>, TokenError> {
        self.get_in(&self.slot(name, None, src)).await
    }

    /// A valid token from `slot`, fetching it (once, for all waiters) when needed.
    pub async fn get_in(&self, slot: &Arc<Slot>) -> Result<Arc<Token>, TokenError> {
        let now = Instant::now();
        if let Some(t) = slot.valid(now) {
            slot.hits.fetch_add(1, Ordering::Relaxed);
            if t.refresh_at <= now {
                self.refresh_in_background(slot.clone());
            }
            return Ok(t);
        }
        let _guard = slot.lock.lock().await;
        let now = Instant::now();
        if let Some(t) = slot.valid(now) {
            slot.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(t);
        }
        if let Some(e) = slot.recent_failure(now) {
            return Err(e);
        }
        let after_reject = slot.renewals.take_dropped();
        let started = Instant::now();
        let result = self.obtain(slot, after_reject, None).await;
        slot.record((TokenEvent::Fetch, started), &result, self.negative_ttl);
        result
    }

    /// Drops the cached token and fetches a new one (admin refresh).
    pub async fn refresh(
        &self,
        name: &Arc<str>,
        tenant: Option<&Arc<str>>,
        src: &Arc<dyn TokenSource>,
    ) -> Result<Arc<Token>, TokenError> {
        let slot = self.slot(name, tenant, src);
        let _guard = slot.lock.lock().await;
        let old = slot.current.swap(None);
        // Every replica drops it; the one fetch below is published to all of them.
        if let Err(e) = self.shared.invalidate(name, tenant, Some(&slot.id)).await {
            tracing::warn!(credential = &**name, "refreshed on this replica only: {e}");
        }
        let started = Instant::now();
        let result = self.obtain(&slot, false, old.as_deref()).await;
        slot.record((TokenEvent::Refresh, started), &result, self.negative_ttl);
        result
    }

    /// Whether an upstream's 401 to `rejected` may replace it (see `renewal`); a refusal is
    /// counted and logged once a minute.
    pub fn may_renew(&self, slot: &Slot, rejected: &Token) -> bool {
        self.renewal_allowed(slot, rejected, false)
    }

    fn renewal_allowed(&self, slot: &Slot, rejected: &Token, spend: bool) -> bool {
        match slot.renewals.allow(rejected, spend) {
            Ok(()) => true,
            Err(why) => {
                if slot.renewals.should_log() {
                    tracing::warn!(
                        credential = &*slot.name,
                        "upstream 401s ask for new tokens too often ({}): passing them to the \
                         clients without renewing; this repeats at most once a minute",
                        why.describe()
                    );
                }
                false
            }
        }
    }

    /// After an upstream rejected `rejected` (401): a new token, fetched once for all requests
    /// that were rejected with the same one.
    pub async fn renew_after_reject(
        &self,
        slot: &Slot,
        rejected: &Arc<Token>,
    ) -> Result<Arc<Token>, TokenError> {
        let _guard = slot.lock.lock().await;
        let now = Instant::now();
        if let Some(cur) = slot.valid(now) {
            if !Arc::ptr_eq(&cur, rejected) {
                return Ok(cur);
            }
        }
        if let Some(e) = slot.recent_failure(now) {
            return Err(e);
        }
        if !self.renewal_allowed(slot, rejected, true) {
            return Ok(rejected.clone());
        }
        slot.current.store(None);
        let started = Instant::now();
        let result = self.obtain(slot, true, Some(rejected)).await;
        slot.record((TokenEvent::Renewal, started), &result, self.negative_ttl);
        result
    }

    /// Forgets `rejected` if it is still current and may be replaced, so the next request
    /// fetches a new one.
    pub fn reject(&self, slot: &Slot, rejected: &Arc<Token>) {
        let current = slot.current.load_full();
        if current.is_some_and(|cur| Arc::ptr_eq(&cur, rejected))
            && self.renewal_allowed(slot, rejected, true)
        {
            slot.renewals.mark_dropped();
            slot.current.store(None);
        }
    }

    fn refresh_in_background(&self, slot: Arc<Slot>) {
        let cache = self.clone();
        tokio::spawn(async move {
            // Whoever holds the lock is already fetching.
            let Ok(_guard) = slot.lock.try_lock() else {
                return;
            };
            let now = Instant::now();
            let fresh = slot.valid(now).is_some_and(|t| t.refresh_at > now);
            if fresh || slot.recent_failure(now).is_some() {
                return;
            }
            let due = slot.current.load_full();
            let started = (TokenEvent::RefreshAhead, Instant::now());
            // The current token stays in service until it expires; a failure is remembered
            // like any other, so the endpoint is not asked on every request.
            let result = cache.obtain(&slot, false, due.as_deref()).await;
            slot.record(started, &result, cache.negative_ttl);
        });
    }

    /// One fetch, with bounded retries for retryable failures.
    async fn fetch(
        &self,
        src: &dyn TokenSource,
        after_reject: bool,
        lease: Option<(&TokenId, u64)>,
    ) -> Result<Arc<Token>, TokenError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let cx = FetchCx {
                http: &self.http,
                shared: &self.shared,
                lease,
            };
            match src
                .fetch(&cx)
                .await
                .map_err(|e| e.redacted(&src.sent_secrets()))
            {
                Ok(f) => return make_token(src, f, after_reject),
                Err(e) if e.retryable() && attempt < self.retry.attempts => {
                    let delay = self.retry.base_delay * 2u32.pow(attempt - 1);
                    tracing::debug!(
                        endpoint = src.endpoint(),
                        attempt,
                        "token fetch failed, retrying: {e}"
                    );
                    tokio::time::sleep(delay + jitter(self.retry.base_delay)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn status(
        &self,
        name: &Arc<str>,
        tenant: Option<&Arc<str>>,
        src: &Arc<dyn TokenSource>,
    ) -> SlotStatus {
        if src.per_target() {
            return self.targets_status(src);
        }
        let key = (name.clone(), tenant.cloned(), src.identity_digest());
        let Some(slot) = self.slots.get(&key) else {
            return SlotStatus::default();
        };
        slot.status(Instant::now())
    }

    /// The status of a per-target credential: its hosts' slots summed.
    fn targets_status(&self, src: &Arc<dyn TokenSource>) -> SlotStatus {
        let Some(t) = self.targets.get(&source_id(src)) else {
            return SlotStatus::default();
        };
        let hosts = t
            .hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let mut sum = SlotStatus {
            targets: hosts.len(),
            ..SlotStatus::default()
        };
        for (_, slot) in hosts.iter() {
            sum.add(slot.status(now));
        }
        sum
    }

    /// A per-tenant credential's counts, summed over its tenants' slots (for `/metrics`,
    /// which has no series per tenant).
    pub fn tenants_status(&self, name: &str) -> SlotStatus {
        let now = Instant::now();
        let mut sum = SlotStatus::default();
        for e in self.slots.iter() {
            let (cred, tenant, _) = e.key();
            if &**cred == name && tenant.is_some() {
                sum.add(e.value().status(now));
            }
        }
        sum.seconds_to_expiry = None;
        sum
    }
}

impl SlotStatus {
    fn add(&mut self, s: SlotStatus) {
        self.fetches_ok += s.fetches_ok;
        self.fetches_failed += s.fetches_failed;
        self.cache_hits += s.cache_hits;
        self.renewals += s.renewals;
        self.renewals_limited += s.renewals_limited;
        self.last_error = self.last_error.take().or(s.last_error);
    }
}

impl Slot {
    fn status(&self, now: Instant) -> SlotStatus {
        SlotStatus {
            seconds_to_expiry: self.valid(now).map(|t| (t.expires_at - now).as_secs()),
            last_error: self.last_error.lock().ok().and_then(|l| l.clone()),
            fetches_ok: self.fetches_ok.load(Ordering::Relaxed),
            fetches_failed: self.fetches_failed.load(Ordering::Relaxed),
            cache_hits: self.hits.load(Ordering::Relaxed),
            renewals: self.renewals.renewed.load(Ordering::Relaxed),
            renewals_limited: self.renewals.limited.load(Ordering::Relaxed),
            targets: 0,
        }
    }
}

fn make_token(
    src: &dyn TokenSource,
    f: Fetched,
    after_reject: bool,
) -> Result<Arc<Token>, TokenError> {
    let bad = |reason: &str| TokenError::BadResponse {
        endpoint: src.endpoint().to_string(),
        reason: reason.to_string(),
    };
    let mut header = HeaderValue::from_str(&format!("{}{}", src.prefix(), f.value.expose()))
        .map_err(|_| bad("the token has characters that cannot go in a header"))?;
    header.set_sensitive(true);
    let now = Instant::now();
    let (refresh_at, expires_at) = src.policy().timeline(now, f.lifetime);
    Ok(Arc::new(Token {
        name: src.header_name(),
        header,
        fetched_at: now,
        refresh_at,
        expires_at,
        after_reject,
    }))
}

mod fleet;
pub mod renewal;

pub use fleet::LEASE_TTL;

#[cfg(test)]
mod tests;
