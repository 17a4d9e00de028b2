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
mod batching;
mod change;
pub mod cleanup;
mod cluster;
pub mod handoff;
mod local;
mod plan;
pub mod planted;
mod read;
mod reaper;
pub mod transfer;
mod write;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use quorumkv_replica::{Store, StoreError, Value, VersionVector, VersionedObject};
use quorumkv_ring::{NodeId, Ring};
use tokio::time::Instant;

use self::antientropy::AntiEntropyStats;
use self::cluster::{load_meta, StoredMembers};
use crate::detector::DetectorOptions;
use crate::error::{CoordinatorError, InputError, Operation, ReplicaFailure};
use crate::membership::{MemberStatus, Membership};
use crate::message::{RemoteErrorKind, Request, Response};
use crate::placement::{place, Placement};
use crate::props::PropsTable;
use crate::quorum::{BucketProps, QuorumSpec};
use crate::transport::Transport;
use crate::{BucketName, Key};

/// Meta-store names under which a node keeps its own state.
pub(crate) const META_MEMBERS: &str = "members";
pub(crate) const META_PROPS: &str = "bucket_props";

/// Settings of the request path.
#[derive(Clone, Debug)]
pub struct CoordinatorOptions {
    /// Replication factor of buckets nobody configured.
    pub default_n: usize,
    /// Timeout of a request that names none.
    pub default_timeout: Duration,
    /// The longest timeout a request may ask for.
    pub max_timeout: Duration,
    /// Partitions of the ring (a power of two).
    pub partitions: u32,
    /// Whether owners that cannot be reached get hints (and sloppy quorums use fallbacks).
    pub hinted_handoff: bool,
    /// Whether reads repair stale owners in the background (a request can turn it off).
    pub read_repair: bool,
    /// The most hints one node keeps.
    pub max_hints: u64,
    /// How long a hint is kept before it is dropped (anti-entropy repairs the key then).
    pub hint_ttl: Duration,
    /// How many read repairs may run at once; more are skipped (and counted).
    pub read_repair_concurrency: usize,
    /// The failure detector's settings.
    pub detector: DetectorOptions,
    /// The pace of anti-entropy rounds.
    pub anti_entropy: antientropy::AntiEntropyOptions,
    /// How long a tombstone must have been seen unchanged before it may be reaped; at
    /// least `hint_ttl` (the server checks).
    pub tombstone_grace: Duration,
    /// This node's zone (failure domain); preference lists spread over distinct zones.
    pub zone: Option<String>,
    /// Whether this node joins an existing cluster through its seeds (its seeds do not
    /// name it) rather than founding one with them.
    pub joining: bool,
    /// How long after this node sees a new ring balanced it drops its copies of the
    /// partitions it no longer owns ([`cleanup`]); `None`: only on demand.
    pub cleanup_delay: Option<Duration>,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        Self {
            default_n: 3,
            default_timeout: Duration::from_secs(5),
            max_timeout: Duration::from_secs(60),
            partitions: quorumkv_ring::DEFAULT_PARTITIONS,
            hinted_handoff: true,
            read_repair: true,
            max_hints: 1_000_000,
            hint_ttl: Duration::from_secs(3 * 3600),
            read_repair_concurrency: 64,
            detector: DetectorOptions::default(),
            anti_entropy: antientropy::AntiEntropyOptions::default(),
            tombstone_grace: Duration::from_secs(10 * 24 * 3600),
            zone: None,
            joining: false,
            cleanup_delay: Some(cleanup::DEFAULT_CLEANUP_DELAY),
        }
    }
}

/// Per-request read settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// Read quorum; the bucket's default when absent.
    pub r: Option<QuorumSpec>,
    /// Owners required among the replies (`pr`); 0 when absent.
    pub pr: Option<QuorumSpec>,
    /// Whether fallbacks may answer for down owners; true when absent.
    pub sloppy: Option<bool>,
    /// Whether stale owners are repaired after the answer; the node's setting when absent.
    pub read_repair: Option<bool>,
    /// Request timeout; the node's default when absent.
    pub timeout: Option<Duration>,
}

/// Per-request write settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    /// Write quorum; the bucket's default when absent.
    pub w: Option<QuorumSpec>,
    /// Owners required among the acknowledgements (`pw`); 0 when absent.
    pub pw: Option<QuorumSpec>,
    /// Whether fallbacks may acknowledge for down owners; true when absent.
    pub sloppy: Option<bool>,
    /// Request timeout; the node's default when absent.
    pub timeout: Option<Duration>,
}

/// A quorum after resolution against the bucket's `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Quorum {
    /// Successful replies needed.
    pub(crate) required: usize,
    /// Of which from owners (primaries).
    pub(crate) primaries: usize,
    /// Whether fallbacks count.
    pub(crate) sloppy: bool,
}

/// One live value of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveValue {
    /// The content type it was written with.
    pub content_type: String,
    /// The value.
    pub bytes: Bytes,
}

