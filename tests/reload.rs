//! Hot reload under load through the binary: 20 reloads while requests run, none failing;
//! an unchanged credential keeps its cached token across every reload, a changed one is
//! fetched again once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn config(a: &TokenServer, b: &TokenServer, origin: &Origin, b_scope: &str) -> String {
    format!(
        "credentials:\n  a:\n    type: oauth2_client_credentials\n    token_url: {}\n    client_id: reload-a\n    client_secret: \"${{CS}}\"\n  b:\n    type: oauth2_client_credentials\n    token_url: {}\n    client_id: reload-b\n    client_secret: \"${{CS}}\"\n    scopes: [{b_scope}]\nroutes:\n  - {{ host: \"127.0.0.1:{}\", path: /a/*, credential: a }}\n  - {{ host: \"127.0.0.1:{}\", path: /b/*, credential: b }}\n",
        a.url("/token"),
        b.url("/token"),
        origin.port(),
        origin.port()
    )
}

/// Rewrites the config's credentials and routes, keeping the proxy section the harness wrote.
fn rewrite(p: &Proxy, body: &str) {
    let path = p.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let head = &text[..text.find("credentials:").unwrap()];
    std::fs::write(&path, format!("{head}{body}")).unwrap();
}

fn reload(p: &Proxy) {
    let answer = admin_post(p.admin, "/reload");
    assert!(answer.contains("\"reloaded\""), "{answer}");
}

#[test]
fn reloads_under_load_fail_nothing_and_keep_unchanged_tokens() {
    let a = TokenServer::start(TokenReply::ok("reload-token-a-000001", "3600"));
    let b = TokenServer::start(TokenReply::ok("reload-token-b-000001", "3600"));
    let origin = Origin::start();
    let p = Proxy::start_with(
        "",
        &config(&a, &b, &origin, "read"),
        &[("CS", "reload-client-secret-01")],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        let (client, port) = (p.client(), origin.port());
        std::thread::spawn(move || {
            runtime().block_on(async {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut i = 0usize;
                // Bounded: until told to stop, 60 s, or 100,000 requests.
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && i < 100_000 {
                    let path = if i.is_multiple_of(2) { "a" } else { "b" };
                    let url = format!("http://127.0.0.1:{port}/{path}/x{i}");
                    let ok = matches!(client.get(url).send().await, Ok(r) if r.status() == 200);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
    };
    while sent.load(Ordering::Relaxed) < 50 {
        std::thread::sleep(Duration::from_millis(10));
    }
    // 10 reloads of the same config, then 10 where b's scopes change each time.
    for _ in 0..10 {
        reload(&p);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!((a.requests().len(), b.requests().len()), (1, 1));
    for i in 0..10 {
        rewrite(&p, &config(&a, &b, &origin, &format!("read{i}")));
        reload(&p);
        // The load's next request to b fetches b's new token (bounded wait, not a timing).
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.requests().len() < 2 + i && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{sent} requests across 20 reloads, {failed} failed");
    assert_eq!(failed, 0, "of {sent}");
    assert_eq!(a.requests().len(), 1, "a's token survived every reload");
    assert_eq!(
        b.requests().len(),
        11,
        "b's was fetched again after each change"
    );
}
