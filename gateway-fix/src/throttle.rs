//! The per-session message-rate limit, shared by every gateway (see [`engine::throttle`]).

pub use engine::throttle::TokenBucket;
