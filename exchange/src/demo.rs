//! `--demo`: funded demo users, a market maker that keeps a ladder of [`LADDER_LEVELS`] price
//! levels on each side of every book around a slowly moving fair price, and three traders that
//! take liquidity with protected orders, so a fresh exchange shows a live, two-sided book and
//! trades that look like a real market's. The market maker also funds the first configured AMM
//! pool (ETH_USDC by default) at the starting price; the other pools start empty for users to
//! provide the first liquidity. The demo never trades with the pools.
//!
//! How it stays clean (docs/operations.md, "Demo market"):
//! - **Fair price**: a seeded random walk per market in steps of [`FAIR_STEP_PPM`] of the starting
//!   price, pulled back when it strays more than [`FAIR_BAND_PPM`] from it.
//! - **Ladder**: the maker's levels sit on a fixed grid ([`LEVEL_SPACING_PPM`] of the starting
//!   price apart), the best one grid step or less from the fair price. When the fair price
//!   crosses a grid line the levels that left the ladder are cancelled *first* and the new ones
//!   placed after (so the maker never crosses itself); a random level is resized now and then with
//!   a cancel/replace; every [`RESYNC_EVERY_ROUNDS`] rounds a market's ladder is rebuilt from
//!   scratch (mass cancel, new ladder) so orders another client's trades disturbed are replaced.
//! - **Takers** send IOC limit orders at most [`TAKER_REACH_LEVELS`] grid steps past the fair
//!   price, and only when the book has something within that limit: a resting order at an absurd
//!   price (a sell at 300 on SOL around 150) is never lifted, and nothing the demo does trades
//!   further from the fair price than that reach.
//! - **No rejects of its own**: the flow executes every command it sends on a private model
//!   engine first and only sends what the model accepts: it sizes orders above the market's
//!   minimum notional, tops a demo user up with a deposit before an order its balance would not
//!   cover, cancels only orders the model still holds, and never replaces to the same size.
//!
//! The flow is a pure function of the configuration (a seeded xorshift generator and the model),
//! so tests can rebuild exactly what a demo run sent; it pushes ordinary commands through the
//! ingress ring like any gateway, so they are journaled and replayed like any client's. Other
//! clients' trades with the demo's orders are not in the model: the demo then may cancel an order
//! that has already filled (an `UnknownOrder` reject) until the next rebuild resynchronises it.

use crate::metrics::{FamilySeries, LabelledFamily};
use crate::runtime::{IngressCommand, IngressRing};
use codec::*;
use engine::testkit::commands;
use engine::{Book, CommandContext, Engine, EngineConfig, MarketConfig};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// User id of the demo market maker.
pub const MARKET_MAKER: u64 = 1;
/// User ids of the demo traders.
pub const TRADERS: std::ops::RangeInclusive<u64> = 2..=4;

/// API secrets (Ed25519 seeds) of the demo users, registered with `--demo`: user `n`'s seed is
/// 32 bytes of value `n`. Public knowledge: never use them outside a demo.
pub fn demo_secrets() -> Vec<(u64, [u8; 32])> {
    std::iter::once(MARKET_MAKER).chain(TRADERS).map(|user| (user, [user as u8; 32])).collect()
}

/// First user id of the load-test users (`--load-users N` creates `LOAD_USER_FIRST..+N`).
pub const LOAD_USER_FIRST: u64 = 1_000_001;

/// API secret of load-test user `user`: its id's 8 little-endian bytes, repeated four times.
/// Public knowledge, like the demo secrets: for benchmarks on a private machine only.
pub fn load_user_secret(user: u64) -> [u8; 32] {
    let mut secret = [0u8; 32];
    for chunk in secret.chunks_exact_mut(8) {
        chunk.copy_from_slice(&user.to_le_bytes());
    }
    secret
}

/// Deposits that fund load-test users generously in every asset.
pub fn load_user_funding(config: &EngineConfig, count: u64) -> Vec<Command> {
    let mut funding = Vec::new();
    for user in LOAD_USER_FIRST..LOAD_USER_FIRST + count {
        for asset in &config.assets {
            let amount = 10u64.pow(u32::from(asset.decimals)) * 10_000_000;
            funding.push(commands::deposit(user, asset.id.get(), amount));
        }
    }
    funding
}

