//! SigV4 header signing of the common request without the `aws-sigv4` crate's per-request
//! work: the signing key (four HMACs) is kept per day, and the canonical request is written in
//! one buffer. Only requests whose canonical form is the identity are taken: a path and query
//! of unreserved characters (nothing to encode, no dot segments or `//` to normalise),
//! `key=value` query pairs, header values without spaces to trim, no header given twice.
//! Everything else goes to `aws-sigv4`; a proptest holds both to the same `Authorization`.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use http::header::{HeaderName, AUTHORIZATION};
use pingora::http::RequestHeader;
use ring::{digest, hmac};

use super::chunked::hex;

/// What a request is signed with, besides the request itself.
pub struct Keys<'a> {
    pub access_key_id: &'a str,
    pub secret: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
    pub service: &'a str,
    /// S3: the payload hash is sent and signed as `x-amz-content-sha256`.
    pub payload_hash_header: bool,
}

/// The signing key of one day, kept until the day changes.
#[derive(Default)]
pub struct KeyCache {
    current: ArcSwapOption<(String, hmac::Key)>,
}

impl KeyCache {
    fn key(&self, keys: &Keys<'_>, day: &str, time: SystemTime) -> Arc<(String, hmac::Key)> {
        if let Some(k) = self.current.load_full().filter(|k| k.0 == day) {
            return k;
        }
        let raw = aws_sigv4::sign::v4::generate_signing_key(keys.secret, time, keys.region, keys.service);
        let k = Arc::new((day.to_string(), hmac::Key::new(hmac::HMAC_SHA256, raw.as_ref())));
        self.current.store(Some(k.clone()));
        k
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// A path whose canonical form (single or double encoded, normalised or not) is itself.
fn plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path.bytes().all(|b| unreserved(b) || b == b'/')
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..")
}

/// The canonical query string, when the query is already canonical but for its order.
fn plain_query(query: Option<&str>) -> Option<String> {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return Some(String::new());
    };
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=')?;
        if k.is_empty() || !k.bytes().chain(v.bytes()).all(unreserved) {
            return None;
        }
        pairs.push((k, v));
    }
    pairs.sort_unstable();
    let mut out = String::with_capacity(q.len());
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    Some(out)
}

pub const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
pub const X_AMZ_CONTENT_SHA256: HeaderName = HeaderName::from_static("x-amz-content-sha256");
pub const X_AMZ_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");

