//! Users, sessions, API keys and the admin API in-process: a real engine on its own thread
//! behind the ingress and egress rings (as in `private_api.rs`), the private, session and admin
//! routers merged as the server does. Covers: a session token on *every* signed endpoint and a
//! second user's token on each of them (never another user's data), the admin token, admin
//! deposits seen by the next balance query, halts, session renewal (`POST /api/v1/auth/refresh`)
//! and a table of malformed bodies that must all be 4xx `{code, message}`.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use engine::bus::{BroadcastRing, IngressRing};
use engine::testkit::EngineLoop;
use engine::{Engine, EngineConfig};
use gateway_binary::Credentials;
use gateway_json::{
    AccountViews, AdminState, PrivateState, RestGateway, UserStore, UsersConfig, admin_router, private_router,
    sessions_router,
};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

const ADMIN: &str = "admin-secret";

struct Harness {
    router: Router,
    engine: Option<EngineLoop>,
    gateway: Option<RestGateway>,
    dir: std::path::PathBuf,
}

impl Harness {
    fn start(name: &str) -> Self {
        Self::start_with(name, |_| {})
    }

    /// [`Harness::start`] with changed user-store settings.
    fn start_with(name: &str, users_config: impl FnOnce(&mut UsersConfig)) -> Self {
        let mut config = EngineConfig::sample();
        config.limits.orders_per_market_max = 4096;
        let engine = Engine::new(&config).unwrap();
        let credentials = Arc::new(Credentials::default());
        let dir = std::env::temp_dir().join(format!("users-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut settings = UsersConfig::new(&dir);
        users_config(&mut settings);
        let users = Arc::new(UserStore::open(settings, credentials.clone()).unwrap());
        let views = Arc::new(AccountViews::from_engine(&engine, &config));
        let ingress = Arc::new(IngressRing::new(64));
        let egress = BroadcastRing::new(1 << 14);
        let gateway = RestGateway::start(views, egress.subscribe_from(0)).unwrap();
        let engine_loop = EngineLoop::start(engine, 0, ingress.clone(), egress.clone());
        let private = PrivateState::new(&gateway, credentials, ingress, Arc::new(config)).with_users(users.clone());
        let router = private_router(private.clone())
            .merge(sessions_router(users.clone()))
            .merge(admin_router(AdminState::new(ADMIN, private, users)));
        Self { router, engine: Some(engine_loop), gateway: Some(gateway), dir }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        drop(self.engine.take());
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn send(router: &Router, method: Method, uri: &str, token: Option<&str>, body: &str) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router.clone().oneshot(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (status, value)
}

async fn session(router: &Router, username: &str) -> (u64, String) {
    let credentials = json!({"username": username, "password": "a long password"}).to_string();
    let (status, user) = send(router, Method::POST, "/api/v1/auth/register", None, &credentials).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let (status, login) = send(router, Method::POST, "/api/v1/auth/login", None, &credentials).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    (user["userId"].as_u64().unwrap(), login["token"].as_str().unwrap().to_string())
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, context: &str) {
    assert_eq!(status, expected, "{context}: {body}");
    assert!(body["code"].as_str().is_some_and(|c| !c.is_empty()), "{context}: {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{context}: {body}");
}

#[tokio::test]
async fn session_tokens_act_only_for_their_user_on_every_signed_endpoint() {
    let h = Harness::start("isolation");
    let r = &h.router;
    let (alice, alice_token) = session(r, "alice").await;
    let (_, bob_token) = session(r, "bob").await;
    for (user, symbol, quantity) in [(alice, "USDC", "5000"), (alice, "BTC", "1")] {
        let body = json!({"userId": user, "symbol": symbol, "quantity": quantity}).to_string();
        let (status, answer) = send(r, Method::POST, "/api/v1/admin/deposits", Some(ADMIN), &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    // Answered after the engine: the next balance query sees it.
    let (status, capital) = send(r, Method::GET, "/api/v1/capital", Some(&alice_token), "").await;
    assert_eq!((status, &capital["USDC"]["available"]), (StatusCode::OK, &json!("5000")), "{capital}");

    let order = json!({"symbol": "BTC_USDC", "side": "Ask", "orderType": "Limit", "price": "64000.0",
                       "quantity": "0.00200", "clientId": 5})
    .to_string();
    let (status, placed) = send(r, Method::POST, "/api/v1/order", Some(&alice_token), &order).await;
    assert_eq!((status, placed["status"].as_str()), (StatusCode::OK, Some("New")), "{placed}");
    let id = placed["id"].as_str().unwrap();

    // Bob's token, on every signed endpoint, never reaches alice's data.
    let by_id = format!("/api/v1/order?symbol=BTC_USDC&orderId={id}");
    let by_client_id = "/api/v1/order?symbol=BTC_USDC&clientId=5";
    for uri in [by_id.as_str(), by_client_id] {
        let (status, body) = send(r, Method::GET, uri, Some(&bob_token), "").await;
        assert_error(status, &body, StatusCode::NOT_FOUND, uri);
        let (status, body) = send(r, Method::GET, uri, Some(&alice_token), "").await;
        assert_eq!((status, body["id"].as_str()), (StatusCode::OK, Some(id)), "{uri}: {body}");
    }
    for query in ["", "?symbol=BTC_USDC"] {
        let (status, body) = send(r, Method::GET, &format!("/api/v1/orders{query}"), Some(&bob_token), "").await;
        assert_eq!((status, body), (StatusCode::OK, json!([])));
    }
    let (status, body) = send(r, Method::GET, "/api/v1/capital", Some(&bob_token), "").await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    for cancel in [json!({"symbol": "BTC_USDC", "orderId": id}), json!({"symbol": "BTC_USDC", "clientId": 5})] {
        let (status, body) = send(r, Method::DELETE, "/api/v1/order", Some(&bob_token), &cancel.to_string()).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "bob cancels alice's order");
    }
    // Bob's orders are his: an ask of his own without funds is refused for funds, not routed to alice.
    let (status, body) = send(r, Method::POST, "/api/v1/order", Some(&bob_token), &order).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INSUFFICIENT_FUNDS")), "{body}");

    // Halted: new orders refused, cancels work.
    let halt = json!({"symbol": "BTC_USDC"}).to_string();
    let (status, _) = send(r, Method::POST, "/api/v1/admin/markets/halt", Some(&alice_token), &halt).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a session is not the admin token");
    let (status, _) = send(r, Method::POST, "/api/v1/admin/markets/halt", Some(ADMIN), &halt).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(r, Method::POST, "/api/v1/order", Some(&alice_token), &order.replace(":5", ":6")).await;
    assert_eq!((status, body["message"].as_str()), (StatusCode::BAD_REQUEST, Some("Market is halted")), "{body}");
    let cancel = json!({"symbol": "BTC_USDC", "clientId": 5}).to_string();
    let (status, body) = send(r, Method::DELETE, "/api/v1/order", Some(&alice_token), &cancel).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("Cancelled")), "{body}");
    let (status, body) = send(r, Method::GET, "/api/v1/capital", Some(&alice_token), "").await;
    assert_eq!((status, &body["BTC"]["available"]), (StatusCode::OK, &json!("1")));
}

/// `POST /api/v1/auth/refresh`: a valid token gets a later-expiring token of the same user that
/// works on the signed endpoints; no token, a bad token or an expired one gets `401`.
#[tokio::test]
async fn a_session_token_is_renewed_before_it_expires_and_not_after() {
    let h = Harness::start_with("refresh", |users| users.jwt_ttl = std::time::Duration::from_secs(2));
    let r = &h.router;
    let credentials = json!({"username": "carol", "password": "a long password"}).to_string();
    let (status, user) = send(r, Method::POST, "/api/v1/auth/register", None, &credentials).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let (status, login) = send(r, Method::POST, "/api/v1/auth/login", None, &credentials).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let token = login["token"].as_str().unwrap().to_string();

    // Renewed a second later: a new token, expiring later, for the same user.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (status, renewed) = send(r, Method::POST, "/api/v1/auth/refresh", Some(&token), "").await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    assert_eq!((renewed["userId"].as_u64(), renewed["tokenType"].as_str()), (user["userId"].as_u64(), Some("Bearer")));
    assert!(renewed["expiresAt"].as_u64().unwrap() > login["expiresAt"].as_u64().unwrap(), "{login} {renewed}");
    let new_token = renewed["token"].as_str().unwrap().to_string();
    assert_ne!(new_token, token);

    // The old token expires (expiry is whole seconds: it is refused from the second after
    // `expiresAt`, while the renewed one is valid at least a second longer); the renewed one
    // still works, and renews again.
    let old_refused_ms = login["expiresAt"].as_u64().unwrap() + 1_050;
    let now_ms =
        u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(old_refused_ms.saturating_sub(now_ms))).await;
    let (status, body) = send(r, Method::GET, "/api/v1/capital", Some(&token), "").await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "old token after its lifetime");
    let (status, body) = send(r, Method::POST, "/api/v1/auth/refresh", Some(&token), "").await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "an expired token is not renewed");
    assert_eq!(body["message"], "Session expired, log in again");
    let (status, body) = send(r, Method::GET, "/api/v1/capital", Some(&new_token), "").await;
    assert_eq!(status, StatusCode::OK, "renewed token on a signed endpoint: {body}");
    let (status, body) = send(r, Method::GET, "/api/v1/account", Some(&new_token), "").await;
    assert_eq!((status, &body["username"]), (StatusCode::OK, &json!("carol")));
    let (status, body) = send(r, Method::POST, "/api/v1/auth/refresh", Some(&new_token), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // No token, or not a token.
    let (status, body) = send(r, Method::POST, "/api/v1/auth/refresh", None, "").await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "no token");
    let (status, body) = send(r, Method::POST, "/api/v1/auth/refresh", Some("not.a.token"), "").await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "bad token");
}