/// Pushes commands through the ingress ring in order (waiting while it is full).
pub fn push_all(ring: &IngressRing, commands: Vec<Command>, stop: &AtomicBool) {
    for command in commands {
        push(ring, command, stop);
    }
}

/// Price levels the market maker keeps on each side of every book.
pub const LADDER_LEVELS: u64 = 15;
/// Distance between two ladder levels, in parts per million of the market's starting price
/// (0.05%: 30 USDC on BTC at 60,000).
pub const LEVEL_SPACING_PPM: u64 = 500;
/// How far past the fair price a taker's IOC limit reaches, in ladder levels: the demo's trades
/// stay within `(TAKER_REACH_LEVELS + 1) × LEVEL_SPACING_PPM` (0.15%) of the fair price.
pub const TAKER_REACH_LEVELS: u64 = 2;
/// One step of the fair price's random walk, in parts per million of the starting price.
pub const FAIR_STEP_PPM: u64 = 100;
/// The fair price stays within this many parts per million of the starting price: beyond it, it
/// steps back towards it.
pub const FAIR_BAND_PPM: u64 = 100_000;
/// Rounds between two rebuilds of one market's ladder (see the module documentation).
pub const RESYNC_EVERY_ROUNDS: u64 = 2_000;
/// Parts per million.
const PPM: u64 = 1_000_000;
/// Whole quote units (USDC) of the shallowest ladder level: between these two.
const LEVEL_NOTIONAL_QUOTE_MIN: u64 = 300;
/// See [`LEVEL_NOTIONAL_QUOTE_MIN`].
const LEVEL_NOTIONAL_QUOTE_MAX: u64 = 3_000;
/// Level `d` (0: the best) is `(LEVEL_GROWTH + d) / LEVEL_GROWTH` times larger than the best one:
/// deeper levels are larger, as on a real book.
const LEVEL_GROWTH: u64 = 4;
/// Whole quote units of one taker order: between these two.
const TAKER_NOTIONAL_QUOTE_MIN: u64 = 50;
/// See [`TAKER_NOTIONAL_QUOTE_MIN`].
const TAKER_NOTIONAL_QUOTE_MAX: u64 = 4_000;
/// Whole units of every asset each demo user starts with, and tops up by when an order needs it.
const FUNDING_UNITS: u64 = 1_000_000;
/// Resting orders per market the private model engine has room for (the maker keeps
/// `2 × LADDER_LEVELS`; the traders never rest).
const MODEL_ORDERS_PER_MARKET: usize = 1_024;
const _: () = assert!(2 * LADDER_LEVELS as usize <= MODEL_ORDERS_PER_MARKET);
const _: () = assert!(LADDER_LEVELS >= 10, "the issue asks for at least ten levels per side");
/// Longest single sleep of the demo thread, so it notices `stop` quickly at low rates.
const SLEEP_SLICE: Duration = Duration::from_millis(50);

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn coin(&mut self) -> bool {
        self.next() % 2 == 0
    }
}

