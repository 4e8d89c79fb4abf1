//! Prometheus counters and histograms, lock-free on the request path (dashmap shards + atomics).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

/// Upper bounds (seconds) of the upstream latency histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

type Labels = (Arc<str>, Arc<str>, u16);

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    requests: DashMap<Labels, AtomicU64>,
    latency: DashMap<Arc<str>, Histogram>,
    reloads: DashMap<&'static str, AtomicU64>,
}

/// Escapes a Prometheus label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn request(&self, route: &Arc<str>, credential: &Arc<str>, status: u16) {
        let key = (route.clone(), credential.clone(), status);
        if let Some(c) = self.requests.get(&key) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.requests
            .entry(key)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn upstream_latency(&self, route: &Arc<str>, d: Duration) {
        let record = |h: &Histogram| {
            let secs = d.as_secs_f64();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.buckets[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            h.count.fetch_add(1, Ordering::Relaxed);
            h.sum_micros
                .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        };
        if let Some(h) = self.latency.get(route) {
            record(&h);
            return;
        }
        record(&self.latency.entry(route.clone()).or_default());
    }

    pub fn reload(&self, result: &'static str) {
        self.reloads
            .entry(result)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition; `extra` is appended (gauges computed by the caller).
    pub fn render(&self, extra: &str) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP credproxy_requests_total Requests handled, by route, credential and status.\n",
        );
        out.push_str("# TYPE credproxy_requests_total counter\n");
        let mut rows: Vec<_> = self
            .requests
            .iter()
            .map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed)))
            .collect();
        rows.sort();
        for ((r, c, s), n) in rows {
            let _ = writeln!(
                out,
                "credproxy_requests_total{{route=\"{}\",credential=\"{}\",status=\"{s}\"}} {n}",
                esc(&r),
                esc(&c)
            );
        }
        out.push_str("# HELP credproxy_upstream_latency_seconds Time from sending the request upstream to its response header.\n");
        out.push_str("# TYPE credproxy_upstream_latency_seconds histogram\n");
        for e in self.latency.iter() {
            let r = esc(e.key());
            let h = e.value();
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "credproxy_upstream_latency_seconds_bucket{{route=\"{r}\",le=\"{b}\"}} {}",
                    h.buckets[i].load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "credproxy_upstream_latency_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "credproxy_upstream_latency_seconds_sum{{route=\"{r}\"}} {}",
                h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "credproxy_upstream_latency_seconds_count{{route=\"{r}\"}} {count}"
            );
        }
        out.push_str("# HELP credproxy_config_reloads_total Config reloads by result.\n");
        out.push_str("# TYPE credproxy_config_reloads_total counter\n");
        for e in self.reloads.iter() {
            let _ = writeln!(
                out,
                "credproxy_config_reloads_total{{result=\"{}\"}} {}",
                e.key(),
                e.value().load(Ordering::Relaxed)
            );
        }
        out.push_str(extra);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let m = Metrics::default();
        let (r, c): (Arc<str>, Arc<str>) = ("api \"x\"".into(), "gh".into());
        m.request(&r, &c, 200);
        m.request(&r, &c, 200);
        m.request(&r, &c, 502);
        m.upstream_latency(&r, Duration::from_millis(3));
        let text = m.render("");
        assert!(text.contains("credproxy_requests_total{route=\"api \\\"x\\\"\",credential=\"gh\",status=\"200\"} 2"), "{text}");
        assert!(text.contains("status=\"502\"} 1"));
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains("le=\"0.0025\"} 0"));
        assert!(
            text.contains("credproxy_upstream_latency_seconds_count{route=\"api \\\"x\\\"\"} 1")
        );
    }
}
