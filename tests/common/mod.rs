//! Test harness: mock origins on port 0 that record what they received, and the real
//! credproxy binary started on a fresh config.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod redis;
pub mod relay;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};

/// Every secret value a test handed to credproxy (config literals, env values, tokens served
/// by mock endpoints). None may appear in a proxy's log (tests run it at trace level) or in
/// a response read with `raw`.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn registered_secrets() -> Vec<String> {
    SECRETS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Too short to search for without false hits.
const MIN_SECRET_LEN: usize = 6;

pub fn register_secret(s: &str) {
    let s = s.trim();
    if s.len() >= MIN_SECRET_LEN {
        let mut all = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
        if !all.iter().any(|x| x == s) {
            all.push(s.to_string());
        }
    }
}

#[track_caller]
pub fn assert_no_secret(what: &str, text: &str) {
    let all = SECRETS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for s in all {
        assert!(
            !text.contains(&s),
            "a secret ({}...) appears in {what}",
            &s[..3]
        );
    }
}

const SECRET_KEYS: &[&str] = &[
    "token",
    "password",
    "client_secret",
    "secret_access_key",
    "session_token",
    "refresh_token",
    "secret",
];

/// Registers the tokens a mock endpoint hands out (`access_token`, `refresh_token`, ...).
pub fn register_tokens_in(body: &str) {
    if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(body) {
        for k in ["access_token", "refresh_token", "id_token"] {
            if let Some(serde_json::Value::String(t)) = m.get(k) {
                register_secret(t);
            }
        }
    }
}

/// Registers the secrets written literally in a config, and the env values it references.
fn register_config_secrets(text: &str, env: &[(&str, &str)]) {
    fn walk(v: &serde_yaml::Value, key: Option<&str>, env: &[(&str, &str)]) {
        match v {
            serde_yaml::Value::Mapping(m) => {
                for (k, v) in m {
                    let k = k.as_str();
                    if k == Some("headers") {
                        if let serde_yaml::Value::Mapping(h) = v {
                            h.values().for_each(|hv| walk(hv, Some("secret"), env));
                        }
                        continue;
                    }
                    walk(v, k, env);
                }
            }
            serde_yaml::Value::Sequence(s) => s.iter().for_each(|x| walk(x, key, env)),
            serde_yaml::Value::String(s) if key.is_some_and(|k| SECRET_KEYS.contains(&k)) => {
                match s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                    Some(var) => env
                        .iter()
                        .filter(|(k, _)| *k == var)
                        .for_each(|(_, v)| register_secret(v)),
                    None => match s.strip_prefix("file:") {
                        // Absolute paths (tests write secret files to temp dirs).
                        Some(path) => {
                            if let Ok(text) = std::fs::read_to_string(path) {
                                register_secret(&text);
                            }
                        }
                        None => register_secret(s),
                    },
                }
            }
            _ => {}
        }
    }
    if let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(text) {
        walk(&v, None, env);
    }
    for (k, v) in env {
        if k.contains("KEY") || k.contains("SECRET") || k.contains("TOKEN") {
            register_secret(v);
        }
    }
}

/// One request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<binary>").to_string())
    }
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("").to_string())
            .collect()
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A mock origin. Answers 200 with `{"path", "body_sha256", "body_len"}`; `/status/NNN` answers NNN.
pub struct Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    rt: tokio::runtime::Runtime,
}

pub struct TlsFiles {
    pub ca_pem: PathBuf,
    pub dir: tempfile::TempDir,
    pub server: Arc<rustls::ServerConfig>,
}

/// A CA and a leaf for localhost / 127.0.0.1, written to a temp dir.
pub fn test_tls() -> TlsFiles {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "credproxy test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let mut server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsFiles {
        ca_pem,
        dir,
        server: Arc::new(server),
    }
}

pub type Responder = Arc<dyn Fn(&Seen) -> TokenReply + Send + Sync>;

