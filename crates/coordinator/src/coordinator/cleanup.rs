//! Dropping the copies of partitions this node no longer owns: Cassandra's `cleanup`, run
//! by the node itself after every membership change, and on demand.
//!
//! A node that loses a partition in a change keeps its copies until they are dropped. They
//! are never read while it does not own the partition, but they are not harmless: if a
//! later change gives the partition back, those copies would meet the current ones as if
//! they were current, and a key deleted and reaped meanwhile would come back (its
//! tombstone is gone, so nothing covers the old value). So they are dropped:
//!
//! - **After a change commits**, once the joint window is over (writes go to the ring a
//!   commit replaced for [`SETTLE`]) and `cleanup_delay` has passed since this node saw
//!   the new ring balanced; also once after a start, for copies left by a change this
//!   node slept through.
//! - **When a change starts** that gives this node a partition it does not own now, for
//!   that partition at once, before its transfer pulls the partition from the owners: a
//!   node never merges its own old copy into the partition it regains.
//! - **On demand**, `POST /v1/cluster/cleanup` (`quorumkv cluster cleanup`), refused while
//!   a change is under way or in its joint window.
//!
//! Nothing is handed to the owners first, on purpose: the commit waited for every new
//! owner to pull the partition from every old owner that was up, and every write
//! acknowledged during the change and its joint window reached a quorum of the new owners
//! as well; what only this copy holds is either stale (and handing it over could bring a
//! deleted key back) or a write that was never acknowledged. That rests on the membership
//! timing assumption of docs/consistency.md (gossip reaches every node within [`SETTLE`]).
//!
//! A node counts as an owner of a (partition, bucket) when it is in the partition's
//! preference list for the bucket's replication factor, as placement does everywhere else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quorumkv_ring::{NodeId, PartitionId, Ring};
use tokio::time::Instant;

use super::transfer::SETTLE;
use super::Coordinator;
use crate::error::CoordinatorError;

/// What a cleanup dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// (partition, bucket) pairs that held records this node does not own.
    pub partitions: u64,
    /// Records dropped.
    pub keys: u64,
    /// Their bytes as stored.
    pub bytes: u64,
    /// Records and bytes dropped, by bucket.
    pub buckets: BTreeMap<String, (u64, u64)>,
}

