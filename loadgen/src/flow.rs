//! The order flow one connection sends: a seeded mix of limit, IOC and market orders, cancels
//! and cancel-replaces of the connection's own open orders.
//!
//! Each connection owns an [`OrderFlow`] (its generator, with its own seed and client order ids)
//! and an [`OpenOrders`] (the GTC orders the exchange acknowledged as resting, kept up to date
//! by the receiver from the execution reports). A cancel or replace picks a random open order of
//! the connection; when there is none it becomes a limit order instead, and when the connection
//! already has `max_open` open orders a limit order becomes a cancel, so the book (and the
//! user's open-order limit) stays bounded however long the run.
//!
//! Instead of the mix, a flow can [`replay`](OrderFlow::replaying) the rows of an order-flow
//! CSV file ([`engine::testkit::profiles::parse_flow_csv`]) as GTC limits, each connection taking
//! every `C`-th row and cycling through the file; with `max_open` reached it sends a cancel of
//! one of its open orders first and keeps the row for the next request.
//!
//! Cancels and replaces address their order by client order id (`order_id` 0), so every
//! response, acceptance, rejection or report, carries the client order id the generator
//! correlates it by.

use codec::*;
use engine::testkit::commands;
use engine::testkit::profiles::{FlowRow, ProfileMix};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// Percentages of each request type; they must add up to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mix {
    /// GTC limit orders.
    pub limit_pct: u32,
    /// Market orders (by base quantity).
    pub market_pct: u32,
    /// Immediate-or-cancel limit orders.
    pub ioc_pct: u32,
    /// Cancels of one of the connection's open orders.
    pub cancel_pct: u32,
    /// Cancel-replaces (price moves) of one of the connection's open orders.
    pub replace_pct: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self { limit_pct: 80, market_pct: 5, ioc_pct: 5, cancel_pct: 10, replace_pct: 0 }
    }
}

impl From<ProfileMix> for Mix {
    fn from(mix: ProfileMix) -> Self {
        Self {
            limit_pct: mix.gtc_pct,
            market_pct: mix.market_pct,
            ioc_pct: mix.ioc_pct,
            cancel_pct: mix.cancel_pct,
            replace_pct: mix.replace_pct,
        }
    }
}

impl Mix {
    /// Checks that the percentages add up to 100.
    ///
    /// # Errors
    /// A message naming the sum.
    pub fn validate(&self) -> Result<(), String> {
        let sum = self.limit_pct + self.market_pct + self.ioc_pct + self.cancel_pct + self.replace_pct;
        if sum == 100 { Ok(()) } else { Err(format!("the order mix adds up to {sum}%, not 100%")) }
    }

    /// The request kind for a roll in `0..100`.
    fn kind(&self, roll: u32) -> RequestKind {
        let bounds = [
            (self.limit_pct, RequestKind::Limit),
            (self.market_pct, RequestKind::Market),
            (self.ioc_pct, RequestKind::Ioc),
            (self.cancel_pct, RequestKind::Cancel),
            (self.replace_pct, RequestKind::Replace),
        ];
        let mut upto = 0;
        for (pct, kind) in bounds {
            upto += pct;
            if roll < upto {
                return kind;
            }
        }
        RequestKind::Limit
    }
}

/// Where prices and quantities come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PriceModel {
    /// Market traded (1 is BTC_USDC in the sample configuration).
    pub market_id: u32,
    /// Mid price, ticks.
    pub mid_ticks: u64,
    /// Limit prices are `mid ± U(1..=spread_ticks)`.
    pub spread_ticks: u64,
    /// Probability (percent) that a GTC limit order is priced across the mid (a buy above, a
    /// sell below), so it takes liquidity instead of resting.
    pub cross_pct: u32,
    /// The same for IOC orders (100: every IOC tries to trade).
    pub ioc_cross_pct: u32,
    /// Crossing prices are `mid ± U(1..=cross_ticks)` on the other side of the mid.
    pub cross_ticks: u64,
    /// How limit prices are placed around the mid.
    pub placement: Placement,
    /// Smallest order quantity, lots.
    pub lots_min: u64,
    /// Largest order quantity, lots.
    pub lots_max: u64,
}

