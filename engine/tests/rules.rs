//! Rule-by-rule unit tests of the matching engine, each with exact events and exact balances.
//!
//! Every test drives a real `Engine` (fast book, `EngineConfig::sample()` unless a limit is
//! changed) through the small [`Harness`], which after *every* command checks that
//! `engine.validate()` holds (book not crossed, exact reservations, locked = Σ reservations,
//! conservation of every asset), that every event carries the command's sequence, and that the
//! event-rebuilt reference ledger agrees with the engine. Every expected rejection is checked to
//! emit exactly one `OrderRejected` (right reason, user, ids, template) and to leave
//! `state_hash()` unchanged. Every command's events also pass `check_order_lifecycle` (each
//! order finishes at most once, by a completing fill, expiry or cancel, and nothing follows).
//!
//! Covered: price-time priority and maker-price fills, partial fills, per-market trade ids;
//! GTC / IOC / FOK and post-only; market orders by base and by quote quantity; cancel by id and
//! client id, ownership, mass cancel; cancel-replace priority rules and its rejections;
//! self-trade prevention modes; client-id uniqueness; reservations, refunds, fees and
//! conservation; deposits and withdrawals; configured limits and invalid enum codes.
//!
//! Units on BTC_USDC (market 1): one tick × one lot = 1 USDC minor unit, one lot = 1_000 BTC
//! minor units, maker fee 200 ppm, taker fee 500 ppm, both rounded down.

use codec::*;
use engine::testkit::{ReferenceLedger, check_order_lifecycle, commands as c};
use engine::{Book, CommandContext, Engine, EngineConfig};

const BTC: u32 = 0;
const USDC: u32 = 1;
const ETH: u32 = 2;
/// BTC_USDC.
const M1: u32 = 1;
/// ETH_USDC.
const M2: u32 = 2;
/// Base minor units per lot on BTC_USDC.
const LOT: u64 = 1_000;

const ACCEPTED: &str = "OrderAccepted";
const REJECTED: &str = "OrderRejected";
const FILL: &str = "Fill";
const CANCELED: &str = "OrderCanceled";
const EXPIRED: &str = "OrderExpired";
const REPLACED: &str = "OrderReplaced";
const LEVEL: &str = "BookLevelUpdate";
const BAL: &str = "BalanceUpdate";
/// The events of one trade: the fill, the four balances it touched, the maker's level.
const TRADE: [&str; 6] = [FILL, BAL, BAL, BAL, BAL, LEVEL];

/// The message of an event of the given variant, or a panic naming what was found.
macro_rules! get {
    ($event:expr, $variant:ident) => {
        match $event {
            Event::$variant(message) => *message,
            other => panic!("expected {}, got {other:?}", stringify!($variant)),
        }
    };
}
// ----------------------------------------------------------------------------------------------
// Harness
// ----------------------------------------------------------------------------------------------

struct Harness {
    engine: Engine,
    sequence: u64,
    reference: ReferenceLedger,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(EngineConfig::sample())
    }

    fn with_config(config: EngineConfig) -> Self {
        let engine = Engine::new(&config).unwrap();
        engine.validate().unwrap();
        Self { engine, sequence: 0, reference: ReferenceLedger::new(&config) }
    }

    /// Executes one command with the next sequence; checks the invariants afterwards.
    fn exec(&mut self, command: Command) -> Vec<Event> {
        self.sequence += 1;
        let ctx = CommandContext::new(self.sequence, 1_000 * self.sequence);
        let mut out = Vec::new();
        self.engine.execute(ctx, &command, &mut out);
        self.engine.validate().unwrap();
        for event in &out {
            assert_eq!(event.sequence().get(), self.sequence, "event of another command: {event:?}");
            self.reference.apply(event);
        }
        self.reference.check(&self.engine).unwrap();
        check_order_lifecycle(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        out
    }

    /// Executes a command that must not be rejected.
    fn ok(&mut self, command: Command) -> Vec<Event> {
        let events = self.exec(command);
        assert!(!names(&events).contains(&REJECTED), "unexpected rejection of {command:?}: {events:?}");
        events
    }

    /// Executes a new order that must be accepted; returns its order id and the events.
    fn place(&mut self, command: Command) -> (u64, Vec<Event>) {
        let events = self.ok(command);
        (accepted(&events[0]), events)
    }

    /// Executes a command that must be rejected for `reason`: exactly one `OrderRejected`, with
    /// the command's identifiers, and no state change.
    fn reject(&mut self, command: Command, reason: RejectReason) -> OrderRejected {
        let hash = self.engine.state_hash();
        let next_order_id = self.engine.next_order_id();
        let events = self.exec(command);
        assert_eq!(events.len(), 1, "a rejection is exactly one event: {events:?}");
        let rejected = get!(&events[0], OrderRejected);
        assert_eq!(rejected.reason.get(), Ok(reason), "{command:?}");
        assert_eq!(rejected.user_id, command.user_id());
        assert_eq!(rejected.command_template_id.get(), command.template_id());
        assert_eq!(rejected.timestamp_ns.get(), 1_000 * self.sequence);
        match command {
            Command::NewOrder(m) => {
                assert_eq!((rejected.client_order_id, rejected.market_id), (m.client_order_id, m.market_id));
                assert_eq!(rejected.order_id, OrderId::ZERO);
            }
            Command::CancelOrder(m) => {
                assert_eq!((rejected.order_id, rejected.client_order_id), (m.order_id, m.client_order_id));
                assert_eq!(rejected.market_id, m.market_id);
            }
            Command::CancelReplace(m) => {
                assert_eq!((rejected.order_id, rejected.client_order_id), (m.order_id, m.client_order_id));
                assert_eq!(rejected.market_id, m.market_id);
            }
            Command::MassCancel(m) => assert_eq!(rejected.market_id, m.market_id),
            Command::Deposit(_) | Command::Withdraw(_) => assert_eq!(rejected.market_id, MarketId::ZERO),
            Command::MarketControl(m) => assert_eq!(rejected.market_id, m.market_id),
            Command::AddLiquidity(m) => assert_eq!(rejected.market_id, m.market_id),
            Command::RemoveLiquidity(m) => assert_eq!(rejected.market_id, m.market_id),
            Command::Swap(m) => assert_eq!(rejected.market_id, m.market_id),
            Command::RoutedOrder(m) => assert_eq!(rejected.market_id, m.market_id),
        }
        assert_eq!(self.engine.state_hash(), hash, "a rejected command changed the state: {command:?}");
        assert_eq!(self.engine.next_order_id(), next_order_id);
        rejected
    }

    fn deposit(&mut self, user: u64, asset: u32, amount: u64) {
        let before = self.balance(user, asset);
        let events = self.ok(c::deposit(user, asset, amount));
        assert_eq!(events.len(), 1);
        assert_eq!(bal(&events[0]), (user, asset, before.0 + amount, before.1, BalanceChange::Deposit));
    }

    /// (available, locked).
    fn balance(&self, user: u64, asset: u32) -> (u64, u64) {
        let balance = self.engine.balance(UserId::new(user), AssetId::new(asset));
        (balance.available, balance.locked)
    }

    fn fees(&self, asset: u32) -> u64 {
        self.engine.ledger().fees_collected(AssetId::new(asset))
    }

    /// A side's orders in priority order as (order id, open lots).
    fn queue(&self, market: u32, side: Side) -> Vec<(u64, u64)> {
        let mut orders = Vec::new();
        self.engine.book(MarketId::new(market)).unwrap().visit_in_priority(side, &mut |order| {
            orders.push((order.order_id.get(), order.remaining_lots));
            true
        });
        orders
    }

    fn order(&self, market: u32, order_id: u64) -> Option<engine::RestingOrder> {
        self.engine.book(MarketId::new(market)).unwrap().get(OrderId::new(order_id)).copied()
    }
}

// ----------------------------------------------------------------------------------------------
// Event helpers
// ----------------------------------------------------------------------------------------------

fn names(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::name).collect()
}

