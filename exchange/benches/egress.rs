//! Why the egress ring is our own: its publish cost next to `tokio::sync::broadcast` (the kept
//! crate closest to the need: bounded, multi-consumer, lag reported instead of blocking) on the
//! same workload in the same run.
//!
//! One publisher (the engine thread's role) publishes N events while two consumer threads read
//! everything they can. Reported per ring: publisher ns/event (what the engine pays), consumer
//! events received and lag reports. `tokio::sync::broadcast::Sender::send` takes a mutex on every
//! send, so the engine thread would contend with readers on a lock; our ring's publish is plain
//! atomic stores. (`bus`, the other candidate, blocks the publisher when a reader is slow, which
//! the engine must never do, so it is not measured.)
//!
//! Run: `cargo bench -p exchange --bench egress` (`EGRESS_BENCH_QUICK=1` for a smoke run).

use codec::*;
use exchange::egress::{BroadcastRing, ReadError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

fn event(n: u64) -> Event {
    Event::Fill(Fill { sequence: Sequence::new(n), trade_id: TradeId::new(n), ..Fill::default() })
}

struct Result {
    name: &'static str,
    publish_ns: f64,
    received: [u64; 2],
    lags: [u64; 2],
}

fn ours(count: u64) -> Result {
    let ring = BroadcastRing::new(1 << 16);
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (mut consumer, done) = (ring.subscribe(), done.clone());
            std::thread::spawn(move || {
                let (mut received, mut lags) = (0, 0);
                loop {
                    match consumer.try_next() {
                        Ok(_) => received += 1,
                        Err(ReadError::Empty) if done.load(Ordering::Acquire) => break,
                        Err(ReadError::Empty) => std::hint::spin_loop(),
                        Err(ReadError::Lagged { oldest, .. }) => {
                            lags += 1;
                            consumer.seek(oldest + 1);
                        }
                    }
                }
                (received, lags)
            })
        })
        .collect();
    let started = Instant::now();
    for n in 0..count {
        ring.publish(n, &event(n));
    }
    let publish_ns = started.elapsed().as_nanos() as f64 / count as f64;
    done.store(true, Ordering::Release);
    let results: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    Result {
        name: "egress BroadcastRing",
        publish_ns,
        received: [results[0].0, results[1].0],
        lags: [results[0].1, results[1].1],
    }
}

fn tokio_broadcast(count: u64) -> Result {
    let (sender, _) = tokio::sync::broadcast::channel::<Event>(1 << 16);
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (mut receiver, done) = (sender.subscribe(), done.clone());
            std::thread::spawn(move || {
                use tokio::sync::broadcast::error::TryRecvError;
                let (mut received, mut lags) = (0, 0);
                loop {
                    match receiver.try_recv() {
                        Ok(_) => received += 1,
                        Err(TryRecvError::Empty) if done.load(Ordering::Acquire) => break,
                        Err(TryRecvError::Empty) => std::hint::spin_loop(),
                        Err(TryRecvError::Lagged(_)) => lags += 1,
                        Err(TryRecvError::Closed) => break,
                    }
                }
                (received, lags)
            })
        })
        .collect();
    let started = Instant::now();
    for n in 0..count {
        let _ = sender.send(event(n));
    }
    let publish_ns = started.elapsed().as_nanos() as f64 / count as f64;
    done.store(true, Ordering::Release);
    let results: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    Result {
        name: "tokio::sync::broadcast",
        publish_ns,
        received: [results[0].0, results[1].0],
        lags: [results[0].1, results[1].1],
    }
}

fn main() {
    let quick = std::env::var_os("EGRESS_BENCH_QUICK").is_some();
    let count = if quick { 20_000 } else { 2_000_000 };
    println!("egress ring vs tokio broadcast: {count} Fill events, 2 spinning consumers, 2-core machine");
    println!("{:<24} {:>12} {:>22} {:>14}", "ring", "publish ns", "received (c1 / c2)", "lag reports");
    for result in [ours(count), tokio_broadcast(count), ours(count), tokio_broadcast(count)] {
        println!(
            "{:<24} {:>12.1} {:>10} / {:<10} {:>6} / {:<6}",
            result.name, result.publish_ns, result.received[0], result.received[1], result.lags[0], result.lags[1]
        );
    }
}
