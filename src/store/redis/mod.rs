//! The Redis backend of `SharedState`, for a fleet of replicas.
//!
//! Keys (one credential's keys share a hash tag, so they live in one Cluster slot; no key
//! holds a secret, only names and keyed digests):
//!
//! - `{prefix}:{cred|tenant}:token:<digest>`  a sealed token, expiring with it;
//! - `...:lease:<digest>` / `...:fence:<digest>`  who fetches it now, and its fencing number;
//! - `...:chain:<digest>`  a refresh-token chain: `v` (version, clear) and `d` (sealed link);
//!   `...:chain:<digest>:redeeming`  who is redeeming its link now (the process's random
//!   owner id, with a time-to-live; a commit ends it);
//! - `{prefix}:{connections}`  tenants' connections, field `credential|tenant`, value sealed;
//!   `...:rev` the revision of each (a change older than the fleet's is not applied);
//! - `{prefix}:once:<kind>:<digest>`  connect links and OAuth states, taken once (GETDEL);
//! - `{prefix}:epoch`  a random marker: gone or changed means Redis lost its data;
//! - channel `{prefix}:events`  published tokens and invalidations, for every replica.
//!
//! Every value is sealed with AES-256-GCM under `CREDPROXY_STATE_KEY`, its associated data
//! naming prefix, kind, credential, tenant and digest (and a chain's version), so a value
//! copied to another key does not open.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Script};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::seal::Sealer;
use super::{
    ChainId, Claim, Commit, Event, Health, Lease, Link, SharedState, SharedToken, StoreError,
    StoredConnection, TokenId,
};
use crate::config::SharedStateSettings;
use crate::secret::Secret;

/// How long one command may take before Redis counts as unreachable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the connection is checked (and a lost dataset noticed).
const PING_EVERY: Duration = Duration::from_secs(1);
/// After Redis lost its data, chains wait this long for every replica to restore what it
/// holds before any is redeemed again.
const RESTORE_GRACE: Duration = Duration::from_secs(3);
/// How long a write that must survive a failover waits for a replica's acknowledgement.
const WAIT_REPLICA: Duration = Duration::from_millis(100);

/// A lease waiter re-checks at least this often (pub/sub usually wakes it sooner).
const POLL: Duration = Duration::from_millis(100);

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A Redis call, given up after `COMMAND_TIMEOUT`.
async fn bounded<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(COMMAND_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(timeout_error()))
}

impl Conn {
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> redis::RedisResult<T> {
        bounded(async {
            match self.clone() {
                Conn::Single(mut c) => cmd.query_async(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
            }
        })
        .await
    }

    /// Runs a Lua script by its SHA-1, sending its text only when the server does not have
    /// it. Not redis-rs's `Script::invoke`: on a Cluster that loads a missing script with
    /// SCRIPT LOAD on every node, replicas included, so one stalled replica held each first
    /// use of a script for the whole command timeout. EVAL goes to the key's master only.
    async fn script<T: FromRedisValue>(
        &self,
        lua: &Lua,
        keys: &[&str],
        args: &[Vec<u8>],
    ) -> redis::RedisResult<T> {
        let call = |verb: &str, first: &str| {
            let mut cmd = redis::cmd(verb);
            cmd.arg(first).arg(keys.len());
            for k in keys {
                cmd.arg(*k);
            }
            for a in args {
                cmd.arg(a.as_slice());
            }
            cmd
        };
        match self.query(&call("EVALSHA", &lua.sha)).await {
            Err(e) if e.code() == Some("NOSCRIPT") => self.query(&call("EVAL", lua.code)).await,
            other => other,
        }
    }

    /// Whether a write to `key` reached a replica (Cluster), so a failover cannot lose it;
    /// `None` when there is nothing to wait for (one server; a master without replicas).
    /// WAIT holds this connection, which every request to that master shares, so it is asked
    /// only of a master with replicas and for at most `WAIT_REPLICA`.
    async fn wait_replicated(&self, key: &str) -> Option<bool> {
        let Conn::Cluster(c) = self else { return None };
        let route = redis::cluster_routing::RoutingInfo::SingleNode(
            redis::cluster_routing::SingleNodeRoutingInfo::SpecificNode(
                redis::cluster_routing::Route::new(
                    hash_slot(key.as_bytes()),
                    redis::cluster_routing::SlotAddr::Master,
                ),
            ),
        );
        let mut c = c.clone();
        let role = bounded(c.route_command(redis::cmd("ROLE"), route.clone())).await;
        if let Ok(redis::Value::Array(v)) = &role {
            if matches!(v.get(2), Some(redis::Value::Array(r)) if r.is_empty()) {
                return None;
            }
        }
        let mut wait = redis::cmd("WAIT");
        wait.arg(1).arg(WAIT_REPLICA.as_millis() as u64);
        let acked = bounded(c.route_command(wait, route)).await;
        Some(matches!(acked, Ok(redis::Value::Int(n)) if n >= 1))
    }
}

fn timeout_error() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer within 2s",
    ))
}

