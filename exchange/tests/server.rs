//! The server binary end to end: starts on the embedded default configuration with `--demo`,
//! serves Prometheus metrics that show the demo's commands, and shuts down cleanly on SIGTERM
//! with a final snapshot that `exchange replay` then verifies.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::{BINARY, Server, request};

fn http_get(port: u16, path: &str) -> String {
    request(port, "GET", path, "", "").raw
}

#[test]
fn demo_server_serves_metrics_and_stops_cleanly() {
    let dir = support::data_dir("server");
    let mut server = Server::start(&dir, &["run", "--demo", "--demo-rate", "2000"], &[]);
    let port = server.http;

    let deadline = Instant::now() + Duration::from_secs(10);
    let new_orders = loop {
        let metrics = http_get(port, "/metrics");
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("exchange_commands_total{type=\"new_order\"} "))
            .unwrap()
            .parse()
            .unwrap();
        if count >= 100 || Instant::now() > deadline {
            assert!(metrics.contains("exchange_journal_commit_seconds_count"));
            break count;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(new_orders >= 100, "the demo should be trading ({new_orders} orders)");
    assert!(http_get(port, "/health").contains("ok "));

    // SIGTERM: drain, commit, snapshot, exit 0.
    let status = server.terminate();
    assert!(status.success(), "{status}");
    let snapshots = std::fs::read_dir(dir.join("snapshots")).unwrap().count();
    assert!(snapshots >= 1, "shutdown writes a snapshot");
    let replay = Command::new(BINARY).args(["--data", dir.to_str().unwrap(), "replay"]).output().unwrap();
    let report = String::from_utf8_lossy(&replay.stdout);
    assert!(replay.status.success() && report.contains("invariants       ok"), "{report}");
    assert!(report.contains("replayed         0 commands"), "the shutdown snapshot covers everything: {report}");
    std::fs::remove_dir_all(&dir).unwrap();
}
