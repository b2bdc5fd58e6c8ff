//! Rule tests of price bands and trigger (stop / take-profit) orders, with exact events and
//! balances.
//!
//! Every command goes through [`Harness::exec`], which checks after it that `validate()` holds,
//! that the event-rebuilt reference ledger agrees with the engine and that the events pass
//! `check_order_lifecycle`; an expected rejection must be exactly one `OrderRejected` with the
//! reason and leave the state hash unchanged.
//!
//! Market BTC_USDC (1): one tick × one lot = 1 USDC minor unit, one lot = 1_000 BTC minor
//! units, maker fee 200 ppm, taker fee 500 ppm (rounded down). Its band (where configured) is
//! 0.9× .. 1.1× the reference price.

use codec::*;
use engine::testkit::{ReferenceLedger, check_order_lifecycle, commands as c};
use engine::{CommandContext, Engine, EngineConfig, PriceBand};

const BTC: u32 = 0;
const USDC: u32 = 1;
const M1: u32 = 1;
const LOT: u64 = 1_000;

struct Harness {
    engine: Engine,
    sequence: u64,
    reference: ReferenceLedger,
}

impl Harness {
    /// `EngineConfig::sample()`, with a ±10% band on BTC_USDC when `band`.
    fn new(band: bool) -> Self {
        let mut config = EngineConfig::sample();
        if band {
            config.markets[0].price_band = PriceBand { max_multiplier_ppm: 1_100_000, min_multiplier_ppm: 900_000 };
        }
        Self::with_config(config)
    }

    /// An engine on `config`, users 1..=4 funded with BTC and USDC.
    fn with_config(config: EngineConfig) -> Self {
        let mut harness =
            Self { engine: Engine::new(&config).unwrap(), sequence: 0, reference: ReferenceLedger::new(&config) };
        for user in 1..=4 {
            harness.exec(c::deposit(user, BTC, 1_000 * LOT));
            harness.exec(c::deposit(user, USDC, 10_000_000));
        }
        harness
    }

    fn exec(&mut self, command: Command) -> Vec<Event> {
        self.sequence += 1;
        let mut out = Vec::new();
        self.engine.execute(CommandContext::new(self.sequence, 1_000 * self.sequence), &command, &mut out);
        self.engine.validate().unwrap();
        for event in &out {
            assert_eq!(event.sequence().get(), self.sequence);
            self.reference.apply(event);
        }
        self.reference.check(&self.engine).unwrap();
        check_order_lifecycle(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        out
    }

    fn ok(&mut self, command: Command) -> Vec<Event> {
        let events = self.exec(command);
        assert!(!events.iter().any(|e| matches!(e, Event::OrderRejected(_))), "{command:?} rejected: {events:?}");
        events
    }

    fn reject(&mut self, command: Command, reason: RejectReason) {
        let hash = self.engine.state_hash();
        let events = self.exec(command);
        assert_eq!(events.len(), 1, "{events:?}");
        let Event::OrderRejected(rejected) = events[0] else { panic!("{events:?}") };
        assert_eq!(rejected.reason.get(), Ok(reason));
        assert_eq!(self.engine.state_hash(), hash);
    }

    /// (available, locked).
    fn balance(&self, user: u64, asset: u32) -> (u64, u64) {
        let b = self.engine.balance(UserId::new(user), AssetId::new(asset));
        (b.available, b.locked)
    }

    /// One trade of `lots` at `price` between users 3 (seller, maker) and 4 (buyer, taker).
    fn trade_at(&mut self, price: u64, lots: u64) -> Vec<Event> {
        self.ok(c::gtc(3, M1, Side::Ask, price, lots));
        self.ok(c::limit(4, M1, Side::Bid, price, lots, TimeInForce::Ioc, 0))
    }
}

fn names(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::name).collect()
}

fn cancel(user: u64, order_id: u64, client_order_id: u64) -> Command {
    Command::CancelOrder(CancelOrder {
        user_id: UserId::new(user),
        order_id: OrderId::new(order_id),
        client_order_id: ClientOrderId::new(client_order_id),
        market_id: MarketId::new(M1),
        reserved: Reserved::ZERO,
    })
}

fn stop(user: u64, side: Side, trigger: u64, price: u64, lots: u64) -> Command {
    c::trigger(user, M1, side, TriggerKind::Stop, trigger, price, lots, 0)
}

fn take_profit(user: u64, side: Side, trigger: u64, price: u64, lots: u64) -> Command {
    c::trigger(user, M1, side, TriggerKind::TakeProfit, trigger, price, lots, 0)
}

/// The order ids of the `TriggerPlaced` events, in order.
fn placed(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::TriggerPlaced(p) => Some(p.order_id.get()),
            _ => None,
        })
        .collect()
}

// ----------------------------------------------------------------------------------------------
// Price bands
// ----------------------------------------------------------------------------------------------

/// With a last trade at 1 000, limit prices must lie in [900, 1 100]; outside is rejected with
/// `PriceOutsideBand` and changes nothing.
#[test]
fn a_limit_order_outside_the_band_is_rejected() {
    let mut h = Harness::new(true);
    h.trade_at(1_000, 1);
    h.reject(c::gtc(1, M1, Side::Bid, 1_101, 1), RejectReason::PriceOutsideBand);
    h.reject(c::gtc(1, M1, Side::Ask, 899, 1), RejectReason::PriceOutsideBand);
    h.ok(c::gtc(1, M1, Side::Bid, 900, 1));
    h.ok(c::gtc(2, M1, Side::Ask, 1_100, 1));
    // Without a band the same orders are fine.
    let mut h = Harness::new(false);
    h.trade_at(1_000, 1);
    h.ok(c::gtc(1, M1, Side::Bid, 120, 1));
    h.ok(c::gtc(2, M1, Side::Ask, 3_000, 1));
}

