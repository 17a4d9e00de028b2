//! # quorumkv-replica: what one replica knows about a key
//!
//! quorumkv is leaderless: any node coordinates any write, and the N replicas
//! of a key accept writes independently, so two clients can update a key
//! concurrently without either seeing the other. This crate is the layer
//! that makes that safe at one replica. It decides, for any two versions of
//! a key, whether one supersedes the other or both must be kept, and it
//! stores the result durably. Everything above it (quorums, read repair,
//! hinted handoff, anti-entropy) moves objects between replicas and calls
//! [`Store::merge`]; nothing above it opens RocksDB or inspects a clock's
//! entries to decide what to keep.
//!
//! ## The model
//! Versioning follows the Dynamo paper (DeCandia et al., SOSP 2007),
//! section 4.4 "Data Versioning": each write is tagged with causal history,
//! a read returns all concurrent versions (siblings) with a context that
//! summarises them, and the client's next write, sent with that context,
//! supersedes exactly the versions it saw. Dynamo tags each version with a
//! version vector of coordinating nodes; such a vector cannot tell "the same
//! node coordinated two writes" from "the second write saw the first", so a
//! write sent with a stale context through the same node can silently
//! replace a version it never saw (vectors of client ids avoid that, but grow
//! with the number of clients). We use dotted version vectors
//! instead (Preguiça, Baquero, Almeida, Fonte, Gonçalves, "Dotted Version
//! Vectors: Logical Clocks for Optimistic Replication", 2010; and Almeida,
//! Baquero, Gonçalves, Preguiça, Fonte, "Scalable and Accurate Causality
//! Tracking for Eventually Consistent Stores", DAIS 2014): every write gets
//! its own [`Dot`] (actor, counter), and a key's state is a
//! [`VersionedObject`], a clock plus the siblings whose dots the clock has
//! not seen superseded. This is the shape Riak adopted in 2.0.
//!
//! - [`VersionedObject::update`] is a write coordinated here: it drops the
//!   siblings the client's context covers and adds one with a fresh dot.
//! - [`VersionedObject::merge`] joins two replicas' states. It is a
//!   state-based CRDT join (commutative, associative, idempotent), so
//!   replicas converge whatever order, duplication or path objects take.
//!
//! ## Invariants
//! - A dot is minted once, ever. Actors are per start of a store ([`ActorId`],
//!   random, taken at every open), and an actor's counter rises across all its
//!   keys, so neither a lost disk, a crash before an fsync, a data directory
//!   restored from a copy, nor a reaped tombstone can make a replica mint a dot
//!   that other replicas' clocks already cover; that would make its new writes
//!   vanish as "already seen" (Riak's KV679). For the same reason the store
//!   refuses to coordinate a write over a local record it cannot read.
//! - A write's answer covers what its writer had seen and the dot it minted,
//!   nothing else ([`VersionedObject::write_context`]): clocks may carry
//!   exceptions, dots below an entry that are not covered.
//! - An object's siblings are sorted by dot, unique, and covered by its
//!   clock ([`VersionedObject::validate`]); every decoded or received object
//!   is validated before it is used.
//! - A version is dropped only when some later write's context covered it:
//!   no update is lost to concurrency (the property tests check this against
//!   a model that records every write).
//! - Every stored record carries a format version and a CRC32
//!   ([`codec`]); a record that fails either is reported as corrupt and
//!   counted, never decoded into a wrong object and never overwritten.
//!
//! ## Simplifications
//! - Deletes are tombstone siblings; a tombstone every owner holds is reaped
//!   after a grace period (`store/tombstones.rs` and the coordinator's reaper).
//! - A clock has an entry per actor that ever coordinated a write of the
//!   key, and actors are never retired: a key written across many restarts of
//!   its owners gains an entry per start.
//! - The whole object is read and rewritten on each write; values are
//!   expected to be small (a few hundred KiB at most).
//!
//! ## Modules
//! [`version`] (actors, dots, version vectors), [`object`] (values,
//! siblings, the versioned object), [`codec`] (the record format), [`store`]
//! (RocksDB, durability policy, corruption handling) and [`error`].

pub mod codec;
pub mod error;
pub mod object;
#[cfg(feature = "rocksdb-store")]
pub mod store;
pub mod version;

pub use codec::{decode_record, encode_record, RECORD_FORMAT_V1, RECORD_FORMAT_V2};
pub use error::{CodecError, StoreError, VersionError};
pub use object::{Sibling, UpdatePreview, Value, VersionedObject};
#[cfg(feature = "rocksdb-store")]
pub use store::{
    ColumnFamilyStats, Dropped, EngineStats, GroupWrite, Hint, HintRefusal, Store, StoreOptions,
    SyncPolicy, Tombstone, TombstonePage, Wait, WouldBlock, DEFAULT_BLOCK_CACHE_BYTES,
    DEFAULT_MAX_CLOCK_ENTRIES, DEFAULT_MAX_OBJECT_BYTES, DEFAULT_MAX_SIBLINGS,
    DEFAULT_MEMTABLE_BUDGET_BYTES, MIN_MEMTABLE_BUDGET_BYTES,
};
pub use version::{encode_compatible, with_format, ActorId, Dot, VersionVector, WireFormat};
