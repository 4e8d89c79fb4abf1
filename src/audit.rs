//! The audit log: one `info` line on the `credproxy::audit` target per token fetch, refresh,
//! rotation, 401-driven renewal, `needs_reconnect`, and connection change. Every line has
//! `event` and `result`; none has a secret. It can be routed or switched apart from the rest
//! (`RUST_LOG=info,credproxy::audit=off`).

use std::time::Duration;

use crate::tokens::TokenError;

pub const TARGET: &str = "credproxy::audit";

/// What happened to a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEvent {
    /// Fetched because a request needed one (none cached, or expired).
    Fetch,
    /// Fetched ahead of expiry in the background.
    RefreshAhead,
    /// Dropped and fetched on an admin's request.
    Refresh,
    /// Replaced because an upstream answered 401.
    Renewal,
    /// A refresh token was replaced by the provider's new one (committed before use).
    Rotation,
    /// The provider refused the refresh token: a person must connect again.
    NeedsReconnect,
}

impl TokenEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenEvent::Fetch => "token_fetch",
            TokenEvent::RefreshAhead => "token_refresh_ahead",
            TokenEvent::Refresh => "token_refresh",
            TokenEvent::Renewal => "token_renewal",
            TokenEvent::Rotation => "refresh_token_rotation",
            TokenEvent::NeedsReconnect => "needs_reconnect",
        }
    }
}

/// One token event; `error` is the failure, if any (its endpoint status and OAuth code are
/// logged, the message already scrubbed).
pub fn token(
    credential: &str,
    tenant: Option<&str>,
    event: TokenEvent,
    took: Duration,
    error: Option<&TokenError>,
) {
    let duration_ms = took.as_secs_f64() * 1000.0;
    let event = event.as_str();
    match error {
        None => tracing::info!(
            target: TARGET,
            event,
            credential,
            tenant,
            result = "ok",
            duration_ms,
            "{event}: ok"
        ),
        Some(e) => tracing::info!(
            target: TARGET,
            event,
            credential,
            tenant,
            result = "error",
            duration_ms,
            status = e.status(),
            error_code = e.oauth_code(),
            "{event}: {e}"
        ),
    }
}

/// Who made an admin or connect-flow call.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `X-Credproxy-Actor` (the platform's user), else `admin` (or `browser` in the connect
    /// flow).
    pub name: String,
    pub addr: String,
}

/// One connection change (create, replace, delete, refresh, test, connect-link, connect).
pub fn connection(actor: &Actor, action: &str, tenant: &str, credential: &str, outcome: &str) {
    let event = format!("connection_{}", action.replace('-', "_"));
    tracing::info!(
        target: TARGET,
        event = event.as_str(),
        actor = %actor.name,
        addr = %actor.addr,
        tenant,
        credential,
        result = outcome,
        "{event}: {outcome}"
    );
}
