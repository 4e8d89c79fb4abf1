//! The end of a consent: the code exchanged for tokens (RFC 6749 4.1.3 with the PKCE
//! verifier), the provider's extras collected into the connection's metadata, each checked by
//! its pattern, and the connection stored.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::super::admin::{per_tenant, query_param};
use super::super::record::{check_metadata, now_millis, Record};
use super::link::StateDoc;
use crate::app::App;
use crate::catalog::{self, Provider, Source};
use crate::credentials::oauth2_client_credentials::{
    basic_header, basic_pair, exchange, oauth_error_detail,
};
use crate::secret::Secret;
use crate::tokens::TokenError;

/// The longest a token endpoint or post-connect call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Finishes the consent of `doc`; the provider's display name, or what went wrong (for the
/// page; never a secret).
pub async fn complete(app: &App, doc: &StateDoc, q: Option<&str>) -> Result<String, String> {
    let cfg = app.config();
    let (_, template) = per_tenant(&cfg, &doc.tenant, &doc.credential).map_err(|_| {
        format!(
            "`{}` is no longer a credential tenants connect.",
            doc.credential
        )
    })?;
    let oauth = template
        .oauth
        .as_ref()
        .ok_or("The credential has no OAuth app.")?;
    let connect = cfg
        .proxy
        .connect
        .as_ref()
        .ok_or("proxy.connect is not configured.")?;
    let code = query_param(q, "code").ok_or("The provider sent no authorization code.")?;
    let c = &template.catalog;
    let mut metadata = doc.metadata.clone();
    from_callback(c, q, &mut metadata)?;
    derive(c, &mut metadata)?;
    let call = Exchange {
        http: app.tokens.http(),
        catalog: c,
        client_id: &oauth.client_id,
        client_secret: &oauth.client_secret,
        redirect: format!("{}/callback", connect.public_url),
    };
    let answer = call.code(&code, &doc.verifier, &metadata).await?;
    from_answer(c, &answer, &mut metadata)?;
    derive(c, &mut metadata)?;
    let access = answer
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    let access = access.ok_or("The provider's answer has no access_token.")?;
    if let Some(pc) = &c.post_connect {
        let v = call.post_connect(pc, access).await?;
        check_metadata(c, &pc.name, &v).map_err(|m| format!("{} from {}: {m}", pc.name, pc.url))?;
        metadata.insert(pc.name.clone(), v);
    }
    let record = record(doc, &answer, access, metadata, app);
    template.build(&record).map_err(|e| match e {
        crate::credentials::BuildError::Invalid { key, message } => {
            format!("The provider's answer cannot be used ({key}: {message}).")
        }
        crate::credentials::BuildError::Unavailable(e) => {
            format!("The connection cannot be used: {e}.")
        }
    })?;
    app.connections
        .put(record)
        .await
        .map_err(|e| format!("The connection was not stored: {e}."))?;
    Ok(c.display_name
        .clone()
        .unwrap_or_else(|| doc.credential.clone()))
}

/// The connection's fields from a token answer: the refresh token (the chain's seed), and
/// the access token with its expiry (used first; alone when the provider issues no refresh
/// token).
fn record(
    doc: &StateDoc,
    answer: &Value,
    access: &str,
    metadata: BTreeMap<String, String>,
    app: &App,
) -> Record {
    let mut fields = serde_json::Map::new();
    if let Some(rt) = answer
        .get("refresh_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        fields.insert("refresh_token".into(), rt.into());
    }
    fields.insert("access_token".into(), access.into());
    let expires_in =
        crate::credentials::oauth2_client_credentials::lifetime(answer.get("expires_in"));
    if let Ok(Some(d)) = expires_in {
        let at = now_millis() / 1000 + d.as_secs();
        fields.insert("access_token_expires_at".into(), at.to_string().into());
    }
    let rt_lifetime = answer
        .get("refresh_token_expires_in")
        .or(answer.get("x_refresh_token_expires_in"));
    let rt_lifetime = crate::credentials::oauth2_client_credentials::lifetime(rt_lifetime);
    if let (Ok(Some(d)), true) = (rt_lifetime, fields.contains_key("refresh_token")) {
        let at = now_millis() / 1000 + d.as_secs();
        fields.insert("refresh_token_expires_at".into(), at.to_string().into());
    }
    let mut r = Record::new(&doc.tenant, &doc.credential, fields, metadata, "connect");
    if let Some(old) = app.connections.get(&doc.credential, &doc.tenant) {
        r.revision = r.revision.max(old.record.revision + 1);
    }
    r
}

/// Values the callback carries (`callback_params`), each checked.
fn from_callback(
    c: &Provider,
    q: Option<&str>,
    m: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for (param, name) in &c.callback_params {
        if let Some(v) = query_param(q, param) {
            check_metadata(c, name, &v).map_err(|e| format!("The callback's {param}: {e}."))?;
            m.insert(name.clone(), v);
        }
    }
    Ok(())
}

/// Values the token answer carries (`token_response_fields`), each checked.
fn from_answer(
    c: &Provider,
    answer: &Value,
    m: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for (field, name) in &c.token_response_fields {
        if let Some(v) = answer.get(field).and_then(Value::as_str) {
            check_metadata(c, name, v).map_err(|e| format!("The token answer's {field}: {e}."))?;
            m.insert(name.clone(), v.to_string());
        }
    }
    Ok(())
}

