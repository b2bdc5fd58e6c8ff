//! The batch, cancel-all, history and capital endpoints end to end in-process: a real
//! `engine::Engine` on its own thread behind the ingress and egress rings, a `RestGateway`
//! dispatcher, and requests signed in the test with ed25519-dalek as Backpack clients sign them.
//! Covers `POST /api/v1/orders` (per-order results in order, batch signing with a tampered or
//! reordered order refused), `DELETE /api/v1/orders`, `GET /wapi/v1/history/fills` (camelCase
//! and snake_case filters, paging, sort), `GET /wapi/v1/history/orders`, deposits, withdrawals
//! and the withdrawal request; isolation between users on every one of them; a table of
//! malformed inputs (each a 4xx with `{code, message}`); the 413 / 429 limits; and, with a
//! history store configured, that the store answers all four history lists (filters and page
//! passed on, withdrawal details still from memory) and that its failure is a 503.

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use codec::UserId;
use engine::bus::{BroadcastRing, IngressCommand, IngressRing, origin};
use engine::testkit::commands;
use engine::{CommandContext, Engine, EngineConfig};
use gateway_json::limits::{HttpLimits, IpRateLimiter, KeyRateLimiter, PeerAddr, with_limits};
use gateway_json::{AccountViews, PrivateState, RestGateway, private_router};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

mod support;

use support::{api_key, auth_headers, funded_engine, now_ms, params_of, send, send_request};

/// The engine on its own thread, like `engine::testkit::EngineLoop` but stamping commands with
/// the wall clock (the history's time filters need real times).
struct WallClockEngine {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WallClockEngine {
    fn start(mut engine: Engine, mut sequence: u64, ingress: Arc<IngressRing>, egress: Arc<BroadcastRing>) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut events = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Some(IngressCommand { origin, command, .. }) = ingress.pop() else {
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    };
                    sequence += 1;
                    events.clear();
                    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
                    engine.execute(CommandContext::new(sequence, now_ns as u64), &command, &mut events);
                    egress.publish_command(origin, &events);
                }
            })
        };
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for WallClockEngine {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Harness {
    router: Router,
    ingress: Arc<IngressRing>,
    views: Arc<AccountViews>,
    engine: Option<WallClockEngine>,
    gateway: Option<RestGateway>,
}

impl Harness {
    /// Users 1..=3, each with 1 BTC and 10,000 USDC (credited before the views start, so not
    /// in their deposit history), registered with their keys.
    fn start() -> Self {
        Self::with(|state| state)
    }

    fn with(customise: impl FnOnce(PrivateState) -> PrivateState) -> Self {
        let mut config = EngineConfig::sample();
        config.limits.orders_per_market_max = 4096;
        let (engine, credentials, sequence) = funded_engine(&config, 3);
        let views = Arc::new(AccountViews::from_engine(&engine, &config));
        let ingress = Arc::new(IngressRing::new(256));
        let egress = BroadcastRing::new(1 << 14);
        let gateway = RestGateway::start(views.clone(), egress.subscribe_from(0)).unwrap();
        let engine_loop = WallClockEngine::start(engine, sequence, ingress.clone(), egress.clone());
        let state = customise(PrivateState::new(&gateway, credentials, ingress.clone(), Arc::new(config)));
        Self { router: private_router(state), ingress, views, engine: Some(engine_loop), gateway: Some(gateway) }
    }

    /// An operator command (not REST): waits until the views show its effect on `user`.
    async fn operator(&self, command: codec::Command, user: u64) {
        let before = self.views.balances(UserId::new(user));
        self.ingress.push(IngressCommand::new(origin::tag(origin::INTERNAL, 0), command)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.views.balances(UserId::new(user)) == before {
            assert!(Instant::now() < deadline, "operator command never applied");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        drop(self.engine.take());
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown();
        }
    }
}

/// A signed request with a JSON object body.
async fn body_call(
    router: &Router,
    method: Method,
    path: &str,
    user: u64,
    instruction: &str,
    body: Value,
) -> (StatusCode, Value) {
    let ts = now_ms();
    let signed = format!("instruction={instruction}{}&timestamp={ts}&window=5000", params_of(&body));
    send(router, method, path, &body.to_string(), &auth_headers(user, &signed, ts, 5000)).await
}

/// The signed string of a batch: `instruction=orderExecute&...` per order.
fn batch_signed(orders: &[Value], timestamp: u64) -> String {
    let parts: Vec<String> = orders.iter().map(|o| format!("instruction=orderExecute{}", params_of(o))).collect();
    format!("{}&timestamp={timestamp}&window=5000", parts.join("&"))
}

async fn batch(router: &Router, user: u64, orders: &[Value]) -> (StatusCode, Value) {
    let ts = now_ms();
    let body = Value::Array(orders.to_vec()).to_string();
    send(router, Method::POST, "/api/v1/orders", &body, &auth_headers(user, &batch_signed(orders, ts), ts, 5000)).await
}

/// A signed GET; `query` is the raw query string (signed parameters as sent, URL-decoded).
async fn get_call(router: &Router, path: &str, user: u64, instruction: &str, query: &str) -> (StatusCode, Value) {
    let ts = now_ms();
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    let mut sorted = pairs.clone();
    sorted.sort();
    let params: String = sorted.iter().map(|(k, v)| format!("&{k}={v}")).collect();
    let signed = format!("instruction={instruction}{params}&timestamp={ts}&window=5000");
    let uri = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
    send(router, Method::GET, &uri, "", &auth_headers(user, &signed, ts, 5000)).await
}

async fn place(router: &Router, user: u64, body: Value) -> Value {
    let (status, order) = body_call(router, Method::POST, "/api/v1/order", user, "orderExecute", body).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    order
}

fn limit(side: &str, price: &str, quantity: &str) -> Value {
    json!({"symbol": "BTC_USDC", "side": side, "orderType": "Limit", "price": price, "quantity": quantity})
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str, context: &str) {
    assert_eq!(status, expected, "{context}: {body}");
    assert_eq!(body["code"], code, "{context}: {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{context}: {body}");
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn batch_orders_execute_in_order_with_per_order_results() {
    let h = Harness::start();
    let r = &h.router;
    let orders = [
        limit("Bid", "50000.0", "0.00100"),
        limit("Bid", "50000.05", "0.00100"), // off the tick grid
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "50001.0",
               "quantity": "0.00200", "clientId": 12, "postOnly": true}),
        json!({"symbol": "NOPE_USDC", "side": "Bid", "orderType": "Limit", "price": "1.0", "quantity": "1"}),
        limit("Ask", "49000.0", "0.00050"), // crosses the best bid: fills against user 1's own bid
    ];
    let (status, results) = batch(r, 1, &orders).await;
    assert_eq!(status, StatusCode::OK, "{results}");
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 5);
    assert_eq!(results[0]["status"], "New");
    assert_eq!(results[0]["price"], "50000.0");
    assert_eq!((&results[1]["code"], &results[1]["operation"]), (&json!("INVALID_ORDER"), &json!("Err")));
    // Backpack tags each result: executed orders `Ok`, refused ones `Err`.
    let tags: Vec<&Value> = results.iter().map(|result| &result["operation"]).collect();
    assert_eq!(tags, [&json!("Ok"), &json!("Err"), &json!("Ok"), &json!("Err"), &json!("Ok")], "{results:?}");
    assert!(results[1]["message"].as_str().unwrap().contains("tick size"), "{}", results[1]);
    assert_eq!(results[2]["status"], "New");
    assert_eq!(results[2]["clientId"], 12);
    assert_eq!(results[3]["code"], "INVALID_CLIENT_REQUEST");
    // The ask would trade with the user's own bid: self-trade prevention (RejectTaker) cancels it.
    assert_eq!(results[4]["status"], "Cancelled", "{}", results[4]);
    assert_eq!(results[4]["executedQuantity"], "0.00000");
    assert!(results[0]["createdAt"].as_u64().unwrap() >= now_ms() - 60_000, "ms since the epoch");
    // Ids grow in the batch's order: the engine executed them in that order.
    let first: u64 = results[0]["id"].as_str().unwrap().parse().unwrap();
    let third: u64 = results[2]["id"].as_str().unwrap().parse().unwrap();
    assert!(first < third);
    let (_, open) = get_call(r, "/api/v1/orders", 1, "orderQueryAll", "symbol=BTC_USDC").await;
    assert_eq!(open.as_array().unwrap().len(), 2, "{open}");

    // Another user's batch trades against them; results say so.
    let (status, results) =
        batch(r, 2, &[limit("Ask", "50001.0", "0.00200"), limit("Ask", "50000.0", "0.00050")]).await;
    assert_eq!(status, StatusCode::OK, "{results}");
    assert_eq!(results[0]["status"], "Filled", "{results}");
    assert_eq!(results[1]["status"], "Filled", "{results}");
    assert_eq!(results[1]["executedQuoteQuantity"], "25");
}

