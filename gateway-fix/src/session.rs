//! The FIX session layer: connections, the per-connection state machine and the persistent
//! per-session state.
//!
//! State machine of a connection ([`Phase`]):
//! - `AwaitLogon`: the first (non-garbled) message must be a Logon with a configured CompID pair,
//!   valid credentials, a HeartBtInt in range, an accurate SendingTime and a MsgSeqNum not below
//!   the expected one; otherwise an unsequenced Logout (or, for a session already connected,
//!   nothing) and the connection closes. A Logon with ResetSeqNumFlag=Y resets both series.
//! - `Active`: every message passes the header checks (CompIDs, MsgSeqNum, SendingTime), then
//!   the sequence check: too high → one ResendRequest for the gap (the message is dropped and
//!   comes back in the resend), too low → ignored if PossDup, else Logout and close; the expected
//!   one is processed and consumes the number. SequenceReset-Reset and Logout are honoured at any
//!   number.
//! - Closing: any Logout (ours or theirs) ends the connection after it is written.
//!
//! A [`SessionState`] outlives connections: sequence numbers, the outbound store (written, and
//! synced under `Durability::Fsync`, before sending), the resend window, the rate limit and the ClOrdID map. It is shared with the
//! dispatcher under a mutex; every outbound sequenced message goes through
//! [`SessionState::send_app`] / [`SessionState::send_admin`] then [`SessionState::flush`].

use crate::app::{self, ClOrdIds, Pending, Refusal};
use crate::encoder::{Body, Header, PossDup, time};
use crate::parser::{self, Message, Parsed};
use crate::store::{self, OrderRecord, StoreFiles, StoredMessage};
use crate::{GatewayConfig, GatewayStats, SessionConfig, Shared, TokenBucket};
use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use engine::bus::{IngressCommand, origin};
use engine::latency::{CommandTrace, clock_ns, wire_latency};
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// ApplVerID / DefaultApplVerID of FIX 5.0 SP2, the only application version of FIXT sessions.
const APPL_VER_ID: &[u8] = b"9";

/// Time the writer of an ending connection has to flush what is queued.
pub(crate) const WRITER_GRACE: Duration = Duration::from_secs(1);
/// Logout text of a Logon refused because the numbers must be reset first (see
/// [`SessionState::reset_required`]).
pub(crate) const RESET_REQUIRED_TEXT: &str =
    "Session store may have lost messages (durability none, machine restarted): log on with ResetSeqNumFlag=Y";
/// Pending cancel/replace/mass-cancel answers remembered per session.
const PENDING_MAX: usize = 65_536;

/// The live connection of a session.
pub(crate) struct Connection {
    pub id: u64,
    pub outbound: mpsc::Sender<Outbound>,
    /// Set to cut the connection at once (slow consumer, lost events).
    pub kill: watch::Sender<bool>,
}

/// A message on its way to a connection once the store records before it are written (and
/// synced, under `Durability::Fsync`).
pub(crate) struct Outgoing {
    bytes: Bytes,
    ack: Option<AckTrace>,
    to: mpsc::Sender<Outbound>,
    connection: u64,
}

/// The acknowledgement of a traced command on its way to the socket: the engine's stamps and
/// when the dispatcher read it. The writer records it once the bytes are written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AckTrace {
    pub trace: CommandTrace,
    pub picked_ns: u64,
}

/// One message for a connection's writer, with the trace of the command it acknowledges.
pub(crate) struct Outbound {
    pub bytes: Bytes,
    pub ack: Option<AckTrace>,
}

impl From<Bytes> for Outbound {
    fn from(bytes: Bytes) -> Self {
        Self { bytes, ack: None }
    }
}

/// Traced acknowledgements one writer batch records at most (more are dropped from the
/// histograms, never from the socket): a bound on the writer's buffer of them.
pub(crate) const ACKS_PER_WRITE_MAX: usize = 1_024;

thread_local! {
    /// The trace of the command whose events the dispatcher is turning into reports, with the
    /// session that sent it: taken by the first application message sent to that session (its
    /// acknowledgement), so the report-building code needs no knowledge of it. Set and taken on
    /// the dispatcher thread only.
    static PENDING_ACK: Cell<Option<(u64, AckTrace)>> = const { Cell::new(None) };
}

/// Sets (or, with `None`, clears) the acknowledgement the next application message to the
/// given session carries ([`PENDING_ACK`]).
pub(crate) fn set_pending_ack(ack: Option<(u64, AckTrace)>) {
    PENDING_ACK.set(ack);
}

/// What the syncer does for a session in one round.
pub(crate) enum StoreWrite {
    /// Append these records (possibly none), then sync them if the durability says so.
    Append(Vec<u8>),
    /// Replace the log by this image (a compaction, or a sequence reset when `reset`).
    Replace { image: Vec<u8>, reset: bool },
}

/// One round of the syncer for a session: the store write, then the messages to hand over.
pub(crate) struct Batch {
    pub files: Arc<StoreFiles>,
    pub write: StoreWrite,
    pub items: Vec<Outgoing>,
}

/// A session: one per configured CompID pair, outliving its connections.
pub(crate) struct SessionState {
    pub config: SessionConfig,
    pub session_id: u64,
    header: Header,
    /// Sequence number of the next outbound message.
    pub next_outbound: u64,
    /// Sequence number expected on the next inbound message.
    pub next_inbound: u64,
    files: Arc<StoreFiles>,
    /// Encoded store records not yet written (the syncer writes them, syncs them under
    /// `Durability::Fsync`, then sends).
    records: Vec<u8>,
    /// Records in the log (written or pending) since it was last rewritten.
    log_records: usize,
    /// Rewrite the log when it holds this many records.
    compact_at: usize,
    /// A rewrite is due (a sequence reset).
    compact: bool,
    /// The due rewrite is a sequence reset (it ends a `reset_required`).
    reset_pending: bool,
    /// The store may have lost numbers the counterparty saw: a Logon must reset them.
    pub reset_required: bool,
    inbound_dirty: bool,
    /// Outbound application messages kept for resending, by ascending sequence.
    window: VecDeque<StoredMessage>,
    window_max: usize,
    resend_max: u64,
    pub connection: Option<Connection>,
    /// Messages queued for the syncer (in sequence order).
    unsent: Vec<Outgoing>,
    /// Whether the session is in the syncer's queue.
    scheduled: bool,
    syncer: Arc<Syncer>,
    pub last_sent: Instant,
    bucket: TokenBucket,
    strikes: u32,
    pub ids: ClOrdIds,
    pub pending: VecDeque<Pending>,
    /// The open orders placed through this session, as persisted (by order id).
    pub orders: HashMap<u64, OrderRecord>,
    /// SendingTime of the last accepted Logon: a Logon must be later (no replayed logons).
    last_logon_ms: i64,
    /// BeginString of the current (or last) logon: FIX.4.4 or FIXT.1.1.
    pub begin_string: &'static [u8],
}

/// The log is rewritten once it holds more than twice the records a rewrite keeps, plus this.
const COMPACT_SLACK: usize = 64;

