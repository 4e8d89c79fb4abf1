//! Request bodies that must survive a second attempt (the replay after an upstream 401).
//!
//! pingora keeps at most 64 KiB of a request body for retries. Content-Length bodies up to
//! `proxy.max_body` are therefore read whole before the request goes out; retry buffering is
//! switched on only for the last ≤64 KiB (an HTTP/1 read never exceeds the remaining length
//! or 64 KiB), so pingora's buffer ends complete, and `request_body_filter` swaps in the whole
//! body on each attempt. Chunked bodies and bodies over `max_body` stream as usual and are not
//! replayed.

use bytes::{Bytes, BytesMut};
use pingora::prelude::Session;
use pingora::protocols::http::ServerSession;
use pingora::{Error, ErrorType, Result};

use super::limits::{OverBudget, Reserved};

/// pingora's retry buffer limit (`BODY_BUF_LIMIT`, private in pingora-core).
pub const RETRY_BUFFER: u64 = 64 * 1024;

/// How a request's body can be sent again.
#[derive(Debug, Default)]
pub enum Replay {
    /// Not prepared (no token credential), or the body cannot be replayed.
    #[default]
    No,
    /// Empty or small: pingora's own retry buffer holds it.
    Buffered,
    /// Read in full here; substituted on every attempt.
    Whole(Bytes),
}

impl Replay {
    pub fn possible(&self) -> bool {
        !matches!(self, Replay::No)
    }
}

fn content_length(session: &mut Session) -> Option<u64> {
    let h = &session.req_header().headers;
    if h.contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    match h.get(http::header::CONTENT_LENGTH) {
        Some(v) => v.to_str().ok()?.trim().parse().ok(),
        // HTTP/2 frames its body without either, so there only a stream already ended is
        // known to be empty; an HTTP/2 body of unknown length is handled like a chunked one.
        None if session.req_header().version == http::Version::HTTP_2 => {
            session.is_body_empty().then_some(0)
        }
        // HTTP/1: no length and no chunking means no body.
        None => Some(0),
    }
}

/// The body is read now, so a client waiting for `100 Continue` is told to send it now; Expect
/// is not forwarded (the client would otherwise see a second 100).
async fn expect_continue(session: &mut Session) -> Result<()> {
    if expects_continue(session) {
        if let ServerSession::H1(h1) = session.as_downstream_mut() {
            h1.write_continue_response().await?;
        }
    }
    Ok(())
}

pub(super) fn expects_continue(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

/// Reserves memory for a body of the given length (see `limits::BufferBudget`).
pub type Reserve<'a> = &'a mut (dyn FnMut(u64) -> std::result::Result<Reserved, OverBudget> + Send);

/// Prepares the body for a possible replay. A body past the buffer budget streams instead,
/// without a replay: buffering it is a convenience, not a need. Errors are the client's (a
/// body shorter than its Content-Length, a hang-up).
pub async fn prepare(
    session: &mut Session,
    max_body: u64,
    reserve: Reserve<'_>,
) -> Result<(Replay, Option<Reserved>)> {
    let Some(len) = content_length(session) else {
        return Ok((Replay::No, None));
    };
    if len <= RETRY_BUFFER {
        session.enable_retry_buffering();
        return Ok((Replay::Buffered, None));
    }
    if len > max_body {
        return Ok((Replay::No, None));
    }
    let Ok(held) = reserve(len) else {
        tracing::debug!(
            len,
            "buffer budget spent: the body streams, without a 401 replay"
        );
        return Ok((Replay::No, None));
    };
    Ok((Replay::Whole(read_whole(session, len).await?), Some(held)))
}

/// What a signer gets: the whole body, or why not.
pub enum Whole {
    Body(Bytes, Reserved),
    /// Chunked (no length known in advance), and the signer would rather stream it
    /// unsigned than read it.
    Chunked,
    TooLarge,
    OverBudget(OverBudget),
}

/// Reads the whole body for signing (any size up to `max_body`), keeping it sendable. A body
/// of unknown length (chunked, HTTP/2) is read up to `max_body` too, unless `stream_unknown`:
/// then the signer streams it unsigned.
pub async fn prepare_whole(
    session: &mut Session,
    max_body: u64,
    reserve: Reserve<'_>,
    stream_unknown: bool,
) -> Result<Whole> {
    match content_length(session) {
        None if stream_unknown => Ok(Whole::Chunked),
        None => read_unknown(session, max_body, reserve).await,
        Some(len) if len > max_body => Ok(Whole::TooLarge),
        Some(len) => match reserve(len) {
            Err(e) => Ok(Whole::OverBudget(e)),
            Ok(held) => Ok(Whole::Body(read_whole(session, len).await?, held)),
        },
    }
}

/// Reads a body of unknown length whole, up to `max_body` (the budget grows with it). Sent as
/// it was read: pingora calls `request_body_filter` once, at its end (vendor/README.md).
async fn read_unknown(session: &mut Session, max_body: u64, reserve: Reserve<'_>) -> Result<Whole> {
    expect_continue(session).await?;
    let mut body = BytesMut::new();
    let mut held = match reserve(0) {
        Ok(h) => h,
        Err(e) => return Ok(Whole::OverBudget(e)),
    };
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
        let len = body.len() as u64;
        if len > max_body {
            return Ok(Whole::TooLarge);
        }
        // The budget is taken as the body grows (doubling, within max_body), never ahead of it.
        if held.bytes() < len {
            let target = (len * 2).clamp(RETRY_BUFFER, max_body);
            match reserve(target - held.bytes()) {
                Ok(more) => held.absorb(more),
                Err(e) => return Ok(Whole::OverBudget(e)),
            }
        }
    }
    Ok(Whole::Body(body.freeze(), held))
}

/// Reads exactly `len` bytes of body, with retry buffering switched on for the last ≤64 KiB so
/// pingora's own buffer (which is what it sends) ends complete.
async fn read_whole(session: &mut Session, len: u64) -> Result<Bytes> {
    if len == 0 {
        session.enable_retry_buffering();
        return Ok(Bytes::new());
    }
    expect_continue(session).await?;
    let len = usize::try_from(len)
        .map_err(|_| Error::explain(ErrorType::HTTPStatus(413), "body too large"))?;
    let mut body = BytesMut::with_capacity(len);
    let mut buffering = false;
    loop {
        if !buffering && (len - body.len()) as u64 <= RETRY_BUFFER {
            session.enable_retry_buffering();
            buffering = true;
        }
        match session.read_request_body().await? {
            Some(chunk) => body.extend_from_slice(&chunk),
            None => break,
        }
        if body.len() > len {
            return Err(Error::explain(
                ErrorType::HTTPStatus(400),
                "body longer than Content-Length",
            ));
        }
    }
    if body.len() != len {
        return Err(Error::explain(
            ErrorType::HTTPStatus(400),
            "body shorter than Content-Length",
        ));
    }
    Ok(body.freeze())
}
