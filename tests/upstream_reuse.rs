//! Upstream connections across client keep-alive connections: a client's upstream connection
//! stays with it between its requests (vendor/README.md, fourth change), goes back to the
//! shared pool when the client leaves or moves to another host, and is replaced, never
//! failed, when the origin closed it in between.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// One client keep-alive connection to the proxy, sending absolute-form GETs one at a time.
fn proxy_for(ports: &[u16], proxy_extra: &str) -> Proxy {
    let mut body =
        "credentials:\n  gh: { type: bearer, token: \"${GH_TOKEN}\" }\nroutes:\n".to_string();
    for p in ports {
        body.push_str(&format!(
            "  - {{ host: \"127.0.0.1:{p}\", credential: gh }}\n"
        ));
    }
    Proxy::start_with(proxy_extra, &body, &[("GH_TOKEN", "gh-secret-reuse")])
}

#[test]
fn a_client_keeps_one_upstream_and_the_next_client_gets_it_after_a_close() {
    let o = Origin::start();
    let p = proxy_for(&[o.port()], "");
    let mut a = KeepAliveClient::new(p.addr);
    for i in 0..3 {
        assert_eq!(a.get(o.port(), &format!("/a{i}")).0, 200);
    }
    assert_eq!(
        o.last().all("authorization"),
        vec!["Bearer gh-secret-reuse"]
    );
    drop(a);
    // The proxy sees the close when it waits for a's next request, then pools the upstream.
    std::thread::sleep(Duration::from_millis(200));
    let mut b = KeepAliveClient::new(p.addr);
    for i in 0..3 {
        assert_eq!(b.get(o.port(), &format!("/b{i}")).0, 200);
    }
    assert_eq!(o.count(), 6);
    assert_eq!(o.connections(), 1, "{}", p.log_text());
}

#[test]
fn concurrent_clients_each_hold_their_own_upstream() {
    let o = Origin::start();
    let p = proxy_for(&[o.port()], "");
    let (mut a, mut b) = (KeepAliveClient::new(p.addr), KeepAliveClient::new(p.addr));
    for i in 0..3 {
        assert_eq!(a.get(o.port(), &format!("/a{i}")).0, 200);
        assert_eq!(b.get(o.port(), &format!("/b{i}")).0, 200);
    }
    assert_eq!(o.count(), 6);
    assert_eq!(o.connections(), 2);
}

#[test]
fn a_client_moving_to_another_host_hands_its_upstream_back() {
    let (o1, o2) = (Origin::start(), Origin::start());
    let p = proxy_for(&[o1.port(), o2.port()], "");
    let mut a = KeepAliveClient::new(p.addr);
    assert_eq!(a.get(o1.port(), "/first").0, 200);
    assert_eq!(a.get(o2.port(), "/second").0, 200);
    // a still holds its o2 upstream; its o1 upstream went back to the pool for b.
    let mut b = KeepAliveClient::new(p.addr);
    assert_eq!(b.get(o1.port(), "/third").0, 200);
    assert_eq!(a.get(o1.port(), "/fourth").0, 200);
    assert_eq!(
        o1.connections(),
        2,
        "b took the pooled one, a needed another"
    );
    assert_eq!(o2.connections(), 1);
    assert_eq!(
        o1.last().all("authorization"),
        vec!["Bearer gh-secret-reuse"]
    );
}

/// An origin that answers one request per connection and closes it `linger` later without
/// saying so (no `Connection: close`): what a server with a short keep-alive timeout does.
/// Returns its port, the count of connections it accepted, and the runtime serving it.
fn closing_origin(linger: Duration) -> (u16, Arc<AtomicUsize>, tokio::runtime::Runtime) {
    let (rt, listener, port) = background_listener();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    rt.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(linger).await;
            });
        }
    });
    (port, accepted, rt)
}

#[test]
fn an_upstream_the_origin_closed_while_kept_is_replaced_not_failed() {
    let (port, accepted, _rt) = closing_origin(Duration::from_millis(50));
    let p = proxy_for(&[port], "");
    let mut a = KeepAliveClient::new(p.addr);
    for i in 0..3 {
        assert_eq!(
            a.get(port, &format!("/r{i}")),
            (200, "ok".into()),
            "{}",
            p.log_text()
        );
        // the origin closes its side while a is idle
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[test]
fn a_kept_upstream_idle_longer_than_timeouts_idle_is_neither_used_nor_pooled() {
    let o = Origin::start();
    let p = proxy_for(&[o.port()], "timeouts: { idle: 1s }\n");
    let mut a = KeepAliveClient::new(p.addr);
    assert_eq!(a.get(o.port(), "/before").0, 200);
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(a.get(o.port(), "/after").0, 200);
    assert_eq!(o.connections(), 2, "a fresh upstream after timeouts.idle");
    assert_eq!(a.get(o.port(), "/again").0, 200);
    assert_eq!(o.connections(), 2, "one used within timeouts.idle stays");
    // a leaves after holding it past timeouts.idle: closed, as the pool would have by now
    std::thread::sleep(Duration::from_millis(1300));
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    let mut b = KeepAliveClient::new(p.addr);
    assert_eq!(b.get(o.port(), "/b").0, 200);
    assert_eq!(o.connections(), 3);
    assert_eq!(o.count(), 4);
}
