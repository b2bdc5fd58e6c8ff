//! AMM pool rules in the engine: the worked example, rounding in the pool's favour, slippage and
//! other rejects (one `OrderRejected`, state unchanged), empty pools, zero and huge amounts, LP
//! share accounting across many providers, and a property test of random pool commands mixed
//! with order-book commands: `validate()` (conservation with the pool account, reserves = ledger
//! pool account, shares sum) after every command, k never decreasing on swaps, the value of a
//! share never decreasing, replay and snapshot determinism.

use codec::*;
use engine::amm::MINIMUM_LIQUIDITY;
use engine::testkit::ReferenceLedger;
use engine::testkit::commands::*;
use engine::{CommandContext, Engine, EngineConfig, OrderBook, PoolConfig};
use proptest::prelude::*;

const BTC_USDC: u32 = 1;
const ETH_USDC: u32 = 2;
const SOL_USDC: u32 = 3;
const BTC: u32 = 0;
const USDC: u32 = 1;
const ETH: u32 = 2;
const SOL: u32 = 3;

/// Pools beside ETH_USDC (30 bps) and SOL_USDC (no fee); none beside BTC_USDC.
fn config() -> EngineConfig {
    let mut config = EngineConfig::sample();
    config.limits.orders_per_market_max = 256;
    config.pools = vec![
        PoolConfig { market_id: MarketId::new(ETH_USDC), fee_bps: 30 },
        PoolConfig { market_id: MarketId::new(SOL_USDC), fee_bps: 0 },
    ];
    config
}

struct Harness {
    engine: Engine,
    reference: ReferenceLedger,
    sequence: u64,
    events: Vec<Event>,
}

impl Harness {
    fn new() -> Self {
        let config = config();
        Self {
            engine: Engine::new(&config).unwrap(),
            reference: ReferenceLedger::new(&config),
            sequence: 0,
            events: Vec::new(),
        }
    }

    /// Executes and checks every invariant; returns the events.
    fn run(&mut self, command: Command) -> Vec<Event> {
        self.sequence += 1;
        self.events.clear();
        let before = self.engine.state_hash();
        self.engine.execute(CommandContext::new(self.sequence, self.sequence * 1_000), &command, &mut self.events);
        assert!(!self.events.is_empty(), "every command yields an event: {command:?}");
        if matches!(self.events[0], Event::OrderRejected(_)) {
            assert_eq!(self.events.len(), 1, "a reject comes alone");
            assert_eq!(before, self.engine.state_hash(), "a reject changes nothing: {command:?}");
        }
        for event in &self.events {
            self.reference.apply(event);
        }
        self.engine.validate().unwrap_or_else(|e| panic!("after {command:?}: {e}"));
        self.reference.check(&self.engine).unwrap_or_else(|e| panic!("after {command:?}: {e}"));
        self.events.clone()
    }

    /// Executes a command that must be rejected for `reason`.
    fn rejected(&mut self, command: Command, reason: RejectReason) {
        let events = self.run(command);
        let Event::OrderRejected(rejected) = events[0] else { panic!("expected a reject, got {events:?}") };
        assert_eq!(rejected.reason.get(), Ok(reason), "{command:?}");
        assert_eq!(rejected.command_template_id.get(), command.template_id());
    }

    fn balance(&self, user: u64, asset: u32) -> u64 {
        self.engine.balance(UserId::new(user), AssetId::new(asset)).available
    }

    fn pool(&self, market: u32) -> engine::Pool {
        self.engine.pool(MarketId::new(market)).unwrap().clone()
    }
}

fn added(events: &[Event]) -> LiquidityAdded {
    match events[0] {
        Event::LiquidityAdded(added) => added,
        _ => panic!("expected LiquidityAdded, got {events:?}"),
    }
}

fn swapped(events: &[Event]) -> SwapExecuted {
    match events[0] {
        Event::SwapExecuted(swap) => swap,
        _ => panic!("expected SwapExecuted, got {events:?}"),
    }
}

