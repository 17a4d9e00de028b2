//! Results: one record per run, their JSON form, and the medians across repetitions.
//!
//! A run's [`RunResult`] is self-describing (target, workload, quorums, sizes, pacing) and
//! is appended as one JSON line to a results file, so that a matrix can be re-summarised,
//! plotted or compared later without being run again. [`summarize`] groups the runs of a
//! scenario (same label, clients, value size and rate) and takes the median of each figure
//! separately: with three repetitions one disturbed run (a compaction, a neighbour's build)
//! moves no figure, whereas a mean would carry it into all of them.

pub mod markdown;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::runner::recorder::Recorder;
use crate::runner::{Pacing, RunSpec};
use crate::targets::TargetKind;

/// Latency figures of a set of operations, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Operations timed.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Latency {
    /// The figures of a microsecond histogram.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            mean: histogram.mean() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// The outcome of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The scenario.
    pub label: String,
    /// `quorumkv`, `etcd` or `ceiling`.
    pub target: String,
    /// The operation mix.
    pub workload: String,
    /// `uniform` or `zipfian`.
    pub key_distribution: String,
    /// Keys in use.
    pub key_count: u64,
    /// Bytes per written value.
    pub value_bytes: usize,
    /// Concurrent clients (open loop: connections).
    pub clients: usize,
    /// Open loop: the intended rate in requests per second; closed loop: none.
    pub rate: Option<f64>,
    /// Read quorum sent (quorumkv).
    pub r: String,
    /// Write quorum sent (quorumkv).
    pub w: String,
    /// Repetition of the scenario, from 0.
    pub repeat: u32,
    /// Wall-clock seconds from the first send to the last answer.
    pub seconds: f64,
    /// Successful operations.
    pub ops: u64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Failed operations.
    pub error_count: u64,
    /// Failed operations by kind.
    pub errors: BTreeMap<String, u64>,
    /// What reads found.
    pub outcomes: BTreeMap<String, u64>,
    /// Latency of every successful operation.
    pub latency_ms: Latency,
    /// Latency by operation kind.
    pub per_op: BTreeMap<String, Latency>,
}

impl RunResult {
    /// The result of `spec` run against a `target` for `elapsed`, from the merged recorder.
    pub fn new(spec: &RunSpec, target: TargetKind, recorder: &Recorder, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let mut errors = recorder.errors.clone();
        if recorder.not_sent > 0 {
            *errors.entry("not_sent".to_string()).or_default() += recorder.not_sent;
        }
        Self {
            label: spec.label.clone(),
            target: target.name().to_string(),
            workload: spec.mix.name().to_string(),
            key_distribution: match spec.keys {
                crate::workloads::KeyDistribution::Uniform => "uniform",
                crate::workloads::KeyDistribution::Zipfian => "zipfian",
            }
            .to_string(),
            key_count: spec.key_count,
            value_bytes: spec.value.len(),
            clients: spec.clients,
            rate: match spec.pacing {
                Pacing::Closed => None,
                Pacing::Open { rate } => Some(rate),
            },
            r: spec.quorum.r.clone(),
            w: spec.quorum.w.clone(),
            repeat: spec.repeat,
            seconds,
            ops: recorder.ok(),
            ops_per_sec: recorder.ok() as f64 / seconds,
            error_count: recorder.error_count(),
            errors,
            outcomes: recorder
                .outcomes
                .iter()
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect(),
            latency_ms: Latency::of(&recorder.all),
            per_op: recorder
                .per_op
                .iter()
                .map(|(op, h)| (op.name().to_string(), Latency::of(h)))
                .collect(),
        }
    }

    /// One line of text for the terminal.
    pub fn one_line(&self) -> String {
        let l = &self.latency_ms;
        let rate = self
            .rate
            .map(|r| format!(" rate={r:.0}/s"))
            .unwrap_or_default();
        format!(
            "{:<30} c={:<3}{rate} {:>9.0} ops/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p999 {:>6.2} ms  max {:>7.2} ms  errors {}{}",
            self.label,
            self.clients,
            self.ops_per_sec,
            l.p50,
            l.p99,
            l.p999,
            l.max,
            self.error_count,
            if self.errors.is_empty() {
                String::new()
            } else {
                format!(" {:?}", self.errors)
            }
        )
    }
}

/// Appends `result` as one JSON line to `path`.
pub fn append(path: &Path, result: &RunResult) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    writeln!(file, "{}", serde_json::to_string(result)?)?;
    Ok(())
}

/// Reads every result of a JSON-lines file.
pub fn load(path: &Path) -> anyhow::Result<Vec<RunResult>> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut results = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        results.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{} line {}", path.display(), n + 1))?,
        );
    }
    Ok(results)
}

