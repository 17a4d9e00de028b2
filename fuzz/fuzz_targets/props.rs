//! Bucket properties in JSON: the body of `PUT /v1/buckets/{bucket}/props`
//! ([`PropsPatch::from_json`]), and what a node keeps in its meta column family and reads
//! back at start (`node/bucket_props`, a map of bucket to versioned props, and
//! `node/members`, a list of `[id, addr]`). Every input is decoded as all three.
//!
//! A decoded table then goes where a loaded or pushed table goes: merged into the node's
//! table, and used to version the next change of each of its buckets.

#![no_main]

use std::collections::BTreeMap;
use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use quorumkv_coordinator::props::{PropsPatch, PropsTable, VersionedProps};
use quorumkv_coordinator::NodeId;
use serde::de::DeserializeOwned;
use serde::Serialize;

fuzz_target!(|data: &[u8]| {
    if let Ok(patch) = PropsPatch::from_json(data) {
        let json = serde_json::to_vec(&patch).expect("a patch encodes");
        let again = PropsPatch::from_json(&json).expect("a re-encoded patch decodes");
        assert_eq!(again, patch, "the round trip changed the patch");
    }
    if let Some(table) = round_trip::<BTreeMap<String, VersionedProps>>(data) {
        let node_table = PropsTable::default();
        node_table.merge(&table);
        for bucket in table.keys() {
            node_table.next_version(bucket, &NodeId::new("fuzz"));
        }
    }
    round_trip::<Vec<(NodeId, String)>>(data);
});

/// Decoding never panics; a value that decodes re-encodes to JSON that decodes to the same
/// value.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(bytes).ok()?;
    let json = serde_json::to_vec(&value).expect("a decoded value encodes");
    let again: T = serde_json::from_slice(&json).expect("a re-encoded value decodes");
    assert_eq!(again, value, "the round trip changed the value");
    Some(again)
}
