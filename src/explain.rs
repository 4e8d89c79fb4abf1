//! `credproxy explain` and `credproxy check`: what the config would do, as text for a person.

use std::fmt::Write;

use pingora::http::RequestHeader;

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{Config, Unmatched};
use crate::dns::Resolver;
use crate::errors::ProxyError;
use crate::proxy::plan::route_request;
use crate::proxy::OwnListeners;

/// A dry run of one request as a workflow would send it through the proxy (an `https://` URL
/// through `HTTPS_PROXY`, an `http://` URL through `HTTP_PROXY`, a path to a sidecar route):
/// route, credential, destination and what would be injected (secrets as ***), or the
/// answer credproxy would give instead. The destination is resolved and checked as the proxy
/// would.
pub async fn explain(cfg: &Config, method: &str, url: &str) -> Result<String, String> {
    let method = method.to_ascii_uppercase();
    let req = RequestHeader::build(method.as_str(), url.as_bytes(), None)
        .map_err(|e| format!("cannot build a request from `{method} {url}`: {e}"))?;
    let mut out = String::new();
    let _ = writeln!(out, "request:     {method} {url}");
    if cfg.proxy.interceptor.is_none() {
        if let Some((host, port)) = https_authority(url) {
            connect_lines(&mut out, cfg, &host, port).await;
            return Ok(out);
        }
    }
    let plan = match route_request(cfg, &req, None, None) {
        Ok(plan) => plan,
        Err(r) => {
            route_lines(&mut out, cfg, r.route, r.credential);
            answer(&mut out, &r.error);
            return Ok(out);
        }
    };
    route_lines(&mut out, cfg, plan.route, None);
    let t = &plan.target;
    let scheme = if t.tls { "https" } else { "http" };
    let _ = writeln!(
        out,
        "upstream:    {scheme}://{}:{}{}  (Host: {})",
        t.host, t.port, t.path, t.authority
    );
    match destination(cfg, &t.host, t.port).await {
        Ok(addrs) => {
            let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "destination: {} (allowed by proxy.egress)",
                list.join(", ")
            );
        }
        Err(e) => {
            answer(&mut out, &e);
            return Ok(out);
        }
    }
    if let Some(c) = plan.credential {
        credential_lines(&mut out, cfg, c);
    }
    Ok(out)
}

/// The host and port of an absolute `https://` URL: without a CA, such a request travels
/// through a CONNECT tunnel that credproxy does not open.
fn https_authority(url: &str) -> Option<(String, u16)> {
    let uri: http::Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("https") {
        return None;
    }
    let host = crate::routing::normalize_host(uri.host()?).ok()?;
    Some((host, uri.port_u16().unwrap_or(443)))
}

/// What a CONNECT to `host:port` would get without a CA: refused, or tunnelled untouched.
async fn connect_lines(out: &mut String, cfg: &Config, host: &str, port: u16) {
    let routed = cfg.router.host_has_route(host, port);
    if !routed && cfg.proxy.unmatched == Unmatched::Deny {
        answer(out, &ProxyError::Unmatched(format!("{host}:{port}")));
        return;
    }
    let what = if routed {
        "a route matches this host, but without proxy.ca HTTPS is not intercepted and nothing is injected; run `credproxy ca init` and set proxy.ca"
    } else {
        "no route matches (proxy.unmatched: tunnel)"
    };
    let _ = writeln!(out, "route:       CONNECT {host}:{port}: {what}");
    match destination(cfg, host, port).await {
        Ok(addrs) => {
            let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "destination: {} (allowed by proxy.egress)",
                list.join(", ")
            );
            let _ = writeln!(out, "answer:      tunnelled untouched (CONNECT)");
        }
        Err(e) => answer(out, &e),
    }
}

fn route_lines(out: &mut String, cfg: &Config, route: Option<usize>, credential: Option<usize>) {
    match route {
        Some(r) => {
            let _ = writeln!(out, "route:       {} (routes[{r}])", cfg.routes[r].name);
        }
        None => {
            let what = match cfg.proxy.unmatched {
                Unmatched::Tunnel => "forwarded untouched (proxy.unmatched: tunnel)",
                Unmatched::Deny => "denied (proxy.unmatched: deny)",
            };
            let _ = writeln!(out, "route:       none; {what}");
        }
    }
    if let Some(c) = credential {
        let _ = writeln!(out, "credential:  {}", cfg.credentials[c].name);
    }
}

