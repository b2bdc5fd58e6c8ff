//! A read-only market-data replica (`exchange replica`): the public REST market data and the
//! public WebSocket streams, served from the Redis sink's keys by a process that is not the
//! engine's. See docs/operations.md, "Market-data replica".
//!
//! A mirror thread polls Redis ([`ReplicaConfig::poll`]). Each time the sink has written a new
//! state (its `sequence` key moved), it reads `sequence`, every `book:<SYMBOL>` and every
//! `trades:<SYMBOL>` in one `MGET` (atomic, and the sink writes them in one `MULTI`/`EXEC`, so
//! they belong to one engine sequence), diffs each book against the previous one, and hands the
//! changed levels to the same [`Publisher`] and [`MarketView`] the engine's process uses
//! ([`Publisher::on_mirrored_levels`]), then the new trades as fills
//! ([`Publisher::on_command`]). The gateway's own routers serve the rest: `/api/v1/depth`,
//! `trades`, `ticker(s)`, `klines`, `markets`, … and the WebSocket at `/` and `/ws`.
//!
//! What a client sees, compared with the engine's process:
//! - **Depth ids are engine sequences.** A market's `lastUpdateId` (REST) and the `U`/`u` of its
//!   diffs are the sequence of the sink state they come from; a diff spans every sequence since
//!   the previous one (`U` = previous `u` + 1), so a REST snapshot plus the diffs after it is
//!   gap-free by the usual rule, and two replicas of one Redis agree on ids.
//! - **Conflated.** A diff carries the change between two sink writes (`[sinks.redis]
//!   interval_ms`), not every intermediate level; the book is the sink's top `depth` levels per
//!   side (a level beyond them is unknown; one entering them appears with its quantity).
//! - **Trades** are the sink's list of the last `trades` per market; the replica publishes those
//!   it has not seen (trade ids are sequential per market). More trades than that between two
//!   sink writes leave a gap, counted in [`ReplicaStats::trades_missed`] and logged. Tickers and
//!   klines are computed from the trades the replica saw (the list at its start, then every new
//!   one), so its 24 h figures cover at most its own uptime.
//! - **Staleness.** Until the first snapshot, and while Redis has been unreachable for
//!   [`ReplicaConfig::stale_after`], the view is stale: REST depth answers `503
//!   SERVICE_UNAVAILABLE` and new depth subscriptions are refused; streams resume with the next
//!   diff (against the replica's last state, so still gap-free) when Redis answers again.
//! - No private streams or endpoints: the replica holds no keys and no engine to send orders to.

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use codec::{
    Amount, BookLevelUpdate, ClientOrderId, Event, Fill, Lots, MarketId, OrderCount, OrderId, Reserved, Sequence, Side,
    Ticks, TimestampNs, TradeId, UserId,
};
use engine::EngineConfig;
use gateway_json::ws::{WsConfig, WsState, ws_router};
use marketdata::{MarketView, Publisher, PublisherConfig};
use serde_json::Value;
use sinks::redis_client as redis;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Connect and read timeout towards Redis.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of a replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Redis URL.
    pub url: String,
    /// Key prefix (the sink's `[sinks.redis] prefix`).
    pub prefix: String,
    /// Time between two reads of the `sequence` key.
    pub poll: Duration,
    /// How long Redis may stay unreachable before the view is marked stale.
    pub stale_after: Duration,
}

impl ReplicaConfig {
    /// Polls every 50 ms; stale after 2 s without Redis.
    pub fn new(url: &str, prefix: &str) -> Self {
        Self {
            url: url.to_string(),
            prefix: prefix.to_string(),
            poll: Duration::from_millis(50),
            stale_after: Duration::from_secs(2),
        }
    }
}

/// Counters of the mirror.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// The sink sequence last mirrored (0: none yet).
    pub sequence: AtomicU64,
    /// Sink states mirrored.
    pub snapshots: AtomicU64,
    /// Level changes published.
    pub level_updates: AtomicU64,
    /// Trades published.
    pub trades: AtomicU64,
    /// Trades that left the sink's list before the replica read it (gaps in trade ids).
    pub trades_missed: AtomicU64,
    /// Failed reads (Redis unreachable, or keys that do not parse).
    pub failures: AtomicU64,
}

