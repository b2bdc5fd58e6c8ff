//! The application layer, inbound: FIX order-entry messages → the codec's commands; markets and
//! exact decimal conversion; the per-session ClOrdID map.
//!
//! Invariants:
//! - Prices and quantities are converted exactly (`codec::decimal`): a price is a decimal number
//!   of quote units per base unit that must be a whole number of ticks; a quantity a decimal
//!   number of base units that must be a whole number of lots. Anything else is refused, never
//!   rounded.
//! - The engine's client order id of an order is a 64-bit FNV-1a hash of its original ClOrdID
//!   (never 0). Every ClOrdID an open order has carried (its chain through replaces: the
//!   original, the last [`SUPERSEDED_CL_ORD_IDS_MAX`] intermediate ones, the current one) is in
//!   use ([`ClOrdIds`]): a NewOrderSingle, replace or cancel asking for it is refused as a
//!   duplicate, and a cancel or replace must name the current one. Chains live with the open
//!   orders (persisted with them in the session store); the ClOrdIDs of orders no longer open
//!   are remembered, bounded, only to name them in late reports (a forgotten one is reported as
//!   its decimal number).
//! - A message the gateway refuses changes no ClOrdID state.
//! - The user of every command is the session's.

use crate::encoder::Body;
use crate::parser::Message;
use crate::store::OrderRecord;
use codec::decimal::{DecimalError, parse_fixed};
use codec::*;
use engine::EngineConfig;
use std::collections::{HashMap, VecDeque};

/// Longest ClOrdID accepted.
pub(crate) const CL_ORD_ID_MAX: usize = 64;

/// A market as the gateway sees it.
#[derive(Debug, Clone)]
pub(crate) struct MarketInfo {
    pub id: MarketId,
    pub symbol: String,
    pub tick_size: u64,
    pub lot_size: u64,
    pub base_decimals: u8,
    pub quote_decimals: u8,
}

/// Why a price or quantity text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conversion {
    /// Not a number (SessionRejectReason 6).
    Format,
    /// A number, but not on the grid or too large (an order reject with this reason).
    Refused(RejectReason),
}

fn trim(text: String) -> String {
    if !text.contains('.') {
        return text;
    }
    let trimmed = text.trim_end_matches('0').trim_end_matches('.');
    trimmed.to_string()
}

impl MarketInfo {
    /// Decimal price → ticks.
    pub fn ticks(&self, text: &[u8]) -> Result<u64, Conversion> {
        let text = std::str::from_utf8(text).map_err(|_| Conversion::Format)?;
        match parse_fixed(text, self.quote_decimals) {
            Ok(minor) if minor % self.tick_size == 0 => Ok(minor / self.tick_size),
            Ok(_) | Err(DecimalError::TooPrecise(_)) => Err(Conversion::Refused(RejectReason::PriceNotOnTick)),
            Err(DecimalError::Overflow) => Err(Conversion::Refused(RejectReason::InvalidPrice)),
            Err(DecimalError::Malformed) => Err(Conversion::Format),
        }
    }

    /// Decimal quantity → lots.
    pub fn lots(&self, text: &[u8]) -> Result<u64, Conversion> {
        let text = std::str::from_utf8(text).map_err(|_| Conversion::Format)?;
        match parse_fixed(text, self.base_decimals) {
            Ok(minor) if minor % self.lot_size == 0 => Ok(minor / self.lot_size),
            Ok(_) | Err(DecimalError::TooPrecise(_)) => Err(Conversion::Refused(RejectReason::QuantityNotOnLot)),
            Err(DecimalError::Overflow) => Err(Conversion::Refused(RejectReason::QuantityAboveMaximum)),
            Err(DecimalError::Malformed) => Err(Conversion::Format),
        }
    }

    /// Ticks → decimal price text (no trailing zeros).
    pub fn price(&self, ticks: u64) -> String {
        let minor = u128::from(ticks) * u128::from(self.tick_size);
        trim(format_u128(minor, self.quote_decimals))
    }

    /// Quote minor units → decimal text.
    pub fn quote_amount(&self, minor: u128) -> String {
        trim(format_u128(minor, self.quote_decimals))
    }

    /// Lots → decimal quantity text.
    pub fn quantity(&self, lots: u64) -> String {
        let minor = u128::from(lots) * u128::from(self.lot_size);
        trim(format_u128(minor, self.base_decimals))
    }
}

