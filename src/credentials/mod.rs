//! Credential types: the one table of them (`KINDS`), how each is built from its config, and
//! how a built credential applies to a request.
//!
//! One file per type holds its config as written (`Raw*`), its build step and its spec's test
//! vectors. Adding a type is that file plus one line in `KINDS`: the type list in errors, the
//! JSON Schema, `type` names in `/credentials` and `explain` all come from the table.
//!
//! A built credential applies in one of three ways (`Credential`): fixed headers computed at
//! load, a token from the cache, or a signature over each request.

use std::path::Path;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;

use crate::config::raw::SecretValue;
use crate::secret::{Secret, SecretError, SecretSource};
use crate::sources::{SourceSpec, Sources};
use crate::tokens::TokenSource;

/// One credential type: its `type` name, its config as written, and how it is built.
pub trait Kind {
    const NAME: &'static str;
    /// The type's fields as written (`type` itself excluded).
    type Raw: DeserializeOwned + JsonSchema;
    /// The fields each tenant's connection supplies when the credential is `per_tenant`
    /// (none: the type cannot be per tenant).
    const TENANT_FIELDS: &'static [TenantField] = &[];
    fn build(raw: &Self::Raw, ctx: &mut BuildCtx<'_>) -> Result<Credential, BuildError>;
}

/// A field a tenant's connection supplies (`PUT /connections/T/NAME`), taken literally.
#[derive(Debug, Clone, Copy)]
pub struct TenantField {
    pub name: &'static str,
    /// A connection without it is refused (else the type's own rules apply).
    pub required: bool,
    /// A mapping of strings (`headers`) rather than one string.
    pub map: bool,
}

impl TenantField {
    pub const fn required(name: &'static str) -> Self {
        TenantField {
            name,
            required: true,
            map: false,
        }
    }
    pub const fn optional(name: &'static str) -> Self {
        TenantField {
            name,
            required: false,
            map: false,
        }
    }
    pub const fn map(name: &'static str) -> Self {
        TenantField {
            name,
            required: true,
            map: true,
        }
    }
}

/// A row of `KINDS`: a `Kind` with its types erased.
pub struct KindEntry {
    pub name: &'static str,
    pub tenant_fields: &'static [TenantField],
    build: fn(serde_yaml::Value, &mut BuildCtx<'_>) -> Result<Credential, BuildError>,
    schema: fn(&mut SchemaGenerator) -> Schema,
    own_schema: fn(&mut SchemaGenerator) -> Schema,
}

const fn entry<K: Kind>() -> KindEntry {
    KindEntry {
        name: K::NAME,
        tenant_fields: K::TENANT_FIELDS,
        build: parse_and_build::<K>,
        schema: schema_of::<K>,
        own_schema: K::Raw::json_schema,
    }
}

/// Declares each type's module and its row in `KINDS`.
macro_rules! kinds {
    ($($module:ident :: $kind:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every credential type, in the order the docs list them.
        pub static KINDS: &[KindEntry] = &[$(entry::<$module::$kind>()),*];
    };
}

// The table: one line per credential type.
kinds! {
    basic::BasicKind,
    bearer::BearerKind,
    headers::HeadersKind,
    oauth2_client_credentials::ClientCredentialsKind,
    jwt_key_pair::JwtKeyPairKind,
    google_service_account::GoogleKind,
    salesforce_data360::Data360Kind,
    oauth2_refresh_token::RefreshTokenKind,
    aws_sigv4::SigV4Kind,
    mtls::MtlsKind,
}

/// The type called `name`.
pub fn kind(name: &str) -> Option<&'static KindEntry> {
    KINDS.iter().find(|k| k.name == name)
}

/// `basic, bearer, ...`: for messages that list the choices.
pub fn kind_names() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

impl KindEntry {
    /// Reads the type's fields from `value` (a mapping without `type`) and builds it. Field
    /// errors come back as `Invalid` with the key relative to the credential.
    pub fn build(
        &self,
        value: serde_yaml::Value,
        ctx: &mut BuildCtx<'_>,
    ) -> Result<Credential, BuildError> {
        (self.build)(value, ctx)
    }

    /// The names of the type's own fields (from its schema).
    pub fn fields(&self) -> Vec<String> {
        let schema = (self.own_schema)(&mut SchemaGenerator::default());
        schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().filter(|k| *k != "type").cloned().collect())
            .unwrap_or_default()
    }

