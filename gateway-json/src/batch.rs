//! `POST /api/v1/orders` (a batch of `orderExecute`s) and `DELETE /api/v1/orders`
//! (`orderCancelAll`). See docs/rest-api.md.

use crate::auth::{self, SignedParams};
use crate::private::{PrivateState, parse_order, placed_order, reject_error};
use crate::{ApiError, ApiResult, ok};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use codec::{Command, Event, MarketId, MassCancel, OrderKindFilter, Reserved, SideFilter};
use engine::bus::{IngressCommand, origin};
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// Most orders in one `POST /api/v1/orders`.
pub const BATCH_ORDERS_MAX: usize = 50;

/// The string a batch is signed with, before `&timestamp=..&window=..`: `instruction=orderExecute`
/// and the order's sorted parameters, once per order in the batch's order, joined with `&`.
pub fn batch_signing_prefix(orders: &[SignedParams]) -> String {
    let mut text = String::new();
    for (index, params) in orders.iter().enumerate() {
        if index > 0 {
            text.push('&');
        }
        text.push_str("instruction=orderExecute");
        for (key, value) in params {
            text.push('&');
            text.push_str(key);
            text.push('=');
            text.push_str(value);
        }
    }
    text
}

/// The parameters of each order of a batch body (a JSON array of order objects).
fn batch_params(body: &[u8]) -> Result<Vec<SignedParams>, ApiError> {
    let orders: Vec<Box<RawValue>> = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Malformed JSON body: expected an array of orders ({e})")))?;
    if orders.is_empty() {
        return Err(ApiError::bad_request("The batch is empty"));
    }
    if orders.len() > BATCH_ORDERS_MAX {
        return Err(ApiError::bad_request(format!("Too many orders: at most {BATCH_ORDERS_MAX} per batch")));
    }
    orders
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            if !raw.get().trim_start().starts_with('{') {
                return Err(ApiError::bad_request(format!("Order {index} of the batch is not a JSON object")));
            }
            auth::body_params(raw.get().as_bytes())
        })
        .collect()
}

/// A refused order's result: Backpack's error document, tagged `operation: "Err"`.
fn failure(error: ApiError) -> Value {
    json!({ "code": error.code, "message": error.message, "operation": "Err" })
}

/// An executed order's result: the Order object, tagged `operation: "Ok"` as Backpack's batch
/// results are (clients tell the two kinds apart by the tag).
fn success(mut order: Value) -> Value {
    if let Some(fields) = order.as_object_mut() {
        fields.insert("operation".into(), json!("Ok"));
    }
    order
}

/// `POST /api/v1/orders`: every order is validated, then the valid ones are put on the ingress
/// ring in the batch's order (so the engine executes them in that order) and each result is
/// an Order tagged `operation: "Ok"` or `{code, message, operation: "Err"}`, in the batch's order.
#[utoipa::path(
    post,
    path = "/api/v1/orders",
    tag = "Order",
    description = "Batch order execution (instruction `orderExecute` once per order in the signed string). \
                   At most 50 orders; each result is an Order with `operation: \"Ok\"` or \
                   `{code, message, operation: \"Err\"}`, in order.",
    request_body(content = crate::openapi::ExecuteOrdersRequest, content_type = "application/json"),
    params(crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "One result per order, in order", body = Vec<crate::openapi::BatchResult>),
        (status = 400, description = "Malformed batch", body = crate::openapi::ErrorBody),
        (status = 401, description = "Bad signature", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn orders_execute(State(state): State<PrivateState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let orders = batch_params(&body).map_err(|error| auth::unless_credentials(&headers, error))?;
    // `verify` signs `instruction=<instruction>` followed by the parameters; the whole batch
    // prefix minus its leading `instruction=` is passed as the instruction, with no parameters.
    let prefix = batch_signing_prefix(&orders);
    let instruction = prefix.strip_prefix("instruction=").unwrap_or(&prefix);
    let user = state.authenticate(&headers, instruction, &SignedParams::new())?;

    let mut results: Vec<Option<Value>> = vec![None; orders.len()];
    let mut pending = Vec::new();
    for (index, params) in orders.iter().enumerate() {
        let order = match parse_order(&state, user, params) {
            Ok(order) => order,
            Err(error) => {
                results[index] = Some(failure(error));
                continue;
            }
        };
        let (id, receiver) = state.dispatch.register();
        let command = IngressCommand::traced(
            origin::tag(origin::REST, id),
            Command::NewOrder(order),
            crate::private::request_received_ns(),
        );
        if state.ingress.push(command).is_err() {
            state.dispatch.forget(id);
            results[index] = Some(failure(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "SERVICE_UNAVAILABLE",
                message: "Engine busy (ingress ring full), retry later".into(),
            }));
            continue;
        }
        pending.push((index, id, receiver));
    }
    // The engine answers in ring order: wait for each in turn, all within one timeout.
    let deadline = tokio::time::Instant::now() + state.timeout;
    for (index, id, receiver) in pending {
        let result = match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(answer)) => {
                crate::private::acknowledged(answer.ack);
                placed_order(&state, user, &answer.events).map_or_else(failure, success)
            }
            _ => {
                state.dispatch.forget(id);
                failure(ApiError {
                    status: StatusCode::GATEWAY_TIMEOUT,
                    code: "TIMEOUT",
                    message: "No answer from the engine in time; the order's outcome is unknown, query it".into(),
                })
            }
        };
        results[index] = Some(result);
    }
    ok(Value::Array(results.into_iter().map(Option::unwrap_or_default).collect()))
}

