//! WebSocket fan-out end to end on loopback: N real WebSocket clients (tokio-tungstenite)
//! subscribe to `depth.BTC_USDC` on the real endpoint (axum, `gateway_json::ws_router`) while a
//! producer thread publishes book updates onto the egress ring at a fixed rate; the feed thread
//! applies them through the `Publisher`, which encodes each once and fans it out.
//!
//! Latency of a frame = client receive time − the update's engine timestamp (`T`, set from the
//! wall clock when the producer publishes it): egress ring → feed → encode → queue → connection
//! task → socket → client parse. Reported per N: percentiles (µs), frames received / expected,
//! and the publisher's frames encoded vs queued (encode once: encoded = updates, queued = N ×
//! updates). The baseline in the same run is N = 1.
//!
//! Run: `cargo bench -p gateway-json --bench ws_latency` (`WS_BENCH_QUICK=1` for a smoke run).

use codec::*;
use engine::EngineConfig;
use engine::bus::BroadcastRing;
use futures_util::{SinkExt, StreamExt};
use gateway_binary::Credentials;
use gateway_json::{WsConfig, WsState, ws_router};
use hdrhistogram::Histogram;
use marketdata::{Feed, MarketView, Publisher, PublisherConfig};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

struct Outcome {
    histogram: Histogram<u64>,
    received: u64,
    expected: u64,
    encoded: u64,
    queued: u64,
}

async fn run(clients: usize, rate: u64, seconds: u64) -> Outcome {
    let config = EngineConfig::sample();
    let view = Arc::new(MarketView::new(&config));
    let publisher = Publisher::new(view, &config, PublisherConfig::default());
    let egress = BroadcastRing::new(1 << 16);
    let feed = Feed::start_publishing(publisher.clone(), egress.subscribe_from(0)).unwrap();
    let ws = WsConfig { connections_per_ip: clients + 10, ..WsConfig::default() };
    let router = ws_router(WsState::new(publisher.clone(), Arc::new(Credentials::default()), ws));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let updates = rate * seconds;
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(clients);
    for _ in 0..clients {
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
            let request = r#"{"method":"SUBSCRIBE","params":["depth.BTC_USDC"],"id":1}"#;
            socket.send(Message::text(request)).await.unwrap();
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut received = 0u64;
            let mut acknowledged = false;
            loop {
                let next = tokio::time::timeout(Duration::from_secs(3), socket.next()).await;
                let Ok(Some(Ok(message))) = next else { break };
                let Message::Text(text) = message else { continue };
                if !acknowledged {
                    acknowledged = true;
                    let _ = ready.send(()).await;
                    continue;
                }
                let Some(at) = text.rfind("\"T\":") else { continue };
                let digits: String = text[at + 4..].chars().take_while(char::is_ascii_digit).collect();
                let sent_us: u64 = digits.parse().unwrap_or(0);
                let latency = (now_ns() / 1_000).saturating_sub(sent_us).max(1);
                histogram.record(latency.min(60_000_000)).unwrap();
                received += 1;
                if received == updates {
                    break;
                }
            }
            (histogram, received)
        }));
    }
    for _ in 0..clients {
        ready_rx.recv().await.unwrap();
    }
    let producer = {
        let egress = egress.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            for n in 0..updates {
                let due = start + Duration::from_nanos(n * 1_000_000_000 / rate);
                while Instant::now() < due {
                    std::thread::sleep(Duration::from_micros(50));
                }
                let update = BookLevelUpdate {
                    timestamp_ns: TimestampNs::new(now_ns()),
                    price_ticks: Ticks::new(640_000 + n % 100),
                    quantity_lots: Lots::new(n % 7),
                    market_id: MarketId::new(1),
                    side: if n % 2 == 0 { Side::Bid.into() } else { Side::Ask.into() },
                    ..Default::default()
                };
                egress.publish(0, &Event::BookLevelUpdate(update));
            }
        })
    };
    producer.join().unwrap();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut received = 0;
    for task in tasks {
        let (h, r) = task.await.unwrap();
        histogram.add(h).unwrap();
        received += r;
    }
    let stats = publisher.stats();
    let outcome = Outcome {
        histogram,
        received,
        expected: updates * clients as u64,
        encoded: stats.frames_encoded.load(Ordering::Relaxed),
        queued: stats.frames_queued.load(Ordering::Relaxed),
    };
    feed.shutdown();
    server.abort();
    outcome
}

fn main() {
    let quick = std::env::var_os("WS_BENCH_QUICK").is_some();
    let (sizes, rate, seconds): (&[usize], u64, u64) =
        if quick { (&[1, 20], 200, 1) } else { (&[1, 100, 1_000], 200, 5) };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!(
        "WebSocket fan-out on loopback: depth.BTC_USDC at {rate} updates/s for {seconds} s, publish -> client receive (µs)"
    );
    println!(
        "{:>8} | {:>8} {:>8} {:>8} {:>8} {:>8} | {:>11} {:>11} | {:>9} {:>10}",
        "clients", "p50", "p90", "p99", "p99.9", "max", "received", "expected", "encoded", "queued"
    );
    for &clients in sizes {
        let outcome = runtime.block_on(run(clients, rate, seconds));
        let h = &outcome.histogram;
        println!(
            "{clients:>8} | {:>8} {:>8} {:>8} {:>8} {:>8} | {:>11} {:>11} | {:>9} {:>10}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            outcome.received,
            outcome.expected,
            outcome.encoded,
            outcome.queued
        );
    }
}
