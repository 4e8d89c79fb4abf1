//! Tenants' connections: the secret fields of a per-tenant credential for one tenant (an
//! OAuth refresh token from the connect flow, an API key brought with `PUT`), stored sealed,
//! shared by a fleet, and built into a credential on first use.
//!
//! - `record`: a connection as stored, and what a `PUT` may contain;
//! - `template`: the per-tenant credential as configured, built per connection;
//! - `files`: the sealed files in `state_dir` (one process's store, each replica's copy);
//! - `admin`: `/connections` on the admin listener; `connect`: the OAuth connect flow.
//!
//! The request path asks one thing (`resolve`): this credential, for this tenant.

pub mod admin;
pub mod check;
pub mod connect;
pub mod files;
pub mod health;
pub mod metrics;
pub mod record;
pub mod template;

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use dashmap::DashMap;

use crate::config::CredentialEntry;
use crate::credentials::Credential;
use crate::errors::ProxyError;
use crate::store::sealed_file::SealError;
use crate::store::{SharedState, StoreError, StoredConnection};
use crate::tokens::TokenCache;
use files::{Doc, Files};
pub use record::Record;
pub use template::{OAuthClient, Resolved, Template};

/// Why a connection change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connections are stored encrypted: set CREDPROXY_STATE_KEY (32 random bytes, as 64 hex digits or base64)")]
    NoKey,
    #[error("cannot store the connection: {0}")]
    Disk(#[from] SealError),
    #[error("connection changes need the fleet's shared state: {0}")]
    Shared(#[from] StoreError),
    #[error("a newer change to this connection was made elsewhere in the fleet")]
    Stale,
}

/// One tenant's connection for one credential, and what it was last built into.
pub struct Entry {
    pub record: Record,
    built: ArcSwapOption<Built>,
}

struct Built {
    /// The `Template::id` it was built under.
    template: u64,
    result: Result<Arc<Resolved>, String>,
}

/// A fast seeded hasher: tenants are looked up on every request, and only the admin API
/// inserts them.
type Hasher = foldhash::fast::RandomState;
type Tenants = DashMap<Arc<str>, Arc<Entry>, Hasher>;

/// The credential a request uses, resolved for its tenant.
#[derive(Debug, Clone)]
pub struct Use {
    pub credential: Credential,
    /// Headers added unless the client sent its own.
    pub extra: Option<Arc<crate::credentials::Injection>>,
    /// The tenant whose connection it is (per-tenant credentials only): its tokens are kept
    /// apart from every other tenant's.
    pub tenant: Option<Arc<str>>,
}

pub struct Connections {
    by_credential: DashMap<Arc<str>, Arc<Tenants>, Hasher>,
    files: Option<Files>,
    shared: Arc<dyn SharedState>,
    tokens: TokenCache,
}

impl Connections {
    /// `key`: `CREDPROXY_STATE_KEY`; without it nothing can be stored.
    pub fn new(
        state_dir: &Path,
        key: Option<[u8; 32]>,
        shared: Arc<dyn SharedState>,
        tokens: TokenCache,
    ) -> Self {
        Connections {
            by_credential: DashMap::default(),
            files: key.map(|k| Files::new(state_dir, k)),
            shared,
            tokens,
        }
    }

    /// Reads the connections in `state_dir`; returns the files that could not be read.
    pub fn load_files(&self) -> Vec<String> {
        let Some(files) = &self.files else {
            return Vec::new();
        };
        let (records, problems) = files.load_all();
        for r in records {
            self.install(r);
        }
        problems
    }

    pub fn get(&self, credential: &str, tenant: &str) -> Option<Arc<Entry>> {
        self.by_credential
            .get(credential)?
            .get(tenant)
            .map(|e| e.clone())
    }

    /// The credential of `template` for `tenant`, built from its connection (once per
    /// connection and config).
    pub fn resolve(&self, template: &Template, tenant: &str) -> Result<Arc<Resolved>, ProxyError> {
        let unusable = |e: String| ProxyError::CredentialUnavailable(e);
        if let Some(built) = self.built(template, tenant) {
            return built.map_err(unusable);
        }
        self.build(template, tenant)
    }

    /// The request path's lookup: what the connection was built into under this config,
    /// read in place (no reference counts touched on the entry).
    fn built(&self, template: &Template, tenant: &str) -> Option<Result<Arc<Resolved>, String>> {
        let tenants = self.by_credential.get(&*template.credential)?;
        let entry = tenants.get(tenant)?;
        let built = entry.built.load();
        let b = built.as_ref().filter(|b| b.template == template.id)?;
        Some(b.result.clone())
    }

    /// Builds `tenant`'s connection under `template` and keeps the result on its entry.
    fn build(&self, template: &Template, tenant: &str) -> Result<Arc<Resolved>, ProxyError> {
        let entry = self.get(&template.credential, tenant).ok_or_else(|| {
            ProxyError::ConnectionMissing {
                tenant: tenant.to_string(),
                credential: template.credential.to_string(),
            }
        })?;
        let unusable = |e: String| ProxyError::CredentialUnavailable(e);
        let result = template.build(&entry.record).map(Arc::new).map_err(|e| {
            let why = match e {
                crate::credentials::BuildError::Invalid { key, message } if key.is_empty() => {
                    message
                }
                crate::credentials::BuildError::Invalid { key, message } => {
                    format!("{key}: {message}")
                }
                crate::credentials::BuildError::Unavailable(e) => e.to_string(),
            };
            format!(
                "tenant `{tenant}`'s connection for `{}` cannot be used: {why}",
                template.credential
            )
        });
        entry.built.store(Some(Arc::new(Built {
            template: template.id,
            result: result.clone(),
        })));
        result.map_err(unusable)
    }

    /// What a request to `host` uses for the credential `entry`: the shared credential, or
    /// the one built from `tenant`'s connection (checked against the hosts it is for).
    pub fn credential_for(
        &self,
        entry: &CredentialEntry,
        tenant: Option<&Arc<str>>,
        (host, port): (&str, u16),
    ) -> Result<Use, ProxyError> {
        let shared = match &entry.credential {
            Ok(Credential::PerTenant(t)) => t,
            Ok(c) => {
                return Ok(Use {
                    credential: c.clone(),
                    extra: entry.extra.clone(),
                    tenant: None,
                })
            }
            Err(e) => return Err(ProxyError::CredentialUnavailable(e.to_string())),
        };
        let tenant = tenant.ok_or_else(|| ProxyError::TenantRequired(entry.name.to_string()))?;
        let r = self.resolve(shared, tenant)?;
        if let Some(hosts) = &r.hosts {
            if !hosts.iter().any(|h| h.covers(host, port)) {
                let expected: Vec<&str> = hosts.iter().map(|h| h.text.as_str()).collect();
                return Err(ProxyError::ConnectionHost(format!(
                    "tenant `{tenant}`'s `{}` connection is for {}, not {host}:{port}",
                    entry.name,
                    expected.join(" or ")
                )));
            }
        }
        Ok(Use {
            credential: r.credential.clone(),
            extra: r.extra.clone(),
            tenant: Some(tenant.clone()),
        })
    }

    /// Every connection (of `tenant`), by credential then tenant.
    pub fn list(&self, tenant: Option<&str>) -> Vec<Arc<Entry>> {
        let mut out: Vec<Arc<Entry>> = self
            .by_credential
            .iter()
            .flat_map(|t| {
                t.value()
                    .iter()
                    .filter(|e| tenant.is_none_or(|want| &**e.key() == want))
                    .map(|e| e.value().clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.record.credential, &a.record.tenant).cmp(&(&b.record.credential, &b.record.tenant))
        });
        out
    }

    pub fn count(&self, credential: &str) -> usize {
        self.by_credential.get(credential).map_or(0, |t| t.len())
    }

    /// Creates or replaces a connection (fleet first, then this replica's file): whether it is
    /// new, and the entry stored (a concurrent delete may already have removed it from the
    /// map, so a caller answering for this store must not look it up again).
    pub async fn put(&self, record: Record) -> Result<(bool, Arc<Entry>), ConnError> {
        let files = self.files.as_ref().ok_or(ConnError::NoKey)?;
        // Judged before sharing: this replica hears its own change from the fleet too, and
        // may install it before we do.
        let created = self.get(&record.credential, &record.tenant).is_none();
        self.share(&Doc::Live(record.clone())).await?;
        files.save(&record)?;
        let entry = self.install(record.clone());
        self.tokens.forget(&record.credential, &record.tenant);
        Ok((created, entry))
    }

    /// Deletes a connection; false when there was none.
    pub async fn delete(&self, credential: &str, tenant: &str) -> Result<bool, ConnError> {
        let files = self.files.as_ref().ok_or(ConnError::NoKey)?;
        let Some(old) = self.get(credential, tenant) else {
            return Ok(false);
        };
        let revision = record::now_millis().max(old.record.revision + 1);
        let doc = Doc::Deleted { revision };
        self.share_as(credential, tenant, &doc).await?;
        files.remove(credential, tenant)?;
        self.uninstall(credential, tenant);
        if let Some(seed) = old
            .record
            .fields
            .get("refresh_token")
            .and_then(|v| v.as_str())
        {
            let id = crate::store::ChainId {
                credential: credential.into(),
                tenant: Some(tenant.into()),
                seed_sha256: crate::credentials::oauth2_refresh_token::sha256_hex(seed),
            };
            if let Err(e) = self.shared.drop_chain(&id).await {
                tracing::warn!(
                    credential,
                    tenant,
                    "the deleted connection's refresh-token chain stays in the fleet (sealed): {e}"
                );
            }
        }
        Ok(true)
    }

    async fn share(&self, doc: &Doc) -> Result<(), ConnError> {
        let Doc::Live(r) = doc else { return Ok(()) };
        self.share_as(&r.credential, &r.tenant, doc).await
    }

    /// Writes `doc` to the fleet (one process: nothing to do).
    async fn share_as(&self, credential: &str, tenant: &str, doc: &Doc) -> Result<(), ConnError> {
        if !self.shared.shared() {
            return Ok(());
        }
        let stored = StoredConnection {
            credential: credential.into(),
            tenant: tenant.into(),
            revision: doc.revision(),
            doc: serde_json::to_vec(doc).map_err(|e| StoreError::Unreachable(e.to_string()))?,
        };
        match self.shared.put_connection(&stored).await? {
            true => Ok(()),
            false => Err(ConnError::Stale),
        }
    }

    /// Installs `record`; returns the entry installed.
    fn install(&self, record: Record) -> Arc<Entry> {
        let tenants = self
            .by_credential
            .entry(record.credential.as_str().into())
            .or_default()
            .clone();
        let tenant: Arc<str> = record.tenant.as_str().into();
        let entry = Arc::new(Entry {
            record,
            built: ArcSwapOption::empty(),
        });
        tenants.insert(tenant, entry.clone());
        entry
    }

    fn uninstall(&self, credential: &str, tenant: &str) {
        if let Some(t) = self.by_credential.get(credential) {
            t.remove(tenant);
        }
        self.tokens.forget(credential, tenant);
    }

    /// Applies the fleet's version of one connection (another replica changed it).
    pub async fn reread(&self, credential: &str, tenant: &str) {
        match self.shared.connection(credential, tenant).await {
            Ok(Some(c)) => self.apply(c),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                credential,
                tenant,
                "could not read a changed connection: {e}"
            ),
        }
    }

    /// Compares every connection with the fleet's: newer ones there replace or delete ours,
    /// ours that the fleet lacks (it lost its data, or never had them) are given to it.
    pub async fn sync(&self) {
        let theirs = match self.shared.connections().await {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("could not compare connections with the fleet: {e}");
                return;
            }
        };
        let known: std::collections::HashSet<(String, String)> = theirs
            .iter()
            .map(|c| (c.credential.clone(), c.tenant.clone()))
            .collect();
        for c in theirs {
            self.apply(c);
        }
        for e in self.list(None) {
            let key = (e.record.credential.clone(), e.record.tenant.clone());
            if !known.contains(&key) {
                if let Err(err) = self.share(&Doc::Live(e.record.clone())).await {
                    tracing::warn!(
                        credential = key.0,
                        tenant = key.1,
                        "could not restore a connection into the fleet: {err}"
                    );
                }
            }
        }
    }

    fn apply(&self, c: StoredConnection) {
        let mine = self
            .get(&c.credential, &c.tenant)
            .map(|e| e.record.revision);
        if mine.is_some_and(|r| r >= c.revision) {
            return;
        }
        let doc: Doc = match serde_json::from_slice(&c.doc) {
            Ok(d) => d,
            Err(e) => {
                return tracing::warn!(
                    credential = c.credential,
                    tenant = c.tenant,
                    "unreadable shared connection: {e}"
                )
            }
        };
        let Some(files) = &self.files else { return };
        let saved = match &doc {
            Doc::Live(r) => files.save(r),
            Doc::Deleted { .. } if mine.is_none() => return,
            Doc::Deleted { .. } => files.remove(&c.credential, &c.tenant),
        };
        if let Err(e) = saved {
            tracing::warn!(
                credential = c.credential,
                tenant = c.tenant,
                "this replica's copy of a connection was not written: {e}"
            );
        }
        match doc {
            Doc::Live(r) => {
                self.install(r);
                self.tokens.forget(&c.credential, &c.tenant);
            }
            Doc::Deleted { .. } => self.uninstall(&c.credential, &c.tenant),
        }
        tracing::info!(
            credential = c.credential,
            tenant = c.tenant,
            "connection changed on another replica"
        );
    }

    /// Whether connections can be stored at all (the state key is set).
    pub fn writable(&self) -> bool {
        self.files.is_some()
    }

    pub fn shared(&self) -> &Arc<dyn SharedState> {
        &self.shared
    }
}
