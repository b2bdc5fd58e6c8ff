//! Matching-engine workloads: `cargo bench -p engine --bench workloads`.
//!
//! A benchmark, not a test: it drives [`engine::Engine`] with [`codec::Command`]s on the
//! `BTC_USDC` market (id 1) of [`EngineConfig::sample`], with the other markets removed and the
//! book capacity raised to fit the workload. Building the commands is never timed; W-LB and CSV
//! hand them over [`FLOW_CHUNK`] at a time from one reused buffer (W-LB generates each chunk just
//! before it is sent), as an ingress ring does, so the engine does not read a fresh pre-built
//! command array (a whole `Command` per order) that no real ingress would hand it. One events
//! vector is reused (cleared per command), so the numbers are about the engine, not allocation.
//! Every workload ends with [`Engine::validate`] (book and ledger invariants) and stops the run
//! if it fails.
//!
//! Workloads:
//!
//! 1. **W-LB** (one book, insert only): `N` plain GTC limits alternating buy (even `i`) and sell
//!    (odd `i`); buy price `1880 + U(0..9)`, sell price `1884 + U(0..9)` ticks, quantity
//!    `100 × U(1..10)` lots, with `U(a..b) = a + rand() % (b − a + 1)` drawn from glibc's `rand()`
//!    after `srand(3)` ([`GlibcRand`]; price first, then quantity). No cancels. Two users, one
//!    only buying and one only selling, so self-trade prevention never triggers. Timed with one
//!    wall clock around the whole loop, for `N` = 1M and 5M; reports ns per insert, fills per
//!    insert and the orders resting at the end.
//! 2. **W-OBRS** (random mix, per-op latency): xorshift64 (`x ^= x << 13; x ^= x >> 7;
//!    x ^= x << 17`) seeded `0xA5A5A5A5A5A5A5A5`, `R(lo, hi) = lo + next() % (hi − lo + 1)`. Per op
//!    `next() % 100`: 0–69 a GTC limit at `R(99, 101)` for `R(1, 100)` lots, buy if `next()` is
//!    even, owner `1 + next() % 4`, with the next workload id; 70–89 a cancel of workload id
//!    `R(1, next_id − 1)` (often already filled or cancelled: a miss, `UnknownOrder`); 90–99 a
//!    market order for `R(1, 10)` lots, side and owner drawn as for limits. 200k warm-up ops, then
//!    1M measured, each timed by a pair of `Instant::now()` into an HdrHistogram.
//! 3. **EC** (exchange-core-like mix, per-op latency): 1,000 funded accounts (balances are reserved
//!    for every resting order, as always in this engine), a book pre-filled with 1,000 orders, then
//!    ops drawn as 9% GTC, 3% IOC, 6% cancel and 82% cancel-replace that moves the price of a
//!    random open order (cancels and replaces are sent by the order's owner). A new or moved
//!    order's price is within 30 ticks of the opposite side's best price, on its own side of it;
//!    while the book holds at least its target of 1,000 orders, 3 in 30 of those prices are at or
//!    through the opposite best and trade, below the target they all rest, which holds the book
//!    near the target (as exchange-core's generator does). IOCs go up to 3 ticks through the
//!    opposite best for `R(1, 50)` lots; GTCs are for `R(1, 100)`. 100k warm-up ops, then 1M
//!    measured.
//!    **EC+trig**: the same with 10% of the ops replaced by trigger ops: trigger orders (stop /
//!    take-profit, half market and half limit, triggers 1..=10 ticks beyond the last trade price)
//!    while fewer than 1,000 pend, else a cancel of a random pending one by its owner (so the
//!    pending set stays near 1,000 like the book, and triggers leave by firing or cancel instead of
//!    piling up to the per-market bound), run right after EC in the same process so the two ns/op
//!    compare.
//! 4. **CSV** replay: lines `side,price,qty` (side `B`/`S` or `buy`/`sell`, price in ticks,
//!    quantity in lots; blank lines, `#` comments and a `side,...` header are skipped) sent as GTC
//!    limits by the same two users as W-LB and reported like W-LB. Runs
//!    `engine/benches/data/sample-flow.csv` unless `ENGINE_BENCH_CSV` names another file.
//!
//! Cancels in W-OBRS name orders by the workload's sequential id. The engine numbers accepted
//! orders itself, market orders included, so the commands are planned on a scratch engine that
//! records each limit's engine id and owner; a cancel goes to that engine id *from its owner*
//! (never a `NotOrderOwner` reject). The timed run replays the identical commands on a fresh
//! engine, and its final state hash must equal the planner's. EC is planned the same way (it needs
//! to know which orders are open). Self-trade prevention is `RejectTaker` everywhere (the test
//! kit's default); with two one-sided users it never fires in W-LB and CSV.
//!
//! Book capacity (preallocated): the order count for W-LB and CSV (an upper bound); for W-OBRS and
//! EC the planned peak plus a quarter, at least 2^16. (With the book's former id hash map a
//! capacity far above the working set was not free: its buckets spread over memory nothing had
//! touched, and EC with a 1.1M capacity had GTC p99 2.4 µs instead of 0.45 µs. The id index is now
//! an array written in id order, and the client-id map is only touched by orders with client ids.)
//!
//! Per-op latencies include one `Instant::now()` (its cost is printed first). Their ops/s is the
//! measured op count over the sum of per-op latencies; the wall-clock rate of the whole loop, with
//! histogram recording, is printed in the details.
//!
//! Environment: `ENGINE_BENCH_QUICK=1` divides every op count by 100 (a smoke run of a few
//! seconds; a CSV file is then cut to its first `max(1000, lines / 100)` orders);
//! `ENGINE_BENCH_CSV=path` replays that file as workload 4; `ENGINE_BENCH_ONLY=wlb,obrs,ec,csv`
//! runs only the named workloads.

