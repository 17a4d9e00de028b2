//! Causal context tokens (`quorumkv_coordinator::context`): the `X-Causal-Context` header,
//! which any client can set to anything.
//!
//! Each input is tried twice: as a token, and as the payload of a token whose version byte
//! and checksum are made valid, so that the fuzzer gets past the checksum and reaches the
//! version vector decoder.

#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use quorumkv_coordinator::{decode_context, encode_context};

/// The token format version and checksum domain, as `docs/formats.md` describes them.
const TOKEN_V1: u8 = 1;
const DOMAIN_TAG: &[u8] = b"quorumkv-causal-context";

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        check(token);
    }
    let mut body = Vec::with_capacity(data.len() + 5);
    body.push(TOKEN_V1);
    body.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(DOMAIN_TAG);
    crc.update(&body);
    body.extend_from_slice(&crc.finalize().to_be_bytes());
    check(&URL_SAFE_NO_PAD.encode(body));
});

/// Decoding never panics; a token that decodes re-encodes to one that decodes to the same
/// vector, and that encoding is a fixed point.
fn check(token: &str) {
    let Ok(clock) = decode_context(token) else {
        return;
    };
    let encoded = encode_context(&clock);
    let again = decode_context(&encoded).expect("a re-encoded token decodes");
    assert_eq!(again, clock, "the round trip changed the vector");
    assert_eq!(encode_context(&again), encoded, "encoding is not canonical");
}
