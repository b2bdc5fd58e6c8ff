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
//! [`CommandsConsumer`] assigns itself every partition from the beginning (no consumer group, no
//! committed offsets: nothing outside the engine's state says what was applied). To keep a
//! re-read from journaling every old command again, it skips (before the ring) the commands the
//! engine's table already covers, as of the engine it starts from, and afterwards every command
//! at or below the highest it pushed for that gateway. That filter is only an optimisation: the
//! engine's own check is the rule. The cost is reading the topic's retention at every promotion
//! (see docs/deployment.md, "Gateway processes", "Limits").

use super::log::{ClusterError, client_config, create_topic};
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
        let producer = client_config(brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Every millisecond of linger is added to every order's acknowledgement.
            .set("linger.ms", "0")
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
}

impl CommandsConsumer {
    /// Starts consuming every partition of the commands topic from its beginning; `applied` is
    /// the deduplication table of the engine the primary starts from
    /// ([`Engine::gateway_sequences`]), which seeds the filter.
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
        let mut assignment = TopicPartitionList::new();
        for partition in 0..count {
            let partition = i32::try_from(partition).map_err(kafka)?;
            assignment.add_partition_offset(topic, partition, Offset::Beginning).map_err(kafka)?;
        }
        consumer.assign(&assignment).map_err(kafka)?;
        let highest = applied;
        let stop = Arc::new(AtomicBool::new(false));
        let (pushed, skipped) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut reader =
            Reader { consumer, ring, highest, stop: stop.clone(), pushed: pushed.clone(), skipped: skipped.clone() };
        let thread =
            std::thread::Builder::new().name("commands-topic".into()).spawn(move || reader.run()).map_err(kafka)?;
        tracing::info!(topic, partitions = count, "consuming the gateway processes' commands");
        Ok(Self { stop, thread: Some(thread), pushed, skipped })
    }

    /// Stops the consumer thread.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Reader {
    consumer: BaseConsumer,
    ring: Arc<IngressRing>,
    /// Per gateway: the highest sequence applied (at start) or pushed since.
    highest: BTreeMap<u64, u64>,
    stop: Arc<AtomicBool>,
    pushed: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
}

impl Reader {
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
            let (command, tag) = match codec::decode_journaled(message.payload().unwrap_or(&[])) {
                Ok((command, Some(tag))) => (command, tag),
                Ok((_, None)) => {
                    tracing::error!(
                        offset = message.offset(),
                        "commands topic record without a gateway origin: skipped"
                    );
                    continue;
                }
                Err(error) => {
                    tracing::error!(offset = message.offset(), %error, "commands topic record does not decode: skipped");
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
