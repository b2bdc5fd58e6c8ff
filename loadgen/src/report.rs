//! Results: the plain-text table, the JSON document and the HdrHistogram interval log.

use crate::latency::LatencySummary;
use crate::ramp::{RampRow, RampTable};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// The result of one run (baseline or gateway).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `baseline`, `sbe`, `fix`, `rest` or `ws`.
    pub kind: String,
    /// What was measured: the gateway address, or the loopback echo server's.
    pub target: String,
    /// Connections used.
    pub connections: usize,
    /// Settings worth printing next to the figures (message size, mix…).
    pub settings: BTreeMap<String, String>,
    /// Requests per second asked for.
    pub offered_rate: f64,
    /// Requests per second actually sent during the measured window.
    pub achieved_send_rate: f64,
    /// Requests per second answered during the measured window.
    pub achieved_response_rate: f64,
    /// Warm-up before measuring, seconds (its requests are sent but not recorded).
    pub warmup_s: f64,
    /// Measured window, seconds.
    pub duration_s: f64,
    /// Requests scheduled in the measured window and sent.
    pub sent: u64,
    /// Of those, requests answered.
    pub answered: u64,
    /// Of those, requests still unanswered when the run ended (also counted in `errors`).
    pub unanswered: u64,
    /// Latency figures per measured quantity, nanoseconds, from the scheduled send time.
    pub latencies: Vec<LatencySummary>,
    /// What happened to the requests and orders (accepted, fills, cancels…), measured window
    /// and warm-up together.
    pub outcomes: BTreeMap<String, u64>,
    /// Rejections by numbered reason (`"402 UnknownOrder"`), engine and gateway alike.
    pub rejects: BTreeMap<String, u64>,
    /// Failures of the run itself: i/o errors, terminated sessions, unanswered requests,
    /// responses that match no request. A clean run has none.
    pub errors: BTreeMap<String, u64>,
    /// The histograms behind `latencies`, by the same names.
    #[serde(skip)]
    pub histograms: Vec<(String, Histogram<u64>)>,
    /// With a rate ramp: one row per step run (see [`crate::ramp`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ramp: Vec<RampRow>,
}

impl Report {
    /// The summary of histogram `name`.
    pub fn latency(&self, name: &str) -> Option<&LatencySummary> {
        self.latencies.iter().find(|l| l.name == name)
    }

    /// The histogram `name`.
    pub fn histogram(&self, name: &str) -> Option<&Histogram<u64>> {
        self.histograms.iter().find(|(n, _)| n == name).map(|(_, h)| h)
    }

    /// Total number of errors.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Writes the report as pretty JSON.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        write_json(path, self)
    }
}

/// Writes any result as pretty JSON.
///
/// # Errors
/// The file cannot be written.
pub fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// Nanoseconds as microseconds with one decimal.
fn micros(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1_000.0)
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
}

fn latency_table(f: &mut fmt::Formatter<'_>, title: &str, rows: &[&LatencySummary]) -> fmt::Result {
    writeln!(
        f,
        "{title:<28} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    )?;
    for row in rows {
        write!(f, "{:<28} {:>9}", row.name, row.count)?;
        for (_, value) in row.columns() {
            write!(f, " {:>9}", micros(value))?;
        }
        writeln!(f)?;
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "loadgen {} -> {}: {} connection(s), warm-up {:.1} s, measured {:.1} s",
            self.kind, self.target, self.connections, self.warmup_s, self.duration_s
        )?;
        if !self.settings.is_empty() {
            let settings: Vec<_> = self.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(f, "settings: {}", settings.join(" "))?;
        }
        // A subscriber run (`ws`) sends nothing: it counts frames, timed from their event time.
        let subscriber = self.kind == "ws";
        if subscriber {
            writeln!(
                f,
                "frames: {} received, {:.1}/s over all subscribers",
                self.answered, self.achieved_response_rate
            )?;
        } else {
            writeln!(
                f,
                "rate: offered {:.0}/s, sent {:.1}/s, answered {:.1}/s (sent {}, answered {}, unanswered {})",
                self.offered_rate,
                self.achieved_send_rate,
                self.achieved_response_rate,
                self.sent,
                self.answered,
                self.unanswered
            )?;
        }
        writeln!(f)?;
        let rows: Vec<_> = self.latencies.iter().collect();
        let title = if subscriber { "latency µs (from event E)" } else { "latency µs (from scheduled)" };
        latency_table(f, title, &rows)?;
        writeln!(f)?;
        writeln!(f, "outcomes: {}", counts(&self.outcomes))?;
        writeln!(f, "rejects:  {}", counts(&self.rejects))?;
        writeln!(f, "errors:   {}", counts(&self.errors))?;
        if !self.ramp.is_empty() {
            writeln!(f)?;
            writeln!(f, "ramp (acknowledgement latency of each step's requests, from scheduled):")?;
            write!(f, "{}", RampTable(&self.ramp))?;
        }
        Ok(())
    }
}

