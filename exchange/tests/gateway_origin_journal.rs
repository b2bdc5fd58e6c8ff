//! The gateway origin (gateway id, gateway sequence) of a command from a gateway process goes
//! through the real engine thread into the journal and back (no broker needed):
//! - the engine thread drops a duplicate (same gateway id, sequence not above the highest
//!   applied) without events, and executes the same command from another gateway;
//! - the journal holds the origin: a replay from scratch reaches the live engine's state hash
//!   (which covers the deduplication table) and drops the same duplicate; the snapshotter's
//!   shadow engine agrees too (`Runtime::shutdown` fails on a difference);
//! - records without an origin (every journal written before gateway processes: the payload is
//!   the command alone, byte for byte as before) replay as they always did, mixed with tagged ones.

use codec::{Command, GatewayTag, Side, TimeInForce};
use engine::Book;
use engine::testkit::commands::{deposit, limit};
use exchange::config::{Config, DurabilitySetting};
use exchange::runtime::{IngressCommand, Runtime, recover};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long the test waits for the engine thread.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);

fn push(runtime: &Runtime, mut item: IngressCommand) {
    while let Err(returned) = runtime.ring.push(item) {
        item = returned;
        std::thread::yield_now();
    }
}

#[test]
fn duplicates_from_a_gateway_are_dropped_live_and_on_replay() {
    let dir = std::env::temp_dir().join(format!("exchange-gateway-origin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::load(None).unwrap();
    config.data_dir = dir.clone();
    config.journal.durability = DurabilitySetting::None;
    config.snapshot.every_commands = 0;
    config.snapshot.every_seconds = 0;
    config.engine.orders_per_market_max = 1_024;
    let engine_config = config.engine_config().unwrap();

    // The plain bytes of an untagged command are what every journal before this change holds.
    let order = limit(2, 1, Side::Bid, 10_000, 1_000, TimeInForce::Gtc, 1);
    assert_eq!(codec::encode_journaled(&order, None, &mut [0; 256]), Some(order.to_vec().len()));

    let (recovered, writer) = recover(&config, &engine_config, false, true).unwrap();
    let runtime = Runtime::start(&config, recovered, writer.unwrap()).unwrap();
    let mut egress = runtime.egress.subscribe();
    let first = GatewayTag { gateway_id: 1, gateway_sequence: 1_000 };
    let commands: [(Option<GatewayTag>, Command); 6] = [
        (None, deposit(2, 1, 1_000_000_000_000)),
        (Some(first), order),
        // Re-sent by gateway 1 (a restart, or a new primary re-reading the commands topic).
        (Some(first), order),
        (Some(GatewayTag { gateway_sequence: 999, ..first }), order),
        // Another gateway's sequence 1000 is its own.
        (Some(GatewayTag { gateway_id: 2, ..first }), limit(2, 1, Side::Bid, 10_000, 1_000, TimeInForce::Gtc, 2)),
        (None, limit(2, 1, Side::Bid, 10_000, 1_000, TimeInForce::Gtc, 3)),
    ];
    for (origin, (tag, command)) in commands.iter().enumerate() {
        let origin = origin as u64 + 1;
        push(
            &runtime,
            match tag {
                Some(tag) => IngressCommand::from_gateway(origin, *command, *tag),
                None => IngressCommand::new(origin, *command),
            },
        );
    }
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    while runtime.stats.last_sequence.load(Ordering::Acquire) < commands.len() as u64 {
        assert!(Instant::now() < deadline, "the engine did not execute the commands");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Every command is journaled (sequences 1..=6), but the duplicates cause no event.
    let mut origins_with_events = std::collections::BTreeSet::new();
    while let Ok(published) = egress.try_next() {
        origins_with_events.insert(published.origin);
        if let codec::Event::OrderRejected(rejected) = published.event {
            panic!("every order here is valid; origin {}: {rejected:?}", published.origin);
        }
    }
    assert_eq!(origins_with_events, [1, 2, 5, 6].into(), "origins 3 and 4 are duplicates");
    runtime.shutdown().expect("the shadow engine agrees with the live one");

    // A replay of the journal from scratch drops the same duplicates: three orders rest.
    let (replayed, _) = recover(&config, &engine_config, true, false).unwrap();
    assert_eq!(replayed.last_sequence, 6);
    assert_eq!(replayed.engine.book(codec::MarketId::new(1)).unwrap().len(), 3);
    assert_eq!(replayed.engine.gateway_sequence(1), Some(1_000));
    assert_eq!(replayed.engine.gateway_sequence(2), Some(1_000));
    // And equals the final snapshot the shutdown wrote (version 6, with the table).
    let (from_snapshot, _) = recover(&config, &engine_config, false, false).unwrap();
    assert_eq!(from_snapshot.snapshot.map(|(sequence, _)| sequence), Some(6));
    assert_eq!(from_snapshot.engine.state_hash(), replayed.engine.state_hash());
    let _ = std::fs::remove_dir_all(&dir);
}