/// Pushes a command, waiting while the ring is full (the demo is a polite producer).
fn push(ring: &IngressRing, command: Command, stop: &AtomicBool) {
    let mut item = IngressCommand::new(0, command);
    while let Err(rejected) = ring.push(item) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        item = rejected;
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Starting prices in ticks for the sample markets (BTC 60,000, ETH 3,000, anything else 150
/// quote units).
fn starting_price_ticks(config: &EngineConfig, market: usize) -> u64 {
    let spec = &config.markets[market];
    let quote_decimals = config.assets[spec.quote.get() as usize].decimals;
    let price_quote = match spec.symbol.as_str() {
        s if s.starts_with("BTC") => 60_000,
        s if s.starts_with("ETH") => 3_000,
        _ => 150,
    };
    (price_quote * 10u64.pow(u32::from(quote_decimals)) / spec.tick_size).max(10)
}

/// A market as the demo sees it: its fixed grid and its fair price, in ticks.
#[derive(Debug, Clone)]
struct DemoMarket {
    /// Starting (and anchoring) fair price.
    anchor_ticks: u64,
    /// Current fair price.
    fair_ticks: u64,
    /// Distance between two ladder levels (at least one tick).
    spacing_ticks: u64,
    /// One step of the fair price's walk (at least one tick).
    step_ticks: u64,
    /// Quote minor units of one lot at one tick.
    quote_per_tick_lot: u64,
    /// One whole quote unit in minor units.
    quote_unit: u64,
}

/// The price of `part_ppm` parts per million of `price`, at least one tick.
fn ppm_of(price: u64, part_ppm: u64) -> u64 {
    (u128::from(price) * u128::from(part_ppm) / u128::from(PPM)).max(1) as u64
}

/// The demo's command stream: funding for every demo user, then an endless, seeded sequence of
/// rounds; in each the fair prices move one step, the market maker keeps its ladders and now and
/// then one trader takes liquidity. A pure function of the configuration, so tests can rebuild
/// exactly what a demo run sent.
pub struct DemoFlow {
    config: EngineConfig,
    /// The demo's own view: every command of the flow executed in order, nothing else.
    model: Engine,
    markets: Vec<DemoMarket>,
    rng: XorShift,
    /// Commands planned (and executed on the model) but not yet handed out.
    planned: VecDeque<Command>,
    /// Commands executed on the model so far (its sequence).
    executed: u64,
    /// Rounds planned so far (0: the funding round).
    rounds: u64,
    /// The market maker's last client order id (every maker order has its own).
    client_order_id: u64,
    /// Scratch for the model's events.
    events: Vec<Event>,
    /// Rejects the model saw (0 unless the flow has a bug; checked by tests).
    model_rejects: u64,
}

impl DemoFlow {
    /// The flow for a configuration.
    ///
    /// # Panics
    /// If the configuration is not a valid engine configuration (the server checked it already).
    pub fn new(config: &EngineConfig) -> Self {
        let mut model_config = config.clone();
        model_config.limits.orders_per_market_max = MODEL_ORDERS_PER_MARKET;
        model_config.limits.accounts_expected = 16;
        let model = Engine::new(&model_config).expect("the server's engine configuration is valid");
        let markets = (0..config.markets.len())
            .map(|index| {
                let spec = &config.markets[index];
                let anchor_ticks = starting_price_ticks(config, index);
                let base_decimals = config.assets[spec.base.get() as usize].decimals;
                let quote_decimals = config.assets[spec.quote.get() as usize].decimals;
                let quote_per_tick_lot = (u128::from(spec.tick_size) * u128::from(spec.lot_size)
                    / 10u128.pow(u32::from(base_decimals))) as u64;
                DemoMarket {
                    anchor_ticks,
                    fair_ticks: anchor_ticks,
                    spacing_ticks: ppm_of(anchor_ticks, LEVEL_SPACING_PPM),
                    step_ticks: ppm_of(anchor_ticks, FAIR_STEP_PPM),
                    quote_per_tick_lot: quote_per_tick_lot.max(1),
                    quote_unit: 10u64.pow(u32::from(quote_decimals)),
                }
            })
            .collect();
        Self {
            config: config.clone(),
            model,
            markets,
            rng: XorShift(0x00de_0000_5eed_0001),
            planned: VecDeque::new(),
            executed: 0,
            rounds: 0,
            client_order_id: 0,
            events: Vec::new(),
            model_rejects: 0,
        }
    }

    /// The fair price of the market at `index` (0-based, configuration order) in ticks, after
    /// the rounds handed out so far.
    pub fn fair_price_ticks(&self, index: usize) -> u64 {
        self.markets[index].fair_ticks
    }

    /// Rejects the private model saw for the flow's own commands (0 unless the flow is wrong).
    pub fn model_rejects(&self) -> u64 {
        self.model_rejects
    }

    /// The commands of the next round (the first round funds the demo users).
    pub fn next_round(&mut self) -> Vec<Command> {
        if self.planned.is_empty() {
            self.plan_round();
        }
        self.planned.drain(..).collect()
    }

    /// Executes `command` on the model and queues it to be sent.
    fn send(&mut self, command: Command) {
        self.executed += 1;
        self.events.clear();
        self.model.execute(CommandContext::new(self.executed, 0), &command, &mut self.events);
        self.model_rejects += self.events.iter().filter(|e| matches!(e, Event::OrderRejected(_))).count() as u64;
        self.planned.push_back(command);
    }

    fn plan_round(&mut self) {
        if self.rounds == 0 {
            self.plan_funding();
        } else {
            for index in 0..self.markets.len() {
                self.step_fair_price(index);
                // Spread the markets' rebuilds over time rather than doing all at once.
                let offset = index as u64 * RESYNC_EVERY_ROUNDS / self.markets.len() as u64;
                if (self.rounds + offset) % RESYNC_EVERY_ROUNDS == 0 {
                    let market = self.config.markets[index].id.get();
                    self.send(commands::mass_cancel(MARKET_MAKER, market, SideFilter::Both));
                }
                self.keep_ladder(index);
            }
            let index = (self.rng.next() % self.markets.len() as u64) as usize;
            if self.rng.next() % 4 == 0 {
                self.resize_a_level(index);
            }
            if self.rng.coin() {
                self.take(index);
            }
        }
        self.rounds += 1;
    }

    /// Deposits for every demo user; cancels whatever the demo users left open in an earlier run
    /// on the same data (so the model matches the books); funds the first pool.
    fn plan_funding(&mut self) {
        for user in std::iter::once(MARKET_MAKER).chain(TRADERS) {
            for asset in 0..self.config.assets.len() {
                let amount = self.funding_amount(asset);
                self.send(commands::deposit(user, asset as u32, amount));
            }
        }
        for user in std::iter::once(MARKET_MAKER).chain(TRADERS) {
            self.send(commands::mass_cancel(user, 0, SideFilter::Both));
        }
        // The market maker funds the first pool with 100 base at the starting price.
        if let Some(market_id) = self.config.pools.first().map(|pool| pool.market_id) {
            let index = market_id.get() as usize - 1;
            let market = &self.config.markets[index];
            let base_decimals = self.config.assets[market.base.get() as usize].decimals;
            let base = 100 * 10u64.pow(u32::from(base_decimals));
            let quote = 100 * self.markets[index].anchor_ticks * market.tick_size;
            self.send(commands::add_liquidity(MARKET_MAKER, market_id.get(), base, quote));
        }
    }

    fn funding_amount(&self, asset: usize) -> u64 {
        10u64.pow(u32::from(self.config.assets[asset].decimals)) * FUNDING_UNITS
    }

    /// One step of the fair price's walk, back towards the anchor when outside the band.
    fn step_fair_price(&mut self, index: usize) {
        let up = self.rng.coin();
        let market = &mut self.markets[index];
        let band = ppm_of(market.anchor_ticks, FAIR_BAND_PPM);
        let up = if market.fair_ticks > market.anchor_ticks + band {
            false
        } else if market.fair_ticks + band < market.anchor_ticks {
            true
        } else {
            up
        };
        market.fair_ticks = if up {
            market.fair_ticks + market.step_ticks
        } else {
            market.fair_ticks.saturating_sub(market.step_ticks).max(market.spacing_ticks * (LADDER_LEVELS + 1))
        };
    }

    /// The ladder's prices on `side`, best first: grid lines strictly on that side of the fair
    /// price, within the market's price range.
    fn ladder(&self, index: usize, side: Side) -> Vec<u64> {
        let market = &self.markets[index];
        let (fair, spacing) = (market.fair_ticks, market.spacing_ticks);
        let max_price = self.config.markets[index].max_price_ticks;
        (0..LADDER_LEVELS)
            .filter_map(|depth| match side {
                Side::Bid => ((fair - 1) / spacing).checked_sub(depth).map(|line| line * spacing),
                Side::Ask => Some((fair / spacing + 1 + depth) * spacing),
            })
            .filter(|&price| price > 0 && price <= max_price)
            .collect()
    }

    /// The maker's open orders on a market in the model, in order id order.
    fn maker_orders(&self, index: usize) -> Vec<engine::RestingOrder> {
        let book = self.model.book(self.config.markets[index].id).expect("every configured market has a book");
        let mut ids = Vec::new();
        book.orders_of(UserId::new(MARKET_MAKER), &mut ids);
        ids.sort_unstable();
        ids.iter().filter_map(|&id| book.get(id).copied()).collect()
    }

    /// Cancels the maker's orders that are off the ladder, then fills the ladder's empty levels.
    fn keep_ladder(&mut self, index: usize) {
        let market_id = self.config.markets[index].id.get();
        let (bids, asks) = (self.ladder(index, Side::Bid), self.ladder(index, Side::Ask));
        let mut kept: Vec<(Side, u64)> = Vec::new();
        for order in self.maker_orders(index) {
            let wanted = match order.side {
                Side::Bid => &bids,
                Side::Ask => &asks,
            };
            let price = order.price.get();
            if wanted.contains(&price) && !kept.contains(&(order.side, price)) {
                kept.push((order.side, price));
            } else {
                self.send(cancel_by_client_id(MARKET_MAKER, market_id, order.client_order_id));
            }
        }
        for (side, prices) in [(Side::Bid, bids), (Side::Ask, asks)] {
            for (depth, price) in prices.into_iter().enumerate() {
                if !kept.contains(&(side, price)) {
                    self.place_level(index, side, price, depth as u64);
                }
            }
        }
    }

    /// Lots worth about `notional` quote minor units at `price`, within the market's bounds and
    /// above its minimum notional.
    fn lots_for(&self, index: usize, price: u64, notional: u64) -> u64 {
        let spec: &MarketConfig = &self.config.markets[index];
        let lot_value = u128::from(price) * u128::from(self.markets[index].quote_per_tick_lot);
        let lots = (u128::from(notional) / lot_value.max(1)) as u64;
        let floor = (u128::from(spec.min_notional).div_ceil(lot_value.max(1))) as u64;
        lots.max(floor).max(spec.min_quantity_lots).min(spec.max_quantity_lots)
    }

    /// A random size for a ladder level `depth` levels from the best.
    fn level_lots(&mut self, index: usize, price: u64, depth: u64) -> u64 {
        let whole =
            self.rng.range(LEVEL_NOTIONAL_QUOTE_MIN, LEVEL_NOTIONAL_QUOTE_MAX) * (LEVEL_GROWTH + depth) / LEVEL_GROWTH;
        let notional = whole * self.markets[index].quote_unit;
        self.lots_for(index, price, notional)
    }

    /// Makes sure `user` has `needed` of `asset` available in the model, depositing first if not.
    fn ensure_available(&mut self, user: u64, asset: AssetId, needed: u128) {
        let available = self.model.balance(UserId::new(user), asset).available;
        if u128::from(available) < needed {
            let top_up = u128::from(self.funding_amount(asset.get() as usize)).max(needed);
            self.send(commands::deposit(user, asset.get(), u64::try_from(top_up).unwrap_or(u64::MAX)));
        }
    }

    /// What an order of `lots` at `price` locks: quote (notional and taker fee, the worst case)
    /// for a bid, base for an ask.
    fn funds_needed(&self, index: usize, side: Side, price: u64, lots: u64) -> (AssetId, u128) {
        let spec = &self.config.markets[index];
        match side {
            Side::Bid => {
                let notional =
                    u128::from(price) * u128::from(lots) * u128::from(self.markets[index].quote_per_tick_lot);
                (spec.quote, notional + notional * u128::from(spec.taker_fee_ppm) / u128::from(PPM) + 1)
            }
            Side::Ask => (spec.base, u128::from(lots) * u128::from(spec.lot_size)),
        }
    }

    /// Places one ladder level, post-only (unless it would trade: the ladder never takes).
    fn place_level(&mut self, index: usize, side: Side, price: u64, depth: u64) {
        let spec = &self.config.markets[index];
        let book = self.model.book(spec.id).expect("every configured market has a book");
        let crosses = book.best_price(side.opposite()).is_some_and(|best| match side {
            Side::Bid => best.get() <= price,
            Side::Ask => best.get() >= price,
        });
        if crosses {
            return;
        }
        let market_id = spec.id.get();
        let lots = self.level_lots(index, price, depth);
        let (asset, needed) = self.funds_needed(index, side, price, lots);
        self.ensure_available(MARKET_MAKER, asset, needed);
        self.client_order_id += 1;
        let id = self.client_order_id;
        let mut order = commands::limit(MARKET_MAKER, market_id, side, price, lots, TimeInForce::Gtc, id);
        // Post-only, as a real market maker quotes: should another client's order cross the
        // ladder's price (the model does not know it), the maker does not buy or sell at that
        // client's price, which may be far from the fair price.
        if let Command::NewOrder(new_order) = &mut order {
            new_order.post_only = true.into();
        }
        self.send(order);
    }

    /// Resizes one random maker order of a market with a cancel/replace (same price, new size).
    fn resize_a_level(&mut self, index: usize) {
        let orders = self.maker_orders(index);
        if orders.is_empty() {
            return;
        }
        let order = orders[(self.rng.next() % orders.len() as u64) as usize];
        let price = order.price.get();
        let depth = self.ladder(index, order.side).iter().position(|&p| p == price).unwrap_or(0) as u64;
        let lots = self.level_lots(index, price, depth);
        if lots == order.quantity_lots || lots <= order.filled_lots {
            return;
        }
        let (asset, needed) = self.funds_needed(index, order.side, price, lots);
        self.ensure_available(MARKET_MAKER, asset, needed);
        let market_id = self.config.markets[index].id.get();
        self.send(replace_by_client_id(MARKET_MAKER, market_id, order.client_order_id, lots));
    }

    /// One trader's protected order: an IOC limit at most [`TAKER_REACH_LEVELS`] grid steps past
    /// the fair price, sent only when the book has liquidity within that limit.
    fn take(&mut self, index: usize) {
        let trader = self.rng.range(*TRADERS.start(), *TRADERS.end());
        let side = if self.rng.coin() { Side::Bid } else { Side::Ask };
        let market = &self.markets[index];
        let reach = TAKER_REACH_LEVELS * market.spacing_ticks;
        let limit = match side {
            Side::Bid => market.fair_ticks + reach,
            Side::Ask => market.fair_ticks.saturating_sub(reach).max(1),
        };
        let spec = &self.config.markets[index];
        if limit > spec.max_price_ticks {
            return;
        }
        let book = self.model.book(spec.id).expect("every configured market has a book");
        let reachable = book.best_price(side.opposite()).is_some_and(|best| match side {
            Side::Bid => best.get() <= limit,
            Side::Ask => best.get() >= limit,
        });
        if !reachable {
            return;
        }
        let market_id = spec.id.get();
        let notional = self.rng.range(TAKER_NOTIONAL_QUOTE_MIN, TAKER_NOTIONAL_QUOTE_MAX) * market.quote_unit;
        let lots = self.lots_for(index, limit, notional);
        let (asset, needed) = self.funds_needed(index, side, limit, lots);
        self.ensure_available(trader, asset, needed);
        self.send(commands::limit(trader, market_id, side, limit, lots, TimeInForce::Ioc, 0));
    }
}

/// Cancel by client order id.
fn cancel_by_client_id(user: u64, market: u32, client_order_id: ClientOrderId) -> Command {
    Command::CancelOrder(CancelOrder {
        user_id: UserId::new(user),
        order_id: OrderId::ZERO,
        client_order_id,
        market_id: MarketId::new(market),
        reserved: Reserved::ZERO,
    })
}

/// Cancel/replace by client order id to a new total quantity, keeping the price.
fn replace_by_client_id(user: u64, market: u32, client_order_id: ClientOrderId, quantity_lots: u64) -> Command {
    Command::CancelReplace(CancelReplace {
        user_id: UserId::new(user),
        order_id: OrderId::ZERO,
        client_order_id,
        new_price_ticks: Ticks::ZERO,
        new_quantity_lots: Lots::new(quantity_lots),
        market_id: MarketId::new(market),
        reserved: Reserved::ZERO,
    })
}

impl Iterator for DemoFlow {
    type Item = Command;

    /// Never `None`: the flow is endless (a round may send nothing; the next one is planned).
    fn next(&mut self) -> Option<Command> {
        while self.planned.is_empty() {
            self.plan_round();
        }
        self.planned.pop_front()
    }
}

/// What the running demo shows on `/metrics`: each market's fair price.
#[derive(Debug)]
pub struct DemoStats {
    /// Fair price per market (configuration order), in ticks; 0 until the demo started.
    fair_price_ticks: Box<[AtomicU64]>,
}

impl DemoStats {
    /// Statistics for the markets of `config`.
    pub fn new(config: &EngineConfig) -> Self {
        Self { fair_price_ticks: config.markets.iter().map(|_| AtomicU64::new(0)).collect() }
    }

    /// The fair price of the market at `index` in ticks (0: not yet known).
    pub fn fair_price_ticks(&self, index: usize) -> u64 {
        self.fair_price_ticks.get(index).map_or(0, |price| price.load(Ordering::Relaxed))
    }

    /// `exchange_demo_fair_price{market="BTC_USDC"}`: each market's fair price in quote units
    /// (display only: the flow works in integer ticks).
    pub fn fair_price_family<'a>(&self, config: &'a EngineConfig) -> LabelledFamily<'a> {
        let series = config
            .markets
            .iter()
            .enumerate()
            .filter(|(index, _)| self.fair_price_ticks(*index) > 0)
            .map(|(index, market)| {
                let quote_unit = 10u64.pow(u32::from(config.assets[market.quote.get() as usize].decimals));
                let price = self.fair_price_ticks(index) as f64 * market.tick_size as f64 / quote_unit as f64;
                (market.symbol.as_str(), price)
            })
            .collect();
        LabelledFamily {
            name: "exchange_demo_fair_price",
            help: "The demo flow's fair price per market, in quote units (--demo only).",
            label: "market",
            series: FamilySeries::Gauge(series),
        }
    }

    fn publish(&self, flow: &DemoFlow) {
        for (index, price) in self.fair_price_ticks.iter().enumerate() {
            price.store(flow.fair_price_ticks(index), Ordering::Relaxed);
        }
    }
}

