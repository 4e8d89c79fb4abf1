//! The admin listener: health, readiness, metrics, credential status and reload.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Serialize;

use crate::app::App;
use crate::config::Config;
use crate::connections;
use crate::metrics::Scrape;

/// The NAME of `/credentials/NAME/refresh`.
fn refresh_target(path: &str) -> Option<&str> {
    path.strip_prefix("/credentials/")?
        .strip_suffix("/refresh")
        .filter(|n| !n.is_empty() && !n.contains('/'))
}

/// An address to connect to a listener on: loopback for one bound to the unspecified address.
pub fn connectable(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() && addr.is_ipv4() => {
            std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        ip if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

pub struct Admin {
    pub app: Arc<App>,
}

pub fn reply(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Vec<u8>>,
) -> Response<Vec<u8>> {
    let body = body.into();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = r.body().len().to_string().parse() {
        r.headers_mut().insert(http::header::CONTENT_LENGTH, v);
    }
    r
}

pub fn json(status: StatusCode, v: &impl Serialize) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    reply(status, "application/json", body)
}

#[derive(Serialize)]
pub struct CredentialStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: &'static str,
    pub seconds_to_expiry: Option<u64>,
    pub last_error: Option<String>,
    pub fetch_count: u64,
    /// Target hosts holding a token, for credentials minted per host (self-signed JWTs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<usize>,
    /// For a per-tenant credential: how many tenants have a connection (see `/connections`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    /// In a fleet: whether its shared state (Redis) is `up` or `unreachable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_state: Option<&'static str>,
    /// The runtime sources its secrets come from, and how their last reads went.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::sources::SourceStatus>,
}

/// A credential's name, its token slot's status, and its token source (none when per tenant).
type TokenRow<'c> = (
    &'c str,
    crate::tokens::SlotStatus,
    Option<&'c Arc<dyn crate::tokens::TokenSource>>,
);

/// `up` or `unreachable` in a fleet; None for one process.
fn fleet_health(app: &App) -> Option<&'static str> {
    use crate::store::SharedState;
    app.fleet.as_ref().map(|f| f.health().as_str())
}

/// Each secret source: whether it serves a stale value, its age, and its reads.
fn secret_metrics(app: &App, s: &mut Scrape) {
    let all = app.sources.all_status();
    s.gauges(
        "credproxy_secret_source_stale",
        "1 while a secret source serves its last good value after failed re-reads (2: failed, no value).",
        &["source"],
        all.iter().map(|st| {
            let v = match st.status { "ok" => 0, "stale" => 1, _ => 2 };
            (vec![st.source.as_str()], v)
        }),
    );
    s.gauges(
        "credproxy_secret_source_age_seconds",
        "Seconds since the secret source was last read successfully.",
        &["source"],
        all.iter().filter_map(|st| {
            Some((
                vec![st.source.as_str()],
                i64::try_from(st.age_seconds?).ok()?,
            ))
        }),
    );
    s.counters(
        "credproxy_secret_source_reads_total",
        "Reads of secret sources, by result.",
        &["source", "result"],
        all.iter().flat_map(|st| {
            [
                (vec![st.source.as_str(), "ok"], st.reads_ok),
                (vec![st.source.as_str(), "error"], st.reads_failed),
            ]
        }),
    );
}

/// One status line per credential; never a secret.
pub fn credential_statuses(app: &App) -> Vec<CredentialStatus> {
    let cfg = app.config();
    cfg.credentials
        .iter()
        .map(|c| {
            let src = c.credential.as_ref().ok().and_then(|cr| cr.token_source());
            let is_token = src.is_some();
            let slot = src
                .map(|s| app.tokens.status(&c.name, None, s))
                .unwrap_or_default();
            let reconnect = c
                .credential
                .as_ref()
                .ok()
                .and_then(|cr| cr.token_source())
                .is_some_and(|t| t.needs_reconnect());
            let per_tenant = c.template().is_some();
            let status = match (&c.credential, is_token) {
                (Err(_), _) => "unavailable",
                (Ok(_), _) if per_tenant => "per_tenant",
                (Ok(_), true) if reconnect => "needs_reconnect",
                (Ok(_), false) => "ok",
                (Ok(_), true) if slot.seconds_to_expiry.is_some() => "ok",
                (Ok(_), true) if slot.last_error.is_some() => "error",
                (Ok(_), true) => "no token yet",
            };
            CredentialStatus {
                name: c.name.to_string(),
                kind: c.kind,
                status,
                seconds_to_expiry: slot.seconds_to_expiry,
                last_error: c
                    .credential
                    .as_ref()
                    .err()
                    .map(ToString::to_string)
                    .or(slot.last_error),
                fetch_count: slot.fetches_ok + slot.fetches_failed,
                targets: src.filter(|s| s.per_target()).map(|_| slot.targets),
                connections: per_tenant.then(|| app.connections.count(&c.name)),
                shared_state: fleet_health(app),
                secrets: app.sources.status(&c.sources),
            }
        })
        .collect()
}

