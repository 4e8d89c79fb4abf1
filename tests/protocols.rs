//! What workflows send beyond request/response: server-sent events that must arrive as they are
//! sent, WebSocket upgrades, and responses that echo the injected secret (`scrub_responses`).
//! Plain (HTTP_PROXY) and intercepted (HTTPS_PROXY) paths alike.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{mpsc, Notify};

const KEY: &str = "sk_live_reflected_0123456789abcdef";

type Body = StreamBody<tokio_stream_like::Rx>;

/// A receiver of body frames as a `Stream` (no tokio-stream dependency for one adapter).
mod tokio_stream_like {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct Rx(pub mpsc::Receiver<Bytes>);

    impl futures_util::Stream for Rx {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }
}

/// An origin whose answers stream: `/events` sends one event, waits for `gate`, sends a
/// second; `/echo` reflects the request's `Authorization` in a header and in a body written in
/// two parts cut inside the secret; `/gzip` claims a gzip body.
struct StreamOrigin {
    port: u16,
    gate: Arc<Notify>,
    _rt: tokio::runtime::Runtime,
}

impl StreamOrigin {
    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> StreamOrigin {
        let (rt, listener, port) = background_listener();
        let gate = Arc::new(Notify::new());
        let g = gate.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (g, tls) = (g.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(req, g.clone()));
                    let b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(cfg) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = b.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                    }
                });
            }
        });
        StreamOrigin {
            port,
            gate,
            _rt: rt,
        }
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    gate: Arc<Notify>,
) -> Result<Response<Body>, Infallible> {
    let (tx, rx) = mpsc::channel(4);
    let mut resp = Response::new(StreamBody::new(tokio_stream_like::Rx(rx)));
    let header = |req: &Request<_>, n: &str| {
        req.headers()
            .get(n)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    match req.uri().path() {
        "/events" => {
            resp.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"data: one\n\n")).await;
                gate.notified().await;
                let _ = tx.send(Bytes::from_static(b"data: two\n\n")).await;
            });
        }
        path => {
            let auth = header(&req, "authorization");
            let body = format!(
                "{{\"you_sent\":\"{auth}\",\"accept_encoding\":\"{}\"}}",
                header(&req, "accept-encoding")
            );
            let h = resp.headers_mut();
            h.insert("content-type", "application/json".parse().unwrap());
            h.insert("content-length", body.len().to_string().parse().unwrap());
            h.insert("x-echo", auth.parse().unwrap());
            if path == "/gzip" {
                h.insert("content-encoding", "gzip".parse().unwrap());
            }
            // Cut in the middle of the secret, sent as two writes some time apart.
            let cut = body.find(KEY).map_or(body.len() / 2, |i| i + KEY.len() / 2);
            let (a, b) = body.split_at(cut);
            let (a, b) = (Bytes::from(a.to_string()), Bytes::from(b.to_string()));
            tokio::spawn(async move {
                let _ = tx.send(a).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
                let _ = tx.send(b).await;
            });
        }
    }
    Ok(resp)
}

fn proxy_for(port: u16, route_extra: &str, proxy_extra: &str) -> Proxy {
    let body = format!(
        "credentials:\n  stripe: {{ type: bearer, token: \"${{STRIPE_KEY}}\" }}\nroutes:\n  - {{ host: \"127.0.0.1:{port}\", credential: stripe{route_extra} }}\n  - {{ host: \"localhost:{port}\", credential: stripe{route_extra} }}\n"
    );
    Proxy::start_with(proxy_extra, &body, &[("STRIPE_KEY", KEY)])
}

/// Reads a streamed response until `needle` arrives; panics after 10 s without it.
async fn read_until(resp: &mut reqwest::Response, seen: &mut String, needle: &str) {
    let wait = tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains(needle) {
            match resp.chunk().await.unwrap() {
                Some(c) => seen.push_str(&String::from_utf8_lossy(&c)),
                None => break,
            }
        }
    });
    wait.await
        .expect("the event did not arrive while the stream was open");
    assert!(
        seen.contains(needle),
        "stream ended without {needle}: {seen}"
    );
}