/// Runs the demo flow until `stop`, at about `orders_per_second` commands per second (each round
/// is pushed at once, then the thread sleeps for as many commands' worth of time); `limit`
/// bounds the number of commands (0: unbounded). Publishes the fair prices to `stats`.
pub fn run(
    config: EngineConfig,
    ring: Arc<IngressRing>,
    stop: Arc<AtomicBool>,
    stats: Arc<DemoStats>,
    orders_per_second: u64,
    limit: u64,
) {
    let nanos_per_command = 1_000_000_000 / orders_per_second.max(1);
    let mut flow = DemoFlow::new(&config);
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let round = flow.next_round();
        let count = round.len() as u64;
        for command in round {
            if stop.load(Ordering::Relaxed) || (limit != 0 && sent >= limit) {
                return;
            }
            push(&ring, command, &stop);
            sent += 1;
        }
        stats.publish(&flow);
        let due = started + Duration::from_nanos(nanos_per_command.saturating_mul(count.max(1)));
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(SLEEP_SLICE));
        }
    }
}

#[cfg(test)]
mod tests {
    //! The flow against a real engine (what the server does with it, minus threads): it never
    //! gets a reject, keeps at least ten levels per side, trades only near its fair price, and
    //! never lifts another user's order at an absurd price.

    use super::*;

