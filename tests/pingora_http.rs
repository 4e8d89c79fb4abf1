//! The vendored pingora-http's copies of request and response headers (`vendor/README.md`):
//! a copy has room for the headers a proxy adds, and keeps the original's header order and
//! name case, which its value map and case map must agree on when it is written out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pingora::http::{RequestHeader, ResponseHeader};

fn wire_req(r: &RequestHeader) -> String {
    let mut buf = Vec::new();
    r.header_to_h1_wire(&mut buf);
    String::from_utf8(buf).unwrap()
}

fn wire_resp(r: &ResponseHeader) -> String {
    let mut buf = Vec::new();
    r.header_to_h1_wire(&mut buf);
    String::from_utf8(buf).unwrap()
}

/// Headers with repeated names and a removal (which reorders the map), then a copy that gets
/// more headers than its room: written out, the copy is the original followed by the additions.
#[test]
fn a_copied_request_header_keeps_order_and_case_and_takes_more_headers() {
    let mut req = RequestHeader::build("GET", b"/a", Some(4)).unwrap();
    req.append_header("Host", "example.com").unwrap();
    req.append_header("X-Repeated", "1").unwrap();
    req.append_header("x-GONE", "soon").unwrap();
    req.append_header("Accept", "*/*").unwrap();
    req.append_header("X-Repeated", "2").unwrap();
    req.append_header("X-Last", "z").unwrap();
    req.remove_header("x-gone");
    let before = wire_req(&req);
    let mut copy = req.clone();
    assert_eq!(wire_req(&copy), before);
    let added: Vec<(String, String)> = (0..9)
        .map(|i| (format!("X-Added-{i}"), format!("v{i}")))
        .collect();
    for (k, v) in &added {
        copy.insert_header(k.clone(), v.as_str()).unwrap();
    }
    copy.insert_header("Authorization", "Bearer t").unwrap();
    let mut expected = before.clone();
    for (k, v) in &added {
        expected.push_str(&format!("{k}: {v}\r\n"));
    }
    expected.push_str("Authorization: Bearer t\r\n");
    assert_eq!(wire_req(&copy), expected);
    assert_eq!(wire_req(&req), before, "the original is untouched");
    assert_eq!(copy.headers.get_all("x-repeated").iter().count(), 2);
    assert!(copy.headers.get("x-gone").is_none());
}

#[test]
fn a_copied_response_header_keeps_order_and_case_and_takes_more_headers() {
    let mut resp = ResponseHeader::build(200, Some(2)).unwrap();
    resp.append_header("Content-Type", "text/plain").unwrap();
    resp.append_header("set-COOKIE", "a=1").unwrap();
    resp.append_header("Set-Cookie", "b=2").unwrap();
    let before = wire_resp(&resp);
    let mut copy = resp.clone();
    assert_eq!(wire_resp(&copy), before);
    copy.insert_header("Date", "now").unwrap();
    copy.insert_header("Content-Length", "5").unwrap();
    copy.remove_header("content-type");
    let mut original_then_added = resp.clone();
    original_then_added.insert_header("Date", "now").unwrap();
    original_then_added
        .insert_header("Content-Length", "5")
        .unwrap();
    original_then_added.remove_header("content-type");
    assert_eq!(wire_resp(&copy), wire_resp(&original_then_added));
    assert!(wire_resp(&copy).contains("set-COOKIE: a=1\r\n"));
    assert_eq!(resp.headers.len(), 3, "the original is untouched");
}
