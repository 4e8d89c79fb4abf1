//! Token credentials through the real binary, against a mock token endpoint on port 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;

const SECRET: &str = "cs-very-secret-42";

fn proxy(ts: &TokenServer, origin: &Origin, cred_extra: &str) -> Proxy {
    proxy_with(ts, origin, cred_extra, "")
}

fn proxy_with(ts: &TokenServer, origin: &Origin, cred_extra: &str, proxy_extra: &str) -> Proxy {
    let body = format!(
        "credentials:\n  api:\n    type: oauth2_client_credentials\n    token_url: \"{}\"\n    client_id: \"${{CID}}\"\n    client_secret: \"${{CSECRET}}\"\n    scopes: [read, write]\n{cred_extra}routes:\n  - {{ host: \"127.0.0.1:{}\", credential: api }}\n",
        ts.url("/oauth/token?tenant=acme"),
        origin.port()
    );
    Proxy::start_with(
        proxy_extra,
        &body,
        &[("CID", "client-1"), ("CSECRET", SECRET)],
    )
}

fn get(p: &Proxy, o: &Origin) -> (u16, String) {
    runtime().block_on(async {
        let r = p
            .client()
            .get(format!("http://127.0.0.1:{}/data", o.port()))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

#[test]
fn each_auth_method_as_the_token_server_sees_it() {
    let o = Origin::start();
    for method in ["basic", "post_body", "post_query", "get_query"] {
        let ts = TokenServer::start(TokenReply::ok("tok-abc", "3600"));
        let p = proxy(&ts, &o, &format!("    auth_method: {method}\n"));
        assert_eq!(get(&p, &o).0, 200, "{method}");
        assert_eq!(
            o.last().header("authorization").as_deref(),
            Some("Bearer tok-abc")
        );
        let r = ts.requests().pop().unwrap();
        let body = String::from_utf8_lossy(&r.body).into_owned();
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("client-1:{SECRET}"))
        );
        match method {
            "basic" => {
                assert_eq!(r.method, "POST");
                assert_eq!(r.header("authorization"), Some(basic));
                assert_eq!(
                    r.header("content-type").as_deref(),
                    Some("application/x-www-form-urlencoded")
                );
                assert_eq!(body, "grant_type=client_credentials&scope=read+write");
                assert_eq!(r.uri, "/oauth/token?tenant=acme");
            }
            "post_body" => {
                assert_eq!(r.method, "POST");
                assert!(r.header("authorization").is_none());
                assert_eq!(body, format!("grant_type=client_credentials&scope=read+write&client_id=client-1&client_secret={SECRET}"));
            }
            _ => {
                assert_eq!(
                    r.method,
                    if method == "post_query" {
                        "POST"
                    } else {
                        "GET"
                    }
                );
                assert!(body.is_empty());
                // The URL's own query parameters are kept and merged with the OAuth ones.
                assert_eq!(r.uri, format!("/oauth/token?tenant=acme&grant_type=client_credentials&scope=read+write&client_id=client-1&client_secret={SECRET}"));
            }
        }
    }
}

#[test]
fn expires_in_as_number_and_string() {
    let o = Origin::start();
    for (expires, want) in [("600", 600u64), ("\"900\"", 900)] {
        let ts = TokenServer::start(TokenReply::ok("t", expires));
        let p = proxy(&ts, &o, "");
        assert_eq!(get(&p, &o).0, 200);
        let (_, creds) = http_get(p.admin, "/credentials").unwrap();
        let v: serde_json::Value = serde_json::from_str(&creds).unwrap();
        let secs = v[0]["seconds_to_expiry"].as_u64().unwrap();
        // 10% (at most 30 s) is kept as a margin against expiry in transit.
        assert!(
            secs <= want && secs + 31 >= want * 9 / 10,
            "{expires}: {secs}"
        );
        assert_eq!(v[0]["status"], "ok");
        assert_eq!(v[0]["fetch_count"], 1);
    }
}

#[test]
fn bad_token_endpoints_give_502_with_their_status_and_no_secret() {
    let o = Origin::start();
    let cases = [
        (
            TokenReply::raw(200, r#"{"token_type":"bearer"}"#, "application/json"),
            502,
            "without access_token",
        ),
        (
            TokenReply::raw(400, r#"{"error":"invalid_client"}"#, "application/json"),
            502,
            "answered 400 (invalid_client)",
        ),
        (TokenReply::raw(401, "", "text/plain"), 502, "answered 401"),
        (
            TokenReply::raw(500, "oops", "text/plain"),
            502,
            "answered 500",
        ),
        (
            TokenReply::raw(200, "{not json", "application/json"),
            502,
            "not a JSON token response",
        ),
        (
            TokenReply::raw(502, "<html><body>Bad gateway</body></html>", "text/html"),
            502,
            "answered 502 (HTML error page)",
        ),
    ];
    for (reply, status, want) in cases {
        let ts = TokenServer::start(reply);
        let p = proxy(&ts, &o, "");
        let (got, body) = get(&p, &o);
        assert_eq!(got, status, "{want}: {body}");
        let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
        assert_eq!(v["error"], "token_endpoint_error");
        assert_eq!(v["credential"], "api");
        assert!(v["message"].as_str().unwrap().contains(want), "{body}");
        assert!(!body.contains(SECRET) && !p.log_text().contains(SECRET));
    }
    assert_eq!(o.count(), 0, "no request went out without its credential");
}

#[test]
fn token_endpoint_timeout_is_504() {
    let o = Origin::start();
    let mut slow = TokenReply::ok("t", "60");
    slow.delay = Duration::from_secs(5);
    let ts = TokenServer::start(slow);
    let p = proxy(&ts, &o, "    timeout: 300ms\n");
    let (status, body) = get(&p, &o);
    assert_eq!(status, 504, "{body}");
    assert!(
        body.contains("token_endpoint_timeout") && body.contains("timed out"),
        "{body}"
    );
    assert_eq!(
        ts.requests().len(),
        3,
        "a timeout is retried, a bounded number of times"
    );
}

#[test]
fn one_token_request_for_1000_concurrent_cold_requests() {
    let o = Origin::start();
    let mut slow = TokenReply::ok("shared", "3600");
    slow.delay = Duration::from_millis(500);
    let ts = TokenServer::start(slow);
    // 1,000 connections from one address: above the default per-client cap of 256.
    let p = proxy_with(&ts, &o, "", "limits: { max_connections_per_client: 2000 }");
    let url = format!("http://127.0.0.1:{}/c", o.port());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(async {
        let client = reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(p.url()).unwrap())
            .pool_max_idle_per_host(1000)
            .build()
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..1000 {
            let (c, u) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                c.get(u).send().await.map(|r| r.status().as_u16())
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().unwrap() == 200 {
                ok += 1;
            }
        }
        ok
    });
    assert_eq!(ok, 1000);
    assert_eq!(ts.requests().len(), 1, "exactly one token request");
    assert!(o
        .seen()
        .iter()
        .all(|s| s.header("authorization").as_deref() == Some("Bearer shared")));
    let m = p.metrics();
    assert!(
        m.contains("credproxy_token_fetches_total{credential=\"api\",result=\"ok\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("credproxy_token_seconds_to_expiry{credential=\"api\"}"),
        "{m}"
    );
}

#[test]
fn cached_token_is_reused_and_admin_refresh_fetches_anew() {
    let o = Origin::start();
    let ts = TokenServer::start(TokenReply::ok("first", "3600"));
    let p = proxy(&ts, &o, "");
    for _ in 0..5 {
        assert_eq!(get(&p, &o).0, 200);
    }
    assert_eq!(ts.requests().len(), 1);
    ts.set(TokenReply::ok("tok-2nd-xyz", "3600"));
    let resp = admin_post(p.admin, "/credentials/api/refresh");
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(
        !resp.contains("tok-2nd-xyz"),
        "the token itself is never shown"
    );
    get(&p, &o);
    assert_eq!(
        o.last().header("authorization").as_deref(),
        Some("Bearer tok-2nd-xyz")
    );
    assert_eq!(ts.requests().len(), 2);
}

#[test]
fn check_online_obtains_a_token_or_prints_the_error() {
    let ts = TokenServer::start(TokenReply::ok("t", "3600"));
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.yaml");
    let write = |url: &str| {
        std::fs::write(&conf, format!("credentials:\n  api:\n    type: oauth2_client_credentials\n    token_url: \"{url}\"\n    client_id: id\n    client_secret: \"${{CSECRET}}\"\nroutes:\n  - {{ host: a.example.com, credential: api }}\n")).unwrap();
    };
    write(&ts.url("/token"));
    let run = |offline: bool| {
        let mut c = std::process::Command::new(bin());
        c.args(["check", "-c", conf.to_str().unwrap()])
            .env("CSECRET", SECRET);
        if offline {
            c.arg("--offline");
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(false);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("OK (token obtained, expires in"), "{out}");
    assert_eq!(ts.requests().len(), 1);
    let (code, out) = run(true);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("offline: token not fetched"));
    assert_eq!(ts.requests().len(), 1, "--offline contacts nothing");
    ts.set(TokenReply::raw(
        401,
        r#"{"error":"invalid_client"}"#,
        "application/json",
    ));
    let (code, out) = run(false);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("FAILED: token endpoint") && out.contains("answered 401 (invalid_client)"),
        "{out}"
    );
    assert!(!out.contains(SECRET));
}

#[test]
fn config_rejects_bad_token_urls() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.yaml");
    std::fs::write(&conf, "credentials:\n  api:\n    type: oauth2_client_credentials\n    token_url: http://login.example.com/token\n    client_id: id\n    client_secret: \"${S}\"\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":4: credentials.api.token_url: ") && err.contains("must use https"),
        "{err}"
    );
}

#[test]
fn jwt_key_pair_signs_once_and_verifies_at_the_origin() {
    let o = Origin::start();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/credentials/testdata");
    let body = format!(
        "credentials:\n  partner:\n    type: jwt_key_pair\n    private_key: file:{dir}/rsa.pem\n    algorithm: PS256\n    claims: {{ iss: credproxy, sub: workflows, aud: https://partner.example.com }}\n    lifetime: 10m\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: partner }}\n",
        o.port()
    );
    let p = Proxy::start(&body);
    let url = format!("http://127.0.0.1:{}/jwt", o.port());
    let rt = runtime();
    for _ in 0..3 {
        assert_eq!(
            rt.block_on(p.client().get(&url).send()).unwrap().status(),
            200
        );
    }
    let seen = o.seen();
    let auth: Vec<String> = seen
        .iter()
        .map(|s| s.header("authorization").unwrap())
        .collect();
    assert!(auth.iter().all(|a| a == &auth[0]), "one JWT, cached");
    let jwt = auth[0].strip_prefix("Bearer ").unwrap();
    let public = std::fs::read(format!("{dir}/rsa.pub.pem")).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::PS256);
    v.set_audience(&["https://partner.example.com"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_rsa_pem(&public).unwrap(),
        &v,
    )
    .unwrap();
    assert_eq!(data.claims["iss"], "credproxy");
    assert_eq!(
        data.claims["exp"].as_u64().unwrap() - data.claims["iat"].as_u64().unwrap(),
        600
    );
    assert!(!p.log_text().contains(jwt));
}

#[test]
fn salesforce_data360_two_steps_and_which_step_failed() {
    use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
    use std::sync::Arc;
    let o = Origin::start();
    let port = Arc::new(AtomicU16::new(0));
    let step2_status = Arc::new(AtomicU32::new(200));
    let (p2, s2) = (port.clone(), step2_status.clone());
    let sf = Origin::start_with(Arc::new(move |seen: &Seen| {
        if seen.uri.starts_with("/services/oauth2/token") {
            let body = format!("{{\"access_token\":\"core-1\",\"instance_url\":\"http://127.0.0.1:{}\",\"token_type\":\"Bearer\"}}", p2.load(Ordering::SeqCst));
            TokenReply::raw(200, &body, "application/json")
        } else {
            match s2.load(Ordering::SeqCst) {
                200 => TokenReply::raw(
                    200,
                    r#"{"access_token":"d360-xyz","instance_url":"https://t.c360a.salesforce.com","expires_in":7200}"#,
                    "application/json",
                ),
                s => TokenReply::raw(s as u16, r#"{"error":"invalid_grant"}"#, "application/json"),
            }
        }
    }));
    port.store(sf.port(), Ordering::SeqCst);
    let body = format!(
        "credentials:\n  d360:\n    type: salesforce_data360\n    login_url: http://127.0.0.1:{}\n    client_id: cid\n    client_secret: \"${{S}}\"\n    dataspace: sales\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: d360 }}\n",
        sf.port(),
        o.port()
    );
    let p = Proxy::start_with("", &body, &[("S", SECRET)]);
    assert_eq!(get(&p, &o).0, 200);
    assert_eq!(
        o.last().header("authorization").as_deref(),
        Some("Bearer d360-xyz")
    );
    let reqs = sf.seen();
    assert_eq!(reqs.len(), 2);
    let step1 = String::from_utf8_lossy(&reqs[0].body).into_owned();
    assert_eq!(
        step1,
        format!("grant_type=client_credentials&client_id=cid&client_secret={SECRET}")
    );
    assert_eq!(reqs[1].uri, "/services/a360/token");
    let step2 = String::from_utf8_lossy(&reqs[1].body).into_owned();
    assert_eq!(step2, "grant_type=urn%3Asalesforce%3Agrant-type%3Aexternal%3Acdp&subject_token=core-1&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&dataspace=sales");
    // Cached for 5 minutes, not the 2 hours the exchange offered.
    let (_, creds) = http_get(p.admin, "/credentials").unwrap();
    let v: serde_json::Value = serde_json::from_str(&creds).unwrap();
    assert!(v[0]["seconds_to_expiry"].as_u64().unwrap() <= 300);

    step2_status.store(401, Ordering::SeqCst);
    let resp = admin_post(p.admin, "/credentials/d360/refresh");
    assert_eq!(status_of(&resp), 502, "{resp}");
    assert!(
        resp.contains("(step 2) answered 401 (invalid_grant)"),
        "{resp}"
    );
    assert!(!resp.contains("core-1") && !resp.contains(SECRET));
}

/// A Google-style key file around the test RSA key.
fn google_key(token_uri: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/credentials/testdata");
    serde_json::json!({
        "type": "service_account",
        "client_email": "robot@proj.iam.gserviceaccount.com",
        "private_key": std::fs::read_to_string(format!("{dir}/rsa.pem")).unwrap(),
        "private_key_id": "kid-1",
        "token_uri": token_uri,
    })
    .to_string()
}

fn verify_google_jwt(jwt: &str, aud: &str) -> Option<serde_json::Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/credentials/testdata");
    let public = std::fs::read(format!("{dir}/rsa.pub.pem")).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[aud]);
    jsonwebtoken::decode::<serde_json::Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_rsa_pem(&public).unwrap(),
        &v,
    )
    .ok()
    .map(|d| d.claims)
}

