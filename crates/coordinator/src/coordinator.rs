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
//! The quorum is strict: only the `n` owners of the preference list count. A replica whose
//! record is corrupt does not count towards `r`: counting it as "not found" could hide an
//! acknowledged write when `r + w > n` relies on it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use quorumkv_replica::{Store, StoreError, Value, VersionVector, VersionedObject};
use quorumkv_ring::{NodeId, Ring};
use tokio::time::Instant;

use crate::error::{CoordinatorError, InputError, Operation, ReplicaFailure};
use crate::membership::{MemberStatus, Membership};
use crate::message::{RemoteErrorKind, Request, Response};
use crate::props::{PropsTable, VersionedProps};
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
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        Self {
            default_n: 3,
            default_timeout: Duration::from_secs(5),
            max_timeout: Duration::from_secs(60),
            partitions: quorumkv_ring::DEFAULT_PARTITIONS,
        }
    }
}

/// Per-request read settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// Read quorum; the bucket's default when absent.
    pub r: Option<QuorumSpec>,
    /// Request timeout; the node's default when absent.
    pub timeout: Option<Duration>,
}

/// Per-request write settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    /// Write quorum; the bucket's default when absent.
    pub w: Option<QuorumSpec>,
    /// Request timeout; the node's default when absent.
    pub timeout: Option<Duration>,
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
    pub ready: bool,
}

