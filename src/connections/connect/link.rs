//! Connect links and OAuth states: single-use, expiring, bound to a tenant and credential,
//! kept in the fleet's shared state so any replica can take them.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::super::admin::{audit, per_tenant, rfc3339, Call};
use super::super::record::{check_metadata, now_millis};
use crate::admin::json as reply;
use crate::app::App;
use crate::catalog::Source;
use crate::config::Config;

/// How long a connect link may wait to be opened.
pub const LINK_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a user may take to consent.
pub const STATE_TTL: Duration = Duration::from_secs(10 * 60);

/// What a connect link starts.
#[derive(Serialize, Deserialize)]
pub struct LinkDoc {
    pub tenant: String,
    pub credential: String,
    /// `connect_link` placeholders given when it was made.
    pub metadata: BTreeMap<String, String>,
}

/// What a consent in progress needs at the callback.
#[derive(Serialize, Deserialize)]
pub struct StateDoc {
    pub tenant: String,
    pub credential: String,
    pub metadata: BTreeMap<String, String>,
    /// The PKCE verifier (RFC 7636), sent with the code.
    pub verifier: String,
    /// SHA-256 of the browser's cookie: the callback must come from the browser that opened
    /// the link (else anyone could send a victim their own consent URL).
    pub browser: String,
}

/// 32 random bytes, base64url: unguessable ids, verifiers and cookies. None only when the
/// system has no randomness (nothing is started then).
pub fn random_token() -> Option<String> {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

pub fn sha256_b64(s: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Vec<u8>> {
    reply(status, &json!({ "error": code, "message": message.into() }))
}

/// `POST /connections/T/NAME/connect-link`: a single-use link (15 minutes) that starts the
/// connect flow for this tenant and credential. The body may give `connect_link`
/// placeholders: `{"metadata": {"shop": "acme"}}`.
pub async fn make_link(
    app: &App,
    cfg: &Config,
    tenant: &str,
    name: &str,
    call: &Call<'_>,
) -> Response<Vec<u8>> {
    let (public_url, metadata) = match linkable(cfg, tenant, name, call.body.as_ref()) {
        Ok(v) => v,
        Err(answer) => return *answer,
    };
    let Some(id) = random_token() else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_randomness",
            "the system has no source of randomness",
        );
    };
    let doc = LinkDoc {
        tenant: tenant.into(),
        credential: name.into(),
        metadata,
    };
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    let shared = app.tokens.shared();
    if let Err(e) = shared.put_once("link", &id, &bytes, LINK_TTL).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, "not_stored", e.to_string());
    }
    audit(&call.actor, "connect-link", tenant, name, "ok");
    let url = format!("{public_url}/connect/{name}?tenant={tenant}&link={id}");
    let expires = now_millis() / 1000 + LINK_TTL.as_secs();
    reply(
        StatusCode::CREATED,
        &json!({"url": url, "expires_in": LINK_TTL.as_secs(), "expires_at": rfc3339(expires)}),
    )
}

/// The connect listener's public URL and a link's checked placeholders.
type Linkable<'c> = (&'c str, BTreeMap<String, String>);

/// Whether `name` can have connect links for `tenant`: the connect listener's public URL
/// and the link's checked placeholders, or the answer saying why not.
fn linkable<'c>(
    cfg: &'c Config,
    tenant: &str,
    name: &str,
    body: Option<&serde_json::Value>,
) -> Result<Linkable<'c>, Box<Response<Vec<u8>>>> {
    let (_, template) = per_tenant(cfg, tenant, name)?;
    let Some(connect) = &cfg.proxy.connect else {
        return Err(Box::new(error(
            StatusCode::CONFLICT,
            "connect_not_configured",
            "set proxy.connect (listen, public_url) to use connect links",
        )));
    };
    if template.oauth.is_none() {
        return Err(Box::new(error(StatusCode::CONFLICT, "no_oauth_client", format!("credential `{name}` has no OAuth app to connect with: it needs client_id, client_secret and an authorize_url (from `provider:` or written)"))));
    }
    let metadata = link_metadata(&template.catalog, body).map_err(|(field, message)| {
        Box::new(reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"error": "invalid_field", "field": field, "message": message}),
        ))
    })?;
    Ok((connect.public_url.as_str(), metadata))
}

/// The `connect_link` placeholders of a link request: each checked by its pattern; those the
/// templates need and that have no default must be given.
fn link_metadata(
    catalog: &crate::catalog::Provider,
    body: Option<&serde_json::Value>,
) -> Result<BTreeMap<String, String>, (String, String)> {
    let mut out = BTreeMap::new();
    let given = body
        .and_then(|b| b.get("metadata"))
        .and_then(|m| m.as_object());
    for (k, v) in given.into_iter().flatten() {
        let key = format!("metadata.{k}");
        let Some(p) = catalog
            .placeholders
            .get(k)
            .filter(|p| p.source == Source::ConnectLink)
        else {
            return Err((key, "not a placeholder given with the connect link".into()));
        };
        let v = v
            .as_str()
            .ok_or_else(|| (key.clone(), "expected a string".to_string()))?;
        let _ = p;
        check_metadata(catalog, k, v).map_err(|m| (key.clone(), m))?;
        out.insert(k.clone(), v.to_string());
    }
    for name in catalog.placeholders_used() {
        let Some(p) = catalog.placeholders.get(name) else {
            continue;
        };
        if p.source != Source::ConnectLink || out.contains_key(name) {
            continue;
        }
        match &p.default {
            Some(d) => {
                out.insert(name.to_string(), d.clone());
            }
            None => {
                let what = p.description.clone().unwrap_or_default();
                return Err((format!("metadata.{name}"), format!("missing: {what}")));
            }
        }
    }
    Ok(out)
}
