//! One test per rejection: each names the key path and the line.

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "TOKEN" => Some("t".into()),
        "CLIENT_A" => Some("client-a-secret".into()),
        "CLIENT_B" => Some("client-b-secret".into()),
        "BAD" => Some("x\ny".into()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Config, ConfigErrors> {
    load_str(text, Path::new("conf.yaml"), &env)
}

/// Asserts the config is rejected with an error at `path` on `line` whose message contains `msg`.
#[track_caller]
fn rejects(text: &str, path: &str, line: usize, msg: &str) {
    let errs = match load(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    };
    let found = errs
        .0
        .iter()
        .any(|e| e.path == path && e.line == Some(line) && e.message.contains(msg));
    assert!(found, "expected `{path}` line {line} `{msg}`, got:\n{errs}");
    let shown = errs.to_string();
    assert!(
        shown.contains(&format!("conf.yaml:{line}: {path}")),
        "{shown}"
    );
}

const CRED: &str = "credentials:\n  gh: { type: bearer, token: \"${TOKEN}\" }\n";

#[test]
fn accepts_the_spec_shapes() {
    let c = load(&format!("{CRED}routes:\n  - host: \"*.example.com:8443\"\n    path: /v1/*\n    methods: [get, POST]\n    credential: gh\n  - path: /s/*\n    upstream: https://api.example.com/base/\n    strip_prefix: /s\n    credentials: [gh]\n")).unwrap();
    assert_eq!(c.routes.len(), 2);
    assert_eq!(&*c.routes[0].name, "*.example.com:8443/v1/*");
    let up = c.routes[1].upstream.as_ref().unwrap();
    assert_eq!(
        (
            up.tls,
            up.host.as_str(),
            up.port,
            up.base_path.as_str(),
            up.authority.as_str()
        ),
        (true, "api.example.com", 443, "/base", "api.example.com")
    );
    assert_eq!(c.proxy.max_body, 16 << 20);
    assert_eq!(c.proxy.listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn empty_file_is_a_valid_empty_config() {
    let c = load("").unwrap();
    assert!(c.routes.is_empty());
    assert!(c.warnings.iter().any(|w| w.message.contains("no routes")));
}

#[test]
fn rejects_yaml_syntax_error() {
    let e = load("proxy:\n  listen: [1, 2\n").unwrap_err();
    assert!(e.0[0].line.is_some(), "{e}");
}

#[test]
fn rejects_unknown_top_level_key() {
    rejects(
        "proxy: {}\nroutez: []\n",
        "routez",
        2,
        "unknown field `routez`",
    );
}

#[test]
fn rejects_unknown_proxy_key() {
    rejects(
        "proxy:\n  listen: 127.0.0.1:1\n  lisen: 127.0.0.1:2\n",
        "proxy.lisen",
        3,
        "unknown field `lisen`",
    );
}

#[test]
fn rejects_bad_listen() {
    rejects(
        "proxy:\n  listen: localhost\n",
        "proxy.listen",
        2,
        "not an address",
    );
}

#[test]
fn rejects_bad_admin() {
    rejects(
        "proxy:\n  admin: nine\n",
        "proxy.admin",
        2,
        "not an address",
    );
}

#[test]
fn rejects_bad_unmatched() {
    rejects(
        "proxy:\n  unmatched: maybe\n",
        "proxy.unmatched",
        2,
        "unknown variant `maybe`",
    );
}

#[test]
fn rejects_bad_max_body() {
    rejects(
        "proxy:\n  max_body: 16 parsecs\n",
        "proxy.max_body",
        2,
        "invalid size",
    );
    rejects(
        "proxy:\n  max_body: 2GiB\n",
        "proxy.max_body",
        2,
        "1GiB limit",
    );
}

#[test]
fn rejects_bad_durations() {
    rejects(
        "proxy:\n  timeouts:\n    connect: soon\n",
        "proxy.timeouts.connect",
        3,
        "invalid duration",
    );
    rejects(
        "proxy:\n  timeouts: { read: 0s }\n",
        "proxy.timeouts.read",
        2,
        "out of range",
    );
    rejects(
        "proxy:\n  dns: { ttl: 2h }\n",
        "proxy.dns.ttl",
        2,
        "out of range",
    );
}

#[test]
fn rejects_bad_threads() {
    rejects("proxy:\n  threads: 0\n", "proxy.threads", 2, "out of range");
}

#[test]
fn rejects_bad_egress_allow() {
    rejects(
        "proxy:\n  egress:\n    allow: [10.0.0.0/33]\n",
        "proxy.egress.allow[0]",
        3,
        "`10.0.0.0/33` is not a CIDR",
    );
    rejects(
        "proxy:\n  egress:\n    allow: [\"127.0.0.1:99999\"]\n",
        "proxy.egress.allow[0]",
        3,
        "`99999` is not a port",
    );
}

#[test]
fn rejects_unknown_credential_type() {
    rejects(
        "credentials:\n  x:\n    type: kerberos\n",
        "credentials.x.type",
        3,
        "unknown credential type `kerberos`",
    );
}

#[test]
fn rejects_missing_credential_type() {
    rejects(
        "credentials:\n  x:\n    token: a\n",
        "credentials.x",
        2,
        "missing `type`",
    );
}

#[test]
fn rejects_credential_not_a_mapping() {
    rejects(
        "credentials:\n  x: hello\n",
        "credentials.x",
        2,
        "expected a mapping",
    );
}

#[test]
fn rejects_bad_credential_name() {
    rejects(
        "credentials:\n  \"a b\": { type: bearer, token: x }\n",
        "credentials.a b",
        2,
        "credential name",
    );
}

#[test]
fn rejects_unknown_credential_key() {
    rejects(
        "credentials:\n  gh:\n    type: bearer\n    token: \"${TOKEN}\"\n    tokn: x\n",
        "credentials.gh.tokn",
        5,
        "unknown field `tokn`",
    );
}

#[test]
fn rejects_missing_credential_field() {
    rejects(
        "credentials:\n  erp:\n    type: basic\n    username: u\n",
        "credentials.erp",
        2,
        "missing field `password`",
    );
}

#[test]
fn rejects_bad_secret_reference() {
    rejects(
        "credentials:\n  gh:\n    type: bearer\n    token: \"${NOT CLOSED\"\n",
        "credentials.gh.token",
        4,
        "unterminated",
    );
}

#[test]
fn rejects_literal_header_with_crlf() {
    rejects(
        "credentials:\n  k:\n    type: headers\n    headers:\n      X-Key: \"a\\r\\nX-Evil: 1\"\n",
        "credentials.k.headers.X-Key",
        5,
        "CR, LF or NUL",
    );
}

#[test]
fn rejects_bad_header_name() {
    rejects(
        "credentials:\n  k:\n    type: headers\n    headers:\n      \"X Key\": v\n",
        "credentials.k.headers.X Key",
        5,
        "not a valid header name",
    );
}

#[test]
fn rejects_forbidden_header_name() {
    rejects(
        "credentials:\n  k:\n    type: bearer\n    token: t\n    header: Host\n",
        "credentials.k.header",
        5,
        "may not set",
    );
}

#[test]
fn rejects_route_without_host_or_upstream() {
    rejects(
        &format!("{CRED}routes:\n  - path: /x\n    credential: gh\n"),
        "routes[0]",
        4,
        "needs `host`",
    );
}

#[test]
fn rejects_route_with_host_and_upstream() {
    rejects(
        &format!(
            "{CRED}routes:\n  - host: a.com\n    upstream: http://b.com\n    credential: gh\n"
        ),
        "routes[0].host",
        4,
        "remove `host`",
    );
}

#[test]
fn rejects_bad_host_pattern() {
    rejects(
        &format!("{CRED}routes:\n  - host: \"a.*.com\"\n    credential: gh\n"),
        "routes[0].host",
        4,
        "first label",
    );
    rejects(
        &format!("{CRED}routes:\n  - host: \"a.com:99999\"\n    credential: gh\n"),
        "routes[0].host",
        4,
        "invalid port",
    );
}

#[test]
fn rejects_bad_path_glob() {
    rejects(
        &format!("{CRED}routes:\n  - host: a.com\n    path: v1/*\n    credential: gh\n"),
        "routes[0].path",
        5,
        "starts with `/`",
    );
}

#[test]
fn rejects_bad_method() {
    rejects(&format!("{CRED}routes:\n  - host: a.com\n    methods: [GET, \"NOT A METHOD\"]\n    credential: gh\n"), "routes[0].methods[1]", 5, "not an HTTP method");
    rejects(
        &format!("{CRED}routes:\n  - host: a.com\n    methods: []\n    credential: gh\n"),
        "routes[0].methods",
        5,
        "empty list",
    );
}

#[test]
fn rejects_unknown_route_credential() {
    rejects(
        &format!("{CRED}routes:\n  - host: a.com\n    credential: gihtub\n"),
        "routes[0].credential",
        5,
        "unknown credential `gihtub` (defined: gh)",
    );
    rejects(
        &format!("{CRED}routes:\n  - host: a.com\n    credentials: [gh, nope]\n"),
        "routes[0].credentials[1]",
        5,
        "unknown credential `nope`",
    );
}

#[test]
fn rejects_route_without_credential() {
    rejects(
        &format!("{CRED}routes:\n  - host: a.com\n"),
        "routes[0]",
        4,
        "needs `credential`",
    );
}

#[test]
fn rejects_both_credential_keys() {
    rejects(
        &format!("{CRED}routes:\n  - host: a.com\n    credential: gh\n    credentials: [gh]\n"),
        "routes[0]",
        4,
        "not both",
    );
}

#[test]
fn rejects_duplicate_route_credential() {
    rejects(
        &format!("{CRED}routes:\n  - host: a.com\n    credentials: [gh, gh]\n"),
        "routes[0].credentials[1]",
        5,
        "listed twice",
    );
}

#[test]
fn rejects_bad_upstream() {
    rejects(
        &format!("{CRED}routes:\n  - path: /x/*\n    upstream: ftp://a.com\n    credential: gh\n"),
        "routes[0].upstream",
        5,
        "http:// or https://",
    );
    rejects(
        &format!(
            "{CRED}routes:\n  - path: /x/*\n    upstream: https://u:p@a.com\n    credential: gh\n"
        ),
        "routes[0].upstream",
        5,
        "credentials in the URL",
    );
    rejects(
        &format!(
            "{CRED}routes:\n  - path: /x/*\n    upstream: https://a.com/?q=1\n    credential: gh\n"
        ),
        "routes[0].upstream",
        5,
        "no query",
    );
}

#[test]
fn rejects_bad_strip_prefix() {
    rejects(
        &format!("{CRED}routes:\n  - host: a.com\n    strip_prefix: /x\n    credential: gh\n"),
        "routes[0].strip_prefix",
        5,
        "only to sidecar",
    );
    rejects(&format!("{CRED}routes:\n  - path: /x/*\n    upstream: http://a.com\n    strip_prefix: x/\n    credential: gh\n"), "routes[0].strip_prefix", 6, "leading slash");
}

#[test]
fn rejects_bad_clients() {
    rejects(
        &format!(
            "{CRED}clients:\n  - name: a\n    secret: \"${{MISSING}}\"\n    credentials: [gh]\n"
        ),
        "clients[0].secret",
        5,
        "MISSING is not set",
    );
    rejects(
        &format!(
            "{CRED}clients:\n  - name: a\n    secret: \"${{CLIENT_A}}\"\n    credentials: [nope]\n"
        ),
        "clients[0].credentials[0]",
        6,
        "unknown credential",
    );
    rejects(&format!("{CRED}clients:\n  - {{ name: a, secret: \"${{CLIENT_A}}\" }}\n  - {{ name: a, secret: \"${{CLIENT_B}}\" }}\n"), "clients[1].name", 5, "defined twice");
    rejects(
        &format!("{CRED}clients:\n  - {{ name: a, secret: \"${{TOKEN}}\" }}\n"),
        "clients[0].secret",
        4,
        "at least 8",
    );
    rejects(&format!("{CRED}clients:\n  - {{ name: a, secret: \"${{CLIENT_A}}\" }}\n  - {{ name: b, secret: \"${{CLIENT_A}}\" }}\n"), "clients[1].secret", 5, "share");
}

#[test]
fn missing_secret_is_not_fatal() {
    let c = load("credentials:\n  gh: { type: bearer, token: \"${NOPE}\" }\n  b: { type: bearer, token: \"${BAD}\" }\nroutes:\n  - { host: a.com, credential: gh }\n  - { host: b.com, credential: b }\n").unwrap();
    assert_eq!(
        c.credentials[0]
            .credential
            .as_ref()
            .unwrap_err()
            .to_string(),
        "environment variable NOPE is not set"
    );
    assert!(c.credentials[1]
        .credential
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("CR, LF or NUL"));
    assert!(c
        .warnings
        .iter()
        .any(|w| w.path == "credentials.gh" && w.line == Some(2)));
}

#[test]
fn warns_on_literal_and_unused() {
    let c = load("credentials:\n  gh: { type: bearer, token: literal }\n").unwrap();
    assert!(c
        .warnings
        .iter()
        .any(|w| w.path == "credentials.gh.token" && w.message.contains("literal")));
    assert!(c
        .warnings
        .iter()
        .any(|w| w.path == "credentials.gh" && w.message.contains("not used")));
}

#[test]
fn reports_several_errors_at_once() {
    let e = load(&format!(
        "{CRED}routes:\n  - host: a.com\n    credential: x\n  - host: b.com\n    credential: y\n"
    ))
    .unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
}

#[test]
fn rejects_bad_dns_override() {
    rejects(
        "proxy:\n  dns:\n    overrides:\n      api.example.com: not-an-ip\n",
        "proxy.dns.overrides.api.example.com",
        4,
        "not an IP address",
    );
}

#[test]
fn non_string_secret_is_refused_without_echoing_it() {
    for v in ["9876543210", "1.5e3", "true", "0x1F"] {
        let text = format!("credentials:\n  gh:\n    type: bearer\n    token: {v}\n");
        let e = load(&text).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.contains("conf.yaml:4: credentials.gh.token: expected a string"),
            "{shown}"
        );
        assert!(!shown.contains(v), "{shown}");
    }
    let e = load("credentials:\n  k:\n    type: headers\n    headers: { X-Key: 424242 }\n")
        .unwrap_err();
    assert!(!e.to_string().contains("424242"), "{e}");
    let e = load(&format!(
        "{CRED}clients:\n  - {{ name: a, secret: 31337 }}\n"
    ))
    .unwrap_err();
    assert!(!e.to_string().contains("31337"), "{e}");
}

#[test]
fn a_broken_credential_does_not_cascade_into_route_errors() {
    let e = load("credentials:\n  gh: { type: bearer, token: 12 }\nroutes:\n  - { host: a.com, credential: gh }\n").unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
}

#[test]
fn rejects_missing_ca_files() {
    rejects(
        "proxy:\n  ca: { cert: /nonexistent/ca.pem, key: /nonexistent/ca.key }\n",
        "proxy.ca.cert",
        2,
        "credproxy ca init",
    );
}

#[test]
fn rejects_a_ca_key_that_does_not_match() {
    let d = tempfile::tempdir().unwrap();
    let a = crate::tls::ca::init(&d.path().join("a"), false).unwrap();
    let b = crate::tls::ca::init(&d.path().join("b"), false).unwrap();
    rejects(
        &format!(
            "proxy:\n  ca:\n    cert: {}\n    key: {}\n",
            a.cert.display(),
            b.key.display()
        ),
        "proxy.ca.key",
        4,
        "does not match",
    );
    let ok = load(&format!(
        "proxy:\n  ca: {{ cert: {}, key: {} }}\n",
        a.cert.display(),
        a.key.display()
    ))
    .unwrap();
    assert!(ok.proxy.interceptor.is_some());
}

#[test]
fn rejects_an_upstream_ca_without_certificates() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("empty.pem");
    std::fs::write(&f, "not a certificate\n").unwrap();
    rejects(
        &format!("proxy:\n  upstream_ca: {}\n", f.display()),
        "proxy.upstream_ca",
        2,
        "no `BEGIN CERTIFICATE`",
    );
    rejects(
        "proxy:\n  upstream_ca: /nonexistent/roots.pem\n",
        "proxy.upstream_ca",
        2,
        "cannot read",
    );
}

#[test]
fn rejects_bad_handshake_timeout() {
    rejects(
        "proxy:\n  timeouts:\n    handshake: 10 minutes\n",
        "proxy.timeouts.handshake",
        3,
        "",
    );
    rejects(
        "proxy:\n  timeouts:\n    handshake: 1h\n",
        "proxy.timeouts.handshake",
        3,
        "",
    );
}

#[cfg(unix)]
#[test]
fn readable_secret_files_are_warned_or_refused_when_strict() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("pw");
    std::fs::write(&f, "s3cret\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = |strict: bool| {
        format!(
            "proxy:\n  strict_permissions: {strict}\ncredentials:\n  erp:\n    type: basic\n    username: u\n    password: \"file:{}\"\n",
            f.display()
        )
    };
    let c = load(&text(false)).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.path == "credentials.erp.password" && w.message.contains("chmod 600")),
        "{:?}",
        c.warnings
    );
    rejects(
        &text(true),
        "credentials.erp.password",
        7,
        "strict_permissions",
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = load(&text(true)).unwrap();
    assert!(
        !c.warnings.iter().any(|w| w.message.contains("chmod")),
        "{:?}",
        c.warnings
    );
}

