//! `google_service_account`: tokens from a service-account JSON key.
//! `access_token` mode: the JWT-bearer grant (RFC 7523) at the key's `token_uri`, with
//! `scope` and optional `sub` (domain-wide delegation); `self_signed_jwt` mode: a JWT signed by
//! the key whose `aud` is the target API (`https://host/`), no token endpoint involved.
//! Both are cached 5 minutes (never past their own expiry).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use schemars::JsonSchema;
use serde::Deserialize;

use super::jwt_key_pair::{random_id, signing_key, unix_now};
use super::oauth2_client_credentials::{exchange, parse_response, token_url};
use super::{BuildCtx, BuildError, Credential, Kind};
use crate::config::raw::{RawCache, SecretValue};
use crate::secret::{Secret, SecretError};
use crate::tokens::{FetchCx, Fetched, Policy, TokenError, TokenSource};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGoogle {
    /// The service-account JSON key: `file:keys/sa.json` or `${ENV}`.
    pub key_file: SecretValue,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Default `access_token`.
    pub mode: Option<GoogleMode>,
    /// User to impersonate (domain-wide delegation).
    pub subject: Option<String>,
    pub cache: Option<RawCache>,
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GoogleMode {
    /// JWT-bearer grant at the key's `token_uri`; injects the access token.
    AccessToken,
    /// Injects a JWT signed by the key, with `aud` set to the target API.
    SelfSignedJwt,
}

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const JWT_LIFETIME: u64 = 3600;

/// The fields of a service-account key file we use.
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

/// What both modes share: the signing identity.
struct Signer {
    email: String,
    key: EncodingKey,
    kid: Option<String>,
    scopes: Vec<String>,
    subject: Option<String>,
    policy: Policy,
}

impl Signer {
    fn sign(&self, aud: &str, with_scope: bool, label: &str) -> Result<String, TokenError> {
        let now = unix_now();
        let mut claims = serde_json::Map::new();
        claims.insert("iss".into(), self.email.clone().into());
        claims.insert("aud".into(), aud.into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + JWT_LIFETIME).into());
        claims.insert("jti".into(), random_id().into());
        match &self.subject {
            Some(s) => claims.insert("sub".into(), s.clone().into()),
            None => claims.insert("sub".into(), self.email.clone().into()),
        };
        if with_scope && !self.scopes.is_empty() {
            claims.insert("scope".into(), self.scopes.join(" ").into());
        }
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| TokenError::BadResponse {
            endpoint: label.to_string(),
            reason: format!("signing failed: {e}"),
        })
    }
}

/// `access_token` mode.
pub struct AccessToken {
    signer: Signer,
    url: reqwest::Url,
    endpoint: String,
    timeout: Duration,
}

/// `self_signed_jwt` mode: a parent that hands out one child per target host.
pub struct SelfSigned {
    signer: Arc<Signer>,
}

/// A self-signed JWT for one audience.
pub struct SelfSignedFor {
    signer: Arc<Signer>,
    aud: String,
    label: String,
}

macro_rules! opaque_debug {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($t))
            }
        }
    )*};
}
opaque_debug!(AccessToken, SelfSigned, SelfSignedFor);

fn unusable(reason: String) -> BuildError {
    BuildError::Unavailable(SecretError::Unusable {
        source_name: "key_file".into(),
        reason,
    })
}

