//! The JSON form of engine events (Kafka payloads, Postgres `order_events.details`).
//!
//! One object per event: `type` (the SBE message name in snake case), `template_id`, `sequence`,
//! `timestamp_ns`, then the event's fields under their schema names, every number an integer in
//! the engine's units (prices in ticks, quantities in lots, amounts in the asset's minor units;
//! docs/architecture.md "Units"), enums as their wire codes. Integers can exceed 2^53: parse them
//! as 64-bit integers.

use codec::Event;
use serde_json::{Value, json};

/// The event's SBE template id.
pub fn template_id(event: &Event) -> u16 {
    event.template_id()
}

/// The event's type name in snake case.
pub fn type_name(event: &Event) -> &'static str {
    match event {
        Event::OrderAccepted(_) => "order_accepted",
        Event::OrderRejected(_) => "order_rejected",
        Event::Fill(_) => "fill",
        Event::OrderCanceled(_) => "order_canceled",
        Event::OrderExpired(_) => "order_expired",
        Event::OrderReplaced(_) => "order_replaced",
        Event::BookLevelUpdate(_) => "book_level_update",
        Event::BalanceUpdate(_) => "balance_update",
        Event::MassCancelReport(_) => "mass_cancel_report",
        Event::MarketStatusChanged(_) => "market_status_changed",
        Event::LiquidityAdded(_) => "liquidity_added",
        Event::LiquidityRemoved(_) => "liquidity_removed",
        Event::SwapExecuted(_) => "swap_executed",
        Event::OrderRouted(_) => "order_routed",
        Event::TriggerPending(_) => "trigger_pending",
        Event::TriggerPlaced(_) => "trigger_placed",
        Event::TriggerFailed(_) => "trigger_failed",
    }
}