/// Before the first trade the reference is the mid of the best bid and ask; with a one-sided book
/// there is none and any price is accepted.
#[test]
fn before_the_first_trade_the_reference_is_the_mid() {
    let mut h = Harness::new(true);
    h.ok(c::gtc(1, M1, Side::Bid, 120, 1)); // no reference yet: accepted
    h.ok(c::gtc(2, M1, Side::Ask, 300, 1)); // mid (120 + 300) / 2 = 210: band [189, 231]
    h.reject(c::gtc(1, M1, Side::Bid, 232, 1), RejectReason::PriceOutsideBand);
    h.reject(c::gtc(1, M1, Side::Bid, 188, 1), RejectReason::PriceOutsideBand);
    h.ok(c::gtc(1, M1, Side::Bid, 231, 1));
}

/// A market buy trades up to the band's edge and its remainder expires with `PriceBand`; the
/// buyer pays only for what filled.
#[test]
fn a_market_order_stops_at_the_band_edge() {
    let mut h = Harness::new(true);
    // Placed before any reference exists (one-sided book), so outside today's band.
    h.ok(c::gtc(2, M1, Side::Ask, 1_200, 5));
    h.ok(c::gtc(3, M1, Side::Bid, 940, 2));
    h.trade_at(1_000, 1);
    h.ok(c::gtc(2, M1, Side::Ask, 1_050, 5));
    let before = h.balance(1, USDC);
    let events = h.ok(c::market(1, M1, Side::Bid, 8));
    assert_eq!(
        names(&events),
        [
            "OrderAccepted",
            "Fill",
            "BalanceUpdate",
            "BalanceUpdate",
            "BalanceUpdate",
            "BalanceUpdate",
            "BookLevelUpdate",
            "OrderExpired"
        ]
    );
    let Event::OrderExpired(expired) = events[7] else { unreachable!() };
    assert_eq!(expired.reason.get(), Ok(ExpireReason::PriceBand));
    assert_eq!((expired.filled_lots.get(), expired.expired_lots.get()), (5, 3));
    let notional = 5 * 1_050;
    assert_eq!(h.balance(1, USDC), (before.0 - notional - notional * 500 / 1_000_000, 0));
    // A market sell is likewise bounded below (the band is still around the last trade, 1 050).
    h.ok(c::gtc(3, M1, Side::Bid, 950, 2)); // the bid at 940 is below 0.9 × 1 050 = 945
    let events = h.ok(c::market(2, M1, Side::Ask, 4));
    let Some(Event::OrderExpired(expired)) = events.last() else { panic!("{events:?}") };
    assert_eq!((expired.filled_lots.get(), expired.reason.get()), (2, Ok(ExpireReason::PriceBand)));
}

/// A cancel-replace to a price outside the band is rejected; the order stays as it was.
#[test]
fn a_replace_outside_the_band_is_rejected() {
    let mut h = Harness::new(true);
    h.trade_at(1_000, 1);
    let events = h.ok(c::gtc(1, M1, Side::Bid, 950, 2));
    let Event::OrderAccepted(a) = events[0] else { unreachable!() };
    let replace = |price: u64| {
        Command::CancelReplace(CancelReplace {
            user_id: UserId::new(1),
            order_id: a.order_id,
            client_order_id: ClientOrderId::ZERO,
            new_price_ticks: Ticks::new(price),
            new_quantity_lots: Lots::ZERO,
            market_id: MarketId::new(M1),
            reserved: Reserved::ZERO,
        })
    };
    h.reject(replace(1_101), RejectReason::PriceOutsideBand);
    h.ok(replace(960));
}

// ----------------------------------------------------------------------------------------------
// Trigger orders
// ----------------------------------------------------------------------------------------------

/// A stop-market sell waits, holding nothing, until a trade at or below its trigger; then it
/// sells at market with the funds checks of any order.
#[test]
fn a_stop_market_sell_fires_when_the_price_falls_to_its_trigger() {
    let mut h = Harness::new(false);
    h.trade_at(1_000, 1);
    let btc_before = h.balance(1, BTC);
    let events = h.ok(stop(1, Side::Ask, 990, 0, 3));
    assert_eq!(names(&events), ["TriggerPending"]);
    let Event::TriggerPending(pending) = events[0] else { unreachable!() };
    let stop_id = pending.order_id.get();
    assert_eq!(pending.trigger_price_ticks.get(), 990);
    assert_eq!(h.balance(1, BTC), btc_before, "a pending trigger reserves nothing");

    h.ok(c::gtc(2, M1, Side::Bid, 985, 10)); // liquidity for the stop
    let events = h.trade_at(995, 1); // above the trigger: nothing fires
    assert!(placed(&events).is_empty());
    let events = h.trade_at(990, 1); // reaches it
    assert_eq!(placed(&events), [stop_id]);
    let at = events.iter().position(|e| matches!(e, Event::TriggerPlaced(_))).unwrap();
    let Event::TriggerPlaced(fired) = events[at] else { unreachable!() };
    assert_eq!((fired.last_price_ticks.get(), fired.trigger_price_ticks.get()), (990, 990));
    let Event::OrderAccepted(accepted) = events[at + 1] else { panic!("{events:?}") };
    assert_eq!(accepted.order_id.get(), stop_id);
    assert_eq!(accepted.order_type.get(), Ok(OrderType::Market));
    let Event::Fill(fill) = events[at + 2] else { panic!("{events:?}") };
    assert_eq!((fill.price_ticks.get(), fill.quantity_lots.get(), fill.taker_order_id.get()), (985, 3, stop_id));
    assert!(bool::from(fill.taker_order_complete.get().unwrap()));
    let notional = 3 * 985;
    assert_eq!(h.balance(1, BTC), (btc_before.0 - 3 * LOT, 0));
    assert_eq!(h.balance(1, USDC).0, 10_000_000 + notional - notional * 500 / 1_000_000);
}

