//! Server configuration: a TOML file (or the built-in default, [`DEFAULT_CONFIG`]), overridden by
//! environment variables and command-line flags (see `exchange --help`). Human units (decimal
//! strings for sizes and prices) are converted here, exactly, into the engine's integer units.

use codec::decimal::{DecimalError, parse_fixed};
use codec::{AssetId, MarketId};
use engine::journal::{Durability, JournalConfig};
use engine::{AssetConfig, EngineConfig, EngineLimits, MarketConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The documented default configuration, used when no file is given.
pub const DEFAULT_CONFIG: &str = include_str!("../exchange.toml");

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of the journal and snapshots.
    pub data_dir: PathBuf,
    /// HTTP listener (metrics now; REST and WebSocket later).
    pub http: HttpSection,
    /// SBE binary order-entry gateway.
    pub binary: BinarySection,
    /// FIX 4.4 order-entry gateway.
    pub fix: FixSection,
    /// FIX sessions (CompID pairs) and their users' keys.
    #[serde(default)]
    pub fix_sessions: Vec<FixSessionSection>,
    /// API keys (Ed25519 public keys) and the users they act for.
    #[serde(default)]
    pub api_keys: Vec<ApiKeySection>,
    /// The trading page (docs/web.md).
    #[serde(default)]
    pub web: WebSection,
    /// Engine thread settings.
    pub engine: EngineSection,
    /// Journal settings.
    pub journal: JournalSection,
    /// Snapshot policy.
    pub snapshot: SnapshotSection,
    /// Assets, in id order.
    pub assets: Vec<AssetSection>,
    /// Markets, in id order (ids start at 1).
    pub markets: Vec<MarketSection>,
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address to listen on, e.g. `127.0.0.1:8080`; port 0 picks a free port.
    pub listen: std::net::SocketAddr,
}

/// `[web]`: the trading page, served on the HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSection {
    /// Whether to serve the page.
    pub enabled: bool,
    /// URL path of the page (`/app`: the page is at `/app/`; `/` redirects browsers there).
    pub path: String,
    /// Serve the page's files from this directory instead of the copies embedded in the binary
    /// (for working on the page without rebuilding).
    pub dir: Option<PathBuf>,
}

impl Default for WebSection {
    fn default() -> Self {
        Self { enabled: true, path: "/app".into(), dir: None }
    }
}

/// `[binary]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinarySection {
    /// Listen address; the gateway is off when `enabled = false`.
    pub listen: std::net::SocketAddr,
    /// Whether to start the gateway.
    pub enabled: bool,
    /// Sustained application messages per second per session.
    pub messages_per_second: u32,
    /// Burst above the sustained rate.
    pub burst: u32,
    /// Throttled messages in a row before the session is terminated.
    pub throttle_strikes_max: u32,
    /// Most simultaneous connections.
    pub connections_max: usize,
    /// Outbound messages kept per session for retransmission.
    pub retransmit_window: usize,
}

/// `[fix]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixSection {
    /// Whether to start the gateway.
    pub enabled: bool,
    /// Listen address.
    pub listen: std::net::SocketAddr,
    /// Sustained inbound messages per second per session.
    pub messages_per_second: u32,
    /// Burst above the sustained rate.
    pub burst: u32,
    /// Throttled messages in a row before the session is logged out.
    pub throttle_strikes_max: u32,
    /// Most simultaneous connections.
    pub connections_max: usize,
}

/// `[[fix_sessions]]`: a CompID pair, its user and the user's Ed25519 public key (base64).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixSessionSection {
    /// The client's SenderCompID(49).
    pub sender_comp_id: String,
    /// The client's TargetCompID(56), the exchange's CompID for this session.
    pub target_comp_id: String,
    /// The user every order of the session belongs to.
    pub user_id: u64,
    /// Base64 of the 32-byte public key the client signs its Logon with.
    pub public_key: String,
}

/// `[[api_keys]]`: a user's Ed25519 public key, base64 (the format Backpack uses).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySection {
    /// The user the key acts for.
    pub user_id: u64,
    /// Base64 of the 32-byte public key.
    pub public_key: String,
}

