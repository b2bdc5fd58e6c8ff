//! Snapshots distributed through Kafka: the snapshot topic (`[cluster] snapshot_topic`, default
//! `exchange.snapshots`, one partition).
//!
//! A standby writes a snapshot of its engine every `snapshot.every_commands` commands, with the
//! journal topic position it stands at ([`LogPosition`]). It also hands each one to a
//! [`SnapshotPublisher`], whose own thread publishes it to the snapshot topic, so a node with no
//! local snapshot (a fresh standby, a gateway process started without `--snapshot`, a
//! journal-following replica without `--snapshot`, on any machine) starts from it and reads only
//! the tail of the journal topic: the journal topic needs no infinite retention
//! (docs/deployment.md, "Topics").
//!
//! # Records
//! A snapshot file is cut into chunks of at most [`SNAPSHOT_CHUNK_BYTES`] (Kafka's default
//! record limit is about 1 MB), one record each, in order. Headers (ASCII):
//!
//! | header | value |
//! |---|---|
//! | `kind` | `snapshot-chunk` |
//! | `snapshot-id` | unique per publication (publisher's process id and start time): the set a chunk belongs to |
//! | `journal-topic` | the journal topic the snapshot's position is in (a reader ignores other topics' snapshots) |
//! | `sequence` | the snapshot's sequence `S` |
//! | `log-position` | the journal topic position after `S` ([`LogPosition::to_text`]) |
//! | `chunk`, `chunks` | this chunk's index (from 0) and the set's chunk count |
//! | `length` | the snapshot file's total length in bytes |
//! | `checksum` | the snapshot's own CRC32C (its last four bytes, hex; [`engine::snapshot::recorded_checksum`]) |
//!
//! # Reading
//! A reader reads the whole topic (its retention keeps a few snapshots) and reassembles the sets
//! ([`SnapshotAssembler`]): a set is usable when every chunk arrived exactly once with the same
//! set headers, the bytes have the recorded length and the snapshot's own checksum verifies.
//! Incomplete sets (a publisher that died, a set whose first chunks retention deleted) and
//! corrupt ones (a chunk missing, duplicated, damaged) are skipped; the newest usable set is
//! taken, an older one if the newest does not restore or its position does not match the
//! journal topic ([`follow_from_published`]); with none, the caller reads the journal topic from
//! its first record (a warning).
//!
//! # Why `cleanup.policy=delete`, not compaction
//! A compacted topic keyed by chunk index keeps the latest record per index: a newer snapshot
//! with fewer chunks leaves the older one's higher chunks behind, a set is half-replaced while
//! the cleaner runs, and the uncompacted head holds several sets anyway; it also never bounds
//! the topic's size by age. With time-based deletion whole recent sets stay in publication
//! order, a set cut at the retention boundary is merely incomplete (skipped), and a reader reads
//! at most the retention's worth of snapshots.

use super::log::{ClusterError, LogFollower, LogPosition, PARTITION, client_config, create_topic};
use crate::config::ClusterSection;
use engine::{Engine, EngineConfig, OrderBook};
use sinks::rdkafka;
use sinks::rdkafka::Message;
use sinks::rdkafka::admin::{NewTopic, TopicReplication};
use sinks::rdkafka::consumer::{BaseConsumer, Consumer};
use sinks::rdkafka::error::KafkaError;
use sinks::rdkafka::message::{Header, Headers, OwnedHeaders};
use sinks::rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Largest value of one snapshot-topic record: under Kafka's default record limit (about 1 MB,
/// `message.max.bytes` / `max.message.bytes`) with room for the headers.
pub const SNAPSHOT_CHUNK_BYTES: usize = 512 * 1024;
/// Most chunks one set may declare (32 GiB at [`SNAPSHOT_CHUNK_BYTES`]): bounds what a reader
/// allocates for a set's headers before its chunks arrive.
pub const SNAPSHOT_CHUNKS_MAX: u32 = 65_536;
/// Usable sets a reader keeps while reading the topic (the newest ones): the fallbacks if the
/// newest does not restore.
const USABLE_SETS_KEPT: usize = 3;
/// Sets a reader assembles at once (publications interleave only when several standbys
/// publish); beyond it the set whose first chunk came earliest is dropped.
const SETS_IN_PROGRESS_MAX: usize = 8;
/// How long reading the snapshot topic to its end may take.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the broker may take to accept one chunk.
const CHUNK_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Snapshots waiting for the publisher thread: one. A snapshot taken while the previous one is
/// still being published is not published (counted); the next one is.
const PUBLISH_QUEUE: usize = 1;
/// The `kind` header of a snapshot chunk.
const CHUNK_KIND: &str = "snapshot-chunk";
/// Header names, in [`ChunkHeader::parse`]'s order.
const HEADER_NAMES: [&str; 9] =
    ["kind", "snapshot-id", "journal-topic", "sequence", "log-position", "chunk", "chunks", "length", "checksum"];

