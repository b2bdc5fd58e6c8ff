//! Message blocks: commands into the engine (template ids 1–99), events out of it (101–199) and
//! the binary gateway's session protocol (200–229).
//!
//! Each struct is the root block of one SBE message, in schema order, little-endian, with explicit
//! `reserved` fields so every byte belongs to a named field and every block is a multiple of
//! 8 bytes. Sizes are asserted at compile time; `tests/schema.rs` checks every offset against
//! `schema/exchange.xml`.
//!
//! Template id ranges: 1–19 order entry, ledger, market control (7) and AMM pool (8–11) commands, 20–39 reserved,
//! 40–59 reserved for administrative commands, 60–69 journal-only messages ([`crate::origin`]),
//! 101–199 engine events, 200–229 the binary gateway's session protocol.

use crate::types::*;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// A fixed-layout SBE message block.
pub trait Message: FromBytes + IntoBytes + KnownLayout + Immutable + Unaligned + Copy {
    /// The message's template id.
    const TEMPLATE_ID: u16;
    /// The schema's name of the message.
    const NAME: &'static str;
    /// The root block length in bytes.
    const BLOCK_LENGTH: u16 = size_of::<Self>() as u16;
    /// An older version's root block length a decoder also accepts (equal to [`Self::BLOCK_LENGTH`]
    /// when the message never grew): the fields appended since read as zero in such a block.
    const MIN_BLOCK_LENGTH: u16;
}

/// The oldest accepted block length of each message: [`NewOrder::BLOCK_LENGTH_V2`] for
/// `NewOrder` (its trigger fields came with version 3), the current length for every other.
const fn min_block_length(template_id: u16, block_length: u16) -> u16 {
    if template_id == 1 { NewOrder::BLOCK_LENGTH_V2 } else { block_length }
}

