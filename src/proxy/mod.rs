//! The data path: one thin `ProxyHttp` implementation whose hooks delegate to `plan` (what to
//! do), `credentials` (what to inject), `dns` (where to connect) and `errors` (what to answer).

pub mod connect;
pub mod connect_head;
mod destination;
pub mod intercept;
pub mod limits;
pub mod plan;
mod replay;
pub mod tunnel;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::app::App;
use crate::config::Config;
use crate::credentials::aws_sigv4::Payload;
use crate::credentials::Credential;
use crate::errors::{self, ProxyError};
use crate::metrics::{self, Metrics};
use crate::tokens::{Token, TokenError, TokenSource};
use destination::destination;
use limits::ClientConnections;
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
}

impl Connections {
    pub fn new(metrics: &Metrics) -> Self {
        Connections {
            tunnels: Tunnels::new(metrics.intercepted_connections.clone()),
            clients: ClientConnections::new(metrics.client_connections.clone()),
        }
    }
}

/// Per-request state.
#[derive(Default)]
pub struct Ctx {
    cfg: Option<Arc<Config>>,
    plan: Option<Plan>,
    addrs: Option<Arc<[IpAddr]>>,
    attempt: usize,
    /// An error found by our own code, preferred over pingora's generic one in `fail_to_proxy`.
    error: Option<ProxyError>,
    upstream_sent: Option<Instant>,
    /// The token to inject, for token credentials.
    token: Option<Arc<Token>>,
    /// The cache key and source of that token (for the 401 replay).
    token_slot: Option<(Arc<str>, Arc<dyn TokenSource>)>,
    replay: replay::Replay,
    /// Set when an upstream 401 asked for the one replay; cleared when it is granted.
    replay_armed: bool,
    replayed: bool,
    /// SigV4 with UNSIGNED-PAYLOAD (body streamed, not hashed).
    unsigned_payload: bool,
    /// `proxy.timeouts.total`: the request is abandoned past this instant.
    deadline: Option<Instant>,
}

impl Ctx {
    fn labels(&self) -> (Option<Arc<str>>, Option<Arc<str>>) {
        let (Some(cfg), Some(plan)) = (&self.cfg, &self.plan) else {
            return (None, None);
        };
        (
            plan.route.map(|r| cfg.routes[r].name.clone()),
            plan.credential.map(|c| cfg.credentials[c].name.clone()),
        )
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
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

fn proxy_error(e: TokenError) -> ProxyError {
    match e {
        TokenError::Timeout { .. } => ProxyError::TokenTimeout(e.to_string()),
        _ => ProxyError::TokenEndpoint(e.to_string()),
    }
}

/// Records a token failure met after the request was planned, for `fail_to_proxy`.
fn token_failure(ctx: &mut Ctx, e: TokenError) -> Box<Error> {
    let pe = proxy_error(e);
    let status = pe.status();
    ctx.error = Some(pe);
    Error::explain(ErrorType::HTTPStatus(status), "token unavailable")
}

/// Maps a pingora error to what the user sees.
fn classify(e: &Error, host: &str) -> Option<ProxyError> {
    let h = host.to_string();
    Some(match e.etype() {
        ErrorType::ConnectRefused => ProxyError::ConnectRefused(h),
        ErrorType::ConnectTimedout => ProxyError::ConnectTimeout(h),
        ErrorType::ConnectNoRoute => ProxyError::Upstream(h, "no route to host".into()),
        ErrorType::HTTPStatus(400) => ProxyError::BadRequest(
            e.context
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default(),
        ),
        ErrorType::InvalidCert => ProxyError::TlsCertificate(h),
        ErrorType::TLSHandshakeFailure if is_certificate_error(e) => ProxyError::TlsCertificate(h),
        ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::HandshakeError => ProxyError::Tls(h, e.etype().as_str().to_string()),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            ProxyError::ReadTimeout(h)
        }
        _ if e.esource() == &ErrorSource::Downstream => match e.etype() {
            ErrorType::ReadError
            | ErrorType::WriteError
            | ErrorType::ConnectionClosed
            | ErrorType::ReadTimedout
            | ErrorType::WriteTimedout => return None,
            _ => ProxyError::BadRequest(e.etype().as_str().to_string()),
        },
        _ => ProxyError::Upstream(h, e.etype().as_str().to_string()),
    })
}

/// rustls reports a refused origin certificate as a handshake failure whose cause says so.
fn is_certificate_error(e: &Error) -> bool {
    let text = e.to_string();
    text.contains("invalid peer certificate") || text.contains("CertificateUnknown")
}

fn is_connect_error(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectRefused
            | ErrorType::ConnectTimedout
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
    )
}

