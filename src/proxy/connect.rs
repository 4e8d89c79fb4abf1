//! The listener's front door. pingora answers CONNECT with 405 before any hook, so each new
//! connection is peeked here first: CONNECT is handled (tunnel or deny), anything else goes to
//! the HTTP proxy.
//!
//! CONNECT to a host that some route could match is intercepted when `proxy.ca` is set
//! (`intercept`), and tunnelled untouched otherwise (a startup warning says so); unmatched
//! hosts follow `proxy.unmatched`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as L4;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::connect_head;
use super::destination::destination;
use super::intercept::{self, InterceptError};
use super::limits::{self, FirstHead};
use super::plan::authenticate;
use super::tunnel::Tunnel;
use super::{Connections, CredProxy};
use crate::app::App;
use crate::config::{Config, Unmatched};
use crate::errors::{self, ProxyError};
use crate::routing::split_host_port;

pub struct Front {
    pub http: Arc<HttpProxy<CredProxy>>,
    pub app: Arc<App>,
    pub conns: Arc<Connections>,
}

/// The CONNECT head is already in the stream's buffer (see `limits::read_first_head`).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

#[async_trait]
impl ServerApp for Front {
    /// Shutdown: the HTTP proxy wakes its idle keep-alive connections so they close instead
    /// of holding the grace period open.
    async fn cleanup(&self) {
        self.http.cleanup().await;
    }

    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Ok(mut l4) = stream.into_any().downcast::<L4>() else {
            return None; // the listener is TCP: not reached
        };
        let cfg = self.app.config();
        let limits = &cfg.proxy.limits;
        let ip = peer_ip(&l4)?;
        let Some(_counted) = self
            .conns
            .clients
            .acquire(ip, limits.max_connections_per_client)
        else {
            let e = ProxyError::TooManyConnections(limits.max_connections_per_client);
            let label = refuse(&mut l4, &ip.to_string(), &e).await;
            self.count(label, e.status());
            return None;
        };
        let head =
            limits::read_first_head(&mut l4, cfg.proxy.timeouts.header, limits.max_header_bytes)
                .await;
        drop(cfg);
        let refusal = match head {
            FirstHead::Ready(buf) => {
                l4.rewind(&buf);
                if buf.starts_with(b"CONNECT ") {
                    self.connect(l4, shutdown).await;
                } else {
                    self.http.process_new(l4, shutdown).await;
                }
                return None;
            }
            FirstHead::Closed | FirstHead::TimedOut { partial: false } => return None,
            FirstHead::Tls => {
                tracing::warn!(client = %ip, "a client spoke TLS to the proxy port: set HTTPS_PROXY=http://... (credproxy's listener is plain HTTP; CONNECT carries the TLS)");
                return None;
            }
            FirstHead::TimedOut { partial: true } => {
                ProxyError::HeaderTimeout(self.app.config().proxy.timeouts.header)
            }
            FirstHead::TooLarge => ProxyError::HeadersTooLarge(format!(
                "more than proxy.limits.max_header_bytes ({})",
                self.app.config().proxy.limits.max_header_bytes
            )),
        };
        let label = refuse(&mut l4, &ip.to_string(), &refusal).await;
        self.count(label, refusal.status());
        None
    }
}

fn peer_ip(l4: &L4) -> Option<std::net::IpAddr> {
    use pingora::protocols::GetSocketDigest;
    let d = l4.get_socket_digest()?;
    Some(d.peer_addr()?.as_inet()?.ip())
}

/// What to do with one CONNECT.
#[derive(Debug, PartialEq, Eq)]
pub struct ConnectPlan {
    pub host: String,
    pub port: u16,
    pub has_route: bool,
    /// The authenticated client (index into `clients:`).
    pub client: Option<usize>,
}

