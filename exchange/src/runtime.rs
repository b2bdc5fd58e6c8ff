//! The engine runtime: recovery, the ingress ring, the sequencer/engine thread and the
//! snapshotter thread.
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
//!                                                      (waiting, bounded, for gating consumers),
//!                                                      and offer it to the snapshotter's feed
//!                                                   5. run the engine reads other threads asked
//!                                                      for (e.g. the market view's reseed)
//!
//! snapshot feed (bounded, never waited for) ──▶ snapshotter thread: a shadow engine applies
//!      the same durable commands; every N commands (or on request, or at shutdown) it
//!      serialises and hashes the shadow's state, writes + fsyncs the file, prunes the journal
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
//!
//! # Snapshots never stop the engine thread
//! Serialising and hashing 1M resting orders takes hundreds of milliseconds; the engine thread
//! does none of it. Its only part is offering each executed command to the snapshot feed (a
//! push onto a bounded lock-free queue, [`SnapshotSection::feed_commands`] long). The
//! snapshotter thread owns a shadow [`Engine`], a copy of the recovered one made at start-up
//! (engine state memory doubles), and applies the commands of the feed in sequence order. The
//! engine is a pure function of its journal, so the shadow at sequence S is the live engine at
//! S, and a snapshot of it is what the live engine would have written. When the feed is full
//! (the snapshotter is busy writing a large snapshot) the engine thread drops the offer instead
//! of waiting; the snapshotter notices the gap in sequences (or that the engine's last sequence
//! is ahead of it with the feed empty) and reads the missing commands from the journal, where
//! they are already durable ([`JournalReader::for_each_after`]). How far the shadow is behind is
//! the gauge `exchange_snapshot_shadow_lag_commands`; it does strictly less work per command
//! than the engine thread (no journal, no publication, no events:
//! [`Engine::execute_without_events`]), so it falls behind only while it writes a snapshot or is
//! starved of CPU, and catches up after.
//!
//! At shutdown the engine thread stops first; the snapshotter then applies everything up to the
//! engine's last sequence and writes the final snapshot, and [`Runtime::shutdown`] compares the
//! live engine's state hash with the shadow's: a difference is a determinism bug, reported as
//! [`RuntimeError::ShadowDiverged`] after the final snapshot is rewritten from the live engine.
//!
//! [`SnapshotSection::feed_commands`]: crate::config::SnapshotSection::feed_commands

use crate::config::Config;
use crate::egress::BroadcastRing;
use crate::metrics::Metrics;
use codec::{Command, Event};
use crossbeam_queue::ArrayQueue;
use engine::doorbell::{Idle, IdlePolicy};
use engine::journal::{JournalError, JournalReader, JournalWriter, RecordRef, RecoveryOptions, WATERMARK_INTERVAL};
use engine::latency::{CommandTrace, clock_ns};
use engine::snapshot::{SnapshotError, list_snapshots, write_snapshot_file};
use engine::{CommandContext, Engine, EngineConfig, OrderBook};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use engine::bus::{EngineReads, IngressCommand, IngressRing};

/// The process exit code of a primary that found itself deposed (fenced): a supervisor restarts
/// it as a standby rather than as a primary. (EX_TEMPFAIL in sysexits.h.)
pub const FENCED_EXIT_CODE: i32 = 75;

/// Why a batch could not be replicated.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// Another primary appended to the log since this one's last append: this process is
    /// deposed. The engine thread exits the process ([`FENCED_EXIT_CODE`]) without executing or
    /// acknowledging the batch.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The log did not take the batch (broker down, timeout): its outcome is unknown, so the
    /// engine thread stops without executing or acknowledging it.
    #[error("replication failed: {0}")]
    Failed(String),
}

/// Where the engine thread ships every group commit before executing it (the replicated
/// journal, `durability = "replicated"`). The engine crate knows nothing of Kafka: this is the
/// whole boundary.
pub trait BatchReplicator: Send {
    /// Appends the batch of sequences `first_sequence..=last_sequence` (`records`: framed exactly
    /// as in the local journal) and returns once the log has it durably and in the expected
    /// place. Called on the engine thread, one batch at a time, after the local journal commit.
    ///
    /// # Errors
    /// [`ReplicationError`]: the batch must not be executed or acknowledged.
    fn replicate(&mut self, first_sequence: u64, last_sequence: u64, records: &[u8]) -> Result<(), ReplicationError>;