impl SessionState {
    /// Opens the session's store and recovers its numbers and open orders.
    pub fn open(
        config: SessionConfig,
        session_id: u64,
        gateway: &GatewayConfig,
        syncer: Arc<Syncer>,
    ) -> std::io::Result<Self> {
        let directory = gateway.store_dir.join(format!("{}@{}", config.sender_comp_id, config.target_comp_id));
        let (files, recovered) = StoreFiles::open(&directory, gateway.resend_window, gateway.durability)?;
        let mut ids = ClOrdIds::new(gateway.cl_ord_ids_remembered);
        for order in recovered.orders.values() {
            ids.restore(order.client_order_id, order.order_id, &order.cl_ord_id, &order.superseded);
        }
        let kept = recovered.messages.len() + recovered.orders.len();
        Ok(Self {
            header: Header::new(&config.target_comp_id, &config.sender_comp_id),
            config,
            session_id,
            next_outbound: recovered.next_outbound,
            next_inbound: recovered.next_inbound,
            files: Arc::new(files),
            records: Vec::new(),
            log_records: recovered.records,
            compact_at: 2 * kept + COMPACT_SLACK,
            compact: false,
            reset_pending: false,
            reset_required: recovered.reset_required,
            inbound_dirty: false,
            window: recovered.messages.into(),
            window_max: gateway.resend_window,
            resend_max: gateway.resend_max.max(1),
            connection: None,
            unsent: Vec::new(),
            scheduled: false,
            syncer,
            last_sent: Instant::now(),
            bucket: TokenBucket::new(gateway.messages_per_second, gateway.burst, Instant::now()),
            strikes: 0,
            ids,
            pending: VecDeque::new(),
            orders: recovered.orders,
            last_logon_ms: i64::MIN,
            begin_string: parser::BEGIN_STRING,
        })
    }

