//! The open-loop schedule and the pacer that follows it.
//!
//! Request `i` (counted over the whole run, all connections together) is due at
//! `t0 + i / rate`, computed exactly in integer nanoseconds from `i` (never by adding an interval
//! to the previous time, so rounding never drifts), and goes to connection `i mod C`. The due
//! time is fixed before the run starts: it does not depend on when earlier requests were
//! actually sent or answered. That is what makes the load *open*: a slow server does not slow
//! the generator down, and every request's latency is measured from its due time (see
//! [`crate::latency`]).

use std::time::{Duration, Instant};

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// When each request is due and which connection sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    rate: u64,
    connections: usize,
}

impl Schedule {
    /// A schedule of `rate` requests per second (at least 1) spread round-robin over
    /// `connections` connections (at least 1).
    pub fn new(rate: u64, connections: usize) -> Self {
        Self { rate: rate.max(1), connections: connections.max(1) }
    }

    /// Requests per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Nanoseconds after the start at which request `index` is due: `index × 10⁹ / rate`,
    /// rounded down.
    pub fn due_ns(&self, index: u64) -> u64 {
        (u128::from(index) * NANOS_PER_SECOND / u128::from(self.rate)) as u64
    }

    /// The connection that sends request `index`.
    pub fn connection(&self, index: u64) -> usize {
        (index % self.connections as u64) as usize
    }

    /// How many requests are due strictly before `ns` after the start (the first index due at
    /// or after `ns`).
    pub fn count_before(&self, ns: u64) -> u64 {
        let scaled = u128::from(ns) * u128::from(self.rate);
        scaled.div_ceil(NANOS_PER_SECOND) as u64
    }
}

/// A monotonic clock reading nanoseconds since a fixed start.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self { start: Instant::now() }
    }

    /// Nanoseconds since the start.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// The instant `ns` nanoseconds after the start.
    pub fn instant_at(&self, ns: u64) -> Instant {
        self.start + Duration::from_nanos(ns)
    }
}

/// Waits for due times: sleeps while the due time is further than `spin` away, then spins.
///
/// `thread::sleep` wakes tens of microseconds late, which would show up as send lag (and so as
/// latency, since latency counts from the due time); spinning the last stretch removes most of
/// it at the cost of some CPU. A pacer never waits for a time already past: a late request is
/// sent at once, and the ones behind it follow back to back until the schedule is caught up.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    spin: Duration,
}

impl Pacer {
    /// A pacer that spins for the last `spin` before each due time.
    pub fn new(spin: Duration) -> Self {
        Self { spin }
    }

    /// Blocks until `clock` reads at least `due_ns`; returns the reading.
    pub fn wait_until(&self, clock: &Clock, due_ns: u64) -> u64 {
        let spin_ns = self.spin.as_nanos() as u64;
        loop {
            let now = clock.now_ns();
            if now >= due_ns {
                return now;
            }
            let remaining = due_ns - now;
            if remaining > spin_ns {
                std::thread::sleep(Duration::from_nanos(remaining - spin_ns));
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Parses a core list such as `0,1` or `0-3,6` into core ids.
///
/// # Errors
/// Text that is not a comma-separated list of numbers and ranges.
pub fn parse_cores(text: &str) -> Result<Vec<usize>, String> {
    let mut cores = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("bad core number {s:?} in {text:?}"));
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (number(lo)?, number(hi)?);
                if lo > hi {
                    return Err(format!("empty core range {part:?}"));
                }
                cores.extend(lo..=hi);
            }
            None => cores.push(number(part)?),
        }
    }
    if cores.is_empty() {
        return Err(format!("no cores in {text:?}"));
    }
    Ok(cores)
}

/// Pins the calling thread to `core`, best effort: when the system refuses (no such core), a
/// warning goes to stderr and the thread runs unpinned. Returns whether it is pinned.
pub fn pin_current_thread(core: usize) -> bool {
    let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core });
    if !pinned {
        eprintln!("warning: cannot pin thread {:?} to core {core}", std::thread::current().name());
    }
    pinned
}
