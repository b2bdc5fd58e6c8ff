//! Engine configuration: assets and markets in integer units, checked once at start-up.
//!
//! Units: an asset's *minor unit* is 10^-decimals of it. A market's price is an integer number of
//! *ticks* (`tick_size` quote minor units per whole base unit) and a quantity an integer number of
//! *lots* (`lot_size` base minor units). The notional of one lot at one tick,
//! `tick_size × lot_size / 10^base_decimals`, must be a whole number of quote minor units, so
//! every notional is the exact integer `price_ticks × quantity_lots × quote_per_tick_lot`.

use crate::amm::PoolConfig;
use crate::bands::PriceBand;
use codec::{AssetId, MarketId};

/// Parts-per-million denominator of fee rates.
pub const FEE_PPM_DENOMINATOR: u64 = 1_000_000;
/// Highest asset precision accepted; keeps 10^decimals within u64.
pub const ASSET_DECIMALS_MAX: u8 = 18;

/// An asset (currency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetConfig {
    /// Dense id, the asset's index in [`EngineConfig::assets`].
    pub id: AssetId,
    /// Symbol, e.g. `BTC` (for humans and gateways; the engine uses the id).
    pub symbol: String,
    /// Decimal places of the minor unit.
    pub decimals: u8,
}

/// A market (order book) trading `base` against `quote`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketConfig {
    /// Dense id, the market's index in [`EngineConfig::markets`] plus one (0 means "all").
    pub id: MarketId,
    /// Symbol, e.g. `BTC_USDC`.
    pub symbol: String,
    /// Asset bought and sold.
    pub base: AssetId,
    /// Asset prices are quoted in.
    pub quote: AssetId,
    /// Quote minor units per whole base unit per tick.
    pub tick_size: u64,
    /// Base minor units per lot.
    pub lot_size: u64,
    /// Smallest order quantity in lots (at least 1).
    pub min_quantity_lots: u64,
    /// Largest order quantity in lots.
    pub max_quantity_lots: u64,
    /// Highest price in ticks.
    pub max_price_ticks: u64,
    /// Smallest order notional in quote minor units: checked against price × quantity for limit
    /// orders and against the quote quantity of market buys by quote (a market order by base
    /// quantity has no price to check before it trades).
    pub min_notional: u64,
    /// Fee charged to makers, parts per million of the notional.
    pub maker_fee_ppm: u32,
    /// Fee charged to takers, parts per million of the notional; at least the maker fee.
    pub taker_fee_ppm: u32,
    /// Price band around the reference price ([`PriceBand::NONE`]: none); see [`crate::bands`].
    pub price_band: PriceBand,
}

/// Fixed bounds of the engine, allocated at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Resting orders per market book.
    pub orders_per_market_max: usize,
    /// Open orders per user per market.
    pub open_orders_per_user_max: usize,
    /// Accounts (users with a balance) the ledger pre-allocates room for. More may be created
    /// (a deposit allocates), but never on the order path.
    pub accounts_expected: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        Self { orders_per_market_max: 1 << 16, open_orders_per_user_max: 1_000, accounts_expected: 1 << 12 }
    }
}

/// Everything the engine needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Assets, ids 0.. in order.
    pub assets: Vec<AssetConfig>,
    /// Markets, ids 1.. in order.
    pub markets: Vec<MarketConfig>,
    /// AMM pools, at most one per market, beside its order book (see [`crate::amm`]).
    pub pools: Vec<PoolConfig>,
    /// Bounds.
    pub limits: EngineLimits,
}

/// A configuration the engine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Ids must be dense: asset `i` has id `i`, market `i` has id `i + 1`.
    #[error("{kind} {symbol}: id {id} should be {expected}")]
    IdNotDense {
        /// "asset" or "market".
        kind: &'static str,
        /// Symbol.
        symbol: String,
        /// Id found.
        id: u32,
        /// Id expected.
        expected: u32,
    },
    /// Asset precision above [`ASSET_DECIMALS_MAX`].
    #[error("asset {0}: too many decimals")]
    TooManyDecimals(String),
    /// A market refers to an unknown asset or trades an asset against itself.
    #[error("market {0}: unknown or identical base/quote asset")]
    BadAssets(String),
    /// Tick or lot size zero, or their notional not a whole number of quote minor units.
    #[error("market {0}: tick_size × lot_size / 10^base_decimals must be a positive integer")]
    TickLotNotIntegral(String),
    /// Quantity or price bounds empty or overflowing.
    #[error("market {0}: bad quantity/price bounds")]
    BadBounds(String),
    /// Fee rates above 100% or taker below maker.
    #[error("market {0}: fees must satisfy maker <= taker <= 1_000_000 ppm")]
    BadFees(String),
    /// Price band multipliers not `min ≤ 1× ≤ max ≤ 100×`.
    #[error("market {0}: price band must satisfy min <= 1_000_000 <= max <= 100_000_000 ppm")]
    BadPriceBand(String),
    /// A limit of zero.
    #[error("limits must be positive")]
    BadLimits,
    /// A pool on an unknown market, a second pool on a market, or a fee above the maximum.
    #[error("pool on market {0}: unknown market, duplicate pool or fee above {max} bps", max = crate::amm::FEE_BPS_MAX)]
    BadPool(u32),
}

