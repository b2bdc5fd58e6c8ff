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
use std::path::Path;
use std::time::{Duration, Instant};
use support::cluster::{LogReplay, PATIENCE};
use support::process::{
    Process, RESTING_BIDS, get, metric, orders_and_balances, place_resting_bids, still_sequence, wait_metric,
    wait_metric_at_least, without_unsnapshotted,
};

/// Commands between the standby's snapshots.
const SNAPSHOT_EVERY: u64 = 500;
/// Commands of the demo flow.
const DEMO_COMMANDS: u64 = 6_000;

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
             commands_topic = \"tail.commands.{unique}\"\nsnapshot_topic = \"tail.snapshots.{unique}\"\nsession_timeout_ms = 1000\ncheckpoint_every = 500\n"
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
    // Demo user 2's resting bids far below the market, long before the standby's snapshot.
    let resting_bids = RESTING_BIDS;
    let placed_by = place_resting_bids(primary_port, 2, &resting_bids);
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
    let (sequence, hash) = standby.wait_promoted();
    assert_eq!(sequence, last);
    let mut replay =
        LogReplay::new(LogFollower::open(&brokers, &journal_topic, 1).unwrap(), Engine::new(&engine_config).unwrap());
    assert_eq!(hash, replay.hash_at(sequence), "the promoted standby's state is the log's");
    let rejoins = standby.log.lock().unwrap().iter().filter(|line| line.contains("alone in the lease group")).count();
    eprintln!("promoted at sequence {sequence}; lease rejoins while alone without the lease: {rejoins}");
    drop(standby);
    let _ = std::fs::remove_dir_all(&root);
}
