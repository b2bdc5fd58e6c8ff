//! Server-side wire-to-wire latency: stage timestamps carried with each command, and the
//! histograms they are recorded into.
//!
//! A command is stamped at every hop of the order path, all on one monotonic clock
//! ([`clock_ns`]):
//!
//! ```text
//! received   the gateway read the request's bytes          (gateway task)
//! pushed     the gateway pushed the command on the ingress  (gateway task)
//! popped     the engine thread took it off the ingress ring (engine thread)
//! committed  its journal batch is durable                   (engine thread)
//! published  its events are on the egress ring              (engine thread)
//! picked     a gateway dispatcher read its answer            (dispatcher thread)
//! written    the answer's bytes were written to the socket   (connection writer)
//! ```
//!
//! The gateway's two stamps travel in the [`crate::bus::IngressCommand`]; the engine thread adds
//! its three and stores the [`CommandTrace`] in the egress slot of each event of the command
//! (preallocated atomics: the engine thread never allocates or locks for this), and the consumer
//! that writes the acknowledgement records the whole trace into [`WireLatency`]. So the engine
//! thread only reads the clock; every histogram is written off it.
//!
//! The stages between consecutive stamps ([`Stage`]) add up to the total exactly, so a
//! regression shows in the stage that grew.

use hdrhistogram::Histogram;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Nanoseconds since the first call in this process on a monotonic clock; never 0 (0 means "not
/// stamped"). Cheap enough for the engine thread (a vDSO clock read and an atomic load).
#[inline]
pub fn clock_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// The gateway's stamps of one command, carried on the ingress ring.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GatewayStamps {
    /// The request's bytes were read ([`clock_ns`]; 0: not traced).
    pub received_ns: u64,
    /// The command was pushed on the ingress ring.
    pub pushed_ns: u64,
}

impl GatewayStamps {
    /// Stamps of a command read at `received_ns` and pushed now.
    pub fn received_at(received_ns: u64) -> Self {
        Self { received_ns, pushed_ns: clock_ns() }
    }
}

/// Every stamp of one command up to its publication on the egress ring (see the module docs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommandTrace {
    /// The gateway's stamps.
    pub gateway: GatewayStamps,
    /// Taken off the ingress ring by the engine thread.
    pub popped_ns: u64,
    /// Its journal batch committed (written, and fdatasynced under `--durability fsync`).
    pub committed_ns: u64,
    /// Its events published on the egress ring.
    pub published_ns: u64,
    /// The command's SBE template id (which message type it was).
    pub template_id: u16,
}

impl CommandTrace {
    /// Whether every stamp up to the publication was taken (commands from internal producers
    /// carry no gateway stamps).
    pub fn is_complete(&self) -> bool {
        self.gateway.received_ns != 0
            && self.gateway.pushed_ns != 0
            && self.popped_ns != 0
            && self.committed_ns != 0
            && self.published_ns != 0
    }
}

/// The stages of the order path, between consecutive stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Read to push: decoding, validation, session checks, the throttle.
    Decode,
    /// Push to pop: waiting on the ingress ring for the engine thread.
    IngressWait,
    /// Pop to commit: the journal append and group commit (fdatasync under `fsync`).
    JournalCommit,
    /// Commit to publication: executing the command (and those before it in its batch).
    Engine,
    /// Publication to the dispatcher reading it: waiting on the egress ring.
    EgressWait,
    /// Dispatcher pickup to the socket write: routing, encoding, the session queue and write.
    EncodeWrite,
}

impl Stage {
    /// Every stage, in path order.
    pub const ALL: [Stage; STAGES] =
        [Stage::Decode, Stage::IngressWait, Stage::JournalCommit, Stage::Engine, Stage::EgressWait, Stage::EncodeWrite];

    /// The stage's label value in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::IngressWait => "ingress_wait",
            Stage::JournalCommit => "journal_commit",
            Stage::Engine => "engine",
            Stage::EgressWait => "egress_wait",
            Stage::EncodeWrite => "encode_write",
        }
    }
}

/// Number of [`Stage`]s.
pub const STAGES: usize = 6;

/// Gateways with histograms of their own, by [`crate::bus::origin`] id (1 to 3).
pub const GATEWAYS: [(u8, &str); 3] =
    [(crate::bus::origin::BINARY, "sbe"), (crate::bus::origin::FIX, "fix"), (crate::bus::origin::REST, "rest")];

/// Message types with histograms of their own; every other command counts as `other`.
pub const MESSAGES: [(u16, &str); 4] = [
    (<codec::NewOrder as codec::Message>::TEMPLATE_ID, "NewOrder"),
    (<codec::CancelOrder as codec::Message>::TEMPLATE_ID, "CancelOrder"),
    (<codec::CancelReplace as codec::Message>::TEMPLATE_ID, "CancelReplace"),
    (<codec::MassCancel as codec::Message>::TEMPLATE_ID, "MassCancel"),
];

