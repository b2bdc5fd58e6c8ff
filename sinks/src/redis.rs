//! The Redis sink: per-market order-book snapshots (top N levels with the engine sequence as
//! `lastUpdateId`), tickers and last trades, written at an interval and at shutdown.
//!
//! Key layout (`prefix` defaults to `exchange:`), all written in one `MULTI`/`EXEC`, so a reader
//! never sees keys from two different sequences:
//!
//! | key | value (JSON) |
//! |---|---|
//! | `exchange:sequence` | the engine sequence every key below reflects (plain integer) |
//! | `exchange:book:<SYMBOL>` | `{"symbol", "lastUpdateId", "timestamp_ns", "bids": [["price","quantity"],…], "asks": […], "bids_ticks": [[ticks, lots, orders],…], "asks_ticks": […]}`, best first |
//! | `exchange:ticker:<SYMBOL>` | `{"symbol", "lastUpdateId", "lastPrice", "lastTradeId", "firstPrice", "high", "low", "volume", "quoteVolume", "trades"}` over the last 24 h of trades the sink has seen |
//! | `exchange:trades:<SYMBOL>` | the last trades, newest first: `[{"id","price","quantity","quoteQuantity","timestamp_ns","isBuyerMaker","priceTicks","quantityLots","quoteAmount","buyerOrderId","sellerOrderId"},…]` (the last four in integer units: ticks, lots, quote minor units) |
//!
//! Prices and quantities are decimal strings in the assets' units (as the REST API). The sink
//! keeps state, not history: on (re)start it seeds its books from the newest snapshot and
//! replays the journal after it ([`Resume::Seed`]), so the keys always equal the engine's book
//! at `lastUpdateId`. Ticker and trades cover what was replayed or seen since the sink started.

use crate::{CommandEvents, Resume, Sink, SinkError};
use codec::decimal::format_fixed;
use codec::{Event, Side};
use engine::{Book, Engine, EngineConfig};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Redis settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Key prefix.
    pub prefix: String,
    /// Levels per side in a book snapshot.
    pub depth: usize,
    /// Trades kept per market.
    pub trades: usize,
    /// Time between snapshots.
    pub interval: Duration,
}

impl RedisConfig {
    /// Defaults for `url`: prefix `exchange:`, 50 levels, 500 trades, every 500 ms.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            prefix: "exchange:".into(),
            depth: 50,
            trades: 500,
            interval: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone)]
struct Trade {
    id: u64,
    price: u64,
    lots: u64,
    quote: u64,
    timestamp_ns: u64,
    buyer_is_maker: bool,
    buyer_order_id: u64,
    seller_order_id: u64,
}

#[derive(Debug, Default)]
struct MarketState {
    /// price → (lots, orders).
    bids: BTreeMap<u64, (u64, u32)>,
    asks: BTreeMap<u64, (u64, u32)>,
    trades: VecDeque<Trade>,
    /// Trades of the last 24 h (by engine time).
    window: VecDeque<Trade>,
}

/// The Redis sink.
pub struct RedisSink {
    config: RedisConfig,
    engine_config: EngineConfig,
    connection: Option<redis::Connection>,
    markets: HashMap<u32, MarketState>,
    sequence: u64,
    timestamp_ns: u64,
    written: u64,
    last_write: Instant,
}

fn service(error: impl std::fmt::Display) -> SinkError {
    SinkError::Service(format!("redis: {error}"))
}

const DAY_NS: u64 = 24 * 3600 * 1_000_000_000;

