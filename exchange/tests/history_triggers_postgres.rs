//! Trigger orders and attached stop-loss / take-profit in the order history read from Postgres
//! (issue #20): the real server with the Postgres sink (`scripts/services`), its demo users funded
//! (`--demo --demo-orders 16`: the deposits only, no demo trading), places on BTC_USDC a stop-buy
//! that fires and fills, a take-profit market sell that fires into an empty bid side and fails, a
//! stop-loss that stays pending, and a resting ask with an attached stop-loss / take-profit.
//! `GET /wapi/v1/history/orders` lists each with its status (`Filled`, `TriggerFailed`,
//! `TriggerPending`, `New`) and Backpack's trigger fields (`triggerPrice`, `triggerBy`,
//! `triggerQuantity`; `stopLossTriggerPrice`, ...), and the `orders` table holds the trigger kind
//! and the failed trigger's reason. A second server on the same journal with a fresh database
//! replays every command into its sink at once (a trigger's pending, placed and accepted events
//! in one batch): the history it serves is identical and no order has two rows.
//!
//! Needs `EXCHANGE_TEST_DATABASE_URL`; skipped loudly without it, failed under
//! `EXCHANGE_REQUIRE_SERVICES=1` (scripts/test).

mod support;

use serde_json::{Value, json};
use sinks::sqlx;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{JSON, Server, request, signature_lines};

/// The demo user placing the orders under test (user 3 and 4 make the trades).
const TRADER: u8 = 2;

/// A signed request by demo user `user`: `params` are the sorted `&k=v` pairs that are signed.
fn call(port: u16, user: u8, method: &str, target: &str, instruction: &str, params: &str, body: &str) -> (u16, Value) {
    let headers = JSON.to_string() + &signature_lines(&[user; 32], &format!("instruction={instruction}{params}"));
    let response = request(port, method, target, &headers, body);
    (response.status(), response.json(target))
}

/// `POST /api/v1/order` of `order` (string fields) by `user`.
fn place(port: u16, user: u8, order: Value) -> Value {
    let mut fields: Vec<(&String, &Value)> = order.as_object().unwrap().iter().collect();
    fields.sort_by_key(|(k, _)| k.as_str());
    let params: String = fields.iter().map(|(k, v)| format!("&{k}={}", v.as_str().unwrap())).collect();
    let (status, answer) = call(port, user, "POST", "/api/v1/order", "orderExecute", &params, &order.to_string());
    assert_eq!(status, 200, "{order}: {answer}");
    answer
}

/// A trade of 0.001 BTC at `price`: user 3 rests an ask of `ask_quantity`, user 4 takes 0.001.
fn trade_at(port: u16, price: &str, ask_quantity: &str) {
    place(
        port,
        3,
        json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Limit", "price": price, "quantity": ask_quantity}),
    );
    let taker = place(
        port,
        4,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": price, "quantity": "0.00100",
               "timeInForce": "IOC"}),
    );
    assert_eq!(taker["status"], "Filled", "{taker}");
}

/// The trader's whole order history, by order id.
fn history(port: u16) -> std::collections::BTreeMap<String, Value> {
    let (status, orders) =
        call(port, TRADER, "GET", "/wapi/v1/history/orders?limit=1000", "orderHistoryQueryAll", "&limit=1000", "");
    assert_eq!(status, 200, "{orders}");
    orders.as_array().unwrap().iter().map(|o| (o["id"].as_str().unwrap().to_string(), o.clone())).collect()
}

