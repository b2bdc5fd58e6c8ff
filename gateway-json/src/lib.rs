//! Backpack-compatible REST API: the public market-data endpoints, served from a
//! [`marketdata::MarketView`], and the Ed25519-signed private endpoints for orders and balances
//! ([`private_router`], [`RestGateway`], [`auth`]), and the AMM pool endpoints ([`amm::amm_router`]).
//!
//! [`public_router`] serves, at the server root (see docs/rest-api.md):
//! `GET /api/v1/markets`, `/api/v1/market?symbol=`, `/api/v1/ticker?symbol=[&interval=1d|1w]`,
//! `/api/v1/tickers[?interval=]`, `/api/v1/depth?symbol=[&limit=]`,
//! `/api/v1/trades?symbol=[&limit=]`, `/api/v1/trades/history?symbol=[&limit=&offset=]`,
//! `/api/v1/klines?symbol=&interval=&startTime=[&endTime=]`, `/api/v1/assets`, `/api/v1/status`,
//! `/api/v1/time`.
//!
//! Conventions (Backpack's):
//! - Prices, quantities and volumes are decimal strings with the market's precision (see
//!   [`marketdata::format`]); money stays integer until it is written here.
//! - Depth `asks` and `bids` are both sorted by ascending price (the best bid is the *last*
//!   bid, the best ask the first ask); `lastUpdateId` is a string, `timestamp` µs.
//! - Trades: `timestamp` ms, `id` the per-market trade id, oldest first.
//! - Klines: `startTime` / `endTime` in seconds; `start` / `end` as `YYYY-MM-DD HH:MM:SS` UTC.
//! - Errors are `{"code": "...", "message": "..."}`: bad or missing parameters and unknown
//!   symbols are `400 INVALID_CLIENT_REQUEST`; depth while the view is stale (events lost) is
//!   `503 SERVICE_UNAVAILABLE`. Handlers never panic on input.
//! - `GET /api/v1/trades/history` reads a [`TradeSource`] when one is given
//!   ([`public_router_with_trade_source`]; the Postgres sink in the exchange binary): every trade,
//!   across restarts. Without one it reads the view's memory (the last 1000 trades per market).
//!   So does `GET /api/v1/klines`, aggregating the stored trades. A store that cannot be read
//!   answers `503 SERVICE_UNAVAILABLE`.
//! - Headers are not required: `Content-Type` on a GET and `X-API-Key` on a public request (the
//!   official client sends both) are ignored.

pub mod accounts;
pub mod admin;
pub mod amm;
pub mod auth;
pub mod batch;
mod capital;
pub mod history;
pub mod limits;
pub mod openapi;
mod private;
pub mod sessions;
pub mod users;
pub mod ws;

pub use accounts::{AccountViews, OpenOrder, RestGateway};
pub use admin::{AdminState, admin_router};
pub use private::{ENGINE_TIMEOUT_DEFAULT, PrivateState, private_router, reject_error};
pub use sessions::sessions_router;
pub use users::{UserStore, UsersConfig};
pub use ws::{JwtVerifier, WsConfig, WsState, ws_router};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use engine::EngineConfig;
use marketdata::format::MarketFormat;
use marketdata::{Candle, KlineInterval, MarketView, TickerStats, TradeRecord};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Depth levels per side when `limit` is absent.
pub const DEPTH_LIMIT_DEFAULT: u64 = 1_000;
/// Largest depth `limit`.
pub const DEPTH_LIMIT_MAX: u64 = 5_000;
/// Trades returned when `limit` is absent.
pub const TRADES_LIMIT_DEFAULT: u64 = 100;
/// Largest trades `limit`.
pub const TRADES_LIMIT_MAX: u64 = 1_000;
/// Most klines returned by one request.
pub const KLINES_MAX: usize = 1_000;

const NS_PER_DAY: u64 = 86_400_000_000_000;