#[cfg(unix)]
#[test]
fn readable_ca_key_is_refused_when_strict() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let a = crate::tls::ca::init(d.path(), false).unwrap();
    std::fs::set_permissions(&a.key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let text = |strict: bool| {
        format!(
            "proxy:\n  strict_permissions: {strict}\n  ca:\n    cert: {}\n    key: {}\n",
            a.cert.display(),
            a.key.display()
        )
    };
    let c = load(&text(false)).unwrap();
    assert!(c.warnings.iter().any(|w| w.path == "proxy.ca.key"));
    rejects(&text(true), "proxy.ca.key", 5, "strict_permissions");
}

#[test]
fn rejects_bad_total_timeout() {
    rejects(
        "proxy:\n  timeouts:\n    total: soon\n",
        "proxy.timeouts.total",
        3,
        "",
    );
    let c = load("proxy:\n  timeouts: { total: 90s }\n").unwrap();
    assert_eq!(c.proxy.timeouts.total, Some(Duration::from_secs(90)));
    assert_eq!(load("").unwrap().proxy.timeouts.total, None);
}

#[test]
fn rejects_bad_token_cache_ttl_and_timeout() {
    let cred = |extra: &str| {
        format!("credentials:\n  sf:\n    type: oauth2_client_credentials\n    token_url: https://login.example.com/token\n    client_id: id\n    client_secret: \"${{TOKEN}}\"\n{extra}routes:\n  - {{ host: a.com, credential: sf }}\n")
    };
    rejects(
        &cred("    cache: { ttl: soon }\n"),
        "credentials.sf.cache.ttl",
        7,
        "",
    );
    rejects(
        &cred("    timeout: forever\n"),
        "credentials.sf.timeout",
        7,
        "",
    );
}

