//! `oauth2_client_credentials`: the client-credentials grant (RFC 6749 section 4.4), with the
//! four ways providers take the client secret: `basic` (RFC 6749 2.3.1), `post_body`,
//! `post_query` (everything in the query of a POST, Zoho-style) and `get_query`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{BuildCtx, BuildError, Credential, Kind};
use crate::config::raw::{AuthMethod, RawCache, SecretValue};
use crate::secret::Secret;
use crate::tokens::{FetchCx, Fetched, Policy, TokenError, TokenSource};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2ClientCredentials {
    /// https URL (http only to loopback); its query parameters are kept and merged.
    pub token_url: String,
    pub client_id: SecretValue,
    pub client_secret: SecretValue,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    /// Extra form parameters sent to the token endpoint.
    #[serde(default)]
    pub params: IndexMap<String, String>,
    pub auth_method: Option<AuthMethod>,
    pub cache: Option<RawCache>,
    /// Total time allowed for one token request. Default 10s.
    pub timeout: Option<String>,
}

#[derive(Debug)]
pub struct OAuth2ClientCredentials {
    url: reqwest::Url,
    /// scheme://host[:port]/path, for messages.
    endpoint: String,
    client_id: Secret,
    client_secret: Secret,
    /// grant_type, scope, audience and extra params, in that order.
    params: Vec<(String, String)>,
    auth_method: AuthMethod,
    policy: Policy,
    timeout: Duration,
    /// `identity()` hashed, once.
    digest: crate::tokens::IdentityMemo,
}

/// Checks a token endpoint URL: https, or http only to a loopback address (tests, local
/// sidecars). Returns the parsed URL and its printable form.
pub fn token_url(text: &str) -> Result<(reqwest::Url, String), String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials in the URL are not allowed; use client_id and client_secret".into(),
        );
    }
    if url.fragment().is_some() {
        return Err(format!("`{text}`: a token URL has no fragment"));
    }
    let host = url.host_str().unwrap_or_default().to_string();
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "`{text}`: token endpoints must use https (http is allowed only to loopback)"
            ))
        }
        s => return Err(format!("`{text}`: unsupported scheme `{s}`")),
    }
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let endpoint = format!("{}://{host}{port}{}", url.scheme(), url.path());
    Ok((url, endpoint))
}

impl OAuth2ClientCredentials {
    pub fn build(
        raw: &RawOAuth2ClientCredentials,
        ctx: &mut BuildCtx<'_>,
    ) -> Result<Self, BuildError> {
        let invalid = |key: &str, message: String| BuildError::Invalid {
            key: key.into(),
            message,
        };
        let (url, endpoint) = token_url(&raw.token_url).map_err(|m| invalid("token_url", m))?;
        let ttl = super::cache_ttl(raw.cache.as_ref())?;
        let timeout = super::endpoint_timeout(raw.timeout.as_ref())?;
        let mut params = vec![("grant_type".to_string(), "client_credentials".to_string())];
        if !raw.scopes.is_empty() {
            params.push(("scope".into(), raw.scopes.join(" ")));
        }
        if let Some(a) = &raw.audience {
            params.push(("audience".into(), a.clone()));
        }
        for (k, v) in &raw.params {
            if matches!(k.as_str(), "grant_type" | "client_id" | "client_secret") {
                return Err(invalid(
                    &format!("params.{k}"),
                    format!("`{k}` is set by credproxy"),
                ));
            }
            params.push((k.clone(), v.clone()));
        }
        let client_id = ctx.identifier("client_id", &raw.client_id)?;
        let client_secret = ctx.sent_secret("client_secret", &raw.client_secret)?;
        Ok(OAuth2ClientCredentials {
            digest: crate::tokens::IdentityMemo::default(),
            url,
            endpoint,
            client_id,
            client_secret,
            params,
            auth_method: raw.auth_method.unwrap_or(AuthMethod::Basic),
            policy: Policy {
                default_lifetime: Duration::from_secs(45),
                ttl,
                keep: None,
            },
            timeout,
        })
    }

    fn basic_header(&self) -> String {
        basic_header(&basic_pair(&self.client_id, &self.client_secret))
    }

    fn all_params(&self) -> Vec<(&str, &str)> {
        let mut p: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        p.push(("client_id", self.client_id.expose()));
        p.push(("client_secret", self.client_secret.expose()));
        p
    }

