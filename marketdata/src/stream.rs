//! Stream names (Backpack's spelling) and the keys the publisher files subscribers under.

use crate::KlineInterval;
use codec::{MarketId, UserId};

/// The window of a conflated depth stream (`depth.200ms.<symbol>` …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Conflation {
    /// `depth.200ms.<symbol>`.
    Ms200,
    /// `depth.600ms.<symbol>`.
    Ms600,
    /// `depth.1000ms.<symbol>`.
    Ms1000,
}

impl Conflation {
    /// Every conflation window.
    pub const ALL: [Conflation; 3] = [Self::Ms200, Self::Ms600, Self::Ms1000];

    /// The window in milliseconds.
    pub fn millis(self) -> u64 {
        match self {
            Self::Ms200 => 200,
            Self::Ms600 => 600,
            Self::Ms1000 => 1_000,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "200ms" => Some(Self::Ms200),
            "600ms" => Some(Self::Ms600),
            "1000ms" => Some(Self::Ms1000),
            _ => None,
        }
    }

    pub(crate) fn slot(self) -> usize {
        match self {
            Self::Ms200 => 0,
            Self::Ms600 => 1,
            Self::Ms1000 => 2,
        }
    }
}

/// What a subscriber is filed under: one key per distinct stream of events. Private keys carry
/// the user, so a subscriber can only ever be filed under its own user's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKey {
    /// `depth.<symbol>`: every book change, one diff per engine command.
    Depth(MarketId),
    /// `depth.<window>.<symbol>`: book changes conflated over a window.
    DepthConflated(MarketId, Conflation),
    /// `trade.<symbol>`.
    Trade(MarketId),
    /// `bookTicker.<symbol>`.
    BookTicker(MarketId),
    /// `ticker.<symbol>` (24 h statistics).
    Ticker(MarketId),
    /// `kline.<interval>.<symbol>`.
    Kline(MarketId, KlineInterval),
    /// `account.orderUpdate` (all markets) or `account.orderUpdate.<symbol>` of one user.
    OrderUpdate(UserId, Option<MarketId>),
    /// `account.balanceUpdate` of one user.
    BalanceUpdate(UserId),
}

impl StreamKey {
    /// The market of a public depth stream (the streams a lagging subscriber is resynchronised on
    /// with a snapshot).
    pub fn depth_market(&self) -> Option<MarketId> {
        match self {
            Self::Depth(market) | Self::DepthConflated(market, _) => Some(*market),
            _ => None,
        }
    }
}

/// A parsed stream name, before authentication: private streams still need their user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamSpec {
    /// A public stream.
    Public(StreamKey),
    /// `account.orderUpdate[.<symbol>]`.
    OrderUpdate(Option<MarketId>),
    /// `account.balanceUpdate`.
    BalanceUpdate,
}

impl StreamSpec {
    /// Whether subscribing needs an authenticated user.
    pub fn is_private(&self) -> bool {
        !matches!(self, Self::Public(_))
    }

    /// The key for `user` (`None` for a private stream without a user).
    pub fn key(&self, user: Option<UserId>) -> Option<StreamKey> {
        match *self {
            Self::Public(key) => Some(key),
            Self::OrderUpdate(market) => user.map(|user| StreamKey::OrderUpdate(user, market)),
            Self::BalanceUpdate => user.map(StreamKey::BalanceUpdate),
        }
    }
}

