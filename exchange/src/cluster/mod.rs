//! Past one machine: the replicated journal on Kafka, leadership through a Kafka consumer group,
//! the hot standby and its promotion (docs/deployment.md, "Replicated journal and failover").
//!
//! The authoritative log is a one-partition Kafka topic holding the journal's group commits
//! ([`log`]). The engine is a pure function of its journal, so every follower runs its own
//! engine over that log and derives exactly the primary's events, ids and state hash: the journal
//! topic is the only output topic followers need, gap-free by construction.

pub mod commands;
pub mod gateway;
pub mod lease;
pub mod log;
pub mod snapshots;
pub mod standby;
pub mod users;
