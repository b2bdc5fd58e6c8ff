//! The SBE gateway run: `C` sessions, each logged on as its own load-test user, driven open loop.
//!
//! # Threads
//!
//! One **sender** thread owns the schedule: request `i` is due at `t0 + i / rate` and goes to
//! connection `i mod C` (round robin). It sleeps (then spins) until each due time, asks that
//! connection's [`OrderFlow`] for the request, records it as in flight, and writes it. One
//! **receiver** thread per connection reads that session's messages, stamps the time of each
//! read, and correlates every response with its request. A single sender keeps the schedule
//! exact (one clock, one sequence of due times, no per-connection drift) and needs only one
//! thread however many connections there are, which matters on a 2-core machine where the
//! gateway and engine run beside the generator; a receiver per connection means a slow session
//! never delays the timestamps of another. The main thread only draws progress. With
//! `--pin a,b,…` the sender runs on the first core and receiver `k` on core `k+1` of the list
//! (wrapping).
//!
//! # Correlation and latency
//!
//! New orders carry client order ids unique per connection and per run (a millisecond clock
//! times 10⁶ plus a counter, so a later run against the same long-lived session never reuses
//! one); cancels and replaces address their order by client order id. The first response for a
//! request ends it: `OrderAccepted` or `OrderRejected` for a new order, `OrderCanceled`
//! (user-requested) or `OrderRejected` for a cancel, `OrderReplaced` or `OrderRejected` for a
//! replace, and a gateway `BusinessReject` for any of them (matched by the session's client
//! sequence number, since a throttle reject carries no client order id). Its latency is the
//! read time minus the request's **scheduled** send time (see [`crate::latency`]): it includes
//! any lateness of the sender, so a stall anywhere accrues latency to every request scheduled
//! during it. The first `Fill` in which the request's order is the taker (same engine command
//! sequence as its acknowledgement) gives the fill latency, from the same scheduled time.
//!
//! # Cleanup
//!
//! Sessions outlive connections on the server, and so do resting orders: unless `cleanup` is
//! off, each connection sends a `MassCancel` for the market before the run (clearing what an
//! earlier run left) and after it.

use crate::flow::{Mix, OpenOrder, OpenOrders, OrderFlow, PriceModel, RequestKind};
use crate::latency::{Histograms, LatencySummary, Sent};
use crate::progress::{Counters, Progress};
use crate::ramp::{LiveStats, NO_STEP, Ramp, RampMonitor};
use crate::report::Report;
use crate::schedule::{Batches, Clock, Pacer, Schedule, pin_current_thread};
use crate::users::{LOAD_USER_FIRST, load_user_secret};
use crate::{LoadError, achieved_rate};
use codec::*;
use ed25519_dalek::Signer;
use engine::testkit::profiles::FlowRow;
use gateway_binary::client::{Incoming, api_key_of};
use gateway_binary::session::logon_payload;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Histograms of an SBE run: acknowledgement latency of every request and per request type,
/// taker fill latency, and two diagnostics (the acknowledgement latency measured from the actual
/// send time, and the sender's lateness). With `batch` > 1, `ack_from_write_due` is the
/// acknowledgement latency measured from the batch's scheduled write time (the due time of its
/// last request) instead of each request's own: the deliberate batching delay left out, still
/// corrected for coordinated omission. (The FIX run shares these names and leaves it empty.)
pub const SBE_HISTOGRAMS: &[&str] = &[
    "ack_all",
    "ack_limit",
    "ack_ioc",
    "ack_market",
    "ack_cancel",
    "ack_replace",
    "fill",
    "ack_all_uncorrected",
    "send_lag",
    "ack_from_write_due",
];
const ACK_ALL: usize = 0;
const FILL: usize = 6;
const ACK_ALL_UNCORRECTED: usize = 7;
const SEND_LAG: usize = 8;
const ACK_FROM_WRITE_DUE: usize = 9;

fn ack_histogram(kind: RequestKind) -> usize {
    match kind {
        RequestKind::Limit => 1,
        RequestKind::Ioc => 2,
        RequestKind::Market => 3,
        RequestKind::Cancel => 4,
        RequestKind::Replace => 5,
    }
}

/// Settings of a gateway run.
#[derive(Debug, Clone)]
pub struct SbeConfig {
    /// Gateway address.
    pub address: String,
    /// Sessions, each its own load-test user.
    pub connections: usize,
    /// User id of the first connection; connection `k` logs on as `first_user + k`.
    pub first_user: u64,
    /// Instead of the load-test users: connection `k` uses user `users[k]` (id, API secret),
    /// e.g. created through the admin API ([`crate::users::setup`]).
    pub users: Option<Arc<[crate::users::ApiUser]>>,
    /// Requests per second over all connections.
    pub rate: u64,
    /// Measured window.
    pub duration: Duration,
    /// Warm-up before it (sent at the same rate, not recorded).
    pub warmup: Duration,
    /// How long to wait for outstanding responses after the last send.
    pub drain: Duration,
    /// Request mix.
    pub mix: Mix,
    /// Prices and quantities.
    pub prices: PriceModel,
    /// Most open orders per connection before limit orders turn into cancels (0: unbounded).
    pub max_open: usize,
    /// Seed of the order flows (connection `k` uses `seed + k`).
    pub seed: u64,
    /// Mass-cancel each user's orders on the market before and after the run.
    pub cleanup: bool,
    /// The pacer spins for this long before each due time instead of sleeping.
    pub spin: Duration,
    /// Cores: the sender on the first, receivers on the following ones (empty: no pinning).
    pub pin: Vec<usize>,
    /// Draw a progress line.
    pub progress: bool,
    /// Requests per socket write, per connection (1: each request written alone at its due
    /// time; N: a connection's next N requests written together when the last is due).
    pub batch: usize,
    /// What the flow is, for the report (`default`, `exchange-core`, `w-obrs`, `replay FILE`).
    pub workload: String,
    /// Instead of the mix, replay these orders (connection `k` of `C` sends rows `k`, `k + C`,
    /// …, cycling); see [`OrderFlow::replaying`].
    pub replay: Option<Arc<[FlowRow]>>,
    /// Instead of one rate, a ramp of rates (`rate` and `duration` are then the ramp's first
    /// rate and total length): see [`crate::ramp`].
    pub ramp: Option<Ramp>,
    /// The acknowledgement p99 a ramp step must stay within, nanoseconds.
    pub ramp_p99_max_ns: u64,
}

