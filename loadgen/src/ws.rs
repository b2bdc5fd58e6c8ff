//! The WebSocket subscriber run: `N` clients connect to `ws://address/`, `SUBSCRIBE` to the
//! public streams of one symbol (`depth.<symbol>` and `trade.<symbol>` by default) and read for
//! the duration; nothing is sent after the subscription, so the order flow that produces the
//! updates comes from elsewhere (the server's `--demo` market makers, or a concurrent
//! `loadgen sbe` / `rest` run).
//!
//! Each client runs on its own thread with a blocking socket (tungstenite's synchronous API, the
//! version tokio-tungstenite re-exports: no runtime between the socket and the timestamp). Per
//! frame it records:
//!
//! - **latency** from the frame's event time `E` (µs since the epoch, stamped by the server when
//!   it built the frame) to the wall-clock time the client parsed it. Both clocks are the same
//!   machine's `CLOCK_REALTIME`, so no clock offset enters; the resolution is 1 µs. This is the
//!   fan-out delay (queueing in the server's per-connection queue, the socket, the client's
//!   read), one histogram per stream type (`frame_depth`, `frame_trade`, …) and `frame_all`.
//! - **gaps**: on `depth.<symbol>`, each frame's `U` must be the previous frame's `u` + 1 (the
//!   first frame after subscribing starts the chain, a `depthSnapshot` after a lag restarts it).
//!   A gap is an error: the server promises never to skip silently.
//! - `{"event":"lagged"}` notices and resync snapshots (counted, not errors: the documented
//!   reaction to a slow client), error frames and unexpected closes (errors).
//!
//! The report has the gateway runs' shape: `answered` is the frames received, the rate line's
//! answered rate the frames per second over all clients.

use crate::LoadError;
use crate::latency::{Histograms, LatencySummary};
use crate::report::Report;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::{self, Message};

/// Histograms of a WebSocket run: frame latency from its event time, all frames and per stream
/// type.
pub const WS_HISTOGRAMS: &[&str] =
    &["frame_all", "frame_depth", "frame_trade", "frame_bookTicker", "frame_ticker", "frame_kline", "frame_other"];

fn histogram_of(event: &str) -> usize {
    match event {
        "depth" | "depthSnapshot" => 1,
        "trade" => 2,
        "bookTicker" => 3,
        "ticker" => 4,
        "kline" => 5,
        _ => 6,
    }
}

/// Settings of a WebSocket run.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Server address (the HTTP port; the WebSocket is at `/`).
    pub address: String,
    /// Clients.
    pub subscribers: usize,
    /// The market's symbol.
    pub symbol: String,
    /// Stream kinds (`depth`, `trade`, `bookTicker`, `ticker`, `depth.200ms`, `kline.1m`…),
    /// each subscribed as `<kind>.<symbol>`.
    pub streams: Vec<String>,
    /// How long each client reads after subscribing.
    pub duration: Duration,
    /// What the latency is measured from.
    pub since: LatencyOrigin,
}

/// The timestamp a frame's latency is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatencyOrigin {
    /// `E`: when the answering server built the frame (its fan-out delay).
    #[default]
    Frame,
    /// `T`: the engine time of the event (depth, trade, bookTicker frames): how far behind the
    /// engine the subscriber is, e.g. through a replica (docs/operations.md).
    Engine,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:8080".into(),
            subscribers: 10,
            symbol: "BTC_USDC".into(),
            streams: vec!["depth".into(), "trade".into()],
            duration: Duration::from_secs(10),
            since: LatencyOrigin::Frame,
        }
    }
}

/// The `U`/`u` chain of one client's depth stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DepthChain {
    last: Option<u64>,
}

impl DepthChain {
    /// Checks a `depth` frame's `U`..=`u`; returns the number of update ids missed (0: in
    /// sequence).
    pub fn diff(&mut self, first: u64, last: u64) -> u64 {
        let missed = match self.last {
            Some(previous) if first != previous + 1 => first.saturating_sub(previous + 1).max(1),
            _ => 0,
        };
        self.last = Some(last);
        missed
    }

    /// A `depthSnapshot` with update id `u`: the next diff must start at `u + 1`.
    pub fn snapshot(&mut self, last: u64) {
        self.last = Some(last);
    }
}

/// What one client saw.
#[derive(Debug)]
struct ClientFigures {
    since: LatencyOrigin,
    histograms: Histograms,
    frames: u64,
    outcomes: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    first_ns: Option<Instant>,
    last_ns: Option<Instant>,
}

impl ClientFigures {
    fn new(since: LatencyOrigin) -> Self {
        Self {
            since,
            histograms: Histograms::new(WS_HISTOGRAMS),
            frames: 0,
            outcomes: BTreeMap::new(),
            errors: BTreeMap::new(),
            first_ns: None,
            last_ns: None,
        }
    }

    fn outcome(&mut self, what: impl Into<String>, count: u64) {
        *self.outcomes.entry(what.into()).or_default() += count;
    }

    fn error(&mut self, what: impl Into<String>) {
        *self.errors.entry(what.into()).or_default() += 1;
    }

