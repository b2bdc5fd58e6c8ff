//! The REST gateway's side of the engine: per-user balance and open-order views kept from the
//! egress events, and the dispatcher thread that completes waiting requests.
//!
//! Requests are correlated by origin: each command a REST handler puts on the ingress ring
//! carries `origin::tag(origin::REST, request_id)`; the dispatcher collects the events published
//! with that origin and hands them to the waiting handler once it sees the command's last event
//! (`Published::last_of_command`). Views are updated *before* the waiter is completed, so a
//! response is never older than the views a following request reads.

use crate::history::{ClosedStatus, FillRecord, History, TransferRecord};
use codec::BalanceChange;
use codec::{
    AssetId, ClientOrderId, Event, MarketId, OrderId, OrderType, SelfTradePrevention, Side, TimeInForce, UserId,
};
use engine::bus::{Consumer, ReadError, origin};
use engine::doorbell::{Idle, consumer_idle};
use engine::latency::{CommandTrace, clock_ns};
use engine::order_table::{OrderTable, OrderTerms};
use engine::{Book, Engine, EngineConfig, Ledger};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::oneshot;

/// An open order as the REST API shows it, in engine units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOrder {
    /// Exchange id.
    pub order_id: OrderId,
    /// Client id (0: none).
    pub client_order_id: ClientOrderId,
    /// Market.
    pub market_id: MarketId,
    /// Side.
    pub side: Side,
    /// Order type.
    pub order_type: OrderType,
    /// Limit price in ticks (0 for market orders).
    pub price_ticks: u64,
    /// Total quantity in lots.
    pub quantity_lots: u64,
    /// Quote quantity (market buys by quote), minor units.
    pub quote_quantity: u64,
    /// Filled so far, lots.
    pub filled_lots: u64,
    /// Quote traded so far, minor units (0 for orders seeded from a recovered book: unknown).
    pub executed_quote: u64,
    /// Time in force.
    pub time_in_force: TimeInForce,
    /// Self-trade prevention.
    pub self_trade_prevention: SelfTradePrevention,
    /// Post-only.
    pub post_only: bool,
    /// Acceptance time, ns (0 for orders seeded from a recovered book: unknown).
    pub created_ns: u64,
    /// Trigger price in ticks while the order is a pending trigger order (status
    /// `TriggerPending`); 0 once it is placed, and for every other order.
    pub trigger_price_ticks: u64,
    /// The stop-loss / take-profit attached to the order when it was accepted (all zero: none).
    pub attached: AttachedTriggers,
}

/// An order's attached stop-loss / take-profit prices in ticks, as it was accepted with them
/// (Backpack's `stopLossTriggerPrice`, `stopLossLimitPrice`, `takeProfitTriggerPrice`,
/// `takeProfitLimitPrice`); zero: not set. A limit price of zero makes that child a market order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttachedTriggers {
    /// Stop-loss trigger price, ticks.
    pub stop_loss_trigger_ticks: u64,
    /// Stop-loss limit price, ticks.
    pub stop_loss_limit_ticks: u64,
    /// Take-profit trigger price, ticks.
    pub take_profit_trigger_ticks: u64,
    /// Take-profit limit price, ticks.
    pub take_profit_limit_ticks: u64,
}

impl AttachedTriggers {
    /// What an `OrderAccepted` event says the order carries.
    pub fn of_accepted(accepted: &codec::OrderAccepted) -> Self {
        Self {
            stop_loss_trigger_ticks: accepted.stop_loss_trigger_ticks.get(),
            stop_loss_limit_ticks: accepted.stop_loss_limit_ticks.get(),
            take_profit_trigger_ticks: accepted.take_profit_trigger_ticks.get(),
            take_profit_limit_ticks: accepted.take_profit_limit_ticks.get(),
        }
    }

    /// The engine's record of a resting parent's attachment.
    pub fn of_attachment(attachment: &engine::triggers::Attachment) -> Self {
        Self {
            stop_loss_trigger_ticks: attachment.stop_loss_trigger_ticks,
            stop_loss_limit_ticks: attachment.stop_loss_limit_ticks,
            take_profit_trigger_ticks: attachment.take_profit_trigger_ticks,
            take_profit_limit_ticks: attachment.take_profit_limit_ticks,
        }
    }

