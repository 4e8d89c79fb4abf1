//! Security properties through the real binary: the egress guard, proxy clients, and
//! credproxy's own responses never carrying a secret.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

const TOKEN: &str = "sec-token-7f3a9";

fn get(p: &Proxy, target: &str, host: &str) -> String {
    raw(
        p.addr,
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

#[track_caller]
fn assert_egress_denied(resp: &str) {
    assert_eq!(status_of(resp), 403, "{resp}");
    assert!(
        header_of(resp, "proxy-status")
            .unwrap()
            .contains("error=destination_ip_prohibited"),
        "{resp}"
    );
    assert!(body_of(resp).contains("egress_denied"), "{resp}");
    assert!(!resp.contains(TOKEN));
}

#[test]
fn egress_guard_refuses_private_destinations_by_default() {
    let o = Origin::start();
    let port = o.port();
    let body = format!(
        "credentials:\n  t: {{ type: bearer, token: \"{TOKEN}\" }}\nroutes:\n  - {{ host: \"127.0.0.1:{port}\", credential: t }}\n  - {{ path: /side/*, upstream: \"http://127.0.0.1:{port}\", credential: t }}\n"
    );
    let p = Proxy::start_with(
        "egress: { deny_private: true }\ndns: { overrides: { rebind.test: 127.0.0.1, meta.test: 169.254.169.254 } }",
        &body,
        &[],
    );
    let cases = [
        (
            format!("http://127.0.0.1:{port}/routed"),
            format!("127.0.0.1:{port}"),
        ),
        (
            format!("http://localhost:{port}/unmatched"),
            format!("localhost:{port}"),
        ),
        (
            format!("http://rebind.test:{port}/x"),
            format!("rebind.test:{port}"),
        ),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            "169.254.169.254".into(),
        ),
        (
            "http://meta.test/latest/meta-data/".into(),
            "meta.test".into(),
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            format!("[::ffff:127.0.0.1]:{port}"),
        ),
        (format!("http://[::1]:{port}/"), format!("[::1]:{port}")),
        (format!("http://0.0.0.0:{port}/"), format!("0.0.0.0:{port}")),
        ("http://10.0.0.1/".into(), "10.0.0.1".into()),
        ("http://192.168.0.1/".into(), "192.168.0.1".into()),
        ("http://100.64.0.1/".into(), "100.64.0.1".into()),
        ("http://[fd00::1]/".into(), "[fd00::1]".into()),
        ("http://[fe80::1]/".into(), "[fe80::1]".into()),
    ];
    for (target, host) in &cases {
        assert_egress_denied(&get(&p, target, host));
    }
    // Sidecar upstreams and CONNECT tunnels too.
    assert_egress_denied(&get(&p, "/side/x", "x"));
    let resp = raw(
        p.addr,
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    );
    assert_egress_denied(&resp);
    let resp = raw(
        p.addr,
        b"CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: 169.254.169.254:80\r\n\r\n",
    );
    assert_egress_denied(&resp);
    assert_eq!(o.count(), 0, "nothing reached the private origin");
    assert_eq!(o.connections(), 0);
}

#[test]
fn egress_allow_exempts_cidrs_and_hosts() {
    let o = Origin::start();
    let port = o.port();
    let body = format!(
        "credentials:\n  t: {{ type: bearer, token: \"{TOKEN}\" }}\nroutes:\n  - {{ host: \"localhost:{port}\", credential: t }}\n"
    );
    // By host name: any address it resolves to.
    let p = Proxy::start_with("egress: { allow: [localhost] }", &body, &[]);
    let resp = get(
        &p,
        &format!("http://localhost:{port}/a"),
        &format!("localhost:{port}"),
    );
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(
        o.last().header("authorization").unwrap(),
        format!("Bearer {TOKEN}")
    );
    // The same address under another name is still refused.
    assert_egress_denied(&get(
        &p,
        &format!("http://127.0.0.1:{port}/b"),
        &format!("127.0.0.1:{port}"),
    ));
    // By CIDR: only that range.
    let p = Proxy::start_with("egress: { allow: [127.0.0.1/32] }", &body, &[]);
    let resp = get(
        &p,
        &format!("http://127.0.0.1:{port}/c"),
        &format!("127.0.0.1:{port}"),
    );
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_egress_denied(&get(&p, "http://127.0.0.2:1/", "127.0.0.2:1"));
    // Off: a loud startup warning.
    let p = Proxy::start_with("egress: { deny_private: false }", &body, &[]);
    assert!(p.log_text().contains("deny_private is false"));
    let resp = get(
        &p,
        &format!("http://127.0.0.1:{port}/d"),
        &format!("127.0.0.1:{port}"),
    );
    assert_eq!(status_of(&resp), 200, "{resp}");
}

#[test]
fn logs_are_at_trace_and_scanned_for_every_configured_secret() {
    let o = Origin::start();
    let body = format!(
        "credentials:\n  t: {{ type: bearer, token: \"{TOKEN}\" }}\n  b: {{ type: basic, username: u, password: \"${{SEC_PASSWORD}}\" }}\n  h: {{ type: headers, headers: {{ X-Api-Key: \"hdr-secret-991\" }} }}\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credentials: [t, b, h] }}\n",
        o.port()
    );
    let p = Proxy::start_with("", &body, &[("SEC_PASSWORD", "pw-from-env-123")]);
    for c in ["t", "b", "h"] {
        let resp = raw(
            p.addr,
            format!("GET http://127.0.0.1:{0}/{c} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nX-Credproxy-Credential: {c}\r\nConnection: close\r\n\r\n", o.port()).as_bytes(),
        );
        assert_eq!(status_of(&resp), 200, "{resp}");
    }
    let secrets = registered_secrets();
    for s in [TOKEN, "pw-from-env-123", "hdr-secret-991"] {
        assert!(secrets.iter().any(|x| x == s), "{s} not registered");
    }
    // The scan is not vacuous: the log is at trace level, and a leak would be caught.
    let log = p.log_text();
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "{log}");
    let caught = std::panic::catch_unwind(|| assert_no_secret("text", &format!("x {TOKEN} y")));
    assert!(caught.is_err());
    // The origin received them (so they did pass through the process that was logging).
    assert_eq!(
        o.seen()[2].header("x-api-key").as_deref(),
        Some("hdr-secret-991")
    );
}

