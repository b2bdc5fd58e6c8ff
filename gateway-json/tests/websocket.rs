//! The WebSocket API end to end with real WebSocket clients (tokio-tungstenite) against a real
//! axum server on loopback: a real engine on its own thread (`EngineLoop`) publishes to the
//! egress ring, the market-data feed applies it through the `Publisher`, and a mirror engine in
//! the test executes the same commands (the engine is deterministic) to know the true book.
//!
//! Covers subscribe / unsubscribe and error frames (with a healthy neighbour unaffected), the
//! fields of every public stream, private streams (signatures, JWT, isolation between users,
//! a trigger order's events),
//! gap-free depth ids and the REST-snapshot + diffs rebuild against the engine's book (also for
//! the conflated stream), the AMM pool stream, lagging connections (resync with a snapshot, or disconnect), the
//! ping / pong timeout, and the connection limits.

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use codec::{Command, Event, Side, UserId};
use ed25519_dalek::{Signer, SigningKey};
use engine::bus::{BroadcastRing, IngressCommand, IngressRing};
use engine::testkit::{EngineLoop, GlibcRand, commands};
use engine::{Book, CommandContext, Engine, EngineConfig};
use futures_util::{SinkExt, StreamExt};
use gateway_binary::Credentials;
use gateway_json::{WsConfig, WsState, public_router, ws_router};
use marketdata::format::MarketFormat;
use marketdata::{Feed, LagPolicy, MarketView, Publisher, PublisherConfig};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tower::ServiceExt;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

mod support;

use support::{b64, now_ms, secret};

/// `"signature": [apiKey, signature, timestamp, window]` of `signer` presenting `key_of`'s key.
fn signature(signer: u64, key_of: u64, timestamp: u64) -> Value {
    let key = b64(&SigningKey::from_bytes(&secret(key_of)).verifying_key().to_bytes());
    let text = format!("instruction=subscribe&timestamp={timestamp}&window=5000");
    let signature = b64(&SigningKey::from_bytes(&secret(signer)).sign(text.as_bytes()).to_bytes());
    json!([key, signature, timestamp.to_string(), "5000"])
}

struct Harness {
    addr: SocketAddr,
    rest: Router,
    ingress: Arc<IngressRing>,
    egress: Arc<BroadcastRing>,
    publisher: Arc<Publisher>,
    mirror: Engine,
    sequence: u64,
    /// Events the engine thread will have published (the mirror's count).
    expected_events: u64,
    engine: Option<EngineLoop>,
    feed: Option<Feed>,
}

impl Harness {
    /// Users 1..=3 with 10 BTC and 1,000,000 USDC each (pools beside ETH_USDC and SOL_USDC); with `run_engine` false nothing but the
    /// test publishes to the egress ring.
    async fn start(ws: WsConfig, publisher_config: PublisherConfig, run_engine: bool) -> Self {
        let mut config = EngineConfig::sample_with_pools();
        config.limits.orders_per_market_max = 1 << 16;
        let mut engine = Engine::new(&config).unwrap();
        let mut mirror = Engine::new(&config).unwrap();
        let credentials = Arc::new(Credentials::default());
        let mut events = Vec::new();
        let mut sequence = 0;
        for user in 1..=3 {
            credentials.insert(gateway_binary::client::api_key_of(&secret(user)), UserId::new(user));
            for (asset, amount) in [(0, 1_000_000_000), (1, 1_000_000_000_000)] {
                sequence += 1;
                let command = commands::deposit(user, asset, amount);
                engine.execute(CommandContext::new(sequence, sequence), &command, &mut events);
                mirror.execute(CommandContext::new(sequence, sequence), &command, &mut events);
            }
        }
        let view = Arc::new(MarketView::new(&config));
        view.seed_books(&engine);
        let publisher = Publisher::new(view.clone(), &config, publisher_config);
        publisher.seed_orders(&engine);
        let ingress = Arc::new(IngressRing::new(1 << 12));
        let egress = BroadcastRing::new(1 << 16);
        let feed = Feed::start_publishing(publisher.clone(), egress.subscribe_from(0)).unwrap();
        let engine = run_engine.then(|| EngineLoop::start(engine, sequence, ingress.clone(), egress.clone()));
        let verifier: gateway_json::JwtVerifier =
            Arc::new(|token: &str| token.strip_prefix("user-").and_then(|u| u.parse().ok()).map(UserId::new));
        let state = WsState::new(publisher.clone(), credentials, ws).with_jwt(verifier);
        let rest = public_router(view, Arc::new(config));
        let router = rest.clone().merge(ws_router(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
        });
        Self { addr, rest, ingress, egress, publisher, mirror, sequence, expected_events: 0, engine, feed: Some(feed) }
    }

    /// Sends a command to the engine and executes it on the mirror; returns the mirror's events.
    fn submit(&mut self, command: Command) -> Vec<Event> {
        let mut item = IngressCommand::new(0, command);
        while let Err(back) = self.ingress.push(item) {
            item = back;
            std::thread::sleep(Duration::from_micros(100));
        }
        self.sequence += 1;
        let mut events = Vec::new();
        self.mirror.execute(CommandContext::new(self.sequence, self.sequence), &command, &mut events);
        self.expected_events += events.len() as u64;
        events
    }

