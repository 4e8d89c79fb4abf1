//! `aws_secret` and `aws_parameter`: Secrets Manager `GetSecretValue` and SSM `GetParameter`
//! over their JSON protocol, signed with `aws-sigv4`; credentials from the standard chain.

mod chain;

use std::time::SystemTime;

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_smithy_runtime_api::client::identity::Identity;

pub use chain::{default_region, CredentialCache, Creds};

use super::{Clients, Fetched, Origin};

/// The service a source reads, and how its API is called.
struct Api {
    /// Signing name and endpoint prefix.
    service: &'static str,
    /// `AWS_ENDPOINT_URL_<SERVICE>`.
    endpoint_env: &'static str,
    target: &'static str,
}

const SECRETS_MANAGER: Api = Api {
    service: "secretsmanager",
    endpoint_env: "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    target: "secretsmanager.GetSecretValue",
};
const SSM: Api = Api {
    service: "ssm",
    endpoint_env: "AWS_ENDPOINT_URL_SSM",
    target: "AmazonSSM.GetParameter",
};

/// Reads an `aws_secret` or `aws_parameter` origin.
pub async fn fetch(origin: &Origin, clients: &Clients) -> Result<Fetched, String> {
    let (api, name, key, region, body) = match origin {
        Origin::AwsSecret { id, key, region } => (
            &SECRETS_MANAGER,
            id,
            key,
            region,
            serde_json::json!({ "SecretId": id }),
        ),
        Origin::AwsParameter { name, key, region } => (
            &SSM,
            name,
            key,
            region,
            serde_json::json!({ "Name": name, "WithDecryption": true }),
        ),
        _ => return Err("not an AWS source".to_string()),
    };
    let region = region
        .clone()
        .or_else(chain::default_region)
        .ok_or_else(|| "no AWS region: set `region:` on the source or AWS_REGION".to_string())?;
    let http = clients.http()?;
    let creds = clients.aws.get(http, &region).await?;
    let reply = call(http, api, &region, &creds, &body).await?;
    let text = match api.service {
        "ssm" => parameter_value(&reply, name)?,
        _ => secret_value(&reply, name)?,
    };
    let value = match key {
        Some(k) => json_field(&text, k, name)?,
        None => text,
    };
    Ok(Fetched {
        value,
        expires_at: None,
    })
}

/// The service an AWS origin calls and the region it names.
fn api_of(origin: &Origin) -> Option<(&'static Api, &Option<String>)> {
    match origin {
        Origin::AwsSecret { region, .. } => Some((&SECRETS_MANAGER, region)),
        Origin::AwsParameter { region, .. } => Some((&SSM, region)),
        _ => None,
    }
}

/// The address an AWS origin is read from (for the startup log).
pub fn endpoint_of(origin: &Origin) -> Option<String> {
    let (api, region) = api_of(origin)?;
    let region = region
        .clone()
        .or_else(default_region)
        .unwrap_or_else(|| "(no region)".to_string());
    Some(endpoint(api.service, api.endpoint_env, &region))
}

/// The endpoint for `api` in `region`, honouring the SDKs' overrides.
pub fn endpoint(service: &str, endpoint_env: &str, region: &str) -> String {
    let set = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    set(endpoint_env)
        .or_else(|| set("AWS_ENDPOINT_URL"))
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("https://{service}.{region}.amazonaws.com"))
}

/// One signed JSON-protocol call; the service's error type and message on failure.
async fn call(
    http: &reqwest::Client,
    api: &Api,
    region: &str,
    creds: &Creds,
    body: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let url = endpoint(api.service, api.endpoint_env, region);
    let body = body.to_string();
    let parsed = url::Url::parse(&url).map_err(|e| format!("bad endpoint {url}: {e}"))?;
    let host = match (parsed.host_str(), parsed.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => return Err(format!("endpoint {url} has no host")),
    };
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", api.target),
    ];
    let signed = signed_headers(&url, &headers, body.as_bytes(), creds, region, api.service)?;
    let mut req = http.post(&url).body(body);
    for (k, v) in headers.iter().skip(1) {
        req = req.header(*k, *v);
    }
    for (k, v) in signed {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| format!("{url} answered {status} with a body that is not JSON"))?;
    if !status.is_success() {
        return Err(service_error(api.service, status, &json));
    }
    Ok(json)
}

