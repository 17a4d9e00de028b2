//! The write path: mint at one owner, replicate to the others, hint the unreachable.
//!
//! 1. Place the key: owners that are up, fallbacks for owners that are down (sloppy
//!    quorum), and down owners with no fallback.
//! 2. Mint the version at an up owner (this node first when it is one): its dot must come
//!    from one replica's own state, so a fallback never mints. An owner whose mint failed,
//!    or that has not answered within a patience derived from recent mint latencies
//!    ([`MintLatency`]; a paused or overloaded owner the failure detector has not yet
//!    marked down), is skipped for the next one; if it applied the mint after all, the
//!    write exists twice, as two siblings of the same value (as after a client's retry),
//!    never lost.
//! 3. Send the minted state to every other up owner (`Merge`) and to each fallback
//!    (`MergeHint` for the owner it stands in for), all at once.
//! 4. Answer once `w` acknowledgements, `pw` of them from owners, have arrived; fallback
//!    acknowledgements count only for a sloppy quorum. The answer's context covers what
//!    the request's context covered and the minted dot, never a concurrent sibling the
//!    writer had not seen ([`quorumkv_replica::VersionedObject::write_context`]).
//! 5. Every owner the write did not reach (down with no fallback, or a send that failed)
//!    gets a hint kept by this node, so hinted handoff brings it up to date when it is
//!    back. These sends and hints finish in the background after the answer.
//!
//! While the membership changes (and shortly after), the write is a *joint* one: the owners
//! of the key in the other ring ([`crate::membership::Membership::joint_ring`]) receive it
//! too, and it is acknowledged only once `w` owners of that ring have it as well (owners
//! themselves, fallbacks do not count there); see docs/architecture.md, "Membership
//! changes".

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use quorumkv_replica::{Value, VersionVector, VersionedObject};
use quorumkv_ring::NodeId;
use tokio::time::Instant;

use super::{quorum_unavailable, timed_out_failure, unexpected, Coordinator, Quorum};
use crate::error::{CoordinatorError, InputError, Operation, ReplicaFailure};
use crate::message::{RemoteErrorKind, Request, Response};
use crate::placement::Placement;
use crate::{BucketName, Key};