    pub fn tenant_field(&self, name: &str) -> Option<&TenantField> {
        self.tenant_fields.iter().find(|f| f.name == name)
    }
}

fn parse_and_build<K: Kind>(
    value: serde_yaml::Value,
    ctx: &mut BuildCtx<'_>,
) -> Result<Credential, BuildError> {
    let raw: K::Raw = serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        BuildError::Invalid {
            key: if key == "." { String::new() } else { key },
            message: crate::config::serde_message(&e.into_inner().to_string()),
        }
    })?;
    K::build(&raw, ctx)
}

/// The type's fields with `type` added, as one branch of the credential schema.
fn schema_of<K: Kind>(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = K::Raw::json_schema(generator);
    let obj = schema.ensure_object();
    if let Some(serde_json::Value::Object(props)) = obj.get_mut("properties") {
        props.insert(
            "type".into(),
            serde_json::json!({ "type": "string", "const": K::NAME }),
        );
    }
    let mut required = vec![serde_json::Value::from("type")];
    if let Some(serde_json::Value::Array(r)) = obj.remove("required") {
        // A per-tenant credential leaves its connection's fields out.
        required.extend(
            r.into_iter()
                .filter(|f| !K::TENANT_FIELDS.iter().any(|t| f.as_str() == Some(t.name))),
        );
    }
    obj.insert("required".into(), required.into());
    let common = CommonFields::json_schema(generator).to_value();
    if let (Some(serde_json::Value::Object(props)), Some(extra)) = (
        obj.get_mut("properties"),
        common.get("properties").and_then(|p| p.as_object()),
    ) {
        for (k, v) in extra {
            props.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    schema
}

/// Fields every credential type takes besides its own: tenancy, the catalog, a test URL.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct CommonFields {
    /// Each tenant connects its own account or key (`PUT /connections/TENANT/NAME`, or the
    /// connect flow); the type's secret fields then come from the connection.
    per_tenant: Option<bool>,
    /// A catalog entry (`credproxy providers`): endpoints, scopes, API hosts, quirks.
    provider: Option<String>,
    /// `PUT ...?test=true` calls this URL with the credential and stores the connection only
    /// on a 2xx.
    test_url: Option<String>,
    #[serde(flatten)]
    catalog: CatalogFields,
}

/// The catalog fields, each overriding the provider's (see `credproxy providers NAME`).
#[derive(JsonSchema)]
#[allow(dead_code)]
struct CatalogFields {
    authorize_url: Option<String>,
    pkce: Option<bool>,
    scope_separator: Option<String>,
    api_hosts: Option<Vec<String>>,
    inject: Option<crate::catalog::Inject>,
    extra_headers: Option<indexmap::IndexMap<String, String>>,
    authorize_params: Option<indexmap::IndexMap<String, String>>,
    token_params: Option<indexmap::IndexMap<String, String>>,
    placeholders: Option<indexmap::IndexMap<String, crate::catalog::Placeholder>>,
    token_response_fields: Option<indexmap::IndexMap<String, String>>,
    callback_params: Option<indexmap::IndexMap<String, String>>,
    post_connect: Option<crate::catalog::PostConnect>,
    refresh_token_policy: Option<crate::catalog::RefreshPolicy>,
}

/// Any credential, for the JSON Schema: one of `KINDS`, chosen by `type`.
pub struct AnyCredential;

impl JsonSchema for AnyCredential {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Credential".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let branches: Vec<serde_json::Value> = KINDS
            .iter()
            .map(|k| (k.schema)(generator).to_value())
            .collect();
        json_schema!({
            "description": "A credential; `type` selects which fields apply.",
            "oneOf": branches,
        })
    }
}

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
    /// The tenant whose connection this is (state files are bound to it too).
    pub tenant: Option<&'a str>,
    /// Top-level fields a tenant supplied: taken literally, never as `${ENV}` or `file:`.
    pub literal: &'a [&'a str],
    /// A check of a per-tenant template: no state is read or written.
    pub dry: bool,
    /// Where runtime secret sources are read and cached.
    pub sources: &'a Sources,
    /// The runtime sources this credential's secrets came from.
    pub used_sources: Vec<Arc<SourceSpec>>,
}

/// What a secret may be written as: a string, or a mapping naming a runtime source.
pub trait SecretInput {
    fn text(&self) -> &str;
    fn source(&self) -> Option<&Arc<SourceSpec>> {
        None
    }
}

impl SecretInput for str {
    fn text(&self) -> &str {
        self
    }
}