/// The event's fields (without `type`, `sequence`, `timestamp_ns`).
pub fn fields(event: &Event) -> Value {
    match event {
        Event::OrderAccepted(m) => json!({
            "user_id": m.user_id.get(), "order_id": m.order_id.get(), "client_order_id": m.client_order_id.get(),
            "price_ticks": m.price_ticks.get(), "quantity_lots": m.quantity_lots.get(),
            "quote_quantity": m.quote_quantity.get(), "market_id": m.market_id.get(), "side": m.side.raw(),
            "order_type": m.order_type.raw(), "time_in_force": m.time_in_force.raw(),
            "self_trade_prevention": m.self_trade_prevention.raw(), "post_only": m.post_only.raw(),
            "stop_loss_trigger_ticks": m.stop_loss_trigger_ticks.get(),
            "stop_loss_limit_ticks": m.stop_loss_limit_ticks.get(),
            "take_profit_trigger_ticks": m.take_profit_trigger_ticks.get(),
            "take_profit_limit_ticks": m.take_profit_limit_ticks.get(),
        }),
        Event::OrderRejected(m) => json!({
            "user_id": m.user_id.get(), "client_order_id": m.client_order_id.get(), "order_id": m.order_id.get(),
            "market_id": m.market_id.get(), "reason": m.reason.raw(), "command_template_id": m.command_template_id.get(),
        }),
        Event::Fill(m) => json!({
            "trade_id": m.trade_id.get(), "price_ticks": m.price_ticks.get(), "quantity_lots": m.quantity_lots.get(),
            "quote_amount": m.quote_amount.get(), "maker_user_id": m.maker_user_id.get(),
            "maker_order_id": m.maker_order_id.get(), "maker_client_order_id": m.maker_client_order_id.get(),
            "maker_remaining_lots": m.maker_remaining_lots.get(), "maker_fee": m.maker_fee.get(),
            "taker_user_id": m.taker_user_id.get(), "taker_order_id": m.taker_order_id.get(),
            "taker_client_order_id": m.taker_client_order_id.get(), "taker_remaining_lots": m.taker_remaining_lots.get(),
            "taker_fee": m.taker_fee.get(), "market_id": m.market_id.get(), "taker_side": m.taker_side.raw(),
            "taker_order_complete": m.taker_order_complete.raw(),
        }),
        Event::OrderCanceled(m) => json!({
            "user_id": m.user_id.get(), "order_id": m.order_id.get(), "client_order_id": m.client_order_id.get(),
            "filled_lots": m.filled_lots.get(), "canceled_lots": m.canceled_lots.get(), "market_id": m.market_id.get(),
            "side": m.side.raw(), "reason": m.reason.raw(),
        }),
        Event::OrderExpired(m) => json!({
            "user_id": m.user_id.get(), "order_id": m.order_id.get(), "client_order_id": m.client_order_id.get(),
            "filled_lots": m.filled_lots.get(), "expired_lots": m.expired_lots.get(), "market_id": m.market_id.get(),
            "side": m.side.raw(), "reason": m.reason.raw(),
        }),
        Event::OrderReplaced(m) => json!({
            "user_id": m.user_id.get(), "order_id": m.order_id.get(), "client_order_id": m.client_order_id.get(),
            "price_ticks": m.price_ticks.get(), "quantity_lots": m.quantity_lots.get(), "filled_lots": m.filled_lots.get(),
            "remaining_lots": m.remaining_lots.get(), "market_id": m.market_id.get(), "side": m.side.raw(),
            "priority_kept": m.priority_kept.raw(),
        }),
        Event::BookLevelUpdate(m) => json!({
            "price_ticks": m.price_ticks.get(), "quantity_lots": m.quantity_lots.get(),
            "order_count": m.order_count.get(), "market_id": m.market_id.get(), "side": m.side.raw(),
        }),
        Event::BalanceUpdate(m) => json!({
            "user_id": m.user_id.get(), "available": m.available.get(), "locked": m.locked.get(),
            "asset_id": m.asset_id.get(), "reason": m.reason.raw(),
        }),
        Event::MassCancelReport(m) => json!({
            "user_id": m.user_id.get(), "market_id": m.market_id.get(), "canceled_count": m.canceled_count.get(),
            "side": m.side.raw(),
        }),
        Event::MarketStatusChanged(m) => json!({ "market_id": m.market_id.get(), "halted": m.halted.raw() }),
        Event::LiquidityAdded(m) => json!({
            "user_id": m.user_id.get(), "base_amount": m.base_amount.get(), "quote_amount": m.quote_amount.get(),
            "shares": m.shares.get(), "user_shares": m.user_shares.get(), "total_shares": m.total_shares.get(),
            "base_reserve": m.base_reserve.get(), "quote_reserve": m.quote_reserve.get(),
            "market_id": m.market_id.get(),
        }),
        Event::LiquidityRemoved(m) => json!({
            "user_id": m.user_id.get(), "base_amount": m.base_amount.get(), "quote_amount": m.quote_amount.get(),
            "shares": m.shares.get(), "user_shares": m.user_shares.get(), "total_shares": m.total_shares.get(),
            "base_reserve": m.base_reserve.get(), "quote_reserve": m.quote_reserve.get(),
            "market_id": m.market_id.get(),
        }),
        Event::SwapExecuted(m) => json!({
            "user_id": m.user_id.get(), "amount_in": m.amount_in.get(), "amount_out": m.amount_out.get(),
            "fee": m.fee.get(), "base_reserve": m.base_reserve.get(), "quote_reserve": m.quote_reserve.get(),
            "market_id": m.market_id.get(), "side": m.side.raw(), "mode": m.mode.raw(),
        }),
        Event::OrderRouted(m) => json!({
            "user_id": m.user_id.get(), "order_id": m.order_id.get(), "book_lots": m.book_lots.get(),
            "book_quote": m.book_quote.get(), "pool_base_amount": m.pool_base_amount.get(),
            "pool_quote": m.pool_quote.get(), "market_id": m.market_id.get(), "side": m.side.raw(),
        }),
        Event::TriggerPending(m) => json!({
            "user_id": m.user_id.get(), "order_id": m.order_id.get(), "client_order_id": m.client_order_id.get(),
            "trigger_price_ticks": m.trigger_price_ticks.get(), "price_ticks": m.price_ticks.get(),
            "quantity_lots": m.quantity_lots.get(), "quote_quantity": m.quote_quantity.get(),
            "market_id": m.market_id.get(), "side": m.side.raw(), "order_type": m.order_type.raw(),
            "time_in_force": m.time_in_force.raw(), "self_trade_prevention": m.self_trade_prevention.raw(),
            "post_only": m.post_only.raw(), "trigger_kind": m.trigger_kind.raw(),
        }),
        Event::TriggerPlaced(m) => json!({
            "user_id": m.user_id.get(), "order_id": m.order_id.get(), "client_order_id": m.client_order_id.get(),
            "trigger_price_ticks": m.trigger_price_ticks.get(), "last_price_ticks": m.last_price_ticks.get(),
            "market_id": m.market_id.get(), "side": m.side.raw(), "trigger_kind": m.trigger_kind.raw(),
        }),
        Event::TriggerFailed(m) => json!({
            "user_id": m.user_id.get(), "order_id": m.order_id.get(), "client_order_id": m.client_order_id.get(),
            "market_id": m.market_id.get(), "reason": m.reason.raw(), "side": m.side.raw(),
            "trigger_kind": m.trigger_kind.raw(),
        }),
    }
}