#[test]
fn google_access_token_mode_against_a_token_uri_that_checks_the_assertion() {
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Arc;
    let o = Origin::start();
    let port = Arc::new(AtomicU16::new(0));
    let p2 = port.clone();
    let google = Origin::start_with(Arc::new(move |seen: &Seen| {
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&seen.body)
            .into_owned()
            .collect();
        let get = |k: &str| {
            form.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let aud = format!("http://127.0.0.1:{}/token", p2.load(Ordering::SeqCst));
        match verify_google_jwt(&get("assertion"), &aud) {
            Some(c)
                if get("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer"
                    && c["scope"] == "https://www.googleapis.com/auth/calendar.readonly"
                    && c["sub"] == "admin@example.com" =>
            {
                TokenReply::ok("ya29.google-token", "3599")
            }
            _ => TokenReply::raw(
                400,
                r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
                "application/json",
            ),
        }
    }));
    port.store(google.port(), Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sa.json"),
        google_key(&format!("http://127.0.0.1:{}/token", google.port())),
    )
    .unwrap();
    let body = format!(
        "credentials:\n  gcal:\n    type: google_service_account\n    key_file: file:{}\n    scopes: [https://www.googleapis.com/auth/calendar.readonly]\n    subject: admin@example.com\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: gcal }}\n",
        dir.path().join("sa.json").display(),
        o.port()
    );
    let p = Proxy::start(&body);
    assert_eq!(get(&p, &o).0, 200);
    assert_eq!(
        o.last().header("authorization").as_deref(),
        Some("Bearer ya29.google-token")
    );
    assert_eq!(google.count(), 1);
}

#[test]
fn google_self_signed_jwt_mode_audience_is_the_target() {
    let o = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sa.json"),
        google_key("https://oauth2.googleapis.com/token"),
    )
    .unwrap();
    let body = format!(
        "credentials:\n  gsa:\n    type: google_service_account\n    key_file: file:{}\n    mode: self_signed_jwt\nroutes:\n  - {{ host: \"calendar.googleapis.test:{}\", credential: gsa, allow_http: true }}\n",
        dir.path().join("sa.json").display(),
        o.port()
    );
    let p = Proxy::start_with(
        "dns: { overrides: { calendar.googleapis.test: 127.0.0.1 } }",
        &body,
        &[],
    );
    let rt = runtime();
    for _ in 0..2 {
        let r = rt
            .block_on(
                p.client()
                    .get(format!(
                        "http://calendar.googleapis.test:{}/calendar/v3",
                        o.port()
                    ))
                    .send(),
            )
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let seen = o.seen();
    let a = seen[0].header("authorization").unwrap();
    assert_eq!(Some(a.clone()), seen[1].header("authorization"), "cached");
    let claims = verify_google_jwt(
        a.strip_prefix("Bearer ").unwrap(),
        "https://calendar.googleapis.test/",
    )
    .expect("valid JWT for the target API");
    assert_eq!(claims["iss"], "robot@proj.iam.gserviceaccount.com");
}

/// A token server issuing tok-1, tok-2, ... and an origin that rejects tok-1 (revoked early).
fn revoking_pair() -> (Origin, Origin) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let n = Arc::new(AtomicU32::new(0));
    let ts = Origin::start_with(Arc::new(move |_s: &Seen| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        TokenReply::ok(&format!("tok-{i}"), "3600")
    }));
    let origin = Origin::start_with(Arc::new(|s: &Seen| {
        if s.header("authorization").as_deref() == Some("Bearer tok-1") {
            return TokenReply::raw(401, r#"{"error":"invalid_token"}"#, "application/json");
        }
        TokenReply::raw(
            200,
            &format!(
                "{{\"len\":{},\"sha\":\"{}\"}}",
                s.body.len(),
                sha256_hex(&s.body)
            ),
            "application/json",
        )
    }));
    (ts, origin)
}

