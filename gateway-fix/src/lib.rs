//! FIX 4.4 and FIXT.1.1 / FIX 5.0 SP2 order-entry acceptor over TCP.
//!
//! Standard FIX engines (QuickFIX, QuickFIX/J, Artio, OnixS) connect as initiators and trade
//! through the same engine as the other gateways. The layers, outermost first:
//!
//! 1. [`parser`]: a zero-copy tag=value parser over the receive buffer. Garbled input
//!    (BeginString, BodyLength, MsgType not the first three fields; wrong BodyLength or CheckSum)
//!    is skipped without consuming a sequence number; a message is at most
//!    [`parser::MESSAGE_BYTES_MAX`] bytes of body.
//! 2. The session layer (`session`): an explicit state machine per connection
//!    (`AwaitLogon → Active`, either ending the connection after a Logout or on an error) over a
//!    persistent per-session state (sequence numbers,
//!    outbound store, rate limit). Logon is checked against the configured [`SessionConfig`]s
//!    (CompIDs and an Ed25519 key, see [`logon_payload`]); heartbeats, test requests, gap
//!    detection with ResendRequest, resends with PossDup and GapFill, SequenceReset, session
//!    Reject with SessionRejectReason, Logout.
//! 3. The application layer (`app`): NewOrderSingle, OrderCancelRequest,
//!    OrderCancelReplaceRequest and OrderMassCancelRequest become the codec's fixed-layout
//!    commands on the engine's ingress ring (prices and quantities converted exactly to ticks and
//!    lots); the dispatcher (`dispatch`) turns the engine's events into ExecutionReport,
//!    OrderCancelReject and OrderMassCancelReport for the session that placed the order.
//!
//! Invariants: the user of every command is the session's configured user, never the message's;
//! every outbound sequenced message is written to the session's store before it is written to the
//! socket, and under `Durability::Fsync` also synced (see `store`: the syncer thread writes each
//! session's batch and `fsync`s it once, or under `Durability::None` not at all, then hands it to
//! the connection, so neither the dispatcher nor a connection task waits on the disk); a
//! session answers in the BeginString of its Logon and ends on any other; a message is processed only when its MsgSeqNum is the next expected one
//! (lower: duplicate or fatal; higher: ResendRequest); one connection per session at a time.
//!
//! Threads ([`IoMode`]): a tokio task per connection with a dispatcher thread and a syncer
//! thread, or one I/O thread (`io_thread`) that serves every socket and is also the dispatcher and,
//! under `Durability::None`, the syncer (under `Fsync` the syncer thread stays and hands the
//! durable messages back). The session logic (`session::Inbound`) is the same in both.
//!
//! The full rules, tags and configuration are in docs/fix.md.

mod app;
mod dispatch;
pub mod encoder;
mod io_thread;
pub mod parser;
mod session;
pub mod store;
mod throttle;

use codec::{MarketId, OrderId, Side, UserId};
use engine::EngineConfig;
use engine::bus::{BroadcastRing, IngressRing};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use throttle::TokenBucket;

/// The bytes a client signs at logon: `SendingTime(52) ‖ SOH ‖ MsgSeqNum(34) ‖ SOH ‖
/// SenderCompID(49) ‖ SOH ‖ TargetCompID(56)`, each exactly as it appears in the Logon message.
/// Username(553) carries the base64 (standard alphabet, padded) Ed25519 public key and
/// Password(554) the base64 signature of these bytes.
pub fn logon_payload(sending_time: &[u8], msg_seq_num: &[u8], sender_comp_id: &[u8], target_comp_id: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(sending_time.len() + msg_seq_num.len() + 64);
    for (i, part) in [sending_time, msg_seq_num, sender_comp_id, target_comp_id].into_iter().enumerate() {
        if i > 0 {
            payload.push(parser::SOH);
        }
        payload.extend_from_slice(part);
    }
    payload
}

