//! The request path: quorum reads and writes over the preference list.
//!
//! Any node coordinates any request. A write is minted at one replica of the key (this node
//! when it is one, otherwise the first owner that answers): that replica drops what the
//! client's context supersedes, gives the new version a fresh dot, and stores it. The
//! coordinator then sends the resulting state to the other owners, which merge it, and
//! answers once `w` replicas (the minter included) have it durably. The other sends go on in
//! the background after the answer, so every owner receives every write it can be reached
//! for. A read asks all owners at once and answers with the merge of the first `r` replies.
//!
//! The quorum is sloppy by default (Dynamo, section 4.6): an owner the failure detector
//! reports down is replaced by the next up node along the ring, which keeps the write as
//! a hint and counts toward `w` ([`crate::placement`]); `sloppy=false` counts owners only,
//! and `pr` / `pw` require that many owners among the replies, as in Riak. Every owner a
//! write could not reach gets a hint, so it catches up when it returns ([`handoff`]).
//! After a read has answered, the replies that arrive later are compared with the merged
//! state and stale owners are repaired in the background (the `read` module); active
//! anti-entropy ([`antientropy`]) and tombstone reaping (the `reaper` module) run apart
//! from requests.
//!
//! A replica whose record is corrupt does not count towards `r`: counting it as "not
//! found" could hide an acknowledged write when `r + w > n` relies on it.

pub mod antientropy;
mod api;
mod batching;
mod bucket_props;
mod change;
pub mod cleanup;
mod cluster;
mod fanout;
pub mod handoff;
mod local;
mod plan;
pub mod planted;
mod quorums;
mod read;
mod reaper;
pub mod transfer;
mod write;

use std::sync::Arc;
use std::time::Duration;

use quorumkv_replica::{Store, StoreError, Value, VersionVector};
use quorumkv_ring::{NodeId, Ring};
use tokio::time::Instant;

use self::antientropy::AntiEntropyStats;
pub(crate) use self::api::outcome;
pub use self::api::{
    ClusterView, CoordinatorOptions, LiveValue, PropsUpdate, ReadOptions, ReadOutcome, WriteOptions,
};
use self::cluster::{load_meta, StoredMembers};
pub use self::cluster::{PROBE_TIMEOUT, TICK};
pub(crate) use self::fanout::Replies;
pub(crate) use self::quorums::{
    quorum_met, quorum_unavailable, timed_out_failure, unexpected, Quorum,
};
pub use self::reaper::{reap_interval, REAP_BUDGET};
use crate::error::{CoordinatorError, InputError, Operation, ReplicaFailure};
use crate::membership::Membership;
use crate::message::{RemoteErrorKind, Request, Response};
use crate::placement::{place, Placement};
use crate::props::PropsTable;
use crate::quorum::BucketProps;
use crate::transport::Transport;
use crate::{BucketName, Key};

/// Meta-store names under which a node keeps its own state.
pub(crate) const META_MEMBERS: &str = "members";
pub(crate) const META_PROPS: &str = "bucket_props";