impl Default for PriceModel {
    /// BTC_USDC around 60,000 USDC (600,000 ticks of 0.1), ±10 USDC, 2–20 lots of 0.00001 BTC
    /// (every order above the 1 USDC minimum notional).
    fn default() -> Self {
        Self {
            market_id: 1,
            mid_ticks: 600_000,
            spread_ticks: 100,
            cross_pct: 10,
            ioc_cross_pct: 10,
            cross_ticks: 100,
            placement: Placement::Sides,
            lots_min: 2,
            lots_max: 20,
        }
    }
}

/// How limit prices are placed around the mid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Placement {
    /// On the order's own side, `mid ∓ U(1..=spread)` (it rests), or with the crossing
    /// probability on the other side, `mid ± U(1..=cross_ticks)` (it trades).
    #[default]
    Sides,
    /// Anywhere in `mid + U(−spread..=spread)`, whatever the side (W-OBRS: a narrow band where
    /// about half the orders cross); the crossing probabilities are not used.
    Band,
}

/// What a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum RequestKind {
    /// A GTC limit order.
    Limit,
    /// An IOC limit order.
    Ioc,
    /// A market order.
    Market,
    /// A cancel.
    Cancel,
    /// A cancel-replace.
    Replace,
}

impl RequestKind {
    /// Every kind.
    pub const ALL: [RequestKind; 5] =
        [RequestKind::Limit, RequestKind::Ioc, RequestKind::Market, RequestKind::Cancel, RequestKind::Replace];

    /// Whether the request is a new order.
    pub fn is_new_order(self) -> bool {
        matches!(self, RequestKind::Limit | RequestKind::Ioc | RequestKind::Market)
    }

    /// The SBE template id of the command.
    pub fn template_id(self) -> u16 {
        match self {
            RequestKind::Limit | RequestKind::Ioc | RequestKind::Market => NewOrder::TEMPLATE_ID,
            RequestKind::Cancel => CancelOrder::TEMPLATE_ID,
            RequestKind::Replace => CancelReplace::TEMPLATE_ID,
        }
    }
}

/// One request to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// What it is.
    pub kind: RequestKind,
    /// The client order id its responses carry: the new order's own id, or the id of the order
    /// a cancel or replace addresses.
    pub key: u64,
    /// The command.
    pub command: Command,
    /// The mix asked for another kind that was not possible (no open order to cancel, or too
    /// many open orders to add one), and this one was sent instead.
    pub substituted: bool,
}

/// One of the connection's orders resting on the book, as far as the connection knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOrder {
    /// Side.
    pub side: Side,
    /// Limit price, ticks.
    pub price_ticks: u64,
    /// Quantity still open, lots.
    pub remaining_lots: u64,
    /// A replace for it is in flight (it is not picked again until answered).
    pub busy: bool,
}

/// A connection's open orders by client order id, with uniform random picking.
#[derive(Debug, Default, Clone)]
pub struct OpenOrders {
    keys: Vec<u64>,
    orders: HashMap<u64, (usize, OpenOrder)>,
}

impl OpenOrders {
    /// Adds (or replaces) an order.
    pub fn insert(&mut self, client_order_id: u64, order: OpenOrder) {
        if let Some((_, existing)) = self.orders.get_mut(&client_order_id) {
            *existing = order;
            return;
        }
        self.orders.insert(client_order_id, (self.keys.len(), order));
        self.keys.push(client_order_id);
    }

    /// Removes an order.
    pub fn remove(&mut self, client_order_id: u64) -> Option<OpenOrder> {
        let (index, order) = self.orders.remove(&client_order_id)?;
        self.keys.swap_remove(index);
        if let Some(&moved) = self.keys.get(index) {
            self.orders.get_mut(&moved).expect("indexed").0 = index;
        }
        Some(order)
    }