#[test]
fn plain_http_sidecar_upstreams_need_allow_http() {
    rejects(
        "credentials:\n  gh: { type: bearer, token: t }\nroutes:\n  - { name: other, path: /o/*, upstream: \"http://other.acme.test/api\", credential: gh }\n",
        "routes[0].upstream",
        4,
        "route `other` would send its credential in cleartext to other.acme.test: use https://, or set `allow_http: true`",
    );
    for ok in [
        "http://127.0.0.1:9000",
        "http://localhost:9000",
        "http://[::1]:9000",
        "https://other.acme.test",
    ] {
        let text = format!("credentials:\n  gh: {{ type: bearer, token: t }}\nroutes:\n  - {{ path: /o/*, upstream: \"{ok}\", credential: gh }}\n");
        assert!(
            load_str(&text, Path::new("t.yaml"), &|_| None).is_ok(),
            "{ok}"
        );
    }
    let allowed = "credentials:\n  gh: { type: bearer, token: t }\nroutes:\n  - { path: /o/*, upstream: \"http://other.acme.test\", credential: gh, allow_http: true }\n";
    assert!(load_str(allowed, Path::new("t.yaml"), &|_| None).is_ok());
}

#[test]
fn buffer_budget_holds_one_max_body_body() {
    rejects(
        "proxy:\n  max_body: 16MiB\n  limits: { max_buffered: 8MiB }\n",
        "proxy.limits.max_buffered",
        3,
        "less than proxy.max_body",
    );
    rejects(
        "proxy:\n  limits: { max_buffered: 64MiB, max_buffered_per_client: 128MiB }\n",
        "proxy.limits.max_buffered_per_client",
        2,
        "more than max_buffered",
    );
    let c = load("proxy:\n  max_body: 1GiB\n").unwrap();
    assert_eq!(
        c.proxy.limits.max_buffered,
        1 << 30,
        "the default grows to hold max_body"
    );
    assert_eq!(c.proxy.limits.max_buffered_per_client, 1 << 30);
    let d = load("").unwrap();
    assert_eq!(d.proxy.limits.max_buffered, 256 << 20);
    assert_eq!(d.proxy.limits.max_buffered_per_client, 64 << 20);
}

