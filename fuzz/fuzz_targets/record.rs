//! Stored records (`quorumkv_replica::codec`): what the store reads back from RocksDB, and
//! what a damaged disk or a foreign writer can leave there.
//!
//! Each input is tried twice: as a whole record, and as the payload of a record whose
//! header (version, CRC) is made valid, so that the fuzzer gets past the checksum and
//! reaches the object decoder and its invariant checks.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quorumkv_replica::{decode_record, encode_record, RECORD_FORMAT_V1};

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut record = Vec::with_capacity(data.len() + 5);
    record.push(RECORD_FORMAT_V1);
    record.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
    record.extend_from_slice(data);
    check(&record);
});

/// Decoding never panics; a record that decodes re-encodes to one that decodes to the same
/// object, and that encoding is a fixed point.
fn check(bytes: &[u8]) {
    let Ok(object) = decode_record(bytes) else {
        return;
    };
    let encoded = encode_record(&object);
    let again = decode_record(&encoded).expect("a re-encoded record decodes");
    assert_eq!(again, object, "the round trip changed the object");
    assert_eq!(encode_record(&again), encoded, "encoding is not canonical");
}
