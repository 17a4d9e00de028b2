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
//!   is held elsewhere, every record is cached and RocksDB is not stalling writes; else,
//!   and always under `--sync always` (an fsync must never block an async thread), on a
//!   blocking thread, where it is group commit: one fsync for the whole group. Writes
//!   that come while a group is applied form the next one, so groups grow with the load
//!   and a lone write waits for nobody. The writes of a peer's batch, executed
//!   concurrently, meet in one group.
//!
//! Everything else (hints, anti-entropy, scans) runs on the blocking pool.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use quorumkv_replica::{GroupWrite, HintRefusal, Store, Wait, WouldBlock};
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
        Self {
            store,
            max_hints,
            queue: Mutex::default(),
        }
    }

    /// Executes one storage request and returns the replica's answer.
    pub(crate) async fn execute(self: &Arc<Self>, request: Request) -> Response {
        match request {
            Request::Coordinate { .. } | Request::Merge { .. } => self.write(request).await,
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
        // Every update is a push, a take or a flag; a panic cannot leave it half-changed.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn write(self: &Arc<Self>, request: Request) -> Response {
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
            // on a blocking thread otherwise (always under `--sync always`).
            let responses = match apply(&self.store, &requests, Wait::Never) {
                Some(responses) => responses,
                None => {
                    metrics::counter!("quorumkv_store_blocking_total", "op" => "write")
                        .increment(1);
                    let store = Arc::clone(&self.store);
                    match tokio::task::spawn_blocking(move || apply(&store, &requests, Wait::Block))
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

/// Applies a group of writes; `None` when `wait` is [`Wait::Never`] and it would block.
/// A request that is not a write is answered as a bad request.
fn apply(store: &Store, requests: &[Request], wait: Wait) -> Option<Vec<Response>> {
    let writes: Vec<GroupWrite<'_>> = requests.iter().filter_map(as_write).collect();
    let mut results = store.write_group(&writes, wait).ok()?.into_iter();
    Some(
        requests
            .iter()
            .map(
                |request| match (request, as_write(request).and_then(|_| results.next())) {
                    (Request::Coordinate { .. }, Some(Ok(object))) => {
                        Response::Object(Some(object))
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
        Request::Coordinate { .. } | Request::Merge { .. } => {
            return apply(store, std::slice::from_ref(&request), Wait::Block)
                .and_then(|mut responses| responses.pop())
                .unwrap_or_else(|| storage_error("a blocking write would block".into()));
        }
        Request::BucketHasKeys { bucket } => store.bucket_has_keys(&bucket).map(Response::HasKeys),
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
