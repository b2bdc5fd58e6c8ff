//! The Kafka sink: every event to its topic, keyed so per-key order holds, exactly once without
//! broker transactions.
//!
//! Topics (names and partition counts configurable, created at start through the admin API; the
//! broker need not auto-create):
//!
//! | topic | events | key |
//! |---|---|---|
//! | `orders` | accepted, rejected, canceled, expired, replaced, mass cancel report | market id |
//! | `trades` | fills | market id |
//! | `balance-events` | balance updates | user id |
//! | `book-updates` | book level updates | market id |
//!
//! The payload is the event as JSON ([`crate::json`]); headers `sequence`, `event-index`,
//! `template-id` and `type` (ASCII) identify it. The partition is chosen by the sink
//! (`crc32c(key) mod partitions`), so a replayed event lands in the partition it went to before.
//!
//! Exactly once: the producer is idempotent with `acks=all`, so within a producer session each
//! partition receives its messages in order, without gaps or duplicates. The sink sends at most
//! [`WINDOW_COMMANDS`] commands before waiting for every delivery, so after a crash every
//! partition holds a prefix of its messages and at most the last window is incomplete. On open
//! it reads the last message of every partition (its `(sequence, event-index)` headers), resumes
//! [`WINDOW_COMMANDS`] before the highest sequence found, and skips, per partition, what that
//! partition already holds. Tansu 0.6 has no transactions (EndTxn), which is why this is done
//! with headers rather than a transactional producer.

use crate::{CommandEvents, Resume, Sink, SinkError};
use codec::Event;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::time::Duration;

/// Commands sent before waiting for all their deliveries; the most a crash can leave half
/// written, and how far before the highest held sequence a restart looks.
pub const WINDOW_COMMANDS: u64 = 256;

/// Kafka settings.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port,…`.
    pub brokers: String,
    /// Order lifecycle topic.
    pub orders_topic: String,
    /// Trades topic.
    pub trades_topic: String,
    /// Balance events topic.
    pub balances_topic: String,
    /// Book level updates topic.
    pub book_topic: String,
    /// AMM pool events topic (liquidity added / removed, swaps, routed orders).
    pub pools_topic: String,
    /// Partitions of each topic created by the sink.
    pub partitions: i32,
    /// Replication factor of created topics.
    pub replication: i32,
}

impl KafkaConfig {
    /// Default topic names for `brokers`.
    pub fn new(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
            orders_topic: "orders".into(),
            trades_topic: "trades".into(),
            balances_topic: "balance-events".into(),
            book_topic: "book-updates".into(),
            pools_topic: "amm-events".into(),
            partitions: 3,
            replication: 1,
        }
    }

    fn topics(&self) -> [&str; 5] {
        [&self.orders_topic, &self.trades_topic, &self.balances_topic, &self.book_topic, &self.pools_topic]
    }
}

/// Identity of a message within the event stream.
type Position = (u64, u32);

/// The Kafka sink.
pub struct KafkaSink {
    config: KafkaConfig,
    runtime: tokio::runtime::Runtime,
    producer: Option<FutureProducer>,
    partitions: HashMap<String, i32>,
    /// Per (topic, partition): the last message it holds, from the resume scan.
    held: HashMap<(String, i32), Position>,
    /// The highest sequence any partition held at the resume scan.
    highest: u64,
}

fn kafka(error: impl std::fmt::Display) -> SinkError {
    SinkError::Service(format!("kafka: {error}"))
}

