//! `/connections` on the admin listener: list, create or replace (optionally tested first),
//! delete, refresh, and make connect links. Every change is audit-logged (who, tenant,
//! credential, action; never a secret).

use std::sync::Arc;

use http::{Response, StatusCode};
use serde::Serialize;
use serde_json::json;

use super::record::{self, parse_put, valid_tenant, Record};
use super::{ConnError, Entry, Template};
use crate::admin::json as reply;
use crate::app::App;
use crate::config::{Config, CredentialEntry};
use crate::credentials::Credential;

/// The largest `PUT` body.
pub const MAX_BODY: usize = 64 << 10;

pub use crate::audit::{connection as audit, Actor};

/// What the path names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    List,
    One {
        tenant: &'a str,
        credential: &'a str,
    },
    Refresh {
        tenant: &'a str,
        credential: &'a str,
    },
    Link {
        tenant: &'a str,
        credential: &'a str,
    },
}

fn target(path: &str) -> Option<Target<'_>> {
    let rest = path.strip_prefix("/connections")?;
    if rest.is_empty() || rest == "/" {
        return Some(Target::List);
    }
    let parts: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
    match parts.as_slice() {
        [t, c] if !t.is_empty() && !c.is_empty() => Some(Target::One {
            tenant: t,
            credential: c,
        }),
        [t, c, "refresh"] => Some(Target::Refresh {
            tenant: t,
            credential: c,
        }),
        [t, c, "connect-link"] => Some(Target::Link {
            tenant: t,
            credential: c,
        }),
        _ => None,
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Vec<u8>> {
    reply(status, &json!({ "error": code, "message": message.into() }))
}

/// The request as the handlers need it.
pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub body: Option<serde_json::Value>,
    pub actor: Actor,
}

pub async fn handle(app: &App, call: Call<'_>) -> Response<Vec<u8>> {
    let Some(t) = target(call.path) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "try /connections, /connections/TENANT/NAME[/refresh|/connect-link]",
        );
    };
    let cfg = app.config();
    match (call.method, t) {
        ("GET", Target::List) => list(app, &cfg, query_param(call.query, "tenant").as_deref()),
        ("GET", Target::One { tenant, credential }) => one(app, &cfg, tenant, credential),
        ("PUT", Target::One { tenant, credential }) => {
            put(app, &cfg, tenant, credential, &call).await
        }
        ("DELETE", Target::One { tenant, credential }) => {
            delete(app, &cfg, tenant, credential, &call.actor).await
        }
        ("POST", Target::Refresh { tenant, credential }) => {
            refresh(app, &cfg, tenant, credential, &call.actor).await
        }
        ("POST", Target::Link { tenant, credential }) => {
            super::connect::make_link(app, &cfg, tenant, credential, &call).await
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not allowed here", call.method),
        ),
    }
}

/// `name=value` from a query string, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// An answer that refuses a request (boxed: it travels as an error).
pub type Refused = Box<Response<Vec<u8>>>;

/// The per-tenant credential `name`, or the answer saying why it is not one.
pub fn per_tenant<'c>(
    cfg: &'c Config,
    tenant: &str,
    name: &str,
) -> Result<(&'c CredentialEntry, &'c Arc<Template>), Refused> {
    let refuse = |status, code: &str, message: String| Err(Box::new(error(status, code, message)));
    if !valid_tenant(tenant) {
        let m = "a tenant name has 1 to 64 letters, digits, `.`, `_` or `-`, and does not start with `.`";
        return refuse(StatusCode::BAD_REQUEST, "bad_tenant", m.into());
    }
    let Some(entry) = cfg.credentials.iter().find(|c| &*c.name == name) else {
        let m = format!("no credential `{name}` in the config");
        return refuse(StatusCode::NOT_FOUND, "unknown_credential", m);
    };
    match (&entry.credential, entry.template()) {
        (_, Some(t)) => Ok((entry, t)),
        (Err(e), None) => refuse(
            StatusCode::CONFLICT,
            "credential_unavailable",
            e.to_string(),
        ),
        (Ok(_), None) => {
            let m = format!("credential `{name}` is not `per_tenant: true`: it has no connections");
            refuse(StatusCode::CONFLICT, "not_per_tenant", m)
        }
    }
}

fn list(app: &App, cfg: &Config, tenant: Option<&str>) -> Response<Vec<u8>> {
    let all: Vec<ConnectionStatus> = app
        .connections
        .list(tenant)
        .iter()
        .map(|e| status(app, cfg, e))
        .collect();
    reply(StatusCode::OK, &all)
}