/// An error answer: HTTP status and Backpack's `{code, message}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Backpack error code, e.g. `INVALID_CLIENT_REQUEST`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// `400 INVALID_CLIENT_REQUEST`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "INVALID_CLIENT_REQUEST", message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "code": self.code, "message": self.message }))).into_response()
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// A durable store of every market's trades (the Postgres sink's `trades` table, wired in the
/// exchange binary). When the public router has one, `GET /api/v1/trades/history` answers from it.
pub trait TradeSource: Send + Sync {
    /// `limit` trades of `market` after skipping its `offset` most recent ones, oldest first.
    fn trades(&self, market: codec::MarketId, limit: u32, offset: u64) -> history::HistoryFuture<'_, TradeRecord>;
    /// The klines of `interval` whose start is in `[interval.bucket_start(start), end)`
    /// (seconds), oldest first, at most `max`, only intervals with trades (as
    /// [`MarketView::klines`]).
    fn klines(
        &self,
        market: codec::MarketId,
        interval: KlineInterval,
        start: u64,
        end: u64,
        max: u32,
    ) -> history::HistoryFuture<'_, Candle>;
}

/// `503 SERVICE_UNAVAILABLE` for a trade store that failed: details go to the log, not to the client.
fn trade_store_unavailable(error: &str) -> ApiError {
    tracing::warn!(%error, "trade store query failed");
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "SERVICE_UNAVAILABLE",
        message: "Trade store unavailable, try again".into(),
    }
}

struct Api {
    view: Arc<MarketView>,
    trade_source: Option<Arc<dyn TradeSource>>,
    config: Arc<EngineConfig>,
    formats: Vec<MarketFormat>,
    symbols: HashMap<String, usize>,
    created_at: String,
}

impl Api {
    /// Index of a symbol's market in the configuration.
    fn market(&self, params: &Params) -> Result<usize, ApiError> {
        let symbol = params.required("symbol")?;
        self.symbols.get(symbol).copied().ok_or_else(|| ApiError::bad_request(format!("Market not found: {symbol}")))
    }

    fn market_json(&self, index: usize) -> Value {
        let market = &self.config.markets[index];
        let format = &self.formats[index];
        let symbol_of = |asset: codec::AssetId| {
            self.config.assets.get(asset.get() as usize).map_or_else(String::new, |a| a.symbol.clone())
        };
        let mut value = json!({
            "symbol": market.symbol,
            "baseSymbol": symbol_of(market.base),
            "quoteSymbol": symbol_of(market.quote),
            "marketType": "SPOT",
            "filters": {
                "price": {
                    "minPrice": format.price(1),
                    "maxPrice": format.price(market.max_price_ticks),
                    "tickSize": format.price(1),
                },
                "quantity": {
                    "minQuantity": format.quantity(u128::from(market.min_quantity_lots)),
                    "maxQuantity": format.quantity(u128::from(market.max_quantity_lots)),
                    "stepSize": format.quantity(1),
                },
            },
            // A halted market still takes cancels: Backpack's `CancelOnly`.
            "orderBookState": if self.view.is_halted(market.id).unwrap_or(false) { "CancelOnly" } else { "Open" },
            "createdAt": self.created_at,
            "visible": true,
        });
        // The price band, as Backpack publishes it: multipliers of the reference price (last
        // trade, else mid); absent when the market has none.
        if market.price_band.is_enabled()
            && let Some(price) = value.pointer_mut("/filters/price").and_then(Value::as_object_mut)
        {
            price.insert("maxMultiplier".into(), multiplier_text(market.price_band.max_multiplier_ppm).into());
            price.insert("minMultiplier".into(), multiplier_text(market.price_band.min_multiplier_ppm).into());
        }
        value
    }

    fn ticker_json(&self, index: usize, stats: &TickerStats) -> Value {
        let symbol = &self.config.markets[index].symbol;
        let format = &self.formats[index];
        let last_known = stats.last_price.unwrap_or(0);
        let (first, last, high, low, volume, quote_volume, trades) = match &stats.window {
            Some(c) => (c.open, c.close, c.high, c.low, c.volume_lots, c.quote_volume, c.trades),
            None => (last_known, last_known, last_known, last_known, 0, 0, 0),
        };
        json!({
            "symbol": symbol,
            "firstPrice": format.price(first),
            "lastPrice": format.price(last),
            "priceChange": format.price_change(first, last),
            "priceChangePercent": change_fraction(first, last),
            "high": format.price(high),
            "low": format.price(low),
            "volume": format.quantity(volume),
            "quoteVolume": format.quote(quote_volume),
            "trades": trades.to_string(),
        })
    }
}

