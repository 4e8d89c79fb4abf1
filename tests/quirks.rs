//! The catalog's quirky providers, each connected through the real binary's connect flow
//! against a mock provider that enforces the quirk: the provider's own client
//! authentication, PKCE or its absence, the fields its token answer or callback carries, its
//! post-connect call, and the header and host its API wants. Only the endpoints, hosts and
//! the placeholder patterns that name them are overridden (to loopback); every other field
//! is the catalog's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use common::*;
use serde_json::{json, Value};

const STATE_KEY: &str = "8888888888888888888888888888888888888888888888888888888888888888";
const ADMIN_TOKEN: &str = "quirks-admin-token-0001";
const CLIENT_ID: &str = "qc-client";
const CLIENT_SECRET: &str = "qc-client-secret-0001";
const WORKER: (&str, &str) = ("worker", "worker-secret-000001");
const CODE: &str = "the-authorization-code";

/// What the mock provider expects and answers.
#[derive(Default)]
struct Rules {
    /// Client authentication in `Authorization: Basic` (else `client_secret` in the body).
    basic: bool,
    /// The PKCE challenge credproxy sent to the authorize URL; None: no PKCE allowed.
    challenge: Option<String>,
    /// The code exchange's answer, and a refresh grant's.
    answer: Value,
    refreshed: Value,
    /// `Authorization` a post-connect call must carry, and its answer.
    call_auth: String,
    call_answer: Value,
    /// Everything the provider refused, for the assertion message.
    problems: Vec<String>,
}

/// A provider on loopback: its token endpoint (any POST) and post-connect calls (any GET).
struct Provider {
    server: Origin,
    rules: Arc<Mutex<Rules>>,
}

impl Provider {
    fn start(rules: Rules) -> Provider {
        let rules = Arc::new(Mutex::new(rules));
        let r = rules.clone();
        let server = Origin::start_with(Arc::new(move |seen: &Seen| answer(&r, seen)));
        Provider { server, rules }
    }

    fn port(&self) -> u16 {
        self.server.port()
    }

    fn set(&self, f: impl FnOnce(&mut Rules)) {
        f(&mut self.rules.lock().unwrap());
    }

    fn problems(&self) -> Vec<String> {
        self.rules.lock().unwrap().problems.clone()
    }

    fn grants(&self) -> Vec<String> {
        self.server
            .seen()
            .iter()
            .filter_map(|s| form(s).remove("grant_type"))
            .collect()
    }
}

fn form(s: &Seen) -> HashMap<String, String> {
    url::form_urlencoded::parse(&s.body).into_owned().collect()
}

fn json_reply(status: u16, v: &Value) -> TokenReply {
    TokenReply::raw(status, &v.to_string(), "application/json")
}

fn answer(rules: &Mutex<Rules>, seen: &Seen) -> TokenReply {
    let mut r = rules.lock().unwrap();
    if seen.method != "POST" {
        if seen.header("authorization").as_deref() != Some(r.call_auth.as_str()) {
            let p = format!(
                "{}: authorization {:?}",
                seen.uri,
                seen.header("authorization")
            );
            r.problems.push(p);
            return json_reply(401, &json!({"error": "unauthorized"}));
        }
        return json_reply(200, &r.call_answer);
    }
    let bad = token_problems(&r, seen);
    if !bad.is_empty() {
        r.problems.extend(bad.iter().cloned());
        let body = json!({"error": "invalid_request", "error_description": bad.join("; ")});
        return json_reply(400, &body);
    }
    match form(seen).get("grant_type").map(String::as_str) {
        Some("refresh_token") => json_reply(200, &r.refreshed),
        _ => json_reply(200, &r.answer),
    }
}

