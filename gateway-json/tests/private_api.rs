//! The signed REST endpoints end to end in-process: a real `engine::Engine` on its own thread
//! pops the ingress ring and publishes each command's events to the egress ring (the runtime's
//! loop minus the journal), a `RestGateway` dispatcher follows the egress ring, and requests go
//! through `private_router`, signed in the test with ed25519-dalek exactly as Backpack clients
//! do. Covers placing (New / Filled / PartiallyFilled), cancelling, balances and open-order
//! queries; the signature checks (wrong key, tampered body, canonical sorting, expired and
//! future timestamps, oversized window, missing headers); isolation between users; and a table
//! of malformed inputs that must all be 4xx with `{code, message}`.

use axum::Router;
use axum::http::{Method, StatusCode};
use codec::UserId;
use engine::bus::{BroadcastRing, IngressRing};
use engine::{Engine, EngineConfig};
use gateway_binary::Credentials;
use gateway_json::{AccountViews, PrivateState, RestGateway, private_router};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

mod support;

use support::{Harness, auth_headers, now_ms, params_of, secret, send, sign};

/// Users 1..=3, each with 1 BTC and 10,000 USDC, registered with their keys; room for 4096
/// orders per market.
fn harness() -> Harness {
    let mut config = EngineConfig::sample();
    config.limits.orders_per_market_max = 4096;
    Harness::start(config, 3)
}

/// A correctly signed request with a JSON body (POST / DELETE).
async fn body_call(router: &Router, method: Method, user: u64, instruction: &str, body: Value) -> (StatusCode, Value) {
    let ts = now_ms();
    let signed = format!("instruction={instruction}{}&timestamp={ts}&window=5000", params_of(&body));
    send(router, method, "/api/v1/order", &body.to_string(), &auth_headers(user, &signed, ts, 5000)).await
}

/// A correctly signed GET with a query (given as a JSON object of strings).
async fn get_call(router: &Router, path: &str, user: u64, instruction: &str, query: Value) -> (StatusCode, Value) {
    let ts = now_ms();
    let signed = format!("instruction={instruction}{}&timestamp={ts}&window=5000", params_of(&query));
    let query_text: Vec<String> =
        query.as_object().unwrap().iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap())).collect();
    let uri = if query_text.is_empty() { path.to_string() } else { format!("{path}?{}", query_text.join("&")) };
    send(router, Method::GET, &uri, "", &auth_headers(user, &signed, ts, 5000)).await
}

async fn place(router: &Router, user: u64, body: Value) -> (StatusCode, Value) {
    body_call(router, Method::POST, user, "orderExecute", body).await
}

