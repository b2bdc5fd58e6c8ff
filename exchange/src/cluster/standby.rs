//! The hot standby (`exchange standby`) and the start of a replicated primary.
//!
//! A node in replicated mode (`exchange standby`, or `exchange run` with
//! `durability = "replicated"`) never trusts its local data directory: the local journal and
//! snapshots are a cache of the authoritative log, and a deposed primary's local journal may end
//! with a batch that was fenced (never in the log's order). So at start the node moves its
//! `journal` and `snapshots` aside (into `<data>/previous/`, replacing what an earlier start put
//! there) and rebuilds them from the log. It starts from its own newest snapshot that it wrote
//! while following the log, with the journal topic position recorded beside it
//! ([`LogPosition`], [`resume_from_snapshot`]): only the records after it are read. Without one
//! (a primary's snapshots have none: its last local batch may have been fenced) it takes the
//! newest usable snapshot of the snapshot topic, which standbys publish
//! ([`super::snapshots`], [`fetch_published_snapshot`]), and with none there follows the topic
//! from its first record (the journal topic's retention rule: docs/deployment.md, "Journal
//! retention").
//!
//! Following: [`LogFollower`] yields the authoritative commands; each is appended to the local
//! journal (same sequence and timestamp, so the local journal is byte-for-byte the primary's)
//! and executed by this node's engine. Every `snapshot.every_commands` the standby writes a
//! snapshot (the primary then need not), and the follower's position beside it. Checkpoints: at every multiple of
//! `cluster.checkpoint_every` the primary's snapshotter (its shadow engine, off the engine
//! thread) hashes the state and the primary appends a `checkpoint` record after its next batch;
//! the standby hashes its own state at the same sequences and compares when the record arrives.
//! A difference (a determinism bug, or a corrupted node) is logged as an error and counted
//! ([`StandbyStatus::divergences`]).
//!
//! Promotion, when the lease ([`Lease`]) is assigned to this node: append an `epoch` marker (its
//! offset `M` is the new epoch), read the log up to and including `M` (whatever the old primary
//! appended before the marker is authoritative and applied), and hand the engine and journal to
//! the ordinary server with a [`TopicReplicator`] expecting its first batch at `M + 1`.
//!
//! What does not depend on the log's content is done before the node becomes a candidate, not
//! at promotion: its engine's reserved room is touched ([`Engine::prefault`]) and the runtime's
//! rings are allocated ([`Rings`]); together most of a second of every failover in an
//! unoptimised build. The phases of a promotion are timed ([`PromotionTimeline`]).

use super::lease::Lease;
use super::log::{ClusterError, Followed, JournalTopic, LogFollower, LogPosition, RecordKind};
use super::snapshots::{SnapshotPublishCounters, SnapshotPublisher, SnapshotTopic};
use crate::config::Config;
use crate::promotion::{PromotionPhase, PromotionTimeline};
use crate::runtime::{self, BatchReplicator, Recovered, ReplicationError, Rings, RuntimeError};
use engine::journal::{JournalError, JournalWriter, RecoveryOptions};
use engine::{CommandContext, Engine, EngineConfig, OrderBook};
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
    /// Records of the journal topic not read yet (its end offset as last asked, minus the next
    /// offset to read).
    pub lag_records: AtomicU64,
    /// Records of the journal topic read since this node started following (a start from a
    /// snapshot reads only the records after it).
    pub records_read: AtomicU64,
    /// The offset this node started reading the journal topic at (0: its first record).
    pub start_offset: AtomicU64,
    /// What its snapshot publisher did (the snapshot topic).
    pub snapshot_publish: Arc<SnapshotPublishCounters>,
}

impl StandbyStatus {
    /// The standby's Prometheus text (`/metrics` while it follows).
    pub fn render(&self) -> String {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut text = String::new();
        let mut family = |name: &str, kind: &str, help: &str, value: u64| {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
        };
        family("exchange_cluster_role", "gauge", "0: standby, 1: primary (replicated journal).", 0);
        family(
            "exchange_cluster_applied_sequence",
            "gauge",
            "Last authoritative sequence this standby applied.",
            load(&self.applied_sequence),
        );
        family("exchange_cluster_lag_records", "gauge", "Journal topic records not read yet.", load(&self.lag_records));
        family(
            "exchange_cluster_log_records_read_total",
            "counter",
            "Journal topic records read since this node started following.",
            load(&self.records_read),
        );
        family(
            "exchange_cluster_log_start_offset",
            "gauge",
            "Journal topic offset this node started reading at (after its start snapshot).",
            load(&self.start_offset),
        );
        family(
            "exchange_cluster_superseded_total",
            "counter",
            "Superseded batches (a deposed primary's writes) ignored.",
            load(&self.superseded),
        );
        family(
            "exchange_cluster_divergence_total",
            "counter",
            "Primary checkpoints whose state hash differed from this node's.",
            load(&self.divergences),
        );
        family(
            "exchange_cluster_checkpoints_matched_total",
            "counter",
            "Primary checkpoints whose state hash equalled this node's.",
            load(&self.checkpoints_matched),
        );
        text.push_str(&self.snapshot_publish.render());
        text
    }
}

