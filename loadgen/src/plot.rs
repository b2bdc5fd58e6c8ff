//! The percentile-distribution plot (`--plot FILE.svg`): latency against percentile, one curve
//! per message type, as HdrHistogram's plotter draws them.
//!
//! The x axis is logarithmic in "nines": a percentile `p` sits at `log10(1 / (1 − p))`, so 90%,
//! 99%, 99.9%… are equally spaced and the tail gets as much room as the body. The y axis is
//! logarithmic too (µs), so a 20 µs baseline and a 20 ms stall fit on one chart. The baseline's
//! round trip, when measured in the same run, is drawn dashed.
//!
//! The SVG is written by hand (a few hundred lines of text, no dependency): the chart needs a
//! custom axis transform anyway, and a plotting crate would add build time to every run of the
//! test suite for one picture.

use crate::report::Report;
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::path::Path;

/// One curve.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Legend text.
    pub label: &'a str,
    /// The latencies, nanoseconds.
    pub histogram: &'a Histogram<u64>,
    /// Drawn dashed (the baseline).
    pub dashed: bool,
}

/// The histograms of a report worth plotting, by name: the acknowledgement latency of all
/// requests and of each type, the taker fill latency, the baseline's round trip, and a
/// WebSocket run's frame latency per stream type.
pub const PLOTTED: &[&str] = &[
    "ack_all",
    "ack_limit",
    "ack_ioc",
    "ack_market",
    "ack_cancel",
    "ack_replace",
    "fill",
    "rtt",
    "frame_all",
    "frame_depth",
    "frame_trade",
    "frame_bookTicker",
    "frame_ticker",
    "frame_kline",
];

/// The non-empty plotted histograms of `reports`, labelled `<kind> <name>`; the baseline's
/// dashed.
pub fn series_of<'a>(reports: &[&'a Report]) -> Vec<(String, &'a Histogram<u64>, bool)> {
    let mut series = Vec::new();
    for report in reports {
        for name in PLOTTED {
            if let Some(histogram) = report.histogram(name).filter(|h| !h.is_empty()) {
                series.push((format!("{} {name}", report.kind), histogram, report.kind == "baseline"));
            }
        }
    }
    series
}

/// Writes the plot of `reports` (see [`series_of`]) to `path`.
///
/// # Errors
/// The file cannot be written.
pub fn write_plot(path: &Path, title: &str, reports: &[&Report]) -> std::io::Result<()> {
    let owned = series_of(reports);
    let series: Vec<Series<'_>> =
        owned.iter().map(|(label, histogram, dashed)| Series { label, histogram, dashed: *dashed }).collect();
    std::fs::write(path, percentile_svg(title, &series))
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 560.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 270.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

/// The position of percentile `quantile` (0..1) on the nines axis.
pub fn nines(quantile: f64) -> f64 {
    if quantile >= 1.0 { f64::INFINITY } else { -(1.0 - quantile).log10() }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A percentile label for `n` nines: 0%, 90%, 99%, 99.9%…
fn nines_label(n: u32) -> String {
    match n {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)),
    }
}

/// A latency label for 10^`exp` µs.
fn latency_label(exp: i32) -> String {
    match exp {
        e if e < 0 => format!("{} µs", 10f64.powi(e)),
        e if e < 3 => format!("{} µs", 10u64.pow(e as u32)),
        e if e < 6 => format!("{} ms", 10u64.pow(e as u32 - 3)),
        e => format!("{} s", 10u64.pow(e as u32 - 6)),
    }
}

