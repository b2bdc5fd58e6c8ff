//! Test kit shared by tests and benchmarks: a naive reference book, an event-driven reference
//! ledger, and command constructors.
//!
//! [`NaiveBook`] implements [`Book`] with a plain vector and linear scans, simple enough to be
//! obviously right. Running the same commands through `Engine<OrderBook>` and
//! `Engine<NaiveBook>` must give identical events and state hashes.
//!
//! [`ReferenceLedger`] rebuilds every user's total holding per asset from the events alone
//! (deposits, withdrawals and fills) and must agree with the engine's balances.
//!
//! [`check_order_lifecycle`] checks that one command's events tell every consumer exactly when
//! each order is finished.

pub mod profiles;

use crate::book::{Book, InsertError, LevelSummary, RestingOrder};
use codec::*;
use std::collections::BTreeMap;

/// A deliberately simple order book: a vector of `(arrival, order)`, scanned linearly.
#[derive(Debug, Default, Clone)]
pub struct NaiveBook {
    orders: Vec<(u64, RestingOrder)>,
    next_arrival: u64,
    capacity: usize,
}

impl NaiveBook {
    /// A naive book holding at most `capacity` orders.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { orders: Vec::new(), next_arrival: 0, capacity }
    }

    fn better(side: Side, a: Ticks, b: Ticks) -> bool {
        match side {
            Side::Bid => a > b,
            Side::Ask => a < b,
        }
    }

    fn sorted(&self, side: Side) -> Vec<(u64, RestingOrder)> {
        let mut orders: Vec<_> = self.orders.iter().copied().filter(|(_, o)| o.side == side).collect();
        orders.sort_by(|(arrival_a, a), (arrival_b, b)| {
            if a.price == b.price {
                arrival_a.cmp(arrival_b)
            } else if Self::better(side, a.price, b.price) {
                core::cmp::Ordering::Less
            } else {
                core::cmp::Ordering::Greater
            }
        });
        orders
    }

    fn position(&self, order_id: OrderId) -> Option<usize> {
        self.orders.iter().position(|(_, o)| o.order_id == order_id)
    }
}

impl Book for NaiveBook {
    fn best_price(&self, side: Side) -> Option<Ticks> {
        self.front(side).map(|o| o.price)
    }

    fn front(&self, side: Side) -> Option<&RestingOrder> {
        let mut best: Option<&(u64, RestingOrder)> = None;
        for entry in self.orders.iter().filter(|(_, o)| o.side == side) {
            best = match best {
                None => Some(entry),
                Some(current) => {
                    let (arrival, order) = entry;
                    let better = Self::better(side, order.price, current.1.price)
                        || (order.price == current.1.price && *arrival < current.0);
                    Some(if better { entry } else { current })
                }
            };
        }
        best.map(|(_, o)| o)
    }

    fn get(&self, order_id: OrderId) -> Option<&RestingOrder> {
        self.orders.iter().map(|(_, o)| o).find(|o| o.order_id == order_id)
    }

    fn find_client_order(&self, user_id: UserId, client_order_id: ClientOrderId) -> Option<OrderId> {
        self.orders
            .iter()
            .map(|(_, o)| o)
            .find(|o| {
                o.user_id == user_id && o.client_order_id == client_order_id && client_order_id != ClientOrderId::ZERO
            })
            .map(|o| o.order_id)
    }

    fn open_orders_of(&self, user_id: UserId) -> usize {
        self.orders.iter().filter(|(_, o)| o.user_id == user_id).count()
    }

    fn has_capacity(&self) -> bool {
        self.orders.len() < self.capacity
    }

    fn insert(&mut self, order: RestingOrder) -> Result<(), InsertError> {
        if !self.has_capacity() {
            return Err(InsertError::BookFull);
        }
        self.orders.push((self.next_arrival, order));
        self.next_arrival += 1;
        Ok(())
    }

    fn remove(&mut self, order_id: OrderId) -> Option<RestingOrder> {
        let index = self.position(order_id)?;
        Some(self.orders.remove(index).1)
    }