/// What a read found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// One or more live values (more than one: concurrent siblings); the context covers all
    /// of them.
    Found {
        /// The live values, in a stable order.
        values: Vec<LiveValue>,
        /// What a write that resolves them must carry.
        context: VersionVector,
    },
    /// Nothing live: never written, or deleted (then `context` covers the tombstones).
    NotFound {
        /// The context of the tombstones, if any.
        context: Option<VersionVector>,
    },
}

/// Bucket properties as changed by a client: absent fields keep their value, except that
/// a new `n` resets absent `r` and `w` to a majority of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PropsUpdate {
    /// New replication factor.
    pub n: Option<usize>,
    /// New default read quorum.
    pub r: Option<usize>,
    /// New default write quorum.
    pub w: Option<usize>,
}

/// The cluster as this node sees it.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// This node.
    pub node: NodeId,
    /// Every member with a known id.
    pub members: Vec<MemberStatus>,
    /// Partitions in the ring.
    pub partitions: u32,
    /// Whether the ring is formed (every seed's id known).
    pub ring_formed: bool,
    /// Why the node should not take client traffic yet (`GET /v1/ready` answers 503 with
    /// it), or `None` when it should; see [`Coordinator::unready_reason`].
    pub unready: Option<String>,
    /// The hash of the member table's ids, states and zones: equal on every node once
    /// gossip has converged.
    pub ring_version: u64,
}

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
        let quorum = Quorum {
            required: resolve(options.r, "r", props.r, props.n)?,
            primaries: resolve_primaries(options.pr, "pr", props.n)?,
            sloppy: options.sloppy.unwrap_or(true),
        };
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
        let quorum = write_quorum(&options, props)?;
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
        let quorum = write_quorum(&options, props)?;
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

    /// Sends each request to its node at once and yields the replies as they come. The
    /// sends run inside the caller's task (see [`Replies`]), and those still on their way
    /// when the caller stops waiting finish in a task of their own, so a write reaches
    /// every owner it can.
    pub(crate) fn fan_out(
        self: &Arc<Self>,
        sends: Vec<(NodeId, Request)>,
        deadline: Instant,
    ) -> Replies<
        impl std::future::Future<Output = (NodeId, Result<Response, String>)> + Send + 'static,
    > {
        let pending = sends
            .into_iter()
            .map(|(node, request)| {
                let this = Arc::clone(self);
                async move {
                    let result = contained(this.call_replica(&node, request, deadline)).await;
                    (node, result)
                }
            })
            .collect();
        Replies { pending }
    }

    pub(crate) async fn call_replica(
        self: &Arc<Self>,
        node: &NodeId,
        request: Request,
        deadline: Instant,
    ) -> Result<Response, String> {
        match self.call_replica_raw(node, request, deadline).await? {
            Response::Error { kind, message } => Err(format!("{kind:?}: {message}")),
            other => Ok(other),
        }
    }

    /// [`Coordinator::call_replica`], with a replica's refusal as its answer rather than
    /// as an error, for a caller that branches on why it was refused.
    pub(crate) async fn call_replica_raw(
        self: &Arc<Self>,
        node: &NodeId,
        request: Request,
        deadline: Instant,
    ) -> Result<Response, String> {
        Ok(if *node == self.node {
            self.execute_storage(request).await
        } else {
            let addr = self
                .membership
                .addr_of(node)
                .ok_or_else(|| "no address known".to_string())?;
            if deadline <= Instant::now() {
                return Err("timed out".into());
            }
            self.batcher
                .call(&self.transport, &addr, request, deadline)
                .await
                .map_err(|e| e.to_string())?
        })
    }

    /// Runs a storage request on the local store: a read answered from RocksDB's memory
    /// on the calling thread, anything that may block (a read that needs the disk, a write
    /// in groups, an fsync under `--sync always`) on the blocking threads (see `local`).
    pub(crate) async fn execute_on_store(self: &Arc<Self>, request: Request) -> Response {
        self.local.execute(request).await
    }
}

/// The replies of one fan-out ([`Coordinator::fan_out`]), in the order they arrive.
///
/// The sends are futures polled by whoever polls this, not tasks: a reply wakes the
/// waiting request directly, where a task per send cost a spawn and one more wake-up per
/// reply. Dropping this with sends still on their way (the quorum is in, or the client
/// went away) moves them to a task of their own, which drives them to their end: a send
/// is never cut off half-way, whatever its caller does.
pub(crate) struct Replies<F: std::future::Future + Send + 'static> {
    pending: FuturesUnordered<F>,
}

impl<F: std::future::Future + Send + 'static> Replies<F> {
    /// Whether every reply has been taken.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

impl<F: std::future::Future + Send + 'static> futures::Stream for Replies<F> {
    type Item = F::Output;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.pending).poll_next(cx)
    }
}

impl<F: std::future::Future + Send + 'static> Drop for Replies<F> {
    fn drop(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        // Outside a runtime (only while it shuts down) there is nothing left to send on.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { while pending.next().await.is_some() {} });
        }
    }
}

