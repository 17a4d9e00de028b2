//! Every validation rule of the API: each bad request gets its 4xx and its stable error
//! code, and nothing is stored.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use quorumkv_tests::{context_of, error_of, Cluster};
use reqwest::blocking::RequestBuilder;
use reqwest::{Method, StatusCode};

const MAX_VALUE: usize = 1000;

struct Case {
    name: &'static str,
    method: Method,
    /// Path and query, appended to the node's URL.
    target: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    target: impl Into<String>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        target: target.into(),
        headers: Vec::new(),
        body: b"new value".to_vec(),
        status: StatusCode::from_u16(status).unwrap(),
        code,
    }
}

fn with_header(mut c: Case, name: &'static str, value: impl Into<String>) -> Case {
    c.headers.push((name, value.into()));
    c
}

fn with_body(mut c: Case, body: Vec<u8>) -> Case {
    c.body = body;
    c
}

#[test]
fn every_invalid_request_is_refused_with_its_code_and_stores_nothing() {
    let cluster = Cluster::start_with(3, &["--max-value-bytes", &MAX_VALUE.to_string()]);
    // A known value the cases try to overwrite, and a context of it to forge from.
    let seed = cluster.put(0, "v", b"k", b"original", "w=3", None);
    assert_eq!(seed.status(), StatusCode::NO_CONTENT);
    let good_context = context_of(&seed).unwrap();
    let mut forged = good_context.clone().into_bytes();
    forged[2] = if forged[2] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let long_key = "k".repeat(1025);
    let long_bucket = "b".repeat(65);
    let k = "/v1/buckets/v/keys/k";

    let cases = vec![
        case(
            "r=0",
            Method::GET,
            format!("{k}?r=0"),
            400,
            "invalid_quorum",
        ),
        case(
            "r above n",
            Method::GET,
            format!("{k}?r=4"),
            400,
            "invalid_quorum",
        ),
        case(
            "r not a number",
            Method::GET,
            format!("{k}?r=two"),
            400,
            "invalid_quorum",
        ),
        case(
            "r negative",
            Method::GET,
            format!("{k}?r=-1"),
            400,
            "invalid_quorum",
        ),
        case(
            "w=0",
            Method::PUT,
            format!("{k}?w=0"),
            400,
            "invalid_quorum",
        ),
        case(
            "w above n",
            Method::PUT,
            format!("{k}?w=4"),
            400,
            "invalid_quorum",
        ),
        case(
            "w absurd",
            Method::PUT,
            format!("{k}?w=18446744073709551616"),
            400,
            "invalid_quorum",
        ),
        case(
            "delete w above n",
            Method::DELETE,
            format!("{k}?w=9"),
            400,
            "invalid_quorum",
        ),
        case(
            "typo W=2",
            Method::PUT,
            format!("{k}?W=2"),
            400,
            "unknown_parameter",
        ),
        case(
            "r on a write",
            Method::PUT,
            format!("{k}?r=2"),
            400,
            "unknown_parameter",
        ),
        case(
            "w on a read",
            Method::GET,
            format!("{k}?w=2"),
            400,
            "unknown_parameter",
        ),
        case(
            "duplicate w",
            Method::PUT,
            format!("{k}?w=1&w=3"),
            400,
            "duplicate_parameter",
        ),
        case(
            "timeout zero",
            Method::PUT,
            format!("{k}?timeout_ms=0"),
            400,
            "invalid_timeout",
        ),
        case(
            "timeout huge",
            Method::PUT,
            format!("{k}?timeout_ms=3600000"),
            400,
            "invalid_timeout",
        ),
        case(
            "timeout text",
            Method::GET,
            format!("{k}?timeout_ms=soon"),
            400,
            "invalid_timeout",
        ),
        case(
            "bad query escape",
            Method::PUT,
            format!("{k}?w=%zz"),
            400,
            "invalid_query",
        ),
        case(
            "bucket too long",
            Method::PUT,
            format!("/v1/buckets/{long_bucket}/keys/k"),
            400,
            "invalid_bucket",
        ),
        case(
            "bucket bad char",
            Method::PUT,
            "/v1/buckets/a%20b/keys/k",
            400,
            "invalid_bucket",
        ),
        case(
            "bucket not utf-8",
            Method::PUT,
            "/v1/buckets/%FF/keys/k",
            400,
            "invalid_bucket",
        ),
        case(
            "bucket bad escape",
            Method::PUT,
            "/v1/buckets/a%2/keys/k",
            400,
            "invalid_bucket",
        ),
        case(
            "key too long",
            Method::PUT,
            format!("/v1/buckets/v/keys/{long_key}"),
            400,
            "invalid_key",
        ),
        case(
            "key empty",
            Method::PUT,
            "/v1/buckets/v/keys/",
            400,
            "invalid_key",
        ),
        case(
            "key bad escape",
            Method::PUT,
            "/v1/buckets/v/keys/k%G0",
            400,
            "invalid_key",
        ),
        with_body(
            case(
                "value over the limit",
                Method::PUT,
                k,
                413,
                "value_too_large",
            ),
            vec![7; MAX_VALUE + 1],
        ),
        with_header(
            case("context garbage", Method::PUT, k, 400, "invalid_context"),
            "x-causal-context",
            "not-a-token",
        ),
        with_header(
            case("context forged", Method::PUT, k, 400, "invalid_context"),
            "x-causal-context",
            forged.clone(),
        ),
        with_header(
            case("context truncated", Method::PUT, k, 400, "invalid_context"),
            "x-causal-context",
            good_context[..good_context.len() - 3].to_string(),
        ),
        with_header(
            case(
                "delete context forged",
                Method::DELETE,
                k,
                400,
                "invalid_context",
            ),
            "x-causal-context",
            forged,
        ),
        with_header(
            case(
                "content type empty",
                Method::PUT,
                k,
                400,
                "invalid_content_type",
            ),
            "content-type",
            "",
        ),
        with_body(
            case(
                "props not JSON",
                Method::PUT,
                "/v1/buckets/v/props",
                400,
                "invalid_json",
            ),
            b"{n: 3".to_vec(),
        ),
        with_body(
            case(
                "props unknown field",
                Method::PUT,
                "/v1/buckets/v/props",
                400,
                "invalid_json",
            ),
            br#"{"n": 3, "x": 1}"#.to_vec(),
        ),
        with_body(
            case(
                "props wrong type",
                Method::PUT,
                "/v1/buckets/v/props",
                400,
                "invalid_json",
            ),
            br#"{"n": "3"}"#.to_vec(),
        ),
        with_body(
            case(
                "props negative",
                Method::PUT,
                "/v1/buckets/v/props",
                400,
                "invalid_json",
            ),
            br#"{"w": -1}"#.to_vec(),
        ),
        with_body(
            case(
                "props r above n",
                Method::PUT,
                "/v1/buckets/v/props",
                400,
                "invalid_props",
            ),
            br#"{"r": 4}"#.to_vec(),
        ),
        with_body(
            case(
                "props n zero",
                Method::PUT,
                "/v1/buckets/v/props",
                400,
                "invalid_props",
            ),
            br#"{"n": 0}"#.to_vec(),
        ),
        with_body(
            case(
                "props n huge",
                Method::PUT,
                "/v1/buckets/v/props",
                400,
                "invalid_props",
            ),
            br#"{"n": 1000}"#.to_vec(),
        ),
        case(
            "props bad bucket",
            Method::PUT,
            "/v1/buckets/a$b/props",
            400,
            "invalid_bucket",
        ),
        case(
            "unknown route",
            Method::GET,
            "/v2/buckets/v/keys/k",
            404,
            "unknown_route",
        ),
        case(
            "wrong method on key",
            Method::POST,
            k,
            405,
            "method_not_allowed",
        ),
        case(
            "wrong method on health",
            Method::DELETE,
            "/v1/health",
            405,
            "method_not_allowed",
        ),
        case(
            "query on health",
            Method::GET,
            "/v1/health?verbose=1",
            400,
            "unknown_parameter",
        ),
    ];
    let count = cases.len();
    for c in cases {
        let mut request: RequestBuilder = cluster
            .http()
            .request(c.method.clone(), format!("{}{}", cluster.url(1), c.target))
            .body(c.body.clone());
        for (name, value) in &c.headers {
            request = request.header(*name, value);
        }
        let response = request.send().unwrap();
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string()),
            Some("application/json".to_string()),
            "{}: errors are JSON",
            c.name
        );
        let (status, code) = error_of(response);
        assert_eq!(
            (status, code.as_str()),
            (c.status, c.code),
            "case {:?}",
            c.name
        );
    }
    // Nothing was stored: the key still holds exactly the original value, and the bucket's
    // properties are still the defaults.
    let read = cluster.get(2, "v", b"k", "r=3");
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.bytes().unwrap().as_ref(), b"original");
    let props: serde_json::Value = cluster
        .http()
        .get(format!("{}/v1/buckets/v/props", cluster.url(0)))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(props, serde_json::json!({"n": 3, "r": 2, "w": 2}));
    for long in [
        format!("/v1/buckets/v/keys/{long_key}"),
        format!("/v1/buckets/{long_bucket}/keys/k"),
    ] {
        let response = cluster
            .http()
            .get(format!("{}{long}", cluster.url(0)))
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
    eprintln!("{count} invalid requests refused, nothing stored");
}

#[test]
fn a_value_exactly_at_the_limit_is_accepted() {
    let cluster = Cluster::start_with(3, &["--max-value-bytes", &MAX_VALUE.to_string()]);
    let value = vec![1u8; MAX_VALUE];
    assert_eq!(
        cluster.put(0, "v", b"full", &value, "", None).status(),
        StatusCode::NO_CONTENT
    );
    let read = cluster.get(1, "v", b"full", "");
    assert_eq!(read.bytes().unwrap().len(), MAX_VALUE);
}
