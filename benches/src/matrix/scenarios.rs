//! What the matrix measures: the profiles, the servers, and the scenarios by label.
//!
//! Labels are stable names: results carry them, and the report looks scenarios up by them
//! to build its tables and the goal ratios, so renaming one orphans older results.

use clap::ValueEnum;

use crate::workloads::{KeyDistribution, Mix};

/// How much to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// One repetition of short runs, no value-size scale: a couple of minutes.
    Quick,
    /// Five repetitions of 10-second runs, value sizes up to 100 KiB. Runs on a shared
    /// 2-core machine differ by up to a third; the median of five settles a goal near its
    /// threshold better than that of three.
    Full,
}

/// The knobs a profile sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Repetitions of the main scenarios.
    pub repeats: u32,
    /// Seconds of a main run.
    pub main_seconds: f64,
    /// Seconds of an operation-mix run.
    pub mix_seconds: f64,
    /// Seconds of an open-loop run.
    pub open_seconds: f64,
    /// Seconds of a sweep point.
    pub sweep_seconds: f64,
    /// Client counts of the sweep, besides the main count.
    pub sweep_clients: Vec<usize>,
    /// Open-loop rates, as fractions of the closed-loop throughput.
    pub open_fractions: Vec<f64>,
    /// Value sizes of the scale rows (empty: none).
    pub scale_sizes: Vec<usize>,
    /// Seconds of a scale run.
    pub scale_seconds: f64,
}

impl Profile {
    /// The plan of this profile.
    pub fn plan(self) -> Plan {
        match self {
            Profile::Quick => Plan {
                repeats: 1,
                main_seconds: 4.0,
                mix_seconds: 3.0,
                open_seconds: 4.0,
                sweep_seconds: 2.0,
                sweep_clients: vec![1, 8, 64],
                open_fractions: vec![0.5],
                scale_sizes: Vec::new(),
                scale_seconds: 0.0,
            },
            Profile::Full => Plan {
                repeats: 5,
                main_seconds: 10.0,
                mix_seconds: 5.0,
                open_seconds: 10.0,
                sweep_seconds: 5.0,
                sweep_clients: vec![1, 4, 16, 64],
                open_fractions: vec![0.5, 0.8],
                scale_sizes: vec![1024, 10 * 1024, 100 * 1024],
                scale_seconds: 5.0,
            },
        }
    }

    /// The name used in results.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Full => "full",
        }
    }
}

/// Which server a scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// The quorumkv cluster started with `--sync none`.
    Quorumkv,
    /// The quorumkv cluster started with `--sync always`.
    QuorumkvSync,
    /// The etcd cluster.
    Etcd,
    /// The ceiling server.
    Ceiling,
}

/// One measured situation: a server, an operation mix, quorums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// The label in results (stable: the report looks scenarios up by it).
    pub label: &'static str,
    /// How tables name it.
    pub title: &'static str,
    /// Against what.
    pub server: Server,
    /// What.
    pub mix: Mix,
    /// Which keys.
    pub keys: KeyDistribution,
    /// Read quorum.
    pub r: &'static str,
    /// Write quorum.
    pub w: &'static str,
}

const fn scenario(
    label: &'static str,
    title: &'static str,
    server: Server,
    mix: Mix,
    r: &'static str,
    w: &'static str,
) -> Scenario {
    Scenario {
        label,
        title,
        server,
        mix,
        keys: KeyDistribution::Uniform,
        r,
        w,
    }
}

const fn zipfian(mut s: Scenario) -> Scenario {
    s.keys = KeyDistribution::Zipfian;
    s
}

/// Labels of the scenarios the report compares.
pub mod labels {
    /// quorumkv writes at w=2, `--sync none`.
    pub const WRITE_W2: &str = "qkv.write.w2";
    /// quorumkv reads at r=2.
    pub const READ_R2: &str = "qkv.read.r2";
    /// quorumkv writes at w=1.
    pub const WRITE_W1: &str = "qkv.write.w1";
    /// quorumkv reads at r=1.
    pub const READ_R1: &str = "qkv.read.r1";
    /// quorumkv writes at w=2, `--sync always`.
    pub const WRITE_W2_SYNC: &str = "qkv-sync.write.w2";
    /// etcd writes.
    pub const ETCD_WRITE: &str = "etcd.write";
    /// etcd reads.
    pub const ETCD_READ: &str = "etcd.read";
    /// Ceiling PUTs.
    pub const CEILING_WRITE: &str = "ceiling.write";
    /// Ceiling GETs.
    pub const CEILING_READ: &str = "ceiling.read";
}

