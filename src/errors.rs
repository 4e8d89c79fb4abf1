//! Responses credproxy makes itself: one error type, mapped in one place to a status,
//! an RFC 9209 `Proxy-Status` header and the JSON body of SPEC.md; and the errors of
//! pingora and the token cache mapped into it.
//!
//! Messages carry names (hosts, env var names, routes) and statuses, never secret values.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorSource, ErrorType};
use serde::Serialize;

use crate::tokens::TokenError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("no sidecar route matches {0}; send absolute-form requests (HTTP_PROXY) or use a configured route path")]
    NoRoute(String),
    #[error("{0} matches no route and proxy.unmatched is deny")]
    Unmatched(String),
    #[error("credential `{0}` is not listed on this route")]
    CredentialNotOnRoute(String),
    #[error("proxy authentication required: send Proxy-Authorization with a configured client")]
    ProxyAuthRequired,
    #[error("client `{client}` may not use credential `{credential}`")]
    ClientForbidden { client: String, credential: String },
    #[error("credential is unavailable: {0}")]
    CredentialUnavailable(String),
    #[error("cannot resolve {host}: {reason}")]
    Dns { host: String, reason: String },
    #[error("DNS lookup for {0} timed out")]
    DnsTimeout(String),
    #[error("upstream {0} refused the connection")]
    ConnectRefused(String),
    #[error("connecting to upstream {0} timed out")]
    ConnectTimeout(String),
    #[error("upstream {0} did not answer in time")]
    ReadTimeout(String),
    #[error("TLS handshake with upstream {0} failed: {1}")]
    Tls(String, String),
    #[error("upstream {0} presented an invalid certificate")]
    TlsCertificate(String),
    #[error("upstream {0} failed: {1}")]
    Upstream(String, String),
    #[error("credential unavailable: {0}")]
    TokenEndpoint(String),
    #[error("credential unavailable: {0}")]
    TokenTimeout(String),
    #[error("request body is larger than proxy.max_body ({0} bytes), and this credential signs the whole body")]
    BodyTooLarge(u64),
    #[error(
        "a chunked body cannot be signed: send Content-Length, or allow unsigned_payload (S3)"
    )]
    LengthRequired,
    #[error("{0}")]
    EgressDenied(#[from] crate::egress::Denied),
    #[error("the request head did not arrive within proxy.timeouts.header ({0:?})")]
    HeaderTimeout(std::time::Duration),
    #[error("request head too large: {0}")]
    HeadersTooLarge(String),
    #[error("route `{0}` sends its credential only over HTTPS: use an https:// URL (through HTTPS_PROXY), or set `allow_http: true` on the route")]
    PlainHttp(String),
    #[error("{0} connections already open from this client address (proxy.limits.max_connections_per_client)")]
    TooManyConnections(usize),
    #[error("credential unavailable: {0}")]
    SharedStateUnavailable(String),
    #[error("{}", buffers_full(.0))]
    BuffersFull(crate::proxy::limits::OverBudget),
    #[error("{target} is credproxy's own {listener} listener ({addr}): requests through the proxy never reach credproxy itself")]
    OwnListener {
        target: String,
        addr: std::net::SocketAddr,
        listener: &'static str,
    },
    #[error("credential `{0}` is per tenant and this request has none: give the client a `tenant`, or send X-Credproxy-Tenant from a client whose `tenants` allow it")]
    TenantRequired(String),
    #[error("{0}")]
    TenantForbidden(String),
    #[error("tenant `{tenant}` has no connection for credential `{credential}`: create one with PUT /connections/{tenant}/{credential} or a connect link (POST /connections/{tenant}/{credential}/connect-link)")]
    ConnectionMissing { tenant: String, credential: String },
    /// A connection's own API host differs from the request's (the message says both).
    #[error("{0}")]
    ConnectionHost(String),
}

