//! The Backpack-compatible WebSocket API (docs/websocket-api.md): an axum WebSocket endpoint on
//! the HTTP port (`GET /` with `Upgrade: websocket`, also `/ws`) in front of a
//! [`marketdata::Publisher`].
//!
//! A client sends `{"method":"SUBSCRIBE","params":["depth.SOL_USDC",...]}` (or `UNSUBSCRIBE`),
//! optionally with an `"id"` (answered with `{"result":null,"id":...}`). Private streams
//! (`account.orderUpdate[.<symbol>]`, `account.balanceUpdate`) need either
//! `"signature": [apiKey, signature, timestamp, window]` over
//! `instruction=subscribe&timestamp=<timestamp>&window=<window>` (Backpack's signing, verified
//! with [`crate::auth`] against the shared API keys) or `"jwt": "<token>"` when a JWT verifier is
//! configured ([`WsState::with_jwt`]). The user comes from the credentials only, so a client can
//! never subscribe to another user's events.
//!
//! Bad requests get an error frame `{"id":...,"error":{"code":...,"message":"..."}}` and the
//! connection stays open (codes: [`ERROR_INVALID_REQUEST`] etc.). The server pings every
//! [`WsConfig::ping_interval`] and closes a connection whose ping stays unanswered for
//! [`WsConfig::pong_timeout`]. Limits: subscriptions per connection, connections per IP (`429`
//! on the upgrade), inbound message size and rate (error frames, then a close after
//! [`WsConfig::strikes_max`] violations).

use crate::ApiError;
use crate::auth::{self, SignedParams};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use codec::UserId;
use futures_util::SinkExt;
use gateway_binary::Credentials;
use marketdata::{Delivery, Publisher, StreamKey, StreamSpec, SubscribeError, Subscription};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Error code: the message is not a valid request (bad JSON, unknown method, too large).
pub const ERROR_INVALID_REQUEST: u32 = 4000;
/// Error code: an unknown or malformed stream name.
pub const ERROR_INVALID_STREAM: u32 = 4001;
/// Error code: a private stream without valid credentials.
pub const ERROR_UNAUTHORIZED: u32 = 4002;
/// Error code: too many subscriptions on this connection.
pub const ERROR_LIMIT: u32 = 4003;
/// Error code: the stream is temporarily unavailable (market data resynchronising).
pub const ERROR_UNAVAILABLE: u32 = 4004;
/// Error code: too many messages (rate limit).
pub const ERROR_RATE_LIMITED: u32 = 4029;

/// Close code for policy closes (lagging, pong timeout, abuse): 1008 "policy violation".
const CLOSE_POLICY: u16 = 1008;

/// Verifies a web-page JWT and returns its user (`None`: invalid or expired).
pub type JwtVerifier = Arc<dyn Fn(&str) -> Option<UserId> + Send + Sync>;

/// WebSocket limits and timers.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// How often the server pings (Backpack: 60 s).
    pub ping_interval: Duration,
    /// How long a ping may stay unanswered before the connection is closed (Backpack: 120 s).
    pub pong_timeout: Duration,
    /// Streams one connection may subscribe to.
    pub subscriptions_max: usize,
    /// Open connections per client IP address.
    pub connections_per_ip: usize,
    /// Largest inbound text message, bytes (larger ones get an error frame; above four times
    /// this the protocol layer drops the connection).
    pub message_bytes_max: usize,
    /// Sustained inbound messages per second.
    pub messages_per_second: u32,
    /// Inbound burst allowance, messages.
    pub burst: u32,
    /// Limit violations (rate, size) tolerated before the connection is closed.
    pub strikes_max: u32,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(60),
            pong_timeout: Duration::from_secs(120),
            subscriptions_max: 100,
            connections_per_ip: 50,
            message_bytes_max: 16 * 1024,
            messages_per_second: 10,
            burst: 50,
            strikes_max: 20,
        }
    }
}