/// The Redis Cluster slot of a key (CRC16/XMODEM of its hash tag, modulo 16384).
fn hash_slot(key: &[u8]) -> u16 {
    let tag = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &b in tag {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// A token as sealed into Redis.
#[derive(Serialize, Deserialize)]
struct SealedToken {
    h: String,
    f: u64,
    r: u64,
    e: u64,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";
/// Sets the token (expiring with it) and releases the lease if it is still ours.
const PUBLISH: &str = "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end return 1";
/// Compare-and-swap on the chain's version: -1 when committed, else the current version.
/// The commit ends the redemption intent (`KEYS[2]`) of the link it replaces.
const COMMIT: &str = "local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0') if v ~= tonumber(ARGV[1]) then return v end redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3]) redis.call('DEL', KEYS[2]) return -1";
/// A redemption intent on the chain's link `ARGV[1]` for owner `ARGV[2]`, `ARGV[3]` ms:
/// 2 when taken (or already ours), 1 when another owner's is live, 0 when the chain is not
/// at that version.
const CLAIM: &str = "local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1') if v ~= tonumber(ARGV[1]) then return 0 end local o = redis.call('GET', KEYS[2]) if o and o ~= ARGV[2] then return 1 end redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) return 2";
/// Sets a connection unless the fleet's revision is as new or newer: 1 when set.
const PUT_CONNECTION: &str = "local r = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1') if r >= tonumber(ARGV[3]) then return 0 end redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) return 1";
/// Sets the chain if absent or older (a restore after Redis lost data); returns the version.
/// A newer link ends the intent on the older one.
const SEED: &str = "local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1') if v < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2]) redis.call('DEL', KEYS[2]) return tonumber(ARGV[1]) end return v";

/// The fleet's shared state in Redis.
pub struct RedisState {
    settings: SharedStateSettings,
    sealer: Sealer,
    /// PEM of the system roots plus `proxy.upstream_ca`, for `rediss://` (None: system roots).
    roots_pem: Option<Vec<u8>>,
    /// Where this replica's sealed chain files are, restored into Redis after it lost data.
    state_dir: PathBuf,
    conn: ArcSwapOption<Conn>,
    up: AtomicBool,
    /// Writes a replica did not acknowledge (see `Conn::wait_replicated`).
    unreplicated: AtomicU64,
    /// Redemption claims refused because another replica holds the link (see `claim`).
    claims_refused: AtomicU64,
    /// The dataset marker this replica saw, and when Redis was last found to have lost data.
    epoch: Mutex<(Option<String>, Option<Instant>)>,
    events: broadcast::Sender<Event>,
    /// Token keys published (from the events channel), for lease waiters.
    published: broadcast::Sender<String>,
    scripts: Scripts,
}

/// A Lua script's text and its SHA-1, made once (see `Conn::script`).
struct Lua {
    code: &'static str,
    sha: String,
}

impl Lua {
    fn new(code: &'static str) -> Lua {
        let sha = Script::new(code).get_hash().to_string();
        Lua { code, sha }
    }
}

struct Scripts {
    release: Lua,
    renew: Lua,
    publish: Lua,
    commit: Lua,
    claim: Lua,
    seed: Lua,
    put_connection: Lua,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("prefix", &self.settings.prefix)
            .field("cluster", &self.settings.cluster)
            .finish_non_exhaustive()
    }
}

/// The events channel's messages.
#[derive(Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum Message {
    Published {
        key: String,
    },
    Invalidate {
        credential: String,
        tenant: Option<String>,
    },
    Connection {
        credential: String,
        tenant: String,
    },
}

impl RedisState {
    pub fn new(
        settings: SharedStateSettings,
        state_dir: PathBuf,
        roots_pem: Option<Vec<u8>>,
    ) -> Option<Self> {
        let sealer = Sealer::new(&settings.key)?;
        Some(RedisState {
            settings,
            sealer,
            roots_pem,
            state_dir,
            conn: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            unreplicated: AtomicU64::new(0),
            claims_refused: AtomicU64::new(0),
            epoch: Mutex::new((None, None)),
            events: broadcast::channel(256).0,
            published: broadcast::channel(256).0,
            scripts: Scripts {
                release: Lua::new(RELEASE),
                renew: Lua::new(RENEW),
                publish: Lua::new(PUBLISH),
                commit: Lua::new(COMMIT),
                claim: Lua::new(CLAIM),
                seed: Lua::new(SEED),
                put_connection: Lua::new(PUT_CONNECTION),
            },
        })
    }

    fn tag(&self, credential: &str, tenant: Option<&str>) -> String {
        format!(
            "{}:{{{}|{}}}",
            self.settings.prefix,
            credential,
            tenant.unwrap_or("-")
        )
    }

    fn digest(&self, kind: &str, parts: &[&[u8]]) -> String {
        let mut data = kind.as_bytes().to_vec();
        for p in parts {
            data.push(0);
            data.extend_from_slice(p);
        }
        hex(&Sealer::digest(&self.settings.key, &data)[..12])
    }

    fn token_keys(&self, id: &TokenId) -> (String, String, String) {
        let target = id.target.as_deref().unwrap_or("").as_bytes();
        let d = self.digest("token", &[&id.identity, target]);
        let tag = self.tag(&id.credential, id.tenant.as_deref());
        (
            format!("{tag}:token:{d}"),
            format!("{tag}:lease:{d}"),
            format!("{tag}:fence:{d}"),
        )
    }

    fn chain_key(&self, id: &ChainId) -> String {
        let d = self.digest("chain", &[id.seed_sha256.as_bytes()]);
        format!(
            "{}:chain:{d}",
            self.tag(&id.credential, id.tenant.as_deref())
        )
    }

    /// The chain's redemption intent (same hash tag: one slot with the chain).
    fn intent_key(chain_key: &str) -> String {
        format!("{chain_key}:redeeming")
    }

    fn aad(&self, kind: &str, credential: &str, tenant: Option<&str>, key: &str) -> Vec<u8> {
        format!(
            "credproxy|{}|{kind}|{credential}|{}|{key}",
            self.settings.prefix,
            tenant.unwrap_or("-")
        )
        .into_bytes()
    }

    /// The connections hash and the hash of their revisions (one hash tag: one slot).
    fn connection_keys(&self) -> (String, String) {
        let p = &self.settings.prefix;
        (
            format!("{p}:{{connections}}"),
            format!("{p}:{{connections}}:rev"),
        )
    }

    fn seal_connection(&self, c: &StoredConnection) -> Result<Vec<u8>, StoreError> {
        let (key, _) = self.connection_keys();
        let aad = self.aad("connection", &c.credential, Some(&c.tenant), &key);
        self.sealer
            .seal(&aad, &c.doc)
            .ok_or_else(|| StoreError::Unsealable(c.credential.clone()))
    }

    fn open_connection(
        &self,
        field: &str,
        revision: u64,
        sealed: &[u8],
    ) -> Result<StoredConnection, StoreError> {
        let (key, _) = self.connection_keys();
        let (credential, tenant) = field.split_once('|').unwrap_or((field, ""));
        let aad = self.aad("connection", credential, Some(tenant), &key);
        let doc = self
            .sealer
            .open(&aad, sealed)
            .ok_or_else(|| StoreError::Unsealable(format!("{credential} (tenant {tenant})")))?;
        Ok(StoredConnection {
            credential: credential.into(),
            tenant: tenant.into(),
            revision,
            doc,
        })
    }

    fn once_key(&self, kind: &str, id: &str) -> String {
        let d = self.digest("once", &[kind.as_bytes(), id.as_bytes()]);
        format!("{}:once:{kind}:{d}", self.settings.prefix)
    }

    fn channel(&self) -> String {
        format!("{}:events", self.settings.prefix)
    }

    fn conn(&self) -> Result<Arc<Conn>, StoreError> {
        self.conn
            .load_full()
            .ok_or_else(|| StoreError::Unreachable("not connected yet".into()))
    }

    /// Writes since start that a replica of their master did not acknowledge in time: each
    /// could be lost if that master failed over at once (metric
    /// `credproxy_shared_state_unreplicated_writes_total`).
    pub fn unreplicated_writes(&self) -> u64 {
        self.unreplicated.load(Ordering::Relaxed)
    }

    /// Claims refused because another replica was redeeming the same link (one per 250 ms
    /// poll while waiting; `credproxy_shared_state_claims_refused_total`).
    pub fn claims_refused(&self) -> u64 {
        self.claims_refused.load(Ordering::Relaxed)
    }

    async fn replicated(&self, conn: &Conn, key: &str) {
        if conn.wait_replicated(key).await == Some(false) {
            self.unreplicated.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                key,
                "a write that must survive a failover (a rotated refresh token, a connection) \
                 was not acknowledged by a replica within {} ms",
                WAIT_REPLICA.as_millis()
            );
        }
    }

    /// Maps a Redis failure, marking the state unreachable until the next good ping.
    fn fail(&self, e: redis::RedisError) -> StoreError {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!("shared state (Redis) became unreachable: {e}");
        }
        StoreError::Unreachable(e.to_string())
    }

    async fn send(&self, msg: &Message) {
        let Ok(conn) = self.conn() else { return };
        let Ok(payload) = serde_json::to_string(msg) else {
            return;
        };
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.channel()).arg(payload);
        if let Err(e) = conn.query::<i64>(&cmd).await {
            tracing::debug!("publish on the events channel failed: {e}");
        }
    }
}

