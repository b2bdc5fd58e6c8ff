//! Property tests: random command streams run through the fast engine and through the same
//! engine over the naive reference book must produce identical events and state hashes; after
//! every command `validate()` holds (book not crossed, level totals, exact reservations, locked =
//! Σ reservations, conservation per asset) and the event-rebuilt reference ledger agrees with
//! the engine's balances. Rejected commands must leave the state hash unchanged, and replaying
//! the stream gives the same final hash. AMM pool commands (add / remove liquidity, swaps) are
//! mixed in: pools on both markets, their reserves checked against the ledger's pool account.
//! Every command's events pass `check_order_lifecycle` (quote-quantity market orders on both
//! sides included). Trigger orders (stop, take-profit, cross; market and limit) and a price band
//! on one market are in the mix: their firing, failures and cascades go through the same checks.
//! So are orders with attached stop-loss / take-profit (children created and grown by fills,
//! one-cancels-other); the naive engine applies the same rules (the trigger logic is shared, only
//! the book differs), and the snapshot round trip at the end covers attachments. After every
//! command, too: every pending trigger has at least its market's minimum quantity (attached
//! children from fills below it accumulate instead), every open attachment's stop-loss and
//! take-profit lie on their sides of the parent's price (replaces included), and a routed order
//! on the banded market fills only up to the band's edge in its direction (around the reference
//! price before it).
//!
//! A third engine executes the same stream without building events
//! ([`Engine::execute_without_events`], how recovery and the shadow engines replay): its state
//! hash equals the fast engine's after every command and its final snapshot is byte for byte the
//! same.
//!
//! Failing seeds are kept in `tests/properties.proptest-regressions`.

use codec::*;
use engine::testkit::{NaiveBook, ReferenceLedger, check_order_lifecycle};
use engine::{CommandContext, Engine, EngineConfig, EngineLimits, OrderBook, PoolConfig};
use proptest::prelude::*;

const USERS: u64 = 4;
const MARKETS: u32 = 2;

fn config() -> EngineConfig {
    let mut config = EngineConfig::sample();
    config.markets.truncate(MARKETS as usize);
    for market in &mut config.markets {
        market.min_quantity_lots = 1;
        market.max_quantity_lots = 1_000;
        market.max_price_ticks = 200;
        market.min_notional = 0;
        // Large enough fees that rounding matters.
        market.maker_fee_ppm = 1_000;
        market.taker_fee_ppm = 2_500;
    }
    // Give ETH_USDC a tick-lot worth more than one quote unit to exercise the scaling, and a
    // minimum quantity, so that fills of attached parents can be too small for a child order.
    config.markets[1].tick_size = 30_000;
    config.markets[1].min_quantity_lots = 4;
    config.limits = EngineLimits { orders_per_market_max: 24, open_orders_per_user_max: 5, accounts_expected: 8 };
    // A ±5% price band on BTC_USDC (prices 95..=105 straddle it), none on ETH_USDC.
    config.markets[0].price_band = engine::PriceBand { max_multiplier_ppm: 1_050_000, min_multiplier_ppm: 950_000 };
    config.pools = vec![
        PoolConfig { market_id: MarketId::new(1), fee_bps: 30 },
        PoolConfig { market_id: MarketId::new(2), fee_bps: 0 },
    ];
    config
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Bid), Just(Side::Ask)]
}

fn stp() -> impl Strategy<Value = SelfTradePrevention> {
    prop::sample::select(SelfTradePrevention::ALL.to_vec())
}

fn tif() -> impl Strategy<Value = TimeInForce> {
    prop_oneof![6 => Just(TimeInForce::Gtc), 2 => Just(TimeInForce::Ioc), 2 => Just(TimeInForce::Fok)]
}

/// An exchange order id to act on: mostly 0 (act by client id, which hits often), sometimes a
/// small id (real early in a stream, a miss or someone else's order later).
fn order_reference() -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(0u64), 1 => 1u64..=40]
}

