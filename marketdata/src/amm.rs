//! AMM pools as seen from the egress events, and quotes that change nothing: a swap against a
//! pool (with the engine's own integer formulas, [`engine::amm`]) and a market order walked
//! through the book view, so a user can compare the two venues.
//!
//! The pool view follows `LiquidityAdded`, `LiquidityRemoved` and `SwapExecuted` (each carries the
//! reserves and total shares after it), seeded from the recovered engine at start-up. A quote is
//! exactly what the engine would do if the command were the next one it executes; between the
//! quote and the command other commands may move the pool, which is what the slippage limit of a
//! swap is for.

use codec::{Event, MarketId, RejectReason, Side, SwapMode, UserId};
use engine::amm::{self, SwapResult};
use engine::{Book, Engine, EngineConfig};
use std::collections::BTreeMap;
use std::sync::RwLock;

/// One pool, in engine units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolState {
    /// Market of the pool.
    pub market_id: MarketId,
    /// Fee, basis points of the amount paid in.
    pub fee_bps: u32,
    /// Base reserve, minor units.
    pub base_reserve: u64,
    /// Quote reserve, minor units.
    pub quote_reserve: u64,
    /// All shares (the locked minimum included).
    pub total_shares: u64,
    /// Shares per provider.
    pub holders: BTreeMap<UserId, u64>,
    /// Time of the last change, ns since the epoch (0: none since start).
    pub updated_ns: u64,
}

/// A pool quote: what a swap would pay and receive now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolQuote {
    /// The engine's computation.
    pub result: SwapResult,
    /// How much worse than the spot price the average price is, parts per million.
    pub impact_ppm: u64,
    /// Reserves before the swap (base, quote).
    pub reserves: (u64, u64),
}

/// The pools of every configured market that has one.
#[derive(Debug)]
pub struct PoolView {
    pools: RwLock<BTreeMap<MarketId, PoolState>>,
}

impl PoolView {
    /// Empty pools for `config`.
    pub fn new(config: &EngineConfig) -> Self {
        let pools = config
            .pools
            .iter()
            .map(|pool| {
                let state = PoolState {
                    market_id: pool.market_id,
                    fee_bps: pool.fee_bps,
                    base_reserve: 0,
                    quote_reserve: 0,
                    total_shares: 0,
                    holders: BTreeMap::new(),
                    updated_ns: 0,
                };
                (pool.market_id, state)
            })
            .collect();
        Self { pools: RwLock::new(pools) }
    }

    /// Replaces every pool's state with the engine's.
    pub fn seed<B: Book>(&self, engine: &Engine<B>) {
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        for pool in engine.pools() {
            if let Some(state) = pools.get_mut(&pool.market_id) {
                state.base_reserve = pool.base_reserve;
                state.quote_reserve = pool.quote_reserve;
                state.total_shares = pool.total_shares;
                state.holders = pool.holders.clone();
            }
        }
    }

    /// Applies one engine event (only the pool events matter).
    pub fn apply(&self, event: &Event) {
        let (market_id, timestamp_ns, base, quote, total, holder) = match event {
            Event::LiquidityAdded(e) => (
                e.market_id,
                e.timestamp_ns,
                e.base_reserve,
                e.quote_reserve,
                Some(e.total_shares),
                Some((e.user_id, e.user_shares)),
            ),
            Event::LiquidityRemoved(e) => (
                e.market_id,
                e.timestamp_ns,
                e.base_reserve,
                e.quote_reserve,
                Some(e.total_shares),
                Some((e.user_id, e.user_shares)),
            ),
            Event::SwapExecuted(e) => (e.market_id, e.timestamp_ns, e.base_reserve, e.quote_reserve, None, None),
            _ => return,
        };
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        let Some(state) = pools.get_mut(&market_id) else { return };
        state.base_reserve = base.get();
        state.quote_reserve = quote.get();
        state.updated_ns = timestamp_ns.get();
        if let Some(total) = total {
            state.total_shares = total.get();
        }
        if let Some((user, shares)) = holder {
            if shares.get() == 0 {
                state.holders.remove(&user);
            } else {
                state.holders.insert(user, shares.get());
            }
        }
    }

    /// A copy of one pool; `None` when the market has none.
    pub fn pool(&self, market_id: MarketId) -> Option<PoolState> {
        self.pools.read().unwrap_or_else(|e| e.into_inner()).get(&market_id).cloned()
    }