/// One market as last mirrored.
#[derive(Debug, Default)]
struct MirroredMarket {
    bids: BTreeMap<u64, u64>,
    asks: BTreeMap<u64, u64>,
    /// The newest trade published (`None`: none yet).
    last_trade_id: Option<u64>,
}

/// One trade as the sink lists it.
struct ListedTrade {
    id: u64,
    price_ticks: u64,
    lots: u64,
    quote: u64,
    timestamp_ns: u64,
    buyer_is_maker: bool,
    buyer_order_id: u64,
    seller_order_id: u64,
}

/// The mirror: the state the replica has published, and how to read the next one.
struct Mirror {
    config: ReplicaConfig,
    /// `(market id, symbol)` in configuration order.
    markets: Vec<(MarketId, String)>,
    mirrored: Vec<MirroredMarket>,
    /// The sink sequence last mirrored.
    sequence: Option<u64>,
    publisher: Arc<Publisher>,
    stats: Arc<ReplicaStats>,
}

impl Mirror {
    /// Reads the sink's state once; publishes what changed. `Ok(false)`: Redis holds no snapshot
    /// yet.
    fn poll(&mut self, connection: &mut redis::Connection) -> Result<bool, String> {
        let prefix = &self.config.prefix;
        let sequence: Option<u64> =
            redis::cmd("GET").arg(format!("{prefix}sequence")).query(connection).map_err(|e| e.to_string())?;
        let Some(sequence) = sequence else { return Ok(false) };
        if self.sequence == Some(sequence) {
            return Ok(true);
        }
        let mut mget = redis::cmd("MGET");
        mget.arg(format!("{prefix}sequence"));
        for (_, symbol) in &self.markets {
            mget.arg(format!("{prefix}book:{symbol}")).arg(format!("{prefix}trades:{symbol}"));
        }
        let values: Vec<Option<String>> = mget.query(connection).map_err(|e| e.to_string())?;
        let sequence = match values.first() {
            Some(Some(text)) => text.parse::<u64>().map_err(|e| format!("sequence: {e}"))?,
            _ => return Ok(false),
        };
        if self.sequence.is_some_and(|previous| sequence < previous) {
            tracing::warn!(
                sequence,
                previous = self.sequence,
                "the Redis sink went back to an older sequence (reseeded from an older snapshot?); \
                 depth ids stay increasing"
            );
        }
        // Parse everything before publishing anything: a bad key leaves the mirror as it was.
        let mut books = Vec::with_capacity(self.markets.len());
        let mut trade_lists = Vec::with_capacity(self.markets.len());
        for (index, (_, symbol)) in self.markets.iter().enumerate() {
            let book = values.get(1 + 2 * index).cloned().flatten();
            let trades = values.get(2 + 2 * index).cloned().flatten();
            books.push(book.map(|text| parse_book(symbol, &text)).transpose()?);
            trade_lists.push(trades.map(|text| parse_trades(symbol, &text)).transpose()?.unwrap_or_default());
        }
        for (index, (book, trades)) in books.into_iter().zip(trade_lists).enumerate() {
            let market = self.markets[index].0;
            if let Some((timestamp_ns, bids, asks)) = book {
                self.mirror_book(index, market, sequence, timestamp_ns, bids, asks);
            }
            self.mirror_trades(index, market, sequence, trades);
        }
        self.sequence = Some(sequence);
        self.stats.sequence.store(sequence, Ordering::Release);
        self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Publishes the levels of one market that differ from the last mirrored book.
    fn mirror_book(
        &mut self,
        index: usize,
        market: MarketId,
        sequence: u64,
        timestamp_ns: u64,
        bids: BTreeMap<u64, u64>,
        asks: BTreeMap<u64, u64>,
    ) {
        let mirrored = &mut self.mirrored[index];
        let mut updates = Vec::new();
        for (side, old, new) in [(Side::Bid, &mirrored.bids, &bids), (Side::Ask, &mirrored.asks, &asks)] {
            let level = |price: u64, lots: u64| {
                BookLevelUpdate {
                    sequence: Sequence::new(sequence),
                    timestamp_ns: TimestampNs::new(timestamp_ns),
                    price_ticks: Ticks::new(price),
                    quantity_lots: Lots::new(lots),
                    // The sink keeps order counts, but nothing public shows them.
                    order_count: OrderCount::new(0),
                    market_id: market,
                    side: side.into(),
                    reserved: Reserved::ZERO,
                }
            };
            updates.extend(old.keys().filter(|price| !new.contains_key(price)).map(|price| level(*price, 0)));
            updates.extend(
                new.iter()
                    .filter(|(price, lots)| old.get(price) != Some(lots))
                    .map(|(price, lots)| level(*price, *lots)),
            );
        }
        mirrored.bids = bids;
        mirrored.asks = asks;
        if !updates.is_empty() {
            self.publisher.on_mirrored_levels(market, &updates, sequence);
            self.stats.level_updates.fetch_add(updates.len() as u64, Ordering::Relaxed);
        }
    }

    /// Publishes the trades of one market not published yet, oldest first.
    fn mirror_trades(&mut self, index: usize, market: MarketId, sequence: u64, mut trades: Vec<ListedTrade>) {
        let mirrored = &mut self.mirrored[index];
        trades.retain(|trade| mirrored.last_trade_id.is_none_or(|last| trade.id > last));
        trades.sort_by_key(|trade| trade.id);
        let Some(first) = trades.first() else { return };
        if let Some(last) = mirrored.last_trade_id
            && first.id > last + 1
        {
            let missed = first.id - last - 1;
            self.stats.trades_missed.fetch_add(missed, Ordering::Relaxed);
            tracing::warn!(
                market = market.get(),
                missed,
                "trades left the Redis sink's list before the replica read it (raise [sinks.redis] trades)"
            );
        }
        mirrored.last_trade_id = trades.last().map(|trade| trade.id);
        let fills: Vec<Event> = trades.iter().map(|trade| fill(market, sequence, trade)).collect();
        self.stats.trades.fetch_add(fills.len() as u64, Ordering::Relaxed);
        self.publisher.on_command(&fills);
    }
}

/// A listed trade as a fill event: what the public streams and the view use of it (no users, no
/// fees; both orders done, so no private order state is kept for them).
fn fill(market: MarketId, sequence: u64, trade: &ListedTrade) -> Event {
    let (taker_side, maker_order, taker_order) = if trade.buyer_is_maker {
        (Side::Ask, trade.buyer_order_id, trade.seller_order_id)
    } else {
        (Side::Bid, trade.seller_order_id, trade.buyer_order_id)
    };
    Event::Fill(Fill {
        sequence: Sequence::new(sequence),
        timestamp_ns: TimestampNs::new(trade.timestamp_ns),
        trade_id: TradeId::new(trade.id),
        price_ticks: Ticks::new(trade.price_ticks),
        quantity_lots: Lots::new(trade.lots),
        quote_amount: Amount::new(trade.quote),
        maker_user_id: UserId::new(0),
        maker_order_id: OrderId::new(maker_order),
        maker_client_order_id: ClientOrderId::ZERO,
        maker_remaining_lots: Lots::new(0),
        maker_fee: Amount::new(0),
        taker_user_id: UserId::new(0),
        taker_order_id: OrderId::new(taker_order),
        taker_client_order_id: ClientOrderId::ZERO,
        taker_remaining_lots: Lots::new(0),
        taker_fee: Amount::new(0),
        market_id: market,
        taker_side: taker_side.into(),
        taker_order_complete: true.into(),
        reserved: Reserved::ZERO,
    })
}

/// `book:<SYMBOL>` → `(timestamp_ns, bids, asks)` as price ticks → lots.
type MirroredBook = (u64, BTreeMap<u64, u64>, BTreeMap<u64, u64>);

fn parse_book(symbol: &str, text: &str) -> Result<MirroredBook, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("book:{symbol}: {e}"))?;
    let levels = |name: &str| -> Result<BTreeMap<u64, u64>, String> {
        value[name]
            .as_array()
            .ok_or_else(|| format!("book:{symbol} without {name}"))?
            .iter()
            .map(|l| l[0].as_u64().zip(l[1].as_u64()).ok_or_else(|| format!("book:{symbol}: bad level {l}")))
            .collect()
    };
    Ok((value["timestamp_ns"].as_u64().unwrap_or(0), levels("bids_ticks")?, levels("asks_ticks")?))
}

