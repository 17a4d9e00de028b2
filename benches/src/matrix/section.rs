//! The generated section of BENCHMARKS.md, and the plots it points to.
//!
//! The section opens with the command, date and machine, then the main table, then the
//! issue's goals as ratios against etcd and the ceiling (reported, never asserted: a
//! benchmark that fails a build on a noisy shared machine teaches people to ignore it),
//! then the mixes, the open loop, the concurrency sweep and the value sizes when measured.

use std::path::Path;

use super::labels::*;
use super::meta::Meta;
use super::{find, MAIN, MIXES, OPEN, SWEPT};
use crate::plot::{self, Point, Series};
use crate::report::markdown::{ms, ops, percent, percent_fine, ratio, ratio_fine, table, utc_date};
use crate::report::Summary;

/// One plot written beside the results.
#[derive(Clone, Debug, PartialEq)]
pub struct Plot {
    /// What it shows.
    pub title: String,
    /// Its file name in the results directory.
    pub file: String,
}

/// Draws the throughput and latency plots against concurrency: one for writes, one for
/// reads, each with quorumkv, etcd and the ceiling.
pub fn plots(out: &Path, meta: &Meta, summaries: &[Summary]) -> anyhow::Result<Vec<Plot>> {
    let figures = [
        (
            "writes",
            "Writes: throughput and latency against concurrency",
            [WRITE_W2, ETCD_WRITE, CEILING_WRITE],
        ),
        (
            "reads",
            "Reads: throughput and latency against concurrency",
            [READ_R2, ETCD_READ, CEILING_READ],
        ),
    ];
    let mut plots = Vec::new();
    for (name, title, labels) in figures {
        let series: Vec<Series> = labels
            .iter()
            .filter_map(|label| {
                let mut points: Vec<Point> = summaries
                    .iter()
                    .filter(|s| {
                        s.label == *label && s.rate.is_none() && s.value_bytes == meta.value_bytes
                    })
                    .map(|s| Point {
                        clients: s.clients as f64,
                        ops_per_sec: s.ops_per_sec,
                        p50: s.p50,
                        p99: s.p99,
                    })
                    .collect();
                points.sort_by(|a, b| a.clients.total_cmp(&b.clients));
                (!points.is_empty()).then(|| Series {
                    name: find(label).map_or(*label, |s| s.title).to_string(),
                    points,
                })
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        let file = format!("{name}.svg");
        plot::concurrency_svg(&out.join(&file), title, &series)?;
        plots.push(Plot {
            title: title.to_string(),
            file,
        });
    }
    Ok(plots)
}

/// The markdown of the section.
pub fn render(meta: &Meta, summaries: &[Summary], plots: &[Plot]) -> String {
    let main = |label: &str| {
        summaries.iter().find(|s| {
            s.label == label
                && s.rate.is_none()
                && s.clients == meta.clients
                && s.value_bytes == meta.value_bytes
        })
    };
    let runs = if meta.repeats == 1 {
        format!("1 run of {} s per row", meta.seconds)
    } else {
        format!(
            "medians of {} runs of {} s per row",
            meta.repeats, meta.seconds
        )
    };
    let load = meta
        .load_average
        .as_deref()
        .map(|l| {
            let busy = l
                .split_whitespace()
                .next()
                .and_then(|one| one.parse::<f64>().ok())
                .is_some_and(|one| one > 1.0);
            let warning = if busy {
                " **Other work was running on the machine: these figures are lower and noisier \
                 than a quiet machine's.**"
            } else {
                ""
            };
            format!(" Load average (1, 5, 15 min) when the run started: {l}.{warning}")
        })
        .unwrap_or_default();
    let mut out = format!(
        "### `{}`, {}\n\n\
         Machine: {}; the load generator, the quorumkv nodes, the etcd members and the ceiling \
         server all share it.{load}\n\n\
         Workload: {} concurrent clients, closed loop, {} keys of 16 bytes drawn uniformly, \
         {}-byte random values, 3 quorumkv nodes (N=3, `--sync none` unless said), etcd {} \
         with 3 members; {}.\n\n",
        meta.command,
        utc_date(meta.unix_time),
        meta.machine,
        meta.clients,
        ops(meta.key_count as f64),
        meta.value_bytes,
        meta.etcd_version.as_deref().unwrap_or("(not measured)"),
        runs,
    );

    let rows: Vec<Vec<String>> = MAIN
        .iter()
        .filter_map(|scenario| main(scenario.label).map(|s| (scenario, s)))
        .map(|(scenario, s)| {
            vec![
                scenario.title.to_string(),
                ops(s.ops_per_sec),
                ms(s.p50),
                ms(s.p99),
                ms(s.p999),
                ms(s.max),
                errors(s),
            ]
        })
        .collect();
    out.push_str(&table(
        &["scenario", "ops/s", "p50", "p99", "p999", "max", "errors"],
        &rows,
    ));

    out.push_str("\nThe issue's goals (reported, not enforced):\n\n");
    out.push_str(&table(
        &["figure", "measured", "goal", "met"],
        &goals(&main, summaries),
    ));

    let mixes: Vec<Vec<String>> = MIXES
        .iter()
        .filter_map(|scenario| main(scenario.label).map(|s| (scenario, s)))
        .map(|(scenario, s)| {
            vec![
                scenario.title.to_string(),
                ops(s.ops_per_sec),
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
                errors(s),
                found(s),
            ]
        })
        .collect();
    if !mixes.is_empty() {
        out.push_str(&format!(
            "\n#### Operation mixes ({} clients, 1 run each)\n\n\
             A read-modify-write is one operation: the read, then the write with the read's \
             causal context.\n\n",
            meta.clients
        ));
        out.push_str(&table(
            &[
                "scenario",
                "ops/s",
                "p50",
                "p99",
                "max",
                "errors",
                "reads found / siblings / not found",
            ],
            &mixes,
        ));
    }

    let open: Vec<Vec<String>> = summaries
        .iter()
        .filter(|s| s.rate.is_some() && OPEN.contains(&s.label.as_str()))
        .map(|s| {
            vec![
                find(&s.label)
                    .map_or(s.label.as_str(), |f| f.title)
                    .to_string(),
                ops(s.rate.unwrap_or_default()),
                ops(s.ops_per_sec),
                ms(s.p50),
                ms(s.p99),
                ms(s.p999),
                ms(s.max),
                errors(s),
            ]
        })
        .collect();
    if !open.is_empty() {
        out.push_str(&format!(
            "\n#### Open loop ({} connections, fixed rate)\n\n\
             Requests leave at a fixed rate, a fraction of the closed-loop throughput above; \
             each latency runs from the intended send time, so stalls are charged to every \
             request they delayed (no coordinated omission).\n\n",
            meta.clients
        ));
        out.push_str(&table(
            &[
                "scenario",
                "rate",
                "achieved ops/s",
                "p50",
                "p99",
                "p999",
                "max",
                "errors",
            ],
            &open,
        ));
    }

    let mut clients: Vec<usize> = summaries
        .iter()
        .filter(|s| {
            s.rate.is_none()
                && s.value_bytes == meta.value_bytes
                && SWEPT.contains(&s.label.as_str())
        })
        .map(|s| s.clients)
        .collect();
    clients.sort_unstable();
    clients.dedup();
    if clients.len() > 1 {
        out.push_str("\n#### Concurrency (ops/s, and p99 in parentheses)\n\n");
        let mut header = vec!["scenario \\ clients".to_string()];
        header.extend(clients.iter().map(usize::to_string));
        let rows: Vec<Vec<String>> = SWEPT
            .iter()
            .filter_map(|label| find(label))
            .map(|scenario| {
                let mut row = vec![scenario.title.to_string()];
                row.extend(clients.iter().map(|c| {
                    summaries
                        .iter()
                        .find(|s| {
                            s.label == scenario.label
                                && s.rate.is_none()
                                && s.clients == *c
                                && s.value_bytes == meta.value_bytes
                        })
                        .map_or("-".to_string(), |s| {
                            format!("{} ({})", ops(s.ops_per_sec), ms(s.p99))
                        })
                }));
                row
            })
            .collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        out.push_str(&table(&header, &rows));
    }
    if !plots.is_empty() {
        out.push_str("\nPlots (SVG, written beside the results in `bench-results/`): ");
        let names: Vec<String> = plots
            .iter()
            .map(|p| format!("`{}` ({})", p.file, p.title.to_lowercase()))
            .collect();
        out.push_str(&names.join(", "));
        out.push_str(".\n");
    }

    let mut sizes: Vec<usize> = summaries
        .iter()
        .filter(|s| {
            s.rate.is_none() && s.clients == meta.clients && SWEPT.contains(&s.label.as_str())
        })
        .map(|s| s.value_bytes)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.len() > 1 {
        out.push_str(&format!(
            "\n#### Value sizes ({} clients, 1 run each beyond the first size; at most 256 MiB \
             of values per size)\n\n",
            meta.clients
        ));
        let mut header = vec!["scenario".to_string()];
        header.extend(sizes.iter().map(|b| format!("{} values", bytes(*b))));
        let rows: Vec<Vec<String>> = SWEPT
            .iter()
            .filter_map(|label| find(label))
            .map(|scenario| {
                let mut row = vec![scenario.title.to_string()];
                row.extend(sizes.iter().map(|b| {
                    summaries
                        .iter()
                        .find(|s| {
                            s.label == scenario.label
                                && s.rate.is_none()
                                && s.clients == meta.clients
                                && s.value_bytes == *b
                        })
                        .map_or("-".to_string(), |s| {
                            format!("{} ({})", ops(s.ops_per_sec), ms(s.p99))
                        })
                }));
                row
            })
            .collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        out.push_str(&table(&header, &rows));
    }
    out
}

/// The goals, each as a figure, what was measured, the goal, and whether it is met.
fn goals<'a>(
    main: &dyn Fn(&str) -> Option<&'a Summary>,
    summaries: &[Summary],
) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let versus = |a: &str, b: &str| Some(main(a)?.ops_per_sec / main(b)?.ops_per_sec.max(1e-9));
    // The measured figure to one more decimal than its goal, so that a miss by a little
    // never reads as the goal itself.
    type Show = fn(f64) -> String;
    let mut push = |figure: &str, measured: Option<f64>, goal: f64, (fine, show): (Show, Show)| {
        rows.push(match measured {
            Some(value) => vec![
                figure.to_string(),
                fine(value),
                format!(">= {}", show(goal)),
                yes_no(value >= goal),
            ],
            None => vec![
                figure.to_string(),
                "not measured".into(),
                format!(">= {}", show(goal)),
                "-".into(),
            ],
        });
    };
    push(
        "writes w=2 (`--sync none`) / etcd writes",
        versus(WRITE_W2, ETCD_WRITE),
        4.0,
        (ratio_fine, ratio),
    );
    push(
        "writes w=2 (`--sync none`) / ceiling PUTs",
        versus(WRITE_W2, CEILING_WRITE),
        0.20,
        (percent_fine, percent),
    );
    push(
        "reads r=2 / etcd reads",
        versus(READ_R2, ETCD_READ),
        5.0,
        (ratio_fine, ratio),
    );
    push(
        "reads r=2 / ceiling GETs",
        versus(READ_R2, CEILING_READ),
        0.25,
        (percent_fine, percent),
    );
    push(
        "writes w=2 (`--sync always`) / etcd writes",
        versus(WRITE_W2_SYNC, ETCD_WRITE),
        1.5,
        (ratio_fine, ratio),
    );
    for label in [WRITE_W2, READ_R2, WRITE_W2_SYNC] {
        if let Some(s) = main(label) {
            let title = find(label).map_or(label, |f| f.title);
            rows.push(vec![
                format!("p99 of {title}"),
                ms(s.p99),
                "<= 10.00 ms".into(),
                yes_no(s.p99 <= 10.0),
            ]);
        }
    }
    let quorumkv_errors: u64 = summaries
        .iter()
        .filter(|s| s.target == "quorumkv")
        .map(|s| s.errors)
        .sum();
    rows.push(vec![
        "errors, every quorumkv run of this matrix".into(),
        quorumkv_errors.to_string(),
        "0".into(),
        yes_no(quorumkv_errors == 0),
    ]);
    rows
}

