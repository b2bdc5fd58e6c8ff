//! Runtime metrics in Prometheus text format.
//!
//! The engine thread records into preallocated atomics only (counters and fixed-bucket
//! histograms): recording is a few relaxed atomic adds, never a lock or an allocation. A scrape
//! formats them on the HTTP thread. (General-purpose metrics crates allocate on first use of a
//! label set and their histograms grow storage as they record, which the engine thread must not
//! do; the handful of series here does not need one.)

use codec::{RejectReason, WireEnum};
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

    fn render(&self, out: &mut String, name: &str, help: &str, scale: f64) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(self.counts.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 * scale);
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", self.sum.load(Ordering::Relaxed) as f64 * scale);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
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
    /// Time of each snapshot (serialise + write + fsync).
    pub snapshot_ns: AtomicHistogram,
    /// Commands refused because the ingress ring was full (internal producers; each gateway
    /// counts its own).
    pub ingress_busy: AtomicU64,
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

    /// Renders every metric plus the given gauges and counters (name, help, value) as Prometheus
    /// text.
    pub fn render(&self, gauges: &[(&str, &str, f64)], counters: &[(&str, &str, u64)]) -> String {
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
            1e-9,
        );
        self.engine_command_ns.render(
            &mut out,
            "exchange_engine_command_seconds",
            "Engine service time per command (execution and event publication).",
            1e-9,
        );
        self.snapshot_ns.render(
            &mut out,
            "exchange_snapshot_seconds",
            "Snapshot serialise + write + fsync time.",
            1e-9,
        );
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        out
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
    fn render_names_every_series() {
        let metrics = Metrics::default();
        metrics.command(1);
        metrics.reject(RejectReason::InsufficientBalance);
        let text = metrics.render(&[("exchange_ingress_ring_depth", "Commands waiting.", 3.0)], &[("c_total", "c", 7)]);
        assert!(text.contains("# TYPE c_total counter\nc_total 7"));
        assert!(text.contains("exchange_commands_total{type=\"new_order\"} 1"));
        assert!(text.contains("exchange_rejects_total{reason=\"InsufficientBalance\"} 1"));
        assert!(text.contains("exchange_ingress_ring_depth 3"));
        assert!(text.contains("exchange_journal_commit_seconds_bucket"));
    }
}
