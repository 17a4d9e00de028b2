//! Moving partitions to their new owners while the membership changes, and committing the
//! change once they have them.
//!
//! A change is under way while the next ring (`Active` and `Joining` members) differs from
//! the current one (`Active` and `Leaving`). Every node computes, from the two rings alone,
//! the partitions it *gains*: those whose owners (for some replication factor in use) in
//! the next ring include it and in the current ring do not. For each, it pulls the
//! partition from **every** current owner that is up, with the anti-entropy exchange
//! (trees, then segments, then keys): a write acknowledged by `w` owners may be on only
//! `w` of them, so syncing with one owner could miss it. A partition is done once all those
//! exchanges succeeded after the change began. Owners that are down are skipped (a removed
//! node is only ever a source); with none up, the partition waits.
//!
//! Transfers start [`SETTLE`] after the node saw the change, so that every node has heard
//! of it by gossip and writes on the joint quorum before the copies are taken (a write a
//! node places on the current ring alone after a copy would be missed by it).
//!
//! Once all its partitions are done, a node advertises it in its own record
//! (`transfers_done`: the hash of the next ring). When every member of the next ring
//! advertises the same hash, any node commits: `Joining` members become `Active`,
//! `Leaving` ones `Removed`, each with its version plus one, so concurrent commits write
//! the same records. A member that gains nothing advertises at once, after [`SETTLE`].
//!
//! The nodes that lose a partition drop their copies once the change has committed, and a
//! node drops any old copy of a partition it gains before pulling it ([`super::cleanup`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quorumkv_ring::{NodeId, PartitionId, Ring};
use tokio::time::Instant;

use super::antientropy::{Budget, Ended};
use super::{AntiEntropyStats, Coordinator};
use crate::gossip::MemberState;
use crate::message::{Request, Response};

/// How long after a membership change (or its commit) nodes are assumed to have heard of
/// it by gossip: transfers start this long after the change is seen, and writes keep
/// reaching the ring a commit replaced for this long.
pub const SETTLE: Duration = Duration::from_secs(5);

/// How often a transfer round runs (it returns at once when no membership change is under
/// way).
pub const ROUND_INTERVAL: Duration = Duration::from_millis(1000);

/// How long one exchange of a transfer may run before it is cut (and retried).
const EXCHANGE_BUDGET: Duration = Duration::from_secs(60);

/// What this node knows of the change under way.
#[derive(Debug, Default)]
pub(crate) struct TransferState {
    /// A std mutex: held to read or update the progress, never across an await.
    progress: Mutex<Progress>,
}

#[derive(Debug, Default)]
struct Progress {
    /// The hash of the next ring the progress is for.
    next_ring: Option<u64>,
    /// When this node saw that next ring.
    seen_at: Option<Instant>,
    /// The partitions it gains there, and those it has received.
    gained: BTreeSet<u32>,
    done: BTreeSet<u32>,
}

/// What one transfer round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Partitions received in this round.
    pub completed: u64,
    /// Partitions this node still waits for.
    pub pending: u64,
    /// Bytes of anti-entropy messages sent and received.
    pub bytes: u64,
    /// Whether this round committed the change.
    pub committed: bool,
}