/// The example: a pool of 10 SOL and 20 USDC; buying 1 SOL costs 20/9 = 2.222223 USDC
/// (rounded up), and the slippage limit rejects a price one minor unit better.
#[test]
fn worked_example() {
    let mut h = Harness::new();
    h.run(deposit(1, SOL, 10_000_000_000));
    h.run(deposit(1, USDC, 20_000_000));
    let events = h.run(add_liquidity(1, SOL_USDC, 10_000_000_000, 20_000_000));
    let first = added(&events);
    // ⌊√(10¹⁰ · 2·10⁷)⌋ = ⌊√(2·10¹⁷)⌋ = 447213595, minus the locked minimum.
    assert_eq!(first.total_shares.get(), 447_213_595);
    assert_eq!(first.shares.get(), 447_213_595 - MINIMUM_LIQUIDITY);
    assert_eq!((h.balance(1, SOL), h.balance(1, USDC)), (0, 0));
    assert_eq!(h.engine.ledger().pooled(AssetId::new(SOL)), 10_000_000_000);
    assert!(matches!(events[1], Event::BalanceUpdate(b) if b.reason.get() == Ok(BalanceChange::Pool)));

    h.run(deposit(2, USDC, 5_000_000));
    let before = h.engine.state_hash();
    h.rejected(
        swap(2, SOL_USDC, Side::Bid, SwapMode::ExactOut, 1_000_000_000, 2_222_222),
        RejectReason::SlippageExceeded,
    );
    assert_eq!(before, h.engine.state_hash());
    let events = h.run(swap(2, SOL_USDC, Side::Bid, SwapMode::ExactOut, 1_000_000_000, 2_222_223));
    let bought = swapped(&events);
    assert_eq!((bought.amount_in.get(), bought.amount_out.get(), bought.fee.get()), (2_222_223, 1_000_000_000, 0));
    assert_eq!((bought.base_reserve.get(), bought.quote_reserve.get()), (9_000_000_000, 22_222_223));
    assert_eq!((h.balance(2, SOL), h.balance(2, USDC)), (1_000_000_000, 5_000_000 - 2_222_223));

    // Selling it straight back (exact in) returns less than was paid: rounding favours the pool.
    let events = h.run(swap(2, SOL_USDC, Side::Ask, SwapMode::ExactIn, 1_000_000_000, 0));
    let back = swapped(&events);
    assert_eq!(back.amount_out.get(), 2_222_222, "⌊22222223·10⁹/10¹⁰⌋");
    assert_eq!(h.pool(SOL_USDC).quote_reserve, 20_000_001, "the pool kept one minor unit");
}

/// A fee in bps of the amount paid in stays in the pool: a round trip leaves k higher and the
/// liquidity provider richer in both assets per share.
#[test]
fn fees_stay_in_the_pool() {
    let mut h = Harness::new();
    h.run(deposit(1, ETH, 1_000_000_000));
    h.run(deposit(1, USDC, 3_000_000_000));
    h.run(add_liquidity(1, ETH_USDC, 1_000_000_000, 3_000_000_000));
    h.run(deposit(2, USDC, 1_000_000_000));
    let k0 = {
        let p = h.pool(ETH_USDC);
        u128::from(p.base_reserve) * u128::from(p.quote_reserve)
    };
    let buy = swapped(&h.run(swap(2, ETH_USDC, Side::Bid, SwapMode::ExactIn, 300_000_000, 0)));
    assert_eq!(buy.fee.get(), 900_000, "30 bps of 300 USDC");
    let sell = swapped(&h.run(swap(2, ETH_USDC, Side::Ask, SwapMode::ExactIn, buy.amount_out.get(), 0)));
    assert!(sell.amount_out.get() < 300_000_000, "a round trip costs the fees");
    let p = h.pool(ETH_USDC);
    assert!(u128::from(p.base_reserve) * u128::from(p.quote_reserve) > k0);
    let shares = p.shares_of(UserId::new(1));
    let removed = match h.run(remove_liquidity(1, ETH_USDC, shares))[0] {
        Event::LiquidityRemoved(removed) => removed,
        ref other => panic!("{other:?}"),
    };
    // The provider owned all but the locked minimum: gets back more than deposited of at least one
    // asset and (since k grew) more value overall at the final price.
    assert!(removed.base_amount.get() >= 999_000_000 && removed.quote_amount.get() > 2_997_000_000, "{removed:?}");
    assert_eq!(h.pool(ETH_USDC).total_shares, MINIMUM_LIQUIDITY);
    assert!(h.pool(ETH_USDC).base_reserve > 0 && h.pool(ETH_USDC).quote_reserve > 0, "never drained");
}