impl ApiKeySection {
    /// The decoded key.
    ///
    /// # Errors
    /// Not base64 of 32 bytes.
    pub fn key(&self) -> Result<[u8; 32], String> {
        decode_key(&self.public_key).map_err(|e| format!("api key of user {}: {e}", self.user_id))
    }
}

/// Decodes a base64 Ed25519 public key.
///
/// # Errors
/// Not base64 of 32 bytes.
pub fn decode_key(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|e| e.to_string())?;
    bytes.try_into().map_err(|_| "not 32 bytes".to_string())
}

/// How the engine thread waits when its ring is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum IdleStrategy {
    /// Spin on the ring: lowest latency, burns a whole core. Only with a core to spare.
    BusySpin,
    /// Spin briefly, then yield the core, then sleep in short naps. Good on small machines.
    SpinYield,
    /// Sleep 50 µs between empty polls: lowest CPU, highest latency.
    Park,
}

/// `[engine]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// Core to pin the engine thread to; none: not pinned.
    pub core: Option<usize>,
    /// Idle strategy.
    pub idle: IdleStrategy,
    /// Ingress ring capacity (commands).
    pub ring_capacity: usize,
    /// Egress broadcast ring capacity (events); a consumer further behind is told it lagged.
    pub egress_capacity: usize,
    /// Resting orders per market.
    pub orders_per_market_max: usize,
    /// Open orders per user per market.
    pub open_orders_per_user_max: usize,
}

/// `[journal]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    /// `fsync` (default, durable) or `none` (unsafe: benchmarks only).
    pub durability: DurabilitySetting,
    /// Segment size before rolling over, bytes.
    pub segment_bytes: u64,
    /// Most commands per group commit.
    pub batch_max: usize,
}

/// Journal durability as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DurabilitySetting {
    /// fdatasync per batch.
    Fsync,
    /// No fsync (unsafe).
    None,
}

/// `[snapshot]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSection {
    /// Take a snapshot after this many commands (0: not by count).
    pub every_commands: u64,
    /// Take a snapshot when this many seconds passed since the last one and commands arrived in
    /// between (0: not by time). Shutdown always snapshots.
    pub every_seconds: u64,
    /// Delete journal segments wholly covered by the newest snapshot.
    pub prune_journal: bool,
}

/// `[[assets]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetSection {
    /// Symbol.
    pub symbol: String,
    /// Decimal places of the minor unit.
    pub decimals: u8,
}