impl Coordinator {
    /// One round of transfers: pulls the partitions this node gains, advertises when it has
    /// them all, and commits the change when every next owner has advertised. The server
    /// calls it every second; a round is cheap when nothing moves.
    pub async fn transfer_round(self: &Arc<Self>) -> TransferStats {
        let mut stats = TransferStats::default();
        let (Some(ring), Some(next)) = (self.membership.ring(), self.membership.next_ring()) else {
            return stats;
        };
        if Arc::ptr_eq(&ring, &next) {
            *self.progress() = Progress::default();
            metrics::gauge!("quorumkv_transfers_pending").set(0.0);
            self.cleanup_when_due().await;
            return stats;
        }
        let table = self.membership.table();
        let hash = table.next_ring_hash();
        let gained = self.gained_partitions(&ring, &next, &self.node);
        let mut first_sight = false;
        let seen_at = {
            let mut progress = self.progress();
            if progress.next_ring != Some(hash) {
                first_sight = true;
                tracing::info!(
                    next_ring = hash,
                    ring_version = table.ring_version(),
                    current = ?ring.members(),
                    next = ?next.members(),
                    gained = gained.len(),
                    "membership change under way: transfers start after {SETTLE:?}"
                );
                *progress = Progress {
                    next_ring: Some(hash),
                    seen_at: Some(Instant::now()),
                    gained: gained.clone(),
                    done: BTreeSet::new(),
                };
            }
            progress.seen_at.unwrap_or_else(Instant::now)
        };
        let own_done = table
            .get(&self.node)
            .is_some_and(|r| r.transfers_done == Some(hash));
        if first_sight && !own_done {
            // Whatever this node still holds of a partition it gains is an old copy: drop it
            // before the transfer, so it never meets the current one (see `cleanup`). Once
            // this node has advertised its transfers done, what it holds is current.
            self.drop_before_regaining(&ring, &gained).await;
        }
        metrics::gauge!("quorumkv_transfers_pending").set(self.pending_transfers() as f64);
        if seen_at.elapsed() < SETTLE {
            return stats;
        }
        let mut aae = AntiEntropyStats::default();
        for partition in gained {
            if self.progress().done.contains(&partition) {
                continue;
            }
            if self
                .membership
                .next_ring()
                .is_none_or(|n| !Arc::ptr_eq(&n, &next))
            {
                break; // the table changed under us: the next round starts over
            }
            if self.pull_partition(&ring, &next, partition, &mut aae).await {
                self.progress().done.insert(partition);
                stats.completed += 1;
                metrics::counter!("quorumkv_transfers_completed_total").increment(1);
            }
        }
        stats.bytes = aae.bytes_sent + aae.bytes_received;
        metrics::counter!("quorumkv_transfer_bytes_total").increment(stats.bytes);
        let pending = {
            let progress = self.progress();
            progress.gained.len() - progress.done.len()
        };
        stats.pending = pending as u64;
        if stats.completed > 0 || aae.errors > 0 {
            tracing::info!(
                completed = stats.completed,
                pending,
                keys = aae.keys_exchanged,
                bytes = stats.bytes,
                errors = aae.errors,
                "transfer round"
            );
        }
        let in_next = table
            .get(&self.node)
            .is_some_and(|r| r.state.in_next_ring());
        if pending == 0 && in_next && !own_done {
            self.membership
                .update_own(|record| record.transfers_done = Some(hash));
            tracing::info!(next_ring = hash, "received every partition this node gains");
            self.persist_members().await;
        }
        let table = self.membership.table();
        if table.next_ring_hash() == hash && table.transfers_done_everywhere() {
            let commit = table.commit();
            tracing::info!(
                next_ring = hash,
                changes = ?commit.iter().map(|r| (r.id.as_str(), r.state.as_str())).collect::<Vec<_>>(),
                "every next owner has its partitions: committing the membership change"
            );
            self.membership.merge_records(commit);
            self.persist_members().await;
            stats.committed = true;
        }
        metrics::gauge!("quorumkv_transfers_pending").set(self.pending_transfers() as f64);
        stats
    }

    /// The (partition, new owner) pairs not yet received, as this node knows: its own
    /// exactly, another member's all of them until it advertises that it is done. 0 when
    /// nothing moves.
    pub fn pending_transfers(&self) -> usize {
        let Some((ring, next)) = self.rings_in_change() else {
            return 0;
        };
        let table = self.membership.table();
        let hash = table.next_ring_hash();
        let mut pending = 0;
        for record in table.records().filter(|r| r.state.in_next_ring()) {
            if record.id == self.node {
                let progress = self.progress();
                pending += if progress.next_ring == Some(hash) {
                    progress.gained.len() - progress.done.len()
                } else {
                    self.gained_partitions(&ring, &next, &self.node).len()
                };
            } else if record.transfers_done != Some(hash) {
                pending += self.gained_partitions(&ring, &next, &record.id).len();
            }
        }
        pending
    }

    /// The current and the next ring while a membership change is under way (they
    /// differ); `None` when the cluster is balanced or has no ring yet.
    fn rings_in_change(&self) -> Option<(Arc<Ring>, Arc<Ring>)> {
        let (ring, next) = (self.membership.ring()?, self.membership.next_ring()?);
        (!Arc::ptr_eq(&ring, &next)).then_some((ring, next))
    }

    /// Every (partition, new owner) pair of the change under way, done or not: the length
    /// of the progress that [`pending_transfers`](Self::pending_transfers) counts down.
    /// 0 when nothing moves.
    pub fn transfers_total(&self) -> usize {
        let Some((ring, next)) = self.rings_in_change() else {
            return 0;
        };
        self.membership
            .table()
            .records()
            .filter(|r| r.state.in_next_ring())
            .map(|r| self.gained_partitions(&ring, &next, &r.id).len())
            .sum()
    }

