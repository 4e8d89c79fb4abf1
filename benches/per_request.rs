//! What one proxied request costs in the proxy's own process, counted rather than timed so
//! that a noisy machine does not move it: heap allocations and CPU time per request through
//! credproxy (static bearer, cached OAuth... whatever route is named) and through a bare
//! pingora proxy adding one header, side by side in one run.
//!
//! Each proxy runs in a child process of this bench with a counting global allocator, beside
//! a blocking origin and a blocking client that allocate nothing per request, so what the
//! counters move by is the proxy's. CPU time is the whole process's (client and origin
//! included, the same in both), from getrusage.
//!
//! `cargo bench --bench per_request -- [requests, default 20000] [connections, default 4]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../examples/bare_pingora.rs"]
#[allow(dead_code)]
mod bare;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const BODY: usize = 1024;

/// An origin answering each request head with a 1 KiB body, one thread per connection.
fn origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let resp = response();
        for s in l.incoming().flatten() {
            let _ = s.set_nodelay(true);
            std::thread::spawn(move || serve(s, resp));
        }
    });
    addr
}

/// A token endpoint: every request gets one bearer token valid for an hour (the bench's
/// requests then use the cached token).
fn token_endpoint() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let json =
            r#"{"access_token":"bench-oauth-token-0001","token_type":"Bearer","expires_in":3600}"#;
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        );
        let resp: &'static [u8] = resp.into_bytes().leak();
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s, resp));
        }
    });
    addr
}

/// An origin like [`origin`] behind TLS (HTTP/1.1) with a self-signed certificate for
/// 127.0.0.1; returns its address and the certificate's PEM file.
fn origin_tls(dir: &std::path::Path) -> (SocketAddr, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = dir.join("origin.pem");
    std::fs::write(&pem, cert.pem()).unwrap();
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let cfg = std::sync::Arc::new(cfg);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let resp = response();
        for s in l.incoming().flatten() {
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let conn = rustls::ServerConnection::new(cfg).unwrap();
                serve(rustls::StreamOwned::new(conn, s), resp);
            });
        }
    });
    (addr, pem)
}

fn response() -> &'static [u8] {
    let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
    resp.extend(std::iter::repeat_n(b'x', BODY));
    resp.leak()
}

fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Answers every `\r\n\r\n` (bodiless requests) with `resp`.
fn serve<S: Read + Write>(mut s: S, resp: &[u8]) {
    let (mut buf, mut tail) = ([0u8; 16384], 0u32);
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            return;
        }
        for &b in &buf[..n] {
            tail = (tail << 8) | u32::from(b);
            if tail == 0x0d0a_0d0a && s.write_all(resp).is_err() {
                return;
            }
        }
    }
}

/// Sends `n` requests on one connection, each read to the end of its 1 KiB body.
fn client(proxy: SocketAddr, req: &[u8], n: usize) {
    let s = TcpStream::connect(proxy).unwrap();
    s.set_nodelay(true).unwrap();
    exchange(s, req, n);
}

