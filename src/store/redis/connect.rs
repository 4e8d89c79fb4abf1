//! Keeping the fleet connected: connect (one node or a Cluster, TLS against the system roots
//! plus `proxy.upstream_ca`), listen on the events channel, ping every second, and notice
//! when Redis lost its data, restoring this replica's refresh-token chains into it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::StreamExt;
use redis::aio::ConnectionManagerConfig;
use redis::{IntoConnectionInfo, TlsCertificates};

use super::{Conn, Message, RedisState, COMMAND_TIMEOUT, PING_EVERY};
use crate::secret::Secret;
use crate::store::sealed_file::SealedFile;
use crate::store::{ChainId, Event, Link, SharedState};

/// Runs until `shutdown` turns true: (re)connects, watches, restores.
pub async fn run(state: Arc<RedisState>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut listener: Option<tokio::task::JoinHandle<()>> = None;
    let mut said_down = false;
    loop {
        if state.conn.load().is_none() {
            match connect(&state).await {
                Ok(c) => state.conn.store(Some(Arc::new(c))),
                Err(e) if !said_down => {
                    tracing::warn!("shared state (Redis) unreachable, serving from this replica's own cache until it is back: {e}");
                    said_down = true;
                }
                Err(_) => {}
            }
        }
        if listener.as_ref().is_none_or(|l| l.is_finished()) {
            listener = Some(tokio::spawn(listen(state.clone())));
        }
        if ping(&state).await {
            if said_down || !state.up.swap(true, Ordering::Relaxed) {
                tracing::info!(prefix = %state.settings.prefix, "shared state (Redis) is reachable");
            }
            said_down = false;
            check_epoch(&state).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(PING_EVERY) => {}
            _ = shutdown.changed() => break,
        }
    }
    if let Some(l) = listener {
        l.abort();
    }
}

async fn ping(state: &RedisState) -> bool {
    let Ok(conn) = state.conn() else { return false };
    match conn.query::<String>(&redis::cmd("PING")).await {
        Ok(_) => true,
        Err(e) => {
            let _ = state.fail(e);
            false
        }
    }
}

fn infos(state: &RedisState) -> redis::RedisResult<Vec<redis::ConnectionInfo>> {
    let s = &state.settings;
    s.urls
        .iter()
        .map(|u| {
            let info = u.expose().into_connection_info()?;
            let mut redis_info = info.redis_settings().clone();
            if let Some(p) = &s.password {
                redis_info = redis_info.set_password(p.expose());
            }
            if let Some(user) = &s.username {
                redis_info = redis_info.set_username(user);
            }
            Ok(info.set_redis_settings(redis_info))
        })
        .collect()
}

fn tls(state: &RedisState) -> Option<TlsCertificates> {
    let tls = state
        .settings
        .urls
        .iter()
        .any(|u| u.expose().starts_with("rediss://"));
    (tls && state.roots_pem.is_some()).then(|| TlsCertificates {
        client_tls: None,
        root_cert: state.roots_pem.clone(),
    })
}

fn client(state: &RedisState, info: redis::ConnectionInfo) -> redis::RedisResult<redis::Client> {
    match tls(state) {
        Some(certs) => redis::Client::build_with_tls(info, certs),
        None => redis::Client::open(info),
    }
}

async fn connect(state: &RedisState) -> redis::RedisResult<Conn> {
    let infos = infos(state)?;
    if state.settings.cluster {
        let mut b = redis::cluster::ClusterClientBuilder::new(infos)
            .connection_timeout(COMMAND_TIMEOUT)
            .response_timeout(COMMAND_TIMEOUT)
            .retries(2);
        if let Some(certs) = tls(state) {
            b = b.certs(certs);
        }
        let conn = tokio::time::timeout(COMMAND_TIMEOUT * 2, b.build()?.get_async_connection())
            .await
            .map_err(|_| super::timeout_error())??;
        return Ok(Conn::Cluster(conn));
    }
    let info = infos.into_iter().next().ok_or_else(super::timeout_error)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(2);
    let client = client(state, info)?;
    let fut = client.get_connection_manager_with_config(config);
    let conn = tokio::time::timeout(COMMAND_TIMEOUT * 2, fut)
        .await
        .map_err(|_| super::timeout_error())??;
    Ok(Conn::Single(conn))
}

