//! What a request's credential needs on its way out, from the moment it is planned: the token
//! fetched (and renewed once after an upstream 401), or the body read for signing or for the
//! replay; then the credential set on the outgoing request.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::prelude::Session;
use pingora::Result;

use super::limits::Reserved;
use super::replay::{self, Replay, Reserve, Whole};
use crate::connections::Use;
use crate::credentials::aws_sigv4::chunked::{ChunkError, Resigner};
use crate::credentials::aws_sigv4::{AwsSigV4, Payload, STREAMING_PAYLOAD};
use crate::credentials::{Credential, Injection};
use crate::errors::ProxyError;
use crate::tokens::{Slot, Token, TokenCache, TokenError};

/// What the planned credential needs.
pub enum Auth {
    /// No credential: the request goes out untouched.
    None,
    /// Fixed headers.
    Static(Arc<Injection>),
    Token(TokenAuth),
    Signed(SignedAuth),
}

/// A token from the cache, and the body kept for the one replay after a 401.
pub struct TokenAuth {
    token: Arc<Token>,
    /// The token's cache slot (the credential's, or its target host's).
    slot: Arc<Slot>,
    replay: Replay,
    stage: Stage,
    /// The memory the replay body holds, given back when the request ends.
    _held: Option<Reserved>,
}

/// Where a token request is in its one replay.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    First,
    /// The upstream answered 401 and a replay was asked for; pingora has not retried yet.
    Armed,
    /// The replay is under way (or was refused): no further one.
    Replayed,
}

/// A signature over each attempt, and the body it covers.
pub struct SignedAuth {
    signer: Arc<AwsSigV4>,
    body: SignedBody,
    /// The memory a whole body holds, given back when the request ends.
    _held: Option<Reserved>,
}

enum SignedBody {
    Whole(Bytes),
    /// UNSIGNED-PAYLOAD: the body streams as it comes.
    Unsigned,
    /// aws-chunked: each chunk re-signed as it streams; set up when the headers are signed.
    Chunked {
        resigner: Option<Box<Resigner>>,
        max_chunk: u64,
    },
}

/// How getting the credential ready ended (the client's own failures are the outer `Result`).
pub enum Prepared {
    Ready(Auth),
    Refused(ProxyError),
}

/// What `prepare` works on: the credential's name, what the request uses of it, and the
/// request's budget.
pub struct Planned<'a> {
    pub name: &'a Arc<str>,
    pub used: &'a Use,
    pub host: &'a str,
    pub max_body: u64,
}

/// Gets the planned credential ready: its token fetched, or the body read for a replay or
/// for signing.
pub async fn prepare(
    tokens: &TokenCache,
    session: &mut Session,
    planned: Option<Planned<'_>>,
    reserve: Reserve<'_>,
) -> Result<Prepared> {
    let Some(p) = planned else {
        return Ok(Prepared::Ready(Auth::None));
    };
    let max_body = p.max_body;
    match &p.used.credential {
        // Resolved before this: a per-tenant credential is never used as such. A client
        // certificate goes on the upstream connection (`peer`), not on the request.
        Credential::PerTenant(_) | Credential::ClientCert(_) => Ok(Prepared::Ready(Auth::None)),
        Credential::Static(inj) => Ok(Prepared::Ready(Auth::Static(inj.clone()))),
        Credential::Token(src) => {
            let slot = tokens.slot_for(p.name, p.used.tenant.as_ref(), src, p.host);
            let token = match tokens.get_in(&slot).await {
                Ok(t) => t,
                Err(e) => return Ok(Prepared::Refused(e.into())),
            };
            let (replay, held) = replay::prepare(session, max_body, reserve).await?;
            Ok(Prepared::Ready(Auth::Token(TokenAuth {
                token,
                slot,
                replay,
                stage: Stage::First,
                _held: held,
            })))
        }
        Credential::Signed(signer) => signing(session, signer, max_body, reserve).await,
    }
}

/// Gets the body ready for SigV4: read whole (hashed), or streamed as UNSIGNED-PAYLOAD.
async fn signing(
    session: &mut Session,
    signer: &Arc<AwsSigV4>,
    max_body: u64,
    reserve: Reserve<'_>,
) -> Result<Prepared> {
    let client = session
        .req_header()
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_uppercase)
        .unwrap_or_default();
    let signed = |body, held| {
        Prepared::Ready(Auth::Signed(SignedAuth {
            signer: signer.clone(),
            body,
            _held: held,
        }))
    };
    if client == "UNSIGNED-PAYLOAD" && signer.is_s3() {
        return Ok(signed(SignedBody::Unsigned, None));
    }
    if client == STREAMING_PAYLOAD && signer.is_s3() {
        // One chunk is held at a time; a chunk may be as large as a whole signed body.
        let body = SignedBody::Chunked {
            resigner: None,
            max_chunk: max_body,
        };
        return Ok(signed(body, None));
    }
    if client.starts_with("STREAMING-") {
        return Ok(Prepared::Refused(ProxyError::BadRequest(format!(
            "x-amz-content-sha256: {client} (aws-chunked) cannot be re-signed by credproxy: it \
             re-signs {STREAMING_PAYLOAD} uploads to S3; send those, single-part uploads, or \
             let the SDK use UNSIGNED-PAYLOAD"
        ))));
    }
    Ok(
        match replay::prepare_whole(session, max_body, reserve, signer.unsigned_payload).await? {
            Whole::Body(b, held) => signed(SignedBody::Whole(b), Some(held)),
            Whole::Chunked | Whole::TooLarge | Whole::OverBudget(_) if signer.unsigned_payload => {
                signed(SignedBody::Unsigned, None)
            }
            Whole::Chunked => Prepared::Refused(ProxyError::LengthRequired),
            Whole::TooLarge => Prepared::Refused(ProxyError::BodyTooLarge(max_body)),
            Whole::OverBudget(e) => Prepared::Refused(ProxyError::BuffersFull(e)),
        },
    )
}