struct Inner {
    publisher: Arc<Publisher>,
    credentials: Arc<Credentials>,
    config: WsConfig,
    jwt: Option<JwtVerifier>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// What the WebSocket endpoint shares.
#[derive(Clone)]
pub struct WsState {
    inner: Arc<Inner>,
}

impl WsState {
    /// The endpoint in front of `publisher`, with API keys from `credentials` (the same as the
    /// REST and SBE gateways').
    pub fn new(publisher: Arc<Publisher>, credentials: Arc<Credentials>, config: WsConfig) -> Self {
        Self { inner: Arc::new(Inner { publisher, credentials, config, jwt: None, per_ip: Mutex::default() }) }
    }

    /// Accepts `"jwt": "<token>"` in SUBSCRIBE messages, verified by `verifier`.
    pub fn with_jwt(self, verifier: JwtVerifier) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                publisher: inner.publisher.clone(),
                credentials: inner.credentials.clone(),
                config: inner.config.clone(),
                jwt: Some(verifier),
                per_ip: Mutex::default(),
            }),
        }
    }

    /// The publisher behind the endpoint.
    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.inner.publisher
    }

    /// Reserves a connection slot for `ip` (no limit without a known address).
    fn admit(&self, ip: Option<IpAddr>) -> Option<IpGuard> {
        let Some(ip) = ip else { return Some(IpGuard { state: self.clone(), ip: None }) };
        let mut per_ip = self.inner.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_ip.entry(ip).or_default();
        if *count >= self.inner.config.connections_per_ip {
            return None;
        }
        *count += 1;
        Some(IpGuard { state: self.clone(), ip: Some(ip) })
    }
}

struct IpGuard {
    state: WsState,
    ip: Option<IpAddr>,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut per_ip = self.state.inner.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

/// The WebSocket routes: `GET /` and `GET /ws` (both upgrade). Serve the router with
/// `into_make_service_with_connect_info::<SocketAddr>()` (or the limited listener's
/// [`crate::limits::PeerAddr`]) for the per-IP limit to apply.
pub fn ws_router(state: WsState) -> Router {
    Router::new().route("/", get(upgrade)).route("/ws", get(upgrade)).with_state(state)
}

async fn upgrade(
    State(state): State<WsState>,
    extensions: Extensions,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::bad_request(format!(
                "This is the WebSocket endpoint: connect with a WebSocket client ({rejection})"
            ))
            .into_response();
        }
    };
    let ip = crate::limits::client_ip(&extensions);
    let Some(guard) = state.admit(ip) else {
        return ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "TOO_MANY_REQUESTS",
            message: "Too many WebSocket connections from this address".into(),
        }
        .into_response();
    };
    let limit = state.inner.config.message_bytes_max.saturating_mul(4).max(1024);
    ws.max_message_size(limit).max_frame_size(limit).on_upgrade(move |socket| connection(socket, state, guard))
}

/// An integer token bucket (milli-messages).
struct Bucket {
    tokens: u64,
    capacity: u64,
    per_second: u64,
    last: Instant,
}

impl Bucket {
    fn new(config: &WsConfig) -> Self {
        let capacity = u64::from(config.burst.max(1)) * 1_000;
        Self { tokens: capacity, capacity, per_second: u64::from(config.messages_per_second), last: Instant::now() }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed_ms = u64::try_from(now.duration_since(self.last).as_millis()).unwrap_or(u64::MAX);
        if elapsed_ms > 0 {
            self.tokens = self.tokens.saturating_add(elapsed_ms.saturating_mul(self.per_second)).min(self.capacity);
            self.last = now;
        }
        if self.tokens >= 1_000 {
            self.tokens -= 1_000;
            true
        } else {
            false
        }
    }
}

fn error_frame(id: &Value, code: u32, message: impl Into<String>) -> String {
    json!({ "id": id, "error": { "code": code, "message": message.into() } }).to_string()
}

/// A SUBSCRIBE / UNSUBSCRIBE request.
#[derive(Deserialize)]
struct Request {
    method: String,
    #[serde(default)]
    params: Vec<String>,
    #[serde(default)]
    id: Value,
    #[serde(default)]
    signature: Option<Vec<Value>>,
    #[serde(default)]
    jwt: Option<String>,
}

