//! The request path of quorumkv: quorum reads and writes over the preference list.
//!
//! # What this crate does
//!
//! Any node coordinates any request (Dynamo, section 4.5). For a key it computes the
//! preference list of `n` owners on the consistent-hashing ring, sends the request to all of
//! them at once, and answers as soon as `w` acknowledgements (writes) or `r` replies (reads)
//! arrive. Concurrent versions are merged, never dropped: a read returns every live sibling
//! and a causal context that covers them, and a write that carries that context replaces
//! exactly what it covers.
//!
//! # Invariants (see also docs/consistency.md)
//!
//! - A write is acknowledged only after `w` replicas stored it durably (each store writes
//!   through its WAL before answering): owners, or, for a sloppy quorum, fallbacks that
//!   keep it as a hint for a down owner. `pw` and `sloppy=false` require owners.
//! - A version is minted at exactly one replica, from that replica's own state, so its dot
//!   is unique; the other owners merge the minted state, which is a CRDT join and therefore
//!   safe to repeat and to reorder.
//! - Nothing below this crate knows HTTP: peers are reached through [`Transport`], the
//!   local replica in-process.
//!
//! # Deliberate simplifications (lifted by later work)
//!
//! - Membership changes through two rings, current and next; the switch from one to the
//!   other relies on gossip reaching every node within a settle time (`transfer::SETTLE`,
//!   5 s) rather than on an acknowledgement round. Copies a node no longer owns are not
//!   deleted.
//! - A write is minted only at an owner that is up; with every owner down a write fails
//!   even when fallbacks are up (fallbacks only keep copies, they never order writes).
//!
//! # Layout
//!
//! [`names`] validates bucket names and keys, [`quorum`] holds the r/w/n arithmetic,
//! [`placement`] picks owners and fallbacks, [`detector`] is the failure detector,
//! [`context`] the client-facing causal context token, [`message`] the internode protocol,
//! [`transport`] the trait that carries it, [`gossip`] the member table and its merge rule,
//! [`membership`] the members and rings, [`props`]
//! cluster-wide bucket properties, and [`coordinator`] the request path itself, with its
//! background mechanisms in submodules: hinted handoff ([`coordinator::handoff`]), read
//! repair, active anti-entropy ([`coordinator::antientropy`]) and tombstone reaping.

pub mod context;
#[cfg(feature = "store")]
pub mod coordinator;
pub mod detector;
pub mod error;
pub mod gossip;
pub mod membership;
pub mod message;
pub mod names;
pub mod placement;
pub mod props;
pub mod quorum;
pub mod tally;
pub mod transport;

pub use context::ContextKey;
#[cfg(feature = "store")]
pub use coordinator::{
    antientropy::{AntiEntropyOptions, AntiEntropyStats},
    cleanup::{CleanupReport, DEFAULT_CLEANUP_DELAY},
    handoff::HandoffStats,
    planted::ReplicaFault,
    reap_interval,
    transfer::SETTLE,
    ClusterView, Coordinator, CoordinatorOptions, LiveValue, PropsUpdate, ReadOptions, ReadOutcome,
    WriteOptions, PROBE_TIMEOUT, REAP_BUDGET, TICK,
};
pub use error::{CoordinatorError, InputError, Operation, ReplicaFailure};
pub use gossip::{MemberRecord, MemberState, MemberTable};
pub use membership::{Bootstrap, Liveness, MemberStatus, Membership};
pub use names::{BucketName, Key};
pub use quorum::{BucketProps, QuorumSpec};
pub use transport::{Transport, TransportError};

/// RocksDB's figures about the store ([`Coordinator::store`]), for `/metrics`.
#[cfg(feature = "store")]
pub use quorumkv_replica::{ColumnFamilyStats, EngineStats};

/// Re-exported so that callers need not depend on the replica and ring crates for the
/// types that cross this crate's API.
#[cfg(feature = "store")]
pub use quorumkv_replica::SyncPolicy;
pub use quorumkv_replica::VersionVector;
pub use quorumkv_ring::NodeId;
