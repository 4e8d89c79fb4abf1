//! The standard AWS credential chain, in the SDKs' order: environment, shared profile, web
//! identity (IRSA), ECS container credentials, EC2 instance metadata (IMDSv2).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::secret::Secret;

/// Temporary or long-lived AWS credentials.
#[derive(Clone, Debug)]
pub struct Creds {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    pub expires_at: Option<SystemTime>,
    /// Which link of the chain gave them, for messages.
    pub from: &'static str,
}

/// Credentials are used until this long before they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
/// Metadata endpoints answer at once where they exist; elsewhere, give up quickly.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// The chain's last answer, reused until it nears expiry.
#[derive(Default)]
pub struct CredentialCache {
    held: tokio::sync::Mutex<Option<Creds>>,
}

impl CredentialCache {
    pub async fn get(&self, http: &reqwest::Client, region: &str) -> Result<Creds, String> {
        let mut held = self.held.lock().await;
        if let Some(c) = held.as_ref().filter(|c| fresh(c)) {
            return Ok(c.clone());
        }
        let c = resolve(http, region).await?;
        *held = Some(c.clone());
        Ok(c)
    }
}

fn fresh(c: &Creds) -> bool {
    c.expires_at
        .is_none_or(|at| at > SystemTime::now() + EXPIRY_MARGIN)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `AWS_REGION`, `AWS_DEFAULT_REGION`, then the profile's `region`.
pub fn default_region() -> Option<String> {
    env("AWS_REGION")
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| profile_value(&config_file(), &profile_name(), true, "region"))
}

/// Tries each link in turn; the error lists why each one did not apply.
async fn resolve(http: &reqwest::Client, region: &str) -> Result<Creds, String> {
    let mut tried = Vec::new();
    if let Some(c) = from_env() {
        return Ok(c);
    }
    tried.push("environment: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY not set".to_string());
    match from_profile() {
        Ok(c) => return Ok(c),
        Err(e) => tried.push(format!("profile: {e}")),
    }
    match from_web_identity(http, region).await {
        Ok(Some(c)) => return Ok(c),
        Ok(None) => tried.push("web identity: AWS_WEB_IDENTITY_TOKEN_FILE not set".into()),
        Err(e) => return Err(format!("web identity: {e}")),
    }
    match from_ecs(http).await {
        Ok(Some(c)) => return Ok(c),
        Ok(None) => tried.push("ECS: AWS_CONTAINER_CREDENTIALS_*_URI not set".into()),
        Err(e) => return Err(format!("ECS container credentials: {e}")),
    }
    match from_imds(http).await {
        Ok(c) => Ok(c),
        Err(e) => {
            tried.push(format!("EC2 instance metadata: {e}"));
            Err(format!("no AWS credentials found ({})", tried.join("; ")))
        }
    }
}

fn from_env() -> Option<Creds> {
    Some(Creds {
        access_key_id: Secret::new(env("AWS_ACCESS_KEY_ID")?),
        secret_access_key: Secret::new(env("AWS_SECRET_ACCESS_KEY")?),
        session_token: env("AWS_SESSION_TOKEN").map(Secret::new),
        expires_at: None,
        from: "environment",
    })
}

fn home() -> PathBuf {
    PathBuf::from(env("HOME").unwrap_or_default())
}

fn credentials_file() -> PathBuf {
    env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".aws/credentials"))
}

fn config_file() -> PathBuf {
    env("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".aws/config"))
}

fn profile_name() -> String {
    env("AWS_PROFILE").unwrap_or_else(|| "default".to_string())
}

/// Static keys of the profile, from the credentials file or the config file.
fn from_profile() -> Result<Creds, String> {
    let name = profile_name();
    let read = |key: &str| {
        profile_value(&credentials_file(), &name, false, key)
            .or_else(|| profile_value(&config_file(), &name, true, key))
    };
    let (Some(id), Some(secret)) = (read("aws_access_key_id"), read("aws_secret_access_key"))
    else {
        return Err(format!("no static keys for profile `{name}`"));
    };
    Ok(Creds {
        access_key_id: Secret::new(id),
        secret_access_key: Secret::new(secret),
        session_token: read("aws_session_token").map(Secret::new),
        expires_at: None,
        from: "profile",
    })
}

/// `key` in section `profile` of an INI file (`[profile NAME]` in the config file, except
/// for `default`).
pub fn profile_value(file: &PathBuf, profile: &str, config: bool, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    ini_value(&text, profile, config, key)
}

fn ini_value(text: &str, profile: &str, config: bool, key: &str) -> Option<String> {
    let wanted = match (config, profile) {
        (true, p) if p != "default" => format!("profile {p}"),
        (_, p) => p.to_string(),
    };
    let mut in_section = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = section.trim() == wanted;
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            if k.trim() == key {
                return Some(v.trim().to_string()).filter(|v| !v.is_empty());
            }
        }
    }
    None
}