fn yes_no(met: bool) -> String {
    if met { "yes" } else { "**no**" }.to_string()
}

fn errors(s: &Summary) -> String {
    if s.errors == 0 {
        return "0".into();
    }
    let kinds: Vec<String> = s
        .error_kinds
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    format!("{} ({})", s.errors, kinds.join(", "))
}

fn found(s: &Summary) -> String {
    let get = |k: &str| s.outcomes.get(k).copied().unwrap_or(0);
    if s.outcomes.is_empty() {
        return "-".into();
    }
    format!(
        "{} / {} / {}",
        get("found"),
        get("siblings"),
        get("not_found")
    )
}

fn bytes(b: usize) -> String {
    match b {
        b if b >= 1024 && b % 1024 == 0 => format!("{} KiB", b / 1024),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn summary(label: &str, target: &str, ops_per_sec: f64, p99: f64) -> Summary {
        Summary {
            label: label.into(),
            target: target.into(),
            workload: "write".into(),
            clients: 32,
            value_bytes: 100,
            rate: None,
            runs: 3,
            ops_per_sec,
            p50: 1.0,
            p99,
            p999: 2.0 * p99,
            max: 3.0 * p99,
            errors: 0,
            error_kinds: BTreeMap::new(),
            outcomes: BTreeMap::new(),
        }
    }

    fn meta() -> Meta {
        Meta {
            command: "make bench".into(),
            profile: "full".into(),
            unix_time: 1_700_000_000,
            machine: "2 cores".into(),
            repeats: 3,
            seconds: 10.0,
            clients: 32,
            key_count: 100_000,
            value_bytes: 100,
            etcd_version: Some("3.4.23".into()),
            quorumkv_version: "0.1.0".into(),
            load_average: Some("0.10 0.20 0.30".into()),
        }
    }

    #[test]
    fn the_section_states_the_run_and_checks_the_goals() {
        let summaries = vec![
            summary(WRITE_W2, "quorumkv", 10_000.0, 8.0),
            summary(ETCD_WRITE, "etcd", 2_000.0, 30.0),
            summary(CEILING_WRITE, "ceiling", 40_000.0, 2.0),
            summary(READ_R2, "quorumkv", 12_000.0, 12.0),
        ];
        let text = render(&meta(), &summaries, &[]);
        assert!(text.starts_with("### `make bench`, 2023-11-14"));
        assert!(text.contains("medians of 3 runs of 10 s"));
        assert!(!text.contains("Other work was running"));
        let busy = Meta {
            load_average: Some("3.50 2.00 1.00".into()),
            ..meta()
        };
        assert!(render(&busy, &summaries, &[]).contains("Other work was running"));
        assert!(text.contains("| quorumkv write, w=2 | 10,000 | 1.00 ms | 8.00 ms |"));
        assert!(
            text.contains("| writes w=2 (`--sync none`) / etcd writes | 5.00x | >= 4.0x | yes |")
        );
        assert!(
            text.contains("| writes w=2 (`--sync none`) / ceiling PUTs | 25.0% | >= 20% | yes |")
        );
        // Just short of a goal reads as short of it.
        let short = vec![
            summary(WRITE_W2, "quorumkv", 7_920.0, 8.0),
            summary(ETCD_WRITE, "etcd", 2_000.0, 30.0),
            summary(CEILING_WRITE, "ceiling", 40_000.0, 2.0),
        ];
        let text_short = render(&meta(), &short, &[]);
        assert!(text_short
            .contains("| writes w=2 (`--sync none`) / etcd writes | 3.96x | >= 4.0x | **no** |"));
        assert!(text_short
            .contains("| writes w=2 (`--sync none`) / ceiling PUTs | 19.8% | >= 20% | **no** |"));
        assert!(text.contains("| reads r=2 / etcd reads | not measured | >= 5.0x | - |"));
        assert!(text.contains("| p99 of quorumkv read, r=2 | 12.00 ms | <= 10.00 ms | **no** |"));
        assert!(text.contains("| errors, every quorumkv run of this matrix | 0 | 0 | yes |"));
    }
}