/// `DELETE /api/v1/orders`: cancels the user's open orders on `symbol` (engine `MassCancel`;
/// `orderType` keeps only resting or only pending trigger orders) and answers the cancelled orders.
#[utoipa::path(
    delete,
    path = "/api/v1/orders",
    tag = "Order",
    description = "Cancel all open orders of a market (instruction `orderCancelAll`). Answers the cancelled orders.",
    request_body(content = crate::openapi::CancelAllRequest, content_type = "application/json"),
    params(crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "The cancelled orders (status `Cancelled`)", body = Vec<crate::openapi::Order>),
        (status = 400, description = "Bad request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Bad signature", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn orders_cancel_all(State(state): State<PrivateState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let params = auth::signed_body_params(&headers, &body)?;
    let user = state.authenticate(&headers, "orderCancelAll", &params)?;
    state.fresh_views()?;
    let index = state.market(&params)?;
    // Backpack's `orderType` picks which kind of open order to cancel; the engine filters so the
    // mass cancel stays one atomic command.
    let kinds = match params.get("orderType").map(String::as_str) {
        None => OrderKindFilter::All,
        Some("RestingLimitOrder") => OrderKindFilter::Resting,
        Some("ConditionalOrder") => OrderKindFilter::Trigger,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid orderType: {other} (expected RestingLimitOrder or ConditionalOrder)"
            )));
        }
    };
    let market_id: MarketId = state.config.markets[index].id;
    // The views drop the orders before the answer arrives: keep what they were.
    let before = state.dispatch.views.open_orders(user, Some(market_id));
    let command = Command::MassCancel(MassCancel {
        user_id: user,
        market_id,
        side: SideFilter::Both.into(),
        kinds: kinds.into(),
        reserved: Reserved::ZERO,
    });
    let mut cancelled = Vec::new();
    for event in state.execute(command).await? {
        match event {
            Event::OrderRejected(rejected) => return Err(reject_error(rejected.reason)),
            Event::OrderCanceled(canceled) if canceled.user_id == user => {
                let order =
                    before.iter().find(|o| o.order_id == canceled.order_id).copied().or_else(|| {
                        state.dispatch.views.history().closed_order(user, canceled.order_id).map(|c| c.order)
                    });
                if let Some(mut order) = order {
                    order.filled_lots = canceled.filled_lots.get();
                    cancelled.push(state.order_json(&order, "Cancelled"));
                }
            }
            _ => {}
        }
    }
    ok(Value::Array(cancelled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_prefix_repeats_the_instruction() {
        let orders = batch_params(br#"[{"symbol":"A","price":"1.0"},{"side":"Bid","b":2}]"#).unwrap();
        assert_eq!(
            batch_signing_prefix(&orders),
            "instruction=orderExecute&price=1.0&symbol=A&instruction=orderExecute&b=2&side=Bid"
        );
        assert!(batch_params(b"[]").is_err());
        assert!(batch_params(b"{}").is_err());
        assert!(batch_params(b"[1]").is_err());
        assert!(batch_params(b"[[]]").is_err());
        let too_many = format!("[{}]", vec!["{}"; BATCH_ORDERS_MAX + 1].join(","));
        assert!(batch_params(too_many.as_bytes()).is_err());
    }
}
