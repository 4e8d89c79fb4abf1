//! The data path: one thin `ProxyHttp` implementation whose hooks delegate to `plan` (what to
//! do), `auth` (what the credential needs and sets), `destination` (where to connect) and
//! `errors` (what to answer).

mod access;
mod auth;
pub mod connect;
pub mod connect_head;
mod destination;
pub mod intercept;
pub mod limits;
pub mod placeholder;
pub mod plan;
mod replay;
pub mod scope;
pub mod tunnel;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorType, Result};

use crate::app::App;
use crate::config::Config;
use crate::errors::{self, ProxyError};
use crate::metrics::{self, Metrics};
use crate::scrub::stream::ResponseScrubber;
use auth::{Auth, Prepared};
pub use destination::{destination, OwnListeners};
use limits::{BufferBudget, ClientConnections};
use plan::{Plan, Refusal, CREDENTIAL_HEADER};
use tunnel::{Arrival, Tunnels};

pub struct CredProxy {
    pub app: Arc<App>,
    pub conns: Arc<Connections>,
}

/// What the proxy listener's connections share: the intercepted tunnels (for the requests
/// inside them) and the open connections per client address.
pub struct Connections {
    pub tunnels: Tunnels,
    pub clients: ClientConnections,
    /// credproxy's own listeners: never a destination.
    pub own: OwnListeners,
    /// Memory held by request bodies read whole.
    pub buffers: Arc<BufferBudget>,
}

impl Connections {
    pub fn new(metrics: &Metrics, own: OwnListeners) -> Self {
        Connections {
            tunnels: Tunnels::new(metrics.intercepted_connections.clone()),
            clients: ClientConnections::new(metrics.client_connections.clone()),
            own,
            buffers: Arc::new(BufferBudget::new(metrics.buffered_bytes.clone())),
        }
    }
}

/// Per-request state.
pub struct Ctx {
    /// The config this request runs under, taken when it arrived (a reload does not change it).
    cfg: Arc<Config>,
    /// Set once the request is admitted and routed.
    plan: Option<Plan>,
    auth: Auth,
    /// The destination's addresses (checked by the egress guard), and the one being tried.
    addrs: Option<Arc<[IpAddr]>>,
    attempt: usize,
    /// An error found by our own code, preferred over pingora's generic one in `fail_to_proxy`.
    error: Option<ProxyError>,
    upstream_sent: Option<Instant>,
    /// `proxy.timeouts.total`: the request is abandoned past this instant.
    deadline: Option<Instant>,
    /// On a method-scoped route, a form body watched for a `_method` field.
    form_scan: Option<scope::FormScan>,
    /// Headers the credential's catalog adds unless the client sent its own.
    extra: Option<Arc<crate::credentials::Injection>>,
    /// `scrub_responses`: echoes of the secret sent are replaced in the answer.
    scrub: Option<crate::scrub::stream::ResponseScrubber>,
    /// For the access log.
    timing: access::Timing,
    refused: Option<access::Refused>,
}

impl Ctx {
    fn new(cfg: Arc<Config>) -> Self {
        Ctx {
            cfg,
            plan: None,
            auth: Auth::None,
            addrs: None,
            attempt: 0,
            error: None,
            upstream_sent: None,
            deadline: None,
            form_scan: None,
            extra: None,
            scrub: None,
            timing: access::Timing::new(),
            refused: None,
        }
    }

    fn names(&self) -> (Option<&str>, Option<&str>) {
        let Some(plan) = &self.plan else {
            return (None, None);
        };
        (
            plan.route.map(|r| &*self.cfg.routes[r].name),
            plan.credential.map(|c| &*self.cfg.credentials[c].name),
        )
    }

    /// Records an error of our own for `fail_to_proxy` and stops the request with it.
    fn fail(&mut self, e: ProxyError, why: &'static str) -> Box<Error> {
        let status = e.status();
        self.error = Some(e);
        Error::explain(ErrorType::HTTPStatus(status), why)
    }
}

