//! Request metrics: a counter by route, method and status, and a latency histogram by
//! route and method. Routes are labelled by their template (`/v1/buckets/{bucket}/keys/{*key}`),
//! never by the concrete path, and by method only for HTTP's own methods (any other is
//! `other`), so the number of series stays bounded whatever clients send.
//! Client key requests are also timed by operation and quorum (`QuorumTimer`), and the
//! store's RocksDB figures are read when `/metrics` is scraped ([`record_engine_stats`]),
//! with the runtime's ([`record_runtime`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use quorumkv_coordinator::quorum::MAX_N;
use quorumkv_coordinator::{BucketName, Coordinator, EngineStats, QuorumSpec};
use tower::{Layer, Service};

use crate::AppState;

/// Counts and times every routed request: a [`Track`] around each route.
///
/// A plain tower layer rather than an axum `from_fn` one, which per request would clone
/// the route's boxed service and box two futures; and each series' handles are looked up
/// once, then kept (`Series`), rather than each request building its labels and looking
/// them up in the recorder's registry.
#[derive(Clone, Default)]
pub struct TrackLayer {
    series: Arc<Series>,
}

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            series: Arc::clone(&self.series),
        }
    }
}

/// One route, counted and timed.
#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    series: Arc<Series>,
}

impl<S> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Tracked<S::Future> {
        let started = Instant::now();
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        let route = self.series.of(route, method_label(request.method()));
        Tracked {
            inner: self.inner.call(request),
            route: Some(route),
            started,
        }
    }
}

pin_project! {
    /// A request on its way through a [`Track`]: recorded when its response is ready. A
    /// request dropped before that (cut off by the request timeout, or by its client going
    /// away) is not recorded here; the edge answers it.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        route: Option<Arc<RouteSeries>>,
        started: Instant,
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = ready!(this.inner.poll(cx));
        if let (Ok(response), Some(route)) = (&answer, this.route.take()) {
            route.record(response.status(), this.started.elapsed());
        }
        Poll::Ready(answer)
    }
}

/// The `method` label of a request: its method when it is one of HTTP's own, `other`
/// otherwise, so that clients inventing methods cannot add series without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// The request series of one router, by route template and method:
/// `quorumkv_http_requests_total{route, method, status}` and
/// `quorumkv_http_request_duration_seconds{route, method}`.
///
/// Handles are taken from the recorder on a route's first request and kept, so they must
/// outlive no recorder: the series belong to one router, and a node installs its recorder
/// before it builds its router.
#[derive(Default)]
pub(crate) struct Series {
    routes: RwLock<ByRoute>,
}

/// By route template, then by method label: a route has a handful of methods at most.
type ByRoute = HashMap<String, Vec<(&'static str, Arc<RouteSeries>)>>;

impl Series {
    /// The series of `method` on `route`, made on first use.
    fn of(&self, route: &str, method: &'static str) -> Arc<RouteSeries> {
        found_or_added(
            &self.routes,
            |routes| {
                let methods = routes.get(route)?;
                let (_, series) = methods.iter().find(|(m, _)| *m == method)?;
                Some(Arc::clone(series))
            },
            |routes| {
                let series = Arc::new(RouteSeries::new(route, method));
                routes
                    .entry(route.to_string())
                    .or_default()
                    .push((method, Arc::clone(&series)));
                series
            },
        )
    }
}

/// What `find` finds under the read lock of `cache`; failing that, under its write lock
/// (another request may have added it meanwhile), and failing that what `add` adds. Every
/// request reads; only the first of each kind writes.
fn found_or_added<T, V>(
    cache: &RwLock<T>,
    find: impl Fn(&T) -> Option<V>,
    add: impl FnOnce(&mut T) -> V,
) -> V {
    if let Some(found) = find(&cache.read().unwrap_or_else(PoisonError::into_inner)) {
        return found;
    }
    let mut cache = cache.write().unwrap_or_else(PoisonError::into_inner);
    match find(&cache) {
        Some(found) => found,
        None => add(&mut cache),
    }
}

/// The series of one route and method.
pub(crate) struct RouteSeries {
    route: String,
    method: &'static str,
    duration: Histogram,
    /// By status code; a route answers with a handful of codes.
    counts: RwLock<Vec<(StatusCode, Counter)>>,
}

impl RouteSeries {
    fn new(route: &str, method: &'static str) -> Self {
        let duration = metrics::histogram!(
            "quorumkv_http_request_duration_seconds",
            "route" => route.to_string(),
            "method" => method
        );
        Self {
            route: route.to_string(),
            method,
            duration,
            counts: RwLock::default(),
        }
    }

    fn record(&self, status: StatusCode, took: Duration) {
        self.duration.record(took.as_secs_f64());
        let counter = found_or_added(
            &self.counts,
            |counts| {
                let (_, counter) = counts.iter().find(|(s, _)| *s == status)?;
                Some(counter.clone())
            },
            |counts| {
                let counter = metrics::counter!(
                    "quorumkv_http_requests_total",
                    "route" => self.route.clone(),
                    "method" => self.method,
                    "status" => status.as_u16().to_string()
                );
                counts.push((status, counter.clone()));
                counter
            },
        );
        counter.increment(1);
    }
}

/// A client key operation, as `quorumkv_request_duration_seconds` labels it.
#[derive(Clone, Copy)]
pub(crate) enum KeyOp {
    Get,
    Put,
    Delete,
}

impl KeyOp {
    const ALL: usize = 3;

    fn label(self) -> &'static str {
        match self {
            KeyOp::Get => "get",
            KeyOp::Put => "put",
            KeyOp::Delete => "delete",
        }
    }
}

