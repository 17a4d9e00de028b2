//! Running load: closed loops, open loops, and the live progress bar.
//!
//! - A **closed loop** has `clients` tasks, each sending one request, waiting for the
//!   answer, and sending the next. It measures capacity: the throughput the target
//!   sustains with that many requests in flight. Its latencies exclude the time a request
//!   would have waited to be sent, so they are a floor, not what a user at a fixed arrival
//!   rate would see.
//! - An **open loop** sends at a fixed total rate over `clients` connections and measures
//!   each latency from the request's intended send time ([`schedule`]), so a stall is
//!   charged to every request it delayed. That is the latency a service level is about.
//!
//! Every run is bounded: no request is sent after `duration`, and whatever is still in
//! flight at `duration + grace` is abandoned, uncounted. Each client owns its recorder
//! ([`recorder`]); the recorders are merged at the end. Clients spread their requests over
//! the target's endpoints in turn, each starting at a different one.

pub mod recorder;
pub mod schedule;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::time::{timeout_at, Instant};

use self::recorder::Recorder;
use self::schedule::Schedule;
use crate::report::RunResult;
use crate::targets::{ErrorKind, Found, Quorum, Target};
use crate::workloads::{KeyChooser, KeyDistribution, Mix, OpKind};

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pacing {
    /// Each client sends its next request as soon as the previous one is answered.
    Closed,
    /// Requests are sent at `rate` per second in total, whatever the answers do.
    Open {
        /// Requests per second, over all clients.
        rate: f64,
    },
}

/// One measured run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The scenario this run belongs to, as named in results and tables.
    pub label: String,
    /// The operation mix.
    pub mix: Mix,
    /// How keys are drawn.
    pub keys: KeyDistribution,
    /// Keys `0..key_count` are used.
    pub key_count: u64,
    /// The value every write sends.
    pub value: Bytes,
    /// Concurrent clients (open loop: connections).
    pub clients: usize,
    /// Closed or open loop.
    pub pacing: Pacing,
    /// How long requests are sent for.
    pub duration: Duration,
    /// How long requests still in flight at the end may take before they are abandoned.
    pub grace: Duration,
    /// Quorums for quorumkv.
    pub quorum: Quorum,
    /// Which repetition of the scenario this is (0-based).
    pub repeat: u32,
    /// Seed of the clients' random choices.
    pub seed: u64,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
}

/// Counts shared with the progress bar.
#[derive(Debug, Default)]
struct Live {
    ops: AtomicU64,
    errors: AtomicU64,
}

/// What one client task needs, shared by all of them.
#[derive(Debug)]
struct Plan {
    target: Arc<Target>,
    spec: RunSpec,
    chooser: KeyChooser,
    live: Live,
}

/// Runs `spec` against `target` and returns its result.
pub async fn run(target: Arc<Target>, spec: RunSpec) -> anyhow::Result<RunResult> {
    anyhow::ensure!(spec.clients > 0, "a run needs at least one client");
    if let Pacing::Open { rate } = spec.pacing {
        anyhow::ensure!(rate.is_finite() && rate > 0.0, "the rate must be positive");
    }
    let plan = Arc::new(Plan {
        chooser: KeyChooser::new(spec.keys, spec.key_count),
        target,
        live: Live::default(),
        spec,
    });
    let started = Instant::now();
    let deadline = started + plan.spec.duration;
    let hard_stop = deadline + plan.spec.grace;
    let progress = plan.spec.progress.then(|| progress_bar(&plan, started));

    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..plan.spec.clients {
        let plan = Arc::clone(&plan);
        tasks.spawn(async move {
            match plan.spec.pacing {
                Pacing::Closed => closed_client(&plan, client, deadline, hard_stop).await,
                Pacing::Open { rate } => open_client(&plan, client, rate, started, hard_stop).await,
            }
        });
    }
    let mut merged = Recorder::default();
    while let Some(recorder) = tasks.join_next().await {
        merged.merge(&recorder?);
    }
    let elapsed = started.elapsed();
    if let Some((bar, ticker)) = progress {
        ticker.abort();
        bar.finish_and_clear();
    }
    Ok(RunResult::new(
        &plan.spec,
        plan.target.kind(),
        &merged,
        elapsed,
    ))
}

