//! The multicast-style stream publisher: encode once, fan the same buffer out.
//!
//! The [`Feed`](crate::Feed) thread hands every engine command's events to
//! [`Publisher::on_command`], which applies them to the [`MarketView`] and, for each stream that
//! has subscribers, writes the event's JSON frame **once** into a [`Bytes`] and pushes a clone of
//! that buffer (a reference count) onto each subscriber's bounded queue. Nothing is encoded for a
//! stream nobody listens to, and the feed thread never waits for a subscriber: a push is a
//! `try` into a queue of at most [`PublisherConfig::queue_frames`] frames.
//!
//! # Depth consistency
//! Depth diffs are published while the market's book is still write-locked by the view, and
//! every snapshot (REST `GET /api/v1/depth`, or the snapshot a lagging subscriber is resynchronised
//! with) is taken under the same lock. Update ids count book level updates (the view's counter);
//! a diff carries `U` = first and `u` = last id of the command's updates, so a snapshot's
//! `lastUpdateId` is always the `u` of some diff and the next diff has `U = lastUpdateId + 1`.
//!
//! # Lagging subscribers
//! A subscriber whose queue is full when a frame arrives is *lagging* on that stream. With
//! [`LagPolicy::Resync`] the frames of that stream are dropped (and counted) until the connection
//! collects [`Delivery::Lagged`] and calls [`Subscription::resync`]: depth streams then get a
//! `depthSnapshot` frame taken under the book lock, after which diffs continue gap-free; other
//! streams continue with the next event (the lag notice says how many frames were lost). After
//! [`PublisherConfig::resyncs_max`] resyncs, or at the first lag with [`LagPolicy::Disconnect`],
//! the subscriber is closed with a reason ([`Delivery::Closed`]).

use crate::encode::{Frame, control, json_safe};
use crate::format::MarketFormat;
use crate::stream::{self, Conflation, StreamKey, StreamSpec};
use crate::{KlineInterval, MarketView};
use bytes::Bytes;
use codec::{
    AssetId, ClientOrderId, Event, Fill, MarketId, OrderId, OrderType, SelfTradePrevention, Side, TimeInForce, UserId,
};
use engine::order_table::{OrderTable, OrderTerms};
use engine::{Book, Engine, EngineConfig};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const NS_PER_DAY: u64 = 86_400_000_000_000;

/// What happens to a subscriber whose queue overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LagPolicy {
    /// Drop the stream's frames until the connection resynchronises it (depth: a fresh
    /// snapshot, then diffs); close after [`PublisherConfig::resyncs_max`] resyncs.
    #[default]
    Resync,
    /// Close the subscriber at once.
    Disconnect,
}

/// Publisher settings.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Frames a subscriber may have queued; one more makes it lag.
    pub queue_frames: usize,
    /// What a lagging subscriber gets.
    pub lag_policy: LagPolicy,
    /// Resyncs a subscriber may have before it is closed.
    pub resyncs_max: u32,
    /// How often `ticker.<symbol>` is published (24 h statistics).
    pub ticker_every: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            queue_frames: 4_096,
            lag_policy: LagPolicy::Resync,
            resyncs_max: 16,
            ticker_every: Duration::from_secs(1),
        }
    }
}

/// Publisher counters (for metrics and benchmarks).
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Connected subscribers.
    pub subscribers: AtomicU64,
    /// Frames encoded (once per event and stream, whatever the number of subscribers).
    pub frames_encoded: AtomicU64,
    /// Frames queued to subscribers (one per subscriber per frame).
    pub frames_queued: AtomicU64,
    /// Frames dropped for lagging subscribers.
    pub frames_dropped: AtomicU64,
    /// Times a subscriber started lagging on a stream.
    pub lags: AtomicU64,
    /// Subscribers closed for lagging.
    pub lag_disconnects: AtomicU64,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeError {
    /// The stream name is not valid (the message says why).
    UnknownStream(String),
    /// The market view lost events: depth is unavailable until the server restarts.
    Stale,
    /// The subscriber was closed.
    Closed,
}

impl std::fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownStream(message) => f.write_str(message),
            Self::Stale => f.write_str("Market data is resynchronising; depth streams are unavailable"),
            Self::Closed => f.write_str("Connection is closing"),
        }
    }
}

/// What a subscriber receives next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Frames, in publication order.
    Frames(Vec<Bytes>),
    /// The subscriber lagged: these streams lost this many frames since the last notice. Call
    /// [`Subscription::resync`] with them.
    Lagged(Vec<(StreamKey, u64)>),
    /// The subscriber was closed; the reason is for the close frame.
    Closed(String),
}

struct Lag {
    key: StreamKey,
    dropped: u64,
    reported: bool,
}

#[derive(Default)]
struct Inbox {
    frames: VecDeque<Bytes>,
    lagging: Vec<Lag>,
    closed: Option<String>,
    streams: Vec<StreamKey>,
    resyncs: u32,
}

/// One subscriber's bounded queue.
pub struct Subscriber {
    inbox: Mutex<Inbox>,
    notify: Notify,
    bound: usize,
}

