//! Assembles the pingora server: the proxy listener (front door + HTTP proxy), the admin
//! listener and the SIGHUP reload task, then runs until a shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::app::App;
use crate::config::Config;
use crate::connections::connect::ConnectApp;
use crate::proxy::connect::Front;
use crate::proxy::{Connections, CredProxy, OwnListeners};
use crate::sources::Sources;

struct Sighup {
    app: Arc<App>,
}

#[async_trait]
impl BackgroundService for Sighup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot install SIGHUP handler; use POST /reload");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => { let _ = self.app.reload().await; }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Reads secret sources again when they are due, and rebuilds credentials whose values
/// changed.
struct SecretRefresh {
    app: Arc<App>,
}

#[async_trait]
impl BackgroundService for SecretRefresh {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.app.refresh_secrets().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// After SIGTERM (pingora has stopped the listeners): waits until the proxy's client
/// connections, tunnels among them, have finished, or `proxy.shutdown_grace` has passed, and
/// exits 0 then, rather than sleeping out a fixed grace period.
struct Drain {
    app: Arc<App>,
    grace: std::time::Duration,
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() || !*shutdown.borrow() {
            return;
        }
        let started = std::time::Instant::now();
        let open = || self.app.metrics.client_connections.get();
        tracing::info!(
            open = open(),
            grace_s = self.grace.as_secs_f64(),
            "SIGTERM: not accepting new connections; letting open ones finish"
        );
        while open() > 0 && started.elapsed() < self.grace {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        match open() {
            0 => tracing::info!(
                after_ms = started.elapsed().as_millis() as u64,
                "shutdown: every connection finished; exiting"
            ),
            n => tracing::warn!(
                open = n,
                "shutdown: proxy.shutdown_grace elapsed with connections still open; exiting"
            ),
        }
        if let Some(o) = &self.app.otel {
            o.flush();
        }
        std::process::exit(0);
    }
}

/// Logs what a newcomer needs to know at startup, each problem once: the config's warnings
/// (unavailable credentials among them), what is off, what is unsafe.
pub fn log_startup(cfg: &Config) {
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    if cfg.proxy.ca.is_none() && cfg.routes.iter().any(|r| r.upstream.is_none()) {
        tracing::warn!("no proxy.ca: injection into HTTPS is off; CONNECT to routed hosts is tunnelled untouched (run `credproxy ca init` and set proxy.ca to intercept them); plain HTTP and sidecar routes are injected");
    }
    if !cfg.proxy.egress.deny_private {
        tracing::warn!("proxy.egress.deny_private is false: clients can reach loopback, private and cloud metadata addresses (169.254.169.254) through credproxy");
    }
    if !cfg.proxy.listen.ip().is_loopback() && cfg.clients.is_none() {
        tracing::error!(listen = %cfg.proxy.listen, "INSECURE: listening on a non-loopback address without `clients:`: anyone who can reach this port can use every credential; configure `clients:` or listen on 127.0.0.1");
    }
}

/// The one line that ends startup: where it listens, and whether HTTPS is intercepted.
fn ready_line(cfg: &Config) -> String {
    let admin = cfg.proxy.admin.map_or("off".to_string(), |a| a.to_string());
    let https = match &cfg.proxy.interceptor {
        Some(i) => format!(
            "HTTPS interception on (CA SHA-256 {})",
            i.ca().fingerprint()
        ),
        None => "HTTPS interception off (no proxy.ca)".to_string(),
    };
    let connect = cfg
        .proxy
        .connect
        .as_ref()
        .map(|c| format!(", connect flow on {} ({})", c.listen, c.public_url))
        .unwrap_or_default();
    let per_tenant = cfg
        .credentials
        .iter()
        .filter(|c| c.template().is_some())
        .count();
    let tenants = match per_tenant {
        0 => String::new(),
        n => format!(" ({n} per tenant)"),
    };
    format!(
        "credproxy ready: proxy on {}, admin on {admin}{connect}; {https}; {} routes, {} credentials{tenants}",
        cfg.proxy.listen,
        cfg.routes.len(),
        cfg.credentials.len()
    )
}

/// Says `ready_line` once the proxy listener accepts connections.
struct StartupReport {
    app: Arc<App>,
}

#[async_trait]
impl BackgroundService for StartupReport {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let cfg = self.app.config();
        let addr = crate::admin::connectable(cfg.proxy.listen);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                tracing::info!("{}", ready_line(&cfg));
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tracing::error!(listen = %cfg.proxy.listen, "the proxy listener did not come up within 5 s");
    }
}

/// Keeps the fleet's Redis connected (see `store::redis`).
struct FleetLink {
    state: Arc<crate::store::redis::RedisState>,
}

#[async_trait]
impl BackgroundService for FleetLink {
    async fn start(&self, shutdown: ShutdownWatch) {
        crate::store::redis::run(self.state.clone(), shutdown).await;
    }
}

