//! Kafka, Postgres and Redis sinks fed from the engine's event stream.
//!
//! **Not implemented yet**: this crate is an empty placeholder that keeps the workspace's
//! architecture visible. Its work is tracked in issue #8.
