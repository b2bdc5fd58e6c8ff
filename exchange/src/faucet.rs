//! The demo faucet: `POST /api/v1/demo/faucet` credits the authenticated user with fixed test
//! amounts of every asset through the engine's `Deposit` command (journaled like any deposit).
//! Mounted only with `--demo`; elsewhere the path is an unknown path (404). See docs/web.md.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use codec::{Event, UserId};
use engine::EngineConfig;
use gateway_json::{ApiError, PrivateState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whole units credited per claim of an asset that is the quote asset of some market.
pub const QUOTE_UNITS: u64 = 100_000;
/// Whole units credited per claim of any other asset.
pub const BASE_UNITS: u64 = 100;
/// Shortest time between two claims of one user.
pub const COOLDOWN: Duration = Duration::from_secs(10);

/// The faucet's state.
#[derive(Clone)]
pub struct Faucet {
    private: PrivateState,
    /// (asset id, minor units, decimal text) credited per claim.
    amounts: Arc<Vec<(u32, u64, String, String)>>,
    last_claim: Arc<Mutex<HashMap<UserId, Instant>>>,
}

impl Faucet {
    /// A faucet crediting through `private` (the REST gateway's engine access), for the users it
    /// authenticates (signature with instruction `demoFaucet`, or whatever else the signed
    /// endpoints accept).
    pub fn new(config: &EngineConfig, private: PrivateState) -> Self {
        let amounts = config
            .assets
            .iter()
            .map(|asset| {
                let is_quote = config.markets.iter().any(|market| market.quote == asset.id);
                let units = if is_quote { QUOTE_UNITS } else { BASE_UNITS };
                let minor = units.saturating_mul(10u64.saturating_pow(u32::from(asset.decimals)));
                (asset.id.get(), minor, asset.symbol.clone(), units.to_string())
            })
            .collect();
        Self { private, amounts: Arc::new(amounts), last_claim: Arc::default() }
    }

    /// `POST /api/v1/demo/faucet`.
    pub fn router(self) -> Router {
        Router::new().route("/api/v1/demo/faucet", post(claim)).with_state(self)
    }
}

async fn claim(State(faucet): State<Faucet>, headers: HeaderMap, body: Bytes) -> Response {
    match credit(&faucet, &headers, &body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn credit(faucet: &Faucet, headers: &HeaderMap, body: &Bytes) -> Result<Response, ApiError> {
    let params = gateway_json::auth::body_params(body)?;
    let user = faucet.private.authenticate(headers, "demoFaucet", &params)?;
    {
        let mut last = faucet.last_claim.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if let Some(previous) = last.get(&user)
            && now.duration_since(*previous) < COOLDOWN
        {
            let wait = COOLDOWN - now.duration_since(*previous);
            return Err(ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "TOO_MANY_REQUESTS",
                message: format!(
                    "Test funds can be claimed every {} s; retry in {} s",
                    COOLDOWN.as_secs(),
                    wait.as_secs() + 1
                ),
            });
        }
        if last.len() >= 10_000 {
            // Bounded memory: forget claims whose cooldown is over.
            last.retain(|_, claimed| now.duration_since(*claimed) < COOLDOWN);
        }
        last.insert(user, now);
    }
    let mut credited = serde_json::Map::new();
    for (asset, minor, symbol, text) in faucet.amounts.iter() {
        let events = faucet.private.execute(engine::testkit::commands::deposit(user.get(), *asset, *minor)).await?;
        if let Some(Event::OrderRejected(rejected)) = events.iter().find(|e| matches!(e, Event::OrderRejected(_))) {
            let mut error = gateway_json::reject_error(rejected.reason);
            error.message = format!("Deposit of {text} {symbol} refused: {}", error.message);
            return Err(error);
        }
        credited.insert(symbol.clone(), serde_json::Value::String(text.clone()));
    }
    tracing::info!(user = user.get(), "demo faucet credited test funds");
    Ok(axum::Json(serde_json::json!({ "credited": credited })).into_response())
}