    /// Backpack's field names with their prices in ticks, in that order (zero: not set).
    pub fn fields(&self) -> [(&'static str, u64); 4] {
        [
            ("stopLossTriggerPrice", self.stop_loss_trigger_ticks),
            ("stopLossLimitPrice", self.stop_loss_limit_ticks),
            ("takeProfitTriggerPrice", self.take_profit_trigger_ticks),
            ("takeProfitLimitPrice", self.take_profit_limit_ticks),
        ]
    }
}

/// What the views keep of an open order besides its id (the table's key) and the two fields
/// that are zero for almost every order ([`OrderExtras`]): 56 bytes (its small enums and flag
/// share one byte, [`OrderTerms`]), so an entry costs 60 (with the 4 bytes of its id the
/// [`OrderTable`] keeps) instead of the 96 a whole [`OpenOrder`] with its id repeated as the key
/// took (issue #18, lean views).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OrderRecord {
    client_order_id: ClientOrderId,
    price_ticks: u64,
    quantity_lots: u64,
    filled_lots: u64,
    executed_quote: u64,
    created_ns: u64,
    market_id: MarketId,
    terms: OrderTerms,
}

/// Bytes of an [`OrderRecord`] (checked at compile time: the views' memory per order depends on it).
const ORDER_RECORD_BYTES_MAX: usize = 56;
const _: () = assert!(std::mem::size_of::<OrderRecord>() <= ORDER_RECORD_BYTES_MAX);

/// The fields of an open order that only some orders have (a quote quantity: market buys by
/// quote; a trigger price: pending trigger orders; an attached stop-loss / take-profit), kept apart
/// so that the others do not pay for them. Never all zero in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct OrderExtras {
    quote_quantity: u64,
    trigger_price_ticks: u64,
    attached: AttachedTriggers,
}

impl OrderExtras {
    fn of(order: &OpenOrder) -> Self {
        Self {
            quote_quantity: order.quote_quantity,
            trigger_price_ticks: order.trigger_price_ticks,
            attached: order.attached,
        }
    }

    fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

impl OrderRecord {
    fn of(order: &OpenOrder) -> Self {
        Self {
            client_order_id: order.client_order_id,
            price_ticks: order.price_ticks,
            quantity_lots: order.quantity_lots,
            filled_lots: order.filled_lots,
            executed_quote: order.executed_quote,
            created_ns: order.created_ns,
            market_id: order.market_id,
            terms: OrderTerms::new(
                order.side,
                order.order_type,
                order.time_in_force,
                order.self_trade_prevention,
                order.post_only,
            ),
        }
    }

    /// The whole order: this record with its id and extras.
    fn open_order(&self, order_id: u64, extras: OrderExtras) -> OpenOrder {
        OpenOrder {
            order_id: OrderId::new(order_id),
            client_order_id: self.client_order_id,
            market_id: self.market_id,
            side: self.terms.side(),
            order_type: self.terms.order_type(),
            price_ticks: self.price_ticks,
            quantity_lots: self.quantity_lots,
            quote_quantity: extras.quote_quantity,
            filled_lots: self.filled_lots,
            executed_quote: self.executed_quote,
            time_in_force: self.terms.time_in_force(),
            self_trade_prevention: self.terms.self_trade_prevention(),
            post_only: self.terms.post_only(),
            created_ns: self.created_ns,
            trigger_price_ticks: extras.trigger_price_ticks,
            attached: extras.attached,
        }
    }
}

/// One user's open orders by id: [`OrderRecord`]s, and [`OrderExtras`] for the orders that have
/// any. Both tables hold ids in increasing order; an id is in `extras` only if it is in `records`.
#[derive(Debug, Default)]
struct UserOrders {
    records: OrderTable<OrderRecord>,
    extras: OrderTable<OrderExtras>,
}

impl UserOrders {
    /// Orders in any order; of two with one id the later wins.
    fn from_unsorted(orders: Vec<OpenOrder>) -> Self {
        let extras: Vec<(u64, OrderExtras)> =
            orders.iter().map(|order| (order.order_id.get(), OrderExtras::of(order))).collect();
        let records = OrderTable::from_unsorted(
            orders.iter().map(|order| (order.order_id.get(), OrderRecord::of(order))).collect(),
        );
        // The later of two records with one id wins, extras included; zero extras are dropped
        // after that choice, so an earlier non-zero one cannot survive a later zero one.
        let mut extras_table = OrderTable::from_unsorted(extras);
        let zero: Vec<u64> = extras_table.iter().filter(|(_, e)| e.is_zero()).map(|(id, _)| id).collect();
        for id in zero {
            extras_table.remove(id);
        }
        Self { records, extras: extras_table }
    }

