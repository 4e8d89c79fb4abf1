//! Tenant isolation, as a property over generated workloads through the real binary: many
//! tenants and clients (fixed tenants, tenant lists, "*", none), `X-Credproxy-Tenant` sent
//! rightly and wrongly, connections deleted and re-created and the config reloaded while
//! requests run on several connections at once. Whatever the interleaving, a request that
//! reaches an origin carries exactly its own tenant's credential (never another's, never the
//! tenant header), and a request its client may not make never reaches one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};

const STATE_KEY: &str = "9999999999999999999999999999999999999999999999999999999999999999";
const ADMIN_TOKEN: &str = "isolation-admin-token-01";
/// Tenants t0..t19 keep their connections; t20..t29 are deleted and re-created as it runs.
const STABLE: usize = 20;
const TENANTS: usize = 30;
/// Clients: fixed-0..fixed-4 (tenant t0..t4), list (t0..t9), star ("*"), plain (none).
const CLIENTS: [&str; 8] = [
    "fixed-0", "fixed-1", "fixed-2", "fixed-3", "fixed-4", "list", "star", "plain",
];
/// Per-tenant bearer, per-tenant header, and a shared bearer.
const CREDS: [&str; 3] = ["openai", "partner", "shared"];

#[derive(Debug, Clone)]
enum Op {
    Call {
        client: usize,
        header: Option<usize>,
        cred: usize,
    },
    Delete(usize),
    Put(usize),
    Reload,
}

fn op() -> impl Strategy<Value = Op> {
    let call = (
        0..CLIENTS.len(),
        proptest::option::of(0..TENANTS),
        0..3usize,
    )
        .prop_map(|(client, header, cred)| Op::Call {
            client,
            header,
            cred,
        });
    prop_oneof![
        12 => call,
        1 => (STABLE..TENANTS).prop_map(Op::Delete),
        1 => (STABLE..TENANTS).prop_map(Op::Put),
        1 => Just(Op::Reload),
    ]
}

/// The tenant a request acts for, or the reason it is refused, by the client's rules.
fn expected(client: usize, header: Option<usize>) -> Result<usize, &'static str> {
    let name = CLIENTS[client];
    match (name, header) {
        (n, None) if n.starts_with("fixed-") => Ok(client),
        (n, Some(h)) if n.starts_with("fixed-") && h == client => Ok(h),
        ("list", Some(h)) if h < 10 => Ok(h),
        ("star", Some(h)) => Ok(h),
        (_, None) => Err("tenant_required"),
        _ => Err("tenant_forbidden"),
    }
}

struct World {
    proxy: Proxy,
    /// openai, partner, shared: each echoes what it received.
    origins: Vec<Origin>,
    generation: AtomicU64,
}

/// An origin that answers with the credential headers it received.
fn echo() -> Origin {
    Origin::start_with(Arc::new(|s: &Seen| {
        let h = |n: &str| s.all(n).join(",");
        let body = format!(
            "auth={}|key={}|tenant={}",
            h("authorization"),
            h("x-api-key"),
            h("x-credproxy-tenant")
        );
        TokenReply::raw(200, &body, "text/plain")
    }))
}

fn config(origins: &[Origin]) -> String {
    let clients: String = CLIENTS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let scope = match *c {
                "list" => format!(
                    ", tenants: [{}]",
                    (0..10).map(|t| format!("t{t}")).collect::<Vec<_>>().join(", ")
                ),
                "star" => ", tenants: [\"*\"]".to_string(),
                "plain" => String::new(),
                _ => format!(", tenant: t{i}"),
            };
            format!("  - {{ name: {c}, secret: client-secret-{c}-0001{scope}, credentials: [openai, partner, shared] }}\n")
        })
        .collect();
    let routes: String = CREDS
        .iter()
        .zip(origins)
        .map(|(c, o)| {
            format!(
                "  - {{ host: \"127.0.0.1:{}\", credential: {c} }}\n",
                o.port()
            )
        })
        .collect();
    format!(
        "clients:\n{clients}credentials:\n  openai: {{ type: bearer, per_tenant: true }}\n  partner: {{ type: headers, per_tenant: true }}\n  shared: {{ type: bearer, token: shared-key-000000000001 }}\nroutes:\n{routes}"
    )
}

impl World {
    fn start() -> World {
        let origins = vec![echo(), echo(), echo()];
        let env = [
            ("CREDPROXY_STATE_KEY", STATE_KEY),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
        ];
        let proxy = Proxy::start_with("admin_token: \"${ADMIN_TOKEN}\"", &config(&origins), &env);
        let w = World {
            proxy,
            origins,
            generation: AtomicU64::new(0),
        };
        for t in 0..TENANTS {
            w.put(t);
        }
        w
    }

