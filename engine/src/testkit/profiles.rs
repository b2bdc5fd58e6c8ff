//! Workload profiles and the order-flow CSV format, shared by the engine's workload benchmark
//! (`engine/benches/workloads.rs`) and the `loadgen` load generator, so "W-OBRS" and
//! "exchange-core" mean the same mix of requests in both.
//!
//! A [`ProfileMix`] gives the share of each request type, in percent of all requests; a roll
//! `r` in `0..100` picks GTC for `r < gtc`, then IOC, market, cancel and replace in that order
//! ([`ProfileMix::kind`]). The benchmark's planners use the same shares with their own roll
//! order (W-OBRS: GTC, cancel, market), which keeps their published command streams unchanged.
//!
//! The CSV format ([`parse_flow_csv`]) is one order per line, `side,price,qty`: side `B`/`S`
//! (or `buy`/`sell`, any case), price in ticks and quantity in lots of the market (integers);
//! blank lines, lines starting with `#` and a header line starting with `side` are skipped.

use codec::Side;
use std::fmt;

/// Shares of each request type, percent (they add up to 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileMix {
    /// GTC limit orders.
    pub gtc_pct: u32,
    /// IOC limit orders.
    pub ioc_pct: u32,
    /// Market orders.
    pub market_pct: u32,
    /// Cancels of an open order.
    pub cancel_pct: u32,
    /// Cancel-replaces moving an open order's price.
    pub replace_pct: u32,
}

/// A request type of a [`ProfileMix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProfileKind {
    /// A GTC limit order.
    Gtc,
    /// An IOC limit order.
    Ioc,
    /// A market order.
    Market,
    /// A cancel.
    Cancel,
    /// A cancel-replace.
    Replace,
}

impl ProfileMix {
    /// The sum of the shares (100 for a valid mix).
    pub const fn total(&self) -> u32 {
        self.gtc_pct + self.ioc_pct + self.market_pct + self.cancel_pct + self.replace_pct
    }

    /// The request type of a roll in `0..100` (rolls at or above the total give `Gtc`).
    pub const fn kind(&self, roll: u32) -> ProfileKind {
        let mut upto = self.gtc_pct;
        if roll < upto {
            return ProfileKind::Gtc;
        }
        upto += self.ioc_pct;
        if roll < upto {
            return ProfileKind::Ioc;
        }
        upto += self.market_pct;
        if roll < upto {
            return ProfileKind::Market;
        }
        upto += self.cancel_pct;
        if roll < upto {
            return ProfileKind::Cancel;
        }
        upto += self.replace_pct;
        if roll < upto {
            return ProfileKind::Replace;
        }
        ProfileKind::Gtc
    }
}

/// W-OBRS: 70% GTC limits in a band of ±[`W_OBRS_BAND_TICKS`] around a mid, on either side
/// regardless of the order's side (so many cross), 20% cancels, 10% market orders.
pub const W_OBRS: ProfileMix = ProfileMix { gtc_pct: 70, ioc_pct: 0, market_pct: 10, cancel_pct: 20, replace_pct: 0 };

/// W-OBRS's price band: limits are priced `mid + U(−1..=1)` ticks (99–101 around 100).
pub const W_OBRS_BAND_TICKS: u64 = 1;

/// Exchange-core-like mix (after exchange-core's performance test generator): 9% GTC, 3% IOC,
/// 6% cancels, 82% cancel-replaces that move an open order's price.
pub const EXCHANGE_CORE: ProfileMix =
    ProfileMix { gtc_pct: 9, ioc_pct: 3, market_pct: 0, cancel_pct: 6, replace_pct: 82 };

/// Exchange-core-like prices: new and moved orders are priced within this many ticks of the
/// opposite side's best price, on their own side of it…
pub const EXCHANGE_CORE_BAND_TICKS: u64 = 30;

/// …and [`EXCHANGE_CORE_CROSSING_IN_BAND`] in [`EXCHANGE_CORE_BAND_TICKS`] of them at or through
/// that best price (they trade): 10%.
pub const EXCHANGE_CORE_CROSSING_IN_BAND: u64 = 3;

/// Exchange-core-like IOCs are priced at the opposite best price or up to this many ticks
/// through it (they always try to trade).
pub const EXCHANGE_CORE_IOC_THROUGH_TICKS: u64 = 3;