/// One FIX session the gateway accepts: a CompID pair and the credentials of its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The client's SenderCompID(49) (our TargetCompID). Letters, digits, `_`, `-`, `.`.
    pub sender_comp_id: String,
    /// The client's TargetCompID(56): the gateway's own CompID for this session.
    pub target_comp_id: String,
    /// The user every order of the session belongs to.
    pub user_id: UserId,
    /// The Ed25519 public key the client proves at logon.
    pub public_key: [u8; 32],
}

/// Which threads serve the sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// A tokio task per connection (reader) and per writer, with a dispatcher thread routing
    /// the egress ring to the sessions and a syncer thread writing their stores: five thread
    /// hand-offs from a request to its answer.
    #[default]
    Tokio,
    /// One dedicated thread owns every socket (epoll through mio) and is also the dispatcher
    /// (and, under `Durability::None`, the syncer): it reads, runs the session logic and pushes
    /// to the ingress ring, then routes the egress ring and writes the answers itself; two
    /// hand-offs (to the engine and back). Under `Durability::Fsync` a syncer thread writes and
    /// syncs the stores and hands the durable messages back (waking this thread), so that it
    /// never waits for an `fdatasync`.
    Thread,
}

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory of the per-session stores (sequence numbers and outbound messages).
    pub store_dir: PathBuf,
    /// Whether the stores `fsync` each batch before its messages are sent (`Fsync`, the default:
    /// a power loss loses nothing the counterparty saw) or leave the writes to the page cache
    /// (`None`: a process crash loses nothing, a power loss can lose the log's tail; see
    /// docs/fix.md, "Persistence"). The exchange passes its `--durability`.
    pub durability: store::Durability,
    /// Most simultaneous connections (logged on or not).
    pub connections_max: usize,
    /// Sustained inbound messages per second per session.
    pub messages_per_second: u32,
    /// Burst above the sustained rate.
    pub burst: u32,
    /// Throttled messages in a row after which the session is logged out.
    pub throttle_strikes_max: u32,
    /// Outbound application messages kept per session (in memory and in the store) for
    /// resending; older ones are gap-filled, and the store is rewritten to this window (plus the
    /// open orders) whenever it holds more than twice that plus 64 records.
    pub resend_window: usize,
    /// Most messages one ResendRequest is answered with (the client asks again for the rest).
    pub resend_max: u64,
    /// Outbound messages queued per connection before it is cut as a slow consumer.
    pub outbound_queue_max: usize,
    /// ClOrdIDs of orders no longer open remembered per session, to name them in late reports
    /// (the ClOrdIDs of open orders are kept with the orders).
    pub cl_ord_ids_remembered: usize,
    /// Largest accepted difference between SendingTime(52) and the gateway's clock.
    pub sending_time_tolerance: Duration,
    /// Accepted HeartBtInt(108) range, seconds.
    pub heartbeat_seconds: std::ops::RangeInclusive<u32>,
    /// Time a connection has to log on.
    pub logon_timeout: Duration,
    /// Which threads serve the sockets.
    pub io: IoMode,
    /// Under [`IoMode::Thread`]: the core to pin the I/O thread to (none: not pinned).
    pub io_core: Option<usize>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9200)),
            store_dir: PathBuf::from("fix-store"),
            durability: store::Durability::Fsync,
            connections_max: 256,
            messages_per_second: 1_000,
            burst: 200,
            throttle_strikes_max: 100,
            resend_window: 100_000,
            resend_max: 10_000,
            outbound_queue_max: 65_536,
            cl_ord_ids_remembered: 1 << 18,
            sending_time_tolerance: Duration::from_secs(120),
            heartbeat_seconds: 1..=300,
            logon_timeout: Duration::from_secs(10),
            io: IoMode::Tokio,
            io_core: None,
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Listening or store files failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A session's CompIDs are empty, duplicated or contain characters outside `[A-Za-z0-9_.-]`.
    #[error("bad session configuration: {0}")]
    BadSession(String),
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Connections open now.
    pub connections: AtomicU64,
    /// Logons accepted since start.
    pub logons: AtomicU64,
    /// Logons refused.
    pub logon_failures: AtomicU64,
    /// Inbound messages parsed.
    pub messages_in: AtomicU64,
    /// Garbled inbound messages skipped.
    pub garbled: AtomicU64,
    /// Commands put on the ingress ring.
    pub commands: AtomicU64,
    /// Session Reject(3) sent.
    pub session_rejects: AtomicU64,
    /// BusinessMessageReject(j) sent.
    pub business_rejects: AtomicU64,
    /// Messages refused by the rate limit.
    pub throttled: AtomicU64,
    /// Commands refused because the ingress ring was full.
    pub ingress_busy: AtomicU64,
    /// ResendRequests received.
    pub resend_requests: AtomicU64,
    /// Batches of records appended to the session stores (each one write, and one `fsync` under
    /// `Durability::Fsync`).
    pub store_batches: AtomicU64,
    /// Rewrites of a session store's log (compactions and sequence resets).
    pub store_rewrites: AtomicU64,
    /// `fsync`/`fdatasync` calls made by the session stores: one per batch and three per
    /// rewrite under `Durability::Fsync`, none under `None`.
    pub store_syncs: AtomicU64,
}

