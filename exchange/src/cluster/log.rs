//! The authoritative log: the Kafka journal topic, its writer ([`JournalTopic`]) and its reader
//! ([`LogFollower`]).
//!
//! # Records
//! One partition; one Kafka record per group commit. Headers are ASCII decimal:
//!
//! | `kind` | other headers | value |
//! |---|---|---|
//! | `epoch` | `epoch` (informational count) | empty |
//! | `batch` | `epoch`, `first-sequence`, `last-sequence` | the batch's journal records, framed as in the local journal (engine::journal "Format") |
//! | `checkpoint` | `sequence`, `state-hash` (hex) | empty |
//!
//! # Epochs are marker offsets
//! A primary's epoch is the Kafka **offset of its epoch marker**, and its batches carry that
//! offset in their `epoch` header. Offsets are unique and increase, so two candidates that
//! raced (both saw the same markers, both appended one) never share an epoch: the later marker
//! supersedes the earlier, whatever count either wrote in its `epoch` header.
//!
//! # The authoritative order (what [`LogFollower`] yields)
//! Records in offset order, current epoch `E` (the offset of the last marker read) and next
//! expected sequence `N`:
//! - `epoch` marker at offset `M`: `E := M`.
//! - `batch` with epoch `E` and first sequence `N`: authoritative, its records are yielded;
//!   `N := last + 1`.
//! - `batch` with epoch `< E` (a deposed primary's late write, or one whose writer was fenced):
//!   superseded, ignored and counted ([`LogFollower::superseded`]).
//! - `batch` with epoch `E` and another first sequence, or epoch `> E`: impossible with the
//!   writers' fencing (a writer appends only right after its own marker or its own previous
//!   batch, and checks the offset it got): [`ClusterError::Corrupt`].
//! - `checkpoint`: yielded as is; the follower compares its state hash when it is at that
//!   sequence.
//!
//! # Fencing
//! [`JournalTopic::append_batch`] returns the offset Kafka assigned; the primary knows the offset
//! it expects (right after its previous append). Any other offset means someone appended in
//! between, and the primary reads those records back ([`JournalTopic::kinds_between`]): a newer
//! primary's epoch marker deposes it, and it must stop without acknowledging the batch (which is
//! then superseded for every follower: its epoch is older than the newer marker). A deposed
//! primary's late batches (an older epoch) do not depose it: followers ignore them and they do
//! not advance the sequence, so its own batch is still authoritative
//! (`cluster::standby::TopicReplicator`).
//!
//! # For other followers (e.g. a Kafka-fed replica)
//! Open a [`LogFollower`] on the topic, call [`LogFollower::poll`] in a loop and execute every
//! [`Followed::Command`] with an [`engine::Engine`] in the order given: the result is the
//! primary's state, events and ids, sequence for sequence.
//!
//! # Starting from a snapshot
//! A follower that writes a snapshot of its state at sequence `S` records its
//! [`LogPosition`] beside it ([`LogPosition::write_for`]); one that starts from that snapshot
//! opens the follower there ([`LogFollower::open_at`], which checks the position against the
//! topic) and reads only the records after it, with the rule above unchanged (a batch that does
//! not continue at `S + 1` is corruption).

use sinks::rdkafka;
use sinks::rdkafka::ClientConfig;
use sinks::rdkafka::Message;
use sinks::rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use sinks::rdkafka::client::DefaultClientContext;
use sinks::rdkafka::consumer::{BaseConsumer, Consumer};
use sinks::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use sinks::rdkafka::message::{Header, Headers, OwnedHeaders};
use sinks::rdkafka::producer::{FutureProducer, FutureRecord};
use std::path::Path;
use std::time::Duration;

/// The only partition of the journal and lease topics.
pub const PARTITION: i32 = 0;
/// From this replication factor on, created topics require [`MIN_INSYNC_REPLICAS`].
const REPLICATION_FOR_MIN_INSYNC: i32 = 3;
/// `min.insync.replicas` of created topics (with at least three replicas).
const MIN_INSYNC_REPLICAS: &str = "2";
/// How long metadata and admin requests may take before start-up gives up.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a follower's fetch waits at the end of the log for new records: bounds a standby's
/// lag behind a quiet primary, and costs one request per interval when idle.
const FETCH_WAIT_MS: &str = "5";

