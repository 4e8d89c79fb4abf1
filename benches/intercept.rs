//! HTTPS interception cost, measured side by side in one run on loopback:
//! - requests/s over keep-alive HTTP/1.1 connections: direct HTTPS to the origin, through
//!   credproxy's intercepted CONNECT tunnel, and plain HTTP through credproxy (absolute-form);
//! - a first CONNECT + TLS handshake to a new host (leaf minted) vs a repeat one (leaf cached);
//! - keep-alive reuse: requests per CONNECT and per upstream connection.
//!
//! `cargo bench --bench intercept -- [seconds per round, default 3] [connections, default 8]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Origin {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

fn origin(rt: &tokio::runtime::Runtime, tls: Option<Arc<rustls::ServerConfig>>) -> Origin {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let c = connections.clone();
    rt.spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            c.fetch_add(1, Ordering::Relaxed);
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_r: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = b.serve_connection(TokioIo::new(s), svc).await;
                    }
                    Some(cfg) => {
                        if let Ok(t) = tokio_rustls::TlsAcceptor::from(cfg).accept(s).await {
                            let _ = b.serve_connection(TokioIo::new(t), svc).await;
                        }
                    }
                }
            });
        }
    });
    Origin { addr, connections }
}

/// A test CA and a `localhost` leaf for the origin.
fn origin_tls(dir: &std::path::Path) -> (Arc<rustls::ServerConfig>, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "bench origin CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let pem = dir.join("origin-ca.pem");
    std::fs::write(&pem, ca_cert.pem()).unwrap();
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], der)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(cfg), pem)
}

fn client_tls(ca_pem: &std::path::Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Full handshakes only: the numbers compare leaf minting, not session resumption.
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

async fn connect_through(proxy: SocketAddr, authority: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "CONNECT answer");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"));
    s
}

async fn tls(
    s: TcpStream,
    name: &str,
    cfg: &Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(name, s)
        .await
        .unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Path {
    DirectHttps,
    Intercepted,
    PlainProxy,
}

#[derive(Clone)]
struct Env {
    proxy: SocketAddr,
    tls_origin: SocketAddr,
    plain_origin: SocketAddr,
    origin_ca: Arc<rustls::ClientConfig>,
    our_ca: Arc<rustls::ClientConfig>,
}

/// One keep-alive connection sending GETs until `until`; returns the number answered.
async fn worker(env: Env, path: Path, until: Instant) -> usize {
    let tls_auth = format!("localhost:{}", env.tls_origin.port());
    let (mut send, uri): (
        hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        String,
    ) = match path {
        Path::DirectHttps => {
            let s = TcpStream::connect(env.tls_origin).await.unwrap();
            s.set_nodelay(true).unwrap();
            let t = tls(s, "localhost", &env.origin_ca).await;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(t))
                .await
                .unwrap();
            tokio::spawn(conn);
            (send, "/b".into())
        }
        Path::Intercepted => {
            let s = connect_through(env.proxy, &tls_auth).await;
            let t = tls(s, "localhost", &env.our_ca).await;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(t))
                .await
                .unwrap();
            tokio::spawn(conn);
            (send, "/b".into())
        }
        Path::PlainProxy => {
            let s = TcpStream::connect(env.proxy).await.unwrap();
            s.set_nodelay(true).unwrap();
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                .await
                .unwrap();
            tokio::spawn(conn);
            (send, format!("http://{}/b", env.plain_origin))
        }
    };
    let host = match path {
        Path::PlainProxy => env.plain_origin.to_string(),
        _ => tls_auth,
    };
    let mut n = 0;
    while Instant::now() < until {
        let req = Request::get(uri.as_str())
            .header("host", host.as_str())
            .body(Empty::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{path:?}");
        resp.into_body().collect().await.unwrap();
        n += 1;
    }
    n
}

async fn round(env: &Env, path: Path, conns: usize, secs: f64) -> (f64, usize) {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(worker(env.clone(), path, until)))
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    (total as f64 / start.elapsed().as_secs_f64(), total)
}