/// The answer credproxy would make itself: status, JSON `error` code, `Proxy-Status` type.
fn answer(out: &mut String, e: &ProxyError) {
    let _ = writeln!(
        out,
        "answer:      {} {} (Proxy-Status: {}): {e}",
        e.status(),
        e.code(),
        e.proxy_status_type()
    );
}

fn credential_lines(out: &mut String, cfg: &Config, c: usize) {
    let entry = &cfg.credentials[c];
    let _ = writeln!(out, "credential:  {} ({})", entry.name, entry.kind);
    if let Ok(cred) = &entry.credential {
        for line in cred.describe() {
            let _ = writeln!(out, "inject:      {line}");
        }
    }
    let _ = writeln!(
        out,
        "removed:     client Authorization, Proxy-Authorization, Proxy-Connection, X-Credproxy-*"
    );
}

/// The destination's addresses as the proxy would check them (DNS with the config's
/// overrides, the proxy's own listeners, the egress guard).
async fn destination(cfg: &Config, host: &str, port: u16) -> Result<Arc<[IpAddr]>, ProxyError> {
    let d = &cfg.proxy.dns;
    let dns = Resolver::new(d.ttl, d.negative_ttl, cfg.proxy.timeouts.connect)
        .with_overrides(d.overrides.clone());
    let mut own = vec![(cfg.proxy.listen, "proxy")];
    own.extend(cfg.proxy.admin.map(|a| (a, "admin")));
    let own = OwnListeners(own);
    crate::proxy::destination(&dns, &cfg.proxy.egress.policy, &own, host, port).await
}

