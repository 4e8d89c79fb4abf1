//! `proxy:`: listeners, limits, timeouts, DNS, egress and the CA.

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;

use super::Validator;
use crate::config::raw::RawTimeouts as T;
use crate::config::raw::{RawLimits, RawProxy, RawTimeouts, Unmatched};
use crate::config::units::parse_size;
use crate::config::{CaPaths, DnsSettings, Egress, Limits, ProxySettings, Timeouts};

impl Validator<'_> {
    pub(super) fn proxy(&mut self, p: &RawProxy) -> Option<ProxySettings> {
        let listen = self.addr("proxy.listen", p.listen.as_ref(), "127.0.0.1:8080");
        let admin = match p.admin.as_deref() {
            Some("off") => None,
            _ => self.addr("proxy.admin", p.admin.as_ref(), "127.0.0.1:9090"),
        };
        let max_body = self.size("proxy.max_body", p.max_body.as_ref(), 16 << 20, 0, 1 << 30);
        let ca = p.ca.as_ref().map(|c| CaPaths {
            cert: self.base_dir.join(&c.cert),
            key: self.base_dir.join(&c.key),
        });
        let strict = p.strict_permissions.unwrap_or(false);
        let interceptor = ca.as_ref().and_then(|c| self.interceptor(c, strict));
        let upstream_ca = p.upstream_ca.as_ref().map(|u| self.base_dir.join(u));
        let upstream_roots = upstream_ca.as_ref().and_then(|u| {
            crate::tls::roots::with_extra(u)
                .map_err(|e| self.err("proxy.upstream_ca", e))
                .ok()
        });
        Some(ProxySettings {
            listen: listen?,
            admin,
            unmatched: p.unmatched.unwrap_or(Unmatched::Tunnel),
            max_body,
            timeouts: self.timeouts(p.timeouts.as_ref()),
            limits: self.limits(p, max_body),
            dns: self.dns(p),
            threads: self.threads(p.threads),
            ca,
            interceptor,
            upstream_ca,
            upstream_roots,
            state_dir: self
                .base_dir
                .join(p.state_dir.as_deref().unwrap_or(".credproxy/state")),
            shared_state: self.shared_state(p.shared_state.as_ref(), strict),
            egress: self.egress(p),
            admin_token: self.admin_token(p.admin_token.as_deref(), strict),
            otel: self.otel(p.otel.as_ref()),
            shutdown_grace: self.duration(
                "proxy.shutdown_grace",
                p.shutdown_grace.as_ref(),
                Duration::from_secs(10),
                Duration::ZERO,
                Duration::from_secs(3600),
            ),
            connect: self.connect(p.connect.as_ref()),
            state_key: (self.env)(crate::store::sealed_file::KEY_ENV)
                .and_then(|k| crate::store::sealed_file::parse_key(&k).ok()),
        })
    }

    /// `proxy.otel`: an http(s) base URL; spans go to its `/v1/traces`.
    fn otel(
        &mut self,
        raw: Option<&crate::config::raw::RawOtel>,
    ) -> Option<crate::otel::OtelSettings> {
        let raw = raw?;
        let url = match url::Url::parse(&raw.endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
            _ => {
                let m = format!("`{}` is not an http(s) URL", raw.endpoint);
                self.err("proxy.otel.endpoint", m);
                return None;
            }
        };
        let base = url.as_str().trim_end_matches('/');
        let traces_url = match base.ends_with("/v1/traces") {
            true => base.to_string(),
            false => format!("{base}/v1/traces"),
        };
        Some(crate::otel::OtelSettings {
            traces_url,
            service_name: raw
                .service_name
                .clone()
                .unwrap_or_else(|| "credproxy".into()),
        })
    }

    /// `proxy.timeouts`, each key checked against its row of `TIMEOUTS`.
    fn timeouts(&mut self, raw: Option<&RawTimeouts>) -> Timeouts {
        let default = RawTimeouts::default();
        let raw = raw.unwrap_or(&default);
        let [connect, read, idle, client_idle, handshake, header] =
            TIMEOUTS.map(|b| self.bounded(b, (b.get)(raw)));
        Timeouts {
            connect,
            read,
            idle,
            client_idle,
            handshake,
            header,
            total: raw.total.as_ref().map(|t| self.bounded(TOTAL, Some(t))),
        }
    }

    fn bounded(&mut self, b: Bound, v: Option<&String>) -> Duration {
        let path = format!("proxy.{}", b.key);
        self.duration(&path, v, b.default, b.min, b.max)
    }

    fn dns(&mut self, p: &RawProxy) -> DnsSettings {
        let d = p.dns.as_ref();
        DnsSettings {
            ttl: self.bounded(DNS_TTL, d.and_then(|d| d.ttl.as_ref())),
            negative_ttl: self.bounded(DNS_NEGATIVE_TTL, d.and_then(|d| d.negative_ttl.as_ref())),
            overrides: self.dns_overrides(d.map(|d| &d.overrides)),
        }
    }

    fn threads(&mut self, v: Option<usize>) -> usize {
        match v {
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            Some(n) if (1..=256).contains(&n) => n,
            Some(n) => {
                self.err("proxy.threads", format!("{n} is out of range (1 to 256)"));
                1
            }
        }
    }

    /// A size such as `16MiB` within `min..=max` bytes.
    fn size(&mut self, path: &str, v: Option<&String>, default: u64, min: u64, max: u64) -> u64 {
        let Some(t) = v else { return default };
        match parse_size(t) {
            Ok(n) if (min..=max).contains(&n) => n,
            Ok(_) if min == 0 => {
                let m = format!("`{t}` is larger than the {} limit", human_size(max));
                self.err(path, m);
                default
            }
            Ok(_) => {
                let range = format!("{} to {}", human_size(min), human_size(max));
                self.err(path, format!("`{t}` is out of range ({range})"));
                default
            }
            Err(e) => {
                self.err(path, e);
                default
            }
        }
    }

    /// Loads the CA named by `proxy.ca`; its problems are config errors (exit 2 at startup,
    /// the running config kept on reload).
    fn interceptor(&mut self, c: &CaPaths, strict: bool) -> Option<Arc<crate::tls::Interceptor>> {
        let ca = match crate::tls::ca::load(&c.cert, &c.key) {
            Ok(ca) => ca,
            Err(e) => {
                self.err(e.key(), e.to_string());
                return None;
            }
        };
        match &ca.key_exposed {
            Some(w) if strict => {
                self.err(
                    "proxy.ca.key",
                    format!("{w} (proxy.strict_permissions is on)"),
                );
                return None;
            }
            Some(w) => self.warn("proxy.ca.key", w.clone()),
            None => {}
        }
        for w in &ca.warnings {
            self.warn("proxy.ca.cert", w.clone());
        }
        match crate::tls::Interceptor::new(ca) {
            Ok(i) => Some(Arc::new(i)),
            Err(e) => {
                self.err("proxy.ca", e.to_string());
                None
            }
        }
    }

    fn limits(&mut self, p: &RawProxy, max_body: u64) -> Limits {
        let l = p.limits.as_ref();
        let (max_buffered, max_buffered_per_client) = self.buffered(l, max_body);
        let max_header_bytes = self.size(
            "proxy.limits.max_header_bytes",
            l.and_then(|l| l.max_header_bytes.as_ref()),
            64 << 10,
            1 << 10,
            1 << 20,
        ) as usize;
        let mut count = |key: &str, v: Option<usize>, default: usize, max: usize| match v {
            None => default,
            Some(n) if (1..=max).contains(&n) => n,
            Some(n) => {
                self.err(
                    &format!("proxy.limits.{key}"),
                    format!("{n} is out of range (1 to {max})"),
                );
                default
            }
        };
        Limits {
            max_header_bytes,
            max_headers: count("max_headers", l.and_then(|l| l.max_headers), 100, 1000),
            max_connections_per_client: count(
                "max_connections_per_client",
                l.and_then(|l| l.max_connections_per_client),
                256,
                1_000_000,
            ),
            max_buffered,
            max_buffered_per_client,
        }
    }

    /// `max_buffered` and a client's share of it; each holds at least one `max_body` body.
    fn buffered(&mut self, l: Option<&RawLimits>, max_body: u64) -> (u64, u64) {
        let (key, client_key) = (
            "proxy.limits.max_buffered",
            "proxy.limits.max_buffered_per_client",
        );
        let total_raw = l.and_then(|l| l.max_buffered.as_ref());
        let total = self.size(key, total_raw, max_body.max(256 << 20), 1 << 10, 1 << 40);
        let client_raw = l.and_then(|l| l.max_buffered_per_client.as_ref());
        let default_client = (total / 4).max(max_body).min(total);
        let client = self.size(client_key, client_raw, default_client, 1 << 10, 1 << 40);
        if client > total {
            self.err(
                client_key,
                format!("{client} bytes is more than max_buffered ({total})"),
            );
        }
        for (k, v, raw) in [(key, total, total_raw), (client_key, client, client_raw)] {
            if raw.is_some() && v < max_body {
                self.err(k, format!("{v} bytes is less than proxy.max_body ({max_body}): a body that size could never be signed"));
            }
        }
        (total, client)
    }

    fn dns_overrides(
        &mut self,
        raw: Option<&IndexMap<String, String>>,
    ) -> std::collections::HashMap<String, std::net::IpAddr> {
        let mut out = std::collections::HashMap::new();
        for (host, ip) in raw.into_iter().flatten() {
            let path = format!("proxy.dns.overrides.{host}");
            let Ok(h) = crate::routing::normalize_host(host) else {
                self.err(&path, format!("`{host}` is not a host name"));
                continue;
            };
            match ip.parse() {
                Ok(ip) => {
                    out.insert(h, ip);
                }
                Err(_) => self.err(&path, format!("`{ip}` is not an IP address")),
            }
        }
        out
    }

    fn egress(&mut self, p: &RawProxy) -> Egress {
        let e = p.egress.as_ref();
        let allow = e.map(|e| e.allow.clone()).unwrap_or_default();
        for (i, a) in allow.iter().enumerate() {
            if let Err(e) = crate::egress::Allow::parse(a) {
                self.err(
                    &format!("proxy.egress.allow[{i}]"),
                    format!("{e}; expected a CIDR (10.0.0.0/8), an IP or a host name, optionally with :PORT or :LOW-HIGH"),
                );
            }
        }
        let deny_private = e.and_then(|e| e.deny_private).unwrap_or(true);
        Egress {
            deny_private,
            policy: crate::egress::Policy::new(deny_private, &allow),
            allow,
        }
    }
}

