//! The users topic (`[cluster] users_topic`, default `exchange.users`): the cluster's shared user
//! directory (docs/deployment.md, "User directory").
//!
//! The replicated primary is the single writer of user ids. Every directory change its
//! [`UserStore`] makes (a user, an API key, a revocation) is appended here, as the very line the
//! store writes to its `users/users.log` (`<crc32c> <JSON>`), and the store answers the request
//! only once Kafka acknowledged it (`acks=all`, [`UsersTopic`] is the store's
//! [`DirectoryLog`]). Gateway processes follow the topic live ([`UsersFollower`],
//! [`follow_in_background`]) and apply each record to their in-memory store: a user registered on
//! the primary trades through every gateway as soon as its records arrive. A standby follows it
//! too (into its store and its `users.log`) with a writer connected ahead ([`UsersTopic::open`]),
//! and when it becomes primary it reads the rest of the topic up to its own marker first
//! ([`UsersTopic::promote`]), so it knows every user and numbers
//! new ones after the highest id seen.
//!
//! # Records
//! One partition, one Kafka record per directory change; headers in ASCII decimal:
//!
//! | `kind` | other headers | value |
//! |---|---|---|
//! | `epoch` | `epoch` | empty: a new primary starts writing here |
//! | `record` | `epoch` | one users.log line, without its newline |
//!
//! # Epochs and the authoritative order
//! A primary's epoch is its journal-topic epoch (the offset of its marker there,
//! `cluster::log`), which increases from one primary to the next. A primary appends a `epoch`
//! marker with it before its first record. A reader keeps `E`, the highest epoch of any marker
//! read, and applies, in offset order, every `record` whose epoch is at least `E`; a record of an
//! older epoch (a deposed primary's late write) is superseded and ignored. Applying is
//! idempotent ([`UserStore::apply_replicated`]): reading a record twice (a restart reads the topic
//! from its start) changes nothing; the (epoch, offset) of a record is its directory version.
//!
//! # Fencing
//! The primary knows the offset its next record must get (right after its marker or its previous
//! record). If Kafka assigns another, someone appended in between: it reads those records back,
//! and a marker of a newer epoch means it is deposed: the record is superseded for every reader,
//! so the change is refused (`503`) and every later one too. A deposed primary's late records (an
//! older epoch) do not depose it.
//!
//! # An append whose outcome is unknown
//! A delivery that fails (the broker away longer than `[cluster] delivery_timeout_ms`) may still
//! have put the record in the topic, where every follower applies it. The primary cannot tell,
//! so it refuses that change (`503`) and **every later directory write** until it restarts
//! (trading goes on; a restart reads the topic again and knows the outcome): otherwise it could
//! give a user id a follower already gave to someone else. The journal topic lives on the same
//! brokers, so in practice the primary stops on its own journal's delivery failure first.

use super::log::{ClusterError, PARTITION, client_config, ensure_topic, ordered_producer_config};
use gateway_json::UserStore;
use gateway_json::users::DirectoryLog;
use sinks::rdkafka;
use sinks::rdkafka::Message;
use sinks::rdkafka::consumer::{BaseConsumer, Consumer};
use sinks::rdkafka::error::KafkaError;
use sinks::rdkafka::message::{Header, Headers, OwnedHeaders};
use sinks::rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a follower's fetch waits at the end of the topic: bounds how late a gateway learns a
/// new user (plus one produce and one fetch round trip).
const FETCH_WAIT_MS: &str = "20";
/// How long one poll of the background follower waits before it looks at the stop flag: a
/// promotion waits up to this long for the standby's reader to stop.
const FOLLOW_POLL: Duration = Duration::from_millis(20);
/// How long reading the topic to its end (at a gateway's start, at a promotion) may take.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest record value accepted (a users.log line is a few hundred bytes; an argon2 hash ~100).
const RECORD_BYTES_MAX: usize = 64 * 1024;

fn kafka(error: impl std::fmt::Display) -> ClusterError {
    ClusterError::Kafka(error.to_string())
}

/// What a users topic record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A new primary writes from here on.
    Epoch(i64),
    /// One directory change of the primary of this epoch.
    Record(i64),
}

