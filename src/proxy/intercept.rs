//! TLS interception of a CONNECT tunnel to a routed host: answer 200, accept TLS with a leaf
//! minted for the CONNECT host, and hand the decrypted stream to the HTTP proxy, which then
//! matches and injects each request inside exactly like a plain-HTTP one.
//!
//! Each served connection is registered in `Tunnels`, so the HTTP proxy sends the requests
//! inside only to the CONNECT host and port, with the client that authenticated the CONNECT.

use std::sync::Arc;
use std::time::Duration;

use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::Peek;
use pingora::server::ShutdownWatch;

use super::tunnel::{addresses, Tunnel, Tunnels};
use crate::tls::Interceptor;

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
pub async fn serve<A: ServerApp>(
    http: &Arc<A>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_alerts_are_recognised() {
        assert!(is_trust_alert(
            "TLS accept() failed: received fatal alert: UnknownCA"
        ));
        assert!(is_trust_alert("received fatal alert: BadCertificate"));
        assert!(!is_trust_alert("connection reset by peer"));
    }
}