impl Admin {
    async fn ready(&self) -> Response<Vec<u8>> {
        // Ready means the proxy listener accepts connections: check it for real.
        let addr = connectable(self.app.config().proxy.listen);
        match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(_)) => reply(StatusCode::OK, "text/plain", "ready\n"),
            _ => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "proxy listener not accepting yet\n",
            ),
        }
    }

    fn metrics(&self) -> Response<Vec<u8>> {
        let mut s = Scrape::default();
        let statuses = credential_statuses(&self.app);
        s.gauges(
            "credproxy_credential_available",
            "1 if the credential can be injected.",
            &["credential", "type"],
            statuses.iter().map(|c| {
                let up = matches!(c.status, "ok" | "per_tenant");
                (vec![c.name.as_str(), c.kind], i64::from(up))
            }),
        );
        self.token_metrics(&mut s);
        secret_metrics(&self.app, &mut s);
        crate::connections::metrics::scrape(&self.app, &mut s);
        if let Some(h) = fleet_health(&self.app) {
            s.gauges(
                "credproxy_shared_state_up",
                "1 while the fleet's shared state (Redis) answers.",
                &[],
                [(vec![], i64::from(h == "up"))],
            );
        }
        if let Some(f) = &self.app.fleet {
            s.counters(
                "credproxy_shared_state_unreplicated_writes_total",
                "Rotations and connection writes no replica acknowledged in time (a failover then could lose them).",
                &[],
                [(vec![], f.unreplicated_writes())],
            );
            s.counters(
                "credproxy_shared_state_claims_refused_total",
                "Redemption claims refused because another replica was redeeming the same refresh token and had not committed (counted per 250 ms poll; 0 unless a rotation's commit was lost or delayed).",
                &[],
                [(vec![], f.claims_refused())],
            );
        }
        if let Some(i) = &self.app.config().proxy.interceptor {
            s.counters(
                "credproxy_tls_leaf_mints_total",
                "Interception certificates minted since the config was loaded.",
                &[],
                [(vec![], i.mints())],
            );
        }
        let body = self.app.metrics.render(s.families);
        reply(StatusCode::OK, "text/plain; version=0.0.4", body)
    }

    /// `POST /credentials/NAME/refresh`: static credentials hold no token, so there is nothing
    /// to drop; the answer says so rather than pretending.
    async fn refresh(&self, name: &str) -> Response<Vec<u8>> {
        let cfg = self.app.config();
        let Some(c) = cfg.credentials.iter().find(|c| &*c.name == name) else {
            return json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "unknown credential", "credential": name}),
            );
        };
        let src = match &c.credential {
            Err(e) => {
                return json(
                    StatusCode::CONFLICT,
                    &serde_json::json!({"credential": name, "status": "unavailable", "error": e.to_string()}),
                )
            }
            Ok(cr) => cr.token_source(),
        };
        if src.is_some_and(|s| s.per_target()) {
            return json(
                StatusCode::OK,
                &serde_json::json!({"credential": name, "type": c.kind, "status": "nothing to refresh: self-signed JWTs are minted per target host as needed"}),
            );
        }
        let Some(src) = src else {
            return json(
                StatusCode::OK,
                &serde_json::json!({"credential": name, "type": c.kind, "status": "nothing to refresh: this type holds no token"}),
            );
        };
        match self.app.tokens.refresh(&c.name, None, src).await {
            Ok(t) => {
                let secs = t
                    .expires_at
                    .saturating_duration_since(tokio::time::Instant::now())
                    .as_secs();
                json(
                    StatusCode::OK,
                    &serde_json::json!({"credential": name, "status": "refreshed", "seconds_to_expiry": secs}),
                )
            }
            Err(e) => json(
                StatusCode::BAD_GATEWAY,
                &serde_json::json!({"credential": name, "status": "error", "error": e.to_string()}),
            ),
        }
    }

    /// Each token credential's slot status (a per-tenant one's summed over its tenants).
    fn token_rows<'c>(&self, cfg: &'c Config) -> Vec<TokenRow<'c>> {
        cfg.credentials
            .iter()
            .filter_map(|c| {
                if c.template().is_some_and(|t| t.mints_tokens()) {
                    return Some((&*c.name, self.app.tokens.tenants_status(&c.name), None));
                }
                let src = c.credential.as_ref().ok()?.token_source()?;
                let st = self.app.tokens.status(&c.name, None, src);
                Some((&*c.name, st, Some(src)))
            })
            .collect()
    }

    /// Token slots' counts, read at scrape time.
    fn token_metrics(&self, s: &mut Scrape) {
        let cfg = self.app.config();
        let tokens = self.token_rows(&cfg);
        s.counters(
            "credproxy_token_fetches_total",
            "Token endpoint fetches by credential and result.",
            &["credential", "result"],
            tokens.iter().flat_map(|(n, st, _)| {
                [
                    (vec![*n, "ok"], st.fetches_ok),
                    (vec![*n, "error"], st.fetches_failed),
                ]
            }),
        );
        s.gauges(
            "credproxy_credential_needs_reconnect",
            "1 when the provider refused the refresh token.",
            &["credential"],
            tokens.iter().filter_map(|(n, _, src)| {
                Some((vec![*n], i64::from(src.as_ref()?.needs_reconnect())))
            }),
        );
        s.counters(
            "credproxy_token_renewals_total",
            "Tokens replaced because an upstream answered 401 (renewed), and 401s passed on \
             without a renewal because the token had just been renewed or renewals were over \
             their rate (limited).",
            &["credential", "result"],
            tokens.iter().flat_map(|(n, st, _)| {
                [
                    (vec![*n, "renewed"], st.renewals),
                    (vec![*n, "limited"], st.renewals_limited),
                ]
            }),
        );
        s.counters(
            "credproxy_token_cache_hits_total",
            "Requests served a cached token.",
            &["credential"],
            tokens.iter().map(|(n, st, _)| (vec![*n], st.cache_hits)),
        );
        s.gauges(
            "credproxy_token_seconds_to_expiry",
            "Seconds until the cached token expires (absent: none cached).",
            &["credential"],
            tokens.iter().filter_map(|(n, st, _)| {
                Some((vec![*n], i64::try_from(st.seconds_to_expiry?).ok()?))
            }),
        );
    }

    async fn reload(&self) -> Response<Vec<u8>> {
        match self.app.reload().await {
            Ok(c) => {
                let warnings: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
                json(
                    StatusCode::OK,
                    &serde_json::json!({"status": "reloaded", "warnings": warnings}),
                )
            }
            Err(e) => {
                let errors: Vec<String> = e.0.iter().map(ToString::to_string).collect();
                json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"status": "kept running config", "errors": errors}),
                )
            }
        }
    }
}

