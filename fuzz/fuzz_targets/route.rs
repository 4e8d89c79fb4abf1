//! Route matching over arbitrary request lines and Host headers never panics, and a planned
//! credential always belongs to a route whose host the target names.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
credentials:
  a: { type: bearer, token: "t0ken-a" }
  b: { type: basic, username: u, password: "pw-b" }
routes:
  - { host: api.example.com, credential: a }
  - { host: "*.corp.example.com:8443", path: /v1/*, methods: [GET], credential: b }
  - { host: "[::1]:8080", path: /admin, credential: a }
  - { path: /side/*, upstream: "https://side.example.com/base", strip_prefix: /side, credential: b }
"#;

fn config() -> &'static credproxy::config::Config {
    static C: OnceLock<credproxy::config::Config> = OnceLock::new();
    C.get_or_init(|| {
        credproxy::config::load_str(CONFIG, std::path::Path::new("f.yaml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    // method \0 target \0 host
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return;
    };
    let Ok(method) = std::str::from_utf8(method) else { return };
    let Ok(mut req) = pingora::http::RequestHeader::build(method, target, None) else {
        return;
    };
    if let Some(host) = parts.next() {
        if req.insert_header("host", host).is_err() {
            return;
        }
    }
    let cfg = config();
    if let Ok(plan) = credproxy::proxy::plan::plan(cfg, &req, None) {
        if let (Some(_), Some(route)) = (plan.credential, plan.route) {
            let host = plan.target.host.as_str();
            let ok = match route {
                0 => host == "api.example.com",
                1 => host.ends_with(".corp.example.com") && plan.target.port == 8443,
                2 => host == "::1" && plan.target.port == 8080,
                3 => host == "side.example.com",
                _ => false,
            };
            assert!(ok, "route {route} credential sent to {host}:{}", plan.target.port);
        }
    }
});
