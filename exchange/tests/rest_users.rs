//! Users, sessions, API keys and the admin API on the real server binary, over real HTTP:
//! registration and login rules, session tokens (JWT) on the signed endpoints, tampered and
//! expired tokens, per-username login limits, key creation / listing / revocation (a revoked key
//! is refused by the next request), the admin token, deposits and withdrawals reflected in
//! `/api/v1/capital`, market halt and resume, cross-user isolation, and users, keys and balances
//! surviving `kill -9` and a restart.

mod support;

use base64::Engine as _;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::Server;

const ADMIN: &str = "test-admin-token-0123456789";

fn start(dir: &Path, extra: &[&str]) -> Server {
    let args: Vec<&str> = extra.iter().copied().chain(["run"]).collect();
    let env = [("EXCHANGE_ADMIN_TOKEN", ADMIN), ("EXCHANGE_JWT_SECRET", "a-test-secret-that-survives-restarts")];
    Server::start(dir, &args, &env)
}

/// One HTTP request with extra headers; the status and the JSON body.
fn request(port: u16, method: &str, path: &str, headers: &[(&str, String)], body: &str) -> (u16, Value) {
    let headers = format!("Content-Type: application/json\r\n{}", support::header_lines(headers));
    let response = support::request(port, method, path, &headers, body);
    (response.status(), serde_json::from_str(response.body()).unwrap_or(Value::Null))
}

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("Authorization", format!("Bearer {token}"))]
}

fn admin(port: u16, path: &str, body: Value) -> (u16, Value) {
    request(port, "POST", path, &bearer(ADMIN), &body.to_string())
}

/// Signature headers of `secret` over `instruction` and the sorted `&k=v` parameters.
fn signed(secret: &[u8; 32], instruction: &str, params: &str) -> Vec<(&'static str, String)> {
    support::signature(secret, &format!("instruction={instruction}{params}"))
}

fn register(port: u16, username: &str, password: &str) -> (u16, Value) {
    request(
        port,
        "POST",
        "/api/v1/auth/register",
        &[],
        &json!({"username": username, "password": password}).to_string(),
    )
}

fn login(port: u16, username: &str, password: &str) -> (u16, Value) {
    request(port, "POST", "/api/v1/auth/login", &[], &json!({"username": username, "password": password}).to_string())
}

fn token(port: u16, username: &str, password: &str) -> String {
    let (status, body) = login(port, username, password);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tokenType"], "Bearer");
    body["token"].as_str().unwrap().to_string()
}

fn order_body(price: &str) -> String {
    json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": price, "quantity": "0.01000"})
        .to_string()
}

fn book_state(port: u16) -> Value {
    let (status, market) = request(port, "GET", "/api/v1/market?symbol=BTC_USDC", &[], "");
    assert_eq!(status, 200);
    market["orderBookState"].clone()
}

