//! The local CA that signs interception leaf certificates: `credproxy ca init` creates it,
//! `proxy.ca` loads it (checked: a CA certificate, in its validity period, matching its key).

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// Which file of the CA an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaFile {
    Cert,
    Key,
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {path}: {reason} (create a CA with `credproxy ca init`)")]
    Read {
        file: CaFile,
        path: PathBuf,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Invalid {
        file: CaFile,
        path: PathBuf,
        reason: String,
    },
    #[error("{0} already exists; pass --force to replace it (clients trusting the old CA will stop trusting credproxy)")]
    Exists(PathBuf),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("cannot create the CA: {0}")]
    Generate(String),
}

impl CaError {
    /// The config key the error belongs to.
    pub fn key(&self) -> &'static str {
        match self {
            CaError::Read { file, .. } | CaError::Invalid { file, .. } => match file {
                CaFile::Cert => "proxy.ca.cert",
                CaFile::Key => "proxy.ca.key",
            },
            _ => "proxy.ca",
        }
    }
}

/// A loaded CA, ready to sign leaves.
pub struct Ca {
    pub issuer: Issuer<'static, KeyPair>,
    pub cert: CertificateDer<'static>,
    pub not_after: OffsetDateTime,
    /// Warnings found while loading (an expiry close at hand).
    pub warnings: Vec<String>,
    /// The key file is readable by group or others: warned about, or refused when
    /// `proxy.strict_permissions` is on.
    pub key_exposed: Option<String>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn read(file: CaFile, path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|e| CaError::Read {
        file,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Loads and checks the CA certificate and key.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Ca, CaError> {
    let invalid = |file, reason: String| CaError::Invalid {
        file,
        path: match file {
            CaFile::Cert => cert_path.to_path_buf(),
            CaFile::Key => key_path.to_path_buf(),
        },
        reason,
    };
    let cert_pem = read(CaFile::Cert, cert_path)?;
    let key_pem = read(CaFile::Key, key_path)?;
    let der = first_certificate(&cert_pem).map_err(|r| invalid(CaFile::Cert, r))?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| invalid(CaFile::Cert, format!("not a valid certificate: {e}")))?;
    check_ca_cert(&x509).map_err(|r| invalid(CaFile::Cert, r))?;
    let not_after = x509.validity().not_after.to_datetime();
    let key = KeyPair::from_pem(&key_pem).map_err(|e| {
        invalid(
            CaFile::Key,
            format!("not a usable PKCS#8 PEM private key (ECDSA P-256/P-384, Ed25519 or RSA): {e}"),
        )
    })?;
    if key.subject_public_key_info() != x509.public_key().raw {
        return Err(invalid(
            CaFile::Key,
            format!("does not match the certificate {}", cert_path.display()),
        ));
    }
    let cert = CertificateDer::from(der.clone());
    let issuer = Issuer::from_ca_cert_der(&cert, key)
        .map_err(|e| invalid(CaFile::Cert, format!("cannot sign with it: {e}")))?;
    check_issuer_name(&issuer, x509.subject().as_raw()).map_err(|r| invalid(CaFile::Cert, r))?;
    let left = not_after - OffsetDateTime::now_utc();
    let warnings = (left < Duration::days(30))
        .then(|| {
            format!(
                "{} expires in {} days: create a new CA (`credproxy ca init --force`) and make clients trust it",
                cert_path.display(),
                left.whole_days()
            )
        })
        .into_iter()
        .collect();
    let key_exposed = crate::secret::readable_by_others(key_path).map(|mode| {
        format!(
            "{} is readable by group or others (mode {mode:o}); anyone who reads it can impersonate every HTTPS site to clients trusting this CA: chmod 600 it",
            key_path.display()
        )
    });
    Ok(Ca {
        issuer,
        cert,
        not_after,
        warnings,
        key_exposed,
    })
}

/// A CA certificate, valid now.
fn check_ca_cert(x509: &x509_parser::certificate::X509Certificate<'_>) -> Result<(), String> {
    if !x509.is_ca() {
        return Err("not a CA certificate (basicConstraints CA:TRUE is missing)".into());
    }
    let validity = x509.validity();
    if !validity.is_valid() {
        return Err(format!(
            "outside its validity period ({} to {})",
            validity.not_before, validity.not_after
        ));
    }
    Ok(())
}

/// Signs a probe leaf and checks that its issuer name is the CA's subject byte for byte:
/// rcgen keeps one value per attribute type, so a subject with two `OU=` or `DC=` would give
/// leaves that no client can chain to the CA.
fn check_issuer_name(issuer: &Issuer<'static, KeyPair>, subject: &[u8]) -> Result<(), String> {
    let probe = CertificateParams::new(vec!["probe.invalid".to_string()])
        .and_then(|p| p.signed_by(issuer.key(), issuer))
        .map_err(|e| format!("cannot sign with it: {e}"))?;
    let (_, leaf) = x509_parser::parse_x509_certificate(probe.der())
        .map_err(|e| format!("cannot sign with it: {e}"))?;
    if leaf.issuer().as_raw() != subject {
        return Err("its subject name cannot be reproduced in the certificates credproxy signs \
                    (repeated attributes such as two OU= or DC=); create one with `credproxy ca init`"
            .into());
    }
    Ok(())
}

fn first_certificate(pem: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    match CertificateDer::pem_slice_iter(pem.as_bytes()).next() {
        Some(Ok(c)) => Ok(c.to_vec()),
        Some(Err(e)) => Err(format!("not a PEM certificate: {e}")),
        None => Err("no `BEGIN CERTIFICATE` block found".into()),
    }
}

/// SHA-256 of a certificate, colon-separated hex (as browsers show it).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Ca {
    /// The certificate's SHA-256 fingerprint, as `ca init` printed it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }
}

/// What `ca init` wrote.
#[derive(Debug)]
pub struct Created {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SHA-256 of the certificate, colon-separated hex (as browsers show it).
    pub fingerprint: String,
}

/// Creates an ECDSA P-256 CA valid for 10 years in `dir` (`ca.pem`, `ca.key` mode 0600).
pub fn init(dir: &Path, force: bool) -> Result<Created, CaError> {
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    if !force {
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(CaError::Exists(p.clone()));
            }
        }
    }
    create_dir(dir)?;
    let key = KeyPair::generate().map_err(|e| CaError::Generate(e.to_string()))?;
    let cert = ca_params(OffsetDateTime::now_utc())
        .self_signed(&key)
        .map_err(|e| CaError::Generate(e.to_string()))?;
    // Key first: a cert without its key is useless, the reverse would be replaced by --force.
    write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(Created {
        cert: cert_path,
        key: key_path,
        fingerprint: fingerprint(cert.der()),
    })
}

