//! The egress broadcast ring (re-exported from [`engine::bus`], where gateways find it).

pub use engine::bus::{BroadcastRing, Consumer, Published, ReadError};
