//! A per-tenant credential's template: its type's fields as configured (catalog defaults
//! filled, connection fields left out), checked when the config loads by building it with
//! stand-in values, and built for real from each tenant's connection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::catalog::{self, Provider};
use crate::credentials::{BuildCtx, BuildError, Credential, Injection, KindEntry};
use crate::routing::{parse_host_pattern, HostPattern};
use crate::secret::Secret;
use crate::sources::{SourceSpec, Sources};

use super::record::Record;

/// Stands in for a connection's secret values when the template is checked.
pub(super) const DRY_VALUE: &str = "credproxy-dry-run-value";

static TEMPLATE_IDS: AtomicU64 = AtomicU64::new(1);

pub struct Template {
    /// Unique per config load: a connection built under an older config is built again.
    pub id: u64,
    pub credential: Arc<str>,
    pub kind: &'static KindEntry,
    /// The type's fields as configured, without the connection's.
    fields: serde_yaml::Mapping,
    /// The catalog entry with the config's overrides (an empty one without `provider:`).
    pub catalog: Arc<Provider>,
    /// The OAuth client, for the connect flow (types with an authorization URL).
    pub oauth: Option<OAuthClient>,
    pub test_url: Option<String>,
    /// The environment values the fields refer to, as read when the config loaded.
    env: HashMap<String, String>,
    base_dir: PathBuf,
    state_dir: PathBuf,
    strict_permissions: bool,
    sources: Sources,
    /// The runtime secret sources of the fields the config sets.
    pub used_sources: Vec<Arc<SourceSpec>>,
}

impl Template {
    /// Whether its tenants' credentials hold tokens in the cache (for the token metrics,
    /// summed over tenants).
    pub fn mints_tokens(&self) -> bool {
        matches!(
            self.kind.name,
            "oauth2_client_credentials" | "oauth2_refresh_token"
        )
    }
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("credential", &self.credential)
            .field("kind", &self.kind.name)
            .finish_non_exhaustive()
    }
}

/// The app registered with the provider.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    pub client_id: Secret,
    pub client_secret: Secret,
}

/// A credential built for one tenant: what it injects, the headers added when absent, and
/// the hosts its connection is for (when the catalog's hosts depend on the connection).
#[derive(Debug)]
pub struct Resolved {
    pub credential: Credential,
    pub extra: Option<Arc<Injection>>,
    pub hosts: Option<Vec<ApiHost>>,
}

/// What a template is made from.
pub struct Input<'a> {
    pub name: &'a str,
    pub kind: &'static KindEntry,
    pub fields: serde_yaml::Mapping,
    pub catalog: Provider,
    pub test_url: Option<String>,
    pub base_dir: &'a Path,
    pub state_dir: &'a Path,
    pub strict_permissions: bool,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub sources: &'a Sources,
}

impl Template {
    /// Checks the template by building it with stand-in connection values; warnings come back
    /// as `(key, message)`.
    pub fn new(input: Input<'_>) -> Result<(Template, Vec<(String, String)>), BuildError> {
        let seen = Mutex::new(HashMap::new());
        let recording = |name: &str| {
            let v = (input.env)(name);
            if let (Some(v), Ok(mut s)) = (&v, seen.lock()) {
                s.insert(name.to_string(), v.clone());
            }
            v
        };
        let mut t = Template {
            id: TEMPLATE_IDS.fetch_add(1, Ordering::Relaxed),
            credential: input.name.into(),
            kind: input.kind,
            fields: input.fields,
            catalog: Arc::new(input.catalog),
            oauth: None,
            test_url: input.test_url,
            env: HashMap::new(),
            base_dir: input.base_dir.to_path_buf(),
            state_dir: input.state_dir.to_path_buf(),
            strict_permissions: input.strict_permissions,
            sources: input.sources.clone(),
            used_sources: Vec::new(),
        };
        let dry = Record::dry(t.kind, &t.catalog);
        let literal = t.literal_fields();
        let (oauth, warnings, used) = {
            let mut ctx = t.ctx(&recording, None, &literal, true);
            t.build_in(&dry, &mut ctx)?;
            let oauth = t.oauth_client(&mut ctx)?;
            (
                oauth,
                std::mem::take(&mut ctx.warnings),
                std::mem::take(&mut ctx.used_sources),
            )
        };
        t.oauth = oauth;
        t.used_sources = used;
        t.env = seen.into_inner().unwrap_or_default();
        Ok((t, warnings))
    }

