//! FIX 4.4 order-entry acceptor over TCP.
//!
//! **Not implemented yet**: this crate is an empty placeholder that keeps the workspace's
//! architecture visible. Its work is tracked in issue #6.
