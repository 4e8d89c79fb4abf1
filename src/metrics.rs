//! Prometheus metrics, through the `prometheus` crate. Families are registered once per
//! process; each config load resolves the handles its routes use (`ConfigMetrics`), so the
//! request path counts without label lookups. Values that live elsewhere (token slots, the
//! leaf cache) are read when `/metrics` is scraped (`Scrape`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::config::Config;

/// Upper bounds (seconds) of the upstream latency histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Statuses whose counters are kept resolved; any other status takes one label lookup.
const COMMON: [u16; 24] = [
    200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 407, 409, 413, 422,
    429, 500, 502, 503, 504,
];

/// The label credproxy uses where no route or credential applies.
pub const NONE: &str = "(none)";
pub const UNMATCHED: &str = "(unmatched)";

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    reloads: IntCounterVec,
    /// Client connections open now on the proxy listener.
    pub client_connections: IntGauge,
    /// Intercepted CONNECT tunnels open now.
    pub intercepted_connections: IntGauge,
    /// Bytes of request bodies held in memory now.
    pub buffered_bytes: IntGauge,
}

/// `credproxy_requests_total` for one route and credential, by status.
pub struct RequestCounter {
    family: IntCounterVec,
    route: Arc<str>,
    credential: Arc<str>,
    common: [OnceLock<IntCounter>; COMMON.len()],
}

impl RequestCounter {
    fn new(family: &IntCounterVec, route: Arc<str>, credential: Arc<str>) -> Self {
        RequestCounter {
            family: family.clone(),
            route,
            credential,
            common: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    pub fn inc(&self, status: u16) {
        let series = || {
            let status = status.to_string();
            let labels = [&*self.route, &*self.credential, status.as_str()];
            self.family.with_label_values(&labels)
        };
        match COMMON.iter().position(|&s| s == status) {
            Some(i) => self.common[i].get_or_init(series).inc(),
            None => series().inc(),
        }
    }
}

/// The handles of one route.
pub struct RouteMetrics {
    pub latency: Histogram,
    /// One per credential of the route, in the route's order.
    pub requests: Vec<RequestCounter>,
}

/// The handles one config's requests use.
pub struct ConfigMetrics {
    pub routes: Vec<RouteMetrics>,
    /// Forwarded with no route.
    pub unmatched: RequestCounter,
    /// Refused before any route was known.
    pub refused: RequestCounter,
}

impl std::fmt::Debug for ConfigMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMetrics")
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl ConfigMetrics {
    /// The counter of a route and one of its credentials (a global credential index).
    pub fn route_requests(
        &self,
        cfg: &Config,
        route: usize,
        credential: usize,
    ) -> Option<&RequestCounter> {
        let pos = cfg
            .routes
            .get(route)?
            .credentials
            .iter()
            .position(|&c| c == credential)?;
        self.routes.get(route)?.requests.get(pos)
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests = counter_vec(
            "credproxy_requests_total",
            "Requests by route, credential and status.",
            &["route", "credential", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "credproxy_upstream_latency_seconds",
                "Time from sending the request upstream to its response head, by route.",
            )
            .buckets(BUCKETS.to_vec()),
            &["route"],
        )?;
        let reloads = counter_vec(
            "credproxy_config_reloads_total",
            "Config reloads by result.",
            &["result"],
        )?;
        let client_connections = IntGauge::new(
            "credproxy_client_connections",
            "Client connections open now on the proxy listener.",
        )?;
        let intercepted_connections = IntGauge::new(
            "credproxy_intercepted_connections",
            "Intercepted CONNECT tunnels now open.",
        )?;
        let buffered_bytes = IntGauge::new(
            "credproxy_buffered_bytes",
            "Bytes of request bodies held in memory now, read whole for signing or replay.",
        )?;
        registry.register(Box::new(buffered_bytes.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(client_connections.clone()))?;
        registry.register(Box::new(intercepted_connections.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            reloads,
            client_connections,
            intercepted_connections,
            buffered_bytes,
        })
    }

    /// Resolves the handles a config's routes use.
    pub fn for_config(&self, cfg: &Config) -> ConfigMetrics {
        let none: Arc<str> = Arc::from(NONE);
        let routes = cfg
            .routes
            .iter()
            .map(|r| RouteMetrics {
                latency: self.latency.with_label_values(&[&*r.name]),
                requests: r
                    .credentials
                    .iter()
                    .map(|&c| {
                        let cred = cfg.credentials[c].name.clone();
                        RequestCounter::new(&self.requests, r.name.clone(), cred)
                    })
                    .collect(),
            })
            .collect();
        ConfigMetrics {
            routes,
            unmatched: RequestCounter::new(&self.requests, Arc::from(UNMATCHED), none.clone()),
            refused: RequestCounter::new(&self.requests, none.clone(), none),
        }
    }

    /// Counts a request by label values: for answers outside a config's routes (CONNECT).
    pub fn request(&self, route: &str, credential: &str, status: u16) {
        let status = status.to_string();
        self.requests
            .with_label_values(&[route, credential, status.as_str()])
            .inc();
    }

    pub fn reload(&self, result: &str) {
        self.reloads.with_label_values(&[result]).inc();
    }

    /// The Prometheus text exposition, with `extra` families read at scrape time.
    pub fn render(&self, extra: Vec<MetricFamily>) -> String {
        let mut families = self.registry.gather();
        // A family without series (no token credential) is not valid exposition.
        families.extend(extra.into_iter().filter(|f| !f.get_metric().is_empty()));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# metrics could not be encoded: {e}\n"))
    }
}

/// Families whose values are read when `/metrics` is scraped.
#[derive(Default)]
pub struct Scrape {
    pub families: Vec<MetricFamily>,
}

impl Scrape {
    /// A gauge family with one series per row of label values.
    pub fn gauges<'a>(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        rows: impl IntoIterator<Item = (Vec<&'a str>, i64)>,
    ) {
        let made = IntGaugeVec::new(Opts::new(name, help), labels).map(|g| {
            for (values, v) in rows {
                g.with_label_values(&values).set(v);
            }
            g.collect()
        });
        self.keep(name, made);
    }

    /// A counter family with one series per row of label values.
    pub fn counters<'a>(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        rows: impl IntoIterator<Item = (Vec<&'a str>, u64)>,
    ) {
        let made = counter_vec(name, help, labels).map(|c| {
            for (values, v) in rows {
                c.with_label_values(&values).inc_by(v);
            }
            c.collect()
        });
        self.keep(name, made);
    }

    fn keep(&mut self, name: &str, made: prometheus::Result<Vec<MetricFamily>>) {
        match made {
            Ok(f) => self.families.extend(f),
            Err(e) => tracing::warn!(metric = name, "metric family not exported: {e}"),
        }
    }
}

