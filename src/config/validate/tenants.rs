//! What tenancy needs besides credentials: who may name which tenant (`clients[].tenant`,
//! `tenants`), the admin token that guards `/connections`, and the connect listener.

use std::sync::Arc;

use super::Validator;
use crate::config::raw::{RawClient, RawConnect};
use crate::config::{ConnectSettings, TenantScope};
use crate::connections::record::valid_tenant;
use crate::secret::{Secret, SecretSource};

/// Shortest accepted admin token.
const MIN_ADMIN_TOKEN: usize = 16;

const TENANT_NAMES: &str =
    "a tenant name has 1 to 64 letters, digits, `.`, `_` or `-`, and does not start with `.`";

impl Validator<'_> {
    /// A client's own tenant and the tenants it may name per request.
    pub(super) fn client_tenants(
        &mut self,
        path: &str,
        c: &RawClient,
    ) -> (Option<Arc<str>>, TenantScope) {
        let tenant = c.tenant.as_deref().and_then(|t| {
            if valid_tenant(t) {
                Some(Arc::from(t))
            } else {
                self.err(&format!("{path}.tenant"), TENANT_NAMES);
                None
            }
        });
        let mut names = Vec::new();
        let mut any = false;
        for (i, t) in c.tenants.iter().enumerate() {
            match t.as_str() {
                "*" => any = true,
                t if valid_tenant(t) => names.push(t.to_string()),
                _ => self.err(
                    &format!("{path}.tenants[{i}]"),
                    format!("{TENANT_NAMES}, or is \"*\" for any"),
                ),
            }
        }
        let scope = match (any, names.is_empty()) {
            (true, _) => TenantScope::Any,
            (false, true) => TenantScope::None,
            (false, false) => TenantScope::Some(names),
        };
        (tenant, scope)
    }

    /// `proxy.admin_token`, read now: a token that cannot be read must not leave the admin
    /// API open.
    pub(super) fn admin_token(&mut self, raw: Option<&str>, strict: bool) -> Option<Secret> {
        let raw = raw?;
        let path = "proxy.admin_token";
        let mut warnings = Vec::new();
        let source =
            SecretSource::parse_checked(raw, &self.base_dir, strict, &mut |w| warnings.push(w));
        for w in warnings {
            self.warn(path, w);
        }
        let token = source
            .and_then(|s| {
                s.resolve(&self.base_dir, self.env)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| self.err(path, e))
            .ok()?;
        if token.expose().len() < MIN_ADMIN_TOKEN {
            self.err(
                path,
                format!("an admin token needs at least {MIN_ADMIN_TOKEN} characters"),
            );
            return None;
        }
        Some(token)
    }

    /// `proxy.connect`: its listener and the URL browsers reach it at.
    pub(super) fn connect(&mut self, raw: Option<&RawConnect>) -> Option<ConnectSettings> {
        let raw = raw?;
        let listen = self.addr("proxy.connect.listen", Some(&raw.listen), "")?;
        let url = raw.public_url.trim_end_matches('/');
        let problem = match url::Url::parse(url) {
            Err(e) => Some(format!("`{url}` is not a URL: {e}")),
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                Some("a public URL has no query or fragment".into())
            }
            Ok(u) if !u.username().is_empty() => Some("a public URL has no user name".into()),
            Ok(u) => crate::catalog::check_url(u.as_str())
                .err()
                .map(|e| e.replace("token endpoints", "the connect listener")),
        };
        if let Some(p) = problem {
            self.err("proxy.connect.public_url", p);
            return None;
        }
        Some(ConnectSettings {
            listen,
            public_url: url.to_string(),
        })
    }
}