/// Commands drawn over a small space of users, prices, ids and quantities so they interact a lot:
/// crossing orders, self trades, duplicate client ids, cancels of real and missing orders.
fn command() -> impl Strategy<Value = Command> {
    prop_oneof![20 => book_command(), 6 => pool_command()]
}

/// Order-book and ledger commands.
fn book_command() -> impl Strategy<Value = Command> {
    let user = 1..=USERS;
    let market = 1..=MARKETS;
    prop_oneof![
        // Limit orders dominate.
        8 => (user.clone(), market.clone(), side(), 95u64..=105, 1u64..=40, tif(), stp(), any::<bool>(), 0u64..=4)
            .prop_map(|(user, market, side, price, quantity, tif, stp, post_only, client)| {
                Command::NewOrder(NewOrder {
                    user_id: UserId::new(user),
                    client_order_id: ClientOrderId::new(client),
                    price_ticks: Ticks::new(price),
                    quantity_lots: Lots::new(quantity),
                    quote_quantity: Amount::ZERO,
                    market_id: MarketId::new(market),
                    side: side.into(),
                    order_type: OrderType::Limit.into(),
                    time_in_force: tif.into(),
                    self_trade_prevention: stp.into(),
                    post_only: (post_only && tif == TimeInForce::Gtc && client % 2 == 0).into(),
                    ..NewOrder::default()
                })
            }),
        2 => (user.clone(), market.clone(), side(), 1u64..=60, 0u64..=30_000, tif(), stp()).prop_map(
            |(user, market, side, quantity, quote, tif, stp)| {
                let by_quote = quote % 3 == 0;
                Command::NewOrder(NewOrder {
                    user_id: UserId::new(user),
                    client_order_id: ClientOrderId::ZERO,
                    price_ticks: Ticks::ZERO,
                    quantity_lots: Lots::new(if by_quote { 0 } else { quantity }),
                    quote_quantity: Amount::new(if by_quote { quote } else { 0 }),
                    market_id: MarketId::new(market),
                    side: side.into(),
                    order_type: OrderType::Market.into(),
                    time_in_force: tif.into(),
                    self_trade_prevention: stp.into(),
                    post_only: false.into(),
                    ..NewOrder::default()
                })
            }
        ),
        // Trigger orders: stop / take-profit / cross, market or limit, some already reached or
        // with a zero price (rejected), sharing client ids with the limit orders.
        3 => (user.clone(), market.clone(), side(), prop::sample::select(vec![TriggerKind::Stop, TriggerKind::TakeProfit, TriggerKind::Cross]),
              94u64..=106, prop_oneof![Just(0u64), 95u64..=105], 1u64..=30, 0u64..=4)
            .prop_map(|(user, market, side, kind, trigger, price, quantity, client)| {
                engine::testkit::commands::trigger(user, market, side, kind, trigger, price, quantity, client)
            }),
        // Limit (GTC or not) and market orders with an attached stop-loss and/or take-profit,
        // some on the wrong side of the price (rejected): their fills create and grow child
        // pairs, which fire with one-cancels-other.
        5 => (user.clone(), market.clone(), side(), prop_oneof![Just(0u64), 97u64..=103], 1u64..=30, tif(),
              prop_oneof![1 => Just(0u64), 4 => 94u64..=106], prop_oneof![1 => Just(0u64), 4 => 94u64..=106], prop_oneof![Just(0u64), 93u64..=107], 0u64..=4)
            .prop_map(|(user, market, side, price, quantity, tif, stop_loss, take_profit, limit, client)| {
                // Client ids shared with the other orders, so that replaces by client id (which
                // must keep the attached triggers on their sides) reach parents too.
                let order = if price == 0 {
                    engine::testkit::commands::market(user, market, side, quantity)
                } else {
                    engine::testkit::commands::limit(user, market, side, price, quantity, tif, client)
                };
                let (stop_loss_limit, take_profit_limit) = if limit % 2 == 0 { (limit, 0) } else { (0, limit) };
                engine::testkit::commands::with_attached(order, stop_loss, stop_loss_limit, take_profit, take_profit_limit)
            }),
        3 => (user.clone(), market.clone(), order_reference(), 0u64..=4).prop_map(|(user, market, order, client)| {
            Command::CancelOrder(CancelOrder {
                user_id: UserId::new(user),
                order_id: OrderId::new(order),
                client_order_id: ClientOrderId::new(client),
                market_id: MarketId::new(market),
                reserved: Reserved::ZERO,
            })
        }),
        3 => (user.clone(), market.clone(), order_reference(), 0u64..=4, prop_oneof![Just(0u64), 94u64..=106], 0u64..=45)
            .prop_map(|(user, market, order, client, price, quantity)| {
                Command::CancelReplace(CancelReplace {
                    user_id: UserId::new(user),
                    order_id: OrderId::new(order),
                    client_order_id: ClientOrderId::new(client),
                    new_price_ticks: Ticks::new(price),
                    new_quantity_lots: Lots::new(quantity),
                    market_id: MarketId::new(market),
                    reserved: Reserved::ZERO,
                })
            }),
        // Price-only replaces by client id: they reach parents with attachments often, whose
        // triggers must stay on their sides of the new price.
        3 => (user.clone(), market.clone(), 1u64..=4, 94u64..=106).prop_map(|(user, market, client, price)| {
            Command::CancelReplace(CancelReplace {
                user_id: UserId::new(user),
                order_id: OrderId::ZERO,
                client_order_id: ClientOrderId::new(client),
                new_price_ticks: Ticks::new(price),
                new_quantity_lots: Lots::ZERO,
                market_id: MarketId::new(market),
                reserved: Reserved::ZERO,
            })
        }),
        1 => (user.clone(), 0..=MARKETS, prop::sample::select(SideFilter::ALL.to_vec())).prop_map(
            |(user, market, side)| {
                Command::MassCancel(MassCancel {
                    user_id: UserId::new(user),
                    market_id: MarketId::new(market),
                    side: side.into(),
                    kinds: OrderKindFilter::All.into(),
                    reserved: Reserved::ZERO,
                })
            }
        ),
        2 => (user.clone(), 0u32..=4, 0u64..=3_000_000).prop_map(|(user, asset, amount)| {
            Command::Deposit(Deposit {
                user_id: UserId::new(user),
                amount: Amount::new(amount),
                asset_id: AssetId::new(asset),
                reserved: Reserved::ZERO,
            })
        }),
        1 => (user, 0u32..=3, 0u64..=1_000_000).prop_map(|(user, asset, amount)| {
            Command::Withdraw(Withdraw {
                user_id: UserId::new(user),
                amount: Amount::new(amount),
                asset_id: AssetId::new(asset),
                reserved: Reserved::ZERO,
            })
        }),
        // Rare halts and resumes (an unknown market or action is rejected).
        1 => (0..=MARKETS + 1, prop_oneof![1 => Just(1u8), 8 => Just(2u8), 1 => Just(9u8)]).prop_map(
            |(market, action)| {
                let command = Command::MarketControl(MarketControl {
                    market_id: MarketId::new(market),
                    action: MarketAction::Halt.into(),
                    reserved: Reserved::ZERO,
                });
                // Patch the action byte (an unknown code included) on the wire form.
                let mut bytes = command.to_vec();
                bytes[MESSAGE_HEADER_BYTES + core::mem::offset_of!(MarketControl, action)] = action;
                Command::decode(&bytes).unwrap().0
            }
        ),
    ]
}