/// Parses a stream name with `market` resolving a symbol. The error says what is wrong.
pub(crate) fn parse(name: &str, market: impl Fn(&str) -> Option<MarketId>) -> Result<StreamSpec, String> {
    let symbol = |text: &str| market(text).ok_or_else(|| format!("Unknown symbol in stream {name}: {text}"));
    let mut parts = name.splitn(3, '.');
    let kind = parts.next().unwrap_or_default();
    let second = parts.next();
    let third = parts.next();
    let key = match (kind, second, third) {
        ("account", Some("orderUpdate"), None) => return Ok(StreamSpec::OrderUpdate(None)),
        ("account", Some("orderUpdate"), Some(sym)) => return Ok(StreamSpec::OrderUpdate(Some(symbol(sym)?))),
        ("account", Some("balanceUpdate"), None) => return Ok(StreamSpec::BalanceUpdate),
        ("depth", Some(sym), None) => StreamKey::Depth(symbol(sym)?),
        ("depth", Some(window), Some(sym)) => {
            let window = Conflation::parse(window)
                .ok_or_else(|| format!("Invalid depth window in stream {name}: expected 200ms, 600ms or 1000ms"))?;
            StreamKey::DepthConflated(symbol(sym)?, window)
        }
        ("trade", Some(sym), None) => StreamKey::Trade(symbol(sym)?),
        ("bookTicker", Some(sym), None) => StreamKey::BookTicker(symbol(sym)?),
        ("ticker", Some(sym), None) => StreamKey::Ticker(symbol(sym)?),
        ("kline", Some(interval), Some(sym)) => {
            let interval =
                KlineInterval::parse(interval).ok_or_else(|| format!("Invalid kline interval in stream {name}"))?;
            StreamKey::Kline(symbol(sym)?, interval)
        }
        _ => return Err(format!("Unknown stream: {name}")),
    };
    Ok(StreamSpec::Public(key))
}

/// The canonical name of a key (`symbol` gives a market's symbol).
pub(crate) fn name(key: &StreamKey, symbol: impl Fn(MarketId) -> String) -> String {
    match key {
        StreamKey::Depth(m) => format!("depth.{}", symbol(*m)),
        StreamKey::DepthConflated(m, window) => format!("depth.{}ms.{}", window.millis(), symbol(*m)),
        StreamKey::Trade(m) => format!("trade.{}", symbol(*m)),
        StreamKey::BookTicker(m) => format!("bookTicker.{}", symbol(*m)),
        StreamKey::Ticker(m) => format!("ticker.{}", symbol(*m)),
        StreamKey::Kline(m, interval) => format!("kline.{}.{}", interval.name(), symbol(*m)),
        StreamKey::OrderUpdate(_, None) => "account.orderUpdate".into(),
        StreamKey::OrderUpdate(_, Some(m)) => format!("account.orderUpdate.{}", symbol(*m)),
        StreamKey::BalanceUpdate(_) => "account.balanceUpdate".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any text: never a panic; whatever parses is named back to a name that parses to the
        /// same stream.
        #[test]
        fn parser_is_total(text in "(depth|trade|bookTicker|ticker|kline|account|[a-z]{0,6})(\\.(SOL_USDC|200ms|1000ms|1m|1month|orderUpdate|balanceUpdate|[A-Za-z0-9_]{0,10})){0,3}|\\PC{0,40}") {
            let market = |s: &str| (s == "SOL_USDC").then_some(MarketId::new(3));
            if let Ok(spec) = parse(&text, market) {
                let key = spec.key(Some(UserId::new(1))).unwrap();
                let name = name(&key, |_| "SOL_USDC".to_string());
                proptest::prop_assert_eq!(parse(&name, market), Ok(spec));
            }
        }
    }

    #[test]
    fn names_round_trip() {
        let market = |s: &str| (s == "SOL_USDC").then_some(MarketId::new(3));
        let symbol = |_| "SOL_USDC".to_string();
        for text in [
            "depth.SOL_USDC",
            "depth.200ms.SOL_USDC",
            "depth.600ms.SOL_USDC",
            "depth.1000ms.SOL_USDC",
            "trade.SOL_USDC",
            "bookTicker.SOL_USDC",
            "ticker.SOL_USDC",
            "kline.1m.SOL_USDC",
            "kline.1month.SOL_USDC",
            "account.orderUpdate",
            "account.orderUpdate.SOL_USDC",
            "account.balanceUpdate",
        ] {
            let spec = parse(text, market).unwrap();
            let key = spec.key(Some(UserId::new(7))).unwrap();
            assert_eq!(name(&key, symbol), text);
            assert_eq!(spec.is_private(), text.starts_with("account."));
            assert_eq!(spec.is_private(), spec.key(None).is_none());
        }
        for bad in [
            "",
            "depth",
            "depth.BTC_EUR",
            "depth.100ms.SOL_USDC",
            "kline.2m.SOL_USDC",
            "trade.SOL_USDC.x",
            "account.orders",
            "ticker",
            "account.orderUpdate.NOPE",
        ] {
            assert!(parse(bad, market).is_err(), "{bad}");
        }
    }
}