#[test]
fn rejects_change_nothing() {
    let mut h = Harness::new();
    for asset in [BTC, USDC, ETH, SOL] {
        h.run(deposit(1, asset, 10_000_000_000));
        h.run(deposit(2, asset, 10_000_000_000));
    }
    // Unknown market, market without a pool, empty pool.
    h.rejected(add_liquidity(1, 9, 1_000_000, 1_000_000), RejectReason::UnknownMarket);
    h.rejected(add_liquidity(1, BTC_USDC, 1_000_000, 1_000_000), RejectReason::PoolNotFound);
    h.rejected(swap(1, BTC_USDC, Side::Bid, SwapMode::ExactIn, 1_000, 0), RejectReason::PoolNotFound);
    h.rejected(swap(1, SOL_USDC, Side::Bid, SwapMode::ExactIn, 1_000, 0), RejectReason::PoolEmpty);
    h.rejected(swap(1, SOL_USDC, Side::Ask, SwapMode::ExactOut, 1_000, 0), RejectReason::PoolEmpty);
    h.rejected(remove_liquidity(1, SOL_USDC, 1), RejectReason::PoolEmpty);
    // Zero amounts and a first deposit too small to exceed the locked minimum.
    h.rejected(add_liquidity(1, SOL_USDC, 0, 1_000_000), RejectReason::InvalidAmount);
    h.rejected(add_liquidity(1, SOL_USDC, 1_000, 1_000), RejectReason::InsufficientLiquidity);
    // More than the user holds.
    h.rejected(add_liquidity(1, SOL_USDC, 20_000_000_000, 1_000_000), RejectReason::InsufficientBalance);
    let shares = added(&h.run(add_liquidity(1, SOL_USDC, 5_000_000_000, 1_000_000_000))).shares.get();
    h.rejected(swap(1, SOL_USDC, Side::Bid, SwapMode::ExactIn, 0, 0), RejectReason::InvalidAmount);
    h.rejected(remove_liquidity(1, SOL_USDC, 0), RejectReason::InvalidAmount);
    // An output that rounds to nothing, and the whole reserve (or more) out.
    h.rejected(swap(1, SOL_USDC, Side::Ask, SwapMode::ExactIn, 1, 0), RejectReason::InvalidAmount);
    h.rejected(swap(1, SOL_USDC, Side::Bid, SwapMode::ExactOut, 5_000_000_000, 0), RejectReason::InsufficientLiquidity);
    h.rejected(swap(1, SOL_USDC, Side::Bid, SwapMode::ExactOut, u64::MAX, 0), RejectReason::InsufficientLiquidity);
    // The payment exceeds the balance.
    h.rejected(swap(1, SOL_USDC, Side::Bid, SwapMode::ExactOut, 4_999_000_000, 0), RejectReason::InsufficientBalance);
    h.rejected(swap(1, SOL_USDC, Side::Ask, SwapMode::ExactIn, 10_000_000_000, 0), RejectReason::InsufficientBalance);
    // Slippage: min out, max in, min shares, min amounts on removal.
    h.rejected(swap(1, SOL_USDC, Side::Ask, SwapMode::ExactIn, 1_000_000, 1_000_000), RejectReason::SlippageExceeded);
    h.rejected(swap(1, SOL_USDC, Side::Bid, SwapMode::ExactOut, 1_000_000, 1), RejectReason::SlippageExceeded);
    let mut greedy = add_liquidity(2, SOL_USDC, 5_000_000_000, 1_000_000_000);
    if let Command::AddLiquidity(m) = &mut greedy {
        m.min_shares = Shares::new(shares + MINIMUM_LIQUIDITY + 1);
    }
    h.rejected(greedy, RejectReason::SlippageExceeded);
    let mut greedy = remove_liquidity(1, SOL_USDC, shares);
    if let Command::RemoveLiquidity(m) = &mut greedy {
        m.min_base_amount = Amount::new(5_000_000_000);
    }
    h.rejected(greedy, RejectReason::SlippageExceeded);
    // Another user's liquidity cannot be removed; nor more shares than one holds.
    h.rejected(remove_liquidity(2, SOL_USDC, 1), RejectReason::InsufficientShares);
    h.rejected(remove_liquidity(1, SOL_USDC, shares + 1), RejectReason::InsufficientShares);
    // Unknown enum codes.
    let mut bytes = swap(1, SOL_USDC, Side::Bid, SwapMode::ExactIn, 1_000, 0).to_vec();
    bytes[MESSAGE_HEADER_BYTES + 29] = 9; // mode
    h.rejected(Command::decode(&bytes).unwrap().0, RejectReason::InvalidEnumValue);
    assert_eq!(h.pool(SOL_USDC).shares_of(UserId::new(1)), shares);
}