fn format_u128(value: u128, scale: u8) -> String {
    let divisor = 10u128.pow(u32::from(scale));
    if scale == 0 {
        value.to_string()
    } else {
        format!("{}.{:0width$}", value / divisor, value % divisor, width = usize::from(scale))
    }
}

/// Every market, by symbol and by id.
#[derive(Debug, Default)]
pub(crate) struct Markets {
    list: Vec<MarketInfo>,
    by_symbol: HashMap<Vec<u8>, usize>,
}

impl Markets {
    pub fn new(config: &EngineConfig) -> Self {
        let decimals = |asset: AssetId| config.assets.get(asset.get() as usize).map_or(0, |a| a.decimals);
        let list: Vec<MarketInfo> = config
            .markets
            .iter()
            .map(|m| MarketInfo {
                id: m.id,
                symbol: m.symbol.clone(),
                tick_size: m.tick_size.max(1),
                lot_size: m.lot_size.max(1),
                base_decimals: decimals(m.base),
                quote_decimals: decimals(m.quote),
            })
            .collect();
        let by_symbol = list.iter().enumerate().map(|(i, m)| (m.symbol.as_bytes().to_vec(), i)).collect();
        Self { list, by_symbol }
    }

    pub fn by_symbol(&self, symbol: &[u8]) -> Option<&MarketInfo> {
        self.by_symbol.get(symbol).map(|&i| &self.list[i])
    }

    pub fn by_id(&self, id: MarketId) -> Option<&MarketInfo> {
        self.list.iter().find(|m| m.id == id)
    }
}

