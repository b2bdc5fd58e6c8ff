//! The journal-following market-data replica (`exchange replica --from-log`, issue #19 item 4)
//! against a real Kafka-protocol broker (tansu, `scripts/services`), as OS processes.
//!
//! `replica_rebuilds_the_primarys_market_data_from_the_journal_topic`: a real server trades a
//! bounded demo flow; its journal is then appended to a fresh journal topic with the cluster's own
//! writer ([`JournalTopic`]): an epoch marker, batches, a second primary's marker, a deposed
//! primary's late batch (a command the real server never ran: it must be ignored), the rest of
//! the batches, and a checkpoint with the state hash of a replay. A replica that started on the
//! empty topic (a WebSocket client follows `depth.BTC_USDC` from its first REST snapshot and
//! `trade.BTC_USDC`) must end with the server's depth for every market and the server's trades,
//! having streamed gap-free diffs (ids are engine sequences) and every trade; the superseded batch
//! is counted, the checkpoint agrees. A second replica started from one of the server's snapshot
//! files reaches the same depth with the same `lastUpdateId`.
//!
//! `replica_follows_a_replicated_primary_live`: a primary with `durability = "replicated"` and a
//! replica running side by side: after the flow, the replica's depth and trades equal the
//! primary's at the same sequence; the replica's staleness histogram (journal timestamp to
//! publish) is printed as p50/p99.
//!
//! Needs `EXCHANGE_TEST_KAFKA_BROKERS`; skipped loudly without it, failed under
//! `EXCHANGE_REQUIRE_SERVICES=1` (scripts/test).

mod support;

use codec::Command as EngineCommand;
use engine::journal::{Durability, JournalConfig, JournalReader, JournalWriter, RecoveryOptions};
use exchange::cluster::log::JournalTopic;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::replica::{Recorder, stop};
use support::{DepthBook, apply_depth};

const BINARY: &str = env!("CARGO_BIN_EXE_exchange");
/// Journal records per shipped batch (a group commit).
const BATCH_RECORDS: usize = 64;
/// How long anything may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// GET `path`; the status code and the body as text.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split_once("\r\n\r\n").map_or(String::new(), |(_, body)| body.to_string()))
}

/// GET `path`; the status code and the parsed JSON body.
fn get_json(port: u16, path: &str) -> (u16, Value) {
    let (status, body) = get(port, path);
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
}

/// A child process that is killed when dropped, so a failing assertion leaves no server behind.
struct Process(Child);

impl std::ops::Deref for Process {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        stop(&mut self.0);
    }
}

/// Starts the binary with `args` and waits for its "listen=IP:PORT" log line after `marker`.
fn start(args: &[&str], marker: &str) -> (Process, u16) {
    let mut spawned = Command::new(BINARY)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BROKERS")
        .env_remove("REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(spawned.stderr.take().unwrap());
    let child = Process(spawned);
    let mut line = String::new();
    let mut seen = String::new();
    let port = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{args:?} exited before listening:\n{seen}");
        seen.push_str(&line);
        if line.contains(marker)
            && let Some(address) = line.split("listen=").nth(1)
        {
            break address.split_whitespace().next().unwrap().rsplit(':').next().unwrap().parse::<u16>().unwrap();
        }
    };
    // Forwarded, so a failure shows the processes' own account of it.
    std::thread::spawn(move || {
        let mut line = String::new();
        while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line.contains("ERROR") || line.contains("WARN") {
                eprint!("[child] {line}");
            }
            line.clear();
        }
    });
    (child, port)
}

fn replica(config: &Path, extra: &[&str]) -> (Process, u16) {
    let mut args = vec!["--config", config.to_str().unwrap(), "--http-port", "0", "replica", "--from-log"];
    args.extend_from_slice(extra);
    start(&args, "replica HTTP listening")
}

/// A fresh directory with an exchange.toml naming `brokers` and a journal topic of its own;
/// `extra` goes into its `[cluster]` table.
fn setup(name: &str, brokers: &str, extra: &str) -> (PathBuf, PathBuf, String) {
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("exchange-{name}-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let topic = format!("journal-{name}-{id}-{nanos}");
    let config = dir.join("exchange.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[cluster]\nbrokers = \"{brokers}\"\njournal_topic = \"{topic}\"\nusers_topic = \"{topic}.users\"\n{extra}",
            exchange::config::DEFAULT_CONFIG
        ),
    )
    .unwrap();
    (dir, config, topic)
}