/// The owners of a key in the joint ring, during a membership change.
struct JointOwners {
    /// All of them, in preference order.
    owners: Vec<NodeId>,
    /// Those that are not owners in the current ring (they get a `Merge` of their own).
    extra: Vec<NodeId>,
    /// Acknowledgements needed from `owners`.
    required: usize,
}

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
        let joint = self.joint_owners(operation, bucket, key, n, quorum, &placement)?;

        // Mint at an up owner, this node first.
        let mut candidates = placement.up_primaries.clone();
        if let Some(me) = candidates.iter().position(|n| *n == self.node) {
            let me = candidates.remove(me);
            candidates.insert(0, me);
        }
        let mint = Request::Mint {
            bucket: bucket.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
            context: context.clone(),
            value,
        };
        let mut minted = None;
        // Under `--sync always` this node's own mint is answered before its fsync, which
        // then runs while the version travels to the other owners; its acknowledgement
        // counts once the fsync is done (see `local`).
        let mut minter_sync = None;
        for candidate in &candidates {
            if Instant::now() >= deadline {
                break;
            }
            let defer = *candidate == self.node
                && self.local.defers_sync()
                && self.planted.get() == super::planted::ReplicaFault::None;
            if defer {
                match self.local.mint_unsynced(mint.clone()).await {
                    Response::Minted { object, dot } => {
                        let local = Arc::clone(&self.local);
                        minter_sync = Some(Box::pin(async move { local.durable().await }));
                        minted = Some((candidate.clone(), object, dot));
                        break;
                    }
                    other => {
                        if let Response::Error { kind, message } = &other {
                            refused_as_written(*kind, message)?;
                        }
                        failures.push(unexpected(candidate.clone(), &other));
                        continue;
                    }
                }
            }
            // A minting owner that does not answer soon (paused, overloaded, not yet seen
            // down) is passed over for the next one; the last one gets the whole request.
            let last = candidates.last() == Some(candidate);
            let patience = if last || *candidate == self.node {
                deadline
            } else {
                deadline.min(Instant::now() + self.mint_latency.patience())
            };
            let started = Instant::now();
            match self
                .call_replica_raw(candidate, mint.clone(), patience)
                .await
            {
                Ok(Response::Minted { object, dot }) => {
                    if *candidate != self.node {
                        self.mint_latency.record(started.elapsed());
                    }
                    minted = Some((candidate.clone(), object, dot));
                    break;
                }
                Ok(Response::Error { kind, message }) => {
                    refused_as_written(kind, &message)?;
                    failures.push(ReplicaFailure {
                        node: candidate.clone(),
                        reason: format!("{kind:?}: {message}"),
                    });
                }
                Ok(other) => failures.push(unexpected(candidate.clone(), &other)),
                Err(reason) => failures.push(ReplicaFailure {
                    node: candidate.clone(),
                    reason,
                }),
            }
        }
        let Some((minter, object, dot)) = minted else {
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
        let mut hint_owner = hint_owner;
        let joint_required = joint.as_ref().map_or(0, |j| j.required);
        if let Some(joint) = &joint {
            for owner in &joint.extra {
                if self.membership.is_up(owner) {
                    sends.push((
                        owner.clone(),
                        Request::Merge {
                            bucket: bucket_bytes.clone(),
                            key: key_bytes.clone(),
                            object: object.clone(),
                        },
                    ));
                    hint_owner.insert(owner.clone(), owner.clone());
                } else if handoff {
                    self.keep_hint_in_background(owner.clone(), bucket, key, &object);
                }
            }
        }
        // A fallback's acknowledgement is a hint, not a copy an owner of the joint ring holds.
        let is_fallback = |node: &NodeId| placement.fallbacks.iter().any(|(_, f)| f == node);
        let in_joint = |node: &NodeId| {
            joint.as_ref().is_some_and(|j| j.owners.contains(node)) && !is_fallback(node)
        };
        let joint_only = |node: &NodeId| joint.as_ref().is_some_and(|j| j.extra.contains(node));
        let total_sends = sends.len();
        let mut pending = self.fan_out(sends, deadline);

        // The minter's copy counts at once, or when its fsync is done.
        let minter_now = usize::from(minter_sync.is_none());
        let mut acks = minter_now;
        let mut primary_acks = minter_now;
        let mut joint_acks = minter_now * usize::from(in_joint(&minter));
        let mut done = 0;
        while acks < quorum.required
            || primary_acks < quorum.primaries
            || joint_acks < joint_required
        {
            let next = async {
                tokio::select! {
                    synced = async {
                        match minter_sync.as_mut() {
                            Some(sync) => sync.await,
                            None => std::future::pending().await,
                        }
                    }, if minter_sync.is_some() => {
                        minter_sync = None;
                        Some((minter.clone(), synced.map(|()| Response::Ack)))
                    }
                    sent = pending.next(), if !pending.is_empty() => sent,
                    else => None,
                }
            };
            match tokio::time::timeout_at(deadline, next).await {
                Ok(Some((node, result))) => {
                    let is_minter = node == minter;
                    done += usize::from(!is_minter);
                    let is_primary = is_minter || primaries.contains(&node);
                    match result {
                        Ok(Response::Ack) => {
                            if in_joint(&node) {
                                joint_acks += 1;
                            }
                            if !joint_only(&node) {
                                acks += 1;
                            }
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
        if joint_acks < joint_required {
            return Err(quorum_unavailable(
                operation,
                joint_required,
                joint_acks,
                failures,
            ));
        }
        // What the writer saw and its own version, not the concurrent siblings it did not.
        if self.planted.get() == super::planted::ReplicaFault::WholeClockAnswers {
            return Ok(object.clock().clone());
        }
        Ok(object.write_context(&context, dot))
    }

    /// The owners of the key in the joint ring, if a write must reach a quorum there too;
    /// refuses at once when too few of them are up for it.
    fn joint_owners(
        &self,
        operation: Operation,
        bucket: &BucketName,
        key: &Key,
        n: usize,
        quorum: Quorum,
        placement: &Placement,
    ) -> Result<Option<JointOwners>, CoordinatorError> {
        let Some(ring) = self.membership.joint_ring(super::transfer::SETTLE) else {
            return Ok(None);
        };
        let owners = ring.preference_list(bucket.as_bytes(), key.as_bytes(), n);
        if owners == placement.primaries {
            return Ok(None);
        }
        let required = quorum.required.min(owners.len());
        let up = owners.iter().filter(|o| self.membership.is_up(o)).count();
        if up < required {
            let failures = owners
                .iter()
                .filter(|o| !self.membership.is_up(o))
                .map(|node| ReplicaFailure {
                    node: node.clone(),
                    reason: "down (failure detector), owner in the joint ring".into(),
                })
                .collect();
            return Err(quorum_unavailable(operation, required, 0, failures));
        }
        let extra = owners
            .iter()
            .filter(|o| !placement.primaries.contains(o))
            .cloned()
            .collect();
        Ok(Some(JointOwners {
            owners,
            extra,
            required,
        }))
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

/// A mint refused for what the write itself is (too many siblings, too large a record or
/// clock, a context that names dots the minting replica never made): another owner holds the same key and would refuse it too, so the client hears why at
/// once instead of a quorum failure.
fn refused_as_written(kind: RemoteErrorKind, message: &str) -> Result<(), CoordinatorError> {
    match kind {
        RemoteErrorKind::TooManySiblings => Err(CoordinatorError::TooManySiblings {
            // The replica's message starts "the key holds N siblings" (`StoreError`'s
            // wording): the count travels in it, as the error kind carries no fields.
            count: message
                .split_whitespace()
                .nth(3)
                .and_then(|n| n.parse().ok()),
            message: message.to_string(),
        }),
        RemoteErrorKind::ObjectTooLarge => {
            Err(CoordinatorError::ObjectTooLarge(message.to_string()))
        }
        RemoteErrorKind::ClockTooLarge => Err(CoordinatorError::ClockTooLarge(message.to_string())),
        RemoteErrorKind::ContextAhead => Err(CoordinatorError::Input(InputError::InvalidContext(
            message.to_string(),
        ))),
        _ => Ok(()),
    }
}

/// Recent latencies of mints at other owners, as an exponentially weighted moving average,
/// and the patience a write grants a minting owner before it mints at the next one.
#[derive(Debug, Default)]
pub(crate) struct MintLatency {
    /// The average in microseconds; 0 until the first mint.
    average_us: std::sync::atomic::AtomicU64,
}

/// The least patience: well above a mint's latency on a loaded node, so that a slow
/// answer rarely turns into a second mint.
const MIN_PATIENCE: std::time::Duration = std::time::Duration::from_millis(250);
/// The most patience: a stalled owner costs a write at most this much.
const MAX_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);
/// Patience in multiples of the average mint latency.
const PATIENCE_FACTOR: u32 = 20;

impl MintLatency {
    /// Counts one mint that took `took`.
    pub(crate) fn record(&self, took: std::time::Duration) {
        use std::sync::atomic::Ordering;
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // Racing updates may drop a sample; an average needs no more.
        let old = self.average_us.load(Ordering::Relaxed);
        self.average_us
            .store(next_average(old, sample), Ordering::Relaxed);
    }

    /// How long a write waits for a minting owner before it tries the next one.
    pub(crate) fn patience(&self) -> std::time::Duration {
        patience_for(self.average_us.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// The average after one more sample: weight 1/8 for the sample; the first sample is the
/// average.
fn next_average(old_us: u64, sample_us: u64) -> u64 {
    if old_us == 0 {
        sample_us.max(1)
    } else {
        (old_us.saturating_mul(7).saturating_add(sample_us) / 8).max(1)
    }
}

/// [`PATIENCE_FACTOR`] times the average, within [`MIN_PATIENCE`] and [`MAX_PATIENCE`].
fn patience_for(average_us: u64) -> std::time::Duration {
    std::time::Duration::from_micros(average_us.saturating_mul(u64::from(PATIENCE_FACTOR)))
        .clamp(MIN_PATIENCE, MAX_PATIENCE)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn patience_follows_the_average_within_its_bounds() {
        assert_eq!(patience_for(0), MIN_PATIENCE);
        assert_eq!(patience_for(1_000), MIN_PATIENCE);
        assert_eq!(patience_for(50_000), Duration::from_secs(1));
        assert_eq!(patience_for(u64::MAX), MAX_PATIENCE);
    }

    #[test]
    fn the_average_weighs_a_new_sample_by_an_eighth() {
        assert_eq!(next_average(0, 800), 800);
        assert_eq!(next_average(800, 1_600), 900);
        assert_eq!(next_average(800, 0), 700);
        assert_eq!(next_average(1, 0), 1, "never back to unknown");
        let latency = MintLatency::default();
        latency.record(Duration::from_millis(100));
        assert_eq!(latency.patience(), MAX_PATIENCE);
    }

    #[test]
    fn a_refusal_for_what_the_write_is_ends_the_write_with_its_reason() {
        let refused = "the key holds 100 siblings, the most it may; write with a context \
                       that resolves some";
        match refused_as_written(RemoteErrorKind::TooManySiblings, refused) {
            Err(CoordinatorError::TooManySiblings { count, .. }) => assert_eq!(count, Some(100)),
            other => panic!("{other:?}"),
        }
        assert!(refused_as_written(RemoteErrorKind::Storage, "disk").is_ok());
    }
}