/// Why the cluster layer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The broker refused or did not answer.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The log breaks the authoritative-order rule (see the module documentation).
    #[error("journal topic corrupt at offset {offset}: {reason}")]
    Corrupt {
        /// Offset of the offending record.
        offset: i64,
        /// What is wrong.
        reason: String,
    },
    /// Another writer appended since this primary's last append: it is deposed.
    #[error("fenced: expected the batch at offset {expected}, Kafka assigned {assigned} (another primary appended)")]
    Fenced {
        /// The offset this primary expected.
        expected: i64,
        /// The offset Kafka assigned.
        assigned: i64,
    },
    /// A journal record in a batch does not check.
    #[error(transparent)]
    Journal(#[from] engine::journal::JournalError),
}

fn kafka(error: impl std::fmt::Display) -> ClusterError {
    ClusterError::Kafka(error.to_string())
}

/// The client settings every cluster client shares.
pub(crate) fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("socket.timeout.ms", "10000").set("log_level", "3");
    config
}

/// The settings of every cluster producer whose records must land once and in order: idempotent,
/// `acks=all` (in every in-sync replica before it counts), and `linger.ms=0`: each of these
/// producers has one record (a batch, a registration, a command) that somebody waits for, and
/// librdkafka's default 5 ms linger would be added to that wait.
pub(crate) fn ordered_producer_config(brokers: &str) -> ClientConfig {
    let mut config = client_config(brokers);
    config.set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "0");
    config
}

/// Creates `topic` with one partition unless it exists.
///
/// # Errors
/// The broker refused.
pub fn ensure_topic(brokers: &str, topic: &str, replication: i32) -> Result<(), ClusterError> {
    // Infinite retention when created: without published snapshots a node rebuilds from the
    // first record. Shortening it is the operator's step (docs/deployment.md, "Journal
    // retention"). With three replicas, an acknowledged (acks=all) record is on at least two of
    // them.
    let mut new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(replication)).set("retention.ms", "-1");
    if replication >= REPLICATION_FOR_MIN_INSYNC {
        new_topic = new_topic.set("min.insync.replicas", MIN_INSYNC_REPLICAS);
    }
    create_topic(brokers, &new_topic)
}

/// Creates `new_topic` unless a topic of its name exists.
///
/// # Errors
/// The broker refused.
pub(crate) fn create_topic(brokers: &str, new_topic: &NewTopic<'_>) -> Result<(), ClusterError> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create().map_err(kafka)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(kafka)?;
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    for result in runtime.block_on(admin.create_topics([new_topic], &options)).map_err(kafka)? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(kafka(format!("creating topic {topic}: {code}"))),
        }
    }
    Ok(())
}

/// What a journal topic record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A new primary starts here.
    Epoch {
        /// The count its writer put in the header (informational; the epoch is the offset).
        number: u64,
    },
    /// One group commit.
    Batch {
        /// The writer's epoch (the offset of its marker).
        epoch: i64,
        /// First sequence in the batch.
        first_sequence: u64,
        /// Last sequence in the batch.
        last_sequence: u64,
    },
    /// The primary's state hash at a sequence.
    Checkpoint {
        /// The sequence hashed.
        sequence: u64,
        /// The state hash there.
        state_hash: u64,
    },
}

impl RecordKind {
    /// Reads the kind from a record's headers.
    fn parse(headers: Option<&rdkafka::message::BorrowedHeaders>) -> Result<Self, String> {
        let mut fields: [Option<&str>; 6] = [None; 6];
        const NAMES: [&str; 6] = ["kind", "epoch", "first-sequence", "last-sequence", "sequence", "state-hash"];
        if let Some(headers) = headers {
            for header in headers.iter() {
                if let Some(index) = NAMES.iter().position(|name| *name == header.key) {
                    fields[index] = header.value.and_then(|v| std::str::from_utf8(v).ok());
                }
            }
        }
        let number = |index: usize| -> Result<u64, String> {
            fields[index]
                .ok_or_else(|| format!("no {} header", NAMES[index]))?
                .parse()
                .map_err(|e| format!("{} header: {e}", NAMES[index]))
        };
        match fields[0] {
            Some("epoch") => Ok(Self::Epoch { number: number(1)? }),
            Some("batch") => Ok(Self::Batch {
                epoch: i64::try_from(number(1)?).map_err(|e| e.to_string())?,
                first_sequence: number(2)?,
                last_sequence: number(3)?,
            }),
            Some("checkpoint") => {
                let hash = fields[5].ok_or("no state-hash header")?;
                let state_hash = u64::from_str_radix(hash.trim_start_matches("0x"), 16).map_err(|e| e.to_string())?;
                Ok(Self::Checkpoint { sequence: number(4)?, state_hash })
            }
            other => Err(format!("unknown kind {other:?}")),
        }
    }
}

