//! Followers that start from a snapshot read only the tail of the journal topic (issue #19, the
//! follow-up "gap 1"), as OS processes against a real Kafka-protocol broker (tansu).
//!
//! `followers_started_from_a_snapshot_read_only_the_tail`: a replicated primary runs a bounded
//! demo flow while a standby follows it and snapshots every 500 commands (recording its journal
//! topic position beside each snapshot). The standby is killed and restarted: it resumes from its
//! own newest snapshot, starts reading at the recorded offset (not 0), reads exactly the records
//! after it (`exchange_cluster_log_records_read_total` = topic end - start offset) and reaches the
//! primary's last sequence. A `replica --from-log --snapshot` of the standby's snapshot directory
//! does the same and serves the primary's depth. So does a `gateway --snapshot` of the same
//! directory, and it answers demo user 2's open orders (three resting bids placed through the
//! primary before the snapshot, and whatever the flow left) and balances, and the market maker's
//! open orders, exactly as the primary does. Then the primary is killed: the restarted
//! standby is promoted, and its state hash equals the test's own replay of the whole log.
//!
//! Needs `EXCHANGE_TEST_KAFKA_BROKERS`; skipped loudly without it, failed under
//! `EXCHANGE_REQUIRE_SERVICES=1` (scripts/test).

mod support;

use engine::Engine;
use exchange::cluster::log::{LogFollower, LogPosition};
use exchange::config::{Config, DEFAULT_CONFIG};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};
use support::cluster::{LogReplay, PATIENCE};
use support::{JSON, request, signature_lines};

/// Commands between the standby's snapshots.
const SNAPSHOT_EVERY: u64 = 500;
/// Commands of the demo flow.
const DEMO_COMMANDS: u64 = 6_000;

/// A child process killed (SIGKILL) and reaped when dropped; its log lines on a channel.
struct Process {
    child: Child,
    lines: Receiver<String>,
    stdout: Receiver<String>,
    /// Every line of its log so far (for a failure's diagnosis).
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Process {
    fn start(args: &[&str]) -> Self {
        let mut child = std::process::Command::new(support::BINARY)
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
    fn tail(&self) -> String {
        let log = self.log.lock().unwrap();
        let path = std::env::temp_dir().join(format!("cluster-tail-{}.log", self.child.id()));
        let _ = std::fs::write(&path, log.join("\n"));
        format!("({} lines in {})\n{}", log.len(), path.display(), log[log.len().saturating_sub(40)..].join("\n"))
    }

    /// The first log line containing `marker` (waiting for it).
    fn wait_line(&self, marker: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| panic!("no log line {marker:?}: {e}"));
            if line.contains(marker) {
                return line;
            }
        }
    }