fn parse_trades(symbol: &str, text: &str) -> Result<Vec<ListedTrade>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("trades:{symbol}: {e}"))?;
    let list = value.as_array().ok_or_else(|| format!("trades:{symbol} is not a list"))?;
    list.iter()
        .map(|trade| {
            let number =
                |name: &str| trade[name].as_u64().ok_or_else(|| format!("trades:{symbol}: no {name} in {trade}"));
            Ok(ListedTrade {
                id: number("id")?,
                price_ticks: number("priceTicks")?,
                lots: number("quantityLots")?,
                quote: number("quoteAmount")?,
                timestamp_ns: number("timestamp_ns")?,
                buyer_is_maker: trade["isBuyerMaker"].as_bool().unwrap_or(false),
                buyer_order_id: number("buyerOrderId")?,
                seller_order_id: number("sellerOrderId")?,
            })
        })
        .collect()
}

/// A running replica: the mirror thread and what the HTTP server needs.
pub struct Replica {
    engine_config: Arc<EngineConfig>,
    publisher: Arc<Publisher>,
    stats: Arc<ReplicaStats>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Replica {
    /// Starts mirroring `config`'s Redis for the markets of `engine_config` (connects in the
    /// background; the view is stale until the first snapshot).
    ///
    /// # Errors
    /// A malformed Redis URL, or the thread cannot start.
    pub fn start(config: ReplicaConfig, engine_config: &EngineConfig) -> Result<Self, String> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| format!("redis url: {e}"))?;
        let view = Arc::new(MarketView::new(engine_config));
        view.mark_stale();
        let publisher = Publisher::new(view, engine_config, PublisherConfig::default());
        let stats = Arc::new(ReplicaStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut mirror = Mirror {
            markets: engine_config.markets.iter().map(|m| (m.id, m.symbol.clone())).collect(),
            mirrored: engine_config.markets.iter().map(|_| MirroredMarket::default()).collect(),
            sequence: None,
            publisher: publisher.clone(),
            stats: stats.clone(),
            config,
        };
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("replica-mirror".into())
            .spawn(move || mirror_loop(&mut mirror, &client, &thread_stop))
            .map_err(|e| format!("mirror thread: {e}"))?;
        Ok(Self { engine_config: Arc::new(engine_config.clone()), publisher, stats, stop, thread: Some(thread) })
    }

