//! A secret source as written in the config (`{ exec: [...], refresh: 10m }`) and as resolved.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::units::parse_duration;

/// Defaults from the SPEC: re-read every 5 minutes, serve a value at most an hour past its
/// last good read, give a helper or a secret manager 10 seconds.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(3600);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A secret read from elsewhere, re-read every `refresh`. Exactly one of `exec`,
/// `aws_secret`, `aws_parameter`, `vault` or `file`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// A command and its arguments (no shell); its trimmed stdout is the secret, or the
    /// `value` of a JSON object `{ "value": ..., "expires_at": RFC 3339 }`.
    pub exec: Option<Vec<String>>,
    /// AWS Secrets Manager secret id or ARN; `#key` picks a field of a JSON secret.
    pub aws_secret: Option<String>,
    /// AWS SSM Parameter Store name (SecureString decrypted); `#key` picks a JSON field.
    pub aws_parameter: Option<String>,
    /// Vault KV v2 path (`secret/data/app#key`); `VAULT_ADDR`, `VAULT_TOKEN`.
    pub vault: Option<String>,
    /// A file, relative to the config file's directory (like `file:PATH`).
    pub file: Option<String>,
    /// How often to read it again (default 5m).
    pub refresh: Option<String>,
    /// How long a failed re-read may keep serving the last good value (default 1h).
    pub max_stale: Option<String>,
    /// How long one read may take (default 10s).
    pub timeout: Option<String>,
    /// `exec`: environment variables passed to the command besides PATH and HOME.
    pub env: Option<Vec<String>>,
    /// `aws_secret`, `aws_parameter`: the region (default `AWS_REGION`).
    pub region: Option<String>,
}

/// Where a value is read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    Exec {
        argv: Vec<String>,
        env: Vec<String>,
    },
    AwsSecret {
        id: String,
        key: Option<String>,
        region: Option<String>,
    },
    AwsParameter {
        name: String,
        key: Option<String>,
        region: Option<String>,
    },
    Vault {
        path: String,
        key: Option<String>,
    },
    File(PathBuf),
}

/// A resolved source: where, and how often. Equal specs share one cached value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceSpec {
    pub origin: Origin,
    pub refresh: Duration,
    pub max_stale: Duration,
    pub timeout: Duration,
}

