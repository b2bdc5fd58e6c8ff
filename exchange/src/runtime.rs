//! The engine runtime: recovery, the ingress ring, and the sequencer/engine thread.
//!
//! ```text
//! producers ──push──▶ ingress ring (bounded, lock-free MPMC) ──▶ engine thread:
//!                                                   1. drain up to batch_max commands
//!                                                   2. stamp sequence + time, append to journal
//!                                                   3. write + fdatasync the batch (group commit);
//!                                                      store the committed sequence for the
//!                                                      journal's watermark thread (no fsync here)
//!                                                   4. execute each command, publish its events
//!                                                      once into the egress broadcast ring
//!                                                      (waiting, bounded, for gating consumers)
//!                                                   5. run the engine reads other threads asked
//!                                                      for (e.g. the market view's reseed)
//!                                                   6. every N commands: serialise a snapshot,
//!                                                      hand it to the snapshot writer thread
//! ```
//!
//! Step 4 never overwrites an event that a gating consumer (the gateways' dispatchers, the REST
//! dispatcher, the market-data feed) has not read: the engine thread waits for it, so a command
//! whose output is larger than the egress ring (a mass cancel of 100,000 orders) slows the engine
//! down instead of cutting every session. The wait for one consumer that makes no progress is
//! bounded ([`engine::bus::GATING_STALL_MAX`]); see [`engine::bus`] for why this cannot deadlock.
//!
//! Nothing a command causes leaves the engine thread before step 3 completes, so no
//! acknowledgement can precede durability. If the journal fails (disk full, fsync error) the
//! thread stops before executing the batch: nothing of it is acknowledged, and recovery on the
//! next start truncates whatever was torn.

use crate::config::{Config, IdleStrategy};
use crate::egress::BroadcastRing;
use crate::metrics::Metrics;
use codec::{Command, Event};
use engine::journal::{JournalError, JournalWriter, RecoveryOptions, WATERMARK_INTERVAL};
use engine::snapshot::{SnapshotError, list_snapshots, write_snapshot_file};
use engine::{CommandContext, Engine, EngineConfig, OrderBook};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use engine::bus::{EngineReads, IngressCommand, IngressRing};

/// Counters readable from any thread.
#[derive(Debug, Default)]
pub struct RuntimeStats {
    /// Last executed (and durable) sequence.
    pub last_sequence: AtomicU64,
    /// Commands executed since start.
    pub commands: AtomicU64,
    /// Fills since start.
    pub fills: AtomicU64,
    /// Rejections since start.
    pub rejects: AtomicU64,
    /// Group commits since start.
    pub batches: AtomicU64,
    /// State hash as of the most recent snapshot (or start-up); hashing the whole state after
    /// every batch would cost the engine thread a full pass over its state.
    pub state_hash: AtomicU64,
}

/// Why the runtime could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Journal damage or I/O failure.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The journal ends before what its manifest or a snapshot recorded as durable.
    #[error(
        "journal incomplete: {0}. Refusing to start: those commands were acknowledged, and their sequences and order ids would be \
         handed out again. Restore the missing journal files from a backup, or accept the loss explicitly \
         with --accept-journal-loss (docs/operations.md, \"Journal loss\")"
    )]
    JournalIncomplete(String),
    /// Snapshot failure.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A journal record that is not a command.
    #[error("journal record {sequence} does not decode as a command: {reason}")]
    BadRecord {
        /// Sequence.
        sequence: u64,
        /// Decoder error.
        reason: String,
    },
    /// Engine configuration refused.
    #[error(transparent)]
    Config(#[from] engine::ConfigError),
}

/// The state rebuilt from disk.
pub struct Recovered {
    /// The engine at the last durable sequence.
    pub engine: Engine,
    /// Last durable sequence.
    pub last_sequence: u64,
    /// Snapshot used, if any.
    pub snapshot: Option<(u64, PathBuf)>,
    /// Journal records replayed on top of it.
    pub replayed: u64,
    /// Where a torn tail was found (and, for a writer, truncated).
    pub torn_tail: Option<(PathBuf, u64)>,
}