/// One order of a flow file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRow {
    /// Buy or sell.
    pub side: Side,
    /// Limit price, ticks.
    pub price_ticks: u64,
    /// Quantity, lots.
    pub lots: u64,
}

/// A line of a flow file that is not `side,price,qty`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowCsvError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
    /// The line's text.
    pub text: String,
}

impl fmt::Display for FlowCsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {:?}", self.line, self.message, self.text)
    }
}

impl std::error::Error for FlowCsvError {}

/// Parses a flow file: one `side,price,qty` order per line (see the module documentation).
///
/// # Errors
/// The first line that is not blank, a comment, the header or a valid order, with its number,
/// what is wrong and its text.
pub fn parse_flow_csv(text: &str) -> Result<Vec<FlowRow>, FlowCsvError> {
    let mut rows = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |message: &str| FlowCsvError { line: index + 1, message: message.to_owned(), text: line.to_owned() };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.first().is_some_and(|f| f.eq_ignore_ascii_case("side")) {
            continue; // header
        }
        let [side, price, quantity] = fields[..] else {
            return Err(bad(&format!("expected 3 fields side,price,qty, found {}", fields.len())));
        };
        let side = match side.to_ascii_lowercase().as_str() {
            "b" | "buy" => Side::Bid,
            "s" | "sell" => Side::Ask,
            _ => return Err(bad("side must be B, S, buy or sell")),
        };
        let price_ticks: u64 = price.parse().map_err(|_| bad("price is not an integer number of ticks"))?;
        let lots: u64 = quantity.parse().map_err(|_| bad("qty is not an integer number of lots"))?;
        if price_ticks == 0 {
            return Err(bad("price must be positive"));
        }
        if lots == 0 {
            return Err(bad("qty must be positive"));
        }
        rows.push(FlowRow { side, price_ticks, lots });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profiles_add_up_and_rolls_follow_the_bounds() {
        assert_eq!(W_OBRS.total(), 100);
        assert_eq!(EXCHANGE_CORE.total(), 100);
        assert_eq!(W_OBRS.kind(69), ProfileKind::Gtc);
        assert_eq!(W_OBRS.kind(70), ProfileKind::Market);
        assert_eq!(W_OBRS.kind(80), ProfileKind::Cancel);
        assert_eq!(W_OBRS.kind(99), ProfileKind::Cancel);
        assert_eq!(EXCHANGE_CORE.kind(8), ProfileKind::Gtc);
        assert_eq!(EXCHANGE_CORE.kind(9), ProfileKind::Ioc);
        assert_eq!(EXCHANGE_CORE.kind(12), ProfileKind::Cancel);
        assert_eq!(EXCHANGE_CORE.kind(18), ProfileKind::Replace);
        let counts = (0..100).fold([0u32; 5], |mut counts, roll| {
            counts[EXCHANGE_CORE.kind(roll) as usize] += 1;
            counts
        });
        assert_eq!(counts, [9, 3, 0, 6, 82]);
    }

    #[test]
    fn flow_files_parse_with_comments_header_and_both_side_spellings() {
        let rows = parse_flow_csv("# comment\n\nside,price,qty\nB,650012,34\n sell , 649995 , 27 \nBUY,1,1\n").unwrap();
        assert_eq!(
            rows,
            vec![
                FlowRow { side: Side::Bid, price_ticks: 650_012, lots: 34 },
                FlowRow { side: Side::Ask, price_ticks: 649_995, lots: 27 },
                FlowRow { side: Side::Bid, price_ticks: 1, lots: 1 },
            ]
        );
    }

    #[test]
    fn bad_flow_lines_name_their_line_and_problem() {
        let cases = [
            ("B,1,2,3", 1, "expected 3 fields"),
            ("side,price,qty\nX,100,1", 2, "side must be"),
            ("B,10.5,1", 1, "price is not an integer"),
            ("\n\nS,100,-1", 3, "qty is not an integer"),
            ("B,0,1", 1, "price must be positive"),
            ("S,100,0", 1, "qty must be positive"),
            ("B;100;1", 1, "expected 3 fields"),
        ];
        for (text, line, message) in cases {
            let error = parse_flow_csv(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}: {error}");
            assert!(error.message.contains(message), "{text:?}: {error}");
            assert!(error.to_string().starts_with(&format!("line {line}: ")), "{error}");
        }
    }
}