/// A stop-limit buy fires when the price rises to its trigger and rests at its limit, locking
/// funds only from then on; a take-profit sell fires on the same rise.
#[test]
fn a_stop_limit_buy_and_a_take_profit_sell_fire_on_a_rise() {
    let mut h = Harness::new(false);
    h.trade_at(1_000, 1);
    let stop_id = match h.ok(stop(1, Side::Bid, 1_010, 1_005, 2))[0] {
        Event::TriggerPending(p) => p.order_id.get(),
        ref other => panic!("{other:?}"),
    };
    let tp_id = match h.ok(take_profit(2, Side::Ask, 1_010, 1_020, 2))[0] {
        Event::TriggerPending(p) => p.order_id.get(),
        ref other => panic!("{other:?}"),
    };
    assert_eq!(h.balance(1, USDC), (10_000_000, 0));
    let events = h.trade_at(1_010, 1);
    assert_eq!(placed(&events), [stop_id, tp_id], "same trigger price: time order");
    // Both rest (nothing to match at their limits): the buy locks 2 × 1 005 plus the taker fee.
    let reservation = 2 * 1_005 + 2 * 1_005 * 500 / 1_000_000;
    assert_eq!(h.balance(1, USDC), (10_000_000 - reservation, reservation));
    assert_eq!(h.balance(2, BTC), (1_000 * LOT - 2 * LOT, 2 * LOT));
    let book = h.engine.book(MarketId::new(M1)).unwrap();
    assert!(engine::Book::get(book, OrderId::new(stop_id)).is_some());
    assert!(engine::Book::get(book, OrderId::new(tp_id)).is_some());
}

/// Several triggers reached by one trade fire by price (the order a moving price meets them),
/// then time; rising ones before falling ones.
#[test]
fn triggers_reached_together_fire_by_price_then_time() {
    let mut h = Harness::new(false);
    h.trade_at(1_000, 1);
    let id = |events: Vec<Event>| match events[0] {
        Event::TriggerPending(p) => p.order_id.get(),
        ref other => panic!("{other:?}"),
    };
    let a = id(h.ok(stop(1, Side::Bid, 1_030, 900, 1))); // limits far below: they rest
    let b = id(h.ok(stop(2, Side::Bid, 1_010, 900, 1)));
    let c2 = id(h.ok(stop(1, Side::Bid, 1_020, 900, 1)));
    let d = id(h.ok(stop(2, Side::Bid, 1_010, 900, 1)));
    let later = id(h.ok(stop(2, Side::Bid, 1_040, 900, 1))); // not reached
    h.ok(c::gtc(3, M1, Side::Ask, 1_035, 1));
    let events = h.ok(c::market(4, M1, Side::Bid, 1));
    assert_eq!(placed(&events), [b, d, c2, a]);
    assert!(!placed(&events).contains(&later));
}

