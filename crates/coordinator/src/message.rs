//! The internode protocol: what one node asks of another, and the answers.
//!
//! Messages are small and frequent, so they travel as a compact binary body rather than
//! JSON. Every body is framed as:
//!
//! 1. protocol version, one byte: `1`, or `2` when a version vector in the message has
//!    exceptions;
//! 2. the message, postcard-encoded (a serde enum: variant index, then fields), with
//!    version vectors in the [`WireFormat`] of the same number.
//!
//! A message is framed as version 1 whenever that loses nothing, so nodes of earlier
//! releases read everything but the rare vector with exceptions, which they refuse as an
//! unknown version rather than misread.
//!
//! A node refuses a version it does not know with a clear error instead of misreading it;
//! new variants are appended at the end of the enums so that older nodes fail cleanly on
//! them. The same [`Request`] type is executed in-process for the local replica, so the
//! local and remote paths cannot drift apart.

use std::cell::Cell;
use std::collections::BTreeMap;

use quorumkv_replica::{
    encode_compatible, with_format, Dot, Value, VersionVector, VersionedObject, WireFormat,
};
use quorumkv_ring::NodeId;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::gossip::MemberRecord;
use crate::props::VersionedProps;

/// The internode protocol version of messages whose version vectors have no exceptions.
pub const PROTOCOL_V1: u8 = 1;
/// The internode protocol version of messages with a version vector that has exceptions.
pub const PROTOCOL_V2: u8 = 2;