    /// The mirror's counters.
    pub fn stats(&self) -> &Arc<ReplicaStats> {
        &self.stats
    }

    /// The publisher the mirror feeds.
    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.publisher
    }

    /// The routes: the gateway's public market data (`/api/v1/depth`, `trades`, `ticker`,
    /// `tickers`, `klines`, `markets`, `market`, `status`, `time`, …), the public WebSocket
    /// streams at `/` and `/ws`, `/health` (`ok <sequence mirrored>`) and `/metrics`.
    pub fn router(&self) -> Router {
        let view = self.publisher.view().clone();
        let websocket = WsState::new(
            self.publisher.clone(),
            // No keys: private subscriptions are refused with the usual error frame.
            Arc::new(gateway_binary::Credentials::default()),
            WsConfig::default(),
        );
        let (stats, metrics_stats, publisher) = (self.stats.clone(), self.stats.clone(), self.publisher.clone());
        gateway_json::public_router(view, self.engine_config.clone())
            .merge(ws_router(websocket))
            .route(
                "/health",
                get(move || async move { format!("ok {}\n", stats.sequence.load(Ordering::Acquire)).into_response() }),
            )
            .route(
                "/metrics",
                get(move || async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        render_metrics(&metrics_stats, &publisher),
                    )
                }),
            )
    }
}

