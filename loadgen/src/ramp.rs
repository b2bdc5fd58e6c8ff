//! A rate ramp within one run (`--ramp FROM:TO:STEP[:SECONDS]`).
//!
//! One set of sessions, one open-loop [`Schedule`]: after the warm-up (at the first rate) the
//! offered rate goes `FROM`, `FROM + STEP`, … up to `TO`, each for `SECONDS`
//! ([`Ramp::schedule`]). Every request belongs to the step it was *scheduled* in, and its
//! acknowledgement latency (from the scheduled time, as always) goes into that step's histogram,
//! whenever it arrives.
//!
//! While the run goes, the [`RampMonitor`] judges each step a grace period after it ends
//! ([`RampMonitor::grace_ns`]: answers still missing by then count as not answered in time) by
//! the criteria of [`crate::sweep`]: answered at ≥ 95% of the offered rate, p99 within the
//! limit, at most 1% of the requests refused by the gateway (throttling answers fast, but is not
//! throughput), no errors. The first step that fails stops the run: the exchange cannot keep up,
//! and going faster would only pile up a backlog that spoils the drain. The report gets one
//! [`RampRow`] per step run.

use crate::latency::{LatencySummary, new_histogram, record};
use crate::progress::{Counters, Progress};
use crate::schedule::{Clock, Schedule};
use crate::sweep::{ACHIEVED_MIN, REJECTED_MAX};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Most steps a ramp may have.
pub const STEPS_MAX: usize = 1_000;

/// The offered rates of a ramp and how long each lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ramp {
    /// Offered rate of each step, requests per second, ascending.
    pub rates: Vec<u64>,
    /// Length of every step.
    pub step: Duration,
}

impl Ramp {
    /// Parses `FROM:TO:STEP[:SECONDS]`: rates `FROM, FROM + STEP, …` while ≤ `TO` (per second),
    /// each for `SECONDS` (default `default_step`; fractions allowed).
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(text: &str, default_step: Duration) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').map(str::trim).collect();
        if !(3..=4).contains(&parts.len()) {
            return Err(format!("expected FROM:TO:STEP[:SECONDS], got {text:?}"));
        }
        let number = |what: &str, s: &str| {
            s.parse::<u64>().map_err(|_| format!("{what} {s:?} of --ramp {text:?} is not a whole number of requests/s"))
        };
        let (from, to, increment) = (number("FROM", parts[0])?, number("TO", parts[1])?, number("STEP", parts[2])?);
        if from == 0 || increment == 0 {
            return Err(format!("FROM and STEP of --ramp {text:?} must be positive"));
        }
        if to < from {
            return Err(format!("TO is below FROM in --ramp {text:?}"));
        }
        let step = match parts.get(3) {
            Some(seconds) => {
                let value: f64 =
                    seconds.parse().map_err(|_| format!("SECONDS {seconds:?} of --ramp {text:?} is not a number"))?;
                Duration::try_from_secs_f64(value).map_err(|e| format!("SECONDS of --ramp {text:?}: {e}"))?
            }
            None => default_step,
        };
        if step < Duration::from_millis(100) {
            return Err(format!("steps of --ramp {text:?} must last at least 0.1 s"));
        }
        let count = (to - from) / increment + 1;
        if count > STEPS_MAX as u64 {
            return Err(format!("--ramp {text:?} has {count} steps, more than {STEPS_MAX}"));
        }
        let rates = (0..count).map(|k| from + k * increment).collect();
        Ok(Self { rates, step })
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.rates.len()
    }

    /// No steps.
    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }

    /// The mean offered rate over the steps.
    pub fn mean_rate(&self) -> f64 {
        self.rates.iter().sum::<u64>() as f64 / self.rates.len().max(1) as f64
    }

    /// All the steps together.
    pub fn duration(&self) -> Duration {
        self.step * self.rates.len() as u32
    }

    /// The run's schedule: `warmup` at the first rate, then every step.
    pub fn schedule(&self, warmup: Duration, connections: usize) -> Schedule {
        let first = self.rates.first().copied().unwrap_or(1);
        let mut phases = vec![(first, warmup)];
        phases.extend(self.rates.iter().map(|&rate| (rate, self.step)));
        Schedule::piecewise(&phases, connections)
    }

    /// The step a request scheduled `offset_ns` after the start belongs to (None in the
    /// warm-up; the last step after the end).
    pub fn step_at(&self, warmup_ns: u64, offset_ns: u64) -> Option<usize> {
        let into = offset_ns.checked_sub(warmup_ns)?;
        let step_ns = (self.step.as_nanos() as u64).max(1);
        Some(((into / step_ns) as usize).min(self.rates.len().saturating_sub(1)))
    }
}

