//! The admin API: [`admin_router`], mounted only when an admin token is configured.
//!
//! Every request carries `Authorization: Bearer <admin token>` (the `[admin] token` of the
//! configuration, or `EXCHANGE_ADMIN_TOKEN`); a missing or wrong token is `401 UNAUTHORIZED`.
//!
//! - `POST /api/v1/admin/users` `{username, password}`: creates a user (as registration);
//! - `POST /api/v1/admin/deposits` and `POST /api/v1/admin/withdrawals`
//!   `{userId, symbol, quantity}`: credit or debit an asset. These are the engine's `Deposit` /
//!   `Withdraw` commands, journaled like every command; the answer is sent after the engine's
//!   event (`{userId, symbol, available, locked}`), so a following balance query shows it. A
//!   withdrawal above the available balance is `400 INSUFFICIENT_FUNDS`;
//! - `POST /api/v1/admin/markets/halt` and `.../resume` `{symbol}`: the engine's
//!   `MarketControl`; a halted market refuses new orders and replaces (`400 INVALID_ORDER`,
//!   "Market is halted") and still takes cancels; `GET /api/v1/markets` shows it as
//!   `orderBookState: "CancelOnly"`.

use crate::auth::unauthorized;
use crate::private::PrivateState;
use crate::sessions::{bearer, json_body, user_json};
use crate::users::UserStore;
use crate::{ApiError, ApiResult, reject_error};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use codec::decimal::parse_fixed;
use codec::*;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use utoipa::ToSchema;

/// The state of [`admin_router`].
#[derive(Clone)]
pub struct AdminState {
    token: Arc<str>,
    private: PrivateState,
    users: Arc<UserStore>,
}

impl AdminState {
    /// Admin API guarded by `token` (must not be empty), sending commands through `private`'s
    /// engine connection, creating users in `users`.
    pub fn new(token: impl Into<String>, private: PrivateState, users: Arc<UserStore>) -> Self {
        Self { token: token.into().into(), private, users }
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let given = bearer(headers).ok_or_else(|| unauthorized("Missing admin token (Authorization: Bearer)"))?;
        // Compared without an early exit (only the length can leak).
        let (a, b) = (given.as_bytes(), self.token.as_bytes());
        let same = a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
        if !same || b.is_empty() {
            return Err(unauthorized("Invalid admin token"));
        }
        Ok(())
    }

    fn asset(&self, symbol: &str) -> Result<(AssetId, u8), ApiError> {
        let config = self.private.engine_config();
        config
            .assets
            .iter()
            .position(|asset| asset.symbol == symbol)
            .map(|index| (AssetId::new(index as u32), config.assets[index].decimals))
            .ok_or_else(|| ApiError::bad_request(format!("Asset not found: {symbol}")))
    }

    fn market(&self, symbol: &str) -> Result<MarketId, ApiError> {
        let config = self.private.engine_config();
        config
            .markets
            .iter()
            .find(|market| market.symbol == symbol)
            .map(|market| market.id)
            .ok_or_else(|| ApiError::bad_request(format!("Market not found: {symbol}")))
    }
}

/// `{userId, symbol, quantity}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Transfer {
    /// The engine's user id (any user: registered, configured or demo).
    pub user_id: u64,
    /// Asset symbol, e.g. `USDC`.
    pub symbol: String,
    /// Positive decimal amount with at most the asset's decimals, e.g. `"1000.5"`.
    pub quantity: String,
}

/// `{symbol}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketReference {
    /// Market symbol, e.g. `BTC_USDC`.
    pub symbol: String,
}

/// The admin routes, at the server root. Merge into the server's router only when a token is
/// configured.
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/api/v1/admin/users", post(create_user))
        .route("/api/v1/admin/deposits", post(deposit))
        .route("/api/v1/admin/withdrawals", post(withdraw))
        .route("/api/v1/admin/markets/halt", post(halt))
        .route("/api/v1/admin/markets/resume", post(resume))
        .with_state(state)
}

/// Creates a user with a password.
#[utoipa::path(
    post,
    path = "/api/v1/admin/users",
    tag = "Admin",
    security(("admin" = [])),
    request_body = crate::sessions::Credentials,
    responses(
        (status = 201, description = "The new user: `{userId, username, createdAt}`"),
        (status = 400, description = "Bad username or password, or username taken"),
        (status = 401, description = "Missing or wrong admin token"),
    )
)]
pub async fn create_user(State(state): State<AdminState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    state.authorize(&headers)?;
    let request: crate::sessions::Credentials = json_body(&body)?;
    let users = state.users.clone();
    let user = tokio::task::spawn_blocking(move || users.register(&request.username, &request.password))
        .await
        .map_err(|_| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "SERVICE_UNAVAILABLE",
            message: "Busy".into(),
        })??;
    tracing::info!(user = user.id.get(), username = %user.username, "user created by admin");
    Ok((StatusCode::CREATED, axum::Json(user_json(&user))).into_response())
}

