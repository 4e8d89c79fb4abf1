//! The real binary on loopback, driven by real clients (reqwest, raw sockets, curl).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

fn creds() -> &'static str {
    "credentials:\n  gh: { type: bearer, token: \"${GH_TOKEN}\" }\n  erp: { type: basic, username: erp, password: \"${ERP_PASS}\" }\n  mc: { type: headers, headers: { X-Api-Key: \"${MC_KEY}\", X-Tenant: acme } }\n"
}

const ENV: &[(&str, &str)] = &[
    ("GH_TOKEN", "gh-secret-1"),
    ("ERP_PASS", "erp-pass-2"),
    ("MC_KEY", "mc-key-3"),
];

fn start(origin: &Origin, routes: &str) -> Proxy {
    let body = format!(
        "{}routes:\n{}",
        creds(),
        routes.replace("PORT", &origin.port().to_string())
    );
    Proxy::start_with("dns: { overrides: { api.example.com: 127.0.0.1, x.y.example.com: 127.0.0.1, evilexample.com: 127.0.0.1, api.example.com.evil.io: 127.0.0.1, example.com: 127.0.0.1 } }", &body, ENV)
}

fn get(p: &Proxy, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let rt = runtime();
    rt.block_on(async {
        let mut r = p.client().get(url);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    })
}

#[test]
fn bearer_basic_and_headers_are_injected() {
    let o = Origin::start();
    let p = start(&o, "  - { host: \"127.0.0.1:PORT\", path: /gh/*, credential: gh }\n  - { host: \"127.0.0.1:PORT\", path: /erp/*, credential: erp }\n  - { host: \"127.0.0.1:PORT\", path: /mc/*, credential: mc }\n");
    let base = format!("http://127.0.0.1:{}", o.port());
    assert_eq!(get(&p, &format!("{base}/gh/x"), &[]).0, 200);
    assert_eq!(o.last().all("authorization"), vec!["Bearer gh-secret-1"]);
    assert_eq!(
        o.last().uri,
        "/gh/x",
        "absolute-form rewritten to origin-form"
    );
    assert_eq!(get(&p, &format!("{base}/erp/x"), &[]).0, 200);
    // base64("erp:erp-pass-2")
    assert_eq!(
        o.last().all("authorization"),
        vec!["Basic ZXJwOmVycC1wYXNzLTI="]
    );
    assert_eq!(
        get(&p, &format!("{base}/mc/x"), &[("X-Api-Key", "client-key")]).0,
        200
    );
    let seen = o.last();
    assert_eq!(
        seen.all("x-api-key"),
        vec!["mc-key-3"],
        "client value replaced"
    );
    assert_eq!(seen.header("x-tenant").as_deref(), Some("acme"));
}

#[test]
fn client_authorization_is_replaced_never_forwarded() {
    let o = Origin::start();
    let p = start(&o, "  - { host: \"127.0.0.1:PORT\", credential: gh }\n  - { host: \"localhost:PORT\", credential: mc }\n");
    get(
        &p,
        &format!("http://127.0.0.1:{}/", o.port()),
        &[("Authorization", "Bearer client-token")],
    );
    assert_eq!(o.last().all("authorization"), vec!["Bearer gh-secret-1"]);
    // A credential that sets other headers still removes the client's Authorization.
    get(
        &p,
        &format!("http://localhost:{}/", o.port()),
        &[("Authorization", "Bearer client-token")],
    );
    assert!(o.last().all("authorization").is_empty());
}

