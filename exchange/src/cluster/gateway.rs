//! A gateway process (`exchange gateway`): the REST/WebSocket API without an engine of its own
//! authority, on any number of machines (docs/deployment.md, "Gateway processes").
//!
//! ```text
//! REST/WS handlers ──push──▶ local ingress ring ──▶ forwarder thread: gateway sequence,
//!   (gateway-json, unchanged)                        remember (sequence → origin),
//!                                                    send to the commands topic (key = gateway id)
//!                                     ▼ (the replicated primary journals and executes it)
//! journal topic ──▶ follower thread: LogFollower + its own Engine (derives exactly the
//!                   primary's events), publishes each command's events into the local egress
//!                   ring with the origin of the session that sent it (own gateway id) or none
//!                   ──▶ RestGateway / AccountViews / market view / WS streams (unchanged)
//! ```
//!
//! The handlers, the account views and the market-data feed are the very code the primary runs:
//! they see a ring and an egress ring and cannot tell a gateway process from the primary. So
//! clients see the same API, the same JSON and the same errors (`{code, message}`, statuses).
//!
//! # Gateway sequence
//! Exactly once rests on the engine's table of the highest sequence applied per gateway id
//! ([`engine::Engine::is_duplicate`]): a gateway's sequences must increase across its restarts.
//! At start the process follows the log to its end, then numbers its commands from
//! `max(highest applied for its id + 1, now in Unix nanoseconds)`: the clock part covers commands
//! it sent before a crash that are still on their way in the commands topic (they carry smaller
//! numbers, so neither they nor the new ones are mistaken for duplicates of each other), as long
//! as the clock does not step back across a restart by more than the time since the crash.
//!
//! # Responses
//! An answer is the events of the command, read from the journal topic: a request is answered
//! once the command is durable in the log and executed there (the primary's rule, "nothing
//! acknowledged before it is durable", holds by construction). A duplicate (a re-sent command)
//! produces no events; its session gets no answer from it.