fn kafka(error: impl std::fmt::Display) -> ClusterError {
    ClusterError::Kafka(error.to_string())
}

/// Where snapshots are published and read: `[cluster] snapshot_topic` beside the journal topic
/// their positions refer to.
#[derive(Debug, Clone)]
pub struct SnapshotTopic {
    /// Bootstrap brokers.
    pub brokers: String,
    /// The snapshot topic.
    pub topic: String,
    /// The journal topic the snapshots' positions are in.
    pub journal_topic: String,
    /// Replication factor should this node create the topics.
    pub replication: i32,
    /// `retention.ms` of the snapshot topic should this node create it.
    pub retention_ms: u64,
}

impl SnapshotTopic {
    /// The snapshot topic of `cluster`; `None` when `snapshot_topic` is empty (distribution off)
    /// or there are no brokers.
    pub fn of(cluster: &ClusterSection) -> Option<Self> {
        (!cluster.snapshot_topic.is_empty() && !cluster.brokers.is_empty()).then(|| Self {
            brokers: cluster.brokers.clone(),
            topic: cluster.snapshot_topic.clone(),
            journal_topic: cluster.journal_topic.clone(),
            replication: cluster.replication,
            retention_ms: cluster.snapshot_retention_ms,
        })
    }

    /// Creates the topic (one partition, `cleanup.policy=delete`, the configured retention)
    /// unless it exists.
    fn ensure(&self) -> Result<(), ClusterError> {
        let retention = self.retention_ms.to_string();
        let new_topic = NewTopic::new(&self.topic, 1, TopicReplication::Fixed(self.replication))
            .set("cleanup.policy", "delete")
            .set("retention.ms", &retention);
        create_topic(&self.brokers, &new_topic)
    }
}

/// The set headers of one chunk (everything but the chunk index is the same for every chunk of
/// a set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The publication this chunk belongs to.
    pub snapshot_id: String,
    /// The journal topic the position is in.
    pub journal_topic: String,
    /// The snapshot's sequence.
    pub sequence: u64,
    /// The journal topic position after `sequence`.
    pub position: LogPosition,
    /// This chunk's index (from 0).
    pub chunk: u32,
    /// Chunks in the set.
    pub chunks: u32,
    /// The snapshot's total length in bytes.
    pub length: u64,
    /// The snapshot's own CRC32C.
    pub checksum: u32,
}

impl ChunkHeader {
    /// Reads a record's headers; `Ok(None)` for a record that is not a snapshot chunk.
    fn parse<H: Headers>(headers: Option<&H>) -> Result<Option<Self>, String> {
        let mut fields: [Option<&str>; HEADER_NAMES.len()] = [None; HEADER_NAMES.len()];
        if let Some(headers) = headers {
            for header in headers.iter() {
                if let Some(index) = HEADER_NAMES.iter().position(|name| *name == header.key) {
                    fields[index] = header.value.and_then(|v| std::str::from_utf8(v).ok());
                }
            }
        }
        if fields[0] != Some(CHUNK_KIND) {
            return Ok(None);
        }
        let text = |index: usize| fields[index].ok_or_else(|| format!("no {} header", HEADER_NAMES[index]));
        let number = |index: usize| -> Result<u64, String> {
            text(index)?.parse().map_err(|e| format!("{} header: {e}", HEADER_NAMES[index]))
        };
        let small = |index: usize| -> Result<u32, String> {
            u32::try_from(number(index)?).map_err(|e| format!("{} header: {e}", HEADER_NAMES[index]))
        };
        Ok(Some(Self {
            snapshot_id: text(1)?.to_string(),
            journal_topic: text(2)?.to_string(),
            sequence: number(3)?,
            position: LogPosition::parse(text(4)?)?,
            chunk: small(5)?,
            chunks: small(6)?,
            length: number(7)?,
            checksum: u32::from_str_radix(text(8)?, 16).map_err(|e| format!("checksum header: {e}"))?,
        }))
    }

