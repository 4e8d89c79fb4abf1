//! `credentials:`: each entry's `type` picks a row of `credentials::KINDS`, which builds it.
//! Besides the type's own fields an entry may take `per_tenant`, `provider` (a catalog entry)
//! and any catalog field, and `test_url`; a per-tenant entry becomes a template that each
//! tenant's connection completes.

use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_yaml::{Mapping, Value};

use super::Validator;
use crate::catalog::{self, Provider};
use crate::config::CredentialEntry;
use crate::connections::template::{self, Template};
use crate::credentials::{self, BuildCtx, BuildError, Credential, KindEntry};
use crate::sources::SourceSpec;
use crate::store::sealed_file::{parse_key, KEY_ENV};

/// Where a credential is built, shared by all of them.
pub(super) struct Place<'a> {
    pub state_dir: &'a Path,
    pub strict: bool,
}

/// A credential's fields sorted out: the type's own, and the rest.
struct Parts {
    kind: &'static KindEntry,
    fields: Mapping,
    per_tenant: bool,
    /// The catalog entry with the config's overrides, when either is given.
    catalog: Option<Provider>,
    test_url: Option<String>,
}

impl Validator<'_> {
    pub(super) fn credentials(
        &mut self,
        raw: IndexMap<String, Value>,
        place: &Place<'_>,
    ) -> Vec<CredentialEntry> {
        let mut out = Vec::new();
        for (name, value) in raw {
            let path = format!("credentials.{name}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                self.err(
                    &path,
                    "a credential name uses only letters, digits, `-`, `_` and `.`",
                );
                continue;
            }
            let Some(parts) = self.credential_parts(&path, &name, value) else {
                continue;
            };
            if let Some(entry) = self.credential(&path, &name, parts, place) {
                out.push(entry);
            }
        }
        out
    }

    fn credential(
        &mut self,
        path: &str,
        name: &str,
        parts: Parts,
        place: &Place<'_>,
    ) -> Option<CredentialEntry> {
        let kind = parts.kind.name;
        let catalog = parts.catalog.clone().map(Arc::new);
        let (built, extra, sources) = match parts.per_tenant {
            true => {
                let built = self.template(path, name, parts, place)?;
                let sources = match &built {
                    Ok(Credential::PerTenant(t)) => t.used_sources.clone(),
                    _ => Vec::new(),
                };
                (built, None, sources)
            }
            false => self.shared_credential(path, name, parts, place)?,
        };
        let credential = match built {
            Ok(c) => Ok(c),
            Err(e) => {
                self.warn(path, format!("{}: {e}", crate::config::UNAVAILABLE));
                Err(e)
            }
        };
        Some(CredentialEntry {
            name: name.into(),
            kind,
            credential,
            catalog,
            extra,
            sources,
        })
    }

    /// Reports a build error under the credential's key; None when the config is wrong.
    fn build_result<T>(
        &mut self,
        path: &str,
        r: Result<T, BuildError>,
    ) -> Option<Result<T, crate::secret::SecretError>> {
        match r {
            Ok(v) => Some(Ok(v)),
            Err(BuildError::Unavailable(e)) => Some(Err(e)),
            Err(BuildError::Invalid { key, message }) if key.is_empty() => {
                self.err(path, message);
                None
            }
            Err(BuildError::Invalid { key, message }) => {
                self.err(&format!("{path}.{key}"), message);
                None
            }
        }
    }

    /// A credential every request shares, and the extra headers its catalog adds.
    #[allow(clippy::type_complexity)]
    fn shared_credential(
        &mut self,
        path: &str,
        name: &str,
        parts: Parts,
        place: &Place<'_>,
    ) -> Option<(
        Result<Credential, crate::secret::SecretError>,
        Option<Arc<credentials::Injection>>,
        Vec<Arc<SourceSpec>>,
    )> {
        if let Some((key, p)) = first_reference(&parts.fields, parts.catalog.as_ref()) {
            self.err(
                &format!("{path}.{key}"),
                format!("`{{{p}}}` is filled per connection: set `per_tenant: true`, or write the value here"),
            );
            return None;
        }
        let mut ctx = BuildCtx {
            base_dir: &self.base_dir,
            env: self.env,
            warnings: Vec::new(),
            name,
            state_dir: place.state_dir,
            strict_permissions: place.strict,
            tenant: None,
            literal: &[],
            dry: false,
            sources: self.sources,
            used_sources: Vec::new(),
        };
        let built = parts.kind.build(Value::Mapping(parts.fields), &mut ctx);
        let extra = match &parts.catalog {
            Some(c) => template::extra_headers(c, &|_| None, &mut ctx),
            None => Ok(None),
        };
        let used = std::mem::take(&mut ctx.used_sources);
        for (key, msg) in std::mem::take(&mut ctx.warnings) {
            self.warn(&format!("{path}.{key}"), msg);
        }
        let built = self.build_result(path, built)?;
        let extra = match self.build_result(path, extra)? {
            Ok(e) => e.map(Arc::new),
            Err(e) => return Some((Err(e), None, used)),
        };
        Some((built, extra, used))
    }

    /// A per-tenant credential: checked with stand-in connection values.
    fn template(
        &mut self,
        path: &str,
        name: &str,
        parts: Parts,
        place: &Place<'_>,
    ) -> Option<Result<Credential, crate::secret::SecretError>> {
        if !self.state_key_usable(&format!("{path}.per_tenant")) {
            return None;
        }
        let input = template::Input {
            name,
            kind: parts.kind,
            fields: parts.fields,
            catalog: parts.catalog.unwrap_or_else(|| Provider {
                name: name.to_string(),
                ..Provider::default()
            }),
            test_url: parts.test_url,
            base_dir: &self.base_dir,
            state_dir: place.state_dir,
            strict_permissions: place.strict,
            env: self.env,
            sources: self.sources,
        };
        let built = match Template::new(input) {
            Ok((t, warnings)) => {
                for (key, msg) in warnings {
                    self.warn(&format!("{path}.{key}"), msg);
                }
                Ok(Credential::PerTenant(Arc::new(t)))
            }
            Err(e) => Err(e),
        };
        self.build_result(path, built)
    }

    /// Connections are sealed under `CREDPROXY_STATE_KEY`: without a usable one, a per-tenant
    /// credential could never hold one.
    fn state_key_usable(&mut self, path: &str) -> bool {
        match (self.env)(KEY_ENV).map(|k| parse_key(&k)) {
            Some(Ok(_)) => true,
            Some(Err(e)) => {
                self.err(path, e.to_string());
                false
            }
            None => {
                self.err(
                    path,
                    format!("tenants' connections are stored encrypted: set {KEY_ENV} (32 random bytes, as 64 hex digits or base64)"),
                );
                false
            }
        }
    }

    /// Splits an entry into its type, the type's fields, and the common and catalog fields.
    fn credential_parts(&mut self, path: &str, name: &str, value: Value) -> Option<Parts> {
        let (kind, mut map) = self.credential_kind(path, value)?;
        let per_tenant = match map.remove("per_tenant") {
            None => false,
            Some(Value::Bool(b)) => b,
            Some(_) => {
                self.err(&format!("{path}.per_tenant"), "expected true or false");
                return None;
            }
        };
        let provider = self.string_field(path, &mut map, "provider")?;
        let test_url = self.string_field(path, &mut map, "test_url")?;
        if let Some(u) = &test_url {
            if let Err(m) = catalog::check_url(u) {
                self.err(&format!("{path}.test_url"), m);
            }
        }
        let own = kind.fields();
        let catalog = self.catalog(path, name, provider.as_deref(), &mut map, &own)?;
        if let Some(c) = &catalog {
            fill_defaults(&mut map, c, &own);
        }
        if per_tenant && !self.tenant_fields_ok(path, kind, &map) {
            return None;
        }
        Some(Parts {
            kind,
            fields: map,
            per_tenant,
            catalog,
            test_url,
        })
    }

    fn string_field(&mut self, path: &str, map: &mut Mapping, key: &str) -> Option<Option<String>> {
        match map.remove(key) {
            None => Some(None),
            Some(Value::String(s)) => Some(Some(s)),
            Some(_) => {
                self.err(&format!("{path}.{key}"), "expected a string");
                None
            }
        }
    }

    /// The catalog entry (`provider:`) with the config's catalog fields laid over it. The
    /// catalog fields the type does not take itself are removed from `map`.
    fn catalog(
        &mut self,
        path: &str,
        name: &str,
        provider: Option<&str>,
        map: &mut Mapping,
        own: &[String],
    ) -> Option<Option<Provider>> {
        let mut merged = match provider {
            Some(p) => match catalog::mapping(p) {
                Some(m) => m,
                None => {
                    let known = catalog::names().join(", ");
                    self.err(
                        &format!("{path}.provider"),
                        format!("unknown provider `{p}` (known: {known})"),
                    );
                    return None;
                }
            },
            None => Mapping::new(),
        };
        let mut overridden = false;
        for key in catalog::FIELDS {
            let Some(v) = map.get(*key).cloned() else {
                continue;
            };
            overridden = true;
            merged.insert(Value::from(*key), v);
            if !own.iter().any(|o| o == key) {
                map.remove(*key);
            }
        }
        if provider.is_none() && !overridden {
            return Some(None);
        }
        merged.insert(Value::from("name"), Value::from(provider.unwrap_or(name)));
        let parsed: Result<Provider, _> = serde_path_to_error::deserialize(Value::Mapping(merged));
        let p = match parsed {
            Ok(p) => p,
            Err(e) => {
                let key = e.path().to_string();
                let msg = crate::config::serde_message(&e.into_inner().to_string());
                self.err(&format!("{path}.{key}"), msg);
                return None;
            }
        };
        let problems = p.check(false);
        for (key, msg) in &problems {
            self.err(&format!("{path}.{key}"), msg.clone());
        }
        problems.is_empty().then_some(Some(p))
    }

    /// A per-tenant entry leaves each connection's fields out, and its type can be per tenant.
    fn tenant_fields_ok(&mut self, path: &str, kind: &KindEntry, map: &Mapping) -> bool {
        if kind.tenant_fields.is_empty() {
            let m = format!("type {} cannot be per tenant (types that can: basic, bearer, headers, oauth2_client_credentials, oauth2_refresh_token, aws_sigv4)", kind.name);
            self.err(&format!("{path}.per_tenant"), m);
            return false;
        }
        let mut ok = true;
        for f in kind.tenant_fields {
            if map.contains_key(f.name) {
                self.err(
                    &format!("{path}.{}", f.name),
                    "comes from each tenant's connection (PUT /connections/TENANT/NAME): remove it here",
                );
                ok = false;
            }
        }
        ok
    }

    /// The credential's type (from `type`) and the rest of its fields.
    fn credential_kind(
        &mut self,
        path: &str,
        value: Value,
    ) -> Option<(&'static KindEntry, Mapping)> {
        let Value::Mapping(mut map) = value else {
            self.err(path, "expected a mapping with a `type` key");
            return None;
        };
        let ty = match map.remove("type") {
            Some(Value::String(t)) => t,
            Some(_) => {
                self.err(&format!("{path}.type"), "expected a string");
                return None;
            }
            None => {
                let m = format!("missing `type` (one of: {})", credentials::kind_names());
                self.err(path, m);
                return None;
            }
        };
        let Some(kind) = credentials::kind(&ty) else {
            let m = format!(
                "unknown credential type `{ty}` (one of: {})",
                credentials::kind_names()
            );
            self.err(&format!("{path}.type"), m);
            return None;
        };
        Some((kind, map))
    }
}