/// The first event reaches the client while the origin is still holding the second back.
fn assert_events_stream(client: reqwest::Client, url: String, gate: &Notify) {
    runtime().block_on(async {
        let mut resp = client.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut seen = String::new();
        read_until(&mut resp, &mut seen, "data: one").await;
        assert!(!seen.contains("data: two"));
        gate.notify_one();
        read_until(&mut resp, &mut seen, "data: two").await;
    });
}

/// credproxy's CA (made with `ca init`) and the config lines that use it, with the origin's CA
/// trusted upstream.
fn ca_config(dir: &Path, origin_ca: &Path) -> String {
    let ca = dir.join("ca");
    let out = Command::new(bin())
        .args(["ca", "init", "--dir"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    format!(
        "ca: {{ cert: {}, key: {} }}\nupstream_ca: {}\n",
        ca.join("ca.pem").display(),
        ca.join("ca.key").display(),
        origin_ca.display()
    )
}

/// A client that sends https:// through the proxy and trusts only credproxy's CA in `dir`.
fn intercepting_client(proxy: &Proxy, dir: &Path) -> reqwest::Client {
    let ca = std::fs::read(dir.join("ca/ca.pem")).unwrap();
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::https(proxy.url()).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap()
}

#[test]
fn server_sent_events_arrive_as_sent_on_the_plain_path() {
    let origin = StreamOrigin::start(None);
    let proxy = proxy_for(origin.port, "", "");
    let url = format!("http://127.0.0.1:{}/events", origin.port);
    assert_events_stream(proxy.client(), url, &origin.gate);
}

#[test]
fn server_sent_events_arrive_as_sent_through_interception() {
    let tls = test_tls();
    let origin = StreamOrigin::start(Some(tls.server.clone()));
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(origin.port, "", &ca_config(dir.path(), &tls.ca_pem));
    let client = intercepting_client(&proxy, dir.path());
    let url = format!("https://localhost:{}/events", origin.port);
    assert_events_stream(client, url, &origin.gate);
}

/// GET through the proxy; (status, x-echo, body).
fn fetch(client: &reqwest::Client, url: &str) -> (u16, String, String) {
    runtime().block_on(async {
        let r = client.get(url).send().await.unwrap();
        let status = r.status().as_u16();
        let echo = r
            .headers()
            .get("x-echo")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, echo, r.text().await.unwrap())
    })
}

#[test]
fn an_echoed_secret_is_replaced_by_its_placeholder_across_chunks() {
    let origin = StreamOrigin::start(None);
    let proxy = proxy_for(origin.port, ", scrub_responses: true", "");
    let url = format!("http://127.0.0.1:{}/echo", origin.port);
    let (status, echo, body) = fetch(&proxy.client(), &url);
    assert_eq!(status, 200, "{body}");
    assert_no_secret("the scrubbed header", &echo);
    assert_no_secret("the scrubbed body", &body);
    assert_eq!(echo, "Bearer credproxy:stripe");
    assert_eq!(
        body,
        "{\"you_sent\":\"Bearer credproxy:stripe\",\"accept_encoding\":\"identity\"}"
    );
}

#[test]
fn without_scrub_responses_the_answer_is_untouched() {
    let origin = StreamOrigin::start(None);
    let proxy = proxy_for(origin.port, "", "");
    let url = format!("http://127.0.0.1:{}/echo", origin.port);
    let (status, echo, body) = fetch(&proxy.client(), &url);
    assert_eq!(status, 200);
    // Compared without printing: the secret stays out of test output.
    assert!(
        echo == format!("Bearer {KEY}"),
        "x-echo was not the injected header"
    );
    assert!(
        body.contains(KEY),
        "the body did not carry the injected token"
    );
}

#[test]
fn an_echoed_secret_is_scrubbed_through_interception() {
    let tls = test_tls();
    let origin = StreamOrigin::start(Some(tls.server.clone()));
    let dir = tempfile::tempdir().unwrap();
    let extra = ca_config(dir.path(), &tls.ca_pem);
    let proxy = proxy_for(origin.port, ", scrub_responses: true", &extra);
    let client = intercepting_client(&proxy, dir.path());
    let url = format!("https://localhost:{}/echo", origin.port);
    let (status, echo, body) = fetch(&client, &url);
    assert_eq!(status, 200, "{body}");
    assert_no_secret("the scrubbed body", &body);
    assert_eq!(echo, "Bearer credproxy:stripe");
    assert!(
        body.contains("\"you_sent\":\"Bearer credproxy:stripe\""),
        "{body}"
    );
}

#[test]
fn a_compressed_answer_on_a_scrubbed_route_is_refused_not_passed() {
    let origin = StreamOrigin::start(None);
    let proxy = proxy_for(origin.port, ", scrub_responses: true", "");
    let url = format!("http://127.0.0.1:{}/gzip", origin.port);
    let (status, _, body) = fetch(&proxy.client(), &url);
    assert_eq!(status, 502, "{body}");
    assert_no_secret("the refusal", &body);
    assert!(body.contains("Content-Encoding: gzip"), "{body}");
}

/// A self-signed certificate for localhost, written as (cert, key) PEM files.
fn self_signed_localhost(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_pem, key_pem) = (dir.join("origin.pem"), dir.join("origin.key"));
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    (cert_pem, key_pem)
}

