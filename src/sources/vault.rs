//! `vault`: HashiCorp Vault KV v2 reads over HTTP. The token is `VAULT_TOKEN`, or one from a
//! Kubernetes login (`VAULT_K8S_ROLE`, the pod's service-account token); it is renewed before
//! it runs out, and a Kubernetes login is made again when renewal is refused.

use std::time::{Duration, Instant};

use super::{Clients, Fetched};
use crate::secret::Secret;

const K8S_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The token in use and when it needs renewing.
#[derive(Default)]
pub struct TokenState {
    held: tokio::sync::Mutex<Option<Held>>,
}

struct Held {
    token: Secret,
    /// None: no known expiry (a root token, or lookup refused).
    renew_at: Option<Instant>,
    from_login: bool,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn addr() -> Result<String, String> {
    env("VAULT_ADDR")
        .map(|a| a.trim_end_matches('/').to_string())
        .ok_or_else(|| "VAULT_ADDR is not set".to_string())
}

/// Reads `path` (`secret/data/app`) and picks `key`, or the only field.
pub async fn fetch(path: &str, key: Option<&str>, clients: &Clients) -> Result<Fetched, String> {
    let http = clients.http()?;
    let base = addr()?;
    let token = clients.vault.token(http, &base).await?;
    let url = format!("{base}/v1/{}", path.trim_start_matches('/'));
    let resp = with_namespace(http.get(&url).header("x-vault-token", token.expose()))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let body = super::json_of(resp).await;
    if status == reqwest::StatusCode::FORBIDDEN {
        // A revoked or expired token: the next read starts from a fresh one.
        clients.vault.forget().await;
    }
    if !status.is_success() {
        return Err(format!(
            "vault answered {status} for {path}: {}",
            errors(&body)
        ));
    }
    let data = &body["data"]["data"];
    let Some(fields) = data.as_object() else {
        return Err(format!(
            "{path} is not a KV v2 secret (no data.data): write the path with /data/, \
             e.g. secret/data/app"
        ));
    };
    let value = match key {
        Some(k) => fields
            .get(k)
            .ok_or_else(|| format!("{path} has no field `{k}`"))?,
        None if fields.len() == 1 => fields.values().next().unwrap_or(&serde_json::Value::Null),
        None => {
            let names: Vec<&str> = fields.keys().map(String::as_str).collect();
            return Err(format!(
                "{path} has {} fields: pick one with #key (fields: {})",
                names.len(),
                names.join(", ")
            ));
        }
    };
    match value {
        serde_json::Value::String(s) => Ok(Fetched {
            value: s.clone(),
            expires_at: None,
        }),
        _ => Err(format!("the field of {path} is not a string")),
    }
}

fn with_namespace(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match env("VAULT_NAMESPACE") {
        Some(ns) => req.header("x-vault-namespace", ns),
        None => req,
    }
}

fn errors(body: &serde_json::Value) -> String {
    match body["errors"].as_array() {
        Some(list) if !list.is_empty() => list
            .iter()
            .filter_map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        _ => "no error message".to_string(),
    }
}

impl TokenState {
    /// A token good for a while: the held one, renewed when due, or a new one.
    async fn token(&self, http: &reqwest::Client, base: &str) -> Result<Secret, String> {
        let mut held = self.held.lock().await;
        if let Some(h) = held.as_mut() {
            if h.renew_at.is_none_or(|at| Instant::now() < at) {
                return Ok(h.token.clone());
            }
            match renew(http, base, &h.token).await {
                Ok(ttl) => {
                    h.renew_at = ttl.map(renew_point);
                    return Ok(h.token.clone());
                }
                Err(e) if !h.from_login => {
                    tracing::warn!("vault token renewal failed, using it as it is: {e}");
                    h.renew_at = None;
                    return Ok(h.token.clone());
                }
                Err(e) => tracing::warn!("vault token renewal failed, logging in again: {e}"),
            }
        }
        let fresh = obtain(http, base).await?;
        let token = fresh.token.clone();
        *held = Some(fresh);
        Ok(token)
    }

