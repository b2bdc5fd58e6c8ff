//! The hot standby (`exchange standby`) and the start of a replicated primary.
//!
//! A node in replicated mode (`exchange standby`, or `exchange run` with
//! `durability = "replicated"`) never trusts its local data directory: the local journal and
//! snapshots are a cache of the authoritative log, and a deposed primary's local journal may end
//! with a batch that was fenced (never in the log's order). So at start the node moves its
//! `journal` and `snapshots` aside (into `<data>/previous/`, replacing what an earlier start put
//! there) and rebuilds them by following the journal topic from its first record. That is the
//! simplest correct rule; its cost is a replay of the whole topic at every start (so the topic's
//! retention must keep every record, see docs/deployment-failover.md).
//!
//! Following: [`LogFollower`] yields the authoritative commands; each is appended to the local
//! journal (same sequence and timestamp, so the local journal is byte-for-byte the primary's)
//! and executed by this node's engine. Every `snapshot.every_commands` the standby writes a
//! snapshot (the primary then need not). A `checkpoint` record whose sequence is the one the
//! standby has just reached is compared with its own state hash; a difference is logged as an
//! error and counted ([`StandbyStatus::divergences`]).
//!
//! Promotion, when the lease ([`Lease`]) is assigned to this node: append an `epoch` marker (its
//! offset `M` is the new epoch), read the log up to and including `M` (whatever the old primary
//! appended before the marker is authoritative and applied), and hand the engine and journal to
//! the ordinary server with a [`TopicReplicator`] expecting its first batch at `M + 1`.

use super::lease::Lease;
use super::log::{ClusterError, Followed, JournalTopic, LogFollower};
use crate::config::Config;
use crate::runtime::{self, BatchReplicator, Recovered, ReplicationError, RuntimeError};
use codec::Event;
use engine::journal::{JournalError, JournalWriter};
use engine::{CommandContext, Engine, EngineConfig};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How long one follower poll waits for new records before the lease is looked at again.
const FOLLOW_POLL: Duration = Duration::from_millis(20);
/// How long a new primary may take to read the log up to its own epoch marker.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// Where the previous local data is moved at start, inside the data directory.
const PREVIOUS_DIR: &str = "previous";

/// Why a replicated node stopped.
#[derive(Debug, thiserror::Error)]
pub enum StandbyError {
    /// The cluster layer (broker, log).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The local journal or recovery.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The configuration lacks what a replicated node needs.
    #[error("{0}")]
    Config(String),
    /// Moving the old local data aside failed.
    #[error("cannot move {path} aside: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<JournalError> for StandbyError {
    fn from(error: JournalError) -> Self {
        Self::Runtime(error.into())
    }
}

/// What a standby reports (for `/metrics` and the status line).
#[derive(Debug, Default)]
pub struct StandbyStatus {
    /// Last authoritative sequence applied.
    pub applied_sequence: AtomicU64,
    /// Checkpoints whose state hash differed from this node's.
    pub divergences: AtomicU64,
    /// Checkpoints compared and found equal.
    pub checkpoints_matched: AtomicU64,
    /// Superseded batches ignored.
    pub superseded: AtomicU64,
}

/// A promoted node: what the server needs to serve as the replicated primary.
pub struct Promoted {
    /// The engine at the last authoritative sequence.
    pub recovered: Recovered,
    /// The local journal, continuing after it.
    pub writer: JournalWriter,
    /// Ships each batch to the journal topic under the new epoch.
    pub replicator: TopicReplicator,
    /// The lease (held; losing it exits the process once serving).
    pub lease: Lease,
}

/// The primary's side of the log: appends each batch under its epoch and checks that Kafka put
/// it right after the previous one (fencing).
pub struct TopicReplicator {
    topic: JournalTopic,
    epoch: i64,
    expected_offset: i64,
}

impl TopicReplicator {
    /// The epoch (offset of this primary's marker).
    pub fn epoch(&self) -> i64 {
        self.epoch
    }
}