    /// Reconciles the stored open orders with the engine's open orders at start-up (see
    /// [`crate::FixGateway::start_after_recovery`]) and rewrites the log when anything changed
    /// (counted in `stats`).
    pub fn reconcile(
        &mut self,
        resting: &HashMap<codec::OrderId, crate::EngineOrder>,
        stats: &GatewayStats,
    ) -> std::io::Result<()> {
        let user = self.config.user_id;
        let before = self.orders.clone();
        self.orders.retain(|&id, order| {
            let Some(engine) = resting.get(&codec::OrderId::new(id)).filter(|o| o.user_id == user) else {
                return false;
            };
            order.price_ticks = engine.price_ticks;
            order.quantity_lots = engine.quantity_lots;
            if engine.stop_price_ticks != 0 {
                // Still a pending stop.
                order.stop_price_ticks = engine.stop_price_ticks;
                order.triggered = false;
            } else if order.stop_price_ticks != 0 {
                // A stop that triggered (in the crash window) and now rests as its limit order.
                order.triggered = true;
            }
            if engine.filled_lots > order.cum_lots {
                // Fills the store missed (a crash between the engine and the store): counted at
                // the order's limit price, the price of every fill of a resting order.
                let missed = engine.filled_lots - order.cum_lots;
                order.notional += u128::from(missed) * u128::from(engine.price_ticks);
                order.cum_lots = engine.filled_lots;
            }
            true
        });
        for (id, order) in &before {
            if !self.orders.contains_key(id) {
                self.ids.close(order.client_order_id);
            }
        }
        if self.orders != before {
            self.compact = true;
            let batch = self.take_batch();
            if let StoreWrite::Replace { image, .. } = &batch.write {
                let syncs = batch.files.replace(image)?;
                stats.store_rewrites.fetch_add(1, Ordering::Relaxed);
                stats.store_syncs.fetch_add(syncs, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn queue(&mut self, bytes: Bytes, ack: Option<AckTrace>) {
        if let Some(connection) = &self.connection {
            self.unsent.push(Outgoing { bytes, ack, to: connection.outbound.clone(), connection: connection.id });
        }
    }

    /// Numbers, stores and queues an application message (kept for resending; stored even
    /// while no connection is open, so the client can ask for it after reconnecting).
    pub fn send_app(&mut self, msg_type: &'static [u8], body: Body) {
        let sequence = self.next_outbound;
        self.next_outbound += 1;
        let message = StoredMessage {
            sequence,
            msg_type: Bytes::from_static(msg_type),
            sending_time: time::format(time::now_ms()),
            body: Bytes::from(body.0),
        };
        store::encode_application(&mut self.records, &message);
        self.log_records += 1;
        if self.connection.is_some() {
            let bytes = self.header.encode(msg_type, sequence, &message.sending_time, None, &message.body);
            let ack = PENDING_ACK.get().filter(|(session, _)| *session == self.session_id);
            if ack.is_some() {
                PENDING_ACK.set(None);
            }
            self.queue(bytes, ack.map(|(_, ack)| ack));
        }
        self.window.push_back(message);
        while self.window.len() > self.window_max {
            self.window.pop_front();
        }
    }

    /// Numbers, stores (its number only) and queues an administrative message; only on a
    /// connection.
    pub fn send_admin(&mut self, msg_type: &'static [u8], body: &Body) {
        if self.connection.is_none() {
            return;
        }
        let sequence = self.next_outbound;
        self.next_outbound += 1;
        store::encode_admin(&mut self.records, sequence);
        self.log_records += 1;
        let now = time::format(time::now_ms());
        let bytes = self.header.encode(msg_type, sequence, &now, None, &body.0);
        self.queue(bytes, None);
    }

    /// Persists the state of an order of this session (`open` false: it is done, and its
    /// ClOrdIDs are free again).
    pub fn store_order(&mut self, order: OrderRecord, open: bool) {
        store::encode_order(&mut self.records, &order, open);
        self.log_records += 1;
        if open {
            self.ids.accepted(order.client_order_id, order.order_id);
            self.orders.insert(order.order_id, order);
        } else {
            self.ids.close(order.client_order_id);
            self.orders.remove(&order.order_id);
        }
    }

    /// Hands what was queued to the syncer, which writes the store records (and syncs them under
    /// `Durability::Fsync`) and then passes the messages to the connection (cut as a slow consumer if its queue is full).
    /// Never blocks on the disk.
    pub fn flush(&mut self) {
        if !self.unsent.is_empty() {
            self.last_sent = Instant::now();
        }
        if self.scheduled || (self.unsent.is_empty() && self.records.is_empty() && !self.compact) {
            return;
        }
        self.scheduled = true;
        self.syncer.schedule(self.session_id);
    }

    /// Takes the syncer's work: a rewrite of the log when due (sequence reset, or a log more
    /// than twice as long as what a rewrite keeps), else the pending records.
    pub fn take_batch(&mut self) -> Batch {
        self.scheduled = false;
        let write = if self.compact || self.log_records > self.compact_at {
            self.compact = false;
            self.records.clear();
            self.inbound_dirty = false;
            let image =
                store::encode_image(self.next_outbound, self.next_inbound, self.window.iter(), self.orders.values());
            let kept = self.window.len() + self.orders.len();
            self.log_records = 2 + kept;
            self.compact_at = 2 * kept + COMPACT_SLACK;
            StoreWrite::Replace { image, reset: std::mem::take(&mut self.reset_pending) }
        } else {
            if std::mem::take(&mut self.inbound_dirty) {
                // The inbound number the batch's messages acknowledge, durable with them.
                store::encode_inbound(&mut self.records, self.next_inbound);
                self.log_records += 1;
            }
            StoreWrite::Append(std::mem::take(&mut self.records))
        };
        Batch { files: self.files.clone(), write, items: std::mem::take(&mut self.unsent) }
    }

    /// The session's store (tests hold its log to stand for a long `fdatasync`).
    #[cfg(test)]
    pub(crate) fn store_files(&self) -> &Arc<StoreFiles> {
        &self.files
    }

    /// Makes the store durable at a clean shutdown (see [`StoreFiles::settle`]).
    pub fn settle(&self) -> std::io::Result<()> {
        self.files.settle()
    }

    /// Cuts the connection without a Logout.
    pub fn cut(&mut self) {
        if let Some(connection) = self.connection.take() {
            let _ = connection.kill.send(true);
        }
    }

    fn set_inbound(&mut self, next_inbound: u64) {
        self.next_inbound = next_inbound;
        self.inbound_dirty = true;
        if let Err(error) = self.files.set_inbound(next_inbound) {
            tracing::error!(%error, session = self.session_id, "FIX store write failed");
        }
    }

    /// ResetSeqNumFlag: both series restart at 1; the log is rewritten with the open orders only.
    fn reset(&mut self) {
        self.next_outbound = 1;
        self.set_inbound(1);
        self.window.clear();
        self.records.clear();
        self.compact = true;
        self.reset_pending = true;
        self.reset_required = false;
    }

    /// Answers a ResendRequest: stored application messages again with PossDupFlag=Y and
    /// OrigSendingTime, everything else (administrative, or older than the window) as
    /// SequenceReset-GapFill. At most `resend_max` numbers per request. Queued behind what is
    /// already queued, so the wire order stays the sequence order.
    fn resend(&mut self, begin: u64, end: u64) {
        let last = self.next_outbound - 1;
        let end = if end == 0 || end > last { last } else { end };
        let begin = begin.max(1);
        if begin > end {
            return;
        }
        let end = end.min(begin.saturating_add(self.resend_max - 1));
        let mut gap_start: Option<u64> = None;
        let now = time::format(time::now_ms());
        let mut index = self.window.partition_point(|m| m.sequence < begin);
        let mut out = Vec::new();
        let gap_fill = |header: &Header, from: u64, to: u64| {
            let mut body = Body::new();
            body.field(123, "Y").uint(36, to);
            header.encode(b"4", from, &now, Some(PossDup { orig_sending_time: None }), &body.0)
        };
        for sequence in begin..=end {
            let stored = self.window.get(index).filter(|m| m.sequence == sequence);
            match stored {
                Some(message) => {
                    if let Some(from) = gap_start.take() {
                        out.push(gap_fill(&self.header, from, sequence));
                    }
                    out.push(self.header.encode(
                        &message.msg_type,
                        sequence,
                        &now,
                        Some(PossDup { orig_sending_time: Some(&message.sending_time) }),
                        &message.body,
                    ));
                    index += 1;
                }
                None => {
                    gap_start.get_or_insert(sequence);
                }
            }
        }
        if let Some(from) = gap_start {
            out.push(gap_fill(&self.header, from, end + 1));
        }
        for message in out {
            self.queue(message, None);
        }
        self.flush();
    }
}

/// The queue of sessions with work for the syncer thread.
#[derive(Default)]
pub(crate) struct Syncer {
    queue: Mutex<Vec<u64>>,
    ready: Condvar,
    /// Set to end the thread (after the gateway stopped).
    pub stop: AtomicBool,
    /// Under [`crate::IoMode::Thread`] with `Durability::None` the I/O thread runs the rounds
    /// itself ([`sync_round`]: a write to the page cache is cheap): nobody waits on `ready`, and
    /// a notification would be a wasted futex call per flush. Under `Durability::Fsync` a syncer
    /// thread runs them in both modes, so the I/O thread never waits for an `fdatasync`.
    pub inline: bool,
}

impl Syncer {
    /// An empty queue; `inline`: the I/O thread runs the rounds (see [`Syncer::inline`]).
    pub fn new(inline: bool) -> Self {
        Self { inline, ..Self::default() }
    }

    fn schedule(&self, session_id: u64) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).push(session_id);
        if !self.inline {
            self.ready.notify_one();
        }
    }
}

/// How the syncer thread tells the I/O thread ([`crate::IoMode::Thread`] under
/// `Durability::Fsync`) which connections it handed durable messages: their ids, and a wake-up
/// of the I/O thread's poll (its eventfd), which may be parked in `epoll_wait`.
pub(crate) struct Delivery {
    /// Connections handed messages since the I/O thread last looked.
    connections: Mutex<Vec<u64>>,
    /// Whether `connections` may be non-empty: the I/O thread looks at it every turn, and
    /// takes the lock only when this is set.
    pending: AtomicBool,
    waker: Arc<engine::reactor::IoWaker>,
}

impl Delivery {
    /// A delivery that wakes the I/O thread through `waker`.
    pub(crate) fn new(waker: Arc<engine::reactor::IoWaker>) -> Self {
        Self { connections: Mutex::new(Vec::new()), pending: AtomicBool::new(false), waker }
    }

    /// Syncer side: `delivered` (drained) were handed messages; wakes the I/O thread.
    fn hand(&self, delivered: &mut Vec<u64>) {
        if delivered.is_empty() {
            return;
        }
        self.connections.lock().unwrap_or_else(|e| e.into_inner()).append(delivered);
        // After the ids are in: the I/O thread that sees the flag finds them.
        self.pending.store(true, Ordering::SeqCst);
        engine::doorbell::Waker::wake(&*self.waker);
    }

    /// I/O thread side: moves the connections handed messages into `marked`; whether any were.
    pub(crate) fn take(&self, marked: &mut Vec<u64>) -> bool {
        // A load first: the usual turn finds nothing and writes no shared cache line.
        if !self.pending.load(Ordering::SeqCst) || !self.pending.swap(false, Ordering::SeqCst) {
            return false;
        }
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        let any = !connections.is_empty();
        marked.append(&mut connections);
        any
    }
}

/// The syncer thread: for each scheduled session, writes its pending store records (or a
/// rewrite of its log) in one write, syncs them once under `Durability::Fsync` (group commit of
/// everything queued since its last round; under `None` not at all), then hands the messages
/// queued behind them to the connection. Sessions' locks are
/// held only to take the work and to cut a connection, never during disk I/O. With a
/// `delivery` (the I/O thread's connections), the connections handed messages go to it after
/// each round.
pub(crate) fn run_syncer(shared: Arc<Shared>, delivery: Option<Arc<Delivery>>) {
    let syncer = shared.syncer.clone();
    let mut ids = Vec::new();
    let mut delivered = Vec::new();
    loop {
        {
            let mut queue = syncer.queue.lock().unwrap_or_else(|e| e.into_inner());
            while queue.is_empty() {
                if syncer.stop.load(Ordering::Acquire) {
                    return;
                }
                queue =
                    syncer.ready.wait_timeout(queue, Duration::from_millis(20)).unwrap_or_else(|e| e.into_inner()).0;
            }
            std::mem::swap(&mut ids, &mut *queue);
        }
        match &delivery {
            Some(delivery) => {
                sync_sessions(&shared, &mut ids, Some(&mut delivered));
                delivery.hand(&mut delivered);
            }
            None => sync_sessions(&shared, &mut ids, None),
        }
    }
}

/// Under [`crate::IoMode::Thread`] with `Durability::None` ([`Syncer::inline`]), the I/O thread
/// is the syncer: one round over the sessions
/// scheduled since the last (none: `false`), without waiting; the connections that were handed
/// messages are added to `delivered`.
pub(crate) fn sync_round(shared: &Shared, ids: &mut Vec<u64>, delivered: &mut Vec<u64>) -> bool {
    {
        let mut queue = shared.syncer.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.is_empty() {
            return false;
        }
        std::mem::swap(ids, &mut *queue);
    }
    sync_sessions(shared, ids, Some(delivered));
    true
}

/// One round of the syncer over the sessions `ids` (drained): writes each one's store records,
/// syncs them if the durability says so, then hands its messages to the connection (whose id
/// goes to `delivered`).
fn sync_sessions(shared: &Shared, ids: &mut Vec<u64>, mut delivered: Option<&mut Vec<u64>>) {
    for session_id in ids.drain(..) {
        let Some(session) = shared.session(session_id) else { continue };
        let batch = session.lock().unwrap_or_else(|e| e.into_inner()).take_batch();
        let result = match &batch.write {
            StoreWrite::Append(records) if records.is_empty() => Ok(0),
            StoreWrite::Append(records) => {
                shared.stats.store_batches.fetch_add(1, Ordering::Relaxed);
                batch.files.append(records)
            }
            StoreWrite::Replace { image, reset } => {
                shared.stats.store_rewrites.fetch_add(1, Ordering::Relaxed);
                let replaced = batch.files.replace(image);
                if *reset { replaced.and_then(|syncs| batch.files.reset_done().map(|()| syncs)) } else { replaced }
            }
        };
        match result {
            Ok(syncs) => {
                shared.stats.store_syncs.fetch_add(syncs, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::error!(%error, session = session_id, "FIX store write failed; connection cut");
                session.lock().unwrap_or_else(|e| e.into_inner()).cut();
                continue;
            }
        }
        let mut cut = None;
        for item in batch.items {
            if cut == Some(item.connection) {
                continue;
            }
            if let Some(delivered) = delivered.as_deref_mut()
                && delivered.last() != Some(&item.connection)
            {
                delivered.push(item.connection);
            }
            if let Err(mpsc::error::TrySendError::Full(_)) =
                item.to.try_send(Outbound { bytes: item.bytes, ack: item.ack })
            {
                cut = Some(item.connection);
                let mut state = session.lock().unwrap_or_else(|e| e.into_inner());
                if state.connection.as_ref().is_some_and(|c| c.id == item.connection) {
                    tracing::warn!(session = session_id, "FIX slow consumer; connection cut");
                    state.cut();
                }
            }
        }
    }
}

pub(crate) async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let mut check = tokio::time::interval(Duration::from_millis(100));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = check.tick() => {
                if shared.stopping.load(Ordering::Acquire) {
                    return; // drops the listener
                }
                continue;
            }
        };
        let Ok((stream, peer)) = accepted else { continue };
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let open = shared.stats.connections.load(Ordering::Relaxed) as usize;
        if open >= shared.config.connections_max {
            tracing::warn!(%peer, open, "FIX gateway: connection limit reached");
            continue;
        }
        let _ = stream.set_nodelay(true);
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            let connection_id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
            run_connection(stream, shared.clone(), connection_id).await;
            shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// The state machine of one connection.
enum Phase {
    /// Nothing valid received yet.
    AwaitLogon,
    /// Logged on.
    Active {
        session: Arc<Mutex<SessionState>>,
        heartbeat: Duration,
        /// When our TestRequest went out, while unanswered.
        test_request: Option<Instant>,
        /// The highest MsgSeqNum seen while a ResendRequest we sent is outstanding.
        resend_through: Option<u64>,
    },
}

/// What the connection does after a message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// End the connection (a Logout, if any, has been queued).
    Close,
}

/// The writer half: drains the outbound queue in batches; ends when every sender is gone (after
/// writing what was queued) or at once on a kill.
async fn write_loop(
    socket: tokio::net::tcp::OwnedWriteHalf,
    mut outbound: mpsc::Receiver<Outbound>,
    mut kill: watch::Receiver<bool>,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, socket);
    let mut acks: Vec<AckTrace> = Vec::with_capacity(ACKS_PER_WRITE_MAX);
    loop {
        tokio::select! {
            biased;
            changed = kill.changed() => {
                if changed.is_ok() {
                    // Cut: nothing more is written.
                    let _ = writer.shutdown().await;
                    return;
                }
                // The connection ended normally: write what is queued, then close.
                while let Some(message) = outbound.recv().await {
                    if writer.write_all(&message.bytes).await.is_err() {
                        return;
                    }
                }
                let _ = writer.flush().await;
                let _ = writer.shutdown().await;
                return;
            }
            message = outbound.recv() => {
                let Some(message) = message else {
                    let _ = writer.flush().await;
                    let _ = writer.shutdown().await;
                    return;
                };
                let mut message = message;
                loop {
                    if writer.write_all(&message.bytes).await.is_err() {
                        return;
                    }
                    if let Some(ack) = message.ack
                        && acks.len() < ACKS_PER_WRITE_MAX
                    {
                        acks.push(ack);
                    }
                    let Ok(next) = outbound.try_recv() else { break };
                    message = next;
                }
                if writer.flush().await.is_err() {
                    return;
                }
                // The bytes are in the socket: the end of each acknowledged command's trace.
                let written_ns = clock_ns();
                for ack in acks.drain(..) {
                    wire_latency().record(origin::FIX, &ack.trace, ack.picked_ns, written_ns);
                }
            }
        }
    }
}

