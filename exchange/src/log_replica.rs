//! A full-fidelity market-data replica that follows the replicated journal (`exchange replica
//! --from-log`): every depth diff and every trade, with the engine's own ids, gap-free. See
//! docs/deployment.md ("Market-data replicas") and docs/operations.md ("Market-data replica").
//!
//! # Why it follows the journal, not an event topic
//! The engine is a pure function of its journal. The replicated journal topic (`[cluster]
//! journal_topic`, written by a primary with `durability = "replicated"`) holds every
//! authoritative command in sequence order, so a process that runs its own [`Engine`] over it
//! derives exactly the primary's events: the same order ids, trade ids, book levels and state
//! hash. The topic is far smaller than the events it causes, gap-free by construction
//! (sequences are contiguous) and already the one order every follower applies
//! ([`crate::cluster::log::LogFollower`] keeps only the authoritative batches: a deposed
//! primary's late writes are skipped).
//!
//! # What it does
//! A follower thread reads the topic through a `LogFollower`, starting at the snapshot it was
//! given (an engine snapshot file at sequence S, e.g. one a standby wrote; or the empty engine
//! at sequence 0): from the journal topic position recorded beside a standby's snapshot (only the
//! records after S are read), otherwise from the first record, skipping the records the snapshot
//! already covers. It executes every later command
//! on its engine and hands the events to the same [`Publisher`] and [`MarketView`] the primary's
//! market-data feed uses ([`Publisher::on_sequenced_command`]). The gateway's own routers serve
//! them: `/api/v1/depth`, `trades`, `ticker(s)`, `klines`, … and the public WebSocket streams.
//!
//! What a client sees, compared with the primary's process:
//! - **Every change.** One diff per command that changes a market, every trade, not conflated
//!   (the Redis-fed replica, [`crate::replica`], mirrors sink snapshots instead).
//! - **Depth ids are engine sequences.** A diff carries `U` = the market's previous id + 1 and
//!   `u` = the sequence of its command; REST `lastUpdateId` is the sequence of the last command
//!   that changed the market (the snapshot's sequence at start). Two replicas of one log agree on
//!   ids wherever each started, so a client may take its snapshot from one and diffs from another.
//!   (The primary's own feed counts level updates since its process started.)
//! - **History from its start.** Trades, tickers and klines cover the commands the replica
//!   executed: from sequence 1 when it started without a snapshot (then equal to the primary's),
//!   from S otherwise.
//! - **Staleness** is measured per command: the replica's wall clock when the command's events
//!   are published minus the sequencer's timestamp in the journal record (the primary's wall
//!   clock when it sequenced the command, before its journal commit and Kafka delivery). The
//!   histogram `exchange_replica_staleness_seconds` on `/metrics`; it assumes synchronised
//!   clocks (same host on loopback, NTP/PTP across hosts).
//! - Until the follower has caught up with the end of the topic it saw at start, depth answers
//!   `503` (the view is stale): a client would otherwise read an old book.
//! - No private streams or endpoints: the replica holds no keys and takes no orders.
//!
//! # Failure
//! A record that does not decode, or a sequence gap (impossible with the authoritative-order
//! rule), stops the follower with an error in the log; the view is marked stale and the process
//! keeps answering (depth `503`) so an operator sees why. The follower hashes its state at every
//! multiple of `[cluster] checkpoint_every`; a primary's checkpoint (appended after its next batch)
//! with another hash at the same sequence is counted (`exchange_cluster_divergence_total`) and
//! logged: a determinism bug.