    /// Adds an order, or replaces the one with its id (a fired trigger order's acceptance
    /// replaces its pending entry, and its trigger price with it).
    fn insert(&mut self, order: &OpenOrder) {
        let id = order.order_id.get();
        self.records.insert(id, OrderRecord::of(order));
        let extras = OrderExtras::of(order);
        if extras.is_zero() {
            self.extras.remove(id);
        } else {
            self.extras.insert(id, extras);
        }
    }

    fn extras_of(&self, order_id: u64) -> OrderExtras {
        self.extras.get(order_id).copied().unwrap_or_default()
    }

    fn get(&self, order_id: u64) -> Option<OpenOrder> {
        self.records.get(order_id).map(|record| record.open_order(order_id, self.extras_of(order_id)))
    }

    /// The stored record of an order, to update in place (the extras never change in place).
    fn record_mut(&mut self, order_id: u64) -> Option<&mut OrderRecord> {
        self.records.get_mut(order_id)
    }

    fn remove(&mut self, order_id: u64) -> Option<OpenOrder> {
        let record = self.records.remove(order_id)?;
        let extras = self.extras.remove(order_id).unwrap_or_default();
        Some(record.open_order(order_id, extras))
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every order, by id (both tables are sorted by id: one merge pass).
    fn iter(&self) -> impl Iterator<Item = OpenOrder> + '_ {
        let mut extras = self.extras.iter().peekable();
        self.records.iter().map(move |(id, record)| {
            while extras.next_if(|(extra_id, _)| *extra_id < id).is_some() {}
            let found = extras.next_if(|(extra_id, _)| *extra_id == id).map(|(_, e)| *e).unwrap_or_default();
            record.open_order(id, found)
        })
    }
}

/// Per-user balances and open orders, maintained by the dispatcher from the egress events.
#[derive(Debug, Default)]
pub struct AccountViews {
    balances: RwLock<HashMap<UserId, BTreeMap<AssetId, engine::Balance>>>,
    /// Open orders by user, then by order id: [`UserOrders`] per user (`Vec`s of compact
    /// records, appended to in id order), not a B-tree that appends leave half full.
    orders: RwLock<HashMap<UserId, UserOrders>>,
    stale: AtomicBool,
    history: History,
}

impl AccountViews {
    /// Empty views (a fresh engine).
    pub fn new() -> Self {
        Self::default()
    }

    /// Views seeded from a (recovered) engine: balances from its ledger, open orders from its
    /// books. Call before the engine thread starts and follow the egress ring from its start.
    pub fn from_engine<B: Book>(engine: &Engine<B>, config: &EngineConfig) -> Self {
        let views = Self::from_ledger(engine.ledger(), config);
        views.seed_orders(engine);
        views
    }

    /// Views whose balances are seeded from `ledger` (assets of `config`); no open orders.
    pub fn from_ledger(ledger: &Ledger, config: &EngineConfig) -> Self {
        let views = Self::new();
        {
            let mut balances = write(&views.balances);
            ledger.visit_balances(&mut |user, asset, balance| {
                if (asset.get() as usize) < config.assets.len() && balance != engine::Balance::default() {
                    balances.entry(user).or_default().insert(asset, balance);
                }
            });
        }
        views
    }

