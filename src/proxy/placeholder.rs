//! Placeholder secrets: SDKs that refuse to start without a key are given `credproxy:NAME` (or
//! `${credproxy:NAME}`) instead, as a header value, a Basic password or a query parameter.
//! The placeholder picks the route's credential NAME, and credproxy puts the real value in its
//! place for that request only. A placeholder that cannot be resolved is refused (400), never
//! forwarded: it would reach an API that logs it, or a host it was not meant for.

use std::borrow::Cow;

use base64::Engine;
use pingora::http::RequestHeader;

use crate::errors::ProxyError;

const PREFIX: &str = "credproxy:";

fn bad(msg: String) -> ProxyError {
    ProxyError::BadRequest(msg)
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// Each placeholder in `text`: (start, end, name), the `${...}` form included whole.
fn placeholders(text: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(PREFIX).map(|i| i + from) {
        let name_start = i + PREFIX.len();
        let len = text.as_bytes()[name_start..]
            .iter()
            .take_while(|&&b| is_name_byte(b))
            .count();
        let name_end = name_start + len;
        from = name_end.max(i + 1);
        if len == 0 {
            continue;
        }
        let wrapped = text[..i].ends_with("${") && text[name_end..].starts_with('}');
        let (start, end) = if wrapped {
            (i - 2, name_end + 1)
        } else {
            (i, name_end)
        };
        out.push((start, end, &text[name_start..name_end]));
    }
    out
}

/// `text` with every placeholder for `name` replaced by `value`.
fn replace<'a>(text: &'a str, name: &str, value: &str) -> Cow<'a, str> {
    let found = placeholders(text);
    if found.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + value.len());
    let mut done = 0;
    for (start, end, n) in found {
        if n == name {
            out.push_str(&text[done..start]);
            out.push_str(value);
            done = end;
        }
    }
    out.push_str(&text[done..]);
    Cow::Owned(out)
}

/// Whether `bytes` may hold a placeholder: one vectorised pass, so that the headers of a
/// request without any (nearly all) are not decoded and searched again.
fn may_hold(bytes: &[u8]) -> bool {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(PREFIX.as_bytes()));
    FINDER.find(bytes).is_some()
}

/// Headers a placeholder is looked for in: all but the proxy hop's own.
fn searched(name: &http::HeaderName) -> bool {
    name != http::header::PROXY_AUTHORIZATION && !name.as_str().starts_with("x-credproxy-")
}

/// The decoded `user:password` of a Basic `Authorization`, if it is one.
fn basic_pair(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    String::from_utf8(raw).ok()
}

/// The percent-decoded query values that may hold a placeholder.
fn query_values(query: &str) -> impl Iterator<Item = String> + '_ {
    query
        .split('&')
        .filter(|pair| pair.contains("credproxy"))
        .filter_map(|pair| {
            let value = pair.split_once('=').map_or(pair, |(_, v)| v);
            percent_decode(&value.replace('+', " "))
        })
}

fn percent_decode(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The credential the request's placeholders name; None when it has none. Placeholders naming
/// two different credentials are refused: a request uses one.
pub fn named(req: &RequestHeader, query: Option<&str>) -> Result<Option<String>, ProxyError> {
    let mut names: Vec<String> = Vec::new();
    let mut note = |text: &str| {
        for (_, _, n) in placeholders(text) {
            if !names.iter().any(|x| x == n) {
                names.push(n.to_string());
            }
        }
    };
    for (name, value) in req.headers.iter().filter(|(n, _)| searched(n)) {
        if may_hold(value.as_bytes()) {
            note(&String::from_utf8_lossy(value.as_bytes()));
        }
        if name == http::header::AUTHORIZATION {
            if let Some(pair) = basic_pair(value.as_bytes()) {
                note(&pair);
            }
        }
    }
    if let Some(q) = query.filter(|q| q.contains("credproxy")) {
        for v in query_values(q) {
            note(&v);
        }
    }
    match names.len() {
        0 => Ok(None),
        1 => Ok(names.pop()),
        _ => Err(bad(format!(
            "placeholders name several credentials ({}); a request uses one",
            names.join(", ")
        ))),
    }
}

/// Puts `value` in place of the placeholders for `name` in the request's headers (the client's
/// `Authorization` is already gone: the credential sets its own). None: the credential has no
/// single value (a signature), and a placeholder outside `Authorization` is refused.
pub fn fill_headers(
    req: &mut RequestHeader,
    name: &str,
    value: Option<&str>,
) -> Result<(), ProxyError> {
    let mut changed: Vec<(http::HeaderName, Vec<http::HeaderValue>)> = Vec::new();
    for header in req.headers.keys().filter(|n| searched(n)) {
        let all = req.headers.get_all(header);
        let holds = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).contains(PREFIX);
        if !all.iter().any(holds) {
            continue;
        }
        let Some(value) = value else {
            return Err(no_value(name, &format!("header {header}")));
        };
        let mut values = Vec::new();
        for v in all {
            let text = String::from_utf8_lossy(v.as_bytes());
            let filled = replace(&text, name, value);
            let mut hv = http::HeaderValue::from_str(&filled).map_err(|_| {
                bad(format!(
                    "header {header}: the filled-in value is not a valid header value"
                ))
            })?;
            hv.set_sensitive(true);
            values.push(hv);
        }
        changed.push((header.clone(), values));
    }
    for (header, values) in changed {
        req.remove_header(&header);
        for v in values {
            req.append_header(header.clone(), v)
                .map_err(|e| bad(e.to_string()))?;
        }
    }
    Ok(())
}

/// `path_and_query` with the placeholders for `name` in query values replaced by `value`,
/// percent-encoded; the other parameters are left byte for byte (a signature covers them).
pub fn fill_query(
    path_and_query: &str,
    name: &str,
    value: Option<&str>,
) -> Result<String, ProxyError> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return Ok(path_and_query.to_string());
    };
    if !query.contains("credproxy") {
        return Ok(path_and_query.to_string());
    }
    let mut out = format!("{path}?");
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (key, raw) = match pair.split_once('=') {
            Some((k, v)) => (Some(k), v),
            None => (None, pair),
        };
        let decoded = percent_decode(&raw.replace('+', " "));
        let filled = decoded.as_deref().filter(|d| !placeholders(d).is_empty());
        let Some(d) = filled else {
            out.push_str(pair);
            continue;
        };
        let Some(value) = value else {
            return Err(no_value(name, "the query"));
        };
        if let Some(k) = key {
            out.push_str(k);
            out.push('=');
        }
        out.push_str(&crate::scrub::percent_encode(&replace(d, name, value)));
    }
    Ok(out)
}

fn no_value(name: &str, place: &str) -> ProxyError {
    bad(format!(
        "a placeholder for credential `{name}` in {place} cannot be filled in: the credential \
         signs requests and has no single value; send any value there (credproxy signs)"
    ))
}

#[cfg(test)]
mod tests;
