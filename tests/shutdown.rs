//! Graceful shutdown through the binary: on SIGTERM credproxy stops accepting, lets
//! in-flight requests and open tunnels finish within `proxy.shutdown_grace`, and exits 0 as
//! soon as they have; idle keep-alive connections do not hold it up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// An origin that answers after `delay`.
fn slow(delay: Duration) -> Origin {
    Origin::start_with(Arc::new(move |_s: &Seen| {
        let mut r = TokenReply::raw(200, "slow and done", "text/plain");
        r.delay = delay;
        r
    }))
}

fn proxy(grace: &str, origin: &Origin) -> Proxy {
    let body = format!(
        "credentials:\n  k: {{ type: bearer, token: \"${{K}}\" }}\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: k }}\n",
        origin.port()
    );
    Proxy::start_with(
        &format!("shutdown_grace: {grace}"),
        &body,
        &[("K", "shutdown-key-000000001")],
    )
}

/// A GET through the proxy on its own thread: its status line, or the error.
fn slow_request(p: &Proxy, origin: &Origin) -> std::thread::JoinHandle<String> {
    let (addr, port) = (p.addr, origin.port());
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let req = format!("GET http://127.0.0.1:{port}/slow HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        match s.read_to_string(&mut out) {
            Ok(_) => out,
            Err(e) => format!("error: {e}"),
        }
    })
}

/// Until the proxy has the request in flight (the origin saw it).
fn in_flight(origin: &Origin) {
    for _ in 0..500 {
        if origin.count() > 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the request never reached the origin");
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let origin = slow(Duration::from_millis(1500));
    let mut p = proxy("10s", &origin);
    let req = slow_request(&p, &origin);
    in_flight(&origin);
    p.signal("TERM");
    // New connections are refused while the old one finishes.
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(p.addr).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(refused, "still accepting after SIGTERM");
    let answer = req.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("slow and done"),
        "{answer}"
    );
    let status = p
        .wait_exit(Duration::from_secs(8))
        .expect("exited well before the grace");
    assert!(status.success(), "{status:?}");
    assert!(
        p.log_text().contains("every connection finished"),
        "{}",
        p.log_text()
    );
}

#[test]
fn idle_keep_alive_connections_do_not_hold_shutdown() {
    let origin = Origin::start();
    let mut p = proxy("30s", &origin);
    let port = origin.port();
    let mut s = TcpStream::connect(p.addr).unwrap();
    let req = format!("GET http://127.0.0.1:{port}/a HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The connection stays open and idle; SIGTERM closes it and the process exits.
    p.signal("TERM");
    let status = p
        .wait_exit(Duration::from_secs(20))
        .expect("exited before the 30 s grace");
    assert!(status.success(), "{status:?}");
}

#[test]
fn an_open_tunnel_keeps_working_until_it_closes() {
    let origin = Origin::start();
    let mut p = proxy("10s", &origin);
    // Unmatched host: tunnelled untouched.
    let other = Origin::start();
    let mut t = connect_tunnel(p.addr, &format!("127.0.0.1:{}", other.port()));
    p.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    let req = format!(
        "GET /through-the-tunnel HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        other.port()
    );
    t.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    t.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    drop(t);
    let status = p
        .wait_exit(Duration::from_secs(8))
        .expect("exited once the tunnel closed");
    assert!(status.success());
}

#[test]
fn a_request_longer_than_the_grace_is_cut_and_the_exit_is_still_0() {
    let origin = slow(Duration::from_secs(6));
    let mut p = proxy("1s", &origin);
    let req = slow_request(&p, &origin);
    in_flight(&origin);
    p.signal("TERM");
    let status = p
        .wait_exit(Duration::from_secs(5))
        .expect("exited at the grace");
    assert!(status.success(), "{status:?}");
    assert!(!req.join().unwrap().contains("slow and done"));
    assert!(
        p.log_text()
            .contains("shutdown_grace elapsed with connections still open"),
        "{}",
        p.log_text()
    );
}