    /// Every how many sequences the snapshotter's shadow engine hashes its state for
    /// [`Self::checkpoint`] (0: never).
    fn checkpoint_every(&self) -> u64 {
        0
    }

    /// Publishes the state hash at `sequence` (computed by the snapshotter's shadow engine) so
    /// followers can compare theirs. Called on the engine thread after a batch was replicated.
    ///
    /// # Errors
    /// As [`Self::replicate`].
    fn checkpoint(&mut self, _sequence: u64, _state_hash: u64) -> Result<(), ReplicationError> {
        Ok(())
    }
}

/// State hashes the shadow engine computed at checkpoint sequences, for the replicator.
type CheckpointQueue = ArrayQueue<(u64, u64)>;
/// Checkpoints waiting for the engine thread; more are dropped (they are only a check).
const CHECKPOINT_QUEUE_CAPACITY: usize = 64;

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
    /// State hash as of the most recent snapshot (or start-up), computed by the snapshotter on
    /// its shadow engine; hashing the live state would cost the engine thread a full pass over it.
    pub state_hash: AtomicU64,
    /// Snapshots written since start.
    pub snapshots: AtomicU64,
    /// Sequence of the most recent snapshot written since start (0: none yet).
    pub snapshot_sequence: AtomicU64,
    /// Last sequence the snapshotter's shadow engine has applied; `last_sequence` minus this is
    /// how far it is behind.
    pub shadow_sequence: AtomicU64,
    /// Commands the engine thread could not offer to the full snapshot feed (the shadow read
    /// them from the journal instead).
    pub snapshot_feed_overflows: AtomicU64,
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
    /// The snapshotter's shadow engine reached another state than the live engine at the same
    /// sequence: a determinism bug. The final snapshot was rewritten from the live engine.
    #[error(
        "snapshot shadow engine diverged at sequence {sequence}: live state hash {live:#018x}, shadow {shadow:#018x}"
    )]
    ShadowDiverged {
        /// Sequence compared.
        sequence: u64,
        /// The live engine's state hash.
        live: u64,
        /// The shadow engine's state hash.
        shadow: u64,
    },
    /// A thread of the runtime panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// The replicated journal did not take a batch; nothing of it was acknowledged.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
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
    /// The engine's reserved room is touched already ([`Engine::prefault`], done by a hot
    /// standby before it follows): the runtime's start skips it.
    pub prefaulted: bool,
}

