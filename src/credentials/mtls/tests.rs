use super::*;
use crate::credentials::test_support::ctx;

/// A CA, and a client certificate it signed (with the given serial), as PEM texts.
struct Issued {
    ca: String,
    cert: String,
    key: String,
}

fn issue(serial: u64) -> Issued {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "partner CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "workflow-client");
    params.serial_number = Some(rcgen::SerialNumber::from(serial));
    let cert = params.signed_by(&key, &issuer).unwrap();
    Issued {
        ca: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

fn raw(dir: &std::path::Path, cert: &str, key: &str, chain: Option<&str>) -> RawMtls {
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        SecretValue::Text(crate::config::raw::SecretText(format!("file:{}", p.display())))
    };
    RawMtls {
        cert: write("cert.pem", cert),
        key: write("key.pem", key),
        chain: chain.map(|c| write("chain.pem", c)),
    }
}

fn build(r: &RawMtls) -> Result<ClientCert, BuildError> {
    ClientCert::build(r, &mut ctx())
}

fn invalid_key(e: BuildError) -> (String, String) {
    match e {
        BuildError::Invalid { key, message } => (key, message),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn a_certificate_with_its_key_and_chain_builds() {
    let d = tempfile::tempdir().unwrap();
    let i = issue(7);
    let c = build(&raw(d.path(), &i.cert, &i.key, Some(&i.ca))).unwrap();
    assert!(c.subject.contains("workflow-client"), "{}", c.subject);
    assert_eq!(c.cert_key.intermediates().len(), 1);
    assert!(c.describe().contains("mTLS"));
    assert!(!format!("{c:?}").contains("PRIVATE"));
}

#[test]
fn certificates_with_the_same_serial_get_different_pool_groups() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (issue(1), issue(1));
    let ca = build(&raw(d.path(), &a.cert, &a.key, None)).unwrap();
    let cb = build(&raw(d.path(), &b.cert, &b.key, None)).unwrap();
    assert_ne!(ca.group_key, cb.group_key);
}

#[test]
fn a_key_of_another_certificate_is_refused_at_load() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (issue(1), issue(2));
    let (key, message) = invalid_key(build(&raw(d.path(), &a.cert, &b.key, None)).unwrap_err());
    assert_eq!(key, "key");
    assert!(message.contains("does not belong"), "{message}");
}

#[test]
fn unreadable_pem_is_refused_naming_the_field() {
    let d = tempfile::tempdir().unwrap();
    let i = issue(3);
    let (key, message) = invalid_key(build(&raw(d.path(), "not a cert", &i.key, None)).unwrap_err());
    assert_eq!(key, "cert");
    assert!(message.contains("no PEM certificate"), "{message}");
    let (key, _) = invalid_key(build(&raw(d.path(), &i.cert, "nope", None)).unwrap_err());
    assert_eq!(key, "key");
    let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let (key, message) = invalid_key(build(&raw(d.path(), &i.cert, &i.key, Some(broken))).unwrap_err());
    assert_eq!(key, "chain");
    assert!(message.contains("does not parse"), "{message}");
}

#[test]
fn a_missing_file_makes_the_credential_unavailable_not_the_config_invalid() {
    let r = RawMtls {
        cert: SecretValue::Text("file:/nonexistent/cert.pem".into()),
        key: SecretValue::Text("file:/nonexistent/key.pem".into()),
        chain: None,
    };
    assert!(matches!(build(&r), Err(BuildError::Unavailable(_))));
}
