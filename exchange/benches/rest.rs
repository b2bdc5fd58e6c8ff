//! REST benchmark: signed order placement over loopback HTTP against the real server binary.
//! `cargo bench -p exchange --bench rest` (`REST_BENCH_QUICK=1` for a smoke run of a few
//! seconds that measures nothing worth reading).
//!
//! A benchmark, not a test: it prints one table; progress goes to stderr.
//!
//! # Setup
//! The `exchange` binary of this build runs in a fresh temporary data directory with
//! `--durability none` (the journal is written but not fsync'ed: this measures the HTTP path,
//! signature check, engine round trip and JSON, not the disk), `--load-users N` (funded users
//! whose Ed25519 secrets are public, see docs/benchmarks.md) and a configuration equal to the
//! default except that the per-IP and per-key rate limits are off. Each client thread owns one
//! keep-alive HTTP/1.1 connection (TCP_NODELAY) and one load user, writes a request, reads the
//! whole response, and checks its status is 200.
//!
//! # Rows
//! - `tcp echo`: a raw TCP ping-pong of the same request bytes with an in-process echo thread:
//!   the floor of loopback round trips and syscalls on this machine.
//! - `GET /api/v1/time`: an unsigned trivial request on the same server: HTTP parsing, routing
//!   and the server's scheduling, without signature, engine or meaningful JSON.
//! - `POST /api/v1/order`: a signed IOC limit bid far below any ask (`BTC_USDC` 1000.0 ×
//!   0.00100, the book is empty): Ed25519 verification, validation, the engine round trip through
//!   the ingress ring, the journal and the egress ring, and the Order JSON. The order expires at
//!   once, so the book and balances do not change and every request does the same work. The
//!   client signs each request *before* its timer starts (client signing is printed apart).
//!
//! Closed loop: `C` connections each send back to back for a fixed time; throughput is requests
//! completed per second, latency from write to the end of the response.
//!
//! Open loop: a fixed offered rate split evenly over the connections; request `i` of a
//! connection is scheduled at `t0 + i / rate`, and its latency is measured from its *scheduled*
//! time (coordinated-omission correction: a stalled server is charged for the requests that
//! waited). A row whose achieved rate is below the offered one could not keep up.
//!
//! Latencies are HdrHistogram percentiles (1 µs … 60 s, 3 significant digits), in µs.

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use hdrhistogram::Histogram;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_exchange");
const ORDER_BODY: &str = r#"{"symbol":"BTC_USDC","side":"Bid","orderType":"Limit","price":"1000.0","quantity":"0.00100","timeInForce":"IOC"}"#;
const ORDER_SIGNED: &str =
    "instruction=orderExecute&orderType=Limit&price=1000.0&quantity=0.00100&side=Bid&symbol=BTC_USDC&timeInForce=IOC";

struct Settings {
    quick: bool,
    connections: usize,
    closed_seconds: f64,
    open_seconds: f64,
    open_rates: Vec<u64>,
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    line: String,
    body: Vec<u8>,
}

impl Connection {
    fn open(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).unwrap();
        Self {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
            line: String::new(),
            body: Vec::new(),
        }
    }

    /// Sends `request`, reads the response; returns its status.
    fn round_trip(&mut self, request: &[u8]) -> u16 {
        self.writer.write_all(request).expect("write");
        self.line.clear();
        self.reader.read_line(&mut self.line).expect("status line");
        let status = self.line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0usize;
        loop {
            self.line.clear();
            self.reader.read_line(&mut self.line).expect("header");
            if self.line == "\r\n" || self.line.is_empty() {
                break;
            }
            if let Some((name, value)) = self.line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body).expect("body");
        status
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    TcpEcho,
    Time,
    Order,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::TcpEcho => "tcp echo (baseline)",
            Kind::Time => "GET /api/v1/time (baseline)",
            Kind::Order => "POST /api/v1/order (signed)",
        }
    }
}

/// Builds request bytes: the order request is signed now, by `user`.
struct Requests {
    key: SigningKey,
    api_key: String,
}

impl Requests {
    fn new(user: u64) -> Self {
        let key = SigningKey::from_bytes(&exchange::demo::load_user_secret(user));
        let api_key = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
        Self { key, api_key }
    }