use crate::cluster::log::{ClusterError, Followed, LogFollower, LogPosition};
use crate::metrics::AtomicHistogram;
use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use codec::Event;
use engine::latency::EXPORT_BOUNDS_NS;
use engine::snapshot::list_snapshots;
use engine::{CommandContext, Engine, EngineConfig, OrderBook};
use gateway_json::ws::{WsConfig, WsState, ws_router};
use marketdata::{MarketView, Publisher, PublisherConfig};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Room for the events of one command (a larger command grows it once).
const EVENTS_CAPACITY: usize = 1024;
/// Own state hashes kept for checkpoints that arrive after the sequence they hash (a primary
/// appends a checkpoint after its next batch).
const OWN_HASHES_KEPT: usize = 8;
/// How long one poll of the log waits for records: also how often the publisher's timers
/// (conflated depth, tickers) run while the log is quiet.
const POLL_TIMEOUT: Duration = Duration::from_millis(10);
/// Pause after a broker error before polling again (librdkafka reconnects by itself).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Counters and the staleness histogram of a journal-following replica.
pub struct LogReplicaStats {
    /// Last sequence executed and published (the snapshot's at start, 0 without one).
    pub sequence: AtomicU64,
    /// Commands executed since start.
    pub commands: AtomicU64,
    /// Records skipped because the start snapshot already covers them.
    pub skipped: AtomicU64,
    /// Events the replica's engine produced (and the publisher was handed) since start.
    pub events: AtomicU64,
    /// Fills published since start.
    pub trades: AtomicU64,
    /// Book level updates published since start.
    pub level_updates: AtomicU64,
    /// Superseded batches (a deposed primary's late writes) the follower ignored.
    pub superseded: AtomicU64,
    /// Primary checkpoints whose state hash differed from this replica's at the same sequence.
    pub divergences: AtomicU64,
    /// Primary checkpoints compared.
    pub checkpoints: AtomicU64,
    /// Set once the follower has stopped on an error (1) or is running (0).
    pub failed: AtomicU64,
    /// Wall-clock publish time minus the journal record's sequencer timestamp, per command, ns.
    pub staleness_ns: AtomicHistogram,
    /// Journal topic records read since start (from the start snapshot's log position when it
    /// has one: only the records after it).
    pub records_read: AtomicU64,
    /// The journal topic offset the follower started at.
    pub start_offset: AtomicU64,
}

impl Default for LogReplicaStats {
    fn default() -> Self {
        Self {
            sequence: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            events: AtomicU64::new(0),
            trades: AtomicU64::new(0),
            level_updates: AtomicU64::new(0),
            superseded: AtomicU64::new(0),
            divergences: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            staleness_ns: AtomicHistogram::new(EXPORT_BOUNDS_NS),
            records_read: AtomicU64::new(0),
            start_offset: AtomicU64::new(0),
        }
    }
}