/// Loads the newest snapshot that restores cleanly (older ones are tried if it is damaged).
fn load_snapshot(config: &EngineConfig, dir: &Path) -> Result<Option<(Engine, u64, PathBuf)>, RuntimeError> {
    for (sequence, path) in list_snapshots(dir)? {
        let bytes = std::fs::read(&path).map_err(|source| SnapshotError::Io { path: path.clone(), source })?;
        match Engine::restore_snapshot(config, OrderBook::with_capacity, &bytes) {
            Ok((engine, at)) if at == sequence => return Ok(Some((engine, at, path))),
            Ok(_) => tracing::warn!(path = %path.display(), "snapshot sequence does not match its name; skipped"),
            Err(error) => tracing::warn!(path = %path.display(), %error, "snapshot unusable; trying an older one"),
        }
    }
    Ok(None)
}

/// How [`recover_with`] treats the data directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryMode {
    /// Ignore snapshots: replay the whole journal from sequence 1.
    pub from_scratch: bool,
    /// Open the journal for appending (a torn tail is truncated) and return the writer.
    pub open_writer: bool,
    /// Go on when the journal ends before what its manifest or the newest snapshot recorded as
    /// durable (the loss is logged as an error); otherwise recovery refuses.
    pub accept_journal_loss: bool,
}

/// Rebuilds the engine from the newest snapshot and the journal after it. With `writer` settings
/// the journal is opened for appending (a torn tail is truncated) and the writer returned.
/// [`recover_with`] without accepting a journal loss.
///
/// # Errors
/// As [`recover_with`].
pub fn recover(
    config: &Config,
    engine_config: &EngineConfig,
    from_scratch: bool,
    open_writer: bool,
) -> Result<(Recovered, Option<JournalWriter>), RuntimeError> {
    recover_with(config, engine_config, RecoveryMode { from_scratch, open_writer, accept_journal_loss: false })
}

/// Rebuilds the engine from the newest snapshot (unless `mode.from_scratch`) and the journal
/// after it, checking that the journal reaches what its manifest and the newest snapshot file
/// record as durable. With `mode.open_writer` the journal is opened for appending (a torn tail is
/// truncated) and the writer returned.
///
/// # Errors
/// Corruption, I/O errors, records that do not decode, or [`RuntimeError::JournalIncomplete`]
/// (unless `mode.accept_journal_loss`).
pub fn recover_with(
    config: &Config,
    engine_config: &EngineConfig,
    mode: RecoveryMode,
) -> Result<(Recovered, Option<JournalWriter>), RuntimeError> {
    let snapshot = if mode.from_scratch { None } else { load_snapshot(engine_config, &config.snapshot_dir())? };
    let (mut engine, after, snapshot_path) = match snapshot {
        Some((engine, at, path)) => (engine, at, Some((at, path))),
        None => (Engine::new(engine_config)?, 0, None),
    };
    // A snapshot file is written only once the journal is durable up to its sequence, so even
    // one that does not restore (or is ignored by a replay from scratch) shows how far the
    // journal reached.
    let snapshots = list_snapshots(&config.snapshot_dir())?;
    let options = RecoveryOptions {
        after,
        reached_elsewhere: snapshots
            .first()
            .map(|(sequence, path)| (*sequence, format!("snapshot {}", path.display()))),
        accept_loss: mode.accept_journal_loss,
    };
    let incomplete = |error| match error {
        JournalError::Incomplete(text) => RuntimeError::JournalIncomplete(text),
        other => RuntimeError::Journal(other),
    };
    let (writer, contents) = if mode.open_writer {
        let (writer, contents) =
            JournalWriter::open_with(&config.journal_dir(), config.journal_config(), &options).map_err(incomplete)?;
        (Some(writer), contents)
    } else {
        let reader = engine::journal::JournalReader::open(&config.journal_dir())?;
        (None, reader.read_for_recovery(&options).map_err(incomplete)?)
    };
    if let Some(loss) = &contents.accepted_loss {
        tracing::error!(%loss, "journal loss accepted (--accept-journal-loss): acknowledged commands are gone");
    }
    if let Some(first) = contents.records.first()
        && first.sequence != after + 1
    {
        return Err(JournalError::Corrupt {
            path: config.journal_dir(),
            offset: 0,
            reason: format!("journal resumes at sequence {}, snapshot ends at {after}", first.sequence),
        }
        .into());
    }
    let mut events = Vec::with_capacity(1024);
    let mut last_sequence = after;
    for record in &contents.records {
        let (command, _) = Command::decode(&record.payload)
            .map_err(|e| RuntimeError::BadRecord { sequence: record.sequence, reason: e.to_string() })?;
        events.clear();
        engine.execute(CommandContext::new(record.sequence, record.timestamp_ns), &command, &mut events);
        last_sequence = record.sequence;
    }
    if contents.accepted_loss.is_some() && mode.open_writer {
        // Snapshots that did not restore and lie beyond the accepted end would make every later
        // start refuse again: set them aside, never delete them.
        for (sequence, path) in snapshots.iter().filter(|(sequence, _)| *sequence > last_sequence) {
            let aside = path.with_extension("snap.unusable");
            match std::fs::rename(path, &aside) {
                Ok(()) => {
                    tracing::warn!(sequence, path = %aside.display(), "unusable snapshot beyond the journal set aside")
                }
                Err(error) => tracing::warn!(%error, path = %path.display(), "cannot set an unusable snapshot aside"),
            }
        }
    }
    let recovered = Recovered {
        engine,
        last_sequence,
        snapshot: snapshot_path,
        replayed: contents.records.len() as u64,
        torn_tail: contents.torn_tail,
    };
    Ok((recovered, writer))
}

