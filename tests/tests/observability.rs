//! The metric names stay in step: every metric the code records is documented in
//! `docs/metrics.md` with its type, and the Grafana dashboard and the status page ask only
//! for documented metrics. A renamed metric fails here, not on an operator's empty graph.
//!
//! And the metrics say what happened, on a real cluster: latency is recorded under the
//! operation and the quorum each request waited for, RocksDB's figures follow the data,
//! and the runtime has the threads it was given.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quorumkv_tests::Cluster;
use reqwest::StatusCode;

/// Metrics the status page shows once they exist (documented as not exported yet).
const NOT_YET_EXPORTED: &[&str] = &[];

#[test]
fn every_recorded_metric_is_documented_with_its_type() {
    let recorded = recorded_metrics();
    let documented = documented_metrics();
    assert!(recorded.len() >= 10, "found only {recorded:?}");
    for (name, kind) in &recorded {
        assert_eq!(
            documented.get(name),
            Some(kind),
            "{name} ({kind}) is recorded but docs/metrics.md says {:?}",
            documented.get(name)
        );
    }
    for name in documented.keys() {
        assert!(
            recorded.contains_key(name),
            "docs/metrics.md lists {name}, which nothing records"
        );
    }
}

#[test]
fn the_dashboard_and_the_status_page_ask_only_for_documented_metrics() {
    let documented = documented_metrics();
    let dashboard = read("deploy/grafana/quorumkv.json");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut queries = Vec::new();
    collect_exprs(&dashboard, &mut queries);
    assert!(
        queries.len() >= 10,
        "the dashboard has {} queries",
        queries.len()
    );
    let page = read("crates/http-api/src/status.html");
    for (source, text) in queries
        .iter()
        .map(|q| ("deploy/grafana/quorumkv.json", q.as_str()))
        .chain([("crates/http-api/src/status.html", page.as_str())])
    {
        for name in metric_names(text) {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|b| documented.get(*b).map(String::as_str) == Some("histogram"))
                })
                .unwrap_or(&name);
            assert!(
                documented.contains_key(base) || NOT_YET_EXPORTED.contains(&base),
                "{source} asks for {name}, which docs/metrics.md does not list"
            );
        }
    }
}

