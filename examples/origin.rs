//! A fast local origin for load measurements: answers every request with a 200 (after
//! reading its body), `POST /token` with an OAuth token (counted; `GET /token-count` tells
//! how many were asked for; `GET /conn-count` how many connections were accepted), over plain HTTP or TLS (its own self-signed certificate, also
//! written to a file for clients that check it).
//! `cargo run --release --example origin -- 127.0.0.1:9100 [--body BYTES] [--tls CERT_PEM_OUT [--h1]]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

static TOKENS: AtomicU64 = AtomicU64::new(0);
static CONNS: AtomicU64 = AtomicU64::new(0);

struct Args {
    addr: String,
    body: Bytes,
    tls_out: Option<String>,
    h1_only: bool,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        addr: "127.0.0.1:9100".into(),
        body: Bytes::from_static(b"{\"ok\":true}\n"),
        tls_out: None,
        h1_only: false,
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--body" => {
                let n: usize = it.next().expect("--body BYTES").parse().expect("bytes");
                a.body = Bytes::from(vec![b'x'; n]);
            }
            "--tls" => a.tls_out = Some(it.next().expect("--tls CERT_PEM_OUT")),
            "--h1" => a.h1_only = true,
            _ => a.addr = arg,
        }
    }
    a
}

/// A self-signed certificate for localhost and 127.0.0.1, its PEM written to `out`.
fn tls(out: &str, h1_only: bool) -> tokio_rustls::TlsAcceptor {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(out, cert.pem()).unwrap();
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)
        .unwrap();
    cfg.alpn_protocols = if h1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

async fn answer(req: Request<hyper::body::Incoming>, body: Bytes) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let _ = req.into_body().collect().await;
    match path.as_str() {
        "/token" => {
            TOKENS.fetch_add(1, Ordering::Relaxed);
            Response::new(Full::new(Bytes::from_static(
                b"{\"access_token\":\"bench-oauth-token\",\"token_type\":\"Bearer\",\"expires_in\":3600}",
            )))
        }
        "/token-count" => Response::new(Full::new(Bytes::from(
            TOKENS.load(Ordering::Relaxed).to_string(),
        ))),
        "/conn-count" => Response::new(Full::new(Bytes::from(
            CONNS.load(Ordering::Relaxed).to_string(),
        ))),
        _ => Response::new(Full::new(body)),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let a = args();
    let listener = tokio::net::TcpListener::bind(&a.addr).await.expect("bind");
    let acceptor = a.tls_out.as_deref().map(|out| tls(out, a.h1_only));
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    println!("origin on {scheme}://{}", a.addr);
    loop {
        let (stream, _) = listener.accept().await.expect("accept");
        CONNS.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (body, acceptor) = (a.body.clone(), acceptor.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(answer(req, body).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match acceptor {
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                }
                Some(acc) => {
                    if let Ok(tls) = acc.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                    }
                }
            }
        });
    }
}
