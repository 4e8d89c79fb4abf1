//! The framework's ceiling for benchmarks: a bare pingora 0.9.1 proxy that sends every
//! request to one fixed origin and adds one header, nothing else.
//! `cargo run --release --example bare_pingora -- LISTEN ORIGIN [THREADS]`
//! e.g. `... -- 127.0.0.1:9200 127.0.0.1:9100 1`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::{HttpPeer, ProxyHttp, Result, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

struct Bare {
    origin: std::net::SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.origin, false, String::new())))
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
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9200".into());
    let origin = args.next().unwrap_or_else(|| "127.0.0.1:9100".into());
    let threads = args.next().map_or(1, |t| t.parse().expect("threads"));
    println!("bare pingora on {listen} -> {origin}");
    serve(&listen, origin.parse().expect("origin address"), threads)
}

/// Runs the proxy on `listen` until the process ends (also used by benches/per_request.rs).
pub fn serve(listen: &str, origin: std::net::SocketAddr, threads: usize) -> ! {
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = pingora::proxy::http_proxy_service(&server.configuration, Bare { origin });
    svc.add_tcp(listen);
    server.add_service(svc);
    server.run_forever()
}