/// What the session logic of one connection needs of the outside world: the gateway, the queue
/// its writer drains (a tokio task, or the I/O thread) and the switch that cuts it.
pub(crate) struct Context {
    shared: Arc<Shared>,
    outbound: mpsc::Sender<Outbound>,
    kill: watch::Sender<bool>,
    connection_id: u64,
    next_test_request: u64,
    /// When the bytes being parsed were read: the start of the trace of the commands they hold.
    received_ns: u64,
}

/// The sans-I/O session logic of one connection, driven by both I/O modes: bytes in
/// ([`Inbound::handle_bytes`]), the clock ([`Inbound::check_timers`]) and the end
/// ([`Inbound::end`]); everything it answers goes through the session's store and the syncer
/// (sequenced messages) or straight onto the connection's queue (a refused logon).
pub(crate) struct Inbound {
    context: Context,
    phase: Phase,
    last_received: Instant,
    started: Instant,
}

impl Inbound {
    /// A new connection: its writer drains `outbound`; `kill` cuts it.
    pub fn new(
        shared: Arc<Shared>,
        connection_id: u64,
        outbound: mpsc::Sender<Outbound>,
        kill: watch::Sender<bool>,
    ) -> Self {
        let now = Instant::now();
        Self {
            context: Context { shared, outbound, kill, connection_id, next_test_request: 1, received_ns: 0 },
            phase: Phase::AwaitLogon,
            last_received: now,
            started: now,
        }
    }

