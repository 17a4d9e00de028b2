//! The one error type of the ring: why a ring could not be built.

use crate::NodeId;

/// Why a [`Ring`](crate::Ring) could not be built from the given members and partition count.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    /// The member set is empty: there is nobody to own the partitions.
    #[error("a ring needs at least one member")]
    NoMembers,
    /// The partition count is not a power of two in `1..=65536`.
    #[error("partition count {0} is not a power of two between 1 and {max}", max = crate::MAX_PARTITIONS)]
    InvalidPartitionCount(u32),
    /// The same node id was given twice; ownership is a function of a set, so a repeat is a
    /// caller bug (most likely two nodes configured with one `--node-id`), not something to
    /// silently fold away.
    #[error("node id {:?} is listed more than once", .0.as_str())]
    DuplicateMember(NodeId),
}