    fn update_in_place(
        &mut self,
        order_id: OrderId,
        quantity_lots: u64,
        remaining_lots: u64,
        filled_lots: u64,
        reserved: u64,
    ) {
        if let Some(index) = self.position(order_id) {
            let order = &mut self.orders[index].1;
            order.quantity_lots = quantity_lots;
            order.remaining_lots = remaining_lots;
            order.filled_lots = filled_lots;
            order.reserved = reserved;
        }
    }

    fn level(&self, side: Side, price: Ticks) -> Option<LevelSummary> {
        let at: Vec<_> = self.orders.iter().filter(|(_, o)| o.side == side && o.price == price).collect();
        (!at.is_empty()).then(|| LevelSummary {
            price,
            total_lots: at.iter().map(|(_, o)| o.remaining_lots).sum(),
            order_count: at.len() as u32,
        })
    }

    fn visit_in_priority(&self, side: Side, visit: &mut dyn FnMut(&RestingOrder) -> bool) {
        for (_, order) in self.sorted(side) {
            if !visit(&order) {
                return;
            }
        }
    }

    fn visit_levels(&self, side: Side, visit: &mut dyn FnMut(LevelSummary) -> bool) {
        let mut prices: Vec<Ticks> = self.sorted(side).iter().map(|(_, o)| o.price).collect();
        prices.dedup();
        for price in prices {
            if let Some(level) = self.level(side, price)
                && !visit(level)
            {
                return;
            }
        }
    }

    fn orders_of(&self, user_id: UserId, out: &mut Vec<OrderId>) {
        let mut mine: Vec<_> = self.orders.iter().filter(|(_, o)| o.user_id == user_id).collect();
        mine.sort_by_key(|(arrival, _)| *arrival);
        out.extend(mine.iter().map(|(_, o)| o.order_id));
    }

    fn len(&self) -> usize {
        self.orders.len()
    }
}

/// Each user's total holding (available + locked) per asset and the fees collected, rebuilt from
/// events alone.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReferenceLedger {
    /// (user, asset) → available + locked.
    pub holdings: BTreeMap<(UserId, AssetId), i128>,
    /// Asset → fees collected.
    pub fees: BTreeMap<AssetId, i128>,
    /// Asset → held by AMM pools.
    pub pooled: BTreeMap<AssetId, i128>,
    /// Market → (base, quote, lot size).
    markets: BTreeMap<MarketId, (AssetId, AssetId, u64)>,
    /// Pending deposit/withdrawal deltas keyed by (user, asset), applied when their balance
    /// update arrives (the event carries the reason).
    last: BTreeMap<(UserId, AssetId), (u64, u64)>,
}

