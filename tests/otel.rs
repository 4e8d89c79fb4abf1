//! OpenTelemetry export through the binary: with `proxy.otel`, a span per request reaches an
//! OTLP/HTTP receiver (a stand-in collector in the test that decodes the JSON export),
//! carrying the access log's fields and never a secret.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A collector stand-in: accepts OTLP/HTTP exports and answers as a collector does.
fn collector() -> Origin {
    Origin::start_with(Arc::new(|_s: &Seen| {
        TokenReply::raw(200, "{}", "application/json")
    }))
}

/// Every span the collector received, with its resource's attributes.
fn spans(c: &Origin) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    for s in c.seen() {
        assert_eq!((s.method.as_str(), s.uri.as_str()), ("POST", "/v1/traces"));
        let v: Value = serde_json::from_slice(&s.body).expect("OTLP JSON");
        for rs in v["resourceSpans"].as_array().unwrap() {
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for span in ss["spans"].as_array().unwrap() {
                    out.push((rs["resource"].clone(), span.clone()));
                }
            }
        }
    }
    out
}

/// An attribute's value as text (OTLP JSON writes ints as strings).
fn attr(of: &Value, key: &str) -> Option<String> {
    let a = of["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?;
    let v = &a["value"];
    ["stringValue", "intValue", "doubleValue"]
        .iter()
        .find_map(|k| match &v[*k] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

#[test]
fn each_request_becomes_a_span_at_the_collector() {
    let c = collector();
    let origin = Origin::start();
    let ts = TokenServer::start(TokenReply::ok("otel-token-0000000001", "3600"));
    let body = format!(
        "credentials:\n  api:\n    type: oauth2_client_credentials\n    token_url: {}\n    client_id: otel-client\n    client_secret: \"${{CS}}\"\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: api }}\n",
        ts.url("/token"),
        origin.port()
    );
    let extra = format!(
        "otel: {{ endpoint: \"http://127.0.0.1:{}\", service_name: credproxy-test }}\nunmatched: deny",
        c.port()
    );
    let p = Proxy::start_with(
        &extra,
        &body,
        &[
            ("CS", "otel-client-secret-01"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let get = |url: String| {
        runtime().block_on(async { p.client().get(url).send().await.unwrap().status().as_u16() })
    };
    assert_eq!(
        get(format!(
            "http://127.0.0.1:{}/v1/items?k=secret-q",
            origin.port()
        )),
        200
    );
    assert_eq!(
        get(format!("http://127.0.0.1:{}/status/503", origin.port())),
        503
    );
    assert_eq!(get("http://127.0.0.1:1/nowhere".into()), 403);

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got = spans(&c);
    while got.len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        got = spans(&c);
    }
    assert_eq!(got.len(), 3, "{got:?}");
    let (resource, ok) = got
        .iter()
        .find(|(_, s)| attr(s, "url.path").as_deref() == Some("/v1/items"))
        .unwrap();
    assert_eq!(
        attr(resource, "service.name").as_deref(),
        Some("credproxy-test")
    );
    assert_eq!(ok["name"], format!("GET 127.0.0.1:{}", origin.port()));
    for (k, v) in [
        ("http.request.method", "GET"),
        ("http.response.status_code", "200"),
        ("credproxy.credential", "api"),
    ] {
        assert_eq!(attr(ok, k).as_deref(), Some(v), "{k} in {ok}");
    }
    assert!(attr(ok, "credproxy.upstream_ms").is_some(), "{ok}");
    let failed = got
        .iter()
        .find(|(_, s)| attr(s, "http.response.status_code").as_deref() == Some("503"))
        .unwrap();
    assert_eq!(
        failed.1["status"]["code"], 2,
        "an error status: {:?}",
        failed.1
    );
    assert!(got
        .iter()
        .any(|(_, s)| attr(s, "credproxy.error").as_deref() == Some("unmatched_denied")));
    for s in c.seen() {
        let text = String::from_utf8_lossy(&s.body);
        assert!(
            !text.contains("otel-token") && !text.contains("secret-q"),
            "{text}"
        );
    }
}
