//! Response scrubbing (`routes[].scrub_responses`): an upstream that echoes the secret credproxy
//! sent it (error pages, debug endpoints) has it replaced by the credential's placeholder,
//! `credproxy:NAME`, in its headers and in its body as it streams, across chunk boundaries.
//!
//! Memory stays bounded: only the last `longest form - 1` bytes of what arrived are held back
//! (a secret may start there and end in the next chunk); everything before them goes on at once.

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::{Bytes, BytesMut};

use super::forms_of;

/// Forms shorter than this are not replaced: they would match ordinary text.
const MIN_FORM: usize = 8;

/// The forms of the secrets one request sent, and what replaces them.
pub struct ResponseScrubber {
    matcher: AhoCorasick,
    replacement: Bytes,
    /// The longest form's length, less one: what may be held back between chunks.
    hold: usize,
    /// Bytes received but not yet passed on (a form may begin in them).
    carry: BytesMut,
}

impl std::fmt::Debug for ResponseScrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseScrubber")
            .field("replacement", &self.replacement)
            .finish_non_exhaustive()
    }
}

/// The secrets inside one injected header value: after an auth scheme (`Bearer X`, `Basic X`)
/// the credential part, and for Basic also the decoded `user:password` and the password;
/// otherwise (an API-key header) the whole value.
pub fn secrets_in_header(value: &str) -> Vec<String> {
    let scheme = value.split_once(' ').filter(|(s, _)| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    let Some((scheme, rest)) = scheme else {
        return vec![value.to_string()];
    };
    let rest = rest.trim();
    let mut out = vec![rest.to_string()];
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest);
        if let Some(pair) = decoded.ok().and_then(|d| String::from_utf8(d).ok()) {
            if let Some((_, password)) = pair.split_once(':') {
                out.push(password.to_string());
            }
            out.push(pair);
        }
    }
    out
}

impl ResponseScrubber {
    /// For the secrets sent (see `secrets_in_header`); None when none is long enough to look for.
    pub fn new(secrets: &[String], replacement: &str) -> Option<Self> {
        let mut forms: Vec<String> = secrets.iter().flat_map(|s| forms_of(s)).collect();
        forms.retain(|f| f.len() >= MIN_FORM && f != replacement);
        forms.sort();
        forms.dedup();
        let longest = forms.iter().map(String::len).max()?;
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&forms)
            .ok()?;
        Some(ResponseScrubber {
            matcher,
            replacement: Bytes::copy_from_slice(replacement.as_bytes()),
            hold: longest - 1,
            carry: BytesMut::new(),
        })
    }

    /// A header value with every form replaced; None when it holds none.
    pub fn header(&self, value: &[u8]) -> Option<Vec<u8>> {
        if !self.matcher.is_match(value) {
            return None;
        }
        let mut out = Vec::with_capacity(value.len());
        self.matcher
            .replace_all_with_bytes(value, &mut out, |_, _, dst| {
                dst.extend_from_slice(&self.replacement);
                true
            });
        Some(out)
    }

    /// Passes one body chunk on: what can be sent now (possibly nothing), keeping back the tail
    /// a form may still be starting in. At the end of the stream everything goes.
    pub fn chunk(&mut self, chunk: Option<&[u8]>, end: bool) -> Option<Bytes> {
        if let Some(c) = chunk {
            self.carry.extend_from_slice(c);
        }
        // A form that starts before `limit` ends inside what is held, so it is found now.
        let limit = if end {
            self.carry.len()
        } else {
            self.carry.len().saturating_sub(self.hold)
        };
        let mut out = BytesMut::with_capacity(limit + self.replacement.len());
        let mut done = 0;
        for m in self.matcher.find_iter(&self.carry[..]) {
            if m.start() >= limit {
                break;
            }
            out.extend_from_slice(&self.carry[done..m.start()]);
            out.extend_from_slice(&self.replacement);
            done = m.end();
        }
        let upto = limit.max(done);
        out.extend_from_slice(&self.carry[done..upto]);
        let _ = self.carry.split_to(upto);
        (!out.is_empty() || end).then(|| out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "sk-live-0123456789abcdef";

    fn scrubber() -> ResponseScrubber {
        let secrets = secrets_in_header(&format!("Bearer {SECRET}"));
        ResponseScrubber::new(&secrets, "credproxy:stripe").unwrap()
    }

    /// Feeds `body` in the given pieces and joins what comes out.
    fn stream(s: &mut ResponseScrubber, pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            if let Some(b) = s.chunk(Some(p), i + 1 == pieces.len()) {
                out.extend_from_slice(&b);
            }
        }
        out
    }

    #[test]
    fn a_secret_split_across_chunks_is_replaced() {
        let body = format!("{{\"echo\":\"Bearer {SECRET}\",\"again\":\"{SECRET}\"}}");
        let b = body.as_bytes();
        for cut in 0..b.len() {
            let out = stream(&mut scrubber(), &[&b[..cut], &b[cut..]]);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(
                text, "{\"echo\":\"Bearer credproxy:stripe\",\"again\":\"credproxy:stripe\"}",
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn encoded_forms_and_basic_parts_are_replaced() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode("api:hunter2-password");
        let secrets = secrets_in_header(&format!("Basic {b64}"));
        let s = ResponseScrubber::new(&secrets, "credproxy:partner").unwrap();
        let out = s
            .header(b"pw=hunter2-password; pair=api%3Ahunter2-password")
            .unwrap();
        assert_eq!(out, b"pw=credproxy:partner; pair=credproxy:partner");
        assert_eq!(
            s.header(format!("x {b64}").as_bytes()).unwrap(),
            b"x credproxy:partner"
        );
        assert!(s.header(b"nothing here").is_none());
    }

    #[test]
    fn little_is_held_back_and_nothing_is_lost() {
        let mut s = scrubber();
        let big = vec![b'x'; 100_000];
        let first = s.chunk(Some(&big), false).unwrap();
        assert!(first.len() >= big.len() - SECRET.len() * 3);
        let rest = s.chunk(None, true).unwrap();
        assert_eq!(first.len() + rest.len(), big.len());
    }

    #[test]
    fn short_secrets_are_not_searched() {
        assert!(ResponseScrubber::new(&["abc".into()], "credproxy:x").is_none());
    }

    proptest! {
        #[test]
        fn any_split_gives_the_whole_replacement(
            text in "[a-z0-9 :-]{0,80}",
            at in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let body = format!("{text}{SECRET}{text}Bearer {SECRET}");
            let expected = format!("{text}credproxy:stripe{text}Bearer credproxy:stripe");
            let b = body.as_bytes();
            let mut cuts: Vec<usize> = at.into_iter().map(|c| c % (b.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut prev = 0;
            for c in cuts {
                pieces.push(&b[prev..c]);
                prev = c;
            }
            pieces.push(&b[prev..]);
            let out = stream(&mut scrubber(), &pieces);
            prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }
}