/// An order open in the engine at start-up (resting, or a pending stop): what the gateway needs
/// to reconcile the open orders its session stores remember.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOrder {
    /// Exchange order id.
    pub order_id: OrderId,
    /// Owner.
    pub user_id: UserId,
    /// Market.
    pub market_id: MarketId,
    /// Limit price in ticks.
    pub price_ticks: u64,
    /// Order quantity in lots (filled part included).
    pub quantity_lots: u64,
    /// Filled so far, in lots.
    pub filled_lots: u64,
    /// The trigger price in ticks of a pending stop (not yet triggered); 0 for a resting order.
    pub stop_price_ticks: u64,
}

/// The engine's open orders at start-up (see [`FixGateway::start_after_recovery`]).
#[derive(Debug, Clone, Default)]
pub struct EngineOrders(pub Vec<EngineOrder>);

impl EngineOrders {
    /// Every resting order of `engine`'s books and every pending trigger order.
    pub fn from_engine<B: engine::Book>(engine: &engine::Engine<B>) -> Self {
        let mut orders = Vec::new();
        for market in 1..=engine.market_count() {
            let market_id = MarketId::new(market as u32);
            // A pending stop is open too: forgetting it would lose its trigger and fill reports.
            for trigger in engine.triggers(market_id).into_iter().flat_map(engine::TriggerBook::iter) {
                orders.push(EngineOrder {
                    order_id: trigger.order_id,
                    user_id: trigger.user_id,
                    market_id,
                    price_ticks: trigger.price_ticks,
                    quantity_lots: trigger.quantity_lots,
                    filled_lots: 0,
                    stop_price_ticks: trigger.trigger_price_ticks,
                });
            }
            let Some(book) = engine.book(market_id) else { continue };
            for side in [Side::Bid, Side::Ask] {
                book.visit_in_priority(side, &mut |resting| {
                    orders.push(EngineOrder {
                        order_id: resting.order_id,
                        user_id: resting.user_id,
                        market_id,
                        price_ticks: resting.price.get(),
                        quantity_lots: resting.quantity_lots,
                        filled_lots: resting.filled_lots,
                        stop_price_ticks: 0,
                    });
                    true
                });
            }
        }
        Self(orders)
    }
}

/// Everything the session tasks share with the dispatcher.
pub(crate) struct Shared {
    pub config: GatewayConfig,
    pub markets: app::Markets,
    pub ingress: Arc<IngressRing>,
    /// Sessions in configuration order; session id = index + 1.
    pub sessions: Vec<Arc<Mutex<session::SessionState>>>,
    pub next_connection_id: AtomicU64,
    pub stats: Arc<GatewayStats>,
    pub stopping: AtomicBool,
    /// Sessions whose store records and messages wait for the syncer thread.
    pub syncer: Arc<session::Syncer>,
}

impl Shared {
    pub(crate) fn session(&self, session_id: u64) -> Option<&Arc<Mutex<session::SessionState>>> {
        self.sessions.get(usize::try_from(session_id).ok()?.checked_sub(1)?)
    }
}

