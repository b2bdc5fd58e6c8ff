//! WebSocket fan-out cost on the publisher (the feed thread): encode once and share the buffer,
//! next to a baseline measured in the same run that encodes the frame once per subscriber.
//!
//! For N subscribers of `depth.BTC_USDC` (1, 10, 100, 1,000), each update is one engine command
//! with one `BookLevelUpdate`. Measured: wall time of the publisher per update, in total and per
//! subscriber. The encode-once path is the real [`Publisher::on_command`] (view update under the
//! book lock, one JSON encoding, one reference-counted push per subscriber queue). The baseline
//! does the same view update and, for every subscriber, encodes the same frame with the same
//! encoder and pushes it onto a mutex-protected queue: what a publisher without shared buffers
//! pays. Subscriber queues are drained between batches, outside the timed section.
//!
//! Run: `cargo bench -p marketdata --bench fanout` (`FANOUT_BENCH_QUICK=1` for a smoke run).

use bytes::Bytes;
use codec::*;
use engine::EngineConfig;
use marketdata::encode::Frame;
use marketdata::format::MarketFormat;
use marketdata::{Delivery, MarketView, Publisher, PublisherConfig, StreamKey};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn update(n: u64) -> Event {
    Event::BookLevelUpdate(BookLevelUpdate {
        timestamp_ns: TimestampNs::new(1_700_000_000_000_000_000 + n),
        price_ticks: Ticks::new(640_000 + n % 100),
        quantity_lots: Lots::new(1 + n % 50),
        order_count: OrderCount::new(1),
        market_id: MarketId::new(1),
        side: if n % 2 == 0 { Side::Bid.into() } else { Side::Ask.into() },
        ..Default::default()
    })
}

/// Drains every subscription without waiting (the queues hold at most one batch).
fn drain(subscriptions: &[marketdata::Subscription]) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let mut frames = 0;
    for subscription in subscriptions {
        runtime.block_on(async {
            if let Ok(Delivery::Frames(batch)) =
                tokio::time::timeout(std::time::Duration::from_millis(0), subscription.next()).await
            {
                frames += batch.len();
            }
        });
    }
    frames
}

/// ns per update of the real publisher with `subscribers` subscribers.
fn encode_once(subscribers: usize, updates: u64, batch: u64) -> (f64, usize) {
    let config = EngineConfig::sample();
    let view = Arc::new(MarketView::new(&config));
    let publisher = Publisher::new(
        view,
        &config,
        PublisherConfig { queue_frames: batch as usize + 1, ..PublisherConfig::default() },
    );
    let subscriptions: Vec<_> = (0..subscribers).map(|_| publisher.connect()).collect();
    for subscription in &subscriptions {
        subscription.subscribe(StreamKey::Depth(MarketId::new(1))).unwrap();
    }
    let (mut elapsed, mut received) = (0u128, 0);
    let mut n = 0;
    while n < updates {
        let start = Instant::now();
        for _ in 0..batch {
            publisher.on_command(&[update(n)]);
            n += 1;
        }
        elapsed += start.elapsed().as_nanos();
        received += drain(&subscriptions);
    }
    (elapsed as f64 / updates as f64, received)
}

/// ns per update when each subscriber gets its own encoding of the frame.
fn encode_per_subscriber(subscribers: usize, updates: u64, batch: u64) -> (f64, usize) {
    let config = EngineConfig::sample();
    let view = MarketView::new(&config);
    let format = MarketFormat::new(&config, &config.markets[0]);
    let queues: Vec<Mutex<VecDeque<Bytes>>> = (0..subscribers).map(|_| Mutex::new(VecDeque::new())).collect();
    let (mut elapsed, mut received) = (0u128, 0);
    let mut n = 0;
    let mut id = 0;
    while n < updates {
        let start = Instant::now();
        for _ in 0..batch {
            let event = update(n);
            view.apply_command(std::slice::from_ref(&event));
            id += 1;
            let Event::BookLevelUpdate(level) = event else { unreachable!() };
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
            let (price, lots) = (level.price_ticks.get(), level.quantity_lots.get());
            let bid = level.side.get() == Ok(Side::Bid);
            for queue in &queues {
                let mut frame = Frame::new("depth.BTC_USDC", "depth", now);
                frame.str("s", "BTC_USDC");
                frame.levels("a", &format, (!bid).then_some((price, lots)));
                frame.levels("b", &format, bid.then_some((price, lots)));
                frame.int("U", id).int("u", id).int("T", level.timestamp_ns.get() / 1_000);
                queue.lock().unwrap().push_back(frame.finish());
            }
            n += 1;
        }
        elapsed += start.elapsed().as_nanos();
        for queue in &queues {
            received += queue.lock().unwrap().drain(..).count();
        }
    }
    (elapsed as f64 / updates as f64, received)
}

fn main() {
    let quick = std::env::var_os("FANOUT_BENCH_QUICK").is_some();
    let counts: &[usize] = if quick { &[1, 10, 100] } else { &[1, 10, 100, 1_000] };
    println!("WebSocket fan-out: publisher wall time per update of depth.BTC_USDC (one level per update)");
    println!(
        "{:>11} | {:>14} {:>16} | {:>14} {:>16} | {:>7}",
        "subscribers", "once ns/upd", "once ns/upd/sub", "per-sub ns/upd", "per-sub ns/u/sub", "speedup"
    );
    for &subscribers in counts {
        // About the same number of frames delivered at every size.
        let updates = if quick { 2_000 } else { (2_000_000 / subscribers as u64).clamp(5_000, 200_000) };
        // Connections drain their queues continuously; a batch of 100 keeps them short.
        let batch = 100.min(updates);
        let (once, once_received) = encode_once(subscribers, updates, batch);
        let (per, per_received) = encode_per_subscriber(subscribers, updates, batch);
        assert_eq!(once_received, subscribers * updates as usize, "every subscriber got every frame");
        assert_eq!(per_received, once_received);
        println!(
            "{subscribers:>11} | {once:>14.0} {:>16.1} | {per:>14.0} {:>16.1} | {:>6.1}x",
            once / subscribers as f64,
            per / subscribers as f64,
            per / once
        );
    }
}