/// Appends `n` in decimal, zero-padded to `width` digits (`format!` costs more than the
/// rest of the timestamp).
fn push_padded(out: &mut String, n: u32, width: u32) {
    for i in (0..width).rev() {
        let digit = (n / 10u32.pow(i)) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// `20150830T123600Z` and `20150830`.
fn timestamp(time: SystemTime) -> (String, String) {
    let t = time::OffsetDateTime::from(time);
    let mut full = String::with_capacity(16);
    push_padded(&mut full, u32::try_from(t.year()).unwrap_or(0), 4);
    push_padded(&mut full, u32::from(u8::from(t.month())), 2);
    push_padded(&mut full, u32::from(t.day()), 2);
    let day = full.clone();
    full.push('T');
    for part in [t.hour(), t.minute(), t.second()] {
        push_padded(&mut full, u32::from(part), 2);
    }
    full.push('Z');
    (full, day)
}

/// The headers to sign, sorted, as (name, value); None when one needs canonicalising.
fn signed_headers<'a>(
    req: &'a RequestHeader,
    excluded: &[&str],
    added: &[(&'a str, &'a str)],
) -> Option<Vec<(&'a str, &'a str)>> {
    let mut out: Vec<(&str, &str)> = added.to_vec();
    for (name, value) in req.headers.iter() {
        let name = name.as_str();
        if excluded.contains(&name) {
            continue;
        }
        let v = value.to_str().ok()?;
        if v.starts_with(' ') || v.ends_with(' ') || v.contains("  ") {
            return None;
        }
        out.push((name, v));
    }
    out.sort_unstable_by(|a, b| a.0.cmp(b.0));
    if out.windows(2).any(|w| w[0].0 == w[1].0) {
        return None; // a repeated header is joined with commas: left to aws-sigv4
    }
    Some(out)
}

/// The headers signing adds (`x-amz-date`, `x-amz-content-sha256` for S3, the session token,
/// `authorization`), or None when the request is not one this signs.
pub fn sign(
    cache: &KeyCache,
    keys: &Keys<'_>,
    req: &RequestHeader,
    path_and_query: &str,
    payload_hash: &str,
    excluded: &[&str],
    time: SystemTime,
) -> Option<Vec<(HeaderName, String)>> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    if !plain_path(path) || !req.headers.contains_key(http::header::HOST) {
        return None;
    }
    let query = plain_query(query)?;
    let (date_time, day) = timestamp(time);
    let mut added: Vec<(&str, &str)> = vec![("x-amz-date", &date_time)];
    if keys.payload_hash_header {
        added.push(("x-amz-content-sha256", payload_hash));
    }
    if let Some(t) = keys.session_token {
        added.push(("x-amz-security-token", t));
    }
    let headers = signed_headers(req, excluded, &added)?;
    let mut creq = String::with_capacity(512);
    creq.push_str(req.method.as_str());
    creq.push('\n');
    creq.push_str(path);
    creq.push('\n');
    creq.push_str(&query);
    creq.push('\n');
    let mut names = String::with_capacity(128);
    for (i, (n, v)) in headers.iter().enumerate() {
        creq.push_str(n);
        creq.push(':');
        creq.push_str(v);
        creq.push('\n');
        if i > 0 {
            names.push(';');
        }
        names.push_str(n);
    }
    creq.push('\n');
    creq.push_str(&names);
    creq.push('\n');
    creq.push_str(payload_hash);
    let scope = [&day, "/", keys.region, "/", keys.service, "/aws4_request"].concat();
    let creq_hash = hex(digest::digest(&digest::SHA256, creq.as_bytes()).as_ref());
    let to_sign = ["AWS4-HMAC-SHA256\n", &date_time, "\n", &scope, "\n", &creq_hash].concat();
    let key = cache.key(keys, &day, time);
    let signature = hex(hmac::sign(&key.1, to_sign.as_bytes()).as_ref());
    let authorization = [
        "AWS4-HMAC-SHA256 Credential=",
        keys.access_key_id,
        "/",
        &scope,
        ", SignedHeaders=",
        &names,
        ", Signature=",
        &signature,
    ]
    .concat();
    let mut out = Vec::with_capacity(4);
    out.push((X_AMZ_DATE, date_time));
    if keys.payload_hash_header {
        out.push((X_AMZ_CONTENT_SHA256, payload_hash.to_string()));
    }
    if let Some(t) = keys.session_token {
        out.push((X_AMZ_SECURITY_TOKEN, t.to_string()));
    }
    out.push((AUTHORIZATION, authorization));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_paths_and_queries_are_taken() {
        assert!(plain_path("/bucket/key.bin"));
        assert!(plain_path("/"));
        for p in ["/a//b", "/a/./b", "/a/../b", "/a%20b", "/a b", "/a+b", "relative"] {
            assert!(!plain_path(p), "{p}");
        }
        assert_eq!(plain_query(Some("b=2&a=1&a=0")).as_deref(), Some("a=0&a=1&b=2"));
        assert_eq!(plain_query(None).as_deref(), Some(""));
        for q in ["a", "a=%20", "a=b+c", "=v", "a=b c"] {
            assert_eq!(plain_query(Some(q)), None, "{q}");
        }
    }

    #[test]
    fn timestamps_are_sigv4_shaped() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        assert_eq!(timestamp(t), ("20150830T123600Z".into(), "20150830".into()));
    }
}
