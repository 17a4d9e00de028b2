//! SVG plots of throughput and latency against concurrency.
//!
//! One figure per workload: on the left, throughput against the number of concurrent
//! clients; on the right, the median and 99th-percentile latency against the same. Both
//! axes are logarithmic: the ceiling runs ten times faster than any store, and latencies
//! span from tens of microseconds to tens of milliseconds. Read together they show where each target saturates: throughput flattens while
//! latency starts to grow in proportion to the clients, which is queueing, not work.
//!
//! Plots are SVG only, drawn by plotters without its font and bitmap features: text is left
//! to the viewer's sans-serif font, so nothing is needed from the system to draw them.

use std::path::Path;

use plotters::prelude::*;

/// One measured point of a series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Concurrent clients.
    pub clients: f64,
    /// Throughput.
    pub ops_per_sec: f64,
    /// Median latency, ms.
    pub p50: f64,
    /// 99th-percentile latency, ms.
    pub p99: f64,
}

/// One target's points, in increasing concurrency.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// The measurements.
    pub points: Vec<Point>,
}

/// Draws `series` into an SVG file at `path`.
pub fn concurrency_svg(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    draw(path, title, series).map_err(|e| anyhow::anyhow!("plot {}: {e}", path.display()))
}

fn draw(
    path: &Path,
    title: &str,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let max_clients = points().map(|p| p.clients).fold(1.0, f64::max) * 1.3;
    let max_ops = points().map(|p| p.ops_per_sec).fold(1.0, f64::max) * 4.0;
    let min_ops = points()
        .map(|p| p.ops_per_sec)
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min)
        .min(max_ops / 10.0)
        * 0.7;
    let min_ms = points()
        .flat_map(|p| [p.p50, p.p99])
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min)
        .min(1.0)
        * 0.7;
    // Headroom above the data keeps the legend off the lines.
    let max_ms = points().map(|p| p.p99).fold(1.0, f64::max) * 6.0;

    let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (left, right) = root.split_horizontally(600);

    let mut throughput = ChartBuilder::on(&left)
        .caption("throughput", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0.8f64..max_clients).log_scale(),
            (min_ops..max_ops).log_scale(),
        )?;
    throughput
        .configure_mesh()
        .x_desc("concurrent clients")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("ops/s")
        .light_line_style(WHITE)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = color(i);
        let line = s.points.iter().map(|p| (p.clients, p.ops_per_sec));
        throughput
            .draw_series(LineSeries::new(line, color.stroke_width(2)))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        throughput.draw_series(
            s.points
                .iter()
                .map(|p| Circle::new((p.clients, p.ops_per_sec), 3, color.filled())),
        )?;
    }
    throughput
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let mut latency = ChartBuilder::on(&right)
        .caption("latency: p50 (thin), p99 (thick)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0.8f64..max_clients).log_scale(),
            (min_ms..max_ms).log_scale(),
        )?;
    latency
        .configure_mesh()
        .x_desc("concurrent clients")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("ms")
        .light_line_style(WHITE)
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = color(i);
        let p50 = s.points.iter().map(|p| (p.clients, p.p50.max(min_ms)));
        let p99 = s.points.iter().map(|p| (p.clients, p.p99.max(min_ms)));
        latency.draw_series(LineSeries::new(p50, color.stroke_width(1)))?;
        latency
            .draw_series(LineSeries::new(p99, color.stroke_width(3)))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    latency
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Distinct colours that read on white: blue, green, grey, then others.
fn color(index: usize) -> RGBAColor {
    const COLORS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(110, 110, 110),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
    ];
    COLORS[index % COLORS.len()].to_rgba()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drawing is deterministic text output; this checks it produces a well-formed SVG
    /// with every series in its legend, not how it looks.
    #[test]
    fn plots_are_svg_with_a_legend_entry_per_series() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("write.svg");
        let point = |clients: f64, ops: f64| Point {
            clients,
            ops_per_sec: ops,
            p50: clients / 10.0,
            p99: clients / 3.0,
        };
        let series = vec![
            Series {
                name: "quorumkv w=2".into(),
                points: vec![point(1.0, 900.0), point(8.0, 6000.0), point(32.0, 9000.0)],
            },
            Series {
                name: "etcd".into(),
                points: vec![point(1.0, 300.0), point(32.0, 2000.0)],
            },
        ];
        concurrency_svg(&path, "writes", &series).expect("draw");
        let svg = std::fs::read_to_string(&path).expect("read back");
        assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("quorumkv w=2") && svg.contains("etcd"));
    }
}
