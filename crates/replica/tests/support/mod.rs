//! Helpers shared by the tests that run the store on a real database.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the helpers"
)]
#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::path::Path;

use bytes::Bytes;
use quorumkv_replica::{Store, StoreOptions, Value, VersionedObject};

/// Opens a store with the default options, or fails the test.
pub fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

/// A `text/plain` value.
pub fn text(s: &str) -> Value {
    Value::data("text/plain", Bytes::copy_from_slice(s.as_bytes()))
}

/// The live values of an object, in its order.
pub fn values(obj: &VersionedObject) -> Vec<&[u8]> {
    obj.live_values().map(|(_, b)| b.as_ref()).collect()
}
