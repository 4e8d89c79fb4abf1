//! Validates `RawConfig` into `Config`, collecting every error with its key path and line.
//! One file per section of the config; this one holds the pass itself and what they share.

mod clients;
mod credentials;
mod proxy;
mod routes;
mod shared_state;
mod tenants;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::locate::Locator;
use super::raw::{RawConfig, RawRoute};
use super::units::parse_duration;
use super::{Config, ConfigError, ConfigErrors};
use crate::routing::Router;
use crate::sources::Sources;

/// Loads and validates the config file, reading secrets from the process environment.
pub fn load(file: &Path) -> Result<Config, ConfigErrors> {
    load_with(file, &Sources::default())
}

/// Like `load`, with runtime secret sources read through (and cached in) `sources`.
pub fn load_with(file: &Path, sources: &Sources) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ConfigErrors::one(file, format!("cannot read config file: {e}")))?;
    load_text(&text, file, &|name| std::env::var(name).ok(), sources)
}

/// Validates config text; `file` names it in errors and anchors relative paths.
pub fn load_str(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    load_text(text, file, env, &Sources::default())
}

/// Validates config text, reading runtime secret sources through `sources`.
pub fn load_text(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    sources: &Sources,
) -> Result<Config, ConfigErrors> {
    sources.begin_build();
    let mut r = Validator {
        file: file.display().to_string(),
        base_dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        loc: Locator::new(text),
        errors: Vec::new(),
        warnings: Vec::new(),
        env,
        sources,
    };
    r.duplicate_keys()?;
    let raw = r.parse(text)?;
    let config = r.resolve(raw);
    if r.errors.is_empty() {
        if let Some(mut c) = config {
            c.warnings = r.warnings;
            c.text = text.into();
            return Ok(c);
        }
    }
    Err(ConfigErrors(r.errors))
}

struct Validator<'a> {
    file: String,
    base_dir: PathBuf,
    loc: Locator,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    env: &'a dyn Fn(&str) -> Option<String>,
    sources: &'a Sources,
}

impl Validator<'_> {
    fn problem(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.loc.line(path),
            path: path.to_string(),
            message: message.into(),
        }
    }

    fn err(&mut self, path: &str, message: impl Into<String>) {
        let e = self.problem(path, message);
        self.errors.push(e);
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        let w = self.problem(path, message);
        self.warnings.push(w);
    }

    /// A key written twice in one mapping is an error: YAML keeps the last, so the first (a
    /// credential, a route field) would be ignored without a word.
    fn duplicate_keys(&self) -> Result<(), ConfigErrors> {
        let errors: Vec<ConfigError> = self
            .loc
            .duplicates()
            .iter()
            .map(|d| {
                let key = d.path.rsplit(['.', ']']).next().unwrap_or(&d.path);
                ConfigError {
                    file: self.file.clone(),
                    line: Some(d.line),
                    path: d.path.clone(),
                    message: format!(
                        "`{key}` is written twice in the same mapping (first at line {}): only one would be kept; remove or rename one",
                        d.first_line
                    ),
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn parse(&self, text: &str) -> Result<RawConfig, ConfigErrors> {
        if text.trim().is_empty() {
            return Ok(RawConfig::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let mut err = self.problem(
                if path == "." { "" } else { &path },
                super::serde_message(&inner.to_string()),
            );
            if let Some(l) = inner.location() {
                err.line = Some(l.line());
            }
            ConfigErrors(vec![err])
        })
    }

    fn resolve(&mut self, raw: RawConfig) -> Option<Config> {
        let proxy = self.proxy(&raw.proxy);
        let declared: Vec<String> = raw.credentials.keys().cloned().collect();
        let state_dir = self
            .base_dir
            .join(raw.proxy.state_dir.as_deref().unwrap_or(".credproxy/state"));
        let strict = raw.proxy.strict_permissions.unwrap_or(false);
        let place = credentials::Place {
            state_dir: &state_dir,
            strict,
        };
        let credentials = self.credentials(raw.credentials, &place);
        // Names as declared: a credential that failed to build still exists for route checks
        // (the config is rejected anyway, and its own error says why).
        let names: Vec<&str> = declared.iter().map(String::as_str).collect();
        let mut raw_routes: Vec<(String, RawRoute)> = (raw.routes.into_iter().enumerate())
            .map(|(i, r)| (format!("routes[{i}]"), r))
            .collect();
        let implicit = self.catalog_routes(&credentials, &raw_routes);
        raw_routes.extend(implicit);
        let (mut routes, matchers) = self.routes(&raw_routes, &names);
        let kinds: Vec<&str> = credentials.iter().map(|c| c.kind).collect();
        self.client_certs(&mut routes, &raw_routes, &kinds);
        let clients = raw.clients.map(|cs| self.clients(&cs, &names, strict));
        for (i, c) in credentials.iter().enumerate() {
            if !routes
                .iter()
                .any(|r| r.credentials.contains(&i) || r.client_cert == Some(i))
            {
                self.warn(&format!("credentials.{}", c.name), "not used by any route");
            }
        }
        if routes.is_empty() && self.errors.is_empty() {
            self.warn("routes", "no routes: every request is handled as unmatched");
        }
        Some(Config {
            file: PathBuf::from(&self.file),
            proxy: proxy?,
            credentials,
            routes,
            router: Router::new(matchers),
            clients,
            warnings: Vec::new(),
            text: "".into(),
            metrics: std::sync::OnceLock::new(),
        })
    }

    fn duration(
        &mut self,
        path: &str,
        v: Option<&String>,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let Some(text) = v else { return default };
        match parse_duration(text) {
            Ok(d) if d < min || d > max => {
                self.err(
                    path,
                    format!("`{text}` is out of range ({min:?} to {max:?})"),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.err(path, e);
                default
            }
        }
    }

    fn addr(&mut self, path: &str, v: Option<&String>, default: &str) -> Option<SocketAddr> {
        let text = v.map(String::as_str).unwrap_or(default);
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    path,
                    format!("`{text}` is not an address; expected IP:PORT such as 127.0.0.1:8080"),
                );
                None
            }
        }
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}
#[cfg(test)]
mod tenant_tests;
#[cfg(test)]
mod tests;