/// What one duration key accepts.
#[derive(Clone, Copy)]
struct Bound {
    /// Below `proxy.`.
    key: &'static str,
    default: Duration,
    min: Duration,
    max: Duration,
    get: fn(&T) -> Option<&String>,
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = secs(3600);
const DAY: Duration = secs(86400);

/// `proxy.timeouts.*` in the order of `Timeouts`' fields.
const TIMEOUTS: [Bound; 6] = [
    bound("timeouts.connect", secs(5), MS, HOUR, |t: &T| {
        t.connect.as_ref()
    }),
    bound("timeouts.read", secs(60), MS, DAY, |t: &T| t.read.as_ref()),
    bound("timeouts.idle", secs(60), MS, DAY, |t: &T| t.idle.as_ref()),
    bound("timeouts.client_idle", secs(60), secs(1), DAY, |t: &T| {
        t.client_idle.as_ref()
    }),
    bound("timeouts.handshake", secs(10), MS, secs(300), |t: &T| {
        t.handshake.as_ref()
    }),
    bound("timeouts.header", secs(10), MS, secs(300), |t: &T| {
        t.header.as_ref()
    }),
];
const TOTAL: Bound = bound("timeouts.total", secs(600), secs(1), DAY, |t: &T| {
    t.total.as_ref()
});
const DNS_TTL: Bound = bound("dns.ttl", secs(30), secs(1), HOUR, |_| None);
const DNS_NEGATIVE_TTL: Bound = bound(
    "dns.negative_ttl",
    secs(2),
    Duration::ZERO,
    secs(60),
    |_| None,
);

const fn bound(
    key: &'static str,
    default: Duration,
    min: Duration,
    max: Duration,
    get: fn(&T) -> Option<&String>,
) -> Bound {
    Bound {
        key,
        default,
        min,
        max,
        get,
    }
}

/// `1KiB`, `1MiB`, `1GiB` or bytes, for range messages.
fn human_size(n: u64) -> String {
    match n {
        0 => "0".into(),
        n if n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}
