//! Runtime benchmarks: `cargo bench -p exchange --bench runtime`.
//!
//! A benchmark, not a test. It measures the exchange's runtime (journal, engine thread, ingress
//! and egress rings) in one process and one run, so the ratios between rows are meaningful, and
//! prints one summary table at the end (progress goes to stderr while it runs).
//!
//! # Workload
//! All runtime measurements use the same planned command stream on `BTC_USDC` (market 1 of the
//! default configuration): 100 users, each funded with BTC and USDC first (deposits, sent with
//! origin 0 so they are never measured), then a mix of GTC limit orders (5 to 100 lots) around the
//! mid of the book, one in ten of them priced at or up to two ticks through the opposite best (it
//! trades), and cancels of random resting orders by their owners (20% of the flow while the book
//! holds fewer than 2,000 orders, 50% above that, which holds the book near 2,000 orders). The
//! stream is planned once on a scratch engine, which also checks that every flow command causes
//! at least one event (an accept, a cancel or a reject), so every command's latency can be
//! observed on the egress ring. A fresh runtime fed the same deposits and flow behaves
//! identically (the engine is deterministic), so the plan's mix statistics (printed) hold for
//! every run.
//!
//! # 1. Journal append throughput
//! [`JournalWriter`] alone, appending 104-byte payloads (an encoded `NewOrder`, schema v3; 136 bytes per record
//! on disk with the 32-byte record header) and committing after every batch of 1, 16 or 256
//! records, under `Durability::Fsync` (one `write` + one `fdatasync` per commit) and
//! `Durability::None` (one `write` per commit). Each cell runs for 2 s or 2M records, whichever
//! comes first, in a fresh directory under the system temporary directory (its file system is
//! printed). Read: records/s and MB/s (10^6 bytes of journal, headers included); commit
//! p50/p99/max is the time of one `commit` call; `fsync/none` is the fsync throughput as a
//! fraction of the no-fsync throughput at the same batch size: it is what durability costs when
//! nothing else amortises it, and shows how much group commit (larger batches) wins back.
//!
//! # 2. End-to-end latency, open loop
//! ingress ring → engine thread (stamp, journal append, group commit, execute) → egress
//! broadcast ring, with `IdleStrategy::SpinYield` (the fixed naps, which its baseline relay copies), under `Fsync` and `None`, at
//! fixed offered rates (1k, 10k and 50k commands/s for 5 s each; the first 0.5 s is warm-up and
//! not recorded). A producer thread sends command `i` (0-based) with `origin = i + 1` at its
//! scheduled time `t0 + i / rate`: it sleeps until about 150 µs before that time, then spins and
//! yields until it. If the ingress ring is full it counts the command as `busy` and retries. A
//! consumer (the main thread) reads the egress ring and records, for the first event carrying
//! each origin, `now − scheduled_time(origin)` into an HdrHistogram (1 ns to 60 s, 3 significant
//! digits). The consumer also sleeps while the next origin's scheduled time is more than 200 µs
//! away (no event can precede it), and spins/yields otherwise.
//!
//! Measuring from the *scheduled* time, not from the moment the producer managed to push, is the
//! coordinated-omission correction: when the system stalls (an fsync, a full ring, a descheduled
//! thread), the commands that should have been sent during the stall are charged the time they
//! waited, as a real client sending at that rate would experience, instead of being silently
//! sent late and timed from then. A system that cannot keep up shows it as growing latencies and
//! an achieved rate below the offered one.
//!
//! Read: p50 … max in µs; `achieved/s` is the commands completed over the time from `t0` to the
//! last first-event; `avg batch` is commands per group commit (fsync latency is amortised over
//! it); `commit µs` is the engine thread's own journal commit time during the row (mean, and the
//! upper bounds of the runtime metrics' fixed buckets holding the p99 and the slowest commit), so
//! a latency tail can be matched to slow `fdatasync`s; `busy` counts commands that found the
//! ingress ring full; `lost` counts commands whose event was never seen (ring lag or a stalled
//! engine; should be 0). Under `fsync` a command waits for the commit of its own batch and, when
//! it arrives during a commit, for the rest of that one too: p50 is about 1 to 2 commit times,
//! and the tail follows the disk's slowest `fdatasync`s (on a shared virtual disk these vary a lot
//! from run to run; compare the `commit µs` column across runs before comparing latencies; `inf`
//! there means a commit took over 1 s).
//!
//! The baseline row, run with the same producer, consumer, schedule and rates, replaces the
//! runtime by a plain hand-off: producer → crossbeam `ArrayQueue` → relay thread → second
//! `ArrayQueue` → consumer (a ping through a ring and back). The relay idles exactly like the
//! engine thread (`SpinYield`: 100 spins, 100 yields, then 20 µs sleeps), so the difference
//! between the baseline and the runtime rows is the runtime's own work (journal write and fsync,
//! execution, publication), not the wake-up policy.
//!
//! The machine this was written for has 2 cores: the producer, the engine thread (or relay) and
//! the consumer share them, so the tails include scheduler effects; the output says how many
//! cores were available.
//!
//! # 3. Recovery replay rate
//! A runtime with `Durability::None` and `snapshot.every_commands = 0` journals the deposits and
//! 200k flow commands; it is shut down (writing its final snapshot), the snapshot directory is
//! deleted, and `runtime::recover(…, from_scratch = true, open_writer = false)` is timed: it
//! reads and checks the whole journal, decodes and executes every command on a new engine. The
//! recovered state hash must equal the runtime's. Run 3 times (the journal is in the page cache,
//! so this is CPU-bound replay, not disk reading); the median and best are printed, with the time
//! to read and verify the journal alone, to allocate an empty engine alone (unfaulted, as recovery
//! does) and to pre-fault it (which `Runtime::start` does once after recovery, not `recover`).
//!
//! The summary also prints `replay: <N> commands/s` (the median run) on a line of its own.
//!
//! # 4. Snapshot pause
//! A runtime (`Durability::None`, no periodic snapshots) is fed deposits for 1,000 users and
//! 1,000,000 GTC limit orders on `BTC_USDC` that never cross (bids below and asks above 60,000,
//! over 10,000 prices per side), so the book holds 1M resting orders. Then a probe producer sends
//! a cancel of an unknown order every 500 µs (it is journaled and rejected; the book does not
//! change), and the consumer times each probe from its due time to its reject on the egress ring
//! (coordinated-omission corrected, as in section 2). After 0.5 s without snapshots (the reference
//! window), a snapshot is requested 5 times ([`Runtime::request_snapshot`]), each time waiting for
//! its file to appear in the snapshot directory, then 0.1 s more. A snapshot's pause is the
//! longest latency of the probes due between its request and its file: how long the engine thread
//! stopped answering because of it, as a client sees it. The summary prints exactly one line
//! `snapshot pause at <orders> resting orders: p50 <N> us, max <N> us` over the snapshots, with
//! the reference window's probe latencies beside it (scheduler noise on a small machine).
//!
//! # Disk hygiene
//! Before every journal cell, every runtime latency row and the recovery journal's measurement,
//! the benchmark runs `sync`, so that writeback of earlier work (its own no-fsync rows, or the
//! build that just linked it) is not charged to an `fdatasync` being measured. Other processes
//! writing to the same disk meanwhile (a concurrent build) still show up in the fsync rows.
//!
//! # Environment
//! `RUNTIME_BENCH_QUICK=1` shrinks everything for a smoke run of a few seconds: journal cells of
//! 0.2 s or 20k records, latency at 1k/s only for 1 s (0.2 s warm-up), recovery of 5k commands
//! run once, a snapshot row of 20k resting orders and 2 snapshots. `RUNTIME_BENCH_RATES=1000,50000`
//! replaces the offered rates of the latency rows; `RUNTIME_BENCH_REPLAY_RUNS=9` the number of
//! recovery runs. `RUNTIME_BENCH_ONLY=replay` (comma-separated
//! section names: `journal`, `latency`, `replay`, `snapshot`) runs and prints only those sections;
//! unset or empty runs them all.

