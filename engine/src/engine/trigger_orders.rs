//! The engine's side of trigger orders: accepting one, firing those the last trade price reached,
//! and letting cancel, mass cancel and cancel-replace reach pending ones. The pending set itself
//! and its rules are in [`crate::triggers`].

use super::{CommandContext, Engine, Outcome};
use crate::book::Book;
use crate::event_sink::EventSink;
use crate::triggers::{
    ATTACHED_CHILDREN_MAX, Attachment, PendingTrigger, TRIGGERS_FIRED_PER_COMMAND_MAX, attached_prices_fit,
};
use codec::{
    CancelReason, CancelReplace, ClientOrderId, Event, Lots, NewOrder, OrderCanceled, OrderId, OrderReplaced,
    RejectReason, Reserved, Side, SideFilter, Ticks, TriggerFailed, TriggerKind, TriggerPending, TriggerPlaced, UserId,
};

impl<B: Book> Engine<B> {
    /// Records a trigger order whose fields `new_order` has already checked like any order's
    /// (shape, quantities, notional, client id); the trigger itself is checked here.
    pub(super) fn accept_trigger(
        &mut self,
        ctx: CommandContext,
        mi: usize,
        m: &NewOrder,
        kind: TriggerKind,
        out: &mut impl EventSink,
    ) -> Outcome {
        let invalid = |_| RejectReason::InvalidEnumValue;
        let market = &self.markets[mi];
        let config = &market.spec.config;
        let side = m.side.get().map_err(invalid)?;
        let kind = match kind {
            TriggerKind::Cross => {
                let reference = crate::bands::reference_price(
                    market.last_trade_ticks,
                    market.book.best_price(Side::Bid).map(Ticks::get),
                    market.book.best_price(Side::Ask).map(Ticks::get),
                );
                let trigger = m.trigger_price_ticks.get();
                if reference == 0 || trigger == reference {
                    return Err(RejectReason::InvalidTriggerPrice);
                }
                // Above the reference it fires on a rise: a buy's stop, a sell's take-profit.
                match (trigger > reference, side) {
                    (true, Side::Bid) | (false, Side::Ask) => TriggerKind::Stop,
                    (true, Side::Ask) | (false, Side::Bid) => TriggerKind::TakeProfit,
                }
            }
            kind => kind,
        };
        let trigger = PendingTrigger {
            order_id: OrderId::new(self.next_order_id),
            user_id: m.user_id,
            client_order_id: m.client_order_id,
            side,
            kind,
            trigger_price_ticks: m.trigger_price_ticks.get(),
            order_type: m.order_type.get().map_err(invalid)?,
            price_ticks: m.price_ticks.get(),
            quantity_lots: m.quantity_lots.get(),
            quote_quantity: m.quote_quantity.get(),
            time_in_force: m.time_in_force.get().map_err(invalid)?,
            self_trade_prevention: m.self_trade_prevention.get().map_err(invalid)?,
            post_only: bool::from(m.post_only.get().map_err(invalid)?),
            sibling: OrderId::ZERO,
        };
        if trigger.trigger_price_ticks == 0
            || trigger.trigger_price_ticks > config.max_price_ticks
            || (market.last_trade_ticks != 0 && trigger.is_reached_by(market.last_trade_ticks))
        {
            return Err(RejectReason::InvalidTriggerPrice);
        }
        if !market.triggers.has_capacity() {
            return Err(RejectReason::BookFull);
        }
        if market.triggers.count_of(m.user_id) >= self.limits.open_orders_per_user_max {
            return Err(RejectReason::TooManyTriggerOrders);
        }

        self.next_order_id += 1;
        self.markets[mi].triggers.insert(trigger);
        out.push(Event::TriggerPending(TriggerPending {
            sequence: ctx.sequence,
            timestamp_ns: ctx.timestamp_ns,
            user_id: m.user_id,
            order_id: trigger.order_id,
            client_order_id: m.client_order_id,
            trigger_price_ticks: m.trigger_price_ticks,
            price_ticks: m.price_ticks,
            quantity_lots: m.quantity_lots,
            quote_quantity: m.quote_quantity,
            market_id: m.market_id,
            side: m.side,
            order_type: m.order_type,
            time_in_force: m.time_in_force,
            self_trade_prevention: m.self_trade_prevention,
            post_only: m.post_only,
            trigger_kind: kind.into(),
            reserved: Reserved::ZERO,
        }));
        Ok(())
    }