/// A halted market's pool takes no liquidity and no trades (swaps, routed orders); removing
/// liquidity still works, and trading resumes with the market.
#[test]
fn a_halted_market_halts_its_pool() {
    let mut h = Harness::new();
    for asset in [USDC, SOL] {
        h.run(deposit(1, asset, 10_000_000_000));
    }
    let shares = added(&h.run(add_liquidity(1, SOL_USDC, 5_000_000_000, 1_000_000_000))).shares.get();
    h.run(market_control(SOL_USDC, true));
    let before = h.engine.state_hash();
    h.rejected(add_liquidity(1, SOL_USDC, 1_000_000, 1_000_000), RejectReason::MarketHalted);
    h.rejected(swap(1, SOL_USDC, Side::Bid, SwapMode::ExactIn, 1_000, 0), RejectReason::MarketHalted);
    h.rejected(routed(1, SOL_USDC, Side::Bid, 1, 0), RejectReason::MarketHalted);
    assert_eq!(before, h.engine.state_hash());
    h.run(remove_liquidity(1, SOL_USDC, shares / 2));
    h.run(market_control(SOL_USDC, false));
    swapped(&h.run(swap(1, SOL_USDC, Side::Bid, SwapMode::ExactIn, 1_000_000, 0)));
}

/// Amounts near the top of u64: no panic, overflow is a reject, invariants hold.
#[test]
fn huge_amounts() {
    let mut h = Harness::new();
    let half = u64::MAX / 2;
    h.run(deposit(1, SOL, half));
    h.run(deposit(1, USDC, half));
    let first = added(&h.run(add_liquidity(1, SOL_USDC, half, half)));
    assert_eq!(first.total_shares.get(), half, "√(half²)");
    h.run(deposit(2, SOL, half));
    h.run(deposit(2, USDC, half));
    h.rejected(swap(2, SOL_USDC, Side::Bid, SwapMode::ExactOut, half - 1, 0), RejectReason::ArithmeticOverflow);
    let sold = swapped(&h.run(swap(2, SOL_USDC, Side::Ask, SwapMode::ExactIn, half, 0)));
    assert_eq!(sold.amount_out.get(), half / 2, "half of the quote for doubling the base");
    h.rejected(deposit(3, SOL, 2), RejectReason::ArithmeticOverflow);
    let all = h.pool(SOL_USDC).shares_of(UserId::new(1));
    h.run(remove_liquidity(1, SOL_USDC, all));
}

