//! The AMM pool endpoints (docs/amm.md): signed liquidity and swap commands, public pool state and
//! quotes.
//!
//! - `POST /api/v1/amm/liquidity` (instruction `liquidityAdd`): `symbol`, `baseQuantity`,
//!   `quoteQuantity` (the most of each to deposit), optional `minShares`.
//! - `DELETE /api/v1/amm/liquidity` (`liquidityRemove`): `symbol`, `shares`, optional
//!   `minBaseQuantity`, `minQuoteQuantity`.
//! - `POST /api/v1/amm/swap` (`swapExecute`): `symbol`, `side` (`Bid` buys base, `Ask` sells it),
//!   exactly one of `quantity` (base) and `quoteQuantity`; the one given is the fixed side (a
//!   `Bid` with `quoteQuantity` pays exactly that, a `Bid` with `quantity` receives exactly that),
//!   and an optional slippage limit: `minAmountOut` when the input is fixed, `maxAmountIn` when
//!   the output is.
//! - `POST /api/v1/amm/route` (`routeExecute`): a market order of `quantity` (base, on the lot
//!   grid) split between the book and the pool for the best total price
//!   ([`engine::amm::plan_route`]), all or nothing, with an optional `quoteLimit` (the most quote to
//!   pay for a `Bid`, the least to receive for an `Ask`).
//! - `GET /api/v1/amm/quote?symbol=&side=&quantity=|quoteQuantity=` (public): the pool's swap,
//!   a market order walked through the book, and (for a base `quantity`) the routed split.
//! - `GET /api/v1/amm/pools[?symbol=]` (public): reserves, shares, fee and spot price.
//! - `GET /api/v1/amm/shares[?symbol=]` (`liquidityQuery`): the signer's shares in each pool and
//!   what they would withdraw now.
//!
//! Signed requests use the same Backpack signing as the order endpoints ([`crate::auth`]); every
//! amount is a decimal string in the asset's own units (shares are integers). Engine rejections
//! become `{code, message}` errors ([`amm_reject_error`]).

use crate::auth::{self, SignedParams};
use crate::{ApiError, ApiResult, PrivateState, ok, reject_error};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use codec::decimal::parse_fixed;
use codec::*;
use marketdata::MarketView;
use marketdata::amm::{BookTarget, BookUnits, PoolState, walk_book};
use marketdata::format::format_trimmed;
use serde_json::{Value, json};
use std::sync::Arc;

/// Book levels walked for a market-order quote.
const QUOTE_DEPTH: usize = 5_000;

/// What the AMM handlers share.
#[derive(Clone)]
pub struct AmmState {
    private: PrivateState,
    view: Arc<MarketView>,
}

/// The AMM routes, at the server root. Merge into the server's router next to
/// [`crate::private_router`]; sets no fallback.
pub fn amm_router(private: PrivateState, view: Arc<MarketView>) -> Router {
    Router::new()
        .route("/api/v1/amm/liquidity", post(liquidity_add).delete(liquidity_remove))
        .route("/api/v1/amm/swap", post(swap_execute))
        .route("/api/v1/amm/route", post(route_execute))
        .route("/api/v1/amm/quote", get(quote))
        .route("/api/v1/amm/pools", get(pools))
        .route("/api/v1/amm/shares", get(shares_query))
        .with_state(AmmState { private, view })
}

/// The HTTP answer to an engine rejection of a pool command: `PoolNotFound` is
/// `404 RESOURCE_NOT_FOUND`, missing funds or shares `400 INSUFFICIENT_FUNDS`, the other pool
/// reasons `400 INVALID_ORDER`; the rest as for orders ([`reject_error`]).
pub fn amm_reject_error(reason: RejectReasonCode) -> ApiError {
    let message = |reason: RejectReason| {
        let text = reason.message();
        text[..1].to_uppercase() + &text[1..]
    };
    match reason.get() {
        Ok(RejectReason::PoolNotFound) => ApiError {
            status: StatusCode::NOT_FOUND,
            code: "RESOURCE_NOT_FOUND",
            message: message(RejectReason::PoolNotFound),
        },
        Ok(r @ RejectReason::InsufficientShares) => {
            ApiError { status: StatusCode::BAD_REQUEST, code: "INSUFFICIENT_FUNDS", message: message(r) }
        }
        Ok(
            r @ (RejectReason::SlippageExceeded
            | RejectReason::PoolEmpty
            | RejectReason::InsufficientLiquidity
            | RejectReason::InvalidAmount),
        ) => ApiError { status: StatusCode::BAD_REQUEST, code: "INVALID_ORDER", message: message(r) },
        _ => reject_error(reason),
    }
}

