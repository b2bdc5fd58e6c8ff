//! Leadership through Kafka itself: every candidate joins one consumer group on a one-partition
//! lease topic; the member the group coordinator assigns partition 0 holds the lease. The
//! coordinator's session timeout is the failure detector: a member that stops heartbeating
//! (killed, frozen, cut off) is dropped after it and the partition goes to another member.
//!
//! The lease is a liveness device, not a safety one: two processes can briefly both believe they
//! lead (a frozen primary does not know it was dropped). Safety comes from fencing on the journal
//! topic ([`super::log`]): a deposed primary's next append lands at an offset it did not expect
//! and it exits unacknowledged.
//!
//! Dynamic members only (no `group.instance.id`): tansu 0.6 delays static members' rebalances.

use super::log::{ClusterError, PARTITION, client_config, ensure_topic};
use sinks::rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use sinks::rdkafka::{ClientContext, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Client id prefix of lease members; the start time follows (see [`Lease::join`]).
const LEASE_CLIENT_PREFIX: &str = "exchange-lease-";

/// Nanoseconds since the epoch, now: orders lease members by start time.
fn started_ns() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// How often the lease thread polls the group (heartbeats and rebalances are served by polls).
const LEASE_POLL: Duration = Duration::from_millis(20);
/// The heartbeat interval as a fraction of the session timeout: several heartbeats fit into
/// one timeout, so one late heartbeat does not cost the lease.
const HEARTBEATS_PER_SESSION: u64 = 10;
/// The shortest heartbeat interval asked of the broker.
const HEARTBEAT_MS_MIN: u64 = 50;

/// What the group told this member, shared with the rest of the process.
#[derive(Debug, Default)]
struct LeaseState {
    /// Partition 0 is assigned to this member.
    leader: AtomicBool,
    /// When partition 0 was last assigned to this member (µs since the UNIX epoch; 0: never).
    acquired_unix_us: AtomicU64,
    /// Exit the process ([`crate::runtime::FENCED_EXIT_CODE`]) when the lease is lost while
    /// held: set once this process serves as primary.
    exit_on_loss: AtomicBool,
    /// Stop the lease thread.
    stop: AtomicBool,
    /// Partition 0 was revoked by a rebalance whose assignment has not arrived yet.
    revoked: AtomicBool,
    /// The group has assigned this member (something or nothing) once: it takes part in
    /// elections.
    joined: AtomicBool,
    /// The last JoinGroup response made this member the leader of a group of one (from
    /// librdkafka's `cgrp` debug log: the only place it is told).
    sole_member: AtomicBool,
    /// The lease thread must leave the group and join again (see [`LeaseContext::post_rebalance`]).
    rejoin: AtomicBool,
}

/// What librdkafka logs (facility `JOINGROUP`) when a JoinGroup response makes this member the
/// leader of a group with one member.
const SOLE_LEADER_LOG: (&str, &str) = ("I am elected leader for group", "with 1 member(s)");

struct LeaseContext {
    state: Arc<LeaseState>,
}

impl ClientContext for LeaseContext {
    fn log(&self, level: sinks::rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        if facility == "JOINGROUP" {
            // Every JoinGroup response is logged first ("JoinGroup response: …"), then, for the
            // member the coordinator made the group's leader, "I am elected leader …".
            if message.starts_with("JoinGroup response") {
                self.state.sole_member.store(false, Ordering::Release);
            } else if message.contains(SOLE_LEADER_LOG.0) {
                self.state.sole_member.store(message.contains(SOLE_LEADER_LOG.1), Ordering::Release);
            }
        }
        tracing::debug!(?level, facility, message, "librdkafka (lease)");
    }
}

impl LeaseContext {
    fn lose(&self, why: &str) {
        if self.state.leader.swap(false, Ordering::SeqCst) {
            if self.state.exit_on_loss.load(Ordering::SeqCst) {
                tracing::error!(why, "lease lost while primary: exiting before acknowledging anything more");
                std::process::exit(crate::runtime::FENCED_EXIT_CODE);
            }
            tracing::warn!(why, "lease lost");
        }
    }
}

impl ConsumerContext for LeaseContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            // The group dropped this member (its session expired: it was frozen or cut off):
            // the lease went elsewhere. Rejoining must not take it back (this member's id is
            // the oldest), so a primary exits here.
            Rebalance::Revoke(partitions)
                if consumer.assignment_lost() && partitions.elements().iter().any(|p| p.partition() == PARTITION) =>
            {
                self.lose("session expired: assignment lost")
            }
            // Every eager rebalance revokes everything first: whether the lease is lost is
            // known only from the assignment that follows.
            Rebalance::Revoke(partitions) if partitions.elements().iter().any(|p| p.partition() == PARTITION) => {
                self.state.revoked.store(true, Ordering::Release);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => self.lose(&error.to_string()),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(partitions) = rebalance else { return };
        if !self.state.joined.swap(true, Ordering::AcqRel) {
            tracing::info!("joined the lease group");
        }
        let revoked = self.state.revoked.swap(false, Ordering::AcqRel);
        if partitions.elements().iter().any(|p| p.partition() == PARTITION) {
            if !self.state.leader.load(Ordering::Acquire) {
                self.state.acquired_unix_us.store(crate::promotion::unix_us_now(), Ordering::Release);
            }
            if !self.state.leader.swap(true, Ordering::AcqRel) {
                tracing::info!("lease acquired");
            }
        } else {
            if revoked {
                self.lose("partition 0 assigned to another member");
            }
            if self.state.sole_member.swap(false, Ordering::AcqRel) {
                // The only member, and its own assignor gave it partition 0, yet the
                // coordinator answered nothing: tansu 0.6 can keep a group's generation across
                // a rebalance that drops a dead member and then returns that generation's old
                // assignment (partition 0 to the dead member) at every rejoin, so the lease
                // never moves (the restarted-standby hang of the failover tests). Leaving and
                // joining again empties the group, which starts a new generation.
                tracing::warn!("alone in the lease group without the lease: leaving and joining again");
                self.state.rejoin.store(true, Ordering::Release);
            }
        }
    }
}