/// `derived` placeholders, from the values they are made of.
fn derive(c: &Provider, m: &mut BTreeMap<String, String>) -> Result<(), String> {
    for (name, p) in c
        .placeholders
        .iter()
        .filter(|(_, p)| p.source == Source::Derived)
    {
        let Some(from) = p.from.as_ref().and_then(|f| m.get(f)) else {
            continue;
        };
        let v = from
            .strip_prefix(p.strip_prefix.as_deref().unwrap_or(""))
            .unwrap_or(from)
            .to_string();
        check_metadata(c, name, &v).map_err(|e| format!("{name}: {e}."))?;
        m.insert(name.clone(), v);
    }
    Ok(())
}

struct Exchange<'a> {
    http: &'a reqwest::Client,
    catalog: &'a Provider,
    client_id: &'a Secret,
    client_secret: &'a Secret,
    redirect: String,
}

impl Exchange<'_> {
    /// The token answer for `code`.
    async fn code(
        &self,
        code: &str,
        verifier: &str,
        m: &BTreeMap<String, String>,
    ) -> Result<Value, String> {
        let c = self.catalog;
        let template = c
            .token_url
            .as_deref()
            .ok_or("The credential has no token_url.")?;
        let url = catalog::fill(template, &|n| m.get(n).cloned())
            .map_err(|p| format!("The token URL needs `{p}`, which the consent did not give."))?;
        let (url, endpoint) = crate::credentials::oauth2_client_credentials::token_url(&url)?;
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect),
        ];
        if c.pkce() {
            form.push(("code_verifier", verifier));
        }
        form.extend(c.token_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let basic = c.auth_method == Some(crate::config::raw::AuthMethod::Basic);
        let mut rb = self
            .http
            .post(url)
            .header(http::header::ACCEPT, "application/json")
            .timeout(CALL_TIMEOUT);
        let pair = basic_pair(self.client_id, self.client_secret);
        if basic {
            rb = rb.header(http::header::AUTHORIZATION, basic_header(&pair));
        } else {
            form.push(("client_id", self.client_id.expose()));
            form.push(("client_secret", self.client_secret.expose()));
        }
        let sent = [
            self.client_secret.clone(),
            pair,
            Secret::new(code),
            Secret::new(verifier),
        ];
        let scrubbed =
            |e: TokenError| format!("The provider refused the code: {}.", e.redacted(&sent));
        let (status, body) = exchange(rb.form(&form), &endpoint)
            .await
            .map_err(scrubbed)?;
        if !(200..300).contains(&status) {
            let detail = oauth_error_detail(&body);
            return Err(scrubbed(TokenError::Status {
                endpoint,
                status,
                detail,
            }));
        }
        serde_json::from_slice(&body)
            .map_err(|_| format!("The provider answered {status} with a body that is not JSON."))
    }

    /// The value `post_connect` selects from its answer, fetched with the new access token.
    async fn post_connect(
        &self,
        pc: &catalog::PostConnect,
        access: &str,
    ) -> Result<String, String> {
        let (header, prefix) = match (&pc.prefix, &self.catalog.inject) {
            (Some(p), _) => ("authorization".to_string(), p.clone()),
            (None, Some(i)) => (i.header.clone(), i.prefix.clone().unwrap_or_default()),
            (None, None) => ("authorization".to_string(), "Bearer ".to_string()),
        };
        let resp = self
            .http
            .get(&pc.url)
            .header(http::header::ACCEPT, "application/json")
            .header(header, format!("{prefix}{access}"))
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("{} could not be reached: {}", pc.url, e.without_url()))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("{}: {}", pc.url, e.without_url()))?;
        if !(200..300).contains(&status) || body.len() > 1 << 20 {
            return Err(format!("{} answered {status}.", pc.url));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| format!("{} did not answer JSON.", pc.url))?;
        select(&v, &pc.select)
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .ok_or_else(|| {
                format!(
                    "{} has no {} in its answer (the account may have nothing connected).",
                    pc.url, pc.select
                )
            })
    }
}

/// `field`, `a.b`, `[0].field`: a value inside a JSON document.
pub fn select<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    let mut cur = v;
    let mut rest = path;
    while !rest.is_empty() {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        if let Some(r) = rest.strip_prefix('[') {
            let (n, after) = r.split_once(']')?;
            cur = cur.get(n.parse::<usize>().ok()?)?;
            rest = after;
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            cur = cur.get(&rest[..end])?;
            rest = &rest[end..];
        }
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections() {
        let v: Value = serde_json::json!([{"tenantId": "t-1", "id": 7}, {"tenantId": "t-2"}]);
        assert_eq!(select(&v, "[0].tenantId"), Some(&Value::from("t-1")));
        assert_eq!(select(&v, "[1].tenantId"), Some(&Value::from("t-2")));
        assert_eq!(select(&v, "[2].tenantId"), None);
        let m: Value = serde_json::json!({"dc": "us21", "a": {"b": [1, {"c": "x"}]}});
        assert_eq!(select(&m, "dc"), Some(&Value::from("us21")));
        assert_eq!(select(&m, "a.b[1].c"), Some(&Value::from("x")));
        assert_eq!(select(&m, "a.z"), None);
        assert_eq!(select(&m, "[x]"), None);
    }

    #[test]
    fn zoho_domain_is_derived_from_the_accounts_server() {
        let c = catalog::get("zoho_mail").unwrap();
        let mut m = BTreeMap::new();
        from_callback(
            c,
            Some("code=x&accounts-server=https%3A%2F%2Faccounts.zoho.eu"),
            &mut m,
        )
        .unwrap();
        derive(c, &mut m).unwrap();
        assert_eq!(m["zoho_domain"], "zoho.eu");
        let mut bad = BTreeMap::new();
        let e = from_callback(
            c,
            Some("accounts-server=https%3A%2F%2Fevil.example"),
            &mut bad,
        )
        .unwrap_err();
        assert!(e.contains("accounts-server"), "{e}");
    }
}