/// Whether the request may use a guarded endpoint: with `proxy.admin_token` set, every
/// `/connections` call and every POST needs it as a Bearer token.
fn authorized(app: &App, method: &str, path: &str, session: &ServerSession) -> bool {
    let Some(token) = &app.config().proxy.admin_token else {
        return true;
    };
    if method == "GET" && !path.starts_with("/connections") {
        return true;
    }
    let sent = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .unwrap_or("");
    token.ct_eq(sent.trim().as_bytes())
}

fn unauthorized() -> Response<Vec<u8>> {
    let mut r = json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"error": "unauthorized", "message": "send Authorization: Bearer <proxy.admin_token>"}),
    );
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer realm=\"credproxy-admin\""),
    );
    r
}

/// The request body as JSON (None: no body); an answer when it is too large or not JSON.
async fn json_body(
    session: &mut ServerSession,
) -> Result<Option<serde_json::Value>, Response<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > connections::admin::MAX_BODY {
                    return Err(json(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &serde_json::json!({"error": "body_too_large", "message": format!("at most {} bytes", connections::admin::MAX_BODY)}),
                    ));
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Err(json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": "bad_body", "message": e.to_string()}),
                ))
            }
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&body).map(Some).map_err(|e| {
        json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "bad_body", "message": format!("not JSON: {e}")}),
        )
    })
}

impl Admin {
    async fn connections(
        &self,
        session: &mut ServerSession,
        method: &str,
        path: &str,
    ) -> Response<Vec<u8>> {
        let body = match json_body(session).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let req = session.req_header();
        let actor = connections::admin::Actor {
            name: req
                .headers
                .get("x-credproxy-actor")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().filter(|c| !c.is_control()).take(128).collect())
                .unwrap_or_else(|| "admin".into()),
            addr: session
                .client_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
        };
        let query = req.uri.query().map(str::to_string);
        let call = connections::admin::Call {
            method,
            path,
            query: query.as_deref(),
            body,
            actor,
        };
        connections::admin::handle(&self.app, call).await
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.as_str().to_string();
        let path = session.req_header().uri.path().to_string();
        if !authorized(&self.app, &method, &path, session) {
            return unauthorized();
        }
        if path.starts_with("/connections") {
            return self.connections(session, &method, &path).await;
        }
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
            ("GET", "/readyz") => self.ready().await,
            ("GET", "/metrics") => self.metrics(),
            ("GET", "/credentials") => json(StatusCode::OK, &credential_statuses(&self.app)),
            ("POST", "/reload") => self.reload().await,
            ("POST", p) if refresh_target(p).is_some() => {
                self.refresh(refresh_target(p).unwrap_or_default()).await
            }
            (_, "/healthz" | "/readyz" | "/metrics" | "/credentials" | "/reload") => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed\n",
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /healthz, /readyz, /metrics, /credentials, /connections, POST /reload\n",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::refresh_target;

    #[test]
    fn refresh_paths() {
        assert_eq!(refresh_target("/credentials/gh/refresh"), Some("gh"));
        for p in [
            "/credentials/refresh",
            "/credentials//refresh",
            "/credentials/a/b/refresh",
            "/credentials/gh",
        ] {
            assert_eq!(refresh_target(p), None, "{p}");
        }
    }
}