/// IRSA: `AssumeRoleWithWebIdentity` with the projected service-account token.
async fn from_web_identity(http: &reqwest::Client, region: &str) -> Result<Option<Creds>, String> {
    let (Some(file), Some(role)) = (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN")) else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {file}: {e}"))?;
    let session = env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "credproxy".to_string());
    let base = super::endpoint("sts", "AWS_ENDPOINT_URL_STS", region);
    let resp = http
        .post(format!("{base}/"))
        .form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role.as_str()),
            ("RoleSessionName", session.as_str()),
            ("WebIdentityToken", token.trim()),
        ])
        .send()
        .await
        .map_err(|e| format!("{base}: {e}"))?;
    let status = resp.status();
    let xml = resp.text().await.map_err(|e| format!("{base}: {e}"))?;
    if !status.is_success() {
        let code = xml_value(&xml, "Code").unwrap_or_default();
        let msg = xml_value(&xml, "Message").unwrap_or_default();
        return Err(format!("STS answered {status}: {code}: {msg}"));
    }
    let field = |k: &str| xml_value(&xml, k).ok_or_else(|| format!("STS answer has no {k}"));
    Ok(Some(Creds {
        access_key_id: Secret::new(field("AccessKeyId")?),
        secret_access_key: Secret::new(field("SecretAccessKey")?),
        session_token: Some(Secret::new(field("SessionToken")?)),
        expires_at: xml_value(&xml, "Expiration").and_then(|t| crate::sources::exec::rfc3339(&t)),
        from: "web identity",
    }))
}

/// The text of the first `<tag>...</tag>` (STS answers are flat enough for this).
fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..start + end].trim().to_string())
}

/// ECS and EKS Pod Identity: the container credentials endpoint.
async fn from_ecs(http: &reqwest::Client) -> Result<Option<Creds>, String> {
    let url = match (
        env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        env("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
    ) {
        (Some(rel), _) => format!("http://169.254.170.2{rel}"),
        (None, Some(full)) => full,
        (None, None) => return Ok(None),
    };
    let mut req = http.get(&url).timeout(METADATA_TIMEOUT);
    let token = match env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Some(f) => Some(std::fs::read_to_string(&f).map_err(|e| format!("cannot read {f}: {e}"))?),
        None => env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
    };
    if let Some(t) = token {
        req = req.header("authorization", t.trim());
    }
    let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    metadata_creds(resp, "ECS").await.map(Some)
}

/// EC2 instance metadata, version 2 (a session token first).
async fn from_imds(http: &reqwest::Client) -> Result<Creds, String> {
    if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err("disabled by AWS_EC2_METADATA_DISABLED".to_string());
    }
    let base = env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or_else(|| "http://169.254.169.254".to_string());
    let base = base.trim_end_matches('/');
    let fail = |e: reqwest::Error| format!("{base}: {e}");
    let token = http
        .put(format!("{base}/latest/api/token"))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
        .timeout(METADATA_TIMEOUT)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(fail)?
        .text()
        .await
        .map_err(fail)?;
    let list = format!("{base}/latest/meta-data/iam/security-credentials/");
    let get = |url: String| {
        http.get(url)
            .header("x-aws-ec2-metadata-token", token.trim())
            .timeout(METADATA_TIMEOUT)
            .send()
    };
    let roles = get(list.clone())
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(fail)?
        .text()
        .await
        .map_err(fail)?;
    let role = roles.lines().next().map(str::trim).unwrap_or("");
    if role.is_empty() {
        return Err("no instance profile role".to_string());
    }
    let resp = get(format!("{list}{role}")).await.map_err(fail)?;
    metadata_creds(resp, "EC2 instance metadata").await
}

/// The JSON both metadata endpoints answer with.
async fn metadata_creds(resp: reqwest::Response, from: &'static str) -> Result<Creds, String> {
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    let v = crate::sources::json_of(resp).await;
    let field = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("answer has no {k}"))
    };
    Ok(Creds {
        access_key_id: Secret::new(field("AccessKeyId")?),
        secret_access_key: Secret::new(field("SecretAccessKey")?),
        session_token: field("Token").ok().map(Secret::new),
        expires_at: v["Expiration"]
            .as_str()
            .and_then(crate::sources::exec::rfc3339),
        from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_sections_as_the_sdks_read_them() {
        let creds = "[default]\naws_access_key_id = AKIDDEFAULT\n\n[ci]\naws_access_key_id=AKIDCI\naws_secret_access_key = s\n";
        assert_eq!(
            ini_value(creds, "default", false, "aws_access_key_id").unwrap(),
            "AKIDDEFAULT"
        );
        assert_eq!(
            ini_value(creds, "ci", false, "aws_access_key_id").unwrap(),
            "AKIDCI"
        );
        assert!(ini_value(creds, "ci", false, "aws_session_token").is_none());
        let config = "[default]\nregion = eu-west-1\n[profile ci]\nregion = us-east-2\n";
        assert_eq!(
            ini_value(config, "ci", true, "region").unwrap(),
            "us-east-2"
        );
        assert_eq!(
            ini_value(config, "default", true, "region").unwrap(),
            "eu-west-1"
        );
    }

    #[test]
    fn sts_answers_are_read() {
        let xml =
            "<AssumeRoleWithWebIdentityResponse><Credentials><AccessKeyId>ASIA1</AccessKeyId>\
                   <SessionToken>tok</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration>\
                   </Credentials></AssumeRoleWithWebIdentityResponse>";
        assert_eq!(xml_value(xml, "AccessKeyId").unwrap(), "ASIA1");
        assert!(xml_value(xml, "SecretAccessKey").is_none());
    }
}