use codec::{Command, Event, MarketId, OrderId, Side, TimeInForce};
use crossbeam_queue::ArrayQueue;
use engine::journal::{Durability, JournalReader, JournalWriter};
use engine::testkit::commands;
use engine::{Book, CommandContext, Engine, EngineConfig};
use exchange::config::{Config, DurabilitySetting, IdleStrategy};
use exchange::egress::ReadError;
use exchange::runtime::{self, IngressCommand, IngressRing, Runtime};
use hdrhistogram::Histogram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The market of the flow: BTC_USDC.
const MARKET: u32 = 1;
/// Its base (BTC) and quote (USDC) asset ids.
const BTC: u32 = 0;
const USDC: u32 = 1;
/// Funded users of the flow (1..=USERS).
const USERS: u64 = 100;
/// Resting orders the flow's cancels hold the book near.
const BOOK_TARGET: usize = 2_000;
/// Mid price when the book is empty: 60,000 USDC in 0.1 USDC ticks.
const EMPTY_BOOK_MID: u64 = 600_000;
/// Bytes of an encoded NewOrder (8-byte message header + 96-byte block since schema v3, which
/// appended the trigger and attached-order prices); a journal record adds its 32-byte header.
const NEW_ORDER_BYTES: usize = 104;
const RECORD_BYTES: usize = engine::journal::RECORD_HEADER_BYTES + NEW_ORDER_BYTES;

// ------------------------------------------------------------------------------------------------
// Settings
// ------------------------------------------------------------------------------------------------

struct Settings {
    quick: bool,
    journal_time: Duration,
    journal_records_max: u64,
    journal_batches: [u64; 3],
    rates: Vec<u64>,
    latency_time: Duration,
    warmup_time: Duration,
    recovery_commands: usize,
    recovery_runs: usize,
    /// Resting orders the snapshot-pause row builds up before taking snapshots.
    snapshot_orders: u64,
    /// Snapshots taken (and pauses measured) in the snapshot-pause row.
    snapshot_runs: usize,
    /// How long the consumer waits for progress after the producer finished before giving up.
    stall_timeout: Duration,
    /// The sections to run (`RUNTIME_BENCH_ONLY`).
    sections: Sections,
}

/// Which sections of the report run: all of them, or those named in `RUNTIME_BENCH_ONLY`.
#[derive(Clone, Copy)]
struct Sections {
    journal: bool,
    latency: bool,
    replay: bool,
    snapshot: bool,
}

impl Sections {
    /// Every section name `RUNTIME_BENCH_ONLY` accepts.
    const NAMES: [&'static str; 4] = ["journal", "latency", "replay", "snapshot"];

    /// `RUNTIME_BENCH_ONLY=replay,snapshot` selects sections by name; unset or empty selects all.
    /// An unknown name stops the benchmark (a typo must not silently measure nothing).
    fn from_env() -> Self {
        let text = std::env::var("RUNTIME_BENCH_ONLY").unwrap_or_default();
        let names: Vec<&str> = text.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
        if names.is_empty() {
            return Self { journal: true, latency: true, replay: true, snapshot: true };
        }
        for name in &names {
            assert!(
                Self::NAMES.contains(name),
                "RUNTIME_BENCH_ONLY: unknown section {name:?}; known: {:?}",
                Self::NAMES
            );
        }
        let has = |section: &str| names.contains(&section);
        Self { journal: has("journal"), latency: has("latency"), replay: has("replay"), snapshot: has("snapshot") }
    }
}

impl Settings {
    fn from_env() -> Self {
        let quick = std::env::var("RUNTIME_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        if quick {
            Self {
                quick,
                journal_time: Duration::from_millis(200),
                journal_records_max: 20_000,
                journal_batches: [1, 16, 256],
                rates: vec![1_000],
                latency_time: Duration::from_secs(1),
                warmup_time: Duration::from_millis(200),
                recovery_commands: 5_000,
                recovery_runs: 1,
                snapshot_orders: 20_000,
                snapshot_runs: 2,
                stall_timeout: Duration::from_secs(10),
                sections: Sections::from_env(),
            }
        } else {
            Self {
                quick,
                journal_time: Duration::from_secs(2),
                journal_records_max: 2_000_000,
                journal_batches: [1, 16, 256],
                rates: vec![1_000, 10_000, 50_000],
                latency_time: Duration::from_secs(5),
                warmup_time: Duration::from_millis(500),
                recovery_commands: 200_000,
                recovery_runs: 3,
                snapshot_orders: 1_000_000,
                snapshot_runs: 5,
                stall_timeout: Duration::from_secs(10),
                sections: Sections::from_env(),
            }
        }
    }

    /// `RUNTIME_BENCH_REPLAY_RUNS=9` replaces the number of recovery runs (more runs give a steadier
    /// median and best on a loaded machine).
    fn with_env_replay_runs(mut self) -> Self {
        if let Some(runs) = std::env::var("RUNTIME_BENCH_REPLAY_RUNS").ok().and_then(|v| v.trim().parse().ok())
            && runs > 0
        {
            self.recovery_runs = runs;
        }
        self
    }

    /// `RUNTIME_BENCH_RATES=1000,50000` replaces the offered rates of the latency rows.
    fn with_env_rates(mut self) -> Self {
        if let Ok(text) = std::env::var("RUNTIME_BENCH_RATES") {
            let rates: Vec<u64> = text.split(',').filter_map(|r| r.trim().parse().ok()).filter(|&r| r > 0).collect();
            if !rates.is_empty() {
                self.rates = rates;
            }
        }
        self
    }

    fn commands_at(&self, rate: u64, time: Duration) -> u64 {
        (rate as f64 * time.as_secs_f64()).round() as u64
    }

    /// Flow commands the plan must hold.
    fn flow_len(&self) -> usize {
        let latency = if self.sections.latency {
            self.rates.iter().map(|&r| self.commands_at(r, self.latency_time)).max().unwrap_or(0)
        } else {
            0
        };
        let recovery = if self.sections.replay { self.recovery_commands } else { 0 };
        (latency as usize).max(recovery)
    }
}

/// Removes the benchmark's scratch directory, even on a panic.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Flushes every dirty page of the system (`sync`) so that writeback of earlier work (this
/// benchmark's own no-fsync rows, a build that just linked it) does not land inside a measurement
/// that fsyncs. Best effort: a missing `sync` binary is ignored.
fn settle_disk() {
    let _ = std::process::Command::new("sync").status();
}

fn durability_name(durability: Durability) -> &'static str {
    match durability {
        Durability::Fsync => "fsync",
        Durability::None => "none",
    }
}

