//! A fleet: replicas of the real binary sharing a real Redis (one node, and a Cluster) behave
//! as one proxy: one token request per refresh across the fleet, rotations that never fork
//! (against a provider that revokes a refresh-token family on reuse), replicas and Redis that
//! die and come back, and nothing secret in Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::{RedisCluster, RedisServer};
use common::relay::Relay;
use common::*;

const KEY: &str = "0303030303030303030303030303030303030303030303030303030303030303";
const CLIENT_SECRET: &str = "fleet-client-secret-1";

fn replicas(n: usize, redis: &str, body: &str, env: &[(&str, &str)]) -> Vec<Proxy> {
    let extra = format!("shared_state: {{ redis: {redis}, prefix: fleet-test }}\n");
    let mut env = env.to_vec();
    env.push(("CREDPROXY_STATE_KEY", KEY));
    (0..n)
        .map(|_| Proxy::start_with(&extra, body, &env))
        .collect()
}

fn cc_body(ts: &TokenServer, origin: &Origin) -> String {
    format!(
        "credentials:\n  api:\n    type: oauth2_client_credentials\n    token_url: {}\n    client_id: fleet-client\n    client_secret: \"${{CS}}\"\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: api }}\n",
        ts.url("/token"),
        origin.port()
    )
}

/// Sends `n` concurrent GETs spread over the replicas; returns the statuses.
fn storm(ps: &[Proxy], origin: &Origin, n: usize) -> Vec<u16> {
    let rt = runtime();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..n {
            let client = ps[i % ps.len()].client();
            let url = format!("http://127.0.0.1:{}/x{i}", origin.port());
            tasks.push(tokio::spawn(async move {
                client
                    .get(url)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

#[test]
fn three_replicas_and_300_cold_requests_make_one_token_request() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut reply = TokenReply::ok("fleet-token-1", "3600");
    reply.delay = Duration::from_millis(300);
    let ts = TokenServer::start(reply);
    let ps = replicas(
        3,
        &format!("\"{}\"", redis.url()),
        &cc_body(&ts, &origin),
        &[("CS", CLIENT_SECRET)],
    );
    for p in &ps {
        p.metrics_with(&["credproxy_shared_state_up 1"]);
    }
    let statuses = storm(&ps, &origin, 300);
    assert_all_ok(&ps, &statuses);
    if ts.requests().len() != 1 {
        assert_all_ok(&ps, &[0]);
    }
    assert!(origin
        .seen()
        .iter()
        .all(|s| s.header("authorization").as_deref() == Some("Bearer fleet-token-1")));
    assert_no_secret_in(&redis.dump());
}

/// No key or value in Redis holds a secret in clear.
#[track_caller]
fn assert_no_secret_in(dump: &[(String, Vec<u8>)]) {
    assert!(!dump.is_empty(), "the fleet wrote something");
    for s in registered_secrets()
        .iter()
        .chain([CLIENT_SECRET.to_string()].iter())
    {
        for (k, v) in dump {
            assert!(!k.contains(s.as_str()), "a key holds a secret: {k}");
            assert!(
                !v.windows(s.len()).any(|w| w == s.as_bytes()),
                "the value of {k} holds a secret ({}...)",
                &s[..3]
            );
        }
    }
}

/// A provider that rotates refresh tokens and, like real ones, revokes the whole family when
/// a refresh token is redeemed twice.
struct RotatingProvider {
    origin: Origin,
    state: Arc<Mutex<Family>>,
    redemptions: Arc<AtomicU32>,
    /// Something to do right after the given rotation, before the provider answers it.
    stall: Arc<Mutex<Option<Stall>>>,
}

struct Stall {
    after_rotation: u32,
    act: Box<dyn FnOnce() + Send>,
    /// The lifetime of that rotation's access token.
    expires_in: u32,
}

#[derive(Default)]
struct Family {
    current: String,
    used: Vec<String>,
    revoked: bool,
    n: u32,
}

const SEED: &str = "fleet-seed-refresh-0";

impl RotatingProvider {
    fn start(expires_in: u32) -> RotatingProvider {
        let state = Arc::new(Mutex::new(Family {
            current: SEED.into(),
            ..Family::default()
        }));
        let redemptions = Arc::new(AtomicU32::new(0));
        let stall = Arc::new(Mutex::new(None::<Stall>));
        let (st, red, stalls) = (state.clone(), redemptions.clone(), stall.clone());
        let origin = Origin::start_with(Arc::new(move |seen: &Seen| {
            let body = String::from_utf8_lossy(&seen.body).to_string();
            let rt = url::form_urlencoded::parse(body.as_bytes())
                .find(|(k, _)| k == "refresh_token")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            red.fetch_add(1, Ordering::SeqCst);
            let mut f = st.lock().unwrap();
            let refuse = TokenReply::raw(400, r#"{"error":"invalid_grant"}"#, "application/json");
            if f.revoked {
                return refuse;
            }
            if rt != f.current {
                // A used token again: the family is revoked, as OAuth 2.1 asks.
                f.revoked = f.used.contains(&rt);
                return refuse;
            }
            f.used.push(rt);
            f.n += 1;
            f.current = format!("fleet-refresh-{}-{}", f.n, "x".repeat(8));
            let mut expires_in = expires_in;
            let mut stall = stalls.lock().unwrap();
            if let Some(s) = stall.take_if(|s| s.after_rotation == f.n) {
                expires_in = s.expires_in;
                (s.act)();
            }
            let body = format!(
                "{{\"access_token\":\"fleet-access-{}\",\"refresh_token\":\"{}\",\"expires_in\":{expires_in}}}",
                f.n, f.current
            );
            TokenReply::raw(200, &body, "application/json")
        }));
        RotatingProvider {
            origin,
            state,
            redemptions,
            stall,
        }
    }

    fn body(&self, origin: &Origin) -> String {
        format!(
            "credentials:\n  hub:\n    type: oauth2_refresh_token\n    token_url: http://127.0.0.1:{}/token\n    client_id: fleet-client\n    client_secret: \"${{CS}}\"\n    refresh_token: \"${{SEED}}\"\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: hub }}\n",
            self.origin.port(),
            origin.port()
        )
    }

    fn revoked(&self) -> bool {
        self.state.lock().unwrap().revoked
    }

    fn rotations(&self) -> u32 {
        self.state.lock().unwrap().n
    }
}

/// Requests across the replicas for `secs` seconds, a few at a time; returns the statuses.
/// Fails with the statuses counted and each replica's WARN/ERROR lines when any request failed.
fn assert_all_ok(ps: &[Proxy], statuses: &[u16]) {
    let failed = statuses.iter().filter(|s| **s != 200).count();
    if failed == 0 {
        return;
    }
    let mut counts = std::collections::BTreeMap::new();
    for s in statuses {
        *counts.entry(*s).or_insert(0) += 1;
    }
    let logs: Vec<String> = ps
        .iter()
        .map(|p| {
            p.log_text()
                .lines()
                .filter(|l| {
                    l.contains("WARN")
                        || l.contains("ERROR")
                        || l.contains("without the fleet")
                        || l.contains("could not share")
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    panic!(
        "{} requests, {failed} failed: {counts:?}\n{}",
        statuses.len(),
        logs.join("\n---\n")
    );
}

fn steady_load(ps: &[Proxy], origin: &Origin, secs: u64, stop: Option<&AtomicBool>) -> Vec<u16> {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut statuses = Vec::new();
    while Instant::now() < until && !stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
        statuses.extend(storm(ps, origin, 6));
        std::thread::sleep(Duration::from_millis(30));
    }
    statuses
}

#[test]
fn rotation_never_forks_across_three_replicas() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let provider = RotatingProvider::start(2);
    let env = [("CS", CLIENT_SECRET), ("SEED", SEED)];
    let ps = replicas(
        3,
        &format!("\"{}\"", redis.url()),
        &provider.body(&origin),
        &env,
    );
    for p in &ps {
        p.metrics_with(&["credproxy_shared_state_up 1"]);
    }
    let statuses = steady_load(&ps, &origin, 8, None);
    assert!(!provider.revoked(), "a refresh token was redeemed twice");
    assert_all_ok(&ps, &statuses);
    let rotations = provider.rotations();
    let redemptions = provider.redemptions.load(Ordering::SeqCst);
    // A 2 s token is refreshed ahead, at about 1.35 s: about 6 rotations in 8 s for the whole
    // fleet, not 3 times that.
    eprintln!(
        "3 replicas, 8 s, {} requests: {rotations} rotations, {redemptions} redemptions",
        statuses.len()
    );
    assert!((3..=10).contains(&rotations), "{rotations} rotations");
    assert_eq!(
        redemptions, rotations,
        "every redemption was of the latest token"
    );
    assert_no_secret_in(&redis.dump());
}

/// The replica that redeemed loses Redis (a partition) right after the provider rotated,
/// before it can commit, for longer than its lease lives. The other replica, taking the lease
/// once it lapses, finds the old link claimed and waits for the commit instead of redeeming
/// the old token again (before claims it did, and the provider revoked the family).
#[test]
fn a_partition_right_after_a_rotation_does_not_fork() {
    let redis = RedisServer::start();
    let relay = Relay::start(redis.port);
    let origin = Origin::start();
    let provider = RotatingProvider::start(2);
    let cut = relay.switch();
    *provider.stall.lock().unwrap() = Some(Stall {
        after_rotation: 2,
        act: Box::new(move || {
            cut.store(true, Ordering::SeqCst);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(8));
                cut.store(false, Ordering::SeqCst);
            });
        }),
        // The redeeming replica needs no token for a while after the partition: the other
        // one comes for the chain first.
        expires_in: 60,
    });
    let env = [("CS", CLIENT_SECRET), ("SEED", SEED)];
    let body = provider.body(&origin);
    let via_relay = format!("\"redis://127.0.0.1:{}\"", relay.port);
    let redeemer = replicas(1, &via_relay, &body, &env);
    let other = replicas(1, &format!("\"{}\"", redis.url()), &body, &env);
    for p in redeemer.iter().chain(&other) {
        p.metrics_with(&["credproxy_shared_state_up 1"]);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while provider.stall.lock().unwrap().is_some() {
        assert!(Instant::now() < deadline, "the second rotation never came");
        storm(&redeemer, &origin, 2);
        std::thread::sleep(Duration::from_millis(30));
    }
    // The other replica waits for the lease to lapse, then for the commit: a request may
    // fail closed (502) meanwhile, never anything else.
    let during = steady_load(&other, &origin, 12, None);
    assert!(during.iter().all(|s| *s == 200 || *s == 502), "{during:?}");
    let both: Vec<Proxy> = redeemer.into_iter().chain(other).collect();
    let after = steady_load(&both, &origin, 4, None);
    let logs: String = both.iter().map(|p| p.log_text()).collect();
    assert!(
        !provider.revoked(),
        "a refresh token was redeemed twice:\n{logs}"
    );
    assert!(!logs.contains("forked"), "{logs}");
    assert!(
        logs.contains("not yet in shared state") && logs.contains("committed to shared state"),
        "the rotation's commit met the partition, and landed after it:\n{logs}"
    );
    assert!(
        logs.contains("waiting for its commit"),
        "the other replica found the link claimed:\n{logs}"
    );
    let refused = both[1].counter("credproxy_shared_state_claims_refused_total");
    assert!(refused.is_some_and(|n| n >= 1), "counted: {refused:?}");
    assert_all_ok(&both, &after);
    assert_eq!(
        provider.redemptions.load(Ordering::SeqCst),
        provider.rotations(),
        "every redemption was of the latest token"
    );
}

#[test]
fn a_replica_killed_while_holding_the_lease_is_replaced() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut reply = TokenReply::ok("fleet-token-after-kill", "3600");
    reply.delay = Duration::from_secs(2);
    let ts = TokenServer::start(reply);
    let mut ps = replicas(
        3,
        &format!("\"{}\"", redis.url()),
        &cc_body(&ts, &origin),
        &[("CS", CLIENT_SECRET)],
    );
    for p in &ps {
        p.metrics_with(&["credproxy_shared_state_up 1"]);
    }
    let victim = ps.remove(0);
    let url = format!("http://127.0.0.1:{}/first", origin.port());
    let client = victim.client();
    let first = std::thread::spawn(move || {
        runtime()
            .block_on(client.get(url).send())
            .map(|r| r.status())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while ts.requests().is_empty() {
        assert!(Instant::now() < deadline, "the first replica never fetched");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The lease holder dies mid-fetch; the others wait for its lease to lapse, then one of
    // them fetches. No request fails.
    std::process::Command::new("kill")
        .args(["-9", &victim.pid().to_string()])
        .status()
        .unwrap();
    let _ = first.join();
    let started = Instant::now();
    let statuses = storm(&ps, &origin, 40);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        ts.requests().len(),
        2,
        "the dead replica's fetch, and one replacement"
    );
    eprintln!("replaced after {:?}", started.elapsed());
    drop(victim);
}

#[test]
fn redis_lost_and_restarted_empty_loses_no_rotation() {
    let mut redis = RedisServer::start();
    let origin = Origin::start();
    let provider = RotatingProvider::start(15);
    let env = [("CS", CLIENT_SECRET), ("SEED", SEED)];
    let ps = replicas(
        3,
        &format!("\"{}\"", redis.url()),
        &provider.body(&origin),
        &env,
    );
    for p in &ps {
        p.metrics_with(&["credproxy_shared_state_up 1"]);
    }
    let mut statuses = steady_load(&ps, &origin, 2, None);
    redis.kill();
    for p in &ps {
        p.metrics_with(&["credproxy_shared_state_up 0"]);
        let (_, creds) = http_get(p.admin, "/credentials").unwrap();
        assert!(
            creds.contains("\"shared_state\": \"unreachable\""),
            "{creds}"
        );
    }
    statuses.extend(steady_load(&ps, &origin, 2, None));
    redis.restart();
    for p in &ps {
        p.metrics_with(&["credproxy_shared_state_up 1"]);
    }
    // Past the token's refresh point (about 10 s): rotations resume from the restored chain.
    statuses.extend(steady_load(&ps, &origin, 12, None));
    assert!(!provider.revoked(), "a refresh token was redeemed twice");
    assert_all_ok(&ps, &statuses);
    eprintln!(
        "redis restart: {} requests, {} rotations",
        statuses.len(),
        provider.rotations()
    );
    assert!(
        provider.rotations() >= 2,
        "rotation resumed: {}",
        provider.rotations()
    );
    assert_eq!(
        provider.redemptions.load(Ordering::SeqCst),
        provider.rotations()
    );
}

#[test]
fn a_cluster_losing_a_master_loses_no_rotation() {
    let mut cluster = RedisCluster::start();
    let origin = Origin::start();
    let provider = RotatingProvider::start(3);
    let env = [("CS", CLIENT_SECRET), ("SEED", SEED)];
    let ps = replicas(3, &cluster.yaml_urls(), &provider.body(&origin), &env);
    for p in &ps {
        p.metrics_with(&["credproxy_shared_state_up 1"]);
    }
    let mut statuses = steady_load(&ps, &origin, 4, None);
    for p in &ps {
        let m = p.metrics();
        assert!(
            m.contains("credproxy_shared_state_unreplicated_writes_total 0"),
            "every rotation reached a replica before it was used:\n{m}"
        );
    }
    let master = cluster.master_of("{hub|-}");
    let before = provider.rotations();
    cluster.nodes[master].kill();
    eprintln!("killed master {master} after {before} rotations");
    // Until a replica is promoted (seconds, longer on a loaded machine) a rotation that falls
    // due cannot be shared, and credproxy fails closed (502) rather than fork it: allowed
    // during the failover (load runs until the cluster reports ok, at most 60 s), never after
    // it, and never anything but a 502.
    let live = (master + 1) % cluster.nodes.len();
    let promoted = AtomicBool::new(false);
    let during = std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !cluster.failed_over(live, master) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            promoted.store(true, Ordering::Relaxed);
        });
        steady_load(&ps, &origin, 61, Some(&promoted))
    });
    assert!(
        cluster.failed_over(live, master),
        "the cluster did not fail over within 60 s:\n{}",
        cluster.logs()
    );
    let failed = during.iter().filter(|s| **s != 200).count();
    assert!(during.iter().all(|s| *s == 200 || *s == 502), "{during:?}");
    statuses.extend(steady_load(&ps, &origin, 4, None));
    assert!(!provider.revoked(), "a refresh token was redeemed twice");
    assert_all_ok(&ps, &statuses);
    eprintln!(
        "{failed} of {} requests failed closed during the failover",
        during.len()
    );
    eprintln!(
        "cluster failover: {} requests, {} rotations",
        statuses.len(),
        provider.rotations()
    );
    assert!(
        provider.rotations() >= 4,
        "rotations went on: {}",
        provider.rotations()
    );
    assert_eq!(
        provider.redemptions.load(Ordering::SeqCst),
        provider.rotations()
    );
    assert_no_secret_in(&cluster.dump());
}

#[test]
fn an_admin_refresh_on_one_replica_reaches_all_of_them() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let n = Arc::new(AtomicU32::new(0));
    let counter = n.clone();
    let ts = Origin::start_with(Arc::new(move |_s: &Seen| {
        let i = counter.fetch_add(1, Ordering::SeqCst) + 1;
        TokenReply::ok(&format!("fleet-admin-token-{i}"), "3600")
    }));
    let body = format!(
        "credentials:\n  api:\n    type: oauth2_client_credentials\n    token_url: http://127.0.0.1:{}/token\n    client_id: fleet-client\n    client_secret: \"${{CS}}\"\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: api }}\n",
        ts.port(),
        origin.port()
    );
    let ps = replicas(
        3,
        &format!("\"{}\"", redis.url()),
        &body,
        &[("CS", CLIENT_SECRET)],
    );
    for p in &ps {
        p.metrics_with(&["credproxy_shared_state_up 1"]);
    }
    assert!(storm(&ps, &origin, 30).iter().all(|s| *s == 200));
    assert_eq!(ts.count(), 1);
    let answer = admin_post(ps[0].admin, "/credentials/api/refresh");
    assert!(answer.contains("refreshed"), "{answer}");
    assert_eq!(ts.count(), 2);
    // Within a second every replica uses the new token, with no fetch of its own.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let before = origin.count();
        assert!(storm(&ps, &origin, 30).iter().all(|s| *s == 200));
        let fresh = origin.seen()[before..]
            .iter()
            .all(|s| s.header("authorization").as_deref() == Some("Bearer fleet-admin-token-2"));
        if fresh {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a replica still used the old token after 1 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        ts.count(),
        2,
        "one fetch for the refresh, shared by the fleet"
    );
}

#[test]
fn rediss_with_a_password_is_verified_against_upstream_ca() {
    let (redis, ca) = RedisServer::start_tls("fleet-redis-password-1");
    register_secret("fleet-redis-password-1");
    let origin = Origin::start();
    let ts = TokenServer::start(TokenReply::ok("fleet-token-over-tls", "3600"));
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let shared = format!(
        "shared_state: {{ redis: \"{url}\", password: \"${{REDIS_PASSWORD}}\", prefix: tls }}\n"
    );
    let env = [
        ("CS", CLIENT_SECRET),
        ("REDIS_PASSWORD", "fleet-redis-password-1"),
        ("CREDPROXY_STATE_KEY", KEY),
    ];
    let trusted = format!("{shared}upstream_ca: {}\n", ca.display());
    let a = Proxy::start_with(&trusted, &cc_body(&ts, &origin), &env);
    let b = Proxy::start_with(&trusted, &cc_body(&ts, &origin), &env);
    for p in [&a, &b] {
        p.metrics_with(&["credproxy_shared_state_up 1"]);
    }
    assert!(storm(&[a, b], &origin, 20).iter().all(|s| *s == 200));
    assert_eq!(ts.requests().len(), 1);
    // Without the CA that signed Redis's certificate, the fleet never connects.
    let untrusted = Proxy::start_with(&shared, &cc_body(&ts, &origin), &env);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(untrusted.metrics().contains("credproxy_shared_state_up 0"));
    assert!(
        untrusted
            .log_text()
            .contains("shared state (Redis) unreachable"),
        "{}",
        untrusted.log_text()
    );
}

/// Token requests for the same load and token lifetime with 1, 3 and 5 replicas: the fleet
/// fetches once per refresh, not once per replica. A measurement for the README (run with
/// `cargo test --test fleet measure -- --ignored --nocapture`), not a check.
#[test]
#[ignore]
fn measure_token_requests_per_refresh() {
    for n in [1, 3, 5] {
        let redis = RedisServer::start();
        let origin = Origin::start();
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        let ts = Origin::start_with(Arc::new(move |_s: &Seen| {
            let i = c.fetch_add(1, Ordering::SeqCst);
            TokenReply::ok(&format!("fleet-measure-{n}-{i}"), "2")
        }));
        let body = format!(
            "credentials:\n  api:\n    type: oauth2_client_credentials\n    token_url: http://127.0.0.1:{}/token\n    client_id: fleet-client\n    client_secret: \"${{CS}}\"\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: api }}\n",
            ts.port(),
            origin.port()
        );
        let ps = replicas(
            n,
            &format!("\"{}\"", redis.url()),
            &body,
            &[("CS", CLIENT_SECRET)],
        );
        for p in &ps {
            p.metrics_with(&["credproxy_shared_state_up 1"]);
        }
        let statuses = steady_load(&ps, &origin, 10, None);
        let fetched = count.load(Ordering::SeqCst);
        // A 2 s token is refreshed about every 1.35 s: about 7.4 refreshes in 10 s.
        println!(
            "{n} replica(s): {} requests, {fetched} token requests, {:.2} per refresh (10 s / 1.35 s)",
            statuses.len(),
            f64::from(fetched) / (10.0 / 1.35)
        );
    }
}

/// A replica with its own connect listener, sharing `redis`: (proxy, connect port).
fn connect_replica(redis: &RedisServer, body: &str, env: &[(&str, &str)]) -> (Proxy, u16) {
    let cp = free_port();
    let extra = format!(
        "shared_state: {{ redis: \"{}\", prefix: fleet-test }}\nadmin_token: \"${{ADMIN_TOKEN}}\"\nconnect: {{ listen: \"127.0.0.1:{cp}\", public_url: \"http://127.0.0.1:{cp}\" }}",
        redis.url()
    );
    let mut env = env.to_vec();
    env.extend([("CREDPROXY_STATE_KEY", KEY), ("ADMIN_TOKEN", FLEET_ADMIN)]);
    (Proxy::start_with(&extra, body, &env), cp)
}

const FLEET_ADMIN: &str = "fleet-admin-token-0001";

/// A GET through `p` for `tenant`: status and the Authorization the origin saw (if it did).
fn as_tenant(p: &Proxy, origin: &Origin, tenant: &str) -> (u16, Option<String>) {
    let before = origin.count();
    let status = runtime().block_on(async {
        let proxy = reqwest::Proxy::http(p.url())
            .unwrap()
            .basic_auth("worker", "fleet-worker-secret-01");
        let c = reqwest::Client::builder().proxy(proxy).build().unwrap();
        let url = format!("http://127.0.0.1:{}/v1/x", origin.port());
        let r = c.get(url).header("X-Credproxy-Tenant", tenant);
        r.send().await.unwrap().status().as_u16()
    });
    let seen = (origin.count() > before).then(|| origin.last().header("authorization"));
    (status, seen.flatten())
}

/// Until every replica answers `want` for `tenant` (bounded by 1 s, the promise); how long
/// that took.
fn everywhere(ps: &[&Proxy], origin: &Origin, tenant: &str, want: (u16, Option<&str>)) -> Duration {
    let t0 = Instant::now();
    loop {
        let got: Vec<_> = ps.iter().map(|p| as_tenant(p, origin, tenant)).collect();
        if got.iter().all(|(s, a)| (*s, a.as_deref()) == want) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "after 1 s the replicas answer {got:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connections_and_connect_links_are_the_fleets() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let idp = TokenServer::start(TokenReply::raw(
        200,
        r#"{"access_token":"fleet-connect-access-01","refresh_token":"fleet-connect-refresh-01","expires_in":3600}"#,
        "application/json",
    ));
    let body = format!(
        "clients:\n  - {{ name: worker, secret: \"${{WS}}\", tenants: [\"*\"], credentials: [openai, hub] }}\ncredentials:\n  openai: {{ type: bearer, per_tenant: true }}\n  hub:\n    type: oauth2_refresh_token\n    per_tenant: true\n    authorize_url: {}\n    token_url: {}\n    client_id: fleet-client\n    client_secret: \"${{CS}}\"\nroutes:\n  - {{ host: \"127.0.0.1:{}\", credential: openai }}\n  - {{ host: \"127.0.0.1:{}\", credential: hub }}\n",
        idp.url("/authorize"),
        idp.url("/token"),
        origin.port(),
        free_port()
    );
    let env = [("CS", CLIENT_SECRET), ("WS", "fleet-worker-secret-01")];
    let rs: Vec<(Proxy, u16)> = (0..3)
        .map(|_| connect_replica(&redis, &body, &env))
        .collect();
    let ps: Vec<&Proxy> = rs.iter().map(|(p, _)| p).collect();
    let put = |p: &Proxy, key: &str| {
        register_secret(key);
        let body = format!(r#"{{"token": "{key}"}}"#);
        admin_as(p, FLEET_ADMIN, "PUT", "/connections/acme/openai", &body).0
    };

    // Created on one replica, used by all within a second; replaced on another; deleted on a third.
    assert_eq!(put(ps[0], "sk-fleet-acme-000001"), 201);
    let created = everywhere(
        &ps,
        &origin,
        "acme",
        (200, Some("Bearer sk-fleet-acme-000001")),
    );
    assert_eq!(put(ps[1], "sk-fleet-acme-000002"), 200);
    let replaced = everywhere(
        &ps,
        &origin,
        "acme",
        (200, Some("Bearer sk-fleet-acme-000002")),
    );
    let path = "/connections/acme/openai";
    assert_eq!(admin_as(ps[2], FLEET_ADMIN, "DELETE", path, "").0, 204);
    let deleted = everywhere(&ps, &origin, "acme", (403, None));
    eprintln!("a connection change reached every replica in: created {created:?}, replaced {replaced:?}, deleted {deleted:?}");

    // A replica started later has the fleet's connections.
    assert_eq!(put(ps[0], "sk-fleet-acme-000003"), 201);
    let (late, _) = connect_replica(&redis, &body, &env);
    everywhere(
        &[&late],
        &origin,
        "acme",
        (200, Some("Bearer sk-fleet-acme-000003")),
    );

    // A link made on one replica opens on another, and its callback lands on a third.
    let (s, b) = admin_as(
        ps[0],
        FLEET_ADMIN,
        "POST",
        "/connections/globex/hub/connect-link",
        "",
    );
    assert_eq!(s, 201, "{b}");
    let link: serde_json::Value = serde_json::from_str(&b).unwrap();
    let link = link["url"]
        .as_str()
        .unwrap()
        .replace(&format!(":{}/", rs[0].1), &format!(":{}/", rs[1].1));
    let (s, to_idp, cookie, page) = browse(&link, None);
    assert_eq!(s, 302, "{page}");
    let state = query_value(&to_idp.unwrap(), "state");
    let back = format!(
        "http://127.0.0.1:{}/callback?code=c-1&state={state}",
        rs[2].1
    );
    let (s, _, _, page) = browse(&back, cookie.as_deref());
    assert_eq!(s, 200, "{page}");
    // Spent fleet-wide: the same link on the first replica is refused.
    let again = link.replace(&format!(":{}/", rs[1].1), &format!(":{}/", rs[0].1));
    assert_eq!(browse(&again, None).0, 403);
    // Another replica sees it once the fleet's event arrives (tens of ms; bounded wait).
    let start = Instant::now();
    let (mut s, mut b) = (0, String::new());
    while start.elapsed() < Duration::from_secs(5) {
        (s, b) = admin_as(ps[1], FLEET_ADMIN, "GET", "/connections/globex/hub", "");
        if s == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s, 200, "{b}");
    assert_no_secret_in(&redis.dump());
}

/// The replica of the credential's master stops (SIGSTOP): WAIT gets no acknowledgement, and
/// the rotation is counted and logged, never silently taken as durable.
fn stopped_replica_rotations(replicas_n: usize) -> (Vec<Proxy>, Vec<u16>, RotatingProvider) {
    let cluster = RedisCluster::start();
    let origin = Origin::start();
    let provider = RotatingProvider::start(2);
    let env = [("CS", CLIENT_SECRET), ("SEED", SEED)];
    let ps = replicas(
        replicas_n,
        &cluster.yaml_urls(),
        &provider.body(&origin),
        &env,
    );
    for p in &ps {
        p.metrics_with(&["credproxy_shared_state_up 1"]);
    }
    let replica = cluster.replica_of(cluster.master_of("{hub|-}"));
    cluster.nodes[replica].signal("-STOP");
    let statuses = steady_load(&ps, &origin, 4, None);
    cluster.nodes[replica].signal("-CONT");
    let counted: u64 = ps
        .iter()
        .map(|p| {
            p.counter("credproxy_shared_state_unreplicated_writes_total")
                .unwrap_or(0)
        })
        .sum();
    assert!(provider.rotations() >= 1, "a rotation fell due");
    assert!(counted >= 1, "an unacknowledged rotation is counted");
    let logs: String = ps.iter().map(|p| p.log_text()).collect();
    assert!(
        logs.contains("was not acknowledged by a replica"),
        "and logged"
    );
    // Scripts run with EVALSHA/EVAL on the key's master: nothing waits on the stopped node
    // (redis-rs's SCRIPT LOAD went to every node and stalled each first use for 2 s).
    assert!(
        !logs.contains("no answer within"),
        "a command waited on the stopped replica"
    );
    (ps, statuses, provider)
}

#[test]
fn a_rotation_no_replica_acknowledged_is_counted_and_logged() {
    // One replica: nothing else can redeem. While the stopped node stalls the cluster client
    // a request may fail closed (502), never anything else, and nothing is redeemed twice.
    let (_ps, statuses, provider) = stopped_replica_rotations(1);
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 502),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200));
    assert!(!provider.revoked(), "a refresh token was redeemed twice");
}

/// Two replicas with a stopped Cluster replica: this forked (two redemptions of one token)
/// while redis-rs's SCRIPT LOAD stalled every first script use for 2 s, a rotation's commit
/// timed out and its lease expired (a claim on the link now holds the others off in that case,
/// see `a_partition_right_after_a_rotation_does_not_fork`); here nothing stalls any more.
#[test]
fn two_replicas_never_fork_while_a_cluster_replica_is_stopped() {
    let (ps, statuses, provider) = stopped_replica_rotations(2);
    assert_all_ok(&ps, &statuses);
    assert!(!provider.revoked(), "a refresh token was redeemed twice");
}
