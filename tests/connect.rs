//! The OAuth connect flow end to end: a real provider (oauth2-mock-server, npm), the binary,
//! and a "browser" that follows the redirects by hand (so each step and cookie is checked).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const STATE_KEY: &str = "7777777777777777777777777777777777777777777777777777777777777777";
const ADMIN_TOKEN: &str = "connect-admin-token-0001";

/// oauth2-mock-server on a free port, stopped when dropped.
struct Idp {
    child: Child,
    port: u16,
}

impl Idp {
    fn start() -> Idp {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/oauth2_mock.js");
        let mut child = Command::new("node")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (installed by .ci/setup)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("port=")
            .expect("oauth2-mock-server started (npm ci in tests/node)")
            .parse()
            .unwrap();
        Idp { child, port }
    }

    fn grants(&self) -> String {
        http_get(
            std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            "/grants",
        )
        .unwrap()
        .1
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn admin_call(p: &Proxy, method: &str, path: &str, body: &str) -> (u16, String) {
    admin_as(p, ADMIN_TOKEN, method, path, body)
}

fn link(p: &Proxy, tenant: &str) -> String {
    let (s, b) = admin_call(
        p,
        "POST",
        &format!("/connections/{tenant}/hub/connect-link"),
        "",
    );
    assert_eq!(s, 201, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    v["url"].as_str().unwrap().to_string()
}

fn start(idp: &Idp, origin: &Origin) -> (Proxy, u16) {
    let cp = free_port();
    let extra = format!(
        "admin_token: \"${{ADMIN_TOKEN}}\"\nconnect: {{ listen: \"127.0.0.1:{cp}\", public_url: \"http://127.0.0.1:{cp}/\" }}"
    );
    let body = format!(
        r#"clients:
  - {{ name: worker, secret: "${{WORKER_SECRET}}", tenants: ["*"], credentials: [hub] }}
credentials:
  hub:
    type: oauth2_refresh_token
    per_tenant: true
    authorize_url: http://127.0.0.1:{i}/authorize
    token_url: http://127.0.0.1:{i}/token
    client_id: hub-client
    client_secret: "${{HUB_SECRET}}"
    scopes: [crm.read, crm.write]
    authorize_params: {{ access_type: offline }}
routes:
  - {{ host: "127.0.0.1:{o}", credential: hub }}
"#,
        i = idp.port,
        o = origin.port()
    );
    let env = [
        ("CREDPROXY_STATE_KEY", STATE_KEY),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("WORKER_SECRET", "worker-secret-000001"),
        ("HUB_SECRET", "hub-client-secret-0001"),
    ];
    (Proxy::start_with(&extra, &body, &env), cp)
}

fn get_as_tenant(p: &Proxy, origin: &Origin, tenant: &str) -> u16 {
    runtime().block_on(async {
        let proxy = reqwest::Proxy::http(p.url())
            .unwrap()
            .basic_auth("worker", "worker-secret-000001");
        let c = reqwest::Client::builder().proxy(proxy).build().unwrap();
        let r = c
            .get(format!("http://127.0.0.1:{}/crm/v3/objects", origin.port()))
            .header("X-Credproxy-Tenant", tenant)
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    })
}

/// Follows a connect link through the provider's consent; the callback's answer, and the
/// cookie the browser kept.
fn consent(url: &str) -> ((u16, Option<String>, Option<String>, String), String) {
    let (s, to_idp, cookie, _) = browse(url, None);
    assert_eq!(s, 302);
    let cookie = cookie.expect("a browser-binding cookie");
    let to_idp = to_idp.unwrap();
    let q: std::collections::HashMap<String, String> = url::Url::parse(&to_idp)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], "hub-client");
    assert_eq!(q["scope"], "crm.read crm.write");
    assert_eq!(q["access_type"], "offline");
    let (s, back, _, _) = browse(&to_idp, None);
    assert_eq!(s, 302);
    let back = back.unwrap();
    (browse(&back, Some(&cookie)), back)
}

#[test]
fn a_tenant_connects_through_the_provider_and_its_flows_use_the_connection() {
    let idp = Idp::start();
    let origin = Origin::start();
    let (p, _) = start(&idp, &origin);
    let url = link(&p, "acme");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/connect/hub?tenant=acme&link="),
        "{url}"
    );
    let t0 = Instant::now();
    let ((s, _, _, page), callback) = consent(&url);
    let round_trip = t0.elapsed();
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("connected for acme"), "{page}");
    eprintln!(
        "connect flow round trip (link, provider, callback, code exchange, store): {round_trip:?}"
    );

    assert_eq!(get_as_tenant(&p, &origin, "acme"), 200);
    let token = origin.last().header("authorization").unwrap();
    assert!(
        token.starts_with("Bearer ey"),
        "the provider's JWT: {token}"
    );
    register_secret(token.trim_start_matches("Bearer "));
    assert_eq!(
        idp.grants(),
        r#"{"authorization_code":1}"#,
        "the callback's access token is used first"
    );

    let (s, list) = admin_call(&p, "GET", "/connections?tenant=acme", "");
    assert_eq!(s, 200);
    assert!(
        list.contains("\"source\": \"connect\"") && list.contains("refresh_token"),
        "{list}"
    );
    assert!(!list.contains("ey"), "no token in the listing: {list}");
    // A refresh goes through the rotation-safe chain: the provider's refresh grant.
    let (s, b) = admin_call(&p, "POST", "/connections/acme/hub/refresh", "");
    assert_eq!(s, 200, "{b}");
    assert!(
        idp.grants().contains("\"refresh_token\":1"),
        "{}",
        idp.grants()
    );
    assert_eq!(get_as_tenant(&p, &origin, "acme"), 200);
    assert_ne!(
        origin.last().header("authorization").unwrap(),
        token,
        "the refreshed token"
    );
    assert!(
        p.dir
            .path()
            .join(".credproxy/state/tenants/acme/hub.state")
            .exists(),
        "the rotated refresh token is kept"
    );

    // The link was spent when opened; the state when used.
    let (s, _, _, page) = browse(&url, None);
    assert_eq!(s, 403);
    assert!(page.contains("already used"), "{page}");
    let (s, _, _, page) = browse(&callback, None);
    assert_eq!(s, 400);
    assert!(page.contains("already completed"), "{page}");
    // Another tenant has no connection.
    assert_eq!(get_as_tenant(&p, &origin, "globex"), 403);
    let log = p.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("credproxy::audit") && l.contains("connect") && l.contains("acme")),
        "audit"
    );
}

