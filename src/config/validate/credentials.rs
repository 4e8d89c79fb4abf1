//! `credentials:`: each entry's `type` picks a row of `credentials::KINDS`, which builds it.

use std::path::Path;

use indexmap::IndexMap;

use super::Validator;
use crate::config::CredentialEntry;
use crate::credentials::{self, BuildCtx, BuildError, KindEntry};

impl Validator<'_> {
    pub(super) fn credentials(
        &mut self,
        raw: IndexMap<String, serde_yaml::Value>,
        state_dir: &Path,
        strict_permissions: bool,
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
            let Some((kind, fields)) = self.credential_kind(&path, value) else {
                continue;
            };
            let mut ctx = BuildCtx {
                base_dir: &self.base_dir,
                env: self.env,
                warnings: Vec::new(),
                name: &name,
                state_dir,
                strict_permissions,
            };
            let built = kind.build(fields, &mut ctx);
            for (key, msg) in std::mem::take(&mut ctx.warnings) {
                self.warn(&format!("{path}.{key}"), msg);
            }
            let credential = match built {
                Ok(c) => Ok(c),
                Err(BuildError::Unavailable(e)) => {
                    self.warn(&path, format!("{}: {e}", crate::config::UNAVAILABLE));
                    Err(e)
                }
                Err(BuildError::Invalid { key, message }) if key.is_empty() => {
                    self.err(&path, message);
                    continue;
                }
                Err(BuildError::Invalid { key, message }) => {
                    self.err(&format!("{path}.{key}"), message);
                    continue;
                }
            };
            out.push(CredentialEntry {
                name: name.into(),
                kind: kind.name,
                credential,
            });
        }
        out
    }

    /// The credential's type (from `type`) and the rest of its fields.
    fn credential_kind(
        &mut self,
        path: &str,
        value: serde_yaml::Value,
    ) -> Option<(&'static KindEntry, serde_yaml::Value)> {
        let serde_yaml::Value::Mapping(mut map) = value else {
            self.err(path, "expected a mapping with a `type` key");
            return None;
        };
        let ty = match map.remove("type") {
            Some(serde_yaml::Value::String(t)) => t,
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
        Some((kind, serde_yaml::Value::Mapping(map)))
    }
}
