//! Runtime metrics in Prometheus text format.
//!
//! The engine thread records into preallocated atomics only (counters and fixed-bucket
//! histograms): recording is a few relaxed atomic adds, never a lock or an allocation. A scrape
//! formats them on the HTTP thread. (General-purpose metrics crates allocate on first use of a
//! label set and their histograms grow storage as they record, which the engine thread must not
//! do; the handful of series here does not need one.)

use codec::{RejectReason, WireEnum};
use engine::latency::{EXPORT_BOUNDS_NS, ExportedHistogram, WireSample};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A histogram with fixed bucket bounds (upper bounds, inclusive) and atomic counts.
pub struct AtomicHistogram {
    bounds: &'static [u64],
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl AtomicHistogram {
    /// A histogram over `bounds` (ascending) plus an overflow bucket.
    pub fn new(bounds: &'static [u64]) -> Self {
        Self { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum: AtomicU64::new(0) }
    }

    /// Records one value.
    #[inline]
    pub fn record(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Total count.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// A copy of the counts, for rendering.
    pub fn sample(&self) -> HistogramSample<'static> {
        HistogramSample {
            bounds: self.bounds,
            counts: self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }

    /// Appends the histogram in Prometheus text format (HELP, TYPE, buckets, sum, count), bounds
    /// and sum divided by `divisor` (1e9: nanoseconds to seconds).
    pub fn render(&self, out: &mut String, name: &str, help: &str, divisor: f64) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.sample().render_series(out, name, "", divisor);
    }
}

/// The counts of one histogram series at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSample<'a> {
    /// Bucket upper bounds (inclusive, ascending), in the recorded unit.
    pub bounds: &'a [u64],
    /// Values per bucket (not cumulative): one per bound, then one for values above every bound.
    /// Missing buckets count as zero.
    pub counts: Vec<u64>,
    /// Sum of the recorded values, in the recorded unit.
    pub sum: u64,
}