    /// An order, to update.
    pub fn get_mut(&mut self, client_order_id: u64) -> Option<&mut OpenOrder> {
        self.orders.get_mut(&client_order_id).map(|(_, order)| order)
    }

    /// An order.
    pub fn get(&self, client_order_id: u64) -> Option<&OpenOrder> {
        self.orders.get(&client_order_id).map(|(_, order)| order)
    }

    /// Number of open orders.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No open orders.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A random open order that is not busy (a few tries), if any.
    fn pick(&self, rng: &mut XorShift) -> Option<u64> {
        if self.keys.is_empty() {
            return None;
        }
        (0..4).map(|_| self.keys[rng.below(self.keys.len() as u64) as usize]).find(|key| !self.orders[key].1.busy)
    }
}

/// xorshift64: fast, seeded, good enough to pick order types and prices.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from any seed (mixed with SplitMix64, so nearby seeds give unrelated streams
    /// and 0 is fine).
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
}

/// One connection's request generator.
#[derive(Debug, Clone)]
pub struct OrderFlow {
    mix: Mix,
    prices: PriceModel,
    max_open: usize,
    rng: XorShift,
    next_client_order_id: u64,
    replay: Option<Replay>,
}

/// The rows a replaying flow sends, and where it is.
#[derive(Debug, Clone)]
struct Replay {
    rows: Arc<[FlowRow]>,
    next: usize,
    stride: usize,
}

impl OrderFlow {
    /// A generator; new orders get client order ids `first_client_order_id`, +1, +2…;
    /// `max_open` bounds the connection's open orders (0: unbounded).
    pub fn new(mix: Mix, prices: PriceModel, max_open: usize, seed: u64, first_client_order_id: u64) -> Self {
        Self {
            mix,
            prices,
            max_open,
            rng: XorShift::new(seed),
            next_client_order_id: first_client_order_id.max(1),
            replay: None,
        }
    }

    /// A generator replaying `rows` as GTC limits on `prices.market_id` (the rest of `prices` is
    /// not used): rows `first_row`, `first_row + stride`, … cycling through the file (connection
    /// `k` of `C` replays with `first_row` `k` and `stride` `C`, so together they send the file
    /// in order). With `max_open` open orders a cancel of a random one goes first and the row
    /// waits for the next request.
    pub fn replaying(
        rows: Arc<[FlowRow]>,
        first_row: usize,
        stride: usize,
        prices: PriceModel,
        max_open: usize,
        seed: u64,
        first_client_order_id: u64,
    ) -> Self {
        let mix = Mix { limit_pct: 100, market_pct: 0, ioc_pct: 0, cancel_pct: 0, replace_pct: 0 };
        let next = if rows.is_empty() { 0 } else { first_row % rows.len() };
        let mut flow = Self::new(mix, prices, max_open, seed, first_client_order_id);
        flow.replay = Some(Replay { rows, next, stride: stride.max(1) });
        flow
    }

