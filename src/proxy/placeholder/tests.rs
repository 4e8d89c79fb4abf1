use super::*;

fn req(headers: &[(&str, &str)]) -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
    for (n, v) in headers {
        r.append_header(n.to_string(), *v).unwrap();
    }
    r
}

fn basic(pair: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[test]
fn placeholders_are_found_in_both_forms() {
    let found = placeholders("a credproxy:gh b ${credproxy:s3.prod} credproxy: x");
    let names: Vec<&str> = found.iter().map(|f| f.2).collect();
    assert_eq!(names, ["gh", "s3.prod"]);
    let text = "a credproxy:gh b ${credproxy:s3.prod} credproxy: x";
    assert_eq!(&text[found[1].0..found[1].1], "${credproxy:s3.prod}");
}

#[test]
fn a_header_a_basic_password_or_a_query_value_names_the_credential() {
    let r = req(&[("authorization", "Bearer credproxy:gh")]);
    assert_eq!(named(&r, None).unwrap().as_deref(), Some("gh"));
    let r = req(&[("authorization", &basic("api:credproxy:partner"))]);
    assert_eq!(named(&r, None).unwrap().as_deref(), Some("partner"));
    let r = req(&[("x-api-key", "${credproxy:hub}")]);
    assert_eq!(named(&r, None).unwrap().as_deref(), Some("hub"));
    let r = req(&[]);
    assert_eq!(
        named(&r, Some("a=1&key=credproxy%3Amaps"))
            .unwrap()
            .as_deref(),
        Some("maps")
    );
    assert_eq!(named(&r, Some("a=1&b=2")).unwrap(), None);
}

#[test]
fn the_proxy_hop_headers_are_not_searched() {
    let r = req(&[
        ("proxy-authorization", "Bearer credproxy:gh"),
        ("x-credproxy-credential", "credproxy:gh"),
    ]);
    assert_eq!(named(&r, None).unwrap(), None);
}

#[test]
fn two_credentials_in_one_request_are_refused() {
    let r = req(&[
        ("authorization", "Bearer credproxy:gh"),
        ("x-key", "credproxy:hub"),
    ]);
    let e = named(&r, None).unwrap_err().to_string();
    assert!(e.contains("gh, hub"), "{e}");
}

#[test]
fn headers_are_filled_with_the_value() {
    let mut r = req(&[
        ("x-api-key", "credproxy:hub"),
        ("x-other", "pre-${credproxy:hub}-post"),
        ("x-plain", "untouched"),
    ]);
    fill_headers(&mut r, "hub", Some("real-key-1")).unwrap();
    assert_eq!(r.headers["x-api-key"], "real-key-1");
    assert_eq!(r.headers["x-other"], "pre-real-key-1-post");
    assert_eq!(r.headers["x-plain"], "untouched");
    assert!(r.headers["x-api-key"].is_sensitive());
}

#[test]
fn a_credential_without_a_value_refuses_a_placeholder_it_cannot_fill() {
    let mut r = req(&[("x-amz-thing", "credproxy:aws")]);
    let e = fill_headers(&mut r, "aws", None).unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(e.to_string().contains("header x-amz-thing"), "{e}");
    let e = fill_query("/p?k=credproxy:aws", "aws", None).unwrap_err();
    assert!(e.to_string().contains("the query"), "{e}");
    // Nothing to fill: fine without a value.
    let mut r = req(&[("x-plain", "v")]);
    fill_headers(&mut r, "aws", None).unwrap();
}

#[test]
fn the_query_is_filled_and_the_other_parameters_kept_byte_for_byte() {
    let out = fill_query(
        "/v1/geo?b=%7Ex&key=credproxy%3Amaps&flag&a=1+2",
        "maps",
        Some("k/1 2"),
    )
    .unwrap();
    assert_eq!(out, "/v1/geo?b=%7Ex&key=k%2F1%202&flag&a=1+2");
    let out = fill_query("/p?key=${credproxy:maps}", "maps", Some("v")).unwrap();
    assert_eq!(out, "/p?key=v");
    assert_eq!(fill_query("/p?a=1", "maps", None).unwrap(), "/p?a=1");
    assert_eq!(fill_query("/p", "maps", None).unwrap(), "/p");
}
