//! The on-disk record format of a versioned object.
//!
//! A record is what the store keeps under a key in the `records` column family.
//! It carries a format version so that a later build can change the payload
//! and still read every record written before (old decoders stay, frozen,
//! behind their version byte), and a CRC32 so that a flipped bit on disk is
//! reported as corruption instead of being decoded into a plausible but wrong
//! object. RocksDB checksums its blocks too; the record CRC also covers the
//! path through memory and the application, and makes each record checkable
//! on its own when it travels (repair, handoff, tools).
//!
//! Layout of a version 1 record:
//! 1. format version, `u8`, equal to [`RECORD_FORMAT_V1`];
//! 2. CRC32 (IEEE, as computed by `crc32fast`) of the payload, `u32`
//!    big-endian;
//! 3. payload: the postcard encoding of the [`VersionedObject`] (clock as a
//!    length-prefixed map of varint actor to varint counter, then the
//!    siblings as a length-prefixed sequence of dot and value).
//!
//! A version 2 record has the same layout with version byte [`RECORD_FORMAT_V2`],
//! and its payload encodes each version vector in [`WireFormat::V2`]: the map,
//! then the vector's exceptions as a length-prefixed sequence of dots (actor,
//! counter). A record is written in version 1 whenever its clock has no
//! exceptions, which is almost always, so earlier builds still read it, and in
//! version 2 only when it must be; an earlier build refuses a version 2 record
//! as an unknown version rather than misreading it.
//!
//! [`decode_record`] is total: it returns an error, never panics, on any
//! input, so it can be fed arbitrary bytes by a fuzzer.

use crate::error::CodecError;
use crate::object::VersionedObject;
use crate::version::{encode_compatible, with_format, WireFormat};

/// Format version byte of the first record layout: version vectors without exceptions.
pub const RECORD_FORMAT_V1: u8 = 1;
/// Format version byte of the second record layout: version vectors with exceptions.
pub const RECORD_FORMAT_V2: u8 = 2;

/// Bytes before the payload: version byte and CRC32.
const HEADER_LEN: usize = 1 + 4;

/// Encodes `obj` as a record (layouts in the module docs): version 1 when that loses
/// nothing, version 2 otherwise.
pub fn encode_record(obj: &VersionedObject) -> Vec<u8> {
    let (mut record, format) = encode_compatible(|| encode_payload(obj));
    if format == WireFormat::V2 {
        record[0] = RECORD_FORMAT_V2;
    }
    record
}

/// The record of `obj` in the format in force, headed by the version 1 byte.
fn encode_payload(obj: &VersionedObject) -> Vec<u8> {
    // Sized first, so the record is one allocation rather than a Vec grown (and copied)
    // several times as the payload is written: a pass that only counts is cheaper.
    let payload_len = postcard::experimental::serialized_size(obj).unwrap_or(0);
    let mut header = Vec::with_capacity(HEADER_LEN + payload_len);
    // The CRC is filled in once the payload is known.
    header.extend_from_slice(&[RECORD_FORMAT_V1, 0, 0, 0, 0]);
    // Postcard fails only on sequences of unknown length and on writers that
    // run out of room; an object is made of known-length maps, vectors,
    // strings and integers, and a Vec grows, so this cannot fail.
    let mut record = postcard::to_extend(obj, header).expect("encoding an object into a Vec");
    let crc = crc32fast::hash(&record[HEADER_LEN..]);
    record[1..HEADER_LEN].copy_from_slice(&crc.to_be_bytes());
    record
}

/// Decodes a record: checks the version, the length and the CRC, then
/// decodes the payload and validates the object's invariants.
///
/// # Errors
/// [`CodecError::Truncated`] for a record shorter than its header,
/// [`CodecError::UnknownVersion`] for a version byte this build cannot read,
/// [`CodecError::ChecksumMismatch`] when the payload does not match its CRC,
/// [`CodecError::Malformed`] when a checksummed payload does not decode (or
/// has bytes left over), and [`CodecError::Invalid`] when it decodes to an
/// object that breaks an invariant.
pub fn decode_record(bytes: &[u8]) -> Result<VersionedObject, CodecError> {
    let Some((&version, rest)) = bytes.split_first() else {
        return Err(CodecError::Truncated);
    };
    match version {
        RECORD_FORMAT_V1 => with_format(WireFormat::V1, || decode_checked(rest)),
        RECORD_FORMAT_V2 => with_format(WireFormat::V2, || decode_checked(rest)),
        other => Err(CodecError::UnknownVersion(other)),
    }
}