/// AMM pool commands.
fn pool_command() -> impl Strategy<Value = Command> {
    let user = 1..=USERS;
    prop_oneof![
        // AMM pools: market 0 is unknown; small amounts round to nothing, large ones exceed funds.
        2 => (user.clone(), 0..=MARKETS, 0u64..=3_000_000, 0u64..=3_000_000, prop_oneof![3 => Just(0u64), 1 => 0u64..=2_000_000])
            .prop_map(|(user, market, base, quote, min_shares)| {
                Command::AddLiquidity(AddLiquidity {
                    user_id: UserId::new(user),
                    max_base_amount: Amount::new(base),
                    max_quote_amount: Amount::new(quote),
                    min_shares: Shares::new(min_shares),
                    market_id: MarketId::new(market),
                    reserved: Reserved::ZERO,
                })
            }),
        1 => (user.clone(), 1..=MARKETS, prop_oneof![1u64..=3_000, 0u64..=3_000_000], prop_oneof![3 => Just(0u64), 1 => 0u64..=2_000_000])
            .prop_map(|(user, market, shares, min)| {
                Command::RemoveLiquidity(RemoveLiquidity {
                    user_id: UserId::new(user),
                    shares: Shares::new(shares),
                    min_base_amount: Amount::new(min),
                    min_quote_amount: Amount::new(min / 2),
                    market_id: MarketId::new(market),
                    reserved: Reserved::ZERO,
                })
            }),
        1 => (user.clone(), 1..=MARKETS, side(), 0u64..=60, prop_oneof![3 => Just(0u64), 1 => 0u64..=400_000]).prop_map(
            |(user, market, side, lots, limit)| {
                Command::RoutedOrder(RoutedOrder {
                    user_id: UserId::new(user),
                    quantity_lots: Lots::new(lots),
                    quote_limit: Amount::new(limit),
                    market_id: MarketId::new(market),
                    side: side.into(),
                    reserved: Reserved::ZERO,
                })
            }
        ),
        3 => (user, 1..=MARKETS, side(), prop::sample::select(SwapMode::ALL.to_vec()), 0u64..=400_000, prop_oneof![3 => Just(0u64), 1 => 0u64..=400_000])
            .prop_map(|(user, market, side, mode, amount, limit)| {
                Command::Swap(Swap {
                    user_id: UserId::new(user),
                    amount: Amount::new(amount),
                    limit: Amount::new(limit),
                    market_id: MarketId::new(market),
                    side: side.into(),
                    mode: mode.into(),
                    reserved: Reserved::ZERO,
                })
            }),
    ]
}