/// The writer of the journal topic: an idempotent producer (`acks=all`, `linger.ms=0`) whose
/// every append waits for its delivery and returns the offset Kafka assigned.
pub struct JournalTopic {
    brokers: String,
    producer: FutureProducer,
    topic: String,
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
}

impl JournalTopic {
    /// Connects to `brokers` and creates `topic` (one partition) if missing.
    ///
    /// # Errors
    /// The broker refused.
    pub fn open(brokers: &str, topic: &str, replication: i32, timeout: Duration) -> Result<Self, ClusterError> {
        ensure_topic(brokers, topic, replication)?;
        // One batch is in flight at a time: the acknowledgements wait for it.
        let producer: FutureProducer = ordered_producer_config(brokers)
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .set("message.max.bytes", "16777216")
            .create()
            .map_err(kafka)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(kafka)?;
        Ok(Self { brokers: brokers.to_string(), producer, topic: topic.to_string(), runtime, timeout })
    }

    fn append(&self, headers: OwnedHeaders, value: &[u8]) -> Result<i64, ClusterError> {
        let record = FutureRecord::<(), [u8]>::to(&self.topic).partition(PARTITION).payload(value).headers(headers);
        let delivery = self.runtime.block_on(self.producer.send(record, self.timeout));
        match delivery {
            Ok(delivery) => Ok(delivery.offset),
            Err((error, _)) => Err(kafka(error)),
        }
    }

    /// Appends an epoch marker; returns its offset, the new primary's epoch.
    ///
    /// # Errors
    /// The broker did not take it.
    pub fn append_epoch(&self, number: u64) -> Result<i64, ClusterError> {
        let number = number.to_string();
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header { key: "kind", value: Some("epoch") })
            .insert(Header { key: "epoch", value: Some(number.as_str()) });
        self.append(headers, &[])
    }

    /// Appends one group commit (`records`: the journal records of `first..=last`) under
    /// `epoch`; returns the offset Kafka assigned (the caller compares it with the one it
    /// expects: [`ClusterError::Fenced`] otherwise).
    ///
    /// # Errors
    /// The broker did not take it within the delivery timeout: its outcome is unknown, the
    /// caller must not acknowledge the batch.
    pub fn append_batch(&self, epoch: i64, first: u64, last: u64, records: &[u8]) -> Result<i64, ClusterError> {
        let (epoch, first, last) = (epoch.to_string(), first.to_string(), last.to_string());
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header { key: "kind", value: Some("batch") })
            .insert(Header { key: "epoch", value: Some(epoch.as_str()) })
            .insert(Header { key: "first-sequence", value: Some(first.as_str()) })
            .insert(Header { key: "last-sequence", value: Some(last.as_str()) });
        self.append(headers, records)
    }

    /// The kinds of the records at offsets `from..to`, read back from the broker: what a primary
    /// whose append landed later than expected checks (another primary's marker deposes it; a
    /// deposed primary's superseded batches do not).
    ///
    /// # Errors
    /// The broker did not answer within the delivery timeout, or a record's headers are bad.
    pub fn kinds_between(&self, from: i64, to: i64) -> Result<Vec<(i64, RecordKind)>, ClusterError> {
        read_kinds(&self.brokers, &self.topic, from, to, self.timeout)
    }

    /// Appends a checkpoint: the state hash at `sequence`.
    ///
    /// # Errors
    /// The broker did not take it.
    pub fn append_checkpoint(&self, sequence: u64, state_hash: u64) -> Result<i64, ClusterError> {
        let (sequence, hash) = (sequence.to_string(), format!("{state_hash:016x}"));
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header { key: "kind", value: Some("checkpoint") })
            .insert(Header { key: "sequence", value: Some(sequence.as_str()) })
            .insert(Header { key: "state-hash", value: Some(hash.as_str()) });
        self.append(headers, &[])
    }
}