/// Every market's symbol, from the server's REST API.
fn symbols(port: u16) -> Vec<String> {
    let (status, markets) = get_json(port, "/api/v1/markets");
    assert_eq!(status, 200, "{markets}");
    markets.as_array().unwrap().iter().map(|m| m["symbol"].as_str().unwrap().to_string()).collect()
}

/// Every market's full depth (without the time of reading) and last 1,000 trades.
fn market_data(port: u16, symbols: &[String]) -> Vec<(Value, Value)> {
    symbols
        .iter()
        .map(|symbol| {
            let (status, mut depth) = get_json(port, &format!("/api/v1/depth?symbol={symbol}&limit=5000"));
            assert_eq!(status, 200, "{symbol}: {depth}");
            depth.as_object_mut().unwrap().remove("timestamp");
            let (status, trades) = get_json(port, &format!("/api/v1/trades?symbol={symbol}&limit=1000"));
            assert_eq!(status, 200, "{symbol}: {trades}");
            (depth, trades)
        })
        .collect()
}

/// Waits until the server's market data stays the same for 2 s (its flow has stopped).
fn still_market_data(port: u16, symbols: &[String]) -> Vec<(Value, Value)> {
    let deadline = Instant::now() + PATIENCE;
    let mut last = market_data(port, symbols);
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_secs(2) {
        assert!(Instant::now() < deadline, "the demo flow should stop");
        std::thread::sleep(Duration::from_millis(200));
        let now = market_data(port, symbols);
        if now != last {
            still_since = Instant::now();
        }
        last = now;
    }
    last
}

/// Waits until the replica's `/health` names `sequence`.
fn wait_for_sequence(port: u16, sequence: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, health) = get(port, "/health");
        if health == format!("ok {sequence}\n") {
            return;
        }
        assert!(Instant::now() < deadline, "the replica should reach sequence {sequence}: {health}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the unlabelled series `name` on a `/metrics` page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        .trim()
        .parse()
        .unwrap()
}

/// The `quantile` (0..1) of a Prometheus histogram on a `/metrics` page: the upper bound of the
/// bucket that holds it (seconds), and the count.
fn histogram_quantile(page: &str, name: &str, quantile: f64) -> (f64, u64) {
    let buckets: Vec<(f64, u64)> = page
        .lines()
        .filter_map(|line| line.strip_prefix(&format!("{name}_bucket{{le=\"")))
        .map(|rest| {
            let (bound, count) = rest.split_once("\"} ").unwrap();
            (if bound == "+Inf" { f64::INFINITY } else { bound.parse().unwrap() }, count.trim().parse().unwrap())
        })
        .collect();
    let total = buckets.last().map_or(0, |(_, count)| *count);
    let rank = (quantile * total as f64).ceil() as u64;
    let bound = buckets.iter().find(|(_, count)| *count >= rank.max(1)).map_or(f64::NAN, |(bound, _)| *bound);
    (bound, total)
}

