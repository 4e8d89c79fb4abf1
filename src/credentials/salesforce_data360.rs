//! `salesforce_data360`: Salesforce Data 360 (Data Cloud) tokens in two steps.
//! Step 1: client-credentials token at `{login_url}/services/oauth2/token` (keeps `instance_url`).
//! Step 2: exchange it at `{instance_url}/services/a360/token`
//! (`grant_type=urn:salesforce:grant-type:external:cdp`). The Data 360 token is injected and
//! cached 5 minutes (never past its own expiry).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;

use super::oauth2_client_credentials::{exchange, fetched, oauth_error_detail, token_url};
use super::{BuildCtx, BuildError, Credential, Kind};
use crate::config::raw::{RawCache, SecretValue};
use crate::secret::Secret;
use crate::tokens::{FetchCx, Fetched, Policy, TokenError, TokenSource};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawData360 {
    /// `https://acme.my.salesforce.com`; step 1 uses `{login_url}/services/oauth2/token`.
    pub login_url: String,
    pub client_id: SecretValue,
    pub client_secret: SecretValue,
    /// Data space for the exchange. Default `default`.
    pub dataspace: Option<String>,
    pub cache: Option<RawCache>,
    /// Total time for each step. Default 10s.
    pub timeout: Option<String>,
}

pub const EXCHANGE_GRANT: &str = "urn:salesforce:grant-type:external:cdp";
pub const SUBJECT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

#[derive(Debug)]
pub struct Data360 {
    step1: reqwest::Url,
    step1_label: String,
    login_host: String,
    client_id: Secret,
    client_secret: Secret,
    dataspace: String,
    policy: Policy,
    timeout: Duration,
}

#[derive(Deserialize)]
struct Step1 {
    access_token: Option<String>,
    instance_url: Option<String>,
}

#[derive(Deserialize)]
struct Step2 {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
}

/// Step 2 goes where step 1 said; a lying answer must not receive the step-1 token. Accept the
/// login host itself, Salesforce's own domains, or loopback (tests).
pub fn instance_allowed(url: &reqwest::Url, login_host: &str) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let loopback = matches!(host.as_str(), "127.0.0.1" | "[::1]" | "localhost");
    if loopback {
        return matches!(url.scheme(), "http" | "https");
    }
    url.scheme() == "https"
        && (host == login_host
            || [".salesforce.com", ".force.com", ".sfdc.sh"]
                .iter()
                .any(|d| host.ends_with(d)))
}

impl Data360 {
    pub fn build(raw: &RawData360, ctx: &mut BuildCtx<'_>) -> Result<Self, BuildError> {
        let invalid = |key: &str, message: String| BuildError::Invalid {
            key: key.into(),
            message,
        };
        let base = raw.login_url.trim_end_matches('/');
        let (step1, label) = token_url(&format!("{base}/services/oauth2/token"))
            .map_err(|m| invalid("login_url", m))?;
        if step1.query().is_some() {
            return Err(invalid("login_url", "a login URL has no query".into()));
        }
        let ttl = super::cache_ttl(raw.cache.as_ref())?.unwrap_or(Duration::from_secs(300));
        let timeout = super::endpoint_timeout(raw.timeout.as_ref())?;
        Ok(Data360 {
            login_host: step1.host_str().unwrap_or_default().to_ascii_lowercase(),
            step1,
            step1_label: format!("{label} (step 1)"),
            client_id: ctx.identifier("client_id", &raw.client_id)?,
            client_secret: ctx.sent_secret("client_secret", &raw.client_secret)?,
            dataspace: raw.dataspace.clone().unwrap_or_else(|| "default".into()),
            policy: Policy {
                default_lifetime: Duration::from_secs(300),
                ttl: Some(ttl),
                keep: None,
            },
            timeout,
        })
    }

    async fn post(
        &self,
        http: &reqwest::Client,
        url: reqwest::Url,
        label: &str,
        form: &[(&str, &str)],
    ) -> Result<(u16, bytes::Bytes), TokenError> {
        let rb = http
            .post(url)
            .header(http::header::ACCEPT, "application/json")
            .form(form)
            .timeout(self.timeout);
        let (status, body) = exchange(rb, label).await?;
        if !(200..300).contains(&status) {
            return Err(TokenError::Status {
                endpoint: label.to_string(),
                status,
                detail: oauth_error_detail(&body),
            });
        }
        Ok((status, body))
    }

