//! The OAuth connect flow (authorization code with PKCE S256), on `proxy.connect`, the
//! listener users' browsers reach:
//!
//! 1. `GET /connect/NAME?tenant=T&link=L`: the link is spent; a single-use `state` bound to
//!    the tenant, the credential and this browser (a cookie) is kept 10 minutes; 302 to the
//!    provider's authorize URL.
//! 2. `GET /callback?code=...&state=...`: the state is spent, the code exchanged with the
//!    PKCE verifier, the provider's extras collected (callback parameters, token-answer
//!    fields, a post-connect call), and the connection stored like a `PUT`.
//!
//! Every failure answers with a short HTML page that says which.

mod exchange;
mod link;

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use super::admin::{audit, query_param, Actor};
use crate::app::App;
use crate::catalog;
pub use link::make_link;
use link::{random_token, sha256_b64, LinkDoc, StateDoc, STATE_TTL};

/// The cookie that ties a consent to the browser that started it.
const COOKIE: &str = "credproxy_connect";

pub struct ConnectApp {
    pub app: Arc<App>,
}

/// A result page: a title and one sentence, escaped.
fn page(status: StatusCode, title: &str, text: &str) -> Response<Vec<u8>> {
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\n<body><h1>{t}</h1>\n<p>{x}</p></body></html>\n",
        t = escape(title),
        x = escape(text)
    );
    let mut r = Response::new(body.into_bytes());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    h.insert(
        "content-security-policy",
        http::HeaderValue::from_static("default-src 'none'"),
    );
    h.insert(
        "referrer-policy",
        http::HeaderValue::from_static("no-referrer"),
    );
    r
}

pub fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c if c.is_control() => " ".into(),
            c => c.to_string(),
        })
        .collect()
}

fn refused(text: &str) -> Response<Vec<u8>> {
    page(StatusCode::BAD_REQUEST, "Not connected", text)
}

fn unavailable(text: &str) -> Response<Vec<u8>> {
    page(StatusCode::SERVICE_UNAVAILABLE, "Try again shortly", text)
}

#[async_trait]
impl ServeHttp for ConnectApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (method, path) = (req.method.clone(), req.uri.path().to_string());
        let query = req.uri.query().map(str::to_string);
        let cookie = cookie(req);
        let peer = session
            .client_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        if method != http::Method::GET {
            return page(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                "Only GET is served here.",
            );
        }
        let q = query.as_deref();
        match path.strip_prefix("/connect/") {
            Some(name) if !name.is_empty() && !name.contains('/') => {
                return self.start(name, q, &peer).await;
            }
            _ => {}
        }
        if path == "/callback" {
            return self.callback(q, cookie.as_deref(), &peer).await;
        }
        page(
            StatusCode::NOT_FOUND,
            "Not found",
            "Open the connect link you were given.",
        )
    }
}

/// The value of our cookie in the request's `Cookie` headers.
fn cookie(req: &pingora::http::RequestHeader) -> Option<String> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE).then(|| v.to_string())
        })
}