fn seq(parts: &[&[&'static str]]) -> Vec<&'static str> {
    parts.concat()
}

fn accepted(event: &Event) -> u64 {
    get!(event, OrderAccepted).order_id.get()
}

/// The key fields of a fill.
#[derive(Debug, PartialEq, Eq)]
struct F {
    trade: u64,
    price: u64,
    lots: u64,
    maker: u64,
    maker_left: u64,
    taker: u64,
    taker_left: u64,
    notional: u64,
    maker_fee: u64,
    taker_fee: u64,
}

fn fill(event: &Event) -> F {
    let f = get!(event, Fill);
    F {
        trade: f.trade_id.get(),
        price: f.price_ticks.get(),
        lots: f.quantity_lots.get(),
        maker: f.maker_order_id.get(),
        maker_left: f.maker_remaining_lots.get(),
        taker: f.taker_order_id.get(),
        taker_left: f.taker_remaining_lots.get(),
        notional: f.quote_amount.get(),
        maker_fee: f.maker_fee.get(),
        taker_fee: f.taker_fee.get(),
    }
}

/// (user, asset, available, locked, reason).
fn bal(event: &Event) -> (u64, u32, u64, u64, BalanceChange) {
    let b = get!(event, BalanceUpdate);
    (b.user_id.get(), b.asset_id.get(), b.available.get(), b.locked.get(), b.reason.get().unwrap())
}

/// (side, price, lots, order count).
fn level(event: &Event) -> (Side, u64, u64, u32) {
    let l = get!(event, BookLevelUpdate);
    (l.side.get().unwrap(), l.price_ticks.get(), l.quantity_lots.get(), l.order_count.get())
}

/// (order id, user, filled, canceled, reason).
fn canceled(event: &Event) -> (u64, u64, u64, u64, CancelReason) {
    let x = get!(event, OrderCanceled);
    (x.order_id.get(), x.user_id.get(), x.filled_lots.get(), x.canceled_lots.get(), x.reason.get().unwrap())
}

/// (order id, filled, expired, reason).
fn expired(event: &Event) -> (u64, u64, u64, ExpireReason) {
    let x = get!(event, OrderExpired);
    (x.order_id.get(), x.filled_lots.get(), x.expired_lots.get(), x.reason.get().unwrap())
}

/// (order id, price, quantity, filled, remaining, priority kept).
fn replaced(event: &Event) -> (u64, u64, u64, u64, u64, bool) {
    let x = get!(event, OrderReplaced);
    let kept = x.priority_kept.get().unwrap().into();
    (x.order_id.get(), x.price_ticks.get(), x.quantity_lots.get(), x.filled_lots.get(), x.remaining_lots.get(), kept)
}

// ----------------------------------------------------------------------------------------------
// Command helpers
// ----------------------------------------------------------------------------------------------

fn edit(command: Command, change: impl FnOnce(&mut NewOrder)) -> Command {
    let Command::NewOrder(mut order) = command else { panic!("not a new order: {command:?}") };
    change(&mut order);
    Command::NewOrder(order)
}

/// A limit order on BTC_USDC.
fn limit(user: u64, side: Side, price: u64, lots: u64, tif: TimeInForce) -> Command {
    c::limit(user, M1, side, price, lots, tif, 0)
}

fn gtc(user: u64, side: Side, price: u64, lots: u64) -> Command {
    c::gtc(user, M1, side, price, lots)
}

fn with_client_id(command: Command, client_order_id: u64) -> Command {
    edit(command, |o| o.client_order_id = ClientOrderId::new(client_order_id))
}

fn with_stp(command: Command, mode: SelfTradePrevention) -> Command {
    edit(command, |o| o.self_trade_prevention = mode.into())
}

fn post_only(command: Command) -> Command {
    edit(command, |o| o.post_only = true.into())
}

fn cancel_by_client_id(user: u64, market: u32, client_order_id: u64) -> Command {
    Command::CancelOrder(CancelOrder {
        user_id: UserId::new(user),
        order_id: OrderId::ZERO,
        client_order_id: ClientOrderId::new(client_order_id),
        market_id: MarketId::new(market),
        reserved: Reserved::ZERO,
    })
}

/// The command with one byte of its encoded block overwritten (for enum codes no variant has),
/// decoded again (decoding does not check enum codes; the engine must).
fn with_raw_byte(command: Command, offset: usize, value: u8) -> Command {
    let mut bytes = command.to_vec();
    bytes[MESSAGE_HEADER_BYTES + offset] = value;
    Command::decode(&bytes).unwrap().0
}

/// floor(notional × ppm / 10^6).
fn fee(notional: u64, ppm: u64) -> u64 {
    notional * ppm / 1_000_000
}

// ----------------------------------------------------------------------------------------------
// Price-time priority, partial fills, trade ids
// ----------------------------------------------------------------------------------------------

#[test]
fn better_price_first_then_fifo_fills_at_maker_price_with_sequential_trade_ids() {
    let mut h = Harness::new();
    for user in 1..=3 {
        h.deposit(user, BTC, 1_000_000);
    }
    h.deposit(4, USDC, 10_000_000);
    let (a1, _) = h.place(gtc(1, Side::Ask, 20_100, 5));
    let (a2, _) = h.place(gtc(2, Side::Ask, 20_000, 5));
    let (a3, _) = h.place(gtc(3, Side::Ask, 20_000, 5));
    assert_eq!((a1, a2, a3), (1, 2, 3));
    assert_eq!(h.queue(M1, Side::Ask), [(2, 5), (3, 5), (1, 5)]);

    // A bid limited at 20_100 takes the better 20_000 level first (oldest first), at the makers'
    // price, then part of the 20_100 order.
    let (taker, ev) = h.place(gtc(4, Side::Bid, 20_100, 12));
    assert_eq!(taker, 4);
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE, &TRADE, &TRADE]));
    let f = |trade, price, lots, maker, maker_left, taker_left, notional, maker_fee, taker_fee| F {
        trade,
        price,
        lots,
        maker,
        maker_left,
        taker: 4,
        taker_left,
        notional,
        maker_fee,
        taker_fee,
    };
    assert_eq!(fill(&ev[1]), f(1, 20_000, 5, 2, 0, 7, 100_000, 20, 50));
    assert_eq!(level(&ev[6]), (Side::Ask, 20_000, 5, 1));
    assert_eq!(fill(&ev[7]), f(2, 20_000, 5, 3, 0, 2, 100_000, 20, 50));
    assert_eq!(level(&ev[12]), (Side::Ask, 20_000, 0, 0));
    assert_eq!(fill(&ev[13]), f(3, 20_100, 2, 1, 3, 0, 40_200, 8, 20));
    assert_eq!(level(&ev[18]), (Side::Ask, 20_100, 3, 1));
    let first = get!(&ev[1], Fill);
    assert_eq!((first.maker_user_id.get(), first.taker_user_id.get()), (2, 4));
    assert_eq!((first.taker_side.get(), first.market_id.get()), (Ok(Side::Bid), M1));
    // Balance updates of a fill: taker quote, taker base, maker quote, maker base.
    assert_eq!(bal(&ev[2]), (4, USDC, 10_000_000 - 100_050, 0, BalanceChange::Trade));
    assert_eq!(bal(&ev[3]), (4, BTC, 5 * LOT, 0, BalanceChange::Trade));
    assert_eq!(bal(&ev[4]), (2, USDC, 99_980, 0, BalanceChange::Trade));
    assert_eq!(bal(&ev[5]), (2, BTC, 995_000, 0, BalanceChange::Trade));

    // Partial fill: the maker keeps its place with the rest.
    assert_eq!(h.queue(M1, Side::Ask), [(1, 3)]);
    let rest = h.order(M1, 1).unwrap();
    assert_eq!((rest.quantity_lots, rest.filled_lots, rest.remaining_lots, rest.reserved), (5, 2, 3, 3 * LOT));
    assert!(h.queue(M1, Side::Bid).is_empty());
    assert_eq!(h.balance(4, USDC), (10_000_000 - 240_320, 0));
    assert_eq!(h.balance(4, BTC), (12 * LOT, 0));
    assert_eq!(h.balance(1, BTC), (995_000, 3 * LOT));
    assert_eq!(h.balance(1, USDC), (40_192, 0));
    assert_eq!(h.balance(3, USDC), (99_980, 0));
    assert_eq!(h.fees(USDC), 168);

    // Trade ids continue per market: 4 here, 1 on another market.
    h.deposit(5, USDC, 1_000_000);
    let (_, ev) = h.place(gtc(5, Side::Bid, 20_100, 3));
    assert_eq!(fill(&ev[1]), F { taker: 5, ..f(4, 20_100, 3, 1, 0, 0, 60_300, 12, 30) });
    h.deposit(1, ETH, 100_000);
    h.place(c::gtc(1, M2, Side::Ask, 300_000, 2));
    let (_, ev) = h.place(c::gtc(5, M2, Side::Bid, 300_000, 1));
    assert_eq!(get!(&ev[1], Fill).trade_id.get(), 1);
    assert_eq!(get!(&ev[1], Fill).market_id.get(), M2);
    h.place(gtc(1, Side::Ask, 20_000, 1));
    let (_, ev) = h.place(gtc(5, Side::Bid, 20_000, 1));
    assert_eq!(get!(&ev[1], Fill).trade_id.get(), 5);
}

#[test]
fn fifo_within_a_level_on_the_bid_side() {
    let mut h = Harness::new();
    for user in 1..=3 {
        h.deposit(user, USDC, 1_000_000);
    }
    h.deposit(4, BTC, 1_000_000);
    h.place(gtc(1, Side::Bid, 19_990, 2));
    h.place(gtc(2, Side::Bid, 20_000, 2));
    h.place(gtc(3, Side::Bid, 20_000, 2));
    h.place(gtc(1, Side::Bid, 20_000, 2));
    assert_eq!(h.queue(M1, Side::Bid), [(2, 2), (3, 2), (4, 2), (1, 2)]);
    let (_, ev) = h.place(limit(4, Side::Ask, 19_990, 7, TimeInForce::Ioc));
    let makers: Vec<(u64, u64, u64)> =
        ev.iter().filter(|e| e.name() == FILL).map(fill).map(|f| (f.maker, f.price, f.lots)).collect();
    assert_eq!(makers, [(2, 20_000, 2), (3, 20_000, 2), (4, 20_000, 2), (1, 19_990, 1)]);
    assert_eq!(h.queue(M1, Side::Bid), [(1, 1)]);
    assert_eq!(ev.last().map(|e| e.name()), Some(LEVEL), "fully filled IOC: no expiry");
}

// ----------------------------------------------------------------------------------------------
// Time in force, post-only
// ----------------------------------------------------------------------------------------------

#[test]
fn gtc_rests_and_locks_its_reservation() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    let (id, ev) = h.place(with_client_id(gtc(1, Side::Bid, 20_000, 5), 11));
    assert_eq!(names(&ev), [ACCEPTED, BAL, LEVEL]);
    let a = get!(&ev[0], OrderAccepted);
    assert_eq!(
        (a.user_id.get(), a.client_order_id.get(), a.price_ticks.get(), a.quantity_lots.get()),
        (1, 11, 20_000, 5)
    );
    assert_eq!(
        (a.side.get(), a.order_type.get(), a.time_in_force.get()),
        (Ok(Side::Bid), Ok(OrderType::Limit), Ok(TimeInForce::Gtc))
    );
    assert_eq!(bal(&ev[1]), (1, USDC, 899_950, 100_050, BalanceChange::OrderLocked));
    assert_eq!(level(&ev[2]), (Side::Bid, 20_000, 5, 1));
    assert_eq!(h.queue(M1, Side::Bid), [(id, 5)]);
    assert_eq!(h.order(M1, id).unwrap().client_order_id.get(), 11);
}

#[test]
fn ioc_remainder_expires() {
    let mut h = Harness::new();
    h.deposit(1, BTC, 10_000);
    h.deposit(2, USDC, 1_000_000);
    h.place(gtc(1, Side::Ask, 20_000, 3));
    let (id, ev) = h.place(limit(2, Side::Bid, 20_000, 5, TimeInForce::Ioc));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE, &[EXPIRED]]));
    assert_eq!(
        fill(&ev[1]),
        F {
            trade: 1,
            price: 20_000,
            lots: 3,
            maker: 1,
            maker_left: 0,
            taker: id,
            taker_left: 2,
            notional: 60_000,
            maker_fee: 12,
            taker_fee: 30
        }
    );
    assert_eq!(expired(&ev[7]), (id, 3, 2, ExpireReason::ImmediateOrCancel));
    assert!(h.queue(M1, Side::Bid).is_empty() && h.queue(M1, Side::Ask).is_empty());
    assert_eq!(h.balance(2, USDC), (1_000_000 - 60_030, 0));
    assert_eq!(h.balance(2, BTC), (3 * LOT, 0));

    // Nothing to match at all: accepted, then the whole quantity expires; nothing locked.
    let (id, ev) = h.place(limit(2, Side::Bid, 19_000, 5, TimeInForce::Ioc));
    assert_eq!(names(&ev), [ACCEPTED, EXPIRED]);
    assert_eq!(expired(&ev[1]), (id, 0, 5, ExpireReason::ImmediateOrCancel));
    assert_eq!(h.balance(2, USDC), (1_000_000 - 60_030, 0));
}

#[test]
fn fok_fills_completely_or_is_rejected_without_effect() {
    let mut h = Harness::new();
    h.deposit(1, BTC, 10_000);
    h.deposit(3, BTC, 10_000);
    h.deposit(2, USDC, 1_000_000);
    h.place(gtc(1, Side::Ask, 20_000, 5));
    h.place(gtc(3, Side::Ask, 20_010, 5));
    // More than the book holds, and more than the book holds within the limit.
    h.reject(limit(2, Side::Bid, 20_010, 11, TimeInForce::Fok), RejectReason::FillOrKillNotFillable);
    h.reject(limit(2, Side::Bid, 20_000, 8, TimeInForce::Fok), RejectReason::FillOrKillNotFillable);
    h.reject(limit(1, Side::Ask, 1, 1, TimeInForce::Fok), RejectReason::FillOrKillNotFillable);
    assert_eq!(h.queue(M1, Side::Ask), [(1, 5), (2, 5)]);
    assert_eq!(h.balance(2, USDC), (1_000_000, 0));

    let (id, ev) = h.place(limit(2, Side::Bid, 20_010, 8, TimeInForce::Fok));
    assert_eq!(id, 3, "rejected FOKs consumed no order id");
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE, &TRADE]));
    assert_eq!(
        fill(&ev[1]),
        F {
            trade: 1,
            price: 20_000,
            lots: 5,
            maker: 1,
            maker_left: 0,
            taker: 3,
            taker_left: 3,
            notional: 100_000,
            maker_fee: 20,
            taker_fee: 50
        }
    );
    assert_eq!(
        fill(&ev[7]),
        F {
            trade: 2,
            price: 20_010,
            lots: 3,
            maker: 2,
            maker_left: 2,
            taker: 3,
            taker_left: 0,
            notional: 60_030,
            maker_fee: 12,
            taker_fee: 30
        }
    );
    assert_eq!(level(&ev[12]), (Side::Ask, 20_010, 2, 1));
    assert_eq!(h.balance(2, USDC), (1_000_000 - 100_050 - 60_060, 0));
    assert_eq!(h.balance(2, BTC), (8 * LOT, 0));
}