/// The engine's client order id of a ClOrdID: FNV-1a 64, never 0.
pub(crate) fn engine_id(cl_ord_id: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in cl_ord_id {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

/// Superseded ClOrdIDs remembered per open order, newest kept: a replace beyond this many
/// forgets the oldest intermediate one (the original ClOrdID is still recognised by its hash,
/// which is the order's engine id).
pub(crate) const SUPERSEDED_CL_ORD_IDS_MAX: usize = 32;

/// The ClOrdIDs of one open order (or of a NewOrderSingle the engine has not answered yet).
#[derive(Debug)]
struct Chain {
    /// The order's ClOrdID now: its original one, or that of its last replace.
    current: Box<str>,
    /// Earlier ClOrdIDs, oldest first, at most [`SUPERSEDED_CL_ORD_IDS_MAX`].
    superseded: VecDeque<Box<str>>,
    /// The exchange's order id, once the engine accepted the order.
    order_id: Option<u64>,
}

/// Why a cancel or replace cannot name the order its OrigClOrdID(41) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Superseded {
    /// The order's engine id.
    pub id: u64,
    /// Its exchange order id, if accepted.
    pub order_id: Option<u64>,
    /// Its current ClOrdID (the one FIX expects in OrigClOrdID).
    pub current: Box<str>,
}

/// The ClOrdIDs of one session.
///
/// Invariants: every ClOrdID of the chain of an open order (current and the last
/// [`SUPERSEDED_CL_ORD_IDS_MAX`] superseded ones) and every ClOrdID a replace in flight asks for
/// is in use: a NewOrderSingle, replace or cancel giving it as ClOrdID(11) is a duplicate. The
/// chains change only when the engine answers (accepted, replaced, done) or when a message is
/// translated into a command; a message refused by the gateway changes nothing. Chains are
/// bounded by the open orders (the engine bounds those per user); the history of ClOrdIDs of
/// orders no longer open, kept only to name them in late reports, is bounded by `max`.
#[derive(Debug)]
pub(crate) struct ClOrdIds {
    /// Engine id → chain, for open orders and new orders in flight.
    chains: HashMap<u64, Chain>,
    /// Every ClOrdID in a chain → the engine id of its order.
    names: HashMap<Box<str>, u64>,
    /// ClOrdID asked for by a replace in flight → the engine id of the order it would name.
    requested: HashMap<Box<str>, u64>,
    /// Engine id → last ClOrdID, for orders no longer open (bounded, oldest forgotten).
    history: HashMap<u64, Box<str>>,
    history_order: VecDeque<u64>,
    max: usize,
}

impl ClOrdIds {
    pub fn new(max: usize) -> Self {
        Self {
            chains: HashMap::new(),
            names: HashMap::new(),
            requested: HashMap::new(),
            history: HashMap::new(),
            history_order: VecDeque::new(),
            max: max.max(16),
        }
    }

    fn remember(&mut self, id: u64, cl_ord_id: &str) {
        if self.history.insert(id, cl_ord_id.into()).is_none() {
            self.history_order.push_back(id);
        }
        while self.history_order.len() > self.max {
            let Some(old) = self.history_order.pop_front() else { break };
            self.history.remove(&old);
        }
    }

    /// Whether `cl_ord_id` names an open order (now or earlier in its chain), an order being
    /// placed, or is asked for by a replace in flight. A ClOrdID hashing to an open order's
    /// engine id counts too: it is that order's original ClOrdID (or the engine would refuse it
    /// as a duplicate anyway).
    pub fn in_use(&self, cl_ord_id: &str) -> bool {
        self.names.contains_key(cl_ord_id)
            || self.requested.contains_key(cl_ord_id)
            || self.chains.contains_key(&engine_id(cl_ord_id.as_bytes()))
    }

    /// A NewOrderSingle about to go to the engine: its ClOrdID starts a chain. Returns its
    /// engine id, or `None` when the ClOrdID is in use (nothing changes then).
    pub fn place(&mut self, cl_ord_id: &str) -> Option<u64> {
        if self.in_use(cl_ord_id) {
            return None;
        }
        let id = engine_id(cl_ord_id.as_bytes());
        self.names.insert(cl_ord_id.into(), id);
        self.chains.insert(id, Chain { current: cl_ord_id.into(), superseded: VecDeque::new(), order_id: None });
        self.remember(id, cl_ord_id);
        Some(id)
    }

    /// Restores the chain of an open order from the session store.
    pub fn restore(&mut self, id: u64, order_id: u64, current: &str, superseded: &[Box<str>]) {
        let keep = superseded.len().saturating_sub(SUPERSEDED_CL_ORD_IDS_MAX);
        let superseded: VecDeque<Box<str>> = superseded[keep..].iter().cloned().collect();
        for name in superseded.iter().chain(std::iter::once(&current.into())) {
            self.names.insert(name.clone(), id);
        }
        self.chains.insert(id, Chain { current: current.into(), superseded, order_id: Some(order_id) });
        self.remember(id, current);
    }

    /// The engine accepted the order `id` as `order_id`.
    pub fn accepted(&mut self, id: u64, order_id: u64) {
        if let Some(chain) = self.chains.get_mut(&id) {
            chain.order_id = Some(order_id);
        }
    }

    /// The order `id` is done (filled, canceled, expired; or, never accepted, rejected): its
    /// ClOrdIDs are free again.
    pub fn close(&mut self, id: u64) {
        let Some(chain) = self.chains.remove(&id) else { return };
        for name in chain.superseded.iter().chain(std::iter::once(&chain.current)) {
            if self.names.get(name) == Some(&id) {
                self.names.remove(name);
            }
        }
        // The report about the event that closed it (built right after) still names it.
        self.remember(id, &chain.current);
    }

    /// The engine rejected a NewOrderSingle: its chain goes, unless the order is open (the
    /// engine refused a duplicate of an open order, which the gateway refuses before).
    pub fn rejected_new(&mut self, id: u64) {
        if self.chains.get(&id).is_some_and(|chain| chain.order_id.is_none()) {
            self.close(id);
        }
    }

    /// The engine id of the order OrigClOrdID(41) names. A ClOrdID the order has carried
    /// before its current one is refused ([`Superseded`]): FIX expects the latest. A ClOrdID
    /// not known here maps to its hash (the engine answers unknown order if nothing has it).
    pub fn resolve(&self, orig: &str) -> Result<u64, Superseded> {
        if let Some(&id) = self.requested.get(orig) {
            // Named by a replace still in flight: the engine orders the two.
            return Ok(id);
        }
        let id = self.names.get(orig).copied().unwrap_or_else(|| engine_id(orig.as_bytes()));
        match self.chains.get(&id) {
            Some(chain) if *chain.current != *orig => {
                Err(Superseded { id, order_id: chain.order_id, current: chain.current.clone() })
            }
            _ => Ok(id),
        }
    }

    /// The exchange order id of the order `id`, if open and accepted.
    pub fn order_id(&self, id: u64) -> Option<u64> {
        self.chains.get(&id).and_then(|chain| chain.order_id)
    }

    /// A replace of the order `id` asking for `cl_ord_id` goes to the engine (the caller checked
    /// [`ClOrdIds::in_use`]).
    pub fn request(&mut self, cl_ord_id: &str, id: u64) {
        self.requested.insert(cl_ord_id.into(), id);
    }

    /// The engine refused (or never answered) the replace asking for `cl_ord_id`.
    pub fn release(&mut self, cl_ord_id: &str) {
        self.requested.remove(cl_ord_id);
    }

    /// After a replace: the order `id` is now called `cl_ord_id`.
    pub fn replaced(&mut self, id: u64, cl_ord_id: &str) {
        self.requested.remove(cl_ord_id);
        let Some(chain) = self.chains.get_mut(&id) else {
            self.remember(id, cl_ord_id);
            return;
        };
        let previous = std::mem::replace(&mut chain.current, cl_ord_id.into());
        chain.superseded.push_back(previous);
        let forgotten =
            if chain.superseded.len() > SUPERSEDED_CL_ORD_IDS_MAX { chain.superseded.pop_front() } else { None };
        if let Some(name) = forgotten
            && self.names.get(&name) == Some(&id)
        {
            self.names.remove(&name);
        }
        self.names.insert(cl_ord_id.into(), id);
        self.remember(id, cl_ord_id);
    }

    /// The superseded ClOrdIDs of the open order `id`, oldest first (persisted with it).
    pub fn superseded(&self, id: u64) -> Vec<Box<str>> {
        self.chains.get(&id).map_or_else(Vec::new, |chain| chain.superseded.iter().cloned().collect())
    }

    /// The current ClOrdID of an engine id (its decimal number if forgotten).
    pub fn text(&self, id: ClientOrderId) -> String {
        match self.chains.get(&id.get()) {
            Some(chain) => chain.current.to_string(),
            None => self.history.get(&id.get()).map_or_else(|| id.get().to_string(), |t| t.to_string()),
        }
    }
}

/// A command sent to the engine whose answer needs the request's own identifiers.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    /// A NewOrderSingle; `stop_ticks` is the StopPx of a stop (OrdType 3 or 4), else 0.
    New {
        side: Side,
        lots: u64,
        ticks: u64,
        order_type: OrderType,
        stop_ticks: u64,
    },
    Cancel {
        cl_ord_id: Box<str>,
        orig: Box<str>,
    },
    Replace {
        cl_ord_id: Box<str>,
        orig: Box<str>,
    },
    MassCancel {
        cl_ord_id: Box<str>,
        request_type: u8,
    },
}