use codec::{Command, Event, MarketId, OrderId, OrderType, RejectReason, Side, TimeInForce, TriggerKind, WireEnum};
use engine::testkit::profiles::{
    EXCHANGE_CORE, EXCHANGE_CORE_BAND_TICKS, EXCHANGE_CORE_CROSSING_IN_BAND, EXCHANGE_CORE_IOC_THROUGH_TICKS, W_OBRS,
    W_OBRS_BAND_TICKS, parse_flow_csv,
};
use engine::testkit::{GlibcRand, commands};
use engine::{Book, CommandContext, Engine, EngineConfig, OrderBook};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The market every workload trades: BTC_USDC.
const MARKET: u32 = 1;
/// BTC_USDC's base (BTC) and quote (USDC) asset ids.
const BASE: u32 = 0;
const QUOTE: u32 = 1;
/// The two users of W-LB and CSV: one only buys, the other only sells.
const BUYER: u64 = 1;
const SELLER: u64 = 2;

// ------------------------------------------------------------------------------------------------
// Options
// ------------------------------------------------------------------------------------------------

const WORKLOAD_NAMES: [&str; 4] = ["wlb", "obrs", "ec", "csv"];

struct Options {
    quick: bool,
    csv: Option<PathBuf>,
    only: Option<Vec<String>>,
}

impl Options {
    fn from_env() -> Self {
        let quick = std::env::var("ENGINE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let csv = std::env::var_os("ENGINE_BENCH_CSV").filter(|v| !v.is_empty()).map(PathBuf::from);
        let only = std::env::var("ENGINE_BENCH_ONLY").ok().filter(|v| !v.trim().is_empty()).map(|v| {
            let names: Vec<String> =
                v.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect();
            for name in &names {
                if !WORKLOAD_NAMES.contains(&name.as_str()) {
                    eprintln!("ENGINE_BENCH_ONLY: unknown workload {name:?} (known: {})", WORKLOAD_NAMES.join(","));
                    std::process::exit(2);
                }
            }
            names
        });
        Self { quick, csv, only }
    }

    fn wants(&self, name: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.iter().any(|n| n == name))
    }

    /// An op count, divided by 100 in quick mode.
    fn n(&self, full: usize) -> usize {
        if self.quick { (full / 100).max(1) } else { full }
    }
}

// ------------------------------------------------------------------------------------------------
// Engine harness
// ------------------------------------------------------------------------------------------------

/// An engine for BTC_USDC alone with room for `capacity` resting orders (all of them possibly one
/// user's) and `accounts` accounts.
fn config(capacity: usize, accounts: usize) -> EngineConfig {
    let mut config = EngineConfig::sample();
    // Every market preallocates `orders_per_market_max` slots: keep only the one we use.
    config.markets.truncate(1);
    config.limits.orders_per_market_max = capacity.max(1);
    config.limits.open_orders_per_user_max = capacity.max(1);
    config.limits.accounts_expected = accounts + 16;
    config
}

/// Deposits giving each of `users` an equal share of a quarter of `u64::MAX` in both assets: far
/// more than any workload reserves, and the engine's per-asset total stays below `u64::MAX`.
fn funding(users: &[u64]) -> Vec<Command> {
    let each = u64::MAX / 4 / users.len() as u64;
    users.iter().flat_map(|&user| [commands::deposit(user, BASE, each), commands::deposit(user, QUOTE, each)]).collect()
}

/// An engine, its reused event buffer and the sequence counter.
struct Runner {
    engine: Engine,
    events: Vec<Event>,
    sequence: u64,
}

impl Runner {
    fn new(capacity: usize, accounts: usize) -> Self {
        let engine = Engine::new(&config(capacity, accounts)).expect("valid configuration");
        Self { engine, events: Vec::with_capacity(4096), sequence: 0 }
    }

    /// Executes one command; its events are in `self.events` until the next one.
    #[inline(always)]
    fn execute(&mut self, command: &Command) {
        self.sequence += 1;
        self.events.clear();
        self.engine.execute(CommandContext::new(self.sequence, self.sequence), command, &mut self.events);
    }

    /// Executes set-up commands, which must not be rejected.
    fn setup(&mut self, commands: &[Command]) {
        for command in commands {
            self.execute(command);
            if let Some(Event::OrderRejected(reject)) = self.events.first() {
                panic!("set-up command {command:?} rejected: {:?}", reject.reason);
            }
        }
    }

    fn book(&self) -> &OrderBook {
        self.engine.book(MarketId::new(MARKET)).expect("market 1 exists")
    }

    /// Runs [`Engine::validate`]; an engine bug stops the benchmark.
    fn validate(&self, workload: &str) {
        if let Err(problem) = self.engine.validate() {
            panic!("{workload}: engine invariant broken after the run: {problem}");
        }
    }
}

