//! Races and failures around rotation, against a provider that accepts only the latest token.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use std::sync::Mutex;

use super::*;
use crate::store::sealed_file::KEY_ENV;

const KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";

/// A rotating provider on port 0; answers after `delay`. Returns (port, tokens used).
async fn provider(delay: Duration) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let used = Arc::new(Mutex::new(Vec::new()));
    let latest = Arc::new(Mutex::new((0u32, "refresh-0".to_string())));
    let u = used.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let (u, latest) = (u.clone(), latest.clone());
            tokio::spawn(async move {
                let Some(buf) = read_request(&mut s).await else {
                    return;
                };
                let text = String::from_utf8_lossy(&buf).to_string();
                let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
                let rt = url::form_urlencoded::parse(body.as_bytes())
                    .find(|(k, _)| k == "refresh_token")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                u.lock().unwrap().push(rt.clone());
                let (status, json) = {
                    let mut l = latest.lock().unwrap();
                    if rt != l.1 {
                        (400, r#"{"error":"invalid_grant"}"#.to_string())
                    } else {
                        l.0 += 1;
                        l.1 = format!("refresh-{}", l.0);
                        (200, format!("{{\"access_token\":\"at-{0}\",\"refresh_token\":\"refresh-{0}\",\"expires_in\":3600}}", l.0))
                    }
                };
                tokio::time::sleep(delay).await;
                let resp = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}", json.len());
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (port, used)
}

/// One whole HTTP request (head and Content-Length body), or None if the client left.
async fn read_request(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp).await.unwrap_or(0);
        buf.extend_from_slice(&tmp[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(i) = text.find("\r\n\r\n") {
            let cl: usize = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= i + 4 + cl {
                return Some(buf);
            }
        }
        if n == 0 {
            return None;
        }
    }
}

fn build(port: u16, dir: &std::path::Path) -> RefreshToken {
    build_with_scopes(port, dir, &[])
}

fn build_with_scopes(port: u16, dir: &std::path::Path, scopes: &[&str]) -> RefreshToken {
    let env = |n: &str| (n == KEY_ENV).then(|| KEY.to_string());
    let sources = crate::sources::Sources::default();
    let mut ctx = BuildCtx {
        base_dir: std::path::Path::new("."),
        env: &env,
        warnings: Vec::new(),
        name: "hub",
        state_dir: dir,
        strict_permissions: false,
        tenant: None,
        literal: &[],
        dry: false,
        sources: &sources,
        used_sources: Vec::new(),
    };
    let raw = RawRefreshToken {
        token_url: format!("http://127.0.0.1:{port}/token"),
        client_id: "cid".into(),
        client_secret: "client-secret".into(),
        refresh_token: Some("refresh-0".into()),
        access_token: None,
        access_token_expires_at: None,
        refresh_token_expires_at: None,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        scope_separator: None,
        token_params: Default::default(),
        auth_method: None,
        header: None,
        prefix: None,
        cache: None,
        timeout: None,
    };
    RefreshToken::build(&raw, &mut ctx).unwrap()
}

#[tokio::test]
async fn a_failed_save_never_lets_the_stale_file_win() {
    let (port, used) = provider(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let src = build(port, dir.path());
    src.fetch(&FetchCx::local(&http)).await.unwrap(); // refresh-0 -> refresh-1, persisted
                                     // The next save fails (full or read-only disk).
    src.chain.as_ref().unwrap().file
        .fail_saves
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let e = src.fetch(&FetchCx::local(&http)).await.unwrap_err(); // refresh-1 -> refresh-2, kept in memory only
    assert!(
        e.to_string().contains("kept in memory but not persisted"),
        "{e}"
    );
    src.chain.as_ref().unwrap().file
        .fail_saves
        .store(false, std::sync::atomic::Ordering::SeqCst);
    src.fetch(&FetchCx::local(&http)).await.unwrap(); // must spend refresh-2, persisting it first
    assert_eq!(*used.lock().unwrap(), vec!["refresh-0", "refresh-1", "refresh-2"]);
    assert_eq!(src.chain.as_ref().unwrap().file.load().unwrap().unwrap().refresh_token, "refresh-3");
}

#[tokio::test]
async fn old_and_new_config_never_spend_one_token_twice() {
    let (port, used) = provider(Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = crate::tokens::TokenCache::new(
        reqwest::Client::new(),
        Duration::from_secs(2),
        crate::tokens::Retry::default(),
    );
    // A reload that changed the scopes: two slots, one state file, one chain.
    let old: Arc<dyn TokenSource> = Arc::new(build(port, dir.path()));
    let new: Arc<dyn TokenSource> = Arc::new(build_with_scopes(port, dir.path(), &["read"]));
    let name: Arc<str> = Arc::from("hub");
    let (c1, c2, n1, n2, o, w) = (
        cache.clone(),
        cache.clone(),
        name.clone(),
        name.clone(),
        old.clone(),
        new.clone(),
    );
    let a = tokio::spawn(async move { c1.get(&n1, &o).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = tokio::spawn(async move { c2.get(&n2, &w).await.map(|_| ()) });
    assert!(a.await.unwrap().is_ok());
    assert!(b.await.unwrap().is_ok(), "used: {:?}", used.lock().unwrap());
    assert!(!new.needs_reconnect());
    assert_eq!(*used.lock().unwrap(), vec!["refresh-0", "refresh-1"]);
}
