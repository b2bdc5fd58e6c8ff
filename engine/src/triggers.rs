//! Pending trigger orders (stop and take-profit) of one market.
//!
//! A trigger order waits, holding **no funds**, until the market's last trade price reaches its
//! trigger price in its direction; then the engine places the order it carries (market or
//! limit) with the funds checks of any new order, and a failure ends it `TriggerFailed` with the
//! reason. Reserving nothing keeps the conservation invariant untouched (a pending trigger is not
//! in any user's `locked`), at the price that a trigger may fail for lack of funds when it fires,
//! as on Backpack.
//!
//! Direction: a trigger *rises* (fires when `last ≥ trigger`) for a buy stop and a sell
//! take-profit, and *falls* (fires when `last ≤ trigger`) for a sell stop and a buy take-profit.
//! A trigger that the last trade price has already reached is refused when placed, so every
//! pending trigger lies beyond the last price in its direction.
//!
//! Firing order, deterministic: after a command that trades, all rising triggers the last price
//! reached fire first, lowest trigger price first (the order in which a rising price met them),
//! then all falling ones, highest trigger price first; equal trigger prices fire in order id
//! (time) order. Each direction is an ordered map in firing order, so every operation is
//! logarithmic in the number pending.
//!
//! Bounds: [`TRIGGER_ORDERS_PER_MARKET_MAX`] pending triggers per market, the engine's open-order
//! bound per user per market, and [`TRIGGERS_FIRED_PER_COMMAND_MAX`] triggers fired by one
//! command (a cascade: fired orders' trades fire more). Triggers reached but beyond that bound
//! stay pending and fire after the next order command on the market.
//!
//! Attached stop-loss / take-profit (an [`Attachment`] on an open limit or market order, the
//! *parent*): nothing exists but the attachment until the parent fills. Each fill of the parent
//! creates, or grows by the filled quantity, **one** child pair on the opposite side: a `Stop` at
//! the stop-loss trigger and a `TakeProfit` at the take-profit trigger, each a limit order at its
//! limit price or else a market order, linked as siblings. So a parent has at most one live pair
//! and [`ATTACHED_CHILDREN_MAX`] pending children. When a child fires, its sibling is canceled in
//! the same command (`OneCancelsOther`), before the fired order is placed; a later fill of the
//! parent starts a new pair. The attachment ends when the parent leaves the book (filled,
//! canceled, expired): its unfilled part never gets children; children already created stay.
//! An open attachment counts as [`ATTACHED_CHILDREN_MAX`] triggers against both bounds (per market
//! and per user), so that creating children during a fill can never exceed them.
//!
//! Every child is a valid order when it fires: a fill too small to make one (fewer lots than the
//! market's minimum quantity, or for a limit child a notional below the minimum notional at its
//! limit price) creates no child; its lots accumulate in the attachment
//! ([`Attachment::uncovered_lots`]) and the first fill that brings the accumulated quantity to a
//! valid order creates the missing children with all of it. Pending children grow by each fill
//! as before (growing keeps an order valid). Lots still accumulated when the parent leaves the
//! book stay without children (no valid order can protect them). Children hold no funds, so
//! none of this touches the ledger or conservation.
//!
//! The children's trigger prices are fixed when the parent is accepted and must stay on their
//! sides of the parent's limit price ([`Attachment::fits_price`]): a cancel-replace that moves
//! the parent's price past one of them is rejected (`InvalidTriggerPrice`).

use crate::FastMap;
use codec::{ClientOrderId, OrderId, OrderType, SelfTradePrevention, Side, TimeInForce, TriggerKind, UserId};
use std::collections::BTreeMap;

/// Most pending trigger orders one market holds.
pub const TRIGGER_ORDERS_PER_MARKET_MAX: usize = 1 << 16;

/// Children (stop-loss and take-profit) one attachment can have pending at a time.
pub const ATTACHED_CHILDREN_MAX: usize = 2;

/// Words per pending trigger in snapshots from format 5 on (the 13 of [`PendingTrigger::words`]
/// and its sibling).
#[cfg(test)]
pub(crate) const TRIGGER_WORDS_V5: usize = 14;

