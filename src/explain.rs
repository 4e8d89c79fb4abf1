//! `credproxy explain` and `credproxy check`: what the config would do, as text for a person.

use std::fmt::Write;

use pingora::http::RequestHeader;

use crate::config::{Config, Unmatched};
use crate::proxy::plan::{route_request, Refusal};

/// A dry run of one request: route, credential, target and injected headers (secrets as ***).
pub fn explain(cfg: &Config, method: &str, url: &str) -> Result<String, String> {
    let method = method.to_ascii_uppercase();
    let req = RequestHeader::build(method.as_str(), url.as_bytes(), None)
        .map_err(|e| format!("cannot build a request from `{method} {url}`: {e}"))?;
    let mut out = String::new();
    let _ = writeln!(out, "request:     {method} {url}");
    match route_request(cfg, &req, None, None) {
        Err(Refusal {
            error,
            route,
            credential,
        }) => {
            if let Some(r) = route {
                let _ = writeln!(out, "route:       {} (routes[{r}])", cfg.routes[r].name);
            }
            if let Some(c) = credential {
                let _ = writeln!(out, "credential:  {}", cfg.credentials[c].name);
            }
            let _ = writeln!(
                out,
                "answer:      {} {} ({})",
                error.status(),
                error.code(),
                error
            );
        }
        Ok(plan) => {
            let t = &plan.target;
            match plan.route {
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
            let scheme = if t.tls { "https" } else { "http" };
            let _ = writeln!(
                out,
                "upstream:    {scheme}://{}:{}{}  (Host: {})",
                t.host, t.port, t.path, t.authority
            );
            if let Some(c) = plan.credential {
                let entry = &cfg.credentials[c];
                let _ = writeln!(out, "credential:  {} ({})", entry.name, entry.kind);
                if let Ok(cred) = &entry.credential {
                    for line in cred.describe() {
                        let _ = writeln!(out, "inject:      {line}");
                    }
                }
                let _ = writeln!(out, "removed:     client Authorization, Proxy-Authorization, Proxy-Connection, X-Credproxy-*");
            }
        }
    }
    Ok(out)
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

    fn cfg() -> Config {
        let text = "credentials:\n  gh: { type: bearer, token: \"${GH}\" }\n  erp: { type: basic, username: u, password: \"${NOPE}\" }\nroutes:\n  - { host: api.github.com, credential: gh, allow_http: true }\n  - { host: erp.example.com, credential: erp, allow_http: true }\n  - { path: /hub/*, upstream: \"https://api.hubapi.com/v3\", strip_prefix: /hub, credential: gh }\n";
        load_str(text, Path::new("t.yaml"), &|n| {
            (n == "GH").then(|| "s3cr3t".to_string())
        })
        .unwrap()
    }

    #[test]
    fn explains_without_secrets() {
        let c = cfg();
        let out = explain(&c, "get", "http://API.github.com/repos?x=1").unwrap();
        assert!(
            out.contains("route:       api.github.com (routes[0])"),
            "{out}"
        );
        assert!(
            out.contains("inject:      authorization: Bearer ***"),
            "{out}"
        );
        assert!(!out.contains("s3cr3t"));
        let side = explain(&c, "POST", "/hub/crm/objects").unwrap();
        assert!(
            side.contains("https://api.hubapi.com:443/v3/crm/objects"),
            "{side}"
        );
        let unavailable = explain(&c, "GET", "http://erp.example.com/").unwrap();
        assert!(
            unavailable.contains("502 credential_unavailable"),
            "{unavailable}"
        );
        let none = explain(&c, "GET", "http://other.example.com/").unwrap();
        assert!(none.contains("forwarded untouched"), "{none}");
    }

    #[test]
    fn explain_names_the_header_a_token_credential_sets() {
        let key = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/credentials/testdata/rsa.pem"
        );
        let text = format!("credentials:\n  p: {{ type: jwt_key_pair, private_key: \"file:{key}\", algorithm: RS256, header: X-Partner-Auth }}\nroutes:\n  - {{ host: partner.example.com, credential: p, allow_http: true }}\n");
        let c = load_str(&text, Path::new("t.yaml"), &|_| None).unwrap();
        let out = explain(&c, "GET", "http://partner.example.com/x").unwrap();
        assert!(
            out.contains("inject:      x-partner-auth: *** (token from local RS256 signer)"),
            "{out}"
        );
        assert!(!out.contains("authorization:"), "{out}");
    }

    #[tokio::test]
    async fn check_reports_each_credential() {
        let (out, ok) = check(&cfg(), None).await;
        assert!(!ok);
        assert!(out.contains("gh   bearer"), "{out}");
        assert!(
            out.contains("UNAVAILABLE: environment variable NOPE is not set"),
            "{out}"
        );
    }
}
