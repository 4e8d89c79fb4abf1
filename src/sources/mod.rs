//! Secret sources read at runtime (`exec`, AWS Secrets Manager and Parameter Store, Vault,
//! files): one cached value per source, re-read on its schedule, the last good value kept for
//! `max_stale` when a re-read fails.

pub mod aws;
pub mod exec;
pub mod spec;
pub mod vault;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

pub use spec::{Origin, RawSource, SourceSpec};

use crate::secret::{Secret, SecretError};

/// What one read produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub value: String,
    /// When the value stops being good (a helper's `expires_at`, a Vault lease).
    pub expires_at: Option<SystemTime>,
}

/// A failed re-read is tried again after this long, or `refresh` if that is sooner.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// The value of one source and how its reads went.
#[derive(Debug)]
struct Entry {
    value: Option<Secret>,
    /// The last good read.
    good_at: Option<Instant>,
    due: Instant,
    error: Option<String>,
    reads_ok: u64,
    reads_failed: u64,
    /// Used by the config being built or served: sources no config uses are forgotten.
    used: bool,
}

/// A source's state, for `/credentials` and `/metrics`. Never the value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceStatus {
    pub source: String,
    /// `ok`, `stale` (serving the last good value after a failed re-read) or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds since the last good read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<u64>,
    #[serde(skip)]
    pub reads_ok: u64,
    #[serde(skip)]
    pub reads_failed: u64,
}

/// The process's secret sources, shared by every config it loads.
#[derive(Clone, Default)]
pub struct Sources {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: Mutex<HashMap<Arc<SourceSpec>, Entry>>,
    clients: Clients,
}

/// HTTP and credential state for the sources that need them, made on first use.
#[derive(Default)]
pub struct Clients {
    http: std::sync::OnceLock<Result<reqwest::Client, String>>,
    pub aws: aws::CredentialCache,
    pub vault: vault::TokenState,
}

impl Clients {
    pub fn http(&self) -> Result<&reqwest::Client, String> {
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    // A secret manager is reached directly, never through a proxy from the
                    // environment (which may be credproxy itself).
                    .no_proxy()
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("credproxy/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot set up an HTTP client: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources(..)")
    }
}

impl Sources {
    fn entries(&self) -> MutexGuard<'_, HashMap<Arc<SourceSpec>, Entry>> {
        // A panic while the lock was held leaves plain data behind: keep using it.
        self.inner.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `spec`: cached, or read now (blocking this thread) the first time.
    pub fn get(&self, spec: &Arc<SourceSpec>) -> Result<Secret, SecretError> {
        if let Some(e) = self.entries().get_mut(spec) {
            e.used = true;
            return current(spec, e);
        }
        if let Some(at) = endpoint_of(&spec.origin) {
            // Operator-chosen endpoints: allowed whatever the egress guard says, and said.
            tracing::info!(source = %spec.describe(), endpoint = %at, "secret source reads from {at}");
        }
        let started = Instant::now();
        let result = block_on(fetch(spec.clone(), self.clone()));
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(_) => {
                tracing::info!(source = %spec.describe(), duration_ms = ms, "secret source read")
            }
            Err(e) => {
                tracing::warn!(source = %spec.describe(), duration_ms = ms, "secret source cannot be read: {e}")
            }
        }
        let mut entries = self.entries();
        // Another thread may have read it meanwhile: its entry stands.
        let e = entries.entry(spec.clone()).or_insert_with(|| {
            let mut e = Entry::new();
            record(spec, &mut e, result);
            e
        });
        e.used = true;
        current(spec, e)
    }

    /// Records a value the build read itself (a plain `file:` secret), so that the file is
    /// watched: read again on schedule, and the config built again when it changes.
    pub fn observe(&self, spec: Arc<SourceSpec>, value: &Result<Secret, SecretError>) {
        let mut entries = self.entries();
        let e = entries.entry(spec.clone()).or_insert_with(Entry::new);
        e.used = true;
        let fetched = match value {
            Ok(v) => Ok(Fetched {
                value: v.expose().to_string(),
                expires_at: None,
            }),
            Err(err) => Err(err.to_string()),
        };
        record(&spec, e, fetched);
    }

    /// Marks every source unused before a config is built; `forget_unused` after it is
    /// in service drops those it did not use.
    pub fn begin_build(&self) {
        for e in self.entries().values_mut() {
            e.used = false;
        }
    }

    pub fn forget_unused(&self) {
        self.entries().retain(|_, e| e.used);
    }

    /// Reads again the sources that are due (or all of them); true if any value changed or
    /// went past `max_stale`, so the config must be built again.
    pub async fn refresh(&self, all: bool) -> bool {
        let now = Instant::now();
        let due: Vec<Arc<SourceSpec>> = self
            .entries()
            .iter()
            .filter(|(_, e)| all || e.due <= now)
            .map(|(s, _)| s.clone())
            .collect();
        let mut reads = tokio::task::JoinSet::new();
        for spec in due {
            let me = self.clone();
            reads.spawn(async move { (spec.clone(), fetch(spec, me).await) });
        }
        let mut changed = false;
        while let Some(done) = reads.join_next().await {
            let Ok((spec, result)) = done else { continue };
            if let Some(e) = self.entries().get_mut(&spec) {
                changed |= record(&spec, e, result);
            }
        }
        changed
    }

    /// The state of each source in `specs`.
    pub fn status(&self, specs: &[Arc<SourceSpec>]) -> Vec<SourceStatus> {
        let entries = self.entries();
        specs
            .iter()
            .filter_map(|s| entries.get(s).map(|e| status(s, e)))
            .collect()
    }

    /// The state of every source in use.
    pub fn all_status(&self) -> Vec<SourceStatus> {
        let entries = self.entries();
        let mut all: Vec<SourceStatus> = entries.iter().map(|(s, e)| status(s, e)).collect();
        all.sort_by(|a, b| a.source.cmp(&b.source));
        all.dedup_by(|a, b| a.source == b.source);
        all
    }

    pub fn clients(&self) -> &Clients {
        &self.inner.clients
    }
}