/// Words per attachment in snapshots from format 6 on ([`Attachment::words`]).
pub(crate) const ATTACHMENT_WORDS: usize = 10;

/// Words per attachment in format-5 snapshots (no [`Attachment::uncovered_lots`]).
pub(crate) const ATTACHMENT_WORDS_V5: usize = 9;

/// Attached stop-loss / take-profit of an open parent order: what its fills create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    /// The parent order (resting in the book, or matching as taker).
    pub parent_order_id: OrderId,
    /// Owner of the parent and of the children.
    pub user_id: UserId,
    /// Side of the parent (the children take the opposite side).
    pub parent_side: Side,
    /// Stop-loss trigger price in ticks (0: none).
    pub stop_loss_trigger_ticks: u64,
    /// Stop-loss limit price (0: the child is a market order).
    pub stop_loss_limit_ticks: u64,
    /// Take-profit trigger price in ticks (0: none).
    pub take_profit_trigger_ticks: u64,
    /// Take-profit limit price (0: the child is a market order).
    pub take_profit_limit_ticks: u64,
    /// The current stop-loss child (ZERO before the first fill; may have fired or been canceled
    /// since, in which case the next fill creates a new one).
    pub stop_loss_child: OrderId,
    /// The current take-profit child, likewise.
    pub take_profit_child: OrderId,
    /// Lots of the parent filled while a child was missing but too few to make it a valid order:
    /// they go into the next child created (see the module documentation).
    pub uncovered_lots: u64,
}

impl Attachment {
    /// The words that describe it in the state hash and in snapshots, in this order.
    pub(crate) fn words(&self) -> [u64; ATTACHMENT_WORDS] {
        use codec::WireEnum;
        [
            self.parent_order_id.get(),
            self.user_id.get(),
            u64::from(self.parent_side.code()),
            self.stop_loss_trigger_ticks,
            self.stop_loss_limit_ticks,
            self.take_profit_trigger_ticks,
            self.take_profit_limit_ticks,
            self.stop_loss_child.get(),
            self.take_profit_child.get(),
            self.uncovered_lots,
        ]
    }

    /// Whether its stop-loss lies on the losing side of `price_ticks` and its take-profit
    /// strictly on the winning side (see [`attached_prices_fit`]).
    pub fn fits_price(&self, price_ticks: u64) -> bool {
        attached_prices_fit(self.parent_side, price_ticks, self.stop_loss_trigger_ticks, self.take_profit_trigger_ticks)
    }

    /// The inverse of [`Self::words`]; `None` for an invalid side or an attachment with no leg.
    pub(crate) fn from_words(words: [u64; ATTACHMENT_WORDS]) -> Option<Self> {
        use codec::WireEnum;
        let attachment = Self {
            parent_order_id: OrderId::new(words[0]),
            user_id: UserId::new(words[1]),
            parent_side: Side::from_code(u16::try_from(words[2]).ok()?)?,
            stop_loss_trigger_ticks: words[3],
            stop_loss_limit_ticks: words[4],
            take_profit_trigger_ticks: words[5],
            take_profit_limit_ticks: words[6],
            stop_loss_child: OrderId::new(words[7]),
            take_profit_child: OrderId::new(words[8]),
            uncovered_lots: words[9],
        };
        (attachment.stop_loss_trigger_ticks != 0 || attachment.take_profit_trigger_ticks != 0).then_some(attachment)
    }
}

/// Whether an attached stop-loss (`stop_loss_ticks`, 0: none) and take-profit
/// (`take_profit_ticks`, 0: none) of a `parent_side` order priced at `price_ticks` lie on their
/// sides: a buy is protected by a stop below its price and takes profit above it, a sell the
/// reverse. A stop-loss at the price itself is on the losing side (it fires on any fall); a
/// take-profit at the price would fire at no profit, so it must be strictly beyond.
pub fn attached_prices_fit(parent_side: Side, price_ticks: u64, stop_loss_ticks: u64, take_profit_ticks: u64) -> bool {
    let losing = |trigger: u64| match parent_side {
        Side::Bid => trigger < price_ticks,
        Side::Ask => trigger > price_ticks,
    };
    (stop_loss_ticks == 0 || losing(stop_loss_ticks))
        && (take_profit_ticks == 0 || (take_profit_ticks != price_ticks && !losing(take_profit_ticks)))
}