#[test]
fn every_failure_of_the_flow_is_named() {
    let idp = Idp::start();
    let origin = Origin::start();
    let (p, cp) = start(&idp, &origin);

    // A link opened for another tenant than it was made for: refused (and spent).
    let url = link(&p, "acme");
    let (s, _, _, page) = browse(&url.replace("tenant=acme", "tenant=globex"), None);
    assert_eq!(
        (s, page.contains("unknown, was already used")),
        (403, true),
        "{page}"
    );
    assert_eq!(browse(&url, None).0, 403, "spent");
    // Unknown links, and links without their parts.
    assert_eq!(
        browse(
            &format!("http://127.0.0.1:{cp}/connect/hub?tenant=acme&link=nope"),
            None
        )
        .0,
        403
    );
    assert_eq!(
        browse(&format!("http://127.0.0.1:{cp}/connect/hub"), None).0,
        403
    );

    // The consent finished in another browser (no cookie): refused, nothing stored.
    let url = link(&p, "acme");
    let (_, to_idp, _, _) = browse(&url, None);
    let (_, back, _, _) = browse(&to_idp.unwrap(), None);
    let (s, _, _, page) = browse(&back.unwrap(), Some("credproxy_connect=someone-elses"));
    assert_eq!((s, page.contains("another browser")), (400, true), "{page}");
    assert_eq!(get_as_tenant(&p, &origin, "acme"), 403);

    // The user said no.
    let (state, cookie) = begin(&p);
    let denied = format!("http://127.0.0.1:{cp}/callback?error=access_denied&error_description=User+said+no&state={state}");
    let (s, _, _, page) = browse(&denied, cookie.as_deref());
    assert_eq!(
        (
            s,
            page.contains("consent was not given (access_denied: User said no)")
        ),
        (400, true),
        "{page}"
    );

    // Unknown state; no state; a code the provider refuses.
    let (s, _, _, page) = browse(
        &format!("http://127.0.0.1:{cp}/callback?code=x&state=forged"),
        None,
    );
    assert_eq!((s, page.contains("unknown")), (400, true), "{page}");
    assert_eq!(
        browse(&format!("http://127.0.0.1:{cp}/callback?code=x"), None).0,
        400
    );
    let (state, cookie) = begin(&p);
    let forged = format!("http://127.0.0.1:{cp}/callback?code=not-a-real-code&state={state}");
    let (s, _, _, page) = browse(&forged, cookie.as_deref());
    assert_eq!(s, 400, "{page}");
    assert!(
        page.contains("refused the code") && page.contains("400"),
        "{page}"
    );
    assert!(!page.contains("hub-client-secret"), "{page}");

    // Connect links need the connect listener and an OAuth credential; tenants are checked.
    let (s, b) = admin_call(&p, "POST", "/connections/..x/hub/connect-link", "");
    assert_eq!(s, 400, "{b}");
    let (s, b) = admin_call(
        &p,
        "POST",
        "/connections/acme/hub/connect-link",
        r#"{"metadata": {"shop": "x"}}"#,
    );
    assert_eq!(s, 422, "{b}");
    // The result pages quote nothing unescaped.
    let (state, cookie) = begin(&p);
    let evil = format!("http://127.0.0.1:{cp}/callback?error=%3Cscript%3E&state={state}");
    let (_, _, _, page) = browse(&evil, cookie.as_deref());
    assert!(
        page.contains("&lt;script&gt;") && !page.contains("<script>"),
        "{page}"
    );
    let _ = Duration::ZERO;
    let _ = std::io::stdout().flush();
}

/// Opens a fresh connect link for tenant acme as a browser would; the `state` the provider
/// was sent and the browser's cookie.
fn begin(p: &Proxy) -> (String, Option<String>) {
    let url = link(p, "acme");
    let (_, to_idp, cookie, _) = browse(&url, None);
    let state = query_value(&to_idp.unwrap(), "state");
    (state, cookie)
}