    /// Fires, one at a time in firing order, the triggers the market's last trade price has
    /// reached: each places its order (which may trade and move the price, reaching more), at
    /// most [`TRIGGERS_FIRED_PER_COMMAND_MAX`] per command. Kept out of line: inlined, it made
    /// every command's `execute` frame larger, though few commands fire anything.
    #[inline(never)]
    pub(super) fn fire_triggers(&mut self, ctx: CommandContext, mi: usize, out: &mut impl EventSink) {
        for _ in 0..TRIGGERS_FIRED_PER_COMMAND_MAX {
            let market = &mut self.markets[mi];
            let last_price = market.last_trade_ticks;
            let Some(trigger) = market.triggers.pop_reached(last_price) else { return };
            let market_id = market.spec.config.id;
            // One cancels the other: the sibling goes first, so that it can never fire too.
            if trigger.sibling != OrderId::ZERO {
                self.cancel_trigger(ctx, mi, trigger.sibling, CancelReason::OneCancelsOther, out);
            }
            out.push(Event::TriggerPlaced(TriggerPlaced {
                sequence: ctx.sequence,
                timestamp_ns: ctx.timestamp_ns,
                user_id: trigger.user_id,
                order_id: trigger.order_id,
                client_order_id: trigger.client_order_id,
                trigger_price_ticks: Ticks::new(trigger.trigger_price_ticks),
                last_price_ticks: Ticks::new(last_price),
                market_id,
                side: trigger.side.into(),
                trigger_kind: trigger.kind.into(),
                reserved: Reserved::ZERO,
            }));
            let order = NewOrder {
                user_id: trigger.user_id,
                client_order_id: trigger.client_order_id,
                price_ticks: Ticks::new(trigger.price_ticks),
                quantity_lots: Lots::new(trigger.quantity_lots),
                quote_quantity: codec::Amount::new(trigger.quote_quantity),
                market_id,
                side: trigger.side.into(),
                order_type: trigger.order_type.into(),
                time_in_force: trigger.time_in_force.into(),
                self_trade_prevention: trigger.self_trade_prevention.into(),
                post_only: trigger.post_only.into(),
                ..NewOrder::default()
            };
            if let Err(reason) = self.new_order(ctx, &order, Some(trigger.order_id), out) {
                out.push(Event::TriggerFailed(TriggerFailed {
                    sequence: ctx.sequence,
                    timestamp_ns: ctx.timestamp_ns,
                    user_id: trigger.user_id,
                    order_id: trigger.order_id,
                    client_order_id: trigger.client_order_id,
                    market_id,
                    reason: reason.into(),
                    side: trigger.side.into(),
                    trigger_kind: trigger.kind.into(),
                }));
            }
        }
    }

    /// The caller's pending trigger named by id or client id: `Ok(None)` when no trigger has that
    /// id (it may be a resting order), `NotOrderOwner` when another user's trigger has it.
    pub(super) fn find_own_trigger(
        &self,
        mi: usize,
        user_id: UserId,
        order_id: OrderId,
        client_order_id: ClientOrderId,
    ) -> Result<Option<OrderId>, RejectReason> {
        let triggers = &self.markets[mi].triggers;
        if triggers.is_empty() {
            return Ok(None);
        }
        if order_id != OrderId::ZERO {
            return match triggers.get(order_id) {
                Some(trigger) if trigger.user_id != user_id => Err(RejectReason::NotOrderOwner),
                Some(_) => Ok(Some(order_id)),
                None => Ok(None),
            };
        }
        if client_order_id != ClientOrderId::ZERO {
            return Ok(triggers.find_client_order(user_id, client_order_id));
        }
        Ok(None)
    }

    /// Removes a pending trigger (it holds no funds) and reports it canceled.
    pub(super) fn cancel_trigger(
        &mut self,
        ctx: CommandContext,
        mi: usize,
        order_id: OrderId,
        reason: CancelReason,
        out: &mut impl EventSink,
    ) {
        let market = &mut self.markets[mi];
        let Some(trigger) = market.triggers.remove(order_id) else { return };
        out.push(Event::OrderCanceled(OrderCanceled {
            sequence: ctx.sequence,
            timestamp_ns: ctx.timestamp_ns,
            user_id: trigger.user_id,
            order_id,
            client_order_id: trigger.client_order_id,
            filled_lots: Lots::ZERO,
            canceled_lots: Lots::new(trigger.quantity_lots),
            market_id: market.spec.config.id,
            side: trigger.side.into(),
            reason: reason.into(),
            reserved: Reserved::ZERO,
        }));
    }

