//! `jwt_key_pair`: a JWT (RFC 7519) signed locally with a PEM private key, injected as
//! `Authorization: Bearer <jwt>` (header and prefix configurable), cached for 90% of its
//! lifetime through the token cache.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http::HeaderName;
use indexmap::IndexMap;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{config_header_name, BuildCtx, BuildError, Credential, Kind};
use crate::config::raw::{RawCache, SecretValue};
use crate::config::units::parse_duration;
use crate::secret::{Secret, SecretError};
use crate::tokens::{FetchCx, Fetched, Policy, TokenError, TokenSource};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawJwtKeyPair {
    /// PEM private key (PKCS#8, or PKCS#1 for RSA, SEC1 for EC): `file:` or `${ENV}`.
    pub private_key: SecretValue,
    pub algorithm: JwtAlgorithm,
    /// Claims to sign; `iat`, `exp` and `jti` are added.
    #[serde(default)]
    pub claims: IndexMap<String, serde_json::Value>,
    /// Validity of each JWT. Default 1h.
    pub lifetime: Option<String>,
    /// `kid` header.
    pub key_id: Option<String>,
    /// Header to set. Default `Authorization`.
    pub header: Option<String>,
    /// Text before the JWT. Default `Bearer ` with `Authorization`, else empty.
    pub prefix: Option<String>,
    pub cache: Option<RawCache>,
}

/// JWS algorithms for `jwt_key_pair`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    ES256,
    ES384,
    EdDSA,
}

pub struct JwtKeyPair {
    key: EncodingKey,
    header: Header,
    claims: serde_json::Map<String, serde_json::Value>,
    lifetime: Duration,
    header_name: HeaderName,
    prefix: String,
    policy: Policy,
    label: String,
}

impl std::fmt::Debug for JwtKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeyPair")
            .field("alg", &self.header.alg)
            .finish_non_exhaustive()
    }
}

pub fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// Parses a PEM private key for the algorithm's key family.
pub fn signing_key(pem: &Secret, alg: Algorithm, source: &str) -> Result<EncodingKey, BuildError> {
    let bytes = pem.expose().as_bytes();
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(bytes),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(bytes),
        _ => EncodingKey::from_rsa_pem(bytes),
    };
    key.map_err(|e| {
        BuildError::Unavailable(SecretError::Unusable {
            source_name: source.to_string(),
            reason: format!("not a PEM private key for {alg:?} ({e})"),
        })
    })
}

/// 128 random bits, hex: a `jti` that does not repeat.
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    // SystemRandom only fails when the OS has no entropy source; fall back to the clock.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = n.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl JwtKeyPair {
    pub fn build(raw: &RawJwtKeyPair, ctx: &mut BuildCtx<'_>) -> Result<Self, BuildError> {
        let invalid = |key: &str, message: String| BuildError::Invalid {
            key: key.into(),
            message,
        };
        let lifetime = match &raw.lifetime {
            Some(l) => parse_duration(l).map_err(|m| invalid("lifetime", m))?,
            None => Duration::from_secs(3600),
        };
        if lifetime < Duration::from_secs(10) || lifetime > Duration::from_secs(86400) {
            return Err(invalid("lifetime", "between 10s and 24h".into()));
        }
        for reserved in ["iat", "exp", "jti"] {
            if raw.claims.contains_key(reserved) {
                return Err(invalid(
                    &format!("claims.{reserved}"),
                    format!("`{reserved}` is set by credproxy"),
                ));
            }
        }
        let ttl = super::cache_ttl(raw.cache.as_ref())?;
        let header_name = match &raw.header {
            Some(h) => config_header_name("header", h)?,
            None => http::header::AUTHORIZATION,
        };
        let prefix = raw.prefix.clone().unwrap_or_else(|| {
            if header_name == http::header::AUTHORIZATION {
                "Bearer ".into()
            } else {
                String::new()
            }
        });
        let alg = algorithm(raw.algorithm);
        let pem = ctx.secret_multiline("private_key", &raw.private_key)?;
        let key = signing_key(&pem, alg, "private_key")?;
        let mut header = Header::new(alg);
        header.kid = raw.key_id.clone();
        Ok(JwtKeyPair {
            key,
            header,
            claims: raw
                .claims
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            lifetime,
            header_name,
            prefix,
            policy: Policy {
                default_lifetime: lifetime,
                ttl,
                keep: Some(0.9),
            },
            label: format!("local {alg:?} signer"),
        })
    }

    /// Signs a fresh JWT valid from `now` (unix seconds).
    pub fn sign_at(&self, now: u64) -> Result<String, TokenError> {
        let mut claims = self.claims.clone();
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + self.lifetime.as_secs()).into());
        claims.insert("jti".into(), random_id().into());
        jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(|e| {
            TokenError::BadResponse {
                endpoint: self.label.clone(),
                reason: format!("signing failed: {e}"),
            }
        })
    }
}

#[async_trait]
impl TokenSource for JwtKeyPair {
    async fn fetch(&self, _cx: &FetchCx<'_>) -> Result<Fetched, TokenError> {
        let jwt = self.sign_at(unix_now())?;
        Ok(Fetched {
            value: Secret::new(jwt),
            lifetime: Some(self.lifetime),
        })
    }