/// One percentile of the gateway against the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    /// `p50`, `p90`, `p99`, `p99.9`, `p99.99` or `max`.
    pub percentile: String,
    /// Gateway latency, nanoseconds.
    pub gateway_ns: u64,
    /// Baseline latency, nanoseconds.
    pub baseline_ns: u64,
    /// `gateway / baseline`.
    pub ratio: f64,
}

/// A baseline run and a gateway run back to back, with the gateway's acknowledgement latency
/// divided by the baseline's round trip at every percentile.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The raw TCP ping-pong.
    pub baseline: Report,
    /// The gateway.
    pub gateway: Report,
    /// Which gateway histogram was compared (`ack_all`).
    pub gateway_metric: String,
    /// Which baseline histogram was compared (`rtt`).
    pub baseline_metric: String,
    /// `gateway / baseline` per percentile.
    pub ratios: Vec<Ratio>,
}

impl Comparison {
    /// Compares `gateway_metric` of `gateway` with `baseline_metric` of `baseline`.
    pub fn new(baseline: Report, gateway: Report, gateway_metric: &str, baseline_metric: &str) -> Self {
        let empty = LatencySummary::of(gateway_metric, &crate::latency::new_histogram());
        let g = gateway.latency(gateway_metric).unwrap_or(&empty).columns();
        let b = baseline.latency(baseline_metric).unwrap_or(&empty).columns();
        let ratios = g
            .iter()
            .zip(b.iter())
            .map(|(&(name, gateway_ns), &(_, baseline_ns))| Ratio {
                percentile: name.to_owned(),
                gateway_ns,
                baseline_ns,
                ratio: if baseline_ns == 0 { 0.0 } else { gateway_ns as f64 / baseline_ns as f64 },
            })
            .collect();
        Self {
            baseline,
            gateway,
            gateway_metric: gateway_metric.to_owned(),
            baseline_metric: baseline_metric.to_owned(),
            ratios,
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.baseline)?;
        writeln!(f, "{}", self.gateway)?;
        writeln!(f, "gateway {} / baseline {}:", self.gateway_metric, self.baseline_metric)?;
        write!(f, "{:<12}", "")?;
        for ratio in &self.ratios {
            write!(f, " {:>9}", ratio.percentile)?;
        }
        writeln!(f)?;
        for (label, pick) in [("gateway µs", 0), ("baseline µs", 1), ("ratio", 2)] {
            write!(f, "{label:<12}")?;
            for ratio in &self.ratios {
                let cell = match pick {
                    0 => micros(ratio.gateway_ns),
                    1 => micros(ratio.baseline_ns),
                    _ => format!("{:.2}x", ratio.ratio),
                };
                write!(f, " {cell:>9}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Writes the histograms of `reports` as an HdrHistogram interval log (V2, deflate-compressed,
/// base64: the format of Java's `HistogramLogWriter`, readable by HistogramLogAnalyzer and
/// `hdrhistogram`'s `IntervalLogIterator`). Each histogram is one interval covering its run's
/// measured window, tagged `<kind>_<name>` (e.g. `sbe_ack_all`, `baseline_rtt`). Values are
/// nanoseconds.
///
/// # Errors
/// The file cannot be written.
pub fn write_hdr_log(path: &Path, reports: &[&Report]) -> std::io::Result<()> {
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder.add_comment("loadgen latency histograms, nanoseconds, measured from the scheduled send time");
    builder.with_start_time(std::time::SystemTime::now());
    let mut log = builder.begin_log_with(&mut out, &mut serializer)?;
    for report in reports {
        for (name, histogram) in &report.histograms {
            let tag = format!("{}_{}", report.kind, name);
            log.write_histogram(
                histogram,
                Duration::from_secs_f64(report.warmup_s),
                Duration::from_secs_f64(report.duration_s),
                Tag::new(&tag),
            )
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        }
    }
    std::fs::write(path, out)
}