/// How often the standby asks the broker for the log's end (for the lag gauge).
const LAG_REFRESH: Duration = Duration::from_secs(1);
/// How long the status listener sleeps when no connection is waiting.
const STATUS_ACCEPT_IDLE: Duration = Duration::from_millis(20);

/// Serves `/metrics` ([`StandbyStatus::render`]) and `/health` (503 `standby <sequence>`: a load
/// balancer must not send clients here) on `listen` until `stop`; the port is released when the
/// returned thread ends, before the promoted node binds it for the full server.
fn serve_status(
    listen: std::net::SocketAddr,
    status: Arc<StandbyStatus>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    tracing::info!(listen = %listener.local_addr()?, "standby status listening (/metrics, /health)");
    std::thread::Builder::new().name("standby-status".into()).spawn(move || {
        while !stop.load(Ordering::Acquire) {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(STATUS_ACCEPT_IDLE);
                continue;
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut request = [0u8; 1024];
            let read = stream.read(&mut request).unwrap_or(0);
            let request = String::from_utf8_lossy(&request[..read]);
            let (code, body) = if request.starts_with("GET /metrics") {
                ("200 OK", status.render())
            } else if request.starts_with("GET /health") {
                ("503 Service Unavailable", format!("standby {}\n", status.applied_sequence.load(Ordering::Relaxed)))
            } else {
                ("404 Not Found", "a standby serves /metrics and /health only\n".to_string())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {code}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })
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
    /// The runtime's rings, allocated while this node was a standby.
    pub rings: Rings,
    /// When each phase of the promotion was reached; the server marks
    /// [`PromotionPhase::Serving`], the replicator [`PromotionPhase::FirstCommit`].
    pub timeline: Arc<PromotionTimeline>,
}

/// The primary's side of the log: appends each batch under its epoch and checks that Kafka put
/// it right after the previous one (fencing).
pub struct TopicReplicator {
    topic: JournalTopic,
    epoch: i64,
    expected_offset: i64,
    checkpoint_every: u64,
    /// The promotion's timeline, until the first batch is committed under this epoch.
    first_commit: Option<Arc<PromotionTimeline>>,
}

impl TopicReplicator {
    /// The epoch (offset of this primary's marker).
    pub fn epoch(&self) -> i64 {
        self.epoch
    }
}

impl TopicReplicator {
    /// Appends one record with `append` and checks where Kafka put it (fencing, see the module
    /// documentation of [`super::log`]).
    fn append_checked(
        &mut self,
        append: impl FnOnce(&JournalTopic, i64) -> Result<i64, ClusterError>,
    ) -> Result<(), ReplicationError> {
        let failed = |error: ClusterError| ReplicationError::Failed(error.to_string());
        let assigned = append(&self.topic, self.epoch).map_err(failed)?;
        if assigned != self.expected_offset {
            // Someone else appended in between. Only another primary's epoch marker deposes
            // this one: a deposed primary's late batches (older epoch) are superseded for every
            // follower and leave this batch authoritative (they do not advance the sequence).
            let between = self.topic.kinds_between(self.expected_offset, assigned).map_err(failed)?;
            let deposing = between.iter().find(|(_, kind)| match kind {
                RecordKind::Batch { epoch, .. } => *epoch >= self.epoch,
                RecordKind::Epoch { .. } => true,
                RecordKind::Checkpoint { .. } => false,
            });
            if let Some((offset, kind)) = deposing {
                return Err(ReplicationError::Fenced(format!(
                    "{} ({kind:?} at offset {offset})",
                    ClusterError::Fenced { expected: self.expected_offset, assigned }
                )));
            }
            tracing::warn!(
                expected = self.expected_offset,
                assigned,
                superseded = between.len(),
                "a deposed primary's late writes landed before this batch; they are superseded, this primary goes on"
            );
        }
        self.expected_offset = assigned + 1;
        Ok(())
    }
}

impl BatchReplicator for TopicReplicator {
    fn replicate(&mut self, first_sequence: u64, last_sequence: u64, records: &[u8]) -> Result<(), ReplicationError> {
        self.append_checked(|topic, epoch| topic.append_batch(epoch, first_sequence, last_sequence, records))?;
        if let Some(timeline) = self.first_commit.take() {
            timeline.mark(PromotionPhase::FirstCommit);
        }
        Ok(())
    }

    fn checkpoint_every(&self) -> u64 {
        self.checkpoint_every
    }

    fn checkpoint(&mut self, sequence: u64, state_hash: u64) -> Result<(), ReplicationError> {
        self.append_checked(|topic, _| topic.append_checkpoint(sequence, state_hash))
    }
}

/// This node's copy of the log: engine + local journal.
struct LocalLog<'c> {
    config: &'c Config,
    engine: Engine,
    writer: JournalWriter,
    last_sequence: u64,
    since_snapshot: u64,
    status: Arc<StandbyStatus>,
    /// `cluster.checkpoint_every`: own state hashes are kept at its multiples.
    checkpoint_every: u64,
    /// (sequence, own state hash) at the most recent checkpoint sequences, oldest first.
    own_hashes: std::collections::VecDeque<(u64, u64)>,
    /// Publishes each snapshot with a position to the snapshot topic (`None`: not configured).
    publisher: Option<SnapshotPublisher>,
}

/// Own state hashes a standby keeps for the primary's checkpoints still to come: a checkpoint
/// arrives a few batches after its sequence.
const OWN_HASHES_KEPT: usize = 16;

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
                // State only: a standby publishes nothing until it is promoted (and then runs a
                // live engine of its own), so its copy's events would be dropped unread.
                let context = CommandContext::new(sequence, record.timestamp_ns).with_gateway(gateway);
                self.engine.execute_without_events(context, &command);
                self.last_sequence = sequence;
                self.since_snapshot += 1;
                if self.checkpoint_every > 0 && sequence % self.checkpoint_every == 0 {
                    if self.own_hashes.len() == OWN_HASHES_KEPT {
                        self.own_hashes.pop_front();
                    }
                    self.own_hashes.push_back((sequence, self.engine.state_hash()));
                }
            }
            Followed::Checkpoint { sequence, state_hash } => {
                if let Some(&(_, own)) = self.own_hashes.iter().find(|(at, _)| *at == sequence) {
                    if own == state_hash {
                        tracing::info!(sequence, "checkpoint: state hash equals the primary's");
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
    /// the journal's) and takes a snapshot when one is due, recording the follower's `position`
    /// beside it (a later start resumes there, see [`resume_from_snapshot`]).
    fn settle(&mut self, position: LogPosition) -> Result<(), StandbyError> {
        self.writer.commit()?;
        self.status.applied_sequence.store(self.last_sequence, Ordering::Release);
        let every = self.config.snapshot.every_commands;
        if every > 0 && self.since_snapshot >= every {
            let mut bytes = Vec::new();
            self.engine.write_snapshot(self.last_sequence, &mut bytes);
            match engine::snapshot::write_snapshot_file(&self.config.snapshot_dir(), self.last_sequence, &bytes) {
                Ok(file) => {
                    // The position must describe exactly this state; it does after a whole poll
                    // (a batch is applied whole), and a snapshot without one is only slower to
                    // resume from.
                    if position.next_sequence == self.last_sequence + 1 {
                        if let Err(error) = position.write_for(&file) {
                            tracing::warn!(%error, "standby snapshot's log position not written");
                        }
                        // Handed to the publisher's thread: this loop never waits for Kafka.
                        if let Some(publisher) = &self.publisher {
                            publisher.publish(self.last_sequence, position, bytes);
                        }
                    }
                    if self.config.snapshot.prune_journal {
                        runtime::prune(&self.config.snapshot_dir(), &self.config.journal_dir(), None);
                        remove_orphan_positions(&self.config.snapshot_dir());
                    }
                }
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

/// A node's own snapshot to resume from, set aside at start: the newest in
/// `<data>/previous/snapshots` that has a log position recorded beside it. Only snapshots a node
/// wrote while following the log have one ([`LocalLog::settle`]): every command they cover came
/// from the log in its authoritative order. A primary's snapshots have none (its last local batch
/// may have been fenced, never in the log), so they are never resumed from.
///
/// The snapshot (and its position) is copied into the fresh snapshot directory, the engine
/// restored from it, the local journal opened to continue after its sequence, and a follower
/// opened at the position (checked against the topic, [`LogFollower::open_at`]). Anything that
/// does not fit (no such snapshot, it does not restore, the position does not match the topic)
/// falls back to a rebuild from the first record: `None`, with the fresh directories empty again.
fn resume_from_snapshot(
    config: &Config,
    engine_config: &EngineConfig,
) -> Result<Option<(Recovered, Option<JournalWriter>, LogFollower)>, StandbyError> {
    let cluster = &config.cluster;
    let aside = config.data_dir.join(PREVIOUS_DIR).join(config.snapshot_dir().file_name().unwrap_or_default());
    let candidates = engine::snapshot::list_snapshots(&aside).unwrap_or_default();
    let Some((sequence, file, position)) = candidates.into_iter().find_map(|(sequence, file)| {
        let position = LogPosition::read_for(&file)?;
        (position.next_sequence == sequence + 1).then_some((sequence, file, position))
    }) else {
        return Ok(None);
    };
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| StandbyError::Io { path, source }
    };
    let snapshots = config.snapshot_dir();
    std::fs::create_dir_all(&snapshots).map_err(io(&snapshots))?;
    let copy = snapshots.join(file.file_name().unwrap_or_default());
    std::fs::copy(&file, &copy).map_err(io(&copy))?;
    let resumed = (|| -> Result<_, StandbyError> {
        let unusable = |reason: String| StandbyError::Config(format!("snapshot {}: {reason}", file.display()));
        let bytes = std::fs::read(&copy).map_err(io(&copy))?;
        let (engine, at) = Engine::restore_snapshot(engine_config, OrderBook::with_capacity_unfaulted, &bytes)
            .map_err(|e| unusable(e.to_string()))?;
        if at != sequence {
            return Err(unusable(format!("restores to sequence {at}")));
        }
        // The local journal starts right after the snapshot: the log holds what precedes it
        // (the layout a pruned journal has). Nothing is lost, so the "loss" the journal sees
        // (it begins at `sequence + 1`) is accepted silently.
        let options = RecoveryOptions { after: sequence, accept_loss: true, ..RecoveryOptions::default() };
        let (writer, _) = JournalWriter::open_with(&config.journal_dir(), config.journal_config(), &options)?;
        let follower = LogFollower::open_at(&cluster.brokers, &cluster.journal_topic, cluster.replication, position)?;
        let recovered = Recovered {
            engine,
            last_sequence: sequence,
            snapshot: Some((sequence, copy.clone())),
            replayed: 0,
            torn_tail: None,
            prefaulted: false,
        };
        Ok((recovered, Some(writer), follower))
    })();
    match resumed {
        Ok(resumed) => {
            // Kept with the copy, so this snapshot can be resumed from again.
            if let Err(error) = position.write_for(&copy) {
                tracing::warn!(%error, "log position of the resumed snapshot not copied");
            }
            tracing::info!(sequence, offset = position.offset, "resuming from own snapshot");
            Ok(Some(resumed))
        }
        // A broker that does not answer is not a reason to read the whole log instead.
        Err(StandbyError::Cluster(ClusterError::Kafka(reason))) => Err(ClusterError::Kafka(reason).into()),
        Err(error) => {
            tracing::warn!(%error, sequence, "own snapshot not usable: rebuilding from the first record of the log");
            for dir in [config.journal_dir(), snapshots] {
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
                }
            }
            Ok(None)
        }
    }
}

/// A node with no snapshot of its own to resume from (none with a log position among those set
/// aside) takes the newest usable snapshot of the snapshot topic
/// ([`super::snapshots::read_published`]): it is written, with its position, where
/// [`resume_from_snapshot`] looks for the node's own, which then resumes from it exactly as from
/// its own (checked against the topic; a mismatch rebuilds from the first record).
fn fetch_published_snapshot(config: &Config, topic: &SnapshotTopic) -> Result<(), StandbyError> {
    let aside = config.data_dir.join(PREVIOUS_DIR).join(config.snapshot_dir().file_name().unwrap_or_default());
    let own = engine::snapshot::list_snapshots(&aside).unwrap_or_default();
    if own.iter().any(|(_, file)| LogPosition::read_for(file).is_some()) {
        return Ok(());
    }
    let Some(newest) = super::snapshots::read_published(topic)?.into_iter().next() else {
        tracing::warn!(
            topic = topic.topic,
            "no local snapshot and none in the snapshot topic: reading the journal topic from its first record"
        );
        return Ok(());
    };
    let file = engine::snapshot::write_snapshot_file(&aside, newest.sequence, &newest.bytes)
        .map_err(|e| StandbyError::Config(format!("writing the snapshot topic's snapshot: {e}")))?;
    newest.position.write_for(&file).map_err(|source| StandbyError::Io { path: file.display().to_string(), source })?;
    tracing::info!(
        sequence = newest.sequence,
        offset = newest.position.offset,
        "no local snapshot: took the snapshot topic's snapshot at sequence {}",
        newest.sequence
    );
    Ok(())
}

/// Removes position files whose snapshot was pruned.
fn remove_orphan_positions(snapshots: &Path) {
    let Ok(entries) = std::fs::read_dir(snapshots) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(snapshot) = path.to_str().and_then(|p| p.strip_suffix(super::log::POSITION_SUFFIX)) else { continue };
        if !Path::new(snapshot).exists() {
            let _ = std::fs::remove_file(&path);
        }
    }
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
    let snapshot_topic = SnapshotTopic::of(cluster);
    if let Some(topic) = &snapshot_topic {
        fetch_published_snapshot(config, topic)?;
    }
    let (recovered, writer, mut follower) = match resume_from_snapshot(config, engine_config)? {
        Some(resumed) => resumed,
        None => {
            let mode = runtime::RecoveryMode { from_scratch: true, open_writer: true, accept_journal_loss: false };
            let (recovered, writer) = runtime::recover_with(config, engine_config, mode)?;
            let follower = LogFollower::open(&cluster.brokers, &cluster.journal_topic, cluster.replication)?;
            (recovered, writer, follower)
        }
    };
    let writer = writer.ok_or_else(|| StandbyError::Config("recovery did not open the journal".into()))?;
    status.start_offset.store(u64::try_from(follower.next_offset()).unwrap_or(0), Ordering::Relaxed);
    tracing::info!(
        offset = follower.next_offset(),
        sequence = recovered.last_sequence,
        "following the journal topic from offset {} (state at sequence {})",
        follower.next_offset(),
        recovered.last_sequence
    );
    // What a promotion would otherwise pay for, done before this node becomes a candidate:
    // touching the engine's reserved room and allocating the runtime's rings (together most
    // of a second in an unoptimised build, tens of ms optimised).
    let mut engine = recovered.engine;
    engine.prefault();
    let rings = Rings::allocate(config);
    let mut local = LocalLog {
        config,
        engine,
        writer,
        last_sequence: recovered.last_sequence,
        since_snapshot: 0,
        status: status.clone(),
        checkpoint_every: cluster.checkpoint_every,
        own_hashes: std::collections::VecDeque::with_capacity(OWN_HASHES_KEPT),
        publisher: snapshot_topic
            .filter(|_| config.snapshot.every_commands > 0)
            .map(|topic| SnapshotPublisher::start(topic, status.snapshot_publish.clone()))
            .transpose()?,
    };
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
    let status_stop = Arc::new(AtomicBool::new(false));
    let status_thread = serve_status(config.http.listen, status.clone(), status_stop.clone())
        .map_err(|source| StandbyError::Io { path: format!("status listener {}", config.http.listen), source })?;
    // The status listener ends (and frees the HTTP port) however this function returns.
    struct StopOnDrop(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
            if let Some(thread) = self.1.take() {
                let _ = thread.join();
            }
        }
    }
    let status_listener = StopOnDrop(status_stop, Some(status_thread));
    tracing::info!(topic = %cluster.journal_topic, group = %cluster.lease_group, "standby following the log");
    let mut lag_asked = std::time::Instant::now() - LAG_REFRESH;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if lag_asked.elapsed() >= LAG_REFRESH {
            lag_asked = std::time::Instant::now();
            match follower.end_offset() {
                Ok(end) => status.lag_records.store((end - follower.next_offset()).max(0) as u64, Ordering::Relaxed),
                Err(error) => tracing::warn!(%error, "cannot read the journal topic's end offset"),
            }
        }
        follower.poll(FOLLOW_POLL, &mut |followed| local.apply(followed))?;
        status.superseded.store(follower.superseded(), Ordering::Relaxed);
        status.records_read.store(follower.records_read(), Ordering::Relaxed);
        // Committed per poll: the local journal is a cache, one write per fetch is plenty.
        local.settle(follower.position())?;
        if lease.is_leader() {
            break;
        }
    }
    // Promotion: the full server takes the HTTP port.
    let timeline = Arc::new(PromotionTimeline::default());
    timeline
        .mark_at(PromotionPhase::LeaseAcquired, lease.acquired_unix_us().unwrap_or_else(crate::promotion::unix_us_now));
    drop(status_listener);
    let epoch = topic.append_epoch(follower.highest_epoch_number() + 1)?;
    timeline.mark(PromotionPhase::EpochAppended);
    follower.read_until(epoch + 1, CATCH_UP_TIMEOUT, &mut |followed| local.apply(followed))?;
    local.settle(follower.position())?;
    if follower.epoch() != epoch {
        return Err(ClusterError::Corrupt { offset: epoch, reason: "own epoch marker not read back".into() }.into());
    }
    timeline.mark(PromotionPhase::CaughtUp);
    tracing::info!(
        epoch,
        sequence = local.last_sequence,
        superseded = follower.superseded(),
        "promoted: serving as primary"
    );
    // Closing a Kafka consumer waits for its broker threads (about 100 ms): not on the way to
    // serving.
    std::thread::spawn(move || drop(follower));
    let recovered = Recovered {
        engine: local.engine,
        last_sequence: local.last_sequence,
        snapshot: None,
        replayed: 0,
        torn_tail: None,
        prefaulted: true,
    };
    let replicator = TopicReplicator {
        topic,
        epoch,
        expected_offset: epoch + 1,
        checkpoint_every: cluster.checkpoint_every,
        first_commit: Some(timeline.clone()),
    };
    Ok(Some(Promoted { recovered, writer: local.writer, replicator, lease, rings, timeline }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::log::test_records as records;

    /// On a real broker (tansu): a primary whose batch lands after a deposed primary's late
    /// write goes on (that write is superseded), and is fenced by a newer primary's marker.
    #[test]
    fn a_primary_is_fenced_by_a_newer_marker_not_by_a_deposed_primarys_late_write() {
        let Ok(brokers) = std::env::var("EXCHANGE_TEST_KAFKA_BROKERS") else {
            eprintln!("SKIPPED: EXCHANGE_TEST_KAFKA_BROKERS not set (source scripts/services)");
            assert!(std::env::var("EXCHANGE_REQUIRE_SERVICES").is_err(), "services required");
            return;
        };
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let topic = format!("fence-test-{}-{nanos}", std::process::id());
        let dir = std::env::temp_dir().join(format!("cluster-fence-test-{}", std::process::id()));
        let open = || JournalTopic::open(&brokers, &topic, 1, Duration::from_secs(10)).unwrap();
        let (old, new, newest) = (open(), open(), open());
        let old_epoch = old.append_epoch(1).unwrap();
        let epoch = new.append_epoch(2).unwrap();
        let mut primary =
            TopicReplicator { topic: new, epoch, expected_offset: epoch + 1, checkpoint_every: 0, first_commit: None };
        primary.replicate(1, 2, &records(&dir, 1, 2)).unwrap();
        // The deposed primary, unaware, appends its next batch.
        old.append_batch(old_epoch, 1, 1, &records(&dir, 1, 1)).unwrap();
        primary.replicate(3, 3, &records(&dir, 3, 1)).expect("a superseded write does not depose");
        primary.replicate(4, 4, &records(&dir, 4, 1)).unwrap();
        newest.append_epoch(3).unwrap();
        let error = primary.replicate(5, 5, &records(&dir, 5, 1)).unwrap_err();
        assert!(matches!(error, ReplicationError::Fenced(_)), "{error}");
        // And every follower sees 1..=4 from this primary, nothing of the late write.
        let mut follower = LogFollower::open(&brokers, &topic, 1).unwrap();
        let mut seen = Vec::new();
        follower
            .read_until::<ClusterError, _>(primary.expected_offset + 1, Duration::from_secs(10), &mut |followed| {
                if let Followed::Command(record) = followed {
                    seen.push(record.sequence);
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, [1, 2, 3, 4]);
        assert_eq!(follower.superseded(), 2, "the late write and the fenced batch");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
