//! `/metrics` read by a real Prometheus parser (Python `prometheus_client.parser`): every
//! family has the type and the label names the README documents.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;

/// What the parser made of the exposition: family name -> (type, label names of its samples).
fn parse(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    labels = sorted({k for s in f.samples for k in s.labels})
    out[f.name] = [f.type, labels]
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client is installed (.ci/setup)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: BTreeMap<String, (String, Vec<String>)> = serde_json::from_slice(&out.stdout).unwrap();
    v
}

#[test]
fn every_family_parses_with_its_type_and_labels() {
    let origin = Origin::start();
    let ts = TokenServer::start(TokenReply::ok("tok-metrics-1", "3600"));
    let ca = tempfile::tempdir().unwrap();
    credproxy::tls::ca::init(&ca.path().join("ca"), false).unwrap();
    let extra = format!(
        "ca: {{ cert: {0}/ca/ca.pem, key: {0}/ca/ca.key }}\n",
        ca.path().display()
    );
    let body = format!(
        "credentials:\n  gh: {{ type: bearer, token: \"${{GH}}\" }}\n  api:\n    type: oauth2_client_credentials\n    token_url: {}\n    client_id: id\n    client_secret: \"${{CS}}\"\nroutes:\n  - {{ name: \"gh \\\"quoted\\\"\", host: \"127.0.0.1:{1}\", path: /gh/*, credential: gh }}\n  - {{ name: api, host: \"127.0.0.1:{1}\", credential: api }}\n",
        ts.url("/token"),
        origin.port()
    );
    let p = Proxy::start_with(
        &extra,
        &body,
        &[("GH", "gh-secret-value"), ("CS", "client-secret-value")],
    );
    let base = format!("http://127.0.0.1:{}", origin.port());
    admin_post(p.admin, "/reload");
    let rt = runtime();
    for path in ["/gh/a", "/gh/b", "/other", "/gh/../x"] {
        let _ = rt.block_on(p.client().get(format!("{base}{path}")).send());
    }
    let text = p.metrics_with(&["status=\"200\"} 2"]);
    let families = parse(&text);
    let expect: &[(&str, &str, &[&str])] = &[
        (
            "credproxy_requests",
            "counter",
            &["credential", "route", "status"],
        ),
        (
            "credproxy_upstream_latency_seconds",
            "histogram",
            &["le", "route"],
        ),
        ("credproxy_config_reloads", "counter", &["result"]),
        ("credproxy_client_connections", "gauge", &[]),
        ("credproxy_buffered_bytes", "gauge", &[]),
        ("credproxy_intercepted_connections", "gauge", &[]),
        (
            "credproxy_credential_available",
            "gauge",
            &["credential", "type"],
        ),
        (
            "credproxy_token_fetches",
            "counter",
            &["credential", "result"],
        ),
        (
            "credproxy_token_renewals",
            "counter",
            &["credential", "result"],
        ),
        (
            "credproxy_credential_needs_reconnect",
            "gauge",
            &["credential"],
        ),
        ("credproxy_token_cache_hits", "counter", &["credential"]),
        (
            "credproxy_token_seconds_to_expiry",
            "gauge",
            &["credential"],
        ),
        ("credproxy_tls_leaf_mints", "counter", &[]),
    ];
    for (name, ty, labels) in expect {
        let (got_ty, got_labels) = families
            .get(*name)
            .unwrap_or_else(|| panic!("no family {name} in {families:?}\n{text}"));
        assert_eq!(got_ty, ty, "{name}");
        assert_eq!(got_labels, labels, "{name}");
    }
    assert_eq!(
        families.len(),
        expect.len(),
        "unexpected families: {families:?}"
    );
    assert!(
        text.contains("route=\"gh \\\"quoted\\\"\""),
        "quotes in a route name are escaped, not dropped:\n{text}"
    );
}