impl ReferenceLedger {
    /// A reference ledger for the markets of `config`.
    pub fn new(config: &crate::EngineConfig) -> Self {
        Self {
            markets: config.markets.iter().map(|m| (m.id, (m.base, m.quote, m.lot_size))).collect(),
            ..Self::default()
        }
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::BalanceUpdate(update) => {
                let key = (update.user_id, update.asset_id);
                let now = (update.available.get(), update.locked.get());
                let before = self.last.insert(key, now).unwrap_or((0, 0));
                let delta = i128::from(now.0) + i128::from(now.1) - i128::from(before.0) - i128::from(before.1);
                match update.reason.get() {
                    // Deposits and withdrawals change the holding by exactly their amount; trades
                    // are accounted from the fill itself below, and locks/releases move nothing.
                    Ok(BalanceChange::Deposit) | Ok(BalanceChange::Withdrawal) => {
                        *self.holdings.entry(key).or_default() += delta;
                    }
                    _ => {}
                }
            }
            Event::Fill(fill) => {
                let (base, quote, lot_size) = self.markets[&fill.market_id];
                let base_amount = i128::from(fill.quantity_lots.get()) * i128::from(lot_size);
                let notional = i128::from(fill.quote_amount.get());
                let (buyer, buyer_fee, seller, seller_fee) = match fill.taker_side.get() {
                    Ok(Side::Bid) => (fill.taker_user_id, fill.taker_fee, fill.maker_user_id, fill.maker_fee),
                    _ => (fill.maker_user_id, fill.maker_fee, fill.taker_user_id, fill.taker_fee),
                };
                *self.holdings.entry((buyer, base)).or_default() += base_amount;
                *self.holdings.entry((buyer, quote)).or_default() -= notional + i128::from(buyer_fee.get());
                *self.holdings.entry((seller, base)).or_default() -= base_amount;
                *self.holdings.entry((seller, quote)).or_default() += notional - i128::from(seller_fee.get());
                *self.fees.entry(quote).or_default() += i128::from(fill.maker_fee.get() + fill.taker_fee.get());
            }
            Event::LiquidityAdded(added) => {
                let (base, quote, _) = self.markets[&added.market_id];
                self.move_to_pool(added.user_id, base, i128::from(added.base_amount.get()));
                self.move_to_pool(added.user_id, quote, i128::from(added.quote_amount.get()));
            }
            Event::LiquidityRemoved(removed) => {
                let (base, quote, _) = self.markets[&removed.market_id];
                self.move_to_pool(removed.user_id, base, -i128::from(removed.base_amount.get()));
                self.move_to_pool(removed.user_id, quote, -i128::from(removed.quote_amount.get()));
            }
            Event::SwapExecuted(swap) => {
                let (base, quote, _) = self.markets[&swap.market_id];
                let (asset_in, asset_out) = match swap.side.get() {
                    Ok(Side::Bid) => (quote, base),
                    _ => (base, quote),
                };
                self.move_to_pool(swap.user_id, asset_in, i128::from(swap.amount_in.get()));
                self.move_to_pool(swap.user_id, asset_out, -i128::from(swap.amount_out.get()));
            }
            _ => {}
        }
    }

    /// Moves `amount` (negative: out of the pool) between a user and the pool account.
    fn move_to_pool(&mut self, user: UserId, asset: AssetId, amount: i128) {
        *self.holdings.entry((user, asset)).or_default() -= amount;
        *self.pooled.entry(asset).or_default() += amount;
    }

    /// Compares with the engine's balances, fees and pool account.
    ///
    /// # Errors
    /// The first disagreement.
    pub fn check<B: Book>(&self, engine: &crate::Engine<B>) -> Result<(), String> {
        for (&(user, asset), &holding) in &self.holdings {
            let balance = engine.balance(user, asset);
            let actual = i128::from(balance.available) + i128::from(balance.locked);
            if actual != holding {
                return Err(format!("user {user} asset {asset}: engine holds {actual}, events say {holding}"));
            }
        }
        for (&asset, &fees) in &self.fees {
            if i128::from(engine.ledger().fees_collected(asset)) != fees {
                return Err(format!("asset {asset}: fee account disagrees with fills"));
            }
        }
        for (&asset, &pooled) in &self.pooled {
            if i128::from(engine.ledger().pooled(asset)) != pooled {
                return Err(format!("asset {asset}: pool account disagrees with pool events"));
            }
        }
        Ok(())
    }
}

