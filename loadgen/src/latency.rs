//! Latency accounting, corrected for coordinated omission.
//!
//! A load generator that measures from the moment it actually sent a request hides exactly the
//! delays it should report: when the system under test stalls (or the generator itself falls
//! behind, blocked in a write or descheduled), the requests that *should* have gone out during
//! the stall go out late, and timing them from their late send makes them look fast. That is
//! coordinated omission: the generator coordinates with the server and omits the bad samples.
//!
//! Here every request carries its *scheduled* send time from the open-loop
//! [`crate::schedule::Schedule`], fixed before the run, and its latency is
//! `receive time − scheduled time` ([`Sent::latency_ns`]). A stall therefore adds latency to
//! every request scheduled while it lasted, as a user arriving at that moment would have seen.
//! The uncorrected figure (`receive − actual send`, [`Sent::uncorrected_ns`]) and the send lag
//! (`actual send − scheduled`, [`Sent::send_lag_ns`]) are kept beside it as diagnostics: a large
//! send lag means the generator itself could not keep up, and the corrected figures include it.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram records (60 s); larger values are clamped to it.
pub const LATENCY_MAX_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 1 ns to [`LATENCY_MAX_NS`], three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3).expect("valid histogram bounds")
}

/// Records `value` nanoseconds, clamped to the histogram's range (a zero becomes 1 ns).
#[inline]
pub fn record(histogram: &mut Histogram<u64>, value_ns: u64) {
    histogram.saturating_record(value_ns.max(1));
}

/// The two send times of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// When the schedule said to send it, nanoseconds after the run's start.
    pub scheduled_ns: u64,
    /// When it was actually written to the socket (never before `scheduled_ns`).
    pub actual_ns: u64,
}

impl Sent {
    /// The coordinated-omission-corrected latency: `received − scheduled`. This is the figure
    /// every report shows.
    #[inline]
    pub fn latency_ns(&self, received_ns: u64) -> u64 {
        received_ns.saturating_sub(self.scheduled_ns)
    }

    /// The uncorrected latency, `received − actual send`: what a closed-loop or naive generator
    /// would report. A diagnostic only.
    #[inline]
    pub fn uncorrected_ns(&self, received_ns: u64) -> u64 {
        received_ns.saturating_sub(self.actual_ns)
    }

    /// How late the generator sent the request: `actual − scheduled`.
    #[inline]
    pub fn send_lag_ns(&self) -> u64 {
        self.actual_ns.saturating_sub(self.scheduled_ns)
    }
}

/// A fixed set of named histograms (one per measured quantity), mergeable across threads.
#[derive(Debug, Clone)]
pub struct Histograms {
    names: &'static [&'static str],
    histograms: Vec<Histogram<u64>>,
}

impl Histograms {
    /// One empty histogram per name.
    pub fn new(names: &'static [&'static str]) -> Self {
        Self { names, histograms: names.iter().map(|_| new_histogram()).collect() }
    }

    /// Records `value_ns` into histogram `index` (an index into the names).
    #[inline]
    pub fn record(&mut self, index: usize, value_ns: u64) {
        record(&mut self.histograms[index], value_ns);
    }

    /// Histogram `index`.
    pub fn get(&self, index: usize) -> &Histogram<u64> {
        &self.histograms[index]
    }

    /// Adds another set with the same names.
    pub fn merge(&mut self, other: &Histograms) {
        assert_eq!(self.names, other.names, "merging different histogram sets");
        for (mine, theirs) in self.histograms.iter_mut().zip(&other.histograms) {
            mine.add(theirs).expect("same bounds");
        }
    }

    /// `(name, histogram)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Histogram<u64>)> {
        self.names.iter().copied().zip(&self.histograms)
    }
}

/// One histogram reduced to the reported figures, in nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    /// What was measured (`ack_all`, `fill`, `rtt`…).
    pub name: String,
    /// Samples.
    pub count: u64,
    /// Smallest sample.
    pub min_ns: u64,
    /// Mean.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p99_9_ns: u64,
    /// 99.99th percentile.
    pub p99_99_ns: u64,
    /// Largest sample.
    pub max_ns: u64,
}

impl LatencySummary {
    /// Summarizes a histogram (all zeros when it is empty).
    pub fn of(name: &str, histogram: &Histogram<u64>) -> Self {
        let empty = histogram.is_empty();
        let at = |q: f64| if empty { 0 } else { histogram.value_at_percentile(q) };
        Self {
            name: name.to_owned(),
            count: histogram.len(),
            min_ns: if empty { 0 } else { histogram.min() },
            mean_ns: if empty { 0.0 } else { histogram.mean() },
            p50_ns: at(50.0),
            p90_ns: at(90.0),
            p99_ns: at(99.0),
            p99_9_ns: at(99.9),
            p99_99_ns: at(99.99),
            max_ns: if empty { 0 } else { histogram.max() },
        }
    }

    /// The reported columns, in table order: p50, p90, p99, p99.9, p99.99, max.
    pub fn columns(&self) -> [(&'static str, u64); 6] {
        [
            ("p50", self.p50_ns),
            ("p90", self.p90_ns),
            ("p99", self.p99_ns),
            ("p99.9", self.p99_9_ns),
            ("p99.99", self.p99_99_ns),
            ("max", self.max_ns),
        ]
    }
}