/// A fired order that cannot be placed ends `TriggerFailed` with the reason: here the owner
/// withdrew the funds it needed; the other ends with the band.
#[test]
fn a_trigger_that_cannot_be_placed_fails_with_the_reason() {
    let mut h = Harness::new(true);
    h.trade_at(1_000, 1);
    h.ok(c::gtc(2, M1, Side::Bid, 980, 5));
    let poor = match h.ok(stop(1, Side::Ask, 990, 0, 3))[0] {
        Event::TriggerPending(p) => p.order_id.get(),
        ref other => panic!("{other:?}"),
    };
    h.ok(c::withdraw(1, BTC, 1_000 * LOT));
    // A stop-limit whose limit is outside the band when it fires (band then [891, 1 089]).
    let banded = match h.ok(stop(2, Side::Bid, 1_010, 1_500, 1))[0] {
        Event::TriggerPending(p) => p.order_id.get(),
        ref other => panic!("{other:?}"),
    };
    let events = h.trade_at(990, 1);
    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::TriggerFailed(f) => Some((f.order_id.get(), f.reason.get().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [(poor, RejectReason::InsufficientBalance)]);
    let events = h.trade_at(1_010, 1);
    let Some(Event::TriggerFailed(f)) = events.last() else { panic!("{events:?}") };
    assert_eq!((f.order_id.get(), f.reason.get()), (banded, Ok(RejectReason::PriceOutsideBand)));
    // Failed triggers are gone: cancelling them finds nothing.
    h.reject(cancel(1, poor, 0), RejectReason::UnknownOrder);
}

/// A trigger already reached by the last trade price is refused (it would fire at once), as is
/// a trigger price of zero or trigger fields without a kind.
#[test]
fn a_trigger_reached_already_is_refused() {
    let mut h = Harness::new(false);
    h.trade_at(1_000, 1);
    h.reject(stop(1, Side::Ask, 1_000, 0, 1), RejectReason::InvalidTriggerPrice);
    h.reject(stop(1, Side::Bid, 999, 0, 1), RejectReason::InvalidTriggerPrice);
    h.reject(stop(1, Side::Bid, 0, 0, 1), RejectReason::InvalidTriggerPrice);
    let mut no_kind = stop(1, Side::Bid, 1_100, 0, 1);
    if let Command::NewOrder(order) = &mut no_kind {
        order.trigger_kind = TriggerKind::None.into();
    }
    h.reject(no_kind, RejectReason::InvalidTriggerPrice);
}

/// Cancel (by id and by client id), mass cancel and cancel-replace reach pending triggers; a
/// trigger's client id is taken while it is pending.
#[test]
fn cancels_and_replaces_reach_pending_triggers() {
    let mut h = Harness::new(false);
    h.trade_at(1_000, 1);
    let with_client = c::trigger(1, M1, Side::Ask, TriggerKind::Stop, 950, 940, 2, 77);
    h.ok(with_client);
    h.reject(c::limit(1, M1, Side::Bid, 900, 1, TimeInForce::Gtc, 77), RejectReason::DuplicateClientOrderId);
    let events = h.ok(cancel(1, 0, 77));
    assert_eq!(names(&events), ["OrderCanceled"]);
    let Event::OrderCanceled(x) = events[0] else { unreachable!() };
    assert_eq!((x.canceled_lots.get(), x.reason.get()), (2, Ok(CancelReason::UserRequested)));

    let id = match h.ok(stop(1, Side::Ask, 950, 940, 2))[0] {
        Event::TriggerPending(p) => p.order_id.get(),
        ref other => panic!("{other:?}"),
    };
    h.reject(cancel(2, id, 0), RejectReason::NotOrderOwner);
    let replace = Command::CancelReplace(CancelReplace {
        user_id: UserId::new(1),
        order_id: OrderId::new(id),
        client_order_id: ClientOrderId::ZERO,
        new_price_ticks: Ticks::new(945),
        new_quantity_lots: Lots::new(4),
        market_id: MarketId::new(M1),
        reserved: Reserved::ZERO,
    });
    let events = h.ok(replace);
    let Event::OrderReplaced(r) = events[0] else { panic!("{events:?}") };
    assert_eq!((r.price_ticks.get(), r.quantity_lots.get(), r.remaining_lots.get()), (945, 4, 4));
    h.ok(stop(1, Side::Bid, 1_100, 0, 1));
    h.ok(c::gtc(1, M1, Side::Bid, 900, 1));
    let events = h.ok(Command::MassCancel(MassCancel {
        user_id: UserId::new(1),
        market_id: MarketId::new(M1),
        side: SideFilter::Both.into(),
        kinds: OrderKindFilter::All.into(),
        reserved: Reserved::ZERO,
    }));
    let Some(Event::MassCancelReport(report)) = events.last() else { panic!("{events:?}") };
    assert_eq!(report.canceled_count.get(), 3, "one resting order and two triggers");
    assert!(h.engine.validate().is_ok());
}

/// A mass cancel filtered by kind cancels only resting orders or only pending triggers; an
/// unknown kind is refused.
#[test]
fn a_mass_cancel_filtered_by_kind_spares_the_other_kind() {
    let mass_cancel = |kinds: u16| {
        let mut bytes = Command::MassCancel(MassCancel {
            user_id: UserId::new(1),
            market_id: MarketId::new(M1),
            side: SideFilter::Both.into(),
            kinds: OrderKindFilter::All.into(),
            reserved: Reserved::ZERO,
        })
        .to_vec();
        bytes[8 + 13] = u8::try_from(kinds).unwrap();
        Command::decode(&bytes).unwrap().0
    };
    let mut h = Harness::new(false);
    h.trade_at(1_000, 1);
    let trigger = match h.ok(stop(1, Side::Ask, 950, 940, 2))[0] {
        Event::TriggerPending(p) => p.order_id.get(),
        ref other => panic!("{other:?}"),
    };
    let resting = match h.ok(c::gtc(1, M1, Side::Bid, 900, 1))[0] {
        Event::OrderAccepted(a) => a.order_id.get(),
        ref other => panic!("{other:?}"),
    };
    h.reject(mass_cancel(3), RejectReason::InvalidEnumValue);
    let canceled = |events: &[Event]| -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::OrderCanceled(x) => Some(x.order_id.get()),
                _ => None,
            })
            .collect()
    };
    let events = h.ok(mass_cancel(OrderKindFilter::Trigger.code()));
    assert_eq!(canceled(&events), [trigger], "{events:?}");
    h.ok(stop(1, Side::Ask, 950, 940, 2));
    let events = h.ok(mass_cancel(OrderKindFilter::Resting.code()));
    assert_eq!(canceled(&events), [resting], "{events:?}");
    let Some(Event::MassCancelReport(report)) = events.last() else { panic!("{events:?}") };
    assert_eq!(report.canceled_count.get(), 1);
    assert_eq!(h.engine.validate(), Ok(()));
}