/// Most trigger orders one command fires (its own trades and the cascade they cause together).
pub const TRIGGERS_FIRED_PER_COMMAND_MAX: usize = 64;

/// A pending trigger order: the order to place and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingTrigger {
    /// Exchange id, assigned when the trigger was accepted and kept by the order it places.
    pub order_id: OrderId,
    /// Owner.
    pub user_id: UserId,
    /// Client id (unique among the owner's open orders and pending triggers on the market).
    pub client_order_id: ClientOrderId,
    /// Side of the order it places.
    pub side: Side,
    /// Stop or take-profit (never `None`).
    pub kind: TriggerKind,
    /// Trigger price in ticks.
    pub trigger_price_ticks: u64,
    /// Market or limit.
    pub order_type: OrderType,
    /// Limit price (0 for a market order).
    pub price_ticks: u64,
    /// Quantity in lots (0 for a market order by quote quantity).
    pub quantity_lots: u64,
    /// Quote quantity of a market order by quote, else 0.
    pub quote_quantity: u64,
    /// Time in force of the order it places.
    pub time_in_force: TimeInForce,
    /// Self-trade prevention of the order it places.
    pub self_trade_prevention: SelfTradePrevention,
    /// Post-only flag of the order it places.
    pub post_only: bool,
    /// The other child of its attached stop-loss / take-profit pair, canceled when this one
    /// fires (ZERO: none; a sibling that no longer pends is ignored).
    pub sibling: OrderId,
}

impl PendingTrigger {
    /// Whether it fires when the price rises to its trigger (else when it falls to it).
    pub fn rises(&self) -> bool {
        matches!((self.kind, self.side), (TriggerKind::Stop, Side::Bid) | (TriggerKind::TakeProfit, Side::Ask))
    }

    /// Whether `last_price_ticks` has reached the trigger price in its direction.
    pub fn is_reached_by(&self, last_price_ticks: u64) -> bool {
        if self.rises() {
            last_price_ticks >= self.trigger_price_ticks
        } else {
            last_price_ticks <= self.trigger_price_ticks
        }
    }

    /// The 13 words that describe it in the state hash and in snapshots, in this order.
    pub(crate) fn words(&self) -> [u64; 13] {
        use codec::WireEnum;
        [
            self.order_id.get(),
            self.user_id.get(),
            self.client_order_id.get(),
            u64::from(self.side.code()),
            u64::from(self.kind.code()),
            self.trigger_price_ticks,
            u64::from(self.order_type.code()),
            self.price_ticks,
            self.quantity_lots,
            self.quote_quantity,
            u64::from(self.time_in_force.code()),
            u64::from(self.self_trade_prevention.code()),
            u64::from(self.post_only),
        ]
    }

    /// The inverse of [`Self::words`]; `None` for a word that is no valid code.
    pub(crate) fn from_words(words: [u64; 13]) -> Option<Self> {
        use codec::WireEnum;
        let code = |word: u64| u16::try_from(word).ok();
        let kind = TriggerKind::from_code(code(words[4])?)?;
        if kind == TriggerKind::None || words[12] > 1 {
            return None;
        }
        Some(Self {
            order_id: OrderId::new(words[0]),
            user_id: UserId::new(words[1]),
            client_order_id: ClientOrderId::new(words[2]),
            side: Side::from_code(code(words[3])?)?,
            kind,
            trigger_price_ticks: words[5],
            order_type: OrderType::from_code(code(words[6])?)?,
            price_ticks: words[7],
            quantity_lots: words[8],
            quote_quantity: words[9],
            time_in_force: TimeInForce::from_code(code(words[10])?)?,
            self_trade_prevention: SelfTradePrevention::from_code(code(words[11])?)?,
            post_only: words[12] == 1,
            sibling: OrderId::ZERO,
        })
    }
}

