//! The public REST endpoints end to end in-process: a real `engine::Engine` executes orders and
//! publishes its events into a `BroadcastRing`, a `marketdata::Feed` thread feeds a `MarketView`
//! from it, and requests go through `public_router` (with the headers the official client always
//! sends). Checks every endpoint's JSON shape, units and exact decimal strings: depth after adds,
//! fills and removals (Backpack's ordering, `lastUpdateId` = book updates applied), trade order,
//! limits and offsets, 24 h / 7 d ticker statistics, kline bucketing with second-based times,
//! and the error answers (status + code) for unknown symbols and bad or missing parameters; and
//! that a lagged (stale) view refuses depth until re-seeded.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use codec::{Event, Side};
use engine::bus::BroadcastRing;
use engine::testkit::commands;
use engine::{CommandContext, Engine, EngineConfig};
use marketdata::{Feed, MarketView};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const S: u64 = 1_000_000_000;

async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .uri(uri)
        .header("content-type", "application/json; charset=utf-8")
        .header("x-api-key", "dGVzdCBrZXkgdGhhdCBpcyBub3QgY2hlY2tlZCBhdCBhbGw=")
        .header("x-window", "5000")
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (status, value)
}

async fn expect_error(router: &Router, uri: &str, status: StatusCode, code: &str) {
    let (got, body) = get(router, uri).await;
    assert_eq!(got, status, "{uri}: {body}");
    assert_eq!(body["code"], code, "{uri}: {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{uri}: {body}");
}

struct Exchange {
    engine: Engine,
    ring: Arc<BroadcastRing>,
    view: Arc<MarketView>,
    _feed: Feed,
    sequence: u64,
    book_updates: u64,
    router: Router,
}

impl Exchange {
    fn new() -> Self {
        let config = EngineConfig::sample();
        let engine = Engine::new(&config).unwrap();
        let ring = BroadcastRing::new(1 << 12);
        let view = Arc::new(MarketView::new(&config));
        let feed = Feed::start(view.clone(), ring.subscribe()).unwrap();
        let router = gateway_json::public_router(view.clone(), Arc::new(config));
        Self { engine, ring, view, _feed: feed, sequence: 0, book_updates: 0, router }
    }

    fn execute(&mut self, timestamp_ns: u64, command: codec::Command) -> Vec<Event> {
        self.sequence += 1;
        let mut events = Vec::new();
        self.engine.execute(CommandContext::new(self.sequence, timestamp_ns), &command, &mut events);
        for event in &events {
            if matches!(event, Event::BookLevelUpdate(u) if u.market_id.get() == 1) {
                self.book_updates += 1;
            }
            self.ring.publish(0, event);
        }
        events
    }

    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.view.consumed() < self.ring.head() {
            assert!(Instant::now() < deadline, "the feed did not catch up");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn fills(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e, Event::Fill(_))).count()
}

