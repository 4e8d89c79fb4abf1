//! The config file as written: serde types with no interpretation beyond syntax.
//! `resolve` turns them into the validated `Config`.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

/// A field that may hold a secret: only a YAML string is accepted, and a wrong type is reported
/// without the value (serde's own message would print `9876543210`). Numbers are refused rather
/// than converted, since `0x1F` or `1e3` would silently become a different secret.
#[derive(Clone, PartialEq, Eq, JsonSchema)]
#[schemars(transparent)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(..)")
    }
}

impl From<&str> for SecretText {
    fn from(s: &str) -> Self {
        SecretText(s.to_string())
    }
}

impl std::ops::Deref for SecretText {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

const NOT_A_STRING: &str =
    "expected a string: put the value in quotes (it is not shown here, as it may be a secret)";

/// Refuses a scalar of the wrong type without naming its value.
macro_rules! refuse_scalar {
    ($out:ty; $($name:ident: $t:ty),*) => {$(
        fn $name<E: serde::de::Error>(self, _: $t) -> Result<$out, E> {
            Err(E::custom(NOT_A_STRING))
        }
    )*};
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SecretText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretText, E> {
                Ok(SecretText(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SecretText, E> {
                Ok(SecretText(v))
            }
            refuse_scalar!(SecretText; visit_bool: bool, visit_i64: i64, visit_i128: i128, visit_u64: u64,
                visit_u128: u128, visit_f64: f64, visit_char: char, visit_bytes: &[u8]);
        }
        d.deserialize_any(V)
    }
}

/// A credential's secret: a string (`${ENV}`, `file:PATH`, a literal) or a mapping naming a
/// source read at runtime (`{ exec: [...] }`, `{ aws_secret: ... }`, `{ vault: ... }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretValue {
    Text(SecretText),
    Source(std::sync::Arc<crate::sources::SourceSpec>),
}

impl From<&str> for SecretValue {
    fn from(s: &str) -> Self {
        SecretValue::Text(s.into())
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, or a secret source such as { exec: [...] }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretValue, E> {
                Ok(SecretValue::Text(SecretText(v.to_string())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SecretValue, E> {
                Ok(SecretValue::Text(SecretText(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SecretValue, A::Error> {
                let raw = crate::sources::RawSource::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                let spec = raw.resolve().map_err(serde::de::Error::custom)?;
                Ok(SecretValue::Source(std::sync::Arc::new(spec)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                _: A,
            ) -> Result<SecretValue, A::Error> {
                Err(serde::de::Error::custom(NOT_A_STRING))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<SecretValue, E> {
                Err(E::custom(NOT_A_STRING))
            }
            refuse_scalar!(SecretValue; visit_bool: bool, visit_i64: i64, visit_i128: i128, visit_u64: u64,
                visit_u128: u128, visit_f64: f64, visit_char: char, visit_bytes: &[u8]);
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for SecretValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SecretValue".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let source = generator.subschema_for::<crate::sources::RawSource>();
        schemars::json_schema!({
            "description": "`${ENV}`, `file:PATH`, a literal, or a source read at runtime.",
            "oneOf": [{ "type": "string" }, source],
        })
    }
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub proxy: RawProxy,
    /// Proxy clients; when present, `Proxy-Authorization` is required.
    pub clients: Option<Vec<RawClient>>,
    /// Named credentials; each has a `type`.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, crate::credentials::AnyCredential>")]
    pub credentials: IndexMap<String, serde_yaml::Value>,
    /// Tried in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// Address for HTTP_PROXY / HTTPS_PROXY and sidecar routes. Default 127.0.0.1:8080.
    pub listen: Option<String>,
    /// Address of the admin listener (health, metrics), or `off`. Default 127.0.0.1:9090.
    pub admin: Option<String>,
    /// What happens to requests no route matches. Default `tunnel`.
    pub unmatched: Option<Unmatched>,
    /// The CA used to intercept HTTPS (see `credproxy ca init`).
    pub ca: Option<RawCa>,
    /// PEM roots added to the system's for upstream TLS.
    pub upstream_ca: Option<String>,
    /// Largest body buffered for signing or replay, e.g. `16MiB`.
    pub max_body: Option<String>,
    pub egress: Option<RawEgress>,
    pub timeouts: Option<RawTimeouts>,
    pub limits: Option<RawLimits>,
    pub dns: Option<RawDns>,
    /// Worker threads for the data path. Default: number of CPUs.
    pub threads: Option<usize>,
    /// Where rotated refresh tokens are kept (encrypted with CREDPROXY_STATE_KEY).
    /// Default `.credproxy/state`, relative to the config file.
    pub state_dir: Option<String>,
    /// Refuse `file:` secrets (and the CA key) that group or others can read, instead of
    /// warning. Default false.
    pub strict_permissions: Option<bool>,
    /// Replicas that share a Redis form one fleet (tokens, leases, rotated refresh tokens).
    pub shared_state: Option<RawSharedState>,
    /// When set, every `/connections` call and every POST to the admin listener needs
    /// `Authorization: Bearer <this>`. A secret reference (`${ADMIN_TOKEN}`).
    pub admin_token: Option<SecretText>,
    /// The listener users' browsers reach for the OAuth connect flow.
    pub connect: Option<RawConnect>,
    /// How log lines are written (`--log-format` on the command line wins).
    pub log: Option<RawLog>,
    /// After SIGTERM: how long in-flight requests and open tunnels may take to finish before
    /// the process exits (it exits as soon as they have). Default `10s`. Read at startup.
    pub shutdown_grace: Option<String>,
    /// Export a span per request to an OpenTelemetry collector (OTLP/HTTP). Read at startup.
    pub otel: Option<RawOtel>,
}

/// `proxy.otel`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOtel {
    /// The collector's OTLP/HTTP base URL, e.g. `http://otel-collector:4318`; spans go to
    /// `{endpoint}/v1/traces`.
    pub endpoint: String,
    /// `service.name` of the spans. Default `credproxy`.
    pub service_name: Option<String>,
}

/// `proxy.log`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` (default) or `json` (one object per line). Read at startup.
    pub format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per entry for people.
    #[default]
    Text,
    /// One JSON object per line for log pipelines.
    Json,
}

/// `proxy.connect`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConnect {
    /// Address to listen on, e.g. `0.0.0.0:9091`.
    pub listen: String,
    /// The URL browsers reach it at (`https://connect.example.com`); the provider redirects to
    /// `{public_url}/callback`.
    pub public_url: String,
}

/// `proxy.shared_state`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSharedState {
    /// `redis://[user:pass@]host:port[/db]`, `rediss://` for TLS, or a list of seed URLs of a
    /// Redis Cluster. May be a secret reference (`${REDIS_URL}`).
    pub redis: RedisUrls,
    /// Key namespace: replicas with the same prefix form one fleet. Default `credproxy`.
    pub prefix: Option<String>,
    /// The Redis password, when it is not in the URL: a secret reference.
    pub password: Option<SecretText>,
    /// The Redis ACL user name, when it is not in the URL.
    pub username: Option<String>,
}

/// One URL, or the seed URLs of a Cluster.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RedisUrls {
    One(SecretText),
    Cluster(Vec<SecretText>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    /// Forward untouched, no credential.
    Tunnel,
    /// Refuse with 403.
    Deny,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCa {
    pub cert: String,
    pub key: String,
}

/// Bounds on what one client can make the proxy hold.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest request head (request line and headers), e.g. `64KiB` (the default).
    pub max_header_bytes: Option<String>,
    /// Most header fields in a request. Default 100.
    pub max_headers: Option<usize>,
    /// Most connections open at once from one client IP address. Default 256.
    pub max_connections_per_client: Option<usize>,
    /// Request bodies held in memory at once (read whole for signing or for the 401 replay),
    /// all clients together, e.g. `256MiB` (the default). Past it: 503 with Retry-After.
    pub max_buffered: Option<String>,
    /// The share of `max_buffered` one client address may hold. Default a quarter of it.
    pub max_buffered_per_client: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEgress {
    pub deny_private: Option<bool>,
    #[serde(default)]
    pub allow: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP (and TLS) connect to an upstream. Default 5s.
    pub connect: Option<String>,
    /// Longest wait for upstream bytes once connected. Default 60s.
    pub read: Option<String>,
    /// Idle upstream connections are kept this long for reuse. Default 60s.
    pub idle: Option<String>,
    /// Longest wait for a client's next request on a kept-alive connection. Default 60s.
    pub client_idle: Option<String>,
    /// Longest time one request may take from its head to the end of the response (both
    /// sides together). Default: none (large transfers may take long).
    pub total: Option<String>,
    /// Longest time for a client to send a connection's first request head, from accept.
    /// Default 10s.
    pub header: Option<String>,
    /// Longest wait for a client to finish the TLS handshake inside an intercepted CONNECT.
    /// Default 10s.
    pub handshake: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// How long a resolved address is reused. Default 30s; between 1s and 1h.
    pub ttl: Option<String>,
    /// How long a failed lookup is remembered. Default 2s; at most 1m.
    pub negative_ttl: Option<String>,
    /// Fixed answers, like curl's `--resolve`: host name to IP address.
    #[serde(default)]
    pub overrides: IndexMap<String, String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub name: String,
    pub secret: SecretText,
    #[serde(default)]
    pub credentials: Vec<String>,
    /// The tenant whose connections its requests use.
    pub tenant: Option<String>,
    /// Tenants it may name per request with `X-Credproxy-Tenant` (`"*"`: any).
    #[serde(default)]
    pub tenants: Vec<String>,
}

/// How the client secret reaches the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// HTTP Basic header, form body (RFC 6749 2.3.1). The default.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    PostBody,
    /// POST with every parameter in the query string and no body.
    PostQuery,
    /// GET with every parameter in the query string.
    GetQuery,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Upper bound on how long a token is kept, e.g. `45s`; never past its own expiry.
    pub ttl: String,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Label in metrics, logs and errors. Default: host and path.
    pub name: Option<String>,
    /// `api.example.com`, `*.example.com`, optionally with `:port`.
    pub host: Option<String>,
    /// Glob; `*` matches any run of characters. Default: any path.
    pub path: Option<String>,
    /// Default: any method.
    pub methods: Option<Vec<String>>,
    pub credential: Option<String>,
    /// Several credentials; the first is the default, `X-Credproxy-Credential` picks another.
    pub credentials: Option<Vec<String>>,
    /// Sidecar route: origin-form requests to the listener go to this base URL.
    pub upstream: Option<String>,
    /// Sidecar route: removed from the request path before forwarding.
    pub strip_prefix: Option<String>,
    /// Inject this route's credential into plain `http://` requests (or, on a sidecar route,
    /// an `http://` upstream) too. Default: false, except for loopback hosts (127.0.0.0/8,
    /// ::1, localhost).
    pub allow_http: Option<bool>,
    /// Replace the injected secret, should the upstream echo it back (error pages, debug
    /// endpoints), by its placeholder `credproxy:NAME` in response headers and bodies.
    /// Asks the upstream for uncompressed answers. Default: false.
    pub scrub_responses: Option<bool>,
    /// Refuse (400) requests that do not carry a placeholder `credproxy:NAME` for this
    /// route's credential (in a header, a Basic password or a query value). Default: false.
    pub require_placeholder: Option<bool>,
}