impl RedisSink {
    /// A sink for `config`; connects on [`Sink::open`].
    pub fn new(config: RedisConfig, engine_config: EngineConfig) -> Self {
        Self {
            config,
            engine_config,
            connection: None,
            markets: HashMap::new(),
            sequence: 0,
            timestamp_ns: 0,
            written: u64::MAX,
            last_write: Instant::now(),
        }
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::BookLevelUpdate(m) => {
                let market = self.markets.entry(m.market_id.get()).or_default();
                let side = if m.side.get() == Ok(Side::Bid) { &mut market.bids } else { &mut market.asks };
                if m.quantity_lots.get() == 0 {
                    side.remove(&m.price_ticks.get());
                } else {
                    side.insert(m.price_ticks.get(), (m.quantity_lots.get(), m.order_count.get()));
                }
            }
            Event::Fill(m) => {
                let market = self.markets.entry(m.market_id.get()).or_default();
                let taker_buys = m.taker_side.get() == Ok(Side::Bid);
                let trade = Trade {
                    id: m.trade_id.get(),
                    price: m.price_ticks.get(),
                    lots: m.quantity_lots.get(),
                    quote: m.quote_amount.get(),
                    timestamp_ns: m.timestamp_ns.get(),
                    buyer_is_maker: m.taker_side.get() == Ok(Side::Ask),
                    buyer_order_id: if taker_buys { m.taker_order_id.get() } else { m.maker_order_id.get() },
                    seller_order_id: if taker_buys { m.maker_order_id.get() } else { m.taker_order_id.get() },
                };
                market.trades.push_front(trade.clone());
                market.trades.truncate(self.config.trades);
                market.window.push_back(trade);
                let now = m.timestamp_ns.get();
                while market.window.front().is_some_and(|t| t.timestamp_ns + DAY_NS < now) {
                    market.window.pop_front();
                }
            }
            _ => {}
        }
    }

    /// Writes every key in one transaction.
    fn flush(&mut self) -> Result<(), SinkError> {
        let connection = self.connection.as_mut().ok_or_else(|| service("not connected"))?;
        let prefix = &self.config.prefix;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for market in &self.engine_config.markets {
            let state = self.markets.entry(market.id.get()).or_default();
            let decimals = |asset: codec::AssetId| {
                self.engine_config.assets.iter().find(|a| a.id == asset).map_or(0, |a| a.decimals)
            };
            let (base_decimals, quote_decimals) = (decimals(market.base), decimals(market.quote));
            let price = |ticks: u64| format_fixed(ticks.saturating_mul(market.tick_size), quote_decimals);
            let quantity = |lots: u64| format_fixed(lots.saturating_mul(market.lot_size), base_decimals);
            let depth = self.config.depth;
            let bids: Vec<_> = state.bids.iter().rev().take(depth).collect();
            let asks: Vec<_> = state.asks.iter().take(depth).collect();
            let book = json!({
                "symbol": market.symbol,
                "lastUpdateId": self.sequence,
                "timestamp_ns": self.timestamp_ns,
                "bids": bids.iter().map(|(p, (q, _))| [price(**p), quantity(*q)]).collect::<Vec<_>>(),
                "asks": asks.iter().map(|(p, (q, _))| [price(**p), quantity(*q)]).collect::<Vec<_>>(),
                "bids_ticks": bids.iter().map(|(p, (q, n))| json!([p, q, n])).collect::<Vec<_>>(),
                "asks_ticks": asks.iter().map(|(p, (q, n))| json!([p, q, n])).collect::<Vec<_>>(),
            });
            pipe.set(format!("{prefix}book:{}", market.symbol), book.to_string()).ignore();
            let window = &state.window;
            let volume: u128 = window.iter().map(|t| u128::from(t.lots)).sum();
            let quote_volume: u128 = window.iter().map(|t| u128::from(t.quote)).sum();
            let ticker = json!({
                "symbol": market.symbol,
                "lastUpdateId": self.sequence,
                "lastPrice": state.trades.front().map(|t| price(t.price)),
                "lastTradeId": state.trades.front().map(|t| t.id),
                "firstPrice": window.front().map(|t| price(t.price)),
                "high": window.iter().map(|t| t.price).max().map(price),
                "low": window.iter().map(|t| t.price).min().map(price),
                "volume": quantity(u64::try_from(volume).unwrap_or(u64::MAX)),
                "quoteVolume": format_fixed(u64::try_from(quote_volume).unwrap_or(u64::MAX), quote_decimals),
                "trades": window.len(),
            });
            pipe.set(format!("{prefix}ticker:{}", market.symbol), ticker.to_string()).ignore();
            let trades: Vec<_> = state
                .trades
                .iter()
                .map(|t| {
                    json!({
                        "id": t.id, "price": price(t.price), "quantity": quantity(t.lots),
                        "quoteQuantity": format_fixed(t.quote, quote_decimals), "timestamp_ns": t.timestamp_ns,
                        "isBuyerMaker": t.buyer_is_maker, "priceTicks": t.price, "quantityLots": t.lots,
                        "quoteAmount": t.quote, "buyerOrderId": t.buyer_order_id, "sellerOrderId": t.seller_order_id,
                    })
                })
                .collect();
            pipe.set(format!("{prefix}trades:{}", market.symbol), serde_json::Value::from(trades).to_string()).ignore();
        }
        pipe.set(format!("{prefix}sequence"), self.sequence).ignore();
        pipe.query::<()>(connection).map_err(|e| {
            self.connection = None;
            service(e)
        })?;
        self.written = self.sequence;
        self.last_write = Instant::now();
        Ok(())
    }
}

