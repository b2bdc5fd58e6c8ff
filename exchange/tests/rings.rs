//! The ingress and egress rings under contention, through the real runtime: several producer
//! threads push into a deliberately small ingress ring (so the "full → busy" path is taken and
//! retried), the engine thread journals and executes, and a consumer reads the egress ring. Every
//! command must come out exactly once, in each producer's order, and the journal must hold
//! exactly the commands executed.

use codec::Event;
use engine::testkit::commands;
use exchange::config::{Config, DurabilitySetting};
use exchange::egress::ReadError;
use exchange::runtime::{IngressCommand, Runtime, recover};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const PRODUCERS: u64 = 4;
const PER_PRODUCER: u64 = 5_000;

#[test]
fn many_producers_small_ring_nothing_lost_or_reordered() {
    let dir = std::env::temp_dir().join(format!("exchange-rings-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::load(None).unwrap();
    config.data_dir = dir.clone();
    config.engine.ring_capacity = 16;
    config.engine.egress_capacity = 1 << 16;
    config.journal.durability = DurabilitySetting::None;
    config.snapshot.every_commands = 0;
    let engine_config = config.engine_config().unwrap();
    let (recovered, writer) = recover(&config, &engine_config, false, true).unwrap();
    let runtime = Runtime::start(&config, recovered, writer.unwrap()).unwrap();
    let mut consumer = runtime.egress.subscribe();
    let busy = Arc::new(AtomicU64::new(0));

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|producer| {
            let (ring, busy) = (runtime.ring.clone(), busy.clone());
            std::thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    // origin encodes (producer, index); each deposit yields exactly one event.
                    let origin = producer << 32 | (i + 1);
                    let mut item = IngressCommand::new(origin, commands::deposit(producer + 1, 1, i + 1));
                    while let Err(returned) = ring.push(item) {
                        busy.fetch_add(1, Ordering::Relaxed);
                        item = returned;
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();

    let mut next_expected = [1u64; PRODUCERS as usize];
    let mut received = 0;
    while received < PRODUCERS * PER_PRODUCER {
        match consumer.try_next() {
            Ok(published) => {
                let (producer, index) = ((published.origin >> 32) as usize, published.origin & 0xffff_ffff);
                assert_eq!(index, next_expected[producer], "producer {producer}: out of order or duplicated");
                assert!(matches!(published.event, Event::BalanceUpdate(_)));
                next_expected[producer] += 1;
                received += 1;
            }
            Err(ReadError::Empty) => std::thread::yield_now(),
            Err(lagged) => panic!("consumer lagged: {lagged}"),
        }
    }
    for producer in producers {
        producer.join().unwrap();
    }
    assert!(busy.load(Ordering::Relaxed) > 0, "a 16-slot ring under 4 producers must fill up at times");
    runtime.shutdown().unwrap();

    // The journal holds exactly what was executed, and the balances add up.
    let (recovered, _) = recover(&config, &engine_config, true, false).unwrap();
    assert_eq!(recovered.last_sequence, PRODUCERS * PER_PRODUCER);
    for producer in 0..PRODUCERS {
        let balance = recovered.engine.balance(codec::UserId::new(producer + 1), codec::AssetId::new(1));
        assert_eq!(balance.available, PER_PRODUCER * (PER_PRODUCER + 1) / 2);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ingress_reports_busy_when_full_and_nothing_is_dropped() {
    let ring = exchange::runtime::IngressRing::new(4);
    for i in 0..4 {
        assert!(ring.push(IngressCommand::new(i, commands::deposit(1, 1, 1))).is_ok());
    }
    let refused = ring.push(IngressCommand::new(99, commands::deposit(1, 1, 1)));
    assert_eq!(refused.map_err(|item| item.origin), Err(99), "the producer gets its command back");
    let drained: Vec<u64> = std::iter::from_fn(|| ring.pop()).map(|item| item.origin).collect();
    assert_eq!(drained, [0, 1, 2, 3]);
}