    /// Rounds the main test runs (a few minutes of a demo at its default rate).
    const ROUNDS: usize = 10_000;
    /// Least levels per side after the first round.
    const LEVELS_MIN: usize = 10;

    fn config() -> EngineConfig {
        crate::config::Config::load(None).unwrap().engine_config().unwrap()
    }

    fn levels(engine: &Engine, market: MarketId, side: Side) -> usize {
        let mut count = 0;
        engine.book(market).unwrap().visit_levels(side, &mut |_| {
            count += 1;
            true
        });
        count
    }

    /// Runs `rounds` rounds of the flow on `engine` (after `sequence` commands), checking after
    /// every round; returns the fills.
    fn run_rounds(engine: &mut Engine, flow: &mut DemoFlow, sequence: &mut u64, rounds: usize) -> Vec<Fill> {
        let config = config();
        let mut fills = Vec::new();
        let mut events = Vec::new();
        for round in 0..rounds {
            let fair: Vec<u64> = (0..config.markets.len()).map(|m| flow.fair_price_ticks(m)).collect();
            for command in flow.next_round() {
                *sequence += 1;
                events.clear();
                engine.execute(CommandContext::new(*sequence, 0), &command, &mut events);
                for event in &events {
                    match event {
                        Event::OrderRejected(reject) => panic!("round {round}: {command:?} rejected: {reject:?}"),
                        Event::Fill(fill) => {
                            let index = fill.market_id.get() as usize - 1;
                            // The price the fill happened at is within reach of this round's
                            // fair price (the ladder was laid around the previous one).
                            let fair = fair[index].max(flow.fair_price_ticks(index));
                            let price = fill.price_ticks.get();
                            assert!(price.abs_diff(fair) * 50 < fair, "round {round}: fill at {price}, fair {fair}");
                            fills.push(*fill);
                        }
                        _ => {}
                    }
                }
            }
            if round > 0 {
                for market in &config.markets {
                    for side in [Side::Bid, Side::Ask] {
                        let count = levels(engine, market.id, side);
                        assert!(count >= LEVELS_MIN, "round {round}: {} {side:?} has {count} levels", market.symbol);
                    }
                }
            }
        }
        assert_eq!(flow.model_rejects(), 0);
        fills
    }