#[test]
fn route_matching_rules() {
    let o = Origin::start();
    // Plain HTTP to non-loopback names (pinned to the mock by dns.overrides): allowed per route.
    let routes = "  - { host: \"api.example.com:PORT\", path: /admin/*, methods: [DELETE], credential: erp, allow_http: true }\n  - { host: \"api.example.com:PORT\", methods: [GET], credential: gh, allow_http: true }\n  - { host: \"*.example.com\", credential: mc, allow_http: true }\n";
    let p = start(&o, routes);
    let port = o.port();
    let rt = runtime();
    let c = p.client();
    let auth = |method: &str, host: &str, path: &str| {
        let url = format!("http://{host}:{port}{path}");
        rt.block_on(c.request(method.parse().unwrap(), &url).send())
            .unwrap();
        let s = o.last();
        (s.header("authorization"), s.header("x-api-key"))
    };
    // path glob + method: first route
    assert_eq!(
        auth("DELETE", "api.example.com", "/admin/users/1")
            .0
            .as_deref(),
        Some("Basic ZXJwOmVycC1wYXNzLTI=")
    );
    // method filter: GET skips route 0, takes route 1
    assert_eq!(
        auth("GET", "api.example.com", "/admin/users/1")
            .0
            .as_deref(),
        Some("Bearer gh-secret-1")
    );
    // first match wins: POST falls through to the wildcard
    assert_eq!(
        auth("POST", "api.example.com", "/x").1.as_deref(),
        Some("mc-key-3")
    );
    // host normalisation: case and trailing dot
    assert_eq!(
        auth("GET", "API.Example.COM.", "/x").0.as_deref(),
        Some("Bearer gh-secret-1")
    );
    // wildcard matches deeper names
    assert_eq!(
        auth("GET", "x.y.example.com", "/x").1.as_deref(),
        Some("mc-key-3")
    );
    // never matched by a mere suffix or prefix of another name, nor the bare suffix
    for host in ["evilexample.com", "api.example.com.evil.io", "example.com"] {
        assert_eq!(auth("GET", host, "/x"), (None, None), "{host}");
    }
}

#[test]
fn route_port_must_match() {
    let o = Origin::start();
    let other = Origin::start();
    let p = start(&o, "  - { host: \"127.0.0.1:PORT\", credential: gh }\n");
    get(&p, &format!("http://127.0.0.1:{}/", other.port()), &[]);
    assert!(other.last().header("authorization").is_none());
    get(&p, &format!("http://127.0.0.1:{}/", o.port()), &[]);
    assert!(o.last().header("authorization").is_some());
}

#[test]
fn unmatched_tunnel_forwards_untouched() {
    let o = Origin::start();
    let p = start(&o, "  - { host: api.github.com, credential: gh }\n");
    let (status, _) = get(
        &p,
        &format!("http://127.0.0.1:{}/free?q=1", o.port()),
        &[("Authorization", "Bearer own")],
    );
    assert_eq!(status, 200);
    let s = o.last();
    assert_eq!(s.uri, "/free?q=1");
    assert_eq!(
        s.all("authorization"),
        vec!["Bearer own"],
        "unmatched requests keep the client's own auth"
    );
}

#[test]
fn unmatched_deny_is_403_with_proxy_status() {
    let o = Origin::start();
    let body = format!(
        "{}routes:\n  - {{ host: api.github.com, credential: gh }}\n",
        creds()
    );
    let p = Proxy::start_with("unmatched: deny", &body, ENV);
    let req = format!(
        "GET http://127.0.0.1:{0}/ HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nConnection: close\r\n\r\n",
        o.port()
    );
    let resp = raw(p.addr, req.as_bytes());
    assert_eq!(status_of(&resp), 403, "{resp}");
    assert!(header_of(&resp, "proxy-status")
        .unwrap()
        .starts_with("credproxy; error=http_request_denied"));
    let v: serde_json::Value = serde_json::from_str(body_of(&resp).trim()).unwrap();
    assert_eq!(v["error"], "unmatched_denied");
    assert_eq!(o.count(), 0);
}

