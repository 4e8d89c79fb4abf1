//! The provider catalog: what credproxy knows about an integration (OAuth endpoints, scopes,
//! API hosts, per-connection placeholders, refresh-token lifetimes, quirks), as data in
//! `providers/*.yaml`, embedded in the binary. A credential's `provider:` starts from an entry
//! and any field can be overridden in the config; the same fields work without `provider:`.
//!
//! Placeholders (`{shop}`, `{instance_url}`) are per-connection values that templates use:
//! URLs, API hosts, extra headers. Each has a source (the connect link, the OAuth callback,
//! the token answer, a call made right after connecting, or another placeholder) and a
//! pattern every value must match before it goes anywhere, since a client secret is sent to
//! a templated token URL.

use std::sync::LazyLock;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::raw::AuthMethod;
use crate::config::units::parse_duration;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/providers.rs"));
}

/// How a provider's accounts are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// Authorization code with a refresh token (the connect flow).
    Oauth2,
    /// The tenant brings a key (PUT /connections).
    ApiKey,
}

/// One integration, as its file is written (and as a credential overrides it).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    pub display_name: Option<String>,
    pub auth: Option<AuthKind>,
    /// Where the user consents (may use placeholders).
    pub authorize_url: Option<String>,
    /// Where codes and refresh tokens are exchanged (may use placeholders).
    pub token_url: Option<String>,
    /// How the client secret reaches the token endpoint: `basic` or `post_body`.
    pub auth_method: Option<AuthMethod>,
    /// PKCE S256 on the authorization request. Default true.
    pub pkce: Option<bool>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Between scopes in the `scope` parameter. Default a space.
    pub scope_separator: Option<String>,
    /// Hosts whose requests get this credential (`{placeholder}` allowed).
    #[serde(default)]
    pub api_hosts: Vec<String>,
    /// The header the token goes in and its prefix. Default `Authorization: Bearer `.
    pub inject: Option<Inject>,
    /// Headers added to every API request unless the client sent its own.
    #[serde(default)]
    pub extra_headers: IndexMap<String, String>,
    /// Extra parameters of the authorization request (`access_type: offline`).
    #[serde(default)]
    pub authorize_params: IndexMap<String, String>,
    /// Extra parameters of every token request.
    #[serde(default)]
    pub token_params: IndexMap<String, String>,
    /// Per-connection values the templates use.
    #[serde(default)]
    pub placeholders: IndexMap<String, Placeholder>,
    /// Token-answer field to the placeholder (or metadata) name it fills.
    #[serde(default)]
    pub token_response_fields: IndexMap<String, String>,
    /// Callback query parameter to the placeholder (or metadata) name it fills.
    #[serde(default)]
    pub callback_params: IndexMap<String, String>,
    /// A call made with the first access token, whose answer fills one value.
    pub post_connect: Option<PostConnect>,
    pub refresh_token_policy: Option<RefreshPolicy>,
    pub quirks: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inject {
    pub header: String,
    pub prefix: Option<String>,
}

/// Where a placeholder's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Given when the connect link is made (or with `metadata` in a PUT).
    ConnectLink,
    /// A query parameter of the OAuth callback (`callback_params`).
    Callback,
    /// A field of the token answer (`token_response_fields`).
    TokenResponse,
    /// The answer of `post_connect`.
    PostConnect,
    /// Another placeholder's value with `strip_prefix` removed.
    Derived,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Placeholder {
    pub source: Source,
    pub description: Option<String>,
    /// Anchored regular expression every value must match.
    pub pattern: String,
    /// A value matching `pattern` (docs, and config checks of templates).
    pub example: Option<String>,
    /// Used when a connect link gives none.
    pub default: Option<String>,
    /// Route host patterns the value's host can take (for `api_hosts` entries that are not
    /// `{placeholder}.domain`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// For `derived`: the placeholder it is made from.
    pub from: Option<String>,
    pub strip_prefix: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostConnect {
    pub url: String,
    /// `field`, `a.b`, or `[0].field`: the value to keep from the JSON answer.
    pub select: String,
    /// The name it is kept under.
    #[serde(rename = "as")]
    pub name: String,
    /// A header that carries it on every API request.
    pub header: Option<String>,
    /// The `Authorization` scheme this call wants when it differs from the API's (Mailchimp's
    /// metadata endpoint documents `OAuth `); else the credential's header and prefix.
    pub prefix: Option<String>,
}

/// What the provider says about its refresh tokens.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshPolicy {
    #[serde(default)]
    pub issued: bool,
    #[serde(default)]
    pub rotates: bool,
    /// Longest a chain lives from the first consent (`365d`).
    pub lifetime: Option<String>,
    /// Longest a refresh token lives unused (`60d`).
    pub idle_lifetime: Option<String>,
    pub notes: Option<String>,
}