    /// Handles every whole message in `buffer` (consumed from it), read at `received_ns`.
    /// `Close`: the connection ends (a Logout, if any, is queued).
    pub fn handle_bytes(&mut self, buffer: &mut BytesMut, received_ns: u64) -> Flow {
        self.context.received_ns = received_ns;
        let shared = self.context.shared.clone();
        loop {
            let (flow, used) = match parser::parse(buffer) {
                Parsed::Incomplete => return Flow::Continue,
                Parsed::Garbled(skip) => {
                    shared.stats.garbled.fetch_add(1, Ordering::Relaxed);
                    buffer.advance(skip);
                    continue;
                }
                Parsed::Complete(message, used) => {
                    shared.stats.messages_in.fetch_add(1, Ordering::Relaxed);
                    self.last_received = Instant::now();
                    (handle(&mut self.context, &mut self.phase, &message), used)
                }
            };
            buffer.advance(used);
            if flow == Flow::Close {
                return Flow::Close;
            }
        }
    }

    /// Periodic work ([`TIMER_INTERVAL`]): logon timeout, heartbeats, test requests, shutdown.
    pub fn check_timers(&mut self) -> Flow {
        timer(&mut self.context, &mut self.phase, self.last_received, self.started)
    }

    /// The connection ends: what its session queued goes to the syncer, and the session is free
    /// for another connection.
    pub fn end(&mut self) {
        if let Phase::Active { session, .. } = &self.phase {
            let mut state = session.lock().unwrap_or_else(|e| e.into_inner());
            state.flush();
            if state.connection.as_ref().is_some_and(|c| c.id == self.context.connection_id) {
                state.connection = None;
            }
        }
        self.phase = Phase::AwaitLogon;
    }
}

/// How often each connection's timers are looked at (heartbeats are whole seconds).
pub(crate) const TIMER_INTERVAL: Duration = Duration::from_millis(50);

async fn run_connection(stream: TcpStream, shared: Arc<Shared>, connection_id: u64) {
    let peer = stream.peer_addr().ok();
    let (mut reader, writer) = stream.into_split();
    let (outbound, outbound_receiver) = mpsc::channel::<Outbound>(shared.config.outbound_queue_max);
    let (kill, kill_receiver) = watch::channel(false);
    let mut kill_watch = kill.subscribe();
    let mut writer_task = tokio::spawn(write_loop(writer, outbound_receiver, kill_receiver));
    let mut inbound = Inbound::new(shared, connection_id, outbound, kill);
    let mut buffer = BytesMut::with_capacity(2 * parser::MESSAGE_BYTES_MAX);
    let mut tick = tokio::time::interval(TIMER_INTERVAL);
    let mut received_ns = 0;

    loop {
        if inbound.handle_bytes(&mut buffer, received_ns) == Flow::Close {
            break;
        }
        tokio::select! {
            read = reader.read_buf(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => received_ns = clock_ns(),
            },
            _ = tick.tick() => {
                if inbound.check_timers() == Flow::Close {
                    break;
                }
            }
            _ = kill_watch.changed() => break,
        }
    }

    inbound.end();
    tracing::debug!(?peer, "FIX gateway: connection ends");
    drop(inbound);
    if tokio::time::timeout(WRITER_GRACE, &mut writer_task).await.is_err() {
        writer_task.abort();
    }
}

/// Periodic work: logon timeout, heartbeats, test requests, shutdown.
fn timer(context: &mut Context, phase: &mut Phase, last_received: Instant, started: Instant) -> Flow {
    match phase {
        Phase::AwaitLogon => {
            if started.elapsed() > context.shared.config.logon_timeout
                || context.shared.stopping.load(Ordering::Acquire)
            {
                return Flow::Close;
            }
            Flow::Continue
        }
        Phase::Active { session, heartbeat, test_request, .. } => {
            let mut state = session.lock().unwrap_or_else(|e| e.into_inner());
            if state.connection.as_ref().is_none_or(|c| c.id != context.connection_id) {
                return Flow::Close;
            }
            if context.shared.stopping.load(Ordering::Acquire) {
                logout(&mut state, "Server shutdown");
                return Flow::Close;
            }
            let silent = last_received.elapsed();
            match *test_request {
                Some(sent) if silent > sent.elapsed() => {}
                Some(_) => *test_request = None,
                None => {}
            }
            match *test_request {
                Some(sent) if sent.elapsed() > heartbeat.mul_f64(1.2) => {
                    logout(&mut state, "Heartbeat timeout: no answer to TestRequest");
                    return Flow::Close;
                }
                None if silent > heartbeat.mul_f64(1.2) => {
                    let mut body = Body::new();
                    body.field(112, format!("TEST-{}", context.next_test_request));
                    context.next_test_request += 1;
                    state.send_admin(b"1", &body);
                    state.flush();
                    *test_request = Some(Instant::now());
                }
                _ => {}
            }
            if state.last_sent.elapsed() >= *heartbeat {
                state.send_admin(b"0", &Body::new());
                state.flush();
            }
            Flow::Continue
        }
    }
}

/// Queues a sequenced Logout with `text` and flushes.
fn logout(state: &mut SessionState, text: &str) {
    let mut body = Body::new();
    body.field(58, text);
    state.send_admin(b"5", &body);
    state.flush();
}

/// Reject(3): RefSeqNum, RefTagID, RefMsgType, SessionRejectReason, Text.
fn session_reject(shared: &Shared, state: &mut SessionState, message: &Message<'_>, tag: u32, reason: u32, text: &str) {
    shared.stats.session_rejects.fetch_add(1, Ordering::Relaxed);
    let mut body = Body::new();
    if let Some(sequence) = message.get(34) {
        body.field(45, sequence);
    }
    if tag != 0 {
        body.uint(371, u64::from(tag));
    }
    body.field(372, message.msg_type()).uint(373, u64::from(reason)).field(58, text);
    state.send_admin(b"3", &body);
    state.flush();
}

fn business_reject(
    shared: &Shared,
    state: &mut SessionState,
    message: &Message<'_>,
    reason: u32,
    text: &str,
    ref_id: Option<&str>,
) {
    shared.stats.business_rejects.fetch_add(1, Ordering::Relaxed);
    let mut body = Body::new();
    if let Some(sequence) = message.get(34) {
        body.field(45, sequence);
    }
    body.field(372, message.msg_type());
    if let Some(ref_id) = ref_id {
        body.field(379, ref_id);
    }
    body.uint(380, u64::from(reason)).field(58, text);
    state.send_app(b"j", body);
    state.flush();
}

fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 18 {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0')))
}