/// The medians of the repetitions of one scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The scenario.
    pub label: String,
    /// The target kind.
    pub target: String,
    /// The operation mix.
    pub workload: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Bytes per written value.
    pub value_bytes: usize,
    /// Open-loop rate, if any.
    pub rate: Option<f64>,
    /// Repetitions summarised.
    pub runs: usize,
    /// Median throughput.
    pub ops_per_sec: f64,
    /// Median of the runs' medians.
    pub p50: f64,
    /// Median of the runs' 99th percentiles.
    pub p99: f64,
    /// Median of the runs' 99.9th percentiles.
    pub p999: f64,
    /// Median of the runs' maxima.
    pub max: f64,
    /// Failed operations over all repetitions.
    pub errors: u64,
    /// Failed operations by kind, over all repetitions.
    pub error_kinds: BTreeMap<String, u64>,
    /// What reads found, over all repetitions.
    pub outcomes: BTreeMap<String, u64>,
}

/// Groups runs by scenario (label, clients, value size, rate) and takes medians, in the
/// order each scenario first appears.
pub fn summarize(results: &[RunResult]) -> Vec<Summary> {
    let mut groups: Vec<Vec<&RunResult>> = Vec::new();
    for result in results {
        let same = |other: &&RunResult| {
            other.label == result.label
                && other.clients == result.clients
                && other.value_bytes == result.value_bytes
                && other.rate.map(f64::to_bits) == result.rate.map(f64::to_bits)
        };
        match groups.iter_mut().find(|g| g.first().is_some_and(same)) {
            Some(group) => group.push(result),
            None => groups.push(vec![result]),
        }
    }
    groups
        .into_iter()
        .filter_map(|group| {
            let first = *group.first()?;
            let figure = |f: fn(&RunResult) -> f64| median(group.iter().map(|r| f(r)).collect());
            let mut error_kinds = BTreeMap::new();
            let mut outcomes = BTreeMap::new();
            for run in &group {
                for (kind, count) in &run.errors {
                    *error_kinds.entry(kind.clone()).or_default() += count;
                }
                for (outcome, count) in &run.outcomes {
                    *outcomes.entry(outcome.clone()).or_default() += count;
                }
            }
            Some(Summary {
                label: first.label.clone(),
                target: first.target.clone(),
                workload: first.workload.clone(),
                clients: first.clients,
                value_bytes: first.value_bytes,
                rate: first.rate,
                runs: group.len(),
                ops_per_sec: figure(|r| r.ops_per_sec),
                p50: figure(|r| r.latency_ms.p50),
                p99: figure(|r| r.latency_ms.p99),
                p999: figure(|r| r.latency_ms.p999),
                max: figure(|r| r.latency_ms.max),
                errors: group.iter().map(|r| r.error_count).sum(),
                error_kinds,
                outcomes,
            })
        })
        .collect()
}

/// The median of `values` (the mean of the two middle ones for an even count; 0 for none).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(label: &str, clients: usize, ops_per_sec: f64, p99: f64, errors: u64) -> RunResult {
        RunResult {
            label: label.into(),
            target: "quorumkv".into(),
            workload: "write".into(),
            key_distribution: "uniform".into(),
            key_count: 100,
            value_bytes: 100,
            clients,
            rate: None,
            r: "2".into(),
            w: "2".into(),
            repeat: 0,
            seconds: 1.0,
            ops: ops_per_sec as u64,
            ops_per_sec,
            error_count: errors,
            errors: if errors > 0 {
                BTreeMap::from([("timeout".to_string(), errors)])
            } else {
                BTreeMap::new()
            },
            outcomes: BTreeMap::new(),
            latency_ms: Latency {
                p99,
                ..Latency::default()
            },
            per_op: BTreeMap::new(),
        }
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![7.0]), 7.0);
        assert_eq!(median(Vec::new()), 0.0);
    }

    /// One disturbed repetition moves no figure; errors add up; scenarios keep their order.
    #[test]
    fn summaries_take_the_median_of_each_scenario() {
        let results = vec![
            run("write", 32, 9000.0, 8.0, 0),
            run("read", 32, 12000.0, 5.0, 0),
            run("write", 32, 1000.0, 90.0, 2),
            run("write", 32, 9500.0, 9.0, 0),
            run("write", 1, 500.0, 1.0, 0),
        ];
        let summaries = summarize(&results);
        let keys: Vec<_> = summaries
            .iter()
            .map(|s| (s.label.as_str(), s.clients))
            .collect();
        assert_eq!(keys, [("write", 32), ("read", 32), ("write", 1)]);
        let write = &summaries[0];
        assert_eq!(write.runs, 3);
        assert_eq!(write.ops_per_sec, 9000.0);
        assert_eq!(write.p99, 9.0);
        assert_eq!(write.errors, 2);
        assert_eq!(write.error_kinds.get("timeout"), Some(&2));
    }

    #[test]
    fn results_round_trip_through_json_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("results.jsonl");
        let first = run("write", 32, 9000.0, 8.0, 1);
        let second = run("read", 32, 12000.0, 5.0, 0);
        append(&path, &first).expect("append");
        append(&path, &second).expect("append");
        assert_eq!(load(&path).expect("load"), vec![first, second]);
    }
}
