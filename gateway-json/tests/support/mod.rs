//! The test harness the signed REST tests share: users' keys and signatures (as Backpack
//! clients compute them, with ed25519-dalek), an engine with funded users, and the in-process
//! engine + `RestGateway` + `private_router` stack. Each test file compiles this module on its
//! own and uses only part of it, hence `dead_code` is allowed.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine as _;
use codec::UserId;
use ed25519_dalek::{Signer, SigningKey};
use engine::bus::{BroadcastRing, IngressRing};
use engine::testkit::{EngineLoop, commands};
use engine::{CommandContext, Engine, EngineConfig};
use gateway_binary::Credentials;
use gateway_json::{AccountViews, PrivateState, RestGateway, private_router};
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

/// The ed25519 secret key of `user`: distinct per user, and not the user id itself.
pub fn secret(user: u64) -> [u8; 32] {
    [(user + 100) as u8; 32]
}

/// Standard base64, as the signing headers carry keys and signatures.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The `X-API-Key` of `user`: its base64 public key.
pub fn api_key(user: u64) -> String {
    b64(&SigningKey::from_bytes(&secret(user)).verifying_key().to_bytes())
}

/// Wall-clock milliseconds since the epoch, as a request's `X-Timestamp`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The signed parameters of a JSON body or query, built independently of the server: keys
/// sorted, strings unquoted, other values as JSON text, each as `&k=v`.
pub fn params_of(body: &Value) -> String {
    let mut pairs: Vec<(String, String)> = body
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("&{k}={v}")).collect()
}

/// `user`'s base64 signature of `text`.
pub fn sign(user: u64, text: &str) -> String {
    b64(&SigningKey::from_bytes(&secret(user)).sign(text.as_bytes()).to_bytes())
}

/// The four signing headers of a request by `user` whose signed string is `signed`.
pub fn auth_headers(user: u64, signed: &str, timestamp: u64, window: u64) -> Vec<(&'static str, String)> {
    vec![
        ("x-api-key", api_key(user)),
        ("x-signature", sign(user, signed)),
        ("x-timestamp", timestamp.to_string()),
        ("x-window", window.to_string()),
    ]
}

/// An engine over `config` where users `1..=users` each hold 1 BTC and 10,000 USDC, with the
/// users' keys registered; also returns the sequence of the last deposit.
pub fn funded_engine(config: &EngineConfig, users: u64) -> (Engine, Arc<Credentials>, u64) {
    let mut engine = Engine::new(config).unwrap();
    let credentials = Arc::new(Credentials::default());
    let mut events = Vec::new();
    let mut sequence = 0;
    for user in 1..=users {
        credentials.insert(gateway_binary::client::api_key_of(&secret(user)), UserId::new(user));
        for (asset, amount) in [(0, 100_000_000), (1, 10_000_000_000)] {
            sequence += 1;
            engine.execute(CommandContext::new(sequence, 0), &commands::deposit(user, asset, amount), &mut events);
        }
    }
    (engine, credentials, sequence)
}

/// A real engine on its own thread behind the rings (`EngineLoop`), a `RestGateway` dispatcher
/// following the egress ring, and `private_router` in front; stopped on drop.
pub struct Harness {
    pub router: Router,
    engine: Option<EngineLoop>,
    gateway: Option<RestGateway>,
}

impl Harness {
    /// The stack over `config` with users `1..=users` funded as [`funded_engine`] does.
    pub fn start(config: EngineConfig, users: u64) -> Self {
        let (engine, credentials, sequence) = funded_engine(&config, users);
        // Seeded from the engine, like the server does after recovery.
        let views = Arc::new(AccountViews::from_engine(&engine, &config));
        let ingress = Arc::new(IngressRing::new(64));
        let egress = BroadcastRing::new(1 << 14);
        let gateway = RestGateway::start(views, egress.subscribe_from(0)).unwrap();
        let engine_loop = EngineLoop::start(engine, sequence, ingress.clone(), egress.clone());
        let state = PrivateState::new(&gateway, credentials, ingress, Arc::new(config));
        Self { router: private_router(state), engine: Some(engine_loop), gateway: Some(gateway) }
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

/// Sends a request through `router` and returns its status and JSON body (`Null` when empty).
pub async fn send_request(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{status}: {e}: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, value)
}

/// [`send_request`] of a JSON body with explicit headers.
pub async fn send(
    router: &Router,
    method: Method,
    uri: &str,
    body: &str,
    headers: &[(&str, String)],
) -> (StatusCode, Value) {
    let mut request =
        Request::builder().method(method).uri(uri).header("content-type", "application/json; charset=utf-8");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    send_request(router, request.body(Body::from(body.to_string())).unwrap()).await
}
