//! The REST run: `C` keep-alive HTTP/1.1 connections to `POST /api/v1/order` and
//! `DELETE /api/v1/order`, one user per connection (a load-test user of `exchange --load-users`,
//! or one created through the admin API: [`crate::users::setup`]), driven open loop with the same
//! schedule, order mix and report as the SBE run ([`crate::sbe`]).
//!
//! # Requests
//!
//! The [`OrderFlow`]'s GTC and IOC limits and market orders become signed `POST /api/v1/order`
//! bodies (`symbol`, `side`, `orderType`, `price`, `quantity`, `timeInForce`, `clientId`), its
//! cancels signed `DELETE /api/v1/order` bodies (`symbol`, `clientId`). Cancel-replaces are not
//! generated (the REST API has none; `replace_pct` must be 0). `clientId` is a `u32` on this API,
//! so each connection numbers its orders from a per-run base and maps the flow's ids to them.
//! Every request is signed as the REST API documents (Ed25519 over
//! `instruction=…&<sorted body keys>&timestamp=…&window=…`, see [`signing_string`]) with the
//! connection's key.
//!
//! **Signing is done ahead of the scheduled time and not counted**: the sender takes the next
//! request from the flow, builds and signs it, and only then waits for its due time and writes
//! it. Latency is measured from the scheduled time to the read that completed the HTTP answer,
//! so the client's Ed25519 signing (tens of µs) is outside every figure, as it is outside a
//! real client's wire time; if the sender falls behind, the signing time shows up as send lag
//! (and in the corrected latency), never hidden.
//!
//! # Correlation
//!
//! Requests are pipelined (see [`crate::http`]): the answers of a connection come in request
//! order, so the receiver matches each answer to the oldest request in flight. `200` ends a
//! request as accepted (a GTC limit with status `New` or `PartiallyFilled` rests and can be
//! cancelled later; `Filled`, `Expired` and `Cancelled` are counted by status); any other status
//! is a reject counted by `"<status> <code>"` (`"400 INSUFFICIENT_FUNDS"`,
//! `"429 TOO_MANY_REQUESTS"`). A cancel answered `404` removes its order from the connection's
//! open orders (it was filled by someone else: the REST run has no private stream to learn it).
//! The fill histogram stays empty: the REST answer only carries the taker fills of the request
//! itself, which arrive with (and at the latency of) the acknowledgement.
//!
//! Unless `cleanup` is off, each connection cancels its user's orders on the market
//! (`DELETE /api/v1/orders`) before and after the run.
//!
//! The server's per-IP (2000/s) and per-key (1000/s) request limits apply: above them answers
//! are `429`; raise `[http] ip_requests_per_second` / `key_requests_per_second` for runs at
//! higher rates (docs/benchmarks.md).

use crate::LoadError;
use crate::fix::decimal;
use crate::flow::{OpenOrder, OpenOrders, OrderFlow, RequestKind};
use crate::http::{Response, parse_response, request};
use crate::latency::{Histograms, Sent};
use crate::progress::{Counters, Progress};
use crate::ramp::LiveStats;
use crate::report::Report;
use crate::sbe::{ConnFigures, SBE_HISTOGRAMS, SbeConfig, SentTotals, gateway_report};
use crate::schedule::{Batches, Clock, Pacer, Schedule, pin_current_thread};
use base64::Engine as _;
use codec::{Command, OrderType, Side, TimeInForce};
use ed25519_dalek::{Signer, SigningKey};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Settings of a REST run.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Address, connections, rate, duration, mix, prices… as for SBE (`batch` is ignored; the
    /// default address is the HTTP server's, 127.0.0.1:8080).
    pub run: SbeConfig,
    /// The market's symbol.
    pub symbol: String,
    /// Decimals of one price tick (BTC_USDC: 1).
    pub price_decimals: u32,
    /// Decimals of one lot (BTC_USDC: 5).
    pub quantity_decimals: u32,
    /// `X-Window`, ms.
    pub window_ms: u64,
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            run: SbeConfig { address: "127.0.0.1:8080".into(), ..SbeConfig::default() },
            symbol: "BTC_USDC".into(),
            price_decimals: 1,
            quantity_decimals: 5,
            window_ms: 5_000,
        }
    }
}

