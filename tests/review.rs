//! Regression tests for the findings of the security review (issue 11), each through the real
//! binary on loopback. The variants that already held are pinned beside them, so they keep
//! holding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use common::*;

/// Finding 1: a token endpoint quoting the Basic header (or the form body) it received must
/// not get the client secret into the 502, `Proxy-Status`, `/credentials` or `check`, in
/// any encoding, even with a control character in the secret.
#[test]
fn an_echoed_client_secret_is_scrubbed_in_every_form() {
    let ts = TokenServer::echoing();
    let origin = Origin::start();
    let secret = "s3cr\tet-value-1";
    let pair = "client-1:s3cr%09et-value-1";
    let mut forms: Vec<String> = vec![
        secret.into(),
        secret.replace('\t', ""),
        secret.replace('\t', " "),
        "s3cr%09et-value-1".into(),
    ];
    for e in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        forms.push(e.encode(pair));
    }
    forms.iter().for_each(|f| register_secret(f));
    let body = format!(
        "credentials:\n  basic:\n    type: oauth2_client_credentials\n    token_url: {0}\n    client_id: client-1\n    client_secret: \"${{CS}}\"\n  body:\n    type: oauth2_client_credentials\n    token_url: {0}\n    client_id: client-1\n    client_secret: \"${{CS}}\"\n    auth_method: post_body\nroutes:\n  - {{ host: \"127.0.0.1:{1}\", path: /a/*, credential: basic }}\n  - {{ host: \"127.0.0.1:{1}\", path: /b/*, credential: body }}\n",
        ts.url("/token"),
        origin.port()
    );
    let p = Proxy::start_with("", &body, &[("CS", secret)]);
    let check = |what: &str, text: &str| {
        for f in &forms {
            assert!(!text.contains(f.as_str()), "{what} shows `{f}`:\n{text}");
        }
    };
    for path in ["/a/x", "/b/x"] {
        let url = format!("http://127.0.0.1:{}{path}", origin.port());
        let resp = raw(
            p.addr,
            format!(
                "GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                origin.port()
            )
            .as_bytes(),
        );
        assert_eq!(status_of(&resp), 502, "{resp}");
        assert!(
            resp.contains("invalid_client"),
            "the endpoint's error is kept: {resp}"
        );
        assert!(resp.contains("***"), "{resp}");
        check("the 502 (headers and body)", &resp);
    }
    let (_, creds) = http_get(p.admin, "/credentials").unwrap();
    assert!(creds.contains("invalid_client"), "{creds}");
    check("/credentials", &creds);
    let out = Command::new(bin())
        .args(["check", "-c", p.config_path().to_str().unwrap()])
        .env("CS", secret)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("invalid_client"), "{text}");
    check("credproxy check", &text);
}

/// Finding 1, second half: secrets sent to token endpoints are at least 8 characters.
#[test]
fn short_secrets_sent_to_token_endpoints_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        "credentials:\n  a:\n    type: oauth2_client_credentials\n    token_url: http://127.0.0.1:9/t\n    client_id: id\n    client_secret: \"${CS}\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check", "--offline", "-c", f.to_str().unwrap()])
        .env("CS", "abc")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("credentials.a.client_secret: a secret sent to a token endpoint needs at least 8 characters"),
        "{err}"
    );
}

/// An origin that answers 401 on /deny (whatever the token) and 200 elsewhere.
fn denying_origin() -> Origin {
    Origin::start_with(std::sync::Arc::new(|s: &Seen| {
        if s.uri.contains("/deny") {
            return TokenReply::raw(401, r#"{"error":"invalid_token"}"#, "application/json");
        }
        TokenReply::raw(200, "{}", "application/json")
    }))
}

/// A token endpoint that hands out a new token (and, for refresh-token grants, a new
/// refresh token) on every call, counting them.
fn counting_endpoint() -> Origin {
    use std::sync::atomic::{AtomicU32, Ordering};
    let n = std::sync::Arc::new(AtomicU32::new(0));
    Origin::start_with(std::sync::Arc::new(move |_s: &Seen| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let body = format!(
            "{{\"access_token\":\"churn-access-{i}\",\"refresh_token\":\"churn-refresh-{i}\",\"expires_in\":3600}}"
        );
        TokenReply::raw(200, &body, "application/json")
    }))
}

