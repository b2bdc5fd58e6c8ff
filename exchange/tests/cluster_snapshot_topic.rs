//! Snapshots distributed through Kafka: nodes with no local snapshot start from the snapshot
//! topic and read only the tail of the journal topic, as OS processes against a real
//! Kafka-protocol broker (tansu).
//!
//! `fresh_nodes_start_from_the_snapshot_topic_and_read_only_the_tail`: a replicated primary runs
//! a bounded demo flow while a standby follows it, snapshots every 500 commands and publishes each
//! snapshot to the snapshot topic (`exchange_cluster_snapshots_published_total`). The standby is
//! killed; the flow goes on. The newest usable snapshot of the topic is one the standby wrote
//! locally, with the same journal topic position. Then, each with an empty data directory and no
//! `--snapshot`: a gateway process starts at that position (not 0), reads exactly the records
//! after it (`records_read` = topic end - position), reaches the primary's last sequence and
//! answers demo user 2's open orders (three resting bids placed before the snapshot) and balances
//! and the market maker's, as the primary does; a `replica --from-log` does the same and serves
//! the primary's depth; a fresh standby starts following at that position, reads only the tail,
//! and is then promoted with the state hash of the test's own replay of the whole log.
//!
//! Without the snapshot topic every one of them would start at offset 0 and read the whole
//! topic: the start-offset assertions fail.
//!
//! Needs `EXCHANGE_TEST_KAFKA_BROKERS`; skipped loudly without it, failed under
//! `EXCHANGE_REQUIRE_SERVICES=1` (scripts/test).

mod support;

use engine::Engine;
use exchange::cluster::log::{LogFollower, LogPosition};
use exchange::cluster::snapshots::{SnapshotTopic, read_published};
use exchange::config::{Config, DEFAULT_CONFIG};
use support::cluster::LogReplay;
use support::process::{
    Process, RESTING_BIDS, get, metric, orders_and_balances, place_resting_bids, still_sequence, wait_metric,
    wait_metric_at_least, without_unsnapshotted,
};

/// Commands between the standby's snapshots.
const SNAPSHOT_EVERY: u64 = 500;
/// Commands of the demo flow.
const DEMO_COMMANDS: u64 = 5_000;

