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
//! (time) order. Each list is kept sorted so that the next trigger to fire is at its end.
//!
//! Bounds: [`TRIGGER_ORDERS_PER_MARKET_MAX`] pending triggers per market, the engine's open-order
//! bound per user per market, and [`TRIGGERS_FIRED_PER_COMMAND_MAX`] triggers fired by one
//! command (a cascade: fired orders' trades fire more). Triggers reached but beyond that bound
//! stay pending and fire after the next order command on the market.

use codec::{ClientOrderId, OrderId, OrderType, SelfTradePrevention, Side, TimeInForce, TriggerKind, UserId};

/// Most pending trigger orders one market holds.
pub const TRIGGER_ORDERS_PER_MARKET_MAX: usize = 1 << 16;

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
        })
    }
}

/// The pending triggers of one market, in firing order.
#[derive(Debug, Clone, Default)]
pub struct TriggerBook {
    /// Rising triggers sorted by (price, id) descending: the next to fire is the last.
    rising: Vec<PendingTrigger>,
    /// Falling triggers sorted by price ascending, id descending: the next to fire is the last.
    falling: Vec<PendingTrigger>,
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

    /// Whether another trigger fits.
    pub fn has_capacity(&self) -> bool {
        self.len() < TRIGGER_ORDERS_PER_MARKET_MAX
    }

    /// Every pending trigger: rising ones then falling ones, each in firing order (a canonical
    /// order: the same set of triggers is always visited the same way).
    pub fn iter(&self) -> impl Iterator<Item = &PendingTrigger> {
        self.rising.iter().rev().chain(self.falling.iter().rev())
    }

    /// Adds a trigger in its place.
    pub fn insert(&mut self, trigger: PendingTrigger) {
        if trigger.rises() {
            let key = (trigger.trigger_price_ticks, trigger.order_id);
            let at = self.rising.partition_point(|t| (t.trigger_price_ticks, t.order_id) > key);
            self.rising.insert(at, trigger);
        } else {
            let key = (trigger.trigger_price_ticks, core::cmp::Reverse(trigger.order_id));
            let at = self.falling.partition_point(|t| (t.trigger_price_ticks, core::cmp::Reverse(t.order_id)) < key);
            self.falling.insert(at, trigger);
        }
    }

    /// The trigger with this id.
    pub fn get(&self, order_id: OrderId) -> Option<&PendingTrigger> {
        self.iter().find(|t| t.order_id == order_id)
    }

    /// The owner's trigger with this client id.
    pub fn find_client_order(&self, user_id: UserId, client_order_id: ClientOrderId) -> Option<OrderId> {
        self.iter().find(|t| t.user_id == user_id && t.client_order_id == client_order_id).map(|t| t.order_id)
    }

    /// How many triggers the user has pending here.
    pub fn count_of(&self, user_id: UserId) -> usize {
        self.iter().filter(|t| t.user_id == user_id).count()
    }

    /// Appends the ids of the user's triggers to `out`.
    pub fn orders_of(&self, user_id: UserId, out: &mut Vec<OrderId>) {
        out.extend(self.iter().filter(|t| t.user_id == user_id).map(|t| t.order_id));
    }

    /// Removes and returns the trigger with this id.
    pub fn remove(&mut self, order_id: OrderId) -> Option<PendingTrigger> {
        for list in [&mut self.rising, &mut self.falling] {
            if let Some(at) = list.iter().position(|t| t.order_id == order_id) {
                return Some(list.remove(at));
            }
        }
        None
    }

    /// Changes the order a pending trigger places (its trigger, and so its place, are unchanged).
    pub fn amend(&mut self, order_id: OrderId, price_ticks: u64, quantity_lots: u64) {
        for list in [&mut self.rising, &mut self.falling] {
            if let Some(trigger) = list.iter_mut().find(|t| t.order_id == order_id) {
                trigger.price_ticks = price_ticks;
                trigger.quantity_lots = quantity_lots;
            }
        }
    }

    /// Removes and returns the next trigger that `last_price_ticks` has reached, in firing order.
    pub fn pop_reached(&mut self, last_price_ticks: u64) -> Option<PendingTrigger> {
        if last_price_ticks == 0 {
            return None;
        }
        for list in [&mut self.rising, &mut self.falling] {
            if list.last().is_some_and(|t| t.is_reached_by(last_price_ticks)) {
                return list.pop();
            }
        }
        None
    }

    /// Checks the ordering invariants.
    ///
    /// # Errors
    /// A description of the first broken one.
    pub fn validate(&self) -> Result<(), String> {
        let sorted_rising = self
            .rising
            .windows(2)
            .all(|w| (w[0].trigger_price_ticks, w[0].order_id) > (w[1].trigger_price_ticks, w[1].order_id));
        let sorted_falling = self.falling.windows(2).all(|w| {
            (w[0].trigger_price_ticks, core::cmp::Reverse(w[0].order_id))
                < (w[1].trigger_price_ticks, core::cmp::Reverse(w[1].order_id))
        });
        if !sorted_rising || !sorted_falling {
            return Err("trigger lists out of order".into());
        }
        if self.rising.iter().any(|t| !t.rises()) || self.falling.iter().any(PendingTrigger::rises) {
            return Err("trigger in the wrong direction's list".into());
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