/// Label value of commands outside [`MESSAGES`].
const OTHER_MESSAGE: &str = "other";
const MESSAGE_SLOTS: usize = MESSAGES.len() + 1;

/// Largest latency a histogram holds (longer ones are clamped to it): one minute.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant decimal digits the histograms keep (1% resolution; 2 keeps each under 60 KiB).
const SIGNIFICANT_DIGITS: u8 = 2;

/// Bucket upper bounds (ns) of the Prometheus export: 10 per decade from 500 ns to 10 s, fine
/// enough to read a p50 and p99 off the difference of two scrapes within a bucket's width.
pub const EXPORT_BOUNDS_NS: &[u64] = &{
    const STEPS: [u64; 10] = [100, 125, 150, 200, 250, 300, 400, 500, 600, 800];
    const DECADES: usize = 8; // 100 ns · 10^k, k = 0..8 → 100 ns to 8 s (plus 10 s).
    // The 7 steps below 500 ns are left out; 10 s closes the list.
    let mut bounds = [0u64; STEPS.len() * DECADES - 7 + 1];
    let mut index = 0;
    let mut scale = 1u64;
    let mut decade = 0;
    while decade < DECADES {
        let mut step = 0;
        while step < STEPS.len() {
            let bound = STEPS[step] * scale;
            if bound >= 500 {
                bounds[index] = bound;
                index += 1;
            }
            step += 1;
        }
        scale *= 10;
        decade += 1;
    }
    bounds[index] = 10_000_000_000;
    bounds
};

/// Histograms of one gateway and message type: the total and each stage.
struct SeriesHistograms {
    total: Histogram<u64>,
    stages: [Histogram<u64>; STAGES],
}

impl SeriesHistograms {
    fn new() -> Self {
        let histogram =
            || Histogram::new_with_bounds(1, LATENCY_NS_MAX, SIGNIFICANT_DIGITS).expect("bounds are valid constants");
        Self { total: histogram(), stages: std::array::from_fn(|_| histogram()) }
    }
}

/// One exported series: bucket counts over [`EXPORT_BOUNDS_NS`] (not cumulative, one more for
/// values above the last bound) and the sum, in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedHistogram {
    /// Values per bucket.
    pub counts: Vec<u64>,
    /// Sum of the values, ns.
    pub sum_ns: u64,
    /// Number of values.
    pub count: u64,
    /// The median, ns (from the full-resolution histogram).
    pub p50_ns: u64,
    /// The 99th percentile, ns.
    pub p99_ns: u64,
}

impl ExportedHistogram {
    fn of(histogram: &Histogram<u64>) -> Self {
        let mut counts = vec![0u64; EXPORT_BOUNDS_NS.len() + 1];
        let mut sum_ns = 0u64;
        for value in histogram.iter_recorded() {
            // A recorded value stands for its whole sub-bucket (1% wide): it goes in the export
            // bucket of the sub-bucket's lowest value (so a value recorded exactly at a bound
            // counts at or under it) and adds the sub-bucket's middle to the sum.
            let at = value.value_iterated_to();
            let lowest = histogram.lowest_equivalent(at);
            let bucket = EXPORT_BOUNDS_NS.partition_point(|&bound| bound < lowest);
            counts[bucket] += value.count_at_value();
            sum_ns = sum_ns.saturating_add(histogram.median_equivalent(at).saturating_mul(value.count_at_value()));
        }
        Self {
            counts,
            sum_ns,
            count: histogram.len(),
            p50_ns: histogram.value_at_quantile(0.5),
            p99_ns: histogram.value_at_quantile(0.99),
        }
    }
}

/// One gateway and message type's histograms at a scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireSample {
    /// Gateway label (`sbe`, `fix`, `rest`).
    pub gateway: &'static str,
    /// Message type label (`NewOrder`, …, `other`).
    pub message: &'static str,
    /// Read to write.
    pub total: ExportedHistogram,
    /// Each stage, in [`Stage::ALL`] order.
    pub stages: Vec<(Stage, ExportedHistogram)>,
}

/// The process's wire-to-wire histograms, per gateway × message type × stage.
///
/// Recorded by the threads that write acknowledgements (dispatchers, connection writers, REST
/// handlers), never by the engine thread. Each series sits behind its own mutex, held for one
/// record (tens of nanoseconds) or one scrape's copy; its histograms are allocated on first use.
pub struct WireLatency {
    series: [[Mutex<Option<Box<SeriesHistograms>>>; MESSAGE_SLOTS]; GATEWAYS.len()],
}