/// Coordinates client requests on one node.
pub struct Coordinator {
    node: NodeId,
    store: Arc<Store>,
    /// Executes storage requests on `store`, writes in groups.
    local: Arc<local::LocalReplica>,
    transport: Arc<dyn Transport>,
    /// Batches the storage requests for each peer.
    batcher: batching::Batcher,
    membership: Arc<Membership>,
    props: PropsTable,
    options: CoordinatorOptions,
    /// Bounds the read repairs running at once.
    repairs: Arc<tokio::sync::Semaphore>,
    /// Where the next anti-entropy round starts.
    anti_entropy: antientropy::AntiEntropyState,
    /// The tombstone reaper's scan position and grace clocks. A std mutex: held for map
    /// updates only, never across an await.
    reaper: std::sync::Mutex<reaper::ReaperState>,
    /// The bug this replica plays for the fault suite's negative controls, normally none.
    planted: planted::FaultCell,
    /// The partitions this node receives during a membership change.
    transfers: transfer::TransferState,
    /// How long minting at another owner has taken lately: how long a write waits for a
    /// minting owner before it mints at the next one.
    mint_latency: write::MintLatency,
    /// The automatic cleanup's progress, and the lock that runs one cleanup at a time.
    cleanup: cleanup::CleanupState,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// A coordinator for the node that owns `store`, reaching peers through `transport`.
    /// Loads the members and bucket properties the store kept from an earlier run.
    /// Blocking: it reads the store.
    pub fn new(
        node: NodeId,
        advertise: String,
        seeds: &[String],
        store: Arc<Store>,
        transport: Arc<dyn Transport>,
        options: CoordinatorOptions,
    ) -> Result<Self, CoordinatorError> {
        let stored = load_meta::<StoredMembers>(&store, META_MEMBERS)?;
        let bootstrap = StoredMembers::bootstrap(stored, seeds, options.joining);
        let props = load_meta(&store, META_PROPS)?.unwrap_or_default();
        let membership = Arc::new(Membership::new(
            node.clone(),
            advertise,
            options.zone.clone(),
            &bootstrap,
            options.partitions,
            options.detector,
        ));
        Ok(Self {
            node,
            local: Arc::new(local::LocalReplica::new(
                Arc::clone(&store),
                options.max_hints,
            )),
            store,
            transport,
            batcher: batching::Batcher::default(),
            membership,
            props: PropsTable::new(props),
            repairs: Arc::new(tokio::sync::Semaphore::new(options.read_repair_concurrency)),
            reaper: std::sync::Mutex::default(),
            anti_entropy: antientropy::AntiEntropyState::default(),
            planted: planted::FaultCell::default(),
            transfers: transfer::TransferState::default(),
            mint_latency: write::MintLatency::default(),
            cleanup: cleanup::CleanupState::default(),
            options,
        })
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The membership this coordinator places keys with.
    pub fn membership(&self) -> &Arc<Membership> {
        &self.membership
    }

    /// The local store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Checks a client's timeout against the node's limit.
    pub fn check_timeout(&self, timeout: Duration) -> Result<Duration, InputError> {
        if timeout.is_zero() || timeout > self.options.max_timeout {
            return Err(InputError::InvalidTimeout(format!(
                "timeout_ms must be in 1..={}",
                self.options.max_timeout.as_millis()
            )));
        }
        Ok(timeout)
    }

    /// The effective properties of `bucket`.
    pub fn bucket_props(&self, bucket: &BucketName) -> BucketProps {
        self.props
            .get(bucket.as_str())
            .map_or_else(|| BucketProps::with_n(self.options.default_n), |p| p.props)
    }

    /// The cluster as this node sees it.
    pub fn cluster_view(&self) -> ClusterView {
        ClusterView {
            node: self.node.clone(),
            members: self.membership.members(),
            partitions: self.membership.partitions(),
            ring_formed: self.membership.ring().is_some(),
            unready: self.unready_reason(),
            ring_version: self.membership.ring_version(),
        }
    }

    /// Reads `key` with a quorum of `r` replies.
    pub async fn get(
        self: &Arc<Self>,
        bucket: &BucketName,
        key: &Key,
        options: ReadOptions,
    ) -> Result<ReadOutcome, CoordinatorError> {
        let props = self.bucket_props(bucket);
        let quorum = Quorum::of_read(&options, props)?;
        let repair = options.read_repair.unwrap_or(self.options.read_repair);
        let deadline = self.deadline(options.timeout);
        let object = self
            .read_quorum(
                Operation::Get,
                bucket,
                key,
                props.n,
                quorum,
                repair,
                deadline,
            )
            .await?;
        Ok(outcome(object))
    }

    /// Reads this node's own copy of `key`, with no quorum, no repair and no hints: what
    /// this replica holds right now (for operators and tests).
    pub async fn get_local(
        self: &Arc<Self>,
        bucket: &BucketName,
        key: &Key,
    ) -> Result<ReadOutcome, CoordinatorError> {
        let request = Request::Get {
            bucket: bucket.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
        };
        match self.execute_on_store(request).await {
            Response::Object(object) => Ok(outcome(object.unwrap_or_default())),
            Response::Error { message, .. } => Err(CoordinatorError::Internal(message)),
            other => Err(CoordinatorError::Internal(format!("unexpected {other:?}"))),
        }
    }

    /// Writes `value` to `key`, superseding what `context` covers; answers after `w`
    /// replicas stored it. Returns the context of the new state.
    pub async fn put(
        self: &Arc<Self>,
        bucket: &BucketName,
        key: &Key,
        context: VersionVector,
        value: LiveValue,
        options: WriteOptions,
    ) -> Result<VersionVector, CoordinatorError> {
        let props = self.bucket_props(bucket);
        let quorum = Quorum::of_write(&options, props)?;
        let deadline = self.deadline(options.timeout);
        let value = Value::Data {
            content_type: value.content_type,
            bytes: value.bytes,
        };
        self.write_quorum(
            Operation::Put,
            bucket,
            key,
            context,
            value,
            props.n,
            quorum,
            deadline,
        )
        .await
    }

    /// Deletes `key` by writing a tombstone that supersedes what `context` covers; without a
    /// context it supersedes what the owners reached by a read at the same quorum hold.
    pub async fn delete(
        self: &Arc<Self>,
        bucket: &BucketName,
        key: &Key,
        context: Option<VersionVector>,
        options: WriteOptions,
    ) -> Result<VersionVector, CoordinatorError> {
        let props = self.bucket_props(bucket);
        let quorum = Quorum::of_write(&options, props)?;
        let deadline = self.deadline(options.timeout);
        let context = match context {
            Some(context) => context,
            None => self
                .read_quorum(
                    Operation::Delete,
                    bucket,
                    key,
                    props.n,
                    quorum,
                    false,
                    deadline,
                )
                .await?
                .clock()
                .clone(),
        };
        self.write_quorum(
            Operation::Delete,
            bucket,
            key,
            context,
            Value::Tombstone,
            props.n,
            quorum,
            deadline,
        )
        .await
    }

    /// Executes an internode request against this node.
    pub async fn handle(self: &Arc<Self>, request: Request) -> Response {
        match request {
            Request::Hello => Response::Hello {
                node: self.node.clone(),
            },
            Request::Describe => Response::Described {
                node: self.node.clone(),
                zone: self.membership.zone().map(str::to_string),
            },
            Request::GetProps => Response::Props(self.props.snapshot()),
            Request::Gossip { records } => self.answer_gossip(records).await,
            Request::PutProps { props } => match self.adopt_props(&props).await {
                Ok(()) => Response::Ack,
                Err(e) => storage_error(e.to_string()),
            },
            Request::Batch(items) => Response::Batch(self.handle_batch(items).await),
            request => self.execute_storage(request).await,
        }
    }

    /// Plants a bug in this replica (see [`planted`]); only a node started with fault
    /// injection exposes this.
    ///
    /// Blocking: the actor-reuse bug is a durable mark in the store, written (or removed)
    /// by every call.
    ///
    /// # Errors
    /// The store's, if the mark cannot be written; the switch is then left as it was.
    pub fn set_planted_fault(&self, fault: planted::ReplicaFault) -> Result<(), StoreError> {
        tracing::warn!(?fault, "fault injection: replica fault planted");
        self.store
            .plant_actor_reuse(fault == planted::ReplicaFault::ReuseActorAcrossStarts)?;
        self.planted.set(fault);
        Ok(())
    }

    /// The bug this replica plays, normally [`planted::ReplicaFault::None`].
    pub fn planted_fault(&self) -> planted::ReplicaFault {
        self.planted.get()
    }

    /// A storage request from a replica's point of view (sent by a peer, or by this node
    /// to itself): the store's answer, unless a planted bug changes it.
    async fn execute_storage(self: &Arc<Self>, request: Request) -> Response {
        let fault = self.planted.get();
        if fault == planted::ReplicaFault::None {
            return self.execute_on_store(request).await;
        }
        if let Some(response) = planted::intercept(fault, &request) {
            return response;
        }
        let written = request.clone();
        let response = self.execute_on_store(request).await;
        if fault == planted::ReplicaFault::LastWriteWins {
            let store = Arc::clone(&self.store);
            let collapsed =
                tokio::task::spawn_blocking(move || planted::collapse_siblings(&store, &written))
                    .await;
            if let Ok(Err(error)) = collapsed {
                tracing::warn!(%error, "planted last-write-wins could not collapse siblings");
            }
        }
        response
    }

    /// Executes the items of a batch as if each had come alone, all at once: each goes
    /// through [`Coordinator::handle`], and the writes among them meet in one write group
    /// of the local replica. A batch inside a batch is refused.
    async fn handle_batch(self: &Arc<Self>, items: Vec<Request>) -> Vec<Response> {
        futures::future::join_all(items.into_iter().map(|item| async move {
            match item {
                Request::Batch(_) => Response::Error {
                    kind: RemoteErrorKind::BadRequest,
                    message: "a batch inside a batch".into(),
                },
                // Boxed: `handle` calls this function, and a future cannot contain itself.
                item => Box::pin(self.handle(item)).await,
            }
        }))
        .await
    }

    fn deadline(&self, timeout: Option<Duration>) -> Instant {
        Instant::now() + timeout.unwrap_or(self.options.default_timeout)
    }

    fn ring(&self) -> Result<Arc<Ring>, CoordinatorError> {
        self.membership
            .ring()
            .ok_or_else(|| CoordinatorError::NotReady(self.membership.not_ready_reason()))
    }

    /// Places a request on `bucket`/`key`: owners the failure detector reports up and, for a
    /// sloppy quorum with handoff on, fallbacks for the ones that are down. Refuses at once
    /// when the replicas that can answer are fewer than the quorum needs. Returns the
    /// placement and a failure for each down owner (for the error message).
    pub(crate) fn place_request(
        &self,
        operation: Operation,
        bucket: &BucketName,
        key: &Key,
        n: usize,
        quorum: Quorum,
    ) -> Result<(Placement, Vec<ReplicaFailure>), CoordinatorError> {
        let ring = self.ring()?;
        let placement = place(
            &ring,
            bucket.as_bytes(),
            key.as_bytes(),
            n,
            quorum.sloppy && self.options.hinted_handoff,
            |node| self.membership.is_up(node),
        );
        let failures: Vec<ReplicaFailure> = placement
            .primaries
            .iter()
            .filter(|p| !placement.up_primaries.contains(p))
            .map(|node| ReplicaFailure {
                node: node.clone(),
                reason: "down (failure detector)".into(),
            })
            .collect();
        let reachable = placement.up_primaries.len() + placement.fallbacks.len();
        if reachable < quorum.required || placement.up_primaries.len() < quorum.primaries {
            return Err(quorum_unavailable(operation, quorum.required, 0, failures));
        }
        Ok((placement, failures))
    }
}

fn storage_error(message: String) -> Response {
    Response::Error {
        kind: RemoteErrorKind::Storage,
        message,
    }
}

fn store_error(error: &StoreError) -> Response {
    let kind = match error {
        StoreError::Corrupt { .. } => RemoteErrorKind::Corrupt,
        StoreError::Invalid(_) | StoreError::Version(_) => RemoteErrorKind::BadRequest,
        StoreError::TooManySiblings { .. } => RemoteErrorKind::TooManySiblings,
        StoreError::ObjectTooLarge { .. } => RemoteErrorKind::ObjectTooLarge,
        StoreError::ClockTooLarge { .. } => RemoteErrorKind::ClockTooLarge,
        StoreError::ContextAhead { .. } => RemoteErrorKind::ContextAhead,
        _ => RemoteErrorKind::Storage,
    };
    Response::Error {
        kind,
        message: error.to_string(),
    }
}
