//! An HTTP/1.1 upstream connection kept with the downstream keep-alive connection whose
//! request used it, so the next request on that connection to the same peer skips the shared
//! pool (a lock, an LRU and DashMap update, a spawned idle-watch task and a `getpeername` per
//! request). It goes back to the shared pool when the downstream connection ends, when the
//! next request goes to another peer, and is dropped when it was parked longer than the
//! peer's idle timeout. HAProxy keeps server connections with their client session the same
//! way.

use std::any::Any;
use std::time::Instant;

use futures::FutureExt;
use pingora_core::protocols::http::v1::client::HttpSession as HttpSessionV1;
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use tokio::io::AsyncReadExt;

/// The upstream session of the last request on a downstream connection, its response read
/// whole and its keep-alive allowed.
pub(crate) struct StickyUpstream {
    h1: HttpSessionV1,
    peer: Box<HttpPeer>,
    key: u64,
    parked: Option<Instant>,
}

impl StickyUpstream {
    /// `key`: the peer's `reuse_hash`, when the request already computed it (it was carried
    /// on this connection's kept upstream).
    pub(crate) fn new(h1: HttpSessionV1, peer: Box<HttpPeer>, key: Option<u64>) -> Self {
        let key = key.unwrap_or_else(|| peer.reuse_hash());
        StickyUpstream {
            h1,
            peer,
            key,
            parked: None,
        }
    }

    /// The session and peer, for the shared pool.
    pub(crate) fn into_parts(self) -> (HttpSessionV1, Box<HttpPeer>) {
        (self.h1, self.peer)
    }

    /// Parked longer than the peer's idle timeout: the pool would have closed it by now.
    pub(crate) fn expired(&self) -> bool {
        match (self.parked, self.peer.idle_timeout()) {
            (Some(at), Some(idle)) => at.elapsed() >= idle,
            _ => false,
        }
    }
}

/// What goes from one request to the next on a downstream connection: the adopter's context
/// (`ProxyHttp::persist_connection_context`) and the sticky upstream.
pub(crate) struct Carried {
    pub(crate) user: Option<Box<dyn Any + Send + Sync>>,
    pub(crate) upstream: Option<StickyUpstream>,
}

impl Carried {
    /// Parks the upstream: the clock for its idle timeout starts now.
    pub(crate) fn new(
        user: Option<Box<dyn Any + Send + Sync>>,
        mut upstream: Option<StickyUpstream>,
    ) -> Self {
        if let Some(u) = upstream.as_mut() {
            u.parked = Some(Instant::now());
        }
        Carried { user, upstream }
    }

    /// Splits what the previous request left on the connection.
    pub(crate) fn split(
        ctx: Option<Box<dyn Any + Send + Sync>>,
    ) -> (Option<Box<dyn Any + Send + Sync>>, Option<StickyUpstream>) {
        match ctx.map(|c| c.downcast::<Carried>()) {
            None => (None, None),
            Some(Ok(c)) => (c.user, c.upstream),
            // Not ours (nothing else sets it): hand it on untouched.
            Some(Err(other)) => (Some(other), None),
        }
    }
}

/// What to do with a sticky upstream when a request needs `peer`.
pub(crate) enum Take {
    /// A fresh session on the kept connection, ready for a request, and the peer's key.
    Use(HttpSessionV1, u64),
    /// Kept for another peer: give it back to the shared pool.
    Release(StickyUpstream),
    /// Closed, idle too long, or not reusable: already dropped.
    Gone,
}

impl StickyUpstream {
    pub(crate) async fn take_for(self, peer: &HttpPeer) -> Take {
        if self.key != peer.reuse_hash() {
            return Take::Release(self);
        }
        if self.expired() {
            return Take::Gone;
        }
        let mut h1 = self.h1;
        h1.respect_keepalive();
        let Some(mut stream) = h1.reuse().await else {
            return Take::Gone;
        };
        if !still_idle(&mut stream) {
            return Take::Gone;
        }
        Take::Use(HttpSessionV1::new_with_options(stream, peer), self.key)
    }
}

/// The pool's own test (pingora-core's `test_reusable_stream`): an idle upstream that has
/// anything to read has either closed or sent bytes nobody asked for; neither can carry the
/// next request.
fn still_idle(stream: &mut Stream) -> bool {
    let mut buf = [0u8; 1];
    // `unconstrained`: tokio's coop budget could make a ready read look pending.
    tokio::task::unconstrained(stream.read(&mut buf[..]))
        .now_or_never()
        .is_none()
}
