//! Backpack compatibility of the REST API, in-process (a real engine on its own thread behind the
//! rings, a `RestGateway` dispatcher, requests signed with ed25519-dalek as Backpack clients sign
//! them): `GET /api/v1/assets` in Backpack's shape; `orderId` and `clientId` together refused on
//! a query and a cancel (and the order neither names left alone); a request without credentials
//! is `401` whatever its body; the history lists send Backpack's pagination headers and check
//! `marketType`; and the OpenAPI document says what the server does (`/api/v1/time` is JSON,
//! every endpoint that can answer 400 lists it, order history's `from` / `to`, enums, minimum
//! lengths, a non-empty batch).

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use engine::EngineConfig;
use gateway_json::public_router;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

mod support;

use support::{Harness, auth_headers, now_ms, params_of};

/// Users 1 and 2, each with 1 BTC and 10,000 USDC, registered with their keys.
fn harness() -> Harness {
    Harness::start(EngineConfig::sample(), 2)
}

/// The signing headers of `user` for `instruction` with `params`, stamped now (window 5000).
fn signed_headers(user: u64, instruction: &str, params: &str) -> Vec<(&'static str, String)> {
    let ts = now_ms();
    let signed = format!("instruction={instruction}{params}&timestamp={ts}&window=5000");
    auth_headers(user, &signed, ts, 5000)
}

async fn send(
    router: &Router,
    method: Method,
    uri: &str,
    body: &str,
    headers: &[(&str, String)],
) -> (StatusCode, HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = router.clone().oneshot(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
    let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (status, headers, value)
}

/// A signed request with a JSON object body.
async fn body_call(router: &Router, method: Method, path: &str, instruction: &str, body: Value) -> (StatusCode, Value) {
    let headers = signed_headers(1, instruction, &params_of(&body));
    let (status, _, value) = send(router, method, path, &body.to_string(), &headers).await;
    (status, value)
}

/// A signed GET with the query given as a JSON object of strings.
async fn get_call(router: &Router, path: &str, instruction: &str, query: Value) -> (StatusCode, HeaderMap, Value) {
    let text: Vec<String> =
        query.as_object().unwrap().iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap())).collect();
    let uri = if text.is_empty() { path.to_string() } else { format!("{path}?{}", text.join("&")) };
    send(router, Method::GET, &uri, "", &signed_headers(1, instruction, &params_of(&query))).await
}

async fn place(router: &Router, price: &str, client_id: u32) -> String {
    let body = json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": price,
                      "quantity": "0.00100", "clientId": client_id});
    let (status, order) = body_call(router, Method::POST, "/api/v1/order", "orderExecute", body).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    order["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn assets_are_served_in_backpacks_shape() {
    let config = Arc::new(EngineConfig::sample());
    let router = public_router(Arc::new(marketdata::MarketView::new(&config)), config);
    let (status, headers, assets) = send(&router, Method::GET, "/api/v1/assets", "", &[]).await;
    assert_eq!(status, StatusCode::OK, "{assets}");
    assert_eq!(headers["content-type"], "application/json");
    let symbols: Vec<&str> = assets.as_array().unwrap().iter().map(|a| a["symbol"].as_str().unwrap()).collect();
    assert_eq!(symbols, ["BTC", "USDC", "ETH", "SOL"]);
    let usdc = &assets[1];
    assert_eq!(usdc["displayName"], "USDC");
    assert!(usdc["coingeckoId"].is_null());
    let tokens = usdc["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    let token = &tokens[0];
    // bpx-api-types' Token: every field it requires, decimals as strings.
    assert_eq!(token["blockchain"], "Internal");
    assert_eq!((token["depositEnabled"].as_bool(), token["withdrawEnabled"].as_bool()), (Some(false), Some(true)));
    assert_eq!(token["minimumWithdrawal"], "0.000001", "one minor unit of a 6-decimal asset");
    assert_eq!(token["maximumWithdrawal"], "18446744073709.551615");
    assert_eq!((token["minimumDeposit"].as_str(), token["withdrawalFee"].as_str()), (Some("0"), Some("0")));
    assert!(token["displayName"].is_string() && token["contractAddress"].is_string(), "{token}");
}

#[tokio::test]
async fn order_id_and_client_id_together_are_refused() {
    let h = harness();
    let r = &h.router;
    let first = place(r, "100.0", 7).await;
    let second = place(r, "101.0", 8).await;
    // Both references, naming different orders: neither may be guessed at.
    let both = json!({"symbol": "BTC_USDC", "orderId": first, "clientId": 8});
    let (status, answer) = body_call(r, Method::DELETE, "/api/v1/order", "orderCancel", both).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_CLIENT_REQUEST")),
        "{answer}"
    );
    let query = json!({"symbol": "BTC_USDC", "orderId": first, "clientId": "8"});
    let (status, _, answer) = get_call(r, "/api/v1/order", "orderQuery", query).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_CLIENT_REQUEST")),
        "{answer}"
    );
    // Nothing was cancelled; each reference alone still works.
    let (_, _, open) = get_call(r, "/api/v1/orders", "orderQueryAll", json!({})).await;
    assert_eq!(open.as_array().unwrap().len(), 2, "{open}");
    let (status, _, order) =
        get_call(r, "/api/v1/order", "orderQuery", json!({"symbol": "BTC_USDC", "clientId": "8"})).await;
    assert_eq!((status, order["id"].as_str()), (StatusCode::OK, Some(&*second)), "{order}");
}