/// The catalog's values for the type's own fields the config left out: endpoint, scopes, how
/// the secret is sent, and where the token goes.
fn fill_defaults(map: &mut Mapping, c: &Provider, own: &[String]) {
    let mut set = |key: &str, v: Option<Value>| {
        if let Some(v) = v {
            if own.iter().any(|o| o == key) && !map.contains_key(key) {
                map.insert(Value::from(key), v);
            }
        }
    };
    set("token_url", c.token_url.clone().map(Value::from));
    set("scopes", (!c.scopes.is_empty()).then(|| yaml(&c.scopes)));
    set(
        "scope_separator",
        c.scope_separator.clone().map(Value::from),
    );
    set("auth_method", c.auth_method.map(|m| yaml(&m)));
    set(
        "token_params",
        (!c.token_params.is_empty()).then(|| yaml(&c.token_params)),
    );
    if let Some(i) = &c.inject {
        set("header", Some(Value::from(i.header.clone())));
        set(
            "prefix",
            Some(Value::from(i.prefix.clone().unwrap_or_default())),
        );
    }
}

fn yaml<T: serde::Serialize>(v: &T) -> Value {
    serde_yaml::to_value(v).unwrap_or(Value::Null)
}

/// The first `{placeholder}` in the type's fields or the catalog's templates, with its key.
fn first_reference(fields: &Mapping, c: Option<&Provider>) -> Option<(String, String)> {
    for (k, v) in fields {
        if let Some(s) = v.as_str() {
            if let Some(p) = catalog::references(s).first() {
                return Some((k.as_str().unwrap_or_default().to_string(), p.to_string()));
            }
        }
    }
    let c = c?;
    let mut templates: Vec<(String, &str)> = Vec::new();
    templates.extend(
        c.api_hosts
            .iter()
            .map(|h| ("api_hosts".to_string(), h.as_str())),
    );
    templates.extend(
        c.extra_headers
            .iter()
            .map(|(k, v)| (format!("extra_headers.{k}"), v.as_str())),
    );
    templates
        .into_iter()
        .find_map(|(k, t)| catalog::references(t).first().map(|p| (k, p.to_string())))
}