/// Like [`client`] over HTTPS to `origin` with `tls` (its roots): through `proxy`'s CONNECT
/// tunnel, or straight to the origin without one.
fn client_tls(
    proxy: Option<SocketAddr>,
    origin: SocketAddr,
    tls: &std::sync::Arc<rustls::ClientConfig>,
    req: &[u8],
    n: usize,
) {
    let mut s = TcpStream::connect(proxy.unwrap_or(origin)).unwrap();
    s.set_nodelay(true).unwrap();
    if proxy.is_some() {
        write!(s, "CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut b).unwrap(), 1, "proxy closed the tunnel");
            head.push(b[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "CONNECT refused");
    }
    let name = rustls::pki_types::ServerName::from(origin.ip());
    let conn = rustls::ClientConnection::new(tls.clone(), name).unwrap();
    exchange(rustls::StreamOwned::new(conn, s), req, n);
}

/// The clients' TLS configuration (HTTP/1.1), trusting the certificates in `roots` (PEM);
/// made once per child, outside the measured requests.
fn client_config(roots: &[u8]) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(roots) {
        store.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    std::sync::Arc::new(cfg)
}

fn exchange<S: Read + Write>(mut s: S, req: &[u8], n: usize) {
    let mut buf = [0u8; 16384];
    for _ in 0..n {
        s.write_all(req).unwrap();
        let mut have = 0;
        loop {
            let k = s.read(&mut buf[have..]).unwrap();
            assert!(k > 0, "proxy closed the connection");
            have += k;
            let head = buf[..have].windows(4).position(|w| w == b"\r\n\r\n");
            if head.is_some_and(|h| have >= h + 4 + BODY) {
                assert!(buf.starts_with(b"HTTP/1.1 200"), "not a 200");
                break;
            }
        }
    }
}

fn cpu() -> Duration {
    let usage = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = usage
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn wait_listening(addr: SocketAddr) {
    for _ in 0..200 {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{addr} never listened");
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts the named proxy in this process (`tls_direct` starts none); returns its address.
/// `intercept` has credproxy mint leaves from a CA in `dir` and trust the origin's `pem`.
fn start(
    which: &str,
    origin: SocketAddr,
    dir: &std::path::Path,
    pem: &std::path::Path,
) -> SocketAddr {
    let listen = free_addr();
    match which {
        "bare" => {
            std::thread::spawn(move || bare::serve(&listen.to_string(), origin, 1, None));
            wait_listening(listen);
            return listen;
        }
        "tls_direct" => return origin,
        _ => {}
    }
    let path = dir.join("c.yaml");
    let admin = free_addr();
    let route = match which {
        "sigv4" => "aws",
        "oauth" => "oauth",
        _ => "tok",
    };
    let tls = if which == "intercept" {
        let ca = credproxy::tls::ca::init(&dir.join("ca"), true).unwrap();
        format!(
            r#", ca: {{ cert: "{}", key: "{}" }}, upstream_ca: "{}""#,
            ca.cert.display(),
            ca.key.display(),
            pem.display()
        )
    } else {
        String::new()
    };
    let token_url = format!("http://{}/token", token_endpoint());
    let yaml = format!(
        r#"proxy: {{ listen: "{listen}", admin: "{admin}", threads: 1, egress: {{ allow: [127.0.0.0/8] }}{tls} }}
credentials:
  tok: {{ type: bearer, token: bench-static-token-0001 }}
  aws: {{ type: aws_sigv4, access_key_id: AKIDEXAMPLE, secret_access_key: wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY, service: s3, region: us-east-1 }}
  oauth: {{ type: oauth2_client_credentials, token_url: "{token_url}", client_id: bench, client_secret: bench-client-secret-0001 }}
routes:
  - {{ host: "{origin}", credential: {route} }}
"#
    );
    std::fs::write(&path, yaml).unwrap();
    credproxy::logging::init(false);
    let sources = credproxy::sources::Sources::default();
    let cfg = credproxy::config::load_with(&path, &sources).unwrap();
    std::thread::spawn(move || credproxy::server::run(cfg, path, sources));
    wait_listening(listen);
    listen
}

/// Child: one proxy, warm, then `n` requests over `conns` connections; prints one line.
/// `intercept` and `tls_direct` speak HTTPS to a TLS origin (through a CONNECT tunnel or
/// straight); the others send absolute-form HTTP requests to a plain origin.
fn child(which: &str, n: usize, conns: usize) {
    let dir = std::env::temp_dir().join(format!("credproxy-per-request-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let https = matches!(which, "intercept" | "tls_direct");
    let (origin, pem) = if https {
        origin_tls(&dir)
    } else {
        (origin(), dir.join("none"))
    };
    let proxy = start(which, origin, &dir, &pem);
    let req = if https {
        format!("GET /bench HTTP/1.1\r\nHost: {origin}\r\nUser-Agent: bench\r\n\r\n")
    } else {
        format!("GET http://{origin}/bench HTTP/1.1\r\nHost: {origin}\r\nUser-Agent: bench\r\n\r\n")
    };
    let tls = https.then(|| {
        let roots = if which == "intercept" {
            dir.join("ca/ca.pem")
        } else {
            pem.clone()
        };
        client_config(&std::fs::read(roots).unwrap())
    });
    let via = (which == "intercept").then_some(proxy);
    let run = move |n: usize| match &tls {
        Some(tls) => client_tls(via, origin, tls, req.as_bytes(), n),
        None => client(proxy, req.as_bytes(), n),
    };
    run(2000);
    let (region, cpu0, t0) = (Region::new(GLOBAL), cpu(), Instant::now());
    std::thread::scope(|s| {
        for _ in 0..conns {
            s.spawn(|| run(n / conns));
        }
    });
    let (stats, cpu1, wall) = (region.change(), cpu(), t0.elapsed());
    let done = (n / conns * conns) as f64;
    println!(
        "RESULT {which} {:.1} {:.0} {:.1} {:.0}",
        stats.allocations as f64 / done,
        stats.bytes_allocated as f64 / done,
        (cpu1 - cpu0).as_secs_f64() * 1e6 / done,
        done / wall.as_secs_f64(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::process::exit(0);
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let n = args[pos + 2].parse().unwrap();
        return child(&args[pos + 1], n, args[pos + 3].parse().unwrap());
    }
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20000);
    let conns: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4);
    let exe = std::env::current_exe().unwrap();
    println!("{n} requests over {conns} keep-alive connections, 1 worker thread, per request:");
    println!("| proxy | allocations | bytes allocated | CPU µs (process) | req/s |");
    println!("|---|---|---|---|---|");
    let mut rows = Vec::new();
    for which in [
        "bare",
        "bearer",
        "sigv4",
        "oauth",
        "tls_direct",
        "intercept",
    ] {
        let out = std::process::Command::new(&exe)
            .args(["--child", which, &n.to_string(), &conns.to_string()])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("RESULT"))
            .unwrap_or_else(|| {
                panic!("{which}: {}", String::from_utf8_lossy(&out.stderr));
            });
        let f: Vec<&str> = line.split_whitespace().collect();
        println!("| {} | {} | {} | {} | {} |", f[1], f[2], f[3], f[4], f[5]);
        rows.push(f[4].parse::<f64>().unwrap());
    }
    println!(
        "CPU per request, credproxy bearer / bare pingora: {:.2}; SigV4 / bearer: {:.2}; cached OAuth / bearer: {:.2}; intercept / HTTPS direct: {:.2}",
        rows[1] / rows[0],
        rows[2] / rows[1],
        rows[3] / rows[1],
        rows[5] / rows[4]
    );
}