#[test]
fn fok_market_orders() {
    let mut h = Harness::new();
    h.deposit(1, BTC, 10_000);
    h.deposit(2, USDC, 1_000_000);
    h.place(gtc(1, Side::Ask, 20_000, 5));
    let fok = |command| edit(command, |o| o.time_in_force = TimeInForce::Fok.into());
    h.reject(fok(c::market(2, M1, Side::Bid, 6)), RejectReason::FillOrKillNotFillable);
    h.reject(fok(c::market_buy_quote(2, M1, 50_000)), RejectReason::InvalidTimeInForce);
    let (id, ev) = h.place(fok(c::market(2, M1, Side::Bid, 5)));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE]));
    assert_eq!((fill(&ev[1]).taker, fill(&ev[1]).lots, fill(&ev[1]).taker_left), (id, 5, 0));
    assert_eq!(h.balance(2, USDC), (1_000_000 - 100_050, 0));
}

#[test]
fn post_only_is_rejected_when_it_would_take_and_rests_otherwise() {
    let mut h = Harness::new();
    h.deposit(1, BTC, 10_000);
    h.deposit(2, USDC, 1_000_000);
    h.place(gtc(1, Side::Ask, 20_000, 5));
    h.reject(post_only(gtc(2, Side::Bid, 20_000, 5)), RejectReason::PostOnlyWouldTake);
    h.reject(post_only(gtc(2, Side::Bid, 20_001, 1)), RejectReason::PostOnlyWouldTake);
    h.reject(post_only(limit(2, Side::Bid, 19_000, 5, TimeInForce::Ioc)), RejectReason::InvalidTimeInForce);
    h.reject(post_only(limit(2, Side::Bid, 19_000, 5, TimeInForce::Fok)), RejectReason::InvalidTimeInForce);
    h.reject(post_only(c::market(2, M1, Side::Bid, 1)), RejectReason::InvalidOrderType);

    let (id, ev) = h.place(post_only(gtc(2, Side::Bid, 19_999, 5)));
    assert_eq!(names(&ev), [ACCEPTED, BAL, LEVEL]);
    assert_eq!(get!(&ev[0], OrderAccepted).post_only.get(), Ok(Boolean::True));
    assert_eq!(bal(&ev[1]), (2, USDC, 1_000_000 - 100_044, 100_044, BalanceChange::OrderLocked));
    assert_eq!(h.queue(M1, Side::Bid), [(id, 5)]);
    assert!(h.order(M1, id).unwrap().post_only);
}

// ----------------------------------------------------------------------------------------------
// Market orders
// ----------------------------------------------------------------------------------------------

#[test]
fn market_buy_by_base_quantity_walks_the_book() {
    let mut h = Harness::new();
    h.deposit(1, BTC, 10_000);
    h.deposit(3, BTC, 10_000);
    h.deposit(2, USDC, 1_000_000);
    h.place(gtc(1, Side::Ask, 20_000, 5));
    h.place(gtc(3, Side::Ask, 20_010, 5));
    let (id, ev) = h.place(c::market(2, M1, Side::Bid, 7));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE, &TRADE]));
    let a = get!(&ev[0], OrderAccepted);
    assert_eq!((a.order_type.get(), a.price_ticks.get(), a.quantity_lots.get()), (Ok(OrderType::Market), 0, 7));
    let one = F {
        trade: 1,
        price: 20_000,
        lots: 5,
        maker: 1,
        maker_left: 0,
        taker: id,
        taker_left: 2,
        notional: 100_000,
        maker_fee: 20,
        taker_fee: 50,
    };
    assert_eq!(fill(&ev[1]), one);
    let two = F {
        trade: 2,
        price: 20_010,
        lots: 2,
        maker: 2,
        maker_left: 3,
        taker_left: 0,
        notional: 40_020,
        maker_fee: 8,
        taker_fee: 20,
        ..one
    };
    assert_eq!(fill(&ev[7]), two);
    assert_eq!(level(&ev[12]), (Side::Ask, 20_010, 3, 1));
    assert_eq!(h.balance(2, USDC), (1_000_000 - 100_050 - 40_040, 0));
    assert_eq!(h.balance(2, BTC), (7 * LOT, 0));
    assert_eq!(h.queue(M1, Side::Ask), [(2, 3)]);
}

#[test]
fn market_sell_by_base_quantity_and_remainder_without_liquidity_expires() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    h.deposit(3, USDC, 1_000_000);
    h.deposit(2, BTC, 100_000);
    h.place(gtc(1, Side::Bid, 19_990, 5)); // locks 99_950 + 49
    h.place(gtc(3, Side::Bid, 19_980, 5));
    assert_eq!(h.balance(1, USDC), (900_001, 99_999));
    let (id, ev) = h.place(c::market(2, M1, Side::Ask, 8));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE, &TRADE]));
    let one = F {
        trade: 1,
        price: 19_990,
        lots: 5,
        maker: 1,
        maker_left: 0,
        taker: id,
        taker_left: 3,
        notional: 99_950,
        maker_fee: 19,
        taker_fee: 49,
    };
    assert_eq!(fill(&ev[1]), one);
    let two = F {
        trade: 2,
        price: 19_980,
        lots: 3,
        maker: 2,
        maker_left: 2,
        taker_left: 0,
        notional: 59_940,
        maker_fee: 11,
        taker_fee: 29,
        ..one
    };
    assert_eq!(fill(&ev[7]), two);
    assert_eq!(get!(&ev[1], Fill).taker_side.get(), Ok(Side::Ask));
    // Seller: notional minus taker fee. Maker bid: paid notional + maker fee from its
    // reservation, the rest of the reserved taker fee came back.
    assert_eq!(h.balance(2, USDC), (99_901 + 59_911, 0));
    assert_eq!(h.balance(2, BTC), (92_000, 0));
    assert_eq!(h.balance(1, USDC), (1_000_000 - 99_969, 0));
    assert_eq!(h.balance(1, BTC), (5 * LOT, 0));

    // Two lots left on the book; a market sell of 10 takes them and the rest expires.
    let (id, ev) = h.place(c::market(2, M1, Side::Ask, 10));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE, &[EXPIRED]]));
    assert_eq!((fill(&ev[1]).lots, fill(&ev[1]).maker_left), (2, 0));
    assert_eq!(expired(&ev[7]), (id, 2, 8, ExpireReason::NoLiquidity));
    assert_eq!(h.balance(2, BTC), (90_000, 0));
}

/// Whether a fill is marked as completing its taker order.
fn completes(event: &Event) -> bool {
    get!(event, Fill).completes_taker()
}

#[test]
fn market_buy_by_quote_quantity_spends_at_most_notional_plus_fee() {
    let mut h = Harness::new();
    h.deposit(1, BTC, 10_000);
    h.deposit(3, BTC, 10_000);
    h.deposit(2, USDC, 1_000_000);
    h.place(gtc(1, Side::Ask, 20_000, 5));
    h.place(gtc(3, Side::Ask, 20_010, 5));

    // 3 lots at 20_000 cost 60_000 + 30 = 60_030: one unit short buys only 2 (40_020). That is
    // as close to the quote quantity as whole lots allow: the order is filled by that fill.
    let (id, ev) = h.place(c::market_buy_quote(2, M1, 60_029));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE]));
    let a = get!(&ev[0], OrderAccepted);
    assert_eq!((a.quote_quantity.get(), a.quantity_lots.get()), (60_029, 0));
    assert_eq!(
        fill(&ev[1]),
        F {
            trade: 1,
            price: 20_000,
            lots: 2,
            maker: 1,
            maker_left: 3,
            taker: id,
            taker_left: 0,
            notional: 40_000,
            maker_fee: 8,
            taker_fee: 20
        }
    );
    assert!(completes(&ev[1]));
    assert_eq!(h.balance(2, USDC), (1_000_000 - 40_020, 0));

    // Exactly 60_030 buys the remaining 3 lots and stops at the next level: filled.
    let (_, ev) = h.place(c::market_buy_quote(2, M1, 60_030));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE]));
    assert_eq!((fill(&ev[1]).lots, fill(&ev[1]).notional, fill(&ev[1]).taker_fee), (3, 60_000, 30));
    assert!(completes(&ev[1]));
    assert_eq!(h.balance(2, USDC), (1_000_000 - 40_020 - 60_030, 0));

    // 100_000 at 20_010: 4 lots cost 80_040 + 40; 5 would cost 100_100.
    let (_, ev) = h.place(c::market_buy_quote(2, M1, 100_000));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE]));
    assert_eq!((fill(&ev[1]).lots, fill(&ev[1]).notional, fill(&ev[1]).taker_fee), (4, 80_040, 40));
    assert!(completes(&ev[1]));
    assert_eq!(h.balance(2, USDC), (1_000_000 - 180_130, 0));
    assert_eq!(h.balance(2, BTC), (9 * LOT, 0));
    assert_eq!(h.queue(M1, Side::Ask), [(2, 1)]);

    // A quote quantity that cannot pay for one lot at the best price expires unfilled.
    let (id, ev) = h.place(c::market_buy_quote(2, M1, 20_019));
    assert_eq!(names(&ev), [ACCEPTED, EXPIRED]);
    assert_eq!(expired(&ev[1]), (id, 0, 0, ExpireReason::FundsExhausted));

    // The quote quantity must be available.
    h.reject(c::market_buy_quote(2, M1, 1_000_000), RejectReason::InsufficientBalance);
    h.reject(c::market_buy_quote(9, M1, 1), RejectReason::InsufficientBalance);
}

/// Issue #16: a buy by quote quantity across three levels reports every fill as not completing
/// the order except the last, and nothing follows it; consumers read "done" from that flag.
#[test]
fn market_buy_by_quote_quantity_across_levels_completes_on_its_last_fill_only() {
    let mut h = Harness::new();
    for (user, price) in [(1, 20_000), (3, 20_010), (4, 20_020)] {
        h.deposit(user, BTC, 10_000);
        h.place(gtc(user, Side::Ask, price, 2));
    }
    h.deposit(2, USDC, 1_000_000);
    // 2 lots at each of 20_000 and 20_010 (80_020 + 40 fee), then 1 of 3 at 20_020 (20_020 + 10):
    // 100_090 spent; a second lot at 20_020 would need 120_120.
    let (id, ev) = h.place(c::market_buy_quote(2, M1, 120_000));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE, &TRADE, &TRADE]));
    let fills: Vec<(u64, u64, u64, bool)> = [1, 7, 13]
        .iter()
        .map(|&i| (fill(&ev[i]).taker, fill(&ev[i]).price, fill(&ev[i]).lots, completes(&ev[i])))
        .collect();
    assert_eq!(fills, [(id, 20_000, 2, false), (id, 20_010, 2, false), (id, 20_020, 1, true)]);
    assert_eq!(h.balance(2, USDC), (1_000_000 - 100_040 - 50, 0));
    assert_eq!(h.queue(M1, Side::Ask), [(3, 1)]);

    // When the book runs out first, the fills do not complete it and it expires for liquidity.
    let (id, ev) = h.place(c::market_buy_quote(2, M1, 500_000));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE, &[EXPIRED]]));
    assert!(!completes(&ev[1]));
    assert_eq!(expired(&ev[7]), (id, 1, 0, ExpireReason::NoLiquidity));

    // Emptying the book with too little left for another lot at the last price is a fill.
    h.place(gtc(1, Side::Ask, 20_000, 1));
    let (_, ev) = h.place(c::market_buy_quote(2, M1, 20_010 + 20_009));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE]));
    assert!(completes(&ev[1]));
    assert!(h.queue(M1, Side::Ask).is_empty());
}

