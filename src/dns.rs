//! Upstream name resolution without blocking the event loop, with a bounded answer cache.
//!
//! Lookups go through the system resolver (getaddrinfo on tokio's blocking pool), so
//! `/etc/hosts`, search domains and nsswitch behave as for any other program. getaddrinfo does
//! not report record TTLs, so answers are kept for `proxy.dns.ttl` (1 s floor, 1 h ceiling,
//! enforced at config load) and failures for `proxy.dns.negative_ttl`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Entries beyond this are pruned, so a client tunnelling to many names cannot grow memory.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("{0}")]
    NotFound(String),
    #[error("lookup timed out")]
    Timeout,
}

#[derive(Clone)]
enum Answer {
    Found(Arc<[IpAddr]>),
    Failed(DnsError),
}

struct Entry {
    answer: Answer,
    until: Instant,
}

pub struct Resolver {
    cache: DashMap<String, Entry>,
    overrides: HashMap<String, IpAddr>,
    ttl: Duration,
    negative_ttl: Duration,
    timeout: Duration,
}

impl Resolver {
    pub fn new(ttl: Duration, negative_ttl: Duration, timeout: Duration) -> Self {
        Resolver {
            cache: DashMap::new(),
            overrides: HashMap::new(),
            ttl,
            negative_ttl,
            timeout,
        }
    }

    /// Fixed answers (`proxy.dns.overrides`), consulted before anything else.
    pub fn with_overrides(mut self, overrides: HashMap<String, IpAddr>) -> Self {
        self.overrides = overrides;
        self
    }

    /// Addresses for `host` (already normalised; IP literals are returned as they are).
    pub async fn resolve(&self, host: &str) -> Result<Arc<[IpAddr]>, DnsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Arc::from([ip]));
        }
        if let Some(ip) = self.overrides.get(host) {
            return Ok(Arc::from([*ip]));
        }
        let now = Instant::now();
        if let Some(e) = self.cache.get(host) {
            if e.until > now {
                return match &e.answer {
                    Answer::Found(a) => Ok(a.clone()),
                    Answer::Failed(err) => Err(err.clone()),
                };
            }
        }
        let answer = self.lookup(host).await;
        let ttl = match answer {
            Answer::Found(_) => self.ttl,
            Answer::Failed(_) => self.negative_ttl,
        };
        self.store(host, answer.clone(), now + ttl);
        match answer {
            Answer::Found(a) => Ok(a),
            Answer::Failed(e) => Err(e),
        }
    }

    async fn lookup(&self, host: &str) -> Answer {
        let fut = tokio::net::lookup_host((host, 0));
        match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Answer::Failed(DnsError::Timeout),
            Ok(Err(e)) => Answer::Failed(DnsError::NotFound(e.to_string())),
            Ok(Ok(addrs)) => {
                let mut ips: Vec<IpAddr> = Vec::new();
                for a in addrs {
                    if !ips.contains(&a.ip()) {
                        ips.push(a.ip());
                    }
                }
                if ips.is_empty() {
                    Answer::Failed(DnsError::NotFound("no addresses".into()))
                } else {
                    Answer::Found(ips.into())
                }
            }
        }
    }

    fn store(&self, host: &str, answer: Answer, until: Instant) {
        if self.cache.len() >= MAX_ENTRIES {
            let now = Instant::now();
            self.cache.retain(|_, e| e.until > now);
            if self.cache.len() >= MAX_ENTRIES {
                self.cache.clear();
            }
        }
        self.cache.insert(host.to_string(), Entry { answer, until });
    }

    pub fn cached_entries(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> Resolver {
        Resolver::new(
            Duration::from_secs(30),
            Duration::from_secs(2),
            Duration::from_secs(5),
        )
    }

    #[tokio::test]
    async fn literals_skip_lookup() {
        let r = resolver();
        assert_eq!(
            &*r.resolve("127.0.0.1").await.unwrap(),
            &["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            &*r.resolve("::1").await.unwrap(),
            &["::1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(r.cached_entries(), 0);
    }

    #[tokio::test]
    async fn caches_answers_and_failures() {
        let r = resolver();
        let a = r.resolve("localhost").await.unwrap();
        assert!(!a.is_empty());
        assert_eq!(r.cached_entries(), 1);
        assert!(r.resolve("does-not-exist.invalid").await.is_err());
        assert_eq!(r.cached_entries(), 2);
        // The second failure comes from the cache.
        assert!(r.resolve("does-not-exist.invalid").await.is_err());
    }

    #[tokio::test]
    async fn overrides_win() {
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let r = resolver().with_overrides(HashMap::from([("api.example.com".to_string(), ip)]));
        assert_eq!(&*r.resolve("api.example.com").await.unwrap(), &[ip]);
        assert_eq!(r.cached_entries(), 0);
    }

    #[tokio::test]
    async fn bounded() {
        let r = resolver();
        for i in 0..(MAX_ENTRIES + 5) {
            r.store(
                &format!("h{i}"),
                Answer::Failed(DnsError::Timeout),
                Instant::now() + Duration::from_secs(60),
            );
        }
        assert!(r.cached_entries() <= MAX_ENTRIES);
    }
}
