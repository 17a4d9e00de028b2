//! Tombstone reaping: deleting deletion markers once no replica can bring the value back.
//!
//! A tombstone must outlive every copy of the value it deletes: reaped too early, a replica
//! that missed the delete (it was down, or a hint for it is still waiting) would hand the
//! old value back to the others through handoff, read repair or anti-entropy, and the
//! deleted key would come back to life. So, as with Cassandra's `gc_grace_seconds`, a
//! tombstone is reaped only when
//!
//! 1. this node has seen the key deleted, with the same clock, for the whole grace period
//!    (which the server requires to be at least the hint TTL, so no hint of the old value
//!    can still be delivered), and
//! 2. every one of the key's `n` owners answers, and each holds exactly this tombstone or
//!    nothing for the key (an owner that already reaped it, or never had the value).
//!
//! An owner that still holds the old value, or does not answer, blocks reaping until it
//! has received the tombstone. The owner that reaps first asks the others to reap their
//! copies too (`Request::Reap`, honoured only by an owner holding exactly that tombstone):
//! otherwise anti-entropy would hand the tombstone back to it from an owner whose grace
//! had not yet run out, its grace would start again, and reaping would converge only by
//! luck. A request that does not arrive is harmless: that owner reaps on its own, later,
//! and the ones that already did count as agreeing (they hold nothing). The scan is paged
//! and resumable, so a round costs a bounded amount of work.
//!
//! What this cannot protect against, like every system built this way: a node that stays
//! down longer than the grace period and comes back with the old value. Operators repair
//! or replace such a node before it rejoins (see docs/consistency.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorumkv_replica::{Tombstone, VersionVector};

use quorumkv_ring::NodeId;

use super::Coordinator;
use crate::message::{Request, Response};
use crate::BucketName;

/// How many records one reaper round scans.
pub const REAP_BUDGET: usize = 10_000;

/// A reaper round every half grace period, between half a second and a minute: often
/// enough that a tombstone goes soon after its grace, rarely enough to cost nothing.
pub fn reap_interval(grace: Duration) -> Duration {
    (grace / 2).clamp(Duration::from_millis(500), Duration::from_secs(60))
}

/// How long verifying one tombstone with its owners may take.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(2);
/// The most tombstones remembered between rounds (beyond it the memory restarts; reaping
/// only happens later, never sooner).
const MAX_TRACKED: usize = 1_000_000;

/// Where the scan is, and since when each tombstone has been seen unchanged.
#[derive(Debug, Default)]
pub(crate) struct ReaperState {
    resume: Option<Vec<u8>>,
    seen: HashMap<(Vec<u8>, Vec<u8>), (Instant, VersionVector)>,
}

impl Coordinator {
    /// One round of tombstone reaping over at most `budget` records; returns how many
    /// tombstones were reaped.
    pub async fn reap_tombstones(self: &Arc<Self>, budget: usize) -> usize {
        let grace = self.options.tombstone_grace;
        let resume = self.reaper_state().resume.clone();
        let store = Arc::clone(&self.store);
        let page = match tokio::task::spawn_blocking(move || {
            store.scan_tombstones(resume.as_deref(), budget)
        })
        .await
        {
            Ok(Ok(page)) => page,
            Ok(Err(error)) => {
                tracing::error!(%error, "tombstone scan failed");
                return 0;
            }
            Err(error) => {
                tracing::error!(%error, "tombstone scan task failed");
                return 0;
            }
        };
        let now = Instant::now();
        let candidates: Vec<Tombstone> = {
            let mut state = self.reaper_state();
            state.resume = page.resume;
            if state.seen.len() > MAX_TRACKED {
                state.seen.clear();
            }
            page.tombstones
                .into_iter()
                .filter(|t| {
                    let entry = state
                        .seen
                        .entry((t.bucket.clone(), t.key.clone()))
                        .or_insert_with(|| (now, t.object.clock().clone()));
                    if entry.1 != *t.object.clock() {
                        *entry = (now, t.object.clock().clone());
                    }
                    now.saturating_duration_since(entry.0) >= grace
                })
                .collect()
        };
        let mut reaped = 0;
        for tombstone in candidates {
            let Some(owners) = self.owners_agree(&tombstone).await else {
                continue;
            };
            if self.remove_tombstone(&tombstone).await {
                self.reap_elsewhere(owners, &tombstone).await;
                reaped += 1;
                self.reaper_state()
                    .seen
                    .remove(&(tombstone.bucket.clone(), tombstone.key.clone()));
            }
        }
        if reaped > 0 {
            metrics::counter!("quorumkv_tombstones_reaped_total").increment(reaped as u64);
            tracing::info!(reaped, "tombstones reaped");
        }
        reaped
    }

    /// The other owners of the key, if every one of them holds exactly this tombstone, or
    /// nothing.
    async fn owners_agree(self: &Arc<Self>, tombstone: &Tombstone) -> Option<Vec<NodeId>> {
        let bucket = BucketName::parse(&tombstone.bucket).ok()?;
        let ring = self.membership.ring()?;
        let n = self.bucket_props(&bucket).n;
        let owners = ring.preference_list(&tombstone.bucket, &tombstone.key, n);
        if !owners.contains(&self.node) {
            // Not ours to reap: a copy outside the preference list is left to its owners.
            return None;
        }
        let others: Vec<NodeId> = owners
            .into_iter()
            .filter(|owner| *owner != self.node)
            .collect();
        if self.planted.get() == super::planted::ReplicaFault::ReapWithoutAgreement {
            return Some(others);
        }
        let deadline = tokio::time::Instant::now() + VERIFY_TIMEOUT;
        let sends = others
            .iter()
            .cloned()
            .map(|owner| {
                (
                    owner,
                    Request::Get {
                        bucket: tombstone.bucket.clone(),
                        key: tombstone.key.clone(),
                    },
                )
            })
            .collect();
        let replies: Vec<_> = futures::StreamExt::collect(self.fan_out(sends, deadline)).await;
        let agree = replies.iter().all(|(_, reply)| match reply {
            Ok(Response::Object(None)) => true,
            Ok(Response::Object(Some(object))) => {
                object.is_deleted() && object.clock() == tombstone.object.clock()
            }
            _ => false,
        });
        agree.then_some(others)
    }

    /// Asks the other owners to reap their copies of a tombstone this node has reaped;
    /// waits for their answers (at most [`VERIFY_TIMEOUT`]), whatever they are.
    async fn reap_elsewhere(self: &Arc<Self>, owners: Vec<NodeId>, tombstone: &Tombstone) {
        let deadline = tokio::time::Instant::now() + VERIFY_TIMEOUT;
        let sends = owners
            .into_iter()
            .map(|owner| {
                (
                    owner,
                    Request::Reap {
                        bucket: tombstone.bucket.clone(),
                        key: tombstone.key.clone(),
                        object: tombstone.object.clone(),
                    },
                )
            })
            .collect();
        let _: Vec<_> = futures::StreamExt::collect(self.fan_out(sends, deadline)).await;
    }

    async fn remove_tombstone(self: &Arc<Self>, tombstone: &Tombstone) -> bool {
        let store = Arc::clone(&self.store);
        let tombstone = tombstone.clone();
        matches!(
            tokio::task::spawn_blocking(move || {
                store.remove_if_unchanged(&tombstone.bucket, &tombstone.key, &tombstone.object)
            })
            .await,
            Ok(Ok(true))
        )
    }

    fn reaper_state(&self) -> std::sync::MutexGuard<'_, ReaperState> {
        self.reaper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
