//! The matching engine: order books, balances with reservations, fees.
//!
//! [`Engine::execute`] is a pure function of the engine state and one [`codec::Command`] with its
//! [`CommandContext`] (sequence and timestamp from the journal): it appends the resulting
//! [`codec::Event`]s to the caller's buffer and never does I/O, reads a clock or draws randomness.
//! Replaying the same commands therefore reproduces the same state, which [`Engine::state_hash`]
//! summarises. A replay that needs only the state calls [`Engine::execute_without_events`]
//! (the events are not built; the state is the same, see [`event_sink`]).
//!
//! Rules the engine enforces, each rejection a numbered [`codec::RejectReason`]; a rejected command
//! changes nothing:
//! - price-time priority; limit orders GTC / IOC / FOK, post-only, market orders by base quantity
//!   or (buys) by quote quantity; self-trade prevention; client order ids unique per user among
//!   that user's open orders on a market;
//! - funds: a resting bid locks `notional + taker fee` in quote, a resting ask locks its base
//!   quantity; takers pay from available and must be able to afford the whole order at their limit
//!   price (market buys spend at most their available balance or quote quantity); fees are charged
//!   in the quote asset, rounded down, to the fee account.
//!
//! - AMM pools ([`amm`]): constant-product pools beside the order books of configured markets,
//!   with liquidity provision (LP shares), exact-in / exact-out swaps with slippage limits, fees
//!   kept in the pool and rounding in the pool's favour; their reserves are held in the ledger's
//!   pool account.
//!
//! [`Engine::validate`] checks the book, pool and ledger invariants; tests call it after every
//! command.

pub mod amm;
pub mod bands;
pub mod book;
pub mod bus;
pub mod config;
pub mod doorbell;
mod engine;
pub mod event_sink;
mod hash;
pub mod journal;
pub mod latency;
pub mod ledger;
pub mod order_table;
pub mod reactor;
pub mod snapshot;
pub mod testkit;
pub mod throttle;
pub mod triggers;

pub use amm::{Pool, PoolConfig};
pub use bands::{BandLimits, PriceBand};
pub use book::{Book, LevelSummary, OrderBook, RestingOrder};
pub use config::{AssetConfig, ConfigError, EngineConfig, EngineLimits, MarketConfig};
pub use engine::{CommandContext, Engine, GATEWAYS_MAX};
pub use event_sink::{EventSink, NoEvents};
pub use hash::StateHasher;
pub use ledger::{Balance, Ledger};
pub use triggers::{PendingTrigger, TriggerBook};

/// Hash map used for lookups on the hot path (never iterated on the state path, so its hasher
/// cannot influence determinism).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, hash::SeededIdHasher>;

pub use hash::set_lookup_hash_seed;

/// A [`FastMap`] with room for `capacity` entries allocated now.
pub(crate) fn new_map<K, V>(capacity: usize) -> FastMap<K, V> {
    FastMap::with_capacity_and_hasher(capacity, Default::default())
}