/// Calls its argument with each connection's [`LiveStats`] in turn (locking each on the way).
pub type Gather<'a> = dyn FnMut(&mut dyn FnMut(&mut LiveStats)) + 'a;

/// No step: a request of the warm-up, or of a run without a ramp.
pub const NO_STEP: u32 = u32::MAX;

/// What one connection's receiver records for the live figures: the acknowledgement latency of
/// each ramp step, and of the answers since the progress line last looked.
#[derive(Debug, Clone)]
pub struct LiveStats {
    /// Per ramp step (empty without a ramp).
    pub steps: Vec<Histogram<u64>>,
    /// Since the last [`LiveStats::take_recent`].
    pub recent: Histogram<u64>,
}

impl LiveStats {
    /// Stats for `steps` ramp steps.
    pub fn new(steps: usize) -> Self {
        Self { steps: (0..steps).map(|_| new_histogram()).collect(), recent: new_histogram() }
    }

    /// Records the acknowledgement latency of a request of `step` ([`NO_STEP`]: none).
    #[inline]
    pub fn record(&mut self, step: u32, latency_ns: u64) {
        record(&mut self.recent, latency_ns);
        if let Some(histogram) = self.steps.get_mut(step as usize) {
            record(histogram, latency_ns);
        }
    }

    /// Adds the recent latencies to `into` and starts a new interval.
    pub fn take_recent(&mut self, into: &mut Histogram<u64>) {
        let _ = into.add(&self.recent);
        self.recent.reset();
    }
}

/// One step of a ramp as reported.
#[derive(Debug, Clone, Serialize)]
pub struct RampRow {
    /// Requests per second asked for.
    pub offered: u64,
    /// Requests of the step sent.
    pub sent: u64,
    /// Of those, answered within the step's grace period.
    pub answered: u64,
    /// Answered requests per second of step.
    pub achieved: f64,
    /// Acknowledgement latency of the step's answered requests, nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p99_9_ns: u64,
    /// Rejections while the step ran (any reason).
    pub rejects: u64,
    /// Of those, refusals by the gateway (throttling).
    pub gateway_rejects: u64,
    /// Errors while the step ran.
    pub errors: u64,
    /// Whether the step met the criteria; false also for a step cut short.
    pub sustained: bool,
    /// The run stopped during the step (its figures cover part of it).
    pub partial: bool,
}

/// Counter readings at a step boundary.
#[derive(Debug, Clone, Copy, Default)]
struct Marks {
    rejects: u64,
    gateway_rejects: u64,
    errors: u64,
}

impl Marks {
    fn read(counters: &Counters) -> Self {
        Self {
            rejects: counters.rejects.load(Ordering::Relaxed),
            gateway_rejects: counters.gateway_rejects.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
        }
    }
}

/// Judges the steps of a ramp as the run goes (see the module documentation).
#[derive(Debug)]
pub struct RampMonitor {
    ramp: Ramp,
    /// Clock reading at which step 0 starts.
    first_step_ns: u64,
    p99_max_ns: u64,
    marks: Vec<Option<Marks>>,
    rows: Vec<RampRow>,
    stopped: bool,
}