/// Counts of the events of the measured commands.
#[derive(Debug, Default)]
struct Tally {
    ops: u64,
    events: u64,
    fills: u64,
    accepted: u64,
    canceled: u64,
    expired: u64,
    replaced: u64,
    rejects: BTreeMap<u16, u64>,
}

impl Tally {
    #[inline(always)]
    fn add(&mut self, events: &[Event]) {
        self.ops += 1;
        self.events += events.len() as u64;
        for event in events {
            match event {
                Event::Fill(_) => self.fills += 1,
                Event::OrderAccepted(_) => self.accepted += 1,
                Event::OrderCanceled(_) => self.canceled += 1,
                Event::OrderExpired(_) => self.expired += 1,
                Event::OrderReplaced(_) => self.replaced += 1,
                Event::OrderRejected(reject) => *self.rejects.entry(reject.reason.raw()).or_default() += 1,
                Event::BookLevelUpdate(_)
                | Event::BalanceUpdate(_)
                | Event::MassCancelReport(_)
                | Event::MarketStatusChanged(_) => {}
                Event::LiquidityAdded(_)
                | Event::LiquidityRemoved(_)
                | Event::SwapExecuted(_)
                | Event::OrderRouted(_)
                | Event::TriggerPending(_)
                | Event::TriggerPlaced(_)
                | Event::TriggerFailed(_) => {}
            }
        }
    }

    fn per_op(&self, count: u64) -> f64 {
        count as f64 / self.ops.max(1) as f64
    }

    fn rejected(&self) -> u64 {
        self.rejects.values().sum()
    }

    fn print(&self) {
        println!(
            "  events: {:.3}/op ({} total); fills {:.4}/op; accepted {}, canceled {}, expired {}, replaced {}",
            self.per_op(self.events),
            self.events,
            self.per_op(self.fills),
            self.accepted,
            self.canceled,
            self.expired,
            self.replaced
        );
        if self.rejects.is_empty() {
            println!("  rejects: none");
        } else {
            let list: Vec<String> = self
                .rejects
                .iter()
                .map(|(&code, count)| match RejectReason::from_code(code) {
                    Some(reason) => format!("{reason:?} ({code}) {count}"),
                    None => format!("code {code} {count}"),
                })
                .collect();
            println!("  rejects: {}", list.join(", "));
        }
    }
}

/// One line of the summary table.
struct Row {
    name: String,
    ops: u64,
    /// Time charged to the ops: the wall clock of the loop (throughput workloads) or the sum of
    /// per-op latencies (latency workloads).
    time: Duration,
    /// p50, p99, p99.9, p99.99, max in ns (latency workloads).
    percentiles: Option<[u64; 5]>,
    fills_per_op: f64,
    events_per_op: f64,
    resting: usize,
    rejects: u64,
}

fn describe_book(book: &OrderBook) -> String {
    let mut levels = [0usize; 2];
    for (i, side) in [Side::Bid, Side::Ask].into_iter().enumerate() {
        book.visit_levels(side, &mut |_| {
            levels[i] += 1;
            true
        });
    }
    let price = |side| book.best_price(side).map_or("-".to_string(), |p| p.get().to_string());
    format!(
        "{} resting orders; bids {} levels (best {}), asks {} levels (best {})",
        book.len(),
        levels[0],
        price(Side::Bid),
        levels[1],
        price(Side::Ask)
    )
}

// ------------------------------------------------------------------------------------------------
// Throughput workloads (W-LB, CSV): one wall clock around the whole loop
// ------------------------------------------------------------------------------------------------

/// Commands a throughput workload hands the engine at a time, from one reused buffer (tens of KB:
/// it stays in cache, as a real ingress ring's slots do).
const FLOW_CHUNK: usize = 256;

/// Sends `total` orders (GTC limits of [`BUYER`] and [`SELLER`]) to a fresh engine and times the
/// loop. `next_chunk` appends the next orders (at most [`FLOW_CHUNK`], at least one until `total`)
/// to an empty reused buffer; generating them is not timed.
fn run_flow(name: &str, total: usize, mut next_chunk: impl FnMut(&mut Vec<Command>)) -> Row {
    let mut runner = Runner::new(total, 2);
    runner.setup(&funding(&[BUYER, SELLER]));
    let mut tally = Tally::default();
    let mut chunk = Vec::with_capacity(FLOW_CHUNK);
    let mut wall = Duration::ZERO;
    let mut sent = 0usize;
    while sent < total {
        chunk.clear();
        next_chunk(&mut chunk);
        assert!(!chunk.is_empty() && chunk.len() <= FLOW_CHUNK, "the flow ended early");
        let start = Instant::now();
        for command in &chunk {
            runner.execute(command);
            tally.add(&runner.events);
        }
        wall += start.elapsed();
        sent += chunk.len();
    }
    let ops = sent as u64;
    let resting = runner.book().len();
    println!("{name}: {ops} inserts in {:.3} s", wall.as_secs_f64());
    println!(
        "  {:.1} ns/insert ({:.2} M inserts/s); fills/insert {:.4}",
        wall.as_nanos() as f64 / ops.max(1) as f64,
        ops as f64 / wall.as_secs_f64() / 1e6,
        tally.per_op(tally.fills)
    );
    println!("  end: {}", describe_book(runner.book()));
    tally.print();
    runner.validate(name);
    println!("  validate: ok");
    println!();
    Row {
        name: name.to_string(),
        ops,
        time: wall,
        percentiles: None,
        fills_per_op: tally.per_op(tally.fills),
        events_per_op: tally.per_op(tally.events),
        resting,
        rejects: tally.rejected(),
    }
}

