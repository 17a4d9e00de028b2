//! Cluster-wide bucket properties.
//!
//! Properties are set through any node and must apply on every node. They change rarely and
//! are tiny, so they are replicated in full to every node rather than through the ring: the
//! node that accepts a change stamps it with a version, pushes it to every member at once,
//! and every node also pulls its peers' tables periodically, so a node that was down
//! catches up within a second of coming back. Concurrent changes resolve by last writer
//! wins on the version (wall-clock milliseconds, then node id), which is deterministic on
//! every node. Each node keeps its table in its store's meta column family so that it
//! survives restarts.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use quorumkv_ring::NodeId;
use serde::{Deserialize, Serialize};

use crate::quorum::BucketProps;

/// The version of one bucket's properties: later versions win.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PropsVersion {
    /// Milliseconds since the Unix epoch when the change was accepted (made strictly larger
    /// than the version it replaces, whatever the clock says).
    pub millis: u64,
    /// The node that accepted it; breaks ties.
    pub node: NodeId,
}

/// Properties with their version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedProps {
    /// The settings.
    pub props: BucketProps,
    /// When and where they were set.
    pub version: PropsVersion,
}

/// A change of bucket properties as a client sends it, in JSON: any subset of `n`, `r` and
/// `w`, each a non-negative integer; any other field is refused (a typo must not be
/// silently ignored). Ranges are checked later, against the bucket's current properties.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropsPatch {
    /// New replication factor.
    pub n: Option<usize>,
    /// New default read quorum.
    pub r: Option<usize>,
    /// New default write quorum.
    pub w: Option<usize>,
}

impl PropsPatch {
    /// Parses a JSON body; an error, never a panic, whatever the bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Every configured bucket's properties, as this node knows them.
#[derive(Debug, Default)]
pub struct PropsTable {
    // A std RwLock: reads are on every request, writes are rare, and no await happens inside.
    buckets: RwLock<BTreeMap<String, VersionedProps>>,
}

impl PropsTable {
    /// A table holding `entries` (as loaded from disk).
    pub fn new(entries: BTreeMap<String, VersionedProps>) -> Self {
        Self {
            buckets: RwLock::new(entries),
        }
    }

    /// The configured properties of `bucket`, if any.
    pub fn get(&self, bucket: &str) -> Option<VersionedProps> {
        self.read().get(bucket).cloned()
    }

    /// A copy of the whole table.
    pub fn snapshot(&self) -> BTreeMap<String, VersionedProps> {
        self.read().clone()
    }

    /// Adopts every entry of `incoming` that is newer than ours; returns whether anything
    /// changed.
    pub fn merge(&self, incoming: &BTreeMap<String, VersionedProps>) -> bool {
        let mut table = self
            .buckets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut changed = false;
        for (bucket, props) in incoming {
            if props.props.validate().is_err() {
                continue;
            }
            let newer = table
                .get(bucket)
                .is_none_or(|current| props.version > current.version);
            if newer {
                table.insert(bucket.clone(), props.clone());
                changed = true;
            }
        }
        changed
    }

    /// A version for a new change of `bucket` accepted by `node`: now, but strictly after the
    /// version it replaces.
    pub fn next_version(&self, bucket: &str, node: &NodeId) -> PropsVersion {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // Saturating: a table loaded from disk or pushed by a peer may hold any u64.
        let floor = self
            .get(bucket)
            .map_or(0, |p| p.version.millis.saturating_add(1));
        PropsVersion {
            millis: now.max(floor),
            node: node.clone(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, VersionedProps>> {
        self.buckets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize, millis: u64, node: &str) -> VersionedProps {
        VersionedProps {
            props: BucketProps::with_n(n),
            version: PropsVersion {
                millis,
                node: NodeId::new(node),
            },
        }
    }

    #[test]
    fn patches_take_any_subset_and_refuse_the_rest() {
        let patch = PropsPatch::from_json(br#"{"n": 5, "w": 1}"#).expect("valid");
        assert_eq!(
            patch,
            PropsPatch {
                n: Some(5),
                r: None,
                w: Some(1)
            }
        );
        assert_eq!(
            PropsPatch::from_json(b"{}").ok(),
            Some(PropsPatch::default())
        );
        for bad in [
            &br#"{"n": 3, "x": 1}"#[..],
            br#"{"n": -1}"#,
            br#"{"n": "3"}"#,
            br#"{"n": 3.0}"#,
            b"[3]",
            b"null",
            b"{n: 3",
        ] {
            assert!(
                PropsPatch::from_json(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn newer_versions_win_and_older_ones_are_ignored() {
        let table = PropsTable::default();
        assert!(table.merge(&BTreeMap::from([("b".into(), entry(3, 10, "a"))])));
        assert!(!table.merge(&BTreeMap::from([("b".into(), entry(5, 9, "z"))])));
        assert!(table.merge(&BTreeMap::from([("b".into(), entry(5, 10, "b"))])));
        assert_eq!(table.get("b").map(|p| p.props.n), Some(5));
        assert!(!table.merge(&BTreeMap::from([("b".into(), entry(5, 10, "b"))])));
    }

    #[test]
    fn invalid_incoming_props_are_ignored() {
        let table = PropsTable::default();
        let mut bad = entry(3, 10, "a");
        bad.props.r = 9;
        assert!(!table.merge(&BTreeMap::from([("b".into(), bad)])));
        assert!(table.get("b").is_none());
    }

    /// Found by the `props` fuzz target: a version at `u64::MAX` (from a peer's table or
    /// the stored one) overflowed the next version's floor.
    #[test]
    fn a_version_at_the_end_of_time_does_not_overflow() {
        let json = br#"{"b":{"props":{"n":3,"r":2,"w":2},"version":{"millis":18446744073709551615,"node":"a"}}}"#;
        let table: BTreeMap<String, VersionedProps> = serde_json::from_slice(json).expect("valid");
        let props = PropsTable::default();
        assert!(props.merge(&table));
        assert_eq!(props.next_version("b", &NodeId::new("x")).millis, u64::MAX);
    }

    #[test]
    fn next_version_is_after_the_current_one() {
        let table = PropsTable::default();
        let far_future = u64::MAX / 2;
        table.merge(&BTreeMap::from([("b".into(), entry(3, far_future, "a"))]));
        assert!(table.next_version("b", &NodeId::new("x")).millis > far_future);
    }
}
