//! Placeholder secrets (`credproxy:NAME`, `${credproxy:NAME}`): an SDK that insists on a key is
//! given one, and credproxy fills in the real value for that request's route only. What
//! cannot be resolved is refused, never forwarded. Driven with reqwest and Python requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::*;

const ENV: &[(&str, &str)] = &[
    ("GH_TOKEN", "gh-secret-placeholder-1"),
    ("ERP_PASS", "erp-pass-placeholder-2"),
    ("MAPS_KEY", "maps-key-placeholder-3"),
];

/// Routes on two origins: `a` with every credential type the test needs, `b` with another.
fn start(a: &Origin, b: &Origin, route_extra: &str) -> Proxy {
    let body = format!(
        "credentials:
  gh: {{ type: bearer, token: \"${{GH_TOKEN}}\" }}
  erp: {{ type: basic, username: erp, password: \"${{ERP_PASS}}\" }}
  maps: {{ type: headers, headers: {{ X-Goog-Api-Key: \"${{MAPS_KEY}}\" }} }}
  other: {{ type: bearer, token: other-route-token-4 }}
routes:
  - {{ host: \"127.0.0.1:{}\", credentials: [gh, erp, maps]{route_extra} }}
  - {{ host: \"127.0.0.1:{}\", credential: other }}
",
        a.port(),
        b.port()
    );
    Proxy::start_with("", &body, ENV)
}

fn get(p: &Proxy, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    runtime().block_on(async {
        let mut r = p.client().get(url);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.unwrap();
        let out = (resp.status().as_u16(), resp.text().await.unwrap());
        assert_no_secret("a response", &out.1);
        out
    })
}

fn basic(pair: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
    format!("Basic {b64}")
}

#[test]
fn each_place_a_placeholder_may_stand_is_filled_for_its_route() {
    let (a, b) = (Origin::start(), Origin::start());
    let p = start(&a, &b, "");
    let url = format!("http://127.0.0.1:{}/v1", a.port());
    let (s, body) = get(&p, &url, &[("authorization", "Bearer credproxy:gh")]);
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        a.last().header("authorization").unwrap(),
        "Bearer gh-secret-placeholder-1"
    );

    let (s, _) = get(&p, &url, &[("authorization", &basic("erp:credproxy:erp"))]);
    assert_eq!(s, 200);
    let expected = basic("erp:erp-pass-placeholder-2");
    assert_eq!(a.last().header("authorization").unwrap(), expected);

    // An API-key header, and the `${...}` form in another header of the same request.
    let (s, _) = get(
        &p,
        &url,
        &[
            ("x-goog-api-key", "credproxy:maps"),
            ("x-echo-key", "k=${credproxy:maps}"),
        ],
    );
    assert_eq!(s, 200);
    let seen = a.last();
    assert_eq!(
        seen.header("x-goog-api-key").unwrap(),
        "maps-key-placeholder-3"
    );
    assert_eq!(
        seen.header("x-echo-key").unwrap(),
        "k=maps-key-placeholder-3"
    );
    assert!(seen.header("authorization").is_none());

    // A query value: filled, the other parameters untouched.
    let q = format!(
        "http://127.0.0.1:{}/geo?a=%7E1&key=credproxy%3Amaps&z=2",
        a.port()
    );
    let (s, _) = get(&p, &q, &[]);
    assert_eq!(s, 200);
    assert_eq!(a.last().uri, "/geo?a=%7E1&key=maps-key-placeholder-3&z=2");
}

#[test]
fn unresolvable_placeholders_are_refused_and_never_forwarded() {
    let (a, b) = (Origin::start(), Origin::start());
    let p = start(&a, &b, "");
    let on_a = format!("http://127.0.0.1:{}/v1", a.port());
    let on_b = format!("http://127.0.0.1:{}/v1", b.port());
    // A credential of another route.
    let (s, body) = get(&p, &on_b, &[("authorization", "Bearer credproxy:gh")]);
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("does not use"), "{body}");
    // A name no credential has.
    let (s, body) = get(&p, &on_a, &[("x-key", "credproxy:nope")]);
    assert_eq!(s, 400, "{body}");
    // Two credentials at once.
    let headers = [
        ("authorization", "Bearer credproxy:gh"),
        ("x-goog-api-key", "credproxy:maps"),
    ];
    let (s, body) = get(&p, &on_a, &headers);
    assert_eq!(s, 400, "{body}");
    // A host with no route at all (unmatched requests are otherwise passed through).
    let none = Origin::start();
    let to_none = format!("http://127.0.0.1:{}/v1?key=credproxy:gh", none.port());
    let (s, body) = get(&p, &to_none, &[]);
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("no route covers"), "{body}");
    // X-Credproxy-Credential contradicting the placeholder.
    let headers = [
        ("authorization", "Bearer credproxy:gh"),
        ("x-credproxy-credential", "erp"),
    ];
    let (s, _) = get(&p, &on_a, &headers);
    assert_eq!(s, 400);
    assert_eq!((a.count(), b.count(), none.count()), (0, 0, 0));
}

#[test]
fn require_placeholder_refuses_requests_without_one() {
    let (a, b) = (Origin::start(), Origin::start());
    let p = start(&a, &b, ", require_placeholder: true");
    let url = format!("http://127.0.0.1:{}/v1", a.port());
    let (s, body) = get(&p, &url, &[]);
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("requires a placeholder"), "{body}");
    assert_eq!(a.count(), 0);
    let (s, _) = get(&p, &url, &[("authorization", "Bearer ${credproxy:gh}")]);
    assert_eq!(s, 200);
    assert_eq!(
        a.last().header("authorization").unwrap(),
        "Bearer gh-secret-placeholder-1"
    );
}

#[test]
fn python_requests_with_a_placeholder_api_key() {
    let (a, b) = (Origin::start(), Origin::start());
    let p = start(&a, &b, "");
    let script = format!(
        "import requests\n\
         r = requests.get('http://127.0.0.1:{}/v1/items', params={{'key': 'credproxy:maps'}},\n\
                          auth=('erp', 'credproxy:erp'), proxies={{'http': '{}'}})\n\
         print(r.status_code)\n",
        a.port(),
        p.url()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 with requests (.ci/setup)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text.trim(), "400", "two credentials named: {text}");
    let script = script.replace("auth=('erp', 'credproxy:erp'), ", "");
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200");
    assert_eq!(a.last().uri, "/v1/items?key=maps-key-placeholder-3");
}
