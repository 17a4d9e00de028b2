//! The benchmark matrix: the same scenarios against quorumkv, etcd and the ceiling.
//!
//! `make bench` starts the servers and runs `quorumkv-bench matrix`; this module decides
//! what is measured, in what order, and how it is summarised. Keeping the experiment here
//! rather than in the shell script makes it typed and testable, and lets the script do only
//! what a script is good at: starting and stopping processes.
//!
//! The order is chosen so that each figure is measured in the same conditions:
//!
//! 1. preload every key of every target once (quorumkv at `w=all`), so reads find values;
//! 2. the main scenarios, 32 clients, closed loop, all of them in turn, then again for each
//!    repetition, so that a slow spell of the machine spreads over scenarios instead of
//!    falling on one;
//! 3. the operation mixes (YCSB A, B, read-modify-write; uniform and Zipfian keys);
//! 4. the open loop, at fixed fractions of the throughput the closed loop measured;
//! 5. the concurrency sweep (the main scenarios at other client counts, for the plots);
//! 6. in the full profile, value sizes up to 100 KiB, each in its own bucket or prefix.
//!
//! The `--sync always` cluster is not preloaded (preloading it would take minutes of
//! fsyncs), so its writes mostly create keys where the `--sync none` writes replace them;
//! creating is slightly cheaper, which the figure should be read with.
//!
//! [`scenarios`] names what is measured, [`section`] writes the document and the plots,
//! [`meta`] describes the run.

pub mod meta;
pub mod scenarios;
pub mod section;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use self::meta::Meta;
use crate::report::{self, RunResult};
use crate::runner::{self, Pacing, RunSpec};
use crate::targets::http::HttpClient;
use crate::targets::{Quorum, Target, TargetKind};
use crate::workloads::random_value;

pub use self::scenarios::{find, labels, Profile, Scenario, Server, MAIN, MIXES, OPEN, SWEPT};

/// Where the servers are and how to run.
#[derive(Clone, Debug)]
pub struct MatrixOptions {
    /// How much to measure.
    pub profile: Profile,
    /// The `--sync none` quorumkv cluster.
    pub quorumkv: Vec<String>,
    /// The `--sync always` quorumkv cluster.
    pub quorumkv_sync: Vec<String>,
    /// The etcd members' client URLs.
    pub etcd: Vec<String>,
    /// The ceiling server.
    pub ceiling: Vec<String>,
    /// Where results and plots go.
    pub out: PathBuf,
    /// The document whose generated section is replaced, if any.
    pub benchmarks_md: Option<PathBuf>,
    /// The command to print in the document.
    pub command: String,
    /// Concurrent clients of the main runs.
    pub clients: usize,
    /// Keys of the main runs.
    pub key_count: u64,
    /// Value size of the main runs.
    pub value_bytes: usize,
    /// Draw progress bars.
    pub progress: bool,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// The targets of one value size.
struct Targets {
    quorumkv: Option<Arc<Target>>,
    quorumkv_sync: Option<Arc<Target>>,
    etcd: Option<Arc<Target>>,
    ceiling: Option<Arc<Target>>,
}

impl Targets {
    fn new(options: &MatrixOptions, namespace: &str, keys: u64) -> anyhow::Result<Self> {
        let make = |kind, endpoints: &Vec<String>| -> anyhow::Result<Option<Arc<Target>>> {
            if endpoints.is_empty() {
                return Ok(None);
            }
            Ok(Some(Arc::new(Target::new(
                kind,
                endpoints,
                namespace,
                keys,
                options.timeout,
            )?)))
        };
        Ok(Self {
            quorumkv: make(TargetKind::Quorumkv, &options.quorumkv)?,
            quorumkv_sync: make(TargetKind::Quorumkv, &options.quorumkv_sync)?,
            etcd: make(TargetKind::Etcd, &options.etcd)?,
            ceiling: make(TargetKind::Ceiling, &options.ceiling)?,
        })
    }

    fn get(&self, server: Server) -> Option<&Arc<Target>> {
        match server {
            Server::Quorumkv => self.quorumkv.as_ref(),
            Server::QuorumkvSync => self.quorumkv_sync.as_ref(),
            Server::Etcd => self.etcd.as_ref(),
            Server::Ceiling => self.ceiling.as_ref(),
        }
    }