    /// Handles one text frame received at `now_us` (wall clock, µs).
    fn on_text(&mut self, text: &str, now_us: u64, chain: &mut DepthChain, received: Instant) {
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            return self.error("frame is not JSON");
        };
        if let Some(data) = frame.get("data") {
            self.frames += 1;
            self.first_ns.get_or_insert(received);
            self.last_ns = Some(received);
            let event = data.get("e").and_then(Value::as_str).unwrap_or("");
            let origin = match self.since {
                LatencyOrigin::Frame => data.get("E"),
                // `T` is µs on these; on klines it is the candle's end in seconds.
                LatencyOrigin::Engine if matches!(event, "depth" | "trade" | "bookTicker") => data.get("T"),
                LatencyOrigin::Engine => None,
            };
            if let Some(event_us) = origin.and_then(Value::as_u64) {
                let latency_ns = now_us.saturating_sub(event_us) * 1_000;
                self.histograms.record(0, latency_ns);
                self.histograms.record(histogram_of(event), latency_ns);
            }
            let number = |key: &str| data.get(key).and_then(Value::as_u64);
            match event {
                "depth" => match (number("U"), number("u")) {
                    (Some(first), Some(last)) => {
                        let missed = chain.diff(first, last);
                        if missed > 0 {
                            self.error("depth gap (U != previous u + 1)");
                            self.outcome("depth_updates_missed", missed);
                        }
                    }
                    _ => self.error("depth frame without U/u"),
                },
                "depthSnapshot" => {
                    self.outcome("resync_snapshots", 1);
                    match number("u") {
                        Some(last) => chain.snapshot(last),
                        None => self.error("depthSnapshot without u"),
                    }
                }
                _ => {}
            }
            self.outcome(format!("frames_{}", if event.is_empty() { "unknown" } else { event }), 1);
        } else if frame.get("event").and_then(Value::as_str) == Some("lagged") {
            self.outcome("lagged_notices", 1);
            let lost: u64 = frame
                .get("streams")
                .and_then(Value::as_object)
                .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
            self.outcome("frames_lost_to_lag", lost);
        } else if frame.get("error").is_some() || frame.get("code").is_some() {
            self.error(format!("error frame: {text}"));
        } else {
            self.outcome("acks", 1);
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Connects and subscribes one client.
fn connect(config: &WsConfig) -> Result<tungstenite::WebSocket<TcpStream>, String> {
    let address = &config.address;
    let stream = TcpStream::connect(address).map_err(|e| format!("connect to {address}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let (mut socket, _) =
        tungstenite::client(format!("ws://{address}/"), stream).map_err(|e| format!("WebSocket handshake: {e}"))?;
    let params: Vec<String> = config.streams.iter().map(|s| format!("{s}.{}", config.symbol)).collect();
    let subscribe = serde_json::json!({"method": "SUBSCRIBE", "params": params, "id": 1}).to_string();
    socket.send(Message::Text(subscribe.into())).map_err(|e| format!("SUBSCRIBE: {e}"))?;
    socket.get_ref().set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
    Ok(socket)
}

fn client_loop(mut socket: tungstenite::WebSocket<TcpStream>, end: Instant, since: LatencyOrigin) -> ClientFigures {
    let mut figures = ClientFigures::new(since);
    let mut chain = DepthChain::default();
    while Instant::now() < end {
        match socket.read() {
            Ok(Message::Text(text)) => figures.on_text(text.as_str(), now_us(), &mut chain, Instant::now()),
            Ok(Message::Close(frame)) => {
                figures
                    .error(format!("closed by the server: {}", frame.map_or(String::new(), |f| f.reason.to_string())));
                return figures;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(error))
                if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(error) => {
                figures.error(format!("disconnected: {error}"));
                return figures;
            }
        }
    }
    let _ = socket.close(None);
    let _ = socket.flush();
    figures
}

/// Runs the subscribers and returns the report (kind `ws`).
///
/// # Errors
/// No subscribers or streams, or a client that cannot connect or subscribe.
pub fn run(config: &WsConfig) -> Result<Report, LoadError> {
    if config.subscribers == 0 || config.streams.is_empty() {
        return Err(LoadError::new("need at least one subscriber and one stream"));
    }
    let mut sockets = Vec::with_capacity(config.subscribers);
    for k in 0..config.subscribers {
        sockets.push(connect(config).map_err(|e| LoadError::new(format!("subscriber {k}: {e}")))?);
    }
    let end = Instant::now() + config.duration;
    let since = config.since;
    let threads: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(k, socket)| {
            std::thread::Builder::new().name(format!("loadgen-ws-{k}")).spawn(move || client_loop(socket, end, since))
        })
        .collect::<Result<_, _>>()?;
    let mut histograms = Histograms::new(WS_HISTOGRAMS);
    let (mut outcomes, mut errors) = (BTreeMap::new(), BTreeMap::new());
    let (mut frames, mut first, mut last) = (0, None::<Instant>, None::<Instant>);
    for thread in threads {
        let figures = thread.join().map_err(|_| LoadError::new("subscriber panicked"))?;
        histograms.merge(&figures.histograms);
        for (k, v) in figures.outcomes {
            *outcomes.entry(k).or_default() += v;
        }
        for (k, v) in figures.errors {
            *errors.entry(k).or_default() += v;
        }
        frames += figures.frames;
        if let Some(at) = figures.first_ns {
            first = Some(first.map_or(at, |f: Instant| f.min(at)));
        }
        if let Some(at) = figures.last_ns {
            last = Some(last.map_or(at, |l: Instant| l.max(at)));
        }
    }
    let rate = match (first, last) {
        (Some(first), Some(last)) if last > first && frames > 1 => (frames - 1) as f64 / (last - first).as_secs_f64(),
        _ => 0.0,
    };
    let histograms: Vec<(String, hdrhistogram::Histogram<u64>)> = histograms
        .iter()
        .filter(|(name, h)| *name == WS_HISTOGRAMS[0] || !h.is_empty())
        .map(|(name, h)| (name.to_owned(), h.clone()))
        .collect();
    let settings = BTreeMap::from([
        ("symbol".to_owned(), config.symbol.clone()),
        ("streams".to_owned(), config.streams.join(",")),
        (
            "latency".to_owned(),
            match config.since {
                LatencyOrigin::Frame => "receipt - frame E (same machine's wall clock, µs)",
                LatencyOrigin::Engine => "receipt - engine time T of depth/trade/bookTicker (same machine's clock, µs)",
            }
            .to_owned(),
        ),
    ]);
    Ok(Report {
        kind: "ws".into(),
        target: format!("ws://{}/", config.address),
        connections: config.subscribers,
        settings,
        offered_rate: 0.0,
        achieved_send_rate: 0.0,
        achieved_response_rate: rate,
        warmup_s: 0.0,
        duration_s: config.duration.as_secs_f64(),
        sent: 0,
        answered: frames,
        unanswered: 0,
        latencies: histograms.iter().map(|(name, h)| LatencySummary::of(name, h)).collect(),
        outcomes,
        rejects: BTreeMap::new(),
        errors,
        histograms,
        ramp: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_chain_finds_gaps_and_restarts_at_snapshots() {
        let mut chain = DepthChain::default();
        assert_eq!(chain.diff(10, 12), 0, "the first frame starts the chain");
        assert_eq!(chain.diff(13, 13), 0);
        assert_eq!(chain.diff(16, 17), 2, "14 and 15 missed");
        assert_eq!(chain.diff(18, 20), 0);
        assert_eq!(chain.diff(20, 21), 1, "an overlap is a break too");
        chain.snapshot(100);
        assert_eq!(chain.diff(101, 101), 0, "after a snapshot the chain continues from its u");
    }

    #[test]
    fn frames_are_counted_timed_and_checked() {
        let mut figures = ClientFigures::new(LatencyOrigin::Frame);
        let mut chain = DepthChain::default();
        let at = Instant::now();
        figures.on_text(r#"{"result":null,"id":1}"#, 0, &mut chain, at);
        let depth = |first: u64, last: u64| {
            format!(
                r#"{{"stream":"depth.BTC_USDC","data":{{"e":"depth","E":1000,"s":"BTC_USDC","a":[],"b":[],"U":{first},"u":{last},"T":900}}}}"#
            )
        };
        figures.on_text(&depth(1, 2), 1_250, &mut chain, at);
        figures.on_text(&depth(3, 3), 1_250, &mut chain, at);
        figures.on_text(&depth(5, 5), 1_250, &mut chain, at);
        figures.on_text(r#"{"event":"lagged","streams":{"depth.BTC_USDC":7}}"#, 0, &mut chain, at);
        figures.on_text(
            r#"{"stream":"depth.BTC_USDC","data":{"e":"depthSnapshot","E":1000,"a":[],"b":[],"u":40,"T":1}}"#,
            1_100,
            &mut chain,
            at,
        );
        figures.on_text(&depth(41, 41), 1_250, &mut chain, at);
        figures.on_text(
            r#"{"stream":"trade.BTC_USDC","data":{"e":"trade","E":2000,"t":1,"T":1}}"#,
            2_010,
            &mut chain,
            at,
        );
        assert_eq!(figures.frames, 6);
        assert_eq!(figures.errors.get("depth gap (U != previous u + 1)"), Some(&1));
        assert_eq!(figures.outcomes.get("depth_updates_missed"), Some(&1));
        assert_eq!(figures.outcomes.get("lagged_notices"), Some(&1));
        assert_eq!(figures.outcomes.get("frames_lost_to_lag"), Some(&7));
        assert_eq!(figures.outcomes.get("resync_snapshots"), Some(&1));
        assert_eq!(figures.outcomes.get("acks"), Some(&1));
        assert_eq!(figures.histograms.get(histogram_of("trade")).len(), 1);
        let trade = figures.histograms.get(histogram_of("trade")).max();
        assert!((10_000..10_020).contains(&trade), "10 µs from E to receipt: {trade} ns");
        assert_eq!(figures.histograms.get(0).len(), 6);
    }
}