/// Why the follower stopped.
#[derive(Debug, thiserror::Error)]
pub enum LogReplicaError {
    /// The start snapshot could not be read or restored.
    #[error("snapshot {path}: {reason}")]
    Snapshot {
        /// File or directory given.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A record after the follower's sequence that is not the next one.
    #[error("journal gap: the replica is at sequence {at}, the log's next record is {found}")]
    Gap {
        /// The replica's last sequence.
        at: u64,
        /// The record's sequence.
        found: u64,
    },
    /// A record whose payload is not a command.
    #[error("journal record {sequence} does not decode as a command: {reason}")]
    BadRecord {
        /// Sequence.
        sequence: u64,
        /// Decoder error.
        reason: String,
    },
    /// The engine configuration is refused.
    #[error(transparent)]
    Config(#[from] engine::ConfigError),
    /// The log breaks the authoritative-order rule or holds a damaged batch.
    #[error("journal topic: {0}")]
    Log(String),
    /// The follower thread could not start.
    #[error("replica follower thread: {0}")]
    Thread(std::io::Error),
    /// The broker refused or did not answer (retried while following).
    #[error("journal topic broker: {0}")]
    Broker(String),
}

impl From<ClusterError> for LogReplicaError {
    fn from(error: ClusterError) -> Self {
        match error {
            ClusterError::Kafka(reason) => Self::Broker(reason),
            other => Self::Log(other.to_string()),
        }
    }
}

/// Settings of a journal-following replica.
#[derive(Debug, Clone)]
pub struct LogReplicaConfig {
    /// Bootstrap brokers (`[cluster] brokers`).
    pub brokers: String,
    /// The journal topic (`[cluster] journal_topic`).
    pub topic: String,
    /// Replication factor should the replica be first to create the topic (`[cluster]
    /// replication`).
    pub replication: i32,
    /// Snapshot file or directory to start from (`None`: the empty engine, sequence 0).
    pub snapshot: Option<PathBuf>,
    /// Hash the engine's state at every multiple of this sequence, to compare with the primary's
    /// checkpoints (`[cluster] checkpoint_every`; 0: only a checkpoint of the sequence the replica
    /// is at when it arrives is compared).
    pub checkpoint_every: u64,
    /// Without `snapshot`: the snapshot topic to start from (its newest usable snapshot; `None`
    /// or none usable: the first record of the journal topic).
    pub snapshot_topic: Option<crate::cluster::snapshots::SnapshotTopic>,
}

/// A running journal-following replica: the follower thread and what the HTTP server needs.
pub struct LogReplica {
    engine_config: EngineConfig,
    publisher: Arc<Publisher>,
    stats: Arc<LogReplicaStats>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogReplica {
    /// Restores the start snapshot, opens the journal topic and starts following it. The view is
    /// stale (depth `503`) until the follower has read up to the end of the topic as it was at
    /// start.
    ///
    /// # Errors
    /// The snapshot does not restore, the configuration is refused, the broker does not answer,
    /// or the thread cannot start.
    pub fn start(config: LogReplicaConfig, engine_config: &EngineConfig) -> Result<Self, LogReplicaError> {
        let stats = Arc::new(LogReplicaStats::default());
        let published = match (&config.snapshot, &config.snapshot_topic) {
            (None, Some(topic)) => crate::cluster::snapshots::follow_from_published(topic, engine_config)?,
            _ => None,
        };
        let (engine, at, log) = match (&config.snapshot, published) {
            // From the snapshot's recorded log position when it has one (a standby's snapshot):
            // only the records after it are read. Otherwise from the first record, skipping what
            // the snapshot covers.
            (Some(path), _) => {
                let (engine, at, position) = load_snapshot_with_position(engine_config, path)?;
                (engine, at, LogFollower::open_from(&config.brokers, &config.topic, config.replication, position)?)
            }
            // The snapshot topic's newest usable snapshot, followed from its position.
            (None, Some(published)) => (published.engine, published.sequence, published.follower),
            (None, None) => (
                Engine::new_unfaulted(engine_config)?,
                0,
                LogFollower::open(&config.brokers, &config.topic, config.replication)?,
            ),
        };
        stats.start_offset.store(u64::try_from(log.next_offset()).unwrap_or(0), Ordering::Relaxed);
        let catch_up_to = log.end_offset()?;
        tracing::info!(
            topic = config.topic,
            snapshot_sequence = at,
            catch_up_to,
            offset = log.next_offset(),
            "replica: following the journal topic from offset {} (depth unavailable until caught up)",
            log.next_offset()
        );
        let publisher = new_publisher(engine_config);
        let follower =
            Follower::new(engine, at, publisher.clone(), stats.clone()).with_checkpoints_every(config.checkpoint_every);
        publisher.view().mark_stale();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("replica-log".into())
            .spawn(move || follow_loop(follower, log, catch_up_to, &thread_stop))
            .map_err(LogReplicaError::Thread)?;
        Ok(Self { engine_config: engine_config.clone(), publisher, stats, stop, thread: Some(thread) })
    }

    /// The follower's counters.
    pub fn stats(&self) -> &Arc<LogReplicaStats> {
        &self.stats
    }

    /// The publisher the follower feeds.
    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.publisher
    }

    /// The HTTP routes ([`router`]).
    pub fn router(&self) -> Router {
        router(&self.publisher, &self.engine_config, &self.stats)
    }
}

impl Drop for LogReplica {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Follows the log until stopped. Broker errors are retried (librdkafka reconnects); a log that
/// breaks the rules or a record that does not apply stops the follower: the view turns stale and
/// every stream is closed (they would have gaps), the process keeps answering so the cause is
/// visible (`exchange_replica_failed`, the log).
fn follow_loop(mut follower: Follower, mut log: LogFollower, catch_up_to: i64, stop: &AtomicBool) {
    let publisher = follower.publisher.clone();
    let stats = follower.stats.clone();
    let mut caught_up = false;
    while !stop.load(Ordering::Acquire) {
        let polled = log.poll::<LogReplicaError, _>(POLL_TIMEOUT, &mut |followed| match followed {
            Followed::Command(record) => {
                follower.apply(record.sequence, record.timestamp_ns, record.payload).map(|_| ())
            }
            Followed::Checkpoint { sequence, state_hash } => {
                follower.check(sequence, state_hash);
                Ok(())
            }
            Followed::Epoch { offset } => {
                tracing::info!(epoch = offset, sequence = follower.sequence(), "replica: a new primary's epoch");
                Ok(())
            }
        });
        stats.superseded.store(log.superseded(), Ordering::Relaxed);
        stats.records_read.store(log.records_read(), Ordering::Relaxed);
        match polled {
            Ok(_) => {}
            Err(LogReplicaError::Broker(error)) => {
                tracing::warn!(%error, "replica: journal topic unreachable; retrying");
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(error) => {
                tracing::error!(%error, sequence = follower.sequence(), "replica: follower stopped; depth unavailable");
                stats.failed.store(1, Ordering::Release);
                publisher.view().mark_stale();
                publisher.close_all("The replica stopped following the journal; reconnect to another replica");
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(RETRY_PAUSE);
                }
                return;
            }
        }
        if !caught_up && (log.at_end() || log.next_offset() >= catch_up_to) {
            caught_up = true;
            publisher.view().clear_stale();
            tracing::info!(sequence = follower.sequence(), "replica: caught up with the journal topic; serving");
        }
        publisher.tick(Instant::now());
    }
}

/// Runs the replica's HTTP server on `listen` until the process ends; logs `replica HTTP
/// listening listen=IP:PORT`.
///
/// # Errors
/// The listener cannot bind, or the server fails.
pub fn serve(replica: LogReplica, listen: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        tracing::info!(
            listen = %listener.local_addr()?,
            "replica HTTP listening (public REST and WebSocket market data from the journal topic)"
        );
        let service = replica.router().into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, service).await?;
        Ok(())
    })
}

