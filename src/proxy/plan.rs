//! Decides what to do with a request before any upstream work: who the client is, where the
//! request goes, which route and credential apply. Pure: no I/O, so every rule is unit-tested.

use std::sync::Arc;

use base64::Engine;
use http::uri::PathAndQuery;
use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
use pingora::http::RequestHeader;

use super::tunnel::Tunnel;
use super::{placeholder, scope};
use crate::config::{Config, Unmatched, Upstream};
use crate::errors::ProxyError;
use crate::routing::split_host_port;

pub const CREDENTIAL_HEADER: &str = "x-credproxy-credential";
pub const TENANT_HEADER: &str = "x-credproxy-tenant";
// As names, so a lookup does not parse the text on every request.
const CREDENTIAL_NAME: http::HeaderName = http::HeaderName::from_static(CREDENTIAL_HEADER);
const TENANT_NAME: http::HeaderName = http::HeaderName::from_static(TENANT_HEADER);

/// Where the request is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    /// Normalised host (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The `Host` header to send.
    pub authority: String,
    /// Origin-form path and query to send, checked once: the upstream request's URI is made
    /// from it without another parse or copy.
    pub path: PathAndQuery,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub route: Option<usize>,
    pub credential: Option<usize>,
    pub client: Option<usize>,
    /// The tenant whose connection a per-tenant credential uses.
    pub tenant: Option<Arc<str>>,
    pub target: Target,
    /// The request carries placeholders (`credproxy:NAME`) for its credential, to fill in.
    pub placeholder: bool,
}

/// A refusal with whatever was known when it happened, for the error body.
#[derive(Debug)]
pub struct Refusal {
    pub error: ProxyError,
    pub route: Option<usize>,
    pub credential: Option<usize>,
}

impl From<ProxyError> for Refusal {
    fn from(error: ProxyError) -> Self {
        Refusal {
            error,
            route: None,
            credential: None,
        }
    }
}

fn bad(msg: impl Into<String>) -> ProxyError {
    ProxyError::BadRequest(msg.into())
}

/// The path and query to send, as the upstream request's URI will carry it.
fn checked_path(path: String) -> Result<PathAndQuery, ProxyError> {
    PathAndQuery::try_from(path).map_err(|_| bad("request path cannot be forwarded"))
}

/// Identifies the client from `Proxy-Authorization` when `clients:` is configured.
/// Every configured secret is compared (in constant time) so timing does not reveal which
/// name exists.
pub fn authenticate(cfg: &Config, header: Option<&[u8]>) -> Result<Option<usize>, ProxyError> {
    let Some(clients) = &cfg.clients else {
        return Ok(None);
    };
    let header = header.ok_or(ProxyError::ProxyAuthRequired)?;
    let text = std::str::from_utf8(header).map_err(|_| ProxyError::ProxyAuthRequired)?;
    let (scheme, value) = text
        .trim()
        .split_once(' ')
        .ok_or(ProxyError::ProxyAuthRequired)?;
    let value = value.trim();
    let mut found = None;
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| ProxyError::ProxyAuthRequired)?;
        let pos = decoded
            .iter()
            .position(|&b| b == b':')
            .ok_or(ProxyError::ProxyAuthRequired)?;
        let (name, secret) = (&decoded[..pos], &decoded[pos + 1..]);
        for (i, c) in clients.iter().enumerate() {
            let ok = c.secret.ct_eq(secret) & (c.name.as_bytes() == name);
            if ok && found.is_none() {
                found = Some(i);
            }
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        for (i, c) in clients.iter().enumerate() {
            if c.secret.ct_eq(value.as_bytes()) && found.is_none() {
                found = Some(i);
            }
        }
    }
    found.map(Some).ok_or(ProxyError::ProxyAuthRequired)
}

/// The `Host` value for a normalised host: IPv6 bracketed, the port only when not the default.
fn authority_of(host: &str, port: u16, tls: bool) -> String {
    use std::fmt::Write;
    // One allocation: this runs for every forwarded request.
    let mut a = String::with_capacity(host.len() + 8);
    if host.contains(':') {
        let _ = write!(a, "[{host}]");
    } else {
        a.push_str(host);
    }
    if port != if tls { 443 } else { 80 } {
        let _ = write!(a, ":{port}");
    }
    a
}