#[test]
fn hop_by_hop_and_proxy_headers_are_stripped() {
    let o = Origin::start();
    let p = start(&o, "  - { host: \"127.0.0.1:PORT\", credential: gh }\n");
    let req = format!(
        "GET http://127.0.0.1:{0}/h HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nProxy-Authorization: Basic dTpw\r\nProxy-Connection: keep-alive\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Credproxy-Credential: gh\r\nX-Credproxy-Debug: 1\r\nX-Kept: yes\r\n\r\n",
        o.port()
    );
    let resp = raw(p.addr, req.as_bytes());
    assert_eq!(status_of(&resp), 200, "{resp}");
    let s = o.last();
    for h in [
        "proxy-authorization",
        "proxy-connection",
        "x-hop",
        "keep-alive",
        "x-credproxy-credential",
        "x-credproxy-debug",
    ] {
        assert!(s.header(h).is_none(), "{h} reached the origin");
    }
    assert_eq!(s.header("x-kept").as_deref(), Some("yes"));
    assert_eq!(
        s.header("host").as_deref(),
        Some(format!("127.0.0.1:{}", o.port()).as_str())
    );
}

#[test]
fn host_header_conflicting_with_absolute_uri_is_refused() {
    let o = Origin::start();
    let p = start(&o, "  - { host: \"127.0.0.1:PORT\", credential: gh }\n");
    for host in ["evil.example", "127.0.0.1", "api.github.com"] {
        let req = format!(
            "GET http://127.0.0.1:{}/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
            o.port()
        );
        assert_eq!(status_of(&raw(p.addr, req.as_bytes())), 400, "{host}");
    }
    let dup = format!("GET http://127.0.0.1:{0}/x HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nHost: evil.example\r\nConnection: close\r\n\r\n", o.port());
    assert_eq!(status_of(&raw(p.addr, dup.as_bytes())), 400);
    assert_eq!(o.count(), 0, "nothing reached the origin");
    let ok = format!(
        "GET http://127.0.0.1:{0}/x HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nConnection: close\r\n\r\n",
        o.port()
    );
    assert_eq!(status_of(&raw(p.addr, ok.as_bytes())), 200);
    assert_eq!(
        o.last().header("host").unwrap(),
        format!("127.0.0.1:{}", o.port())
    );
}

#[test]
fn credential_selection_header() {
    let o = Origin::start();
    let p = start(
        &o,
        "  - { host: \"127.0.0.1:PORT\", credentials: [gh, mc] }\n",
    );
    let url = format!("http://127.0.0.1:{}/", o.port());
    get(&p, &url, &[]);
    assert_eq!(
        o.last().header("authorization").as_deref(),
        Some("Bearer gh-secret-1")
    );
    get(&p, &url, &[("X-Credproxy-Credential", "mc")]);
    let s = o.last();
    assert_eq!(s.header("x-api-key").as_deref(), Some("mc-key-3"));
    assert!(s.header("x-credproxy-credential").is_none());
    let (status, body) = get(&p, &url, &[("X-Credproxy-Credential", "erp")]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("credential_not_on_route"));
    assert_eq!(o.count(), 2);
}

#[test]
fn missing_secret_gives_502_and_others_work() {
    let o = Origin::start();
    let body = format!("credentials:\n  gh: {{ type: bearer, token: \"${{GH_TOKEN}}\" }}\n  absent: {{ type: bearer, token: \"${{NOT_SET_ANYWHERE}}\" }}\nroutes:\n  - {{ host: \"127.0.0.1:{0}\", path: /a/*, credential: absent }}\n  - {{ host: \"127.0.0.1:{0}\", credential: gh }}\n", o.port());
    let p = Proxy::start_with("", &body, ENV);
    let (status, text) = get(&p, &format!("http://127.0.0.1:{}/a/x", o.port()), &[]);
    assert_eq!(status, 502);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["error"], "credential_unavailable");
    assert_eq!(v["credential"], "absent");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("NOT_SET_ANYWHERE is not set"));
    assert_eq!(
        get(&p, &format!("http://127.0.0.1:{}/b", o.port()), &[]).0,
        200
    );
    let log = p.log_text();
    assert_eq!(
        log.matches(
            "credentials.absent: unavailable until fixed (requests that would use it answer 502)"
        )
        .count(),
        1,
        "the startup log names it, once:\n{log}"
    );
}

