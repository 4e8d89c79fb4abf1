//! What a route's scope refuses: requests whose meaning an origin could read differently from
//! the route that matched them, stretching a credential past its `path` or `methods`.
//!
//! Paths: dot segments and backslashes always; on a path-scoped route also encoded or
//! multiply-encoded slashes, dots and control characters, malformed or overlong escapes, empty
//! segments, and rewrite headers (`X-Original-URL`) that some servers route by. Methods: on a
//! method-scoped route, every way frameworks take a method from elsewhere than the request
//! line (override headers in any spelling, `_method` in the query or a form body).
//! Clients never send these; only crafted requests are refused.

use std::borrow::Cow;

use pingora::http::RequestHeader;

use crate::errors::ProxyError;

fn bad(msg: impl Into<String>) -> ProxyError {
    ProxyError::BadRequest(msg.into())
}

/// How many times a path is decoded to look for what an origin that decodes repeatedly sees.
const MAX_DECODES: usize = 4;

/// Checks a request path (no query) against the rules of its route's scope.
pub fn check_path(path: &str, path_scoped: bool) -> Result<(), ProxyError> {
    check_level(path, path_scoped)?;
    if !path_scoped {
        return Ok(());
    }
    check_escapes(path)?;
    let mut level = Cow::Borrowed(path);
    for _ in 0..MAX_DECODES {
        let next = decode(&level)?;
        if next == level {
            return Ok(());
        }
        if next.bytes().any(|b| b.is_ascii_control()) {
            return Err(bad("an encoded control character in a path-scoped route"));
        }
        check_level(&next, true).map_err(|_| {
            bad("a multiply-encoded dot, slash or backslash in a path-scoped route")
        })?;
        level = Cow::Owned(next);
    }
    Err(bad(format!(
        "a path encoded more than {MAX_DECODES} times in a path-scoped route"
    )))
}

/// The rules for one (possibly decoded) form of the path.
fn check_level(path: &str, path_scoped: bool) -> Result<(), ProxyError> {
    if path.contains('\\') {
        return Err(bad("backslash in path"));
    }
    // `;` starts path parameters that some servers drop before resolving (`/v1/..;/admin`).
    if path.split('/').any(is_dot_segment) {
        return Err(bad("dot segments (`.` or `..`) in path"));
    }
    if path_scoped {
        if contains_escape(path, b'2', b'f') || contains_escape(path, b'5', b'c') {
            return Err(bad("encoded slash or backslash in a path-scoped route"));
        }
        // An origin that merges slashes could read `/a//b` differently from the route.
        if path.contains("//") {
            return Err(bad("empty path segment (`//`) in a path-scoped route"));
        }
    }
    Ok(())
}

/// `.` or `..`, each dot possibly written `%2e` (any case), before any `;` or `%3b` path
/// parameter. Allocation-free: it runs on every segment of every request.
fn is_dot_segment(seg: &str) -> bool {
    let b = seg.as_bytes();
    // A dot segment starts with its first dot; most segments are over at their first byte.
    if !matches!(b.first(), Some(b'.' | b'%')) {
        return false;
    }
    let end = (0..b.len())
        .find(|&i| b[i] == b';' || is_escape(&b[i..], b'3', b'b'))
        .unwrap_or(b.len());
    let (mut rest, mut dots) = (&b[..end], 0);
    while !rest.is_empty() && dots < 3 {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            _ if is_escape(rest, b'2', b'e') => &rest[3..],
            _ => return false,
        };
        dots += 1;
    }
    rest.is_empty() && (dots == 1 || dots == 2)
}

/// `b` starts with `%` and the two hex digits `hi lo` (`lo` in either case).
fn is_escape(b: &[u8], hi: u8, lo: u8) -> bool {
    matches!(b, [b'%', h, l, ..] if *h == hi && l.eq_ignore_ascii_case(&lo))
}

fn contains_escape(path: &str, hi: u8, lo: u8) -> bool {
    let b = path.as_bytes();
    path.match_indices('%')
        .any(|(i, _)| is_escape(&b[i..], hi, lo))
}

/// Every `%` starts two hex digits (`%u002e`, `%2%65` and `%%32` are refused), and none
/// encodes a control character.
fn check_escapes(path: &str) -> Result<(), ProxyError> {
    let b = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        match (b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                if hex(h) < 2 || (h, l) == (b'7', b'f') || (h, l) == (b'7', b'F') {
                    return Err(bad("an encoded control character in a path-scoped route"));
                }
            }
            _ => {
                return Err(bad(
                    "`%` not followed by two hex digits in a path-scoped route",
                ))
            }
        }
    }
    Ok(())
}

fn hex(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        b'A'..=b'F' => d - b'A' + 10,
        _ => 0,
    }
}