impl KafkaSink {
    /// A sink for `config`; connects on [`Sink::open`].
    ///
    /// # Errors
    /// The tokio runtime cannot be created.
    pub fn new(config: KafkaConfig) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Self { config, runtime, producer: None, partitions: HashMap::new(), held: HashMap::new(), highest: 0 })
    }

    /// The topic and key of an event.
    fn route(&self, event: &Event) -> (&str, u64) {
        let c = &self.config;
        match event {
            Event::OrderAccepted(m) => (&c.orders_topic, u64::from(m.market_id.get())),
            Event::OrderRejected(m) => (&c.orders_topic, u64::from(m.market_id.get())),
            Event::OrderCanceled(m) => (&c.orders_topic, u64::from(m.market_id.get())),
            Event::OrderExpired(m) => (&c.orders_topic, u64::from(m.market_id.get())),
            Event::OrderReplaced(m) => (&c.orders_topic, u64::from(m.market_id.get())),
            Event::MassCancelReport(m) => (&c.orders_topic, u64::from(m.market_id.get())),
            Event::Fill(m) => (&c.trades_topic, u64::from(m.market_id.get())),
            Event::BalanceUpdate(m) => (&c.balances_topic, m.user_id.get()),
            Event::BookLevelUpdate(m) => (&c.book_topic, u64::from(m.market_id.get())),
            Event::MarketStatusChanged(m) => (&c.orders_topic, u64::from(m.market_id.get())),
            Event::SwapExecuted(m) => (&c.pools_topic, u64::from(m.market_id.get())),
            Event::OrderRouted(m) => (&c.pools_topic, u64::from(m.market_id.get())),
            Event::TriggerPending(m) => (&c.orders_topic, u64::from(m.market_id.get())),
            Event::TriggerPlaced(m) => (&c.orders_topic, u64::from(m.market_id.get())),
            Event::TriggerFailed(m) => (&c.orders_topic, u64::from(m.market_id.get())),
            Event::LiquidityAdded(m) => (&c.pools_topic, u64::from(m.market_id.get())),
            Event::LiquidityRemoved(m) => (&c.pools_topic, u64::from(m.market_id.get())),
        }
    }
}

/// The partition of a key: `crc32c(decimal key) mod partitions`.
pub fn partition_of(key: &str, partitions: i32) -> i32 {
    (crc32c::crc32c(key.as_bytes()) % partitions.max(1) as u32) as i32
}

fn base_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("socket.timeout.ms", "10000").set("log_level", "3");
    config
}

