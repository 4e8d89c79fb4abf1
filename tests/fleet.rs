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
        let (st, red) = (state.clone(), redemptions.clone());
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
    let master = cluster.master_of("{hub|-}");
    let before = provider.rotations();
    cluster.nodes[master].kill();
    eprintln!("killed master {master} after {before} rotations");
    statuses.extend(steady_load(&ps, &origin, 10, None));
    assert!(!provider.revoked(), "a refresh token was redeemed twice");
    assert_all_ok(&ps, &statuses);
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