/// Restores the engine from `path`: a snapshot file, or a snapshot directory (its newest snapshot
/// that restores; e.g. a standby's `data/snapshots`). Returns the engine and its sequence.
///
/// # Errors
/// [`LogReplicaError::Snapshot`] when nothing restores.
pub fn load_snapshot(config: &EngineConfig, path: &Path) -> Result<(Engine, u64), LogReplicaError> {
    load_snapshot_with_position(config, path).map(|(engine, sequence, _)| (engine, sequence))
}

/// [`load_snapshot`], and the journal topic position recorded beside the snapshot file used
/// (a standby writes one with each snapshot, see [`LogPosition`]), if it has one that fits its
/// sequence.
///
/// # Errors
/// [`LogReplicaError::Snapshot`] when nothing restores.
pub fn load_snapshot_with_position(
    config: &EngineConfig,
    path: &Path,
) -> Result<(Engine, u64, Option<LogPosition>), LogReplicaError> {
    let failed = |reason: String| LogReplicaError::Snapshot { path: path.to_path_buf(), reason };
    let files = if path.is_dir() {
        list_snapshots(path).map_err(|e| failed(e.to_string()))?.into_iter().map(|(_, file)| file).collect()
    } else {
        vec![path.to_path_buf()]
    };
    let mut last_error = "no snapshot in the directory".to_string();
    for file in files {
        let restored = std::fs::read(&file).map_err(|e| e.to_string()).and_then(|bytes| {
            Engine::restore_snapshot(config, OrderBook::with_capacity_unfaulted, &bytes).map_err(|e| e.to_string())
        });
        match restored {
            Ok((engine, sequence)) => {
                let position = LogPosition::read_for(&file).filter(|p| p.next_sequence == sequence + 1);
                return Ok((engine, sequence, position));
            }
            Err(error) => {
                tracing::warn!(file = %file.display(), %error, "snapshot unusable; trying an older one");
                last_error = format!("{}: {error}", file.display());
            }
        }
    }
    Err(failed(last_error))
}