    /// The headers of this chunk.
    fn to_headers(&self) -> OwnedHeaders {
        let values = [
            CHUNK_KIND.to_string(),
            self.snapshot_id.clone(),
            self.journal_topic.clone(),
            self.sequence.to_string(),
            self.position.to_text().trim().to_string(),
            self.chunk.to_string(),
            self.chunks.to_string(),
            self.length.to_string(),
            format!("{:08x}", self.checksum),
        ];
        let mut headers = OwnedHeaders::new_with_capacity(HEADER_NAMES.len());
        for (key, value) in HEADER_NAMES.iter().zip(&values) {
            headers = headers.insert(Header { key, value: Some(value.as_str()) });
        }
        headers
    }

    /// Whether `other` belongs to the same set with the same set headers.
    fn same_set(&self, other: &Self) -> bool {
        (&self.journal_topic, self.sequence, self.position, self.chunks, self.length, self.checksum)
            == (&other.journal_topic, other.sequence, other.position, other.chunks, other.length, other.checksum)
    }
}

/// A complete snapshot read back from the topic: its bytes verified against the recorded length
/// and the snapshot's own checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedSnapshot {
    /// The snapshot's sequence.
    pub sequence: u64,
    /// The journal topic position after it.
    pub position: LogPosition,
    /// The snapshot file's bytes.
    pub bytes: Vec<u8>,
}

/// One set being assembled.
struct Assembly {
    header: ChunkHeader,
    chunks: Vec<Option<Vec<u8>>>,
    received: u32,
    /// Why the set is unusable (then its chunks are dropped and later ones ignored).
    broken: Option<String>,
    /// Order of its first chunk among all sets (the eviction order).
    started: u64,
}

/// Reassembles the sets of the snapshot topic from its chunks, in any interleaving, and keeps
/// the newest usable ones (module documentation, "Reading").
#[derive(Default)]
pub struct SnapshotAssembler {
    /// Only sets of this journal topic are kept (`None`: any).
    journal_topic: Option<String>,
    in_progress: HashMap<String, Assembly>,
    usable: Vec<PublishedSnapshot>,
    sets_started: u64,
    rejected: u64,
}

impl SnapshotAssembler {
    /// An assembler keeping only snapshots whose position is in `journal_topic`.
    pub fn for_journal_topic(journal_topic: &str) -> Self {
        Self { journal_topic: Some(journal_topic.to_string()), ..Self::default() }
    }