/// Checks the order lifecycle in one command's events, as every consumer reads it:
/// - a `Fill` marked `taker_order_complete` has `taker_remaining_lots` 0, and a fill leaving a
///   taker sized in lots with 0 remaining is marked complete;
/// - after an order's terminal event (a completing fill, its maker fill leaving 0, an
///   `OrderExpired` or an `OrderCanceled`) no later event of the command fills, expires, cancels
///   or replaces it;
/// - a market, immediate-or-cancel or fill-or-kill order accepted by the command ends in it with
///   exactly one terminal event, and a buy by quote quantity that traded does not expire for
///   lack of funds (reaching its quote quantity is a completing fill).
///
/// # Errors
/// A description of the first violation.
pub fn check_order_lifecycle(events: &[Event]) -> Result<(), String> {
    /// Order → index of the event that finished it.
    type Finished = BTreeMap<OrderId, usize>;
    fn still_open(finished: &Finished, order_id: OrderId, index: usize) -> Result<(), String> {
        match finished.get(&order_id) {
            Some(earlier) => Err(format!("event {index} concerns order {order_id:?}, finished by event {earlier}")),
            None => Ok(()),
        }
    }
    fn finish(finished: &mut Finished, order_id: OrderId, index: usize) -> Result<(), String> {
        still_open(finished, order_id, index)?;
        finished.insert(order_id, index);
        Ok(())
    }
    // Orders accepted by this command: id → (sized by quote quantity, must end in this command).
    let mut accepted: BTreeMap<OrderId, (bool, bool)> = BTreeMap::new();
    let mut finished = Finished::new();
    for (index, event) in events.iter().enumerate() {
        match event {
            Event::OrderAccepted(a) => {
                let by_quote = a.quote_quantity.get() != 0;
                let immediate =
                    a.order_type.get() == Ok(OrderType::Market) || a.time_in_force.get() != Ok(TimeInForce::Gtc);
                accepted.insert(a.order_id, (by_quote, immediate));
            }
            Event::Fill(f) => {
                let by_quote = accepted.get(&f.taker_order_id).is_some_and(|&(by_quote, _)| by_quote);
                let remaining = f.taker_remaining_lots.get();
                if f.completes_taker() && remaining != 0 {
                    return Err(format!("fill {index} completes its taker with {remaining} lots remaining"));
                }
                if !f.completes_taker() && !by_quote && remaining == 0 {
                    return Err(format!("fill {index} takes the last lot of its taker but is not marked complete"));
                }
                if f.completes_maker() {
                    finish(&mut finished, f.maker_order_id, index)?;
                } else {
                    still_open(&finished, f.maker_order_id, index)?;
                }
                if f.completes_taker() {
                    finish(&mut finished, f.taker_order_id, index)?;
                } else {
                    still_open(&finished, f.taker_order_id, index)?;
                }
            }
            Event::OrderExpired(x) => finish(&mut finished, x.order_id, index)?,
            Event::OrderCanceled(x) => finish(&mut finished, x.order_id, index)?,
            Event::OrderReplaced(x) => still_open(&finished, x.order_id, index)?,
            // A trigger that fires is followed by its order's acceptance or by its failure.
            Event::TriggerPlaced(x) => {
                still_open(&finished, x.order_id, index)?;
                match events.get(index + 1) {
                    Some(Event::OrderAccepted(a)) if a.order_id == x.order_id => {}
                    Some(Event::TriggerFailed(f)) if f.order_id == x.order_id => {}
                    other => return Err(format!("trigger {:?} placed, then {other:?}", x.order_id)),
                }
            }
            Event::TriggerFailed(x) => finish(&mut finished, x.order_id, index)?,
            _ => {}
        }
    }
    for (order_id, (by_quote, immediate)) in accepted {
        let end = finished.get(&order_id).map(|&index| &events[index]);
        if immediate && end.is_none() {
            return Err(format!("order {order_id:?} (market, IOC or FOK) did not finish"));
        }
        // Reaching its quote quantity is a fill, not an expiry (an expiry of a quote-quantity
        // order means it ran out of liquidity or funds, or could not buy a single lot).
        if by_quote
            && let Some(Event::OrderExpired(x)) = end
            && x.reason.get() == Ok(ExpireReason::FundsExhausted)
            && x.filled_lots.get() > 0
            && x.side.get() == Ok(Side::Bid)
        {
            return Err(format!("order {order_id:?} (buy by quote) expired instead of completing its last fill"));
        }
    }
    Ok(())
}

/// Command constructors for tests and benchmarks.
pub mod commands {
    use codec::*;