impl Subscriber {
    fn new(bound: usize) -> Self {
        Self { inbox: Mutex::new(Inbox::default()), notify: Notify::new(), bound }
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `frame` of `key`; never blocks on the reader. Whether it was queued.
    fn push(&self, key: StreamKey, frame: &Bytes, policy: LagPolicy, stats: &PublisherStats) -> bool {
        let mut inbox = self.inbox();
        if inbox.closed.is_some() {
            return false;
        }
        if let Some(lag) = inbox.lagging.iter_mut().find(|lag| lag.key == key) {
            lag.dropped += 1;
            stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if inbox.frames.len() >= self.bound {
            stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
            match policy {
                LagPolicy::Resync => {
                    stats.lags.fetch_add(1, Ordering::Relaxed);
                    inbox.lagging.push(Lag { key, dropped: 1, reported: false });
                }
                LagPolicy::Disconnect => {
                    stats.lag_disconnects.fetch_add(1, Ordering::Relaxed);
                    inbox.frames.clear();
                    inbox.closed = Some(format!("Lagging: more than {} frames queued", self.bound));
                }
            }
            drop(inbox);
            self.notify.notify_one();
            return false;
        }
        let was_empty = inbox.frames.is_empty();
        inbox.frames.push_back(frame.clone());
        drop(inbox);
        if was_empty {
            self.notify.notify_one();
        }
        true
    }

    fn close(&self, reason: String) {
        self.inbox().closed.get_or_insert(reason);
        self.notify.notify_one();
    }

    async fn next(&self) -> Delivery {
        loop {
            {
                let mut inbox = self.inbox();
                if !inbox.frames.is_empty() {
                    return Delivery::Frames(inbox.frames.drain(..).collect());
                }
                if let Some(reason) = &inbox.closed {
                    return Delivery::Closed(reason.clone());
                }
                let fresh: Vec<(StreamKey, u64)> = inbox
                    .lagging
                    .iter_mut()
                    .filter(|lag| !lag.reported)
                    .map(|lag| {
                        lag.reported = true;
                        (lag.key, lag.dropped)
                    })
                    .collect();
                if !fresh.is_empty() {
                    return Delivery::Lagged(fresh);
                }
            }
            self.notify.notified().await;
        }
    }
}

struct Slot {
    name: String,
    subscribers: Vec<Arc<Subscriber>>,
}

#[derive(Default)]
struct Conflating {
    asks: BTreeMap<u64, u64>,
    bids: BTreeMap<u64, u64>,
    first_id: Option<u64>,
    last_id: u64,
    timestamp_ns: u64,
    due: Option<Instant>,
}

type Top = (Option<(u64, u64)>, Option<(u64, u64)>);

#[derive(Default)]
struct MarketFeed {
    conflating: [Conflating; 3],
    top: Top,
}

/// What the publisher keeps of an open order to publish complete private order updates: 48
/// bytes, 8-aligned (no `u128`, which would pad it; the small enums and flag share one byte,
/// [`OrderTerms`]), kept in an [`OrderTable`] by order id (52 bytes and a bit per open order).
#[derive(Debug, Clone, Copy)]
struct OrderInfo {
    client_order_id: ClientOrderId,
    /// The limit price in ticks of a limit order, the quote quantity of a market order: the
    /// engine accepts no quote quantity on a limit order and no price on a market order, so one
    /// word holds whichever the order has (see [`Self::price_ticks`], [`Self::quote_quantity`]).
    price_or_quote: u64,
    quantity_lots: u64,
    filled_lots: u64,
    /// Quote traded so far: low 64 bits (see [`Self::executed_quote`]).
    executed_quote_low: u64,
    market: MarketId,
    terms: OrderTerms,
    /// Quote traded so far: bits 64..88, little-endian (a sum of u64 fill amounts reaches them
    /// only after 2^24 maximal fills; it saturates there).
    executed_quote_high: [u8; EXECUTED_QUOTE_HIGH_BYTES],
}

/// Bytes of [`OrderInfo::executed_quote_high`], the executed quote's bits above 64.
const EXECUTED_QUOTE_HIGH_BYTES: usize = 3;
/// Bits of the executed quote an [`OrderInfo`] keeps (it saturates at `2^88 - 1`).
const EXECUTED_QUOTE_BITS: u32 = 64 + 8 * EXECUTED_QUOTE_HIGH_BYTES as u32;

/// Bytes of an [`OrderInfo`]: the publisher's memory per open order depends on it.
const ORDER_INFO_BYTES_MAX: usize = 48;
const _: () =
    assert!(std::mem::size_of::<OrderInfo>() <= ORDER_INFO_BYTES_MAX, "the publisher's per-order record stays compact");

impl OrderInfo {
    /// The word [`Self::price_or_quote`] of an order of `order_type`.
    fn price_or_quote(order_type: OrderType, price_ticks: u64, quote_quantity: u64) -> u64 {
        match order_type {
            OrderType::Market => quote_quantity,
            OrderType::Limit => price_ticks,
        }
    }

    /// Limit price, ticks (0 for a market order).
    fn price_ticks(&self) -> u64 {
        match self.terms.order_type() {
            OrderType::Market => 0,
            OrderType::Limit => self.price_or_quote,
        }
    }

    /// Sets the limit price (a replace; market orders have none).
    fn set_price_ticks(&mut self, price_ticks: u64) {
        if self.terms.order_type() == OrderType::Limit {
            self.price_or_quote = price_ticks;
        }
    }

    /// Quote quantity of a market order by quote, minor units (0 otherwise).
    fn quote_quantity(&self) -> u64 {
        match self.terms.order_type() {
            OrderType::Market => self.price_or_quote,
            OrderType::Limit => 0,
        }
    }

    /// Quote traded so far, minor units.
    fn executed_quote(&self) -> u128 {
        let mut high = [0u8; 16];
        high[..EXECUTED_QUOTE_HIGH_BYTES].copy_from_slice(&self.executed_quote_high);
        u128::from_le_bytes(high) << 64 | u128::from(self.executed_quote_low)
    }

    /// Adds a fill's quote amount (saturating at 2^88 - 1).
    fn add_executed_quote(&mut self, amount: u64) {
        let sum = self.executed_quote().saturating_add(u128::from(amount)).min((1u128 << EXECUTED_QUOTE_BITS) - 1);
        self.executed_quote_low = sum as u64;
        self.executed_quote_high.copy_from_slice(&(sum >> 64).to_le_bytes()[..EXECUTED_QUOTE_HIGH_BYTES]);
    }
}

struct FeedState {
    markets: Vec<MarketFeed>,
    /// Open orders by order id.
    orders: OrderTable<OrderInfo>,
    /// Attached stop-loss / take-profit of the open orders that have one (kept apart from
    /// [`OrderInfo`], which stays compact: few orders carry one).
    attached: HashMap<u64, Attached>,
    last_ticker: Instant,
}

struct MarketMeta {
    symbol: String,
    format: MarketFormat,
    quote: AssetId,
}

/// The publisher: stream registry, encoders and subscriber queues. Shared (`Arc`) by the feed
/// thread and the WebSocket connections.
pub struct Publisher {
    view: Arc<MarketView>,
    config: PublisherConfig,
    markets: Vec<MarketMeta>,
    /// Asset symbol and decimals, by asset id.
    assets: Vec<(String, u8)>,
    symbols: HashMap<String, MarketId>,
    /// Markets with an AMM pool (the only ones with an `amm.<symbol>` stream).
    pools: Vec<MarketId>,
    registry: RwLock<HashMap<StreamKey, Slot>>,
    feed: Mutex<FeedState>,
    stats: PublisherStats,
    /// Subscriptions to conflated depth and to klines (their per-update checks are skipped at 0).
    conflated_subscriptions: AtomicU64,
    kline_subscriptions: AtomicU64,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("markets", &self.markets.len()).field("config", &self.config).finish()
    }
}

/// Microseconds since the epoch, now.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Bid => "Bid",
        Side::Ask => "Ask",
    }
}

fn order_type_name(order_type: OrderType) -> &'static str {
    match order_type {
        OrderType::Limit => "LIMIT",
        OrderType::Market => "MARKET",
    }
}

fn time_in_force_name(tif: TimeInForce) -> &'static str {
    match tif {
        TimeInForce::Gtc => "GTC",
        TimeInForce::Ioc => "IOC",
        TimeInForce::Fok => "FOK",
    }
}

/// Backpack's name (its `OrderExpiryReason`) of the engine's reason for an expiry, as REST
/// `expiryReason` and the order stream's `R` show it. The engine's reasons map onto Backpack's:
/// `ImmediateOrCancel` → `ImmediateOrCancel`; `NoLiquidity` (a market order ran out of opposite
/// orders) → `InsufficientLiquidity`; `FundsExhausted` (a market buy ran out of quote, a sell by
/// quote quantity out of base, or a quote quantity too small for one lot) → `InsufficientFunds`;
/// `PriceBand` (a market order reached the edge of the price band) → `PriceOutOfBounds`; a code
/// this version does not know → `Unknown`.
pub fn expiry_reason_name(reason: Option<codec::ExpireReason>) -> &'static str {
    match reason {
        Some(codec::ExpireReason::ImmediateOrCancel) => "ImmediateOrCancel",
        Some(codec::ExpireReason::NoLiquidity) => "InsufficientLiquidity",
        Some(codec::ExpireReason::FundsExhausted) => "InsufficientFunds",
        Some(codec::ExpireReason::PriceBand) => "PriceOutOfBounds",
        None => "Unknown",
    }
}

/// The Backpack `OrderExpiryReason` name shown (stream `R`) for a trigger order whose order
/// could not be placed: funds → `InsufficientFunds`, price band → `PriceOutOfBounds`, no
/// liquidity → `InsufficientLiquidity`, anything else → `Unknown`.
pub fn trigger_failure_name(reason: Option<codec::RejectReason>) -> &'static str {
    match reason {
        Some(codec::RejectReason::InsufficientBalance) => "InsufficientFunds",
        Some(codec::RejectReason::PriceOutsideBand) => "PriceOutOfBounds",
        Some(codec::RejectReason::NoLiquidity) => "InsufficientLiquidity",
        _ => "Unknown",
    }
}

