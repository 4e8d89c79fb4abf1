//! SigV4 signing cost: header mode with an empty body and a 1 MiB body (which includes the
//! SHA-256 of the payload). `cargo bench --bench sigv4`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::time::SystemTime;

use credproxy::credentials::aws_sigv4::Payload;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pingora::http::RequestHeader;

fn signer(service: &str) -> std::sync::Arc<credproxy::credentials::aws_sigv4::AwsSigV4> {
    let text = format!("credentials:\n  a: {{ type: aws_sigv4, access_key_id: AKIDEXAMPLE, secret_access_key: wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, service: {service}, region: us-east-1 }}\n");
    let cfg = credproxy::config::load_str(&text, Path::new("b.yaml"), &|_| None).unwrap();
    match cfg.credentials[0].credential.as_ref().unwrap() {
        credproxy::credentials::Credential::Signed(s) => s.clone(),
        other => panic!("not a signer: {other:?}"),
    }
}

fn request() -> RequestHeader {
    let mut r = RequestHeader::build("PUT", b"/bucket/key.bin?x-id=PutObject", None).unwrap();
    r.insert_header("host", "s3.us-east-1.amazonaws.com")
        .unwrap();
    r.insert_header("content-type", "application/octet-stream")
        .unwrap();
    r
}

fn bench(c: &mut Criterion) {
    let s3 = signer("s3");
    let api = signer("execute-api");
    let now = SystemTime::now();
    let mib: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    c.bench_function("sigv4 header, empty body (execute-api)", |b| {
        b.iter(|| {
            let mut r = request();
            api.sign(&mut r, true, Payload::Bytes(black_box(b"")), now)
                .unwrap();
            r
        })
    });
    c.bench_function("sigv4 header, empty body (s3)", |b| {
        b.iter(|| {
            let mut r = request();
            s3.sign(&mut r, true, Payload::Bytes(black_box(b"")), now)
                .unwrap();
            r
        })
    });
    let mut g = c.benchmark_group("sigv4 header, 1 MiB body (s3)");
    g.throughput(Throughput::Bytes(mib.len() as u64));
    g.bench_function("sign", |b| {
        b.iter(|| {
            let mut r = request();
            s3.sign(&mut r, true, Payload::Bytes(black_box(&mib)), now)
                .unwrap();
            r
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
