//! Credential types: building them from config, and the headers each one injects.
//!
//! One file per type. Static types (basic, bearer, headers) resolve to a fixed header set at
//! config load, so injecting them on the request path is a few header inserts, no allocation
//! of secrets.

pub mod aws_sigv4;
pub mod basic;
pub mod bearer;
pub mod google_service_account;
pub mod headers;
pub mod jwt_key_pair;
pub mod oauth2_client_credentials;
pub mod oauth2_refresh_token;
pub mod salesforce_data360;

use std::path::Path;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

use crate::config::raw::RawCredential;
use crate::secret::{check_template, Secret, SecretError, SecretSource};
use crate::tokens::TokenSource;

/// Why a credential could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// The config itself is wrong; `key` is relative to the credential (`headers.X-Key`).
    Invalid { key: String, message: String },
    /// The config is fine but a secret is missing: the credential's routes answer 502.
    Unavailable(SecretError),
}

/// What a credential needs while it is built: where relative files live, the environment,
/// and a place to put warnings.
pub struct BuildCtx<'a> {
    pub base_dir: &'a Path,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// `(key relative to the credential, message)`.
    pub warnings: Vec<(String, String)>,
    /// The credential's name (state files are named and bound to it).
    pub name: &'a str,
    /// `proxy.state_dir`.
    pub state_dir: &'a Path,
    /// `proxy.strict_permissions`: refuse secret files others can read.
    pub strict_permissions: bool,
}

impl BuildCtx<'_> {
    /// Resolves the secret written at `key`; syntax errors are config errors, absent values
    /// make the credential unavailable.
    pub fn secret(&mut self, key: &str, raw: &str) -> Result<Secret, BuildError> {
        self.secret_inner(key, raw, false)
    }

    /// Like `secret`, for values that may span lines (PEM keys, JSON key files).
    pub fn secret_multiline(&mut self, key: &str, raw: &str) -> Result<Secret, BuildError> {
        self.secret_inner(key, raw, true)
    }

    fn secret_inner(
        &mut self,
        key: &str,
        raw: &str,
        multiline: bool,
    ) -> Result<Secret, BuildError> {
        let invalid = |message: String| BuildError::Invalid {
            key: key.to_string(),
            message,
        };
        check_template(raw).map_err(invalid)?;
        let source = SecretSource::parse(raw);
        if source.is_literal() {
            self.warnings.push((
                key.to_string(),
                "secret written as a literal; prefer ${ENV_VAR} or file:PATH".to_string(),
            ));
        }
        if let Some(problem) = source.permission_problem(self.base_dir) {
            if self.strict_permissions {
                return Err(invalid(format!(
                    "{problem} (proxy.strict_permissions is on)"
                )));
            }
            self.warnings.push((key.to_string(), problem));
        }
        let resolved = if multiline {
            source.resolve_multiline(self.base_dir, self.env)
        } else {
            source.resolve(self.base_dir, self.env)
        };
        match resolved {
            Ok(s) => Ok(s),
            Err(SecretError::BadBytes(_)) if source.is_literal() => {
                Err(invalid("value contains CR, LF or NUL".to_string()))
            }
            Err(e) => Err(BuildError::Unavailable(e)),
        }
    }
}

/// The headers a credential sets, precomputed and marked sensitive.
#[derive(Debug, Clone, Default)]
pub struct Injection {
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The same headers for `explain`, with secrets shown as `***`.
    display: Vec<(String, String)>,
}

impl Injection {
    pub fn push(&mut self, name: HeaderName, value: &str, display: String) -> Result<(), String> {
        let mut v = HeaderValue::from_str(value)
            .map_err(|_| format!("value for header {name} is not a valid header value"))?;
        v.set_sensitive(true);
        self.display.push((name.as_str().to_string(), display));
        self.headers.push((name, v));
        Ok(())
    }

    /// Replaces whatever the client sent under these names.
    pub fn apply(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        for (name, value) in &self.headers {
            req.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
    }

    pub fn display(&self) -> &[(String, String)] {
        &self.display
    }

    pub fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.headers.iter().map(|(n, _)| n)
    }
}

/// A usable credential.
#[derive(Debug, Clone)]
pub enum Credential {
    Basic(basic::Basic),
    Bearer(bearer::Bearer),
    Headers(headers::Headers),
    /// Injects `Authorization: Bearer <token>` from the token cache.
    Token(Arc<dyn TokenSource>),
    /// Signs each request (AWS SigV4).
    AwsSigV4(Arc<aws_sigv4::AwsSigV4>),
}