impl Kind {
    fn parse(headers: Option<&rdkafka::message::BorrowedHeaders>) -> Result<Self, String> {
        let (mut kind, mut epoch) = (None, None);
        if let Some(headers) = headers {
            for header in headers.iter() {
                let value = header.value.and_then(|v| std::str::from_utf8(v).ok());
                match header.key {
                    "kind" => kind = value,
                    "epoch" => epoch = value,
                    _ => {}
                }
            }
        }
        let epoch: i64 = epoch.ok_or("no epoch header")?.parse().map_err(|e| format!("epoch header: {e}"))?;
        match kind {
            Some("epoch") => Ok(Self::Epoch(epoch)),
            Some("record") => Ok(Self::Record(epoch)),
            other => Err(format!("unknown kind {other:?}")),
        }
    }
}

/// Counters of a reader of the users topic (on `/metrics`).
pub use crate::http::UsersTopicStats as UsersStats;

/// Reads the users topic in offset order and applies the authoritative records (module
/// documentation) to a [`UserStore`]. Not a group member: it assigns the partition itself.
pub struct UsersFollower {
    consumer: BaseConsumer,
    topic: String,
    next_offset: i64,
    epoch: i64,
    stats: Arc<UsersStats>,
}

impl UsersFollower {
    /// Follows `topic` from its first record (creating it, one partition, if missing).
    ///
    /// # Errors
    /// The broker refused.
    pub fn open(brokers: &str, topic: &str, replication: i32) -> Result<Self, ClusterError> {
        ensure_topic(brokers, topic, replication)?;
        let consumer: BaseConsumer = client_config(brokers)
            // Required by librdkafka for a consumer; never joined (the partition is assigned).
            .set("group.id", "exchange-users-follower")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", FETCH_WAIT_MS)
            .create()
            .map_err(kafka)?;
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment.add_partition_offset(topic, PARTITION, rdkafka::Offset::Beginning).map_err(kafka)?;
        consumer.assign(&assignment).map_err(kafka)?;
        Ok(Self { consumer, topic: topic.to_string(), next_offset: 0, epoch: -1, stats: Arc::default() })
    }

    /// This reader's counters.
    pub fn stats(&self) -> Arc<UsersStats> {
        self.stats.clone()
    }

    /// The offset of the next record to read.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// The partition's end offset as the broker reports it.
    ///
    /// # Errors
    /// The broker did not answer.
    pub fn end_offset(&self) -> Result<i64, ClusterError> {
        let timeout = Duration::from_secs(10);
        let (_, high) = self.consumer.fetch_watermarks(&self.topic, PARTITION, timeout).map_err(kafka)?;
        Ok(high)
    }

