//! Tenants and connections through the real binary: per-tenant credentials, the tenant of a
//! request (its client's, or X-Credproxy-Tenant where allowed), the admin API for connections
//! (validated like the config, guarded by the admin token, audit-logged), persistence across
//! restarts, and test-on-save.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

const STATE_KEY: &str = "5555555555555555555555555555555555555555555555555555555555555555";
const ADMIN_TOKEN: &str = "admin-token-0123456789";

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("CREDPROXY_STATE_KEY", STATE_KEY),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ACME_SECRET", "acme-client-secret-1"),
        ("GLOBEX_SECRET", "globex-client-secret-1"),
        ("WORKER_SECRET", "worker-client-secret-1"),
        ("NARROW_SECRET", "narrow-client-secret-1"),
    ]
}

fn config(origin: &Origin) -> String {
    format!(
        r#"clients:
  - {{ name: acme-flows, secret: "${{ACME_SECRET}}", tenant: acme, credentials: [openai] }}
  - {{ name: globex-flows, secret: "${{GLOBEX_SECRET}}", tenant: globex, credentials: [openai] }}
  - {{ name: worker, secret: "${{WORKER_SECRET}}", tenants: ["*"], credentials: [openai] }}
  - {{ name: narrow, secret: "${{NARROW_SECRET}}", tenants: [acme], credentials: [openai] }}
credentials:
  openai: {{ type: bearer, per_tenant: true }}
routes:
  - {{ host: "127.0.0.1:{}", credential: openai }}
"#,
        origin.port()
    )
}

fn start(origin: &Origin) -> Proxy {
    Proxy::start_with("admin_token: \"${ADMIN_TOKEN}\"", &config(origin), &env())
}

/// An admin call: (status, body).
pub fn admin(
    p: &Proxy,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}X-Credproxy-Actor: alice@platform\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = raw(p.admin, req.as_bytes());
    (status_of(&resp), body_of(&resp))
}

fn put(p: &Proxy, tenant: &str, cred: &str, body: &str) -> (u16, String) {
    admin(
        p,
        "PUT",
        &format!("/connections/{tenant}/{cred}"),
        Some(body),
        Some(ADMIN_TOKEN),
    )
}

/// A GET through the proxy as `client` (name, secret), with extra headers.
fn get_as(
    p: &Proxy,
    origin: &Origin,
    client: (&str, &str),
    headers: &[(&str, &str)],
) -> (u16, String) {
    let rt = runtime();
    rt.block_on(async {
        let proxy = reqwest::Proxy::http(p.url())
            .unwrap()
            .basic_auth(client.0, client.1);
        let c = reqwest::Client::builder().proxy(proxy).build().unwrap();
        let mut rb = c.get(format!("http://127.0.0.1:{}/v1/models", origin.port()));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.text().await.unwrap())
    })
}

const ACME: (&str, &str) = ("acme-flows", "acme-client-secret-1");
const GLOBEX: (&str, &str) = ("globex-flows", "globex-client-secret-1");
const WORKER: (&str, &str) = ("worker", "worker-client-secret-1");
const NARROW: (&str, &str) = ("narrow", "narrow-client-secret-1");