/// A running gateway.
pub struct FixGateway {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    /// The dispatcher thread ([`IoMode::Tokio`]) or the I/O thread ([`IoMode::Thread`]).
    dispatcher: Option<std::thread::JoinHandle<()>>,
    /// The syncer thread ([`IoMode::Tokio`], and [`IoMode::Thread`] under `Durability::Fsync`;
    /// under `None` the I/O thread is its own syncer).
    syncer: Option<std::thread::JoinHandle<()>>,
    /// Under [`IoMode::Thread`]: wakes the I/O thread (to notice a shutdown), and is rung by
    /// the egress ring while that thread is parked.
    io_waker: Option<(Arc<engine::reactor::IoWaker>, Arc<BroadcastRing>)>,
}

impl FixGateway {
    /// Opens every session's store, binds the listener and starts serving as `config.io` says:
    /// under [`IoMode::Tokio`] the dispatcher thread (egress → sessions, from the ring's current
    /// head), the syncer thread (store → socket) and the accept loop on the current tokio
    /// runtime; under [`IoMode::Thread`] the I/O thread (and under `Durability::Fsync` the
    /// syncer thread). The open orders the stores remember are taken as they are (use
    /// [`FixGateway::start_after_recovery`] when the engine was recovered).
    ///
    /// # Errors
    /// A bad session list, an unusable store directory, or an address that cannot be bound.
    pub async fn start(
        config: GatewayConfig,
        sessions: Vec<SessionConfig>,
        markets: &EngineConfig,
        ingress: Arc<IngressRing>,
        egress: &Arc<BroadcastRing>,
    ) -> Result<Self, StartError> {
        Self::start_with(config, sessions, markets, ingress, egress, egress.subscribe_gating(), None).await
    }

    /// [`FixGateway::start`] for a server that recovered its engine: `resting` are the engine's
    /// resting orders at recovery and the egress ring must not have been consumed past them
    /// (the dispatcher reads it from position 0). Each session's stored open orders are
    /// reconciled with the engine: orders no longer resting are forgotten; quantity, price and
    /// the filled quantity come from the engine (fills the store missed in a crash are counted
    /// at the order's price in AvgPx). Execution reports about these orders then reach their
    /// sessions with the right CumQty, LeavesQty and AvgPx.
    ///
    /// # Errors
    /// As [`FixGateway::start`].
    pub async fn start_after_recovery(
        config: GatewayConfig,
        sessions: Vec<SessionConfig>,
        markets: &EngineConfig,
        ingress: Arc<IngressRing>,
        egress: &Arc<BroadcastRing>,
        resting: &EngineOrders,
    ) -> Result<Self, StartError> {
        Self::start_with(config, sessions, markets, ingress, egress, egress.subscribe_gating_from(0), Some(resting))
            .await
    }