/// Waits until the Postgres sink of the server on `port` has written everything the engine did.
fn sink_caught_up(port: u16) {
    let value = |metrics: &str, series: &str| -> Option<f64> {
        metrics.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = request(port, "GET", "/metrics", "", "").body().to_string();
        let target = value(&metrics, "exchange_last_sequence ").unwrap_or(0.0);
        let cursor = value(&metrics, "exchange_sink_cursor{sink=\"postgres\"} ").unwrap_or(-1.0);
        if target > 0.0 && cursor >= target {
            return;
        }
        assert!(Instant::now() < deadline, "the sink's cursor {cursor} did not reach {target}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A config file: the default configuration with the Postgres sink writing to `database`.
fn config_file(dir: &Path, name: &str, database: &str) -> String {
    let path = dir.join(name);
    let text = format!("{}\n[sinks.postgres]\nurl = \"{database}\"\n", exchange::config::DEFAULT_CONFIG);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Per order id of the trader: its rows' trigger kind and failed reason, and how many rows it has.
fn trigger_columns(database: &str) -> Vec<(i64, Option<i16>, Option<i16>, i64)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let queries = sinks::postgres::Queries::connect(database).await.unwrap();
        sqlx::query_as(
            "SELECT order_id, MIN(trigger_kind), MIN(trigger_failed_reason), COUNT(*) FROM orders
             WHERE user_id = $1 GROUP BY order_id ORDER BY order_id",
        )
        .bind(i64::from(TRADER))
        .fetch_all(queries.pool())
        .await
        .unwrap()
    })
}

#[test]
fn trigger_orders_and_attachments_are_in_the_postgres_order_history() {
    let Some([server_url]) = support::services(["EXCHANGE_TEST_DATABASE_URL"]) else { return };
    let id = std::process::id();
    let dir = support::data_dir("history-triggers-pg");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let live = support::fresh_database(&server_url, &format!("exchange_triggers_{id}"));
    let config = config_file(&dir, "live.toml", &live);
    let args = ["--config", config.as_str(), "run", "--demo", "--demo-orders", "16"];
    let mut server = Server::start(&data, &args, &[]);
    let port = server.http;
    // The demo funds its users (16 deposits) right after start.
    let deadline = Instant::now() + Duration::from_secs(20);
    while call(port, 4, "GET", "/api/v1/capital", "balanceQuery", "", "").1["USDC"].is_null() {
        assert!(Instant::now() < deadline, "the demo users were never funded");
        std::thread::sleep(Duration::from_millis(50));
    }

    trade_at(port, "64000.0", "0.00100");
    let stop_buy = place(
        port,
        TRADER,
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "65100.0",
               "triggerPrice": "65000.0", "triggerQuantity": "0.00100"}),
    );
    let take_profit = place(
        port,
        TRADER,
        json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Market", "triggerPrice": "65000.0",
               "quantity": "0.00100"}),
    );
    let stop_loss = place(
        port,
        TRADER,
        json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Limit", "price": "59900.0",
               "triggerPrice": "60000.0", "quantity": "0.00200"}),
    );
    let parent = place(
        port,
        TRADER,
        json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Limit", "price": "69000.0", "quantity": "0.00100",
               "stopLossTriggerPrice": "70000.0", "takeProfitTriggerPrice": "60000.0",
               "takeProfitLimitPrice": "60100.0"}),
    );
    for pending in [&stop_buy, &take_profit, &stop_loss] {
        assert_eq!(pending["status"], "TriggerPending", "{pending}");
    }
    // A trade at 65,000 (user 3 asks 0.002, user 4 takes 0.001) fires both 65,000 triggers in
    // order id order: the stop-buy takes the rest of the ask; the market sell then finds no bid.
    trade_at(port, "65000.0", "0.00200");
    sink_caught_up(port);

    let ids = [&stop_buy, &take_profit, &stop_loss, &parent].map(|o| o["id"].as_str().unwrap().to_string());
    let served = history(port);
    let expect = |id: &str, fields: Value| {
        let order = served.get(id).unwrap_or_else(|| panic!("order {id} missing from {served:#?}"));
        for (name, value) in fields.as_object().unwrap() {
            assert_eq!(&order[name], value, "{name} of {order}");
        }
    };
    expect(
        &ids[0],
        json!({"status": "Filled", "triggerPrice": "65000.0", "triggerBy": "LastPrice", "triggerQuantity": "0.00100",
               "executedQuantity": "0.00100", "price": "65100.0"}),
    );
    expect(&ids[1], json!({"status": "TriggerFailed", "triggerPrice": "65000.0", "orderType": "Market"}));
    expect(&ids[2], json!({"status": "TriggerPending", "triggerPrice": "60000.0", "triggerQuantity": "0.00200"}));
    expect(
        &ids[3],
        json!({"status": "New", "triggerPrice": null, "stopLossTriggerPrice": "70000.0",
               "takeProfitTriggerPrice": "60000.0", "takeProfitLimitPrice": "60100.0",
               "stopLossTriggerBy": "LastPrice", "takeProfitTriggerBy": "LastPrice"}),
    );
    assert!(served[&ids[3]].get("stopLossLimitPrice").is_none(), "a market stop-loss: {}", served[&ids[3]]);
    assert_eq!(served.len(), 4, "the trader's four orders, once each: {served:#?}");
    // Stored as the engine recorded them: a stop-buy (TriggerKind::Stop = 1), a take-profit sell (2)
    // that failed with NoLiquidity, a stop-loss sell (1), and a parent with no trigger.
    let no_liquidity = i16::try_from(codec::WireEnum::code(codec::RejectReason::NoLiquidity)).unwrap();
    let columns = trigger_columns(&live);
    let by_id: Vec<(Option<i16>, Option<i16>, i64)> =
        columns.iter().map(|&(_, kind, reason, rows)| (kind, reason, rows)).collect();
    assert_eq!(by_id, [(Some(1), None, 1), (Some(2), Some(no_liquidity), 1), (Some(1), None, 1), (None, None, 1)]);
    server.kill();

    // Replay: a server on the same journal with a fresh database; its sink catches up from the
    // journal in large batches. The same history, one row per order.
    let replayed = support::fresh_database(&server_url, &format!("exchange_triggers_replay_{id}"));
    let config = config_file(&dir, "replay.toml", &replayed);
    // `--demo` again for the demo users' keys (its 16 deposits add no order).
    let args = ["--config", config.as_str(), "run", "--demo", "--demo-orders", "16"];
    let server = Server::start(&data, &args, &[]);
    sink_caught_up(server.http);
    assert_eq!(history(server.http), served, "the replayed history equals the live one");
    assert_eq!(trigger_columns(&replayed), columns);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