/// A cascade: a stop's own trade reaches the next stop. One command fires at most
/// `TRIGGERS_FIRED_PER_COMMAND_MAX` triggers; the rest fire after the next order command.
#[test]
fn a_cascade_is_bounded_per_command() {
    let max = engine::triggers::TRIGGERS_FIRED_PER_COMMAND_MAX;
    let mut h = Harness::new(false);
    h.trade_at(1_000, 1);
    // Cascade: stop A (trigger 990) sells into a bid at 980, which reaches stop B (trigger 985).
    h.ok(c::gtc(2, M1, Side::Bid, 980, 1));
    h.ok(c::gtc(2, M1, Side::Bid, 970, 1));
    let a = match h.ok(stop(1, Side::Ask, 990, 0, 1))[0] {
        Event::TriggerPending(p) => p.order_id.get(),
        ref other => panic!("{other:?}"),
    };
    let b = match h.ok(stop(1, Side::Ask, 985, 0, 1))[0] {
        Event::TriggerPending(p) => p.order_id.get(),
        ref other => panic!("{other:?}"),
    };
    h.ok(c::gtc(2, M1, Side::Bid, 990, 1));
    let events = h.ok(c::market(3, M1, Side::Ask, 1));
    assert_eq!(placed(&events), [a, b]);

    // The bound: max + 1 stops reached by one trade.
    for user in [1, 2] {
        h.ok(c::deposit(user, USDC, 100_000_000));
    }
    h.ok(c::gtc(3, M1, Side::Ask, 2_000, 500));
    for i in 0..=max as u64 {
        h.ok(stop(1 + i % 2, Side::Bid, 1_000 + i % 3, 0, 1));
    }
    h.ok(c::gtc(3, M1, Side::Ask, 1_005, 1));
    let events = h.ok(c::market(4, M1, Side::Bid, 1));
    assert_eq!(placed(&events).len(), max);
    assert_eq!(h.engine.pending_triggers(MarketId::new(M1)), 1);
    let events = h.ok(c::gtc(4, M1, Side::Bid, 500, 1)); // any order command on the market
    assert_eq!(placed(&events).len(), 1);
    assert_eq!(h.engine.pending_triggers(MarketId::new(M1)), 0);
}

/// Pending triggers and the last trade price survive a snapshot: the restored engine has the same
/// state hash and fires the same way.
#[test]
fn triggers_and_the_band_reference_survive_a_snapshot() {
    let mut h = Harness::new(true);
    h.trade_at(1_000, 1);
    h.ok(stop(1, Side::Ask, 990, 0, 2));
    h.ok(take_profit(2, Side::Bid, 980, 985, 1));
    h.ok(c::gtc(2, M1, Side::Bid, 990, 5));
    let mut bytes = Vec::new();
    let hash = h.engine.write_snapshot(h.sequence, &mut bytes);
    let mut config = EngineConfig::sample();
    config.markets[0].price_band = PriceBand { max_multiplier_ppm: 1_100_000, min_multiplier_ppm: 900_000 };
    let (mut restored, sequence) = Engine::restore_snapshot(&config, engine::OrderBook::with_capacity, &bytes).unwrap();
    assert_eq!((restored.state_hash(), sequence), (hash, h.sequence));
    // The band reference (last trade 1 000) came back: 1 101 is still refused.
    let command = c::gtc(3, M1, Side::Ask, 1_101, 1);
    let (mut live, mut replayed) = (Vec::new(), Vec::new());
    let ctx = CommandContext::new(h.sequence + 1, 1);
    h.engine.clone().execute(ctx, &command, &mut live);
    restored.clone().execute(ctx, &command, &mut replayed);
    assert_eq!(live, replayed);
    assert!(matches!(live[0], Event::OrderRejected(_)));
    let command = c::market(3, M1, Side::Ask, 1);
    live.clear();
    replayed.clear();
    h.engine.execute(ctx, &command, &mut live);
    restored.execute(ctx, &command, &mut replayed);
    assert_eq!(live, replayed);
    assert_eq!(placed(&live).len(), 1);
    assert_eq!(restored.state_hash(), h.engine.state_hash());
}

/// `Cross` (Backpack's plain `triggerPrice`) takes its direction from the reference price at
/// acceptance: above it a buy is a stop and a sell a take-profit, below it the reverse.
#[test]
fn a_cross_trigger_takes_its_direction_from_the_reference() {
    let mut h = Harness::new(false);
    h.reject(c::trigger(1, M1, Side::Bid, TriggerKind::Cross, 1_010, 0, 1, 0), RejectReason::InvalidTriggerPrice);
    h.trade_at(1_000, 1);
    let kind = |events: Vec<Event>| match events[0] {
        Event::TriggerPending(p) => p.trigger_kind.get().unwrap(),
        ref other => panic!("{other:?}"),
    };
    assert_eq!(kind(h.ok(c::trigger(1, M1, Side::Bid, TriggerKind::Cross, 1_010, 0, 1, 0))), TriggerKind::Stop);
    assert_eq!(kind(h.ok(c::trigger(1, M1, Side::Ask, TriggerKind::Cross, 1_010, 0, 1, 0))), TriggerKind::TakeProfit);
    assert_eq!(kind(h.ok(c::trigger(1, M1, Side::Bid, TriggerKind::Cross, 990, 0, 1, 0))), TriggerKind::TakeProfit);
    assert_eq!(kind(h.ok(c::trigger(1, M1, Side::Ask, TriggerKind::Cross, 990, 0, 1, 0))), TriggerKind::Stop);
    h.reject(c::trigger(1, M1, Side::Ask, TriggerKind::Cross, 1_000, 0, 1, 0), RejectReason::InvalidTriggerPrice);
}

// ----------------------------------------------------------------------------------------------
// Attached stop-loss / take-profit
// ----------------------------------------------------------------------------------------------

/// The pending triggers of BTC_USDC as (id, side, kind, trigger, limit, lots, sibling).
fn pending(h: &Harness) -> Vec<(u64, Side, TriggerKind, u64, u64, u64, u64)> {
    h.engine
        .triggers(MarketId::new(M1))
        .unwrap()
        .iter()
        .map(|t| {
            (t.order_id.get(), t.side, t.kind, t.trigger_price_ticks, t.price_ticks, t.quantity_lots, t.sibling.get())
        })
        .collect()
}