/// `[[markets]]`, sizes as decimal strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketSection {
    /// `BASE_QUOTE`.
    pub symbol: String,
    /// Base asset symbol.
    pub base: String,
    /// Quote asset symbol.
    pub quote: String,
    /// Price increment, in quote.
    pub tick_size: String,
    /// Quantity increment, in base.
    pub step_size: String,
    /// Smallest quantity, in base.
    pub min_quantity: String,
    /// Largest quantity, in base.
    pub max_quantity: String,
    /// Highest price, in quote.
    pub max_price: String,
    /// Smallest notional of a limit order, in quote.
    pub min_notional: String,
    /// Maker fee, parts per million.
    pub maker_fee_ppm: u32,
    /// Taker fee, parts per million.
    pub taker_fee_ppm: u32,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// Bad TOML or unknown keys.
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value that does not fit.
    #[error("market {market}: {field}: {reason}")]
    Value {
        /// Market symbol.
        market: String,
        /// Field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The engine refused the resulting configuration.
    #[error(transparent)]
    Engine(#[from] engine::ConfigError),
}

impl Config {
    /// Reads a file, or the default configuration when `path` is `None`.
    ///
    /// # Errors
    /// Unreadable file or invalid contents.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?,
            None => DEFAULT_CONFIG.to_string(),
        };
        Ok(toml::from_str(&text)?)
    }

    /// The engine's integer configuration.
    ///
    /// # Errors
    /// Unknown asset symbols, sizes that are not exact in the assets' minor units, or a
    /// configuration the engine refuses.
    pub fn engine_config(&self) -> Result<EngineConfig, ConfigError> {
        let assets: Vec<AssetConfig> = self
            .assets
            .iter()
            .enumerate()
            .map(|(i, a)| AssetConfig { id: AssetId::new(i as u32), symbol: a.symbol.clone(), decimals: a.decimals })
            .collect();
        let mut markets = Vec::new();
        for (i, m) in self.markets.iter().enumerate() {
            let value_error =
                |field: &'static str, reason: String| ConfigError::Value { market: m.symbol.clone(), field, reason };
            let find = |symbol: &str, field| {
                assets
                    .iter()
                    .find(|a| a.symbol == symbol)
                    .ok_or_else(|| value_error(field, format!("unknown asset {symbol}")))
            };
            let (base, quote) = (find(&m.base, "base")?, find(&m.quote, "quote")?);
            let parse = |field: &'static str, text: &str, decimals: u8| {
                parse_fixed(text, decimals).map_err(|e: DecimalError| value_error(field, e.to_string()))
            };
            let tick_size = parse("tick_size", &m.tick_size, quote.decimals)?;
            let lot_size = parse("step_size", &m.step_size, base.decimals)?;
            if tick_size == 0 || lot_size == 0 {
                return Err(value_error("tick_size/step_size", "must be positive".into()));
            }
            let in_units = |field: &'static str, amount: u64, unit: u64| {
                if amount % unit == 0 {
                    Ok(amount / unit)
                } else {
                    Err(value_error(field, "not a multiple of its increment".into()))
                }
            };
            markets.push(MarketConfig {
                id: MarketId::new(i as u32 + 1),
                symbol: m.symbol.clone(),
                base: base.id,
                quote: quote.id,
                tick_size,
                lot_size,
                min_quantity_lots: in_units(
                    "min_quantity",
                    parse("min_quantity", &m.min_quantity, base.decimals)?,
                    lot_size,
                )?,
                max_quantity_lots: in_units(
                    "max_quantity",
                    parse("max_quantity", &m.max_quantity, base.decimals)?,
                    lot_size,
                )?,
                max_price_ticks: in_units("max_price", parse("max_price", &m.max_price, quote.decimals)?, tick_size)?,
                min_notional: parse("min_notional", &m.min_notional, quote.decimals)?,
                maker_fee_ppm: m.maker_fee_ppm,
                taker_fee_ppm: m.taker_fee_ppm,
            });
        }
        let config = EngineConfig {
            assets,
            markets,
            limits: EngineLimits {
                orders_per_market_max: self.engine.orders_per_market_max,
                open_orders_per_user_max: self.engine.open_orders_per_user_max,
                accounts_expected: 1 << 16,
            },
        };
        // Validate now so a bad file fails at start-up with a clear message.
        engine::Engine::new(&EngineConfig {
            limits: EngineLimits { orders_per_market_max: 1, ..config.limits },
            ..config.clone()
        })?;
        Ok(config)
    }

    /// The journal writer's settings.
    pub fn journal_config(&self) -> JournalConfig {
        JournalConfig {
            durability: match self.journal.durability {
                DurabilitySetting::Fsync => Durability::Fsync,
                DurabilitySetting::None => Durability::None,
            },
            segment_bytes_max: self.journal.segment_bytes,
        }
    }

    /// Journal directory.
    pub fn journal_dir(&self) -> PathBuf {
        self.data_dir.join("journal")
    }

    /// Snapshot directory.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_exact() {
        let config = Config::load(None).unwrap();
        let engine = config.engine_config().unwrap();
        let symbols: Vec<_> = engine.markets.iter().map(|m| m.symbol.as_str()).collect();
        assert_eq!(symbols, ["BTC_USDC", "ETH_USDC", "SOL_USDC"]);
        let btc = &engine.markets[0];
        assert_eq!((btc.tick_size, btc.lot_size), (100_000, 1_000), "0.1 USDC and 0.00001 BTC");
        assert!(btc.maker_fee_ppm <= btc.taker_fee_ppm);
    }

    #[test]
    fn inexact_sizes_and_unknown_keys_are_refused() {
        let text = DEFAULT_CONFIG.replace("tick_size = \"0.1\"", "tick_size = \"0.0000001\"");
        let config: Config = toml::from_str(&text).unwrap();
        let error = config.engine_config().unwrap_err().to_string();
        assert!(error.contains("tick_size"), "{error}");
        let text = format!("{DEFAULT_CONFIG}\nunknown_key = 1\n");
        assert!(toml::from_str::<Config>(&text).is_err());
    }
}