/// Loads the newest snapshot that restores cleanly (older ones are tried if it is damaged).
fn load_snapshot(config: &EngineConfig, dir: &Path) -> Result<Option<(Engine, u64, PathBuf)>, RuntimeError> {
    for (sequence, path) in list_snapshots(dir)? {
        let bytes = std::fs::read(&path).map_err(|source| SnapshotError::Io { path: path.clone(), source })?;
        match Engine::restore_snapshot(config, OrderBook::with_capacity_unfaulted, &bytes) {
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
        // Not pre-faulted: the replay touches only the pages its orders use; `Runtime::start`
        // pre-faults the live engine.
        None => (Engine::new_unfaulted(engine_config)?, 0, None),
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
    // Replays one record without building its events: recovery rebuilds state only (the sinks
    // catch up from the journal, not from these events).
    let mut last_sequence = after;
    let mut replayed = 0u64;
    let mut replay = |record: RecordRef<'_>| -> Result<ControlFlow<()>, RuntimeError> {
        if replayed == 0 && record.sequence != after + 1 {
            return Err(JournalError::Corrupt {
                path: config.journal_dir(),
                offset: 0,
                reason: format!("journal resumes at sequence {}, snapshot ends at {after}", record.sequence),
            }
            .into());
        }
        let (command, gateway) = codec::decode_journaled(record.payload)
            .map_err(|e| RuntimeError::BadRecord { sequence: record.sequence, reason: e.to_string() })?;
        let context = CommandContext::new(record.sequence, record.timestamp_ns).with_gateway(gateway);
        engine.execute_without_events(context, &command);
        last_sequence = record.sequence;
        replayed += 1;
        Ok(ControlFlow::Continue(()))
    };
    let (writer, contents) = if mode.open_writer {
        // The writer reads (and may truncate) the journal before returning it.
        let (writer, contents) =
            JournalWriter::open_with(&config.journal_dir(), config.journal_config(), &options).map_err(incomplete)?;
        for record in &contents.records {
            let record =
                RecordRef { sequence: record.sequence, timestamp_ns: record.timestamp_ns, payload: &record.payload };
            if replay(record)?.is_break() {
                break;
            }
        }
        (Some(writer), contents)
    } else {
        // Read-only: replay while reading (a second thread reads and checks a few batches of
        // records ahead, so execution overlaps the reads and checksums); the end of the journal
        // is checked once the walk is over, before the engine is returned.
        let reader = JournalReader::open(&config.journal_dir())?;
        let contents = reader.stream_for_recovery(&options, &mut replay).map_err(|error| match error {
            RuntimeError::Journal(journal) => incomplete(journal),
            other => other,
        })?;
        (None, contents)
    };
    if let Some(loss) = &contents.accepted_loss {
        tracing::error!(%loss, "journal loss accepted (--accept-journal-loss): acknowledged commands are gone");
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
        replayed,
        torn_tail: contents.torn_tail,
        prefaulted: false,
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

/// The ingress and egress rings of a runtime. Allocated by [`Runtime`]'s start, or ahead of it
/// by a hot standby ([`Self::allocate`]): tens of MB to initialise (a fifth of a second in an
/// unoptimised build), which a promotion should not pay for.
pub struct Rings {
    /// Producers push commands here.
    pub ring: Arc<IngressRing>,
    /// Every event, once its command is durable.
    pub egress: Arc<BroadcastRing>,
}

impl Rings {
    /// Allocates the rings with the configured capacities.
    pub fn allocate(config: &Config) -> Self {
        Self {
            ring: Arc::new(IngressRing::new(config.engine.ring_capacity)),
            egress: BroadcastRing::new(config.engine.egress_capacity),
        }
    }
}

/// Handle to the running engine and snapshotter threads.
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
    control: Arc<SnapshotControl>,
    thread: Option<JoinHandle<Result<Engine, RuntimeError>>>,
    snapshotter: Option<JoinHandle<Option<ShadowFinal>>>,
    snapshot_dir: PathBuf,
}

impl Runtime {
    /// Starts the engine thread on a recovered engine.
    pub fn start(config: &Config, recovered: Recovered, journal: JournalWriter) -> std::io::Result<Self> {
        Self::start_with_retention(config, recovered, journal, Arc::new(Retention::default()))
    }

    /// Starts the engine thread and the snapshotter; journal pruning keeps what the sinks
    /// registered in `retention` still need.
    pub fn start_with_retention(
        config: &Config,
        recovered: Recovered,
        journal: JournalWriter,
        retention: Arc<Retention>,
    ) -> std::io::Result<Self> {
        Self::start_full(config, recovered, journal, retention, None, None)
    }

    /// As [`Self::start_with_retention`], with every group commit also shipped to `replicator`
    /// (and acknowledged only once it took it), on `rings` allocated ahead (by the standby this
    /// primary was).
    pub fn start_replicated(
        config: &Config,
        recovered: Recovered,
        journal: JournalWriter,
        retention: Arc<Retention>,
        replicator: Box<dyn BatchReplicator>,
        rings: Rings,
    ) -> std::io::Result<Self> {
        Self::start_full(config, recovered, journal, retention, Some(replicator), Some(rings))
    }

    fn start_full(
        config: &Config,
        recovered: Recovered,
        journal: JournalWriter,
        retention: Arc<Retention>,
        replicator: Option<Box<dyn BatchReplicator>>,
        rings: Option<Rings>,
    ) -> std::io::Result<Self> {
        // Starts the trace clock before any thread stamps with it.
        clock_ns();
        let Rings { ring, egress } = rings.unwrap_or_else(|| Rings::allocate(config));
        let metrics = Arc::new(Metrics::default());
        let stats = Arc::new(RuntimeStats::default());
        stats.last_sequence.store(recovered.last_sequence, Ordering::Relaxed);
        stats.shadow_sequence.store(recovered.last_sequence, Ordering::Relaxed);
        stats.state_hash.store(recovered.engine.state_hash(), Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let control = Arc::new(SnapshotControl::default());
        let feed = Arc::new(ArrayQueue::new(config.snapshot.feed_commands.max(1)));
        let reads = Arc::new(EngineReads::default());
        let checkpoint_every = replicator.as_ref().map_or(0, |r| r.checkpoint_every());
        let checkpoints = Arc::new(CheckpointQueue::new(CHECKPOINT_QUEUE_CAPACITY));
        let snapshotter = Snapshotter {
            checkpoint_every,
            checkpoints: checkpoints.clone(),
            shadow: recovered.engine.clone(),
            sequence: recovered.last_sequence,
            feed: feed.clone(),
            control: control.clone(),
            stats: stats.clone(),
            metrics: metrics.clone(),
            every_commands: config.snapshot.every_commands,
            interval: (config.snapshot.every_seconds > 0).then(|| Duration::from_secs(config.snapshot.every_seconds)),
            last_snapshot_at: Instant::now(),
            last_snapshot_sequence: recovered.snapshot.as_ref().map_or(0, |(sequence, _)| *sequence),
            since_snapshot: 0,
            snapshot_dir: config.snapshot_dir(),
            journal_dir: config.journal_dir(),
            prune_journal: config.snapshot.prune_journal,
            retention,
            buffer: Vec::new(),
        };
        let snapshotter = std::thread::Builder::new().name("snapshotter".into()).spawn(move || snapshotter.run())?;
        // Recovery replays on books whose reserved room is untouched (cheaper replay); touch it
        // now, once, so that live orders do not pay page faults (the shadow copy above need not).
        let mut engine = recovered.engine;
        if !recovered.prefaulted {
            engine.prefault();
        }
        let mut engine_thread = EngineThread {
            engine,
            journal,
            journal_dir: config.journal_dir(),
            ring: ring.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            feed,
            egress: egress.clone(),
            reads: reads.clone(),
            metrics: metrics.clone(),
            idle: config.engine.idle.engine_policy(Duration::from_micros(config.engine.idle_spin_us)),
            batch_max: config.journal.batch_max.max(1),
            last_sequence: recovered.last_sequence,
            last_timestamp_ns: 0,
            replicator,
            shipped: Vec::new(),
            checkpoints,
        };
        let core = config.engine.core;
        let thread = std::thread::Builder::new().name("engine".into()).spawn(move || {
            if let Some(core) = core {
                let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core });
                tracing::info!(core, pinned, "engine thread pinned");
            }
            engine_thread.run()?;
            Ok(engine_thread.engine)
        })?;
        Ok(Self {
            ring,
            egress,
            reads,
            metrics,
            stats,
            stop,
            control,
            thread: Some(thread),
            snapshotter: Some(snapshotter),
            snapshot_dir: config.snapshot_dir(),
        })
    }

    /// Asks the snapshotter for a snapshot at the next opportunity (of the shadow engine at the
    /// sequence it has reached, unless a snapshot at that sequence exists already).
    pub fn request_snapshot(&self) {
        self.control.requested.store(true, Ordering::Release);
    }

    /// Whether the engine thread has ended (normally only after [`Self::shutdown`], or on a
    /// journal failure).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Drains the ring, commits and stops the engine thread; then the snapshotter applies every
    /// command up to the engine's last sequence, writes the final snapshot and stops; the live
    /// engine's state hash is checked against the shadow's.
    ///
    /// # Errors
    /// What stopped the engine thread, if it failed; a shadow that diverged from the live engine.
    pub fn shutdown(mut self) -> Result<(), RuntimeError> {
        self.stop.store(true, Ordering::Release);
        let live = match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Err(RuntimeError::Panicked("engine"))),
            None => Err(RuntimeError::Panicked("engine")),
        };
        // Every command the engine thread executed is durable and offered (or dropped) by now.
        let last_sequence = self.stats.last_sequence.load(Ordering::Acquire);
        self.control.finish_at.store(last_sequence, Ordering::Release);
        let shadow = self.snapshotter.take().and_then(|thread| thread.join().ok()).flatten();
        let live = live?;
        let live_hash = live.state_hash();
        tracing::info!(sequence = last_sequence, hash = format_args!("{live_hash:#018x}"), "engine stopped");
        match shadow {
            Some(shadow) if shadow.sequence == last_sequence && shadow.state_hash == live_hash => Ok(()),
            Some(shadow) if shadow.sequence == last_sequence => {
                tracing::error!(
                    sequence = last_sequence,
                    live = format_args!("{live_hash:#018x}"),
                    shadow = format_args!("{:#018x}", shadow.state_hash),
                    "the snapshotter's shadow engine diverged from the live engine; final snapshot rewritten from the live engine"
                );
                self.write_final_snapshot(&live, last_sequence);
                Err(RuntimeError::ShadowDiverged {
                    sequence: last_sequence,
                    live: live_hash,
                    shadow: shadow.state_hash,
                })
            }
            _ => {
                // The snapshotter failed (journal unreadable, panic): the engine is stopped, so
                // its own state can be serialised without stalling anyone.
                tracing::warn!(
                    sequence = last_sequence,
                    "snapshotter did not finish; final snapshot from the live engine"
                );
                self.write_final_snapshot(&live, last_sequence);
                Ok(())
            }
        }
    }

    fn write_final_snapshot(&self, live: &Engine, sequence: u64) {
        if sequence == 0 {
            return;
        }
        let mut bytes = Vec::new();
        let hash = live.write_snapshot(sequence, &mut bytes);
        match write_snapshot_file(&self.snapshot_dir, sequence, &bytes) {
            Ok(path) => {
                self.stats.state_hash.store(hash, Ordering::Relaxed);
                tracing::info!(sequence, path = %path.display(), "final snapshot written from the live engine");
            }
            Err(error) => tracing::error!(%error, sequence, "final snapshot failed"),
        }
    }
}