/// Many providers in and out between swaps: shares always sum to the total, everyone gets their
/// proportional part (rounded down), and the pool keeps only the locked minimum's worth.
#[test]
fn share_accounting_across_many_providers() {
    let mut h = Harness::new();
    let providers = 2..=9u64;
    for user in providers.clone().chain([1]) {
        h.run(deposit(user, ETH, 100_000_000_000));
        h.run(deposit(user, USDC, 300_000_000_000));
    }
    for (round, user) in providers.clone().enumerate() {
        let base = 1_000_000_000 * (round as u64 + 1);
        let events = h.run(add_liquidity(user, ETH_USDC, base, base * 3 + 12_345));
        let added = added(&events);
        assert!(added.quote_amount.get() <= base * 3 + 12_345 && added.base_amount.get() <= base);
        let side = if round % 2 == 0 { Side::Bid } else { Side::Ask };
        h.run(swap(1, ETH_USDC, side, SwapMode::ExactIn, 700_000_000 + round as u64, 0));
    }
    let pool = h.pool(ETH_USDC);
    let sum: u64 = pool.holders.values().sum();
    assert_eq!(sum + MINIMUM_LIQUIDITY, pool.total_shares);
    assert_eq!(pool.holders.len(), 8);
    for user in providers.rev() {
        let pool = h.pool(ETH_USDC);
        let shares = pool.shares_of(UserId::new(user));
        let events = h.run(remove_liquidity(user, ETH_USDC, shares));
        let Event::LiquidityRemoved(removed) = events[0] else { panic!("{events:?}") };
        let expected_base = u128::from(shares) * u128::from(pool.base_reserve) / u128::from(pool.total_shares);
        assert_eq!(u128::from(removed.base_amount.get()), expected_base);
        assert_eq!(removed.user_shares.get(), 0);
        h.run(swap(1, ETH_USDC, Side::Bid, SwapMode::ExactIn, 10_000_000, 0));
    }
    let pool = h.pool(ETH_USDC);
    assert!(pool.holders.is_empty());
    assert_eq!(pool.total_shares, MINIMUM_LIQUIDITY);
}

/// Pool commands and order-book commands interleaved; after each: every invariant (see
/// [`Harness::run`]), k never lower after a swap, reserves per share never lower after adding or
/// removing liquidity; finally a replay and a snapshot reproduce the state hash.
fn pool_command() -> impl Strategy<Value = Command> {
    let user = 1..=4u64;
    let pool_market = prop_oneof![Just(ETH_USDC), Just(SOL_USDC)];
    prop_oneof![
        3 => (user.clone(), pool_market.clone(), 0u64..=40_000_000_000, 0u64..=40_000_000_000)
            .prop_map(|(u, m, b, q)| add_liquidity(u, m, b, q)),
        2 => (user.clone(), pool_market.clone(), prop_oneof![0u64..=10_000, 0u64..=400_000_000])
            .prop_map(|(u, m, s)| remove_liquidity(u, m, s)),
        6 => (user.clone(), pool_market, prop_oneof![Just(Side::Bid), Just(Side::Ask)],
              prop_oneof![Just(SwapMode::ExactIn), Just(SwapMode::ExactOut)], 0u64..=5_000_000_000,
              prop_oneof![3 => Just(0u64), 1 => 0u64..=5_000_000_000])
            .prop_map(|(u, m, side, mode, amount, limit)| swap(u, m, side, mode, amount, limit)),
        2 => (user.clone(), prop_oneof![Just(Side::Bid), Just(Side::Ask)], 90u64..=110, 1u64..=50)
            .prop_map(|(u, side, price, lots)| limit(u, ETH_USDC, side, price * 10_000, lots * 100, TimeInForce::Gtc, 0)),
        1 => (user.clone(), prop_oneof![Just(Side::Bid), Just(Side::Ask)], 1u64..=50)
            .prop_map(|(u, side, lots)| market(u, ETH_USDC, side, lots * 100)),
        2 => (user, prop_oneof![Just(Side::Bid), Just(Side::Ask)], 1u64..=5_000, prop_oneof![3 => Just(0u64), 1 => 0u64..=5_000_000_000])
            .prop_map(|(u, side, lots, limit)| routed(u, ETH_USDC, side, lots * 10, limit)),
    ]
}