#[test]
fn each_tenant_gets_its_own_key_and_nobody_elses() {
    let origin = Origin::start();
    let mut p = start(&origin);
    register_secret("sk-acme-0000000001");
    register_secret("sk-globex-000000002");
    let (s, body) = put(&p, "acme", "openai", r#"{"token": "sk-acme-0000000001"}"#);
    assert_eq!(s, 201, "{body}");
    assert!(!body.contains("sk-acme"), "no secret in the answer: {body}");
    assert!(body.contains("\"fields\": [\n    \"token\"\n  ]"), "{body}");
    assert_eq!(
        put(
            &p,
            "globex",
            "openai",
            r#"{"token": "sk-globex-000000002"}"#
        )
        .0,
        201
    );

    assert_eq!(get_as(&p, &origin, ACME, &[]).0, 200);
    assert_eq!(
        origin.last().header("authorization").as_deref(),
        Some("Bearer sk-acme-0000000001")
    );
    assert_eq!(get_as(&p, &origin, GLOBEX, &[]).0, 200);
    assert_eq!(
        origin.last().header("authorization").as_deref(),
        Some("Bearer sk-globex-000000002")
    );

    // A client with its own tenant cannot borrow another's.
    let (s, body) = get_as(&p, &origin, ACME, &[("X-Credproxy-Tenant", "globex")]);
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("tenant_forbidden"), "{body}");
    // The worker names the tenant per request; the header never leaves the proxy.
    assert_eq!(
        get_as(&p, &origin, WORKER, &[("X-Credproxy-Tenant", "globex")]).0,
        200
    );
    let seen = origin.last();
    assert_eq!(
        seen.header("authorization").as_deref(),
        Some("Bearer sk-globex-000000002")
    );
    assert_eq!(seen.header("x-credproxy-tenant"), None);
    // Without a tenant: 403 tenant_required; a narrow client: only its list.
    let (s, body) = get_as(&p, &origin, WORKER, &[]);
    assert_eq!((s, body.contains("tenant_required")), (403, true), "{body}");
    assert_eq!(
        get_as(&p, &origin, NARROW, &[("X-Credproxy-Tenant", "acme")]).0,
        200
    );
    assert_eq!(
        get_as(&p, &origin, NARROW, &[("X-Credproxy-Tenant", "globex")]).0,
        403
    );
    // A tenant without a connection.
    let (s, body) = get_as(&p, &origin, WORKER, &[("X-Credproxy-Tenant", "initech")]);
    assert_eq!(s, 403, "{body}");
    assert!(
        body.contains("connection_missing")
            && body.contains("initech")
            && body.contains("PUT /connections/initech/openai"),
        "{body}"
    );

    // Replaced: 200; the new key is used at once.
    register_secret("sk-acme-0000000003");
    assert_eq!(
        put(&p, "acme", "openai", r#"{"token": "sk-acme-0000000003"}"#).0,
        200
    );
    assert_eq!(get_as(&p, &origin, ACME, &[]).0, 200);
    assert_eq!(
        origin.last().header("authorization").as_deref(),
        Some("Bearer sk-acme-0000000003")
    );

    // Connections survive a restart (sealed in state_dir).
    p.restart();
    assert_eq!(get_as(&p, &origin, GLOBEX, &[]).0, 200);
    assert_eq!(
        origin.last().header("authorization").as_deref(),
        Some("Bearer sk-globex-000000002")
    );
    let state = p
        .dir
        .path()
        .join(".credproxy/state/tenants/globex/openai.conn");
    let sealed = std::fs::read(&state).unwrap();
    assert!(
        !String::from_utf8_lossy(&sealed).contains("sk-globex"),
        "sealed at rest"
    );
    // /credentials and /metrics count connections, not tenants' secrets.
    let creds = http_get(p.admin, "/credentials").unwrap().1;
    assert!(
        creds.contains("\"status\": \"per_tenant\"") && creds.contains("\"connections\": 2"),
        "{creds}"
    );
    let m = p.metrics();
    for needle in [
        "credproxy_connections{credential=\"openai\",status=\"ok\"} 2",
        "credproxy_connections{credential=\"openai\",status=\"orphaned\"} 0",
        "credproxy_credential_available{credential=\"openai\",type=\"bearer\"} 1",
    ] {
        assert!(m.contains(needle), "{needle} in\n{m}");
    }

    // Deleted: 204, then connection_missing.
    assert_eq!(
        admin(
            &p,
            "DELETE",
            "/connections/acme/openai",
            None,
            Some(ADMIN_TOKEN)
        )
        .0,
        204
    );
    assert_eq!(
        admin(
            &p,
            "DELETE",
            "/connections/acme/openai",
            None,
            Some(ADMIN_TOKEN)
        )
        .0,
        404
    );
    let (s, body) = get_as(&p, &origin, ACME, &[]);
    assert_eq!(
        (s, body.contains("connection_missing")),
        (403, true),
        "{body}"
    );
    assert!(!p
        .dir
        .path()
        .join(".credproxy/state/tenants/acme/openai.conn")
        .exists());

    // Every change is in the audit log with who did it; no secret anywhere (Drop checks).
    let log = p.log_text();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("credproxy::audit"))
        .collect();
    assert!(
        audit
            .iter()
            .any(|l| l.contains("event=\"connection_create\"")
                || l.contains("event=connection_create")),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("delete") && l.contains("acme") && l.contains("alice@platform")),
        "{audit:?}"
    );
}

