//! The market view: per-market books, recent trades and one-minute candles.

use crate::KlineInterval;
use codec::{BookLevelUpdate, Event, Fill, MarketId, Side};
use engine::{Book, Engine, EngineConfig};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Recent trades kept per market.
pub const TRADES_KEPT: usize = 1_000;
/// Minutes of one-minute candles kept per market (32 days: enough for the current `1month`
/// kline and the 7-day ticker).
pub const MINUTES_KEPT: u64 = 32 * 24 * 60;
const NS_PER_SECOND: u64 = 1_000_000_000;
const NS_PER_MINUTE: u64 = 60 * NS_PER_SECOND;

/// One trade, in engine units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradeRecord {
    /// Trade id (sequential per market).
    pub id: u64,
    /// Price in ticks.
    pub price_ticks: u64,
    /// Quantity in lots.
    pub quantity_lots: u64,
    /// Notional in quote minor units.
    pub quote_amount: u64,
    /// Event time, ns since the epoch.
    pub timestamp_ns: u64,
    /// Whether the buyer was the maker (the taker sold).
    pub buyer_is_maker: bool,
}

/// OHLCV of the trades in `[start, end)` (seconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candle {
    /// Start, seconds since the epoch.
    pub start: u64,
    /// End (exclusive), seconds since the epoch.
    pub end: u64,
    /// First trade price, ticks.
    pub open: u64,
    /// Highest trade price, ticks.
    pub high: u64,
    /// Lowest trade price, ticks.
    pub low: u64,
    /// Last trade price, ticks.
    pub close: u64,
    /// Base volume, lots.
    pub volume_lots: u128,
    /// Quote volume, quote minor units.
    pub quote_volume: u128,
    /// Number of trades.
    pub trades: u64,
}

impl Candle {
    fn of_trade(start: u64, end: u64, trade: &TradeRecord) -> Self {
        Self {
            start,
            end,
            open: trade.price_ticks,
            high: trade.price_ticks,
            low: trade.price_ticks,
            close: trade.price_ticks,
            volume_lots: u128::from(trade.quantity_lots),
            quote_volume: u128::from(trade.quote_amount),
            trades: 1,
        }
    }

    /// Adds the trades of `later`, which come after this candle's.
    fn absorb(&mut self, later: &Candle) {
        self.high = self.high.max(later.high);
        self.low = self.low.min(later.low);
        self.close = later.close;
        self.volume_lots += later.volume_lots;
        self.quote_volume += later.quote_volume;
        self.trades += later.trades;
    }
}

/// Statistics of the trades in a rolling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TickerStats {
    /// OHLCV of the window's trades; `None` when there were none.
    pub window: Option<Candle>,
    /// Price of the market's last trade ever seen (also outside the window).
    pub last_price: Option<u64>,
}

/// A copy of (the top of) a book.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DepthSnapshot {
    /// Ask levels `(price ticks, quantity lots)`, best (lowest) first.
    pub asks: Vec<(u64, u64)>,
    /// Bid levels `(price ticks, quantity lots)`, best (highest) first.
    pub bids: Vec<(u64, u64)>,
    /// Number of book updates applied to this market (see the crate docs).
    pub last_update_id: u64,
    /// Time of the last book update, ns since the epoch (0: none since start).
    pub timestamp_ns: u64,
}

#[derive(Debug, Default)]
struct MarketState {
    bids: BTreeMap<u64, u64>,
    asks: BTreeMap<u64, u64>,
    update_id: u64,
    book_timestamp_ns: u64,
    trades: VecDeque<TradeRecord>,
    /// One-minute candles with trades, oldest first.
    minutes: VecDeque<Candle>,
    last_price: Option<u64>,
    /// Halted by an operator (`MarketStatusChanged`).
    halted: bool,
}

impl MarketState {
    fn apply_level(&mut self, update: &BookLevelUpdate) {
        let side = match update.side.get() {
            Ok(Side::Bid) => &mut self.bids,
            Ok(Side::Ask) => &mut self.asks,
            Err(_) => return,
        };
        let (price, lots) = (update.price_ticks.get(), update.quantity_lots.get());
        if lots == 0 {
            side.remove(&price);
        } else {
            side.insert(price, lots);
        }
        self.update_id += 1;
        self.book_timestamp_ns = update.timestamp_ns.get();
    }