#[tokio::test]
async fn public_endpoints_serve_the_market_view() {
    let mut x = Exchange::new();
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // The start of the hour two hours ago: everything below happens within the last 24 h.
    let t0 = (now_s / 3_600 - 2) * 3_600;
    let at = |seconds: u64| (t0 + seconds) * S;
    for user in [1, 2] {
        x.execute(at(1), commands::deposit(user, 0, 10 * 100_000_000));
        x.execute(at(1), commands::deposit(user, 1, 1_000_000 * 1_000_000));
    }
    // BTC_USDC: ticks of 0.1 USDC, lots of 0.00001 BTC.
    x.execute(at(5), commands::gtc(1, 1, Side::Ask, 640_005, 100));
    x.execute(at(5), commands::gtc(1, 1, Side::Ask, 640_010, 200));
    x.execute(at(5), commands::gtc(1, 1, Side::Bid, 639_990, 300));
    x.execute(at(5), commands::gtc(1, 1, Side::Bid, 639_980, 50));
    x.settle();
    let router = x.router.clone();

    let (status, depth) = get(&router, "/api/v1/depth?symbol=BTC_USDC").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(depth["asks"], json!([["64000.5", "0.00100"], ["64001.0", "0.00200"]]));
    assert_eq!(depth["bids"], json!([["63998.0", "0.00050"], ["63999.0", "0.00300"]]), "ascending: best bid last");
    assert_eq!(depth["lastUpdateId"], json!(x.book_updates.to_string()));
    assert_eq!(depth["lastUpdateId"], "4");
    assert_eq!(depth["timestamp"], json!(at(5) / 1_000), "µs of the last book update");
    let (_, top) = get(&router, "/api/v1/depth?symbol=BTC_USDC&limit=1").await;
    assert_eq!(top["asks"], json!([["64000.5", "0.00100"]]));
    assert_eq!(top["bids"], json!([["63999.0", "0.00300"]]), "the best bid");
    let (_, empty) = get(&router, "/api/v1/depth?symbol=ETH_USDC").await;
    assert_eq!(
        (empty["asks"].clone(), empty["bids"].clone(), empty["lastUpdateId"].clone()),
        (json!([]), json!([]), json!("0"))
    );

    // Trades: a market buy, a crossing limit sell that empties the best bid, and an hour later a
    // market buy that sweeps two ask levels.
    assert_eq!(fills(&x.execute(at(10), commands::market(2, 1, Side::Bid, 30))), 1);
    assert_eq!(fills(&x.execute(at(70), commands::gtc(2, 1, Side::Ask, 639_990, 300))), 1);
    assert_eq!(fills(&x.execute(at(3_610), commands::market(2, 1, Side::Bid, 170))), 2);
    x.settle();

    let (_, depth) = get(&router, "/api/v1/depth?symbol=BTC_USDC").await;
    assert_eq!(depth["asks"], json!([["64001.0", "0.00100"]]));
    assert_eq!(depth["bids"], json!([["63998.0", "0.00050"]]));
    assert_eq!(depth["lastUpdateId"], json!(x.book_updates.to_string()));
    assert_eq!(depth["timestamp"], json!(at(3_610) / 1_000));

    let (status, trades) = get(&router, "/api/v1/trades?symbol=BTC_USDC").await;
    assert_eq!(status, StatusCode::OK);
    let expected = json!([
        {"id": 1, "price": "64000.5", "quantity": "0.00030", "quoteQuantity": "19.20015",
         "timestamp": at(10) / 1_000_000, "isBuyerMaker": false},
        {"id": 2, "price": "63999.0", "quantity": "0.00300", "quoteQuantity": "191.997",
         "timestamp": at(70) / 1_000_000, "isBuyerMaker": true},
        {"id": 3, "price": "64000.5", "quantity": "0.00070", "quoteQuantity": "44.80035",
         "timestamp": at(3_610) / 1_000_000, "isBuyerMaker": false},
        {"id": 4, "price": "64001.0", "quantity": "0.00100", "quoteQuantity": "64.001",
         "timestamp": at(3_610) / 1_000_000, "isBuyerMaker": false},
    ]);
    assert_eq!(trades, expected, "oldest first, ms timestamps, exact decimals");
    let (_, last_two) = get(&router, "/api/v1/trades?symbol=BTC_USDC&limit=2").await;
    assert_eq!(last_two, json!([expected[2], expected[3]]), "the most recent ones");
    let (_, page) = get(&router, "/api/v1/trades/history?symbol=BTC_USDC&limit=2&offset=2").await;
    assert_eq!(page, json!([expected[0], expected[1]]), "offset skips the most recent");
    let (_, page) = get(&router, "/api/v1/trades/history?symbol=BTC_USDC&offset=3").await;
    assert_eq!(page, json!([expected[0]]));
    let (_, page) = get(&router, "/api/v1/trades/history?symbol=BTC_USDC&offset=10").await;
    assert_eq!(page, json!([]));

    let (status, ticker) = get(&router, "/api/v1/ticker?symbol=BTC_USDC").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ticker,
        json!({
            "symbol": "BTC_USDC", "firstPrice": "64000.5", "lastPrice": "64001.0", "priceChange": "0.5",
            "priceChangePercent": "0.000007", "high": "64001.0", "low": "63999.0", "volume": "0.00500",
            "quoteVolume": "319.9985", "trades": "4",
        })
    );
    let (_, weekly) = get(&router, "/api/v1/ticker?symbol=BTC_USDC&interval=1w").await;
    assert_eq!(weekly, ticker, "the same trades within a week");
    let (_, tickers) = get(&router, "/api/v1/tickers").await;
    assert_eq!(tickers.as_array().unwrap().len(), 3);
    assert_eq!(tickers[0], ticker);
    assert_eq!(
        tickers[2],
        json!({
            "symbol": "SOL_USDC", "firstPrice": "0.000", "lastPrice": "0.000", "priceChange": "0.000",
            "priceChangePercent": "0", "high": "0.000", "low": "0.000", "volume": "0.00",
            "quoteVolume": "0", "trades": "0",
        }),
        "a market without trades"
    );

    // Klines: times in seconds; `start`/`end` as UTC date-times.
    let datetime = |s: u64| marketdata::interval::format_datetime(s, ' ');
    let (status, minutes) = get(&router, &format!("/api/v1/klines?symbol=BTC_USDC&interval=1m&startTime={t0}")).await;
    assert_eq!(status, StatusCode::OK);
    let starts: Vec<_> = minutes.as_array().unwrap().iter().map(|k| k["start"].clone()).collect();
    assert_eq!(starts, [json!(datetime(t0)), json!(datetime(t0 + 60)), json!(datetime(t0 + 3_600))]);
    assert_eq!(
        minutes[2],
        json!({
            "start": datetime(t0 + 3_600), "end": datetime(t0 + 3_660), "open": "64000.5", "high": "64001.0",
            "low": "64000.5", "close": "64001.0", "volume": "0.00170", "quoteVolume": "108.80135", "trades": "2",
        })
    );
    let (_, hours) = get(&router, &format!("/api/v1/klines?symbol=BTC_USDC&interval=1h&startTime={t0}")).await;
    assert_eq!(
        hours,
        json!([
            {"start": datetime(t0), "end": datetime(t0 + 3_600), "open": "64000.5", "high": "64000.5",
             "low": "63999.0", "close": "63999.0", "volume": "0.00330", "quoteVolume": "211.19715", "trades": "2"},
            {"start": datetime(t0 + 3_600), "end": datetime(t0 + 7_200), "open": "64000.5", "high": "64001.0",
             "low": "64000.5", "close": "64001.0", "volume": "0.00170", "quoteVolume": "108.80135", "trades": "2"},
        ])
    );
    let (_, first_hour) =
        get(&router, &format!("/api/v1/klines?symbol=BTC_USDC&interval=1h&startTime={t0}&endTime={}", t0 + 3_600))
            .await;
    assert_eq!(first_hour, json!([hours[0]]), "endTime excludes buckets starting at or after it");
    let (_, late) = get(&router, &format!("/api/v1/klines?symbol=BTC_USDC&interval=1m&startTime={}", t0 + 3_601)).await;
    assert_eq!(late.as_array().unwrap().len(), 1, "startTime is aligned down to its bucket: {late}");
    // Seconds, not milliseconds: a millisecond value (beyond the year 2500 as seconds) is refused.
    let ms = format!("/api/v1/klines?symbol=BTC_USDC&interval=1m&startTime={}", t0 * 1_000);
    expect_error(&router, &ms, StatusCode::BAD_REQUEST, "INVALID_CLIENT_REQUEST").await;
    for interval in ["1d", "3d", "1w", "1month"] {
        let (status, klines) =
            get(&router, &format!("/api/v1/klines?symbol=BTC_USDC&interval={interval}&startTime={}", t0 - 40 * 86_400))
                .await;
        assert_eq!(status, StatusCode::OK);
        let trades: u64 =
            klines.as_array().unwrap().iter().map(|k| k["trades"].as_str().unwrap().parse::<u64>().unwrap()).sum();
        assert_eq!(trades, 4, "{interval}: {klines}");
    }

    // Markets.
    let (status, markets) = get(&router, "/api/v1/markets").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(markets.as_array().unwrap().len(), 3);
    let (_, btc) = get(&router, "/api/v1/market?symbol=BTC_USDC").await;
    assert_eq!(markets[0], btc);
    let created_at = btc["createdAt"].as_str().unwrap().to_string();
    assert_eq!(created_at.len(), 19, "date-time without zone: {created_at}");
    assert_eq!(&created_at[10..11], "T");
    assert_eq!(
        btc,
        json!({
            "symbol": "BTC_USDC", "baseSymbol": "BTC", "quoteSymbol": "USDC", "marketType": "SPOT",
            "filters": {
                "price": {"minPrice": "0.1", "maxPrice": "100000000.0", "tickSize": "0.1"},
                "quantity": {"minQuantity": "0.00001", "maxQuantity": "10000.00000", "stepSize": "0.00001"},
            },
            "orderBookState": "Open", "createdAt": created_at, "visible": true,
        })
    );
    let (_, sol) = get(&router, "/api/v1/market?symbol=SOL_USDC").await;
    assert_eq!(sol["filters"]["price"]["tickSize"], "0.001");
    assert_eq!(sol["filters"]["quantity"]["stepSize"], "0.01");
    let (_, spot) = get(&router, "/api/v1/markets?marketType=SPOT&marketType=PERP").await;
    assert_eq!(spot, markets, "the official client's repeated marketType");
    let (_, perp) = get(&router, "/api/v1/markets?marketType=PERP").await;
    assert_eq!(perp, json!([]));

    // Status and time.
    let (status, body) = get(&router, "/api/v1/status").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "Ok", "message": null})));
    let (status, body) = get(&router, "/api/v1/time").await;
    assert_eq!(status, StatusCode::OK);
    let server_ms = body.as_u64().unwrap();
    assert!(server_ms.abs_diff(now_s * 1_000) < 60_000, "ms since the epoch: {server_ms}");
}

