//! Validates `RawConfig` into `Config`, collecting every error with its key path and line.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use indexmap::IndexMap;

use super::locate::Locator;
use super::raw::{RawConfig, RawProxy, RawRoute, Unmatched};
use super::units::{parse_duration, parse_size};
use super::{
    CaPaths, Client, Config, ConfigError, ConfigErrors, CredentialEntry, DnsSettings, Egress,
    Limits, ProxySettings, Route, Timeouts, Upstream,
};
use crate::credentials::{self, BuildCtx, BuildError, KindEntry};
use crate::routing::{parse_host_pattern, split_host_port, Glob, Matcher, Router};
use crate::secret::{check_template, SecretSource};

/// Loads and validates the config file, reading secrets from the process environment.
pub fn load(file: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.display().to_string(),
            line: None,
            path: String::new(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    load_str(&text, file, &|name| std::env::var(name).ok())
}

/// Validates config text; `file` names it in errors and anchors relative paths.
pub fn load_str(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut r = Validator {
        file: file.display().to_string(),
        base_dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        loc: Locator::new(text),
        errors: Vec::new(),
        warnings: Vec::new(),
        env,
    };
    let raw = r.parse(text)?;
    let config = r.resolve(raw);
    if r.errors.is_empty() {
        if let Some(mut c) = config {
            c.warnings = r.warnings;
            return Ok(c);
        }
    }
    Err(ConfigErrors(r.errors))
}

struct Validator<'a> {
    file: String,
    base_dir: PathBuf,
    loc: Locator,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Validator<'_> {
    fn problem(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.loc.line(path),
            path: path.to_string(),
            message: message.into(),
        }
    }

    fn err(&mut self, path: &str, message: impl Into<String>) {
        let e = self.problem(path, message);
        self.errors.push(e);
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        let w = self.problem(path, message);
        self.warnings.push(w);
    }

    fn parse(&self, text: &str) -> Result<RawConfig, ConfigErrors> {
        if text.trim().is_empty() {
            return Ok(RawConfig::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let mut err = self.problem(
                if path == "." { "" } else { &path },
                super::serde_message(&inner.to_string()),
            );
            if let Some(l) = inner.location() {
                err.line = Some(l.line());
            }
            ConfigErrors(vec![err])
        })
    }

    fn resolve(&mut self, raw: RawConfig) -> Option<Config> {
        let proxy = self.proxy(&raw.proxy);
        let declared: Vec<String> = raw.credentials.keys().cloned().collect();
        let state_dir = self
            .base_dir
            .join(raw.proxy.state_dir.as_deref().unwrap_or(".credproxy/state"));
        let strict = raw.proxy.strict_permissions.unwrap_or(false);
        let credentials = self.credentials(raw.credentials, &state_dir, strict);
        // Names as declared: a credential that failed to build still exists for route checks
        // (the config is rejected anyway, and its own error says why).
        let names: Vec<&str> = declared.iter().map(String::as_str).collect();
        let (routes, matchers) = self.routes(&raw.routes, &names);
        let clients = raw.clients.map(|cs| self.clients(&cs, &names, strict));
        for (i, c) in credentials.iter().enumerate() {
            if !routes.iter().any(|r| r.credentials.contains(&i)) {
                self.warn(&format!("credentials.{}", c.name), "not used by any route");
            }
        }
        if routes.is_empty() && self.errors.is_empty() {
            self.warn("routes", "no routes: every request is handled as unmatched");
        }
        Some(Config {
            file: PathBuf::from(&self.file),
            proxy: proxy?,
            credentials,
            routes,
            router: Router::new(matchers),
            clients,
            warnings: Vec::new(),
        })
    }

    fn duration(
        &mut self,
        path: &str,
        v: Option<&String>,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let Some(text) = v else { return default };
        match parse_duration(text) {
            Ok(d) if d < min || d > max => {
                self.err(
                    path,
                    format!("`{text}` is out of range ({min:?} to {max:?})"),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.err(path, e);
                default
            }
        }
    }

    fn addr(&mut self, path: &str, v: Option<&String>, default: &str) -> Option<SocketAddr> {
        let text = v.map(String::as_str).unwrap_or(default);
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    path,
                    format!("`{text}` is not an address; expected IP:PORT such as 127.0.0.1:8080"),
                );
                None
            }
        }
    }

    fn proxy(&mut self, p: &RawProxy) -> Option<ProxySettings> {
        let listen = self.addr("proxy.listen", p.listen.as_ref(), "127.0.0.1:8080");
        let admin = match p.admin.as_deref() {
            Some("off") => None,
            _ => self.addr("proxy.admin", p.admin.as_ref(), "127.0.0.1:9090"),
        };
        let max_body = match &p.max_body {
            None => 16 << 20,
            Some(t) => match parse_size(t) {
                Ok(n) if n <= 1 << 30 => n,
                Ok(_) => {
                    self.err(
                        "proxy.max_body",
                        format!("`{t}` is larger than the 1GiB limit"),
                    );
                    0
                }
                Err(e) => {
                    self.err("proxy.max_body", e);
                    0
                }
            },
        };
        let (ms, hour) = (Duration::from_millis(1), Duration::from_secs(3600));
        let t = p.timeouts.as_ref();
        let timeouts = Timeouts {
            connect: self.duration(
                "proxy.timeouts.connect",
                t.and_then(|t| t.connect.as_ref()),
                Duration::from_secs(5),
                ms,
                hour,
            ),
            read: self.duration(
                "proxy.timeouts.read",
                t.and_then(|t| t.read.as_ref()),
                Duration::from_secs(60),
                ms,
                24 * hour,
            ),
            idle: self.duration(
                "proxy.timeouts.idle",
                t.and_then(|t| t.idle.as_ref()),
                Duration::from_secs(60),
                ms,
                24 * hour,
            ),
            client_idle: self.duration(
                "proxy.timeouts.client_idle",
                t.and_then(|t| t.client_idle.as_ref()),
                Duration::from_secs(60),
                Duration::from_secs(1),
                24 * hour,
            ),
            handshake: self.duration(
                "proxy.timeouts.handshake",
                t.and_then(|t| t.handshake.as_ref()),
                Duration::from_secs(10),
                ms,
                Duration::from_secs(300),
            ),
            total: t.and_then(|t| t.total.as_ref()).map(|raw| {
                self.duration(
                    "proxy.timeouts.total",
                    Some(raw),
                    Duration::from_secs(600),
                    Duration::from_secs(1),
                    24 * hour,
                )
            }),
            header: self.duration(
                "proxy.timeouts.header",
                t.and_then(|t| t.header.as_ref()),
                Duration::from_secs(10),
                ms,
                Duration::from_secs(300),
            ),
        };
        let limits = self.limits(p);
        let d = p.dns.as_ref();
        let dns = DnsSettings {
            ttl: self.duration(
                "proxy.dns.ttl",
                d.and_then(|d| d.ttl.as_ref()),
                Duration::from_secs(30),
                Duration::from_secs(1),
                hour,
            ),
            negative_ttl: self.duration(
                "proxy.dns.negative_ttl",
                d.and_then(|d| d.negative_ttl.as_ref()),
                Duration::from_secs(2),
                Duration::ZERO,
                Duration::from_secs(60),
            ),
            overrides: self.dns_overrides(d.map(|d| &d.overrides)),
        };
        let threads = match p.threads {
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            Some(n) if (1..=256).contains(&n) => n,
            Some(n) => {
                self.err("proxy.threads", format!("{n} is out of range (1 to 256)"));
                1
            }
        };
        let ca = p.ca.as_ref().map(|c| CaPaths {
            cert: self.base_dir.join(&c.cert),
            key: self.base_dir.join(&c.key),
        });
        let strict = p.strict_permissions.unwrap_or(false);
        let interceptor = ca.as_ref().and_then(|c| self.interceptor(c, strict));
        let upstream_ca = p.upstream_ca.as_ref().map(|u| self.base_dir.join(u));
        let upstream_roots = upstream_ca.as_ref().and_then(|u| {
            crate::tls::roots::with_extra(u)
                .map_err(|e| self.err("proxy.upstream_ca", e))
                .ok()
        });
        let egress = self.egress(p);
        Some(ProxySettings {
            listen: listen?,
            admin,
            unmatched: p.unmatched.unwrap_or(Unmatched::Tunnel),
            max_body,
            timeouts,
            limits,
            dns,
            threads,
            ca,
            interceptor,
            upstream_ca,
            upstream_roots,
            state_dir: self
                .base_dir
                .join(p.state_dir.as_deref().unwrap_or(".credproxy/state")),
            egress,
        })
    }

    /// Loads the CA named by `proxy.ca`; its problems are config errors (exit 2 at startup,
    /// the running config kept on reload).
    fn interceptor(&mut self, c: &CaPaths, strict: bool) -> Option<Arc<crate::tls::Interceptor>> {
        let ca = match crate::tls::ca::load(&c.cert, &c.key) {
            Ok(ca) => ca,
            Err(e) => {
                self.err(e.key(), e.to_string());
                return None;
            }
        };
        match &ca.key_exposed {
            Some(w) if strict => {
                self.err(
                    "proxy.ca.key",
                    format!("{w} (proxy.strict_permissions is on)"),
                );
                return None;
            }
            Some(w) => self.warn("proxy.ca.key", w.clone()),
            None => {}
        }
        for w in &ca.warnings {
            self.warn("proxy.ca.cert", w.clone());
        }
        match crate::tls::Interceptor::new(ca) {
            Ok(i) => Some(Arc::new(i)),
            Err(e) => {
                self.err("proxy.ca", e.to_string());
                None
            }
        }
    }

    fn limits(&mut self, p: &RawProxy) -> Limits {
        let l = p.limits.as_ref();
        let max_header_bytes = match l.and_then(|l| l.max_header_bytes.as_ref()) {
            None => 64 << 10,
            Some(t) => match parse_size(t) {
                Ok(n) if (1 << 10..=1 << 20).contains(&n) => n as usize,
                Ok(_) => {
                    self.err(
                        "proxy.limits.max_header_bytes",
                        format!("`{t}` is out of range (1KiB to 1MiB)"),
                    );
                    0
                }
                Err(e) => {
                    self.err("proxy.limits.max_header_bytes", e);
                    0
                }
            },
        };
        let mut count = |key: &str, v: Option<usize>, default: usize, max: usize| match v {
            None => default,
            Some(n) if (1..=max).contains(&n) => n,
            Some(n) => {
                self.err(
                    &format!("proxy.limits.{key}"),
                    format!("{n} is out of range (1 to {max})"),
                );
                default
            }
        };
        Limits {
            max_header_bytes,
            max_headers: count("max_headers", l.and_then(|l| l.max_headers), 100, 1000),
            max_connections_per_client: count(
                "max_connections_per_client",
                l.and_then(|l| l.max_connections_per_client),
                256,
                1_000_000,
            ),
        }
    }

    fn dns_overrides(
        &mut self,
        raw: Option<&IndexMap<String, String>>,
    ) -> std::collections::HashMap<String, std::net::IpAddr> {
        let mut out = std::collections::HashMap::new();
        for (host, ip) in raw.into_iter().flatten() {
            let path = format!("proxy.dns.overrides.{host}");
            let Ok(h) = crate::routing::normalize_host(host) else {
                self.err(&path, format!("`{host}` is not a host name"));
                continue;
            };
            match ip.parse() {
                Ok(ip) => {
                    out.insert(h, ip);
                }
                Err(_) => self.err(&path, format!("`{ip}` is not an IP address")),
            }
        }
        out
    }

    fn egress(&mut self, p: &RawProxy) -> Egress {
        let e = p.egress.as_ref();
        let allow = e.map(|e| e.allow.clone()).unwrap_or_default();
        for (i, a) in allow.iter().enumerate() {
            if !valid_allow_entry(a) {
                self.err(
                    &format!("proxy.egress.allow[{i}]"),
                    format!(
                        "`{a}` is neither a CIDR (10.0.0.0/8) nor a host name (without a port)"
                    ),
                );
            }
        }
        let deny_private = e.and_then(|e| e.deny_private).unwrap_or(true);
        Egress {
            deny_private,
            policy: crate::egress::Policy::new(deny_private, &allow),
            allow,
        }
    }

    fn credentials(
        &mut self,
        raw: IndexMap<String, serde_yaml::Value>,
        state_dir: &Path,
        strict_permissions: bool,
    ) -> Vec<CredentialEntry> {
        let mut out = Vec::new();
        for (name, value) in raw {
            let path = format!("credentials.{name}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                self.err(
                    &path,
                    "a credential name uses only letters, digits, `-`, `_` and `.`",
                );
                continue;
            }
            let Some((kind, fields)) = self.credential_kind(&path, value) else {
                continue;
            };
            let mut ctx = BuildCtx {
                base_dir: &self.base_dir,
                env: self.env,
                warnings: Vec::new(),
                name: &name,
                state_dir,
                strict_permissions,
            };
            let built = kind.build(fields, &mut ctx);
            for (key, msg) in std::mem::take(&mut ctx.warnings) {
                self.warn(&format!("{path}.{key}"), msg);
            }
            let credential = match built {
                Ok(c) => Ok(c),
                Err(BuildError::Unavailable(e)) => {
                    self.warn(&path, format!("unavailable until fixed: {e}"));
                    Err(e)
                }
                Err(BuildError::Invalid { key, message }) if key.is_empty() => {
                    self.err(&path, message);
                    continue;
                }
                Err(BuildError::Invalid { key, message }) => {
                    self.err(&format!("{path}.{key}"), message);
                    continue;
                }
            };
            out.push(CredentialEntry {
                name: name.into(),
                kind: kind.name,
                credential,
            });
        }
        out
    }

    /// The credential's type (from `type`) and the rest of its fields.
    fn credential_kind(
        &mut self,
        path: &str,
        value: serde_yaml::Value,
    ) -> Option<(&'static KindEntry, serde_yaml::Value)> {
        let serde_yaml::Value::Mapping(mut map) = value else {
            self.err(path, "expected a mapping with a `type` key");
            return None;
        };
        let ty = match map.remove("type") {
            Some(serde_yaml::Value::String(t)) => t,
            Some(_) => {
                self.err(&format!("{path}.type"), "expected a string");
                return None;
            }
            None => {
                let m = format!("missing `type` (one of: {})", credentials::kind_names());
                self.err(path, m);
                return None;
            }
        };
        let Some(kind) = credentials::kind(&ty) else {
            let m = format!(
                "unknown credential type `{ty}` (one of: {})",
                credentials::kind_names()
            );
            self.err(&format!("{path}.type"), m);
            return None;
        };
        Some((kind, serde_yaml::Value::Mapping(map)))
    }

    fn routes(&mut self, raw: &[RawRoute], creds: &[&str]) -> (Vec<Route>, Vec<Matcher>) {
        let mut routes = Vec::new();
        let mut matchers = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let path = format!("routes[{i}]");
            if let Some((route, matcher)) = self.route(&path, r, creds) {
                routes.push(route);
                matchers.push(matcher);
            }
        }
        (routes, matchers)
    }

    fn route(&mut self, path: &str, r: &RawRoute, creds: &[&str]) -> Option<(Route, Matcher)> {
        let errors_before = self.errors.len();
        let (host, port) = match (&r.host, &r.upstream) {
            (Some(_), Some(_)) => {
                self.err(
                    &format!("{path}.host"),
                    "a sidecar route (with `upstream`) matches by path; remove `host`",
                );
                (None, None)
            }
            (None, None) => {
                self.err(
                    path,
                    "a route needs `host` (proxy route) or `upstream` (sidecar route)",
                );
                (None, None)
            }
            (Some(h), None) => match parse_host_pattern(h) {
                Ok((p, port)) => (Some(p), port),
                Err(e) => {
                    self.err(&format!("{path}.host"), e);
                    (None, None)
                }
            },
            (None, Some(_)) => (None, None),
        };
        let upstream = r.upstream.as_ref().and_then(|u| match parse_upstream(u) {
            Ok(u) => Some(u),
            Err(e) => {
                self.err(&format!("{path}.upstream"), e);
                None
            }
        });
        let glob = r.path.as_ref().and_then(|p| match Glob::new(p) {
            Ok(g) => Some(g),
            Err(e) => {
                self.err(&format!("{path}.path"), e);
                None
            }
        });
        if let Some(sp) = &r.strip_prefix {
            if r.upstream.is_none() {
                self.err(
                    &format!("{path}.strip_prefix"),
                    "`strip_prefix` applies only to sidecar routes (with `upstream`)",
                );
            } else if !sp.starts_with('/') || sp.len() < 2 || sp.ends_with('/') {
                self.err(&format!("{path}.strip_prefix"), format!("`{sp}`: expected a path such as /hubspot (leading slash, no trailing slash)"));
            }
        }
        let methods = self.methods(path, r.methods.as_deref());
        let credentials = self.route_credentials(path, r, creds);
        if self.errors.len() > errors_before {
            return None;
        }
        let name = r
            .name
            .clone()
            .unwrap_or_else(|| default_route_name(r))
            .into();
        let matcher = Matcher {
            host,
            port,
            path: glob,
            methods,
        };
        let allow_http = r
            .allow_http
            .unwrap_or_else(|| matcher.host.as_ref().is_some_and(is_loopback));
        let route = Route {
            name,
            credentials,
            upstream,
            strip_prefix: r.strip_prefix.clone(),
            allow_http,
        };
        Some((route, matcher))
    }

    fn methods(&mut self, path: &str, ms: Option<&[String]>) -> Option<Vec<Method>> {
        let ms = ms?;
        if ms.is_empty() {
            self.err(
                &format!("{path}.methods"),
                "empty list; omit `methods` to allow any method",
            );
        }
        let mut out = Vec::new();
        for (j, m) in ms.iter().enumerate() {
            let upper = m.to_ascii_uppercase();
            match Method::from_bytes(upper.as_bytes()) {
                Ok(m) => out.push(m),
                Err(_) => self.err(
                    &format!("{path}.methods[{j}]"),
                    format!("`{m}` is not an HTTP method"),
                ),
            }
        }
        Some(out)
    }

    fn route_credentials(&mut self, path: &str, r: &RawRoute, creds: &[&str]) -> Vec<usize> {
        let (key, list): (String, Vec<&String>) = match (&r.credential, &r.credentials) {
            (Some(c), None) => (format!("{path}.credential"), vec![c]),
            (None, Some(cs)) if !cs.is_empty() => {
                (format!("{path}.credentials"), cs.iter().collect())
            }
            (None, Some(_)) => {
                self.err(&format!("{path}.credentials"), "empty list");
                return Vec::new();
            }
            (Some(_), Some(_)) => {
                self.err(path, "use either `credential` or `credentials`, not both");
                return Vec::new();
            }
            (None, None) => {
                self.err(path, "a route needs `credential` (or `credentials: [..]`)");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        let many = r.credentials.is_some();
        for (j, name) in list.into_iter().enumerate() {
            let at = if many {
                format!("{key}[{j}]")
            } else {
                key.clone()
            };
            match creds.iter().position(|c| c == name) {
                Some(idx) if out.contains(&idx) => {
                    self.err(&at, format!("`{name}` is listed twice"))
                }
                Some(idx) => out.push(idx),
                None => self.err(
                    &at,
                    format!(
                        "unknown credential `{name}` (defined: {})",
                        list_or_none(creds)
                    ),
                ),
            }
        }
        out
    }

    fn clients(
        &mut self,
        raw: &[super::raw::RawClient],
        creds: &[&str],
        strict: bool,
    ) -> Vec<Client> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (i, c) in raw.iter().enumerate() {
            let path = format!("clients[{i}]");
            if c.name.is_empty() || c.name.contains(':') {
                self.err(
                    &format!("{path}.name"),
                    "a client name is non-empty and has no `:`",
                );
                continue;
            }
            if !seen.insert(c.name.clone()) {
                self.err(
                    &format!("{path}.name"),
                    format!("client `{}` is defined twice", c.name),
                );
                continue;
            }
            if let Err(e) = check_template(&c.secret) {
                self.err(&format!("{path}.secret"), e);
                continue;
            }
            let source = SecretSource::parse(&c.secret);
            if source.is_literal() {
                self.warn(
                    &format!("{path}.secret"),
                    "secret written as a literal; prefer ${ENV_VAR} or file:PATH",
                );
            }
            if let Some(problem) = source.permission_problem(&self.base_dir) {
                if strict {
                    self.err(
                        &format!("{path}.secret"),
                        format!("{problem} (proxy.strict_permissions is on)"),
                    );
                    continue;
                }
                self.warn(&format!("{path}.secret"), problem);
            }
            let secret = match source.resolve(&self.base_dir, self.env) {
                Ok(s) => s,
                Err(e) => {
                    // A client that cannot authenticate is a hard error: starting would lock it out
                    // or, worse, tempt someone to remove `clients:` altogether.
                    self.err(&format!("{path}.secret"), e.to_string());
                    continue;
                }
            };
            // Short secrets can be guessed; a shared one makes Bearer ambiguous.
            if secret.expose().len() < MIN_CLIENT_SECRET {
                self.err(
                    &format!("{path}.secret"),
                    format!("a client secret needs at least {MIN_CLIENT_SECRET} characters"),
                );
                continue;
            }
            if out
                .iter()
                .any(|o: &Client| o.secret.ct_eq(secret.expose().as_bytes()))
            {
                self.err(
                    &format!("{path}.secret"),
                    "two clients share this secret; give each its own",
                );
                continue;
            }
            let mut allowed = Vec::new();
            for (j, name) in c.credentials.iter().enumerate() {
                match creds.iter().position(|x| x == name) {
                    Some(idx) => allowed.push(idx),
                    None => self.err(
                        &format!("{path}.credentials[{j}]"),
                        format!(
                            "unknown credential `{name}` (defined: {})",
                            list_or_none(creds)
                        ),
                    ),
                }
            }
            out.push(Client {
                name: c.name.clone(),
                secret,
                credentials: allowed,
            });
        }
        out
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

fn default_route_name(r: &RawRoute) -> String {
    match (&r.host, &r.path) {
        (Some(h), Some(p)) => format!("{h}{p}"),
        (Some(h), None) => h.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) => r.upstream.clone().unwrap_or_default(),
    }
}

/// Loopback hosts, where plain HTTP never leaves the machine.
fn is_loopback(p: &crate::routing::HostPattern) -> bool {
    match p {
        crate::routing::HostPattern::Exact(h) => {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        crate::routing::HostPattern::Suffix(_) => false,
    }
}

/// Shortest accepted client secret.
const MIN_CLIENT_SECRET: usize = 8;

fn valid_allow_entry(a: &str) -> bool {
    match a.split_once('/') {
        Some((ip, bits)) => {
            let Ok(bits) = bits.parse::<u8>() else {
                return false;
            };
            match ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => bits <= 32,
                Ok(std::net::IpAddr::V6(_)) => bits <= 128,
                Err(_) => false,
            }
        }
        // A host name without a port: the exemption is per host.
        None => split_host_port(a).is_ok_and(|(_, port)| port.is_none()),
    }
}

/// Parses a sidecar `upstream:` URL: `http(s)://host[:port][/base]`.
pub fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let (tls, rest) = if let Some(r) = text.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = text.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("`{text}`: expected an http:// or https:// URL"));
    };
    if rest.contains(['?', '#']) {
        return Err(format!(
            "`{text}`: an upstream URL has no query or fragment"
        ));
    }
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(format!(
            "`{text}`: credentials in the URL are not allowed; use a credential"
        ));
    }
    let (host, port) = split_host_port(authority).map_err(|e| format!("`{text}`: {e}"))?;
    if !base.is_empty() && base.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(format!(
            "`{text}`: the path is not valid in a URL (percent-encode it)"
        ));
    }
    let default_port = if tls { 443 } else { 80 };
    let port = port.unwrap_or(default_port);
    let host_for_header = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let authority = if port == default_port {
        host_for_header
    } else {
        format!("{host_for_header}:{port}")
    };
    Ok(Upstream {
        tls,
        host,
        port,
        base_path: base.to_string(),
        authority,
    })
}

#[cfg(test)]
mod tests;
