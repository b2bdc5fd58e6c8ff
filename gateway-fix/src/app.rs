//! The application layer, inbound: FIX order-entry messages → the codec's commands; markets and
//! exact decimal conversion; the per-session ClOrdID map.
//!
//! Invariants:
//! - Prices and quantities are converted exactly (`codec::decimal`): a price is a decimal number
//!   of quote units per base unit that must be a whole number of ticks; a quantity a decimal
//!   number of base units that must be a whole number of lots. Anything else is refused, never
//!   rounded.
//! - The engine's client order id of an order is a 64-bit FNV-1a hash of its original ClOrdID
//!   (never 0), so OrigClOrdID look-ups work without state (also after a restart); the map from
//!   those ids back to the current ClOrdID text (and from the ClOrdIDs given by replaces to the
//!   order's id) is bounded ([`ClOrdIds`]), oldest forgotten first. A forgotten id is reported
//!   as its decimal number.
//! - The user of every command is the session's.

use crate::encoder::Body;
use crate::parser::Message;
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

/// ClOrdIDs of one session, bounded.
#[derive(Debug)]
pub(crate) struct ClOrdIds {
    /// Engine id → current ClOrdID.
    text: HashMap<u64, Box<str>>,
    /// Hash of a ClOrdID given by a replace → the engine id of the order it now names.
    alias: HashMap<u64, u64>,
    order: VecDeque<(u64, bool)>,
    max: usize,
}

impl ClOrdIds {
    pub fn new(max: usize) -> Self {
        Self { text: HashMap::new(), alias: HashMap::new(), order: VecDeque::new(), max: max.max(16) }
    }

    fn remember(&mut self, key: u64, is_alias: bool) {
        self.order.push_back((key, is_alias));
        while self.order.len() > self.max {
            let Some((old, alias)) = self.order.pop_front() else { break };
            if alias {
                self.alias.remove(&old);
            } else {
                self.text.remove(&old);
            }
        }
    }

    /// Records a new order's ClOrdID; returns its engine id.
    pub fn insert_new(&mut self, cl_ord_id: &str) -> u64 {
        let id = engine_id(cl_ord_id.as_bytes());
        if self.text.insert(id, cl_ord_id.into()).is_none() {
            self.remember(id, false);
        }
        id
    }

    /// The engine id an OrigClOrdID names.
    pub fn resolve(&self, cl_ord_id: &[u8]) -> u64 {
        let hash = engine_id(cl_ord_id);
        self.alias.get(&hash).copied().unwrap_or(hash)
    }

    /// After a replace: the order `id` is now called `cl_ord_id`.
    pub fn rename(&mut self, id: u64, cl_ord_id: &str) {
        if self.text.insert(id, cl_ord_id.into()).is_none() {
            self.remember(id, false);
        }
        let hash = engine_id(cl_ord_id.as_bytes());
        if hash != id && self.alias.insert(hash, id).is_none() {
            self.remember(hash, true);
        }
    }

    /// The current ClOrdID of an engine id (its decimal number if forgotten).
    pub fn text(&self, id: ClientOrderId) -> String {
        self.text.get(&id.get()).map_or_else(|| id.get().to_string(), |t| t.to_string())
    }
}

/// A command sent to the engine whose answer needs the request's own identifiers.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    New { side: Side, lots: u64, ticks: u64, order_type: OrderType },
    Cancel { cl_ord_id: Box<str>, orig: Box<str> },
    Replace { cl_ord_id: Box<str>, orig: Box<str> },
    MassCancel { cl_ord_id: Box<str>, request_type: u8 },
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
    let mut body = Body::new();
    body.field(37, "NONE").field(11, cl_ord_id).field(17, format!("R-{}", engine_id(message.bytes())));
    body.field(150, "8").field(39, "8");
    for tag in [55, 54, 38, 40, 44] {
        if let Some(value) = message.get(tag) {
            body.field(tag, value);
        }
    }
    body.uint(14, 0)
        .uint(151, 0)
        .field(6, "0")
        .uint(103, u64::from(ord_rej_reason(reason)))
        .field(58, reason.message());
    Refusal::Report { msg_type: b"8", body }
}

