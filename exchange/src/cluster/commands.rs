//! The commands topic (`[cluster] commands_topic`, default `exchange.commands`): how gateway
//! processes (`exchange gateway`, [`super::gateway`]) hand commands to the replicated primary.
//!
//! # Records
//! Key: the sending gateway's id (ASCII decimal), so one gateway's commands land in one partition
//! and stay in the order it sent them. Value: the command exactly as the journal will hold it
//! ([`codec::encode_journaled`]): the command's SBE message followed by the
//! [`codec::origin::GatewayOrigin`] trailer (gateway id, gateway sequence). A value without the
//! trailer is refused (logged, skipped): every command through this topic must be deduplicable.
//!
//! # Exactly once
//! The producer is idempotent (no duplicates from its own retries), but a gateway that restarts
//! or a primary that fails over may still deliver a command twice. The engine decides: it drops
//! a command whose gateway sequence is not above the highest it applied for that gateway
//! ([`Engine::is_duplicate`]), and that table is engine state (journaled with the
//! commands, in snapshots and in the state hash), so the primary, the standby and every follower
//! drop exactly the same duplicates.
//!
//! # The primary's consumer
//! [`CommandsConsumer`] assigns itself every partition (no consumer group, no committed offsets:
//! nothing outside the engine's state says what was applied) and starts each one at the first
//! record the engine it starts from has not **covered**, found by a binary search over the
//! partition's offsets ([`first_uncovered`]). A record is covered when the engine would drop it as
//! a duplicate: its gateway sequence is not above the highest the engine applied for its gateway
//! (the engine's deduplication table, authoritative state: every entry came from the log).
//!
//! Why that start is safe (exactly once): within one partition, a primary pushes records into
//! its one ingress ring in offset order and the engine journals them in ring order, so the
//! records of a partition that reached the authoritative log form a prefix of what that primary
//! read (a batch that was fenced is never in the log, and nothing after it is either). By
//! induction over the primaries (each starts at a record before which every command is covered),
//! the covered commands of a partition come before every command that is not: the binary search
//! lands right after a covered command and before or at the first uncovered one, so skipping the
//! records before it skips only commands the engine would drop; every record from there on is
//! delivered again (at least once), and the engine's table drops the ones that were applied (at
//! most once). Records that are not commands, or commands of a gateway the engine does not track
//! ([`engine::GATEWAYS_MAX`]), count as not covered: they can only move the start earlier.
//! Assumption: a gateway's commands appear in its partition in gateway-sequence order (one
//! producer per gateway id at a time, idempotent and in order; a restarted gateway catches up
//! with the log before it sends, long after a dead process's last request reached the broker).
//!
//! After the start, it also skips (before the ring) every command at or below the highest it
//! pushed for that gateway. That filter is only an optimisation: the engine's own check is the
//! rule.
//!
//! # Bad records
//! A record that is not a journaled command with a gateway origin (garbage, truncated, an unknown
//! template, a command without the origin trailer) or longer than [`COMMAND_RECORD_BYTES_MAX`] is
//! skipped before the ring, logged and counted ([`CommandsConsumer::malformed`],
//! `exchange_cluster_commands_malformed_total`). It never reaches the journal, so every
//! follower (standby, replicas, gateway processes, which read the journal topic, never the
//! commands topic) applies exactly the same commands: the skip is deterministic by construction.

use super::log::{ClusterError, client_config, create_topic, ordered_producer_config};
use codec::GatewayTag;
#[cfg(doc)]
use engine::Engine;
use engine::bus::{IngressCommand, IngressRing};
use sinks::rdkafka::Message;
use sinks::rdkafka::admin::{NewTopic, TopicReplication};
use sinks::rdkafka::consumer::{BaseConsumer, Consumer};
use sinks::rdkafka::error::KafkaError;
use sinks::rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use sinks::rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long metadata and admin requests may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one consumer poll waits for records before the stop flag is looked at again.
const CONSUMER_POLL: Duration = Duration::from_millis(50);
/// How long the consumer waits before pushing again into a full ingress ring.
const RING_FULL_BACKOFF: Duration = Duration::from_micros(50);
/// How long a fetch waits at the end of a partition: bounds the added latency of a quiet topic.
const FETCH_WAIT_MS: &str = "1";
/// The longest commands topic record the primary takes: far above any command (SBE messages are
/// a few hundred bytes), far below what would matter to the ring or the journal.
pub const COMMAND_RECORD_BYTES_MAX: usize = 4096;
/// How long one probe of the start-up search may take: milliseconds on a healthy broker; past
/// it, the search gives up and the partition is read from its start (correct, only slower).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The ingress origin of commands from gateway processes on the primary: no session of the
/// primary's own gateways waits for them (their gateway answers from the journal topic).
pub const REMOTE_GATEWAY_ORIGIN: u64 = 0;