    /// Reads what arrives within `timeout` and applies it to `store` (`persist`: also to its
    /// local record file). Returns the records read.
    ///
    /// # Errors
    /// Broker errors, or a record whose headers are not this topic's.
    pub fn poll(&mut self, timeout: Duration, store: &UserStore, persist: bool) -> Result<usize, ClusterError> {
        let mut read = 0;
        let mut wait = timeout;
        loop {
            let Some(message) = self.consumer.poll(wait) else { return Ok(read) };
            wait = Duration::ZERO;
            let message = match message {
                Ok(message) => message,
                Err(KafkaError::PartitionEOF(_)) => return Ok(read),
                Err(error) => return Err(kafka(error)),
            };
            let offset = message.offset();
            if offset < self.next_offset {
                continue; // A re-delivery after a reconnect: already read.
            }
            self.next_offset = offset + 1;
            read += 1;
            let kind = Kind::parse(message.headers())
                .map_err(|reason| ClusterError::Corrupt { offset, reason: format!("users topic headers: {reason}") })?;
            match kind {
                Kind::Epoch(epoch) => self.epoch = self.epoch.max(epoch),
                Kind::Record(epoch) if epoch < self.epoch => {
                    self.stats.superseded.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(offset, epoch, current = self.epoch, "users topic: superseded record ignored");
                }
                Kind::Record(epoch) => {
                    self.epoch = epoch;
                    let value = message.payload().unwrap_or(&[]);
                    let outcome = if value.len() > RECORD_BYTES_MAX {
                        Err(format!("{} bytes, more than {RECORD_BYTES_MAX}", value.len()))
                    } else {
                        store.apply_replicated(value, persist).map_err(|e| e.to_string())
                    };
                    let counter = match outcome {
                        Ok(true) => &self.stats.applied,
                        Ok(false) => &self.stats.known,
                        Err(error) => {
                            // Skipped, not fatal: the rest of the directory still serves.
                            tracing::error!(offset, %error, "users topic: record refused");
                            &self.stats.refused
                        }
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Reads and applies every record before offset `end` (exclusive) within `timeout`.
    ///
    /// # Errors
    /// As [`Self::poll`], or the timeout.
    pub fn read_until(
        &mut self,
        end: i64,
        timeout: Duration,
        store: &UserStore,
        persist: bool,
    ) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        while self.next_offset < end {
            if Instant::now() > deadline {
                return Err(kafka(format!(
                    "users topic: read to offset {} of {end} within {timeout:?}, not further",
                    self.next_offset
                )));
            }
            self.poll(Duration::from_millis(50), store, persist)?;
        }
        Ok(())
    }
}

/// A live reader of the users topic on a thread of its own: a gateway process's (which reads the
/// topic to its end before it serves) or a standby's (which keeps its store, and its
/// `users.log`, current, so that a promotion reads only the records after it).
pub struct UsersFollowing {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<UsersFollower>,
    stats: Arc<UsersStats>,
}

/// How a [`follow_in_background`] reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowMode {
    /// A gateway process: read the topic to its end before returning; in memory only (the topic
    /// is the directory, read from its start at every start).
    Gateway,
    /// A standby: return at once; each record also goes to the local `users.log`.
    Standby,
}

/// Follows `topic` into `store` on a background thread, from its first record (see
/// [`FollowMode`]).
///
/// # Errors
/// The broker, or (a gateway) the catch-up did not finish within [`CATCH_UP_TIMEOUT`].
pub fn follow_in_background(
    brokers: &str,
    topic: &str,
    replication: i32,
    store: Arc<UserStore>,
    mode: FollowMode,
) -> Result<UsersFollowing, ClusterError> {
    let started = Instant::now();
    let mut follower = UsersFollower::open(brokers, topic, replication)?;
    let persist = mode == FollowMode::Standby;
    let stats = follower.stats();
    if mode == FollowMode::Gateway {
        let end = follower.end_offset()?;
        follower.read_until(end, CATCH_UP_TIMEOUT, &store, persist)?;
        tracing::info!(
            records = end,
            applied = stats.applied.load(Ordering::Relaxed),
            users = store.user_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "users topic read: following it"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("users-follower".into())
        .spawn(move || {
            let mut failing = false;
            while !thread_stop.load(Ordering::Acquire) {
                match follower.poll(FOLLOW_POLL, &store, persist) {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("users topic readable again");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        // The broker away: new users and keys wait; retry (logged once).
                        if !failing {
                            tracing::error!(%error, "users topic unreadable: new users and keys wait for it");
                        }
                        failing = true;
                        std::thread::sleep(FOLLOW_POLL);
                    }
                }
            }
            follower
        })
        .map_err(kafka)?;
    Ok(UsersFollowing { stop, thread, stats })
}

impl UsersFollowing {
    /// The follower's counters.
    pub fn stats(&self) -> Arc<UsersStats> {
        self.stats.clone()
    }

    /// Stops the thread; the reader where it stopped (`None` if the thread panicked).
    pub fn stop(self) -> Option<UsersFollower> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().ok()
    }
}

/// The primary's writer of the users topic: the [`DirectoryLog`] of its [`UserStore`].
pub struct UsersTopic {
    brokers: String,
    topic: String,
    replication: i32,
    /// The counters of the reader that brought the store up to this writer's marker.
    stats: Arc<UsersStats>,
    producer: FutureProducer,
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
    epoch: i64,
    state: Mutex<WriterState>,
}

/// Where the primary's writer stands.
struct WriterState {
    /// The offset the next record must get.
    expected: i64,
    /// Why directory writes are refused from now on (a failed append whose outcome is unknown,
    /// or a newer primary's marker: this node is deposed).
    stopped: Option<String>,
}

impl UsersTopic {
    /// Connects a writer ahead of a promotion (creating the topic, one partition, if missing): a
    /// standby does this while it follows, so that its promotion pays only for its marker's round
    /// trip, not for the producer's set-up. Each append waits up to `timeout` for Kafka.
    ///
    /// # Errors
    /// The broker refused.
    pub fn open(brokers: &str, topic: &str, replication: i32, timeout: Duration) -> Result<Self, ClusterError> {
        ensure_topic(brokers, topic, replication)?;
        // A registration waits for its record: nothing to batch it with.
        let producer: FutureProducer = ordered_producer_config(brokers)
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .create()
            .map_err(kafka)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(kafka)?;
        Ok(Self {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            replication,
            stats: Arc::default(),
            producer,
            runtime,
            timeout,
            epoch: -1,
            state: Mutex::new(WriterState { expected: 0, stopped: None }),
        })
    }

    /// Takes over the users topic for a new primary of `epoch` (its journal-topic epoch): appends
    /// an epoch marker, reads every record before it into `store` (persisted in its local file,
    /// so the file stays a complete copy) from where `follower` (the standby's reader of the
    /// topic into this store) stands, or from the first record, and returns the writer to give
    /// the store ([`UserStore::set_directory_log`]).
    ///
    /// # Errors
    /// The broker, or the catch-up did not finish within [`CATCH_UP_TIMEOUT`].
    pub fn promote(
        mut self,
        epoch: i64,
        store: &UserStore,
        follower: Option<UsersFollower>,
    ) -> Result<Self, ClusterError> {
        let started = Instant::now();
        self.epoch = epoch;
        let mut writer = self;
        let marker = writer.send("epoch", &[])?;
        let mut follower = match follower {
            Some(follower) => follower,
            None => UsersFollower::open(&writer.brokers, &writer.topic, writer.replication)?,
        };
        let from = follower.next_offset();
        follower.read_until(marker, CATCH_UP_TIMEOUT, store, true)?;
        let stats = follower.stats();
        writer.state.lock().unwrap_or_else(|e| e.into_inner()).expected = marker + 1;
        writer.stats = stats.clone();
        tracing::info!(
            epoch,
            marker,
            from,
            applied = stats.applied.load(Ordering::Relaxed),
            known = stats.known.load(Ordering::Relaxed),
            users = store.user_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "users topic read up to this primary's marker: it writes the directory"
        );
        Ok(writer)
    }

    /// The counters of the reader that brought the store up to this writer's marker (the
    /// standby's, since it started).
    pub fn stats(&self) -> Arc<UsersStats> {
        self.stats.clone()
    }

    fn send(&self, kind: &str, value: &[u8]) -> Result<i64, ClusterError> {
        let epoch = self.epoch.to_string();
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header { key: "kind", value: Some(kind) })
            .insert(Header { key: "epoch", value: Some(epoch.as_str()) });
        let record = FutureRecord::<(), [u8]>::to(&self.topic).partition(PARTITION).payload(value).headers(headers);
        // On a thread of its own: the store calls this from HTTP handlers, some of them on the
        // async runtime's workers, where a runtime cannot be blocked on.
        std::thread::scope(|scope| {
            scope
                .spawn(|| match self.runtime.block_on(self.producer.send(record, self.timeout)) {
                    Ok(delivery) => Ok(delivery.offset),
                    Err((error, _)) => Err(kafka(error)),
                })
                .join()
        })
        .map_err(|_| kafka("the users topic append thread panicked"))?
    }

    /// Whether a record of another writer between `from` and `to` (exclusive) is a newer
    /// primary's marker.
    fn newer_marker_between(&self, from: i64, to: i64) -> Result<bool, ClusterError> {
        let consumer: BaseConsumer = client_config(&self.brokers)
            .set("group.id", "exchange-users-fence-check")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(kafka)?;
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment.add_partition_offset(&self.topic, PARTITION, rdkafka::Offset::Offset(from)).map_err(kafka)?;
        consumer.assign(&assignment).map_err(kafka)?;
        let deadline = Instant::now() + self.timeout;
        let mut next = from;
        while next < to {
            if Instant::now() > deadline {
                return Err(kafka(format!("users topic: timed out reading offsets {from}..{to} back")));
            }
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(message)) if message.offset() >= next => {
                    let offset = message.offset();
                    if let Ok(Kind::Epoch(epoch)) = Kind::parse(message.headers())
                        && epoch > self.epoch
                    {
                        return Ok(true);
                    }
                    next = offset + 1;
                }
                Some(Ok(_)) | None => {}
                Some(Err(error)) => return Err(kafka(error)),
            }
        }
        Ok(false)
    }
}