/// `(last − first) / first` as a decimal fraction with at most 6 decimals, truncated toward
/// zero (`"0.0125"` is +1.25 %); `"0"` when `first` is 0.
fn change_fraction(first: u64, last: u64) -> String {
    if first == 0 {
        return "0".into();
    }
    let (difference, negative) = if last >= first { (last - first, false) } else { (first - last, true) };
    let millionths = u128::from(difference) * 1_000_000 / u128::from(first);
    let text = marketdata::format::format_trimmed(millionths, 6);
    if negative && text != "0" { format!("-{text}") } else { text }
}

/// Query parameters, first occurrence wins.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<String>) -> Result<Self, ApiError> {
        match query {
            None => Ok(Self(Vec::new())),
            Some(query) => serde_urlencoded::from_str::<Vec<(String, String)>>(&query)
                .map(Self)
                .map_err(|_| ApiError::bad_request("Malformed query string")),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::bad_request(format!("Missing required parameter: {name}")))
    }

    /// An unsigned integer parameter within `range`, or `default` when absent.
    fn number(&self, name: &str, default: Option<u64>, range: std::ops::RangeInclusive<u64>) -> Result<u64, ApiError> {
        let Some(text) = self.get(name) else {
            return default.ok_or_else(|| ApiError::bad_request(format!("Missing required parameter: {name}")));
        };
        let value = (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
            .filter(|value| range.contains(value));
        value.ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid {name}: expected an integer from {} to {}",
                range.start(),
                range.end()
            ))
        })
    }
}

/// The public market-data routes, at the server root (`/api/v1/...`). Merge into the server's
/// router; sets no fallback.
pub fn public_router(view: Arc<MarketView>, config: Arc<EngineConfig>) -> Router {
    public_router_with_trade_source(view, config, None)
}

/// [`public_router`], with `GET /api/v1/trades/history` read from `trade_source` when given.
pub fn public_router_with_trade_source(
    view: Arc<MarketView>,
    config: Arc<EngineConfig>,
    trade_source: Option<Arc<dyn TradeSource>>,
) -> Router {
    let formats = config.markets.iter().map(|market| MarketFormat::new(&config, market)).collect();
    let symbols = config.markets.iter().enumerate().map(|(index, market)| (market.symbol.clone(), index)).collect();
    let created_at = marketdata::interval::format_datetime(view.now_ns() / 1_000_000_000, 'T');
    let api = Arc::new(Api { view, trade_source, config, formats, symbols, created_at });
    Router::new()
        .route("/api/v1/assets", get(assets))
        .route("/api/v1/markets", get(markets))
        .route("/api/v1/market", get(market))
        .route("/api/v1/ticker", get(ticker))
        .route("/api/v1/tickers", get(tickers))
        .route("/api/v1/depth", get(depth))
        .route("/api/v1/trades", get(trades))
        .route("/api/v1/trades/history", get(trades_history))
        .route("/api/v1/klines", get(klines))
        .route("/api/v1/status", get(status))
        .route("/api/v1/time", get(time))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .with_state(api)
}

pub(crate) fn ok(value: Value) -> ApiResult {
    Ok(axum::Json(value).into_response())
}

/// The one network every asset has here: Backpack's `Internal` (there is no blockchain behind
/// this exchange; deposits are operator credits, withdrawals ledger debits).
const ASSET_NETWORK: &str = "Internal";

#[utoipa::path(
    get,
    path = "/api/v1/assets",
    tag = "Markets",
    description = "Every configured asset with its one token (network `Internal`: there is no blockchain behind \
                   this exchange). Deposits are operator credits (`depositEnabled` false); withdrawals debit the \
                   ledger (`withdrawEnabled` true), from one minor unit up to the largest amount a withdrawal \
                   carries, without a fee.",
    responses((status = 200, description = "Assets", body = Vec<crate::openapi::Asset>))
)]
async fn assets(State(api): State<Arc<Api>>) -> ApiResult {
    let list = api
        .config
        .assets
        .iter()
        .map(|asset| {
            let amount = |minor_units: u64| marketdata::format::format_trimmed(u128::from(minor_units), asset.decimals);
            json!({
                "symbol": asset.symbol,
                "displayName": asset.symbol,
                "coingeckoId": null,
                "tokens": [{
                    "blockchain": ASSET_NETWORK,
                    "displayName": asset.symbol,
                    "contractAddress": "",
                    "depositEnabled": false,
                    "minimumDeposit": "0",
                    "withdrawEnabled": true,
                    // A withdrawal is a whole number of minor units, carried as a u64.
                    "minimumWithdrawal": amount(1),
                    "maximumWithdrawal": amount(u64::MAX),
                    "withdrawalFee": "0",
                }],
            })
        })
        .collect();
    ok(Value::Array(list))
}