impl Credential {
    pub fn build(raw: &RawCredential, ctx: &mut BuildCtx<'_>) -> Result<Self, BuildError> {
        Ok(match raw {
            RawCredential::Basic(r) => Credential::Basic(basic::Basic::build(r, ctx)?),
            RawCredential::Bearer(r) => Credential::Bearer(bearer::Bearer::build(r, ctx)?),
            RawCredential::Headers(r) => Credential::Headers(headers::Headers::build(r, ctx)?),
            RawCredential::AwsSigv4(r) => {
                Credential::AwsSigV4(Arc::new(aws_sigv4::AwsSigV4::build(r, ctx)?))
            }
            RawCredential::Oauth2RefreshToken(r) => {
                Credential::Token(Arc::new(oauth2_refresh_token::RefreshToken::build(r, ctx)?))
            }
            RawCredential::GoogleServiceAccount(r) => {
                Credential::Token(google_service_account::build(r, ctx)?)
            }
            RawCredential::SalesforceData360(r) => {
                Credential::Token(Arc::new(salesforce_data360::Data360::build(r, ctx)?))
            }
            RawCredential::JwtKeyPair(r) => {
                Credential::Token(Arc::new(jwt_key_pair::JwtKeyPair::build(r, ctx)?))
            }
            RawCredential::Oauth2ClientCredentials(r) => Credential::Token(Arc::new(
                oauth2_client_credentials::OAuth2ClientCredentials::build(r, ctx)?,
            )),
        })
    }

    /// The fixed headers of a static credential; None for token credentials.
    pub fn injection(&self) -> Option<&Injection> {
        match self {
            Credential::Basic(c) => Some(&c.injection),
            Credential::Bearer(c) => Some(&c.injection),
            Credential::Headers(c) => Some(&c.injection),
            Credential::Token(_) | Credential::AwsSigV4(_) => None,
        }
    }

    pub fn signer(&self) -> Option<&Arc<aws_sigv4::AwsSigV4>> {
        match self {
            Credential::AwsSigV4(s) => Some(s),
            _ => None,
        }
    }

    pub fn token_source(&self) -> Option<&Arc<dyn TokenSource>> {
        match self {
            Credential::Token(t) => Some(t),
            _ => None,
        }
    }
}

/// The `type` name of a raw credential.
/// `cache.ttl`, the optional override of a token type's expiry policy.
pub fn cache_ttl(
    cache: Option<&crate::config::raw::RawCache>,
) -> Result<Option<std::time::Duration>, BuildError> {
    cache
        .map(|c| {
            crate::config::units::parse_duration(&c.ttl).map_err(|message| BuildError::Invalid {
                key: "cache.ttl".into(),
                message,
            })
        })
        .transpose()
}

/// `timeout` of a token endpoint request, 10 s unless set.
pub fn endpoint_timeout(raw: Option<&String>) -> Result<std::time::Duration, BuildError> {
    raw.map_or(Ok(std::time::Duration::from_secs(10)), |t| {
        crate::config::units::parse_duration(t).map_err(|message| BuildError::Invalid {
            key: "timeout".into(),
            message,
        })
    })
}

pub fn type_name(raw: &RawCredential) -> &'static str {
    match raw {
        RawCredential::Basic(_) => "basic",
        RawCredential::Bearer(_) => "bearer",
        RawCredential::Headers(_) => "headers",
        RawCredential::Oauth2ClientCredentials(_) => "oauth2_client_credentials",
        RawCredential::JwtKeyPair(_) => "jwt_key_pair",
        RawCredential::SalesforceData360(_) => "salesforce_data360",
        RawCredential::GoogleServiceAccount(_) => "google_service_account",
        RawCredential::Oauth2RefreshToken(_) => "oauth2_refresh_token",
        RawCredential::AwsSigv4(_) => "aws_sigv4",
    }
}

/// Header names a credential may not set: they frame or route the request, or belong to the
/// proxy hop.
pub fn forbidden_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "upgrade"
            | "expect"
    ) || n.starts_with("proxy-")
        || n.starts_with("x-credproxy-")
}

/// Parses a header name written in config, refusing the ones a credential may not set.
pub fn config_header_name(key: &str, name: &str) -> Result<HeaderName, BuildError> {
    let invalid = |message: String| BuildError::Invalid {
        key: key.to_string(),
        message,
    };
    let h = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| invalid(format!("`{name}` is not a valid header name")))?;
    if forbidden_header(&h) {
        return Err(invalid(format!(
            "a credential may not set the `{name}` header"
        )));
    }
    Ok(h)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub fn env(name: &str) -> Option<String> {
        match name {
            "USER" => Some("Aladdin".into()),
            "PASS" => Some("open sesame".into()),
            "TOKEN" => Some("tok-123".into()),
            _ => None,
        }
    }

    pub fn ctx() -> BuildCtx<'static> {
        BuildCtx {
            base_dir: Path::new("."),
            env: &env,
            warnings: Vec::new(),
            name: "test",
            state_dir: Path::new(".credproxy-test-state"),
            strict_permissions: false,
        }
    }

    pub fn apply(inj: &Injection) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("authorization", "Bearer client-sent")
            .unwrap();
        inj.apply(&mut req).unwrap();
        req
    }
}