#[test]
fn dns_failure_is_502() {
    let o = Origin::start();
    let p = start(
        &o,
        "  - { host: nothing-here.invalid, credential: gh, allow_http: true }\n",
    );
    let resp = raw(p.addr, b"GET http://nothing-here.invalid/ HTTP/1.1\r\nHost: nothing-here.invalid\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&resp), 502, "{resp}");
    assert!(header_of(&resp, "proxy-status")
        .unwrap()
        .contains("error=dns_error"));
    let v: serde_json::Value = serde_json::from_str(body_of(&resp).trim()).unwrap();
    assert_eq!(v["error"], "dns_error");
    assert_eq!(v["credential"], "gh");
    assert!(!resp.contains("gh-secret-1"));
    let mut p = p;
    assert!(p.is_running());
}

#[test]
fn connection_refused_is_502() {
    let o = Origin::start();
    let (_held, closed) = refusing_port();
    let p = start(
        &o,
        &format!("  - {{ host: \"127.0.0.1:{closed}\", credential: gh }}\n"),
    );
    let req = format!("GET http://127.0.0.1:{closed}/ HTTP/1.1\r\nHost: 127.0.0.1:{closed}\r\nConnection: close\r\n\r\n");
    let resp = raw(p.addr, req.as_bytes());
    assert_eq!(status_of(&resp), 502, "{resp}");
    assert!(header_of(&resp, "proxy-status")
        .unwrap()
        .contains("error=connection_refused"));
    assert!(body_of(&resp).contains(&format!("127.0.0.1:{closed}")));
    assert!(!resp.contains("gh-secret-1"));
}

#[test]
fn localhost_falls_back_to_the_next_address() {
    // `localhost` may resolve to ::1 first; the origin listens on 127.0.0.1 only.
    let o = Origin::start();
    let p = start(&o, "  - { host: \"localhost:PORT\", credential: gh }\n");
    assert_eq!(
        get(&p, &format!("http://localhost:{}/", o.port()), &[]).0,
        200
    );
}

#[test]
fn malformed_requests_are_400() {
    let o = Origin::start();
    let p = start(&o, "  - { host: api.github.com, credential: gh }\n");
    // (request, answered by credproxy's own code with Proxy-Status)
    for (req, ours) in [
        ("GET ftp://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n", true),
        ("GET http://exa_mple..com/ HTTP/1.1\r\nHost: exa_mple..com\r\nConnection: close\r\n\r\n", true),
        ("GET http://example.com:99999/ HTTP/1.1\r\nHost: example.com:99999\r\nConnection: close\r\n\r\n", true),

        ("GET * HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n", true),
        // Refused by pingora's parser before any hook (plain 400, no Proxy-Status).
        ("GET http://exämple.com/ HTTP/1.1\r\nHost: exämple.com\r\nConnection: close\r\n\r\n", false),
        ("GET http://ex%41mple.com/ HTTP/1.1\r\nHost: ex%41mple.com\r\nConnection: close\r\n\r\n", false),
        ("GET http://user@example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n", false),
        ("GET http:/\\example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n", false),
    ] {
        let resp = raw(p.addr, req.as_bytes());
        assert_eq!(status_of(&resp), 400, "{req}\n{resp}");
        if ours {
            assert!(header_of(&resp, "proxy-status").unwrap_or_else(|| panic!("{req}\n{resp}")).contains("error=http_request_error"), "{resp}");
            assert!(body_of(&resp).contains("\"error\":\"bad_request\""), "{resp}");
        }
    }
    assert_eq!(o.count(), 0);
    // Garbage that is not HTTP: the connection is closed, the proxy keeps serving.
    let _ = raw(p.addr, b"\x16\x03\x01garbage\r\n\r\n");
    assert_eq!(
        get(&p, &format!("http://127.0.0.1:{}/", o.port()), &[]).0,
        200
    );
}

#[test]
fn sidecar_route_strips_prefix() {
    let o = Origin::start();
    let routes = format!("  - {{ path: /hub/*, upstream: \"http://127.0.0.1:{}/base\", strip_prefix: /hub, credential: gh }}\n", o.port());
    let p = start(&o, &routes);
    let rt = runtime();
    let resp = rt
        .block_on(
            reqwest::Client::new()
                .post(format!("{}/hub/crm/v3/objects?limit=2", p.url()))
                .body("hello")
                .send(),
        )
        .unwrap();
    assert_eq!(resp.status(), 200);
    let s = o.last();
    assert_eq!(s.uri, "/base/crm/v3/objects?limit=2");
    assert_eq!(
        s.header("authorization").as_deref(),
        Some("Bearer gh-secret-1")
    );
    assert_eq!(s.header("host").unwrap(), format!("127.0.0.1:{}", o.port()));
    assert_eq!(&s.body[..], b"hello");
    let resp = raw(
        p.addr,
        b"GET /elsewhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&resp), 404);
    assert!(header_of(&resp, "proxy-status").is_some());
}

#[test]
fn sidecar_https_upstream_verifies_and_speaks_h2() {
    let tls = test_tls();
    let o = Origin::start_tls(tls.server.clone());
    let routes = format!("  - {{ path: /api/*, upstream: \"https://localhost:{}\", strip_prefix: /api, credential: gh }}\n", o.port());
    let ca = tls.ca_pem.to_str().unwrap().to_string();
    let mut env = ENV.to_vec();
    env.push(("SSL_CERT_FILE", &ca));
    let p = Proxy::start_with("", &format!("{}routes:\n{routes}", creds()), &env);
    let resp = raw(
        p.addr,
        b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&resp), 200, "{resp}");
    let s = o.last();
    assert_eq!(
        s.version,
        http::Version::HTTP_2,
        "HTTP/2 to an origin that offers it"
    );
    assert_eq!(s.uri, "/v1/me");
    assert_eq!(
        s.header("authorization").as_deref(),
        Some("Bearer gh-secret-1")
    );

    // The same origin without its CA trusted: refused, never silently accepted.
    let untrusting = Proxy::start_with(
        "",
        &format!("{}routes:\n{routes}", creds()),
        &[("GH_TOKEN", "x"), ("SSL_CERT_FILE", "/dev/null")],
    );
    let before = o.count();
    let resp = raw(
        untrusting.addr,
        b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&resp), 502, "{resp}");
    assert!(
        header_of(&resp, "proxy-status").unwrap().contains("tls_"),
        "{resp}"
    );
    assert_eq!(o.count(), before);
}

