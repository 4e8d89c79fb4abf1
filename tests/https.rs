//! HTTPS through HTTPS_PROXY: CONNECT interception with the local CA, as real clients (curl,
//! Python requests, Node undici, reqwest) use it, and the plain tunnel for unmatched hosts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "gh-secret-https";

/// An HTTPS origin with a route, another without, and credproxy with a fresh CA.
struct Setup {
    origin: Origin,
    other: Origin,
    tls: TlsFiles,
    ca_dir: tempfile::TempDir,
    proxy: Proxy,
}

impl Setup {
    fn ca_pem(&self) -> PathBuf {
        self.ca_dir.path().join("ca/ca.pem")
    }

    /// credproxy's CA plus the origins' CA: clients trust intercepted and tunnelled hosts.
    fn bundle(&self) -> PathBuf {
        let b = self.ca_dir.path().join("bundle.pem");
        let mut text = std::fs::read_to_string(self.ca_pem()).unwrap();
        text.push_str(&std::fs::read_to_string(&self.tls.ca_pem).unwrap());
        std::fs::write(&b, text).unwrap();
        b
    }

    fn routed_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.origin.port())
    }

    fn unrouted_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.other.port())
    }

    fn client(&self, trust_ours: bool) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .proxy(reqwest::Proxy::https(self.proxy.url()).unwrap())
            .tls_built_in_root_certs(false)
            .add_root_certificate(pem_cert(&self.tls.ca_pem));
        if trust_ours {
            b = b.add_root_certificate(pem_cert(&self.ca_pem()));
        }
        b.build().unwrap()
    }
}

fn pem_cert(p: &Path) -> reqwest::Certificate {
    reqwest::Certificate::from_pem(&std::fs::read(p).unwrap()).unwrap()
}