/// What is wrong with a token request, by the provider's rules.
fn token_problems(r: &Rules, seen: &Seen) -> Vec<String> {
    let f = form(seen);
    let mut bad = Vec::new();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let auth = seen.header("authorization");
    let secret = f.get("client_secret").map(String::as_str);
    match r.basic {
        true if auth.as_deref() != Some(basic.as_str()) || secret.is_some() => {
            bad.push("client authentication must be HTTP Basic only".to_string())
        }
        false if auth.is_some() || secret != Some(CLIENT_SECRET) => {
            bad.push("client_secret must be in the body only".to_string())
        }
        _ => {}
    }
    match f.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            if f.get("code").map(String::as_str) != Some(CODE) || !f.contains_key("redirect_uri") {
                bad.push("code or redirect_uri wrong".to_string());
            }
            let verifier = f.get("code_verifier");
            match (&r.challenge, verifier) {
                (Some(c), Some(v)) if *c == s256(v) => {}
                (None, None) => {}
                (c, v) => bad.push(format!("PKCE: challenge {c:?}, verifier {v:?}")),
            }
        }
        Some("refresh_token") => {
            let want = r.answer["refresh_token"].as_str();
            if f.get("refresh_token").map(String::as_str) != want {
                bad.push("unknown refresh_token".to_string());
            }
        }
        g => bad.push(format!("grant_type {g:?}")),
    }
    bad
}

fn s256(verifier: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)
}

/// One provider's credential in the config: `cred` with `provider` and its overrides (YAML
/// lines under the credential), plus routes and DNS names (to 127.0.0.1) where the catalog's
/// hosts are per account.
struct Setup<'a> {
    cred: &'a str,
    provider: &'a str,
    overrides: String,
    routes: String,
    dns: &'a [&'a str],
}

/// The binary with the connect listener; its connect port.
fn start(s: &Setup<'_>) -> (Proxy, u16) {
    let cp = free_port();
    let dns: Vec<String> = s.dns.iter().map(|h| format!("{h}: 127.0.0.1")).collect();
    let extra = format!(
        "admin_token: \"${{ADMIN_TOKEN}}\"\nconnect: {{ listen: \"127.0.0.1:{cp}\", public_url: \"http://127.0.0.1:{cp}\" }}\ndns: {{ overrides: {{ {} }} }}",
        dns.join(", ")
    );
    let body = format!(
        "clients:\n  - {{ name: worker, secret: \"${{WORKER_SECRET}}\", tenants: [\"*\"], credentials: [{}] }}\ncredentials:\n  {}:\n    type: oauth2_refresh_token\n    provider: {}\n    per_tenant: true\n    client_id: {CLIENT_ID}\n    client_secret: \"${{QC_SECRET}}\"\n{}{}",
        s.cred, s.cred, s.provider, s.overrides, s.routes
    );
    let env = [
        ("CREDPROXY_STATE_KEY", STATE_KEY),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("WORKER_SECRET", WORKER.1),
        ("QC_SECRET", CLIENT_SECRET),
    ];
    (Proxy::start_with(&extra, &body, &env), cp)
}

fn admin_call(p: &Proxy, method: &str, path: &str, body: &str) -> (u16, String) {
    admin_as(p, ADMIN_TOKEN, method, path, body)
}