/// A command the engine thread has made durable and executed, for the shadow engine.
#[derive(Debug, Clone, Copy)]
struct JournaledCommand {
    sequence: u64,
    timestamp_ns: u64,
    command: Command,
    gateway: Option<codec::GatewayTag>,
}

/// The snapshot feed: bounded, the engine thread never waits on it.
type SnapshotFeed = ArrayQueue<JournaledCommand>;

/// Sequence value of [`SnapshotControl::finish_at`] while the runtime runs.
const RUNNING: u64 = u64::MAX;
/// How long the snapshotter sleeps when its feed is empty: it is not on any latency path, and a
/// small machine needs the core (at 1 ms the default feed holds 65 seconds' worth of commands
/// at 1M/s).
const SNAPSHOTTER_IDLE_SLEEP: Duration = Duration::from_millis(1);

/// Commands the snapshotter applies from the feed before it looks at requests again.
const FEED_DRAIN_MAX: usize = 4096;

/// Requests to the snapshotter from other threads.
#[derive(Debug)]
struct SnapshotControl {
    /// A snapshot was requested ([`Runtime::request_snapshot`]).
    requested: AtomicBool,
    /// The engine thread has stopped at this sequence: catch up to it, take the final snapshot
    /// and stop ([`RUNNING`] until then).
    finish_at: AtomicU64,
}