impl BatchReplicator for TopicReplicator {
    fn replicate(&mut self, first_sequence: u64, last_sequence: u64, records: &[u8]) -> Result<(), ReplicationError> {
        let assigned = self
            .topic
            .append_batch(self.epoch, first_sequence, last_sequence, records)
            .map_err(|error| ReplicationError::Failed(error.to_string()))?;
        if assigned != self.expected_offset {
            return Err(ReplicationError::Fenced(
                ClusterError::Fenced { expected: self.expected_offset, assigned }.to_string(),
            ));
        }
        self.expected_offset += 1;
        Ok(())
    }
}

/// This node's copy of the log: engine + local journal.
struct LocalLog<'c> {
    config: &'c Config,
    engine: Engine,
    writer: JournalWriter,
    last_sequence: u64,
    events: Vec<Event>,
    since_snapshot: u64,
    status: Arc<StandbyStatus>,
}

impl LocalLog<'_> {
    fn apply(&mut self, followed: Followed<'_>) -> Result<(), StandbyError> {
        match followed {
            Followed::Command(record) => {
                let sequence = self.writer.append(record.timestamp_ns, record.payload)?;
                if sequence != record.sequence {
                    return Err(ClusterError::Corrupt {
                        offset: -1,
                        reason: format!("log sequence {} where the local journal is at {sequence}", record.sequence),
                    }
                    .into());
                }
                let (command, gateway) = codec::decode_journaled(record.payload)
                    .map_err(|e| RuntimeError::BadRecord { sequence, reason: e.to_string() })?;
                self.events.clear();
                let context = CommandContext::new(sequence, record.timestamp_ns).with_gateway(gateway);
                self.engine.execute(context, &command, &mut self.events);
                self.last_sequence = sequence;
                self.since_snapshot += 1;
            }
            Followed::Checkpoint { sequence, state_hash } => {
                if sequence == self.last_sequence {
                    let own = self.engine.state_hash();
                    if own == state_hash {
                        self.status.checkpoints_matched.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.status.divergences.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            sequence,
                            primary = format_args!("{state_hash:#018x}"),
                            standby = format_args!("{own:#018x}"),
                            "state hash diverges from the primary's checkpoint"
                        );
                    }
                }
            }
            Followed::Epoch { offset } => tracing::info!(epoch = offset, "new primary epoch in the log"),
        }
        Ok(())
    }

    /// Makes what was applied durable locally (a cache of the log: its durability setting is
    /// the journal's) and takes a snapshot when one is due.
    fn settle(&mut self) -> Result<(), StandbyError> {
        self.writer.commit()?;
        self.status.applied_sequence.store(self.last_sequence, Ordering::Release);
        let every = self.config.snapshot.every_commands;
        if every > 0 && self.since_snapshot >= every {
            let mut bytes = Vec::new();
            self.engine.write_snapshot(self.last_sequence, &mut bytes);
            match engine::snapshot::write_snapshot_file(&self.config.snapshot_dir(), self.last_sequence, &bytes) {
                Ok(_) if self.config.snapshot.prune_journal => {
                    runtime::prune(&self.config.snapshot_dir(), &self.config.journal_dir(), None)
                }
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "standby snapshot failed"),
            }
            self.since_snapshot = 0;
        }
        Ok(())
    }
}

/// Moves the local journal and snapshots into `<data>/previous/` (see the module
/// documentation).
fn set_local_data_aside(config: &Config) -> Result<(), StandbyError> {
    let previous = config.data_dir.join(PREVIOUS_DIR);
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| StandbyError::Io { path, source }
    };
    let journal = config.journal_dir();
    let snapshots = config.snapshot_dir();
    if !journal.exists() && !snapshots.exists() {
        return Ok(());
    }
    if previous.exists() {
        std::fs::remove_dir_all(&previous).map_err(io(&previous))?;
    }
    std::fs::create_dir_all(&previous).map_err(io(&previous))?;
    for dir in [journal, snapshots] {
        if let Some(name) = dir.file_name().filter(|_| dir.exists()) {
            std::fs::rename(&dir, previous.join(name)).map_err(io(&dir))?;
        }
    }
    tracing::info!(previous = %previous.display(), "local journal and snapshots set aside: rebuilding them from the log");
    Ok(())
}