impl SecretInput for String {
    fn text(&self) -> &str {
        self
    }
}

impl SecretInput for SecretValue {
    fn text(&self) -> &str {
        match self {
            SecretValue::Text(t) => t,
            SecretValue::Source(_) => "",
        }
    }
    fn source(&self) -> Option<&Arc<SourceSpec>> {
        match self {
            SecretValue::Text(_) => None,
            SecretValue::Source(s) => Some(s),
        }
    }
}

impl BuildCtx<'_> {
    /// Resolves the secret written at `key`; syntax errors are config errors, absent values
    /// make the credential unavailable.
    pub fn secret(
        &mut self,
        key: &str,
        raw: &(impl SecretInput + ?Sized),
    ) -> Result<Secret, BuildError> {
        self.secret_inner(key, raw, false)
    }

    /// A value that may be a reference but is not itself secret (a user name, a client id):
    /// written literally, it is not warned about.
    pub fn identifier(
        &mut self,
        key: &str,
        raw: &(impl SecretInput + ?Sized),
    ) -> Result<Secret, BuildError> {
        if raw.source().is_none() && SecretSource::parse(raw.text()).is_literal() {
            let before = self.warnings.len();
            let s = self.secret(key, raw);
            self.warnings.truncate(before);
            return s;
        }
        self.secret(key, raw)
    }

    /// A secret sent to a token endpoint: at least `MIN_SENT_SECRET` characters, since a
    /// shorter one cannot be told from ordinary text when an endpoint quotes it back, and so
    /// could not be scrubbed from its error messages.
    pub fn sent_secret(
        &mut self,
        key: &str,
        raw: &(impl SecretInput + ?Sized),
    ) -> Result<Secret, BuildError> {
        let s = self.secret(key, raw)?;
        if s.expose().chars().count() < MIN_SENT_SECRET {
            return Err(BuildError::Invalid {
                key: key.to_string(),
                message: format!(
                    "a secret sent to a token endpoint needs at least {MIN_SENT_SECRET} characters \
                     (a shorter one could not be kept out of the endpoint's error messages)"
                ),
            });
        }
        Ok(s)
    }

    /// Like `secret`, for values that may span lines (PEM keys, JSON key files).
    pub fn secret_multiline(
        &mut self,
        key: &str,
        raw: &(impl SecretInput + ?Sized),
    ) -> Result<Secret, BuildError> {
        self.secret_inner(key, raw, true)
    }

    fn secret_inner(
        &mut self,
        key: &str,
        raw: &(impl SecretInput + ?Sized),
        multiline: bool,
    ) -> Result<Secret, BuildError> {
        let invalid = |message: String| BuildError::Invalid {
            key: key.to_string(),
            message,
        };
        let top = key.split('.').next().unwrap_or(key);
        if self.literal.contains(&top) {
            // A tenant's value: what it says, never a reference to this host's env, files or
            // commands.
            if raw.source().is_some() {
                return Err(invalid("a connection's value must be a string".to_string()));
            }
            let literal = SecretSource::Literal(raw.text().to_string());
            let resolved = match multiline {
                true => literal.resolve_multiline(self.base_dir, self.env),
                false => literal.resolve(self.base_dir, self.env),
            };
            return resolved.map_err(|_| invalid("value contains CR, LF or NUL".to_string()));
        }
        if let Some(spec) = raw.source() {
            return self.read_source(spec, multiline);
        }
        let mut warnings = Vec::new();
        let source = SecretSource::parse_checked(
            raw.text(),
            self.base_dir,
            self.strict_permissions,
            &mut |w| warnings.push((key.to_string(), w)),
        );
        self.warnings.extend(warnings);
        let source = source.map_err(invalid)?;
        let resolved = if multiline {
            source.resolve_multiline(self.base_dir, self.env)
        } else {
            source.resolve(self.base_dir, self.env)
        };
        if let SecretSource::File(p) = &source {
            self.watch_file(p, &resolved);
        }
        match resolved {
            Ok(s) => Ok(s),
            Err(SecretError::BadBytes(_)) if source.is_literal() => {
                Err(invalid("value contains CR, LF or NUL".to_string()))
            }
            Err(e) => Err(BuildError::Unavailable(e)),
        }
    }

    /// A value from a runtime source: the cached one, or read now the first time.
    fn read_source(
        &mut self,
        spec: &Arc<SourceSpec>,
        multiline: bool,
    ) -> Result<Secret, BuildError> {
        let spec = spec.anchored(self.base_dir);
        self.used_sources.push(spec.clone());
        let value = self.sources.get(&spec).map_err(BuildError::Unavailable)?;
        if !multiline
            && value
                .expose()
                .bytes()
                .any(|b| matches!(b, b'\r' | b'\n' | 0))
        {
            return Err(BuildError::Unavailable(SecretError::BadBytes(
                spec.describe(),
            )));
        }
        Ok(value)
    }

    /// A plain `file:` secret is watched: re-read on schedule, rebuilt when it changes.
    fn watch_file(&mut self, path: &str, read: &Result<Secret, SecretError>) {
        let spec = Arc::new(SourceSpec::file(self.base_dir.join(path)));
        self.used_sources.push(spec.clone());
        self.sources.observe(spec, read);
    }
}