/// A market's configuration with derived constants.
#[derive(Debug, Clone)]
pub(crate) struct MarketSpec {
    pub config: MarketConfig,
    /// Quote minor units of one lot at one tick.
    pub quote_per_tick_lot: u64,
}

impl MarketSpec {
    /// Notional in quote minor units, `None` on overflow of u64.
    #[inline]
    pub fn notional(&self, price_ticks: u64, lots: u64) -> Option<u64> {
        let notional = u128::from(price_ticks) * u128::from(lots) * u128::from(self.quote_per_tick_lot);
        u64::try_from(notional).ok()
    }

    /// Base minor units of `lots`, `None` on overflow.
    #[inline]
    pub fn base_amount(&self, lots: u64) -> Option<u64> {
        lots.checked_mul(self.config.lot_size)
    }

    /// Fee at `rate_ppm`, rounded down. Rounding down makes fees of the parts of an order never
    /// exceed the fee of the whole, so a reservation made for the whole always covers its fills.
    #[inline]
    pub fn fee(notional: u64, rate_ppm: u32) -> u64 {
        match notional.checked_mul(u64::from(rate_ppm)) {
            // The usual case: a 64-bit division by a constant, which compiles to a multiplication
            // (a 128-bit division is a library call costing tens of nanoseconds).
            Some(product) => product / FEE_PPM_DENOMINATOR,
            // Cannot overflow: notional < 2^64 and rate <= 10^6 < 2^20, and the quotient <= notional.
            None => (u128::from(notional) * u128::from(rate_ppm) / u128::from(FEE_PPM_DENOMINATOR)) as u64,
        }
    }

    /// Quote a bid must lock to rest `lots` at `price_ticks`: the notional plus the worst-case
    /// (taker) fee. `None` on overflow.
    #[inline]
    pub fn bid_reservation(&self, price_ticks: u64, lots: u64) -> Option<u64> {
        self.bid_reservation_of(self.notional(price_ticks, lots)?)
    }

    /// [`Self::bid_reservation`] of an order whose notional is known already.
    #[inline]
    pub fn bid_reservation_of(&self, notional: u64) -> Option<u64> {
        notional.checked_add(Self::fee(notional, self.config.taker_fee_ppm))
    }
}

impl EngineConfig {
    /// Checks the configuration and derives each market's constants.
    pub(crate) fn validate(&self) -> Result<Vec<MarketSpec>, ConfigError> {
        let limits = &self.limits;
        if limits.orders_per_market_max == 0 || limits.open_orders_per_user_max == 0 {
            return Err(ConfigError::BadLimits);
        }
        for (index, asset) in self.assets.iter().enumerate() {
            if asset.id.get() as usize != index {
                return Err(ConfigError::IdNotDense {
                    kind: "asset",
                    symbol: asset.symbol.clone(),
                    id: asset.id.get(),
                    expected: index as u32,
                });
            }
            if asset.decimals > ASSET_DECIMALS_MAX {
                return Err(ConfigError::TooManyDecimals(asset.symbol.clone()));
            }
        }
        let mut specs = Vec::with_capacity(self.markets.len());
        for (index, market) in self.markets.iter().enumerate() {
            let symbol = || market.symbol.clone();
            if market.id.get() as usize != index + 1 {
                return Err(ConfigError::IdNotDense {
                    kind: "market",
                    symbol: symbol(),
                    id: market.id.get(),
                    expected: index as u32 + 1,
                });
            }
            let (Some(base), Some(_)) =
                (self.assets.get(market.base.get() as usize), self.assets.get(market.quote.get() as usize))
            else {
                return Err(ConfigError::BadAssets(symbol()));
            };
            if market.base == market.quote {
                return Err(ConfigError::BadAssets(symbol()));
            }
            let scale = 10u128.pow(u32::from(base.decimals));
            let product = u128::from(market.tick_size) * u128::from(market.lot_size);
            if product == 0 || product % scale != 0 {
                return Err(ConfigError::TickLotNotIntegral(symbol()));
            }
            let quote_per_tick_lot =
                u64::try_from(product / scale).map_err(|_| ConfigError::TickLotNotIntegral(symbol()))?;
            let spec = MarketSpec { config: market.clone(), quote_per_tick_lot };
            let bounds_ok = market.min_quantity_lots >= 1
                && market.min_quantity_lots <= market.max_quantity_lots
                && market.max_price_ticks >= 1
                && spec.bid_reservation(market.max_price_ticks, market.max_quantity_lots).is_some()
                && spec.base_amount(market.max_quantity_lots).is_some();
            if !bounds_ok {
                return Err(ConfigError::BadBounds(symbol()));
            }
            if market.maker_fee_ppm > market.taker_fee_ppm || u64::from(market.taker_fee_ppm) > FEE_PPM_DENOMINATOR {
                return Err(ConfigError::BadFees(symbol()));
            }
            if !market.price_band.is_valid() {
                return Err(ConfigError::BadPriceBand(symbol()));
            }
            specs.push(spec);
        }
        for (index, pool) in self.pools.iter().enumerate() {
            let market = pool.market_id.get();
            let known = market >= 1 && market as usize <= self.markets.len();
            let duplicate = self.pools[..index].iter().any(|p| p.market_id == pool.market_id);
            if !known || duplicate || pool.fee_bps > crate::amm::FEE_BPS_MAX {
                return Err(ConfigError::BadPool(market));
            }
        }
        Ok(specs)
    }