/// Finding 2: 40 requests to a path that answers 401 may not make 40 token fetches (or 40
/// refresh-token rotations): at most one renewal, the rest of the 401s go to the client.
#[test]
fn upstream_401s_cannot_force_token_churn() {
    let origin = denying_origin();
    let cc = counting_endpoint();
    let rt = counting_endpoint();
    let key = "0202020202020202020202020202020202020202020202020202020202020202";
    let body = format!(
        "credentials:\n  cc:\n    type: oauth2_client_credentials\n    token_url: http://127.0.0.1:{}/token\n    client_id: id\n    client_secret: \"${{CS}}\"\n  rt:\n    type: oauth2_refresh_token\n    token_url: http://127.0.0.1:{}/token\n    client_id: id\n    client_secret: \"${{CS}}\"\n    refresh_token: \"${{SEED}}\"\nroutes:\n  - {{ host: \"127.0.0.1:{2}\", path: /cc/*, credential: cc }}\n  - {{ host: \"127.0.0.1:{2}\", path: /rt/*, credential: rt }}\n",
        cc.port(),
        rt.port(),
        origin.port()
    );
    let p = Proxy::start_with(
        "",
        &body,
        &[
            ("CS", "client-secret-churn"),
            ("SEED", "refresh-seed-churn"),
            ("CREDPROXY_STATE_KEY", key),
        ],
    );
    let rt_ = runtime();
    let client = p.client();
    for prefix in ["cc", "rt"] {
        for i in 0..40 {
            let url = format!("http://127.0.0.1:{}/{prefix}/deny/{i}", origin.port());
            let resp = rt_.block_on(client.get(url).send()).unwrap();
            assert_eq!(resp.status(), 401, "the 401 reaches the client");
        }
        // Still served: the kept token works on other paths.
        let ok = format!("http://127.0.0.1:{}/{prefix}/ok", origin.port());
        assert_eq!(rt_.block_on(client.get(ok).send()).unwrap().status(), 200);
    }
    assert_eq!(cc.count(), 2, "one fetch, one renewal");
    assert_eq!(rt.count(), 2, "one redemption, one rotation for the 401");
    let m = p.metrics_with(&["result=\"limited\""]);
    assert!(
        m.contains("credproxy_token_renewals_total{credential=\"cc\",result=\"renewed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("credproxy_token_renewals_total{credential=\"cc\",result=\"limited\"}"),
        "{m}"
    );
    let log = p.log_text();
    assert_eq!(
        log.matches("upstream 401s ask for new tokens too often")
            .count(),
        2,
        "logged once per credential:\n{log}"
    );
}

/// Finding 3: the proxy's own listeners are never a destination, whatever `egress.allow`
/// says (the harness allows all of loopback, as the reviewer's config did).
#[test]
fn the_proxy_never_reaches_its_own_listeners() {
    let origin = Origin::start();
    let body = format!(
        "clients:\n  - {{ name: flows, secret: \"${{FLOWS}}\", credentials: [gh] }}\ncredentials:\n  gh: {{ type: bearer, token: \"${{GH}}\" }}\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: gh }}\n  - {{ path: /adm/*, upstream: \"http://127.0.0.1:ADMIN\", strip_prefix: /adm, credential: gh }}\n",
        origin.port()
    );
    // The sidecar route needs the admin port, which the harness picks: write it after.
    let p = Proxy::start_with(
        "",
        &body.replace("ADMIN", "1"),
        &[("FLOWS", "flows-secret-1"), ("GH", "gh-token-own")],
    );
    let cfg = std::fs::read_to_string(p.config_path()).unwrap();
    std::fs::write(
        p.config_path(),
        cfg.replace("127.0.0.1:1\"", &format!("{}\"", p.admin)),
    )
    .unwrap();
    assert!(admin_post(p.admin, "/reload").contains("reloaded"));
    let auth = format!(
        "Proxy-Authorization: Basic {}\r\n",
        STANDARD.encode("flows:flows-secret-1")
    );
    let (admin, listen) = (p.admin.port(), p.addr.port());
    let mut attempts: Vec<String> = Vec::new();
    for (method, target) in [
        ("GET", format!("http://127.0.0.1:{admin}/credentials")),
        ("GET", format!("http://127.0.0.1:{admin}/metrics")),
        ("POST", format!("http://127.0.0.1:{admin}/reload")),
        (
            "POST",
            format!("http://127.0.0.1:{admin}/credentials/gh/refresh"),
        ),
        ("GET", format!("http://localhost:{admin}/healthz")),
        ("GET", format!("http://0.0.0.0:{admin}/healthz")),
        ("GET", format!("http://[::ffff:127.0.0.1]:{admin}/healthz")),
        ("GET", format!("http://127.0.0.1:{listen}/anything")),
    ] {
        let host = target.split('/').nth(2).unwrap().to_string();
        attempts.push(format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        ));
    }
    attempts.push(format!(
        "GET /adm/credentials HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    ));
    attempts.push(format!(
        "CONNECT 127.0.0.1:{admin} HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\n{auth}\r\n"
    ));
    for req in attempts {
        let resp = raw(p.addr, req.as_bytes());
        assert_eq!(status_of(&resp), 403, "{req}\n{resp}");
        assert!(body_of(&resp).contains("\"proxy_loop\""), "{resp}");
        assert!(
            header_of(&resp, "proxy-status")
                .unwrap()
                .contains("error=proxy_loop_detected"),
            "{resp}"
        );
    }
    let m = p.metrics();
    assert!(
        m.contains("credproxy_config_reloads_total{result=\"ok\"} 1"),
        "only the test's own reload reached the admin listener:\n{m}"
    );
    // The origin on loopback is still reachable.
    let ok = raw(
        p.addr,
        format!(
            "GET http://127.0.0.1:{0}/x HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n{auth}Connection: close\r\n\r\n",
            origin.port()
        )
        .as_bytes(),
    );
    assert_eq!(status_of(&ok), 200, "{ok}");
}

/// Finding 4: a sidecar route to a non-loopback `http://` upstream is a config error naming
/// the route and `allow_http` (`check` used to say OK and the proxy sent the bearer in clear).
#[test]
fn plain_http_sidecar_upstreams_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        "credentials:\n  gh: { type: bearer, token: \"${GH}\" }\nroutes:\n  - { name: other, path: /o/*, upstream: \"http://other.acme.test/api\", credential: gh }\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check", "--offline", "-c", f.to_str().unwrap()])
        .env("GH", "gh-token-value")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            ":4: routes[0].upstream: route `other` would send its credential in cleartext"
        ),
        "{err}"
    );
    assert!(err.contains("allow_http: true"), "{err}");
}

