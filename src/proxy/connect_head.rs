//! Reads and parses a CONNECT request head byte-exactly, so that whatever the client sends
//! right after it (a TLS ClientHello, a pipelined request) stays in the stream: pingora's
//! parser reads ahead and would drop those bytes when the stream is taken back.

use bytes::BytesMut;
use pingora::protocols::l4::stream::Stream as L4;
use tokio::io::AsyncReadExt;

use crate::errors::ProxyError;
use crate::routing::split_host_port;

/// Longest CONNECT head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header fields accepted in a CONNECT head.
const MAX_HEADERS: usize = 64;

/// What credproxy needs from a CONNECT head.
#[derive(Debug, PartialEq, Eq)]
pub struct ConnectHead {
    /// The request target, `host:port`, as sent.
    pub authority: String,
    pub proxy_authorization: Option<Vec<u8>>,
}

fn bad(m: impl Into<String>) -> ProxyError {
    ProxyError::BadRequest(m.into())
}

/// Parses `buf`: `Ok(None)` while the head is incomplete, else the head and its length.
pub fn parse(buf: &[u8]) -> Result<Option<(ConnectHead, usize)>, ProxyError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(bad(format!("CONNECT head larger than {MAX_HEAD} bytes")))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(format!("CONNECT request: {e}"))),
    };
    if len > MAX_HEAD {
        return Err(bad(format!("CONNECT head larger than {MAX_HEAD} bytes")));
    }
    if req.method != Some("CONNECT") {
        return Err(bad("expected a CONNECT request"));
    }
    let authority = req.path.unwrap_or_default().to_string();
    let mut proxy_authorization = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            check_host(&authority, h.value)?;
        } else if h.name.eq_ignore_ascii_case("proxy-authorization") {
            if proxy_authorization.is_some() {
                return Err(bad("more than one Proxy-Authorization"));
            }
            proxy_authorization = Some(h.value.to_vec());
        } else if h.name.eq_ignore_ascii_case("content-length")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
        {
            // A CONNECT has no body; one that claims one is trying to smuggle something.
            return Err(bad("a CONNECT request cannot have a body"));
        }
    }
    Ok(Some((
        ConnectHead {
            authority,
            proxy_authorization,
        },
        len,
    )))
}

/// A `Host` header on a CONNECT must name the same host and port as the target.
fn check_host(authority: &str, host: &[u8]) -> Result<(), ProxyError> {
    let host = std::str::from_utf8(host).map_err(|_| bad("Host is not valid text"))?;
    let same = match (split_host_port(authority), split_host_port(host)) {
        (Ok((a, ap)), Ok((h, hp))) => a == h && (hp.is_none() || hp == ap),
        // A bad target is reported by the target's own check.
        (Err(_), _) => true,
        (Ok(_), Err(_)) => false,
    };
    if same {
        Ok(())
    } else {
        Err(bad(format!(
            "Host `{host}` does not match the CONNECT target `{authority}`"
        )))
    }
}

/// Why no head was read.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed, reset or stayed silent: nothing to answer.
    Gone,
    /// A malformed head: answer it.
    Refused(ProxyError),
}

/// Reads the CONNECT head from `stream`; bytes after it are put back for the next reader.
pub async fn read(stream: &mut L4, timeout: std::time::Duration) -> Result<ConnectHead, ReadError> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf))
            .await
            .map_err(|_| ReadError::Gone)?
            .map_err(|_| ReadError::Gone)?;
        if n == 0 {
            return Err(ReadError::Gone);
        }
        if let Some((head, len)) = parse(&buf).map_err(ReadError::Refused)? {
            stream.rewind(&buf[len..]);
            return Ok(head);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> (ConnectHead, usize) {
        parse(text.as_bytes()).unwrap().unwrap()
    }

    fn refused(text: &str) -> String {
        parse(text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn parses_target_and_proxy_authorization() {
        let text = "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\nProxy-Authorization: Basic eDp5\r\n\r\n\x16\x03\x01";
        let (h, len) = ok(text);
        assert_eq!(h.authority, "api.example.com:443");
        assert_eq!(h.proxy_authorization.as_deref(), Some(&b"Basic eDp5"[..]));
        assert_eq!(
            &text.as_bytes()[len..],
            b"\x16\x03\x01",
            "what follows is kept"
        );
        // HTTP/1.0, no Host, IPv6 target, Host without the port.
        ok("CONNECT [::1]:8443 HTTP/1.0\r\n\r\n");
        ok("CONNECT a.test:443 HTTP/1.1\r\nHost: A.test\r\n\r\n");
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert!(parse(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a")
            .unwrap()
            .is_none());
        assert!(parse(b"").unwrap().is_none());
    }

    #[test]
    fn malformed_heads_are_refused() {
        for (text, why) in [
            ("CONNECT a.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n", "does not match"),
            ("CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:8443\r\n\r\n", "does not match"),
            ("CONNECT a.test:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", "body"),
            ("CONNECT a.test:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "body"),
            ("CONNECT a.test:443 HTTP/1.1\r\nProxy-Authorization: a\r\nProxy-Authorization: b\r\n\r\n", "more than one"),
            ("CONNECT a.test:443 HTTP/1.1\r\nBad Header: x\r\n\r\n", "CONNECT request"),
            ("CONNECT a.test:443 HTTP/9.9\r\n\r\n", "CONNECT request"),
            ("GET / HTTP/1.1\r\n\r\n", "expected a CONNECT"),
        ] {
            let e = refused(text);
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
        refused(&format!("CONNECT a.test:443 HTTP/1.1\r\n{many}\r\n"));
        let huge = format!("CONNECT a.test:443 HTTP/1.1\r\nX: {}", "v".repeat(MAX_HEAD));
        assert!(refused(&huge).contains("larger than"));
    }
}
