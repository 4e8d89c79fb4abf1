use std::path::Path;

use super::*;
use crate::config::load_str;

/// A request on the listener itself (not inside an intercepted tunnel).
fn plan(c: &Config, r: &RequestHeader) -> Result<Plan, Refusal> {
    super::plan(c, r, None)
}

fn tunnel(host: &str, port: u16, client: Option<&str>) -> Tunnel {
    Tunnel {
        host: host.into(),
        port,
        tls: true,
        client: client.map(Into::into),
    }
}

const CLIENTS: &str = "
clients:
  - { name: billing, secret: \"${BILLING}\", credentials: [gh] }
  - { name: ops, secret: \"${OPS}\", credentials: [gh, erp] }
";

const BODY: &str = "
credentials:
  gh: { type: bearer, token: \"${GH}\" }
  erp: { type: basic, username: u, password: \"${ERP}\" }
  dead: { type: bearer, token: \"${MISSING}\" }
routes:
  - { host: api.github.com, credentials: [gh, erp], allow_http: true }
  - { host: \"*.erp.example.com\", path: /api/*, methods: [GET], credential: erp, allow_http: true }
  - { host: dead.example.com, credential: dead, allow_http: true }
  - { path: /hub/*, upstream: \"https://api.hubapi.com/v3\", strip_prefix: /hub, credential: gh }
";

fn env(n: &str) -> Option<String> {
    Some(
        match n {
            "BILLING" => "b-secret",
            "OPS" => "o-secret",
            "GH" => "gh-token",
            "ERP" => "erp-pass",
            _ => return None,
        }
        .to_string(),
    )
}

fn cfg(text: &str) -> Config {
    load_str(text, Path::new("t.yaml"), &env).unwrap()
}

fn no_clients() -> Config {
    cfg(BODY)
}

fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
    let mut r = RequestHeader::build(method, target.as_bytes(), None).unwrap();
    for (k, v) in headers {
        r.append_header(k.to_string(), *v).unwrap();
    }
    r
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

#[track_caller]
fn status(c: &Config, r: &RequestHeader) -> u16 {
    match plan(c, r) {
        Ok(_) => 200,
        Err(e) => e.error.status(),
    }
}

#[test]
fn absolute_form_forward() {
    let c = no_clients();
    let p = plan(&c, &req("GET", "http://API.GitHub.com./repos?x=1", &[])).unwrap();
    assert_eq!(p.route, Some(0));
    assert_eq!(p.credential, Some(0));
    assert_eq!(
        p.target,
        Target {
            tls: false,
            host: "api.github.com".into(),
            port: 80,
            authority: "api.github.com".into(),
            path: http::uri::PathAndQuery::from_static("/repos?x=1")
        }
    );
    let p = plan(&c, &req("GET", "https://api.github.com:8443", &[])).unwrap();
    assert_eq!(
        (
            p.target.port,
            p.target.path.as_str(),
            p.target.authority.as_str()
        ),
        (8443, "/", "api.github.com:8443")
    );
}

#[test]
fn path_and_method_rules() {
    let c = no_clients();
    assert_eq!(
        plan(&c, &req("GET", "http://x.erp.example.com/api/v1", &[]))
            .unwrap()
            .route,
        Some(1)
    );
    assert_eq!(
        plan(&c, &req("POST", "http://x.erp.example.com/api/v1", &[]))
            .unwrap()
            .route,
        None
    );
    assert_eq!(
        plan(&c, &req("GET", "http://x.erp.example.com/other", &[]))
            .unwrap()
            .route,
        None
    );
    // Matching ignores the query: `?` cannot smuggle a path.
    assert_eq!(
        plan(
            &c,
            &req("GET", "http://x.erp.example.com/other?/api/x", &[])
        )
        .unwrap()
        .route,
        None
    );
    assert_eq!(
        plan(&c, &req("GET", "http://erp.example.com/api/v1", &[]))
            .unwrap()
            .route,
        None
    );
}

#[test]
fn near_misses_never_match() {
    let c = no_clients();
    for t in [
        "http://api.github.com.evil.io/",
        "http://evilapi.github.com/",
        "http://api.github.co/",
        "http://xapi.github.com/",
        "http://github.com/",
    ] {
        assert_eq!(plan(&c, &req("GET", t, &[])).unwrap().route, None, "{t}");
    }
    // Userinfo is refused rather than guessed at.
    assert_eq!(
        status(&c, &req("GET", "http://api.github.com@evil.io/", &[])),
        400
    );
    assert_eq!(
        status(&c, &req("GET", "http://evil.io@api.github.com/", &[])),
        400
    );
}

#[test]
fn malformed_targets() {
    let c = no_clients();
    for t in [
        "ftp://api.github.com/",
        "http://exa mple.com/",
        "http://a..b/",
        "http://a.com:99999/",
        "http:/\\\\a.com/",
        "*",
    ] {
        if let Ok(r) = RequestHeader::build("GET", t.as_bytes(), None) {
            assert_eq!(status(&c, &r), 400, "{t}");
        }
    }
}

#[test]
fn unmatched_policy() {
    let c = no_clients();
    let p = plan(&c, &req("GET", "http://example.org/", &[])).unwrap();
    assert_eq!((p.route, p.credential), (None, None));
    let d = cfg(&format!("proxy: {{ unmatched: deny }}\n{BODY}"));
    assert_eq!(status(&d, &req("GET", "http://example.org/", &[])), 403);
    assert_eq!(status(&d, &req("GET", "http://api.github.com/", &[])), 200);
}

#[test]
fn sidecar_routes() {
    let c = no_clients();
    let p = plan(&c, &req("GET", "/hub/crm/v3/objects?limit=1", &[])).unwrap();
    assert_eq!(p.route, Some(3));
    assert_eq!(
        p.target,
        Target {
            tls: true,
            host: "api.hubapi.com".into(),
            port: 443,
            authority: "api.hubapi.com".into(),
            path: http::uri::PathAndQuery::from_static("/v3/crm/v3/objects?limit=1")
        }
    );
    assert_eq!(status(&c, &req("GET", "/nothing", &[])), 404);
    // strip_prefix only at a segment boundary.
    assert_eq!(status(&c, &req("GET", "/hubx/a", &[])), 404);
}

#[test]
fn credential_selection() {
    let c = no_clients();
    let h = |v| vec![(CREDENTIAL_HEADER, v)];
    assert_eq!(
        plan(&c, &req("GET", "http://api.github.com/", &h("erp")))
            .unwrap()
            .credential,
        Some(1)
    );
    assert_eq!(
        plan(&c, &req("GET", "http://api.github.com/", &h("gh")))
            .unwrap()
            .credential,
        Some(0)
    );
    let e = plan(&c, &req("GET", "http://api.github.com/", &h("dead"))).unwrap_err();
    assert_eq!((e.error.status(), e.route), (403, Some(0)));
    assert_eq!(
        status(&c, &req("GET", "http://api.github.com/", &h("nope"))),
        403
    );
}

#[test]
fn unavailable_credential_is_502() {
    let c = no_clients();
    let e = plan(&c, &req("GET", "http://dead.example.com/", &[])).unwrap_err();
    assert_eq!(e.error.status(), 502);
    assert_eq!(e.credential, Some(2));
    assert!(e.error.to_string().contains("MISSING"));
}

#[test]
fn proxy_clients() {
    let c = cfg(&format!("{CLIENTS}{BODY}"));
    let pa = "proxy-authorization";
    let url = "http://api.github.com/";
    assert_eq!(status(&c, &req("GET", url, &[])), 407);
    assert_eq!(
        status(&c, &req("GET", url, &[(pa, &basic("billing", "wrong"))])),
        407
    );
    assert_eq!(
        status(&c, &req("GET", url, &[(pa, &basic("ops", "b-secret"))])),
        407
    );
    assert_eq!(
        status(&c, &req("GET", url, &[(pa, "Basic !!notbase64")])),
        407
    );
    assert_eq!(status(&c, &req("GET", url, &[(pa, "Digest x")])), 407);
    assert_eq!(
        status(&c, &req("GET", url, &[(pa, &basic("billing", "b-secret"))])),
        200
    );
    assert_eq!(
        status(&c, &req("GET", url, &[(pa, "Bearer o-secret")])),
        200
    );
    // billing may use gh but not erp, and the header cannot widen that.
    let widen = [
        (pa, basic("billing", "b-secret")),
        (CREDENTIAL_HEADER, "erp".to_string()),
    ];
    let widen: Vec<(&str, &str)> = widen.iter().map(|(a, b)| (*a, b.as_str())).collect();
    assert_eq!(status(&c, &req("GET", url, &widen)), 403);
    let ops = [
        (pa, basic("ops", "o-secret")),
        (CREDENTIAL_HEADER, "erp".to_string()),
    ];
    let ops: Vec<(&str, &str)> = ops.iter().map(|(a, b)| (*a, b.as_str())).collect();
    assert_eq!(plan(&c, &req("GET", url, &ops)).unwrap().client, Some(1));
}

#[test]
fn path_scope_cannot_be_stretched() {
    let c = no_clients();
    for t in [
        "http://x.erp.example.com/api/../admin",
        "http://x.erp.example.com/api/%2e%2E/admin",
        "http://x.erp.example.com/api/./x",
        "http://x.erp.example.com/api/..",
        "http://x.erp.example.com/api/..%2fadmin",
        "http://x.erp.example.com/api/x%5C..%5Cadmin",
        "/hub/../../admin",
        "/hub/%2e%2e/admin",
        "/hub/a%2Fb",
        "http://x.erp.example.com/api//x",
        "/hub//x",
    ] {
        let e = plan(&c, &req("GET", t, &[])).unwrap_err();
        assert_eq!(e.error.status(), 400, "{t}");
        assert!(e.credential.is_none());
    }
    // Host-wide routes accept encoded slashes (GitLab-style ids) and `//` (S3 keys); dot
    // segments never.
    assert!(plan(&c, &req("GET", "http://api.github.com/projects/a%2Fb", &[])).is_ok());
    assert!(plan(&c, &req("GET", "http://api.github.com/bucket//key", &[])).is_ok());
    assert_eq!(
        status(&c, &req("GET", "http://api.github.com/a/../b", &[])),
        400
    );
    // Names that merely contain dots are fine.
    assert!(plan(
        &c,
        &req(
            "GET",
            "http://x.erp.example.com/api/v1.2/..x/.well-known",
            &[]
        )
    )
    .is_ok());
    // Unmatched requests are forwarded untouched (no credential at stake).
    assert!(plan(&c, &req("GET", "http://example.org/a/../b", &[])).is_ok());
}

#[test]
fn tunnelled_requests_go_only_to_the_connect_target() {
    let c = no_clients();
    let t = tunnel("api.github.com", 443, None);
    let p = super::plan(
        &c,
        &req("GET", "/repos?x=1", &[("host", "API.github.com")]),
        Some(&t),
    )
    .unwrap();
    assert_eq!(
        p.target,
        Target {
            tls: true,
            host: "api.github.com".into(),
            port: 443,
            authority: "api.github.com".into(),
            path: http::uri::PathAndQuery::from_static("/repos?x=1"),
        }
    );
    assert_eq!(p.route, Some(0));
    // No Host at all (HTTP/1.0): the tunnel decides.
    assert!(super::plan(&c, &req("GET", "/", &[]), Some(&t)).is_ok());
    // Every other name for the destination is refused, whatever routes exist for it.
    for (target, host) in [
        ("/", "x.erp.example.com"),
        ("/", "api.github.com:8443"),
        ("/", "api.github.com.evil.io"),
        ("/", "user@api.github.com"),
        ("https://x.erp.example.com/api/v1", "api.github.com"),
        ("http://api.github.com/", "api.github.com"),
    ] {
        let e = super::plan(&c, &req("GET", target, &[("host", host)]), Some(&t)).unwrap_err();
        assert_eq!(e.error.status(), 400, "{target} {host}: {}", e.error);
    }
    // Sidecar paths mean nothing inside a tunnel: forwarded to the tunnel's host.
    let p = super::plan(
        &c,
        &req("GET", "/hub/x", &[("host", "api.github.com")]),
        Some(&t),
    )
    .unwrap();
    assert_eq!(p.target.host, "api.github.com");
    // A non-default port is kept in the authority; IPv6 is bracketed.
    let t6 = tunnel("::1", 8443, None);
    let p = super::plan(&c, &req("GET", "/", &[("host", "[::1]:8443")]), Some(&t6)).unwrap();
    assert_eq!(p.target.authority, "[::1]:8443");
    assert_eq!(p.route, None);
}

#[test]
fn tunnelled_requests_use_the_connect_client() {
    let c = cfg(&format!("{CLIENTS}{BODY}"));
    let ok = |t: &Tunnel| super::plan(&c, &req("GET", "/", &[("host", "api.github.com")]), Some(t));
    let p = ok(&tunnel("api.github.com", 443, Some("billing"))).unwrap();
    assert_eq!(p.client, Some(0));
    // A Proxy-Authorization inside the tunnel changes nothing.
    let r = req(
        "GET",
        "/",
        &[
            ("host", "api.github.com"),
            ("proxy-authorization", &basic("ops", "o-secret")),
        ],
    );
    let p = super::plan(
        &c,
        &r,
        Some(&tunnel("api.github.com", 443, Some("billing"))),
    )
    .unwrap();
    assert_eq!(p.client, Some(0));
    // Billing may not pick erp.
    let r = req(
        "GET",
        "/",
        &[("host", "api.github.com"), (CREDENTIAL_HEADER, "erp")],
    );
    let e = super::plan(
        &c,
        &r,
        Some(&tunnel("api.github.com", 443, Some("billing"))),
    )
    .unwrap_err();
    assert_eq!(e.error.status(), 403);
    // A tunnel opened before `clients:` existed, or by a client since removed: 407.
    assert_eq!(
        ok(&tunnel("api.github.com", 443, None))
            .unwrap_err()
            .error
            .status(),
        407
    );
    assert_eq!(
        ok(&tunnel("api.github.com", 443, Some("gone")))
            .unwrap_err()
            .error
            .status(),
        407
    );
}

#[test]
fn credentials_are_not_sent_over_plain_http_unless_allowed() {
    let c = cfg("credentials:\n  gh: { type: bearer, token: \"${GH}\" }\nroutes:\n  - { host: api.github.com, credential: gh }\n  - { host: \"127.0.0.1:9000\", credential: gh }\n  - { host: \"localhost\", credential: gh }\n");
    let e = plan(&c, &req("GET", "http://api.github.com/user", &[])).unwrap_err();
    assert_eq!(e.error.status(), 403);
    assert!(e.error.to_string().contains("allow_http"), "{}", e.error);
    assert!(plan(&c, &req("GET", "https://api.github.com/user", &[])).is_ok());
    // Plain HTTP inside a CONNECT to port 443 is plain HTTP too.
    let t = Tunnel {
        host: "api.github.com".into(),
        port: 443,
        tls: false,
        client: None,
    };
    let r = req("GET", "/user", &[("host", "api.github.com:443")]);
    assert_eq!(
        super::plan(&c, &r, Some(&t)).unwrap_err().error.status(),
        403
    );
    // Loopback never leaves the machine.
    assert!(plan(&c, &req("GET", "http://127.0.0.1:9000/", &[])).is_ok());
    assert!(plan(&c, &req("GET", "http://localhost/", &[])).is_ok());
}

#[test]
fn method_overrides_and_path_parameters_cannot_stretch_a_scope() {
    let c = no_clients();
    for (t, h) in [
        ("http://x.erp.example.com/api/x", "x-http-method-override"),
        ("http://x.erp.example.com/api/x", "X-HTTP-Method"),
        ("http://x.erp.example.com/api/x", "x-method-override"),
    ] {
        let e = plan(&c, &req("GET", t, &[(h, "DELETE")])).unwrap_err();
        assert_eq!(e.error.status(), 400, "{h}");
    }
    // Not method-scoped: passed through.
    assert!(plan(
        &c,
        &req(
            "GET",
            "http://api.github.com/x",
            &[("x-http-method-override", "PUT")]
        )
    )
    .is_ok());
    for t in [
        "http://x.erp.example.com/api/..;/admin",
        "http://x.erp.example.com/api/..%3b/admin",
        "http://x.erp.example.com/api/.;x/admin",
        "http://x.erp.example.com/api/%252e%252e/admin",
        "http://x.erp.example.com/api/x%252fadmin",
    ] {
        let e = plan(&c, &req("GET", t, &[])).unwrap_err();
        assert_eq!(e.error.status(), 400, "{t}");
    }
}

#[test]
fn a_path_the_upstream_uri_cannot_carry_is_refused_when_planned() {
    // pingora parses the client's target into a URI first, so what reaches a plan fits one;
    // a sidecar route's base path added in front can still make it too long (65,534 bytes).
    let e = checked_path(format!("/{}", "a".repeat(70_000))).unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(
        e.to_string().contains("request path cannot be forwarded"),
        "{e}"
    );
    let p = checked_path("/v3/x?y=1".into()).unwrap();
    assert_eq!((p.path(), p.query()), ("/v3/x", Some("y=1")));
}