    /// Copies of every pool, in market id order.
    pub fn all(&self) -> Vec<PoolState> {
        self.pools.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// What a swap would do now (see [`engine::amm::swap`]).
    ///
    /// # Errors
    /// `PoolNotFound`, or the engine's reason (`PoolEmpty`, `InvalidAmount`,
    /// `InsufficientLiquidity`, `ArithmeticOverflow`).
    pub fn quote(
        &self,
        market_id: MarketId,
        side: Side,
        mode: SwapMode,
        amount: u64,
    ) -> Result<PoolQuote, RejectReason> {
        let pools = self.pools.read().unwrap_or_else(|e| e.into_inner());
        let pool = pools.get(&market_id).ok_or(RejectReason::PoolNotFound)?;
        let (base, quote) = (pool.base_reserve, pool.quote_reserve);
        let result = amm::swap(base, quote, side, mode, amount, pool.fee_bps)?;
        Ok(PoolQuote { result, impact_ppm: amm::spot_impact_ppm(base, quote, side, &result), reserves: (base, quote) })
    }
}

/// What a market order would get from the book now, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BookQuote {
    /// Base bought or sold.
    pub base_amount: u64,
    /// Notional (before the fee), quote minor units.
    pub quote_amount: u64,
    /// Taker fee on the notional, rounded down: at least what the engine charges (it rounds each
    /// fill down).
    pub fee: u64,
    /// Whether the book had enough for the whole amount.
    pub complete: bool,
}

/// The amount a book quote is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookTarget {
    /// This many lots of base (bought with a bid, sold with an ask).
    Lots(u64),
    /// Buy (bid) with at most this much quote, fee included; sell (ask) until this much quote is
    /// received after the fee.
    Quote(u64),
}

/// A market's constants for walking its book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookUnits {
    /// Quote minor units of one lot at one tick.
    pub quote_per_tick_lot: u64,
    /// Base minor units per lot.
    pub lot_size: u64,
    /// Taker fee, parts per million.
    pub taker_fee_ppm: u32,
}

impl BookUnits {
    /// The constants of a market of `config` (`None` when the configuration is inconsistent).
    pub fn of(config: &EngineConfig, market: &engine::MarketConfig) -> Option<Self> {
        let base_decimals = config.assets.get(market.base.get() as usize)?.decimals;
        let product = u128::from(market.tick_size) * u128::from(market.lot_size);
        let quote_per_tick_lot = u64::try_from(product / 10u128.pow(u32::from(base_decimals))).ok()?;
        Some(Self { quote_per_tick_lot, lot_size: market.lot_size, taker_fee_ppm: market.taker_fee_ppm })
    }
}

