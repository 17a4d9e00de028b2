//! The read path, and read repair.
//!
//! A read asks every up owner at once (and, for a sloppy quorum, the fallback holding
//! hints for each down owner) and answers with the merge of the first `r` replies, `pr`
//! of them from owners. The replies still on their way are collected in the background
//! until the deadline; then every owner whose copy differs from the merge of all replies
//! receives that merge (Dynamo, section 4.7's read repair, done after the answer so that
//! it never adds latency). Repairs are bounded by a semaphore: when it is exhausted a
//! repair is skipped and counted, never queued without bound.

use std::sync::Arc;

use futures::StreamExt;
use quorumkv_replica::VersionedObject;
use quorumkv_ring::NodeId;
use tokio::time::Instant;

use super::{quorum_met, timed_out_failure, unexpected, Coordinator, Quorum};
use crate::error::{CoordinatorError, Operation, ReplicaFailure};
use crate::message::{Request, Response};
use crate::tally::{AckTally, Counts, Requirement};
use crate::{BucketName, Key};

impl Coordinator {
    #[allow(clippy::too_many_arguments)] // one call site per operation; a struct would only rename them
    pub(super) async fn read_quorum(
        self: &Arc<Self>,
        operation: Operation,
        bucket: &BucketName,
        key: &Key,
        n: usize,
        quorum: Quorum,
        repair: bool,
        deadline: Instant,
    ) -> Result<VersionedObject, CoordinatorError> {
        let (placement, mut failures) = self.place_request(operation, bucket, key, n, quorum)?;
        let bucket_bytes = bucket.as_bytes().to_vec();
        let key_bytes = key.as_bytes().to_vec();
        let mut sends: Vec<(NodeId, Request)> = placement
            .up_primaries
            .iter()
            .map(|owner| {
                (
                    owner.clone(),
                    Request::Get {
                        bucket: bucket_bytes.clone(),
                        key: key_bytes.clone(),
                    },
                )
            })
            .collect();
        // Fallbacks exist only for a sloppy quorum with handoff on (see `place_request`).
        for (owner, fallback) in &placement.fallbacks {
            sends.push((
                fallback.clone(),
                Request::GetHint {
                    owner: owner.clone(),
                    bucket: bucket_bytes.clone(),
                    key: key_bytes.clone(),
                },
            ));
        }
        let reachable = sends.len();
        let primaries = placement.up_primaries.clone();
        let mut pending = self.fan_out(sends, deadline);
        let mut merged = VersionedObject::new();
        let mut replies: Vec<(NodeId, VersionedObject)> = Vec::new();
        // Every reply counts toward `r`, an owner's toward `pr` too; a read has no joint ring.
        let mut tally = AckTally::new(Requirement {
            required: quorum.required,
            primaries: quorum.primaries,
            joint: 0,
        });
        let mut done = 0;
        while !tally.is_met() {
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some((node, Ok(Response::Object(object))))) => {
                    done += 1;
                    let object = object.unwrap_or_default();
                    merged.merge(&object);
                    let owner = primaries.contains(&node);
                    tally.record(Counts {
                        quorum: true,
                        primary: owner,
                        joint: false,
                    });
                    if owner {
                        replies.push((node, object));
                    }
                }
                Ok(Some((node, Ok(other)))) => {
                    done += 1;
                    failures.push(unexpected(node, &other));
                }
                Ok(Some((node, Err(reason)))) => {
                    done += 1;
                    failures.push(ReplicaFailure { node, reason });
                }
                Ok(None) => break,
                Err(_) => {
                    failures.push(timed_out_failure(reachable - done));
                    break;
                }
            }
        }
        quorum_met(&tally, operation, failures)?;
        if repair {
            let this = Arc::clone(self);
            let bucket = bucket.clone();
            let key = key.clone();
            let all = merged.clone();
            tokio::spawn(async move {
                this.repair_after_read(bucket, key, all, replies, primaries, pending, deadline)
                    .await;
            });
        }
        Ok(merged)
    }

    /// Waits for the replies still on their way, then sends the merge of all replies to
    /// every owner whose copy differs from it.
    #[allow(clippy::too_many_arguments)] // the state of one read, handed over whole
    async fn repair_after_read<F>(
        self: Arc<Self>,
        bucket: BucketName,
        key: Key,
        mut merged: VersionedObject,
        mut replies: Vec<(NodeId, VersionedObject)>,
        primaries: Vec<NodeId>,
        mut pending: super::Replies<F>,
        deadline: Instant,
    ) where
        F: std::future::Future<Output = (NodeId, Result<Response, String>)> + Send + 'static,
    {
        while let Ok(Some((node, result))) = tokio::time::timeout_at(deadline, pending.next()).await
        {
            if let Ok(Response::Object(object)) = result {
                let object = object.unwrap_or_default();
                merged.merge(&object);
                if primaries.contains(&node) {
                    replies.push((node, object));
                }
            }
        }
        let stale: Vec<NodeId> = replies
            .into_iter()
            .filter(|(_, object)| *object != merged)
            .map(|(node, _)| node)
            .collect();
        if stale.is_empty() {
            return;
        }
        let Ok(_permit) = Arc::clone(&self.repairs).try_acquire_owned() else {
            metrics::counter!("quorumkv_read_repairs_skipped_total").increment(stale.len() as u64);
            return;
        };
        let sends = stale
            .iter()
            .map(|node| {
                (
                    node.clone(),
                    Request::Merge {
                        bucket: bucket.as_bytes().to_vec(),
                        key: key.as_bytes().to_vec(),
                        object: merged.clone(),
                    },
                )
            })
            .collect();
        let repair_deadline = Instant::now() + self.options.default_timeout;
        let mut repairs = self.fan_out(sends, repair_deadline);
        while let Some((node, result)) = repairs.next().await {
            match result {
                Ok(Response::Ack) => {
                    metrics::counter!("quorumkv_read_repairs_total").increment(1);
                }
                other => {
                    tracing::debug!(%node, ?other, "read repair failed");
                    metrics::counter!("quorumkv_read_repairs_failed_total").increment(1);
                }
            }
        }
    }
}