/// Membership in the lease group, kept alive by a thread of its own.
pub struct Lease {
    state: Arc<LeaseState>,
    thread: Option<JoinHandle<()>>,
}

impl Lease {
    /// Joins `group` on `topic` (created with one partition if missing) with the given session
    /// timeout.
    ///
    /// # Errors
    /// The broker refused.
    pub fn join(
        brokers: &str,
        topic: &str,
        group: &str,
        session_timeout: Duration,
        replication: i32,
    ) -> Result<Self, ClusterError> {
        ensure_topic(brokers, topic, replication)?;
        let session_ms = session_timeout.as_millis() as u64;
        let state = Arc::new(LeaseState::default());
        let mut client = client_config(brokers);
        // The consumer group's debug log is how this member learns it is the group's only member
        // (`LeaseState::sole_member`); more contexts with EXCHANGE_KAFKA_DEBUG. The client's own
        // level filter is set from `log_level` only through set_log_level.
        let debug =
            std::env::var("EXCHANGE_KAFKA_DEBUG").map_or_else(|_| "cgrp".to_string(), |more| format!("cgrp,{more}"));
        client.set("debug", debug).set_log_level(sinks::rdkafka::config::RDKafkaLogLevel::Debug);
        let consumer: BaseConsumer<LeaseContext> = client
            .set("group.id", group)
            .set("session.timeout.ms", session_ms.to_string())
            .set("heartbeat.interval.ms", (session_ms / HEARTBEATS_PER_SESSION).max(HEARTBEAT_MS_MIN).to_string())
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            // The eager range assignor gives the partition to the first member in member id
            // order, and the broker makes member ids `<client.id>-<uuid>`: a client id that
            // sorts by start time makes the oldest member the leader, so a standby that joins
            // (or restarts) never takes the lease from a running primary. Every eager rebalance
            // still revokes everything first; the holder keeps the lease when the assignment
            // gives partition 0 back (`LeaseContext`). cooperative-sticky would avoid the
            // revocation, but with tansu 0.6 its changing member metadata restarts the
            // rebalance at every join, and a second member never completes its join.
            .set("partition.assignment.strategy", "range")
            .set("client.id", format!("{LEASE_CLIENT_PREFIX}{:020}", started_ns()))
            .create_with_context(LeaseContext { state: state.clone() })
            .map_err(|e| ClusterError::Kafka(e.to_string()))?;
        consumer.subscribe(&[topic]).map_err(|e| ClusterError::Kafka(e.to_string()))?;
        let thread_state = state.clone();
        let topic = topic.to_string();
        let thread = std::thread::Builder::new()
            .name("lease".into())
            .spawn(move || {
                while !thread_state.stop.load(Ordering::Acquire) {
                    // Nothing is ever produced to the lease topic: polls only serve the group.
                    if let Some(Err(error)) = consumer.poll(LEASE_POLL) {
                        tracing::debug!(%error, "lease poll");
                    }
                    if thread_state.rejoin.swap(false, Ordering::AcqRel) {
                        consumer.unsubscribe();
                        if let Err(error) = consumer.subscribe(&[topic.as_str()]) {
                            tracing::warn!(%error, "lease: joining again failed");
                        }
                    }
                }
                // Leaving the group hands the lease over at once instead of after the timeout.
                consumer.unsubscribe();
                let _ = consumer.assign(&TopicPartitionList::new());
            })
            .map_err(|e| ClusterError::Kafka(format!("lease thread: {e}")))?;
        Ok(Self { state, thread: Some(thread) })
    }