#[utoipa::path(
    get,
    path = "/api/v1/markets",
    tag = "Markets",
    description = "Every market.",
    params(crate::openapi::MarketsQuery),
    responses(
        (status = 200, description = "Markets", body = Vec<crate::openapi::Market>),
        (status = 400, description = "Bad parameter or unknown symbol", body = crate::openapi::ErrorBody),
    )
)]
async fn markets(State(api): State<Arc<Api>>, RawQuery(query): RawQuery) -> ApiResult {
    let params = Params::parse(query)?;
    // `marketType` may repeat (the official client sends SPOT and PERP); every market is SPOT.
    let types: Vec<&str> = params.0.iter().filter(|(k, _)| k == "marketType").map(|(_, v)| v.as_str()).collect();
    if !types.is_empty() && !types.iter().any(|t| t.eq_ignore_ascii_case("SPOT")) {
        return ok(json!([]));
    }
    ok(Value::Array((0..api.config.markets.len()).map(|index| api.market_json(index)).collect()))
}

#[utoipa::path(
    get,
    path = "/api/v1/market",
    tag = "Markets",
    description = "One market.",
    params(crate::openapi::SymbolQuery),
    responses(
        (status = 200, description = "The market", body = crate::openapi::Market),
        (status = 400, description = "Bad parameter or unknown symbol", body = crate::openapi::ErrorBody),
    )
)]
async fn market(State(api): State<Arc<Api>>, RawQuery(query): RawQuery) -> ApiResult {
    let params = Params::parse(query)?;
    ok(api.market_json(api.market(&params)?))
}

fn ticker_window(params: &Params) -> Result<u64, ApiError> {
    match params.get("interval") {
        None | Some("1d") => Ok(NS_PER_DAY),
        Some("1w") => Ok(7 * NS_PER_DAY),
        Some(other) => Err(ApiError::bad_request(format!("Invalid interval: {other} (expected 1d or 1w)"))),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/ticker",
    tag = "Markets",
    description = "24 h (or 1 week) statistics of a market.",
    params(crate::openapi::TickerQuery),
    responses(
        (status = 200, description = "Ticker", body = crate::openapi::Ticker),
        (status = 400, description = "Bad parameter or unknown symbol", body = crate::openapi::ErrorBody),
    )
)]
async fn ticker(State(api): State<Arc<Api>>, RawQuery(query): RawQuery) -> ApiResult {
    let params = Params::parse(query)?;
    let index = api.market(&params)?;
    let window = ticker_window(&params)?;
    let stats = api.view.ticker(api.config.markets[index].id, window).unwrap_or_default();
    ok(api.ticker_json(index, &stats))
}

#[utoipa::path(
    get,
    path = "/api/v1/tickers",
    tag = "Markets",
    description = "Statistics of every market.",
    params(crate::openapi::TickerQuery),
    responses(
        (status = 200, description = "Tickers", body = Vec<crate::openapi::Ticker>),
        (status = 400, description = "Bad parameter or unknown symbol", body = crate::openapi::ErrorBody),
    )
)]
async fn tickers(State(api): State<Arc<Api>>, RawQuery(query): RawQuery) -> ApiResult {
    let params = Params::parse(query)?;
    let window = ticker_window(&params)?;
    let all = (0..api.config.markets.len())
        .map(|index| {
            let stats = api.view.ticker(api.config.markets[index].id, window).unwrap_or_default();
            api.ticker_json(index, &stats)
        })
        .collect();
    ok(Value::Array(all))
}