fn per_share_not_lower(before: &engine::Pool, after: &engine::Pool) -> bool {
    if before.total_shares == 0 {
        return true;
    }
    let (s0, s1) = (u128::from(before.total_shares), u128::from(after.total_shares));
    u128::from(after.base_reserve) * s0 >= u128::from(before.base_reserve) * s1
        && u128::from(after.quote_reserve) * s0 >= u128::from(before.quote_reserve) * s1
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_pool_streams_keep_every_invariant(commands in prop::collection::vec(pool_command(), 1..120)) {
        let mut h = Harness::new();
        let mut all = Vec::new();
        for user in 1..=4 {
            for asset in [USDC, ETH, SOL] {
                all.push(deposit(user, asset, 60_000_000_000));
            }
        }
        all.extend(commands);
        let mut executed = 0;
        for command in &all {
            let market = match command {
                Command::AddLiquidity(m) => Some(m.market_id),
                Command::RemoveLiquidity(m) => Some(m.market_id),
                Command::Swap(m) => Some(m.market_id),
                Command::RoutedOrder(m) => Some(m.market_id),
                _ => None,
            };
            let before = market.map(|m| h.engine.pool(m).unwrap().clone());
            let events = h.run(*command);
            let ok = !matches!(events[0], Event::OrderRejected(_));
            if let (Some(before), Some(market), true) = (before, market, ok) {
                executed += 1;
                let after = h.engine.pool(market).unwrap().clone();
                let k = |p: &engine::Pool| u128::from(p.base_reserve) * u128::from(p.quote_reserve);
                match command {
                    Command::Swap(_) | Command::RoutedOrder(_) => {
                        prop_assert!(k(&after) >= k(&before), "k decreased by {:?}", command);
                        prop_assert_eq!(after.total_shares, before.total_shares);
                    }
                    _ => prop_assert!(per_share_not_lower(&before, &after), "share value fell: {:?}", command),
                }
            }
        }
        let _ = executed;
        // Determinism: a replay reaches the same state; a snapshot restores it.
        let config = config();
        let mut replay = Engine::new(&config).unwrap();
        let mut events = Vec::new();
        for (i, command) in all.iter().enumerate() {
            replay.execute(CommandContext::new(i as u64 + 1, (i as u64 + 1) * 1_000), command, &mut events);
        }
        prop_assert_eq!(replay.state_hash(), h.engine.state_hash());
        let mut bytes = Vec::new();
        h.engine.write_snapshot(h.sequence, &mut bytes);
        let (restored, _) = Engine::restore_snapshot(&config, OrderBook::with_capacity, &bytes).unwrap();
        prop_assert_eq!(restored.state_hash(), h.engine.state_hash());
        prop_assert_eq!(restored.pools(), h.engine.pools());
    }
}

/// Pool state changes the state hash (so replay checks cover it) and snapshots refuse a pool
/// state that does not match the configuration.
#[test]
fn pools_are_in_the_hash_and_the_snapshot() {
    let mut h = Harness::new();
    h.run(deposit(1, SOL, 10_000_000_000));
    h.run(deposit(1, USDC, 20_000_000));
    let before = h.engine.state_hash();
    h.run(add_liquidity(1, SOL_USDC, 10_000_000_000, 20_000_000));
    assert_ne!(before, h.engine.state_hash());
    let mut bytes = Vec::new();
    h.engine.write_snapshot(3, &mut bytes);
    let mut other = config();
    other.pools.pop();
    let error = Engine::restore_snapshot(&other, OrderBook::with_capacity, &bytes).err().unwrap();
    assert!(error.to_string().contains("pool"), "{error}");
    let (restored, _) = Engine::restore_snapshot(&config(), OrderBook::with_capacity, &bytes).unwrap();
    assert_eq!(restored.pool(MarketId::new(SOL_USDC)), h.engine.pool(MarketId::new(SOL_USDC)));
    restored.validate().unwrap();
    assert_eq!(restored.ledger().pooled(AssetId::new(SOL)), 10_000_000_000);
}

#[test]
fn pool_configuration_is_checked() {
    let mut bad = config();
    bad.pools.push(PoolConfig { market_id: MarketId::new(SOL_USDC), fee_bps: 5 });
    assert!(Engine::new(&bad).is_err(), "two pools on one market");
    let mut bad = config();
    bad.pools[0].fee_bps = engine::amm::FEE_BPS_MAX + 1;
    assert!(Engine::new(&bad).is_err(), "fee too high");
    let mut bad = config();
    bad.pools[0].market_id = MarketId::new(7);
    assert!(Engine::new(&bad).is_err(), "unknown market");
}

