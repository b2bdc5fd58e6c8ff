//! The FIX gateway run: `C` FIX 4.4 sessions, each logged on as its own load-test user, driven
//! open loop with the same schedule, order mix and report as the SBE run ([`crate::sbe`]).
//!
//! # Sessions
//!
//! Connection `k` logs on as SenderCompID `LOAD<first_user + k>` to TargetCompID `EXCHANGE`
//! (the sessions `exchange --load-users N` registers), with the load user's key: Username(553)
//! is the base64 Ed25519 public key and Password(554) the base64 signature of
//! [`gateway_fix::logon_payload`]. The Logon asks for ResetSeqNumFlag(141)=Y, so every run
//! starts both sequence series at 1. The receiver answers TestRequests with a Heartbeat and the
//! sender sends a Heartbeat when a session has been idle for a second (only at very low rates).
//!
//! # Requests and correlation
//!
//! Requests come from the same [`OrderFlow`] as the SBE run: GTC and IOC limit orders and market
//! orders become NewOrderSingle (35=D) with ClOrdID(11) the flow's client order id in decimal,
//! cancels become OrderCancelRequest (35=F) with ClOrdID `<order's id>C` and OrigClOrdID(41) the
//! order's. Prices and quantities are written as decimal strings on the market's grid: the
//! flow's ticks and lots scaled by `price_decimals` and `quantity_decimals` (BTC_USDC: tick
//! 0.1 USDC, lot 0.00001 BTC). Cancel-replaces are not generated (a replace changes the order's
//! ClOrdID; `replace_pct` must be 0).
//!
//! The first answer carrying a request's ClOrdID ends it: an ExecutionReport New or Rejected for
//! a new order, an ExecutionReport Canceled (ClOrdID the request's) or an OrderCancelReject for a
//! cancel, a BusinessMessageReject (BusinessRejectRefID(379) = ClOrdID) for either. Its latency
//! is the read time minus the request's **scheduled** time, exactly as for SBE; the first
//! taker fill (LastLiquidityInd(851)=2) of the last acknowledged order gives the fill latency.
//! The threads, the schedule, the drain and the report are the SBE run's.

use crate::LoadError;
use crate::flow::{OpenOrder, OpenOrders, OrderFlow, RequestKind};
use crate::latency::{Histograms, Sent};
use crate::progress::{Counters, Progress};
use crate::ramp::LiveStats;
use crate::report::Report;
use crate::sbe::{ConnFigures, SBE_HISTOGRAMS, SbeConfig, SentTotals, gateway_report};
use crate::schedule::{Batches, Clock, Pacer, Schedule, pin_current_thread};
use crate::users::load_user_secret;
use base64::Engine as _;
use codec::{Command, OrderType, Side, TimeInForce};
use ed25519_dalek::Signer;
use gateway_fix::encoder::{Body, Header, time};
use gateway_fix::parser::{Message, Parsed, parse};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Settings of a FIX run.
#[derive(Debug, Clone)]
pub struct FixConfig {
    /// Address, connections, rate, duration, mix, prices… as for SBE (`batch` is ignored; the
    /// default address is the FIX gateway's, 127.0.0.1:9200).
    pub run: SbeConfig,
    /// Symbol(55) of `run.prices.market_id`.
    pub symbol: String,
    /// Decimals of one price tick (BTC_USDC: 1, a tick is 0.1 USDC).
    pub price_decimals: u32,
    /// Decimals of one lot (BTC_USDC: 5, a lot is 0.00001 BTC).
    pub quantity_decimals: u32,
    /// The gateway's CompID, TargetCompID(56).
    pub target_comp_id: String,
    /// HeartBtInt(108), seconds.
    pub heartbeat_s: u32,
}

impl Default for FixConfig {
    fn default() -> Self {
        Self {
            run: SbeConfig { address: "127.0.0.1:9200".into(), ..SbeConfig::default() },
            symbol: "BTC_USDC".into(),
            price_decimals: 1,
            quantity_decimals: 5,
            target_comp_id: "EXCHANGE".into(),
            heartbeat_s: 30,
        }
    }
}

/// The SenderCompID of load-test user `user`.
pub fn sender_comp_id(user: u64) -> String {
    format!("LOAD{user}")
}