/// Follows the events channel until the connection ends (then `run` starts a new listener).
async fn listen(state: Arc<RedisState>) {
    let Ok(infos) = infos(&state) else { return };
    for info in infos {
        let Ok(client) = client(&state, info) else {
            continue;
        };
        let Ok(Ok(mut pubsub)) =
            tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub()).await
        else {
            continue;
        };
        if pubsub.subscribe(state.channel()).await.is_err() {
            continue;
        }
        // Whatever was published while this replica was not listening is read again.
        let _ = state.events.send(Event::Resync);
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            deliver(&state, msg.get_payload_bytes());
        }
        return;
    }
    tokio::time::sleep(PING_EVERY).await;
}

fn deliver(state: &RedisState, payload: &[u8]) {
    match serde_json::from_slice::<Message>(payload) {
        Ok(Message::Published { key }) => {
            let _ = state.published.send(key);
        }
        Ok(Message::Invalidate { credential, tenant }) => {
            let _ = state.events.send(Event::Invalidate {
                credential: credential.into(),
                tenant: tenant.map(Into::into),
            });
        }
        Ok(Message::Connection { credential, tenant }) => {
            let _ = state.events.send(Event::Connection {
                credential: credential.into(),
                tenant: tenant.into(),
            });
        }
        Err(e) => tracing::debug!("unreadable message on the events channel: {e}"),
    }
}

/// Notices when Redis lost its data (its dataset marker is gone or new), and restores this
/// replica's chains into it so the fleet does not fall back to refresh tokens already spent.
async fn check_epoch(state: &RedisState) {
    let Ok(conn) = state.conn() else { return };
    let key = format!("{}:epoch", state.settings.prefix);
    let mut set = redis::cmd("SET");
    let fresh = crate::credentials::jwt_key_pair::random_id();
    set.arg(&key).arg(&fresh).arg("NX");
    if conn.query::<Option<String>>(&set).await.is_err() {
        return;
    }
    let mut get = redis::cmd("GET");
    get.arg(&key);
    let Ok(Some(now)) = conn.query::<Option<String>>(&get).await else {
        return;
    };
    let wiped = {
        let Ok(mut e) = state.epoch.lock() else {
            return;
        };
        let wiped = e.0.as_ref().is_some_and(|seen| *seen != now);
        e.0 = Some(now);
        if wiped {
            e.1 = Some(tokio::time::Instant::now());
        }
        wiped
    };
    if wiped {
        tracing::warn!("shared state (Redis) lost its data: restoring this replica's refresh-token chains and connections into it");
        restore_chains(state).await;
        let _ = state.events.send(Event::Resync);
    }
}

/// Chain files: `state_dir/CREDENTIAL.state`, and `state_dir/tenants/TENANT/CREDENTIAL.state`
/// for tenants' connections.
fn chain_files(state: &RedisState) -> Vec<(String, Option<String>)> {
    let names = |dir: &std::path::Path| -> Vec<String> {
        let Ok(d) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        d.flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.strip_suffix(".state")
                    .filter(|n| !n.starts_with('.'))
                    .map(str::to_string)
            })
            .collect()
    };
    let mut out: Vec<(String, Option<String>)> = names(&state.state_dir)
        .into_iter()
        .map(|c| (c, None))
        .collect();
    let tenants = state.state_dir.join("tenants");
    for t in std::fs::read_dir(&tenants).into_iter().flatten().flatten() {
        let tenant = t.file_name().to_string_lossy().to_string();
        out.extend(
            names(&t.path())
                .into_iter()
                .map(|c| (c, Some(tenant.clone()))),
        );
    }
    out
}

async fn restore_chains(state: &RedisState) {
    for (credential, tenant) in chain_files(state) {
        let credential = credential.as_str();
        let key = &state.settings.key;
        let file = match &tenant {
            Some(t) => SealedFile::for_tenant(&state.state_dir, credential, t, key),
            None => SealedFile::new(&state.state_dir, credential, key),
        };
        let Ok(file) = file else {
            continue;
        };
        let Ok(Some(saved)) = file.load() else {
            continue;
        };
        let id = ChainId {
            credential: credential.into(),
            tenant: tenant.map(Into::into),
            seed_sha256: saved.seed_sha256,
        };
        let link = Link {
            refresh_token: Secret::new(saved.refresh_token),
            version: saved.version,
        };
        if let Err(e) = state.seed(&id, &link).await {
            tracing::warn!(credential, "could not restore the refresh-token chain: {e}");
        }
    }
}