    fn request(&self, http: &reqwest::Client) -> reqwest::RequestBuilder {
        let own: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let rb = match self.auth_method {
            AuthMethod::Basic => http
                .post(self.url.clone())
                .header(http::header::AUTHORIZATION, self.basic_header())
                .form(&own),
            AuthMethod::PostBody => http.post(self.url.clone()).form(&self.all_params()),
            // `query` appends to the URL's own query parameters: they are merged, not replaced.
            AuthMethod::PostQuery => http
                .post(self.url.clone())
                .query(&self.all_params())
                .header(http::header::CONTENT_LENGTH, "0"),
            AuthMethod::GetQuery => http.get(self.url.clone()).query(&self.all_params()),
        };
        rb.header(http::header::ACCEPT, "application/json")
            .timeout(self.timeout)
    }
}

/// The fields of a token response we use (RFC 6749 5.1).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
}

/// RFC 6749 2.3.1: the `id:secret` of a client's Basic header, each form-urlencoded first.
pub fn basic_pair(id: &Secret, secret: &Secret) -> Secret {
    let enc = |s: &Secret| url::form_urlencoded::byte_serialize(s.expose().as_bytes()).collect::<String>();
    Secret::new(format!("{}:{}", enc(id), enc(secret)))
}

/// `Basic <base64(pair)>`.
pub fn basic_header(pair: &Secret) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair.expose())
    )
}

/// The `error` (and description) of an RFC 6749 5.2 error body, shortened. Left as received
/// (control characters too): `TokenError::redacted` scrubs it before it is made printable.
pub fn oauth_error_detail(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct E {
        error: Option<String>,
        error_description: Option<String>,
    }
    let Ok(e) = serde_json::from_slice::<E>(body) else {
        return if body.trim_ascii_start().starts_with(b"<") {
            " (HTML error page)".into()
        } else {
            String::new()
        };
    };
    let text = match (e.error, e.error_description) {
        (Some(a), Some(b)) => format!("{a}: {b}"),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => return String::new(),
    };
    // Cut generously here: secrets are scrubbed before the final cut (TokenError::redacted),
    // so a secret straddling the cut cannot leak its first half.
    let kept: String = text.chars().take(2000).collect();
    format!(" ({kept})")
}

/// `expires_in` as a number or a numeric string.
pub fn lifetime(v: Option<&serde_json::Value>) -> Result<Option<Duration>, String> {
    let secs = match v {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match secs {
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s.min(1e9)))),
        _ => Err("expires_in is not a positive number".into()),
    }
}

/// The access token and its lifetime from a token answer, or what is wrong with them.
pub fn fetched(
    access_token: Option<String>,
    expires_in: Option<&serde_json::Value>,
    status: u16,
) -> Result<Fetched, String> {
    let token = access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("status {status} without access_token"))?;
    Ok(Fetched {
        value: Secret::new(token),
        lifetime: lifetime(expires_in)?,
    })
}

/// Turns a token endpoint answer into a token or a precise error.
pub fn parse_response(endpoint: &str, status: u16, body: &[u8]) -> Result<Fetched, TokenError> {
    let bad = |reason: String| TokenError::BadResponse {
        endpoint: endpoint.to_string(),
        reason,
    };
    if !(200..300).contains(&status) {
        return Err(TokenError::Status {
            endpoint: endpoint.to_string(),
            status,
            detail: oauth_error_detail(body),
        });
    }
    let r: TokenResponse = serde_json::from_slice(body).map_err(|_| {
        bad(format!(
            "status {status} with a body that is not a JSON token response{}",
            oauth_error_detail(body)
        ))
    })?;
    fetched(r.access_token, r.expires_in.as_ref(), status).map_err(bad)
}

/// Sends a token-endpoint request and reads its answer (at most 1 MiB: a token response is
/// small). Errors name `endpoint`, never the URL's query (it may hold the client secret).
pub async fn exchange(
    rb: reqwest::RequestBuilder,
    endpoint: &str,
) -> Result<(u16, bytes::Bytes), TokenError> {
    let resp = rb.send().await.map_err(|e| transport_error(endpoint, &e))?;
    let status = resp.status().as_u16();
    if resp.content_length().is_some_and(|n| n > 1 << 20) {
        return Err(TokenError::BadResponse {
            endpoint: endpoint.to_string(),
            reason: "body larger than 1 MiB".into(),
        });
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| transport_error(endpoint, &e))?;
    if body.len() > 1 << 20 {
        return Err(TokenError::BadResponse {
            endpoint: endpoint.to_string(),
            reason: "body larger than 1 MiB".into(),
        });
    }
    Ok((status, body))
}