/// The scenarios of the main table, in the order they run.
pub const MAIN: [Scenario; 9] = [
    scenario(
        labels::WRITE_W2,
        "quorumkv write, w=2",
        Server::Quorumkv,
        Mix::Write,
        "2",
        "2",
    ),
    scenario(
        labels::WRITE_W1,
        "quorumkv write, w=1",
        Server::Quorumkv,
        Mix::Write,
        "1",
        "1",
    ),
    scenario(
        labels::WRITE_W2_SYNC,
        "quorumkv write, w=2, --sync always",
        Server::QuorumkvSync,
        Mix::Write,
        "2",
        "2",
    ),
    scenario(
        labels::ETCD_WRITE,
        "etcd write",
        Server::Etcd,
        Mix::Write,
        "-",
        "-",
    ),
    scenario(
        labels::CEILING_WRITE,
        "ceiling PUT",
        Server::Ceiling,
        Mix::Write,
        "-",
        "-",
    ),
    scenario(
        labels::READ_R2,
        "quorumkv read, r=2",
        Server::Quorumkv,
        Mix::Read,
        "2",
        "2",
    ),
    scenario(
        labels::READ_R1,
        "quorumkv read, r=1",
        Server::Quorumkv,
        Mix::Read,
        "1",
        "1",
    ),
    scenario(
        labels::ETCD_READ,
        "etcd read (linearizable)",
        Server::Etcd,
        Mix::Read,
        "-",
        "-",
    ),
    scenario(
        labels::CEILING_READ,
        "ceiling GET",
        Server::Ceiling,
        Mix::Read,
        "-",
        "-",
    ),
];

/// The operation mixes.
pub const MIXES: [Scenario; 8] = [
    scenario(
        "qkv.ycsb-a",
        "quorumkv YCSB A (50/50), r=w=2",
        Server::Quorumkv,
        Mix::YcsbA,
        "2",
        "2",
    ),
    scenario(
        "qkv.ycsb-b",
        "quorumkv YCSB B (95/5), r=w=2",
        Server::Quorumkv,
        Mix::YcsbB,
        "2",
        "2",
    ),
    scenario(
        "qkv.rmw",
        "quorumkv read-modify-write, r=w=2",
        Server::Quorumkv,
        Mix::Rmw,
        "2",
        "2",
    ),
    zipfian(scenario(
        "qkv.ycsb-a.zipf",
        "quorumkv YCSB A, Zipfian keys",
        Server::Quorumkv,
        Mix::YcsbA,
        "2",
        "2",
    )),
    scenario(
        "etcd.ycsb-a",
        "etcd YCSB A (50/50)",
        Server::Etcd,
        Mix::YcsbA,
        "-",
        "-",
    ),
    scenario(
        "etcd.ycsb-b",
        "etcd YCSB B (95/5)",
        Server::Etcd,
        Mix::YcsbB,
        "-",
        "-",
    ),
    scenario(
        "etcd.rmw",
        "etcd read-modify-write",
        Server::Etcd,
        Mix::Rmw,
        "-",
        "-",
    ),
    zipfian(scenario(
        "etcd.ycsb-a.zipf",
        "etcd YCSB A, Zipfian keys",
        Server::Etcd,
        Mix::YcsbA,
        "-",
        "-",
    )),
];

/// The scenarios measured at other concurrencies and value sizes.
pub const SWEPT: [&str; 6] = [
    labels::WRITE_W2,
    labels::READ_R2,
    labels::ETCD_WRITE,
    labels::ETCD_READ,
    labels::CEILING_WRITE,
    labels::CEILING_READ,
];

/// The scenarios run in the open loop.
pub const OPEN: [&str; 2] = [labels::WRITE_W2, labels::READ_R2];

/// Finds a scenario of [`MAIN`] or [`MIXES`] by label.
pub fn find(label: &str) -> Option<&'static Scenario> {
    MAIN.iter().chain(MIXES.iter()).find(|s| s.label == label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_is_unique_and_found() {
        let mut labels: Vec<_> = MAIN.iter().chain(MIXES.iter()).map(|s| s.label).collect();
        labels.sort_unstable();
        let count = labels.len();
        labels.dedup();
        assert_eq!(labels.len(), count, "duplicate scenario label");
        for label in SWEPT.iter().chain(OPEN.iter()) {
            assert!(find(label).is_some(), "{label} is not a scenario");
        }
    }
}