/// What history the sinks still need: each registered floor is a sink's durable cursor (0 until
/// the sink reports). Pruning keeps the newest snapshot at or before the lowest floor and every
/// journal record after it, so a sink can always catch up by replay.
#[derive(Debug, Default)]
pub struct Retention {
    floors: std::sync::Mutex<Vec<Arc<AtomicU64>>>,
}

impl Retention {
    /// A new floor (starting at 0: keep everything) for one sink.
    pub fn register(&self) -> Arc<AtomicU64> {
        let floor = Arc::new(AtomicU64::new(0));
        self.floors.lock().unwrap_or_else(|e| e.into_inner()).push(floor.clone());
        floor
    }

    /// The lowest floor, or `None` when no sink is registered.
    pub fn floor(&self) -> Option<u64> {
        self.floors.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|f| f.load(Ordering::Acquire)).min()
    }
}

/// Handle to the running engine thread.
pub struct Runtime {
    /// Producers push commands here.
    pub ring: Arc<IngressRing>,
    /// Every event, once its command is durable, for every consumer.
    pub egress: Arc<BroadcastRing>,
    /// Reads of the engine's state served by the engine thread between batches.
    pub reads: Arc<EngineReads>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Live counters.
    pub stats: Arc<RuntimeStats>,
    stop: Arc<AtomicBool>,
    snapshot_now: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), RuntimeError>>>,
}

impl Runtime {
    /// Starts the engine thread on a recovered engine.
    pub fn start(config: &Config, recovered: Recovered, journal: JournalWriter) -> std::io::Result<Self> {
        Self::start_with_retention(config, recovered, journal, Arc::new(Retention::default()))
    }