impl Sink for RedisSink {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn open(&mut self) -> Result<Resume, SinkError> {
        self.connection = None;
        let client = redis::Client::open(self.config.url.as_str()).map_err(service)?;
        let mut connection = client.get_connection_with_timeout(Duration::from_secs(5)).map_err(service)?;
        redis::cmd("PING").query::<String>(&mut connection).map_err(service)?;
        self.connection = Some(connection);
        self.written = u64::MAX;
        Ok(Resume::Seed)
    }

    fn seed(&mut self, engine: &Engine, sequence: u64) {
        self.markets.clear();
        self.sequence = sequence;
        for market in &self.engine_config.markets {
            let mut state = MarketState::default();
            if let Some(book) = engine.book(market.id) {
                book.visit_levels(Side::Bid, &mut |level| {
                    state.bids.insert(level.price.get(), (level.total_lots, level.order_count));
                    true
                });
                book.visit_levels(Side::Ask, &mut |level| {
                    state.asks.insert(level.price.get(), (level.total_lots, level.order_count));
                    true
                });
            }
            self.markets.insert(market.id.get(), state);
        }
    }

    fn write(&mut self, commands: &[CommandEvents]) -> Result<(), SinkError> {
        for command in commands {
            for event in &command.events {
                self.apply(event);
            }
            self.sequence = command.sequence;
            if let Some(event) = command.events.last() {
                self.timestamp_ns = crate::json::timestamp_ns(event);
            }
        }
        self.tick()
    }

    fn tick(&mut self) -> Result<(), SinkError> {
        if self.written != self.sequence && self.last_write.elapsed() >= self.config.interval {
            self.flush()?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), SinkError> {
        if self.written != self.sequence {
            self.flush()?;
        }
        Ok(())
    }
}

/// Book levels as `(ticks, lots, orders)`, best first.
pub type Levels = Vec<(u64, u64, u32)>;

/// Reads the sequence and one market's book levels (`(ticks, lots, orders)`, best first) back
/// from Redis, from the same `MULTI`-consistent state.
///
/// # Errors
/// Redis errors or keys that do not parse.
pub fn read_book(
    connection: &mut redis::Connection,
    prefix: &str,
    symbol: &str,
) -> Result<(u64, Levels, Levels), SinkError> {
    let text: Option<String> =
        redis::cmd("GET").arg(format!("{prefix}book:{symbol}")).query(connection).map_err(service)?;
    let text = text.ok_or_else(|| service(format!("no book for {symbol}")))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(service)?;
    let levels = |name: &str| -> Levels {
        value[name]
            .as_array()
            .map(|levels| {
                levels.iter().filter_map(|l| Some((l[0].as_u64()?, l[1].as_u64()?, l[2].as_u64()? as u32))).collect()
            })
            .unwrap_or_default()
    };
    let sequence = value["lastUpdateId"].as_u64().ok_or_else(|| service("book without lastUpdateId"))?;
    Ok((sequence, levels("bids_ticks"), levels("asks_ticks")))
}
