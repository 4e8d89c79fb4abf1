//! Intercepted tunnels: which CONNECT a request inside one came through (`Tunnels`, keyed by
//! the connection's addresses), and so where it may go and which client opened it.

use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashMap;
use pingora::protocols::GetSocketDigest;
use prometheus::IntGauge;

use crate::errors::ProxyError;

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
pub struct Tunnels {
    map: DashMap<(SocketAddr, SocketAddr), Arc<Tunnel>>,
    /// `credproxy_intercepted_connections`: the registrations alive, which also answers
    /// `is_empty` (`DashMap::is_empty` read-locks every shard, on every request).
    open: IntGauge,
}

impl Tunnels {
    pub fn new(open: IntGauge) -> Self {
        Tunnels {
            map: DashMap::new(),
            open,
        }
    }

    pub fn get(&self, local: SocketAddr, peer: SocketAddr) -> Option<Arc<Tunnel>> {
        self.map.get(&(local, peer)).map(|t| t.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.open.get() == 0
    }

    /// Records a tunnel for the connection with these addresses until the guard drops.
    pub fn register(&self, key: (SocketAddr, SocketAddr), t: Arc<Tunnel>) -> Registration<'_> {
        self.map.insert(key, t.clone());
        self.open.inc();
        Registration {
            tunnels: self,
            key,
            tunnel: t,
        }
    }
}

/// Removes its tunnel when the connection ends (only its own: the address pair may already
/// belong to a new connection).
pub struct Registration<'a> {
    tunnels: &'a Tunnels,
    key: (SocketAddr, SocketAddr),
    tunnel: Arc<Tunnel>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.tunnels.open.dec();
        self.tunnels
            .map
            .remove_if(&self.key, |_, t| Arc::ptr_eq(t, &self.tunnel));
    }
}

/// A connection's (local, peer) addresses: the key of its tunnel.
pub fn addresses(s: &dyn GetSocketDigest) -> Option<(SocketAddr, SocketAddr)> {
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
        let open = IntGauge::new("open", "open").unwrap();
        let t = Tunnels::new(open.clone());
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
        assert!(!t.is_empty());
        assert_eq!(t.get(key.0, key.1).unwrap().host, "b.test");
        assert_eq!(open.get(), 1);
        drop(b);
        assert!(t.is_empty());
        assert_eq!(open.get(), 0);
    }
}