fn replay_proxy(ts: &Origin, origin: &Origin) -> Proxy {
    let body = format!(
        "credentials:\n  api:\n    type: oauth2_client_credentials\n    token_url: \"http://127.0.0.1:{}/token\"\n    client_id: id\n    client_secret: \"${{S}}\"\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: api }}\n",
        ts.port(),
        origin.port()
    );
    Proxy::start_with("", &body, &[("S", SECRET)])
}

#[test]
fn upstream_401_drops_the_token_and_replays_get_once() {
    let (ts, origin) = revoking_pair();
    let p = replay_proxy(&ts, &origin);
    let (status, _) = get(&p, &origin);
    assert_eq!(status, 200);
    let auths: Vec<_> = origin
        .seen()
        .iter()
        .map(|s| s.header("authorization").unwrap())
        .collect();
    assert_eq!(auths, vec!["Bearer tok-1", "Bearer tok-2"]);
    assert_eq!(ts.count(), 2);
    // The new token is cached for the next request.
    assert_eq!(get(&p, &origin).0, 200);
    assert_eq!(ts.count(), 2);
}

#[test]
fn upstream_401_replays_post_bodies_whole() {
    for size in [0usize, 10_000, 1 << 20, 3 << 20] {
        let (ts, origin) = revoking_pair();
        let p = replay_proxy(&ts, &origin);
        let body: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let want = sha256_hex(&body);
        let url = format!("http://127.0.0.1:{}/upload", origin.port());
        let resp = runtime()
            .block_on(p.client().post(&url).body(body.clone()).send())
            .unwrap();
        assert_eq!(resp.status(), 200, "{size}");
        let text = runtime().block_on(resp.text()).unwrap();
        assert!(text.contains(&want), "{size}: {text}");
        let seen = origin.seen();
        assert_eq!(seen.len(), 2, "{size}");
        assert!(
            seen.iter().all(|s| s.body.len() == size),
            "both attempts carried the whole body ({size})"
        );
    }
}