    /// Cancels the user's pending triggers on a market that match `filter`, in id order; returns
    /// how many. `ids` is scratch space.
    pub(super) fn mass_cancel_triggers(
        &mut self,
        ctx: CommandContext,
        mi: usize,
        user_id: UserId,
        filter: SideFilter,
        ids: &mut Vec<OrderId>,
        out: &mut impl EventSink,
    ) -> u32 {
        ids.clear();
        self.markets[mi].triggers.orders_of(user_id, ids);
        ids.sort_unstable();
        let mut canceled = 0;
        for &order_id in ids.iter() {
            let side = self.markets[mi].triggers.get(order_id).map(|t| t.side);
            let wanted = side.is_some_and(|side| filter.admits(side));
            if wanted {
                self.cancel_trigger(ctx, mi, order_id, CancelReason::MassCancel, out);
                canceled += 1;
            }
        }
        canceled
    }

    /// Amends the order a pending trigger will place: a limit trigger's price and/or quantity, a
    /// market trigger's quantity. Its trigger price and its place among the triggers stay.
    pub(super) fn replace_trigger(
        &mut self,
        ctx: CommandContext,
        mi: usize,
        order_id: OrderId,
        m: &CancelReplace,
        out: &mut impl EventSink,
    ) -> Outcome {
        let market = &self.markets[mi];
        let spec = &market.spec;
        let config = &spec.config;
        let trigger = *market.triggers.get(order_id).ok_or(RejectReason::UnknownOrder)?;
        let is_limit = trigger.order_type == codec::OrderType::Limit;
        if (!is_limit && m.new_price_ticks.get() != 0) || (trigger.quantity_lots == 0 && m.new_quantity_lots.get() != 0)
        {
            return Err(RejectReason::InvalidReplace);
        }
        let new_price = if m.new_price_ticks.get() == 0 { trigger.price_ticks } else { m.new_price_ticks.get() };
        let new_quantity =
            if m.new_quantity_lots.get() == 0 { trigger.quantity_lots } else { m.new_quantity_lots.get() };
        if new_price == trigger.price_ticks && new_quantity == trigger.quantity_lots {
            return Err(RejectReason::InvalidReplace);
        }
        if new_price > config.max_price_ticks {
            return Err(RejectReason::InvalidPrice);
        }
        if new_quantity > config.max_quantity_lots {
            return Err(RejectReason::QuantityAboveMaximum);
        }
        if new_quantity < config.min_quantity_lots {
            return Err(RejectReason::QuantityBelowMinimum);
        }
        if is_limit
            && spec.notional(new_price, new_quantity).ok_or(RejectReason::ArithmeticOverflow)? < config.min_notional
        {
            return Err(RejectReason::NotionalBelowMinimum);
        }
        self.markets[mi].triggers.amend(order_id, new_price, new_quantity);
        out.push(Event::OrderReplaced(OrderReplaced {
            sequence: ctx.sequence,
            timestamp_ns: ctx.timestamp_ns,
            user_id: trigger.user_id,
            order_id,
            client_order_id: trigger.client_order_id,
            price_ticks: Ticks::new(new_price),
            quantity_lots: Lots::new(new_quantity),
            filled_lots: Lots::ZERO,
            remaining_lots: Lots::new(new_quantity),
            market_id: m.market_id,
            side: trigger.side.into(),
            priority_kept: true.into(),
            reserved: Reserved::ZERO,
        }));
        Ok(())
    }