async fn closed_client(
    plan: &Plan,
    client: usize,
    deadline: Instant,
    hard_stop: Instant,
) -> Recorder {
    let mut rng = client_rng(plan.spec.seed, client);
    let mut recorder = Recorder::default();
    let mut endpoint = client;
    while Instant::now() < deadline {
        let op = plan.spec.mix.choose(&mut rng);
        let key = plan.chooser.next(&mut rng);
        let sent = Instant::now();
        let Ok(result) = timeout_at(hard_stop, execute(plan, op, endpoint, key)).await else {
            break;
        };
        recorder.record(op, sent.elapsed(), &result);
        plan.live.count(&result);
        endpoint = endpoint.wrapping_add(1);
    }
    recorder
}

async fn open_client(
    plan: &Plan,
    client: usize,
    rate: f64,
    started: Instant,
    hard_stop: Instant,
) -> Recorder {
    let mut rng = client_rng(plan.spec.seed, client);
    let mut recorder = Recorder::default();
    let schedule = Schedule::new(rate, plan.spec.clients, client);
    let mut endpoint = client;
    let mut sent = 0u64;
    loop {
        let offset = schedule.intended(sent);
        if offset >= plan.spec.duration {
            break;
        }
        let intended = started + offset;
        // Behind schedule: the previous answer came after this request was due, so the
        // target made it wait, and its latency starts at the intended time. On schedule:
        // the connection was free, and the latency starts when the timer let it go (tokio's
        // timers fire up to a millisecond late; that lag is the generator's, not the
        // target's).
        let behind = Instant::now() >= intended;
        tokio::time::sleep_until(intended).await;
        let start = if behind { intended } else { Instant::now() };
        let op = plan.spec.mix.choose(&mut rng);
        let key = plan.chooser.next(&mut rng);
        let Ok(result) = timeout_at(hard_stop, execute(plan, op, endpoint, key)).await else {
            break;
        };
        recorder.record(op, start.elapsed(), &result);
        plan.live.count(&result);
        endpoint = endpoint.wrapping_add(1);
        sent += 1;
    }
    recorder.not_sent = schedule.due_before(plan.spec.duration).saturating_sub(sent);
    recorder
}

/// Sends one operation; a read-modify-write writes back with the context of its read.
async fn execute(
    plan: &Plan,
    op: OpKind,
    endpoint: usize,
    key: u64,
) -> Result<Option<Found>, ErrorKind> {
    let target = &plan.target;
    let quorum = &plan.spec.quorum;
    match op {
        OpKind::Read => target
            .read(endpoint, key, quorum)
            .await
            .map(|read| Some(read.found)),
        OpKind::Write => target
            .write(endpoint, key, &plan.spec.value, None, quorum)
            .await
            .map(|()| None),
        OpKind::ReadModifyWrite => {
            let read = target.read(endpoint, key, quorum).await?;
            target
                .write(endpoint, key, &plan.spec.value, read.context, quorum)
                .await?;
            Ok(Some(read.found))
        }
    }
}

fn client_rng(seed: u64, client: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (client as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

impl Live {
    fn count(&self, result: &Result<Option<Found>, ErrorKind>) {
        let counter = if result.is_ok() {
            &self.ops
        } else {
            &self.errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A bar over the run's duration with live throughput, redrawn four times a second by a
/// ticker task. indicatif draws nothing when stderr is not a terminal.
fn progress_bar(plan: &Arc<Plan>, started: Instant) -> (ProgressBar, tokio::task::JoinHandle<()>) {
    let total = u64::try_from(plan.spec.duration.as_millis()).unwrap_or(u64::MAX);
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{prefix:28} [{bar:24}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(plan.spec.label.clone());
    let ticker = {
        let bar = bar.clone();
        let plan = Arc::clone(plan);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(250));
            let (mut last_ops, mut last_at) = (0u64, started);
            loop {
                interval.tick().await;
                let now = Instant::now();
                let ops = plan.live.ops.load(Ordering::Relaxed);
                let errors = plan.live.errors.load(Ordering::Relaxed);
                let window = now.duration_since(last_at).as_secs_f64().max(1e-3);
                let rate = (ops - last_ops) as f64 / window;
                (last_ops, last_at) = (ops, now);
                bar.set_position(
                    u64::try_from(now.duration_since(started).as_millis()).unwrap_or(total),
                );
                bar.set_message(format!("{rate:>8.0} ops/s  {ops} ok  {errors} errors"));
            }
        })
    };
    (bar, ticker)
}