    async fn start_with(
        config: GatewayConfig,
        sessions: Vec<SessionConfig>,
        markets: &EngineConfig,
        ingress: Arc<IngressRing>,
        egress: &Arc<BroadcastRing>,
        consumer: engine::bus::Consumer,
        resting: Option<&EngineOrders>,
    ) -> Result<Self, StartError> {
        // The I/O thread runs the store rounds itself only when they do not wait for the disk.
        let inline_syncer = config.io == IoMode::Thread && config.durability == store::Durability::None;
        let syncer = Arc::new(session::Syncer::new(inline_syncer));
        let stats = Arc::new(GatewayStats::default());
        let resting: Option<std::collections::HashMap<OrderId, EngineOrder>> =
            resting.map(|r| r.0.iter().map(|order| (order.order_id, *order)).collect());
        let mut states = Vec::with_capacity(sessions.len());
        let mut seen = std::collections::HashSet::new();
        for (index, session) in sessions.into_iter().enumerate() {
            let valid = |id: &str| {
                !id.is_empty()
                    && id.len() <= 64
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            };
            if !valid(&session.sender_comp_id) || !valid(&session.target_comp_id) {
                return Err(StartError::BadSession(format!("{}/{}", session.sender_comp_id, session.target_comp_id)));
            }
            if !seen.insert((session.sender_comp_id.clone(), session.target_comp_id.clone())) {
                return Err(StartError::BadSession(format!("duplicate {}", session.sender_comp_id)));
            }
            let mut state = session::SessionState::open(session, index as u64 + 1, &config, syncer.clone())?;
            if let Some(resting) = &resting {
                state.reconcile(resting, &stats)?;
            }
            states.push(Arc::new(Mutex::new(state)));
        }
        let markets = app::Markets::new(markets);
        let shared = |config: GatewayConfig, first_connection_id: u64| {
            Arc::new(Shared {
                config,
                markets,
                ingress,
                sessions: states,
                next_connection_id: AtomicU64::new(first_connection_id),
                stats,
                stopping: AtomicBool::new(false),
                syncer,
            })
        };
        if config.io == IoMode::Thread {
            let engine::reactor::Listening { poll, listener, local_addr, waker } =
                engine::reactor::listen(config.listen)?;
            let io_core = config.io_core;
            // Connection ids are the sockets' poll tokens: they start above the reserved ones.
            let shared = shared(config, engine::reactor::FIRST_CONNECTION_ID);
            // Under fsync the stores' rounds run on a syncer thread that hands the durable
            // messages back to the I/O thread (and wakes it): the I/O thread keeps reading,
            // routing and writing while an `fdatasync` is in flight.
            let delivery = (!inline_syncer).then(|| Arc::new(session::Delivery::new(waker.clone())));
            let syncer = match &delivery {
                Some(delivery) => {
                    let (shared, delivery) = (shared.clone(), delivery.clone());
                    Some(
                        std::thread::Builder::new()
                            .name("fix-sync".into())
                            .spawn(move || session::run_syncer(shared, Some(delivery)))?,
                    )
                }
                None => None,
            };
            egress.add_waker(waker.clone()).map_err(std::io::Error::other)?;
            let thread = {
                let shared = shared.clone();
                std::thread::Builder::new().name("fix-io".into()).spawn(move || {
                    if let Some(core) = io_core {
                        let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core });
                        tracing::info!(core, pinned, "FIX gateway I/O thread pinned");
                    }
                    io_thread::run(shared, poll, listener, consumer, delivery);
                })?
            };
            tracing::info!(listen = %local_addr, "FIX gateway listening (I/O thread)");
            return Ok(Self {
                shared,
                local_addr,
                dispatcher: Some(thread),
                syncer,
                io_waker: Some((waker, egress.clone())),
            });
        }
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let shared = shared(config, 1);
        let syncer = {
            let shared = shared.clone();
            std::thread::Builder::new().name("fix-sync".into()).spawn(move || session::run_syncer(shared, None))?
        };
        let dispatcher = {
            let shared = shared.clone();
            std::thread::Builder::new().name("fix-dispatch".into()).spawn(move || dispatch::run(shared, consumer))?
        };
        tokio::spawn(session::accept_loop(listener, shared.clone()));
        tracing::info!(listen = %local_addr, "FIX gateway listening");
        Ok(Self { shared, local_addr, dispatcher: Some(dispatcher), syncer: Some(syncer), io_waker: None })
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

    /// Stops accepting, logs connected sessions out, stops the dispatcher and the syncer, then
    /// syncs every session's store (after a clean stop even a store written without `fsync`
    /// needs no sequence reset at the next boot).
    pub fn shutdown(mut self) {
        self.signal_stop();
        if let Some(dispatcher) = self.dispatcher.take() {
            let _ = dispatcher.join();
        }
        if self.io_waker.is_none() {
            // Give session tasks a moment to send their Logout (the I/O thread sent them).
            std::thread::sleep(Duration::from_millis(150));
        }
        self.shared.syncer.stop.store(true, Ordering::Release);
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
        for session in &self.shared.sessions {
            let state = session.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(error) = state.settle() {
                tracing::error!(%error, session = state.session_id, "FIX store sync at shutdown failed");
            }
        }
    }
}