impl DirectoryLog for UsersTopic {
    fn append(&self, line: &str) -> Result<(), String> {
        // The store calls this under its lock, one record at a time: offsets are predictable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = &state.stopped {
            return Err(format!("directory writes stopped: {reason}"));
        }
        let expected = state.expected;
        // Any failure below leaves the record's fate unknown (it may be in the topic, applied by
        // every follower): this writer stops, so it never hands out again an id a follower may
        // have given to someone else. A restart rebuilds the directory from the topic.
        let outcome = self.send("record", line.as_bytes()).and_then(|assigned| {
            if assigned != expected && self.newer_marker_between(expected, assigned)? {
                return Err(ClusterError::Fenced { expected, assigned });
            }
            Ok(assigned)
        });
        match outcome {
            Ok(assigned) => {
                state.expected = assigned + 1;
                Ok(())
            }
            Err(error) => {
                let reason = format!(
                    "a users topic append failed ({error}); restart this node: it rebuilds the directory from the topic"
                );
                tracing::error!(reason, "user directory writes stopped");
                state.stopped = Some(reason.clone());
                Err(reason)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_binary::Credentials;
    use gateway_json::UsersConfig;

    fn brokers() -> Option<String> {
        let brokers = std::env::var("EXCHANGE_TEST_KAFKA_BROKERS").ok();
        if brokers.is_none() {
            eprintln!("EXCHANGE_TEST_KAFKA_BROKERS not set: skipping (source scripts/services)");
            assert!(std::env::var_os("EXCHANGE_REQUIRE_SERVICES").is_none(), "services required");
        }
        brokers
    }

    fn store(name: &str) -> UserStore {
        let dir = std::env::temp_dir().join(format!("users-topic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        UserStore::open(UsersConfig::new(dir), Arc::new(Credentials::default())).unwrap()
    }

    /// Two primaries race on one users topic: the older one (deposed by the newer one's marker)
    /// has its late registration refused and stops writing; the newer one goes on past that late
    /// record; a reader from the first record applies exactly what both primaries acknowledged.
    #[test]
    fn a_deposed_primary_is_refused_and_its_late_record_is_ignored_by_every_reader() {
        let Some(brokers) = brokers() else { return };
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let topic = format!("users-fence-{}-{nanos}", std::process::id());
        let timeout = Duration::from_secs(10);
        let old_store = Arc::new(store("old"));
        let old = UsersTopic::open(&brokers, &topic, 1, timeout).unwrap().promote(5, &old_store, None).unwrap();
        assert!(!old_store.set_directory_log(Arc::new(old)));
        let alice = old_store.register("alice", "password1").unwrap();

        // A newer primary takes over: it reads alice.
        let new_store = Arc::new(store("new"));
        // (as a standby: it followed the topic before its promotion)
        let following = follow_in_background(&brokers, &topic, 1, new_store.clone(), FollowMode::Standby).unwrap();
        let deadline = Instant::now() + timeout;
        while new_store.user_by_name("alice").is_none() {
            assert!(Instant::now() < deadline, "the standby's reader never applied alice");
            std::thread::sleep(Duration::from_millis(20));
        }
        let new = UsersTopic::open(&brokers, &topic, 1, timeout).unwrap();
        let new = new.promote(9, &new_store, following.stop()).unwrap();
        assert!(!new_store.set_directory_log(Arc::new(new)));
        assert_eq!(new_store.user_by_name("alice").map(|user| user.id), Some(alice.id));

        // The deposed one's registration lands after the newer marker: refused, and so is
        // everything after it.
        let refused = old_store.register("bob", "password2").unwrap_err();
        assert_eq!(refused.code, "SERVICE_UNAVAILABLE");
        assert!(old_store.user_by_name("bob").is_none());
        assert_eq!(old_store.register("dave", "password4").unwrap_err().code, "SERVICE_UNAVAILABLE");

        // The newer one's next append is not where it expected (the late record is between),
        // but no newer marker is: accepted. It numbers after alice.
        let carol = new_store.register("carol", "password3").unwrap();
        assert_eq!(carol.id.get(), alice.id.get() + 1);

        let reader = store("reader");
        let mut follower = UsersFollower::open(&brokers, &topic, 1).unwrap();
        let end = follower.end_offset().unwrap();
        follower.read_until(end, timeout, &reader, false).unwrap();
        let stats = follower.stats();
        assert!(reader.user_by_name("alice").is_some() && reader.user_by_name("carol").is_some());
        assert!(reader.user_by_name("bob").is_none(), "the deposed primary's late record is superseded");
        assert_eq!(stats.superseded.load(Ordering::Relaxed), 1);
        assert_eq!((stats.applied.load(Ordering::Relaxed), stats.refused.load(Ordering::Relaxed)), (2, 0));
    }
}