    /// Takes one chunk (`payload`: its bytes).
    pub fn add(&mut self, header: ChunkHeader, payload: &[u8]) {
        if self.journal_topic.as_ref().is_some_and(|topic| *topic != header.journal_topic) {
            return;
        }
        if !self.in_progress.contains_key(&header.snapshot_id) {
            if self.in_progress.len() >= SETS_IN_PROGRESS_MAX {
                let oldest = self.in_progress.iter().min_by_key(|(_, set)| set.started).map(|(id, _)| id.clone());
                if let Some(oldest) = oldest {
                    tracing::warn!(snapshot_id = oldest, "snapshot set never completed; dropped");
                    self.in_progress.remove(&oldest);
                }
            }
            let broken = if header.chunks == 0 || header.chunks > SNAPSHOT_CHUNKS_MAX {
                Some(format!("declares {} chunks", header.chunks))
            } else if header.position.next_sequence != header.sequence + 1 {
                Some(format!("position {:?} is not right after sequence {}", header.position, header.sequence))
            } else {
                None
            };
            let chunks = if broken.is_some() { Vec::new() } else { vec![None; header.chunks as usize] };
            self.sets_started += 1;
            let set = Assembly { header: header.clone(), chunks, received: 0, broken, started: self.sets_started };
            self.in_progress.insert(header.snapshot_id.clone(), set);
        }
        let Some(set) = self.in_progress.get_mut(&header.snapshot_id) else { return };
        if set.broken.is_some() {
            return;
        }
        let problem = if !set.header.same_set(&header) {
            Some(format!("chunk {} disagrees with the set's headers", header.chunk))
        } else if header.chunk >= set.header.chunks {
            Some(format!("chunk {} of {}", header.chunk, set.header.chunks))
        } else if set.chunks[header.chunk as usize].is_some() {
            Some(format!("chunk {} duplicated", header.chunk))
        } else {
            None
        };
        if let Some(problem) = problem {
            tracing::warn!(
                snapshot_id = header.snapshot_id,
                sequence = header.sequence,
                problem,
                "snapshot set rejected"
            );
            self.rejected += 1;
            set.chunks = Vec::new();
            set.broken = Some(problem);
            return;
        }
        set.chunks[header.chunk as usize] = Some(payload.to_vec());
        set.received += 1;
        if set.received < set.header.chunks {
            return;
        }
        let Some(set) = self.in_progress.remove(&header.snapshot_id) else { return };
        let bytes: Vec<u8> = set.chunks.into_iter().flatten().flatten().collect();
        let verified = if bytes.len() as u64 != set.header.length {
            Err(format!("{} bytes, the headers say {}", bytes.len(), set.header.length))
        } else {
            match engine::snapshot::recorded_checksum(&bytes) {
                Ok(checksum) if checksum == set.header.checksum => Ok(()),
                Ok(checksum) => Err(format!("checksum {checksum:08x}, the headers say {:08x}", set.header.checksum)),
                Err(error) => Err(error.to_string()),
            }
        };
        match verified {
            Ok(()) => {
                self.usable.push(PublishedSnapshot {
                    sequence: set.header.sequence,
                    position: set.header.position,
                    bytes,
                });
                self.usable.sort_by_key(|snapshot| std::cmp::Reverse(snapshot.sequence));
                self.usable.truncate(USABLE_SETS_KEPT);
            }
            Err(problem) => {
                tracing::warn!(sequence = set.header.sequence, problem, "snapshot set corrupt; rejected");
                self.rejected += 1;
            }
        }
    }

    /// Sets rejected so far (a chunk duplicated, out of range or disagreeing, the bytes not
    /// matching the length or checksum).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The usable snapshots, newest first (at most [`USABLE_SETS_KEPT`]).
    pub fn newest_first(self) -> Vec<PublishedSnapshot> {
        self.usable
    }
}

/// Reads the snapshot topic to its current end and returns its usable snapshots of the journal
/// topic, newest first (creating the topic if missing).
///
/// # Errors
/// The broker did not answer, or the topic could not be read to its end within
/// [`READ_TIMEOUT`].
pub fn read_published(topic: &SnapshotTopic) -> Result<Vec<PublishedSnapshot>, ClusterError> {
    topic.ensure()?;
    let consumer: BaseConsumer = client_config(&topic.brokers)
        // Required by librdkafka for a consumer; never joined (the partition is assigned).
        .set("group.id", "exchange-snapshot-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(kafka)?;
    let (low, high) = consumer.fetch_watermarks(&topic.topic, PARTITION, READ_TIMEOUT).map_err(kafka)?;
    let mut assembler = SnapshotAssembler::for_journal_topic(&topic.journal_topic);
    if high <= low {
        return Ok(Vec::new());
    }
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment.add_partition_offset(&topic.topic, PARTITION, rdkafka::Offset::Beginning).map_err(kafka)?;
    consumer.assign(&assignment).map_err(kafka)?;
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut next = low;
    while next < high {
        if Instant::now() > deadline {
            return Err(kafka(format!("timed out reading the snapshot topic {} (at {next} of {high})", topic.topic)));
        }
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(message)) => {
                next = message.offset() + 1;
                match ChunkHeader::parse(message.headers()) {
                    Ok(Some(header)) => assembler.add(header, message.payload().unwrap_or(&[])),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(offset = message.offset(), error, "snapshot topic record ignored: bad headers")
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(error)) => return Err(kafka(error)),
        }
    }
    let usable = assembler.newest_first();
    tracing::info!(
        topic = topic.topic,
        records = high - low,
        usable = usable.len(),
        newest = usable.first().map(|s| s.sequence),
        "snapshot topic read"
    );
    Ok(usable)
}

