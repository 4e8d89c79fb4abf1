//! Secret sources through the binary: `exec` and `file` secrets rotated under load (no request
//! fails, the new value in use within a refresh, exactly the tokens made from the changed
//! secret fetched again), a failing helper reported while the last good value serves, JSON
//! helper output, and what `/credentials` and `/metrics` say.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn write(dir: &Path, name: &str, value: &str) {
    register_secret(value);
    // Written whole then renamed: a reader never sees half a value.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, format!("{value}\n")).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

fn credentials_json(p: &Proxy) -> serde_json::Value {
    let (status, body) = http_get(p.admin, "/credentials").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn entry<'a>(all: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    all.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

/// Polls until the origin has seen `value` in `header` on `path_prefix`, bounded.
fn wait_for_value(origin: &Origin, prefix: &str, value: &str) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        let seen = origin.seen();
        if seen.iter().rev().take(50).any(|s| {
            s.uri.starts_with(prefix) && s.header("authorization").as_deref() == Some(value)
        }) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{value} never reached {prefix}");
}

/// Sends requests over `paths` until stopped (bounded by count and time); (sent, failed).
fn load(
    p: &Proxy,
    origin: &Origin,
    paths: &'static [&'static str],
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize)> {
    let (client, port) = (p.client(), origin.port());
    std::thread::spawn(move || {
        runtime().block_on(async {
            let (sent, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && i < 100_000 {
                let url = format!("http://127.0.0.1:{port}{}{i}", paths[i % paths.len()]);
                let ok = matches!(client.get(url).send().await, Ok(r) if r.status() == 200);
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            (sent.into_inner(), failed.into_inner())
        })
    })
}

#[test]
fn exec_and_file_secrets_rotate_under_load() {
    let secrets = tempfile::tempdir().unwrap();
    let d = secrets.path();
    write(d, "exec-secret", "Bearer exec-value-000001");
    write(d, "file-secret", "Bearer file-value-000001");
    write(d, "client-secret", "rotating-client-secret-1");
    let rotating = TokenServer::start(TokenReply::ok("token-rotating-00001", "3600"));
    let steady = TokenServer::start(TokenReply::ok("token-steady-000001", "3600"));
    let origin = Origin::start();
    let port = origin.port();
    let body = format!(
        "credentials:\n\
         \x20 by_exec: {{ type: headers, headers: {{ Authorization: {{ exec: [cat, {d}/exec-secret], refresh: 1s }} }} }}\n\
         \x20 by_file: {{ type: headers, headers: {{ Authorization: {{ file: {d}/file-secret, refresh: 1s }} }} }}\n\
         \x20 rotating: {{ type: oauth2_client_credentials, token_url: {}, client_id: rot-client, client_secret: {{ exec: [cat, {d}/client-secret], refresh: 1s }} }}\n\
         \x20 steady: {{ type: oauth2_client_credentials, token_url: {}, client_id: steady-client, client_secret: \"${{CS}}\" }}\n\
         routes:\n\
         \x20 - {{ host: \"127.0.0.1:{port}\", path: /exec/*, credential: by_exec }}\n\
         \x20 - {{ host: \"127.0.0.1:{port}\", path: /file/*, credential: by_file }}\n\
         \x20 - {{ host: \"127.0.0.1:{port}\", path: /rot/*, credential: rotating }}\n\
         \x20 - {{ host: \"127.0.0.1:{port}\", path: /steady/*, credential: steady }}\n",
        rotating.url("/token"),
        steady.url("/token"),
        d = d.display(),
    );
    let p = Proxy::start_with("", &body, &[("CS", "steady-client-secret-1")]);
    let stop = Arc::new(AtomicBool::new(false));
    let runner = load(
        &p,
        &origin,
        &["/exec/", "/file/", "/rot/", "/steady/"],
        stop.clone(),
    );
    wait_for_value(&origin, "/exec/", "Bearer exec-value-000001");
    wait_for_value(&origin, "/rot/", "Bearer token-rotating-00001");

    rotating.set(TokenReply::ok("token-rotating-00002", "3600"));
    write(d, "exec-secret", "Bearer exec-value-000002");
    write(d, "file-secret", "Bearer file-value-000002");
    write(d, "client-secret", "rotating-client-secret-2");
    let exec_took = wait_for_value(&origin, "/exec/", "Bearer exec-value-000002");
    let file_took = wait_for_value(&origin, "/file/", "Bearer file-value-000002");
    let cc_took = wait_for_value(&origin, "/rot/", "Bearer token-rotating-00002");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = runner.join().unwrap();
    eprintln!(
        "rotation: {sent} requests, {failed} failed; new value in use after exec {exec_took:?}, \
         file {file_took:?}, client secret -> new token {cc_took:?} (refresh 1s)"
    );
    assert_eq!(failed, 0, "no request fails while secrets rotate");
    // The token made from the changed client secret was fetched again, with the new secret;
    // the other credential's token was kept.
    let reqs = rotating.requests();
    assert_eq!(reqs.len(), 2, "one fetch per client secret");
    let second = String::from_utf8_lossy(&reqs[1].body).to_string();
    assert!(
        second.contains("rotating-client-secret-2") || reqs[1].header("authorization").is_some()
    );
    assert_eq!(
        steady.requests().len(),
        1,
        "an unchanged credential keeps its token"
    );
    let after: Vec<Seen> = origin.seen().into_iter().rev().take(8).collect();
    assert!(
        after
            .iter()
            .filter(|s| s.uri.starts_with("/exec/"))
            .all(|s| s.header("authorization").unwrap().ends_with("000002")),
        "the old value is not used once the new one is"
    );
    let all = credentials_json(&p);
    let s = &entry(&all, "by_exec")["secrets"][0];
    assert_eq!(s["source"], "exec:cat");
    assert_eq!(s["status"], "ok");
    assert!(p
        .log_text()
        .contains("secret source changed: credentials rebuilt"));
}

#[test]
fn a_failing_helper_is_reported_and_the_last_value_serves() {
    let secrets = tempfile::tempdir().unwrap();
    let d = secrets.path();
    // The helper prints the value while a flag file is absent, then fails, printing the
    // value on stdout too (which must not reach any report).
    let helper = d.join("helper.sh");
    std::fs::write(
        &helper,
        "#!/bin/sh\nif [ -e \"$1/broken\" ]; then echo helper-value-000001; echo \"vault sealed\" >&2; exit 4; fi\necho helper-value-000001\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    register_secret("helper-value-000001");
    let origin = Origin::start();
    let body = format!(
        "credentials:\n  h: {{ type: bearer, token: {{ exec: [{}, {}], refresh: 1s, max_stale: 1h }} }}\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: h }}\n",
        helper.display(),
        d.display(),
        origin.port()
    );
    let p = Proxy::start(&body);
    let client = p.client();
    let url = format!("http://127.0.0.1:{}/x", origin.port());
    let rt = runtime();
    assert_eq!(rt.block_on(client.get(&url).send()).unwrap().status(), 200);
    std::fs::write(d.join("broken"), "").unwrap();
    let start = Instant::now();
    let stale = loop {
        let all = credentials_json(&p);
        let s = entry(&all, "h")["secrets"][0].clone();
        if s["status"] == "stale" || start.elapsed() > Duration::from_secs(15) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stale["status"], "stale", "{stale}");
    let err = stale["error"].as_str().unwrap();
    assert!(
        err.contains("exited with exit status: 4") && err.contains("vault sealed"),
        "{err}"
    );
    assert!(!err.contains("helper-value-000001"), "{err}");
    // Still served with the last good value.
    assert_eq!(rt.block_on(client.get(&url).send()).unwrap().status(), 200);
    assert_eq!(
        origin.last().header("authorization").unwrap(),
        "Bearer helper-value-000001"
    );
    let metrics = p.metrics_with(&["credproxy_secret_source_stale"]);
    assert!(
        metrics.contains("credproxy_secret_source_stale{source=\"exec:"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("credproxy_secret_source_stale{") && l.ends_with(" 1")),
        "{metrics}"
    );
    let log = p.log_text();
    assert_eq!(
        log.matches("could not be re-read").count(),
        1,
        "warned once per change of state:\n{log}"
    );
    std::fs::remove_file(d.join("broken")).unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if entry(&credentials_json(&p), "h")["secrets"][0]["status"] == "ok" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        entry(&credentials_json(&p), "h")["secrets"][0]["status"],
        "ok"
    );
    assert!(p.log_text().contains("read again after failures"));
}

#[test]
fn json_helper_output_and_a_helper_that_never_worked() {
    let origin = Origin::start();
    register_secret("json-helper-value-01");
    let body = format!(
        "credentials:\n  j: {{ type: bearer, token: {{ exec: [printf, '{{\"value\":\"json-helper-value-01\",\"expires_at\":\"2099-01-01T00:00:00Z\"}}'] }} }}\n  never: {{ type: bearer, token: {{ exec: [\"false\"] }} }}\nroutes:\n  - {{ host: \"127.0.0.1:{}\", path: /j/*, credential: j }}\n  - {{ host: \"127.0.0.1:{}\", path: /n/*, credential: never }}\n",
        origin.port(),
        origin.port()
    );
    let p = Proxy::start(&body);
    let rt = runtime();
    let client = p.client();
    let ok = rt
        .block_on(
            client
                .get(format!("http://127.0.0.1:{}/j/1", origin.port()))
                .send(),
        )
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        origin.last().header("authorization").unwrap(),
        "Bearer json-helper-value-01"
    );
    let bad = rt
        .block_on(
            client
                .get(format!("http://127.0.0.1:{}/n/1", origin.port()))
                .send(),
        )
        .unwrap();
    assert_eq!(bad.status(), 502);
    let text = rt.block_on(bad.text()).unwrap();
    assert!(text.contains("exec:false"), "{text}");
    let all = credentials_json(&p);
    assert_eq!(entry(&all, "never")["status"], "unavailable");
    assert_eq!(entry(&all, "never")["secrets"][0]["status"], "failed");
}

#[test]
fn reload_reads_every_source_again() {
    let secrets = tempfile::tempdir().unwrap();
    let d = secrets.path();
    write(d, "plain", "plain-file-value-0001");
    let origin = Origin::start();
    let body = format!(
        "credentials:\n  f: {{ type: bearer, token: \"file:{}/plain\" }}\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: f }}\n",
        d.display(),
        origin.port()
    );
    let p = Proxy::start(&body);
    let rt = runtime();
    let client = p.client();
    let url = format!("http://127.0.0.1:{}/x", origin.port());
    rt.block_on(client.get(&url).send()).unwrap();
    assert_eq!(
        origin.last().header("authorization").unwrap(),
        "Bearer plain-file-value-0001"
    );
    write(d, "plain", "plain-file-value-0002");
    let answer = admin_post(p.admin, "/reload");
    assert!(answer.contains("\"reloaded\""), "{answer}");
    rt.block_on(client.get(&url).send()).unwrap();
    assert_eq!(
        origin.last().header("authorization").unwrap(),
        "Bearer plain-file-value-0002"
    );
}