/// A resting buy with an attached stop-loss (market) and take-profit (limit): nothing pends until
/// it fills; each fill creates, then grows, one sell pair by the filled quantity; a cancel of the
/// parent ends the attachment (no children for the unfilled part) and the children stay.
#[test]
fn attached_children_grow_with_each_fill_and_outlive_the_parent() {
    let mut h = Harness::new(false);
    h.trade_at(1_000, 1);
    let events = h.ok(c::with_attached(c::gtc(1, M1, Side::Bid, 1_000, 10), 900, 0, 1_100, 1_090));
    let parent = match events[0] {
        Event::OrderAccepted(a) => a.order_id.get(),
        _ => panic!("{events:?}"),
    };
    assert!(pending(&h).is_empty());
    // An open attachment counts as two triggers of its owner.
    assert_eq!(h.engine.triggers(MarketId::new(M1)).unwrap().count_of(UserId::new(1)), 2);

    let events = h.ok(c::limit(3, M1, Side::Ask, 1_000, 3, TimeInForce::Ioc, 0));
    assert_eq!(names(&events).iter().filter(|n| **n == "TriggerPending").count(), 2, "{events:?}");
    let (sl, tp) = (parent + 2, parent + 3);
    assert_eq!(
        pending(&h),
        [
            (tp, Side::Ask, TriggerKind::TakeProfit, 1_100, 1_090, 3, sl),
            (sl, Side::Ask, TriggerKind::Stop, 900, 0, 3, tp)
        ]
    );
    // Children reserve nothing: user 1's BTC is all available.
    assert_eq!(h.balance(1, BTC).1, 0);

    let events = h.ok(c::limit(3, M1, Side::Ask, 1_000, 4, TimeInForce::Ioc, 0));
    assert_eq!(names(&events).iter().filter(|n| **n == "OrderReplaced").count(), 2, "{events:?}");
    assert_eq!(pending(&h).iter().map(|p| p.5).collect::<Vec<_>>(), [7, 7]);

    h.ok(cancel(1, parent, 0));
    let triggers = h.engine.triggers(MarketId::new(M1)).unwrap();
    assert_eq!(triggers.attachments().count(), 0);
    assert_eq!(triggers.count_of(UserId::new(1)), 2);
    assert_eq!(pending(&h).iter().map(|p| p.5).collect::<Vec<_>>(), [7, 7]);
}

/// When one child fires, its sibling is canceled in the same command (`OneCancelsOther`), before
/// the fired order is placed; a later fill of the still-open parent starts a new pair.
#[test]
fn one_child_firing_cancels_its_sibling() {
    let mut h = Harness::new(false);
    h.trade_at(1_000, 1);
    let events = h.ok(c::with_attached(c::gtc(1, M1, Side::Bid, 1_000, 10), 900, 0, 1_100, 0));
    let Event::OrderAccepted(accepted) = events[0] else { panic!() };
    let parent = accepted.order_id.get();
    h.ok(c::limit(3, M1, Side::Ask, 1_000, 2, TimeInForce::Ioc, 0));
    let (sl, tp) = (parent + 2, parent + 3);
    // Liquidity for the take-profit's market sell, then a trade at 1 100 reaches it.
    let Event::OrderAccepted(liquidity) = h.ok(c::gtc(2, M1, Side::Bid, 1_050, 5))[0] else { panic!() };
    let events = h.trade_at(1_100, 1);
    let index = |name: &str| events.iter().position(|e| e.name() == name).unwrap();
    let Event::OrderCanceled(canceled) = events[index("OrderCanceled")] else { panic!() };
    assert_eq!((canceled.order_id.get(), canceled.reason.get()), (sl, Ok(CancelReason::OneCancelsOther)));
    assert!(index("OrderCanceled") < index("TriggerPlaced"));
    assert_eq!(placed(&events), [tp]);
    assert!(pending(&h).is_empty());
    // The parent (8 lots still open) fills again: a new pair, for that fill only.
    h.ok(cancel(2, liquidity.order_id.get(), 0));
    let events = h.ok(c::limit(3, M1, Side::Ask, 1_000, 1, TimeInForce::Ioc, 0));
    assert_eq!(names(&events).iter().filter(|n| **n == "TriggerPending").count(), 2, "{events:?}");
    assert_eq!(pending(&h).iter().map(|p| p.5).collect::<Vec<_>>(), [1, 1]);
}

/// Attachments are checked: a stop-loss on the winning side or a take-profit on the losing side,
/// a limit without its trigger, and one on a trigger order are refused.
#[test]
fn attached_prices_are_checked() {
    let mut h = Harness::new(false);
    h.trade_at(1_000, 1);
    h.reject(c::with_attached(c::gtc(1, M1, Side::Bid, 1_000, 2), 1_010, 0, 0, 0), RejectReason::InvalidTriggerPrice);
    h.reject(c::with_attached(c::gtc(1, M1, Side::Bid, 1_000, 2), 0, 0, 990, 0), RejectReason::InvalidTriggerPrice);
    h.reject(c::with_attached(c::gtc(1, M1, Side::Ask, 1_000, 2), 990, 0, 0, 0), RejectReason::InvalidTriggerPrice);
    h.reject(c::with_attached(c::gtc(1, M1, Side::Bid, 1_000, 2), 0, 900, 0, 0), RejectReason::InvalidTriggerPrice);
    h.reject(c::with_attached(stop(1, Side::Bid, 1_100, 0, 2), 900, 0, 0, 0), RejectReason::InvalidOrderType);
    // A market buy takes the reference price (last trade 1 000) as its price.
    h.reject(c::with_attached(c::market(1, M1, Side::Bid, 1), 1_000, 0, 0, 0), RejectReason::InvalidTriggerPrice);
}

