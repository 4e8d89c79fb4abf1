//! Route matching: host normalisation, host patterns, path globs, and the compiled router.
//!
//! Routes are compiled once per config load into hash indexes (exact host, wildcard suffix,
//! sidecar), so a match costs a few hash lookups plus the glob checks of the candidates,
//! not a scan of every route.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use http::Method;

/// A host pattern as written in a route: exact name or `*.suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` is stored as `example.com`; it matches `a.example.com` and
    /// `a.b.example.com`, never `example.com` itself nor `evilexample.com`.
    Suffix(String),
}

/// Why a host (in a request or a route) is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty host")]
    Empty,
    #[error("invalid character in host")]
    BadChar,
    #[error("empty label in host")]
    EmptyLabel,
    #[error("invalid IPv6 literal")]
    BadIpv6,
    #[error("invalid port")]
    BadPort,
}

/// Normalises a host as sent by a client: lowercase, one trailing dot dropped, IPv6 literals
/// in canonical form without brackets. Non-ASCII and unusual characters are refused rather than
/// guessed at, so that two spellings of one host can never match differently.
pub fn normalize_host(host: &str) -> Result<String, HostError> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(HostError::BadIpv6)?;
        let ip: Ipv6Addr = inner.parse().map_err(|_| HostError::BadIpv6)?;
        return Ok(ip.to_string());
    }
    if maybe_ipv6(host) {
        if let Ok(ip) = host.parse::<Ipv6Addr>() {
            return Ok(ip.to_string());
        }
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(HostError::BadChar);
    }
    // Byte tests rather than `split('.')`: this runs on every request.
    if host.starts_with('.') || host.ends_with('.') || host.contains("..") {
        return Err(HostError::EmptyLabel);
    }
    Ok(host.to_ascii_lowercase())
}

/// Only text with two colons can be a bare IPv6 address: the parse is skipped for the rest
/// (host names and `host:port`, nearly every request).
fn maybe_ipv6(s: &str) -> bool {
    s.bytes().filter(|&b| b == b':').nth(1).is_some()
}

/// Splits `host[:port]` / `[v6]:port` into a normalised host and an optional port.
pub fn split_host_port(authority: &str) -> Result<(String, Option<u16>), HostError> {
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => {
                let rest = &authority[end + 1..];
                let port = match rest.strip_prefix(':') {
                    Some(p) => Some(p),
                    None if rest.is_empty() => None,
                    None => return Err(HostError::BadIpv6),
                };
                (&authority[..=end], port)
            }
            None => return Err(HostError::BadIpv6),
        }
    } else if maybe_ipv6(authority) && authority.parse::<Ipv6Addr>().is_ok() {
        (authority, None)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p)?),
    };
    Ok((normalize_host(host)?, port))
}

fn parse_port(p: &str) -> Result<u16, HostError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::BadPort);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(HostError::BadPort),
        Ok(n) => Ok(n),
    }
}

/// A Unicode host name (with an optional `:port`) in its IDNA A-label form
/// (`bücher.example` → `xn--bcher-kva.example`), as clients put it on the wire.
fn idna_to_ascii(hostport: &str) -> Option<String> {
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (hostport, None),
    };
    match url::Host::parse(host).ok()? {
        url::Host::Domain(d) => Some(match port {
            Some(p) => format!("{d}:{p}"),
            None => d,
        }),
        _ => None,
    }
}

/// Parses a route's `host:` value into a pattern and optional port.
pub fn parse_host_pattern(text: &str) -> Result<(HostPattern, Option<u16>), String> {
    let (wild, rest) = match text.strip_prefix("*.") {
        Some(r) => (true, r),
        None => (false, text),
    };
    if rest.contains('*') {
        return Err(format!(
            "`{text}`: `*` is allowed only as the first label (`*.example.com`)"
        ));
    }
    let ascii;
    let rest = if rest.is_ascii() {
        rest
    } else {
        ascii = idna_to_ascii(rest).ok_or_else(|| format!("`{text}`: not a valid host name"))?;
        &ascii
    };
    let (host, port) = split_host_port(rest).map_err(|e| format!("`{text}`: {e}"))?;
    if wild && host.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "`{text}`: a wildcard cannot apply to an IP address"
        ));
    }
    let pat = if wild {
        HostPattern::Suffix(host)
    } else {
        HostPattern::Exact(host)
    };
    Ok((pat, port))
}

