//! The metric names stay in step: every metric the code records is documented in
//! `docs/metrics.md` with its type, and the Grafana dashboard and the status page ask only
//! for documented metrics. A renamed metric fails here, not on an operator's empty graph.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Metrics the status page shows once they exist (documented as not exported yet).
const NOT_YET_EXPORTED: &[&str] = &["quorumkv_transfers_pending"];

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

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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
