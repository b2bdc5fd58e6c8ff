//! The public REST API on the real server: starts the binary with `--demo` on ephemeral ports,
//! waits until the demo has traded, and checks that `/api/v1/depth`, `/api/v1/trades` and
//! `/api/v1/markets` for BTC_USDC return sane, consistent data (a non-crossed book in Backpack's
//! ordering, trades with sequential ids and millisecond timestamps, the configured filters, the
//! default price band of every market).

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::{JSON, Server, request};

/// GET `path`; the status code and the parsed JSON body.
fn get_json(port: u16, path: &str) -> (u16, Value) {
    let response = request(port, "GET", path, &format!("{JSON}X-API-Key: aWdub3JlZA==\r\n"), "");
    (response.status(), response.json(path))
}

fn number(text: &Value) -> f64 {
    text.as_str().unwrap_or_else(|| panic!("not a string: {text}")).parse().unwrap()
}

#[test]
fn demo_server_serves_public_market_data() {
    let dir = support::data_dir("rest-public");
    let mut server = Server::start(&dir, &["run", "--demo", "--demo-rate", "2000"], &[]);
    let port = server.http;

    let deadline = Instant::now() + Duration::from_secs(20);
    let trades = loop {
        let (status, trades) = get_json(port, "/api/v1/trades?symbol=BTC_USDC&limit=50");
        assert_eq!(status, 200, "{trades}");
        if trades.as_array().is_some_and(|t| t.len() >= 5) {
            break trades;
        }
        assert!(Instant::now() < deadline, "the demo should trade on BTC_USDC: {trades}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let trades = trades.as_array().unwrap();
    for pair in trades.windows(2) {
        assert_eq!(pair[1]["id"].as_u64().unwrap(), pair[0]["id"].as_u64().unwrap() + 1, "sequential, oldest first");
        assert!(pair[1]["timestamp"].as_u64() >= pair[0]["timestamp"].as_u64());
    }
    for trade in trades {
        let (price, quantity) = (number(&trade["price"]), number(&trade["quantity"]));
        assert!(price > 0.0 && quantity > 0.0, "{trade}");
        let quote = number(&trade["quoteQuantity"]);
        assert!((quote - price * quantity).abs() <= 1e-6 * quote.max(1.0), "quote = price × quantity: {trade}");
        assert!(trade["isBuyerMaker"].is_boolean());
        let timestamp = trade["timestamp"].as_u64().unwrap();
        assert!(timestamp.abs_diff(now_ms) < 120_000, "milliseconds since the epoch: {trade}");
        let decimals = trade["price"].as_str().unwrap().split_once('.').map_or(0, |(_, d)| d.len());
        assert_eq!(decimals, 1, "BTC_USDC prices have the tick's one decimal: {trade}");
    }

    // The demo book is thin and traders sometimes sweep a side: wait for a two-sided book.
    let depth = loop {
        let (status, depth) = get_json(port, "/api/v1/depth?symbol=BTC_USDC");
        assert_eq!(status, 200, "{depth}");
        if depth["asks"].as_array().is_some_and(|a| !a.is_empty())
            && depth["bids"].as_array().is_some_and(|b| !b.is_empty())
        {
            break depth;
        }
        assert!(Instant::now() < deadline, "the demo market maker quotes both sides: {depth}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (asks, bids) = (depth["asks"].as_array().unwrap(), depth["bids"].as_array().unwrap());
    let prices = |levels: &[Value]| levels.iter().map(|level| number(&level[0])).collect::<Vec<_>>();
    let (ask_prices, bid_prices) = (prices(asks), prices(bids));
    assert!(ask_prices.windows(2).all(|w| w[0] < w[1]), "asks ascending: {depth}");
    assert!(bid_prices.windows(2).all(|w| w[0] < w[1]), "bids ascending (best last): {depth}");
    assert!(bid_prices.last().unwrap() < ask_prices.first().unwrap(), "not crossed: {depth}");
    assert!(asks.iter().chain(bids).all(|level| number(&level[1]) > 0.0));
    let update_id: u64 = depth["lastUpdateId"].as_str().unwrap().parse().unwrap();
    assert!(update_id > 0);
    let timestamp_us = depth["timestamp"].as_u64().unwrap();
    assert!(timestamp_us.abs_diff(now_ms * 1_000) < 120_000_000, "µs: {timestamp_us}");

    let (status, markets) = get_json(port, "/api/v1/markets");
    assert_eq!(status, 200);
    let btc = markets.as_array().unwrap().iter().find(|m| m["symbol"] == "BTC_USDC").expect("BTC_USDC listed");
    assert_eq!((btc["baseSymbol"].as_str(), btc["quoteSymbol"].as_str()), (Some("BTC"), Some("USDC")));
    assert_eq!(btc["filters"]["price"]["tickSize"], "0.1");
    assert_eq!(btc["marketType"], "SPOT");
    assert_eq!(btc["orderBookState"], "Open");
    // The shipped configuration's price band (±10%), published as Backpack publishes it.
    for market in markets.as_array().unwrap() {
        let price = &market["filters"]["price"];
        assert_eq!(
            (price["maxMultiplier"].as_str(), price["minMultiplier"].as_str()),
            (Some("1.1"), Some("0.9")),
            "{market}"
        );
    }

    let (status, ticker) = get_json(port, "/api/v1/ticker?symbol=BTC_USDC");
    assert_eq!(status, 200);
    assert!(ticker["trades"].as_str().unwrap().parse::<u64>().unwrap() >= trades.len() as u64, "{ticker}");
    let (status, error) = get_json(port, "/api/v1/depth?symbol=NOPE");
    assert_eq!((status, error["code"].as_str()), (400, Some("INVALID_CLIENT_REQUEST")));
    assert_eq!(get_json(port, "/api/v1/status").1["status"], "Ok");
    let metrics = request(port, "GET", "/metrics", "", "").raw;
    assert!(metrics.contains("exchange_marketdata_stale 0"), "/metrics still served, view fresh: {metrics}");

    let status = server.terminate();
    assert!(status.success(), "{status}");
    std::fs::remove_dir_all(&dir).unwrap();
}
