//! The errors of the replica layer, one enum per question a caller asks.
//!
//! They are layered the way the crate is: [`VersionError`] says an algebra
//! operation or a decoded object broke an invariant of the version model,
//! [`CodecError`] says a stored record could not be turned back into an
//! object (and wraps a [`VersionError`] when the bytes decoded but described an
//! impossible object), and [`StoreError`] is what the store hands to the
//! coordinator. The variants name meanings, not libraries: RocksDB's error is
//! carried as text in [`StoreError::Db`] (or [`StoreError::OutOfSpace`] when the
//! disk is full), so no RocksDB type leaks above this crate.

use crate::version::Dot;

/// A violation of the version model, by an operation or by a decoded object.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VersionError {
    /// The replica's counter is at `u64::MAX`; minting another dot would wrap
    /// and reuse a dot, so the update is refused and nothing is changed.
    #[error("dot counter overflow: the replica cannot mint another dot")]
    CounterOverflow,
    /// The siblings are not in ascending dot order.
    #[error("siblings are not sorted by dot")]
    UnsortedSiblings,
    /// Two siblings carry the same dot; a dot names exactly one write.
    #[error("duplicate sibling dot {0}")]
    DuplicateDot(Dot),
    /// A sibling's dot is not covered by the object's clock, so the clock
    /// does not summarise what the object holds.
    #[error("sibling dot {0} is not covered by the object's clock")]
    DotNotCovered(Dot),
    /// A sibling's dot has counter 0; counters start at 1.
    #[error("sibling dot {0} has counter 0")]
    ZeroCounter(Dot),
}

/// Why a stored record could not be decoded.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CodecError {
    /// The record is shorter than its header.
    #[error("record truncated")]
    Truncated,
    /// The record's format version byte is not one this build can read.
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    /// The payload's CRC32 does not match the one stored in the header.
    #[error("checksum mismatch: header says {expected:#010x}, payload hashes to {actual:#010x}")]
    ChecksumMismatch {
        /// The CRC32 stored in the record header.
        expected: u32,
        /// The CRC32 computed over the payload as read.
        actual: u32,
    },
    /// The checksum matched but the payload is not a valid encoding.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The payload decoded but describes an object that breaks an invariant.
    #[error("invalid object: {0}")]
    Invalid(VersionError),
}

/// An error from the replica store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A stored record (or the store's own metadata) could not be decoded.
    /// The store never writes over such a record: minting a dot over state it
    /// cannot read could reuse a dot. Repair comes from other replicas.
    #[error("corrupt record at {key}: {reason}")]
    Corrupt {
        /// Printable form of the record's location (`bucket/key`, escaped).
        key: String,
        /// What was wrong with the bytes.
        reason: CodecError,
    },
    /// An object received from elsewhere breaks an invariant and was refused.
    #[error("invalid incoming object: {0}")]
    Invalid(VersionError),
    /// An operation on a valid local object was refused (e.g. counter overflow).
    #[error("version error: {0}")]
    Version(VersionError),
    /// A bucket name is longer than the 255 bytes its length prefix can say.
    #[error("bucket name is {0} bytes; at most 255 are allowed")]
    BucketTooLong(usize),
    /// RocksDB reported an error; the text is RocksDB's.
    #[error("storage engine error: {0}")]
    Db(String),
    /// The disk under the database is full (or at the engine's space limit): the store
    /// refuses writes and still serves reads until space is freed (see the store's
    /// "Full disk" section). The text is RocksDB's.
    #[error("out of disk space: {0}")]
    OutOfSpace(String),
    /// A filesystem operation around the database failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The store was opened with options it cannot honour; the text names the option.
    #[error("invalid store options: {0}")]
    InvalidOptions(String),
    /// A write would add a sibling to a key that holds its maximum number of them, and
    /// resolves none; nothing was stored.
    #[error(
        "the key holds {count} siblings, the most it may; write with a context that resolves some"
    )]
    TooManySiblings {
        /// The siblings the key holds.
        count: usize,
    },
    /// A write would make the key's record larger than the store keeps; nothing was
    /// stored.
    #[error("the key's record would be {bytes} bytes, over the limit of {max}")]
    ObjectTooLarge {
        /// The size the record would have.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A write would give the key's clock more entries than the store keeps; nothing was
    /// stored. Deletes are not refused: a key deleted and written again once its
    /// tombstone is reaped starts a new clock.
    #[error(
        "the key's clock would hold {entries} entries, over the limit of {max}; delete the \
         key and write it again once the delete is reaped"
    )]
    ClockTooLarge {
        /// The entries and exceptions the clock would hold.
        entries: usize,
        /// The limit.
        max: usize,
    },
    /// The write's context says this replica's actor minted a dot it never minted:
    /// the context was not read from this cluster (a forged or edited token), and a
    /// write under it is refused, since minting past it would make the clocks of other
    /// replicas cover dots they never saw. Nothing was stored.
    #[error(
        "the causal context names counter {claimed} of this replica's actor, which has          minted only up to {minted}: the context was not read from this cluster"
    )]
    ContextAhead {
        /// The counter the context claims for this replica's actor.
        claimed: u64,
        /// The highest counter the actor has minted.
        minted: u64,
    },
}

impl StoreError {
    /// Whether this error reports a corrupt stored record, the case callers
    /// answer by repairing from other replicas rather than by retrying.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }

    /// Whether this error says the disk is full, the case an operator fixes by freeing
    /// space rather than by repairing data.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, StoreError::OutOfSpace(_))
    }
}

#[cfg(feature = "rocksdb-store")]
impl From<rocksdb::Error> for StoreError {
    fn from(err: rocksdb::Error) -> Self {
        StoreError::from_engine_text(err.into_string())
    }
}

#[cfg(feature = "rocksdb-store")]
impl StoreError {
    /// Classifies RocksDB's status text. Its C API gives nothing else, and the wording of
    /// the two space subcodes (NoSpace, from ENOSPC; SpaceLimit, from its file manager) is
    /// stable across releases.
    fn from_engine_text(text: String) -> Self {
        if text.contains("No space left on device") || text.contains("Space limit reached") {
            StoreError::OutOfSpace(text)
        } else {
            StoreError::Db(text)
        }
    }
}

#[cfg(all(test, feature = "rocksdb-store"))]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_apart_from_other_engine_errors() {
        // What RocksDB answers a write when the WAL cannot grow on a full disk.
        let full = StoreError::from_engine_text(
            "IO error: No space left on device: While appending to file: db/000004.log: No \
             space left on device"
                .to_string(),
        );
        assert!(full.is_out_of_space(), "{full}");
        let other = StoreError::from_engine_text("Invalid argument: bad option".to_string());
        assert!(matches!(other, StoreError::Db(_)), "{other}");
    }
}