pub fn build(raw: &RawGoogle, ctx: &mut BuildCtx<'_>) -> Result<Arc<dyn TokenSource>, BuildError> {
    let invalid = |key: &str, message: String| BuildError::Invalid {
        key: key.into(),
        message,
    };
    let ttl = super::cache_ttl(raw.cache.as_ref())?.unwrap_or(Duration::from_secs(300));
    let timeout = super::endpoint_timeout(raw.timeout.as_ref())?;
    let mode = raw.mode.unwrap_or(GoogleMode::AccessToken);
    if mode == GoogleMode::AccessToken && raw.scopes.is_empty() {
        return Err(invalid(
            "scopes",
            "access_token mode needs at least one scope".into(),
        ));
    }
    let text = ctx.secret_multiline("key_file", &raw.key_file)?;
    let key: KeyFile = serde_json::from_str(text.expose()).map_err(|e| {
        unusable(format!(
            "not a service-account JSON key ({})",
            e.classify_name()
        ))
    })?;
    let signer = Signer {
        key: signing_key(&Secret::new(key.private_key), Algorithm::RS256, "key_file")?,
        email: key.client_email,
        kid: key.private_key_id,
        scopes: raw.scopes.clone(),
        subject: raw.subject.clone(),
        policy: Policy {
            default_lifetime: Duration::from_secs(JWT_LIFETIME),
            ttl: Some(ttl),
            keep: Some(0.9),
        },
    };
    Ok(match mode {
        GoogleMode::AccessToken => {
            let uri = key
                .token_uri
                .unwrap_or_else(|| "https://oauth2.googleapis.com/token".into());
            let (url, endpoint) =
                token_url(&uri).map_err(|m| unusable(format!("token_uri: {m}")))?;
            Arc::new(AccessToken {
                signer,
                url,
                endpoint,
                timeout,
            })
        }
        GoogleMode::SelfSignedJwt => Arc::new(SelfSigned {
            signer: Arc::new(signer),
        }),
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    /// The kind of JSON error, without the excerpt serde_json may quote (it could be key text).
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "missing client_email or private_key",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

#[async_trait]
impl TokenSource for AccessToken {
    async fn fetch(&self, cx: &FetchCx<'_>) -> Result<Fetched, TokenError> {
        let http = cx.http;
        let assertion = self.signer.sign(self.url.as_str(), true, &self.endpoint)?;
        let rb = http
            .post(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .form(&[
                ("grant_type", JWT_BEARER),
                ("assertion", assertion.as_str()),
            ])
            .timeout(self.timeout);
        let (status, body) = exchange(rb, &self.endpoint).await?;
        parse_response(&self.endpoint, status, &body)
    }
    fn policy(&self) -> Policy {
        Policy {
            keep: None,
            ..self.signer.policy
        }
    }
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn identity(&self) -> String {
        let s = &self.signer;
        format!(
            "google_service_account|{}|{}|{:?}|{}|{:?}",
            self.url,
            s.email,
            s.kid,
            s.scopes.join(" "),
            s.subject
        )
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[async_trait]
impl TokenSource for SelfSigned {
    async fn fetch(&self, _cx: &FetchCx<'_>) -> Result<Fetched, TokenError> {
        Err(TokenError::BadResponse {
            endpoint: "self-signed JWT".into(),
            reason: "needs a target host".into(),
        })
    }
    fn policy(&self) -> Policy {
        self.signer.policy
    }
    fn endpoint(&self) -> &str {
        "local self-signed JWT"
    }
    fn fleet_shared(&self) -> bool {
        false
    }
    fn per_target(&self) -> bool {
        true
    }
    /// A new child each time: the token cache keeps the ones in use, bounded.
    fn for_target(&self, host: &str) -> Option<Arc<dyn TokenSource>> {
        Some(Arc::new(SelfSignedFor {
            signer: self.signer.clone(),
            aud: format!("https://{host}/"),
            label: format!("self-signed JWT for https://{host}/"),
        }))
    }
}

#[async_trait]
impl TokenSource for SelfSignedFor {
    async fn fetch(&self, _cx: &FetchCx<'_>) -> Result<Fetched, TokenError> {
        let jwt = self.signer.sign(&self.aud, false, &self.label)?;
        Ok(Fetched {
            value: Secret::new(jwt),
            lifetime: Some(Duration::from_secs(JWT_LIFETIME)),
        })
    }
    fn policy(&self) -> Policy {
        self.signer.policy
    }
    fn endpoint(&self) -> &str {
        &self.label
    }

    fn fleet_shared(&self) -> bool {
        false
    }
}

/// `type: google_service_account`: tokens from a service-account key.
pub struct GoogleKind;

impl Kind for GoogleKind {
    const NAME: &'static str = "google_service_account";
    type Raw = RawGoogle;
    fn build(raw: &RawGoogle, ctx: &mut BuildCtx<'_>) -> Result<Credential, BuildError> {
        Ok(Credential::Token(build(raw, ctx)?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::ctx;
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/credentials/testdata");

    /// A key file like Google's, around the test RSA key.
    fn key_json(token_uri: &str) -> String {
        let pem = std::fs::read_to_string(format!("{DIR}/rsa.pem")).unwrap();
        serde_json::json!({
            "type": "service_account",
            "client_email": "robot@proj.iam.gserviceaccount.com",
            "private_key": pem,
            "private_key_id": "kid-1",
            "token_uri": token_uri,
        })
        .to_string()
    }

    fn raw(dir: &std::path::Path, mode: GoogleMode) -> RawGoogle {
        std::fs::write(
            dir.join("sa.json"),
            key_json("https://oauth2.googleapis.com/token"),
        )
        .unwrap();
        RawGoogle {
            key_file: format!("file:{}", dir.join("sa.json").display())
                .as_str()
                .into(),
            scopes: vec!["https://www.googleapis.com/auth/calendar.readonly".into()],
            mode: Some(mode),
            subject: Some("admin@example.com".into()),
            cache: None,
            timeout: None,
        }
    }

    fn verify(jwt: &str, aud: &str) -> serde_json::Value {
        let public = std::fs::read(format!("{DIR}/rsa.pub.pem")).unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[aud]);
        let d = jsonwebtoken::decode::<serde_json::Value>(
            jwt,
            &DecodingKey::from_rsa_pem(&public).unwrap(),
            &v,
        )
        .unwrap();
        assert_eq!(d.header.kid.as_deref(), Some("kid-1"));
        d.claims
    }

    #[tokio::test]
    async fn self_signed_jwt_has_the_target_api_as_audience() {
        let dir = tempfile::tempdir().unwrap();
        let src = build(&raw(dir.path(), GoogleMode::SelfSignedJwt), &mut ctx()).unwrap();
        assert!(src.per_target());
        let child = src.for_target("calendar.googleapis.com").unwrap();
        let http = reqwest::Client::new();
        let f = child.fetch(&FetchCx::local(&http)).await.unwrap();
        let c = verify(f.value.expose(), "https://calendar.googleapis.com/");
        assert_eq!(c["iss"], "robot@proj.iam.gserviceaccount.com");
        assert_eq!(c["sub"], "admin@example.com");
        assert_eq!(
            c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
            3600
        );
    }

    #[test]
    fn assertion_for_the_jwt_bearer_grant() {
        let dir = tempfile::tempdir().unwrap();
        let src = build(&raw(dir.path(), GoogleMode::AccessToken), &mut ctx()).unwrap();
        assert!(src.for_target("x").is_none());
        assert_eq!(src.endpoint(), "https://oauth2.googleapis.com/token");
        // Cached 5 minutes even though the access token lives an hour.
        let now = tokio::time::Instant::now();
        let (_, expires) = src.policy().timeline(now, Some(Duration::from_secs(3600)));
        assert!(expires - now <= Duration::from_secs(300));
    }

    #[test]
    fn bad_key_files_are_unavailable_without_quoting_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = raw(dir.path(), GoogleMode::AccessToken);
        std::fs::write(dir.path().join("sa.json"), "{\"client_email\": \"a\", \"private_key\": \"-----BEGIN PRIVATE KEY-----\\nNOTAKEY\\n\"}").unwrap();
        let e = build(&r, &mut ctx()).unwrap_err();
        assert!(matches!(e, BuildError::Unavailable(_)), "{e:?}");
        std::fs::write(
            dir.path().join("sa.json"),
            "{\"private_key\": \"SECRETKEYTEXT\" oops",
        )
        .unwrap();
        let BuildError::Unavailable(e) = build(&r, &mut ctx()).unwrap_err() else {
            panic!()
        };
        assert!(!e.to_string().contains("SECRETKEYTEXT"), "{e}");
        r.scopes.clear();
        assert!(matches!(
            build(&r, &mut ctx()),
            Err(BuildError::Invalid { .. })
        ));
    }
}
