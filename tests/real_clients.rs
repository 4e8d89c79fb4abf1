//! Real clients as workflows use them: curl with -x / HTTP_PROXY, Python requests with HTTP_PROXY.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;

fn proxy_for(o: &Origin) -> Proxy {
    let body = format!(
        "credentials:\n  gh: {{ type: bearer, token: \"${{GH_TOKEN}}\" }}\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: gh }}\n  - {{ path: /side/*, upstream: \"http://127.0.0.1:{}\", strip_prefix: /side, credential: gh }}\n",
        o.port(),
        o.port()
    );
    Proxy::start_with("", &body, &[("GH_TOKEN", "tok-from-env")])
}

#[test]
fn curl_with_x_and_http_proxy_env() {
    let o = Origin::start();
    let p = proxy_for(&o);
    let url = format!("http://127.0.0.1:{}/curl", o.port());
    let out = Command::new("curl")
        .args(["-sS", "--fail", "-x", &p.url(), &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        o.last().header("authorization").as_deref(),
        Some("Bearer tok-from-env")
    );
    let out = Command::new("curl")
        .args(["-sS", "--fail", &url])
        .env("http_proxy", p.url())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(o.count(), 2);
    let out = Command::new("curl")
        .args(["-sS", "--fail", &format!("{}/side/sidecar", p.url())])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(o.last().uri, "/sidecar");
}

#[test]
fn python_requests_with_http_proxy_env() {
    let o = Origin::start();
    let p = proxy_for(&o);
    let script = r#"
import os, sys, requests
r = requests.post(sys.argv[1], json={"n": 1}, headers={"Authorization": "Bearer mine"})
r.raise_for_status()
s = requests.Session()
for i in range(3):
    s.get(sys.argv[1] + "?i=%d" % i).raise_for_status()
print("ok")
"#;
    let url = format!("http://127.0.0.1:{}/py", o.port());
    let out = Command::new("python3")
        .args(["-c", script, &url])
        .env("HTTP_PROXY", p.url())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .expect("python3 is installed (.ci/setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = o.seen();
    assert_eq!(seen.len(), 4);
    assert!(seen
        .iter()
        .all(|s| s.all("authorization") == vec!["Bearer tok-from-env"]));
    assert_eq!(&seen[0].body[..], br#"{"n": 1}"#);
}