#[test]
fn keep_alive_on_both_sides() {
    let o = Origin::start();
    let p = start(&o, "  - { host: \"127.0.0.1:PORT\", credential: gh }\n");
    let mut c = KeepAliveClient::new(p.addr);
    for i in 0..5 {
        let (status, _) = c.get(o.port(), &format!("/k{i}"));
        assert_eq!(status, 200);
    }
    assert_eq!(o.count(), 5);
    assert_eq!(
        o.connections(),
        1,
        "one pooled upstream connection for five requests"
    );
}

#[test]
fn bodies_pass_intact_chunked_and_expect_continue() {
    let o = Origin::start();
    let p = start(&o, "  - { host: \"127.0.0.1:PORT\", credential: gh }\n");
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let want = sha256_hex(&body);
    let file = p.dir.path().join("body.bin");
    std::fs::write(&file, &body).unwrap();
    let url = format!("http://127.0.0.1:{}/upload", o.port());
    for extra in [
        vec![],
        vec!["-H", "Transfer-Encoding: chunked"],
        vec!["-H", "Expect: 100-continue"],
        vec![
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Expect: 100-continue",
        ],
    ] {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "30", "-x", &p.url(), "--data-binary"])
            .arg(format!("@{}", file.display()))
            .args(&extra)
            .arg(&url)
            .output()
            .expect("curl is installed (.ci/setup)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&want),
            "{extra:?}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = o.last();
        assert_eq!(s.body.len(), body.len(), "{extra:?}");
        assert_eq!(
            s.header("authorization").as_deref(),
            Some("Bearer gh-secret-1")
        );
    }
}