/// The handles of `quorumkv_request_duration_seconds`, one per operation and quorum, each
/// registered on first use and then kept, so that a request neither formats its labels
/// nor looks them up in the recorder's registry. Registered lazily, as the recorder would
/// be: a series appears once a request has been timed in it.
#[derive(Default)]
pub(crate) struct QuorumSeries {
    /// By operation, then by quorum less one.
    histograms: [[OnceLock<Histogram>; MAX_N]; KeyOp::ALL],
}

impl QuorumSeries {
    /// The histogram of `op` at `quorum` (`1..=MAX_N`), `None` outside it.
    fn of(&self, op: KeyOp, quorum: usize) -> Option<&Histogram> {
        let slot = self.histograms[op as usize].get(quorum.checked_sub(1)?)?;
        Some(slot.get_or_init(|| {
            metrics::histogram!(
                "quorumkv_request_duration_seconds",
                "op" => op.label(),
                "quorum" => quorum.to_string()
            )
        }))
    }
}

/// Times one client key request under its operation and its quorum, into
/// `quorumkv_request_duration_seconds{op, quorum}`: how long the coordinator took, from
/// the validated request to the answer of its `r` (get) or `w` (put, delete) replicas, or
/// to its failure. Recorded when dropped, so a request the request timeout cuts short is
/// recorded too.
///
/// The `quorum` label is the resolved number (`quorum=2`, whether the client wrote
/// `r=2`, `r=quorum` or nothing on a bucket with `n=3`): latency depends on how many
/// replicas were awaited, not on how the client spelled it. Resolution refuses anything
/// outside `1..=n` and `n` is at most [`MAX_N`], so there are at most 3 × 16 series.
pub(crate) struct QuorumTimer<'a> {
    histogram: Option<&'a Histogram>,
    started: Instant,
}

impl<'a> QuorumTimer<'a> {
    /// Starts timing a quorum read of `bucket` with the client's `r`.
    pub(crate) fn read(state: &'a AppState, bucket: &BucketName, r: Option<QuorumSpec>) -> Self {
        let props = state.coordinator.bucket_props(bucket);
        Self::start(state, KeyOp::Get, r, "r", props.r, props.n)
    }

    /// Starts timing a write (`op` is a put or a delete) to `bucket` with the client's `w`.
    pub(crate) fn write(
        state: &'a AppState,
        op: KeyOp,
        bucket: &BucketName,
        w: Option<QuorumSpec>,
    ) -> Self {
        let props = state.coordinator.bucket_props(bucket);
        Self::start(state, op, w, "w", props.w, props.n)
    }