impl Default for SnapshotControl {
    fn default() -> Self {
        Self { requested: AtomicBool::new(false), finish_at: AtomicU64::new(RUNNING) }
    }
}

struct EngineThread {
    engine: Engine,
    journal: JournalWriter,
    /// Where the journal lives, for error messages.
    journal_dir: PathBuf,
    ring: Arc<IngressRing>,
    stats: Arc<RuntimeStats>,
    stop: Arc<AtomicBool>,
    feed: Arc<SnapshotFeed>,
    egress: Arc<BroadcastRing>,
    reads: Arc<EngineReads>,
    metrics: Arc<Metrics>,
    idle: IdlePolicy,
    batch_max: usize,
    last_sequence: u64,
    last_timestamp_ns: u64,
    /// The replicated journal, when configured.
    replicator: Option<Box<dyn BatchReplicator>>,
    /// The batch's framed records, copied before the local commit clears them.
    shipped: Vec<u8>,
    /// State hashes from the snapshotter, for the replicator.
    checkpoints: Arc<CheckpointQueue>,
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
        // (sequence, timestamp, command, popped at: its trace's engine-side start).
        let mut batch: Vec<(u64, u64, IngressCommand, u64)> = Vec::with_capacity(self.batch_max);
        let mut events: Vec<Event> = Vec::with_capacity(4096);
        let mut encoded = [0u8; codec::origin::JOURNALED_BYTES_MAX];
        let mut idle = Idle::default();
        loop {
            while batch.len() < self.batch_max {
                let Some(item) = self.ring.pop() else { break };
                let popped_ns = clock_ns();
                // Time enters through the journal: stamped once here, never read by the engine.
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
                self.last_timestamp_ns = self.last_timestamp_ns.max(now);
                // A gateway process's (id, sequence) is journaled with the command: every follower
                // then drops the same duplicates (codec::origin).
                let length = codec::encode_journaled(&item.command, item.gateway, &mut encoded)
                    .expect("buffer fits every command");
                let sequence = self.journal.append(self.last_timestamp_ns, &encoded[..length])?;
                batch.push((sequence, self.last_timestamp_ns, item, popped_ns));
            }
            if batch.is_empty() {
                self.serve_reads();
                if self.stop.load(Ordering::Acquire) && self.ring.is_empty() {
                    // Every committed record under the watermark: no cut of them goes unnoticed.
                    if let Err(error) = self.journal.stop_watermark() {
                        tracing::error!(%error, "final journal watermark not recorded");
                    }
                    // The final snapshot is the snapshotter's, once this thread has stopped.
                    return Ok(());
                }
                self.wait(&mut idle);
                continue;
            }
            idle.reset();
            let started = std::time::Instant::now();
            if self.replicator.is_some() {
                self.shipped.clear();
                self.shipped.extend_from_slice(self.journal.pending_records());
            }
            if let Err(error) = self.journal.commit() {
                tracing::error!(%error, "journal commit failed: engine stops; nothing of this batch was acknowledged");
                return Err(error.into());
            }
            if let Some(replicator) = &mut self.replicator {
                let (first, last) = (batch[0].0, batch[batch.len() - 1].0);
                match replicator.replicate(first, last, &self.shipped) {
                    Ok(()) => {}
                    Err(ReplicationError::Fenced(reason)) => {
                        // Nothing of this batch was executed or published: exit before anything
                        // else (another thread, a shutdown path) can acknowledge anything.
                        tracing::error!(%reason, first, last, "deposed: another primary appended to the journal topic; exiting unacknowledged");
                        std::process::exit(FENCED_EXIT_CODE);
                    }
                    Err(error) => {
                        tracing::error!(%error, first, last, "replicated journal failed: engine stops; nothing of this batch was acknowledged");
                        return Err(error.into());
                    }
                }
                // Checkpoints follow the batch just delivered (their sequences are older).
                while let Some((sequence, state_hash)) = self.checkpoints.pop() {
                    match replicator.checkpoint(sequence, state_hash) {
                        Ok(()) => {}
                        Err(ReplicationError::Fenced(reason)) => {
                            tracing::error!(%reason, "deposed: another primary appended to the journal topic; exiting unacknowledged");
                            std::process::exit(FENCED_EXIT_CODE);
                        }
                        Err(error) => {
                            tracing::error!(%error, "replicated journal failed: engine stops; nothing of this batch was acknowledged");
                            return Err(error.into());
                        }
                    }
                }
            }
            let commit_ns = started.elapsed().as_nanos() as u64;
            let committed_ns = clock_ns();
            let metrics = &*self.metrics;
            metrics.journal_commit_ns.record(commit_ns);
            metrics.journal_batch_size.record(batch.len() as u64);
            let mut fills = 0;
            let mut rejects = 0;
            let mut feed_overflows = 0;
            let executed = batch.len() as u64;
            for (sequence, timestamp_ns, item, popped_ns) in batch.drain(..) {
                let command_started = std::time::Instant::now();
                events.clear();
                let context = CommandContext::new(sequence, timestamp_ns).with_gateway(item.gateway);
                self.engine.execute(context, &item.command, &mut events);
                // Never waited for: a full feed means the snapshotter reads this from the journal.
                if self
                    .feed
                    .push(JournaledCommand { sequence, timestamp_ns, command: item.command, gateway: item.gateway })
                    .is_err()
                {
                    feed_overflows += 1;
                }
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
                // The stamps go beside the events, into preallocated slots: recording them into
                // histograms is left to the consumer that writes the acknowledgement.
                let trace = CommandTrace {
                    gateway: item.stamps,
                    popped_ns,
                    committed_ns,
                    published_ns: clock_ns(),
                    template_id: item.command.template_id(),
                };
                let pressure = self.egress.publish_traced_command(item.origin, &trace, &events);
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
            }
            metrics.fills.fetch_add(fills, Ordering::Relaxed);
            let stats = &self.stats;
            if feed_overflows > 0 {
                stats.snapshot_feed_overflows.fetch_add(feed_overflows, Ordering::Relaxed);
            }
            stats.commands.fetch_add(executed, Ordering::Relaxed);
            stats.fills.fetch_add(fills, Ordering::Relaxed);
            stats.rejects.fetch_add(rejects, Ordering::Relaxed);
            stats.batches.fetch_add(1, Ordering::Relaxed);
            // Release: a snapshotter that reads this sequence sees every offer made before it.
            stats.last_sequence.store(self.last_sequence, Ordering::Release);
            tracing::trace!(commit_ns, sequence = self.last_sequence, "batch committed");
            self.serve_reads();
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

    /// Waits for a producer on the empty ring: spins, then parks until one pushes (never a
    /// fixed nap, unless the legacy `spin-yield` is configured to measure against it).
    fn wait(&self, idle: &mut Idle) {
        self.ring.idle(idle, self.idle);
    }
}

/// What the snapshotter reached when it stopped.
#[derive(Debug, Clone, Copy)]
struct ShadowFinal {
    /// The shadow's last applied sequence (the engine's last one, when it caught up).
    sequence: u64,
    /// The shadow's state hash there.
    state_hash: u64,
}

/// The snapshotter thread: a shadow engine following the engine thread's durable commands, and
/// everything about snapshots (when, serialising, hashing, writing, pruning).
struct Snapshotter {
    shadow: Engine,
    /// Hash the shadow at every multiple of this sequence for the replicator (0: never).
    checkpoint_every: u64,
    checkpoints: Arc<CheckpointQueue>,
    /// Last sequence applied to the shadow.
    sequence: u64,
    feed: Arc<SnapshotFeed>,
    control: Arc<SnapshotControl>,
    stats: Arc<RuntimeStats>,
    metrics: Arc<Metrics>,
    every_commands: u64,
    interval: Option<Duration>,
    last_snapshot_at: Instant,
    last_snapshot_sequence: u64,
    since_snapshot: u64,
    snapshot_dir: PathBuf,
    journal_dir: PathBuf,
    prune_journal: bool,
    retention: Arc<Retention>,
    buffer: Vec<u8>,
}

impl Snapshotter {
    /// Follows the feed until the runtime shuts down; returns the final state, or `None` if the
    /// journal could not be read (already logged; recovery then replays from an older snapshot).
    fn run(mut self) -> Option<ShadowFinal> {
        // Never an equal of the engine thread for the CPU: on a small machine the shadow's
        // hashing and serialisation would otherwise be what clients see as a snapshot pause.
        let lowered = crate::priority::lower_current_thread();
        tracing::debug!(?lowered, "snapshotter thread priority");
        match self.follow() {
            Ok(()) => {
                Some(ShadowFinal { sequence: self.sequence, state_hash: self.stats.state_hash.load(Ordering::Acquire) })
            }
            Err(error) => {
                tracing::error!(%error, sequence = self.sequence, "snapshotter stopped: no more snapshots until restart");
                None
            }
        }
    }

