//! The search for the highest sustained rate (`loadgen sbe --find-max`).
//!
//! Runs the gateway at increasing offered rates (`start`, then × `factor` each step, up to
//! `max`), each a full open-loop run with its own warm-up and measured window, and stops at the
//! first step that is not sustained (after `retries` more attempts): fewer answers per second
//! than 95% of the offered rate, or an acknowledgement p99 above 10 ms (`p99_max_ns`), more than 1% of the requests rejected
//! (the gateway's throttle answers fast, but with rejections), or a run with errors.
//! With batching, the p99 judged is measured from each batch's scheduled write time
//! (`ack_from_write_due`), since the batching delay of the early orders of a batch is chosen,
//! not suffered. The highest sustained step is the
//! result. Since every latency is measured from the scheduled time, a server (or a generator)
//! that falls behind shows up at once as a growing p99 and a lower achieved rate.

use crate::LoadError;
use crate::report::Report;
use serde::Serialize;
use std::fmt;

/// The offered rate must be answered at least at this fraction of it.
pub const ACHIEVED_MIN: f64 = 0.95;
/// At most this fraction of the requests may be rejected (a throttled gateway answers quickly,
/// with rejections: that is not throughput).
pub const REJECTED_MAX: f64 = 0.01;
/// The acknowledgement p99 must stay under this by default, nanoseconds.
pub const P99_MAX_NS: u64 = 10_000_000;

/// One step of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Requests per second asked for.
    pub offered: u64,
    /// Requests per second actually written.
    pub achieved_send: f64,
    /// Answers per second.
    pub achieved: f64,
    /// Acknowledgement latency percentiles, nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Rejected requests (any reason, throttling included).
    pub rejects: u64,
    /// Errors of the run.
    pub errors: u64,
    /// Whether the step was sustained.
    pub sustained: bool,
}

impl Step {
    /// The step's figures from its run's report.
    /// With batching, the latency judged is `ack_from_write_due` (from each batch's scheduled
    /// write time: the batching delay itself is the price of batching, not a sign of overload).
    pub fn of(report: &Report, p99_max_ns: u64) -> Self {
        let ack = report.latency("ack_from_write_due").or_else(|| report.latency("ack_all"));
        let (p50_ns, p99_ns) = ack.map_or((0, 0), |a| (a.p50_ns, a.p99_ns));
        let achieved = report.achieved_response_rate;
        let errors = report.error_count();
        let offered = report.offered_rate as u64;
        let rejects: u64 = report.rejects.values().sum();
        let sustained = achieved >= ACHIEVED_MIN * report.offered_rate
            && p99_ns <= p99_max_ns
            && errors == 0
            && rejects as f64 <= REJECTED_MAX * report.sent.max(1) as f64;
        Self { offered, achieved_send: report.achieved_send_rate, achieved, p50_ns, p99_ns, rejects, errors, sustained }
    }
}

/// The steps run, the last one the first that was not sustained (unless `max` was reached).
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// The p99 limit the steps were judged by, nanoseconds.
    pub p99_max_ns: u64,
}

impl Sweep {
    /// The highest sustained offered rate, if any step was sustained.
    pub fn max_sustained(&self) -> Option<&Step> {
        self.steps.iter().filter(|s| s.sustained).max_by_key(|s| s.offered)
    }
}

/// The offered rates of a sweep: `start`, × `factor`, … while at most `max`.
pub fn rates(start: u64, factor: f64, max: u64) -> Vec<u64> {
    let mut rates = Vec::new();
    let mut rate = start.max(1) as f64;
    while rate as u64 <= max {
        rates.push(rate as u64);
        rate = (rate * factor.max(1.01)).ceil();
    }
    rates
}

/// Runs `run(rate)` at each of `rates` until a step is not sustained; `each` sees every step.
/// A step that is not sustained is run again up to `retries` times before the sweep stops (on a
/// shared machine one stall of a few milliseconds is enough to push a p99 over the limit); every
/// attempt is kept in the steps.
///
/// # Errors
/// The first run that cannot start.
pub fn sweep(
    rates: &[u64],
    retries: usize,
    p99_max_ns: u64,
    mut run: impl FnMut(u64) -> Result<Report, LoadError>,
    mut each: impl FnMut(&Step, &Report),
) -> Result<Sweep, LoadError> {
    let mut steps = Vec::new();
    for &rate in rates {
        let mut sustained = false;
        for _ in 0..=retries {
            let report = run(rate)?;
            let step = Step::of(&report, p99_max_ns);
            each(&step, &report);
            sustained = step.sustained;
            steps.push(step);
            if sustained {
                break;
            }
        }
        if !sustained {
            break;
        }
    }
    Ok(Sweep { steps, p99_max_ns })
}

impl fmt::Display for Sweep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>10} {:>12} {:>12} {:>9} {:>10} {:>10} {:>8} {:>7}  sustained",
            "offered/s", "sent/s", "answered/s", "ratio", "p50 µs", "p99 µs", "rejects", "errors"
        )?;
        for s in &self.steps {
            writeln!(
                f,
                "{:>10} {:>12.0} {:>12.0} {:>8.1}% {:>10.1} {:>10.1} {:>8} {:>7}  {}",
                s.offered,
                s.achieved_send,
                s.achieved,
                100.0 * s.achieved / s.offered.max(1) as f64,
                s.p50_ns as f64 / 1e3,
                s.p99_ns as f64 / 1e3,
                s.rejects,
                s.errors,
                if s.sustained { "yes" } else { "no" }
            )?;
        }
        match self.max_sustained() {
            Some(best) => writeln!(
                f,
                "maximum sustained: {}/s offered, {:.0}/s answered, p99 {:.1} µs (criteria: answered ≥ {}% of offered, p99 ≤ {} ms, rejects ≤ 1%, no errors)",
                best.offered,
                best.achieved,
                best.p99_ns as f64 / 1e3,
                (ACHIEVED_MIN * 100.0) as u32,
                self.p99_max_ns as f64 / 1e6
            ),
            None => writeln!(f, "no step was sustained"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_grow_geometrically_up_to_the_maximum() {
        assert_eq!(rates(1000, 2.0, 10_000), vec![1000, 2000, 4000, 8000]);
        assert_eq!(rates(1000, 1.5, 3000), vec![1000, 1500, 2250]);
    }
}
