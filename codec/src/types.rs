//! Named wire types: integer newtypes for identifiers and amounts, and one-byte enum codes.
//!
//! Every field of every message has one of these types, so a price can never be passed where a
//! quantity is expected. All integers are little-endian and unaligned (`zerocopy`'s byte-order
//! types), so message structs have no implicit padding and can be read from any offset.

use core::fmt;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

macro_rules! wire_integer {
    ($(#[$meta:meta])* $name:ident($wire:ty, $native:ty)) => {
        $(#[$meta])*
        #[derive(
            FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
            Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord,
        )]
        #[repr(transparent)]
        pub struct $name($wire);

        impl core::hash::Hash for $name {
            #[inline]
            fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
                // One integer write (not the byte array with its length prefix): keeps id-keyed
                // maps fast with integer hashers.
                state.write_u64(u64::from(self.get()));
            }
        }

        impl $name {
            /// The zero value (for ids: "none").
            pub const ZERO: Self = Self(<$wire>::ZERO);

            /// Wraps a native integer.
            #[inline]
            pub const fn new(value: $native) -> Self {
                Self(<$wire>::new(value))
            }

            /// The native integer.
            #[inline]
            pub const fn get(self) -> $native {
                self.0.get()
            }
        }

        impl From<$native> for $name {
            #[inline]
            fn from(value: $native) -> Self {
                Self::new(value)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.get())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.get(), f)
            }
        }
    };
}

wire_integer!(
    /// An account holder. Gateways set it from the authenticated session, never from the client.
    UserId(U64, u64)
);
wire_integer!(
    /// Exchange-assigned order id, unique for the life of the exchange; 0 means "none".
    OrderId(U64, u64)
);
wire_integer!(
    /// Client-assigned order id, unique per user among that user's open orders; 0 means "none".
    ClientOrderId(U64, u64)
);
wire_integer!(
    /// A tradable market (order book), e.g. `BTC_USDC`.
    MarketId(U32, u32)
);
wire_integer!(
    /// An asset (currency), e.g. `BTC`.
    AssetId(U32, u32)
);
wire_integer!(
    /// A price as an integer number of the market's tick size.
    Ticks(U64, u64)
);
wire_integer!(
    /// A base-asset quantity as an integer number of the market's lot (step) size.
    Lots(U64, u64)
);
wire_integer!(
    /// An amount of one asset in its minor units (10^-decimals of the asset).
    Amount(U64, u64)
);
wire_integer!(
    /// The global command sequence number assigned by the sequencer (journal position).
    Sequence(U64, u64)
);
wire_integer!(
    /// Nanoseconds since the Unix epoch, stamped by the sequencer (never read inside the engine).
    TimestampNs(U64, u64)
);
wire_integer!(
    /// Trade id, sequential per market starting at 1.
    TradeId(U64, u64)
);
wire_integer!(
    /// Number of resting orders at a price level.
    OrderCount(U32, u32)
);

wire_integer!(
    /// Liquidity-provider shares of an AMM pool.
    Shares(U64, u64)
);

/// Reserved bytes that pad a block to a multiple of 8 bytes. Senders write zeros; receivers must
/// not interpret them, so a later schema version may give them a meaning. (Decoding keeps the
/// bytes as received, so a re-encoded message is byte-identical to its source.)
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct Reserved<const N: usize>([u8; N]);

impl<const N: usize> Reserved<N> {
    /// All-zero reserved bytes.
    pub const ZERO: Self = Self([0; N]);
}

impl<const N: usize> Default for Reserved<N> {
    fn default() -> Self {
        Self::ZERO
    }
}

impl<const N: usize> fmt::Debug for Reserved<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reserved<{N}>")
    }
}

/// Opaque fixed-length bytes (keys, nonces, signatures).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct FixedBytes<const N: usize>(pub [u8; N]);

impl<const N: usize> Default for FixedBytes<N> {
    fn default() -> Self {
        Self([0; N])
    }
}

impl<const N: usize> fmt::Debug for FixedBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..N.min(8)] {
            write!(f, "{byte:02x}")?;
        }
        if N > 8 { write!(f, "…") } else { Ok(()) }
    }
}

/// An Ed25519 public key (an API key).
pub type PublicKey = FixedBytes<32>;
/// A 32-byte random challenge.
pub type Nonce = FixedBytes<32>;
/// An Ed25519 signature.
pub type Signature = FixedBytes<64>;