#[test]
fn a_token_endpoint_quoting_the_client_secret_does_not_leak_it() {
    const CLIENT_SECRET: &str = "cs-reflected-4411";
    let ts = TokenServer::start(TokenReply::raw(
        401,
        &format!("{{\"error\":\"invalid_client\",\"error_description\":\"bad secret {CLIENT_SECRET} for client app\"}}"),
        "application/json",
    ));
    let o = Origin::start();
    let body = format!(
        "credentials:\n  api:\n    type: oauth2_client_credentials\n    token_url: \"{}\"\n    client_id: app\n    client_secret: \"{CLIENT_SECRET}\"\n    auth_method: post_body\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: api }}\n",
        ts.url("/token"),
        o.port()
    );
    let p = Proxy::start_with("", &body, &[]);
    // `raw` itself asserts no registered secret is in the response.
    let resp = get(
        &p,
        &format!("http://127.0.0.1:{}/x", o.port()),
        &format!("127.0.0.1:{}", o.port()),
    );
    assert_eq!(status_of(&resp), 502, "{resp}");
    assert!(
        body_of(&resp).contains("bad secret *** for client app"),
        "{resp}"
    );
    let (_, creds) = http_get(p.admin, "/credentials").unwrap();
    assert!(creds.contains("***"), "{creds}");
    assert_no_secret("/credentials", &creds);
    assert!(ts.requests()[0]
        .body
        .windows(CLIENT_SECRET.len())
        .any(|w| w == CLIENT_SECRET.as_bytes()));
}

