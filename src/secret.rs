//! Secret values: where they come from (`${ENV}`, `file:`, literal) and a type that never prints them.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;

/// A resolved secret. `Debug`, `Display` and `Serialize` print `***`.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Secret(value.into())
    }

    /// The only way to read the value: call sites that use it are easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison, for client secrets presented to the proxy.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(other).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// Why a secret could not be resolved. Carries names and paths, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("cannot read secret file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("secret from {0} contains CR, LF or NUL, which cannot go into a header")]
    BadBytes(String),
    #[error("secret from {source_name} is not usable: {reason}")]
    Unusable { source_name: String, reason: String },
}

/// How a secret is written in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `${NAME}` anywhere in the string, substituted from the environment.
    Env(String),
    /// `file:PATH`, relative to the config file's directory.
    File(String),
    /// A plain string (accepted, with a warning).
    Literal(String),
}

impl SecretSource {
    pub fn parse(raw: &str) -> Self {
        if raw.contains("${") {
            SecretSource::Env(raw.to_string())
        } else if let Some(path) = raw.strip_prefix("file:") {
            SecretSource::File(path.to_string())
        } else {
            SecretSource::Literal(raw.to_string())
        }
    }

    /// Reads a secret as written in the config: its syntax checked, a warning (through
    /// `warn`) for a literal or a `file:` others can read, which `strict` makes an error.
    pub fn parse_checked(
        raw: &str,
        base_dir: &Path,
        strict: bool,
        warn: &mut dyn FnMut(String),
    ) -> Result<Self, String> {
        check_template(raw)?;
        let source = SecretSource::parse(raw);
        if source.is_literal() {
            warn("secret written as a literal; prefer ${ENV_VAR} or file:PATH".into());
        }
        match source.permission_problem(base_dir) {
            Some(problem) if strict => Err(format!("{problem} (proxy.strict_permissions is on)")),
            Some(problem) => {
                warn(problem);
                Ok(source)
            }
            None => Ok(source),
        }
    }

    pub fn is_literal(&self) -> bool {
        matches!(self, SecretSource::Literal(_))
    }

    /// Where the value comes from, safe to print.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(t) => env_names(t).join(", "),
            SecretSource::File(p) => format!("file:{p}"),
            SecretSource::Literal(_) => "literal".to_string(),
        }
    }

    /// For a `file:` secret that group or others may read: what is wrong, to warn or refuse.
    pub fn permission_problem(&self, base_dir: &Path) -> Option<String> {
        let SecretSource::File(p) = self else {
            return None;
        };
        let full = base_dir.join(p);
        let mode = readable_by_others(&full)?;
        Some(format!(
            "secret file {} is readable by group or others (mode {mode:o}): chmod 600 it",
            full.display()
        ))
    }

    /// Resolves the value; `lookup` reads the environment (injectable for tests).
    pub fn resolve(
        &self,
        base_dir: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Secret, SecretError> {
        let value = self.resolve_multiline(base_dir, lookup)?;
        if value
            .expose()
            .bytes()
            .any(|b| matches!(b, b'\r' | b'\n' | 0))
        {
            return Err(SecretError::BadBytes(self.describe()));
        }
        Ok(value)
    }

    /// Resolves a value that never goes into a header as it is (a PEM key): newlines allowed.
    pub fn resolve_multiline(
        &self,
        base_dir: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Secret, SecretError> {
        let value = match self {
            SecretSource::Literal(v) => v.clone(),
            SecretSource::Env(template) => substitute(template, lookup)?,
            SecretSource::File(p) => read_secret_file(base_dir, p)?,
        };
        Ok(Secret::new(value))
    }
}

/// Names of the `${NAME}` references in a template.
pub fn env_names(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                names.push(after[..end].to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    names
}

/// Whether `name` can be an environment variable's name: letters, digits and `_`, not
/// starting with a digit.
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// Checks the `${...}` syntax of a template; the error names the problem.
pub fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("unterminated ${ in secret reference".to_string());
        };
        let name = &after[..end];
        if !is_env_name(name) {
            return Err(format!(
                "`${{{name}}}` is not a valid environment variable name"
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

fn substitute(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, SecretError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').unwrap_or(after.len());
        let name = &after[..end];
        match lookup(name) {
            Some(v) if !v.is_empty() => out.push_str(&v),
            _ => return Err(SecretError::MissingEnv(name.to_string())),
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

/// The permission bits of a file that group or others may read, if they may.
#[cfg(unix)]
pub fn readable_by_others(p: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
pub fn readable_by_others(_: &Path) -> Option<u32> {
    None
}

fn read_secret_file(base_dir: &Path, path: &str) -> Result<String, SecretError> {
    read_trimmed(&base_dir.join(path))
}

/// A secret file's text with one trailing newline (LF or CRLF) removed.
pub fn read_trimmed(full: &Path) -> Result<String, SecretError> {
    let mut text = std::fs::read_to_string(full).map_err(|e| SecretError::File {
        path: full.display().to_string(),
        reason: e.to_string(),
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("t0k".into()),
            "EMPTY" => Some(String::new()),
            "BAD" => Some("a\r\nInjected: 1".into()),
            _ => None,
        }
    }

    #[test]
    fn never_prints_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
    }

    #[test]
    fn constant_time_eq() {
        let s = Secret::new("abc");
        assert!(s.ct_eq(b"abc"));
        assert!(!s.ct_eq(b"abd"));
        assert!(!s.ct_eq(b"ab"));
    }

    #[test]
    fn env_substitution() {
        let dir = Path::new(".");
        let r = SecretSource::parse("Token ${TOKEN}!")
            .resolve(dir, &env)
            .unwrap();
        assert_eq!(r.expose(), "Token t0k!");
        assert_eq!(
            SecretSource::parse("${NOPE}")
                .resolve(dir, &env)
                .unwrap_err(),
            SecretError::MissingEnv("NOPE".into())
        );
        // An empty variable is as good as a missing one: an empty credential is never useful.
        assert!(SecretSource::parse("${EMPTY}").resolve(dir, &env).is_err());
        assert!(matches!(
            SecretSource::parse("${BAD}").resolve(dir, &env),
            Err(SecretError::BadBytes(_))
        ));
    }

    #[test]
    fn file_trims_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "value\n").unwrap();
        let r = SecretSource::parse("file:s")
            .resolve(dir.path(), &env)
            .unwrap();
        assert_eq!(r.expose(), "value");
        // Only one newline is trimmed; a second one would end up in a header.
        std::fs::write(dir.path().join("s"), "value\n\n").unwrap();
        let r = SecretSource::parse("file:s").resolve(dir.path(), &env);
        assert!(matches!(r, Err(SecretError::BadBytes(_))));
        std::fs::write(dir.path().join("s"), "value\r\n").unwrap();
        let r = SecretSource::parse("file:s")
            .resolve(dir.path(), &env)
            .unwrap();
        assert_eq!(r.expose(), "value");
        let missing = SecretSource::parse("file:nope").resolve(dir.path(), &env);
        assert!(matches!(missing, Err(SecretError::File { .. })));
    }

    #[test]
    fn template_syntax() {
        assert!(check_template("${A_1}").is_ok());
        assert!(check_template("${").is_err());
        assert!(check_template("${1A}").is_err());
        assert!(check_template("${A-B}").is_err());
        assert_eq!(env_names("x ${A} y ${B}"), vec!["A", "B"]);
    }
}