/// A request from one node to another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Who are you? Also the liveness probe.
    Hello,
    /// The replica's copy of a key.
    Get {
        /// Bucket name bytes.
        bucket: Vec<u8>,
        /// Key bytes.
        key: Vec<u8>,
    },
    /// Mint a new version of a key at this replica (it becomes the write's coordinator).
    Coordinate {
        /// Bucket name bytes.
        bucket: Vec<u8>,
        /// Key bytes.
        key: Vec<u8>,
        /// The versions the client saw and this write supersedes.
        context: VersionVector,
        /// The new value or a tombstone.
        value: Value,
    },
    /// Merge a version minted elsewhere into this replica.
    Merge {
        /// Bucket name bytes.
        bucket: Vec<u8>,
        /// Key bytes.
        key: Vec<u8>,
        /// The coordinator's full state of the key.
        object: VersionedObject,
    },
    /// Does this replica hold any record of the bucket?
    BucketHasKeys {
        /// Bucket name bytes.
        bucket: Vec<u8>,
    },
    /// Every bucket's properties this node knows.
    GetProps,
    /// Adopt these bucket properties where they are newer.
    PutProps {
        /// Bucket name to its versioned properties.
        props: BTreeMap<String, VersionedProps>,
    },
    /// The hint this node holds for `owner` on a key (a sloppy read at a fallback).
    GetHint {
        /// The owner the hint is kept for.
        owner: NodeId,
        /// Bucket name bytes.
        bucket: Vec<u8>,
        /// Key bytes.
        key: Vec<u8>,
    },
    /// Keep this state of a key as a hint for `owner`, which is down (a sloppy write at a
    /// fallback).
    MergeHint {
        /// The owner the hint is kept for.
        owner: NodeId,
        /// Bucket name bytes.
        bucket: Vec<u8>,
        /// Key bytes.
        key: Vec<u8>,
        /// The coordinator's full state of the key.
        object: VersionedObject,
    },
    /// The root hash of each anti-entropy tree (one per bucket) of a partition.
    AaeRoots {
        /// The partition.
        partition: u32,
    },
    /// The 256 segment hashes of the anti-entropy tree of a partition and bucket.
    AaeSegments {
        /// The partition.
        partition: u32,
        /// Bucket name bytes.
        bucket: Vec<u8>,
    },
    /// The (key, digest) pairs of some segments of an anti-entropy tree.
    AaeKeys {
        /// The partition.
        partition: u32,
        /// Bucket name bytes.
        bucket: Vec<u8>,
        /// The segments, each a `u8`.
        segments: Vec<u8>,
    },
    /// Who are you, and in which zone? The liveness probe.
    Describe,
    /// Gossip push: the sender's member table; the answer is the receiver's, merged.
    Gossip {
        /// Every record the sender holds.
        records: Vec<MemberRecord>,
    },
    /// Several requests at once, answered by [`Response::Batch`] item by item, in order.
    ///
    /// (Declared before [`Request::Mint`] to keep the variant indexes of earlier releases.)
    /// A node sends the requests it has for a peer together while an earlier exchange with
    /// that peer is in flight. Items are executed as if sent one by one, concurrently; a
    /// batch never holds a batch (refused when decoding). An empty batch asks whether the
    /// peer understands batches, at no cost.
    Batch(#[serde(deserialize_with = "unnested")] Vec<Request>),
    /// [`Request::Coordinate`], answered by [`Response::Minted`]: the coordinator needs the
    /// minted dot to answer the client with a context that covers it and nothing the
    /// client had not seen ([`VersionedObject::write_context`]).
    Mint {
        /// Bucket name bytes.
        bucket: Vec<u8>,
        /// Key bytes.
        key: Vec<u8>,
        /// The versions the client saw and this write supersedes.
        context: VersionVector,
        /// The new value or a tombstone.
        value: Value,
    },
    /// Remove this tombstone if the replica holds exactly it: every owner agreed to reap
    /// it, and the reaping owner asks the others to reap theirs at once, so that none hands
    /// it back to another by anti-entropy and starts its grace again. Answered by
    /// [`Response::Ack`] whether or not it was there.
    Reap {
        /// Bucket name bytes.
        bucket: Vec<u8>,
        /// Key bytes.
        key: Vec<u8>,
        /// The tombstone every owner held.
        object: VersionedObject,
    },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Hello`].
    Hello {
        /// The answering node's id.
        node: NodeId,
    },
    /// The replica's state of a key (`None`: never written here).
    Object(Option<VersionedObject>),
    /// Done.
    Ack,
    /// Answer to [`Request::BucketHasKeys`].
    HasKeys(bool),
    /// Answer to [`Request::GetProps`].
    Props(BTreeMap<String, VersionedProps>),
    /// The replica could not do it.
    Error {
        /// What kind of failure.
        kind: RemoteErrorKind,
        /// Details for logs and error messages.
        message: String,
    },
    /// Answer to [`Request::AaeRoots`]: (bucket, root hash), in bucket order.
    AaeRoots(Vec<(Vec<u8>, u64)>),
    /// Answer to [`Request::AaeSegments`]: 256 segment hashes.
    AaeSegments(Vec<u64>),
    /// Answer to [`Request::AaeKeys`]: (key, record digest) pairs.
    AaeKeys(Vec<(Vec<u8>, u64)>),
    /// Answer to [`Request::Describe`].
    Described {
        /// The answering node's id.
        node: NodeId,
        /// Its zone, if it has one.
        zone: Option<String>,
    },
    /// Answer to [`Request::Gossip`]: the receiver's member table after the merge.
    Gossip {
        /// Every record the receiver holds.
        records: Vec<MemberRecord>,
    },
    /// Answer to [`Request::Batch`]: one response per item, in the items' order.
    Batch(#[serde(deserialize_with = "unnested")] Vec<Response>),
    /// Answer to [`Request::Mint`]: the replica's state of the key after the write, and
    /// the dot the write minted.
    Minted {
        /// The replica's full state of the key.
        object: VersionedObject,
        /// The write's dot.
        dot: Dot,
    },
}

/// Why a replica refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteErrorKind {
    /// The record is corrupt on this replica.
    Corrupt,
    /// Storage failed.
    Storage,
    /// The request was malformed or invalid.
    BadRequest,
    /// The node holds as many hints as it may.
    HintsFull,
    /// The key holds its maximum number of siblings and the write resolves none.
    TooManySiblings,
    /// The key's record would be over the size limit.
    ObjectTooLarge,
    /// The key's clock would hold more entries than the limit.
    ClockTooLarge,
    /// The write's context names a dot of the minting replica's actor that it never
    /// minted: a context not read from this cluster. Last, so that the variants before
    /// it keep their indexes on the wire; a node that predates it fails to decode it and
    /// counts the replica as failed, as for any answer it cannot read.
    ContextAhead,
}

/// A body that could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The body is empty.
    #[error("empty message")]
    Empty,
    /// The version byte is not one this node speaks.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The payload does not decode.
    #[error("malformed message: {0}")]
    Malformed(String),
}

thread_local! {
    /// Whether this thread is decoding the items of a batch, to refuse a batch in one.
    static IN_BATCH: Cell<bool> = const { Cell::new(false) };
}

/// The most items a batch holds: what a sender puts in one at most. The decoder refuses a
/// batch that announces more before it decodes any item: a request of one-byte items
/// would otherwise expand each byte into a whole request in memory (one 128 MiB body into
/// tens of GiB).
pub const MAX_BATCH_ITEMS: usize = 256;

/// Decodes at most [`MAX_BATCH_ITEMS`] items of a sequence.
struct Bounded<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Bounded<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a batch of at most {MAX_BATCH_ITEMS} items")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let over =
            |n: usize| A::Error::custom(format!("a batch of {n} items, over {MAX_BATCH_ITEMS}"));
        if let Some(n) = seq.size_hint().filter(|n| *n > MAX_BATCH_ITEMS) {
            return Err(over(n));
        }
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            if items.len() == MAX_BATCH_ITEMS {
                return Err(over(MAX_BATCH_ITEMS + 1));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// Decodes the items of a batch, at most [`MAX_BATCH_ITEMS`] of them, refusing a batch
/// among them. Nesting has no use, and refusing it bounds the decoder's recursion: a body
/// of nested one-item batches would otherwise recurse once per two bytes and overflow the
/// stack.
fn unnested<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    /// Clears the flag however decoding ends.
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_BATCH.set(false);
        }
    }
    if IN_BATCH.replace(true) {
        return Err(D::Error::custom("a batch inside a batch"));
    }
    let _leave = Leave;
    deserializer.deserialize_seq(Bounded(std::marker::PhantomData))
}

/// Checks what decoding cannot, in a request a peer sent: bucket names and keys follow the
/// rules a client's do (a peer with the secret could otherwise store what no client could
/// name or reach), bucket properties name valid buckets, and a gossip message carries at
/// most [`MAX_MEMBERS`](crate::gossip::MAX_MEMBERS) records. Member records themselves are
/// checked where they are merged. Returns why a request is refused.
pub fn validate(request: &Request) -> Result<(), String> {
    use crate::names::{BucketName, Key};
    let bucket = |b: &[u8]| BucketName::check(b).map_err(|e| e.to_string());
    let key = |b: &[u8], k: &[u8]| {
        bucket(b)?;
        Key::check(k).map_err(|e| e.to_string())
    };
    match request {
        Request::Get { bucket: b, key: k }
        | Request::Coordinate {
            bucket: b, key: k, ..
        }
        | Request::Merge {
            bucket: b, key: k, ..
        }
        | Request::GetHint {
            bucket: b, key: k, ..
        }
        | Request::MergeHint {
            bucket: b, key: k, ..
        }
        | Request::Mint {
            bucket: b, key: k, ..
        }
        | Request::Reap {
            bucket: b, key: k, ..
        } => key(b, k),
        Request::BucketHasKeys { bucket: b }
        | Request::AaeSegments { bucket: b, .. }
        | Request::AaeKeys { bucket: b, .. } => bucket(b),
        Request::PutProps { props } => props.keys().try_for_each(|name| bucket(name.as_bytes())),
        Request::Gossip { records } if records.len() > crate::gossip::MAX_MEMBERS => Err(format!(
            "gossip of {} records, over {}",
            records.len(),
            crate::gossip::MAX_MEMBERS
        )),
        Request::Batch(items) => items.iter().try_for_each(validate),
        Request::Hello
        | Request::Describe
        | Request::GetProps
        | Request::AaeRoots { .. }
        | Request::Gossip { .. } => Ok(()),
    }
}

/// Frames a message: version byte, then postcard (version 1 unless that would lose an
/// exception of a version vector).
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let (mut out, format) = encode_compatible(|| encode_payload(message));
    if format == WireFormat::V2 {
        out[0] = PROTOCOL_V2;
    }
    out
}

/// The framed message in the format in force, headed by the version 1 byte.
fn encode_payload<T: Serialize>(message: &T) -> Vec<u8> {
    // Sized first: one allocation, where growing a Vec as postcard writes took several.
    let len = postcard::experimental::serialized_size(message).unwrap_or(0);
    let mut out = Vec::with_capacity(1 + len);
    out.push(PROTOCOL_V1);
    // Serialising these enums into a Vec cannot fail: every field is a plain value.
    postcard::to_extend(message, out).unwrap_or_else(|_| vec![PROTOCOL_V1])
}

/// Reads a framed message; never panics, whatever the bytes.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&version, payload) = bytes.split_first().ok_or(DecodeError::Empty)?;
    let format = match version {
        PROTOCOL_V1 => WireFormat::V1,
        PROTOCOL_V2 => WireFormat::V2,
        other => return Err(DecodeError::UnsupportedVersion(other)),
    };
    let (message, rest) = with_format(format, || postcard::take_from_bytes(payload))
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use quorumkv_replica::ActorId;

    use super::*;

    #[test]
    fn requests_round_trip() {
        let context: VersionVector = [(ActorId(1), 2)].into_iter().collect();
        let requests = vec![
            Request::Hello,
            Request::Get {
                bucket: b"b".to_vec(),
                key: vec![0, 255],
            },
            Request::Coordinate {
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
                context,
                value: Value::Tombstone,
            },
            Request::BucketHasKeys {
                bucket: b"b".to_vec(),
            },
            Request::GetProps,
        ];
        for request in requests {
            assert_eq!(decode::<Request>(&encode(&request)), Ok(request));
        }
    }

    /// Pins protocol v1 framing: nodes of adjacent versions must understand each other
    /// during a rolling upgrade.
    #[test]
    fn golden_frames_are_pinned() {
        let get = Request::Get {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
        };
        assert_eq!(encode(&get), [1, 1, 1, b'b', 1, b'k']);
        assert_eq!(encode(&Request::Hello), [1, 0]);
        assert_eq!(encode(&Response::Ack), [1, 2]);
        assert_eq!(encode(&Response::Object(None)), [1, 1, 0]);
        assert_eq!(encode(&Request::Gossip { records: vec![] }), [1, 13, 0]);
        assert_eq!(encode(&Response::Gossip { records: vec![] }), [1, 10, 0]);
        let batch = Request::Batch(vec![Request::Hello, get]);
        assert_eq!(encode(&batch), [1, 14, 2, 0, 1, 1, b'b', 1, b'k']);
        let answers = Response::Batch(vec![Response::Ack, Response::Object(None)]);
        assert_eq!(encode(&answers), [1, 11, 2, 2, 1, 0]);
    }

    #[test]
    fn a_context_with_exceptions_travels_as_version_2() {
        let a = ActorId(1);
        let context: VersionVector = [(a, 3)].into_iter().collect();
        let context = context.excluding([Dot::new(a, 2)]);
        let mint = Request::Mint {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            context: context.clone(),
            value: Value::Tombstone,
        };
        let body = encode(&mint);
        assert_eq!(body[0], PROTOCOL_V2);
        assert_eq!(decode::<Request>(&body), Ok(mint));
        // The same message without the exception stays version 1.
        let plain = Request::Mint {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            context: [(a, 3)].into_iter().collect(),
            value: Value::Tombstone,
        };
        assert_eq!(encode(&plain)[0], PROTOCOL_V1);
        // A version 2 body read as version 1 is refused or misread, never this message.
        let mut as_v1 = body;
        as_v1[0] = PROTOCOL_V1;
        assert_ne!(decode::<Request>(&as_v1).ok(), Some(plain));
    }

    /// A peer's request names buckets and keys as a client's must, also inside a batch.
    #[test]
    fn requests_with_names_no_client_could_use_are_refused() {
        let get = |bucket: &[u8], key: &[u8]| Request::Get {
            bucket: bucket.to_vec(),
            key: key.to_vec(),
        };
        assert_eq!(validate(&get(b"users", b"k")), Ok(()));
        for bad in [
            get(b"a$b", b"k"),
            get(b"", b"k"),
            get(b"users", b""),
            get(&[b'b'; 65], b"k"),
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
            assert!(validate(&Request::Batch(vec![Request::Hello, bad])).is_err());
        }
        assert!(validate(&get(b"users", &[0; 1025])).is_err());
        let entry = VersionedProps {
            props: crate::quorum::BucketProps { n: 3, r: 2, w: 2 },
            version: crate::props::PropsVersion {
                millis: 1,
                node: NodeId::new("n"),
            },
        };
        let props = Request::PutProps {
            props: [("no/slash".to_string(), entry)].into(),
        };
        assert!(validate(&props).is_err());
        let crowd = Request::Gossip {
            records: vec![
                MemberRecord::new(
                    NodeId::new("n"),
                    "h:1".into(),
                    None,
                    crate::gossip::MemberState::Active
                );
                crate::gossip::MAX_MEMBERS + 1
            ],
        };
        assert!(validate(&crowd).is_err());
    }

    /// A batch holds what a sender sends at most: one more item, or a count announced far
    /// beyond what the body holds, is refused before any item is decoded.
    #[test]
    fn a_batch_over_the_item_limit_is_refused() {
        let full = Request::Batch(vec![Request::Hello; MAX_BATCH_ITEMS]);
        assert_eq!(decode::<Request>(&encode(&full)), Ok(full));
        let over = Request::Batch(vec![Request::Hello; MAX_BATCH_ITEMS + 1]);
        assert!(matches!(
            decode::<Request>(&encode(&over)),
            Err(DecodeError::Malformed(_))
        ));
        // 2^27 one-byte items announced, three sent: refused by the count alone.
        let announced = [1, 14, 0x80, 0x80, 0x80, 0x40, 0, 0, 0];
        assert!(decode::<Request>(&announced).is_err());
        let answers = Response::Batch(vec![Response::Ack; MAX_BATCH_ITEMS + 1]);
        assert!(decode::<Response>(&encode(&answers)).is_err());
    }

    #[test]
    fn batches_round_trip_and_never_nest() {
        let batch = Request::Batch(vec![
            Request::Get {
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
            },
            Request::Batch(vec![]),
        ]);
        assert!(matches!(
            decode::<Request>(&encode(&batch)),
            Err(DecodeError::Malformed(_))
        ));
        let flat = Request::Batch(vec![Request::Hello, Request::Describe]);
        assert_eq!(decode::<Request>(&encode(&flat)), Ok(flat));
        // A deep nest is refused at its second level, not by running out of stack.
        let tag = encode(&Request::Batch(Vec::new()))[1];
        let mut deep = vec![PROTOCOL_V1];
        for _ in 0..100_000 {
            deep.extend([tag, 1]);
        }
        deep.extend([tag, 0]);
        assert!(decode::<Request>(&deep).is_err());
        // And the flag does not stay set after a refusal.
        let answers = Response::Batch(vec![Response::Ack]);
        assert_eq!(decode::<Response>(&encode(&answers)), Ok(answers));
    }

    #[test]
    fn damaged_bodies_are_refused() {
        let body = encode(&Request::Get {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
        });
        assert_eq!(decode::<Request>(&[]), Err(DecodeError::Empty));
        assert_eq!(
            decode::<Request>(&[9, 0]),
            Err(DecodeError::UnsupportedVersion(9))
        );
        assert_eq!(
            decode::<Request>(&[3, 0]),
            Err(DecodeError::UnsupportedVersion(3))
        );
        for cut in 1..body.len() {
            assert!(decode::<Request>(&body[..cut]).is_err());
        }
        let mut long = body.clone();
        long.push(0);
        assert!(decode::<Request>(&long).is_err());
    }
}