impl HistogramSample<'_> {
    /// Writes the `_bucket`, `_sum` and `_count` lines, with `labels` (`key="value",` pairs, each
    /// followed by a comma, or empty) before `le`, values divided by `divisor` (dividing by
    /// 1e9 rather than multiplying by 1e-9 keeps `0.03` from printing as `0.030000000000000002`).
    fn render_series(&self, out: &mut String, name: &str, labels: &str, divisor: f64) {
        let count = |bucket: usize| self.counts.get(bucket).copied().unwrap_or(0);
        let mut cumulative = 0u64;
        for (bucket, bound) in self.bounds.iter().enumerate() {
            cumulative = cumulative.saturating_add(count(bucket));
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{}\"}} {cumulative}", *bound as f64 / divisor);
        }
        cumulative = cumulative.saturating_add(count(self.bounds.len()));
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {cumulative}");
        let trimmed = labels.trim_end_matches(',');
        let braces = if trimmed.is_empty() { String::new() } else { format!("{{{trimmed}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum as f64 / divisor);
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// The series of a [`LabelledFamily`], one per label value.
#[derive(Debug, Clone, PartialEq)]
pub enum FamilySeries<'a> {
    /// Values that go up and down.
    Gauge(Vec<(&'a str, f64)>),
    /// Values that only grow (names end in `_total`).
    Counter(Vec<(&'a str, u64)>),
    /// Histograms; bounds and sums are divided by `divisor` (1e9: nanoseconds to seconds).
    Histogram {
        /// What bounds and sums are divided by.
        divisor: f64,
        /// One histogram per label value.
        series: Vec<(&'a str, HistogramSample<'a>)>,
    },
}

/// A metric family whose series differ by the value of one label (`exchange_sink_cursor{sink=
/// "postgres"}`, `{sink="redis"}`...). Prometheus text allows one HELP and one TYPE line per
/// family, so they are written once, before every series; a family without series writes
/// nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledFamily<'a> {
    /// Metric name.
    pub name: &'a str,
    /// HELP text (one line).
    pub help: &'a str,
    /// The label that tells the series apart.
    pub label: &'a str,
    /// The series.
    pub series: FamilySeries<'a>,
}

impl LabelledFamily<'_> {
    /// Appends the family in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let (name, label) = (self.name, self.label);
        let (kind, empty) = match &self.series {
            FamilySeries::Gauge(series) => ("gauge", series.is_empty()),
            FamilySeries::Counter(series) => ("counter", series.is_empty()),
            FamilySeries::Histogram { series, .. } => ("histogram", series.is_empty()),
        };
        if empty {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", escape_help(self.help));
        match &self.series {
            FamilySeries::Gauge(series) => {
                for (value_of_label, value) in series {
                    let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {value}", escape_label_value(value_of_label));
                }
            }
            FamilySeries::Counter(series) => {
                for (value_of_label, value) in series {
                    let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {value}", escape_label_value(value_of_label));
                }
            }
            FamilySeries::Histogram { divisor, series } => {
                for (value_of_label, sample) in series {
                    let labels = format!("{label}=\"{}\",", escape_label_value(value_of_label));
                    sample.render_series(out, name, &labels, *divisor);
                }
            }
        }
    }
}

/// One sink's counters at a scrape (its driver's statistics), for [`sink_families`].
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSample {
    /// The sink's name (`postgres`, `kafka`, `redis`): the `sink` label.
    pub name: &'static str,
    /// Last sequence the sink holds durably.
    pub cursor: u64,
    /// Commands written (live and replayed).
    pub commands: u64,
    /// Commands regenerated from the journal.
    pub replayed: u64,
    /// Failures, each followed by a reconnect.
    pub failures: u64,
    /// Times the sink fell behind the egress ring.
    pub lags: u64,
    /// A session is open and healthy.
    pub connected: bool,
    /// Time of each write, in nanoseconds.
    pub write_ns: HistogramSample<'static>,
}

/// The `exchange_sink_*` families (docs/operations.md) of `sinks`, one series per sink. `durable`
/// is the engine's last durable sequence, from which each sink's lag is measured. No sinks: no
/// families.
pub fn sink_families(sinks: &[SinkSample], durable: u64) -> Vec<LabelledFamily<'_>> {
    let gauge = |name, help, value: fn(&SinkSample) -> f64| LabelledFamily {
        name,
        help,
        label: "sink",
        series: FamilySeries::Gauge(sinks.iter().map(|s| (s.name, value(s))).collect()),
    };
    let counter = |name, help, value: fn(&SinkSample) -> u64| LabelledFamily {
        name,
        help,
        label: "sink",
        series: FamilySeries::Counter(sinks.iter().map(|s| (s.name, value(s))).collect()),
    };
    vec![
        gauge("exchange_sink_cursor", "Last engine sequence durably in the sink.", |s| s.cursor as f64),
        LabelledFamily {
            name: "exchange_sink_lag_commands",
            help: "Commands the engine made durable that the sink does not hold yet.",
            label: "sink",
            series: FamilySeries::Gauge(
                sinks.iter().map(|s| (s.name, durable.saturating_sub(s.cursor) as f64)).collect(),
            ),
        },
        gauge(
            "exchange_sink_connected",
            "1 while the sink's session is open and healthy, 0 while reconnecting.",
            |s| f64::from(u8::from(s.connected)),
        ),
        counter("exchange_sink_commands_total", "Commands written to the sink (live and replayed).", |s| s.commands),
        counter("exchange_sink_replayed_total", "Commands regenerated from the journal for the sink.", |s| s.replayed),
        counter("exchange_sink_failures_total", "Sink failures, each followed by a reconnect.", |s| s.failures),
        counter("exchange_sink_lags_total", "Times the sink fell behind the egress ring.", |s| s.lags),
        LabelledFamily {
            name: "exchange_sink_write_seconds",
            help: "Time of each write to the sink (one batch of commands, failed writes included).",
            label: "sink",
            series: FamilySeries::Histogram {
                divisor: 1e9,
                series: sinks.iter().map(|s| (s.name, s.write_ns.clone())).collect(),
            },
        },
    ]
}

/// A label value as Prometheus text requires: backslash, double quote and line feed escaped.
fn escape_label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// HELP text as Prometheus text requires: backslash and line feed escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Nanosecond bounds from 250 ns to 1 s.
const NANOS_BOUNDS: &[u64] = &[
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];
/// Batch-size bounds.
const BATCH_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

/// Names of the command types, in `Command` template id order (1..=11).
const COMMAND_NAMES: [&str; COMMAND_TYPES] = [
    "new_order",
    "cancel_order",
    "cancel_replace",
    "mass_cancel",
    "deposit",
    "withdraw",
    "market_control",
    "add_liquidity",
    "remove_liquidity",
    "swap",
    "routed_order",
];
/// Command template ids are 1..=COMMAND_TYPES.
const COMMAND_TYPES: usize = 11;

/// Every metric of the runtime.
pub struct Metrics {
    /// Commands executed, by template id - 1.
    pub commands: [AtomicU64; COMMAND_TYPES],
    /// Rejections, by index in `RejectReason::ALL`.
    pub rejects: Box<[AtomicU64]>,
    /// Fills.
    pub fills: AtomicU64,
    /// Commands per group commit.
    pub journal_batch_size: AtomicHistogram,
    /// Time of each write + fdatasync.
    pub journal_commit_ns: AtomicHistogram,
    /// Engine execution time per command.
    pub engine_command_ns: AtomicHistogram,
    /// Time of each snapshot on the snapshotter thread (hash + serialise + write + fsync).
    pub snapshot_ns: AtomicHistogram,
    /// Commands refused because the ingress ring was full (internal producers; each gateway
    /// counts its own).
    pub ingress_busy: AtomicU64,
    /// Time the engine thread waited, per command that had to, for gating egress consumers to
    /// make room.
    pub egress_wait_ns: AtomicHistogram,
    /// Gating egress consumers overwritten after making no progress for the stall bound.
    pub egress_stuck_consumers: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            commands: Default::default(),
            rejects: RejectReason::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            fills: AtomicU64::new(0),
            journal_batch_size: AtomicHistogram::new(BATCH_BOUNDS),
            journal_commit_ns: AtomicHistogram::new(NANOS_BOUNDS),
            engine_command_ns: AtomicHistogram::new(NANOS_BOUNDS),
            snapshot_ns: AtomicHistogram::new(NANOS_BOUNDS),
            ingress_busy: AtomicU64::new(0),
            egress_wait_ns: AtomicHistogram::new(NANOS_BOUNDS),
            egress_stuck_consumers: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts an executed command by its template id.
    #[inline]
    pub fn command(&self, template_id: u16) {
        if let Some(counter) = self.commands.get(usize::from(template_id).wrapping_sub(1)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a rejection.
    #[inline]
    pub fn reject(&self, reason: RejectReason) {
        if let Some(index) = RejectReason::ALL.iter().position(|&r| r == reason) {
            self.rejects[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Renders every metric plus the given gauges and counters (name, help, value) and labelled
    /// families as Prometheus text.
    pub fn render(
        &self,
        gauges: &[(&str, &str, f64)],
        counters: &[(&str, &str, u64)],
        families: &[LabelledFamily<'_>],
    ) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let _ = writeln!(out, "# HELP exchange_commands_total Commands executed by the engine, by type.");
        let _ = writeln!(out, "# TYPE exchange_commands_total counter");
        for (name, counter) in COMMAND_NAMES.iter().zip(&self.commands) {
            let _ = writeln!(out, "exchange_commands_total{{type=\"{name}\"}} {}", counter.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# HELP exchange_rejects_total Commands rejected, by reason.");
        let _ = writeln!(out, "# TYPE exchange_rejects_total counter");
        for (reason, counter) in RejectReason::ALL.iter().zip(self.rejects.iter()) {
            let _ =
                writeln!(out, "exchange_rejects_total{{reason=\"{reason:?}\"}} {}", counter.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# HELP exchange_fills_total Trades executed.\n# TYPE exchange_fills_total counter");
        let _ = writeln!(out, "exchange_fills_total {}", self.fills.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# HELP exchange_ingress_busy_total Commands refused because the ingress ring was full.\n# TYPE exchange_ingress_busy_total counter"
        );
        let _ = writeln!(out, "exchange_ingress_busy_total {}", self.ingress_busy.load(Ordering::Relaxed));
        self.journal_batch_size.render(&mut out, "exchange_journal_batch_commands", "Commands per group commit.", 1.0);
        self.journal_commit_ns.render(
            &mut out,
            "exchange_journal_commit_seconds",
            "Write plus fdatasync time of each journal batch.",
            1e9,
        );
        self.engine_command_ns.render(
            &mut out,
            "exchange_engine_command_seconds",
            "Engine service time per command (execution and event publication).",
            1e9,
        );
        self.snapshot_ns.render(
            &mut out,
            "exchange_snapshot_seconds",
            "Snapshot hash + serialise + write + fsync time (snapshotter thread).",
            1e9,
        );
        self.egress_wait_ns.render(
            &mut out,
            "exchange_egress_wait_seconds",
            "Time the engine waited, per command that had to, for the gateways' dispatchers and the market view to make room in the egress ring.",
            1e9,
        );
        let _ = writeln!(
            out,
            "# HELP exchange_egress_stuck_consumers_total Egress consumers overwritten after making no progress for the stall bound.\n# TYPE exchange_egress_stuck_consumers_total counter"
        );
        let _ = writeln!(
            out,
            "exchange_egress_stuck_consumers_total {}",
            self.egress_stuck_consumers.load(Ordering::Relaxed)
        );
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        for family in families {
            family.render(&mut out);
        }
        render_wire_latency(&mut out, &engine::latency::wire_latency().samples());
        out
    }
}

/// Writes the server-side wire-to-wire families (docs/operations.md, "Wire-to-wire latency"):
/// `exchange_wire_to_wire_seconds{gateway,message}`, from the request's bytes read to the
/// acknowledgement's bytes written, and `exchange_stage_seconds{gateway,message,stage}`, its
/// stages (which add up to it). Histograms over [`engine::latency::EXPORT_BOUNDS_NS`], covering
/// the process's life: a load test takes the difference of two scrapes. Nothing recorded yet:
/// nothing written.
pub fn render_wire_latency(out: &mut String, samples: &[WireSample]) {
    if samples.is_empty() {
        return;
    }
    let sample_of = |histogram: &ExportedHistogram| HistogramSample {
        bounds: EXPORT_BOUNDS_NS,
        counts: histogram.counts.clone(),
        sum: histogram.sum_ns,
    };
    let name = "exchange_wire_to_wire_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Server-side latency per gateway and message type, from the request's bytes read to the acknowledgement's bytes written.\n# TYPE {name} histogram"
    );
    for sample in samples {
        let labels = format!("gateway=\"{}\",message=\"{}\",", sample.gateway, sample.message);
        sample_of(&sample.total).render_series(out, name, &labels, 1e9);
    }
    let name = "exchange_stage_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} The stages of exchange_wire_to_wire_seconds (decode, ingress_wait, journal_commit, engine, egress_wait, encode_write), which add up to it.\n# TYPE {name} histogram"
    );
    for sample in samples {
        for (stage, histogram) in &sample.stages {
            let labels =
                format!("gateway=\"{}\",message=\"{}\",stage=\"{}\",", sample.gateway, sample.message, stage.name());
            sample_of(histogram).render_series(out, name, &labels, 1e9);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let histogram = AtomicHistogram::new(&[10, 100]);
        for value in [1, 10, 11, 100, 1_000] {
            histogram.record(value);
        }
        let mut out = String::new();
        histogram.render(&mut out, "h", "help", 1.0);
        assert!(out.contains("h_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"100\"} 4\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("h_sum 1122\n") && out.contains("h_count 5\n"), "{out}");
    }

    #[test]
    fn labelled_families_write_help_and_type_once_then_one_series_per_label() {
        let sample = |name, cursor, connected| SinkSample {
            name,
            cursor,
            commands: cursor,
            replayed: 3,
            failures: 1,
            lags: 0,
            connected,
            write_ns: HistogramSample { bounds: &[1_000_000, 10_000_000], counts: vec![2, 1, 1], sum: 30_000_000 },
        };
        let sinks = [sample("postgres", 90, true), sample("redis", 100, false)];
        let text = Metrics::default().render(&[], &[], &sink_families(&sinks, 100));
        for (family, kind) in [
            ("exchange_sink_cursor", "gauge"),
            ("exchange_sink_lag_commands", "gauge"),
            ("exchange_sink_connected", "gauge"),
            ("exchange_sink_commands_total", "counter"),
            ("exchange_sink_replayed_total", "counter"),
            ("exchange_sink_failures_total", "counter"),
            ("exchange_sink_lags_total", "counter"),
            ("exchange_sink_write_seconds", "histogram"),
        ] {
            assert_eq!(text.matches(&format!("# HELP {family} ")).count(), 1, "{family}: {text}");
            assert_eq!(text.matches(&format!("# TYPE {family} {kind}\n")).count(), 1, "{family}: {text}");
        }
        for line in [
            "exchange_sink_cursor{sink=\"postgres\"} 90\n",
            "exchange_sink_cursor{sink=\"redis\"} 100\n",
            "exchange_sink_lag_commands{sink=\"postgres\"} 10\n",
            "exchange_sink_lag_commands{sink=\"redis\"} 0\n",
            "exchange_sink_connected{sink=\"postgres\"} 1\n",
            "exchange_sink_connected{sink=\"redis\"} 0\n",
            "exchange_sink_commands_total{sink=\"redis\"} 100\n",
            "exchange_sink_replayed_total{sink=\"postgres\"} 3\n",
            "exchange_sink_failures_total{sink=\"postgres\"} 1\n",
            "exchange_sink_lags_total{sink=\"redis\"} 0\n",
            "exchange_sink_write_seconds_bucket{sink=\"postgres\",le=\"0.001\"} 2\n",
            "exchange_sink_write_seconds_bucket{sink=\"postgres\",le=\"0.01\"} 3\n",
            "exchange_sink_write_seconds_bucket{sink=\"redis\",le=\"+Inf\"} 4\n",
            "exchange_sink_write_seconds_sum{sink=\"redis\"} 0.03\n",
            "exchange_sink_write_seconds_count{sink=\"postgres\"} 4\n",
        ] {
            assert!(text.contains(line), "{line}in:\n{text}");
        }
        // Every series of a family follows its TYPE line, before the next family starts.
        let cursor = text.find("# TYPE exchange_sink_cursor").unwrap();
        let lag = text.find("# TYPE exchange_sink_lag_commands").unwrap();
        assert!(text[cursor..lag].contains("sink=\"redis\""), "{text}");
        // No sinks: no families at all (not even HELP lines).
        assert!(!Metrics::default().render(&[], &[], &sink_families(&[], 100)).contains("exchange_sink"));
    }

    #[test]
    fn wire_latency_families_have_one_series_per_gateway_message_and_stage() {
        let latency = engine::latency::WireLatency::default();
        let trace = engine::latency::CommandTrace {
            gateway: engine::latency::GatewayStamps { received_ns: 1_000, pushed_ns: 2_000 },
            popped_ns: 3_000,
            committed_ns: 4_000,
            published_ns: 5_000,
            template_id: 1,
        };
        latency.record(engine::bus::origin::FIX, &trace, 6_000, 8_000);
        let mut out = String::new();
        render_wire_latency(&mut out, &latency.samples());
        assert_eq!(out.matches("# TYPE exchange_wire_to_wire_seconds histogram\n").count(), 1, "{out}");
        assert_eq!(out.matches("# TYPE exchange_stage_seconds histogram\n").count(), 1, "{out}");
        for line in [
            "exchange_wire_to_wire_seconds_count{gateway=\"fix\",message=\"NewOrder\"} 1\n",
            "exchange_wire_to_wire_seconds_bucket{gateway=\"fix\",message=\"NewOrder\",le=\"0.000008\"} 1\n",
            "exchange_wire_to_wire_seconds_bucket{gateway=\"fix\",message=\"NewOrder\",le=\"0.000006\"} 0\n",
            "exchange_stage_seconds_count{gateway=\"fix\",message=\"NewOrder\",stage=\"encode_write\"} 1\n",
            "exchange_stage_seconds_bucket{gateway=\"fix\",message=\"NewOrder\",stage=\"encode_write\",le=\"0.000002\"} 1\n",
        ] {
            assert!(out.contains(line), "{line}in:\n{out}");
        }
        let mut empty = String::new();
        render_wire_latency(&mut empty, &[]);
        assert!(empty.is_empty());
    }

    #[test]
    fn label_values_are_escaped() {
        let family = LabelledFamily {
            name: "m",
            help: "two\nlines",
            label: "l",
            series: FamilySeries::Gauge(vec![("a\"b\\c\nd", 1.0)]),
        };
        let mut out = String::new();
        family.render(&mut out);
        assert_eq!(out, "# HELP m two\\nlines\n# TYPE m gauge\nm{l=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn render_names_every_series() {
        let metrics = Metrics::default();
        metrics.command(1);
        metrics.reject(RejectReason::InsufficientBalance);
        let text =
            metrics.render(&[("exchange_ingress_ring_depth", "Commands waiting.", 3.0)], &[("c_total", "c", 7)], &[]);
        assert!(text.contains("# TYPE c_total counter\nc_total 7"));
        assert!(text.contains("exchange_commands_total{type=\"new_order\"} 1"));
        assert!(text.contains("exchange_rejects_total{reason=\"InsufficientBalance\"} 1"));
        assert!(text.contains("exchange_ingress_ring_depth 3"));
        assert!(text.contains("exchange_journal_commit_seconds_bucket"));
    }
}
