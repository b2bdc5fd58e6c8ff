//! Named workload profiles (`--profile`): an order mix and a price model each, after the
//! engine benchmark's workloads of the same names ([`engine::testkit::profiles`], which holds
//! the shared percentages).
//!
//! - `default`: 80% GTC limits, 5% market, 5% IOC, 10% cancels; limits within ±10 USDC of
//!   60,000 on their own side, 10% crossing.
//! - `exchange-core`: 9% GTC, 3% IOC, 6% cancels, 82% cancel-replaces that move an open
//!   order's price. New and moved prices lie within 30 ticks of the mid on the order's own side,
//!   10% (3 in 30) crossing by 1–3 ticks; every IOC crosses by 1–3 ticks. 2–100 lots.
//! - `w-obrs`: 70% GTC limits anywhere in mid ± 1 tick whatever their side (so about half
//!   trade at once), 20% cancels, 10% market orders; 2–100 lots.
//!
//! Differences from the in-process benchmark, which sees the book and the loadgen does not:
//! prices are placed around a fixed mid rather than the current best prices, each connection
//! is its own user (not 1,000 accounts), cancels and replaces address the connection's own
//! open orders (W-OBRS's cancels of random, often long-gone ids are not reproduced), and the
//! smallest quantity is 2 lots so that every order clears BTC_USDC's 1 USDC minimum notional.
//! `max_open` bounds each connection's open orders, playing the part of exchange-core's book
//! size target.

use crate::flow::{Mix, Placement, PriceModel};
use engine::testkit::profiles::{
    EXCHANGE_CORE, EXCHANGE_CORE_BAND_TICKS, EXCHANGE_CORE_CROSSING_IN_BAND, EXCHANGE_CORE_IOC_THROUGH_TICKS, W_OBRS,
    W_OBRS_BAND_TICKS,
};
use std::fmt;
use std::str::FromStr;

/// A named workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// The default mix.
    #[default]
    Default,
    /// Exchange-core-like: mostly cancel-replaces.
    ExchangeCore,
    /// W-OBRS: limits in a narrow band, cancels and market orders.
    WObrs,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 3] = [Profile::Default, Profile::ExchangeCore, Profile::WObrs];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::ExchangeCore => "exchange-core",
            Profile::WObrs => "w-obrs",
        }
    }

    /// Its order mix.
    pub fn mix(self) -> Mix {
        match self {
            Profile::Default => Mix::default(),
            Profile::ExchangeCore => EXCHANGE_CORE.into(),
            Profile::WObrs => W_OBRS.into(),
        }
    }

    /// Its prices and quantities (around the default mid on BTC_USDC).
    pub fn prices(self) -> PriceModel {
        let default = PriceModel::default();
        match self {
            Profile::Default => default,
            Profile::ExchangeCore => PriceModel {
                spread_ticks: EXCHANGE_CORE_BAND_TICKS,
                cross_pct: (100 * EXCHANGE_CORE_CROSSING_IN_BAND / EXCHANGE_CORE_BAND_TICKS) as u32,
                ioc_cross_pct: 100,
                cross_ticks: EXCHANGE_CORE_IOC_THROUGH_TICKS,
                lots_max: 100,
                ..default
            },
            Profile::WObrs => {
                PriceModel { spread_ticks: W_OBRS_BAND_TICKS, placement: Placement::Band, lots_max: 100, ..default }
            }
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let wanted = text.trim().to_ascii_lowercase().replace('_', "-");
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == wanted || (wanted == "ec" && *p == Profile::ExchangeCore))
            .ok_or_else(|| {
                let names: Vec<_> = Profile::ALL.iter().map(|p| p.name()).collect();
                format!("unknown profile {text:?} (known: {})", names.join(", "))
            })
    }
}