/// Decodes what follows the version byte (CRC, then payload), in the format in force.
fn decode_checked(rest: &[u8]) -> Result<VersionedObject, CodecError> {
    let Some((crc, payload)) = rest.split_first_chunk::<4>() else {
        return Err(CodecError::Truncated);
    };
    let expected = u32::from_be_bytes(*crc);
    let actual = crc32fast::hash(payload);
    if expected != actual {
        return Err(CodecError::ChecksumMismatch { expected, actual });
    }
    let (obj, leftover) = postcard::take_from_bytes::<VersionedObject>(payload)
        .map_err(|err| CodecError::Malformed(err.to_string()))?;
    if !leftover.is_empty() {
        // Our encoder never pads, so extra bytes mean the record is not ours.
        return Err(CodecError::Malformed(format!(
            "{} bytes after the object",
            leftover.len()
        )));
    }
    obj.validate().map_err(CodecError::Invalid)?;
    Ok(obj)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::error::VersionError;
    use crate::object::Value;
    use crate::version::{ActorId, Dot, VersionVector};

    /// A fixed object with a clock entry for an actor that has no sibling, a
    /// data sibling and a tombstone: every part of the payload format.
    fn golden_object() -> VersionedObject {
        let a = ActorId(0x0123_4567_89ab_cdef);
        let b = ActorId(7);
        let mut obj = VersionedObject::new();
        obj.update(
            b,
            &VersionVector::new(),
            Value::data("text/plain", &b"old"[..]),
        )
        .unwrap();
        let context = obj.clock().clone();
        obj.update(a, &context, Value::data("text/plain", &b"hello"[..]))
            .unwrap();
        obj.update(b, &VersionVector::new(), Value::Tombstone)
            .unwrap();
        obj
    }

    /// Pins the version 1 layout: if this changes, old records no longer
    /// decode, and a new format version is needed instead. Reading:
    /// `01` version; `87036041` CRC32; `02` clock entries: `07 02` (actor 7,
    /// counter 2), `ef9bafcdf8acd19101 01` (actor 0x0123456789abcdef,
    /// counter 1); `02` siblings: `07 02` dot, `01` tombstone; `ef..01 01`
    /// dot, `00` data, `0a` + "text/plain", `05` + "hello".
    const GOLDEN_V1_HEX: &str = concat!(
        "01",
        "87036041",
        "02",
        "0702",
        "ef9bafcdf8acd1910101",
        "02",
        "0702",
        "01",
        "ef9bafcdf8acd1910101",
        "00",
        "0a746578742f706c61696e",
        "0568656c6c6f",
    );

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn golden_record_bytes_are_pinned() {
        let encoded = encode_record(&golden_object());
        assert_eq!(hex(&encoded), GOLDEN_V1_HEX, "record format v1 changed");
    }

    #[test]
    fn golden_record_decodes() {
        let bytes: Vec<u8> = (0..GOLDEN_V1_HEX.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&GOLDEN_V1_HEX[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(decode_record(&bytes).unwrap(), golden_object());
    }

    #[test]
    fn round_trip() {
        let obj = golden_object();
        assert_eq!(decode_record(&encode_record(&obj)).unwrap(), obj);
        let empty = VersionedObject::new();
        assert_eq!(decode_record(&encode_record(&empty)).unwrap(), empty);
    }

    #[test]
    fn every_truncation_fails_cleanly() {
        let record = encode_record(&golden_object());
        for len in 0..record.len() {
            let result = decode_record(&record[..len]);
            assert!(result.is_err(), "prefix of {len} bytes decoded: {result:?}");
        }
        assert!(matches!(decode_record(&[]), Err(CodecError::Truncated)));
        assert!(matches!(
            decode_record(&record[..3]),
            Err(CodecError::Truncated)
        ));
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let record = encode_record(&golden_object());
        for at in 0..record.len() {
            for mask in 1..=u8::MAX {
                let mut damaged = record.clone();
                damaged[at] ^= mask;
                let result = decode_record(&damaged);
                assert!(
                    result.is_err(),
                    "flip {mask:#04x} at {at} decoded: {result:?}"
                );
            }
        }
    }

    #[test]
    fn a_clock_with_exceptions_is_written_as_version_2_and_reads_back() {
        let mut obj = golden_object();
        let b = ActorId(7);
        // A context that excepts B:1, below the clock's B entry.
        let context = obj.clock().clone().excluding([Dot::new(b, 1)]);
        obj.update(ActorId(9), &context, Value::data("t", &b"v"[..]))
            .unwrap();
        let mut elsewhere = VersionedObject::new();
        elsewhere
            .update(ActorId(9), &context, Value::data("t", &b"w"[..]))
            .unwrap();
        assert!(!elsewhere.clock().unseen().is_empty());
        let record = encode_record(&elsewhere);
        assert_eq!(record[0], RECORD_FORMAT_V2);
        assert_eq!(decode_record(&record).unwrap(), elsewhere);
        // Without exceptions the record stays version 1.
        assert_eq!(encode_record(&obj)[0], RECORD_FORMAT_V1);
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut record = encode_record(&golden_object());
        record[0] = 3;
        assert!(matches!(
            decode_record(&record),
            Err(CodecError::UnknownVersion(3))
        ));
        assert!(matches!(
            decode_record(&[0]),
            Err(CodecError::UnknownVersion(0))
        ));
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut record = encode_record(&golden_object());
        record.push(0);
        let crc = crc32fast::hash(&record[HEADER_LEN..]);
        record[1..HEADER_LEN].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode_record(&record),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn checksummed_but_invalid_object_is_rejected() {
        // A payload with a correct CRC that describes a sibling its clock
        // does not cover: written by a buggy or foreign encoder.
        let dot = Dot::new(ActorId(1), 1);
        let payload = with_format(WireFormat::V1, || {
            postcard::to_stdvec(&(VersionVector::new(), vec![(dot, Value::Tombstone)]))
        })
        .unwrap();
        let mut record = vec![RECORD_FORMAT_V1];
        record.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
        record.extend_from_slice(&payload);
        assert!(matches!(
            decode_record(&record),
            Err(CodecError::Invalid(VersionError::DotNotCovered(d))) if d == dot
        ));
    }
}
