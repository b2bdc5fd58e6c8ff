//! The signed (private) endpoints: orders and balances. See [`private_router`] and
//! docs/rest-api.md.

use crate::accounts::{AckTrace, Dispatch, OpenOrder, RestGateway};
use crate::auth::{self, SignedParams};
use crate::{ApiError, ApiResult, ok};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use codec::decimal::{DecimalError, parse_fixed};
use codec::*;
use engine::EngineConfig;
use engine::bus::{IngressCommand, IngressRing, origin};
use engine::latency::{clock_ns, wire_latency};
use gateway_binary::Credentials;
use marketdata::format::MarketFormat;
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a request waits for the engine's answer by default.
pub const ENGINE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// What the private handlers share.
#[derive(Clone)]
pub struct PrivateState {
    pub(crate) dispatch: Arc<Dispatch>,
    pub(crate) credentials: Arc<Credentials>,
    pub(crate) ingress: Arc<IngressRing>,
    pub(crate) config: Arc<EngineConfig>,
    pub(crate) formats: Arc<Vec<MarketFormat>>,
    pub(crate) symbols: Arc<HashMap<String, usize>>,
    pub(crate) timeout: Duration,
    pub(crate) key_limiter: Option<Arc<crate::limits::KeyRateLimiter>>,
    /// Session tokens (JWT) accepted instead of a signature, when set.
    users: Option<Arc<crate::users::UserStore>>,
    /// The durable store the fill, order, deposit and withdrawal history endpoints read, when
    /// configured.
    pub(crate) history_source: Option<Arc<dyn crate::history::HistorySource>>,
}

impl PrivateState {
    /// The state of a private router in front of `gateway`: API keys from `credentials` (the
    /// same as the SBE gateway's), commands onto `ingress`.
    pub fn new(
        gateway: &RestGateway,
        credentials: Arc<Credentials>,
        ingress: Arc<IngressRing>,
        config: Arc<EngineConfig>,
    ) -> Self {
        let formats = config.markets.iter().map(|market| MarketFormat::new(&config, market)).collect();
        let symbols = config.markets.iter().enumerate().map(|(index, market)| (market.symbol.clone(), index)).collect();
        Self {
            dispatch: gateway.dispatch.clone(),
            credentials,
            ingress,
            config,
            formats: Arc::new(formats),
            symbols: Arc::new(symbols),
            timeout: ENGINE_TIMEOUT_DEFAULT,
            users: None,
            key_limiter: None,
            history_source: None,
        }
    }

    /// Also accepts session tokens of `users` (`Authorization: Bearer <JWT>`, when the request
    /// carries no `X-Signature`) on every signed endpoint.
    pub fn with_users(mut self, users: Arc<crate::users::UserStore>) -> Self {
        self.users = Some(users);
        self
    }

    /// Answers `GET /wapi/v1/history/fills`, `/wapi/v1/history/orders`, `/wapi/v1/capital/deposits`
    /// and `/wapi/v1/capital/withdrawals` from `source` (a durable store) instead of the in-memory
    /// history.
    pub fn with_history_source(mut self, source: Arc<dyn crate::history::HistorySource>) -> Self {
        self.history_source = Some(source);
        self
    }

    /// The engine configuration.
    pub(crate) fn engine_config(&self) -> &EngineConfig {
        &self.config
    }

    /// Sets how long a request waits for the engine (then `504 TIMEOUT`).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Charges every verified request to its API key's rate limit (`429 TOO_MANY_REQUESTS` over it).
    pub fn with_key_limits(mut self, limiter: Arc<crate::limits::KeyRateLimiter>) -> Self {
        self.key_limiter = Some(limiter);
        self
    }