/// The destination of a request inside an intercepted tunnel: always the CONNECT host and
/// port, over TLS when the client spoke TLS in the tunnel. Every name the request gives for its destination (`Host`, HTTP/2 `:authority`, an
/// absolute-form URL) must be that same host and port, or the request is refused.
fn tunnel_target(t: &Tunnel, req: &RequestHeader, rt: RequestTarget) -> Result<Target, ProxyError> {
    let mut claims: Vec<&str> = Vec::new();
    let path = match rt {
        RequestTarget::Origin { path, query } => match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        },
        RequestTarget::Absolute {
            tls,
            authority,
            path_and_query,
        } => {
            if tls != t.tls {
                return Err(bad("the URL's scheme does not match the tunnel"));
            }
            claims.push(authority);
            path_and_query.to_string()
        }
    };
    if let Some(a) = req.uri.authority() {
        claims.push(a.as_str());
    }
    for h in req.headers.get_all(http::header::HOST) {
        claims.push(h.to_str().map_err(|_| bad("Host is not valid text"))?);
    }
    let connect = authority_of(&t.host, t.port, t.tls);
    let default_port = if t.tls { 443 } else { 80 };
    for c in claims {
        if c.contains('@') {
            return Err(bad("userinfo in the request authority is not allowed"));
        }
        let same = split_host_port(c)
            .is_ok_and(|(h, p)| h == t.host && p.unwrap_or(default_port) == t.port);
        if !same {
            return Err(bad(format!(
                "`{c}` does not match the CONNECT target `{connect}`"
            )));
        }
    }
    Ok(Target {
        tls: t.tls,
        host: t.host.clone(),
        port: t.port,
        authority: connect,
        path: checked_path(path)?,
    })
}

/// Parses an authority from an absolute-form URI, refusing userinfo.
fn forward_target(auth: &str, tls: bool, path: String) -> Result<Target, ProxyError> {
    if auth.contains('@') {
        return Err(bad("userinfo in the request URL is not allowed"));
    }
    let (host, port) = split_host_port(auth).map_err(|e| bad(format!("host: {e}")))?;
    let port = port.unwrap_or(if tls { 443 } else { 80 });
    let authority = authority_of(&host, port, tls);
    Ok(Target {
        tls,
        host,
        port,
        authority,
        path: checked_path(path)?,
    })
}

fn sidecar_target(
    up: &Upstream,
    strip: Option<&str>,
    path: &str,
    query: Option<&str>,
) -> Result<Target, ProxyError> {
    let rest = match strip {
        Some(sp) if path == sp => "/",
        Some(sp) if path.starts_with(sp) && path.as_bytes().get(sp.len()) == Some(&b'/') => {
            &path[sp.len()..]
        }
        _ => path,
    };
    let mut p = format!("{}{}", up.base_path, rest);
    if let Some(q) = query {
        p.push('?');
        p.push_str(q);
    }
    Ok(Target {
        tls: up.tls,
        host: up.host.clone(),
        port: up.port,
        authority: up.authority.clone(),
        path: checked_path(p)?,
    })
}

/// Plans a request that arrived on the proxy listener, or inside an intercepted tunnel (whose
/// client authenticated on the CONNECT).
pub fn plan(cfg: &Config, req: &RequestHeader, tunnel: Option<&Tunnel>) -> Result<Plan, Refusal> {
    let client = match tunnel {
        Some(t) => tunnel_client(cfg, t)?,
        None => authenticate(
            cfg,
            req.headers
                .get(http::header::PROXY_AUTHORIZATION)
                .map(|v| v.as_bytes()),
        )?,
    };
    route_request(cfg, req, client, tunnel)
}

/// The tunnel's client in the current config (it may have been reloaded since the CONNECT).
fn tunnel_client(cfg: &Config, t: &Tunnel) -> Result<Option<usize>, ProxyError> {
    let Some(clients) = &cfg.clients else {
        return Ok(None);
    };
    t.client
        .as_ref()
        .and_then(|n| clients.iter().position(|c| &c.name == n))
        .map(Some)
        .ok_or(ProxyError::ProxyAuthRequired)
}

/// The request target, as sent by the client.
enum RequestTarget<'a> {
    Absolute {
        tls: bool,
        authority: &'a str,
        path_and_query: &'a str,
    },
    Origin {
        path: &'a str,
        query: Option<&'a str>,
    },
}

