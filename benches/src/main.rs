//! `quorumkv-bench`: a closed-loop load generator for a quorumkv cluster.
//!
//! `--clients` concurrent clients each send one request at a time, spread over the given
//! endpoints, for `--seconds`, then stop by themselves. Latencies go into an HDR histogram
//! (microsecond resolution); the summary is printed as text and as one JSON line. A closed
//! loop measures capacity, not latency under a fixed arrival rate: its percentiles exclude
//! the time a request would have waited to be sent (coordinated omission), so they are a
//! floor, not a service-level figure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What the clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Only PUTs.
    Write,
    /// Only GETs (preload first).
    Read,
    /// Half and half.
    Mixed,
}

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "quorumkv-bench",
    about = "Closed-loop load against a quorumkv cluster"
)]
struct Options {
    /// Node base URLs, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7003"
    )]
    endpoints: Vec<String>,
    /// What to send.
    #[arg(long, value_enum, default_value_t = Workload::Write)]
    workload: Workload,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// How long to run, in seconds (the run stops by itself).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Distinct keys (uniformly chosen).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Bucket.
    #[arg(long, default_value = "bench")]
    bucket: String,
    /// Read quorum sent with every GET.
    #[arg(long, default_value = "2")]
    r: String,
    /// Write quorum sent with every PUT.
    #[arg(long, default_value = "2")]
    w: String,
    /// Keys to write before a read or mixed run (0: none).
    #[arg(long, default_value_t = 0)]
    preload: u64,
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Arc::new(Options::parse());
    anyhow::ensure!(!options.endpoints.is_empty(), "no endpoints");
    anyhow::ensure!(
        options.clients > 0 && options.keys > 0,
        "clients and keys must be positive"
    );
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(options.clients)
        .timeout(Duration::from_secs(10))
        .build()?;
    let value = vec![b'x'; options.value_bytes];

    if options.preload > 0 {
        let started = Instant::now();
        preload(&client, &options, &value).await?;
        eprintln!(
            "preloaded {} keys in {:.1?}",
            options.preload,
            started.elapsed()
        );
    }

    let counters = Arc::new(Counters::default());
    let deadline = Instant::now() + Duration::from_secs(options.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..options.clients {
        let client = client.clone();
        let options = Arc::clone(&options);
        let counters = Arc::clone(&counters);
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut rng = StdRng::from_os_rng();
            let mut i = id;
            while Instant::now() < deadline {
                let key = rng.random_range(0..options.keys);
                let endpoint = &options.endpoints[i % options.endpoints.len()];
                i += 1;
                let write = match options.workload {
                    Workload::Write => true,
                    Workload::Read => false,
                    Workload::Mixed => rng.random_bool(0.5),
                };
                let sent = Instant::now();
                let result = if write {
                    client
                        .put(format!(
                            "{endpoint}/v1/buckets/{}/keys/k{key}?w={}",
                            options.bucket, options.w
                        ))
                        .body(value.clone())
                        .send()
                        .await
                } else {
                    client
                        .get(format!(
                            "{endpoint}/v1/buckets/{}/keys/k{key}?r={}",
                            options.bucket, options.r
                        ))
                        .send()
                        .await
                };
                let ok = match result {
                    Ok(response) => {
                        let status = response.status();
                        // Drain the body so the connection returns to the pool.
                        let _ = response.bytes().await;
                        status.is_success() || status.as_u16() == 404 || status.as_u16() == 300
                    }
                    Err(_) => false,
                };
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                histogram.saturating_record(micros.max(1));
                let counter = if ok { &counters.ok } else { &counters.errors };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            histogram
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        histogram.add(task.await.context("client task")?)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok = counters.ok.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{:?} clients={} {:.0} ops/s  ok={} errors={}  p50={:.2}ms p99={:.2}ms p999={:.2}ms max={:.2}ms",
        options.workload,
        options.clients,
        ok as f64 / elapsed,
        ok,
        errors,
        ms(0.5),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0
    );
    println!(
        "{}",
        serde_json::json!({
            "workload": format!("{:?}", options.workload).to_lowercase(),
            "clients": options.clients,
            "seconds": elapsed,
            "ops_per_sec": ok as f64 / elapsed,
            "ok": ok,
            "errors": errors,
            "p50_ms": ms(0.5),
            "p99_ms": ms(0.99),
            "p999_ms": ms(0.999),
            "max_ms": histogram.max() as f64 / 1000.0,
            "value_bytes": options.value_bytes,
            "r": options.r,
            "w": options.w,
        })
    );
    Ok(())
}

/// Writes keys `0..preload` with `options.clients` concurrent writers.
async fn preload(
    client: &reqwest::Client,
    options: &Arc<Options>,
    value: &[u8],
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for id in 0..options.clients {
        let client = client.clone();
        let options = Arc::clone(options);
        let next = Arc::clone(&next);
        let value = value.to_vec();
        tasks.push(tokio::spawn(async move {
            loop {
                let key = next.fetch_add(1, Ordering::Relaxed);
                if key >= options.preload {
                    return Ok::<(), anyhow::Error>(());
                }
                let endpoint = &options.endpoints[(key as usize + id) % options.endpoints.len()];
                let response = client
                    .put(format!(
                        "{endpoint}/v1/buckets/{}/keys/k{key}?w=all",
                        options.bucket
                    ))
                    .body(value.clone())
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "preload of k{key}: {}",
                    response.status()
                );
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}