    /// A small configuration for tests, demos and benchmarks: assets BTC (8 decimals),
    /// USDC (6), ETH (8), SOL (9); markets BTC_USDC (id 1), ETH_USDC (2), SOL_USDC (3).
    /// Fees: maker 0.02%, taker 0.05%.
    pub fn sample() -> Self {
        let asset =
            |id: u32, symbol: &str, decimals: u8| AssetConfig { id: AssetId::new(id), symbol: symbol.into(), decimals };
        let market = |id: u32, symbol: &str, base: u32, tick_size: u64, lot_size: u64| MarketConfig {
            id: MarketId::new(id),
            symbol: symbol.into(),
            base: AssetId::new(base),
            quote: AssetId::new(1),
            tick_size,
            lot_size,
            min_quantity_lots: 1,
            max_quantity_lots: 1_000_000_000,
            max_price_ticks: 1_000_000_000,
            min_notional: 0,
            maker_fee_ppm: 200,
            taker_fee_ppm: 500,
            price_band: PriceBand::NONE,
        };
        Self {
            assets: vec![asset(0, "BTC", 8), asset(1, "USDC", 6), asset(2, "ETH", 8), asset(3, "SOL", 9)],
            markets: vec![
                // 0.1 USDC ticks, 0.00001 BTC lots: one tick-lot is 1 USDC minor unit.
                market(1, "BTC_USDC", 0, 100_000, 1_000),
                // 0.01 USDC ticks, 0.0001 ETH lots.
                market(2, "ETH_USDC", 2, 10_000, 10_000),
                // 0.001 USDC ticks, 0.01 SOL lots.
                market(3, "SOL_USDC", 3, 1_000, 10_000_000),
            ],
            pools: Vec::new(),
            limits: EngineLimits::default(),
        }
    }

    /// [`Self::sample`] with AMM pools beside ETH_USDC (fee 30 bps) and SOL_USDC (fee 30 bps).
    pub fn sample_with_pools() -> Self {
        Self {
            pools: vec![
                PoolConfig { market_id: MarketId::new(2), fee_bps: 30 },
                PoolConfig { market_id: MarketId::new(3), fee_bps: 30 },
            ],
            ..Self::sample()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FEE_PPM_DENOMINATOR, MarketSpec};

    /// The fee by 64-bit arithmetic when `notional × rate` fits and by 128-bit arithmetic when it
    /// does not must both equal the exact rounded-down fee, at and around the switch-over.
    #[test]
    fn fee_is_exact_on_both_sides_of_the_64_bit_product_limit() {
        let exact = |notional: u64, rate: u32| {
            (u128::from(notional) * u128::from(rate) / u128::from(FEE_PPM_DENOMINATOR)) as u64
        };
        for rate in [0u32, 1, 7, 2_500, 999_999, 1_000_000] {
            let limit = if rate == 0 { u64::MAX } else { u64::MAX / u64::from(rate) };
            for notional in
                [0, 1, 999_999, 1_000_000, limit.saturating_sub(1), limit, limit.saturating_add(1), u64::MAX]
            {
                assert_eq!(MarketSpec::fee(notional, rate), exact(notional, rate), "notional {notional} rate {rate}");
            }
        }
    }
}