fn request_target(req: &RequestHeader) -> Result<RequestTarget<'_>, ProxyError> {
    let raw = std::str::from_utf8(req.raw_path())
        .map_err(|_| bad("request target is not valid UTF-8"))?;
    match raw_target_authority(raw.as_bytes()) {
        RawTargetAuthority::Absolute {
            scheme,
            authority,
            path_and_query,
        } => {
            let tls = if scheme.eq_ignore_ascii_case(b"http") {
                false
            } else if scheme.eq_ignore_ascii_case(b"https") {
                true
            } else {
                return Err(bad(format!(
                    "unsupported scheme `{}`",
                    String::from_utf8_lossy(scheme)
                )));
            };
            // Slices of `raw`, which is valid UTF-8, split at ASCII bytes.
            let authority = std::str::from_utf8(authority).map_err(|_| bad("bad authority"))?;
            let pq = std::str::from_utf8(path_and_query).map_err(|_| bad("bad path"))?;
            let pq = pq.split('#').next().unwrap_or("");
            let path_and_query = if pq.is_empty() { "/" } else { pq };
            if !path_and_query.starts_with('/') {
                return Err(bad("path must start with `/`"));
            }
            Ok(RequestTarget::Absolute {
                tls,
                authority,
                path_and_query,
            })
        }
        RawTargetAuthority::AmbiguousAuthority => Err(bad("ambiguous request target")),
        RawTargetAuthority::None if raw.starts_with('/') => {
            let raw = raw.split('#').next().unwrap_or(raw);
            let (path, query) = match raw.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (raw, None),
            };
            Ok(RequestTarget::Origin { path, query })
        }
        RawTargetAuthority::None => Err(bad(
            "request target must be absolute-form (http://host/path) or a sidecar route path",
        )),
    }
}

/// The request against its route's scope (a sidecar route is always scoped by its path).
fn check_scope(
    cfg: &Config,
    route: usize,
    req: &RequestHeader,
    path: &str,
    query: Option<&str>,
) -> Result<(), ProxyError> {
    let path_scoped = cfg.router.has_path(route) || cfg.routes[route].upstream.is_some();
    scope::check_path(path, path_scoped)?;
    scope::check_request(req, query, path_scoped, cfg.router.has_methods(route))
}

/// Matches a forward-proxy destination (absolute-form or tunnelled) against the routes.
fn match_forward(cfg: &Config, req: &RequestHeader, t: &Target) -> Result<Option<usize>, Refusal> {
    let path = t.path.path();
    match cfg.router.match_forward(&t.host, t.port, path, &req.method) {
        None if cfg.proxy.unmatched == Unmatched::Deny => {
            Err(ProxyError::Unmatched(t.authority.clone()).into())
        }
        None => Ok(None),
        Some(i) => {
            let refuse = |error| Refusal {
                error,
                route: Some(i),
                credential: None,
            };
            if !t.tls && !cfg.routes[i].allow_http {
                return Err(refuse(ProxyError::PlainHttp(
                    cfg.routes[i].name.to_string(),
                )));
            }
            check_scope(cfg, i, req, path, t.path.query()).map_err(refuse)?;
            Ok(Some(i))
        }
    }
}

/// The sidecar route of an origin-form request, and where it goes.
fn match_sidecar(
    cfg: &Config,
    req: &RequestHeader,
    path: &str,
    query: Option<&str>,
) -> Result<(Option<usize>, Target), Refusal> {
    let Some(i) = cfg.router.match_sidecar(path, &req.method) else {
        return Err(ProxyError::NoRoute(path.to_string()).into());
    };
    check_scope(cfg, i, req, path, query).map_err(|error| Refusal {
        error,
        route: Some(i),
        credential: None,
    })?;
    let r = &cfg.routes[i];
    let Some(up) = &r.upstream else {
        return Err(ProxyError::NoRoute(path.to_string()).into());
    };
    let target =
        sidecar_target(up, r.strip_prefix.as_deref(), path, query).map_err(|error| Refusal {
            error,
            route: Some(i),
            credential: None,
        })?;
    Ok((Some(i), target))
}

/// Plans a request whose client is already known (`explain` passes none).
pub fn route_request(
    cfg: &Config,
    req: &RequestHeader,
    client: Option<usize>,
    tunnel: Option<&Tunnel>,
) -> Result<Plan, Refusal> {
    let (route, target) = match (tunnel, request_target(req)?) {
        (Some(t), rt) => {
            let target = tunnel_target(t, req, rt)?;
            (match_forward(cfg, req, &target)?, target)
        }
        (
            None,
            RequestTarget::Absolute {
                tls,
                authority,
                path_and_query,
            },
        ) => {
            let target = forward_target(authority, tls, path_and_query.to_string())?;
            (match_forward(cfg, req, &target)?, target)
        }
        (None, RequestTarget::Origin { path, query }) => match_sidecar(cfg, req, path, query)?,
    };
    let query = target.path.query();
    let named = placeholder::named(req, query)?;
    let credential = match route {
        Some(i) => Some(choose_credential(cfg, i, req, client, named.as_deref())?),
        None if named.is_some() => {
            return Err(bad(format!(
                "a placeholder (credproxy:NAME) was sent to {}, which no route covers: refused, never forwarded",
                target.authority
            ))
            .into())
        }
        None => None,
    };
    let tenant = match (route, credential) {
        (Some(r), Some(c)) if cfg.credentials[c].template().is_some() => {
            tenant_of(cfg, req, client).map_err(|error| Refusal {
                error,
                route: Some(r),
                credential: Some(c),
            })?
        }
        _ => None,
    };
    Ok(Plan {
        route,
        credential,
        client,
        tenant,
        target,
        placeholder: named.is_some(),
    })
}