    /// Starts the engine thread; journal pruning keeps what the sinks registered in `retention`
    /// still need.
    pub fn start_with_retention(
        config: &Config,
        recovered: Recovered,
        journal: JournalWriter,
        retention: Arc<Retention>,
    ) -> std::io::Result<Self> {
        let ring = Arc::new(IngressRing::new(config.engine.ring_capacity));
        let egress = BroadcastRing::new(config.engine.egress_capacity);
        let metrics = Arc::new(Metrics::default());
        let stats = Arc::new(RuntimeStats::default());
        stats.last_sequence.store(recovered.last_sequence, Ordering::Relaxed);
        stats.state_hash.store(recovered.engine.state_hash(), Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let snapshot_now = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(EngineReads::default());
        let mut engine_thread = EngineThread {
            engine: recovered.engine,
            journal,
            ring: ring.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            snapshot_now: snapshot_now.clone(),
            egress: egress.clone(),
            reads: reads.clone(),
            metrics: metrics.clone(),
            idle: config.engine.idle,
            batch_max: config.journal.batch_max.max(1),
            snapshot_every: config.snapshot.every_commands,
            snapshot_interval: (config.snapshot.every_seconds > 0)
                .then(|| Duration::from_secs(config.snapshot.every_seconds)),
            last_snapshot_at: std::time::Instant::now(),
            snapshot_dir: config.snapshot_dir(),
            journal_dir: config.journal_dir(),
            prune_journal: config.snapshot.prune_journal,
            retention,
            last_sequence: recovered.last_sequence,
            last_timestamp_ns: 0,
            since_snapshot: 0,
        };
        let core = config.engine.core;
        let thread = std::thread::Builder::new().name("engine".into()).spawn(move || {
            if let Some(core) = core {
                let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core });
                tracing::info!(core, pinned, "engine thread pinned");
            }
            engine_thread.run()
        })?;
        Ok(Self { ring, egress, reads, metrics, stats, stop, snapshot_now, thread: Some(thread) })
    }

    /// Asks for a snapshot at the next opportunity.
    pub fn request_snapshot(&self) {
        self.snapshot_now.store(true, Ordering::Release);
    }

    /// Whether the engine thread has ended (normally only after [`Self::shutdown`], or on a
    /// journal failure).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Drains the ring, commits, snapshots and stops the engine thread.
    ///
    /// # Errors
    /// What stopped the engine thread, if it failed.
    pub fn shutdown(mut self) -> Result<(), RuntimeError> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| {
                Err(RuntimeError::BadRecord { sequence: 0, reason: "engine thread panicked".into() })
            }),
            None => Ok(()),
        }
    }
}

struct EngineThread {
    engine: Engine,
    journal: JournalWriter,
    ring: Arc<IngressRing>,
    stats: Arc<RuntimeStats>,
    stop: Arc<AtomicBool>,
    snapshot_now: Arc<AtomicBool>,
    egress: Arc<BroadcastRing>,
    reads: Arc<EngineReads>,
    metrics: Arc<Metrics>,
    idle: IdleStrategy,
    batch_max: usize,
    snapshot_every: u64,
    snapshot_interval: Option<Duration>,
    last_snapshot_at: std::time::Instant,
    snapshot_dir: PathBuf,
    journal_dir: PathBuf,
    prune_journal: bool,
    retention: Arc<Retention>,
    last_sequence: u64,
    last_timestamp_ns: u64,
    since_snapshot: u64,
}

impl EngineThread {
    fn run(&mut self) -> Result<(), RuntimeError> {
        // The journal's watermark follows the commits from a thread of its own, so a cut of the
        // segment being written is refused at the next start; the commit path only stores the
        // committed sequence for it (engine::journal, "The manifest").
        self.journal
            .start_watermark(WATERMARK_INTERVAL, |error| {
                tracing::error!(%error, "journal watermark not recorded (retried): until it is, a cut of the newest records goes unnoticed at the next start")
            })
            .map_err(|source| JournalError::Io { path: self.journal_dir.clone(), source })?;
        let mut snapshots = SnapshotWriter::start(
            self.snapshot_dir.clone(),
            self.journal_dir.clone(),
            self.prune_journal,
            self.retention.clone(),
            self.metrics.clone(),
        )
        .map_err(|source| SnapshotError::Io { path: self.snapshot_dir.clone(), source })?;
        let result = self.run_loop(&mut snapshots);
        snapshots.finish();
        result
    }