/// A market's pool context: index, symbol, assets' decimals and symbols.
struct Market {
    index: usize,
    id: MarketId,
    symbol: String,
    base_decimals: u8,
    quote_decimals: u8,
    base_symbol: String,
    quote_symbol: String,
}

impl AmmState {
    fn market_at(&self, index: usize) -> Market {
        let config = &self.private.config;
        let market = &config.markets[index];
        let asset = |id: AssetId| config.assets.get(id.get() as usize);
        Market {
            index,
            id: market.id,
            symbol: market.symbol.clone(),
            base_decimals: asset(market.base).map_or(0, |a| a.decimals),
            quote_decimals: asset(market.quote).map_or(0, |a| a.decimals),
            base_symbol: asset(market.base).map_or_else(String::new, |a| a.symbol.clone()),
            quote_symbol: asset(market.quote).map_or_else(String::new, |a| a.symbol.clone()),
        }
    }

    /// The market named by `symbol`, which must have a pool.
    fn pool_market(&self, params: &SignedParams) -> Result<Market, ApiError> {
        let market = self.market_at(self.private.market(params)?);
        if self.view.pools().pool(market.id).is_none() {
            return Err(amm_reject_error(RejectReason::PoolNotFound.into()));
        }
        Ok(market)
    }

    fn fresh(&self) -> Result<(), ApiError> {
        if self.view.is_stale() {
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "SERVICE_UNAVAILABLE",
                message: "Market data is resynchronising".into(),
            });
        }
        Ok(())
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError { status: StatusCode::BAD_REQUEST, code: "INVALID_ORDER", message: message.into() }
}

/// A decimal amount parameter in minor units of an asset with `decimals`.
fn amount(params: &SignedParams, name: &str, decimals: u8) -> Result<Option<u64>, ApiError> {
    let Some(text) = params.get(name) else { return Ok(None) };
    parse_fixed(text, decimals)
        .map(Some)
        .map_err(|error| invalid(format!("Invalid {name}: {text} ({error}; at most {decimals} decimals)")))
}

fn required_amount(params: &SignedParams, name: &str, decimals: u8) -> Result<u64, ApiError> {
    amount(params, name, decimals)?.ok_or_else(|| ApiError::bad_request(format!("Missing required parameter: {name}")))
}

/// An integer share count parameter.
fn shares(params: &SignedParams, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(text) = params.get(name) else { return Ok(None) };
    let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    valid
        .then(|| text.parse::<u64>().ok())
        .flatten()
        .map(Some)
        .ok_or_else(|| invalid(format!("Invalid {name}: {text} (expected a non-negative integer)")))
}

fn side(params: &SignedParams) -> Result<Side, ApiError> {
    match params.get("side").map(String::as_str) {
        None => Err(ApiError::bad_request("Missing required parameter: side")),
        Some("Bid") => Ok(Side::Bid),
        Some("Ask") => Ok(Side::Ask),
        Some(other) => Err(ApiError::bad_request(format!("Invalid side: {other} (expected Bid or Ask)"))),
    }
}

/// A swap's side, mode and fixed amount from `quantity` / `quoteQuantity`.
fn swap_terms(params: &SignedParams, market: &Market) -> Result<(Side, SwapMode, u64), ApiError> {
    let side = side(params)?;
    let base = amount(params, "quantity", market.base_decimals)?;
    let quote = amount(params, "quoteQuantity", market.quote_decimals)?;
    let (mode, amount) = match (side, base, quote) {
        (Side::Bid, None, Some(quote)) | (Side::Ask, Some(quote), None) => (SwapMode::ExactIn, quote),
        (Side::Bid, Some(base), None) | (Side::Ask, None, Some(base)) => (SwapMode::ExactOut, base),
        _ => return Err(invalid("Exactly one of quantity and quoteQuantity is required")),
    };
    if amount == 0 {
        return Err(invalid("The amount must be positive"));
    }
    Ok((side, mode, amount))
}

