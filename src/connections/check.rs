//! `PUT ...?test=true`: a connection is stored only if it works. A token credential must get
//! a token; with `test_url`, a GET there with the credential applied must answer 2xx.

use std::sync::Arc;

use http::{Response, StatusCode};
use pingora::http::RequestHeader;
use serde_json::json;

use super::{Resolved, Template};
use crate::admin::json as reply;
use crate::app::App;
use crate::credentials::aws_sigv4::Payload;
use crate::credentials::Credential;

/// The answer to a failed test (boxed: it travels as an error).
type Failed = Box<Response<Vec<u8>>>;

fn failed(message: String) -> Failed {
    Box::new(reply(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({"error": "test_failed", "message": message}),
    ))
}

/// Runs the test; the answer to send when it fails.
pub async fn test(app: &App, t: &Template, tenant: &str, built: &Resolved) -> Result<(), Failed> {
    let mut header = None;
    if let Credential::Token(src) = &built.credential {
        let tenant: Arc<str> = tenant.into();
        let tok = app.tokens.refresh(&t.credential, Some(&tenant), src).await;
        let tok = tok.map_err(|e| failed(e.to_string()))?;
        header = Some((tok.name.clone(), tok.header.clone()));
    }
    let Some(url) = &t.test_url else {
        return match header {
            Some(_) => Ok(()),
            None => Err(Box::new(reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": "nothing_to_test", "message": format!("type {} gets no token to test: set `test_url` on credential `{}` to check a connection before it is stored", t.kind.name, t.credential)}),
            ))),
        };
    };
    let mut req = request_to(url).map_err(failed)?;
    let applied = match (&built.credential, header) {
        (_, Some((name, value))) => req.insert_header(name, value).map_err(|e| e.to_string()),
        (Credential::Static(inj), _) => inj.apply(&mut req).map_err(|e| e.to_string()),
        (Credential::Signed(s), _) => s
            .sign(
                &mut req,
                url.starts_with("https://"),
                Payload::Bytes(&[]),
                std::time::SystemTime::now(),
            )
            .map_err(|e| e.to_string()),
        _ => Ok(()),
    };
    applied.map_err(failed)?;
    if let Some(extra) = &built.extra {
        extra
            .apply_missing(&mut req)
            .map_err(|e| failed(e.to_string()))?;
    }
    send(app, url, &req).await.map_err(failed)
}

fn request_to(url: &str) -> Result<RequestHeader, String> {
    let u = url::Url::parse(url).map_err(|e| e.to_string())?;
    let pq = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let mut req = RequestHeader::build("GET", pq.as_bytes(), None).map_err(|e| e.to_string())?;
    let host = match u.port() {
        Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
        None => u.host_str().unwrap_or_default().to_string(),
    };
    req.insert_header(http::header::HOST, host)
        .map_err(|e| e.to_string())?;
    Ok(req)
}

/// Sends `req` (its path, which a presigned signature may have changed, and its headers).
async fn send(app: &App, url: &str, req: &RequestHeader) -> Result<(), String> {
    let mut u = url::Url::parse(url).map_err(|e| e.to_string())?;
    let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let (path, query) = pq.split_once('?').unwrap_or((pq, ""));
    u.set_path(path);
    u.set_query((!query.is_empty()).then_some(query));
    let mut rb = app
        .tokens
        .http()
        .get(u)
        .timeout(std::time::Duration::from_secs(15));
    for (name, value) in req.headers.iter().filter(|(n, _)| *n != http::header::HOST) {
        rb = rb.header(name, value);
    }
    let resp = rb
        .send()
        .await
        .map_err(|e| format!("test_url could not be reached: {}", e.without_url()))?;
    match resp.status().as_u16() {
        s if (200..300).contains(&s) => Ok(()),
        s => Err(format!("test_url answered {s} with this connection")),
    }
}