    fn run_loop(&mut self, snapshots: &mut SnapshotWriter) -> Result<(), RuntimeError> {
        let mut batch: Vec<(u64, u64, IngressCommand)> = Vec::with_capacity(self.batch_max);
        let mut events: Vec<Event> = Vec::with_capacity(4096);
        let mut encoded = [0u8; Command::ENCODED_BYTES_MAX];
        let mut idle_polls = 0u32;
        loop {
            while batch.len() < self.batch_max {
                let Some(item) = self.ring.pop() else { break };
                // Time enters through the journal: stamped once here, never read by the engine.
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
                self.last_timestamp_ns = self.last_timestamp_ns.max(now);
                let length = item.command.encode(&mut encoded).expect("buffer fits every command");
                let sequence = self.journal.append(self.last_timestamp_ns, &encoded[..length])?;
                batch.push((sequence, self.last_timestamp_ns, item));
            }
            if batch.is_empty() {
                self.serve_reads();
                if self.snapshot_now.swap(false, Ordering::AcqRel) {
                    self.snapshot(snapshots)?;
                }
                if self.stop.load(Ordering::Acquire) && self.ring.is_empty() {
                    // Final snapshot: wait for any in-flight one so this one is not skipped.
                    snapshots.wait_idle();
                    self.snapshot(snapshots)?;
                    // Every committed record under the watermark: no cut of them goes unnoticed.
                    if let Err(error) = self.journal.stop_watermark() {
                        tracing::error!(%error, "final journal watermark not recorded");
                    }
                    tracing::info!(
                        sequence = self.last_sequence,
                        hash = format_args!("{:#018x}", self.engine.state_hash()),
                        "engine stopped"
                    );
                    return Ok(());
                }
                idle_polls = idle_polls.saturating_add(1);
                self.wait(idle_polls);
                continue;
            }
            idle_polls = 0;
            let started = std::time::Instant::now();
            if let Err(error) = self.journal.commit() {
                tracing::error!(%error, "journal commit failed: engine stops; nothing of this batch was acknowledged");
                return Err(error.into());
            }
            let commit_ns = started.elapsed().as_nanos() as u64;
            let metrics = &*self.metrics;
            metrics.journal_commit_ns.record(commit_ns);
            metrics.journal_batch_size.record(batch.len() as u64);
            let mut fills = 0;
            let mut rejects = 0;
            let executed = batch.len() as u64;
            for (sequence, timestamp_ns, item) in batch.drain(..) {
                let command_started = std::time::Instant::now();
                events.clear();
                self.engine.execute(CommandContext::new(sequence, timestamp_ns), &item.command, &mut events);
                for event in &events {
                    match event {
                        Event::Fill(_) => fills += 1,
                        Event::OrderRejected(rejected) => {
                            rejects += 1;
                            if let Ok(reason) = rejected.reason.get() {
                                metrics.reject(reason);
                            }
                        }
                        _ => {}
                    }
                }
                let pressure = self.egress.publish_command(item.origin, &events);
                if pressure.waited_ns > 0 {
                    metrics.egress_wait_ns.record(pressure.waited_ns);
                }
                if pressure.stuck_consumers > 0 {
                    metrics.egress_stuck_consumers.fetch_add(u64::from(pressure.stuck_consumers), Ordering::Relaxed);
                    tracing::error!(
                        sequence,
                        stuck = pressure.stuck_consumers,
                        "an egress consumer made no progress for the stall bound; overwritten (it lags)"
                    );
                }
                metrics.command(item.command.template_id());
                metrics.engine_command_ns.record(command_started.elapsed().as_nanos() as u64);
                self.last_sequence = sequence;
                self.since_snapshot += 1;
            }
            metrics.fills.fetch_add(fills, Ordering::Relaxed);
            let stats = &self.stats;
            stats.commands.fetch_add(executed, Ordering::Relaxed);
            stats.fills.fetch_add(fills, Ordering::Relaxed);
            stats.rejects.fetch_add(rejects, Ordering::Relaxed);
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.last_sequence.store(self.last_sequence, Ordering::Release);
            tracing::trace!(commit_ns, sequence = self.last_sequence, "batch committed");
            self.serve_reads();
            let due_by_count = self.snapshot_every > 0 && self.since_snapshot >= self.snapshot_every;
            let due_by_time =
                self.snapshot_interval.is_some_and(|interval| self.last_snapshot_at.elapsed() >= interval);
            if due_by_count || due_by_time || self.snapshot_now.swap(false, Ordering::AcqRel) {
                self.snapshot(snapshots)?;
            }
        }
    }