    /// A limit order.
    #[allow(clippy::too_many_arguments)]
    pub fn limit(
        user: u64,
        market: u32,
        side: Side,
        price_ticks: u64,
        quantity_lots: u64,
        time_in_force: TimeInForce,
        client_order_id: u64,
    ) -> Command {
        Command::NewOrder(NewOrder {
            user_id: UserId::new(user),
            client_order_id: ClientOrderId::new(client_order_id),
            price_ticks: Ticks::new(price_ticks),
            quantity_lots: Lots::new(quantity_lots),
            quote_quantity: Amount::ZERO,
            market_id: MarketId::new(market),
            side: side.into(),
            order_type: OrderType::Limit.into(),
            time_in_force: time_in_force.into(),
            self_trade_prevention: SelfTradePrevention::RejectTaker.into(),
            post_only: false.into(),
            ..NewOrder::default()
        })
    }

    /// A trigger order: `kind` at `trigger_ticks`, placing a limit order at `price_ticks` (a
    /// market order when 0; IOC then) of `quantity_lots`.
    #[allow(clippy::too_many_arguments)]
    pub fn trigger(
        user: u64,
        market: u32,
        side: Side,
        kind: TriggerKind,
        trigger_ticks: u64,
        price_ticks: u64,
        quantity_lots: u64,
        client_order_id: u64,
    ) -> Command {
        let is_market = price_ticks == 0;
        Command::NewOrder(NewOrder {
            user_id: UserId::new(user),
            client_order_id: ClientOrderId::new(client_order_id),
            price_ticks: Ticks::new(price_ticks),
            quantity_lots: Lots::new(quantity_lots),
            market_id: MarketId::new(market),
            side: side.into(),
            order_type: if is_market { OrderType::Market } else { OrderType::Limit }.into(),
            time_in_force: if is_market { TimeInForce::Ioc } else { TimeInForce::Gtc }.into(),
            self_trade_prevention: SelfTradePrevention::RejectTaker.into(),
            post_only: false.into(),
            trigger_kind: kind.into(),
            trigger_price_ticks: Ticks::new(trigger_ticks),
            ..NewOrder::default()
        })
    }

    /// `command` (a new order) with an attached stop-loss and take-profit (trigger prices, and
    /// limit prices or 0 for market children; a trigger of 0 leaves that leg out).
    pub fn with_attached(
        command: Command,
        stop_loss_trigger: u64,
        stop_loss_limit: u64,
        take_profit_trigger: u64,
        take_profit_limit: u64,
    ) -> Command {
        match command {
            Command::NewOrder(order) => Command::NewOrder(NewOrder {
                stop_loss_trigger_ticks: Ticks::new(stop_loss_trigger),
                stop_loss_limit_ticks: Ticks::new(stop_loss_limit),
                take_profit_trigger_ticks: Ticks::new(take_profit_trigger),
                take_profit_limit_ticks: Ticks::new(take_profit_limit),
                ..order
            }),
            other => other,
        }
    }

    /// A GTC limit order without client id.
    pub fn gtc(user: u64, market: u32, side: Side, price_ticks: u64, quantity_lots: u64) -> Command {
        limit(user, market, side, price_ticks, quantity_lots, TimeInForce::Gtc, 0)
    }

    /// A market order by base quantity.
    pub fn market(user: u64, market: u32, side: Side, quantity_lots: u64) -> Command {
        Command::NewOrder(NewOrder {
            user_id: UserId::new(user),
            client_order_id: ClientOrderId::ZERO,
            price_ticks: Ticks::ZERO,
            quantity_lots: Lots::new(quantity_lots),
            quote_quantity: Amount::ZERO,
            market_id: MarketId::new(market),
            side: side.into(),
            order_type: OrderType::Market.into(),
            time_in_force: TimeInForce::Ioc.into(),
            self_trade_prevention: SelfTradePrevention::RejectTaker.into(),
            post_only: false.into(),
            ..NewOrder::default()
        })
    }