async fn capital(router: &Router, user: u64) -> Value {
    let (status, body) = get_call(router, "/api/v1/capital", user, "balanceQuery", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str, context: &str) {
    assert_eq!(status, expected, "{context}: {body}");
    assert_eq!(body["code"], code, "{context}: {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{context}: {body}");
}

#[tokio::test]
async fn orders_and_balances_lifecycle() {
    let h = harness();
    let r = &h.router;
    let initial = capital(r, 1).await;
    assert_eq!(initial["BTC"], json!({"available": "1", "locked": "0", "staked": "0"}), "seeded from the ledger");
    assert_eq!(initial["USDC"]["available"], "10000");

    // A rests an ask.
    let (status, ask) = place(
        r,
        1,
        json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Limit", "price": "64000.0",
               "quantity": "0.00200", "clientId": 7, "timeInForce": "GTC"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ask}");
    assert_eq!(ask["status"], "New");
    assert_eq!(ask["clientId"], 7);
    assert_eq!(ask["side"], "Ask");
    assert_eq!(ask["orderType"], "Limit");
    assert_eq!(ask["price"], "64000.0");
    assert_eq!(ask["quantity"], "0.00200");
    assert_eq!(ask["executedQuantity"], "0.00000");
    assert_eq!(ask["executedQuoteQuantity"], "0");
    assert_eq!(ask["timeInForce"], "GTC");
    assert_eq!(ask["selfTradePrevention"], "RejectTaker");
    assert_eq!(ask["postOnly"], false);
    assert!(ask["createdAt"].is_u64());
    let ask_id = ask["id"].as_str().expect("id is a string").to_string();

    let a = capital(r, 1).await;
    assert_eq!(a["BTC"], json!({"available": "0.998", "locked": "0.002", "staked": "0"}));

    let (status, listed) = get_call(r, "/api/v1/orders", 1, "orderQueryAll", json!({"symbol": "BTC_USDC"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], ask_id.as_str());

    // B crosses half of it: a taker that fills completely.
    let (status, bid) = place(
        r,
        2,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "64100.0", "quantity": "0.00100"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{bid}");
    assert_eq!(bid["status"], "Filled");
    assert_eq!(bid["executedQuantity"], "0.00100");
    assert_eq!(bid["executedQuoteQuantity"], "64", "at the maker's price");
    assert_eq!(bid["clientId"], Value::Null);

    // A's order is now partially filled.
    let (status, queried) =
        get_call(r, "/api/v1/order", 1, "orderQuery", json!({"symbol": "BTC_USDC", "orderId": ask_id})).await;
    assert_eq!(status, StatusCode::OK, "{queried}");
    assert_eq!(queried["status"], "PartiallyFilled");
    assert_eq!(queried["executedQuantity"], "0.00100");
    assert_eq!(queried["executedQuoteQuantity"], "64");
    let (status, by_client) =
        get_call(r, "/api/v1/order", 1, "orderQuery", json!({"symbol": "BTC_USDC", "clientId": "7"})).await;
    assert_eq!((status, &by_client["id"]), (StatusCode::OK, &json!(ask_id)));

    // Balances after the fill (fees in quote: maker 0.02 % of 64 = 0.0128, taker 0.05 % = 0.032).
    let a = capital(r, 1).await;
    assert_eq!(a["BTC"], json!({"available": "0.998", "locked": "0.001", "staked": "0"}));
    assert_eq!(a["USDC"]["available"], "10063.9872");
    let b = capital(r, 2).await;
    assert_eq!(b["BTC"]["available"], "1.001");
    assert_eq!(b["USDC"], json!({"available": "9935.968", "locked": "0", "staked": "0"}));

    // A taker larger than the book: IOC partially fills then expires; GTC partially fills and rests.
    let (_, rest) = place(
        r,
        1,
        json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Limit", "price": "64000.0", "quantity": "0.00100"}),
    )
    .await;
    assert_eq!(rest["status"], "New");
    let (status, partial) = place(
        r,
        3,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "64000.0", "quantity": "0.00300"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{partial}");
    assert_eq!(partial["status"], "PartiallyFilled");
    assert_eq!(partial["executedQuantity"], "0.00200");
    assert_eq!(partial["executedQuoteQuantity"], "128");
    let (_, listed) = get_call(r, "/api/v1/orders", 1, "orderQueryAll", json!({})).await;
    assert_eq!(listed, json!([]), "both of A's asks are filled");
    let (_, market) =
        place(r, 1, json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Market", "quantity": "0.00500"})).await;
    assert_eq!(market["status"], "Expired", "{market}");
    assert_eq!(market["executedQuantity"], "0.00100");
    assert_eq!(market["price"], Value::Null);

    // C's remaining 0.001 was taken by A's market sell.
    let (status, open) = get_call(r, "/api/v1/orders", 3, "orderQueryAll", json!({"symbol": "BTC_USDC"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(open, json!([]), "C's bid was filled by A's market sell: {open}");

    // Place and cancel, by id and by client id.
    let (_, resting) = place(
        r,
        2,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "60000.0", "quantity": "0.01000", "clientId": 9}),
    )
    .await;
    assert_eq!(capital(r, 2).await["USDC"]["locked"], "600.3", "notional + taker fee");
    let (status, canceled) =
        body_call(r, Method::DELETE, 2, "orderCancel", json!({"symbol": "BTC_USDC", "clientId": 9})).await;
    assert_eq!(status, StatusCode::OK, "{canceled}");
    assert_eq!(canceled["status"], "Cancelled");
    assert_eq!(canceled["id"], resting["id"]);
    assert_eq!(capital(r, 2).await["USDC"]["locked"], "0");
    let (status, body) =
        body_call(r, Method::DELETE, 2, "orderCancel", json!({"symbol": "BTC_USDC", "orderId": resting["id"]})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "second cancel");
    let (status, body) =
        get_call(r, "/api/v1/order", 2, "orderQuery", json!({"symbol": "BTC_USDC", "clientId": "9"})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "query after cancel");

    // Engine rejections map to {code, message}.
    let (status, body) = place(
        r,
        3,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "64000.0", "quantity": "10.00000"}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "INSUFFICIENT_FUNDS", "too expensive");
    let (_, _) = place(
        r,
        3,
        json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Limit", "price": "70000.0", "quantity": "0.00100"}),
    )
    .await;
    let (status, body) = place(
        r,
        2,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "70000.0",
               "quantity": "0.00100", "postOnly": true}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "INVALID_ORDER", "post-only would take");
    let (status, body) = place(
        r,
        2,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "70000.0",
               "quantity": "0.00200", "timeInForce": "FOK"}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "INVALID_ORDER", "fill-or-kill not fillable");
    // A market buy by quote quantity takes C's ask at 70000.0: 35 USDC, taker fee included, buys
    // 0.00049 BTC (34.3 + 0.01715 fee; 0.0005 would cost 35 + fee).
    let (status, bought) =
        place(r, 2, json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Market", "quoteQuantity": "35"})).await;
    assert_eq!(status, StatusCode::OK, "{bought}");
    assert_eq!(bought["executedQuantity"], "0.00049", "{bought}");
    assert_eq!(bought["executedQuoteQuantity"], "34.3");
    assert_eq!(bought["quoteQuantity"], "35");
    assert_eq!(bought["status"], "Filled");
}

/// A gateway whose engine never answers: a full ring is 503, a silent engine 504.
#[tokio::test]
async fn busy_and_silent_engine() {
    let config = EngineConfig::sample();
    let engine = Engine::new(&config).unwrap();
    let credentials = Arc::new(Credentials::default());
    credentials.insert(gateway_binary::client::api_key_of(&secret(1)), UserId::new(1));
    let ingress = Arc::new(IngressRing::new(1));
    let egress = BroadcastRing::new(16);
    let gateway =
        RestGateway::start(Arc::new(AccountViews::from_engine(&engine, &config)), egress.subscribe()).unwrap();
    let state = PrivateState::new(&gateway, credentials, ingress.clone(), Arc::new(config))
        .with_timeout(Duration::from_millis(200));
    let router = private_router(state);
    let order =
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "100.0", "quantity": "0.00100"});
    let (status, body) = place(&router, 1, order.clone()).await;
    assert_error(status, &body, StatusCode::GATEWAY_TIMEOUT, "TIMEOUT", "silent engine");
    assert_eq!(ingress.len(), 1, "the command is still waiting; the ring is now full");
    let (status, body) = place(&router, 1, order).await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", "ring full");
    gateway.shutdown();
}

#[tokio::test]
async fn signature_checks() {
    let h = harness();
    let r = &h.router;
    let body =
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "100.0", "quantity": "0.00100"});
    let text = body.to_string();
    let ts = now_ms();
    let canonical = format!("instruction=orderExecute{}&timestamp={ts}&window=5000", params_of(&body));
    assert_eq!(
        canonical,
        format!(
            "instruction=orderExecute&orderType=Limit&price=100.0&quantity=0.00100&side=Bid&symbol=BTC_USDC\
             &timestamp={ts}&window=5000"
        )
    );
    let post = |body: String, headers: Vec<(&'static str, String)>| async move {
        send(r, Method::POST, "/api/v1/order", &body, &headers).await
    };

    // Valid, with the keys in the body in another order than the signed (sorted) string.
    let reordered = r#"{"symbol":"BTC_USDC","quantity":"0.00100","price":"100.0","orderType":"Limit","side":"Bid"}"#;
    let (status, placed) = post(reordered.into(), auth_headers(1, &canonical, ts, 5000)).await;
    assert_eq!(status, StatusCode::OK, "{placed}");
    // Raw number text is signed as written.
    let raw =
        r#"{"symbol":"BTC_USDC","side":"Bid","orderType":"Limit","price":100.00,"quantity":0.00100,"postOnly":false}"#;
    let signed = format!(
        "instruction=orderExecute&orderType=Limit&postOnly=false&price=100.00&quantity=0.00100&side=Bid\
         &symbol=BTC_USDC&timestamp={ts}&window=5000"
    );
    let (status, placed) = post(raw.into(), auth_headers(1, &signed, ts, 5000)).await;
    assert_eq!(status, StatusCode::OK, "{placed}");
    assert_eq!(placed["price"], "100.0");
    // No X-Window: 5000 is signed.
    let mut headers = auth_headers(1, &canonical, ts, 5000);
    headers.retain(|(name, _)| *name != "x-window");
    assert_eq!(post(text.clone(), headers).await.0, StatusCode::OK);

    let unauthorized = |(status, body): (StatusCode, Value), context: &str| {
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", context);
    };
    // Signed by another key than the one named.
    let mut wrong = auth_headers(1, &canonical, ts, 5000);
    wrong[1].1 = sign(2, &canonical);
    unauthorized(post(text.clone(), wrong).await, "wrong key");
    // Unknown key.
    let mut unknown = auth_headers(9, &canonical, ts, 5000);
    unknown[1].1 = sign(9, &canonical);
    unauthorized(post(text.clone(), unknown).await, "unknown key");
    // Tampered body.
    unauthorized(post(text.replace("0.00100", "0.00200"), auth_headers(1, &canonical, ts, 5000)).await, "tampered");
    // Signed with the window it did not send.
    let mut other_window = auth_headers(1, &canonical, ts, 5000);
    other_window[3].1 = "6000".into();
    unauthorized(post(text.clone(), other_window).await, "window not as signed");
    // Expired and future timestamps (each correctly signed).
    for (timestamp, window, context) in [
        (ts - 6_000, 5_000, "expired"),
        (ts - 70_000, 60_000, "expired at the largest window"),
        (ts + 6_000, 5_000, "too far in the future"),
    ] {
        let signed = format!("instruction=orderExecute{}&timestamp={timestamp}&window={window}", params_of(&body));
        unauthorized(post(text.clone(), auth_headers(1, &signed, timestamp, window)).await, context);
    }
    let old_but_in_window = ts - 20_000;
    let signed = format!("instruction=orderExecute{}&timestamp={old_but_in_window}&window=60000", params_of(&body));
    assert_eq!(post(text.clone(), auth_headers(1, &signed, old_but_in_window, 60_000)).await.0, StatusCode::OK);
    let signed = format!("instruction=orderExecute{}&timestamp={ts}&window=60001", params_of(&body));
    unauthorized(post(text.clone(), auth_headers(1, &signed, ts, 60_001)).await, "window above 60000");
    // Wrong instruction.
    let signed = format!("instruction=orderCancel{}&timestamp={ts}&window=5000", params_of(&body));
    unauthorized(post(text.clone(), auth_headers(1, &signed, ts, 5000)).await, "wrong instruction");
    // Missing or malformed headers.
    for missing in ["x-api-key", "x-signature", "x-timestamp"] {
        let mut headers = auth_headers(1, &canonical, ts, 5000);
        headers.retain(|(name, _)| *name != missing);
        unauthorized(post(text.clone(), headers).await, missing);
    }
    for (index, value) in [(0, "not base64!"), (0, "AAAA"), (1, "AAAA"), (2, "12x"), (2, "-5"), (3, "five")] {
        let mut headers = auth_headers(1, &canonical, ts, 5000);
        headers[index].1 = value.into();
        unauthorized(post(text.clone(), headers).await, value);
    }
    // GETs: query parameters are signed, sorted.
    let ts = now_ms();
    let signed = format!("instruction=orderQueryAll&symbol=BTC_USDC&timestamp={ts}&window=5000");
    let (status, _) =
        send(r, Method::GET, "/api/v1/orders?symbol=BTC_USDC", "", &auth_headers(1, &signed, ts, 5000)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) =
        send(r, Method::GET, "/api/v1/orders?symbol=ETH_USDC", "", &auth_headers(1, &signed, ts, 5000)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "query tampered");
    let (status, body) = send(r, Method::GET, "/api/v1/capital", "", &[]).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "capital unsigned");
}