    fn apply_fill(&mut self, fill: &Fill) {
        let trade = TradeRecord {
            id: fill.trade_id.get(),
            price_ticks: fill.price_ticks.get(),
            quantity_lots: fill.quantity_lots.get(),
            quote_amount: fill.quote_amount.get(),
            timestamp_ns: fill.timestamp_ns.get(),
            buyer_is_maker: fill.taker_side.get() == Ok(Side::Ask),
        };
        if self.trades.len() == TRADES_KEPT {
            self.trades.pop_front();
        }
        self.trades.push_back(trade);
        self.last_price = Some(trade.price_ticks);

        let start = trade.timestamp_ns / NS_PER_MINUTE * 60;
        let candle = Candle::of_trade(start, start + 60, &trade);
        match self.minutes.back_mut() {
            Some(last) if last.start == start => last.absorb(&candle),
            Some(last) if last.start > start => {
                // Out of order (never from one engine, whose clock is monotonic): merge in place.
                match self.minutes.binary_search_by_key(&start, |c| c.start) {
                    Ok(index) => self.minutes[index].absorb(&candle),
                    Err(index) => self.minutes.insert(index, candle),
                }
            }
            _ => self.minutes.push_back(candle),
        }
        let newest = self.minutes.back().map_or(0, |c| c.start);
        while self.minutes.front().is_some_and(|c| c.start + MINUTES_KEPT * 60 <= newest) {
            self.minutes.pop_front();
        }
    }
}

/// A locked market's book, as the publisher sees it.
pub(crate) struct BookState<'a>(&'a MarketState);

impl BookState<'_> {
    /// Ask levels (price, lots), best (lowest) first.
    pub(crate) fn asks(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.asks.iter().map(|(p, q)| (*p, *q))
    }

    /// Bid levels (price, lots), best (highest) first.
    pub(crate) fn bids(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.bids.iter().rev().map(|(p, q)| (*p, *q))
    }

    /// The update id of the last applied book update.
    pub(crate) fn update_id(&self) -> u64 {
        self.0.update_id
    }

    /// Time of the last book update, ns.
    pub(crate) fn timestamp_ns(&self) -> u64 {
        self.0.book_timestamp_ns
    }
}

/// The market view: one slot per configured market (ids 1..), each behind its own `RwLock`.
pub struct MarketView {
    markets: Vec<RwLock<MarketState>>,
    stale: AtomicBool,
    latest_event_ns: AtomicU64,
    consumed: AtomicU64,
    pools: crate::amm::PoolView,
}

impl std::fmt::Debug for MarketView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarketView").field("markets", &self.markets.len()).field("stale", &self.is_stale()).finish()
    }
}

impl MarketView {
    /// An empty view of `config`'s markets.
    pub fn new(config: &EngineConfig) -> Self {
        Self {
            markets: config.markets.iter().map(|_| RwLock::new(MarketState::default())).collect(),
            stale: AtomicBool::new(false),
            latest_event_ns: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            pools: crate::amm::PoolView::new(config),
        }
    }

    /// The AMM pools (reserves and shares from the pool events).
    pub fn pools(&self) -> &crate::amm::PoolView {
        &self.pools
    }

    fn slot(&self, market_id: MarketId) -> Option<&RwLock<MarketState>> {
        (market_id.get() as usize).checked_sub(1).and_then(|index| self.markets.get(index))
    }