    async fn forget(&self) {
        *self.held.lock().await = None;
    }
}

/// Renew when two thirds of the lifetime has gone.
fn renew_point(ttl: Duration) -> Instant {
    Instant::now() + ttl * 2 / 3
}

/// `VAULT_TOKEN` (its lifetime looked up), else a Kubernetes login.
async fn obtain(http: &reqwest::Client, base: &str) -> Result<Held, String> {
    if let Some(t) = env("VAULT_TOKEN") {
        let token = Secret::new(t);
        let ttl = lookup_ttl(http, base, &token).await;
        return Ok(Held {
            token,
            renew_at: ttl.map(renew_point),
            from_login: false,
        });
    }
    let Some(role) = env("VAULT_K8S_ROLE") else {
        return Err(
            "no Vault token: set VAULT_TOKEN, or VAULT_K8S_ROLE for Kubernetes auth".into(),
        );
    };
    let (token, ttl) = k8s_login(http, base, &role).await?;
    Ok(Held {
        token,
        renew_at: ttl.map(renew_point),
        from_login: true,
    })
}

/// The token's remaining lifetime if it is renewable; None for tokens that never expire or
/// cannot be renewed (then it is used until refused).
async fn lookup_ttl(http: &reqwest::Client, base: &str, token: &Secret) -> Option<Duration> {
    let url = format!("{base}/v1/auth/token/lookup-self");
    let resp = with_namespace(http.get(&url).header("x-vault-token", token.expose()))
        .send()
        .await
        .ok()?;
    let v = super::json_of(resp).await;
    let renewable = v["data"]["renewable"].as_bool().unwrap_or(false);
    let ttl = v["data"]["ttl"].as_u64().filter(|t| *t > 0)?;
    renewable.then(|| Duration::from_secs(ttl))
}

async fn renew(
    http: &reqwest::Client,
    base: &str,
    token: &Secret,
) -> Result<Option<Duration>, String> {
    let url = format!("{base}/v1/auth/token/renew-self");
    let v = post(http, &url, Some(token), "{}".into(), "renew-self").await?;
    Ok(lease(&v))
}

/// A JSON POST; the answer, or what Vault said went wrong.
async fn post(
    http: &reqwest::Client,
    url: &str,
    token: Option<&Secret>,
    body: String,
    what: &str,
) -> Result<serde_json::Value, String> {
    let mut req = with_namespace(http.post(url)).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("x-vault-token", t.expose());
    }
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let v = super::json_of(resp).await;
    if !status.is_success() {
        return Err(format!("{what} answered {status}: {}", errors(&v)));
    }
    Ok(v)
}

fn lease(v: &serde_json::Value) -> Option<Duration> {
    v["auth"]["lease_duration"]
        .as_u64()
        .filter(|t| *t > 0)
        .map(Duration::from_secs)
}

/// `POST /v1/auth/<mount>/login` with the pod's service-account token.
async fn k8s_login(
    http: &reqwest::Client,
    base: &str,
    role: &str,
) -> Result<(Secret, Option<Duration>), String> {
    let file = env("VAULT_K8S_TOKEN_FILE").unwrap_or_else(|| K8S_TOKEN_FILE.to_string());
    let jwt = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read the service-account token {file}: {e}"))?;
    let mount = env("VAULT_K8S_MOUNT").unwrap_or_else(|| "kubernetes".to_string());
    let url = format!("{base}/v1/auth/{mount}/login");
    let body = serde_json::json!({ "role": role, "jwt": jwt.trim() }).to_string();
    let v = post(http, &url, None, body, "Kubernetes login").await?;
    let token = v["auth"]["client_token"]
        .as_str()
        .ok_or("Kubernetes login answer has no auth.client_token")?;
    Ok((Secret::new(token), lease(&v)))
}
