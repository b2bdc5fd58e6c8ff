//! Server configuration: a TOML file (or the built-in default, [`DEFAULT_CONFIG`]), overridden by
//! environment variables and command-line flags (see `exchange --help`). Human units (decimal
//! strings for sizes and prices) are converted here, exactly, into the engine's integer units.

use codec::decimal::{DecimalError, parse_fixed};
use codec::{AssetId, MarketId};
use engine::doorbell::{IdlePolicy, IdleWait};
use engine::journal::{Durability, JournalConfig};
use engine::{AssetConfig, EngineConfig, EngineLimits, MarketConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The documented default configuration, used when no file is given.
pub const DEFAULT_CONFIG: &str = include_str!("../exchange.toml");

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of the journal and snapshots.
    pub data_dir: PathBuf,
    /// HTTP listener: metrics, REST and WebSocket.
    pub http: HttpSection,
    /// The WebSocket API on the HTTP port (defaults when absent).
    #[serde(default)]
    pub websocket: WebSocketSection,
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
    /// Registered users, sessions (JWT) and their API keys (gateway-json's user store).
    #[serde(default)]
    pub users: UsersSection,
    /// The admin API.
    #[serde(default)]
    pub admin: AdminSection,
    /// The trading page (docs/web.md).
    #[serde(default)]
    pub web: WebSection,
    /// Engine thread settings.
    pub engine: EngineSection,
    /// Journal settings.
    pub journal: JournalSection,
    /// Snapshot policy.
    pub snapshot: SnapshotSection,
    /// Kafka, Postgres and Redis sinks (all off by default).
    #[serde(default)]
    pub sinks: SinksSection,
    /// The replicated journal and failover (`durability = "replicated"`, `exchange standby`;
    /// docs/deployment.md, "Replicated journal and failover").
    #[serde(default)]
    pub cluster: ClusterSection,
    /// Assets, in id order.
    pub assets: Vec<AssetSection>,
    /// Markets, in id order (ids start at 1).
    pub markets: Vec<MarketSection>,
    /// AMM pools beside markets (docs/amm.md).
    #[serde(default)]
    pub pools: Vec<PoolSection>,
}

/// `[[pools]]`: a constant-product AMM pool beside a market's order book.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// Symbol of the market whose base and quote the pool holds.
    pub market: String,
    /// Swap fee, basis points of the amount paid in (at most 1000).
    pub fee_bps: u32,
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address to listen on, e.g. `127.0.0.1:8080`; port 0 picks a free port.
    pub listen: std::net::SocketAddr,
    /// Largest request body, bytes (a larger one is `413`).
    #[serde(default = "http_defaults::body_bytes_max")]
    pub body_bytes_max: usize,
    /// Sustained requests per second per client IP address (0: unlimited); over it `429`.
    #[serde(default = "http_defaults::ip_requests_per_second")]
    pub ip_requests_per_second: u32,
    /// Burst above the per-IP rate.
    #[serde(default = "http_defaults::ip_burst")]
    pub ip_burst: u32,
    /// Sustained signed requests per second per API key (0: unlimited); over it `429`.
    #[serde(default = "http_defaults::key_requests_per_second")]
    pub key_requests_per_second: u32,
    /// Burst above the per-key rate.
    #[serde(default = "http_defaults::key_burst")]
    pub key_burst: u32,
    /// Most simultaneous HTTP connections; one more is answered `503` and closed.
    #[serde(default = "http_defaults::connections_max")]
    pub connections_max: usize,
    /// Most simultaneous HTTP connections from one client IP address (0: only
    /// `connections_max`); one more is answered `429` and closed.
    #[serde(default = "http_defaults::connections_per_ip_max")]
    pub connections_per_ip_max: usize,
    /// A connection must deliver each complete request head within this many milliseconds of
    /// its start or its previous response, else it is closed (0: no limit).
    #[serde(default = "http_defaults::header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A connection on which no byte moves either way for this many milliseconds is closed
    /// (0: no limit). Keep it above `websocket.ping_interval_ms`.
    #[serde(default = "http_defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Threads of the HTTP server's runtime (REST, WebSocket, metrics), from 1 to
    /// [`HTTP_WORKER_THREADS_MAX`]. They parse requests, verify signatures and write answers:
    /// with more than one, signed REST requests are verified on several cores at once.
    #[serde(default = "http_defaults::worker_threads")]
    pub worker_threads: usize,
}