/// Funding so that most orders pass the balance checks but some do not.
fn funding() -> Vec<Command> {
    let mut commands = Vec::new();
    for user in 1..=USERS {
        for asset in 0..4 {
            commands.push(engine::testkit::commands::deposit(user, asset, 2_000 * user * 1_000));
        }
    }
    commands
}

fn pool_k(pool: &engine::Pool) -> u128 {
    u128::from(pool.base_reserve) * u128::from(pool.quote_reserve)
}

/// Event counts by template id, to show a stream really exercised the engine.
type Coverage = std::collections::BTreeMap<&'static str, usize>;

fn run(commands: &[Command]) -> Result<Coverage, TestCaseError> {
    let mut coverage = Coverage::new();
    let config = config();
    let mut fast = Engine::new(&config).unwrap();
    let mut naive = Engine::with_books(&config, NaiveBook::with_capacity).unwrap();
    let mut reference = ReferenceLedger::new(&config);
    // The same engine run without events (as recovery and the shadow engines replay): it must
    // reach the same state after every command.
    let mut silent = Engine::new(&config).unwrap();
    let (mut fast_events, mut naive_events) = (Vec::new(), Vec::new());
    for (i, command) in funding().iter().chain(commands).enumerate() {
        let ctx = CommandContext::new(i as u64 + 1, 1_000 + i as u64);
        let hash_before = fast.state_hash();
        let fast_before = match command {
            Command::Swap(swap) => fast.pool(swap.market_id).cloned().unwrap_or_else(|| fast.pools()[0].clone()),
            _ => fast.pools()[0].clone(),
        };
        let band_before = band_limits(&fast, &config, command);
        fast_events.clear();
        naive_events.clear();
        fast.execute(ctx, command, &mut fast_events);
        naive.execute(ctx, command, &mut naive_events);
        silent.execute_without_events(ctx, command);
        prop_assert_eq!(&fast_events, &naive_events, "command {} {:?}", i, command);
        prop_assert!(
            !fast_events.is_empty() || matches!(command, Command::MassCancel(_)),
            "no events for {:?}",
            command
        );
        let rejected = fast_events.iter().any(|e| matches!(e, Event::OrderRejected(_)));
        if let Command::Swap(swap) = command
            && !rejected
        {
            // k = base · quote never decreases after a swap.
            let (before, after) = (pool_k(&fast_before), pool_k(&fast.pool(swap.market_id).unwrap().clone()));
            prop_assert!(after >= before, "k decreased: {} -> {} by {:?}", before, after, command);
        }
        if rejected {
            prop_assert_eq!(fast_events.len(), 1, "a reject comes alone");
            prop_assert_eq!(hash_before, fast.state_hash(), "rejected command changed state: {:?}", command);
        }
        check_order_lifecycle(&fast_events)
            .map_err(|e| TestCaseError::fail(format!("order lifecycle after {command:?}: {e}: {fast_events:?}")))?;
        for event in &fast_events {
            let name = match event {
                Event::OrderRejected(r) => r.reason.get().map_or("Rejected(?)", |_| "Rejected"),
                Event::OrderCanceled(c) if c.reason.get() == Ok(CancelReason::SelfTradePrevention) => "CanceledBySTP",
                Event::OrderCanceled(c) if c.reason.get() == Ok(CancelReason::OneCancelsOther) => "CanceledByOCO",
                Event::OrderReplaced(r) if bool::from(r.priority_kept.get().unwrap()) => "ReplacedKeepingPriority",
                Event::OrderReplaced(r)
                    if fast.triggers(r.market_id).is_some_and(|t| t.attachment(r.order_id).is_some()) =>
                {
                    "ReplacedAttachedParent"
                }
                other => other.name(),
            };
            *coverage.entry(name).or_default() += 1;
            prop_assert_eq!(event.sequence().get(), ctx.sequence.get());
            reference.apply(event);
        }
        if let (Some(band), Command::RoutedOrder(routed)) = (band_before, command) {
            // Like a market order's: a buy pays at most the upper edge, a sell gets at least the
            // lower one.
            for event in &fast_events {
                if let Event::Fill(fill) = event {
                    let price = fill.price_ticks.get();
                    let inside = match routed.side.get() {
                        Ok(Side::Bid) => price <= band.upper,
                        _ => price >= band.lower,
                    };
                    prop_assert!(inside, "routed fill beyond {:?}: {:?}", band, fill);
                }
            }
        }
        check_trigger_rules(&fast, &config).map_err(|e| TestCaseError::fail(format!("after {command:?}: {e}")))?;
        fast.validate().map_err(|e| TestCaseError::fail(format!("fast engine after {command:?}: {e}")))?;
        naive.validate().map_err(|e| TestCaseError::fail(format!("naive engine after {command:?}: {e}")))?;
        reference.check(&fast).map_err(|e| TestCaseError::fail(format!("reference ledger after {command:?}: {e}")))?;
        prop_assert_eq!(fast.state_hash(), naive.state_hash());
        prop_assert_eq!(silent.state_hash(), fast.state_hash(), "without events, after command {} {:?}", i, command);
    }
    // Determinism: a replay of the same stream reaches the same state.
    let mut replay = Engine::new(&config).unwrap();
    let mut events = Vec::new();
    for (i, command) in funding().iter().chain(commands).enumerate() {
        replay.execute(CommandContext::new(i as u64 + 1, 1_000 + i as u64), command, &mut events);
    }
    prop_assert_eq!(replay.state_hash(), fast.state_hash());
    // And a snapshot of the final state (triggers, siblings, attachments included) restores it.
    let mut bytes = Vec::new();
    let recorded = fast.write_snapshot(1, &mut bytes);
    let mut silent_bytes = Vec::new();
    silent.write_snapshot(1, &mut silent_bytes);
    prop_assert!(silent_bytes == bytes, "the engine run without events serialises to other bytes");
    let (restored, _) = Engine::restore_snapshot(&config, OrderBook::with_capacity, &bytes)
        .map_err(|e| TestCaseError::fail(format!("snapshot restore: {e}")))?;
    prop_assert_eq!(restored.state_hash(), recorded);
    Ok(coverage)
}

