//! oauth2_refresh_token: rotation persisted before use, surviving a crash; invalid_grant; state
//! files that cannot be read are reported and left alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use common::*;

const KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";

/// A provider that rotates the refresh token on every use and accepts only the latest one.
struct Provider {
    server: Origin,
    used: Arc<Mutex<Vec<String>>>,
}

fn provider(rotate: bool) -> Provider {
    let latest = Arc::new(Mutex::new((0u32, "refresh-token-0".to_string())));
    let used = Arc::new(Mutex::new(Vec::new()));
    let u = used.clone();
    let server = Origin::start_with(Arc::new(move |seen: &Seen| {
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&seen.body)
            .into_owned()
            .collect();
        let rt = form
            .iter()
            .find(|(k, _)| k == "refresh_token")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        u.lock().unwrap().push(rt.clone());
        let mut l = latest.lock().unwrap();
        if rt != l.1 {
            return TokenReply::raw(
                400,
                r#"{"error":"invalid_grant","error_description":"refresh token is not valid"}"#,
                "application/json",
            );
        }
        l.0 += 1;
        let n = l.0;
        if rotate {
            l.1 = format!("refresh-token-{n}");
            TokenReply::raw(200, &format!("{{\"access_token\":\"access-token-{n}\",\"refresh_token\":\"refresh-token-{n}\",\"expires_in\":3600}}"), "application/json")
        } else {
            TokenReply::raw(
                200,
                &format!("{{\"access_token\":\"at-{n}\",\"expires_in\":3600}}"),
                "application/json",
            )
        }
    }));
    Provider { server, used }
}

fn config(p: &Provider, origin_port: u16) -> String {
    format!(
        "credentials:\n  hub:\n    type: oauth2_refresh_token\n    token_url: \"http://127.0.0.1:{}/oauth/v1/token\"\n    client_id: cid\n    client_secret: \"${{CS}}\"\n    refresh_token: \"${{SEED}}\"\nroutes:\n  - {{ host: \"127.0.0.1:{origin_port}\", credential: hub }}\n",
        p.server.port()
    )
}

fn start(p: &Provider, origin: u16, state: &std::path::Path, key: &str) -> Proxy {
    Proxy::start_with(
        &format!("state_dir: {}", state.display()),
        &config(p, origin),
        &[
            ("CS", "client-secret-1"),
            ("SEED", "refresh-token-0"),
            ("CREDPROXY_STATE_KEY", key),
        ],
    )
}

fn send(p: &Proxy, origin: u16) -> Result<u16, String> {
    runtime().block_on(async {
        match p
            .client()
            .get(format!("http://127.0.0.1:{origin}/x"))
            .send()
            .await
        {
            Ok(r) => Ok(r.status().as_u16()),
            Err(e) => Err(e.to_string()),
        }
    })
}

