//! The demo market looks like a real market (issue #21): over 30 s of `exchange --demo` at its
//! default rate, sampled every 100 ms over the public REST API, both sides of every book hold at
//! least ten price levels in at least 99% of the samples, no trade is more than 2% away from the
//! demo's fair price (`exchange_demo_fair_price` on `/metrics`, sampled at the same times), and
//! the engine rejects none of the demo's commands once it runs (the demo is the only client, so
//! `exchange_rejects_total` counts its rejects).

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{JSON, Server, request};

/// How long the books are sampled (the figure).
const SAMPLE_FOR: Duration = Duration::from_secs(30);
/// Time between two samples.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Levels each side must keep.
const LEVELS_MIN: usize = 10;
/// Samples (per thousand) in which a market must have both sides at `LEVELS_MIN` or more.
const FULL_SAMPLES_MIN_PER_MILLE: usize = 990;
/// Largest distance of a trade from the fair price, as a fraction of the fair price.
const FAIR_DISTANCE_MAX: f64 = 0.02;
/// How long the demo may take to lay out its first ladders.
const WARM_UP_MAX: Duration = Duration::from_secs(30);

fn get(port: u16, path: &str) -> support::Response {
    let response = request(port, "GET", path, JSON, "");
    assert_eq!(response.status(), 200, "{path}: {}", response.raw);
    response
}

fn levels(depth: &Value, side: &str) -> usize {
    depth[side].as_array().map_or(0, Vec::len)
}

/// `(bids, asks)` level counts of a market's book.
fn depth_levels(port: u16, symbol: &str) -> (usize, usize) {
    let depth = get(port, &format!("/api/v1/depth?symbol={symbol}&limit=50")).json(symbol);
    (levels(&depth, "bids"), levels(&depth, "asks"))
}

/// The sum of `exchange_rejects_total` and the demo's fair price per market from `/metrics`.
fn metrics(port: u16) -> (u64, BTreeMap<String, f64>) {
    let text = get(port, "/metrics").body().to_string();
    let mut rejects = 0;
    let mut fair = BTreeMap::new();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        if series.starts_with("exchange_rejects_total{") {
            rejects += value.parse::<u64>().unwrap();
        } else if let Some(labels) = series.strip_prefix("exchange_demo_fair_price{market=\"") {
            fair.insert(labels.trim_end_matches("\"}").to_string(), value.parse::<f64>().unwrap());
        }
    }
    (rejects, fair)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn demo_books_stay_deep_trades_stay_near_the_fair_price_and_nothing_is_rejected() {
    let dir = support::data_dir("demo-flow");
    let server = Server::start(&dir, &["run", "--demo", "--status-every", "0"], &[]).remove_dir_on_drop();
    let port = server.http;
    let markets = get(port, "/api/v1/markets").json("markets");
    let symbols: Vec<String> =
        markets.as_array().unwrap().iter().map(|m| m["symbol"].as_str().unwrap().to_string()).collect();
    assert!(!symbols.is_empty());

    // Steady state: every book has its ladders.
    let deadline = Instant::now() + WARM_UP_MAX;
    while !symbols.iter().all(|symbol| {
        let (bids, asks) = depth_levels(port, symbol);
        bids >= LEVELS_MIN && asks >= LEVELS_MIN
    }) {
        assert!(Instant::now() < deadline, "the demo never laid out its ladders");
        std::thread::sleep(SAMPLE_EVERY);
    }
    let (rejects_before, _) = metrics(port);

    let started = Instant::now();
    let mut samples = 0usize;
    let mut full: BTreeMap<&str, usize> = BTreeMap::new();
    let mut thinnest: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    // (milliseconds since the epoch, fair prices) per sample.
    let mut fair_samples: Vec<(u64, BTreeMap<String, f64>)> = Vec::new();
    let mut rejects_after = rejects_before;
    while started.elapsed() < SAMPLE_FOR {
        let due = started + SAMPLE_EVERY * samples as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        samples += 1;
        for symbol in &symbols {
            let (bids, asks) = depth_levels(port, symbol);
            if bids >= LEVELS_MIN && asks >= LEVELS_MIN {
                *full.entry(symbol).or_default() += 1;
            }
            let thin = thinnest.entry(symbol).or_insert((usize::MAX, usize::MAX));
            *thin = (thin.0.min(bids), thin.1.min(asks));
        }
        let (rejects, fair) = metrics(port);
        rejects_after = rejects;
        fair_samples.push((now_ms(), fair));
    }

    println!(
        "{samples} samples; samples with both sides at {LEVELS_MIN}+ levels: {full:?}; thinnest (bids, asks): \
         {thinnest:?}; rejects {rejects_before} -> {rejects_after}"
    );
    // Books: both sides deep in at least 99% of the samples.
    for symbol in &symbols {
        let full = full.get(symbol.as_str()).copied().unwrap_or(0);
        assert!(
            full * 1000 >= samples * FULL_SAMPLES_MIN_PER_MILLE,
            "{symbol}: both sides had {LEVELS_MIN}+ levels in only {full} of {samples} samples (thinnest bids, asks: {:?})",
            thinnest[symbol.as_str()]
        );
    }
    // No rejects of the demo's own commands in steady state.
    assert_eq!(rejects_after, rejects_before, "the demo's commands were rejected");

    // Trades: each within 2% of the fair price sampled nearest in time.
    let window_start = fair_samples[0].0;
    let mut farthest: BTreeMap<&str, f64> = BTreeMap::new();
    for symbol in &symbols {
        let trades = get(port, &format!("/api/v1/trades?symbol={symbol}&limit=1000")).json(symbol);
        let trades: Vec<&Value> =
            trades.as_array().unwrap().iter().filter(|t| t["timestamp"].as_u64().unwrap() >= window_start).collect();
        assert!(trades.len() >= 10, "{symbol}: the demo should trade ({} trades in the window)", trades.len());
        for trade in trades {
            let time = trade["timestamp"].as_u64().unwrap();
            let price: f64 = trade["price"].as_str().unwrap().parse().unwrap();
            let (_, fair) = fair_samples.iter().min_by_key(|(at, _)| at.abs_diff(time)).unwrap();
            let fair = *fair.get(symbol).unwrap_or_else(|| panic!("no exchange_demo_fair_price for {symbol}"));
            let distance = (price - fair).abs() / fair;
            let far = farthest.entry(symbol).or_default();
            *far = far.max(distance);
            assert!(
                distance <= FAIR_DISTANCE_MAX,
                "{symbol}: a trade at {price} with the fair price at {fair}: {trade}"
            );
        }
    }
    println!("farthest trade from the fair price, as a fraction of it: {farthest:?}");
}