/// `value` units of `10^-decimals` as a decimal string (`600000, 1` → `60000.0`).
pub fn decimal(value: u64, decimals: u32) -> String {
    if decimals == 0 {
        return value.to_string();
    }
    let scale = 10u64.pow(decimals);
    format!("{}.{:0width$}", value / scale, value % scale, width = decimals as usize)
}

const ACK_ALL: usize = 0;
const FILL: usize = 6;
const ACK_ALL_UNCORRECTED: usize = 7;
const SEND_LAG: usize = 8;

fn ack_histogram(kind: RequestKind) -> usize {
    match kind {
        RequestKind::Limit => 1,
        RequestKind::Ioc => 2,
        RequestKind::Market => 3,
        RequestKind::Cancel => 4,
        RequestKind::Replace => 5,
    }
}

/// A request waiting for its first answer.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    sent: Sent,
    kind: RequestKind,
    measured: bool,
    /// The order's client order id (its own for a new order, the target's for a cancel).
    order: u64,
    /// For a GTC limit: the order as it rests once accepted.
    resting: Option<OpenOrder>,
    /// Its ramp step ([`crate::ramp::NO_STEP`]: none).
    step: u32,
}

/// What the sender and a connection's receiver share.
struct ConnState {
    open: OpenOrders,
    inflight: HashMap<String, Inflight>,
    last_ack: Option<(u64, Sent, bool, bool)>,
    histograms: Histograms,
    live: LiveStats,
    outcomes: BTreeMap<String, u64>,
    rejects: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    answered: u64,
    first_answer_ns: u64,
    last_answer_ns: u64,
    mass_cancel_reports: u64,
    closed: bool,
    dead: bool,
}

impl ConnState {
    fn new(live: LiveStats) -> Self {
        Self {
            open: OpenOrders::default(),
            inflight: HashMap::new(),
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
        *self.outcomes.entry(what.to_owned()).or_default() += 1;
    }

    fn reject(&mut self, counters: &Counters, what: String) {
        if self.closed {
            return;
        }
        Counters::bump(&counters.rejects);
        *self.rejects.entry(what).or_default() += 1;
    }

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
        if self.answered == 0 {
            self.first_answer_ns = now;
        }
        self.answered += 1;
        self.last_answer_ns = now;
    }

    /// Ends the request `cl_ord_id` if `accept` says the answer fits its kind.
    fn resolve(&mut self, cl_ord_id: &str, accept: impl Fn(RequestKind) -> bool) -> Option<Inflight> {
        let inflight = self.inflight.get(cl_ord_id)?;
        if !accept(inflight.kind) {
            return None;
        }
        self.inflight.remove(cl_ord_id)
    }

    fn unmatched(&mut self, counters: &Counters, what: &str) {
        if !self.closed {
            self.error(counters, format!("{what} matching no request"));
        }
    }

    /// Handles one application or session message; `Err` ends the connection.
    fn on_message(&mut self, message: &Message<'_>, now: u64, counters: &Counters) -> Result<Option<String>, String> {
        let text = |tag| message.text(tag).unwrap_or("");
        match message.msg_type() {
            b"8" => self.on_execution_report(message, now, counters),
            b"9" => match self.resolve(text(11), |kind| kind == RequestKind::Cancel) {
                Some(inflight) => {
                    self.reject(counters, format!("CxlRejReason {}", text(102)));
                    self.answered(&inflight, now, counters);
                    self.outcome("cancel_rejected");
                }
                None => self.unmatched(counters, "OrderCancelReject"),
            },
            b"j" => {
                self.reject(counters, format!("BusinessRejectReason {}", text(380)));
                if !self.closed {
                    Counters::bump(&counters.gateway_rejects);
                }
                match self.resolve(text(379), |_| true) {
                    Some(inflight) => {
                        self.answered(&inflight, now, counters);
                        self.outcome("business_rejected");
                    }
                    None if text(372) == "q" => self.mass_cancel_reports += 1,
                    None => self.unmatched(counters, "BusinessMessageReject"),
                }
            }
            b"r" => self.mass_cancel_reports += 1,
            b"3" => self.error(counters, format!("session Reject: {} ({})", text(58), text(373))),
            b"1" => return Ok(Some(text(112).to_owned())),
            b"5" => return Err(format!("logged out by the server: {}", text(58))),
            b"2" => self.error(counters, "ResendRequest from the server (not supported)"),
            b"0" | b"4" | b"A" => {}
            other => self.error(counters, format!("unexpected MsgType {}", String::from_utf8_lossy(other))),
        }
        Ok(None)
    }