/// Runs one send, and turns a panic in it into a failed reply: a bug on one replica's
/// path fails that send (as it did when each send was a task of its own), not the whole
/// request and its connection.
async fn contained<F>(send: F) -> Result<Response, String>
where
    F: std::future::Future<Output = Result<Response, String>>,
{
    // Unwind safety: what a send shares (the lanes, the write queue) is behind mutexes
    // that every user takes through the poison.
    futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(send))
        .await
        .unwrap_or_else(|_| Err("the replica call panicked".into()))
}

fn resolve(
    spec: Option<QuorumSpec>,
    param: &'static str,
    default: usize,
    n: usize,
) -> Result<usize, InputError> {
    spec.unwrap_or(QuorumSpec::Count(default)).resolve(param, n)
}

/// `pr` / `pw`: like `r` / `w`, but 0 (the default) is allowed.
fn resolve_primaries(
    spec: Option<QuorumSpec>,
    param: &'static str,
    n: usize,
) -> Result<usize, InputError> {
    match spec {
        None | Some(QuorumSpec::Count(0)) => Ok(0),
        Some(spec) => spec.resolve(param, n),
    }
}

fn write_quorum(options: &WriteOptions, props: BucketProps) -> Result<Quorum, InputError> {
    Ok(Quorum {
        required: resolve(options.w, "w", props.w, props.n)?,
        primaries: resolve_primaries(options.pw, "pw", props.n)?,
        sloppy: options.sloppy.unwrap_or(true),
    })
}

pub(crate) fn outcome(object: VersionedObject) -> ReadOutcome {
    let values: Vec<LiveValue> = object
        .live_values()
        .map(|(content_type, bytes)| LiveValue {
            content_type: content_type.to_string(),
            bytes: bytes.clone(),
        })
        .collect();
    if values.is_empty() {
        let context = (!object.is_empty()).then(|| object.clock().clone());
        ReadOutcome::NotFound { context }
    } else {
        ReadOutcome::Found {
            values,
            context: object.clock().clone(),
        }
    }
}

pub(crate) fn quorum_unavailable(
    operation: Operation,
    required: usize,
    answered: usize,
    failures: Vec<ReplicaFailure>,
) -> CoordinatorError {
    metrics::counter!("quorumkv_quorum_failures_total", "op" => operation.as_str()).increment(1);
    CoordinatorError::QuorumUnavailable {
        operation,
        required,
        answered,
        failures,
    }
}

pub(crate) fn timed_out_failure(silent: usize) -> ReplicaFailure {
    ReplicaFailure {
        node: NodeId::new("*"),
        reason: format!("{silent} replica(s) did not answer before the timeout"),
    }
}

pub(crate) fn unexpected(node: NodeId, response: &Response) -> ReplicaFailure {
    ReplicaFailure {
        node,
        reason: format!("unexpected response {response:?}"),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use futures::StreamExt;

    use super::Replies;

    /// Three sends that take 10, 20 and 30 ms and count themselves done in `finished`.
    fn three_sends(
        finished: &Arc<AtomicUsize>,
    ) -> Replies<impl Future<Output = u64> + Send + 'static> {
        let pending = (1..=3u64)
            .map(|i| {
                let finished = Arc::clone(finished);
                async move {
                    tokio::time::sleep(Duration::from_millis(10 * i)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    i
                }
            })
            .collect();
        Replies { pending }
    }

    /// Waits (at most 10 s) until `finished` counts `expected`, and returns what it counts.
    async fn settle(finished: &AtomicUsize, expected: usize) -> usize {
        for _ in 0..2000 {
            if finished.load(Ordering::SeqCst) >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        finished.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn replies_come_as_the_sends_end() {
        let finished = Arc::new(AtomicUsize::new(0));
        let replies: Vec<u64> = three_sends(&finished).collect().await;
        assert_eq!(replies, vec![1, 2, 3]);
        assert_eq!(finished.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn sends_outlive_a_caller_that_stopped_waiting() {
        let finished = Arc::new(AtomicUsize::new(0));
        let mut replies = three_sends(&finished);
        // The quorum is in after the first reply: the caller answers and goes.
        assert_eq!(replies.next().await, Some(1));
        assert!(!replies.is_empty());
        drop(replies);
        assert_eq!(settle(&finished, 3).await, 3);
    }

    #[tokio::test]
    async fn a_send_that_panics_is_a_failed_reply() {
        let failed = super::contained(async { panic!("a planted bug") }).await;
        assert_eq!(failed, Err("the replica call panicked".to_string()));
        let answered = super::contained(async { Ok(super::Response::Ack) }).await;
        assert!(matches!(answered, Ok(super::Response::Ack)));
    }

    #[tokio::test]
    async fn sends_outlive_a_caller_that_never_waited() {
        let finished = Arc::new(AtomicUsize::new(0));
        // A client that goes away before its request's first poll of the sends.
        drop(three_sends(&finished));
        assert_eq!(settle(&finished, 3).await, 3);
    }
}
