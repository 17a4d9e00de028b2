//! This node's replica: storage requests executed on the local store.
//!
//! RocksDB calls block, and a hop to Tokio's blocking pool costs two thread wake-ups,
//! more than a memtable read or a WAL append to the page cache. So the common operations
//! run on the async thread when they can do so without waiting, and go to the blocking
//! pool only when they cannot:
//!
//! - A read ([`Store::get_cached`]) runs on the async thread when its record is in the
//!   memtables or the block cache, which is nearly always; otherwise it is read again on
//!   a blocking thread.
//! - Writes travel in groups: a write joins the queue, and one task at a time takes
//!   everything queued and applies it as one group ([`Store::write_group`]: one pass over
//!   the key locks, one RocksDB batch). The group runs on that task's thread when no lock
//!   is held elsewhere, every record is cached and RocksDB is not stalling writes; else
//!   on a blocking thread. Writes that come while a group is applied form the next one,
//!   so groups grow with the load and a lone write waits for nobody. The writes of a
//!   peer's batch, executed concurrently, meet in one group.
//! - Under `--sync always` a group is applied without fsync
//!   ([`Store::write_group_unsynced`]), and each write is answered only after a WAL sync
//!   that started after it was applied. Syncs run one at a time on a blocking thread
//!   (an fsync must never block an async thread), each covering every write that waits:
//!   group commit, decoupled from the groups, so applying the next group overlaps the
//!   current fsync. The coordinator's own mint can skip the wait
//!   ([`LocalReplica::mint_unsynced`]): it sends the minted version to the other owners
//!   while this node's fsync runs, and counts this node's acknowledgement once
//!   [`LocalReplica::durable`] returns. A power loss in between cannot lead to a dot
//!   minted twice: the store takes a new actor every time it opens.
//!
//! Everything else (hints, anti-entropy, scans) runs on the blocking pool.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use quorumkv_replica::{GroupWrite, HintRefusal, Store, SyncPolicy, Wait, WouldBlock};
use tokio::sync::oneshot;

use super::{antientropy, storage_error, store_error};
use crate::message::{RemoteErrorKind, Request, Response};

/// The most writes in one group; more wait for the next.
const MAX_GROUP: usize = 256;

/// Executes storage requests on this node's store.
pub(crate) struct LocalReplica {
    store: Arc<Store>,
    max_hints: u64,
    /// Writes waiting for the next group. A std mutex: held to push or take, never across
    /// an await.
    queue: Mutex<WriteQueue>,
    /// Under `--sync always`, the writes waiting for a WAL sync; `None` otherwise (each
    /// write is then answered once applied). A std mutex, like `queue`.
    syncs: Option<Mutex<SyncQueue>>,
}

#[derive(Default)]
struct SyncQueue {
    waiting: Vec<oneshot::Sender<Result<(), String>>>,
    /// Whether a task is running syncs (it takes what waits meanwhile).
    syncing: bool,
}

#[derive(Default)]
struct WriteQueue {
    waiting: Vec<Waiting>,
    /// Whether a task is applying groups (it takes what queues meanwhile).
    applying: bool,
}

struct Waiting {
    request: Request,
    reply: oneshot::Sender<Response>,
}

impl LocalReplica {
    pub(crate) fn new(store: Arc<Store>, max_hints: u64) -> Self {
        let syncs = (store.sync_policy() == SyncPolicy::Always).then(Mutex::default);
        Self {
            store,
            max_hints,
            queue: Mutex::default(),
            syncs,
        }
    }

    /// Whether writes are applied first and made durable by a later WAL sync (under
    /// `--sync always`), so that [`Self::mint_unsynced`] is worth calling.
    pub(crate) fn defers_sync(&self) -> bool {
        self.syncs.is_some()
    }

    /// Mints a version (`Mint`) and answers as soon as it is applied, before it is
    /// durable under `--sync always`: the caller must not count this replica's copy until
    /// [`Self::durable`] has returned `Ok`.
    pub(crate) async fn mint_unsynced(self: &Arc<Self>, request: Request) -> Response {
        self.apply_queued(request).await
    }