#[test]
fn the_admin_api_is_guarded_and_validates_like_the_config() {
    let origin = Origin::start();
    let p = start(&origin);
    // The token guards /connections and POSTs; health and metrics stay open.
    assert_eq!(admin(&p, "GET", "/connections", None, None).0, 401);
    assert_eq!(
        admin(
            &p,
            "GET",
            "/connections",
            None,
            Some("wrong-token-000000000")
        )
        .0,
        401
    );
    assert_eq!(admin(&p, "POST", "/reload", None, None).0, 401);
    assert_eq!(admin(&p, "GET", "/healthz", None, None).0, 200);
    assert_eq!(
        admin(&p, "GET", "/connections", None, Some(ADMIN_TOKEN)).0,
        200
    );

    let cases: &[(&str, &str, &str, u16, &str)] = &[
        (
            "acme",
            "openai",
            r#"{"tokn": "x-00000000"}"#,
            422,
            "\"field\": \"tokn\"",
        ),
        ("acme", "openai", r#"{}"#, 422, "\"field\": \"token\""),
        (
            "acme",
            "openai",
            r#"{"token": 12345678}"#,
            422,
            "expected a string",
        ),
        (
            "acme",
            "openai",
            r#"{"token": "a\nb"}"#,
            422,
            "CR, LF or NUL",
        ),
        ("acme", "openai", r#"{"token": "${HOME}"}"#, 201, ""),
        ("acme", "openai", r#"not json"#, 400, "not JSON"),
        ("acme", "openai", r#"["token"]"#, 422, "JSON object"),
        (".hidden", "openai", r#"{"token": "x"}"#, 400, "bad_tenant"),
        (
            "acme",
            "nope",
            r#"{"token": "x"}"#,
            404,
            "unknown_credential",
        ),
        (
            "acme",
            "openai",
            r#"{"token": "ok", "metadata": {"shop": "x"}}"#,
            422,
            "metadata.shop",
        ),
    ];
    for (tenant, cred, body, status, needle) in cases {
        let (s, b) = put(&p, tenant, cred, body);
        assert_eq!(s, *status, "{body}: {b}");
        assert!(b.contains(needle), "{body}: {b}");
    }
    // A tenant's value is taken literally, never as a reference to the proxy's environment.
    let (s, _) = get_as(&p, &origin, ACME, &[]);
    assert_eq!(s, 200);
    assert_eq!(
        origin.last().header("authorization").as_deref(),
        Some("Bearer ${HOME}")
    );
    let big = format!("{{\"token\": \"{}\"}}", "x".repeat(70_000));
    assert_eq!(put(&p, "acme", "openai", &big).0, 413);
    let (s, list) = admin(
        &p,
        "GET",
        "/connections?tenant=acme",
        None,
        Some(ADMIN_TOKEN),
    );
    assert_eq!(s, 200);
    assert!(
        list.contains("\"tenant\": \"acme\"") && list.contains("\"status\": \"ok\""),
        "{list}"
    );
    let (_, none) = admin(
        &p,
        "GET",
        "/connections?tenant=globex",
        None,
        Some(ADMIN_TOKEN),
    );
    assert_eq!(none.trim(), "[]");
}

/// Every other type that can be per tenant, each tenant's own values on the wire: basic
/// (username and password), client credentials (the tenant's own client id and secret, its
/// tokens kept apart), and AWS SigV4 (the tenant's keys sign).
#[test]
fn basic_client_credentials_and_sigv4_connections_are_each_tenants_own() {
    let (o_basic, o_cc, o_aws) = (Origin::start(), Origin::start(), Origin::start());
    let idp = Origin::start_with(std::sync::Arc::new(|s: &Seen| {
        let form: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(&s.body).into_owned().collect();
        let id = form.get("client_id").cloned().unwrap_or_default();
        TokenReply::ok(&format!("tok-for-{id}-00000001"), "3600")
    }));
    let body = format!(
        r#"clients:
  - {{ name: worker, secret: "${{WORKER_SECRET}}", tenants: ["*"], credentials: [erp, api, s3] }}
credentials:
  erp: {{ type: basic, per_tenant: true }}
  api: {{ type: oauth2_client_credentials, per_tenant: true, token_url: "http://127.0.0.1:{}/token", auth_method: post_body }}
  s3: {{ type: aws_sigv4, per_tenant: true, service: s3, region: eu-west-1 }}
routes:
  - {{ host: "127.0.0.1:{}", credential: erp }}
  - {{ host: "127.0.0.1:{}", credential: api }}
  - {{ host: "127.0.0.1:{}", credential: s3 }}
"#,
        idp.port(),
        o_basic.port(),
        o_cc.port(),
        o_aws.port()
    );
    let p = Proxy::start_with("admin_token: \"${ADMIN_TOKEN}\"", &body, &env());
    for t in ["acme", "globex"] {
        let puts = [
            (
                "erp",
                format!(r#"{{"username": "{t}-user", "password": "{t}-password-0001"}}"#),
            ),
            (
                "api",
                format!(
                    r#"{{"client_id": "{t}-client", "client_secret": "{t}-client-secret-01"}}"#
                ),
            ),
            (
                "s3",
                format!(
                    r#"{{"access_key_id": "AKIA{}", "secret_access_key": "{t}-aws-secret-key-000000000001"}}"#,
                    t.to_uppercase()
                ),
            ),
        ];
        for (cred, b) in puts {
            register_tokens_in(&b);
            register_secret(&format!("{t}-password-0001"));
            register_secret(&format!("{t}-client-secret-01"));
            register_secret(&format!("{t}-aws-secret-key-000000000001"));
            let (s, answer) = put(&p, t, cred, &b);
            assert_eq!(s, 201, "{cred} for {t}: {answer}");
        }
    }
    for t in ["acme", "globex"] {
        let h = [("X-Credproxy-Tenant", t)];
        assert_eq!(get_as(&p, &o_basic, WORKER, &h).0, 200);
        let want = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{t}-user:{t}-password-0001"),
        );
        assert_eq!(
            o_basic.last().header("authorization"),
            Some(format!("Basic {want}"))
        );
        assert_eq!(get_as(&p, &o_cc, WORKER, &h).0, 200);
        assert_eq!(
            o_cc.last().header("authorization"),
            Some(format!("Bearer tok-for-{t}-client-00000001"))
        );
        assert_eq!(get_as(&p, &o_aws, WORKER, &h).0, 200);
        let sig = o_aws.last().header("authorization").unwrap();
        let key = format!("Credential=AKIA{}/", t.to_uppercase());
        assert!(
            sig.starts_with("AWS4-HMAC-SHA256 ") && sig.contains(&key),
            "{sig}"
        );
    }
    // One token per tenant, each fetched with that tenant's own client.
    let ids: Vec<String> = idp
        .seen()
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids[0].contains("client_id=acme-client") && ids[1].contains("client_id=globex-client"));
}

#[test]
fn a_connection_cannot_name_a_secret_source() {
    let origin = Origin::start();
    let p = start(&origin);
    let marker = p.dir.path().join("ran");
    let body = format!(
        r#"{{"token": {{"exec": ["touch", "{}"]}}}}"#,
        marker.display()
    );
    let (status, answer) = put(&p, "acme", "openai", &body);
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer.contains("\"field\": \"token\"") && answer.contains("expected a string"),
        "{answer}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!marker.exists(), "a tenant's value never runs a command");
}