#[async_trait]
impl SharedState for RedisState {
    fn shared(&self) -> bool {
        true
    }

    fn health(&self) -> Health {
        if self.up.load(Ordering::Relaxed) {
            Health::Up
        } else {
            Health::Unreachable
        }
    }

    async fn token(&self, id: &TokenId) -> Result<Option<SharedToken>, StoreError> {
        let conn = self.conn()?;
        let (key, _, _) = self.token_keys(id);
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let Some(sealed): Option<Vec<u8>> = conn.query(&get).await.map_err(|e| self.fail(e))?
        else {
            return Ok(None);
        };
        let aad = self.aad("token", &id.credential, id.tenant.as_deref(), &key);
        let t: SealedToken = self
            .sealer
            .open(&aad, &sealed)
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(|| StoreError::Unsealable(id.credential.to_string()))?;
        Ok(Some(SharedToken {
            header: Secret::new(t.h),
            fetched_at: at(t.f),
            refresh_at: at(t.r),
            expires_at: at(t.e),
        }))
    }

    async fn lease(&self, id: &TokenId, ttl: Duration) -> Result<Lease, StoreError> {
        let conn = self.conn()?;
        let (_, lease, fence) = self.token_keys(id);
        let mut incr = redis::cmd("INCR");
        incr.arg(&fence);
        let n: u64 = conn.query(&incr).await.map_err(|e| self.fail(e))?;
        let mut set = redis::cmd("SET");
        set.arg(&lease)
            .arg(n)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        let got: Option<String> = conn.query(&set).await.map_err(|e| self.fail(e))?;
        Ok(match got {
            Some(_) => Lease::Held { fence: n },
            None => Lease::Busy,
        })
    }