impl Entry {
    fn new() -> Self {
        Entry {
            value: None,
            good_at: None,
            due: Instant::now(),
            error: None,
            reads_ok: 0,
            reads_failed: 0,
            used: true,
        }
    }
}

/// The value to serve: the last good one within `max_stale`.
fn current(spec: &SourceSpec, e: &Entry) -> Result<Secret, SecretError> {
    match (&e.value, e.good_at) {
        (Some(v), Some(at)) if at.elapsed() <= spec.max_stale => Ok(v.clone()),
        _ => Err(SecretError::Unusable {
            source_name: spec.describe(),
            reason: e
                .error
                .clone()
                .unwrap_or_else(|| "not read yet".to_string()),
        }),
    }
}

/// Applies a read to its entry, logging once per change of state; true if what is served
/// changed.
fn record(spec: &SourceSpec, e: &mut Entry, result: Result<Fetched, String>) -> bool {
    let now = Instant::now();
    let name = spec.describe();
    match result {
        Ok(f) => {
            let changed = e.value.as_ref().is_none_or(|v| v.expose() != f.value);
            if e.error.is_some() && e.value.is_some() {
                tracing::info!(source = %name, "secret source read again after failures");
            }
            e.value = Some(Secret::new(f.value));
            e.good_at = Some(now);
            e.error = None;
            e.reads_ok += 1;
            e.due = now + next_read(spec.refresh, f.expires_at);
            changed
        }
        Err(err) => {
            if e.error.is_none() && e.value.is_some() {
                tracing::warn!(source = %name, max_stale = ?spec.max_stale,
                    "secret source could not be re-read; serving the last good value: {err}");
            }
            e.error = Some(err);
            e.reads_failed += 1;
            e.due = now + spec.refresh.min(RETRY_AFTER_FAILURE);
            let expired = e.good_at.is_some_and(|at| at.elapsed() > spec.max_stale);
            if expired && e.value.is_some() {
                tracing::error!(source = %name,
                    "secret source failing longer than max_stale: its credentials are unavailable");
                e.value = None;
                return true;
            }
            false
        }
    }
}

/// When to read again: every `refresh`, and before a value with an expiry runs out.
fn next_read(refresh: Duration, expires_at: Option<SystemTime>) -> Duration {
    let Some(at) = expires_at else {
        return refresh;
    };
    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
    // A tenth of the lifetime left, at most a minute, early; never a busy loop.
    let early = (left / 10).min(Duration::from_secs(60));
    refresh
        .min(left.saturating_sub(early))
        .max(Duration::from_secs(1))
}

fn status(spec: &SourceSpec, e: &Entry) -> SourceStatus {
    let serving = current(spec, e).is_ok();
    SourceStatus {
        source: spec.describe(),
        status: match (serving, &e.error) {
            (true, None) => "ok",
            (true, Some(_)) => "stale",
            (false, _) => "failed",
        },
        error: e.error.clone(),
        age_seconds: e.good_at.map(|at| at.elapsed().as_secs()),
        reads_ok: e.reads_ok,
        reads_failed: e.reads_failed,
    }
}

/// The address a secret manager source talks to.
fn endpoint_of(origin: &Origin) -> Option<String> {
    match origin {
        Origin::Vault { .. } => Some(std::env::var("VAULT_ADDR").unwrap_or_default()),
        _ => aws::endpoint_of(origin),
    }
}

/// A JSON answer, or Null when it is not JSON (the status then tells what went wrong).
pub async fn json_of(resp: reqwest::Response) -> serde_json::Value {
    let text = resp.text().await.unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

/// Reads one source.
async fn fetch(spec: Arc<SourceSpec>, sources: Sources) -> Result<Fetched, String> {
    let clients = sources.clients();
    let read = async {
        match &spec.origin {
            Origin::Exec { argv, env } => exec::run(argv, env, spec.timeout).await,
            Origin::File(p) => read_file(p),
            Origin::AwsSecret { .. } | Origin::AwsParameter { .. } => {
                aws::fetch(&spec.origin, clients).await
            }
            Origin::Vault { path, key } => vault::fetch(path, key.as_deref(), clients).await,
        }
    };
    // exec enforces its own timeout (and kills the helper); this bounds the HTTP ones.
    match tokio::time::timeout(spec.timeout + Duration::from_millis(100), read).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", spec.timeout)),
    }
}

fn read_file(p: &std::path::Path) -> Result<Fetched, String> {
    let value = crate::secret::read_trimmed(p).map_err(|e| e.to_string())?;
    Ok(Fetched {
        value,
        expires_at: None,
    })
}

/// Runs a read to completion on a thread of its own, so it works from sync code whether or
/// not a runtime is running on this thread.
fn block_on(
    read: impl std::future::Future<Output = Result<Fetched, String>> + Send,
) -> Result<Fetched, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(read)
        })
        .join()
        .unwrap_or_else(|_| Err("the reading thread panicked".to_string()))
    })
}

#[cfg(test)]
mod tests;