/// A market sell by quote quantity sells whole lots, best bid first, while the notional (before
/// the fee) stays within the quote quantity, and is filled by its last fill; it expires when the
/// bids or the seller's base run out first.
#[test]
fn market_sell_by_quote_quantity_sells_up_to_its_quote_quantity() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    h.place(gtc(1, Side::Bid, 20_000, 2));
    h.place(gtc(1, Side::Bid, 19_990, 5));
    h.deposit(2, BTC, 10 * LOT);
    // 2 lots at 20_000 (40_000) and 1 at 19_990 (59_990 in all); a 4th lot would make 79_980.
    let (id, ev) = h.place(c::market_sell_quote(2, M1, 79_979));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE, &TRADE]));
    let a = get!(&ev[0], OrderAccepted);
    assert_eq!((a.side.get(), a.quote_quantity.get(), a.quantity_lots.get()), (Ok(Side::Ask), 79_979, 0));
    assert_eq!((fill(&ev[1]).taker, fill(&ev[1]).lots, fill(&ev[1]).taker_left, completes(&ev[1])), (id, 2, 0, false));
    assert_eq!(
        (fill(&ev[7]).lots, fill(&ev[7]).notional, fill(&ev[7]).taker_fee, completes(&ev[7])),
        (1, 19_990, 9, true)
    );
    // Proceeds: 59_990 minus the taker fees 20 + 9.
    assert_eq!(h.balance(2, USDC), (59_990 - 29, 0));
    assert_eq!(h.balance(2, BTC), (7 * LOT, 0));

    // Exactly the notional of the last 4 lots of the book: filled, although the book is now
    // empty (the quote quantity is reached, not the liquidity short).
    let (_, ev) = h.place(c::market_sell_quote(2, M1, 79_960));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE]));
    assert_eq!((fill(&ev[1]).lots, completes(&ev[1])), (4, true));
    assert_eq!(h.balance(2, BTC), (3 * LOT, 0));

    // The seller's base runs out before the quote quantity: it expires for funds, 3 lots sold.
    h.place(gtc(1, Side::Bid, 19_980, 10));
    let (id, ev) = h.place(c::market_sell_quote(2, M1, 1_000_000));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE, &[EXPIRED]]));
    assert_eq!((fill(&ev[1]).lots, completes(&ev[1])), (3, false));
    assert_eq!(expired(&ev[7]), (id, 3, 0, ExpireReason::FundsExhausted));
    assert_eq!(h.balance(2, BTC), (0, 0));

    // The bids run out first: it expires for liquidity.
    h.deposit(2, BTC, 20 * LOT);
    let (id, ev) = h.place(c::market_sell_quote(2, M1, 1_000_000));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE, &[EXPIRED]]));
    assert_eq!(expired(&ev[7]), (id, 7, 0, ExpireReason::NoLiquidity));

    // It needs at least one lot of base, and fill-or-kill is refused as for buys by quote.
    h.reject(c::market_sell_quote(3, M1, 10_000), RejectReason::InsufficientBalance);
    h.deposit(3, BTC, LOT - 1);
    h.place(gtc(1, Side::Bid, 19_000, 1));
    h.reject(c::market_sell_quote(3, M1, 10_000), RejectReason::InsufficientBalance);
    h.reject(
        edit(c::market_sell_quote(2, M1, 10_000), |o| o.time_in_force = TimeInForce::Fok.into()),
        RejectReason::InvalidTimeInForce,
    );
}

#[test]
fn market_order_on_an_empty_book_is_rejected() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    h.deposit(1, BTC, 10_000);
    h.reject(c::market(1, M1, Side::Bid, 1), RejectReason::NoLiquidity);
    h.reject(c::market(1, M1, Side::Ask, 1), RejectReason::NoLiquidity);
    h.reject(c::market_buy_quote(1, M1, 50_000), RejectReason::NoLiquidity);
    // Liquidity on the same side does not count.
    h.place(gtc(1, Side::Bid, 20_000, 1));
    h.reject(c::market(1, M1, Side::Bid, 1), RejectReason::NoLiquidity);
}

#[test]
fn market_buy_running_out_of_funds_expires() {
    let mut h = Harness::new();
    h.deposit(1, BTC, 10_000);
    h.deposit(2, USDC, 50_000);
    h.place(gtc(1, Side::Ask, 20_000, 5));
    // 20_010 per lot with fee: 2 lots (40_020) affordable, 3 (60_030) not.
    let (id, ev) = h.place(c::market(2, M1, Side::Bid, 5));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE, &[EXPIRED]]));
    assert_eq!((fill(&ev[1]).lots, fill(&ev[1]).taker_left), (2, 3));
    assert_eq!(expired(&ev[7]), (id, 2, 3, ExpireReason::FundsExhausted));
    assert_eq!(h.balance(2, USDC), (50_000 - 40_020, 0));
    assert_eq!(h.queue(M1, Side::Ask), [(1, 3)]);
}

#[test]
fn market_order_shape_is_checked() {
    let mut h = Harness::new();
    h.deposit(1, BTC, 10_000);
    h.deposit(2, USDC, 1_000_000);
    h.place(gtc(1, Side::Ask, 20_000, 5));
    h.reject(
        edit(c::market(2, M1, Side::Bid, 1), |o| o.price_ticks = Ticks::new(20_000)),
        RejectReason::InvalidOrderType,
    );
    h.reject(
        edit(c::market(1, M1, Side::Ask, 1), |o| o.quote_quantity = Amount::new(1_000)),
        RejectReason::InvalidOrderType,
    );
    h.reject(
        edit(c::market(2, M1, Side::Bid, 1), |o| o.quote_quantity = Amount::new(1_000)),
        RejectReason::InvalidOrderType,
    );
    h.reject(c::market(2, M1, Side::Bid, 0), RejectReason::InvalidQuantity);
    h.reject(
        edit(gtc(2, Side::Bid, 20_000, 1), |o| o.quote_quantity = Amount::new(1_000)),
        RejectReason::InvalidOrderType,
    );
}

// ----------------------------------------------------------------------------------------------
// Cancels
// ----------------------------------------------------------------------------------------------

#[test]
fn cancel_by_order_id_releases_the_reservation() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    let (id, _) = h.place(gtc(1, Side::Bid, 20_000, 5));
    assert_eq!(h.balance(1, USDC), (899_950, 100_050));
    let ev = h.ok(c::cancel(1, M1, id));
    assert_eq!(names(&ev), [CANCELED, LEVEL, BAL]);
    assert_eq!(canceled(&ev[0]), (id, 1, 0, 5, CancelReason::UserRequested));
    let x = get!(&ev[0], OrderCanceled);
    assert_eq!((x.side.get(), x.market_id.get()), (Ok(Side::Bid), M1));
    assert_eq!(level(&ev[1]), (Side::Bid, 20_000, 0, 0));
    assert_eq!(bal(&ev[2]), (1, USDC, 1_000_000, 0, BalanceChange::OrderReleased));
    assert_eq!(h.balance(1, USDC), (1_000_000, 0));
    assert!(h.queue(M1, Side::Bid).is_empty());
    h.reject(c::cancel(1, M1, id), RejectReason::UnknownOrder);
}

#[test]
fn cancel_by_client_id_and_after_a_partial_fill() {
    let mut h = Harness::new();
    h.deposit(1, BTC, 100_000);
    h.deposit(2, USDC, 1_000_000);
    let (id, _) = h.place(with_client_id(gtc(1, Side::Ask, 20_000, 10), 42));
    h.place(limit(2, Side::Bid, 20_000, 4, TimeInForce::Ioc));
    assert_eq!(h.balance(1, BTC), (90_000, 6 * LOT));
    let ev = h.ok(cancel_by_client_id(1, M1, 42));
    assert_eq!(names(&ev), [CANCELED, LEVEL, BAL]);
    assert_eq!(canceled(&ev[0]), (id, 1, 4, 6, CancelReason::UserRequested));
    assert_eq!(get!(&ev[0], OrderCanceled).client_order_id.get(), 42);
    assert_eq!(level(&ev[1]), (Side::Ask, 20_000, 0, 0));
    assert_eq!(bal(&ev[2]), (1, BTC, 96_000, 0, BalanceChange::OrderReleased));
    assert_eq!(h.balance(1, BTC), (96_000, 0));
    assert_eq!(h.balance(1, USDC), (80_000 - 16, 0));
    h.reject(cancel_by_client_id(1, M1, 42), RejectReason::UnknownOrder);
}

#[test]
fn maker_bid_partial_fill_returns_the_unused_fee_reservation_and_cancel_restores_the_rest() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    h.deposit(2, BTC, 100_000);
    let (id, _) = h.place(gtc(1, Side::Bid, 20_000, 10));
    assert_eq!(h.balance(1, USDC), (799_900, 200_100));
    // 4 lots: the maker pays 80_000 + 16 from its reservation; the remaining 6 lots need
    // 120_000 + 60; the 24 left over return to available.
    let (_, ev) = h.place(limit(2, Side::Ask, 20_000, 4, TimeInForce::Ioc));
    assert_eq!((fill(&ev[1]).maker_fee, fill(&ev[1]).taker_fee), (16, 40));
    assert_eq!(bal(&ev[4]), (1, USDC, 799_924, 120_060, BalanceChange::Trade));
    assert_eq!(h.order(M1, id).unwrap().reserved, 120_060);
    let ev = h.ok(c::cancel(1, M1, id));
    assert_eq!(canceled(&ev[0]), (id, 1, 4, 6, CancelReason::UserRequested));
    assert_eq!(bal(&ev[2]), (1, USDC, 1_000_000 - 80_016, 0, BalanceChange::OrderReleased));
    assert_eq!(h.balance(1, BTC), (4 * LOT, 0));
    assert_eq!(h.balance(2, USDC), (80_000 - 40, 0));
    assert_eq!(h.fees(USDC), 56);
}

#[test]
fn cancel_of_unknown_order_is_rejected() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    let (id, _) = h.place(with_client_id(gtc(1, Side::Bid, 20_000, 5), 5));
    h.reject(c::cancel(1, M1, 999), RejectReason::UnknownOrder);
    h.reject(cancel_by_client_id(1, M1, 6), RejectReason::UnknownOrder);
    h.reject(cancel_by_client_id(1, M1, 0), RejectReason::UnknownOrder);
    // Right id, wrong market.
    h.reject(c::cancel(1, M2, id), RejectReason::UnknownOrder);
    h.reject(cancel_by_client_id(1, M2, 5), RejectReason::UnknownOrder);
    h.reject(c::cancel(1, 9, id), RejectReason::UnknownMarket);
    assert_eq!(h.queue(M1, Side::Bid), [(id, 5)]);
}

#[test]
fn cancel_of_another_users_order_is_refused_and_the_order_stays() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    let (id, _) = h.place(with_client_id(gtc(1, Side::Bid, 20_000, 5), 5));
    h.reject(c::cancel(2, M1, id), RejectReason::NotOrderOwner);
    // By client id a user only ever finds their own orders.
    h.reject(cancel_by_client_id(2, M1, 5), RejectReason::UnknownOrder);
    h.reject(c::replace(2, M1, id, 19_000, 0), RejectReason::NotOrderOwner);
    assert_eq!(mass_report(&h.ok(c::mass_cancel(2, M1, SideFilter::Both))), [(2, M1, 0)], "nothing of user 1's");
    assert_eq!(h.queue(M1, Side::Bid), [(id, 5)]);
    assert_eq!(h.balance(1, USDC), (899_950, 100_050));
}