impl ProxyError {
    pub fn status(&self) -> u16 {
        use ProxyError::*;
        match self {
            BadRequest(_) => 400,
            NoRoute(_) => 404,
            Unmatched(_)
            | CredentialNotOnRoute(_)
            | ClientForbidden { .. }
            | EgressDenied(_)
            | OwnListener { .. }
            | TenantRequired(_)
            | TenantForbidden(_)
            | ConnectionMissing { .. }
            | ConnectionHost(_)
            | PlainHttp(_) => 403,
            ProxyAuthRequired => 407,
            BodyTooLarge(_) => 413,
            HeaderTimeout(_) => 408,
            HeadersTooLarge(_) => 431,
            TooManyConnections(_) => 429,
            LengthRequired => 411,
            DnsTimeout(_) | ConnectTimeout(_) | ReadTimeout(_) | TokenTimeout(_) => 504,
            TokenEndpoint(_) | SharedStateUnavailable(_) => 502,
            BuffersFull(_) => 503,
            CredentialUnavailable(_)
            | Dns { .. }
            | ConnectRefused(_)
            | Tls(..)
            | TlsCertificate(_)
            | Upstream(..) => 502,
        }
    }

    /// The `error` field of the JSON body.
    pub fn code(&self) -> &'static str {
        use ProxyError::*;
        match self {
            BadRequest(_) => "bad_request",
            NoRoute(_) => "no_route",
            Unmatched(_) => "unmatched_denied",
            CredentialNotOnRoute(_) => "credential_not_on_route",
            ProxyAuthRequired => "proxy_auth_required",
            ClientForbidden { .. } => "credential_forbidden",
            CredentialUnavailable(_) => "credential_unavailable",
            Dns { .. } => "dns_error",
            DnsTimeout(_) => "dns_timeout",
            ConnectRefused(_) => "connection_refused",
            ConnectTimeout(_) => "connection_timeout",
            ReadTimeout(_) => "upstream_timeout",
            Tls(..) => "tls_error",
            TlsCertificate(_) => "tls_certificate_error",
            Upstream(..) => "upstream_error",
            TokenEndpoint(_) => "token_endpoint_error",
            TokenTimeout(_) => "token_endpoint_timeout",
            BodyTooLarge(_) => "body_too_large",
            LengthRequired => "length_required",
            EgressDenied(_) => "egress_denied",
            HeaderTimeout(_) => "request_timeout",
            HeadersTooLarge(_) => "headers_too_large",
            TooManyConnections(_) => "too_many_connections",
            PlainHttp(_) => "plain_http_refused",
            OwnListener { .. } => "proxy_loop",
            BuffersFull(_) => "buffers_full",
            SharedStateUnavailable(_) => "shared_state_unavailable",
            TenantRequired(_) => "tenant_required",
            TenantForbidden(_) => "tenant_forbidden",
            ConnectionMissing { .. } => "connection_missing",
            ConnectionHost(_) => "connection_host_mismatch",
        }
    }

    /// The RFC 9209 error type for `Proxy-Status`.
    pub fn proxy_status_type(&self) -> &'static str {
        use ProxyError::*;
        match self {
            BadRequest(_) => "http_request_error",
            NoRoute(_)
            | Unmatched(_)
            | CredentialNotOnRoute(_)
            | ProxyAuthRequired
            | ClientForbidden { .. }
            | TenantRequired(_)
            | TenantForbidden(_)
            | ConnectionMissing { .. }
            | ConnectionHost(_) => "http_request_denied",
            CredentialUnavailable(_) => "proxy_configuration_error",
            Dns { .. } => "dns_error",
            DnsTimeout(_) => "dns_timeout",
            ConnectRefused(_) => "connection_refused",
            ConnectTimeout(_) => "connection_timeout",
            ReadTimeout(_) => "connection_read_timeout",
            Tls(..) => "tls_protocol_error",
            TlsCertificate(_) => "tls_certificate_error",
            Upstream(..) => "destination_unavailable",
            TokenEndpoint(_) => "proxy_internal_error",
            TokenTimeout(_) => "connection_timeout",
            BodyTooLarge(_) | LengthRequired => "http_request_error",
            EgressDenied(_) => "destination_ip_prohibited",
            HeaderTimeout(_) | HeadersTooLarge(_) => "http_request_error",
            TooManyConnections(_) | PlainHttp(_) => "http_request_denied",
            OwnListener { .. } => "proxy_loop_detected",
            BuffersFull(_) | SharedStateUnavailable(_) => "proxy_internal_error",
        }
    }
}

fn buffers_full(e: &crate::proxy::limits::OverBudget) -> String {
    use crate::proxy::limits::OverBudget;
    let (who, key, n) = match e {
        OverBudget::Total(n) => ("credproxy", "max_buffered", n),
        OverBudget::Client(n) => ("this client", "max_buffered_per_client", n),
    };
    format!(
        "{who} already holds {n} bytes of request bodies read for signing or replay \
         (proxy.limits.{key}); retry shortly"
    )
}