/// Median time of CONNECT + TLS handshake to `host`.
async fn handshake_ms(env: &Env, hosts: impl Iterator<Item = String>) -> f64 {
    let mut times = Vec::new();
    for h in hosts {
        let t = Instant::now();
        let s = connect_through(env.proxy, &format!("{h}:443")).await;
        let _tls = tls(s, &h, &env.our_ca).await;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn metric(admin: SocketAddr, name: &str) -> String {
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .filter(|l| l.starts_with(name))
        .collect::<Vec<_>>()
        .join("\n")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let secs: f64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let conns: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let origin_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (origin_cfg, origin_ca) = origin_tls(dir.path());
    let tls_origin = origin(&origin_rt, Some(origin_cfg));
    let plain_origin = origin(&origin_rt, None);
    let ca = credproxy::tls::ca::init(&dir.path().join("ca"), false).unwrap();
    let (port, admin) = (free_port(), free_port());
    let conf = dir.path().join("c.yaml");
    std::fs::write(
        &conf,
        format!(
            "proxy:\n  listen: 127.0.0.1:{port}\n  admin: 127.0.0.1:{admin}\n  threads: 1\n  egress: {{ allow: [127.0.0.0/8, \"::1/128\"] }}\n  ca: {{ cert: {}, key: {} }}\n  upstream_ca: {}\ncredentials:\n  b: {{ type: bearer, token: \"${{BENCH_TOKEN}}\" }}\nroutes:\n  - {{ host: \"localhost:{}\", credential: b }}\n  - {{ host: \"127.0.0.1:{}\", credential: b }}\n  - {{ host: \"*.bench.test\", credential: b }}\n",
            ca.cert.display(),
            ca.key.display(),
            origin_ca.display(),
            tls_origin.addr.port(),
            plain_origin.addr.port()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_credproxy"))
        .args(["run", "-c"])
        .arg(&conf)
        .env("BENCH_TOKEN", "bench")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    for _ in 0..200 {
        if std::net::TcpStream::connect(admin).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let env = Env {
        proxy,
        tls_origin: tls_origin.addr,
        plain_origin: plain_origin.addr,
        origin_ca: client_tls(&origin_ca),
        our_ca: client_tls(&ca.cert),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Warm: pools, DNS cache, the localhost leaf.
        for p in [Path::DirectHttps, Path::Intercepted, Path::PlainProxy] {
            round(&env, p, conns, 0.3).await;
        }
        let conns_before = tls_origin.connections.load(Ordering::Relaxed);
        let mut rates = [Vec::new(), Vec::new(), Vec::new()];
        let mut intercepted = 0;
        for _ in 0..3 {
            for (i, p) in [Path::DirectHttps, Path::Intercepted, Path::PlainProxy]
                .into_iter()
                .enumerate()
            {
                let (rate, n) = round(&env, p, conns, secs).await;
                rates[i].push(rate);
                if i == 1 {
                    intercepted += n;
                }
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (d, i, p) = (med(&mut rates[0]), med(&mut rates[1]), med(&mut rates[2]));
        println!("requests/s, {conns} keep-alive HTTP/1.1 connections, median of 3 interleaved rounds of {secs}s:");
        println!("  direct HTTPS to origin     {d:>9.0}");
        println!("  intercepted (CONNECT+TLS)  {i:>9.0}   {:.2}x direct HTTPS, {:.2}x plain-HTTP proxy", i / d, i / p);
        println!("  plain HTTP through proxy   {p:>9.0}");
        let direct_conns = 3 * conns;
        let upstream = tls_origin.connections.load(Ordering::Relaxed) - conns_before - direct_conns;
        println!(
            "keep-alive: {} intercepted tunnels (one CONNECT each) carried {intercepted} requests on {upstream} new upstream TLS connections (the pool was warm)",
            3 * conns
        );
        let new = handshake_ms(&env, (0..50).map(|n| format!("h{n}.bench.test"))).await;
        let repeat = handshake_ms(&env, (0..50).map(|_| "h0.bench.test".to_string())).await;
        println!("CONNECT + TLS handshake, median of 50: new host (leaf minted) {new:.2} ms, repeat (leaf cached) {repeat:.2} ms, ratio {:.2}", new / repeat);
    });
    println!(
        "{}",
        metric(admin, "credproxy_requests_total{route=\"(connect")
    );
    println!("{}", metric(admin, "credproxy_tls_leaf_mints_total"));
    let _ = child.kill();
    let _ = child.wait();
}