/// Walks `levels` (the opposite side of the book, best first: asks for a bid, bids for an ask;
/// `(price ticks, lots)`) the way a taker market order would.
pub fn walk_book(levels: &[(u64, u64)], side: Side, target: BookTarget, units: BookUnits) -> BookQuote {
    const PPM: u128 = 1_000_000;
    let fee_ppm = u128::from(units.taker_fee_ppm);
    let mut lots_total = 0u128;
    let mut notional = 0u128;
    let mut complete = false;
    for &(price, lots) in levels {
        let per_lot = u128::from(price) * u128::from(units.quote_per_tick_lot);
        if per_lot == 0 {
            continue;
        }
        let take = match target {
            BookTarget::Lots(wanted) => (u128::from(wanted) - lots_total).min(u128::from(lots)),
            BookTarget::Quote(budget) => {
                let budget = u128::from(budget);
                let spent = notional + notional * fee_ppm / PPM;
                match side {
                    // Lots whose notional plus fee fits the rest of the budget (a lower bound).
                    Side::Bid => {
                        ((budget.saturating_sub(spent)) * PPM / (per_lot * (PPM + fee_ppm))).min(u128::from(lots))
                    }
                    // Lots needed to receive the rest after the fee (rounded up).
                    Side::Ask => {
                        let received = notional - notional * fee_ppm / PPM;
                        let missing = budget.saturating_sub(received);
                        let net_per_lot = per_lot * (PPM - fee_ppm.min(PPM));
                        if net_per_lot == 0 {
                            u128::from(lots)
                        } else {
                            (missing * PPM).div_ceil(net_per_lot).min(u128::from(lots))
                        }
                    }
                }
            }
        };
        lots_total += take;
        notional = notional.saturating_add(take.saturating_mul(per_lot));
        let done = match target {
            BookTarget::Lots(wanted) => lots_total == u128::from(wanted),
            BookTarget::Quote(budget) => match side {
                Side::Bid => take < u128::from(lots),
                Side::Ask => notional - notional * fee_ppm / PPM >= u128::from(budget),
            },
        };
        if done {
            complete = true;
            break;
        }
    }
    if let BookTarget::Lots(0) = target {
        complete = true;
    }
    let fee = notional * fee_ppm / PPM;
    BookQuote {
        base_amount: u64::try_from(lots_total * u128::from(units.lot_size)).unwrap_or(u64::MAX),
        quote_amount: u64::try_from(notional).unwrap_or(u64::MAX),
        fee: u64::try_from(fee).unwrap_or(u64::MAX),
        complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNITS: BookUnits = BookUnits { quote_per_tick_lot: 10, lot_size: 100, taker_fee_ppm: 1_000 };

    #[test]
    fn walks_levels_best_first() {
        let asks = [(100, 5), (110, 5)];
        let q = walk_book(&asks, Side::Bid, BookTarget::Lots(7), UNITS);
        assert_eq!(q, BookQuote { base_amount: 700, quote_amount: 5 * 1_000 + 2 * 1_100, fee: 7, complete: true });
        let q = walk_book(&asks, Side::Bid, BookTarget::Lots(11), UNITS);
        assert_eq!((q.base_amount, q.complete), (1_000, false));
        // A budget of 5_005 buys exactly the first level with its fee.
        let q = walk_book(&asks, Side::Bid, BookTarget::Quote(5_005), UNITS);
        assert_eq!((q.base_amount, q.quote_amount, q.fee, q.complete), (500, 5_000, 5, true));
        let bids = [(100, 5), (90, 5)];
        let q = walk_book(&bids, Side::Ask, BookTarget::Quote(5_000), UNITS);
        assert_eq!((q.base_amount, q.complete), (600, true), "4.995 short after the fee: one more lot");
        assert!(q.quote_amount - q.fee >= 5_000);
        assert!(!walk_book(&[], Side::Ask, BookTarget::Lots(1), UNITS).complete);
    }

    /// The view follows a real engine's events, and its quotes are exactly what the engine then
    /// does; the book walk matches the engine's fills for a market order.
    #[test]
    fn quotes_match_the_engine() {
        use engine::testkit::commands::*;
        let config = EngineConfig::sample_with_pools();
        let mut engine = Engine::new(&config).unwrap();
        let view = crate::MarketView::new(&config);
        let mut events = Vec::new();
        let mut sequence = 0;
        let mut run = |engine: &mut Engine, command: codec::Command, events: &mut Vec<Event>| {
            sequence += 1;
            events.clear();
            engine.execute(engine::CommandContext::new(sequence, sequence), &command, events);
            for event in events.iter() {
                view.apply(event);
            }
        };
        for user in 1..=3 {
            run(&mut engine, deposit(user, 1, 1_000_000_000_000), &mut events);
            run(&mut engine, deposit(user, 3, 1_000_000_000_000), &mut events);
        }
        let sol = MarketId::new(3);
        assert_eq!(view.pools().quote(sol, Side::Bid, SwapMode::ExactIn, 1_000), Err(RejectReason::PoolEmpty));
        run(&mut engine, add_liquidity(1, 3, 500_000_000_000, 75_000_000_000), &mut events);
        run(&mut engine, add_liquidity(2, 3, 10_000_000_000, 9_000_000_000), &mut events);
        for (side, mode, amount) in [
            (Side::Bid, SwapMode::ExactOut, 3_000_000_000),
            (Side::Ask, SwapMode::ExactIn, 7_777_777_777),
            (Side::Bid, SwapMode::ExactIn, 1_234_567_890),
            (Side::Ask, SwapMode::ExactOut, 99_999_999),
        ] {
            let quote = view.pools().quote(sol, side, mode, amount).unwrap();
            run(&mut engine, swap(3, 3, side, mode, amount, 0), &mut events);
            let Event::SwapExecuted(done) = events[0] else { panic!("{events:?}") };
            assert_eq!(
                (quote.result.amount_in, quote.result.amount_out),
                (done.amount_in.get(), done.amount_out.get())
            );
            assert_eq!(quote.result.fee, done.fee.get());
        }
        let pool = view.pools().pool(sol).unwrap();
        let engine_pool = engine.pool(sol).unwrap();
        assert_eq!(
            (pool.base_reserve, pool.quote_reserve, pool.total_shares),
            (engine_pool.base_reserve, engine_pool.quote_reserve, engine_pool.total_shares)
        );
        assert_eq!(&pool.holders, &engine_pool.holders);
        let seeded = crate::MarketView::new(&config);
        seeded.seed_books(&engine);
        assert_eq!(seeded.pools().pool(sol).unwrap().holders, pool.holders);

        // Book: asks at 150 and 151 (ticks of 0.001 USDC, lots of 0.01 SOL); a market buy of 30
        // lots walks both levels, as the engine's fills do.
        run(&mut engine, gtc(1, 3, Side::Ask, 150_000, 20), &mut events);
        run(&mut engine, gtc(2, 3, Side::Ask, 151_000, 20), &mut events);
        let depth = view.depth(sol, 100).unwrap();
        let units = BookUnits::of(&config, &config.markets[2]).unwrap();
        let quote = walk_book(&depth.asks, Side::Bid, BookTarget::Lots(30), units);
        run(&mut engine, market(3, 3, Side::Bid, 30), &mut events);
        let (mut notional, mut fee) = (0, 0);
        for event in &events {
            if let Event::Fill(fill) = event {
                notional += fill.quote_amount.get();
                fee += fill.taker_fee.get();
            }
        }
        assert_eq!(quote.quote_amount, notional);
        assert!(quote.fee >= fee && quote.complete);
        assert_eq!(quote.base_amount, 30 * 10_000_000);
    }
}