#[utoipa::path(
    get,
    path = "/api/v1/depth",
    tag = "Markets",
    description = "Order book depth (timestamp in µs).",
    params(crate::openapi::DepthQuery),
    responses(
        (status = 200, description = "Depth", body = crate::openapi::Depth),
        (status = 400, description = "Bad parameter or unknown symbol", body = crate::openapi::ErrorBody),
        (status = 503, description = "Market view resynchronising", body = crate::openapi::ErrorBody),
    )
)]
async fn depth(State(api): State<Arc<Api>>, RawQuery(query): RawQuery) -> ApiResult {
    let params = Params::parse(query)?;
    let index = api.market(&params)?;
    let limit = params.number("limit", Some(DEPTH_LIMIT_DEFAULT), 1..=DEPTH_LIMIT_MAX)?;
    if api.view.is_stale() {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "SERVICE_UNAVAILABLE",
            message: "Order book is resynchronising".into(),
        });
    }
    let snapshot = api.view.depth(api.config.markets[index].id, limit as usize).unwrap_or_default();
    let format = &api.formats[index];
    let level = |(price, lots): &(u64, u64)| json!([format.price(*price), format.quantity(u128::from(*lots))]);
    let timestamp_ns = if snapshot.timestamp_ns == 0 { api.view.now_ns() } else { snapshot.timestamp_ns };
    ok(json!({
        "asks": snapshot.asks.iter().map(level).collect::<Vec<_>>(),
        // Backpack lists bids by ascending price too: the best bid last.
        "bids": snapshot.bids.iter().rev().map(level).collect::<Vec<_>>(),
        "lastUpdateId": snapshot.last_update_id.to_string(),
        "timestamp": timestamp_ns / 1_000,
    }))
}

fn trades_json(api: &Api, index: usize, limit: u64, offset: u64) -> ApiResult {
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    let trades = api.view.trades(api.config.markets[index].id, limit as usize, offset).unwrap_or_default();
    trades_array(api, index, &trades)
}

