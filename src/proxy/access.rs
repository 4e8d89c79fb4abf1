//! The access log: one `info` line per request on the `credproxy::access` target (switch it
//! off with `RUST_LOG=info,credproxy::access=off`). The path is logged without its query,
//! which is where APIs put keys.

use std::time::Instant;

use pingora::prelude::Session;

use super::Ctx;

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

pub fn log(session: &Session, ctx: &Ctx, status: u16) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let cfg = &ctx.cfg;
    let plan = ctx.plan.as_ref();
    let (route, credential) = match (plan, ctx.refused) {
        (Some(p), _) => (p.route, p.credential),
        (None, Some(r)) => (r.route, r.credential),
        (None, None) => (None, None),
    };
    let route = route.map(|r| &*cfg.routes[r].name);
    let credential = credential.map(|c| &*cfg.credentials[c].name);
    let client = plan
        .and_then(|p| p.client)
        .and_then(|c| Some(&*cfg.clients.as_ref()?.get(c)?.name));
    let tenant = plan.and_then(|p| p.tenant.as_deref());
    let req = session.req_header();
    let (host, path) = match plan {
        Some(p) => (
            format!("{}:{}", p.target.host, p.target.port),
            p.target.path.split('?').next().unwrap_or("").to_string(),
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
    let error = ctx
        .error
        .as_ref()
        .map(|e| e.code())
        .or(ctx.refused.map(|r| r.code));
    tracing::info!(
        target: TARGET,
        client,
        tenant,
        route,
        credential,
        method = req.method.as_str(),
        host,
        path,
        status,
        bytes = session.body_bytes_sent(),
        upstream_ms = ctx.timing.upstream_ms.map(micros),
        total_ms = micros(ctx.timing.started.elapsed().as_secs_f64() * 1000.0),
        error,
        "request"
    );
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
