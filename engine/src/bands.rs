//! Price bands: per-market protection against trading at absurd prices.
//!
//! A market's band is two multipliers of its *reference price*, in parts per million
//! ([`PriceBand::max_multiplier_ppm`] ≥ 1 000 000 ≥ [`PriceBand::min_multiplier_ppm`]), published
//! by the gateways as Backpack publishes its price filter (`maxMultiplier`, `minMultiplier`).
//!
//! The reference price is the market's last trade price; before the market's first trade it is
//! the mid of the best bid and ask (rounded down), and with no trade and a one-sided or empty book
//! there is no reference and the band does not apply. The reference is taken once per order, when
//! it is accepted (or, for a trigger order, when it fires): fills during the order do not move
//! its band. The last trade price is engine state (hashed, snapshotted), so bands are a pure
//! function of the journal.
//!
//! Rules, with `upper = ⌊reference × max / 10^6⌋` and `lower = ⌈reference × min / 10^6⌉`:
//! - a limit order (new, replaced to a new price, or fired by a trigger) priced above `upper` or
//!   below `lower` is rejected with `PriceOutsideBand`;
//! - a market order (or a fired market trigger) trades only at prices within `[lower, upper]`:
//!   a buy stops before an ask above `upper`, a sell before a bid below `lower`, and its remainder
//!   expires with `ExpireReason::PriceBand`;
//! - a market buy by base quantity may spend at most what the whole quantity costs at `upper`
//!   (fee included), not the buyer's whole available quote.

use crate::config::FEE_PPM_DENOMINATOR;

/// One multiplier of the reference price in parts per million: `1_000_000` is 1×.
pub const MULTIPLIER_ONE_PPM: u32 = 1_000_000;

/// Largest upper multiplier accepted (100×): keeps `reference × max` far inside u128 and a band
/// meaningful.
pub const MAX_MULTIPLIER_PPM_MAX: u32 = 100 * MULTIPLIER_ONE_PPM;

/// A market's price band. Both multipliers zero: no band (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PriceBand {
    /// Highest allowed price as a multiple of the reference price, in ppm (e.g. 1 100 000: 10%
    /// above); at least [`MULTIPLIER_ONE_PPM`] when the band is on.
    pub max_multiplier_ppm: u32,
    /// Lowest allowed price as a multiple of the reference price, in ppm (e.g. 900 000: 10%
    /// below); at most [`MULTIPLIER_ONE_PPM`] when the band is on.
    pub min_multiplier_ppm: u32,
}

impl PriceBand {
    /// No band.
    pub const NONE: Self = Self { max_multiplier_ppm: 0, min_multiplier_ppm: 0 };

    /// Whether the band applies at all.
    #[inline]
    pub fn is_enabled(&self) -> bool {
        *self != Self::NONE
    }

    /// Whether the multipliers make sense: off, or `min ≤ 1× ≤ max ≤ 100×`.
    pub fn is_valid(&self) -> bool {
        !self.is_enabled()
            || (self.min_multiplier_ppm <= MULTIPLIER_ONE_PPM
                && self.max_multiplier_ppm >= MULTIPLIER_ONE_PPM
                && self.max_multiplier_ppm <= MAX_MULTIPLIER_PPM_MAX)
    }

    /// The allowed price range `(lower, upper)` in ticks around `reference_ticks`, or `None` when
    /// the band is off or there is no reference (0).
    pub fn limits(&self, reference_ticks: u64) -> Option<BandLimits> {
        if !self.is_enabled() || reference_ticks == 0 {
            return None;
        }
        let reference = u128::from(reference_ticks);
        let denominator = u128::from(FEE_PPM_DENOMINATOR);
        let upper = reference * u128::from(self.max_multiplier_ppm) / denominator;
        let lower = (reference * u128::from(self.min_multiplier_ppm)).div_ceil(denominator);
        // Bounded: reference < 2^64 and max ≤ 100×, so upper < 2^71; clamp to the u64 range.
        Some(BandLimits {
            lower: u64::try_from(lower).unwrap_or(u64::MAX),
            upper: u64::try_from(upper).unwrap_or(u64::MAX),
        })
    }
}

/// The prices a market's band allows right now, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandLimits {
    /// Lowest allowed price in ticks.
    pub lower: u64,
    /// Highest allowed price in ticks.
    pub upper: u64,
}

impl BandLimits {
    /// Whether a limit price lies inside the band.
    pub fn contains(&self, price_ticks: u64) -> bool {
        (self.lower..=self.upper).contains(&price_ticks)
    }
}

/// The reference price: the last trade price, else the mid of the best bid and ask (rounded
/// down), else none (0).
pub(crate) fn reference_price(last_trade_ticks: u64, best_bid: Option<u64>, best_ask: Option<u64>) -> u64 {
    if last_trade_ticks != 0 {
        return last_trade_ticks;
    }
    match (best_bid, best_ask) {
        // Bounded: the average of two u64 values fits in u64.
        (Some(bid), Some(ask)) => ((u128::from(bid) + u128::from(ask)) / 2) as u64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_inwards() {
        let band = PriceBand { max_multiplier_ppm: 1_100_000, min_multiplier_ppm: 900_000 };
        assert_eq!(band.limits(1_005), Some(BandLimits { lower: 905, upper: 1_105 }));
        assert_eq!(band.limits(0), None);
        assert_eq!(PriceBand::NONE.limits(1_000), None);
        assert!(band.is_valid());
        assert!(!PriceBand { max_multiplier_ppm: 900_000, min_multiplier_ppm: 800_000 }.is_valid());
    }

    #[test]
    fn reference_is_last_trade_then_mid() {
        assert_eq!(reference_price(120, Some(100), Some(200)), 120);
        assert_eq!(reference_price(0, Some(100), Some(201)), 150);
        assert_eq!(reference_price(0, Some(100), None), 0);
    }
}