/// The server's journal: `(sequence, timestamp, payload)` of every record.
fn journal_records(data: &Path) -> Vec<(u64, u64, Vec<u8>)> {
    let mut records = Vec::new();
    JournalReader::open(&data.join("journal"))
        .unwrap()
        .for_each_after::<engine::journal::JournalError, _>(0, |record| {
            records.push((record.sequence, record.timestamp_ns, record.payload.to_vec()));
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
    records
}

/// `records` framed as the journal frames them (a group commit's bytes), numbered from their
/// first sequence.
fn framed(scratch: &Path, records: &[(u64, u64, Vec<u8>)]) -> Vec<u8> {
    let _ = std::fs::remove_dir_all(scratch);
    let config = JournalConfig { durability: Durability::None, segment_bytes_max: 1 << 24 };
    let options = RecoveryOptions { after: records[0].0 - 1, accept_loss: true, ..RecoveryOptions::default() };
    let (mut writer, _) = JournalWriter::open_with(scratch, config, &options).unwrap();
    for (sequence, timestamp_ns, payload) in records {
        assert_eq!(writer.append(*timestamp_ns, payload).unwrap(), *sequence);
    }
    writer.pending_records().to_vec()
}

#[test]
fn replica_rebuilds_the_primarys_market_data_from_the_journal_topic() {
    let Some([brokers]) = support::services(["EXCHANGE_TEST_KAFKA_BROKERS"]) else { return };
    let (dir, config, topic) = setup("replica-log", &brokers, "");
    let data = dir.join("data");

    // The replica starts on the empty topic: fresh at once (nothing to catch up), depth empty.
    let (replica_a, port_a) = replica(&config, &[]);
    let deadline = Instant::now() + PATIENCE;
    let first_snapshot = loop {
        let (status, body) = get_json(port_a, "/api/v1/depth?symbol=BTC_USDC&limit=5000");
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "the replica should serve depth: {status} {body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(first_snapshot["lastUpdateId"], "0", "{first_snapshot}");
    let streams = Recorder::start(port_a, &["depth.BTC_USDC", "trade.BTC_USDC"]);

    // The real server trades a bounded demo flow, snapshots every 500 commands, then stops.
    let data_arg = data.to_str().unwrap();
    let config_arg = config.to_str().unwrap();
    let (mut server, server_port) = start(
        &[
            "--config",
            config_arg,
            "--data",
            data_arg,
            "--http-port",
            "0",
            "--sbe-port",
            "0",
            "--fix-port",
            "0",
            "--snapshot-every",
            "500",
            "run",
            "--demo",
            "--demo-rate",
            "2000",
            "--demo-orders",
            "4000",
        ],
        "HTTP listening",
    );
    let symbols = symbols(server_port);
    let server_data = still_market_data(server_port, &symbols);
    let status = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(server.wait().unwrap().success(), "the server should exit cleanly on SIGTERM");

    // Its journal goes to the topic as a replicated primary would have appended it, with a
    // failover in the middle: the deposed primary's late batch holds a command the server never
    // ran (an order at a price nobody quoted), which every follower must ignore.
    let records = journal_records(&data);
    let last = records.last().unwrap().0;
    assert!(last > 1_000, "the demo flow ran ({last} commands)");
    let engine_config = exchange::config::Config::load(Some(&config)).unwrap().engine_config().unwrap();
    let mut replayed = engine::Engine::new(&engine_config).unwrap();
    let mut events = Vec::new();
    for (sequence, timestamp_ns, payload) in &records {
        let (command, _) = EngineCommand::decode(payload).unwrap();
        events.clear();
        replayed.execute(engine::CommandContext::new(*sequence, *timestamp_ns), &command, &mut events);
    }
    let scratch = dir.join("scratch");
    let writer = JournalTopic::open(&brokers, &topic, 1, Duration::from_secs(10)).unwrap();
    let first_epoch = writer.append_epoch(1).unwrap();
    let half = records.len() / 2;
    for chunk in records[..half].chunks(BATCH_RECORDS) {
        let (first, end) = (chunk[0].0, chunk[chunk.len() - 1].0);
        writer.append_batch(first_epoch, first, end, &framed(&scratch, chunk)).unwrap();
    }
    let second_epoch = writer.append_epoch(2).unwrap();
    let next = records[half].0;
    // Its order id and the price level would show on every follower that applied it.
    let stray = engine::testkit::commands::limit(1, 1, codec::Side::Bid, 1, 1, codec::TimeInForce::Gtc, 77);
    let late = writer.append_batch(first_epoch, next, next, &framed(&scratch, &[(next, 1, stray.to_vec())])).unwrap();
    assert!(late > second_epoch);
    for chunk in records[half..].chunks(BATCH_RECORDS) {
        let (first, end) = (chunk[0].0, chunk[chunk.len() - 1].0);
        writer.append_batch(second_epoch, first, end, &framed(&scratch, chunk)).unwrap();
    }
    writer.append_checkpoint(last, replayed.state_hash()).unwrap();

    wait_for_sequence(port_a, last);
    // The checkpoint follows the last batch: once it is counted, every frame is out too.
    let deadline = Instant::now() + PATIENCE;
    let metrics = loop {
        let (_, page) = get(port_a, "/metrics");
        if metric(&page, "exchange_cluster_checkpoints_total") >= 1.0 {
            break page;
        }
        assert!(Instant::now() < deadline, "the replica should compare the checkpoint: {page}");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300)); // the last frames reach the recorder
    assert_eq!(metric(&metrics, "exchange_cluster_divergence_total"), 0.0, "{metrics}");
    assert_eq!(metric(&metrics, "exchange_cluster_superseded_batches_total"), 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "exchange_replica_commands_total"), last as f64, "{metrics}");
    assert_eq!(metric(&metrics, "exchange_replica_failed"), 0.0, "{metrics}");
    assert_eq!(histogram_quantile(&metrics, "exchange_replica_staleness_seconds", 0.5).1, last, "{metrics}");

    // The replica's market data is the server's: every market's depth and trades.
    let replica_data = market_data(port_a, &symbols);
    for ((symbol, (server_depth, server_trades)), (replica_depth, replica_trades)) in
        symbols.iter().zip(&server_data).zip(&replica_data)
    {
        assert_eq!(replica_depth["asks"], server_depth["asks"], "{symbol} asks");
        assert_eq!(replica_depth["bids"], server_depth["bids"], "{symbol} bids");
        assert_eq!(replica_trades, server_trades, "{symbol} trades");
        // Depth ids are engine sequences: the last command that changed the market.
        let update: u64 = replica_depth["lastUpdateId"].as_str().unwrap().parse().unwrap();
        assert!(update > 0 && update <= last, "{symbol}: lastUpdateId {update}, last sequence {last}");
    }
    let btc = symbols.iter().position(|s| s == "BTC_USDC").unwrap();
    assert!(server_data[btc].0["asks"].as_array().is_some_and(|a| !a.is_empty()), "{:?}", server_data[btc]);

    // The streams: the empty snapshot plus every diff, gap-free, is the final book; every trade,
    // in order.
    let frames = streams.stop();
    let mut book: DepthBook = Default::default();
    let mut previous = 0;
    let mut diffs = 0;
    let mut streamed_trades = Vec::new();
    for frame in &frames {
        let data = &frame["data"];
        if frame["stream"] == "trade.BTC_USDC" {
            streamed_trades.push(data["t"].as_u64().unwrap());
            continue;
        }
        assert_eq!(frame["stream"], "depth.BTC_USDC", "{frame}");
        let (first, end) = (data["U"].as_u64().unwrap(), data["u"].as_u64().unwrap());
        assert_eq!(first, previous + 1, "gap-free: {data}");
        assert!(end >= first && end <= last, "ids are engine sequences: {data}");
        previous = end;
        apply_depth(&mut book, data);
        diffs += 1;
    }
    let mut expected: DepthBook = Default::default();
    apply_depth(&mut expected, &server_data[btc].0);
    assert!(diffs > 10, "the demo moves the book ({diffs} diffs)");
    assert_eq!(book, expected, "{diffs} diffs from the empty book = the server's last book");
    let server_trade_ids: Vec<u64> =
        server_data[btc].1.as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert!(!server_trade_ids.is_empty() && server_trade_ids.len() < 1000, "{}", server_trade_ids.len());
    assert_eq!(streamed_trades, server_trade_ids, "every BTC trade streamed once, in order");
    eprintln!("{last} commands, {diffs} BTC depth diffs, {} BTC trades", server_trade_ids.len());

    // A second replica from one of the server's snapshot files (not the last sequence): the same
    // books, with the same depth ids.
    let snapshots = engine::snapshot::list_snapshots(&data.join("snapshots")).unwrap();
    let (at, file) =
        snapshots.iter().filter(|(sequence, _)| *sequence < last).min().expect("an older snapshot").clone();
    let (replica_b, port_b) = replica(&config, &["--snapshot", file.to_str().unwrap()]);
    wait_for_sequence(port_b, last);
    let (_, page_b) = get(port_b, "/metrics");
    assert_eq!(metric(&page_b, "exchange_replica_skipped_total"), at as f64, "{page_b}");
    for (symbol, (replica_depth, _)) in symbols.iter().zip(&replica_data) {
        let (status, depth) = get_json(port_b, &format!("/api/v1/depth?symbol={symbol}&limit=5000"));
        assert_eq!(status, 200, "{depth}");
        assert_eq!(depth["asks"], replica_depth["asks"], "{symbol} asks: replica from snapshot {at}");
        assert_eq!(depth["bids"], replica_depth["bids"], "{symbol} bids: replica from snapshot {at}");
        // A market changed after the snapshot has the sequence of that change on both; one that
        // did not has the snapshot's sequence (its previous changes are before the seeded books).
        let id = |depth: &Value| depth["lastUpdateId"].as_str().unwrap().parse::<u64>().unwrap();
        let expected = if id(replica_depth) > at { id(replica_depth) } else { at };
        assert_eq!(id(&depth), expected, "{symbol} lastUpdateId: replica from snapshot {at}");
    }
    drop((replica_a, replica_b));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sequence a process's `/health` names (`ok <sequence>`).
fn health_sequence(port: u16) -> u64 {
    let (_, health) = get(port, "/health");
    health.trim().strip_prefix("ok ").and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("/health: {health}"))
}

#[test]
fn replica_follows_a_replicated_primary_live() {
    let Some([brokers]) = support::services(["EXCHANGE_TEST_KAFKA_BROKERS"]) else { return };
    let id = std::process::id();
    // A lease of its own, so that other tests' primaries on the same broker are not candidates.
    let lease = format!("lease_topic = \"lease-{id}\"\nlease_group = \"primary-{id}\"\nsession_timeout_ms = 1000\n");
    let (dir, config, _) = setup("replica-live", &brokers, &lease);
    let (replica_child, replica_port) = replica(&config, &[]);
    let data = dir.join("data");
    let (mut primary, primary_port) = start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--durability",
            "replicated",
            "--http-port",
            "0",
            "--sbe-port",
            "0",
            "--fix-port",
            "0",
            "run",
            "--demo",
            "--demo-rate",
            "1000",
            "--demo-orders",
            "3000",
        ],
        "HTTP listening",
    );
    let streams = Recorder::start(replica_port, &["depth.BTC_USDC", "trade.BTC_USDC"]);
    let symbols = symbols(primary_port);
    let primary_data = still_market_data(primary_port, &symbols);
    let last = health_sequence(primary_port);
    assert!(last >= 3000, "the demo flow ran ({last} commands)");
    wait_for_sequence(replica_port, last);
    std::thread::sleep(Duration::from_millis(300)); // the last frames reach the recorder

    // At the same sequence, the replica's market data is the primary's.
    let replica_data = market_data(replica_port, &symbols);
    for ((symbol, (primary_depth, primary_trades)), (replica_depth, replica_trades)) in
        symbols.iter().zip(&primary_data).zip(&replica_data)
    {
        assert_eq!(replica_depth["asks"], primary_depth["asks"], "{symbol} asks");
        assert_eq!(replica_depth["bids"], primary_depth["bids"], "{symbol} bids");
        assert_eq!(replica_trades, primary_trades, "{symbol} trades");
    }
    // Gap-free diffs from the empty book to the primary's book, every trade.
    let frames = streams.stop();
    let btc = symbols.iter().position(|s| s == "BTC_USDC").unwrap();
    let mut book: DepthBook = Default::default();
    let (mut previous, mut diffs, mut trades) = (0, 0, Vec::new());
    for frame in &frames {
        let data = &frame["data"];
        if frame["stream"] == "trade.BTC_USDC" {
            trades.push(data["t"].as_u64().unwrap());
            continue;
        }
        let (first, end) = (data["U"].as_u64().unwrap(), data["u"].as_u64().unwrap());
        assert_eq!(first, previous + 1, "gap-free: {data}");
        previous = end;
        apply_depth(&mut book, data);
        diffs += 1;
    }
    let mut expected: DepthBook = Default::default();
    apply_depth(&mut expected, &primary_data[btc].0);
    assert_eq!(book, expected, "{diffs} diffs from the empty book = the primary's book");
    let primary_trades: Vec<u64> =
        primary_data[btc].1.as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert_eq!(trades, primary_trades, "every BTC trade streamed once, in order");

    let (_, metrics) = get(replica_port, "/metrics");
    let (p50, count) = histogram_quantile(&metrics, "exchange_replica_staleness_seconds", 0.5);
    let (p99, _) = histogram_quantile(&metrics, "exchange_replica_staleness_seconds", 0.99);
    assert_eq!(count, last, "one staleness value per command: {metrics}");
    assert_eq!(metric(&metrics, "exchange_cluster_divergence_total"), 0.0, "{metrics}");
    eprintln!(
        "{last} commands at 1,000/s (debug build): replica staleness p50 <= {:.2} ms, p99 <= {:.2} ms (bucket bounds)",
        p50 * 1e3,
        p99 * 1e3
    );
    let status = Command::new("kill").args(["-TERM", &primary.id().to_string()]).status().unwrap();
    assert!(status.success());
    let _ = primary.wait();
    drop(replica_child);
    let _ = std::fs::remove_dir_all(&dir);
}
