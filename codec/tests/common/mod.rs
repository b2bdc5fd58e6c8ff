//! Shared by the integration tests: the one list of every message with every field, in struct
//! order, so each test can generate per-message code from it with a callback macro.
//!
//! `tests/schema.rs` proves the list complete (the fields must tile each block exactly), and a
//! struct literal built from it (`tests/properties.rs`) would not compile with a field missing.

#![allow(unused_macros)]

/// Calls `$callback!` with every message as `Name => Envelope { field, ... }`, where `Envelope` is
/// the enum that decodes it: `Command`, `Event` or `Session`.
macro_rules! for_each_message {
    ($callback:ident) => {
        $callback! {
            NewOrder => Command {
                user_id, client_order_id, price_ticks, quantity_lots, quote_quantity, market_id,
                side, order_type, time_in_force, self_trade_prevention, post_only, trigger_kind,
                reserved, trigger_price_ticks, stop_loss_trigger_ticks, stop_loss_limit_ticks,
                take_profit_trigger_ticks, take_profit_limit_ticks,
            },
            CancelOrder => Command { user_id, order_id, client_order_id, market_id, reserved },
            CancelReplace => Command {
                user_id, order_id, client_order_id, new_price_ticks, new_quantity_lots, market_id,
                reserved,
            },
            MassCancel => Command { user_id, market_id, side, kinds, reserved },
            Deposit => Command { user_id, amount, asset_id, reserved },
            Withdraw => Command { user_id, amount, asset_id, reserved },
            MarketControl => Command { market_id, action, reserved },
            AddLiquidity => Command {
                user_id, max_base_amount, max_quote_amount, min_shares, market_id, reserved,
            },
            RemoveLiquidity => Command {
                user_id, shares, min_base_amount, min_quote_amount, market_id, reserved,
            },
            Swap => Command { user_id, amount, limit, market_id, side, mode, reserved },
            RoutedOrder => Command { user_id, quantity_lots, quote_limit, market_id, side, reserved },
            OrderAccepted => Event {
                sequence, timestamp_ns, user_id, order_id, client_order_id, price_ticks,
                quantity_lots, quote_quantity, market_id, side, order_type, time_in_force,
                self_trade_prevention, post_only, reserved, stop_loss_trigger_ticks,
                stop_loss_limit_ticks, take_profit_trigger_ticks, take_profit_limit_ticks,
            },
            OrderRejected => Event {
                sequence, timestamp_ns, user_id, client_order_id, order_id, market_id, reason,
                command_template_id,
            },
            Fill => Event {
                sequence, timestamp_ns, trade_id, price_ticks, quantity_lots, quote_amount,
                maker_user_id, maker_order_id, maker_client_order_id, maker_remaining_lots,
                maker_fee, taker_user_id, taker_order_id, taker_client_order_id,
                taker_remaining_lots, taker_fee, market_id, taker_side, taker_order_complete, reserved,
            },
            OrderCanceled => Event {
                sequence, timestamp_ns, user_id, order_id, client_order_id, filled_lots,
                canceled_lots, market_id, side, reason, reserved,
            },
            OrderExpired => Event {
                sequence, timestamp_ns, user_id, order_id, client_order_id, filled_lots,
                expired_lots, market_id, side, reason, reserved,
            },
            OrderReplaced => Event {
                sequence, timestamp_ns, user_id, order_id, client_order_id, price_ticks,
                quantity_lots, filled_lots, remaining_lots, market_id, side, priority_kept,
                reserved,
            },
            BookLevelUpdate => Event {
                sequence, timestamp_ns, price_ticks, quantity_lots, order_count, market_id, side,
                reserved,
            },
            BalanceUpdate => Event {
                sequence, timestamp_ns, user_id, available, locked, asset_id, reason, reserved,
            },
            MassCancelReport => Event {
                sequence, timestamp_ns, user_id, market_id, canceled_count, side, reserved,
            },
            MarketStatusChanged => Event { sequence, timestamp_ns, market_id, halted, reserved },
            LiquidityAdded => Event {
                sequence, timestamp_ns, user_id, base_amount, quote_amount, shares, user_shares,
                total_shares, base_reserve, quote_reserve, market_id, reserved,
            },
            LiquidityRemoved => Event {
                sequence, timestamp_ns, user_id, base_amount, quote_amount, shares, user_shares,
                total_shares, base_reserve, quote_reserve, market_id, reserved,
            },
            SwapExecuted => Event {
                sequence, timestamp_ns, user_id, amount_in, amount_out, fee, base_reserve,
                quote_reserve, market_id, side, mode, reserved,
            },
            OrderRouted => Event {
                sequence, timestamp_ns, user_id, order_id, book_lots, book_quote, pool_base_amount,
                pool_quote, market_id, side, reserved,
            },
            TriggerPending => Event {
                sequence, timestamp_ns, user_id, order_id, client_order_id, trigger_price_ticks,
                price_ticks, quantity_lots, quote_quantity, market_id, side, order_type,
                time_in_force, self_trade_prevention, post_only, trigger_kind, reserved,
            },
            TriggerPlaced => Event {
                sequence, timestamp_ns, user_id, order_id, client_order_id, trigger_price_ticks,
                last_price_ticks, market_id, side, trigger_kind, reserved,
            },
            TriggerFailed => Event {
                sequence, timestamp_ns, user_id, order_id, client_order_id, market_id, reason,
                side, trigger_kind,
            },
            Negotiate => Session { api_key, timestamp_ns },
            NegotiateResponse => Session { server_nonce, timestamp_ns },
            Establish => Session { signature, next_expected_sequence, keep_alive_ms, reserved },
            EstablishAck => Session {
                user_id, next_sequence, next_expected_sequence, keep_alive_ms, reserved,
            },
            SequenceHeartbeat => Session { next_sequence },
            RetransmitRequest => Session { from_sequence, count, reserved },
            Retransmission => Session { from_sequence, count, reserved },
            RetransmitReject => Session { from_sequence, reason, reserved },
            Terminate => Session { reason, reserved },
            BusinessReject => Session { client_sequence, client_order_id, reason, ref_template_id, reserved },
        }
    };
}

/// Calls `$callback!` with every wire enum as `Enum => CodeType`.
macro_rules! for_each_enum {
    ($callback:ident) => {
        $callback! {
            Side => SideCode,
            SideFilter => SideFilterCode,
            OrderKindFilter => OrderKindFilterCode,
            OrderType => OrderTypeCode,
            TimeInForce => TimeInForceCode,
            SelfTradePrevention => SelfTradePreventionCode,
            Boolean => BooleanCode,
            CancelReason => CancelReasonCode,
            ExpireReason => ExpireReasonCode,
            BalanceChange => BalanceChangeCode,
            TerminateReason => TerminateReasonCode,
            RetransmitRejectReason => RetransmitRejectReasonCode,
            MarketAction => MarketActionCode,
            SwapMode => SwapModeCode,
            TriggerKind => TriggerKindCode,
            RejectReason => RejectReasonCode,
        }
    };
}