/// Decides a CONNECT from its authority (`host:port`) and `Proxy-Authorization`.
pub fn plan_connect(
    cfg: &Config,
    authority: &str,
    proxy_auth: Option<&[u8]>,
) -> Result<ConnectPlan, ProxyError> {
    let client = authenticate(cfg, proxy_auth)?;
    let bad = |m: &str| ProxyError::BadRequest(format!("CONNECT target `{authority}`: {m}"));
    if authority.contains(['@', '/', '?', '#']) {
        return Err(bad("expected host:port"));
    }
    let (host, port) = split_host_port(authority).map_err(|e| bad(&e.to_string()))?;
    let port = port.ok_or_else(|| bad("a port is required"))?;
    let has_route = cfg.router.host_has_route(&host, port);
    if !has_route && cfg.proxy.unmatched == Unmatched::Deny {
        return Err(ProxyError::Unmatched(authority.to_string()));
    }
    Ok(ConnectPlan {
        host,
        port,
        has_route,
        client,
    })
}

impl Front {
    async fn connect(&self, mut client: Box<L4>, shutdown: &ShutdownWatch) {
        let head = match connect_head::read(&mut client, HEAD_TIMEOUT).await {
            Ok(h) => h,
            Err(connect_head::ReadError::Gone) => return,
            Err(connect_head::ReadError::Refused(e)) => {
                let label = refuse(&mut client, "(unparsed)", &e).await;
                return self.count(label, e.status());
            }
        };
        let cfg = self.app.config();
        let authority = head.authority;
        // Counted when answered: a tunnel may stay open for hours.
        match plan_connect(&cfg, &authority, head.proxy_authorization.as_deref()) {
            Ok(p) if p.has_route && cfg.proxy.interceptor.is_some() => {
                self.count("(connect: intercepted)", 200);
                self.intercept(client, &cfg, p, shutdown).await;
            }
            Ok(p) => match self.dial(&cfg, &p).await {
                Ok(upstream) => {
                    self.count(
                        if p.has_route {
                            "(connect: tunnelled, no CA)"
                        } else {
                            "(connect: unmatched)"
                        },
                        200,
                    );
                    tunnel(client, upstream, cfg.proxy.timeouts.idle).await;
                }
                Err(e) => self.count(refuse(&mut client, &authority, &e).await, e.status()),
            },
            Err(e) => self.count(refuse(&mut client, &authority, &e).await, e.status()),
        }
    }

    fn count(&self, label: &str, status: u16) {
        self.app
            .metrics
            .request(label, crate::metrics::NONE, status);
    }

    async fn intercept(
        &self,
        mut client: Box<L4>,
        cfg: &Config,
        p: ConnectPlan,
        shutdown: &ShutdownWatch,
    ) {
        let Some(interceptor) = &cfg.proxy.interceptor else {
            return;
        };
        if established(&mut client).await.is_err() {
            return;
        }
        let tunnel = Tunnel {
            client: p
                .client
                .and_then(|i| cfg.clients.as_ref().map(|c| c[i].name.clone())),
            host: p.host,
            port: p.port,
            tls: true,
        };
        let host = format!("{}:{}", tunnel.host, tunnel.port);
        let timeout = cfg.proxy.timeouts.handshake;
        let served = intercept::serve(
            &self.http,
            &self.conns.tunnels,
            interceptor,
            client,
            tunnel,
            timeout,
            shutdown,
        )
        .await;
        match served {
            Ok(()) => {}
            Err(e @ InterceptError::Untrusted(_)) => {
                tracing::warn!(target = %host, "{e}");
            }
            Err(e) => tracing::info!(target = %host, "interception ended: {e}"),
        }
    }

    async fn dial(&self, cfg: &Config, p: &ConnectPlan) -> Result<TcpStream, ProxyError> {
        let policy = &cfg.proxy.egress.policy;
        let addrs = destination(&self.app.dns, policy, &self.conns.own, &p.host, p.port).await?;
        let hp = format!("{}:{}", p.host, p.port);
        let mut last = ProxyError::ConnectRefused(hp.clone());
        for ip in addrs.iter().take(4) {
            let fut = TcpStream::connect(SocketAddr::new(*ip, p.port));
            match tokio::time::timeout(cfg.proxy.timeouts.connect, fut).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    last = ProxyError::ConnectRefused(hp.clone());
                }
                Ok(Err(e)) => last = ProxyError::Upstream(hp.clone(), e.to_string()),
                Err(_) => last = ProxyError::ConnectTimeout(hp.clone()),
            }
        }
        Err(last)
    }
}

