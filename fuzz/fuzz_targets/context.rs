//! Causal context tokens (`quorumkv_coordinator::context`): the `X-Causal-Context` header,
//! which any client can set to anything.
//!
//! Each input is tried twice: as a token, and as the version byte and payload of a token
//! signed with the fuzzer's key, so that the fuzzer gets past the MAC and reaches the
//! version vector decoder.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quorumkv_coordinator::ContextKey;

const BUCKET: &[u8] = b"bucket";
const KEY: &[u8] = b"key";

fuzz_target!(|data: &[u8]| {
    let signer = ContextKey::from_bytes([7; 32]);
    if let Ok(token) = std::str::from_utf8(data) {
        check(&signer, token);
    }
    check(&signer, &signer.sign_raw(BUCKET, KEY, data));
});

/// Decoding never panics; a token that decodes re-encodes to one that decodes to the same
/// vector, that encoding is a fixed point, and it is good for its own key only.
fn check(signer: &ContextKey, token: &str) {
    let Ok(clock) = signer.decode(BUCKET, KEY, token) else {
        return;
    };
    let encoded = signer.encode(BUCKET, KEY, &clock);
    let again = signer
        .decode(BUCKET, KEY, &encoded)
        .expect("a re-encoded token decodes");
    assert_eq!(again, clock, "the round trip changed the vector");
    assert_eq!(
        signer.encode(BUCKET, KEY, &again),
        encoded,
        "encoding is not canonical"
    );
    assert!(
        signer.decode(BUCKET, b"another key", &encoded).is_err(),
        "a token is good for another key"
    );
}
