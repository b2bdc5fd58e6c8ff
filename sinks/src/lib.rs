//! Kafka, Postgres and Redis sinks fed from the engine's event stream.
//!
//! Every sink runs on its own thread behind a [`Driver`], which reads the egress broadcast ring
//! with its own cursor (the engine thread never waits on a sink), groups events by the command
//! that caused them, and hands whole commands to the sink in batches. Each sink keeps a durable
//! cursor: the last engine sequence it holds (Postgres: `sink_progress`, written in the same
//! transaction as the rows; Kafka: the sequence header of the last message of each partition;
//! Redis: the `sequence` key written atomically with the snapshot keys).
//!
//! When the sink starts, reconnects after an outage, or is told it lagged behind the ring, the
//! driver regenerates the commands it misses by replaying the journal into a shadow engine from
//! a snapshot at or before the cursor ([`replay`]): the engine is deterministic, so the replayed
//! events are exactly the ones the live engine published. Nothing is lost; nothing is written
//! twice (each sink writes idempotently, keyed by sequence, event index and trade id).
//!
//! The journal and snapshots a sink may still need are protected from pruning through the floor
//! the driver publishes ([`Driver::floor`]): the runtime prunes only below the lowest floor.

pub mod directory;
pub mod json;

// The client crates, for tools and tests that query the services directly.
pub use ::redis as redis_client;
pub use rdkafka;
pub use sqlx;
pub mod kafka;
pub mod postgres;
pub mod redis;

use codec::Event;
use engine::bus::{BroadcastRing, ReadError};
use engine::journal::{JournalError, JournalReader};
use engine::snapshot::list_snapshots;
use engine::{CommandContext, Engine, EngineConfig, OrderBook};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The events of one command, in the order the engine emitted them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandEvents {
    /// The command's engine sequence.
    pub sequence: u64,
    /// Its events (at least one).
    pub events: Vec<Event>,
}

/// Why a sink call failed. The driver logs it, waits, reconnects and resumes from the sink's
/// durable cursor, so a failure never loses or duplicates anything.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The service refused or dropped the request (network, broker, database).
    #[error("{0}")]
    Service(String),
    /// The journal or snapshots cannot produce the events the sink misses.
    #[error("catch-up impossible: {0}")]
    CatchUp(String),
    /// [`Driver::abort`] was called.
    #[error("aborted")]
    Aborted,
}

impl From<JournalError> for SinkError {
    /// A damaged or unreadable journal cannot produce the events a sink misses.
    fn from(error: JournalError) -> Self {
        SinkError::CatchUp(error.to_string())
    }
}

impl SinkError {
    /// A service error from anything printable.
    pub fn service(error: impl std::fmt::Display) -> Self {
        SinkError::Service(error.to_string())
    }
}

/// Where a sink resumes after [`Sink::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The sink durably holds every command up to and including this sequence (0: none).
    After(u64),
    /// The sink keeps state rather than history (Redis): seed it with the engine state of the
    /// newest snapshot ([`Sink::seed`]), then feed it every command after that snapshot.
    Seed,
}