/// Splices the client and the origin; bytes the client sent after the CONNECT head are in
/// `client` still and go first. A tunnel silent both ways for `idle` is closed.
async fn tunnel(mut client: Box<L4>, mut upstream: TcpStream, idle: Duration) {
    if established(&mut client).await.is_err() {
        return;
    }
    match splice(&mut *client, &mut upstream, idle).await {
        Ok((up, down)) => tracing::debug!(up, down, "tunnel closed"),
        Err(e) => tracing::debug!("tunnel ended: {e}"),
    }
}

/// Copies both ways until both sides have finished (half-closes are passed on), or until
/// nothing moved for `idle`. Returns the bytes sent up and down.
async fn splice<A, B>(a: &mut A, b: &mut B, idle: Duration) -> std::io::Result<(u64, u64)>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    let (mut ab, mut ba) = ([0u8; 16 * 1024], [0u8; 16 * 1024]);
    let (mut a_open, mut b_open) = (true, true);
    let (mut up, mut down) = (0u64, 0u64);
    while a_open || b_open {
        tokio::select! {
            r = a.read(&mut ab), if a_open => match r? {
                0 => { a_open = false; b.shutdown().await?; }
                n => { b.write_all(&ab[..n]).await?; b.flush().await?; up += n as u64; }
            },
            r = b.read(&mut ba), if b_open => match r? {
                0 => { b_open = false; a.shutdown().await?; }
                n => {
                    // The client side is buffered (pingora's stream): flush each chunk.
                    a.write_all(&ba[..n]).await?;
                    a.flush().await?;
                    down += n as u64;
                }
            },
            _ = tokio::time::sleep(idle) => {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "tunnel idle"));
            }
        }
    }
    Ok((up, down))
}

async fn established(client: &mut L4) -> std::io::Result<()> {
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    client.flush().await
}

/// Answers a refused CONNECT and closes; returns the metrics label.
async fn refuse(client: &mut L4, authority: &str, e: &ProxyError) -> &'static str {
    if let Ok((resp, body)) = errors::render(e, None, None) {
        let _ = client.write_all(&errors::to_wire(&resp, &body)).await;
        let _ = client.flush().await;
    }
    tracing::warn!(target = %authority, error = %e, "CONNECT refused");
    "(connect)"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use std::path::Path;

    fn cfg(unmatched: &str) -> Config {
        let text = format!(
            "proxy: {{ unmatched: {unmatched} }}\ncredentials:\n  gh: {{ type: bearer, token: t }}\nroutes:\n  - {{ host: api.github.com, credential: gh }}\n"
        );
        load_str(&text, Path::new("t.yaml"), &|_| None).unwrap()
    }

    #[test]
    fn connect_plans() {
        let c = cfg("tunnel");
        let p = plan_connect(&c, "API.github.com:443", None).unwrap();
        assert_eq!(
            p,
            ConnectPlan {
                host: "api.github.com".into(),
                port: 443,
                has_route: true,
                client: None,
            }
        );
        assert!(!plan_connect(&c, "example.com:443", None).unwrap().has_route);
        let d = cfg("deny");
        assert_eq!(
            plan_connect(&d, "example.com:443", None)
                .unwrap_err()
                .status(),
            403
        );
        assert!(plan_connect(&d, "api.github.com:443", None).is_ok());
    }

    #[test]
    fn malformed_authorities_are_400() {
        let c = cfg("tunnel");
        for bad in [
            "example.com",
            "example.com:0",
            "example.com:70000",
            "user@example.com:443",
            "/path",
            "",
            "exa mple.com:443",
            "[::1:443",
        ] {
            let e = plan_connect(&c, bad, None).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}: {e}");
        }
    }
}
