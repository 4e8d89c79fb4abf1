//! `mtls`: a client certificate presented on the upstream TLS connection of its routes (RFC
//! 8446 4.4.2), alone or with one header credential on the same route
//! (`credentials: [partner-cert, partner-token]`).
//!
//! Everything pingora would panic on later (certificate DER it cannot parse, a key it cannot
//! convert) is checked here, at load, along with the key matching the certificate. Upstream
//! connections are pooled per certificate: pingora keys its pool by the leaf's serial number,
//! which two CAs may well repeat, so each certificate chain also gets its own `group_key`.

use std::sync::Arc;

use pingora::utils::tls::CertKey;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{BuildCtx, BuildError, Credential, Kind};
use crate::config::raw::SecretValue;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMtls {
    /// The client certificate, PEM (`file:cert.pem`, `${ENV}`, or a secret source); any
    /// certificates after the first are sent as its chain.
    pub cert: SecretValue,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: SecretValue,
    /// Intermediate certificates sent after it, PEM.
    pub chain: Option<SecretValue>,
}

/// A built client certificate.
pub struct ClientCert {
    pub cert_key: Arc<CertKey>,
    /// Separates pooled connections of certificates whose serial numbers collide.
    pub group_key: u64,
    /// The leaf's subject, for `explain` and `/credentials`.
    pub subject: String,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCert")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

fn invalid(key: &str, message: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The certificates of a PEM text, each checked to parse as X.509.
fn certificates(key: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, BuildError> {
    let mut out = Vec::new();
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let c = c.map_err(|e| invalid(key, format!("not PEM certificates: {e}")))?;
        x509_parser::parse_x509_certificate(&c)
            .map_err(|e| invalid(key, format!("a certificate does not parse: {e}")))?;
        out.push(c);
    }
    if out.is_empty() {
        return Err(invalid(key, "no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(out)
}

/// The leaf's subject, e.g. `CN=partner-client, O=Acme`.
fn subject(leaf: &CertificateDer<'_>) -> String {
    x509_parser::parse_x509_certificate(leaf)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_default()
}

/// Checks that `key` signs for the leaf's public key, so the handshake cannot fail on it.
fn check_pair(certs: &[CertificateDer<'static>], key: &PrivateKeyDer<'static>) -> Result<(), BuildError> {
    let signer = rustls::crypto::ring::sign::any_supported_type(key)
        .map_err(|e| invalid("key", format!("unsupported private key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(certs.to_vec(), signer);
    certified
        .keys_match()
        .map_err(|e| invalid("key", format!("the key does not belong to the certificate: {e}")))
}

fn group_key(certs: &[CertificateDer<'_>]) -> u64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for c in certs {
        ctx.update(c);
    }
    let d = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(first)
}

impl ClientCert {
    pub fn build(raw: &RawMtls, ctx: &mut BuildCtx<'_>) -> Result<Self, BuildError> {
        let cert = ctx.secret_multiline("cert", &raw.cert)?;
        let key = ctx.secret_multiline("key", &raw.key)?;
        let mut certs = certificates("cert", cert.expose())?;
        if let Some(chain) = &raw.chain {
            let chain = ctx.secret_multiline("chain", chain)?;
            certs.extend(certificates("chain", chain.expose())?);
        }
        let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes())
            .map_err(|e| invalid("key", format!("not a PEM private key: {e}")))?;
        check_pair(&certs, &key)?;
        // The form pingora converts back at each handshake: checked once here.
        let key_der = key.secret_der().to_vec();
        PrivateKeyDer::try_from(key_der.clone())
            .map_err(|e| invalid("key", format!("unsupported private key encoding: {e}")))?;
        let group_key = group_key(&certs);
        let subject = subject(&certs[0]);
        let der: Vec<Vec<u8>> = certs.iter().map(|c| c.to_vec()).collect();
        Ok(ClientCert {
            cert_key: Arc::new(CertKey::new(der, key_der)),
            group_key,
            subject,
        })
    }

    /// What `explain` shows.
    pub fn describe(&self) -> String {
        format!(
            "client certificate {} (mTLS, on the upstream TLS connection)",
            self.subject
        )
    }
}

/// `type: mtls`: a client certificate for the upstream TLS connection.
pub struct MtlsKind;

impl Kind for MtlsKind {
    const NAME: &'static str = "mtls";
    type Raw = RawMtls;
    fn build(raw: &RawMtls, ctx: &mut BuildCtx<'_>) -> Result<Credential, BuildError> {
        Ok(Credential::ClientCert(Arc::new(ClientCert::build(raw, ctx)?)))
    }
}

#[cfg(test)]
mod tests;
