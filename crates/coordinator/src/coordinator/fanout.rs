//! How a request reaches its replicas: every send at once, this node's own store called
//! in process and the others through their peer's batching lane, with the replies
//! yielded as they come and the sends still under way driven to their end whatever the
//! caller does.

use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use quorumkv_ring::NodeId;
use tokio::time::Instant;

use super::Coordinator;
use crate::message::{Request, Response};

impl Coordinator {
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