/// Where a pending trigger sorts among the others: its place in firing order. Rising triggers
/// (`rises`) fire lowest price first, falling ones highest price first; ties by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct FiringKey {
    /// The price in firing order: the trigger price for rising triggers, its complement
    /// (`u64::MAX − price`) for falling ones, so that ascending keys are firing order.
    ordinal: u64,
    order_id: OrderId,
}

impl FiringKey {
    fn of(trigger: &PendingTrigger) -> (bool, Self) {
        let rises = trigger.rises();
        let ordinal = if rises { trigger.trigger_price_ticks } else { u64::MAX - trigger.trigger_price_ticks };
        (rises, Self { ordinal, order_id: trigger.order_id })
    }
}

/// The pending triggers of one market in firing order (two ordered maps, rising and falling),
/// with indexes by id, by client id and per-user counts, so that every operation is logarithmic.
/// Only the firing-order maps are ever iterated (state hash, snapshots): their order is a
/// function of the triggers alone.
#[derive(Debug, Clone)]
pub struct TriggerBook {
    rising: BTreeMap<FiringKey, PendingTrigger>,
    falling: BTreeMap<FiringKey, PendingTrigger>,
    /// Id → (rises, firing key). Hash maps: looked up on every cancel and replace, never
    /// iterated (so their hasher cannot affect determinism).
    by_id: FastMap<OrderId, (bool, FiringKey)>,
    /// Attachments of open parents, by parent id (ordered: iterated for the hash and snapshots).
    attached: BTreeMap<OrderId, Attachment>,
    /// (owner, client id) → id, for client ids other than 0.
    by_client: FastMap<(UserId, ClientOrderId), OrderId>,
    /// Pending triggers per owner, plus [`ATTACHED_CHILDREN_MAX`] per open attachment.
    per_user: FastMap<UserId, usize>,
}

impl Default for TriggerBook {
    fn default() -> Self {
        Self {
            rising: BTreeMap::new(),
            falling: BTreeMap::new(),
            by_id: crate::new_map(0),
            attached: BTreeMap::new(),
            by_client: crate::new_map(0),
            per_user: crate::new_map(0),
        }
    }
}