/// A consent as a browser and the provider would do it: the connect link (with `link_body`),
/// the authorize URL credproxy redirects to (returned, its query as a map), then the
/// provider's redirect to the callback with the code, the state and `extra` parameters.
/// The callback's status and page.
fn consent(
    p: &Proxy,
    cp: u16,
    idp: &Provider,
    (cred, tenant): (&str, &str),
    link_body: &str,
    extra: &str,
) -> (HashMap<String, String>, u16, String) {
    let path = format!("/connections/{tenant}/{cred}/connect-link");
    let (s, b) = admin_call(p, "POST", &path, link_body);
    assert_eq!(s, 201, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    let (s, to_idp, cookie, page) = browse(v["url"].as_str().unwrap(), None);
    assert_eq!(s, 302, "{page}");
    let to_idp = url::Url::parse(&to_idp.unwrap()).unwrap();
    let mut q: HashMap<String, String> = to_idp.query_pairs().into_owned().collect();
    q.insert("_path".into(), to_idp.path().to_string());
    let challenge = q.get("code_challenge").cloned();
    idp.set(|r| r.challenge = challenge);
    let back = format!(
        "http://127.0.0.1:{cp}/callback?code={CODE}&state={}{extra}",
        q["state"]
    );
    let (s, _, _, page) = browse(&back, cookie.as_deref());
    (q, s, page)
}

/// A request through the proxy for `tenant`: status, body; the origin records the rest.
fn call(p: &Proxy, tenant: &str, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    runtime().block_on(async {
        let proxy = reqwest::Proxy::http(p.url())
            .unwrap()
            .basic_auth(WORKER.0, WORKER.1);
        let c = reqwest::Client::builder().proxy(proxy).build().unwrap();
        let mut rb = c.get(url).header("X-Credproxy-Tenant", tenant);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.text().await.unwrap())
    })
}

/// `GET /connections/T/NAME` as JSON.
fn connection(p: &Proxy, tenant: &str, cred: &str) -> Value {
    let (s, b) = admin_call(p, "GET", &format!("/connections/{tenant}/{cred}"), "");
    assert_eq!(s, 200, "{b}");
    serde_json::from_str(&b).unwrap()
}

/// Days until the connection's refresh token stops working, as `/connections` says.
fn refresh_days(c: &Value) -> i64 {
    c["refresh_token"]["seconds_left"].as_i64().unwrap() / 86_400
}