/// Polls the public market until it shows `state` (the market view follows the engine's events).
fn wait_for_book_state(port: u16, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while book_state(port) != state {
        assert!(Instant::now() < deadline, "market never became {state}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn users_sessions_keys_admin_and_restart() {
    let dir = std::env::temp_dir().join(format!("exchange-rest-users-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut server = start(&dir, &[]);
    let port = server.http;

    // --- Registration and login rules.
    let (status, alice) = register(port, "Alice", "alice-password");
    assert_eq!(status, 201, "{alice}");
    assert_eq!(alice["username"], "alice");
    let alice_id = alice["userId"].as_u64().unwrap();
    assert!(alice_id >= 10_000, "registered ids stay clear of configured and demo users: {alice_id}");
    let (status, bob) = register(port, "bob", "bob-password");
    assert_eq!(status, 201);
    let bob_id = bob["userId"].as_u64().unwrap();
    assert_ne!(alice_id, bob_id);
    let (status, body) = register(port, "ALICE", "another-password");
    assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_CLIENT_REQUEST")));
    assert_eq!(body["message"], "Username already taken");
    let (status, body) = register(port, "carol", "short");
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("password"));
    let (status, body) = request(port, "POST", "/api/v1/auth/register", &[], r#"{"username":"x1","password":"y"#);
    assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_CLIENT_REQUEST")));
    let (status, body) = login(port, "alice", "wrong-password");
    assert_eq!((status, body["code"].as_str()), (401, Some("UNAUTHORIZED")));
    let (status, unknown) = login(port, "nobody", "whatever-password");
    assert_eq!(status, 401);
    assert_eq!(unknown["message"], body["message"], "unknown user and wrong password look the same");
    let alice_token = token(port, "ALICE", "alice-password");
    let bob_token = token(port, "bob", "bob-password");
    let (status, account) = request(port, "GET", "/api/v1/account", &bearer(&alice_token), "");
    assert_eq!((status, account["userId"].as_u64()), (200, Some(alice_id)));

    // --- The admin API needs its token.
    let deposit = json!({"userId": alice_id, "symbol": "USDC", "quantity": "10000"});
    let (status, _) = request(port, "POST", "/api/v1/admin/deposits", &[], &deposit.to_string());
    assert_eq!(status, 401, "missing admin token");
    let wrong = vec![("Authorization", "Bearer not-the-token".to_string())];
    let (status, _) = request(port, "POST", "/api/v1/admin/deposits", &wrong, &deposit.to_string());
    assert_eq!(status, 401, "wrong admin token");
    let (status, _) = request(port, "POST", "/api/v1/admin/deposits", &bearer(&alice_token), &deposit.to_string());
    assert_eq!(status, 401, "a user's session is not the admin token");

    // --- Deposits and withdrawals, answered after the engine, seen by /api/v1/capital.
    let (status, body) = admin(port, "/api/v1/admin/deposits", deposit.clone());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["available"], "10000");
    let (status, body) =
        admin(port, "/api/v1/admin/deposits", json!({"userId": bob_id, "symbol": "BTC", "quantity": "1.5"}));
    assert_eq!(status, 200, "{body}");
    let (status, capital) = request(port, "GET", "/api/v1/capital", &bearer(&alice_token), "");
    assert_eq!(status, 200, "{capital}");
    assert_eq!(capital["USDC"]["available"], "10000");
    assert!(capital.get("BTC").is_none(), "alice sees only her own balances: {capital}");
    let over = json!({"userId": alice_id, "symbol": "USDC", "quantity": "10000.000001"});
    let (status, body) = admin(port, "/api/v1/admin/withdrawals", over);
    assert_eq!((status, body["code"].as_str()), (400, Some("INSUFFICIENT_FUNDS")), "{body}");
    let (status, body) =
        admin(port, "/api/v1/admin/withdrawals", json!({"userId": alice_id, "symbol": "USDC", "quantity": "2500.5"}));
    assert_eq!((status, body["available"].as_str()), (200, Some("7499.5")), "{body}");
    let (status, capital) = request(port, "GET", "/api/v1/capital", &bearer(&alice_token), "");
    assert_eq!((status, &capital["USDC"]["available"]), (200, &json!("7499.5")));
    for bad in [
        json!({"userId": alice_id, "symbol": "DOGE", "quantity": "1"}),
        json!({"userId": alice_id, "symbol": "USDC", "quantity": "0"}),
        json!({"userId": alice_id, "symbol": "USDC", "quantity": "-1"}),
        json!({"userId": alice_id, "symbol": "USDC", "quantity": "1.0000001"}),
        json!({"userId": 0, "symbol": "USDC", "quantity": "1"}),
        json!({"userId": alice_id, "symbol": "USDC"}),
    ] {
        let (status, body) = admin(port, "/api/v1/admin/deposits", bad.clone());
        assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_CLIENT_REQUEST")), "{bad}: {body}");
    }

    // --- A session token works on the signed endpoints; users are isolated.
    let (status, order) = request(port, "POST", "/api/v1/order", &bearer(&alice_token), &order_body("1000.0"));
    assert_eq!((status, order["status"].as_str()), (200, Some("New")), "{order}");
    let order_id = order["id"].as_str().unwrap().to_string();
    let (status, orders) = request(port, "GET", "/api/v1/orders?symbol=BTC_USDC", &bearer(&alice_token), "");
    assert_eq!((status, orders.as_array().map(Vec::len)), (200, Some(1)));
    let (status, orders) = request(port, "GET", "/api/v1/orders", &bearer(&bob_token), "");
    assert_eq!((status, orders), (200, json!([])), "bob sees none of alice's orders");
    let query = format!("/api/v1/order?symbol=BTC_USDC&orderId={order_id}");
    let (status, body) = request(port, "GET", &query, &bearer(&bob_token), "");
    assert_eq!((status, body["code"].as_str()), (404, Some("RESOURCE_NOT_FOUND")));
    let cancel = json!({"symbol": "BTC_USDC", "orderId": order_id}).to_string();
    let (status, body) = request(port, "DELETE", "/api/v1/order", &bearer(&bob_token), &cancel);
    assert_eq!((status, body["code"].as_str()), (404, Some("RESOURCE_NOT_FOUND")), "bob cannot cancel it");
    let (status, capital) = request(port, "GET", "/api/v1/capital", &bearer(&bob_token), "");
    assert_eq!((status, capital.get("USDC")), (200, None), "{capital}");
    let (status, body) = request(port, "GET", &query, &bearer(&alice_token), "");
    assert_eq!((status, body["status"].as_str()), (200, Some("New")), "still open after bob's attempts");

    // Tampered, truncated and foreign tokens are refused.
    let mut parts: Vec<String> = alice_token.split('.').map(String::from).collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = String::from_utf8(b64.decode(&parts[1]).unwrap()).unwrap();
    parts[1] = b64.encode(payload.replace(&alice_id.to_string(), &bob_id.to_string()));
    for forged in [parts.join("."), alice_token[..alice_token.len() - 2].to_string(), "abc.def.ghi".to_string()] {
        let (status, body) = request(port, "GET", "/api/v1/capital", &bearer(&forged), "");
        assert_eq!((status, body["code"].as_str()), (401, Some("UNAUTHORIZED")), "{forged}");
    }

    // --- API keys: generate, register, list, sign with, revoke.
    let (status, generated) =
        request(port, "POST", "/api/v1/account/keys", &bearer(&alice_token), r#"{"label":"trading bot"}"#);
    assert_eq!(status, 201, "{generated}");
    let secret: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(generated["secret"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let (status, capital) = request(port, "GET", "/api/v1/capital", &signed(&secret, "balanceQuery", ""), "");
    assert_eq!(status, 200, "{capital}");
    let (_, by_session) = request(port, "GET", "/api/v1/capital", &bearer(&alice_token), "");
    assert_eq!(capital, by_session, "the generated key acts for alice");
    let own_secret = [77u8; 32];
    let own_public = base64::engine::general_purpose::STANDARD
        .encode(SigningKey::from_bytes(&own_secret).verifying_key().to_bytes());
    let (status, registered) = request(
        port,
        "POST",
        "/api/v1/account/keys",
        &bearer(&alice_token),
        &json!({"publicKey": own_public, "label": "laptop"}).to_string(),
    );
    assert_eq!((status, registered.get("secret")), (201, None), "{registered}");
    let (status, body) = request(
        port,
        "POST",
        "/api/v1/account/keys",
        &bearer(&bob_token),
        &json!({"publicKey": own_public}).to_string(),
    );
    assert_eq!(status, 400, "a key already registered to alice: {body}");
    let (status, body) =
        request(port, "POST", "/api/v1/account/keys", &bearer(&alice_token), r#"{"publicKey":"AAAA"}"#);
    assert_eq!(status, 400, "{body}");
    let (status, keys) = request(port, "GET", "/api/v1/account/keys", &bearer(&alice_token), "");
    assert_eq!((status, keys.as_array().map(Vec::len)), (200, Some(2)), "{keys}");
    assert_eq!(keys[0]["label"], "trading bot");
    assert!(keys[0].get("secret").is_none(), "the secret is shown only once");
    let (status, keys) = request(port, "GET", "/api/v1/account/keys", &bearer(&bob_token), "");
    assert_eq!((status, keys), (200, json!([])));
    // An API key cannot manage keys: only a session can.
    let (status, _) = request(port, "GET", "/api/v1/account/keys", &signed(&secret, "balanceQuery", ""), "");
    assert_eq!(status, 401);
    // Bob cannot revoke alice's key.
    let revoke = json!({"apiKey": generated["apiKey"]}).to_string();
    let (status, _) = request(port, "DELETE", "/api/v1/account/keys", &bearer(&bob_token), &revoke);
    assert_eq!(status, 404);
    let (status, revoked) = request(port, "DELETE", "/api/v1/account/keys", &bearer(&alice_token), &revoke);
    assert_eq!((status, revoked["revoked"].as_bool()), (200, Some(true)), "{revoked}");
    let (status, body) = request(port, "GET", "/api/v1/capital", &signed(&secret, "balanceQuery", ""), "");
    assert_eq!((status, body["message"].as_str()), (401, Some("Unknown API key")), "a revoked key is refused");
    let (status, _) = request(port, "GET", "/api/v1/capital", &signed(&own_secret, "balanceQuery", ""), "");
    assert_eq!(status, 200, "the other key still works");

    // --- Halt and resume.
    let (status, body) = admin(port, "/api/v1/admin/markets/halt", json!({"symbol": "BTC_USDC"}));
    assert_eq!((status, body["orderBookState"].as_str()), (200, Some("CancelOnly")), "{body}");
    wait_for_book_state(port, "CancelOnly");
    let (status, body) = request(port, "POST", "/api/v1/order", &bearer(&alice_token), &order_body("1001.0"));
    assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_ORDER")), "{body}");
    assert_eq!(body["message"], "Market is halted");
    let (status, body) = request(port, "DELETE", "/api/v1/order", &bearer(&alice_token), &cancel);
    assert_eq!((status, body["status"].as_str()), (200, Some("Cancelled")), "cancels work while halted: {body}");
    let (status, _) = admin(port, "/api/v1/admin/markets/halt", json!({"symbol": "NOPE_USDC"}));
    assert_eq!(status, 400);
    let (status, body) = admin(port, "/api/v1/admin/markets/resume", json!({"symbol": "BTC_USDC"}));
    assert_eq!((status, body["orderBookState"].as_str()), (200, Some("Open")), "{body}");
    wait_for_book_state(port, "Open");
    let (status, order) = request(port, "POST", "/api/v1/order", &bearer(&alice_token), &order_body("1002.0"));
    assert_eq!((status, order["status"].as_str()), (200, Some("New")), "{order}");

    // --- Admin-created user; then a halted market survives the restart too.
    let (status, dave) = admin(port, "/api/v1/admin/users", json!({"username": "dave", "password": "dave-password"}));
    assert_eq!(status, 201, "{dave}");
    let dave_id = dave["userId"].as_u64().unwrap();
    admin(port, "/api/v1/admin/markets/halt", json!({"symbol": "ETH_USDC"}));

    // --- Login attempts per username are limited.
    let statuses: Vec<u16> = (0..11).map(|_| login(port, "carol", "guessing-password").0).collect();
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert_eq!(statuses[10], 429, "{statuses:?}");

    // --- kill -9 and restart: users, keys, revocations, balances and halts are kept.
    server.restart();
    let port = server.http;
    let (status, capital) = request(port, "GET", "/api/v1/capital", &bearer(&alice_token), "");
    assert_eq!(status, 200, "a token signed with the configured secret outlives the restart: {capital}");
    assert_eq!(capital["USDC"]["locked"].as_str().map(|s| s != "0"), Some(true), "{capital}");
    let alice_token = token(port, "alice", "alice-password");
    let (status, account) = request(port, "GET", "/api/v1/account", &bearer(&alice_token), "");
    assert_eq!((status, account["userId"].as_u64()), (200, Some(alice_id)));
    assert!(!token(port, "dave", "dave-password").is_empty());
    let (status, _) = request(port, "GET", "/api/v1/capital", &signed(&own_secret, "balanceQuery", ""), "");
    assert_eq!(status, 200, "the registered key works after the restart");
    let (status, _) = request(port, "GET", "/api/v1/capital", &signed(&secret, "balanceQuery", ""), "");
    assert_eq!(status, 401, "the revoked key stays revoked");
    let (status, keys) = request(port, "GET", "/api/v1/account/keys", &bearer(&alice_token), "");
    assert_eq!((status, keys.as_array().map(Vec::len)), (200, Some(2)));
    let (status, erin) = register(port, "erin", "erin-password");
    assert_eq!(status, 201);
    let erin_id = erin["userId"].as_u64().unwrap();
    assert!(erin_id > dave_id && erin_id > bob_id, "ids are never reused: {erin_id}");
    let (status, body) = register(port, "bob", "bob-password");
    assert_eq!((status, body["message"].as_str()), (400, Some("Username already taken")));
    let (status, market) = request(port, "GET", "/api/v1/market?symbol=ETH_USDC", &[], "");
    assert_eq!((status, market["orderBookState"].as_str()), (200, Some("CancelOnly")), "the halt is engine state");
    assert_eq!(book_state(port), "Open");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn session_tokens_expire() {
    let dir = std::env::temp_dir().join(format!("exchange-rest-jwt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = start(&dir, &["--jwt-ttl-seconds", "2"]);
    let port = server.http;
    assert_eq!(register(port, "frank", "frank-password").0, 201);
    let (status, session) = login(port, "frank", "frank-password");
    assert_eq!(status, 200);
    let expires_at = session["expiresAt"].as_u64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(expires_at > now && expires_at <= now + 2_000, "{expires_at} vs {now}");
    let token = session["token"].as_str().unwrap();
    let (status, _) = request(port, "GET", "/api/v1/capital", &bearer(token), "");
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(expires_at - now + 1_100));
    let (status, body) = request(port, "GET", "/api/v1/capital", &bearer(token), "");
    assert_eq!((status, body["message"].as_str()), (401, Some("Session expired, log in again")));
    let (status, _) = request(port, "GET", "/api/v1/orders", &bearer(token), "");
    assert_eq!(status, 401);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
