//! Market data: a [`MarketView`] of every market built from the engine's egress events, read by
//! the REST API (gateway-json), and the WebSocket stream [`Publisher`] (module
//! [`publisher`](mod@publisher): encode each event once, fan the same buffer out to bounded
//! subscriber queues; docs/websocket-api.md).
//!
//! # Data flow
//! One consumer thread ([`Feed`]) reads the egress broadcast ring and applies each engine
//! command's events to the view (through the [`Publisher`] when there is one, which publishes
//! what they change while the book is still locked): `BookLevelUpdate`s maintain the aggregated
//! book of each market, `Fill`s the recent trades, the per-minute candles that serve klines, and
//! the rolling 24 h / 7 d ticker; `MarketStatusChanged` the halted flag; the AMM pool events the
//! [`amm::PoolView`] (reserves and shares, for pool quotes). Every other event is ignored.
//! Readers (HTTP handlers) copy what they need under a per-market
//! `RwLock` held only for the copy, so they never block the consumer for long and never see a
//! half-applied event.
//!
//! # Units
//! Everything in the view is an integer in the engine's units: prices in ticks, quantities in
//! lots, notionals in quote minor units, times in nanoseconds since the epoch (event time, not
//! wall-clock time of reading). Decimal text is produced only at the edge, by [`format`](mod@format).
//!
//! # Update ids
//! Each market counts the `BookLevelUpdate`s applied to it, from 0 at process start: the
//! *update id*. A depth snapshot reports the id of the last update it includes
//! (`lastUpdateId`); the WebSocket depth stream numbers its diffs with the same counter (one diff
//! per command, `U`..`u`), so a client can merge a REST snapshot with the stream (`U` = previous
//! `u` + 1). A command's book updates are applied under one lock: a snapshot never shows half a
//! command.
//!
//! # Limitations
//! - History is in memory only: after a restart the books are seeded from the recovered engine
//!   ([`MarketView::seed_books`]) but trades, tickers and klines start empty, and update ids
//!   restart at 0.
//! - The server subscribes the feed as a gating consumer, so the engine waits for it instead of
//!   lapping it. If it falls more than the ring's capacity behind all the same
//!   ([`engine::bus::ReadError::Lagged`], after a stall), book updates were lost: the error is
//!   logged, the view is marked *stale* ([`MarketView::is_stale`]; the REST depth endpoint answers
//!   503) and the publisher closes every WebSocket subscriber (their streams would have gaps).
//!   With a reseed source ([`Feed::start_publishing_with_reseed`], as the server wires it) the
//!   engine thread then copies its books into the view ([`Publisher::reseed`]) and the feed
//!   resumes after that copy: fresh again. Without one the view stays stale. Either way trades,
//!   tickers and klines miss the lost fills.
//! - Trades: the last [`TRADES_KEPT`] per market. Candles: one per minute with trades, for the
//!   last [`MINUTES_KEPT`] minutes.

pub mod amm;
pub mod encode;
mod feed;
pub mod format;
pub mod interval;
pub mod publisher;
pub mod stream;
mod view;

pub use feed::Feed;
pub use interval::KlineInterval;
pub use publisher::{
    Delivery, LagPolicy, Publisher, PublisherConfig, PublisherStats, SubscribeError, Subscription, expiry_reason_name,
};
pub use stream::{Conflation, StreamKey, StreamSpec};
pub use view::{Candle, DepthSnapshot, MINUTES_KEPT, MarketView, TRADES_KEPT, TickerStats, TradeRecord};