/// Children, their sibling links and open attachments survive a snapshot and are in the state
/// hash.
#[test]
fn attachments_survive_a_snapshot_and_are_hashed() {
    let mut h = Harness::new(false);
    h.trade_at(1_000, 1);
    let before = h.engine.state_hash();
    h.ok(c::with_attached(c::gtc(1, M1, Side::Bid, 1_000, 10), 900, 0, 1_100, 0));
    let with_attachment = h.engine.state_hash();
    assert_ne!(with_attachment, before);
    h.ok(c::limit(3, M1, Side::Ask, 1_000, 2, TimeInForce::Ioc, 0));
    let mut bytes = Vec::new();
    let hash = h.engine.write_snapshot(h.sequence, &mut bytes);
    let config = EngineConfig::sample();
    let (mut restored, _) = Engine::restore_snapshot(&config, engine::OrderBook::with_capacity, &bytes).unwrap();
    assert_eq!(restored.state_hash(), hash);
    restored.validate().unwrap();
    // The restored engine grows the same children and fires the same OCO.
    for command in [c::limit(3, M1, Side::Ask, 1_000, 1, TimeInForce::Ioc, 0), c::market(3, M1, Side::Ask, 3)] {
        let (mut live, mut replayed) = (Vec::new(), Vec::new());
        h.sequence += 1;
        let ctx = CommandContext::new(h.sequence, 1);
        h.engine.execute(ctx, &command, &mut live);
        restored.execute(ctx, &command, &mut replayed);
        assert_eq!(live, replayed);
        assert_eq!(restored.state_hash(), h.engine.state_hash());
    }
}

/// The attachment of an open parent on BTC_USDC.
fn attachment_of(h: &Harness, parent: u64) -> engine::triggers::Attachment {
    *h.engine.triggers(MarketId::new(M1)).unwrap().attachment(OrderId::new(parent)).unwrap()
}

/// A fill too small to make a valid child order (below the minimum quantity, or for a limit child
/// below the minimum notional at its limit price) creates no child: its lots accumulate in the
/// attachment, and the first fill that makes the accumulated quantity valid creates the pair with
/// all of it; pending children then grow by each fill. The accumulated lots are in the snapshot.
#[test]
fn fills_too_small_for_a_valid_child_accumulate_until_one_is() {
    let mut config = EngineConfig::sample();
    config.markets[0].min_quantity_lots = 5;
    config.markets[0].min_notional = 5_000;
    let mut h = Harness::with_config(config.clone());
    // An ask of 6 filled down to 1 lot (also sets the last price to 1 000).
    h.ok(c::gtc(3, M1, Side::Ask, 1_000, 6));
    h.ok(c::limit(4, M1, Side::Bid, 1_000, 5, TimeInForce::Ioc, 0));
    // The parent takes that 1 lot and rests 19; stop-loss limit 800 (800 × 6 < 5 000: a child
    // needs 7 lots), take-profit market (needs 5 lots).
    let events = h.ok(c::with_attached(c::gtc(1, M1, Side::Bid, 1_000, 20), 900, 800, 1_100, 0));
    let Event::OrderAccepted(accepted) = events[0] else { panic!("{events:?}") };
    let parent = accepted.order_id.get();
    assert!(!names(&events).contains(&"TriggerPending"), "{events:?}");
    assert!(pending(&h).is_empty());
    assert_eq!(attachment_of(&h, parent).uncovered_lots, 1);

    // 6 lots: a valid market take-profit but not a valid stop-loss limit: still none.
    let events = h.ok(c::limit(3, M1, Side::Ask, 1_000, 5, TimeInForce::Ioc, 0));
    assert!(!names(&events).contains(&"TriggerPending"), "{events:?}");
    assert_eq!(attachment_of(&h, parent).uncovered_lots, 6);
    // The accumulated lots survive a snapshot and are in the state hash.
    let mut bytes = Vec::new();
    let hash = h.engine.write_snapshot(h.sequence, &mut bytes);
    let (restored, _) = Engine::restore_snapshot(&config, engine::OrderBook::with_capacity, &bytes).unwrap();
    assert_eq!(restored.state_hash(), hash);
    assert_eq!(
        restored.triggers(MarketId::new(M1)).unwrap().attachment(OrderId::new(parent)).unwrap().uncovered_lots,
        6
    );

    // 11 lots: both children are created with all of them.
    let events = h.ok(c::limit(3, M1, Side::Ask, 1_000, 5, TimeInForce::Ioc, 0));
    assert_eq!(names(&events).iter().filter(|n| **n == "TriggerPending").count(), 2, "{events:?}");
    assert_eq!(pending(&h).iter().map(|p| p.5).collect::<Vec<_>>(), [11, 11]);
    assert_eq!(attachment_of(&h, parent).uncovered_lots, 0);
    // Then they grow by each fill.
    h.ok(c::limit(3, M1, Side::Ask, 1_000, 5, TimeInForce::Ioc, 0));
    assert_eq!(pending(&h).iter().map(|p| p.5).collect::<Vec<_>>(), [16, 16]);
    // Children hold no funds: user 1 locks only the parent's remaining 4 lots.
    assert_eq!(h.balance(1, USDC).1, 4 * 1_000 + 4 * 1_000 * 500 / 1_000_000);
}