impl CredProxy {
    /// Fetches (or reads from the cache) the token of a token credential into `ctx`.
    async fn obtain_token(&self, ctx: &mut Ctx, c: usize) -> std::result::Result<(), ProxyError> {
        let Some(cfg) = &ctx.cfg else { return Ok(()) };
        let entry = &cfg.credentials[c];
        let Some(src) = entry
            .credential
            .as_ref()
            .ok()
            .and_then(|cr| cr.token_source())
        else {
            return Ok(());
        };
        let host = ctx
            .plan
            .as_ref()
            .map(|p| p.target.host.as_str())
            .unwrap_or_default();
        let targeted = src
            .for_target(host)
            .map(|child| (Arc::<str>::from(format!("{}@{host}", entry.name)), child));
        let (name, src) = match &targeted {
            Some((n, s)) => (n, s),
            None => (&entry.name, src),
        };
        let slot = (name.clone(), src.clone());
        match self.app.tokens.get(name, src).await {
            Ok(t) => {
                ctx.token = Some(t);
                ctx.token_slot = Some(slot);
                Ok(())
            }
            Err(e) => Err(proxy_error(e)),
        }
    }

    fn signer(&self, ctx: &Ctx) -> Option<Arc<crate::credentials::aws_sigv4::AwsSigV4>> {
        let (cfg, plan) = (ctx.cfg.as_ref()?, ctx.plan.as_ref()?);
        cfg.credentials[plan.credential?]
            .credential
            .as_ref()
            .ok()
            .and_then(|c| match c {
                Credential::Signed(s) => Some(s.clone()),
                _ => None,
            })
    }

    /// Gets the body ready for SigV4: read whole (hashed), or streamed as UNSIGNED-PAYLOAD.
    /// The outer error is the client's (hang-up); the inner one is a refusal to answer.
    async fn prepare_signing(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        signer: &crate::credentials::aws_sigv4::AwsSigV4,
        max_body: u64,
    ) -> Result<std::result::Result<(), ProxyError>> {
        let client = session
            .req_header()
            .headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_uppercase)
            .unwrap_or_default();
        if client.starts_with("STREAMING-") {
            return Ok(Err(ProxyError::BadRequest(format!(
                "x-amz-content-sha256: {client} (aws-chunked) cannot be re-signed by credproxy; \
                 send single-part uploads, or let the SDK use UNSIGNED-PAYLOAD"
            ))));
        }
        if client == "UNSIGNED-PAYLOAD" && signer.is_s3() {
            ctx.unsigned_payload = true;
            return Ok(Ok(()));
        }
        Ok(match replay::prepare_whole(session, max_body).await? {
            replay::Whole::Body(b) => {
                ctx.replay = replay::Replay::Whole(b);
                Ok(())
            }
            replay::Whole::Chunked | replay::Whole::TooLarge if signer.unsigned_payload => {
                ctx.unsigned_payload = true;
                Ok(())
            }
            replay::Whole::Chunked => Err(ProxyError::LengthRequired),
            replay::Whole::TooLarge => Err(ProxyError::BodyTooLarge(max_body)),
        })
    }

    /// Gets the planned credential ready: its token fetched, or the body read for a replay
    /// or for signing. The outer error is the client's; the inner one is a refusal.
    async fn prepare_credential(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        credential: Option<usize>,
    ) -> Result<std::result::Result<(), ProxyError>> {
        let Some(c) = credential else {
            return Ok(Ok(()));
        };
        if let Err(e) = self.obtain_token(ctx, c).await {
            return Ok(Err(e));
        }
        let max_body = ctx.cfg.as_ref().map(|c| c.proxy.max_body).unwrap_or(0);
        if ctx.token.is_some() {
            ctx.replay = replay::prepare(session, max_body).await?;
        } else if let Some(signer) = self.signer(ctx) {
            return self.prepare_signing(session, ctx, &signer, max_body).await;
        }
        Ok(Ok(()))
    }

    /// A new token after the upstream rejected ours (shared with concurrent rejections).
    async fn renew_token(&self, ctx: &mut Ctx) -> Result<()> {
        let (Some(old), Some((name, src))) = (&ctx.token, &ctx.token_slot) else {
            return Ok(());
        };
        match self.app.tokens.renew_after_reject(name, src, old).await {
            Ok(t) => {
                ctx.token = Some(t);
                Ok(())
            }
            Err(e) => Err(token_failure(ctx, e)),
        }
    }

    /// The cached token again (or a new one) for a request whose token expired meanwhile.
    async fn refresh_expired_token(&self, ctx: &mut Ctx) -> Result<()> {
        let Some((name, src)) = &ctx.token_slot else {
            return Ok(());
        };
        match self.app.tokens.get(name, src).await {
            Ok(t) => {
                ctx.token = Some(t);
                Ok(())
            }
            Err(e) => Err(token_failure(ctx, e)),
        }
    }

    /// Answers a refused request and counts it.
    async fn refuse(&self, session: &mut Session, ctx: &mut Ctx, r: Refusal) -> Result<bool> {
        let Some(cfg) = ctx.cfg.as_ref() else {
            return Ok(true);
        };
        let route = r.route.map(|i| cfg.routes[i].name.clone());
        let cred = r.credential.map(|i| cfg.credentials[i].name.clone());
        respond(session, &r.error, route.as_deref(), cred.as_deref()).await?;
        self.count(cfg, r.route, r.credential, r.error.status());
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
}