/// One line per credential, and whether all are usable. Online, token credentials fetch a
/// token (through `tokens`) and report the endpoint's answer.
pub async fn check(cfg: &Config, tokens: Option<&crate::tokens::TokenCache>) -> (String, bool) {
    let mut out = String::new();
    let mut all_ok = true;
    let width = cfg
        .credentials
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for c in &cfg.credentials {
        let verdict = match (&c.credential, tokens) {
            (Err(e), _) => Err(format!("UNAVAILABLE: {e}")),
            (Ok(crate::credentials::Credential::PerTenant(_)), _) => Ok(format!(
                "OK (per tenant: test a tenant's connection with PUT /connections/TENANT/{}?test=true)",
                c.name
            )),
            (Ok(cred), Some(cache)) => match cred.token_source() {
                Some(src) => match cache.get(&c.name, src).await {
                    Ok(t) => {
                        let secs = t
                            .expires_at
                            .saturating_duration_since(tokio::time::Instant::now())
                            .as_secs();
                        Ok(format!("OK (token obtained, expires in {secs}s)"))
                    }
                    Err(e) => Err(format!("FAILED: {e}")),
                },
                None => Ok("OK".to_string()),
            },
            (Ok(cred), None) if cred.token_source().is_some() => {
                Ok("OK (offline: token not fetched)".to_string())
            }
            (Ok(_), None) => Ok("OK".to_string()),
        };
        let text = verdict.unwrap_or_else(|e| {
            all_ok = false;
            e
        });
        let _ = writeln!(out, "{:width$}  {:<26}  {text}", c.name, c.kind);
    }
    (out, all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use std::path::Path;

    const DNS: &str = "proxy:\n  dns:\n    overrides: { api.github.com: 140.82.112.6, api.hubapi.com: 104.16.0.1, other.example.com: 93.184.216.34, partner.example.com: 93.184.216.34, internal.example.com: 10.0.0.1, erp.example.com: 93.184.216.34 }\n";

    fn cfg() -> Config {
        let text = DNS.to_string() + "credentials:\n  gh: { type: bearer, token: \"${GH}\" }\n  erp: { type: basic, username: u, password: \"${NOPE}\" }\nroutes:\n  - { host: api.github.com, credential: gh, allow_http: true }\n  - { host: erp.example.com, credential: erp, allow_http: true }\n  - { path: /hub/*, upstream: \"https://api.hubapi.com/v3\", strip_prefix: /hub, credential: gh }\n  - { host: internal.example.com, credential: gh }\n";
        load_str(&text, Path::new("t.yaml"), &|n| {
            (n == "GH").then(|| "s3cr3t".to_string())
        })
        .unwrap()
    }

    #[track_caller]
    fn has(out: &str, needle: &str) {
        assert!(out.contains(needle), "no `{needle}` in:\n{out}");
    }

    /// `explain` of a GET to `url` under the config `text`.
    async fn explained(text: &str, url: &str) -> String {
        let c = load_str(text, Path::new("t.yaml"), &|_| None).unwrap();
        explain(&c, "GET", url).await.unwrap()
    }

    #[tokio::test]
    async fn explains_without_secrets() {
        let c = cfg();
        let out = explain(&c, "get", "http://API.github.com/repos?x=1")
            .await
            .unwrap();
        has(&out, "route:       api.github.com (routes[0])");
        has(&out, "inject:      authorization: Bearer ***");
        assert!(!out.contains("s3cr3t"));
        let side = explain(&c, "POST", "/hub/crm/objects").await.unwrap();
        has(&side, "https://api.hubapi.com:443/v3/crm/objects");
        let unavailable = explain(&c, "GET", "http://erp.example.com/").await.unwrap();
        has(&unavailable, "502 credential_unavailable");
        let none = explain(&c, "GET", "http://other.example.com/")
            .await
            .unwrap();
        has(&none, "forwarded untouched");
    }

    #[tokio::test]
    async fn https_without_a_ca_egress_and_plain_http_are_told_as_they_happen() {
        let c = cfg();
        let out = explain(&c, "GET", "https://api.github.com/user")
            .await
            .unwrap();
        has(&out, "route:       CONNECT api.github.com:443: a route matches this host, but without proxy.ca");
        has(&out, "answer:      tunnelled untouched (CONNECT)");
        assert!(!out.contains("inject:"), "{out}");
        // As the proxy does: a tunnel's destination is checked too, and an unavailable
        // credential does not matter to a tunnel.
        let out = explain(&c, "GET", "https://internal.example.com/x")
            .await
            .unwrap();
        has(&out, "403 egress_denied");
        let out = explain(&c, "GET", "https://erp.example.com/x")
            .await
            .unwrap();
        assert!(!out.contains("credential_unavailable"), "{out}");
        let out = explain(&c, "GET", "http://internal.example.com/x")
            .await
            .unwrap();
        has(
            &out,
            "answer:      403 plain_http_refused (Proxy-Status: http_request_denied)",
        );
        let text = DNS.to_string() + "credentials:\n  gh: { type: bearer, token: t1234567 }\nroutes:\n  - { host: internal.example.com, credential: gh, allow_http: true }\n";
        let out = explained(&text, "http://internal.example.com/x").await;
        has(&out, "answer:      403 egress_denied (Proxy-Status: destination_ip_prohibited): internal.example.com resolves to 10.0.0.1");
        assert!(!out.contains("inject:"), "{out}");
    }

    #[tokio::test]
    async fn explain_names_the_header_a_token_credential_sets() {
        let key = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/credentials/testdata/rsa.pem"
        );
        let text = DNS.to_string() + &format!("credentials:\n  p: {{ type: jwt_key_pair, private_key: \"file:{key}\", algorithm: RS256, header: X-Partner-Auth }}\nroutes:\n  - {{ host: partner.example.com, credential: p, allow_http: true }}\n");
        let out = explained(&text, "http://partner.example.com/x").await;
        has(
            &out,
            "inject:      x-partner-auth: *** (token from local RS256 signer)",
        );
        assert!(!out.contains("authorization:"), "{out}");
    }

    #[tokio::test]
    async fn check_reports_each_credential() {
        let (out, ok) = check(&cfg(), None).await;
        assert!(!ok);
        has(&out, "gh   bearer");
        has(&out, "UNAVAILABLE: environment variable NOPE is not set");
    }
}