#[tokio::test]
async fn batch_signature_covers_every_order_in_order() {
    let h = Harness::start();
    let r = &h.router;
    let orders = [limit("Bid", "50000.0", "0.00100"), limit("Bid", "50001.0", "0.00100")];
    let ts = now_ms();
    let signed = batch_signed(&orders, ts);

    // The 2nd order tampered after signing.
    let tampered = [orders[0].clone(), limit("Bid", "50001.0", "0.00900")];
    let body = Value::Array(tampered.to_vec()).to_string();
    let (status, answer) = send(r, Method::POST, "/api/v1/orders", &body, &auth_headers(1, &signed, ts, 5000)).await;
    assert_error(status, &answer, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "tampered 2nd order");

    // The orders swapped after signing.
    let swapped = Value::Array(vec![orders[1].clone(), orders[0].clone()]).to_string();
    let (status, answer) = send(r, Method::POST, "/api/v1/orders", &swapped, &auth_headers(1, &signed, ts, 5000)).await;
    assert_error(status, &answer, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "reordered batch");

    // Signed as one orderExecute with both orders' keys merged: refused.
    let merged = format!("instruction=orderExecute{}&timestamp={ts}&window=5000", params_of(&orders[0]));
    let body = Value::Array(orders.to_vec()).to_string();
    let (status, answer) = send(r, Method::POST, "/api/v1/orders", &body, &auth_headers(1, &merged, ts, 5000)).await;
    assert_error(status, &answer, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "single-order signature");

    // Signed by user 2 with user 1's key header: refused.
    let mut headers = auth_headers(2, &signed, ts, 5000);
    headers[0].1 = api_key(1);
    let (status, answer) = send(r, Method::POST, "/api/v1/orders", &body, &headers).await;
    assert_error(status, &answer, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "wrong key");

    // Nothing of the above was placed; the genuine batch is.
    let (_, open) = get_call(r, "/api/v1/orders", 1, "orderQueryAll", "").await;
    assert_eq!(open, json!([]));
    let (status, results) = send(r, Method::POST, "/api/v1/orders", &body, &auth_headers(1, &signed, ts, 5000)).await;
    assert_eq!(status, StatusCode::OK, "{results}");
    assert_eq!(results.as_array().unwrap().iter().filter(|o| o["status"] == "New").count(), 2);
}

