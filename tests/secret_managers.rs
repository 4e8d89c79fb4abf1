//! Secret managers through the binary: AWS Secrets Manager and SSM Parameter Store on `moto`
//! in server mode (a real implementation of those APIs), with keys from the environment and
//! from web identity (STS on moto); Vault KV v2 on a stand-in following Vault's documented
//! API (no Vault server can be installed here), with a static token and a Kubernetes login
//! that is renewed and, when renewal is refused, made again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn moto() -> Server {
    moto_server()
}

/// Creates secrets and parameters on moto with boto3.
fn seed_moto(port: u16, script: &str) {
    let code = format!(
        "import boto3\nkw = dict(endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\nsm = boto3.client('secretsmanager', **kw)\nssm = boto3.client('ssm', **kw)\n{script}\n"
    );
    let out = Command::new("python3")
        .args(["-c", &code])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Prints how long each source's first read took (for the README's figures).
fn print_reads(p: &Proxy) {
    for l in p
        .log_text()
        .lines()
        .filter(|l| l.contains("secret source read"))
    {
        eprintln!("{l}");
    }
}

fn get(p: &Proxy, url: &str) -> (u16, String) {
    let rt = runtime();
    let resp = rt.block_on(p.client().get(url).send()).unwrap();
    let status = resp.status().as_u16();
    (status, rt.block_on(resp.text()).unwrap())
}

fn aws_config(origin: &Origin) -> String {
    let port = origin.port();
    format!(
        "credentials:\n\
         \x20 sm: {{ type: bearer, token: {{ aws_secret: \"prod/github#token\" }} }}\n\
         \x20 sm_whole: {{ type: bearer, token: {{ aws_secret: prod/plain, region: us-east-1 }} }}\n\
         \x20 param: {{ type: bearer, token: {{ aws_parameter: /prod/api/key }} }}\n\
         \x20 binary: {{ type: bearer, token: {{ aws_secret: prod/binary }} }}\n\
         \x20 missing: {{ type: bearer, token: {{ aws_secret: prod/nope }} }}\n\
         routes:\n\
         \x20 - {{ host: \"127.0.0.1:{port}\", path: /sm/*, credential: sm }}\n\
         \x20 - {{ host: \"127.0.0.1:{port}\", path: /whole/*, credential: sm_whole }}\n\
         \x20 - {{ host: \"127.0.0.1:{port}\", path: /param/*, credential: param }}\n\
         \x20 - {{ host: \"127.0.0.1:{port}\", path: /binary/*, credential: binary }}\n\
         \x20 - {{ host: \"127.0.0.1:{port}\", path: /missing/*, credential: missing }}\n"
    )
}

const SEED: &str = "sm.create_secret(Name='prod/github', SecretString='{\"token\": \"gh-token-from-sm-001\", \"user\": \"bot\"}')\n\
sm.create_secret(Name='prod/plain', SecretString='plain-secret-from-sm-01')\n\
sm.create_secret(Name='prod/binary', SecretBinary=b'\\x00\\x01binary')\n\
ssm.put_parameter(Name='/prod/api/key', Value='ssm-secure-value-0001', Type='SecureString')";