    /// A market buy spending at most `quote_quantity` (notional + fee).
    pub fn market_buy_quote(user: u64, market: u32, quote_quantity: u64) -> Command {
        let Command::NewOrder(mut order) = self::market(user, market, Side::Bid, 0) else { unreachable!() };
        order.quote_quantity = Amount::new(quote_quantity);
        Command::NewOrder(order)
    }

    /// A market sell for at most `quote_quantity` of notional (before the fee).
    pub fn market_sell_quote(user: u64, market: u32, quote_quantity: u64) -> Command {
        let Command::NewOrder(mut order) = self::market(user, market, Side::Ask, 0) else { unreachable!() };
        order.quote_quantity = Amount::new(quote_quantity);
        Command::NewOrder(order)
    }

    /// Cancel by exchange order id.
    pub fn cancel(user: u64, market: u32, order_id: u64) -> Command {
        Command::CancelOrder(CancelOrder {
            user_id: UserId::new(user),
            order_id: OrderId::new(order_id),
            client_order_id: ClientOrderId::ZERO,
            market_id: MarketId::new(market),
            reserved: Reserved::ZERO,
        })
    }

    /// Cancel-replace by exchange order id (0 keeps price / quantity).
    pub fn replace(user: u64, market: u32, order_id: u64, new_price_ticks: u64, new_quantity_lots: u64) -> Command {
        Command::CancelReplace(CancelReplace {
            user_id: UserId::new(user),
            order_id: OrderId::new(order_id),
            client_order_id: ClientOrderId::ZERO,
            new_price_ticks: Ticks::new(new_price_ticks),
            new_quantity_lots: Lots::new(new_quantity_lots),
            market_id: MarketId::new(market),
            reserved: Reserved::ZERO,
        })
    }

    /// Mass cancel (market 0: every market).
    pub fn mass_cancel(user: u64, market: u32, side: SideFilter) -> Command {
        Command::MassCancel(MassCancel {
            user_id: UserId::new(user),
            market_id: MarketId::new(market),
            side: side.into(),
            kinds: OrderKindFilter::All.into(),
            reserved: Reserved::ZERO,
        })
    }

    /// Deposit.
    pub fn deposit(user: u64, asset: u32, amount: u64) -> Command {
        Command::Deposit(Deposit {
            user_id: UserId::new(user),
            amount: Amount::new(amount),
            asset_id: AssetId::new(asset),
            reserved: Reserved::ZERO,
        })
    }

    /// Halt (`halt`) or resume a market.
    pub fn market_control(market: u32, halt: bool) -> Command {
        Command::MarketControl(MarketControl {
            market_id: MarketId::new(market),
            action: if halt { MarketAction::Halt } else { MarketAction::Resume }.into(),
            reserved: Reserved::ZERO,
        })
    }

    /// Adds liquidity to a market's pool (no slippage limit).
    pub fn add_liquidity(user: u64, market: u32, max_base: u64, max_quote: u64) -> Command {
        Command::AddLiquidity(AddLiquidity {
            user_id: UserId::new(user),
            max_base_amount: Amount::new(max_base),
            max_quote_amount: Amount::new(max_quote),
            min_shares: Shares::ZERO,
            market_id: MarketId::new(market),
            reserved: Reserved::ZERO,
        })
    }

    /// Burns pool shares (no slippage limit).
    pub fn remove_liquidity(user: u64, market: u32, shares: u64) -> Command {
        Command::RemoveLiquidity(RemoveLiquidity {
            user_id: UserId::new(user),
            shares: Shares::new(shares),
            min_base_amount: Amount::ZERO,
            min_quote_amount: Amount::ZERO,
            market_id: MarketId::new(market),
            reserved: Reserved::ZERO,
        })
    }

    /// A swap against a market's pool; `limit` is the least out (exact in) or the most in
    /// (exact out), 0 for none.
    pub fn swap(user: u64, market: u32, side: Side, mode: SwapMode, amount: u64, limit: u64) -> Command {
        Command::Swap(Swap {
            user_id: UserId::new(user),
            amount: Amount::new(amount),
            limit: Amount::new(limit),
            market_id: MarketId::new(market),
            side: side.into(),
            mode: mode.into(),
            reserved: Reserved::ZERO,
        })
    }

