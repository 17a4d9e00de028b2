//! Bugs planted on purpose, for the fault suite's negative controls.
//!
//! A history checker that never fails proves nothing. The fault suite therefore runs
//! once with a known bug switched on and asserts that its checker reports the anomaly
//! the bug causes. Two bugs are modelled on what broke real Dynamo clones:
//!
//! - [`ReplicaFault::AckWithoutStoring`]: a replica acknowledges the states other nodes
//!   send it (`Merge`, `MergeHint`) without storing them, as a disk that lies about its
//!   writes would. A write is then acknowledged at `w` while fewer than `w` replicas hold
//!   it, and a strict-quorum read can miss it.
//! - [`ReplicaFault::LastWriteWins`]: whenever a replica ends up holding concurrent
//!   siblings, it keeps only the one with the greatest dot and discards the others, as
//!   Riak with `allow_mult=false` and Cassandra do. Acknowledged concurrent writes vanish.
//! - [`ReplicaFault::WholeClockAnswers`]: a write coordinated here is answered with the
//!   minting replica's whole clock, which covers concurrent siblings the writer never
//!   saw, as every release before write answers had exceptions did. A client that writes
//!   again with that answer silently replaces them.
//! - [`ReplicaFault::IgnoreReapRequests`]: a replica acknowledges another owner's request
//!   to reap a tombstone without reaping it, as when that request is lost: the state in
//!   which one owner has forgotten a key whose tombstone the others still hold, where a
//!   replica that counted its dots per key would mint dots the others already cover.
//! - [`ReplicaFault::ReapWithoutAgreement`]: the reaper removes a tombstone once its grace
//!   has passed without asking the other owners whether they hold it: an owner that
//!   missed the delete then hands the deleted value back (a resurrection).
//! - [`ReplicaFault::KeepOldCopies`]: a node keeps its copies of the partitions it loses
//!   in a membership change and merges them back when it regains them, as every release
//!   before cleanup did: keys deleted and reaped meanwhile come back.
//! - [`ReplicaFault::ReuseActorAcrossStarts`]: the store keeps its actor from one start to
//!   the next (see `Store::plant_actor_reuse`), as releases that kept it across a clean
//!   close did. A node restored from a copy of its data directory then mints dots that
//!   the other replicas already cover, and they drop its new writes as already seen.
//!
//! The switch is set through a route that exists only on a node started with
//! `--fault-injection`; a production node has no way to turn it on.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use quorumkv_replica::{Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::message::{Request, Response};

/// The bug a replica plays, if any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaFault {
    /// Behave correctly.
    #[default]
    None,
    /// Acknowledge states sent by other nodes without storing them.
    AckWithoutStoring,
    /// Resolve siblings by keeping the one with the greatest dot.
    LastWriteWins,
    /// Answer writes coordinated here with the minting replica's whole clock.
    WholeClockAnswers,
    /// Acknowledge requests to reap a tombstone without reaping it.
    IgnoreReapRequests,
    /// Reap tombstones without asking the other owners.
    ReapWithoutAgreement,
    /// Keep the copies of lost partitions, and merge them back on regaining them.
    KeepOldCopies,
    /// Keep the store's actor across starts, from the next start on.
    ReuseActorAcrossStarts,
}

impl ReplicaFault {
    fn to_u8(self) -> u8 {
        match self {
            Self::None => 0,
            Self::AckWithoutStoring => 1,
            Self::LastWriteWins => 2,
            Self::WholeClockAnswers => 3,
            Self::IgnoreReapRequests => 4,
            Self::ReapWithoutAgreement => 5,
            Self::KeepOldCopies => 6,
            Self::ReuseActorAcrossStarts => 7,
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::AckWithoutStoring,
            2 => Self::LastWriteWins,
            3 => Self::WholeClockAnswers,
            4 => Self::IgnoreReapRequests,
            5 => Self::ReapWithoutAgreement,
            6 => Self::KeepOldCopies,
            7 => Self::ReuseActorAcrossStarts,
            _ => Self::None,
        }
    }
}

/// The switch, read on every storage request: an atomic, so the correct path pays one
/// relaxed load.
#[derive(Debug, Default)]
pub(crate) struct FaultCell(AtomicU8);

impl FaultCell {
    pub(crate) fn get(&self) -> ReplicaFault {
        ReplicaFault::from_u8(self.0.load(Ordering::Relaxed))
    }

    pub(crate) fn set(&self, fault: ReplicaFault) {
        self.0.store(fault.to_u8(), Ordering::Relaxed);
    }
}

/// What the fault makes of `request` before it reaches the store: `Some(response)` when
/// the request must not be executed at all.
pub(crate) fn intercept(fault: ReplicaFault, request: &Request) -> Option<Response> {
    match (fault, request) {
        (ReplicaFault::AckWithoutStoring, Request::Merge { .. } | Request::MergeHint { .. })
        | (ReplicaFault::IgnoreReapRequests, Request::Reap { .. }) => Some(Response::Ack),
        _ => None,
    }
}

/// After a storage request under [`ReplicaFault::LastWriteWins`]: if the key it wrote now
/// holds several siblings, keeps only the one with the greatest dot by writing it over
/// the others (a new version whose context covers them all). Blocking.
pub(crate) fn collapse_siblings(store: &Arc<Store>, request: &Request) -> Result<(), StoreError> {
    let (bucket, key) = match request {
        Request::Merge { bucket, key, .. }
        | Request::Coordinate { bucket, key, .. }
        | Request::Mint { bucket, key, .. } => (bucket, key),
        _ => return Ok(()),
    };
    let Some(object) = store.get(bucket, key)? else {
        return Ok(());
    };
    if object.siblings().len() < 2 {
        return Ok(());
    }
    // Siblings are sorted by dot: the last one is the "latest".
    let Some(winner) = object.siblings().last() else {
        return Ok(());
    };
    store.coordinate(bucket, key, object.clock(), winner.value.clone())?;
    Ok(())
}