/// A path glob: `*` matches any run of characters (slashes included); everything else is literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<u8>,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Self, String> {
        if !pattern.starts_with('/') {
            return Err(format!("`{pattern}`: a path glob starts with `/`"));
        }
        Ok(Glob {
            pattern: pattern.as_bytes().to_vec(),
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.pattern).unwrap_or("")
    }

    /// Whether every path this glob's `other` matches, this one matches too (a conservative
    /// answer: equal globs, or a `prefix*` glob and another that starts with the prefix).
    pub fn covers(&self, other: &Glob) -> bool {
        if self == other {
            return true;
        }
        let Some(prefix) = self.pattern.strip_suffix(b"*") else {
            return false;
        };
        if prefix.contains(&b'*') {
            return false;
        }
        let literal = other.pattern.split(|&c| c == b'*').next().unwrap_or(&[]);
        literal.starts_with(prefix)
    }

    /// Linear-time wildcard match (the classic two-pointer algorithm with one backtrack point).
    pub fn matches(&self, path: &str) -> bool {
        let (p, s) = (&self.pattern, path.as_bytes());
        let (mut pi, mut si) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, si));
                pi += 1;
            } else if pi < p.len() && p[pi] == s[si] {
                pi += 1;
                si += 1;
            } else if let Some((sp, ss)) = star {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

/// What a route matches on.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// None for sidecar routes, which match origin-form requests by path.
    pub host: Option<HostPattern>,
    pub port: Option<u16>,
    pub path: Option<Glob>,
    pub methods: Option<Vec<Method>>,
}

impl HostPattern {
    /// Whether this pattern matches every host `other` matches.
    pub fn covers(&self, other: &HostPattern) -> bool {
        let under = |h: &str, s: &str| {
            h.len() > s.len() && h.ends_with(s) && h[..h.len() - s.len()].ends_with('.')
        };
        match (self, other) {
            (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
            (HostPattern::Suffix(a), HostPattern::Exact(b)) => under(b, a),
            (HostPattern::Suffix(a), HostPattern::Suffix(b)) => a == b || under(b, a),
            (HostPattern::Exact(_), HostPattern::Suffix(_)) => false,
        }
    }
}

impl Matcher {
    /// Whether this matcher accepts every request `other` accepts: a route with it, earlier
    /// in the list, leaves `other`'s route nothing to match.
    pub fn covers(&self, other: &Matcher) -> bool {
        let host = match (&self.host, &other.host) {
            (None, None) => true,
            (Some(a), Some(b)) => a.covers(b),
            _ => false,
        };
        let port = self.port.is_none() || self.port == other.port;
        let path = match (&self.path, &other.path) {
            (None, _) => true,
            (Some(a), Some(b)) => a.covers(b),
            (Some(a), None) => a.as_str() == "/*",
        };
        let methods = match (&self.methods, &other.methods) {
            (None, _) => true,
            (Some(a), Some(b)) => b.iter().all(|m| a.contains(m)),
            (Some(_), None) => false,
        };
        host && port && path && methods
    }

    fn accepts(&self, port: u16, path: &str, method: &Method) -> bool {
        self.port.is_none_or(|p| p == port)
            && self.path.as_ref().is_none_or(|g| g.matches(path))
            && self.methods.as_ref().is_none_or(|m| m.contains(method))
    }
}

/// Routes compiled for lookup. Indexes are positions in the config's route list.
#[derive(Debug, Default)]
pub struct Router {
    matchers: Vec<Matcher>,
    exact: HashMap<String, Vec<usize>>,
    suffix: HashMap<String, Vec<usize>>,
    /// Sidecar routes whose glob starts with a literal segment (`/hubspot/...`), by that segment.
    sidecar_by_segment: HashMap<String, Vec<usize>>,
    /// Sidecar routes without a literal first segment (no path, or `/*...`).
    sidecar_other: Vec<usize>,
}

/// The first path segment when it is literal: `/hubspot/*` gives `hubspot`; `/hub*` gives None.
fn literal_first_segment(glob: &str) -> Option<&str> {
    let rest = glob.strip_prefix('/')?;
    let end = rest.find('/')?;
    let seg = &rest[..end];
    (!seg.contains('*')).then_some(seg)
}

impl Router {
    pub fn new(matchers: Vec<Matcher>) -> Self {
        let mut r = Router::default();
        for (i, m) in matchers.iter().enumerate() {
            match &m.host {
                Some(HostPattern::Exact(h)) => r.exact.entry(h.clone()).or_default().push(i),
                Some(HostPattern::Suffix(h)) => r.suffix.entry(h.clone()).or_default().push(i),
                None => match m
                    .path
                    .as_ref()
                    .and_then(|g| literal_first_segment(g.as_str()))
                {
                    Some(seg) => r
                        .sidecar_by_segment
                        .entry(seg.to_string())
                        .or_default()
                        .push(i),
                    None => r.sidecar_other.push(i),
                },
            }
        }
        r.matchers = matchers;
        r
    }