/// Coordinates client requests on one node.
pub struct Coordinator {
    node: NodeId,
    store: Arc<Store>,
    transport: Arc<dyn Transport>,
    membership: Arc<Membership>,
    props: PropsTable,
    options: CoordinatorOptions,
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
        let known: Vec<(NodeId, String)> = load_meta(&store, META_MEMBERS)?.unwrap_or_default();
        let props = load_meta(&store, META_PROPS)?.unwrap_or_default();
        let membership = Arc::new(Membership::new(
            node.clone(),
            advertise,
            seeds,
            &known,
            options.partitions,
        ));
        Ok(Self {
            node,
            store,
            transport,
            membership,
            props: PropsTable::new(props),
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
            ready: self.membership.ring().is_some(),
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
        let r = resolve(options.r, "r", props.r, props.n)?;
        let deadline = self.deadline(options.timeout);
        let object = self
            .read_quorum(Operation::Get, bucket, key, props.n, r, deadline)
            .await?;
        Ok(outcome(object))
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
        let w = resolve(options.w, "w", props.w, props.n)?;
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
            w,
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
        let w = resolve(options.w, "w", props.w, props.n)?;
        let deadline = self.deadline(options.timeout);
        let context = match context {
            Some(context) => context,
            None => self
                .read_quorum(Operation::Delete, bucket, key, props.n, w, deadline)
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
            w,
            deadline,
        )
        .await
    }

    /// Changes the properties of `bucket` cluster-wide. A change of `n` is refused while any
    /// member holds data of the bucket.
    pub async fn set_bucket_props(
        self: &Arc<Self>,
        bucket: &BucketName,
        update: PropsUpdate,
    ) -> Result<BucketProps, CoordinatorError> {
        let current = self.bucket_props(bucket);
        let n = update.n.unwrap_or(current.n);
        let (default_r, default_w) = if n == current.n {
            (current.r, current.w)
        } else {
            let fresh = BucketProps::with_n(n);
            (fresh.r, fresh.w)
        };
        let props = BucketProps {
            n,
            r: update.r.unwrap_or(default_r),
            w: update.w.unwrap_or(default_w),
        };
        props.validate()?;
        if n != current.n {
            self.ensure_bucket_empty(bucket, current.n, n).await?;
        }
        let entry = VersionedProps {
            props,
            version: self.props.next_version(bucket.as_str(), &self.node),
        };
        let table = std::collections::BTreeMap::from([(bucket.as_str().to_string(), entry)]);
        self.adopt_props(&table).await?;
        // Push to every peer now; one that misses it pulls it on its next sync round.
        let pushes = self.membership.peer_addrs().into_iter().map(|addr| {
            let request = Request::PutProps {
                props: table.clone(),
            };
            let transport = Arc::clone(&self.transport);
            async move {
                transport
                    .call(&addr, &request, Duration::from_secs(1))
                    .await
            }
        });
        futures::future::join_all(pushes).await;
        Ok(props)
    }

    /// Executes an internode request against this node.
    pub async fn handle(self: &Arc<Self>, request: Request) -> Response {
        match request {
            Request::Hello => Response::Hello {
                node: self.node.clone(),
            },
            Request::GetProps => Response::Props(self.props.snapshot()),
            Request::PutProps { props } => match self.adopt_props(&props).await {
                Ok(()) => Response::Ack,
                Err(e) => storage_error(e.to_string()),
            },
            request => self.execute_on_store(request).await,
        }
    }

    /// One round of background upkeep: probes every peer (learning ids and liveness),
    /// persists newly learned members, and pulls bucket properties from the peers that
    /// answered. The server calls it periodically.
    pub async fn tick(self: &Arc<Self>, probe_timeout: Duration) {
        let probes = self.membership.peer_addrs().into_iter().map(|addr| {
            let transport = Arc::clone(&self.transport);
            async move {
                let answer = transport.call(&addr, &Request::Hello, probe_timeout).await;
                (addr, answer)
            }
        });
        let mut learned = false;
        let mut alive = Vec::new();
        for (addr, answer) in futures::future::join_all(probes).await {
            match answer {
                Ok(Response::Hello { node }) => {
                    learned |= self.membership.record_alive(&addr, node);
                    alive.push(addr);
                }
                _ => self.membership.record_unreachable(&addr),
            }
        }
        if learned {
            let peers = self.membership.known_peers();
            if let Err(error) = self.save_meta(META_MEMBERS, &peers).await {
                tracing::error!(%error, "cannot persist the member list");
            }
        }
        let pulls = alive.into_iter().map(|addr| {
            let transport = Arc::clone(&self.transport);
            async move {
                transport
                    .call(&addr, &Request::GetProps, probe_timeout)
                    .await
            }
        });
        for answer in futures::future::join_all(pulls).await {
            if let Ok(Response::Props(props)) = answer {
                if let Err(error) = self.adopt_props(&props).await {
                    tracing::error!(%error, "cannot persist bucket properties");
                }
            }
        }
    }

    fn deadline(&self, timeout: Option<Duration>) -> Instant {
        Instant::now() + timeout.unwrap_or(self.options.default_timeout)
    }

    fn ring(&self) -> Result<Arc<Ring>, CoordinatorError> {
        self.membership.ring().ok_or_else(|| {
            CoordinatorError::NotReady(format!(
                "waiting to learn the ids of seeds {}",
                self.membership.unknown_seeds().join(", ")
            ))
        })
    }

    fn preference_list(
        &self,
        bucket: &BucketName,
        key: &Key,
        n: usize,
    ) -> Result<Vec<NodeId>, CoordinatorError> {
        Ok(self
            .ring()?
            .preference_list(bucket.as_bytes(), key.as_bytes(), n))
    }

    async fn read_quorum(
        self: &Arc<Self>,
        operation: Operation,
        bucket: &BucketName,
        key: &Key,
        n: usize,
        r: usize,
        deadline: Instant,
    ) -> Result<VersionedObject, CoordinatorError> {
        let owners = self.preference_list(bucket, key, n)?;
        let request = Request::Get {
            bucket: bucket.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
        };
        let mut pending = self.fan_out(&owners, &request, deadline);
        let mut merged = VersionedObject::new();
        let mut answered = 0;
        let mut failures = Vec::new();
        while answered < r {
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some((_, Ok(Response::Object(object))))) => {
                    if let Some(object) = object {
                        merged.merge(&object);
                    }
                    answered += 1;
                }
                Ok(Some((node, Ok(other)))) => failures.push(unexpected(node, &other)),
                Ok(Some((node, Err(reason)))) => failures.push(ReplicaFailure { node, reason }),
                Ok(None) => break,
                Err(_) => {
                    failures.push(timed_out_failure(&owners, &failures, answered));
                    break;
                }
            }
        }
        if answered < r {
            return Err(quorum_unavailable(operation, r, answered, failures));
        }
        Ok(merged)
    }

    #[allow(clippy::too_many_arguments)] // one call site per operation; a struct would only rename them
    async fn write_quorum(
        self: &Arc<Self>,
        operation: Operation,
        bucket: &BucketName,
        key: &Key,
        context: VersionVector,
        value: Value,
        n: usize,
        w: usize,
        deadline: Instant,
    ) -> Result<VersionVector, CoordinatorError> {
        let owners = self.preference_list(bucket, key, n)?;
        if owners.len() < w {
            return Err(quorum_unavailable(
                operation,
                w,
                0,
                vec![ReplicaFailure {
                    node: self.node.clone(),
                    reason: format!("the cluster has only {} members", owners.len()),
                }],
            ));
        }
        // The minter is this node when it owns the key (no extra hop), else the first owner
        // that answers, in preference order.
        let mut candidates = owners.clone();
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
        let mut failures = Vec::new();
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
            return Err(quorum_unavailable(operation, w, 0, failures));
        };
        let others: Vec<NodeId> = owners.into_iter().filter(|n| *n != minter).collect();
        let merge = Request::Merge {
            bucket: bucket.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
            object: object.clone(),
        };
        let mut pending = self.fan_out(&others, &merge, deadline);
        let mut acks = 1;
        while acks < w {
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some((_, Ok(Response::Ack)))) => acks += 1,
                Ok(Some((node, Ok(other)))) => failures.push(unexpected(node, &other)),
                Ok(Some((node, Err(reason)))) => failures.push(ReplicaFailure { node, reason }),
                Ok(None) => break,
                Err(_) => {
                    failures.push(timed_out_failure(&others, &failures, acks - 1));
                    break;
                }
            }
        }
        if acks < w {
            return Err(quorum_unavailable(operation, w, acks, failures));
        }
        Ok(object.clock().clone())
    }

    /// Sends `request` to every node at once. Each send runs as its own task, so sends the
    /// caller stops waiting for still complete (a write reaches every owner it can).
    fn fan_out(
        self: &Arc<Self>,
        nodes: &[NodeId],
        request: &Request,
        deadline: Instant,
    ) -> FuturesUnordered<impl std::future::Future<Output = (NodeId, Result<Response, String>)>>
    {
        nodes
            .iter()
            .map(|node| {
                let this = Arc::clone(self);
                let node = node.clone();
                let request = request.clone();
                let task = tokio::spawn(async move {
                    let result = this.call_replica(&node, request, deadline).await;
                    (node, result)
                });
                async move {
                    match task.await {
                        Ok(done) => done,
                        Err(e) => (NodeId::new("?"), Err(format!("replica task failed: {e}"))),
                    }
                }
            })
            .collect()
    }

    async fn call_replica(
        self: &Arc<Self>,
        node: &NodeId,
        request: Request,
        deadline: Instant,
    ) -> Result<Response, String> {
        let response = if *node == self.node {
            self.execute_on_store(request).await
        } else {
            let addr = self
                .membership
                .addr_of(node)
                .ok_or_else(|| "no address known".to_string())?;
            let timeout = deadline.saturating_duration_since(Instant::now());
            if timeout.is_zero() {
                return Err("timed out".into());
            }
            self.transport
                .call(&addr, &request, timeout)
                .await
                .map_err(|e| e.to_string())?
        };
        match response {
            Response::Error { kind, message } => Err(format!("{kind:?}: {message}")),
            other => Ok(other),
        }
    }

    /// Runs a storage request on the local store, on a blocking thread (RocksDB calls block,
    /// and with `--sync always` a write waits for an fsync).
    async fn execute_on_store(self: &Arc<Self>, request: Request) -> Response {
        let store = Arc::clone(&self.store);
        let work = move || match request {
            Request::Get { bucket, key } => store.get(&bucket, &key).map(Response::Object),
            Request::Coordinate {
                bucket,
                key,
                context,
                value,
            } => store
                .coordinate(&bucket, &key, &context, value)
                .map(|object| Response::Object(Some(object))),
            Request::Merge {
                bucket,
                key,
                object,
            } => store.merge(&bucket, &key, &object).map(|_| Response::Ack),
            Request::BucketHasKeys { bucket } => {
                store.bucket_has_keys(&bucket).map(Response::HasKeys)
            }
            Request::Hello | Request::GetProps | Request::PutProps { .. } => Ok(Response::Error {
                kind: RemoteErrorKind::BadRequest,
                message: "not a storage request".into(),
            }),
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => store_error(&error),
            Err(e) => storage_error(format!("storage task failed: {e}")),
        }
    }

    async fn ensure_bucket_empty(
        self: &Arc<Self>,
        bucket: &BucketName,
        current: usize,
        requested: usize,
    ) -> Result<(), CoordinatorError> {
        let members: Vec<NodeId> = self.ring()?.members().to_vec();
        let deadline = Instant::now() + Duration::from_secs(2);
        let request = Request::BucketHasKeys {
            bucket: bucket.as_bytes().to_vec(),
        };
        let mut pending = self.fan_out(&members, &request, deadline);
        let mut answered = 0;
        let mut failures = Vec::new();
        while let Some((node, result)) = pending.next().await {
            match result {
                Ok(Response::HasKeys(false)) => answered += 1,
                Ok(Response::HasKeys(true)) => {
                    return Err(CoordinatorError::BucketNotEmpty {
                        bucket: bucket.to_string(),
                        current,
                        requested,
                    })
                }
                Ok(other) => failures.push(unexpected(node, &other)),
                Err(reason) => failures.push(ReplicaFailure { node, reason }),
            }
        }
        if answered < members.len() {
            // Without every member's answer the bucket may hold data somewhere.
            return Err(quorum_unavailable(
                Operation::SetProps,
                members.len(),
                answered,
                failures,
            ));
        }
        Ok(())
    }

    async fn adopt_props(
        self: &Arc<Self>,
        incoming: &std::collections::BTreeMap<String, VersionedProps>,
    ) -> Result<(), CoordinatorError> {
        if self.props.merge(incoming) {
            let snapshot = self.props.snapshot();
            self.save_meta(META_PROPS, &snapshot).await?;
        }
        Ok(())
    }

    async fn save_meta<T: serde::Serialize>(
        &self,
        name: &'static str,
        value: &T,
    ) -> Result<(), CoordinatorError> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| CoordinatorError::Internal(e.to_string()))?;
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.put_meta(name, &bytes))
            .await
            .map_err(|e| CoordinatorError::Internal(e.to_string()))?
            .map_err(|e| CoordinatorError::Internal(e.to_string()))
    }
}