/// Whether a MsgType is one FIX 4.4 (or, with `fix50`, FIX 5.0 SP2) defines.
fn is_valid_msg_type(msg_type: &[u8], fix50: bool) -> bool {
    match msg_type {
        [c] => c.is_ascii_alphanumeric(),
        [b'A', c] => c.is_ascii_uppercase(),
        [b'B', c] if fix50 => c.is_ascii_uppercase(),
        [b'B', c] => (b'A'..=b'H').contains(c),
        [b'C', c] if fix50 => (b'A'..=b'R').contains(c),
        _ => false,
    }
}

/// An unsequenced Logout to a connection that is not (or not yet) a session.
fn refuse(context: &Context, message: &Message<'_>, text: &str) -> Flow {
    context.shared.stats.logon_failures.fetch_add(1, Ordering::Relaxed);
    let ours = message.text(56).filter(|t| !t.is_empty()).unwrap_or("GATEWAY");
    let theirs = message.text(49).filter(|t| !t.is_empty()).unwrap_or("UNKNOWN");
    let mut body = Body::new();
    body.field(58, text);
    let header = Header::with_begin_string(message.begin_string(), ours, theirs);
    let logout = header.encode(b"5", 1, &time::format(time::now_ms()), None, &body.0);
    let _ = context.outbound.try_send(logout.into());
    Flow::Close
}

fn handle(context: &mut Context, phase: &mut Phase, message: &Message<'_>) -> Flow {
    match phase {
        Phase::AwaitLogon => logon(context, phase, message),
        Phase::Active { .. } => active(context, phase, message),
    }
}

fn logon(context: &mut Context, phase: &mut Phase, message: &Message<'_>) -> Flow {
    let shared = context.shared.clone();
    let shared = &*shared;
    if message.msg_type() != b"A" {
        return refuse(context, message, "First message must be a Logon");
    }
    let (Some(sender), Some(target)) = (message.get(49), message.get(56)) else {
        return refuse(context, message, "CompID problem");
    };
    let Some(session) = shared.sessions.iter().find(|s| {
        let state = s.lock().unwrap_or_else(|e| e.into_inner());
        state.config.sender_comp_id.as_bytes() == sender && state.config.target_comp_id.as_bytes() == target
    }) else {
        return refuse(context, message, "Unknown CompID");
    };
    let Some(sequence) = message.get(34).and_then(parse_u64) else {
        return refuse(context, message, "MsgSeqNum(34) missing or invalid");
    };
    let Some(heartbeat) = message
        .get(108)
        .and_then(parse_u64)
        .filter(|h| u32::try_from(*h).is_ok_and(|h| shared.config.heartbeat_seconds.contains(&h)))
    else {
        return refuse(context, message, "Invalid HeartBtInt(108)");
    };
    let Some(sending_time) = message.get(52) else {
        return refuse(context, message, "SendingTime(52) missing");
    };
    if !sending_time_accurate(shared, sending_time) {
        return refuse(context, message, "SendingTime accuracy problem");
    }
    // FIXT.1.1: the Logon names the application version, FIX 5.0 SP2 (DefaultApplVerID 9).
    let begin_string = if message.begin_string() == parser::BEGIN_STRING_FIXT {
        parser::BEGIN_STRING_FIXT
    } else {
        parser::BEGIN_STRING
    };
    if begin_string == parser::BEGIN_STRING_FIXT && message.get(1137) != Some(APPL_VER_ID) {
        return refuse(context, message, "DefaultApplVerID(1137) must be 9 (FIX 5.0 SP2)");
    }
    let mut state = session.lock().unwrap_or_else(|e| e.into_inner());
    let logon_ms = time::parse(sending_time).unwrap_or(i64::MIN);
    if !credentials_valid(&state.config, message, sending_time) || logon_ms <= state.last_logon_ms {
        drop(state);
        return refuse(context, message, "Invalid credentials");
    }
    if state.connection.is_some() {
        // A second connection for a logged-on session: disconnect without a reply.
        shared.stats.logon_failures.fetch_add(1, Ordering::Relaxed);
        return Flow::Close;
    }
    state.last_logon_ms = logon_ms;
    if state.begin_string != begin_string {
        state.begin_string = begin_string;
        state.header =
            Header::with_begin_string(begin_string, &state.config.target_comp_id, &state.config.sender_comp_id);
    }
    let reset = message.get(141) == Some(b"Y");
    if state.reset_required && !reset {
        // The store may have lost numbers the client saw (durability none and a power loss):
        // resuming could send them again with other contents.
        drop(state);
        return refuse(context, message, RESET_REQUIRED_TEXT);
    }
    if reset {
        state.reset();
    }
    state.connection =
        Some(Connection { id: context.connection_id, outbound: context.outbound.clone(), kill: context.kill.clone() });
    if sequence < state.next_inbound {
        let text = format!("MsgSeqNum too low, expecting {} but received {}", state.next_inbound, sequence);
        logout(&mut state, &text);
        state.connection = None;
        shared.stats.logon_failures.fetch_add(1, Ordering::Relaxed);
        return Flow::Close;
    }
    let mut body = Body::new();
    body.field(98, "0").uint(108, heartbeat);
    if reset {
        body.field(141, "Y");
    }
    if begin_string == parser::BEGIN_STRING_FIXT {
        body.field(1137, APPL_VER_ID);
    }
    state.send_admin(b"A", &body);
    let mut resend_through = None;
    if sequence == state.next_inbound {
        state.set_inbound(sequence + 1);
    } else {
        let mut body = Body::new();
        body.uint(7, state.next_inbound).uint(16, 0);
        state.send_admin(b"2", &body);
        resend_through = Some(sequence);
    }
    state.flush();
    shared.stats.logons.fetch_add(1, Ordering::Relaxed);
    tracing::info!(session = state.session_id, sender = %state.config.sender_comp_id, "FIX logon");
    drop(state);
    *phase = Phase::Active {
        session: session.clone(),
        heartbeat: Duration::from_secs(heartbeat),
        test_request: None,
        resend_through,
    };
    Flow::Continue
}

fn sending_time_accurate(shared: &Shared, sending_time: &[u8]) -> bool {
    time::parse(sending_time).is_some_and(|ms| {
        (ms - time::now_ms()).unsigned_abs() <= shared.config.sending_time_tolerance.as_millis() as u64
    })
}

/// Username(553) is the session's public key in base64, Password(554) an Ed25519 signature of
/// [`crate::logon_payload`] in base64.
fn credentials_valid(config: &SessionConfig, message: &Message<'_>, sending_time: &[u8]) -> bool {
    let engine = base64::engine::general_purpose::STANDARD;
    let (Some(username), Some(password)) = (message.get(553), message.get(554)) else { return false };
    let Ok(key) = engine.decode(username) else { return false };
    if key != config.public_key {
        return false;
    }
    let Ok(signature) = engine.decode(password) else { return false };
    let Ok(signature) = <[u8; 64]>::try_from(signature.as_slice()) else { return false };
    let Ok(verifying) = ed25519_dalek::VerifyingKey::from_bytes(&config.public_key) else { return false };
    let payload = crate::logon_payload(
        sending_time,
        message.get(34).unwrap_or_default(),
        message.get(49).unwrap_or_default(),
        message.get(56).unwrap_or_default(),
    );
    verifying.verify_strict(&payload, &ed25519_dalek::Signature::from_bytes(&signature)).is_ok()
}