#[async_trait]
impl ProxyHttp for CredProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let cfg = self.app.config();
        ctx.cfg = Some(cfg.clone());
        client_timeouts(session, ctx, &cfg);
        let planned = match admit(session, &cfg) {
            Err(e) => Err(Refusal::from(e)),
            Ok(()) => match tunnel::arrival(&self.conns.tunnels, session) {
                Ok(Arrival::Tunnel(t)) => plan::plan(&cfg, session.req_header(), Some(&t)),
                Ok(Arrival::Listener) => plan::plan(&cfg, session.req_header(), None),
                Err(e) => Err(e.into()),
            },
        };
        let plan = match planned {
            Ok(p) => p,
            Err(r) => return self.refuse(session, ctx, r).await,
        };
        let (route, credential) = (plan.route, plan.credential);
        ctx.plan = Some(plan);
        match self.prepare_credential(session, ctx, credential).await? {
            Ok(()) => Ok(false),
            Err(error) => {
                let r = Refusal {
                    error,
                    route,
                    credential,
                };
                self.refuse(session, ctx, r).await
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let (Some(cfg), Some(plan)) = (&ctx.cfg, &ctx.plan) else {
            return Err(Error::explain(ErrorType::InternalError, "no plan"));
        };
        let t = &plan.target;
        let addrs = match &ctx.addrs {
            Some(a) => a.clone(),
            None => match destination(&self.app.dns, &cfg.proxy.egress.policy, &t.host).await {
                Ok(a) => {
                    ctx.addrs = Some(a.clone());
                    a
                }
                Err(pe) => {
                    let status = pe.status();
                    ctx.error = Some(pe);
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(status),
                        "destination unresolvable or refused",
                    ));
                }
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
        if t.tls {
            // Offer HTTP/2 first; origins without it get HTTP/1.1.
            peer.options.set_http_version(2, 1);
            peer.options.max_h2_streams = 100;
            peer.options.ca = cfg.proxy.upstream_roots.clone();
        }
        Ok(Box::new(peer))
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
        if more && is_connect_error(&e) {
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
        if ctx.replayed {
            self.renew_token(ctx).await?;
        } else if ctx
            .token
            .as_ref()
            .is_some_and(|t| t.expires_at <= tokio::time::Instant::now())
        {
            // Expired while the body was being read: never send a token past its expiry.
            self.refresh_expired_token(ctx).await?;
        }
        let (Some(cfg), Some(plan)) = (&ctx.cfg, &ctx.plan) else {
            return Err(Error::explain(ErrorType::InternalError, "no plan"));
        };
        let uri: http::Uri = plan.target.path.parse().map_err(|_| {
            Error::explain(
                ErrorType::HTTPStatus(400),
                "request path cannot be forwarded",
            )
        })?;
        // Host first: set_uri drops the authority HTTP/2 origins need.
        req.insert_header(http::header::HOST, plan.target.authority.as_str())?;
        req.set_uri(uri);
        strip_proxy_headers(req);
        if let replay::Replay::Whole(body) = &ctx.replay {
            // A bodiless GET stays without Content-Length.
            if !body.is_empty() || req.headers.contains_key(http::header::CONTENT_LENGTH) {
                req.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
            }
            req.remove_header(&http::header::TRANSFER_ENCODING);
            req.remove_header(&http::header::EXPECT);
        }
        if let Some(c) = plan.credential {
            req.remove_header(&http::header::AUTHORIZATION);
            match (&ctx.token, &cfg.credentials[c].credential) {
                (Some(t), _) => req.insert_header(t.name.clone(), t.header.clone())?,
                (None, Ok(Credential::Static(inj))) => inj.apply(req)?,
                (None, _) => {}
            }
            if let Some(signer) =
                cfg.credentials[c]
                    .credential
                    .as_ref()
                    .ok()
                    .and_then(|cr| match cr {
                        Credential::Signed(s) => Some(s),
                        _ => None,
                    })
            {
                let payload = match &ctx.replay {
                    replay::Replay::Whole(b) => Payload::Bytes(b),
                    _ if ctx.unsigned_payload => Payload::Unsigned,
                    _ => Payload::Bytes(&[]),
                };
                if let Err(e) =
                    signer.sign(req, plan.target.tls, payload, std::time::SystemTime::now())
                {
                    ctx.error = Some(ProxyError::CredentialUnavailable(e.to_string()));
                    return Err(Error::explain(ErrorType::HTTPStatus(502), "signing failed"));
                }
            }
        }
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(t), Some(cfg), Some(plan)) = (ctx.upstream_sent, &ctx.cfg, &ctx.plan) {
            let m = cfg.metrics.get();
            if let Some(h) = plan.route.and_then(|r| m?.routes.get(r)) {
                h.latency.observe(metrics::seconds(t.elapsed()));
            }
        }
        if resp.status == http::StatusCode::UNAUTHORIZED {
            if let (Some(token), Some((name, src))) = (&ctx.token, &ctx.token_slot) {
                if !ctx.replayed && ctx.replay.possible() {
                    ctx.replayed = true;
                    ctx.replay_armed = true;
                    let mut e = Error::explain(
                        ErrorType::HTTPStatus(401),
                        "upstream rejected the token; replaying once with a new one",
                    );
                    e.set_retry(true);
                    return Err(e);
                }
                // Not replayable: the 401 goes to the client, and the token is dropped so the
                // client's own retry gets a fresh one. A 401 to the replay itself, with a token
                // fetched a moment ago, is the API's answer, not a stale token: keep it.
                if !ctx.replayed {
                    self.app.tokens.reject(name, src, token);
                }
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
        if let replay::Replay::Whole(whole) = &ctx.replay {
            *body = end_of_stream.then(|| whole.clone());
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        check_deadline(ctx)?;
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
        if std::mem::take(&mut ctx.replay_armed) {
            // The one replay after a 401: the body is held (pingora's buffer or ours), so a
            // non-idempotent method is safe to send again.
            e.set_retry(true);
        } else if !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
            || ctx.replayed
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
            .map(|p| p.target.authority.as_str())
            .unwrap_or("upstream");
        let err = ctx.error.take().or_else(|| classify(e, host));
        let Some(err) = err else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let code = err.status();
        if session.response_written().is_none() {
            let (r, c) = ctx.labels();
            if let Err(we) = respond(session, &err, r.as_deref(), c.as_deref()).await {
                tracing::debug!("could not send error response: {we}");
            }
        }
        tracing::warn!(host, error = %err, "request failed");
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _e: &Error) -> bool {
        // fail_to_proxy logs a clearer line.
        true
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        // Refusals are counted where they are made.
        let (Some(cfg), Some(plan)) = (&ctx.cfg, &ctx.plan) else {
            return;
        };
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        tracing::debug!(target: "credproxy::access", method = %session.req_header().method,
            route = ?plan.route.map(|r| &cfg.routes[r].name),
            credential = ?plan.credential.map(|c| &cfg.credentials[c].name), status, "request");
        match (plan.route, cfg.metrics.get()) {
            (None, Some(m)) => m.unmatched.inc(status),
            (route, _) => self.count(cfg, route, plan.credential, status),
        }
    }
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

/// Abandons a request past `proxy.timeouts.total`.
fn check_deadline(ctx: &mut Ctx) -> Result<()> {
    if ctx.deadline.is_some_and(|d| Instant::now() >= d) {
        let host = ctx
            .plan
            .as_ref()
            .map(|p| p.target.authority.clone())
            .unwrap_or_default();
        ctx.error = Some(ProxyError::ReadTimeout(host));
        return Err(Error::explain(
            ErrorType::HTTPStatus(504),
            "proxy.timeouts.total reached",
        ));
    }
    Ok(())
}

/// Removes what belongs to the client-proxy hop. pingora already drops the standard hop-by-hop
/// fields and those named in `Connection`.
fn strip_proxy_headers(req: &mut RequestHeader) {
    req.remove_header(&http::header::PROXY_AUTHORIZATION);
    req.remove_header("proxy-connection");
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