impl ConnectApp {
    /// Step 1: spends the link and sends the browser to the provider.
    async fn start(&self, name: &str, q: Option<&str>, peer: &str) -> Response<Vec<u8>> {
        let link = match self.spend_link(name, q).await {
            Ok(l) => l,
            Err(answer) => return answer,
        };
        let cfg = self.app.config();
        let Ok((_, template)) = super::admin::per_tenant(&cfg, &link.tenant, name) else {
            return refused(&format!(
                "`{name}` is no longer a credential tenants connect."
            ));
        };
        let (Some(oauth), Some(connect)) = (&template.oauth, &cfg.proxy.connect) else {
            return refused(&format!("`{name}` has no OAuth app to connect with."));
        };
        let (Some(state), Some(verifier), Some(browser)) =
            (random_token(), random_token(), random_token())
        else {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Not started",
                "The system has no source of randomness.",
            );
        };
        let redirect = format!("{}/callback", connect.public_url);
        let ids = (oauth.client_id.expose(), redirect.as_str());
        let url = match authorize_url(&template.catalog, &link.metadata, ids, &state, &verifier) {
            Ok(u) => u,
            Err(e) => return refused(&e),
        };
        let doc = StateDoc {
            tenant: link.tenant,
            credential: link.credential,
            metadata: link.metadata,
            verifier,
            browser: sha256_b64(&browser),
        };
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        let shared = self.app.tokens.shared();
        if let Err(e) = shared.put_once("state", &state, &bytes, STATE_TTL).await {
            return unavailable(&format!("The consent cannot be started right now: {e}"));
        }
        let actor = Actor {
            name: "connect-link".into(),
            addr: peer.into(),
        };
        let (t, c) = (&doc.tenant, &doc.credential);
        audit(&actor, "consent-start", t, c, "redirected");
        redirect_to(&url, &browser, connect.public_url.starts_with("https://"))
    }

    /// The link of `q`, spent (single use) if it is for `name` and its tenant.
    async fn spend_link(&self, name: &str, q: Option<&str>) -> Result<LinkDoc, Response<Vec<u8>>> {
        let forbidden = |t: &str| page(StatusCode::FORBIDDEN, "Link not valid", t);
        let (Some(tenant), Some(id)) = (query_param(q, "tenant"), query_param(q, "link")) else {
            return Err(forbidden("This address is missing its tenant or link. Open the whole connect link you were given."));
        };
        let doc: Option<LinkDoc> = match self.app.tokens.shared().take_once("link", &id).await {
            Ok(d) => d.and_then(|d| serde_json::from_slice(&d).ok()),
            Err(e) => {
                return Err(unavailable(&format!(
                    "The link cannot be checked right now: {e}"
                )))
            }
        };
        doc.filter(|l| l.tenant == tenant && l.credential == name)
            .ok_or_else(|| forbidden("This connect link is unknown, was already used, or has expired (links last 15 minutes and work once). Ask for a new one."))
    }

    /// Step 2: spends the state, exchanges the code, stores the connection.
    async fn callback(
        &self,
        q: Option<&str>,
        cookie: Option<&str>,
        peer: &str,
    ) -> Response<Vec<u8>> {
        let doc = match self.spend_state(q).await {
            Ok(d) => d,
            Err(answer) => return answer,
        };
        let actor = Actor {
            name: "connect-flow".into(),
            addr: peer.into(),
        };
        let note = |outcome: &str| audit(&actor, "connect", &doc.tenant, &doc.credential, outcome);
        if cookie.map(sha256_b64).as_deref() != Some(doc.browser.as_str()) {
            note("refused: another browser");
            return refused("This consent was started in another browser. Open your connect link in this browser.");
        }
        if let Some(e) = query_param(q, "error") {
            let why = query_param(q, "error_description")
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            note("consent denied");
            return refused(&format!(
                "The provider says consent was not given ({e}{why}). Nothing was connected."
            ));
        }
        match exchange::complete(&self.app, &doc, q).await {
            Ok(title) => {
                note("ok");
                let text = format!(
                    "{title} is now connected for {}. You can close this window.",
                    doc.tenant
                );
                page(StatusCode::OK, "Connected", &text)
            }
            Err(e) => {
                note("failed");
                refused(&e)
            }
        }
    }

    /// The consent `q`'s state names, spent (single use).
    async fn spend_state(&self, q: Option<&str>) -> Result<StateDoc, Response<Vec<u8>>> {
        let Some(state) = query_param(q, "state") else {
            return Err(refused(
                "The provider sent no state: start again from your connect link.",
            ));
        };
        match self.app.tokens.shared().take_once("state", &state).await {
            Ok(d) => d
                .and_then(|d| serde_json::from_slice(&d).ok())
                .ok_or_else(|| refused("This consent is unknown, was already completed, or took longer than 10 minutes. Ask for a new connect link.")),
            Err(e) => Err(unavailable(&format!(
                "The consent cannot be checked right now: {e}"
            ))),
        }
    }
}