/// What [`Follower::apply`] did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Executed and published.
    Published,
    /// At or before the replica's sequence (covered by its start snapshot): skipped.
    Covered,
}

/// The replica's engine and what it publishes to: applies authoritative journal records in
/// sequence order.
pub struct Follower {
    engine: Engine,
    sequence: u64,
    /// Hash the state at multiples of this sequence (0: never).
    checkpoint_every: u64,
    /// `(sequence, state hash)` at the last multiples of `checkpoint_every`, oldest first.
    own_hashes: VecDeque<(u64, u64)>,
    publisher: Arc<Publisher>,
    stats: Arc<LogReplicaStats>,
    events: Vec<Event>,
}

impl Follower {
    /// A follower whose engine is `engine` at `sequence` (a restored snapshot, or an empty engine
    /// at 0): seeds the view's books and update ids and the publisher's open orders from it.
    pub fn new(engine: Engine, sequence: u64, publisher: Arc<Publisher>, stats: Arc<LogReplicaStats>) -> Self {
        publisher.view().seed_books_at(&engine, sequence);
        publisher.seed_orders(&engine);
        stats.sequence.store(sequence, Ordering::Release);
        Self {
            engine,
            sequence,
            checkpoint_every: 0,
            own_hashes: VecDeque::with_capacity(OWN_HASHES_KEPT),
            publisher,
            stats,
            events: Vec::with_capacity(EVENTS_CAPACITY),
        }
    }

    /// Hashes the state at every multiple of `every` sequences (after publishing that command's
    /// events: the pass over the state delays the next command, not this one), for
    /// [`Self::check`]. 0: never.
    pub fn with_checkpoints_every(mut self, every: u64) -> Self {
        self.checkpoint_every = every;
        self
    }

    /// The last sequence applied.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The replica's engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Executes the command of one authoritative record (sequence, the sequencer's timestamp,
    /// SBE payload) and publishes its events; records at or before the replica's sequence are
    /// skipped (the start snapshot covers them).
    ///
    /// # Errors
    /// [`LogReplicaError::Gap`] for a record that is not the next sequence,
    /// [`LogReplicaError::BadRecord`] for a payload that is not a command; nothing is applied.
    pub fn apply(&mut self, sequence: u64, timestamp_ns: u64, payload: &[u8]) -> Result<Applied, LogReplicaError> {
        if sequence <= self.sequence {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(Applied::Covered);
        }
        if sequence != self.sequence + 1 {
            return Err(LogReplicaError::Gap { at: self.sequence, found: sequence });
        }
        // A gateway process's command carries its (gateway id, sequence) after the command: the
        // engine needs it to drop a duplicate exactly as the primary did.
        let (command, gateway) = codec::decode_journaled(payload)
            .map_err(|e| LogReplicaError::BadRecord { sequence, reason: e.to_string() })?;
        self.events.clear();
        let context = CommandContext::new(sequence, timestamp_ns).with_gateway(gateway);
        self.engine.execute(context, &command, &mut self.events);
        self.publisher.on_sequenced_command(&self.events, sequence);
        let published_ns = wall_clock_ns();
        self.sequence = sequence;
        let stats = &self.stats;
        stats.staleness_ns.record(published_ns.saturating_sub(timestamp_ns));
        let (mut trades, mut levels) = (0, 0);
        for event in &self.events {
            match event {
                Event::Fill(_) => trades += 1,
                Event::BookLevelUpdate(_) => levels += 1,
                _ => {}
            }
        }
        stats.events.fetch_add(self.events.len() as u64, Ordering::Relaxed);
        stats.trades.fetch_add(trades, Ordering::Relaxed);
        stats.level_updates.fetch_add(levels, Ordering::Relaxed);
        stats.commands.fetch_add(1, Ordering::Relaxed);
        stats.sequence.store(sequence, Ordering::Release);
        if self.checkpoint_every > 0 && sequence % self.checkpoint_every == 0 {
            if self.own_hashes.len() == OWN_HASHES_KEPT {
                self.own_hashes.pop_front();
            }
            self.own_hashes.push_back((sequence, self.engine.state_hash()));
        }
        Ok(Applied::Published)
    }