    /// The user of a request signed for `instruction` over `params`, or carrying a session token
    /// (see docs/rest-api.md), charged to its rate limit. Used by the handlers here and by the
    /// exchange's demo faucet.
    ///
    /// # Errors
    /// `401 UNAUTHORIZED` when the request is not authenticated; `429` over the rate limit.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        instruction: &str,
        params: &SignedParams,
    ) -> Result<UserId, ApiError> {
        let user = match (crate::sessions::bearer(headers), headers.contains_key("x-signature")) {
            (Some(token), false) => {
                let users = self.users.as_ref().ok_or_else(|| auth::unauthorized("Session tokens are not accepted"))?;
                users.verify_jwt(token)?
            }
            _ => auth::verify(&self.credentials, headers, instruction, params, auth::now_ms())?,
        };
        if let Some(limiter) = &self.key_limiter {
            // Verified: charge the caller's own budget (its API key, or its user for a session).
            match headers.get("x-api-key").and_then(|v| v.to_str().ok()).filter(|_| headers.contains_key("x-signature"))
            {
                Some(key) => limiter.check(key.trim())?,
                None => limiter.check(&format!("user:{user}"))?,
            }
        }
        Ok(user)
    }

    /// Refuses to answer from views that lost events.
    pub(crate) fn fresh_views(&self) -> Result<(), ApiError> {
        if self.dispatch.views.is_stale() {
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "SERVICE_UNAVAILABLE",
                message: "Account views are resynchronising".into(),
            });
        }
        Ok(())
    }

    pub(crate) fn market(&self, params: &SignedParams) -> Result<usize, ApiError> {
        let symbol = params.get("symbol").ok_or_else(|| ApiError::bad_request("Missing required parameter: symbol"))?;
        self.symbols.get(symbol).copied().ok_or_else(|| ApiError::bad_request(format!("Market not found: {symbol}")))
    }

    /// Puts a command on the ring and waits for its events (`503` when the ring is full, `504`
    /// after the timeout). Used by the handlers here and by the exchange's demo faucet.
    pub async fn execute(&self, command: Command) -> Result<Vec<Event>, ApiError> {
        let (id, receiver) = self.dispatch.register();
        let command = IngressCommand::traced(origin::tag(origin::REST, id), command, request_received_ns());
        if self.ingress.push(command).is_err() {
            self.dispatch.forget(id);
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "SERVICE_UNAVAILABLE",
                message: "Engine busy (ingress ring full), retry later".into(),
            });
        }
        match tokio::time::timeout(self.timeout, receiver).await {
            Ok(Ok(answer)) => {
                acknowledged(answer.ack);
                Ok(answer.events)
            }
            _ => {
                self.dispatch.forget(id);
                Err(ApiError {
                    status: StatusCode::GATEWAY_TIMEOUT,
                    code: "TIMEOUT",
                    message: "No answer from the engine in time; the order's outcome is unknown, query it".into(),
                })
            }
        }
    }

    pub(crate) fn order_json(&self, order: &OpenOrder, status: &str) -> Value {
        let index = order.market_id.get() as usize - 1;
        let format = &self.formats[index];
        let price = (order.order_type == OrderType::Limit).then(|| format.price(order.price_ticks));
        let quantity = (order.quantity_lots > 0).then(|| format.quantity(u128::from(order.quantity_lots)));
        let quote_quantity = (order.quote_quantity > 0).then(|| format.quote(u128::from(order.quote_quantity)));
        let mut value = json!({
            "id": order.order_id.get().to_string(),
            "clientId": (order.client_order_id != ClientOrderId::ZERO).then(|| order.client_order_id.get()),
            "symbol": self.config.markets[index].symbol,
            "triggerPrice": (order.trigger_price_ticks != 0).then(|| format.price(order.trigger_price_ticks)),
            "side": match order.side { Side::Bid => "Bid", Side::Ask => "Ask" },
            "orderType": match order.order_type { OrderType::Limit => "Limit", OrderType::Market => "Market" },
            "quantity": quantity,
            "quoteQuantity": quote_quantity,
            "executedQuantity": format.quantity(u128::from(order.filled_lots)),
            "executedQuoteQuantity": format.quote(u128::from(order.executed_quote)),
            "price": price,
            "timeInForce": match order.time_in_force {
                TimeInForce::Gtc => "GTC",
                TimeInForce::Ioc => "IOC",
                TimeInForce::Fok => "FOK",
            },
            "selfTradePrevention": match order.self_trade_prevention {
                SelfTradePrevention::RejectTaker => "RejectTaker",
                SelfTradePrevention::RejectMaker => "RejectMaker",
                SelfTradePrevention::RejectBoth => "RejectBoth",
                SelfTradePrevention::Allow => "Allow",
            },
            "postOnly": order.post_only,
            "status": status,
            "createdAt": order.created_ns / 1_000_000,
        });
        // Backpack's attached stop-loss / take-profit fields, only on an order that has them.
        if let Some(object) = value.as_object_mut() {
            for (name, ticks) in order.attached.fields() {
                if ticks != 0 {
                    object.insert(name.into(), Value::from(format.price(ticks)));
                }
            }
            for (name, trigger_ticks) in [
                ("stopLossTriggerBy", order.attached.stop_loss_trigger_ticks),
                ("takeProfitTriggerBy", order.attached.take_profit_trigger_ticks),
            ] {
                if trigger_ticks != 0 {
                    object.insert(name.into(), Value::from(TRIGGER_BY_LAST_PRICE));
                }
            }
        }
        value
    }
}