/// Catalog fields a credential may set (with or without `provider:`).
pub const FIELDS: &[&str] = &[
    "authorize_url",
    "token_url",
    "auth_method",
    "pkce",
    "scopes",
    "scope_separator",
    "api_hosts",
    "inject",
    "extra_headers",
    "authorize_params",
    "token_params",
    "placeholders",
    "token_response_fields",
    "callback_params",
    "post_connect",
    "refresh_token_policy",
];

/// Metadata values that no pattern describes (ids from answers) are kept to this.
const PLAIN_VALUE: &str = r"^[A-Za-z0-9._:@/+=-]{1,256}$";

static ENTRIES: LazyLock<Vec<Result<Provider, String>>> = LazyLock::new(|| {
    embedded::FILES
        .iter()
        .map(|(name, text)| {
            serde_yaml::from_str::<Provider>(text)
                .map_err(|e| format!("providers/{name}.yaml: {e}"))
        })
        .collect()
});

/// Every catalog entry that parses (`check_all` reports the others).
pub fn entries() -> impl Iterator<Item = &'static Provider> {
    ENTRIES.iter().filter_map(|e| e.as_ref().ok())
}

pub fn get(name: &str) -> Option<&'static Provider> {
    entries().find(|p| p.name == name)
}

/// Names, for messages that list the choices.
pub fn names() -> Vec<&'static str> {
    entries().map(|p| p.name.as_str()).collect()
}

/// The entry as a YAML mapping, for a credential to overlay.
pub fn mapping(name: &str) -> Option<serde_yaml::Mapping> {
    let (_, text) = embedded::FILES.iter().find(|(n, _)| *n == name)?;
    match serde_yaml::from_str(text).ok()? {
        serde_yaml::Value::Mapping(m) => Some(m),
        _ => None,
    }
}

/// `credproxy providers`: one line per entry (name, auth, API hosts).
pub fn listing() -> String {
    let rows: Vec<(String, &str, String)> = entries()
        .map(|p| {
            let auth = match p.auth {
                Some(AuthKind::Oauth2) => "oauth2",
                Some(AuthKind::ApiKey) => "api_key",
                None => "-",
            };
            (p.name.clone(), auth, p.api_hosts.join(", "))
        })
        .collect();
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:width$}  {:8}  API HOSTS\n", "NAME", "AUTH");
    for (name, auth, hosts) in rows {
        out.push_str(&format!("{name:width$}  {auth:8}  {hosts}\n"));
    }
    out.push_str(&format!(
        "\n{} providers. `credproxy providers NAME` shows one; a credential uses it with \
         `provider: NAME` and may override any field.\n",
        entries().count()
    ));
    out
}

/// `credproxy providers NAME`: the entry as written (its documentation sources first).
pub fn show(name: &str) -> Option<String> {
    let (_, text) = embedded::FILES.iter().find(|(n, _)| *n == name)?;
    Some(if text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    })
}

/// Every problem with the embedded catalog: files that do not parse, entries that fail
/// `check`, and names that differ from their file's.
pub fn check_all() -> Vec<String> {
    let mut problems = Vec::new();
    for ((file, _), entry) in embedded::FILES.iter().zip(ENTRIES.iter()) {
        match entry {
            Err(e) => problems.push(e.clone()),
            Ok(p) if p.name != *file => {
                problems.push(format!("providers/{file}.yaml: name is `{}`", p.name))
            }
            Ok(p) => problems.extend(
                p.check(true)
                    .into_iter()
                    .map(|(k, m)| format!("providers/{file}.yaml: {k}: {m}")),
            ),
        }
    }
    problems
}

/// `{name}` references in a template (not `${ENV}`).
pub fn references(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = template.as_bytes();
    let mut i = 0;
    while let Some(open) = template[i..].find('{').map(|o| o + i) {
        let close = template[open..].find('}').map(|c| c + open);
        let Some(close) = close else { break };
        let name = &template[open + 1..close];
        let env_ref = open > 0 && bytes[open - 1] == b'$';
        if !env_ref && !name.is_empty() && name.bytes().all(is_name_byte) {
            out.push(name);
        }
        i = close + 1;
    }
    out
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The template with each `{name}` replaced by `value(name)`; the first name without a value
/// is the error.
pub fn fill(template: &str, value: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = template.to_string();
    for name in references(template) {
        let v = value(name).ok_or_else(|| name.to_string())?;
        out = out.replace(&format!("{{{name}}}"), &v);
    }
    Ok(out)
}

/// Whether `value` is acceptable for `pattern` (an anchored regular expression).
pub fn matches(pattern: &str, value: &str) -> bool {
    regex::Regex::new(pattern).is_ok_and(|r| r.is_match(value))
}

/// Whether a metadata value with no declared pattern is plain enough to keep.
pub fn plain_value(value: &str) -> bool {
    matches(PLAIN_VALUE, value)
}

/// The host of a URL-valued string (`https://acme.my.salesforce.com` → its host); other
/// strings are hosts already.
pub fn host_of(value: &str) -> String {
    match url::Url::parse(value) {
        Ok(u) if value.contains("://") => {
            let host = u.host_str().unwrap_or_default();
            // An explicit port stays: it is part of what the connection is for.
            match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_string(),
            }
        }
        _ => value.to_string(),
    }
}

