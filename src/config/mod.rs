//! Configuration: parse `credentials.yaml` (serde types in `raw`), validate it into `Config`.
//! Every rejection names the file, the key path and the line.

mod locate;
pub mod raw;
pub mod schema;
pub mod units;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::credentials::Credential;
use crate::routing::Router;
use crate::secret::{Secret, SecretError};

pub use raw::Unmatched;
pub use validate::{load, load_str, load_text, load_with};

/// A validated configuration, ready to serve.
#[derive(Debug)]
pub struct Config {
    pub file: PathBuf,
    pub proxy: ProxySettings,
    /// Indexed by credential id; routes refer to credentials by index.
    pub credentials: Vec<CredentialEntry>,
    pub routes: Vec<Route>,
    pub router: Router,
    /// None: no `clients:` section, no proxy authentication.
    pub clients: Option<Vec<Client>>,
    pub warnings: Vec<ConfigWarning>,
    /// The text it was built from, built again when a secret source's value changes.
    pub text: Arc<str>,
    /// The metric handles this config's requests count with, set when it goes into service.
    pub metrics: std::sync::OnceLock<crate::metrics::ConfigMetrics>,
}

impl Config {
    pub fn credential_index(&self, name: &str) -> Option<usize> {
        self.credentials.iter().position(|c| &*c.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// After SIGTERM, the longest in-flight requests and tunnels may take.
    pub shutdown_grace: std::time::Duration,
    pub otel: Option<crate::otel::OtelSettings>,
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub unmatched: Unmatched,
    pub max_body: u64,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub dns: DnsSettings,
    pub threads: usize,
    pub ca: Option<CaPaths>,
    /// The loaded CA and leaf cache; `None` without `proxy.ca` (HTTPS is then tunnelled).
    pub interceptor: Option<Arc<crate::tls::Interceptor>>,
    pub upstream_ca: Option<PathBuf>,
    /// System roots plus `upstream_ca`; `None` uses the system roots alone.
    pub upstream_roots: Option<crate::tls::roots::Roots>,
    pub egress: Egress,
    pub state_dir: PathBuf,
    /// `proxy.shared_state`: the fleet's Redis; None runs embedded.
    pub shared_state: Option<SharedStateSettings>,
    /// `proxy.admin_token`: every `/connections` call and every POST to the admin listener
    /// needs it as a Bearer token.
    pub admin_token: Option<Secret>,
    /// `proxy.connect`: the listener users' browsers reach for the OAuth connect flow.
    pub connect: Option<ConnectSettings>,
    /// `CREDPROXY_STATE_KEY`, when set and valid (connections are sealed under it).
    pub state_key: Option<[u8; 32]>,
}

/// `proxy.connect`, validated.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    pub listen: SocketAddr,
    /// What browsers reach it as, without a trailing slash (`https://connect.example.com`).
    pub public_url: String,
}

/// `proxy.shared_state`, validated.
#[derive(Debug, Clone)]
pub struct SharedStateSettings {
    /// One URL, or a Cluster's seeds (`cluster`).
    pub urls: Vec<Secret>,
    pub cluster: bool,
    pub prefix: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `CREDPROXY_STATE_KEY`: every value in Redis is sealed under it.
    pub key: [u8; 32],
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub idle: Duration,
    pub client_idle: Duration,
    pub handshake: Duration,
    pub header: Duration,
    /// A whole request, head to end of response; `None`: no limit.
    pub total: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections_per_client: usize,
    pub max_buffered: u64,
    pub max_buffered_per_client: u64,
}

#[derive(Debug, Clone)]
pub struct DnsSettings {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    /// Normalised host name to fixed address.
    pub overrides: std::collections::HashMap<String, std::net::IpAddr>,
}

#[derive(Debug, Clone)]
pub struct CaPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Egress {
    pub deny_private: bool,
    pub allow: Vec<String>,
    pub policy: crate::egress::Policy,
}

/// How the warning about an unavailable credential starts (`check` lists those itself).
pub const UNAVAILABLE: &str = "unavailable until fixed (requests that would use it answer 502)";

/// A named credential: usable, or unavailable with the reason (requests that would use it
/// answer 502).
#[derive(Debug)]
pub struct CredentialEntry {
    pub name: Arc<str>,
    pub kind: &'static str,
    pub credential: Result<Credential, SecretError>,
    /// The catalog entry (`provider:`) with the config's overrides, if either is given.
    pub catalog: Option<Arc<crate::catalog::Provider>>,
    /// Headers the catalog adds unless the client sent its own (shared credentials; a
    /// per-tenant one builds its own per connection).
    pub extra: Option<Arc<crate::credentials::Injection>>,
    /// The runtime secret sources its secrets come from (for `/credentials`).
    pub sources: Vec<Arc<crate::sources::SourceSpec>>,
}

impl CredentialEntry {
    /// The template of a per-tenant credential.
    pub fn template(&self) -> Option<&Arc<crate::connections::Template>> {
        match &self.credential {
            Ok(Credential::PerTenant(t)) => Some(t),
            _ => None,
        }
    }
}

/// A compiled route; matching data lives in `Config::router` under the same index.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: Arc<str>,
    /// Credential indexes; the first is the default.
    pub credentials: Vec<usize>,
    pub upstream: Option<Upstream>,
    pub strip_prefix: Option<String>,
    /// The credential may travel over plain HTTP (forward routes only).
    pub allow_http: bool,
    /// `scrub_responses`: echoes of the injected secret are replaced in responses.
    pub scrub_responses: bool,
    /// `require_placeholder`: requests without a placeholder are refused.
    pub require_placeholder: bool,
    /// The route's `mtls` credential, presented on its upstream TLS connections alongside
    /// the header credential (which is then one of `credentials`, never this one unless it
    /// is the route's only credential).
    pub client_cert: Option<usize>,
}

