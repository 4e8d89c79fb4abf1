//! `bearer`: a static token (RFC 6750 `Authorization: Bearer`), or any header with a prefix.

use http::header::AUTHORIZATION;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{config_header_name, BuildCtx, BuildError, Credential, Injection, Kind};
use crate::config::raw::SecretValue;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBearer {
    pub token: SecretValue,
    /// Header to set. Default `Authorization`.
    pub header: Option<String>,
    /// Text before the token. Default `Bearer ` (with `Authorization`), else empty.
    pub prefix: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Bearer {
    pub(super) injection: Injection,
}

impl Bearer {
    pub fn build(raw: &RawBearer, ctx: &mut BuildCtx<'_>) -> Result<Self, BuildError> {
        let name = match &raw.header {
            Some(h) => config_header_name("header", h)?,
            None => AUTHORIZATION,
        };
        let prefix = match &raw.prefix {
            Some(p) => p.clone(),
            None if name == AUTHORIZATION => "Bearer ".to_string(),
            None => String::new(),
        };
        if prefix.bytes().any(|b| b.is_ascii_control()) {
            return Err(BuildError::Invalid {
                key: "prefix".into(),
                message: "prefix contains control characters".into(),
            });
        }
        let token = ctx.secret("token", &raw.token)?;
        let mut injection = Injection::default();
        injection
            .push(
                name,
                &format!("{prefix}{}", token.expose()),
                format!("{prefix}***"),
            )
            .map_err(|message| BuildError::Invalid {
                key: "token".into(),
                message,
            })?;
        Ok(Bearer { injection })
    }
}

/// `type: bearer`: a fixed token in one header.
pub struct BearerKind;

impl Kind for BearerKind {
    const NAME: &'static str = "bearer";
    const TENANT_FIELDS: &'static [super::TenantField] = &[super::TenantField::required("token")];
    type Raw = RawBearer;
    fn build(raw: &RawBearer, ctx: &mut BuildCtx<'_>) -> Result<Credential, BuildError> {
        Ok(Credential::Static(std::sync::Arc::new(Bearer::build(raw, ctx)?.injection)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{apply, ctx};
    use super::*;

    fn raw(header: Option<&str>, prefix: Option<&str>) -> RawBearer {
        RawBearer {
            token: "${TOKEN}".into(),
            header: header.map(Into::into),
            prefix: prefix.map(Into::into),
        }
    }

    #[test]
    fn replaces_client_authorization() {
        let b = Bearer::build(&raw(None, None), &mut ctx()).unwrap();
        let req = apply(&b.injection);
        let all: Vec<_> = req.headers.get_all("authorization").iter().collect();
        assert_eq!(all, vec!["Bearer tok-123"]);
    }

    #[test]
    fn custom_header_and_prefix() {
        let b = Bearer::build(&raw(Some("X-Auth"), None), &mut ctx()).unwrap();
        let req = apply(&b.injection);
        assert_eq!(req.headers.get("x-auth").unwrap(), "tok-123");
        let b = Bearer::build(&raw(None, Some("token ")), &mut ctx()).unwrap();
        assert_eq!(
            apply(&b.injection).headers.get("authorization").unwrap(),
            "token tok-123"
        );
    }

    #[test]
    fn forbidden_header_refused() {
        for h in [
            "Host",
            "Content-Length",
            "Proxy-Authorization",
            "X-Credproxy-Credential",
            "bad header",
        ] {
            assert!(
                matches!(
                    Bearer::build(&raw(Some(h), None), &mut ctx()),
                    Err(BuildError::Invalid { .. })
                ),
                "{h}"
            );
        }
    }
}
