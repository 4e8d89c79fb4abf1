//! The roots that origin certificates are verified against: the system's (honouring
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`) plus `proxy.upstream_ca`.

use std::path::Path;
use std::sync::Arc;

use pingora::utils::tls::WrappedX509;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The roots in the form pingora takes per peer (`HttpPeer::options.ca`).
pub type Roots = Arc<[WrappedX509]>;

/// System roots plus every certificate in `extra`. Fails when `extra` is unreadable or holds
/// no certificate: a configured root that silently does nothing would fail every handshake
/// with a confusing error.
pub fn with_extra(extra: &Path) -> Result<Roots, String> {
    let pem = std::fs::read(extra).map_err(|e| format!("cannot read {}: {e}", extra.display()))?;
    let mut ders = Vec::new();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| format!("{}: not a PEM certificate: {e}", extra.display()))?;
        if !usable(&c) {
            return Err(format!(
                "{}: a certificate cannot be used as a root (it does not parse)",
                extra.display()
            ));
        }
        ders.push(c.to_vec());
    }
    if ders.is_empty() {
        return Err(format!(
            "{}: no `BEGIN CERTIFICATE` block found",
            extra.display()
        ));
    }
    let system = rustls_native_certs::load_native_certs();
    for e in &system.errors {
        tracing::debug!("system roots: {e}");
    }
    ders.extend(
        system
            .certs
            .into_iter()
            .filter(|c| usable(c))
            .map(|c| c.to_vec()),
    );
    let roots: Vec<WrappedX509> = ders
        .into_iter()
        .map(|d| WrappedX509::new(d, pingora::utils::tls::parse_x509))
        .collect();
    Ok(Arc::from(roots))
}

/// System roots plus every certificate in `extra`, as one PEM bundle (for clients that take
/// their roots as PEM, such as the Redis client).
pub fn pem_bundle(extra: &Path) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let mut out =
        std::fs::read(extra).map_err(|e| format!("cannot read {}: {e}", extra.display()))?;
    out.push(b'\n');
    for c in rustls_native_certs::load_native_certs().certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(c.as_ref());
        out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    Ok(out)
}

/// Both parsers that will see the root accept it: pingora's WrappedX509 panics on what
/// x509-parser refuses, and one root that webpki refuses fails every upstream handshake.
fn usable(c: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(c).is_ok()
        && rustls::RootCertStore::empty().add(c.clone()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_roots_are_added_and_bad_files_refused() {
        let d = tempfile::tempdir().unwrap();
        let c = crate::tls::ca::init(d.path(), false).unwrap();
        let roots = with_extra(&c.cert).unwrap();
        assert!(!roots.is_empty());
        let e = with_extra(&c.key).unwrap_err();
        assert!(e.contains("no `BEGIN CERTIFICATE`"), "{e}");
        let e = with_extra(&d.path().join("missing.pem")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
