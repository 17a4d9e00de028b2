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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use quorumkv_replica::{Dot, Value, VersionVector, VersionedObject};
use quorumkv_ring::NodeId;
use tokio::time::Instant;

use super::plan::{JointOwners, PlanInput, WritePlan};
use super::{quorum_met, quorum_unavailable, timed_out_failure, unexpected, Coordinator, Quorum};
use crate::error::{CoordinatorError, InputError, Operation, ReplicaFailure};
use crate::message::{RemoteErrorKind, Request, Response};
use crate::placement::Placement;
use crate::tally::AckTally;
use crate::{BucketName, Key};

/// The fsync of this node's own mint, under way while the version travels to the others.
type MinterSync = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A version minted at one owner.
struct Minted {
    /// The owner that minted it.
    minter: NodeId,
    /// The key's state there, the new version included.
    object: VersionedObject,
    /// The new version's dot.
    dot: Dot,
    /// The minter's fsync, when its copy counts only once it is done.
    sync: Option<MinterSync>,
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
        let Some(mut minted) = self
            .mint(&candidates, mint, deadline, &mut failures)
            .await?
        else {
            return Err(quorum_unavailable(operation, quorum.required, 0, failures));
        };
        let passed_over: Vec<NodeId> = candidates
            .iter()
            .take_while(|c| **c != minted.minter)
            .cloned()
            .collect();
        let plan = WritePlan::new(
            PlanInput {
                placement: &placement,
                passed_over: &passed_over,
                minter: &minted.minter,
                minter_deferred: minted.sync.is_some(),
                joint,
                quorum,
                handoff: self.options.hinted_handoff,
            },
            |node| self.membership.is_up(node),
        );
        let object = &minted.object;
        for owner in plan.hints_now() {
            self.keep_hint_in_background(owner.clone(), bucket, key, object);
        }
        let sends: Vec<(NodeId, Request)> = plan
            .sends()
            .iter()
            .map(|(node, send)| {
                (
                    node.clone(),
                    send.request(bucket.as_bytes(), key.as_bytes(), object),
                )
            })
            .collect();
        let mut pending = self.fan_out(sends, deadline);

        let tally = self
            .gather_acks(
                &plan,
                &mut minted,
                &mut pending,
                deadline,
                &mut failures,
                bucket,
                key,
            )
            .await;
        // The sends still running finish on their own; one that fails leaves a hint.
        if !pending.is_empty() {
            self.hint_failed_sends_in_background(pending, plan, bucket, key, &minted.object);
        }
        quorum_met(&tally, operation, failures)?;
        // What the writer saw and its own version, not the concurrent siblings it did not.
        if self.planted.get() == super::planted::ReplicaFault::WholeClockAnswers {
            return Ok(minted.object.clock().clone());
        }
        Ok(minted.object.write_context(&context, minted.dot))
    }

    /// Counts acknowledgements as `plan` says until its quorum is met, every send has
    /// answered, or the deadline passes. The minter's own copy counts at once, or once its
    /// fsync is done; a failed send leaves a hint for its owner.
    #[allow(clippy::too_many_arguments)] // the state of one write, lent for its wait
    async fn gather_acks<F>(
        self: &Arc<Self>,
        plan: &WritePlan,
        minted: &mut Minted,
        pending: &mut super::Replies<F>,
        deadline: Instant,
        failures: &mut Vec<ReplicaFailure>,
        bucket: &BucketName,
        key: &Key,
    ) -> AckTally
    where
        F: Future<Output = (NodeId, Result<Response, String>)> + Send + 'static,
    {
        let total_sends = plan.sends().len();
        let mut tally = plan.tally();
        let mut done = 0;
        while !tally.is_met() {
            let next = async {
                tokio::select! {
                    synced = async {
                        match minted.sync.as_mut() {
                            Some(sync) => sync.await,
                            None => std::future::pending().await,
                        }
                    }, if minted.sync.is_some() => {
                        minted.sync = None;
                        Some((minted.minter.clone(), synced.map(|()| Response::Ack)))
                    }
                    sent = pending.next(), if !pending.is_empty() => sent,
                    else => None,
                }
            };
            let (node, result) = match tokio::time::timeout_at(deadline, next).await {
                Ok(Some(reply)) => reply,
                Ok(None) => break,
                Err(_) => {
                    failures.push(timed_out_failure(total_sends - done));
                    break;
                }
            };
            done += usize::from(node != *plan.minter());
            match result {
                Ok(Response::Ack) => tally.record(plan.counts(&node)),
                other => {
                    failures.push(match other {
                        Ok(response) => unexpected(node.clone(), &response),
                        Err(reason) => ReplicaFailure {
                            node: node.clone(),
                            reason,
                        },
                    });
                    if let Some(owner) = plan.hint_owner(&node) {
                        self.keep_hint_in_background(owner.clone(), bucket, key, &minted.object);
                    }
                }
            }
        }
        tally
    }

    /// Waits, after the answer, for the sends of a write still under way; each that fails
    /// leaves a hint for its owner (nothing to do without hinted handoff).
    fn hint_failed_sends_in_background<F>(
        self: &Arc<Self>,
        mut pending: super::Replies<F>,
        plan: WritePlan,
        bucket: &BucketName,
        key: &Key,
        object: &VersionedObject,
    ) where
        F: Future<Output = (NodeId, Result<Response, String>)> + Send + 'static,
    {
        if !self.options.hinted_handoff {
            return;
        }
        let this = Arc::clone(self);
        let bucket = bucket.clone();
        let key = key.clone();
        let object = object.clone();
        tokio::spawn(async move {
            while let Some((node, result)) = pending.next().await {
                if let (false, Some(owner)) =
                    (matches!(result, Ok(Response::Ack)), plan.hint_owner(&node))
                {
                    this.keep_hint_in_background(owner.clone(), &bucket, &key, &object);
                }
            }
        });
    }

    /// Mints the version at the first of `candidates` that does, in order: this node's own
    /// store directly (its fsync deferred under `--sync always`), the others over the
    /// network with a patience of their recent latency. A refusal for what the write is
    /// ends the write at once; any other failure is noted and the next owner tried.
    /// `None` when no owner minted before the deadline.
    async fn mint(
        self: &Arc<Self>,
        candidates: &[NodeId],
        mint: Request,
        deadline: Instant,
        failures: &mut Vec<ReplicaFailure>,
    ) -> Result<Option<Minted>, CoordinatorError> {
        for candidate in candidates {
            if Instant::now() >= deadline {
                break;
            }
            // Under `--sync always` this node's own mint is answered before its fsync,
            // which then runs while the version travels to the other owners; its
            // acknowledgement counts once the fsync is done (see `local`).
            let defer = *candidate == self.node
                && self.local.defers_sync()
                && self.planted.get() == super::planted::ReplicaFault::None;
            if defer {
                match self.local.mint_unsynced(mint.clone()).await {
                    Response::Minted { object, dot } => {
                        let local = Arc::clone(&self.local);
                        return Ok(Some(Minted {
                            minter: candidate.clone(),
                            object,
                            dot,
                            sync: Some(Box::pin(async move { local.durable().await })),
                        }));
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
                    return Ok(Some(Minted {
                        minter: candidate.clone(),
                        object,
                        dot,
                        sync: None,
                    }));
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
        Ok(None)
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