fn ca_params(now: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let cn = if host.is_empty() || host.len() > 30 {
        "credproxy local CA".to_string()
    } else {
        format!("credproxy local CA ({host})")
    };
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "credproxy");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(3650);
    p.serial_number = Some(super::random_serial());
    p
}

fn create_dir(dir: &Path) -> Result<(), CaError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .map_err(|e| CaError::Write(dir.to_path_buf(), e))
}

/// Writes through a temp file created with `mode`, so the key is never briefly world-readable
/// and a crash never leaves half a file.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    let err = |e| CaError::Write(path.to_path_buf(), e);
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = o.open(&tmp).map_err(err)?;
    let done = f
        .write_all(data)
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_load() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ca");
        let c = init(&dir, false).unwrap();
        assert_eq!(c.fingerprint.len(), 32 * 3 - 1);
        let ca = load(&c.cert, &c.key).unwrap();
        assert!(ca.warnings.is_empty(), "{:?}", ca.warnings);
        assert!(ca.key_exposed.is_none());
        assert!(ca.not_after > OffsetDateTime::now_utc() + Duration::days(3000));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&c.key), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }
    }

    #[test]
    fn init_refuses_to_overwrite_without_force() {
        let d = tempfile::tempdir().unwrap();
        let first = init(d.path(), false).unwrap();
        let before = std::fs::read(&first.cert).unwrap();
        let e = init(d.path(), false).unwrap_err();
        assert!(matches!(e, CaError::Exists(_)), "{e}");
        assert!(e.to_string().contains("--force"));
        assert_eq!(std::fs::read(&first.cert).unwrap(), before);
        let second = init(d.path(), true).unwrap();
        assert_ne!(std::fs::read(&second.cert).unwrap(), before);
        load(&second.cert, &second.key).unwrap();
    }

    #[test]
    fn load_rejections_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        let a = init(&d.path().join("a"), false).unwrap();
        let b = init(&d.path().join("b"), false).unwrap();
        let e = load(&d.path().join("nope.pem"), &a.key).unwrap_err();
        assert_eq!(e.key(), "proxy.ca.cert");
        assert!(e.to_string().contains("ca init"), "{e}");
        let e = load(&a.cert, &b.key).unwrap_err();
        assert_eq!(e.key(), "proxy.ca.key");
        assert!(e.to_string().contains("does not match"), "{e}");
        let e = load(&a.key, &a.key).unwrap_err();
        assert_eq!(e.key(), "proxy.ca.cert");
        let e = load(&a.cert, &a.cert).unwrap_err();
        assert_eq!(e.key(), "proxy.ca.key");
        // A leaf (not a CA) is refused.
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["x.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let lp = d.path().join("leaf.pem");
        let kp = d.path().join("leaf.key");
        std::fs::write(&lp, leaf.pem()).unwrap();
        std::fs::write(&kp, key.serialize_pem()).unwrap();
        let e = load(&lp, &kp).unwrap_err();
        assert!(e.to_string().contains("not a CA"), "{e}");
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/tls/testdata")
            .join(name)
    }

    #[test]
    fn openssl_cas_load_unless_their_name_cannot_be_reproduced() {
        load(&fixture("rsa.pem"), &fixture("rsa.key")).unwrap();
        let e = load(&fixture("two-ou.pem"), &fixture("two-ou.key")).unwrap_err();
        assert_eq!(e.key(), "proxy.ca.cert");
        assert!(e.to_string().contains("repeated attributes"), "{e}");
    }

    #[test]
    fn ca_near_expiry_is_warned() {
        let d = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = ca_params(OffsetDateTime::now_utc());
        p.not_after = OffsetDateTime::now_utc() + Duration::days(5);
        let cert = p.self_signed(&key).unwrap();
        let (cp, kp) = (d.path().join("ca.pem"), d.path().join("ca.key"));
        std::fs::write(&cp, cert.pem()).unwrap();
        write_atomic(&kp, key.serialize_pem().as_bytes(), 0o600).unwrap();
        let ca = load(&cp, &kp).unwrap();
        assert!(ca.warnings[0].contains("expires in"), "{:?}", ca.warnings);
        p.not_after = OffsetDateTime::now_utc() - Duration::days(1);
        std::fs::write(&cp, p.self_signed(&key).unwrap().pem()).unwrap();
        let e = load(&cp, &kp).unwrap_err();
        assert!(e.to_string().contains("validity"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn readable_key_is_warned() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let c = init(d.path(), false).unwrap();
        std::fs::set_permissions(&c.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let ca = load(&c.cert, &c.key).unwrap();
        assert!(ca.key_exposed.unwrap().contains("chmod 600"));
    }
}
