//! Natural batching of internode requests, one lane per peer.
//!
//! Every replica operation for a peer (a merge of a new version, a read) used to be an
//! HTTP exchange of its own, and an exchange costs far more than the operation: under load
//! most of a node's time went to HTTP. A lane lets one exchange with its peer run at a
//! time ([`MAX_IN_FLIGHT`]); the storage requests for that peer that come meanwhile wait in
//! the lane, and when the exchange ends, all of them leave together as one
//! [`Request::Batch`], which the peer answers item by item. Batches grow with the load,
//! without a timer (as in Nagle's algorithm with the acknowledgement as the clock).
//!
//! A request that finds its lane idle leaves at once, alone, unless the lane is busy:
//! when its recent exchanges carried one and a half requests or more each on average
//! ([`BUSY_SIXTEENTHS`]), the request waits [`GATHER_TURNS`] turns of the scheduler
//! (`yield_now`: the tasks already runnable, and the sockets found readable meanwhile, go
//! first), and leaves with every request those turns made for the same peer. Under load,
//! client requests that arrive close together then share one exchange instead of the
//! first one paying for an exchange of its own; with one client, no request waits (the
//! turns would cost it tens of microseconds of latency, with nothing to gather).
//!
//! A batch carries at most [`MAX_BATCH`] requests and [`MAX_BATCH_BYTES`] of values and
//! keys (a heavier request leaves alone), so that no batch of large values meets the
//! internode body limit. Answers are not capped: a batch of reads of large objects can
//! still be large.
//!
//! Each request keeps its own deadline: its caller stops waiting at it, and a request
//! whose caller stopped waiting, or whose deadline passed while it waited, is not sent. A
//! batch is given the latest deadline of its items. A failed exchange fails each of its
//! items the same way, so the write path keeps a hint for each, as for a single request.
//!
//! A peer that predates batches refuses one as a malformed message. So a lane learns
//! whether its peer understands batches with an empty batch, which executes nothing,
//! before it sends a real one; until then, and while the answer is no, requests go alone
//! as they always did. A refusal is asked again after [`REPROBE_AFTER`], for a rolling
//! upgrade.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use quorumkv_replica::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::message::{Request, Response};
use crate::transport::{Transport, TransportError};

/// Exchanges in flight with one peer at once. One gives the largest batches; measured
/// with 32 clients on a 3-node cluster, two or four in flight cost more CPU per operation
/// and gained no throughput, with or without fsyncs.
const MAX_IN_FLIGHT: usize = 1;

/// The turns of the scheduler a request to an idle, busy lane waits for others to join
/// it. Measured with 32 clients on a 3-node cluster: internode exchanges per write fall
/// from 0.40 to 0.29 (BENCHMARKS.md has the other counts of turns tried).
const GATHER_TURNS: usize = 3;

/// A lane is busy when its recent exchanges carried at least this many requests each on
/// average, in sixteenths (24: one and a half).
const BUSY_SIXTEENTHS: u32 = 24;

/// The most requests in one batch (what a receiver decodes at most); more wait for the
/// next exchange.
const MAX_BATCH: usize = crate::message::MAX_BATCH_ITEMS;

/// The most bytes of requests (by [`weight`]) in one batch; a request heavier than this
/// leaves in a batch of its own. Far below the internode body limit, which a batch of
/// large values would otherwise meet (every item of it would then fail), and small enough
/// that a few large values do not hold small ones up for long.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// How long a peer that refused batches goes without being asked again.
const REPROBE_AFTER: Duration = Duration::from_secs(60);

/// How long a peer that could not be asked goes without being asked again.
const RETRY_PROBE_AFTER: Duration = Duration::from_secs(1);

/// The timeout of the question "do you understand batches?".
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The lanes of every peer this node sent storage requests to.
#[derive(Default)]
pub(crate) struct Batcher {
    /// By peer address. A std mutex: held for a map lookup only.
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
}

/// One peer's lane.
struct Lane {
    addr: String,
    /// A std mutex: held to count exchanges and move requests in and out, never across an
    /// await.
    state: Mutex<LaneState>,
}

struct LaneState {
    support: Support,
    in_flight: usize,
    queued: Vec<Queued>,
    /// The requests the recent exchanges carried, on average, in sixteenths: a moving
    /// average that gives each exchange a quarter of the weight.
    recent_sixteenths: u32,
}

impl LaneState {
    /// Whether a request that finds the lane idle waits for company (see the module docs).
    fn busy(&self) -> bool {
        self.recent_sixteenths >= BUSY_SIXTEENTHS
    }

    fn exchange_carried(&mut self, requests: usize) {
        let requests = u32::try_from(requests.min(MAX_BATCH)).unwrap_or(u32::MAX);
        self.recent_sixteenths = (3 * self.recent_sixteenths + 16 * requests) / 4;
    }
}