    /// Compares a primary's checkpoint (state hash `state_hash` at `sequence`) with the
    /// replica's own hash at that sequence: one kept at a multiple of the checkpoint interval, or
    /// the engine's when the replica is exactly there. Returns whether they agree (`None`: no own
    /// hash of that sequence, nothing compared). A difference is a determinism bug: counted and
    /// logged as an error.
    pub fn check(&self, sequence: u64, state_hash: u64) -> Option<bool> {
        let kept = self.own_hashes.iter().find(|(at, _)| *at == sequence).map(|(_, hash)| *hash);
        let own = match kept {
            Some(hash) => hash,
            None if sequence == self.sequence => self.engine.state_hash(),
            None => return None,
        };
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        if own != state_hash {
            self.stats.divergences.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                sequence,
                primary = format_args!("{state_hash:#018x}"),
                replica = format_args!("{own:#018x}"),
                "replica state hash differs from the primary's checkpoint: determinism bug"
            );
        }
        Some(own == state_hash)
    }
}

/// Nanoseconds since the Unix epoch on the wall clock (the clock the sequencer stamps records
/// with).
fn wall_clock_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The replica's routes: the gateway's public market data, the public WebSocket streams at `/`
/// and `/ws`, `/health` (`ok <sequence>`) and `/metrics`.
pub fn router(publisher: &Arc<Publisher>, engine_config: &EngineConfig, stats: &Arc<LogReplicaStats>) -> Router {
    let view = publisher.view().clone();
    let websocket = WsState::new(
        publisher.clone(),
        // No keys: private subscriptions are refused with the usual error frame.
        Arc::new(gateway_binary::Credentials::default()),
        WsConfig::default(),
    );
    let (health_stats, metrics_stats, metrics_publisher) = (stats.clone(), stats.clone(), publisher.clone());
    gateway_json::public_router(view, Arc::new(engine_config.clone()))
        .merge(ws_router(websocket))
        .route(
            "/health",
            get(move || async move {
                format!("ok {}\n", health_stats.sequence.load(Ordering::Acquire)).into_response()
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    render_metrics(&metrics_stats, &metrics_publisher),
                )
            }),
        )
}