    /// Runs the engine reads other threads asked for, at a batch boundary: every event of the
    /// commands executed so far is published, so the egress head is what the state corresponds
    /// to.
    fn serve_reads(&self) {
        if self.reads.is_pending() {
            let started = std::time::Instant::now();
            self.reads.serve(&self.engine, self.egress.head());
            tracing::info!(pause_us = started.elapsed().as_micros() as u64, "engine reads served");
        }
    }

    fn wait(&self, idle_polls: u32) {
        match self.idle {
            IdleStrategy::BusySpin => std::hint::spin_loop(),
            IdleStrategy::SpinYield => {
                if idle_polls < 100 {
                    std::hint::spin_loop();
                } else if idle_polls < 200 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
            IdleStrategy::Park => std::thread::sleep(Duration::from_micros(50)),
        }
    }

    /// Serialises the state into a buffer (the engine's only pause) and hands it to the snapshot
    /// writer thread. At most one snapshot is in flight; if the previous one is still being
    /// written, this one is postponed rather than waited for.
    fn snapshot(&mut self, snapshots: &mut SnapshotWriter) -> Result<(), RuntimeError> {
        self.stats.state_hash.store(self.engine.state_hash(), Ordering::Relaxed);
        if self.last_sequence == 0 || self.last_sequence == snapshots.last_sequence {
            return Ok(());
        }
        let Some(mut buffer) = snapshots.take_buffer() else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        self.engine.write_snapshot(self.last_sequence, &mut buffer);
        let pause = started.elapsed();
        tracing::debug!(sequence = self.last_sequence, pause_us = pause.as_micros() as u64, "snapshot serialised");
        snapshots.submit(self.last_sequence, buffer);
        self.since_snapshot = 0;
        self.last_snapshot_at = std::time::Instant::now();
        Ok(())
    }
}

/// A snapshot job: the sequence and the serialised state.
type SnapshotJob = (u64, Vec<u8>, std::time::Instant);

/// The snapshot writer thread and the engine thread's end of it. Buffers go back and forth so
/// that steady-state snapshots reuse memory.
struct SnapshotWriter {
    jobs: Option<std::sync::mpsc::SyncSender<SnapshotJob>>,
    returned: std::sync::mpsc::Receiver<Vec<u8>>,
    spare: Option<Vec<u8>>,
    in_flight: bool,
    last_sequence: u64,
    thread: Option<JoinHandle<()>>,
}

impl SnapshotWriter {
    fn start(
        snapshot_dir: PathBuf,
        journal_dir: PathBuf,
        prune_journal: bool,
        retention: Arc<Retention>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (jobs, job_receiver) = std::sync::mpsc::sync_channel::<SnapshotJob>(1);
        let (return_sender, returned) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("snapshot-writer".into()).spawn(move || {
            for (sequence, buffer, started) in job_receiver {
                match write_snapshot_file(&snapshot_dir, sequence, &buffer) {
                    Ok(path) => {
                        metrics.snapshot_ns.record(started.elapsed().as_nanos() as u64);
                        tracing::info!(sequence, bytes = buffer.len(), path = %path.display(), "snapshot written");
                        if prune_journal {
                            prune(&snapshot_dir, &journal_dir, retention.floor());
                        }
                    }
                    // Not fatal: the journal still holds everything; recovery just replays more.
                    Err(error) => tracing::error!(%error, sequence, "snapshot failed"),
                }
                let _ = return_sender.send(buffer);
            }
        })?;
        Ok(Self {
            jobs: Some(jobs),
            returned,
            spare: Some(Vec::new()),
            in_flight: false,
            last_sequence: 0,
            thread: Some(thread),
        })
    }