fn trades_array(api: &Api, index: usize, trades: &[TradeRecord]) -> ApiResult {
    let format = &api.formats[index];
    ok(Value::Array(
        trades
            .iter()
            .map(|trade| {
                json!({
                    "id": trade.id,
                    "price": format.price(trade.price_ticks),
                    "quantity": format.quantity(u128::from(trade.quantity_lots)),
                    "quoteQuantity": format.quote(u128::from(trade.quote_amount)),
                    "timestamp": trade.timestamp_ns / 1_000_000,
                    "isBuyerMaker": trade.buyer_is_maker,
                })
            })
            .collect(),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/trades",
    tag = "Markets",
    description = "Recent trades, oldest first.",
    params(crate::openapi::TradesQuery),
    responses(
        (status = 200, description = "Trades", body = Vec<crate::openapi::Trade>),
        (status = 400, description = "Bad parameter or unknown symbol", body = crate::openapi::ErrorBody),
    )
)]
async fn trades(State(api): State<Arc<Api>>, RawQuery(query): RawQuery) -> ApiResult {
    let params = Params::parse(query)?;
    let index = api.market(&params)?;
    let limit = params.number("limit", Some(TRADES_LIMIT_DEFAULT), 1..=TRADES_LIMIT_MAX)?;
    trades_json(&api, index, limit, 0)
}

#[utoipa::path(
    get,
    path = "/api/v1/trades/history",
    tag = "Markets",
    description = "Older trades, oldest first (offset skips the most recent). Read from the trade store \
                   (Postgres) when the server has one: every trade, across restarts; else the last 1000 \
                   trades per market kept in memory. 503 when the store cannot be read.",
    params(crate::openapi::TradesQuery),
    responses(
        (status = 200, description = "Trades", body = Vec<crate::openapi::Trade>),
        (status = 400, description = "Bad parameter or unknown symbol", body = crate::openapi::ErrorBody),
        (status = 503, description = "The trade store cannot be read", body = crate::openapi::ErrorBody),
    )
)]
async fn trades_history(State(api): State<Arc<Api>>, RawQuery(query): RawQuery) -> ApiResult {
    let params = Params::parse(query)?;
    let index = api.market(&params)?;
    let limit = params.number("limit", Some(TRADES_LIMIT_DEFAULT), 1..=TRADES_LIMIT_MAX)?;
    let offset = params.number("offset", Some(0), 0..=u64::MAX)?;
    let Some(source) = &api.trade_source else { return trades_json(&api, index, limit, offset) };
    let market = api.config.markets[index].id;
    match source.trades(market, limit as u32, offset).await {
        Ok(trades) => trades_array(&api, index, &trades),
        Err(error) => Err(trade_store_unavailable(&error)),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/klines",
    tag = "Markets",
    description = "Candles; startTime and endTime in seconds. Aggregated from the trade store (Postgres) when \
                   the server has one: every trade, across restarts; else from the one-minute candles kept \
                   in memory (32 days). 503 when the store cannot be read.",
    params(crate::openapi::KlinesQuery),
    responses(
        (status = 200, description = "Klines", body = Vec<crate::openapi::Kline>),
        (status = 400, description = "Bad parameter or unknown symbol", body = crate::openapi::ErrorBody),
        (status = 503, description = "The trade store cannot be read", body = crate::openapi::ErrorBody),
    )
)]
async fn klines(State(api): State<Arc<Api>>, RawQuery(query): RawQuery) -> ApiResult {
    let params = Params::parse(query)?;
    let index = api.market(&params)?;
    let name = params.required("interval")?;
    let interval = KlineInterval::parse(name).ok_or_else(|| {
        ApiError::bad_request(format!("Invalid interval: {name} (expected one of {})", KlineInterval::NAMES.join(", ")))
    })?;
    // Seconds; bounded so that nanosecond arithmetic cannot overflow.
    const SECONDS_MAX: u64 = u64::MAX / 1_000_000_000;
    let start = params.number("startTime", None, 0..=SECONDS_MAX)?;
    let end = params.number("endTime", Some(SECONDS_MAX), 0..=SECONDS_MAX)?;
    if end < start {
        return Err(ApiError::bad_request("endTime is before startTime"));
    }
    let market = api.config.markets[index].id;
    let candles = match &api.trade_source {
        None => api.view.klines(market, interval, start, end, KLINES_MAX).unwrap_or_default(),
        Some(source) => source
            .klines(market, interval, start, end, KLINES_MAX as u32)
            .await
            .map_err(|e| trade_store_unavailable(&e))?,
    };
    let format = &api.formats[index];
    let datetime = |seconds: u64| marketdata::interval::format_datetime(seconds, ' ');
    ok(Value::Array(
        candles
            .iter()
            .map(|candle| {
                json!({
                    "start": datetime(candle.start),
                    "end": datetime(candle.end),
                    "open": format.price(candle.open),
                    "high": format.price(candle.high),
                    "low": format.price(candle.low),
                    "close": format.price(candle.close),
                    "volume": format.quantity(candle.volume_lots),
                    "quoteVolume": format.quote(candle.quote_volume),
                    "trades": candle.trades.to_string(),
                })
            })
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/status", tag = "System", description = "Server status.",
    responses((status = 200, description = "Status", body = crate::openapi::ServerStatus)))]
async fn status(State(api): State<Arc<Api>>) -> ApiResult {
    let message = api.view.is_stale().then_some("Market data is resynchronising");
    ok(json!({ "status": "Ok", "message": message }))
}

#[utoipa::path(get, path = "/api/v1/time", tag = "System", description = "Server time, ms since the epoch.",
    responses((status = 200, description = "ms since the epoch (a JSON number)", body = u64, content_type = "application/json")))]
async fn time(State(api): State<Arc<Api>>) -> ApiResult {
    ok(json!(api.view.now_ns() / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_fractions() {
        assert_eq!(change_fraction(0, 5), "0");
        assert_eq!(change_fraction(100, 100), "0");
        assert_eq!(change_fraction(800, 810), "0.0125");
        assert_eq!(change_fraction(810, 800), "-0.012345");
        assert_eq!(change_fraction(3, 1), "-0.666666");
    }
}

/// A multiplier in parts per million as a decimal string without trailing zeros (1100000 →
/// "1.1", 900000 → "0.9", 1000000 → "1").
pub(crate) fn multiplier_text(ppm: u32) -> String {
    const PPM_PER_ONE: u32 = 1_000_000;
    let (whole, fraction) = (ppm / PPM_PER_ONE, ppm % PPM_PER_ONE);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod multiplier_tests {
    #[test]
    fn multipliers_print_as_short_decimals() {
        assert_eq!(super::multiplier_text(1_100_000), "1.1");
        assert_eq!(super::multiplier_text(900_000), "0.9");
        assert_eq!(super::multiplier_text(1_000_000), "1");
        assert_eq!(super::multiplier_text(1_000_500), "1.0005");
    }
}