/// Why an application message did not become a command.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Session Reject(3): RefTagID, SessionRejectReason, Text.
    Session { tag: u32, reason: u32, text: &'static str },
    /// BusinessMessageReject(j): BusinessRejectReason, Text.
    Business { reason: u32, text: String, ref_id: Option<String> },
    /// An application answer (an ExecutionReport Rejected or an OrderCancelReject).
    Report { msg_type: &'static [u8], body: Body },
}

/// FIX OrdRejReason(103) of an engine reason.
pub(crate) fn ord_rej_reason(reason: RejectReason) -> u32 {
    use RejectReason::*;
    match reason {
        UnknownMarket => 1,
        MarketHalted => 2,
        InsufficientBalance | TooManyOpenOrders => 3,
        UnknownOrder => 5,
        DuplicateClientOrderId => 6,
        InvalidQuantity | QuantityNotOnLot | QuantityBelowMinimum | QuantityAboveMaximum => 13,
        InvalidOrderType | InvalidTimeInForce | PostOnlyWouldTake | FillOrKillNotFillable => 11,
        _ => 99,
    }
}

/// FIX CxlRejReason(102) of an engine reason.
pub(crate) fn cxl_rej_reason(reason: RejectReason) -> u32 {
    match reason {
        RejectReason::UnknownOrder | RejectReason::NotOrderOwner => 1,
        RejectReason::DuplicateClientOrderId => 6,
        _ => 99,
    }
}

fn required<'a>(message: &Message<'a>, tag: u32) -> Result<&'a [u8], Refusal> {
    message.get(tag).ok_or(Refusal::Session { tag, reason: 1, text: "Required tag missing" })
}

fn bad_value(tag: u32) -> Refusal {
    Refusal::Session { tag, reason: 5, text: "Value is incorrect (out of range) for this tag" }
}

fn bad_format(tag: u32) -> Refusal {
    Refusal::Session { tag, reason: 6, text: "Incorrect data format for value" }
}