#[tokio::test]
async fn bad_requests_get_backpack_errors() {
    let x = Exchange::new();
    let router = &x.router;
    const BAD: StatusCode = StatusCode::BAD_REQUEST;
    const CODE: &str = "INVALID_CLIENT_REQUEST";
    for path in ["market", "ticker", "depth", "trades", "trades/history"] {
        expect_error(router, &format!("/api/v1/{path}?symbol=DOGE_USDC"), BAD, CODE).await;
        expect_error(router, &format!("/api/v1/{path}"), BAD, CODE).await;
        expect_error(router, &format!("/api/v1/{path}?symbol=btc_usdc"), BAD, CODE).await;
    }
    expect_error(router, "/api/v1/klines?symbol=DOGE_USDC&interval=1m&startTime=0", BAD, CODE).await;
    for limit in ["0", "-1", "abc", "1.5", "5001", "", "99999999999999999999999"] {
        expect_error(router, &format!("/api/v1/depth?symbol=BTC_USDC&limit={limit}"), BAD, CODE).await;
    }
    for limit in ["0", "1001", "x"] {
        expect_error(router, &format!("/api/v1/trades?symbol=BTC_USDC&limit={limit}"), BAD, CODE).await;
        expect_error(router, &format!("/api/v1/trades/history?symbol=BTC_USDC&limit={limit}"), BAD, CODE).await;
    }
    expect_error(router, "/api/v1/trades/history?symbol=BTC_USDC&offset=-5", BAD, CODE).await;
    expect_error(router, "/api/v1/ticker?symbol=BTC_USDC&interval=1h", BAD, CODE).await;
    expect_error(router, "/api/v1/tickers?interval=5m", BAD, CODE).await;
    expect_error(router, "/api/v1/klines?symbol=BTC_USDC&interval=7m&startTime=0", BAD, CODE).await;
    expect_error(router, "/api/v1/klines?symbol=BTC_USDC&startTime=0", BAD, CODE).await;
    expect_error(router, "/api/v1/klines?symbol=BTC_USDC&interval=1m", BAD, CODE).await;
    expect_error(router, "/api/v1/klines?symbol=BTC_USDC&interval=1m&startTime=soon", BAD, CODE).await;
    expect_error(router, "/api/v1/klines?symbol=BTC_USDC&interval=1m&startTime=100&endTime=50", BAD, CODE).await;
    expect_error(router, "/api/v1/klines?symbol=BTC_USDC&interval=1m&startTime=99999999999999999999", BAD, CODE).await;
    // Valid edge values.
    assert_eq!(get(router, "/api/v1/depth?symbol=BTC_USDC&limit=5000").await.0, StatusCode::OK);
    assert_eq!(get(router, "/api/v1/trades?symbol=BTC_USDC&limit=1000").await.0, StatusCode::OK);
    assert_eq!(get(router, "/api/v1/klines?symbol=BTC_USDC&interval=1M&startTime=0").await.0, StatusCode::OK);
    assert_eq!(get(router, "/api/v1/nothing").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_lagged_view_refuses_depth_until_reseeded() {
    let config = EngineConfig::sample();
    let mut engine = Engine::new(&config).unwrap();
    let ring = BroadcastRing::new(4);
    let view = Arc::new(MarketView::new(&config));
    let router = gateway_json::public_router(view.clone(), Arc::new(config));
    let mut events = Vec::new();
    let mut sequence = 0;
    let mut run = |command, events: &mut Vec<Event>| {
        sequence += 1;
        engine.execute(CommandContext::new(sequence, sequence * S), &command, events);
    };
    run(commands::deposit(1, 1, 1_000_000_000_000), &mut events);
    for price in 1..=10 {
        run(commands::gtc(1, 1, Side::Bid, price, 1), &mut events);
    }
    for event in &events {
        ring.publish(0, event);
    }
    // The feed starts at position 0, long overwritten in a ring of 4.
    let feed = Feed::start(view.clone(), ring.subscribe_from(0)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while view.consumed() < ring.head() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    feed.shutdown();
    assert!(view.is_stale());
    expect_error(&router, "/api/v1/depth?symbol=BTC_USDC", StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE")
        .await;
    let (_, status) = get(&router, "/api/v1/status").await;
    assert!(status["message"].is_string(), "{status}");

    // Re-seeded from the engine's books: fresh again, with every level.
    view.seed_books(&engine);
    assert!(!view.is_stale());
    let (status, depth) = get(&router, "/api/v1/depth?symbol=BTC_USDC&limit=3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(depth["bids"], json!([["0.8", "0.00001"], ["0.9", "0.00001"], ["1.0", "0.00001"]]));
}

/// A market with a price band publishes it in `filters.price` as Backpack does (multipliers of
/// the reference price); the others do not carry the keys.
#[tokio::test]
async fn a_price_band_is_published_with_the_market() {
    let mut config = EngineConfig::sample();
    config.markets[0].price_band = engine::PriceBand { max_multiplier_ppm: 1_100_000, min_multiplier_ppm: 900_000 };
    let view = Arc::new(MarketView::new(&config));
    let router = gateway_json::public_router(view, Arc::new(config));
    let (status, markets) = get(&router, "/api/v1/markets").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        markets[0]["filters"]["price"],
        json!({"minPrice": "0.1", "maxPrice": "100000000.0", "tickSize": "0.1",
               "maxMultiplier": "1.1", "minMultiplier": "0.9"})
    );
    assert_eq!(markets[1]["filters"]["price"].get("maxMultiplier"), None);
}
