//! What a store is opened with: its durability policy, cache and memtable budgets, and
//! the limits a write minted here must keep.

#[cfg(doc)]
use super::{Store, MAX_PARTITION_BITS, MIN_MEMTABLE_BUDGET_BYTES};
use super::{DEFAULT_BLOCK_CACHE_BYTES, DEFAULT_MEMTABLE_BUDGET_BYTES};
#[cfg(doc)]
use crate::object::VersionedObject;

/// When a write is reported durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Acknowledge once the write is in the WAL (survives a process crash,
    /// not necessarily a power loss).
    #[default]
    None,
    /// Fsync the WAL before acknowledging each write (survives a power loss).
    Always,
}

/// Options for opening a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Durability of each write; see the module's durability policy.
    pub sync: SyncPolicy,
    /// How many top bits of a key hash pick its partition in the anti-entropy hash
    /// trees: `log2` of the ring's partition count (default 8, for 256 partitions), at
    /// most [`MAX_PARTITION_BITS`]. The records' layout does not depend on it: the trees
    /// are built at open, whatever it was before.
    pub partition_bits: u8,
    /// Capacity of the block cache that serves every column family, in bytes (0: no
    /// cache). Default [`DEFAULT_BLOCK_CACHE_BYTES`].
    pub block_cache_bytes: usize,
    /// What the memtables of all column families may hold together, in bytes; past it,
    /// RocksDB flushes the largest. At least [`MIN_MEMTABLE_BUDGET_BYTES`]. Default
    /// [`DEFAULT_MEMTABLE_BUDGET_BYTES`].
    pub memtable_budget_bytes: usize,
    /// The most siblings a write minted here may leave a key with, when it resolves none
    /// of them (default [`DEFAULT_MAX_SIBLINGS`], as Riak's `max_siblings`). Merges from
    /// other replicas are never refused: a key written concurrently at several owners may
    /// briefly hold up to one more per owner.
    pub max_siblings: usize,
    /// The largest record a write minted here may leave a key with, in bytes, counted
    /// as [`VersionedObject::approximate_size`] (default [`DEFAULT_MAX_OBJECT_BYTES`]).
    pub max_object_bytes: usize,
    /// The most entries and exceptions a key's clock may reach through a write minted
    /// here (default [`DEFAULT_MAX_CLOCK_ENTRIES`]); deletes are never refused for it,
    /// as deleting the key and writing it again once the tombstone is reaped is how a
    /// key starts a new clock. Merges are never refused either.
    pub max_clock_entries: usize,
}

/// Default of [`StoreOptions::max_siblings`].
pub const DEFAULT_MAX_SIBLINGS: usize = 100;
/// Default of [`StoreOptions::max_object_bytes`]: 64 MiB.
pub const DEFAULT_MAX_OBJECT_BYTES: usize = 64 * 1024 * 1024;
/// Default of [`StoreOptions::max_clock_entries`]. Each start of a node takes a new actor
/// (see [`Store::open`]), so a key's clock gains an entry for every start of an owner
/// that mints a write of it afterwards; 256 entries fit a causal context token of under
/// 7 KiB, within the 8 KiB a client may send back.
pub const DEFAULT_MAX_CLOCK_ENTRIES: usize = 256;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: SyncPolicy::default(),
            partition_bits: 8,
            block_cache_bytes: DEFAULT_BLOCK_CACHE_BYTES,
            memtable_budget_bytes: DEFAULT_MEMTABLE_BUDGET_BYTES,
            max_siblings: DEFAULT_MAX_SIBLINGS,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            max_clock_entries: DEFAULT_MAX_CLOCK_ENTRIES,
        }
    }
}