impl From<TokenError> for ProxyError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Timeout { .. } => ProxyError::TokenTimeout(e.to_string()),
            TokenError::SharedState(_) => ProxyError::SharedStateUnavailable(e.to_string()),
            _ => ProxyError::TokenEndpoint(e.to_string()),
        }
    }
}

/// Maps a pingora error to what the user sees.
pub fn from_pingora(e: &Error, host: &str) -> Option<ProxyError> {
    let h = host.to_string();
    Some(match e.etype() {
        ErrorType::ConnectRefused => ProxyError::ConnectRefused(h),
        ErrorType::ConnectTimedout => ProxyError::ConnectTimeout(h),
        ErrorType::ConnectNoRoute => ProxyError::Upstream(h, "no route to host".into()),
        ErrorType::HTTPStatus(400) => ProxyError::BadRequest(
            e.context
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default(),
        ),
        ErrorType::InvalidCert => ProxyError::TlsCertificate(h),
        ErrorType::TLSHandshakeFailure if is_certificate_error(e) => ProxyError::TlsCertificate(h),
        ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::HandshakeError => ProxyError::Tls(h, e.etype().as_str().to_string()),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            ProxyError::ReadTimeout(h)
        }
        _ if e.esource() == &ErrorSource::Downstream => match e.etype() {
            ErrorType::ReadError
            | ErrorType::WriteError
            | ErrorType::ConnectionClosed
            | ErrorType::ReadTimedout
            | ErrorType::WriteTimedout => return None,
            _ => ProxyError::BadRequest(e.etype().as_str().to_string()),
        },
        _ => ProxyError::Upstream(h, e.etype().as_str().to_string()),
    })
}

/// rustls reports a refused origin certificate as a handshake failure whose cause says so.
fn is_certificate_error(e: &Error) -> bool {
    let text = e.to_string();
    text.contains("invalid peer certificate") || text.contains("CertificateUnknown")
}

pub fn is_connect_error(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectRefused
            | ErrorType::ConnectTimedout
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
    )
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: String,
    route: Option<&'a str>,
    credential: Option<&'a str>,
}

/// An RFC 8941 sf-string: printable ASCII, `"` and `\` escaped.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

/// The `Proxy-Status` value for an error.
pub fn proxy_status(err: &ProxyError) -> String {
    format!(
        "credproxy; error={}; details={}",
        err.proxy_status_type(),
        sf_string(&err.to_string())
    )
}

/// Builds the whole response for an error.
pub fn render(
    err: &ProxyError,
    route: Option<&str>,
    credential: Option<&str>,
) -> pingora::Result<(ResponseHeader, Bytes)> {
    let body = Body {
        error: err.code(),
        message: err.to_string(),
        route,
        credential,
    };
    let mut json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    json.push(b'\n');
    let mut resp = ResponseHeader::build(err.status(), Some(5))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", json.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header("proxy-status", proxy_status(err))?;
    if matches!(err, ProxyError::BuffersFull(_)) {
        resp.insert_header("retry-after", "1")?;
    }
    if matches!(err, ProxyError::ProxyAuthRequired) {
        resp.insert_header(
            "proxy-authenticate",
            "Basic realm=\"credproxy\", Bearer realm=\"credproxy\"",
        )?;
    }
    Ok((resp, Bytes::from(json)))
}

