//! `mtls` credentials: a client certificate presented on the upstream TLS connection, to an
//! origin that requires one and reports which it got. Alone or with a header credential on the
//! same route, and never shared: pooled connections are kept per certificate, even when two
//! certificates carry the same serial number.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A CA that signs both the origin's certificate and the clients'.
struct Pki {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "mtls test CA");
        let cert = ca.self_signed(&key).unwrap();
        Pki {
            issuer: rcgen::Issuer::new(ca, key),
            ca_pem: cert.pem(),
        }
    }

    /// (cert PEM, key PEM) for `cn`, with a chosen serial number.
    fn issue(&self, cn: &str, names: &[&str], serial: u64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut p = rcgen::CertificateParams::new(names).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.serial_number = Some(rcgen::SerialNumber::from(serial));
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn der_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

/// An HTTPS origin that requires a client certificate from `pki` and answers with its CN and
/// the Authorization it received.
fn origin(pki: &Pki) -> (u16, tokio::runtime::Runtime) {
    use rustls::pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (cert, key) = pki.issue("origin", &["localhost"], 99);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der_certs(&pki.ca_pem).remove(0)).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(der_certs(&cert), key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let (rt, listener, port) = background_listener();
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return; // no certificate, or an unknown one
                };
                let cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first().cloned())
                    .map(|c| {
                        let (_, x) = x509_parser::parse_x509_certificate(&c).unwrap();
                        let cn = x.subject().iter_common_name().next();
                        cn.and_then(|n| n.as_str().ok()).unwrap_or("").to_string()
                    })
                    .unwrap_or_default();
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    let body = format!("cn={cn} auth={auth}");
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                });
                let b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = b.serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    (port, rt)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Two client certificates with the same serial, the origin, and credproxy intercepting for
/// localhost: /a/* presents `client-a` with a bearer token, /b/* `client-b` alone, /none/*
/// nothing.
fn setup() -> (
    Proxy,
    reqwest::Client,
    u16,
    tempfile::TempDir,
    tokio::runtime::Runtime,
) {
    let pki = Pki::new();
    let (port, rt) = origin(&pki);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a_cert, a_key) = pki.issue("client-a", &[], 1);
    let (b_cert, b_key) = pki.issue("client-b", &[], 1);
    let (a_cert, a_key) = (write(d, "a.pem", &a_cert), write(d, "a.key", &a_key));
    let (b_cert, b_key) = (write(d, "b.pem", &b_cert), write(d, "b.key", &b_key));
    let ca_file = write(d, "pki-ca.pem", &pki.ca_pem);
    let out = Command::new(bin())
        .args(["ca", "init", "--dir"])
        .arg(d.join("ca"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let extra = format!(
        "ca: {{ cert: {0}/ca/ca.pem, key: {0}/ca/ca.key }}\nupstream_ca: {ca_file}\n",
        d.display()
    );
    let body = format!(
        "credentials:
  cert-a: {{ type: mtls, cert: \"file:{a_cert}\", key: \"file:{a_key}\" }}
  cert-b: {{ type: mtls, cert: \"file:{b_cert}\", key: \"file:{b_key}\" }}
  token: {{ type: bearer, token: \"${{MTLS_TOKEN}}\" }}
routes:
  - {{ host: \"localhost:{port}\", path: \"/a/*\", credentials: [cert-a, token] }}
  - {{ host: \"localhost:{port}\", path: \"/b/*\", credential: cert-b }}
  - {{ host: \"localhost:{port}\", path: \"/none/*\", credential: token }}
"
    );
    let proxy = Proxy::start_with(&extra, &body, &[("MTLS_TOKEN", "mtls-bearer-token-1")]);
    let ca = std::fs::read(d.join("ca/ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::https(proxy.url()).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    (proxy, client, port, dir, rt)
}

fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    runtime().block_on(async {
        let r = client.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

#[test]
fn each_route_presents_its_own_certificate_and_never_another() {
    let (proxy, client, port, _dir, _rt) = setup();
    // Interleaved, so a pooled connection made for one would be picked for the other if the
    // pool were keyed by the serial number alone.
    for _ in 0..5 {
        let (s, body) = get(&client, &format!("https://localhost:{port}/a/x"));
        assert_eq!(s, 200, "{body}\n{}", proxy.log_text());
        assert_eq!(body, "cn=client-a auth=Bearer mtls-bearer-token-1");
        let (s, body) = get(&client, &format!("https://localhost:{port}/b/x"));
        assert_eq!(s, 200, "{body}");
        assert_eq!(body, "cn=client-b auth=none");
    }
}

#[test]
fn an_origin_that_requires_a_certificate_refuses_a_route_without_one() {
    let (_proxy, client, port, _dir, _rt) = setup();
    let (s, body) = get(&client, &format!("https://localhost:{port}/none/x"));
    assert_eq!(s, 502, "{body}");
    assert!(body.contains("TLS") || body.contains("upstream"), "{body}");
}