async fn handle(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    responder: Option<Responder>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path().to_string();
    let entry = Seen {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        version: parts.version,
        headers: parts.headers,
        body: body.clone(),
    };
    if let Some(r) = responder {
        let reply = r(&entry);
        seen.lock().unwrap().push(entry);
        tokio::time::sleep(reply.delay).await;
        let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
        *resp.status_mut() = http::StatusCode::from_u16(reply.status).unwrap();
        resp.headers_mut()
            .insert("content-type", reply.content_type.parse().unwrap());
        return Ok(resp);
    }
    seen.lock().unwrap().push(entry);
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(200);
    let json = format!(
        "{{\"path\":\"{}\",\"body_len\":{},\"body_sha256\":\"{}\"}}",
        path,
        body.len(),
        sha256_hex(&body)
    );
    let mut resp = Response::new(Full::new(Bytes::from(json)));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(resp)
}

impl Origin {
    pub fn start() -> Origin {
        Self::start_inner(None, None)
    }

    pub fn start_tls(tls: Arc<rustls::ServerConfig>) -> Origin {
        Self::start_inner(Some(tls), None)
    }

    pub fn start_with(responder: Responder) -> Origin {
        Self::start_inner(None, Some(responder))
    }

    fn start_inner(tls: Option<Arc<rustls::ServerConfig>>, responder: Option<Responder>) -> Origin {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (s, c) = (seen.clone(), connections.clone());
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                let tls = tls.clone();
                let responder = responder.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(req, s.clone(), responder.clone())
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(cfg) => {
                            let Ok(tls) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                            else {
                                return;
                            };
                            let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                        }
                    }
                });
            }
        });
        Origin {
            addr,
            seen,
            connections,
            rt,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("origin saw no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A port nothing listens on now, never handed out twice in one test binary: tests run in
/// parallel, and a proxy given a port another test's proxy holds would fail to bind while its
/// readiness check was answered by the other one.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A port that refuses connections for as long as the socket lives: bound, never listening,
/// so no other test can take it meanwhile.
pub fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_credproxy")
}

/// The real credproxy binary on a config written to a temp dir.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    env: Vec<(String, String)>,
}

impl Proxy {
    /// `body` holds `credentials:` and `routes:`; listen and admin ports are chosen here.
    pub fn start(body: &str) -> Proxy {
        Self::start_with("", body, &[])
    }

    /// `proxy_extra` is indented into the `proxy:` section (e.g. "unmatched: deny").
    pub fn start_with(proxy_extra: &str, body: &str, env: &[(&str, &str)]) -> Proxy {
        let mut last_log = String::new();
        for _ in 0..3 {
            match Self::try_start(proxy_extra, body, env) {
                Ok(p) => return p,
                Err(log) => last_log = log,
            }
        }
        panic!("credproxy did not become ready; log:\n{last_log}");
    }