async fn transfer(state: &AdminState, body: &[u8], withdrawal: bool) -> ApiResult {
    let request: Transfer = json_body(body)?;
    if request.user_id == 0 {
        return Err(ApiError::bad_request("Invalid userId: must be positive"));
    }
    let (asset_id, decimals) = state.asset(&request.symbol)?;
    let amount = parse_fixed(&request.quantity, decimals).ok().filter(|&amount| amount > 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid quantity: {} (a positive decimal with at most {decimals} decimals)",
            request.quantity
        ))
    })?;
    let user_id = UserId::new(request.user_id);
    let (amount, reserved) = (Amount::new(amount), Reserved::ZERO);
    let command = if withdrawal {
        Command::Withdraw(Withdraw { user_id, amount, asset_id, reserved })
    } else {
        Command::Deposit(Deposit { user_id, amount, asset_id, reserved })
    };
    for event in state.private.execute(command).await? {
        match event {
            Event::OrderRejected(rejected) => {
                let mut error = reject_error(rejected.reason);
                if rejected.reason.get() == Ok(RejectReason::InsufficientBalance) {
                    error.message = format!("Insufficient funds: withdrawal above the available {}", request.symbol);
                }
                return Err(error);
            }
            Event::BalanceUpdate(update) => {
                tracing::info!(user = request.user_id, symbol = %request.symbol, quantity = %request.quantity, withdrawal, "admin transfer");
                let text = |amount: u64| marketdata::format::format_trimmed(u128::from(amount), decimals);
                return crate::ok(json!({
                    "userId": request.user_id,
                    "symbol": request.symbol,
                    "available": text(update.available.get()),
                    "locked": text(update.locked.get()),
                }));
            }
            _ => {}
        }
    }
    Err(ApiError {
        status: StatusCode::BAD_GATEWAY,
        code: "INTERNAL_ERROR",
        message: "Unexpected engine answer".into(),
    })
}

/// Credits an asset to a user (the engine's journaled `Deposit`).
#[utoipa::path(
    post,
    path = "/api/v1/admin/deposits",
    tag = "Admin",
    security(("admin" = [])),
    request_body = Transfer,
    responses(
        (status = 200, description = "The balance after: `{userId, symbol, available, locked}`"),
        (status = 400, description = "Unknown asset, bad quantity, overflow"),
        (status = 401, description = "Missing or wrong admin token"),
    )
)]
pub async fn deposit(State(state): State<AdminState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    state.authorize(&headers)?;
    transfer(&state, &body, false).await
}

/// Debits an asset from a user's available balance (the engine's journaled `Withdraw`).
#[utoipa::path(
    post,
    path = "/api/v1/admin/withdrawals",
    tag = "Admin",
    security(("admin" = [])),
    request_body = Transfer,
    responses(
        (status = 200, description = "The balance after: `{userId, symbol, available, locked}`"),
        (status = 400, description = "Unknown asset, bad quantity, `INSUFFICIENT_FUNDS`"),
        (status = 401, description = "Missing or wrong admin token"),
    )
)]
pub async fn withdraw(State(state): State<AdminState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    state.authorize(&headers)?;
    transfer(&state, &body, true).await
}

async fn market_control(state: &AdminState, body: &[u8], halt: bool) -> ApiResult {
    let request: MarketReference = json_body(body)?;
    let market_id = state.market(&request.symbol)?;
    let action = if halt { MarketAction::Halt } else { MarketAction::Resume };
    let command = Command::MarketControl(MarketControl { market_id, action: action.into(), reserved: Reserved::ZERO });
    for event in state.private.execute(command).await? {
        match event {
            Event::OrderRejected(rejected) => return Err(reject_error(rejected.reason)),
            Event::MarketStatusChanged(changed) => {
                let halted = changed.halted.get().is_ok_and(bool::from);
                tracing::warn!(symbol = %request.symbol, halted, "market status changed by admin");
                return crate::ok(json!({
                    "symbol": request.symbol,
                    "orderBookState": if halted { "CancelOnly" } else { "Open" },
                }));
            }
            _ => {}
        }
    }
    Err(ApiError {
        status: StatusCode::BAD_GATEWAY,
        code: "INTERNAL_ERROR",
        message: "Unexpected engine answer".into(),
    })
}

/// Halts a market: new orders and replaces are refused, cancels still work.
#[utoipa::path(
    post,
    path = "/api/v1/admin/markets/halt",
    tag = "Admin",
    security(("admin" = [])),
    request_body = MarketReference,
    responses(
        (status = 200, description = "`{symbol, orderBookState: \"CancelOnly\"}`"),
        (status = 400, description = "Unknown market"),
        (status = 401, description = "Missing or wrong admin token"),
    )
)]
pub async fn halt(State(state): State<AdminState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    state.authorize(&headers)?;
    market_control(&state, &body, true).await
}

/// Resumes trading on a halted market.
#[utoipa::path(
    post,
    path = "/api/v1/admin/markets/resume",
    tag = "Admin",
    security(("admin" = [])),
    request_body = MarketReference,
    responses(
        (status = 200, description = "`{symbol, orderBookState: \"Open\"}`"),
        (status = 400, description = "Unknown market"),
        (status = 401, description = "Missing or wrong admin token"),
    )
)]
pub async fn resume(State(state): State<AdminState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    state.authorize(&headers)?;
    market_control(&state, &body, false).await
}