/// Applies other replicas' events to this replica's token cache.
struct FleetFollow {
    app: Arc<App>,
}

#[async_trait]
impl BackgroundService for FleetFollow {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.app.follow_fleet(shutdown).await;
    }
}

/// Exits (status 1, one error line) when a listener address cannot be bound.
fn check_listeners(cfg: &Config) {
    let mut addrs = vec![(cfg.proxy.listen, "proxy.listen")];
    addrs.extend(cfg.proxy.admin.map(|a| (a, "proxy.admin")));
    addrs.extend(
        cfg.proxy
            .connect
            .as_ref()
            .map(|c| (c.listen, "proxy.connect.listen")),
    );
    for (addr, key) in addrs {
        if let Err(e) = crate::ports::check_free(addr, key) {
            tracing::error!("{e}");
            std::process::exit(1);
        }
    }
}

/// Downstream connection bounds pingora applies itself (startup values; not reloaded).
fn server_options(cfg: &Config) -> pingora::apps::HttpServerOptions {
    let mut o = pingora::apps::HttpServerOptions::default();
    // An HTTP/2 client inside an intercepted tunnel that goes quiet is closed like an
    // HTTP/1.1 one between requests.
    o.h2_idle_timeout = Some(cfg.proxy.timeouts.client_idle);
    // Connections are recycled now and then, bounding per-connection memory.
    o.keepalive_request_limit = Some(10_000);
    // A CONNECT after another request on a connection reaches our hooks (which refuse it
    // with an explanation) instead of pingora's bare 405.
    o.allow_connect_method_proxying = true;
    o
}

/// Runs the proxy until SIGTERM/SIGINT. Never returns.
pub fn run(cfg: Config, config_path: std::path::PathBuf, sources: Sources) -> ! {
    log_startup(&cfg);
    check_listeners(&cfg);
    let p = &cfg.proxy;
    let (threads, grace) = (p.threads, p.shutdown_grace);
    let mut own = vec![(p.listen, "proxy")];
    own.extend(p.admin.map(|a| (a, "admin")));
    own.extend(p.connect.as_ref().map(|c| (c.listen, "connect")));
    let app = match App::new(cfg, config_path, sources) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!("{e}");
            std::process::exit(1);
        }
    };
    let conf = ServerConf {
        threads,
        // `Drain` exits as soon as the proxy is idle; pingora's own grace period is only the
        // backstop behind it.
        grace_period_seconds: Some(grace.as_secs() + 2),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    add_listeners(&mut server, &app, own);
    add_background(&mut server, app, grace);
    server.run_forever()
}

/// The proxy (front door and HTTP proxy), admin and connect listeners, at `own` addresses.
fn add_listeners(server: &mut Server, app: &Arc<App>, own: Vec<(SocketAddr, &'static str)>) {
    let addr = |name: &str| {
        own.iter()
            .find(|(_, n)| *n == name)
            .map(|(a, _)| a.to_string())
    };
    let (listen, admin, connect) = (addr("proxy"), addr("admin"), addr("connect"));
    let conns = Arc::new(Connections::new(&app.metrics, OwnListeners(own)));
    let mut proxy = pingora::proxy::http_proxy(
        &server.configuration,
        CredProxy {
            app: app.clone(),
            conns: conns.clone(),
        },
    );
    proxy.server_options = Some(server_options(&app.config()));
    let front = Front {
        http: Arc::new(proxy),
        app: app.clone(),
        conns,
    };
    let mut front = Service::new("credproxy proxy".to_string(), front);
    front.add_tcp(&listen.unwrap_or_default());
    server.add_service(front);
    if let Some(addr) = admin {
        let mut admin = Service::new(
            "credproxy admin".to_string(),
            HttpServer::new_app(Admin { app: app.clone() }),
        );
        admin.add_tcp(&addr);
        server.add_service(admin);
    }
    if let Some(addr) = connect {
        let mut connect = Service::new(
            "credproxy connect".to_string(),
            HttpServer::new_app(ConnectApp { app: app.clone() }),
        );
        connect.add_tcp(&addr);
        server.add_service(connect);
    }
}

/// The fleet link and events, the startup report, the drain at shutdown, and SIGHUP.
fn add_background(server: &mut Server, app: Arc<App>, grace: std::time::Duration) {
    if let Some(state) = app.fleet.clone() {
        server.add_service(background_service("fleet link", FleetLink { state }));
        let follow = FleetFollow { app: app.clone() };
        server.add_service(background_service("fleet events", follow));
    }
    let report = StartupReport { app: app.clone() };
    server.add_service(background_service("startup report", report));
    let drain = Drain {
        app: app.clone(),
        grace,
    };
    server.add_service(background_service("drain", drain));
    let secrets = SecretRefresh { app: app.clone() };
    server.add_service(background_service("secret sources", secrets));
    server.add_service(background_service("sighup reload", Sighup { app }));
}
