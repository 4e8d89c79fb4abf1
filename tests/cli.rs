//! The command line: exit codes, error messages that name file, key and line, and each command.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::bin;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(bin());
    c.args(args).env_remove("CREDPROXY_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &tempfile::TempDir, text: &str) -> String {
    let p = dir.path().join("credentials.yaml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn bad_config_exits_2_naming_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "credentials:\n  gh: { type: bearer, token: \"${T}\" }\nroutes:\n  - host: api.github.com\n    credential: gihub\n");
    for cmd in [
        vec!["run", "-c", &f],
        vec!["-c", &f],
        vec!["check", "--offline", "-c", &f],
    ] {
        let (code, _, err) = run(&cmd, &[]);
        assert_eq!(code, 2, "{cmd:?}: {err}");
        assert!(
            err.contains(&format!(
                "{f}:5: routes[0].credential: unknown credential `gihub` (defined: gh)"
            )),
            "{err}"
        );
    }
}

#[test]
fn yaml_syntax_error_exits_2_with_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "proxy:\n  listen: 127.0.0.1:8080\n routes: [\n");
    let (code, _, err) = run(&["check", "-c", &f], &[]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("{f}:3")), "{err}");
}

#[test]
fn missing_config_file_exits_2() {
    let (code, _, err) = run(&["check", "-c", "/nonexistent/credentials.yaml"], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/credentials.yaml: cannot read config file"),
        "{err}"
    );
}

#[test]
fn config_from_env_var() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "credentials:\n  gh: { type: bearer, token: \"${T}\" }\nroutes:\n  - { host: api.github.com, credential: gh }\n");
    let (code, out, _) = run(
        &["check", "--offline"],
        &[("CREDPROXY_CONFIG", &f), ("T", "x")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("config OK: {f}")));
}

#[test]
fn check_reports_each_credential_and_fails_on_missing_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "credentials:\n  gh: { type: bearer, token: \"${T}\" }\n  erp: { type: basic, username: u, password: \"file:nope.txt\" }\nroutes:\n  - { host: api.github.com, credential: gh }\n  - { host: erp.example.com, credential: erp }\n");
    let (code, out, err) = run(&["check", "-c", &f], &[("T", "s3cret-value")]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("gh   bearer") && out.contains("OK"), "{out}");
    assert!(
        out.contains("erp  basic") && out.contains("UNAVAILABLE: cannot read secret file"),
        "{out}"
    );
    assert!(
        !err.contains("credentials.erp: unavailable until fixed"),
        "an unavailable credential is said once, in the table: {err}"
    );
    assert!(
        !err.contains("credentials.erp.username"),
        "a user name is not a secret: {err}"
    );
    assert!(!out.contains("s3cret-value") && !err.contains("s3cret-value"));
    std::fs::write(dir.path().join("nope.txt"), "pw\n").unwrap();
    let (code, out, _) = run(&["check", "--offline", "-c", &f], &[("T", "x")]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn shipped_example_config_is_valid_without_secrets() {
    let f = concat!(env!("CARGO_MANIFEST_DIR"), "/credentials.yaml");
    let (code, out, err) = run(&["check", "--offline", "-c", f], &[]);
    assert_eq!(
        code, 1,
        "missing secrets are reported, not fatal: {out}{err}"
    );
    assert!(out.contains("config OK"), "{out}");
    assert!(
        out.contains("UNAVAILABLE: environment variable DEMO_TOKEN is not set"),
        "{out}"
    );
    let text = std::fs::read_to_string(f).unwrap();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for key in ["token:", "password:", "X-Api-Key:", "secret:"] {
            if let Some((_, v)) = line.split_once(key) {
                let v = v.trim();
                assert!(
                    v.starts_with("${") || v.starts_with("file:"),
                    "secret in shipped config: {line}"
                );
            }
        }
    }
}

