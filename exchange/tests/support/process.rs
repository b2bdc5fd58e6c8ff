//! Child processes of the cluster tests whose log the test reads line by line (started from
//! the built binary, killed with SIGKILL when dropped), and what those tests ask them over HTTP:
//! `/metrics` values, the primary's settled sequence, demo users' open orders and balances.

use super::cluster::PATIENCE;
use super::{JSON, request, signature_lines};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) and reaped when dropped; its log lines on a channel.
pub struct Process {
    pub child: Child,
    pub lines: Receiver<String>,
    pub stdout: Receiver<String>,
    /// Every line of its log so far (for a failure's diagnosis).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Process {
    pub fn start(args: &[&str]) -> Self {
        let mut child = std::process::Command::new(super::BINARY)
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("KAFKA_BROKERS")
            .env_remove("REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let forward = |stream: Box<dyn Read + Send>| {
            let (sender, receiver) = std::sync::mpsc::channel();
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("ERROR") || line.contains("WARN") {
                        eprintln!("[child] {line}");
                    }
                    log.lock().unwrap().push(line.clone());
                    let _ = sender.send(line);
                }
            });
            receiver
        };
        let lines = forward(Box::new(child.stderr.take().unwrap()));
        let stdout = forward(Box::new(child.stdout.take().unwrap()));
        Self { child, lines, stdout, log }
    }

    /// The last 40 lines of its log; the whole log is written to `<temp>/cluster-tail-<pid>.log`.
    pub fn tail(&self) -> String {
        let log = self.log.lock().unwrap();
        let path = std::env::temp_dir().join(format!("cluster-tail-{}.log", self.child.id()));
        let _ = std::fs::write(&path, log.join("\n"));
        format!("({} lines in {})\n{}", log.len(), path.display(), log[log.len().saturating_sub(40)..].join("\n"))
    }

    /// The first log line containing `marker` (waiting for it).
    pub fn wait_line(&self, marker: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| panic!("no log line {marker:?}: {e}"));
            if line.contains(marker) {
                return line;
            }
        }
    }

    /// The `(sequence, state hash)` a promoted node prints on stdout (`PROMOTED <sequence>
    /// <hash>`), waiting for it.
    pub fn wait_promoted(&self) -> (u64, String) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.stdout.recv_timeout(left).unwrap_or_else(|_| panic!("no promotion:\n{}", self.tail()));
            if let Some(rest) = line.strip_prefix("PROMOTED ") {
                let (sequence, hash) = rest.split_once(' ').unwrap();
                return (sequence.parse::<u64>().unwrap(), hash.to_string());
            }
        }
    }

    /// The port of the first log line containing `marker` and `listen=IP:PORT`.
    pub fn wait_port(&self, marker: &str) -> u16 {
        let line = self.wait_line(marker);
        let address = line.split("listen=").nth(1).unwrap_or_else(|| panic!("no listen= in {line}"));
        address.split_whitespace().next().unwrap().rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path`: the body.
pub fn get(port: u16, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_once("\r\n\r\n").map_or(String::new(), |(_, body)| body.to_string())
}

/// The value of the unlabelled series `name` on a `/metrics` page (`None`: not there).
pub fn metric(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok().map(|v| v as u64))
}

/// Waits until `/metrics` on `port` has `name` equal to `value`; returns the page.
pub fn wait_metric(port: u16, name: &str, value: u64) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let page = get(port, "/metrics");
        if metric(&page, name) == Some(value) {
            return page;
        }
        assert!(Instant::now() < deadline, "{name} should reach {value}:\n{page}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `/metrics` on `port` has `name` at or above `value`.
pub fn wait_metric_at_least(port: u16, name: &str, value: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let page = get(port, "/metrics");
        if metric(&page, name).is_some_and(|found| found >= value) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} should reach {value}:\n{page}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The primary's sequence (`/health`: `ok <sequence>`) once its flow has stopped for 2 s.
pub fn still_sequence(port: u16) -> u64 {
    let deadline = Instant::now() + PATIENCE * 2;
    let sequence = || get(port, "/health").trim().strip_prefix("ok ").and_then(|s| s.parse::<u64>().ok());
    let mut last = sequence();
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_secs(2) || last.is_none_or(|s| s == 0) {
        assert!(Instant::now() < deadline, "the demo flow should stop ({last:?})");
        std::thread::sleep(Duration::from_millis(200));
        let now = sequence();
        if now != last {
            still_since = Instant::now();
        }
        last = now;
    }
    last.unwrap()
}

/// A signed REST call as demo user `user` (secret `[user; 32]`, `exchange::demo::demo_secrets`):
/// `(status, body)`.
pub fn signed(port: u16, user: u8, method: &str, path: &str, body: &str, signed: &str) -> (u16, serde_json::Value) {
    let headers = JSON.to_string() + &signature_lines(&[user; 32], signed);
    let response = request(port, method, path, &headers, body);
    (response.status(), response.json(path))
}

/// Demo user `user`'s open orders on BTC_USDC, sorted by id, and its balances.
pub fn orders_and_balances(port: u16, user: u8) -> (Vec<serde_json::Value>, serde_json::Value) {
    let (status, orders) =
        signed(port, user, "GET", "/api/v1/orders?symbol=BTC_USDC", "", "instruction=orderQueryAll&symbol=BTC_USDC");
    assert_eq!(status, 200, "{orders}");
    let mut orders = orders.as_array().unwrap().clone();
    orders.sort_by_key(|order| order["id"].as_str().unwrap().to_string());
    let (status, balances) = signed(port, user, "GET", "/api/v1/capital", "", "instruction=balanceQuery");
    assert_eq!(status, 200, "{balances}");
    (orders, balances)
}

/// `orders` without the two fields an engine snapshot does not hold (`createdAt`,
/// `executedQuoteQuantity`: a process started from a snapshot shows 0 for the orders resting in
/// it; docs/deployment.md, "Gateway processes", "Limits"). Every other field must be equal.
pub fn without_unsnapshotted(orders: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let mut orders = orders.to_vec();
    for order in &mut orders {
        let order = order.as_object_mut().unwrap();
        order.remove("createdAt").unwrap();
        order.remove("executedQuoteQuantity").unwrap();
    }
    orders
}

/// The bid quantities the cluster tests place with [`place_resting_bids`].
pub const RESTING_BIDS: [&str; 3] = ["0.01000", "0.02000", "0.03000"];

/// Places resting BTC_USDC bids of `quantities` as demo user `user` through `port`, 5% below the
/// best bid (inside the ±10% price band, below where the demo's fair price walks), once the demo
/// has funded the user and quotes the market; returns the primary's sequence after them.
pub fn place_resting_bids(port: u16, user: u8, quantities: &[&str]) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    while signed(port, user, "GET", "/api/v1/capital", "", "instruction=balanceQuery").1.get("USDC").is_none() {
        assert!(Instant::now() < deadline, "demo user {user} never funded");
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + PATIENCE;
    let best_bid = loop {
        let depth = get(port, "/api/v1/depth?symbol=BTC_USDC&limit=1");
        let value: serde_json::Value = serde_json::from_str(&depth).unwrap_or_default();
        if let Some(price) = value["bids"][0][0].as_str().and_then(|p| p.parse::<f64>().ok()) {
            break price;
        }
        assert!(Instant::now() < deadline, "the demo market maker never quoted BTC_USDC: {depth}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let price = format!("{}", (best_bid * 0.95).floor() as u64);
    for quantity in quantities {
        let body = serde_json::json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": price,
                                      "quantity": quantity});
        let params = format!("&orderType=Limit&price={price}&quantity={quantity}&side=Bid&symbol=BTC_USDC");
        let (status, order) = signed(
            port,
            user,
            "POST",
            "/api/v1/order",
            &body.to_string(),
            &format!("instruction=orderExecute{params}"),
        );
        assert_eq!(status, 200, "{order}");
    }
    get(port, "/health").trim().strip_prefix("ok ").unwrap().parse::<u64>().unwrap()
}
