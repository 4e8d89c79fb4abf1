//! `headers`: any set of headers (API keys such as `X-Api-Key`), each value a secret reference.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{config_header_name, BuildCtx, BuildError, Credential, Injection, Kind};
use crate::config::raw::SecretValue;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    /// Header name to value; values may be secret references.
    pub headers: IndexMap<String, SecretValue>,
}

#[derive(Debug, Clone)]
pub struct Headers {
    pub(super) injection: Injection,
}

impl Headers {
    pub fn build(raw: &RawHeaders, ctx: &mut BuildCtx<'_>) -> Result<Self, BuildError> {
        if raw.headers.is_empty() {
            return Err(BuildError::Invalid {
                key: "headers".into(),
                message: "at least one header is needed".into(),
            });
        }
        // Validate every name before resolving any secret, so a bad name is reported even when
        // a secret is also missing.
        let names = raw
            .headers
            .keys()
            .map(|k| config_header_name(&format!("headers.{k}"), k))
            .collect::<Result<Vec<_>, _>>()?;
        let mut injection = Injection::default();
        for (name, (key, value)) in names.into_iter().zip(&raw.headers) {
            let path = format!("headers.{key}");
            let secret = ctx.secret(&path, value)?;
            injection
                .push(name, secret.expose(), "***".into())
                .map_err(|message| BuildError::Invalid { key: path, message })?;
        }
        Ok(Headers { injection })
    }
}

/// `type: headers`: fixed headers.
pub struct HeadersKind;

impl Kind for HeadersKind {
    const NAME: &'static str = "headers";
    const TENANT_FIELDS: &'static [super::TenantField] = &[super::TenantField::map("headers")];
    type Raw = RawHeaders;
    fn build(raw: &RawHeaders, ctx: &mut BuildCtx<'_>) -> Result<Credential, BuildError> {
        Ok(Credential::Static(std::sync::Arc::new(Headers::build(raw, ctx)?.injection)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{apply, ctx};
    use super::*;

    #[test]
    fn sets_every_header() {
        let mut raw = RawHeaders {
            headers: Default::default(),
        };
        raw.headers.insert("X-Api-Key".into(), "${TOKEN}".into());
        raw.headers
            .insert("X-Tenant".into(), "Tenant ${USER}".into());
        let h = Headers::build(&raw, &mut ctx()).unwrap();
        let req = apply(&h.injection);
        assert_eq!(req.headers.get("x-api-key").unwrap(), "tok-123");
        assert_eq!(req.headers.get("x-tenant").unwrap(), "Tenant Aladdin");
        assert!(req.headers.get("x-api-key").unwrap().is_sensitive());
    }

    #[test]
    fn rejects_empty_and_bad_names() {
        let raw = RawHeaders {
            headers: Default::default(),
        };
        assert!(Headers::build(&raw, &mut ctx()).is_err());
        let mut raw = RawHeaders {
            headers: Default::default(),
        };
        raw.headers.insert("Bad Name".into(), "${NOPE}".into());
        assert!(matches!(
            Headers::build(&raw, &mut ctx()),
            Err(BuildError::Invalid { .. })
        ));
    }

    #[test]
    fn literal_crlf_is_a_config_error() {
        let mut raw = RawHeaders {
            headers: Default::default(),
        };
        raw.headers.insert("X-Key".into(), "a\r\nX-Evil: 1".into());
        assert!(matches!(
            Headers::build(&raw, &mut ctx()),
            Err(BuildError::Invalid { .. })
        ));
    }
}