/// Whether the peer understands batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Support {
    /// Not known yet; ask when a request comes after `after`.
    Unknown { after: Instant },
    /// Being asked.
    Asking,
    /// It does.
    Yes,
    /// It does not (or did not when asked); ask again after `after`.
    No { after: Instant },
}

/// A request waiting for the next exchange.
struct Queued {
    request: Request,
    deadline: Instant,
    reply: oneshot::Sender<Result<Response, TransportError>>,
}

/// How one request leaves.
#[allow(
    clippy::large_enum_variant,
    reason = "a route lives on the stack for one call; boxing the request would allocate on every send"
)]
enum Route {
    /// At once, alone; `counted` when it holds one of the lane's exchanges.
    Alone { request: Request, counted: bool },
    /// With the next batch.
    Queued(oneshot::Receiver<Result<Response, TransportError>>),
}

impl Batcher {
    /// Sends `request` to the peer at `addr` and returns its answer, alone or in a batch
    /// (see the module docs); gives up at `deadline`.
    pub(crate) async fn call(
        &self,
        transport: &Arc<dyn Transport>,
        addr: &str,
        request: Request,
        deadline: Instant,
    ) -> Result<Response, TransportError> {
        if !batchable(&request) {
            return call_alone(transport.as_ref(), addr, &request, deadline).await;
        }
        let lane = self.lane(addr);
        let route = {
            let mut state = lane.lock();
            let now = Instant::now();
            match state.support {
                Support::Yes if state.in_flight < MAX_IN_FLIGHT && !state.busy() => {
                    state.in_flight += 1;
                    Route::Alone {
                        request,
                        counted: true,
                    }
                }
                Support::Yes => {
                    let (reply, answer) = oneshot::channel();
                    state.queued.push(Queued {
                        request,
                        deadline,
                        reply,
                    });
                    if state.in_flight < MAX_IN_FLIGHT {
                        state.in_flight += 1;
                        tokio::spawn(Arc::clone(&lane).gather(Arc::clone(transport)));
                    }
                    Route::Queued(answer)
                }
                Support::Unknown { after } | Support::No { after } if now >= after => {
                    state.support = Support::Asking;
                    tokio::spawn(Arc::clone(&lane).ask_support(Arc::clone(transport)));
                    Route::Alone {
                        request,
                        counted: false,
                    }
                }
                Support::Unknown { .. } | Support::No { .. } | Support::Asking => Route::Alone {
                    request,
                    counted: false,
                },
            }
        };
        match route {
            Route::Alone { request, counted } => {
                let result = call_alone(transport.as_ref(), addr, &request, deadline).await;
                if counted {
                    lane.exchange_ended(transport, 1);
                }
                result
            }
            Route::Queued(answer) => match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(TransportError::Protocol(
                    "the batch carrying the request was dropped".into(),
                )),
                Err(_) => Err(TransportError::Timeout),
            },
        }
    }

    fn lane(&self, addr: &str) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lane) = lanes.get(addr) {
            return Arc::clone(lane);
        }
        let lane = Arc::new(Lane {
            addr: addr.to_string(),
            state: Mutex::new(LaneState {
                support: Support::Unknown {
                    after: Instant::now(),
                },
                in_flight: 0,
                queued: Vec::new(),
                recent_sixteenths: 16,
            }),
        });
        lanes.insert(addr.to_string(), Arc::clone(&lane));
        lane
    }
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        // Every update of the state is a single assignment or push; a panic cannot leave
        // it half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An exchange of `carried` requests ended: what queued meanwhile leaves as the next
    /// exchange, in a task of its own (the caller has its answer already), or the lane
    /// frees the slot.
    fn exchange_ended(self: &Arc<Self>, transport: &Arc<dyn Transport>, carried: usize) {
        let Some(batch) = self.next_batch(carried) else {
            return;
        };
        tokio::spawn(Arc::clone(self).carry(Arc::clone(transport), batch));
    }

    /// Holding one of the lane's exchanges, with a request queued: lets the next
    /// [`GATHER_TURNS`] turns of the scheduler queue more, then carries them all.
    async fn gather(self: Arc<Self>, transport: Arc<dyn Transport>) {
        for _ in 0..GATHER_TURNS {
            tokio::task::yield_now().await;
        }
        if let Some(batch) = self.next_batch(0) {
            self.carry(transport, batch).await;
        }
    }

    /// After an exchange of `carried` requests (0: none): takes the next batch, or frees
    /// the exchange slot when nothing waits.
    fn next_batch(&self, carried: usize) -> Option<Vec<Queued>> {
        let mut state = self.lock();
        if carried > 0 {
            state.exchange_carried(carried);
        }
        if state.queued.is_empty() {
            state.in_flight = state.in_flight.saturating_sub(1);
            return None;
        }
        let weights = state.queued.iter().map(|q| weight(&q.request));
        let take = batch_len(weights, MAX_BATCH, MAX_BATCH_BYTES);
        Some(state.queued.drain(..take).collect())
    }

    /// Sends batches until the lane has nothing queued.
    async fn carry(self: Arc<Self>, transport: Arc<dyn Transport>, mut batch: Vec<Queued>) {
        loop {
            let carried = self.send(transport.as_ref(), batch).await;
            match self.next_batch(carried) {
                Some(next) => batch = next,
                None => return,
            }
        }
    }

    /// Sends the live requests of `batch` as one exchange and returns how many it carried.
    async fn send(&self, transport: &dyn Transport, batch: Vec<Queued>) -> usize {
        let now = Instant::now();
        let mut live = Vec::with_capacity(batch.len());
        for queued in batch {
            if queued.reply.is_closed() {
                continue;
            }
            if queued.deadline <= now {
                let _ = queued.reply.send(Err(TransportError::Timeout));
                continue;
            }
            live.push(queued);
        }
        if live.len() <= 1 {
            let carried = live.len();
            if let Some(queued) = live.pop() {
                let result = call_alone(transport, &self.addr, &queued.request, queued.deadline);
                let _ = queued.reply.send(result.await);
            }
            return carried;
        }
        let deadline = live.iter().map(|q| q.deadline).max().unwrap_or(now);
        let (requests, replies): (Vec<Request>, Vec<_>) =
            live.into_iter().map(|q| (q.request, q.reply)).unzip();
        let count = requests.len();
        let batch = Request::Batch(requests);
        metrics::histogram!("quorumkv_internode_batch_size").record(count as f64);
        match call_alone(transport, &self.addr, &batch, deadline).await {
            Ok(Response::Batch(answers)) if answers.len() == count => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Ok(Response::Error { kind, message }) => {
                for reply in replies {
                    let _ = reply.send(Ok(Response::Error {
                        kind,
                        message: message.clone(),
                    }));
                }
            }
            Ok(_) => {
                let error = TransportError::Protocol(format!(
                    "a batch of {count} answered by something else than a batch"
                ));
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
        count
    }

    /// Asks the peer whether it understands batches, with an empty one.
    async fn ask_support(self: Arc<Self>, transport: Arc<dyn Transport>) {
        let answer = transport
            .call(&self.addr, &Request::Batch(Vec::new()), PROBE_TIMEOUT)
            .await;
        let now = Instant::now();
        let support = match answer {
            Ok(Response::Batch(answers)) if answers.is_empty() => Support::Yes,
            // Refused or misunderstood: a node that predates batches.
            Ok(_) | Err(TransportError::Protocol(_)) => Support::No {
                after: now + REPROBE_AFTER,
            },
            Err(TransportError::Timeout | TransportError::Unreachable(_)) => Support::Unknown {
                after: now + RETRY_PROBE_AFTER,
            },
        };
        tracing::debug!(peer = %self.addr, ?support, "batch support");
        self.lock().support = support;
    }
}

/// The requests a lane batches: the storage requests of the request path. Probes and
/// anti-entropy go alone.
fn batchable(request: &Request) -> bool {
    matches!(
        request,
        Request::Get { .. }
            | Request::Coordinate { .. }
            | Request::Mint { .. }
            | Request::Merge { .. }
            | Request::GetHint { .. }
            | Request::MergeHint { .. }
    )
}

/// About how many bytes a request takes on the wire: its values and keys.
fn weight(request: &Request) -> usize {
    match request {
        Request::Coordinate {
            bucket, key, value, ..
        }
        | Request::Mint {
            bucket, key, value, ..
        } => {
            let value = match value {
                Value::Data {
                    content_type,
                    bytes,
                } => content_type.len() + bytes.len(),
                Value::Tombstone => 0,
            };
            bucket.len() + key.len() + value
        }
        Request::Merge {
            bucket,
            key,
            object,
        }
        | Request::MergeHint {
            bucket,
            key,
            object,
            ..
        } => bucket.len() + key.len() + object.approximate_size(),
        Request::Get { bucket, key } | Request::GetHint { bucket, key, .. } => {
            bucket.len() + key.len()
        }
        _ => 0,
    }
}

/// How many of the queued requests, of `weights` in queue order, the next batch takes:
/// at most `max_items`, at most `max_bytes` in all, and always at least one.
fn batch_len(weights: impl Iterator<Item = usize>, max_items: usize, max_bytes: usize) -> usize {
    let (mut taken, mut bytes) = (0, 0usize);
    for weight in weights.take(max_items) {
        if taken > 0 && bytes.saturating_add(weight) > max_bytes {
            break;
        }
        taken += 1;
        bytes = bytes.saturating_add(weight);
    }
    taken
}

async fn call_alone(
    transport: &dyn Transport,
    addr: &str,
    request: &Request,
    deadline: Instant,
) -> Result<Response, TransportError> {
    let timeout = deadline.saturating_duration_since(Instant::now());
    if timeout.is_zero() {
        return Err(TransportError::Timeout);
    }
    transport.call(addr, request, timeout).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;

    #[test]
    fn a_batch_stops_at_its_byte_cap_but_always_carries_one_request() {
        // Under both caps: everything.
        assert_eq!(batch_len([10, 20, 30].into_iter(), 256, 100), 3);
        // The byte cap cuts before the request that would pass it.
        assert_eq!(batch_len([40, 40, 40, 1].into_iter(), 256, 100), 2);
        // Exactly at the cap is within it.
        assert_eq!(batch_len([50, 50, 1].into_iter(), 256, 100), 2);
        // A request heavier than the cap leaves alone, whether first or not.
        assert_eq!(batch_len([500, 1].into_iter(), 256, 100), 1);
        assert_eq!(batch_len([1, 500].into_iter(), 256, 100), 1);
        // The item cap.
        assert_eq!(batch_len(std::iter::repeat_n(0, 1000), 256, 100), 256);
        assert_eq!(batch_len(std::iter::empty(), 256, 100), 0);
    }

    #[test]
    fn a_request_weighs_its_value_bucket_and_key() {
        let value = Value::data("text/plain", vec![0; 1000]);
        let coordinate = Request::Coordinate {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            context: quorumkv_replica::VersionVector::new(),
            value,
        };
        assert_eq!(weight(&coordinate), 1 + 1 + 10 + 1000);
        let get = Request::Get {
            bucket: b"bb".to_vec(),
            key: b"kkk".to_vec(),
        };
        assert_eq!(weight(&get), 5);
    }

    /// Answers every request after a millisecond (so that requests queue behind an
    /// exchange in flight) and records how many requests each exchange carried.
    #[derive(Default)]
    struct Recorder {
        exchanges: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl Transport for Recorder {
        async fn call(
            &self,
            _addr: &str,
            request: &Request,
            _timeout: Duration,
        ) -> Result<Response, TransportError> {
            let carried = match request {
                Request::Batch(items) => items.len(),
                _ => 1,
            };
            self.exchanges.lock().unwrap().push(carried);
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(match request {
                Request::Batch(items) => Response::Batch(vec![Response::Ack; items.len()]),
                _ => Response::Ack,
            })
        }
    }

    fn get(key: usize) -> Request {
        Request::Get {
            bucket: b"b".to_vec(),
            key: key.to_string().into_bytes(),
        }
    }

    /// Makes one call per key, all in one turn of the scheduler, and waits for them.
    async fn calls(batcher: &Arc<Batcher>, transport: &Arc<dyn Transport>, keys: usize) {
        let calls: Vec<_> = (0..keys)
            .map(|key| {
                let (batcher, transport) = (Arc::clone(batcher), Arc::clone(transport));
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    batcher.call(&transport, "peer", get(key), deadline).await
                })
            })
            .collect();
        for call in calls {
            assert!(matches!(call.await.unwrap(), Ok(Response::Ack)));
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_lane_gathers_requests_made_together_and_a_quiet_one_sends_at_once() {
        let recorder = Arc::new(Recorder::default());
        let transport: Arc<dyn Transport> = recorder.clone();
        let batcher = Arc::new(Batcher::default());
        let lane = batcher.lane("peer");
        lane.lock().support = Support::Yes;
        let exchanges = || recorder.exchanges.lock().unwrap().clone();

        // Quiet: the first request leaves at once, alone; the others wait for its exchange.
        calls(&batcher, &transport, 5).await;
        assert_eq!(exchanges(), [1, 4]);
        assert!(
            lane.lock().busy(),
            "the last exchange carried four requests"
        );

        // Busy: the first request waits a few turns, and the others leave with it.
        calls(&batcher, &transport, 5).await;
        assert_eq!(exchanges(), [1, 4, 5]);

        // Lone requests make the lane quiet again within a few exchanges.
        let mut lone = 0;
        while lane.lock().busy() {
            calls(&batcher, &transport, 1).await;
            lone += 1;
            assert!(lone <= 4, "still busy after {lone} lone requests");
        }
        calls(&batcher, &transport, 2).await;
        let mut expected = vec![1, 4, 5];
        expected.extend(std::iter::repeat_n(1, lone + 2));
        assert_eq!(exchanges(), expected);
        let state = lane.lock();
        assert_eq!((state.in_flight, state.queued.len()), (0, 0));
    }
}