    fn try_start(proxy_extra: &str, body: &str, env: &[(&str, &str)]) -> Result<Proxy, String> {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin_port) = (free_port(), free_port());
        let mut extra: String = proxy_extra.lines().map(|l| format!("  {l}\n")).collect();
        if !proxy_extra.contains("egress") {
            // The mocks listen on loopback, which the egress guard refuses by default.
            extra.push_str("  egress: { allow: [127.0.0.0/8, \"::1/128\"] }\n");
        }
        let text = format!("proxy:\n  listen: 127.0.0.1:{port}\n  admin: 127.0.0.1:{admin_port}\n  threads: 2\n{extra}{body}");
        let conf = dir.path().join("credentials.yaml");
        register_config_secrets(&text, env);
        std::fs::write(&conf, text).unwrap();
        let log = dir.path().join("proxy.log");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = spawn(&conf, &log, &env);
        let p = Proxy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            dir,
            log,
            env,
        };
        p.wait_ready()
    }

    /// Stops the process and starts it again on the same config, state and ports.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut last = String::new();
        for _ in 0..3 {
            self.child = spawn(&self.config_path(), &self.log, &self.env);
            match self.wait_ready_ref() {
                Ok(()) => return,
                Err(log) => last = log,
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("credproxy did not come back; log:\n{last}");
    }

    fn wait_ready(mut self) -> Result<Proxy, String> {
        self.wait_ready_ref().map(|()| self)
    }

    fn wait_ready_ref(&mut self) -> Result<(), String> {
        let p = self;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = http_get(p.admin, "/readyz") {
                return Ok(());
            }
            if let Ok(Some(_)) = p.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = p.child.kill();
        Err(p.log_text())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("credentials.yaml")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `INT`, `HUP`) to the process.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    /// Its exit status once it has exited, waiting at most `max` (a bound, not a timing).
    pub fn wait_exit(&mut self, max: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + max;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A reqwest client that uses this proxy for http:// URLs.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(self.url()).unwrap())
            .build()
            .unwrap()
    }

    pub fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").unwrap().1
    }

    /// An unlabelled counter's value from `/metrics`.
    pub fn counter(&self, name: &str) -> Option<u64> {
        metric(&self.metrics(), &format!("{name} "))
    }

    /// Metrics once they contain every `needle`: request counters are written in pingora's
    /// logging phase, just after the client has its response. Bounded: 5 s, then as they are.
    pub fn metrics_with(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let m = self.metrics();
            if needles.iter().all(|n| m.contains(n)) || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- credproxy log ----\n{}", self.log_text());
        } else {
            assert_no_secret("the proxy log", &self.log_text());
        }
    }
}

/// Runs the binary on `conf`, logging (appending) to `log`.
fn spawn(conf: &std::path::Path, log: &std::path::Path, env: &[(String, String)]) -> Child {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("run")
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(logf);
    cmd.env(
        "RUST_LOG",
        // Every test runs the proxy at trace level: its log is scanned for secrets.
        std::env::var("CREDPROXY_TEST_LOG").unwrap_or_else(|_| "trace".into()),
    );
    cmd.env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Sends raw bytes and reads the whole answer (the request should say `Connection: close`).
pub fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    assert_no_secret("a response", &text);
    text
}

/// A CONNECT tunnel through the proxy to `authority`, its 200 read (and nothing after it).
/// Reads time out after 20 s, so a test waiting for the proxy to close cannot hang.
pub fn connect_tunnel(proxy: SocketAddr, authority: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 39];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head[..], b"HTTP/1.1 200 Connection Established\r\n\r\n");
    s
}