impl SourceSpec {
    /// A plain `file:PATH` secret: re-read on the default schedule.
    pub fn file(path: PathBuf) -> Self {
        SourceSpec {
            origin: Origin::File(path),
            refresh: DEFAULT_REFRESH,
            max_stale: DEFAULT_MAX_STALE,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Relative paths (a `file`, an `exec` program written with a `/`) against the config
    /// file's directory.
    pub fn anchored(&self, base: &Path) -> Arc<SourceSpec> {
        let mut s = self.clone();
        match &mut s.origin {
            Origin::File(p) if p.is_relative() => *p = base.join(&*p),
            Origin::Exec { argv, .. } => {
                if let Some(prog) = argv.first_mut() {
                    if prog.contains('/') && Path::new(prog.as_str()).is_relative() {
                        *prog = base.join(&*prog).display().to_string();
                    }
                }
            }
            _ => {}
        }
        Arc::new(s)
    }

    /// Where the value comes from, safe to print and to use as a metric label.
    pub fn describe(&self) -> String {
        let with_key = |kind: &str, what: &str, key: &Option<String>| match key {
            Some(k) => format!("{kind}:{what}#{k}"),
            None => format!("{kind}:{what}"),
        };
        match &self.origin {
            // The program only: arguments may carry a reference the operator would rather
            // not spread (an item path), and never need to be in a label.
            Origin::Exec { argv, .. } => {
                format!("exec:{}", argv.first().map(String::as_str).unwrap_or(""))
            }
            Origin::AwsSecret { id, key, .. } => with_key("aws_secret", id, key),
            Origin::AwsParameter { name, key, .. } => with_key("aws_parameter", name, key),
            Origin::Vault { path, key } => with_key("vault", path, key),
            Origin::File(p) => format!("file:{}", p.display()),
        }
    }
}

/// Splits `name#key`.
fn split_key(s: &str) -> (String, Option<String>) {
    match s.rsplit_once('#') {
        Some((name, key)) if !key.is_empty() => (name.to_string(), Some(key.to_string())),
        _ => (s.to_string(), None),
    }
}

impl RawSource {
    /// Validates the mapping; the error names the key at fault.
    pub fn resolve(self) -> Result<SourceSpec, String> {
        let dur = |key: &str, v: &Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(t) => match parse_duration(t) {
                Ok(d) if d.is_zero() => Err(format!("`{key}` must be more than zero")),
                Ok(d) => Ok(d),
                Err(e) => Err(format!("`{key}`: {e}")),
            },
        };
        let refresh = dur("refresh", &self.refresh, DEFAULT_REFRESH)?;
        let max_stale = dur("max_stale", &self.max_stale, DEFAULT_MAX_STALE)?;
        let timeout = dur("timeout", &self.timeout, DEFAULT_TIMEOUT)?;
        let origin = self.origin()?;
        Ok(SourceSpec {
            origin,
            refresh,
            max_stale,
            timeout,
        })
    }

    fn origin(self) -> Result<Origin, String> {
        let given = [
            self.exec.is_some(),
            self.aws_secret.is_some(),
            self.aws_parameter.is_some(),
            self.vault.is_some(),
            self.file.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(
                "a secret source needs exactly one of `exec`, `aws_secret`, \
                        `aws_parameter`, `vault`, `file`"
                    .to_string(),
            );
        }
        if self.env.is_some() && self.exec.is_none() {
            return Err("`env` applies to `exec` only".to_string());
        }
        let aws = self.aws_secret.is_some() || self.aws_parameter.is_some();
        if self.region.is_some() && !aws {
            return Err("`region` applies to `aws_secret` and `aws_parameter` only".to_string());
        }
        let nonempty = |key: &str, v: String| match v.trim().is_empty() {
            true => Err(format!("`{key}` is empty")),
            false => Ok(v),
        };
        if let Some(argv) = self.exec {
            return exec_origin(argv, self.env.unwrap_or_default());
        }
        if let Some(s) = self.aws_secret {
            let (id, key) = split_key(&nonempty("aws_secret", s)?);
            return Ok(Origin::AwsSecret {
                id,
                key,
                region: self.region,
            });
        }
        if let Some(s) = self.aws_parameter {
            let (name, key) = split_key(&nonempty("aws_parameter", s)?);
            return Ok(Origin::AwsParameter {
                name,
                key,
                region: self.region,
            });
        }
        if let Some(s) = self.vault {
            let (path, key) = split_key(&nonempty("vault", s)?);
            return Ok(Origin::Vault { path, key });
        }
        let file = nonempty("file", self.file.unwrap_or_default())?;
        Ok(Origin::File(PathBuf::from(file)))
    }
}

fn exec_origin(argv: Vec<String>, env: Vec<String>) -> Result<Origin, String> {
    if argv.first().is_none_or(|p| p.trim().is_empty()) {
        return Err("`exec` needs a program: [program, arg, ...]".to_string());
    }
    for name in &env {
        if !crate::secret::is_env_name(name) {
            return Err(format!(
                "`env`: `{name}` is not an environment variable name"
            ));
        }
    }
    Ok(Origin::Exec { argv, env })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<SourceSpec, String> {
        let raw: RawSource = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        raw.resolve()
    }

    #[test]
    fn each_origin_and_its_defaults() {
        let s = parse("{ exec: [op, read, \"op://a/b\"], refresh: 10m, env: [OP_TOKEN] }").unwrap();
        assert_eq!(s.refresh, Duration::from_secs(600));
        assert_eq!(s.max_stale, DEFAULT_MAX_STALE);
        assert_eq!(s.describe(), "exec:op");
        let s = parse("{ aws_secret: \"prod/github#token\", region: us-east-1 }").unwrap();
        assert_eq!(
            s.origin,
            Origin::AwsSecret {
                id: "prod/github".into(),
                key: Some("token".into()),
                region: Some("us-east-1".into())
            }
        );
        let s = parse("{ aws_parameter: /prod/github/token }").unwrap();
        assert_eq!(s.describe(), "aws_parameter:/prod/github/token");
        let s = parse("{ vault: \"secret/data/github#token\" }").unwrap();
        assert_eq!(s.describe(), "vault:secret/data/github#token");
        let s = parse("{ file: s.txt, max_stale: 5m }").unwrap();
        assert_eq!(
            s.anchored(Path::new("/etc/cp")).origin,
            Origin::File("/etc/cp/s.txt".into())
        );
    }

    #[test]
    fn rejections_name_the_key() {
        let cases = [
            ("{ refresh: 1m }", "exactly one of"),
            ("{ exec: [a], vault: x }", "exactly one of"),
            ("{ exec: [] }", "needs a program"),
            ("{ exec: [a], refresh: soon }", "`refresh`"),
            (
                "{ exec: [a], max_stale: 0s }",
                "`max_stale` must be more than zero",
            ),
            ("{ exec: [a], timeout: 1x }", "`timeout`"),
            ("{ exec: [a], env: [\"A-B\"] }", "`env`"),
            ("{ vault: x, env: [A] }", "`env` applies to `exec` only"),
            ("{ exec: [a], region: us-east-1 }", "`region` applies"),
            ("{ aws_secret: \" \" }", "`aws_secret` is empty"),
            ("{ exec: [a], shell: true }", "unknown field `shell`"),
        ];
        for (yaml, want) in cases {
            let err = parse(yaml).unwrap_err();
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }

    #[test]
    fn exec_programs_with_a_slash_are_relative_to_the_config() {
        let s = parse("{ exec: [./helper.sh, x] }")
            .unwrap()
            .anchored(Path::new("/cfg"));
        assert!(matches!(&s.origin, Origin::Exec { argv, .. } if argv[0] == "/cfg/./helper.sh"));
        let s = parse("{ exec: [op, x] }")
            .unwrap()
            .anchored(Path::new("/cfg"));
        assert!(matches!(&s.origin, Origin::Exec { argv, .. } if argv[0] == "op"));
    }
}
