//! Request metrics: a counter by route, method and status, and a latency histogram by
//! route and method. Routes are labelled by their template (`/v1/buckets/{bucket}/keys/{*key}`),
//! never by the concrete path, so the number of series stays bounded whatever clients send.
//! Client key requests are also timed by operation and quorum (`QuorumTimer`), and the
//! store's RocksDB figures are read when `/metrics` is scraped ([`record_engine_stats`]),
//! with the runtime's ([`record_runtime`]).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use quorumkv_coordinator::{BucketName, Coordinator, EngineStats, QuorumSpec};

/// Records one request.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "quorumkv_http_requests_total",
        "route" => route.clone(),
        "method" => method.clone(),
        "status" => status
    )
    .increment(1);
    metrics::histogram!(
        "quorumkv_http_request_duration_seconds",
        "route" => route,
        "method" => method
    )
    .record(started.elapsed().as_secs_f64());
    response
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
/// outside `1..=n` and `n` is at most [`quorumkv_coordinator::quorum::MAX_N`], so there
/// are at most 3 × 16 series.
pub(crate) struct QuorumTimer {
    op: &'static str,
    quorum: Option<usize>,
    started: Instant,
}

impl QuorumTimer {
    /// Starts timing a quorum read of `bucket` with the client's `r`.
    pub(crate) fn read(
        coordinator: &Coordinator,
        bucket: &BucketName,
        r: Option<QuorumSpec>,
    ) -> Self {
        let props = coordinator.bucket_props(bucket);
        Self::start("get", r, "r", props.r, props.n)
    }

    /// Starts timing a write (`op` is `put` or `delete`) to `bucket` with the client's `w`.
    pub(crate) fn write(
        op: &'static str,
        coordinator: &Coordinator,
        bucket: &BucketName,
        w: Option<QuorumSpec>,
    ) -> Self {
        let props = coordinator.bucket_props(bucket);
        Self::start(op, w, "w", props.w, props.n)
    }

    fn start(
        op: &'static str,
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
            op,
            quorum,
            started: Instant::now(),
        }
    }
}

impl Drop for QuorumTimer {
    fn drop(&mut self) {
        let Some(quorum) = self.quorum else {
            return;
        };
        metrics::histogram!(
            "quorumkv_request_duration_seconds",
            "op" => self.op,
            "quorum" => quorum.to_string()
        )
        .record(self.started.elapsed().as_secs_f64());
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