#[test]
fn duplicate_keys_are_errors_with_both_lines() {
    rejects(
        "credentials:\n  github: { type: bearer, token: a1234567 }\n  other: { type: bearer, token: b1234567 }\n  github: { type: bearer, token: c1234567 }\n",
        "credentials.github",
        4,
        "`github` is written twice in the same mapping (first at line 2)",
    );
    rejects(
        "credentials:\n  gh: { type: bearer, token: a1234567 }\nroutes:\n  - host: a.example.com\n    credential: gh\n    host: b.example.com\n",
        "routes[0].host",
        6,
        "`host` is written twice",
    );
}

#[test]
fn duplicate_route_names_are_errors() {
    rejects(
        "credentials:\n  gh: { type: bearer, token: a1234567 }\nroutes:\n  - { name: api, host: a.example.com, credential: gh }\n  - { name: api, host: b.example.com, credential: gh }\n",
        "routes[1].name",
        5,
        "route name `api` is already used by routes[0]",
    );
}

#[test]
fn shadowed_routes_are_warned_about_naming_both() {
    let c = load("credentials:\n  gh: { type: bearer, token: a1234567 }\nroutes:\n  - { name: all, host: \"*.example.com\", credential: gh }\n  - { name: api, host: api.example.com, path: /v1/*, credential: gh }\n  - { name: other, host: example.com, credential: gh }\n  - { name: v1, host: b.test, path: /v1/*, credential: gh }\n  - { name: v1-users, host: b.test, path: /v1/users/*, methods: [GET], credential: gh }\n  - { name: v2, host: b.test, path: /v2/*, credential: gh }\n  - { name: get-only, host: c.test, methods: [GET], credential: gh }\n  - { name: any, host: c.test, credential: gh }\n").unwrap();
    let warned: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    let shadow: Vec<&String> = warned
        .iter()
        .filter(|w| w.contains("can never match"))
        .collect();
    assert_eq!(shadow.len(), 2, "{warned:#?}");
    assert!(
        shadow[0].contains(
            "conf.yaml:5: routes[1]: route `api` can never match: `all` (routes[0]) comes first"
        ),
        "{shadow:?}"
    );
    assert!(
        shadow[1].contains("routes[4]: route `v1-users` can never match: `v1` (routes[3])"),
        "{shadow:?}"
    );
}