    fn first_in(
        &self,
        list: Option<&Vec<usize>>,
        port: u16,
        path: &str,
        m: &Method,
    ) -> Option<usize> {
        list?
            .iter()
            .copied()
            .find(|&i| self.matchers[i].accepts(port, path, m))
    }

    /// First route (in config order) for a proxied request to `host` (already normalised).
    pub fn match_forward(
        &self,
        host: &str,
        port: u16,
        path: &str,
        method: &Method,
    ) -> Option<usize> {
        let mut best = self.first_in(self.exact.get(host), port, path, method);
        if self.suffix.is_empty() {
            return best;
        }
        for (i, b) in host.bytes().enumerate() {
            if b != b'.' {
                continue;
            }
            let found = self.first_in(self.suffix.get(&host[i + 1..]), port, path, method);
            best = match (best, found) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        best
    }

    /// First sidecar route for an origin-form request sent to the listener itself.
    pub fn match_sidecar(&self, path: &str, method: &Method) -> Option<usize> {
        let seg = path.strip_prefix('/').and_then(|p| p.split('/').next());
        let by_seg = seg.and_then(|s| self.sidecar_by_segment.get(s));
        let a = self.first_in(by_seg, 0, path, method);
        let b = self.first_in(Some(&self.sidecar_other), 0, path, method);
        match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }

    /// Whether route `i` is limited to some methods.
    pub fn has_methods(&self, i: usize) -> bool {
        self.matchers.get(i).is_some_and(|m| m.methods.is_some())
    }

    /// Whether any route names this host and port, whatever the path or method
    /// (used for CONNECT, where the path is not known yet).
    pub fn host_has_route(&self, host: &str, port: u16) -> bool {
        let ok = |list: Option<&Vec<usize>>| {
            list.is_some_and(|l| {
                l.iter()
                    .any(|&i| self.matchers[i].port.is_none_or(|p| p == port))
            })
        };
        ok(self.exact.get(host))
            || host
                .bytes()
                .enumerate()
                .any(|(i, b)| b == b'.' && ok(self.suffix.get(&host[i + 1..])))
    }

    /// Whether route `i` is scoped by a path glob.
    pub fn has_path(&self, i: usize) -> bool {
        self.matchers.get(i).is_some_and(|m| m.path.is_some())
    }

    pub fn len(&self) -> usize {
        self.matchers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_route_hosts_are_matched_in_their_a_label_form() {
        let (p, port) = parse_host_pattern("bücher.example:8443").unwrap();
        assert_eq!(p, HostPattern::Exact("xn--bcher-kva.example".into()));
        assert_eq!(port, Some(8443));
        let (p, _) = parse_host_pattern("*.ＡＰＩ.example").unwrap();
        assert_eq!(p, HostPattern::Suffix("api.example".into()));
        assert!(parse_host_pattern("bü cher.example").is_err());
    }

    fn m(host: &str, path: Option<&str>, methods: Option<&[&str]>) -> Matcher {
        let (h, port) = parse_host_pattern(host).unwrap();
        Matcher {
            host: Some(h),
            port,
            path: path.map(|p| Glob::new(p).unwrap()),
            methods: methods.map(|ms| ms.iter().map(|s| s.parse().unwrap()).collect()),
        }
    }

    #[test]
    fn normalises_hosts() {
        assert_eq!(
            normalize_host("API.Example.COM.").unwrap(),
            "api.example.com"
        );
        assert_eq!(normalize_host("[::1]").unwrap(), "::1");
        assert_eq!(normalize_host("[0:0::1]").unwrap(), "::1");
        assert!(normalize_host("a..b").is_err());
        assert!(normalize_host("").is_err());
        assert!(normalize_host(".").is_err());
        assert!(normalize_host("exämple.com").is_err());
        assert!(normalize_host("a b").is_err());
        assert!(normalize_host("user@host").is_err());
        assert_eq!(
            split_host_port("[::1]:8443").unwrap(),
            ("::1".to_string(), Some(8443))
        );
        assert_eq!(
            split_host_port("A.com:80").unwrap(),
            ("a.com".into(), Some(80))
        );
        assert!(split_host_port("a.com:0").is_err());
        assert!(split_host_port("a.com:99999").is_err());
        assert!(split_host_port("a.com:+80").is_err());
        assert!(split_host_port("a.com:").is_err());
    }

    #[test]
    fn host_patterns() {
        assert!(parse_host_pattern("*").is_err());
        assert!(parse_host_pattern("a.*.com").is_err());
        assert!(parse_host_pattern("*.10.0.0.1").is_err());
        assert_eq!(
            parse_host_pattern("*.Example.com:8443").unwrap(),
            (HostPattern::Suffix("example.com".into()), Some(8443))
        );
    }

    #[test]
    fn globs() {
        let g = Glob::new("/services/*").unwrap();
        assert!(g.matches("/services/data/v1"));
        assert!(g.matches("/services/"));
        assert!(!g.matches("/services"));
        assert!(!g.matches("/other/services/x"));
        let g = Glob::new("/v1/*/items").unwrap();
        assert!(g.matches("/v1/a/b/items"));
        assert!(!g.matches("/v1/a/items/x"));
        assert!(Glob::new("/a").unwrap().matches("/a"));
        assert!(!Glob::new("/a").unwrap().matches("/ab"));
        assert!(Glob::new("relative").is_err());
    }

    #[test]
    fn first_match_wins_across_indexes() {
        let r = Router::new(vec![
            m("*.example.com", Some("/admin/*"), None),
            m("api.example.com", None, Some(&["GET"])),
            m("*.example.com", None, None),
            m("api.example.com:8443", None, None),
        ]);
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            r.match_forward("api.example.com", 80, "/admin/x", &get),
            Some(0)
        );
        assert_eq!(r.match_forward("api.example.com", 80, "/x", &get), Some(1));
        assert_eq!(r.match_forward("api.example.com", 80, "/x", &post), Some(2));
        assert_eq!(r.match_forward("a.b.example.com", 80, "/x", &post), Some(2));
        assert_eq!(r.match_forward("example.com", 80, "/x", &get), None);
        assert_eq!(r.match_forward("evilexample.com", 80, "/x", &get), None);
        assert_eq!(
            r.match_forward("api.example.com.evil.io", 80, "/x", &get),
            None
        );
        assert_eq!(r.match_forward("xapi.example.co", 80, "/x", &get), None);
    }

    #[test]
    fn ports() {
        let r = Router::new(vec![m("api.example.com:8443", None, None)]);
        assert_eq!(
            r.match_forward("api.example.com", 8443, "/", &Method::GET),
            Some(0)
        );
        assert_eq!(
            r.match_forward("api.example.com", 443, "/", &Method::GET),
            None
        );
        assert!(r.host_has_route("api.example.com", 8443));
        assert!(!r.host_has_route("api.example.com", 443));
    }

    #[test]
    fn sidecar_by_path() {
        let side = |p: &str| {
            let mut s = m("x.com", Some(p), None);
            s.host = None;
            s
        };
        let r = Router::new(vec![
            m("x.com", None, None),
            side("/hubspot/*"),
            side("/hub*"),
            side("/h/*"),
        ]);
        assert_eq!(r.match_sidecar("/hubspot/crm", &Method::GET), Some(1));
        assert_eq!(r.match_sidecar("/hubx/crm", &Method::GET), Some(2));
        assert_eq!(r.match_sidecar("/h/crm", &Method::GET), Some(3));
        assert_eq!(r.match_sidecar("/other", &Method::GET), None);
        assert_eq!(
            r.match_forward("x.com", 80, "/hubspot/crm", &Method::GET),
            Some(0)
        );
        // Order across both indexes: a catch-all listed first wins.
        let r = Router::new(vec![side("/*"), side("/hubspot/*")]);
        assert_eq!(r.match_sidecar("/hubspot/crm", &Method::GET), Some(0));
        assert_eq!(literal_first_segment("/a/b/*"), Some("a"));
        assert_eq!(literal_first_segment("/a*/b"), None);
        assert_eq!(literal_first_segment("/a"), None);
    }
}