#[test]
fn client_disconnect_mid_body_is_harmless() {
    let o = Origin::start();
    let mut p = start(&o, "  - { host: \"127.0.0.1:PORT\", credential: gh }\n");
    use std::io::Write;
    for _ in 0..20 {
        let mut s = std::net::TcpStream::connect(p.addr).unwrap();
        write!(s, "POST http://127.0.0.1:{0}/partial HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nContent-Length: 1000000\r\n\r\n", o.port()).unwrap();
        s.write_all(&[b'a'; 10_000]).unwrap();
        drop(s);
    }
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    write!(s, "POST http://127.0.0.1:{0}/partial HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", o.port()).unwrap();
    drop(s);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(p.is_running());
    assert_eq!(
        get(&p, &format!("http://127.0.0.1:{}/after", o.port()), &[]).0,
        200
    );
    assert!(
        o.seen()
            .iter()
            .all(|s| s.uri != "/partial" || s.body.len() < 1_000_000),
        "no truncated body presented as complete"
    );
}

#[test]
fn connect_tunnels_unmatched_and_denies_per_policy() {
    let o = Origin::start();
    let p = start(&o, "  - { host: api.github.com, credential: gh }\n");
    use std::io::{Read, Write};
    let mut s = connect_tunnel(p.addr, &format!("127.0.0.1:{}", o.port()));
    write!(s, "GET /through-tunnel HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer own\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(o.last().uri, "/through-tunnel");
    assert_eq!(
        o.last().header("authorization").as_deref(),
        Some("Bearer own")
    );

    let bad = raw(p.addr, b"CONNECT no-port-here HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&bad), 400, "{bad}");
    let deny = Proxy::start_with(
        "unmatched: deny",
        &format!(
            "{}routes:\n  - {{ host: api.github.com, credential: gh }}\n",
            creds()
        ),
        ENV,
    );
    let resp = raw(
        deny.addr,
        format!(
            "CONNECT 127.0.0.1:{0} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n\r\n",
            o.port()
        )
        .as_bytes(),
    );
    assert_eq!(status_of(&resp), 403, "{resp}");
    assert!(header_of(&resp, "proxy-status").is_some());
}

#[test]
fn admin_endpoints() {
    let o = Origin::start();
    let p = start(
        &o,
        "  - { name: gh-route, host: \"127.0.0.1:PORT\", credential: gh }\n",
    );
    assert_eq!(http_get(p.admin, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(p.admin, "/readyz").unwrap().0, 200);
    for _ in 0..3 {
        get(&p, &format!("http://127.0.0.1:{}/", o.port()), &[]);
    }
    get(
        &p,
        &format!("http://127.0.0.1:{}/status/404", o.port()),
        &[],
    );
    let m = p.metrics_with(&[
        "credproxy_requests_total{credential=\"gh\",route=\"gh-route\",status=\"200\"} 3",
        "credproxy_requests_total{credential=\"gh\",route=\"gh-route\",status=\"404\"} 1",
    ]);
    assert!(
        m.contains(
            "credproxy_requests_total{credential=\"gh\",route=\"gh-route\",status=\"200\"} 3"
        ),
        "{m}"
    );
    assert!(
        m.contains(
            "credproxy_requests_total{credential=\"gh\",route=\"gh-route\",status=\"404\"} 1"
        ),
        "{m}"
    );
    assert!(
        m.contains("credproxy_upstream_latency_seconds_count{route=\"gh-route\"} 4"),
        "{m}"
    );
    let (status, creds) = http_get(p.admin, "/credentials").unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&creds).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[0]["name"], "gh");
    assert_eq!(v[0]["status"], "ok");
    for secret in ["gh-secret-1", "erp-pass-2", "mc-key-3"] {
        assert!(!creds.contains(secret) && !m.contains(secret));
    }
    assert_eq!(http_get(p.admin, "/nope").unwrap().0, 404);
}

#[test]
fn reload_keeps_old_config_on_error() {
    let o = Origin::start();
    let p = start(&o, "  - { host: \"127.0.0.1:PORT\", credential: gh }\n");
    let path = p.config_path();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        good.replace("credential: gh }", "credential: nope }"),
    )
    .unwrap();
    let resp = admin_post(p.admin, "/reload");
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert!(resp.contains("unknown credential `nope`"), "{resp}");
    get(&p, &format!("http://127.0.0.1:{}/", o.port()), &[]);
    assert_eq!(
        o.last().header("authorization").as_deref(),
        Some("Bearer gh-secret-1")
    );
    std::fs::write(&path, good.replace("credential: gh }", "credential: mc }")).unwrap();
    let resp = admin_post(p.admin, "/reload");
    assert_eq!(status_of(&resp), 200, "{resp}");
    get(&p, &format!("http://127.0.0.1:{}/", o.port()), &[]);
    assert_eq!(o.last().header("x-api-key").as_deref(), Some("mc-key-3"));
}