/// An enum carried on the wire as a fixed-width code.
pub trait WireEnum: Sized + Copy + 'static {
    /// The schema's name of the enum type.
    const NAME: &'static str;
    /// Every variant, in code order.
    const ALL: &'static [Self];
    /// The numeric code of the variant.
    fn code(self) -> u16;
    /// The variant for a code, if any.
    fn from_code(code: u16) -> Option<Self>;
}

macro_rules! wire_enum {
    (
        $(#[$meta:meta])* $name:ident / $(#[$code_meta:meta])* $code:ident ($wire:ty, $native:ty) {
            $($(#[$vmeta:meta])* $variant:ident = $value:expr),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr($native)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value),+
        }

        impl WireEnum for $name {
            const NAME: &'static str = stringify!($name);
            const ALL: &'static [Self] = &[$($name::$variant),+];
            #[inline]
            fn code(self) -> u16 {
                self as $native as u16
            }
            #[inline]
            fn from_code(code: u16) -> Option<Self> {
                match code {
                    $(x if x == $value as u16 => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        $(#[$code_meta])*
        #[derive(
            FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
            Clone, Copy, PartialEq, Eq, Hash, Default,
        )]
        #[repr(transparent)]
        pub struct $code($wire);

        impl $code {
            /// The raw code as it is on the wire (possibly not a known variant).
            #[inline]
            pub fn raw(self) -> u16 {
                #[allow(clippy::useless_conversion)]
                u16::from(<$native>::from(self.0))
            }

            /// The decoded variant.
            ///
            /// # Errors
            /// [`crate::DecodeError::InvalidEnumValue`] when the code is not a known variant.
            #[inline]
            pub fn get(self) -> Result<$name, crate::DecodeError> {
                <$name as WireEnum>::from_code(self.raw()).ok_or(crate::DecodeError::InvalidEnumValue {
                    enum_name: stringify!($name),
                    value: self.raw(),
                })
            }
        }

        impl From<$name> for $code {
            #[inline]
            fn from(value: $name) -> Self {
                Self(<$wire>::from(value as $native))
            }
        }

        impl fmt::Debug for $code {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.get() {
                    Ok(v) => write!(f, "{v:?}"),
                    Err(_) => write!(f, concat!(stringify!($code), "({})"), self.raw()),
                }
            }
        }
    };
}

wire_enum!(
    /// Which side of the book an order is on.
    Side / /// Wire code of [`Side`].
    SideCode(u8, u8) {
        /// Buy.
        Bid = 1,
        /// Sell.
        Ask = 2,
    }
);

impl Side {
    /// The other side.
    #[inline]
    pub const fn opposite(self) -> Side {
        match self {
            Side::Bid => Side::Ask,
            Side::Ask => Side::Bid,
        }
    }
}

wire_enum!(
    /// A side filter for mass cancels.
    SideFilter / /// Wire code of [`SideFilter`].
    SideFilterCode(u8, u8) {
        /// Both sides.
        Both = 0,
        /// Bids only.
        Bid = 1,
        /// Asks only.
        Ask = 2,
    }
);

impl SideFilter {
    /// Whether an order on `side` is among those the filter selects.
    #[inline]
    pub const fn admits(self, side: Side) -> bool {
        match self {
            SideFilter::Both => true,
            SideFilter::Bid => matches!(side, Side::Bid),
            SideFilter::Ask => matches!(side, Side::Ask),
        }
    }
}

wire_enum!(
    /// Which kinds of open orders a mass cancel cancels (schema version 3; zero, `All`, is what
    /// the reserved byte held before, so older commands keep their meaning).
    OrderKindFilter / /// Wire code of [`OrderKindFilter`].
    OrderKindFilterCode(u8, u8) {
        /// Resting orders and pending trigger orders.
        All = 0,
        /// Resting orders only (orders on the book).
        Resting = 1,
        /// Pending trigger orders only.
        Trigger = 2,
    }
);

wire_enum!(
    /// Order type.
    OrderType / /// Wire code of [`OrderType`].
    OrderTypeCode(u8, u8) {
        /// Rests at its limit price unless time in force says otherwise.
        Limit = 1,
        /// Takes liquidity at any price; never rests.
        Market = 2,
    }
);

wire_enum!(
    /// How long an order may stay open.
    TimeInForce / /// Wire code of [`TimeInForce`].
    TimeInForceCode(u8, u8) {
        /// Good till cancelled: the remainder rests on the book.
        Gtc = 1,
        /// Immediate or cancel: the remainder expires.
        Ioc = 2,
        /// Fill or kill: fills completely at once or is rejected without any effect.
        Fok = 3,
    }
);

wire_enum!(
    /// What happens when an order would trade against another order of the same user.
    SelfTradePrevention / /// Wire code of [`SelfTradePrevention`].
    SelfTradePreventionCode(u8, u8) {
        /// The incoming (taker) order's remainder is cancelled; the resting order stays.
        RejectTaker = 0,
        /// The resting (maker) order is cancelled and matching continues.
        RejectMaker = 1,
        /// Both the resting order and the taker's remainder are cancelled.
        RejectBoth = 2,
        /// The trade happens (and pays fees on both sides).
        Allow = 3,
    }
);

wire_enum!(
    /// A boolean as one byte (SBE `BooleanType`).
    Boolean / /// Wire code of [`Boolean`].
    BooleanCode(u8, u8) {
        /// False.
        False = 0,
        /// True.
        True = 1,
    }
);

impl From<bool> for Boolean {
    fn from(value: bool) -> Self {
        if value { Boolean::True } else { Boolean::False }
    }
}

impl From<Boolean> for bool {
    fn from(value: Boolean) -> Self {
        value == Boolean::True
    }
}

impl From<bool> for BooleanCode {
    fn from(value: bool) -> Self {
        Boolean::from(value).into()
    }
}

wire_enum!(
    /// Why an order left the book before filling completely at a user's request.
    CancelReason / /// Wire code of [`CancelReason`].
    CancelReasonCode(u8, u8) {
        /// The owner cancelled it.
        UserRequested = 1,
        /// A mass cancel by the owner.
        MassCancel = 2,
        /// Self-trade prevention removed it.
        SelfTradePrevention = 3,
        /// An operator (admin) cancelled it, e.g. when halting a market.
        Administrative = 4,
        /// The other trigger of an attached stop-loss / take-profit pair fired (one cancels
        /// the other).
        OneCancelsOther = 5,
    }
);

wire_enum!(
    /// Why the unfilled remainder of an order expired.
    ExpireReason / /// Wire code of [`ExpireReason`].
    ExpireReasonCode(u8, u8) {
        /// Immediate-or-cancel (or market) remainder after matching.
        ImmediateOrCancel = 1,
        /// A market order ran out of opposite liquidity.
        NoLiquidity = 2,
        /// A market order ran out of funds: a buy out of quote, a sell by quote quantity out of
        /// base, or a quote quantity too small for one lot.
        FundsExhausted = 3,
        /// A market order (or a triggered one) reached the edge of the market's price band: the
        /// remainder would have traded at a price too far from the reference price.
        PriceBand = 4,
    }
);

wire_enum!(
    /// What makes a trigger order fire, relative to the market's last trade price. A buy stop
    /// fires when the price rises to its trigger, a sell stop when it falls to it; a take-profit
    /// is the opposite (a buy when the price falls to it, a sell when it rises to it).
    TriggerKind / /// Wire code of [`TriggerKind`].
    TriggerKindCode(u8, u8) {
        /// Not a trigger order: it trades or rests at once.
        None = 0,
        /// Stop (stop-loss): fires when the price moves against the order's side.
        Stop = 1,
        /// Take-profit: fires when the price moves in the order's favour.
        TakeProfit = 2,
        /// Fires when the last trade price crosses the trigger price from the side the reference
        /// price (last trade, else mid) was on at acceptance, as Backpack's `triggerPrice`: the
        /// engine records it as the `Stop` or `TakeProfit` that means (a trigger at the reference,
        /// or with no reference, is refused).
        Cross = 3,
    }
);

wire_enum!(
    /// Why a balance changed.
    BalanceChange / /// Wire code of [`BalanceChange`].
    BalanceChangeCode(u8, u8) {
        /// A deposit credited available.
        Deposit = 1,
        /// A withdrawal debited available.
        Withdrawal = 2,
        /// An order reserved funds (available → locked).
        OrderLocked = 3,
        /// An order released funds (locked → available).
        OrderReleased = 4,
        /// A trade settled.
        Trade = 5,
        /// An AMM pool operation settled (liquidity added or removed, swap).
        Pool = 6,
    }
);

wire_enum!(
    /// Which side of an AMM swap is fixed.
    SwapMode / /// Wire code of [`SwapMode`].
    SwapModeCode(u8, u8) {
        /// The amount paid in is fixed; the limit is the least accepted out.
        ExactIn = 1,
        /// The amount received is fixed; the limit is the most paid in.
        ExactOut = 2,
    }
);

wire_enum!(
    /// Why a binary session ends.
    TerminateReason / /// Wire code of [`TerminateReason`].
    TerminateReasonCode(u8, u8) {
        /// Orderly end at the peer's request.
        Finished = 0,
        /// Unknown API key, bad signature, or a message before logon.
        Unauthenticated = 1,
        /// Persistent abuse of the message-rate limit.
        Throttled = 2,
        /// Undecodable or out-of-protocol message (garbage on the stream).
        ProtocolError = 3,
        /// No message within the keep-alive interval.
        KeepAliveTimeout = 4,
        /// The client could not keep up with its execution reports.
        SlowConsumer = 5,
        /// The same API key logged on on another connection.
        DuplicateSession = 6,
        /// The server is shutting down.
        ServerShutdown = 7,
    }
);

wire_enum!(
    /// Why a retransmission request was refused.
    RetransmitRejectReason / /// Wire code of [`RetransmitRejectReason`].
    RetransmitRejectReasonCode(u8, u8) {
        /// The range starts before the kept window or after the last message sent.
        OutOfRange = 1,
        /// The request asks for more messages than one retransmission may carry.
        TooMany = 2,
    }
);

wire_enum!(
    /// What an operator does to a market.
    MarketAction / /// Wire code of [`MarketAction`].
    MarketActionCode(u8, u8) {
        /// Stop trading: new orders and replaces are rejected with `MarketHalted`; cancels work.
        Halt = 1,
        /// Trading resumes.
        Resume = 2,
    }
);

wire_enum!(
    /// Numbered reasons a command was rejected, named after the rule it broke. Rejections are
    /// data: every gateway maps each code to its protocol (FIX OrdRejReason/Text, SBE reject
    /// code, HTTP status and `code`). A rejected command changes no engine state.
    ///
    /// Numbering: 1xx market, 2xx order fields, 3xx funds and risk, 4xx order lifecycle,
    /// 5xx ledger, 6xx AMM pools, 9xx gateway-side (never produced by the engine).
    RejectReason / /// Wire code of [`RejectReason`].
    RejectReasonCode(U16, u16) {
        /// No market with that id.
        UnknownMarket = 101,
        /// The market is halted.
        MarketHalted = 102,
        /// No asset with that id.
        UnknownAsset = 103,
        /// Price is zero or above the market's maximum.
        InvalidPrice = 201,
        /// Price is not a multiple of the tick size (decimal input, gateway-side).
        PriceNotOnTick = 202,
        /// Quantity is zero.
        InvalidQuantity = 203,
        /// Quantity is not a multiple of the lot size (decimal input, gateway-side).
        QuantityNotOnLot = 204,
        /// Quantity below the market's minimum.
        QuantityBelowMinimum = 205,
        /// Quantity above the market's maximum.
        QuantityAboveMaximum = 206,
        /// Price × quantity below the market's minimum notional.
        NotionalBelowMinimum = 207,
        /// The combination of order type, price and quantities is not valid
        /// (e.g. a market order with a price, a limit order with a quote quantity).
        InvalidOrderType = 208,
        /// The time in force is not valid for this order (e.g. post-only IOC).
        InvalidTimeInForce = 209,
        /// A field holds a code that is not a known enum value.
        InvalidEnumValue = 210,
        /// Not enough available balance to reserve for the order or withdrawal.
        InsufficientBalance = 301,
        /// A post-only order would have taken liquidity.
        PostOnlyWouldTake = 302,
        /// A fill-or-kill order could not fill completely at once.
        FillOrKillNotFillable = 303,
        /// Self-trade prevention stopped the order before it could do anything.
        SelfTradePrevented = 304,
        /// The user has too many open orders on this market.
        TooManyOpenOrders = 305,
        /// The book has no room for another resting order (capacity fixed at start-up).
        BookFull = 306,
        /// A market order met an empty opposite side.
        NoLiquidity = 307,
        /// A limit price (or a triggered limit order's price) is outside the market's price band
        /// around its reference price.
        PriceOutsideBand = 308,
        /// The user has too many pending trigger orders on this market.
        TooManyTriggerOrders = 309,
        /// The client order id is already used by one of the user's open orders.
        DuplicateClientOrderId = 401,
        /// No open order with that id on that market.
        UnknownOrder = 402,
        /// The order belongs to another user.
        NotOrderOwner = 403,
        /// The replace changes nothing, or the new quantity is not above what already filled.
        InvalidReplace = 404,
        /// A trigger price is zero or above the market's maximum, or the last trade price has
        /// already reached it (the order would fire at once), or trigger fields come without a
        /// trigger kind (or the reverse), or an attached stop-loss / take-profit is on the wrong
        /// side of its parent's price (when placed, or after a replace that moves the parent).
        InvalidTriggerPrice = 405,
        /// Deposit or withdrawal of zero.
        AmountZero = 501,
        /// The operation would overflow a balance or a notional.
        ArithmeticOverflow = 502,
        /// The market has no AMM pool.
        PoolNotFound = 601,
        /// The swap or liquidity change would be worse than the command's limit.
        SlippageExceeded = 602,
        /// The pool has no liquidity.
        PoolEmpty = 603,
        /// The pool cannot pay that amount out, or a first deposit is too small.
        InsufficientLiquidity = 604,
        /// The user holds fewer pool shares than the command burns.
        InsufficientShares = 605,
        /// An amount is zero or the result would round to nothing.
        InvalidAmount = 606,
        /// The command comes from a gateway process whose id the engine cannot track: its
        /// deduplication table holds `engine::GATEWAYS_MAX` gateway ids and is full. Exactly once
        /// needs the table, so such a command is rejected rather than executed (or dropped
        /// silently); the operator runs fewer gateway ids.
        TooManyGateways = 701,
        /// The gateway's per-session message rate was exceeded (gateway-side).
        Throttled = 901,
        /// The engine's ingress ring was full; retry later (gateway-side).
        EngineBusy = 902,
        /// The message could not be decoded (gateway-side).
        MalformedMessage = 903,
    }
);

impl RejectReason {
    /// A short human-readable explanation, used in protocol text fields.
    pub const fn message(self) -> &'static str {
        match self {
            RejectReason::UnknownMarket => "unknown market",
            RejectReason::MarketHalted => "market is halted",
            RejectReason::UnknownAsset => "unknown asset",
            RejectReason::InvalidPrice => "price is zero or out of range",
            RejectReason::PriceNotOnTick => "price is not a multiple of the tick size",
            RejectReason::InvalidQuantity => "quantity is zero",
            RejectReason::QuantityNotOnLot => "quantity is not a multiple of the step size",
            RejectReason::QuantityBelowMinimum => "quantity is below the minimum",
            RejectReason::QuantityAboveMaximum => "quantity is above the maximum",
            RejectReason::NotionalBelowMinimum => "order value is below the minimum notional",
            RejectReason::InvalidOrderType => "invalid combination of order type, price and quantity",
            RejectReason::InvalidTimeInForce => "invalid time in force for this order",
            RejectReason::InvalidEnumValue => "a field has an unknown enum value",
            RejectReason::InsufficientBalance => "insufficient funds",
            RejectReason::PostOnlyWouldTake => "post-only order would immediately match",
            RejectReason::FillOrKillNotFillable => "fill-or-kill order cannot be filled completely",
            RejectReason::SelfTradePrevented => "order would trade against your own order",
            RejectReason::TooManyOpenOrders => "too many open orders",
            RejectReason::BookFull => "order book is full",
            RejectReason::NoLiquidity => "no liquidity for a market order",
            RejectReason::PriceOutsideBand => "price is outside the market's price band",
            RejectReason::TooManyTriggerOrders => "too many pending trigger orders",
            RejectReason::DuplicateClientOrderId => "client order id already in use by an open order",
            RejectReason::UnknownOrder => "order not found",
            RejectReason::NotOrderOwner => "order belongs to another user",
            RejectReason::InvalidReplace => "replace changes nothing or quantity not above filled",
            RejectReason::InvalidTriggerPrice => {
                "invalid trigger price: zero, out of range or already reached, or an attached stop-loss / take-profit on the wrong side of the order's price"
            }
            RejectReason::AmountZero => "amount must be positive",
            RejectReason::ArithmeticOverflow => "amount too large",
            RejectReason::PoolNotFound => "no liquidity pool for this market",
            RejectReason::SlippageExceeded => "price moved beyond the slippage limit",
            RejectReason::PoolEmpty => "the pool has no liquidity",
            RejectReason::InsufficientLiquidity => "not enough liquidity in the pool",
            RejectReason::InsufficientShares => "not enough pool shares",
            RejectReason::InvalidAmount => "amount is zero or too small",
            RejectReason::TooManyGateways => "too many gateway processes; send through another gateway",
            RejectReason::Throttled => "message rate limit exceeded",
            RejectReason::EngineBusy => "engine busy, retry later",
            RejectReason::MalformedMessage => "malformed message",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}