fn kafka(error: impl std::fmt::Display) -> ClusterError {
    ClusterError::Kafka(error.to_string())
}

/// Creates the commands topic with `partitions` partitions unless it exists.
///
/// # Errors
/// The broker refused.
pub fn ensure_commands_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), ClusterError> {
    create_topic(brokers, &NewTopic::new(topic, partitions.max(1), TopicReplication::Fixed(replication)))
}

/// Logs the commands the broker did not take (their requests time out at the gateway: the client
/// sees the same "no answer in time" error as when the engine is down).
struct DeliveryLog {
    failures: Arc<AtomicU64>,
}

impl ClientContext for DeliveryLog {}

impl ProducerContext for DeliveryLog {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((error, _)) = result {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, "a command was not delivered to the commands topic");
        }
    }
}

/// A gateway process's writer of the commands topic: idempotent, `acks=all`, `linger.ms=0`;
/// sends without waiting (the answer comes from the journal topic).
pub struct CommandsProducer {
    producer: ThreadedProducer<DeliveryLog>,
    topic: String,
    key: String,
    /// Commands the broker did not take.
    pub failures: Arc<AtomicU64>,
}

impl CommandsProducer {
    /// Connects (creating the topic if missing) as gateway `gateway_id`.
    ///
    /// # Errors
    /// The broker refused.
    pub fn open(
        brokers: &str,
        topic: &str,
        partitions: i32,
        replication: i32,
        gateway_id: u64,
    ) -> Result<Self, ClusterError> {
        ensure_commands_topic(brokers, topic, partitions, replication)?;
        let failures = Arc::new(AtomicU64::new(0));
        // Every millisecond of linger would be added to every order's acknowledgement.
        let producer = ordered_producer_config(brokers)
            .create_with_context(DeliveryLog { failures: failures.clone() })
            .map_err(kafka)?;
        Ok(Self { producer, topic: topic.to_string(), key: gateway_id.to_string(), failures })
    }

    /// Queues one command (`payload`: [`codec::encode_journaled`] with the gateway's tag).
    ///
    /// # Errors
    /// The producer's queue is full or the record is refused at once.
    pub fn send(&self, payload: &[u8]) -> Result<(), ClusterError> {
        let record = BaseRecord::<str, [u8]>::to(&self.topic).key(self.key.as_str()).payload(payload);
        self.producer.send(record).map_err(|(error, _)| kafka(error))
    }

    /// Waits up to `timeout` for queued commands to be delivered.
    pub fn flush(&self, timeout: Duration) {
        use sinks::rdkafka::producer::Producer;
        let _ = self.producer.flush(timeout);
    }
}

/// The primary's reader of the commands topic: pushes every command not known to be a
/// duplicate into the ingress ring (see the module documentation).
pub struct CommandsConsumer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Commands pushed into the ring.
    pub pushed: Arc<AtomicU64>,
    /// Commands skipped as already applied (before the ring).
    pub skipped: Arc<AtomicU64>,
    /// Records skipped because they are not a command with a gateway origin, or too long.
    pub malformed: Arc<AtomicU64>,
    /// Records of the commands topic read (what a start past the covered records saves shows
    /// here).
    pub read: Arc<AtomicU64>,
}

