//! The batch, cancel-all, history, capital and OpenAPI endpoints and the body-size limit on the
//! real server: starts the binary with `--demo` on ephemeral ports and, as demo user 2 (secret:
//! 32 bytes of 2), signs requests like a Backpack client. Proves the new routes, the history
//! kept from the engine's events and the HTTP limits are wired into the server.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{JSON, Server, request, signature_lines};

/// One HTTP request; `signed` is the signed string without `&timestamp=..&window=..`.
fn call(port: u16, method: &str, path: &str, body: &str, signed: Option<&str>) -> (u16, Value) {
    let mut headers = JSON.to_string();
    if let Some(prefix) = signed {
        headers += &signature_lines(&[2u8; 32], prefix);
    }
    let response = request(port, method, path, &headers, body);
    (response.status(), response.json(path))
}

#[test]
fn demo_server_serves_batches_history_and_withdrawals() {
    let dir = support::data_dir("rest-history");
    let server = Server::start(&dir, &["run", "--demo", "--demo-rate", "200"], &[]);
    let port = server.http;

    // The demo funds its users through the engine shortly after start: a deposit in the history.
    let deadline = Instant::now() + Duration::from_secs(20);
    let deposits = loop {
        let (status, deposits) =
            call(port, "GET", "/wapi/v1/capital/deposits", "", Some("instruction=depositQueryAll"));
        assert_eq!(status, 200, "{deposits}");
        if deposits.as_array().is_some_and(|d| d.iter().any(|d| d["symbol"] == "USDC")) {
            break deposits;
        }
        assert!(Instant::now() < deadline, "demo user 2 was never funded: {deposits}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(deposits.as_array().unwrap().iter().all(|d| d["status"] == "confirmed"), "{deposits}");

    // A batch of two resting bids below the demo ladder (around 60,000) and inside the default
    // ±10% price band.
    let orders = [
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "56000.0", "quantity": "0.01000"}),
        json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "56001.0", "quantity": "0.01000"}),
    ];
    let signed = "instruction=orderExecute&orderType=Limit&price=56000.0&quantity=0.01000&side=Bid&symbol=BTC_USDC\
                  &instruction=orderExecute&orderType=Limit&price=56001.0&quantity=0.01000&side=Bid&symbol=BTC_USDC";
    let (status, results) = call(port, "POST", "/api/v1/orders", &json!(orders).to_string(), Some(signed));
    assert_eq!(status, 200, "{results}");
    assert_eq!(results[0]["status"], "New", "{results}");
    assert_eq!(results[1]["status"], "New", "{results}");

    // Cancel them all; both come back cancelled and appear in the order history.
    let (status, cancelled) = call(
        port,
        "DELETE",
        "/api/v1/orders",
        r#"{"symbol":"BTC_USDC"}"#,
        Some("instruction=orderCancelAll&symbol=BTC_USDC"),
    );
    assert_eq!(status, 200, "{cancelled}");
    let cancelled_ids: Vec<&Value> = cancelled.as_array().unwrap().iter().map(|o| &o["id"]).collect();
    assert!(cancelled_ids.contains(&&results[0]["id"]) && cancelled_ids.contains(&&results[1]["id"]), "{cancelled}");
    // (Demo user 2 also trades market orders in the demo: look the batch's orders up by id.)
    for id in [results[0]["id"].as_str().unwrap(), results[1]["id"].as_str().unwrap()] {
        let (status, history) = call(
            port,
            "GET",
            &format!("/wapi/v1/history/orders?orderId={id}"),
            "",
            Some(&format!("instruction=orderHistoryQueryAll&orderId={id}")),
        );
        assert_eq!(status, 200, "{history}");
        assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
        assert_eq!(history[0]["status"], "Cancelled", "{history}");
    }
    let (status, fills) =
        call(port, "GET", "/wapi/v1/history/fills?order_id=1", "", Some("instruction=fillHistoryQueryAll&order_id=1"));
    assert_eq!((status, fills), (200, json!([])), "order 1 is not demo user 2's");

    // A withdrawal goes through the engine (more than the balance is refused) and is listed.
    // (Demo user 2 trades in the demo, so its balance moves by itself: the exact debit is checked
    // in gateway-json/tests/history_api.rs.)
    let body = r#"{"address":"addr-1","blockchain":"Solana","quantity":"1000000000","symbol":"USDC"}"#;
    let (status, refused) = call(
        port,
        "POST",
        "/wapi/v1/capital/withdrawals",
        body,
        Some("instruction=withdraw&address=addr-1&blockchain=Solana&quantity=1000000000&symbol=USDC"),
    );
    assert_eq!((status, refused["code"].as_str()), (400, Some("INSUFFICIENT_FUNDS")), "{refused}");
    let body = r#"{"address":"addr-1","blockchain":"Solana","quantity":"1.5","symbol":"USDC"}"#;
    let (status, withdrawal) = call(
        port,
        "POST",
        "/wapi/v1/capital/withdrawals",
        body,
        Some("instruction=withdraw&address=addr-1&blockchain=Solana&quantity=1.5&symbol=USDC"),
    );
    assert_eq!(status, 200, "{withdrawal}");
    assert_eq!(withdrawal["quantity"], "1.5");
    let (status, listed) =
        call(port, "GET", "/wapi/v1/capital/withdrawals", "", Some("instruction=withdrawalQueryAll"));
    assert_eq!(status, 200);
    assert_eq!(listed, json!([withdrawal]), "only the accepted withdrawal");

    // The OpenAPI document, and a body over the configured limit (64 KiB by default).
    let (status, document) = call(port, "GET", "/api/v1/openapi.json", "", None);
    assert_eq!(status, 200);
    assert!(document["paths"]["/wapi/v1/history/fills"]["get"].is_object());
    let huge = format!(r#"{{"symbol":"BTC_USDC","pad":"{}"}}"#, "x".repeat(70_000));
    let (status, refused) = call(port, "DELETE", "/api/v1/orders", &huge, Some("instruction=orderCancelAll"));
    assert_eq!((status, refused["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")), "{refused}");

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