/// `(decimals in, decimals out, symbol in, symbol out)` of a swap.
fn swap_assets(market: &Market, side: Side) -> (u8, u8, &str, &str) {
    match side {
        Side::Bid => (market.quote_decimals, market.base_decimals, &market.quote_symbol, &market.base_symbol),
        Side::Ask => (market.base_decimals, market.quote_decimals, &market.base_symbol, &market.quote_symbol),
    }
}

/// Quote per whole base unit, in quote decimals, rounded down; `None` when `base` is zero.
fn price(market: &Market, base: u64, quote: u64) -> Option<String> {
    (base != 0).then(|| {
        let units = u128::from(quote) * 10u128.pow(u32::from(market.base_decimals)) / u128::from(base);
        format_trimmed(units, market.quote_decimals)
    })
}

/// A fraction in parts per million as a decimal string (`111111` → `"0.111111"`).
fn fraction(ppm: u64) -> String {
    format_trimmed(u128::from(ppm), 6)
}

fn pool_json(market: &Market, pool: &PoolState) -> Value {
    json!({
        "symbol": market.symbol,
        "baseSymbol": market.base_symbol,
        "quoteSymbol": market.quote_symbol,
        "feeBps": pool.fee_bps,
        "baseReserve": format_trimmed(u128::from(pool.base_reserve), market.base_decimals),
        "quoteReserve": format_trimmed(u128::from(pool.quote_reserve), market.quote_decimals),
        "totalShares": pool.total_shares.to_string(),
        "providers": pool.holders.len(),
        "price": price(market, pool.base_reserve, pool.quote_reserve),
    })
}

fn unexpected() -> ApiError {
    ApiError { status: StatusCode::BAD_GATEWAY, code: "INTERNAL_ERROR", message: "Unexpected engine answer".into() }
}

fn signed_body(
    state: &AmmState,
    headers: &HeaderMap,
    body: &[u8],
    instruction: &str,
) -> Result<(UserId, SignedParams), ApiError> {
    let params = auth::signed_body_params(headers, body)?;
    let user = state.private.authenticate(headers, instruction, &params)?;
    Ok((user, params))
}