#[test]
fn rotated_token_survives_a_crash_between_refresh_and_use() {
    let prov = provider(true);
    let state = tempfile::tempdir().unwrap();
    let victim = Arc::new(AtomicU32::new(0));
    let v = victim.clone();
    // The origin kills the proxy when the first request arrives: the refresh has happened, the
    // access token is being used, the process dies before answering.
    let origin = Origin::start_with(Arc::new(move |_s: &Seen| {
        let pid = v.swap(0, Ordering::SeqCst);
        if pid != 0 {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        TokenReply::raw(200, "{}", "application/json")
    }));
    let p1 = start(&prov, origin.port(), state.path(), KEY);
    victim.store(p1.pid(), Ordering::SeqCst);
    assert!(
        send(&p1, origin.port()).is_err(),
        "the proxy died mid-request"
    );
    drop(p1);
    assert_eq!(*prov.used.lock().unwrap(), vec!["refresh-token-0"]);

    let p2 = start(&prov, origin.port(), state.path(), KEY);
    assert_eq!(send(&p2, origin.port()), Ok(200));
    assert_eq!(
        *prov.used.lock().unwrap(),
        vec!["refresh-token-0", "refresh-token-1"],
        "the restart used the rotated token, not the seed"
    );
    assert_eq!(
        origin.last().header("authorization").as_deref(),
        Some("Bearer access-token-2")
    );
    let raw = std::fs::read(state.path().join("hub.state")).unwrap();
    assert!(
        !String::from_utf8_lossy(&raw).contains("refresh-token-2"),
        "encrypted at rest"
    );
}

#[test]
fn answer_without_refresh_token_keeps_the_old_one() {
    let prov = provider(false);
    let state = tempfile::tempdir().unwrap();
    let origin = Origin::start();
    let p = start(&prov, origin.port(), state.path(), KEY);
    assert_eq!(send(&p, origin.port()), Ok(200));
    assert_eq!(
        status_of(&admin_post(p.admin, "/credentials/hub/refresh")),
        200
    );
    assert_eq!(
        *prov.used.lock().unwrap(),
        vec!["refresh-token-0", "refresh-token-0"]
    );
    assert!(
        !state.path().join("hub.state").exists(),
        "nothing rotated, nothing written"
    );
}

#[test]
fn invalid_grant_marks_needs_reconnect_and_stops_calling() {
    let prov = provider(true);
    let state = tempfile::tempdir().unwrap();
    let origin = Origin::start();
    let body = config(&prov, origin.port());
    let p = Proxy::start_with(
        &format!("state_dir: {}", state.path().display()),
        &body,
        &[
            ("CS", "client-secret-1"),
            ("SEED", "refresh-token-stale"),
            ("CREDPROXY_STATE_KEY", KEY),
        ],
    );
    assert_eq!(send(&p, origin.port()), Ok(502));
    for _ in 0..5 {
        assert_eq!(send(&p, origin.port()), Ok(502));
    }
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(send(&p, origin.port()), Ok(502));
    assert_eq!(
        prov.used.lock().unwrap().len(),
        1,
        "no retry storm against a revoked grant"
    );
    let (_, creds) = http_get(p.admin, "/credentials").unwrap();
    assert!(creds.contains("\"status\": \"needs_reconnect\""), "{creds}");
    assert!(p
        .metrics()
        .contains("credproxy_credential_needs_reconnect{credential=\"hub\"} 1"));
    assert_eq!(origin.count(), 0);
}

#[test]
fn unreadable_state_is_reported_and_never_overwritten() {
    let prov = provider(true);
    let state = tempfile::tempdir().unwrap();
    let origin = Origin::start();
    // A file written under another key.
    {
        let p = start(&prov, origin.port(), state.path(), &"02".repeat(32));
        assert_eq!(send(&p, origin.port()), Ok(200));
    }
    let before = std::fs::read(state.path().join("hub.state")).unwrap();
    let p = start(&prov, origin.port(), state.path(), KEY);
    assert_eq!(send(&p, origin.port()), Ok(502));
    let (_, creds) = http_get(p.admin, "/credentials").unwrap();
    assert!(
        creds.contains("cannot be decrypted") && creds.contains("left untouched"),
        "{creds}"
    );
    assert!(p.log_text().contains("cannot be decrypted"));
    assert_eq!(
        std::fs::read(state.path().join("hub.state")).unwrap(),
        before,
        "not overwritten"
    );
    assert_eq!(prov.used.lock().unwrap().len(), 1, "the seed was not spent");
}

#[test]
fn missing_state_key_makes_the_credential_unavailable() {
    let prov = provider(true);
    let state = tempfile::tempdir().unwrap();
    let origin = Origin::start();
    let p = Proxy::start_with(
        &format!("state_dir: {}", state.path().display()),
        &config(&prov, origin.port()),
        &[("CS", "client-secret-1"), ("SEED", "refresh-token-0")],
    );
    let resp = raw(p.addr, format!("GET http://127.0.0.1:{0}/ HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nConnection: close\r\n\r\n", origin.port()).as_bytes());
    assert_eq!(status_of(&resp), 502);
    assert!(resp.contains("CREDPROXY_STATE_KEY is not set"), "{resp}");
    assert!(prov.used.lock().unwrap().is_empty());
}