/// User 1: bids 19_000 (id 1) and 18_000 (id 5) and an ask 21_000 (id 2) on BTC_USDC, a bid on
/// ETH_USDC (id 3); user 2: a bid 19_000 (id 4) on BTC_USDC. One lot each.
fn mass_cancel_setup() -> Harness {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    h.deposit(1, BTC, 100_000);
    h.deposit(2, USDC, 1_000_000);
    h.place(gtc(1, Side::Bid, 19_000, 1));
    h.place(gtc(1, Side::Ask, 21_000, 1));
    h.place(c::gtc(1, M2, Side::Bid, 19_000, 1));
    h.place(gtc(2, Side::Bid, 19_000, 1));
    h.place(gtc(1, Side::Bid, 18_000, 1));
    // 19_009 + 19_009 + 18_009 locked.
    assert_eq!(h.balance(1, USDC), (943_973, 56_027));
    assert_eq!(h.balance(1, BTC), (99_000, 1_000));
    h
}

/// The (user, market, count) of each MassCancelReport.
fn mass_report(events: &[Event]) -> Vec<(u64, u32, u32)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MassCancelReport(r) => Some((r.user_id.get(), r.market_id.get(), r.canceled_count.get())),
            _ => None,
        })
        .collect()
}

fn canceled_ids(events: &[Event]) -> Vec<(u64, u32)> {
    events
        .iter()
        .filter(|e| e.name() == CANCELED)
        .map(|e| get!(e, OrderCanceled))
        .map(|x| (x.order_id.get(), x.market_id.get()))
        .collect()
}

#[test]
fn mass_cancel_per_market() {
    let mut h = mass_cancel_setup();
    let ev = h.ok(c::mass_cancel(1, M1, SideFilter::Both));
    assert_eq!(names(&ev), [CANCELED, LEVEL, BAL, CANCELED, LEVEL, BAL, CANCELED, LEVEL, BAL, "MassCancelReport"]);
    assert_eq!(mass_report(&ev), [(1, M1, 3)], "the report comes last and counts the cancels");
    assert_eq!(canceled(&ev[0]), (1, 1, 0, 1, CancelReason::MassCancel));
    assert_eq!(level(&ev[1]), (Side::Bid, 19_000, 1, 1));
    assert_eq!(bal(&ev[2]), (1, USDC, 962_982, 37_018, BalanceChange::OrderReleased));
    assert_eq!(canceled(&ev[3]), (2, 1, 0, 1, CancelReason::MassCancel));
    assert_eq!(level(&ev[4]), (Side::Ask, 21_000, 0, 0));
    assert_eq!(bal(&ev[5]), (1, BTC, 100_000, 0, BalanceChange::OrderReleased));
    assert_eq!(canceled(&ev[6]), (5, 1, 0, 1, CancelReason::MassCancel));
    assert_eq!(level(&ev[7]), (Side::Bid, 18_000, 0, 0));
    assert_eq!(bal(&ev[8]), (1, USDC, 980_991, 19_009, BalanceChange::OrderReleased));
    assert_eq!(h.queue(M1, Side::Bid), [(4, 1)]);
    assert!(h.queue(M1, Side::Ask).is_empty());
    assert_eq!(h.queue(M2, Side::Bid), [(3, 1)]);
    // Nothing left to cancel there: only the report (a count of 0), not a rejection.
    assert_eq!(mass_report(&h.ok(c::mass_cancel(1, M1, SideFilter::Both))), [(1, M1, 0)]);
}

#[test]
fn mass_cancel_all_markets() {
    let mut h = mass_cancel_setup();
    let ev = h.ok(c::mass_cancel(1, 0, SideFilter::Both));
    assert_eq!(ev.len(), 13);
    assert_eq!(mass_report(&ev), [(1, 0, 4)]);
    assert_eq!(canceled_ids(&ev), [(1, M1), (2, M1), (5, M1), (3, M2)]);
    assert!(ev.iter().filter(|e| e.name() == CANCELED).all(|e| canceled(e).4 == CancelReason::MassCancel));
    assert_eq!(h.balance(1, USDC), (1_000_000, 0));
    assert_eq!(h.balance(1, BTC), (100_000, 0));
    assert_eq!(h.queue(M1, Side::Bid), [(4, 1)]);
    assert!(h.queue(M2, Side::Bid).is_empty());
    assert_eq!(h.balance(2, USDC), (1_000_000 - 19_009, 19_009));
}

#[test]
fn mass_cancel_by_side() {
    let mut h = mass_cancel_setup();
    let ev = h.ok(c::mass_cancel(1, 0, SideFilter::Ask));
    assert_eq!(canceled_ids(&ev), [(2, M1)]);
    assert_eq!(h.balance(1, BTC), (100_000, 0));
    let ev = h.ok(c::mass_cancel(1, M1, SideFilter::Bid));
    assert_eq!(canceled_ids(&ev), [(1, M1), (5, M1)]);
    assert_eq!(h.queue(M1, Side::Bid), [(4, 1)]);
    assert_eq!(h.queue(M2, Side::Bid), [(3, 1)]);
    assert_eq!(h.balance(1, USDC), (1_000_000 - 19_009, 19_009));
    h.reject(c::mass_cancel(1, 9, SideFilter::Both), RejectReason::UnknownMarket);
    let bad_side = with_raw_byte(c::mass_cancel(1, M2, SideFilter::Both), core::mem::offset_of!(MassCancel, side), 3);
    h.reject(bad_side, RejectReason::InvalidEnumValue);
}

// ----------------------------------------------------------------------------------------------
// Cancel-replace
// ----------------------------------------------------------------------------------------------

#[test]
fn replace_reducing_quantity_keeps_priority() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    h.deposit(2, USDC, 1_000_000);
    h.deposit(3, BTC, 100_000);
    let (first, _) = h.place(gtc(1, Side::Bid, 20_000, 10));
    let (second, _) = h.place(gtc(2, Side::Bid, 20_000, 10));
    let ev = h.ok(c::replace(1, M1, first, 0, 6));
    assert_eq!(names(&ev), [REPLACED, LEVEL, BAL]);
    assert_eq!(replaced(&ev[0]), (first, 20_000, 6, 0, 6, true));
    assert_eq!(level(&ev[1]), (Side::Bid, 20_000, 16, 2));
    // Reservation 200_100 → 120_060.
    assert_eq!(bal(&ev[2]), (1, USDC, 879_940, 120_060, BalanceChange::OrderReleased));
    assert_eq!(h.queue(M1, Side::Bid), [(first, 6), (second, 10)]);
    // Naming the unchanged price explicitly is the same reduction.
    let ev = h.ok(c::replace(1, M1, first, 20_000, 5));
    assert_eq!(replaced(&ev[0]), (first, 20_000, 5, 0, 5, true));
    assert_eq!(bal(&ev[2]), (1, USDC, 899_950, 100_050, BalanceChange::OrderReleased));
    assert_eq!(h.queue(M1, Side::Bid), [(first, 5), (second, 10)]);
    // The reduced order is still first to trade.
    let (_, ev) = h.place(limit(3, Side::Ask, 20_000, 6, TimeInForce::Ioc));
    let makers: Vec<(u64, u64)> = ev.iter().filter(|e| e.name() == FILL).map(fill).map(|f| (f.maker, f.lots)).collect();
    assert_eq!(makers, [(first, 5), (second, 1)]);
}

#[test]
fn replace_increasing_quantity_loses_priority() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    h.deposit(2, USDC, 1_000_000);
    let (first, _) = h.place(gtc(1, Side::Bid, 20_000, 10));
    let (second, _) = h.place(gtc(2, Side::Bid, 20_000, 10));
    let ev = h.ok(c::replace(1, M1, first, 0, 12));
    assert_eq!(names(&ev), [REPLACED, LEVEL, BAL, BAL, LEVEL]);
    assert_eq!(replaced(&ev[0]), (first, 20_000, 12, 0, 12, false));
    assert_eq!(level(&ev[1]), (Side::Bid, 20_000, 10, 1));
    assert_eq!(bal(&ev[2]), (1, USDC, 1_000_000, 0, BalanceChange::OrderReleased));
    assert_eq!(bal(&ev[3]), (1, USDC, 759_880, 240_120, BalanceChange::OrderLocked));
    assert_eq!(level(&ev[4]), (Side::Bid, 20_000, 22, 2));
    assert_eq!(h.queue(M1, Side::Bid), [(second, 10), (first, 12)]);
}

#[test]
fn replace_changing_price_loses_priority() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    h.deposit(2, USDC, 1_000_000);
    let (first, _) = h.place(gtc(1, Side::Bid, 20_000, 10));
    let (second, _) = h.place(gtc(2, Side::Bid, 19_990, 10));
    let ev = h.ok(c::replace(1, M1, first, 19_990, 0));
    assert_eq!(names(&ev), [REPLACED, LEVEL, BAL, BAL, LEVEL]);
    assert_eq!(replaced(&ev[0]), (first, 19_990, 10, 0, 10, false));
    assert_eq!(level(&ev[1]), (Side::Bid, 20_000, 0, 0));
    assert_eq!(bal(&ev[2]), (1, USDC, 1_000_000, 0, BalanceChange::OrderReleased));
    assert_eq!(bal(&ev[3]), (1, USDC, 800_001, 199_999, BalanceChange::OrderLocked));
    assert_eq!(level(&ev[4]), (Side::Bid, 19_990, 20, 2));
    assert_eq!(h.queue(M1, Side::Bid), [(second, 10), (first, 10)]);
    // A price change loses priority even when the quantity shrinks.
    let ev = h.ok(c::replace(2, M1, second, 19_995, 5));
    assert_eq!(replaced(&ev[0]), (second, 19_995, 5, 0, 5, false));
    assert_eq!(h.queue(M1, Side::Bid), [(second, 5), (first, 10)]);
}

#[test]
fn replace_to_a_crossing_price_trades_then_rests() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    h.deposit(2, BTC, 100_000);
    let (bid, _) = h.place(gtc(1, Side::Bid, 19_990, 5));
    let (ask, _) = h.place(gtc(2, Side::Ask, 20_000, 3));
    let ev = h.ok(c::replace(1, M1, bid, 20_000, 0));
    assert_eq!(names(&ev), seq(&[&[REPLACED, LEVEL, BAL], &TRADE, &[BAL, LEVEL]]));
    assert_eq!(replaced(&ev[0]), (bid, 20_000, 5, 0, 5, false));
    assert_eq!(level(&ev[1]), (Side::Bid, 19_990, 0, 0));
    assert_eq!(bal(&ev[2]), (1, USDC, 1_000_000, 0, BalanceChange::OrderReleased));
    assert_eq!(
        fill(&ev[3]),
        F {
            trade: 1,
            price: 20_000,
            lots: 3,
            maker: ask,
            maker_left: 0,
            taker: bid,
            taker_left: 2,
            notional: 60_000,
            maker_fee: 12,
            taker_fee: 30
        }
    );
    assert_eq!(level(&ev[8]), (Side::Ask, 20_000, 0, 0));
    assert_eq!(bal(&ev[9]), (1, USDC, 1_000_000 - 60_030 - 40_020, 40_020, BalanceChange::OrderLocked));
    assert_eq!(level(&ev[10]), (Side::Bid, 20_000, 2, 1));
    let rest = h.order(M1, bid).unwrap();
    assert_eq!((rest.quantity_lots, rest.filled_lots, rest.remaining_lots, rest.reserved), (5, 3, 2, 40_020));
    assert_eq!(h.balance(1, BTC), (3 * LOT, 0));
    assert_eq!(h.balance(2, USDC), (59_988, 0));
}

