//! Hostile input against running nodes, over bare sockets: malformed and abusive requests,
//! lying lengths, chunked bombs, huge heads, garbage for the internode route, and clients
//! that stall. Each gets its documented answer (a JSON error with its stable code, or a
//! bare status from the HTTP parser, or a closed connection), every node stays healthy,
//! and no data changes.
//!
//! The internode cases carry the cluster secret, as a compromised or buggy peer's would:
//! they check that what is not a well-formed message is refused and changes nothing. One
//! case without the secret checks that it is refused before anything else.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::time::{Duration, Instant};

use quorumkv_tests::raw::{exchange, request, RawConnection, RawOutcome, RawResponse};
use quorumkv_tests::{context_of, Cluster};
use reqwest::StatusCode;

/// Like `eprintln!`, but written to the process's standard error directly, so that the
/// table shows in the test run's output even when the test passes (the harness captures
/// `eprintln!`).
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

const MAX_VALUE: usize = 1000;
/// The longest any case may take to be answered.
const WAIT: Duration = Duration::from_secs(10);
const KEY: &str = "/v1/buckets/v/keys/k";
const PROPS: &str = "/v1/buckets/v/props";
const RPC: &str = "/internal/v1/rpc";
const RPC_TYPE: (&str, &str) = ("Content-Type", "application/x-quorumkv-rpc");

/// What a case must get back.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A JSON error with this status and stable code.
    Error(u16, &'static str),
    /// A bare status from the HTTP parser, before any route: no body.
    Refused(u16),
    /// The same, or a closed or reset connection: a node may refuse a head too large
    /// before the client has finished sending it.
    RefusedOrCut(u16),
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    /// Close the sending side after the request (the body ends early).
    half_close: bool,
    expect: Expect,
}

fn case(name: &'static str, request: Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        request,
        half_close: false,
        expect,
    }
}

fn error(status: u16, code: &'static str) -> Expect {
    Expect::Error(status, code)
}