/// Shortest secret credproxy sends to a token endpoint.
pub const MIN_SENT_SECRET: usize = 8;

/// The secret inside an injected header value: after an auth scheme (`Bearer X`) the
/// credential, for Basic the password; otherwise (an API-key header) the whole value.
pub fn secret_of_header(value: &str) -> String {
    let scheme = value.split_once(' ').filter(|(s, _)| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    let Some((scheme, rest)) = scheme else {
        return value.to_string();
    };
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let pair = base64::engine::general_purpose::STANDARD.decode(rest);
        if let Some(pair) = pair.ok().and_then(|d| String::from_utf8(d).ok()) {
            if let Some((_, password)) = pair.split_once(':') {
                return password.to_string();
            }
        }
    }
    rest.to_string()
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

    /// Sets each header the client did not send itself (extra headers such as an API
    /// version, which a client may pin).
    pub fn apply_missing(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        for (name, value) in &self.headers {
            if !req.headers.contains_key(name) {
                req.insert_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// The header values set, secrets in the clear (for response scrubbing).
    pub fn values(&self) -> impl Iterator<Item = &HeaderValue> {
        self.headers.iter().map(|(_, v)| v)
    }

    pub fn display(&self) -> &[(String, String)] {
        &self.display
    }

    pub fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.headers.iter().map(|(n, _)| n)
    }
}

/// A usable credential, by how it applies to a request.
#[derive(Debug, Clone)]
pub enum Credential {
    /// Fixed headers computed at load (basic, bearer, headers).
    Static(Arc<Injection>),
    /// A header from the token cache.
    Token(Arc<dyn TokenSource>),
    /// A signature over each request (AWS SigV4).
    Signed(Arc<aws_sigv4::AwsSigV4>),
    /// Built per request's tenant from its connection (`per_tenant: true`).
    PerTenant(Arc<crate::connections::Template>),
    /// A client certificate for the upstream TLS connection (`mtls`); sets no header.
    ClientCert(Arc<mtls::ClientCert>),
}

impl Credential {
    pub fn token_source(&self) -> Option<&Arc<dyn TokenSource>> {
        match self {
            Credential::Token(t) => Some(t),
            _ => None,
        }
    }

    /// What it sets on a request, secrets as `***`: one line per header (`explain`).
    pub fn describe(&self) -> Vec<String> {
        match self {
            Credential::Static(inj) => inj
                .display()
                .iter()
                .map(|(name, value)| format!("{name}: {value}"))
                .collect(),
            Credential::Token(src) => vec![format!(
                "{}: {}*** (token from {})",
                src.header_name(),
                src.prefix(),
                src.endpoint()
            )],
            Credential::Signed(sig) => vec![sig.describe()],
            Credential::ClientCert(c) => vec![c.describe()],
            Credential::PerTenant(t) => vec![format!(
                "per tenant: {} from each tenant's connection (PUT /connections/TENANT/{}{})",
                t.kind
                    .tenant_fields
                    .iter()
                    .map(|f| f.name)
                    .collect::<Vec<_>>()
                    .join(", "),
                t.credential,
                if t.oauth.is_some() {
                    ", or the connect flow"
                } else {
                    ""
                }
            )],
        }
    }
}

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

    static SOURCES: std::sync::LazyLock<Sources> = std::sync::LazyLock::new(Sources::default);

    pub fn ctx() -> BuildCtx<'static> {
        BuildCtx {
            base_dir: Path::new("."),
            env: &env,
            warnings: Vec::new(),
            name: "test",
            state_dir: Path::new(".credproxy-test-state"),
            strict_permissions: false,
            tenant: None,
            literal: &[],
            dry: false,
            sources: &SOURCES,
            used_sources: Vec::new(),
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