    /// Replaces the open orders with the resting orders of `engine`'s books.
    pub fn seed_orders<B: Book>(&self, engine: &Engine<B>) {
        // Books are visited in priority order, not by id: collect per user, then sort once.
        let mut orders: HashMap<UserId, Vec<OpenOrder>> = HashMap::new();
        let mut market = 0u32;
        engine.visit_markets(&mut |_, book| {
            market += 1;
            for side in [Side::Bid, Side::Ask] {
                book.visit_in_priority(side, &mut |resting| {
                    orders.entry(resting.user_id).or_default().push(OpenOrder {
                        order_id: resting.order_id,
                        client_order_id: resting.client_order_id,
                        market_id: MarketId::new(market),
                        side: resting.side,
                        order_type: OrderType::Limit,
                        price_ticks: resting.price.get(),
                        quantity_lots: resting.quantity_lots,
                        quote_quantity: 0,
                        filled_lots: resting.filled_lots,
                        executed_quote: 0,
                        time_in_force: TimeInForce::Gtc,
                        self_trade_prevention: resting.self_trade_prevention,
                        post_only: resting.post_only,
                        created_ns: 0,
                        trigger_price_ticks: 0,
                        attached: AttachedTriggers::default(),
                    });
                    true
                });
            }
        });
        for market in 1..=engine.market_count() as u32 {
            let Some(triggers) = engine.triggers(MarketId::new(market)) else { continue };
            for trigger in triggers.iter() {
                orders.entry(trigger.user_id).or_default().push(OpenOrder {
                    order_id: trigger.order_id,
                    client_order_id: trigger.client_order_id,
                    market_id: MarketId::new(market),
                    side: trigger.side,
                    order_type: trigger.order_type,
                    price_ticks: trigger.price_ticks,
                    quantity_lots: trigger.quantity_lots,
                    quote_quantity: trigger.quote_quantity,
                    filled_lots: 0,
                    executed_quote: 0,
                    time_in_force: trigger.time_in_force,
                    self_trade_prevention: trigger.self_trade_prevention,
                    post_only: trigger.post_only,
                    created_ns: 0,
                    trigger_price_ticks: trigger.trigger_price_ticks,
                    attached: AttachedTriggers::default(),
                });
            }
            // A recovered parent's attached stop-loss / take-profit (its OrderAccepted is in the
            // journal's past, the attachment in the engine's state).
            for attachment in triggers.attachments() {
                if let Some(records) = orders.get_mut(&attachment.user_id)
                    && let Some(order) = records.iter_mut().find(|order| order.order_id == attachment.parent_order_id)
                {
                    order.attached = AttachedTriggers::of_attachment(attachment);
                }
            }
        }
        *write(&self.orders) =
            orders.into_iter().map(|(user, records)| (user, UserOrders::from_unsorted(records))).collect();
    }

    /// A user's non-zero balances by asset.
    pub fn balances(&self, user: UserId) -> BTreeMap<AssetId, engine::Balance> {
        read(&self.balances).get(&user).cloned().unwrap_or_default()
    }

    /// A user's open orders, by id (oldest first), optionally of one market.
    pub fn open_orders(&self, user: UserId, market: Option<MarketId>) -> Vec<OpenOrder> {
        read(&self.orders)
            .get(&user)
            .map(|orders| orders.iter().filter(|o| market.is_none_or(|m| o.market_id == m)).collect())
            .unwrap_or_default()
    }

    /// One of a user's open orders on a market, by exchange id or (when `order_id` is 0) client id.
    pub fn find(
        &self,
        user: UserId,
        market: MarketId,
        order_id: OrderId,
        client_order_id: ClientOrderId,
    ) -> Option<OpenOrder> {
        let orders = read(&self.orders);
        let orders = orders.get(&user)?;
        if order_id != OrderId::ZERO {
            orders.get(order_id.get()).filter(|o| o.market_id == market)
        } else {
            orders.iter().find(|o| o.market_id == market && o.client_order_id == client_order_id)
        }
    }

    /// The users' fills, closed orders, deposits and withdrawals (bounded, newest first).
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Whether events were lost (the dispatcher lagged): the views may be wrong until restart.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }

    /// Applies one engine event.
    pub fn apply(&self, event: &Event) {
        match event {
            Event::BalanceUpdate(update) => {
                let balance = engine::Balance { available: update.available.get(), locked: update.locked.get() };
                let before = write(&self.balances)
                    .entry(update.user_id)
                    .or_default()
                    .insert(update.asset_id, balance)
                    .unwrap_or_default();
                // The event carries the new balance; the amount moved is the change of `available`.
                let transfer = |amount: u64| TransferRecord {
                    id: update.sequence.get(),
                    asset_id: update.asset_id,
                    amount,
                    timestamp_ns: update.timestamp_ns.get(),
                    details: None,
                };
                match update.reason.get() {
                    Ok(BalanceChange::Deposit) => self
                        .history
                        .record_deposit(update.user_id, transfer(balance.available.saturating_sub(before.available))),
                    Ok(BalanceChange::Withdrawal) => self.history.record_withdrawal(
                        update.user_id,
                        transfer(before.available.saturating_sub(balance.available)),
                    ),
                    _ => {}
                }
            }
            Event::OrderAccepted(accepted) => {
                let (Ok(side), Ok(order_type), Ok(time_in_force), Ok(self_trade_prevention)) = (
                    accepted.side.get(),
                    accepted.order_type.get(),
                    accepted.time_in_force.get(),
                    accepted.self_trade_prevention.get(),
                ) else {
                    return;
                };
                let order = OpenOrder {
                    order_id: accepted.order_id,
                    client_order_id: accepted.client_order_id,
                    market_id: accepted.market_id,
                    side,
                    order_type,
                    price_ticks: accepted.price_ticks.get(),
                    quantity_lots: accepted.quantity_lots.get(),
                    quote_quantity: accepted.quote_quantity.get(),
                    filled_lots: 0,
                    executed_quote: 0,
                    time_in_force,
                    self_trade_prevention,
                    post_only: accepted.post_only.get().is_ok_and(bool::from),
                    created_ns: accepted.timestamp_ns.get(),
                    trigger_price_ticks: 0,
                    attached: AttachedTriggers::of_accepted(accepted),
                };
                // A fired trigger order's acceptance replaces its pending entry.
                write(&self.orders).entry(accepted.user_id).or_default().insert(&order);
            }
            Event::TriggerPending(pending) => {
                if let Some(order) = pending_order(pending) {
                    write(&self.orders).entry(pending.user_id).or_default().insert(&order);
                }
            }
            Event::TriggerFailed(failed) => {
                if let Some(order) = self.remove(failed.user_id, failed.order_id) {
                    self.history.record_closed(failed.user_id, order, ClosedStatus::TriggerFailed);
                }
            }
            Event::Fill(fill) => {
                let taker_side = fill.taker_side.get().unwrap_or(Side::Bid);
                let maker_side = if taker_side == Side::Bid { Side::Ask } else { Side::Bid };
                let mut orders = write(&self.orders);
                for (user, order_id, client_order_id, done, fee, side, is_maker) in [
                    (
                        fill.maker_user_id,
                        fill.maker_order_id,
                        fill.maker_client_order_id,
                        fill.completes_maker(),
                        fill.maker_fee.get(),
                        maker_side,
                        true,
                    ),
                    (
                        fill.taker_user_id,
                        fill.taker_order_id,
                        fill.taker_client_order_id,
                        fill.completes_taker(),
                        fill.taker_fee.get(),
                        taker_side,
                        false,
                    ),
                ] {
                    self.history.record_fill(
                        user,
                        FillRecord {
                            trade_id: fill.trade_id.get(),
                            order_id,
                            client_order_id,
                            market_id: fill.market_id,
                            side,
                            price_ticks: fill.price_ticks.get(),
                            quantity_lots: fill.quantity_lots.get(),
                            fee,
                            is_maker,
                            timestamp_ns: fill.timestamp_ns.get(),
                        },
                    );
                    let Some(user_orders) = orders.get_mut(&user) else { continue };
                    let Some(order) = user_orders.record_mut(order_id.get()) else { continue };
                    order.filled_lots += fill.quantity_lots.get();
                    order.executed_quote += fill.quote_amount.get();
                    // Not `remaining == 0`: a quote-quantity market order has 0 remaining lots on
                    // every fill; the fill that completes it says so.
                    if done {
                        if let Some(order) = user_orders.remove(order_id.get()) {
                            self.history.record_closed(user, order, ClosedStatus::Filled);
                        }
                        if user_orders.is_empty() {
                            orders.remove(&user);
                        }
                    }
                }
            }
            Event::OrderCanceled(canceled) => {
                if let Some(mut order) = self.remove(canceled.user_id, canceled.order_id) {
                    order.filled_lots = canceled.filled_lots.get();
                    self.history.record_closed(canceled.user_id, order, ClosedStatus::Cancelled);
                }
            }
            Event::OrderExpired(expired) => {
                if let Some(mut order) = self.remove(expired.user_id, expired.order_id) {
                    order.filled_lots = expired.filled_lots.get();
                    // Also for a quote-quantity order with 0 lots expired: one that reached its
                    // quote quantity completes with its last fill instead.
                    let reason = marketdata::expiry_reason_name(expired.reason.get().ok());
                    self.history.record_closed(expired.user_id, order, ClosedStatus::Expired(reason));
                }
            }
            Event::OrderReplaced(replaced) => {
                let mut orders = write(&self.orders);
                if let Some(order) =
                    orders.get_mut(&replaced.user_id).and_then(|o| o.record_mut(replaced.order_id.get()))
                {
                    order.price_ticks = replaced.price_ticks.get();
                    order.quantity_lots = replaced.quantity_lots.get();
                    order.filled_lots = replaced.filled_lots.get();
                }
            }
            // Balances changed by AMM pool commands arrive as BalanceUpdates.
            Event::OrderRejected(_)
            | Event::BookLevelUpdate(_)
            | Event::MassCancelReport(_)
            | Event::MarketStatusChanged(_)
            | Event::LiquidityAdded(_)
            | Event::LiquidityRemoved(_)
            | Event::SwapExecuted(_)
            | Event::OrderRouted(_)
            | Event::TriggerPlaced(_) => {}
        }
    }