fn service_error(service: &str, status: reqwest::StatusCode, json: &serde_json::Value) -> String {
    let kind = json["__type"].as_str().unwrap_or("error");
    let kind = kind.rsplit('#').next().unwrap_or(kind);
    let msg = json["message"]
        .as_str()
        .or(json["Message"].as_str())
        .unwrap_or("");
    format!("{service} answered {status}: {kind}: {msg}")
}

/// The headers SigV4 adds (`authorization`, `x-amz-date`, `x-amz-security-token`).
fn signed_headers(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    creds: &Creds,
    region: &str,
    service: &str,
) -> Result<Vec<(String, String)>, String> {
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("cannot sign: {e}"))?;
    let identity: Identity = aws_credential_types::Credentials::new(
        creds.access_key_id.expose(),
        creds.secret_access_key.expose(),
        creds.session_token.as_ref().map(|t| t.expose().to_string()),
        None,
        "credproxy-secret-source",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot sign: {e}"))?
        .into();
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("cannot sign: {e}"))?
        .into_parts();
    let (headers, _) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name().to_string(), h.value().to_string()))
        .collect())
}

fn secret_value(reply: &serde_json::Value, id: &str) -> Result<String, String> {
    if let Some(s) = reply["SecretString"].as_str() {
        return Ok(s.to_string());
    }
    if reply.get("SecretBinary").is_some() {
        return Err(format!(
            "secret {id} is binary (SecretBinary): credproxy reads SecretString secrets only; \
             store it as text (base64 it yourself if need be)"
        ));
    }
    Err(format!("secret {id} has no SecretString"))
}

fn parameter_value(reply: &serde_json::Value, name: &str) -> Result<String, String> {
    reply["Parameter"]["Value"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("parameter {name} came back without a value"))
}

/// `#key`: a field of a JSON object; strings as they are, numbers and booleans as written.
pub fn json_field(text: &str, key: &str, name: &str) -> Result<String, String> {
    let obj: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| format!("{name} is not JSON, so `#{key}` cannot pick a field of it"))?;
    match obj.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Ok(v.to_string()),
        Some(_) => Err(format!("field `{key}` of {name} is not a string")),
        None => Err(format!("{name} has no field `{key}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields_and_errors() {
        assert_eq!(
            json_field(r#"{"token":"t1","n":3}"#, "token", "s").unwrap(),
            "t1"
        );
        assert_eq!(
            json_field(r#"{"token":"t1","n":3}"#, "n", "s").unwrap(),
            "3"
        );
        assert!(json_field("plain", "token", "s")
            .unwrap_err()
            .contains("not JSON"));
        assert!(json_field("{}", "token", "s")
            .unwrap_err()
            .contains("no field `token`"));
        assert!(json_field(r#"{"token":{}}"#, "token", "s")
            .unwrap_err()
            .contains("not a string"));
    }

    #[test]
    fn binary_secrets_are_refused_by_name() {
        let reply = serde_json::json!({ "SecretBinary": "AAEC" });
        let e = secret_value(&reply, "prod/cert").unwrap_err();
        assert!(e.contains("prod/cert is binary"), "{e}");
    }

    #[test]
    fn service_errors_keep_type_and_message() {
        let body = serde_json::json!({
            "__type": "com.amazonaws#ResourceNotFoundException",
            "message": "Secrets Manager can't find the specified secret."
        });
        let e = service_error("secretsmanager", reqwest::StatusCode::BAD_REQUEST, &body);
        assert!(
            e.contains("ResourceNotFoundException: Secrets Manager can't find"),
            "{e}"
        );
    }
}