    fn read(&self, market_id: MarketId) -> Option<RwLockReadGuard<'_, MarketState>> {
        self.slot(market_id).map(|lock| lock.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn write(&self, market_id: MarketId) -> Option<RwLockWriteGuard<'_, MarketState>> {
        self.slot(market_id).map(|lock| lock.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces every book, halted flag and pool with the engine's (e.g. the recovered engine,
    /// before the runtime starts) and clears the stale flag. Update ids are kept.
    pub fn seed_books<B: Book>(&self, engine: &Engine<B>) {
        for (index, lock) in self.markets.iter().enumerate() {
            let Some(book) = engine.book(MarketId::new(index as u32 + 1)) else { continue };
            let mut state = lock.write().unwrap_or_else(|e| e.into_inner());
            state.halted = engine.is_halted(MarketId::new(index as u32 + 1)).unwrap_or(false);
            for side in [Side::Bid, Side::Ask] {
                let mut levels = BTreeMap::new();
                book.visit_levels(side, &mut |level| {
                    levels.insert(level.price.get(), level.total_lots);
                    true
                });
                match side {
                    Side::Bid => state.bids = levels,
                    Side::Ask => state.asks = levels,
                }
            }
        }
        self.pools.seed(engine);
        self.stale.store(false, Ordering::Release);
    }

    /// [`Self::seed_books`], and every market's update id becomes `sequence`, the engine sequence
    /// the books are at: for a follower of the journal that numbers its diffs with engine
    /// sequences ([`crate::Publisher::on_sequenced_command`]), whose first diff after this then
    /// starts at `sequence + 1`.
    pub fn seed_books_at<B: Book>(&self, engine: &Engine<B>, sequence: u64) {
        self.seed_books(engine);
        for lock in &self.markets {
            lock.write().unwrap_or_else(|e| e.into_inner()).update_id = sequence;
        }
    }

    /// Applies one engine event (only book updates, fills and market status changes matter).
    pub fn apply(&self, event: &Event) {
        self.apply_command(std::slice::from_ref(event));
    }

    /// Applies the events of one engine command (book updates, fills, market status changes and
    /// pool events matter). The book
    /// updates of each market are applied under one write lock, so a depth snapshot never shows
    /// a half-applied command.
    pub fn apply_command(&self, events: &[Event]) {
        self.apply_command_with(events, |_, _, _, _| {});
    }

    /// [`Self::apply_command`], calling `on_book(market, book, updates)` for each market whose
    /// book changed, with the book locked and already updated, and that market's level updates in
    /// order: whatever `on_book` publishes is ordered with every snapshot taken under the lock.
    pub(crate) fn apply_command_with(
        &self,
        events: &[Event],
        on_book: impl FnMut(MarketId, &BookState<'_>, &[BookLevelUpdate], u64),
    ) {
        self.apply_command_numbered(events, None, on_book);
    }

    /// [`Self::apply_command_with`]; with `sequence`, the update id of each market the command
    /// changes becomes the command's engine sequence (at least the previous id + 1) instead of
    /// the previous id plus its number of level updates: ids that every follower of one journal
    /// agrees on, wherever it started (see [`Self::seed_books_at`]).
    pub(crate) fn apply_command_numbered(
        &self,
        events: &[Event],
        sequence: Option<u64>,
        mut on_book: impl FnMut(MarketId, &BookState<'_>, &[BookLevelUpdate], u64),
    ) {
        let mut levels: Vec<BookLevelUpdate> = Vec::new();
        for event in events {
            match event {
                Event::BookLevelUpdate(update) => {
                    self.latest_event_ns.fetch_max(update.timestamp_ns.get(), Ordering::Relaxed);
                    levels.push(*update);
                }
                Event::Fill(fill) => {
                    self.latest_event_ns.fetch_max(fill.timestamp_ns.get(), Ordering::Relaxed);
                    if let Some(mut state) = self.write(fill.market_id) {
                        state.apply_fill(fill);
                    }
                }
                Event::MarketStatusChanged(changed) => {
                    if let Some(mut state) = self.write(changed.market_id) {
                        state.halted = changed.halted.get().is_ok_and(bool::from);
                    }
                }
                Event::LiquidityAdded(_) | Event::LiquidityRemoved(_) | Event::SwapExecuted(_) => {
                    self.pools.apply(event)
                }
                _ => {}
            }
        }
        // Group by market, keeping each market's order (a command touches one market in practice).
        while let Some(first) = levels.first() {
            let market = first.market_id;
            let (mine, rest): (Vec<BookLevelUpdate>, Vec<BookLevelUpdate>) =
                levels.iter().partition(|update| update.market_id == market);
            levels = rest;
            if let Some(mut state) = self.write(market) {
                let first_id = state.update_id + 1;
                for update in &mine {
                    state.apply_level(update);
                }
                if let Some(sequence) = sequence {
                    state.update_id = sequence.max(first_id);
                }
                on_book(market, &BookState(&state), &mine, first_id);
            }
        }
    }

    /// Applies level changes mirrored from another process's book (a replica following the Redis
    /// sink's snapshots) and sets the market's update id to `update_id` (at least one more than
    /// before): the market's update ids are then engine sequences rather than counts. Calls
    /// `on_book` with the book locked and updated and the first id of the change (the previous
    /// id + 1). Returns `false` for an unknown market.
    pub(crate) fn apply_mirrored_with(
        &self,
        market: MarketId,
        updates: &[BookLevelUpdate],
        update_id: u64,
        on_book: impl FnOnce(&BookState<'_>, u64),
    ) -> bool {
        let Some(mut state) = self.write(market) else { return false };
        let first_id = state.update_id + 1;
        for update in updates {
            state.apply_level(update);
            self.latest_event_ns.fetch_max(update.timestamp_ns.get(), Ordering::Relaxed);
        }
        state.update_id = update_id.max(first_id);
        on_book(&BookState(&state), first_id);
        true
    }

    /// Calls `f` with a market's book, read-locked (no command is applied meanwhile). `None` for
    /// an unknown market.
    pub(crate) fn with_book<T>(&self, market_id: MarketId, f: impl FnOnce(&BookState<'_>) -> T) -> Option<T> {
        let state = self.read(market_id)?;
        Some(f(&BookState(&state)))
    }

    /// Marks the books untrustworthy (events were lost).
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Release);
    }

    /// Marks the books trustworthy again without reseeding them: for a mirror whose source came
    /// back and whose books were brought up to date by diffs (the engine's own feed reseeds with
    /// [`Self::seed_books`] instead).
    pub fn clear_stale(&self) {
        self.stale.store(false, Ordering::Release);
    }

    /// Whether events were lost since the books were last seeded.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }

    /// Records the ring position the feed has consumed up to (exclusive).
    pub fn set_consumed(&self, position: u64) {
        self.consumed.store(position, Ordering::Release);
    }

    /// The ring position the feed has consumed up to (exclusive): every event before it has
    /// been applied.
    pub fn consumed(&self) -> u64 {
        self.consumed.load(Ordering::Acquire)
    }

    /// The view's clock, ns since the epoch: the wall clock, or the latest event time if that
    /// is ahead of it. Rolling windows end here.
    pub fn now_ns(&self) -> u64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        wall.max(self.latest_event_ns.load(Ordering::Relaxed))
    }

    /// Whether a market is halted by an operator (orders refused, cancels allowed). `None` for
    /// an unknown market.
    pub fn is_halted(&self, market_id: MarketId) -> Option<bool> {
        Some(self.read(market_id)?.halted)
    }

    /// The best `limit` levels of each side. `None` for an unknown market.
    pub fn depth(&self, market_id: MarketId, limit: usize) -> Option<DepthSnapshot> {
        let state = self.read(market_id)?;
        Some(DepthSnapshot {
            asks: state.asks.iter().take(limit).map(|(p, q)| (*p, *q)).collect(),
            bids: state.bids.iter().rev().take(limit).map(|(p, q)| (*p, *q)).collect(),
            last_update_id: state.update_id,
            timestamp_ns: state.book_timestamp_ns,
        })
    }

    /// Up to `limit` trades, skipping the `offset` most recent, oldest first. `None` for an
    /// unknown market.
    pub fn trades(&self, market_id: MarketId, limit: usize, offset: usize) -> Option<Vec<TradeRecord>> {
        let state = self.read(market_id)?;
        let end = state.trades.len().saturating_sub(offset);
        let start = end.saturating_sub(limit);
        Some(state.trades.range(start..end).copied().collect())
    }

    /// Statistics of the trades of the last `window_ns` before [`Self::now_ns`], at one-minute
    /// granularity (the minute containing the window's start is included). `None` for an
    /// unknown market.
    pub fn ticker(&self, market_id: MarketId, window_ns: u64) -> Option<TickerStats> {
        let from = self.now_ns().saturating_sub(window_ns) / NS_PER_MINUTE * 60;
        let state = self.read(market_id)?;
        let first = state.minutes.partition_point(|c| c.start < from);
        let mut window: Option<Candle> = None;
        for minute in state.minutes.range(first..) {
            match &mut window {
                Some(candle) => candle.absorb(minute),
                None => window = Some(*minute),
            }
        }
        Some(TickerStats { window, last_price: state.last_price })
    }

    /// Klines of `interval` whose start is in `[bucket_start(start), end)` (seconds), oldest
    /// first, at most `max`; only intervals with trades. `None` for an unknown market.
    pub fn klines(
        &self,
        market_id: MarketId,
        interval: KlineInterval,
        start: u64,
        end: u64,
        max: usize,
    ) -> Option<Vec<Candle>> {
        let from = interval.bucket_start(start);
        let state = self.read(market_id)?;
        let first = state.minutes.partition_point(|c| c.start < from);
        let mut out: Vec<Candle> = Vec::new();
        for minute in state.minutes.range(first..) {
            let bucket = interval.bucket_start(minute.start);
            if bucket >= end {
                break;
            }
            match out.last_mut() {
                Some(candle) if candle.start == bucket => candle.absorb(minute),
                _ => {
                    if out.len() == max {
                        break;
                    }
                    out.push(Candle { start: bucket, end: interval.bucket_end(bucket), ..*minute });
                }
            }
        }
        Some(out)
    }
}