fn one(app: &App, cfg: &Config, tenant: &str, name: &str) -> Response<Vec<u8>> {
    match app.connections.get(name, tenant) {
        Some(e) => reply(StatusCode::OK, &status(app, cfg, &e)),
        None => missing(tenant, name),
    }
}

fn missing(tenant: &str, name: &str) -> Response<Vec<u8>> {
    error(
        StatusCode::NOT_FOUND,
        "connection_missing",
        format!("tenant `{tenant}` has no connection for `{name}`"),
    )
}

async fn put(
    app: &App,
    cfg: &Config,
    tenant: &str,
    name: &str,
    call: &Call<'_>,
) -> Response<Vec<u8>> {
    let (_, template) = match per_tenant(cfg, tenant, name) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Some(body) = call.body.clone() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "expected a JSON object of the connection's fields",
        );
    };
    let (fields, metadata) = match parse_put(template.kind, &template.catalog, body) {
        Ok(v) => v,
        Err(e) => return invalid_field(&e.field, &e.message),
    };
    let mut record = Record::new(tenant, name, fields, metadata, "api");
    if let Some(old) = app.connections.get(name, tenant) {
        record.created_at = old.record.created_at;
        record.revision = record.revision.max(old.record.revision + 1);
    }
    let built = match template.build(&record) {
        Ok(b) => b,
        Err(e) => return build_error(e),
    };
    if query_param(call.query, "test").as_deref() == Some("true") {
        if let Err(r) = super::check::test(app, template, tenant, &built).await {
            audit(&call.actor, "test", tenant, name, "failed");
            return *r;
        }
    }
    store(app, cfg, record, &call.actor).await
}

/// Stores a checked record and answers with its status (201 new, 200 replaced).
pub async fn store(app: &App, cfg: &Config, record: Record, actor: &Actor) -> Response<Vec<u8>> {
    let (tenant, name) = (record.tenant.clone(), record.credential.clone());
    let (created, stored) = match app.connections.put(record).await {
        Ok(v) => v,
        Err(e) => return store_error(&e),
    };
    audit(
        actor,
        if created { "create" } else { "replace" },
        &tenant,
        &name,
        "ok",
    );
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    reply(code, &status(app, cfg, &stored))
}

fn store_error(e: &ConnError) -> Response<Vec<u8>> {
    let status = match e {
        ConnError::Shared(_) => StatusCode::SERVICE_UNAVAILABLE,
        ConnError::Stale => StatusCode::CONFLICT,
        ConnError::NoKey | ConnError::Disk(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut r = error(status, "not_stored", e.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("5"),
        );
    }
    r
}

fn invalid_field(field: &str, message: &str) -> Response<Vec<u8>> {
    reply(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({ "error": "invalid_field", "field": field, "message": message }),
    )
}

fn build_error(e: crate::credentials::BuildError) -> Response<Vec<u8>> {
    match e {
        crate::credentials::BuildError::Invalid { key, message } => invalid_field(&key, &message),
        crate::credentials::BuildError::Unavailable(e) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, "unusable", e.to_string())
        }
    }
}

async fn delete(
    app: &App,
    cfg: &Config,
    tenant: &str,
    name: &str,
    actor: &Actor,
) -> Response<Vec<u8>> {
    if let Err(r) = per_tenant(cfg, tenant, name) {
        return *r;
    }
    match app.connections.delete(name, tenant).await {
        Ok(true) => {
            audit(actor, "delete", tenant, name, "ok");
            let mut r = Response::new(Vec::new());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Ok(false) => missing(tenant, name),
        Err(e) => store_error(&e),
    }
}

async fn refresh(
    app: &App,
    cfg: &Config,
    tenant: &str,
    name: &str,
    actor: &Actor,
) -> Response<Vec<u8>> {
    let (entry, template) = match per_tenant(cfg, tenant, name) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let built = match app.connections.resolve(template, tenant) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::NOT_FOUND, e.code(), e.to_string()),
    };
    let Credential::Token(src) = &built.credential else {
        return reply(
            StatusCode::OK,
            &json!({"tenant": tenant, "credential": name, "status": "nothing to refresh: this type holds no token"}),
        );
    };
    let t: Arc<str> = tenant.into();
    let result = app.tokens.refresh(&entry.name, Some(&t), src).await;
    audit(
        actor,
        "refresh",
        tenant,
        name,
        if result.is_ok() { "ok" } else { "failed" },
    );
    match result {
        Ok(tok) => {
            let secs = tok
                .expires_at
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs();
            reply(
                StatusCode::OK,
                &json!({"tenant": tenant, "credential": name, "status": "refreshed", "seconds_to_expiry": secs}),
            )
        }
        Err(e) => reply(
            StatusCode::BAD_GATEWAY,
            &json!({"tenant": tenant, "credential": name, "status": "error", "error": e.to_string()}),
        ),
    }
}