/// One connection's state besides the socket.
struct Session {
    state: WsState,
    subscription: Subscription,
    /// Canonical stream name → key, for UNSUBSCRIBE.
    streams: HashMap<String, StreamKey>,
}

impl Session {
    fn canonical(&self, spec: &StreamSpec) -> String {
        // Private names do not depend on the user.
        spec.key(Some(UserId::new(0))).map_or_else(String::new, |key| self.state.inner.publisher.stream_name(&key))
    }

    fn authenticate(&self, request: &Request) -> Result<UserId, String> {
        let inner = &self.state.inner;
        if let Some(parts) = &request.signature {
            let text = |index: usize| -> Option<String> {
                match parts.get(index)? {
                    Value::String(text) => Some(text.clone()),
                    Value::Number(number) => Some(number.to_string()),
                    _ => None,
                }
            };
            let number = |index: usize| text(index).and_then(|t| t.parse::<u64>().ok());
            let (Some(key), Some(signature), Some(timestamp)) = (text(0), text(1), number(2)) else {
                return Err("Invalid signature: expected [apiKey, signature, timestamp, window]".into());
            };
            let window = if parts.len() > 3 {
                number(3).ok_or("Invalid signature: window must be milliseconds")?
            } else {
                auth::WINDOW_DEFAULT_MS
            };
            return auth::verify_signature(
                &inner.credentials,
                &key,
                &signature,
                timestamp,
                window,
                "subscribe",
                &SignedParams::new(),
                auth::now_ms(),
            )
            .map_err(|error| error.message);
        }
        if let Some(token) = &request.jwt {
            let verifier = inner.jwt.as_ref().ok_or("JWT authentication is not enabled on this server")?;
            return verifier(token).ok_or_else(|| "Invalid or expired JWT".into());
        }
        Err("Private streams need a signature (or a JWT)".into())
    }

    /// Handles one text message; returns the frames to send back.
    fn handle(&mut self, text: &str) -> Option<String> {
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(error) => {
                return Some(error_frame(&Value::Null, ERROR_INVALID_REQUEST, format!("Invalid JSON: {error}")));
            }
        };
        let id = value.get("id").cloned().unwrap_or(Value::Null);
        let request: Request = match serde_json::from_value(value) {
            Ok(request) => request,
            Err(error) => {
                return Some(error_frame(
                    &id,
                    ERROR_INVALID_REQUEST,
                    format!("Invalid request: {error} (expected {{\"method\", \"params\"}})"),
                ));
            }
        };
        let id = &request.id;
        let method = request.method.to_ascii_uppercase();
        if method != "SUBSCRIBE" && method != "UNSUBSCRIBE" {
            return Some(error_frame(
                id,
                ERROR_INVALID_REQUEST,
                format!("Unknown method {}: expected SUBSCRIBE or UNSUBSCRIBE", request.method),
            ));
        }
        if request.params.is_empty() {
            return Some(error_frame(id, ERROR_INVALID_REQUEST, "params must list at least one stream"));
        }
        let publisher = &self.state.inner.publisher;
        let mut specs = Vec::with_capacity(request.params.len());
        for name in &request.params {
            match publisher.parse(name) {
                Ok(spec) => specs.push(spec),
                Err(message) => return Some(error_frame(id, ERROR_INVALID_STREAM, message)),
            }
        }
        if method == "UNSUBSCRIBE" {
            for spec in &specs {
                if let Some(key) = self.streams.remove(&self.canonical(spec)) {
                    self.subscription.unsubscribe(&key);
                }
            }
        } else {
            let user = if specs.iter().any(StreamSpec::is_private) {
                match self.authenticate(&request) {
                    Ok(user) => Some(user),
                    Err(message) => return Some(error_frame(id, ERROR_UNAUTHORIZED, message)),
                }
            } else {
                None
            };
            let fresh = specs.iter().filter(|spec| !self.streams.contains_key(&self.canonical(spec))).count();
            let limit = self.state.inner.config.subscriptions_max;
            if self.streams.len() + fresh > limit {
                return Some(error_frame(
                    id,
                    ERROR_LIMIT,
                    format!("Too many subscriptions: at most {limit} streams per connection"),
                ));
            }
            for spec in &specs {
                let Some(key) = spec.key(user) else { continue };
                let name = self.canonical(spec);
                // A private stream subscribed again with other credentials moves to that user.
                if let Some(old) = self.streams.get(&name).copied().filter(|old| *old != key) {
                    self.subscription.unsubscribe(&old);
                }
                match self.subscription.subscribe(key) {
                    Ok(_) => {
                        self.streams.insert(name, key);
                    }
                    Err(error @ SubscribeError::Stale) => {
                        return Some(error_frame(id, ERROR_UNAVAILABLE, error.to_string()));
                    }
                    Err(error) => return Some(error_frame(id, ERROR_INVALID_REQUEST, error.to_string())),
                }
            }
        }
        (!id.is_null()).then(|| json!({ "result": null, "id": id }).to_string())
    }
}

