//! A connection as stored: the tenant's secret fields for one credential, its non-secret
//! metadata (placeholders such as a Salesforce instance or a Shopify shop), and its history.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::{self, Provider};
use crate::credentials::KindEntry;

#[derive(Clone, Serialize, Deserialize)]
pub struct Record {
    pub tenant: String,
    pub credential: String,
    /// The type's connection fields (`token`, `refresh_token`, `headers`, AWS keys).
    pub fields: serde_json::Map<String, Value>,
    /// Non-secret values the catalog's templates use.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Seconds since the epoch.
    pub created_at: u64,
    pub updated_at: u64,
    /// How it was made: `api` (PUT) or `connect` (the OAuth connect flow).
    pub source: String,
    /// Milliseconds since the epoch of the last change: in a fleet the later change wins.
    pub revision: u64,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("tenant", &self.tenant)
            .field("credential", &self.credential)
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

/// A field of a PUT body that cannot be accepted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Tenant names: 1 to 64 letters, digits, `.`, `_` or `-`, not starting with `.` (they name
/// directories and appear in URLs).
pub fn valid_tenant(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Record {
    pub fn new(
        tenant: &str,
        credential: &str,
        fields: serde_json::Map<String, Value>,
        metadata: BTreeMap<String, String>,
        source: &str,
    ) -> Record {
        let now = now_millis();
        Record {
            tenant: tenant.into(),
            credential: credential.into(),
            fields,
            metadata,
            created_at: now / 1000,
            updated_at: now / 1000,
            source: source.into(),
            revision: now,
        }
    }

    /// Stand-in values, to check a template before any connection exists.
    pub fn dry(kind: &KindEntry, catalog: &Provider) -> Record {
        let mut fields = serde_json::Map::new();
        for f in kind
            .tenant_fields
            .iter()
            .filter(|f| !f.name.ends_with("_expires_at"))
        {
            let v = match f.map {
                true => serde_json::json!({ "X-Dry-Run": super::template::DRY_VALUE }),
                false => Value::from(super::template::DRY_VALUE),
            };
            fields.insert(f.name.to_string(), v);
        }
        let metadata = catalog
            .placeholders
            .iter()
            .map(|(name, p)| {
                let v = p.example.clone().or_else(|| p.default.clone());
                (name.clone(), v.unwrap_or_else(|| "example".into()))
            })
            .collect();
        Record::new("dry-run", "dry-run", fields, metadata, "api")
    }
}

/// The connection fields and metadata of a PUT body, checked against the type and catalog:
/// only the type's connection fields (strings; `headers` a mapping of strings), each required
/// one present, and metadata only for known names, each matching its pattern.
/// A connection's fields and metadata, as `parse_put` accepts them.
pub type Put = (serde_json::Map<String, Value>, BTreeMap<String, String>);

pub fn parse_put(kind: &KindEntry, catalog: &Provider, body: Value) -> Result<Put, FieldError> {
    let Value::Object(mut body) = body else {
        return Err(field_error(
            "",
            "expected a JSON object of the connection's fields",
        ));
    };
    let metadata = match body.remove("metadata") {
        None => BTreeMap::new(),
        Some(m) => metadata(catalog, m)?,
    };
    let names: Vec<&str> = kind.tenant_fields.iter().map(|f| f.name).collect();
    for (k, v) in &body {
        let Some(f) = kind.tenant_field(k) else {
            return Err(field_error(
                k,
                format!(
                    "unknown field for type {} (its fields: {}, metadata)",
                    kind.name,
                    names.join(", ")
                ),
            ));
        };
        check_value(k, v, f.map)?;
    }
    if let Some(f) = kind
        .tenant_fields
        .iter()
        .find(|f| f.required && !body.contains_key(f.name))
    {
        return Err(field_error(f.name, "missing"));
    }
    if body.is_empty() {
        return Err(field_error(
            "",
            format!(
                "no field given (type {} takes {})",
                kind.name,
                names.join(", ")
            ),
        ));
    }
    Ok((body, metadata))
}

fn check_value(key: &str, v: &Value, map: bool) -> Result<(), FieldError> {
    let text = |k: &str, v: &Value| match v {
        Value::String(s) if s.is_empty() => Err(field_error(k, "empty")),
        Value::String(s) if s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) => {
            Err(field_error(k, "contains CR, LF or NUL"))
        }
        Value::String(_) => Ok(()),
        _ => Err(field_error(k, "expected a string")),
    };
    match (map, v) {
        (false, v) => text(key, v),
        (true, Value::Object(m)) if !m.is_empty() => m
            .iter()
            .try_for_each(|(name, v)| text(&format!("{key}.{name}"), v)),
        (true, _) => Err(field_error(
            key,
            "expected a non-empty mapping of header names to strings",
        )),
    }
}

/// Names a connection's metadata may use: the catalog's placeholders (checked by their
/// patterns) and the values its answers fill (plain text).
fn metadata(catalog: &Provider, m: Value) -> Result<BTreeMap<String, String>, FieldError> {
    let Value::Object(m) = m else {
        return Err(field_error(
            "metadata",
            "expected a mapping of names to strings",
        ));
    };
    let mut out = BTreeMap::new();
    for (k, v) in m {
        let key = format!("metadata.{k}");
        let Value::String(v) = v else {
            return Err(field_error(&key, "expected a string"));
        };
        check_metadata(catalog, &k, &v).map_err(|m| field_error(&key, m))?;
        out.insert(k, v);
    }
    Ok(out)
}

/// Whether `value` may be kept as the connection's `name`.
pub fn check_metadata(catalog: &Provider, name: &str, value: &str) -> Result<(), String> {
    if let Some(p) = catalog.placeholders.get(name) {
        return match catalog::matches(&p.pattern, value) {
            true => Ok(()),
            false => Err(format!("does not match the pattern `{}`", p.pattern)),
        };
    }
    let implicit = catalog.token_response_fields.values().any(|v| v == name)
        || catalog.callback_params.values().any(|v| v == name)
        || catalog
            .post_connect
            .as_ref()
            .is_some_and(|pc| pc.name == name);
    match (implicit, catalog::plain_value(value)) {
        (false, _) => Err(format!(
            "unknown name (placeholders: {})",
            placeholder_names(catalog)
        )),
        (true, false) => Err("expected 1 to 256 letters, digits or ._:@/+=-".into()),
        (true, true) => Ok(()),
    }
}

fn placeholder_names(catalog: &Provider) -> String {
    let names: Vec<&str> = catalog.placeholders.keys().map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