fn cancel_reject(orig: &str, cl_ord_id: &str, response_to: &str, reason: RejectReason) -> Refusal {
    let mut body = Body::new();
    body.field(37, "NONE").field(11, cl_ord_id).field(41, orig).field(39, "8").field(434, response_to);
    body.uint(102, u64::from(cxl_rej_reason(reason))).field(58, reason.message());
    Refusal::Report { msg_type: b"9", body }
}

/// Translates an order-entry message into a command for `user_id`.
pub(crate) fn translate(
    message: &Message<'_>,
    markets: &Markets,
    ids: &mut ClOrdIds,
    user_id: UserId,
) -> Result<(Command, Option<Pending>), Refusal> {
    match message.msg_type() {
        b"D" => new_order_single(message, markets, ids, user_id).map(|(command, pending)| (command, Some(pending))),
        b"F" => {
            let cl_ord_id = id_field(message, 11)?;
            let orig = id_field(message, 41)?;
            let market = market(markets, message, cl_ord_id)?;
            let order_id = message.get(37).and_then(parse_u64).unwrap_or(0);
            let command = Command::CancelOrder(CancelOrder {
                user_id,
                order_id: OrderId::new(order_id),
                client_order_id: ClientOrderId::new(if order_id == 0 { ids.resolve(orig.as_bytes()) } else { 0 }),
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
            if required(message, 40)? != b"2" {
                return Err(cancel_reject(orig, cl_ord_id, "2", RejectReason::InvalidReplace));
            }
            let quantity = required(message, 38)?;
            let price = required(message, 44)?;
            let lots = match market.lots(quantity) {
                Ok(lots) => lots,
                Err(Conversion::Format) => return Err(bad_format(38)),
                Err(Conversion::Refused(reason)) => return Err(cancel_reject(orig, cl_ord_id, "2", reason)),
            };
            let ticks = match market.ticks(price) {
                Ok(ticks) => ticks,
                Err(Conversion::Format) => return Err(bad_format(44)),
                Err(Conversion::Refused(reason)) => return Err(cancel_reject(orig, cl_ord_id, "2", reason)),
            };
            if lots == 0 || ticks == 0 {
                let reason = if lots == 0 { RejectReason::InvalidQuantity } else { RejectReason::InvalidPrice };
                return Err(cancel_reject(orig, cl_ord_id, "2", reason));
            }
            let order_id = message.get(37).and_then(parse_u64).unwrap_or(0);
            let command = Command::CancelReplace(CancelReplace {
                user_id,
                order_id: OrderId::new(order_id),
                client_order_id: ClientOrderId::new(if order_id == 0 { ids.resolve(orig.as_bytes()) } else { 0 }),
                new_price_ticks: Ticks::new(ticks),
                new_quantity_lots: Lots::new(lots),
                market_id: market.id,
                reserved: Reserved::ZERO,
            });
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
            let command =
                Command::MassCancel(MassCancel { user_id, market_id, side: side.into(), reserved: Reserved::ZERO });
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
    let order_type = match required(message, 40)? {
        b"1" => OrderType::Market,
        b"2" => OrderType::Limit,
        [b'0'..=b'9' | b'A'..=b'Z'] => return Err(rejected_new(message, cl_ord_id, RejectReason::InvalidOrderType)),
        _ => return Err(bad_value(40)),
    };
    let time_in_force = match message.get(59).unwrap_or(b"0") {
        b"0" | b"1" => TimeInForce::Gtc,
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
    let client_order_id = ids.insert_new(cl_ord_id);
    let pending = Pending::New { side, lots, ticks, order_type };
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
        reserved: Reserved::ZERO,
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
    fn cl_ord_ids_are_bounded_and_renamed() {
        let mut ids = ClOrdIds::new(16);
        let a = ids.insert_new("A");
        assert_eq!(ids.resolve(b"A"), a);
        ids.rename(a, "B");
        assert_eq!(ids.resolve(b"B"), a);
        assert_eq!(ids.text(ClientOrderId::new(a)), "B");
        for n in 0..100 {
            ids.insert_new(&n.to_string());
        }
        assert!(ids.text.len() <= 16 && ids.alias.len() <= 16);
    }
}