    /// The attached stop-loss / take-profit of a new order, checked: `Ok(None)` without one.
    /// A trigger order (or the order a trigger places) cannot carry one; a limit price needs its
    /// trigger; the stop-loss must lie on the losing side of the parent's price (its limit price,
    /// or for a market order the market's reference price) and the take-profit on the winning
    /// side; the open attachment must fit the trigger bounds as its two children.
    pub(super) fn check_attachment(
        &self,
        mi: usize,
        m: &NewOrder,
        side: Side,
        is_trigger: bool,
    ) -> Result<Option<Attachment>, RejectReason> {
        let (stop_loss, stop_loss_limit) = (m.stop_loss_trigger_ticks.get(), m.stop_loss_limit_ticks.get());
        let (take_profit, take_profit_limit) = (m.take_profit_trigger_ticks.get(), m.take_profit_limit_ticks.get());
        if stop_loss == 0 && stop_loss_limit == 0 && take_profit == 0 && take_profit_limit == 0 {
            return Ok(None);
        }
        if is_trigger {
            return Err(RejectReason::InvalidOrderType);
        }
        let market = &self.markets[mi];
        let config = &market.spec.config;
        if (stop_loss == 0 && stop_loss_limit != 0) || (take_profit == 0 && take_profit_limit != 0) {
            return Err(RejectReason::InvalidTriggerPrice);
        }
        if stop_loss > config.max_price_ticks || take_profit > config.max_price_ticks {
            return Err(RejectReason::InvalidTriggerPrice);
        }
        if stop_loss_limit > config.max_price_ticks || take_profit_limit > config.max_price_ticks {
            return Err(RejectReason::InvalidPrice);
        }
        let reference = match m.price_ticks.get() {
            0 => crate::bands::reference_price(
                market.last_trade_ticks,
                market.book.best_price(Side::Bid).map(Ticks::get),
                market.book.best_price(Side::Ask).map(Ticks::get),
            ),
            limit => limit,
        };
        if !attached_prices_fit(side, reference, stop_loss, take_profit) {
            return Err(RejectReason::InvalidTriggerPrice);
        }
        if !market.triggers.has_capacity_for(ATTACHED_CHILDREN_MAX) {
            return Err(RejectReason::BookFull);
        }
        if market.triggers.count_of(m.user_id) + ATTACHED_CHILDREN_MAX > self.limits.open_orders_per_user_max {
            return Err(RejectReason::TooManyTriggerOrders);
        }
        Ok(Some(Attachment {
            parent_order_id: OrderId::ZERO,
            user_id: m.user_id,
            parent_side: side,
            stop_loss_trigger_ticks: stop_loss,
            stop_loss_limit_ticks: stop_loss_limit,
            take_profit_trigger_ticks: take_profit,
            take_profit_limit_ticks: take_profit_limit,
            stop_loss_child: OrderId::ZERO,
            take_profit_child: OrderId::ZERO,
            uncovered_lots: 0,
        }))
    }

