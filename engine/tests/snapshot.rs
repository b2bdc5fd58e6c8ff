//! Snapshots restore the exact engine state: at many points of a random command stream, an engine
//! restored from a snapshot has the same state hash and then emits exactly the same events as the
//! original for the rest of the stream. Damaged or mismatched snapshots are refused.

use codec::*;
use engine::testkit::commands::*;
use engine::{CommandContext, Engine, EngineConfig, OrderBook};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn stream(count: usize) -> Vec<Command> {
    let mut rng = XorShift(0x5eed_1234_abcd_0001);
    let mut commands = Vec::new();
    for user in 1..=6 {
        commands.push(deposit(user, 0, 50_000_000));
        commands.push(deposit(user, 1, 5_000_000_000));
    }
    for i in 0..count {
        // Market 1 is halted around every other snapshot point (sequence 12 + 250k), so the
        // halted flag is snapshotted, restored and then obeyed.
        match i % 500 {
            230 => commands.push(market_control(1, true)),
            270 => commands.push(market_control(1, false)),
            _ => {}
        }
        let user = rng.range(1, 6);
        let side = if rng.next() % 2 == 0 { Side::Bid } else { Side::Ask };
        commands.push(match rng.next() % 56 {
            0..=29 => limit(user, 1, side, rng.range(990, 1010), rng.range(1, 50), TimeInForce::Gtc, rng.range(0, 9)),
            30..=34 => market(user, 1, side, rng.range(1, 20)),
            35..=39 => cancel(user, 1, rng.range(1, 300)),
            40..=48 => replace(user, 1, rng.range(1, 300), rng.range(985, 1015), rng.range(0, 60)),
            49 => mass_cancel(user, 1, SideFilter::Both),
            // The AMM pool beside the book (its state is in the snapshot too).
            50..=51 => add_liquidity(user, 1, rng.range(1, 2_000_000), rng.range(1, 200_000_000)),
            52 => remove_liquidity(user, 1, rng.range(1, 5_000_000)),
            _ => {
                let mode = if rng.next() % 2 == 0 { SwapMode::ExactIn } else { SwapMode::ExactOut };
                swap(user, 1, side, mode, rng.range(1, 1_000_000), 0)
            }
        });
    }
    commands
}

fn config() -> EngineConfig {
    let mut config = EngineConfig::sample();
    config.limits.orders_per_market_max = 4_096;
    config.pools = vec![engine::PoolConfig { market_id: MarketId::new(1), fee_bps: 25 }];
    config
}

#[test]
fn restored_engine_continues_identically() {
    let config = config();
    let commands = stream(2_000);
    let mut original = Engine::new(&config).unwrap();
    let (mut events, mut restored_events, mut buffer) = (Vec::new(), Vec::new(), Vec::new());
    let mut checked = 0;
    for (i, command) in commands.iter().enumerate() {
        let sequence = i as u64 + 1;
        original.execute(CommandContext::new(sequence, sequence * 10), command, &mut events);
        if i % 250 == 249 {
            original.write_snapshot(sequence, &mut buffer);
            let (mut restored, at) = Engine::restore_snapshot(&config, OrderBook::with_capacity, &buffer).unwrap();
            assert_eq!(at, sequence);
            assert_eq!(restored.state_hash(), original.state_hash());
            // Continue both for a while: identical events prove identical queues and counters.
            let mut copy = Engine::restore_snapshot(&config, OrderBook::with_capacity, &buffer).unwrap().0;
            for (j, next) in commands.iter().enumerate().skip(i + 1).take(200) {
                let ctx = CommandContext::new(j as u64 + 1, 7);
                events.clear();
                restored_events.clear();
                copy.execute(ctx, next, &mut events);
                restored.execute(ctx, next, &mut restored_events);
                assert_eq!(events, restored_events);
            }
            checked += 1;
        }
        events.clear();
    }
    assert!(original.book(MarketId::new(1)).map_or(0, engine::Book::len) > 10, "the book should hold orders");
    assert!(original.pool(MarketId::new(1)).unwrap().holders.len() > 1, "the pool should have providers");
    assert_eq!(checked, 8);
}

#[test]
fn damaged_or_foreign_snapshots_are_refused() {
    let config = config();
    let mut engine = Engine::new(&config).unwrap();
    let mut events = Vec::new();
    for (i, command) in stream(300).iter().enumerate() {
        engine.execute(CommandContext::new(i as u64 + 1, 0), command, &mut events);
    }
    let mut snapshot = Vec::new();
    engine.write_snapshot(300, &mut snapshot);
    for position in [0, 9, 40, snapshot.len() / 2, snapshot.len() - 1] {
        let mut damaged = snapshot.clone();
        damaged[position] ^= 0x01;
        assert!(Engine::restore_snapshot(&config, OrderBook::with_capacity, &damaged).is_err(), "flip at {position}");
    }
    for cut in [0, 3, 20, snapshot.len() - 1] {
        assert!(Engine::restore_snapshot(&config, OrderBook::with_capacity, &snapshot[..cut]).is_err());
    }
    let mut other = config.clone();
    other.markets.pop();
    let error = Engine::restore_snapshot(&other, OrderBook::with_capacity, &snapshot).err().unwrap();
    assert!(error.to_string().contains("markets"), "{error}");
}

/// The lookup maps' hash seed changes nothing observable: the same stream under different seeds
/// gives the same events and the same state hash.
#[test]
fn lookup_hash_seed_does_not_change_behaviour() {
    let config = config();
    let commands = stream(3_000);
    let mut outputs = Vec::new();
    for seed in [0, 0x9e37_79b9_7f4a_7c15, u64::MAX] {
        engine::set_lookup_hash_seed(seed);
        let mut engine = Engine::new(&config).unwrap();
        let mut events = Vec::new();
        for (i, command) in commands.iter().enumerate() {
            engine.execute(CommandContext::new(i as u64 + 1, 0), command, &mut events);
        }
        outputs.push((engine.state_hash(), events));
    }
    engine::set_lookup_hash_seed(0);
    assert!(outputs.windows(2).all(|pair| pair[0] == pair[1]));
}