impl SbeConfig {
    /// The user id and API secret of connection `k`.
    pub(crate) fn user(&self, k: usize) -> (u64, [u8; 32]) {
        match &self.users {
            Some(users) => users[k % users.len()],
            None => {
                let user = self.first_user + k as u64;
                (user, load_user_secret(user))
            }
        }
    }

    /// The connection's order flow (`k` of `connections`), new orders numbered from `base`.
    pub(crate) fn flow(&self, k: usize, base: u64) -> OrderFlow {
        let seed = self.seed.wrapping_add(k as u64);
        match &self.replay {
            Some(rows) => {
                OrderFlow::replaying(rows.clone(), k, self.connections, self.prices, self.max_open, seed, base)
            }
            None => OrderFlow::new(self.mix, self.prices, self.max_open, seed, base),
        }
    }

    /// The run's schedule and its total number of requests (warm-up included).
    pub(crate) fn schedule(&self) -> (Schedule, u64) {
        let warmup_ns = self.warmup.as_nanos() as u64;
        match &self.ramp {
            Some(ramp) => {
                let schedule = ramp.schedule(self.warmup, self.connections);
                let total = schedule.count_before(warmup_ns + ramp.duration().as_nanos() as u64);
                (schedule, total)
            }
            None => {
                let schedule = Schedule::new(self.rate, self.connections);
                let total = schedule.count_before(warmup_ns + self.duration.as_nanos() as u64);
                (schedule, total)
            }
        }
    }

    /// The ramp step of a request scheduled `offset_ns` after the start ([`NO_STEP`]: none).
    pub(crate) fn step_at(&self, offset_ns: u64) -> u32 {
        self.ramp
            .as_ref()
            .and_then(|ramp| ramp.step_at(self.warmup.as_nanos() as u64, offset_ns))
            .map_or(NO_STEP, |step| step as u32)
    }

    /// Counters sized for the ramp.
    pub(crate) fn counters(&self) -> Counters {
        Counters::with_steps(self.ramp.as_ref().map_or(0, Ramp::len))
    }

    /// Live stats sized for the ramp.
    pub(crate) fn live_stats(&self) -> LiveStats {
        LiveStats::new(self.ramp.as_ref().map_or(0, Ramp::len))
    }

    /// A monitor of the ramp, if any, whose steps start at clock reading `start_ns` + warm-up.
    pub(crate) fn monitor(&self, start_ns: u64) -> Option<RampMonitor> {
        self.ramp
            .as_ref()
            .map(|ramp| RampMonitor::new(ramp.clone(), start_ns + self.warmup.as_nanos() as u64, self.ramp_p99_max_ns))
    }
}

impl Default for SbeConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:9100".into(),
            connections: 4,
            first_user: LOAD_USER_FIRST,
            users: None,
            rate: 1_000,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            drain: Duration::from_secs(5),
            mix: Mix::default(),
            prices: PriceModel::default(),
            max_open: 500,
            seed: 1,
            cleanup: true,
            spin: Duration::from_micros(50),
            pin: Vec::new(),
            progress: false,
            batch: 1,
            workload: "default".into(),
            replay: None,
            ramp: None,
            ramp_p99_max_ns: crate::sweep::P99_MAX_NS,
        }
    }
}

/// A request waiting for its first response.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    sent: Sent,
    kind: RequestKind,
    measured: bool,
    /// The session's client sequence number of the message.
    sequence: u64,
    /// With batching: the scheduled write time of the request's batch (0: not batched).
    write_due_ns: u64,
    /// Its ramp step ([`NO_STEP`]: none).
    step: u32,
}

/// The last acknowledged new order or replace, for the latency of its first taker fill.
#[derive(Debug, Clone, Copy)]
struct LastAck {
    key: u64,
    engine_sequence: u64,
    sent: Sent,
    measured: bool,
    filled: bool,
}

/// What the sender and a connection's receiver share.
struct ConnState {
    open: OpenOrders,
    next_client_sequence: u64,
    inflight: HashMap<u64, Inflight>,
    by_sequence: HashMap<u64, u64>,
    last_ack: Option<LastAck>,
    histograms: Histograms,
    live: LiveStats,
    outcomes: BTreeMap<String, u64>,
    rejects: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    answered: u64,
    first_answer_ns: u64,
    last_answer_ns: u64,
    mass_cancel_reports: u64,
    /// The run is over: late responses are neither recorded nor counted.
    closed: bool,
    dead: bool,
}

