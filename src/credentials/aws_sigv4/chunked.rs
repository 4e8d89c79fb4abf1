//! aws-chunked uploads (`x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, the SDKs'
//! streaming and multipart uploads), re-signed chunk by chunk while they stream.
//!
//! Each chunk is `hex-size;chunk-signature=<64 hex>\r\n<data>\r\n`, ending with a chunk of
//! size 0. Its signature chains from the request's own (the seed) over the chunk's SHA-256
//! (AWS S3 API, "Signature Calculations for the Authorization Header: Transferring Payload in
//! Multiple Chunks"). The client signed with a placeholder key, so every signature is
//! replaced by credproxy's. A signature sits before its data, so one chunk is held at a time:
//! memory is bounded by the chunk size, whatever the upload's size. The re-signed body has
//! exactly the length of the client's (same size field, a signature of the same length), so
//! the `Content-Length` the client sent stays true.

use bytes::{Bytes, BytesMut};
use ring::{digest, hmac};

/// The SHA-256 of nothing, which every chunk's string to sign carries.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SIG_FIELD: &[u8] = b";chunk-signature=";
/// A chunk header longer than this is not one (hex size, the field, 64 hex digits).
const MAX_HEADER: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("aws-chunked body: malformed chunk header")]
    Header,
    #[error("aws-chunked body: a chunk of {0} bytes is over the limit of {1} bytes")]
    TooLarge(u64, u64),
    #[error("aws-chunked body: chunk data not followed by CRLF")]
    Framing,
    #[error("aws-chunked body: it ended in the middle of a chunk")]
    Truncated,
    #[error("aws-chunked body: data after the final chunk")]
    Trailing,
}

/// Signs the chunks of one request, each chained to the previous signature.
pub struct ChunkSigner {
    key: hmac::Key,
    /// `x-amz-date` of the request.
    timestamp: String,
    /// `YYYYMMDD/region/service/aws4_request`.
    scope: String,
    previous: String,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

impl ChunkSigner {
    /// From the signing key of the request's day, region and service, its `x-amz-date`, and
    /// the signature of its headers (the seed).
    pub fn new(signing_key: &[u8], timestamp: &str, region: &str, service: &str, seed: &str) -> Self {
        let day = timestamp.get(..8).unwrap_or(timestamp);
        ChunkSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, signing_key),
            timestamp: timestamp.to_string(),
            scope: format!("{day}/{region}/{service}/aws4_request"),
            previous: seed.to_string(),
        }
    }

    /// The next chunk's signature.
    pub fn sign(&mut self, data: &[u8]) -> String {
        let to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{}",
            self.timestamp,
            self.scope,
            self.previous,
            hex(digest::digest(&digest::SHA256, data).as_ref())
        );
        self.previous = hex(hmac::sign(&self.key, to_sign.as_bytes()).as_ref());
        self.previous.clone()
    }
}

/// One request body being re-signed as it streams.
pub struct Resigner {
    signer: ChunkSigner,
    /// Bytes received and not yet passed on: at most one chunk and the next one's start.
    pending: BytesMut,
    max_chunk: u64,
    finished: bool,
}

/// A complete chunk at the start of a buffer: where its size field ends, its data, and its
/// whole length.
struct Parsed {
    size_field: usize,
    data_start: usize,
    data_len: usize,
    total: usize,
}

impl Resigner {
    pub fn new(signer: ChunkSigner, max_chunk: u64) -> Self {
        Resigner {
            signer,
            pending: BytesMut::new(),
            max_chunk,
            finished: false,
        }
    }

    /// The first chunk in `pending`, if it has all arrived.
    fn parse(&self) -> Result<Option<Parsed>, ChunkError> {
        let buf = &self.pending[..];
        let Some(eol) = buf.windows(2).take(MAX_HEADER).position(|w| w == b"\r\n") else {
            return if buf.len() >= MAX_HEADER {
                Err(ChunkError::Header)
            } else {
                Ok(None)
            };
        };
        let header = &buf[..eol];
        let size_field = header
            .windows(SIG_FIELD.len())
            .position(|w| w == SIG_FIELD)
            .ok_or(ChunkError::Header)?;
        let signature = &header[size_field + SIG_FIELD.len()..];
        if signature.len() != 64 || !signature.iter().all(u8::is_ascii_hexdigit) {
            return Err(ChunkError::Header);
        }
        let size = std::str::from_utf8(&header[..size_field])
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= 16)
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or(ChunkError::Header)?;
        if size > self.max_chunk {
            return Err(ChunkError::TooLarge(size, self.max_chunk));
        }
        let data_len = usize::try_from(size).map_err(|_| ChunkError::Header)?;
        let data_start = eol + 2;
        let total = data_start + data_len + 2;
        if buf.len() < total {
            return Ok(None);
        }
        if &buf[total - 2..total] != b"\r\n" {
            return Err(ChunkError::Framing);
        }
        Ok(Some(Parsed {
            size_field,
            data_start,
            data_len,
            total,
        }))
    }

    /// Takes the next piece of the client's body; returns what can go upstream now (each
    /// complete chunk, re-signed). At the end of the body, anything incomplete is an error.
    pub fn feed(&mut self, piece: Option<&[u8]>, end: bool) -> Result<Option<Bytes>, ChunkError> {
        if let Some(p) = piece {
            if self.finished && !p.is_empty() {
                return Err(ChunkError::Trailing);
            }
            self.pending.extend_from_slice(p);
        }
        let mut out = BytesMut::new();
        while !self.finished {
            let Some(c) = self.parse()? else { break };
            let chunk = self.pending.split_to(c.total);
            let data = &chunk[c.data_start..c.data_start + c.data_len];
            let signature = self.signer.sign(data);
            out.extend_from_slice(&chunk[..c.size_field]);
            out.extend_from_slice(SIG_FIELD);
            out.extend_from_slice(signature.as_bytes());
            out.extend_from_slice(&chunk[c.data_start - 2..]);
            self.finished = c.data_len == 0;
        }
        if self.finished && !self.pending.is_empty() {
            return Err(ChunkError::Trailing);
        }
        if end && !self.finished {
            return Err(ChunkError::Truncated);
        }
        Ok((!out.is_empty()).then(|| out.freeze()))
    }
}

#[cfg(test)]
mod tests;
