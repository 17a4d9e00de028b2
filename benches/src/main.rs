//! `quorumkv-bench`: load generator for quorumkv, with etcd and a bare HTTP server as yardsticks.
//!
//! A figure of throughput means little alone: on a small machine shared by the load
//! generator and every server, "9,000 writes/s" could be excellent or poor. So the same
//! workloads run against three targets ([`targets`]): a quorumkv cluster, an etcd cluster
//! (a replicated store that is consistent by consensus, the usual reference), and a server
//! that only answers, whose figures are the ceiling of one HTTP round trip on this machine.
//! Ratios to those two say what quorumkv costs and where it stands.
//!
//! # Layout
//!
//! - [`workloads`]: operation mixes (write, read, YCSB A and B, read-modify-write), uniform
//!   and Zipfian keys, values.
//! - [`targets`]: the three clients, and the ceiling server.
//! - [`runner`]: closed and open loops, HDR histograms, the progress bar.
//! - [`report`]: results as JSON lines, medians across repetitions, markdown.
//! - [`plot`]: SVG plots of throughput and latency against concurrency.
//! - [`flame`]: flame graphs of a perf profile (`scripts/profile.sh`).
//! - [`matrix`]: the experiment `make bench` runs, and the section of BENCHMARKS.md it
//!   writes.
//!
//! # Measuring honestly
//!
//! Every run is bounded by its duration and stops by itself. Closed loops measure
//! capacity; their latencies are a floor. Open loops measure latency at a fixed arrival
//! rate from each request's intended send time, so a stall is not hidden (no coordinated
//! omission). Values are random bytes, so compression does not flatter storage. quorumkv
//! writes carry the causal context of the key's last answer, as a well-behaved client's
//! do; blind writes would pile up siblings and measure that instead.

mod flame;
mod matrix;
mod plot;
mod report;
mod runner;
mod targets;
mod workloads;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::matrix::{MatrixOptions, Profile};
use crate::runner::{Pacing, RunSpec};
use crate::targets::{Quorum, Target, TargetKind};
use crate::workloads::{KeyDistribution, Mix};

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(
    name = "quorumkv-bench",
    about = "Load generator for quorumkv, etcd and a bare HTTP ceiling"
)]
struct Cli {
    /// Worker threads of the load generator.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one scenario against one target (several client counts in turn if given).
    Run(RunArgs),
    /// Runs the whole matrix against every target given, then writes results, plots and
    /// the generated section of BENCHMARKS.md.
    Matrix(MatrixArgs),
    /// Rewrites the summary, plots and section of a finished matrix from its results.
    Report(ReportArgs),
    /// Serves the ceiling: 200 and a fixed body for every request.
    ServeCeiling(CeilingArgs),
    /// Draws a flame graph (SVG) of the output of `perf script`, and writes its folded
    /// stacks beside it.
    Flamegraph(FlamegraphArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The kind of server.
    #[arg(long, value_enum, default_value_t = TargetKind::Quorumkv)]
    target: TargetKind,
    /// Base URLs, comma-separated; requests are spread over them in turn.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7003"
    )]
    endpoints: Vec<String>,
    /// The operation mix.
    #[arg(long, value_enum, default_value_t = Mix::Write)]
    workload: Mix,
    /// How keys are drawn.
    #[arg(long, value_enum, default_value_t = KeyDistribution::Uniform)]
    distribution: KeyDistribution,
    /// Concurrent clients (open loop: connections); a comma-separated list runs each.
    #[arg(long, value_delimiter = ',', default_value = "32")]
    clients: Vec<usize>,
    /// Open loop at this many requests per second in total (default: closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of each run (the run stops by itself).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Runs of each client count.
    #[arg(long, default_value_t = 1)]
    repeats: u32,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// quorumkv bucket, or etcd key prefix.
    #[arg(long, default_value = "bench")]
    bucket: String,
    /// Read quorum sent with every quorumkv GET.
    #[arg(long, default_value = "2")]
    r: String,
    /// Write quorum sent with every quorumkv PUT.
    #[arg(long, default_value = "2")]
    w: String,
    /// Keys `0..preload` are written once before the runs.
    #[arg(long, default_value_t = 0)]
    preload: u64,
    /// etcd: serializable reads (any member answers from its state) instead of
    /// linearizable ones.
    #[arg(long)]
    etcd_serializable: bool,
    /// The scenario's name in results (default: target and workload).
    #[arg(long)]
    label: Option<String>,
    /// Appends each result as a JSON line to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Per-request timeout, milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Args)]