/// One round of percent-decoding, leniently (a stray `%` stays); the result must be UTF-8,
/// which refuses overlong forms such as `%c0%ae`.
fn decode(path: &str) -> Result<String, ProxyError> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1), b.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                out.push(hex(h) << 4 | hex(l));
                i += 3;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| bad("an overlong or invalid UTF-8 escape in a path-scoped route"))
}

/// Headers some servers and gateways route by instead of the request line.
const REWRITE_HEADERS: [&str; 3] = ["x-original-url", "x-rewrite-url", "x-original-uri"];

/// Headers many frameworks read as the real method.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The request's headers and query against its route's scope.
pub fn check_request(
    req: &RequestHeader,
    query: Option<&str>,
    path_scoped: bool,
    method_scoped: bool,
) -> Result<(), ProxyError> {
    for name in req.headers.keys() {
        // Many servers (CGI, WSGI, Rack) read `_` in header names as `-`.
        let n = name.as_str().replace('_', "-");
        if path_scoped && REWRITE_HEADERS.contains(&n.as_str()) {
            return Err(bad(format!("`{name}` on a path-scoped route")));
        }
        if method_scoped && METHOD_OVERRIDES.contains(&n.as_str()) {
            return Err(bad(format!("`{name}` on a route limited to some methods")));
        }
    }
    if method_scoped && query.is_some_and(has_method_param) {
        return Err(bad(
            "`_method` in the query on a route limited to some methods",
        ));
    }
    Ok(())
}

/// Whether a query or form body names `_method` (in any encoding of the key).
fn has_method_param(form: &str) -> bool {
    form.split(['&', ';'])
        .any(|pair| is_method_key(pair.split('=').next().unwrap_or("").as_bytes()))
}

fn is_method_key(key: &[u8]) -> bool {
    let plus = String::from_utf8_lossy(key).replace('+', " ");
    decode(&plus).is_ok_and(|k| k.trim().eq_ignore_ascii_case("_method"))
}

/// Watches a form body on a method-scoped route for a `_method` field, across chunks: an
/// `application/x-www-form-urlencoded` key, or a `multipart/form-data` part named so.
#[derive(Debug)]
pub enum FormScan {
    /// The key being read (bytes since the last `&`), up to `MAX_KEY`; `None` in a value.
    Urlencoded { key: Option<Vec<u8>> },
    /// The last bytes of the previous chunk, so a name split across chunks is still seen.
    Multipart { tail: Vec<u8> },
}

/// Longer keys cannot be `_method`, even fully percent-encoded.
const MAX_KEY: usize = 32;
const PART_NAME: &[u8] = b"name=\"_method\"";

impl FormScan {
    /// For a request whose body frameworks could take a method from.
    pub fn for_request(req: &RequestHeader) -> Option<FormScan> {
        let ct = req.headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
        let ct = ct.to_ascii_lowercase();
        if ct.starts_with("application/x-www-form-urlencoded") {
            Some(FormScan::Urlencoded {
                key: Some(Vec::new()),
            })
        } else if ct.starts_with("multipart/form-data") {
            Some(FormScan::Multipart { tail: Vec::new() })
        } else {
            None
        }
    }

    /// Reads the next chunk; an error once a `_method` field is seen.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ProxyError> {
        let found = match self {
            FormScan::Urlencoded { key } => chunk.iter().any(|&b| urlencoded_byte(key, b)),
            FormScan::Multipart { tail } => {
                let mut window = std::mem::take(tail);
                window.extend_from_slice(chunk);
                let found = window
                    .to_ascii_lowercase()
                    .windows(PART_NAME.len())
                    .any(|w| w == PART_NAME);
                let keep = window.len().saturating_sub(PART_NAME.len());
                *tail = window.split_off(keep);
                found
            }
        };
        if found {
            return Err(bad(
                "a `_method` field in the body on a route limited to some methods",
            ));
        }
        Ok(())
    }
}

