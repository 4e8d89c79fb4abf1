//! TLS interception of a CONNECT tunnel to a routed host: answer 200, accept TLS with a leaf
//! minted for the CONNECT host, and hand the decrypted stream to the HTTP proxy, which then
//! matches and injects each request inside exactly like a plain-HTTP one.
//!
//! The HTTP proxy learns which tunnel a request came through from the connection's addresses
//! (`Tunnels`): requests inside go only to the CONNECT host and port, with the client that
//! authenticated the CONNECT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::{GetSocketDigest, Peek};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use super::CredProxy;
use crate::errors::ProxyError;
use crate::tls::Interceptor;

/// Where an intercepted connection's requests may go, and who opened it.
#[derive(Debug, PartialEq, Eq)]
pub struct Tunnel {
    /// Normalised host (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// TLS was intercepted; false for a CONNECT that carries plain HTTP (`curl -p http://..`).
    pub tls: bool,
    /// The `clients:` name that authenticated the CONNECT.
    pub client: Option<String>,
}

/// Live intercepted connections by (local, peer) address.
#[derive(Default)]
pub struct Tunnels {
    map: DashMap<(SocketAddr, SocketAddr), Arc<Tunnel>>,
}

impl Tunnels {
    pub fn get(&self, local: SocketAddr, peer: SocketAddr) -> Option<Arc<Tunnel>> {
        self.map.get(&(local, peer)).map(|t| t.clone())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn register(&self, key: (SocketAddr, SocketAddr), t: Arc<Tunnel>) -> Registration<'_> {
        self.map.insert(key, t.clone());
        Registration {
            tunnels: self,
            key,
            tunnel: t,
        }
    }
}

/// Removes its tunnel when the connection ends (only its own: the address pair may already
/// belong to a new connection).
struct Registration<'a> {
    tunnels: &'a Tunnels,
    key: (SocketAddr, SocketAddr),
    tunnel: Arc<Tunnel>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.tunnels
            .map
            .remove_if(&self.key, |_, t| Arc::ptr_eq(t, &self.tunnel));
    }
}

/// Why an interception ended before any request.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error("cannot build the TLS config: {0}")]
    Config(String),
    #[error("not a TCP connection")]
    NotTcp,
    #[error("the client did not finish the TLS handshake within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("the client rejected credproxy's certificate ({0}); make the client trust the CA in proxy.ca (see `credproxy ca init`)")]
    Untrusted(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

/// Alerts a client sends when it does not trust the certificate it was shown.
fn is_trust_alert(text: &str) -> bool {
    [
        "UnknownCA",
        "BadCertificate",
        "CertificateUnknown",
        "unknown ca",
        "bad certificate",
        "certificate unknown",
    ]
    .iter()
    .any(|a| text.contains(a))
}

/// TLS handshake records start with this byte; anything else is plain HTTP in the tunnel.
const TLS_HANDSHAKE: u8 = 0x16;

/// Serves the requests inside an answered CONNECT: TLS-accepted with a minted leaf, or as
/// plain HTTP when the client speaks that (a CONNECT to port 80, `ws://`).
pub async fn serve(
    http: &Arc<HttpProxy<CredProxy>>,
    tunnels: &Tunnels,
    interceptor: &Arc<Interceptor>,
    mut l4: Box<pingora::protocols::l4::stream::Stream>,
    mut tunnel: Tunnel,
    handshake_timeout: Duration,
    shutdown: &ShutdownWatch,
) -> Result<(), InterceptError> {
    let key = addresses(l4.as_ref()).ok_or(InterceptError::NotTcp)?;
    let mut first = [0u8; 1];
    match tokio::time::timeout(handshake_timeout, l4.try_peek(&mut first)).await {
        Err(_) => return Err(InterceptError::HandshakeTimeout(handshake_timeout)),
        Ok(Err(e)) => return Err(InterceptError::Handshake(e.to_string())),
        Ok(Ok(_)) if first[0] != TLS_HANDSHAKE => {
            tunnel.tls = false;
            let _reg = tunnels.register(key, Arc::new(tunnel));
            http.process_new(l4, shutdown).await;
            return Ok(());
        }
        Ok(Ok(_)) => {}
    }
    let config = interceptor
        .server_config(&tunnel.host)
        .map_err(InterceptError::Config)?;
    let acceptor = Acceptor::from_server_config(config);
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.tls_handshake(*l4)).await {
        Err(_) => return Err(InterceptError::HandshakeTimeout(handshake_timeout)),
        Ok(Err(e)) => {
            let text = e.to_string();
            return Err(if is_trust_alert(&text) {
                InterceptError::Untrusted(text)
            } else {
                InterceptError::Handshake(text)
            });
        }
        Ok(Ok(tls)) => tls,
    };
    let _reg = tunnels.register(key, Arc::new(tunnel));
    http.process_new(Box::new(tls), shutdown).await;
    Ok(())
}

fn addresses(s: &dyn GetSocketDigest) -> Option<(SocketAddr, SocketAddr)> {
    let d = s.get_socket_digest()?;
    Some((*d.local_addr()?.as_inet()?, *d.peer_addr()?.as_inet()?))
}

/// Where a request came from.
pub enum Arrival {
    /// The listener itself: absolute-form or sidecar requests.
    Listener,
    Tunnel(Arc<Tunnel>),
}

/// Finds the tunnel a request arrived through. A TLS connection is always an intercepted
/// one (the listener is plain TCP): if its tunnel is gone (an HTTP/2 stream still running
/// after its connection ended) the request is refused rather than read as a sidecar request.
pub fn arrival(
    tunnels: &Tunnels,
    session: &pingora::proxy::Session,
) -> Result<Arrival, ProxyError> {
    let found = lookup(tunnels, session);
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    match found {
        Some(t) => Ok(Arrival::Tunnel(t)),
        None if tls => Err(ProxyError::BadRequest(
            "the CONNECT tunnel this request came through has closed".into(),
        )),
        None => Ok(Arrival::Listener),
    }
}

fn lookup(tunnels: &Tunnels, session: &pingora::proxy::Session) -> Option<Arc<Tunnel>> {
    if tunnels.is_empty() {
        return None;
    }
    let local = *session.server_addr()?.as_inet()?;
    let peer = *session.client_addr()?.as_inet()?;
    tunnels.get(local, peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_removes_only_its_own_tunnel() {
        let t = Tunnels::default();
        let key: (SocketAddr, SocketAddr) = (
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1:5000".parse().unwrap(),
        );
        let mk = |h: &str| {
            Arc::new(Tunnel {
                host: h.into(),
                port: 443,
                tls: true,
                client: None,
            })
        };
        let a = t.register(key, mk("a.test"));
        assert_eq!(t.get(key.0, key.1).unwrap().host, "a.test");
        // The pair is reused by a new connection before the old one's guard drops.
        let b = t.register(key, mk("b.test"));
        drop(a);
        assert_eq!(t.get(key.0, key.1).unwrap().host, "b.test");
        drop(b);
        assert!(t.is_empty());
    }

    #[test]
    fn trust_alerts_are_recognised() {
        assert!(is_trust_alert(
            "TLS accept() failed: received fatal alert: UnknownCA"
        ));
        assert!(is_trust_alert("received fatal alert: BadCertificate"));
        assert!(!is_trust_alert("connection reset by peer"));
    }
}
