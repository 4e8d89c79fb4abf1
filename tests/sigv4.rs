//! aws_sigv4 through the real proxy: what reaches the origin carries a signature that verifies
//! for exactly the request the origin received.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, UNIX_EPOCH};

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use common::*;

const AK: &str = "AKIDEXAMPLE";
const SK: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// Recomputes the Authorization header for the request the origin saw (as AWS would).
fn expected_authorization(seen: &Seen, port: u16, s3: bool) -> String {
    let amz_date = seen.header("x-amz-date").unwrap();
    // 20150830T123600Z -> SystemTime
    let n = |a: usize, b: usize| amz_date[a..b].parse::<u64>().unwrap();
    let (y, m, d) = (n(0, 4) as i64, n(4, 6) as i64, n(6, 8) as i64);
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + (153 * m2 + 2) / 5 + d - 1 - 719468;
    let time = UNIX_EPOCH
        + Duration::from_secs(days as u64 * 86400 + n(9, 11) * 3600 + n(11, 13) * 60 + n(13, 15));
    let signed: Vec<String> = seen
        .header("authorization")
        .unwrap()
        .split("SignedHeaders=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .split(';')
        .map(String::from)
        .collect();
    let headers: Vec<(String, String)> = seen
        .headers
        .iter()
        .filter(|(k, _)| {
            signed.contains(&k.as_str().to_string()) && k.as_str() != "x-amz-content-sha256"
        })
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let url = format!("http://127.0.0.1:{port}{}", seen.uri);
    let mut settings = SigningSettings::default();
    if s3 {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let unsigned = seen.header("x-amz-content-sha256").as_deref() == Some("UNSIGNED-PAYLOAD");
    let body = if unsigned {
        SignableBody::UnsignedPayload
    } else {
        SignableBody::Bytes(&seen.body)
    };
    let req = SignableRequest::new(
        &seen.method,
        url.as_str(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        body,
    )
    .unwrap();
    let identity = aws_credential_types::Credentials::new(AK, SK, None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(if s3 { "s3" } else { "execute-api" })
        .time(time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let (instructions, _) = sign(req, &params).unwrap().into_parts();
    let (hs, _) = instructions.into_parts();
    hs.into_iter()
        .find(|h| h.name() == "authorization")
        .unwrap()
        .value()
        .to_string()
}

fn proxy(origin: &Origin, extra: &str) -> Proxy {
    let body = format!(
        "credentials:\n  s3:\n    type: aws_sigv4\n    access_key_id: \"${{AK}}\"\n    secret_access_key: \"${{SK}}\"\n    service: s3\n    region: us-east-1\n{extra}  api:\n    type: aws_sigv4\n    service: execute-api\n    region: us-east-1\nroutes:\n  - {{ host: \"127.0.0.1:{0}\", path: /bucket/*, credential: s3 }}\n  - {{ host: \"127.0.0.1:{0}\", credential: api }}\n",
        origin.port()
    );
    // The second credential takes its keys from the standard AWS variables.
    Proxy::start_with(
        "max_body: 2MiB",
        &body,
        &[
            ("AK", AK),
            ("SK", SK),
            ("AWS_ACCESS_KEY_ID", AK),
            ("AWS_SECRET_ACCESS_KEY", SK),
        ],
    )
}

fn send(
    p: &Proxy,
    method: &str,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    runtime().block_on(async {
        let mut r = p.client().request(method.parse().unwrap(), url).body(body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    })
}

#[test]
fn s3_put_and_get_are_signed_with_the_real_payload_hash() {
    let o = Origin::start();
    let p = proxy(&o, "");
    let body: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let url = format!(
        "http://127.0.0.1:{}/bucket/key%20with%20space.bin?x-id=PutObject",
        o.port()
    );
    // Throwaway client signing is replaced, not forwarded alongside.
    let (status, _) = send(
        &p,
        "PUT",
        &url,
        body.clone(),
        &[
            ("Authorization", "AWS4-HMAC-SHA256 Credential=THROWAWAY"),
            ("X-Amz-Date", "19990101T000000Z"),
        ],
    );
    assert_eq!(status, 200);
    let seen = o.last();
    assert_eq!(seen.body.len(), body.len());
    assert_eq!(
        seen.header("x-amz-content-sha256").unwrap(),
        sha256_hex(&body)
    );
    let auth = seen.header("authorization").unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
        "{auth}"
    );
    assert_eq!(auth, expected_authorization(&seen, o.port(), true));
    assert_eq!(seen.all("x-amz-date").len(), 1);

    let (status, _) = send(
        &p,
        "GET",
        &format!(
            "http://127.0.0.1:{}/bucket/a?list-type=2&prefix=b",
            o.port()
        ),
        vec![],
        &[],
    );
    assert_eq!(status, 200);
    let seen = o.last();
    assert_eq!(
        seen.header("x-amz-content-sha256").unwrap(),
        sha256_hex(b"")
    );
    assert_eq!(
        seen.header("authorization").unwrap(),
        expected_authorization(&seen, o.port(), true)
    );
    let log = p.log_text();
    assert!(!log.contains(SK));
    // An empty body read whole for its hash is not handed back to pingora as an empty piece
    // (it warned "Upstream body is already finished" on every bodiless signed request).
    assert!(!log.contains("already finished"), "{log}");
}

#[test]
fn non_s3_service_with_keys_from_aws_env_vars() {
    let o = Origin::start();
    let p = proxy(&o, "");
    let url = format!("http://127.0.0.1:{}/prod/items?b=2&a=1", o.port());
    assert_eq!(
        send(
            &p,
            "POST",
            &url,
            b"{\"n\":1}".to_vec(),
            &[("Content-Type", "application/json")]
        )
        .0,
        200
    );
    let seen = o.last();
    assert!(
        seen.header("x-amz-content-sha256").is_none(),
        "only S3 gets the payload header"
    );
    assert_eq!(
        seen.header("authorization").unwrap(),
        expected_authorization(&seen, o.port(), false)
    );
}

#[test]
fn bodies_that_cannot_be_signed_are_refused_clearly() {
    let o = Origin::start();
    let p = proxy(&o, "");
    let url = format!("http://127.0.0.1:{}/bucket/big", o.port());
    let (status, body) = send(&p, "PUT", &url, vec![0u8; 3 << 20], &[]);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("body_too_large"));
    let (status, body) = send(
        &p,
        "PUT",
        &url,
        b"x".to_vec(),
        &[(
            "x-amz-content-sha256",
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        )],
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("aws-chunked"), "{body}");
    // The re-signed variant, with a body that is not aws-chunked at all.
    let (status, body) = send(
        &p,
        "PUT",
        &url,
        vec![b'x'; 300],
        &[("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")],
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("aws-chunked body: malformed chunk header"),
        "{body}"
    );
    // A chunked body over max_body.
    assert_eq!(curl_chunked_put(&p, &url, 3 << 20), "413");
    assert_eq!(o.count(), 0);
}

/// A client that writes its whole oversized body before reading (as most do) reads the 413:
/// the proxy reads and drops the rest of a refused body before it closes, since closing with
/// unread bytes makes the kernel reset the connection, and the reset would reach the client
/// instead of the answer. The body is sent in pieces with pauses, so the refusal is long
/// written when the client's last bytes arrive.
#[test]
fn a_refused_body_is_read_to_its_end_so_the_client_reads_the_413() {
    use std::io::Write;
    let o = Origin::start();
    let p = proxy(&o, "");
    let len = 16usize << 20;
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "PUT http://127.0.0.1:{0}/bucket/big HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nContent-Length: {len}\r\n\r\n",
        o.port()
    );
    s.write_all(head.as_bytes()).unwrap();
    let piece = vec![b'x'; 64 << 10];
    write_paced(&mut s, &piece, len / piece.len());
    let answer = read_rest(&mut s);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
    assert_eq!(o.count(), 0);
}

/// The rest of a refused body is waited for within bounds: a client that stops sending
/// mid-body, or that asked `Expect: 100-continue` and so sends nothing, still reads its 413
/// and sees the connection close.
#[test]
fn a_refused_body_the_client_stops_sending_ends_with_the_413_and_a_close() {
    use std::io::Write;
    let o = Origin::start();
    let p = proxy(&o, "");
    let url = format!("http://127.0.0.1:{}/bucket/big", o.port());
    for (expect, sent) in [("", 1usize << 20), ("Expect: 100-continue\r\n", 0)] {
        let mut s = std::net::TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = format!(
            "PUT {url} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{expect}Content-Length: {}\r\n\r\n",
            o.port(),
            16 << 20
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&vec![b'x'; sent]).unwrap();
        let answer = read_rest(&mut s);
        assert!(answer.starts_with("HTTP/1.1 413"), "{expect}: {answer}");
    }
    assert_eq!(o.count(), 0);
}

/// Writes `piece` `times` times, pausing now and then, so the proxy's answer is long sent when
/// the last bytes arrive; a reset from the proxy fails the test.
fn write_paced(s: &mut std::net::TcpStream, piece: &[u8], times: usize) {
    use std::io::Write;
    for i in 0..times {
        if let Err(e) = s.write_all(piece) {
            panic!("writing piece {i} of the body: {e} (the proxy reset the connection)");
        }
        if i % 16 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Everything the proxy sends until it closes the connection.
fn read_rest(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Reads one response head (up to the blank line) from a raw connection.
fn read_head(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// A client that asked `Expect: 100-continue` and was told to go on is sending its body too:
/// when the body turns out too large, the rest is still read, and the 413 reaches the client.
#[test]
fn a_refused_body_sent_after_100_continue_still_gets_its_413() {
    use std::io::Write;
    let o = Origin::start();
    let p = proxy(&o, "");
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "PUT http://127.0.0.1:{0}/bucket/big HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
        o.port()
    );
    s.write_all(head.as_bytes()).unwrap();
    assert!(read_head(&mut s).starts_with("HTTP/1.1 100"));
    let mut chunk = b"10000\r\n".to_vec();
    chunk.extend(vec![b'x'; 0x10000]);
    chunk.extend(b"\r\n");
    write_paced(&mut s, &chunk, 256);
    s.write_all(b"0\r\n\r\n").unwrap();
    let answer = read_rest(&mut s);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(o.count(), 0);
}

/// After a `100 Continue`, a failure to reach the origin is still answered (it was not: the
/// 100 counted as the answer already written).
#[test]
fn an_upstream_failure_after_100_continue_is_answered() {
    use std::io::Write;
    let o = Origin::start();
    let p = proxy(&o, "");
    let port = o.port();
    drop(o);
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "PUT http://127.0.0.1:{port}/bucket/k HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    assert!(read_head(&mut s).starts_with("HTTP/1.1 100"));
    s.write_all(b"hello").unwrap();
    let answer = read_rest(&mut s);
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("connection_refused"), "{answer}");
}

/// curl PUTs `len` bytes with `Transfer-Encoding: chunked` through the proxy; the status.
fn curl_chunked_put(p: &Proxy, url: &str, len: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, body_of_len(len)).unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            &p.url(),
            "-X",
            "PUT",
        ])
        .args(["-H", "Transfer-Encoding: chunked", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn body_of_len(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 253) as u8).collect()
}

/// Chunked bodies (no length known in advance) are read up to max_body, hashed and sent with
/// their Content-Length: small and past pingora's 64 KiB retry buffer, to an HTTP/1.1 origin
/// and (through a sidecar route) to an HTTP/2 one.
#[test]
fn chunked_bodies_are_hashed_and_signed_up_to_max_body() {
    let o = Origin::start();
    let p = proxy(&o, "");
    for len in [5, 300 << 10] {
        let url = format!("http://127.0.0.1:{}/bucket/chunked-{len}", o.port());
        assert_eq!(curl_chunked_put(&p, &url, len), "200");
        let seen = o.last();
        assert_eq!(seen.body, body_of_len(len));
        assert_eq!(seen.header("content-length"), Some(len.to_string()));
        assert!(seen.header("transfer-encoding").is_none());
        assert_eq!(
            seen.header("x-amz-content-sha256"),
            Some(sha256_hex(&seen.body))
        );
        assert_eq!(
            seen.header("authorization").unwrap(),
            expected_authorization(&seen, o.port(), true)
        );
    }
    let tls = test_tls();
    let h2 = Origin::start_tls(tls.server.clone());
    let body = format!(
        "credentials:\n  s3: {{ type: aws_sigv4, access_key_id: \"${{AK}}\", secret_access_key: \"${{SK}}\", service: s3, region: us-east-1 }}\nroutes:\n  - {{ path: /s3/*, upstream: \"https://localhost:{}\", strip_prefix: /s3, credential: s3 }}\n",
        h2.port()
    );
    let extra = format!("max_body: 2MiB\nupstream_ca: {}", tls.ca_pem.display());
    let p = Proxy::start_with(&extra, &body, &[("AK", AK), ("SK", SK)]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, body_of_len(200 << 10)).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args(["-H", "Transfer-Encoding: chunked", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("{}/s3/bucket/h2", p.url()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        p.log_text()
    );
    let seen = h2.last();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.body, body_of_len(200 << 10));
    assert_eq!(
        seen.header("x-amz-content-sha256"),
        Some(sha256_hex(&seen.body))
    );
}

#[test]
fn unsigned_payload_streams_large_s3_bodies_when_allowed() {
    let o = Origin::start();
    let p = proxy(&o, "    unsigned_payload: true\n");
    let body = vec![7u8; 3 << 20];
    let url = format!("http://127.0.0.1:{}/bucket/big", o.port());
    assert_eq!(send(&p, "PUT", &url, body.clone(), &[]).0, 200);
    let seen = o.last();
    assert_eq!(seen.body.len(), body.len());
    assert_eq!(
        seen.header("x-amz-content-sha256").as_deref(),
        Some("UNSIGNED-PAYLOAD")
    );
    assert_eq!(
        seen.header("authorization").unwrap(),
        expected_authorization(&seen, o.port(), true)
    );
}

/// Captures what reached the origin and asks botocore to verify each signature.
#[test]
fn botocore_agrees_with_every_signature() {
    let o = Origin::start();
    let body = format!(
        "credentials:\n  s3:\n    type: aws_sigv4\n    access_key_id: {AK}\n    secret_access_key: \"${{SK}}\"\n    service: s3\n    region: us-east-1\n  api:\n    type: aws_sigv4\n    access_key_id: {AK}\n    secret_access_key: \"${{SK}}\"\n    service: execute-api\n    region: us-east-1\n  apiq:\n    type: aws_sigv4\n    access_key_id: {AK}\n    secret_access_key: \"${{SK}}\"\n    service: execute-api\n    region: us-east-1\n    sign_query: true\n    expires: 10m\nroutes:\n  - {{ host: \"127.0.0.1:{0}\", path: /bucket/*, credential: s3 }}\n  - {{ host: \"127.0.0.1:{0}\", path: /q/*, credential: apiq }}\n  - {{ host: \"127.0.0.1:{0}\", credential: api }}\n",
        o.port()
    );
    let p = Proxy::start_with("", &body, &[("SK", SK)]);
    let base = format!("http://127.0.0.1:{}", o.port());
    let cases: [(&str, &str, &[u8]); 7] = [
        ("GET", "/bucket/photos/2024/a%20b.jpg?versionId=3&acl", b""),
        ("PUT", "/bucket/k.txt", b"hello s3"),
        ("POST", "/bucket/k?uploads", b""),
        ("GET", "/prod/items?b=2&a=1&a=0&empty=", b""),
        ("POST", "/prod/items", b"{\"n\": 1}"),
        ("PUT", "/prod/items/%C3%A9t%C3%A9", b"x"),
        ("GET", "/q/items?limit=5", b""),
    ];
    let mut captured = Vec::new();
    for (m, path, b) in cases {
        let (status, _) = send(
            &p,
            m,
            &format!("{base}{path}"),
            b.to_vec(),
            &[("Content-Type", "application/octet-stream")],
        );
        assert_eq!(status, 200, "{m} {path}");
        let s = o.last();
        let headers: serde_json::Map<String, serde_json::Value> = s
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().into()))
            .collect();
        let service = if path.starts_with("/bucket") {
            "s3"
        } else {
            "execute-api"
        };
        let mode = if path.starts_with("/q/") {
            "query"
        } else {
            "header"
        };
        let body_hex: String = s.body.iter().map(|x| format!("{x:02x}")).collect();
        captured.push(serde_json::json!({"method": s.method, "url": format!("{base}{}", s.uri), "headers": headers, "body_hex": body_hex, "service": service, "mode": mode}));
    }
    let mut child = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/botocore_check.py"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with botocore (.ci/setup installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&captured).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("OK")).count(),
        7,
        "{text}"
    );
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// tests/sigv4_server.py on a free port, once it says it is ready.
fn sigv4_server() -> (KillOnDrop, u16) {
    use std::io::BufRead;
    let port = free_port();
    let mut server = std::process::Command::new("python3")
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sigv4_server.py"),
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with botocore");
    let stdout = server.stdout.take().unwrap();
    let server = KillOnDrop(server);
    let mut ready = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    (server, port)
}

/// credproxy signing for S3 at s3.test:PORT with `secret`.
fn s3_proxy(port: u16, secret: &str, proxy_extra: &str) -> Proxy {
    s3_proxy_at("s3.test", port, secret, proxy_extra)
}

fn s3_proxy_at(host: &str, port: u16, secret: &str, proxy_extra: &str) -> Proxy {
    let body = format!(
        "credentials:\n  s3:\n    type: aws_sigv4\n    access_key_id: {AK}\n    secret_access_key: \"${{SK}}\"\n    service: s3\n    region: us-east-1\nroutes:\n  - {{ host: \"{host}:{port}\", credential: s3, allow_http: true }}\n"
    );
    let extra = format!("dns: {{ overrides: {{ s3.test: 127.0.0.1 }} }}\n{proxy_extra}");
    Proxy::start_with(&extra, &body, &[("SK", secret)])
}

/// An aws-chunked body of `payload` in chunks of `chunk` bytes, signed with a key credproxy
/// does not know (every signature zeros).
fn aws_chunked(payload: &[u8], chunk: usize) -> Vec<u8> {
    let zeros = "0".repeat(64);
    let mut out = Vec::with_capacity(payload.len() + payload.len() / chunk * 100 + 100);
    for part in payload.chunks(chunk).chain(std::iter::once(&[][..])) {
        out.extend_from_slice(format!("{:x};chunk-signature={zeros}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// An SDK's streaming upload (aws-chunked, chunk signatures chained from the headers'),
/// larger than `max_body`: re-signed chunk by chunk as it streams, and verified chunk by chunk
/// by a server that recomputes every signature.
#[test]
fn aws_chunked_uploads_are_resigned_chunk_by_chunk_past_max_body() {
    let (_server, port) = sigv4_server();
    let p = s3_proxy(port, SK, "max_body: 16MiB");
    let payload: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    let body = aws_chunked(&payload, 64 << 10);
    let url = format!("http://s3.test:{port}/bucket/streamed");
    let headers = [
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", &payload.len().to_string()),
        ("authorization", "AWS4-HMAC-SHA256 Credential=placeholder/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"),
    ];
    let (status, text) = send(&p, "PUT", &url, body, &headers);
    assert_eq!(status, 200, "{text}");
    let (status, got) = runtime().block_on(async {
        let r = p.client().get(&url).send().await.unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap())
    });
    assert_eq!(status, 200);
    assert!(got.len() == payload.len() && sha256_hex(&got) == sha256_hex(&payload));

    // A body that breaks off mid-chunk is stopped, never stored.
    let mut broken = aws_chunked(b"abc", 2);
    broken.truncate(40);
    broken.extend_from_slice(b"not a chunk at all, and long enough to be a header... ......... ......... ......... ......... .........\r\n");
    let url = format!("http://s3.test:{port}/bucket/broken");
    let (status, _) = send(&p, "PUT", &url, broken, &headers[..3]);
    assert_ne!(status, 200);
    let (status, _) = send(&p, "GET", &url, Vec::new(), &[]);
    assert_eq!(status, 404);
}

/// tests/boto3_client.py against `endpoint` through `p` (HTTP_PROXY); its output.
fn boto3(p: &Proxy, endpoint: &str, mode: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/boto3_client.py"
        ))
        .arg(endpoint)
        .args(mode)
        .env("HTTP_PROXY", p.url())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .expect("boto3 (.ci/setup installs it)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// boto3 (unsigned, HTTP_PROXY) -> credproxy -> a server validating SigV4 with botocore.
#[test]
fn boto3_end_to_end_and_signature_mismatch_passes_through() {
    let (_server, port) = sigv4_server();
    let run = |secret: &str| {
        boto3(
            &s3_proxy(port, secret, ""),
            &format!("http://s3.test:{port}"),
            &[],
        )
    };
    assert_eq!(run(SK), "OK");
    assert_eq!(run("not-the-secret"), "SignatureDoesNotMatch");
}

/// boto3's multipart upload_file and a streaming put_object, through credproxy to moto's S3.
#[test]
fn boto3_multipart_and_streaming_uploads_to_moto() {
    let moto = moto_server();
    // moto reads a bucket name out of a host like s3.test: an address it takes as path-style.
    let p = s3_proxy_at("127.0.0.1", moto.port, SK, "max_body: 16MiB");
    let out = boto3(&p, &format!("http://127.0.0.1:{}", moto.port), &["uploads"]);
    assert_eq!(out, "OK", "{}", p.log_text());
}
