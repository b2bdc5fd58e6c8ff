//! Followers that start from a snapshot read only the tail of the journal topic (issue #19, the
//! follow-up "gap 1"), as OS processes against a real Kafka-protocol broker (tansu).
//!
//! `followers_started_from_a_snapshot_read_only_the_tail`: a replicated primary runs a bounded
//! demo flow while a standby follows it and snapshots every 500 commands (recording its journal
//! topic position beside each snapshot). The standby is killed and restarted: it resumes from its
//! own newest snapshot, starts reading at the recorded offset (not 0), reads exactly the records
//! after it (`exchange_cluster_log_records_read_total` = topic end - start offset) and reaches the
//! primary's last sequence. A `replica --from-log --snapshot` of the standby's snapshot directory
//! does the same and serves the primary's depth. Then the primary is killed: the restarted
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
            "{DEFAULT_CONFIG}\n[cluster]\nbrokers = \"{brokers}\"\njournal_topic = \"{journal_topic}\"\n\
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