    fn on_execution_report(&mut self, message: &Message<'_>, now: u64, counters: &Counters) {
        let text = |tag| message.text(tag).unwrap_or("");
        let cl_ord_id = text(11);
        match text(150) {
            "0" => {
                let Some(inflight) = self.resolve(cl_ord_id, RequestKind::is_new_order) else {
                    return self.unmatched(counters, "ExecutionReport New");
                };
                self.answered(&inflight, now, counters);
                self.outcome("accepted");
                self.last_ack = Some((inflight.order, inflight.sent, inflight.measured, false));
                if let Some(order) = inflight.resting {
                    self.open.insert(inflight.order, order);
                }
            }
            "8" => {
                self.reject(counters, format!("OrdRejReason {}", text(103)));
                let Some(inflight) = self.resolve(cl_ord_id, |_| true) else {
                    return self.unmatched(counters, "ExecutionReport Rejected");
                };
                self.answered(&inflight, now, counters);
                self.outcome("rejected");
            }
            "F" => {
                self.outcome("fills");
                let order: u64 = cl_ord_id.parse().unwrap_or(0);
                if text(851) == "2"
                    && let Some((key, sent, measured, filled)) = &mut self.last_ack
                    && *key == order
                    && !*filled
                {
                    *filled = true;
                    if *measured && !self.closed {
                        let latency = sent.latency_ns(now);
                        self.histograms.record(FILL, latency);
                    }
                }
                if text(39) == "2" {
                    self.open.remove(order);
                }
            }
            "4" => {
                let original = message.text(41).and_then(|id| id.parse().ok()).or_else(|| cl_ord_id.parse().ok());
                if let Some(original) = original {
                    self.open.remove(original);
                }
                match self.resolve(cl_ord_id, |kind| kind == RequestKind::Cancel) {
                    Some(inflight) => {
                        self.answered(&inflight, now, counters);
                        self.outcome("canceled");
                    }
                    None => self.outcome("canceled_other"),
                }
            }
            "C" => {
                if let Ok(order) = cl_ord_id.parse() {
                    self.open.remove(order);
                }
                self.outcome("expired");
            }
            other => self.outcome(&format!("exec_type_{other}")),
        }
    }
}

fn lock(state: &Mutex<ConnState>) -> MutexGuard<'_, ConnState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The writing half of a session: sequence numbers are taken and messages written under one
/// lock, so the sender's orders and the receiver's heartbeats go out in sequence order.
struct Writer {
    stream: TcpStream,
    header: Header,
    next_sequence: u64,
    last_send_ns: u64,
}

impl Writer {
    fn send(&mut self, msg_type: &[u8], body: &[u8]) -> std::io::Result<()> {
        let sending_time = time::format(time::now_ms());
        let message = self.header.encode(msg_type, self.next_sequence, &sending_time, None, body);
        self.next_sequence += 1;
        self.stream.write_all(&message)
    }
}