/// Opens a connection from `source` (a loopback address) to the proxy.
fn connect_from(source: &str, proxy: std::net::SocketAddr) -> std::net::TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    sock.connect(&proxy.into()).unwrap();
    let s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    s
}

fn post_head(target: &str, host: &str, len: usize) -> String {
    format!("POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
}

fn read_all(mut s: std::net::TcpStream) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Finding 5: bodies read whole (for signing, or for the 401 replay) have a process-wide
/// budget and a per-client share; past them a signed request gets 503 with Retry-After, and
/// a token request streams without its replay instead of failing.
#[test]
fn buffered_bodies_are_bounded_in_all_and_per_client() {
    use std::io::Write;
    let origin = Origin::start();
    let ts = TokenServer::start(TokenReply::ok("budget-token-1", "3600"));
    let extra = "max_body: 1MiB\nlimits: { max_buffered: 2MiB, max_buffered_per_client: 1MiB }\n";
    let body = format!(
        "credentials:\n  s3:\n    type: aws_sigv4\n    access_key_id: AKIDEXAMPLE\n    secret_access_key: \"${{SK}}\"\n    service: s3\n    region: us-east-1\n  api:\n    type: oauth2_client_credentials\n    token_url: {}\n    client_id: id\n    client_secret: \"${{CS}}\"\nroutes:\n  - {{ host: \"127.0.0.1:{1}\", path: /s3/*, credential: s3 }}\n  - {{ host: \"127.0.0.1:{1}\", path: /api/*, credential: api }}\n",
        ts.url("/token"),
        origin.port()
    );
    let p = Proxy::start_with(
        extra,
        &body,
        &[
            ("SK", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            ("CS", "client-secret-budget"),
        ],
    );
    let host = format!("127.0.0.1:{}", origin.port());
    let target = |path: &str| format!("http://{host}{path}");
    let len = 700_000;
    // A holds 700 KB from 127.0.0.1 (half sent): the proxy has reserved the whole length.
    let mut a = connect_from("127.0.0.1", p.addr);
    a.write_all(post_head(&target("/s3/a"), &host, len).as_bytes())
        .unwrap();
    a.write_all(&vec![b'a'; len / 2]).unwrap();
    p.metrics_with(&["credproxy_buffered_bytes 700000"]);
    // B, same client: over its share.
    let mut b = connect_from("127.0.0.1", p.addr);
    b.write_all(post_head(&target("/s3/b"), &host, len).as_bytes())
        .unwrap();
    let _ = b.write_all(&vec![b'b'; len]);
    let resp = read_all(b);
    assert_eq!(status_of(&resp), 503, "{resp}");
    assert_eq!(
        header_of(&resp, "retry-after").as_deref(),
        Some("1"),
        "{resp}"
    );
    assert!(body_of(&resp).contains("\"buffers_full\""), "{resp}");
    assert!(body_of(&resp).contains("max_buffered_per_client"), "{resp}");
    // A token route past the share streams instead (no replay), and succeeds.
    let mut t = connect_from("127.0.0.1", p.addr);
    t.write_all(post_head(&target("/api/t"), &host, len).as_bytes())
        .unwrap();
    t.write_all(&vec![b't'; len]).unwrap();
    assert_eq!(status_of(&read_all(t)), 200);
    // C, another client address: its own share, and the total still has room.
    let mut c = connect_from("127.0.0.2", p.addr);
    c.write_all(post_head(&target("/s3/c"), &host, len).as_bytes())
        .unwrap();
    c.write_all(&vec![b'c'; len / 2]).unwrap();
    p.metrics_with(&["credproxy_buffered_bytes 1400000"]);
    // D, a third address: its share is free but the total (2 MiB) is not.
    let mut d = connect_from("127.0.0.3", p.addr);
    d.write_all(post_head(&target("/s3/d"), &host, len).as_bytes())
        .unwrap();
    let _ = d.write_all(&vec![b'd'; len]);
    let resp = read_all(d);
    assert_eq!(status_of(&resp), 503, "{resp}");
    assert!(
        body_of(&resp).contains("(proxy.limits.max_buffered)"),
        "{resp}"
    );
    // A and C finish and are served; the budget is given back.
    a.write_all(&vec![b'a'; len / 2]).unwrap();
    c.write_all(&vec![b'c'; len / 2]).unwrap();
    assert_eq!(status_of(&read_all(a)), 200);
    assert_eq!(status_of(&read_all(c)), 200);
    p.metrics_with(&["credproxy_buffered_bytes 0"]);
    let mut e = connect_from("127.0.0.1", p.addr);
    e.write_all(post_head(&target("/s3/e"), &host, len).as_bytes())
        .unwrap();
    e.write_all(&vec![b'e'; len]).unwrap();
    assert_eq!(status_of(&read_all(e)), 200);
}

/// Finding 6: a credential minted per target host behind a wildcard route keeps tokens for a
/// bounded number of hosts, and signs nothing for a destination that egress refuses.
#[test]
fn per_target_tokens_are_bounded_and_signed_only_for_allowed_destinations() {
    let origin = Origin::start();
    let pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/credentials/testdata/rsa.pem"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("sa.json");
    let json = serde_json::json!({
        "client_email": "robot@proj.iam.gserviceaccount.com",
        "private_key": pem,
        "private_key_id": "kid-1",
    });
    std::fs::write(&key, json.to_string()).unwrap();
    let mut overrides = String::new();
    for i in 0..270 {
        overrides.push_str(&format!("    h{i}.example.test: 127.0.0.1\n"));
    }
    for i in 0..50 {
        overrides.push_str(&format!("    p{i}.example.test: 10.0.0.1\n"));
    }
    let extra = format!("dns:\n  overrides:\n{overrides}");
    let body = format!(
        "credentials:\n  g:\n    type: google_service_account\n    key_file: \"file:{}\"\n    mode: self_signed_jwt\nroutes:\n  - {{ host: \"*.example.test:{}\", credential: g, allow_http: true }}\n",
        key.display(),
        origin.port()
    );
    let p = Proxy::start_with(&extra, &body, &[]);
    let port = origin.port();
    for i in 0..50 {
        let h = format!("p{i}.example.test:{port}");
        let resp = raw(
            p.addr,
            format!("GET http://{h}/ HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(status_of(&resp), 403, "{resp}");
    }
    let (_, creds) = http_get(p.admin, "/credentials").unwrap();
    let v: serde_json::Value = serde_json::from_str(&creds).unwrap();
    assert_eq!(
        v[0]["fetch_count"], 0,
        "nothing signed for refused destinations: {creds}"
    );
    for i in 0..270 {
        let h = format!("h{i}.example.test:{port}");
        let resp = raw(
            p.addr,
            format!("GET http://{h}/x HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(status_of(&resp), 200, "{resp}");
    }
    let aud = origin.last().header("authorization").unwrap();
    assert!(aud.starts_with("Bearer ey"), "{aud}");
    let (_, creds) = http_get(p.admin, "/credentials").unwrap();
    let v: serde_json::Value = serde_json::from_str(&creds).unwrap();
    assert_eq!(v[0]["targets"], 256, "{creds}");
}

/// Finding 7: scope stretching. Every variant the review found, and the ones that held, on
/// a path-scoped and a method-scoped route: refused with 400, never forwarded with the
/// credential.
#[test]
fn scope_stretching_variants_are_refused() {
    let origin = Origin::start();
    let body = format!(
        "credentials:\n  gh: {{ type: bearer, token: \"${{GH}}\" }}\nroutes:\n  - {{ host: \"127.0.0.1:{0}\", path: /api/*, methods: [GET, POST], credential: gh }}\n",
        origin.port()
    );
    let p = Proxy::start_with("", &body, &[("GH", "gh-scope-token")]);
    let h = format!("127.0.0.1:{}", origin.port());
    let send = |method: &str, path: &str, extra: &str, body: &str| {
        raw(
            p.addr,
            format!(
                "{method} http://{h}{path} HTTP/1.1\r\nHost: {h}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    let refused_paths = [
        // Found by the review.
        "/api/%2%65%2%65/admin",
        "/api/%%32%65%%32%65/admin",
        "/api/%25252e%25252e/admin",
        "/api/..%00/admin",
        "/api/..%09/admin",
        "/api/%u002e%u002e/admin",
        "/api/%c0%ae%c0%ae/admin",
        // Held before; kept holding.
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/%2E%2E/admin",
        "/api/.%2e/admin",
        "/api/..;/admin",
        "/api/..%3b/admin",
        "/api/%252e%252e/admin",
        "/api/a%2fb",
        "/api/a%5cb",
        "/api/a%252fb",
        "/api//admin",
        "/api/./x",
    ];
    for path in refused_paths {
        let resp = send("GET", path, "", "");
        assert_eq!(status_of(&resp), 400, "{path}: {resp}");
        assert!(header_of(&resp, "proxy-status").is_some(), "{resp}");
    }
    let refused_requests = [
        ("GET", "/api/x", "X-Original-URL: /admin\r\n", ""),
        ("GET", "/api/x", "X-Rewrite-URL: /admin\r\n", ""),
        ("GET", "/api/x?_method=DELETE", "", ""),
        ("GET", "/api/x?a=1&%5Fmethod=DELETE", "", ""),
        ("POST", "/api/x", "X_HTTP_Method_Override: DELETE\r\n", ""),
        ("POST", "/api/x", "X-HTTP-Method-Override: DELETE\r\n", ""),
        ("POST", "/api/x", "X-Method-Override: DELETE\r\n", ""),
        (
            "POST",
            "/api/x",
            "Content-Type: application/x-www-form-urlencoded\r\n",
            "a=1&_method=DELETE",
        ),
        (
            "POST",
            "/api/x",
            "Content-Type: multipart/form-data; boundary=b\r\n",
            "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n",
        ),
        ("DELETE", "/api/x", "", ""),
    ];
    for (method, path, extra, body) in refused_requests {
        let resp = send(method, path, extra, body);
        // A method outside the route is simply not matched: forwarded without the credential.
        if method == "DELETE" {
            assert_eq!(status_of(&resp), 200, "{resp}");
            assert_eq!(origin.last().header("authorization"), None);
            continue;
        }
        assert_eq!(status_of(&resp), 400, "{method} {path} {extra}: {resp}");
    }
    assert!(
        origin
            .seen()
            .iter()
            .all(|s| s.header("authorization").is_none()),
        "no stretched request reached the origin with the credential"
    );
    for path in [
        "/api/v1/users",
        "/api/report%20q3.pdf",
        "/api/100%25",
        "/api/caf%C3%A9",
    ] {
        assert_eq!(status_of(&send("GET", path, "", "")), 200, "{path}");
    }
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    assert_eq!(
        status_of(&send("POST", "/api/x", form, "a=1&method=x")),
        200
    );
    assert_eq!(
        origin.last().header("authorization").as_deref(),
        Some("Bearer gh-scope-token")
    );
}

/// Finding 8: answers pingora used to make itself (parser-level 400s) carry `Proxy-Status`
/// and the JSON body, without quoting the request; pipelined requests are answered in order.
#[test]
fn unparsable_requests_get_json_and_pipelined_requests_are_answered_in_order() {
    let origin = Origin::start();
    let body = format!(
        "credentials:\n  gh: {{ type: bearer, token: \"${{GH}}\" }}\nroutes:\n  - {{ host: \"127.0.0.1:{}\", path: /api/*, credential: gh }}\n",
        origin.port()
    );
    let p = Proxy::start_with("", &body, &[("GH", "gh-pipeline-token")]);
    let h = format!("127.0.0.1:{}", origin.port());
    let secret = "c2VjcmV0LXByb3h5LWF1dGg=";
    register_secret(secret);
    let bad = [
        format!("GET http://{h}/api/a HTTP/1.1\r\nHost: other.example\r\n\r\n"),
        format!("GET http://{h}/api/a HTTP/1.1\r\nHost: {h}\r\nHost: {h}\r\n\r\n"),
        format!("GET http://user:pw@{h}/api/a HTTP/1.1\r\nHost: {h}\r\n\r\n"),
        format!("GET http://{h}/api/a HTTP/1.1\r\nHost: {h}\r\nProxy-Authorization: Basic {secret}\r\nX-A: b\r\n folded\r\n\r\n"),
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_string(),
    ];
    for req in bad {
        let resp = raw(p.addr, req.as_bytes());
        assert_eq!(status_of(&resp), 400, "{req}\n{resp}");
        assert!(
            header_of(&resp, "proxy-status")
                .unwrap()
                .starts_with("credproxy; error=http_request_error"),
            "{resp}"
        );
        let v: serde_json::Value = serde_json::from_str(&body_of(&resp)).unwrap();
        assert_eq!(v["error"], "bad_request", "{resp}");
        assert!(
            !resp.contains(secret),
            "the request is never quoted back: {resp}"
        );
    }
    let get = |path: &str| format!("GET http://{h}{path} HTTP/1.1\r\nHost: {h}\r\n\r\n");
    let post =
        format!("POST http://{h}/api/p HTTP/1.1\r\nHost: {h}\r\nContent-Length: 5\r\n\r\nhello");
    let refused = format!("GET http://{h}/api/../x HTTP/1.1\r\nHost: {h}\r\n\r\n");
    let last =
        format!("GET http://{h}/api/last HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n");
    let all = [get("/api/1"), post, get("/api/2"), refused, last].concat();
    let resp = raw(p.addr, all.as_bytes());
    let statuses: Vec<&str> = resp
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| resp[i..].split("\r\n").next())
        .collect();
    assert_eq!(
        statuses,
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 400 Bad Request",
            "HTTP/1.1 200 OK"
        ],
        "{resp}"
    );
    let paths: Vec<String> = origin.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(paths, ["/api/1", "/api/p", "/api/2", "/api/last"]);
}

/// The variants that held in the review, kept holding: misrouting and request smuggling
/// forms never take the credential to another host, and never make the origin see a
/// request it could split in two.
#[test]
fn misrouting_and_smuggling_corpus_keeps_holding() {
    let origin = Origin::start();
    let other = Origin::start();
    let body = format!(
        "credentials:\n  gh: {{ type: bearer, token: \"${{GH}}\" }}\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: gh }}\n",
        origin.port()
    );
    let p = Proxy::start_with("", &body, &[("GH", "gh-corpus-token")]);
    let (h, o) = (
        format!("127.0.0.1:{}", origin.port()),
        format!("127.0.0.1:{}", other.port()),
    );
    let misrouting = [
        format!("GET http://{h}@{o}/ HTTP/1.1\r\nHost: {o}\r\n\r\n"),
        format!("GET http://{o}/ HTTP/1.1\r\nHost: {h}\r\n\r\n"),
        format!("GET http://{o}\\@{h}/ HTTP/1.1\r\nHost: {h}\r\n\r\n"),
        format!("GET http://{o}#@{h}/ HTTP/1.1\r\nHost: {o}\r\n\r\n"),
        format!("GET http://{o}/http://{h}/ HTTP/1.1\r\nHost: {o}\r\n\r\n"),
        format!("GET //{h}/ HTTP/1.1\r\nHost: {h}\r\n\r\n"),
        format!("GET {h}/ HTTP/1.1\r\nHost: {h}\r\n\r\n"),
        format!("GET http://{o}/ HTTP/1.1\r\nHost: {o}\r\nX-Forwarded-Host: {h}\r\n\r\n"),
        format!(
            "GET http://localhost.:{}/ HTTP/1.1\r\nHost: localhost.:{}\r\n\r\n",
            other.port(),
            other.port()
        ),
    ];
    for req in &misrouting {
        let req = req.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
        let resp = raw(p.addr, req.as_bytes());
        assert!(
            [200, 400, 403, 404].contains(&status_of(&resp)),
            "{req}\n{resp}"
        );
    }
    assert!(
        other
            .seen()
            .iter()
            .all(|s| s.header("authorization").is_none()),
        "the credential never reached the other origin"
    );
    let smuggling = [
        format!("POST http://{h}/ HTTP/1.1\r\nHost: {h}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n"),
        format!("POST http://{h}/ HTTP/1.1\r\nHost: {h}\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"),
        format!("POST http://{h}/ HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        format!("POST http://{h}/ HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        format!("POST http://{h}/ HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        format!("POST http://{h}/ HTTP/1.1\r\nHost: {h}\r\nContent-Length: +4\r\n\r\nabcd"),
        format!("POST http://{h}/ HTTP/1.1\r\nHost: {h}\r\nContent-Length: 0x4\r\n\r\nabcd"),
        format!("POST http://{h}/ HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n4;ext\r\nabcd\r\n0\r\n\r\n"),
        format!("POST http://{h}/ HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n"),
        format!("GET http://{h}/ HTTP/1.1\r\nHost: {h}\r\n\nGET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n"),
    ];
    for req in &smuggling {
        let before = origin.count();
        let req = req.replacen("\r\n", "\r\nConnection: close\r\n", 1);
        let resp = raw(p.addr, req.as_bytes());
        let after = origin.count();
        assert!(
            after - before <= 1,
            "the origin saw two requests for one:\n{req}\n{resp}"
        );
        assert!(
            origin
                .seen()
                .iter()
                .all(|s| !s.uri.contains("smuggled") && s.uri != "/x"),
            "{req}"
        );
        if status_of(&resp) == 400 {
            assert!(header_of(&resp, "proxy-status").is_some(), "{req}\n{resp}");
        }
    }
}