    /// After a fill of `lots` of a parent with an attachment: grows each pending child of its
    /// pair by `lots` (reported as a replace), and creates each child that does not pend (first
    /// fill, or it fired or was canceled since) with `lots` plus the lots accumulated before, once
    /// that quantity makes every missing child a valid order (else the lots accumulate); links
    /// the pair as siblings.
    pub(super) fn grow_attached(
        &mut self,
        ctx: CommandContext,
        mi: usize,
        parent_order_id: OrderId,
        lots: u64,
        out: &mut impl EventSink,
    ) {
        let Some(attachment) = self.markets[mi].triggers.attachment(parent_order_id).copied() else { return };
        let market_id = self.markets[mi].spec.config.id;
        let side = attachment.parent_side.opposite();
        let mut children = [OrderId::ZERO; ATTACHED_CHILDREN_MAX];
        // Bounded: the accumulated lots never exceed what the parent filled.
        let unprotected = attachment.uncovered_lots + lots;
        let triggers = &self.markets[mi].triggers;
        let missing = |trigger_ticks: u64, child: OrderId| trigger_ticks != 0 && triggers.get(child).is_none();
        let any_missing = missing(attachment.stop_loss_trigger_ticks, attachment.stop_loss_child)
            || missing(attachment.take_profit_trigger_ticks, attachment.take_profit_child);
        // A missing child is created only as a valid order (see `crate::triggers`).
        let create_missing = [
            (attachment.stop_loss_trigger_ticks, attachment.stop_loss_limit_ticks, attachment.stop_loss_child),
            (attachment.take_profit_trigger_ticks, attachment.take_profit_limit_ticks, attachment.take_profit_child),
        ]
        .into_iter()
        .all(|(trigger_ticks, limit_ticks, child)| {
            !missing(trigger_ticks, child) || self.is_valid_child(mi, limit_ticks, unprotected)
        });
        let legs = [
            (
                TriggerKind::Stop,
                attachment.stop_loss_trigger_ticks,
                attachment.stop_loss_limit_ticks,
                attachment.stop_loss_child,
            ),
            (
                TriggerKind::TakeProfit,
                attachment.take_profit_trigger_ticks,
                attachment.take_profit_limit_ticks,
                attachment.take_profit_child,
            ),
        ];
        for (slot, (kind, trigger_ticks, limit_ticks, child)) in children.iter_mut().zip(legs) {
            if trigger_ticks == 0 {
                continue;
            }
            let triggers = &mut self.markets[mi].triggers;
            if let Some(pending) = triggers.get(child).copied() {
                // Bounded: the children together never exceed what the parent filled.
                let quantity = pending.quantity_lots + lots;
                triggers.amend(child, pending.price_ticks, quantity);
                *slot = child;
                out.push(Event::OrderReplaced(OrderReplaced {
                    sequence: ctx.sequence,
                    timestamp_ns: ctx.timestamp_ns,
                    user_id: pending.user_id,
                    order_id: child,
                    client_order_id: ClientOrderId::ZERO,
                    price_ticks: Ticks::new(pending.price_ticks),
                    quantity_lots: Lots::new(quantity),
                    filled_lots: Lots::ZERO,
                    remaining_lots: Lots::new(quantity),
                    market_id,
                    side: side.into(),
                    priority_kept: true.into(),
                    reserved: Reserved::ZERO,
                }));
                continue;
            }
            if !create_missing {
                continue;
            }
            let lots = unprotected;
            let order_type = if limit_ticks == 0 { codec::OrderType::Market } else { codec::OrderType::Limit };
            let trigger = PendingTrigger {
                order_id: OrderId::new(self.next_order_id),
                user_id: attachment.user_id,
                client_order_id: ClientOrderId::ZERO,
                side,
                kind,
                trigger_price_ticks: trigger_ticks,
                order_type,
                price_ticks: limit_ticks,
                quantity_lots: lots,
                quote_quantity: 0,
                time_in_force: if limit_ticks == 0 { codec::TimeInForce::Ioc } else { codec::TimeInForce::Gtc },
                self_trade_prevention: codec::SelfTradePrevention::Allow,
                post_only: false,
                sibling: OrderId::ZERO,
            };
            self.next_order_id += 1;
            self.markets[mi].triggers.insert(trigger);
            *slot = trigger.order_id;
            out.push(Event::TriggerPending(TriggerPending {
                sequence: ctx.sequence,
                timestamp_ns: ctx.timestamp_ns,
                user_id: trigger.user_id,
                order_id: trigger.order_id,
                client_order_id: ClientOrderId::ZERO,
                trigger_price_ticks: Ticks::new(trigger_ticks),
                price_ticks: Ticks::new(limit_ticks),
                quantity_lots: Lots::new(lots),
                quote_quantity: codec::Amount::ZERO,
                market_id,
                side: side.into(),
                order_type: order_type.into(),
                time_in_force: trigger.time_in_force.into(),
                self_trade_prevention: trigger.self_trade_prevention.into(),
                post_only: false.into(),
                trigger_kind: kind.into(),
                reserved: Reserved::ZERO,
            }));
        }
        let [stop_loss, take_profit] = children;
        let triggers = &mut self.markets[mi].triggers;
        let uncovered_lots = if any_missing && !create_missing { unprotected } else { 0 };
        triggers.set_children(parent_order_id, stop_loss, take_profit, uncovered_lots);
        if stop_loss != OrderId::ZERO && take_profit != OrderId::ZERO {
            triggers.set_sibling(stop_loss, take_profit);
            triggers.set_sibling(take_profit, stop_loss);
        }
    }

    /// Whether `quantity_lots` makes an attached child with limit price `limit_ticks` (0: a
    /// market order) a valid order of the market: at least its minimum quantity and, for a limit
    /// child, its minimum notional. (Never above the maximum: the children never hold more than
    /// the parent filled.)
    fn is_valid_child(&self, mi: usize, limit_ticks: u64, quantity_lots: u64) -> bool {
        let spec = &self.markets[mi].spec;
        quantity_lots >= spec.config.min_quantity_lots
            && (limit_ticks == 0
                || spec
                    .notional(limit_ticks, quantity_lots)
                    .is_some_and(|notional| notional >= spec.config.min_notional))
    }
}
