//! Process-wide state shared by the data path and the admin listener. The config is swapped
//! atomically on reload; a request takes one `Arc` of it at its start and keeps that snapshot.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{self, Config, ConfigErrors};
use crate::connections::Connections;
use crate::dns::Resolver;
use crate::metrics::Metrics;
use crate::sources::Sources;
use crate::store::redis::RedisState;
use crate::store::{Embedded, Event, SharedState};
use crate::tokens::{Retry, TokenCache};

/// Why the process-wide parts could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot set up the HTTP client for token endpoints: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot set up shared state: {0}")]
    SharedState(String),
    #[error("cannot set up OpenTelemetry export: {0}")]
    Otel(String),
}

pub struct App {
    config: ArcSwap<Config>,
    pub config_path: PathBuf,
    pub dns: Resolver,
    pub metrics: Metrics,
    pub tokens: TokenCache,
    /// Tenants' connections (`state_dir` and the state key are read at startup).
    pub connections: Connections,
    /// The fleet's Redis, when `proxy.shared_state` is set (at startup; not reloaded).
    pub fleet: Option<Arc<RedisState>>,
    /// Spans per request, when `proxy.otel` is set (at startup; not reloaded).
    pub otel: Option<crate::otel::Otel>,
    /// Runtime secret sources, read again on their schedule and at each reload.
    pub sources: Sources,
}

impl App {
    pub fn new(config: Config, config_path: PathBuf, sources: Sources) -> Result<Self, AppError> {
        let d = &config.proxy.dns;
        let dns = Resolver::new(d.ttl, d.negative_ttl, config.proxy.timeouts.connect)
            .with_overrides(d.overrides.clone());
        let fleet = fleet(&config)?;
        let shared: Arc<dyn SharedState> = match &fleet {
            Some(f) => f.clone(),
            None => Arc::new(Embedded::default()),
        };
        let tokens = token_cache(&config)?.with_shared(shared.clone());
        let p = &config.proxy;
        let connections = Connections::new(&p.state_dir, p.state_key, shared, tokens.clone());
        for problem in connections.load_files() {
            tracing::error!("a connection file cannot be read and is left untouched: {problem}");
        }
        let metrics = Metrics::new()?;
        let _ = config.metrics.set(metrics.for_config(&config));
        let otel = config.proxy.otel.as_ref().map(crate::otel::Otel::start);
        let otel = otel.transpose().map_err(AppError::Otel)?;
        Ok(App {
            config: ArcSwap::from_pointee(config),
            config_path,
            dns,
            metrics,
            tokens,
            connections,
            fleet,
            otel,
            sources,
        })
    }

    /// Acts on the fleet's events until `shutdown`: refreshes and connection changes made on
    /// other replicas, and a full comparison of connections when events may have been missed.
    pub async fn follow_fleet(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut events = self.tokens.shared().subscribe();
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = shutdown.changed() => return,
            };
            match event {
                Ok(Event::Connection { credential, tenant }) => {
                    self.connections.reread(&credential, &tenant).await
                }
                Ok(Event::Resync) => self.connections.sync().await,
                Ok(e) => self.tokens.on_event(&e),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    self.connections.sync().await
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Re-reads the config file and every secret source; a bad file keeps the running
    /// config and says why. Listener addresses and DNS settings apply only at startup.
    pub async fn reload(self: &Arc<Self>) -> Result<Arc<Config>, ConfigErrors> {
        self.sources.refresh(true).await;
        let me = self.clone();
        let loaded =
            tokio::task::spawn_blocking(move || config::load_with(&me.config_path, &me.sources))
                .await
                .unwrap_or_else(|e| Err(ConfigErrors::one(&self.config_path, e.to_string())));
        self.install(loaded, "config reloaded")
    }

    /// Reads the secret sources that are due; when a value changed (or went past
    /// `max_stale`), builds the running config's text again with the new values, so exactly
    /// the tokens made from changed secrets are fetched anew.
    pub async fn refresh_secrets(self: &Arc<Self>) {
        if !self.sources.refresh(false).await {
            return;
        }
        let me = self.clone();
        let built = tokio::task::spawn_blocking(move || {
            let text = me.config().text.clone();
            let env = |name: &str| std::env::var(name).ok();
            config::load_text(&text, &me.config_path, &env, &me.sources)
        })
        .await
        .unwrap_or_else(|e| Err(ConfigErrors::one(&self.config_path, e.to_string())));
        let _ = self.install(built, "secret source changed: credentials rebuilt");
    }

    /// Puts a newly built config in service, or keeps the running one and says why.
    fn install(
        &self,
        loaded: Result<Config, ConfigErrors>,
        done: &str,
    ) -> Result<Arc<Config>, ConfigErrors> {
        match loaded {
            Ok(c) => {
                self.sources.forget_unused();
                let _ = c.metrics.set(self.metrics.for_config(&c));
                let c = Arc::new(c);
                self.config.store(c.clone());
                self.metrics.reload("ok");
                for w in &c.warnings {
                    tracing::warn!("{w}");
                }
                tracing::info!(
                    routes = c.routes.len(),
                    credentials = c.credentials.len(),
                    "{done}"
                );
                Ok(c)
            }
            Err(e) => {
                self.metrics.reload("error");
                for err in &e.0 {
                    tracing::error!("config reload failed, keeping the running config: {err}");
                }
                Err(e)
            }
        }
    }
}

/// The fleet's shared state, from `proxy.shared_state`.
fn fleet(config: &Config) -> Result<Option<Arc<RedisState>>, AppError> {
    let Some(s) = &config.proxy.shared_state else {
        return Ok(None);
    };
    let roots = match &config.proxy.upstream_ca {
        Some(extra) => Some(crate::tls::roots::pem_bundle(extra).map_err(AppError::SharedState)?),
        None => None,
    };
    let state = RedisState::new(s.clone(), config.proxy.state_dir.clone(), roots)
        .ok_or_else(|| AppError::SharedState("CREDPROXY_STATE_KEY is unusable".into()))?;
    Ok(Some(Arc::new(state)))
}

/// The token cache with its HTTP client for token endpoints.
pub fn token_cache(config: &Config) -> Result<TokenCache, reqwest::Error> {
    let http = reqwest::Client::builder()
        .connect_timeout(config.proxy.timeouts.connect)
        .user_agent(concat!("credproxy/", env!("CARGO_PKG_VERSION")))
        // A token endpoint that redirects could send the client secret elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    Ok(TokenCache::new(
        http,
        std::time::Duration::from_secs(2),
        Retry::default(),
    ))
}