    /// Waits until the engine published everything submitted and the feed applied it.
    async fn settle(&self) {
        for _ in 0..10_000 {
            let head = self.egress.head();
            if (self.engine.is_none() || head == self.expected_events) && self.publisher.view().consumed() == head {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("engine or feed did not catch up");
    }

    async fn connect(&self) -> Client {
        tokio_tungstenite::connect_async(format!("ws://{}/", self.addr)).await.unwrap().0
    }

    async fn rest_depth(&self) -> Value {
        let request = Request::get("/api/v1/depth?symbol=BTC_USDC&limit=5000").body(Body::empty()).unwrap();
        let response = self.rest.clone().oneshot(request).await.unwrap();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The mirror engine's BTC_USDC book as decimal text, each side by price.
    fn engine_book(&self) -> Levels {
        let config = EngineConfig::sample();
        let format = MarketFormat::new(&config, &config.markets[0]);
        let book = self.mirror.book(codec::MarketId::new(1)).unwrap();
        let mut levels = Levels::default();
        for side in [Side::Ask, Side::Bid] {
            book.visit_levels(side, &mut |level| {
                let entry = (format.price(level.price.get()), format.quantity(u128::from(level.total_lots)));
                match side {
                    Side::Ask => levels.asks.insert(entry.0, entry.1),
                    Side::Bid => levels.bids.insert(entry.0, entry.1),
                };
                true
            });
        }
        levels
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        drop(self.engine.take());
        if let Some(feed) = self.feed.take() {
            feed.shutdown();
        }
    }
}

/// A book as decimal text (price → quantity).
#[derive(Debug, Default, Clone, PartialEq)]
struct Levels {
    asks: BTreeMap<String, String>,
    bids: BTreeMap<String, String>,
}

impl Levels {
    fn of_snapshot(snapshot: &Value) -> Self {
        let mut levels = Self::default();
        levels.apply(snapshot);
        levels
    }

    /// Applies `a` / `b` (or REST `asks` / `bids`) level lists; "0" removes.
    fn apply(&mut self, data: &Value) {
        for (keys, side) in [(["a", "asks"], &mut self.asks), (["b", "bids"], &mut self.bids)] {
            for key in keys {
                let Some(list) = data[key].as_array() else { continue };
                for level in list {
                    let (price, quantity) = (level[0].as_str().unwrap(), level[1].as_str().unwrap());
                    if quantity == "0" {
                        side.remove(price);
                    } else {
                        side.insert(price.to_string(), quantity.to_string());
                    }
                }
            }
        }
    }
}

async fn send(client: &mut Client, value: Value) {
    client.send(Message::text(value.to_string())).await.unwrap();
}

/// The next text frame as JSON (pings are answered by the client library).
async fn recv(client: &mut Client) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("a frame within 10 s")
            .expect("connection open")
            .expect("valid frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Sends a request with `id` and waits for its answer (result or error), returning it and any
/// stream frames that came before.
async fn request(client: &mut Client, mut value: Value, id: u64) -> (Value, Vec<Value>) {
    value["id"] = json!(id);
    send(client, value).await;
    let mut before = Vec::new();
    loop {
        let frame = recv(client).await;
        if frame["id"] == json!(id) {
            return (frame, before);
        }
        before.push(frame);
    }
}

async fn subscribe(client: &mut Client, streams: &[&str], id: u64) {
    let (answer, _) = request(client, json!({"method": "SUBSCRIBE", "params": streams}), id).await;
    assert_eq!(answer, json!({"result": null, "id": id}), "{streams:?}");
}

fn error_code(frame: &Value) -> u64 {
    frame["error"]["code"].as_u64().unwrap_or_else(|| panic!("not an error frame: {frame}"))
}

fn order_id(events: &[Event]) -> u64 {
    events
        .iter()
        .find_map(|e| if let Event::OrderAccepted(a) = e { Some(a.order_id.get()) } else { None })
        .expect("accepted")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_unsubscribe_and_error_frames() {
    let mut h = Harness::start(WsConfig::default(), PublisherConfig::default(), true).await;
    let (mut noisy, mut healthy) = (h.connect().await, h.connect().await);
    subscribe(&mut healthy, &["trade.BTC_USDC"], 1).await;

    noisy.send(Message::text("{not json")).await.unwrap();
    let frame = recv(&mut noisy).await;
    assert_eq!((error_code(&frame), &frame["id"]), (4000, &Value::Null), "{frame}");
    let cases = [
        (json!({"method": "SUBSCRIBE", "params": ["depth.NOPE_USDC"]}), 4001),
        (json!({"method": "SUBSCRIBE", "params": ["candles.BTC_USDC"]}), 4001),
        (json!({"method": "SUBSCRIBE", "params": ["depth.5ms.BTC_USDC"]}), 4001),
        (json!({"method": "SUBSCRIBE", "params": []}), 4000),
        (json!({"method": "LIST", "params": ["trade.BTC_USDC"]}), 4000),
        (json!({"params": ["trade.BTC_USDC"]}), 4000),
        (json!({"method": "SUBSCRIBE", "params": ["account.orderUpdate"]}), 4002),
    ];
    for (index, (body, code)) in cases.into_iter().enumerate() {
        let id = 100 + index as u64;
        let (answer, _) = request(&mut noisy, body.clone(), id).await;
        assert_eq!((error_code(&answer), &answer["id"]), (code, &json!(id)), "{body}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    noisy.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(error_code(&recv(&mut noisy).await), 4000);
    subscribe(&mut noisy, &["trade.BTC_USDC", "trade.BTC_USDC"], 2).await;

    let maker = order_id(&h.submit(commands::gtc(1, 1, Side::Ask, 640_000, 100)));
    let taker = order_id(&h.submit(commands::market(2, 1, Side::Bid, 40)));
    h.settle().await;
    for client in [&mut noisy, &mut healthy] {
        let frame = recv(client).await;
        assert_eq!(frame["stream"], "trade.BTC_USDC");
        let data = &frame["data"];
        assert_eq!(data["e"], "trade");
        assert_eq!(data["s"], "BTC_USDC");
        assert_eq!((data["p"].as_str(), data["q"].as_str()), (Some("64000.0"), Some("0.00040")));
        assert_eq!((data["b"].as_str(), data["a"].as_str()), (Some(&*taker.to_string()), Some(&*maker.to_string())));
        assert!(data["t"].is_u64() && data["T"].is_u64() && data["E"].is_u64());
        assert_eq!(data["m"], false, "the buyer took");
    }

    let (answer, before) = request(&mut noisy, json!({"method": "UNSUBSCRIBE", "params": ["trade.BTC_USDC"]}), 3).await;
    assert_eq!((answer, before.len()), (json!({"result": null, "id": 3}), 0));
    h.submit(commands::market(2, 1, Side::Bid, 10));
    h.settle().await;
    let frame = recv(&mut healthy).await;
    assert_eq!(frame["data"]["q"], "0.00010", "the healthy client still gets trades");
    let (_, before) = request(&mut noisy, json!({"method": "SUBSCRIBE", "params": ["ticker.BTC_USDC"]}), 4).await;
    assert!(before.is_empty(), "no trade after UNSUBSCRIBE: {before:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_public_stream_has_its_fields() {
    let publisher_config = PublisherConfig { ticker_every: Duration::from_millis(100), ..PublisherConfig::default() };
    let mut h = Harness::start(WsConfig::default(), publisher_config, true).await;
    let mut client = h.connect().await;
    let streams = [
        "depth.BTC_USDC",
        "depth.200ms.BTC_USDC",
        "depth.600ms.BTC_USDC",
        "depth.1000ms.BTC_USDC",
        "trade.BTC_USDC",
        "bookTicker.BTC_USDC",
        "ticker.BTC_USDC",
        "kline.1m.BTC_USDC",
        "kline.1month.BTC_USDC",
    ];
    subscribe(&mut client, &streams, 1).await;
    h.submit(commands::gtc(1, 1, Side::Ask, 640_000, 100));
    h.submit(commands::gtc(1, 1, Side::Bid, 639_990, 50));
    h.submit(commands::market(2, 1, Side::Bid, 30));
    h.settle().await;
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    while seen.len() < streams.len() {
        let frame = recv(&mut client).await;
        let stream = frame["stream"].as_str().unwrap().to_string();
        assert!(streams.contains(&stream.as_str()), "{frame}");
        let data = &frame["data"];
        assert!(data["E"].is_u64() && data["s"] == "BTC_USDC", "{frame}");
        if stream.starts_with("ticker") && data["c"] != "64000.0" {
            continue; // published before the trade
        }
        seen.insert(stream, data.clone());
    }
    let strings = |data: &Value, keys: &str| {
        for key in keys.split(',') {
            assert!(data[key].is_string(), "{key} in {data}");
        }
    };
    let integers = |data: &Value, keys: &str| {
        for key in keys.split(',') {
            assert!(data[key].is_u64(), "{key} in {data}");
        }
    };
    for stream in &streams[..4] {
        let data = &seen[*stream];
        assert_eq!(data["e"], "depth");
        integers(data, "U,u,T");
        assert!(data["U"].as_u64() <= data["u"].as_u64());
        assert!(data["a"].is_array() && data["b"].is_array());
    }
    let trade = &seen["trade.BTC_USDC"];
    strings(trade, "p,q,b,a");
    integers(trade, "t,T");
    assert!(trade["m"].is_boolean());
    let book_ticker = &seen["bookTicker.BTC_USDC"];
    assert_eq!(book_ticker["e"], "bookTicker");
    strings(book_ticker, "a,A");
    integers(book_ticker, "u,T");
    let ticker = &seen["ticker.BTC_USDC"];
    assert_eq!(ticker["e"], "ticker");
    strings(ticker, "o,c,h,l,v,V");
    integers(ticker, "n");
    // The test engine's clock is its sequence number (1970), so the 24 h window is empty; the
    // last price is still the trade's.
    assert_eq!((ticker["c"].as_str(), ticker["n"].as_u64()), (Some("64000.0"), Some(0)));
    for stream in ["kline.1m.BTC_USDC", "kline.1month.BTC_USDC"] {
        let kline = &seen[stream];
        assert_eq!(kline["e"], "kline");
        strings(kline, "o,c,h,l,v");
        integers(kline, "t,T,n");
        assert_eq!(kline["X"], false);
        assert_eq!(kline["c"], "64000.0");
    }
    assert_eq!(seen["kline.1m.BTC_USDC"]["T"].as_u64().unwrap() - seen["kline.1m.BTC_USDC"]["t"].as_u64().unwrap(), 60);
}

/// `amm.<symbol>`: a real client subscribes, liquidity and a swap executed by the engine show up
/// with the mirror engine's amounts and reserves and without the users; a market without a pool
/// is an error frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_events_stream_to_subscribers() {
    let mut h = Harness::start(WsConfig::default(), PublisherConfig::default(), true).await;
    let mut client = h.connect().await;
    let (answer, _) = request(&mut client, json!({"method": "SUBSCRIBE", "params": ["amm.BTC_USDC"]}), 1).await;
    assert_eq!(error_code(&answer), 4001, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("No AMM pool"), "{answer}");
    subscribe(&mut client, &["amm.SOL_USDC"], 2).await;
    h.submit(commands::deposit(1, 3, 100_000_000_000));
    h.submit(commands::deposit(2, 3, 100_000_000_000));
    h.submit(commands::add_liquidity(1, 3, 10_000_000_000, 20_000_000));
    let swapped = h.submit(commands::swap(2, 3, Side::Bid, codec::SwapMode::ExactOut, 1_000_000_000, 0));
    h.settle().await;
    let Event::SwapExecuted(swap) = swapped[0] else { panic!("{swapped:?}") };

    let added = recv(&mut client).await;
    assert_eq!(added["stream"], "amm.SOL_USDC");
    let data = &added["data"];
    assert_eq!((data["e"].as_str(), data["s"].as_str()), (Some("liquidityAdded"), Some("SOL_USDC")));
    assert_eq!(
        (data["x"].as_str(), data["y"].as_str(), data["L"].as_str()),
        (Some("10"), Some("20"), Some("447213595"))
    );
    let frame = recv(&mut client).await;
    assert_eq!(frame["stream"], "amm.SOL_USDC");
    let data = &frame["data"];
    assert_eq!((data["e"].as_str(), data["S"].as_str()), (Some("swap"), Some("Bid")));
    let usdc = |units: u64| marketdata::format::format_trimmed(u128::from(units), 6);
    let sol = |units: u64| marketdata::format::format_trimmed(u128::from(units), 9);
    assert_eq!(data["i"].as_str(), Some(&*usdc(swap.amount_in.get())));
    assert_eq!(
        (data["i"].as_str(), data["o"].as_str(), data["f"].as_str()),
        (Some("2.22891"), Some("1"), Some("0.006687"))
    );
    assert_eq!(data["x"].as_str(), Some(&*sol(swap.base_reserve.get())));
    assert_eq!(data["y"].as_str(), Some(&*usdc(swap.quote_reserve.get())));
    let pool = h.mirror.pool(codec::MarketId::new(3)).unwrap();
    assert_eq!((data["x"].as_str(), data["L"].as_str()), (Some("9"), Some(&*pool.total_shares.to_string())));
    assert_eq!(data["T"].as_u64(), Some(swap.timestamp_ns.get() / 1_000));
    assert!(data["E"].is_u64());
    for forbidden in ["u", "U", "user", "userId", "c"] {
        assert!(data.get(forbidden).is_none(), "no user on the public stream: {frame}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_streams_need_credentials_and_show_only_your_own_events() {
    let mut h = Harness::start(WsConfig::default(), PublisherConfig::default(), true).await;
    let (mut alice, mut bob, mut carol) = (h.connect().await, h.connect().await, h.connect().await);
    let private = json!({"method": "SUBSCRIBE", "params": ["account.orderUpdate", "account.balanceUpdate"]});
    for (index, bad) in [
        json!({}),
        json!({"signature": signature(2, 1, now_ms())}), // bob's signature under alice's key
        json!({"signature": signature(1, 1, now_ms() - 60_000)}), // expired
        json!({"signature": ["x", "y"]}),
        json!({"jwt": "nobody"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = private.clone();
        body.as_object_mut().unwrap().extend(bad.as_object().unwrap().clone());
        let (answer, _) = request(&mut alice, body, 10 + index as u64).await;
        assert_eq!(error_code(&answer), 4002, "{answer}");
    }
    let mut body = private.clone();
    body["signature"] = signature(1, 1, now_ms());
    assert_eq!(request(&mut alice, body, 1).await.0["result"], Value::Null);
    let mut body = json!({"method": "SUBSCRIBE", "params": ["account.orderUpdate.BTC_USDC"]});
    body["signature"] = signature(2, 2, now_ms());
    assert_eq!(request(&mut bob, body, 2).await.0, json!({"result": null, "id": 2}));
    let body = json!({"method": "SUBSCRIBE", "params": ["account.orderUpdate"], "jwt": "user-3"});
    assert_eq!(request(&mut carol, body, 3).await.0, json!({"result": null, "id": 3}));

    let alice_bid = order_id(&h.submit(commands::gtc(1, 1, Side::Bid, 600_000, 10)));
    let bob_ask = order_id(&h.submit(commands::gtc(2, 1, Side::Ask, 700_000, 10)));
    h.submit(commands::replace(1, 1, alice_bid, 600_010, 20));
    let bob_sell = order_id(&h.submit(commands::market(2, 1, Side::Ask, 5)));
    h.submit(commands::cancel(1, 1, alice_bid));
    h.submit(commands::limit(1, 1, Side::Ask, 700_000, 5, codec::TimeInForce::Ioc, 0)); // nothing to hit: expires
    h.submit(commands::gtc(3, 1, Side::Bid, 500_000, 1));
    h.settle().await;

    let required = "q,f,V,O,z,Z,T,X,i,S";
    let alice_bid_text = alice_bid.to_string();
    let mut alice_events = Vec::new();
    let mut balances = 0;
    while !alice_events.contains(&"orderExpired".to_string()) {
        let frame = recv(&mut alice).await;
        let data = &frame["data"];
        if frame["stream"] == "account.balanceUpdate" {
            assert_eq!(data["e"], "balanceUpdate");
            assert!(data["a"].is_string() && data["f"].is_string() && data["l"].is_string() && data["r"].is_string());
            balances += 1;
            continue;
        }
        assert_eq!(frame["stream"], "account.orderUpdate");
        for key in required.split(',') {
            assert!(!data[key].is_null(), "{key} missing in {frame}");
        }
        assert_ne!(data["i"], bob_ask.to_string());
        assert_ne!(data["i"], bob_sell.to_string(), "never another user's order");
        let event = data["e"].as_str().unwrap().to_string();
        match event.as_str() {
            "orderAccepted" if data["i"].as_str() == Some(alice_bid_text.as_str()) => {
                assert_eq!(
                    (data["p"].as_str(), data["q"].as_str(), data["X"].as_str()),
                    (Some("60000.0"), Some("0.00010"), Some("New"))
                );
                assert_eq!(
                    (data["S"].as_str(), data["o"].as_str(), data["f"].as_str()),
                    (Some("Bid"), Some("LIMIT"), Some("GTC"))
                );
            }
            "orderModified" => assert_eq!((data["p"].as_str(), data["q"].as_str()), (Some("60001.0"), Some("0.00020"))),
            "orderFill" => {
                assert_eq!(
                    (data["l"].as_str(), data["L"].as_str(), data["m"].as_bool()),
                    (Some("0.00005"), Some("60001.0"), Some(true))
                );
                assert_eq!(
                    (data["z"].as_str(), data["X"].as_str(), data["N"].as_str()),
                    (Some("0.00005"), Some("PartiallyFilled"), Some("USDC"))
                );
                assert!(data["t"].is_u64() && data["n"].is_string());
            }
            "orderCancelled" => {
                assert_eq!((data["X"].as_str(), data["z"].as_str()), (Some("Cancelled"), Some("0.00005")))
            }
            "orderExpired" => assert_eq!(data["X"], "Expired"),
            _ => {}
        }
        alice_events.push(event);
    }
    for event in ["orderAccepted", "orderModified", "orderFill", "orderCancelled", "orderExpired"] {
        assert!(alice_events.iter().any(|e| e == event), "{event} in {alice_events:?}");
    }
    assert!(balances > 0);

    let mut bob_ids = Vec::new();
    while bob_ids.len() < 3 {
        let frame = recv(&mut bob).await;
        assert_eq!(frame["stream"], "account.orderUpdate.BTC_USDC");
        bob_ids
            .push((frame["data"]["e"].as_str().unwrap().to_string(), frame["data"]["i"].as_str().unwrap().to_string()));
    }
    assert_eq!(bob_ids[0], ("orderAccepted".into(), bob_ask.to_string()));
    assert!(bob_ids[1..].iter().all(|(_, id)| *id == bob_sell.to_string()), "{bob_ids:?}");
    let frame = recv(&mut carol).await;
    assert_eq!(
        (frame["data"]["e"].as_str(), frame["data"]["p"].as_str()),
        (Some("orderAccepted"), Some("50000.0")),
        "JWT user 3"
    );
    // Nothing else arrived for carol: her next answer is the one to this request.
    let (_, before) = request(&mut carol, json!({"method": "UNSUBSCRIBE", "params": ["account.orderUpdate"]}), 4).await;
    assert!(before.is_empty(), "{before:?}");
}

/// A trigger order's life on the order stream, in Backpack's shape: `orderAccepted` with `X`
/// `TriggerPending` and the trigger fields `P` (trigger price), `B` (`LastPrice`) and `Y`
/// (trigger quantity); when a trade crosses its trigger price `triggerPlaced`, then the order it
/// placed (`orderAccepted`, `X` `New`); one that cannot be placed when it fires (not enough BTC)
/// ends with `triggerFailed`, `X` `TriggerFailed`, `R` `InsufficientFunds`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_orders_stream_pending_placed_and_failed() {
    use codec::{TimeInForce, TriggerKind};
    let mut h = Harness::start(WsConfig::default(), PublisherConfig::default(), true).await;
    let mut alice = h.connect().await;
    let mut body = json!({"method": "SUBSCRIBE", "params": ["account.orderUpdate"]});
    body["signature"] = signature(1, 1, now_ms());
    assert_eq!(request(&mut alice, body, 1).await.0, json!({"result": null, "id": 1}));

    // A trade at 60,000 gives the reference price the triggers are placed against.
    h.submit(commands::gtc(2, 1, Side::Ask, 600_000, 1));
    h.submit(commands::limit(3, 1, Side::Bid, 600_000, 1, TimeInForce::Ioc, 0));
    // Above the market: a stop-buy (limit 62,000 for 0.0001 BTC) ...
    let stop = h.submit(commands::trigger(1, 1, Side::Bid, TriggerKind::Cross, 610_000, 620_000, 10, 7));
    let stop = stop.iter().find_map(|e| if let Event::TriggerPending(p) = e { Some(p.order_id.get()) } else { None });
    let stop = stop.expect("stop-buy pending").to_string();
    // ... and a take-profit selling 20 BTC, twice what alice holds: accepted (nothing is
    // reserved while pending), it fails when it fires.
    let take = h.submit(commands::trigger(1, 1, Side::Ask, TriggerKind::Cross, 610_000, 600_000, 2_000_000, 0));
    let take = take.iter().find_map(|e| if let Event::TriggerPending(p) = e { Some(p.order_id.get()) } else { None });
    let take = take.expect("take-profit pending").to_string();
    // A trade at 61,000 crosses both trigger prices.
    h.submit(commands::gtc(2, 1, Side::Ask, 610_000, 1));
    let fired = h.submit(commands::limit(3, 1, Side::Bid, 610_000, 1, TimeInForce::Ioc, 0));
    assert!(fired.iter().any(|e| matches!(e, Event::TriggerFailed(_))), "{fired:?}");
    h.settle().await;

    let mut frames = Vec::new();
    while frames.len() < 5 {
        let frame = recv(&mut alice).await;
        assert_eq!(frame["stream"], "account.orderUpdate", "{frame}");
        for key in "q,f,V,O,z,Z,T,X,i,S".split(',') {
            assert!(!frame["data"][key].is_null(), "{key} missing in {frame}");
        }
        frames.push(frame["data"].clone());
    }
    let summary: Vec<(&str, &str, &str)> =
        frames.iter().map(|d| (d["e"].as_str().unwrap(), d["i"].as_str().unwrap(), d["X"].as_str().unwrap())).collect();
    assert_eq!(
        summary,
        [
            ("orderAccepted", stop.as_str(), "TriggerPending"),
            ("orderAccepted", take.as_str(), "TriggerPending"),
            ("triggerPlaced", stop.as_str(), "New"),
            ("orderAccepted", stop.as_str(), "New"),
            ("triggerFailed", take.as_str(), "TriggerFailed"),
        ],
        "{frames:#?}"
    );
    let pending = &frames[0];
    assert_eq!(
        (pending["P"].as_str(), pending["B"].as_str(), pending["Y"].as_str()),
        (Some("61000.0"), Some("LastPrice"), Some("0.00010")),
        "Backpack's trigger fields: {pending}"
    );
    assert_eq!(
        (pending["S"].as_str(), pending["o"].as_str(), pending["p"].as_str(), pending["c"].as_u64()),
        (Some("Bid"), Some("LIMIT"), Some("62000.0"), Some(7))
    );
    assert_eq!((frames[1]["P"].as_str(), frames[1]["Y"].as_str()), (Some("61000.0"), Some("20.00000")));
    assert_eq!((frames[2]["P"].as_str(), frames[2]["B"].as_str()), (Some("61000.0"), Some("LastPrice")));
    let placed = &frames[3];
    assert_eq!((placed["p"].as_str(), placed["q"].as_str()), (Some("62000.0"), Some("0.00010")), "{placed}");
    let failed = &frames[4];
    assert_eq!((failed["R"].as_str(), failed["S"].as_str()), (Some("InsufficientFunds"), Some("Ask")), "{failed}");
    // Nothing else about either order: the next frame is the answer to this request.
    let (_, before) = request(&mut alice, json!({"method": "UNSUBSCRIBE", "params": ["account.orderUpdate"]}), 2).await;
    assert!(before.is_empty(), "{before:?}");
}

/// A parent order's attached stop-loss / take-profit on the order stream, in Backpack's shape:
/// `b` / `k` the stop-loss trigger / limit, `a` / `j` the take-profit trigger / limit, `g` / `d`
/// their trigger reference (`LastPrice`); on the parent's `orderAccepted` and on its `orderFill`.
/// An order without attachment carries none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_order_streams_its_attached_stop_loss_and_take_profit() {
    use codec::TimeInForce;
    let mut h = Harness::start(WsConfig::default(), PublisherConfig::default(), true).await;
    let mut alice = h.connect().await;
    let mut body = json!({"method": "SUBSCRIBE", "params": ["account.orderUpdate"]});
    body["signature"] = signature(1, 1, now_ms());
    assert_eq!(request(&mut alice, body, 1).await.0, json!({"result": null, "id": 1}));

    // A trade at 60,000 gives the reference price; alice bids 60,000 with a stop-loss at 59,000
    // (limit 58,900) and a market take-profit at 62,000, then a plain bid at 59,500.
    h.submit(commands::gtc(2, 1, Side::Ask, 600_000, 1));
    h.submit(commands::limit(3, 1, Side::Bid, 600_000, 1, TimeInForce::Ioc, 0));
    let parent =
        h.submit(commands::with_attached(commands::gtc(1, 1, Side::Bid, 600_000, 20), 590_000, 589_000, 620_000, 0));
    assert!(order_id(&parent) > 0, "{parent:?}");
    h.submit(commands::gtc(1, 1, Side::Bid, 595_000, 10));
    // Bob sells into the parent: a fill.
    h.submit(commands::limit(2, 1, Side::Ask, 600_000, 10, TimeInForce::Ioc, 0));
    h.settle().await;

    let mut frames = Vec::new();
    while frames.len() < 3 {
        let frame = recv(&mut alice).await;
        if frame["data"]["X"] == "TriggerPending" {
            continue; // the children the fill created
        }
        frames.push(frame["data"].clone());
    }
    let summary: Vec<&str> = frames.iter().map(|d| d["e"].as_str().unwrap()).collect();
    assert_eq!(summary, ["orderAccepted", "orderAccepted", "orderFill"], "{frames:#?}");
    for parent in [&frames[0], &frames[2]] {
        assert_eq!(
            (parent["b"].as_str(), parent["k"].as_str(), parent["a"].as_str(), parent.get("j")),
            (Some("59000.0"), Some("58900.0"), Some("62000.0"), None),
            "{parent}"
        );
        assert_eq!((parent["g"].as_str(), parent["d"].as_str()), (Some("LastPrice"), Some("LastPrice")), "{parent}");
    }
    for key in ["a", "b", "j", "k", "d", "g"] {
        assert!(frames[1].get(key).is_none(), "{key} on an order without attachment: {}", frames[1]);
    }
}

/// Reads depth frames until one ends at `last`; checks `U = previous u + 1` from the first
/// frame after `snapshot_id` on and applies them to `book`.
async fn follow_depth(
    client: &mut Client,
    stream: &str,
    book: &mut Levels,
    snapshot_id: u64,
    last: u64,
    exact: bool,
) -> usize {
    let mut previous = snapshot_id;
    let mut applied = 0;
    loop {
        let frame = recv(client).await;
        if frame["stream"] != stream {
            continue;
        }
        let data = &frame["data"];
        let (first, end) = (data["U"].as_u64().unwrap(), data["u"].as_u64().unwrap());
        if end <= snapshot_id {
            continue;
        }
        if exact || applied > 0 {
            assert_eq!(first, previous + 1, "gap-free ids on {stream}");
        } else {
            assert!(first <= previous + 1, "conflated window covers the snapshot's next id");
        }
        previous = end;
        book.apply(data);
        applied += 1;
        if end == last {
            return applied;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_snapshot_and_diffs_rebuild_the_engine_book() {
    let mut h = Harness::start(WsConfig::default(), PublisherConfig::default(), true).await;
    let mut client = h.connect().await;
    // Some book before subscribing.
    for i in 0..20 {
        h.submit(commands::gtc(1, 1, Side::Ask, 640_000 + i * 3, 5 + i));
        h.submit(commands::gtc(2, 1, Side::Bid, 639_990 - i * 3, 5 + i));
    }
    h.settle().await;
    subscribe(&mut client, &["depth.BTC_USDC", "depth.200ms.BTC_USDC"], 1).await;
    let snapshot = h.rest_depth().await;
    let snapshot_id: u64 = snapshot["lastUpdateId"].as_str().unwrap().parse().unwrap();
    assert!(snapshot_id > 0);
    let mut open: Vec<(u64, u64)> = Vec::new();
    let mut rng = GlibcRand::new(7);
    for _ in 0..1_500 {
        let user = u64::from(rng.uniform(1, 3));
        let side = if rng.uniform(0, 1) == 0 { Side::Bid } else { Side::Ask };
        let events = match rng.uniform(0, 9) {
            0..=5 => {
                let price = u64::from(rng.uniform(639_950, 640_050));
                h.submit(commands::gtc(user, 1, side, price, u64::from(rng.uniform(1, 30))))
            }
            6 | 7 if !open.is_empty() => {
                let (owner, id) = open.swap_remove(rng.uniform(0, open.len() as u32 - 1) as usize);
                h.submit(commands::cancel(owner, 1, id))
            }
            _ => h.submit(commands::market(user, 1, side, u64::from(rng.uniform(1, 40)))),
        };
        for event in &events {
            if let Event::OrderAccepted(a) = event {
                open.push((a.user_id.get(), a.order_id.get()));
            }
        }
    }
    h.settle().await;
    let last = h.publisher.view().depth(codec::MarketId::new(1), 1).unwrap().last_update_id;
    assert!(last > snapshot_id + 1_000, "a real workload ({} updates)", last - snapshot_id);

    let mut book = Levels::of_snapshot(&snapshot);
    let diffs = follow_depth(&mut client, "depth.BTC_USDC", &mut book, snapshot_id, last, true).await;
    let engine_book = h.engine_book();
    assert_eq!(book, engine_book, "REST snapshot + {diffs} diffs = the engine's book");
    assert_eq!(Levels::of_snapshot(&h.rest_depth().await), engine_book, "and the REST depth now");

    // The conflated stream rebuilds the same book (frames with u > lastUpdateId).
    let mut conflated = Levels::of_snapshot(&snapshot);
    let windows = follow_depth(&mut client, "depth.200ms.BTC_USDC", &mut conflated, snapshot_id, last, false).await;
    assert_eq!(conflated, engine_book, "{windows} conflated windows");
    assert!(windows < diffs);
}

/// Publishes `count` book updates on BTC_USDC straight onto the egress ring (no engine runs),
/// cycling over 200 prices, in chunks the feed keeps up with.
async fn flood(h: &Harness, count: u64) {
    for chunk in 0..count / 1_000 {
        for i in 0..1_000 {
            let n = chunk * 1_000 + i;
            let update = codec::BookLevelUpdate {
                price_ticks: codec::Ticks::new(600_000 + n % 200),
                quantity_lots: codec::Lots::new(n % 7),
                market_id: codec::MarketId::new(1),
                side: if n % 400 < 200 { Side::Bid.into() } else { Side::Ask.into() },
                ..Default::default()
            };
            h.egress.publish(0, &Event::BookLevelUpdate(update));
        }
        h.settle().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_connection_is_resynchronised_with_a_snapshot() {
    let config = PublisherConfig { queue_frames: 8, resyncs_max: 1_000, ..PublisherConfig::default() };
    let h = Harness::start(WsConfig::default(), config, false).await;
    let mut client = h.connect().await;
    subscribe(&mut client, &["depth.BTC_USDC"], 1).await;
    // The client does not read while 200,000 diffs (tens of MB) are published.
    flood(&h, 200_000).await;
    let last = h.publisher.view().depth(codec::MarketId::new(1), 1).unwrap().last_update_id;
    assert_eq!(last, 200_000);
    let mut book: Option<Levels> = None;
    let (mut previous, mut lags, mut snapshots) = (0, 0, 0);
    while previous != last {
        let frame = recv(&mut client).await;
        if frame["event"] == "lagged" {
            assert!(frame["streams"]["depth.BTC_USDC"].as_u64().unwrap() > 0, "{frame}");
            lags += 1;
            continue;
        }
        let data = &frame["data"];
        if data["e"] == "depthSnapshot" {
            assert_eq!(lags, snapshots + 1, "a snapshot follows each lag notice");
            snapshots += 1;
            previous = data["u"].as_u64().unwrap();
            book = Some(Levels::of_snapshot(data));
            continue;
        }
        let first = data["U"].as_u64().unwrap();
        if let Some(book) = &mut book {
            assert_eq!(first, previous + 1, "gap-free after a snapshot");
            book.apply(data);
        } else {
            assert_eq!(first, previous + 1, "gap-free before the first lag");
        }
        previous = data["u"].as_u64().unwrap();
    }
    assert!(lags >= 1 && snapshots == lags, "lagged {lags} times, {snapshots} snapshots");
    let view = h.publisher.view().depth(codec::MarketId::new(1), 10_000).unwrap();
    let config = EngineConfig::sample();
    let format = MarketFormat::new(&config, &config.markets[0]);
    let text = |levels: &[(u64, u64)]| -> BTreeMap<String, String> {
        levels.iter().map(|(p, q)| (format.price(*p), format.quantity(u128::from(*q)))).collect()
    };
    assert_eq!(book.unwrap(), Levels { asks: text(&view.asks), bids: text(&view.bids) });
    assert!(h.publisher.stats().frames_dropped.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_connection_is_closed_with_a_reason_under_the_disconnect_policy() {
    let config = PublisherConfig { queue_frames: 8, lag_policy: LagPolicy::Disconnect, ..PublisherConfig::default() };
    let h = Harness::start(WsConfig::default(), config, false).await;
    let mut client = h.connect().await;
    subscribe(&mut client, &["depth.BTC_USDC"], 1).await;
    flood(&h, 200_000).await;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), client.next()).await.unwrap();
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1008);
                assert!(frame.reason.contains("Lagging"), "{}", frame.reason);
                break;
            }
            Some(Ok(Message::Text(_) | Message::Ping(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_pings_close_the_connection() {
    let ws = WsConfig {
        ping_interval: Duration::from_millis(100),
        pong_timeout: Duration::from_millis(300),
        ..WsConfig::default()
    };
    let h = Harness::start(ws, PublisherConfig::default(), false).await;
    // The quiet client is a raw socket that completes the handshake and then reads nothing, so
    // it never answers a ping (a WebSocket library would answer while reading).
    let mut quiet = TcpStream::connect(h.addr).await.unwrap();
    let handshake = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        h.addr
    );
    tokio::io::AsyncWriteExt::write_all(&mut quiet, handshake.as_bytes()).await.unwrap();
    let mut lively = h.connect().await;
    // The lively client reads (and so answers pings) for a second.
    let mut pings = 0;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(message)) = lively.next().await {
            pings += usize::from(message.is_ping());
        }
    })
    .await;
    assert!(pings >= 5, "pinged every 100 ms ({pings})");
    subscribe(&mut lively, &["trade.BTC_USDC"], 1).await;
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut quiet, &mut received))
        .await
        .expect("the server closes the quiet connection")
        .unwrap();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    // A close frame (opcode 8) with code 1008 and the reason.
    let close = [&[0x88, 2 + 12, 0x03, 0xF0][..], b"Pong timeout"].concat();
    assert!(received.windows(close.len()).any(|w| w == close), "{received:?}");
    let pings = received.windows(2).filter(|w| *w == [0x89, 0x00]).count();
    assert!((2..=5).contains(&pings), "closed after about 300 ms of unanswered pings ({pings} pings)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_subscription_size_and_rate_limits() {
    let ws = WsConfig {
        subscriptions_max: 2,
        connections_per_ip: 3,
        message_bytes_max: 256,
        messages_per_second: 1,
        burst: 6,
        strikes_max: 1_000,
        ..WsConfig::default()
    };
    let h = Harness::start(ws, PublisherConfig::default(), false).await;
    let mut client = h.connect().await;
    let three = json!({"method": "SUBSCRIBE", "params": ["trade.BTC_USDC", "trade.ETH_USDC", "trade.SOL_USDC"]});
    assert_eq!(error_code(&request(&mut client, three, 1).await.0), 4003);
    subscribe(&mut client, &["trade.BTC_USDC", "trade.ETH_USDC"], 2).await;
    let one_more = json!({"method": "SUBSCRIBE", "params": ["ticker.BTC_USDC"]});
    assert_eq!(error_code(&request(&mut client, one_more, 3).await.0), 4003);
    send(&mut client, json!({"method": "SUBSCRIBE", "params": ["x".repeat(300)], "id": 4})).await;
    let answer = recv(&mut client).await;
    assert!(answer["error"]["message"].as_str().unwrap().contains("too large"), "{answer}");
    // The burst is spent: most of the next messages are refused.
    for id in 10..20 {
        send(&mut client, json!({"method": "UNSUBSCRIBE", "params": ["ticker.BTC_USDC"], "id": id})).await;
    }
    let mut limited = 0;
    for _ in 10..20 {
        let frame = recv(&mut client).await;
        if frame["error"]["code"] == 4029 {
            limited += 1;
        }
    }
    assert!(limited >= 7, "{limited} of 10 refused");

    let (_second, _third) = (h.connect().await, h.connect().await);
    match tokio_tungstenite::connect_async(format!("ws://{}/ws", h.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("a fourth connection from one address must be refused: {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_ticker_always_carries_both_sides() {
    let mut h = Harness::start(WsConfig::default(), PublisherConfig::default(), true).await;
    let mut client = h.connect().await;
    subscribe(&mut client, &["bookTicker.BTC_USDC"], 1).await;
    // Only an ask: the bid side is empty, yet `b` and `B` are there (typed clients drop a frame
    // missing any of the four).
    h.submit(commands::gtc(1, 1, Side::Ask, 640_000, 100));
    h.settle().await;
    let frame = recv(&mut client).await;
    let data = &frame["data"];
    assert_eq!(frame["stream"], "bookTicker.BTC_USDC", "{frame}");
    assert_eq!((data["a"].as_str(), data["A"].as_str()), (Some("64000.0"), Some("0.00100")), "{data}");
    assert_eq!((data["b"].as_str(), data["B"].as_str()), (Some("0.0"), Some("0.00000")), "{data}");
}
