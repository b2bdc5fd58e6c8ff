//! The signed REST API on the real server: starts the binary with `--demo` on ephemeral ports
//! and, as demo user 2 (secret: 32 bytes of 2), signs requests like a Backpack client: reads its
//! balances, places a resting limit bid below the demo ladder (inside the default ±10% price
//! band), finds it in the open orders, cancels it, and checks an unsigned request is refused.
//! Proves the private router, the REST dispatcher and the shared credentials are wired into the
//! server.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{JSON, Server, request, signature_lines};

/// One HTTP request; `signed` is `(instruction, sorted "&k=v" parameters)`.
fn call(port: u16, method: &str, path: &str, body: &str, signed: Option<(&str, &str)>) -> (u16, Value) {
    let mut headers = JSON.to_string();
    if let Some((instruction, params)) = signed {
        headers += &signature_lines(&[2u8; 32], &format!("instruction={instruction}{params}"));
    }
    let response = request(port, method, path, &headers, body);
    (response.status(), response.json(path))
}

#[test]
fn demo_server_serves_signed_orders_and_balances() {
    let dir = support::data_dir("rest-private");
    let server = Server::start(&dir, &["run", "--demo", "--demo-rate", "200"], &[]);
    let port = server.http;

    // The demo funds its users shortly after start.
    let deadline = Instant::now() + Duration::from_secs(20);
    let balances = loop {
        let (status, balances) = call(port, "GET", "/api/v1/capital", "", Some(("balanceQuery", "")));
        assert_eq!(status, 200, "{balances}");
        if balances.get("USDC").is_some() {
            break balances;
        }
        assert!(Instant::now() < deadline, "demo user 2 was never funded: {balances}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(balances["USDC"]["staked"], "0");

    let body = json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "56000.0",
                      "quantity": "0.01000", "clientId": 4000000000u32});
    let params = "&clientId=4000000000&orderType=Limit&price=56000.0&quantity=0.01000&side=Bid&symbol=BTC_USDC";
    let (status, order) = call(port, "POST", "/api/v1/order", &body.to_string(), Some(("orderExecute", params)));
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["status"], "New", "{order}");
    let id = order["id"].as_str().unwrap().to_string();

    let (status, open) =
        call(port, "GET", "/api/v1/orders?symbol=BTC_USDC", "", Some(("orderQueryAll", "&symbol=BTC_USDC")));
    assert_eq!(status, 200, "{open}");
    assert!(open.as_array().unwrap().iter().any(|o| o["id"] == id.as_str()), "{open}");

    let cancel = json!({"symbol": "BTC_USDC", "orderId": id});
    let params = format!("&orderId={id}&symbol=BTC_USDC");
    let (status, canceled) = call(port, "DELETE", "/api/v1/order", &cancel.to_string(), Some(("orderCancel", &params)));
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["status"], "Cancelled");

    let (status, refused) = call(port, "GET", "/api/v1/capital", "", None);
    assert_eq!((status, refused["code"].as_str()), (401, Some("UNAUTHORIZED")));

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