/// The HTTP answer to an engine rejection. See the table in docs/rest-api.md.
pub fn reject_error(reason: RejectReasonCode) -> ApiError {
    let Ok(reason) = reason.get() else {
        return ApiError { status: StatusCode::BAD_REQUEST, code: "INVALID_ORDER", message: "Order rejected".into() };
    };
    let (status, code) = match reason {
        RejectReason::InsufficientBalance => (StatusCode::BAD_REQUEST, "INSUFFICIENT_FUNDS"),
        RejectReason::UnknownOrder | RejectReason::NotOrderOwner => (StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND"),
        RejectReason::UnknownMarket | RejectReason::UnknownAsset | RejectReason::MalformedMessage => {
            (StatusCode::BAD_REQUEST, "INVALID_CLIENT_REQUEST")
        }
        RejectReason::Throttled => (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS"),
        RejectReason::EngineBusy | RejectReason::TooManyGateways => {
            (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE")
        }
        _ => (StatusCode::BAD_REQUEST, "INVALID_ORDER"),
    };
    // NotOrderOwner must not reveal that the order exists.
    let message = if reason == RejectReason::NotOrderOwner { RejectReason::UnknownOrder } else { reason }.message();
    let mut message = message.to_string();
    if let Some(first) = message.get(..1) {
        message = first.to_uppercase() + &message[1..];
    }
    ApiError { status, code, message }
}

/// The signed routes, at the server root: `POST /api/v1/order` (`orderExecute`),
/// `DELETE /api/v1/order` (`orderCancel`), `GET /api/v1/order` (`orderQuery`),
/// `GET /api/v1/orders` (`orderQueryAll`), `POST /api/v1/orders` (batch `orderExecute`),
/// `DELETE /api/v1/orders` (`orderCancelAll`), `GET /api/v1/capital` (`balanceQuery`),
/// `GET /wapi/v1/history/fills` (`fillHistoryQueryAll`), `GET /wapi/v1/history/orders`
/// (`orderHistoryQueryAll`), `GET /wapi/v1/capital/deposits` (`depositQueryAll`),
/// `GET` / `POST /wapi/v1/capital/withdrawals` (`withdrawalQueryAll` / `withdraw`). Merge into
/// the server's router (next to [`crate::public_router`]); sets no fallback.
pub fn private_router(state: PrivateState) -> Router {
    Router::new()
        .route("/api/v1/order", get(order_query).post(order_execute).delete(order_cancel))
        .route(
            "/api/v1/orders",
            get(order_query_all).post(crate::batch::orders_execute).delete(crate::batch::orders_cancel_all),
        )
        .route("/api/v1/capital", get(balance_query))
        .route("/wapi/v1/history/fills", get(crate::history::fill_history))
        .route("/wapi/v1/history/orders", get(crate::history::order_history))
        .route("/wapi/v1/capital/deposits", get(crate::capital::deposits))
        .route("/wapi/v1/capital/withdrawals", get(crate::capital::withdrawals).post(crate::capital::withdraw))
        // After the routes: a layer wraps the routes added before it.
        .layer(axum::middleware::from_fn(trace_requests))
        .with_state(state)
}

pub(crate) fn invalid_order(message: impl Into<String>) -> ApiError {
    ApiError { status: StatusCode::BAD_REQUEST, code: "INVALID_ORDER", message: message.into() }
}

pub(crate) fn not_found() -> ApiError {
    ApiError { status: StatusCode::NOT_FOUND, code: "RESOURCE_NOT_FOUND", message: "Order not found".into() }
}

/// Parses an enum-like parameter.
fn choice<T: Copy>(params: &SignedParams, name: &str, default: T, options: &[(&str, T)]) -> Result<T, ApiError> {
    let Some(text) = params.get(name) else { return Ok(default) };
    options.iter().find(|(label, _)| *label == text).map(|(_, value)| *value).ok_or_else(|| {
        let labels: Vec<&str> = options.iter().map(|(label, _)| *label).collect();
        ApiError::bad_request(format!("Invalid {name}: {text} (expected one of {})", labels.join(", ")))
    })
}

/// A decimal parameter at `scale`, as a multiple of `step` minor units (`step_text` names it).
fn grid_value(
    params: &SignedParams,
    name: &str,
    scale: u8,
    step: u64,
    step_text: &str,
) -> Result<Option<u64>, ApiError> {
    let Some(text) = params.get(name) else { return Ok(None) };
    let units = parse_fixed(text, scale).map_err(|error| match error {
        DecimalError::Malformed => invalid_order(format!("Invalid {name}: {text} is not a positive decimal number")),
        DecimalError::TooPrecise(_) => {
            invalid_order(format!("Invalid {name}: {text} is not a multiple of {step_text}"))
        }
        DecimalError::Overflow => invalid_order(format!("Invalid {name}: {text} is too large")),
    })?;
    if units % step != 0 {
        return Err(invalid_order(format!("Invalid {name}: {text} is not a multiple of {step_text}")));
    }
    Ok(Some(units / step))
}

pub(crate) fn parse_order(state: &PrivateState, user: UserId, params: &SignedParams) -> Result<NewOrder, ApiError> {
    let index = state.market(params)?;
    let market = &state.config.markets[index];
    let format = &state.formats[index];
    let side = params.get("side").ok_or_else(|| ApiError::bad_request("Missing required parameter: side"))?;
    let side = choice(params, "side", Side::Bid, &[("Bid", Side::Bid), ("Ask", Side::Ask)])
        .map_err(|_| ApiError::bad_request(format!("Invalid side: {side} (expected Bid or Ask)")))?;
    if !params.contains_key("orderType") {
        return Err(ApiError::bad_request("Missing required parameter: orderType"));
    }
    let order_type =
        choice(params, "orderType", OrderType::Limit, &[("Limit", OrderType::Limit), ("Market", OrderType::Market)])?;
    let default_tif = if order_type == OrderType::Market { TimeInForce::Ioc } else { TimeInForce::Gtc };
    let time_in_force = choice(
        params,
        "timeInForce",
        default_tif,
        &[("GTC", TimeInForce::Gtc), ("IOC", TimeInForce::Ioc), ("FOK", TimeInForce::Fok)],
    )?;
    let self_trade_prevention = choice(
        params,
        "selfTradePrevention",
        SelfTradePrevention::RejectTaker,
        &[
            ("RejectTaker", SelfTradePrevention::RejectTaker),
            ("RejectMaker", SelfTradePrevention::RejectMaker),
            ("RejectBoth", SelfTradePrevention::RejectBoth),
            ("Allow", SelfTradePrevention::Allow),
        ],
    )?;
    let post_only = choice(params, "postOnly", false, &[("true", true), ("false", false)])?;
    let client_id = match params.get("clientId") {
        None => 0,
        Some(text) => {
            text.parse::<u32>().ok().filter(|_| text.bytes().all(|b| b.is_ascii_digit())).ok_or_else(|| {
                ApiError::bad_request(format!("Invalid clientId: {text} (expected an integer from 0 to 4294967295)"))
            })?
        }
    };
    let tick_text = format.price(1);
    let step_text = format.quantity(1);
    let price =
        grid_value(params, "price", format.quote_decimals, market.tick_size, &format!("the tick size {tick_text}"))?;
    let quantity =
        grid_value(params, "quantity", format.base_decimals, market.lot_size, &format!("the step size {step_text}"))?;
    let quote_quantity = match params.get("quoteQuantity") {
        None => None,
        Some(text) => Some(
            parse_fixed(text, format.quote_decimals)
                .map_err(|error| invalid_order(format!("Invalid quoteQuantity: {text} ({error})")))?,
        ),
    };
    // Trigger orders (Backpack's `triggerPrice`): wait until the last trade price crosses it.
    let trigger_price = grid_value(
        params,
        "triggerPrice",
        format.quote_decimals,
        market.tick_size,
        &format!("the tick size {tick_text}"),
    )?;
    let trigger_quantity = grid_value(
        params,
        "triggerQuantity",
        format.base_decimals,
        market.lot_size,
        &format!("the step size {step_text}"),
    )?;
    if trigger_price.is_none() && trigger_quantity.is_some() {
        return Err(invalid_order("triggerQuantity needs a triggerPrice"));
    }
    if let Some(trigger_by) = params.get("triggerBy")
        && trigger_by != TRIGGER_BY_LAST_PRICE
    {
        return Err(invalid_order(format!(
            "Invalid triggerBy: {trigger_by} (only {TRIGGER_BY_LAST_PRICE} is supported)"
        )));
    }
    // Attached stop-loss / take-profit: trigger and limit prices on the tick grid; the engine
    // checks their sides and creates the children as the order fills.
    let mut attached = [0u64; 4];
    for (value, name) in attached.iter_mut().zip(ATTACHED_TRIGGER_FIELDS) {
        *value =
            grid_value(params, name, format.quote_decimals, market.tick_size, &format!("the tick size {tick_text}"))?
                .unwrap_or(0);
    }
    if trigger_price.is_some() && attached.iter().any(|&value| value != 0) {
        return Err(invalid_order("A trigger order cannot carry an attached stop-loss or take-profit"));
    }
    let [stop_loss_trigger, stop_loss_limit, take_profit_trigger, take_profit_limit] = attached;
    if (stop_loss_limit != 0 && stop_loss_trigger == 0) || (take_profit_limit != 0 && take_profit_trigger == 0) {
        return Err(invalid_order("A stop-loss or take-profit limit price needs its trigger price"));
    }
    // A trigger order's size may come as triggerQuantity (Backpack's name for it).
    let quantity = match (quantity, trigger_quantity) {
        (Some(_), Some(_)) => return Err(invalid_order("Give quantity or triggerQuantity, not both")),
        (quantity, trigger_quantity) => quantity.or(trigger_quantity),
    };
    match order_type {
        OrderType::Limit => {
            if price.is_none() || quantity.is_none() {
                return Err(invalid_order("A limit order needs price and quantity"));
            }
            if quote_quantity.is_some() {
                return Err(invalid_order("A limit order takes no quoteQuantity"));
            }
        }
        OrderType::Market => {
            if price.is_some() {
                return Err(invalid_order("A market order takes no price"));
            }
            if quantity.is_some() == quote_quantity.is_some() {
                return Err(invalid_order("A market order needs exactly one of quantity and quoteQuantity"));
            }
        }
    }
    Ok(NewOrder {
        trigger_kind: if trigger_price.is_some() { TriggerKind::Cross } else { TriggerKind::None }.into(),
        trigger_price_ticks: Ticks::new(trigger_price.unwrap_or(0)),
        user_id: user,
        client_order_id: ClientOrderId::new(u64::from(client_id)),
        price_ticks: Ticks::new(price.unwrap_or(0)),
        quantity_lots: Lots::new(quantity.unwrap_or(0)),
        quote_quantity: Amount::new(quote_quantity.unwrap_or(0)),
        market_id: market.id,
        side: side.into(),
        order_type: order_type.into(),
        time_in_force: time_in_force.into(),
        self_trade_prevention: self_trade_prevention.into(),
        post_only: post_only.into(),
        stop_loss_trigger_ticks: Ticks::new(stop_loss_trigger),
        stop_loss_limit_ticks: Ticks::new(stop_loss_limit),
        take_profit_trigger_ticks: Ticks::new(take_profit_trigger),
        take_profit_limit_ticks: Ticks::new(take_profit_limit),
        ..NewOrder::default()
    })
}

/// The only `triggerBy` this exchange has: its own last trade price.
pub(crate) const TRIGGER_BY_LAST_PRICE: &str = "LastPrice";

/// Backpack's attached stop-loss / take-profit fields, in the order of the `NewOrder` fields.
const ATTACHED_TRIGGER_FIELDS: [&str; 4] =
    ["stopLossTriggerPrice", "stopLossLimitPrice", "takeProfitTriggerPrice", "takeProfitLimitPrice"];

#[utoipa::path(
    post,
    path = "/api/v1/order",
    tag = "Order",
    description = "Execute an order (instruction `orderExecute`).",
    request_body(content = crate::openapi::ExecuteOrderRequest, content_type = "application/json"),
    params(crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "The order", body = crate::openapi::Order),
        (status = 400, description = "Bad request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Bad signature", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn order_execute(State(state): State<PrivateState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let params = auth::signed_body_params(&headers, &body)?;
    let user = state.authenticate(&headers, "orderExecute", &params)?;
    let order = parse_order(&state, user, &params)?;
    let events = state.execute(Command::NewOrder(order)).await?;
    let answer = placed_order(&state, user, &events)?;
    ok(answer)
}

/// The Order object of a `NewOrder` from the events the engine answered it with (its
/// rejection as an error).
pub(crate) fn placed_order(state: &PrivateState, user: UserId, events: &[Event]) -> Result<Value, ApiError> {
    let mut open: Option<OpenOrder> = None;
    let (mut canceled, mut expired, mut completed) = (false, false, false);
    for event in events {
        match event {
            Event::OrderRejected(rejected) => return Err(reject_error(rejected.reason)),
            // The order this command placed is the first accepted or pending one (a trigger
            // order of the same user that its trades fire comes later).
            Event::TriggerPending(pending) if pending.user_id == user && open.is_none() => {
                open = crate::accounts::pending_order(pending);
            }
            Event::OrderAccepted(accepted) if accepted.user_id == user && open.is_none() => {
                open = Some(OpenOrder {
                    order_id: accepted.order_id,
                    client_order_id: accepted.client_order_id,
                    market_id: accepted.market_id,
                    side: accepted.side.get().unwrap_or(Side::Bid),
                    order_type: accepted.order_type.get().unwrap_or(OrderType::Limit),
                    price_ticks: accepted.price_ticks.get(),
                    quantity_lots: accepted.quantity_lots.get(),
                    quote_quantity: accepted.quote_quantity.get(),
                    filled_lots: 0,
                    executed_quote: 0,
                    time_in_force: accepted.time_in_force.get().unwrap_or(TimeInForce::Gtc),
                    self_trade_prevention: accepted
                        .self_trade_prevention
                        .get()
                        .unwrap_or(SelfTradePrevention::RejectTaker),
                    post_only: accepted.post_only.get().is_ok_and(bool::from),
                    created_ns: accepted.timestamp_ns.get(),
                    trigger_price_ticks: 0,
                    attached: crate::accounts::AttachedTriggers::of_accepted(accepted),
                });
            }
            Event::Fill(fill) => {
                if let Some(order) = open.as_mut().filter(|o| o.order_id == fill.taker_order_id) {
                    order.filled_lots += fill.quantity_lots.get();
                    order.executed_quote += fill.quote_amount.get();
                    // Not `taker_remaining_lots == 0`, which every fill of a quote-quantity
                    // market order shows.
                    completed |= fill.completes_taker();
                }
            }
            Event::OrderCanceled(c) if open.is_some_and(|o| o.order_id == c.order_id) => canceled = true,
            Event::OrderExpired(e) if open.is_some_and(|o| o.order_id == e.order_id) => expired = true,
            _ => {}
        }
    }
    let Some(order) = open else {
        return Err(ApiError {
            status: StatusCode::BAD_GATEWAY,
            code: "INTERNAL_ERROR",
            message: "Unexpected engine answer".into(),
        });
    };
    let status = if order.trigger_price_ticks != 0 {
        "TriggerPending"
    } else if canceled {
        "Cancelled"
    } else if expired {
        "Expired"
    } else if completed {
        "Filled"
    } else if order.filled_lots > 0 {
        "PartiallyFilled"
    } else {
        "New"
    };
    Ok(state.order_json(&order, status))
}

/// `orderId` (a decimal string or number) or `clientId` of a query or cancel: exactly one, as
/// Backpack requires (with both, one of them would be silently ignored and the order it names
/// might not be the one the other names).
fn order_reference(params: &SignedParams) -> Result<(OrderId, ClientOrderId), ApiError> {
    let number = |name: &str| -> Result<Option<u64>, ApiError> {
        match params.get(name) {
            None => Ok(None),
            Some(text) => text
                .parse::<u64>()
                .ok()
                .filter(|&v| v > 0 && text.bytes().all(|b| b.is_ascii_digit()))
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("Invalid {name}: {text}"))),
        }
    };
    let order_id = number("orderId")?;
    let client_id = number("clientId")?;
    if client_id.is_some_and(|c| c > u64::from(u32::MAX)) {
        return Err(ApiError::bad_request("Invalid clientId: expected an integer from 1 to 4294967295"));
    }
    match (order_id, client_id) {
        (None, None) => Err(ApiError::bad_request("Missing required parameter: orderId or clientId")),
        (Some(_), Some(_)) => Err(ApiError::bad_request("Specify orderId or clientId, not both")),
        (Some(order_id), None) => Ok((OrderId::new(order_id), ClientOrderId::ZERO)),
        (None, Some(client_id)) => Ok((OrderId::ZERO, ClientOrderId::new(client_id))),
    }
}

#[utoipa::path(
    delete,
    path = "/api/v1/order",
    tag = "Order",
    description = "Cancel an open order (instruction `orderCancel`).",
    request_body(content = crate::openapi::CancelOrderRequest, content_type = "application/json"),
    params(crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "The cancelled order", body = crate::openapi::Order),
        (status = 400, description = "Bad request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Bad signature", body = crate::openapi::ErrorBody),
        (status = 404, description = "Order not open for this user", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn order_cancel(State(state): State<PrivateState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let params = auth::signed_body_params(&headers, &body)?;
    let user = state.authenticate(&headers, "orderCancel", &params)?;
    state.fresh_views()?;
    let index = state.market(&params)?;
    let (order_id, client_order_id) = order_reference(&params)?;
    let market_id = state.config.markets[index].id;
    // Only the user's own open orders are visible; anything else is "not found".
    let Some(mut order) = state.dispatch.views.find(user, market_id, order_id, client_order_id) else {
        return Err(not_found());
    };
    let command = Command::CancelOrder(CancelOrder {
        user_id: user,
        order_id: order.order_id,
        client_order_id: ClientOrderId::ZERO,
        market_id,
        reserved: Reserved::ZERO,
    });
    for event in state.execute(command).await? {
        match event {
            Event::OrderRejected(rejected) => return Err(reject_error(rejected.reason)),
            Event::OrderCanceled(canceled) if canceled.order_id == order.order_id => {
                order.filled_lots = canceled.filled_lots.get();
                return ok(state.order_json(&order, "Cancelled"));
            }
            _ => {}
        }
    }
    Err(not_found())
}

pub(crate) fn open_status(order: &OpenOrder) -> &'static str {
    if order.trigger_price_ticks != 0 {
        "TriggerPending"
    } else if order.filled_lots > 0 {
        "PartiallyFilled"
    } else {
        "New"
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/order",
    tag = "Order",
    description = "One open order (instruction `orderQuery`).",
    params(crate::openapi::OrderQuery, crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "The order", body = crate::openapi::Order),
        (status = 400, description = "Bad request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Bad signature", body = crate::openapi::ErrorBody),
        (status = 404, description = "Order not open for this user", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn order_query(
    State(state): State<PrivateState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = auth::query_params(query.as_deref())?;
    let user = state.authenticate(&headers, "orderQuery", &params)?;
    state.fresh_views()?;
    let index = state.market(&params)?;
    let (order_id, client_order_id) = order_reference(&params)?;
    let order = state
        .dispatch
        .views
        .find(user, state.config.markets[index].id, order_id, client_order_id)
        .ok_or_else(not_found)?;
    ok(state.order_json(&order, open_status(&order)))
}

#[utoipa::path(
    get,
    path = "/api/v1/orders",
    tag = "Order",
    description = "The open orders, oldest first (instruction `orderQueryAll`).",
    params(crate::openapi::OpenOrdersQuery, crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "Open orders", body = Vec<crate::openapi::Order>),
        (status = 400, description = "Bad request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Bad signature", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn order_query_all(
    State(state): State<PrivateState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = auth::query_params(query.as_deref())?;
    let user = state.authenticate(&headers, "orderQueryAll", &params)?;
    state.fresh_views()?;
    let market = match params.get("symbol") {
        None => None,
        Some(_) => Some(state.config.markets[state.market(&params)?].id),
    };
    let orders = state.dispatch.views.open_orders(user, market);
    ok(Value::Array(orders.iter().map(|order| state.order_json(order, open_status(order))).collect()))
}

#[utoipa::path(
    get,
    path = "/api/v1/capital",
    tag = "Capital",
    description = "Balances by asset symbol (instruction `balanceQuery`).",
    params(crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "`{\"BTC\": Balance, ...}`", body = std::collections::BTreeMap<String, crate::openapi::Balance>),
        (status = 400, description = "Bad request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Bad signature", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn balance_query(
    State(state): State<PrivateState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = auth::query_params(query.as_deref())?;
    let user = state.authenticate(&headers, "balanceQuery", &params)?;
    state.fresh_views()?;
    let mut out = serde_json::Map::new();
    for (asset, balance) in state.dispatch.views.balances(user) {
        let Some(config) = state.config.assets.get(asset.get() as usize) else { continue };
        let text = |amount: u64| marketdata::format::format_trimmed(u128::from(amount), config.decimals);
        out.insert(
            config.symbol.clone(),
            json!({ "available": text(balance.available), "locked": text(balance.locked), "staked": "0" }),
        );
    }
    ok(Value::Object(out))
}

/// The wire-to-wire trace of one REST request ([`engine::latency`]): when it arrived, and the
/// acknowledgements of the commands it sent, recorded when its response is handed back.
struct RequestTrace {
    received_ns: u64,
    acks: RefCell<Vec<AckTrace>>,
}

tokio::task_local! {
    /// The trace of the request the current task serves (set by [`trace_requests`]).
    static REQUEST_TRACE: RequestTrace;
}

/// Middleware of the private routes: stamps a request when its head has been read (the body is
/// read by the handler, inside the stage `decode`), and records the commands it sent once the
/// handler hands its response back to the HTTP server (which writes it next).
pub(crate) async fn trace_requests(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let trace = RequestTrace { received_ns: clock_ns(), acks: RefCell::new(Vec::new()) };
    REQUEST_TRACE
        .scope(trace, async move {
            let response = next.run(request).await;
            let written_ns = clock_ns();
            REQUEST_TRACE.with(|trace| {
                for ack in trace.acks.borrow_mut().drain(..) {
                    wire_latency().record(origin::REST, &ack.trace, ack.picked_ns, written_ns);
                }
            });
            response
        })
        .await
}

/// When the request being served arrived (0 outside [`trace_requests`]: the command is not
/// traced).
pub(crate) fn request_received_ns() -> u64 {
    REQUEST_TRACE.try_with(|trace| trace.received_ns).unwrap_or(0)
}

/// Keeps a command's acknowledgement for [`trace_requests`] to record.
pub(crate) fn acknowledged(ack: Option<AckTrace>) {
    if let Some(ack) = ack {
        let _ = REQUEST_TRACE.try_with(|trace| trace.acks.borrow_mut().push(ack));
    }
}