/// Most threads `[http] worker_threads` may ask for.
pub const HTTP_WORKER_THREADS_MAX: usize = 64;

impl HttpSection {
    /// The HTTP server's thread count ([`HttpSection::worker_threads`]), checked.
    ///
    /// # Errors
    /// A count outside 1 to [`HTTP_WORKER_THREADS_MAX`], said in the message.
    pub fn checked_worker_threads(&self) -> Result<usize, String> {
        let threads = self.worker_threads;
        if (1..=HTTP_WORKER_THREADS_MAX).contains(&threads) {
            Ok(threads)
        } else {
            Err(format!("http.worker_threads is {threads}: must be from 1 to {HTTP_WORKER_THREADS_MAX}"))
        }
    }

    /// The limits of the REST API.
    pub fn limits(&self) -> gateway_json::limits::HttpLimits {
        gateway_json::limits::HttpLimits {
            body_bytes_max: self.body_bytes_max,
            ip_requests_per_second: self.ip_requests_per_second,
            ip_burst: self.ip_burst,
            key_requests_per_second: self.key_requests_per_second,
            key_burst: self.key_burst,
            connections_max: self.connections_max,
            connections_per_ip_max: self.connections_per_ip_max,
            header_read_timeout: std::time::Duration::from_millis(self.header_read_timeout_ms),
            idle_timeout: std::time::Duration::from_millis(self.idle_timeout_ms),
        }
    }
}

/// Defaults of the `[http]` limits (those of [`gateway_json::limits::HttpLimits`]), so that
/// configuration files written before the limits existed still load.
mod http_defaults {
    use gateway_json::limits::HttpLimits;

    /// One thread: what the server always ran before the setting existed.
    pub(super) fn worker_threads() -> usize {
        1
    }

    pub(super) fn body_bytes_max() -> usize {
        HttpLimits::default().body_bytes_max
    }
    pub(super) fn ip_requests_per_second() -> u32 {
        HttpLimits::default().ip_requests_per_second
    }
    pub(super) fn ip_burst() -> u32 {
        HttpLimits::default().ip_burst
    }
    pub(super) fn key_requests_per_second() -> u32 {
        HttpLimits::default().key_requests_per_second
    }
    pub(super) fn key_burst() -> u32 {
        HttpLimits::default().key_burst
    }
    pub(super) fn connections_max() -> usize {
        HttpLimits::default().connections_max
    }
    pub(super) fn connections_per_ip_max() -> usize {
        HttpLimits::default().connections_per_ip_max
    }
    pub(super) fn header_read_timeout_ms() -> u64 {
        HttpLimits::default().header_read_timeout.as_millis() as u64
    }
    pub(super) fn idle_timeout_ms() -> u64 {
        HttpLimits::default().idle_timeout.as_millis() as u64
    }
}

/// `[websocket]`: the WebSocket API (served on the HTTP port, docs/websocket-api.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketSection {
    /// Server ping interval, ms (Backpack: 60000).
    pub ping_interval_ms: u64,
    /// A ping unanswered this long closes the connection, ms (Backpack: 120000).
    pub pong_timeout_ms: u64,
    /// Streams per connection.
    pub subscriptions_max: usize,
    /// Open connections per client IP address.
    pub connections_per_ip: usize,
    /// Largest inbound message, bytes.
    pub message_bytes_max: usize,
    /// Sustained inbound messages per second per connection.
    pub messages_per_second: u32,
    /// Inbound burst allowance, messages.
    pub burst: u32,
    /// Limit violations tolerated before a connection is closed.
    pub strikes_max: u32,
    /// Frames a connection may have queued before it lags.
    pub queue_frames: usize,
    /// What a lagging connection gets: `resync` (lag notice, depth snapshot, diffs) or
    /// `disconnect` (closed with a reason).
    pub lag_policy: LagPolicySetting,
    /// Resyncs a connection may have before it is closed.
    pub resyncs_max: u32,
}

