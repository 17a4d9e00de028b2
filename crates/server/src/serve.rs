//! `quorumkv serve`: wires the store, the coordinator and the HTTP API into one node, and
//! shuts it down cleanly.
//!
//! Shutdown on SIGTERM or SIGINT: stop accepting, let in-flight requests finish, stop the
//! background upkeep, flush RocksDB's memtables and WAL, exit 0. A node killed with SIGKILL
//! instead loses nothing it acknowledged either (every write went through the WAL first);
//! the clean path only makes the next start faster.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::serve::ListenerExt;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use quorumkv_coordinator::{Coordinator, CoordinatorOptions, NodeId, SyncPolicy};
use quorumkv_http_api::{router, AppState, HttpTransport};
use quorumkv_replica::{Store, StoreOptions};
use tokio::sync::watch;

use crate::cli::{LogFormat, ServeArgs, SyncArg};

/// How often a node probes its peers and pulls their bucket properties.
const TICK: Duration = Duration::from_millis(500);
/// How long a probe may take before the peer counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// Latency buckets (seconds) for every `*_seconds` histogram: sub-millisecond to seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// Runs a node until SIGTERM or SIGINT.
pub fn main(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let node = NodeId::new(args.node_id.trim());
    if node.as_str().is_empty() {
        bail!("--node-id must not be empty");
    }
    let advertise = match &args.advertise {
        Some(addr) => addr.clone(),
        None if args.listen.ip().is_unspecified() => {
            bail!(
                "--listen {} is a wildcard address: give --advertise host:port",
                args.listen
            )
        }
        None => args.listen.to_string(),
    };
    let metrics = install_metrics()?;
    let sync = match args.sync {
        SyncArg::None => SyncPolicy::None,
        SyncArg::Always => SyncPolicy::Always,
    };
    let data_dir = args.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&data_dir, StoreOptions { sync }))
        .await?
        .with_context(|| format!("cannot open the store in {}", args.data_dir.display()))?;
    let store = Arc::new(store);
    let transport = Arc::new(HttpTransport::new()?);
    let seeds: Vec<String> = args
        .seeds
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let options = CoordinatorOptions {
        default_n: usize::from(args.default_n),
        ..CoordinatorOptions::default()
    };
    let coordinator = Arc::new(Coordinator::new(
        node.clone(),
        advertise.clone(),
        &seeds,
        Arc::clone(&store),
        transport,
        options,
    )?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(%node, listen = %args.listen, %advertise, seeds = ?seeds, actor = ?store.actor(), "node started");

    let (stop_tx, stop_rx) = watch::channel(false);
    let upkeep = tokio::spawn(upkeep(Arc::clone(&coordinator), stop_rx));
    let app = router(AppState {
        coordinator,
        metrics: Some(metrics),
        max_value_bytes: usize::try_from(args.max_value_bytes).unwrap_or(usize::MAX),
    });
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;

    tracing::info!("draining done; stopping background work");
    let _ = stop_tx.send(true);
    let _ = upkeep.await;
    let flush_store = Arc::clone(&store);
    tokio::task::spawn_blocking(move || flush_store.flush())
        .await?
        .context("cannot flush the store")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Probes peers and syncs bucket properties every [`TICK`] until told to stop.
async fn upkeep(coordinator: Arc<Coordinator>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => coordinator.tick(PROBE_TIMEOUT).await,
            _ = stop.changed() => return,
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested");
}

fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .context("invalid latency buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUORUMKV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