/// The SVG document: one `<path class="series">` per series (empty histograms skipped), with
/// axes, grid, labels and a legend.
pub fn percentile_svg(title: &str, series: &[Series<'_>]) -> String {
    let series: Vec<&Series<'_>> = series.iter().filter(|s| !s.histogram.is_empty()).collect();
    // x: up to the nines the largest sample count can resolve (at least 1, at most 6).
    let most = series.iter().map(|s| s.histogram.len()).max().unwrap_or(1).max(10);
    let x_max = ((most as f64).log10().ceil() as u32).clamp(1, 6);
    // y: decades of µs covering every value.
    let to_us = |ns: u64| ns.max(1) as f64 / 1e3;
    let low = series.iter().map(|s| to_us(s.histogram.min())).fold(f64::INFINITY, f64::min);
    let high = series.iter().map(|s| to_us(s.histogram.max())).fold(0.0, f64::max);
    let (y_low, y_high) = if series.is_empty() {
        (0, 3)
    } else {
        let low = low.log10().floor() as i32;
        (low, (high.log10().ceil() as i32).max(low + 1))
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |n: f64| LEFT + plot_w * n.min(f64::from(x_max)) / f64::from(x_max);
    let y_of = |us: f64| TOP + plot_h * (1.0 - (us.log10() - f64::from(y_low)) / f64::from(y_high - y_low));

    let mut svg = String::with_capacity(16 * 1024);
    let _ = writeln!(
        svg,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>
<text x="{:.1}" y="28" text-anchor="middle" font-size="16">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Grid and ticks.
    svg.push_str("<g class=\"grid\" stroke=\"#ddd\" stroke-width=\"1\">\n");
    for n in 0..=x_max {
        let x = x_of(f64::from(n));
        let _ = writeln!(svg, r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}"/>"#, TOP + plot_h);
    }
    for exp in y_low..=y_high {
        let y = y_of(10f64.powi(exp));
        let _ = writeln!(svg, r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/>"#, LEFT + plot_w);
        for minor in [2.0, 5.0] {
            if exp < y_high {
                let y = y_of(minor * 10f64.powi(exp));
                let _ = writeln!(
                    svg,
                    r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke-dasharray="2,4"/>"#,
                    LEFT + plot_w
                );
            }
        }
    }
    svg.push_str("</g>\n<g class=\"axes\" fill=\"#333\">\n");
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w:.1}" height="{plot_h:.1}" fill="none" stroke="#333"/>"##
    );
    for n in 0..=x_max {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x_of(f64::from(n)),
            TOP + plot_h + 18.0,
            nines_label(n)
        );
    }
    for exp in y_low..=y_high {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y_of(10f64.powi(exp)) + 4.0,
            latency_label(exp)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (log scale of nines)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 18.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency from scheduled send (log)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    svg.push_str("</g>\n");
    // Curves.
    for (index, s) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let mut d = String::new();
        for (point, value) in s.histogram.iter_quantiles(5).enumerate() {
            let x = x_of(nines(value.quantile_iterated_to()));
            let y = y_of(to_us(s.histogram.highest_equivalent(value.value_iterated_to())));
            let _ = write!(d, "{}{x:.1},{y:.1}", if point == 0 { "M" } else { " L" });
        }
        let dash = if s.dashed { r#" stroke-dasharray="6,4""# } else { "" };
        let width = if s.label.ends_with("ack_all") || s.dashed { 2.5 } else { 1.5 };
        let _ = writeln!(
            svg,
            r#"<path class="series" data-label="{}" d="{d}" fill="none" stroke="{color}" stroke-width="{width}"{dash}/>"#,
            escape(s.label)
        );
        // Legend entry with the figures.
        let y = TOP + 14.0 + 34.0 * index as f64;
        let x = LEFT + plot_w + 16.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="{width}"{dash}/>"#,
            x + 24.0
        );
        let _ = writeln!(svg, r#"<text x="{:.1}" y="{:.1}">{}</text>"#, x + 30.0, y + 4.0, escape(s.label));
        let at = |q: f64| to_us(s.histogram.value_at_quantile(q));
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#555">n={} p50 {:.0} p99 {:.0} max {:.0} µs</text>"##,
            x + 30.0,
            y + 18.0,
            s.histogram.len(),
            at(0.5),
            at(0.99),
            to_us(s.histogram.max())
        );
    }
    if series.is_empty() {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">no samples</text>"#,
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nines_axis_spaces_each_nine_equally() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert!(nines(1.0).is_infinite());
        assert_eq!(nines_label(0), "0%");
        assert_eq!(nines_label(1), "90%");
        assert_eq!(nines_label(4), "99.99%");
        assert_eq!(latency_label(1), "10 µs");
        assert_eq!(latency_label(4), "10 ms");
        assert_eq!(latency_label(6), "1 s");
    }
}