    fn follow(&mut self) -> Result<(), RuntimeError> {
        loop {
            // Read the engine's progress before draining: every command up to it was offered
            // before it was published, so if the feed is then empty and the shadow is behind it,
            // the rest were dropped on a full feed and are in the journal.
            let finish_at = self.control.finish_at.load(Ordering::Acquire);
            let engine_at = self.stats.last_sequence.load(Ordering::Acquire);
            let mut applied = false;
            let mut drained = 0;
            while drained < FEED_DRAIN_MAX
                && let Some(fed) = self.feed.pop()
            {
                applied = true;
                drained += 1;
                if fed.sequence <= self.sequence {
                    continue; // Already read from the journal.
                }
                if fed.sequence > self.sequence + 1 {
                    self.catch_up_from_journal(fed.sequence - 1)?;
                }
                self.apply(fed.sequence, fed.timestamp_ns, fed.gateway, &fed.command);
                if self.every_commands > 0 && self.since_snapshot >= self.every_commands {
                    self.snapshot();
                }
            }
            if drained < FEED_DRAIN_MAX && self.sequence < engine_at {
                self.catch_up_from_journal(engine_at)?;
                applied = true;
            }
            if finish_at != RUNNING && drained < FEED_DRAIN_MAX {
                if self.sequence < finish_at {
                    self.catch_up_from_journal(finish_at)?;
                }
                self.snapshot();
                return Ok(());
            }
            let requested = self.control.requested.swap(false, Ordering::AcqRel);
            let due_by_count = self.every_commands > 0 && self.since_snapshot >= self.every_commands;
            let due_by_time = self.since_snapshot > 0
                && self.interval.is_some_and(|interval| self.last_snapshot_at.elapsed() >= interval);
            if requested || due_by_count || due_by_time {
                self.snapshot();
            }
            if !applied {
                std::thread::sleep(SNAPSHOTTER_IDLE_SLEEP);
            }
        }
    }