/// A destination for the engine's events. Implementations must make [`Sink::write`] durable
/// and idempotent per (sequence, event index).
pub trait Sink: Send {
    /// Short name for logs and the progress table (`postgres`, `kafka`, `redis`).
    fn name(&self) -> &'static str;
    /// Connects (or reconnects) and tells where to resume.
    ///
    /// # Errors
    /// The service is unavailable.
    fn open(&mut self) -> Result<Resume, SinkError>;
    /// Gives the sink the engine's state at `sequence` (only after [`Resume::Seed`]).
    fn seed(&mut self, _engine: &Engine, _sequence: u64) {}
    /// Writes whole commands, in sequence order, each after the sink's cursor; returns once they
    /// are durable in the service (the cursor is then the last command's sequence).
    ///
    /// # Errors
    /// The service failed; nothing is assumed written.
    fn write(&mut self, commands: &[CommandEvents]) -> Result<(), SinkError>;
    /// How far before its durable cursor the sink may resume after a restart (Kafka: its
    /// in-flight window); history that far back is kept from pruning.
    fn resume_margin(&self) -> u64 {
        0
    }
    /// Called regularly, also when idle (periodic snapshots).
    ///
    /// # Errors
    /// The service failed.
    fn tick(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    /// Called once at shutdown after the last write.
    ///
    /// # Errors
    /// The service failed.
    fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Where the durable history lives: what [`replay`] needs.
#[derive(Debug, Clone)]
pub struct History {
    /// The engine configuration the journal was written with.
    pub engine_config: EngineConfig,
    /// Journal directory.
    pub journal_dir: PathBuf,
    /// Snapshot directory.
    pub snapshot_dir: PathBuf,
}

impl History {
    /// Rebuilds an engine from the newest usable snapshot at or before `at_most` (a fresh engine
    /// at sequence 0 when there is none).
    ///
    /// # Errors
    /// The snapshot directory cannot be read.
    pub fn engine_at_or_before(&self, at_most: u64) -> Result<(Engine, u64), SinkError> {
        let snapshots = list_snapshots(&self.snapshot_dir).map_err(|e| SinkError::CatchUp(e.to_string()))?;
        for (sequence, path) in snapshots.into_iter().filter(|(s, _)| *s <= at_most) {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            match Engine::restore_snapshot(&self.engine_config, OrderBook::with_capacity, &bytes) {
                Ok((engine, at)) if at == sequence => return Ok((engine, at)),
                _ => tracing::warn!(path = %path.display(), "snapshot unusable for catch-up; trying an older one"),
            }
        }
        let engine = Engine::new(&self.engine_config).map_err(|e| SinkError::CatchUp(e.to_string()))?;
        Ok((engine, 0))
    }

    /// The sequence of the newest snapshot at or before `at_most` (0: none).
    pub fn newest_snapshot_at_or_before(&self, at_most: u64) -> u64 {
        list_snapshots(&self.snapshot_dir)
            .map(|list| list.into_iter().map(|(s, _)| s).find(|s| *s <= at_most).unwrap_or(0))
            .unwrap_or(0)
    }
}

/// Regenerates the events of the commands in `(after, up_to]` by replaying the journal into a
/// shadow engine restored from a snapshot at or before `after`, calling `visit` with each
/// command's events. Returns the last sequence visited (`after` if none).
///
/// # Errors
/// The journal no longer holds the commands needed (pruned below the cursor), is damaged, or
/// `visit` failed.
pub fn replay(
    history: &History,
    after: u64,
    up_to: u64,
    visit: &mut dyn FnMut(CommandEvents) -> Result<(), SinkError>,
) -> Result<u64, SinkError> {
    if up_to <= after {
        return Ok(after);
    }
    let (engine, at) = history.engine_at_or_before(after)?;
    replay_from(history, engine, at, after, up_to, visit)
}

/// [`replay`] from an already restored engine at sequence `at` (≤ `after`).
///
/// # Errors
/// As [`replay`].
pub fn replay_from(
    history: &History,
    engine: Engine,
    at: u64,
    after: u64,
    up_to: u64,
    visit: &mut dyn FnMut(CommandEvents) -> Result<(), SinkError>,
) -> Result<u64, SinkError> {
    replay_engine(history, engine, at, after, up_to, visit).map(|(last, _)| last)
}

/// The engine's state at exactly `sequence`, rebuilt from a snapshot and the journal (for checks
/// and tools).
///
/// # Errors
/// As [`replay`].
pub fn engine_at(history: &History, sequence: u64) -> Result<Engine, SinkError> {
    let (engine, at) = history.engine_at_or_before(sequence)?;
    replay_engine(history, engine, at, at, sequence, &mut |_| Ok(())).map(|(_, engine)| engine)
}

/// Replays the journal after `at` into `engine` up to `up_to`, visiting the commands after
/// `after`. The journal is streamed one record at a time and the walk stops at `up_to`, so a
/// catch-up over a long outage holds one command's events, not the journal tail.
fn replay_engine(
    history: &History,
    mut engine: Engine,
    at: u64,
    after: u64,
    up_to: u64,
    visit: &mut dyn FnMut(CommandEvents) -> Result<(), SinkError>,
) -> Result<(u64, Engine), SinkError> {
    let reader = JournalReader::open(&history.journal_dir)?;
    let mut expected = at + 1;
    let mut last = after;
    let mut events = Vec::with_capacity(256);
    if up_to > at {
        reader.for_each_after(at, |record| {
            if record.sequence != expected {
                return Err(SinkError::CatchUp(format!(
                    "the journal resumes at sequence {} but sequence {expected} is needed (pruned?)",
                    record.sequence
                )));
            }
            expected += 1;
            let (command, gateway) = codec::decode_journaled(record.payload)
                .map_err(|e| SinkError::CatchUp(format!("journal record {}: {e}", record.sequence)))?;
            let context = CommandContext::new(record.sequence, record.timestamp_ns).with_gateway(gateway);
            if record.sequence > after {
                events.clear();
                engine.execute(context, &command, &mut events);
                visit(CommandEvents { sequence: record.sequence, events: events.clone() })?;
                last = record.sequence;
            } else {
                // Already delivered: only the state is needed.
                engine.execute_without_events(context, &command);
            }
            // Stop at `up_to`: later records (and segments) are not even read.
            Ok(if record.sequence >= up_to { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
        })?;
    }
    if expected <= up_to {
        return Err(SinkError::CatchUp(format!("the journal ends at {}, before sequence {up_to}", expected - 1)));
    }
    Ok((last, engine))
}

/// Settings of a [`Driver`].
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Most commands per write.
    pub batch_commands: usize,
    /// Longest a partial batch waits before it is written.
    pub linger: Duration,
    /// Wait before reconnecting after a failure (doubles up to 30 s).
    pub retry: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self { batch_commands: 1000, linger: Duration::from_millis(20), retry: Duration::from_millis(200) }
    }
}

/// Live counters of a driver.
#[derive(Debug, Default)]
pub struct DriverStats {
    /// Last sequence the sink holds durably.
    pub cursor: AtomicU64,
    /// Commands written (live and replayed).
    pub commands: AtomicU64,
    /// Commands regenerated from the journal.
    pub replayed: AtomicU64,
    /// Failures (each followed by a reconnect).
    pub failures: AtomicU64,
    /// Times the driver fell behind the ring.
    pub lags: AtomicU64,
    /// True while a session is open and healthy (the sink opened and no call has failed since);
    /// false before the first open, while reconnecting after a failure, and once stopped.
    pub connected: AtomicBool,
    /// Time of each [`Sink::write`] call (live and catch-up, failed calls included).
    pub write_latency: WriteLatency,
}

/// Upper bounds (inclusive, nanoseconds) of the [`WriteLatency`] buckets: 100 µs to 10 s. A
/// write is a network round trip or a transaction, so finer buckets would stay empty.
pub const WRITE_LATENCY_BOUNDS_NS: [u64; 16] = [
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
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets of a [`WriteLatency`]: one per bound plus one for slower writes.
pub const WRITE_LATENCY_BUCKETS: usize = WRITE_LATENCY_BOUNDS_NS.len() + 1;

/// A histogram of sink write times with fixed buckets ([`WRITE_LATENCY_BOUNDS_NS`]): recording is
/// two relaxed atomic adds, never an allocation.
#[derive(Debug, Default)]
pub struct WriteLatency {
    counts: [AtomicU64; WRITE_LATENCY_BUCKETS],
    sum_ns: AtomicU64,
}

impl WriteLatency {
    /// Records one write that took `elapsed`.
    pub fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = WRITE_LATENCY_BOUNDS_NS.partition_point(|&bound| bound < nanos);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Writes per bucket (not cumulative), in the order of [`WRITE_LATENCY_BOUNDS_NS`], the last
    /// one counting the writes slower than every bound.
    pub fn bucket_counts(&self) -> [u64; WRITE_LATENCY_BUCKETS] {
        std::array::from_fn(|bucket| self.counts[bucket].load(Ordering::Relaxed))
    }

    /// Total time of the recorded writes, in nanoseconds.
    pub fn sum_ns(&self) -> u64 {
        self.sum_ns.load(Ordering::Relaxed)
    }

    /// Writes recorded.
    pub fn count(&self) -> u64 {
        self.bucket_counts().iter().sum()
    }
}

/// Calls [`Sink::write`], recording its time in `stats`.
fn timed_write(sink: &mut dyn Sink, stats: &DriverStats, commands: &[CommandEvents]) -> Result<(), SinkError> {
    let start = Instant::now();
    let result = sink.write(commands);
    stats.write_latency.record(start.elapsed());
    result
}

/// Runs one sink on its own thread: live events from the ring, catch-up from the journal.
pub struct Driver {
    name: &'static str,
    stats: Arc<DriverStats>,
    floor: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Driver {
    /// Starts `sink` on a thread of its own. `durable` is the engine's last durable, executed
    /// sequence (every event of every command up to it is published before it advances). `floor`
    /// receives the sink's durable cursor less its [`Sink::resume_margin`] (0 until the sink has
    /// opened): the runtime must keep the newest snapshot at or before it and every journal
    /// record after that snapshot.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(
        mut sink: Box<dyn Sink>,
        config: DriverConfig,
        history: History,
        ring: Arc<BroadcastRing>,
        durable: impl Fn() -> u64 + Send + 'static,
        floor: Arc<AtomicU64>,
    ) -> std::io::Result<Self> {
        let name = sink.name();
        let stats = Arc::new(DriverStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let abort = Arc::new(AtomicBool::new(false));
        let margin = sink.resume_margin();
        let mut state = DriverState {
            margin,
            config,
            history,
            ring,
            durable: Box::new(durable),
            floor: floor.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            abort: abort.clone(),
        };
        let thread = std::thread::Builder::new().name(format!("sink-{name}")).spawn(move || state.run(&mut *sink))?;
        Ok(Self { name, stats, floor, stop, abort, thread: Some(thread) })
    }

    /// The sink's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<DriverStats> {
        self.stats.clone()
    }

    /// The pruning floor this driver publishes.
    pub fn floor(&self) -> Arc<AtomicU64> {
        self.floor.clone()
    }

    /// Stops at once, as if the sink's process died: no further write (the one in progress, if
    /// any, completes or fails on its own), no final flush, no close. For tests of recovery.
    pub fn abort(mut self) {
        self.abort.store(true, Ordering::Release);
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Writes what the engine has published up to now (the engine should be stopped first), closes
    /// the sink and stops the thread. Gives up after `deadline` if the service is down: the
    /// remainder is caught up from the journal on the next start.
    pub fn shutdown(mut self, deadline: Duration) {
        let until = Instant::now() + deadline;
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            while !thread.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::warn!(sink = self.name, "sink did not finish in time; it catches up on the next start");
            }
        }
    }
}

struct DriverState {
    margin: u64,
    config: DriverConfig,
    history: History,
    ring: Arc<BroadcastRing>,
    durable: Box<dyn Fn() -> u64 + Send>,
    floor: Arc<AtomicU64>,
    stats: Arc<DriverStats>,
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
}

/// How a streaming session ended.
enum Ended {
    Stopped,
    Failed(SinkError),
}

impl DriverState {
    fn run(&mut self, sink: &mut dyn Sink) {
        let mut retry = self.config.retry;
        loop {
            let before = self.stats.cursor.load(Ordering::Relaxed);
            let ended = self.session(sink);
            self.stats.connected.store(false, Ordering::Release);
            match ended {
                Ended::Stopped if self.abort.load(Ordering::Acquire) => return,
                Ended::Stopped => {
                    if let Err(error) = sink.close() {
                        tracing::warn!(sink = sink.name(), %error, "sink close failed");
                    }
                    tracing::info!(
                        sink = sink.name(),
                        cursor = self.stats.cursor.load(Ordering::Relaxed),
                        "sink stopped"
                    );
                    return;
                }
                Ended::Failed(SinkError::Aborted) => return,
                Ended::Failed(error) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    if self.stats.cursor.load(Ordering::Relaxed) > before {
                        // The session made progress: a fresh failure, not a persisting outage.
                        retry = self.config.retry;
                    }
                    tracing::warn!(sink = sink.name(), %error, retry_ms = retry.as_millis() as u64, "sink failed; reconnecting");
                    let until = Instant::now() + retry;
                    while Instant::now() < until {
                        if self.stop.load(Ordering::Acquire) {
                            // The service is down at shutdown: the journal keeps everything.
                            tracing::warn!(sink = sink.name(), "stopping while the service is down");
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    retry = (retry * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Opens the sink, catches up, then streams from the ring until stopped or failed.
    fn session(&mut self, sink: &mut dyn Sink) -> Ended {
        match self.session_inner(sink) {
            Ok(()) => Ended::Stopped,
            Err(error) => Ended::Failed(error),
        }
    }

    fn session_inner(&mut self, sink: &mut dyn Sink) -> Result<(), SinkError> {
        // Subscribe before reading the durable sequence: everything after the durable sequence
        // read below is then either in the ring from this position on, or detected as a gap.
        let capacity = self.ring.capacity() as u64;
        let mut consumer = self.ring.subscribe_from(self.ring.head().saturating_sub(capacity / 2));
        let mut aligned = consumer.cursor() == 0;
        let resume = sink.open()?;
        self.stats.connected.store(true, Ordering::Release);
        let mut cursor = match resume {
            Resume::After(cursor) => cursor,
            Resume::Seed => {
                let durable = (self.durable)();
                let (engine, at) = self.history.engine_at_or_before(durable)?;
                sink.seed(&engine, at);
                self.advance(at);
                self.catch_up_from(sink, engine, at, at, durable)?
            }
        };
        self.advance(cursor);
        let durable = (self.durable)();
        if cursor > durable {
            // Only an operator mistake does this (another data directory, a restored backup):
            // the sink will write nothing until the engine passes its cursor.
            tracing::error!(
                sink = sink.name(),
                cursor,
                durable,
                "the sink holds sequences this journal does not have (another data directory?)"
            );
        }
        tracing::info!(sink = sink.name(), cursor, "sink opened");
        let mut batch: Vec<CommandEvents> = Vec::with_capacity(self.config.batch_commands);
        let mut current: Option<CommandEvents> = None;
        let mut oldest_in_batch = Instant::now();
        let mut last_tick = Instant::now();
        loop {
            let durable = (self.durable)();
            match consumer.try_next() {
                Ok(published) => {
                    if !aligned {
                        aligned = published.last_of_command;
                        continue;
                    }
                    let sequence = published.event.sequence().get();
                    let queued = batch.last().map_or(cursor, |c| c.sequence);
                    if sequence <= queued {
                        if published.last_of_command {
                            current = None;
                        }
                        continue;
                    }
                    let command = current.get_or_insert_with(|| CommandEvents { sequence, events: Vec::new() });
                    if command.sequence != sequence || (command.events.is_empty() && sequence > queued + 1) {
                        // A gap in the ring (the sink started after these were published): the
                        // journal has them.
                        current = None;
                        self.flush(sink, &mut batch, &mut cursor)?;
                        cursor = self.catch_up(sink, cursor, sequence - 1)?;
                        let command = current.get_or_insert_with(|| CommandEvents { sequence, events: Vec::new() });
                        command.events.push(published.event);
                    } else {
                        command.events.push(published.event);
                    }
                    if published.last_of_command {
                        if batch.is_empty() {
                            oldest_in_batch = Instant::now();
                        }
                        batch.extend(current.take());
                        if batch.len() >= self.config.batch_commands {
                            self.flush(sink, &mut batch, &mut cursor)?;
                        }
                    }
                }
                Err(ReadError::Lagged { oldest, .. }) => {
                    self.stats.lags.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        sink = sink.name(),
                        cursor,
                        "sink lagged behind the ring; catching up from the journal"
                    );
                    current = None;
                    aligned = false;
                    consumer.seek(oldest + capacity / 4);
                }
                Err(ReadError::Empty) => {
                    if !batch.is_empty() {
                        self.flush(sink, &mut batch, &mut cursor)?;
                    }
                    if current.is_none() && durable > cursor {
                        // Everything up to `durable` was published before it was stored, and the
                        // ring is drained: what the sink lacks predates its subscription.
                        cursor = self.catch_up(sink, cursor, durable)?;
                    }
                    if self.stop.load(Ordering::Acquire) {
                        let durable = (self.durable)();
                        if durable <= cursor && consumer.cursor() >= self.ring.head() {
                            return Ok(());
                        }
                        continue;
                    }
                    if last_tick.elapsed() >= Duration::from_millis(50) {
                        sink.tick()?;
                        last_tick = Instant::now();
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            if !batch.is_empty() && oldest_in_batch.elapsed() >= self.config.linger {
                self.flush(sink, &mut batch, &mut cursor)?;
            }
            if last_tick.elapsed() >= Duration::from_millis(250) {
                sink.tick()?;
                last_tick = Instant::now();
            }
        }
    }

    fn flush(&self, sink: &mut dyn Sink, batch: &mut Vec<CommandEvents>, cursor: &mut u64) -> Result<(), SinkError> {
        let Some(last) = batch.last().map(|c| c.sequence) else { return Ok(()) };
        if self.abort.load(Ordering::Acquire) {
            return Err(SinkError::Aborted);
        }
        timed_write(sink, &self.stats, batch)?;
        self.stats.commands.fetch_add(batch.len() as u64, Ordering::Relaxed);
        batch.clear();
        *cursor = last;
        self.advance(last);
        Ok(())
    }

    /// Publishes the sink's durable cursor, which is also its pruning floor: the runtime keeps
    /// the newest snapshot at or before it and the journal after that snapshot.
    fn advance(&self, cursor: u64) {
        self.stats.cursor.store(cursor, Ordering::Release);
        self.floor.store(cursor.saturating_sub(self.margin), Ordering::Release);
    }

    /// Writes the commands in `(cursor, up_to]` regenerated from the journal; returns the new
    /// cursor.
    fn catch_up(&self, sink: &mut dyn Sink, cursor: u64, up_to: u64) -> Result<u64, SinkError> {
        if up_to <= cursor {
            return Ok(cursor);
        }
        let (engine, at) = self.history.engine_at_or_before(cursor)?;
        self.catch_up_from(sink, engine, at, cursor, up_to)
    }

    fn catch_up_from(
        &self,
        sink: &mut dyn Sink,
        engine: Engine,
        at: u64,
        cursor: u64,
        up_to: u64,
    ) -> Result<u64, SinkError> {
        if up_to <= cursor {
            return Ok(cursor);
        }
        tracing::info!(
            sink = sink.name(),
            from = cursor + 1,
            to = up_to,
            snapshot = at,
            "catching up from the journal"
        );
        let mut batch = Vec::with_capacity(self.config.batch_commands);
        let mut written = cursor;
        let batch_commands = self.config.batch_commands;
        let (stats, floor, abort, margin) = (self.stats.clone(), self.floor.clone(), self.abort.clone(), self.margin);
        replay_from(&self.history, engine, at, cursor, up_to, &mut |command| {
            batch.push(command);
            if batch.len() >= batch_commands {
                if abort.load(Ordering::Acquire) {
                    return Err(SinkError::Aborted);
                }
                timed_write(sink, &stats, &batch)?;
                stats.replayed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                stats.commands.fetch_add(batch.len() as u64, Ordering::Relaxed);
                written = batch.last().map_or(written, |c| c.sequence);
                stats.cursor.store(written, Ordering::Release);
                floor.store(written.saturating_sub(margin), Ordering::Release);
                batch.clear();
            }
            Ok(())
        })?;
        if !batch.is_empty() {
            if self.abort.load(Ordering::Acquire) {
                return Err(SinkError::Aborted);
            }
            timed_write(sink, &self.stats, &batch)?;
            self.stats.replayed.fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.stats.commands.fetch_add(batch.len() as u64, Ordering::Relaxed);
            written = batch.last().map_or(written, |c| c.sequence);
        }
        self.advance(written);
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_latency_buckets_are_inclusive_upper_bounds_with_an_overflow() {
        let latency = WriteLatency::default();
        for elapsed in [
            Duration::from_micros(100),
            Duration::from_nanos(100_001),
            Duration::from_millis(3),
            Duration::from_secs(20),
        ] {
            latency.record(elapsed);
        }
        let counts = latency.bucket_counts();
        assert_eq!(counts[0], 1, "exactly on the first bound");
        assert_eq!(counts[1], 1, "just above it");
        assert_eq!(counts[WRITE_LATENCY_BOUNDS_NS.partition_point(|&b| b < 3_000_000)], 1);
        assert_eq!(counts[WRITE_LATENCY_BUCKETS - 1], 1, "slower than every bound");
        assert_eq!(latency.count(), 4);
        assert_eq!(latency.sum_ns(), 100_000 + 100_001 + 3_000_000 + 20_000_000_000);
    }
}