/// `websocket.lag_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LagPolicySetting {
    /// Lag notice, then a depth snapshot and diffs again.
    Resync,
    /// Close with a reason.
    Disconnect,
}

impl Default for WebSocketSection {
    fn default() -> Self {
        let ws = gateway_json::WsConfig::default();
        let publisher = marketdata::PublisherConfig::default();
        Self {
            ping_interval_ms: ws.ping_interval.as_millis() as u64,
            pong_timeout_ms: ws.pong_timeout.as_millis() as u64,
            subscriptions_max: ws.subscriptions_max,
            connections_per_ip: ws.connections_per_ip,
            message_bytes_max: ws.message_bytes_max,
            messages_per_second: ws.messages_per_second,
            burst: ws.burst,
            strikes_max: ws.strikes_max,
            queue_frames: publisher.queue_frames,
            lag_policy: LagPolicySetting::Resync,
            resyncs_max: publisher.resyncs_max,
        }
    }
}

impl WebSocketSection {
    /// The endpoint's settings.
    pub fn ws_config(&self) -> gateway_json::WsConfig {
        gateway_json::WsConfig {
            ping_interval: std::time::Duration::from_millis(self.ping_interval_ms.max(1)),
            pong_timeout: std::time::Duration::from_millis(self.pong_timeout_ms.max(1)),
            subscriptions_max: self.subscriptions_max,
            connections_per_ip: self.connections_per_ip,
            message_bytes_max: self.message_bytes_max,
            messages_per_second: self.messages_per_second,
            burst: self.burst,
            strikes_max: self.strikes_max,
        }
    }

    /// The publisher's settings.
    pub fn publisher_config(&self) -> marketdata::PublisherConfig {
        marketdata::PublisherConfig {
            queue_frames: self.queue_frames.max(1),
            lag_policy: match self.lag_policy {
                LagPolicySetting::Resync => marketdata::LagPolicy::Resync,
                LagPolicySetting::Disconnect => marketdata::LagPolicy::Disconnect,
            },
            resyncs_max: self.resyncs_max,
            ..marketdata::PublisherConfig::default()
        }
    }
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
    /// Which threads serve the SBE sockets (docs/operations.md, "Wire-to-wire latency").
    #[serde(default)]
    pub io: BinaryIo,
    /// With `io = "thread"`: the core to pin the I/O thread to; none: not pinned.
    #[serde(default)]
    pub io_core: Option<usize>,
}

/// `[binary] io`: which threads serve the SBE gateway's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BinaryIo {
    /// A tokio task per connection and a dispatcher thread (four thread hand-offs per order).
    #[default]
    Tokio,
    /// One dedicated I/O thread (epoll) that reads, validates, pushes to the engine and also
    /// routes and writes the answers (two hand-offs per order).
    Thread,
}

impl BinaryIo {
    /// The gateway's setting.
    pub fn mode(self) -> gateway_binary::IoMode {
        match self {
            BinaryIo::Tokio => gateway_binary::IoMode::Tokio,
            BinaryIo::Thread => gateway_binary::IoMode::Thread,
        }
    }
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
    /// Which threads serve the FIX sockets (docs/operations.md, "FIX gateway threads").
    #[serde(default)]
    pub io: FixIo,
    /// With `io = "thread"`: the core to pin the I/O thread to; none: not pinned.
    #[serde(default)]
    pub io_core: Option<usize>,
}

/// `[fix] io`: which threads serve the FIX gateway's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FixIo {
    /// A tokio task per connection and per writer, a dispatcher thread and a store syncer
    /// thread (five thread hand-offs per order).
    #[default]
    Tokio,
    /// One dedicated I/O thread (epoll) that reads, runs the sessions, pushes to the engine, and
    /// also routes the engine's events, writes the session stores and the answers (two
    /// hand-offs per order).
    Thread,
}

