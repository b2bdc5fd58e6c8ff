//! A read-only market-data replica (`exchange replica`): serves the REST depth endpoint (and
//! `/api/v1/status`, `/api/v1/time`) from the Redis sink's book snapshots, for a process that is
//! not the engine's. See docs/operations.md, "Market-data replica".
//!
//! The answer has the gateway's format (Backpack: `asks` and `bids` ascending as
//! `[["price","quantity"],…]`, `lastUpdateId` a string, `timestamp` in µs); `lastUpdateId` is the
//! engine sequence the snapshot reflects (the `lastUpdateId` of `<prefix>book:<SYMBOL>`, equal
//! to `<prefix>sequence` written in the same transaction), `timestamp` the engine time of that
//! sequence. Levels are the snapshot's top `depth` (the sink's setting) per side, conflated to the
//! sink's write interval. Errors are `{code, message}`: `400 INVALID_CLIENT_REQUEST` for a
//! missing/unknown symbol or a bad `limit`, `503 SERVICE_UNAVAILABLE` when Redis is unreachable
//! or holds no snapshot for the market.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use engine::EngineConfig;
use marketdata::format::MarketFormat;
use serde_json::{Value, json};
use sinks::redis_client as redis;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Depth levels per side when `limit` is absent (as the gateway).
const DEPTH_LIMIT_DEFAULT: usize = 1_000;
/// Largest depth `limit` (as the gateway).
const DEPTH_LIMIT_MAX: usize = 5_000;
/// Connect and read timeout towards Redis.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// The replica's state: the markets it answers for and one Redis connection (reopened after an
/// error).
pub struct Replica {
    client: redis::Client,
    prefix: String,
    /// Symbol → the market's formatting rules.
    markets: HashMap<String, MarketFormat>,
    connection: Mutex<Option<redis::Connection>>,
}

/// An error answer in the REST API's terms.
#[derive(Debug)]
struct ApiError(StatusCode, &'static str, String);

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, "INVALID_CLIENT_REQUEST", message.into())
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "code": self.1, "message": self.2 }))).into_response()
    }
}

/// One market's snapshot as the sink wrote it: levels `(ticks, lots)` best first.
struct Snapshot {
    sequence: u64,
    timestamp_ns: u64,
    bids: Vec<(u64, u64)>,
    asks: Vec<(u64, u64)>,
}

impl Replica {
    /// A replica of the markets of `config` reading keys under `prefix` at `url` (connects
    /// lazily, on the first request).
    ///
    /// # Errors
    /// A malformed Redis URL.
    pub fn new(url: &str, prefix: &str, config: &EngineConfig) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
        let markets = config.markets.iter().map(|m| (m.symbol.clone(), MarketFormat::new(config, m))).collect();
        Ok(Self { client, prefix: prefix.to_string(), markets, connection: Mutex::new(None) })
    }

    /// The routes: `/api/v1/depth`, `/api/v1/status`, `/api/v1/time`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/api/v1/depth", get(depth))
            .route("/api/v1/status", get(status))
            .route("/api/v1/time", get(time))
            .with_state(self)
    }

    /// Reads `<prefix>book:<symbol>` (blocking). `Ok(None)`: Redis holds no snapshot of it.
    fn read(&self, symbol: &str) -> Result<Option<Snapshot>, String> {
        let mut guard = self.connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_none() {
            let connection = self.client.get_connection_with_timeout(REDIS_TIMEOUT).map_err(|e| e.to_string())?;
            connection.set_read_timeout(Some(REDIS_TIMEOUT)).map_err(|e| e.to_string())?;
            *guard = Some(connection);
        }
        let connection = guard.as_mut().ok_or("not connected")?;
        let text: Option<String> =
            match redis::cmd("GET").arg(format!("{}book:{symbol}", self.prefix)).query(connection) {
                Ok(text) => text,
                Err(error) => {
                    *guard = None;
                    return Err(error.to_string());
                }
            };
        let Some(text) = text else { return Ok(None) };
        let value: Value = serde_json::from_str(&text).map_err(|e| format!("book:{symbol}: {e}"))?;
        let levels = |name: &str| -> Result<Vec<(u64, u64)>, String> {
            value[name]
                .as_array()
                .ok_or_else(|| format!("book:{symbol} without {name}"))?
                .iter()
                .map(|l| l[0].as_u64().zip(l[1].as_u64()).ok_or_else(|| format!("book:{symbol}: bad level {l}")))
                .collect()
        };
        Ok(Some(Snapshot {
            sequence: value["lastUpdateId"].as_u64().ok_or_else(|| format!("book:{symbol} without lastUpdateId"))?,
            timestamp_ns: value["timestamp_ns"].as_u64().unwrap_or(0),
            bids: levels("bids_ticks")?,
            asks: levels("asks_ticks")?,
        }))
    }
}

/// The query parameters (`symbol`, `limit`).
fn params(query: Option<String>) -> Result<HashMap<String, String>, ApiError> {
    let mut params = HashMap::new();
    for pair in query.as_deref().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(key.to_string(), value.to_string());
    }
    Ok(params)
}

async fn depth(State(replica): State<Arc<Replica>>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let params = params(query)?;
    let symbol = params.get("symbol").ok_or_else(|| ApiError::bad_request("Missing required parameter: symbol"))?;
    let format = replica
        .markets
        .get(symbol)
        .cloned()
        .ok_or_else(|| ApiError::bad_request(format!("Market not found: {symbol}")))?;
    let limit = match params.get("limit") {
        None => DEPTH_LIMIT_DEFAULT,
        Some(text) => {
            text.parse::<usize>().ok().filter(|l| (1..=DEPTH_LIMIT_MAX).contains(l)).ok_or_else(|| {
                ApiError::bad_request(format!("Invalid limit: {text} (expected 1 to {DEPTH_LIMIT_MAX})"))
            })?
        }
    };
    let (reader, key) = (replica.clone(), symbol.clone());
    let snapshot = tokio::task::spawn_blocking(move || reader.read(&key))
        .await
        .map_err(|e| ApiError::unavailable(format!("Redis read failed: {e}")))?
        .map_err(|e| ApiError::unavailable(format!("Redis unavailable: {e}")))?;
    let Some(snapshot) = snapshot else {
        return Err(ApiError::unavailable(format!("No order book snapshot in Redis for {symbol}")));
    };
    let level = |(price, lots): &(u64, u64)| json!([format.price(*price), format.quantity(u128::from(*lots))]);
    Ok(Json(json!({
        "asks": snapshot.asks.iter().take(limit).map(level).collect::<Vec<_>>(),
        // Stored best first; Backpack lists bids ascending too (the best bid last).
        "bids": snapshot.bids.iter().take(limit).rev().map(level).collect::<Vec<_>>(),
        "lastUpdateId": snapshot.sequence.to_string(),
        "timestamp": snapshot.timestamp_ns / 1_000,
    }))
    .into_response())
}

async fn status() -> Response {
    Json(json!({ "status": "Ok", "message": "Read-only market-data replica (depth from Redis)" })).into_response()
}

async fn time() -> Response {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Json(json!(now.as_millis() as u64)).into_response()
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
        tracing::info!(listen = %listener.local_addr()?, "replica HTTP listening (/api/v1/depth from Redis)");
        axum::serve(listener, Arc::new(replica).router()).await?;
        Ok(())
    })
}