/// A ClOrdID-like text field: 1..=64 printable ASCII bytes.
fn id_field<'a>(message: &Message<'a>, tag: u32) -> Result<&'a str, Refusal> {
    let value = required(message, tag)?;
    if value.len() > CL_ORD_ID_MAX || !value.iter().all(|b| b.is_ascii_graphic()) {
        return Err(bad_value(tag));
    }
    std::str::from_utf8(value).map_err(|_| bad_value(tag))
}

fn market<'m>(markets: &'m Markets, message: &Message<'_>, cl_ord_id: &str) -> Result<&'m MarketInfo, Refusal> {
    let symbol = required(message, 55)?;
    markets.by_symbol(symbol).ok_or_else(|| Refusal::Business {
        reason: 2,
        text: format!("unknown symbol {}", String::from_utf8_lossy(symbol)),
        ref_id: Some(cl_ord_id.to_string()),
    })
}

fn side(message: &Message<'_>) -> Result<Side, Refusal> {
    match required(message, 54)? {
        b"1" => Ok(Side::Bid),
        b"2" => Ok(Side::Ask),
        _ => Err(bad_value(54)),
    }
}

/// An ExecutionReport Rejected for a NewOrderSingle refused by the gateway itself.
pub(crate) fn rejected_new(message: &Message<'_>, cl_ord_id: &str, reason: RejectReason) -> Refusal {
    rejected_new_saying(message, cl_ord_id, reason, reason.message())
}

/// [`rejected_new`] with a Text(58) of its own.
fn rejected_new_saying(message: &Message<'_>, cl_ord_id: &str, reason: RejectReason, text: &str) -> Refusal {
    let mut body = Body::new();
    body.field(37, "NONE").field(11, cl_ord_id).field(17, format!("R-{}", engine_id(message.bytes())));
    body.field(150, "8").field(39, "8");
    // The request's own fields, StopPx of a stop order included.
    for tag in [55, 54, 38, 40, 44, 99] {
        if let Some(value) = message.get(tag) {
            body.field(tag, value);
        }
    }
    body.uint(14, 0).uint(151, 0).field(6, "0").uint(103, u64::from(ord_rej_reason(reason))).field(58, text);
    Refusal::Report { msg_type: b"8", body }
}

/// Text(58) of an ExecutionReport Rejected for TimeInForce Day(0): the exchange trades around
/// the clock, so there is no end of day for such an order to expire at.
const DAY_NOT_SUPPORTED: &str =
    "TimeInForce Day(0) is not supported (continuous trading, no end of day): use 1 GTC, 3 IOC or 4 FOK";

/// A cancel or replace request, as an OrderCancelReject must echo it.
struct CancelRequest<'a> {
    cl_ord_id: &'a str,
    orig: &'a str,
    /// CxlRejResponseTo(434): 1 cancel, 2 replace.
    response_to: &'static str,
    /// OrderID(37) and OrdStatus(39) of the order, when it is a known open order of the session.
    known: Option<(u64, &'static str)>,
}

impl CancelRequest<'_> {
    /// An OrderCancelReject saying `text`.
    fn reject_saying(&self, reason: RejectReason, text: &str) -> Refusal {
        let mut body = Body::new();
        match self.known {
            Some((order_id, status)) => {
                body.uint(37, order_id).field(11, self.cl_ord_id).field(41, self.orig).field(39, status)
            }
            None => body.field(37, "NONE").field(11, self.cl_ord_id).field(41, self.orig).field(39, "8"),
        };
        body.field(434, self.response_to);
        body.uint(102, u64::from(cxl_rej_reason(reason))).field(58, text);
        Refusal::Report { msg_type: b"9", body }
    }

    /// An OrderCancelReject with the engine reason's text.
    fn reject(&self, reason: RejectReason) -> Refusal {
        self.reject_saying(reason, reason.message())
    }
}

/// OrdStatus(39) of an open order: partially filled or new.
pub(crate) fn open_status(cum_lots: u64) -> &'static str {
    if cum_lots > 0 { "1" } else { "0" }
}

/// The open order of the session a cancel or replace is about (OrderID(37) when given, else
/// the order its OrigClOrdID resolved to): its OrderID and OrdStatus.
fn known_order(
    message: &Message<'_>,
    ids: &ClOrdIds,
    orders: &HashMap<u64, OrderRecord>,
    target: &Result<u64, Superseded>,
) -> Option<(u64, &'static str)> {
    let order_id = match (message.get(37).and_then(parse_u64), target) {
        (Some(order_id), _) => order_id,
        (None, Ok(id)) => ids.order_id(*id)?,
        (None, Err(superseded)) => superseded.order_id?,
    };
    orders.get(&order_id).map(|order| (order_id, open_status(order.cum_lots)))
}

