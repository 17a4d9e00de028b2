//! Hinted handoff: replaying hints to their owners once they are back.
//!
//! Every node periodically looks at the owners it holds hints for; for each one the
//! failure detector reports up, it sends a batch of hints as ordinary `Merge` requests
//! and deletes each hint once the owner acknowledged it, and only if the hint did not
//! grow meanwhile (then it is replayed again next round). Hints older than the hint TTL are
//! dropped first; anti-entropy repairs what they carried. Rounds are bounded (a batch per
//! owner, a few sends at a time), so a returning node is caught up at a steady pace
//! without starving client requests.
//!
//! A node that leaves the cluster must not take its hints with it: a hint may be one of
//! the `w` acknowledgements of a sloppy write. Before it exits it hands each one over
//! ([`Coordinator::hand_over_hints`]): to its owner when the owner is up, as a replay;
//! otherwise to another node that is up, the first along the key's walk that is neither
//! this node nor the owner (a fallback when one is up, else another owner), which keeps it
//! as its own hint for that owner. The receiver dates the hint from its arrival, so a hint
//! passed on may live up to one hint TTL longer than it would have here; it is delivered as
//! soon as its owner is back, and a tombstone of its key cannot be reaped while that owner
//! is down (every owner must answer).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use quorumkv_replica::Hint;
use quorumkv_ring::NodeId;
use tokio::time::Instant;

use super::Coordinator;
use crate::message::{Request, Response};

/// How often a node replays its hints to the owners that are back.
pub const REPLAY_INTERVAL: Duration = Duration::from_millis(1000);
/// How many hints per owner one replay round sends; a full batch means more are waiting,
/// and the next round follows at once.
pub const REPLAY_BATCH: usize = 1000;
/// How long a node that left the cluster may spend handing its hints over before it
/// exits.
pub const HAND_OVER_LIMIT: Duration = Duration::from_secs(30);
/// How many hints are in flight to one owner at once.
const REPLAY_CONCURRENCY: usize = 16;
/// How long one replayed hint may take.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(5);
/// Hints handed over per owner and pass, when this node leaves.
const HAND_OVER_BATCH: usize = 512;

/// What one round of handoff did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandoffStats {
    /// Hints delivered and deleted.
    pub replayed: usize,
    /// Hints whose delivery failed (kept for the next round).
    pub failed: usize,
    /// Hints dropped for age.
    pub expired: usize,
}

impl Coordinator {
    /// One round of hinted handoff: at most `batch` hints per owner that is up.
    pub async fn replay_hints(self: &Arc<Self>, batch: usize) -> HandoffStats {
        let mut stats = HandoffStats::default();
        let store = Arc::clone(&self.store);
        let ttl = self.options.hint_ttl;
        let expired = tokio::task::spawn_blocking(move || {
            let expired = store.drop_expired_hints(ttl)?;
            Ok::<_, quorumkv_replica::StoreError>((expired, store.hint_owners()?))
        })
        .await;
        let owners = match expired {
            Ok(Ok((expired, owners))) => {
                stats.expired = expired;
                owners
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot list hints");
                return stats;
            }
            Err(error) => {
                tracing::error!(%error, "hint listing task failed");
                return stats;
            }
        };
        for owner in owners {
            let owner = NodeId::new(owner);
            if !self.membership.is_up(&owner) || self.membership.addr_of(&owner).is_none() {
                continue;
            }
            let store = Arc::clone(&self.store);
            let name = owner.as_str().to_string();
            let hints =
                match tokio::task::spawn_blocking(move || store.hints_for(&name, batch)).await {
                    Ok(Ok(hints)) => hints,
                    _ => continue,
                };
            let (replayed, failed) = self.replay_to(&owner, hints).await;
            stats.replayed += replayed;
            stats.failed += failed;
        }
        if stats.replayed > 0 {
            tracing::info!(
                replayed = stats.replayed,
                failed = stats.failed,
                "hints handed off"
            );
        }
        stats
    }