#[test]
fn upstream_401_with_expect_continue_and_curl() {
    let (ts, origin) = revoking_pair();
    let p = replay_proxy(&ts, &origin);
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let file = p.dir.path().join("b.bin");
    std::fs::write(&file, &body).unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-x",
            &p.url(),
            "-H",
            "Expect: 100-continue",
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .arg(format!("http://127.0.0.1:{}/up", origin.port()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&sha256_hex(&body)),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn chunked_bodies_are_not_replayed_but_the_token_is_dropped() {
    let (ts, origin) = revoking_pair();
    let p = replay_proxy(&ts, &origin);
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            &p.url(),
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "hello",
        ])
        .arg(format!("http://127.0.0.1:{}/c", origin.port()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "401",
        "a streamed body cannot be sent twice: the 401 passes through"
    );
    assert_eq!(get(&p, &origin).0, 200, "the next request gets a new token");
    assert_eq!(ts.count(), 2);
}

#[test]
fn concurrent_401s_share_one_renewal() {
    let (ts, origin) = revoking_pair();
    let p = replay_proxy(&ts, &origin);
    // Cold: all 50 share the fetch of tok-1, are all rejected, and share one renewal.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{}/x", origin.port());
    let statuses = rt.block_on(async {
        let c = p.client();
        let tasks: Vec<_> = (0..50)
            .map(|_| tokio::spawn(c.get(url.clone()).send()))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap().unwrap().status().as_u16());
        }
        out
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(ts.count(), 2, "one fetch, one renewal");
    let rejected = origin
        .seen()
        .iter()
        .filter(|s| s.header("authorization").as_deref() == Some("Bearer tok-1"))
        .count();
    assert!(
        rejected >= 1 && origin.count() == 50 + rejected,
        "every rejected request was replayed once"
    );
}

#[test]
fn no_token_secret_in_logs_even_at_trace() {
    let o = Origin::start();
    let ts = TokenServer::start(TokenReply::ok("at-trace-xyz", "3600"));
    let body = format!(
        "credentials:\n  api:\n    type: oauth2_client_credentials\n    token_url: \"{}\"\n    client_id: client-1\n    client_secret: \"${{CSECRET}}\"\n    auth_method: get_query\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: api }}\n",
        ts.url("/token?tenant=acme"),
        o.port()
    );
    let p = Proxy::start_with("", &body, &[("CSECRET", SECRET), ("RUST_LOG", "trace")]);
    assert_eq!(get(&p, &o).0, 200);
    ts.set(TokenReply::raw(500, "down", "text/plain"));
    let _ = admin_post(p.admin, "/credentials/api/refresh");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = p.log_text();
    assert!(log.contains("TRACE") || log.contains("DEBUG"));
    for s in [SECRET, "at-trace-xyz"] {
        assert!(
            !log.contains(s),
            "{s} in log:\n{}",
            log.lines()
                .filter(|l| l.contains(s))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn a_token_that_expires_during_a_slow_upload_is_replaced_before_sending() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let n = Arc::new(AtomicU32::new(0));
    let ts = Origin::start_with(Arc::new(move |_s: &Seen| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        TokenReply::ok(&format!("short-{i}"), "2")
    }));
    let origin = Origin::start();
    let p = replay_proxy(&ts, &origin);
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let port = origin.port();
    write!(s, "POST http://127.0.0.1:{port}/slow HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    s.write_all(&[b'x'; 100_000]).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let seen = origin.last();
    assert_eq!(seen.body.len(), 100_000);
    assert_eq!(
        seen.header("authorization").as_deref(),
        Some("Bearer short-2"),
        "the expired short-1 was not sent"
    );
}

/// A failed fetch is one WARN line naming the credential, the endpoint's status and OAuth
/// error code (at the default level); the next success says the credential recovered.
#[test]
fn token_failures_and_recovery_are_logged_once_each() {
    let o = Origin::start();
    let ts = TokenServer::start(TokenReply::raw(
        401,
        r#"{"error":"invalid_client","error_description":"bad secret"}"#,
        "application/json",
    ));
    let p = proxy(&ts, &o, "");
    assert_eq!(get(&p, &o).0, 502);
    let log = p.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("token fetch failed"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    for field in [
        "WARN",
        "credential=\"api\"",
        "status=401",
        "oauth_error=\"invalid_client\"",
        "bad secret",
    ] {
        assert!(lines[0].contains(field), "{field}: {}", lines[0]);
    }
    ts.set(TokenReply::ok("recovered-token-1", "3600"));
    // The failure is remembered for the negative TTL (2 s); then the next request fetches.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(get(&p, &o).0, 200);
    let log = p.log_text();
    let recovered: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("token fetch recovered"))
        .collect();
    assert_eq!(recovered.len(), 1, "{log}");
    assert!(
        recovered[0].contains("INFO") && recovered[0].contains("credential=\"api\""),
        "{}",
        recovered[0]
    );
}
