//! Logs through the binary: JSON lines (from `proxy.log.format` or `--log-format`), one
//! access line per request with its fields, and the audit log of token events, parsed as
//! JSON; the access log can be switched off on its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SECRET: &str = "logs-client-secret-0001";

fn body(ts: &TokenServer, origin: &Origin) -> String {
    format!(
        "clients:\n  - {{ name: flows, secret: \"${{FLOWS}}\", tenant: acme, credentials: [api] }}\ncredentials:\n  api:\n    type: oauth2_client_credentials\n    token_url: {}\n    client_id: logs-client\n    client_secret: \"${{CS}}\"\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: api }}\n",
        ts.url("/token"),
        origin.port()
    )
}

const ENV: [(&str, &str); 2] = [("CS", SECRET), ("FLOWS", "flows-secret-00000001")];

fn get(p: &Proxy, url: &str) -> u16 {
    runtime().block_on(async {
        let proxy = reqwest::Proxy::http(p.url())
            .unwrap()
            .basic_auth("flows", "flows-secret-00000001");
        let c = reqwest::Client::builder().proxy(proxy).build().unwrap();
        c.get(url).send().await.unwrap().status().as_u16()
    })
}

/// Every line of the log as JSON (each must be one object), once `want` lines match `pick`.
fn json_lines(p: &Proxy, pick: impl Fn(&Value) -> bool, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = p.log_text();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| {
                let v: Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
                assert!(v.is_object(), "{l}");
                v
            })
            .collect();
        let picked: Vec<Value> = lines.into_iter().filter(|v| pick(v)).collect();
        if picked.len() >= want || Instant::now() > deadline {
            return picked;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn target(v: &Value) -> &str {
    v["target"].as_str().unwrap_or("")
}

#[test]
fn json_access_and_audit_lines_carry_their_fields() {
    let origin = Origin::start();
    let ts = TokenServer::start(TokenReply::ok("logs-token-000000001", "3600"));
    let p = Proxy::start_with(
        "log: { format: json }\nunmatched: deny",
        &body(&ts, &origin),
        &ENV,
    );
    let o = origin.port();
    assert_eq!(
        get(&p, &format!("http://127.0.0.1:{o}/v1/items?api_key=k-123")),
        200
    );
    assert_eq!(get(&p, &format!("http://127.0.0.1:{o}/status/401")), 401);
    assert_eq!(get(&p, "http://127.0.0.1:1/elsewhere"), 403);

    let access = json_lines(&p, |v| target(v) == "credproxy::access", 3);
    assert_eq!(access.len(), 3, "{access:?}");
    let ok = &access[0];
    for (k, want) in [
        ("client", "flows"),
        ("route", &format!("127.0.0.1:{o}") as &str),
        ("credential", "api"),
        ("method", "GET"),
        ("host", &format!("127.0.0.1:{o}")),
        ("path", "/v1/items"),
        ("level", "INFO"),
    ] {
        assert_eq!(ok[k].as_str(), Some(want), "{k} in {ok}");
    }
    assert_eq!(ok["status"], 200);
    assert!(ok["bytes"].as_u64().unwrap() > 0, "{ok}");
    assert!(ok["upstream_ms"].as_f64().unwrap() >= 0.0, "{ok}");
    assert!(ok["total_ms"].as_f64().unwrap() >= ok["upstream_ms"].as_f64().unwrap());
    assert!(
        ok.get("tenant").is_none(),
        "no tenant for a shared credential: {ok}"
    );
    assert_eq!(access[1]["status"], 401);
    let refused = &access[2];
    assert_eq!(
        (refused["status"].as_u64(), refused["error"].as_str()),
        (Some(403), Some("unmatched_denied")),
        "{refused}"
    );

    // The token's story: fetched for the first request, renewed after the 401.
    let audit = json_lines(&p, |v| target(v) == "credproxy::audit", 2);
    let events: Vec<&str> = audit.iter().map(|v| v["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["token_fetch", "token_renewal"], "{audit:?}");
    for a in &audit {
        assert_eq!(
            (a["credential"].as_str(), a["result"].as_str()),
            (Some("api"), Some("ok"))
        );
        assert!(a["duration_ms"].as_f64().is_some(), "{a}");
    }
    // An admin refresh that the endpoint refuses: the status and OAuth code are in the line.
    ts.set(TokenReply::raw(
        400,
        r#"{"error":"invalid_client","error_description":"nope"}"#,
        "application/json",
    ));
    admin_post(p.admin, "/credentials/api/refresh");
    let failed = json_lines(&p, |v| v["event"] == "token_refresh", 1);
    assert_eq!(
        (
            failed[0]["result"].as_str(),
            failed[0]["status"].as_u64(),
            failed[0]["error_code"].as_str()
        ),
        (Some("error"), Some(400), Some("invalid_client")),
        "{failed:?}"
    );
}

#[test]
fn the_flag_wins_and_the_access_log_switches_off_alone() {
    let origin = Origin::start();
    let ts = TokenServer::start(TokenReply::ok("logs-token-000000002", "3600"));
    // The config asks for text; `run --log-format json` wins. Default level (info).
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let conf = dir.path().join("c.yaml");
    std::fs::write(
        &conf,
        format!(
            "proxy:\n  listen: 127.0.0.1:{port}\n  admin: 127.0.0.1:{admin}\n  log: {{ format: text }}\n  egress: {{ allow: [127.0.0.0/8] }}\n{}",
            body(&ts, &origin)
        ),
    )
    .unwrap();
    let run = |filter: &str| {
        let log = dir.path().join(format!("{}.log", filter.len()));
        let mut child = Command::new(bin())
            .args(["run", "--log-format", "json", "-c"])
            .arg(&conf)
            .env("RUST_LOG", filter)
            .envs(ENV)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(addr, "/readyz").map(|r| r.0).unwrap_or(0) != 200 {
            assert!(Instant::now() < deadline, "not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        let url = format!("http://127.0.0.1:{}/x", origin.port());
        let raw_req = format!(
            "GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nProxy-Authorization: Basic Zmxvd3M6Zmxvd3Mtc2VjcmV0LTAwMDAwMDAx\r\nConnection: close\r\n\r\n",
            origin.port()
        );
        let resp = raw(
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            raw_req.as_bytes(),
        );
        assert_eq!(status_of(&resp), 200, "{resp}");
        std::thread::sleep(Duration::from_millis(300));
        let _ = child.kill();
        let _ = child.wait();
        std::fs::read_to_string(&log).unwrap()
    };
    let text = run("info");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(
        lines.iter().any(|v| target(v) == "credproxy::access"),
        "{text}"
    );
    assert!(
        lines.iter().any(|v| target(v) == "credproxy::audit"),
        "{text}"
    );
    assert!(!text.contains("logs-token-000000002") && !text.contains(SECRET));

    let quiet = run("info,credproxy::access=off");
    assert!(!quiet.contains("credproxy::access"), "{quiet}");
    assert!(quiet.contains("\"event\":\"token_fetch\""), "{quiet}");
}