/// The replica's counters and staleness histogram in Prometheus text format.
pub fn render_metrics(stats: &LogReplicaStats, publisher: &Publisher) -> String {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let ws = publisher.stats();
    let series: [(&str, &str, &str, u64); 15] = [
        (
            "exchange_cluster_log_records_read_total",
            "counter",
            "Journal topic records read since start.",
            load(&stats.records_read),
        ),
        (
            "exchange_cluster_log_start_offset",
            "gauge",
            "Journal topic offset the follower started at (after its start snapshot).",
            load(&stats.start_offset),
        ),
        ("exchange_replica_sequence", "gauge", "Last journal sequence executed and published.", load(&stats.sequence)),
        ("exchange_replica_commands_total", "counter", "Journal commands executed.", load(&stats.commands)),
        (
            "exchange_replica_skipped_total",
            "counter",
            "Journal records covered by the start snapshot.",
            load(&stats.skipped),
        ),
        ("exchange_replica_events_total", "counter", "Engine events handed to the publisher.", load(&stats.events)),
        (
            "exchange_replica_level_updates_total",
            "counter",
            "Book level updates published.",
            load(&stats.level_updates),
        ),
        ("exchange_replica_trades_total", "counter", "Trades published.", load(&stats.trades)),
        (
            "exchange_cluster_superseded_batches_total",
            "counter",
            "Superseded journal batches (a deposed primary's late writes) ignored.",
            load(&stats.superseded),
        ),
        ("exchange_cluster_checkpoints_total", "counter", "Primary checkpoints compared.", load(&stats.checkpoints)),
        (
            "exchange_cluster_divergence_total",
            "counter",
            "Primary checkpoints whose state hash differed from the replica's.",
            load(&stats.divergences),
        ),
        ("exchange_replica_failed", "gauge", "1 once the follower stopped on an error.", load(&stats.failed)),
        (
            "exchange_replica_stale",
            "gauge",
            "1 while depth is unavailable (catching up, or the follower stopped).",
            u64::from(publisher.view().is_stale()),
        ),
        ("exchange_ws_subscribers", "gauge", "Open WebSocket subscribers.", load(&ws.subscribers)),
        ("exchange_ws_frames_queued_total", "counter", "Stream frames queued to subscribers.", load(&ws.frames_queued)),
    ];
    let mut out = String::with_capacity(8192);
    for (name, kind, help, value) in series {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    }
    stats.staleness_ns.render(
        &mut out,
        "exchange_replica_staleness_seconds",
        "Per command: replica publish time minus the primary sequencer's journal timestamp.",
        1e9,
    );
    out
}

