//! Open-loop latency profiler for the exchange's gateways (SBE, FIX, REST) and WebSocket
//! market-data fan-out.
//!
//! The measurements, each printed as a table (and optionally written as JSON and as an
//! HdrHistogram interval log):
//!
//! - [`baseline`]: a raw loopback TCP ping-pong with the size of a framed SBE `NewOrder`
//!   (70 bytes), on the same schedule. It is the floor: the kernel's loopback round trip plus
//!   the generator's own costs, which every gateway figure is divided by.
//! - [`sbe`]: `C` binary-gateway sessions, each logged on as one of the funded load-test users
//!   that `exchange --load-users N` creates ([`users`]), sending a seeded order mix ([`flow`]),
//!   optionally several orders per socket write (`batch`), and [`sweep`], the search for the
//!   highest sustained rate.
//! - [`fix`]: the same schedule, mix and report over `C` FIX 4.4 sessions (`LOAD<user id>`).
//! - [`rest`]: the same over `C` keep-alive HTTP/1.1 connections ([`http`]) sending signed
//!   `POST /api/v1/order` / `DELETE /api/v1/order` requests.
//! - [`memory`]: the server's resident memory per resting order, filling N resting orders
//!   through the SBE gateway.
//! - [`fsync`]: append + `fdatasync` times in a directory, the floor of a durable acknowledgement.
//! - [`server`]: the server's own wire-to-wire and stage histograms over the run, read from its
//!   `/metrics` before and after (`--metrics`), printed next to the round trip.
//! - [`ws`]: `N` WebSocket subscribers of a symbol's public streams: frames per second, depth
//!   update-id gaps, lag notices and the latency from each frame's event time to its receipt.
//!
//! Users: the load-test users of `exchange --load-users N`, or users created, funded and given
//! API keys through the admin API ([`users::setup`]).
//!
//! What is sent: a configurable mix ([`flow`]), a named workload [`profile`] (`exchange-core`,
//! `w-obrs`, shared with the engine benchmark), or the replay of an order-flow CSV file; at one
//! rate or a [`ramp`] of rates within one run. Results: a table, JSON, an HdrHistogram log and a
//! percentile [`plot`] (SVG).
//!
//! Both are **open loop**: a single schedule ([`schedule`]) fixes when each request is due,
//! `t0 + i / rate`, independently of the responses, and every latency is measured from that
//! scheduled time, not from the moment the request was actually written, which corrects for
//! coordinated omission ([`latency`] explains it). [`compare`] runs the baseline and the gateway
//! back to back and divides the gateway's acknowledgement latency by the baseline's round trip at
//! each percentile.
//!
//! ```no_run
//! let report = loadgen::sbe::run(&loadgen::sbe::SbeConfig {
//!     address: "127.0.0.1:9100".into(),
//!     rate: 2_000,
//!     ..Default::default()
//! })?;
//! println!("{report}");
//! # Ok::<(), loadgen::LoadError>(())
//! ```

pub mod baseline;
pub mod fix;
pub mod flow;
pub mod fsync;
pub mod http;
pub mod latency;
pub mod memory;
pub mod plot;
pub mod profile;
pub mod progress;
pub mod ramp;
pub mod report;
pub mod rest;
pub mod sbe;
pub mod schedule;
pub mod server;
pub mod sweep;
pub mod users;
pub mod ws;

use std::fmt;

/// Why a run could not happen (failures during a run are counted in the report instead).
#[derive(Debug)]
pub struct LoadError(String);

impl LoadError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

impl From<std::io::Error> for LoadError {
    fn from(error: std::io::Error) -> Self {
        Self(format!("i/o: {error}"))
    }
}

/// Events per second between the first and the last of `count` events (nanosecond times); 0
/// with fewer than two.
pub fn achieved_rate(count: u64, first_ns: u64, last_ns: u64) -> f64 {
    if count < 2 || last_ns <= first_ns {
        return 0.0;
    }
    (count - 1) as f64 * 1e9 / (last_ns - first_ns) as f64
}

/// Runs the baseline, then the SBE gateway, and compares the gateway's `ack_all` with the
/// baseline's `rtt` at every percentile.
///
/// # Errors
/// As [`baseline::run`] and [`sbe::run`].
pub fn compare(
    baseline_config: &baseline::BaselineConfig,
    sbe_config: &sbe::SbeConfig,
) -> Result<report::Comparison, LoadError> {
    compare_with(baseline_config, || sbe::run(sbe_config))
}

/// Runs the baseline, then `gateway` (any target's run: [`sbe::run`], [`fix::run`]), and
/// compares the gateway's `ack_all` with the baseline's `rtt` at every percentile.
///
/// # Errors
/// As [`baseline::run`] and `gateway`.
pub fn compare_with(
    baseline_config: &baseline::BaselineConfig,
    gateway: impl FnOnce() -> Result<report::Report, LoadError>,
) -> Result<report::Comparison, LoadError> {
    let baseline = baseline::run(baseline_config)?;
    let gateway = gateway()?;
    Ok(report::Comparison::new(baseline, gateway, "ack_all", "rtt"))
}
