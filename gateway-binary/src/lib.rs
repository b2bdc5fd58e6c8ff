//! SBE binary order entry over TCP: the lowest-latency way into the exchange.
//!
//! Clients send SBE messages of `codec/schema/exchange.xml`, each framed by a Simple Open Framing
//! Header. The session layer (a FIXP-like recoverable flow, documented in
//! docs/binary-protocol.md):
//!
//! 1. `Negotiate { api_key }` → `NegotiateResponse { server_nonce }`;
//! 2. `Establish { signature over "exchange-binary-logon-v1" ‖ nonce ‖ api_key, keep_alive_ms,
//!    next_expected_sequence }` → `EstablishAck { user_id, next_sequence, next_expected_sequence }`
//!    or `Terminate { Unauthenticated }`;
//! 3. application messages: the order-entry commands (`NewOrder`, `CancelOrder`, `CancelReplace`,
//!    `MassCancel`) in, implicitly numbered from 1 per session; the engine events about the
//!    session's orders (`OrderAccepted`, `OrderRejected`, `Fill`, `OrderCanceled`, `OrderExpired`,
//!    `OrderReplaced`, `MassCancelReport`) and `BusinessReject` out, implicitly numbered too;
//! 4. `SequenceHeartbeat` both ways when idle; `RetransmitRequest` replays outbound messages from
//!    a kept window; `Terminate` ends the session with a reason.
//!
//! The session (its sequence numbers and outbound window) belongs to the API key and outlives a
//! connection, so a client that reconnects can ask for what it missed. Everything the gateway
//! checks happens before the ingress ring: frame bounds, encoding type, schema and template,
//! enum fields, the per-session rate limit, client-order-id idempotency; the user id is always
//! the session's, never the message's.

mod dispatch;
mod io_thread;
mod logon_verifier;
pub mod recent_ids;
pub mod session;
mod throttle;

pub mod client;

use codec::{PublicKey, UserId};
use engine::bus::{BroadcastRing, IngressRing};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use logon_verifier::LOGON_VERIFICATIONS_PENDING_MAX;
pub use throttle::TokenBucket;

/// The text signed at logon, before the server nonce and the API key.
pub const LOGON_CONTEXT: &[u8] = b"exchange-binary-logon-v1";
/// Bounds on the keep-alive interval a client may ask for, milliseconds.
pub const KEEP_ALIVE_MS_MIN: u32 = 500;
/// Upper bound of the keep-alive interval.
pub const KEEP_ALIVE_MS_MAX: u32 = 60_000;
/// Most messages one retransmission may carry.
pub const RETRANSMIT_COUNT_MAX: u32 = 10_000;

/// Which threads serve the sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// A tokio task per connection (reader) and per writer, with a dispatcher thread routing
    /// the egress ring to them: four thread hand-offs from a request to its answer.
    #[default]
    Tokio,
    /// One dedicated thread owns every socket (epoll through mio) and is also the dispatcher:
    /// it reads, validates and pushes to the ingress ring, then routes the egress ring and
    /// writes the answers itself; two hand-offs (to the engine and back). Logon signatures are
    /// checked on a verifier thread beside it, so a burst of logons does not hold the sessions'
    /// orders (at most [`LOGON_VERIFICATIONS_PENDING_MAX`] pending).
    Thread,
}

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Most simultaneous connections.
    pub connections_max: usize,
    /// Sustained application messages per second per session.
    pub messages_per_second: u32,
    /// Burst above the sustained rate.
    pub burst: u32,
    /// Throttled messages in a row after which the session is terminated.
    pub throttle_strikes_max: u32,
    /// Outbound application messages kept per session for retransmission.
    pub retransmit_window: usize,
    /// Outbound messages queued per connection before it counts as a slow consumer.
    pub outbound_queue_max: usize,
    /// Client order ids remembered per session for idempotency (at most
    /// [`recent_ids::REMEMBERED_MAX`], 2^30).
    pub client_order_ids_remembered: usize,
    /// Which threads serve the sockets.
    pub io: IoMode,
    /// Under [`IoMode::Thread`]: the core to pin the I/O thread to (none: not pinned).
    pub io_core: Option<usize>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            connections_max: 1_024,
            messages_per_second: 10_000,
            burst: 1_000,
            throttle_strikes_max: 1_000,
            retransmit_window: 100_000,
            outbound_queue_max: 65_536,
            client_order_ids_remembered: 1 << 20,
            io: IoMode::Tokio,
            io_core: None,
        }
    }
}

/// API keys and the users they log on as. Shared, so keys can be added while running.
#[derive(Debug, Default)]
pub struct Credentials {
    keys: RwLock<HashMap<[u8; 32], UserId>>,
}

impl Credentials {
    /// Registers a key for a user (replacing any earlier owner).
    pub fn insert(&self, key: PublicKey, user_id: UserId) {
        self.keys.write().unwrap_or_else(|e| e.into_inner()).insert(key.0, user_id);
    }

    /// Removes a key.
    pub fn revoke(&self, key: &PublicKey) {
        self.keys.write().unwrap_or_else(|e| e.into_inner()).remove(&key.0);
    }

    /// The user of a key.
    pub fn user_of(&self, key: &PublicKey) -> Option<UserId> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).get(&key.0).copied()
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Connections open now.
    pub connections: AtomicU64,
    /// Sessions established since start.
    pub logons: AtomicU64,
    /// Logons refused.
    pub logon_failures: AtomicU64,
    /// Logon signatures handed to the verifier thread and not yet answered
    /// ([`IoMode::Thread`]; always 0 under [`IoMode::Tokio`], which checks them inline).
    pub logon_verifications_pending: AtomicU64,
    /// Commands put on the ingress ring.
    pub commands: AtomicU64,
    /// Business rejects sent.
    pub business_rejects: AtomicU64,
    /// Commands refused because the ingress ring was full.
    pub ingress_busy: AtomicU64,
}