#[tokio::test]
async fn users_are_isolated() {
    let h = harness();
    let r = &h.router;
    let (_, order) = place(
        r,
        1,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "50000.0", "quantity": "0.00100", "clientId": 5}),
    )
    .await;
    let id = order["id"].as_str().unwrap().to_string();
    for (status, body) in [
        body_call(r, Method::DELETE, 2, "orderCancel", json!({"symbol": "BTC_USDC", "orderId": id})).await,
        body_call(r, Method::DELETE, 2, "orderCancel", json!({"symbol": "BTC_USDC", "clientId": 5})).await,
        get_call(r, "/api/v1/order", 2, "orderQuery", json!({"symbol": "BTC_USDC", "orderId": id})).await,
        get_call(r, "/api/v1/order", 2, "orderQuery", json!({"symbol": "BTC_USDC", "clientId": "5"})).await,
    ] {
        assert_error(status, &body, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "another user's order");
    }
    let (_, listed) = get_call(r, "/api/v1/orders", 2, "orderQueryAll", json!({})).await;
    assert_eq!(listed, json!([]));
    // B's balances are B's only: A's lock does not show.
    let b = capital(r, 2).await;
    assert_eq!(b["USDC"], json!({"available": "10000", "locked": "0", "staked": "0"}));
    assert_eq!(capital(r, 1).await["USDC"]["locked"], "50.025");
    // A's order is intact.
    let (status, still) =
        get_call(r, "/api/v1/order", 1, "orderQuery", json!({"symbol": "BTC_USDC", "orderId": id})).await;
    assert_eq!((status, &still["status"]), (StatusCode::OK, &json!("New")));
    // Same order id on the wrong market: not found.
    let (status, body) =
        get_call(r, "/api/v1/order", 1, "orderQuery", json!({"symbol": "ETH_USDC", "orderId": id})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "wrong market");
}