    fn apply(&mut self, sequence: u64, timestamp_ns: u64, gateway: Option<codec::GatewayTag>, command: &Command) {
        // State only: nobody reads the shadow's events.
        let context = CommandContext::new(sequence, timestamp_ns).with_gateway(gateway);
        self.shadow.execute_without_events(context, command);
        self.sequence = sequence;
        self.since_snapshot += 1;
        self.stats.shadow_sequence.store(sequence, Ordering::Relaxed);
        if self.checkpoint_every > 0 && sequence % self.checkpoint_every == 0 {
            // A full pass over the state, on this thread, never the engine's. Dropped when the
            // queue is full: a checkpoint is a check, not data.
            let _ = self.checkpoints.push((sequence, self.shadow.state_hash()));
        }
    }

    /// Applies the journal's records after the shadow's sequence up to `target` (durable: the
    /// engine thread committed them before offering or publishing them).
    fn catch_up_from_journal(&mut self, target: u64) -> Result<(), RuntimeError> {
        let from = self.sequence;
        let reader = JournalReader::open(&self.journal_dir)?;
        reader.for_each_after::<RuntimeError, _>(self.sequence, |record| {
            if record.sequence > target {
                return Ok(ControlFlow::Break(()));
            }
            let (command, gateway) = codec::decode_journaled(record.payload)
                .map_err(|e| RuntimeError::BadRecord { sequence: record.sequence, reason: e.to_string() })?;
            self.apply(record.sequence, record.timestamp_ns, gateway, &command);
            // Snapshots stay every `every_commands` however the commands reached the shadow: a
            // snapshotter starved of CPU (it runs at SCHED_IDLE) that catches up a long stretch
            // from the journal still leaves the snapshots a recovery expects along it.
            if self.every_commands > 0 && self.since_snapshot >= self.every_commands {
                self.snapshot();
            }
            Ok(if record.sequence == target { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
        })?;
        if self.sequence != target {
            return Err(JournalError::Corrupt {
                path: self.journal_dir.clone(),
                offset: 0,
                reason: format!(
                    "snapshotter needs sequences {} to {target}, the journal ends at {}",
                    from + 1,
                    self.sequence
                ),
            }
            .into());
        }
        tracing::debug!(from, to = target, "snapshotter read commands the full feed dropped from the journal");
        Ok(())
    }

    /// Serialises and hashes the shadow (once), writes and syncs the file, prunes. Not fatal on
    /// failure: the journal still holds everything; recovery just replays more.
    fn snapshot(&mut self) {
        if self.sequence == 0 || self.sequence == self.last_snapshot_sequence {
            return;
        }
        let started = Instant::now();
        let sequence = self.sequence;
        let state_hash = self.shadow.write_snapshot(sequence, &mut self.buffer);
        let serialised = started.elapsed();
        self.stats.state_hash.store(state_hash, Ordering::Release);
        match write_snapshot_file(&self.snapshot_dir, sequence, &self.buffer) {
            Ok(path) => {
                self.metrics.snapshot_ns.record(started.elapsed().as_nanos() as u64);
                self.stats.snapshot_sequence.store(sequence, Ordering::Release);
                self.stats.snapshots.fetch_add(1, Ordering::Release);
                tracing::info!(
                    sequence,
                    bytes = self.buffer.len(),
                    serialise_ms = serialised.as_millis() as u64,
                    total_ms = started.elapsed().as_millis() as u64,
                    path = %path.display(),
                    "snapshot written"
                );
                if self.prune_journal {
                    prune(&self.snapshot_dir, &self.journal_dir, self.retention.floor());
                }
            }
            Err(error) => tracing::error!(%error, sequence, "snapshot failed"),
        }
        self.last_snapshot_sequence = sequence;
        self.since_snapshot = 0;
        self.last_snapshot_at = Instant::now();
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