/// The automatic cleanup's memory, and the lock that runs one cleanup at a time.
#[derive(Debug, Default)]
pub(crate) struct CleanupState {
    /// A std mutex: held to read or update the progress, never across an await.
    progress: Mutex<CleanupProgress>,
    /// Held while a cleanup runs.
    running: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct CleanupProgress {
    /// The ring version the last automatic cleanup completed for.
    cleaned: Option<u64>,
    /// The ring version waiting for its cleanup, and when this node first saw it balanced.
    waiting: Option<(u64, Instant)>,
}

/// Whether `node` owns `partition` for a bucket of replication factor `n` in `ring`.
pub fn owns(ring: &Ring, node: &NodeId, partition: u32, n: usize) -> bool {
    ring.preference_list_for(PartitionId(partition), n)
        .contains(node)
}

impl Coordinator {
    /// Drops this node's copies of the partitions it does not own, now. Refused while a
    /// membership change is under way or in its joint window. The work is a task of its
    /// own: a caller that stops waiting (a request past its timeout) does not stop it.
    pub async fn cleanup(self: &Arc<Self>) -> Result<CleanupReport, CoordinatorError> {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.cleanup_now().await })
            .await
            .map_err(|e| CoordinatorError::Internal(format!("cleanup task failed: {e}")))?
    }

    async fn cleanup_now(self: &Arc<Self>) -> Result<CleanupReport, CoordinatorError> {
        let ring = self.ring()?;
        if let Some(reason) = self.cleanup_refusal() {
            return Err(CoordinatorError::ChangeUnderWay(reason));
        }
        let _running = self.cleanup.running.lock().await;
        let partitions: Vec<u32> = ring.partitions().map(|p| p.0).collect();
        let report = self.drop_foreign(&ring, &partitions, true).await?;
        if report.keys > 0 {
            tracing::info!(
                partitions = report.partitions,
                keys = report.keys,
                bytes = report.bytes,
                "cleanup dropped the copies of partitions this node does not own"
            );
        }
        Ok(report)
    }

    /// Why a cleanup cannot run now, or `None` when it can.
    fn cleanup_refusal(&self) -> Option<String> {
        let (ring, next) = (self.membership.ring()?, self.membership.next_ring()?);
        if !Arc::ptr_eq(&ring, &next) {
            return Some(
                "a membership change is under way: clean up once it has committed".to_string(),
            );
        }
        self.membership.joint_ring(SETTLE).map(|_| {
            format!(
                "the last membership change committed less than {SETTLE:?} ago, and nodes \
                 that have not heard of it yet may still use this node's copies: retry then"
            )
        })
    }

    /// Called by every transfer round while the ring is balanced: runs the automatic
    /// cleanup once per ring version, `cleanup_delay` after this node first saw it
    /// balanced and outside the joint window.
    pub(super) async fn cleanup_when_due(self: &Arc<Self>) {
        let Some(delay) = self.options.cleanup_delay else {
            return;
        };
        // A node that has left owns nothing and is about to stop: its copies go with it.
        if self.planted.get() == super::planted::ReplicaFault::KeepOldCopies || self.has_left() {
            return;
        }
        let version = self.membership.table().ring_version();
        {
            let mut progress = self.cleanup_progress();
            if progress.cleaned == Some(version) {
                return;
            }
            match progress.waiting {
                Some((waiting, since)) if waiting == version => {
                    if since.elapsed() < delay {
                        return;
                    }
                }
                _ => {
                    progress.waiting = Some((version, Instant::now()));
                    return;
                }
            }
        }
        match self.cleanup().await {
            Ok(_) => self.cleanup_progress().cleaned = Some(version),
            Err(error) => tracing::debug!(%error, "automatic cleanup postponed"),
        }
    }

    /// At the start of a change: drops this node's old copies of the partitions it gains,
    /// before their transfer pulls them, so that they never meet the current copies.
    pub(super) async fn drop_before_regaining(
        self: &Arc<Self>,
        ring: &Arc<Ring>,
        gained: &BTreeSet<u32>,
    ) {
        if gained.is_empty() || self.planted.get() == super::planted::ReplicaFault::KeepOldCopies {
            return;
        }
        let _running = self.cleanup.running.lock().await;
        let gained: Vec<u32> = gained.iter().copied().collect();
        match self.drop_foreign(ring, &gained, false).await {
            Ok(report) if report.keys > 0 => tracing::info!(
                partitions = report.partitions,
                keys = report.keys,
                "dropped this node's old copies of the partitions it gains, before pulling them"
            ),
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "cannot drop old copies of gained partitions"),
        }
    }

    /// Drops every (partition, bucket) of `partitions` that this node holds and does not
    /// own in `ring`. With `balanced`, stops (refused) as soon as a change begins, whose
    /// transfers may be sending this node what it would drop.
    async fn drop_foreign(
        self: &Arc<Self>,
        ring: &Arc<Ring>,
        partitions: &[u32],
        balanced: bool,
    ) -> Result<CleanupReport, CoordinatorError> {
        let mut report = CleanupReport::default();
        for &partition in partitions {
            for (bucket, _) in self.store.aae_roots(partition) {
                let Some(n) = self.replication_factor(&bucket) else {
                    continue; // not a bucket name: no placement to judge it by
                };
                if owns(ring, &self.node, partition, n) {
                    continue;
                }
                if balanced {
                    if let Some(reason) = self.cleanup_refusal() {
                        return Err(CoordinatorError::ChangeUnderWay(reason));
                    }
                }
                let store = Arc::clone(&self.store);
                let name = bucket.clone();
                let dropped = tokio::task::spawn_blocking(move || {
                    store.drop_partition_bucket(partition, &name)
                })
                .await
                .map_err(|e| CoordinatorError::Internal(format!("cleanup task failed: {e}")))?
                .map_err(|e| CoordinatorError::Internal(format!("cleanup: {e}")))?;
                report.partitions += 1;
                report.keys += dropped.keys;
                report.bytes += dropped.bytes;
                let entry = report
                    .buckets
                    .entry(String::from_utf8_lossy(&bucket).into_owned())
                    .or_default();
                entry.0 += dropped.keys;
                entry.1 += dropped.bytes;
                metrics::counter!("quorumkv_cleanup_keys_dropped_total").increment(dropped.keys);
                metrics::counter!("quorumkv_cleanup_bytes_dropped_total").increment(dropped.bytes);
            }
        }
        Ok(report)
    }

    fn cleanup_progress(&self) -> std::sync::MutexGuard<'_, CleanupProgress> {
        // Two versions and an instant: a panic cannot leave them harmful, at worst a
        // cleanup runs again.
        self.cleanup
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The default of `cleanup_delay`: how long after a change commits its old owners drop
/// their copies, twice the time gossip is assumed to take.
pub const DEFAULT_CLEANUP_DELAY: Duration = Duration::from_secs(10);