fn active(context: &mut Context, phase: &mut Phase, message: &Message<'_>) -> Flow {
    let shared = context.shared.clone();
    let shared = &*shared;
    let Phase::Active { session, test_request, resend_through, .. } = phase else { return Flow::Close };
    let session = session.clone();
    let mut state = session.lock().unwrap_or_else(|e| e.into_inner());
    if state.connection.as_ref().is_none_or(|c| c.id != context.connection_id) {
        return Flow::Close;
    }
    let msg_type = message.msg_type();
    if message.begin_string() != state.begin_string {
        // BeginString other than the logon's: Logout and disconnect (FIX session rules).
        let text = format!("Incorrect BeginString: expected {}", String::from_utf8_lossy(state.begin_string));
        logout(&mut state, &text);
        return Flow::Close;
    }
    let Some(sequence) = message.get(34).and_then(parse_u64) else {
        logout(&mut state, "MsgSeqNum(34) missing or invalid");
        return Flow::Close;
    };
    if message.get(49) != Some(state.config.sender_comp_id.as_bytes())
        || message.get(56) != Some(state.config.target_comp_id.as_bytes())
    {
        let tag = if message.get(49) != Some(state.config.sender_comp_id.as_bytes()) { 49 } else { 56 };
        session_reject(shared, &mut state, message, tag, 9, "CompID problem");
        let next = state.next_inbound.max(sequence + 1);
        state.set_inbound(next);
        logout(&mut state, "CompID problem");
        return Flow::Close;
    }
    let poss_dup = message.get(43) == Some(b"Y");
    // SequenceReset-Reset: moves the expected number forward whatever the MsgSeqNum.
    if msg_type == b"4" && message.get(123) != Some(b"Y") {
        match message.get(36).and_then(parse_u64) {
            Some(new) if new >= state.next_inbound => {
                state.set_inbound(new);
                *resend_through = None;
            }
            Some(_) => session_reject(shared, &mut state, message, 36, 5, "NewSeqNo lower than expected"),
            None => session_reject(shared, &mut state, message, 36, 1, "Required tag missing"),
        }
        return Flow::Continue;
    }
    if sequence > state.next_inbound {
        if msg_type == b"5" {
            logout(&mut state, "Logout acknowledged");
            return Flow::Close;
        }
        if msg_type == b"2" {
            answer_resend_request(shared, &mut state, message);
        }
        if resend_through.is_none() {
            let mut body = Body::new();
            body.uint(7, state.next_inbound).uint(16, 0);
            state.send_admin(b"2", &body);
            state.flush();
        }
        *resend_through = Some(resend_through.unwrap_or(0).max(sequence));
        return Flow::Continue;
    }
    if sequence < state.next_inbound {
        if poss_dup {
            return Flow::Continue;
        }
        let text = format!("MsgSeqNum too low, expecting {} but received {}", state.next_inbound, sequence);
        logout(&mut state, &text);
        return Flow::Close;
    }
    // The expected number: it is consumed whatever happens next.
    state.set_inbound(sequence + 1);
    if resend_through.is_some_and(|through| sequence >= through) {
        *resend_through = None;
    }
    let Some(sending_time) = message.get(52) else {
        session_reject(shared, &mut state, message, 52, 1, "Required tag missing");
        return Flow::Continue;
    };
    let Some(sent_ms) = time::parse(sending_time) else {
        session_reject(shared, &mut state, message, 52, 6, "Incorrect data format for value");
        return Flow::Continue;
    };
    if poss_dup {
        match message.get(122).map(time::parse) {
            // A gap fill may come without OrigSendingTime (as QuickFIX accepts).
            None if msg_type == b"4" => {}
            None => {
                session_reject(shared, &mut state, message, 122, 1, "Required tag missing");
                return Flow::Continue;
            }
            Some(Some(orig)) if orig > sent_ms => {
                session_reject(shared, &mut state, message, 122, 10, "SendingTime accuracy problem");
                return Flow::Continue;
            }
            Some(None) => {
                session_reject(shared, &mut state, message, 122, 6, "Incorrect data format for value");
                return Flow::Continue;
            }
            Some(Some(_)) => {}
        }
    }
    if !sending_time_accurate(shared, sending_time) {
        session_reject(shared, &mut state, message, 52, 10, "SendingTime accuracy problem");
        return Flow::Continue;
    }
    if let Some(tag) = message.has_repeated_tag() {
        session_reject(shared, &mut state, message, tag, 13, "Tag appears more than once");
        return Flow::Continue;
    }
    match msg_type {
        b"0" => {
            *test_request = None;
            Flow::Continue
        }
        b"1" => {
            let Some(id) = message.get(112) else {
                session_reject(shared, &mut state, message, 112, 1, "Required tag missing");
                return Flow::Continue;
            };
            let mut body = Body::new();
            body.field(112, id);
            state.send_admin(b"0", &body);
            state.flush();
            Flow::Continue
        }
        b"2" => {
            answer_resend_request(shared, &mut state, message);
            Flow::Continue
        }
        b"3" => {
            tracing::debug!(session = state.session_id, ?message, "FIX reject received");
            Flow::Continue
        }
        b"4" => {
            // Gap fill (reset mode was handled above).
            match message.get(36).and_then(parse_u64) {
                Some(new) if new > sequence => state.set_inbound(new),
                Some(_) => session_reject(shared, &mut state, message, 36, 5, "NewSeqNo not above MsgSeqNum"),
                None => session_reject(shared, &mut state, message, 36, 1, "Required tag missing"),
            }
            Flow::Continue
        }
        b"5" => {
            logout(&mut state, "Logout acknowledged");
            Flow::Close
        }
        b"A" => {
            session_reject(shared, &mut state, message, 35, 5, "Already logged on");
            Flow::Continue
        }
        b"D" | b"F" | b"G" | b"q" => {
            // FIXT.1.1: an ApplVerID(1128) on the message must be the session's (9, FIX 5.0 SP2).
            if state.begin_string == parser::BEGIN_STRING_FIXT
                && let Some(version) = message.get(1128)
                && version != APPL_VER_ID
            {
                session_reject(shared, &mut state, message, 1128, 18, "Unsupported ApplVerID: the session uses 9");
                return Flow::Continue;
            }
            application(shared, &mut state, message, context.received_ns)
        }
        other if is_valid_msg_type(other, state.begin_string == parser::BEGIN_STRING_FIXT) => {
            business_reject(shared, &mut state, message, 3, "Unsupported Message Type", None);
            Flow::Continue
        }
        _ => {
            session_reject(shared, &mut state, message, 35, 11, "Invalid MsgType");
            Flow::Continue
        }
    }
}