    /// A buffer to serialise into, or `None` while the previous snapshot is still being written.
    fn take_buffer(&mut self) -> Option<Vec<u8>> {
        if self.in_flight {
            let buffer = self.returned.try_recv().ok()?;
            self.in_flight = false;
            self.spare = Some(buffer);
        }
        self.spare.take()
    }

    fn submit(&mut self, sequence: u64, buffer: Vec<u8>) {
        if let Some(jobs) = &self.jobs
            && jobs.send((sequence, buffer, std::time::Instant::now())).is_ok()
        {
            self.in_flight = true;
            self.last_sequence = sequence;
        }
    }

    /// Waits for the in-flight snapshot, if any.
    fn wait_idle(&mut self) {
        if self.in_flight
            && let Ok(buffer) = self.returned.recv()
        {
            self.in_flight = false;
            self.spare = Some(buffer);
        }
    }

    /// Finishes the last job and stops the thread.
    fn finish(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Keeps the two newest snapshots and the journal from the older of them on, and (with sinks)
/// the newest snapshot at or before the lowest sink floor and the journal after it; removes the
/// rest.
pub fn prune(snapshot_dir: &Path, journal_dir: &Path, sink_floor: Option<u64>) {
    let Ok(snapshots) = list_snapshots(snapshot_dir) else { return };
    // Keep the previous snapshot and the journal since it, in case the newest is damaged.
    let Some(&(mut keep_from, _)) = snapshots.get(1) else { return };
    if let Some(floor) = sink_floor {
        // A sink catches up from a snapshot at or before its cursor: without one, keep everything.
        match snapshots.iter().find(|(sequence, _)| *sequence <= floor) {
            Some(&(sequence, _)) => keep_from = keep_from.min(sequence),
            None => return,
        }
    }
    for (_, old) in snapshots.iter().filter(|(sequence, _)| *sequence < keep_from) {
        let _ = std::fs::remove_file(old);
    }
    match engine::journal::remove_segments_before(journal_dir, keep_from) {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, keep_from, "journal segments covered by snapshots removed"),
        Err(error) => tracing::warn!(%error, "journal pruning failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<u64> {
        let mut list: Vec<u64> = list_snapshots(dir).unwrap().into_iter().map(|(s, _)| s).collect();
        list.sort_unstable();
        list
    }

    #[test]
    fn pruning_keeps_what_the_slowest_sink_needs() {
        let dir = std::env::temp_dir().join(format!("prune-floor-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (snapshots, journal) = (dir.join("snapshots"), dir.join("journal"));
        for sequence in [100, 200, 300, 400] {
            write_snapshot_file(&snapshots, sequence, b"x").unwrap();
        }
        let retention = Retention::default();
        let floor = retention.register();
        // A sink that has not reported yet (floor 0): nothing goes.
        prune(&snapshots, &journal, retention.floor());
        assert_eq!(names(&snapshots), [100, 200, 300, 400]);
        // A sink at 250 needs the snapshot at 200 and everything after it.
        floor.store(250, Ordering::Release);
        prune(&snapshots, &journal, retention.floor());
        assert_eq!(names(&snapshots), [200, 300, 400]);
        // Caught up: the usual two newest.
        floor.store(450, Ordering::Release);
        prune(&snapshots, &journal, retention.floor());
        assert_eq!(names(&snapshots), [300, 400]);
        // Without sinks: the usual two newest.
        write_snapshot_file(&snapshots, 500, b"x").unwrap();
        prune(&snapshots, &journal, None);
        assert_eq!(names(&snapshots), [400, 500]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