    fn remove(&self, user: UserId, order_id: OrderId) -> Option<OpenOrder> {
        let mut orders = write(&self.orders);
        let user_orders = orders.get_mut(&user)?;
        let removed = user_orders.remove(order_id.get());
        if user_orders.is_empty() {
            orders.remove(&user);
        }
        removed
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

struct Waiter {
    events: Vec<Event>,
    /// The command's trace and when its first event was read here (a traced command only).
    ack: Option<AckTrace>,
    done: oneshot::Sender<Answer>,
}

/// The acknowledgement of a traced command: the engine's stamps and when the dispatcher read its
/// first event. The request's handler records it once its response is handed back
/// ([`crate::private::trace_requests`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AckTrace {
    pub trace: CommandTrace,
    pub picked_ns: u64,
}

/// Every event of a command, and its trace.
pub(crate) struct Answer {
    pub events: Vec<Event>,
    pub ack: Option<AckTrace>,
}

/// State shared by the handlers and the dispatcher.
pub(crate) struct Dispatch {
    pub views: Arc<AccountViews>,
    waiters: Mutex<HashMap<u64, Waiter>>,
    /// How many requests wait for their answer (`waiters.len()`, stored under its lock): the
    /// dispatcher spins on an empty ring only while one does (issue #17).
    waiting: AtomicUsize,
    next_request: AtomicU64,
    stopping: AtomicBool,
}

impl Dispatch {
    /// Registers a waiter; returns the request id (the origin value to tag the command with).
    pub fn register(&self) -> (u64, oneshot::Receiver<Answer>) {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (done, receiver) = oneshot::channel();
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters.insert(id, Waiter { events: Vec::new(), ack: None, done });
        self.waiting.store(waiters.len(), Ordering::Relaxed);
        (id, receiver)
    }

    /// Forgets a waiter (the command was not sent, or the handler gave up).
    pub fn forget(&self, id: u64) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters.remove(&id);
        self.waiting.store(waiters.len(), Ordering::Relaxed);
    }

    fn route(&self, tag: u64, event: Event, last: bool, trace: &CommandTrace) {
        if origin::gateway(tag) != origin::REST {
            return;
        }
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let id = origin::value(tag);
        let Some(waiter) = waiters.get_mut(&id) else { return };
        if waiter.events.is_empty() && trace.is_complete() {
            waiter.ack = Some(AckTrace { trace: *trace, picked_ns: clock_ns() });
        }
        waiter.events.push(event);
        if last {
            let removed = waiters.remove(&id);
            self.waiting.store(waiters.len(), Ordering::Relaxed);
            if let Some(waiter) = removed {
                let _ = waiter.done.send(Answer { events: waiter.events, ack: waiter.ack });
            }
        }
    }
}