    /// Why this node should not take client traffic yet, or `None` when it should.
    ///
    /// A node is ready once its ring is formed, except while it is *joining* and has not
    /// received every partition it gains: it could coordinate requests (they go to the
    /// current owners), but an orchestrator must not count it as a replica, and a rolling
    /// change must not move on, until its data is there. An *active* node that gains
    /// partitions because another one leaves stays ready: it already serves the ones it
    /// had, and joint writes keep the ones it gains correct. A *leaving* node is not
    /// ready: it is about to stop, so clients should go elsewhere.
    pub fn unready_reason(&self) -> Option<String> {
        if self.membership.ring().is_none() {
            return Some(format!(
                "the ring is not formed yet: {}",
                self.membership.not_ready_reason()
            ));
        }
        let table = self.membership.table();
        let own = table.get(&self.node)?;
        match own.state {
            MemberState::Active => None,
            MemberState::Joining if own.transfers_done == Some(table.next_ring_hash()) => None,
            MemberState::Joining => {
                let progress = self.progress();
                let gained = progress.gained.len();
                let done = progress.done.len();
                Some(if progress.next_ring.is_some() {
                    format!("joining: received {done} of the {gained} partitions it gains")
                } else {
                    "joining: its transfers have not started".to_string()
                })
            }
            MemberState::Leaving => {
                Some("leaving: handing its partitions to their next owners".to_string())
            }
            MemberState::Removed => Some("removed from the cluster".to_string()),
        }
    }

    /// The partitions `node` owns in `next` but not in `ring`, for a replication factor
    /// of some bucket.
    fn gained_partitions(&self, ring: &Ring, next: &Ring, node: &NodeId) -> BTreeSet<u32> {
        let factors = self.replication_factors();
        ring.partitions()
            .filter(|&partition| {
                factors.iter().any(|&n| {
                    next.preference_list_for(partition, n).contains(node)
                        && !ring.preference_list_for(partition, n).contains(node)
                })
            })
            .map(|partition| partition.0)
            .collect()
    }

    /// Every replication factor in use: the default and each bucket's.
    fn replication_factors(&self) -> BTreeSet<usize> {
        let mut factors: BTreeSet<usize> =
            self.props.snapshot().values().map(|p| p.props.n).collect();
        factors.insert(self.options.default_n);
        factors
    }

    /// Pulls `partition` from every current owner that is up, for the buckets this node
    /// gains there. True when every exchange succeeded and at least one owner was up.
    async fn pull_partition(
        self: &Arc<Self>,
        ring: &Ring,
        next: &Ring,
        partition: u32,
        aae: &mut AntiEntropyStats,
    ) -> bool {
        let factors = self.replication_factors();
        let sources: BTreeSet<NodeId> = factors
            .iter()
            .filter(|&&n| {
                next.preference_list_for(PartitionId(partition), n)
                    .contains(&self.node)
            })
            .flat_map(|&n| ring.preference_list_for(PartitionId(partition), n))
            .filter(|owner| *owner != self.node)
            .collect();
        let up: Vec<NodeId> = sources
            .into_iter()
            .filter(|s| self.membership.is_up(s))
            .collect();
        if up.is_empty() {
            return false;
        }
        let mut complete = true;
        for source in &up {
            complete &= self.pull_from(ring, next, partition, source, aae).await;
        }
        complete
    }

    /// Pulls the buckets of `partition` that `source` owns now and this node gains.
    async fn pull_from(
        self: &Arc<Self>,
        ring: &Ring,
        next: &Ring,
        partition: u32,
        source: &NodeId,
        aae: &mut AntiEntropyStats,
    ) -> bool {
        let Some(addr) = self.membership.addr_of(source) else {
            return false;
        };
        let errors_before = aae.errors;
        let remote: BTreeMap<Vec<u8>, u64> = match self
            .aae_call(&addr, Request::AaeRoots { partition }, aae)
            .await
        {
            Ok(Response::AaeRoots(roots)) => roots.into_iter().collect(),
            other => {
                aae.errors += 1;
                tracing::warn!(%source, partition, ?other, "transfer: cannot read the roots");
                return false;
            }
        };
        aae.exchanges += 1;
        let local: BTreeMap<Vec<u8>, u64> = self.store.aae_roots(partition).into_iter().collect();
        let mut budget = Budget {
            deadline: Instant::now() + EXCHANGE_BUDGET,
            keys_left: usize::MAX,
        };
        for (bucket, root) in &remote {
            if local.get(bucket) == Some(root) {
                continue;
            }
            let gains = self.replication_factor(bucket).is_some_and(|n| {
                let now = ring.preference_list_for(PartitionId(partition), n);
                now.contains(source)
                    && !now.contains(&self.node)
                    && next
                        .preference_list_for(PartitionId(partition), n)
                        .contains(&self.node)
            });
            if !gains {
                continue;
            }
            if self
                .exchange_tree(&addr, partition, bucket, &mut budget, aae)
                .await
                == Ended::OutOfBudget
            {
                return false;
            }
        }
        aae.errors == errors_before
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        // The progress is a few sets a panic cannot leave inconsistent in a harmful way:
        // at worst a partition is pulled again.
        self.transfers
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