#[test]
fn shared_state_needs_a_redis_url_and_the_state_key() {
    let with_key = |text: &str| {
        load_str(text, Path::new("conf.yaml"), &|n| {
            (n == "CREDPROXY_STATE_KEY").then(|| "07".repeat(32))
        })
    };
    let c = with_key("proxy:\n  shared_state: { redis: \"redis://127.0.0.1:6379\" }\n").unwrap();
    let s = c.proxy.shared_state.unwrap();
    assert_eq!(
        (s.prefix.as_str(), s.cluster, s.urls.len()),
        ("credproxy", false, 1)
    );
    let c = with_key(
        "proxy:\n  shared_state: { redis: [\"redis://a:1\", \"redis://b:2\"], prefix: fleet-1 }\n",
    )
    .unwrap();
    assert!(c.proxy.shared_state.unwrap().cluster);
    let e = with_key("proxy:\n  shared_state: { redis: \"http://127.0.0.1:6379\" }\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("conf.yaml:2: proxy.shared_state.redis: expected redis://"),
        "{e}"
    );
    let e = with_key("proxy:\n  shared_state: { redis: \"redis://h:1\", prefix: \"a{b}\" }\n")
        .unwrap_err();
    assert!(e.to_string().contains("proxy.shared_state.prefix"), "{e}");
    let e = with_key("proxy:\n  shared_state: { redis: [] }\n").unwrap_err();
    assert!(e.to_string().contains("empty list"), "{e}");
    rejects(
        "proxy:\n  shared_state: { redis: \"redis://127.0.0.1:6379\" }\n",
        "proxy.shared_state",
        2,
        "CREDPROXY_STATE_KEY is not set",
    );
    let e = with_key("proxy:\n  shared_state: { redis: \"${REDIS_URL}\" }\n").unwrap_err();
    assert!(e.to_string().contains("REDIS_URL is not set"), "{e}");
}