#[test]
fn replace_to_quantity_not_above_filled_or_without_change_is_invalid() {
    let mut h = Harness::new();
    h.deposit(1, BTC, 100_000);
    h.deposit(2, USDC, 1_000_000);
    let (id, _) = h.place(gtc(1, Side::Ask, 20_000, 10));
    h.place(limit(2, Side::Bid, 20_000, 4, TimeInForce::Ioc));
    h.reject(c::replace(1, M1, id, 0, 4), RejectReason::InvalidReplace);
    h.reject(c::replace(1, M1, id, 0, 3), RejectReason::InvalidReplace);
    h.reject(c::replace(1, M1, id, 21_000, 4), RejectReason::InvalidReplace);
    h.reject(c::replace(1, M1, id, 0, 0), RejectReason::InvalidReplace);
    h.reject(c::replace(1, M1, id, 20_000, 10), RejectReason::InvalidReplace);
    h.reject(c::replace(1, M1, id, 20_000, 0), RejectReason::InvalidReplace);
    // Quantity is the total including the filled part: 5 leaves one lot open.
    let ev = h.ok(c::replace(1, M1, id, 0, 5));
    assert_eq!(names(&ev), [REPLACED, LEVEL, BAL]);
    assert_eq!(replaced(&ev[0]), (id, 20_000, 5, 4, 1, true));
    assert_eq!(level(&ev[1]), (Side::Ask, 20_000, 1, 1));
    assert_eq!(bal(&ev[2]), (1, BTC, 95_000, 1_000, BalanceChange::OrderReleased));
}

#[test]
fn replace_of_a_post_only_order_to_a_crossing_price_is_rejected() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    h.deposit(2, BTC, 100_000);
    let (id, _) = h.place(post_only(gtc(1, Side::Bid, 19_990, 5)));
    h.place(gtc(2, Side::Ask, 20_000, 3));
    h.reject(c::replace(1, M1, id, 20_000, 0), RejectReason::PostOnlyWouldTake);
    h.reject(c::replace(1, M1, id, 20_001, 2), RejectReason::PostOnlyWouldTake);
    let ev = h.ok(c::replace(1, M1, id, 19_995, 0));
    assert_eq!(replaced(&ev[0]), (id, 19_995, 5, 0, 5, false));
    assert!(h.order(M1, id).unwrap().post_only);
    assert_eq!(h.queue(M1, Side::Ask), [(2, 3)]);
}

#[test]
fn replace_needing_more_funds_than_available_is_rejected() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 200_100);
    let (id, _) = h.place(gtc(1, Side::Bid, 20_000, 10));
    assert_eq!(h.balance(1, USDC), (0, 200_100));
    h.reject(c::replace(1, M1, id, 0, 11), RejectReason::InsufficientBalance);
    // 200_010 + 100 > 200_100.
    h.reject(c::replace(1, M1, id, 20_001, 0), RejectReason::InsufficientBalance);
    // 199_990 + 99 fits.
    let ev = h.ok(c::replace(1, M1, id, 19_999, 0));
    assert_eq!(names(&ev), [REPLACED, LEVEL, BAL, BAL, LEVEL]);
    assert_eq!(bal(&ev[3]), (1, USDC, 11, 200_089, BalanceChange::OrderLocked));

    h.deposit(2, BTC, 10_000);
    let (ask, _) = h.place(gtc(2, Side::Ask, 21_000, 10));
    h.reject(c::replace(2, M1, ask, 0, 11), RejectReason::InsufficientBalance);
    h.reject(c::replace(2, M1, 999, 0, 5), RejectReason::UnknownOrder);
    h.reject(c::replace(2, 9, ask, 0, 5), RejectReason::UnknownMarket);
}

// ----------------------------------------------------------------------------------------------
// Self-trade prevention
// ----------------------------------------------------------------------------------------------

/// User 1 ask 5 @ 20_000 (id 1), then user 2 ask 5 @ 20_000 (id 2); user 1 then buys 5 @ 20_000
/// (id 3) with `mode`.
fn self_trade(mode: SelfTradePrevention) -> (Harness, Vec<Event>) {
    let mut h = Harness::new();
    h.deposit(1, BTC, 100_000);
    h.deposit(1, USDC, 1_000_000);
    h.deposit(2, BTC, 100_000);
    h.place(gtc(1, Side::Ask, 20_000, 5));
    h.place(gtc(2, Side::Ask, 20_000, 5));
    let (id, ev) = h.place(with_stp(gtc(1, Side::Bid, 20_000, 5), mode));
    assert_eq!(id, 3);
    (h, ev)
}

#[test]
fn self_trade_reject_taker_cancels_the_incoming_order() {
    let (h, ev) = self_trade(SelfTradePrevention::RejectTaker);
    assert_eq!(names(&ev), [ACCEPTED, CANCELED]);
    assert_eq!(canceled(&ev[1]), (3, 1, 0, 5, CancelReason::SelfTradePrevention));
    assert_eq!(get!(&ev[1], OrderCanceled).side.get(), Ok(Side::Bid));
    assert_eq!(h.queue(M1, Side::Ask), [(1, 5), (2, 5)]);
    assert!(h.queue(M1, Side::Bid).is_empty());
    assert_eq!(h.balance(1, USDC), (1_000_000, 0));
    assert_eq!(h.balance(1, BTC), (95_000, 5_000));
}

#[test]
fn self_trade_reject_taker_after_a_partial_fill() {
    let mut h = Harness::new();
    h.deposit(1, BTC, 100_000);
    h.deposit(1, USDC, 1_000_000);
    h.deposit(2, BTC, 100_000);
    h.place(gtc(2, Side::Ask, 20_000, 3));
    h.place(gtc(1, Side::Ask, 20_000, 5));
    let (id, ev) = h.place(gtc(1, Side::Bid, 20_000, 5)); // RejectTaker is the kit's default
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE, &[CANCELED]]));
    assert_eq!((fill(&ev[1]).maker, fill(&ev[1]).lots, fill(&ev[1]).taker_left), (1, 3, 2));
    assert_eq!(canceled(&ev[7]), (id, 1, 3, 2, CancelReason::SelfTradePrevention));
    assert_eq!(h.queue(M1, Side::Ask), [(2, 5)]);
    assert!(h.queue(M1, Side::Bid).is_empty());
    assert_eq!(h.balance(1, USDC), (1_000_000 - 60_030, 0));
    // A fill-or-kill that self-trade prevention would stop is refused outright.
    h.reject(limit(1, Side::Bid, 20_000, 1, TimeInForce::Fok), RejectReason::SelfTradePrevented);
}

#[test]
fn self_trade_reject_maker_cancels_the_resting_order_and_continues() {
    let (h, ev) = self_trade(SelfTradePrevention::RejectMaker);
    assert_eq!(names(&ev), seq(&[&[ACCEPTED, CANCELED, LEVEL, BAL], &TRADE]));
    assert_eq!(canceled(&ev[1]), (1, 1, 0, 5, CancelReason::SelfTradePrevention));
    assert_eq!(get!(&ev[1], OrderCanceled).side.get(), Ok(Side::Ask));
    assert_eq!(level(&ev[2]), (Side::Ask, 20_000, 5, 1));
    assert_eq!(bal(&ev[3]), (1, BTC, 100_000, 0, BalanceChange::OrderReleased));
    assert_eq!(
        fill(&ev[4]),
        F {
            trade: 1,
            price: 20_000,
            lots: 5,
            maker: 2,
            maker_left: 0,
            taker: 3,
            taker_left: 0,
            notional: 100_000,
            maker_fee: 20,
            taker_fee: 50
        }
    );
    assert_eq!(level(&ev[9]), (Side::Ask, 20_000, 0, 0));
    assert!(h.queue(M1, Side::Ask).is_empty() && h.queue(M1, Side::Bid).is_empty());
    assert_eq!(h.balance(1, BTC), (105_000, 0));
    assert_eq!(h.balance(1, USDC), (899_950, 0));
    assert_eq!(h.balance(2, USDC), (99_980, 0));
    assert_eq!(h.balance(2, BTC), (95_000, 0));
}

#[test]
fn self_trade_reject_both_cancels_both_orders() {
    let (h, ev) = self_trade(SelfTradePrevention::RejectBoth);
    assert_eq!(names(&ev), [ACCEPTED, CANCELED, LEVEL, BAL, CANCELED]);
    assert_eq!(canceled(&ev[1]), (1, 1, 0, 5, CancelReason::SelfTradePrevention));
    assert_eq!(level(&ev[2]), (Side::Ask, 20_000, 5, 1));
    assert_eq!(bal(&ev[3]), (1, BTC, 100_000, 0, BalanceChange::OrderReleased));
    assert_eq!(canceled(&ev[4]), (3, 1, 0, 5, CancelReason::SelfTradePrevention));
    assert_eq!(h.queue(M1, Side::Ask), [(2, 5)]);
    assert!(h.queue(M1, Side::Bid).is_empty());
    assert_eq!(h.balance(1, USDC), (1_000_000, 0));
}

#[test]
fn self_trade_allow_trades_and_charges_both_fees() {
    let (h, ev) = self_trade(SelfTradePrevention::Allow);
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE]));
    assert_eq!(
        fill(&ev[1]),
        F {
            trade: 1,
            price: 20_000,
            lots: 5,
            maker: 1,
            maker_left: 0,
            taker: 3,
            taker_left: 0,
            notional: 100_000,
            maker_fee: 20,
            taker_fee: 50
        }
    );
    let f = get!(&ev[1], Fill);
    assert_eq!((f.maker_user_id.get(), f.taker_user_id.get()), (1, 1));
    assert_eq!(bal(&ev[2]), (1, USDC, 999_930, 0, BalanceChange::Trade));
    assert_eq!(bal(&ev[3]), (1, BTC, 100_000, 0, BalanceChange::Trade));
    assert_eq!(h.balance(1, USDC), (1_000_000 - 70, 0));
    assert_eq!(h.balance(1, BTC), (100_000, 0));
    assert_eq!(h.fees(USDC), 70);
    assert_eq!(h.queue(M1, Side::Ask), [(2, 5)]);
}

// ----------------------------------------------------------------------------------------------
// Client order ids
// ----------------------------------------------------------------------------------------------

#[test]
fn client_order_id_is_unique_among_open_orders_and_reusable_after() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    h.deposit(1, BTC, 100_000);
    h.deposit(2, USDC, 1_000_000);
    h.deposit(3, USDC, 1_000_000);
    let (id, _) = h.place(with_client_id(gtc(1, Side::Bid, 19_000, 1), 7));
    let rejected = h.reject(with_client_id(gtc(1, Side::Bid, 19_500, 2), 7), RejectReason::DuplicateClientOrderId);
    assert_eq!(rejected.client_order_id.get(), 7);
    h.reject(with_client_id(limit(1, Side::Bid, 19_000, 1, TimeInForce::Ioc), 7), RejectReason::DuplicateClientOrderId);
    h.reject(with_client_id(gtc(1, Side::Ask, 25_000, 1), 7), RejectReason::DuplicateClientOrderId);
    // Other users and other markets have their own ids; 0 means "none" and never clashes.
    h.place(with_client_id(gtc(2, Side::Bid, 19_000, 1), 7));
    h.place(with_client_id(c::gtc(1, M2, Side::Bid, 19_000, 1), 7));
    h.place(gtc(1, Side::Bid, 19_000, 1));
    h.place(gtc(1, Side::Bid, 19_000, 1));
    // Reusable after a cancel.
    h.ok(c::cancel(1, M1, id));
    let (again, _) = h.place(with_client_id(gtc(1, Side::Bid, 19_100, 1), 7));
    assert_eq!(h.order(M1, again).unwrap().client_order_id.get(), 7);
    // Reusable after a complete fill.
    let (ask, _) = h.place(with_client_id(gtc(1, Side::Ask, 20_000, 1), 9));
    h.place(limit(3, Side::Bid, 20_000, 1, TimeInForce::Ioc));
    assert!(h.order(M1, ask).is_none());
    h.place(with_client_id(gtc(1, Side::Ask, 20_000, 1), 9));
}

// ----------------------------------------------------------------------------------------------
// Balances and fees
// ----------------------------------------------------------------------------------------------

