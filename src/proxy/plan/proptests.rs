//! Property: a credential is planned only for a request whose destination, as a WHATWG URL
//! parser (the `url` crate) reads it, matches the credential's route, and the request is sent
//! to exactly that destination. Hosts and paths are random, biased toward near-misses.

use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::config::load_str;

const CONFIG: &str = r#"
credentials:
  a: { type: bearer, token: "${T}" }
  b: { type: bearer, token: "${T}" }
  c: { type: bearer, token: "${T}" }
  d: { type: bearer, token: "${T}" }
routes:
  - { host: api.example.com, credential: a }
  - { host: "*.corp.example.com:8443", path: /v1/*, methods: [GET], credential: b }
  - { host: "127.0.0.1:9000", credential: c }
  - { host: "[::1]:8080", path: /admin, credential: d }
"#;

fn config() -> Config {
    load_str(CONFIG, Path::new("p.yaml"), &|_| Some("tok".into())).unwrap()
}

/// The route an independent reading of the destination matches, if any.
/// The path as servers that drop `;` parameters before resolving dot segments read it
/// (Tomcat, Jetty, Spring): `/v1/..;/admin` is `/admin` to them.
fn param_stripped(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/').skip(1) {
        match seg.split(';').next().unwrap_or("") {
            ".." => {
                out.pop();
            }
            "." => {}
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// The route each reading of the destination matches; a credential needs every reading to
/// agree. Credentials travel over plain HTTP only to the loopback routes (c and d).
fn oracle(tls: bool, host: &str, port: u16, path: &str, method: &str) -> Option<&'static str> {
    let alt = param_stripped(path);
    let glob = |pat: &str| {
        [path, alt.as_str()].iter().all(|p| {
            pat.strip_suffix('*')
                .map_or(*p == pat, |prefix| p.starts_with(prefix))
        })
    };
    if host == "api.example.com" && tls {
        return Some("a");
    }
    if host.ends_with(".corp.example.com")
        && tls
        && port == 8443
        && glob("/v1/*")
        && method == "GET"
    {
        return Some("b");
    }
    if host == "127.0.0.1" && port == 9000 {
        return Some("c");
    }
    if (host == "[::1]" || host == "::1") && port == 8080 && glob("/admin") {
        return Some("d");
    }
    None
}

fn host_strategy() -> impl Strategy<Value = String> {
    let near = prop::sample::select(vec![
        "api.example.com",
        "API.Example.COM.",
        "api.example.com.",
        "api.example.com..",
        "api.example.com.evil.io",
        "evil.io.api.example.com",
        "evilexample.com",
        "api-example.com",
        "api.example.co",
        "api.example.com@evil.io",
        "evil.io@api.example.com",
        "user:pw@api.example.com",
        "api.example.com%2eevil.io",
        "api%2eexample.com",
        "api.example.com\\@evil.io",
        "api.example.com\\",
        "x.corp.example.com",
        "a.b.corp.example.com",
        "corp.example.com",
        "xcorp.example.com",
        ".corp.example.com",
        "x.corp.example.com.evil.io",
        "127.0.0.1",
        "127.0.0.01",
        "0x7f.0.0.1",
        "2130706433",
        "127.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[0:0:0:0:0:0:0:1]",
        "xn--pi-7ka.example.com",
        "ápi.example.com",
        "api.example.com#frag",
        "api.example.com?q",
        "",
    ])
    .prop_map(str::to_string);
    let random = "[a-z0-9.@%:\\[\\]\\\\-]{0,24}";
    prop_oneof![3 => near, 1 => random]
}

fn path_strategy() -> impl Strategy<Value = String> {
    let seg = prop::sample::select(vec![
        "v1",
        "V1",
        "admin",
        "",
        ".",
        "..",
        "%2e",
        "%2e%2e",
        ".%2e",
        "%2f",
        "v1%2f..",
        "x",
        "%00",
        ";",
        "v1;x",
        "..;",
        "..%3b",
        "%252e%252e",
        "*",
        "?q=1",
        "#f",
        "\\",
        "%5c",
    ]);
    prop::collection::vec(seg, 0..5).prop_map(|s| format!("/{}", s.join("/")))
}

fn port_strategy() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "", ":80", ":443", ":8443", ":9000", ":8080", ":0", ":65536", ":x",
    ])
    .prop_map(str::to_string)
}

/// What happened to one generated request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    /// pingora's request parser refuses it.
    Unparsable,
    /// credproxy refuses it (400, 403, 404, 407).
    Refused,
    /// Forwarded without a credential.
    NoCredential,
    /// Forwarded with a credential, checked against the oracle.
    Credential,
}

fn check_absolute(
    tls: bool,
    host: &str,
    port: &str,
    path: &str,
    method: &str,
) -> Result<Outcome, TestCaseError> {
    let scheme = if tls { "https" } else { "http" };
    let target = format!("{scheme}://{host}{port}{path}");
    let Ok(req) = RequestHeader::build(method, target.as_bytes(), None) else {
        return Ok(Outcome::Unparsable);
    };
    let Ok(plan) = plan(&config(), &req, None) else {
        return Ok(Outcome::Refused);
    };
    let Some(cred) = plan.credential else {
        return Ok(Outcome::NoCredential);
    };
    let url = url::Url::parse(&target);
    prop_assert!(
        url.is_ok(),
        "credential {cred} for an unparsable URL {target}"
    );
    let url = url.unwrap();
    // A root-anchored name (`api.example.com.`) is the same host in DNS.
    let uhost = url.host_str().unwrap_or_default();
    let uhost = uhost.strip_suffix('.').unwrap_or(uhost).to_string();
    let uport = url.port_or_known_default().unwrap_or(0);
    let expected = oracle(tls, &uhost, uport, url.path(), req.method.as_str());
    let name = config().credentials[cred].name.to_string();
    prop_assert_eq!(Some(name.as_str()), expected, "{}", target);
    // And it is sent there, not elsewhere.
    let sent = if plan.target.host.contains(':') {
        format!("[{}]", plan.target.host)
    } else {
        plan.target.host.clone()
    };
    prop_assert_eq!(sent, uhost, "{}", target);
    prop_assert_eq!(plan.target.port, uport, "{}", target);
    Ok(Outcome::Credential)
}

fn absolute_cases() -> impl Strategy<Value = (bool, String, String, String, &'static str)> {
    (
        any::<bool>(),
        host_strategy(),
        port_strategy(),
        path_strategy(),
        prop::sample::select(vec!["GET", "POST", "get"]),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn absolute_form_credentials_go_only_where_routes_say(
        (tls, host, port, path, method) in absolute_cases()
    ) {
        check_absolute(tls, &host, &port, &path, method)?;
    }
    #[test]
    fn tunnelled_credentials_go_only_to_the_connect_target(
        tunnel_host in prop::sample::select(vec!["api.example.com", "x.corp.example.com", "evilexample.com", "127.0.0.1"]),
        tunnel_port in prop::sample::select(vec![443u16, 8443, 9000]),
        host_header in host_strategy(),
        port in port_strategy(),
        path in path_strategy(),
    ) {
        let t = Tunnel { host: tunnel_host.to_string(), port: tunnel_port, tls: true, client: None };
        let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) else { return Ok(()) };
        if req.insert_header("host", format!("{host_header}{port}")).is_err() {
            return Ok(());
        }
        let Ok(plan) = plan(&config(), &req, Some(&t)) else { return Ok(()) };
        prop_assert_eq!(&plan.target.host, &t.host);
        prop_assert_eq!(plan.target.port, t.port);
        if let Some(cred) = plan.credential {
            let url = url::Url::parse(&format!("https://{}:{}{}", t.host, t.port, path)).unwrap();
            let expected = oracle(true, &t.host, t.port, url.path(), "GET");
            let name = config().credentials[cred].name.to_string();
            prop_assert_eq!(Some(name.as_str()), expected, "{} {}", host_header, path);
        }
    }
}

/// The same property over a fixed-seed run, tallied: the counts go in the closing note
/// (`cargo test --lib adversarial_tally -- --nocapture`).
#[test]
fn adversarial_tally() {
    use std::cell::RefCell;
    use std::collections::HashMap;
    let tally = RefCell::new(HashMap::<Outcome, usize>::new());
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(
        ProptestConfig {
            cases: 20_000,
            ..ProptestConfig::default()
        },
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    runner
        .run(&absolute_cases(), |(tls, host, port, path, method)| {
            let o = check_absolute(tls, &host, &port, &path, method)?;
            *tally.borrow_mut().entry(o).or_default() += 1;
            Ok(())
        })
        .unwrap();
    let t = tally.into_inner();
    eprintln!("adversarial absolute-form requests: {t:?}");
    assert!(
        t.get(&Outcome::Credential).copied().unwrap_or(0) > 100,
        "{t:?}"
    );
    assert!(
        t.get(&Outcome::Refused).copied().unwrap_or(0) > 100,
        "{t:?}"
    );
}
