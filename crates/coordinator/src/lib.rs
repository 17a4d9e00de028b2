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
//! # Invariants
//!
//! - A write is acknowledged only after `w` owners stored it durably (each replica's store
//!   writes through its WAL before answering).
//! - A version is minted at exactly one replica, from that replica's own state, so its dot
//!   is unique; the other owners merge the minted state, which is a CRDT join and therefore
//!   safe to repeat and to reorder.
//! - Nothing below this crate knows HTTP: peers are reached through [`Transport`], the
//!   local replica in-process.
//!
//! # Deliberate simplifications (lifted by later work)
//!
//! - Strict quorum: only the `n` owners count. Sloppy quorum, hinted handoff (the store has
//!   a hints column family for it), read repair and anti-entropy come later.
//! - Static membership: the seeds given at start, ids learned by asking them.
//! - Liveness is a plain heartbeat, used for reporting only.
//!
//! # Layout
//!
//! [`names`] validates bucket names and keys, [`quorum`] holds the r/w/n arithmetic,
//! [`context`] the client-facing causal context token, [`message`] the internode protocol,
//! [`transport`] the trait that carries it, [`membership`] the members and ring, [`props`]
//! cluster-wide bucket properties, and [`coordinator`] the request path itself.

pub mod context;
pub mod coordinator;
pub mod error;
pub mod membership;
pub mod message;
pub mod names;
pub mod props;
pub mod quorum;
pub mod transport;

pub use context::{decode_context, encode_context};
pub use coordinator::{
    ClusterView, Coordinator, CoordinatorOptions, LiveValue, PropsUpdate, ReadOptions, ReadOutcome,
    WriteOptions,
};
pub use error::{CoordinatorError, InputError, Operation, ReplicaFailure};
pub use membership::{Liveness, MemberStatus, Membership};
pub use names::{BucketName, Key};
pub use quorum::{BucketProps, QuorumSpec};
pub use transport::{Transport, TransportError};

/// Re-exported so that callers need not depend on the replica and ring crates for the
/// types that cross this crate's API.
pub use quorumkv_replica::{SyncPolicy, VersionVector};
pub use quorumkv_ring::NodeId;