/// The whole JSON object of an event (`index`: its position among its command's events).
pub fn event_json(event: &Event, index: usize) -> Value {
    let mut value = fields(event);
    if let Value::Object(map) = &mut value {
        map.insert("type".into(), type_name(event).into());
        map.insert("template_id".into(), template_id(event).into());
        map.insert("sequence".into(), event.sequence().get().into());
        map.insert("event_index".into(), (index as u64).into());
        map.insert("timestamp_ns".into(), timestamp_ns(event).into());
    }
    value
}

/// The event's timestamp (the command's sequencer time).
pub fn timestamp_ns(event: &Event) -> u64 {
    match event {
        Event::OrderAccepted(m) => m.timestamp_ns.get(),
        Event::OrderRejected(m) => m.timestamp_ns.get(),
        Event::Fill(m) => m.timestamp_ns.get(),
        Event::OrderCanceled(m) => m.timestamp_ns.get(),
        Event::OrderExpired(m) => m.timestamp_ns.get(),
        Event::OrderReplaced(m) => m.timestamp_ns.get(),
        Event::BookLevelUpdate(m) => m.timestamp_ns.get(),
        Event::BalanceUpdate(m) => m.timestamp_ns.get(),
        Event::MassCancelReport(m) => m.timestamp_ns.get(),
        Event::MarketStatusChanged(m) => m.timestamp_ns.get(),
        Event::LiquidityAdded(m) => m.timestamp_ns.get(),
        Event::LiquidityRemoved(m) => m.timestamp_ns.get(),
        Event::SwapExecuted(m) => m.timestamp_ns.get(),
        Event::OrderRouted(m) => m.timestamp_ns.get(),
        Event::TriggerPending(m) => m.timestamp_ns.get(),
        Event::TriggerPlaced(m) => m.timestamp_ns.get(),
        Event::TriggerFailed(m) => m.timestamp_ns.get(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::*;

    #[test]
    fn events_carry_their_identity_and_exact_integers() {
        let event = Event::BalanceUpdate(BalanceUpdate {
            sequence: Sequence::new(42),
            timestamp_ns: TimestampNs::new(7),
            user_id: UserId::new(9),
            available: Amount::new(u64::MAX),
            locked: Amount::new(1),
            asset_id: AssetId::new(1),
            reason: BalanceChange::Trade.into(),
            reserved: Reserved::ZERO,
        });
        let value = event_json(&event, 3);
        assert_eq!(value["type"], "balance_update");
        assert_eq!(value["template_id"], 108);
        assert_eq!(value["sequence"], 42);
        assert_eq!(value["event_index"], 3);
        assert_eq!(value["available"].as_u64(), Some(u64::MAX), "no float rounding");
        assert_eq!(value["reason"], 5);
    }

    /// An order's attached stop-loss / take-profit (schema version 3) reach Kafka and the
    /// `order_events` details with the rest of its acceptance.
    #[test]
    fn an_acceptance_carries_the_attached_stop_loss_and_take_profit() {
        let event = Event::OrderAccepted(OrderAccepted {
            stop_loss_trigger_ticks: Ticks::new(590),
            take_profit_trigger_ticks: Ticks::new(620),
            take_profit_limit_ticks: Ticks::new(619),
            ..OrderAccepted::default()
        });
        let value = event_json(&event, 0);
        let attached = [
            "stop_loss_trigger_ticks",
            "stop_loss_limit_ticks",
            "take_profit_trigger_ticks",
            "take_profit_limit_ticks",
        ]
        .map(|field| value[field].as_u64());
        assert_eq!(attached, [Some(590), Some(0), Some(620), Some(619)], "{value}");
    }
}
