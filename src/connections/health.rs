//! When a connection's refresh token stops working, so a person reconnects before it does:
//! the earliest of the provider's own word (`refresh_token_expires_in`), the chain's maximum
//! lifetime since consent, and the idle lifetime since the token was last used or rotated.

use std::time::Duration;

use crate::catalog::Provider;

/// Reconnect warnings start this long before the refresh token expires.
pub const WARN_AHEAD: Duration = Duration::from_secs(7 * 86_400);

/// What is known about when a refresh token expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// Seconds since the epoch.
    pub at: u64,
    /// Which rule gives it, for people.
    pub why: String,
}

/// Seconds since the epoch of each event that matters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Times {
    /// The connection was made (the user consented).
    pub connected: u64,
    /// The connection was last replaced.
    pub updated: u64,
    /// The last successful refresh this replica saw.
    pub last_refresh: Option<u64>,
    /// What the provider said in its last answer.
    pub provider_says: Option<u64>,
}

fn days(d: Duration) -> u64 {
    d.as_secs() / 86_400
}

/// The earliest expiry the rules give; None when the provider states none.
pub fn expiry(catalog: &Provider, t: Times) -> Option<Expiry> {
    let (lifetime, idle) = catalog.refresh_lifetimes();
    let mut candidates = Vec::new();
    if let Some(at) = t.provider_says {
        candidates.push(Expiry {
            at,
            why: "the provider's refresh_token_expires_in".into(),
        });
    }
    if let Some(l) = lifetime {
        candidates.push(Expiry {
            at: t.connected + l.as_secs(),
            why: format!("{} days after consent at most", days(l)),
        });
    }
    if let Some(i) = idle {
        let last = t.last_refresh.unwrap_or(0).max(t.updated);
        candidates.push(Expiry {
            at: last + i.as_secs(),
            why: format!("{} days unused", days(i)),
        });
    }
    candidates.into_iter().min_by_key(|e| e.at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(lifetime: Option<&str>, idle: Option<&str>) -> Provider {
        Provider {
            refresh_token_policy: Some(crate::catalog::RefreshPolicy {
                lifetime: lifetime.map(Into::into),
                idle_lifetime: idle.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_earliest_rule_wins() {
        const DAY: u64 = 86_400;
        let t = Times {
            connected: 0,
            updated: 10 * DAY,
            last_refresh: Some(30 * DAY),
            provider_says: None,
        };
        // Xero: 60 days unused.
        let x = expiry(&provider(None, Some("60d")), t).unwrap();
        assert_eq!((x.at, x.why.as_str()), (90 * DAY, "60 days unused"));
        // Atlassian: 90 days unused, 365 days at most.
        let a = expiry(
            &provider(Some("365d"), Some("90d")),
            Times {
                last_refresh: Some(300 * DAY),
                ..t
            },
        )
        .unwrap();
        assert_eq!(a.at, 365 * DAY);
        // QuickBooks says so itself, sooner.
        let q = expiry(
            &provider(Some("1825d"), Some("100d")),
            Times {
                provider_says: Some(40 * DAY),
                ..t
            },
        )
        .unwrap();
        assert_eq!(q.at, 40 * DAY);
        assert_eq!(expiry(&Provider::default(), t), None);
    }
}