#[test]
fn explain_shows_route_and_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let (code, _, err) = run(&["ca", "init", "--dir", ca.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let dns =
        "  dns: { overrides: { api.github.com: 140.82.112.6, other.example: 93.184.216.34 } }\n";
    let body = "credentials:\n  gh: { type: bearer, token: \"${T}\" }\nroutes:\n  - { host: api.github.com, credential: gh }\n";
    let with_ca = write(
        &dir,
        &format!(
            "proxy:\n{dns}  ca: {{ cert: {0}/ca.pem, key: {0}/ca.key }}\n{body}",
            ca.display()
        ),
    );
    let url = "https://api.github.com/repos/x/y/issues";
    let (code, out, _) = run(
        &["explain", "-c", &with_ca, "-X", "POST", url],
        &[("T", "tok-value")],
    );
    assert_eq!(code, 0);
    for line in [
        "route:       api.github.com (routes[0])",
        "upstream:    https://api.github.com:443/repos/x/y/issues",
        "destination: 140.82.112.6 (allowed by proxy.egress)",
        "inject:      authorization: Bearer ***",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    assert!(!out.contains("tok-value"));
    let (code, out, _) = run(&["explain", "-c", &with_ca, "http://other.example/"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("route:       none"), "{out}");
    let without_ca = write(&dir, &format!("proxy:\n{dns}{body}"));
    let (code, out, _) = run(&["explain", "-c", &without_ca, url], &[("T", "tok-value")]);
    assert_eq!(code, 0);
    assert!(
        out.contains("answer:      tunnelled untouched (CONNECT)")
            && out.contains("without proxy.ca"),
        "{out}"
    );
    assert!(!out.contains("inject:"), "{out}");
    let (code, out, _) = run(
        &["explain", "-c", &without_ca, "http://api.github.com/x"],
        &[("T", "tok-value")],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("403 plain_http_refused (Proxy-Status: http_request_denied)"),
        "{out}"
    );
}

/// A second instance on the same address fails at once, naming the address and its holder,
/// instead of retrying for half a minute and staying alive without listeners.
#[test]
fn a_taken_listener_address_fails_fast_with_one_line() {
    let p = common::Proxy::start("credentials:\n  gh: { type: bearer, token: t1234567 }\nroutes:\n  - { host: api.github.com, credential: gh }\n");
    let free = common::free_port();
    let cfg = std::fs::read_to_string(p.config_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listen_taken = write(
        &dir,
        &cfg.replace(
            &format!("admin: {}", p.admin),
            &format!("admin: 127.0.0.1:{free}"),
        ),
    );
    let f2 = dir.path().join("second.yaml");
    std::fs::write(
        &f2,
        cfg.replace(
            &format!("listen: {}", p.addr),
            &format!("listen: 127.0.0.1:{free}"),
        ),
    )
    .unwrap();
    for (file, addr, key) in [
        (listen_taken, p.addr, "proxy.listen"),
        (f2.to_str().unwrap().to_string(), p.admin, "proxy.admin"),
    ] {
        let (code, _, err) = run(&["run", "-c", &file], &[]);
        assert_eq!(code, 1, "{err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(
            errors[0].contains(&format!("cannot listen on {addr} ({key}): address already in use, held by credproxy (pid {})", p.pid())),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn schema_is_json_schema_of_the_config() {
    let (code, out, _) = run(&["schema"], &[]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["$schema"].as_str().unwrap().contains("json-schema.org"));
    let text = out.as_str();
    for key in [
        "listen",
        "unmatched",
        "max_body",
        "routes",
        "strip_prefix",
        "credentials",
        "bearer",
        "headers",
        "basic",
    ] {
        assert!(text.contains(key), "schema lacks {key}");
    }
}

/// The types `credproxy schema` knows, from its `type` consts.
fn schema_types() -> Vec<String> {
    let (code, out, _) = run(&["schema"], &[]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let branches = v["$defs"]["Credential"]["oneOf"]
        .as_array()
        .unwrap()
        .clone();
    branches
        .iter()
        .map(|b| {
            b["properties"]["type"]["const"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn unknown_type_error_lists_every_type_the_schema_knows() {
    let types = schema_types();
    assert_eq!(types.len(), 10, "{types:?}");
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "credentials:\n  x: { type: nope }\n  y: { token: t }\n",
    );
    let (code, _, err) = run(&["check", "--offline", "-c", &f], &[]);
    assert_eq!(code, 2, "{err}");
    let unknown = err
        .lines()
        .find(|l| l.contains("unknown credential type `nope`"));
    let missing = err.lines().find(|l| l.contains("missing `type`"));
    for line in [unknown, missing] {
        let line = line.unwrap_or_else(|| panic!("{err}"));
        for t in &types {
            assert!(line.contains(t.as_str()), "`{t}` missing from: {line}");
        }
    }
}

#[test]
fn help_and_version() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for cmd in ["run", "check", "explain", "schema", "ca"] {
        assert!(out.contains(cmd), "{out}");
    }
    let (code, out, _) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("credproxy {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, _, _) = run(&["frobnicate"], &[]);
    assert_eq!(code, 2, "bad usage exits 2");
}