    async fn renew(&self, id: &TokenId, fence: u64, ttl: Duration) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        let (_, lease, _) = self.token_keys(id);
        let args = [
            fence.to_string().into_bytes(),
            (ttl.as_millis() as u64).to_string().into_bytes(),
        ];
        let n: i64 = conn
            .script(&self.scripts.renew, &[&lease], &args)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(n == 1)
    }

    async fn publish(
        &self,
        id: &TokenId,
        token: &SharedToken,
        fence: u64,
    ) -> Result<(), StoreError> {
        let conn = self.conn()?;
        let (key, lease, _) = self.token_keys(id);
        let ttl = token
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if ttl.is_zero() {
            return self.release(id, fence).await;
        }
        let plain = serde_json::to_vec(&SealedToken {
            h: token.header.expose().to_string(),
            f: millis(token.fetched_at),
            r: millis(token.refresh_at),
            e: millis(token.expires_at),
        })
        .unwrap_or_default();
        let aad = self.aad("token", &id.credential, id.tenant.as_deref(), &key);
        let sealed = self
            .sealer
            .seal(&aad, &plain)
            .ok_or_else(|| StoreError::Unsealable(id.credential.to_string()))?;
        let args = [
            sealed,
            (ttl.as_millis().max(1) as u64).to_string().into_bytes(),
            fence.to_string().into_bytes(),
        ];
        conn.script::<i64>(&self.scripts.publish, &[&key, &lease], &args)
            .await
            .map_err(|e| self.fail(e))?;
        self.send(&Message::Published { key }).await;
        Ok(())
    }

    async fn release(&self, id: &TokenId, fence: u64) -> Result<(), StoreError> {
        let conn = self.conn()?;
        let (_, lease, _) = self.token_keys(id);
        conn.script::<i64>(
            &self.scripts.release,
            &[&lease],
            &[fence.to_string().into_bytes()],
        )
        .await
        .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn wait(&self, id: &TokenId, max: Duration) {
        let (key, _, _) = self.token_keys(id);
        let mut rx = self.published.subscribe();
        let until = Instant::now() + max.min(POLL);
        loop {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Ok(k)) if k == key => return,
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                _ => return,
            }
        }
    }

    async fn invalidate(
        &self,
        credential: &Arc<str>,
        tenant: Option<&Arc<str>>,
        id: Option<&TokenId>,
    ) -> Result<(), StoreError> {
        let conn = self.conn()?;
        if let Some(id) = id {
            let (key, _, _) = self.token_keys(id);
            let mut del = redis::cmd("DEL");
            del.arg(&key);
            conn.query::<i64>(&del).await.map_err(|e| self.fail(e))?;
        }
        self.send(&Message::Invalidate {
            credential: credential.to_string(),
            tenant: tenant.map(|t| t.to_string()),
        })
        .await;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    async fn chain(&self, id: &ChainId) -> Result<Option<Link>, StoreError> {
        if self.restoring() {
            return Err(StoreError::Unreachable(
                "Redis lost its data moments ago: waiting for replicas to restore rotated refresh tokens".into(),
            ));
        }
        let conn = self.conn()?;
        let key = self.chain_key(id);
        let mut get = redis::cmd("HMGET");
        get.arg(&key).arg("v").arg("d");
        let (v, d): (Option<u64>, Option<Vec<u8>>) =
            conn.query(&get).await.map_err(|e| self.fail(e))?;
        let (Some(version), Some(sealed)) = (v, d) else {
            return Ok(None);
        };
        self.open_link(id, &key, version, &sealed).map(Some)
    }

    async fn commit(&self, id: &ChainId, prev: u64, next: &Link) -> Result<Commit, StoreError> {
        let conn = self.conn()?;
        let key = self.chain_key(id);
        let sealed = self.seal_link(id, &key, next)?;
        let args = [
            prev.to_string().into_bytes(),
            next.version.to_string().into_bytes(),
            sealed,
        ];
        let r: i64 = conn
            .script(
                &self.scripts.commit,
                &[&key, &Self::intent_key(&key)],
                &args,
            )
            .await
            .map_err(|e| self.fail(e))?;
        if r >= 0 {
            return Ok(Commit::Stale {
                current: u64::try_from(r).unwrap_or(0),
            });
        }
        self.replicated(&conn, &key).await;
        Ok(Commit::Done)
    }

    async fn seed(&self, id: &ChainId, link: &Link) -> Result<Option<Link>, StoreError> {
        let conn = self.conn()?;
        let key = self.chain_key(id);
        let sealed = self.seal_link(id, &key, link)?;
        let args = [link.version.to_string().into_bytes(), sealed];
        let v: i64 = conn
            .script(&self.scripts.seed, &[&key, &Self::intent_key(&key)], &args)
            .await
            .map_err(|e| self.fail(e))?;
        if u64::try_from(v).is_ok_and(|v| v == link.version) {
            self.replicated(&conn, &key).await;
            return Ok(Some(link.clone()));
        }
        self.chain(id).await
    }

    async fn claim(
        &self,
        id: &ChainId,
        version: u64,
        owner: &str,
        ttl: Duration,
    ) -> Result<Claim, StoreError> {
        let conn = self.conn()?;
        let key = self.chain_key(id);
        let args = [
            version.to_string().into_bytes(),
            owner.as_bytes().to_vec(),
            ttl.as_millis().to_string().into_bytes(),
        ];
        let intent = Self::intent_key(&key);
        let r: i64 = conn
            .script(&self.scripts.claim, &[&key, &intent], &args)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(match r {
            2 => {
                // A failover must not lose the claim any more than the commit it guards.
                self.replicated(&conn, &intent).await;
                Claim::Mine
            }
            1 => {
                self.claims_refused.fetch_add(1, Ordering::Relaxed);
                Claim::Busy
            }
            _ => Claim::Stale,
        })
    }

    async fn unclaim(&self, id: &ChainId, owner: &str) -> Result<(), StoreError> {
        let conn = self.conn()?;
        let intent = Self::intent_key(&self.chain_key(id));
        conn.script::<i64>(
            &self.scripts.release,
            &[&intent],
            &[owner.as_bytes().to_vec()],
        )
        .await
        .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn drop_chain(&self, id: &ChainId) -> Result<(), StoreError> {
        self.drop_chain_key(id).await
    }

    async fn connections(&self) -> Result<Option<Vec<StoredConnection>>, StoreError> {
        self.all_connections().await.map(Some)
    }

    async fn connection(
        &self,
        credential: &str,
        tenant: &str,
    ) -> Result<Option<StoredConnection>, StoreError> {
        self.one_connection(credential, tenant).await
    }

    async fn put_connection(&self, c: &StoredConnection) -> Result<bool, StoreError> {
        self.store_connection(c).await
    }

    async fn put_once(
        &self,
        kind: &str,
        id: &str,
        doc: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.put_once_value(kind, id, doc, ttl).await
    }

    async fn take_once(&self, kind: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.take_once_value(kind, id).await
    }
}

impl RedisState {
    pub(super) async fn drop_chain_key(&self, id: &ChainId) -> Result<(), StoreError> {
        let conn = self.conn()?;
        let key = self.chain_key(id);
        let mut del = redis::cmd("DEL");
        del.arg(&key).arg(Self::intent_key(&key));
        conn.query::<i64>(&del).await.map_err(|e| self.fail(e))?;
        Ok(())
    }

    pub(super) async fn all_connections(&self) -> Result<Vec<StoredConnection>, StoreError> {
        let conn = self.conn()?;
        let (key, rev) = self.connection_keys();
        let mut get = redis::cmd("HGETALL");
        get.arg(&key);
        let docs: std::collections::HashMap<String, Vec<u8>> =
            conn.query(&get).await.map_err(|e| self.fail(e))?;
        let mut get = redis::cmd("HGETALL");
        get.arg(&rev);
        let revs: std::collections::HashMap<String, u64> =
            conn.query(&get).await.map_err(|e| self.fail(e))?;
        let mut out = Vec::with_capacity(docs.len());
        for (field, sealed) in docs {
            let r = revs.get(&field).copied().unwrap_or(0);
            match self.open_connection(&field, r, &sealed) {
                Ok(c) => out.push(c),
                Err(e) => tracing::warn!("skipped a shared connection: {e}"),
            }
        }
        Ok(out)
    }

    pub(super) async fn one_connection(
        &self,
        credential: &str,
        tenant: &str,
    ) -> Result<Option<StoredConnection>, StoreError> {
        let conn = self.conn()?;
        let (key, rev) = self.connection_keys();
        let field = format!("{credential}|{tenant}");
        let mut get = redis::cmd("HGET");
        get.arg(&key).arg(&field);
        let sealed: Option<Vec<u8>> = conn.query(&get).await.map_err(|e| self.fail(e))?;
        let mut get = redis::cmd("HGET");
        get.arg(&rev).arg(&field);
        let r: Option<u64> = conn.query(&get).await.map_err(|e| self.fail(e))?;
        sealed
            .map(|s| self.open_connection(&field, r.unwrap_or(0), &s))
            .transpose()
    }

    pub(super) async fn store_connection(&self, c: &StoredConnection) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        let (key, rev) = self.connection_keys();
        let sealed = self.seal_connection(c)?;
        let args = [
            format!("{}|{}", c.credential, c.tenant).into_bytes(),
            sealed,
            c.revision.to_string().into_bytes(),
        ];
        let set: i64 = conn
            .script(&self.scripts.put_connection, &[&key, &rev], &args)
            .await
            .map_err(|e| self.fail(e))?;
        if set == 1 {
            self.replicated(&conn, &key).await;
            self.send(&Message::Connection {
                credential: c.credential.clone(),
                tenant: c.tenant.clone(),
            })
            .await;
        }
        Ok(set == 1)
    }

    pub(super) async fn put_once_value(
        &self,
        kind: &str,
        id: &str,
        doc: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let conn = self.conn()?;
        let key = self.once_key(kind, id);
        let sealed = self
            .sealer
            .seal(&self.aad("once", kind, None, &key), doc)
            .ok_or_else(|| StoreError::Unsealable(kind.to_string()))?;
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg(sealed)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        conn.query::<String>(&set).await.map_err(|e| self.fail(e))?;
        self.replicated(&conn, &key).await;
        Ok(())
    }

    pub(super) async fn take_once_value(
        &self,
        kind: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.conn()?;
        let key = self.once_key(kind, id);
        let mut getdel = redis::cmd("GETDEL");
        getdel.arg(&key);
        let sealed: Option<Vec<u8>> = conn.query(&getdel).await.map_err(|e| self.fail(e))?;
        Ok(sealed.and_then(|s| self.sealer.open(&self.aad("once", kind, None, &key), &s)))
    }

    fn chain_aad(&self, id: &ChainId, key: &str, version: u64) -> Vec<u8> {
        let mut aad = self.aad("chain", &id.credential, id.tenant.as_deref(), key);
        aad.extend_from_slice(format!("|v{version}").as_bytes());
        aad
    }

    fn seal_link(&self, id: &ChainId, key: &str, link: &Link) -> Result<Vec<u8>, StoreError> {
        self.sealer
            .seal(
                &self.chain_aad(id, key, link.version),
                link.refresh_token.expose().as_bytes(),
            )
            .ok_or_else(|| StoreError::Unsealable(id.credential.to_string()))
    }

    fn open_link(
        &self,
        id: &ChainId,
        key: &str,
        version: u64,
        sealed: &[u8],
    ) -> Result<Link, StoreError> {
        let plain = self
            .sealer
            .open(&self.chain_aad(id, key, version), sealed)
            .and_then(|p| String::from_utf8(p).ok())
            .ok_or_else(|| StoreError::Unsealable(id.credential.to_string()))?;
        Ok(Link {
            refresh_token: Secret::new(plain),
            version,
        })
    }

    /// Whether Redis lost its data too recently for every replica to have restored its chains.
    fn restoring(&self) -> bool {
        self.epoch
            .lock()
            .ok()
            .and_then(|e| e.1)
            .is_some_and(|t| t.elapsed() < RESTORE_GRACE)
    }
}

mod connect;
pub use connect::run;