impl ConnState {
    fn new(next_client_sequence: u64, live: LiveStats) -> Self {
        Self {
            open: OpenOrders::default(),
            next_client_sequence,
            inflight: HashMap::new(),
            by_sequence: HashMap::new(),
            last_ack: None,
            histograms: Histograms::new(SBE_HISTOGRAMS),
            live,
            outcomes: BTreeMap::new(),
            rejects: BTreeMap::new(),
            errors: BTreeMap::new(),
            answered: 0,
            first_answer_ns: 0,
            last_answer_ns: 0,
            mass_cancel_reports: 0,
            closed: false,
            dead: false,
        }
    }

    fn error(&mut self, counters: &Counters, what: impl Into<String>) {
        Counters::bump(&counters.errors);
        *self.errors.entry(what.into()).or_default() += 1;
    }

    fn outcome(&mut self, what: &str) {
        if let Some(count) = self.outcomes.get_mut(what) {
            *count += 1;
        } else {
            self.outcomes.insert(what.to_owned(), 1);
        }
    }

    fn reject(&mut self, counters: &Counters, code: u16) {
        if self.closed {
            return;
        }
        Counters::bump(&counters.rejects);
        if code == RejectReason::Throttled.code() {
            Counters::bump(&counters.gateway_rejects);
        }
        *self.rejects.entry(code).or_default() += 1;
    }

    /// Ends the in-flight request `key` if `accept` says the response fits its kind.
    fn resolve(&mut self, key: u64, accept: impl Fn(RequestKind) -> bool) -> Option<Inflight> {
        let inflight = self.inflight.get(&key)?;
        if !accept(inflight.kind) {
            return None;
        }
        let inflight = self.inflight.remove(&key)?;
        self.by_sequence.remove(&inflight.sequence);
        Some(inflight)
    }

    /// Records the first response to a request, received at `now`.
    fn answered(&mut self, inflight: &Inflight, now: u64, counters: &Counters) {
        Counters::bump(&counters.answered);
        if self.closed {
            return;
        }
        let latency = inflight.sent.latency_ns(now);
        self.live.record(inflight.step, latency);
        if !inflight.measured {
            return;
        }
        self.histograms.record(ACK_ALL, latency);
        self.histograms.record(ack_histogram(inflight.kind), latency);
        self.histograms.record(ACK_ALL_UNCORRECTED, inflight.sent.uncorrected_ns(now));
        self.histograms.record(SEND_LAG, inflight.sent.send_lag_ns());
        if inflight.write_due_ns > 0 {
            self.histograms.record(ACK_FROM_WRITE_DUE, now.saturating_sub(inflight.write_due_ns));
        }
        if self.answered == 0 {
            self.first_answer_ns = now;
        }
        self.answered += 1;
        self.last_answer_ns = now;
    }