#[tokio::test]
async fn authentication_comes_before_the_body() {
    let h = harness();
    let r = &h.router;
    let cases = [
        (Method::POST, "/api/v1/order", "{"),
        (Method::DELETE, "/api/v1/order", "[1]"),
        (Method::POST, "/api/v1/orders", "[]"),
        (Method::POST, "/api/v1/orders", "{"),
        (Method::DELETE, "/api/v1/orders", "nul"),
        (Method::POST, "/wapi/v1/capital/withdrawals", "\"x\""),
    ];
    for (method, path, body) in cases {
        let (status, _, answer) = send(r, method.clone(), path, body, &[]).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("UNAUTHORIZED")),
            "{method} {path} {body}: {answer}"
        );
    }
    // With credentials the body is parsed first (the signature covers its parameters): 400.
    let headers = signed_headers(1, "orderExecute", "");
    let (status, _, answer) = send(r, Method::POST, "/api/v1/order", "{", &headers).await;
    assert_eq!((status, answer["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_CLIENT_REQUEST")));
}

#[tokio::test]
async fn history_lists_send_pagination_headers_and_check_market_type() {
    let h = harness();
    let r = &h.router;
    for (index, price) in ["100.0", "101.0", "102.0", "103.0", "104.0"].iter().enumerate() {
        place(r, price, index as u32 + 1).await;
    }
    let header = |headers: &HeaderMap, name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    let (status, headers, orders) =
        get_call(r, "/wapi/v1/history/orders", "orderHistoryQueryAll", json!({"limit": "2", "offset": "2"})).await;
    assert_eq!(status, StatusCode::OK, "{orders}");
    assert_eq!(orders.as_array().unwrap().len(), 2);
    let pages: Vec<Option<String>> =
        ["x-total", "x-page-count", "x-current-page", "x-page-size"].iter().map(|n| header(&headers, n)).collect();
    assert_eq!(pages, [Some("5".into()), Some("3".into()), Some("2".into()), Some("2".into())]);
    for path in ["/wapi/v1/history/fills", "/wapi/v1/capital/deposits", "/wapi/v1/capital/withdrawals"] {
        let instruction = match path {
            "/wapi/v1/history/fills" => "fillHistoryQueryAll",
            "/wapi/v1/capital/deposits" => "depositQueryAll",
            _ => "withdrawalQueryAll",
        };
        let (status, headers, list) = get_call(r, path, instruction, json!({})).await;
        assert_eq!((status, list.clone()), (StatusCode::OK, json!([])), "{path}");
        assert_eq!(
            (header(&headers, "x-total"), header(&headers, "x-page-count")),
            (Some("0".into()), Some("0".into()))
        );
        assert_eq!(header(&headers, "x-page-size"), Some("100".into()), "{path}");
    }
    // `marketType`: another of Backpack's types matches nothing here; an unknown one is 400.
    let (status, headers, list) =
        get_call(r, "/wapi/v1/history/orders", "orderHistoryQueryAll", json!({"marketType": "PERP"})).await;
    assert_eq!((status, list, header(&headers, "x-total")), (StatusCode::OK, json!([]), Some("0".into())));
    let (status, _, list) =
        get_call(r, "/wapi/v1/history/orders", "orderHistoryQueryAll", json!({"marketType": "SPOT"})).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (StatusCode::OK, Some(5)));
    for path in ["/wapi/v1/history/orders", "/wapi/v1/history/fills"] {
        let instruction = if path.ends_with("orders") { "orderHistoryQueryAll" } else { "fillHistoryQueryAll" };
        let (status, _, answer) = get_call(r, path, instruction, json!({"marketType": "FUTURES"})).await;
        assert_eq!((status, answer["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_CLIENT_REQUEST")));
    }
}