impl FixIo {
    /// The gateway's setting.
    pub fn mode(self) -> gateway_fix::IoMode {
        match self {
            FixIo::Tokio => gateway_fix::IoMode::Tokio,
            FixIo::Thread => gateway_fix::IoMode::Thread,
        }
    }
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

/// `[users]`: the user store (records under `<data_dir>/users/`) and session tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsersSection {
    /// HS256 secret of session tokens (JWT); empty: a random secret per process, so every
    /// session ends when the server restarts. Overridden by `EXCHANGE_JWT_SECRET`.
    pub jwt_secret: String,
    /// Session token lifetime, seconds.
    pub jwt_ttl_seconds: u64,
    /// Smallest id a registered user gets; raised above every configured user id. The load-test
    /// range (1,000,001..=1,999,999) is skipped.
    pub first_user_id: u64,
    /// Shortest password.
    pub password_min_length: usize,
    /// Login attempts per username in a burst; one more every `login_refill_seconds`.
    pub login_burst_per_user: u32,
    /// Login and registration attempts per client IP in a burst.
    pub login_burst_per_ip: u32,
    /// Seconds to regain one attempt.
    pub login_refill_seconds: u64,
}

impl Default for UsersSection {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            jwt_ttl_seconds: 900,
            first_user_id: 10_000,
            password_min_length: 8,
            login_burst_per_user: 10,
            login_burst_per_ip: 30,
            login_refill_seconds: 6,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Bearer token of the admin API; empty: the admin API is off. Overridden by
    /// `EXCHANGE_ADMIN_TOKEN`.
    pub token: String,
}

impl Config {
    /// The largest user id named by the configuration (`[[api_keys]]`, `[[fix_sessions]]`).
    pub fn configured_user_id_max(&self) -> u64 {
        let keys = self.api_keys.iter().map(|key| key.user_id);
        keys.chain(self.fix_sessions.iter().map(|session| session.user_id)).max().unwrap_or(0)
    }

    /// The user store's directory.
    pub fn users_dir(&self) -> PathBuf {
        self.data_dir.join("users")
    }
}

/// How the engine thread and the gateways' dispatchers wait when their ring is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum IdleStrategy {
    /// Spin on the ring: lowest latency, burns a whole core per thread. Only with cores to spare.
    BusySpin,
    /// Spin for `idle_spin_us`, then park until a producer rings (no fixed nap): the default, and
    /// the one for small machines.
    SpinPark,
    /// Park as soon as the ring is empty: least CPU, a wake-up on every message.
    Park,
    /// The strategy before the doorbell (spin, yield, then fixed naps of 20 µs for the engine
    /// and 50 µs for the dispatchers), kept only to measure against (docs/benchmarks.md).
    SpinYield,
}

impl IdleStrategy {
    /// The engine thread's policy (`spin` is `idle_spin_us`).
    pub fn engine_policy(self, spin: Duration) -> IdlePolicy {
        self.policy(spin, Duration::from_micros(20))
    }

    /// The dispatchers' policy.
    pub fn consumer_policy(self, spin: Duration) -> IdlePolicy {
        self.policy(spin, Duration::from_micros(50))
    }

    fn policy(self, spin: Duration, nap: Duration) -> IdlePolicy {
        match self {
            IdleStrategy::BusySpin => IdlePolicy::Wait(IdleWait::busy_spin()),
            IdleStrategy::SpinPark => IdlePolicy::Wait(IdleWait::spin_then_park(spin)),
            IdleStrategy::Park => IdlePolicy::Wait(IdleWait::spin_then_park(Duration::ZERO)),
            IdleStrategy::SpinYield => IdlePolicy::Nap { nap },
        }
    }
}

fn idle_spin_us_default() -> u64 {
    engine::doorbell::SPIN_DEFAULT.as_micros() as u64
}

/// `[engine]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// Core to pin the engine thread to; none: not pinned.
    pub core: Option<usize>,
    /// Idle strategy.
    pub idle: IdleStrategy,
    /// With `spin-park`: how long a thread spins on its empty ring before it parks, µs.
    #[serde(default = "idle_spin_us_default")]
    pub idle_spin_us: u64,
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
    /// Every batch also appended to the Kafka journal topic (`[cluster]`) and acknowledged only
    /// once Kafka has it (`acks=all`); the local journal is `fdatasync`ed too only with
    /// `cluster.local_fsync`. The node takes the lease before serving.
    Replicated,
}

