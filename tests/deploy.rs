//! The deployment examples in `deploy/` stay valid: every file parses as YAML; the Kubernetes
//! manifests pass `kubernetes-validate --strict` (the Kubernetes schemas, installed by
//! `.ci/setup`); and every credproxy config they carry passes `credproxy check --offline`
//! with its paths pointed at a scratch directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::bin;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["compose", "kubernetes"] {
        for e in std::fs::read_dir(deploy().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every document of a YAML file.
fn documents(path: &Path) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

/// The credproxy configs the examples carry: the compose one, and each ConfigMap's.
fn configs() -> Vec<(String, String)> {
    let mut out = vec![(
        "compose/credentials.yaml".to_string(),
        std::fs::read_to_string(deploy().join("compose/credentials.yaml")).unwrap(),
    )];
    for f in files() {
        for d in documents(&f) {
            if d["kind"] == "ConfigMap" {
                let text = d["data"]["credentials.yaml"].as_str().unwrap().to_string();
                out.push((format!("{} ConfigMap", f.display()), text));
            }
        }
    }
    out
}

#[test]
fn every_example_parses_and_the_compose_file_has_its_services() {
    assert!(files().len() >= 3, "{:?}", files());
    for f in files() {
        assert!(!documents(&f).is_empty(), "{}", f.display());
    }
    let compose = &documents(&deploy().join("compose/docker-compose.yaml"))[0];
    for s in ["credproxy", "redis", "workflow"] {
        assert!(compose["services"][s].is_mapping(), "service {s}");
    }
}

#[test]
fn kubernetes_manifests_match_the_kubernetes_schemas() {
    let Ok(out) = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .args(
            files()
                .iter()
                .filter(|f| f.starts_with(deploy().join("kubernetes"))),
        )
        .output()
    else {
        panic!("kubernetes-validate is not installed: run .ci/setup");
    };
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_configs_they_carry_pass_credproxy_check() {
    let scratch = tempfile::tempdir().unwrap();
    let ca = scratch.path().join("ca");
    let made = Command::new(bin())
        .args(["ca", "init", "--dir"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(made.status.success());
    for (name, text) in configs() {
        let text = text
            .replace("/etc/credproxy/ca", ca.to_str().unwrap())
            .replace("/var/lib/credproxy", scratch.path().to_str().unwrap())
            .replace("/etc/credproxy/secrets", scratch.path().to_str().unwrap());
        let conf = scratch.path().join("c.yaml");
        std::fs::write(&conf, text).unwrap();
        let out = Command::new(bin())
            .args(["check", "--offline", "-c"])
            .arg(&conf)
            .env("CREDPROXY_STATE_KEY", "11".repeat(32))
            .env("REDIS_URL", "redis://127.0.0.1:6379")
            .env("ADMIN_TOKEN", "an-admin-token-of-length")
            // Client secrets are required at load; credential secrets may be missing.
            .env("WORKFLOW_SECRET", "workflow-secret-0001")
            .env("BILLING_FLOWS_SECRET", "billing-secret-00001")
            .env("WORKER_SECRET", "worker-secret-000001")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Secrets are left unset here: only those credentials may be reported, not the config.
        assert!(
            stdout.contains("config OK") && !stderr.contains("error"),
            "{name}:\n{stdout}{stderr}"
        );
    }
}
