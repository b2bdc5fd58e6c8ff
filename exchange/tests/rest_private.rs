//! The signed REST API on the real server: starts the binary with `--demo` on ephemeral ports
//! and, as demo user 2 (secret: 32 bytes of 2), signs requests like a Backpack client: reads its
//! balances, places a resting limit bid far below the market, finds it in the open orders,
//! cancels it, and checks an unsigned request is refused. Proves the private router, the REST
//! dispatcher and the shared credentials are wired into the server.

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_exchange");

/// One HTTP request; `signed` is `(instruction, sorted "&k=v" parameters)`.
fn call(port: u16, method: &str, path: &str, body: &str, signed: Option<(&str, &str)>) -> (u16, Value) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = SigningKey::from_bytes(&[2u8; 32]);
    let mut headers = String::new();
    if let Some((instruction, params)) = signed {
        let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        let text = format!("instruction={instruction}{params}&timestamp={timestamp}&window=5000");
        headers = format!(
            "X-API-Key: {}\r\nX-Signature: {}\r\nX-Timestamp: {timestamp}\r\nX-Window: 5000\r\n",
            b64.encode(key.verifying_key().to_bytes()),
            b64.encode(key.sign(text.as_bytes()).to_bytes())
        );
    }
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json; charset=utf-8\r\n{headers}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {response}")))
}

#[test]
fn demo_server_serves_signed_orders_and_balances() {
    let dir = std::env::temp_dir().join(format!("exchange-rest-private-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(BINARY)
        .args(["--data", dir.to_str().unwrap(), "--http-port", "0", "--sbe-port", "0", "--fix-port", "0"])
        .args(["run", "--demo", "--demo-rate", "200"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let port = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "server exited before listening");
        if line.contains("HTTP listening") {
            let address = line.split("listen=").nth(1).unwrap();
            break address.split_whitespace().next().unwrap().rsplit(':').next().unwrap().parse::<u16>().unwrap();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));

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

    let body = json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "1000.0",
                      "quantity": "0.01000", "clientId": 4000000000u32});
    let params = "&clientId=4000000000&orderType=Limit&price=1000.0&quantity=0.01000&side=Bid&symbol=BTC_USDC";
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

    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