#[test]
fn bid_locks_notional_plus_taker_fee_ask_locks_base() {
    let mut h = Harness::new();
    // 10 @ 12_345: notional 123_450, taker fee floor(61.725) = 61.
    assert_eq!(fee(123_450, 500), 61);
    h.deposit(1, USDC, 123_510);
    h.reject(gtc(1, Side::Bid, 12_345, 10), RejectReason::InsufficientBalance);
    assert_eq!(h.balance(1, USDC), (123_510, 0));
    h.deposit(1, USDC, 1);
    let (_, ev) = h.place(gtc(1, Side::Bid, 12_345, 10));
    assert_eq!(bal(&ev[1]), (1, USDC, 0, 123_511, BalanceChange::OrderLocked));

    h.deposit(2, BTC, 6_999);
    h.reject(gtc(2, Side::Ask, 30_000, 7), RejectReason::InsufficientBalance);
    h.deposit(2, BTC, 1);
    let (ask, ev) = h.place(gtc(2, Side::Ask, 30_000, 7));
    assert_eq!(bal(&ev[1]), (2, BTC, 0, 7 * LOT, BalanceChange::OrderLocked));
    assert_eq!(h.order(M1, ask).unwrap().reserved, 7 * LOT);

    // A taker must afford the whole order at its limit price (217_000 + 108), even though it
    // would trade at the better resting price.
    h.deposit(3, USDC, 217_107);
    h.reject(gtc(3, Side::Bid, 31_000, 7), RejectReason::InsufficientBalance);
    h.reject(limit(3, Side::Bid, 31_000, 7, TimeInForce::Ioc), RejectReason::InsufficientBalance);
    assert_eq!(h.queue(M1, Side::Ask), [(ask, 7)]);
}

#[test]
fn buy_taker_filling_at_a_better_price_keeps_the_difference() {
    let mut h = Harness::new();
    h.deposit(1, BTC, 100_000);
    h.deposit(2, USDC, 1_000_000);
    h.place(gtc(1, Side::Ask, 20_000, 10));
    // Limit 21_000 × 15; 10 trade at 20_000 (200_000 + 100), 5 rest at 21_000 (105_000 + 52).
    let (id, ev) = h.place(gtc(2, Side::Bid, 21_000, 15));
    assert_eq!(names(&ev), seq(&[&[ACCEPTED], &TRADE, &[BAL, LEVEL]]));
    assert_eq!((fill(&ev[1]).price, fill(&ev[1]).notional, fill(&ev[1]).taker_fee), (20_000, 200_000, 100));
    assert_eq!(bal(&ev[2]), (2, USDC, 799_900, 0, BalanceChange::Trade));
    assert_eq!(bal(&ev[7]), (2, USDC, 694_848, 105_052, BalanceChange::OrderLocked));
    assert_eq!(level(&ev[8]), (Side::Bid, 21_000, 5, 1));
    assert_eq!(h.queue(M1, Side::Bid), [(id, 5)]);
    // Cancelling the rest gives back everything not spent on the fill.
    h.ok(c::cancel(2, M1, id));
    assert_eq!(h.balance(2, USDC), (1_000_000 - 200_100, 0));
    assert_eq!(h.balance(2, BTC), (10 * LOT, 0));
}

#[test]
fn fees_are_rounded_down_and_credited_to_the_fee_account() {
    let mut h = Harness::new();
    h.deposit(1, BTC, 100_000);
    h.deposit(2, USDC, 1_000_000);
    h.deposit(3, USDC, 200_000);
    // 7 @ 17_637 = 123_459: maker fee floor(24.6918) = 24, taker fee floor(61.7295) = 61.
    assert_eq!((fee(123_459, 200), fee(123_459, 500)), (24, 61));
    h.place(gtc(1, Side::Ask, 17_637, 7));
    let (_, ev) = h.place(gtc(2, Side::Bid, 17_637, 7));
    assert_eq!((fill(&ev[1]).notional, fill(&ev[1]).maker_fee, fill(&ev[1]).taker_fee), (123_459, 24, 61));
    assert_eq!(h.balance(1, USDC), (123_435, 0));
    assert_eq!(h.balance(1, BTC), (93_000, 0));
    assert_eq!(h.balance(2, USDC), (1_000_000 - 123_520, 0));
    assert_eq!(h.balance(2, BTC), (7_000, 0));
    assert_eq!(h.fees(USDC), 85);
    assert_eq!(h.fees(BTC), 0);

    // A maker bid pays notional + maker fee from its reservation (notional + taker fee); the
    // difference (37) returns to available.
    h.place(gtc(3, Side::Bid, 17_637, 7));
    assert_eq!(h.balance(3, USDC), (200_000 - 123_520, 123_520));
    let (_, ev) = h.place(limit(2, Side::Ask, 17_637, 7, TimeInForce::Ioc));
    assert_eq!((fill(&ev[1]).maker_fee, fill(&ev[1]).taker_fee), (24, 61));
    assert_eq!(bal(&ev[4]), (3, USDC, 200_000 - 123_483, 0, BalanceChange::Trade));
    assert_eq!(h.balance(3, USDC), (76_517, 0));
    assert_eq!(h.balance(3, BTC), (7_000, 0));
    assert_eq!(h.balance(2, USDC), (1_000_000 - 123_520 + 123_398, 0));
    assert_eq!(h.balance(2, BTC), (0, 0));
    assert_eq!(h.fees(USDC), 170);
}

#[test]
fn conservation_holds_with_explicit_sums() {
    let mut h = Harness::new();
    h.deposit(1, BTC, 100_000);
    h.deposit(2, USDC, 1_000_000);
    h.deposit(3, USDC, 500_000);
    h.place(gtc(1, Side::Ask, 17_637, 7));
    h.place(gtc(1, Side::Ask, 18_000, 3));
    h.place(gtc(2, Side::Bid, 18_000, 8)); // 7 @ 17_637, 1 @ 18_000
    h.place(gtc(3, Side::Bid, 17_000, 4));
    h.ok(c::withdraw(2, BTC, 2_000));
    h.ok(c::withdraw(3, USDC, 100_000));

    let fees = h.fees(USDC);
    assert_eq!(fees, 24 + 61 + fee(18_000, 200) + fee(18_000, 500));
    assert_eq!(fees, 85 + 3 + 9);
    for (asset, deposited, withdrawn) in [(BTC, 100_000u64, 2_000u64), (USDC, 1_500_000, 100_000)] {
        assert_eq!(h.engine.ledger().flows(AssetId::new(asset)), (u128::from(deposited), u128::from(withdrawn)));
        let mut held = 0u64;
        h.engine.ledger().visit_balances(&mut |_, a, balance| {
            if a.get() == asset {
                held += balance.available + balance.locked;
            }
        });
        let explicit: u64 = (1..=3).map(|user| h.balance(user, asset)).map(|(a, l)| a + l).sum();
        assert_eq!(held, explicit);
        assert_eq!(held + h.fees(asset), deposited - withdrawn, "asset {asset}");
    }
    // The individual balances behind those sums.
    assert_eq!(h.balance(1, BTC), (90_000, 2_000));
    assert_eq!(h.balance(1, USDC), (123_459 - 24 + 18_000 - 3, 0));
    assert_eq!(h.balance(2, BTC), (6_000, 0));
    assert_eq!(h.balance(2, USDC), (1_000_000 - 123_520 - 18_009, 0));
    assert_eq!(h.balance(3, USDC), (400_000 - 68_034, 68_034));
}

// ----------------------------------------------------------------------------------------------
// Deposits and withdrawals
// ----------------------------------------------------------------------------------------------

#[test]
fn deposits_and_withdrawals() {
    let mut h = Harness::new();
    let ev = h.ok(c::deposit(1, BTC, 5_000));
    assert_eq!(names(&ev), [BAL]);
    assert_eq!(bal(&ev[0]), (1, BTC, 5_000, 0, BalanceChange::Deposit));
    h.deposit(1, BTC, 2_000);
    h.reject(c::deposit(1, BTC, 0), RejectReason::AmountZero);
    h.reject(c::withdraw(1, BTC, 0), RejectReason::AmountZero);
    h.reject(c::deposit(1, 4, 10), RejectReason::UnknownAsset);
    h.reject(c::withdraw(1, 4, 10), RejectReason::UnknownAsset);
    h.reject(c::deposit(1, u32::MAX, 10), RejectReason::UnknownAsset);

    // Funds locked in an order cannot be withdrawn.
    h.place(gtc(1, Side::Ask, 20_000, 6));
    assert_eq!(h.balance(1, BTC), (1_000, 6_000));
    h.reject(c::withdraw(1, BTC, 1_001), RejectReason::InsufficientBalance);
    h.reject(c::withdraw(1, BTC, 7_000), RejectReason::InsufficientBalance);
    let ev = h.ok(c::withdraw(1, BTC, 1_000));
    assert_eq!(names(&ev), [BAL]);
    assert_eq!(bal(&ev[0]), (1, BTC, 0, 6_000, BalanceChange::Withdrawal));
    h.reject(c::withdraw(1, BTC, 1), RejectReason::InsufficientBalance);
    h.reject(c::withdraw(1, USDC, 1), RejectReason::InsufficientBalance);
    h.reject(c::withdraw(2, BTC, 1), RejectReason::InsufficientBalance);
    assert_eq!(h.engine.ledger().flows(AssetId::new(BTC)), (7_000, 1_000));
    // The asset's outstanding total must fit in u64.
    h.deposit(3, USDC, u64::MAX);
    h.reject(c::deposit(4, USDC, 1), RejectReason::ArithmeticOverflow);
}

// ----------------------------------------------------------------------------------------------
// Market halts
// ----------------------------------------------------------------------------------------------

fn status(event: &Event) -> (u32, bool) {
    let changed = get!(event, MarketStatusChanged);
    (changed.market_id.get(), bool::from(changed.halted.get().unwrap()))
}

#[test]
fn a_halted_market_refuses_orders_and_replaces_but_allows_cancels() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    h.deposit(2, BTC, 100_000);
    let (bid, _) = h.place(gtc(1, Side::Bid, 1_000, 10));
    let (other, _) = h.place(gtc(1, Side::Bid, 990, 5));
    let (third, _) = h.place(gtc(1, Side::Bid, 980, 5));
    let open_hash = h.engine.state_hash();

    let ev = h.ok(c::market_control(M1, true));
    assert_eq!(ev.len(), 1);
    assert_eq!(status(&ev[0]), (M1, true));
    assert_eq!(h.engine.is_halted(MarketId::new(M1)), Some(true));
    assert_eq!(h.engine.is_halted(MarketId::new(M2)), Some(false));
    assert_ne!(h.engine.state_hash(), open_hash, "the halted flag is part of the state");
    // Halting again changes nothing but is still answered.
    let hash = h.engine.state_hash();
    assert_eq!(status(&h.ok(c::market_control(M1, true))[0]), (M1, true));
    assert_eq!(h.engine.state_hash(), hash);

    h.reject(gtc(2, Side::Ask, 1_000, 1), RejectReason::MarketHalted);
    h.reject(c::market(2, M1, Side::Ask, 1), RejectReason::MarketHalted);
    h.reject(c::replace(1, M1, bid, 1_001, 0), RejectReason::MarketHalted);
    // Resting orders stay; cancels and mass cancels work.
    assert!(h.balance(1, USDC).1 > 0);
    let ev = h.ok(c::cancel(1, M1, bid));
    assert_eq!(get!(&ev[0], OrderCanceled).order_id.get(), bid);
    let ev = h.ok(c::mass_cancel(1, M1, SideFilter::Both));
    assert_eq!(get!(ev.last().unwrap(), MassCancelReport).canceled_count.get(), 2);
    let _ = (other, third);
    assert_eq!(h.balance(1, USDC), (1_000_000, 0));
    // Other markets trade on.
    h.deposit(3, ETH, 100_000);
    h.place(c::gtc(3, M2, Side::Ask, 1_000, 1));

    let ev = h.ok(c::market_control(M1, false));
    assert_eq!(status(&ev[0]), (M1, false));
    assert_ne!(h.engine.state_hash(), open_hash, "orders were cancelled meanwhile");
    h.place(gtc(2, Side::Ask, 1_000, 1));

    h.reject(c::market_control(99, true), RejectReason::UnknownMarket);
    h.reject(c::market_control(0, false), RejectReason::UnknownMarket);
    let bad = with_raw_byte(c::market_control(M1, true), core::mem::offset_of!(MarketControl, action), 7);
    h.reject(bad, RejectReason::InvalidEnumValue);
}