#[test]
fn fresh_nodes_start_from_the_snapshot_topic_and_read_only_the_tail() {
    let Some([brokers]) = support::services(["EXCHANGE_TEST_KAFKA_BROKERS"]) else { return };
    let id = std::process::id();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let unique = format!("{id}-{nanos}");
    let root = std::env::temp_dir().join(format!("exchange-cluster-snapshot-topic-{id}"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let journal_topic = format!("snaptopic.journal.{unique}");
    let snapshot_topic = format!("snaptopic.snapshots.{unique}");
    let config_path = root.join("exchange.toml");
    std::fs::write(
        &config_path,
        format!(
            "{DEFAULT_CONFIG}\n[cluster]\nbrokers = \"{brokers}\"\njournal_topic = \"{journal_topic}\"\n\
             lease_topic = \"snaptopic.lease.{unique}\"\nlease_group = \"snaptopic.{unique}\"\n\
             commands_topic = \"snaptopic.commands.{unique}\"\nsnapshot_topic = \"{snapshot_topic}\"\n\
             session_timeout_ms = 1000\ncheckpoint_every = 500\n"
        ),
    )
    .unwrap();
    let config = config_path.to_str().unwrap();
    let loaded = Config::load(Some(&config_path)).unwrap();
    let engine_config = loaded.engine_config().unwrap();
    let (primary_data, standby_data) = (root.join("primary"), root.join("standby"));
    let ports = ["--http-port", "0", "--sbe-port", "0", "--fix-port", "0"];

    let demo = DEMO_COMMANDS.to_string();
    let mut args = vec!["--config", config, "--data", primary_data.to_str().unwrap(), "--durability", "replicated"];
    args.extend(ports);
    args.extend(["run", "--demo", "--demo-rate", "1500", "--demo-orders", &demo, "--status-every", "0"]);
    let mut primary = Process::start(&args);
    let primary_port = primary.wait_port(support::HTTP_LISTENING);
    let placed_by = place_resting_bids(primary_port, 2, &RESTING_BIDS);

    // The standby publishes its snapshots; killed mid-flow once one taken after the bids is
    // published, so that the log goes on without it.
    let every = SNAPSHOT_EVERY.to_string();
    let mut standby_args =
        vec!["--config", config, "--data", standby_data.to_str().unwrap(), "--snapshot-every", &every];
    standby_args.extend(ports);
    standby_args.extend(["standby", "--status-every", "0", "--print-acks"]);
    let standby = Process::start(&standby_args);
    assert!(standby.wait_line("following the journal topic from offset").contains("offset=0 "));
    let status_port = standby.wait_port("standby status listening");
    wait_metric_at_least(status_port, "exchange_cluster_snapshot_published_sequence", placed_by + 1);
    wait_metric_at_least(status_port, "exchange_cluster_applied_sequence", DEMO_COMMANDS / 4);
    let page = get(status_port, "/metrics");
    assert_eq!(metric(&page, "exchange_cluster_snapshot_publish_failures_total"), Some(0), "{page}");
    drop(standby); // SIGKILL
    let last = still_sequence(primary_port);

    // What the snapshot topic offers: a snapshot the standby wrote, with the position it recorded.
    let topic = SnapshotTopic::of(&loaded.cluster).unwrap();
    let published = read_published(&topic).unwrap();
    let newest = published.first().expect("a usable snapshot in the snapshot topic");
    let (sequence, position) = (newest.sequence, newest.position);
    let local = engine::snapshot::list_snapshots(&standby_data.join("snapshots")).unwrap();
    let (_, file) = local.iter().find(|(at, _)| *at == sequence).expect("the standby wrote the published snapshot");
    assert_eq!(std::fs::read(file).unwrap(), newest.bytes, "published bytes are the standby's snapshot");
    assert_eq!(LogPosition::read_for(file), Some(position), "published position is the standby's");
    assert!(sequence > placed_by && sequence < last && position.offset > 0, "{sequence} {position:?} {last}");
    let end = LogFollower::open(&brokers, &journal_topic, 1).unwrap().end_offset().unwrap();
    let tail = (end - position.offset) as u64;
    eprintln!("published snapshot at sequence {sequence}, log offset {} of {end}", position.offset);

    // A gateway process with an empty data directory and no --snapshot.
    let gateway_data = root.join("gateway");
    let mut gateway_args = vec!["--config", config, "--data", gateway_data.to_str().unwrap(), "--gateway-id", "9"];
    gateway_args.extend(ports);
    gateway_args.extend(["gateway", "--demo", "--status-every", "0"]);
    let gateway = Process::start(&gateway_args);
    let caught_up = gateway.wait_line("gateway caught up with the log");
    let field = |line: &str, name: &str| -> i64 {
        let value = line.split(&format!(" {name}=")).nth(1).unwrap_or_else(|| panic!("no {name}= in {line}"));
        value.split_whitespace().next().unwrap().parse().unwrap()
    };
    assert_eq!(field(&caught_up, "start_offset"), position.offset, "starts at the snapshot, not 0: {caught_up}");
    assert_eq!(field(&caught_up, "records_read"), tail as i64, "reads only the tail: {caught_up}");
    assert_eq!(field(&caught_up, "sequence"), last as i64, "{caught_up}");
    let gateway_port = gateway.wait_port(support::HTTP_LISTENING);
    for user in [2, 1] {
        let (orders, balances) = orders_and_balances(gateway_port, user);
        let (primary_orders, primary_balances) = orders_and_balances(primary_port, user);
        assert_eq!(balances, primary_balances, "user {user}");
        assert_eq!(without_unsnapshotted(&orders), without_unsnapshotted(&primary_orders), "user {user}");
        assert!(!orders.is_empty(), "user {user} rests orders");
        if user == 2 {
            let quantities: Vec<&str> = orders.iter().filter_map(|order| order["quantity"].as_str()).collect();
            for quantity in RESTING_BIDS {
                assert!(quantities.iter().any(|q| q.parse::<f64>() == quantity.parse::<f64>()), "{quantity}");
            }
        }
    }
    drop(gateway);

    // A journal-following replica without --snapshot.
    let replica = Process::start(&["--config", config, "--http-port", "0", "replica", "--from-log"]);
    let replica_port = replica.wait_port("replica HTTP listening");
    let page = wait_metric(replica_port, "exchange_replica_sequence", last);
    assert_eq!(metric(&page, "exchange_cluster_log_start_offset"), Some(position.offset as u64), "{page}");
    let page = wait_metric(replica_port, "exchange_cluster_log_records_read_total", tail);
    assert_eq!(metric(&page, "exchange_replica_skipped_total"), Some(0), "nothing covered was read: {page}");
    assert_eq!(metric(&page, "exchange_cluster_divergence_total"), Some(0), "{page}");
    let levels = |port: u16| {
        let depth = get(port, "/api/v1/depth?symbol=BTC_USDC&limit=5000");
        let value: serde_json::Value = serde_json::from_str(&depth).unwrap_or_else(|e| panic!("{e}: {depth}"));
        (value["asks"].clone(), value["bids"].clone())
    };
    assert_eq!(levels(replica_port), levels(primary_port));
    drop(replica);

    // A fresh standby (empty data directory) starts at the published snapshot, reads only the
    // tail, and, promoted, holds exactly the state of a replay of the whole log.
    let fresh_data = root.join("fresh-standby");
    let mut fresh_args = vec!["--config", config, "--data", fresh_data.to_str().unwrap()];
    fresh_args.extend(ports);
    fresh_args.extend(["standby", "--status-every", "0", "--print-acks"]);
    let fresh = Process::start(&fresh_args);
    let started = fresh.wait_line("following the journal topic from offset");
    assert!(started.contains(&format!("offset={} ", position.offset)), "{started}");
    let status_port = fresh.wait_port("standby status listening");
    let page = wait_metric(status_port, "exchange_cluster_applied_sequence", last);
    let page = if metric(&page, "exchange_cluster_log_records_read_total") == Some(tail) {
        page
    } else {
        wait_metric(status_port, "exchange_cluster_log_records_read_total", tail)
    };
    assert_eq!(metric(&page, "exchange_cluster_log_start_offset"), Some(position.offset as u64), "{page}");
    let _ = primary.child.kill();
    let _ = primary.child.wait();
    let (promoted_at, hash) = fresh.wait_promoted();
    assert_eq!(promoted_at, last);
    let mut replay =
        LogReplay::new(LogFollower::open(&brokers, &journal_topic, 1).unwrap(), Engine::new(&engine_config).unwrap());
    assert_eq!(hash, replay.hash_at(promoted_at), "the promoted fresh standby's state is the log's");
    drop(fresh);
    let _ = std::fs::remove_dir_all(&root);
}