impl Drop for FixGateway {
    fn drop(&mut self) {
        self.signal_stop();
        self.shared.syncer.stop.store(true, Ordering::Release);
        if let Some((waker, egress)) = self.io_waker.take() {
            let waker: Arc<dyn engine::doorbell::Waker> = waker;
            egress.remove_waker(&waker);
        }
    }
}

// The integration tests' harness, reused by the unit tests below that need the gateway's
// insides: its `gateway_fix::` paths name this crate.
#[cfg(test)]
extern crate self as gateway_fix;

#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod harness;

#[cfg(test)]
mod tests {
    use super::*;
    use engine::testkit::commands as c;

    /// Under [`IoMode::Thread`] and `Durability::Fsync`, a store sync in flight (here session 1's
    /// log held, standing for a slow `fdatasync`) neither lets session 1's answer out before its
    /// record is durable nor stops the I/O thread: another connection's refused Logon is answered
    /// meanwhile, and session 1's answer follows once the store is released. Fails when the I/O
    /// thread runs the syncer rounds itself under fsync (before issue #17's fix): it waits on the
    /// store and answers nobody until the release.
    #[test]
    fn under_fsync_the_io_thread_serves_others_while_a_store_sync_is_in_flight() {
        let harness = harness::Harness::start(2, |config| {
            config.io = IoMode::Thread;
            config.durability = store::Durability::Fsync;
        });
        let mut first = harness.client(1);
        let files = {
            let session = harness.gateway().shared.sessions[0].lock().unwrap();
            session.store_files().clone()
        };
        let held = files.hold_log();
        first.send("1", &[(112, "PROBE")]);
        // The Heartbeat answering the TestRequest is sequenced: it waits for its store record.
        first.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut chunk = [0u8; 1024];
        match std::io::Read::read(&mut first.stream, &mut chunk) {
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            other => panic!("an answer before its store record was durable: {other:?}"),
        }
        first.stream.set_read_timeout(Some(harness::RECEIVE_TIMEOUT)).unwrap();
        // Meanwhile another connection is served: a Logon signed with the wrong key is refused.
        let started = std::time::Instant::now();
        let mut second = harness::Fix::connect(harness.address, 2);
        let logon = second.logon_fields(1, 30, true, 1);
        let bytes = second.frame(&logon);
        second.write(&bytes).unwrap();
        let refused = second.receive().expect("the refused Logon's Logout while the store is busy");
        assert_eq!(refused.msg_type(), "5", "{refused:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "answered after {:?}", started.elapsed());
        drop(held);
        let heartbeat = first.expect("0");
        assert_eq!(heartbeat.at(112), "PROBE");
    }

    /// A pending stop is one of the engine's open orders at recovery (with its trigger price),
    /// next to the resting orders, so that reconciliation does not forget it.
    #[test]
    fn engine_orders_include_pending_stops() {
        let config = EngineConfig::sample();
        let mut engine = engine::Engine::new(&config).unwrap();
        let mut events = Vec::new();
        let commands = [
            c::deposit(1, 0, 1_000_000),
            c::deposit(2, 1, 1_000_000_000),
            c::gtc(1, 1, Side::Ask, 600_000, 1),
            c::limit(2, 1, Side::Bid, 600_000, 1, codec::TimeInForce::Ioc, 0),
            c::gtc(1, 1, Side::Ask, 610_000, 1),
            c::trigger(1, 1, Side::Ask, codec::TriggerKind::Stop, 590_000, 0, 1, 0),
        ];
        for (sequence, command) in commands.iter().enumerate() {
            engine.execute(engine::CommandContext::new(sequence as u64 + 1, 1), command, &mut events);
        }
        assert!(!events.iter().any(|e| matches!(e, codec::Event::OrderRejected(_))), "{events:?}");
        let orders = EngineOrders::from_engine(&engine).0;
        let stops: Vec<(u64, u64)> = orders.iter().map(|o| (o.price_ticks, o.stop_price_ticks)).collect();
        assert_eq!(stops, [(0, 590_000), (610_000, 0)]);
    }
}