/// The replica's counters in Prometheus text format.
fn render_metrics(stats: &ReplicaStats, publisher: &Publisher) -> String {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let ws = publisher.stats();
    let series: [(&str, &str, &str, u64); 9] = [
        ("exchange_replica_sequence", "gauge", "Sink sequence last mirrored.", load(&stats.sequence)),
        ("exchange_replica_snapshots_total", "counter", "Sink states mirrored.", load(&stats.snapshots)),
        (
            "exchange_replica_level_updates_total",
            "counter",
            "Book level changes published.",
            load(&stats.level_updates),
        ),
        ("exchange_replica_trades_total", "counter", "Trades published.", load(&stats.trades)),
        (
            "exchange_replica_trades_missed_total",
            "counter",
            "Trades that left the sink's list before the replica read it.",
            load(&stats.trades_missed),
        ),
        ("exchange_replica_failures_total", "counter", "Failed Redis reads.", load(&stats.failures)),
        (
            "exchange_replica_stale",
            "gauge",
            "1 while depth is unavailable (no snapshot yet, or Redis away).",
            u64::from(publisher.view().is_stale()),
        ),
        ("exchange_ws_subscribers", "gauge", "Open WebSocket subscribers.", load(&ws.subscribers)),
        ("exchange_ws_frames_queued_total", "counter", "Stream frames queued to subscribers.", load(&ws.frames_queued)),
    ];
    let mut out = String::with_capacity(2048);
    for (name, kind, help, value) in series {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    }
    out
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls until stopped: reconnects after an error; marks the view stale while Redis stays away.
fn mirror_loop(mirror: &mut Mirror, client: &redis::Client, stop: &AtomicBool) {
    let view = mirror.publisher.view().clone();
    let mut connection: Option<redis::Connection> = None;
    let mut last_ok = Instant::now();
    let mut reported = false;
    while !stop.load(Ordering::Acquire) {
        let started = Instant::now();
        if connection.is_none() {
            match client.get_connection_with_timeout(REDIS_TIMEOUT) {
                Ok(opened) => {
                    let _ = opened.set_read_timeout(Some(REDIS_TIMEOUT));
                    connection = Some(opened);
                }
                Err(error) => {
                    if !reported {
                        tracing::warn!(%error, "replica: Redis unreachable");
                        reported = true;
                    }
                    mirror.stats.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(open) = connection.as_mut() {
            match mirror.poll(open) {
                Ok(has_snapshot) => {
                    last_ok = Instant::now();
                    reported = false;
                    if has_snapshot && view.is_stale() {
                        tracing::info!(sequence = mirror.sequence, "replica: mirroring the Redis sink");
                        view.clear_stale();
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "replica: Redis read failed; reconnecting");
                    mirror.stats.failures.fetch_add(1, Ordering::Relaxed);
                    connection = None;
                }
            }
        }
        if last_ok.elapsed() >= mirror.config.stale_after && !view.is_stale() {
            tracing::warn!("replica: Redis unreachable; depth unavailable until it answers again");
            view.mark_stale();
        }
        mirror.publisher.tick(Instant::now());
        std::thread::sleep(mirror.config.poll.saturating_sub(started.elapsed()));
    }
}

/// Runs the replica's HTTP server on `listen` until the process ends; logs
/// `replica HTTP listening listen=IP:PORT`.
///
/// # Errors
/// The listener cannot bind, or the server fails.
pub fn serve(replica: Replica, listen: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        tracing::info!(
            listen = %listener.local_addr()?,
            "replica HTTP listening (public REST and WebSocket market data from Redis)"
        );
        let service = replica.router().into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, service).await?;
        Ok(())
    })
}