impl Default for WireLatency {
    fn default() -> Self {
        Self { series: std::array::from_fn(|_| std::array::from_fn(|_| Mutex::new(None))) }
    }
}

impl std::fmt::Debug for WireLatency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireLatency").finish_non_exhaustive()
    }
}

impl WireLatency {
    /// Records the acknowledgement of one command: `trace` as published by the engine thread,
    /// `picked_ns` when the dispatcher read it, `written_ns` when its bytes were written.
    /// Incomplete traces (internal producers) and gateways without histograms are ignored.
    pub fn record(&self, gateway: u8, trace: &CommandTrace, picked_ns: u64, written_ns: u64) {
        if !trace.is_complete() || picked_ns == 0 || written_ns == 0 {
            return;
        }
        let Some(gateway_slot) = GATEWAYS.iter().position(|(id, _)| *id == gateway) else { return };
        let message_slot =
            MESSAGES.iter().position(|(template, _)| *template == trace.template_id).unwrap_or(MESSAGES.len());
        let stamps = [
            trace.gateway.received_ns,
            trace.gateway.pushed_ns,
            trace.popped_ns,
            trace.committed_ns,
            trace.published_ns,
            picked_ns,
            written_ns,
        ];
        let clamp = |ns: u64| ns.clamp(1, LATENCY_NS_MAX);
        let mut series = self.series[gateway_slot][message_slot].lock().unwrap_or_else(|e| e.into_inner());
        let histograms = series.get_or_insert_with(|| Box::new(SeriesHistograms::new()));
        histograms.total.saturating_record(clamp(written_ns.saturating_sub(trace.gateway.received_ns)));
        for (stage, pair) in histograms.stages.iter_mut().zip(stamps.windows(2)) {
            stage.saturating_record(clamp(pair[1].saturating_sub(pair[0])));
        }
    }

    /// Every series recorded into so far, for the metrics endpoint.
    pub fn samples(&self) -> Vec<WireSample> {
        let mut samples = Vec::new();
        for (gateway_slot, (_, gateway)) in GATEWAYS.iter().enumerate() {
            for message_slot in 0..MESSAGE_SLOTS {
                let series = self.series[gateway_slot][message_slot].lock().unwrap_or_else(|e| e.into_inner());
                let Some(histograms) = series.as_ref() else { continue };
                samples.push(WireSample {
                    gateway,
                    message: MESSAGES.get(message_slot).map_or(OTHER_MESSAGE, |(_, name)| name),
                    total: ExportedHistogram::of(&histograms.total),
                    stages: Stage::ALL
                        .iter()
                        .zip(histograms.stages.iter())
                        .map(|(stage, histogram)| (*stage, ExportedHistogram::of(histogram)))
                        .collect(),
                });
            }
        }
        samples
    }
}

/// The process's histograms. Process-wide like the clock they measure with: gateways,
/// dispatchers and the metrics endpoint reach them without being wired to each other.
pub fn wire_latency() -> &'static WireLatency {
    static WIRE: OnceLock<WireLatency> = OnceLock::new();
    WIRE.get_or_init(WireLatency::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_bounds_ascend_from_half_a_microsecond_to_ten_seconds() {
        assert_eq!(EXPORT_BOUNDS_NS.first(), Some(&500));
        assert_eq!(EXPORT_BOUNDS_NS.last(), Some(&10_000_000_000));
        assert!(EXPORT_BOUNDS_NS.windows(2).all(|pair| pair[0] < pair[1]), "{EXPORT_BOUNDS_NS:?}");
    }

    #[test]
    fn stages_add_up_to_the_total() {
        let latency = WireLatency::default();
        let trace = CommandTrace {
            gateway: GatewayStamps { received_ns: 1_000, pushed_ns: 3_000 },
            popped_ns: 6_000,
            committed_ns: 56_000,
            published_ns: 60_000,
            template_id: MESSAGES[0].0,
        };
        latency.record(crate::bus::origin::BINARY, &trace, 70_000, 71_000);
        latency.record(crate::bus::origin::BINARY, &CommandTrace::default(), 70_000, 71_000);
        let samples = latency.samples();
        assert_eq!(samples.len(), 1, "the untraced command is not recorded");
        let sample = &samples[0];
        assert_eq!((sample.gateway, sample.message, sample.total.count), ("sbe", "NewOrder", 1));
        let stages: u64 = sample.stages.iter().map(|(_, h)| h.sum_ns).sum();
        assert!(sample.total.sum_ns.abs_diff(70_000) <= 700, "total {}", sample.total.sum_ns);
        assert!(stages.abs_diff(70_000) <= 700, "stages sum to {stages}");
        let commit = &sample.stages[2];
        assert_eq!(commit.0, Stage::JournalCommit);
        assert!(commit.1.p50_ns.abs_diff(50_000) <= 500);
    }
}