/// Runs a client command; asserts it succeeded and returns its stdout.
#[track_caller]
fn succeed(cmd: &mut Command) -> String {
    let out = cmd.output().expect("client installed (.ci/setup)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `credproxy ca init` through the binary; returns its stdout.
fn ca_init(dir: &Path) -> String {
    succeed(Command::new(bin()).args(["ca", "init", "--dir"]).arg(dir))
}

fn setup_with(proxy_extra: &str, upstream_ca: bool, extra_body: &str) -> Setup {
    setup_full(proxy_extra, upstream_ca, "", extra_body, &[])
}

/// `extra_credentials` go under `credentials:`, `extra_body` after the routes.
fn setup_full(
    proxy_extra: &str,
    upstream_ca: bool,
    extra_credentials: &str,
    extra_body: &str,
    env: &[(&str, &str)],
) -> Setup {
    let tls = test_tls();
    let origin = Origin::start_tls(tls.server.clone());
    let other = Origin::start_tls(tls.server.clone());
    let ca_dir = tempfile::tempdir().unwrap();
    ca_init(&ca_dir.path().join("ca"));
    let ca = ca_dir.path().join("ca");
    let mut extra = format!(
        "ca: {{ cert: {}, key: {} }}\n{proxy_extra}",
        ca.join("ca.pem").display(),
        ca.join("ca.key").display()
    );
    if upstream_ca {
        extra.push_str(&format!("upstream_ca: {}\n", tls.ca_pem.display()));
    }
    let body = format!(
        "credentials:\n  gh: {{ type: bearer, token: \"{TOKEN}\" }}\n{extra_credentials}routes:\n  - {{ name: api, host: \"localhost:{}\", credential: gh }}\n{extra_body}",
        origin.port()
    );
    let proxy = Proxy::start_with(&extra, &body, env);
    Setup {
        origin,
        other,
        tls,
        ca_dir,
        proxy,
    }
}

fn setup() -> Setup {
    setup_with("", true, "")
}

#[test]
fn ca_init_prints_trust_instructions_and_refuses_to_overwrite() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("ca");
    let out = ca_init(&dir);
    for needle in [
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "keytool",
        "update-ca-certificates",
        "--cacert",
        "proxy:",
    ] {
        assert!(out.contains(needle), "missing {needle}:\n{out}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = Command::new(bin())
        .args(["ca", "init", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(2),
        "refusing to overwrite is a usage error"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = Command::new(bin())
        .args(["ca", "init", "--force", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(forced.status.success());
}

#[test]
fn bad_ca_is_a_config_error_naming_the_key() {
    let d = tempfile::tempdir().unwrap();
    let conf = d.path().join("c.yaml");
    std::fs::write(
        &conf,
        "proxy:\n  ca: { cert: missing.pem, key: missing.key }\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check", "--offline", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proxy.ca.cert"), "{err}");
    assert!(err.contains("c.yaml:2: proxy.ca.cert"), "{err}");
    assert!(err.contains("ca init"), "{err}");
}

#[test]
fn rust_client_over_http2_and_http1_gets_the_credential_with_keepalive() {
    let s = setup();
    let rt = runtime();
    let h2 = s.client(true);
    for i in 0..5 {
        let resp = rt
            .block_on(
                h2.get(s.routed_url(&format!("/v1/me?i={i}")))
                    .header("authorization", "Bearer client-junk")
                    .send(),
            )
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.version(),
            reqwest::Version::HTTP_2,
            "ALPN h2 to credproxy"
        );
    }
    let seen = s.origin.seen();
    assert_eq!(seen.len(), 5);
    assert!(seen
        .iter()
        .all(|r| r.all("authorization") == vec![format!("Bearer {TOKEN}")]));
    assert_eq!(seen[4].uri, "/v1/me?i=4");
    let h1 = reqwest::Client::builder()
        .proxy(reqwest::Proxy::https(s.proxy.url()).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(pem_cert(&s.ca_pem()))
        .http1_only()
        .build()
        .unwrap();
    for _ in 0..3 {
        let resp = rt
            .block_on(
                h1.post(s.routed_url("/v1/items"))
                    .body("x".repeat(100_000))
                    .send(),
            )
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_11);
        assert_eq!(resp.status(), 200);
    }
    let last = s.origin.last();
    assert_eq!(last.body.len(), 100_000);
    assert_eq!(
        last.header("authorization").unwrap(),
        format!("Bearer {TOKEN}")
    );
    drop((h1, h2));
    let m = s
        .proxy
        .metrics_with(&["credential=\"gh\",route=\"api\",status=\"200\"} 8"]);
    assert!(
        m.contains("credproxy_requests_total{credential=\"(none)\",route=\"(connect: intercepted)\",status=\"200\"} 2"),
        "one CONNECT per client connection, reused for every request:\n{m}"
    );
    assert_eq!(metric(&m, "credproxy_tls_leaf_mints_total"), Some(1), "{m}");
    assert!(
        s.origin.connections() <= 2,
        "upstream connections are pooled: {}",
        s.origin.connections()
    );
}

fn curl(s: &Setup, args: &[&str]) -> (String, String) {
    let text = succeed(
        Command::new("curl")
            .args(["-sS", "--fail", "--proxy", &s.proxy.url(), "--cacert"])
            .arg(s.bundle())
            .args(["-w", "\n%{http_version}"])
            .args(args),
    );
    let (body, version) = text.rsplit_once('\n').unwrap();
    (body.to_string(), version.to_string())
}

#[test]
fn curl_http11_and_http2_through_https_proxy() {
    let s = setup();
    let (body, v) = curl(
        &s,
        &[
            "--http1.1",
            "-H",
            "Authorization: Bearer mine",
            &s.routed_url("/c1"),
        ],
    );
    assert_eq!(v, "1.1");
    assert!(body.contains("\"/c1\""), "{body}");
    assert_eq!(
        s.origin.last().all("authorization"),
        vec![format!("Bearer {TOKEN}")]
    );
    let (_, v) = curl(&s, &["--http2", &s.routed_url("/c2")]);
    assert_eq!(v, "2");
    assert_eq!(s.origin.last().uri, "/c2");
    assert_eq!(
        s.origin.last().all("authorization"),
        vec![format!("Bearer {TOKEN}")]
    );
    // An unmatched host is tunnelled: curl sees the origin's own certificate, nothing injected.
    succeed(
        Command::new("curl")
            .args(["-sS", "--fail", "--proxy", &s.proxy.url(), "--cacert"])
            .arg(&s.tls.ca_pem)
            .args(["-H", "Authorization: Bearer mine", &s.unrouted_url("/t")]),
    );
    assert_eq!(s.other.last().all("authorization"), vec!["Bearer mine"]);
    // HTTPS_PROXY from the environment, as workflows set it.
    succeed(
        Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(s.bundle())
            .arg(s.routed_url("/env"))
            .env("HTTPS_PROXY", s.proxy.url())
            .env_remove("NO_PROXY")
            .env_remove("no_proxy"),
    );
    assert_eq!(s.origin.last().uri, "/env");
}

#[test]
fn python_requests_through_https_proxy() {
    let s = setup();
    let script = r#"
import sys, requests
routed, unrouted = sys.argv[1], sys.argv[2]
s = requests.Session()
for i in range(3):
    r = s.post(routed + "?i=%d" % i, json={"n": i}, headers={"Authorization": "Bearer mine"})
    r.raise_for_status()
requests.get(unrouted, headers={"Authorization": "Bearer mine"}).raise_for_status()
print("ok")
"#;
    succeed(
        Command::new("python3")
            .args(["-c", script, &s.routed_url("/py"), &s.unrouted_url("/py")])
            .env("HTTPS_PROXY", s.proxy.url())
            .env("REQUESTS_CA_BUNDLE", s.bundle())
            .env_remove("NO_PROXY")
            .env_remove("no_proxy"),
    );
    let seen = s.origin.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|r| r.all("authorization") == vec![format!("Bearer {TOKEN}")]));
    assert_eq!(&seen[2].body[..], br#"{"n": 2}"#);
    assert_eq!(s.other.last().all("authorization"), vec!["Bearer mine"]);
}

#[test]
fn node_undici_proxy_agent_through_https_proxy() {
    let s = setup();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/fetch.js");
    for (url, expect) in [
        (s.routed_url("/node"), format!("Bearer {TOKEN}")),
        (s.unrouted_url("/node"), "Bearer mine".to_string()),
    ] {
        succeed(
            Command::new("node")
                .arg(&script)
                .args([&url, &s.proxy.url()])
                .env("NODE_EXTRA_CA_CERTS", s.bundle()),
        );
        let o = if url.contains("localhost") {
            &s.origin
        } else {
            &s.other
        };
        assert_eq!(o.last().all("authorization"), vec![expect]);
        assert_eq!(o.last().uri, "/node");
    }
}

#[test]
fn invalid_origin_certificate_is_502_tls_certificate_error() {
    // No upstream_ca and no system root for the origin's test CA.
    let s = setup_full("", false, "", "", &[("SSL_CERT_FILE", "/dev/null")]);
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::https(s.proxy.url()).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(pem_cert(&s.ca_pem()))
        .build()
        .unwrap();
    let resp = runtime()
        .block_on(client.get(s.routed_url("/x")).send())
        .unwrap();
    assert_eq!(resp.status(), 502);
    let ps = resp.headers()["proxy-status"].to_str().unwrap().to_string();
    assert!(ps.contains("error=tls_certificate_error"), "{ps}");
    let body = runtime().block_on(resp.text()).unwrap();
    assert!(body.contains("tls_certificate_error"), "{body}");
    assert!(!body.contains(TOKEN));
    assert_eq!(s.origin.count(), 0, "never sent to an unverified origin");
}

#[test]
fn client_rejecting_our_certificate_gets_a_hint_in_the_log() {
    let s = setup();
    let err = runtime()
        .block_on(s.client(false).get(s.routed_url("/x")).send())
        .unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !s
        .proxy
        .log_text()
        .contains("rejected credproxy's certificate")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = s.proxy.log_text();
    assert!(log.contains("rejected credproxy's certificate"), "{log}");
    assert!(log.contains("ca init"), "{log}");
    assert_eq!(s.origin.count(), 0);
}

/// CONNECT through the proxy and TLS-handshake with `server_name`, trusting `ca`.
async fn tunnel(
    proxy: std::net::SocketAddr,
    authority: &str,
    server_name: &str,
    ca: &Path,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut tcp = tokio::net::TcpStream::connect(proxy).await?;
    tcp.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if tcp.read(&mut b).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots(ca))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

/// The certificates in the PEM file `ca`, as trust roots.
fn roots(ca: &Path) -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

fn leaf_sans(tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<String> {
    let certs = tls.get_ref().1.peer_certificates().unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    x.subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|g| g.to_string())
        .collect()
}

#[test]
fn leaves_are_minted_once_per_host_with_the_right_san() {
    let s = setup_with(
        "",
        true,
        "  - { host: \"*.mint.test\", credential: gh }\n  - { host: \"127.0.0.1\", credential: gh }\n",
    );
    let rt = runtime();
    let ca = s.ca_pem();
    let sans = rt.block_on(async {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let ca = ca.clone();
                let addr = s.proxy.addr;
                tokio::spawn(async move {
                    let t = tunnel(addr, "a.mint.test:443", "a.mint.test", &ca)
                        .await
                        .unwrap();
                    leaf_sans(&t)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    assert!(
        sans.iter().all(|s| s == &["DNSName(a.mint.test)"]),
        "{sans:?}"
    );
    let m = s.proxy.metrics();
    assert_eq!(metric(&m, "credproxy_tls_leaf_mints_total"), Some(1), "{m}");
    // No SNI (an IP address): the CONNECT host names the leaf, as an IP SAN.
    let t = rt
        .block_on(tunnel(s.proxy.addr, "127.0.0.1:443", "127.0.0.1", &ca))
        .unwrap();
    assert_eq!(leaf_sans(&t), ["IPAddress(7f:00:00:01)"]);
    let m = s.proxy.metrics();
    assert_eq!(metric(&m, "credproxy_tls_leaf_mints_total"), Some(2), "{m}");
}

#[test]
fn sni_or_host_naming_another_host_is_refused() {
    let s = setup();
    let rt = runtime();
    let authority = format!("localhost:{}", s.origin.port());
    let r = rt.block_on(tunnel(s.proxy.addr, &authority, "evil.test", &s.ca_pem()));
    assert!(r.is_err(), "SNI evil.test inside a CONNECT to localhost");
    assert!(s
        .proxy
        .log_text()
        .contains("SNI does not match the CONNECT host"));
    let resp = rt.block_on(async {
        let mut t = tunnel(s.proxy.addr, &authority, "localhost", &s.ca_pem())
            .await
            .unwrap();
        t.write_all(b"GET /x HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = t.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    });
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert!(
        body_of(&resp).contains("does not match the CONNECT target"),
        "{resp}"
    );
    assert!(header_of(&resp, "proxy-status").is_some());
    assert_eq!(s.origin.count(), 0);
}

#[test]
fn client_that_never_handshakes_is_timed_out() {
    let s = setup_with("timeouts: { handshake: 1s }\n", true, "");
    let mut c = connect_tunnel(s.proxy.addr, &format!("localhost:{}", s.origin.port()));
    // Silence: the proxy gives up on the handshake and closes the connection.
    let mut rest = Vec::new();
    let n = c
        .read_to_end(&mut rest)
        .expect("closed by the proxy, not by our read timeout");
    assert_eq!(n, 0);
    // The proxy still serves.
    let (_, v) = curl(&s, &[&s.routed_url("/after")]);
    assert_eq!(v, "2");
}

#[test]
fn sidecar_with_https_upstream_uses_upstream_ca() {
    let tls = test_tls();
    let origin = Origin::start_tls(tls.server.clone());
    let body = format!(
        "credentials:\n  gh: {{ type: bearer, token: \"{TOKEN}\" }}\nroutes:\n  - {{ path: /gh/*, upstream: \"https://localhost:{}\", strip_prefix: /gh, credential: gh }}\n",
        origin.port()
    );
    let p = Proxy::start_with(
        &format!("upstream_ca: {}\n", tls.ca_pem.display()),
        &body,
        &[("SSL_CERT_FILE", "/dev/null")],
    );
    let resp = raw(
        p.addr,
        b"GET /gh/v1/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(origin.last().uri, "/v1/me");
    assert_eq!(
        origin.last().header("authorization").unwrap(),
        format!("Bearer {TOKEN}")
    );
}

#[test]
fn connect_authenticates_the_client_for_the_whole_tunnel() {
    let s = setup_with(
        "",
        true,
        "clients:\n  - { name: ci, secret: \"s3cret-tunnel\", credentials: [gh] }\n",
    );
    let authority = format!("localhost:{}", s.origin.port());
    let resp = raw(
        s.proxy.addr,
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
    );
    assert_eq!(status_of(&resp), 407, "{resp}");
    let client = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::https(s.proxy.url())
                .unwrap()
                .basic_auth("ci", "s3cret-tunnel"),
        )
        .tls_built_in_root_certs(false)
        .add_root_certificate(pem_cert(&s.ca_pem()))
        .build()
        .unwrap();
    let resp = runtime()
        .block_on(client.get(s.routed_url("/authed")).send())
        .unwrap();
    assert_eq!(resp.status(), 200);
    let last = s.origin.last();
    assert_eq!(
        last.header("authorization").unwrap(),
        format!("Bearer {TOKEN}")
    );
    assert!(last.header("proxy-authorization").is_none());
}

#[test]
fn without_a_ca_routed_hosts_are_tunnelled_with_a_warning() {
    let tls = test_tls();
    let origin = Origin::start_tls(tls.server.clone());
    let body = format!(
        "credentials:\n  gh: {{ type: bearer, token: \"{TOKEN}\" }}\nroutes:\n  - {{ host: \"localhost:{}\", credential: gh }}\n",
        origin.port()
    );
    let p = Proxy::start_with("", &body, &[]);
    assert!(
        p.log_text().contains("injection into HTTPS is off"),
        "{}",
        p.log_text()
    );
    succeed(
        Command::new("curl")
            .args(["-sS", "--fail", "--proxy", &p.url(), "--cacert"])
            .arg(&tls.ca_pem)
            .args(["-H", "Authorization: Bearer mine"])
            .arg(format!("https://localhost:{}/t", origin.port())),
    );
    assert_eq!(origin.last().all("authorization"), vec!["Bearer mine"]);
    let m = p.metrics_with(&["(connect: tunnelled, no CA)"]);
    assert!(m.contains("(connect: tunnelled, no CA)"), "{m}");
}

#[test]
fn plain_http_inside_a_connect_tunnel_is_served_too() {
    // `curl -p` (and ws:// clients) tunnel plain HTTP: not TLS, so not handshaken, but still
    // routed and injected, with the tunnel's host enforced.
    let plain = Origin::start();
    let s = setup_with(
        "",
        true,
        &format!(
            "  - {{ host: \"localhost:{}\", credential: gh }}\n",
            plain.port()
        ),
    );
    let url = format!("http://localhost:{}/p", plain.port());
    succeed(Command::new("curl").args(["-sS", "--fail", "-p", "-x", &s.proxy.url(), &url]));
    assert_eq!(plain.last().uri, "/p");
    assert_eq!(
        plain.last().all("authorization"),
        vec![format!("Bearer {TOKEN}")]
    );
    let mut c = connect_tunnel(s.proxy.addr, &format!("localhost:{}", plain.port()));
    write!(
        c,
        "GET / HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert_eq!(plain.count(), 1, "{resp}");
}

#[test]
fn bytes_sent_right_after_the_connect_head_are_kept() {
    // Clients that do not wait for the 200 (pipelining the request or the ClientHello).
    let plain = Origin::start();
    let unrouted = Origin::start();
    let s = setup_with(
        "",
        true,
        &format!(
            "  - {{ host: \"localhost:{}\", credential: gh }}\n",
            plain.port()
        ),
    );
    for (authority, o, auth) in [
        (
            format!("localhost:{}", plain.port()),
            &plain,
            format!("Bearer {TOKEN}"),
        ),
        (
            format!("127.0.0.1:{}", unrouted.port()),
            &unrouted,
            "Bearer mine".to_string(),
        ),
    ] {
        let resp = raw(
            s.proxy.addr,
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\nGET /piped HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer mine\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(
            resp.starts_with("HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.1 200"),
            "{resp}"
        );
        assert_eq!(o.last().uri, "/piped");
        assert_eq!(o.last().all("authorization"), vec![auth]);
    }
}

#[test]
fn http2_bodies_without_content_length_are_streamed_or_hashed_never_dropped() {
    let s = setup_full(
        "",
        true,
        "  s3:\n    type: aws_sigv4\n    access_key_id: AKIDEXAMPLE\n    secret_access_key: \"${SK}\"\n    service: s3\n    region: us-east-1\n",
        "  - { host: \"127.0.0.1\", credential: s3 }\n",
        &[("SK", "sk-secret-value-123")],
    );
    let (origin, p, bundle_path) = (&s.origin, &s.proxy, s.bundle());
    let upload = |url: &str| {
        let mut child = Command::new("curl")
            .args([
                "-sS",
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                "-T",
                "-",
                "--proxy",
                &p.url(),
                "--cacert",
            ])
            .arg(&bundle_path)
            .arg(url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // curl may stop reading once the proxy has answered (the 411 case).
        let _ = child.stdin.take().unwrap().write_all(&vec![b'z'; 200_000]);
        let out = child.wait_with_output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // A token route streams it through, whole.
    let out = upload(&format!("https://localhost:{}/up", origin.port()));
    assert_eq!(out, "200 2", "{out}");
    assert_eq!(origin.last().body.len(), 200_000);
    // A SigV4 route needs the whole body to hash: read up to max_body, hashed, sent whole
    // with its length (never signed over an empty body).
    let out = upload(&format!("https://127.0.0.1:{}/bucket/key", origin.port()));
    assert_eq!(out, "200 2", "{out}");
    let seen = origin.last();
    assert_eq!(seen.body.len(), 200_000);
    assert_eq!(seen.header("content-length").as_deref(), Some("200000"));
    assert_eq!(
        seen.header("x-amz-content-sha256"),
        Some(sha256_hex(&seen.body))
    );
}

#[test]
fn connect_after_another_request_on_a_connection_is_explained() {
    let o = Origin::start();
    let p = Proxy::start_with("", "", &[]);
    let a = format!("127.0.0.1:{}", o.port());
    let mut c = std::net::TcpStream::connect(p.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(c, "GET http://{a}/first HTTP/1.1\r\nHost: {a}\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 4096];
    let n = c.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    write!(c, "CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n").unwrap();
    let mut second = String::new();
    let _ = c.read_to_string(&mut second);
    assert!(second.starts_with("HTTP/1.1 400"), "{second}");
    assert!(second.contains("first request on a connection"), "{second}");
    assert!(header_of(&second, "proxy-status").is_some(), "{second}");
    assert_eq!(o.count(), 1);
}

/// Drives a rustls client over a blocking socket by hand, so the test decides which bytes go
/// out in one write.
fn pump(conn: &mut rustls::ClientConnection, sock: &mut std::net::TcpStream) {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    sock.write_all(&out).unwrap();
}

#[test]
fn request_in_the_same_segment_as_the_client_finished_is_served() {
    // A client that queues its request before the handshake ends sends TLS Finished and the
    // first application record in one segment: the server must read the request out of the
    // handshake's last read, not wait for more bytes (a busy machine coalesces them too).
    let s = setup();
    let authority = format!("localhost:{}", s.origin.port());
    let mut sock = connect_tunnel(s.proxy.addr, &authority);
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots(&s.ca_pem()))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let request =
        format!("GET /coalesced HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    // Held in rustls until the handshake completes, then written right after Finished.
    conn.writer().write_all(request.as_bytes()).unwrap();
    pump(&mut conn, &mut sock);
    while conn.is_handshaking() {
        conn.read_tls(&mut sock).unwrap();
        conn.process_new_packets().unwrap();
        if !conn.is_handshaking() {
            break;
        }
        pump(&mut conn, &mut sock);
    }
    pump(&mut conn, &mut sock); // Finished and the request: one write
    let mut resp = Vec::new();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let err = tls.read_to_end(&mut resp).err();
    let text = String::from_utf8_lossy(&resp);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{err:?} {text}\n{}",
        s.proxy.log_text()
    );
    assert_eq!(s.origin.last().uri, "/coalesced");
    assert_eq!(
        s.origin.last().all("authorization"),
        vec![format!("Bearer {TOKEN}")]
    );
}