struct MatrixArgs {
    /// How much to measure.
    #[arg(long, value_enum, default_value_t = Profile::Full)]
    profile: Profile,
    /// Base URLs of the quorumkv cluster started with `--sync none`.
    #[arg(long, value_delimiter = ',')]
    quorumkv: Vec<String>,
    /// Base URLs of the quorumkv cluster started with `--sync always`.
    #[arg(long, value_delimiter = ',')]
    quorumkv_sync: Vec<String>,
    /// Client URLs of the etcd members.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// URL of the ceiling server.
    #[arg(long, value_delimiter = ',')]
    ceiling: Vec<String>,
    /// Directory of results and plots.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Replaces the generated section of this document.
    #[arg(long)]
    benchmarks_md: Option<PathBuf>,
    /// The command shown in the document.
    #[arg(long, default_value = "quorumkv-bench matrix")]
    command: String,
    /// Concurrent clients of the main runs.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Keys of the main runs.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Value size of the main runs.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Per-request timeout, milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// Directory of a finished matrix.
    #[arg(long, default_value = "bench-results")]
    dir: PathBuf,
    /// Replaces the generated section of this document.
    #[arg(long)]
    benchmarks_md: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CeilingArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7900")]
    listen: SocketAddr,
    /// Size of the body of every answer.
    #[arg(long, default_value_t = 100)]
    body_bytes: usize,
    /// Exits after this many seconds even if nobody stops it.
    #[arg(long, default_value_t = 3600)]
    max_seconds: u64,
}

#[derive(Debug, Args)]
struct FlamegraphArgs {
    /// The output of `perf script` for a profile recorded with call graphs.
    #[arg(long)]
    perf_script: PathBuf,
    /// The SVG to write; the folded stacks go beside it, with the extension `.folded`.
    #[arg(long)]
    out: PathBuf,
    /// The title drawn above the graph.
    #[arg(long, default_value = "quorumkv")]
    title: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Flamegraph(args) = &cli.command {
        // Pure file work: no runtime needed.
        return flame::render(&args.perf_script, &args.out, &args.title);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Matrix(args) => {
                matrix::run(MatrixOptions {
                    profile: args.profile,
                    quorumkv: args.quorumkv,
                    quorumkv_sync: args.quorumkv_sync,
                    etcd: args.etcd,
                    ceiling: args.ceiling,
                    out: args.out,
                    benchmarks_md: args.benchmarks_md,
                    command: args.command,
                    clients: args.clients,
                    key_count: args.keys,
                    value_bytes: args.value_bytes,
                    progress: !args.no_progress,
                    timeout: Duration::from_millis(args.timeout_ms),
                })
                .await
            }
            Command::Report(args) => matrix::rewrite(&args.dir, args.benchmarks_md.as_deref()),
            Command::ServeCeiling(args) => {
                let body = workloads::random_value(args.body_bytes, 0);
                targets::ceiling::serve(args.listen, body, Duration::from_secs(args.max_seconds))
                    .await
            }
            Command::Flamegraph(_) => unreachable!("handled before the runtime starts"),
        }
    })
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.keys > 0, "--keys must be positive");
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut target = Target::new(
        args.target,
        &args.endpoints,
        &args.bucket,
        args.keys,
        timeout,
    )?;
    if let Target::Etcd(etcd) = &mut target {
        etcd.set_serializable(args.etcd_serializable);
    }
    let target = Arc::new(target);
    let value = workloads::random_value(args.value_bytes, 1);
    if args.preload > 0 {
        let started = std::time::Instant::now();
        target
            .preload(args.preload.min(args.keys), &value, max_clients)
            .await?;
        eprintln!(
            "preloaded {} keys in {:.1?}",
            args.preload,
            started.elapsed()
        );
    }
    let label = args
        .label
        .unwrap_or_else(|| format!("{}.{}", args.target.name(), args.workload.name()));
    for &clients in &args.clients {
        for repeat in 0..args.repeats {
            let spec = RunSpec {
                label: label.clone(),
                mix: args.workload,
                keys: args.distribution,
                key_count: args.keys,
                value: value.clone(),
                clients,
                pacing: args
                    .rate
                    .map_or(Pacing::Closed, |rate| Pacing::Open { rate }),
                duration: Duration::from_secs_f64(args.seconds),
                grace: Duration::from_millis(args.timeout_ms),
                quorum: Quorum {
                    r: args.r.clone(),
                    w: args.w.clone(),
                },
                repeat,
                seed: rand::random(),
                progress: !args.no_progress,
            };
            let result = runner::run(Arc::clone(&target), spec).await?;
            // An error, not a panic, when stdout is closed early (`| head`).
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", result.one_line())?;
            writeln!(stdout, "{}", serde_json::to_string(&result)?)?;
            drop(stdout);
            if let Some(path) = &args.out {
                report::append(path, &result)?;
            }
        }
    }
    Ok(())
}
