//! `basic`: HTTP Basic authentication (RFC 7617).

use base64::Engine;
use http::header::AUTHORIZATION;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{BuildCtx, BuildError, Credential, Injection, Kind};
use crate::config::raw::SecretValue;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBasic {
    /// Secret reference or plain string.
    pub username: SecretValue,
    pub password: SecretValue,
}

#[derive(Debug, Clone)]
pub struct Basic {
    pub(super) injection: Injection,
}

impl Basic {
    pub fn build(raw: &RawBasic, ctx: &mut BuildCtx<'_>) -> Result<Self, BuildError> {
        let user = ctx.identifier("username", &raw.username)?;
        let pass = ctx.secret("password", &raw.password)?;
        if user.expose().contains(':') {
            // RFC 7617 2: the user-id cannot contain a colon; the server would split it wrongly.
            return Err(BuildError::Invalid {
                key: "username".into(),
                message: "a Basic user name cannot contain `:`".into(),
            });
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            user.expose(),
            pass.expose()
        ));
        let mut injection = Injection::default();
        injection
            .push(
                AUTHORIZATION,
                &format!("Basic {encoded}"),
                "Basic ***".into(),
            )
            .map_err(|message| BuildError::Invalid {
                key: "password".into(),
                message,
            })?;
        Ok(Basic { injection })
    }
}

/// `type: basic`: fixed `Authorization: Basic`.
pub struct BasicKind;

impl Kind for BasicKind {
    const NAME: &'static str = "basic";
    const TENANT_FIELDS: &'static [super::TenantField] = &[super::TenantField::required("username"), super::TenantField::required("password")];
    type Raw = RawBasic;
    fn build(raw: &RawBasic, ctx: &mut BuildCtx<'_>) -> Result<Credential, BuildError> {
        Ok(Credential::Static(std::sync::Arc::new(Basic::build(raw, ctx)?.injection)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{apply, ctx};
    use super::*;

    #[test]
    fn rfc7617_vector() {
        // RFC 7617 section 2: Aladdin / open sesame.
        let raw = RawBasic {
            username: "${USER}".into(),
            password: "${PASS}".into(),
        };
        let b = Basic::build(&raw, &mut ctx()).unwrap();
        let req = apply(&b.injection);
        assert_eq!(
            req.headers
                .get_all("authorization")
                .iter()
                .collect::<Vec<_>>(),
            vec!["Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="]
        );
        assert_eq!(b.injection.display()[0].1, "Basic ***");
    }

    #[test]
    fn colon_in_user_refused() {
        let raw = RawBasic {
            username: "a:b".into(),
            password: "p".into(),
        };
        let mut c = ctx();
        assert!(matches!(
            Basic::build(&raw, &mut c),
            Err(BuildError::Invalid { .. })
        ));
    }

    #[test]
    fn missing_env_is_unavailable() {
        let raw = RawBasic {
            username: "u".into(),
            password: "${NOPE}".into(),
        };
        let mut c = ctx();
        assert!(matches!(
            Basic::build(&raw, &mut c),
            Err(BuildError::Unavailable(_))
        ));
        assert!(c.warnings.is_empty(), "a user name is not a secret: no literal warning");
    }
}