/// One byte of an urlencoded body; true when it ends a key that is `_method`.
fn urlencoded_byte(key: &mut Option<Vec<u8>>, b: u8) -> bool {
    match (key.as_mut(), b) {
        (Some(k), b'=' | b'&' | b';') => {
            let hit = is_method_key(k);
            *key = (b != b'=').then(Vec::new);
            hit
        }
        (Some(k), _) => {
            if k.len() < MAX_KEY {
                k.push(b);
            }
            false
        }
        (None, b'&' | b';') => {
            *key = Some(Vec::new());
            false
        }
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule as first written (lowercase, decode dots, cut parameters): the fast form must
    /// agree with it on every segment.
    fn dot_segment_reference(seg: &str) -> bool {
        let d = seg.to_ascii_lowercase().replace("%2e", ".");
        let d = d.split(';').next().unwrap_or("");
        let d = d.split("%3b").next().unwrap_or("");
        d == "." || d == ".."
    }

    proptest::proptest! {
        #[test]
        fn dot_segments_match_the_reference(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![".", "%2e", "%2E", ";", "%3b", "%3B", "a", "%", "2", "e", "%2", "3b"]),
                0..7,
            )
        ) {
            let seg = parts.concat();
            proptest::prop_assert_eq!(is_dot_segment(&seg), dot_segment_reference(&seg), "{}", seg);
        }

        #[test]
        fn escape_search_matches_lowercasing(
            parts in proptest::collection::vec(
                proptest::sample::select(vec!["%2f", "%2F", "%5c", "%5C", "%", "2", "f", "/", "a"]),
                0..7,
            )
        ) {
            let p = parts.concat();
            let lower = p.to_ascii_lowercase();
            proptest::prop_assert_eq!(
                contains_escape(&p, b'2', b'f') || contains_escape(&p, b'5', b'c'),
                lower.contains("%2f") || lower.contains("%5c")
            );
        }
    }

    #[test]
    fn stretching_forms_are_refused_on_path_scoped_routes() {
        for p in [
            "/api/%2%65%2%65/admin",
            "/api/%%32%65%%32%65/admin",
            "/api/%25252e%25252e/admin",
            "/api/%252e%252e/admin",
            "/api/..%00/admin",
            "/api/..%09/admin",
            "/api/%u002e%u002e/admin",
            "/api/%c0%ae%c0%ae/admin",
            "/api/%e0%80%ae/admin",
            "/api/%2500/x",
            "/api/%25%32%65%25%32%65/admin",
            "/api/a%252fb",
            "/api/a%25255cb",
            "/api/%7f",
            "/api/x%",
            "/api/x%4",
        ] {
            assert!(check_path(p, true).is_err(), "{p}");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for p in [
            "/api/v1/users",
            "/api/files/report%20q3.pdf",
            "/api/100%25",
            "/api/caf%C3%A9",
            "/api/a+b",
            "/api/x.json",
            "/api/.well-known",
        ] {
            assert!(check_path(p, true).is_ok(), "{p}");
        }
        assert!(
            check_path("/a/%2e%2e/b", false).is_err(),
            "dot segments everywhere"
        );
        assert!(
            check_path("/a/%2f", false).is_ok(),
            "encoded slashes only when path-scoped"
        );
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/api/x", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn method_and_rewrite_overrides_in_every_spelling() {
        for h in [
            "X-HTTP-Method-Override",
            "X_HTTP_Method_Override",
            "x-http-method",
            "X-Method-Override",
        ] {
            assert!(
                check_request(&req(&[(h, "DELETE")]), None, false, true).is_err(),
                "{h}"
            );
            assert!(
                check_request(&req(&[(h, "DELETE")]), None, false, false).is_ok(),
                "{h}"
            );
        }
        for h in [
            "X-Original-URL",
            "X-Rewrite-URL",
            "X_Original_URL",
            "X-Original-URI",
        ] {
            assert!(
                check_request(&req(&[(h, "/admin")]), None, true, false).is_err(),
                "{h}"
            );
        }
        for q in [
            "_method=DELETE",
            "a=1&_method=DELETE",
            "%5Fmethod=DELETE",
            "a=1;_METHOD=PUT",
        ] {
            assert!(
                check_request(&req(&[]), Some(q), false, true).is_err(),
                "{q}"
            );
        }
        assert!(check_request(&req(&[]), Some("method=x&my_method=y"), false, true).is_ok());
    }

    fn scan(ct: &str, chunks: &[&str]) -> Result<(), ProxyError> {
        let mut s = FormScan::for_request(&req(&[("content-type", ct)])).unwrap();
        chunks.iter().try_for_each(|c| s.feed(c.as_bytes()))
    }

    #[test]
    fn method_fields_in_bodies_are_seen_across_chunks() {
        let form = "application/x-www-form-urlencoded";
        assert!(scan(form, &["a=1&_method=DELETE"]).is_err());
        assert!(scan(form, &["a=1&_me", "thod=DELETE"]).is_err());
        assert!(scan(form, &["_method", "=PUT"]).is_err());
        assert!(scan(form, &["a=1&%5F", "method=PUT"]).is_err());
        assert!(
            scan(form, &["a=_method&b=x_method=1"]).is_ok(),
            "values are not keys"
        );
        let mp = "multipart/form-data; boundary=xx";
        assert!(scan(
            mp,
            &[
                "--xx\r\nContent-Disposition: form-data; name=\"_met",
                "hod\"\r\n\r\nDELETE"
            ]
        )
        .is_err());
        assert!(scan(
            mp,
            &["--xx\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n_method"]
        )
        .is_ok());
        assert!(FormScan::for_request(&req(&[("content-type", "application/json")])).is_none());
    }
}
