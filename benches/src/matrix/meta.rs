//! What a matrix run was: the command, the date, the machine, the settings.
//!
//! Figures mean little without the machine they were measured on, so the description is
//! taken from the machine itself when the matrix starts and kept beside the results.

use serde::{Deserialize, Serialize};

/// The description of one matrix run, saved as `meta.json` beside the results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The command that produced the results, as the reader should type it.
    pub command: String,
    /// `quick` or `full`.
    pub profile: String,
    /// When the matrix started, Unix seconds.
    pub unix_time: u64,
    /// Cores, processor, memory and operating system.
    pub machine: String,
    /// Repetitions of each main scenario.
    pub repeats: u32,
    /// Seconds of each main run.
    pub seconds: f64,
    /// Concurrent clients of the main runs.
    pub clients: usize,
    /// Keys of the main runs.
    pub key_count: u64,
    /// Value size of the main runs.
    pub value_bytes: usize,
    /// The etcd version the members reported, if etcd was measured.
    pub etcd_version: Option<String>,
    /// The version of this load generator (the workspace version).
    pub quorumkv_version: String,
    /// `/proc/loadavg` when the matrix started: other work on the machine skews figures.
    #[serde(default)]
    pub load_average: Option<String>,
}

/// A one-line description of this machine, from `/proc` and `/etc/os-release`.
pub fn describe_machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cpu = read("/proc/cpuinfo")
        .and_then(|text| field(&text, "model name"))
        .unwrap_or_else(|| "unknown processor".to_string());
    let memory = read("/proc/meminfo")
        .and_then(|text| field(&text, "MemTotal"))
        .and_then(|kb| kb.trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map(|kb| format!("{} GiB", (kb + (1 << 19)) >> 20))
        .unwrap_or_else(|| "unknown memory".to_string());
    let os = read("/etc/os-release")
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    let kernel = read("/proc/sys/kernel/osrelease")
        .map(|k| format!(", Linux {}", k.trim()))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {memory}, {os}{kernel}")
}

/// The 1, 5 and 15-minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> Option<String> {
    let text = read("/proc/loadavg")?;
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    (fields.len() == 3).then(|| fields.join(" "))
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The value of the first `name: value` line of `text`.
fn field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_proc_style_text() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t: fpu\n";
        assert_eq!(field(cpuinfo, "model name").as_deref(), Some("AMD EPYC"));
        assert_eq!(field(cpuinfo, "missing"), None);
        assert!(describe_machine().contains("cores"));
    }
}