#[test]
fn slowloris_connections_are_capped_and_timed_out_while_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = Origin::start();
    let body = format!(
        "credentials:\n  t: {{ type: bearer, token: \"{TOKEN}\" }}\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: t }}\n",
        o.port()
    );
    let p = Proxy::start_with("timeouts: { header: 2s }", &body, &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // 500 half-open connections from 127.0.0.2, each with part of a request head.
    let conns = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..500 {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut c = s.connect(p.addr).await.unwrap();
            c.write_all(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .await
                .unwrap();
            v.push(c);
        }
        v
    });
    // Meanwhile a normal client is served.
    let resp = get(
        &p,
        &format!("http://127.0.0.1:{}/normal", o.port()),
        &format!("127.0.0.1:{}", o.port()),
    );
    assert_eq!(status_of(&resp), 200, "{resp}");
    // Every slow connection ends: 429 over the per-client cap, 408 when the head's time is up.
    let answers = rt.block_on(async {
        let mut tasks = Vec::new();
        for mut c in conns {
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                let read = tokio::time::timeout(
                    std::time::Duration::from_secs(30),
                    c.read_to_end(&mut out),
                )
                .await;
                assert!(read.is_ok(), "the proxy closed the connection");
                status_of(&String::from_utf8_lossy(&out))
            }));
        }
        let mut v = Vec::new();
        for t in tasks {
            v.push(t.await.unwrap());
        }
        v
    });
    let n = |code| answers.iter().filter(|&&s| s == code).count();
    assert_eq!((n(429), n(408)), (244, 256), "{answers:?}");
    let resp = get(
        &p,
        &format!("http://127.0.0.1:{}/after", o.port()),
        &format!("127.0.0.1:{}", o.port()),
    );
    assert_eq!(status_of(&resp), 200, "{resp}");
}

#[test]
fn oversized_heads_and_too_many_headers_get_431() {
    let o = Origin::start();
    let body = format!(
        "credentials:\n  t: {{ type: bearer, token: \"{TOKEN}\" }}\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: t }}\n",
        o.port()
    );
    let p = Proxy::start_with(
        "limits: { max_header_bytes: 8KiB, max_headers: 20 }",
        &body,
        &[],
    );
    let target = format!("http://127.0.0.1:{}/", o.port());
    let big = format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(9000)
    );
    let resp = raw(p.addr, big.as_bytes());
    assert_eq!(status_of(&resp), 431, "{resp}");
    let many: String = (0..25).map(|i| format!("X-{i}: v\r\n")).collect();
    let resp = raw(
        p.addr,
        format!(
            "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{many}Connection: close\r\n\r\n",
            o.port()
        )
        .as_bytes(),
    );
    assert_eq!(status_of(&resp), 431, "{resp}");
    assert!(body_of(&resp).contains("max_headers"), "{resp}");
    assert_eq!(o.count(), 0);
    let resp = get(&p, &target, &format!("127.0.0.1:{}", o.port()));
    assert_eq!(status_of(&resp), 200, "{resp}");
}

#[test]
fn per_client_connection_cap() {
    let o = Origin::start();
    let body = format!(
        "credentials:\n  t: {{ type: bearer, token: \"{TOKEN}\" }}\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: t }}\n",
        o.port()
    );
    let p = Proxy::start_with("limits: { max_connections_per_client: 3 }", &body, &[]);
    let held: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(p.addr).unwrap())
        .collect();
    // The proxy counts a connection when its task starts: wait until all three are.
    p.metrics_with(&["credproxy_client_connections 3"]);
    let until = |want: u16, target: &str, host: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let resp = get(&p, target, host);
            if status_of(&resp) == want || std::time::Instant::now() > deadline {
                return resp;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let resp = until(429, "http://127.0.0.1:1/", "127.0.0.1:1");
    assert_eq!(status_of(&resp), 429, "{resp}");
    assert!(body_of(&resp).contains("too_many_connections"), "{resp}");
    drop(held);
    let resp = until(
        200,
        &format!("http://127.0.0.1:{}/", o.port()),
        &format!("127.0.0.1:{}", o.port()),
    );
    assert_eq!(status_of(&resp), 200, "{resp}");
}