// ----------------------------------------------------------------------------------------------
// Limits and field checks
// ----------------------------------------------------------------------------------------------

#[test]
fn too_many_open_orders_per_user_per_market() {
    let mut config = EngineConfig::sample();
    config.limits.open_orders_per_user_max = 2;
    let mut h = Harness::with_config(config);
    h.deposit(1, USDC, 1_000_000);
    h.deposit(2, USDC, 1_000_000);
    let (first, _) = h.place(gtc(1, Side::Bid, 19_000, 1));
    h.place(gtc(1, Side::Bid, 19_100, 1));
    h.reject(gtc(1, Side::Bid, 19_200, 1), RejectReason::TooManyOpenOrders);
    // Per user and per market.
    h.place(gtc(2, Side::Bid, 19_200, 1));
    h.place(c::gtc(1, M2, Side::Bid, 19_200, 1));
    h.ok(c::cancel(1, M1, first));
    h.place(gtc(1, Side::Bid, 19_200, 1));
}

#[test]
fn book_full() {
    let mut config = EngineConfig::sample();
    config.limits.orders_per_market_max = 2;
    let mut h = Harness::with_config(config);
    h.deposit(1, USDC, 1_000_000);
    h.deposit(2, USDC, 1_000_000);
    h.deposit(3, BTC, 100_000);
    let (first, _) = h.place(gtc(1, Side::Bid, 19_000, 1));
    h.place(gtc(2, Side::Bid, 19_000, 1));
    h.reject(gtc(3, Side::Ask, 21_000, 1), RejectReason::BookFull);
    h.reject(gtc(1, Side::Bid, 19_000, 1), RejectReason::BookFull);
    h.place(c::gtc(1, M2, Side::Bid, 19_000, 1));
    h.ok(c::cancel(1, M1, first));
    h.place(gtc(3, Side::Ask, 21_000, 1));
}

#[test]
fn quantity_bounds() {
    let mut config = EngineConfig::sample();
    config.markets[0].min_quantity_lots = 5;
    config.markets[0].max_quantity_lots = 100;
    let mut h = Harness::with_config(config);
    h.deposit(1, USDC, 10_000_000);
    h.deposit(2, BTC, 1_000_000);
    h.reject(gtc(1, Side::Bid, 20_000, 4), RejectReason::QuantityBelowMinimum);
    h.reject(gtc(1, Side::Bid, 20_000, 101), RejectReason::QuantityAboveMaximum);
    h.reject(gtc(1, Side::Bid, 20_000, 0), RejectReason::InvalidQuantity);
    let (id, _) = h.place(gtc(1, Side::Bid, 20_000, 5));
    h.place(gtc(1, Side::Bid, 19_000, 100));
    h.reject(c::market(2, M1, Side::Ask, 4), RejectReason::QuantityBelowMinimum);
    h.reject(c::market(2, M1, Side::Ask, 101), RejectReason::QuantityAboveMaximum);
    h.reject(c::replace(1, M1, id, 0, 4), RejectReason::QuantityBelowMinimum);
    h.reject(c::replace(1, M1, id, 0, 101), RejectReason::QuantityAboveMaximum);

    // The sample's own maximum.
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    h.reject(gtc(1, Side::Bid, 1, 1_000_000_001), RejectReason::QuantityAboveMaximum);
}

#[test]
fn notional_below_minimum() {
    let mut config = EngineConfig::sample();
    config.markets[0].min_notional = 100_000;
    let mut h = Harness::with_config(config);
    h.deposit(1, USDC, 1_000_000);
    h.deposit(2, BTC, 100_000);
    h.reject(gtc(1, Side::Bid, 20_000, 4), RejectReason::NotionalBelowMinimum);
    h.reject(gtc(2, Side::Ask, 24_999, 4), RejectReason::NotionalBelowMinimum);
    let (id, _) = h.place(gtc(1, Side::Bid, 20_000, 5));
    h.place(gtc(2, Side::Ask, 25_000, 4));
    h.reject(c::replace(1, M1, id, 0, 4), RejectReason::NotionalBelowMinimum);
    h.reject(c::replace(1, M1, id, 19_999, 0), RejectReason::NotionalBelowMinimum);
}

#[test]
fn invalid_price_and_unknown_market() {
    let mut h = Harness::new();
    h.deposit(1, USDC, 2_000_000_000);
    let (id, _) = h.place(gtc(1, Side::Bid, 1, 1));
    h.reject(gtc(1, Side::Bid, 0, 1), RejectReason::InvalidPrice);
    h.reject(gtc(1, Side::Bid, 1_000_000_001, 1), RejectReason::InvalidPrice);
    h.reject(limit(1, Side::Bid, 0, 1, TimeInForce::Ioc), RejectReason::InvalidPrice);
    h.reject(c::replace(1, M1, id, 1_000_000_001, 0), RejectReason::InvalidPrice);
    h.place(gtc(1, Side::Bid, 1_000_000_000, 1)); // the maximum itself is valid
    h.reject(c::gtc(1, 0, Side::Bid, 20_000, 1), RejectReason::UnknownMarket);
    h.reject(c::gtc(1, 4, Side::Bid, 20_000, 1), RejectReason::UnknownMarket);
    h.reject(c::market(1, 4, Side::Bid, 1), RejectReason::UnknownMarket);
    h.reject(c::replace(1, 4, id, 2, 0), RejectReason::UnknownMarket);
    h.reject(c::mass_cancel(1, 4, SideFilter::Both), RejectReason::UnknownMarket);
}

#[test]
fn invalid_enum_codes_in_a_new_order() {
    use core::mem::offset_of;
    let mut h = Harness::new();
    h.deposit(1, USDC, 1_000_000);
    let order = gtc(1, Side::Bid, 20_000, 1);
    // The byte patching itself is sound: a valid code goes through.
    h.place(with_raw_byte(order, offset_of!(NewOrder, side), 1));
    for (offset, code) in [
        (offset_of!(NewOrder, side), 0),
        (offset_of!(NewOrder, side), 3),
        (offset_of!(NewOrder, side), 9),
        (offset_of!(NewOrder, order_type), 0),
        (offset_of!(NewOrder, order_type), 3),
        (offset_of!(NewOrder, time_in_force), 0),
        (offset_of!(NewOrder, time_in_force), 4),
        (offset_of!(NewOrder, self_trade_prevention), 4),
        (offset_of!(NewOrder, self_trade_prevention), 255),
        (offset_of!(NewOrder, post_only), 2),
    ] {
        let command = with_raw_byte(order, offset, code);
        let Command::NewOrder(raw) = command else { unreachable!() };
        assert!(
            raw.side.get().is_err()
                || raw.order_type.get().is_err()
                || raw.time_in_force.get().is_err()
                || raw.self_trade_prevention.get().is_err()
                || raw.post_only.get().is_err()
        );
        h.reject(command, RejectReason::InvalidEnumValue);
    }
}

// ----------------------------------------------------------------------------------------------
// Rejections in general
// ----------------------------------------------------------------------------------------------

#[test]
fn every_rejection_is_one_event_and_changes_nothing() {
    let mut config = EngineConfig::sample();
    config.markets[0].min_quantity_lots = 2;
    config.markets[0].max_quantity_lots = 1_000;
    config.markets[0].min_notional = 1_000;
    let mut h = Harness::with_config(config);
    h.deposit(1, USDC, 1_000_000);
    h.deposit(1, BTC, 100_000);
    h.deposit(2, BTC, 100_000);
    h.deposit(3, USDC, 10);
    let (bid, _) = h.place(with_client_id(post_only(gtc(1, Side::Bid, 19_990, 10)), 1));
    let (ask, _) = h.place(gtc(2, Side::Ask, 20_000, 10));
    let (own_ask, _) = h.place(gtc(1, Side::Ask, 20_010, 2));
    let hash = h.engine.state_hash();
    let market_sell = |user, lots| c::market(user, M1, Side::Ask, lots);
    let cases: Vec<(Command, RejectReason)> = vec![
        (c::gtc(1, 7, Side::Bid, 20_000, 2), RejectReason::UnknownMarket),
        (gtc(1, Side::Bid, 0, 2), RejectReason::InvalidPrice),
        (gtc(1, Side::Bid, 20_000, 0), RejectReason::InvalidQuantity),
        (gtc(1, Side::Bid, 20_000, 1), RejectReason::QuantityBelowMinimum),
        (gtc(1, Side::Bid, 20_000, 1_001), RejectReason::QuantityAboveMaximum),
        (gtc(1, Side::Bid, 499, 2), RejectReason::NotionalBelowMinimum),
        (edit(market_sell(1, 2), |o| o.price_ticks = Ticks::new(1)), RejectReason::InvalidOrderType),
        (post_only(limit(1, Side::Bid, 19_000, 2, TimeInForce::Ioc)), RejectReason::InvalidTimeInForce),
        (with_client_id(gtc(1, Side::Bid, 19_000, 2), 1), RejectReason::DuplicateClientOrderId),
        (gtc(3, Side::Bid, 19_000, 2), RejectReason::InsufficientBalance),
        (gtc(3, Side::Ask, 21_000, 2), RejectReason::InsufficientBalance),
        (post_only(gtc(1, Side::Bid, 20_000, 2)), RejectReason::PostOnlyWouldTake),
        (limit(1, Side::Bid, 20_000, 11, TimeInForce::Fok), RejectReason::FillOrKillNotFillable),
        (limit(1, Side::Bid, 20_010, 12, TimeInForce::Fok), RejectReason::SelfTradePrevented),
        (c::market(1, M2, Side::Ask, 1), RejectReason::InsufficientBalance),
        (c::cancel(1, M1, 999), RejectReason::UnknownOrder),
        (c::cancel(2, M1, bid), RejectReason::NotOrderOwner),
        (cancel_by_client_id(2, M1, 1), RejectReason::UnknownOrder),
        (c::cancel(1, 9, bid), RejectReason::UnknownMarket),
        (c::replace(1, M1, bid, 0, 0), RejectReason::InvalidReplace),
        (c::replace(1, M1, bid, 20_000, 0), RejectReason::PostOnlyWouldTake),
        (c::replace(2, M1, ask, 0, 101), RejectReason::InsufficientBalance),
        (c::replace(2, M1, own_ask, 0, 5), RejectReason::NotOrderOwner),
        (c::mass_cancel(1, 9, SideFilter::Both), RejectReason::UnknownMarket),
        (c::deposit(1, BTC, 0), RejectReason::AmountZero),
        (c::deposit(1, 9, 1), RejectReason::UnknownAsset),
        (c::withdraw(3, USDC, 11), RejectReason::InsufficientBalance),
    ];
    for (command, reason) in cases {
        h.reject(command, reason);
    }
    assert_eq!(h.engine.state_hash(), hash);
    assert_eq!(h.engine.next_order_id().get(), 4);
}