/// What `/connections` shows of one connection; never a secret.
#[derive(Serialize)]
pub struct ConnectionStatus {
    pub tenant: String,
    pub credential: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: &'static str,
    /// `api` (PUT) or `connect` (the OAuth connect flow).
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
    pub seconds_to_expiry: Option<u64>,
    pub last_error: Option<String>,
    /// The names of its secret fields.
    pub fields: Vec<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// When its refresh token stops working, where the provider says (or its catalog does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<RefreshStatus>,
}

#[derive(Serialize)]
pub struct RefreshStatus {
    pub expires_at: String,
    pub seconds_left: i64,
    /// Which rule gives the date.
    pub because: String,
    /// Within a week of it: send the tenant a connect link now.
    pub reconnect_soon: bool,
}

pub fn rfc3339(secs: u64) -> String {
    let t = i64::try_from(secs).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

pub fn status(app: &App, cfg: &Config, e: &Entry) -> ConnectionStatus {
    let r = &e.record;
    let entry = cfg.credentials.iter().find(|c| *c.name == *r.credential);
    let template = entry.and_then(|c| c.template());
    let built = template.map(|t| app.connections.resolve(t, &r.tenant));
    let src = match &built {
        Some(Ok(b)) => b.credential.token_source().cloned(),
        _ => None,
    };
    let tenant: Arc<str> = r.tenant.as_str().into();
    let slot = match (&src, entry) {
        (Some(s), Some(c)) => app.tokens.status(&c.name, Some(&tenant), s),
        _ => crate::tokens::SlotStatus::default(),
    };
    let state = match (&built, &src) {
        (None, _) => "orphaned",
        (Some(Err(_)), _) => "unusable",
        (Some(Ok(_)), Some(s)) if s.needs_reconnect() => "needs_reconnect",
        (Some(Ok(_)), None) => "ok",
        (Some(Ok(_)), Some(_)) if slot.seconds_to_expiry.is_some() => "ok",
        (Some(Ok(_)), Some(_)) if slot.last_error.is_some() => "error",
        (Some(Ok(_)), Some(_)) => "no token yet",
    };
    let last_error = match &built {
        Some(Err(e)) => Some(e.to_string()),
        None => Some(format!(
            "credential `{}` is no longer per tenant in the config",
            r.credential
        )),
        _ => slot.last_error.clone(),
    };
    ConnectionStatus {
        tenant: r.tenant.clone(),
        credential: r.credential.clone(),
        kind: template.map_or("-", |t| t.kind.name),
        status: state,
        source: r.source.clone(),
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
        seconds_to_expiry: slot.seconds_to_expiry,
        last_error,
        fields: r.fields.keys().cloned().collect(),
        metadata: r.metadata.clone(),
        refresh_token: template.and_then(|t| refresh_status(t, r, src.as_deref())),
    }
}

fn refresh_status(
    t: &Template,
    r: &Record,
    src: Option<&dyn crate::tokens::TokenSource>,
) -> Option<RefreshStatus> {
    let rt = src.and_then(|s| s.as_refresh_token());
    let (last_refresh, provider_says) = rt.map(|rt| rt.refresh_times()).unwrap_or_default();
    if rt.is_some_and(|rt| !rt.has_refresh_token()) {
        return None;
    }
    let times = super::health::Times {
        connected: r.created_at,
        updated: r.updated_at,
        last_refresh,
        provider_says,
    };
    let exp = super::health::expiry(&t.catalog, times)?;
    let now = record::now_millis() / 1000;
    let left = i64::try_from(exp.at).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(0);
    Some(RefreshStatus {
        expires_at: rfc3339(exp.at),
        seconds_left: left,
        because: exp.why,
        reconnect_soon: left < super::health::WARN_AHEAD.as_secs() as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(target("/connections"), Some(Target::List));
        assert_eq!(target("/connections/"), Some(Target::List));
        assert_eq!(
            target("/connections/acme/hub"),
            Some(Target::One {
                tenant: "acme",
                credential: "hub"
            })
        );
        assert_eq!(
            target("/connections/acme/hub/refresh"),
            Some(Target::Refresh {
                tenant: "acme",
                credential: "hub"
            })
        );
        assert_eq!(
            target("/connections/acme/hub/connect-link"),
            Some(Target::Link {
                tenant: "acme",
                credential: "hub"
            })
        );
        for p in [
            "/connections/acme",
            "/connections//hub",
            "/connections/a/b/c",
            "/connectionsx",
            "/connections/a/b/refresh/x",
        ] {
            assert_eq!(target(p), None, "{p}");
        }
    }
}