impl Provider {
    pub fn pkce(&self) -> bool {
        self.pkce.unwrap_or(true)
    }

    pub fn scope(&self) -> String {
        self.scopes
            .join(self.scope_separator.as_deref().unwrap_or(" "))
    }

    pub fn is_oauth(&self) -> bool {
        self.auth == Some(AuthKind::Oauth2) || self.authorize_url.is_some()
    }

    /// The value of placeholder `name` used when a template is checked without a connection.
    fn example(&self, name: &str) -> String {
        self.placeholders
            .get(name)
            .and_then(|p| p.example.clone().or_else(|| p.default.clone()))
            .unwrap_or_else(|| "example".into())
    }

    /// A template filled with examples, for checks made before any connection exists.
    pub fn with_examples(&self, template: &str) -> String {
        fill(template, &|n| Some(self.example(n))).unwrap_or_else(|_| template.to_string())
    }

    /// Route host patterns for `api_hosts`: placeholders become their `hosts` (or `*` when
    /// they are a leading label).
    pub fn route_hosts(&self) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for h in &self.api_hosts {
            let mut partial = vec![h.clone()];
            for name in references(h) {
                let hosts = self
                    .placeholders
                    .get(name)
                    .map(|p| p.hosts.clone())
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| vec!["*".to_string()]);
                partial = partial
                    .iter()
                    .flat_map(|t| {
                        hosts
                            .iter()
                            .map(move |v| t.replace(&format!("{{{name}}}"), v))
                    })
                    .collect();
            }
            for p in partial {
                let p = host_of(&p);
                crate::routing::parse_host_pattern(&p)
                    .map_err(|e| format!("api_hosts `{h}` gives route host {e}"))?;
                out.push(p);
            }
        }
        out.dedup();
        Ok(out)
    }

    /// Every declared placeholder some template of this kind uses.
    pub fn placeholders_used(&self) -> Vec<&str> {
        let mut t: Vec<&str> = Vec::new();
        t.extend(self.authorize_url.iter().map(String::as_str));
        t.extend(self.token_url.iter().map(String::as_str));
        t.extend(self.api_hosts.iter().map(String::as_str));
        t.extend(self.extra_headers.values().map(String::as_str));
        let mut names: Vec<&str> = t.into_iter().flat_map(references).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Problems as `(field, message)`. `complete`: a catalog file, which must name itself and
    /// its endpoints; a credential's merged fields need only be consistent.
    pub fn check(&self, complete: bool) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if complete {
            self.check_complete(&mut p);
        }
        self.check_placeholders(&mut p);
        self.check_templates(&mut p);
        self.check_sources(&mut p);
        if let Err(e) = self.route_hosts() {
            p.push(("api_hosts".into(), e));
        }
        self.check_headers(&mut p);
        if let Some(r) = &self.refresh_token_policy {
            for (k, v) in [
                ("lifetime", &r.lifetime),
                ("idle_lifetime", &r.idle_lifetime),
            ] {
                if let Some(Err(e)) = v.as_deref().map(parse_duration) {
                    p.push((format!("refresh_token_policy.{k}"), e));
                }
            }
        }
        // Only the code exchange is limited; client credentials may use any of the four.
        if self.authorize_url.is_some()
            && matches!(
                self.auth_method,
                Some(AuthMethod::PostQuery | AuthMethod::GetQuery)
            )
        {
            p.push((
                "auth_method".into(),
                "the connect flow takes `basic` or `post_body`".into(),
            ));
        }
        p
    }

    fn check_complete(&self, p: &mut Vec<(String, String)>) {
        if self.display_name.is_none() {
            p.push(("display_name".into(), "missing".into()));
        }
        match self.auth {
            None => p.push(("auth".into(), "missing (oauth2 or api_key)".into())),
            Some(AuthKind::Oauth2) => {
                for (k, v) in [
                    ("authorize_url", &self.authorize_url),
                    ("token_url", &self.token_url),
                ] {
                    if v.is_none() {
                        p.push((k.into(), "an oauth2 provider needs it".into()));
                    }
                }
            }
            Some(AuthKind::ApiKey) => {}
        }
        if self.api_hosts.is_empty() {
            p.push(("api_hosts".into(), "lists no host".into()));
        }
    }

    fn check_placeholders(&self, p: &mut Vec<(String, String)>) {
        for (name, ph) in &self.placeholders {
            let key = format!("placeholders.{name}");
            if !name.bytes().all(is_name_byte) {
                p.push((
                    key.clone(),
                    "a placeholder name uses letters, digits and `_`".into(),
                ));
            }
            if !(ph.pattern.starts_with('^') && ph.pattern.ends_with('$')) {
                p.push((
                    format!("{key}.pattern"),
                    "must be anchored (`^...$`)".into(),
                ));
            }
            if let Err(e) = regex::Regex::new(&ph.pattern) {
                p.push((
                    format!("{key}.pattern"),
                    format!("not a regular expression: {e}"),
                ));
                continue;
            }
            for (k, v) in [("example", &ph.example), ("default", &ph.default)] {
                if v.as_deref().is_some_and(|v| !matches(&ph.pattern, v)) {
                    p.push((format!("{key}.{k}"), "does not match `pattern`".into()));
                }
            }
        }
    }

    /// URLs filled with examples are https (http only to loopback), and templates name only
    /// declared placeholders: a value reaching a URL or a host has passed a pattern.
    fn check_templates(&self, p: &mut Vec<(String, String)>) {
        let urls = [
            ("authorize_url", &self.authorize_url),
            ("token_url", &self.token_url),
        ];
        for (k, v) in urls.into_iter().filter_map(|(k, v)| Some((k, v.as_ref()?))) {
            if let Err(e) = check_url(&self.with_examples(v)) {
                p.push((k.into(), e));
            }
        }
        if let Some(pc) = &self.post_connect {
            if let Err(e) = check_url(&pc.url) {
                p.push(("post_connect.url".into(), e));
            }
        }
        for name in self.placeholders_used() {
            if !self.placeholders.contains_key(name) {
                p.push((
                    "placeholders".into(),
                    format!("`{{{name}}}` is used but not declared (with its pattern)"),
                ));
            }
        }
    }

    /// Each placeholder can be filled from where it says it comes from.
    fn check_sources(&self, p: &mut Vec<(String, String)>) {
        let filled_by =
            |map: &IndexMap<String, String>, name: &str| map.values().any(|v| v == name);
        for (name, ph) in &self.placeholders {
            let ok = match ph.source {
                Source::ConnectLink => true,
                Source::Callback => filled_by(&self.callback_params, name),
                Source::TokenResponse => filled_by(&self.token_response_fields, name),
                Source::PostConnect => self
                    .post_connect
                    .as_ref()
                    .is_some_and(|pc| pc.name == *name),
                Source::Derived => ph
                    .from
                    .as_ref()
                    .is_some_and(|f| self.placeholders.contains_key(f) && f != name),
            };
            if !ok {
                p.push((
                    format!("placeholders.{name}.source"),
                    format!("nothing fills `{name}` from {:?}", ph.source),
                ));
            }
        }
    }

    fn check_headers(&self, p: &mut Vec<(String, String)>) {
        let mut names: Vec<(String, &str)> = self
            .extra_headers
            .keys()
            .map(|k| (format!("extra_headers.{k}"), k.as_str()))
            .collect();
        names.extend(
            self.inject
                .iter()
                .map(|i| ("inject.header".to_string(), i.header.as_str())),
        );
        let pc = self
            .post_connect
            .as_ref()
            .and_then(|pc| pc.header.as_deref());
        names.extend(pc.map(|h| ("post_connect.header".to_string(), h)));
        for (key, name) in names {
            if let Err(crate::credentials::BuildError::Invalid { message, .. }) =
                crate::credentials::config_header_name(&key, name)
            {
                p.push((key, message));
            }
        }
    }

    /// The lifetimes of `refresh_token_policy`, parsed.
    pub fn refresh_lifetimes(&self) -> (Option<std::time::Duration>, Option<std::time::Duration>) {
        let Some(r) = &self.refresh_token_policy else {
            return (None, None);
        };
        let d = |v: &Option<String>| v.as_deref().and_then(|t| parse_duration(t).ok());
        (d(&r.lifetime), d(&r.idle_lifetime))
    }
}

/// https, or http to a loopback host (local mocks); no credentials in it.
pub fn check_url(text: &str) -> Result<(), String> {
    crate::credentials::oauth2_client_credentials::token_url(text).map(|_| ())
}

#[cfg(test)]
mod tests;