/// A minimal GET for admin endpoints: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// An empty POST to the admin listener; returns the raw response.
pub fn admin_post(addr: SocketAddr, path: &str) -> String {
    raw(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

/// Status line code of a raw response.
pub fn status_of(resp: &str) -> u16 {
    resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

pub fn header_of(resp: &str, name: &str) -> Option<String> {
    let head = resp.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

pub fn body_of(resp: &str) -> String {
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// A child process, killed when dropped, and the port it listens on.
pub struct Server {
    pub child: std::process::Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (up to 30 s) until something accepts connections on the loopback `port`.
pub fn wait_listening(port: u16) {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on {port}");
}

/// moto in server mode (real implementations of S3, Secrets Manager, SSM, STS) on a free port.
pub fn moto_server() -> Server {
    let port = free_port();
    let child = std::process::Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto_server (pip install 'moto[server]'; .ci/setup does)");
    wait_listening(port);
    Server { child, port }
}

/// A runtime with a thread of its own (its tasks run while the test blocks elsewhere) and a
/// loopback listener on a free port, for origins a test writes itself.
pub fn background_listener() -> (tokio::runtime::Runtime, tokio::net::TcpListener, u16) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    (rt, listener, port)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What the mock token endpoint answers.
#[derive(Clone)]
pub struct TokenReply {
    pub status: u16,
    pub body: String,
    pub content_type: &'static str,
    pub delay: Duration,
}

impl TokenReply {
    pub fn ok(token: &str, expires_in: &str) -> Self {
        register_secret(token);
        TokenReply {
            status: 200,
            body: format!("{{\"access_token\":\"{token}\",\"token_type\":\"Bearer\",\"expires_in\":{expires_in}}}"),
            content_type: "application/json",
            delay: Duration::ZERO,
        }
    }
    pub fn raw(status: u16, body: &str, content_type: &'static str) -> Self {
        register_tokens_in(body);
        TokenReply {
            status,
            body: body.to_string(),
            content_type,
            delay: Duration::ZERO,
        }
    }
}

/// A mock OAuth2 token endpoint on port 0 that records every request.
pub struct TokenServer {
    pub origin: Origin,
    reply: Arc<Mutex<TokenReply>>,
}

impl TokenServer {
    pub fn start(reply: TokenReply) -> TokenServer {
        let reply = Arc::new(Mutex::new(reply));
        let r = reply.clone();
        let origin = Origin::start_with(Arc::new(move |_seen: &Seen| r.lock().unwrap().clone()));
        TokenServer { origin, reply }
    }
    /// A token endpoint that refuses every request and quotes what it received (the
    /// Authorization header and the body) in `error_description`, as careless ones do.
    pub fn echoing() -> TokenServer {
        let reply = Arc::new(Mutex::new(TokenReply::raw(401, "{}", "application/json")));
        let origin = Origin::start_with(Arc::new(|seen: &Seen| {
            let quoted = format!(
                "got authorization=[{}] body=[{}]",
                seen.header("authorization").unwrap_or_default(),
                String::from_utf8_lossy(&seen.body)
            );
            let body = serde_json::json!({"error": "invalid_client", "error_description": quoted});
            TokenReply {
                status: 401,
                body: body.to_string(),
                content_type: "application/json",
                delay: Duration::ZERO,
            }
        }));
        TokenServer { origin, reply }
    }

    pub fn set(&self, reply: TokenReply) {
        *self.reply.lock().unwrap() = reply;
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.origin.port())
    }
    pub fn requests(&self) -> Vec<Seen> {
        self.origin.seen()
    }
}

/// One browser step: GET `url` (with our cookie, if any); status, Location, Set-Cookie, body.
pub fn browse(url: &str, cookie: Option<&str>) -> (u16, Option<String>, Option<String>, String) {
    let u = url::Url::parse(url).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], u.port().unwrap()));
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\n{cookie}Connection: close\r\n\r\n",
        u.authority()
    );
    let resp = raw(addr, req.as_bytes());
    let set_cookie =
        header_of(&resp, "set-cookie").map(|c| c.split(';').next().unwrap_or("").to_string());
    (
        status_of(&resp),
        header_of(&resp, "location"),
        set_cookie,
        body_of(&resp),
    )
}

/// An admin API call with the admin token: status and body.
pub fn admin_as(p: &Proxy, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = raw(p.admin, req.as_bytes());
    (status_of(&resp), body_of(&resp))
}

/// The value of `key` in `url`'s query.
pub fn query_value(url: &str, key: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key} in {url}"))
        .1
        .to_string()
}

/// A raw HTTP/1.1 client on one keep-alive connection to the proxy (forward-proxy form).
pub struct KeepAliveClient {
    s: TcpStream,
    r: std::io::BufReader<TcpStream>,
}

impl KeepAliveClient {
    pub fn new(proxy: SocketAddr) -> KeepAliveClient {
        let s = TcpStream::connect(proxy).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = std::io::BufReader::new(s.try_clone().unwrap());
        KeepAliveClient { s, r }
    }

    /// (status, body) of one GET to the origin on `port`, the connection kept open.
    pub fn get(&mut self, port: u16, path: &str) -> (u16, String) {
        use std::io::BufRead;
        write!(
            self.s,
            "GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        )
        .unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut len = 0;
        loop {
            let mut h = String::new();
            self.r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    }
}

/// The value of the first sample in Prometheus text `m` whose line starts with `prefix` (a
/// name and a space, or a name and the start of its labels).
pub fn metric(m: &str, prefix: &str) -> Option<u64> {
    m.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
