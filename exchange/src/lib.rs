//! The exchange server: configuration, recovery, the engine runtime (ingress ring, sequencer,
//! journal, engine thread, snapshots) and the demo market. The binary in `main.rs` wires them.

pub mod allocator;
#[cfg(feature = "sinks")]
pub mod cluster;
pub mod config;
pub mod demo;
#[cfg(feature = "sinks")]
pub mod directory;
pub mod egress;
pub mod faucet;
#[cfg(feature = "sinks")]
pub mod history_store;
pub mod http;
#[cfg(feature = "sinks")]
pub mod log_replica;
pub mod metrics;
pub mod priority;
pub mod promotion;
pub mod publishers;
#[cfg(feature = "sinks")]
pub mod replica;
pub mod runtime;
pub mod web;