/// W-LB's order stream (see the module documentation), generated as it is sent.
struct WlbStream {
    rng: GlibcRand,
    next: usize,
    total: usize,
}

impl WlbStream {
    fn new(total: usize) -> Self {
        Self { rng: GlibcRand::new(3), next: 0, total }
    }

    /// Appends the next orders, up to [`FLOW_CHUNK`].
    fn fill(&mut self, chunk: &mut Vec<Command>) {
        let end = self.total.min(self.next + FLOW_CHUNK);
        for i in self.next..end {
            let (side, user, low) = if i % 2 == 0 { (Side::Bid, BUYER, 1880) } else { (Side::Ask, SELLER, 1884) };
            let price = low + u64::from(self.rng.uniform(0, 9));
            let quantity = 100 * u64::from(self.rng.uniform(1, 10));
            chunk.push(commands::gtc(user, MARKET, side, price, quantity));
        }
        self.next = end;
    }
}

/// Reads a `side,price,qty` file ([`parse_flow_csv`]) into GTC limits of [`BUYER`] / [`SELLER`].
fn read_csv(path: &Path) -> Result<Vec<Command>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let rows = parse_flow_csv(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let user = if row.side == Side::Bid { BUYER } else { SELLER };
            commands::gtc(user, MARKET, row.side, row.price_ticks, row.lots)
        })
        .collect())
}

// ------------------------------------------------------------------------------------------------
// Latency workloads (W-OBRS, EC): planned on a scratch engine, replayed with per-op timing
// ------------------------------------------------------------------------------------------------

/// Marsaglia's xorshift64 (13, 7, 17).
struct XorShift64(u64);