/// Maps a transport failure, without the URL's query (it may hold the client secret).
pub fn transport_error(endpoint: &str, e: &reqwest::Error) -> TokenError {
    if e.is_timeout() {
        return TokenError::Timeout {
            endpoint: endpoint.to_string(),
        };
    }
    let reason = if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut detail = reason.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        detail = format!("{reason}: {s}");
        src = s.source();
    }
    TokenError::Connect {
        endpoint: endpoint.to_string(),
        reason: detail,
    }
}

#[async_trait]
impl TokenSource for OAuth2ClientCredentials {
    fn identity_digest(&self) -> [u8; 32] {
        self.digest.get(|| self.identity())
    }

    async fn fetch(&self, cx: &FetchCx<'_>) -> Result<Fetched, TokenError> {
        let http = cx.http;
        let (status, body) = exchange(self.request(http), &self.endpoint).await?;
        parse_response(&self.endpoint, status, &body)
    }

    fn policy(&self) -> Policy {
        self.policy
    }

    fn sent_secrets(&self) -> Vec<Secret> {
        vec![
            self.client_secret.clone(),
            basic_pair(&self.client_id, &self.client_secret),
        ]
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn identity(&self) -> String {
        let params: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "oauth2_client_credentials|{}|{}|{}|{:?}|{}",
            self.url,
            self.client_id.expose(),
            self.client_secret.expose(),
            self.auth_method,
            params.join("&")
        )
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// `type: oauth2_client_credentials`: the client-credentials grant (RFC 6749 4.4).
pub struct ClientCredentialsKind;

impl Kind for ClientCredentialsKind {
    const NAME: &'static str = "oauth2_client_credentials";
    const TENANT_FIELDS: &'static [super::TenantField] = &[super::TenantField::required("client_id"), super::TenantField::required("client_secret")];
    type Raw = RawOAuth2ClientCredentials;
    fn build(raw: &RawOAuth2ClientCredentials, ctx: &mut BuildCtx<'_>) -> Result<Credential, BuildError> {
        Ok(Credential::Token(Arc::new(OAuth2ClientCredentials::build(raw, ctx)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::ctx;
    use super::*;

    fn raw(method: Option<AuthMethod>) -> RawOAuth2ClientCredentials {
        RawOAuth2ClientCredentials {
            token_url: "https://login.example.com/oauth/token?tenant=acme".into(),
            client_id: "s6BhdRkqt3".into(),
            client_secret: "7Fjfp0ZBr1KtDRbnfVdmIw".into(),
            scopes: vec!["api".into(), "refresh".into()],
            audience: Some("https://api.example.com".into()),
            params: Default::default(),
            auth_method: method,
            cache: None,
            timeout: None,
        }
    }

    #[test]
    fn the_remembered_identity_digest_is_the_identity_hashed_and_tells_secrets_apart() {
        let c = OAuth2ClientCredentials::build(&raw(None), &mut ctx()).unwrap();
        let expected = crate::tokens::digest_identity(&c.identity());
        assert_eq!(c.identity_digest(), expected);
        assert_eq!(c.identity_digest(), expected, "and stays it");
        let mut other = raw(None);
        other.client_secret = "rotated-secret-0001".into();
        let d = OAuth2ClientCredentials::build(&other, &mut ctx()).unwrap();
        assert_ne!(d.identity_digest(), expected);
    }

    #[test]
    fn rfc6749_basic_vector() {
        // RFC 6749 section 2.3.1 example credentials.
        let c = OAuth2ClientCredentials::build(&raw(None), &mut ctx()).unwrap();
        assert_eq!(
            c.basic_header(),
            "Basic czZCaGRSa3F0Mzo3RmpmcDBaQnIxS3REUmJuZlZkbUl3"
        );
    }

    #[test]
    fn basic_encodes_reserved_characters_first() {
        let mut r = raw(None);
        r.client_id = "a:b".into();
        r.client_secret = "p@ss w%rd".into();
        let c = OAuth2ClientCredentials::build(&r, &mut ctx()).unwrap();
        // base64("a%3Ab:p%40ss+w%25rd")
        assert_eq!(
            c.basic_header(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("a%3Ab:p%40ss+w%25rd")
            )
        );
    }

    #[test]
    fn each_auth_method_builds_its_request() {
        let http = reqwest::Client::new();
        let body = |r: &reqwest::Request| {
            r.body()
                .and_then(|b| b.as_bytes())
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        let c = OAuth2ClientCredentials::build(&raw(Some(AuthMethod::Basic)), &mut ctx()).unwrap();
        let r = c.request(&http).build().unwrap();
        assert_eq!(r.method(), "POST");
        assert_eq!(r.url().query(), Some("tenant=acme"));
        assert!(r.headers().get("authorization").is_some());
        assert_eq!(body(&r).unwrap(), "grant_type=client_credentials&scope=api+refresh&audience=https%3A%2F%2Fapi.example.com");
        let c =
            OAuth2ClientCredentials::build(&raw(Some(AuthMethod::PostBody)), &mut ctx()).unwrap();
        let r = c.request(&http).build().unwrap();
        assert!(r.headers().get("authorization").is_none());
        assert!(body(&r)
            .unwrap()
            .ends_with("&client_id=s6BhdRkqt3&client_secret=7Fjfp0ZBr1KtDRbnfVdmIw"));
        for (m, verb) in [
            (AuthMethod::PostQuery, "POST"),
            (AuthMethod::GetQuery, "GET"),
        ] {
            let c = OAuth2ClientCredentials::build(&raw(Some(m)), &mut ctx()).unwrap();
            let r = c.request(&http).build().unwrap();
            assert_eq!(r.method(), verb);
            let q = r.url().query().unwrap();
            assert!(
                q.starts_with("tenant=acme&grant_type=client_credentials&scope=api+refresh"),
                "{q}"
            );
            assert!(q.ends_with("client_secret=7Fjfp0ZBr1KtDRbnfVdmIw"), "{q}");
            assert!(body(&r).is_none_or(|b| b.is_empty()));
        }
    }

    #[test]
    fn token_url_rules() {
        assert!(token_url("https://a.example.com/t").is_ok());
        assert!(token_url("http://127.0.0.1:8080/t").is_ok());
        assert!(token_url("http://[::1]:8080/t").is_ok());
        assert!(token_url("http://localhost/t").is_ok());
        for bad in [
            "http://a.example.com/t",
            "ftp://a.example.com",
            "https://u:p@a.example.com/t",
            "not a url",
            "https://a.example.com/t#x",
        ] {
            assert!(token_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            token_url("https://a.example.com:8443/oauth/token?x=1")
                .unwrap()
                .1,
            "https://a.example.com:8443/oauth/token"
        );
    }

    #[test]
    fn parses_rfc6749_response() {
        // RFC 6749 section 4.4.3 example response.
        let body = br#"{"access_token":"2YotnFZFEjr1zCsicMWpAA","token_type":"example","expires_in":3600,"example_parameter":"example_value"}"#;
        let f = parse_response("e", 200, body).unwrap();
        assert_eq!(f.value.expose(), "2YotnFZFEjr1zCsicMWpAA");
        assert_eq!(f.lifetime, Some(Duration::from_secs(3600)));
        let f = parse_response("e", 200, br#"{"access_token":"t","expires_in":"120"}"#).unwrap();
        assert_eq!(f.lifetime, Some(Duration::from_secs(120)));
        assert_eq!(
            parse_response("e", 200, br#"{"access_token":"t"}"#)
                .unwrap()
                .lifetime,
            None
        );
    }

    #[test]
    fn rejects_lying_responses() {
        let cases: [(u16, &[u8], &str); 7] = [
            (200, br#"{"token_type":"bearer"}"#, "without access_token"),
            (200, br#"{"access_token":""}"#, "without access_token"),
            (200, b"<html>login</html>", "HTML error page"),
            (
                200,
                br#"{"access_token":"t","expires_in":"soon"}"#,
                "expires_in",
            ),
            (
                400,
                br#"{"error":"invalid_client","error_description":"bad secret"}"#,
                "answered 400 (invalid_client: bad secret)",
            ),
            (401, b"", "answered 401"),
            (503, b"<html>down</html>", "answered 503 (HTML error page)"),
        ];
        for (status, body, want) in cases {
            let e = parse_response("https://x/t", status, body).unwrap_err();
            assert!(e.to_string().contains(want), "{status}: {e}");
        }
        assert!(parse_response("e", 500, b"").unwrap_err().retryable());
        assert!(!parse_response("e", 400, b"").unwrap_err().retryable());
        assert!(!parse_response("e", 401, b"").unwrap_err().retryable());
    }

    #[test]
    fn reserved_params_refused() {
        let mut r = raw(None);
        r.params.insert("client_secret".into(), "x".into());
        assert!(matches!(
            OAuth2ClientCredentials::build(&r, &mut ctx()),
            Err(BuildError::Invalid { .. })
        ));
    }
}
