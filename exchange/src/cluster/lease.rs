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
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

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
    /// Exit the process ([`crate::runtime::FENCED_EXIT_CODE`]) when the lease is lost while
    /// held: set once this process serves as primary.
    exit_on_loss: AtomicBool,
    /// Stop the lease thread.
    stop: AtomicBool,
}

struct LeaseContext {
    state: Arc<LeaseState>,
}

impl ClientContext for LeaseContext {}

impl LeaseContext {
    fn lose(&self, why: &str) {
        if self.state.leader.swap(false, Ordering::AcqRel) {
            if self.state.exit_on_loss.load(Ordering::Acquire) {
                tracing::error!(why, "lease lost while primary: exiting before acknowledging anything more");
                std::process::exit(crate::runtime::FENCED_EXIT_CODE);
            }
            tracing::warn!(why, "lease lost");
        }
    }
}

impl ConsumerContext for LeaseContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) if partitions.elements().iter().any(|p| p.partition() == PARTITION) => {
                self.lose("partition revoked")
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => self.lose(&error.to_string()),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance
            && partitions.elements().iter().any(|p| p.partition() == PARTITION)
            && !self.state.leader.swap(true, Ordering::AcqRel)
        {
            tracing::info!("lease acquired");
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
        let consumer: BaseConsumer<LeaseContext> = client_config(brokers)
            .set("group.id", group)
            .set("session.timeout.ms", session_ms.to_string())
            .set("heartbeat.interval.ms", (session_ms / HEARTBEATS_PER_SESSION).max(HEARTBEAT_MS_MIN).to_string())
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            // Incremental rebalancing: a member joining or leaving does not take the partition
            // from its holder (the eager protocol revokes everything at every rebalance, which
            // would depose the primary whenever a standby starts).
            .set("partition.assignment.strategy", "cooperative-sticky")
            .create_with_context(LeaseContext { state: state.clone() })
            .map_err(|e| ClusterError::Kafka(e.to_string()))?;
        consumer.subscribe(&[topic]).map_err(|e| ClusterError::Kafka(e.to_string()))?;
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("lease".into())
            .spawn(move || {
                while !thread_state.stop.load(Ordering::Acquire) {
                    // Nothing is ever produced to the lease topic: polls only serve the group.
                    if let Some(Err(error)) = consumer.poll(LEASE_POLL) {
                        tracing::debug!(%error, "lease poll");
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

    /// From now on, losing the lease exits the process with
    /// [`crate::runtime::FENCED_EXIT_CODE`] (called when this process starts serving).
    pub fn exit_on_loss(&self) {
        self.state.exit_on_loss.store(true, Ordering::Release);
        if !self.is_leader() {
            tracing::error!("lease lost before serving: exiting");
            std::process::exit(crate::runtime::FENCED_EXIT_CODE);
        }
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