    /// Step 1: the core token and where to exchange it.
    async fn step1(&self, http: &reqwest::Client) -> Result<(Secret, reqwest::Url), TokenError> {
        let label = &self.step1_label;
        let bad = |reason: String| TokenError::BadResponse {
            endpoint: label.clone(),
            reason,
        };
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.expose()),
            ("client_secret", self.client_secret.expose()),
        ];
        let (status, body) = self.post(http, self.step1.clone(), label, &form).await?;
        let r: Step1 = serde_json::from_slice(&body)
            .map_err(|_| bad(format!("status {status} with a body that is not JSON")))?;
        let token = r
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("no access_token".into()))?;
        let instance = r
            .instance_url
            .ok_or_else(|| bad("no instance_url".into()))?;
        let instance = reqwest::Url::parse(instance.trim_end_matches('/'))
            .map_err(|_| bad("instance_url is not a URL".into()))?;
        if !instance_allowed(&instance, &self.login_host) {
            return Err(bad(format!(
                "instance_url host `{}` is not the login host or a Salesforce domain",
                instance.host_str().unwrap_or("")
            )));
        }
        let exchange = instance
            .join("/services/a360/token")
            .map_err(|_| bad("instance_url is not a base URL".into()))?;
        Ok((Secret::new(token), exchange))
    }
}

#[async_trait]
impl TokenSource for Data360 {
    async fn fetch(&self, cx: &FetchCx<'_>) -> Result<Fetched, TokenError> {
        let http = cx.http;
        let (core, exchange) = self.step1(http).await?;
        let label = format!(
            "{}://{}{} (step 2)",
            exchange.scheme(),
            exchange.host_str().unwrap_or(""),
            exchange.path()
        );
        let bad = |reason: String| TokenError::BadResponse {
            endpoint: label.clone(),
            reason,
        };
        let form = [
            ("grant_type", EXCHANGE_GRANT),
            ("subject_token", core.expose()),
            ("subject_token_type", SUBJECT_TOKEN_TYPE),
            ("dataspace", self.dataspace.as_str()),
        ];
        let (status, body) = self.post(http, exchange.clone(), &label, &form).await?;
        let r: Step2 = serde_json::from_slice(&body)
            .map_err(|_| bad(format!("status {status} with a body that is not JSON")))?;
        fetched(r.access_token, r.expires_in.as_ref(), status).map_err(bad)
    }

    fn policy(&self) -> Policy {
        self.policy
    }

    fn sent_secrets(&self) -> Vec<Secret> {
        vec![self.client_secret.clone()]
    }

    fn endpoint(&self) -> &str {
        &self.step1_label
    }

    fn identity(&self) -> String {
        format!(
            "salesforce_data360|{}|{}|{}|{}",
            self.step1,
            self.client_id.expose(),
            self.client_secret.expose(),
            self.dataspace
        )
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// `type: salesforce_data360`: the two-step Data 360 token exchange.
pub struct Data360Kind;

impl Kind for Data360Kind {
    const NAME: &'static str = "salesforce_data360";
    type Raw = RawData360;
    fn build(raw: &RawData360, ctx: &mut BuildCtx<'_>) -> Result<Credential, BuildError> {
        Ok(Credential::Token(Arc::new(Data360::build(raw, ctx)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_url_must_be_salesforce_or_login_host() {
        let ok = [
            "https://acme.my.salesforce.com",
            "https://login.example.com",
            "https://x.c360a.salesforce.com",
            "http://127.0.0.1:9000",
        ];
        for u in ok {
            assert!(
                instance_allowed(&reqwest::Url::parse(u).unwrap(), "login.example.com"),
                "{u}"
            );
        }
        let bad = [
            "http://acme.my.salesforce.com",
            "https://evil.example.net",
            "https://salesforce.com.evil.io",
            "https://evilsalesforce.com",
        ];
        for u in bad {
            assert!(
                !instance_allowed(&reqwest::Url::parse(u).unwrap(), "login.example.com"),
                "{u}"
            );
        }
    }
}