#[test]
fn proxy_clients_are_authenticated_and_limited_to_their_credentials() {
    use base64::Engine;
    let o = Origin::start();
    let port = o.port();
    let body = format!(
        "clients:\n  - {{ name: billing, secret: \"${{BILLING_SECRET}}\", credentials: [t] }}\n  - {{ name: ops, secret: \"${{OPS_SECRET}}\", credentials: [t, u] }}\ncredentials:\n  t: {{ type: bearer, token: \"{TOKEN}\" }}\n  u: {{ type: headers, headers: {{ X-Api-Key: \"${{U_KEY}}\" }} }}\nroutes:\n  - {{ host: \"127.0.0.1:{port}\", credentials: [t, u] }}\n  - {{ host: \"localhost:{port}\", credential: u }}\n  - {{ path: /side/*, upstream: \"http://127.0.0.1:{port}\", credential: t }}\n"
    );
    let p = Proxy::start_with(
        "",
        &body,
        &[
            ("BILLING_SECRET", "billing-pw-771"),
            ("OPS_SECRET", "ops-pw-992"),
            ("U_KEY", "u-key-secret-55"),
        ],
    );
    let basic = |u: &str, pw: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{pw}"))
        )
    };
    let req = |target: &str, host: &str, extra: &str| {
        raw(
            p.addr,
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    let routed = format!("http://127.0.0.1:{port}/x");
    let host = format!("127.0.0.1:{port}");
    let mut counts = std::collections::BTreeMap::new();
    let mut expect = |resp: String, status: u16, what: &str| {
        assert_eq!(status_of(&resp), status, "{what}: {resp}");
        *counts.entry(status).or_insert(0) += 1;
        resp
    };
    // Missing, malformed, wrong: 407 with Proxy-Authenticate; nothing reaches the origin.
    for (extra, what) in [
        (String::new(), "no Proxy-Authorization"),
        ("Proxy-Authorization: Basic\r\n".into(), "empty Basic"),
        ("Proxy-Authorization: Basic !!!\r\n".into(), "bad base64"),
        (
            format!("Proxy-Authorization: {}\r\n", basic("billing", "wrong")),
            "wrong secret",
        ),
        (
            format!(
                "Proxy-Authorization: {}\r\n",
                basic("ops", "billing-pw-771")
            ),
            "another client's secret",
        ),
        (
            format!(
                "Proxy-Authorization: {}\r\n",
                basic("nobody", "billing-pw-771")
            ),
            "unknown name",
        ),
        (
            "Proxy-Authorization: Bearer wrong\r\n".into(),
            "wrong bearer",
        ),
        ("Proxy-Authorization: Digest x\r\n".into(), "unknown scheme"),
    ] {
        let resp = expect(req(&routed, &host, &extra), 407, what);
        assert!(header_of(&resp, "proxy-authenticate")
            .unwrap()
            .contains("Basic"));
    }
    expect(req("/side/x", "x", ""), 407, "sidecar without auth");
    assert_eq!(o.count(), 0);
    // Right: Basic and Bearer; the credential is injected, Proxy-Authorization is not forwarded.
    let billing = format!(
        "Proxy-Authorization: {}\r\n",
        basic("billing", "billing-pw-771")
    );
    expect(req(&routed, &host, &billing), 200, "billing, Basic");
    assert_eq!(
        o.last().header("authorization").unwrap(),
        format!("Bearer {TOKEN}")
    );
    assert!(o.last().header("proxy-authorization").is_none());
    expect(
        req(&routed, &host, "Proxy-Authorization: Bearer ops-pw-992\r\n"),
        200,
        "ops, Bearer",
    );
    expect(req("/side/y", "x", &billing), 200, "sidecar with auth");
    // A client may not use, or select, a credential it does not list.
    let pick_u = format!("{billing}X-Credproxy-Credential: u\r\n");
    let resp = expect(req(&routed, &host, &pick_u), 403, "billing picks u");
    assert!(body_of(&resp).contains("credential_forbidden"), "{resp}");
    expect(
        req(
            &format!("http://localhost:{port}/"),
            &format!("localhost:{port}"),
            &billing,
        ),
        403,
        "billing on a route whose only credential is u",
    );
    let ops_u = "Proxy-Authorization: Bearer ops-pw-992\r\nX-Credproxy-Credential: u\r\n";
    expect(req(&routed, &host, ops_u), 200, "ops picks u");
    assert_eq!(
        o.last().header("x-api-key").as_deref(),
        Some("u-key-secret-55")
    );
    eprintln!("proxy client cases by status: {counts:?}");
    // curl with credentials in the proxy URL.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "-x"])
        .arg(format!("http://billing:billing-pw-771@{}", p.addr))
        .arg(&routed)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn non_loopback_listener_without_clients_is_called_insecure() {
    let d = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let conf = d.path().join("c.yaml");
    std::fs::write(
        &conf,
        format!("proxy:\n  listen: 0.0.0.0:{port}\n  admin: 127.0.0.1:{admin}\n"),
    )
    .unwrap();
    let log = d.path().join("log");
    let mut child = std::process::Command::new(bin())
        .args(["run", "-c"])
        .arg(&conf)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !matches!(http_get(admin, "/readyz"), Ok((200, _)))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("ERROR") && text.contains("INSECURE"),
        "{text}"
    );
    // The default listen address is loopback.
    let c = credproxy::config::load_str("", std::path::Path::new("x.yaml"), &|_| None).unwrap();
    assert!(c.proxy.listen.ip().is_loopback());
}

#[test]
fn idle_keepalive_and_stalled_bodies_are_cut_off() {
    use std::io::{Read, Write};
    let o = Origin::start();
    let body = format!(
        "credentials:\n  t: {{ type: bearer, token: \"{TOKEN}\" }}\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: t }}\n",
        o.port()
    );
    let p = Proxy::start_with("timeouts: { client_idle: 1s, read: 2s }", &body, &[]);
    let head = format!(
        "GET http://127.0.0.1:{0}/k HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n\r\n",
        o.port()
    );
    // A kept-alive connection left idle is closed after client_idle.
    let mut c = std::net::TcpStream::connect(p.addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    c.write_all(head.as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = c.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)
        .expect("closed by the proxy, not by our 20 s read timeout");
    // A body that stops arriving is given up on.
    let mut c = std::net::TcpStream::connect(p.addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        c,
        "POST http://127.0.0.1:{0}/b HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nContent-Length: 1000\r\n\r\npartial",
        o.port()
    )
    .unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out)
        .expect("closed by the proxy, not by our 20 s read timeout");
    let resp = String::from_utf8_lossy(&out);
    assert!(!resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[test]
fn silent_tunnels_are_closed_after_the_idle_timeout() {
    use std::io::{Read, Write};
    let o = Origin::start();
    let p = Proxy::start_with("timeouts: { idle: 1s }", "", &[]);
    let authority = format!("127.0.0.1:{}", o.port());
    let mut c = connect_tunnel(p.addr, &authority);
    // Traffic keeps it open; silence closes it.
    write!(c, "GET /t HTTP/1.1\r\nHost: {authority}\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)
        .expect("closed by the proxy, not by our 20 s read timeout");
}

#[test]
fn total_timeout_bounds_a_whole_request() {
    let slow = Origin::start_with(std::sync::Arc::new(|_s: &Seen| {
        let mut r = TokenReply::raw(200, "late", "text/plain");
        r.delay = std::time::Duration::from_secs(4);
        r
    }));
    let body = format!(
        "credentials:\n  t: {{ type: bearer, token: \"{TOKEN}\" }}\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: t }}\n",
        slow.port()
    );
    let p = Proxy::start_with("timeouts: { total: 1s, read: 30s }", &body, &[]);
    let resp = get(
        &p,
        &format!("http://127.0.0.1:{}/slow", slow.port()),
        &format!("127.0.0.1:{}", slow.port()),
    );
    assert_eq!(status_of(&resp), 504, "{resp}");
    assert!(
        header_of(&resp, "proxy-status")
            .unwrap()
            .contains("timeout"),
        "{resp}"
    );
}