    fn on_event(&mut self, event: &Event, now: u64, counters: &Counters) {
        match event {
            Event::OrderAccepted(accepted) => {
                let key = accepted.client_order_id.get();
                let Some(inflight) = self.resolve(key, RequestKind::is_new_order) else {
                    if !self.closed {
                        self.error(counters, "OrderAccepted matching no request");
                    }
                    return;
                };
                self.answered(&inflight, now, counters);
                self.outcome("accepted");
                self.last_ack = Some(LastAck {
                    key,
                    engine_sequence: accepted.sequence.get(),
                    sent: inflight.sent,
                    measured: inflight.measured,
                    filled: false,
                });
                let gtc_limit = accepted.order_type.get() == Ok(OrderType::Limit)
                    && accepted.time_in_force.get() == Ok(TimeInForce::Gtc);
                if let (true, Ok(side)) = (gtc_limit, accepted.side.get()) {
                    let order = OpenOrder {
                        side,
                        price_ticks: accepted.price_ticks.get(),
                        remaining_lots: accepted.quantity_lots.get(),
                        busy: false,
                    };
                    self.open.insert(key, order);
                }
            }
            Event::OrderRejected(rejected) => {
                let (key, template, reason) =
                    (rejected.client_order_id.get(), rejected.command_template_id.get(), rejected.reason.raw());
                self.reject(counters, reason);
                if template == MassCancel::TEMPLATE_ID {
                    self.mass_cancel_reports += 1;
                    return;
                }
                let Some(inflight) = self.resolve(key, |kind| kind.template_id() == template) else {
                    if !self.closed {
                        self.error(counters, "OrderRejected matching no request");
                    }
                    return;
                };
                self.answered(&inflight, now, counters);
                self.outcome("rejected");
                if inflight.kind == RequestKind::Replace {
                    self.replace_failed(key, reason);
                }
            }
            Event::Fill(fill) => {
                self.outcome("fills");
                if fill.taker_order_id != OrderId::ZERO {
                    let key = fill.taker_client_order_id.get();
                    if let Some(last) = &mut self.last_ack
                        && last.key == key
                        && last.engine_sequence == fill.sequence.get()
                        && !last.filled
                    {
                        last.filled = true;
                        if last.measured && !self.closed {
                            let latency = last.sent.latency_ns(now);
                            self.histograms.record(FILL, latency);
                        }
                    }
                    self.filled(key, fill.taker_remaining_lots.get(), fill.completes_taker());
                }
                if fill.maker_order_id != OrderId::ZERO {
                    let key = fill.maker_client_order_id.get();
                    self.filled(key, fill.maker_remaining_lots.get(), fill.completes_maker());
                }
            }
            Event::OrderCanceled(canceled) => {
                let key = canceled.client_order_id.get();
                self.open.remove(key);
                match canceled.reason.get() {
                    Ok(CancelReason::UserRequested) => match self.resolve(key, |kind| kind == RequestKind::Cancel) {
                        Some(inflight) => {
                            self.answered(&inflight, now, counters);
                            self.outcome("canceled");
                        }
                        None if !self.closed => self.error(counters, "OrderCanceled matching no request"),
                        None => {}
                    },
                    Ok(CancelReason::MassCancel) => self.outcome("mass_canceled"),
                    Ok(CancelReason::SelfTradePrevention) => self.outcome("stp_canceled"),
                    _ => self.outcome("canceled_other"),
                }
            }
            Event::OrderExpired(expired) => {
                self.open.remove(expired.client_order_id.get());
                self.outcome("expired");
            }
            Event::OrderReplaced(replaced) => {
                let key = replaced.client_order_id.get();
                let Some(inflight) = self.resolve(key, |kind| kind == RequestKind::Replace) else {
                    if !self.closed {
                        self.error(counters, "OrderReplaced matching no request");
                    }
                    return;
                };
                self.answered(&inflight, now, counters);
                self.outcome("replaced");
                self.last_ack = Some(LastAck {
                    key,
                    engine_sequence: replaced.sequence.get(),
                    sent: inflight.sent,
                    measured: inflight.measured,
                    filled: false,
                });
                if let Some(order) = self.open.get_mut(key) {
                    order.price_ticks = replaced.price_ticks.get();
                    order.remaining_lots = replaced.remaining_lots.get();
                    order.busy = false;
                }
            }
            Event::MassCancelReport(_) => self.mass_cancel_reports += 1,
            Event::BookLevelUpdate(_)
            | Event::BalanceUpdate(_)
            | Event::MarketStatusChanged(_)
            | Event::LiquidityAdded(_)
            | Event::LiquidityRemoved(_)
            | Event::SwapExecuted(_)
            | Event::OrderRouted(_)
            | Event::TriggerPending(_)
            | Event::TriggerPlaced(_)
            | Event::TriggerFailed(_) => {}
        }
    }

    /// An order of ours traded; `remaining` lots are still open.
    /// A fill of the open order `key`: `done` from the fill's completion flag (not from
    /// `remaining == 0`, which a quote-quantity market order shows on every fill).
    fn filled(&mut self, key: u64, remaining: u64, done: bool) {
        if done {
            self.open.remove(key);
        } else if let Some(order) = self.open.get_mut(key) {
            order.remaining_lots = remaining;
        }
    }

    /// A replace was refused: the order is gone (unknown) or stays as it was.
    fn replace_failed(&mut self, key: u64, reason: u16) {
        if reason == RejectReason::UnknownOrder.code() {
            self.open.remove(key);
        } else if let Some(order) = self.open.get_mut(key) {
            order.busy = false;
        }
    }

    /// Handles a session-layer message; `Err` ends the connection.
    fn on_session(&mut self, message: Session, now: u64, counters: &Counters) -> Result<(), String> {
        match message {
            Session::SequenceHeartbeat(_) => Ok(()),
            Session::BusinessReject(reject) => {
                let reason = reject.reason.raw();
                self.reject(counters, reason);
                if !self.closed && reason != RejectReason::Throttled.code() {
                    Counters::bump(&counters.gateway_rejects);
                }
                let sequence = reject.client_sequence.get();
                match self.by_sequence.get(&sequence).copied() {
                    Some(key) => {
                        if let Some(inflight) = self.resolve(key, |_| true) {
                            self.answered(&inflight, now, counters);
                            self.outcome("business_rejected");
                            if inflight.kind == RequestKind::Replace {
                                self.replace_failed(key, reason);
                            }
                        }
                    }
                    None if reject.ref_template_id.get() == MassCancel::TEMPLATE_ID => self.mass_cancel_reports += 1,
                    None if !self.closed => self.error(counters, "BusinessReject matching no request"),
                    None => {}
                }
                Ok(())
            }
            Session::Terminate(terminate) => Err(format!("terminated by the server: {:?}", terminate.reason)),
            other => {
                self.error(counters, format!("unexpected {}", other.name()));
                Ok(())
            }
        }
    }
}

fn lock(state: &Mutex<ConnState>) -> MutexGuard<'_, ConnState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decodes one SBE message from the gateway.
fn decode(message: &[u8]) -> Result<Incoming, String> {
    if let Ok((event, _)) = Event::decode(message) {
        return Ok(Incoming::Event(event));
    }
    Session::decode(message).map(|(session, _)| Incoming::Session(session)).map_err(|e| e.to_string())
}

/// Frames and writes one message.
fn write_message(stream: &mut TcpStream, encode: impl FnOnce(&mut [u8]) -> Option<usize>) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(264);
    push_frame(&mut frame, encode);
    stream.write_all(&frame)
}

