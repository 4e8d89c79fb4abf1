//! Per-tenant credentials, providers, clients' tenants, the connect listener, logs and shutdown: each
//! rejection names its key and line.

use super::*;

fn load(text: &str) -> Result<Config, ConfigErrors> {
    load_str(text, Path::new("conf.yaml"), &|n| match n {
        "CREDPROXY_STATE_KEY" => Some("07".repeat(32)),
        "CS" => Some("client-secret-0001".into()),
        "ADMIN" => Some("admin-token-0123456789".into()),
        _ => None,
    })
}

#[track_caller]
fn rejects(text: &str, path: &str, line: usize, msg: &str) {
    let errs = match load(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    };
    let shown = errs.to_string();
    assert!(
        shown.contains(&format!("conf.yaml:{line}: {path}: ")) && shown.contains(msg),
        "expected `{path}` line {line} `{msg}`, got:\n{shown}"
    );
}

#[test]
fn per_tenant_credentials_load_as_templates() {
    let c = load("proxy:\n  admin_token: \"${ADMIN}\"\n  connect: { listen: 127.0.0.1:9091, public_url: https://connect.example.com }\nclients:\n  - { name: w, secret: \"${CS}\", tenants: [\"*\"], credentials: [hub, key] }\ncredentials:\n  hub: { type: oauth2_refresh_token, provider: hubspot, client_id: id-1, client_secret: \"${CS}\", per_tenant: true }\n  key: { type: bearer, per_tenant: true }\nroutes:\n  - { host: api.example.com, credential: key }\n").unwrap();
    let hub = c.credentials.iter().find(|e| &*e.name == "hub").unwrap();
    let t = hub.template().unwrap();
    assert_eq!(t.catalog.name, "hubspot");
    assert!(t.oauth.is_some());
    // The catalog's API host became a route to the credential.
    assert!(c.routes.iter().any(|r| r.name.contains("api.hubapi.com")));
}

#[test]
fn tenant_fields_in_the_config_are_refused() {
    rejects(
        "credentials:\n  k:\n    type: bearer\n    per_tenant: true\n    token: x\n",
        "credentials.k.token",
        5,
        "comes from each tenant's connection",
    );
}

#[test]
fn types_without_tenant_fields_cannot_be_per_tenant() {
    rejects(
        "credentials:\n  j:\n    type: jwt_key_pair\n    per_tenant: true\n    private_key: file:k.pem\n    algorithm: RS256\n",
        "credentials.j.per_tenant",
        4,
        "cannot be per tenant",
    );
}

#[test]
fn per_tenant_is_a_boolean() {
    rejects(
        "credentials:\n  k:\n    type: bearer\n    per_tenant: yes please\n",
        "credentials.k.per_tenant",
        4,
        "expected true or false",
    );
}

#[test]
fn per_tenant_needs_the_state_key() {
    let e = load_str(
        "credentials:\n  k:\n    type: bearer\n    per_tenant: true\n",
        Path::new("conf.yaml"),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("credentials.k.per_tenant") && e.contains("CREDPROXY_STATE_KEY"),
        "{e}"
    );
}

#[test]
fn unknown_providers_list_the_catalog() {
    rejects(
        "credentials:\n  h:\n    type: oauth2_refresh_token\n    provider: hubspott\n    client_id: a\n    client_secret: \"${CS}\"\n    per_tenant: true\n",
        "credentials.h.provider",
        4,
        "unknown provider `hubspott` (known: airtable, asana",
    );
}

#[test]
fn placeholders_need_per_tenant() {
    rejects(
        "credentials:\n  s:\n    type: oauth2_refresh_token\n    provider: shopify\n    client_id: a\n    client_secret: \"${CS}\"\n    refresh_token: r-0000000001\n",
        "credentials.s.token_url",
        2,
        "is filled per connection",
    );
}

#[test]
fn overridden_catalog_fields_are_checked() {
    rejects(
        "credentials:\n  h:\n    type: oauth2_refresh_token\n    provider: hubspot\n    client_id: a\n    client_secret: \"${CS}\"\n    per_tenant: true\n    auth_method: get_query\n",
        "credentials.h.auth_method",
        8,
        "the connect flow takes `basic` or `post_body`",
    );
    rejects(
        "credentials:\n  h:\n    type: oauth2_refresh_token\n    provider: hubspot\n    client_id: a\n    client_secret: \"${CS}\"\n    per_tenant: true\n    scopes: nope\n",
        "credentials.h.scopes",
        8,
        "expected a sequence",
    );
}

#[test]
fn test_url_must_be_a_url() {
    rejects(
        "credentials:\n  k:\n    type: bearer\n    per_tenant: true\n    test_url: not a url\n",
        "credentials.k.test_url",
        5,
        "",
    );
}

#[test]
fn client_tenants_are_names_or_star() {
    let base = "credentials:\n  k: { type: bearer, per_tenant: true }\nclients:\n";
    rejects(
        &format!(
            "{base}  - {{ name: a, secret: \"${{CS}}\", tenant: \"../x\", credentials: [k] }}\n"
        ),
        "clients[0].tenant",
        4,
        "",
    );
    rejects(
        &format!("{base}  - {{ name: a, secret: \"${{CS}}\", tenants: [ok, \"a b\"], credentials: [k] }}\n"),
        "clients[0].tenants[1]",
        4,
        "or is \"*\" for any",
    );
}

#[test]
fn admin_tokens_are_long_enough() {
    rejects(
        "proxy:\n  admin_token: short\n",
        "proxy.admin_token",
        2,
        "at least 16 characters",
    );
}

#[test]
fn the_connect_listener_needs_a_public_url() {
    rejects(
        "proxy:\n  connect: { listen: 127.0.0.1:9091, public_url: \"not a url\" }\n",
        "proxy.connect.public_url",
        2,
        "is not a URL",
    );
}

#[test]
fn log_format_and_shutdown_grace_are_checked() {
    rejects(
        "proxy:\n  log: { format: xml }\n",
        "proxy.log.format",
        2,
        "unknown variant `xml`",
    );
    rejects(
        "proxy:\n  shutdown_grace: 2h\n",
        "proxy.shutdown_grace",
        2,
        "out of range",
    );
    let c = load("proxy:\n  shutdown_grace: 250ms\n  log: { format: json }\n").unwrap();
    assert_eq!(
        c.proxy.shutdown_grace,
        std::time::Duration::from_millis(250)
    );
}

#[test]
fn the_otel_endpoint_is_an_http_url() {
    rejects(
        "proxy:\n  otel: { endpoint: \"grpc://collector:4317\" }\n",
        "proxy.otel.endpoint",
        2,
        "not an http(s) URL",
    );
    let c = load("proxy:\n  otel: { endpoint: \"http://collector:4318/\" }\n").unwrap();
    let o = c.proxy.otel.unwrap();
    assert_eq!(
        (o.traces_url.as_str(), o.service_name.as_str()),
        ("http://collector:4318/v1/traces", "credproxy")
    );
}
