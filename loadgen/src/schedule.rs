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
///
/// A schedule is one rate ([`Schedule::new`]) or a sequence of phases, each with its own rate
/// and length ([`Schedule::piecewise`], for a rate ramp): within a phase that starts at `T` with
/// request `F`, request `i` is due at `T + (i − F) / rate`, and the first request of the next
/// phase is due at its start, so due times never go backwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    phases: Vec<Phase>,
    connections: usize,
}

/// One constant-rate stretch of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Phase {
    /// Index of its first request.
    first: u64,
    /// Its start, nanoseconds after the schedule's start.
    start_ns: u64,
    /// Requests per second.
    rate: u64,
}

impl Schedule {
    /// A schedule of `rate` requests per second (at least 1) spread round-robin over
    /// `connections` connections (at least 1).
    pub fn new(rate: u64, connections: usize) -> Self {
        Self { phases: vec![Phase { first: 0, start_ns: 0, rate: rate.max(1) }], connections: connections.max(1) }
    }

    /// A schedule of consecutive phases `(rate, length)`; after the last phase its rate goes on.
    /// Phase `k` holds the requests due in `[start_k, start_k + length_k)`: `⌈length × rate⌉`
    /// of them (an empty list gives one phase of 1 request per second).
    pub fn piecewise(phases: &[(u64, Duration)], connections: usize) -> Self {
        let mut list = Vec::with_capacity(phases.len());
        let (mut first, mut start_ns) = (0u64, 0u64);
        for &(rate, length) in phases {
            let rate = rate.max(1);
            list.push(Phase { first, start_ns, rate });
            let length_ns = length.as_nanos() as u64;
            first += (u128::from(length_ns) * u128::from(rate)).div_ceil(NANOS_PER_SECOND) as u64;
            start_ns += length_ns;
        }
        if list.is_empty() {
            return Self::new(1, connections);
        }
        Self { phases: list, connections: connections.max(1) }
    }

    /// Requests per second of the first phase.
    pub fn rate(&self) -> u64 {
        self.phases[0].rate
    }

    /// The phase request `index` belongs to.
    fn phase_of(&self, index: u64) -> &Phase {
        let after = self.phases.partition_point(|phase| phase.first <= index);
        &self.phases[after.saturating_sub(1)]
    }

    /// Nanoseconds after the start at which request `index` is due: `index × 10⁹ / rate` within
    /// its phase, rounded down.
    pub fn due_ns(&self, index: u64) -> u64 {
        let phase = self.phase_of(index);
        phase.start_ns + (u128::from(index - phase.first) * NANOS_PER_SECOND / u128::from(phase.rate)) as u64
    }

    /// The connection that sends request `index`.
    pub fn connection(&self, index: u64) -> usize {
        (index % self.connections as u64) as usize
    }

    /// How many requests are due strictly before `ns` after the start (the first index due at
    /// or after `ns`).
    pub fn count_before(&self, ns: u64) -> u64 {
        let after = self.phases.partition_point(|phase| phase.start_ns <= ns);
        let phase = &self.phases[after.saturating_sub(1)];
        let scaled = u128::from(ns - phase.start_ns) * u128::from(phase.rate);
        phase.first + scaled.div_ceil(NANOS_PER_SECOND) as u64
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

/// One socket write of a batched run: the requests (by index) that connection `connection`
/// sends together, each with its own due time, written when the last of them is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The connection that writes it.
    pub connection: usize,
    /// `(request index, due time in ns after the start)`, in index order.
    pub requests: Vec<(u64, u64)>,
}

impl Batch {
    /// When the batch is written: the due time of its last request (which is the latest).
    pub fn write_due_ns(&self) -> u64 {
        self.requests.last().map_or(0, |&(_, due)| due)
    }
}

/// Groups the `total` requests of a [`Schedule`] into per-connection batches of `size`
/// (at least 1): connection `k`'s requests `k, k+C, k+2C…` are cut into runs of `size`
/// consecutive ones, and the last run of each connection may be shorter. Batches come out in
/// the order of their write times (the index of their last request), so a sender that waits
/// for each batch's [`Batch::write_due_ns`] never waits for an earlier time after a later one.
///
/// The schedule itself is untouched: every request keeps its own due time (and its latency is
/// measured from it); batching only delays the *write* of the early requests of a batch to the
/// due time of its last one, which is the cost being measured. With `size` 1 every request is
/// its own batch, written at its own due time.
#[derive(Debug, Clone)]
pub struct Batches {
    schedule: Schedule,
    connections: usize,
    size: usize,
    total: u64,
    next: u64,
    pending: Vec<Vec<(u64, u64)>>,
}

impl Batches {
    /// The batches of `total` requests of `schedule` over `connections` connections.
    pub fn new(schedule: Schedule, connections: usize, total: u64, size: usize) -> Self {
        let connections = connections.max(1);
        Self { schedule, connections, size: size.max(1), total, next: 0, pending: vec![Vec::new(); connections] }
    }
}

impl Iterator for Batches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        while self.next < self.total {
            let index = self.next;
            self.next += 1;
            let connection = self.schedule.connection(index);
            let pending = &mut self.pending[connection];
            pending.push((index, self.schedule.due_ns(index)));
            let last_of_connection = index + self.connections as u64 >= self.total;
            if pending.len() >= self.size || last_of_connection {
                let requests = std::mem::take(pending);
                return Some(Batch { connection, requests });
            }
        }
        None
    }
}