impl TriggerBook {
    /// Number of pending triggers.
    pub fn len(&self) -> usize {
        self.rising.len() + self.falling.len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether another trigger fits (open attachments count as their children).
    pub fn has_capacity(&self) -> bool {
        self.has_capacity_for(1)
    }

    /// Whether `count` more triggers fit (open attachments count as their children).
    pub fn has_capacity_for(&self, count: usize) -> bool {
        self.len() + ATTACHED_CHILDREN_MAX * self.attached.len() + count <= TRIGGER_ORDERS_PER_MARKET_MAX
    }

    /// Records the attachment of an open parent; it counts as its children against the bounds.
    pub fn attach(&mut self, attachment: Attachment) {
        *self.per_user.entry(attachment.user_id).or_default() += ATTACHED_CHILDREN_MAX;
        self.attached.insert(attachment.parent_order_id, attachment);
    }

    /// Ends the attachment of a parent that left the book (no-op without one).
    pub fn detach(&mut self, parent_order_id: OrderId) {
        if let Some(attachment) = self.attached.remove(&parent_order_id) {
            self.uncount(attachment.user_id, ATTACHED_CHILDREN_MAX);
        }
    }

    /// The attachment of an open parent.
    pub fn attachment(&self, parent_order_id: OrderId) -> Option<&Attachment> {
        self.attached.get(&parent_order_id)
    }

    /// Records a parent's current children and the lots its missing children still await.
    pub(crate) fn set_children(
        &mut self,
        parent_order_id: OrderId,
        stop_loss: OrderId,
        take_profit: OrderId,
        uncovered_lots: u64,
    ) {
        if let Some(attachment) = self.attached.get_mut(&parent_order_id) {
            attachment.stop_loss_child = stop_loss;
            attachment.take_profit_child = take_profit;
            attachment.uncovered_lots = uncovered_lots;
        }
    }

    /// Whether no parent has an open attachment.
    pub fn is_empty_of_attachments(&self) -> bool {
        self.attached.is_empty()
    }

    /// Every open attachment, in parent id order.
    pub fn attachments(&self) -> impl Iterator<Item = &Attachment> {
        self.attached.values()
    }

    /// Links a pending trigger to its sibling.
    pub(crate) fn set_sibling(&mut self, order_id: OrderId, sibling: OrderId) {
        if let Some(&(rises, key)) = self.by_id.get(&order_id)
            && let Some(trigger) = self.list(rises).get_mut(&key)
        {
            trigger.sibling = sibling;
        }
    }

    fn uncount(&mut self, user_id: UserId, count: usize) {
        if let Some(entry) = self.per_user.get_mut(&user_id) {
            *entry -= count;
            if *entry == 0 {
                self.per_user.remove(&user_id);
            }
        }
    }

    /// Every pending trigger: rising ones then falling ones, each in firing order (a canonical
    /// order: the same set of triggers is always visited the same way).
    pub fn iter(&self) -> impl Iterator<Item = &PendingTrigger> {
        self.rising.values().chain(self.falling.values())
    }

    fn list(&mut self, rises: bool) -> &mut BTreeMap<FiringKey, PendingTrigger> {
        if rises { &mut self.rising } else { &mut self.falling }
    }

    /// Adds a trigger in its place.
    pub fn insert(&mut self, trigger: PendingTrigger) {
        let (rises, key) = FiringKey::of(&trigger);
        self.by_id.insert(trigger.order_id, (rises, key));
        if trigger.client_order_id != ClientOrderId::ZERO {
            self.by_client.insert((trigger.user_id, trigger.client_order_id), trigger.order_id);
        }
        *self.per_user.entry(trigger.user_id).or_default() += 1;
        self.list(rises).insert(key, trigger);
    }

    /// The trigger with this id.
    pub fn get(&self, order_id: OrderId) -> Option<&PendingTrigger> {
        let (rises, key) = self.by_id.get(&order_id)?;
        if *rises { self.rising.get(key) } else { self.falling.get(key) }
    }

    /// The owner's trigger with this client id.
    pub fn find_client_order(&self, user_id: UserId, client_order_id: ClientOrderId) -> Option<OrderId> {
        self.by_client.get(&(user_id, client_order_id)).copied()
    }

    /// How many triggers the user has pending here, an open attachment counting as
    /// [`ATTACHED_CHILDREN_MAX`].
    pub fn count_of(&self, user_id: UserId) -> usize {
        self.per_user.get(&user_id).copied().unwrap_or(0)
    }

    /// Appends the ids of the user's triggers to `out` (a scan: mass cancels only).
    pub fn orders_of(&self, user_id: UserId, out: &mut Vec<OrderId>) {
        if self.count_of(user_id) > 0 {
            out.extend(self.iter().filter(|t| t.user_id == user_id).map(|t| t.order_id));
        }
    }

    /// Drops a trigger that left the maps from the other indexes.
    fn unindex(&mut self, trigger: &PendingTrigger) {
        self.by_id.remove(&trigger.order_id);
        if trigger.client_order_id != ClientOrderId::ZERO {
            self.by_client.remove(&(trigger.user_id, trigger.client_order_id));
        }
        self.uncount(trigger.user_id, 1);
    }

    /// Removes and returns the trigger with this id.
    pub fn remove(&mut self, order_id: OrderId) -> Option<PendingTrigger> {
        let (rises, key) = *self.by_id.get(&order_id)?;
        let trigger = self.list(rises).remove(&key)?;
        self.unindex(&trigger);
        Some(trigger)
    }

    /// Changes the order a pending trigger places (its trigger, and so its place, are unchanged).
    pub fn amend(&mut self, order_id: OrderId, price_ticks: u64, quantity_lots: u64) {
        if let Some(&(rises, key)) = self.by_id.get(&order_id)
            && let Some(trigger) = self.list(rises).get_mut(&key)
        {
            trigger.price_ticks = price_ticks;
            trigger.quantity_lots = quantity_lots;
        }
    }

    /// Removes and returns the next trigger that `last_price_ticks` has reached, in firing order.
    pub fn pop_reached(&mut self, last_price_ticks: u64) -> Option<PendingTrigger> {
        if last_price_ticks == 0 {
            return None;
        }
        for rises in [true, false] {
            let list = self.list(rises);
            if list.first_key_value().is_some_and(|(_, t)| t.is_reached_by(last_price_ticks)) {
                let (_, trigger) = list.pop_first()?;
                self.unindex(&trigger);
                return Some(trigger);
            }
        }
        None
    }

    /// Checks the invariants: every trigger in the map of its direction under its own key, the
    /// indexes in step with the maps, the bound.
    ///
    /// # Errors
    /// A description of the first broken one.
    pub fn validate(&self) -> Result<(), String> {
        for (rises, list) in [(true, &self.rising), (false, &self.falling)] {
            for (key, trigger) in list {
                if FiringKey::of(trigger) != (rises, *key) {
                    return Err(format!("trigger {} filed under the wrong key", trigger.order_id));
                }
                if self.by_id.get(&trigger.order_id) != Some(&(rises, *key)) {
                    return Err(format!("trigger {} missing from the id index", trigger.order_id));
                }
            }
        }
        let per_user_total: usize = self.per_user.values().sum();
        if self.by_id.len() != self.len() || per_user_total != self.len() + ATTACHED_CHILDREN_MAX * self.attached.len()
        {
            return Err("trigger indexes out of step with the lists".into());
        }
        for (parent, attachment) in &self.attached {
            if *parent != attachment.parent_order_id
                || (attachment.stop_loss_trigger_ticks == 0 && attachment.take_profit_trigger_ticks == 0)
            {
                return Err(format!("attachment of {parent} malformed"));
            }
        }
        if self.len() > TRIGGER_ORDERS_PER_MARKET_MAX {
            return Err(format!("{} pending triggers", self.len()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(order_id: u64, side: Side, kind: TriggerKind, price: u64) -> PendingTrigger {
        PendingTrigger {
            order_id: OrderId::new(order_id),
            user_id: UserId::new(1),
            client_order_id: ClientOrderId::ZERO,
            side,
            kind,
            trigger_price_ticks: price,
            order_type: OrderType::Market,
            price_ticks: 0,
            quantity_lots: 1,
            quote_quantity: 0,
            time_in_force: TimeInForce::Ioc,
            self_trade_prevention: SelfTradePrevention::Allow,
            post_only: false,
            sibling: OrderId::ZERO,
        }
    }

    /// Rising triggers fire lowest price first, falling ones highest first, ties by id.
    #[test]
    fn fires_in_price_then_time_order() {
        let mut book = TriggerBook::default();
        book.insert(trigger(3, Side::Bid, TriggerKind::Stop, 110));
        book.insert(trigger(1, Side::Bid, TriggerKind::Stop, 105));
        book.insert(trigger(4, Side::Ask, TriggerKind::TakeProfit, 105));
        book.insert(trigger(2, Side::Bid, TriggerKind::Stop, 120));
        book.insert(trigger(5, Side::Ask, TriggerKind::Stop, 90));
        book.insert(trigger(6, Side::Bid, TriggerKind::TakeProfit, 95));
        book.validate().unwrap();
        let mut fired = Vec::new();
        while let Some(t) = book.pop_reached(115) {
            fired.push(t.order_id.get());
        }
        assert_eq!(fired, [1, 4, 3]);
        while let Some(t) = book.pop_reached(80) {
            fired.push(t.order_id.get());
        }
        assert_eq!(fired, [1, 4, 3, 6, 5]);
        assert_eq!(book.len(), 1);
        let words = book.get(OrderId::new(2)).unwrap().words();
        assert_eq!(PendingTrigger::from_words(words), book.get(OrderId::new(2)).copied());
    }
}
