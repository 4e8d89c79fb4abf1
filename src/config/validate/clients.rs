//! `clients:`: who may use the proxy, with which secret, and which credentials.

use std::collections::HashSet;

use super::{list_or_none, Validator};
use crate::config::raw::RawClient;
use crate::config::Client;
use crate::secret::{Secret, SecretSource};

impl Validator<'_> {
    pub(super) fn clients(
        &mut self,
        raw: &[RawClient],
        creds: &[&str],
        strict: bool,
    ) -> Vec<Client> {
        let mut out: Vec<Client> = Vec::new();
        let mut seen = HashSet::new();
        for (i, c) in raw.iter().enumerate() {
            let path = format!("clients[{i}]");
            if !self.client_name(&path, &c.name, &mut seen) {
                continue;
            }
            let Some(secret) = self.client_secret(&path, &c.secret, strict, &out) else {
                continue;
            };
            let credentials = self.client_credentials(&path, &c.credentials, creds);
            let (tenant, tenants) = self.client_tenants(&path, c);
            out.push(Client {
                name: c.name.clone(),
                secret,
                credentials,
                tenant,
                tenants,
            });
        }
        out
    }

    fn client_name(&mut self, path: &str, name: &str, seen: &mut HashSet<String>) -> bool {
        let path = format!("{path}.name");
        if name.is_empty() || name.contains(':') {
            self.err(&path, "a client name is non-empty and has no `:`");
            return false;
        }
        if !seen.insert(name.to_string()) {
            self.err(&path, format!("client `{name}` is defined twice"));
            return false;
        }
        true
    }

    /// The client's secret, read now: a client that cannot authenticate is a hard error
    /// (starting would lock it out or, worse, tempt someone to remove `clients:` altogether).
    fn client_secret(
        &mut self,
        path: &str,
        raw: &str,
        strict: bool,
        earlier: &[Client],
    ) -> Option<Secret> {
        let path = format!("{path}.secret");
        let mut warnings = Vec::new();
        let source =
            SecretSource::parse_checked(raw, &self.base_dir, strict, &mut |w| warnings.push(w));
        for w in warnings {
            self.warn(&path, w);
        }
        let secret = source
            .and_then(|s| {
                s.resolve(&self.base_dir, self.env)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| self.err(&path, e))
            .ok()?;
        // Short secrets can be guessed; a shared one makes Bearer ambiguous.
        let problem = if secret.expose().len() < MIN_CLIENT_SECRET {
            format!("a client secret needs at least {MIN_CLIENT_SECRET} characters")
        } else if earlier
            .iter()
            .any(|o| o.secret.ct_eq(secret.expose().as_bytes()))
        {
            "two clients share this secret; give each its own".to_string()
        } else {
            return Some(secret);
        };
        self.err(&path, problem);
        None
    }

    fn client_credentials(&mut self, path: &str, names: &[String], creds: &[&str]) -> Vec<usize> {
        let mut allowed = Vec::new();
        for (j, name) in names.iter().enumerate() {
            match creds.iter().position(|x| x == name) {
                Some(idx) => allowed.push(idx),
                None => self.err(
                    &format!("{path}.credentials[{j}]"),
                    format!(
                        "unknown credential `{name}` (defined: {})",
                        list_or_none(creds)
                    ),
                ),
            }
        }
        allowed
    }
}

/// Shortest accepted client secret.
const MIN_CLIENT_SECRET: usize = 8;