/// The band of a routed order's market before it executes (`None`: not routed, no band, or no
/// reference price): the last trade price, else the book's mid.
fn band_limits(engine: &Engine, config: &EngineConfig, command: &Command) -> Option<engine::BandLimits> {
    use engine::Book;
    let Command::RoutedOrder(routed) = command else { return None };
    let market = config.markets.iter().find(|m| m.id == routed.market_id)?;
    let book = engine.book(routed.market_id)?;
    let reference = match engine.last_trade_price(routed.market_id)? {
        0 => match (book.best_price(Side::Bid), book.best_price(Side::Ask)) {
            (Some(bid), Some(ask)) => (bid.get() + ask.get()) / 2,
            _ => 0,
        },
        last => last,
    };
    market.price_band.limits(reference)
}

/// Every pending trigger would be a valid order of its market (at least its minimum quantity; the
/// minimum notional is 0 here, its rule is in the rule tests), and every open attachment's triggers lie on their
/// sides of its parent's price.
fn check_trigger_rules(engine: &Engine, config: &EngineConfig) -> Result<(), String> {
    use engine::Book;
    for market in &config.markets {
        let triggers = engine.triggers(market.id).unwrap();
        for trigger in triggers.iter() {
            if trigger.quantity_lots != 0 && trigger.quantity_lots < market.min_quantity_lots {
                return Err(format!("{}: pending trigger is no valid order: {trigger:?}", market.symbol));
            }
        }
        let book = engine.book(market.id).unwrap();
        for attachment in triggers.attachments() {
            let parent = book.get(attachment.parent_order_id).ok_or("attachment without parent")?;
            if !attachment.fits_price(parent.price.get()) {
                return Err(format!("{}: attachment {attachment:?} off its sides of {parent:?}", market.symbol));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn fast_and_naive_engines_agree_and_invariants_hold(commands in prop::collection::vec(command(), 1..160)) {
        run(&commands)?;
    }
}

/// The fast book's structure stays consistent through long streams (no engine on top).
#[test]
fn long_stream_keeps_invariants() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let mut commands = prop::collection::vec(book_command(), 3_000).new_tree(&mut runner).unwrap().current();
    commands.extend(prop::collection::vec(command(), 1_500).new_tree(&mut runner).unwrap().current());
    let coverage = run(&commands).unwrap();
    println!("{coverage:#?}");
    for kind in [
        "OrderAccepted",
        "Rejected",
        "Fill",
        "OrderCanceled",
        "CanceledBySTP",
        "CanceledByOCO",
        "OrderExpired",
        "OrderReplaced",
        "ReplacedKeepingPriority",
        "BookLevelUpdate",
        "BalanceUpdate",
        "LiquidityAdded",
        "LiquidityRemoved",
        "SwapExecuted",
        "OrderRouted",
        "TriggerPending",
        "TriggerPlaced",
    ] {
        assert!(coverage.get(kind).copied().unwrap_or(0) >= 5, "the stream should produce {kind}: {coverage:?}");
    }
}

/// `OrderBook` is the default book type.
#[test]
fn default_engine_uses_fast_book() {
    let engine: Engine<OrderBook> = Engine::new(&config()).unwrap();
    assert_eq!(engine.market_count(), MARKETS as usize);
}