/// Everything a session task shares with the others and the dispatcher.
pub(crate) struct Shared {
    pub config: GatewayConfig,
    pub credentials: Arc<Credentials>,
    pub ingress: Arc<IngressRing>,
    pub sessions: Mutex<HashMap<[u8; 32], Arc<Mutex<session::SessionState>>>>,
    /// Session id → API key, for routing by origin.
    pub session_keys: Mutex<HashMap<u64, [u8; 32]>>,
    pub next_session_id: AtomicU64,
    pub stats: Arc<GatewayStats>,
    pub stopping: AtomicBool,
}

/// A running gateway.
pub struct BinaryGateway {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    /// The dispatcher thread ([`IoMode::Tokio`]) or the I/O thread ([`IoMode::Thread`]).
    dispatcher: Option<std::thread::JoinHandle<()>>,
    /// Under [`IoMode::Thread`]: wakes the I/O thread (to notice a shutdown), and is rung by
    /// the egress ring while that thread is parked.
    io_waker: Option<(Arc<engine::reactor::IoWaker>, Arc<BroadcastRing>)>,
}

impl BinaryGateway {
    /// Binds the listener and starts serving as `config.io` says: under [`IoMode::Tokio`] the
    /// dispatcher thread (egress → sessions) and the accept loop on the current tokio runtime;
    /// under [`IoMode::Thread`] the I/O thread alone (no runtime needed).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn start(
        config: GatewayConfig,
        credentials: Arc<Credentials>,
        ingress: Arc<IngressRing>,
        egress: &Arc<BroadcastRing>,
    ) -> std::io::Result<Self> {
        if config.io == IoMode::Thread {
            return Self::start_io_thread(config, credentials, ingress, egress);
        }
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let shared = Self::shared(config, credentials, ingress, 1);
        // Gating: the engine waits for this dispatcher rather than lapping it (it never waits for
        // the engine, and cuts a session whose own queue is full instead of stalling).
        let consumer = egress.subscribe_gating();
        let dispatcher = {
            let shared = shared.clone();
            std::thread::Builder::new().name("binary-dispatch".into()).spawn(move || dispatch::run(shared, consumer))?
        };
        tokio::spawn(session::accept_loop(listener, shared.clone()));
        tracing::info!(listen = %local_addr, "binary gateway listening");
        Ok(Self { shared, local_addr, dispatcher: Some(dispatcher), io_waker: None })
    }

    /// [`Self::start`] under [`IoMode::Thread`].
    fn start_io_thread(
        config: GatewayConfig,
        credentials: Arc<Credentials>,
        ingress: Arc<IngressRing>,
        egress: &Arc<BroadcastRing>,
    ) -> std::io::Result<Self> {
        let engine::reactor::Listening { poll, listener, local_addr, waker } = engine::reactor::listen(config.listen)?;
        let io_core = config.io_core;
        // Connection ids are the sockets' poll tokens: they start above the reserved ones.
        let shared = Self::shared(config, credentials, ingress, engine::reactor::FIRST_CONNECTION_ID);
        // Gating, as the tokio mode's dispatcher (see there).
        let consumer = egress.subscribe_gating();
        egress.add_waker(waker.clone()).map_err(std::io::Error::other)?;
        // Logon signatures are checked on a thread of their own, off the I/O thread.
        let verifier = logon_verifier::LogonVerifier::start(waker.clone(), shared.stats.clone())?;
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new().name("binary-io".into()).spawn(move || {
                if let Some(core) = io_core {
                    let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core });
                    tracing::info!(core, pinned, "binary gateway I/O thread pinned");
                }
                io_thread::run(shared, poll, listener, consumer, verifier);
            })?
        };
        tracing::info!(listen = %local_addr, "binary gateway listening (I/O thread)");
        Ok(Self { shared, local_addr, dispatcher: Some(thread), io_waker: Some((waker, egress.clone())) })
    }

    fn shared(
        config: GatewayConfig,
        credentials: Arc<Credentials>,
        ingress: Arc<IngressRing>,
        first_id: u64,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            config,
            credentials,
            ingress,
            sessions: Mutex::new(HashMap::new()),
            session_keys: Mutex::new(HashMap::new()),
            next_session_id: AtomicU64::new(first_id),
            stats: Arc::new(GatewayStats::default()),
            stopping: AtomicBool::new(false),
        })
    }

    /// Tells the serving threads to stop (and wakes the I/O thread if it is parked).
    fn signal_stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        if let Some((waker, _)) = &self.io_waker {
            engine::doorbell::Waker::wake(&**waker);
        }
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters.
    pub fn stats(&self) -> Arc<GatewayStats> {
        self.shared.stats.clone()
    }

    /// Stops accepting, tells connected clients `Terminate(ServerShutdown)`, stops the
    /// dispatcher.
    pub fn shutdown(mut self) {
        self.signal_stop();
        if let Some(dispatcher) = self.dispatcher.take() {
            let _ = dispatcher.join();
        }
        // Give session tasks a moment to send their Terminate.
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for BinaryGateway {
    fn drop(&mut self) {
        self.signal_stop();
        if let Some((waker, egress)) = self.io_waker.take() {
            let waker: Arc<dyn engine::doorbell::Waker> = waker;
            egress.remove_waker(&waker);
        }
    }
}