/// The checks on the identities of a cancel or replace, after its fields: OrigClOrdID must be
/// the order's latest ClOrdID, and ClOrdID must not be in use. Returns the engine id to send.
fn check_identities(
    request: &CancelRequest<'_>,
    ids: &ClOrdIds,
    target: Result<u64, Superseded>,
) -> Result<u64, Refusal> {
    let id = match target {
        Ok(id) => id,
        Err(superseded) => {
            let text = format!(
                "OrigClOrdID {} was replaced: the order's latest ClOrdID is {}",
                request.orig, superseded.current
            );
            // CxlRejReason 99 (other): FIX has no code for a superseded OrigClOrdID.
            return Err(request.reject_saying(RejectReason::InvalidReplace, &text));
        }
    };
    if ids.in_use(request.cl_ord_id) {
        return Err(request.reject(RejectReason::DuplicateClientOrderId));
    }
    Ok(id)
}

/// Translates an order-entry message into a command for `user_id`. `orders` are the session's
/// open orders (for the OrderID and OrdStatus of an OrderCancelReject). A message refused here
/// leaves `ids` as it was.
pub(crate) fn translate(
    message: &Message<'_>,
    markets: &Markets,
    ids: &mut ClOrdIds,
    orders: &HashMap<u64, OrderRecord>,
    user_id: UserId,
) -> Result<(Command, Option<Pending>), Refusal> {
    match message.msg_type() {
        b"D" => new_order_single(message, markets, ids, user_id).map(|(command, pending)| (command, Some(pending))),
        b"F" => {
            let cl_ord_id = id_field(message, 11)?;
            let orig = id_field(message, 41)?;
            let market = market(markets, message, cl_ord_id)?;
            let target = ids.resolve(orig);
            let known = known_order(message, ids, orders, &target);
            let request = CancelRequest { cl_ord_id, orig, response_to: "1", known };
            let id = check_identities(&request, ids, target)?;
            let order_id = message.get(37).and_then(parse_u64).unwrap_or(0);
            let command = Command::CancelOrder(CancelOrder {
                user_id,
                order_id: OrderId::new(order_id),
                client_order_id: ClientOrderId::new(if order_id == 0 { id } else { 0 }),
                market_id: market.id,
                reserved: Reserved::ZERO,
            });
            Ok((command, Some(Pending::Cancel { cl_ord_id: cl_ord_id.into(), orig: orig.into() })))
        }
        b"G" => {
            let cl_ord_id = id_field(message, 11)?;
            let orig = id_field(message, 41)?;
            let market = market(markets, message, cl_ord_id)?;
            side(message)?;
            let target = ids.resolve(orig);
            let known = known_order(message, ids, orders, &target);
            let request = CancelRequest { cl_ord_id, orig, response_to: "2", known };
            if required(message, 40)? != b"2" {
                return Err(request.reject(RejectReason::InvalidReplace));
            }
            let quantity = required(message, 38)?;
            let price = required(message, 44)?;
            let lots = match market.lots(quantity) {
                Ok(lots) => lots,
                Err(Conversion::Format) => return Err(bad_format(38)),
                Err(Conversion::Refused(reason)) => return Err(request.reject(reason)),
            };
            let ticks = match market.ticks(price) {
                Ok(ticks) => ticks,
                Err(Conversion::Format) => return Err(bad_format(44)),
                Err(Conversion::Refused(reason)) => return Err(request.reject(reason)),
            };
            if lots == 0 || ticks == 0 {
                let reason = if lots == 0 { RejectReason::InvalidQuantity } else { RejectReason::InvalidPrice };
                return Err(request.reject(reason));
            }
            let id = check_identities(&request, ids, target)?;
            let order_id = message.get(37).and_then(parse_u64).unwrap_or(0);
            let command = Command::CancelReplace(CancelReplace {
                user_id,
                order_id: OrderId::new(order_id),
                client_order_id: ClientOrderId::new(if order_id == 0 { id } else { 0 }),
                new_price_ticks: Ticks::new(ticks),
                new_quantity_lots: Lots::new(lots),
                market_id: market.id,
                reserved: Reserved::ZERO,
            });
            // Reserved until the engine answers: no other message may ask for it meanwhile.
            ids.request(cl_ord_id, id);
            Ok((command, Some(Pending::Replace { cl_ord_id: cl_ord_id.into(), orig: orig.into() })))
        }
        b"q" => {
            let cl_ord_id = id_field(message, 11)?;
            let request_type = match required(message, 530)? {
                b"1" => 1,
                b"7" => 7,
                _ => return Err(bad_value(530)),
            };
            let market_id = if request_type == 1 { market(markets, message, cl_ord_id)?.id } else { MarketId::ZERO };
            let side = match message.get(54) {
                None => SideFilter::Both,
                Some(b"1") => SideFilter::Bid,
                Some(b"2") => SideFilter::Ask,
                Some(_) => return Err(bad_value(54)),
            };
            let command = Command::MassCancel(MassCancel {
                user_id,
                market_id,
                side: side.into(),
                kinds: OrderKindFilter::All.into(),
                reserved: Reserved::ZERO,
            });
            Ok((command, Some(Pending::MassCancel { cl_ord_id: cl_ord_id.into(), request_type })))
        }
        _ => Err(Refusal::Business { reason: 3, text: "Unsupported Message Type".into(), ref_id: None }),
    }
}

fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0')))
}

fn new_order_single(
    message: &Message<'_>,
    markets: &Markets,
    ids: &mut ClOrdIds,
    user_id: UserId,
) -> Result<(Command, Pending), Refusal> {
    let cl_ord_id = id_field(message, 11)?;
    let market = market(markets, message, cl_ord_id)?;
    let side = side(message)?;
    let quantity = required(message, 38)?;
    // OrdType 3 (Stop) and 4 (Stop limit) are stop orders: a market or limit order placed when
    // the last trade price reaches StopPx(99) against the order's side (a buy when the price
    // rises to it, a sell when it falls to it).
    let (order_type, is_stop) = match required(message, 40)? {
        b"1" => (OrderType::Market, false),
        b"2" => (OrderType::Limit, false),
        b"3" => (OrderType::Market, true),
        b"4" => (OrderType::Limit, true),
        [b'0'..=b'9' | b'A'..=b'Z'] => return Err(rejected_new(message, cl_ord_id, RejectReason::InvalidOrderType)),
        _ => return Err(bad_value(40)),
    };
    // Absent: good till canceled, the exchange's only resting time in force (see DAY_NOT_SUPPORTED).
    let time_in_force = match message.get(59).unwrap_or(b"1") {
        b"0" => {
            return Err(rejected_new_saying(message, cl_ord_id, RejectReason::InvalidTimeInForce, DAY_NOT_SUPPORTED));
        }
        b"1" => TimeInForce::Gtc,
        b"3" => TimeInForce::Ioc,
        b"4" => TimeInForce::Fok,
        [b'0'..=b'9' | b'A'..=b'Z'] => {
            return Err(rejected_new(message, cl_ord_id, RejectReason::InvalidTimeInForce));
        }
        _ => return Err(bad_value(59)),
    };
    let post_only = message.get(18).is_some_and(|inst| inst.split(|&b| b == b' ').any(|i| i == b"6"));
    let lots = match market.lots(quantity) {
        Ok(lots) => lots,
        Err(Conversion::Format) => return Err(bad_format(38)),
        Err(Conversion::Refused(reason)) => return Err(rejected_new(message, cl_ord_id, reason)),
    };
    let ticks = match (order_type, message.get(44)) {
        (OrderType::Limit, None) => {
            return Err(Refusal::Session { tag: 44, reason: 1, text: "Required tag missing" });
        }
        (OrderType::Limit, Some(price)) => match market.ticks(price) {
            Ok(ticks) => ticks,
            Err(Conversion::Format) => return Err(bad_format(44)),
            Err(Conversion::Refused(reason)) => return Err(rejected_new(message, cl_ord_id, reason)),
        },
        (OrderType::Market, _) => 0,
    };
    let stop_ticks = match (is_stop, message.get(99)) {
        (false, _) => 0,
        (true, None) => return Err(Refusal::Session { tag: 99, reason: 1, text: "Required tag missing" }),
        (true, Some(stop_price)) => match market.ticks(stop_price) {
            Ok(ticks) => ticks,
            Err(Conversion::Format) => return Err(bad_format(99)),
            Err(Conversion::Refused(reason)) => return Err(rejected_new(message, cl_ord_id, reason)),
        },
    };
    // Last: a NewOrderSingle refused for any reason leaves the ClOrdIDs as they were.
    let Some(client_order_id) = ids.place(cl_ord_id) else {
        return Err(rejected_new(message, cl_ord_id, RejectReason::DuplicateClientOrderId));
    };
    let pending = Pending::New { side, lots, ticks, order_type, stop_ticks };
    let command = Command::NewOrder(NewOrder {
        user_id,
        client_order_id: ClientOrderId::new(client_order_id),
        price_ticks: Ticks::new(ticks),
        quantity_lots: Lots::new(lots),
        quote_quantity: Amount::ZERO,
        market_id: market.id,
        side: side.into(),
        order_type: order_type.into(),
        time_in_force: time_in_force.into(),
        self_trade_prevention: SelfTradePrevention::RejectTaker.into(),
        post_only: post_only.into(),
        trigger_kind: if is_stop { TriggerKind::Stop } else { TriggerKind::None }.into(),
        trigger_price_ticks: Ticks::new(stop_ticks),
        ..NewOrder::default()
    });
    Ok((command, pending))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_conversions() {
        let markets = Markets::new(&EngineConfig::sample());
        let btc = markets.by_symbol(b"BTC_USDC").unwrap();
        assert_eq!(btc.ticks(b"60000.1"), Ok(600_001));
        assert_eq!(btc.ticks(b"60000.15"), Err(Conversion::Refused(RejectReason::PriceNotOnTick)));
        assert_eq!(btc.ticks(b"6e4"), Err(Conversion::Format));
        assert_eq!(btc.lots(b"0.00002"), Ok(2));
        assert_eq!(btc.lots(b"0.000025"), Err(Conversion::Refused(RejectReason::QuantityNotOnLot)));
        assert_eq!(btc.price(600_001), "60000.1");
        assert_eq!(btc.quantity(2), "0.00002");
        assert_eq!(btc.price(600_000), "60000");
    }

    #[test]
    fn cl_ord_ids_chain_through_replaces_and_are_freed_when_the_order_is_done() {
        let mut ids = ClOrdIds::new(16);
        let a = ids.place("A").unwrap();
        assert_eq!(ids.place("A"), None);
        ids.accepted(a, 7);
        ids.request("B", a);
        assert!(ids.in_use("B"));
        ids.replaced(a, "B");
        ids.request("C", a);
        ids.replaced(a, "C");
        assert_eq!(ids.resolve("C"), Ok(a));
        let superseded = Superseded { id: a, order_id: Some(7), current: "C".into() };
        assert_eq!(ids.resolve("A"), Err(superseded.clone()));
        assert_eq!(ids.resolve("B"), Err(superseded));
        assert!(["A", "B", "C"].iter().all(|name| ids.in_use(name)));
        assert_eq!(ids.text(ClientOrderId::new(a)), "C");
        assert_eq!(ids.superseded(a), vec![Box::from("A"), Box::from("B")]);
        // A replace the engine refused frees its ClOrdID only.
        ids.request("D", a);
        ids.release("D");
        assert!(!ids.in_use("D") && ids.in_use("C"));
        ids.close(a);
        assert!(["A", "B", "C"].iter().all(|name| !ids.in_use(name)));
        assert_eq!(ids.text(ClientOrderId::new(a)), "C", "late reports still name it");
        // A NewOrderSingle the engine refused frees its ClOrdID; an accepted order is kept.
        let e = ids.place("E").unwrap();
        ids.rejected_new(e);
        assert!(!ids.in_use("E"));
        let f = ids.place("F").unwrap();
        ids.accepted(f, 8);
        ids.rejected_new(f);
        assert!(ids.in_use("F"));
    }

    #[test]
    fn cl_ord_ids_are_bounded() {
        let mut ids = ClOrdIds::new(16);
        let a = ids.place("R0").unwrap();
        for n in 1..=SUPERSEDED_CL_ORD_IDS_MAX + 5 {
            ids.replaced(a, &format!("R{n}"));
        }
        assert_eq!(ids.superseded(a).len(), SUPERSEDED_CL_ORD_IDS_MAX);
        assert_eq!(ids.names.len(), SUPERSEDED_CL_ORD_IDS_MAX + 1);
        // The oldest intermediate ClOrdIDs are forgotten; the original still names the order.
        assert!(!ids.in_use("R1") && ids.in_use("R0") && ids.in_use("R6"));
        for n in 0..100 {
            let id = ids.place(&format!("N{n}")).unwrap();
            ids.close(id);
        }
        assert!(ids.history.len() <= 16 && ids.history_order.len() <= 16 && ids.chains.len() == 1);
    }
}