    fn policy(&self) -> Policy {
        self.policy
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn endpoint(&self) -> &str {
        &self.label
    }

    /// Signed locally: every replica signs its own, nothing to share.
    fn fleet_shared(&self) -> bool {
        false
    }

    fn header_name(&self) -> HeaderName {
        self.header_name.clone()
    }
}

/// `type: jwt_key_pair`: a JWT signed locally.
pub struct JwtKeyPairKind;

impl Kind for JwtKeyPairKind {
    const NAME: &'static str = "jwt_key_pair";
    type Raw = RawJwtKeyPair;
    fn build(raw: &RawJwtKeyPair, ctx: &mut BuildCtx<'_>) -> Result<Credential, BuildError> {
        Ok(Credential::Token(Arc::new(JwtKeyPair::build(raw, ctx)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::ctx;
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/credentials/testdata");

    fn raw(alg: JwtAlgorithm, key: &str) -> RawJwtKeyPair {
        let mut claims = indexmap::IndexMap::new();
        claims.insert("iss".into(), "credproxy".into());
        claims.insert("sub".into(), "workflows".into());
        claims.insert("aud".into(), "https://partner.example.com".into());
        RawJwtKeyPair {
            private_key: format!("file:{DIR}/{key}.pem").as_str().into(),
            algorithm: alg,
            claims,
            lifetime: Some("1h".into()),
            key_id: Some("k1".into()),
            header: None,
            prefix: None,
            cache: None,
        }
    }

    fn public(alg: Algorithm, key: &str) -> DecodingKey {
        let pem = std::fs::read(format!("{DIR}/{key}.pub.pem")).unwrap();
        match alg {
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem).unwrap(),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem).unwrap(),
            _ => DecodingKey::from_rsa_pem(&pem).unwrap(),
        }
    }

    #[test]
    fn every_algorithm_verifies_with_the_public_key() {
        let cases = [
            (JwtAlgorithm::RS256, "rsa"),
            (JwtAlgorithm::RS384, "rsa"),
            (JwtAlgorithm::RS512, "rsa"),
            (JwtAlgorithm::PS256, "rsa"),
            (JwtAlgorithm::ES256, "p256"),
            (JwtAlgorithm::ES384, "p384"),
            (JwtAlgorithm::EdDSA, "ed25519"),
        ];
        for (a, key) in cases {
            let j = JwtKeyPair::build(&raw(a, key), &mut ctx()).unwrap();
            let now = unix_now();
            let token = j.sign_at(now).unwrap();
            let alg = algorithm(a);
            let mut v = Validation::new(alg);
            v.set_audience(&["https://partner.example.com"]);
            v.set_issuer(&["credproxy"]);
            let data =
                jsonwebtoken::decode::<serde_json::Value>(&token, &public(alg, key), &v).unwrap();
            assert_eq!(data.header.kid.as_deref(), Some("k1"));
            let c = data.claims;
            assert_eq!(c["sub"], "workflows");
            assert_eq!(c["iat"], now);
            assert_eq!(c["exp"], now + 3600);
            assert_eq!(c["jti"].as_str().unwrap().len(), 32);
        }
    }

    #[test]
    fn jti_is_fresh_and_cached_for_90_percent() {
        let j = JwtKeyPair::build(&raw(JwtAlgorithm::ES256, "p256"), &mut ctx()).unwrap();
        let (a, b) = (j.sign_at(1).unwrap(), j.sign_at(1).unwrap());
        assert_ne!(a, b);
        let now = tokio::time::Instant::now();
        let (_, expires) = j.policy().timeline(now, Some(Duration::from_secs(3600)));
        assert_eq!(expires - now, Duration::from_secs(3240));
    }

    #[test]
    fn a_key_of_the_wrong_family_is_unavailable_not_fatal() {
        let e = JwtKeyPair::build(&raw(JwtAlgorithm::RS256, "p256"), &mut ctx()).unwrap_err();
        assert!(
            matches!(e, BuildError::Unavailable(SecretError::Unusable { .. })),
            "{e:?}"
        );
        let e = JwtKeyPair::build(&raw(JwtAlgorithm::RS256, "missing"), &mut ctx()).unwrap_err();
        assert!(matches!(
            e,
            BuildError::Unavailable(SecretError::File { .. })
        ));
    }

    #[test]
    fn reserved_claims_and_lifetime_bounds() {
        let mut r = raw(JwtAlgorithm::ES256, "p256");
        r.claims.insert("exp".into(), 1.into());
        assert!(matches!(
            JwtKeyPair::build(&r, &mut ctx()),
            Err(BuildError::Invalid { .. })
        ));
        let mut r = raw(JwtAlgorithm::ES256, "p256");
        r.lifetime = Some("2d".into());
        assert!(matches!(
            JwtKeyPair::build(&r, &mut ctx()),
            Err(BuildError::Invalid { .. })
        ));
    }

    #[test]
    fn custom_header_and_prefix() {
        let mut r = raw(JwtAlgorithm::ES256, "p256");
        r.header = Some("X-Partner-Auth".into());
        let j = JwtKeyPair::build(&r, &mut ctx()).unwrap();
        assert_eq!(j.header_name().as_str(), "x-partner-auth");
        assert_eq!(j.prefix(), "");
    }
}