/// `[cluster]`: the replicated journal topic, the leadership lease, failover timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Bootstrap brokers, `host:port,…` (needed by `replicated` and `exchange standby`).
    pub brokers: String,
    /// The authoritative log: one Kafka record per group commit, one partition.
    pub journal_topic: String,
    /// One-partition topic whose consumer group elects the primary.
    pub lease_topic: String,
    /// The consumer group of the lease.
    pub lease_group: String,
    /// The group coordinator's session timeout: how long a dead primary keeps the lease.
    pub session_timeout_ms: u64,
    /// How long the engine waits for Kafka to take one batch before it stops (unacknowledged).
    pub delivery_timeout_ms: u64,
    /// Also `fdatasync` the local journal of each batch (with `durability = "replicated"`).
    pub local_fsync: bool,
    /// Replication factor of the topics the node creates (3 in production, 1 on one broker).
    pub replication: i32,
    /// The topic gateway processes (`exchange gateway`) send commands through; the replicated
    /// primary consumes it (docs/deployment.md, "Gateway processes").
    pub commands_topic: String,
    /// Partitions of the commands topic when a node creates it (records are keyed by gateway id,
    /// so one gateway's commands stay in order).
    pub commands_partitions: i32,
    /// This gateway process's id (`exchange gateway`; non-zero, unique among gateways).
    pub gateway_id: u64,
    /// The shared user directory: the replicated primary appends every user, API key and
    /// revocation here before answering; gateway processes follow it and a promoted standby reads
    /// it (one partition; docs/deployment.md, "User directory").
    pub users_topic: String,
    /// The primary publishes its state hash at every multiple of this sequence (a `checkpoint`
    /// record) and standbys compare theirs (0: never).
    pub checkpoint_every: u64,
    /// The topic standbys publish their snapshots to and nodes without a local snapshot start
    /// from (one partition; empty: snapshots are neither published nor read; docs/deployment.md,
    /// "Topics").
    pub snapshot_topic: String,
    /// `retention.ms` of the snapshot topic when a node creates it: a few snapshot intervals.
    pub snapshot_retention_ms: u64,
}

/// Default [`ClusterSection::snapshot_retention_ms`]: one day.
pub const CLUSTER_SNAPSHOT_RETENTION_MS_DEFAULT: u64 = 86_400_000;

/// Default [`ClusterSection::checkpoint_every`].
pub const CLUSTER_CHECKPOINT_EVERY_DEFAULT: u64 = 100_000;

/// Default [`ClusterSection::session_timeout_ms`].
pub const CLUSTER_SESSION_TIMEOUT_MS_DEFAULT: u64 = 3_000;
/// Default [`ClusterSection::delivery_timeout_ms`].
pub const CLUSTER_DELIVERY_TIMEOUT_MS_DEFAULT: u64 = 10_000;

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            journal_topic: "exchange.journal".into(),
            lease_topic: "exchange.lease".into(),
            lease_group: "exchange.primary".into(),
            session_timeout_ms: CLUSTER_SESSION_TIMEOUT_MS_DEFAULT,
            delivery_timeout_ms: CLUSTER_DELIVERY_TIMEOUT_MS_DEFAULT,
            local_fsync: false,
            replication: 1,
            commands_topic: "exchange.commands".into(),
            commands_partitions: 4,
            gateway_id: 0,
            users_topic: "exchange.users".into(),
            checkpoint_every: CLUSTER_CHECKPOINT_EVERY_DEFAULT,
            snapshot_topic: "exchange.snapshots".into(),
            snapshot_retention_ms: CLUSTER_SNAPSHOT_RETENTION_MS_DEFAULT,
        }
    }
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
    /// Commands the snapshot feed (engine thread → snapshotter) holds. The engine thread never
    /// waits on it: when it is full the snapshotter reads the missing commands from the journal.
    #[serde(default = "default_snapshot_feed_commands")]
    pub feed_commands: usize,
}