/// Reads the `(sequence, event-index)` headers of a message.
pub fn position_of(headers: Option<&rdkafka::message::BorrowedHeaders>) -> Option<Position> {
    let headers = headers?;
    let mut sequence = None;
    let mut index = None;
    for header in headers.iter() {
        let value = header.value.and_then(|v| std::str::from_utf8(v).ok());
        match header.key {
            "sequence" => sequence = value.and_then(|v| v.parse().ok()),
            "event-index" => index = value.and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    Some((sequence?, index?))
}

impl Sink for KafkaSink {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn resume_margin(&self) -> u64 {
        WINDOW_COMMANDS
    }

    fn open(&mut self) -> Result<Resume, SinkError> {
        self.producer = None;
        let config = self.config.clone();
        // Topics: create what is missing.
        let admin: AdminClient<DefaultClientContext> = base_config(&config.brokers).create().map_err(kafka)?;
        let new_topics: Vec<NewTopic<'_>> = config
            .topics()
            .iter()
            .map(|t| NewTopic::new(t, config.partitions, TopicReplication::Fixed(config.replication)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = self.runtime.block_on(admin.create_topics(&new_topics, &options)).map_err(kafka)?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(kafka(format!("creating topic {topic}: {code}"))),
            }
        }
        // Partition counts and the last message of every partition.
        let consumer: BaseConsumer = base_config(&config.brokers)
            .set("group.id", "exchange-kafka-sink-resume")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "50")
            .set("session.timeout.ms", "6000")
            .create()
            .map_err(kafka)?;
        self.partitions.clear();
        self.held.clear();
        let mut assignment = rdkafka::TopicPartitionList::new();
        let mut partitions_total = 0usize;
        for topic in config.topics() {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(kafka)?;
            let count = metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len() as i32);
            if count == 0 {
                return Err(kafka(format!("topic {topic} has no partitions yet")));
            }
            self.partitions.insert(topic.to_string(), count);
            for partition in 0..count {
                // The high watermark is only a starting point (tansu 0.6 may report a stale one):
                // the partition is read from just before it to its end.
                let (low, high) =
                    consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).map_err(kafka)?;
                let start = if high > low { rdkafka::Offset::Offset(high - 1) } else { rdkafka::Offset::Beginning };
                assignment.add_partition_offset(topic, partition, start).map_err(kafka)?;
                partitions_total += 1;
            }
        }
        consumer.assign(&assignment).map_err(kafka)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut quiet_since = std::time::Instant::now();
        // Until every partition reported its end (the event names the partition number only, so
        // they are counted) and nothing more arrived for a moment.
        let mut ends = 0usize;
        while ends < partitions_total || quiet_since.elapsed() < Duration::from_millis(500) {
            if std::time::Instant::now() > deadline {
                return Err(kafka("timed out reading the end of every partition"));
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    quiet_since = std::time::Instant::now();
                    let position = position_of(message.headers())
                        .ok_or_else(|| kafka(format!("message without sequence headers in {}", message.topic())))?;
                    let entry = self.held.entry((message.topic().to_string(), message.partition())).or_insert(position);
                    *entry = (*entry).max(position);
                }
                Some(Err(KafkaError::PartitionEOF(_))) => ends += 1,
                Some(Err(error)) => return Err(kafka(error)),
                None => {}
            }
        }
        let highest = self.held.values().map(|p| p.0).max().unwrap_or(0);
        let producer: FutureProducer = base_config(&config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "120000")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .map_err(kafka)?;
        self.producer = Some(producer);
        self.highest = highest;
        tracing::info!(highest, partitions_with_data = self.held.len(), "kafka resume scan done");
        Ok(Resume::After(highest.saturating_sub(WINDOW_COMMANDS)))
    }

    fn write(&mut self, commands: &[CommandEvents]) -> Result<(), SinkError> {
        let producer = self.producer.clone().ok_or_else(|| kafka("not connected"))?;
        for window in commands.chunks(WINDOW_COMMANDS as usize) {
            let mut deliveries = Vec::new();
            for command in window {
                for (index, event) in command.events.iter().enumerate() {
                    let (topic, key) = self.route(event);
                    let key = key.to_string();
                    let partition = partition_of(&key, self.partitions.get(topic).copied().unwrap_or(1));
                    let position = (command.sequence, index as u32);
                    if command.sequence <= self.highest
                        && self.held.get(&(topic.to_string(), partition)).is_some_and(|held| position <= *held)
                    {
                        continue;
                    }
                    let payload = crate::json::event_json(event, index).to_string();
                    let (sequence, event_index) = (command.sequence.to_string(), index.to_string());
                    let template = crate::json::template_id(event).to_string();
                    let headers = OwnedHeaders::new_with_capacity(4)
                        .insert(Header { key: "sequence", value: Some(sequence.as_str()) })
                        .insert(Header { key: "event-index", value: Some(event_index.as_str()) })
                        .insert(Header { key: "template-id", value: Some(template.as_str()) })
                        .insert(Header { key: "type", value: Some(crate::json::type_name(event)) });
                    let mut record =
                        FutureRecord::to(topic).key(&key).payload(&payload).partition(partition).headers(headers);
                    loop {
                        match producer.send_result(record) {
                            Ok(delivery) => {
                                deliveries.push(delivery);
                                break;
                            }
                            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                                record = back;
                                producer.poll(Duration::from_millis(10));
                            }
                            Err((error, _)) => return Err(kafka(error)),
                        }
                    }
                }
            }
            self.runtime.block_on(async {
                for delivery in deliveries {
                    match delivery.await {
                        Ok(Ok(_)) => {}
                        Ok(Err((error, _))) => return Err(kafka(error)),
                        Err(_) => return Err(kafka("delivery cancelled")),
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_in_range() {
        for partitions in [1, 3, 7] {
            for key in 0..1_000u64 {
                let key = key.to_string();
                let partition = partition_of(&key, partitions);
                assert!((0..partitions).contains(&partition));
                assert_eq!(partition, partition_of(&key, partitions), "a replayed event goes where it went");
            }
        }
        // Fixed by the documented formula (crc32c of the decimal key), not by a library's hasher.
        assert_eq!(partition_of("1", 3), (crc32c::crc32c(b"1") % 3) as i32);
    }
}
