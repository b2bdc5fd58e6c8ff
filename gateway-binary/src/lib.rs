//! SBE binary order entry over TCP.
//!
//! **Not implemented yet**: this crate is an empty placeholder that keeps the workspace's
//! architecture visible. Its work is tracked in issue #7.