impl CommandsConsumer {
    /// Starts consuming every partition of the commands topic from its first record not covered
    /// by `applied`, the deduplication table of the engine the primary starts from
    /// ([`Engine::gateway_sequences`]), which also seeds the filter (module documentation).
    ///
    /// # Errors
    /// The broker refused, or the thread could not start.
    pub fn start(
        brokers: &str,
        topic: &str,
        partitions: i32,
        replication: i32,
        applied: BTreeMap<u64, u64>,
        ring: Arc<IngressRing>,
    ) -> Result<Self, ClusterError> {
        ensure_commands_topic(brokers, topic, partitions, replication)?;
        let consumer: BaseConsumer = client_config(brokers)
            // Required by librdkafka for a consumer; never joined (partitions are assigned).
            .set("group.id", "exchange-commands-primary")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", FETCH_WAIT_MS)
            .create()
            .map_err(kafka)?;
        let metadata = consumer.fetch_metadata(Some(topic), ADMIN_TIMEOUT).map_err(kafka)?;
        let count = metadata.topics().first().map_or(0, |t| t.partitions().len());
        if count == 0 {
            return Err(kafka(format!("topic {topic} has no partitions")));
        }
        let partitions = (0..count).map(i32::try_from).collect::<Result<Vec<_>, _>>().map_err(kafka)?;
        let stop = Arc::new(AtomicBool::new(false));
        let counter = || Arc::new(AtomicU64::new(0));
        let (pushed, skipped, malformed, read) = (counter(), counter(), counter(), counter());
        let mut reader = Reader {
            consumer,
            ring,
            highest: applied,
            stop: stop.clone(),
            pushed: pushed.clone(),
            skipped: skipped.clone(),
            malformed: malformed.clone(),
            read: read.clone(),
        };
        let (brokers, topic) = (brokers.to_string(), topic.to_string());
        // The search runs on the consumer's thread: it delays the gateway processes' commands,
        // never the promotion or the primary's own gateways.
        let thread = std::thread::Builder::new()
            .name("commands-topic".into())
            .spawn(move || {
                if let Err(error) = reader.assign_from_first_uncovered(&brokers, &topic, &partitions) {
                    tracing::error!(%error, "commands topic: cannot assign its partitions; no gateway process commands");
                    return;
                }
                reader.run();
            })
            .map_err(kafka)?;
        Ok(Self { stop, thread: Some(thread), pushed, skipped, malformed, read })
    }

    /// The counters, for `/metrics`.
    pub fn stats(&self) -> crate::http::CommandsTopicStats {
        crate::http::CommandsTopicStats {
            read: self.read.clone(),
            pushed: self.pushed.clone(),
            skipped: self.skipped.clone(),
            malformed: self.malformed.clone(),
        }
    }

