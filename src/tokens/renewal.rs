//! How often an upstream 401 may make credproxy replace a token. Any workflow can make an API
//! answer 401 (a bad path, a revoked scope); unbounded, every such request would fetch a new
//! token, draining the provider's rate limits and, for refresh tokens, rotating the chain.
//!
//! A rejected token is replaced only if it is at least `MIN_AGE` old or was not itself the
//! answer to a 401, and at most `PER_MINUTE` times a minute per credential. Otherwise the 401
//! goes to the client and the token stays.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::Token;

pub const MIN_AGE: Duration = Duration::from_secs(5);
pub const PER_MINUTE: u32 = 6;
const WINDOW: Duration = Duration::from_secs(60);

/// One slot's 401-driven renewals.
#[derive(Default)]
pub struct Renewals {
    /// Start of the current minute and the renewals in it.
    window: Mutex<Option<(Instant, u32)>>,
    /// The slot's token was dropped for a 401: the next fetch answers that 401.
    dropped: AtomicBool,
    pub renewed: AtomicU64,
    pub limited: AtomicU64,
    /// When a refusal was last logged (once a window).
    logged: Mutex<Option<Instant>>,
}

/// Why a renewal was refused, for the log.
pub enum Refused {
    TooSoon,
    RateLimited,
}

impl Renewals {
    /// Whether `rejected` may be replaced now; `spend` counts the renewal when it may.
    pub fn allow(&self, rejected: &Token, spend: bool) -> Result<(), Refused> {
        let now = Instant::now();
        if rejected.after_reject && now.duration_since(rejected.fetched_at) < MIN_AGE {
            return Err(self.refuse(Refused::TooSoon));
        }
        let Ok(mut w) = self.window.lock() else {
            return Ok(());
        };
        let (start, count) = match *w {
            Some((start, count)) if now.duration_since(start) < WINDOW => (start, count),
            _ => (now, 0),
        };
        if count >= PER_MINUTE {
            return Err(self.refuse(Refused::RateLimited));
        }
        if spend {
            *w = Some((start, count + 1));
            self.renewed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn refuse(&self, why: Refused) -> Refused {
        self.limited.fetch_add(1, Ordering::Relaxed);
        why
    }

    /// True once a window: whether this refusal should be logged.
    pub fn should_log(&self) -> bool {
        let now = Instant::now();
        let Ok(mut l) = self.logged.lock() else {
            return false;
        };
        match *l {
            Some(t) if now.duration_since(t) < WINDOW => false,
            _ => {
                *l = Some(now);
                true
            }
        }
    }

    pub fn mark_dropped(&self) {
        self.dropped.store(true, Ordering::Relaxed);
    }

    /// Whether the fetch about to happen answers a 401 (and clears the mark).
    pub fn take_dropped(&self) -> bool {
        self.dropped.swap(false, Ordering::Relaxed)
    }
}

impl Refused {
    pub fn describe(&self) -> String {
        match self {
            Refused::TooSoon => format!(
                "the token was itself renewed for a 401 less than {}s ago",
                MIN_AGE.as_secs()
            ),
            Refused::RateLimited => {
                format!("{PER_MINUTE} renewals for 401s in the last minute already")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(after_reject: bool) -> Token {
        let now = Instant::now();
        Token {
            name: http::header::AUTHORIZATION,
            header: http::HeaderValue::from_static("Bearer x"),
            fetched_at: now,
            refresh_at: now + Duration::from_secs(3000),
            expires_at: now + Duration::from_secs(3600),
            after_reject,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_renewed_for_a_401_is_kept_until_it_is_min_age_old() {
        let r = Renewals::default();
        assert!(
            r.allow(&token(false), true).is_ok(),
            "a fresh ordinary token"
        );
        let renewed = token(true);
        assert!(matches!(r.allow(&renewed, true), Err(Refused::TooSoon)));
        tokio::time::advance(MIN_AGE).await;
        assert!(r.allow(&renewed, true).is_ok());
        assert_eq!(r.renewed.load(Ordering::Relaxed), 2);
        assert_eq!(r.limited.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_are_capped_per_minute() {
        let r = Renewals::default();
        let old = token(false);
        tokio::time::advance(MIN_AGE).await;
        for _ in 0..PER_MINUTE {
            assert!(r.allow(&old, true).is_ok());
        }
        assert!(matches!(r.allow(&old, true), Err(Refused::RateLimited)));
        assert!(
            r.allow(&old, false).is_err(),
            "asking does not spend, and is refused"
        );
        tokio::time::advance(WINDOW).await;
        assert!(r.allow(&old, true).is_ok(), "a new minute");
        assert!(r.should_log());
        assert!(!r.should_log(), "once a window");
    }
}
