//! `routes:`: host, path and method matchers, sidecar upstreams, and the credentials each uses.

use http::Method;

use super::{list_or_none, Validator};
use crate::config::raw::RawRoute;
use crate::config::{Route, Upstream};
use crate::routing::{parse_host_pattern, split_host_port, Glob, HostPattern, Matcher};

impl Validator<'_> {
    /// Compiles the routes, each with the key path it was written at (`routes[3]`, or
    /// `credentials.hubspot.api_hosts[0]` for a catalog's API host).
    pub(super) fn routes(
        &mut self,
        raw: &[(String, RawRoute)],
        creds: &[&str],
    ) -> (Vec<Route>, Vec<Matcher>) {
        let mut routes = Vec::new();
        let mut matchers = Vec::new();
        let mut at = Vec::new();
        for (path, r) in raw {
            if let Some((route, matcher)) = self.route(path, r, creds) {
                routes.push(route);
                matchers.push(matcher);
                at.push(path.as_str());
            }
        }
        self.unique_names(raw);
        self.shadowed(&routes, &matchers, &at);
        (routes, matchers)
    }

    /// Route names label metrics, logs and errors: two routes may not share one.
    fn unique_names(&mut self, raw: &[(String, RawRoute)]) {
        let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        for (path, r) in raw {
            let Some(name) = r.name.as_deref() else {
                continue;
            };
            match seen.get(name) {
                Some(first) => self.err(
                    &format!("{path}.name"),
                    format!("route name `{name}` is already used by {first}"),
                ),
                None => {
                    seen.insert(name, path);
                }
            }
        }
    }

    /// Warns about a route that an earlier one leaves nothing to match.
    fn shadowed(&mut self, routes: &[Route], matchers: &[Matcher], at: &[&str]) {
        for j in 0..matchers.len() {
            let Some(i) = (0..j).find(|&i| matchers[i].covers(&matchers[j])) else {
                continue;
            };
            let (a, b) = (&routes[i].name, &routes[j].name);
            self.warn(
                at[j],
                format!(
                    "route `{b}` can never match: `{a}` ({}) comes first and matches every request it would; move it above, or narrow the earlier route",
                    at[i]
                ),
            );
        }
    }

    /// A route per API host of each credential whose catalog lists hosts, unless a route
    /// already names that credential.
    pub(super) fn catalog_routes(
        &mut self,
        credentials: &[crate::config::CredentialEntry],
        explicit: &[(String, RawRoute)],
    ) -> Vec<(String, RawRoute)> {
        let named = |c: &str| {
            explicit.iter().any(|(_, r)| {
                r.credential.as_deref() == Some(c) || r.credentials.iter().flatten().any(|n| n == c)
            })
        };
        let mut out = Vec::new();
        for c in credentials.iter().filter(|c| !named(&c.name)) {
            let Some(catalog) = &c.catalog else { continue };
            let hosts = match catalog.route_hosts() {
                Ok(h) => h,
                Err(e) => {
                    self.err(&format!("credentials.{}.api_hosts", c.name), e);
                    continue;
                }
            };
            for (j, host) in hosts.into_iter().enumerate() {
                let route = RawRoute {
                    name: Some(format!("{} ({host})", c.name)),
                    host: Some(host),
                    credential: Some(c.name.to_string()),
                    ..RawRoute::default()
                };
                out.push((format!("credentials.{}.api_hosts[{j}]", c.name), route));
            }
        }
        out
    }

    /// Takes each route's `mtls` credential out of its header credentials: it is presented on
    /// the connection, alongside whichever header credential the request uses.
    pub(super) fn client_certs(
        &mut self,
        routes: &mut [Route],
        raw: &[(String, RawRoute)],
        kinds: &[&str],
    ) {
        if routes.len() != raw.len() {
            return; // some route failed: the config is rejected with its own error
        }
        let is_cert = |c: &usize| kinds.get(*c) == Some(&"mtls");
        for (route, (path, _)) in routes.iter_mut().zip(raw) {
            let certs: Vec<usize> = route.credentials.iter().copied().filter(is_cert).collect();
            if certs.len() > 1 {
                self.err(
                    &format!("{path}.credentials"),
                    "at most one `mtls` credential per route: a connection presents one certificate",
                );
                continue;
            }
            route.client_cert = certs.first().copied();
            if route.credentials.len() > 1 {
                route.credentials.retain(|c| !is_cert(c));
            }
        }
    }

    fn route(&mut self, path: &str, r: &RawRoute, creds: &[&str]) -> Option<(Route, Matcher)> {
        let errors_before = self.errors.len();
        let (host, port) = self.route_host(path, r);
        let upstream = r.upstream.as_ref().and_then(|u| {
            parse_upstream(u)
                .map_err(|e| self.err(&format!("{path}.upstream"), e))
                .ok()
        });
        let glob = r.path.as_ref().and_then(|p| {
            Glob::new(p)
                .map_err(|e| self.err(&format!("{path}.path"), e))
                .ok()
        });
        self.strip_prefix(path, r);
        if let Some(up) = &upstream {
            self.plain_upstream(path, r, up);
        }
        let methods = self.methods(path, r.methods.as_deref());
        let credentials = self.route_credentials(path, r, creds);
        if self.errors.len() > errors_before {
            return None;
        }
        let matcher = Matcher {
            host,
            port,
            path: glob,
            methods,
        };
        let route = Route {
            name: r
                .name
                .clone()
                .unwrap_or_else(|| default_route_name(r))
                .into(),
            credentials,
            upstream,
            strip_prefix: r.strip_prefix.clone(),
            allow_http: r
                .allow_http
                .unwrap_or_else(|| matcher.host.as_ref().is_some_and(is_loopback)),
            scrub_responses: r.scrub_responses.unwrap_or(false),
            require_placeholder: r.require_placeholder.unwrap_or(false),
            client_cert: None,
        };
        Some((route, matcher))
    }

    /// The host pattern and port of a proxy route; none for a sidecar route.
    fn route_host(&mut self, path: &str, r: &RawRoute) -> (Option<HostPattern>, Option<u16>) {
        match (&r.host, &r.upstream) {
            (Some(_), Some(_)) => self.err(
                &format!("{path}.host"),
                "a sidecar route (with `upstream`) matches by path; remove `host`",
            ),
            (None, None) => self.err(
                path,
                "a route needs `host` (proxy route) or `upstream` (sidecar route)",
            ),
            (Some(h), None) => match parse_host_pattern(h) {
                Ok((p, port)) => return (Some(p), port),
                Err(e) => self.err(&format!("{path}.host"), e),
            },
            (None, Some(_)) => {}
        }
        (None, None)
    }

    /// A sidecar route sends its credential over plain HTTP only to loopback, or with
    /// `allow_http: true`: the same rule as forward routes, checked at load since the upstream
    /// is fixed.
    fn plain_upstream(&mut self, path: &str, r: &RawRoute, up: &Upstream) {
        let loopback = up.host == "localhost"
            || up
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if up.tls || loopback || r.allow_http == Some(true) {
            return;
        }
        let name = r.name.clone().unwrap_or_else(|| default_route_name(r));
        self.err(
            &format!("{path}.upstream"),
            format!(
                "route `{name}` would send its credential in cleartext to {}: use https://, or set `allow_http: true` on the route if that network is trusted",
                up.authority
            ),
        );
    }

    fn strip_prefix(&mut self, path: &str, r: &RawRoute) {
        let Some(sp) = &r.strip_prefix else { return };
        let key = format!("{path}.strip_prefix");
        if r.upstream.is_none() {
            self.err(
                &key,
                "`strip_prefix` applies only to sidecar routes (with `upstream`)",
            );
        } else if !sp.starts_with('/') || sp.len() < 2 || sp.ends_with('/') {
            self.err(
                &key,
                format!(
                    "`{sp}`: expected a path such as /hubspot (leading slash, no trailing slash)"
                ),
            );
        }
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
fn is_loopback(p: &HostPattern) -> bool {
    match p {
        HostPattern::Exact(h) => {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        HostPattern::Suffix(_) => false,
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