#[tokio::test]
async fn malformed_requests_are_clear_client_errors() {
    let h = Harness::start("malformed");
    let r = &h.router;
    let (alice, token) = session(r, "alice").await;
    let long = "x".repeat(300);
    let cases: Vec<(Method, &str, Option<&str>, String, StatusCode)> = vec![
        (Method::POST, "/api/v1/auth/register", None, "not json".into(), StatusCode::BAD_REQUEST),
        (Method::POST, "/api/v1/auth/register", None, "[]".into(), StatusCode::BAD_REQUEST),
        (Method::POST, "/api/v1/auth/register", None, "".into(), StatusCode::BAD_REQUEST),
        (Method::POST, "/api/v1/auth/register", None, r#"{"username":"abc"}"#.into(), StatusCode::BAD_REQUEST),
        (
            Method::POST,
            "/api/v1/auth/register",
            None,
            r#"{"username":"abc","password":"long enough","admin":true}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/auth/register",
            None,
            r#"{"username":12,"password":"long enough"}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/auth/register",
            None,
            json!({"username": long, "password": "long enough"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/auth/register",
            None,
            json!({"username": "white space", "password": "long enough"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/auth/register",
            None,
            json!({"username": "eve", "password": long}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (Method::POST, "/api/v1/auth/login", None, "{".into(), StatusCode::BAD_REQUEST),
        (
            Method::POST,
            "/api/v1/auth/login",
            None,
            json!({"username": "alice", "password": long}).to_string(),
            StatusCode::UNAUTHORIZED,
        ),
        (Method::GET, "/api/v1/account", None, "".into(), StatusCode::UNAUTHORIZED),
        (Method::GET, "/api/v1/account/keys", Some("garbage"), "".into(), StatusCode::UNAUTHORIZED),
        (Method::POST, "/api/v1/account/keys", Some(&token), r#"{"publicKey":"!!"}"#.into(), StatusCode::BAD_REQUEST),
        (
            Method::POST,
            "/api/v1/account/keys",
            Some(&token),
            json!({"publicKey": base64_zero_point()}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/account/keys",
            Some(&token),
            json!({"label": long}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (Method::POST, "/api/v1/account/keys", Some(&token), r#"{"lable":"typo"}"#.into(), StatusCode::BAD_REQUEST),
        (Method::DELETE, "/api/v1/account/keys", Some(&token), r#"{"apiKey":"nope"}"#.into(), StatusCode::NOT_FOUND),
        (Method::DELETE, "/api/v1/account/keys", Some(&token), "{}".into(), StatusCode::BAD_REQUEST),
        (Method::GET, "/api/v1/capital", Some(""), "".into(), StatusCode::UNAUTHORIZED),
        (Method::POST, "/api/v1/admin/deposits", None, "{}".into(), StatusCode::UNAUTHORIZED),
        (Method::POST, "/api/v1/admin/deposits", Some(ADMIN), "{}".into(), StatusCode::BAD_REQUEST),
        (
            Method::POST,
            "/api/v1/admin/deposits",
            Some(ADMIN),
            json!({"userId": -1, "symbol": "USDC", "quantity": "1"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/admin/deposits",
            Some(ADMIN),
            json!({"userId": alice, "symbol": "USDC", "quantity": "99999999999999999999999"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/admin/deposits",
            Some(ADMIN),
            json!({"userId": alice, "symbol": "USDC", "quantity": 5}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/admin/withdrawals",
            Some(ADMIN),
            json!({"userId": alice, "symbol": "USDC", "quantity": "1"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/admin/markets/halt",
            Some(ADMIN),
            r#"{"symbol":"btc_usdc"}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (Method::POST, "/api/v1/admin/markets/resume", Some(ADMIN), "null".into(), StatusCode::BAD_REQUEST),
        (
            Method::POST,
            "/api/v1/admin/users",
            Some(ADMIN),
            json!({"username": "alice", "password": "long enough"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, uri, token, body, expected) in cases {
        let context = format!("{method} {uri} {body}");
        let (status, answer) = send(r, method, uri, token, &body).await;
        assert_error(status, &answer, expected, &context);
    }
}

/// 32 bytes that are not an Ed25519 point (the key check must refuse them).
fn base64_zero_point() -> String {
    use base64::Engine as _;
    let bytes = (2u8..)
        .map(|y| {
            let mut bytes = [0u8; 32];
            bytes[0] = y;
            bytes
        })
        .find(|bytes| ed25519_dalek::VerifyingKey::from_bytes(bytes).is_err())
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