#[test]
fn aws_secrets_and_parameters_from_moto() {
    for s in [
        "gh-token-from-sm-001",
        "plain-secret-from-sm-01",
        "ssm-secure-value-0001",
    ] {
        register_secret(s);
    }
    let m = moto();
    seed_moto(m.port, SEED);
    let origin = Origin::start();
    let endpoint = format!("http://127.0.0.1:{}", m.port);
    let p = Proxy::start_with(
        "",
        &aws_config(&origin),
        &[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    let base = format!("http://127.0.0.1:{}", origin.port());
    for (path, want) in [
        ("/sm/1", "Bearer gh-token-from-sm-001"),
        ("/whole/1", "Bearer plain-secret-from-sm-01"),
        ("/param/1", "Bearer ssm-secure-value-0001"),
    ] {
        let (status, body) = get(&p, &format!("{base}{path}"));
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(origin.last().header("authorization").unwrap(), want);
    }
    let (status, body) = get(&p, &format!("{base}/binary/1"));
    assert_eq!(status, 502);
    assert!(body.contains("prod/binary is binary"), "{body}");
    let (status, body) = get(&p, &format!("{base}/missing/1"));
    assert_eq!(status, 502);
    assert!(body.contains("ResourceNotFoundException"), "{body}");
    assert!(
        p.log_text().contains(&format!("127.0.0.1:{}", m.port)),
        "the secret manager's address is logged"
    );
    print_reads(&p);

    // Rotated in Secrets Manager: in use after a reload.
    seed_moto(
        m.port,
        "sm.put_secret_value(SecretId='prod/plain', SecretString='plain-secret-from-sm-02')",
    );
    register_secret("plain-secret-from-sm-02");
    let answer = admin_post(p.admin, "/reload");
    assert!(answer.contains("\"reloaded\""), "{answer}");
    get(&p, &format!("{base}/whole/2"));
    assert_eq!(
        origin.last().header("authorization").unwrap(),
        "Bearer plain-secret-from-sm-02"
    );
}

#[test]
fn aws_credentials_from_web_identity() {
    register_secret("plain-secret-from-sm-01");
    let m = moto();
    seed_moto(m.port, SEED);
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJ.web-identity.token").unwrap();
    let endpoint = format!("http://127.0.0.1:{}", m.port);
    let p = Proxy::start_with(
        "",
        &aws_config(&origin),
        &[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/credproxy"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("HOME", dir.path().to_str().unwrap()),
        ],
    );
    let (status, body) = get(&p, &format!("http://127.0.0.1:{}/whole/1", origin.port()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        origin.last().header("authorization").unwrap(),
        "Bearer plain-secret-from-sm-01"
    );
    print_reads(&p);
}

#[test]
fn no_aws_credentials_says_what_was_tried() {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start_with(
        "",
        &aws_config(&origin),
        &[
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("HOME", dir.path().to_str().unwrap()),
        ],
    );
    let (status, body) = get(&p, &format!("http://127.0.0.1:{}/sm/1", origin.port()));
    assert_eq!(status, 502);
    assert!(body.contains("no AWS credentials found"), "{body}");
    assert!(body.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{body}");
}

fn vault(state: &Path) -> Server {
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vault_mock.py");
    let child = Command::new("python3")
        .args([script, &port.to_string(), state.to_str().unwrap()])
        .spawn()
        .unwrap();
    wait_listening(port);
    Server { child, port }
}

fn vault_config(origin: &Origin) -> String {
    format!(
        "credentials:\n  v: {{ type: bearer, token: {{ vault: \"secret/data/app#token\", refresh: 1s }} }}\n  one: {{ type: bearer, token: {{ vault: secret/data/single }} }}\n  many: {{ type: bearer, token: {{ vault: secret/data/app }} }}\nroutes:\n  - {{ host: \"127.0.0.1:{p}\", path: /v/*, credential: v }}\n  - {{ host: \"127.0.0.1:{p}\", path: /one/*, credential: one }}\n  - {{ host: \"127.0.0.1:{p}\", path: /many/*, credential: many }}\n",
        p = origin.port()
    )
}

fn seed_vault(state: &Path, app_token: &str) {
    register_secret(app_token);
    register_secret("single-vault-value-01");
    let secrets = serde_json::json!({
        "secret/data/app": { "token": app_token, "user": "bot" },
        "secret/data/single": { "key": "single-vault-value-01" },
    });
    std::fs::write(state.join("secrets.json"), secrets.to_string()).unwrap();
}

#[test]
fn vault_kv2_with_a_static_token_and_a_namespace() {
    let state = tempfile::tempdir().unwrap();
    seed_vault(state.path(), "vault-app-token-0001");
    let v = vault(state.path());
    let origin = Origin::start();
    let addr = format!("http://127.0.0.1:{}", v.port);
    let p = Proxy::start_with(
        "",
        &vault_config(&origin),
        &[
            ("VAULT_ADDR", &addr),
            ("VAULT_TOKEN", "root-token"),
            ("VAULT_NAMESPACE", "team-a"),
        ],
    );
    let base = format!("http://127.0.0.1:{}", origin.port());
    assert_eq!(get(&p, &format!("{base}/v/1")).0, 200);
    assert_eq!(
        origin.last().header("authorization").unwrap(),
        "Bearer vault-app-token-0001"
    );
    assert_eq!(get(&p, &format!("{base}/one/1")).0, 200);
    assert_eq!(
        origin.last().header("authorization").unwrap(),
        "Bearer single-vault-value-01"
    );
    let (status, body) = get(&p, &format!("{base}/many/1"));
    assert_eq!(status, 502);
    assert!(body.contains("pick one with #key"), "{body}");
    let log = std::fs::read_to_string(state.path().join("log")).unwrap();
    assert!(log.lines().all(|l| l.ends_with(" team-a")), "{log}");
    print_reads(&p);
    // Rotated in Vault: in use within a refresh, with no reload.
    seed_vault(state.path(), "vault-app-token-0002");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        get(&p, &format!("{base}/v/2"));
        if origin.last().header("authorization").unwrap() == "Bearer vault-app-token-0002" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        origin.last().header("authorization").unwrap(),
        "Bearer vault-app-token-0002"
    );
}

#[test]
fn vault_kubernetes_login_is_renewed_and_made_again() {
    let state = tempfile::tempdir().unwrap();
    seed_vault(state.path(), "vault-app-token-0001");
    let v = vault(state.path());
    let origin = Origin::start();
    let jwt = state.path().join("sa-token");
    std::fs::write(&jwt, "k8s-jwt\n").unwrap();
    let addr = format!("http://127.0.0.1:{}", v.port);
    let p = Proxy::start_with(
        "",
        &vault_config(&origin),
        &[
            ("VAULT_ADDR", &addr),
            ("VAULT_K8S_ROLE", "credproxy"),
            ("VAULT_K8S_TOKEN_FILE", jwt.to_str().unwrap()),
        ],
    );
    let base = format!("http://127.0.0.1:{}", origin.port());
    assert_eq!(get(&p, &format!("{base}/v/1")).0, 200);
    print_reads(&p);
    // The 3 s lease is renewed at two thirds; the 1 s refresh keeps reading meanwhile.
    std::thread::sleep(Duration::from_secs(4));
    let log = std::fs::read_to_string(state.path().join("log")).unwrap();
    assert!(
        log.contains("POST /v1/auth/token/renew-self k8s-token-1"),
        "{log}"
    );
    std::fs::write(state.path().join("no-renew"), "").unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let log = std::fs::read_to_string(state.path().join("log")).unwrap();
    assert!(
        log.contains("k8s-token-2"),
        "renewal refused: logged in again\n{log}"
    );
    assert_eq!(get(&p, &format!("{base}/v/2")).0, 200);
    let all: serde_json::Value =
        serde_json::from_str(&http_get(p.admin, "/credentials").unwrap().1).unwrap();
    let v = all
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "v")
        .unwrap();
    assert_eq!(v["secrets"][0]["status"], "ok", "{v}");
}

fn metadata_mock(log: &Path) -> Server {
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aws_metadata_mock.py");
    let child = Command::new("python3")
        .args([script, &port.to_string(), log.to_str().unwrap()])
        .spawn()
        .unwrap();
    wait_listening(port);
    Server { child, port }
}

/// The last links of the chain, ECS container credentials and EC2 IMDSv2, on a stand-in
/// following their documented answers, then reading from moto with the keys they gave.
#[test]
fn aws_credentials_from_ecs_and_instance_metadata() {
    register_secret("plain-secret-from-sm-01");
    let m = moto();
    seed_moto(m.port, SEED);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("metadata.log");
    let md = metadata_mock(&log);
    let endpoint = format!("http://127.0.0.1:{}", m.port);
    let md_url = format!("http://127.0.0.1:{}", md.port);
    let ecs_url = format!("{md_url}/ecs/creds");
    let home = dir.path().to_str().unwrap();
    let base: Vec<(&str, &str)> = vec![
        ("AWS_ENDPOINT_URL", &endpoint),
        ("AWS_REGION", "us-east-1"),
        ("HOME", home),
    ];
    let cases: [(&str, Vec<(&str, &str)>); 2] = [
        (
            "GET /ecs/creds",
            vec![
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &ecs_url),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ecs-auth-token"),
            ],
        ),
        (
            "GET /latest/meta-data/iam/security-credentials/credproxy-role",
            vec![("AWS_EC2_METADATA_SERVICE_ENDPOINT", &md_url)],
        ),
    ];
    for (want, extra) in cases {
        let _ = std::fs::remove_file(&log);
        let origin = Origin::start();
        let env: Vec<(&str, &str)> = base.iter().chain(extra.iter()).copied().collect();
        let p = Proxy::start_with("", &aws_config(&origin), &env);
        let (status, body) = get(&p, &format!("http://127.0.0.1:{}/whole/1", origin.port()));
        assert_eq!(status, 200, "{want}: {body}");
        let seen = std::fs::read_to_string(&log).unwrap();
        assert!(seen.contains(want), "{seen}");
        if want.contains("latest") {
            assert!(
                seen.starts_with("PUT /latest/api/token"),
                "IMDSv2 session first: {seen}"
            );
        }
    }
}

/// The shared profile: static keys from `AWS_SHARED_CREDENTIALS_FILE` under `AWS_PROFILE`, and
/// the region from the config file's `[profile NAME]`.
#[test]
fn aws_credentials_and_region_from_a_profile() {
    register_secret("ssm-secure-value-0001");
    let m = moto();
    seed_moto(m.port, SEED);
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = AKIDWRONG\n[ci]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret-key\n",
    )
    .unwrap();
    let config = dir.path().join("config");
    std::fs::write(&config, "[profile ci]\nregion = us-east-1\n").unwrap();
    let endpoint = format!("http://127.0.0.1:{}", m.port);
    let p = Proxy::start_with(
        "",
        &aws_config(&origin),
        &[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_PROFILE", "ci"),
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("HOME", dir.path().to_str().unwrap()),
        ],
    );
    let (status, body) = get(&p, &format!("http://127.0.0.1:{}/param/1", origin.port()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        origin.last().header("authorization").unwrap(),
        "Bearer ssm-secure-value-0001"
    );
}