/// The provider's authorize URL for this consent, with the flow's parameters and the
/// catalog's extras; `(client_id, redirect)` of the app.
fn authorize_url(
    c: &catalog::Provider,
    metadata: &std::collections::BTreeMap<String, String>,
    (client_id, redirect): (&str, &str),
    state: &str,
    verifier: &str,
) -> Result<String, String> {
    let value = |n: &str| metadata.get(n).cloned();
    let template = c
        .authorize_url
        .as_deref()
        .ok_or("the credential has no authorize_url")?;
    let filled = catalog::fill(template, &value).map_err(|p| format!("the link lacks `{p}`"))?;
    let mut url = url::Url::parse(&filled).map_err(|e| format!("authorize_url: {e}"))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code");
        q.append_pair("client_id", client_id);
        q.append_pair("redirect_uri", redirect);
        let scope = c.scope();
        if !scope.is_empty() {
            q.append_pair("scope", &scope);
        }
        q.append_pair("state", state);
        if c.pkce() {
            q.append_pair("code_challenge", &sha256_b64(verifier));
            q.append_pair("code_challenge_method", "S256");
        }
        for (k, v) in &c.authorize_params {
            let v = catalog::fill(v, &value).map_err(|p| format!("the link lacks `{p}`"))?;
            q.append_pair(k, &v);
        }
    }
    Ok(url.into())
}

fn redirect_to(url: &str, browser: &str, secure: bool) -> Response<Vec<u8>> {
    let mut r = page(
        StatusCode::FOUND,
        "Redirecting",
        "Continue to the provider to give consent.",
    );
    let cookie = format!(
        "{COOKIE}={browser}; Path=/callback; Max-Age={}; HttpOnly; SameSite=Lax{}",
        STATE_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let h = r.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(url) {
        h.insert(http::header::LOCATION, v);
    }
    if let Ok(v) = http::HeaderValue::from_str(&cookie) {
        h.insert(http::header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_quote() {
        let r = page(StatusCode::BAD_REQUEST, "x", "<script>alert('1')</script>&");
        let body = String::from_utf8(r.into_body()).unwrap();
        assert!(
            body.contains("&lt;script&gt;alert(&#39;1&#39;)&lt;/script&gt;&amp;"),
            "{body}"
        );
    }

    #[test]
    fn the_authorize_url_carries_pkce_state_and_extras() {
        let c = catalog::get("google_drive").unwrap();
        let id = crate::secret::Secret::new("client-123");
        let app = (id.expose(), "https://c.example/callback");
        let u = authorize_url(c, &Default::default(), app, "st", "verifier").unwrap();
        let u = url::Url::parse(&u).unwrap();
        let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "client-123");
        assert_eq!(q["redirect_uri"], "https://c.example/callback");
        assert_eq!(q["state"], "st");
        assert_eq!(q["code_challenge"], sha256_b64("verifier"));
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["access_type"], "offline");
        assert_eq!(q["prompt"], "consent");
        let shop = catalog::get("shopify").unwrap();
        let m = [("shop".to_string(), "acme".to_string())]
            .into_iter()
            .collect();
        let u = authorize_url(shop, &m, (id.expose(), "https://c/callback"), "s", "v").unwrap();
        assert!(
            u.starts_with("https://acme.myshopify.com/admin/oauth/authorize?"),
            "{u}"
        );
        assert!(authorize_url(shop, &Default::default(), (id.expose(), "r"), "s", "v").is_err());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut req = pingora::http::RequestHeader::build("GET", b"/callback", None).unwrap();
        req.insert_header("cookie", "a=1; credproxy_connect=xyz; b=2")
            .unwrap();
        assert_eq!(cookie(&req).as_deref(), Some("xyz"));
    }
}