#[test]
fn a_route_presents_at_most_one_client_certificate() {
    let text = "credentials:\n  a: { type: mtls, cert: \"file:/nonexistent/a.pem\", key: \"file:/nonexistent/a.key\" }\n  b: { type: mtls, cert: \"file:/nonexistent/b.pem\", key: \"file:/nonexistent/b.key\" }\nroutes:\n  - { host: api.example.com, credentials: [a, b] }\n";
    rejects(
        text,
        "routes[0].credentials",
        5,
        "at most one `mtls` credential",
    );
}

#[test]
fn a_client_certificate_goes_alongside_the_header_credential() {
    let text = "credentials:\n  cert: { type: mtls, cert: \"file:/nonexistent/a.pem\", key: \"file:/nonexistent/a.key\" }\n  gh: { type: bearer, token: \"${TOKEN}\" }\nroutes:\n  - { host: api.example.com, credentials: [cert, gh] }\n  - { host: only.example.com, credential: cert }\n";
    let cfg = load(text).unwrap();
    assert_eq!(cfg.routes[0].credentials, [1]);
    assert_eq!(cfg.routes[0].client_cert, Some(0));
    assert_eq!(cfg.routes[1].credentials, [0]);
    assert_eq!(cfg.routes[1].client_cert, Some(0));
}