/// The kinds of the records of `topic` at offsets `from..to`, read from the broker within
/// `timeout`.
///
/// # Errors
/// The broker did not answer in time, or a record's headers are bad.
pub fn read_kinds(
    brokers: &str,
    topic: &str,
    from: i64,
    to: i64,
    timeout: Duration,
) -> Result<Vec<(i64, RecordKind)>, ClusterError> {
    let consumer: BaseConsumer = client_config(brokers)
        .set("group.id", "exchange-journal-fence-check")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", FETCH_WAIT_MS)
        .create()
        .map_err(kafka)?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment.add_partition_offset(topic, PARTITION, rdkafka::Offset::Offset(from)).map_err(kafka)?;
    consumer.assign(&assignment).map_err(kafka)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut kinds = Vec::new();
    let mut next = from;
    while next < to {
        if std::time::Instant::now() > deadline {
            return Err(kafka(format!("timed out reading offsets {from}..{to} back")));
        }
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(message)) if message.offset() >= next => {
                let offset = message.offset();
                let kind = RecordKind::parse(message.headers())
                    .map_err(|reason| ClusterError::Corrupt { offset, reason: format!("headers: {reason}") })?;
                kinds.push((offset, kind));
                next = offset + 1;
            }
            Some(Ok(_)) | None => {}
            Some(Err(error)) => return Err(kafka(error)),
        }
    }
    Ok(kinds)
}

/// Where a follower stands in the journal topic, exactly: the next record to read and the
/// authoritative-order state there. Recorded beside each snapshot a follower writes (the
/// snapshot holds the state at `next_sequence - 1`), so a follower that starts from that
/// snapshot reads only the records after it ([`LogFollower::open_at`]) instead of the whole
/// topic.
///
/// Why a recorded position rather than a search over offsets: the epoch in force at an offset
/// is the offset of the last marker before it, and telling an authoritative batch from a
/// superseded one needs that epoch; only a reader that came through the markers knows it. The
/// position is checked against the topic before use ([`LogFollower::open_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    /// Offset of the next record to read.
    pub offset: i64,
    /// The epoch in force there (offset of the last marker before it; -1 before any).
    pub epoch: i64,
    /// The next authoritative sequence (the snapshot's sequence + 1).
    pub next_sequence: u64,
    /// Highest marker count read before it.
    pub highest_epoch_number: u64,
    /// The last authoritative batch before it: (offset, epoch, last sequence); `None` before any.
    /// What [`LogFollower::open_at`] checks to know the position belongs to this topic.
    pub last_batch: Option<(i64, i64, u64)>,
}

/// The name of the file that records the [`LogPosition`] of a snapshot file (beside it).
pub fn position_path(snapshot: &Path) -> std::path::PathBuf {
    let mut name = snapshot.as_os_str().to_os_string();
    name.push(POSITION_SUFFIX);
    std::path::PathBuf::from(name)
}

/// Suffix of a snapshot's position file (`snapshot-<sequence>.snap.log-position`).
pub const POSITION_SUFFIX: &str = ".log-position";

impl LogPosition {
    /// The position of a follower that has not read anything: the first record, sequence 1.
    pub const START: Self = Self { offset: 0, epoch: -1, next_sequence: 1, highest_epoch_number: 0, last_batch: None };

    /// The position as one line of text (`key=value` pairs), for [`Self::parse`].
    pub fn to_text(&self) -> String {
        let last_batch = match self.last_batch {
            Some((offset, epoch, sequence)) => format!("{offset}:{epoch}:{sequence}"),
            None => "none".into(),
        };
        format!(
            "offset={} epoch={} next-sequence={} highest-epoch-number={} last-batch={last_batch}\n",
            self.offset, self.epoch, self.next_sequence, self.highest_epoch_number
        )
    }