impl RampMonitor {
    /// A monitor for `ramp`, whose first step starts at clock reading `first_step_ns`, with the
    /// p99 limit `p99_max_ns`.
    pub fn new(ramp: Ramp, first_step_ns: u64, p99_max_ns: u64) -> Self {
        let marks = vec![None; ramp.len() + 1];
        Self { ramp, first_step_ns, p99_max_ns, marks, rows: Vec::new(), stopped: false }
    }

    /// How long after its end a step is judged: answers later than this count as missing.
    /// Twice the p99 limit, at least 200 ms, at most a step's length.
    pub fn grace_ns(&self) -> u64 {
        (2 * self.p99_max_ns).max(200_000_000).min(self.ramp.step.as_nanos() as u64)
    }

    fn step_start_ns(&self, step: usize) -> u64 {
        self.first_step_ns + step as u64 * self.ramp.step.as_nanos() as u64
    }

    /// Looks at the clock (`now_ns`) and the counters; judges every step whose grace period is
    /// over, from the receivers' stats (`gather` calls its argument with each connection's).
    /// Returns true when a step failed and the run should stop.
    pub fn poll(&mut self, now_ns: u64, counters: &Counters, sent: &[u64], gather: &mut Gather<'_>) -> bool {
        for k in 0..self.marks.len() {
            if self.marks[k].is_none() && now_ns >= self.step_start_ns(k) {
                self.marks[k] = Some(Marks::read(counters));
            }
        }
        while !self.stopped && self.rows.len() < self.ramp.len() {
            let k = self.rows.len();
            if now_ns < self.step_start_ns(k + 1) + self.grace_ns() {
                break;
            }
            let row = self.judge(k, sent.get(k).copied().unwrap_or(0), false, counters, gather);
            self.stopped = !row.sustained;
            self.rows.push(row);
        }
        self.stopped
    }

    /// The rows, judging the steps not judged yet that the run reached (one with less than 99%
    /// of its requests sent as partial).
    pub fn finish(mut self, counters: &Counters, sent: &[u64], gather: &mut Gather<'_>) -> Vec<RampRow> {
        while !self.stopped && self.rows.len() < self.ramp.len() {
            let k = self.rows.len();
            let sent_k = sent.get(k).copied().unwrap_or(0);
            if sent_k == 0 {
                break;
            }
            let partial = sent_k < self.expected(k) * 99 / 100;
            let row = self.judge(k, sent_k, partial, counters, gather);
            self.stopped = !row.sustained;
            self.rows.push(row);
        }
        self.rows
    }

    /// Requests the schedule holds for step `k`.
    fn expected(&self, k: usize) -> u64 {
        (self.ramp.step.as_nanos() * u128::from(self.ramp.rates[k])).div_ceil(1_000_000_000) as u64
    }

    fn judge(&mut self, k: usize, sent: u64, partial: bool, counters: &Counters, gather: &mut Gather<'_>) -> RampRow {
        let mut histogram = new_histogram();
        gather(&mut |live| {
            if let Some(step) = live.steps.get(k) {
                let _ = histogram.add(step);
            }
        });
        let start = self.marks[k].unwrap_or_default();
        let end = self.marks[k + 1].unwrap_or_else(|| Marks::read(counters));
        let summary = LatencySummary::of("step", &histogram);
        let offered = self.ramp.rates[k];
        let answered = histogram.len();
        let achieved = answered as f64 / self.ramp.step.as_secs_f64();
        let rejects = end.rejects.saturating_sub(start.rejects);
        let gateway_rejects = end.gateway_rejects.saturating_sub(start.gateway_rejects);
        let errors = end.errors.saturating_sub(start.errors);
        let sustained = !partial
            && achieved >= ACHIEVED_MIN * offered as f64
            && summary.p99_ns <= self.p99_max_ns
            && gateway_rejects as f64 <= REJECTED_MAX * sent.max(1) as f64
            && errors == 0;
        RampRow {
            offered,
            sent,
            answered,
            achieved,
            p50_ns: summary.p50_ns,
            p99_ns: summary.p99_ns,
            p99_9_ns: summary.p99_9_ns,
            rejects,
            gateway_rejects,
            errors,
            sustained,
            partial,
        }
    }
}