fn close_message(reason: &str) -> Message {
    // A close reason is at most 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame { code: CLOSE_POLICY, reason: Utf8Bytes::from(&reason[..end]) }))
}

async fn connection(mut socket: WebSocket, state: WsState, _guard: IpGuard) {
    let config = state.inner.config.clone();
    let subscription = state.inner.publisher.connect();
    let mut session = Session { state, subscription, streams: HashMap::new() };
    let mut bucket = Bucket::new(&config);
    let mut strikes = 0u32;
    let mut ping = tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    // When the oldest unanswered ping was sent.
    let mut unanswered: Option<Instant> = None;
    loop {
        let pong_deadline = unanswered.map(|sent| sent + config.pong_timeout);
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(message)) = incoming else { break };
                let limited = matches!(message, Message::Text(_) | Message::Binary(_)) && !bucket.take();
                let reply = match message {
                    Message::Text(_) | Message::Binary(_) if limited => {
                        strikes += 1;
                        Some(error_frame(&Value::Null, ERROR_RATE_LIMITED, format!(
                            "Too many messages: at most {} per second", config.messages_per_second
                        )))
                    }
                    Message::Text(text) => {
                        if text.len() > config.message_bytes_max {
                            strikes += 1;
                            Some(error_frame(&Value::Null, ERROR_INVALID_REQUEST, format!(
                                "Message too large: at most {} bytes", config.message_bytes_max
                            )))
                        } else {
                            session.handle(text.as_str())
                        }
                    }
                    Message::Binary(_) => {
                        strikes += 1;
                        Some(error_frame(&Value::Null, ERROR_INVALID_REQUEST, "Binary messages are not supported"))
                    }
                    Message::Pong(_) => {
                        unanswered = None;
                        None
                    }
                    // Pings are answered by the protocol layer.
                    Message::Ping(_) => None,
                    Message::Close(_) => break,
                };
                if strikes > config.strikes_max {
                    let _ = socket.send(close_message("Too many invalid or excess messages")).await;
                    break;
                }
                if let Some(reply) = reply {
                    if socket.send(Message::Text(reply.into())).await.is_err() {
                        break;
                    }
                }
            }
            delivery = session.subscription.next() => match delivery {
                Delivery::Frames(frames) => {
                    // Queue them all, then one flush: one write for a batch, not one per frame.
                    let mut failed = false;
                    for frame in frames {
                        let Ok(text) = Utf8Bytes::try_from(frame) else { continue };
                        if socket.feed(Message::Text(text)).await.is_err() {
                            failed = true;
                            break;
                        }
                    }
                    if failed || socket.flush().await.is_err() {
                        break;
                    }
                }
                Delivery::Lagged(lagged) => {
                    let notice = session.subscription.lag_notice(&lagged);
                    let keys: Vec<StreamKey> = lagged.iter().map(|(key, _)| *key).collect();
                    let sent = match Utf8Bytes::try_from(notice) {
                        Ok(text) => socket.send(Message::Text(text)).await.is_ok(),
                        Err(_) => true,
                    };
                    // On too many resyncs the subscription is closed: the next delivery says so.
                    session.subscription.resync(&keys);
                    if !sent {
                        break;
                    }
                }
                Delivery::Closed(reason) => {
                    let _ = socket.send(close_message(&reason)).await;
                    break;
                }
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    break;
                }
                unanswered.get_or_insert_with(Instant::now);
            }
            () = async {
                match pong_deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            } => {
                let _ = socket.send(close_message("Pong timeout")).await;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer;

    /// The worked example of docs/websocket-api.md.
    #[test]
    fn documented_subscribe_signature_verifies() {
        let secret = [7u8; 32];
        let credentials = Credentials::default();
        credentials.insert(gateway_binary::client::api_key_of(&secret), UserId::new(42));
        let text = auth::signing_string("subscribe", &SignedParams::new(), 1_764_021_600_000, 5_000);
        assert_eq!(text, "instruction=subscribe&timestamp=1764021600000&window=5000");
        let signature = ed25519_dalek::SigningKey::from_bytes(&secret).sign(text.as_bytes());
        use base64::Engine as _;
        let signature = base64::engine::general_purpose::STANDARD.encode(signature.to_bytes());
        assert_eq!(
            signature,
            "/DZMNlz7QJ2Hva0p48yJeMhxRNpIUpFq0+b9N/EKLbt2dVYc8iGcWleAPUknEq8Z+aIVJ+d56vxCI06bKcXoBQ=="
        );
        let key = "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=";
        let verify = |now| {
            auth::verify_signature(
                &credentials,
                key,
                &signature,
                1_764_021_600_000,
                5_000,
                "subscribe",
                &SignedParams::new(),
                now,
            )
        };
        assert_eq!(verify(1_764_021_601_000), Ok(UserId::new(42)));
        assert!(verify(1_764_021_606_000).is_err(), "expired");
    }

    fn session() -> Session {
        let config = engine::EngineConfig::sample();
        let view = Arc::new(marketdata::MarketView::new(&config));
        let publisher = Publisher::new(view, &config, marketdata::PublisherConfig::default());
        let state = WsState::new(publisher, Arc::new(Credentials::default()), WsConfig::default());
        let subscription = state.inner.publisher.connect();
        Session { state, subscription, streams: HashMap::new() }
    }

    proptest::proptest! {
        /// Any message: never a panic, and every answer is JSON (a result with the request's id
        /// or an error frame with a code and a message).
        #[test]
        fn any_message_gets_a_json_answer_or_none(
            text in r#"\{("method":"(SUBSCRIBE|UNSUBSCRIBE|subscribe|X)",?)?("params":\[("(depth|trade|account)\.[A-Z_.a-z0-9]{0,12}",?){0,3}\],?)?("id":(1|"x"|null|\[\]),?)?("signature":\[("[A-Za-z0-9+/=]{0,8}",?){0,4}\],?)?("jwt":"t",?)?\}|\PC{0,60}"#
        ) {
            let mut session = session();
            if let Some(answer) = session.handle(&text) {
                let value: Value = serde_json::from_str(&answer).unwrap();
                let is_result = value.get("result").is_some() && !value["id"].is_null();
                let is_error = value["error"]["code"].is_u64() && value["error"]["message"].is_string();
                proptest::prop_assert!(is_result || is_error, "{}", answer);
            }
            proptest::prop_assert!(session.streams.len() <= session.state.inner.config.subscriptions_max);
            proptest::prop_assert!(session.streams.keys().all(|name| !name.starts_with("account.")), "no private stream without credentials");
        }
    }

    #[test]
    fn token_bucket_refuses_beyond_the_burst() {
        let config = WsConfig { burst: 3, messages_per_second: 0, ..WsConfig::default() };
        let mut bucket = Bucket::new(&config);
        assert_eq!((0..5).map(|_| bucket.take()).filter(|ok| *ok).count(), 3);
    }
}