/// Runs a replicated node until it holds the lease and has become the primary (or `stop` is
/// set: `None`): rebuild the local state from the log, follow it, and on getting the lease
/// append an epoch marker and catch up to it.
///
/// # Errors
/// Broker failures, a corrupt log, local journal failures.
pub fn follow_until_promoted(
    config: &Config,
    engine_config: &EngineConfig,
    stop: &AtomicBool,
    status: Arc<StandbyStatus>,
) -> Result<Option<Promoted>, StandbyError> {
    let cluster = &config.cluster;
    if cluster.brokers.is_empty() {
        return Err(StandbyError::Config(
            "a replicated node needs [cluster] brokers (or --cluster-brokers / EXCHANGE_CLUSTER_BROKERS)".into(),
        ));
    }
    set_local_data_aside(config)?;
    let mode = runtime::RecoveryMode { from_scratch: true, open_writer: true, accept_journal_loss: false };
    let (recovered, writer) = runtime::recover_with(config, engine_config, mode)?;
    let writer = writer.ok_or_else(|| StandbyError::Config("recovery did not open the journal".into()))?;
    let mut local = LocalLog {
        config,
        engine: recovered.engine,
        writer,
        last_sequence: recovered.last_sequence,
        events: Vec::with_capacity(1024),
        since_snapshot: 0,
        status: status.clone(),
    };
    let mut follower = LogFollower::open(&cluster.brokers, &cluster.journal_topic, cluster.replication)?;
    let lease = Lease::join(
        &cluster.brokers,
        &cluster.lease_topic,
        &cluster.lease_group,
        Duration::from_millis(cluster.session_timeout_ms),
        cluster.replication,
    )?;
    // Opened now, not at promotion: connecting and the idempotent producer's id request would
    // otherwise add to every failover.
    let topic = JournalTopic::open(
        &cluster.brokers,
        &cluster.journal_topic,
        cluster.replication,
        Duration::from_millis(cluster.delivery_timeout_ms),
    )?;
    tracing::info!(topic = %cluster.journal_topic, group = %cluster.lease_group, "standby following the log");
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        follower.poll(FOLLOW_POLL, &mut |followed| local.apply(followed))?;
        status.superseded.store(follower.superseded(), Ordering::Relaxed);
        // Committed per poll: the local journal is a cache, one write per fetch is plenty.
        local.settle()?;
        if lease.is_leader() {
            break;
        }
    }
    // Promotion.
    let lease_at = std::time::Instant::now();
    let epoch = topic.append_epoch(follower.highest_epoch_number() + 1)?;
    follower.read_until(epoch + 1, CATCH_UP_TIMEOUT, &mut |followed| local.apply(followed))?;
    local.settle()?;
    if follower.epoch() != epoch {
        return Err(ClusterError::Corrupt { offset: epoch, reason: "own epoch marker not read back".into() }.into());
    }
    tracing::info!(
        epoch,
        sequence = local.last_sequence,
        superseded = follower.superseded(),
        catch_up_ms = lease_at.elapsed().as_millis() as u64,
        "promoted: serving as primary"
    );
    let recovered = Recovered {
        engine: local.engine,
        last_sequence: local.last_sequence,
        snapshot: None,
        replayed: 0,
        torn_tail: None,
    };
    let replicator = TopicReplicator { topic, epoch, expected_offset: epoch + 1 };
    Ok(Some(Promoted { recovered, writer: local.writer, replicator, lease }))
}