/// A cancel-replace that moves a parent's price past its attached stop-loss (a buy's stop at or
/// above the new price) or take-profit (at or below it) is rejected; one that keeps both on their
/// sides is accepted, and a parent without attachment moves freely.
#[test]
fn a_replace_must_keep_the_attached_triggers_on_their_sides() {
    let mut h = Harness::new(false);
    h.trade_at(1_000, 1);
    let events = h.ok(c::with_attached(c::gtc(1, M1, Side::Bid, 1_000, 10), 900, 0, 1_100, 0));
    let Event::OrderAccepted(accepted) = events[0] else { panic!("{events:?}") };
    let parent = accepted.order_id.get();
    h.reject(c::replace(1, M1, parent, 1_100, 0), RejectReason::InvalidTriggerPrice);
    h.reject(c::replace(1, M1, parent, 1_150, 0), RejectReason::InvalidTriggerPrice);
    h.reject(c::replace(1, M1, parent, 900, 0), RejectReason::InvalidTriggerPrice);
    h.reject(c::replace(1, M1, parent, 850, 0), RejectReason::InvalidTriggerPrice);
    h.ok(c::replace(1, M1, parent, 950, 0));
    h.ok(c::replace(1, M1, parent, 0, 12));
    // A sell parent: its stop-loss above, its take-profit below.
    let events = h.ok(c::with_attached(c::gtc(2, M1, Side::Ask, 1_050, 10), 1_200, 0, 1_010, 0));
    let Event::OrderAccepted(accepted) = events[0] else { panic!("{events:?}") };
    h.reject(c::replace(2, M1, accepted.order_id.get(), 1_200, 0), RejectReason::InvalidTriggerPrice);
    h.reject(c::replace(2, M1, accepted.order_id.get(), 1_000, 0), RejectReason::InvalidTriggerPrice);
    h.ok(c::replace(2, M1, accepted.order_id.get(), 1_100, 0));
    let Event::OrderAccepted(plain) = h.ok(c::gtc(1, M1, Side::Bid, 990, 1))[0] else { panic!() };
    h.ok(c::replace(1, M1, plain.order_id.get(), 800, 0));
}

/// A routed order (book + AMM pool) respects the price band: its book leg takes no maker beyond
/// the band's edge and its pool leg may not move the pool's price beyond it; when the quantity
/// cannot be had within the band the order is rejected (`PriceOutsideBand`, nothing happens), as
/// routed orders are all or nothing.
#[test]
fn a_routed_order_stays_inside_the_band() {
    const ETH_USDC: u32 = 2;
    const ETH: u32 = 2;
    let mut config = EngineConfig::sample();
    config.pools = vec![engine::PoolConfig { market_id: MarketId::new(ETH_USDC), fee_bps: 30 }];
    config.markets[1].price_band = PriceBand { max_multiplier_ppm: 1_100_000, min_multiplier_ppm: 900_000 };
    let mut h = Harness::with_config(config);
    for user in 1..=4 {
        h.ok(c::deposit(user, ETH, 1_000_000_000_000));
        h.ok(c::deposit(user, USDC, 10_000_000_000_000));
    }
    // Pool: 100 ETH / 300 000 USDC (3 000 per ETH, 300 000 ticks). An ask at 4 000 placed while
    // the market had no reference price (one-sided book, no trade), so outside today's band.
    h.ok(c::add_liquidity(1, ETH_USDC, 10_000_000_000, 300_000_000_000));
    h.ok(c::gtc(3, ETH_USDC, Side::Ask, 400_000, 20_000));
    // A trade at 3 000 makes the band 2 700 .. 3 300; an ask of 5 ETH at 3 200 is inside it.
    h.ok(c::gtc(3, ETH_USDC, Side::Ask, 300_000, 1));
    h.ok(c::limit(4, ETH_USDC, Side::Bid, 300_000, 1, TimeInForce::Ioc, 0));
    h.ok(c::gtc(3, ETH_USDC, Side::Ask, 320_000, 50_000));
    let pool_price_within = |h: &Harness, lower: u128, upper: u128| {
        // USDC minor units per ETH minor unit × 100 is USDC per ETH.
        let pool = h.engine.pool(MarketId::new(ETH_USDC)).unwrap();
        let (quote, base) = (u128::from(pool.quote_reserve) * 100, u128::from(pool.base_reserve));
        quote >= lower * base && quote <= upper * base
    };

    // 8 ETH can be had within the band: the 3 200 ask and the pool up to at most 3 300.
    let events = h.ok(c::routed(2, ETH_USDC, Side::Bid, 80_000, 0));
    let fills: Vec<u64> =
        events.iter().filter_map(|e| if let Event::Fill(f) = e { Some(f.price_ticks.get()) } else { None }).collect();
    assert!(!fills.is_empty() && fills.iter().all(|&p| p <= 330_000), "{events:?}");
    assert!(pool_price_within(&h, 2_700, 3_300));

    // 12 more ETH cannot: the rest is the ask at 4 000 and the pool beyond 3 300.
    h.reject(c::routed(2, ETH_USDC, Side::Bid, 120_000, 0), RejectReason::PriceOutsideBand);
    // Nor a sell of 20 ETH (no bids; the pool would fall below 2 700).
    h.reject(c::routed(2, ETH_USDC, Side::Ask, 200_000, 0), RejectReason::PriceOutsideBand);
    // A small sell stays inside.
    h.ok(c::routed(2, ETH_USDC, Side::Ask, 10_000, 0));
    assert!(pool_price_within(&h, 2_700, 3_300));
}