/// Default [`SnapshotSection::feed_commands`]: a full second of commands at 65k/s, what a large
/// snapshot takes to write, in about 6 MB.
pub const SNAPSHOT_FEED_COMMANDS_DEFAULT: usize = 1 << 16;

fn default_snapshot_feed_commands() -> usize {
    SNAPSHOT_FEED_COMMANDS_DEFAULT
}

/// `[sinks]`: each sink is on when its subsection is present (or its environment variable set).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksSection {
    /// `[sinks.postgres]`.
    pub postgres: Option<PostgresSinkSection>,
    /// `[sinks.kafka]`.
    pub kafka: Option<KafkaSinkSection>,
    /// `[sinks.redis]`.
    pub redis: Option<RedisSinkSection>,
}

/// `[sinks.postgres]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkSection {
    /// `postgres://user[:password]@host:port/database`.
    pub url: String,
}

/// `[sinks.kafka]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkSection {
    /// Bootstrap brokers, `host:port,…`.
    pub brokers: String,
    /// Order lifecycle topic.
    #[serde(default = "default_orders_topic")]
    pub orders_topic: String,
    /// Trades topic.
    #[serde(default = "default_trades_topic")]
    pub trades_topic: String,
    /// Balance events topic.
    #[serde(default = "default_balances_topic")]
    pub balances_topic: String,
    /// Book level updates topic.
    #[serde(default = "default_book_topic")]
    pub book_topic: String,
    /// AMM pool events topic.
    #[serde(default = "default_pools_topic")]
    pub pools_topic: String,
    /// Partitions of the topics the sink creates.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of the topics the sink creates.
    #[serde(default = "default_replication")]
    pub replication: i32,
}

impl KafkaSinkSection {
    /// The default topics on `brokers`.
    pub fn new(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
            orders_topic: default_orders_topic(),
            trades_topic: default_trades_topic(),
            balances_topic: default_balances_topic(),
            book_topic: default_book_topic(),
            pools_topic: default_pools_topic(),
            partitions: default_partitions(),
            replication: default_replication(),
        }
    }
}

fn default_orders_topic() -> String {
    "orders".into()
}
fn default_trades_topic() -> String {
    "trades".into()
}
fn default_balances_topic() -> String {
    "balance-events".into()
}
fn default_book_topic() -> String {
    "book-updates".into()
}
fn default_pools_topic() -> String {
    "amm-events".into()
}
fn default_partitions() -> i32 {
    3
}
fn default_replication() -> i32 {
    1
}

/// `[sinks.redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkSection {
    /// `redis://host:port/db`.
    pub url: String,
    /// Key prefix.
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
    /// Book levels per side.
    #[serde(default = "default_redis_depth")]
    pub depth: usize,
    /// Last trades kept per market (a replica misses trades when more than this happen in one
    /// market between two writes).
    #[serde(default = "default_redis_trades")]
    pub trades: usize,
    /// Milliseconds between snapshots.
    #[serde(default = "default_redis_interval")]
    pub interval_ms: u64,
}

impl RedisSinkSection {
    /// Defaults for `url`.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            prefix: default_redis_prefix(),
            depth: default_redis_depth(),
            trades: default_redis_trades(),
            interval_ms: default_redis_interval(),
        }
    }
}

