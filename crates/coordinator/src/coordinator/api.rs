//! What a caller of the request path hands it and gets back: the node's settings, the
//! options of one read or write, and what a read finds. Types only, with the conversion
//! of a merged object into a read's outcome.

use std::time::Duration;

use bytes::Bytes;
use quorumkv_replica::{VersionVector, VersionedObject};
use quorumkv_ring::NodeId;

use super::{antientropy, cleanup};
use crate::detector::DetectorOptions;
use crate::membership::MemberStatus;
use crate::quorum::QuorumSpec;

/// Settings of the request path.
#[derive(Clone, Debug)]
pub struct CoordinatorOptions {
    /// Replication factor of buckets nobody configured.
    pub default_n: usize,
    /// Timeout of a request that names none.
    pub default_timeout: Duration,
    /// The longest timeout a request may ask for.
    pub max_timeout: Duration,
    /// Partitions of the ring (a power of two).
    pub partitions: u32,
    /// Whether owners that cannot be reached get hints (and sloppy quorums use fallbacks).
    pub hinted_handoff: bool,
    /// Whether reads repair stale owners in the background (a request can turn it off).
    pub read_repair: bool,
    /// The most hints one node keeps.
    pub max_hints: u64,
    /// How long a hint is kept before it is dropped (anti-entropy repairs the key then).
    pub hint_ttl: Duration,
    /// How many read repairs may run at once; more are skipped (and counted).
    pub read_repair_concurrency: usize,
    /// The failure detector's settings.
    pub detector: DetectorOptions,
    /// The pace of anti-entropy rounds.
    pub anti_entropy: antientropy::AntiEntropyOptions,
    /// How long a tombstone must have been seen unchanged before it may be reaped; at
    /// least `hint_ttl` (the server checks).
    pub tombstone_grace: Duration,
    /// This node's zone (failure domain); preference lists spread over distinct zones.
    pub zone: Option<String>,
    /// Whether this node joins an existing cluster through its seeds (its seeds do not
    /// name it) rather than founding one with them.
    pub joining: bool,
    /// How long after this node sees a new ring balanced it drops its copies of the
    /// partitions it no longer owns ([`cleanup`]); `None`: only on demand.
    pub cleanup_delay: Option<Duration>,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        Self {
            default_n: 3,
            default_timeout: Duration::from_secs(5),
            max_timeout: Duration::from_secs(60),
            partitions: quorumkv_ring::DEFAULT_PARTITIONS,
            hinted_handoff: true,
            read_repair: true,
            max_hints: 1_000_000,
            hint_ttl: Duration::from_secs(3 * 3600),
            read_repair_concurrency: 64,
            detector: DetectorOptions::default(),
            anti_entropy: antientropy::AntiEntropyOptions::default(),
            tombstone_grace: Duration::from_secs(10 * 24 * 3600),
            zone: None,
            joining: false,
            cleanup_delay: Some(cleanup::DEFAULT_CLEANUP_DELAY),
        }
    }
}

/// Per-request read settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// Read quorum; the bucket's default when absent.
    pub r: Option<QuorumSpec>,
    /// Owners required among the replies (`pr`); 0 when absent.
    pub pr: Option<QuorumSpec>,
    /// Whether fallbacks may answer for down owners; true when absent.
    pub sloppy: Option<bool>,
    /// Whether stale owners are repaired after the answer; the node's setting when absent.
    pub read_repair: Option<bool>,
    /// Request timeout; the node's default when absent.
    pub timeout: Option<Duration>,
}

/// Per-request write settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    /// Write quorum; the bucket's default when absent.
    pub w: Option<QuorumSpec>,
    /// Owners required among the acknowledgements (`pw`); 0 when absent.
    pub pw: Option<QuorumSpec>,
    /// Whether fallbacks may acknowledge for down owners; true when absent.
    pub sloppy: Option<bool>,
    /// Request timeout; the node's default when absent.
    pub timeout: Option<Duration>,
}

/// One live value of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveValue {
    /// The content type it was written with.
    pub content_type: String,
    /// The value.
    pub bytes: Bytes,
}

/// What a read found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// One or more live values (more than one: concurrent siblings); the context covers all
    /// of them.
    Found {
        /// The live values, in a stable order.
        values: Vec<LiveValue>,
        /// What a write that resolves them must carry.
        context: VersionVector,
    },
    /// Nothing live: never written, or deleted (then `context` covers the tombstones).
    NotFound {
        /// The context of the tombstones, if any.
        context: Option<VersionVector>,
    },
}

/// Bucket properties as changed by a client: absent fields keep their value, except that
/// a new `n` resets absent `r` and `w` to a majority of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PropsUpdate {
    /// New replication factor.
    pub n: Option<usize>,
    /// New default read quorum.
    pub r: Option<usize>,
    /// New default write quorum.
    pub w: Option<usize>,
}

/// The cluster as this node sees it.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// This node.
    pub node: NodeId,
    /// Every member with a known id.
    pub members: Vec<MemberStatus>,
    /// Partitions in the ring.
    pub partitions: u32,
    /// Whether the ring is formed (every seed's id known).
    pub ring_formed: bool,
    /// Why the node should not take client traffic yet (`GET /v1/ready` answers 503 with
    /// it), or `None` when it should; see [`Coordinator::unready_reason`](super::Coordinator::unready_reason).
    pub unready: Option<String>,
    /// The hash of the member table's ids, states and zones: equal on every node once
    /// gossip has converged.
    pub ring_version: u64,
}

/// What a read of `object`, merged from its replies, answers.
pub(crate) fn outcome(object: VersionedObject) -> ReadOutcome {
    let values: Vec<LiveValue> = object
        .live_values()
        .map(|(content_type, bytes)| LiveValue {
            content_type: content_type.to_string(),
            bytes: bytes.clone(),
        })
        .collect();
    if values.is_empty() {
        let context = (!object.is_empty()).then(|| object.clock().clone());
        ReadOutcome::NotFound { context }
    } else {
        ReadOutcome::Found {
            values,
            context: object.clock().clone(),
        }
    }
}
