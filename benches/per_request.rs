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
        let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
        resp.extend(std::iter::repeat_n(b'x', BODY));
        let resp: &'static [u8] = resp.leak();
        for s in l.incoming().flatten() {
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

/// Answers every `\r\n\r\n` (bodiless requests) with `resp`.
fn serve(mut s: TcpStream, resp: &[u8]) {
    let _ = s.set_nodelay(true);
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
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_nodelay(true).unwrap();
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

/// Starts the named proxy in this process; returns its address and the request to send.
fn start(which: &str, origin: SocketAddr) -> (SocketAddr, Vec<u8>) {
    let listen = free_addr();
    let abs = format!(
        "GET http://{origin}/bench HTTP/1.1\r\nHost: {origin}\r\nUser-Agent: bench\r\n\r\n"
    );
    if which == "bare" {
        std::thread::spawn(move || bare::serve(&listen.to_string(), origin, 1));
        return (listen, abs.into_bytes());
    }
    let dir = std::env::temp_dir().join(format!("credproxy-per-request-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.yaml");
    let admin = free_addr();
    let route = match which {
        "sigv4" => "aws",
        "oauth" => "oauth",
        _ => "tok",
    };
    let token_url = format!("http://{}/token", token_endpoint());
    let yaml = format!(
        r#"proxy: {{ listen: "{listen}", admin: "{admin}", threads: 1, egress: {{ allow: [127.0.0.0/8] }} }}
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
    (listen, abs.into_bytes())
}

/// Child: one proxy, warm, then `n` requests over `conns` connections; prints one line.
fn child(which: &str, n: usize, conns: usize) {
    let origin = origin();
    let (proxy, req) = start(which, origin);
    wait_listening(proxy);
    client(proxy, &req, 2000);
    let (region, cpu0, t0) = (Region::new(GLOBAL), cpu(), Instant::now());
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let req = req.clone();
            std::thread::spawn(move || client(proxy, &req, n / conns))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (stats, cpu1, wall) = (region.change(), cpu(), t0.elapsed());
    let done = (n / conns * conns) as f64;
    println!(
        "RESULT {which} {:.1} {:.0} {:.1} {:.0}",
        stats.allocations as f64 / done,
        stats.bytes_allocated as f64 / done,
        (cpu1 - cpu0).as_secs_f64() * 1e6 / done,
        done / wall.as_secs_f64(),
    );
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
    for which in ["bare", "bearer", "sigv4", "oauth"] {
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
        "CPU per request, credproxy bearer / bare pingora: {:.2}; SigV4 / bearer: {:.2}; cached OAuth / bearer: {:.2}",
        rows[1] / rows[0],
        rows[2] / rows[1],
        rows[3] / rows[1]
    );
}
