//! The two names the ring deals in: nodes and partitions.

use std::borrow::Borrow;
use std::fmt;

/// Node identity: the `--node-id` string a node is started with.
///
/// Ordered, hashable and cheap to clone. The ring orders members by it and hashes its bytes
/// into ownership scores, so renaming a node moves its partitions exactly as removing it and
/// adding a new node would.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// Wraps a node id string.
    pub fn new(s: impl Into<String>) -> Self {
        NodeId(s.into())
    }

    /// Returns the id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId::new(s)
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> Self {
        NodeId(s)
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

// Sound because the derived Eq, Ord and Hash look at the single `String` field only, so
// they agree with those of `str`; it lets maps keyed by `NodeId` be queried with a `&str`.
impl Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A partition of the key space: the top bits of a key's hash, in `0..partition_count`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}