impl XorShift64 {
    #[inline]
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// `lo + next() % (hi − lo + 1)`.
    #[inline]
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Commands of a latency workload, in three phases, and the state hash the planner ended with.
struct Plan {
    setup: Vec<Command>,
    warmup: Vec<Command>,
    measured: Vec<Command>,
    /// Most orders the planning run had on the book at once.
    peak_book: usize,
    accounts: usize,
    planned_hash: u64,
    notes: Vec<String>,
}

impl Plan {
    /// Book capacity of the timed engine: the planned peak plus a quarter, at least the default
    /// 2^16. The plan never comes near it, so the engine behaves exactly as in planning (the state
    /// hashes are compared). A capacity far above the working set costs page faults and cache
    /// misses: the id index's buckets would be spread over memory nothing has touched yet.
    fn capacity(&self) -> usize {
        (self.peak_book + self.peak_book / 4).max(1 << 16)
    }
}

/// A command's kind, for per-kind latency.
const KINDS: [&str; 6] = ["gtc limit", "ioc limit", "market", "cancel", "replace", "trigger"];

fn kind(command: &Command) -> Option<usize> {
    match command {
        Command::NewOrder(order) if order.trigger_kind.get() != Ok(TriggerKind::None) => Some(5),
        Command::NewOrder(order) => match (order.order_type.get(), order.time_in_force.get()) {
            (Ok(OrderType::Market), _) => Some(2),
            (_, Ok(TimeInForce::Gtc)) => Some(0),
            _ => Some(1),
        },
        Command::CancelOrder(_) => Some(3),
        Command::CancelReplace(_) => Some(4),
        _ => None,
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1_000_000_000, 3).expect("valid histogram bounds")
}

fn percentiles(h: &Histogram<u64>) -> [u64; 5] {
    [
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.value_at_quantile(0.9999),
        h.max(),
    ]
}

/// Replays a plan on a fresh engine: set-up and warm-up untimed, then each measured command
/// between two `Instant::now()`.
fn run_latency(name: &str, plan: &Plan) -> Row {
    let mut runner = Runner::new(plan.capacity(), plan.accounts);
    runner.setup(&plan.setup);
    for command in &plan.warmup {
        runner.execute(command);
    }
    let mut all = histogram();
    let mut by_kind: Vec<Histogram<u64>> = KINDS.iter().map(|_| histogram()).collect();
    let mut tally = Tally::default();
    let mut total_ns: u128 = 0;
    let start = Instant::now();
    for command in &plan.measured {
        let t0 = Instant::now();
        runner.execute(command);
        let t1 = Instant::now();
        let ns = t1.duration_since(t0).as_nanos() as u64;
        total_ns += u128::from(ns);
        all.saturating_record(ns);
        if let Some(k) = kind(command) {
            by_kind[k].saturating_record(ns);
        }
        tally.add(&runner.events);
    }
    let wall = start.elapsed();
    let hash = runner.engine.state_hash();
    assert_eq!(hash, plan.planned_hash, "{name}: the timed replay diverged from the planning run");

    let ops = plan.measured.len() as u64;
    let p = percentiles(&all);
    println!("{name}: {} set-up + {} warm-up commands untimed, {ops} measured", plan.setup.len(), plan.warmup.len());
    println!(
        "  latency ns: p50 {} p99 {} p99.9 {} p99.99 {} max {} (mean {:.1})",
        p[0],
        p[1],
        p[2],
        p[3],
        p[4],
        all.mean()
    );
    println!(
        "  throughput: {:.2} M ops/s over the sum of per-op latencies; {:.2} M ops/s wall clock incl. recording",
        ops as f64 / (total_ns as f64 / 1e9) / 1e6,
        ops as f64 / wall.as_secs_f64() / 1e6
    );
    for (k, h) in by_kind.iter().enumerate() {
        if !h.is_empty() {
            let q = percentiles(h);
            println!(
                "    {:<10} {:>8} ops ({:>5.1}%)  p50 {:>6} p99 {:>6} p99.9 {:>7} max {:>9}",
                KINDS[k],
                h.len(),
                100.0 * h.len() as f64 / ops.max(1) as f64,
                q[0],
                q[1],
                q[2],
                q[4]
            );
        }
    }
    println!("  end: {}", describe_book(runner.book()));
    tally.print();
    for note in &plan.notes {
        println!("  note: {note}");
    }
    runner.validate(name);
    println!("  validate: ok; state hash equals the planning run's");
    println!();
    Row {
        name: name.to_string(),
        ops,
        time: Duration::from_nanos(total_ns as u64),
        percentiles: Some(p),
        fills_per_op: tally.per_op(tally.fills),
        events_per_op: tally.per_op(tally.events),
        resting: runner.book().len(),
        rejects: tally.rejected(),
    }
}

/// The id of the order a NewOrder just created, if it was accepted.
fn accepted_id(events: &[Event]) -> Option<u64> {
    match events.first() {
        Some(Event::OrderAccepted(accepted)) => Some(accepted.order_id.get()),
        _ => None,
    }
}

/// W-OBRS: see the module documentation.
fn plan_obrs(warmup: usize, measured: usize) -> Plan {
    const OWNERS: [u64; 4] = [1, 2, 3, 4];
    let total = warmup + measured;
    // No more orders can rest than limits are sent: at most one per op.
    let mut planner = Runner::new(total, OWNERS.len());
    let setup = funding(&OWNERS);
    planner.setup(&setup);

    let mut rng = XorShift64(0xA5A5_A5A5_A5A5_A5A5);
    // Workload id k (from 1) is limits[k - 1]: (engine order id, owner).
    let mut limits: Vec<(u64, u64)> = Vec::with_capacity(total);
    let mut early_cancels = 0u64;
    let mut peak_book = 0;
    let mut all = Vec::with_capacity(total);
    for _ in 0..total {
        let roll = rng.next() % 100;
        let command = if roll < u64::from(W_OBRS.gtc_pct) {
            let price = rng.range(100 - W_OBRS_BAND_TICKS, 100 + W_OBRS_BAND_TICKS);
            let quantity = rng.range(1, 100);
            let side = if rng.next() % 2 == 0 { Side::Bid } else { Side::Ask };
            let owner = 1 + rng.next() % 4;
            let engine_id = planner.engine.next_order_id().get();
            limits.push((engine_id, owner));
            let command = commands::gtc(owner, MARKET, side, price, quantity);
            planner.execute(&command);
            if accepted_id(&planner.events) != Some(engine_id) {
                panic!("W-OBRS: limit #{} was not accepted as order {engine_id}: {:?}", limits.len(), planner.events);
            }
            command
        } else {
            let command = if roll < u64::from(W_OBRS.gtc_pct + W_OBRS.cancel_pct) {
                if limits.is_empty() {
                    // R(1, 0) is empty: nothing to name yet. Send a cancel of order 0 (a miss).
                    early_cancels += 1;
                    commands::cancel(OWNERS[0], MARKET, 0)
                } else {
                    let (engine_id, owner) = limits[rng.range(1, limits.len() as u64) as usize - 1];
                    commands::cancel(owner, MARKET, engine_id)
                }
            } else {
                let quantity = rng.range(1, 10);
                let side = if rng.next() % 2 == 0 { Side::Bid } else { Side::Ask };
                let owner = 1 + rng.next() % 4;
                commands::market(owner, MARKET, side, quantity)
            };
            planner.execute(&command);
            command
        };
        peak_book = peak_book.max(planner.book().len());
        all.push(command);
    }
    let planned_hash = planner.engine.state_hash();
    let measured_commands = all.split_off(warmup);
    let mut notes = vec![format!(
        "{} limits sent; engine ids run ahead of workload ids by the {} accepted market orders",
        limits.len(),
        planner.engine.next_order_id().get() - 1 - limits.len() as u64
    )];
    if early_cancels > 0 {
        notes.push(format!("{early_cancels} cancels drawn before the first limit were sent as cancels of order 0"));
    }
    Plan { setup, warmup: all, measured: measured_commands, peak_book, accounts: OWNERS.len(), planned_hash, notes }
}

/// The open orders of the EC planner, for picking one at random.
#[derive(Default)]
struct OpenOrders {
    list: Vec<OpenOrder>,
    index: HashMap<u64, usize>,
}

#[derive(Clone, Copy)]
struct OpenOrder {
    id: u64,
    owner: u64,
    side: Side,
    price: u64,
}

impl OpenOrders {
    fn upsert(&mut self, order: OpenOrder) {
        match self.index.get(&order.id) {
            Some(&i) => self.list[i] = order,
            None => {
                self.index.insert(order.id, self.list.len());
                self.list.push(order);
            }
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(i) = self.index.remove(&id) {
            self.list.swap_remove(i);
            if let Some(moved) = self.list.get(i) {
                self.index.insert(moved.id, i);
            }
        }
    }

    /// Brings the entry for `id` in line with the book.
    fn sync(&mut self, book: &OrderBook, id: u64) {
        match book.get(OrderId::new(id)) {
            Some(o) => self.upsert(OpenOrder { id, owner: o.user_id.get(), side: o.side, price: o.price.get() }),
            None => self.remove(id),
        }
    }

    /// Applies the removals an execution's events report.
    fn apply(&mut self, events: &[Event]) {
        for event in events {
            match event {
                Event::Fill(fill) if fill.maker_remaining_lots.get() == 0 => self.remove(fill.maker_order_id.get()),
                Event::OrderCanceled(canceled) => self.remove(canceled.order_id.get()),
                _ => {}
            }
        }
    }
}

/// Percent of the EC+trig workload's ops that are trigger orders (placements, and cancels of
/// pending ones once there are [`EC_TRIGGER_TARGET`]).
const EC_TRIGGER_PCT: u64 = 10;

/// Pending triggers EC+trig holds: at this many, a trigger op cancels a random pending trigger
/// instead of placing one (as traders move their stops), so the pending set stays near it the way
/// the book stays near its target, instead of piling up to the per-market bound.
const EC_TRIGGER_TARGET: usize = 1_000;

/// Farthest EC+trig trigger from the last trade price, in ticks. EC's last price moves within a
/// few ticks of its start, so triggers up to about 3 ticks away fire within a few trades and the
/// farther ones mostly wait until a cancel takes them: both ways out are exercised.
const EC_TRIGGER_DISTANCE_MAX: u64 = 10;

/// EC's centre before the book has both sides.
const EC_START_PRICE: u64 = 100_000;

/// EC's price for a new or moved order: within 30 ticks inside-out of the opposite side's best
/// price. With `may_cross`, 3 in 30 are at or through that best price (offsets −3..=−1) and trade;
/// without, those offsets are mirrored to 0..=2 and the order rests.
fn ec_price(rng: &mut XorShift64, book: &OrderBook, side: Side, may_cross: bool) -> u64 {
    let crossing = EXCHANGE_CORE_CROSSING_IN_BAND as i64;
    let mut offset = rng.range(0, EXCHANGE_CORE_BAND_TICKS - 1) as i64 - crossing;
    if !may_cross && offset < 0 {
        offset = -offset - 1;
    }
    let best = |side| book.best_price(side).map(|p| p.get() as i64);
    let price = match side {
        Side::Bid => best(Side::Ask).or(best(Side::Bid).map(|p| p + 1)).unwrap_or(EC_START_PRICE as i64) - 1 - offset,
        Side::Ask => best(Side::Bid).or(best(Side::Ask).map(|p| p - 1)).unwrap_or(EC_START_PRICE as i64) + 1 + offset,
    };
    price.max(1) as u64
}

/// EC: see the module documentation.
/// EC with `trigger_pct` percent of the ops replaced by trigger ops: while fewer than
/// [`EC_TRIGGER_TARGET`] triggers pend, a trigger order (stop or take-profit, half market and half
/// limit at the trigger price, `R(1, 20)` lots, trigger `R(1, EC_TRIGGER_DISTANCE_MAX)` ticks beyond the last trade
/// price in its direction); at the target, a cancel of a random pending trigger by its owner.
/// Triggers also leave by firing when the price reaches them. The trigger draws use their own
/// generator, so with `trigger_pct` 0 the plan is exactly EC's.
fn plan_ec(warmup: usize, measured: usize, trigger_pct: u64) -> Plan {
    const ACCOUNTS: u64 = 1_000;
    const PREFILL: usize = 1_000;
    const TARGET_BOOK: usize = PREFILL;
    let total = warmup + measured;
    let mut planner = Runner::new(PREFILL + total, ACCOUNTS as usize);
    let users: Vec<u64> = (1..=ACCOUNTS).collect();
    let mut setup = funding(&users);
    planner.setup(&setup);

    let mut rng = XorShift64(0x0EC0_5EED_2545_F491);
    let mut open = OpenOrders::default();
    let random_side = |rng: &mut XorShift64| if rng.next() % 2 == 0 { Side::Bid } else { Side::Ask };

    // Pre-fill: non-crossing orders spread over the accounts.
    for i in 0..PREFILL {
        let side = if i % 2 == 0 { Side::Bid } else { Side::Ask };
        let distance = rng.range(0, 29);
        let price = match side {
            Side::Bid => EC_START_PRICE - 1 - distance,
            Side::Ask => EC_START_PRICE + 1 + distance,
        };
        let command = commands::gtc(1 + i as u64 % ACCOUNTS, MARKET, side, price, rng.range(1, 100));
        planner.execute(&command);
        let id = accepted_id(&planner.events).expect("pre-fill order accepted");
        open.apply(&planner.events);
        open.sync(planner.book(), id);
        setup.push(command);
    }

    let mut counts = [0u64; KINDS.len()];
    let mut trigger_rng = XorShift64(0x7816_6E55_0D1C_E5A1);
    // Pending triggers (price: the trigger price), and what became of them.
    let mut pending = OpenOrders::default();
    let (mut trigger_cancels, mut fired, mut failed, mut canceled) = (0u64, 0u64, 0u64, 0u64);
    let mut most_pending = 0;
    let mut peak_book = planner.book().len();
    let (mut smallest, mut largest) = (usize::MAX, 0);
    let mut all = Vec::with_capacity(total);
    for op in 0..total {
        let roll = rng.next() % 100;
        // Holds the book near its target size: below it, new and moved orders all rest.
        let may_cross = open.list.len() >= TARGET_BOOK;
        let book = planner.book();
        let (gtc, ioc, cancel) =
            (u64::from(EXCHANGE_CORE.gtc_pct), u64::from(EXCHANGE_CORE.ioc_pct), u64::from(EXCHANGE_CORE.cancel_pct));
        let last_trade = planner.engine.last_trade_price(MarketId::new(MARKET)).unwrap_or(0);
        let trigger_op = trigger_pct > 0 && last_trade > 20 && trigger_rng.next() % 100 < trigger_pct;
        let (command, subject) = if trigger_op && pending.list.len() >= EC_TRIGGER_TARGET {
            let target = pending.list[(trigger_rng.next() % pending.list.len() as u64) as usize];
            trigger_cancels += 1;
            (commands::cancel(target.owner, MARKET, target.id), None)
        } else if trigger_op {
            let owner = trigger_rng.range(1, ACCOUNTS);
            let side = random_side(&mut trigger_rng);
            let kind = if trigger_rng.next() % 2 == 0 { TriggerKind::Stop } else { TriggerKind::TakeProfit };
            let rises = matches!((kind, side), (TriggerKind::Stop, Side::Bid) | (TriggerKind::TakeProfit, Side::Ask));
            let distance = trigger_rng.range(1, EC_TRIGGER_DISTANCE_MAX);
            let trigger = if rises { last_trade + distance } else { last_trade - distance };
            let price = if trigger_rng.next() % 2 == 0 { 0 } else { trigger };
            (commands::trigger(owner, MARKET, side, kind, trigger, price, trigger_rng.range(1, 20), 0), None)
        } else if roll < gtc + ioc || open.list.is_empty() {
            let owner = rng.range(1, ACCOUNTS);
            let side = random_side(&mut rng);
            let command = if roll < gtc || (open.list.is_empty() && roll >= gtc + ioc) {
                commands::gtc(owner, MARKET, side, ec_price(&mut rng, book, side, may_cross), rng.range(1, 100))
            } else {
                // Aggressive: at the opposite best price or up to 3 ticks through it.
                let through = rng.range(0, EXCHANGE_CORE_IOC_THROUGH_TICKS);
                let price = match side {
                    Side::Bid => book.best_price(Side::Ask).map_or(EC_START_PRICE, |p| p.get() + through),
                    Side::Ask => {
                        book.best_price(Side::Bid).map_or(EC_START_PRICE, |p| p.get().saturating_sub(through).max(1))
                    }
                };
                commands::limit(owner, MARKET, side, price, rng.range(1, 50), TimeInForce::Ioc, 0)
            };
            (command, None)
        } else {
            let target = open.list[(rng.next() % open.list.len() as u64) as usize];
            if roll < gtc + ioc + cancel {
                (commands::cancel(target.owner, MARKET, target.id), None)
            } else {
                let mut price = ec_price(&mut rng, book, target.side, may_cross);
                if price == target.price {
                    // Move it one tick away from the spread instead.
                    price = match target.side {
                        Side::Bid => (price - 1).max(1),
                        Side::Ask => price + 1,
                    };
                }
                (commands::replace(target.owner, MARKET, target.id, price, 0), Some(target.id))
            }
        };
        planner.execute(&command);
        if let Some(k) = kind(&command) {
            counts[k] += 1;
        }
        open.apply(&planner.events);
        if let Some(id) = subject.or_else(|| accepted_id(&planner.events)) {
            open.sync(planner.book(), id);
        }
        // Trigger orders this command fired may have rested.
        for event in &planner.events {
            match event {
                Event::OrderAccepted(accepted) => open.sync(planner.book(), accepted.order_id.get()),
                Event::TriggerPending(trigger) => pending.upsert(OpenOrder {
                    id: trigger.order_id.get(),
                    owner: trigger.user_id.get(),
                    side: trigger.side.get().unwrap_or(Side::Bid),
                    price: trigger.trigger_price_ticks.get(),
                }),
                Event::TriggerPlaced(placed) => {
                    fired += 1;
                    pending.remove(placed.order_id.get());
                }
                Event::TriggerFailed(_) => failed += 1,
                Event::OrderCanceled(cancel) if pending.index.contains_key(&cancel.order_id.get()) => {
                    canceled += 1;
                    pending.remove(cancel.order_id.get());
                }
                _ => {}
            }
        }
        most_pending = most_pending.max(pending.list.len());
        let size = planner.book().len();
        peak_book = peak_book.max(size);
        if op >= warmup {
            smallest = smallest.min(size);
            largest = largest.max(size);
        }
        all.push(command);
    }
    assert_eq!(open.list.len(), planner.book().len(), "EC planner lost track of the open orders");
    let planned_hash = planner.engine.state_hash();
    let measured_commands = all.split_off(warmup);
    let mix: Vec<String> = KINDS
        .iter()
        .zip(counts)
        .filter(|&(_, n)| n > 0)
        .map(|(name, n)| format!("{name} {:.1}%", 100.0 * n as f64 / total.max(1) as f64))
        .collect();
    let mid = |book: &OrderBook| match (book.best_price(Side::Bid), book.best_price(Side::Ask)) {
        (Some(bid), Some(ask)) => format!("{}", (bid.get() + ask.get()) / 2),
        _ => "-".to_string(),
    };
    let mut notes = vec![
        format!("{ACCOUNTS} accounts, {PREFILL} pre-filled orders; mix over warm-up + measured: {}", mix.join(", ")),
        format!(
            "book size while measured: {smallest}..={largest} orders (target {TARGET_BOOK}); mid {EC_START_PRICE} -> {}",
            mid(planner.book())
        ),
    ];
    if trigger_pct > 0 {
        notes.push(format!(
            "triggers over warm-up + measured: {} placed, {fired} fired ({failed} of them failed to place), \
             {canceled} canceled (by {trigger_cancels} cancel ops, counted as cancel above); pending at most \
             {most_pending}, at the end {} (target {EC_TRIGGER_TARGET})",
            counts[5],
            pending.list.len()
        ));
    }
    Plan {
        setup,
        warmup: all,
        measured: measured_commands,
        peak_book,
        accounts: ACCOUNTS as usize,
        planned_hash,
        notes,
    }
}

// ------------------------------------------------------------------------------------------------
// Main
// ------------------------------------------------------------------------------------------------

/// The cost of the timer itself: p50 of back-to-back `Instant::now()` pairs.
fn timer_overhead() -> u64 {
    let mut h = histogram();
    for _ in 0..100_000 {
        let t0 = Instant::now();
        let t1 = Instant::now();
        h.saturating_record(t1.duration_since(t0).as_nanos() as u64);
    }
    h.value_at_quantile(0.5)
}

fn count_label(n: usize) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

fn print_table(rows: &[Row]) {
    let header = [
        "workload",
        "ops",
        "ns/op",
        "Mops/s",
        "p50",
        "p99",
        "p99.9",
        "p99.99",
        "max",
        "fills/op",
        "events/op",
        "resting",
        "rejects",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for row in rows {
        let ns_per_op = row.time.as_nanos() as f64 / row.ops.max(1) as f64;
        let mut line =
            vec![row.name.clone(), row.ops.to_string(), format!("{ns_per_op:.1}"), format!("{:.2}", 1e3 / ns_per_op)];
        match row.percentiles {
            Some(p) => line.extend(p.iter().map(|v| v.to_string())),
            None => line.extend((0..5).map(|_| "-".to_string())),
        }
        line.extend([
            format!("{:.4}", row.fills_per_op),
            format!("{:.3}", row.events_per_op),
            row.resting.to_string(),
            row.rejects.to_string(),
        ]);
        lines.push(line);
    }
    let widths: Vec<usize> = (0..header.len()).map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0)).collect();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(
                |(c, cell)| {
                    if c == 0 { format!("{cell:<w$}", w = widths[c]) } else { format!("{cell:>w$}", w = widths[c]) }
                },
            )
            .collect();
        println!("{}", cells.join("  "));
    }
}

