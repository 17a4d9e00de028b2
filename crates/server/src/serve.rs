//! `quorumkv serve`: wires the store, the coordinator and the HTTP API into one node, and
//! shuts it down cleanly.
//!
//! Shutdown on SIGTERM or SIGINT: stop accepting, let in-flight requests finish (for at most
//! [`DRAIN_TIMEOUT`](crate::listener::DRAIN_TIMEOUT)), stop the background upkeep, flush
//! RocksDB's memtables and WAL, exit 0. A node killed with SIGKILL instead loses nothing it
//! acknowledged either (every write went through the WAL first); the clean path only makes
//! the next start faster.
//!
//! Clients are served by [`crate::listener`], which bounds what one of them can hold.
//! SIGHUP reads the token files and the cluster secret again ([`crate::credentials`]).
//!
//! A node with peers (seeds other than its own address) must have the cluster secret, and
//! with TLS the CA certificates that vouch for its peers: without them it would accept
//! internode calls from anyone, or could check no peer. It refuses to start, naming the
//! missing option, before it opens its store.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use quorumkv_coordinator::coordinator::{handoff, transfer};
use quorumkv_coordinator::{reap_interval, Coordinator, PROBE_TIMEOUT, REAP_BUDGET, TICK};
use quorumkv_http_api::{router, AppState, BrowserGuard, Current, Edge, HttpTransport};
use quorumkv_replica::Store;
use tokio_rustls::TlsAcceptor;

use crate::background::{Background, Every};
use crate::cli::{LogFormat, ServeArgs};
use crate::credentials::{
    context_key_of, own_context_key, reload_on_hangup, CredentialFiles, Live,
};
use crate::node_config::NodeConfig;