    /// Before this node exits for good (it has left the cluster): hands every hint it
    /// holds to the hint's owner, or to another node that keeps it for the owner (see the
    /// module docs), until none is left or `limit` has passed. Returns how many are left.
    pub async fn hand_over_hints(self: &Arc<Self>, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        let (mut delivered, mut passed_on) = (0, 0);
        loop {
            let store = Arc::clone(&self.store);
            let owners = tokio::task::spawn_blocking(move || store.hint_owners())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let mut progress = 0;
            for owner in owners {
                let owner = NodeId::new(owner);
                let store = Arc::clone(&self.store);
                let name = owner.as_str().to_string();
                let Ok(Ok(hints)) =
                    tokio::task::spawn_blocking(move || store.hints_for(&name, HAND_OVER_BATCH))
                        .await
                else {
                    continue;
                };
                if self.membership.is_up(&owner) && self.membership.addr_of(&owner).is_some() {
                    let (replayed, _) = self.replay_to(&owner, hints).await;
                    delivered += replayed;
                    progress += replayed;
                } else {
                    let moved = self.pass_on(&owner, hints).await;
                    passed_on += moved;
                    progress += moved;
                }
            }
            let left = self.store.hint_count();
            if left == 0 || Instant::now() >= deadline {
                if left == 0 {
                    tracing::info!(
                        delivered,
                        passed_on,
                        "handed every hint over before leaving"
                    );
                } else {
                    tracing::warn!(
                        delivered,
                        passed_on,
                        left,
                        "leaving with hints no node could take: anti-entropy repairs their keys"
                    );
                }
                return left;
            }
            if progress == 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// Passes `hints` for `owner`, which is down, to other nodes that keep them as hints
    /// for it; removes each one passed on. Returns how many were.
    async fn pass_on(self: &Arc<Self>, owner: &NodeId, hints: Vec<Hint>) -> usize {
        let Some(ring) = self.membership.ring() else {
            return 0;
        };
        let walk_len = ring.members().len();
        let mut sends = futures::stream::iter(hints.into_iter().map(|hint| {
            let this = Arc::clone(self);
            let owner = owner.clone();
            let walk = ring.preference_list(&hint.bucket, &hint.key, walk_len);
            async move {
                let Some(n) = this.replication_factor(&hint.bucket) else {
                    return false;
                };
                // A fallback (past the key's n owners) adds a copy; an owner that is up
                // already has one, but keeps the hint as well as anyone.
                let (owners, fallbacks) = walk.split_at(n.min(walk.len()));
                let Some(keeper) = fallbacks.iter().chain(owners).find(|node| {
                    **node != this.node && **node != owner && this.membership.is_up(node)
                }) else {
                    return false;
                };
                let request = Request::MergeHint {
                    owner: owner.clone(),
                    bucket: hint.bucket.clone(),
                    key: hint.key.clone(),
                    object: hint.object.clone(),
                };
                let deadline = Instant::now() + REPLAY_TIMEOUT;
                let passed = matches!(
                    this.call_replica(keeper, request, deadline).await,
                    Ok(Response::Ack)
                );
                passed && this.forget_hint(&owner, hint).await == Some(true)
            }
        }))
        .buffer_unordered(REPLAY_CONCURRENCY);
        let mut moved = 0;
        while let Some(done) = sends.next().await {
            if done {
                moved += 1;
                metrics::counter!("quorumkv_hints_passed_on_total").increment(1);
            }
        }
        moved
    }

    async fn replay_to(self: &Arc<Self>, owner: &NodeId, hints: Vec<Hint>) -> (usize, usize) {
        let mut replayed = 0;
        let mut failed = 0;
        let mut sends = futures::stream::iter(hints.into_iter().map(|hint| {
            let this = Arc::clone(self);
            let owner = owner.clone();
            async move {
                let request = Request::Merge {
                    bucket: hint.bucket.clone(),
                    key: hint.key.clone(),
                    object: hint.object.clone(),
                };
                let deadline = Instant::now() + REPLAY_TIMEOUT;
                match this.call_replica(&owner, request, deadline).await {
                    // Delivered, whether or not the hint grew meanwhile (then it stays).
                    Ok(Response::Ack) => this.forget_hint(&owner, hint).await.is_some(),
                    _ => false,
                }
            }
        }))
        .buffer_unordered(REPLAY_CONCURRENCY);
        while let Some(delivered) = sends.next().await {
            if delivered {
                replayed += 1;
                metrics::counter!("quorumkv_hints_replayed_total").increment(1);
            } else {
                failed += 1;
            }
        }
        (replayed, failed)
    }

    /// Removes a hint its owner, or another node, now holds, unless it grew meanwhile:
    /// whether it was removed, or `None` when the store failed.
    async fn forget_hint(self: &Arc<Self>, owner: &NodeId, hint: Hint) -> Option<bool> {
        let store = Arc::clone(&self.store);
        let name = owner.as_str().to_string();
        tokio::task::spawn_blocking(move || {
            store.remove_hint_if_unchanged(&name, &hint.bucket, &hint.key, &hint.object)
        })
        .await
        .ok()?
        .ok()
    }
}