    /// Preloads the targets that serve reads.
    async fn preload(&self, keys: u64, value: &bytes::Bytes, clients: usize) -> anyhow::Result<()> {
        for (name, target) in [("quorumkv", &self.quorumkv), ("etcd", &self.etcd)] {
            if let Some(target) = target {
                let started = std::time::Instant::now();
                target
                    .preload(keys, value, clients)
                    .await
                    .with_context(|| format!("preload {name}"))?;
                eprintln!(
                    "preloaded {keys} keys of {} bytes into {name} in {:.1?}",
                    value.len(),
                    started.elapsed()
                );
            }
        }
        Ok(())
    }
}

/// The state of a matrix run: where results go, and the runs so far.
struct Session<'a> {
    options: &'a MatrixOptions,
    results_path: PathBuf,
    results: Vec<RunResult>,
}

impl Session<'_> {
    #[allow(clippy::too_many_arguments)] // one call per phase; a struct would only rename them
    async fn measure(
        &mut self,
        targets: &Targets,
        scenario: &Scenario,
        clients: usize,
        pacing: Pacing,
        seconds: f64,
        key_count: u64,
        value: &bytes::Bytes,
        repeat: u32,
    ) -> anyhow::Result<()> {
        let Some(target) = targets.get(scenario.server) else {
            return Ok(());
        };
        let spec = RunSpec {
            label: scenario.label.to_string(),
            mix: scenario.mix,
            keys: scenario.keys,
            key_count,
            value: value.clone(),
            clients,
            pacing,
            duration: Duration::from_secs_f64(seconds),
            grace: self.options.timeout,
            quorum: Quorum {
                r: scenario.r.to_string(),
                w: scenario.w.to_string(),
            },
            repeat,
            seed: seed_of(scenario.label, repeat, clients),
            progress: self.options.progress,
        };
        let result = runner::run(Arc::clone(target), spec).await?;
        println!("{}", result.one_line());
        report::append(&self.results_path, &result)?;
        self.results.push(result);
        Ok(())
    }

    /// The median closed-loop throughput measured so far for `label` at the main settings.
    fn closed_throughput(&self, label: &str) -> Option<f64> {
        let runs: Vec<f64> = self
            .results
            .iter()
            .filter(|r| {
                r.label == label
                    && r.rate.is_none()
                    && r.clients == self.options.clients
                    && r.value_bytes == self.options.value_bytes
            })
            .map(|r| r.ops_per_sec)
            .collect();
        (!runs.is_empty()).then(|| report::median(runs))
    }
}