fn run(dispatch: Arc<Dispatch>, mut consumer: Consumer) {
    let mut idle = Idle::default();
    let policy = consumer_idle();
    while !dispatch.stopping.load(Ordering::Acquire) {
        match consumer.try_next() {
            Ok(published) => {
                idle.reset();
                dispatch.views.apply(&published.event);
                dispatch.route(published.origin, published.event, published.last_of_command, &published.trace);
            }
            Err(ReadError::Empty) => {
                // Spin, then park until the engine publishes: no fixed nap (engine::doorbell).
                // With no request waiting for its answer, park at once (issue #17).
                let serving = dispatch.waiting.load(Ordering::Relaxed) > 0;
                consumer.idle(&mut idle, policy.when_serving(serving));
            }
            Err(lagged @ ReadError::Lagged { oldest, .. }) => {
                // Events were lost: the views can no longer be trusted, and the waiters whose
                // events were lost will time out.
                tracing::error!(%lagged, "REST dispatcher lagged; balance and order views are stale");
                dispatch.views.stale.store(true, Ordering::Release);
                consumer.seek(oldest);
            }
        }
    }
}

/// The running REST order gateway: the dispatcher thread and the state the private router
/// shares with it.
pub struct RestGateway {
    pub(crate) dispatch: Arc<Dispatch>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RestGateway {
    /// Starts the dispatcher thread reading `consumer` (subscribe it where `views` were seeded:
    /// `subscribe_from(0)` for views seeded from the engine the runtime starts with).
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(views: Arc<AccountViews>, consumer: Consumer) -> std::io::Result<Self> {
        let dispatch = Arc::new(Dispatch {
            views,
            waiters: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
            next_request: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
        });
        let thread = {
            let dispatch = dispatch.clone();
            std::thread::Builder::new().name("rest-dispatch".into()).spawn(move || run(dispatch, consumer))?
        };
        Ok(Self { dispatch, thread: Some(thread) })
    }

    /// The views the dispatcher maintains.
    pub fn views(&self) -> Arc<AccountViews> {
        self.dispatch.views.clone()
    }

    /// Stops the dispatcher thread (pending requests time out).
    pub fn shutdown(mut self) {
        self.dispatch.stopping.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RestGateway {
    fn drop(&mut self) {
        self.dispatch.stopping.store(true, Ordering::Release);
    }
}

/// The open-order entry of a pending trigger order (`None` for an event with an unknown code).
pub(crate) fn pending_order(pending: &codec::TriggerPending) -> Option<OpenOrder> {
    Some(OpenOrder {
        order_id: pending.order_id,
        client_order_id: pending.client_order_id,
        market_id: pending.market_id,
        side: pending.side.get().ok()?,
        order_type: pending.order_type.get().ok()?,
        price_ticks: pending.price_ticks.get(),
        quantity_lots: pending.quantity_lots.get(),
        quote_quantity: pending.quote_quantity.get(),
        filled_lots: 0,
        executed_quote: 0,
        time_in_force: pending.time_in_force.get().ok()?,
        self_trade_prevention: pending.self_trade_prevention.get().ok()?,
        post_only: pending.post_only.get().is_ok_and(bool::from),
        created_ns: pending.timestamp_ns.get(),
        trigger_price_ticks: pending.trigger_price_ticks.get(),
        attached: AttachedTriggers::default(),
    })
}

#[cfg(test)]
mod tests {
    //! The compact per-user order tables give back exactly the orders put in (extras included),
    //! in id order, and cost less per order than whole [`OpenOrder`]s keyed by id.
    use super::*;
    use codec::WireEnum;

    fn order(id: u64, quote_quantity: u64, trigger_price_ticks: u64) -> OpenOrder {
        OpenOrder {
            order_id: OrderId::new(id),
            client_order_id: ClientOrderId::new(id + 1_000),
            market_id: MarketId::new(2),
            side: if id % 2 == 0 { Side::Bid } else { Side::Ask },
            order_type: if quote_quantity > 0 { OrderType::Market } else { OrderType::Limit },
            price_ticks: 100 + id,
            quantity_lots: 10 * id,
            quote_quantity,
            filled_lots: id % 3,
            executed_quote: 7 * id,
            time_in_force: TimeInForce::Gtc,
            self_trade_prevention: SelfTradePrevention::Allow,
            post_only: id % 5 == 0,
            created_ns: 1_000_000 + id,
            trigger_price_ticks,
            attached: AttachedTriggers::default(),
        }
    }

    #[test]
    fn orders_come_back_whole_and_in_id_order() {
        let mut table = UserOrders::default();
        let orders = [order(3, 0, 0), order(5, 900, 0), order(8, 0, 120), order(9, 0, 0), order(12, 50, 130)];
        for o in &orders {
            table.insert(o);
        }
        assert_eq!(table.iter().collect::<Vec<_>>(), orders.to_vec());
        for o in &orders {
            assert_eq!(table.get(o.order_id.get()), Some(*o));
        }
        assert_eq!(table.remove(8), Some(orders[2]));
        assert_eq!(table.get(8), None);
        assert_eq!(table.iter().collect::<Vec<_>>(), [orders[0], orders[1], orders[3], orders[4]]);
    }

    #[test]
    fn an_acceptance_replacing_a_pending_trigger_drops_its_trigger_price() {
        let mut table = UserOrders::default();
        table.insert(&order(4, 0, 150));
        let accepted = order(4, 0, 0);
        table.insert(&accepted);
        assert_eq!(table.get(4), Some(accepted));
        assert_eq!(table.iter().collect::<Vec<_>>(), [accepted]);
        assert!(table.extras.is_empty());
    }

    #[test]
    fn an_attached_stop_loss_and_take_profit_come_back_with_their_parent() {
        let mut table = UserOrders::default();
        let mut parent = order(6, 0, 0);
        parent.attached = AttachedTriggers {
            stop_loss_trigger_ticks: 90,
            stop_loss_limit_ticks: 89,
            take_profit_trigger_ticks: 120,
            take_profit_limit_ticks: 0,
        };
        table.insert(&parent);
        table.insert(&order(7, 0, 0));
        assert_eq!(table.get(6), Some(parent));
        assert_eq!(table.iter().collect::<Vec<_>>(), [parent, order(7, 0, 0)]);
        assert_eq!(table.extras.len(), 1);
    }

    #[test]
    fn seeding_keeps_the_later_of_two_orders_with_one_id() {
        let table = UserOrders::from_unsorted(vec![order(9, 0, 0), order(4, 0, 150), order(4, 0, 0), order(2, 30, 0)]);
        assert_eq!(table.iter().collect::<Vec<_>>(), [order(2, 30, 0), order(4, 0, 0), order(9, 0, 0)]);
        assert_eq!(table.extras.len(), 1);
    }

    /// Every combination of side, type, time in force, self-trade prevention and post-only
    /// comes back from the record's one byte of terms.
    #[test]
    fn every_combination_of_terms_comes_back() {
        for &side in Side::ALL {
            for &order_type in OrderType::ALL {
                for &time_in_force in TimeInForce::ALL {
                    for &self_trade_prevention in SelfTradePrevention::ALL {
                        for post_only in [false, true] {
                            let mut open = order(10, 0, 0);
                            open.side = side;
                            open.order_type = order_type;
                            open.time_in_force = time_in_force;
                            open.self_trade_prevention = self_trade_prevention;
                            open.post_only = post_only;
                            let mut table = UserOrders::default();
                            table.insert(&open);
                            assert_eq!(table.get(10), Some(open));
                        }
                    }
                }
            }
        }
    }

    /// Fails with the five terms in bytes of their own (the record is then 64 bytes).
    #[test]
    fn an_order_costs_less_than_a_keyed_open_order() {
        assert!(std::mem::size_of::<(u64, OrderRecord)>() <= 64);
        assert!(std::mem::size_of::<(u64, OrderRecord)>() < std::mem::size_of::<(u64, OpenOrder)>());
    }
}