    /// The next request. Cancels take their order out of `open` at once (it is going away);
    /// replaces mark theirs busy until the receiver sees the answer.
    pub fn next(&mut self, open: &mut OpenOrders) -> Request {
        let mut kind =
            if self.replay.is_some() { RequestKind::Limit } else { self.mix.kind(self.rng.below(100) as u32) };
        let mut substituted = false;
        if kind == RequestKind::Limit && self.max_open > 0 && open.len() >= self.max_open {
            kind = RequestKind::Cancel;
            substituted = true;
        }
        let market = self.prices.market_id;
        match kind {
            RequestKind::Cancel => {
                if let Some(target) = open.pick(&mut self.rng) {
                    open.remove(target);
                    let mut command = commands::cancel(0, market, 0);
                    if let Command::CancelOrder(cancel) = &mut command {
                        cancel.client_order_id = ClientOrderId::new(target);
                    }
                    return Request { kind, key: target, command, substituted };
                }
            }
            RequestKind::Replace => {
                if let Some(target) = open.pick(&mut self.rng) {
                    let order = open.get_mut(target).expect("picked");
                    order.busy = true;
                    let (side, current) = (order.side, order.price_ticks);
                    let mut price = self.limit_price(kind, side);
                    if price == current {
                        price = match side {
                            Side::Bid => price.saturating_sub(1).max(1),
                            Side::Ask => price + 1,
                        };
                    }
                    let mut command = commands::replace(0, market, 0, price, 0);
                    if let Command::CancelReplace(replace) = &mut command {
                        replace.client_order_id = ClientOrderId::new(target);
                    }
                    return Request { kind, key: target, command, substituted };
                }
            }
            _ => {}
        }
        if !kind.is_new_order() {
            // Nothing to cancel or replace: add liquidity instead.
            kind = RequestKind::Limit;
            substituted = true;
        }
        let client_order_id = self.next_client_order_id;
        self.next_client_order_id += 1;
        if let Some(replay) = &mut self.replay
            && let Some(&row) = replay.rows.get(replay.next)
        {
            replay.next = (replay.next + replay.stride) % replay.rows.len();
            let command =
                commands::limit(0, market, row.side, row.price_ticks, row.lots, TimeInForce::Gtc, client_order_id);
            return Request { kind: RequestKind::Limit, key: client_order_id, command, substituted };
        }
        let side = if self.rng.below(2) == 0 { Side::Bid } else { Side::Ask };
        let lots = self.rng.range(self.prices.lots_min, self.prices.lots_max.max(self.prices.lots_min));
        let command = match kind {
            RequestKind::Market => {
                let mut command = commands::market(0, market, side, lots);
                if let Command::NewOrder(order) = &mut command {
                    order.client_order_id = ClientOrderId::new(client_order_id);
                }
                command
            }
            _ => {
                let price = self.limit_price(kind, side);
                let time_in_force = if kind == RequestKind::Ioc { TimeInForce::Ioc } else { TimeInForce::Gtc };
                commands::limit(0, market, side, price, lots, time_in_force, client_order_id)
            }
        };
        Request { kind, key: client_order_id, command, substituted }
    }

    /// The price of a new limit or IOC order, or of a replace's new price: see [`Placement`].
    fn limit_price(&mut self, kind: RequestKind, side: Side) -> u64 {
        match self.prices.placement {
            Placement::Band => {
                let spread = self.prices.spread_ticks;
                (self.prices.mid_ticks + self.rng.range(0, 2 * spread)).saturating_sub(spread).max(1)
            }
            Placement::Sides => {
                let pct = if kind == RequestKind::Ioc { self.prices.ioc_cross_pct } else { self.prices.cross_pct };
                let crossing = self.rng.below(100) < u64::from(pct);
                if crossing { self.crossing_price(side) } else { self.passive_price(side) }
            }
        }
    }

    fn offset(&mut self) -> u64 {
        self.rng.range(1, self.prices.spread_ticks.max(1))
    }

    /// A price on the order's own side of the mid (rests unless the book is crossed).
    fn passive_price(&mut self, side: Side) -> u64 {
        let offset = self.offset();
        match side {
            Side::Bid => self.prices.mid_ticks.saturating_sub(offset).max(1),
            Side::Ask => self.prices.mid_ticks + offset,
        }
    }

    /// A price across the mid (takes the other side's passive orders).
    fn crossing_price(&mut self, side: Side) -> u64 {
        let offset = self.rng.range(1, self.prices.cross_ticks.max(1));
        match side {
            Side::Bid => self.prices.mid_ticks + offset,
            Side::Ask => self.prices.mid_ticks.saturating_sub(offset).max(1),
        }
    }
}