fn loopback(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

#[test]
fn salesforce_instance_url_from_the_token_answer_decides_the_api_host() {
    let (o1, o2) = (Origin::start(), Origin::start());
    let idp = Provider::start(Rules {
        answer: json!({"access_token": "00Dxx!sf-access-0001", "refresh_token": "5Aep-sf-refresh-0001",
            "instance_url": loopback(o1.port()), "token_type": "Bearer", "issued_at": "1700000000000"}),
        ..Rules::default()
    });
    let i = idp.port();
    let overrides = format!(
        "    authorize_url: http://127.0.0.1:{i}/services/oauth2/authorize\n    token_url: http://127.0.0.1:{i}/services/oauth2/token\n    placeholders:\n      instance_url: {{ source: token_response, description: loopback instances, pattern: \"^http://127\\\\.0\\\\.0\\\\.1:[0-9]+$\", example: \"http://127.0.0.1:1\", hosts: [\"127.0.0.1:{}\", \"127.0.0.1:{}\"] }}\n",
        o1.port(),
        o2.port()
    );
    let setup = Setup {
        cred: "sf",
        provider: "salesforce",
        overrides,
        routes: String::new(),
        dns: &[],
    };
    let (p, cp) = start(&setup);
    let (q, s, page) = consent(&p, cp, &idp, ("sf", "acme"), "", "");
    assert_eq!((s, idp.problems()), (200, vec![]), "{page}");
    assert_eq!(q["scope"], "api refresh_token");
    assert_eq!(q["code_challenge_method"], "S256");
    let c = connection(&p, "acme", "sf");
    assert_eq!(c["metadata"]["instance_url"], loopback(o1.port()));

    // Its instance: the token (Salesforce answers without expires_in).
    let (s, b) = call(
        &p,
        "acme",
        &format!("{}/services/data", loopback(o1.port())),
        &[],
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        o1.last().header("authorization").as_deref(),
        Some("Bearer 00Dxx!sf-access-0001")
    );
    // Another org's instance, routed to the same credential: refused, naming the right one.
    let (s, b) = call(
        &p,
        "acme",
        &format!("{}/services/data", loopback(o2.port())),
        &[],
    );
    assert_eq!(s, 403, "{b}");
    assert!(
        b.contains("connection_host_mismatch") && b.contains(&format!("127.0.0.1:{}", o1.port())),
        "{b}"
    );
    assert_eq!(o2.count(), 0);

    // A token answer whose instance_url is not an instance: nothing stored, the page says why.
    idp.set(|r| r.answer["instance_url"] = json!("https://evil.example.com"));
    let (_, s, page) = consent(&p, cp, &idp, ("sf", "globex"), "", "");
    assert_eq!(s, 400, "{page}");
    assert!(page.contains("instance_url"), "{page}");
    assert_eq!(admin_call(&p, "GET", "/connections/globex/sf", "").0, 404);
}

#[test]
fn zoho_exchanges_and_refreshes_at_the_callbacks_accounts_server_and_calls_its_api_domain() {
    let api = Origin::start();
    let elsewhere = Origin::start();
    let idp = Provider::start(Rules {
        answer: json!({"access_token": "1000.zoho-access-0001", "refresh_token": "1000.zoho-refresh-0001",
            "api_domain": loopback(api.port()), "token_type": "Bearer", "expires_in": 3600}),
        refreshed: json!({"access_token": "1000.zoho-access-0002", "api_domain": loopback(api.port()),
            "token_type": "Bearer", "expires_in": 3600}),
        ..Rules::default()
    });
    let i = idp.port();
    let overrides = format!(
        "    authorize_url: http://127.0.0.1:{i}/oauth/v2/auth\n    placeholders:\n      accounts_server: {{ source: callback, description: the accounts server, pattern: \"^http://127\\\\.0\\\\.0\\\\.1:{i}$\", example: \"http://127.0.0.1:{i}\" }}\n      api_domain: {{ source: token_response, description: the API domain, pattern: \"^http://127\\\\.0\\\\.0\\\\.1:[0-9]+$\", example: \"http://127.0.0.1:1\", hosts: [\"127.0.0.1:{}\"] }}\n",
        api.port()
    );
    let setup = Setup {
        cred: "zoho",
        provider: "zoho_crm",
        overrides,
        routes: String::new(),
        dns: &[],
    };
    let (p, cp) = start(&setup);
    let server = format!("&location=eu&accounts-server=http%3A%2F%2F127.0.0.1%3A{i}");
    let (q, s, page) = consent(&p, cp, &idp, ("zoho", "acme"), "", &server);
    assert_eq!((s, idp.problems()), (200, vec![]), "{page}");
    assert_eq!(
        (q["access_type"].as_str(), q["prompt"].as_str()),
        ("offline", "consent")
    );
    assert!(
        q["scope"].starts_with("ZohoCRM.modules.ALL,ZohoCRM.settings.READ"),
        "{q:?}"
    );
    assert_eq!(q["_path"], "/oauth/v2/auth");

    let (s, b) = call(
        &p,
        "acme",
        &format!("{}/crm/v8/Leads", loopback(api.port())),
        &[],
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        api.last().header("authorization").as_deref(),
        Some("Zoho-oauthtoken 1000.zoho-access-0001"),
        "never Bearer"
    );
    // Refreshed at the accounts server the callback named.
    let (s, b) = admin_call(&p, "POST", "/connections/acme/zoho/refresh", "");
    assert_eq!(s, 200, "{b}");
    assert_eq!(idp.grants(), ["authorization_code", "refresh_token"]);
    call(
        &p,
        "acme",
        &format!("{}/crm/v8/Leads", loopback(api.port())),
        &[],
    );
    assert_eq!(
        api.last().header("authorization").as_deref(),
        Some("Zoho-oauthtoken 1000.zoho-access-0002")
    );

    // A callback naming another accounts server: the client secret is never sent there.
    let forged = format!(
        "&accounts-server=http%3A%2F%2F127.0.0.1%3A{}",
        elsewhere.port()
    );
    let (_, s, page) = consent(&p, cp, &idp, ("zoho", "globex"), "", &forged);
    assert_eq!(s, 400, "{page}");
    assert!(
        page.contains("accounts-server") && page.contains("pattern"),
        "{page}"
    );
    assert_eq!(elsewhere.count(), 0);
}

#[test]
fn quickbooks_keeps_the_callbacks_realm_id_and_its_100_day_refresh_token() {
    let api = Origin::start();
    let idp = Provider::start(Rules {
        basic: true,
        answer: json!({"access_token": "eyJqb-qbo-access-0001", "refresh_token": "AB11-qbo-refresh-0001",
            "token_type": "bearer", "expires_in": 3600, "x_refresh_token_expires_in": 8_726_400}),
        ..Rules::default()
    });
    let i = idp.port();
    let overrides = format!(
        "    authorize_url: http://127.0.0.1:{i}/connect/oauth2\n    token_url: http://127.0.0.1:{i}/oauth2/v1/tokens/bearer\n    api_hosts: [\"127.0.0.1:{}\"]\n",
        api.port()
    );
    let setup = Setup {
        cred: "qbo",
        provider: "quickbooks",
        overrides,
        routes: String::new(),
        dns: &[],
    };
    let (p, cp) = start(&setup);
    let (q, s, page) = consent(
        &p,
        cp,
        &idp,
        ("qbo", "acme"),
        "",
        "&realmId=9130350000000000",
    );
    assert_eq!((s, idp.problems()), (200, vec![]), "{page}");
    assert_eq!(q["scope"], "com.intuit.quickbooks.accounting");
    let c = connection(&p, "acme", "qbo");
    assert_eq!(c["metadata"]["realm_id"], "9130350000000000");
    assert!((99..=101).contains(&refresh_days(&c)), "{c}");
    let url = format!(
        "{}/v3/company/9130350000000000/companyinfo/9130350000000000",
        loopback(api.port())
    );
    assert_eq!(call(&p, "acme", &url, &[]).0, 200);
    assert_eq!(
        api.last().header("authorization").as_deref(),
        Some("Bearer eyJqb-qbo-access-0001")
    );
    // A company whose refresh token Intuit says ends in 3 days: /connections and /metrics
    // say to reconnect it now, naming only that tenant.
    idp.set(|r| r.answer["x_refresh_token_expires_in"] = json!(3 * 86_400));
    let (_, s, page) = consent(&p, cp, &idp, ("qbo", "initech"), "", "&realmId=42");
    assert_eq!(s, 200, "{page}");
    let c = connection(&p, "initech", "qbo");
    assert!((2..=3).contains(&refresh_days(&c)), "{c}");
    assert_eq!(c["refresh_token"]["reconnect_soon"], true, "{c}");
    let m = p.metrics();
    assert!(
        m.contains("credproxy_connections_reconnect_soon{credential=\"qbo\"} 1")
            && m.contains(
                "credproxy_connection_reconnect_due_seconds{credential=\"qbo\",tenant=\"initech\"}"
            )
            && !m.contains("tenant=\"acme\""),
        "{m}"
    );
    // A realmId that is not a company id: refused by the catalog's pattern.
    let (_, s, page) = consent(&p, cp, &idp, ("qbo", "globex"), "", "&realmId=1%3Bdrop");
    assert_eq!(s, 400, "{page}");
    assert!(
        page.contains("realmId") && page.contains("pattern"),
        "{page}"
    );
}

#[test]
fn xero_sends_the_tenant_id_from_its_connections_endpoint_on_every_call() {
    let api = Origin::start();
    let idp = Provider::start(Rules {
        basic: true,
        answer: json!({"access_token": "eyJ-xero-access-0001", "refresh_token": "xero-refresh-0001",
            "token_type": "Bearer", "expires_in": 1800}),
        call_auth: "Bearer eyJ-xero-access-0001".into(),
        call_answer: json!([{"id": "e1eede29", "tenantId": "70784a63-d24b-46a9-a4db-0e70a274b056",
            "tenantType": "ORGANISATION", "tenantName": "Acme Ltd"}]),
        ..Rules::default()
    });
    let i = idp.port();
    let overrides = format!(
        "    authorize_url: http://127.0.0.1:{i}/identity/connect/authorize\n    token_url: http://127.0.0.1:{i}/connect/token\n    api_hosts: [\"127.0.0.1:{}\"]\n    post_connect: {{ url: \"http://127.0.0.1:{i}/connections\", select: \"[0].tenantId\", as: tenant_id, header: xero-tenant-id }}\n",
        api.port()
    );
    let setup = Setup {
        cred: "xero",
        provider: "xero",
        overrides,
        routes: String::new(),
        dns: &[],
    };
    let (p, cp) = start(&setup);
    let (q, s, page) = consent(&p, cp, &idp, ("xero", "acme"), "", "");
    assert_eq!((s, idp.problems()), (200, vec![]), "{page}");
    assert!(
        q["scope"].contains("offline_access accounting.invoices"),
        "{q:?}"
    );
    let url = format!("{}/api.xro/2.0/Invoices", loopback(api.port()));
    assert_eq!(call(&p, "acme", &url, &[]).0, 200);
    let seen = api.last();
    assert_eq!(
        seen.header("xero-tenant-id").as_deref(),
        Some("70784a63-d24b-46a9-a4db-0e70a274b056")
    );
    assert_eq!(
        seen.header("authorization").as_deref(),
        Some("Bearer eyJ-xero-access-0001")
    );
    let c = connection(&p, "acme", "xero");
    assert!((59..=60).contains(&refresh_days(&c)), "60 days unused: {c}");
    assert_eq!(c["refresh_token"]["reconnect_soon"], false);

    // An account with no organisation connected: the page says so, nothing is stored.
    idp.set(|r| r.call_answer = json!([]));
    let (_, s, page) = consent(&p, cp, &idp, ("xero", "globex"), "", "");
    assert_eq!(s, 400, "{page}");
    assert!(page.contains("nothing connected"), "{page}");
}

#[test]
fn shopify_talks_to_each_shops_own_host_with_its_own_header() {
    let api = Origin::start();
    let idp = Provider::start(Rules {
        answer: json!({"access_token": "shpat_shop-access-0001", "scope": "read_products",
            "expires_in": 3600, "refresh_token": "shprt_shop-refresh-0001"}),
        ..Rules::default()
    });
    let (i, a) = (idp.port(), api.port());
    let overrides = format!(
        "    authorize_url: \"http://127.0.0.1:{i}/{{shop}}/admin/oauth/authorize\"\n    token_url: \"http://127.0.0.1:{i}/{{shop}}/admin/oauth/access_token\"\n    api_hosts: [\"{{shop}}.myshopify.com:{a}\"]\n"
    );
    let setup = Setup {
        cred: "shop",
        provider: "shopify",
        overrides,
        routes: format!(
            "routes:\n  - {{ host: \"*.myshopify.com:{a}\", credential: shop, allow_http: true }}\n"
        ),
        dns: &["acme.myshopify.com", "globex.myshopify.com"],
    };
    let (p, cp) = start(&setup);
    let shop = r#"{"metadata": {"shop": "acme"}}"#;
    let (q, s, page) = consent(&p, cp, &idp, ("shop", "acme"), shop, "");
    assert_eq!((s, idp.problems()), (200, vec![]), "{page}");
    assert_eq!(q["_path"], "/acme/admin/oauth/authorize");
    assert!(!q.contains_key("code_challenge"), "no PKCE: {q:?}");
    assert!(
        q["scope"].starts_with("read_products,write_products"),
        "{q:?}"
    );
    let token_path = &idp.server.last().uri;
    assert!(
        token_path.starts_with("/acme/admin/oauth/access_token"),
        "{token_path}"
    );

    let url = format!("http://acme.myshopify.com:{a}/admin/api/2025-10/shop.json");
    let (s, b) = call(&p, "acme", &url, &[]);
    assert_eq!(s, 200, "{b}");
    let seen = api.last();
    assert_eq!(
        seen.header("x-shopify-access-token").as_deref(),
        Some("shpat_shop-access-0001")
    );
    assert_eq!(seen.header("authorization"), None);
    // Another shop's host: refused, never sent acme's token.
    let other = format!("http://globex.myshopify.com:{a}/admin/api/2025-10/shop.json");
    let (s, b) = call(&p, "acme", &other, &[]);
    assert_eq!(
        (s, b.contains("connection_host_mismatch")),
        (403, true),
        "{b}"
    );
    // A shop name that is not a subdomain: refused when the link is made.
    let (s, b) = admin_call(
        &p,
        "POST",
        "/connections/globex/shop/connect-link",
        r#"{"metadata": {"shop": "evil.com/x"}}"#,
    );
    assert_eq!((s, b.contains("shop")), (422, true), "{b}");
}

#[test]
fn atlassian_keeps_the_cloud_id_and_asks_for_the_api_audience() {
    let api = Origin::start();
    let idp = Provider::start(Rules {
        answer: json!({"access_token": "eyJ-jira-access-0001", "refresh_token": "eyJ-jira-refresh-0001",
            "token_type": "Bearer", "expires_in": 3600, "scope": "read:jira-work offline_access"}),
        call_auth: "Bearer eyJ-jira-access-0001".into(),
        call_answer: json!([{"id": "1324a887-45db-1bf4-1e99-ef0ff456d421", "name": "acme",
            "url": "https://acme.atlassian.net", "scopes": ["read:jira-work"]}]),
        ..Rules::default()
    });
    let i = idp.port();
    let overrides = format!(
        "    authorize_url: http://127.0.0.1:{i}/authorize\n    token_url: http://127.0.0.1:{i}/oauth/token\n    api_hosts: [\"127.0.0.1:{}\"]\n    post_connect: {{ url: \"http://127.0.0.1:{i}/oauth/token/accessible-resources\", select: \"[0].id\", as: cloud_id }}\n",
        api.port()
    );
    let setup = Setup {
        cred: "jira",
        provider: "jira",
        overrides,
        routes: String::new(),
        dns: &[],
    };
    let (p, cp) = start(&setup);
    let (q, s, page) = consent(&p, cp, &idp, ("jira", "acme"), "", "");
    assert_eq!((s, idp.problems()), (200, vec![]), "{page}");
    assert_eq!(
        (q["audience"].as_str(), q["prompt"].as_str()),
        ("api.atlassian.com", "consent")
    );
    let c = connection(&p, "acme", "jira");
    assert_eq!(
        c["metadata"]["cloud_id"],
        "1324a887-45db-1bf4-1e99-ef0ff456d421"
    );
    assert!((89..=90).contains(&refresh_days(&c)), "90 days idle: {c}");
    let url = format!(
        "{}/ex/jira/1324a887-45db-1bf4-1e99-ef0ff456d421/rest/api/3/myself",
        loopback(api.port())
    );
    assert_eq!(call(&p, "acme", &url, &[]).0, 200);
    assert_eq!(
        api.last().header("authorization").as_deref(),
        Some("Bearer eyJ-jira-access-0001")
    );
}

#[test]
fn notion_gets_its_version_header_unless_the_client_sent_one() {
    let api = Origin::start();
    // An older public integration: a token that never expires and no refresh token.
    let idp = Provider::start(Rules {
        basic: true,
        answer: json!({"access_token": "ntn_notion-access-0001", "token_type": "bearer",
            "bot_id": "b-1", "workspace_id": "w-1", "workspace_name": "Acme"}),
        ..Rules::default()
    });
    let i = idp.port();
    let overrides = format!(
        "    authorize_url: http://127.0.0.1:{i}/v1/oauth/authorize\n    token_url: http://127.0.0.1:{i}/v1/oauth/token\n    api_hosts: [\"127.0.0.1:{}\"]\n",
        api.port()
    );
    let setup = Setup {
        cred: "notion",
        provider: "notion",
        overrides,
        routes: String::new(),
        dns: &[],
    };
    let (p, cp) = start(&setup);
    let (q, s, page) = consent(&p, cp, &idp, ("notion", "acme"), "", "");
    assert_eq!((s, idp.problems()), (200, vec![]), "no PKCE fields: {page}");
    assert_eq!(q["owner"], "user");
    let url = format!("{}/v1/users/me", loopback(api.port()));
    assert_eq!(call(&p, "acme", &url, &[]).0, 200);
    let seen = api.last();
    assert_eq!(seen.all("notion-version"), ["2025-09-03"]);
    assert_eq!(
        seen.header("authorization").as_deref(),
        Some("Bearer ntn_notion-access-0001")
    );
    assert_eq!(
        call(&p, "acme", &url, &[("Notion-Version", "2022-06-28")]).0,
        200
    );
    assert_eq!(api.last().all("notion-version"), ["2022-06-28"]);
    let c = connection(&p, "acme", "notion");
    assert_eq!(c["status"], "ok", "{c}");
    assert!(c.get("refresh_token").is_none(), "{c}");
}

#[test]
fn mailchimp_finds_the_data_centre_from_its_metadata_endpoint() {
    let api = Origin::start();
    // Mailchimp's tokens never expire: it answers expires_in 0 and no refresh token.
    let idp = Provider::start(Rules {
        answer: json!({"access_token": "mc-access-000000000001", "expires_in": 0, "scope": null}),
        call_auth: "OAuth mc-access-000000000001".into(),
        call_answer: json!({"dc": "us21", "role": "owner", "accountname": "Acme",
            "login_url": "https://login.mailchimp.com", "api_endpoint": "https://us21.api.mailchimp.com"}),
        ..Rules::default()
    });
    let (i, a) = (idp.port(), api.port());
    let overrides = format!(
        "    authorize_url: http://127.0.0.1:{i}/oauth2/authorize\n    token_url: http://127.0.0.1:{i}/oauth2/token\n    api_hosts: [\"{{dc}}.api.mailchimp.com:{a}\"]\n    post_connect: {{ url: \"http://127.0.0.1:{i}/oauth2/metadata\", select: dc, as: dc, prefix: \"OAuth \" }}\n"
    );
    let setup = Setup {
        cred: "mc",
        provider: "mailchimp",
        overrides,
        routes: format!(
            "routes:\n  - {{ host: \"*.api.mailchimp.com:{a}\", credential: mc, allow_http: true }}\n"
        ),
        dns: &["us21.api.mailchimp.com", "us6.api.mailchimp.com"],
    };
    let (p, cp) = start(&setup);
    let (_, s, page) = consent(&p, cp, &idp, ("mc", "acme"), "", "");
    assert_eq!((s, idp.problems()), (200, vec![]), "{page}");
    assert_eq!(connection(&p, "acme", "mc")["metadata"]["dc"], "us21");
    let url = format!("http://us21.api.mailchimp.com:{a}/3.0/ping");
    let (s, b) = call(&p, "acme", &url, &[]);
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        api.last().header("authorization").as_deref(),
        Some("Bearer mc-access-000000000001")
    );
    // Used again later: a token that never expires is not "expired" (no refresh attempted).
    assert_eq!(call(&p, "acme", &url, &[]).0, 200);
    assert_eq!(idp.grants(), ["authorization_code"]);
    let other = format!("http://us6.api.mailchimp.com:{a}/3.0/ping");
    assert_eq!(call(&p, "acme", &other, &[]).0, 403);
}