    /// Returns once every write applied before the call is durable (a WAL sync that
    /// started after it), at once when writes are synced as they are applied.
    pub(crate) async fn durable(self: &Arc<Self>) -> Result<(), String> {
        let Some(syncs) = &self.syncs else {
            return Ok(());
        };
        let (done, wait) = oneshot::channel();
        let start = {
            let mut queue = lock(syncs);
            queue.waiting.push(done);
            !std::mem::replace(&mut queue.syncing, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).run_syncs());
        }
        wait.await
            .unwrap_or_else(|_| Err("the WAL sync was dropped".into()))
    }

    /// Runs WAL syncs until nothing waits for one; each covers everything that waited
    /// when it started.
    async fn run_syncs(self: Arc<Self>) {
        let Some(syncs) = &self.syncs else {
            return;
        };
        /// Lets the next write start a task again if this one ends early.
        struct Early<'a>(&'a Mutex<SyncQueue>, bool);
        impl Drop for Early<'_> {
            fn drop(&mut self) {
                if self.1 {
                    lock(self.0).syncing = false;
                }
            }
        }
        let mut early = Early(syncs, true);
        loop {
            let waiting = {
                let mut queue = lock(syncs);
                if queue.waiting.is_empty() {
                    queue.syncing = false;
                    early.1 = false;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            metrics::histogram!("quorumkv_wal_sync_group_size").record(waiting.len() as f64);
            let store = Arc::clone(&self.store);
            let result = match tokio::task::spawn_blocking(move || store.sync_wal()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(format!("cannot sync the WAL: {error}")),
                Err(error) => Err(format!("WAL sync task failed: {error}")),
            };
            for done in waiting {
                let _ = done.send(result.clone());
            }
        }
    }

    /// Executes one storage request and returns the replica's answer.
    pub(crate) async fn execute(self: &Arc<Self>, request: Request) -> Response {
        match request {
            Request::Coordinate { .. } | Request::Mint { .. } | Request::Merge { .. } => {
                self.write(request).await
            }
            Request::Get { bucket, key } => match self.store.get_cached(&bucket, &key) {
                Ok(result) => result.map_or_else(|error| store_error(&error), Response::Object),
                Err(WouldBlock) => {
                    metrics::counter!("quorumkv_store_blocking_total", "op" => "read").increment(1);
                    self.execute_blocking(Request::Get { bucket, key }).await
                }
            },
            request => self.execute_blocking(request).await,
        }
    }

    async fn execute_blocking(&self, request: Request) -> Response {
        let store = Arc::clone(&self.store);
        let max_hints = self.max_hints;
        match tokio::task::spawn_blocking(move || execute(&store, request, max_hints)).await {
            Ok(response) => response,
            Err(e) => storage_error(format!("storage task failed: {e}")),
        }
    }

    fn queue(&self) -> MutexGuard<'_, WriteQueue> {
        lock(&self.queue)
    }

    /// Applies a write and answers once it is durable as the policy asks.
    async fn write(self: &Arc<Self>, request: Request) -> Response {
        let response = self.apply_queued(request).await;
        if matches!(response, Response::Error { .. }) {
            return response;
        }
        match self.durable().await {
            Ok(()) => response,
            Err(message) => storage_error(message),
        }
    }

    /// Queues a write for the next group and answers once the group is applied.
    async fn apply_queued(self: &Arc<Self>, request: Request) -> Response {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue();
            queue.waiting.push(Waiting { request, reply });
            !std::mem::replace(&mut queue.applying, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).apply_groups());
        }
        answer
            .await
            .unwrap_or_else(|_| storage_error("the write group was dropped".into()))
    }

    /// Applies groups until the queue is empty.
    async fn apply_groups(self: Arc<Self>) {
        /// Lets the next write start a task again if this one ends early (a panic, or the
        /// runtime shutting down).
        struct Early<'a>(&'a LocalReplica, bool);
        impl Drop for Early<'_> {
            fn drop(&mut self) {
                if self.1 {
                    self.0.queue().applying = false;
                }
            }
        }
        let mut early = Early(&self, true);
        loop {
            let group: Vec<Waiting> = {
                let mut queue = self.queue();
                if queue.waiting.is_empty() {
                    // Under the same lock as the check: a write queued after it finds a
                    // free slot and starts a task.
                    queue.applying = false;
                    early.1 = false;
                    return;
                }
                let take = queue.waiting.len().min(MAX_GROUP);
                queue.waiting.drain(..take).collect()
            };
            let (requests, replies): (Vec<Request>, Vec<_>) =
                group.into_iter().map(|w| (w.request, w.reply)).unzip();
            let count = requests.len();
            metrics::histogram!("quorumkv_write_group_size").record(count as f64);
            // On this thread when the group can run without waiting (see `Wait::Never`),
            // on a blocking thread otherwise; never with an fsync (see `durable`).
            let commit = if self.defers_sync() {
                Commit::Unsynced
            } else {
                Commit::AsPolicy
            };
            let responses = match apply(&self.store, &requests, Wait::Never, commit) {
                Some(responses) => responses,
                None => {
                    metrics::counter!("quorumkv_store_blocking_total", "op" => "write")
                        .increment(1);
                    let store = Arc::clone(&self.store);
                    match tokio::task::spawn_blocking(move || {
                        apply(&store, &requests, Wait::Block, commit)
                    })
                    .await
                    {
                        Ok(Some(responses)) => responses,
                        Ok(None) => failed(count, "a blocking write group would block"),
                        Err(e) => failed(count, &format!("storage task failed: {e}")),
                    }
                }
            };
            for (reply, response) in replies.into_iter().zip(responses) {
                let _ = reply.send(response);
            }
        }
    }
}