fn lock_writer(writer: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    writer.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connects and logs on as load user `user`; returns the socket and any bytes read past the
/// Logon answer.
fn logon(config: &FixConfig, user: u64) -> Result<(TcpStream, Header, Vec<u8>), String> {
    let address = &config.run.address;
    let mut stream = TcpStream::connect(address).map_err(|e| format!("connect to {address}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let sender = sender_comp_id(user);
    let header = Header::new(&sender, &config.target_comp_id);
    let key = ed25519_dalek::SigningKey::from_bytes(&load_user_secret(user));
    let sending_time = time::format(time::now_ms());
    let payload = gateway_fix::logon_payload(&sending_time, b"1", sender.as_bytes(), config.target_comp_id.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut body = Body::new();
    body.field(98, "0")
        .uint(108, u64::from(config.heartbeat_s))
        .field(141, "Y")
        .field(553, b64.encode(key.verifying_key().to_bytes()))
        .field(554, b64.encode(key.sign(&payload).to_bytes()));
    let message = header.encode(b"A", 1, &sending_time, None, &body.0);
    stream.write_all(&message).map_err(|e| e.to_string())?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match parse(&buffer) {
            Parsed::Complete(message, used) => {
                let (msg_type, text) = (message.msg_type().to_vec(), message.text(58).unwrap_or("").to_owned());
                buffer.drain(..used);
                match msg_type.as_slice() {
                    b"A" => break,
                    b"5" => return Err(format!("logon refused: {text}")),
                    _ => continue,
                }
            }
            Parsed::Garbled(skip) => {
                buffer.drain(..skip);
                continue;
            }
            Parsed::Incomplete => {}
        }
        let read = stream.read(&mut chunk).map_err(|e| format!("logon: {e}"))?;
        if read == 0 {
            return Err("connection closed during logon".into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok((stream, header, buffer))
}

/// A receiver thread's loop: read, stamp, correlate, answer TestRequests.
fn receive_loop(
    mut stream: TcpStream,
    mut buffer: Vec<u8>,
    state: Arc<Mutex<ConnState>>,
    writer: Arc<Mutex<Writer>>,
    clock: Clock,
    counters: Arc<Counters>,
    stopping: Arc<AtomicBool>,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut test_requests = Vec::new();
    loop {
        let now = clock.now_ns();
        let mut guard = lock(&state);
        let mut offset = 0;
        loop {
            match parse(&buffer[offset..]) {
                Parsed::Complete(message, used) => {
                    offset += used;
                    match guard.on_message(&message, now, &counters) {
                        Ok(Some(id)) => test_requests.push(id),
                        Ok(None) => {}
                        Err(reason) => {
                            if !stopping.load(Ordering::Acquire) {
                                guard.error(&counters, reason);
                            }
                            guard.dead = true;
                            return;
                        }
                    }
                }
                Parsed::Garbled(skip) => {
                    offset += skip;
                    guard.error(&counters, "garbled message from the server");
                }
                Parsed::Incomplete => break,
            }
        }
        buffer.drain(..offset);
        drop(guard);
        for id in test_requests.drain(..) {
            let mut body = Body::new();
            body.field(112, id);
            let _ = lock_writer(&writer).send(b"0", &body.0);
        }
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
    writer: Arc<Mutex<Writer>>,
    state: Arc<Mutex<ConnState>>,
    flow: OrderFlow,
}

/// Encodes a request of the flow as a FIX message; returns (MsgType, body, ClOrdID, resting).
fn encode(config: &FixConfig, command: &Command, kind: RequestKind, key: u64) -> (&'static [u8], Vec<u8>, String) {
    let mut body = Body::new();
    match command {
        Command::CancelOrder(_) => {
            let cl_ord_id = format!("{key}C");
            body.field(11, &cl_ord_id).field(41, key.to_string()).field(55, &config.symbol);
            (b"F", body.0, cl_ord_id)
        }
        Command::NewOrder(order) => {
            let cl_ord_id = key.to_string();
            let side = if order.side.get() == Ok(Side::Bid) { "1" } else { "2" };
            let sending_time = time::format(time::now_ms());
            body.field(11, &cl_ord_id).field(55, &config.symbol).field(54, side).field(60, sending_time);
            body.field(38, decimal(order.quantity_lots.get(), config.quantity_decimals));
            if kind == RequestKind::Market || order.order_type.get() == Ok(OrderType::Market) {
                body.field(40, "1");
            } else {
                body.field(40, "2").field(44, decimal(order.price_ticks.get(), config.price_decimals));
                let tif = if order.time_in_force.get() == Ok(TimeInForce::Ioc) { "3" } else { "1" };
                body.field(59, tif);
            }
            (b"D", body.0, cl_ord_id)
        }
        other => unreachable!("the FIX run never generates {other:?}"),
    }
}

/// Sends an OrderMassCancelRequest for the symbol on every connection and waits (up to 5 s) for
/// the reports.
fn mass_cancel_all(conns: &[Conn], config: &FixConfig, counters: &Counters, tag: &str) {
    let mut before = Vec::new();
    for (k, conn) in conns.iter().enumerate() {
        before.push(lock(&conn.state).mass_cancel_reports);
        let mut body = Body::new();
        body.field(11, format!("MC{tag}{k}-{}", time::now_ms())).field(530, "1").field(55, &config.symbol);
        if let Err(error) = lock_writer(&conn.writer).send(b"q", &body.0) {
            let mut state = lock(&conn.state);
            state.error(counters, format!("send: {error}"));
            state.dead = true;
        }
    }
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

/// Runs the FIX load and returns its report (kind `fix`, the same histograms as SBE).
///
/// # Errors
/// Invalid settings, or a connection that cannot connect or log on.
pub fn run(config: &FixConfig) -> Result<Report, LoadError> {
    let run = &config.run;
    run.mix.validate().map_err(LoadError::new)?;
    if run.mix.replace_pct > 0 {
        return Err(LoadError::new("the fix target does not send cancel-replaces: use --replace-pct 0"));
    }
    if run.connections == 0 || run.rate == 0 {
        return Err(LoadError::new("need at least one connection and a positive rate"));
    }
    let clock = Clock::start();
    let counters = Arc::new(run.counters());
    let stopping = Arc::new(AtomicBool::new(false));
    let run_base =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64)
            * 1_000_000;
    let mut conns: Vec<Conn> = Vec::with_capacity(run.connections);
    let mut receivers: Vec<std::thread::JoinHandle<()>> = Vec::with_capacity(run.connections);
    for k in 0..run.connections {
        let user = run.first_user + k as u64;
        let (stream, header, leftover) = match logon(config, user) {
            Ok(logged_on) => logged_on,
            Err(error) => {
                stopping.store(true, Ordering::Release);
                for conn in &conns {
                    let _ = lock_writer(&conn.writer).stream.shutdown(std::net::Shutdown::Both);
                }
                for receiver in receivers {
                    let _ = receiver.join();
                }
                return Err(LoadError::new(format!("connection {k} ({}): {error}", sender_comp_id(user))));
            }
        };
        let reader = stream.try_clone()?;
        let writer = Arc::new(Mutex::new(Writer { stream, header, next_sequence: 2, last_send_ns: 0 }));
        let state = Arc::new(Mutex::new(ConnState::new(run.live_stats())));
        let (state_r, writer_r, counters_r, stopping_r) =
            (state.clone(), writer.clone(), counters.clone(), stopping.clone());
        let core = (!run.pin.is_empty()).then(|| run.pin[(k + 1) % run.pin.len()]);
        receivers.push(std::thread::Builder::new().name(format!("loadgen-fix-recv-{k}")).spawn(move || {
            if let Some(core) = core {
                pin_current_thread(core);
            }
            receive_loop(reader, leftover, state_r, writer_r, clock, counters_r, stopping_r)
        })?);
        let flow = run.flow(k, run_base);
        conns.push(Conn { writer, state, flow });
    }
    let states: Vec<_> = conns.iter().map(|c| c.state.clone()).collect();
    if run.cleanup {
        mass_cancel_all(&conns, config, &counters, "B");
    }

    let (schedule, total) = run.schedule();
    let warmup_ns = run.warmup.as_nanos() as u64;
    let start_ns = clock.now_ns() + 5_000_000;
    let pacer = Pacer::new(run.spin);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (counters, config, stop) = (counters.clone(), config.clone(), stop.clone());
        let core = run.pin.first().copied();
        std::thread::Builder::new().name("loadgen-fix-send".into()).spawn(move || {
            if let Some(core) = core {
                pin_current_thread(core);
            }
            let timing = SendTiming { schedule, clock, pacer, start_ns, warmup_ns, total, stop };
            let totals = send_loop(&mut conns, &config, timing, &counters);
            (conns, totals)
        })?
    };
    let mut progress = Progress::new(run.progress, "fix", run.warmup + run.duration);
    let mut monitor = run.monitor(start_ns);
    let mut gather = |f: &mut dyn FnMut(&mut LiveStats)| {
        for state in &states {
            f(&mut lock(state).live);
        }
    };
    crate::ramp::watch(&sender, &mut progress, &counters, &clock, monitor.as_mut(), &stop, &mut gather);
    let (conns, sent) = sender.join().map_err(|_| LoadError::new("sender panicked"))?;

    let drain_deadline = Instant::now() + run.drain;
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
    if run.cleanup {
        mass_cancel_all(&conns, config, &counters, "E");
    }
    stopping.store(true, Ordering::Release);
    for conn in &conns {
        let mut writer = lock_writer(&conn.writer);
        let mut body = Body::new();
        body.field(58, "loadgen done");
        let _ = writer.send(b"5", &body.0);
        let _ = writer.stream.shutdown(std::net::Shutdown::Write);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while receivers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    for conn in &conns {
        let _ = lock_writer(&conn.writer).stream.shutdown(std::net::Shutdown::Both);
    }
    for receiver in receivers {
        let _ = receiver.join();
    }

    let figures = states
        .iter()
        .map(|state| {
            let state = lock(state);
            ConnFigures {
                histograms: state.histograms.clone(),
                outcomes: state.outcomes.clone(),
                rejects: state.rejects.clone(),
                errors: state.errors.clone(),
                answered: state.answered,
                first_answer_ns: state.first_answer_ns,
                last_answer_ns: state.last_answer_ns,
            }
        })
        .collect();
    let mut report = gateway_report("fix", run, SBE_HISTOGRAMS, figures, &sent, unanswered);
    report.settings.insert("symbol".to_owned(), config.symbol.clone());
    crate::ramp::attach(&mut report, run.ramp.as_ref(), ramp);
    Ok(report)
}

/// The sender's timing: the schedule, where it starts, and the ramp monitor's stop flag.
struct SendTiming {
    schedule: Schedule,
    clock: Clock,
    pacer: Pacer,
    start_ns: u64,
    warmup_ns: u64,
    total: u64,
    stop: Arc<AtomicBool>,
}

/// The sender's loop: every request at its due time, round robin over the sessions.
fn send_loop(conns: &mut [Conn], config: &FixConfig, timing: SendTiming, counters: &Counters) -> SentTotals {
    let SendTiming { schedule, clock, pacer, start_ns, warmup_ns, total, stop } = timing;
    let mut totals = SentTotals { sent_measured: 0, first_send_ns: 0, last_send_ns: 0, sent_by_kind: BTreeMap::new() };
    const IDLE: u64 = 1_000_000_000;
    let connections = conns.len();
    for batch in Batches::new(schedule.clone(), connections, total, 1) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (index, offset) = batch.requests[0];
        let due = start_ns + offset;
        while due > clock.now_ns() + IDLE {
            std::thread::sleep(Duration::from_millis(500));
            let now = clock.now_ns();
            for conn in conns.iter() {
                let mut writer = lock_writer(&conn.writer);
                if now.saturating_sub(writer.last_send_ns) > IDLE {
                    let _ = writer.send(b"0", &[]);
                    writer.last_send_ns = now;
                }
            }
        }
        let actual = pacer.wait_until(&clock, due);
        let measured = offset >= warmup_ns;
        let step = config.run.step_at(offset);
        let conn = &mut conns[schedule.connection(index)];
        let (msg_type, body, kind) = {
            let mut state = lock(&conn.state);
            if state.dead {
                state.error(counters, "not sent: connection down");
                continue;
            }
            let request = conn.flow.next(&mut state.open);
            let (msg_type, body, cl_ord_id) = encode(config, &request.command, request.kind, request.key);
            let resting = match (&request.command, request.kind) {
                (Command::NewOrder(order), RequestKind::Limit) => order.side.get().ok().map(|side| OpenOrder {
                    side,
                    price_ticks: order.price_ticks.get(),
                    remaining_lots: order.quantity_lots.get(),
                    busy: false,
                }),
                _ => None,
            };
            let inflight = Inflight {
                sent: Sent { scheduled_ns: due, actual_ns: actual },
                kind: request.kind,
                measured,
                order: request.key,
                resting,
                step,
            };
            if state.inflight.insert(cl_ord_id, inflight).is_some() {
                state.error(counters, "request for an order already in flight");
            }
            if request.substituted {
                state.outcome("substituted");
            }
            (msg_type, body, request.kind)
        };
        let sent = {
            let mut writer = lock_writer(&conn.writer);
            writer.last_send_ns = actual;
            writer.send(msg_type, &body)
        };
        if let Err(error) = sent {
            let mut state = lock(&conn.state);
            state.error(counters, format!("send: {error}"));
            state.dead = true;
            continue;
        }
        Counters::bump(&counters.sent);
        counters.bump_step(step);
        *totals.sent_by_kind.entry(kind).or_default() += 1;
        if measured {
            if totals.sent_measured == 0 {
                totals.first_send_ns = actual;
            }
            totals.sent_measured += 1;
            totals.last_send_ns = actual;
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_on_the_grid() {
        assert_eq!(decimal(600_000, 1), "60000.0");
        assert_eq!(decimal(600_013, 1), "60001.3");
        assert_eq!(decimal(2, 5), "0.00002");
        assert_eq!(decimal(123_456, 5), "1.23456");
        assert_eq!(decimal(7, 0), "7");
    }
}
