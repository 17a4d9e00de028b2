//! Property tests of the record codec: reachable objects round-trip, and
//! arbitrary bytes, damaged records and checksummed garbage are rejected
//! without a panic.

mod common;

use proptest::prelude::*;
use proptest::sample::Index;
use quorumkv_replica::{
    decode_record, encode_record, CodecError, RECORD_FORMAT_V1, RECORD_FORMAT_V2,
};

use common::{history, run};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn reachable_objects_round_trip((n, ops) in history(30), pick in any::<Index>()) {
        let h = run(n, &ops)?;
        let mut states = h.snapshots.clone();
        states.push(h.merged());
        let obj = &states[pick.index(states.len())];
        let record = encode_record(obj);
        // The first format whenever it can hold the clock, so earlier builds read it.
        let format = if obj.clock().unseen().is_empty() { RECORD_FORMAT_V1 } else { RECORD_FORMAT_V2 };
        prop_assert_eq!(record[0], format);
        match decode_record(&record) {
            Ok(decoded) => prop_assert_eq!(&decoded, obj),
            Err(err) => prop_assert!(false, "a valid record failed to decode: {}", err),
        }
    }

    #[test]
    fn damaged_records_never_decode(
        (n, ops) in history(20), at in any::<Index>(), mask in 1u8..=255, cut in any::<Index>()
    ) {
        let h = run(n, &ops)?;
        let record = encode_record(&h.merged());
        let mut flipped = record.clone();
        flipped[at.index(record.len())] ^= mask;
        prop_assert!(decode_record(&flipped).is_err());
        let truncated = &record[..cut.index(record.len())];
        prop_assert!(decode_record(truncated).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_record(&bytes);
    }

    /// Garbage behind a valid header reaches the payload decoder and the
    /// validator; whatever it decodes to must satisfy the invariants.
    #[test]
    fn checksummed_garbage_is_rejected_or_valid(
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        second_format in any::<bool>(),
    ) {
        let mut record = vec![if second_format { RECORD_FORMAT_V2 } else { RECORD_FORMAT_V1 }];
        record.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
        record.extend_from_slice(&payload);
        match decode_record(&record) {
            Ok(obj) => prop_assert_eq!(obj.validate(), Ok(())),
            Err(CodecError::Malformed(_) | CodecError::Invalid(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error {:?}", other),
        }
    }
}