    /// Whether this member holds the lease now.
    pub fn is_leader(&self) -> bool {
        self.state.leader.load(Ordering::Acquire)
    }

    /// When the group last assigned the lease to this member (µs since the UNIX epoch), if it
    /// did: the first phase of a promotion.
    pub fn acquired_unix_us(&self) -> Option<u64> {
        Some(self.state.acquired_unix_us.load(Ordering::Acquire)).filter(|&at| at > 0)
    }

    /// Commits this process to serving: from now on, losing the lease exits the process with
    /// [`crate::runtime::FENCED_EXIT_CODE`]. Returns false, committing to nothing, if the lease
    /// is already lost: the caller has not served yet and goes back to following the log.
    ///
    /// The flag is set before the lease is read again, and [`LeaseContext::lose`] clears the
    /// lease before it reads the flag (both sequentially consistent): a loss racing with this
    /// call is seen by at least one of them, so it either returns false or exits the process.
    pub fn commit_to_serving(&self) -> bool {
        self.state.exit_on_loss.store(true, Ordering::SeqCst);
        if self.state.leader.load(Ordering::SeqCst) {
            return true;
        }
        self.state.exit_on_loss.store(false, Ordering::SeqCst);
        false
    }

    /// Blocks until this member holds the lease (or `stop` is set: returns false).
    pub fn wait_for_leadership(&self, stop: &AtomicBool) -> bool {
        while !self.is_leader() {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(LEASE_POLL);
        }
        true
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.state.exit_on_loss.store(false, Ordering::Release);
        self.state.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// How long the test waits for the group to move the lease.
    const PATIENCE: Duration = Duration::from_secs(30);

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done() {
            assert!(Instant::now() < deadline, "{what} within {PATIENCE:?}");
            std::thread::sleep(LEASE_POLL);
        }
    }

    /// On a real broker (tansu): a member that does not hold the lease (another member does)
    /// is refused when it commits to serving, and the process goes on (before, the same call
    /// exited the process with the deposed code), so a node can follow the log again; the
    /// holder commits.
    #[test]
    fn committing_to_serving_without_the_lease_is_refused_not_fatal() {
        let Ok(brokers) = std::env::var("EXCHANGE_TEST_KAFKA_BROKERS") else {
            eprintln!("SKIPPED: EXCHANGE_TEST_KAFKA_BROKERS not set (source scripts/services)");
            assert!(std::env::var("EXCHANGE_REQUIRE_SERVICES").is_err(), "services required");
            return;
        };
        let name = format!("lease-test-{}-{}", std::process::id(), started_ns());
        let session = Duration::from_millis(1_000);
        let holder = Lease::join(&brokers, &name, &name, session, 1).unwrap();
        wait_until("the only member gets the lease", || holder.is_leader());
        let other = Lease::join(&brokers, &name, &name, session, 1).unwrap();
        // Long enough for the younger member's join to be answered (tansu holds it 3 s).
        std::thread::sleep(Duration::from_secs(5));
        assert!(holder.is_leader() && !other.is_leader(), "the oldest member keeps the lease");
        assert!(!other.commit_to_serving(), "a member without the lease must not serve");
        assert!(holder.commit_to_serving(), "the member holding the lease serves");
    }
}