/// An error response as HTTP/1.1 bytes, for connections pingora does not drive (CONNECT).
/// The connection is closed after it.
pub fn to_wire(resp: &ResponseHeader, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        resp.status.as_u16(),
        resp.status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in resp.headers.iter() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARIANTS: usize = 31;

    /// Each variant's number: a new variant does not compile here until it gets one, and
    /// `every_variant` fails until it holds an example of it.
    fn index(e: &ProxyError) -> usize {
        use ProxyError::*;
        match e {
            BadRequest(_) => 0,
            NoRoute(_) => 1,
            Unmatched(_) => 2,
            CredentialNotOnRoute(_) => 3,
            ProxyAuthRequired => 4,
            ClientForbidden { .. } => 5,
            CredentialUnavailable(_) => 6,
            Dns { .. } => 7,
            DnsTimeout(_) => 8,
            ConnectRefused(_) => 9,
            ConnectTimeout(_) => 10,
            ReadTimeout(_) => 11,
            Tls(..) => 12,
            TlsCertificate(_) => 13,
            Upstream(..) => 14,
            TokenEndpoint(_) => 15,
            TokenTimeout(_) => 16,
            BodyTooLarge(_) => 17,
            LengthRequired => 18,
            EgressDenied(_) => 19,
            HeaderTimeout(_) => 20,
            HeadersTooLarge(_) => 21,
            PlainHttp(_) => 22,
            TooManyConnections(_) => 23,
            BuffersFull(_) => 24,
            OwnListener { .. } => 25,
            SharedStateUnavailable(_) => 26,
            TenantRequired(_) => 27,
            TenantForbidden(_) => 28,
            ConnectionMissing { .. } => 29,
            ConnectionHost(_) => 30,
        }
    }

    /// One example of every variant.
    fn every_variant() -> Vec<ProxyError> {
        use ProxyError::*;
        let s = || "x".to_string();
        let all = vec![
            BadRequest(s()),
            NoRoute(s()),
            Unmatched(s()),
            CredentialNotOnRoute(s()),
            ProxyAuthRequired,
            ClientForbidden {
                client: s(),
                credential: s(),
            },
            CredentialUnavailable(s()),
            Dns {
                host: s(),
                reason: s(),
            },
            DnsTimeout(s()),
            ConnectRefused(s()),
            ConnectTimeout(s()),
            ReadTimeout(s()),
            Tls(s(), s()),
            TlsCertificate(s()),
            Upstream(s(), s()),
            TokenEndpoint(s()),
            TokenTimeout(s()),
            BodyTooLarge(1),
            LengthRequired,
            EgressDenied(crate::egress::Denied {
                host: s(),
                ip: std::net::IpAddr::from([10, 0, 0, 1]),
                why: "private",
            }),
            HeaderTimeout(std::time::Duration::from_secs(1)),
            HeadersTooLarge(s()),
            PlainHttp(s()),
            TooManyConnections(1),
            BuffersFull(crate::proxy::limits::OverBudget::Total(1)),
            OwnListener {
                target: s(),
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
                listener: "admin",
            },
            SharedStateUnavailable(s()),
            TenantRequired(s()),
            TenantForbidden(s()),
            ConnectionMissing {
                tenant: s(),
                credential: s(),
            },
            ConnectionHost(s()),
        ];
        assert_one_of_each(&all);
        all
    }

    fn assert_one_of_each(all: &[ProxyError]) {
        let mut seen: Vec<usize> = all.iter().map(index).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen,
            (0..VARIANTS).collect::<Vec<_>>(),
            "one of each variant"
        );
    }

    #[test]
    fn the_readme_error_table_lists_every_code() {
        let readme = include_str!("../README.md");
        for e in every_variant() {
            let row = format!(
                "| {} | `{}` | `{}` |",
                e.status(),
                e.code(),
                e.proxy_status_type()
            );
            assert!(readme.contains(&row), "README.md lacks the row `{row}`");
        }
    }

    #[test]
    fn renders_spec_body_and_header() {
        let e = ProxyError::Dns {
            host: "nope.invalid".into(),
            reason: "not found".into(),
        };
        let (resp, body) = render(&e, Some("r1"), None).unwrap();
        assert_eq!(resp.status.as_u16(), 502);
        let ps = resp.headers.get("proxy-status").unwrap().to_str().unwrap();
        assert!(
            ps.starts_with("credproxy; error=dns_error; details=\""),
            "{ps}"
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "dns_error");
        assert_eq!(v["route"], "r1");
        assert!(v["credential"].is_null());
        assert!(v["message"].as_str().unwrap().contains("nope.invalid"));
    }

    #[test]
    fn sf_string_escapes() {
        assert_eq!(sf_string("a\"b\\c\nd"), "\"a\\\"b\\\\c?d\"");
    }

    #[test]
    fn statuses() {
        assert_eq!(ProxyError::ProxyAuthRequired.status(), 407);
        assert_eq!(ProxyError::Unmatched("x".into()).status(), 403);
        assert_eq!(ProxyError::ConnectTimeout("x".into()).status(), 504);
        assert_eq!(ProxyError::BodyTooLarge(1).status(), 413);
        let (resp, _) = render(&ProxyError::ProxyAuthRequired, None, None).unwrap();
        assert!(resp.headers.get("proxy-authenticate").is_some());
    }
}