    fn build(&self, kind: Kind) -> Vec<u8> {
        match kind {
            Kind::TcpEcho | Kind::Time => b"GET /api/v1/time HTTP/1.1\r\nHost: bench\r\n\r\n".to_vec(),
            Kind::Order => {
                let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
                let signed = format!("{ORDER_SIGNED}&timestamp={timestamp}&window=5000");
                let signature =
                    base64::engine::general_purpose::STANDARD.encode(self.key.sign(signed.as_bytes()).to_bytes());
                format!(
                    "POST /api/v1/order HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json; charset=utf-8\r\n\
                     X-API-Key: {}\r\nX-Signature: {signature}\r\nX-Timestamp: {timestamp}\r\nX-Window: 5000\r\n\
                     Content-Length: {}\r\n\r\n{ORDER_BODY}",
                    self.api_key,
                    ORDER_BODY.len()
                )
                .into_bytes()
            }
        }
    }
}

/// An in-process echo server answering each request with a fixed small HTTP response.
fn start_echo() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                stream.set_nodelay(true).unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => {
                            let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n1764021600000";
                            if writer.write_all(reply).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    port
}

struct Server {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Server {
    fn start(users: u64) -> Self {
        let dir = std::env::temp_dir().join(format!("exchange-rest-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = exchange::config::DEFAULT_CONFIG
            .replace("ip_requests_per_second = 2000", "ip_requests_per_second = 0")
            .replace("key_requests_per_second = 1000", "key_requests_per_second = 0");
        assert_ne!(config, exchange::config::DEFAULT_CONFIG, "the default [http] limits changed: update the bench");
        let config_path = dir.join("bench.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(BINARY)
            .args(["--config", config_path.to_str().unwrap(), "--data", dir.join("data").to_str().unwrap()])
            .args(["--http-port", "0", "--sbe-port", "0", "--fix-port", "0", "--durability", "none"])
            .args(["run", "--status-every", "0", "--load-users", &users.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the exchange binary");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let port = loop {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "server exited before listening");
            if line.contains("HTTP listening") {
                let address = line.split("listen=").nth(1).unwrap();
                break address.split_whitespace().next().unwrap().rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        let mut funded = false;
        while !funded {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "server exited before funding");
            funded = line.contains("load-test users funded");
        }
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Self { child, port, dir }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

struct Row {
    mode: String,
    kind: Kind,
    offered: Option<u64>,
    achieved: f64,
    errors: u64,
    latency: Histogram<u64>,
}

/// Closed loop: every connection sends back to back for `seconds`.
fn closed_loop(port_of: impl Fn(Kind) -> u16, kind: Kind, connections: usize, seconds: f64) -> Row {
    let port = port_of(kind);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..connections)
        .map(|index| {
            std::thread::spawn(move || {
                let requests = Requests::new(exchange::demo::LOAD_USER_FIRST + index as u64);
                let mut connection = Connection::open(port);
                // Warm-up: one request.
                let _ = connection.round_trip(&requests.build(kind));
                let mut latency = histogram();
                let mut errors = 0;
                while Instant::now() < start {
                    std::hint::spin_loop();
                }
                while Instant::now() < end {
                    let request = requests.build(kind);
                    let sent = Instant::now();
                    if connection.round_trip(&request) != 200 {
                        errors += 1;
                    }
                    latency.record(sent.elapsed().as_micros().max(1) as u64).unwrap();
                }
                (latency, errors)
            })
        })
        .collect();
    let mut latency = histogram();
    let mut errors = 0;
    for thread in threads {
        let (h, e) = thread.join().unwrap();
        latency.add(h).unwrap();
        errors += e;
    }
    let achieved = latency.len() as f64 / seconds;
    Row { mode: format!("closed, {connections} conn"), kind, offered: None, achieved, errors, latency }
}

/// Open loop at `rate` requests/s over `connections`, latency from each request's scheduled time.
fn open_loop(port_of: impl Fn(Kind) -> u16, kind: Kind, connections: usize, rate: u64, seconds: f64) -> Row {
    let port = port_of(kind);
    let per_connection = rate as f64 / connections as f64;
    let count = (per_connection * seconds).ceil() as u64;
    let t0 = Instant::now() + Duration::from_millis(100);
    let threads: Vec<_> = (0..connections)
        .map(|index| {
            std::thread::spawn(move || {
                let requests = Requests::new(exchange::demo::LOAD_USER_FIRST + index as u64);
                let mut connection = Connection::open(port);
                let _ = connection.round_trip(&requests.build(kind));
                let mut latency = histogram();
                let mut errors = 0;
                // Connections are offset within one period so that they do not fire together.
                let offset = Duration::from_secs_f64(index as f64 / rate as f64);
                let mut last = t0;
                for i in 0..count {
                    let scheduled = t0 + offset + Duration::from_secs_f64(i as f64 / per_connection);
                    let request = requests.build(kind);
                    loop {
                        let now = Instant::now();
                        if now >= scheduled {
                            break;
                        }
                        let left = scheduled - now;
                        if left > Duration::from_micros(200) {
                            std::thread::sleep(left - Duration::from_micros(150));
                        } else {
                            std::thread::yield_now();
                        }
                    }
                    if connection.round_trip(&request) != 200 {
                        errors += 1;
                    }
                    last = Instant::now();
                    latency.record(last.duration_since(scheduled).as_micros().max(1) as u64).unwrap();
                }
                (latency, errors, last)
            })
        })
        .collect();
    let mut latency = histogram();
    let mut errors = 0;
    let mut last = t0;
    for thread in threads {
        let (h, e, l) = thread.join().unwrap();
        latency.add(h).unwrap();
        errors += e;
        last = last.max(l);
    }
    let achieved = latency.len() as f64 / last.duration_since(t0).as_secs_f64().max(1e-9);
    Row { mode: format!("open, {connections} conn"), kind, offered: Some(rate), achieved, errors, latency }
}

fn main() {
    let quick = std::env::var("REST_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let settings = if quick {
        Settings { quick, connections: 2, closed_seconds: 0.3, open_seconds: 0.3, open_rates: vec![200] }
    } else {
        Settings { quick, connections: 4, closed_seconds: 5.0, open_seconds: 5.0, open_rates: vec![500, 2_000, 5_000] }
    };
    eprintln!("starting the server (release build of this tree)...");
    let server = Server::start(settings.connections as u64);
    let echo_port = start_echo();
    let http_port = server.port;
    let port_of = move |kind: Kind| if kind == Kind::TcpEcho { echo_port } else { http_port };

    // Wait until the load users are funded (an order is accepted rather than refused for funds).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probe = Connection::open(http_port);
    let requests = Requests::new(exchange::demo::LOAD_USER_FIRST + settings.connections as u64 - 1);
    while probe.round_trip(&requests.build(Kind::Order)) != 200 {
        assert!(Instant::now() < deadline, "load users never funded: {}", String::from_utf8_lossy(&probe.body));
        std::thread::sleep(Duration::from_millis(20));
    }

    // Client-side signing cost, for reference (excluded from the latencies below).
    let sign_count = if quick { 200 } else { 20_000 };
    let started = Instant::now();
    for _ in 0..sign_count {
        std::hint::black_box(requests.build(Kind::Order));
    }
    let sign_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(sign_count);

    let mut rows = Vec::new();
    for kind in [Kind::TcpEcho, Kind::Time, Kind::Order] {
        eprintln!("closed loop: {}", kind.name());
        rows.push(closed_loop(port_of, kind, settings.connections, settings.closed_seconds));
    }
    for &rate in &settings.open_rates {
        for kind in [Kind::TcpEcho, Kind::Time, Kind::Order] {
            eprintln!("open loop {rate}/s: {}", kind.name());
            rows.push(open_loop(port_of, kind, settings.connections, rate, settings.open_seconds));
        }
    }
    drop(server);

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "REST benchmark{}: loopback HTTP/1.1 keep-alive, server `--durability none`, {cores} cores shared by \
         client and server",
        if settings.quick { " (REST_BENCH_QUICK: smoke run)" } else { "" }
    );
    println!("client-side Ed25519 signing + request build: {sign_us:.1} µs per order (not in the latencies)");
    println!();
    println!(
        "{:<14} {:<30} {:>9} {:>11} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "mode", "request", "offered/s", "achieved/s", "errors", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"
    );
    for row in &rows {
        let h = &row.latency;
        println!(
            "{:<14} {:<30} {:>9} {:>11.0} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
            row.mode,
            row.kind.name(),
            row.offered.map_or_else(|| "max".to_string(), |r| r.to_string()),
            row.achieved,
            row.errors,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
    if rows.iter().any(|row| row.errors > 0) {
        eprintln!("some requests did not answer 200");
        std::process::exit(1);
    }
}
