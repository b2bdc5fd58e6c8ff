//! Trigger orders and price bands over the signed REST API, end to end in-process (a real engine
//! thread behind the ingress and egress rings, the `RestGateway` dispatcher, `private_router`):
//! a band rejection answers `{code, message}`; a `triggerPrice` order answers `TriggerPending`,
//! is listed as such, fires when a trade reaches it, can be cancelled, and one that cannot be
//! placed when it fires ends `TriggerFailed` in the order history. Attached stop-loss /
//! take-profit create their children as the order fills.

use axum::Router;
use axum::http::{Method, StatusCode};
use engine::{EngineConfig, PriceBand};
use serde_json::{Value, json};

mod support;

use support::{Harness, auth_headers, now_ms, params_of, send};

/// Users 1..=3 with 1 BTC and 10,000 USDC each; BTC_USDC has a ±10% band.
fn harness() -> Harness {
    let mut config = EngineConfig::sample();
    config.limits.orders_per_market_max = 4096;
    config.markets[0].price_band = PriceBand { max_multiplier_ppm: 1_100_000, min_multiplier_ppm: 900_000 };
    Harness::start(config, 3)
}

async fn body_call(router: &Router, method: Method, user: u64, instruction: &str, body: Value) -> (StatusCode, Value) {
    let ts = now_ms();
    let signed = format!("instruction={instruction}{}&timestamp={ts}&window=5000", params_of(&body));
    send(router, method, "/api/v1/order", &body.to_string(), &auth_headers(user, &signed, ts, 5000)).await
}

async fn get_call(router: &Router, path: &str, user: u64, instruction: &str, query: &str) -> (StatusCode, Value) {
    let ts = now_ms();
    let params: Vec<&str> = if query.is_empty() { vec![] } else { query.split('&').collect() };
    let mut sorted = params.clone();
    sorted.sort_unstable();
    let signed_params: String = sorted.iter().map(|p| format!("&{p}")).collect();
    let signed = format!("instruction={instruction}{signed_params}&timestamp={ts}&window=5000");
    let uri = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
    send(router, Method::GET, &uri, "", &auth_headers(user, &signed, ts, 5000)).await
}

async fn place(router: &Router, user: u64, body: Value) -> (StatusCode, Value) {
    body_call(router, Method::POST, user, "orderExecute", body).await
}

/// A trade of 0.001 BTC at `price` between users 2 (resting ask) and 3 (IOC bid).
async fn trade_at(router: &Router, price: &str) {
    let (status, body) = place(
        router,
        2,
        json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Limit", "price": price, "quantity": "0.00100"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = place(
        router,
        3,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": price, "quantity": "0.00100",
               "timeInForce": "IOC"}),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("Filled")), "{body}");
}

#[tokio::test]
async fn a_limit_price_outside_the_band_is_a_400_with_a_reason() {
    let h = harness();
    let r = &h.router;
    trade_at(r, "64000.0").await;
    let (status, body) = place(
        r,
        1,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "80000.0", "quantity": "0.00100"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"code": "INVALID_ORDER", "message": "Price is outside the market's price band"}));
    let (status, _) = place(
        r,
        1,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "70000.0", "quantity": "0.00100"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_trigger_order_is_pending_then_fires_or_is_cancelled() {
    let h = harness();
    let r = &h.router;
    trade_at(r, "64000.0").await;
    // A stop-loss: sell 0.001 BTC at market if the price falls to 63,000.
    let (status, stop) = place(
        r,
        1,
        json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Market", "triggerPrice": "63000.0",
               "triggerQuantity": "0.00100", "triggerBy": "LastPrice"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stop}");
    assert_eq!(stop["status"], "TriggerPending");
    assert_eq!(stop["triggerPrice"], "63000.0");
    assert_eq!(stop["quantity"], "0.00100");
    let (status, open) = get_call(r, "/api/v1/orders", 1, "orderQueryAll", "symbol=BTC_USDC").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(open[0]["status"], "TriggerPending", "{open}");
    // Nothing reserved while pending.
    let (_, capital) = get_call(r, "/api/v1/capital", 1, "balanceQuery", "").await;
    assert_eq!(capital["BTC"]["locked"], "0");

    // A cancellable second one.
    let (_, second) = place(
        r,
        1,
        json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Limit", "price": "60000.0", "quantity": "0.00100",
               "triggerPrice": "62000.0"}),
    )
    .await;
    assert_eq!(second["status"], "TriggerPending");
    let (status, cancelled) = body_call(
        r,
        Method::DELETE,
        1,
        "orderCancel",
        json!({"symbol": "BTC_USDC", "orderId": second["id"].as_str().unwrap()}),
    )
    .await;
    assert_eq!((status, cancelled["status"].as_str()), (StatusCode::OK, Some("Cancelled")), "{cancelled}");

    // Liquidity below, then a trade at 63,000 fires the stop, which sells into it.
    let (status, _) = place(
        r,
        3,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "62500.0", "quantity": "0.00100"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    trade_at(r, "63000.0").await;
    let (status, open) = get_call(r, "/api/v1/orders", 1, "orderQueryAll", "symbol=BTC_USDC").await;
    assert_eq!((status, open), (StatusCode::OK, json!([])), "the stop filled");
    let (_, capital) = get_call(r, "/api/v1/capital", 1, "balanceQuery", "").await;
    assert_eq!(capital["BTC"]["available"], "0.999", "{capital}");
}