    fn literal_fields(&self) -> Vec<&'static str> {
        self.kind.tenant_fields.iter().map(|f| f.name).collect()
    }

    fn ctx<'a>(
        &'a self,
        env: &'a dyn Fn(&str) -> Option<String>,
        tenant: Option<&'a str>,
        literal: &'a [&'a str],
        dry: bool,
    ) -> BuildCtx<'a> {
        BuildCtx {
            base_dir: &self.base_dir,
            env,
            warnings: Vec::new(),
            name: &self.credential,
            state_dir: &self.state_dir,
            strict_permissions: self.strict_permissions,
            tenant,
            literal,
            dry,
            sources: &self.sources,
            used_sources: Vec::new(),
        }
    }

    /// The credential for `record`'s tenant.
    pub fn build(&self, record: &Record) -> Result<Resolved, BuildError> {
        let env = |name: &str| self.env.get(name).cloned();
        let literal = self.literal_fields();
        let mut ctx = self.ctx(&env, Some(&record.tenant), &literal, false);
        self.build_in(record, &mut ctx)
    }

    fn build_in(&self, record: &Record, ctx: &mut BuildCtx<'_>) -> Result<Resolved, BuildError> {
        let value = |name: &str| record.metadata.get(name).cloned();
        let mut fields = serde_yaml::Mapping::new();
        for (k, v) in &self.fields {
            let key = k.as_str().unwrap_or_default();
            fields.insert(k.clone(), fill_value(v, &value, key)?);
        }
        for (k, v) in &record.fields {
            let v = serde_yaml::to_value(v).map_err(|e| invalid(k, e.to_string()))?;
            fields.insert(serde_yaml::Value::String(k.clone()), v);
        }
        // Literal values never warn: they are the tenant's, not written in the config.
        let credential = self.kind.build(serde_yaml::Value::Mapping(fields), ctx)?;
        Ok(Resolved {
            credential,
            extra: extra_headers(&self.catalog, &value, ctx)?.map(Arc::new),
            hosts: connection_hosts(&self.catalog, &value)?,
        })
    }

    /// The client id and secret the connect flow sends, for types that have them and a
    /// catalog with an authorization URL.
    fn oauth_client(&self, ctx: &mut BuildCtx<'_>) -> Result<Option<OAuthClient>, BuildError> {
        if self.catalog.authorize_url.is_none() {
            return Ok(None);
        }
        let text = |k: &str| {
            self.fields
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let (Some(id), Some(secret)) = (text("client_id"), text("client_secret")) else {
            return Ok(None);
        };
        Ok(Some(OAuthClient {
            client_id: ctx.identifier("client_id", &id)?,
            client_secret: ctx.secret("client_secret", &secret)?,
        }))
    }
}

fn invalid(key: &str, message: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// `v` with every `{placeholder}` in its strings filled from the connection.
fn fill_value(
    v: &serde_yaml::Value,
    value: &dyn Fn(&str) -> Option<String>,
    key: &str,
) -> Result<serde_yaml::Value, BuildError> {
    use serde_yaml::Value;
    Ok(match v {
        Value::String(s) => Value::String(catalog::fill(s, value).map_err(|name| {
            invalid(
                key,
                format!("needs `{{{name}}}`, which this connection does not have"),
            )
        })?),
        Value::Mapping(m) => {
            let mut out = serde_yaml::Mapping::new();
            for (k, v) in m {
                let sub = format!("{key}.{}", k.as_str().unwrap_or_default());
                out.insert(k.clone(), fill_value(v, value, &sub)?);
            }
            Value::Mapping(out)
        }
        Value::Sequence(items) => Value::Sequence(
            items
                .iter()
                .map(|i| fill_value(i, value, key))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

/// The catalog's `extra_headers` (values may be secret references) and the header of
/// `post_connect`, filled from the connection.
pub fn extra_headers(
    catalog: &Provider,
    value: &dyn Fn(&str) -> Option<String>,
    ctx: &mut BuildCtx<'_>,
) -> Result<Option<Injection>, BuildError> {
    let mut inj = Injection::default();
    for (name, template) in &catalog.extra_headers {
        let key = format!("extra_headers.{name}");
        let header = crate::credentials::config_header_name(&key, name)?;
        let filled = catalog::fill(template, value).map_err(|p| {
            invalid(
                &key,
                format!("needs `{{{p}}}`, which this connection does not have"),
            )
        })?;
        let v = ctx.secret(&key, &filled)?;
        inj.push(header, v.expose(), template.clone())
            .map_err(|m| invalid(&key, m))?;
    }
    if let Some(pc) = &catalog.post_connect {
        if let (Some(h), Some(v)) = (&pc.header, value(&pc.name)) {
            let key = "post_connect.header";
            let header = crate::credentials::config_header_name(key, h)?;
            inj.push(header, &v, v.clone())
                .map_err(|m| invalid(key, m))?;
        }
    }
    Ok((!inj.is_empty()).then_some(inj))
}

/// One API host a connection is for: a request must match the pattern, and the port when
/// the host names one.
#[derive(Debug)]
pub struct ApiHost {
    pub pattern: HostPattern,
    pub port: Option<u16>,
    /// As written, for messages.
    pub text: String,
}

impl ApiHost {
    pub fn covers(&self, host: &str, port: u16) -> bool {
        self.pattern.covers(&HostPattern::Exact(host.to_string()))
            && self.port.is_none_or(|p| p == port)
    }
}

/// The API hosts one connection is for, when they depend on it (a Salesforce instance, a
/// Shopify shop); None when every connection shares them.
fn connection_hosts(
    catalog: &Provider,
    value: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Vec<ApiHost>>, BuildError> {
    if !catalog
        .api_hosts
        .iter()
        .any(|h| !catalog::references(h).is_empty())
    {
        return Ok(None);
    }
    let mut out = Vec::new();
    for h in &catalog.api_hosts {
        let filled = catalog::fill(h, value).map_err(|p| {
            invalid(
                "api_hosts",
                format!("needs `{{{p}}}`, which this connection does not have"),
            )
        })?;
        let host = catalog::host_of(&filled);
        let (pattern, port) = parse_host_pattern(&host).map_err(|m| invalid("api_hosts", m))?;
        out.push(ApiHost {
            pattern,
            port,
            text: host,
        });
    }
    Ok(Some(out))
}