    /// Stores tenant `t`'s connections for both per-tenant credentials, with a new generation.
    fn put(&self, t: usize) {
        let g = self.generation.fetch_add(1, Ordering::SeqCst);
        let key = format!("sk-t{t}-g{g:06}");
        register_secret(&key);
        let bodies = [
            ("openai", format!(r#"{{"token": "{key}"}}"#)),
            (
                "partner",
                format!(r#"{{"headers": {{"X-Api-Key": "p{key}"}}}}"#),
            ),
        ];
        register_secret(&format!("p{key}"));
        for (cred, body) in bodies {
            let (s, b) = admin_as(
                &self.proxy,
                ADMIN_TOKEN,
                "PUT",
                &format!("/connections/t{t}/{cred}"),
                &body,
            );
            assert!(s == 200 || s == 201, "{s} {b}");
        }
    }

    fn delete(&self, t: usize) {
        for cred in ["openai", "partner"] {
            let path = format!("/connections/t{t}/{cred}");
            let (s, b) = admin_as(&self.proxy, ADMIN_TOKEN, "DELETE", &path, "");
            assert!(s == 204 || s == 404, "{s} {b}");
        }
    }

    fn reload(&self) {
        let (s, b) = admin_as(&self.proxy, ADMIN_TOKEN, "POST", "/reload", "");
        assert_eq!(s, 200, "{b}");
    }
}

/// One request as `client`; checks its answer against the rules.
async fn call(w: &World, http: &[reqwest::Client], op: (usize, Option<usize>, usize)) {
    let (client, header, cred) = op;
    let url = format!("http://127.0.0.1:{}/v1/x", w.origins[cred].port());
    let mut rb = http[client].get(url);
    if let Some(h) = header {
        rb = rb.header("X-Credproxy-Tenant", format!("t{h}"));
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    let what = format!(
        "{} as {:?} to {}: {status} {body}",
        CLIENTS[client], header, CREDS[cred]
    );
    assert!(
        !body.contains("tenant=t"),
        "the tenant header left the proxy: {what}"
    );
    if CREDS[cred] == "shared" {
        assert_eq!(status, 200, "{what}");
        assert!(
            body.starts_with("auth=Bearer shared-key-000000000001|"),
            "{what}"
        );
        return;
    }
    match expected(client, header) {
        Err(code) => assert!(status == 403 && body.contains(code), "want {code}: {what}"),
        Ok(t) if status == 200 => {
            let mine = match CREDS[cred] {
                "openai" => format!("auth=Bearer sk-t{t}-g"),
                _ => format!("auth=|key=psk-t{t}-g"),
            };
            assert!(
                body.starts_with(&mine),
                "another tenant's credential: {what}"
            );
        }
        Ok(t) => assert!(
            t >= STABLE && status == 403 && body.contains("connection_missing"),
            "{what}"
        ),
    }
}

/// Runs `ops` on four connections' worth of concurrent workers.
fn run(
    rt: &tokio::runtime::Runtime,
    w: &Arc<World>,
    http: &Arc<Vec<reqwest::Client>>,
    ops: Vec<Op>,
) {
    rt.block_on(async {
        let mut tasks = Vec::new();
        for chunk in ops.chunks(ops.len().div_ceil(4).max(1)) {
            let (w, http, chunk) = (w.clone(), http.clone(), chunk.to_vec());
            tasks.push(tokio::spawn(async move {
                for op in chunk {
                    match op {
                        Op::Call {
                            client,
                            header,
                            cred,
                        } => call(&w, &http, (client, header, cred)).await,
                        admin => {
                            let w = w.clone();
                            tokio::task::spawn_blocking(move || match admin {
                                Op::Delete(t) => w.delete(t),
                                Op::Put(t) => w.put(t),
                                _ => w.reload(),
                            })
                            .await
                            .unwrap();
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn clients(p: &Proxy) -> Vec<reqwest::Client> {
    CLIENTS
        .iter()
        .map(|c| {
            let proxy = reqwest::Proxy::http(p.url())
                .unwrap()
                .basic_auth(c, &format!("client-secret-{c}-0001"));
            reqwest::Client::builder().proxy(proxy).build().unwrap()
        })
        .collect()
}

#[test]
fn a_request_never_carries_another_tenants_credential() {
    let w = Arc::new(World::start());
    let rt = runtime();
    let http = Arc::new(rt.block_on(async { clients(&w.proxy) }));
    let mut runner = TestRunner::new(PtConfig {
        cases: 64,
        failure_persistence: None,
        ..PtConfig::default()
    });
    let ops = proptest::collection::vec(op(), 20..80);
    let result = runner.run(&ops, |ops| {
        run(&rt, &w, &http, ops);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Every origin saw requests, each with one credential header.
    for o in &w.origins {
        assert!(o.count() > 0);
    }
}

#[test]
fn a_put_racing_a_delete_is_answered_for_what_it_stored() {
    // A PUT used to look its connection up again to answer, so a DELETE landing in between
    // turned a stored connection into a 404 `connection_missing`: the property above caught
    // it once in a loaded full run. The window is microseconds, so this bounded stress check
    // of the invariant (`put` asserts 200 or 201, `delete` 204 or 404) rarely hits it; the
    // answer is now built from the entry `put` stored.
    let w = Arc::new(World::start());
    let t = STABLE + 5;
    std::thread::scope(|s| {
        s.spawn(|| (0..150).for_each(|_| w.put(t)));
        s.spawn(|| (0..150).for_each(|_| w.delete(t)));
    });
}