/// The string a signed request signs: `instruction=<instruction>`, the parameters sorted by
/// key as `&key=value` (values as sent, strings without quotes), then
/// `&timestamp=<ms>&window=<ms>`.
pub fn signing_string(instruction: &str, params: &[(&str, String)], timestamp_ms: u64, window_ms: u64) -> String {
    let mut sorted: Vec<&(&str, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = format!("instruction={instruction}");
    for (key, value) in sorted {
        out.push('&');
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out.push_str(&format!("&timestamp={timestamp_ms}&window={window_ms}"));
    out
}

/// A signer of requests for one user.
pub struct RequestSigner {
    key: SigningKey,
    api_key: String,
    window_ms: u64,
}

impl RequestSigner {
    /// The signer of the user whose API secret is `secret`.
    pub fn new(secret: &[u8; 32], window_ms: u64) -> Self {
        let key = SigningKey::from_bytes(secret);
        let api_key = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
        Self { key, api_key, window_ms }
    }

    /// The bytes of a signed request whose JSON body has `params` (`numeric` keys are written as
    /// JSON numbers, the others as strings).
    pub fn signed(
        &self,
        method: &str,
        path: &str,
        instruction: &str,
        params: &[(&str, String)],
        numeric: &[&str],
        timestamp_ms: u64,
    ) -> Vec<u8> {
        let signed = signing_string(instruction, params, timestamp_ms, self.window_ms);
        let signature = base64::engine::general_purpose::STANDARD.encode(self.key.sign(signed.as_bytes()).to_bytes());
        let mut body = serde_json::Map::new();
        for (key, value) in params {
            let json = if numeric.contains(key) {
                serde_json::Value::Number(value.parse::<u64>().unwrap_or(0).into())
            } else {
                serde_json::Value::String(value.clone())
            };
            body.insert((*key).to_owned(), json);
        }
        let body = serde_json::Value::Object(body).to_string();
        let (timestamp, window) = (timestamp_ms.to_string(), self.window_ms.to_string());
        let headers = [
            ("X-API-Key", self.api_key.as_str()),
            ("X-Signature", signature.as_str()),
            ("X-Timestamp", timestamp.as_str()),
            ("X-Window", window.as_str()),
        ];
        request(method, path, &headers, Some(&body))
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

const ACK_ALL: usize = 0;
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

/// A request waiting for its answer.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    sent: Sent,
    kind: RequestKind,
    measured: bool,
    /// The flow's id of the order (its own for a new order, the target's for a cancel).
    order: u64,
    /// For a GTC limit: the order as it rests once accepted.
    resting: Option<OpenOrder>,
    step: u32,
}

/// What is in flight on a connection, in request order.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Request(Inflight),
    /// A cancel-all of the cleanup (not measured).
    CancelAll,
}

/// What the sender and a connection's receiver share.
struct ConnState {
    open: OpenOrders,
    pending: VecDeque<Pending>,
    histograms: Histograms,
    live: LiveStats,
    outcomes: BTreeMap<String, u64>,
    rejects: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    answered: u64,
    first_answer_ns: u64,
    last_answer_ns: u64,
    cancel_alls: u64,
    closed: bool,
    dead: bool,
}

impl ConnState {
    fn new(live: LiveStats) -> Self {
        Self {
            open: OpenOrders::default(),
            pending: VecDeque::new(),
            histograms: Histograms::new(SBE_HISTOGRAMS),
            live,
            outcomes: BTreeMap::new(),
            rejects: BTreeMap::new(),
            errors: BTreeMap::new(),
            answered: 0,
            first_answer_ns: 0,
            last_answer_ns: 0,
            cancel_alls: 0,
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

    fn in_flight(&self) -> usize {
        self.pending.iter().filter(|p| matches!(p, Pending::Request(_))).count()
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

    /// Handles the answer to the oldest request in flight.
    fn on_response(&mut self, response: &Response, now: u64, counters: &Counters) {
        let Some(pending) = self.pending.pop_front() else {
            return self.error(counters, "answer matching no request");
        };
        let inflight = match pending {
            Pending::CancelAll => {
                self.cancel_alls += 1;
                if response.status != 200 {
                    self.error(counters, format!("cancel-all answered {}", response.reason()));
                }
                return;
            }
            Pending::Request(inflight) => inflight,
        };
        self.answered(&inflight, now, counters);
        if response.status == 200 {
            if inflight.kind == RequestKind::Cancel {
                self.open.remove(inflight.order);
                self.outcome("canceled");
                return;
            }
            let status = serde_json::from_slice::<serde_json::Value>(&response.body)
                .ok()
                .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_owned))
                .unwrap_or_else(|| "unknown status".to_owned());
            self.outcome(&format!("status {status}"));
            if matches!(status.as_str(), "New" | "PartiallyFilled")
                && let Some(order) = inflight.resting
            {
                self.open.insert(inflight.order, order);
            }
            return;
        }
        if inflight.kind == RequestKind::Cancel {
            // Not open any more (filled meanwhile) or refused: either way, forget it.
            self.open.remove(inflight.order);
        }
        if response.status == 429 || response.status == 503 {
            Counters::bump(&counters.gateway_rejects);
        }
        if !self.closed {
            Counters::bump(&counters.rejects);
            *self.rejects.entry(response.reason()).or_default() += 1;
        }
        self.outcome("rejected");
    }
}

fn lock(state: &Mutex<ConnState>) -> MutexGuard<'_, ConnState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connection as the sender sees it.
struct Conn {
    stream: Arc<Mutex<TcpStream>>,
    state: Arc<Mutex<ConnState>>,
    flow: OrderFlow,
    signer: RequestSigner,
    /// The flow's order ids → this run's `clientId`s.
    client_ids: HashMap<u64, u32>,
    next_client_id: u32,
}

impl Conn {
    fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.lock().unwrap_or_else(|e| e.into_inner()).write_all(bytes)
    }
}

fn receive_loop(
    mut stream: TcpStream,
    state: Arc<Mutex<ConnState>>,
    clock: Clock,
    counters: Arc<Counters>,
    stopping: Arc<AtomicBool>,
) {
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
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
        let now = clock.now_ns();
        let mut offset = 0;
        let mut guard = lock(&state);
        loop {
            match parse_response(&buffer[offset..]) {
                Ok(Some((response, used))) => {
                    offset += used;
                    guard.on_response(&response, now, &counters);
                }
                Ok(None) => break,
                Err(error) => {
                    guard.error(&counters, format!("malformed answer: {error}"));
                    guard.dead = true;
                    return;
                }
            }
        }
        drop(guard);
        buffer.drain(..offset);
    }
}

/// Queues a cancel-all of the connection's user on every connection and waits (up to 5 s) for
/// the answers.
fn cancel_all(conns: &[Conn], config: &RestConfig, counters: &Counters) {
    let mut before = Vec::new();
    for conn in conns {
        let bytes = conn.signer.signed(
            "DELETE",
            "/api/v1/orders",
            "orderCancelAll",
            &[("symbol", config.symbol.clone())],
            &[],
            now_ms(),
        );
        let mut state = lock(&conn.state);
        before.push(state.cancel_alls);
        if state.dead {
            continue;
        }
        state.pending.push_back(Pending::CancelAll);
        drop(state);
        if let Err(error) = conn.write(&bytes) {
            let mut state = lock(&conn.state);
            state.error(counters, format!("send: {error}"));
            state.dead = true;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let done = conns.iter().zip(&before).all(|(conn, &before)| {
            let state = lock(&conn.state);
            state.dead || state.cancel_alls > before
        });
        if done {
            return;
        }
        if Instant::now() > deadline {
            for (conn, &before) in conns.iter().zip(&before) {
                let mut state = lock(&conn.state);
                if !state.dead && state.cancel_alls <= before {
                    state.error(counters, "cancel-all unanswered");
                }
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs the REST load and returns its report (kind `rest`, the same histograms as SBE).
///
/// # Errors
/// Invalid settings, or a connection that cannot connect.
pub fn run(config: &RestConfig) -> Result<Report, LoadError> {
    let run = &config.run;
    run.mix.validate().map_err(LoadError::new)?;
    if run.mix.replace_pct > 0 {
        return Err(LoadError::new("the rest target does not send cancel-replaces: use --replace-pct 0"));
    }
    if run.connections == 0 || run.rate == 0 {
        return Err(LoadError::new("need at least one connection and a positive rate"));
    }
    if let Some(users) = &run.users
        && users.len() < run.connections
    {
        return Err(LoadError::new(format!("{} users for {} connections", users.len(), run.connections)));
    }
    let clock = Clock::start();
    let counters = Arc::new(run.counters());
    let stopping = Arc::new(AtomicBool::new(false));
    // clientIds start at a per-run base so that a run never reuses an id still open from an
    // earlier one (the cleanup cancels those anyway).
    let id_base = ((now_ms() / 1000) % 2_000_000) as u32 * 1000 + 1;
    let mut conns: Vec<Conn> = Vec::with_capacity(run.connections);
    let mut receivers: Vec<std::thread::JoinHandle<()>> = Vec::with_capacity(run.connections);
    for k in 0..run.connections {
        let address = &run.address;
        let stream = match TcpStream::connect(address) {
            Ok(stream) => stream,
            Err(error) => {
                stopping.store(true, Ordering::Release);
                for conn in &conns {
                    let _ = conn.stream.lock().map(|s| s.shutdown(std::net::Shutdown::Both));
                }
                for receiver in receivers {
                    let _ = receiver.join();
                }
                return Err(LoadError::new(format!("connection {k}: connect to {address}: {error}")));
            }
        };
        stream.set_nodelay(true)?;
        let reader = stream.try_clone()?;
        let state = Arc::new(Mutex::new(ConnState::new(run.live_stats())));
        let (state_r, counters_r, stopping_r) = (state.clone(), counters.clone(), stopping.clone());
        let core = (!run.pin.is_empty()).then(|| run.pin[(k + 1) % run.pin.len()]);
        receivers.push(std::thread::Builder::new().name(format!("loadgen-rest-recv-{k}")).spawn(move || {
            if let Some(core) = core {
                pin_current_thread(core);
            }
            receive_loop(reader, state_r, clock, counters_r, stopping_r)
        })?);
        let (_, secret) = run.user(k);
        conns.push(Conn {
            stream: Arc::new(Mutex::new(stream)),
            state,
            flow: run.flow(k, 1),
            signer: RequestSigner::new(&secret, config.window_ms),
            client_ids: HashMap::new(),
            next_client_id: id_base,
        });
    }
    let states: Vec<_> = conns.iter().map(|c| c.state.clone()).collect();
    if run.cleanup {
        cancel_all(&conns, config, &counters);
    }

    let (schedule, total) = run.schedule();
    let warmup_ns = run.warmup.as_nanos() as u64;
    let start_ns = clock.now_ns() + 5_000_000;
    let pacer = Pacer::new(run.spin);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (counters, config, stop) = (counters.clone(), config.clone(), stop.clone());
        let core = run.pin.first().copied();
        std::thread::Builder::new().name("loadgen-rest-send".into()).spawn(move || {
            if let Some(core) = core {
                pin_current_thread(core);
            }
            let totals =
                send_loop(&mut conns, &config, (schedule, clock, pacer, start_ns, warmup_ns, total), &stop, &counters);
            (conns, totals)
        })?
    };
    let mut progress = Progress::new(run.progress, "rest", run.warmup + run.duration);
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
            state.dead || state.in_flight() == 0
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
        let (measured, warmup) = state.pending.iter().fold((0, 0), |(m, w), p| match p {
            Pending::Request(i) if i.measured => (m + 1, w),
            Pending::Request(_) => (m, w + 1),
            Pending::CancelAll => (m, w),
        });
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
        cancel_all(&conns, config, &counters);
    }
    stopping.store(true, Ordering::Release);
    for conn in &conns {
        let _ = conn.stream.lock().map(|s| s.shutdown(std::net::Shutdown::Both));
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
    let mut report = gateway_report("rest", run, SBE_HISTOGRAMS, figures, &sent, unanswered);
    report.settings.insert("symbol".to_owned(), config.symbol.clone());
    report.settings.insert("signing".to_owned(), "before the scheduled time, not measured".to_owned());
    crate::ramp::attach(&mut report, run.ramp.as_ref(), ramp);
    Ok(report)
}

/// The signed request bytes of a flow request, and the order as it rests if it is a GTC limit.
fn encode(conn: &mut Conn, config: &RestConfig, command: &Command, kind: RequestKind, key: u64) -> Vec<u8> {
    let timestamp = now_ms();
    match command {
        Command::CancelOrder(_) => {
            let client_id = conn.client_ids.remove(&key).unwrap_or(0);
            let params = [("symbol", config.symbol.clone()), ("clientId", client_id.to_string())];
            conn.signer.signed("DELETE", "/api/v1/order", "orderCancel", &params, &["clientId"], timestamp)
        }
        Command::NewOrder(order) => {
            let client_id = conn.next_client_id;
            conn.next_client_id = conn.next_client_id.wrapping_add(1).max(1);
            if kind == RequestKind::Limit {
                conn.client_ids.insert(key, client_id);
            }
            let side = if order.side.get() == Ok(Side::Bid) { "Bid" } else { "Ask" };
            let mut params = vec![
                ("symbol", config.symbol.clone()),
                ("side", side.to_owned()),
                ("quantity", decimal(order.quantity_lots.get(), config.quantity_decimals)),
                ("clientId", client_id.to_string()),
            ];
            if kind == RequestKind::Market || order.order_type.get() == Ok(OrderType::Market) {
                params.push(("orderType", "Market".to_owned()));
            } else {
                params.push(("orderType", "Limit".to_owned()));
                params.push(("price", decimal(order.price_ticks.get(), config.price_decimals)));
                let tif = if order.time_in_force.get() == Ok(TimeInForce::Ioc) { "IOC" } else { "GTC" };
                params.push(("timeInForce", tif.to_owned()));
            }
            conn.signer.signed("POST", "/api/v1/order", "orderExecute", &params, &["clientId"], timestamp)
        }
        other => unreachable!("the REST run never generates {other:?}"),
    }
}

/// The sender's loop: every request built and signed, then written at its due time, round robin
/// over the connections.
fn send_loop(
    conns: &mut [Conn],
    config: &RestConfig,
    timing: (Schedule, Clock, Pacer, u64, u64, u64),
    stop: &AtomicBool,
    counters: &Counters,
) -> SentTotals {
    let (schedule, clock, pacer, start_ns, warmup_ns, total) = timing;
    let mut totals = SentTotals { sent_measured: 0, first_send_ns: 0, last_send_ns: 0, sent_by_kind: BTreeMap::new() };
    let connections = conns.len();
    for batch in Batches::new(schedule.clone(), connections, total, 1) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (index, offset) = batch.requests[0];
        let due = start_ns + offset;
        let measured = offset >= warmup_ns;
        let step = config.run.step_at(offset);
        let conn = &mut conns[schedule.connection(index)];
        let request = {
            let mut state = lock(&conn.state);
            if state.dead {
                state.error(counters, "not sent: connection down");
                continue;
            }
            let request = conn.flow.next(&mut state.open);
            if request.substituted {
                state.outcome("substituted");
            }
            request
        };
        // Built and signed before the due time: not part of the measured latency.
        let bytes = encode(conn, config, &request.command, request.kind, request.key);
        let resting = match (&request.command, request.kind) {
            (Command::NewOrder(order), RequestKind::Limit) => order.side.get().ok().map(|side| OpenOrder {
                side,
                price_ticks: order.price_ticks.get(),
                remaining_lots: order.quantity_lots.get(),
                busy: false,
            }),
            _ => None,
        };
        let actual = pacer.wait_until(&clock, due);
        let inflight = Inflight {
            sent: Sent { scheduled_ns: due, actual_ns: actual },
            kind: request.kind,
            measured,
            order: request.key,
            resting,
            step,
        };
        lock(&conn.state).pending.push_back(Pending::Request(inflight));
        if let Err(error) = conn.write(&bytes) {
            let mut state = lock(&conn.state);
            state.error(counters, format!("send: {error}"));
            state.dead = true;
            continue;
        }
        Counters::bump(&counters.sent);
        counters.bump_step(step);
        *totals.sent_by_kind.entry(request.kind).or_default() += 1;
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
    fn signing_string_matches_the_documented_example() {
        // docs/rest-api.md "How to sign", whose signature gateway-json/src/auth.rs checks.
        let params = [
            ("symbol", "BTC_USDC".to_owned()),
            ("side", "Bid".to_owned()),
            ("orderType", "Limit".to_owned()),
            ("price", "64000.0".to_owned()),
            ("quantity", "0.00100".to_owned()),
            ("clientId", "42".to_owned()),
        ];
        let signed = signing_string("orderExecute", &params, 1_764_021_600_000, 5000);
        assert_eq!(
            signed,
            "instruction=orderExecute&clientId=42&orderType=Limit&price=64000.0&quantity=0.00100&side=Bid\
             &symbol=BTC_USDC&timestamp=1764021600000&window=5000"
        );
        let signer = RequestSigner::new(&[7; 32], 5000);
        assert_eq!(signer.api_key, "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=");
        let bytes = signer.signed("POST", "/api/v1/order", "orderExecute", &params, &["clientId"], 1_764_021_600_000);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(
            "X-Signature: YfHPmYT/XxXLOkJDPSeKKfwnMHWj22lmW6lP0bczPvaRPhtorN3/u4fyHffdD3zjN0V5NipDSXW6Lglkjpr6DQ==\r\n"
        ));
        assert!(text.contains(r#""clientId":42"#), "clientId is a JSON number: {text}");
        assert!(text.contains(r#""price":"64000.0""#));
    }

    fn answer(status: u16, body: &str) -> Response {
        Response { status, body: body.as_bytes().to_vec() }
    }

    #[test]
    fn answers_match_requests_in_order_and_track_open_orders() {
        let counters = Counters::with_steps(0);
        let mut state = ConnState::new(LiveStats::new(0));
        let sent = Sent { scheduled_ns: 1_000, actual_ns: 1_500 };
        let resting = OpenOrder { side: Side::Bid, price_ticks: 10, remaining_lots: 2, busy: false };
        let request = |kind, order, resting| {
            Pending::Request(Inflight { sent, kind, measured: true, order, resting, step: crate::ramp::NO_STEP })
        };
        state.pending.push_back(request(RequestKind::Limit, 1, Some(resting)));
        state.pending.push_back(request(RequestKind::Ioc, 2, None));
        state.pending.push_back(request(RequestKind::Cancel, 1, None));
        state.on_response(&answer(200, r#"{"id":"5","status":"New"}"#), 11_000, &counters);
        assert!(state.open.get(1).is_some(), "an accepted GTC limit rests");
        state.on_response(&answer(400, r#"{"code":"INSUFFICIENT_FUNDS","message":"x"}"#), 12_000, &counters);
        state.on_response(&answer(404, r#"{"code":"RESOURCE_NOT_FOUND","message":"x"}"#), 13_000, &counters);
        assert!(state.open.get(1).is_none(), "a cancel answered 404 forgets the order");
        assert_eq!(state.rejects.get("400 INSUFFICIENT_FUNDS"), Some(&1));
        assert_eq!(state.rejects.get("404 RESOURCE_NOT_FOUND"), Some(&1));
        assert_eq!(state.answered, 3);
        let max = state.histograms.get(ACK_ALL).max();
        assert!((12_000..12_020).contains(&max), "latency from the scheduled time, not the write: {max}");
        assert_eq!(state.histograms.get(ack_histogram(RequestKind::Cancel)).len(), 1);
        state.on_response(&answer(200, "{}"), 14_000, &counters);
        assert_eq!(state.errors.get("answer matching no request"), Some(&1));
    }
}