/// What `user` ends with in quote and base after `setup` and then `command` on a fresh engine,
/// and the command's events.
fn outcome(setup: &[Command], command: Command, user: u64) -> (u64, u64, Vec<Event>) {
    let mut h = Harness::new();
    for c in setup {
        h.run(*c);
    }
    let events = h.run(command);
    (h.balance(user, USDC), h.balance(user, ETH), events)
}

fn total_of_route(events: &[Event]) -> OrderRouted {
    match events.last() {
        Some(Event::OrderRouted(routed)) => *routed,
        _ => panic!("expected OrderRouted last, got {events:?}"),
    }
}

/// A routed buy splits between a thin book and the pool when that is cheaper, and the report
/// matches the fills and the swap it caused.
#[test]
fn routed_order_splits_and_reports() {
    let mut setup = Vec::new();
    for user in 1..=3 {
        setup.push(deposit(user, ETH, 1_000_000_000_000));
        setup.push(deposit(user, USDC, 10_000_000_000_000));
    }
    // Pool: 100 ETH / 300_000 USDC (3000 per ETH); book: asks of user 3 at 2990 and 3010.
    setup.push(add_liquidity(1, ETH_USDC, 10_000_000_000, 300_000_000_000));
    setup.push(limit(3, ETH_USDC, Side::Ask, 299_000, 20_000, TimeInForce::Gtc, 0)); // 2 ETH at 2990
    setup.push(limit(3, ETH_USDC, Side::Ask, 301_000, 20_000, TimeInForce::Gtc, 0)); // 2 ETH at 3010
    let quantity = 50_000; // 5 ETH in lots of 0.0001
    let (route_usdc, route_eth, events) = outcome(&setup, routed(2, ETH_USDC, Side::Bid, quantity, 0), 2);
    let report = total_of_route(&events);
    assert!(report.book_lots.get() > 0 && report.pool_base_amount.get() > 0, "{report:?}");
    let fills: u64 = events
        .iter()
        .filter_map(|e| match e {
            Event::Fill(f) => Some(f.quote_amount.get() + f.taker_fee.get()),
            _ => None,
        })
        .sum();
    assert_eq!(fills, report.book_quote.get());
    let pool_leg = events.iter().find_map(|e| if let Event::SwapExecuted(s) = e { Some(*s) } else { None }).unwrap();
    assert_eq!(pool_leg.amount_in.get(), report.pool_quote.get());
    assert_eq!(route_eth, 1_000_000_000_000 + 500_000_000, "exactly 5 ETH bought");
    // Each venue alone costs more.
    let (pool_usdc, pool_eth, _) = outcome(&setup, swap(2, ETH_USDC, Side::Bid, SwapMode::ExactOut, 500_000_000, 0), 2);
    let (book_usdc, book_eth, _) =
        outcome(&setup, limit(2, ETH_USDC, Side::Bid, 400_000, quantity, TimeInForce::Ioc, 0), 2);
    assert_eq!(pool_eth, route_eth);
    assert!(book_eth < route_eth, "the book alone cannot fill 5 ETH");
    assert!(route_usdc > pool_usdc, "route {route_usdc} vs pool alone {pool_usdc}");
    let _ = book_usdc;

    // Limits and funds: rejected without effect.
    let mut h = Harness::new();
    for c in &setup {
        h.run(*c);
    }
    h.rejected(routed(2, ETH_USDC, Side::Bid, quantity, report.book_quote.get()), RejectReason::SlippageExceeded);
    h.rejected(routed(2, BTC_USDC, Side::Bid, quantity, 0), RejectReason::PoolNotFound);
    h.rejected(routed(2, ETH_USDC, Side::Bid, 0, 0), RejectReason::InvalidQuantity);
    h.rejected(routed(4, ETH_USDC, Side::Ask, quantity, 0), RejectReason::InsufficientBalance);
    h.rejected(routed(2, ETH_USDC, Side::Bid, 1_000_000_000, 0), RejectReason::InsufficientLiquidity);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// A routed order is never worse than the same quantity on either venue alone (when that venue
    /// can fill it): the user ends with at least as much quote (buying) or gets at least as much
    /// (selling), for the same base.
    #[test]
    fn routed_orders_never_lose_to_a_single_venue(
        asks in prop::collection::vec((295_000u64..=310_000, 1u64..=30_000), 0..6),
        bids in prop::collection::vec((290_000u64..=305_000, 1u64..=30_000), 0..6),
        pool_eth in prop_oneof![Just(0u64), 1_000_000_000u64..=50_000_000_000],
        pool_price in 2_900u64..=3_100,
        fee in 0u32..=100,
        buy in any::<bool>(),
        quantity in 1u64..=100_000,
    ) {
        let mut setup = Vec::new();
        for user in 1..=3 {
            setup.push(deposit(user, ETH, 1_000_000_000_000));
            setup.push(deposit(user, USDC, 100_000_000_000_000));
        }
        if pool_eth > 0 {
            // pool_eth in minor units (8 decimals); quote = eth · price in USDC minor units (6).
            setup.push(add_liquidity(1, ETH_USDC, pool_eth, pool_eth / 100 * pool_price));
        }
        for &(price, lots) in &asks {
            setup.push(limit(3, ETH_USDC, Side::Ask, price.max(bids.iter().map(|b| b.0).max().unwrap_or(0) + 1), lots, TimeInForce::Gtc, 0));
        }
        for &(price, lots) in &bids {
            setup.push(limit(3, ETH_USDC, Side::Bid, price, lots, TimeInForce::Gtc, 0));
        }
        let side = if buy { Side::Bid } else { Side::Ask };
        let base = quantity * 10_000;
        let (route_usdc, route_eth, events) = outcome_with_fee(&setup, routed(2, ETH_USDC, side, quantity, 0), fee);
        let routed_ok = !matches!(events[0], Event::OrderRejected(_));
        let pool_only = swap(2, ETH_USDC, side, if buy { SwapMode::ExactOut } else { SwapMode::ExactIn }, base, 0);
        let (pool_usdc, pool_eth_after, pool_events) = outcome_with_fee(&setup, pool_only, fee);
        let pool_ok = !matches!(pool_events[0], Event::OrderRejected(_));
        let book_only = market(2, ETH_USDC, side, quantity);
        let (book_usdc, book_eth, book_events) = outcome_with_fee(&setup, book_only, fee);
        let book_filled = book_events.iter().filter_map(|e| if let Event::Fill(f) = e { Some(f.quantity_lots.get()) } else { None }).sum::<u64>() == quantity;
        if pool_ok || book_filled {
            prop_assert!(routed_ok, "a venue can fill it alone, so the route must: {:?}", events[0]);
        }
        if routed_ok {
            let moved = if buy { route_eth - 1_000_000_000_000 } else { 1_000_000_000_000 - route_eth };
            prop_assert_eq!(moved, base);
            if pool_ok {
                prop_assert_eq!(pool_eth_after, route_eth);
                prop_assert!(route_usdc >= pool_usdc, "route {} < pool alone {}", route_usdc, pool_usdc);
            }
            if book_filled {
                prop_assert_eq!(book_eth, route_eth);
                prop_assert!(route_usdc >= book_usdc, "route {} < book alone {}", route_usdc, book_usdc);
            }
        }
    }
}

/// [`outcome`] for user 2 with the ETH_USDC pool's fee set to `fee_bps`.
fn outcome_with_fee(setup: &[Command], command: Command, fee_bps: u32) -> (u64, u64, Vec<Event>) {
    let mut config = config();
    config.pools[0].fee_bps = fee_bps;
    let mut h = Harness::new();
    h.engine = Engine::new(&config).unwrap();
    h.reference = ReferenceLedger::new(&config);
    for c in setup {
        h.run(*c);
    }
    let events = h.run(command);
    (h.balance(2, USDC), h.balance(2, ETH), events)
}