    /// A market order routed between the book and the pool; `quote_limit` 0 for none.
    pub fn routed(user: u64, market: u32, side: Side, quantity_lots: u64, quote_limit: u64) -> Command {
        Command::RoutedOrder(RoutedOrder {
            user_id: UserId::new(user),
            quantity_lots: Lots::new(quantity_lots),
            quote_limit: Amount::new(quote_limit),
            market_id: MarketId::new(market),
            side: side.into(),
            reserved: Reserved::ZERO,
        })
    }

    /// Withdrawal.
    pub fn withdraw(user: u64, asset: u32, amount: u64) -> Command {
        Command::Withdraw(Withdraw {
            user_id: UserId::new(user),
            amount: Amount::new(amount),
            asset_id: AssetId::new(asset),
            reserved: Reserved::ZERO,
        })
    }
}

/// glibc's `rand()` after `srand(seed)`: the TYPE_3 additive feedback generator (degree 31,
/// separation 3) that `random_r` uses by default, reimplemented bit for bit so that workloads
/// published as "C code with `srand(3)`" can be reproduced exactly.
///
/// Seeding: `r[0] = seed` (0 becomes 1), `r[i] = 16807 · r[i−1] mod (2^31 − 1)` for `i < 31`
/// computed with Schrage's method on signed 32-bit words exactly as glibc does (so seeds of 2^31
/// and above behave as in C), `r[i] = r[i−31]` for `31 <= i < 34`, then
/// `r[i] = r[i−31] + r[i−3]` (wrapping `u32`). The first 344 values of the recurrence are
/// discarded; the k-th output is `r[k + 344] >> 1`, in `0..=RAND_MAX` (2^31 − 1).
#[derive(Debug, Clone)]
pub struct GlibcRand {
    /// The last 34 values of the recurrence, `r[i]` at `i % 34`.
    ring: [u32; 34],
    /// Index of the next value to compute.
    next: usize,
}

impl GlibcRand {
    /// Largest value [`GlibcRand::rand`] returns (glibc's `RAND_MAX`).
    pub const RAND_MAX: u32 = 0x7fff_ffff;

    /// The generator after `srand(seed)`.
    pub fn new(seed: u32) -> Self {
        let seed = if seed == 0 { 1 } else { seed };
        let mut ring = [0u32; 34];
        ring[0] = seed;
        // glibc: `int32_t word = seed; hi = word / 127773; lo = word % 127773;
        // word = 16807 * lo - 2836 * hi; if (word < 0) word += 2147483647;` with `long` (64-bit)
        // intermediates and C's truncating division, which Rust's `/` and `%` share.
        let mut word = seed as i32;
        for slot in ring.iter_mut().take(31).skip(1) {
            let hi = i64::from(word) / 127_773;
            let lo = i64::from(word) % 127_773;
            word = (16_807 * lo - 2_836 * hi) as i32;
            if word < 0 {
                word = word.wrapping_add(2_147_483_647);
            }
            *slot = word as u32;
        }
        for i in 31..34 {
            ring[i] = ring[i - 31];
        }
        let mut rng = Self { ring, next: 34 };
        for _ in 34..344 {
            rng.step();
        }
        rng
    }

    /// Computes the next value of the recurrence.
    #[inline]
    fn step(&mut self) -> u32 {
        let i = self.next;
        // i − 31 ≡ i + 3 and i − 3 ≡ i + 31 (mod 34).
        let value = self.ring[(i + 3) % 34].wrapping_add(self.ring[(i + 31) % 34]);
        self.ring[i % 34] = value;
        self.next = if i + 1 >= 2 * 34 { i + 1 - 34 } else { i + 1 };
        value
    }

    /// The next `rand()` output, in `0..=RAND_MAX`.
    #[inline]
    pub fn rand(&mut self) -> u32 {
        self.step() >> 1
    }