/// Where a sidecar route forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Prepended to the forwarded path; empty or `/base` without a trailing slash.
    pub base_path: String,
    /// The `Host` header value: host, plus the port when it is not the scheme's default.
    pub authority: String,
}

#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    pub secret: Secret,
    pub credentials: Vec<usize>,
    /// Its requests use this tenant's connections (unless it names another it may use).
    pub tenant: Option<Arc<str>>,
    /// Tenants it may name with `X-Credproxy-Tenant`.
    pub tenants: TenantScope,
}

/// Which tenants a client may name per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    None,
    /// `tenants: ["*"]`.
    Any,
    Some(Vec<String>),
}

impl TenantScope {
    pub fn allows(&self, tenant: &str) -> bool {
        match self {
            TenantScope::None => false,
            TenantScope::Any => true,
            TenantScope::Some(list) => list.iter().any(|t| t == tenant),
        }
    }
}

/// A problem found in the config, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

/// Something accepted but worth saying at startup (same shape as an error).
pub type ConfigWarning = ConfigError;

/// All problems found in one pass, so a user fixes them in one go.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// A failure to do with the whole file.
    pub fn one(file: &Path, message: String) -> Self {
        ConfigErrors(vec![ConfigError {
            file: file.display().to_string(),
            line: None,
            path: String::new(),
            message,
        }])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// serde_yaml appends " at line L column C"; the line is reported separately.
/// serde_yaml may also prefix the parent path ("proxy: unknown field"); the path is reported
/// separately too.
pub(crate) fn serde_message(msg: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    match msg.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') && !head.is_empty() => rest.to_string(),
        _ => msg.to_string(),
    }
}

/// `proxy.log.format` as written in the file at `path`, read before logging starts; the
/// full load reports any problem with it.
pub fn log_format_in(path: &Path) -> Option<raw::LogFormat> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    serde_yaml::from_value(v.get("proxy")?.get("log")?.get("format")?.clone()).ok()
}

/// The config file to use: `-c`, else `$CREDPROXY_CONFIG`, else `./credentials.yaml`.
pub fn default_path(cli: Option<&Path>) -> PathBuf {
    cli.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CREDPROXY_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("credentials.yaml"))
}
