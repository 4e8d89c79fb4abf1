//! Removes from an endpoint's answer every form in which credproxy sent it a secret: raw,
//! form- and percent-encoded, JSON-escaped, and base64 (standard and URL-safe, with and
//! without padding, as in a Basic header). Endpoints quote what they received in error
//! texts, and those texts reach clients, logs and `/credentials`.
//!
//! Scrubbing runs on the text exactly as received, before it is normalised or cut: a control
//! character removed first would turn `ab<TAB>cd` into a string that no longer matches.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

use crate::secret::Secret;

pub mod stream;

/// Forms shorter than this are not searched for: they would blank out ordinary words.
/// (Secrets sent to token endpoints are at least 8 characters: config load refuses shorter.)
const MIN_FORM: usize = 4;

/// What replaces a secret.
pub const MASK: &str = "***";

pub struct Scrubber {
    /// Longest first, so a form containing another is replaced whole.
    forms: Vec<String>,
}

impl Scrubber {
    /// For the values sent: secrets, and the exact `id:secret` pair of a Basic header.
    pub fn new(sent: &[Secret]) -> Self {
        let mut forms: Vec<String> = sent.iter().flat_map(|s| forms_of(s.expose())).collect();
        forms.retain(|f| f.len() >= MIN_FORM);
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        Scrubber { forms }
    }

    /// `text` with every form of every secret replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for f in &self.forms {
            if out.contains(f.as_str()) {
                out = out.replace(f.as_str(), MASK);
            }
        }
        out
    }
}

fn forms_of(v: &str) -> Vec<String> {
    let mut f = vec![
        v.to_string(),
        url::form_urlencoded::byte_serialize(v.as_bytes()).collect(),
        percent_encode(v),
        json_escape(v),
    ];
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        f.push(engine.encode(v));
    }
    f
}

/// RFC 3986: unreserved characters stay, every other byte is `%XX` (as SigV4 query strings and
/// strict clients encode).
pub fn percent_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The string as it appears inside a JSON string literal.
fn json_escape(v: &str) -> String {
    let quoted = serde_json::to_string(v).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub(secrets: &[&str], text: &str) -> String {
        let s: Vec<Secret> = secrets.iter().map(|v| Secret::new(*v)).collect();
        Scrubber::new(&s).scrub(text)
    }

    #[test]
    fn every_form_sent_is_removed() {
        let secret = "p@ss w/rd\tx+y\"z";
        let pair = "client%3A1:p%40ss+w%2Frd%09x%2By%22z";
        let forms = [
            secret.to_string(),
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
            percent_encode(secret),
            json_escape(secret),
            format!("Basic {}", STANDARD.encode(pair)),
            URL_SAFE_NO_PAD.encode(pair),
            STANDARD_NO_PAD.encode(pair),
        ];
        for f in forms {
            let text = format!("invalid_client: got [{f}] here");
            let out = scrub(&[secret, pair], &text);
            assert!(!out.contains(&f), "{f} survived: {out}");
            assert!(out.contains(MASK), "{out}");
        }
    }

    #[test]
    fn short_forms_and_other_text_are_left_alone() {
        assert_eq!(scrub(&["abc"], "abc abcabc"), "abc abcabc");
        assert_eq!(scrub(&["longsecret"], "nothing to see"), "nothing to see");
        assert_eq!(scrub(&["longsecret"], "a longsecret b"), "a *** b");
    }

    #[test]
    fn the_longest_form_wins() {
        // The pair contains the secret: replaced whole, no fragment of its base64 left.
        let out = scrub(&["secret-value", "id:secret-value"], "id:secret-value");
        assert_eq!(out, MASK);
    }
}