    /// Stops the consumer thread.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether a commands topic record is covered by the deduplication table `applied` (module
/// documentation): a command whose gateway sequence is not above the highest applied for its
/// gateway. Anything else counts as not covered, including records that are not commands and
/// commands of a gateway the engine does not track: those may sit anywhere in a partition, and
/// only covered records form a prefix, so counting them as covered could move the start past a
/// command that was never applied; as not covered they can only move it earlier.
fn covered(applied: &BTreeMap<u64, u64>, payload: &[u8]) -> bool {
    match decode_record(payload) {
        Ok((_, tag)) => applied.get(&tag.gateway_id).is_some_and(|&highest| tag.gateway_sequence <= highest),
        Err(_) => false,
    }
}

/// Decodes a commands topic record: a command with its gateway origin, not longer than
/// [`COMMAND_RECORD_BYTES_MAX`].
fn decode_record(payload: &[u8]) -> Result<(codec::Command, GatewayTag), String> {
    if payload.len() > COMMAND_RECORD_BYTES_MAX {
        return Err(format!("{} bytes, more than {COMMAND_RECORD_BYTES_MAX}", payload.len()));
    }
    match codec::decode_journaled(payload) {
        Ok((command, Some(tag))) => Ok((command, tag)),
        Ok((_, None)) => Err("no gateway origin".into()),
        Err(error) => Err(error.to_string()),
    }
}

/// The first offset of `low..high` whose record the engine's table does not cover; `high`
/// when all are covered. `probe` reads the record at an offset (`None`: there is none, which
/// counts as not covered). Coverage is a prefix property of a partition (module documentation),
/// so a binary search finds it in about `log2(high - low)` probes.
///
/// `high` is the partition's high watermark. A broker that reports it too low (tansu 0.6
/// reports one past the last record *batch* of a producer that batched several records, not
/// one past the last record) only makes the start earlier: more records read again, each
/// dropped by the engine's table, never one skipped.
///
/// # Errors
/// A probe failed.
pub fn first_uncovered(
    low: i64,
    high: i64,
    mut probe: impl FnMut(i64) -> Result<Option<bool>, ClusterError>,
) -> Result<i64, ClusterError> {
    // Invariant: every record before `first` is covered; the record at `last` is not (or
    // `last` is the end).
    let (mut first, mut last) = (low, high.max(low));
    while first < last {
        let middle = first + (last - first) / 2;
        if probe(middle)?.unwrap_or(false) {
            first = middle + 1;
        } else {
            last = middle;
        }
    }
    Ok(first)
}

struct Reader {
    consumer: BaseConsumer,
    ring: Arc<IngressRing>,
    /// Per gateway: the highest sequence applied (at start) or pushed since.
    highest: BTreeMap<u64, u64>,
    stop: Arc<AtomicBool>,
    pushed: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
    malformed: Arc<AtomicU64>,
    read: Arc<AtomicU64>,
}

impl Reader {
    /// Assigns every partition at its first record not covered by the engine's table.
    fn assign_from_first_uncovered(
        &mut self,
        brokers: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<(), ClusterError> {
        let probe: BaseConsumer = client_config(brokers)
            .set("group.id", "exchange-commands-probe")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            // An offset past the end is the end, not a reason to jump elsewhere.
            .set("auto.offset.reset", "latest")
            .set("fetch.wait.max.ms", FETCH_WAIT_MS)
            .create()
            .map_err(kafka)?;
        let mut assignment = TopicPartitionList::new();
        for &partition in partitions {
            let (low, high) = self.consumer.fetch_watermarks(topic, partition, ADMIN_TIMEOUT).map_err(kafka)?;
            let mut probes = 0;
            let searched = first_uncovered(low, high, |offset| {
                probes += 1;
                Ok(read_at(&probe, topic, partition, offset)?.map(|payload| covered(&self.highest, &payload)))
            });
            let start = match searched {
                Ok(start) => start,
                Err(error) => {
                    // Correct, only slower: the engine drops what it applied.
                    tracing::warn!(%error, partition, "commands topic: search failed; reading the partition from its start");
                    low
                }
            };
            tracing::info!(
                topic,
                partition,
                low,
                high,
                start,
                probes,
                "commands topic: starting after the records the engine covers"
            );
            assignment.add_partition_offset(topic, partition, Offset::Offset(start)).map_err(kafka)?;
        }
        self.consumer.assign(&assignment).map_err(kafka)?;
        tracing::info!(topic, partitions = partitions.len(), "consuming the gateway processes' commands");
        Ok(())
    }

    fn run(&mut self) {
        while !self.stop.load(Ordering::Acquire) {
            let Some(message) = self.consumer.poll(CONSUMER_POLL) else { continue };
            let message = match message {
                Ok(message) => message,
                Err(KafkaError::PartitionEOF(_)) => continue,
                Err(error) => {
                    tracing::warn!(%error, "commands topic");
                    continue;
                }
            };
            self.read.fetch_add(1, Ordering::Relaxed);
            let (command, tag) = match decode_record(message.payload().unwrap_or(&[])) {
                Ok(decoded) => decoded,
                Err(error) => {
                    self.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        partition = message.partition(),
                        offset = message.offset(),
                        %error,
                        "commands topic record is not a command with a gateway origin: skipped"
                    );
                    continue;
                }
            };
            if self.already_seen(tag) {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut item = IngressCommand::from_gateway(REMOTE_GATEWAY_ORIGIN, command, tag);
            loop {
                match self.ring.push(item) {
                    Ok(()) => break,
                    Err(back) if !self.stop.load(Ordering::Acquire) => {
                        item = back;
                        std::thread::sleep(RING_FULL_BACKOFF);
                    }
                    Err(_) => return,
                }
            }
            self.highest.insert(tag.gateway_id, tag.gateway_sequence);
            self.pushed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn already_seen(&self, tag: GatewayTag) -> bool {
        self.highest.get(&tag.gateway_id).is_some_and(|&highest| tag.gateway_sequence <= highest)
    }
}

/// The payload of the record at `offset` of `partition` (the first at or after it), read by
/// `probe` within [`PROBE_TIMEOUT`]; `None` when the partition ends before it.
fn read_at(probe: &BaseConsumer, topic: &str, partition: i32, offset: i64) -> Result<Option<Vec<u8>>, ClusterError> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(offset)).map_err(kafka)?;
    // A fresh assignment each time: re-assigning an assigned partition may keep its fetch
    // position.
    probe.unassign().map_err(kafka)?;
    probe.assign(&assignment).map_err(kafka)?;
    let deadline = std::time::Instant::now() + PROBE_TIMEOUT;
    while std::time::Instant::now() < deadline {
        match probe.poll(CONSUMER_POLL) {
            Some(Ok(message)) if message.partition() == partition && message.offset() >= offset => {
                return Ok(Some(message.payload().unwrap_or(&[]).to_vec()));
            }
            Some(Ok(_)) | None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(None),
            Some(Err(error)) => return Err(kafka(error)),
        }
    }
    Err(kafka(format!("no record at offset {offset} of {topic}/{partition} within {PROBE_TIMEOUT:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::{Side, TimeInForce};
    use engine::testkit::commands::limit;
    use sinks::rdkafka::producer::{BaseProducer, Producer};

    const GATEWAY: u64 = 7;

    /// One journaled command of `GATEWAY` with gateway sequence `sequence`.
    fn command(sequence: u64) -> Vec<u8> {
        let command = limit(1, 1, Side::Bid, 19_000, 1, TimeInForce::Gtc, 0);
        let mut out = [0u8; 512];
        let tag = GatewayTag { gateway_id: GATEWAY, gateway_sequence: sequence };
        let length = codec::encode_journaled(&command, Some(tag), &mut out).unwrap();
        out[..length].to_vec()
    }

    /// A fresh one-partition commands topic holding `records` (in order).
    fn topic_with(brokers: &str, name: &str, records: &[Vec<u8>]) -> String {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let topic = format!("commands-{name}-{}-{nanos}", std::process::id());
        ensure_commands_topic(brokers, &topic, 1, 1).unwrap();
        let producer: BaseProducer = client_config(brokers).set("message.max.bytes", "1000000").create().unwrap();
        for record in records {
            let key = GATEWAY.to_string();
            producer.send(BaseRecord::<str, [u8]>::to(&topic).key(&key).payload(record)).unwrap();
            // One record per produce request, as a gateway under light load sends them: tansu
            // reports the high watermark per batch (see `first_uncovered`).
            producer.flush(Duration::from_secs(10)).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        topic
    }

    /// Pops `count` commands from `ring` (their gateway sequences), then checks nothing else comes.
    fn drain(ring: &IngressRing, count: usize) -> Vec<u64> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut sequences = Vec::new();
        while sequences.len() < count {
            assert!(std::time::Instant::now() < deadline, "only {sequences:?} arrived");
            match ring.pop() {
                Some(item) => sequences.push(item.gateway.unwrap().gateway_sequence),
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(ring.pop().is_none(), "nothing after {sequences:?}");
        sequences
    }

    fn brokers() -> Option<String> {
        let brokers = std::env::var("EXCHANGE_TEST_KAFKA_BROKERS").ok();
        if brokers.is_none() {
            eprintln!("SKIPPED: EXCHANGE_TEST_KAFKA_BROKERS not set (source scripts/services)");
            assert!(std::env::var("EXCHANGE_REQUIRE_SERVICES").is_err(), "services required");
        }
        brokers
    }

    /// A new primary whose engine applied gateway 7 up to sequence 40 (of 50 in the topic) reads
    /// only the 10 records after them, not the whole topic, and pushes exactly those.
    #[test]
    fn a_new_primary_starts_after_the_commands_its_engine_covers() {
        let Some(brokers) = brokers() else { return };
        let records: Vec<Vec<u8>> = (1..=50).map(command).collect();
        let topic = topic_with(&brokers, "covered", &records);
        let ring = Arc::new(IngressRing::new(1024));
        let applied = BTreeMap::from([(GATEWAY, 40)]);
        let consumer = CommandsConsumer::start(&brokers, &topic, 1, 1, applied, ring.clone()).unwrap();
        assert_eq!(drain(&ring, 10), (41..=50).collect::<Vec<_>>());
        assert_eq!(consumer.read.load(Ordering::Relaxed), 10, "only the records after the covered ones are read");
        assert_eq!(consumer.skipped.load(Ordering::Relaxed), 0);
        consumer.shutdown();
        // An engine that covers nothing: everything from the first record.
        let consumer = CommandsConsumer::start(&brokers, &topic, 1, 1, BTreeMap::new(), ring.clone()).unwrap();
        assert_eq!(drain(&ring, 50), (1..=50).collect::<Vec<_>>());
        consumer.shutdown();
    }

    /// Records that are not a command with a gateway origin (garbage, truncated, an unknown
    /// template, no origin trailer, too long) are skipped and counted; the consumer goes on
    /// with the commands around them. They never reach the ring, hence never the journal: every
    /// follower of the journal topic applies the same commands.
    #[test]
    fn malformed_commands_topic_records_are_skipped_counted_and_do_not_stop_the_consumer() {
        let Some(brokers) = brokers() else { return };
        let valid = command(2);
        let mut unknown_template = valid.clone();
        unknown_template[2] = 0xEE; // the SBE header's template id (little-endian u16 at 2..4)
        unknown_template[3] = 0xEE;
        let (plain, _) = codec::decode_journaled(&valid).unwrap();
        let mut without_origin = [0u8; 512];
        let length = codec::encode_journaled(&plain, None, &mut without_origin).unwrap();
        let mut oversized = command(3);
        oversized.resize(COMMAND_RECORD_BYTES_MAX + 1, 0);
        let records = vec![
            command(1),
            b"definitely not SBE".to_vec(),
            valid[..valid.len() / 2].to_vec(),
            unknown_template,
            without_origin[..length].to_vec(),
            oversized,
            Vec::new(),
            valid,
            command(4),
        ];
        let topic = topic_with(&brokers, "malformed", &records);
        let ring = Arc::new(IngressRing::new(1024));
        let consumer = CommandsConsumer::start(&brokers, &topic, 1, 1, BTreeMap::new(), ring.clone()).unwrap();
        assert_eq!(drain(&ring, 3), [1, 2, 4]);
        assert_eq!(consumer.malformed.load(Ordering::Relaxed), 6);
        assert_eq!(consumer.read.load(Ordering::Relaxed), 9);
        consumer.shutdown();
        // A new primary whose engine covers 1..=2 starts at a malformed record or after: the
        // search treats them as covered (they would be skipped again), and still pushes 4.
        let consumer =
            CommandsConsumer::start(&brokers, &topic, 1, 1, BTreeMap::from([(GATEWAY, 2)]), ring.clone()).unwrap();
        assert_eq!(drain(&ring, 1), [4]);
        consumer.shutdown();
    }

    /// The search finds the first uncovered offset with a logarithmic number of probes, never
    /// probing at or past the end it is given.
    #[test]
    fn the_first_uncovered_offset_is_found_by_binary_search() {
        for (low, high, first) in [(0, 0, 0), (0, 1, 0), (0, 1, 1), (5, 1000, 5), (5, 1000, 999), (5, 1000, 1000)] {
            let mut probes = 0;
            let found = first_uncovered(low, high, |offset| {
                probes += 1;
                assert!((low..high).contains(&offset));
                Ok(Some(offset < first))
            })
            .unwrap();
            assert_eq!(found, first);
            assert!(probes <= 11, "{probes} probes for {low}..{high}");
        }
    }
}