use super::commands::CommandsProducer;
use super::log::{ClusterError, Followed, LogFollower};
use super::snapshots::{SnapshotTopic, follow_from_published};
use crate::config::Config;
use crate::egress::BroadcastRing;
use crate::metrics::Metrics;
use crate::runtime::{EngineReads, IngressRing, RuntimeStats};
use codec::{Event, GatewayTag};
use engine::doorbell::Idle;
use engine::{CommandContext, Engine, EngineConfig};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long one follower poll waits for new records before reads and the stop flag are served.
const FOLLOW_POLL: Duration = Duration::from_millis(5);
/// How long the start-up catch-up may take.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a shutdown waits for queued commands to reach the broker.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a gateway process stopped.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The cluster layer (broker, log).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The configuration lacks what a gateway needs.
    #[error("{0}")]
    Config(String),
    /// The engine configuration is refused.
    #[error(transparent)]
    Engine(#[from] engine::ConfigError),
    /// A journal record of the log does not decode.
    #[error("log record {sequence} does not decode: {reason}")]
    BadRecord {
        /// Sequence.
        sequence: u64,
        /// Decoder error.
        reason: String,
    },
    /// A thread could not start.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The start snapshot (`--snapshot`) does not restore.
    #[error(transparent)]
    Snapshot(#[from] crate::log_replica::LogReplicaError),
}

/// The gateway's follower at the end of the log, before serving: the engine (the views are
/// seeded from it) and the log position ([`LogPosition`]), handed back to [`GatewayCore::start`].
pub struct CaughtUp {
    /// The engine at `last_sequence`.
    pub engine: Engine,
    /// Last authoritative sequence applied.
    pub last_sequence: u64,
    /// Where following resumes.
    pub position: LogPosition,
}

/// Where a caught-up gateway resumes following the log.
pub struct LogPosition {
    follower: LogFollower,
}

/// The engine of a follower, with the origin routing of this gateway.
struct Follower {
    engine: Engine,
    last_sequence: u64,
    events: Vec<Event>,
}

impl Follower {
    /// Applies one authoritative record; returns the gateway tag of a command (and its events in
    /// `self.events`). A command the start snapshot covers (read when its recorded log position
    /// did not match the topic and the follower started from the first record) is skipped.
    fn apply(&mut self, followed: Followed<'_>) -> Result<Option<Option<GatewayTag>>, GatewayError> {
        let Followed::Command(record) = followed else { return Ok(None) };
        if record.sequence <= self.last_sequence {
            return Ok(None);
        }
        let (command, gateway) = codec::decode_journaled(record.payload)
            .map_err(|e| GatewayError::BadRecord { sequence: record.sequence, reason: e.to_string() })?;
        self.events.clear();
        let context = CommandContext::new(record.sequence, record.timestamp_ns).with_gateway(gateway);
        self.engine.execute(context, &command, &mut self.events);
        self.last_sequence = record.sequence;
        Ok(Some(gateway))
    }
}

fn require_cluster(config: &Config) -> Result<(), GatewayError> {
    if config.cluster.brokers.is_empty() {
        return Err(GatewayError::Config(
            "a gateway process needs [cluster] brokers (or --cluster-brokers / EXCHANGE_CLUSTER_BROKERS)".into(),
        ));
    }
    if config.cluster.gateway_id == 0 {
        return Err(GatewayError::Config(
            "a gateway process needs a non-zero [cluster] gateway_id (or --gateway-id), unique among gateways".into(),
        ));
    }
    Ok(())
}

/// Follows the journal topic to its current end: from its first record with a fresh engine, or,
/// given `snapshot` (a snapshot file or directory, e.g. a standby's `data/snapshots`), from the
/// engine restored from it and the journal topic position recorded beside it, exactly as a
/// journal-following replica starts ([`crate::log_replica::load_snapshot_with_position`],
/// [`LogFollower::open_from`]): only the records after the snapshot are read. The views the
/// server seeds from the returned engine (books, balances, open orders per user) are then those
/// of the snapshot's state plus the tail.
///
/// # Errors
/// Configuration, a snapshot that does not restore, broker, corrupt log.
pub fn catch_up(
    config: &Config,
    engine_config: &EngineConfig,
    snapshot: Option<&Path>,
) -> Result<CaughtUp, GatewayError> {
    require_cluster(config)?;
    let cluster = &config.cluster;
    let started = Instant::now();
    let (engine, at, mut follower) = match snapshot {
        Some(path) => {
            let (engine, at, position) = crate::log_replica::load_snapshot_with_position(engine_config, path)?;
            (
                engine,
                at,
                LogFollower::open_from(&cluster.brokers, &cluster.journal_topic, cluster.replication, position)?,
            )
        }
        // No snapshot given: the newest usable one of the snapshot topic, else the first record.
        None => {
            match SnapshotTopic::of(cluster).map(|topic| follow_from_published(&topic, engine_config)).transpose()? {
                Some(Some(published)) => (published.engine, published.sequence, published.follower),
                _ => (
                    Engine::new(engine_config)?,
                    0,
                    LogFollower::open(&cluster.brokers, &cluster.journal_topic, cluster.replication)?,
                ),
            }
        }
    };
    let start_offset = follower.next_offset();
    tracing::info!(
        offset = start_offset,
        sequence = at,
        "gateway following the journal topic from offset {start_offset} (state at sequence {at})"
    );
    let mut state = Follower { engine, last_sequence: at, events: Vec::with_capacity(1024) };
    let end = follower.end_offset()?;
    follower.read_until::<GatewayError, _>(end, CATCH_UP_TIMEOUT, &mut |followed| state.apply(followed).map(drop))?;
    tracing::info!(
        sequence = state.last_sequence,
        log_end = end,
        start_offset,
        records_read = follower.records_read(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "gateway caught up with the log"
    );
    Ok(CaughtUp { engine: state.engine, last_sequence: state.last_sequence, position: LogPosition { follower } })
}

/// The running gateway process's core: what the server wires its handlers to, in place of the
/// engine runtime ([`crate::runtime::Runtime`] has the same fields).
pub struct GatewayCore {
    /// The handlers push commands here (forwarded to the commands topic).
    pub ring: Arc<IngressRing>,
    /// The events of the log's commands, with this gateway's origins on its own commands.
    pub egress: Arc<BroadcastRing>,
    /// Reads of the follower engine's state (served between polls).
    pub reads: Arc<EngineReads>,
    /// Prometheus metrics (the engine-side histograms stay empty here).
    pub metrics: Arc<Metrics>,
    /// `last_sequence`: the log sequence applied here; `commands`: commands forwarded.
    pub stats: Arc<RuntimeStats>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<(), GatewayError>>>,
}

impl GatewayCore {
    /// Starts the forwarder and the follower threads from a caught-up follower.
    ///
    /// # Errors
    /// Broker, threads.
    pub fn start(config: &Config, caught_up: CaughtUp) -> Result<Self, GatewayError> {
        require_cluster(config)?;
        let cluster = &config.cluster;
        let gateway_id = cluster.gateway_id;
        let producer = CommandsProducer::open(
            &cluster.brokers,
            &cluster.commands_topic,
            cluster.commands_partitions,
            cluster.replication,
            gateway_id,
        )?;
        let now_ns = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let applied = caught_up.engine.gateway_sequence(gateway_id).unwrap_or(0);
        let first_sequence = now_ns.max(applied.saturating_add(1));
        tracing::info!(gateway_id, first_sequence, highest_applied = applied, "gateway sequence");
        let ring = Arc::new(IngressRing::new(config.engine.ring_capacity));
        let egress = BroadcastRing::new(config.engine.egress_capacity);
        let reads = Arc::new(EngineReads::default());
        let metrics = Arc::new(Metrics::default());
        let stats = Arc::new(RuntimeStats::default());
        stats.last_sequence.store(caught_up.last_sequence, Ordering::Release);
        stats.state_hash.store(caught_up.engine.state_hash(), Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        // Gateway sequence → origin of the session waiting for the command's events.
        let waiting: Arc<Mutex<HashMap<u64, u64>>> = Arc::new(Mutex::new(HashMap::new()));
        let forwarder = Forwarder {
            ring: ring.clone(),
            producer,
            gateway_id,
            next_sequence: first_sequence,
            waiting: waiting.clone(),
            stop: stop.clone(),
            stats: stats.clone(),
        };
        let CaughtUp { engine, last_sequence, position: LogPosition { follower } } = caught_up;
        let following = Following {
            state: Follower { engine, last_sequence, events: Vec::with_capacity(1024) },
            follower,
            gateway_id,
            waiting,
            egress: egress.clone(),
            reads: reads.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
        };
        let threads = vec![
            std::thread::Builder::new().name("gateway-forwarder".into()).spawn(move || forwarder.run())?,
            std::thread::Builder::new().name("gateway-follower".into()).spawn(move || following.run())?,
        ];
        Ok(Self { ring, egress, reads, metrics, stats, stop, threads })
    }

    /// Whether a thread has ended (only after [`Self::shutdown`], or on a failure).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().any(JoinHandle::is_finished)
    }

    /// Stops both threads (queued commands are flushed to the broker first).
    ///
    /// # Errors
    /// What stopped a thread.
    pub fn shutdown(self) -> Result<(), GatewayError> {
        self.stop.store(true, Ordering::Release);
        let mut result = Ok(());
        for thread in self.threads {
            let outcome =
                thread.join().unwrap_or_else(|_| Err(GatewayError::Config("a gateway thread panicked".into())));
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }
}

/// Takes the handlers' commands off the local ring and sends them to the commands topic.
struct Forwarder {
    ring: Arc<IngressRing>,
    producer: CommandsProducer,
    gateway_id: u64,
    next_sequence: u64,
    waiting: Arc<Mutex<HashMap<u64, u64>>>,
    stop: Arc<AtomicBool>,
    stats: Arc<RuntimeStats>,
}

impl Forwarder {
    fn run(mut self) -> Result<(), GatewayError> {
        let mut payload = [0u8; codec::origin::JOURNALED_BYTES_MAX];
        let mut idle = Idle::default();
        loop {
            let Some(item) = self.ring.pop() else {
                if self.stop.load(Ordering::Acquire) {
                    self.producer.flush(FLUSH_TIMEOUT);
                    return Ok(());
                }
                self.ring.idle(&mut idle, engine::doorbell::IdlePolicy::default());
                continue;
            };
            idle.reset();
            let tag = GatewayTag { gateway_id: self.gateway_id, gateway_sequence: self.next_sequence };
            self.next_sequence += 1;
            let length =
                codec::encode_journaled(&item.command, Some(tag), &mut payload).expect("buffer fits every command");
            // Registered before sending: the follower may read the command back before `send`
            // returns.
            self.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(tag.gateway_sequence, item.origin);
            if let Err(error) = self.producer.send(&payload[..length]) {
                self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&tag.gateway_sequence);
                tracing::error!(%error, "command not sent to the commands topic (its request times out)");
                continue;
            }
            self.stats.commands.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Follows the journal topic and publishes every command's events.
struct Following {
    state: Follower,
    follower: LogFollower,
    gateway_id: u64,
    waiting: Arc<Mutex<HashMap<u64, u64>>>,
    egress: Arc<BroadcastRing>,
    reads: Arc<EngineReads>,
    stats: Arc<RuntimeStats>,
    stop: Arc<AtomicBool>,
}

impl Following {
    fn run(mut self) -> Result<(), GatewayError> {
        while !self.stop.load(Ordering::Acquire) {
            let Self { state, follower, gateway_id, waiting, egress, .. } = &mut self;
            follower.poll::<GatewayError, _>(FOLLOW_POLL, &mut |followed| {
                let Some(gateway) = state.apply(followed)? else { return Ok(()) };
                let origin = match gateway {
                    Some(tag) if tag.gateway_id == *gateway_id => {
                        waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&tag.gateway_sequence).unwrap_or(0)
                    }
                    _ => 0,
                };
                egress.publish_command(origin, &state.events);
                Ok(())
            })?;
            self.stats.last_sequence.store(self.state.last_sequence, Ordering::Release);
            if self.reads.is_pending() {
                self.reads.serve(&self.state.engine, self.egress.head());
            }
        }
        Ok(())
    }
}

/// The user-directory writes a gateway process refuses: `(method, path)`. Each process numbers
/// new users from its own `users/users.log`, so a registration on a gateway could hand out a user
/// id another process also hands out (one person would trade on another's account).
const DIRECTORY_WRITES: [(&str, &str); 4] = [
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/account/keys"),
    ("DELETE", "/api/v1/account/keys"),
    ("POST", "/api/v1/admin/users"),
];

/// Wraps a gateway process's router so that the user-directory writes ([`DIRECTORY_WRITES`]) are
/// answered `403 FORBIDDEN` (`{code, message}`) instead of creating users or keys here.
pub fn refuse_directory_writes(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        |request: axum::extract::Request, next: axum::middleware::Next| async move {
            let (method, path) = (request.method().as_str(), request.uri().path());
            if DIRECTORY_WRITES.iter().any(|(m, p)| *m == method && *p == path) {
                use axum::response::IntoResponse;
                return gateway_json::ApiError {
                    status: axum::http::StatusCode::FORBIDDEN,
                    code: "FORBIDDEN",
                    message: "users and API keys are created on the primary, not on a gateway process \
                              (docs/deployment.md#gateway-processes-exchange-gateway)"
                        .into(),
                }
                .into_response();
            }
            next.run(request).await
        },
    ))
}