#[tokio::test]
async fn cancel_all_cancels_only_the_callers_orders_of_the_market() {
    let h = Harness::start();
    let r = &h.router;
    let mut mine = Vec::new();
    for price in ["40000.0", "41000.0", "42000.0"] {
        mine.push(place(r, 1, limit("Bid", price, "0.00100")).await["id"].as_str().unwrap().to_string());
    }
    let eth = place(
        r,
        1,
        json!({"symbol": "ETH_USDC", "side": "Bid", "orderType": "Limit", "price": "1000.00", "quantity": "0.0100"}),
    )
    .await;
    let theirs = place(r, 2, limit("Bid", "41000.0", "0.00100")).await;

    let (status, cancelled) =
        body_call(r, Method::DELETE, "/api/v1/orders", 1, "orderCancelAll", json!({"symbol": "BTC_USDC"})).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    let mut got = ids(&cancelled);
    got.sort();
    mine.sort();
    assert_eq!(got, mine);
    assert!(cancelled.as_array().unwrap().iter().all(|o| o["status"] == "Cancelled" && o["symbol"] == "BTC_USDC"));
    assert_eq!(cancelled[0]["quantity"], "0.00100");

    // User 2's order and user 1's ETH order are still open.
    let (_, open) = get_call(r, "/api/v1/orders", 2, "orderQueryAll", "").await;
    assert_eq!(ids(&open), vec![theirs["id"].as_str().unwrap().to_string()]);
    let (_, open) = get_call(r, "/api/v1/orders", 1, "orderQueryAll", "").await;
    assert_eq!(ids(&open), vec![eth["id"].as_str().unwrap().to_string()]);
    assert_eq!(h.views.balances(UserId::new(1))[&codec::AssetId::new(1)].locked, 10_005_000, "only ETH locked");

    // Nothing left: an empty list; conditional orders: none exist.
    let (status, again) =
        body_call(r, Method::DELETE, "/api/v1/orders", 1, "orderCancelAll", json!({"symbol": "BTC_USDC"})).await;
    assert_eq!((status, again), (StatusCode::OK, json!([])));
    let (status, none) = body_call(
        r,
        Method::DELETE,
        "/api/v1/orders",
        1,
        "orderCancelAll",
        json!({"symbol": "ETH_USDC", "orderType": "ConditionalOrder"}),
    )
    .await;
    assert_eq!((status, none), (StatusCode::OK, json!([])));
}