macro_rules! message {
    ($(#[$meta:meta])* $name:ident = $id:literal, $bytes:literal {
        $($(#[$fmeta:meta])* pub $field:ident : $ty:ty),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Eq, Debug, Default)]
        #[repr(C)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty),+
        }

        impl Message for $name {
            const TEMPLATE_ID: u16 = $id;
            const NAME: &'static str = stringify!($name);
            const MIN_BLOCK_LENGTH: u16 = min_block_length($id, $bytes);
        }

        const _: () = assert!(size_of::<$name>() == $bytes);
        const _: () = assert!(size_of::<$name>() % 8 == 0);
    };
}

// ----------------------------------------------------------------------------------------------
// Commands
// ----------------------------------------------------------------------------------------------

message!(
    /// Place an order.
    ///
    /// Limit orders carry `price_ticks` and `quantity_lots`. Market orders carry no price and
    /// either `quantity_lots` or `quote_quantity`: a buy spends at most that much quote, fee
    /// included; a sell sells whole lots for at most that much notional (before its fee).
    NewOrder = 1, 96 {
        /// Owner; set by the gateway from the authenticated session.
        pub user_id: UserId,
        /// Client's id for the order; 0 for none.
        pub client_order_id: ClientOrderId,
        /// Limit price; zero for market orders.
        pub price_ticks: Ticks,
        /// Base quantity; zero for a market order by quote quantity.
        pub quantity_lots: Lots,
        /// For market orders by quote quantity (minor units): a buy's most quote to spend, fee
        /// included; a sell's most notional to sell for, before its fee. Zero otherwise.
        pub quote_quantity: Amount,
        /// Market to trade on.
        pub market_id: MarketId,
        /// Buy or sell.
        pub side: SideCode,
        /// Limit or market.
        pub order_type: OrderTypeCode,
        /// Time in force.
        pub time_in_force: TimeInForceCode,
        /// Self-trade prevention mode.
        pub self_trade_prevention: SelfTradePreventionCode,
        /// Reject instead of taking liquidity.
        pub post_only: BooleanCode,
        /// Since version 3 (a reserved byte before): [`TriggerKind::None`] for an order that
        /// trades at once, else the order waits until the last trade price reaches
        /// `trigger_price_ticks` (see [`TriggerKind`]).
        pub trigger_kind: TriggerKindCode,
        /// Zero.
        pub reserved: Reserved<6>,
        /// Since version 3: the trigger price of a trigger order; zero otherwise.
        pub trigger_price_ticks: Ticks,
        /// Since version 3: trigger price of the stop-loss attached to this order; zero for none.
        pub stop_loss_trigger_ticks: Ticks,
        /// Since version 3: limit price of the attached stop-loss; zero makes it a market order.
        pub stop_loss_limit_ticks: Ticks,
        /// Since version 3: trigger price of the take-profit attached to this order; zero for none.
        pub take_profit_trigger_ticks: Ticks,
        /// Since version 3: limit price of the attached take-profit; zero makes it a market order.
        pub take_profit_limit_ticks: Ticks,
    }
);

impl NewOrder {
    /// Block length of versions 1 and 2 (before the trigger fields): such a block still decodes,
    /// its missing fields read as zero (no trigger, nothing attached).
    pub const BLOCK_LENGTH_V2: u16 = 56;
}

message!(
    /// Cancel one open order, by exchange id or (when `order_id` is 0) by client id.
    CancelOrder = 2, 32 {
        /// Owner; set by the gateway from the authenticated session.
        pub user_id: UserId,
        /// Exchange id of the order, or 0 to cancel by `client_order_id`.
        pub order_id: OrderId,
        /// Client id of the order when `order_id` is 0.
        pub client_order_id: ClientOrderId,
        /// Market of the order.
        pub market_id: MarketId,
        /// Zero.
        pub reserved: Reserved<4>,
    }
);

message!(
    /// Amend the price and/or quantity of an open GTC limit order. Reducing the quantity keeps
    /// time priority; a price change or a quantity increase loses it (and may trade).
    CancelReplace = 3, 48 {
        /// Owner; set by the gateway from the authenticated session.
        pub user_id: UserId,
        /// Exchange id of the order, or 0 to find it by `client_order_id`.
        pub order_id: OrderId,
        /// Client id of the order when `order_id` is 0.
        pub client_order_id: ClientOrderId,
        /// New limit price, or 0 to keep the price.
        pub new_price_ticks: Ticks,
        /// New total order quantity (filled part included, as FIX OrderQty), or 0 to keep it.
        pub new_quantity_lots: Lots,
        /// Market of the order.
        pub market_id: MarketId,
        /// Zero.
        pub reserved: Reserved<4>,
    }
);

message!(
    /// Cancel all of a user's open orders on a market (or every market when `market_id` is 0).
    MassCancel = 4, 16 {
        /// Owner; set by the gateway from the authenticated session.
        pub user_id: UserId,
        /// Market, or 0 for all markets.
        pub market_id: MarketId,
        /// Which sides to cancel.
        pub side: SideFilterCode,
        /// Since version 3 (a reserved byte, zero, before): which kinds of open orders to cancel
        /// ([`OrderKindFilter::All`], or resting orders only, or pending trigger orders only).
        pub kinds: OrderKindFilterCode,
        /// Zero.
        pub reserved: Reserved<2>,
    }
);

message!(
    /// Credit an asset to a user's available balance (an on-chain deposit, or an admin credit).
    Deposit = 5, 24 {
        /// Account credited.
        pub user_id: UserId,
        /// Amount in the asset's minor units.
        pub amount: Amount,
        /// Asset credited.
        pub asset_id: AssetId,
        /// Zero.
        pub reserved: Reserved<4>,
    }
);

message!(
    /// Debit an asset from a user's available balance.
    Withdraw = 6, 24 {
        /// Account debited.
        pub user_id: UserId,
        /// Amount in the asset's minor units.
        pub amount: Amount,
        /// Asset debited.
        pub asset_id: AssetId,
        /// Zero.
        pub reserved: Reserved<4>,
    }
);

message!(
    /// Operator command: halt or resume trading on a market. Answered by
    /// [`MarketStatusChanged`] (or `OrderRejected` for an unknown market or action).
    MarketControl = 7, 8 {
        /// Market.
        pub market_id: MarketId,
        /// Halt or resume.
        pub action: MarketActionCode,
        /// Zero.
        pub reserved: Reserved<3>,
    }
);

message!(
    /// Deposit both assets into a market's AMM pool in its current ratio (the first provider sets
    /// the price and uses both maxima) and receive LP shares.
    AddLiquidity = 8, 40 {
        /// Provider; set by the gateway from the authenticated session.
        pub user_id: UserId,
        /// Most base to deposit (minor units).
        pub max_base_amount: Amount,
        /// Most quote to deposit (minor units).
        pub max_quote_amount: Amount,
        /// Fewest shares accepted (slippage limit); 0 for any.
        pub min_shares: Shares,
        /// Market whose pool receives the liquidity.
        pub market_id: MarketId,
        /// Zero.
        pub reserved: Reserved<4>,
    }
);

message!(
    /// Burn LP shares and receive their part of both reserves.
    RemoveLiquidity = 9, 40 {
        /// Provider; set by the gateway from the authenticated session.
        pub user_id: UserId,
        /// Shares to burn (at most the user's).
        pub shares: Shares,
        /// Least base accepted (slippage limit); 0 for any.
        pub min_base_amount: Amount,
        /// Least quote accepted (slippage limit); 0 for any.
        pub min_quote_amount: Amount,
        /// Market of the pool.
        pub market_id: MarketId,
        /// Zero.
        pub reserved: Reserved<4>,
    }
);

message!(
    /// Trade with a market's AMM pool: buy (`Bid`) base with quote or sell (`Ask`) base for
    /// quote, with the amount in or the amount out fixed, and a slippage limit.
    Swap = 10, 32 {
        /// Trader; set by the gateway from the authenticated session.
        pub user_id: UserId,
        /// `ExactIn`: paid in (quote for a buy, base for a sell); `ExactOut`: received (base for
        /// a buy, quote for a sell). Minor units.
        pub amount: Amount,
        /// `ExactIn`: least accepted out; `ExactOut`: most paid in; 0 for no limit.
        pub limit: Amount,
        /// Market of the pool.
        pub market_id: MarketId,
        /// `Bid` buys base, `Ask` sells base.
        pub side: SideCode,
        /// Which amount is fixed.
        pub mode: SwapModeCode,
        /// Zero.
        pub reserved: Reserved<2>,
    }
);

message!(
    /// A market order routed between the order book and the market's AMM pool for the best total
    /// price; all or nothing (docs/amm.md).
    RoutedOrder = 11, 32 {
        /// Trader; set by the gateway from the authenticated session.
        pub user_id: UserId,
        /// Base quantity to buy or sell, in lots.
        pub quantity_lots: Lots,
        /// Buy: most quote to pay in total, fees included; sell: least quote to receive; 0 for no
        /// limit.
        pub quote_limit: Amount,
        /// Market (with a pool).
        pub market_id: MarketId,
        /// `Bid` buys base, `Ask` sells base.
        pub side: SideCode,
        /// Zero.
        pub reserved: Reserved<3>,
    }
);

// ----------------------------------------------------------------------------------------------
// Events. Each starts with the sequence of the command that caused it and its timestamp.
// ----------------------------------------------------------------------------------------------

message!(
    /// A new order passed every check. Follows with fills, then a rest on the book, an expiry or
    /// a cancel.
    OrderAccepted = 101, 112 {
        /// Sequence of the command.
        pub sequence: Sequence,
        /// Time of the command.
        pub timestamp_ns: TimestampNs,
        /// Owner.
        pub user_id: UserId,
        /// Exchange-assigned id.
        pub order_id: OrderId,
        /// Client id as sent.
        pub client_order_id: ClientOrderId,
        /// Limit price (zero for market orders).
        pub price_ticks: Ticks,
        /// Quantity as sent.
        pub quantity_lots: Lots,
        /// Quote quantity as sent.
        pub quote_quantity: Amount,
        /// Market.
        pub market_id: MarketId,
        /// Side.
        pub side: SideCode,
        /// Order type.
        pub order_type: OrderTypeCode,
        /// Time in force.
        pub time_in_force: TimeInForceCode,
        /// Self-trade prevention mode.
        pub self_trade_prevention: SelfTradePreventionCode,
        /// Post-only flag.
        pub post_only: BooleanCode,
        /// Zero.
        pub reserved: Reserved<7>,
        /// Since version 3: trigger price of the stop-loss attached to the order; zero for none
        /// (so that every consumer of the events, not only the gateway that took the order, can
        /// show the parent's attached stop-loss / take-profit).
        pub stop_loss_trigger_ticks: Ticks,
        /// Since version 3: limit price of the attached stop-loss; zero: a market order.
        pub stop_loss_limit_ticks: Ticks,
        /// Since version 3: trigger price of the take-profit attached to the order; zero for none.
        pub take_profit_trigger_ticks: Ticks,
        /// Since version 3: limit price of the attached take-profit; zero: a market order.
        pub take_profit_limit_ticks: Ticks,
    }
);

message!(
    /// A command was refused; nothing changed.
    OrderRejected = 102, 48 {
        /// Sequence of the command.
        pub sequence: Sequence,
        /// Time of the command.
        pub timestamp_ns: TimestampNs,
        /// User who sent the command.
        pub user_id: UserId,
        /// Client order id of the command, if any.
        pub client_order_id: ClientOrderId,
        /// Exchange order id the command referred to, if any.
        pub order_id: OrderId,
        /// Market of the command, if any.
        pub market_id: MarketId,
        /// The rule broken.
        pub reason: RejectReasonCode,
        /// Template id of the rejected command.
        pub command_template_id: zerocopy::little_endian::U16,
    }
);

message!(
    /// A trade between a resting (maker) order and an incoming (taker) order.
    Fill = 103, 136 {
        /// Sequence of the command.
        pub sequence: Sequence,
        /// Time of the command.
        pub timestamp_ns: TimestampNs,
        /// Sequential per market.
        pub trade_id: TradeId,
        /// Trade price (the maker's price).
        pub price_ticks: Ticks,
        /// Trade quantity.
        pub quantity_lots: Lots,
        /// Notional in quote minor units (price × quantity).
        pub quote_amount: Amount,
        /// Maker's owner.
        pub maker_user_id: UserId,
        /// Maker order.
        pub maker_order_id: OrderId,
        /// Maker's client id.
        pub maker_client_order_id: ClientOrderId,
        /// Maker's open quantity after this fill.
        pub maker_remaining_lots: Lots,
        /// Fee charged to the maker, in quote minor units.
        pub maker_fee: Amount,
        /// Taker's owner.
        pub taker_user_id: UserId,
        /// Taker order.
        pub taker_order_id: OrderId,
        /// Taker's client id.
        pub taker_client_order_id: ClientOrderId,
        /// Taker's open quantity after this fill; 0 for a quote-quantity market order, whose size
        /// is bounded by quote, not lots (so 0 here does not mean it is done: see
        /// `taker_order_complete`).
        pub taker_remaining_lots: Lots,
        /// Fee charged to the taker, in quote minor units.
        pub taker_fee: Amount,
        /// Market.
        pub market_id: MarketId,
        /// The taker's side (the aggressor side).
        pub taker_side: SideCode,
        /// Whether this fill completed the taker order (status Filled): no further event of
        /// this command concerns it. Set on the fill that takes its last lot, and on the last
        /// fill of a quote-quantity market order that reached its quote quantity. Since schema
        /// version 2 (a version 1 sender wrote 0 here).
        pub taker_order_complete: BooleanCode,
        /// Zero.
        pub reserved: Reserved<2>,
    }
);

impl Fill {
    /// Whether this fill finished the taker order (it is Filled; nothing further of this
    /// command concerns it). Consumers must use this, not `taker_remaining_lots == 0`, which is
    /// also 0 on every fill of a quote-quantity market order.
    pub fn completes_taker(&self) -> bool {
        self.taker_order_complete.get().is_ok_and(bool::from)
    }

    /// Whether this fill finished the maker order (it took its last lot; makers are always sized
    /// in lots).
    pub fn completes_maker(&self) -> bool {
        self.maker_remaining_lots.get() == 0
    }
}

message!(
    /// An open order was cancelled; its remainder left the book and its reservation was released.
    OrderCanceled = 104, 64 {
        /// Sequence of the command.
        pub sequence: Sequence,
        /// Time of the command.
        pub timestamp_ns: TimestampNs,
        /// Owner.
        pub user_id: UserId,
        /// Exchange id.
        pub order_id: OrderId,
        /// Client id.
        pub client_order_id: ClientOrderId,
        /// Quantity filled before the cancel.
        pub filled_lots: Lots,
        /// Quantity that was still open and is now cancelled.
        pub canceled_lots: Lots,
        /// Market.
        pub market_id: MarketId,
        /// Side.
        pub side: SideCode,
        /// Why.
        pub reason: CancelReasonCode,
        /// Zero.
        pub reserved: Reserved<2>,
    }
);

message!(
    /// The unfilled remainder of an immediate-or-cancel, fill-or-kill or market order expired.
    OrderExpired = 105, 64 {
        /// Sequence of the command.
        pub sequence: Sequence,
        /// Time of the command.
        pub timestamp_ns: TimestampNs,
        /// Owner.
        pub user_id: UserId,
        /// Exchange id.
        pub order_id: OrderId,
        /// Client id.
        pub client_order_id: ClientOrderId,
        /// Quantity filled.
        pub filled_lots: Lots,
        /// Quantity that expired unfilled (0 for quote-quantity market orders).
        pub expired_lots: Lots,
        /// Market.
        pub market_id: MarketId,
        /// Side.
        pub side: SideCode,
        /// Why.
        pub reason: ExpireReasonCode,
        /// Zero.
        pub reserved: Reserved<2>,
    }
);

message!(
    /// An open order was amended by a cancel-replace.
    OrderReplaced = 106, 80 {
        /// Sequence of the command.
        pub sequence: Sequence,
        /// Time of the command.
        pub timestamp_ns: TimestampNs,
        /// Owner.
        pub user_id: UserId,
        /// Exchange id (unchanged by the replace).
        pub order_id: OrderId,
        /// Client id.
        pub client_order_id: ClientOrderId,
        /// New limit price.
        pub price_ticks: Ticks,
        /// New total quantity.
        pub quantity_lots: Lots,
        /// Filled so far.
        pub filled_lots: Lots,
        /// Open quantity after the replace (before any matching it triggers).
        pub remaining_lots: Lots,
        /// Market.
        pub market_id: MarketId,
        /// Side.
        pub side: SideCode,
        /// Whether the order kept its time priority.
        pub priority_kept: BooleanCode,
        /// Zero.
        pub reserved: Reserved<2>,
    }
);

message!(
    /// The new aggregate of one price level after a change (quantity 0: level removed).
    BookLevelUpdate = 107, 48 {
        /// Sequence of the command.
        pub sequence: Sequence,
        /// Time of the command.
        pub timestamp_ns: TimestampNs,
        /// Level price.
        pub price_ticks: Ticks,
        /// Total open quantity at the level; zero removes the level.
        pub quantity_lots: Lots,
        /// Number of orders at the level.
        pub order_count: OrderCount,
        /// Market.
        pub market_id: MarketId,
        /// Side of the level.
        pub side: SideCode,
        /// Zero.
        pub reserved: Reserved<7>,
    }
);

message!(
    /// The new balance of one (user, asset) after a change.
    BalanceUpdate = 108, 48 {
        /// Sequence of the command.
        pub sequence: Sequence,
        /// Time of the command.
        pub timestamp_ns: TimestampNs,
        /// Account.
        pub user_id: UserId,
        /// Available (free) amount after the change.
        pub available: Amount,
        /// Locked (reserved by open orders) amount after the change.
        pub locked: Amount,
        /// Asset.
        pub asset_id: AssetId,
        /// Why it changed.
        pub reason: BalanceChangeCode,
        /// Zero.
        pub reserved: Reserved<3>,
    }
);

message!(
    /// A mass cancel finished (always emitted, after the cancels it caused, even when nothing
    /// was open), so every command produces at least one event a gateway can answer with.
    MassCancelReport = 109, 40 {
        /// Sequence of the command.
        pub sequence: Sequence,
        /// Time of the command.
        pub timestamp_ns: TimestampNs,
        /// User whose orders were cancelled.
        pub user_id: UserId,
        /// Market, or 0 for all markets.
        pub market_id: MarketId,
        /// Number of orders cancelled.
        pub canceled_count: OrderCount,
        /// Sides that were cancelled.
        pub side: SideFilterCode,
        /// Zero.
        pub reserved: Reserved<7>,
    }
);

message!(
    /// A market's trading status after a [`MarketControl`] command (emitted even when the
    /// status did not change).
    MarketStatusChanged = 110, 24 {
        /// Sequence of the command.
        pub sequence: Sequence,
        /// Time of the command.
        pub timestamp_ns: TimestampNs,
        /// Market.
        pub market_id: MarketId,
        /// Whether the market is now halted.
        pub halted: BooleanCode,
        /// Zero.
        pub reserved: Reserved<3>,
    }
);

message!(
    /// Liquidity entered a pool; shares were minted to the provider.
    LiquidityAdded = 111, 88 {
        /// Sequence of the command.
        pub sequence: Sequence,
        /// Time of the command.
        pub timestamp_ns: TimestampNs,
        /// Provider.
        pub user_id: UserId,
        /// Base deposited.
        pub base_amount: Amount,
        /// Quote deposited.
        pub quote_amount: Amount,
        /// Shares minted to the provider.
        pub shares: Shares,
        /// The provider's shares after the change.
        pub user_shares: Shares,
        /// All shares of the pool after the change (including the locked minimum).
        pub total_shares: Shares,
        /// Base reserve after the change.
        pub base_reserve: Amount,
        /// Quote reserve after the change.
        pub quote_reserve: Amount,
        /// Market of the pool.
        pub market_id: MarketId,
        /// Zero.
        pub reserved: Reserved<4>,
    }
);

message!(
    /// Shares were burned; the provider received their part of both reserves.
    LiquidityRemoved = 112, 88 {
        /// Sequence of the command.
        pub sequence: Sequence,
        /// Time of the command.
        pub timestamp_ns: TimestampNs,
        /// Provider.
        pub user_id: UserId,
        /// Base paid out.
        pub base_amount: Amount,
        /// Quote paid out.
        pub quote_amount: Amount,
        /// Shares burned.
        pub shares: Shares,
        /// The provider's shares after the change.
        pub user_shares: Shares,
        /// All shares of the pool after the change (including the locked minimum).
        pub total_shares: Shares,
        /// Base reserve after the change.
        pub base_reserve: Amount,
        /// Quote reserve after the change.
        pub quote_reserve: Amount,
        /// Market of the pool.
        pub market_id: MarketId,
        /// Zero.
        pub reserved: Reserved<4>,
    }
);

message!(
    /// A swap against a pool settled.
    SwapExecuted = 113, 72 {
        /// Sequence of the command.
        pub sequence: Sequence,
        /// Time of the command.
        pub timestamp_ns: TimestampNs,
        /// Trader.
        pub user_id: UserId,
        /// Paid in (quote for a buy, base for a sell), fee included.
        pub amount_in: Amount,
        /// Received (base for a buy, quote for a sell).
        pub amount_out: Amount,
        /// Part of `amount_in` kept by the pool as its fee.
        pub fee: Amount,
        /// Base reserve after the swap.
        pub base_reserve: Amount,
        /// Quote reserve after the swap.
        pub quote_reserve: Amount,
        /// Market of the pool.
        pub market_id: MarketId,
        /// `Bid` bought base, `Ask` sold base.
        pub side: SideCode,
        /// Which amount was fixed.
        pub mode: SwapModeCode,
        /// Zero.
        pub reserved: Reserved<2>,
    }
);

message!(
    /// A routed order completed: how much went to the book and to the pool (after the fills and
    /// the swap it caused).
    OrderRouted = 114, 72 {
        /// Sequence of the command.
        pub sequence: Sequence,
        /// Time of the command.
        pub timestamp_ns: TimestampNs,
        /// Trader.
        pub user_id: UserId,
        /// The book leg's order id; 0 when nothing went to the book.
        pub order_id: OrderId,
        /// Quantity traded on the book.
        pub book_lots: Lots,
        /// Quote paid to the book fees included (buy) or received after fees (sell).
        pub book_quote: Amount,
        /// Base traded with the pool, minor units.
        pub pool_base_amount: Amount,
        /// Quote paid to the pool fee included (buy) or received (sell).
        pub pool_quote: Amount,
        /// Market.
        pub market_id: MarketId,
        /// `Bid` bought base, `Ask` sold base.
        pub side: SideCode,
        /// Zero.
        pub reserved: Reserved<3>,
    }
);

message!(
    /// Since version 3: a trigger order passed every check and waits, holding no funds, until the
    /// market's last trade price reaches its trigger price. Followed later by [`TriggerPlaced`] (and
    /// the order's own events), [`TriggerFailed`] or an [`OrderCanceled`].
    TriggerPending = 115, 88 {
        /// Sequence of the command.
        pub sequence: Sequence,
        /// Time of the command.
        pub timestamp_ns: TimestampNs,
        /// Owner.
        pub user_id: UserId,
        /// Exchange-assigned id (the order keeps it when it fires).
        pub order_id: OrderId,
        /// Client id as sent.
        pub client_order_id: ClientOrderId,
        /// Trigger price.
        pub trigger_price_ticks: Ticks,
        /// Limit price of the order it places (zero: a market order).
        pub price_ticks: Ticks,
        /// Quantity as sent.
        pub quantity_lots: Lots,
        /// Quote quantity as sent.
        pub quote_quantity: Amount,
        /// Market.
        pub market_id: MarketId,
        /// Side.
        pub side: SideCode,
        /// Order type placed when it fires.
        pub order_type: OrderTypeCode,
        /// Time in force.
        pub time_in_force: TimeInForceCode,
        /// Self-trade prevention mode.
        pub self_trade_prevention: SelfTradePreventionCode,
        /// Post-only flag.
        pub post_only: BooleanCode,
        /// Stop or take-profit.
        pub trigger_kind: TriggerKindCode,
        /// Zero.
        pub reserved: Reserved<6>,
    }
);

message!(
    /// Since version 3: a pending trigger order fired: the last trade price reached its trigger.
    /// Followed at once by the order's [`OrderAccepted`] (same order id) and what it does, or by
    /// [`TriggerFailed`].
    TriggerPlaced = 116, 64 {
        /// Sequence of the command whose trade fired it.
        pub sequence: Sequence,
        /// Time of that command.
        pub timestamp_ns: TimestampNs,
        /// Owner.
        pub user_id: UserId,
        /// The order's id.
        pub order_id: OrderId,
        /// Client id.
        pub client_order_id: ClientOrderId,
        /// Trigger price.
        pub trigger_price_ticks: Ticks,
        /// The last trade price that reached it.
        pub last_price_ticks: Ticks,
        /// Market.
        pub market_id: MarketId,
        /// Side.
        pub side: SideCode,
        /// Stop or take-profit.
        pub trigger_kind: TriggerKindCode,
        /// Zero.
        pub reserved: Reserved<2>,
    }
);

message!(
    /// Since version 3: a fired trigger order could not be placed (funds, halted market, price
    /// band, ...): it ends here, nothing changed for it.
    TriggerFailed = 117, 48 {
        /// Sequence of the command whose trade fired it.
        pub sequence: Sequence,
        /// Time of that command.
        pub timestamp_ns: TimestampNs,
        /// Owner.
        pub user_id: UserId,
        /// The order's id.
        pub order_id: OrderId,
        /// Client id.
        pub client_order_id: ClientOrderId,
        /// Market.
        pub market_id: MarketId,
        /// Why the order it would have placed was refused.
        pub reason: RejectReasonCode,
        /// Side.
        pub side: SideCode,
        /// Stop or take-profit.
        pub trigger_kind: TriggerKindCode,
    }
);

// ----------------------------------------------------------------------------------------------
// Binary session protocol (gateway-binary). Application messages from the client are the order
// entry commands above; to the client, the engine events that concern it and BusinessReject.
// ----------------------------------------------------------------------------------------------

message!(
    /// Client → server, first message: which API key wants to log on.
    Negotiate = 200, 40 {
        /// The Ed25519 public key registered for the user.
        pub api_key: PublicKey,
        /// Client clock, nanoseconds since the epoch (informational).
        pub timestamp_ns: TimestampNs,
    }
);

message!(
    /// Server → client: the challenge to sign.
    NegotiateResponse = 201, 40 {
        /// Random bytes, fresh per connection.
        pub server_nonce: Nonce,
        /// Server clock, nanoseconds since the epoch.
        pub timestamp_ns: TimestampNs,
    }
);

message!(
    /// Client → server: proof of key ownership and session parameters.
    Establish = 202, 80 {
        /// Ed25519 signature over `"exchange-binary-logon-v1" ‖ server_nonce ‖ api_key`.
        pub signature: Signature,
        /// Sequence of the next server → client application message the client wants (1 for a
        /// new session; after a reconnect, one past the last it processed).
        pub next_expected_sequence: Sequence,
        /// Heartbeat interval the client asks for, milliseconds.
        pub keep_alive_ms: zerocopy::little_endian::U32,
        /// Zero.
        pub reserved: Reserved<4>,
    }
);

message!(
    /// Server → client: logged on.
    EstablishAck = 203, 32 {
        /// The user the key belongs to; every order of the session is this user's.
        pub user_id: UserId,
        /// Sequence the server's next application message will carry.
        pub next_sequence: Sequence,
        /// Sequence the server expects on the client's next application message.
        pub next_expected_sequence: Sequence,
        /// Heartbeat interval granted, milliseconds.
        pub keep_alive_ms: zerocopy::little_endian::U32,
        /// Zero.
        pub reserved: Reserved<4>,
    }
);

message!(
    /// Either direction: the sender's next application sequence; also the heartbeat.
    SequenceHeartbeat = 204, 8 {
        /// Sequence the sender's next application message will carry.
        pub next_sequence: Sequence,
    }
);

message!(
    /// Client → server: resend application messages `from_sequence ..+ count`.
    RetransmitRequest = 205, 16 {
        /// First sequence wanted.
        pub from_sequence: Sequence,
        /// Number of messages.
        pub count: zerocopy::little_endian::U32,
        /// Zero.
        pub reserved: Reserved<4>,
    }
);

message!(
    /// Server → client: the next `count` application messages are resent, from `from_sequence`.
    Retransmission = 206, 16 {
        /// Sequence of the first resent message.
        pub from_sequence: Sequence,
        /// Number of messages that follow.
        pub count: zerocopy::little_endian::U32,
        /// Zero.
        pub reserved: Reserved<4>,
    }
);

message!(
    /// Server → client: a retransmission request that cannot be served.
    RetransmitReject = 207, 16 {
        /// The requested start.
        pub from_sequence: Sequence,
        /// Why.
        pub reason: RetransmitRejectReasonCode,
        /// Zero.
        pub reserved: Reserved<7>,
    }
);

message!(
    /// Either direction: the session ends; the sender closes the connection after it.
    Terminate = 208, 8 {
        /// Why.
        pub reason: TerminateReasonCode,
        /// Zero.
        pub reserved: Reserved<7>,
    }
);

message!(
    /// Server → client: an application message refused by the gateway before the engine (rate
    /// limit, engine busy, invalid field). Engine rejections come as `OrderRejected` instead.
    BusinessReject = 209, 24 {
        /// Client sequence of the refused message.
        pub client_sequence: Sequence,
        /// Its client order id, if it had one.
        pub client_order_id: ClientOrderId,
        /// The rule broken.
        pub reason: RejectReasonCode,
        /// Template id of the refused message.
        pub ref_template_id: zerocopy::little_endian::U16,
        /// Zero.
        pub reserved: Reserved<4>,
    }
);
