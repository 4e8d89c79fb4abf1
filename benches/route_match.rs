//! Route matching with 1,000 routes: exact hosts, wildcard suffixes, paths and methods.
//! `cargo bench --bench route_match`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;

fn config(n: usize) -> credproxy::config::Config {
    let mut text = String::from("credentials:\n  c: { type: bearer, token: t }\nroutes:\n");
    for i in 0..n {
        match i % 4 {
            0 => text.push_str(&format!("  - {{ host: api{i}.example.com, credential: c }}\n")),
            1 => text.push_str(&format!("  - {{ host: \"*.tenant{i}.example.net\", path: /v1/*, credential: c }}\n")),
            2 => text.push_str(&format!("  - {{ host: \"svc{i}.internal:8443\", methods: [GET, POST], credential: c }}\n")),
            _ => text.push_str(&format!("  - {{ path: /side{i}/*, upstream: \"http://127.0.0.1:9000\", strip_prefix: /side{i}, credential: c }}\n")),
        }
    }
    credproxy::config::load_str(&text, Path::new("bench.yaml"), &|_| None).unwrap()
}

fn bench(c: &mut Criterion) {
    let cfg = config(1000);
    let r = &cfg.router;
    let get = Method::GET;
    c.bench_function("exact host hit (1000 routes)", |b| {
        b.iter(|| {
            r.match_forward(
                black_box("api996.example.com"),
                443,
                black_box("/repos/x"),
                &get,
            )
        })
    });
    c.bench_function("wildcard hit, 4 labels (1000 routes)", |b| {
        b.iter(|| {
            r.match_forward(
                black_box("a.b.tenant997.example.net"),
                443,
                black_box("/v1/items"),
                &get,
            )
        })
    });
    c.bench_function("miss (1000 routes)", |b| {
        b.iter(|| r.match_forward(black_box("nothing.example.org"), 443, black_box("/x"), &get))
    });
    c.bench_function("sidecar path, last route (1000 routes)", |b| {
        b.iter(|| r.match_sidecar(black_box("/side999/crm/objects"), &get))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
