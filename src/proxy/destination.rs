//! Where a request or tunnel may connect: the host resolved, never one of credproxy's own
//! listeners, then checked by the egress guard.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::dns::{DnsError, Resolver};
use crate::egress::Policy;
use crate::errors::ProxyError;

/// credproxy's own listeners, as they were bound at startup, with what each is.
#[derive(Debug, Clone, Default)]
pub struct OwnListeners(pub Vec<(SocketAddr, &'static str)>);

impl OwnListeners {
    /// The listener `ip:port` would reach, if it is one of ours. A listener on an unspecified
    /// address (0.0.0.0, ::) is reached through every address of this host.
    fn reached(&self, ip: IpAddr, port: u16) -> Option<&'static str> {
        let ip = canonical(ip);
        self.0.iter().find_map(|(l, what)| {
            let lip = canonical(l.ip());
            let hit = l.port() == port
                && (lip == ip || ip.is_unspecified() || (lip.is_unspecified() && is_local(ip)));
            hit.then_some(*what)
        })
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` belongs to this host: only then can a socket be bound to it.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The addresses `host` may be connected to on `port`: resolved, none of them credproxy's own
/// listeners, then checked by the egress guard. Callers connect only to these (no second
/// lookup that DNS rebinding could change).
pub async fn destination(
    dns: &Resolver,
    egress: &Policy,
    own: &OwnListeners,
    host: &str,
    port: u16,
) -> Result<Arc<[IpAddr]>, ProxyError> {
    let addrs = dns.resolve(host).await.map_err(|e| match e {
        DnsError::Timeout => ProxyError::DnsTimeout(host.to_string()),
        DnsError::NotFound(reason) => ProxyError::Dns {
            host: host.to_string(),
            reason,
        },
    })?;
    // Whatever `egress.allow` says: a request through the proxy that reached the admin
    // listener could read metrics, reload the config or refresh tokens.
    if let Some((ip, what)) = addrs
        .iter()
        .find_map(|&ip| own.reached(ip, port).map(|w| (ip, w)))
    {
        return Err(ProxyError::OwnListener {
            target: format!("{host}:{port}"),
            addr: SocketAddr::new(ip, port),
            listener: what,
        });
    }
    Ok(egress.filter(host, port, addrs)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_listeners_are_recognised_in_every_form() {
        let own = OwnListeners(vec![
            ("127.0.0.1:8080".parse().unwrap(), "proxy"),
            ("0.0.0.0:9090".parse().unwrap(), "admin"),
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(own.reached(ip("127.0.0.1"), 8080), Some("proxy"));
        assert_eq!(own.reached(ip("::ffff:127.0.0.1"), 8080), Some("proxy"));
        assert_eq!(own.reached(ip("0.0.0.0"), 8080), Some("proxy"));
        assert_eq!(
            own.reached(ip("127.0.0.2"), 8080),
            None,
            "bound to one address"
        );
        assert_eq!(own.reached(ip("127.0.0.1"), 8081), None);
        assert_eq!(own.reached(ip("127.0.0.9"), 9090), Some("admin"));
        assert_eq!(own.reached(ip("::1"), 9090), Some("admin"));
        assert_eq!(own.reached(ip("8.8.8.8"), 9090), None, "not this host");
    }
}
