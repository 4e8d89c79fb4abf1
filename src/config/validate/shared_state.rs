//! `proxy.shared_state`: the fleet's Redis (URLs, prefix, credentials) and the key every value
//! in it is sealed under.

use super::Validator;
use crate::config::raw::{RawSharedState, RedisUrls, SecretText};
use crate::config::SharedStateSettings;
use crate::secret::{Secret, SecretSource};
use crate::store::sealed_file::{parse_key, KEY_ENV};

const KEY: &str = "proxy.shared_state";

impl Validator<'_> {
    pub(super) fn shared_state(
        &mut self,
        raw: Option<&RawSharedState>,
        strict: bool,
    ) -> Option<SharedStateSettings> {
        let raw = raw?;
        let (texts, cluster): (Vec<&SecretText>, bool) = match &raw.redis {
            RedisUrls::One(u) => (vec![u], false),
            RedisUrls::Cluster(us) if us.is_empty() => {
                self.err(
                    &format!("{KEY}.redis"),
                    "empty list: give the seed URLs of the Cluster",
                );
                return None;
            }
            RedisUrls::Cluster(us) => (us.iter().collect(), true),
        };
        let mut urls = Vec::new();
        for (i, t) in texts.into_iter().enumerate() {
            let path = if cluster {
                format!("{KEY}.redis[{i}]")
            } else {
                format!("{KEY}.redis")
            };
            urls.push(self.redis_url(&path, t, strict)?);
        }
        let prefix = raw.prefix.clone().unwrap_or_else(|| "credproxy".into());
        let prefix_ok = !prefix.is_empty()
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !prefix_ok {
            self.err(
                &format!("{KEY}.prefix"),
                format!("`{prefix}`: use letters, digits, `-`, `_` and `.`"),
            );
        }
        let password = match &raw.password {
            Some(p) => Some(self.redis_secret(&format!("{KEY}.password"), p, strict)?),
            None => None,
        };
        let key = self.state_key()?;
        Some(SharedStateSettings {
            urls,
            cluster,
            prefix,
            username: raw.username.clone(),
            password,
            key,
        })
    }

    /// A Redis URL (possibly a secret reference, since it may hold a password).
    fn redis_url(&mut self, path: &str, raw: &str, strict: bool) -> Option<Secret> {
        let url = self.redis_secret(path, raw, strict)?;
        let text = url.expose();
        let parsed = url::Url::parse(text).ok();
        let ok = parsed.as_ref().is_some_and(|u| {
            matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        if !ok {
            // The value may hold a password: say what is wrong, not what it is.
            self.err(
                path,
                "expected redis://[user:pass@]host:port[/db] or rediss://... for TLS",
            );
            return None;
        }
        Some(url)
    }

    fn redis_secret(&mut self, path: &str, raw: &str, strict: bool) -> Option<Secret> {
        let mut warnings = Vec::new();
        let source =
            SecretSource::parse_checked(raw, &self.base_dir, strict, &mut |w| warnings.push(w));
        for w in warnings {
            self.warn(path, w);
        }
        source
            .and_then(|s| {
                s.resolve(&self.base_dir, self.env)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| self.err(path, e))
            .ok()
    }

    /// `CREDPROXY_STATE_KEY`, which a fleet cannot run without.
    fn state_key(&mut self) -> Option<[u8; 32]> {
        let Some(text) = (self.env)(KEY_ENV) else {
            self.err(KEY, format!("{KEY_ENV} is not set: every value in Redis is sealed under it (32 random bytes, 64 hex digits or base64; the same on every replica)"));
            return None;
        };
        parse_key(&text)
            .map_err(|e| self.err(KEY, e.to_string()))
            .ok()
    }
}