#[tokio::test]
async fn a_trigger_that_cannot_be_placed_ends_trigger_failed() {
    let h = harness();
    let r = &h.router;
    trade_at(r, "64000.0").await;
    // User 1 holds 1 BTC: a stop selling 2 BTC is accepted (nothing is reserved) but fails.
    let (status, stop) = place(
        r,
        1,
        json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Market", "quantity": "2", "triggerPrice": "63000.0"}),
    )
    .await;
    assert_eq!((status, stop["status"].as_str()), (StatusCode::OK, Some("TriggerPending")), "{stop}");
    trade_at(r, "63000.0").await;
    let (status, history) = get_call(r, "/wapi/v1/history/orders", 1, "orderHistoryQueryAll", "").await;
    assert_eq!(status, StatusCode::OK);
    let failed = history.as_array().unwrap().iter().find(|o| o["id"] == stop["id"]).cloned().unwrap_or_default();
    assert_eq!(failed["status"], "TriggerFailed", "{history}");
}

/// A limit buy with attached stop-loss (market) and take-profit (limit): the answer echoes them;
/// its fills create, then grow, the two sell children, listed as `TriggerPending` orders; a
/// cancel of the parent leaves them; when the take-profit fires the stop-loss is cancelled (one
/// cancels the other).
#[tokio::test]
async fn attached_stop_loss_and_take_profit_follow_the_fill() {
    let h = harness();
    let r = &h.router;
    trade_at(r, "64000.0").await;
    let (status, parent) = place(
        r,
        1,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "64000.0", "quantity": "0.00300",
               "stopLossTriggerPrice": "62000.0", "takeProfitTriggerPrice": "66000.0",
               "takeProfitLimitPrice": "65900.0"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{parent}");
    assert_eq!(parent["status"], "New");
    assert_eq!(parent["stopLossTriggerPrice"], "62000.0");
    assert_eq!(parent["takeProfitTriggerPrice"], "66000.0");
    assert_eq!(parent["takeProfitLimitPrice"], "65900.0");
    assert!(parent.get("stopLossLimitPrice").is_none(), "{parent}");
    // A stop-loss above a buy's price is refused.
    let (status, body) = place(
        r,
        1,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "64000.0", "quantity": "0.00100",
               "stopLossTriggerPrice": "65000.0"}),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_ORDER")), "{body}");

    // Each fill of 0.001 creates, then grows, one pair of sell children by the filled quantity.
    for quantity in ["0.00100", "0.00200"] {
        let (status, _) = place(
            r,
            2,
            json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Limit", "price": "64000.0",
                   "quantity": "0.00100", "timeInForce": "IOC"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (_, open) = get_call(r, "/api/v1/orders", 1, "orderQueryAll", "symbol=BTC_USDC").await;
        let children: Vec<&Value> =
            open.as_array().unwrap().iter().filter(|o| o["status"] == "TriggerPending").collect();
        assert_eq!(children.len(), 2, "{open}");
        assert!(children.iter().all(|c| c["side"] == "Ask" && c["quantity"] == quantity), "{open}");
        let mut triggers: Vec<&str> = children.iter().map(|c| c["triggerPrice"].as_str().unwrap()).collect();
        triggers.sort_unstable();
        assert_eq!(triggers, ["62000.0", "66000.0"]);
    }

    // Cancel the parent: the children stay. A bid for the take-profit to sell into, then a trade
    // at 66,000 fires it and cancels the stop-loss.
    let (status, _) =
        body_call(r, Method::DELETE, 1, "orderCancel", json!({"symbol": "BTC_USDC", "orderId": parent["id"]})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, open) = get_call(r, "/api/v1/orders", 1, "orderQueryAll", "symbol=BTC_USDC").await;
    assert_eq!(open.as_array().unwrap().len(), 2, "{open}");
    let (status, _) = place(
        r,
        3,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "65950.0", "quantity": "0.00200"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    trade_at(r, "66000.0").await;
    let (_, open) = get_call(r, "/api/v1/orders", 1, "orderQueryAll", "symbol=BTC_USDC").await;
    assert_eq!(open, json!([]), "the take-profit filled and the stop-loss was cancelled");
    let (_, capital) = get_call(r, "/api/v1/capital", 1, "balanceQuery", "").await;
    assert_eq!(capital["BTC"]["available"], "1", "{capital}");
}

/// `DELETE /api/v1/orders` with `orderType`: `RestingLimitOrder` cancels only the resting order,
/// `ConditionalOrder` only the pending trigger, no `orderType` both; each answers what it
/// cancelled and the other kind stays open.
#[tokio::test]
async fn cancel_all_filters_resting_and_conditional_orders() {
    let h = harness();
    let r = &h.router;
    trade_at(r, "64000.0").await;
    let open_one_of_each = || async {
        let (status, resting) = place(
            r,
            1,
            json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "60000.0", "quantity": "0.00100"}),
        )
        .await;
        assert_eq!((status, resting["status"].as_str()), (StatusCode::OK, Some("New")), "{resting}");
        let (status, trigger) = place(
            r,
            1,
            json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Market", "quantity": "0.00100",
                   "triggerPrice": "63000.0"}),
        )
        .await;
        assert_eq!((status, trigger["status"].as_str()), (StatusCode::OK, Some("TriggerPending")), "{trigger}");
        (resting["id"].clone(), trigger["id"].clone())
    };
    let cancel_all = |body: Value| async move {
        let (status, cancelled) = cancel_all_raw(r, body).await;
        assert_eq!(status, StatusCode::OK, "{cancelled}");
        let ids: Vec<Value> = cancelled.as_array().unwrap().iter().map(|o| o["id"].clone()).collect();
        assert!(cancelled.as_array().unwrap().iter().all(|o| o["status"] == "Cancelled"), "{cancelled}");
        ids
    };
    let open_ids = || async {
        let (status, open) = get_call(r, "/api/v1/orders", 1, "orderQueryAll", "symbol=BTC_USDC").await;
        assert_eq!(status, StatusCode::OK);
        open.as_array().unwrap().iter().map(|o| o["id"].clone()).collect::<Vec<_>>()
    };

    let (resting, trigger) = open_one_of_each().await;
    assert_eq!(cancel_all(json!({"symbol": "BTC_USDC", "orderType": "ConditionalOrder"})).await, vec![trigger]);
    assert_eq!(open_ids().await, vec![resting.clone()], "the resting order stays");
    assert_eq!(cancel_all(json!({"symbol": "BTC_USDC", "orderType": "RestingLimitOrder"})).await, [resting]);
    assert!(open_ids().await.is_empty());

    let (resting, trigger) = open_one_of_each().await;
    assert_eq!(cancel_all(json!({"symbol": "BTC_USDC", "orderType": "RestingLimitOrder"})).await, [resting]);
    assert_eq!(open_ids().await, [trigger], "the pending trigger stays");
    let (status, _) = cancel_all_raw(r, json!({"symbol": "BTC_USDC", "orderType": "Stop"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let first_trigger = open_ids().await[0].clone();
    let (resting, trigger) = open_one_of_each().await;
    let mut cancelled = cancel_all(json!({"symbol": "BTC_USDC"})).await;
    cancelled.sort_by_key(|id| id.as_str().unwrap_or_default().parse::<u64>().unwrap_or_default());
    let mut expected = vec![first_trigger, resting, trigger];
    expected.sort_by_key(|id| id.as_str().unwrap_or_default().parse::<u64>().unwrap_or_default());
    assert_eq!(cancelled, expected, "no orderType: both kinds");
    assert!(open_ids().await.is_empty());
}

/// Sends a signed `DELETE /api/v1/orders` for user 1.
async fn cancel_all_raw(router: &Router, body: Value) -> (StatusCode, Value) {
    let ts = now_ms();
    let signed = format!("instruction=orderCancelAll{}&timestamp={ts}&window=5000", params_of(&body));
    send(router, Method::DELETE, "/api/v1/orders", &body.to_string(), &auth_headers(1, &signed, ts, 5000)).await
}

#[tokio::test]
async fn malformed_trigger_fields_are_a_400_with_code_and_message() {
    let h = harness();
    let r = &h.router;
    trade_at(r, "64000.0").await;
    let base = json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Market", "quantity": "0.00100"});
    for (field, value) in [
        ("triggerPrice", json!("abc")),
        ("triggerPrice", json!("-1")),
        ("triggerPrice", json!("63000.05")),
        ("triggerPrice", json!("1e400")),
        ("triggerQuantity", json!("0.00100")),
        ("stopLossTriggerPrice", json!("not a price")),
    ] {
        let mut body = base.clone();
        body[field] = value.clone();
        let (status, answer) = place(r, 1, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}={value}: {answer}");
        assert!(answer["code"].is_string() && answer["message"].is_string(), "{field}={value}: {answer}");
    }
    // The same order with a well-formed trigger is accepted: the refusals were about the values.
    let (status, _) = place(
        r,
        1,
        json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Market", "quantity": "0.00100", "triggerPrice": "63000.0"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// The parent of an attached stop-loss / take-profit shows Backpack's four fields (and
/// `stopLossTriggerBy` / `takeProfitTriggerBy`) wherever the order is shown, not only in the
/// `POST` answer: `GET /api/v1/order`, `GET /api/v1/orders` (before and after a partial fill),
/// and the order history once it is cancelled. An order without them shows none of the fields.
/// The views are built from the engine's events, so this needs `OrderAccepted` to carry the
/// attachment (schema version 3).
#[tokio::test]
async fn a_parent_order_shows_its_attached_stop_loss_and_take_profit() {
    let h = harness();
    let r = &h.router;
    trade_at(r, "64000.0").await;
    let (status, parent) = place(
        r,
        1,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "64000.0", "quantity": "0.00300",
               "stopLossTriggerPrice": "62000.0", "stopLossLimitPrice": "61900.0",
               "takeProfitTriggerPrice": "66000.0"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{parent}");
    let (status, plain) = place(
        r,
        1,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "63000.0", "quantity": "0.00100"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{plain}");
    let id = parent["id"].as_str().unwrap().to_string();
    let expect_attached = |order: &Value| {
        assert_eq!(order["stopLossTriggerPrice"], "62000.0", "{order}");
        assert_eq!(order["stopLossLimitPrice"], "61900.0", "{order}");
        assert_eq!(order["takeProfitTriggerPrice"], "66000.0", "{order}");
        assert!(order.get("takeProfitLimitPrice").is_none(), "a market take-profit has no limit: {order}");
        assert_eq!(
            (order["stopLossTriggerBy"].as_str(), order["takeProfitTriggerBy"].as_str()),
            (Some("LastPrice"), Some("LastPrice"))
        );
    };
    expect_attached(&parent);
    let (status, one) = get_call(r, "/api/v1/order", 1, "orderQuery", &format!("orderId={id}&symbol=BTC_USDC")).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    expect_attached(&one);

    // A partial fill: the parent is still open and still shows them; its children exist.
    let (status, _) = place(
        r,
        2,
        json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Limit", "price": "64000.0",
               "quantity": "0.00100", "timeInForce": "IOC"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, open) = get_call(r, "/api/v1/orders", 1, "orderQueryAll", "symbol=BTC_USDC").await;
    let open = open.as_array().unwrap();
    let listed = open.iter().find(|o| o["id"] == id.as_str()).expect("parent listed");
    assert_eq!(listed["status"], "PartiallyFilled");
    expect_attached(listed);
    let others: Vec<&Value> = open.iter().filter(|o| o["id"] != id.as_str()).collect();
    assert_eq!(others.len(), 3, "the plain order and two children: {open:?}");
    for other in others {
        for field in ["stopLossTriggerPrice", "stopLossLimitPrice", "takeProfitTriggerPrice", "takeProfitLimitPrice"] {
            assert!(other.get(field).is_none(), "{field} on an order without attachment: {other}");
        }
    }

    // Cancelled, it keeps them in the order history.
    let (status, _) =
        body_call(r, Method::DELETE, 1, "orderCancel", json!({"symbol": "BTC_USDC", "orderId": id})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, history) =
        get_call(r, "/wapi/v1/history/orders", 1, "orderHistoryQueryAll", &format!("orderId={id}")).await;
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
    assert_eq!(history[0]["status"], "Cancelled");
    expect_attached(&history[0]);
}