fn default_redis_prefix() -> String {
    "exchange:".into()
}
fn default_redis_depth() -> usize {
    50
}
fn default_redis_trades() -> usize {
    500
}
fn default_redis_interval() -> u64 {
    500
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
    /// Price band: highest allowed price as a multiple of the reference price, in parts per
    /// million (e.g. 1100000 for 1.1×); with `price_band_min_multiplier_ppm`, both 0 (the
    /// default when omitted) for no band. The shipped exchange.toml sets ±10% on every market.
    /// See the engine's `bands` module.
    #[serde(default)]
    pub price_band_max_multiplier_ppm: u32,
    /// Price band: lowest allowed price as a multiple of the reference price, in ppm (e.g.
    /// 900000 for 0.9×).
    #[serde(default)]
    pub price_band_min_multiplier_ppm: u32,
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
                price_band: engine::PriceBand {
                    max_multiplier_ppm: m.price_band_max_multiplier_ppm,
                    min_multiplier_ppm: m.price_band_min_multiplier_ppm,
                },
            });
        }
        let mut pools = Vec::new();
        for pool in &self.pools {
            let market = markets.iter().find(|m| m.symbol == pool.market).ok_or_else(|| ConfigError::Value {
                market: pool.market.clone(),
                field: "pools.market",
                reason: "unknown market".into(),
            })?;
            pools.push(engine::PoolConfig { market_id: market.id, fee_bps: pool.fee_bps });
        }
        let config = EngineConfig {
            assets,
            markets,
            pools,
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
                DurabilitySetting::Replicated if self.cluster.local_fsync => Durability::Fsync,
                DurabilitySetting::Replicated => Durability::None,
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
        let pools: Vec<_> = engine.pools.iter().map(|p| (p.market_id.get(), p.fee_bps)).collect();
        assert_eq!(pools, [(2, 30), (3, 30)], "pools beside ETH_USDC and SOL_USDC");
        // Every shipped market has a price band (±10% of the reference price), issue #20.
        for market in &engine.markets {
            let band = engine::PriceBand { max_multiplier_ppm: 1_100_000, min_multiplier_ppm: 900_000 };
            assert_eq!(market.price_band, band, "{}", market.symbol);
        }
    }

    /// `[binary] io` defaults to tokio (also when absent), takes "thread" with a core, and
    /// refuses anything else.
    #[test]
    fn the_sbe_io_mode_is_configurable() {
        let config = Config::load(None).unwrap();
        assert_eq!((config.binary.io, config.binary.io_core), (BinaryIo::Tokio, None));
        let absent: Config = toml::from_str(&DEFAULT_CONFIG.replace("io = \"tokio\"\n", "")).unwrap();
        assert_eq!(absent.binary.io, BinaryIo::Tokio);
        let thread: Config =
            toml::from_str(&DEFAULT_CONFIG.replace("io = \"tokio\"\n", "io = \"thread\"\nio_core = 1\n")).unwrap();
        assert_eq!((thread.binary.io.mode(), thread.binary.io_core), (gateway_binary::IoMode::Thread, Some(1)));
        assert!(toml::from_str::<Config>(&DEFAULT_CONFIG.replace("io = \"tokio\"", "io = \"uring\"")).is_err());
    }

    #[test]
    fn pools_on_unknown_markets_are_refused() {
        let text = DEFAULT_CONFIG.replace("market = \"SOL_USDC\"", "market = \"DOGE_USDC\"");
        let config: Config = toml::from_str(&text).unwrap();
        let error = config.engine_config().unwrap_err().to_string();
        assert!(error.contains("DOGE_USDC"), "{error}");
        let text = DEFAULT_CONFIG.replace("fee_bps = 30", "fee_bps = 5000");
        let config: Config = toml::from_str(&text).unwrap();
        assert!(config.engine_config().is_err());
    }

    /// `[http] worker_threads`: 1 by default and when absent; 0 and above the maximum refused.
    #[test]
    fn http_worker_threads_are_checked() {
        let threads = |text: &str| toml::from_str::<Config>(text).unwrap().http.checked_worker_threads();
        assert_eq!(threads(DEFAULT_CONFIG), Ok(1), "one HTTP thread unless configured");
        assert_eq!(threads(&DEFAULT_CONFIG.replace("worker_threads = 1", "worker_threads = 2")), Ok(2));
        let without = DEFAULT_CONFIG.replace("worker_threads = 1\n", "");
        assert_ne!(without, DEFAULT_CONFIG);
        assert_eq!(threads(&without), Ok(1), "files written before the setting still load");
        for refused in [0, HTTP_WORKER_THREADS_MAX + 1] {
            let text = DEFAULT_CONFIG.replace("worker_threads = 1", &format!("worker_threads = {refused}"));
            assert!(threads(&text).unwrap_err().contains("must be from 1 to"), "{refused}");
        }
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