/// A request whose head is written by hand (bytes no client library would send).
fn raw_head(lines: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// `size` bytes of chunked body in chunks of `chunk` bytes, with the final empty chunk.
fn chunked(size: usize, chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(b'x', n));
        out.extend_from_slice(b"\r\n");
        left -= n;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[rustfmt::skip] // a table reads best with one row per case
fn cases(good_context: &str, secret: &str) -> Vec<Case> {
    let put = |target: &str, headers: &[(&str, &str)], body: &[u8]| {
        request("PUT", target, headers, body)
    };
    let get = |target: &str| request("GET", target, &[], b"");
    let props = |body: &[u8]| request("PUT", PROPS, &[], body);
    let secret = ("X-Quorumkv-Cluster-Secret", secret);
    let rpc = |body: &[u8]| request("POST", RPC, &[RPC_TYPE, secret], body);
    let chunked_put = |body: Vec<u8>| put(KEY, &[("Transfer-Encoding", "chunked")], &body);

    let mut forged = good_context.as_bytes().to_vec();
    forged[4] = if forged[4] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let truncated = &good_context[..good_context.len() - 3];
    let huge_context = "A".repeat(9 * 1024);
    let long_key = format!("/v1/buckets/v/keys/{}", "k".repeat(1025));
    let long_escaped_key = format!("/v1/buckets/v/keys/{}", "%00".repeat(1025));
    let long_bucket = format!("/v1/buckets/{}/keys/k", "b".repeat(65));
    let huge_bucket = format!("/v1/buckets/{}/keys/k", "b".repeat(20_000));
    let huge_target = format!("/v1/buckets/v/keys/{}", "k".repeat(70_000));
    let megabyte_header = format!("X-Padding: {}", "p".repeat(1 << 20));
    let many_headers: String = (0..10_000).map(|i| format!("X-H{i}: {i:0>90}\r\n")).collect();
    let long_content_type = "a".repeat(300);

    vec![
        // Percent-encoding.
        case("key: escape with a non-hex digit", put("/v1/buckets/v/keys/k%G0", &[], b"x"), error(400, "invalid_key")),
        case("key: escape cut short", put("/v1/buckets/v/keys/k%4", &[], b"x"), error(400, "invalid_key")),
        case("bucket: escape cut short", put("/v1/buckets/v%2/keys/k", &[], b"x"), error(400, "invalid_bucket")),
        case("bucket: escaped slash", get("/v1/buckets/v%2Fw/keys/k"), error(400, "invalid_bucket")),
        case("query: bad escape in a value", put(&format!("{KEY}?w=%zz"), &[], b"x"), error(400, "invalid_query")),
        case("query: bad escape in a name", get(&format!("{KEY}?%zz=1")), error(400, "invalid_query")),
        case("query: escape decoding to invalid UTF-8", get(&format!("{KEY}?r=%ff")), error(400, "invalid_query")),
        // Overlong names.
        case("key: 1025 bytes", put(&long_key, &[], b"x"), error(400, "invalid_key")),
        case("key: 1025 escaped bytes", put(&long_escaped_key, &[], b"x"), error(400, "invalid_key")),
        case("bucket: 65 characters", put(&long_bucket, &[], b"x"), error(400, "invalid_bucket")),
        case("bucket: 20000 characters", get(&huge_bucket), error(400, "invalid_bucket")),
        case("request target of 70 KB", get(&huge_target), Expect::RefusedOrCut(431)),
        // Names that are not UTF-8 or not in the bucket alphabet.
        case("bucket: escaped invalid UTF-8", put("/v1/buckets/%FF%FE/keys/k", &[], b"x"), error(400, "invalid_bucket")),
        case("bucket: escaped overlong UTF-8 (props)", props_put_at("/v1/buckets/%C0%80/props"), error(400, "invalid_bucket")),
        case("bucket: escaped UTF-8 letter", get("/v1/buckets/caf%C3%A9/keys/k"), error(400, "invalid_bucket")),
        case("bucket: raw non-ASCII byte", raw_head(&[b"GET /v1/buckets/\xff/keys/k HTTP/1.1", b"Host: localhost", b"Connection: close"], b""), Expect::Refused(400)),
        case("bucket: empty", get("/v1/buckets//keys/k"), error(400, "invalid_bucket")),
        case("key: empty", put("/v1/buckets/v/keys/", &[], b"x"), error(400, "invalid_key")),
        // Methods and routes.
        case("POST on a key", request("POST", KEY, &[], b"x"), error(405, "method_not_allowed")),
        case("PATCH on props", request("PATCH", PROPS, &[], b"{}"), error(405, "method_not_allowed")),
        case("DELETE on the cluster view", request("DELETE", "/v1/cluster", &[], b""), error(405, "method_not_allowed")),
        case("PUT on metrics", request("PUT", "/metrics", &[], b"x"), error(405, "method_not_allowed")),
        case("made-up method on a key", request("BREW", KEY, &[], b""), error(405, "method_not_allowed")),
        case("GET on the internode route", request("GET", RPC, &[secret], b""), error(405, "method_not_allowed")),
        case("unknown route", get("/v1/buckets/v"), error(404, "unknown_route")),
        case("path traversal", get("/v1/buckets/../../../etc/passwd"), error(404, "unknown_route")),
        // Absurd quorums and timeouts.
        case("r negative", get(&format!("{KEY}?r=-1")), error(400, "invalid_quorum")),
        case("w beyond 64 bits", put(&format!("{KEY}?w=99999999999999999999999"), &[], b"x"), error(400, "invalid_quorum")),
        case("r zero", get(&format!("{KEY}?r=0")), error(400, "invalid_quorum")),
        case("w empty", put(&format!("{KEY}?w="), &[], b"x"), error(400, "invalid_quorum")),
        case("w fractional", put(&format!("{KEY}?w=1.5"), &[], b"x"), error(400, "invalid_quorum")),
        case("timeout negative", get(&format!("{KEY}?timeout_ms=-5")), error(400, "invalid_timeout")),
        case("timeout zero", put(&format!("{KEY}?timeout_ms=0"), &[], b"x"), error(400, "invalid_timeout")),
        case("timeout beyond 64 bits", get(&format!("{KEY}?timeout_ms=99999999999999999999999")), error(400, "invalid_timeout")),
        case("timeout in scientific notation", get(&format!("{KEY}?timeout_ms=1e3")), error(400, "invalid_timeout")),
        // Duplicated and unknown parameters.
        case("w given twice", put(&format!("{KEY}?w=1&w=1"), &[], b"x"), error(400, "duplicate_parameter")),
        case("r given twice, differently", get(&format!("{KEY}?r=1&r=2")), error(400, "duplicate_parameter")),
        case("w given twice, once escaped", put(&format!("{KEY}?w=1&%77=2"), &[], b"x"), error(400, "duplicate_parameter")),
        case("parameter in the wrong case", put(&format!("{KEY}?W=2"), &[], b"x"), error(400, "unknown_parameter")),
        // Causal contexts.
        case("context truncated", put(KEY, &[("X-Causal-Context", truncated)], b"x"), error(400, "invalid_context")),
        case("context forged", put(KEY, &[("X-Causal-Context", &forged)], b"x"), error(400, "invalid_context")),
        case("context forged, on a delete", request("DELETE", KEY, &[("X-Causal-Context", &forged)], b""), error(400, "invalid_context")),
        case("context of 9 KiB", put(KEY, &[("X-Causal-Context", &huge_context)], b"x"), error(400, "invalid_context")),
        case("context given twice", put(KEY, &[("X-Causal-Context", good_context), ("X-Causal-Context", good_context)], b"x"), error(400, "invalid_context")),
        case("context empty", put(KEY, &[("X-Causal-Context", "")], b"x"), error(400, "invalid_context")),
        case("context not base64", put(KEY, &[("X-Causal-Context", "not a token!")], b"x"), error(400, "invalid_context")),
        case("context not ASCII", raw_head(&[b"PUT /v1/buckets/v/keys/k HTTP/1.1", b"Host: localhost", b"Connection: close", b"X-Causal-Context: \xff\xfe", b"Content-Length: 1"], b"x"), error(400, "invalid_context")),
        // Bodies over the limit, and lying lengths.
        case("value over the limit, with Content-Length", put(KEY, &[], &[7; MAX_VALUE + 1]), error(413, "value_too_large")),
        case("value over the limit, chunked", chunked_put(chunked(MAX_VALUE + 1, 91)), error(413, "value_too_large")),
        case("Content-Length of a terabyte, body never sent", put(KEY, &[("Content-Length", "1000000000000")], b""), error(413, "value_too_large")),
        Case {
            half_close: true,
            ..case("Content-Length larger than the body", put(KEY, &[("Content-Length", "100")], b"abc"), error(400, "invalid_body"))
        },
        case("Content-Length smaller than the body", props_with_length("4", b"{n: 3}"), error(400, "invalid_json")),
        case("Content-Length not a number", put(KEY, &[("Content-Length", "ten")], b"x"), Expect::Refused(400)),
        case("Content-Length negative", put(KEY, &[("Content-Length", "-1")], b"x"), Expect::Refused(400)),
        case("Content-Length given twice, differently", put(KEY, &[("Content-Length", "1"), ("Content-Length", "2")], b"xy"), Expect::Refused(400)),
        // Chunked bombs.
        case("chunk size beyond 64 bits", chunked_put(b"FFFFFFFFFFFFFFFFFFFF\r\nabc".to_vec()), error(400, "invalid_body")),
        case("chunk of 2 GiB announced", chunked_put([&b"7FFFFFFF\r\n"[..], &[b'x'; 2 * MAX_VALUE]].concat()), error(413, "value_too_large")),
        case("a thousand one-byte chunks", chunked_put(chunked(MAX_VALUE + 200, 1)), error(413, "value_too_large")),
        case("chunk extension of 100 KB", chunked_put([&b"1;"[..], &[b'e'; 100_000], b"\r\nx\r\n0\r\n\r\n"].concat()), error(400, "invalid_body")),
        case("chunk size that is not hex", chunked_put(b"zz\r\nx\r\n0\r\n\r\n".to_vec()), error(400, "invalid_body")),
        // Heads too large or malformed: refused by the HTTP parser.
        case("a header of 1 MiB", raw_head(&[b"GET /v1/health HTTP/1.1", b"Host: localhost", megabyte_header.as_bytes()], b""), Expect::RefusedOrCut(431)),
        case("10000 headers (about 1 MB)", [&b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n"[..], many_headers.as_bytes(), b"\r\n"].concat(), Expect::RefusedOrCut(431)),
        case("NUL byte in a header value", raw_head(&[b"GET /v1/health HTTP/1.1", b"Host: localhost", b"X-A: a\0b"], b""), Expect::Refused(400)),
        case("header line without a colon", raw_head(&[b"GET /v1/health HTTP/1.1", b"Host: localhost", b"no colon here"], b""), Expect::Refused(400)),
        case("garbage instead of a request line", b"HELLO THERE\r\n\r\n".to_vec(), Expect::Refused(400)),
        case("HTTP/2 preface to an HTTP/1 server", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), Expect::RefusedOrCut(400)),
        case("content type of 300 characters", put(KEY, &[("Content-Type", &long_content_type)], b"x"), error(400, "invalid_content_type")),
        case("content type not ASCII", raw_head(&[b"PUT /v1/buckets/v/keys/k HTTP/1.1", b"Host: localhost", b"Connection: close", b"Content-Type: t\xe9xt", b"Content-Length: 1"], b"x"), error(400, "invalid_content_type")),
        // Bucket properties that are not valid JSON, or not valid props.
        case("props: not JSON", props(b"{n: 3"), error(400, "invalid_json")),
        case("props: field given twice", props(br#"{"n": 3, "n": 4}"#), error(400, "invalid_json")),
        case("props: number out of range", props(br#"{"n": 1e400}"#), error(400, "invalid_json")),
        case("props: fraction", props(br#"{"n": 3.5}"#), error(400, "invalid_json")),
        case("props: beyond 64 bits", props(br#"{"w": 18446744073709551616}"#), error(400, "invalid_json")),
        case("props: null", props(b"null"), error(400, "invalid_json")),
        case("props: deeply nested", props(&[b'['; 900]), error(400, "invalid_json")),
        case("props: not UTF-8", props(b"{\"n\": \xff}"), error(400, "invalid_json")),
        case("props: r above n", props(br#"{"r": 9}"#), error(400, "invalid_props")),
        // The internode route: a caller without the secret, then garbage from one with it.
        case("internode: no cluster secret", request("POST", RPC, &[RPC_TYPE], b"\x01\x00"), error(401, "unauthorized")),
        case("internode: garbage", rpc(b"GET me everything"), error(400, "invalid_message")),
        case("internode: empty body", rpc(b""), error(400, "invalid_message")),
        case("internode: unknown protocol version", rpc(b"\x09\x00"), error(400, "invalid_message")),
        case("internode: unknown request", rpc(b"\x01\x63"), error(400, "invalid_message")),
        case("internode: trailing bytes", rpc(b"\x01\x01\x01v\x01k\x00"), error(400, "invalid_message")),
        case("internode: merge with a truncated object", rpc(b"\x01\x03\x01v\x01k\x02\x07"), error(400, "invalid_message")),
        case("internode: JSON", rpc(br#"{"Merge": {"bucket": "v", "key": "k"}}"#), error(400, "invalid_message")),
        // Names no client could use, from a peer: a bucket with a `$`, an empty key, and the
        // same inside a batch.
        case("internode: get of an invalid bucket", rpc(b"\x01\x01\x03a$b\x01k"), error(400, "invalid_message")),
        case("internode: get of an empty key", rpc(b"\x01\x01\x01v\x00"), error(400, "invalid_message")),
        case("internode: batch with an invalid bucket", rpc(b"\x01\x0e\x02\x00\x01\x03a$b\x01k"), error(400, "invalid_message")),
        // Batches beyond what a sender sends: 300 one-byte items, and 2^27 announced.
        case("internode: batch of 300 items", rpc(&[&[1u8, 14, 0xac, 0x02][..], &[0; 300]].concat()), error(400, "invalid_message")),
        case("internode: batch announcing 2^27 items", rpc(&[1, 14, 0x80, 0x80, 0x80, 0x40, 0, 0, 0]), error(400, "invalid_message")),
    ]
}

fn props_put_at(target: &str) -> Vec<u8> {
    request("PUT", target, &[], b"{}")
}

fn props_with_length(length: &str, body: &[u8]) -> Vec<u8> {
    request("PUT", PROPS, &[("Content-Length", length)], body)
}

/// Whether `outcome` is what `expect` asks for; the reason when it is not.
fn verdict(outcome: &RawOutcome, expect: Expect) -> Result<(), String> {
    let refused = |status: u16| match outcome.response() {
        Some(r) if r.status == status && r.body.is_empty() => Ok(()),
        _ => Err(format!("expected a bare {status}")),
    };
    match expect {
        Expect::Error(status, code) => match outcome.response() {
            Some(r)
                if r.status == status
                    && r.header("content-type") == Some("application/json")
                    && r.error_code().as_deref() == Some(code) =>
            {
                Ok(())
            }
            _ => Err(format!("expected {status} {code}")),
        },
        Expect::Refused(status) => refused(status),
        Expect::RefusedOrCut(status) => match outcome {
            RawOutcome::Closed | RawOutcome::Reset => Ok(()),
            _ => refused(status),
        },
    }
}

fn describe(outcome: &RawOutcome) -> String {
    match outcome {
        RawOutcome::Response(r) => format!(
            "{} {}",
            r.status,
            r.error_code()
                .unwrap_or_else(|| format!("({} body bytes)", r.body.len()))
        ),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The node still serves, and `v`/`k` still holds exactly its value on every replica.
/// Asks for `/v1/health` on a kept-alive `connection`: the answer, or `None` when the
/// send fails or nothing comes within 2 s.
fn health_answer(connection: &mut RawConnection) -> Option<RawResponse> {
    connection
        .send(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .ok()?;
    connection
        .read_response(Duration::from_secs(2))
        .response()
        .cloned()
}

fn assert_healthy_and_unchanged(cluster: &Cluster, nodes: usize, value: &[u8]) {
    for i in 0..nodes {
        let health = cluster
            .http()
            .get(format!("{}/v1/health", cluster.url(i)))
            .send()
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK, "node {i} is healthy");
    }
    let read = cluster.get(nodes - 1, "v", b"k", &format!("r={nodes}"));
    assert_eq!(read.status(), StatusCode::OK, "one value, no siblings");
    assert_eq!(read.bytes().unwrap().as_ref(), value);
}

#[test]
fn hostile_requests_get_their_documented_answer_and_change_nothing() {
    let cluster = Cluster::start_with(3, &["--max-value-bytes", &MAX_VALUE.to_string()]);
    let seed = cluster.put(0, "v", b"k", b"original", "w=3", None);
    assert_eq!(seed.status(), StatusCode::NO_CONTENT);
    let good_context = context_of(&seed).unwrap();

    let cases = cases(&good_context, &cluster.cluster_secret());
    let count = cases.len();
    let mut failures = Vec::new();
    report!("{count} hostile requests, spread over 3 nodes:");
    for (i, c) in cases.into_iter().enumerate() {
        let node = i % 3;
        let started = Instant::now();
        let outcome = if c.half_close {
            let mut connection = RawConnection::open(&cluster.nodes[node].addr).unwrap();
            let _ = connection.send(&c.request);
            connection.finish_sending();
            connection.read_response(WAIT)
        } else {
            exchange(&cluster.nodes[node].addr, &c.request, WAIT)
        };
        let result = verdict(&outcome, c.expect);
        report!(
            "  {:<48} node{} {:>5} ms  {:<28} {}",
            c.name,
            node + 1,
            started.elapsed().as_millis(),
            describe(&outcome),
            if result.is_ok() { "ok" } else { "WRONG" }
        );
        if let Err(why) = result {
            failures.push(format!("{}: {why}, got {}", c.name, describe(&outcome)));
        }
    }
    assert!(
        failures.is_empty(),
        "wrong answers:\n{}",
        failures.join("\n")
    );

    assert_healthy_and_unchanged(&cluster, 3, b"original");
    let props: serde_json::Value = cluster
        .http()
        .get(format!("{}/v1/buckets/v/props", cluster.url(2)))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(props, serde_json::json!({"n": 3, "r": 2, "w": 2}));
    report!("hostile table: all {count} cases answered as documented; every node healthy, data unchanged");
}

/// Slow clients, with short limits so that the test is short: a head sent a byte a second
/// (slowloris), a body sent a byte a second, a body announced and never sent, and more
/// idle connections than the node serves at once.
#[test]
fn slow_and_greedy_clients_are_cut_off() {
    const HEADER_TIMEOUT: Duration = Duration::from_millis(2000);
    const REQUEST_TIMEOUT: Duration = Duration::from_millis(2000);
    const MAX_CONNECTIONS: usize = 4;
    let cluster = Cluster::start_with(
        1,
        &[
            "--default-n",
            "1",
            "--header-timeout-ms",
            &HEADER_TIMEOUT.as_millis().to_string(),
            "--request-timeout-ms",
            &REQUEST_TIMEOUT.as_millis().to_string(),
            "--max-connections",
            &MAX_CONNECTIONS.to_string(),
            "--peer-connections",
            "1",
        ],
    );
    let addr = cluster.nodes[0].addr.clone();
    let put = cluster.put(0, "v", b"k", b"original", "", None);
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let slack = Duration::from_secs(3);

    // Slowloris: the head one byte a second. The header timeout closes the connection.
    let head = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: yes\r\n\r\n";
    let mut slow = RawConnection::open(&addr).unwrap();
    let started = Instant::now();
    let mut sent = 0;
    let mut closed = false;
    while started.elapsed() < HEADER_TIMEOUT + slack && sent < head.len() {
        if slow.send(&head[sent..=sent]).is_err() {
            closed = true;
            break;
        }
        sent += 1;
        if slow.is_closed_within(Duration::from_secs(1)) {
            closed = true;
            break;
        }
    }
    let held = started.elapsed();
    report!("slowloris: {sent} bytes, one a second, then closed after {held:?}: {closed}");
    assert!(closed, "a head sent a byte a second is cut off");
    assert!(
        held >= HEADER_TIMEOUT - Duration::from_millis(100),
        "not before the timeout"
    );
    assert!(sent < head.len(), "the head was never complete");

    // A body one byte a second: 408 request_timeout after the request timeout.
    let mut slow = RawConnection::open(&addr).unwrap();
    let started = Instant::now();
    slow.send(
        b"PUT /v1/buckets/v/keys/k HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n",
    )
    .unwrap();
    let mut outcome = RawOutcome::TimedOut;
    while started.elapsed() < REQUEST_TIMEOUT + slack {
        if slow.send(b"x").is_err() {
            outcome = slow.read_response(Duration::from_secs(1));
            break;
        }
        outcome = slow.read_response(Duration::from_secs(1));
        if !matches!(outcome, RawOutcome::TimedOut) {
            break;
        }
    }
    let response = outcome.response().cloned();
    report!(
        "slow body: {} after {:?}",
        describe(&outcome),
        started.elapsed()
    );
    let response = response.expect("an answer to the slow body");
    assert_eq!(response.status, 408);
    assert_eq!(response.error_code().as_deref(), Some("request_timeout"));
    assert!(slow.is_closed_within(slack), "and the connection is closed");

    // A body announced and never sent (under the limit, so nothing refuses it up front).
    let mut stalled = RawConnection::open(&addr).unwrap();
    let started = Instant::now();
    stalled
        .send(b"PUT /v1/buckets/v/props HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n")
        .unwrap();
    let outcome = stalled.read_response(REQUEST_TIMEOUT + slack);
    report!(
        "stalled body: {} after {:?}",
        describe(&outcome),
        started.elapsed()
    );
    assert_eq!(
        outcome.response().and_then(|r| r.error_code()).as_deref(),
        Some("request_timeout")
    );

    // More connections than the node serves: the harness's own pooled connections close
    // after the header timeout; then MAX_CONNECTIONS idle ones take every client slot. One
    // more takes the slot kept for peers, where a client request gets 503 `overloaded` at
    // once and its connection is closed; with that slot held too (by a silent connection),
    // a request on one more waits until the header timeout frees a slot.
    std::thread::sleep(HEADER_TIMEOUT + Duration::from_millis(500));
    let idle: Vec<RawConnection> = (0..MAX_CONNECTIONS)
        .map(|_| RawConnection::open(&addr).unwrap())
        .collect();
    let mut over = RawConnection::open(&addr).unwrap();
    over.send(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let refused = over.read_response(Duration::from_secs(2));
    report!(
        "connection {} of {MAX_CONNECTIONS}, on the slot kept for peers: {}",
        MAX_CONNECTIONS + 1,
        describe(&refused)
    );
    let refused = refused.response().cloned().expect("an answer, not a wait");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.error_code().as_deref(), Some("overloaded"));
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(over.is_closed_within(Duration::from_secs(2)), "and closed");
    let _silent = RawConnection::open(&addr).unwrap();
    let opened = Instant::now();
    let mut waiting = RawConnection::open(&addr).unwrap();
    waiting
        .send(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let early = waiting.read_response(Duration::from_millis(800));
    let early_elapsed = opened.elapsed();
    let late = waiting.read_response(HEADER_TIMEOUT + slack);
    report!(
        "connection {} of {MAX_CONNECTIONS} and the peers' one: {} within {early_elapsed:?}, then {} after {:?}",
        MAX_CONNECTIONS + 2,
        describe(&early),
        describe(&late),
        opened.elapsed()
    );
    if early_elapsed < HEADER_TIMEOUT - Duration::from_millis(500) {
        assert!(
            matches!(early, RawOutcome::TimedOut),
            "a connection over both limits waits"
        );
    }
    assert_eq!(
        late.response().map(|r| r.status),
        Some(200),
        "then it is served"
    );
    drop(idle);

    assert_healthy_and_unchanged(&cluster, 1, b"original");
    report!("4 slow clients cut off; the node is healthy and its data unchanged");
}

/// Clients together cannot cut a node off from its peers. Before, peers shared the node's
/// connection slots with clients: enough kept-alive connections from a few addresses held
/// every slot, and the node's peers could not reach it. Here two addresses hold every
/// client slot of node 0 (64, at most 32 each); a client on a third address gets a prompt
/// 503 `overloaded` rather than no answer; node 1, restarted meanwhile, must open new
/// connections to node 0, which it gets on the slots kept for peers: it sees node 0 up, and
/// a write it coordinates at w=3 reaches node 0.
#[test]
fn clients_together_cannot_take_the_connections_kept_for_peers() {
    let mut cluster = Cluster::start_with(
        3,
        &[
            "--max-connections",
            "64",
            "--max-connections-per-ip",
            "32",
            "--peer-connections",
            "16",
            "--header-timeout-ms",
            "30000",
        ],
    );
    let addr = cluster.nodes[0].addr.clone();
    let mut held = Vec::new();
    let mut refused = 0;
    for source in [[127, 0, 0, 2], [127, 0, 0, 4]] {
        for _ in 0..32 {
            let Ok(mut connection) = RawConnection::open_from(source.into(), &addr) else {
                continue;
            };
            match health_answer(&mut connection) {
                Some(response) if response.status == 200 => held.push(connection),
                Some(response) if response.status == 503 => refused += 1,
                other => panic!("neither served nor refused: {other:?}"),
            }
        }
    }
    report!(
        "64 connections from two addresses: {} served and held, {refused} sent away (the \
         peers' and the harness's connections hold the other client slots)",
        held.len()
    );
    assert!(held.len() >= 48, "{} held", held.len());

    let mut other = RawConnection::open_from([127, 0, 0, 3].into(), &addr).unwrap();
    let response = health_answer(&mut other).expect("an answer, not a wait");
    assert_eq!(response.status, 503);
    assert_eq!(response.error_code().as_deref(), Some("overloaded"));
    assert!(other.is_closed_within(Duration::from_secs(2)));

    assert!(cluster.terminate(1).success());
    cluster.restart(1);
    cluster
        .wait_member_status(1, 0, "up")
        .expect("the restarted node sees node 0 up");
    let put = cluster.put(1, "crowded", b"k", b"v", "w=3", None);
    assert_eq!(
        put.status(),
        StatusCode::NO_CONTENT,
        "node 1 still replicates to node 0"
    );
    drop(held);
    // The clients sent away, the one from 127.0.0.3, and at least one of node 1's.
    let on_peer_slots = cluster.metric(0, "quorumkv_connections_on_peer_slots_total", "");
    assert!(on_peer_slots > f64::from(refused + 1), "{on_peer_slots}");
}

/// A client that sends its whole over-limit body before it reads an answer, as Python's
/// `http.client` does, still gets the 413: the node reads and drops the body first instead
/// of answering and closing under the client's writes (which then met a reset connection
/// and never saw the status).
#[test]
fn an_over_limit_body_sent_whole_still_gets_its_413() {
    let cluster = Cluster::start(1);
    const MIB: usize = 1024 * 1024;
    // 24 MiB against the default limit of 1 MiB: far more than the socket buffers hold.
    let length = 24 * MIB;
    let head = format!(
        "PUT /v1/buckets/big/keys/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n"
    );
    let mut connection = RawConnection::open(&cluster.nodes[0].addr).unwrap();
    connection.send(head.as_bytes()).unwrap();
    let chunk = vec![b'x'; MIB];
    for sent in 0..length / MIB {
        if let Err(e) = connection.send(&chunk) {
            panic!("the node cut the body off after {sent} MiB: {e}");
        }
    }
    match connection.read_response(Duration::from_secs(10)) {
        RawOutcome::Response(response) => {
            assert_eq!(response.status, 413);
            assert_eq!(response.error_code().as_deref(), Some("value_too_large"));
        }
        other => panic!("no 413 after the whole body: {other:?}"),
    }
    let read = cluster.get(0, "big", b"k", "r=1");
    assert_eq!(read.status(), StatusCode::NOT_FOUND, "nothing was stored");
}

/// One client address cannot take every connection: before, 1,100 idle kept-alive
/// connections from one address held every slot, a client elsewhere got no answer, and the
/// node's peers, which share the slots, could not reach it. With short limits: 100
/// connections from 127.0.0.2 hold 32 slots of 64 (the rest are closed at once), a client
/// on 127.0.0.3 is served, and a write that needs every node still succeeds. A 401 closes
/// its connection.
#[test]
fn one_client_address_cannot_take_every_connection() {
    let cluster = Cluster::start_with(
        3,
        &[
            "--max-connections",
            "64",
            "--max-connections-per-ip",
            "32",
            "--header-timeout-ms",
            "30000",
        ],
    );
    let addr = cluster.nodes[0].addr.clone();
    let served = |connection: &mut RawConnection| {
        health_answer(connection).is_some_and(|response| response.status == 200)
    };
    let greedy: std::net::IpAddr = [127, 0, 0, 2].into();
    let mut held = Vec::new();
    for _ in 0..100 {
        if let Ok(mut connection) = RawConnection::open_from(greedy, &addr) {
            if served(&mut connection) {
                held.push(connection);
            }
        }
    }
    report!(
        "100 connections from 127.0.0.2: {} served and held",
        held.len()
    );
    assert_eq!(held.len(), 32);

    let mut other = RawConnection::open_from([127, 0, 0, 3].into(), &addr).unwrap();
    assert!(served(&mut other), "a client on another address is served");
    let put = cluster.put(1, "greedy", b"k", b"v", "w=3", None);
    assert_eq!(
        put.status(),
        StatusCode::NO_CONTENT,
        "the peers still reach the node"
    );
    assert!(cluster.metric(0, "quorumkv_connections_refused_per_ip_total", "") >= 68.0);

    // A 401 closes its connection (here: an internode request without the secret).
    let mut guess = RawConnection::open(&addr).unwrap();
    guess
        .send(b"POST /internal/v1/rpc HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n\x01\x00")
        .unwrap();
    match guess.read_response(Duration::from_secs(2)) {
        RawOutcome::Response(response) => assert_eq!(response.status, 401),
        other => panic!("no 401: {other:?}"),
    }
    assert!(
        guess.is_closed_within(Duration::from_secs(2)),
        "the 401 closed the connection"
    );
    drop(held);
}