    /// Reads [`Self::to_text`]'s format.
    ///
    /// # Errors
    /// A field is missing or not a number.
    pub fn parse(text: &str) -> Result<Self, String> {
        let field = |name: &str| -> Result<&str, String> {
            text.split_whitespace()
                .find_map(|pair| pair.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
                .ok_or_else(|| format!("no {name}"))
        };
        let number = |name: &str| -> Result<i64, String> { field(name)?.parse().map_err(|e| format!("{name}: {e}")) };
        let unsigned = |name: &str| -> Result<u64, String> { field(name)?.parse().map_err(|e| format!("{name}: {e}")) };
        let last_batch = match field("last-batch")? {
            "none" => None,
            triple => {
                let mut parts = triple.split(':').map(|part| part.parse::<i64>());
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some(Ok(offset)), Some(Ok(epoch)), Some(Ok(sequence)), None) => {
                        Some((offset, epoch, u64::try_from(sequence).map_err(|e| format!("last-batch: {e}"))?))
                    }
                    _ => return Err(format!("last-batch: {triple:?}")),
                }
            }
        };
        let position = Self {
            offset: number("offset")?,
            epoch: number("epoch")?,
            next_sequence: unsigned("next-sequence")?,
            highest_epoch_number: unsigned("highest-epoch-number")?,
            last_batch,
        };
        if position.offset < 0 || position.next_sequence == 0 {
            return Err(format!("out of range: {position:?}"));
        }
        Ok(position)
    }

    /// Reads the position file of `snapshot` ([`position_path`]); `None` if there is none or it
    /// does not parse (logged).
    pub fn read_for(snapshot: &Path) -> Option<Self> {
        let path = position_path(snapshot);
        let text = std::fs::read_to_string(&path).ok()?;
        match Self::parse(&text) {
            Ok(position) => Some(position),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "snapshot log position unreadable; ignored");
                None
            }
        }
    }

    /// Writes the position file of `snapshot` (write, sync, rename: a crash leaves the old file
    /// or none, never half of one).
    ///
    /// # Errors
    /// I/O.
    pub fn write_for(&self, snapshot: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let path = position_path(snapshot);
        let temporary = path.with_extension("log-position.tmp");
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(self.to_text().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    }
}

/// What a follower yields, in the log's authoritative order.
#[derive(Debug)]
pub enum Followed<'a> {
    /// One authoritative command, in sequence order without gaps.
    Command(engine::journal::RecordRef<'a>),
    /// A new primary's epoch marker was read (its offset is the epoch).
    Epoch {
        /// The marker's offset.
        offset: i64,
    },
    /// The primary's state hash at `sequence`.
    Checkpoint {
        /// The sequence hashed.
        sequence: u64,
        /// The primary's state hash there.
        state_hash: u64,
    },
}

/// Reads the journal topic in offset order and yields only the authoritative commands (module
/// documentation, "The authoritative order"). Not a group member: it assigns the partition
/// itself, from an offset it keeps.
pub struct LogFollower {
    consumer: BaseConsumer,
    topic: String,
    /// Offset of the next record to read.
    next_offset: i64,
    /// Current epoch: the offset of the last marker read (-1 before any).
    epoch: i64,
    /// Next authoritative sequence.
    next_sequence: u64,
    /// Batches ignored as superseded.
    superseded: u64,
    /// Highest `epoch` header count of any marker read (for the next marker's count).
    highest_epoch_number: u64,
    /// The end of the partition was reached by the last poll and nothing followed.
    at_end: bool,
    /// The last authoritative batch read: (offset, epoch, last sequence).
    last_batch: Option<(i64, i64, u64)>,
    /// Records read from the topic since this follower opened (what a start from a snapshot
    /// saves is visible here).
    records_read: u64,
}

impl LogFollower {
    /// Follows `topic` from its first record, expecting sequence 1 first.
    ///
    /// # Errors
    /// The broker refused.
    pub fn open(brokers: &str, topic: &str, replication: i32) -> Result<Self, ClusterError> {
        Self::open_unchecked(brokers, topic, replication, LogPosition::START)
    }

    /// Follows `topic` from `position` when there is one and it matches the topic
    /// ([`Self::open_at`]), otherwise from its first record ([`Self::open`]; a mismatch is logged
    /// as a warning). The start of every follower that restores a snapshot without keeping a
    /// local journal (journal-following replicas, gateway processes): the caller skips the
    /// records its snapshot covers when the fallback reads from the first record.
    ///
    /// # Errors
    /// The broker refused.
    pub fn open_from(
        brokers: &str,
        topic: &str,
        replication: i32,
        position: Option<LogPosition>,
    ) -> Result<Self, ClusterError> {
        let Some(position) = position else { return Self::open(brokers, topic, replication) };
        match Self::open_at(brokers, topic, replication, position) {
            Err(ClusterError::Corrupt { reason, .. }) => {
                tracing::warn!(reason, "snapshot's log position does not match the topic: reading it all");
                Self::open(brokers, topic, replication)
            }
            opened => opened,
        }
    }

