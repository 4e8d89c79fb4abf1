//! The framework's ceiling for benchmarks: a bare pingora 0.9.1 proxy that sends every
//! request to one fixed origin and adds one header, nothing else.
//! `cargo run --release --example bare_pingora -- LISTEN ORIGIN [THREADS] [--tls CERT KEY]`
//! e.g. `... -- 127.0.0.1:9200 127.0.0.1:9100 1`
//!
//! With `--tls` it terminates TLS with the PEM certificate and key given and speaks TLS to
//! the origin, offering HTTP/2 first as credproxy does (the origin's certificate is not
//! verified: the bench origin's is self-signed, and a kept connection verifies only once):
//! the framework's ceiling for an intercepted HTTPS request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::{HttpPeer, ProxyHttp, Result, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

struct Bare {
    origin: std::net::SocketAddr,
    tls: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        if !self.tls {
            return Ok(Box::new(HttpPeer::new(self.origin, false, String::new())));
        }
        let mut peer = HttpPeer::new(self.origin, true, self.origin.ip().to_string());
        peer.options.verify_cert = false;
        peer.options.verify_hostname = false;
        peer.options.set_http_version(2, 1);
        peer.options.max_h2_streams = 100;
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _: &mut Session,
        req: &mut RequestHeader,
        _: &mut (),
    ) -> Result<()> {
        req.insert_header("Authorization", "Bearer bench")
    }
}

pub fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (pos, tls) = match args.iter().position(|a| a == "--tls") {
        Some(i) => {
            let files = (args.get(i + 1).cloned(), args.get(i + 2).cloned());
            let (Some(cert), Some(key)) = files else {
                panic!("--tls needs CERT and KEY");
            };
            (args[..i].to_vec(), Some((cert, key)))
        }
        None => (args, None),
    };
    let listen = pos
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:9200".into());
    let origin = pos
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:9100".into());
    let threads = pos.get(2).map_or(1, |t| t.parse().expect("threads"));
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("bare pingora on {scheme}://{listen} -> {origin}");
    serve(
        &listen,
        origin.parse().expect("origin address"),
        threads,
        tls,
    )
}

/// Runs the proxy on `listen` until the process ends (also used by benches/per_request.rs);
/// `tls` is the listener's certificate and key files, and means TLS to the origin too.
pub fn serve(
    listen: &str,
    origin: std::net::SocketAddr,
    threads: usize,
    tls: Option<(String, String)>,
) -> ! {
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let bare = Bare {
        origin,
        tls: tls.is_some(),
    };
    let mut svc = pingora::proxy::http_proxy_service(&server.configuration, bare);
    match tls {
        Some((cert, key)) => {
            let mut settings = TlsSettings::intermediate(&cert, &key).expect("TLS settings");
            settings.enable_h2();
            svc.add_tls_with_settings(listen, None, settings);
        }
        None => svc.add_tcp(listen),
    }
    server.add_service(svc);
    server.run_forever()
}