    /// The port of the first log line containing `marker` and `listen=IP:PORT`.
    fn wait_port(&self, marker: &str) -> u16 {
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
fn get(port: u16, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_once("\r\n\r\n").map_or(String::new(), |(_, body)| body.to_string())
}

/// The value of the unlabelled series `name` on a `/metrics` page (`None`: not there).
fn metric(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok().map(|v| v as u64))
}

/// Waits until `/metrics` on `port` has `name` equal to `value`; returns the page.
fn wait_metric(port: u16, name: &str, value: u64) -> String {
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
fn wait_metric_at_least(port: u16, name: &str, value: u64) {
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
fn still_sequence(port: u16) -> u64 {
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
fn signed(port: u16, user: u8, method: &str, path: &str, body: &str, signed: &str) -> (u16, serde_json::Value) {
    let headers = JSON.to_string() + &signature_lines(&[user; 32], signed);
    let response = request(port, method, path, &headers, body);
    (response.status(), response.json(path))
}

/// Demo user `user`'s open orders on BTC_USDC, sorted by id, and its balances.
fn orders_and_balances(port: u16, user: u8) -> (Vec<serde_json::Value>, serde_json::Value) {
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
fn without_unsnapshotted(orders: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let mut orders = orders.to_vec();
    for order in &mut orders {
        let order = order.as_object_mut().unwrap();
        order.remove("createdAt").unwrap();
        order.remove("executedQuoteQuantity").unwrap();
    }
    orders
}

/// Whether `dir` holds a snapshot with a recorded log position.
fn has_positioned_snapshot(dir: &Path) -> bool {
    engine::snapshot::list_snapshots(dir).unwrap().iter().any(|(_, file)| LogPosition::read_for(file).is_some())
}

/// The newest snapshot in `dir` with a recorded log position: (sequence, position).
fn newest_positioned_snapshot(dir: &Path) -> (u64, LogPosition) {
    engine::snapshot::list_snapshots(dir)
        .unwrap()
        .into_iter()
        .find_map(|(sequence, file)| LogPosition::read_for(&file).map(|position| (sequence, position)))
        .unwrap_or_else(|| panic!("no snapshot with a log position in {}", dir.display()))
}

#[test]
fn followers_started_from_a_snapshot_read_only_the_tail() {
    let Some([brokers]) = support::services(["EXCHANGE_TEST_KAFKA_BROKERS"]) else { return };
    let id = std::process::id();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let unique = format!("{id}-{nanos}");
    let root = std::env::temp_dir().join(format!("exchange-cluster-tail-{id}"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let journal_topic = format!("tail.journal.{unique}");
    let config_path = root.join("exchange.toml");
    std::fs::write(
        &config_path,
        format!(
            "{DEFAULT_CONFIG}\n[cluster]\nbrokers = \"{brokers}\"\njournal_topic = \"{journal_topic}\"\nusers_topic = \"{journal_topic}.users\"\n\
             lease_topic = \"tail.lease.{unique}\"\nlease_group = \"tail.{unique}\"\n\
             commands_topic = \"tail.commands.{unique}\"\nsession_timeout_ms = 1000\ncheckpoint_every = 500\n"
        ),
    )
    .unwrap();
    let config = config_path.to_str().unwrap();
    let engine_config = Config::load(Some(&config_path)).unwrap().engine_config().unwrap();
    let (primary_data, standby_data) = (root.join("primary"), root.join("standby"));
    let ports = ["--http-port", "0", "--sbe-port", "0", "--fix-port", "0"];

    let demo = DEMO_COMMANDS.to_string();
    let mut args = vec!["--config", config, "--data", primary_data.to_str().unwrap(), "--durability", "replicated"];
    args.extend(ports);
    args.extend(["run", "--demo", "--demo-rate", "1500", "--demo-orders", &demo, "--status-every", "0"]);
    let mut primary = Process::start(&args);
    let primary_port = primary.wait_port(support::HTTP_LISTENING);
    // Demo user 2's resting bids far below the market, placed once the demo has funded it (and
    // cancelled what an earlier run left), long before the standby's snapshot.
    let deadline = Instant::now() + PATIENCE;
    while signed(primary_port, 2, "GET", "/api/v1/capital", "", "instruction=balanceQuery").1.get("USDC").is_none() {
        assert!(Instant::now() < deadline, "demo user 2 never funded");
        std::thread::sleep(Duration::from_millis(20));
    }
    // 5% below the best bid: inside the ±10% price band, below where the demo's fair price walks.
    let deadline = Instant::now() + PATIENCE;
    let best_bid = loop {
        let depth = get(primary_port, "/api/v1/depth?symbol=BTC_USDC&limit=1");
        let value: serde_json::Value = serde_json::from_str(&depth).unwrap_or_default();
        if let Some(price) = value["bids"][0][0].as_str().and_then(|p| p.parse::<f64>().ok()) {
            break price;
        }
        assert!(Instant::now() < deadline, "the demo market maker never quoted BTC_USDC: {depth}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let price = format!("{}", (best_bid * 0.95).floor() as u64);
    let resting_bids = ["0.01000", "0.02000", "0.03000"];
    for quantity in resting_bids {
        let body = serde_json::json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": price,
                                      "quantity": quantity});
        let params = format!("&orderType=Limit&price={price}&quantity={quantity}&side=Bid&symbol=BTC_USDC");
        let (status, order) = signed(
            primary_port,
            2,
            "POST",
            "/api/v1/order",
            &body.to_string(),
            &format!("instruction=orderExecute{params}"),
        );
        assert_eq!(status, 200, "{order}");
    }
    let placed_by = get(primary_port, "/health").trim().strip_prefix("ok ").unwrap().parse::<u64>().unwrap();
    let every = SNAPSHOT_EVERY.to_string();
    let mut standby_args =
        vec!["--config", config, "--data", standby_data.to_str().unwrap(), "--snapshot-every", &every];
    standby_args.extend(ports);
    standby_args.extend(["standby", "--status-every", "0", "--print-acks"]);
    let standby = Process::start(&standby_args);
    assert!(standby.wait_line("following the journal topic from offset").contains("offset=0 "));
    let status_port = standby.wait_port("standby status listening");

    // Killed mid-flow, once it has a snapshot with a position, so that the log goes on
    // without it.
    wait_metric_at_least(status_port, "exchange_cluster_applied_sequence", DEMO_COMMANDS / 4);
    let deadline = Instant::now() + PATIENCE;
    while !has_positioned_snapshot(&standby_data.join("snapshots")) {
        assert!(Instant::now() < deadline, "the standby should snapshot every {SNAPSHOT_EVERY} commands");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(standby); // SIGKILL
    let last = still_sequence(primary_port);
    let (snapshot_sequence, position) = newest_positioned_snapshot(&standby_data.join("snapshots"));
    assert!(snapshot_sequence >= SNAPSHOT_EVERY && position.offset > 0, "{snapshot_sequence} {position:?}");
    assert!(snapshot_sequence < last, "the log went on after the standby's last snapshot");
    assert!(
        snapshot_sequence > placed_by,
        "demo user 2's bids ({placed_by}) are in the snapshot ({snapshot_sequence})"
    );
    let end = LogFollower::open(&brokers, &journal_topic, 1).unwrap().end_offset().unwrap();
    eprintln!("standby snapshot at sequence {snapshot_sequence}, log offset {} of {end}", position.offset);

    // The restarted standby reads only the records after its snapshot.
    let standby = Process::start(&standby_args);
    let started = standby.wait_line("following the journal topic from offset");
    assert!(started.contains(&format!("offset={} ", position.offset)), "{started}");
    let status_port = standby.wait_port("standby status listening");
    let page = wait_metric(status_port, "exchange_cluster_applied_sequence", last);
    let page = if metric(&page, "exchange_cluster_log_records_read_total") == Some((end - position.offset) as u64) {
        page
    } else {
        wait_metric(status_port, "exchange_cluster_log_records_read_total", (end - position.offset) as u64)
    };
    assert_eq!(metric(&page, "exchange_cluster_log_start_offset"), Some(position.offset as u64), "{page}");
    assert_eq!(metric(&page, "exchange_cluster_divergence_total"), Some(0), "{page}");

    // So does a replica started from the standby's snapshots.
    let snapshots = standby_data.join("snapshots");
    let mut replica_args = vec!["--config", config, "--http-port", "0", "replica", "--from-log", "--snapshot"];
    replica_args.push(snapshots.to_str().unwrap());
    let replica = Process::start(&replica_args);
    let replica_port = replica.wait_port("replica HTTP listening");
    let page = wait_metric(replica_port, "exchange_replica_sequence", last);
    let start = metric(&page, "exchange_cluster_log_start_offset").unwrap();
    assert!(start >= position.offset as u64, "{page}");
    let page = wait_metric(replica_port, "exchange_cluster_log_records_read_total", end as u64 - start);
    assert_eq!(metric(&page, "exchange_replica_skipped_total"), Some(0), "nothing covered was read: {page}");
    assert_eq!(metric(&page, "exchange_cluster_divergence_total"), Some(0), "{page}");
    let primary_depth = get(primary_port, "/api/v1/depth?symbol=BTC_USDC&limit=5000");
    let replica_depth = get(replica_port, "/api/v1/depth?symbol=BTC_USDC&limit=5000");
    let levels = |depth: &str| {
        let value: serde_json::Value = serde_json::from_str(depth).unwrap_or_else(|e| panic!("{e}: {depth}"));
        (value["asks"].clone(), value["bids"].clone())
    };
    assert_eq!(levels(&replica_depth), levels(&primary_depth));
    drop(replica);

    // So does a gateway process started from the standby's snapshots, and its REST views (open
    // orders per user, balances), rebuilt from the snapshot's engine state plus the tail, are the
    // primary's.
    let gateway_data = root.join("gateway");
    let mut gateway_args = vec!["--config", config, "--data", gateway_data.to_str().unwrap(), "--gateway-id", "9"];
    gateway_args.extend(ports);
    gateway_args.extend(["gateway", "--demo", "--status-every", "0", "--snapshot", snapshots.to_str().unwrap()]);
    let gateway = Process::start(&gateway_args);
    let caught_up = gateway.wait_line("gateway caught up with the log");
    let field = |line: &str, name: &str| -> i64 {
        let value = line.split(&format!(" {name}=")).nth(1).unwrap_or_else(|| panic!("no {name}= in {line}"));
        value.split_whitespace().next().unwrap().parse().unwrap()
    };
    let (start, read) = (field(&caught_up, "start_offset"), field(&caught_up, "records_read"));
    assert!(start >= position.offset, "the gateway starts at its snapshot's position, not 0: {caught_up}");
    assert_eq!(read, end - start, "the gateway reads only the tail: {caught_up}");
    assert_eq!(field(&caught_up, "sequence"), last as i64, "{caught_up}");
    let gateway_port = gateway.wait_port(support::HTTP_LISTENING);
    let (orders, balances) = orders_and_balances(gateway_port, 2);
    let (primary_orders, primary_balances) = orders_and_balances(primary_port, 2);
    assert_eq!(balances, primary_balances);
    assert_eq!(without_unsnapshotted(&orders), without_unsnapshotted(&primary_orders));
    let quantities: Vec<&str> = orders.iter().filter_map(|order| order["quantity"].as_str()).collect();
    for quantity in resting_bids {
        assert!(quantities.iter().any(|q| q.parse::<f64>() == quantity.parse::<f64>()), "{quantity}: {orders:?}");
    }
    let (maker_orders, _) = orders_and_balances(gateway_port, 1);
    assert!(!maker_orders.is_empty(), "the market maker rests orders");
    let (primary_maker_orders, primary_maker_balances) = orders_and_balances(primary_port, 1);
    assert_eq!(orders_and_balances(gateway_port, 1).1, primary_maker_balances);
    assert_eq!(without_unsnapshotted(&maker_orders), without_unsnapshotted(&primary_maker_orders));
    drop(gateway);

    // The resumed standby, promoted, holds exactly the state of a replay of the whole log.
    let _ = primary.child.kill();
    let _ = primary.child.wait();
    let deadline = Instant::now() + PATIENCE;
    let (sequence, hash) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = standby.stdout.recv_timeout(left).unwrap_or_else(|_| panic!("no promotion:\n{}", standby.tail()));
        if let Some(rest) = line.strip_prefix("PROMOTED ") {
            let (sequence, hash) = rest.split_once(' ').unwrap();
            break (sequence.parse::<u64>().unwrap(), hash.to_string());
        }
    };
    assert_eq!(sequence, last);
    let mut replay =
        LogReplay::new(LogFollower::open(&brokers, &journal_topic, 1).unwrap(), Engine::new(&engine_config).unwrap());
    assert_eq!(hash, replay.hash_at(sequence), "the promoted standby's state is the log's");
    let rejoins = standby.log.lock().unwrap().iter().filter(|line| line.contains("alone in the lease group")).count();
    eprintln!("promoted at sequence {sequence}; lease rejoins while alone without the lease: {rejoins}");
    drop(standby);
    let _ = std::fs::remove_dir_all(&root);
}