impl Auth {
    /// The whole body read ahead, sent in place of pingora's copy on every attempt.
    pub fn whole_body(&self) -> Option<&Bytes> {
        match self {
            Auth::Token(TokenAuth {
                replay: Replay::Whole(b),
                ..
            })
            | Auth::Signed(SignedAuth {
                body: SignedBody::Whole(b),
                ..
            }) => Some(b),
            _ => None,
        }
    }

    /// Before an attempt goes out: a new token for the replay after a 401 (shared by the
    /// requests rejected with the same one), or the cached one again if ours expired while
    /// the body was read. A token is never sent past its expiry.
    pub async fn refresh_before_send(&mut self, tokens: &TokenCache) -> Result<(), TokenError> {
        let Auth::Token(t) = self else { return Ok(()) };
        if t.stage != Stage::First {
            t.token = tokens.renew_after_reject(&t.slot, &t.token).await?;
        } else if t.token.expires_at <= tokio::time::Instant::now() {
            t.token = tokens.get_in(&t.slot).await?;
        }
        Ok(())
    }

    /// The re-signing of an aws-chunked body, once its headers are signed.
    pub fn chunked_body(&mut self) -> Option<&mut Resigner> {
        match self {
            Auth::Signed(SignedAuth {
                body: SignedBody::Chunked { resigner, .. },
                ..
            }) => resigner.as_deref_mut(),
            _ => None,
        }
    }

    /// Passes one piece of an aws-chunked body on, re-signed.
    pub fn resign_chunk(
        &mut self,
        piece: Option<&[u8]>,
        end: bool,
    ) -> Option<Result<Option<Bytes>, ChunkError>> {
        self.chunked_body().map(|r| r.feed(piece, end))
    }

    /// Sets the credential on the outgoing request, whose client `Authorization` is gone.
    pub fn apply(&mut self, req: &mut RequestHeader, tls: bool) -> Result<(), ProxyError> {
        let header_error =
            |e: Box<pingora::Error>| ProxyError::CredentialUnavailable(e.to_string());
        match self {
            Auth::Static(inj) => inj.apply(req).map_err(header_error),
            Auth::Token(t) => req
                .insert_header(t.token.name.clone(), t.token.header.clone())
                .map_err(header_error),
            Auth::Signed(s) => {
                let now = std::time::SystemTime::now();
                let failed = |e: crate::credentials::aws_sigv4::SignError| {
                    ProxyError::CredentialUnavailable(e.to_string())
                };
                let payload = match &mut s.body {
                    SignedBody::Whole(b) => Payload::Bytes(b),
                    SignedBody::Unsigned => Payload::Unsigned,
                    SignedBody::Chunked {
                        resigner,
                        max_chunk,
                    } => {
                        let chunks = s.signer.sign_streaming(req, tls, now).map_err(failed)?;
                        *resigner = Some(Box::new(Resigner::new(chunks, *max_chunk)));
                        return Ok(());
                    }
                };
                s.signer.sign(req, tls, payload, now).map_err(failed)
            }
            Auth::None => Ok(()),
        }
    }

    /// The secrets `apply` sends, for response scrubbing: each header value's credential part
    /// (a signature is no secret; a session token is).
    pub fn sent_secrets(&self) -> Vec<String> {
        let values: Vec<&http::HeaderValue> = match self {
            Auth::Static(inj) => inj.values().collect(),
            Auth::Token(t) => vec![&t.token.header],
            Auth::Signed(s) => return s.signer.session_token().into_iter().collect(),
            Auth::None => Vec::new(),
        };
        values
            .into_iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(crate::scrub::stream::secrets_in_header)
            .collect()
    }

    /// What a placeholder `credproxy:NAME` is replaced by: the secret of the first header the
    /// credential sets (a token, an API key, a Basic password). None for a signature.
    pub fn placeholder_value(&self) -> Option<String> {
        let header = match self {
            Auth::Static(inj) => inj.values().next()?,
            Auth::Token(t) => &t.token.header,
            Auth::Signed(_) | Auth::None => return None,
        };
        Some(crate::credentials::secret_of_header(header.to_str().ok()?))
    }

    /// On an upstream 401: true when the request is replayed once with a new token. Otherwise
    /// the 401 goes to the client and the token is dropped, so the client's own retry gets a
    /// fresh one; a 401 to the replay itself, with a token fetched a moment ago, is the API's
    /// answer, not a stale token, and the token is kept.
    /// A 401 that `TokenCache::may_renew` refuses (the token was just renewed for one, or
    /// renewals are over their rate) goes to the client, token kept.
    pub fn on_unauthorized(&mut self, tokens: &TokenCache) -> bool {
        let Auth::Token(t) = self else { return false };
        if t.stage != Stage::First || !tokens.may_renew(&t.slot, &t.token) {
            return false;
        }
        if t.replay.possible() {
            t.stage = Stage::Armed;
            return true;
        }
        tokens.reject(&t.slot, &t.token);
        false
    }

    /// Whether pingora's next retry is the replay asked for by `on_unauthorized` (once).
    pub fn take_armed_replay(&mut self) -> bool {
        match self {
            Auth::Token(t) if t.stage == Stage::Armed => {
                t.stage = Stage::Replayed;
                true
            }
            _ => false,
        }
    }

    /// The one replay has happened: no other retry may follow.
    pub fn replayed(&self) -> bool {
        matches!(self, Auth::Token(t) if t.stage != Stage::First)
    }
}