/// The tenant of a request to a per-tenant credential: the client's own, or the one it names
/// with `X-Credproxy-Tenant` if its `tenants` allow it.
fn tenant_of(
    cfg: &Config,
    req: &RequestHeader,
    client: Option<usize>,
) -> Result<Option<Arc<str>>, ProxyError> {
    let client = client.and_then(|c| cfg.clients.as_ref()?.get(c));
    let Some(v) = req.headers.get(&TENANT_NAME) else {
        return Ok(client.and_then(|c| c.tenant.clone()));
    };
    let name = v
        .to_str()
        .ok()
        .filter(|n| crate::connections::record::valid_tenant(n))
        .ok_or_else(|| bad("X-Credproxy-Tenant is not a tenant name"))?;
    let Some(c) = client else {
        return Err(ProxyError::TenantForbidden(
            "X-Credproxy-Tenant needs an authenticated client whose `tenants` allow it: configure `clients:`".into(),
        ));
    };
    if c.tenant.as_deref() == Some(name) || c.tenants.allows(name) {
        return Ok(Some(Arc::from(name)));
    }
    Err(ProxyError::TenantForbidden(format!(
        "client `{}` may not name tenant `{name}`: add it (or \"*\") to the client's `tenants`",
        c.name
    )))
}

/// Picks the route's credential (default, `X-Credproxy-Credential`, or the one the request's
/// placeholders name) and checks it is usable.
fn choose_credential(
    cfg: &Config,
    route: usize,
    req: &RequestHeader,
    client: Option<usize>,
    placeholder: Option<&str>,
) -> Result<usize, Refusal> {
    let r = &cfg.routes[route];
    let refuse = |error, credential| Refusal {
        error,
        route: Some(route),
        credential,
    };
    let on_route = |name: &str| {
        r.credentials
            .iter()
            .copied()
            .find(|&c| &*cfg.credentials[c].name == name)
    };
    let header = req
        .headers
        .get(&CREDENTIAL_NAME)
        .map(|v| v.to_str())
        .transpose()
        .map_err(|_| refuse(bad("X-Credproxy-Credential is not valid text"), None))?;
    let chosen = match (header, placeholder) {
        (None, None) if r.require_placeholder => {
            let e = bad(format!(
                "route `{}` requires a placeholder (credproxy:NAME) for its credential, in a header, a Basic password or a query value",
                r.name
            ));
            return Err(refuse(e, None));
        }
        (None, None) => r.credentials[0],
        (Some(h), Some(p)) if h != p => {
            let e = bad(format!(
                "X-Credproxy-Credential names `{h}` but the placeholder names `{p}`"
            ));
            return Err(refuse(e, None));
        }
        (_, Some(p)) => on_route(p).ok_or_else(|| {
            let e = bad(format!(
                "the placeholder names credential `{p}`, which route `{}` does not use: refused, never forwarded",
                r.name
            ));
            refuse(e, None)
        })?,
        (Some(h), None) => on_route(h)
            .ok_or_else(|| refuse(ProxyError::CredentialNotOnRoute(h.to_string()), None))?,
    };
    // The route's client certificate goes with every request on it: the client must be
    // allowed it too, and it must be there (no connection is made without it).
    for c in std::iter::once(chosen).chain(r.client_cert.filter(|&c| c != chosen)) {
        usable(cfg, c, client).map_err(|e| refuse(e, Some(chosen)))?;
    }
    Ok(chosen)
}

/// Whether `client` may use credential `c`, and it is available.
fn usable(cfg: &Config, c: usize, client: Option<usize>) -> Result<(), ProxyError> {
    if let (Some(ci), Some(clients)) = (client, &cfg.clients) {
        let cl = &clients[ci];
        if !cl.credentials.contains(&c) {
            return Err(ProxyError::ClientForbidden {
                client: cl.name.clone(),
                credential: cfg.credentials[c].name.to_string(),
            });
        }
    }
    match &cfg.credentials[c].credential {
        Err(e) => Err(ProxyError::CredentialUnavailable(e.to_string())),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