/// `POST /api/v1/amm/liquidity`: deposits both assets into a pool for LP shares.
#[utoipa::path(
    post,
    path = "/api/v1/amm/liquidity",
    tag = "AMM",
    description = "Add liquidity (instruction `liquidityAdd`): deposit at most `baseQuantity` and `quoteQuantity` in the pool's \
                   ratio (the first deposit sets the price) for LP shares.",
    security(("signature" = []), ("session" = [])),
    request_body(content = crate::openapi::LiquidityAddRequest, content_type = "application/json"),
    params(crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "What was deposited and the shares minted", body = crate::openapi::LiquidityChange),
        (status = 400, description = "Missing or malformed parameter (`INVALID_CLIENT_REQUEST`), slippage, empty pool, \
                                      insufficient liquidity or bad amount (`INVALID_ORDER`), missing balance or shares \
                                      (`INSUFFICIENT_FUNDS`)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing or bad signature or session token", body = crate::openapi::ErrorBody),
        (status = 404, description = "The market has no pool", body = crate::openapi::ErrorBody),
        (status = 504, description = "The engine did not answer in time", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn liquidity_add(State(state): State<AmmState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let (user, params) = signed_body(&state, &headers, &body, "liquidityAdd")?;
    let market = state.pool_market(&params)?;
    let command = AddLiquidity {
        user_id: user,
        max_base_amount: Amount::new(required_amount(&params, "baseQuantity", market.base_decimals)?),
        max_quote_amount: Amount::new(required_amount(&params, "quoteQuantity", market.quote_decimals)?),
        min_shares: Shares::new(shares(&params, "minShares")?.unwrap_or(0)),
        market_id: market.id,
        reserved: Reserved::ZERO,
    };
    for event in state.private.execute(Command::AddLiquidity(command)).await? {
        match event {
            Event::OrderRejected(rejected) => return Err(amm_reject_error(rejected.reason)),
            Event::LiquidityAdded(added) => {
                return ok(json!({
                    "symbol": market.symbol,
                    "baseQuantity": format_trimmed(u128::from(added.base_amount.get()), market.base_decimals),
                    "quoteQuantity": format_trimmed(u128::from(added.quote_amount.get()), market.quote_decimals),
                    "shares": added.shares.get().to_string(),
                    "userShares": added.user_shares.get().to_string(),
                    "totalShares": added.total_shares.get().to_string(),
                    "baseReserve": format_trimmed(u128::from(added.base_reserve.get()), market.base_decimals),
                    "quoteReserve": format_trimmed(u128::from(added.quote_reserve.get()), market.quote_decimals),
                }));
            }
            _ => {}
        }
    }
    Err(unexpected())
}

/// `DELETE /api/v1/amm/liquidity`: burns the signer's LP shares for their part of the reserves.
#[utoipa::path(
    delete,
    path = "/api/v1/amm/liquidity",
    tag = "AMM",
    description = "Remove liquidity (instruction `liquidityRemove`): burn `shares` of the signer's own shares for their part of \
                   both reserves.",
    security(("signature" = []), ("session" = [])),
    request_body(content = crate::openapi::LiquidityRemoveRequest, content_type = "application/json"),
    params(crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "What was paid out and the shares burned", body = crate::openapi::LiquidityChange),
        (status = 400, description = "Missing or malformed parameter (`INVALID_CLIENT_REQUEST`), slippage, empty pool, \
                                      insufficient liquidity or bad amount (`INVALID_ORDER`), missing balance or shares \
                                      (`INSUFFICIENT_FUNDS`)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing or bad signature or session token", body = crate::openapi::ErrorBody),
        (status = 404, description = "The market has no pool", body = crate::openapi::ErrorBody),
        (status = 504, description = "The engine did not answer in time", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn liquidity_remove(State(state): State<AmmState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let (user, params) = signed_body(&state, &headers, &body, "liquidityRemove")?;
    let market = state.pool_market(&params)?;
    let burned =
        shares(&params, "shares")?.ok_or_else(|| ApiError::bad_request("Missing required parameter: shares"))?;
    // The engine burns only the signer's own shares: another user's liquidity is out of reach.
    let command = RemoveLiquidity {
        user_id: user,
        shares: Shares::new(burned),
        min_base_amount: Amount::new(amount(&params, "minBaseQuantity", market.base_decimals)?.unwrap_or(0)),
        min_quote_amount: Amount::new(amount(&params, "minQuoteQuantity", market.quote_decimals)?.unwrap_or(0)),
        market_id: market.id,
        reserved: Reserved::ZERO,
    };
    for event in state.private.execute(Command::RemoveLiquidity(command)).await? {
        match event {
            Event::OrderRejected(rejected) => return Err(amm_reject_error(rejected.reason)),
            Event::LiquidityRemoved(removed) => {
                return ok(json!({
                    "symbol": market.symbol,
                    "baseQuantity": format_trimmed(u128::from(removed.base_amount.get()), market.base_decimals),
                    "quoteQuantity": format_trimmed(u128::from(removed.quote_amount.get()), market.quote_decimals),
                    "shares": removed.shares.get().to_string(),
                    "userShares": removed.user_shares.get().to_string(),
                    "totalShares": removed.total_shares.get().to_string(),
                    "baseReserve": format_trimmed(u128::from(removed.base_reserve.get()), market.base_decimals),
                    "quoteReserve": format_trimmed(u128::from(removed.quote_reserve.get()), market.quote_decimals),
                }));
            }
            _ => {}
        }
    }
    Err(unexpected())
}

/// `POST /api/v1/amm/swap`: a swap against a pool.
#[utoipa::path(
    post,
    path = "/api/v1/amm/swap",
    tag = "AMM",
    description = "Swap against the pool (instruction `swapExecute`). `Bid` buys base, `Ask` sells it; exactly one of \
                   `quantity` (base) and `quoteQuantity` is given and is the fixed amount. Slippage limit: `minAmountOut` \
                   when the input is fixed, `maxAmountIn` when the output is.",
    security(("signature" = []), ("session" = [])),
    request_body(content = crate::openapi::SwapRequest, content_type = "application/json"),
    params(crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "The executed swap", body = crate::openapi::SwapResult),
        (status = 400, description = "Missing or malformed parameter (`INVALID_CLIENT_REQUEST`), slippage, empty pool, \
                                      insufficient liquidity or bad amount (`INVALID_ORDER`), missing balance or shares \
                                      (`INSUFFICIENT_FUNDS`)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing or bad signature or session token", body = crate::openapi::ErrorBody),
        (status = 404, description = "The market has no pool", body = crate::openapi::ErrorBody),
        (status = 504, description = "The engine did not answer in time", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn swap_execute(State(state): State<AmmState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let (user, params) = signed_body(&state, &headers, &body, "swapExecute")?;
    let market = state.pool_market(&params)?;
    let (side, mode, fixed) = swap_terms(&params, &market)?;
    let (in_decimals, out_decimals, in_symbol, out_symbol) = swap_assets(&market, side);
    let limit = match mode {
        SwapMode::ExactIn => {
            if params.contains_key("maxAmountIn") {
                return Err(invalid("maxAmountIn applies when the output is fixed; use minAmountOut"));
            }
            amount(&params, "minAmountOut", out_decimals)?
        }
        SwapMode::ExactOut => {
            if params.contains_key("minAmountOut") {
                return Err(invalid("minAmountOut applies when the input is fixed; use maxAmountIn"));
            }
            amount(&params, "maxAmountIn", in_decimals)?
        }
    };
    let command = Swap {
        user_id: user,
        amount: Amount::new(fixed),
        limit: Amount::new(limit.unwrap_or(0)),
        market_id: market.id,
        side: side.into(),
        mode: mode.into(),
        reserved: Reserved::ZERO,
    };
    for event in state.private.execute(Command::Swap(command)).await? {
        match event {
            Event::OrderRejected(rejected) => return Err(amm_reject_error(rejected.reason)),
            Event::SwapExecuted(done) => {
                let (amount_in, amount_out) = (done.amount_in.get(), done.amount_out.get());
                let (base, quote) = match side {
                    Side::Bid => (amount_out, amount_in),
                    Side::Ask => (amount_in, amount_out),
                };
                return ok(json!({
                    "symbol": market.symbol,
                    "side": if side == Side::Bid { "Bid" } else { "Ask" },
                    "assetIn": in_symbol,
                    "assetOut": out_symbol,
                    "amountIn": format_trimmed(u128::from(amount_in), in_decimals),
                    "amountOut": format_trimmed(u128::from(amount_out), out_decimals),
                    "fee": format_trimmed(u128::from(done.fee.get()), in_decimals),
                    "price": price(&market, base, quote),
                    "baseReserve": format_trimmed(u128::from(done.base_reserve.get()), market.base_decimals),
                    "quoteReserve": format_trimmed(u128::from(done.quote_reserve.get()), market.quote_decimals),
                }));
            }
            _ => {}
        }
    }
    Err(unexpected())
}

/// `POST /api/v1/amm/route`: a market order split between the book and the pool.
#[utoipa::path(
    post,
    path = "/api/v1/amm/route",
    tag = "AMM",
    description = "Routed market order (instruction `routeExecute`): `quantity` base (a multiple of the step size) split \
                   between the order book and the pool for the best total price, all or nothing, within the optional \
                   `quoteLimit` (most quote to pay for a `Bid`, least to receive for an `Ask`).",
    security(("signature" = []), ("session" = [])),
    request_body(content = crate::openapi::RouteRequest, content_type = "application/json"),
    params(crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "Both legs of the executed route", body = crate::openapi::RouteResult),
        (status = 400, description = "Missing or malformed parameter (`INVALID_CLIENT_REQUEST`), slippage, empty pool, \
                                      insufficient liquidity or bad amount (`INVALID_ORDER`), missing balance or shares \
                                      (`INSUFFICIENT_FUNDS`)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing or bad signature or session token", body = crate::openapi::ErrorBody),
        (status = 404, description = "The market has no pool", body = crate::openapi::ErrorBody),
        (status = 504, description = "The engine did not answer in time", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn route_execute(State(state): State<AmmState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let (user, params) = signed_body(&state, &headers, &body, "routeExecute")?;
    let market = state.pool_market(&params)?;
    let side = side(&params)?;
    let lot_size = state.private.config.markets[market.index].lot_size;
    let base = required_amount(&params, "quantity", market.base_decimals)?;
    if base == 0 || base % lot_size != 0 {
        return Err(invalid(format!(
            "Invalid quantity: must be a positive multiple of the step size {}",
            format_trimmed(u128::from(lot_size), market.base_decimals)
        )));
    }
    let command = RoutedOrder {
        user_id: user,
        quantity_lots: Lots::new(base / lot_size),
        quote_limit: Amount::new(amount(&params, "quoteLimit", market.quote_decimals)?.unwrap_or(0)),
        market_id: market.id,
        side: side.into(),
        reserved: Reserved::ZERO,
    };
    for event in state.private.execute(Command::RoutedOrder(command)).await? {
        match event {
            Event::OrderRejected(rejected) => return Err(amm_reject_error(rejected.reason)),
            Event::OrderRouted(routed) => {
                let book_base = routed.book_lots.get().saturating_mul(lot_size);
                let total = routed.book_quote.get().saturating_add(routed.pool_quote.get());
                let quote_text = |amount: u64| format_trimmed(u128::from(amount), market.quote_decimals);
                let base_text = |amount: u64| format_trimmed(u128::from(amount), market.base_decimals);
                return ok(json!({
                    "symbol": market.symbol,
                    "side": if side == Side::Bid { "Bid" } else { "Ask" },
                    "quantity": base_text(base),
                    "orderId": (routed.order_id != OrderId::ZERO).then(|| routed.order_id.get().to_string()),
                    "bookQuantity": base_text(book_base),
                    "bookQuote": quote_text(routed.book_quote.get()),
                    "poolQuantity": base_text(routed.pool_base_amount.get()),
                    "poolQuote": quote_text(routed.pool_quote.get()),
                    "totalQuote": quote_text(total),
                    "price": price(&market, base, total),
                }));
            }
            _ => {}
        }
    }
    Err(unexpected())
}

/// `GET /api/v1/amm/quote` (public): a swap quoted on the pool, the book and the router.
#[utoipa::path(
    get,
    path = "/api/v1/amm/quote",
    tag = "AMM",
    description = "Quote a trade (public): the pool's swap, the same trade as a market order walked through the book and, \
                   for a base `quantity` on the lot grid, the routed split. Computed from the market view, never by the \
                   engine.",
    params(crate::openapi::AmmQuoteQuery),
    responses(
        (status = 200, description = "The quotes", body = crate::openapi::AmmQuote),
        (status = 400, description = "Missing or malformed parameter", body = crate::openapi::ErrorBody),
        (status = 404, description = "The market has no pool", body = crate::openapi::ErrorBody),
        (status = 503, description = "The market view is resynchronising", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn quote(State(state): State<AmmState>, RawQuery(query): RawQuery) -> ApiResult {
    let params = auth::query_params(query.as_deref())?;
    let market = state.pool_market(&params)?;
    state.fresh()?;
    let (side, mode, fixed) = swap_terms(&params, &market)?;
    let (in_decimals, out_decimals, in_symbol, out_symbol) = swap_assets(&market, side);
    let pool = match state.view.pools().quote(market.id, side, mode, fixed) {
        Ok(quote) => {
            let r = quote.result;
            let (base, quote_amount) = match side {
                Side::Bid => (r.amount_out, r.amount_in),
                Side::Ask => (r.amount_in, r.amount_out),
            };
            json!({
                "amountIn": format_trimmed(u128::from(r.amount_in), in_decimals),
                "amountOut": format_trimmed(u128::from(r.amount_out), out_decimals),
                "fee": format_trimmed(u128::from(r.fee), in_decimals),
                "price": price(&market, base, quote_amount),
                "spotPrice": price(&market, quote.reserves.0, quote.reserves.1),
                "priceImpact": fraction(quote.impact_ppm),
            })
        }
        Err(reason) => json!({ "error": amm_reject_error(reason.into()).message }),
    };

    // The same trade as a market order on the book: by base quantity, or by quote.
    let config = &state.private.config;
    let market_config = &config.markets[market.index];
    let by_base = matches!((side, mode), (Side::Bid, SwapMode::ExactOut) | (Side::Ask, SwapMode::ExactIn));
    let units = BookUnits::of(config, market_config);
    let levels =
        state.view.depth(market.id, QUOTE_DEPTH).map(|depth| if side == Side::Bid { depth.asks } else { depth.bids });
    let book = units.zip(levels.as_ref()).map(|(units, levels)| {
        let target = if by_base { BookTarget::Lots(fixed / market_config.lot_size) } else { BookTarget::Quote(fixed) };
        walk_book(levels, side, target, units)
    });
    // The routed split (POST /api/v1/amm/route), for a base quantity on the lot grid. Levels stand
    // for orders here, so the book's fee is rounded once per level: at least the engine's.
    let route = match (units, levels, state.view.pools().pool(market.id)) {
        (Some(units), Some(levels), Some(pool)) if by_base && fixed % market_config.lot_size == 0 => {
            let ladder: Vec<(u64, u64)> = levels.iter().map(|&(price, lots)| (lots, price)).collect();
            let terms = engine::amm::BookTerms {
                quote_per_tick_lot: units.quote_per_tick_lot,
                lot_size: units.lot_size,
                taker_fee_ppm: units.taker_fee_ppm,
            };
            let lots = fixed / market_config.lot_size;
            match engine::amm::plan_route(
                &ladder,
                side,
                lots,
                terms,
                pool.base_reserve,
                pool.quote_reserve,
                pool.fee_bps,
            ) {
                Ok(plan) => {
                    let total = u64::try_from(plan.total_quote()).unwrap_or(u64::MAX);
                    json!({
                        "bookQuantity": format_trimmed(u128::from(plan.book_lots) * u128::from(units.lot_size), market.base_decimals),
                        "bookQuote": format_trimmed(u128::from(plan.book_quote), market.quote_decimals),
                        "poolQuantity": format_trimmed(u128::from(plan.pool_base), market.base_decimals),
                        "poolQuote": format_trimmed(u128::from(plan.pool_quote), market.quote_decimals),
                        "totalQuote": format_trimmed(u128::from(total), market.quote_decimals),
                        "price": price(&market, fixed, total),
                    })
                }
                Err(reason) => json!({ "error": amm_reject_error(reason.into()).message }),
            }
        }
        _ => Value::Null,
    };
    let book = match book {
        None => Value::Null,
        Some(book) if book.base_amount == 0 => json!({ "error": "No liquidity on the book for this amount" }),
        Some(book) => {
            let (amount_in, amount_out, fee_in) = match side {
                Side::Bid => (book.quote_amount.saturating_add(book.fee), book.base_amount, true),
                Side::Ask => (book.base_amount, book.quote_amount.saturating_sub(book.fee), false),
            };
            json!({
                "amountIn": format_trimmed(u128::from(amount_in), in_decimals),
                "amountOut": format_trimmed(u128::from(amount_out), out_decimals),
                "fee": format_trimmed(u128::from(book.fee), market.quote_decimals),
                "feeInAmountIn": fee_in,
                "price": price(&market, book.base_amount, book.quote_amount),
                "complete": book.complete,
            })
        }
    };
    ok(json!({
        "symbol": market.symbol,
        "side": if side == Side::Bid { "Bid" } else { "Ask" },
        "assetIn": in_symbol,
        "assetOut": out_symbol,
        "pool": pool,
        "book": book,
        "route": route,
    }))
}

/// `GET /api/v1/amm/pools` (public): every pool's state.
#[utoipa::path(
    get,
    path = "/api/v1/amm/pools",
    tag = "AMM",
    description = "The pools (public): reserves, shares, fee and spot price; one pool with `symbol`.",
    params(crate::openapi::PoolQuery),
    responses(
        (status = 200, description = "The pools", body = Vec<crate::openapi::Pool>),
        (status = 400, description = "Malformed query or unknown symbol", body = crate::openapi::ErrorBody),
        (status = 404, description = "The market has no pool", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn pools(State(state): State<AmmState>, RawQuery(query): RawQuery) -> ApiResult {
    let params = auth::query_params(query.as_deref())?;
    let only = match params.get("symbol") {
        None => None,
        Some(_) => Some(state.pool_market(&params)?.id),
    };
    let mut out = Vec::new();
    for pool in state.view.pools().all() {
        if only.is_some_and(|id| id != pool.market_id) {
            continue;
        }
        let market = state.market_at(pool.market_id.get() as usize - 1);
        out.push(pool_json(&market, &pool));
    }
    ok(Value::Array(out))
}

/// `GET /api/v1/amm/shares`: the signer's LP positions.
#[utoipa::path(
    get,
    path = "/api/v1/amm/shares",
    tag = "AMM",
    description = "The signer's shares in each pool and what they would withdraw now (instruction `liquidityQuery`); one \
                   pool with `symbol`.",
    security(("signature" = []), ("session" = [])),
    params(crate::openapi::PoolQuery, crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "The signer's positions (pools where they hold shares)", body = Vec<crate::openapi::PoolShares>),
        (status = 400, description = "Malformed query or unknown symbol", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing or bad signature or session token", body = crate::openapi::ErrorBody),
        (status = 404, description = "The market has no pool", body = crate::openapi::ErrorBody),
        (status = 503, description = "The market view is resynchronising", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn shares_query(
    State(state): State<AmmState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = auth::query_params(query.as_deref())?;
    let user = state.private.authenticate(&headers, "liquidityQuery", &params)?;
    state.fresh()?;
    let only = match params.get("symbol") {
        None => None,
        Some(_) => Some(state.pool_market(&params)?.id),
    };
    let mut out = Vec::new();
    for pool in state.view.pools().all() {
        let held = pool.holders.get(&user).copied().unwrap_or(0);
        if held == 0 || only.is_some_and(|id| id != pool.market_id) {
            continue;
        }
        let market = state.market_at(pool.market_id.get() as usize - 1);
        let (base, quote) =
            engine::amm::remove_liquidity(pool.base_reserve, pool.quote_reserve, pool.total_shares, held)
                .unwrap_or((0, 0));
        out.push(json!({
            "symbol": market.symbol,
            "shares": held.to_string(),
            "totalShares": pool.total_shares.to_string(),
            "baseQuantity": format_trimmed(u128::from(base), market.base_decimals),
            "quoteQuantity": format_trimmed(u128::from(quote), market.quote_decimals),
        }));
    }
    ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_and_fractions() {
        let market = Market {
            index: 2,
            id: MarketId::new(3),
            symbol: "SOL_USDC".into(),
            base_decimals: 9,
            quote_decimals: 6,
            base_symbol: "SOL".into(),
            quote_symbol: "USDC".into(),
        };
        assert_eq!(price(&market, 1_000_000_000, 2_222_223).as_deref(), Some("2.222223"));
        assert_eq!(price(&market, 10_000_000_000, 20_000_000).as_deref(), Some("2"));
        assert_eq!(price(&market, 0, 5), None);
        assert_eq!(fraction(111_111), "0.111111");
        assert_eq!(fraction(0), "0");
        let error = amm_reject_error(RejectReason::PoolNotFound.into());
        assert_eq!((error.status, error.code), (StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND"));
        let error = amm_reject_error(RejectReason::SlippageExceeded.into());
        assert_eq!(error.message, "Price moved beyond the slippage limit");
    }
}