/// Backpack's `triggerBy` (stream `B`) of every trigger order here: the last trade price is the
/// only reference.
const TRIGGER_BY_LAST_PRICE: &str = "LastPrice";

fn stp_name(stp: SelfTradePrevention) -> &'static str {
    match stp {
        SelfTradePrevention::RejectTaker => "RejectTaker",
        SelfTradePrevention::RejectMaker => "RejectMaker",
        SelfTradePrevention::RejectBoth => "RejectBoth",
        SelfTradePrevention::Allow => "Allow",
    }
}

/// What an order-update frame says beyond the order itself.
struct OrderEvent<'a> {
    event: &'a str,
    status: &'a str,
    timestamp_ns: u64,
    reason: Option<&'a str>,
    /// Trigger price of a trigger order's own frames (pending, fired): Backpack's `P`, with `B`
    /// and `Y`.
    trigger_price_ticks: Option<u64>,
    /// The order's attached stop-loss / take-profit ([`Attached`]; all zero: none).
    attached: Attached,
    fill: Option<FillPart>,
}

/// An order's attached stop-loss trigger and limit, take-profit trigger and limit prices in
/// ticks, as its `OrderAccepted` carried them (zero: not set): Backpack's `b`, `k`, `a`, `j`.
type Attached = [u64; 4];

/// The attachment an `OrderAccepted` carries.
fn attached_of(accepted: &codec::OrderAccepted) -> Attached {
    [
        accepted.stop_loss_trigger_ticks.get(),
        accepted.stop_loss_limit_ticks.get(),
        accepted.take_profit_trigger_ticks.get(),
        accepted.take_profit_limit_ticks.get(),
    ]
}

struct FillPart {
    trade_id: u64,
    lots: u64,
    price_ticks: u64,
    maker: bool,
    fee: u64,
}

impl Publisher {
    /// A publisher over `view` (which it feeds: start it with
    /// [`Feed::start_publishing`](crate::Feed::start_publishing)) for `engine`'s markets.
    ///
    /// # Panics
    /// When a market or asset symbol contains characters JSON would need escaped (a validated
    /// configuration has none).
    pub fn new(view: Arc<MarketView>, engine: &EngineConfig, config: PublisherConfig) -> Arc<Self> {
        let markets: Vec<MarketMeta> = engine
            .markets
            .iter()
            .map(|market| MarketMeta {
                symbol: market.symbol.clone(),
                format: MarketFormat::new(engine, market),
                quote: market.quote,
            })
            .collect();
        let assets: Vec<(String, u8)> = engine.assets.iter().map(|a| (a.symbol.clone(), a.decimals)).collect();
        assert!(markets.iter().all(|m| json_safe(&m.symbol)) && assets.iter().all(|a| json_safe(&a.0)));
        let symbols = engine.markets.iter().map(|m| (m.symbol.clone(), m.id)).collect();
        let pools = engine.pools.iter().map(|pool| pool.market_id).collect();
        let feed = FeedState {
            markets: markets.iter().map(|_| MarketFeed::default()).collect(),
            orders: OrderTable::new(),
            attached: HashMap::new(),
            last_ticker: Instant::now(),
        };
        Arc::new(Self {
            view,
            config,
            markets,
            assets,
            symbols,
            pools,
            registry: RwLock::new(HashMap::new()),
            feed: Mutex::new(feed),
            stats: PublisherStats::default(),
            conflated_subscriptions: AtomicU64::new(0),
            kline_subscriptions: AtomicU64::new(0),
        })
    }

    /// The view this publisher feeds.
    pub fn view(&self) -> &Arc<MarketView> {
        &self.view
    }

    /// Counters.
    pub fn stats(&self) -> &PublisherStats {
        &self.stats
    }

    /// The settings.
    pub fn config(&self) -> &PublisherConfig {
        &self.config
    }

    /// Replaces the view's books and the open orders with the engine's, after the feed lost
    /// events (run on the engine thread, while the feed waits for it). Locks in the feed's
    /// order (feed state, then the view's markets).
    pub fn reseed<B: Book>(&self, engine: &Engine<B>) {
        let mut feed = self.feed_state();
        self.view.seed_books(engine);
        feed.orders.clear();
        Self::seed_orders_into(&mut feed, engine);
    }

    /// Seeds the open orders (for complete private order updates) from a recovered engine's
    /// books. Call before the feed starts.
    pub fn seed_orders<B: Book>(&self, engine: &Engine<B>) {
        Self::seed_orders_into(&mut self.feed_state(), engine);
    }

    fn seed_orders_into<B: Book>(feed: &mut FeedState, engine: &Engine<B>) {
        // Books are visited in priority order, not by id: collect, then sort once.
        let mut records: Vec<(u64, OrderInfo)> = feed.orders.iter().map(|(id, info)| (id, *info)).collect();
        let mut market = 0u32;
        engine.visit_markets(&mut |_, book| {
            market += 1;
            for side in [Side::Bid, Side::Ask] {
                book.visit_in_priority(side, &mut |resting| {
                    records.push((
                        resting.order_id.get(),
                        OrderInfo {
                            market: MarketId::new(market),
                            client_order_id: resting.client_order_id,
                            terms: OrderTerms::new(
                                resting.side,
                                OrderType::Limit,
                                TimeInForce::Gtc,
                                resting.self_trade_prevention,
                                resting.post_only,
                            ),
                            price_or_quote: resting.price.get(),
                            quantity_lots: resting.quantity_lots,
                            filled_lots: resting.filled_lots,
                            executed_quote_low: 0,
                            executed_quote_high: [0; EXECUTED_QUOTE_HIGH_BYTES],
                        },
                    ));
                    true
                });
            }
        });
        feed.orders = OrderTable::from_unsorted(records);
        // Recovered parents' attached stop-loss / take-profit live in the engine's trigger state.
        for market in 1..=engine.market_count() as u32 {
            let Some(triggers) = engine.triggers(MarketId::new(market)) else { continue };
            for a in triggers.attachments() {
                let attached = [
                    a.stop_loss_trigger_ticks,
                    a.stop_loss_limit_ticks,
                    a.take_profit_trigger_ticks,
                    a.take_profit_limit_ticks,
                ];
                feed.attached.insert(a.parent_order_id.get(), attached);
            }
        }
    }

    fn feed_state(&self) -> MutexGuard<'_, FeedState> {
        self.feed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn market(&self, market: MarketId) -> Option<(usize, &MarketMeta)> {
        let index = (market.get() as usize).checked_sub(1)?;
        self.markets.get(index).map(|meta| (index, meta))
    }

    fn symbol(&self, market: MarketId) -> String {
        self.market(market).map_or_else(String::new, |(_, meta)| meta.symbol.clone())
    }

    /// Parses a stream name (Backpack's spelling, see docs/websocket-api.md).
    ///
    /// # Errors
    /// A message saying what is wrong with the name.
    pub fn parse(&self, name: &str) -> Result<StreamSpec, String> {
        stream::parse(name, |symbol| self.symbols.get(symbol).copied(), |market| self.pools.contains(&market))
    }

    /// The canonical name of a stream.
    pub fn stream_name(&self, key: &StreamKey) -> String {
        stream::name(key, |market| self.symbol(market))
    }

    /// A new subscriber with no streams; dropping the handle unsubscribes it from everything.
    pub fn connect(self: &Arc<Self>) -> Subscription {
        self.stats.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription { publisher: self.clone(), subscriber: Arc::new(Subscriber::new(self.config.queue_frames.max(1))) }
    }

