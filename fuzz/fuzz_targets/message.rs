//! Internode messages (`quorumkv_coordinator::message`): the body of
//! `POST /internal/v1/rpc` as a node receives it (requests), and a peer's answer as the
//! caller receives it (responses). Every input is decoded as both, and a request is then
//! validated as the internode route does.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use quorumkv_coordinator::message::{decode, encode, validate, Request, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

fuzz_target!(|data: &[u8]| {
    check::<Request>(data);
    check::<Response>(data);
    // What a node checks after decoding a request never panics either.
    if let Ok(request) = decode::<Request>(data) {
        let _ = validate(&request);
    }
});

/// Decoding never panics; a message that decodes re-encodes to one that decodes to the same
/// message, and that encoding is a fixed point.
fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) {
    let Ok(message) = decode::<T>(bytes) else {
        return;
    };
    let encoded = encode(&message);
    let again = decode::<T>(&encoded).expect("a re-encoded message decodes");
    assert_eq!(again, message, "the round trip changed the message");
    assert_eq!(encode(&again), encoded, "encoding is not canonical");
}