#[test]
fn key_requests_are_timed_by_operation_and_the_quorum_they_resolved_to() {
    let cluster = Cluster::start(3);
    let key = |i: u8| [b'k', i];
    for i in 0..5 {
        let response = cluster.put(0, "latency", &key(i), b"v", "w=2", None);
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    for (i, query) in [(0, "r=1"), (1, "r=1"), (2, "r=1"), (3, "r=1")] {
        assert_eq!(
            cluster.get(0, "latency", &key(i), query).status(),
            StatusCode::OK
        );
    }
    // `quorum` and the bucket's default (a majority of n = 3) both resolve to 2.
    for (i, query) in [(0, "r=2"), (1, "r=2"), (2, "r=quorum"), (3, "")] {
        assert_eq!(
            cluster.get(0, "latency", &key(i), query).status(),
            StatusCode::OK
        );
    }
    let deleted = cluster.delete(0, "latency", &key(4), "w=all", None);
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    // Neither waits for a quorum: an r over n is refused, a local read asks no replica.
    let refused = cluster.get(0, "latency", &key(0), "r=4");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let local = cluster.get(0, "latency", &key(0), "local=true");
    assert_eq!(local.status(), StatusCode::OK);

    let metrics = scrape(&cluster, 0);
    let count = |op: &str, quorum: &str| {
        let labels = [format!("op=\"{op}\""), format!("quorum=\"{quorum}\"")];
        sample(&metrics, "quorumkv_request_duration_seconds_count", &labels)
    };
    assert_eq!(count("put", "2"), Some(5.0), "{metrics}");
    assert_eq!(count("get", "1"), Some(4.0), "{metrics}");
    assert_eq!(count("get", "2"), Some(4.0), "{metrics}");
    assert_eq!(count("delete", "3"), Some(1.0), "{metrics}");
    assert_eq!(
        cluster.metric(0, "quorumkv_request_duration_seconds_count", ""),
        14.0,
        "no other label set was recorded"
    );
    let put_seconds = sample(
        &metrics,
        "quorumkv_request_duration_seconds_sum",
        &["op=\"put\"".to_string()],
    )
    .unwrap();
    assert!(
        put_seconds > 0.0 && put_seconds < 5.0 * 5.0,
        "5 puts took {put_seconds} s in all"
    );
    // The node that coordinated nothing recorded nothing.
    assert_eq!(
        cluster.metric(1, "quorumkv_request_duration_seconds_count", ""),
        0.0
    );
}

#[test]
fn rocksdb_figures_follow_the_data_into_the_memtable_then_into_sst_files() {
    const KEYS: u8 = 50;
    // Values that outgrow the memory an empty memtable already counts (its first block,
    // 1 MiB with the hash index), so that the data shows in the figures.
    const VALUE_BYTES: usize = 64 << 10;
    const BLOCK_BYTES: f64 = (1 << 20) as f64;
    // A block cache smaller than the default, to see the flag reach RocksDB.
    let mut cluster = Cluster::start_with(3, &["--block-cache-mib", "16"]);
    let data = ["cf=\"records\"".to_string()];
    let empty = sample(
        &scrape(&cluster, 0),
        "quorumkv_rocksdb_memtable_bytes",
        &data,
    )
    .unwrap();
    for i in 0..KEYS {
        // Random bytes, so LZ4 cannot shrink the SST files below the data's size.
        let value: Vec<u8> = (0..VALUE_BYTES).map(|_| rand::random()).collect();
        let response = cluster.put(0, "engine", &[b'k', i], &value, "w=3", None);
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let written = scrape(&cluster, 0);
    let memtable = sample(&written, "quorumkv_rocksdb_memtable_bytes", &data).unwrap();
    let data_bytes = f64::from(KEYS) * VALUE_BYTES as f64;
    // The figure counts whole blocks: the empty memtable's first one took some data.
    assert!(
        memtable >= data_bytes && memtable - empty >= data_bytes - BLOCK_BYTES,
        "memtable {empty} B empty, {memtable} B written: {written}"
    );
    // Nothing filled a 64 MiB memtable, so nothing was flushed yet.
    assert_eq!(
        sample(&written, "quorumkv_rocksdb_sst_bytes", &data),
        Some(0.0)
    );
    assert!(sample(&written, "quorumkv_rocksdb_estimated_keys", &[]).unwrap() >= f64::from(KEYS));
    assert_eq!(
        sample(&written, "quorumkv_rocksdb_write_stopped", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&written, "quorumkv_rocksdb_delayed_write_rate_bytes", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&written, "quorumkv_rocksdb_pending_compaction_bytes", &data),
        Some(0.0)
    );
    assert!(sample(&written, "quorumkv_rocksdb_running_compactions", &[]).is_some());
    assert_eq!(
        sample(&written, "quorumkv_rocksdb_block_cache_capacity_bytes", &[]),
        Some(f64::from(16u32 << 20))
    );
    // No SST file is open yet, so no index or filter block is held.
    assert_eq!(
        sample(&written, "quorumkv_rocksdb_table_readers_bytes", &data),
        Some(0.0)
    );
    for kind in ["delayed", "stopped"] {
        let labels = [data[0].clone(), format!("kind=\"{kind}\"")];
        assert_eq!(
            sample(&written, "quorumkv_rocksdb_write_stalls_total", &labels),
            Some(0.0),
            "{kind}"
        );
    }

    // A graceful stop flushes the memtables: after the restart the data is in SST files.
    assert!(cluster.terminate(0).success());
    cluster.restart(0);
    let restarted = scrape(&cluster, 0);
    let sst = sample(&restarted, "quorumkv_rocksdb_sst_bytes", &data).unwrap();
    assert!(
        sst >= data_bytes && sst < 4.0 * data_bytes,
        "SST {sst} B for {data_bytes} B of values: {restarted}"
    );
    let memtable = sample(&restarted, "quorumkv_rocksdb_memtable_bytes", &data).unwrap();
    assert!(
        memtable < data_bytes,
        "memtable {memtable} B after the flush"
    );
    assert_eq!(
        sample(&restarted, "quorumkv_rocksdb_estimated_keys", &[]),
        Some(f64::from(KEYS))
    );
    // The flushed file is open, its index and filter in memory; reading every key back
    // brings its blocks into the cache.
    assert!(sample(&restarted, "quorumkv_rocksdb_table_readers_bytes", &data).unwrap() > 0.0);
    for i in 0..KEYS {
        let response = cluster.get(0, "engine", &[b'k', i], "r=1");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let read = scrape(&cluster, 0);
    assert!(sample(&read, "quorumkv_rocksdb_block_cache_usage_bytes", &[]).unwrap() > 0.0);
}

#[test]
fn the_worker_threads_are_one_per_core_unless_the_flag_says_otherwise() {
    // Node 0 with the default, node 1 with one thread.
    let cluster = Cluster::start_each(2, |i| {
        if i == 1 {
            vec!["--worker-threads".into(), "1".into()]
        } else {
            Vec::new()
        }
    });
    // The nodes run on this machine, under the same limits as this test.
    let cores = std::thread::available_parallelism().unwrap().get();
    let default = sample(&scrape(&cluster, 0), "quorumkv_runtime_worker_threads", &[]);
    assert_eq!(default, Some(cores as f64));
    let given = sample(&scrape(&cluster, 1), "quorumkv_runtime_worker_threads", &[]);
    assert_eq!(given, Some(1.0));
}

/// The `/metrics` page of node `i`.
fn scrape(cluster: &Cluster, i: usize) -> String {
    cluster
        .http()
        .get(format!("{}/metrics", cluster.url(i)))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// The value of the one sample of `name` whose labels include every one of `labels`
/// (`key="value"`), or `None` when there is none; more than one fails the test.
fn sample(metrics: &str, name: &str, labels: &[String]) -> Option<f64> {
    let values: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|label| l.contains(label.as_str())))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(values.len() <= 1, "{name} {labels:?} matches {values:?}");
    values.first().copied()
}

fn root() -> PathBuf {
    quorumkv_tests::workspace_root()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

/// `name -> counter|gauge|histogram` from the `metrics::*!("name", ...)` calls in crates/.
fn recorded_metrics() -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for kind in ["counter", "gauge", "histogram"] {
            let call = format!("{kind}!(");
            for (at, _) in text.match_indices(&call) {
                let rest = text[at + call.len()..].trim_start();
                let Some(rest) = rest.strip_prefix('"') else {
                    continue;
                };
                let name = &rest[..rest.find('"').unwrap()];
                if let Some(other) = found.insert(name.to_string(), kind.to_string()) {
                    assert_eq!(other, kind, "{name} is recorded as {other} and {kind}");
                }
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `name -> type` from the tables of docs/metrics.md (`| \`name\` | type | ...`).
fn documented_metrics() -> BTreeMap<String, String> {
    read("docs/metrics.md")
        .lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let name = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = cells.next()?;
            Some((name.to_string(), kind.to_string()))
        })
        .filter(|(name, _)| name.starts_with("quorumkv_"))
        .collect()
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Every `quorumkv_[a-z_]+` token of a text.
fn metric_names(text: &str) -> Vec<String> {
    text.match_indices("quorumkv_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect::<String>()
        })
        .collect()
}