/// Runs one of the Python checks in tests/; asserts it succeeded and printed no secret.
fn python(script: &str, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = Command::new("python3")
        .arg(path)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("python3 with its modules (.ci/setup)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secret(script, &text);
    assert!(out.status.success(), "{script}: {text}");
    text
}

/// Runs tests/websocket_check.py (python websockets, client and server) through credproxy,
/// interception on, whose route injects `Bearer WS_TOKEN` for localhost: `ws` speaks plain HTTP
/// inside the CONNECT tunnel, `wss` TLS (to an origin with its own self-signed certificate).
fn websocket_through(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = self_signed_localhost(dir.path());
    let extra = ca_config(dir.path(), &cert_pem);
    let body = "credentials:\n  ws: { type: bearer, token: \"${WS_TOKEN}\" }\nroutes:\n  - { host: localhost, credential: ws }\n";
    let proxy = Proxy::start_with(&extra, body, &[("WS_TOKEN", KEY)]);
    let ca = dir.path().join("ca/ca.pem");
    let url = proxy.url();
    let args = [
        mode.as_ref(),
        url.as_ref(),
        ca.as_os_str(),
        cert_pem.as_os_str(),
        key_pem.as_os_str(),
    ];
    let text = python("websocket_check.py", &args, &[("WS_TOKEN", KEY)]);
    assert!(text.contains("ok"), "{text}\n{}", proxy.log_text());
}

#[test]
fn websocket_through_a_tunnel_speaking_plain_http() {
    websocket_through("ws");
}

#[test]
fn websocket_through_interception() {
    websocket_through("wss");
}

#[test]
fn grpc_through_interception_unary_streaming_trailers_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = self_signed_localhost(dir.path());
    let extra = ca_config(dir.path(), &cert_pem);
    let body = "credentials:\n  rpc: { type: bearer, token: \"${GRPC_TOKEN}\" }\nroutes:\n  - { host: localhost, credential: rpc }\n";
    let proxy = Proxy::start_with(&extra, body, &[("GRPC_TOKEN", KEY)]);
    let ca = dir.path().join("ca/ca.pem");
    let url = proxy.url();
    let args = [
        url.as_ref(),
        ca.as_os_str(),
        cert_pem.as_os_str(),
        key_pem.as_os_str(),
    ];
    let text = python("grpc_check.py", &args, &[("GRPC_TOKEN", KEY)]);
    assert!(text.contains("ok"), "{text}\n{}", proxy.log_text());
    // The note of issue 18 quotes this line.
    eprintln!(
        "{}",
        text.lines().find(|l| l.starts_with("rate")).unwrap_or("")
    );
}