#[tokio::test]
async fn malformed_input_is_a_client_error() {
    let h = harness();
    let r = &h.router;
    let base =
        || json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "100.0", "quantity": "0.00100"});
    let with = |key: &str, value: Value| {
        let mut body = base();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = base();
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("unknown symbol", with("symbol", json!("DOGE_USDC")), "INVALID_CLIENT_REQUEST"),
        ("lowercase symbol", with("symbol", json!("btc_usdc")), "INVALID_CLIENT_REQUEST"),
        ("missing symbol", without("symbol"), "INVALID_CLIENT_REQUEST"),
        ("missing side", without("side"), "INVALID_CLIENT_REQUEST"),
        ("bad side", with("side", json!("Buy")), "INVALID_CLIENT_REQUEST"),
        ("bad order type", with("orderType", json!("StopLimit")), "INVALID_CLIENT_REQUEST"),
        ("bad time in force", with("timeInForce", json!("GTD")), "INVALID_CLIENT_REQUEST"),
        ("bad stp", with("selfTradePrevention", json!("Never")), "INVALID_CLIENT_REQUEST"),
        ("bad post only", with("postOnly", json!("yes")), "INVALID_CLIENT_REQUEST"),
        ("negative client id", with("clientId", json!(-1)), "INVALID_CLIENT_REQUEST"),
        ("huge client id", with("clientId", json!(4_294_967_296u64)), "INVALID_CLIENT_REQUEST"),
        ("off-tick price", with("price", json!("100.05")), "INVALID_ORDER"),
        ("off-tick price within scale", with("price", json!("100.000001")), "INVALID_ORDER"),
        ("negative price", with("price", json!("-100.0")), "INVALID_ORDER"),
        ("zero price", with("price", json!("0")), "INVALID_ORDER"),
        ("exponent price", with("price", json!("1e3")), "INVALID_ORDER"),
        ("off-step quantity", with("quantity", json!("0.000015")), "INVALID_ORDER"),
        ("zero quantity", with("quantity", json!("0")), "INVALID_ORDER"),
        ("negative quantity", with("quantity", json!("-0.001")), "INVALID_ORDER"),
        ("huge quantity", with("quantity", json!("99999999999999999999")), "INVALID_ORDER"),
        ("quantity above maximum", with("quantity", json!("100000.00000")), "INVALID_ORDER"),
        ("empty quantity", with("quantity", json!("")), "INVALID_ORDER"),
        ("missing price", without("price"), "INVALID_ORDER"),
        ("limit with quote quantity", with("quoteQuantity", json!("10")), "INVALID_ORDER"),
        ("market with price", with("orderType", json!("Market")), "INVALID_ORDER"),
    ];
    for (context, body, code) in cases {
        let (status, answer) = place(r, 1, body).await;
        assert!(status.is_client_error(), "{context}: {status} {answer}");
        assert_eq!(answer["code"], code, "{context}: {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{context}: {answer}");
    }
    let (status, answer) = place(r, 1, with("price", json!("100.05"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["message"].as_str().unwrap().contains("tick size 0.1"), "{answer}");

    // Bodies that are not JSON objects (signed over no parameters).
    for body in ["{", "[1,2]", "\"x\"", "{\"symbol\": }", "nul"] {
        let ts = now_ms();
        let signed = format!("instruction=orderExecute&timestamp={ts}&window=5000");
        let (status, answer) = send(r, Method::POST, "/api/v1/order", body, &auth_headers(1, &signed, ts, 5000)).await;
        assert!(status.is_client_error(), "{body}: {status}");
        assert!(answer["code"].is_string(), "{body}: {answer}");
    }
    // Cancel and query without an order reference, or with a bad one.
    let (status, answer) = body_call(r, Method::DELETE, 1, "orderCancel", json!({"symbol": "BTC_USDC"})).await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "INVALID_CLIENT_REQUEST", "cancel without id");
    let (status, answer) =
        body_call(r, Method::DELETE, 1, "orderCancel", json!({"symbol": "BTC_USDC", "orderId": "abc"})).await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "INVALID_CLIENT_REQUEST", "cancel with bad id");
    let (status, answer) = get_call(r, "/api/v1/order", 1, "orderQuery", json!({"symbol": "BTC_USDC"})).await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "INVALID_CLIENT_REQUEST", "query without id");
    let (status, answer) = get_call(r, "/api/v1/orders", 1, "orderQueryAll", json!({"symbol": "NOPE"})).await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "INVALID_CLIENT_REQUEST", "list unknown symbol");
    // Nothing was left open by any of this.
    let (_, listed) = get_call(r, "/api/v1/orders", 1, "orderQueryAll", json!({})).await;
    assert_eq!(listed, json!([]));
}