#[test]
fn no_secret_in_logs_even_at_trace() {
    let o = Origin::start();
    let body = format!(
        "{}routes:\n  - {{ host: \"127.0.0.1:{1}\", credentials: [gh, erp, mc] }}\n  - {{ path: /s/*, upstream: \"http://127.0.0.1:{1}\", credential: gh }}\n",
        creds(),
        o.port()
    );
    let mut env = ENV.to_vec();
    env.push(("RUST_LOG", "trace"));
    let p = Proxy::start_with("", &body, &env);
    let url = format!("http://127.0.0.1:{}/", o.port());
    for c in ["gh", "erp", "mc"] {
        assert_eq!(get(&p, &url, &[("X-Credproxy-Credential", c)]).0, 200);
    }
    let _ = raw(
        p.addr,
        b"GET /s/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = p.log_text();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logging is on"
    );
    // The secrets, and the Basic header that encodes one.
    for secret in [
        "gh-secret-1",
        "erp-pass-2",
        "mc-key-3",
        "ZXJwOmVycC1wYXNzLTI=",
    ] {
        assert!(!log.contains(secret), "{secret} in log");
    }
}

#[test]
fn path_scoped_route_refuses_dot_segments() {
    let o = Origin::start();
    let p = start(
        &o,
        "  - { host: \"127.0.0.1:PORT\", path: /gh/*, credential: gh }\n",
    );
    for path in ["/gh/../admin", "/gh/%2e%2e/admin", "/gh/..%2fadmin"] {
        let req = format!("GET http://127.0.0.1:{0}{path} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nConnection: close\r\n\r\n", o.port());
        let resp = raw(p.addr, req.as_bytes());
        assert_eq!(status_of(&resp), 400, "{path}: {resp}");
        assert!(header_of(&resp, "proxy-status").is_some());
    }
    assert_eq!(
        o.count(),
        0,
        "no request, and so no credential, left the proxy"
    );
}

#[test]
fn malformed_connect_head_gets_400_json() {
    let o = Origin::start();
    let p = start(&o, "  - { host: api.github.com, credential: gh }\n");
    let resp = raw(
        p.addr,
        b"CONNECT u:p@example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert!(header_of(&resp, "proxy-status")
        .unwrap()
        .contains("http_request_error"));
}

#[test]
fn refresh_endpoint() {
    let o = Origin::start();
    let p = start(&o, "  - { host: api.github.com, credential: gh }\n");
    let ok = admin_post(p.admin, "/credentials/gh/refresh");
    assert_eq!(status_of(&ok), 200, "{ok}");
    let missing = admin_post(p.admin, "/credentials/nope/refresh");
    assert_eq!(status_of(&missing), 404, "{missing}");
}