/// A snapshot from the topic restored, and a follower of the journal topic at its position.
pub struct FromPublished {
    /// The restored engine (books not pre-faulted).
    pub engine: Engine,
    /// The snapshot's sequence.
    pub sequence: u64,
    /// The journal topic follower, at the snapshot's position (checked against the topic).
    pub follower: LogFollower,
    /// The snapshot itself (a standby keeps a copy in its data directory).
    pub snapshot: PublishedSnapshot,
}

/// Starts a follower with no local snapshot from the newest published snapshot that restores
/// and whose position matches the journal topic ([`LogFollower::open_at`]); an older one
/// otherwise. `None` (logged as a warning) when there is none: the caller reads the journal
/// topic from its first record with an empty engine.
///
/// # Errors
/// The broker did not answer.
pub fn follow_from_published(
    topic: &SnapshotTopic,
    engine_config: &EngineConfig,
) -> Result<Option<FromPublished>, ClusterError> {
    let published = read_published(topic)?;
    for snapshot in published {
        let restored = Engine::restore_snapshot(engine_config, OrderBook::with_capacity_unfaulted, &snapshot.bytes);
        let engine = match restored {
            Ok((engine, at)) if at == snapshot.sequence => engine,
            Ok((_, at)) => {
                tracing::warn!(sequence = snapshot.sequence, at, "published snapshot restores to another sequence");
                continue;
            }
            Err(error) => {
                tracing::warn!(sequence = snapshot.sequence, %error, "published snapshot does not restore");
                continue;
            }
        };
        match LogFollower::open_at(&topic.brokers, &topic.journal_topic, topic.replication, snapshot.position) {
            Ok(follower) => {
                tracing::info!(
                    sequence = snapshot.sequence,
                    offset = snapshot.position.offset,
                    "starting from the snapshot topic's snapshot at sequence {} (journal topic offset {})",
                    snapshot.sequence,
                    snapshot.position.offset
                );
                return Ok(Some(FromPublished { engine, sequence: snapshot.sequence, follower, snapshot }));
            }
            Err(ClusterError::Corrupt { reason, .. }) => {
                tracing::warn!(
                    sequence = snapshot.sequence,
                    reason,
                    "published snapshot's position does not match the journal topic"
                );
            }
            Err(error) => return Err(error),
        }
    }
    tracing::warn!(
        topic = topic.topic,
        "no usable snapshot in the snapshot topic: reading the journal topic from its first record"
    );
    Ok(None)
}

/// What a [`SnapshotPublisher`] did (`/metrics`).
#[derive(Debug, Default)]
pub struct SnapshotPublishCounters {
    /// Snapshots published whole.
    pub published: AtomicU64,
    /// Publications that failed (the next snapshot is published again).
    pub failed: AtomicU64,
    /// Snapshots not published because the previous one was still being published.
    pub skipped: AtomicU64,
    /// The sequence of the last snapshot published whole (0: none).
    pub last_sequence: AtomicU64,
}

impl SnapshotPublishCounters {
    /// The counters' Prometheus text.
    pub fn render(&self) -> String {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut text = String::new();
        for (name, kind, help, value) in [
            (
                "exchange_cluster_snapshots_published_total",
                "counter",
                "Snapshots published whole to the snapshot topic.",
                load(&self.published),
            ),
            (
                "exchange_cluster_snapshot_publish_failures_total",
                "counter",
                "Snapshot publications that failed (the next snapshot is published).",
                load(&self.failed),
            ),
            (
                "exchange_cluster_snapshot_publish_skipped_total",
                "counter",
                "Snapshots not published: the previous one was still being published.",
                load(&self.skipped),
            ),
            (
                "exchange_cluster_snapshot_published_sequence",
                "gauge",
                "Sequence of the last snapshot published whole.",
                load(&self.last_sequence),
            ),
        ] {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
        }
        text
    }
}