    fn registry_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<StreamKey, Slot>> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    fn registry_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<StreamKey, Slot>> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, key: &StreamKey, added: bool) {
        let counter = match key {
            StreamKey::DepthConflated(..) => &self.conflated_subscriptions,
            StreamKey::Kline(..) => &self.kline_subscriptions,
            _ => return,
        };
        if added {
            counter.fetch_add(1, Ordering::Relaxed);
        } else {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether anybody subscribes to `key`.
    pub fn has_subscribers(&self, key: &StreamKey) -> bool {
        self.registry_read().get(key).is_some_and(|slot| !slot.subscribers.is_empty())
    }

    /// Encodes one frame for `key` (if it has subscribers) and queues it to each of them.
    fn publish(&self, key: StreamKey, encode: impl FnOnce(&str) -> Bytes) {
        let registry = self.registry_read();
        let Some(slot) = registry.get(&key) else { return };
        if slot.subscribers.is_empty() {
            return;
        }
        let frame = encode(&slot.name);
        self.stats.frames_encoded.fetch_add(1, Ordering::Relaxed);
        let mut queued = 0;
        for subscriber in &slot.subscribers {
            queued += u64::from(subscriber.push(key, &frame, self.config.lag_policy, &self.stats));
        }
        self.stats.frames_queued.fetch_add(queued, Ordering::Relaxed);
    }

    /// Closes every subscriber (e.g. the feed lost events: streams would have gaps).
    pub fn close_all(&self, reason: &str) {
        for slot in self.registry_read().values() {
            for subscriber in &slot.subscribers {
                subscriber.close(reason.to_string());
            }
        }
    }

    /// Applies one engine command's events to the view and publishes what they change. Called
    /// by the feed thread only.
    pub fn on_command(&self, events: &[Event]) {
        self.on_command_numbered(events, None);
    }

    /// [`Self::on_command`] for a follower of the journal (a replica running its own engine over
    /// the authoritative log): the events of the command at engine sequence `sequence`. Depth
    /// update ids are engine sequences instead of counts of level updates: a diff carries `U` =
    /// the market's previous id + 1 and `u` = `sequence`, so diffs stay gap-free by the usual
    /// rule and every follower of the same log, wherever it started (seeded with
    /// [`MarketView::seed_books_at`]), numbers them alike. Called by the follower's thread only.
    pub fn on_sequenced_command(&self, events: &[Event], sequence: u64) {
        self.on_command_numbered(events, Some(sequence));
    }

    fn on_command_numbered(&self, events: &[Event], sequence: Option<u64>) {
        let now = now_us();
        let mut feed = self.feed_state();
        let feed = &mut *feed;
        self.view.apply_command_numbered(events, sequence, |market, book, updates, first_id| {
            self.on_book(feed, market, book, updates, first_id, now);
        });
        let mut traded: Vec<(MarketId, u64)> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            match event {
                Event::Fill(fill) => {
                    self.publish_trade(fill, now);
                    match traded.iter_mut().find(|(m, _)| *m == fill.market_id) {
                        Some(entry) => entry.1 = fill.timestamp_ns.get(),
                        None => traded.push((fill.market_id, fill.timestamp_ns.get())),
                    }
                    self.on_fill_private(feed, fill, now);
                }
                Event::OrderAccepted(accepted) => {
                    let info = OrderInfo {
                        market: accepted.market_id,
                        client_order_id: accepted.client_order_id,
                        terms: OrderTerms::new(
                            accepted.side.get().unwrap_or(Side::Bid),
                            accepted.order_type.get().unwrap_or(OrderType::Limit),
                            accepted.time_in_force.get().unwrap_or(TimeInForce::Gtc),
                            accepted.self_trade_prevention.get().unwrap_or(SelfTradePrevention::RejectTaker),
                            accepted.post_only.get().is_ok_and(bool::from),
                        ),
                        price_or_quote: OrderInfo::price_or_quote(
                            accepted.order_type.get().unwrap_or(OrderType::Limit),
                            accepted.price_ticks.get(),
                            accepted.quote_quantity.get(),
                        ),
                        quantity_lots: accepted.quantity_lots.get(),
                        filled_lots: 0,
                        executed_quote_low: 0,
                        executed_quote_high: [0; EXECUTED_QUOTE_HIGH_BYTES],
                    };
                    feed.orders.insert(accepted.order_id.get(), info);
                    let attached = attached_of(accepted);
                    if attached != Attached::default() {
                        feed.attached.insert(accepted.order_id.get(), attached);
                    }
                    let order_event = OrderEvent {
                        event: "orderAccepted",
                        status: "New",
                        timestamp_ns: accepted.timestamp_ns.get(),
                        reason: None,
                        trigger_price_ticks: None,
                        attached,
                        fill: None,
                    };
                    self.publish_order(accepted.user_id, accepted.order_id, &info, &order_event, now);
                }
                Event::OrderCanceled(canceled) => {
                    let info = feed.orders.remove(canceled.order_id.get()).unwrap_or_else(|| {
                        unknown_order(
                            canceled.market_id,
                            canceled.client_order_id,
                            canceled.side.get().unwrap_or(Side::Bid),
                            canceled.filled_lots.get() + canceled.canceled_lots.get(),
                            canceled.filled_lots.get(),
                        )
                    });
                    let order_event = OrderEvent {
                        event: "orderCancelled",
                        status: "Cancelled",
                        timestamp_ns: canceled.timestamp_ns.get(),
                        reason: None,
                        trigger_price_ticks: None,
                        attached: feed.attached.remove(&canceled.order_id.get()).unwrap_or_default(),
                        fill: None,
                    };
                    self.publish_order(canceled.user_id, canceled.order_id, &info, &order_event, now);
                }
                Event::OrderExpired(expired) => {
                    let info = feed.orders.remove(expired.order_id.get()).unwrap_or_else(|| {
                        unknown_order(
                            expired.market_id,
                            expired.client_order_id,
                            expired.side.get().unwrap_or(Side::Bid),
                            expired.filled_lots.get() + expired.expired_lots.get(),
                            expired.filled_lots.get(),
                        )
                    });
                    let reason = expiry_reason_name(expired.reason.get().ok());
                    let order_event = OrderEvent {
                        event: "orderExpired",
                        status: "Expired",
                        timestamp_ns: expired.timestamp_ns.get(),
                        reason: Some(reason),
                        trigger_price_ticks: None,
                        attached: feed.attached.remove(&expired.order_id.get()).unwrap_or_default(),
                        fill: None,
                    };
                    self.publish_order(expired.user_id, expired.order_id, &info, &order_event, now);
                }
                Event::OrderReplaced(replaced) => {
                    let side = replaced.side.get().unwrap_or(Side::Bid);
                    if feed.orders.get(replaced.order_id.get()).is_none() {
                        let unknown = unknown_order(replaced.market_id, replaced.client_order_id, side, 0, 0);
                        feed.orders.insert(replaced.order_id.get(), unknown);
                    }
                    let Some(info) = feed.orders.get_mut(replaced.order_id.get()) else { continue };
                    info.set_price_ticks(replaced.price_ticks.get());
                    info.quantity_lots = replaced.quantity_lots.get();
                    info.filled_lots = replaced.filled_lots.get();
                    let info = *info;
                    let order_event = OrderEvent {
                        event: "orderModified",
                        status: if info.filled_lots > 0 { "PartiallyFilled" } else { "New" },
                        timestamp_ns: replaced.timestamp_ns.get(),
                        reason: None,
                        trigger_price_ticks: None,
                        attached: feed.attached.get(&replaced.order_id.get()).copied().unwrap_or_default(),
                        fill: None,
                    };
                    self.publish_order(replaced.user_id, replaced.order_id, &info, &order_event, now);
                }
                Event::TriggerPending(pending) => {
                    let info = OrderInfo {
                        market: pending.market_id,
                        client_order_id: pending.client_order_id,
                        terms: OrderTerms::new(
                            pending.side.get().unwrap_or(Side::Bid),
                            pending.order_type.get().unwrap_or(OrderType::Limit),
                            pending.time_in_force.get().unwrap_or(TimeInForce::Gtc),
                            pending.self_trade_prevention.get().unwrap_or(SelfTradePrevention::RejectTaker),
                            pending.post_only.get().is_ok_and(bool::from),
                        ),
                        price_or_quote: OrderInfo::price_or_quote(
                            pending.order_type.get().unwrap_or(OrderType::Limit),
                            pending.price_ticks.get(),
                            pending.quote_quantity.get(),
                        ),
                        quantity_lots: pending.quantity_lots.get(),
                        filled_lots: 0,
                        executed_quote_low: 0,
                        executed_quote_high: [0; EXECUTED_QUOTE_HIGH_BYTES],
                    };
                    feed.orders.insert(pending.order_id.get(), info);
                    let order_event = OrderEvent {
                        event: "orderAccepted",
                        status: "TriggerPending",
                        timestamp_ns: pending.timestamp_ns.get(),
                        reason: None,
                        trigger_price_ticks: Some(pending.trigger_price_ticks.get()),
                        attached: Attached::default(),
                        fill: None,
                    };
                    self.publish_order(pending.user_id, pending.order_id, &info, &order_event, now);
                }
                Event::TriggerPlaced(placed) => {
                    // The engine follows a fired trigger at once with its order's acceptance or
                    // with `TriggerFailed`: a trigger whose order could not be placed shows only
                    // `triggerFailed`, never a `triggerPlaced` (with `X` `New`) first.
                    let fails = |next: &Event| matches!(next, Event::TriggerFailed(f) if f.order_id == placed.order_id);
                    if events.get(index + 1).is_some_and(fails) {
                        continue;
                    }
                    let Some(info) = feed.orders.get(placed.order_id.get()).copied() else { continue };
                    let order_event = OrderEvent {
                        event: "triggerPlaced",
                        status: "New",
                        timestamp_ns: placed.timestamp_ns.get(),
                        reason: None,
                        trigger_price_ticks: Some(placed.trigger_price_ticks.get()),
                        attached: Attached::default(),
                        fill: None,
                    };
                    self.publish_order(placed.user_id, placed.order_id, &info, &order_event, now);
                }
                Event::TriggerFailed(failed) => {
                    let Some(info) = feed.orders.remove(failed.order_id.get()) else { continue };
                    let order_event = OrderEvent {
                        event: "triggerFailed",
                        status: "TriggerFailed",
                        timestamp_ns: failed.timestamp_ns.get(),
                        reason: Some(trigger_failure_name(failed.reason.get().ok())),
                        trigger_price_ticks: None,
                        attached: feed.attached.remove(&failed.order_id.get()).unwrap_or_default(),
                        fill: None,
                    };
                    self.publish_order(failed.user_id, failed.order_id, &info, &order_event, now);
                }
                Event::BalanceUpdate(update) => self.publish_balance(update, now),
                Event::LiquidityAdded(_) | Event::LiquidityRemoved(_) | Event::SwapExecuted(_) => {
                    self.publish_pool(event, now);
                }
                _ => {}
            }
        }
        for (market, timestamp_ns) in traded {
            self.publish_klines(market, timestamp_ns, now);
        }
    }

    /// Publishes a change of one market's book mirrored from another process (a replica that
    /// follows the Redis sink's snapshots): `updates` are the levels that changed, each with its
    /// new aggregate (quantity 0: gone), as of engine sequence `sequence`. The market's update id
    /// becomes `sequence` (at least the previous id + 1), so its diffs carry `U` = previous id + 1
    /// and `u` = `sequence`: gap-free, as on the engine's own feed, and comparable between two
    /// replicas of the same source. Depth, conflated depth and bookTicker are published as for
    /// engine events. Called by the mirror's thread only.
    pub fn on_mirrored_levels(&self, market: MarketId, updates: &[codec::BookLevelUpdate], sequence: u64) {
        let now = now_us();
        let mut feed = self.feed_state();
        let feed = &mut *feed;
        self.view.apply_mirrored_with(market, updates, sequence, |book, first_id| {
            self.on_book(feed, market, book, updates, first_id, now);
        });
    }

    fn on_book(
        &self,
        feed: &mut FeedState,
        market: MarketId,
        book: &crate::view::BookState<'_>,
        updates: &[codec::BookLevelUpdate],
        first_id: u64,
        now: u64,
    ) {
        let Some((index, meta)) = self.market(market) else { return };
        let last_id = book.update_id();
        let timestamp_ns = book.timestamp_ns();
        let mut asks = BTreeMap::new();
        let mut bids = BTreeMap::new();
        for update in updates {
            let levels = if update.side.get() == Ok(Side::Ask) { &mut asks } else { &mut bids };
            levels.insert(update.price_ticks.get(), update.quantity_lots.get());
        }
        self.publish(StreamKey::Depth(market), |name| {
            let mut frame = Frame::new(name, "depth", now);
            frame.str("s", &meta.symbol).levels("a", &meta.format, asks.iter().map(|(p, q)| (*p, *q)));
            frame.levels("b", &meta.format, bids.iter().map(|(p, q)| (*p, *q)));
            frame.int("U", first_id).int("u", last_id).int("T", timestamp_ns / 1_000);
            frame.finish()
        });
        let state = &mut feed.markets[index];
        let conflating = self.conflated_subscriptions.load(Ordering::Relaxed) > 0;
        for window in Conflation::ALL {
            let pending = &mut state.conflating[window.slot()];
            if !conflating || !self.has_subscribers(&StreamKey::DepthConflated(market, window)) {
                if pending.first_id.is_some() {
                    *pending = Conflating::default();
                }
                continue;
            }
            if pending.first_id.is_none() {
                pending.first_id = Some(first_id);
                pending.due = Some(Instant::now() + Duration::from_millis(window.millis()));
            }
            pending.asks.extend(asks.iter().map(|(p, q)| (*p, *q)));
            pending.bids.extend(bids.iter().map(|(p, q)| (*p, *q)));
            pending.last_id = last_id;
            pending.timestamp_ns = timestamp_ns;
        }
        let top: Top = (book.asks().next(), book.bids().next());
        if top != state.top {
            state.top = top;
            self.publish(StreamKey::BookTicker(market), |name| {
                let mut frame = Frame::new(name, "bookTicker", now);
                frame.str("s", &meta.symbol);
                // Typed clients (bpx-api-types) require all four fields as decimals: an empty
                // side is price and quantity 0, as a depth level of quantity 0 means no level.
                let (ask_price, ask_lots) = top.0.unwrap_or((0, 0));
                let (bid_price, bid_lots) = top.1.unwrap_or((0, 0));
                frame.str("a", &meta.format.price(ask_price)).str("A", &meta.format.quantity(u128::from(ask_lots)));
                frame.str("b", &meta.format.price(bid_price)).str("B", &meta.format.quantity(u128::from(bid_lots)));
                frame.int("u", last_id).int("T", timestamp_ns / 1_000);
                frame.finish()
            });
        }
    }

    fn publish_trade(&self, fill: &Fill, now: u64) {
        let Some((_, meta)) = self.market(fill.market_id) else { return };
        let taker_buys = fill.taker_side.get() == Ok(Side::Bid);
        let (buyer, seller) = if taker_buys {
            (fill.taker_order_id.get(), fill.maker_order_id.get())
        } else {
            (fill.maker_order_id.get(), fill.taker_order_id.get())
        };
        self.publish(StreamKey::Trade(fill.market_id), |name| {
            let mut frame = Frame::new(name, "trade", now);
            frame.str("s", &meta.symbol).str("p", &meta.format.price(fill.price_ticks.get()));
            frame.str("q", &meta.format.quantity(u128::from(fill.quantity_lots.get())));
            frame.str("b", &buyer.to_string()).str("a", &seller.to_string()).int("t", fill.trade_id.get());
            frame.int("T", fill.timestamp_ns.get() / 1_000).bool("m", !taker_buys);
            frame.finish()
        });
    }

    fn publish_klines(&self, market: MarketId, timestamp_ns: u64, now: u64) {
        let Some((_, meta)) = self.market(market) else { return };
        if self.kline_subscriptions.load(Ordering::Relaxed) == 0 {
            return;
        }
        for name in KlineInterval::NAMES {
            let Some(interval) = KlineInterval::parse(name) else { continue };
            let key = StreamKey::Kline(market, interval);
            if !self.has_subscribers(&key) {
                continue;
            }
            let start = interval.bucket_start(timestamp_ns / 1_000_000_000);
            let Some(candle) = self.view.klines(market, interval, start, start + 1, 1).and_then(|c| c.first().copied())
            else {
                continue;
            };
            self.publish(key, |name| {
                let mut frame = Frame::new(name, "kline", now);
                frame.str("s", &meta.symbol).int("t", candle.start).int("T", candle.end);
                frame.str("o", &meta.format.price(candle.open)).str("c", &meta.format.price(candle.close));
                frame.str("h", &meta.format.price(candle.high)).str("l", &meta.format.price(candle.low));
                frame.str("v", &meta.format.quantity(candle.volume_lots)).int("n", candle.trades);
                frame.bool("X", false);
                frame.finish()
            });
        }
    }

    fn publish_ticker(&self, market: MarketId, now: u64) {
        let Some((_, meta)) = self.market(market) else { return };
        let key = StreamKey::Ticker(market);
        if !self.has_subscribers(&key) {
            return;
        }
        let stats = self.view.ticker(market, NS_PER_DAY).unwrap_or_default();
        let last_known = stats.last_price.unwrap_or(0);
        let (open, close, high, low, volume, quote_volume, trades) = match &stats.window {
            Some(c) => (c.open, c.close, c.high, c.low, c.volume_lots, c.quote_volume, c.trades),
            None => (last_known, last_known, last_known, last_known, 0, 0, 0),
        };
        self.publish(key, |name| {
            let mut frame = Frame::new(name, "ticker", now);
            frame.str("s", &meta.symbol).str("o", &meta.format.price(open)).str("c", &meta.format.price(close));
            frame.str("h", &meta.format.price(high)).str("l", &meta.format.price(low));
            frame.str("v", &meta.format.quantity(volume)).str("V", &meta.format.quote(quote_volume));
            frame.int("n", trades);
            frame.finish()
        });
    }

    fn on_fill_private(&self, feed: &mut FeedState, fill: &Fill, now: u64) {
        let taker_side = fill.taker_side.get().unwrap_or(Side::Bid);
        let maker_side = if taker_side == Side::Bid { Side::Ask } else { Side::Bid };
        let parties = [
            (
                fill.maker_user_id,
                fill.maker_order_id,
                fill.maker_client_order_id,
                maker_side,
                fill.maker_remaining_lots,
                fill.maker_fee,
                fill.completes_maker(),
                true,
            ),
            (
                fill.taker_user_id,
                fill.taker_order_id,
                fill.taker_client_order_id,
                taker_side,
                fill.taker_remaining_lots,
                fill.taker_fee,
                // Not `remaining == 0`: a quote-quantity market order has 0 "remaining" lots on
                // every fill; only the fill that completes it says so.
                fill.completes_taker(),
                false,
            ),
        ];
        for (user, order_id, client_order_id, side, remaining, fee, done, maker) in parties {
            let remaining = remaining.get();
            if feed.orders.get(order_id.get()).is_none() {
                let mut unknown = unknown_order(fill.market_id, client_order_id, side, remaining, 0);
                unknown.set_price_ticks(fill.price_ticks.get());
                feed.orders.insert(order_id.get(), unknown);
            }
            let Some(info) = feed.orders.get_mut(order_id.get()) else { continue };
            info.filled_lots += fill.quantity_lots.get();
            info.add_executed_quote(fill.quote_amount.get());
            if info.terms.order_type() == OrderType::Limit {
                info.quantity_lots = info.quantity_lots.max(info.filled_lots + remaining);
            }
            let info = *info;
            let attached = if done {
                feed.orders.remove(order_id.get());
                feed.attached.remove(&order_id.get())
            } else {
                feed.attached.get(&order_id.get()).copied()
            }
            .unwrap_or_default();
            let order_event = OrderEvent {
                event: "orderFill",
                status: if done { "Filled" } else { "PartiallyFilled" },
                timestamp_ns: fill.timestamp_ns.get(),
                reason: None,
                trigger_price_ticks: None,
                attached,
                fill: Some(FillPart {
                    trade_id: fill.trade_id.get(),
                    lots: fill.quantity_lots.get(),
                    price_ticks: fill.price_ticks.get(),
                    maker,
                    fee: fee.get(),
                }),
            };
            self.publish_order(user, order_id, &info, &order_event, now);
        }
    }

    fn publish_order(&self, user: UserId, order_id: OrderId, info: &OrderInfo, event: &OrderEvent<'_>, now: u64) {
        let Some((_, meta)) = self.market(info.market) else { return };
        let fee_symbol = self.assets.get(meta.quote.get() as usize).map_or("", |a| a.0.as_str());
        for key in [StreamKey::OrderUpdate(user, None), StreamKey::OrderUpdate(user, Some(info.market))] {
            self.publish(key, |name| {
                let format = &meta.format;
                let mut frame = Frame::new(name, event.event, now);
                frame.str("s", &meta.symbol);
                if info.client_order_id != ClientOrderId::ZERO {
                    frame.int("c", info.client_order_id.get());
                }
                frame.str("S", side_name(info.terms.side())).str("o", order_type_name(info.terms.order_type()));
                frame.str("f", time_in_force_name(info.terms.time_in_force()));
                frame.str("q", &format.quantity(u128::from(info.quantity_lots)));
                if info.quote_quantity() > 0 {
                    frame.str("Q", &format.quote(u128::from(info.quote_quantity())));
                }
                if info.terms.order_type() == OrderType::Limit {
                    frame.str("p", &format.price(info.price_ticks()));
                }
                if let Some(trigger_price_ticks) = event.trigger_price_ticks {
                    frame.str("P", &format.price(trigger_price_ticks)).str("B", TRIGGER_BY_LAST_PRICE);
                    if info.quantity_lots > 0 {
                        frame.str("Y", &format.quantity(u128::from(info.quantity_lots)));
                    }
                }
                let [stop_loss_trigger, stop_loss_limit, take_profit_trigger, take_profit_limit] = event.attached;
                for (key, ticks) in [("a", take_profit_trigger), ("b", stop_loss_trigger)] {
                    if ticks != 0 {
                        frame.str(key, &format.price(ticks));
                    }
                }
                for (key, ticks) in [("j", take_profit_limit), ("k", stop_loss_limit)] {
                    if ticks != 0 {
                        frame.str(key, &format.price(ticks));
                    }
                }
                for (key, trigger_ticks) in [("d", take_profit_trigger), ("g", stop_loss_trigger)] {
                    if trigger_ticks != 0 {
                        frame.str(key, TRIGGER_BY_LAST_PRICE);
                    }
                }
                frame.str("X", event.status);
                if let Some(reason) = event.reason {
                    frame.str("R", reason);
                }
                frame.str("i", &order_id.get().to_string());
                if let Some(fill) = &event.fill {
                    frame.int("t", fill.trade_id).str("l", &format.quantity(u128::from(fill.lots)));
                    frame.str("L", &format.price(fill.price_ticks)).bool("m", fill.maker);
                    frame.str("n", &format.quote(u128::from(fill.fee))).str("N", fee_symbol);
                }
                frame.str("z", &format.quantity(u128::from(info.filled_lots)));
                frame.str("Z", &format.quote(info.executed_quote()));
                frame.str("V", stp_name(info.terms.self_trade_prevention())).int("T", event.timestamp_ns / 1_000);
                frame.str("O", "USER").bool("y", info.terms.post_only());
                frame.finish()
            });
        }
    }

    fn publish_balance(&self, update: &codec::BalanceUpdate, now: u64) {
        let Some((symbol, decimals)) = self.assets.get(update.asset_id.get() as usize) else { return };
        let reason = match update.reason.get() {
            Ok(codec::BalanceChange::Deposit) => "deposit",
            Ok(codec::BalanceChange::Withdrawal) => "withdrawal",
            Ok(codec::BalanceChange::OrderLocked) => "orderLocked",
            Ok(codec::BalanceChange::OrderReleased) => "orderReleased",
            Ok(codec::BalanceChange::Trade) => "trade",
            Ok(codec::BalanceChange::Pool) => "pool",
            Err(_) => "unknown",
        };
        self.publish(StreamKey::BalanceUpdate(update.user_id), |name| {
            let mut frame = Frame::new(name, "balanceUpdate", now);
            frame.str("a", symbol);
            frame.str("f", &crate::format::format_trimmed(u128::from(update.available.get()), *decimals));
            frame.str("l", &crate::format::format_trimmed(u128::from(update.locked.get()), *decimals));
            frame.str("r", reason).int("T", update.timestamp_ns.get() / 1_000);
            frame.finish()
        });
    }

    /// One frame of `amm.<symbol>` for a pool event. Public: who provided or swapped is left out
    /// (no user ids), as `trade.<symbol>` names orders, not users.
    fn publish_pool(&self, event: &Event, now: u64) {
        let (market, timestamp_ns, base_reserve, quote_reserve) = match event {
            Event::LiquidityAdded(e) => (e.market_id, e.timestamp_ns, e.base_reserve, e.quote_reserve),
            Event::LiquidityRemoved(e) => (e.market_id, e.timestamp_ns, e.base_reserve, e.quote_reserve),
            Event::SwapExecuted(e) => (e.market_id, e.timestamp_ns, e.base_reserve, e.quote_reserve),
            _ => return,
        };
        let Some((_, meta)) = self.market(market) else { return };
        let (base, quote) = (meta.format.base_decimals, meta.format.quote_decimals);
        let amount =
            |value: codec::Amount, decimals: u8| crate::format::format_trimmed(u128::from(value.get()), decimals);
        self.publish(StreamKey::Amm(market), |name| {
            let (kind, total_shares) = match event {
                Event::LiquidityAdded(e) => ("liquidityAdded", e.total_shares.get()),
                Event::LiquidityRemoved(e) => ("liquidityRemoved", e.total_shares.get()),
                // A swap leaves the shares as they are; the view already applied the command (at
                // most one pool event per command), so its total is the one after this swap.
                _ => ("swap", self.view.pools().pool(market).map_or(0, |pool| pool.total_shares)),
            };
            let mut frame = Frame::new(name, kind, now);
            frame.str("s", &meta.symbol);
            match event {
                Event::LiquidityAdded(codec::LiquidityAdded { base_amount, quote_amount, shares, .. })
                | Event::LiquidityRemoved(codec::LiquidityRemoved { base_amount, quote_amount, shares, .. }) => {
                    frame.str("b", &amount(*base_amount, base)).str("q", &amount(*quote_amount, quote));
                    frame.str("n", &shares.get().to_string());
                }
                Event::SwapExecuted(swap) => {
                    let side = swap.side.get().unwrap_or(Side::Bid);
                    let (decimals_in, decimals_out) = if side == Side::Bid { (quote, base) } else { (base, quote) };
                    frame.str("S", side_name(side));
                    frame
                        .str("i", &amount(swap.amount_in, decimals_in))
                        .str("o", &amount(swap.amount_out, decimals_out));
                    frame.str("f", &amount(swap.fee, decimals_in));
                }
                _ => {}
            }
            frame.str("x", &amount(base_reserve, base)).str("y", &amount(quote_reserve, quote));
            frame.str("L", &total_shares.to_string()).int("T", timestamp_ns.get() / 1_000);
            frame.finish()
        });
    }

    /// Time-driven work: flushes due conflated depth windows and, every
    /// [`PublisherConfig::ticker_every`], publishes the 24 h tickers. Called by the feed thread.
    pub fn tick(&self, now: Instant) {
        let event_time = now_us();
        let mut feed = self.feed_state();
        for (index, state) in feed.markets.iter_mut().enumerate() {
            let market = MarketId::new(index as u32 + 1);
            let meta = &self.markets[index];
            for window in Conflation::ALL {
                let pending = &mut state.conflating[window.slot()];
                if pending.first_id.is_none() || pending.due.is_some_and(|due| now < due) {
                    continue;
                }
                let pending = std::mem::take(pending);
                self.publish(StreamKey::DepthConflated(market, window), |name| {
                    let mut frame = Frame::new(name, "depth", event_time);
                    frame.str("s", &meta.symbol).levels("a", &meta.format, pending.asks.iter().map(|(p, q)| (*p, *q)));
                    frame.levels("b", &meta.format, pending.bids.iter().map(|(p, q)| (*p, *q)));
                    frame.int("U", pending.first_id.unwrap_or(0)).int("u", pending.last_id);
                    frame.int("T", pending.timestamp_ns / 1_000);
                    frame.finish()
                });
            }
        }
        if now.duration_since(feed.last_ticker) >= self.config.ticker_every {
            feed.last_ticker = now;
            drop(feed);
            for index in 0..self.markets.len() {
                self.publish_ticker(MarketId::new(index as u32 + 1), event_time);
            }
        }
    }

    /// The full-book snapshot frame of a depth stream, taken under the book lock, with the
    /// matching `u` (= `lastUpdateId`).
    fn snapshot_frame(&self, key: &StreamKey, book: &crate::view::BookState<'_>) -> Bytes {
        let market = key.depth_market().unwrap_or(MarketId::new(0));
        let name = self.stream_name(key);
        let Some((_, meta)) = self.market(market) else { return control("error", r#""message":"unknown market""#) };
        let mut frame = Frame::new(&name, "depthSnapshot", now_us());
        frame.str("s", &meta.symbol).levels("a", &meta.format, book.asks());
        // Both sides by ascending price, as REST depth lists them.
        let mut bids: Vec<(u64, u64)> = book.bids().collect();
        bids.reverse();
        frame.levels("b", &meta.format, bids).int("u", book.update_id()).int("T", book.timestamp_ns() / 1_000);
        frame.finish()
    }
}

fn unknown_order(
    market: MarketId,
    client_order_id: ClientOrderId,
    side: Side,
    quantity: u64,
    filled: u64,
) -> OrderInfo {
    OrderInfo {
        market,
        client_order_id,
        terms: OrderTerms::new(side, OrderType::Limit, TimeInForce::Gtc, SelfTradePrevention::RejectTaker, false),
        price_or_quote: 0,
        quantity_lots: quantity,
        filled_lots: filled,
        executed_quote_low: 0,
        executed_quote_high: [0; EXECUTED_QUOTE_HIGH_BYTES],
    }
}

/// One connection's handle on the publisher. Dropping it unsubscribes it from every stream.
pub struct Subscription {
    publisher: Arc<Publisher>,
    subscriber: Arc<Subscriber>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("streams", &self.subscriber.inbox().streams).finish()
    }
}

impl Subscription {
    /// Subscribes to `key`; `Ok(false)` when already subscribed.
    ///
    /// # Errors
    /// [`SubscribeError::Stale`] for depth while the view lost events; [`SubscribeError::Closed`]
    /// once the subscriber is closed.
    pub fn subscribe(&self, key: StreamKey) -> Result<bool, SubscribeError> {
        if key.depth_market().is_some() && self.publisher.view.is_stale() {
            return Err(SubscribeError::Stale);
        }
        let mut registry = self.publisher.registry_write();
        let mut inbox = self.subscriber.inbox();
        if inbox.closed.is_some() {
            return Err(SubscribeError::Closed);
        }
        if inbox.streams.contains(&key) {
            return Ok(false);
        }
        inbox.streams.push(key);
        self.publisher.count(&key, true);
        let name = self.publisher.stream_name(&key);
        registry
            .entry(key)
            .or_insert_with(|| Slot { name, subscribers: Vec::new() })
            .subscribers
            .push(self.subscriber.clone());
        Ok(true)
    }

    /// Unsubscribes from `key`; `false` when not subscribed.
    pub fn unsubscribe(&self, key: &StreamKey) -> bool {
        let mut registry = self.publisher.registry_write();
        let mut inbox = self.subscriber.inbox();
        let Some(position) = inbox.streams.iter().position(|k| k == key) else { return false };
        inbox.streams.swap_remove(position);
        inbox.lagging.retain(|lag| lag.key != *key);
        self.publisher.count(key, false);
        if let Some(slot) = registry.get_mut(key) {
            slot.subscribers.retain(|s| !Arc::ptr_eq(s, &self.subscriber));
            if slot.subscribers.is_empty() {
                registry.remove(key);
            }
        }
        true
    }

    /// The streams subscribed to.
    pub fn streams(&self) -> Vec<StreamKey> {
        self.subscriber.inbox().streams.clone()
    }

    /// Waits for the next delivery. Cancel-safe (nothing is lost if the future is dropped).
    pub async fn next(&self) -> Delivery {
        self.subscriber.next().await
    }

    /// Resumes lagging streams: each depth stream gets a snapshot frame (`depthSnapshot`, taken
    /// under the book lock, so the next diff has `U = u + 1`), the others continue with their
    /// next event. Returns `false` (and closes the subscriber) once it has lagged more than
    /// [`PublisherConfig::resyncs_max`] times.
    pub fn resync(&self, keys: &[StreamKey]) -> bool {
        {
            let mut inbox = self.subscriber.inbox();
            inbox.resyncs += 1;
            if inbox.resyncs > self.publisher.config.resyncs_max {
                self.publisher.stats.lag_disconnects.fetch_add(1, Ordering::Relaxed);
                inbox.closed.get_or_insert_with(|| "Lagging: too many resynchronisations".into());
                inbox.frames.clear();
                drop(inbox);
                self.subscriber.notify.notify_one();
                return false;
            }
        }
        for key in keys {
            let resume = |snapshot: Option<Bytes>| {
                let mut inbox = self.subscriber.inbox();
                inbox.lagging.retain(|lag| lag.key != *key);
                // Not for a stream unsubscribed meanwhile.
                if let Some(frame) = snapshot.filter(|_| inbox.streams.contains(key)) {
                    inbox.frames.push_back(frame);
                }
            };
            match key.depth_market() {
                Some(market) => {
                    let done = self.publisher.view.with_book(market, |book| {
                        resume(Some(self.publisher.snapshot_frame(key, book)));
                    });
                    if done.is_none() {
                        resume(None);
                    }
                }
                None => resume(None),
            }
        }
        self.subscriber.notify.notify_one();
        true
    }

    /// A lag notice for the client: `{"event":"lagged","streams":{"<name>":<dropped>,...}}`.
    pub fn lag_notice(&self, lagged: &[(StreamKey, u64)]) -> Bytes {
        let members: Vec<String> =
            lagged.iter().map(|(key, dropped)| format!(r#""{}":{dropped}"#, self.publisher.stream_name(key))).collect();
        control("lagged", &format!(r#""streams":{{{}}}"#, members.join(",")))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for key in self.streams() {
            self.unsubscribe(&key);
        }
        self.publisher.stats.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    //! The publisher's compact per-order record: one word holds a limit order's price or a market
    //! order's quote quantity, the executed quote adds up past 64 bits, and the record is 48
    //! bytes.
    use super::*;

    fn info(order_type: OrderType, price_ticks: u64, quote_quantity: u64) -> OrderInfo {
        OrderInfo {
            client_order_id: ClientOrderId::new(7),
            price_or_quote: OrderInfo::price_or_quote(order_type, price_ticks, quote_quantity),
            quantity_lots: 0,
            filled_lots: 0,
            executed_quote_low: 0,
            executed_quote_high: [0; EXECUTED_QUOTE_HIGH_BYTES],
            market: MarketId::new(1),
            terms: OrderTerms::new(Side::Bid, order_type, TimeInForce::Ioc, SelfTradePrevention::RejectTaker, false),
        }
    }

    #[test]
    fn a_limit_order_keeps_its_price_and_a_market_order_its_quote_quantity() {
        let mut limit = info(OrderType::Limit, 101_500, 0);
        assert_eq!((limit.price_ticks(), limit.quote_quantity()), (101_500, 0));
        limit.set_price_ticks(99_000);
        assert_eq!((limit.price_ticks(), limit.quote_quantity()), (99_000, 0));
        let mut by_quote = info(OrderType::Market, 0, 2_500_000);
        assert_eq!((by_quote.price_ticks(), by_quote.quote_quantity()), (0, 2_500_000));
        // A fill of an unknown order sets the price it traded at: a market order has none.
        by_quote.set_price_ticks(99_000);
        assert_eq!((by_quote.price_ticks(), by_quote.quote_quantity()), (0, 2_500_000));
    }

    /// The executed quote carries into its high bytes and saturates at 2^88 - 1.
    #[test]
    fn the_executed_quote_adds_up_past_64_bits_and_saturates() {
        let mut order = info(OrderType::Limit, 100, 0);
        order.add_executed_quote(u64::MAX);
        order.add_executed_quote(u64::MAX);
        assert_eq!(order.executed_quote(), 2 * u128::from(u64::MAX));
        for _ in 0..3 {
            order.executed_quote_high = [0xff; EXECUTED_QUOTE_HIGH_BYTES];
            order.add_executed_quote(u64::MAX);
            assert_eq!(order.executed_quote(), (1u128 << 88) - 1);
        }
    }

    /// Fails with the former record (five bytes for the small enums and flag, a 4-byte high
    /// quote part: 56 bytes).
    #[test]
    fn an_open_order_record_is_48_bytes() {
        assert!(std::mem::size_of::<OrderInfo>() <= 48);
    }
}