fn load_meta<T: serde::de::DeserializeOwned>(
    store: &Store,
    name: &str,
) -> Result<Option<T>, CoordinatorError> {
    let Some(bytes) = store
        .get_meta(name)
        .map_err(|e| CoordinatorError::Internal(e.to_string()))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| CoordinatorError::Internal(format!("stored {name} is unreadable: {e}")))
}

fn resolve(
    spec: Option<QuorumSpec>,
    param: &'static str,
    default: usize,
    n: usize,
) -> Result<usize, InputError> {
    spec.unwrap_or(QuorumSpec::Count(default)).resolve(param, n)
}

fn outcome(object: VersionedObject) -> ReadOutcome {
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

fn quorum_unavailable(
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

fn timed_out_failure(
    nodes: &[NodeId],
    failures: &[ReplicaFailure],
    answered: usize,
) -> ReplicaFailure {
    let silent = nodes.len().saturating_sub(failures.len() + answered);
    ReplicaFailure {
        node: NodeId::new("*"),
        reason: format!("{silent} replica(s) did not answer before the timeout"),
    }
}

fn unexpected(node: NodeId, response: &Response) -> ReplicaFailure {
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
        _ => RemoteErrorKind::Storage,
    };
    Response::Error {
        kind,
        message: error.to_string(),
    }
}