#[tokio::test]
async fn fill_and_order_history_per_user() {
    let h = Harness::start();
    let r = &h.router;
    let ask = place(
        r,
        1,
        json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Limit", "price": "64000.0",
                                  "quantity": "0.00300", "clientId": 5}),
    )
    .await;
    let ask_id = ask["id"].as_str().unwrap().to_string();
    let before_fills = now_ms();
    let bid = place(r, 2, limit("Bid", "64000.0", "0.00100")).await;
    let bid_id = bid["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let middle = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let bid2 = place(r, 2, limit("Bid", "64000.0", "0.00200")).await;
    assert_eq!(bid2["status"], "Filled");
    let cancelled = place(r, 2, limit("Bid", "1000.0", "0.00100")).await;
    let (status, _) = body_call(
        r,
        Method::DELETE,
        "/api/v1/order",
        2,
        "orderCancel",
        json!({"symbol": "BTC_USDC", "orderId": cancelled["id"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let resting = place(r, 2, limit("Bid", "1000.0", "0.00100")).await;

    // User 1 (maker): two fills of its one ask, newest first.
    let (status, fills) = get_call(r, "/wapi/v1/history/fills", 1, "fillHistoryQueryAll", "").await;
    assert_eq!(status, StatusCode::OK, "{fills}");
    let fills = fills.as_array().unwrap().clone();
    assert_eq!(fills.len(), 2, "{fills:?}");
    let first = &fills[1];
    assert_eq!(first["orderId"], ask_id.as_str());
    assert_eq!(first["clientId"], "5");
    assert_eq!(first["symbol"], "BTC_USDC");
    assert_eq!(first["side"], "Ask");
    assert_eq!(first["price"], "64000.0");
    assert_eq!(first["quantity"], "0.00100");
    assert_eq!(first["fee"], "0.0128", "maker fee 0.02 % of 64 USDC");
    assert_eq!(first["feeSymbol"], "USDC");
    assert_eq!(first["isMaker"], true);
    assert!(first["tradeId"].is_u64());
    assert!(first["timestamp"].as_str().unwrap().contains('T'), "{first}");
    assert_eq!(fills[0]["quantity"], "0.00200");
    assert!(fills[0]["tradeId"].as_u64() > first["tradeId"].as_u64());

    // User 2 (taker) sees its side; filters by order, camelCase and snake_case.
    let (_, theirs) = get_call(r, "/wapi/v1/history/fills", 2, "fillHistoryQueryAll", "").await;
    assert_eq!(theirs.as_array().unwrap().len(), 2);
    assert!(theirs.as_array().unwrap().iter().all(|f| f["isMaker"] == false && f["side"] == "Bid" && f["fee"] != "0"));
    for key in ["orderId", "order_id"] {
        let (status, by_order) =
            get_call(r, "/wapi/v1/history/fills", 2, "fillHistoryQueryAll", &format!("{key}={bid_id}")).await;
        assert_eq!(status, StatusCode::OK, "{by_order}");
        assert_eq!(by_order.as_array().unwrap().len(), 1, "{key}: {by_order}");
        assert_eq!(by_order[0]["orderId"], bid_id.as_str());
    }
    // Paging and sorting.
    let (_, page) =
        get_call(r, "/wapi/v1/history/fills", 2, "fillHistoryQueryAll", "limit=1&offset=1&sort_direction=Desc").await;
    assert_eq!(page[0]["orderId"], bid_id.as_str(), "the older one");
    let (_, asc) = get_call(r, "/wapi/v1/history/fills", 2, "fillHistoryQueryAll", "sortDirection=Asc&limit=1").await;
    assert_eq!(asc[0]["orderId"], bid_id.as_str());
    // Time filters (ms, inclusive).
    let (_, early) =
        get_call(r, "/wapi/v1/history/fills", 2, "fillHistoryQueryAll", &format!("from={before_fills}&to={middle}"))
            .await;
    assert_eq!(early.as_array().unwrap().len(), 1, "{early}");
    let (_, late) = get_call(r, "/wapi/v1/history/fills", 2, "fillHistoryQueryAll", &format!("from={middle}")).await;
    assert_eq!(late.as_array().unwrap().len(), 1, "{late}");
    let (_, other_market) =
        get_call(r, "/wapi/v1/history/fills", 2, "fillHistoryQueryAll", "symbol=ETH_USDC&fill_type=User").await;
    assert_eq!(other_market, json!([]));
    let (_, liquidations) =
        get_call(r, "/wapi/v1/history/fills", 2, "fillHistoryQueryAll", "fillType=Liquidation").await;
    assert_eq!(liquidations, json!([]));
    // User 3 traded nothing; user 1's order id gives user 3 nothing.
    let (_, none) = get_call(r, "/wapi/v1/history/fills", 3, "fillHistoryQueryAll", "").await;
    assert_eq!(none, json!([]));
    let (_, none) = get_call(r, "/wapi/v1/history/fills", 3, "fillHistoryQueryAll", &format!("orderId={ask_id}")).await;
    assert_eq!(none, json!([]));

    // Order history: user 2 has two filled bids, a cancelled one and an open one, newest first.
    let (status, orders) = get_call(r, "/wapi/v1/history/orders", 2, "orderHistoryQueryAll", "").await;
    assert_eq!(status, StatusCode::OK, "{orders}");
    let statuses: Vec<&str> = orders.as_array().unwrap().iter().map(|o| o["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["New", "Cancelled", "Filled", "Filled"], "{orders}");
    assert_eq!(orders[0]["id"], resting["id"]);
    assert_eq!(orders[3]["id"], bid_id.as_str());
    assert_eq!(orders[3]["executedQuantity"], "0.00100");
    assert!(orders[3]["createdAt"].as_str().unwrap().contains('T'));
    let (_, one) =
        get_call(r, "/wapi/v1/history/orders", 2, "orderHistoryQueryAll", &format!("order_id={bid_id}")).await;
    assert_eq!(ids(&one), vec![bid_id.clone()]);
    let (_, page) =
        get_call(r, "/wapi/v1/history/orders", 2, "orderHistoryQueryAll", "limit=2&offset=1&symbol=BTC_USDC").await;
    assert_eq!(page.as_array().unwrap().len(), 2);
    assert_eq!(page[0]["status"], "Cancelled");
    // User 1: its ask, filled.
    let (_, orders) = get_call(r, "/wapi/v1/history/orders", 1, "orderHistoryQueryAll", "").await;
    assert_eq!(ids(&orders), vec![ask_id.clone()]);
    assert_eq!(orders[0]["status"], "Filled");
    // User 3 cannot see user 2's orders, even by id.
    let (_, none) =
        get_call(r, "/wapi/v1/history/orders", 3, "orderHistoryQueryAll", &format!("orderId={bid_id}")).await;
    assert_eq!(none, json!([]));
}

#[tokio::test]
async fn deposits_withdrawals_and_withdraw_requests() {
    let h = Harness::start();
    let r = &h.router;
    // An operator credits 2.5 USDC to user 1 and 1 SOL to user 2.
    h.operator(commands::deposit(1, 1, 2_500_000), 1).await;
    h.operator(commands::deposit(2, 3, 1_000_000_000), 2).await;
    let (status, deposits) = get_call(r, "/wapi/v1/capital/deposits", 1, "depositQueryAll", "").await;
    assert_eq!(status, StatusCode::OK, "{deposits}");
    assert_eq!(deposits.as_array().unwrap().len(), 1, "{deposits}");
    let deposit = &deposits[0];
    assert_eq!(deposit["symbol"], "USDC");
    assert_eq!(deposit["quantity"], "2.5");
    assert_eq!(deposit["status"], "confirmed");
    assert_eq!(deposit["source"], "administrator");
    assert!(deposit["id"].is_u64());
    assert!(deposit["createdAt"].as_str().unwrap().contains('T'));
    let (_, theirs) = get_call(r, "/wapi/v1/capital/deposits", 2, "depositQueryAll", "").await;
    assert_eq!(theirs.as_array().unwrap().len(), 1);
    assert_eq!(theirs[0]["symbol"], "SOL");
    let (_, none) = get_call(r, "/wapi/v1/capital/deposits", 3, "depositQueryAll", "").await;
    assert_eq!(none, json!([]));

    // User 1 withdraws 1.25 USDC.
    let request = json!({"symbol": "USDC", "quantity": "1.25", "address": "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU",
                         "blockchain": "Solana", "clientId": "w-1"});
    let (status, withdrawal) =
        body_call(r, Method::POST, "/wapi/v1/capital/withdrawals", 1, "withdraw", request.clone()).await;
    assert_eq!(status, StatusCode::OK, "{withdrawal}");
    assert_eq!(withdrawal["quantity"], "1.25");
    assert_eq!(withdrawal["symbol"], "USDC");
    assert_eq!(withdrawal["status"], "confirmed");
    assert_eq!(withdrawal["blockchain"], "Solana");
    assert_eq!(withdrawal["toAddress"], "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU");
    assert_eq!(withdrawal["clientId"], "w-1");
    assert_eq!(withdrawal["fee"], "0");
    assert_eq!(
        h.views.balances(UserId::new(1))[&codec::AssetId::new(1)].available,
        10_000_000_000 + 2_500_000 - 1_250_000,
        "debited through the engine"
    );
    let (status, listed) = get_call(r, "/wapi/v1/capital/withdrawals", 1, "withdrawalQueryAll", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed, json!([withdrawal]));
    // An operator withdrawal shows too (no address).
    h.operator(commands::withdraw(1, 0, 10_000_000), 1).await;
    let (_, listed) = get_call(r, "/wapi/v1/capital/withdrawals", 1, "withdrawalQueryAll", "limit=1").await;
    assert_eq!(listed[0]["symbol"], "BTC");
    assert_eq!(listed[0]["quantity"], "0.1");
    let (_, both) = get_call(r, "/wapi/v1/capital/withdrawals", 1, "withdrawalQueryAll", "").await;
    assert_eq!(both.as_array().unwrap().len(), 2);
    // Isolation: users 2 and 3 see none of user 1's withdrawals.
    for user in [2, 3] {
        let (_, none) = get_call(r, "/wapi/v1/capital/withdrawals", user, "withdrawalQueryAll", "").await;
        assert_eq!(none, json!([]), "user {user}");
    }
    // More than available: refused by the engine, nothing recorded.
    let too_much = json!({"symbol": "USDC", "quantity": "100000", "address": "a", "blockchain": "Solana"});
    let (status, body) = body_call(r, Method::POST, "/wapi/v1/capital/withdrawals", 2, "withdraw", too_much).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "INSUFFICIENT_FUNDS", "withdraw too much");
    let (_, none) = get_call(r, "/wapi/v1/capital/withdrawals", 2, "withdrawalQueryAll", "").await;
    assert_eq!(none, json!([]));
}

#[tokio::test]
async fn malformed_inputs_are_clear_4xx() {
    let h = Harness::start();
    let r = &h.router;
    let order = limit("Bid", "50000.0", "0.00100");
    let ts = now_ms();
    // (method, path, instruction, raw body or query, expected status, code)
    let bodies: Vec<(Method, &str, &str, String, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/api/v1/orders",
            "orderExecute",
            "[]".into(),
            StatusCode::BAD_REQUEST,
            "INVALID_CLIENT_REQUEST",
        ),
        (
            Method::POST,
            "/api/v1/orders",
            "orderExecute",
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "INVALID_CLIENT_REQUEST",
        ),
        (
            Method::POST,
            "/api/v1/orders",
            "orderExecute",
            "[1,2]".into(),
            StatusCode::BAD_REQUEST,
            "INVALID_CLIENT_REQUEST",
        ),
        (
            Method::POST,
            "/api/v1/orders",
            "orderExecute",
            "[{".into(),
            StatusCode::BAD_REQUEST,
            "INVALID_CLIENT_REQUEST",
        ),
        (
            Method::POST,
            "/api/v1/orders",
            "orderExecute",
            "[[]]".into(),
            StatusCode::BAD_REQUEST,
            "INVALID_CLIENT_REQUEST",
        ),
        (
            Method::POST,
            "/api/v1/orders",
            "orderExecute",
            Value::Array(vec![order.clone(); 51]).to_string(),
            StatusCode::BAD_REQUEST,
            "INVALID_CLIENT_REQUEST",
        ),
        (
            Method::DELETE,
            "/api/v1/orders",
            "orderCancelAll",
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "INVALID_CLIENT_REQUEST",
        ),
        (
            Method::DELETE,
            "/api/v1/orders",
            "orderCancelAll",
            "[1]".into(),
            StatusCode::BAD_REQUEST,
            "INVALID_CLIENT_REQUEST",
        ),
        (
            Method::DELETE,
            "/api/v1/orders",
            "orderCancelAll",
            r#"{"symbol":"NOPE"}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_CLIENT_REQUEST",
        ),
        (
            Method::DELETE,
            "/api/v1/orders",
            "orderCancelAll",
            r#"{"symbol":"BTC_USDC","orderType":"Stop"}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_CLIENT_REQUEST",
        ),
    ];
    let withdrawal = |overrides: Value| {
        let mut body = json!({"symbol": "USDC", "quantity": "1", "address": "addr", "blockchain": "Solana"});
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body.to_string()
    };
    let mut bodies = bodies;
    for overrides in [
        json!({"symbol": null}),
        json!({"symbol": "DOGE"}),
        json!({"quantity": null}),
        json!({"quantity": "0"}),
        json!({"quantity": "-1"}),
        json!({"quantity": "1e3"}),
        json!({"quantity": "0.0000001"}),
        json!({"quantity": "99999999999999999999999"}),
        json!({"address": null}),
        json!({"address": ""}),
        json!({"address": "x".repeat(200)}),
        json!({"blockchain": "Narnia"}),
        json!({"blockchain": null}),
        json!({"clientId": ""}),
    ] {
        bodies.push((
            Method::POST,
            "/wapi/v1/capital/withdrawals",
            "withdraw",
            withdrawal(overrides),
            StatusCode::BAD_REQUEST,
            "INVALID_CLIENT_REQUEST",
        ));
    }
    bodies.push((
        Method::POST,
        "/wapi/v1/capital/withdrawals",
        "withdraw",
        "not json".into(),
        StatusCode::BAD_REQUEST,
        "INVALID_CLIENT_REQUEST",
    ));
    for (method, path, instruction, body, expected, code) in bodies {
        // Sign whatever parses as an object, so the body itself is what gets refused.
        let signed = match serde_json::from_str::<Value>(&body) {
            Ok(value @ Value::Object(_)) => {
                format!("instruction={instruction}{}&timestamp={ts}&window=5000", params_of(&value))
            }
            _ => format!("instruction={instruction}&timestamp={ts}&window=5000"),
        };
        let (status, answer) = send(r, method.clone(), path, &body, &auth_headers(1, &signed, ts, 5000)).await;
        assert_error(status, &answer, expected, code, &format!("{method} {path} {body}"));
    }

    let queries: [(&str, &str, &str); 14] = [
        ("/wapi/v1/history/fills", "fillHistoryQueryAll", "limit=0"),
        ("/wapi/v1/history/fills", "fillHistoryQueryAll", "limit=1001"),
        ("/wapi/v1/history/fills", "fillHistoryQueryAll", "limit=abc"),
        ("/wapi/v1/history/fills", "fillHistoryQueryAll", "offset=-1"),
        ("/wapi/v1/history/fills", "fillHistoryQueryAll", "from=5&to=4"),
        ("/wapi/v1/history/fills", "fillHistoryQueryAll", "from=99999999999999999999999"),
        ("/wapi/v1/history/fills", "fillHistoryQueryAll", "orderId=abc"),
        ("/wapi/v1/history/fills", "fillHistoryQueryAll", "order_id=0"),
        ("/wapi/v1/history/fills", "fillHistoryQueryAll", "symbol=NOPE"),
        ("/wapi/v1/history/fills", "fillHistoryQueryAll", "fillType=Magic"),
        ("/wapi/v1/history/fills", "fillHistoryQueryAll", "sortDirection=Up"),
        ("/wapi/v1/history/orders", "orderHistoryQueryAll", "limit=100000"),
        ("/wapi/v1/capital/deposits", "depositQueryAll", "to=x"),
        ("/wapi/v1/capital/withdrawals", "withdrawalQueryAll", "offset=1.5"),
    ];
    for (path, instruction, query) in queries {
        let (status, answer) = get_call(r, path, 1, instruction, query).await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST, "INVALID_CLIENT_REQUEST", &format!("{path}?{query}"));
    }
    // A malformed query string.
    let (status, answer) =
        send(r, Method::GET, "/wapi/v1/history/fills?limit=%ZZ", "", &auth_headers(1, "x", ts, 5000)).await;
    assert!(status.is_client_error(), "{status} {answer}");

    // Every new endpoint refuses an unsigned request and a wrong instruction.
    let unsigned: [(Method, &str, &str); 7] = [
        (Method::POST, "/api/v1/orders", "[]"),
        (Method::DELETE, "/api/v1/orders", r#"{"symbol":"BTC_USDC"}"#),
        (Method::GET, "/wapi/v1/history/fills", ""),
        (Method::GET, "/wapi/v1/history/orders", ""),
        (Method::GET, "/wapi/v1/capital/deposits", ""),
        (Method::GET, "/wapi/v1/capital/withdrawals", ""),
        (Method::POST, "/wapi/v1/capital/withdrawals", r#"{"symbol":"USDC"}"#),
    ];
    for (method, path, body) in unsigned {
        let (status, answer) = send(r, method.clone(), path, body, &[]).await;
        if method == Method::POST && path == "/api/v1/orders" {
            // An empty batch is refused before the signature is checked.
            assert!(status.is_client_error(), "{answer}");
            continue;
        }
        assert_error(status, &answer, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &format!("unsigned {method} {path}"));
        let signed_as_other = format!("instruction=balanceQuery&timestamp={ts}&window=5000");
        let (status, answer) = send(r, method.clone(), path, body, &auth_headers(1, &signed_as_other, ts, 5000)).await;
        assert_error(status, &answer, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &format!("wrong instruction {path}"));
    }
}

#[tokio::test]
async fn body_size_and_rate_limits() {
    let key_limiter = Arc::new(KeyRateLimiter::new(1, 3));
    let h = Harness::with(|state| state.with_key_limits(key_limiter.clone()));
    let limits = HttpLimits { body_bytes_max: 1024, ip_requests_per_second: 1, ip_burst: 4, ..HttpLimits::default() };
    let router = with_limits(h.router.clone(), &limits, Arc::new(IpRateLimiter::new(1, 4)));
    let r = &router;

    // 413 with {code, message} (a chunked body over a real socket: tests/limits_tcp.rs).
    let big = format!(r#"{{"symbol":"BTC_USDC","pad":"{}"}}"#, "x".repeat(2000));
    let ts = now_ms();
    let (status, answer) = send(r, Method::DELETE, "/api/v1/orders", &big, &auth_headers(1, "x", ts, 5000)).await;
    assert_error(status, &answer, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "declared length");

    // Per key: requests that fail authentication cost the key nothing.
    for _ in 0..5 {
        let (status, _) = send(r, Method::GET, "/api/v1/capital", "", &auth_headers(1, "forged", ts, 5000)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    for attempt in 0..3 {
        let (status, answer) = get_call(r, "/wapi/v1/history/fills", 1, "fillHistoryQueryAll", "").await;
        assert_eq!(status, StatusCode::OK, "attempt {attempt}: {answer}");
    }
    let (status, answer) = get_call(r, "/wapi/v1/capital/deposits", 1, "depositQueryAll", "").await;
    assert_error(status, &answer, StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS", "4th signed request of key 1");
    let (status, _) = get_call(r, "/wapi/v1/capital/deposits", 2, "depositQueryAll", "").await;
    assert_eq!(status, StatusCode::OK, "key 2 has its own budget");

    // Per IP (the peer address the listener records): the 5th request within the burst is 429.
    let from = |ip: [u8; 4]| {
        let mut request = Request::builder().uri("/api/v1/capital").body(Body::empty()).unwrap();
        request.extensions_mut().insert(ConnectInfo(PeerAddr(std::net::SocketAddr::from((ip, 40000)))));
        request
    };
    for _ in 0..4 {
        let (status, _) = send_request(r, from([10, 0, 0, 1])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "within the IP burst (unsigned)");
    }
    let response = r.clone().oneshot(from([10, 0, 0, 1])).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    let bytes = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["code"], "TOO_MANY_REQUESTS");
    let (status, _) = send_request(r, from([10, 0, 0, 2])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "another address is not limited");
}

/// What a [`FixedStore`] answers: fills, orders, and transfers (for deposits and withdrawals alike).
#[derive(Clone, Default)]
struct StoreRecords {
    fills: Vec<gateway_json::history::FillRecord>,
    orders: Vec<gateway_json::history::StoredOrder>,
    transfers: Vec<gateway_json::history::TransferRecord>,
}

/// A [`HistorySource`] that remembers the queries it was asked and answers with fixed records
/// (or an error): the handlers' side of the contract the exchange's Postgres reader fulfils
/// (tested against the real Postgres in exchange/tests/history_postgres.rs).
struct FixedStore {
    answer: std::sync::Mutex<Result<StoreRecords, String>>,
    queries: std::sync::Mutex<Vec<(UserId, gateway_json::history::HistoryQuery)>>,
}

impl FixedStore {
    fn new(answer: Result<StoreRecords, String>) -> Arc<Self> {
        Arc::new(Self { answer: std::sync::Mutex::new(answer), queries: Default::default() })
    }

    fn answer<T: Send + 'static>(
        &self,
        user: UserId,
        query: gateway_json::history::HistoryQuery,
        pick: impl FnOnce(StoreRecords) -> Vec<T>,
    ) -> gateway_json::history::HistoryPageFuture<'_, T> {
        self.queries.lock().unwrap().push((user, query));
        // Every record it holds is one page: the total is their number.
        let answer = self
            .answer
            .lock()
            .unwrap()
            .clone()
            .map(pick)
            .map(|records| gateway_json::history::HistoryPage { total: records.len(), records });
        Box::pin(async move { answer })
    }
}

impl gateway_json::history::HistorySource for FixedStore {
    fn fills(
        &self,
        user: UserId,
        query: gateway_json::history::HistoryQuery,
    ) -> gateway_json::history::HistoryPageFuture<'_, gateway_json::history::FillRecord> {
        self.answer(user, query, |records| records.fills)
    }

    fn orders(
        &self,
        user: UserId,
        query: gateway_json::history::HistoryQuery,
    ) -> gateway_json::history::HistoryPageFuture<'_, gateway_json::history::StoredOrder> {
        self.answer(user, query, |records| records.orders)
    }

    fn deposits(
        &self,
        user: UserId,
        query: gateway_json::history::HistoryQuery,
    ) -> gateway_json::history::HistoryPageFuture<'_, gateway_json::history::TransferRecord> {
        self.answer(user, query, |records| records.transfers)
    }

    fn withdrawals(
        &self,
        user: UserId,
        query: gateway_json::history::HistoryQuery,
    ) -> gateway_json::history::HistoryPageFuture<'_, gateway_json::history::TransferRecord> {
        self.answer(user, query, |records| records.transfers)
    }
}

#[tokio::test]
async fn a_history_store_is_the_source_and_its_failure_is_503() {
    use codec::{ClientOrderId, MarketId, OrderId, OrderType, SelfTradePrevention, Side, TimeInForce};
    use gateway_json::history::{FillRecord, HistoryQuery, StoredOrder};
    let fill = FillRecord {
        trade_id: 7,
        order_id: OrderId::new(42),
        client_order_id: ClientOrderId::new(5),
        market_id: MarketId::new(1),
        side: Side::Ask,
        price_ticks: 640_000,
        quantity_lots: 100,
        fee: 3,
        is_maker: true,
        timestamp_ns: 1_764_000_000_123_000_000,
    };
    let order = gateway_json::OpenOrder {
        order_id: OrderId::new(42),
        client_order_id: ClientOrderId::new(5),
        market_id: MarketId::new(1),
        side: Side::Ask,
        order_type: OrderType::Limit,
        price_ticks: 640_000,
        quantity_lots: 100,
        quote_quantity: 0,
        filled_lots: 100,
        executed_quote: 6_400_000,
        time_in_force: TimeInForce::Gtc,
        self_trade_prevention: SelfTradePrevention::RejectTaker,
        post_only: false,
        created_ns: 1_764_000_000_000_000_000,
        trigger_price_ticks: 0,
        attached: Default::default(),
    };
    let store = FixedStore::new(Ok(StoreRecords {
        fills: vec![fill],
        orders: vec![StoredOrder { order, status: "Filled", expiry_reason: None }],
        transfers: vec![],
    }));
    let harness = Harness::with(|state| state.with_history_source(store.clone()));
    let router = &harness.router;
    // User 2 trades with user 1 in memory: the store, not memory, answers.
    place(router, 1, limit("Ask", "100.0", "0.01")).await;
    place(router, 2, json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Market", "quantity": "0.01"})).await;
    let query = "orderId=42&from=1000&to=2000&limit=5&offset=3&sortDirection=Asc&symbol=BTC_USDC";
    let (status, fills) = get_call(router, "/wapi/v1/history/fills", 2, "fillHistoryQueryAll", query).await;
    assert_eq!(status, StatusCode::OK, "{fills}");
    assert_eq!(fills.as_array().unwrap().len(), 1, "only the store's fill: {fills}");
    assert_eq!(fills[0]["tradeId"], 7);
    assert_eq!(fills[0]["orderId"], "42");
    assert_eq!(fills[0]["clientId"], "5");
    assert_eq!(fills[0]["side"], "Ask");
    assert_eq!(fills[0]["isMaker"], true);
    assert_eq!(fills[0]["timestamp"], "2025-11-24T16:00:00.123");
    let expected = HistoryQuery {
        market: Some(MarketId::new(1)),
        order: Some(OrderId::new(42)),
        from_ns: 1_000_000_000,
        to_ns: 2_000_999_999,
        ascending: true,
        limit: 5,
        offset: 3,
    };
    assert_eq!(store.queries.lock().unwrap().last(), Some(&(UserId::new(2), expected)), "filters passed on");
    let (status, orders) = get_call(router, "/wapi/v1/history/orders", 3, "orderHistoryQueryAll", "").await;
    assert_eq!(status, StatusCode::OK, "{orders}");
    assert_eq!(ids(&orders), ["42"]);
    assert_eq!(orders[0]["status"], "Filled");
    assert_eq!(orders[0]["createdAt"], "2025-11-24T16:00:00.000");
    assert_eq!(store.queries.lock().unwrap().last().unwrap().0, UserId::new(3), "asked for the caller's rows");
    drop(harness);

    // A failing store, or one naming a market this server does not have: 503, never memory.
    let unknown_market =
        StoreRecords { fills: vec![FillRecord { market_id: MarketId::new(99), ..fill }], ..Default::default() };
    for answer in [Err("connection refused".to_string()), Ok(unknown_market)] {
        let store = FixedStore::new(answer);
        let harness = Harness::with(|state| state.with_history_source(store.clone()));
        let (status, body) = get_call(&harness.router, "/wapi/v1/history/fills", 2, "fillHistoryQueryAll", "").await;
        assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", "store failed");
    }
}

#[tokio::test]
async fn a_history_store_answers_deposits_and_withdrawals_and_its_failure_is_503() {
    use gateway_json::history::{HistoryQuery, TransferRecord};
    let store = FixedStore::new(Ok(StoreRecords::default()));
    let harness = Harness::with(|state| state.with_history_source(store.clone()));
    let r = &harness.router;
    // In memory: a deposit, and a withdrawal request with its details.
    harness.operator(commands::deposit(1, 1, 2_500_000), 1).await;
    let request = json!({"symbol": "USDC", "quantity": "1.25", "address": "addr-1", "blockchain": "Solana",
                         "clientId": "w-1"});
    let (status, withdrawal) = body_call(r, Method::POST, "/wapi/v1/capital/withdrawals", 1, "withdraw", request).await;
    assert_eq!(status, StatusCode::OK, "{withdrawal}");
    let id = withdrawal["id"].as_u64().unwrap();

    // The store answers (its own records, not memory's): the same JSON as memory for the same
    // record, the request's details attached from memory by id, none on a withdrawal memory
    // does not know.
    let transfer = |id: u64, asset: u32, amount: u64| TransferRecord {
        id,
        asset_id: codec::AssetId::new(asset),
        amount,
        timestamp_ns: 1_764_000_000_123_000_000,
        details: None,
    };
    let transfers = vec![transfer(id, 1, 1_250_000), transfer(3, 0, 10_000_000)];
    let stored_withdrawal = TransferRecord { timestamp_ns: 0, ..transfers[0].clone() };
    *store.answer.lock().unwrap() = Ok(StoreRecords { transfers, ..Default::default() });
    let query = "from=1000&to=2000&limit=5&offset=3&sortDirection=Asc";
    let (status, deposits) = get_call(r, "/wapi/v1/capital/deposits", 1, "depositQueryAll", query).await;
    assert_eq!(status, StatusCode::OK, "{deposits}");
    assert_eq!(deposits.as_array().unwrap().len(), 2, "only the store's deposits: {deposits}");
    assert_eq!(deposits[0]["id"], id);
    assert_eq!(deposits[0]["symbol"], "USDC");
    assert_eq!(deposits[0]["quantity"], "1.25");
    assert_eq!(deposits[0]["createdAt"], "2025-11-24T16:00:00.123");
    assert_eq!(deposits[1]["symbol"], "BTC");
    let expected = HistoryQuery {
        market: None,
        order: None,
        from_ns: 1_000_000_000,
        to_ns: 2_000_999_999,
        ascending: true,
        limit: 5,
        offset: 3,
    };
    assert_eq!(store.queries.lock().unwrap().last(), Some(&(UserId::new(1), expected)), "page passed on");
    let (status, withdrawals) = get_call(r, "/wapi/v1/capital/withdrawals", 1, "withdrawalQueryAll", "").await;
    assert_eq!(status, StatusCode::OK, "{withdrawals}");
    assert_eq!(store.queries.lock().unwrap().last().unwrap().0, UserId::new(1), "asked for the caller's rows");
    let mut same_time = withdrawal.clone();
    same_time["createdAt"] = json!("2025-11-24T16:00:00.123");
    assert_eq!(withdrawals[0], same_time, "the memory path's JSON, details from memory");
    assert_eq!(withdrawals[1]["blockchain"], "Internal", "{withdrawals}");
    assert_eq!(withdrawals[1]["toAddress"], "", "{withdrawals}");
    assert_eq!(withdrawals[1]["clientId"], Value::Null, "{withdrawals}");
    // Another user asking gets the store's rows for them, never user 1's details.
    *store.answer.lock().unwrap() = Ok(StoreRecords { transfers: vec![stored_withdrawal], ..Default::default() });
    let (_, theirs) = get_call(r, "/wapi/v1/capital/withdrawals", 2, "withdrawalQueryAll", "").await;
    assert_eq!(theirs[0]["blockchain"], "Internal", "{theirs}");
    assert_eq!(theirs[0]["createdAt"], "1970-01-01T00:00:00.000", "a time the store does not know");

    // A failing store: 503, never memory.
    *store.answer.lock().unwrap() = Err("connection refused".to_string());
    for (path, instruction) in
        [("/wapi/v1/capital/deposits", "depositQueryAll"), ("/wapi/v1/capital/withdrawals", "withdrawalQueryAll")]
    {
        let (status, body) = get_call(r, path, 1, instruction, "").await;
        assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", path);
    }
}

/// Issue #16: market orders by quote quantity in the REST order answer, the open-order view and
/// the order history. A buy across three price levels is `Filled` by its last fill (not left
/// open, not expired); one that runs out of book is `Expired` with Backpack's expiry reason
/// `InsufficientLiquidity`; a sell by quote quantity sells whole lots up to the quote quantity.
#[tokio::test]
async fn quote_quantity_market_orders_in_rest_views_and_history() {
    let h = Harness::start();
    let r = &h.router;
    for price in ["64000.0", "64010.0", "64020.0"] {
        place(r, 1, limit("Ask", price, "0.00100")).await;
    }
    let market = |side: &str, quote: &str| json!({"symbol": "BTC_USDC", "side": side, "orderType": "Market", "quoteQuantity": quote});
    // 150 USDC, taker fee (0.05 %) included: 0.001 at 64000.0 (64.032) and at 64010.0 (64.042005),
    // then 0.00034 at 64020.0 (21.7668 + 0.010883); a 35th lot there would exceed 150.
    let bought = place(r, 2, market("Bid", "150")).await;
    assert_eq!(
        (&bought["status"], &bought["executedQuantity"], &bought["executedQuoteQuantity"], &bought["orderType"]),
        (&json!("Filled"), &json!("0.00234"), &json!("149.7768"), &json!("Market")),
        "{bought}"
    );
    // The rest of the book (0.00066 at 64020.0) is less than 100 USDC buys: it expires.
    let short = place(r, 2, market("Bid", "100")).await;
    assert_eq!((&short["status"], &short["executedQuantity"]), (&json!("Expired"), &json!("0.00066")), "{short}");
    // A sell by quote quantity: 50 USDC of notional at 63000.0 is 0.00079 (49.77).
    place(r, 1, limit("Bid", "63000.0", "0.00100")).await;
    let sold = place(r, 2, market("Ask", "50")).await;
    assert_eq!(
        (&sold["status"], &sold["side"], &sold["executedQuantity"], &sold["executedQuoteQuantity"]),
        (&json!("Filled"), &json!("Ask"), &json!("0.00079"), &json!("49.77")),
        "{sold}"
    );

    // None of them is left open.
    let (status, open) = get_call(r, "/api/v1/orders", 2, "orderQueryAll", "symbol=BTC_USDC").await;
    assert_eq!(status, StatusCode::OK, "{open}");
    assert_eq!(open, json!([]));
    // History, newest first, with the expiry reason where it expired.
    let (status, orders) = get_call(r, "/wapi/v1/history/orders", 2, "orderHistoryQueryAll", "").await;
    assert_eq!(status, StatusCode::OK, "{orders}");
    let summary: Vec<(Value, Value, Value, Value, Value)> = orders
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["id"].clone(),
                o["status"].clone(),
                o["expiryReason"].clone(),
                o["quoteQuantity"].clone(),
                o["executedQuoteQuantity"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (sold["id"].clone(), json!("Filled"), Value::Null, json!("50"), json!("49.77")),
            (short["id"].clone(), json!("Expired"), json!("InsufficientLiquidity"), json!("100"), json!("42.2532")),
            (bought["id"].clone(), json!("Filled"), Value::Null, json!("150"), json!("149.7768")),
        ],
        "{orders}"
    );
}
