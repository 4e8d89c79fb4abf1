//! What `/metrics` and `/credentials` say about connections: counts by credential and
//! status, and the few tenants that must reconnect soon (labelled by tenant only while they
//! do, so a fleet of 10,000 healthy tenants adds no series per tenant).

use std::collections::BTreeMap;

use super::admin::{status, ConnectionStatus};
use crate::app::App;
use crate::metrics::Scrape;

/// Statuses counted for every per-tenant credential, so a dashboard sees zeros, not gaps.
const STATUSES: [&str; 6] = [
    "ok",
    "no token yet",
    "error",
    "needs_reconnect",
    "unusable",
    "orphaned",
];

/// Every connection's status, computed once per scrape.
pub fn statuses(app: &App) -> Vec<ConnectionStatus> {
    let cfg = app.config();
    app.connections
        .list(None)
        .iter()
        .map(|e| status(app, &cfg, e))
        .collect()
}

/// `credproxy_connections`, `credproxy_connections_reconnect_soon` and
/// `credproxy_connection_reconnect_due_seconds`.
pub fn scrape(app: &App, s: &mut Scrape) {
    let cfg = app.config();
    let per_tenant: Vec<&str> = cfg
        .credentials
        .iter()
        .filter(|c| c.template().is_some())
        .map(|c| &*c.name)
        .collect();
    if per_tenant.is_empty() {
        return;
    }
    let all = statuses(app);
    let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for c in &per_tenant {
        for st in STATUSES {
            counts.insert((c, st), 0);
        }
    }
    for c in &all {
        *counts.entry((&c.credential, c.status)).or_default() += 1;
    }
    s.gauges(
        "credproxy_connections",
        "Tenants' connections by credential and status.",
        &["credential", "status"],
        counts.iter().map(|((c, st), n)| (vec![*c, *st], *n)),
    );
    let soon = |c: &ConnectionStatus| c.refresh_token.as_ref().is_some_and(|r| r.reconnect_soon);
    s.gauges(
        "credproxy_connections_reconnect_soon",
        "Connections whose refresh token stops working within 7 days (send a connect link).",
        &["credential"],
        per_tenant.iter().map(|p| {
            let n = all.iter().filter(|c| c.credential == *p && soon(c)).count();
            (vec![*p], i64::try_from(n).unwrap_or(i64::MAX))
        }),
    );
    s.gauges(
        "credproxy_connection_reconnect_due_seconds",
        "Seconds until a connection's refresh token stops working (0 once it has), only for \
         tenants that must reconnect within 7 days or already must.",
        &["credential", "tenant"],
        all.iter().filter_map(|c| {
            let due = match (&c.refresh_token, c.status) {
                (_, "needs_reconnect") => 0,
                (Some(r), _) if r.reconnect_soon => r.seconds_left.max(0),
                _ => return None,
            };
            Some((vec![c.credential.as_str(), c.tenant.as_str()], due))
        }),
    );
}