    /// Follows `topic` from `position` (recorded with a snapshot by a follower of this topic),
    /// after checking that it belongs to this topic: the partition reaches it, and the record
    /// at its last authoritative batch is that batch (same epoch, same last sequence). Then
    /// the authoritative-order rule goes on exactly as if this follower had read everything
    /// before (a batch that does not continue `next_sequence` is still
    /// [`ClusterError::Corrupt`]).
    ///
    /// # Errors
    /// The broker refused, or [`ClusterError::Corrupt`] when the position does not match the
    /// topic (the caller falls back to [`Self::open`]).
    pub fn open_at(brokers: &str, topic: &str, replication: i32, position: LogPosition) -> Result<Self, ClusterError> {
        let follower = Self::open_unchecked(brokers, topic, replication, position)?;
        let mismatch = |reason: String| ClusterError::Corrupt { offset: position.offset, reason };
        let (start, end) = follower.watermarks()?;
        if end < position.offset {
            return Err(mismatch(format!("the topic ends at {end}, before the recorded position")));
        }
        // Retention deleted records this position needs (the record after it, or the batch it
        // is checked against): the snapshot is older than the journal topic's retention.
        let needed = position.last_batch.map_or(position.offset, |(offset, _, _)| offset).min(position.offset);
        if start > needed {
            return Err(mismatch(format!("the topic starts at {start}: retention deleted offset {needed}")));
        }
        if let Some((offset, epoch, last_sequence)) = position.last_batch {
            let kinds = read_kinds(brokers, topic, offset, offset + 1, ADMIN_TIMEOUT)?;
            let found = kinds.first().map(|(_, kind)| *kind);
            let matches = matches!(
                found,
                Some(RecordKind::Batch { epoch: e, last_sequence: l, .. }) if e == epoch && l == last_sequence
            );
            if !matches || last_sequence + 1 != position.next_sequence {
                return Err(mismatch(format!(
                    "recorded batch ({epoch}, ..={last_sequence}) at offset {offset}, the topic has {found:?}"
                )));
            }
        }
        Ok(follower)
    }

    fn open_unchecked(
        brokers: &str,
        topic: &str,
        replication: i32,
        position: LogPosition,
    ) -> Result<Self, ClusterError> {
        ensure_topic(brokers, topic, replication)?;
        let consumer: BaseConsumer = client_config(brokers)
            // Required by librdkafka for a consumer; never joined (the partition is assigned).
            .set("group.id", "exchange-journal-follower")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", FETCH_WAIT_MS)
            .set("fetch.message.max.bytes", "16777216")
            .create()
            .map_err(kafka)?;
        let mut assignment = rdkafka::TopicPartitionList::new();
        let start =
            if position.offset == 0 { rdkafka::Offset::Beginning } else { rdkafka::Offset::Offset(position.offset) };
        assignment.add_partition_offset(topic, PARTITION, start).map_err(kafka)?;
        consumer.assign(&assignment).map_err(kafka)?;
        Ok(Self {
            consumer,
            topic: topic.to_string(),
            next_offset: position.offset,
            epoch: position.epoch,
            next_sequence: position.next_sequence,
            superseded: 0,
            highest_epoch_number: position.highest_epoch_number,
            at_end: false,
            last_batch: position.last_batch,
            records_read: 0,
        })
    }

    /// Where this follower stands (to record with a snapshot of the state at
    /// `next_sequence - 1`).
    pub fn position(&self) -> LogPosition {
        LogPosition {
            offset: self.next_offset,
            epoch: self.epoch,
            next_sequence: self.next_sequence,
            highest_epoch_number: self.highest_epoch_number,
            last_batch: self.last_batch,
        }
    }

    /// Records read from the topic since this follower opened.
    pub fn records_read(&self) -> u64 {
        self.records_read
    }

    /// The offset of the next record this follower will read.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// The next authoritative sequence (the last applied + 1).
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The current epoch (offset of the last marker read; -1 before any).
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The highest marker count read (a new primary writes one more).
    pub fn highest_epoch_number(&self) -> u64 {
        self.highest_epoch_number
    }

    /// Batches ignored as superseded so far.
    pub fn superseded(&self) -> u64 {
        self.superseded
    }

    /// Whether the last poll reached the end of the partition (nothing more to read then).
    pub fn at_end(&self) -> bool {
        self.at_end
    }