fn main() {
    let options = Options::from_env();
    println!(
        "engine workloads{}; market BTC_USDC; STP RejectTaker; timer pair p50 {} ns",
        if options.quick { " (ENGINE_BENCH_QUICK: op counts / 100)" } else { "" },
        timer_overhead()
    );
    println!();
    let mut rows = Vec::new();

    if options.wants("wlb") {
        for full in [1_000_000, 5_000_000] {
            let n = options.n(full);
            let mut stream = WlbStream::new(n);
            rows.push(run_flow(&format!("W-LB {}", count_label(n)), n, |chunk| stream.fill(chunk)));
        }
    }
    if options.wants("obrs") {
        let plan = plan_obrs(options.n(200_000), options.n(1_000_000));
        rows.push(run_latency(&format!("W-OBRS {}", count_label(plan.measured.len())), &plan));
    }
    if options.wants("ec") {
        let plan = plan_ec(options.n(100_000), options.n(1_000_000), 0);
        rows.push(run_latency(&format!("EC {}", count_label(plan.measured.len())), &plan));
        let plan = plan_ec(options.n(100_000), options.n(1_000_000), EC_TRIGGER_PCT);
        rows.push(run_latency(&format!("EC+trig {}", count_label(plan.measured.len())), &plan));
    }
    if options.wants("csv") {
        let path = options
            .csv
            .clone()
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/sample-flow.csv"));
        let mut orders = read_csv(&path).unwrap_or_else(|e| {
            eprintln!("CSV workload: {e}");
            std::process::exit(2);
        });
        if options.quick && options.csv.is_some() {
            orders.truncate(orders.len().div_ceil(100).max(1_000));
        }
        let file = path.file_name().map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned());
        let mut rest = orders.chunks(FLOW_CHUNK);
        rows.push(run_flow(&format!("CSV {file}"), orders.len(), |chunk| {
            chunk.extend_from_slice(rest.next().unwrap_or_default())
        }));
    }

    println!("Summary (ns/op: wall clock per insert for W-LB/CSV, mean per-op latency for W-OBRS/EC; latencies in ns)");
    print_table(&rows);
}
