//! Where a request or tunnel may connect: the host resolved, then checked by the egress guard.

use std::net::IpAddr;
use std::sync::Arc;

use crate::dns::{DnsError, Resolver};
use crate::egress::Policy;
use crate::errors::ProxyError;

/// The addresses `host` may be connected to: resolved, then checked by the egress guard.
/// Callers connect only to these (no second lookup that DNS rebinding could change).
pub async fn destination(
    dns: &Resolver,
    egress: &Policy,
    host: &str,
) -> Result<Arc<[IpAddr]>, ProxyError> {
    let addrs = dns.resolve(host).await.map_err(|e| match e {
        DnsError::Timeout => ProxyError::DnsTimeout(host.to_string()),
        DnsError::NotFound(reason) => ProxyError::Dns {
            host: host.to_string(),
            reason,
        },
    })?;
    Ok(egress.filter(host, addrs)?)
}
