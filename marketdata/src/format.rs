//! Integer → decimal text at the edge, with each market's precision, via
//! [`codec::decimal::format_fixed`]. No floats anywhere.
//!
//! A price of `t` ticks is `t × tick_size` quote minor units; a quantity of `l` lots is
//! `l × lot_size` base minor units. Prices and quantities are written with as many decimals as
//! the market's tick size / step size has once trailing zeros are trimmed (Backpack style: a
//! `0.1` tick gives `"64000.5"`, a `0.00001` step gives `"0.00120"`). Quote amounts (notionals,
//! quote volumes) are written exactly in the quote asset's decimals, trailing zeros trimmed.

use codec::decimal::format_fixed;
use engine::{EngineConfig, MarketConfig};

/// Number of decimals of `value` minor units at `scale` once trailing zeros are trimmed.
pub fn decimal_places(value: u64, scale: u8) -> u8 {
    let mut places = scale;
    let mut value = value;
    while places > 0 && value % 10 == 0 {
        value /= 10;
        places -= 1;
    }
    places
}

/// `value` minor units at `scale` with exactly `places` (≤ `scale`) decimals; digits beyond
/// `places` are dropped (callers pass multiples of `10^(scale - places)`, so nothing is lost).
pub fn format_units(value: u128, scale: u8, places: u8) -> String {
    let divisor = 10u128.pow(u32::from(scale));
    let whole = value / divisor;
    // The fraction is below 10^scale ≤ 10^18, which fits u64.
    let fraction = format_fixed((value % divisor) as u64, scale);
    let digits = fraction.split_once('.').map_or("", |(_, digits)| digits);
    let digits = &digits[..usize::from(places.min(scale))];
    if digits.is_empty() { whole.to_string() } else { format!("{whole}.{digits}") }
}

/// `value` minor units at `scale`, exact, trailing zeros (and a trailing dot) trimmed.
pub fn format_trimmed(value: u128, scale: u8) -> String {
    let text = format_units(value, scale, scale);
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text }
}

/// The formatting rules of one market.
#[derive(Debug, Clone)]
pub struct MarketFormat {
    /// Quote minor units per tick.
    pub tick_size: u64,
    /// Base minor units per lot.
    pub lot_size: u64,
    /// Decimals of the quote asset.
    pub quote_decimals: u8,
    /// Decimals of the base asset.
    pub base_decimals: u8,
    /// Decimals shown for prices (those of the tick size).
    pub price_places: u8,
    /// Decimals shown for quantities (those of the step size).
    pub quantity_places: u8,
}

impl MarketFormat {
    /// The rules of `market` (assets looked up in `config`; an unknown asset counts as 0
    /// decimals, which a validated configuration never has).
    pub fn new(config: &EngineConfig, market: &MarketConfig) -> Self {
        let decimals = |asset: codec::AssetId| config.assets.get(asset.get() as usize).map_or(0, |a| a.decimals);
        let (quote_decimals, base_decimals) = (decimals(market.quote), decimals(market.base));
        Self {
            tick_size: market.tick_size,
            lot_size: market.lot_size,
            quote_decimals,
            base_decimals,
            price_places: decimal_places(market.tick_size, quote_decimals),
            quantity_places: decimal_places(market.lot_size, base_decimals),
        }
    }

    /// A price in ticks.
    pub fn price(&self, ticks: u64) -> String {
        format_units(u128::from(ticks) * u128::from(self.tick_size), self.quote_decimals, self.price_places)
    }

    /// `to − from` in ticks, signed (e.g. a 24 h price change).
    pub fn price_change(&self, from: u64, to: u64) -> String {
        if to >= from { self.price(to - from) } else { format!("-{}", self.price(from - to)) }
    }

    /// A quantity in lots.
    pub fn quantity(&self, lots: u128) -> String {
        format_units(lots * u128::from(self.lot_size), self.base_decimals, self.quantity_places)
    }

    /// A quote amount in quote minor units.
    pub fn quote(&self, amount: u128) -> String {
        format_trimmed(amount, self.quote_decimals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_markets() {
        let config = EngineConfig::sample();
        let btc = MarketFormat::new(&config, &config.markets[0]);
        assert_eq!((btc.price_places, btc.quantity_places), (1, 5));
        assert_eq!(btc.price(640_005), "64000.5");
        assert_eq!(btc.price(640_000), "64000.0");
        assert_eq!(btc.quantity(120), "0.00120");
        assert_eq!(btc.quote(76_800_600), "76.8006");
        assert_eq!(btc.quote(1_000_000), "1");
        assert_eq!(btc.price_change(10, 7), "-0.3");
        assert_eq!(btc.price_change(7, 10), "0.3");
        let sol = MarketFormat::new(&config, &config.markets[2]);
        assert_eq!((sol.price_places, sol.quantity_places), (3, 2));
        assert_eq!(sol.price(150_123), "150.123");
        assert_eq!(sol.quantity(150), "1.50");
        assert_eq!(format_units(5, 0, 0), "5");
        assert_eq!(format_trimmed(u128::from(u64::MAX) * 10, 2), "1844674407370955161.5", "beyond u64");
    }
}
