//! Flame graphs of a profile: `perf script` output in, an SVG out.
//!
//! `scripts/profile.sh` samples a node with perf; its text reports rank functions, but a
//! cost spread over many small frames (an HTTP exchange, a RocksDB write) shows only as a
//! whole in a flame graph, where each box is a function and its width the share of time
//! in which it was on the stack. inferno does both steps of Brendan Gregg's flame graph
//! tools: fold the stacks that `perf script` prints into one line per distinct stack with
//! its weight, then draw the folded stacks. Done here, the profile needs nothing beyond perf
//! and the bench binary.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use inferno::collapse::perf::Folder;
use inferno::collapse::Collapse;
use inferno::flamegraph;

/// Folds the stacks of a `perf script` text and returns one line per distinct stack:
/// frames from the outermost, separated by `;`, then a space and its weight, the sum of
/// its samples' periods (for the `cpu-clock` event `scripts/profile.sh` records,
/// nanoseconds of CPU time).
pub fn fold(perf_script: impl std::io::BufRead) -> anyhow::Result<String> {
    let mut folded = Vec::new();
    Folder::default()
        .collapse(perf_script, &mut folded)
        .context("cannot fold the perf script")?;
    String::from_utf8(folded).context("folded stacks are not UTF-8")
}

/// Draws folded stacks as an SVG flame graph titled `title`.
///
/// # Errors
/// When there is no stack to draw, or the writer fails.
pub fn draw(folded: &str, title: &str, out: impl Write) -> anyhow::Result<()> {
    anyhow::ensure!(
        folded.lines().any(|line| !line.trim().is_empty()),
        "the profile holds no stack samples"
    );
    let mut options = flamegraph::Options::default();
    options.title = title.to_string();
    // The weights are sample periods: nanoseconds for `cpu-clock`.
    options.count_name = "ns".to_string();
    flamegraph::from_lines(&mut options, folded.lines(), out).context("cannot draw the flame graph")
}

/// Reads `perf script` output from `input` and writes its flame graph to `output`, and the
/// folded stacks beside it (same name, `.folded`), which diff and grep well.
pub fn render(input: &Path, output: &Path, title: &str) -> anyhow::Result<()> {
    let script = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let folded = fold(BufReader::new(script))?;
    std::fs::write(output.with_extension("folded"), &folded)
        .with_context(|| format!("cannot write beside {}", output.display()))?;
    let file =
        File::create(output).with_context(|| format!("cannot create {}", output.display()))?;
    let mut writer = BufWriter::new(file);
    draw(&folded, title, &mut writer)?;
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two samples in the shape `perf script` prints them: a header line (command, pid,
    /// CPU, time, period, event), then one frame per line from the innermost, then a blank
    /// line.
    const SCRIPT: &str = "\
quorumkv 4242 [000] 100.000001: 2004008 cpu-clock:
\t    5555 rocksdb::MemTable::Add+0x10 (/usr/bin/quorumkv)
\t    4444 apply_group+0x20 (/usr/bin/quorumkv)
\t    3333 main+0x30 (/usr/bin/quorumkv)

quorumkv 4242 [001] 100.002001: 2004008 cpu-clock:
\t    6666 hyper_dispatch+0x10 (/usr/bin/quorumkv)
\t    3333 main+0x30 (/usr/bin/quorumkv)

";

    #[test]
    fn folds_stacks_from_the_outermost_frame() {
        let folded = fold(SCRIPT.as_bytes()).expect("fold");
        let mut lines: Vec<&str> = folded.lines().collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            [
                "quorumkv;main;apply_group;rocksdb::MemTable::Add 2004008",
                "quorumkv;main;hyper_dispatch 2004008",
            ]
        );
    }

    #[test]
    fn draws_every_function_of_the_profile() {
        let folded = fold(SCRIPT.as_bytes()).expect("fold");
        let mut svg = Vec::new();
        draw(&folded, "node 1", &mut svg).expect("draw");
        let svg = String::from_utf8(svg).expect("UTF-8");
        assert!(svg.starts_with("<?xml"), "{}", &svg[..svg.len().min(80)]);
        for name in [
            "node 1",
            "apply_group",
            "hyper_dispatch",
            "rocksdb::MemTable::Add",
        ] {
            assert!(svg.contains(name), "{name} missing from the SVG");
        }
    }

    #[test]
    fn an_empty_profile_is_an_error_not_an_empty_picture() {
        let folded = fold(&b""[..]).expect("fold");
        let error = draw(&folded, "empty", Vec::new()).expect_err("nothing to draw");
        assert!(error.to_string().contains("no stack samples"), "{error}");
    }
}