    #[test]
    fn the_flow_keeps_full_ladders_trades_near_the_fair_price_and_is_never_rejected() {
        let config = config();
        let mut engine = Engine::new(&config).unwrap();
        let mut flow = DemoFlow::new(&config);
        let mut sequence = 0;
        let fills = run_rounds(&mut engine, &mut flow, &mut sequence, ROUNDS);
        println!("{sequence} commands in {ROUNDS} rounds, {} fills", fills.len());
        for market in &config.markets {
            let traded = fills.iter().filter(|f| f.market_id == market.id).count();
            assert!(traded > 100, "{}: only {traded} fills", market.symbol);
        }
        // The fair price moved.
        assert!((0..config.markets.len()).any(|m| flow.fair_price_ticks(m) != starting_price_ticks(&config, m)));
        engine.validate().unwrap();
    }

    #[test]
    fn the_flow_is_a_pure_function_of_the_configuration() {
        let config = config();
        let first: Vec<Command> = DemoFlow::new(&config).take(5_000).collect();
        let second: Vec<Command> = DemoFlow::new(&config).take(5_000).collect();
        assert_eq!(first, second);
        assert_eq!(first.len(), 5_000, "the flow never ends, even after a round that sent nothing");
        // The iterator hands out the rounds' commands back to back (what `run` sends), forever.
        let mut flow = DemoFlow::new(&config);
        let mut rounds = Vec::new();
        while rounds.len() < first.len() {
            rounds.extend(flow.next_round());
        }
        assert_eq!(first[..], rounds[..first.len()]);
        // The first commands fund the demo users (`--demo-orders 16` stops right after them).
        let users = 1 + TRADERS.count();
        assert!(first[..users * config.assets.len()].iter().all(|c| matches!(c, Command::Deposit(_))));
    }