/// The main thread's loop while the sender runs: draws progress (with the p99 of the last
/// second's answers) and polls the ramp monitor, setting `stop` when a step was not sustained.
pub(crate) fn watch<T>(
    sender: &std::thread::JoinHandle<T>,
    progress: &mut Progress,
    counters: &Counters,
    clock: &Clock,
    mut monitor: Option<&mut RampMonitor>,
    stop: &AtomicBool,
    gather: &mut Gather<'_>,
) {
    let mut recent = new_histogram();
    while !sender.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        if progress.visible() && progress.due() {
            recent.reset();
            gather(&mut |live| live.take_recent(&mut recent));
            progress.set_p99((!recent.is_empty()).then(|| recent.value_at_quantile(0.99)));
        }
        progress.tick(counters);
        if let Some(monitor) = monitor.as_deref_mut()
            && monitor.poll(clock.now_ns(), counters, &counters.step_sent(), gather)
        {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Puts the ramp's rows into a gateway report; its offered rate and measured window become those
/// of the steps run (the mean offered rate, and their total length).
pub(crate) fn attach(report: &mut crate::report::Report, ramp: Option<&Ramp>, rows: Option<Vec<RampRow>>) {
    let (Some(ramp), Some(rows)) = (ramp, rows) else { return };
    if !rows.is_empty() {
        report.offered_rate = rows.iter().map(|r| r.offered as f64).sum::<f64>() / rows.len() as f64;
        report.duration_s = ramp.step.as_secs_f64() * rows.len() as f64;
    }
    report.ramp = rows;
}

/// The ramp table of a report.
pub struct RampTable<'a>(pub &'a [RampRow]);

impl fmt::Display for RampTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>10} {:>10} {:>12} {:>8} {:>10} {:>10} {:>10} {:>8} {:>9} {:>7}  sustained",
            "offered/s", "sent", "answered/s", "ratio", "p50 µs", "p99 µs", "p99.9 µs", "rejects", "gw rej", "errors"
        )?;
        for row in self.0 {
            writeln!(
                f,
                "{:>10} {:>10} {:>12.0} {:>7.1}% {:>10.1} {:>10.1} {:>10.1} {:>8} {:>9} {:>7}  {}",
                row.offered,
                row.sent,
                row.achieved,
                100.0 * row.achieved / row.offered.max(1) as f64,
                row.p50_ns as f64 / 1e3,
                row.p99_ns as f64 / 1e3,
                row.p99_9_ns as f64 / 1e3,
                row.rejects,
                row.gateway_rejects,
                row.errors,
                match (row.sustained, row.partial) {
                    (true, _) => "yes",
                    (false, true) => "no (cut short)",
                    (false, false) => "no",
                }
            )?;
        }
        match self.0.iter().filter(|r| r.sustained).map(|r| r.offered).max() {
            Some(best) => writeln!(f, "highest sustained step: {best}/s"),
            None => writeln!(f, "no step was sustained"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_gives_the_rates_and_the_step_length() {
        let ramp = Ramp::parse("1000:5000:1000:2.5", Duration::from_secs(9)).unwrap();
        assert_eq!(ramp.rates, vec![1000, 2000, 3000, 4000, 5000]);
        assert_eq!(ramp.step, Duration::from_millis(2500));
        assert_eq!(ramp.duration(), Duration::from_millis(12_500));
        // TO need not be on the grid; SECONDS defaults.
        let ramp = Ramp::parse("100:350:100", Duration::from_secs(3)).unwrap();
        assert_eq!(ramp.rates, vec![100, 200, 300]);
        assert_eq!(ramp.step, Duration::from_secs(3));
        assert_eq!(Ramp::parse("7:7:1", Duration::from_secs(1)).unwrap().rates, vec![7]);
    }

    #[test]
    fn parse_refuses_bad_ramps_with_a_reason() {
        for (text, needle) in [
            ("1000:2000", "FROM:TO:STEP"),
            ("1:2:3:4:5", "FROM:TO:STEP"),
            ("a:2000:100", "FROM \"a\""),
            ("0:2000:100", "must be positive"),
            ("1000:2000:0", "must be positive"),
            ("2000:1000:100", "TO is below FROM"),
            ("1000:2000:100:x", "SECONDS \"x\""),
            ("1000:2000:100:-1", "SECONDS"),
            ("1000:2000:100:0.01", "at least 0.1 s"),
            ("1:1000000:1", "more than 1000"),
        ] {
            let error = Ramp::parse(text, Duration::from_secs(1)).unwrap_err();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn the_schedule_runs_the_warmup_then_each_step_at_its_rate() {
        let ramp = Ramp { rates: vec![1000, 2000, 4000], step: Duration::from_secs(1) };
        let warmup = Duration::from_millis(500);
        let schedule = ramp.schedule(warmup, 3);
        let ms = 1_000_000;
        // Warm-up: 500 requests at 1000/s, then 1000, 2000 and 4000 in the steps.
        assert_eq!(schedule.count_before(500 * ms), 500);
        assert_eq!(schedule.count_before(1_500 * ms), 1_500);
        assert_eq!(schedule.count_before(2_500 * ms), 3_500);
        assert_eq!(schedule.count_before(3_500 * ms), 7_500);
        assert_eq!(schedule.due_ns(500), 500 * ms);
        assert_eq!(schedule.due_ns(1_500), 1_500 * ms);
        assert_eq!(schedule.due_ns(1_501), 1_500 * ms + 500_000);
        assert_eq!(schedule.due_ns(3_500), 2_500 * ms);
        assert_eq!(schedule.due_ns(3_501), 2_500 * ms + 250_000);
        let total = schedule.count_before(warmup.as_nanos() as u64 + ramp.duration().as_nanos() as u64);
        assert_eq!(total, 7_500);
        let mut last = 0;
        let mut per_step = [0u64; 3];
        for index in 0..total {
            let due = schedule.due_ns(index);
            assert!(due >= last, "due times never go backwards ({index})");
            last = due;
            assert_eq!(schedule.connection(index), (index % 3) as usize);
            if let Some(step) = ramp.step_at(500 * ms, due) {
                per_step[step] += 1;
            } else {
                assert!(index < 500);
            }
        }
        assert_eq!(per_step, [1000, 2000, 4000]);
        assert!(last < 3_500 * ms);
    }

    #[test]
    fn phases_that_do_not_end_on_a_request_keep_exact_times() {
        // 3 per second for 1 s: due at 0, 333.3, 666.6 ms; the next phase starts at 1 s.
        let schedule = Schedule::piecewise(&[(3, Duration::from_secs(1)), (2, Duration::from_secs(1))], 1);
        let due: Vec<u64> = (0..6).map(|i| schedule.due_ns(i)).collect();
        assert_eq!(due, vec![0, 333_333_333, 666_666_666, 1_000_000_000, 1_500_000_000, 2_000_000_000]);
        assert_eq!(schedule.count_before(1_000_000_000), 3);
        assert_eq!(schedule.count_before(1_000_000_001), 4);
        assert_eq!(schedule.count_before(2_000_000_000), 5);
    }

    fn stats_with(step: usize, steps: usize, samples: &[(u64, u64)]) -> LiveStats {
        let mut live = LiveStats::new(steps);
        for &(latency, count) in samples {
            for _ in 0..count {
                live.record(step as u32, latency);
            }
        }
        live
    }

    #[test]
    fn the_monitor_stops_at_the_first_step_that_is_not_sustained() {
        let ramp = Ramp { rates: vec![100, 200, 300], step: Duration::from_secs(1) };
        let mut monitor = RampMonitor::new(ramp, 0, 10_000_000);
        let counters = Counters::default();
        let sec = 1_000_000_000;
        // Step 0: all 100 answered fast. Step 1: 200 answered, but 5 of them slow (p99 > 10 ms).
        let mut conns = [stats_with(0, 3, &[(50_000, 100)]), stats_with(1, 3, &[(80_000, 195), (20_000_000, 5)])];
        let mut gather = |f: &mut dyn FnMut(&mut LiveStats)| conns.iter_mut().for_each(&mut *f);
        assert!(!monitor.poll(0, &counters, &[0, 0, 0], &mut gather));
        assert!(!monitor.poll(sec, &counters, &[100, 0, 0], &mut gather));
        // Not judged before the grace period is over.
        assert!(!monitor.poll(sec + 100_000_000, &counters, &[100, 50, 0], &mut gather));
        assert!(!monitor.poll(sec + 200_000_000, &counters, &[100, 60, 0], &mut gather));
        assert!(!monitor.poll(2 * sec, &counters, &[100, 200, 0], &mut gather));
        assert!(monitor.poll(2 * sec + 200_000_000, &counters, &[100, 200, 50], &mut gather));
        let rows = monitor.finish(&counters, &[100, 200, 60], &mut gather);
        assert_eq!(rows.len(), 2, "the run stops after the failed step");
        assert!(rows[0].sustained && !rows[1].sustained && !rows[1].partial);
        assert_eq!((rows[0].answered, rows[1].answered), (100, 200));
        assert!(rows[1].p99_ns >= 19_000_000, "p99 of step 1 is the slow answers': {}", rows[1].p99_ns);
    }

    #[test]
    fn missing_answers_and_gateway_rejects_fail_a_step() {
        let ramp = Ramp { rates: vec![1000, 2000], step: Duration::from_secs(1) };
        let counters = Counters::default();
        let sec = 1_000_000_000;
        // 900 of 1000 answered in time: 90% < 95%.
        let mut monitor = RampMonitor::new(ramp.clone(), 0, 10_000_000);
        let mut conns = [stats_with(0, 2, &[(50_000, 900)])];
        let mut gather = |f: &mut dyn FnMut(&mut LiveStats)| conns.iter_mut().for_each(&mut *f);
        monitor.poll(0, &counters, &[0, 0], &mut gather);
        assert!(monitor.poll(sec + 200_000_000, &counters, &[1000, 200], &mut gather));
        // All answered, but 2% refused by the gateway.
        let mut monitor = RampMonitor::new(ramp, 0, 10_000_000);
        let mut conns = [stats_with(0, 2, &[(50_000, 1000)])];
        let mut gather = |f: &mut dyn FnMut(&mut LiveStats)| conns.iter_mut().for_each(&mut *f);
        monitor.poll(0, &counters, &[0, 0], &mut gather);
        counters.gateway_rejects.store(20, Ordering::Relaxed);
        counters.rejects.store(20, Ordering::Relaxed);
        assert!(monitor.poll(sec + 200_000_000, &counters, &[1000, 200], &mut gather));
        let rows = monitor.finish(&counters, &[1000, 200], &mut gather);
        assert_eq!((rows[0].gateway_rejects, rows[0].rejects), (20, 20));
        assert!(!rows[0].sustained);
    }

    #[test]
    fn a_run_ending_early_reports_the_step_it_was_in_as_partial() {
        let ramp = Ramp { rates: vec![100, 200], step: Duration::from_secs(1) };
        let mut monitor = RampMonitor::new(ramp, 0, 10_000_000);
        let counters = Counters::default();
        let mut conns = [stats_with(0, 2, &[(50_000, 100)]), stats_with(1, 2, &[(50_000, 50)])];
        let mut gather = |f: &mut dyn FnMut(&mut LiveStats)| conns.iter_mut().for_each(&mut *f);
        monitor.poll(0, &counters, &[0, 0], &mut gather);
        let rows = monitor.finish(&counters, &[100, 50], &mut gather);
        assert_eq!(rows.len(), 2);
        assert!(rows[0].sustained);
        assert!(rows[1].partial && !rows[1].sustained);
    }
}
