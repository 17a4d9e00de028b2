//! Hinted handoff: replaying hints to their owners once they are back.
//!
//! Every node periodically looks at the owners it holds hints for; for each one the
//! failure detector reports up, it sends a batch of hints as ordinary `Merge` requests
//! and deletes each hint once the owner acknowledged it, and only if the hint did not
//! grow meanwhile (then it is replayed again next round). Hints older than the hint TTL are
//! dropped first; anti-entropy repairs what they carried. Rounds are bounded (a batch per
//! owner, a few sends at a time), so a returning node is caught up at a steady pace
//! without starving client requests.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use quorumkv_replica::Hint;
use quorumkv_ring::NodeId;
use tokio::time::Instant;

use super::Coordinator;
use crate::message::{Request, Response};

/// How many hints are in flight to one owner at once.
const REPLAY_CONCURRENCY: usize = 16;
/// How long one replayed hint may take.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(5);

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
                    Ok(Response::Ack) => {
                        let store = Arc::clone(&this.store);
                        let name = owner.as_str().to_string();
                        tokio::task::spawn_blocking(move || {
                            store.remove_hint_if_unchanged(
                                &name,
                                &hint.bucket,
                                &hint.key,
                                &hint.object,
                            )
                        })
                        .await
                        .is_ok_and(|r| r.is_ok())
                    }
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
}
