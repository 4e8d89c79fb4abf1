//! The access log: one `info` line per request on the `credproxy::access` target (switch it
//! off with `RUST_LOG=info,credproxy::access=off`). The path is logged without its query,
//! which is where APIs put keys.

use std::time::{Instant, SystemTime};

use pingora::prelude::Session;

use super::Ctx;
use crate::otel::{Otel, RequestSpan};

pub const TARGET: &str = "credproxy::access";

/// What was refused before a plan existed: route and credential if known, and the code.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    pub route: Option<usize>,
    pub credential: Option<usize>,
    pub code: &'static str,
}

/// Timings of one request.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub started: Instant,
    /// From sending the request upstream to its response head.
    pub upstream_ms: Option<f64>,
}

impl Timing {
    pub fn new() -> Self {
        Timing {
            started: Instant::now(),
            upstream_ms: None,
        }
    }
}

/// Writes the access line (when its target is enabled) and the request's span (with
/// `proxy.otel`), from the same fields.
pub fn record(session: &Session, ctx: &Ctx, status: u16, otel: Option<&Otel>) {
    let logged = tracing::enabled!(target: TARGET, tracing::Level::INFO);
    if !logged && otel.is_none() {
        return;
    }
    let f = Fields::of(session, ctx, status);
    if logged {
        f.log();
    }
    if let Some(o) = otel {
        f.span(o, ctx.timing.started.elapsed());
    }
}

/// One request, as the access log and the span report it.
struct Fields<'a> {
    client: Option<&'a str>,
    tenant: Option<&'a str>,
    route: Option<&'a str>,
    credential: Option<&'a str>,
    method: &'a str,
    host: String,
    path: String,
    status: u16,
    bytes: usize,
    upstream_ms: Option<f64>,
    total_ms: f64,
    error: Option<&'static str>,
}

impl<'a> Fields<'a> {
    fn of(session: &'a Session, ctx: &'a Ctx, status: u16) -> Self {
        let cfg = &ctx.cfg;
        let plan = ctx.plan.as_ref();
        let (route, credential) = match (plan, ctx.refused) {
            (Some(p), _) => (p.route, p.credential),
            (None, Some(r)) => (r.route, r.credential),
            (None, None) => (None, None),
        };
        let req = session.req_header();
        let (host, path) = match plan {
            Some(p) => (
                format!("{}:{}", p.target.host, p.target.port),
                p.target.path.path().to_string(),
            ),
            None => (
                req.uri
                    .authority()
                    .map(|a| a.as_str().to_string())
                    .or_else(|| host_header(req))
                    .unwrap_or_default(),
                req.uri.path().to_string(),
            ),
        };
        Fields {
            client: plan
                .and_then(|p| p.client)
                .and_then(|c| Some(&*cfg.clients.as_ref()?.get(c)?.name)),
            tenant: plan.and_then(|p| p.tenant.as_deref()),
            route: route.map(|r| &*cfg.routes[r].name),
            credential: credential.map(|c| &*cfg.credentials[c].name),
            method: req.method.as_str(),
            host,
            path,
            status,
            bytes: session.body_bytes_sent(),
            upstream_ms: ctx.timing.upstream_ms.map(micros),
            total_ms: micros(ctx.timing.started.elapsed().as_secs_f64() * 1000.0),
            error: ctx
                .error
                .as_ref()
                .map(|e| e.code())
                .or(ctx.refused.map(|r| r.code)),
        }
    }

    fn log(&self) {
        tracing::info!(
            target: TARGET,
            client = self.client,
            tenant = self.tenant,
            route = self.route,
            credential = self.credential,
            method = self.method,
            host = self.host,
            path = self.path,
            status = self.status,
            bytes = self.bytes,
            upstream_ms = self.upstream_ms,
            total_ms = self.total_ms,
            error = self.error,
            "request"
        );
    }

    fn span(&self, otel: &Otel, took: std::time::Duration) {
        use opentelemetry::KeyValue;
        let named = [
            ("credproxy.client", self.client),
            ("credproxy.tenant", self.tenant),
            ("credproxy.route", self.route),
            ("credproxy.credential", self.credential),
            ("credproxy.error", self.error),
        ];
        let mut attributes: Vec<KeyValue> = named
            .iter()
            .filter_map(|(k, v)| Some(KeyValue::new(*k, (*v)?.to_string())))
            .collect();
        attributes.push(KeyValue::new("credproxy.bytes", self.bytes as i64));
        attributes.push(KeyValue::new("credproxy.total_ms", self.total_ms));
        if let Some(u) = self.upstream_ms {
            attributes.push(KeyValue::new("credproxy.upstream_ms", u));
        }
        otel.request(RequestSpan {
            started: SystemTime::now() - took,
            method: self.method,
            host: &self.host,
            path: &self.path,
            status: self.status,
            attributes,
        });
    }
}

/// Milliseconds to the microsecond: enough for a log, short to read.
fn micros(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

fn host_header(req: &pingora::http::RequestHeader) -> Option<String> {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}