/// Writes an error made by the proxy itself.
pub async fn respond(
    session: &mut Session,
    err: &ProxyError,
    route: Option<&str>,
    cred: Option<&str>,
) -> Result<()> {
    let (resp, body) = errors::render(err, route, cred)?;
    if !session.is_body_empty() {
        // The body was not read: the connection cannot carry another request.
        session.set_keepalive(None);
    }
    let sending = body_on_its_way(session);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    if sending {
        linger(session).await;
    }
    Ok(())
}

/// Whether the client may be sending its body: unless it asked `Expect: 100-continue` and was
/// never told to go on (no `100 Continue` from us, nothing of the body read yet).
fn body_on_its_way(session: &Session) -> bool {
    !replay::expects_continue(session)
        || session
            .response_written()
            .is_some_and(|r| r.status == http::StatusCode::CONTINUE)
        || session.body_bytes_read() > 0
}

/// How long and how much of a refused request's unread body is read and dropped before the
/// connection closes.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);
const LINGER_BYTES: usize = 64 << 20;

/// Reads the rest of an HTTP/1 request body that was answered without being read, within
/// bounds, before the connection closes (nginx's lingering close): closing with unread bytes
/// makes the kernel reset the connection, and a client still writing its body would see that
/// reset instead of the answer already sent.
async fn linger(session: &mut Session) {
    if session.is_body_done() || session.is_http2() {
        return;
    }
    let drain = async {
        let mut left = LINGER_BYTES;
        while let Ok(Some(piece)) = session.read_request_body().await {
            left = left.saturating_sub(piece.len());
            if left == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

impl CredProxy {
    /// The one place a request's credential is resolved for its tenant.
    fn credential_use<'c>(
        &self,
        cfg: &'c Config,
        plan: Option<&Plan>,
        (host, port): (&str, u16),
    ) -> std::result::Result<Option<(&'c Arc<str>, crate::connections::Use)>, ProxyError> {
        let Some(plan) = plan else { return Ok(None) };
        let Some(entry) = plan.credential.map(|c| &cfg.credentials[c]) else {
            return Ok(None);
        };
        let tenant = plan.tenant.as_ref();
        let u = self
            .app
            .connections
            .credential_for(entry, tenant, (host, port))?;
        Ok(Some((&entry.name, u)))
    }

    /// Admits and routes a request (or says why not).
    fn plan(&self, session: &mut Session, cfg: &Config) -> std::result::Result<Plan, Refusal> {
        admit(session, cfg)?;
        match tunnel::arrival(&self.conns.tunnels, session)? {
            Arrival::Tunnel(t) => plan::plan(cfg, session.req_header(), Some(&t)),
            Arrival::Listener => plan::plan(cfg, session.req_header(), None),
        }
    }

    /// Answers a refused request and counts it.
    async fn refuse(&self, session: &mut Session, ctx: &mut Ctx, r: Refusal) -> Result<bool> {
        let cfg = &ctx.cfg;
        let route = r.route.map(|i| &*cfg.routes[i].name);
        let cred = r.credential.map(|i| &*cfg.credentials[i].name);
        respond(session, &r.error, route, cred).await?;
        self.count(cfg, r.route, r.credential, r.error.status());
        ctx.refused = Some(access::Refused {
            route: r.route,
            credential: r.credential,
            code: r.error.code(),
        });
        ctx.plan = None;
        Ok(true)
    }

    /// Counts an answer through the config's resolved handles; a route refused before its
    /// credential was chosen is counted by label.
    fn count(&self, cfg: &Config, route: Option<usize>, credential: Option<usize>, status: u16) {
        let Some(m) = cfg.metrics.get() else { return };
        let counter = match (route, credential) {
            (None, None) => Some(&m.refused),
            (Some(r), Some(c)) => m.route_requests(cfg, r, c),
            _ => None,
        };
        match counter {
            Some(c) => c.inc(status),
            None => {
                let name = |n: Option<&Arc<str>>| n.map_or(metrics::NONE, |n| &**n).to_string();
                let r = name(route.map(|r| &cfg.routes[r].name));
                let c = name(credential.map(|c| &cfg.credentials[c].name));
                self.app.metrics.request(&r, &c, status);
            }
        }
    }

    /// The peer for the planned target: a checked address, with the configured timeouts.
    async fn peer(&self, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(plan) = &ctx.plan else {
            return Err(Error::explain(ErrorType::InternalError, "no plan"));
        };
        let (cfg, t) = (&ctx.cfg, &plan.target);
        let addrs = match &ctx.addrs {
            Some(a) => a.clone(),
            None => match destination(
                &self.app.dns,
                &cfg.proxy.egress.policy,
                &self.conns.own,
                &t.host,
                t.port,
            )
            .await
            {
                Ok(a) => ctx.addrs.insert(a).clone(),
                Err(e) => return Err(ctx.fail(e, "destination unresolvable or refused")),
            },
        };
        let ip = addrs[ctx.attempt % addrs.len()];
        let mut peer = HttpPeer::new(SocketAddr::new(ip, t.port), t.tls, t.host.clone());
        let to = &cfg.proxy.timeouts;
        peer.options.connection_timeout = Some(to.connect);
        peer.options.total_connection_timeout = Some(to.connect);
        // Under a total deadline, no single wait may outlast it.
        let wait = match ctx.deadline {
            Some(d) => to.read.min(d.saturating_duration_since(Instant::now())),
            None => to.read,
        };
        peer.options.read_timeout = Some(wait);
        peer.options.write_timeout = Some(wait);
        peer.options.idle_timeout = Some(to.idle);
        if let Err(e) = client_cert(&mut peer, cfg, plan) {
            return Err(ctx.fail(e, "client certificate cannot be presented"));
        }
        if t.tls {
            // Offer HTTP/2 first; origins without it get HTTP/1.1.
            peer.options.set_http_version(2, 1);
            peer.options.max_h2_streams = 100;
            peer.options.ca = cfg.proxy.upstream_roots.clone();
        }
        Ok(Box::new(peer))
    }

    /// Puts the credential's value in place of the request's placeholders (headers, query);
    /// returns the path and query to send.
    fn fill_placeholders(ctx: &mut Ctx, req: &mut RequestHeader) -> Result<String> {
        let Some(plan) = &ctx.plan else {
            return Err(Error::explain(ErrorType::InternalError, "no plan"));
        };
        let name = plan
            .credential
            .map_or("", |c| &*ctx.cfg.credentials[c].name);
        let value = ctx.auth.placeholder_value();
        // The client's Authorization is replaced whole by the credential's own.
        req.remove_header(&http::header::AUTHORIZATION);
        let filled = placeholder::fill_headers(req, name, value.as_deref()).and_then(|()| {
            placeholder::fill_query(plan.target.path.as_str(), name, value.as_deref())
        });
        filled.map_err(|e| ctx.fail(e, "placeholder cannot be filled in"))
    }

    /// Rewrites the outgoing request: origin-form for the target, the proxy hop's headers
    /// gone, the framing of a body read ahead, and the credential set.
    fn rewrite(ctx: &mut Ctx, req: &mut RequestHeader) -> Result<()> {
        let Some(plan) = &ctx.plan else {
            return Err(Error::explain(ErrorType::InternalError, "no plan"));
        };
        let uri = if plan.placeholder {
            let filled = Self::fill_placeholders(ctx, req)?;
            filled.parse().map_err(|_| {
                Error::explain(
                    ErrorType::HTTPStatus(400),
                    "request path cannot be forwarded",
                )
            })?
        } else {
            // Checked when planned: no parse, no copy.
            http::Uri::from(plan.target.path.clone())
        };
        let Some(plan) = &ctx.plan else {
            return Err(Error::explain(ErrorType::InternalError, "no plan"));
        };
        // Host first: set_uri drops the authority HTTP/2 origins need. Most requests already
        // carry the very value; rewriting it costs a header-map insert.
        let authority = plan.target.authority.as_str();
        if req.headers.get(http::header::HOST).map(|h| h.as_bytes()) != Some(authority.as_bytes())
            || req.headers.get_all(http::header::HOST).iter().count() != 1
        {
            req.insert_header(http::header::HOST, authority)?;
        }
        req.set_uri(uri);
        strip_proxy_headers(req);
        if let Some(body) = ctx.auth.whole_body() {
            // A bodiless GET stays without Content-Length.
            if !body.is_empty() || req.headers.contains_key(http::header::CONTENT_LENGTH) {
                req.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
            }
            req.remove_header(&http::header::TRANSFER_ENCODING);
            req.remove_header(&http::header::EXPECT);
        }
        if plan.credential.is_none() {
            return Ok(());
        }
        req.remove_header(&http::header::AUTHORIZATION);
        if let Some(extra) = &ctx.extra {
            extra.apply_missing(req)?;
        }
        let applied = ctx.auth.apply(req, plan.target.tls);
        ctx.scrub = None;
        if applied.is_ok()
            && plan
                .route
                .is_some_and(|r| ctx.cfg.routes[r].scrub_responses)
        {
            // Compressed answers could not be searched: the upstream is asked for plain ones.
            req.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
            let name = plan
                .credential
                .map_or("", |c| &*ctx.cfg.credentials[c].name);
            let placeholder = format!("credproxy:{name}");
            ctx.scrub = ResponseScrubber::new(&ctx.auth.sent_secrets(), &placeholder);
        }
        if applied.is_ok() && tracing::enabled!(tracing::Level::DEBUG) {
            let (route, credential) = ctx.names();
            tracing::debug!(route, credential, upstream = %plan.target.authority, "credential applied");
        }
        applied.map_err(|e| ctx.fail(e, "credential could not be applied"))
    }
}

#[async_trait]
impl ProxyHttp for CredProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.app.config())
    }

    /// No downstream modules. pingora's default adds response compression at level 0: off,
    /// but still set up and consulted on every request (four allocations and its filters,
    /// BENCHMARKS.md); credproxy never compresses answers, and scrubbing needs them plain.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let cfg = ctx.cfg.clone();
        client_timeouts(session, ctx, &cfg);
        let plan = match self.plan(session, &cfg) {
            Ok(p) => p,
            Err(r) => return self.refuse(session, ctx, r).await,
        };
        let (route, credential) = (plan.route, plan.credential);
        let refusal = |error| Refusal {
            error,
            route,
            credential,
        };
        // Where the request goes is settled before any credential work: no token is fetched
        // or signed for a destination that does not resolve or that egress refuses.
        let (host, port) = (plan.target.host.as_str(), plan.target.port);
        let policy = &cfg.proxy.egress.policy;
        match destination(&self.app.dns, policy, &self.conns.own, host, port).await {
            Ok(a) => ctx.addrs = Some(a),
            Err(e) => return self.refuse(session, ctx, refusal(e)).await,
        }
        if route.is_some_and(|r| cfg.router.has_methods(r)) {
            ctx.form_scan = scope::FormScan::for_request(session.req_header());
        }
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let used = match self.credential_use(&cfg, Some(&plan), (host, port)) {
            Ok(u) => u,
            Err(e) => return self.refuse(session, ctx, refusal(e)).await,
        };
        ctx.extra = used.as_ref().and_then(|(_, u)| u.extra.clone());
        let planned = used.as_ref().map(|(name, u)| auth::Planned {
            name,
            used: u,
            host,
            max_body: cfg.proxy.max_body,
        });
        let l = &cfg.proxy.limits;
        let buffers = &self.conns.buffers;
        let mut reserve = |n| buffers.reserve(client, n, l.max_buffered, l.max_buffered_per_client);
        let prepared = auth::prepare(&self.app.tokens, session, planned, &mut reserve).await;
        // The plan is kept by reference until here, so its host is not copied per request.
        ctx.plan = Some(plan);
        match prepared? {
            Prepared::Ready(a) => {
                ctx.auth = a;
                Ok(false)
            }
            Prepared::Refused(error) => self.refuse(session, ctx, refusal(error)).await,
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        self.peer(ctx).await
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Try the host's next address (e.g. ::1 refused, 127.0.0.1 listening) before giving up.
        let more = ctx
            .addrs
            .as_ref()
            .is_some_and(|a| ctx.attempt + 1 < a.len().min(4));
        if more && errors::is_connect_error(&e) {
            ctx.attempt += 1;
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Err(e) = ctx.auth.refresh_before_send(&self.app.tokens).await {
            return Err(ctx.fail(e.into(), "token unavailable"));
        }
        Self::rewrite(ctx, req)?;
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(t), Some(plan)) = (ctx.upstream_sent, &ctx.plan) {
            let took = t.elapsed();
            ctx.timing.upstream_ms = Some(took.as_secs_f64() * 1000.0);
            let m = ctx.cfg.metrics.get();
            if let Some(h) = plan.route.and_then(|r| m?.routes.get(r)) {
                h.latency.observe(metrics::seconds(took));
            }
        }
        if resp.status == http::StatusCode::UNAUTHORIZED
            && ctx.auth.on_unauthorized(&self.app.tokens)
        {
            let mut e = Error::explain(
                ErrorType::HTTPStatus(401),
                "upstream rejected the token; replaying once with a new one",
            );
            e.set_retry(true);
            return Err(e);
        }
        if let Some(s) = &ctx.scrub {
            if let Err(e) = scrub_head(s, resp, session) {
                let host = ctx.plan.as_ref().map(|p| p.target.authority.clone());
                let e = ProxyError::Upstream(host.unwrap_or_default(), e);
                return Err(ctx.fail(e, "response cannot be scrubbed"));
            }
            if !scrubbable_body(resp) {
                ctx.scrub = None;
            }
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        check_deadline(ctx)?;
        // pingora holds only the tail of a pre-read body; send the whole of it, once per attempt.
        // An empty one stays `None`: pingora writes any `Some`, and an upstream request without
        // a body takes no write (it logged a warning per request).
        if let Some(whole) = ctx.auth.whole_body() {
            *body = (end_of_stream && !whole.is_empty()).then(|| whole.clone());
        }
        if let Some(resigned) = ctx.auth.resign_chunk(body.as_deref(), end_of_stream) {
            match resigned {
                // Nothing to send yet is an empty piece: pingora takes `None` for the end.
                Ok(b) => *body = Some(b.unwrap_or_default()),
                Err(e) => {
                    let e = ProxyError::BadRequest(e.to_string());
                    return Err(ctx.fail(e, "aws-chunked body cannot be re-signed"));
                }
            }
        }
        // Before the chunk goes out: a `_method` field stops the request, incomplete.
        if let (Some(scan), Some(chunk)) = (&mut ctx.form_scan, body.as_ref()) {
            if let Err(e) = scan.feed(chunk) {
                return Err(ctx.fail(e, "method override in the body"));
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        check_deadline(ctx)?;
        if let Some(s) = &mut ctx.scrub {
            *body = s.chunk(body.as_deref(), end_of_stream);
        }
        Ok(None)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if ctx.auth.take_armed_replay() {
            // The one replay after a 401: the body is held (pingora's buffer or ours), so a
            // non-idempotent method is safe to send again.
            e.set_retry(true);
        } else if !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
            || ctx.auth.replayed()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let host = ctx
            .plan
            .as_ref()
            .map(|p| p.target.authority.clone())
            .unwrap_or_else(|| "upstream".into());
        let err = ctx.error.take().or_else(|| errors::from_pingora(e, &host));
        let Some(err) = err else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        // After a `100 Continue` (sent before a body is read whole) the answer is still owed.
        if session
            .response_written()
            .is_none_or(|r| r.status.is_informational())
        {
            let (r, c) = ctx.names();
            if let Err(we) = respond(session, &err, r, c).await {
                tracing::debug!("could not send error response: {we}");
            }
        }
        tracing::warn!(host, error = %err, "request failed");
        FailToProxy {
            error_code: err.status(),
            can_reuse_downstream: false,
        }
    }

    /// pingora could not parse the request (patched hook, see vendor/README.md): a JSON 400
    /// like every other answer, instead of a bare one.
    fn invalid_request_response(&self, e: &Error) -> Option<(ResponseHeader, bytes::Bytes)> {
        let err = ProxyError::BadRequest(unparsable_reason(e));
        tracing::info!(error = %err, "refused an unparsable request");
        errors::render(&err, None, None).ok()
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _e: &Error) -> bool {
        // fail_to_proxy logs a clearer line.
        true
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        access::record(session, ctx, status, self.app.otel.as_ref());
        // Refusals are counted where they are made.
        let Some(plan) = &ctx.plan else {
            return;
        };
        match (plan.route, ctx.cfg.metrics.get()) {
            (None, Some(m)) => m.unmatched.inc(status),
            (route, _) => self.count(&ctx.cfg, route, plan.credential, status),
        }
    }
}

/// Why pingora could not parse a request, in words. Its own context may quote the raw request
/// (`buf: ...`, credentials included): that is never repeated.
fn unparsable_reason(e: &Error) -> String {
    let context = e
        .context
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    if context.contains("PRI * HTTP/2.0") {
        return "an HTTP/2 preface on the proxy port: h2c (HTTP/2 without TLS) is not supported; \
                use HTTP/1.1, or HTTPS through CONNECT"
            .into();
    }
    if context.is_empty() || context.contains("buf:") || context.len() > 200 {
        return "the request line or a header cannot be parsed (invalid characters, obs-fold \
                line continuations, or not HTTP/1.1)"
            .into();
    }
    context
}

/// Client-side timeouts: between requests on a kept-alive connection, per read or write of
/// the body (a client trickling a body is cut off like a slow origin), and the whole request.
fn client_timeouts(session: &mut Session, ctx: &mut Ctx, cfg: &Config) {
    let to = &cfg.proxy.timeouts;
    ctx.deadline = to.total.map(|t| Instant::now() + t);
    session.set_keepalive(Some(to.client_idle.as_secs().max(1)));
    let downstream = session.as_downstream_mut();
    downstream.set_read_timeout(Some(to.read));
    downstream.set_write_timeout(Some(to.read));
    // A client that pipelines gets its answers in order (RFC 9112 9.3.2), one at a time,
    // rather than the first with keep-alive and then a closed connection.
    downstream.set_pipelining_enabled(true);
}

/// Refusals that need no plan: a CONNECT the front door did not see, oversized headers.
fn admit(session: &mut Session, cfg: &Config) -> std::result::Result<(), ProxyError> {
    if session.req_header().method == http::Method::CONNECT {
        // Only a connection's first request goes through the front door that tunnels.
        session.set_keepalive(None);
        return Err(ProxyError::BadRequest(
            "CONNECT must be the first request on a connection: open a new connection for it"
                .into(),
        ));
    }
    let l = &cfg.proxy.limits;
    limits::check_headers(
        &session.req_header().headers,
        l.max_headers,
        l.max_header_bytes,
    )
    .map_err(ProxyError::HeadersTooLarge)
}

/// Scrubs a response head: every header value, and the framing made fit for a body whose
/// length changes. A compressed body could hide an echo, so it is refused (we asked for
/// `identity`).
fn scrub_head(
    s: &ResponseScrubber,
    resp: &mut ResponseHeader,
    session: &Session,
) -> Result<(), String> {
    if let Some(enc) = resp.headers.get(http::header::CONTENT_ENCODING) {
        if !enc.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(format!(
                "answered with Content-Encoding: {} although asked for identity; \
                 scrub_responses cannot search a compressed body",
                String::from_utf8_lossy(enc.as_bytes())
            ));
        }
    }
    let mut names: Vec<http::HeaderName> = Vec::new();
    for (name, value) in resp.headers.iter() {
        if s.header(value.as_bytes()).is_some() && !names.contains(name) {
            names.push(name.clone());
        }
    }
    for name in names {
        let values: Vec<Vec<u8>> = resp
            .headers
            .get_all(&name)
            .iter()
            .map(|h| {
                s.header(h.as_bytes())
                    .unwrap_or_else(|| h.as_bytes().to_vec())
            })
            .collect();
        resp.remove_header(&name);
        for v in values {
            let v = http::HeaderValue::from_bytes(&v).map_err(|e| e.to_string())?;
            resp.append_header(name.clone(), v)
                .map_err(|e| e.to_string())?;
        }
    }
    let bodiless = session.req_header().method == http::Method::HEAD
        || resp.status.is_informational()
        || resp.status == http::StatusCode::NO_CONTENT
        || resp.status == http::StatusCode::NOT_MODIFIED;
    if !bodiless && resp.headers.contains_key(http::header::CONTENT_LENGTH) {
        resp.remove_header(&http::header::CONTENT_LENGTH);
        if !session.is_http2() {
            resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// The route's `mtls` certificate on the upstream connection; its own pool group, so a
/// connection made with one certificate never serves another.
fn client_cert(peer: &mut HttpPeer, cfg: &Config, plan: &Plan) -> Result<(), ProxyError> {
    let Some(c) = plan.route.and_then(|r| cfg.routes[r].client_cert) else {
        return Ok(());
    };
    let cert = match &cfg.credentials[c].credential {
        Ok(crate::credentials::Credential::ClientCert(cert)) => cert,
        Ok(_) => return Ok(()),
        Err(e) => return Err(ProxyError::CredentialUnavailable(e.to_string())),
    };
    if !plan.target.tls {
        return Err(ProxyError::BadRequest(format!(
            "credential `{}` is a client certificate (mtls), which only an https:// upstream can be shown",
            cfg.credentials[c].name
        )));
    }
    peer.client_cert_key = Some(cert.cert_key.clone());
    peer.group_key = cert.group_key;
    Ok(())
}

/// Whether a body can be searched and rewritten as a byte stream. WebSocket frames and gRPC
/// messages carry their own lengths, which a replacement of another length would corrupt:
/// their heads are scrubbed, their streams pass as they are.
fn scrubbable_body(resp: &ResponseHeader) -> bool {
    let grpc = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    resp.status != http::StatusCode::SWITCHING_PROTOCOLS && !grpc
}

/// Abandons a request past `proxy.timeouts.total`.
fn check_deadline(ctx: &mut Ctx) -> Result<()> {
    if ctx.deadline.is_some_and(|d| Instant::now() >= d) {
        let host = ctx
            .plan
            .as_ref()
            .map(|p| p.target.authority.clone())
            .unwrap_or_default();
        return Err(ctx.fail(
            ProxyError::ReadTimeout(host),
            "proxy.timeouts.total reached",
        ));
    }
    Ok(())
}

/// Removes what belongs to the client-proxy hop. pingora already drops the standard hop-by-hop
/// fields and those named in `Connection`.
fn strip_proxy_headers(req: &mut RequestHeader) {
    req.remove_header(&http::header::PROXY_AUTHORIZATION);
    // A static name: the text would be parsed on every request.
    const PROXY_CONNECTION: http::HeaderName = http::HeaderName::from_static("proxy-connection");
    req.remove_header(&PROXY_CONNECTION);
    let ours: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|n| n.as_str().starts_with("x-credproxy-"))
        .cloned()
        .collect();
    for n in ours {
        req.remove_header(&n);
    }
    debug_assert!(req.headers.get(CREDENTIAL_HEADER).is_none());
}