/// The default configuration with the benchmark's data directory, durability and idle strategy,
/// and no periodic snapshots.
fn runtime_config(data_dir: &Path, durability: Durability) -> Config {
    let mut config = Config::load(None).expect("default configuration");
    config.data_dir = data_dir.to_path_buf();
    config.journal.durability = match durability {
        Durability::Fsync => DurabilitySetting::Fsync,
        Durability::None => DurabilitySetting::None,
    };
    config.engine.idle = IdleStrategy::SpinYield;
    config.engine.core = None;
    config.snapshot.every_commands = 0;
    config
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Microseconds, with fewer decimals as the value grows.
fn micros(ns: u64) -> String {
    let us = ns as f64 / 1e3;
    if us < 10.0 {
        format!("{us:.2}")
    } else if us < 1_000.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

/// A count with thousands separators.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The mount (device and file system type) holding `path`, from `/proc/self/mounts`.
fn mount_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return "unknown file system".into() };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point).then(|| (point.len(), format!("{kind} on {device}, mounted at {point}")))
        })
        .max_by_key(|(length, _)| *length)
        .map_or_else(|| "unknown file system".into(), |(_, text)| text)
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`): other work on the machine during the
/// run shows up in the latency tails and the fsync rows.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().into())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

// ------------------------------------------------------------------------------------------------
// The planned workload
// ------------------------------------------------------------------------------------------------

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

#[derive(Default)]
struct MixStats {
    resting_limits: u64,
    crossing_limits: u64,
    cancels: u64,
    events: u64,
    fills: u64,
    rejects: u64,
    book_peak: usize,
    book_end: usize,
}

struct Plan {
    funding: Vec<Command>,
    flow: Vec<Command>,
    mix: MixStats,
}

/// Removes and returns a random resting order from `open` (entries no longer resting are dropped
/// on the way).
fn pick_open(open: &mut Vec<(u64, u64)>, book: &impl Book, rng: &mut XorShift) -> Option<(u64, u64)> {
    while !open.is_empty() {
        let index = (rng.next() % open.len() as u64) as usize;
        let (user, order_id) = open.swap_remove(index);
        if book.get(OrderId::new(order_id)).is_some() {
            return Some((user, order_id));
        }
    }
    None
}

/// Plans the funding and `flow_len` flow commands on a scratch engine (see the module docs).
fn plan(engine_config: &EngineConfig, flow_len: usize) -> Plan {
    let mut engine = Engine::new(engine_config).expect("engine configuration");
    let mut events = Vec::with_capacity(256);
    let mut sequence = 0u64;
    let mut execute = |engine: &mut Engine, command: &Command, events: &mut Vec<Event>| {
        sequence += 1;
        events.clear();
        engine.execute(CommandContext::new(sequence, sequence * 1_000), command, events);
    };
    let mut funding = Vec::new();
    for user in 1..=USERS {
        funding.push(commands::deposit(user, BTC, 10_000 * 100_000_000));
        funding.push(commands::deposit(user, USDC, 1_000_000_000 * 1_000_000));
    }
    for command in &funding {
        execute(&mut engine, command, &mut events);
        assert!(!events.iter().any(|e| matches!(e, Event::OrderRejected(_))), "funding rejected: {events:?}");
    }
    let market_id = MarketId::new(MARKET);
    let mut rng = XorShift(0x5eed_0fb0_0c00_0001);
    let mut open: Vec<(u64, u64)> = Vec::new();
    let mut client_order_id = 0u64;
    let mut mix = MixStats::default();
    let mut flow = Vec::with_capacity(flow_len);
    while flow.len() < flow_len {
        let book = engine.book(market_id).expect("market 1 exists");
        let best_bid = book.best_price(Side::Bid).map(|t| t.get());
        let best_ask = book.best_price(Side::Ask).map(|t| t.get());
        let cancel_percent = if book.len() > BOOK_TARGET { 50 } else { 20 };
        let cancel = if rng.next() % 100 < cancel_percent { pick_open(&mut open, book, &mut rng) } else { None };
        let (command, limit) = match cancel {
            Some((user, order_id)) => {
                mix.cancels += 1;
                (commands::cancel(user, MARKET, order_id), None)
            }
            None => {
                let user = rng.range(1, USERS);
                let side = if rng.next() % 2 == 0 { Side::Bid } else { Side::Ask };
                let reference = match (best_bid, best_ask) {
                    (Some(bid), Some(ask)) => (bid + ask) / 2,
                    (Some(bid), None) => bid,
                    (None, Some(ask)) => ask,
                    (None, None) => EMPTY_BOOK_MID,
                };
                let crossing = rng.next() % 10 == 0;
                let price = match (side, crossing, best_bid, best_ask) {
                    (Side::Bid, true, _, Some(ask)) => ask + rng.range(0, 2),
                    (Side::Ask, true, Some(bid), _) => bid.saturating_sub(rng.range(0, 2)).max(1),
                    (Side::Bid, ..) => {
                        reference.saturating_sub(rng.range(1, 20)).min(best_ask.map_or(u64::MAX, |a| a - 1)).max(1)
                    }
                    (Side::Ask, ..) => (reference + rng.range(1, 20)).max(best_bid.map_or(0, |b| b + 1)),
                };
                let crosses = match side {
                    Side::Bid => best_ask.is_some_and(|ask| price >= ask),
                    Side::Ask => best_bid.is_some_and(|bid| price <= bid),
                };
                if crosses {
                    mix.crossing_limits += 1;
                } else {
                    mix.resting_limits += 1;
                }
                client_order_id += 1;
                let quantity = rng.range(5, 100);
                let command = commands::limit(user, MARKET, side, price, quantity, TimeInForce::Gtc, client_order_id);
                (command, Some(user))
            }
        };
        execute(&mut engine, &command, &mut events);
        assert!(!events.is_empty(), "every flow command must cause an event: {command:?}");
        mix.events += events.len() as u64;
        for event in &events {
            match event {
                Event::Fill(_) => mix.fills += 1,
                Event::OrderRejected(_) => mix.rejects += 1,
                Event::OrderAccepted(accepted) if limit.is_some() => {
                    open.push((accepted.user_id.get(), accepted.order_id.get()));
                }
                _ => {}
            }
        }
        let resting = engine.book(market_id).map_or(0, |b| b.len());
        mix.book_peak = mix.book_peak.max(resting);
        flow.push(command);
    }
    mix.book_end = engine.book(market_id).map_or(0, |b| b.len());
    engine.validate().expect("planned engine invariants hold");
    Plan { funding, flow, mix }
}

// ------------------------------------------------------------------------------------------------
// 1. Journal append throughput
// ------------------------------------------------------------------------------------------------

struct JournalResult {
    durability: Durability,
    batch: u64,
    records: u64,
    seconds: f64,
    commits: Histogram<u64>,
}

impl JournalResult {
    fn records_per_second(&self) -> f64 {
        self.records as f64 / self.seconds
    }
    fn megabytes_per_second(&self) -> f64 {
        self.records_per_second() * RECORD_BYTES as f64 / 1e6
    }
}

fn journal_cell(settings: &Settings, dir: &Path, durability: Durability, batch: u64, payload: &[u8]) -> JournalResult {
    let _ = std::fs::remove_dir_all(dir);
    let journal_config = runtime_config(dir, durability).journal_config();
    let (mut writer, _) = JournalWriter::open(dir, journal_config, 0).expect("open journal");
    let mut commits = histogram();
    let mut records = 0u64;
    let mut timestamp_ns = 1u64;
    let started = Instant::now();
    while records < settings.journal_records_max && started.elapsed() < settings.journal_time {
        for _ in 0..batch {
            writer.append(timestamp_ns, payload).expect("append");
            timestamp_ns += 1;
        }
        let commit_started = Instant::now();
        writer.commit().expect("commit");
        commits.saturating_record(nanos(commit_started.elapsed()));
        records += batch;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(writer);
    let _ = std::fs::remove_dir_all(dir);
    JournalResult { durability, batch, records, seconds, commits }
}

fn journal_benchmark(settings: &Settings, base: &Path) -> Vec<JournalResult> {
    let order = commands::limit(1, MARKET, Side::Bid, EMPTY_BOOK_MID, 10, TimeInForce::Gtc, 42);
    let mut payload = [0u8; Command::ENCODED_BYTES_MAX];
    let length = order.encode(&mut payload).expect("NewOrder fits");
    assert_eq!(length, NEW_ORDER_BYTES, "an encoded NewOrder is {NEW_ORDER_BYTES} bytes");
    let mut results = Vec::new();
    for durability in [Durability::Fsync, Durability::None] {
        for batch in settings.journal_batches {
            let dir = base.join(format!("journal-{}-{batch}", durability_name(durability)));
            settle_disk();
            let result = journal_cell(settings, &dir, durability, batch, &payload[..length]);
            eprintln!(
                "# journal {:>5} batch {:>3}: {} records/s",
                durability_name(durability),
                batch,
                thousands(result.records_per_second())
            );
            results.push(result);
        }
    }
    results
}

// ------------------------------------------------------------------------------------------------
// 2. End-to-end latency (open loop)
// ------------------------------------------------------------------------------------------------

/// When command `origin` (1-based) is due.
fn scheduled(t0: Instant, rate: u64, origin: u64) -> Instant {
    let offset_ns = u128::from(origin.saturating_sub(1)) * 1_000_000_000 / u128::from(rate);
    t0 + Duration::from_nanos(u64::try_from(offset_ns).unwrap_or(u64::MAX))
}

/// Sleeps until shortly before `due` if it is far, then spins and yields until it.
fn wait_until(due: Instant) {
    let mut polls = 0u32;
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > Duration::from_micros(200) {
            std::thread::sleep(left - Duration::from_micros(150));
        } else if polls < 64 {
            polls += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// The open-loop producer: sends command `i` (origin `i + 1`) at its scheduled time; returns how
/// many commands found the ring full at least once.
fn produce(count: u64, t0: Instant, rate: u64, done: &AtomicBool, mut try_push: impl FnMut(u64) -> bool) -> u64 {
    let mut busy = 0;
    for i in 0..count {
        wait_until(scheduled(t0, rate, i + 1));
        if !try_push(i) {
            busy += 1;
            while !try_push(i) {
                std::thread::yield_now();
            }
        }
    }
    done.store(true, Ordering::Release);
    busy
}

enum Poll {
    Event(u64),
    Empty,
    Lagged,
}

struct Consumed {
    histogram: Histogram<u64>,
    /// When the last command's first event was seen.
    last_at: Instant,
    /// Commands whose first event was seen.
    completed: u64,
    lost: u64,
    lagged: u64,
}

/// The consumer: records `now − scheduled(origin)` for the first event of every origin after
/// the warm-up.
fn consume(
    count: u64,
    warmup: u64,
    t0: Instant,
    rate: u64,
    stall_timeout: Duration,
    producer_done: &AtomicBool,
    mut poll: impl FnMut() -> Poll,
) -> Consumed {
    let mut histogram = histogram();
    let (mut last, mut lost, mut lagged) = (0u64, 0u64, 0u64);
    let mut last_at = t0;
    let mut empty_polls = 0u32;
    while last < count {
        match poll() {
            Poll::Event(origin) if origin > last => {
                let now = Instant::now();
                if origin > warmup {
                    histogram
                        .saturating_record(nanos(now.saturating_duration_since(scheduled(t0, rate, origin))).max(1));
                }
                lost += origin - last - 1;
                last = origin;
                last_at = now;
                empty_polls = 0;
            }
            Poll::Event(_) => empty_polls = 0,
            Poll::Lagged => lagged += 1,
            Poll::Empty => {
                let now = Instant::now();
                let next = scheduled(t0, rate, last + 1);
                if next > now + Duration::from_micros(200) {
                    std::thread::sleep(next - now - Duration::from_micros(150));
                } else if empty_polls < 64 {
                    empty_polls += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                if producer_done.load(Ordering::Acquire) && now.duration_since(last_at.max(t0)) > stall_timeout {
                    break;
                }
            }
        }
    }
    lost += count - last;
    Consumed { histogram, last_at, completed: last - lost, lost, lagged }
}

struct LatencyResult {
    path: &'static str,
    durability: Option<Durability>,
    offered: u64,
    achieved: f64,
    measured: u64,
    busy: u64,
    lost: u64,
    lagged: u64,
    average_batch: Option<f64>,
    /// The engine thread's journal commits (write + fdatasync) during the run.
    commits: Option<Commits>,
    histogram: Histogram<u64>,
}

fn latency_result(
    path: &'static str,
    durability: Option<Durability>,
    rate: u64,
    t0: Instant,
    busy: u64,
    consumed: Consumed,
    average_batch: Option<f64>,
) -> LatencyResult {
    let seconds = consumed.last_at.saturating_duration_since(t0).as_secs_f64().max(1e-9);
    LatencyResult {
        path,
        durability,
        offered: rate,
        achieved: consumed.completed as f64 / seconds,
        measured: consumed.histogram.len(),
        busy,
        lost: consumed.lost,
        lagged: consumed.lagged,
        average_batch,
        commits: None,
        histogram: consumed.histogram,
    }
}

/// The engine thread's journal commit histogram (write + fdatasync per group commit), read from
/// its Prometheus rendering, the only public view of the histogram's sum and buckets.
#[derive(Clone, Default)]
struct Commits {
    count: u64,
    seconds: f64,
    /// (upper bound in seconds, cumulative count), ascending; the last bound is +Inf.
    buckets: Vec<(f64, u64)>,
}

impl Commits {
    fn read(runtime: &Runtime) -> Self {
        const NAME: &str = "exchange_journal_commit_seconds";
        let text = runtime.metrics.render(&[], &[], &[]);
        let mut commits = Self::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(NAME) else { continue };
            let Some((key, value)) = rest.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            match key {
                "_count" => commits.count = value as u64,
                "_sum" => commits.seconds = value,
                _ => {
                    if let Some(bound) = key.strip_prefix("_bucket{le=\"").and_then(|b| b.strip_suffix("\"}")) {
                        let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().unwrap_or(f64::NAN) };
                        commits.buckets.push((bound, value as u64));
                    }
                }
            }
        }
        commits
    }

    /// The commits recorded since `before`.
    fn since(&self, before: &Self) -> Self {
        let buckets = if before.buckets.len() == self.buckets.len() {
            self.buckets
                .iter()
                .zip(&before.buckets)
                .map(|(&(bound, after), &(_, before))| (bound, after - before))
                .collect()
        } else {
            self.buckets.clone()
        };
        Self { count: self.count - before.count, seconds: self.seconds - before.seconds, buckets }
    }

    /// "mean, p99 ≤ bound, max ≤ bound" in µs (the histogram has fixed buckets).
    fn summary(&self) -> String {
        if self.count == 0 {
            return "-".into();
        }
        let bound_at = |count: u64| {
            self.buckets.iter().find(|&&(_, cumulative)| cumulative >= count).map_or_else(
                || "?".into(),
                |&(bound, _)| if bound.is_finite() { micros((bound * 1e9).round() as u64) } else { "inf".into() },
            )
        };
        let p99 = (self.count as f64 * 0.99).ceil() as u64;
        format!(
            "{} / {} / {}",
            micros((self.seconds / self.count as f64 * 1e9) as u64),
            bound_at(p99),
            bound_at(self.count)
        )
    }
}

/// Pushes a command, yielding while the ring is full.
fn push_blocking(ring: &IngressRing, mut item: IngressCommand) {
    while let Err(rejected) = ring.push(item) {
        item = rejected;
        std::thread::yield_now();
    }
}

/// Waits until the engine thread has executed `commands` commands since start.
fn wait_executed(runtime: &Runtime, commands: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while runtime.stats.commands.load(Ordering::Acquire) < commands {
        assert!(!runtime.is_finished(), "engine thread stopped");
        assert!(Instant::now() < deadline, "engine thread made no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn runtime_latency(
    settings: &Settings,
    base: &Path,
    engine_config: &EngineConfig,
    plan: &Plan,
    rate: u64,
    durability: Durability,
) -> LatencyResult {
    let dir = base.join(format!("latency-{}-{rate}", durability_name(durability)));
    let _ = std::fs::remove_dir_all(&dir);
    settle_disk();
    let config = runtime_config(&dir, durability);
    let (recovered, writer) = runtime::recover(&config, engine_config, false, true).expect("recover empty dir");
    let runtime = Runtime::start(&config, recovered, writer.expect("writer opened")).expect("engine thread");
    for &command in &plan.funding {
        push_blocking(&runtime.ring, IngressCommand::new(0, command));
    }
    wait_executed(&runtime, plan.funding.len() as u64);
    let count = settings.commands_at(rate, settings.latency_time);
    let warmup = settings.commands_at(rate, settings.warmup_time);
    let flow = &plan.flow[..count as usize];
    let (commands_before, batches_before) =
        (runtime.stats.commands.load(Ordering::Acquire), runtime.stats.batches.load(Ordering::Acquire));
    let commits_before = Commits::read(&runtime);
    let mut consumer = runtime.egress.subscribe();
    let done = AtomicBool::new(false);
    let t0 = Instant::now() + Duration::from_millis(5);
    let (busy, consumed) = std::thread::scope(|scope| {
        let ring = &runtime.ring;
        let done = &done;
        let producer = scope.spawn(move || {
            produce(count, t0, rate, done, |i| ring.push(IngressCommand::new(i + 1, flow[i as usize])).is_ok())
        });
        let consumed = consume(count, warmup, t0, rate, settings.stall_timeout, done, || match consumer.try_next() {
            Ok(published) => Poll::Event(published.origin),
            Err(ReadError::Empty) => Poll::Empty,
            Err(ReadError::Lagged { oldest, .. }) => {
                consumer.seek(oldest);
                Poll::Lagged
            }
        });
        (producer.join().expect("producer thread"), consumed)
    });
    let commands = runtime.stats.commands.load(Ordering::Acquire) - commands_before;
    let batches = runtime.stats.batches.load(Ordering::Acquire) - batches_before;
    let commits = Commits::read(&runtime).since(&commits_before);
    let average_batch = (batches > 0).then(|| commands as f64 / batches as f64);
    let mut result = latency_result("runtime", Some(durability), rate, t0, busy, consumed, average_batch);
    result.commits = Some(commits);
    result
}

/// The runtime's `SpinYield` idle step, copied so the baseline relay wakes up the same way.
fn spin_yield_wait(idle_polls: u32) {
    if idle_polls < 100 {
        std::hint::spin_loop();
    } else if idle_polls < 200 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(20));
    }
}

fn baseline_latency(settings: &Settings, ring_capacity: usize, rate: u64) -> LatencyResult {
    let to_relay = ArrayQueue::<u64>::new(ring_capacity);
    let from_relay = ArrayQueue::<u64>::new(ring_capacity);
    let stop = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let count = settings.commands_at(rate, settings.latency_time);
    let warmup = settings.commands_at(rate, settings.warmup_time);
    let t0 = Instant::now() + Duration::from_millis(5);
    let (busy, consumed) = std::thread::scope(|scope| {
        let (to_relay, from_relay, stop, done) = (&to_relay, &from_relay, &stop, &done);
        let relay = scope.spawn(move || {
            let mut idle_polls = 0u32;
            loop {
                if let Some(mut origin) = to_relay.pop() {
                    idle_polls = 0;
                    while let Err(rejected) = from_relay.push(origin) {
                        origin = rejected;
                        std::hint::spin_loop();
                    }
                } else if stop.load(Ordering::Acquire) {
                    return;
                } else {
                    idle_polls = idle_polls.saturating_add(1);
                    spin_yield_wait(idle_polls);
                }
            }
        });
        let producer = scope.spawn(move || produce(count, t0, rate, done, |i| to_relay.push(i + 1).is_ok()));
        let consumed = consume(count, warmup, t0, rate, settings.stall_timeout, done, || match from_relay.pop() {
            Some(origin) => Poll::Event(origin),
            None => Poll::Empty,
        });
        let busy = producer.join().expect("producer thread");
        stop.store(true, Ordering::Release);
        relay.join().expect("relay thread");
        (busy, consumed)
    });
    latency_result("baseline ArrayQueue relay", None, rate, t0, busy, consumed, None)
}

fn latency_benchmark(
    settings: &Settings,
    base: &Path,
    engine_config: &EngineConfig,
    plan: &Plan,
) -> Vec<LatencyResult> {
    let ring_capacity = Config::load(None).expect("default configuration").engine.ring_capacity;
    let mut results = Vec::new();
    for &rate in &settings.rates {
        let mut runs = vec![baseline_latency(settings, ring_capacity, rate)];
        for durability in [Durability::None, Durability::Fsync] {
            runs.push(runtime_latency(settings, base, engine_config, plan, rate, durability));
        }
        for run in &runs {
            eprintln!(
                "# latency {:>6}/s {:<26} {:>5}: p50 {} µs, p99 {} µs",
                rate,
                run.path,
                run.durability.map_or("-", durability_name),
                micros(run.histogram.value_at_quantile(0.5)),
                micros(run.histogram.value_at_quantile(0.99))
            );
        }
        results.extend(runs);
    }
    results
}

// ------------------------------------------------------------------------------------------------
// 3. Recovery replay
// ------------------------------------------------------------------------------------------------

struct RecoveryResult {
    commands: u64,
    journal_bytes: u64,
    engine_new: Duration,
    prefault: Duration,
    read_only: Duration,
    runs: Vec<Duration>,
}

impl RecoveryResult {
    fn median(&self) -> Duration {
        let mut runs = self.runs.clone();
        runs.sort();
        runs[runs.len() / 2]
    }
    fn best(&self) -> Duration {
        self.runs.iter().copied().min().unwrap_or_default()
    }
}

fn recovery_benchmark(settings: &Settings, base: &Path, engine_config: &EngineConfig, plan: &Plan) -> RecoveryResult {
    let dir = base.join("recovery");
    let _ = std::fs::remove_dir_all(&dir);
    let config = runtime_config(&dir, Durability::None);
    let (recovered, writer) = runtime::recover(&config, engine_config, false, true).expect("recover empty dir");
    let runtime = Runtime::start(&config, recovered, writer.expect("writer opened")).expect("engine thread");
    let commands: Vec<Command> = plan.funding.iter().chain(&plan.flow[..settings.recovery_commands]).copied().collect();
    for &command in &commands {
        push_blocking(&runtime.ring, IngressCommand::new(0, command));
    }
    wait_executed(&runtime, commands.len() as u64);
    let stats = runtime.stats.clone();
    runtime.shutdown().expect("runtime shut down cleanly");
    let final_hash = stats.state_hash.load(Ordering::Acquire);
    std::fs::remove_dir_all(config.snapshot_dir()).expect("remove snapshots");
    settle_disk();
    let journal_bytes = engine::journal::list_segments(&config.journal_dir())
        .expect("list segments")
        .iter()
        .map(|(_, path)| std::fs::metadata(path).map_or(0, |m| m.len()))
        .sum();

    // Reading and checking alone, as recovery streams it (one record in memory at a time).
    let started = Instant::now();
    let mut records = 0usize;
    JournalReader::open(&config.journal_dir())
        .and_then(|reader| {
            reader.for_each_after(0, |_| {
                records += 1;
                Ok::<_, engine::journal::JournalError>(std::ops::ControlFlow::Continue(()))
            })
        })
        .expect("read journal");
    let read_only = started.elapsed();
    assert_eq!(records, commands.len());
    let started = Instant::now();
    let mut engine = Engine::new_unfaulted(engine_config).expect("engine");
    let engine_new = started.elapsed();
    let started = Instant::now();
    engine.prefault();
    let prefault = started.elapsed();
    drop(engine);

    let mut runs = Vec::new();
    for _ in 0..settings.recovery_runs {
        let started = Instant::now();
        let (recovered, writer) = runtime::recover(&config, engine_config, true, false).expect("recover");
        runs.push(started.elapsed());
        assert!(writer.is_none());
        assert_eq!(recovered.replayed, commands.len() as u64, "every command replayed");
        assert_eq!(recovered.engine.state_hash(), final_hash, "replayed state equals the runtime's");
        eprintln!("# recovery: {} commands in {:.3} s", recovered.replayed, runs.last().unwrap().as_secs_f64());
    }
    let _ = std::fs::remove_dir_all(&dir);
    RecoveryResult { commands: commands.len() as u64, journal_bytes, engine_new, prefault, read_only, runs }
}

// ------------------------------------------------------------------------------------------------
// 4. Snapshot pause
// ------------------------------------------------------------------------------------------------

/// Resting orders one user of the snapshot row holds (the default per-user bound).
const SNAPSHOT_ORDERS_PER_USER: u64 = 1_000;
/// Distinct prices per side of the snapshot row's book.
const SNAPSHOT_LEVELS_PER_SIDE: u64 = 10_000;
/// Lots per resting order of the snapshot row (5 lots at 60,000 clears the minimum notional).
const SNAPSHOT_ORDER_LOTS: u64 = 5;
/// Interval between probe commands while snapshots are taken.
const PROBE_INTERVAL: Duration = Duration::from_micros(500);
/// Probe time before the first snapshot request (the no-snapshot reference window).
const PROBE_REFERENCE_TIME: Duration = Duration::from_millis(500);
/// Probe time between one snapshot's completion and the next request.
const PROBE_GAP_TIME: Duration = Duration::from_millis(100);
/// Origins of probe commands start here (funding and the book's orders use origin 0).
const PROBE_ORIGIN_BASE: u64 = 1;

struct SnapshotPauseResult {
    orders: u64,
    fill_time: Duration,
    /// Per snapshot: the longest probe latency (ns) among probes due while it was being taken.
    pauses: Vec<u64>,
    /// Per snapshot: from the request to its file in place.
    snapshot_times: Vec<Duration>,
    /// Probe latencies before the first snapshot request.
    reference: Histogram<u64>,
    probes_lost: u64,
}

impl SnapshotPauseResult {
    fn pause_quantile(&self, quantile: f64) -> u64 {
        let mut pauses = self.pauses.clone();
        pauses.sort_unstable();
        let index = ((pauses.len() as f64 - 1.0) * quantile).round() as usize;
        pauses.get(index).copied().unwrap_or(0)
    }
}

/// The newest snapshot's sequence in `dir` (0: none).
fn newest_snapshot(dir: &Path) -> u64 {
    engine::snapshot::list_snapshots(dir).ok().and_then(|list| list.first().map(|(sequence, _)| *sequence)).unwrap_or(0)
}

/// Builds a book of `settings.snapshot_orders` resting orders on BTC_USDC (never crossing) in a
/// runtime, then takes snapshots on request while a probe (a cancel of an unknown order, every
/// [`PROBE_INTERVAL`], timed from its scheduled send to its reject on the egress ring) watches
/// how long the engine thread stops answering: a snapshot's pause is the longest probe latency
/// among probes due between its request and its file being in place.
fn snapshot_pause_benchmark(settings: &Settings, base: &Path) -> SnapshotPauseResult {
    let dir = base.join("snapshot-pause");
    let _ = std::fs::remove_dir_all(&dir);
    let users = settings.snapshot_orders.div_ceil(SNAPSHOT_ORDERS_PER_USER);
    let mut config = runtime_config(&dir, Durability::None);
    config.engine.orders_per_market_max = usize::try_from(settings.snapshot_orders).expect("fits") + 1_024;
    config.engine.open_orders_per_user_max = SNAPSHOT_ORDERS_PER_USER as usize;
    config.snapshot.every_seconds = 0;
    let engine_config = config.engine_config().expect("snapshot row engine configuration");
    let (recovered, writer) = runtime::recover(&config, &engine_config, false, true).expect("recover empty dir");
    let runtime = Runtime::start(&config, recovered, writer.expect("writer opened")).expect("engine thread");
    let started = Instant::now();
    let mut pushed = 0u64;
    for user in 1..=users {
        push_blocking(&runtime.ring, IngressCommand::new(0, commands::deposit(user, BTC, 1_000 * 100_000_000)));
        push_blocking(&runtime.ring, IngressCommand::new(0, commands::deposit(user, USDC, 1_000_000_000 * 1_000_000)));
        pushed += 2;
    }
    for index in 0..settings.snapshot_orders {
        let user = index % users + 1;
        let level = (index / 2) % SNAPSHOT_LEVELS_PER_SIDE;
        let (side, price) = if index % 2 == 0 {
            (Side::Bid, EMPTY_BOOK_MID - 1 - level)
        } else {
            (Side::Ask, EMPTY_BOOK_MID + 1 + level)
        };
        let command = commands::limit(user, MARKET, side, price, SNAPSHOT_ORDER_LOTS, TimeInForce::Gtc, index + 1);
        push_blocking(&runtime.ring, IngressCommand::new(0, command));
        pushed += 1;
    }
    wait_executed(&runtime, pushed);
    let fill_time = started.elapsed();
    let rejects = runtime.stats.rejects.load(Ordering::Acquire);
    assert_eq!(rejects, 0, "every order of the snapshot row rests");
    eprintln!("# snapshot row: {} resting orders in {:.2} s", settings.snapshot_orders, fill_time.as_secs_f64());

    let snapshot_dir = config.snapshot_dir();
    let done = AtomicBool::new(false);
    let t0 = Instant::now() + Duration::from_millis(5);
    let due = |probe: u64| t0 + PROBE_INTERVAL * u32::try_from(probe).unwrap_or(u32::MAX);
    let mut consumer = runtime.egress.subscribe();
    let (windows, latencies) = std::thread::scope(|scope| {
        let (ring, done, runtime) = (&runtime.ring, &done, &runtime);
        let producer = scope.spawn(move || {
            let mut probe = 0u64;
            while !done.load(Ordering::Acquire) {
                wait_until(due(probe));
                let command = commands::cancel(1, MARKET, u64::MAX - probe);
                push_blocking(ring, IngressCommand::new(PROBE_ORIGIN_BASE + probe, command));
                probe += 1;
            }
            probe
        });
        let controller = scope.spawn(move || {
            let mut windows = Vec::new();
            std::thread::sleep(PROBE_REFERENCE_TIME);
            for _ in 0..settings.snapshot_runs {
                let before = newest_snapshot(&snapshot_dir);
                let requested = Instant::now();
                runtime.request_snapshot();
                let deadline = requested + Duration::from_secs(120);
                while newest_snapshot(&snapshot_dir) <= before {
                    assert!(Instant::now() < deadline, "no snapshot within 120 s");
                    std::thread::sleep(Duration::from_millis(1));
                }
                windows.push((requested, Instant::now()));
                std::thread::sleep(PROBE_GAP_TIME);
            }
            done.store(true, Ordering::Release);
            windows
        });
        // The consumer: the first event of each probe, timed from the probe's due time.
        let mut latencies: Vec<Option<u64>> = Vec::new();
        let mut last_seen = 0u64;
        let mut quiet_since: Option<Instant> = None;
        loop {
            match consumer.try_next() {
                Ok(published) if published.origin >= PROBE_ORIGIN_BASE => {
                    let probe = published.origin - PROBE_ORIGIN_BASE;
                    if probe as usize >= latencies.len() {
                        latencies.resize(probe as usize + 1, None);
                    }
                    if latencies[probe as usize].is_none() {
                        latencies[probe as usize] =
                            Some(nanos(Instant::now().saturating_duration_since(due(probe))).max(1));
                    }
                    last_seen = last_seen.max(probe + 1);
                    quiet_since = None;
                }
                Ok(_) => {}
                Err(ReadError::Lagged { oldest, .. }) => consumer.seek(oldest),
                Err(ReadError::Empty) => {
                    if producer.is_finished() {
                        let quiet = *quiet_since.get_or_insert_with(Instant::now);
                        if quiet.elapsed() > Duration::from_millis(200) {
                            break;
                        }
                    }
                    std::thread::yield_now();
                }
            }
        }
        let sent = producer.join().expect("producer thread");
        latencies.resize(sent as usize, None);
        (controller.join().expect("controller thread"), latencies)
    });
    let mut reference = histogram();
    let first_request = windows.first().map_or(t0, |w| w.0);
    for (probe, latency) in latencies.iter().enumerate() {
        if let Some(latency) = latency
            && due(probe as u64) < first_request
            && due(probe as u64) > t0 + Duration::from_millis(100)
        {
            reference.saturating_record(*latency);
        }
    }
    let pauses = windows
        .iter()
        .map(|&(from, to)| {
            latencies
                .iter()
                .enumerate()
                .filter(|(probe, _)| (from..=to).contains(&due(*probe as u64)))
                .filter_map(|(_, latency)| *latency)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let probes_lost = latencies.iter().filter(|l| l.is_none()).count() as u64;
    let snapshot_times = windows.iter().map(|&(from, to)| to - from).collect();
    runtime.shutdown().expect("runtime shut down cleanly");
    let _ = std::fs::remove_dir_all(&dir);
    SnapshotPauseResult { orders: settings.snapshot_orders, fill_time, pauses, snapshot_times, reference, probes_lost }
}

// ------------------------------------------------------------------------------------------------
// Report
// ------------------------------------------------------------------------------------------------

/// A plain text table; the first `left` columns are left-aligned, the others right-aligned.
struct Table {
    header: Vec<String>,
    left: usize,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str], left: usize) -> Self {
        Self { header: header.iter().map(|h| h.to_string()).collect(), left, rows: Vec::new() }
    }

    fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    fn print(&self) {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|c| std::iter::once(&self.header).chain(&self.rows).map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(
                    |(c, (cell, &width))| {
                        if c < self.left { format!("{cell:<width$}") } else { format!("{cell:>width$}") }
                    },
                )
                .collect();
            println!("{}", cells.join("  ").trim_end());
        }
    }
}

// One argument per section of the report.
#[allow(clippy::too_many_arguments)]
fn print_summary(
    load_at_start: &str,
    settings: &Settings,
    base: &Path,
    plan: &Plan,
    journal: Option<&[JournalResult]>,
    latency: Option<&[LatencyResult]>,
    recovery: Option<&RecoveryResult>,
    snapshot: Option<&SnapshotPauseResult>,
) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "== exchange runtime benchmark{} ==",
        if settings.quick { " (RUNTIME_BENCH_QUICK: smoke run)" } else { "" }
    );
    println!("cpu        {} x {cores} cores available", cpu_model());
    println!(
        "note       the producer, the engine thread (or the baseline relay) and the consumer are 3 threads on {cores} \
         cores: they share them, so latency tails include scheduler effects"
    );
    println!("scratch    {} ({})", base.display(), mount_of(base));
    println!(
        "load avg   {load_at_start} at start, {} at end (1, 5, 15 min; other work adds to the tails)",
        load_average()
    );
    let flow = plan.flow.len() as f64;
    let mix = &plan.mix;
    println!(
        "workload   BTC_USDC, {USERS} funded users; planned flow of {} commands: {:.0}% resting GTC limits, \
         {:.0}% crossing GTC limits, {:.0}% cancels; per command {:.2} events, {:.3} fills, {:.3} rejects; \
         book peak {} / end {} orders",
        plan.flow.len(),
        100.0 * mix.resting_limits as f64 / flow,
        100.0 * mix.crossing_limits as f64 / flow,
        100.0 * mix.cancels as f64 / flow,
        mix.events as f64 / flow,
        mix.fills as f64 / flow,
        mix.rejects as f64 / flow,
        mix.book_peak,
        mix.book_end,
    );

    if let Some(journal) = journal {
        print_journal(settings, journal);
    }
    if let Some(latency) = latency {
        print_latency(settings, latency);
    }
    if let Some(recovery) = recovery {
        print_recovery(recovery);
    }
    if let Some(snapshot) = snapshot {
        print_snapshot(snapshot);
    }
}

fn print_journal(settings: &Settings, journal: &[JournalResult]) {
    println!();
    println!(
        "1. journal append: JournalWriter, {NEW_ORDER_BYTES}-byte NewOrder payload ({RECORD_BYTES} bytes per record), \
         commit after every batch; each cell {:.1} s or {} records",
        settings.journal_time.as_secs_f64(),
        thousands(settings.journal_records_max as f64)
    );
    let mut table = Table::new(
        &[
            "durability",
            "batch",
            "records",
            "secs",
            "records/s",
            "MB/s",
            "commit p50 µs",
            "commit p99 µs",
            "commit max µs",
            "fsync/none",
        ],
        1,
    );
    for result in journal {
        let ratio = match result.durability {
            Durability::Fsync => journal
                .iter()
                .find(|other| other.durability == Durability::None && other.batch == result.batch)
                .map_or_else(String::new, |none| {
                    let ratio = result.records_per_second() / none.records_per_second();
                    format!("{ratio:.4} (1/{:.0})", 1.0 / ratio)
                }),
            Durability::None => String::new(),
        };
        table.row(vec![
            durability_name(result.durability).into(),
            result.batch.to_string(),
            thousands(result.records as f64),
            format!("{:.2}", result.seconds),
            thousands(result.records_per_second()),
            format!("{:.1}", result.megabytes_per_second()),
            micros(result.commits.value_at_quantile(0.5)),
            micros(result.commits.value_at_quantile(0.99)),
            micros(result.commits.max()),
            ratio,
        ]);
    }
    table.print();
}

fn print_latency(settings: &Settings, latency: &[LatencyResult]) {
    println!();
    println!(
        "2. end-to-end latency in µs, open loop, from each command's SCHEDULED send time (coordinated-omission \
         corrected) to its first egress event; {:.1} s per row, the first {:.1} s not recorded; engine idle spin-yield",
        settings.latency_time.as_secs_f64(),
        settings.warmup_time.as_secs_f64()
    );
    let mut table = Table::new(
        &[
            "path",
            "durability",
            "offered/s",
            "achieved/s",
            "measured",
            "busy",
            "lost",
            "avg batch",
            "commit µs mean/p99/max",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
        ],
        2,
    );
    for result in latency {
        let h = &result.histogram;
        let lost = if result.lagged > 0 {
            format!("{} ({} lags)", result.lost, result.lagged)
        } else {
            result.lost.to_string()
        };
        table.row(vec![
            result.path.into(),
            result.durability.map_or("-", durability_name).into(),
            thousands(result.offered as f64),
            thousands(result.achieved),
            thousands(result.measured as f64),
            result.busy.to_string(),
            lost,
            result.average_batch.map_or_else(|| "-".into(), |b| format!("{b:.1}")),
            result.commits.as_ref().map_or_else(|| "-".into(), Commits::summary),
            micros(h.value_at_quantile(0.5)),
            micros(h.value_at_quantile(0.9)),
            micros(h.value_at_quantile(0.99)),
            micros(h.value_at_quantile(0.999)),
            micros(h.max()),
        ]);
    }
    table.print();
    println!(
        "(commit µs: the engine thread's group commits (write, + fdatasync under fsync) during the row: mean, and the \
         upper bounds of the metrics buckets holding p99 and max)"
    );
}

fn print_recovery(recovery: &RecoveryResult) {
    println!();
    println!(
        "3. recovery replay: recover(from_scratch) of a {:.1} MB journal (page cache warm), {} run(s)",
        recovery.journal_bytes as f64 / 1e6,
        recovery.runs.len()
    );
    let mut table = Table::new(
        &[
            "commands",
            "read+CRC ms",
            "new_unfaulted ms",
            "prefault ms",
            "recover ms",
            "best ms",
            "commands/s",
            "best commands/s",
        ],
        0,
    );
    let per_second = |d: Duration| recovery.commands as f64 / d.as_secs_f64().max(1e-9);
    table.row(vec![
        thousands(recovery.commands as f64),
        format!("{:.1}", recovery.read_only.as_secs_f64() * 1e3),
        format!("{:.1}", recovery.engine_new.as_secs_f64() * 1e3),
        format!("{:.1}", recovery.prefault.as_secs_f64() * 1e3),
        format!("{:.1}", recovery.median().as_secs_f64() * 1e3),
        format!("{:.1}", recovery.best().as_secs_f64() * 1e3),
        thousands(per_second(recovery.median())),
        thousands(per_second(recovery.best())),
    ]);
    table.print();
    println!(
        "(recover ms: median; it includes reading and checking the journal, allocating the engine (unfaulted) and \
         replaying; read+CRC and new_unfaulted are those parts measured alone; prefault is what Runtime::start then \
         pays once to touch the books' reserved room, not part of recover)"
    );
    println!("replay: {:.0} commands/s", per_second(recovery.median()));
}

/// Section 4 of the report.
fn print_snapshot(snapshot: &SnapshotPauseResult) {
    println!();
    println!(
        "4. snapshot pause: {} resting orders on BTC_USDC (built in {:.1} s), {} snapshot(s) on request; a probe \
         command every {} µs, timed from its due time to its reject on the egress ring",
        thousands(snapshot.orders as f64),
        snapshot.fill_time.as_secs_f64(),
        snapshot.pauses.len(),
        PROBE_INTERVAL.as_micros()
    );
    let times: Vec<String> = snapshot.snapshot_times.iter().map(|t| format!("{:.0}", t.as_secs_f64() * 1e3)).collect();
    println!(
        "request to file in place, ms: {}; probe latency without snapshots: p50 {} µs, p99 {} µs, max {} µs; \
         probes lost {}",
        times.join(", "),
        micros(snapshot.reference.value_at_quantile(0.5)),
        micros(snapshot.reference.value_at_quantile(0.99)),
        micros(snapshot.reference.max()),
        snapshot.probes_lost
    );
    println!(
        "snapshot pause at {} resting orders: p50 {} us, max {} us",
        snapshot.orders,
        snapshot.pause_quantile(0.5) / 1_000,
        snapshot.pause_quantile(1.0) / 1_000
    );
    println!(
        "(pause: per snapshot, the longest probe latency among probes due between the request and the file being in \
         place; it includes scheduler effects of sharing {} cores with the snapshot threads)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

fn main() {
    let load_at_start = load_average();
    let settings = Settings::from_env().with_env_rates().with_env_replay_runs();
    let base = std::env::temp_dir().join(format!("exchange-runtime-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("create scratch directory");
    let scratch = ScratchDir(base.clone());
    let engine_config = Config::load(None).and_then(|c| c.engine_config()).expect("default engine configuration");

    let started = Instant::now();
    let plan = plan(&engine_config, settings.flow_len());
    eprintln!("# planned {} flow commands in {:.2} s", plan.flow.len(), started.elapsed().as_secs_f64());

    let sections = settings.sections;
    let journal = sections.journal.then(|| journal_benchmark(&settings, &base));
    let latency = sections.latency.then(|| latency_benchmark(&settings, &base, &engine_config, &plan));
    let recovery = sections.replay.then(|| recovery_benchmark(&settings, &base, &engine_config, &plan));
    let snapshot = sections.snapshot.then(|| snapshot_pause_benchmark(&settings, &base));
    print_summary(
        &load_at_start,
        &settings,
        &base,
        &plan,
        journal.as_deref(),
        latency.as_deref(),
        recovery.as_ref(),
        snapshot.as_ref(),
    );
    drop(scratch);
}