/// Runs the whole matrix, then writes the summary, the plots and the document section.
pub async fn run(options: MatrixOptions) -> anyhow::Result<()> {
    let plan = options.profile.plan();
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("create {}", options.out.display()))?;
    let results_path = options.out.join("results.jsonl");
    if results_path.exists() {
        std::fs::remove_file(&results_path)?;
    }
    let meta = Meta {
        command: options.command.clone(),
        profile: options.profile.name().to_string(),
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine: meta::describe_machine(),
        repeats: plan.repeats,
        seconds: plan.main_seconds,
        clients: options.clients,
        key_count: options.key_count,
        value_bytes: options.value_bytes,
        etcd_version: etcd_version(&options.etcd, options.timeout).await,
        quorumkv_version: env!("CARGO_PKG_VERSION").to_string(),
        load_average: meta::load_average(),
    };
    std::fs::write(
        options.out.join("meta.json"),
        serde_json::to_string_pretty(&meta)?,
    )?;

    let mut session = Session {
        options: &options,
        results_path,
        results: Vec::new(),
    };
    let value = random_value(options.value_bytes, 1);
    let keys = options.key_count;
    let targets = Targets::new(&options, "bench", keys)?;
    targets.preload(keys, &value, options.clients).await?;

    let clients = options.clients;
    let closed = Pacing::Closed;
    for repeat in 0..plan.repeats {
        for scenario in &MAIN {
            session
                .measure(
                    &targets,
                    scenario,
                    clients,
                    closed,
                    plan.main_seconds,
                    keys,
                    &value,
                    repeat,
                )
                .await?;
        }
    }
    for scenario in &MIXES {
        session
            .measure(
                &targets,
                scenario,
                clients,
                closed,
                plan.mix_seconds,
                keys,
                &value,
                0,
            )
            .await?;
    }
    for label in OPEN {
        let (Some(scenario), Some(capacity)) = (find(label), session.closed_throughput(label))
        else {
            continue;
        };
        for fraction in &plan.open_fractions {
            let pacing = Pacing::Open {
                rate: (capacity * fraction).round().max(1.0),
            };
            session
                .measure(
                    &targets,
                    scenario,
                    clients,
                    pacing,
                    plan.open_seconds,
                    keys,
                    &value,
                    0,
                )
                .await?;
        }
    }
    for &sweep_clients in &plan.sweep_clients {
        for scenario in SWEPT.iter().filter_map(|label| find(label)) {
            session
                .measure(
                    &targets,
                    scenario,
                    sweep_clients,
                    closed,
                    plan.sweep_seconds,
                    keys,
                    &value,
                    0,
                )
                .await?;
        }
    }
    for &size in &plan.scale_sizes {
        // A bounded data set per size: at most 256 MiB of values, at most the main key count.
        let scale_keys = keys.min((256 << 20) / size.max(1) as u64).max(1);
        let value = random_value(size, 2);
        let targets = Targets::new(&options, &format!("bench-{size}"), scale_keys)?;
        targets.preload(scale_keys, &value, clients).await?;
        // The ceiling answers every GET with the same small body, so only its PUTs scale.
        let scaled = SWEPT.iter().filter(|label| **label != labels::CEILING_READ);
        for scenario in scaled.filter_map(|label| find(label)) {
            session
                .measure(
                    &targets,
                    scenario,
                    clients,
                    closed,
                    plan.scale_seconds,
                    scale_keys,
                    &value,
                    0,
                )
                .await?;
        }
    }
    let results = session.results;
    write_outputs(
        &options.out,
        &meta,
        &results,
        options.benchmarks_md.as_deref(),
    )
}

/// Summarises `results`, draws the plots, and writes the section (into `benchmarks_md`
/// when given).
pub fn write_outputs(
    out: &Path,
    meta: &Meta,
    results: &[RunResult],
    benchmarks_md: Option<&Path>,
) -> anyhow::Result<()> {
    let summaries = report::summarize(results);
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summaries)?,
    )?;
    let plots = section::plots(out, meta, &summaries)?;
    let text = section::render(meta, &summaries, &plots);
    std::fs::write(out.join("section.md"), &text)?;
    eprintln!("wrote {}", out.join("section.md").display());
    if let Some(path) = benchmarks_md {
        let document =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        std::fs::write(path, report::markdown::splice(&document, &text)?)?;
        eprintln!("updated {}", path.display());
    }
    Ok(())
}

/// Regenerates the outputs of a finished matrix from its directory.
pub fn rewrite(out: &Path, benchmarks_md: Option<&Path>) -> anyhow::Result<()> {
    let meta: Meta = serde_json::from_str(
        &std::fs::read_to_string(out.join("meta.json")).context("read meta.json")?,
    )?;
    let results = report::load(&out.join("results.jsonl"))?;
    write_outputs(out, &meta, &results, benchmarks_md)
}

/// The etcd server version reported by the first member, if it answers.
async fn etcd_version(endpoints: &[String], timeout: Duration) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Version {
        etcdserver: String,
    }
    let client = HttpClient::new(endpoints.get(..1)?, timeout).ok()?;
    let reply = client
        .send(0, hyper::Method::GET, "/version", &[], bytes::Bytes::new())
        .await
        .ok()?;
    Some(
        serde_json::from_slice::<Version>(&reply.body)
            .ok()?
            .etcdserver,
    )
}

/// A seed per scenario, repetition and concurrency: runs are reproducible in what they ask,
/// and two runs of one matrix do not ask the same keys in the same order.
fn seed_of(label: &str, repeat: u32, clients: usize) -> u64 {
    label.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) ^ (u64::from(repeat) << 32)
        ^ clients as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_between_runs_of_a_scenario() {
        assert_ne!(seed_of("a", 0, 32), seed_of("a", 1, 32));
        assert_ne!(seed_of("a", 0, 32), seed_of("b", 0, 32));
        assert_eq!(seed_of("a", 2, 8), seed_of("a", 2, 8));
    }
}