/// A new publisher and view for `engine_config`'s markets, stale until the follower catches up.
pub fn new_publisher(engine_config: &EngineConfig) -> Arc<Publisher> {
    let view = Arc::new(MarketView::new(engine_config));
    view.mark_stale();
    Publisher::new(view, engine_config, PublisherConfig::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::{Side, TimeInForce};
    use engine::testkit::commands::{deposit, limit};

    fn records() -> Vec<(u64, u64, Vec<u8>)> {
        let commands = [
            deposit(1, 0, 1_000_000),
            deposit(2, 1, 100_000_000),
            limit(1, 1, Side::Ask, 20_000, 3, TimeInForce::Gtc, 0),
            limit(2, 1, Side::Bid, 20_000, 1, TimeInForce::Ioc, 0),
            limit(2, 1, Side::Bid, 19_990, 2, TimeInForce::Gtc, 0),
        ];
        let now = wall_clock_ns();
        commands.iter().enumerate().map(|(i, c)| (i as u64 + 1, now, c.to_vec())).collect()
    }

    /// `--snapshot` (replica and gateway process) given a missing path, an empty directory, a
    /// file that is not a snapshot, or a directory whose newest snapshot is garbage: a clear
    /// error naming the path, or the newest usable snapshot, never a panic.
    #[test]
    fn unusable_snapshot_paths_are_errors_and_a_garbage_newest_snapshot_is_skipped() {
        let config = EngineConfig::sample();
        let dir = std::env::temp_dir().join(format!("log-replica-snapshots-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let unusable = |path: &Path| match load_snapshot_with_position(&config, path) {
            Err(LogReplicaError::Snapshot { path: named, .. }) => assert_eq!(named, path),
            Err(other) => panic!("unexpected error {other}"),
            Ok((_, sequence, _)) => panic!("{} loaded at {sequence}", path.display()),
        };
        unusable(&dir.join("absent.snap"));
        unusable(&dir);
        let garbage = dir.join("snapshot-00000000000000000009.snap");
        std::fs::write(&garbage, b"not a snapshot at all").unwrap();
        unusable(&garbage);

        let mut engine = Engine::new(&config).unwrap();
        let mut events = Vec::new();
        for (sequence, timestamp, payload) in records().into_iter().take(3) {
            let (command, _) = codec::Command::decode(&payload).unwrap();
            engine.execute(CommandContext::new(sequence, timestamp), &command, &mut events);
        }
        let mut snapshot = Vec::new();
        engine.write_snapshot(3, &mut snapshot);
        std::fs::write(dir.join("snapshot-00000000000000000003.snap"), &snapshot).unwrap();
        let (restored, sequence, position) = load_snapshot_with_position(&config, &dir).unwrap();
        assert_eq!(sequence, 3);
        assert_eq!(restored.state_hash(), engine.state_hash());
        assert!(position.is_none(), "no position file beside it");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A follower from a snapshot at 3 skips what it covers, applies the rest, ends with the
    /// state of one that applied everything from 1, records one staleness value per executed
    /// command, and refuses a gap.
    #[test]
    fn follower_from_a_snapshot_skips_covered_records_and_refuses_gaps() {
        let config = EngineConfig::sample();
        let stats_full = Arc::new(LogReplicaStats::default());
        let mut full = Follower::new(Engine::new(&config).unwrap(), 0, new_publisher(&config), stats_full.clone());
        let mut snapshot = Vec::new();
        let mut hash_at_4 = 0;
        for (sequence, timestamp, payload) in records() {
            assert_eq!(full.apply(sequence, timestamp, &payload).unwrap(), Applied::Published);
            if sequence == 3 {
                full.engine().write_snapshot(3, &mut snapshot);
            }
            if sequence == 4 {
                hash_at_4 = full.engine().state_hash();
            }
        }
        assert_eq!(stats_full.staleness_ns.count(), 5);
        assert_eq!(stats_full.trades.load(Ordering::Relaxed), 1);
        let dir = std::env::temp_dir().join(format!("log-replica-snap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = engine::snapshot::write_snapshot_file(&dir, 3, &snapshot).unwrap();
        let (engine, at) = load_snapshot(&config, &dir).unwrap();
        assert_eq!(at, 3);
        assert_eq!(load_snapshot(&config, &file).unwrap().1, 3);
        let stats = Arc::new(LogReplicaStats::default());
        let publisher = new_publisher(&config);
        let mut from_snapshot = Follower::new(engine, at, publisher.clone(), stats.clone()).with_checkpoints_every(2);
        let mut outcomes = Vec::new();
        for (sequence, timestamp, payload) in records() {
            outcomes.push(from_snapshot.apply(sequence, timestamp, &payload).unwrap());
        }
        use Applied::{Covered, Published};
        assert_eq!(outcomes, [Covered, Covered, Covered, Published, Published]);
        assert_eq!(from_snapshot.engine().state_hash(), full.engine().state_hash());
        assert_eq!(from_snapshot.check(5, full.engine().state_hash()), Some(true));
        assert_eq!(from_snapshot.check(5, 1), Some(false));
        assert_eq!(stats.divergences.load(Ordering::Relaxed), 1);
        // A checkpoint that arrives after its sequence: compared with the hash kept at 4 (a
        // multiple of 2); 2 is covered by the snapshot, 3 is not a multiple: nothing to compare.
        assert_eq!(from_snapshot.check(4, hash_at_4), Some(true));
        assert_eq!(from_snapshot.check(2, 1), None);
        assert_eq!(from_snapshot.check(3, 1), None);
        assert_eq!(stats.staleness_ns.count(), 2);
        let depth = publisher.view().depth(codec::MarketId::new(1), 10).unwrap();
        assert_eq!((depth.asks, depth.bids, depth.last_update_id), (vec![(20_000, 2)], vec![(19_990, 2)], 5));
        let payload = records()[0].2.clone();
        assert!(matches!(from_snapshot.apply(7, 0, &payload), Err(LogReplicaError::Gap { at: 5, found: 7 })));
        assert!(matches!(from_snapshot.apply(6, 0, b"garbage"), Err(LogReplicaError::BadRecord { sequence: 6, .. })));
        assert_eq!(from_snapshot.sequence(), 5);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