/// Seconds as a histogram observation.
pub fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders_with_escaped_labels() {
        let m = Metrics::new().unwrap();
        let c = RequestCounter::new(&m.requests, "api \"x\"".into(), "gh".into());
        c.inc(200);
        c.inc(200);
        c.inc(502);
        c.inc(418);
        m.latency
            .with_label_values(&["api \"x\""])
            .observe(seconds(Duration::from_millis(3)));
        let text = m.render(Vec::new());
        assert!(text.contains("credproxy_requests_total{credential=\"gh\",route=\"api \\\"x\\\"\",status=\"200\"} 2"), "{text}");
        assert!(text.contains("status=\"502\"} 1"));
        assert!(text.contains("status=\"418\"} 1"));
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains("le=\"0.0025\"} 0"));
        assert!(
            text.contains("credproxy_upstream_latency_seconds_count{route=\"api \\\"x\\\"\"} 1")
        );
    }

    #[test]
    fn scrape_families_render_beside_the_registry() {
        let m = Metrics::new().unwrap();
        let mut s = Scrape::default();
        s.gauges("credproxy_x", "x", &["credential"], [(vec!["a\"b"], 3)]);
        let text = m.render(s.families);
        assert!(text.contains("# TYPE credproxy_x gauge"), "{text}");
        assert!(
            text.contains("credproxy_x{credential=\"a\\\"b\"} 3"),
            "{text}"
        );
    }
}