/// One snapshot to publish.
struct PublishJob {
    sequence: u64,
    position: LogPosition,
    bytes: Vec<u8>,
}

/// Publishes snapshots to the snapshot topic on its own thread: [`Self::publish`] never waits
/// for the broker (the standby's apply loop goes on), a failure is logged and counted and the
/// next snapshot is published again.
pub struct SnapshotPublisher {
    queue: SyncSender<PublishJob>,
    counters: Arc<SnapshotPublishCounters>,
}

impl SnapshotPublisher {
    /// Starts the publisher thread (it creates the topic, if missing, with its first snapshot).
    ///
    /// # Errors
    /// The producer or the thread could not be created.
    pub fn start(topic: SnapshotTopic, counters: Arc<SnapshotPublishCounters>) -> Result<Self, ClusterError> {
        let producer: FutureProducer = client_config(&topic.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", CHUNK_DELIVERY_TIMEOUT.as_millis().to_string())
            .create()
            .map_err(kafka)?;
        let (queue, jobs) = std::sync::mpsc::sync_channel::<PublishJob>(PUBLISH_QUEUE);
        let thread_counters = counters.clone();
        let publisher_id = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
        );
        std::thread::Builder::new()
            .name("snapshot-publisher".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        tracing::error!(%error, "snapshot publisher cannot start: no snapshot is published");
                        return;
                    }
                };
                let mut topic_ready = false;
                for (publication, job) in jobs.into_iter().enumerate() {
                    let started = Instant::now();
                    let id = format!("{publisher_id}-{publication}");
                    let outcome = (|| {
                        if !topic_ready {
                            topic.ensure()?;
                            topic_ready = true;
                        }
                        publish_chunks(&runtime, &producer, &topic, &id, &job)
                    })();
                    match outcome {
                        Ok(chunks) => {
                            thread_counters.published.fetch_add(1, Ordering::Relaxed);
                            thread_counters.last_sequence.store(job.sequence, Ordering::Relaxed);
                            tracing::info!(
                                sequence = job.sequence,
                                bytes = job.bytes.len(),
                                chunks,
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                "snapshot published to the snapshot topic"
                            );
                        }
                        Err(error) => {
                            thread_counters.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(
                                sequence = job.sequence,
                                %error,
                                "snapshot not published to the snapshot topic (the next snapshot will be)"
                            );
                        }
                    }
                }
            })
            .map_err(kafka)?;
        Ok(Self { queue, counters })
    }

    /// Hands the snapshot at `sequence` (its file's `bytes`, and the journal topic `position`
    /// after it) to the publisher thread; never waits. If the previous snapshot is still being
    /// published this one is skipped (counted): the next one will be.
    pub fn publish(&self, sequence: u64, position: LogPosition, bytes: Vec<u8>) {
        match self.queue.try_send(PublishJob { sequence, position, bytes }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sequence, "previous snapshot still being published: this one is not published");
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(sequence, "snapshot publisher thread gone: snapshot not published");
            }
        }
    }
}