    /// `lo + rand() % (hi − lo + 1)`: the usual (slightly biased) C idiom for a value in
    /// `lo..=hi`. Requires `lo <= hi` and `hi − lo < RAND_MAX`.
    #[inline]
    pub fn uniform(&mut self, lo: u32, hi: u32) -> u32 {
        debug_assert!(lo <= hi && hi - lo < Self::RAND_MAX);
        lo + self.rand() % (hi - lo + 1)
    }
}

/// An engine serving the bus on its own thread: the runtime's loop without the journal (pop a
/// command, execute it, publish its events marking the last). For gateway tests and examples,
/// where durability is not what is being tested.
pub struct EngineLoop {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    paused: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EngineLoop {
    /// Starts serving; commands get sequences from `last_sequence + 1` on.
    pub fn start(
        mut engine: crate::Engine,
        last_sequence: u64,
        ingress: std::sync::Arc<crate::bus::IngressRing>,
        egress: std::sync::Arc<crate::bus::BroadcastRing>,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let paused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (stop, paused) = (stop.clone(), paused.clone());
            std::thread::spawn(move || {
                let mut events = Vec::new();
                let mut sequence = last_sequence;
                while !stop.load(Ordering::Relaxed) {
                    let next = if paused.load(Ordering::Relaxed) { None } else { ingress.pop() };
                    let Some(crate::bus::IngressCommand { origin, command, .. }) = next else {
                        std::thread::sleep(std::time::Duration::from_micros(50));
                        continue;
                    };
                    sequence += 1;
                    events.clear();
                    engine.execute(crate::CommandContext::new(sequence, sequence), &command, &mut events);
                    egress.publish_command(origin, &events);
                }
            })
        };
        Self { stop, paused, thread: Some(thread) }
    }

    /// Stops (or resumes) taking commands off the ring, e.g. to fill it up in a test.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, std::sync::atomic::Ordering::Relaxed);
    }

    /// A handle to the pause switch.
    pub fn pause_switch(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.paused.clone()
    }
}

impl Drop for EngineLoop {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod glibc_rand_tests {
    use super::GlibcRand;

    fn first(seed: u32, n: usize) -> Vec<u32> {
        let mut rng = GlibcRand::new(seed);
        (0..n).map(|_| rng.rand()).collect()
    }

    #[test]
    fn matches_glibc_for_seed_1() {
        assert_eq!(first(1, 5), [1804289383, 846930886, 1681692777, 1714636915, 1957747793]);
    }

    /// Expected values printed by `srand(s); rand()...` compiled with gcc against glibc.
    #[test]
    fn matches_glibc_for_other_seeds() {
        assert_eq!(
            first(3, 8),
            [1205554746, 483147985, 844158168, 953350440, 612121425, 310914940, 1210224072, 1856883376]
        );
        // srand(0) is srand(1).
        assert_eq!(first(0, 5), first(1, 5));
        assert_eq!(first(42, 4), [71876166, 708592740, 1483128881, 907283241]);
        // Seeds >= 2^31 go through glibc's signed 32-bit seeding.
        assert_eq!(first(0x8000_0001, 4), [1081815585, 5219348, 1080917272, 1083470877]);
        assert_eq!(first(u32::MAX, 4), [254925627, 1205188300, 366127624, 1401405153]);
    }

    #[test]
    fn long_run_matches_glibc() {
        let mut rng = GlibcRand::new(3);
        let mut last = 0;
        for _ in 0..1_000_000 {
            last = rng.rand();
        }
        assert_eq!(last, 403654803);
    }

    #[test]
    fn uniform_is_the_c_idiom() {
        // srand(3): the first W-LB order is a buy at 1880 + 1205554746 % 10 = 1886.
        let mut rng = GlibcRand::new(3);
        assert_eq!(rng.uniform(0, 9), 6);
        assert_eq!(rng.uniform(1, 10), 6);
    }
}