fn answer_resend_request(shared: &Shared, state: &mut SessionState, message: &Message<'_>) {
    shared.stats.resend_requests.fetch_add(1, Ordering::Relaxed);
    // Resend requests count against the rate limit too: a resend storm is bounded by it (and
    // each answer by `resend_max`).
    if !state.bucket.try_take(Instant::now()) {
        shared.stats.throttled.fetch_add(1, Ordering::Relaxed);
        let text = format!("Throttle limit exceeded: {} messages per second", state.bucket.rate_per_second());
        session_reject(shared, state, message, 0, 99, &text);
        return;
    }
    let (Some(begin), Some(end)) = (message.get(7), message.get(16)) else {
        let tag = if message.get(7).is_none() { 7 } else { 16 };
        session_reject(shared, state, message, tag, 1, "Required tag missing");
        return;
    };
    let (Some(begin), Some(end)) = (parse_u64(begin), parse_u64(end)) else {
        session_reject(shared, state, message, 7, 6, "Incorrect data format for value");
        return;
    };
    state.resend(begin, end);
}

fn application(shared: &Shared, state: &mut SessionState, message: &Message<'_>, received_ns: u64) -> Flow {
    if !state.bucket.try_take(Instant::now()) {
        shared.stats.throttled.fetch_add(1, Ordering::Relaxed);
        state.strikes += 1;
        if state.strikes > shared.config.throttle_strikes_max {
            let text =
                format!("Throttle limit exceeded persistently: {} messages per second", state.bucket.rate_per_second());
            logout(state, &text);
            return Flow::Close;
        }
        let text = format!("Throttle limit exceeded: {} messages per second", state.bucket.rate_per_second());
        let ref_id = message.text(11);
        business_reject(shared, state, message, 0, &text, ref_id);
        return Flow::Continue;
    }
    state.strikes = 0;
    let user_id = state.config.user_id;
    match app::translate(message, &shared.markets, &mut state.ids, &state.orders, user_id) {
        Ok((command, pending)) => {
            let tag = origin::tag(origin::FIX, state.session_id);
            if shared.ingress.push(IngressCommand::traced(tag, command, received_ns)).is_err() {
                shared.stats.ingress_busy.fetch_add(1, Ordering::Relaxed);
                business_reject(shared, state, message, 4, "Engine busy, retry later", message.text(11));
                return Flow::Continue;
            }
            shared.stats.commands.fetch_add(1, Ordering::Relaxed);
            if let Some(pending) = pending {
                state.pending.push_back(pending);
                if state.pending.len() > PENDING_MAX
                    && let Some(Pending::Replace { cl_ord_id, .. }) = state.pending.pop_front()
                {
                    // Its answer can no longer be matched: do not keep its ClOrdID reserved.
                    state.ids.release(&cl_ord_id);
                }
            }
        }
        Err(Refusal::Session { tag, reason, text }) => session_reject(shared, state, message, tag, reason, text),
        Err(Refusal::Business { reason, text, ref_id }) => {
            business_reject(shared, state, message, reason, &text, ref_id.as_deref());
        }
        Err(Refusal::Report { msg_type, body }) => {
            state.send_app(msg_type, body);
            state.flush();
        }
    }
    Flow::Continue
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::{MarketId, OrderId, OrderType, Side, UserId};

    fn stored_order(order_id: u64, original: &str, current: &str) -> OrderRecord {
        OrderRecord {
            order_id,
            client_order_id: app::engine_id(original.as_bytes()),
            market_id: 1,
            side: Side::Ask,
            order_type: OrderType::Limit,
            price_ticks: 600_000,
            quantity_lots: 10,
            cum_lots: 0,
            notional: 0,
            stop_price_ticks: 0,
            triggered: false,
            cl_ord_id: current.into(),
            superseded: if original == current { Vec::new() } else { vec![original.into()] },
        }
    }

    #[test]
    fn stored_chains_are_restored_and_reconciling_frees_those_of_orders_the_engine_no_longer_has() {
        let dir = std::env::temp_dir().join(format!("gateway-fix-session-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let gateway = GatewayConfig { store_dir: dir.clone(), ..GatewayConfig::default() };
        let config = SessionConfig {
            sender_comp_id: "CLIENT".into(),
            target_comp_id: "EXCH".into(),
            user_id: UserId::new(1),
            public_key: [0; 32],
        };
        {
            let (files, _) = StoreFiles::open(&dir.join("CLIENT@EXCH"), 10, store::Durability::Fsync).unwrap();
            let mut records = Vec::new();
            store::encode_order(&mut records, &stored_order(1, "A0", "A1"), true);
            store::encode_order(&mut records, &stored_order(2, "B0", "B0"), true);
            files.append(&records).unwrap();
        }
        let mut state = SessionState::open(config, 1, &gateway, Arc::new(Syncer::default())).unwrap();
        assert!(["A0", "A1", "B0"].iter().all(|name| state.ids.in_use(name)));
        assert!(state.ids.resolve("A0").is_err(), "A0 was replaced by A1");
        // The engine still rests order 1 only (order 2 filled in the crash window).
        let resting = HashMap::from([(
            OrderId::new(1),
            crate::EngineOrder {
                order_id: OrderId::new(1),
                user_id: UserId::new(1),
                market_id: MarketId::new(1),
                price_ticks: 600_000,
                quantity_lots: 10,
                filled_lots: 0,
                stop_price_ticks: 0,
            },
        )]);
        state.reconcile(&resting, &GatewayStats::default()).unwrap();
        assert!(state.ids.in_use("A0") && state.ids.in_use("A1"));
        assert!(!state.ids.in_use("B0"), "the forgotten order's ClOrdID is free again");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A stored stop the engine still has pending is kept (with the engine's StopPx); one the
    /// engine no longer has is forgotten; one that triggered and now rests is kept as triggered.
    #[test]
    fn reconciling_keeps_pending_stops() {
        let dir = std::env::temp_dir().join(format!("gateway-fix-session-stops-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let gateway = GatewayConfig { store_dir: dir.clone(), ..GatewayConfig::default() };
        let config = SessionConfig {
            sender_comp_id: "CLIENT".into(),
            target_comp_id: "EXCH".into(),
            user_id: UserId::new(1),
            public_key: [0; 32],
        };
        {
            let (files, _) = StoreFiles::open(&dir.join("CLIENT@EXCH"), 10, store::Durability::Fsync).unwrap();
            let mut records = Vec::new();
            for (id, name) in [(1, "PENDING"), (2, "GONE"), (3, "FIRED")] {
                let order = OrderRecord { stop_price_ticks: 590_000, ..stored_order(id, name, name) };
                store::encode_order(&mut records, &order, true);
            }
            files.append(&records).unwrap();
        }
        let mut state = SessionState::open(config, 1, &gateway, Arc::new(Syncer::default())).unwrap();
        let engine_order = |id: u64, stop_price_ticks: u64| crate::EngineOrder {
            order_id: OrderId::new(id),
            user_id: UserId::new(1),
            market_id: MarketId::new(1),
            price_ticks: 600_000,
            quantity_lots: 10,
            filled_lots: 0,
            stop_price_ticks,
        };
        let open = HashMap::from([(OrderId::new(1), engine_order(1, 590_000)), (OrderId::new(3), engine_order(3, 0))]);
        state.reconcile(&open, &GatewayStats::default()).unwrap();
        let kept = |id: u64| state.orders.get(&id).map(|o| (o.stop_price_ticks, o.triggered));
        assert_eq!((kept(1), kept(2), kept(3)), (Some((590_000, false)), None, Some((590_000, true))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