#[test]
fn openapi_document_matches_the_server() {
    let document: Value = serde_json::from_str(gateway_json::openapi::document_json()).unwrap();
    let paths = document["paths"].as_object().unwrap();
    let schemas = &document["components"]["schemas"];
    // `/api/v1/time` answers a JSON number.
    let time = &paths["/api/v1/time"]["get"]["responses"]["200"]["content"];
    assert!(time.get("application/json").is_some(), "{time}");
    assert!(paths.contains_key("/api/v1/assets"));
    // Every operation that takes parameters or a body can answer 400, and says so.
    let mut unlisted = Vec::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let takes_input = operation.get("requestBody").is_some()
                || operation["parameters"].as_array().is_some_and(|parameters| !parameters.is_empty());
            if takes_input && operation["responses"].get("400").is_none() {
                unlisted.push(format!("{method} {path}"));
            }
        }
    }
    assert!(unlisted.is_empty(), "operations that can answer 400 but do not list it: {unlisted:?}");
    // Order history filters by creation time.
    let parameters = paths["/wapi/v1/history/orders"]["get"]["parameters"].as_array().unwrap();
    let names: Vec<&str> = parameters.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"from") && names.contains(&"to"), "{names:?}");
    // A batch holds 1 to 50 orders.
    let batch = &schemas["ExecuteOrdersRequest"];
    assert_eq!((batch["minItems"].as_u64(), batch["maxItems"].as_u64()), (Some(1), Some(50)), "{batch}");
    assert_eq!(
        paths["/api/v1/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ExecuteOrdersRequest"
    );
    // Enums the server enforces.
    let order = &schemas["ExecuteOrderRequest"]["properties"];
    assert_eq!(order["side"]["$ref"], "#/components/schemas/SideName", "{order}");
    assert_eq!(schemas["SideName"]["enum"], json!(["Bid", "Ask"]));
    assert_eq!(schemas["TimeInForceName"]["enum"], json!(["GTC", "IOC", "FOK"]));
    assert_eq!(schemas["SortDirection"]["enum"], json!(["Asc", "Desc"]));
    assert_eq!(schemas["BatchError"]["properties"]["operation"]["$ref"], "#/components/schemas/BatchErr");
    // Minimum lengths the server enforces.
    let credentials = &schemas["Credentials"]["properties"];
    assert_eq!(
        (credentials["username"]["minLength"].as_u64(), credentials["password"]["minLength"].as_u64()),
        (Some(3), Some(8))
    );
    assert_eq!(schemas["WithdrawalRequest"]["properties"]["address"]["minLength"], 1);
}
