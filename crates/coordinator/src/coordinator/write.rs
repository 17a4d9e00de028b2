//! The write path: mint at one owner, replicate to the others, hint the unreachable.
//!
//! 1. Place the key: owners that are up, fallbacks for owners that are down (sloppy
//!    quorum), and down owners with no fallback.
//! 2. Mint the version at an up owner (this node first when it is one): its dot must come
//!    from one replica's own state, so a fallback never mints. An owner whose mint failed
//!    is skipped for the next one; if the failure was only a lost answer, the write exists
//!    twice, as two siblings of the same value (as after a client's retry), never lost.
//! 3. Send the minted state to every other up owner (`Merge`) and to each fallback
//!    (`MergeHint` for the owner it stands in for), all at once.
//! 4. Answer once `w` acknowledgements, `pw` of them from owners, have arrived; fallback
//!    acknowledgements count only for a sloppy quorum.
//! 5. Every owner the write did not reach (down with no fallback, or a send that failed)
//!    gets a hint kept by this node, so hinted handoff brings it up to date when it is
//!    back. These sends and hints finish in the background after the answer.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use quorumkv_replica::{Value, VersionVector, VersionedObject};
use quorumkv_ring::NodeId;
use tokio::time::Instant;

use super::{quorum_unavailable, timed_out_failure, unexpected, Coordinator, Quorum};
use crate::error::{CoordinatorError, Operation, ReplicaFailure};
use crate::message::{Request, Response};
use crate::{BucketName, Key};

impl Coordinator {
    #[allow(clippy::too_many_arguments)] // one call site per operation; a struct would only rename them
    pub(super) async fn write_quorum(
        self: &Arc<Self>,
        operation: Operation,
        bucket: &BucketName,
        key: &Key,
        context: VersionVector,
        value: Value,
        n: usize,
        quorum: Quorum,
        deadline: Instant,
    ) -> Result<VersionVector, CoordinatorError> {
        let handoff = self.options.hinted_handoff;
        let (placement, mut failures) = self.place_request(operation, bucket, key, n, quorum)?;

        // Mint at an up owner, this node first.
        let mut candidates = placement.up_primaries.clone();
        if let Some(me) = candidates.iter().position(|n| *n == self.node) {
            let me = candidates.remove(me);
            candidates.insert(0, me);
        }
        let mint = Request::Coordinate {
            bucket: bucket.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
            context,
            value,
        };
        let mut minted = None;
        for candidate in &candidates {
            if Instant::now() >= deadline {
                break;
            }
            match self.call_replica(candidate, mint.clone(), deadline).await {
                Ok(Response::Object(Some(object))) => {
                    minted = Some((candidate.clone(), object));
                    break;
                }
                Ok(other) => failures.push(unexpected(candidate.clone(), &other)),
                Err(reason) => failures.push(ReplicaFailure {
                    node: candidate.clone(),
                    reason,
                }),
            }
        }
        let Some((minter, object)) = minted else {
            return Err(quorum_unavailable(operation, quorum.required, 0, failures));
        };

        // Owners the write will not be sent to directly get a hint here.
        if handoff {
            let mut unreached: Vec<NodeId> = placement.unplaced.clone();
            unreached.extend(candidates.iter().take_while(|c| **c != minter).cloned());
            for owner in unreached {
                self.keep_hint_in_background(owner, bucket, key, &object);
            }
        }

        let bucket_bytes = bucket.as_bytes().to_vec();
        let key_bytes = key.as_bytes().to_vec();
        let mut sends: Vec<(NodeId, Request)> = placement
            .up_primaries
            .iter()
            .filter(|p| {
                **p != minter
                    && !candidates
                        .iter()
                        .take_while(|c| **c != minter)
                        .any(|c| c == *p)
            })
            .map(|owner| {
                (
                    owner.clone(),
                    Request::Merge {
                        bucket: bucket_bytes.clone(),
                        key: key_bytes.clone(),
                        object: object.clone(),
                    },
                )
            })
            .collect();
        let owner_sends = sends.len();
        // Fallbacks exist only for a sloppy quorum with handoff on (see `place_request`).
        for (owner, fallback) in &placement.fallbacks {
            sends.push((
                fallback.clone(),
                Request::MergeHint {
                    owner: owner.clone(),
                    bucket: bucket_bytes.clone(),
                    key: key_bytes.clone(),
                    object: object.clone(),
                },
            ));
        }
        let primaries: Vec<NodeId> = sends[..owner_sends]
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        // Whom a failed send leaves a hint for: the owner itself, or the owner a fallback
        // stood in for.
        let hint_owner: HashMap<NodeId, NodeId> = primaries
            .iter()
            .map(|p| (p.clone(), p.clone()))
            .chain(
                placement
                    .fallbacks
                    .iter()
                    .map(|(o, f)| (f.clone(), o.clone())),
            )
            .collect();
        let total_sends = sends.len();
        let mut pending = self.fan_out(sends, deadline);

        let mut acks = 1;
        let mut primary_acks = 1;
        let mut done = 0;
        while acks < quorum.required || primary_acks < quorum.primaries {
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some((node, result))) => {
                    done += 1;
                    let is_primary = primaries.contains(&node);
                    match result {
                        Ok(Response::Ack) => {
                            acks += 1;
                            if is_primary {
                                primary_acks += 1;
                            }
                        }
                        other => {
                            let failure = match other {
                                Ok(response) => unexpected(node.clone(), &response),
                                Err(reason) => ReplicaFailure {
                                    node: node.clone(),
                                    reason,
                                },
                            };
                            failures.push(failure);
                            if let (true, Some(owner)) = (handoff, hint_owner.get(&node)) {
                                self.keep_hint_in_background(owner.clone(), bucket, key, &object);
                            }
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    failures.push(timed_out_failure(total_sends - done));
                    break;
                }
            }
        }
        // The sends still running finish on their own; one that fails leaves a hint.
        if handoff && !pending.is_empty() {
            let this = Arc::clone(self);
            let bucket = bucket.clone();
            let key = key.clone();
            let object = object.clone();
            tokio::spawn(async move {
                while let Some((node, result)) = pending.next().await {
                    if let (false, Some(owner)) =
                        (matches!(result, Ok(Response::Ack)), hint_owner.get(&node))
                    {
                        this.keep_hint_in_background(owner.clone(), &bucket, &key, &object);
                    }
                }
            });
        }
        if acks < quorum.required || primary_acks < quorum.primaries {
            return Err(quorum_unavailable(
                operation,
                quorum.required,
                acks,
                failures,
            ));
        }
        Ok(object.clock().clone())
    }

    /// Keeps `object` as a hint for `owner` in this node's store, off the request path.
    pub(super) fn keep_hint_in_background(
        self: &Arc<Self>,
        owner: NodeId,
        bucket: &BucketName,
        key: &Key,
        object: &VersionedObject,
    ) {
        if owner == self.node {
            return;
        }
        let request = Request::MergeHint {
            owner,
            bucket: bucket.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
            object: object.clone(),
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Response::Error { message, .. } = this.execute_on_store(request).await {
                tracing::warn!(%message, "cannot keep a hint");
            }
        });
    }
}