    /// The takers' own reach keeps them off absurd prices, band or not: checked on markets without
    /// a price band (the shipped ±10% band would refuse the absurd orders once the market has a
    /// reference price, and before it, resting both, would make their mid the reference).
    #[test]
    fn takers_never_lift_another_users_order_at_an_absurd_price() {
        let mut config = config();
        for market in &mut config.markets {
            market.price_band = engine::PriceBand::NONE;
        }
        let sol = config.markets.iter().find(|m| m.symbol == "SOL_USDC").unwrap();
        let index = sol.id.get() as usize - 1;
        let mut engine = Engine::new(&config).unwrap();
        let mut flow = DemoFlow::new(&config);
        let mut sequence = 0;
        run_rounds(&mut engine, &mut flow, &mut sequence, 1);
        // Another user rests a sell at twice the price and a buy at half of it.
        const OUTSIDER: u64 = 99;
        let fair = starting_price_ticks(&config, index);
        let mut events = Vec::new();
        for command in [
            commands::deposit(OUTSIDER, sol.base.get(), 10u64.pow(9) * 1_000),
            commands::deposit(OUTSIDER, sol.quote.get(), 10u64.pow(6) * 1_000_000),
            commands::gtc(OUTSIDER, sol.id.get(), Side::Ask, fair * 2, 100),
            commands::gtc(OUTSIDER, sol.id.get(), Side::Bid, fair / 2, 100),
        ] {
            sequence += 1;
            engine.execute(CommandContext::new(sequence, 0), &command, &mut events);
        }
        assert!(!events.iter().any(|e| matches!(e, Event::OrderRejected(_) | Event::Fill(_))), "{events:?}");
        let fills = run_rounds(&mut engine, &mut flow, &mut sequence, 5_000);
        assert!(fills.iter().all(|f| f.maker_user_id != UserId::new(OUTSIDER)));
        assert!(fills.iter().any(|f| f.market_id == sol.id));
    }
}