/// Appends one framed message to `out`.
pub(crate) fn push_frame(out: &mut Vec<u8>, encode: impl FnOnce(&mut [u8]) -> Option<usize>) {
    let mut message = [0u8; 256];
    let length = encode(&mut message).expect("every message fits 256 bytes");
    let mut frame = [0u8; 256 + 8];
    let framed = encode_frame(&message[..length], &mut frame).expect("fits");
    out.extend_from_slice(&frame[..framed]);
}

/// Reads the next message, blocking; keeps unconsumed bytes in `buffer`.
fn read_message(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<Incoming, String> {
    loop {
        if let Some((message, used)) = FrameDecoder::next_frame(buffer).map_err(|e| e.to_string())? {
            let incoming = decode(message)?;
            buffer.drain(..used);
            return Ok(incoming);
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("connection closed during logon".into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// Connects and logs on with the Ed25519 seed `secret` (the same exchange as
/// `gateway_binary::client::Client::connect`, which keeps its socket to itself: the load
/// generator needs the socket split between a sender and a receiver thread). Returns the socket,
/// the server's acknowledgement and any bytes read past it.
fn logon(address: &str, secret: &[u8; 32]) -> Result<(TcpStream, EstablishAck, Vec<u8>), String> {
    let mut stream = TcpStream::connect(address).map_err(|e| format!("connect to {address}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let signing = ed25519_dalek::SigningKey::from_bytes(secret);
    let api_key = api_key_of(secret);
    let mut buffer = Vec::new();
    let negotiate = Session::Negotiate(Negotiate { api_key, timestamp_ns: TimestampNs::ZERO });
    write_message(&mut stream, |out| negotiate.encode(out)).map_err(|e| e.to_string())?;
    let nonce = match read_message(&mut stream, &mut buffer)? {
        Incoming::Session(Session::NegotiateResponse(response)) => response.server_nonce.0,
        Incoming::Session(Session::Terminate(t)) => return Err(format!("logon refused: {:?}", t.reason)),
        other => return Err(format!("expected NegotiateResponse, got {other:?}")),
    };
    let signature = signing.sign(&logon_payload(&nonce, &api_key));
    let establish = Session::Establish(Establish {
        signature: FixedBytes(signature.to_bytes()),
        next_expected_sequence: Sequence::new(1),
        keep_alive_ms: 5_000.into(),
        reserved: Reserved::ZERO,
    });
    write_message(&mut stream, |out| establish.encode(out)).map_err(|e| e.to_string())?;
    let ack = match read_message(&mut stream, &mut buffer)? {
        Incoming::Session(Session::EstablishAck(ack)) => ack,
        Incoming::Session(Session::Terminate(t)) => return Err(format!("logon refused: {:?}", t.reason)),
        other => return Err(format!("expected EstablishAck, got {other:?}")),
    };
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok((stream, ack, buffer))
}

/// A receiver thread's loop: read, stamp, correlate, until the socket closes.
fn receive_loop(
    mut stream: TcpStream,
    mut buffer: Vec<u8>,
    state: Arc<Mutex<ConnState>>,
    clock: Clock,
    counters: Arc<Counters>,
    stopping: Arc<AtomicBool>,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let now = clock.now_ns();
        let mut guard = lock(&state);
        let mut offset = 0;
        loop {
            let (message, used) = match FrameDecoder::next_frame(&buffer[offset..]) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    guard.error(&counters, format!("bad frame from the server: {error}"));
                    guard.dead = true;
                    return;
                }
            };
            offset += used;
            match decode(message) {
                Ok(Incoming::Event(event)) => guard.on_event(&event, now, &counters),
                Ok(Incoming::Session(session)) => {
                    if let Err(reason) = guard.on_session(session, now, &counters) {
                        if !stopping.load(Ordering::Acquire) {
                            guard.error(&counters, reason);
                        }
                        guard.dead = true;
                        return;
                    }
                }
                Err(error) => guard.error(&counters, format!("undecodable message: {error}")),
            }
        }
        buffer.drain(..offset);
        drop(guard);
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) if stopping.load(Ordering::Acquire) => return,
            Ok(0) => {
                let mut state = lock(&state);
                state.error(&counters, "connection closed by the server");
                state.dead = true;
                return;
            }
            Err(error) => {
                let mut state = lock(&state);
                state.error(&counters, format!("receive: {error}"));
                state.dead = true;
                return;
            }
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
}

/// One connection as the sender sees it.
struct Conn {
    stream: TcpStream,
    state: Arc<Mutex<ConnState>>,
    flow: OrderFlow,
    last_send_ns: u64,
}

impl Conn {
    fn heartbeat(&mut self, counters: &Counters) {
        let next_sequence = lock(&self.state).next_client_sequence;
        let beat = Session::SequenceHeartbeat(SequenceHeartbeat { next_sequence: Sequence::new(next_sequence) });
        if let Err(error) = write_message(&mut self.stream, |out| beat.encode(out)) {
            let mut state = lock(&self.state);
            state.error(counters, format!("send: {error}"));
            state.dead = true;
        }
    }

    /// Sends a mass cancel of `market`; returns the report count to wait past.
    fn mass_cancel(&mut self, market: u32, counters: &Counters) -> u64 {
        let reports = {
            let mut state = lock(&self.state);
            state.next_client_sequence += 1;
            state.mass_cancel_reports
        };
        let command = engine::testkit::commands::mass_cancel(0, market, SideFilter::Both);
        if let Err(error) = write_message(&mut self.stream, |out| command.encode(out)) {
            let mut state = lock(&self.state);
            state.error(counters, format!("send: {error}"));
            state.dead = true;
        }
        reports
    }
}

/// Mass-cancels on every connection and waits (up to 5 s) for the reports.
fn mass_cancel_all(conns: &mut [Conn], market: u32, counters: &Counters) {
    let before: Vec<u64> = conns.iter_mut().map(|conn| conn.mass_cancel(market, counters)).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let done = conns.iter().zip(&before).all(|(conn, &before)| {
            let state = lock(&conn.state);
            state.dead || state.mass_cancel_reports > before
        });
        if done {
            return;
        }
        if Instant::now() > deadline {
            for (conn, &before) in conns.iter().zip(&before) {
                let mut state = lock(&conn.state);
                if !state.dead && state.mass_cancel_reports <= before {
                    state.error(counters, "mass cancel unanswered");
                }
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What the sender thread reports back.
struct SenderResult {
    conns: Vec<Conn>,
    sent_measured: u64,
    first_send_ns: u64,
    last_send_ns: u64,
    sent_by_kind: BTreeMap<RequestKind, u64>,
}

struct SenderPlan {
    schedule: Schedule,
    clock: Clock,
    pacer: Pacer,
    start_ns: u64,
    warmup_ns: u64,
    total: u64,
    batch: usize,
    core: Option<usize>,
    /// Ramp steps by scheduled offset.
    config: Arc<SbeConfig>,
    /// Set by the ramp monitor: stop sending.
    stop: Arc<AtomicBool>,
}

/// The sender thread's loop: every request at its due time, round robin over connections; with
/// `batch` > 1, each connection's requests are written `batch` at a time (one `write` of
/// several frames) when the last of them is due (see [`Batches`]).
fn send_loop(mut conns: Vec<Conn>, plan: SenderPlan, counters: Arc<Counters>) -> SenderResult {
    if let Some(core) = plan.core {
        pin_current_thread(core);
    }
    let clock = plan.clock;
    let mut result = SenderResult {
        conns: Vec::new(),
        sent_measured: 0,
        first_send_ns: 0,
        last_send_ns: 0,
        sent_by_kind: BTreeMap::new(),
    };
    const IDLE: u64 = 1_000_000_000;
    let mut frames: Vec<u8> = Vec::with_capacity(plan.batch * 128);
    let mut kinds: Vec<(RequestKind, bool)> = Vec::with_capacity(plan.batch);
    let mut steps: Vec<u32> = Vec::with_capacity(plan.batch);
    for batch in Batches::new(plan.schedule.clone(), conns.len(), plan.total, plan.batch) {
        if plan.stop.load(Ordering::Relaxed) {
            break;
        }
        let due = plan.start_ns + batch.write_due_ns();
        // At very low rates, keep the sessions alive while waiting.
        while due > clock.now_ns() + IDLE {
            std::thread::sleep(Duration::from_millis(500));
            let now = clock.now_ns();
            for conn in conns.iter_mut().filter(|c| now.saturating_sub(c.last_send_ns) > IDLE) {
                conn.heartbeat(&counters);
                conn.last_send_ns = now;
            }
        }
        let actual = plan.pacer.wait_until(&clock, due);
        let conn = &mut conns[batch.connection];
        frames.clear();
        kinds.clear();
        steps.clear();
        {
            let mut state = lock(&conn.state);
            if state.dead {
                for _ in &batch.requests {
                    state.error(&counters, "not sent: connection down");
                }
                continue;
            }
            for &(_, offset) in &batch.requests {
                let measured = offset >= plan.warmup_ns;
                let step = plan.config.step_at(offset);
                let request = conn.flow.next(&mut state.open);
                let sequence = state.next_client_sequence;
                state.next_client_sequence += 1;
                let inflight = Inflight {
                    sent: Sent { scheduled_ns: plan.start_ns + offset, actual_ns: actual },
                    kind: request.kind,
                    measured,
                    sequence,
                    write_due_ns: if plan.batch > 1 { due } else { 0 },
                    step,
                };
                steps.push(step);
                if state.inflight.insert(request.key, inflight).is_some() {
                    state.error(&counters, "request for an order already in flight");
                }
                state.by_sequence.insert(sequence, request.key);
                if request.substituted {
                    state.outcome("substituted");
                }
                push_frame(&mut frames, |out| request.command.encode(out));
                kinds.push((request.kind, measured));
            }
        }
        if let Err(error) = conn.stream.write_all(&frames) {
            let mut state = lock(&conn.state);
            state.error(&counters, format!("send: {error}"));
            state.dead = true;
            continue;
        }
        conn.last_send_ns = actual;
        for &step in &steps {
            counters.bump_step(step);
        }
        for &(kind, measured) in &kinds {
            Counters::bump(&counters.sent);
            *result.sent_by_kind.entry(kind).or_default() += 1;
            if measured {
                if result.sent_measured == 0 {
                    result.first_send_ns = actual;
                }
                result.sent_measured += 1;
                result.last_send_ns = actual;
            }
        }
    }
    result.conns = conns;
    result
}

/// Runs the gateway load and returns its report.
///
/// # Errors
/// Invalid settings, or a connection that cannot connect or log on.
pub fn run(config: &SbeConfig) -> Result<Report, LoadError> {
    config.mix.validate().map_err(LoadError::new)?;
    if config.connections == 0 || config.rate == 0 {
        return Err(LoadError::new("need at least one connection and a positive rate"));
    }
    let clock = Clock::start();
    let counters = Arc::new(config.counters());
    let stopping = Arc::new(AtomicBool::new(false));
    let run_base =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64)
            * 1_000_000;

    let mut conns: Vec<Conn> = Vec::with_capacity(config.connections);
    let mut receivers: Vec<std::thread::JoinHandle<()>> = Vec::with_capacity(config.connections);
    for k in 0..config.connections {
        let (user, secret) = config.user(k);
        let logged_on = logon(&config.address, &secret)
            .map_err(|e| format!("connection {k} (user {user}): {e}"))
            .and_then(|(stream, ack, leftover)| match ack.user_id.get() {
                id if id == user => Ok((stream, ack, leftover)),
                id => Err(format!("connection {k}: the key of user {user} logged on as user {id}")),
            });
        let (stream, ack, leftover) = match logged_on {
            Ok(logged_on) => logged_on,
            Err(error) => {
                // Close the sessions already open, so their receivers end.
                stopping.store(true, Ordering::Release);
                for conn in &conns {
                    let _ = conn.stream.shutdown(std::net::Shutdown::Both);
                }
                for receiver in receivers {
                    let _ = receiver.join();
                }
                return Err(LoadError::new(error));
            }
        };
        let state = Arc::new(Mutex::new(ConnState::new(ack.next_expected_sequence.get(), config.live_stats())));
        let reader = stream.try_clone()?;
        let (state_r, counters_r, stopping_r) = (state.clone(), counters.clone(), stopping.clone());
        let core = (!config.pin.is_empty()).then(|| config.pin[(k + 1) % config.pin.len()]);
        receivers.push(std::thread::Builder::new().name(format!("loadgen-recv-{k}")).spawn(move || {
            if let Some(core) = core {
                pin_current_thread(core);
            }
            receive_loop(reader, leftover, state_r, clock, counters_r, stopping_r)
        })?);
        let flow = config.flow(k, run_base);
        conns.push(Conn { stream, state, flow, last_send_ns: 0 });
    }
    let states: Vec<_> = conns.iter().map(|c| c.state.clone()).collect();
    if config.cleanup {
        mass_cancel_all(&mut conns, config.prices.market_id, &counters);
    }

    let (schedule, total) = config.schedule();
    let warmup_ns = config.warmup.as_nanos() as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let start_ns = clock.now_ns() + 5_000_000;
    let plan = SenderPlan {
        schedule,
        clock,
        pacer: Pacer::new(config.spin),
        start_ns,
        warmup_ns,
        total,
        batch: config.batch.max(1),
        core: config.pin.first().copied(),
        config: Arc::new(config.clone()),
        stop: stop.clone(),
    };
    let sender = {
        let counters = counters.clone();
        std::thread::Builder::new().name("loadgen-send".into()).spawn(move || send_loop(conns, plan, counters))?
    };
    let mut progress = Progress::new(config.progress, "sbe", config.warmup + config.duration);
    let mut monitor = config.monitor(start_ns);
    let mut gather = |f: &mut dyn FnMut(&mut LiveStats)| {
        for state in &states {
            f(&mut lock(state).live);
        }
    };
    crate::ramp::watch(&sender, &mut progress, &counters, &clock, monitor.as_mut(), &stop, &mut gather);
    let sent = sender.join().map_err(|_| LoadError::new("sender panicked"))?;
    let mut conns = sent.conns;

    // Drain: wait for the responses still outstanding.
    let drain_deadline = Instant::now() + config.drain;
    while Instant::now() < drain_deadline {
        if states.iter().all(|s| {
            let state = lock(s);
            state.dead || state.inflight.is_empty()
        }) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        progress.tick(&counters);
    }
    progress.finish();
    let mut unanswered = 0;
    for state in &states {
        let mut state = lock(state);
        state.closed = true;
        let (measured, warmup) =
            state.inflight.values().fold((0, 0), |(m, w), i| if i.measured { (m + 1, w) } else { (m, w + 1) });
        unanswered += measured;
        if measured > 0 {
            *state.errors.entry("unanswered".into()).or_default() += measured;
        }
        if warmup > 0 {
            *state.errors.entry("unanswered (warm-up)".into()).or_default() += warmup;
        }
    }
    let ramp = monitor.map(|m| m.finish(&counters, &counters.step_sent(), &mut gather));
    if config.cleanup {
        mass_cancel_all(&mut conns, config.prices.market_id, &counters);
    }
    stopping.store(true, Ordering::Release);
    for conn in &mut conns {
        let terminate =
            Session::Terminate(Terminate { reason: TerminateReason::Finished.into(), reserved: Reserved::ZERO });
        let _ = write_message(&mut conn.stream, |out| terminate.encode(out));
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
    }
    for receiver in receivers {
        let _ = receiver.join();
    }

    let figures = states
        .iter()
        .map(|state| {
            let state = lock(state);
            let rejects = state
                .rejects
                .iter()
                .map(|(&code, &count)| {
                    let name = RejectReason::from_code(code).map_or_else(|| "unknown".to_owned(), |r| format!("{r:?}"));
                    (format!("{code} {name}"), count)
                })
                .collect();
            ConnFigures {
                histograms: state.histograms.clone(),
                outcomes: state.outcomes.clone(),
                rejects,
                errors: state.errors.clone(),
                answered: state.answered,
                first_answer_ns: state.first_answer_ns,
                last_answer_ns: state.last_answer_ns,
            }
        })
        .collect();
    let totals = SentTotals {
        sent_measured: sent.sent_measured,
        first_send_ns: sent.first_send_ns,
        last_send_ns: sent.last_send_ns,
        sent_by_kind: sent.sent_by_kind,
    };
    let mut report = gateway_report("sbe", config, SBE_HISTOGRAMS, figures, &totals, unanswered);
    report.settings.insert("batch".to_owned(), config.batch.max(1).to_string());
    crate::ramp::attach(&mut report, config.ramp.as_ref(), ramp);
    Ok(report)
}

/// One connection's figures at the end of a gateway run (SBE or FIX), to merge.
pub(crate) struct ConnFigures {
    pub histograms: Histograms,
    pub outcomes: BTreeMap<String, u64>,
    /// By named reason (`"402 UnknownOrder"`).
    pub rejects: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub answered: u64,
    pub first_answer_ns: u64,
    pub last_answer_ns: u64,
}

/// What the sender of a gateway run sent.
pub(crate) struct SentTotals {
    pub sent_measured: u64,
    pub first_send_ns: u64,
    pub last_send_ns: u64,
    pub sent_by_kind: BTreeMap<RequestKind, u64>,
}

/// Merges the connections' figures of a gateway run into its report (shared by the SBE and the
/// FIX targets, so both print, serialise and log the same way).
pub(crate) fn gateway_report(
    kind: &str,
    config: &SbeConfig,
    names: &'static [&'static str],
    figures: Vec<ConnFigures>,
    sent: &SentTotals,
    unanswered: u64,
) -> Report {
    let mut histograms = Histograms::new(names);
    let (mut outcomes, mut rejects, mut errors) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let (mut answered, mut first_answer, mut last_answer) = (0, u64::MAX, 0);
    for state in &figures {
        histograms.merge(&state.histograms);
        for (k, v) in &state.outcomes {
            *outcomes.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &state.rejects {
            *rejects.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &state.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
        if state.answered > 0 {
            answered += state.answered;
            first_answer = first_answer.min(state.first_answer_ns);
            last_answer = last_answer.max(state.last_answer_ns);
        }
    }
    for (kind, count) in &sent.sent_by_kind {
        outcomes.insert(format!("sent_{kind:?}").to_lowercase(), *count);
    }
    let histograms: Vec<(String, hdrhistogram::Histogram<u64>)> = histograms
        .iter()
        .filter(|(name, h)| *name == names[ACK_ALL] || !h.is_empty())
        .map(|(name, h)| (name.to_owned(), h.clone()))
        .collect();
    let mix = &config.mix;
    let prices = &config.prices;
    let users = match &config.users {
        Some(users) => format!("{} created through the admin API", users.len()),
        None => format!("{}..={}", config.first_user, config.first_user + config.connections as u64 - 1),
    };
    let mut settings = BTreeMap::from([("workload".to_owned(), config.workload.clone())]);
    if config.replay.is_none() {
        settings.insert(
            "mix".to_owned(),
            format!(
                "limit {}% market {}% ioc {}% cancel {}% replace {}%",
                mix.limit_pct, mix.market_pct, mix.ioc_pct, mix.cancel_pct, mix.replace_pct
            ),
        );
        settings.insert(
            "prices".to_owned(),
            format!(
                "market {} mid {} ±{} ticks ({:?}), cross {}% (ioc {}%) by 1-{} ticks, {}-{} lots",
                prices.market_id,
                prices.mid_ticks,
                prices.spread_ticks,
                prices.placement,
                prices.cross_pct,
                prices.ioc_cross_pct,
                prices.cross_ticks,
                prices.lots_min,
                prices.lots_max
            ),
        );
    }
    if let Some(ramp) = &config.ramp {
        settings.insert(
            "ramp".to_owned(),
            format!(
                "{}..={}/s in {} steps of {:.1} s (p99 limit {:.1} ms)",
                ramp.rates.first().copied().unwrap_or(0),
                ramp.rates.last().copied().unwrap_or(0),
                ramp.len(),
                ramp.step.as_secs_f64(),
                config.ramp_p99_max_ns as f64 / 1e6
            ),
        );
    }
    settings.extend([
        ("users".to_owned(), users),
        ("max_open".to_owned(), config.max_open.to_string()),
        ("spin_us".to_owned(), config.spin.as_micros().to_string()),
        ("pin".to_owned(), format!("{:?}", config.pin)),
    ]);
    Report {
        kind: kind.into(),
        target: config.address.clone(),
        connections: config.connections,
        settings,
        offered_rate: config.ramp.as_ref().map_or(config.rate as f64, Ramp::mean_rate),
        achieved_send_rate: achieved_rate(sent.sent_measured, sent.first_send_ns, sent.last_send_ns),
        achieved_response_rate: achieved_rate(answered, first_answer, last_answer),
        warmup_s: config.warmup.as_secs_f64(),
        duration_s: config.duration.as_secs_f64(),
        sent: sent.sent_measured,
        answered,
        unanswered,
        latencies: histograms.iter().map(|(name, h)| LatencySummary::of(name, h)).collect(),
        outcomes,
        rejects,
        errors,
        histograms,
        ramp: Vec::new(),
    }
}