/// How often the histograms' samples are folded into their buckets (see `start_background`).
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Latency buckets (seconds) for every `*_seconds` histogram: sub-millisecond to seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// Buckets for every `*_size` histogram (requests per batch, writes per group).
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Runs a node until SIGTERM or SIGINT.
pub fn main(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let threads = args.worker_threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    // One worker: the current-thread scheduler runs the same tasks on the thread that
    // drives the I/O, without the work-stealing machinery a single worker cannot use.
    let mut runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        runtime.worker_threads(threads);
        runtime
    };
    runtime.enable_all();
    let runtime = runtime.build().context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let NodeConfig {
        node,
        advertise,
        seeds,
        peers,
        store: store_options,
        coordinator: options,
        max_value_bytes,
        limits,
    } = NodeConfig::from_args(&args)?;
    check_source_ip(&args)?;
    let credential_files = CredentialFiles::of(&args, &peers);
    let credentials = credential_files.load()?;
    credential_files.warn_at_start();
    let tls = load_tls(&args, &peers)?;
    let metrics = install_metrics()?;
    let data_dir = args.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&data_dir, store_options))
        .await?
        .with_context(|| format!("cannot open the store in {}", args.data_dir.display()))?;
    let store = Arc::new(store);
    let context_key = match context_key_of(&credentials) {
        Some(key) => key,
        None => {
            let store = Arc::clone(&store);
            tokio::task::spawn_blocking(move || own_context_key(&store))
                .await?
                .context("cannot keep the key that signs causal contexts")?
        }
    };
    let transport = match &tls {
        Some(tls) => HttpTransport::https(&tls.peer_ca, args.internode_source_ip)?,
        None => HttpTransport::new(args.internode_source_ip)?,
    };
    let transport = Arc::new(transport.with_cluster_secret(credentials.cluster_secret())?);
    let faults = transport.faults();
    let live = Live {
        credentials: Current::new(credentials),
        context_key: Current::new(context_key),
        transport: Arc::clone(&transport),
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
    tracing::info!(%node, listen = %args.listen, %advertise, seeds = ?seeds, actor = ?store.actor(), tls = tls.is_some(), "node started");

    let background = start_background(
        &coordinator,
        &metrics,
        &args,
        credential_files,
        live.clone(),
    );
    let fault_coordinator = Arc::clone(&coordinator);
    let leaver = Arc::clone(&coordinator);
    let departing = Arc::clone(&coordinator);
    let app = router(
        AppState::new(coordinator, Some(metrics), max_value_bytes)
            .with_fault_injection(args.fault_injection)
            .with_context_key(live.context_key.clone()),
    );
    let app = if args.fault_injection {
        tracing::warn!(
            "fault injection is on: with the cluster secret, internode links can be cut and \
             replica bugs planted through the API; never run a production node so"
        );
        app.merge(quorumkv_http_api::fault::router(faults, fault_coordinator))
    } else {
        app
    };
    let app = Edge::new(
        app,
        live.credentials.clone(),
        Duration::from_millis(args.request_timeout_ms),
    )
    .with_browser_guard(BrowserGuard::new(
        &args.allowed_origins,
        args.listen.ip().is_loopback(),
        &advertise,
    ));
    let acceptor = tls.map(|tls| tls.acceptor);
    let stop = async move {
        tokio::select! {
            () = shutdown_signal() => {}
            () = removed(leaver) => {}
        }
    };
    crate::listener::serve(listener, app, limits, acceptor, stop).await;

    if departing.has_left() {
        // Its hints may be acknowledgements of sloppy writes: they must not leave with it.
        // The failure detector still runs, so the owners that are up are known.
        departing.hand_over_hints(handoff::HAND_OVER_LIMIT).await;
    }
    drop(departing);
    tracing::info!("draining done; stopping background work");
    background.stop().await;
    let flush_store = Arc::clone(&store);
    tokio::task::spawn_blocking(move || flush_store.flush())
        .await?
        .context("cannot flush the store")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Starts the node's background work (see [`crate::background`]): probes and gossip
/// every [`TICK`], hint replay, transfers, anti-entropy (unless its interval is 0), the
/// tombstone reaper, the metrics' upkeep, and credential reloads on SIGHUP.
fn start_background(
    coordinator: &Arc<Coordinator>,
    metrics: &PrometheusHandle,
    args: &ServeArgs,
    credential_files: CredentialFiles,
    live: Live,
) -> Background {
    let mut background = Background::new();
    if let Some(hangups) = crate::credentials::hangups() {
        let stopping = background.stopping();
        background.spawn(reload_on_hangup(hangups, credential_files, live, stopping));
    }
    // The recorder keeps every histogram sample until a scrape or an upkeep takes it:
    // without this a node nobody scrapes grew by a few hundred MiB over 20 minutes of load.
    let handle = metrics.clone();
    background.every(Every::finishing(METRICS_UPKEEP_INTERVAL), move || {
        handle.run_upkeep();
        std::future::ready(())
    });
    let c = Arc::clone(coordinator);
    background.every(Every::finishing(TICK), move || {
        let c = Arc::clone(&c);
        async move { c.tick(PROBE_TIMEOUT).await }
    });
    // A full batch means more are waiting: go on at once rather than a batch per
    // interval, so a returning node catches up at the speed it can take.
    let (c, stopping) = (Arc::clone(coordinator), background.stopping());
    background.every(Every::finishing(handoff::REPLAY_INTERVAL), move || {
        let (c, stopping) = (Arc::clone(&c), stopping.clone());
        async move {
            while c.replay_hints(handoff::REPLAY_BATCH).await.replayed >= handoff::REPLAY_BATCH {
                if *stopping.borrow() {
                    return;
                }
            }
        }
    });
    // A task of its own: a transfer may take long, and must not delay liveness probes.
    let c = Arc::clone(coordinator);
    background.every(Every::cut_at_stop(transfer::ROUND_INTERVAL), move || {
        let c = Arc::clone(&c);
        async move {
            c.transfer_round().await;
        }
    });
    let anti_entropy = Duration::from_millis(args.anti_entropy_interval_ms);
    if anti_entropy.is_zero() {
        tracing::info!("anti-entropy is off");
    } else {
        // The first round one interval after the start, once the node has seen its peers.
        let c = Arc::clone(coordinator);
        background.every(
            Every::cut_at_stop(anti_entropy).after_a_period(),
            move || {
                let c = Arc::clone(&c);
                async move {
                    c.anti_entropy_round().await;
                }
            },
        );
    }
    let c = Arc::clone(coordinator);
    let reap = reap_interval(Duration::from_secs(args.tombstone_grace_secs));
    background.every(Every::finishing(reap), move || {
        let c = Arc::clone(&c);
        async move {
            c.reap_tombstones(REAP_BUDGET).await;
        }
    });
    background
}

/// Returns once this node has left the cluster (its leave was committed): the node then
/// stops as on SIGTERM, and exits 0.
async fn removed(coordinator: Arc<Coordinator>) {
    let mut interval = tokio::time::interval(TICK);
    loop {
        interval.tick().await;
        if coordinator.has_left() {
            tracing::info!("this node has left the cluster: stopping");
            return;
        }
    }
}

/// Refuses an `--internode-source-ip` that is not an address of this host, at start: every
/// call to a peer would fail later, and the node would look partitioned instead.
fn check_source_ip(args: &ServeArgs) -> anyhow::Result<()> {
    if let Some(ip) = args.internode_source_ip {
        std::net::TcpListener::bind((ip, 0)).with_context(|| {
            format!("--internode-source-ip {ip}: not an address this host can send from")
        })?;
    }
    Ok(())
}

/// The listener's TLS and what the transport trusts.
struct Tls {
    acceptor: TlsAcceptor,
    /// PEM of the CA certificates that vouch for the peers (empty for a node alone).
    peer_ca: Vec<u8>,
}

/// Reads the TLS files named by the flags: none, or a certificate and its key (and, for a
/// node with `peers`, the CA that vouches for them).
fn load_tls(args: &ServeArgs, peers: &[String]) -> anyhow::Result<Option<Tls>> {
    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => {
            if args.tls_ca.is_some() {
                bail!(
                    "--tls-ca is given without --tls-cert and --tls-key: a node calls its \
                     peers over HTTPS only when it serves HTTPS itself"
                );
            }
            return Ok(None);
        }
        (Some(_), None) => bail!("--tls-cert is given without --tls-key: give both or neither"),
        (None, Some(_)) => bail!("--tls-key is given without --tls-cert: give both or neither"),
    };
    let acceptor = crate::tls::acceptor(cert, key)?;
    let peer_ca = match &args.tls_ca {
        Some(path) => crate::tls::read_ca("--tls-ca", path)?,
        None if !peers.is_empty() => bail!(
            "--tls-cert is given and --seeds name other nodes ({}), but no --tls-ca: give the \
             CA certificates that signed the peers' certificates",
            peers.join(", ")
        ),
        None => Vec::new(),
    };
    Ok(Some(Tls { acceptor, peer_ca }))
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
        .set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS)
        .context("invalid size buckets")?
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