    /// The partition's end offset as the broker reports it (may lag behind; an estimate for
    /// metrics).
    ///
    /// # Errors
    /// The broker did not answer.
    pub fn end_offset(&self) -> Result<i64, ClusterError> {
        Ok(self.watermarks()?.1)
    }

    /// The partition's first and end offsets as the broker reports them.
    fn watermarks(&self) -> Result<(i64, i64), ClusterError> {
        self.consumer.fetch_watermarks(&self.topic, PARTITION, ADMIN_TIMEOUT).map_err(kafka)
    }

    /// Reads what arrives within `timeout` (at most one fetch's worth) and passes it to `visit`
    /// in the authoritative order. Returns the records read (0: nothing new).
    ///
    /// # Errors
    /// Broker errors, a log that breaks the rule, a damaged batch, or the visitor's error.
    pub fn poll<E, F>(&mut self, timeout: Duration, visit: &mut F) -> Result<usize, E>
    where
        E: From<ClusterError>,
        F: FnMut(Followed<'_>) -> Result<(), E>,
    {
        let mut read = 0;
        let mut wait = timeout;
        loop {
            let Some(message) = self.consumer.poll(wait) else { return Ok(read) };
            wait = Duration::ZERO;
            let message = match message {
                Ok(message) => message,
                Err(KafkaError::PartitionEOF(_)) => {
                    self.at_end = true;
                    return Ok(read);
                }
                Err(error) => return Err(kafka(error).into()),
            };
            let offset = message.offset();
            if offset < self.next_offset {
                continue; // A re-delivery after a reconnect: already applied.
            }
            if offset != self.next_offset {
                return Err(ClusterError::Corrupt {
                    offset,
                    reason: format!("offsets jump from {} (records deleted by retention?)", self.next_offset),
                }
                .into());
            }
            self.at_end = false;
            read += 1;
            self.records_read += 1;
            let kind = RecordKind::parse(message.headers())
                .map_err(|reason| ClusterError::Corrupt { offset, reason: format!("headers: {reason}") })?;
            match kind {
                RecordKind::Epoch { number } => {
                    self.epoch = offset;
                    self.highest_epoch_number = self.highest_epoch_number.max(number);
                    visit(Followed::Epoch { offset })?;
                }
                RecordKind::Batch { epoch, .. } if epoch < self.epoch => self.superseded += 1,
                RecordKind::Batch { epoch, first_sequence, last_sequence } => {
                    if epoch != self.epoch || first_sequence != self.next_sequence {
                        return Err(ClusterError::Corrupt {
                            offset,
                            reason: format!(
                                "batch of epoch {epoch} from sequence {first_sequence}: expected epoch {} from {}",
                                self.epoch, self.next_sequence
                            ),
                        }
                        .into());
                    }
                    // Checked whole before any of it is applied: a damaged batch applies nothing.
                    let mut records = Vec::new();
                    let origin = Path::new(&self.topic);
                    engine::journal::for_each_record_in::<ClusterError, _>(
                        origin,
                        message.payload().unwrap_or(&[]),
                        |record| {
                            records.push(record);
                            Ok(())
                        },
                    )?;
                    let ends = records.first().map(|r| r.sequence).zip(records.last().map(|r| r.sequence));
                    if ends != Some((first_sequence, last_sequence)) {
                        return Err(ClusterError::Corrupt {
                            offset,
                            reason: format!("batch says {first_sequence}..={last_sequence}, its records are {ends:?}"),
                        }
                        .into());
                    }
                    for record in records {
                        visit(Followed::Command(record))?;
                    }
                    self.next_sequence = last_sequence + 1;
                    self.last_batch = Some((offset, epoch, last_sequence));
                }
                RecordKind::Checkpoint { sequence, state_hash } => {
                    visit(Followed::Checkpoint { sequence, state_hash })?
                }
            }
            self.next_offset = offset + 1;
        }
    }

    /// Reads until every record before `end` (exclusive) is read, or `timeout` passes.
    ///
    /// # Errors
    /// As [`Self::poll`], or the timeout.
    pub fn read_until<E, F>(&mut self, end: i64, timeout: Duration, visit: &mut F) -> Result<(), E>
    where
        E: From<ClusterError>,
        F: FnMut(Followed<'_>) -> Result<(), E>,
    {
        let deadline = std::time::Instant::now() + timeout;
        while self.next_offset < end {
            if std::time::Instant::now() > deadline {
                return Err(
                    kafka(format!("timed out reading the log to offset {end} (at {})", self.next_offset)).into()
                );
            }
            self.poll(Duration::from_millis(50), visit)?;
        }
        Ok(())
    }
}

/// The journal records of `count` commands from `first` (timestamp: ten times the sequence;
/// payload: the sequence's low byte), written to a journal in `dir`: test data for the log's and
/// the standby's tests.
#[cfg(test)]
pub(crate) fn test_records(dir: &Path, first: u64, count: u64) -> Vec<u8> {
    use engine::journal::{Durability, JournalConfig, JournalWriter, RecoveryOptions};
    let _ = std::fs::remove_dir_all(dir);
    let config = JournalConfig { durability: Durability::None, segment_bytes_max: 1 << 20 };
    let options = RecoveryOptions { after: first - 1, accept_loss: true, ..RecoveryOptions::default() };
    let (mut writer, _) = JournalWriter::open_with(dir, config, &options).unwrap();
    for sequence in first..first + count {
        writer.append(sequence * 10, &[sequence as u8; 8]).unwrap();
    }
    writer.pending_records().to_vec()
}

#[cfg(test)]
mod tests {
    use super::test_records as records;
    use super::*;

    /// Two writers race on a real broker (tansu): the one whose marker is later wins; the
    /// deposed one's late batch lands at an offset it did not expect (fenced) and every follower
    /// ignores it; a batch that breaks the sequence is refused as corruption.
    #[test]
    fn followers_apply_the_authoritative_order_and_ignore_a_deposed_writer() {
        let Ok(brokers) = std::env::var("EXCHANGE_TEST_KAFKA_BROKERS") else {
            eprintln!("SKIPPED: EXCHANGE_TEST_KAFKA_BROKERS not set (source scripts/services)");
            assert!(std::env::var("EXCHANGE_REQUIRE_SERVICES").is_err(), "services required");
            return;
        };
        let topic = format!("journal-test-{}-{}", std::process::id(), clock());
        let dir = std::env::temp_dir().join(format!("cluster-log-test-{}", std::process::id()));
        let timeout = Duration::from_secs(10);
        let old = JournalTopic::open(&brokers, &topic, 1, timeout).unwrap();
        let new = JournalTopic::open(&brokers, &topic, 1, timeout).unwrap();
        let old_epoch = old.append_epoch(1).unwrap();
        assert_eq!(old_epoch, 0);
        assert_eq!(old.append_batch(old_epoch, 1, 2, &records(&dir, 1, 2)).unwrap(), old_epoch + 1);
        // A newer primary appends its marker; the old one, unaware, appends its next batch.
        let new_epoch = new.append_epoch(2).unwrap();
        let late = old.append_batch(old_epoch, 3, 3, &records(&dir, 3, 1)).unwrap();
        assert_ne!(late, old_epoch + 2, "the deposed writer sees it did not get the offset it expected");
        assert_eq!(new.append_batch(new_epoch, 3, 4, &records(&dir, 3, 2)).unwrap(), late + 1);
        new.append_checkpoint(4, 0xabc).unwrap();

        let mut follower = LogFollower::open(&brokers, &topic, 1).unwrap();
        let mut seen = Vec::new();
        let mut checkpoints = Vec::new();
        follower
            .read_until::<ClusterError, _>(late + 3, timeout, &mut |followed| {
                match followed {
                    Followed::Command(record) => seen.push((record.sequence, record.payload[0])),
                    Followed::Checkpoint { sequence, state_hash } => checkpoints.push((sequence, state_hash)),
                    Followed::Epoch { .. } => {}
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, [(1, 1), (2, 2), (3, 3), (4, 4)]);
        assert_eq!(checkpoints, [(4, 0xabc)]);
        assert_eq!((follower.superseded(), follower.epoch(), follower.next_sequence()), (1, new_epoch, 5));
        assert_eq!(follower.highest_epoch_number(), 2);

        // A batch of the current epoch that skips sequences: corruption, nothing of it applied.
        new.append_batch(new_epoch, 9, 9, &records(&dir, 9, 1)).unwrap();
        let mut applied = 0;
        let error = follower
            .read_until::<ClusterError, _>(late + 4, timeout, &mut |_| {
                applied += 1;
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(error, ClusterError::Corrupt { .. }), "{error}");
        assert_eq!(applied, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn clock() -> u128 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    }
}