fn failed(count: usize, message: &str) -> Vec<Response> {
    (0..count)
        .map(|_| storage_error(message.to_string()))
        .collect()
}

/// Whether a group is made durable as the store's policy says, or left for a WAL sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Commit {
    AsPolicy,
    Unsynced,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a push, a take or a flag; a panic cannot leave it half-changed.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Applies a group of writes; `None` when `wait` is [`Wait::Never`] and it would block.
/// A request that is not a write is answered as a bad request.
fn apply(store: &Store, requests: &[Request], wait: Wait, commit: Commit) -> Option<Vec<Response>> {
    let writes: Vec<GroupWrite<'_>> = requests.iter().filter_map(as_write).collect();
    let written = match commit {
        Commit::AsPolicy => store.write_group(&writes, wait),
        Commit::Unsynced => store.write_group_unsynced(&writes, wait),
    };
    let mut results = written.ok()?.into_iter();
    Some(
        requests
            .iter()
            .map(
                |request| match (request, as_write(request).and_then(|_| results.next())) {
                    (Request::Coordinate { .. }, Some(Ok(object))) => {
                        Response::Object(Some(object))
                    }
                    (Request::Mint { .. }, Some(Ok(object))) => {
                        match object.latest_of(store.actor()) {
                            Some(dot) => Response::Minted { object, dot },
                            None => storage_error("the minted version is missing".into()),
                        }
                    }
                    (_, Some(Ok(_))) => Response::Ack,
                    (_, Some(Err(error))) => store_error(&error),
                    (_, None) => Response::Error {
                        kind: RemoteErrorKind::BadRequest,
                        message: "not a write".into(),
                    },
                },
            )
            .collect(),
    )
}

/// The group write a request asks for, if it is a write.
fn as_write(request: &Request) -> Option<GroupWrite<'_>> {
    match request {
        Request::Coordinate {
            bucket,
            key,
            context,
            value,
        }
        | Request::Mint {
            bucket,
            key,
            context,
            value,
        } => Some(GroupWrite::Coordinate {
            bucket,
            key,
            context,
            value,
        }),
        Request::Merge {
            bucket,
            key,
            object,
        } => Some(GroupWrite::Merge {
            bucket,
            key,
            object,
        }),
        _ => None,
    }
}

/// Executes a storage request other than a write, on a blocking thread.
fn execute(store: &Store, request: Request, max_hints: u64) -> Response {
    let result = match request {
        Request::Get { bucket, key } => store.get(&bucket, &key).map(Response::Object),
        Request::Coordinate { .. } | Request::Mint { .. } | Request::Merge { .. } => {
            return apply(
                store,
                std::slice::from_ref(&request),
                Wait::Block,
                Commit::AsPolicy,
            )
            .and_then(|mut responses| responses.pop())
            .unwrap_or_else(|| storage_error("a blocking write would block".into()));
        }
        Request::BucketHasKeys { bucket } => store.bucket_has_keys(&bucket).map(Response::HasKeys),
        Request::Reap {
            bucket,
            key,
            object,
        } => store
            .remove_if_unchanged(&bucket, &key, &object)
            .map(|removed| {
                if removed {
                    metrics::counter!("quorumkv_tombstones_reaped_total").increment(1);
                }
                Response::Ack
            }),
        Request::GetHint { owner, bucket, key } => store
            .get_hint(owner.as_str(), &bucket, &key)
            .map(Response::Object),
        Request::MergeHint {
            owner,
            bucket,
            key,
            object,
        } => store
            .store_hint(owner.as_str(), &bucket, &key, &object, max_hints)
            .map(|stored| match stored {
                Ok(()) => Response::Ack,
                Err(HintRefusal::Full) => Response::Error {
                    kind: RemoteErrorKind::HintsFull,
                    message: "this node holds its maximum number of hints".into(),
                },
            }),
        request @ (Request::AaeRoots { .. }
        | Request::AaeSegments { .. }
        | Request::AaeKeys { .. }) => antientropy::serve(store, request),
        // Membership, properties, batches: the coordinator answers those itself.
        _ => Ok(Response::Error {
            kind: RemoteErrorKind::BadRequest,
            message: "not a storage request".into(),
        }),
    };
    result.unwrap_or_else(|error| store_error(&error))
}