/// Cuts `job`'s snapshot into chunks and publishes them in order, waiting for each delivery;
/// returns the chunk count.
fn publish_chunks(
    runtime: &tokio::runtime::Runtime,
    producer: &FutureProducer,
    topic: &SnapshotTopic,
    id: &str,
    job: &PublishJob,
) -> Result<u32, ClusterError> {
    let checksum = engine::snapshot::recorded_checksum(&job.bytes).map_err(kafka)?;
    let chunks = u32::try_from(job.bytes.len().div_ceil(SNAPSHOT_CHUNK_BYTES))
        .ok()
        .filter(|chunks| (1..=SNAPSHOT_CHUNKS_MAX).contains(chunks))
        .ok_or_else(|| kafka(format!("a snapshot of {} bytes does not fit the chunk limit", job.bytes.len())))?;
    let mut header = ChunkHeader {
        snapshot_id: id.to_string(),
        journal_topic: topic.journal_topic.clone(),
        sequence: job.sequence,
        position: job.position,
        chunk: 0,
        chunks,
        length: job.bytes.len() as u64,
        checksum,
    };
    for (index, payload) in job.bytes.chunks(SNAPSHOT_CHUNK_BYTES).enumerate() {
        header.chunk = index as u32;
        let record = FutureRecord::<str, [u8]>::to(&topic.topic)
            .partition(PARTITION)
            .key(id)
            .payload(payload)
            .headers(header.to_headers());
        runtime.block_on(producer.send(record, CHUNK_DELIVERY_TIMEOUT)).map_err(|(error, _)| kafka(error))?;
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot-like byte string of `length` bytes ending in the CRC32C of the rest (the only
    /// property of the snapshot format reassembly checks).
    fn snapshot_bytes(seed: u8, length: usize) -> Vec<u8> {
        let mut bytes: Vec<u8> = (0..length - 4).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let crc = crc32c_of(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// CRC32C (Castagnoli), bitwise: the test's own, independent of the code under test.
    fn crc32c_of(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
            }
        }
        !crc
    }

    /// The chunks of a publication of `bytes` at `sequence`, as the publisher cuts them, with
    /// chunks of `chunk_bytes`.
    fn chunks_of(id: &str, sequence: u64, bytes: &[u8], chunk_bytes: usize) -> Vec<(ChunkHeader, Vec<u8>)> {
        let chunks = bytes.len().div_ceil(chunk_bytes) as u32;
        let position = LogPosition { offset: sequence as i64 * 2, next_sequence: sequence + 1, ..LogPosition::START };
        bytes
            .chunks(chunk_bytes)
            .enumerate()
            .map(|(index, payload)| {
                let header = ChunkHeader {
                    snapshot_id: id.into(),
                    journal_topic: "journal".into(),
                    sequence,
                    position,
                    chunk: index as u32,
                    chunks,
                    length: bytes.len() as u64,
                    checksum: u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()),
                };
                (header, payload.to_vec())
            })
            .collect()
    }

    fn assemble(records: &[(ChunkHeader, Vec<u8>)]) -> (Vec<u64>, u64) {
        let mut assembler = SnapshotAssembler::for_journal_topic("journal");
        for (header, payload) in records {
            assembler.add(header.clone(), payload);
        }
        let rejected = assembler.rejected();
        (assembler.newest_first().iter().map(|snapshot| snapshot.sequence).collect(), rejected)
    }

    /// Reassembly takes the newest complete, verified set, whatever the interleaving, and
    /// rejects (falling back to an older set) a set with a missing, duplicated, damaged or
    /// disagreeing chunk, a wrong length, or another journal topic's snapshot.
    #[test]
    fn reassembly_rejects_missing_duplicated_or_corrupt_chunks_and_picks_the_newest_complete_set() {
        let old = chunks_of("a", 100, &snapshot_bytes(1, 1000), 300);
        let new = chunks_of("b", 200, &snapshot_bytes(2, 1100), 300);
        assert_eq!(old.len(), 4);

        // Both complete, interleaved: the newest first, the bytes exactly the snapshot's.
        let mut interleaved = Vec::new();
        for (a, b) in old.iter().zip(&new) {
            interleaved.push(b.clone());
            interleaved.push(a.clone());
        }
        assert_eq!(assemble(&interleaved), (vec![200, 100], 0));
        let mut assembler = SnapshotAssembler::for_journal_topic("journal");
        for (header, payload) in &new {
            assembler.add(header.clone(), payload);
        }
        assert_eq!(assembler.newest_first()[0].bytes, snapshot_bytes(2, 1100));

        let with_new = |new: Vec<(ChunkHeader, Vec<u8>)>| assemble(&[old.clone(), new].concat());
        // A missing chunk: the newer set never completes (not a rejection: it may still be
        // being published), the older one is taken.
        let mut missing = new.clone();
        missing.remove(2);
        assert_eq!(with_new(missing), (vec![100], 0));
        // A duplicated chunk.
        let mut duplicated = new.clone();
        duplicated.insert(2, new[1].clone());
        assert_eq!(with_new(duplicated), (vec![100], 1));
        // A damaged chunk: the snapshot's own checksum does not verify.
        let mut corrupt = new.clone();
        corrupt[1].1[7] ^= 0x40;
        assert_eq!(with_new(corrupt), (vec![100], 1));
        // A chunk whose set headers disagree with the others'.
        let mut disagreeing = new.clone();
        disagreeing[3].0.length += 1;
        assert_eq!(with_new(disagreeing), (vec![100], 1));
        // A chunk index beyond the count.
        let mut beyond = new.clone();
        beyond[3].0.chunk = 9;
        assert_eq!(with_new(beyond), (vec![100], 1));
        // A truncated chunk: the length does not match.
        let mut truncated = new.clone();
        truncated[3].1.pop();
        assert_eq!(with_new(truncated), (vec![100], 1));
        // Another journal topic's snapshot is not this one's, however new.
        let mut foreign = new.clone();
        for (header, _) in &mut foreign {
            header.journal_topic = "other".into();
        }
        assert_eq!(with_new(foreign), (vec![100], 0));
        // A set cut at the front by retention (its first chunks deleted) is just incomplete.
        assert_eq!(assemble(&[old[2..].to_vec(), new.clone()].concat()), (vec![200], 0));
        // Nothing usable: none.
        assert_eq!(assemble(&old[..3]), (vec![], 0));
    }

    /// With no broker to reach, [`SnapshotPublisher::publish`] still returns at once; a
    /// snapshot handed over while one is being published is skipped (counted), the failed
    /// publication is counted, and the next snapshot is attempted again.
    #[test]
    fn publishing_never_waits_and_a_failure_is_counted_and_retried_with_the_next_snapshot() {
        let topic = SnapshotTopic {
            brokers: "127.0.0.1:1".into(),
            topic: "unreachable.snapshots".into(),
            journal_topic: "journal".into(),
            replication: 1,
            retention_ms: 60_000,
        };
        let counters = Arc::new(SnapshotPublishCounters::default());
        let publisher = SnapshotPublisher::start(topic, counters.clone()).unwrap();
        let position = LogPosition { next_sequence: 11, ..LogPosition::START };
        let wait_failed = |count: u64| {
            let deadline = Instant::now() + Duration::from_secs(120);
            while counters.failed.load(Ordering::Relaxed) < count {
                assert!(Instant::now() < deadline, "the publication should fail");
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        let snapshot = snapshot_bytes(4, 2 * SNAPSHOT_CHUNK_BYTES);
        let copies = [snapshot.clone(), snapshot.clone(), snapshot];
        let started = Instant::now();
        for bytes in copies {
            publisher.publish(10, position, bytes);
        }
        assert!(started.elapsed() < Duration::from_millis(500), "publish waited {:?}", started.elapsed());
        // The first is taken by the thread, the second queued, the third skipped (or, if the
        // thread had not taken the first yet, the second and third).
        assert!((1..=2).contains(&counters.skipped.load(Ordering::Relaxed)));
        let skipped = counters.skipped.load(Ordering::Relaxed);
        wait_failed(3 - skipped);
        assert_eq!(counters.published.load(Ordering::Relaxed), 0);
        // The next snapshot is attempted again, not skipped.
        publisher.publish(20, LogPosition { next_sequence: 21, ..LogPosition::START }, snapshot_bytes(5, 100));
        assert_eq!(counters.skipped.load(Ordering::Relaxed), skipped);
        wait_failed(4 - skipped);
        let metrics = counters.render();
        assert!(metrics.contains(&format!("exchange_cluster_snapshot_publish_failures_total {}", 4 - skipped)));
    }

    /// Chunk headers survive the trip through Kafka headers; other records are not chunks.
    #[test]
    fn chunk_headers_round_trip() {
        let (header, _) = chunks_of("id-1", 42, &snapshot_bytes(3, 100), 64).remove(1);
        assert_eq!(ChunkHeader::parse(Some(&header.to_headers())), Ok(Some(header)));
        let batch = OwnedHeaders::new().insert(Header { key: "kind", value: Some("batch") });
        assert_eq!(ChunkHeader::parse(Some(&batch)), Ok(None));
        let incomplete = OwnedHeaders::new().insert(Header { key: "kind", value: Some(CHUNK_KIND) });
        assert!(ChunkHeader::parse(Some(&incomplete)).is_err());
    }
}