    fn start(
        state: &'a AppState,
        op: KeyOp,
        spec: Option<QuorumSpec>,
        param: &'static str,
        default: usize,
        n: usize,
    ) -> Self {
        // The coordinator resolves the same way and refuses what does not resolve, with
        // 400 `invalid_quorum`: such a request awaits no replica and is not recorded.
        let quorum = spec
            .unwrap_or(QuorumSpec::Count(default))
            .resolve(param, n)
            .ok();
        Self {
            histogram: quorum.and_then(|q| state.quorum_series.of(op, q)),
            started: Instant::now(),
        }
    }
}

impl Drop for QuorumTimer<'_> {
    fn drop(&mut self) {
        if let Some(histogram) = self.histogram {
            histogram.record(self.started.elapsed().as_secs_f64());
        }
    }
}

/// Reads RocksDB's figures about this node's store ([`EngineStats`]) on a blocking thread
/// and sets their metrics.
///
/// Called when `/metrics` is scraped rather than by a periodic task: the figures are then
/// as fresh as the scrape that reads them, nothing runs while nobody scrapes, and there is
/// no task to stop at shutdown. The reads are short, but they take RocksDB's DB mutex,
/// hence the blocking thread.
pub async fn record_engine_stats(coordinator: &Arc<Coordinator>) {
    let coordinator = Arc::clone(coordinator);
    match tokio::task::spawn_blocking(move || coordinator.store().engine_stats()).await {
        Ok(Ok(stats)) => set_engine_metrics(&stats),
        Ok(Err(error)) => tracing::warn!(%error, "cannot read RocksDB's figures for /metrics"),
        Err(error) => tracing::warn!(%error, "the task reading RocksDB's figures failed"),
    }
}

/// Sets the async runtime's figures: how many worker threads run requests
/// (`--worker-threads`, by default one per core).
pub fn record_runtime() {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    metrics::gauge!("quorumkv_runtime_worker_threads").set(workers as f64);
}

/// Sets one metric per figure; a figure RocksDB did not give is left as it was.
fn set_engine_metrics(stats: &EngineStats) {
    for cf in &stats.column_families {
        let name = cf.name;
        if let Some(bytes) = cf.sst_bytes {
            metrics::gauge!("quorumkv_rocksdb_sst_bytes", "cf" => name).set(bytes as f64);
        }
        if let Some(bytes) = cf.memtable_bytes {
            metrics::gauge!("quorumkv_rocksdb_memtable_bytes", "cf" => name).set(bytes as f64);
        }
        if let Some(bytes) = cf.table_readers_bytes {
            metrics::gauge!("quorumkv_rocksdb_table_readers_bytes", "cf" => name).set(bytes as f64);
        }
        if let Some(bytes) = cf.pending_compaction_bytes {
            metrics::gauge!("quorumkv_rocksdb_pending_compaction_bytes", "cf" => name)
                .set(bytes as f64);
        }
        // RocksDB counts stalls since the store opened, as a process counter counts since
        // the process started: exported as a counter, so `rate()` and `increase()` apply.
        for (kind, count) in [("delayed", cf.write_delays), ("stopped", cf.write_stops)] {
            if let Some(count) = count {
                metrics::counter!("quorumkv_rocksdb_write_stalls_total", "cf" => name, "kind" => kind)
                    .absolute(count);
            }
        }
    }
    if let Some(stopped) = stats.write_stopped {
        metrics::gauge!("quorumkv_rocksdb_write_stopped").set(if stopped { 1.0 } else { 0.0 });
    }
    if let Some(rate) = stats.delayed_write_rate {
        metrics::gauge!("quorumkv_rocksdb_delayed_write_rate_bytes").set(rate as f64);
    }
    if let Some(running) = stats.running_compactions {
        metrics::gauge!("quorumkv_rocksdb_running_compactions").set(running as f64);
    }
    if let Some(keys) = stats.estimated_keys {
        metrics::gauge!("quorumkv_rocksdb_estimated_keys").set(keys as f64);
    }
    if let Some(bytes) = stats.block_cache_capacity {
        metrics::gauge!("quorumkv_rocksdb_block_cache_capacity_bytes").set(bytes as f64);
    }
    if let Some(bytes) = stats.block_cache_usage {
        metrics::gauge!("quorumkv_rocksdb_block_cache_usage_bytes").set(bytes as f64);
    }
}
