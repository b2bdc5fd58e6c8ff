//! The server binary end to end: starts on the embedded default configuration with `--demo`,
//! serves Prometheus metrics that show the demo's commands, and shuts down cleanly on SIGTERM
//! with a final snapshot that `exchange replay` then verifies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_exchange");

fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn demo_server_serves_metrics_and_stops_cleanly() {
    let dir = std::env::temp_dir().join(format!("exchange-server-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(BINARY)
        .args([
            "--data",
            dir.to_str().unwrap(),
            "--http-port",
            "0",
            "--sbe-port",
            "0",
            "--fix-port",
            "0",
            "run",
            "--demo",
            "--demo-rate",
            "2000",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let port = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "server exited before listening");
        if let Some(address) = line.split("listen=").nth(1) {
            break address.split_whitespace().next().unwrap().rsplit(':').next().unwrap().parse::<u16>().unwrap();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));

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
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let snapshots = std::fs::read_dir(dir.join("snapshots")).unwrap().count();
    assert!(snapshots >= 1, "shutdown writes a snapshot");
    let replay = Command::new(BINARY).args(["--data", dir.to_str().unwrap(), "replay"]).output().unwrap();
    let report = String::from_utf8_lossy(&replay.stdout);
    assert!(replay.status.success() && report.contains("invariants       ok"), "{report}");
    assert!(report.contains("replayed         0 commands"), "the shutdown snapshot covers everything: {report}");
    std::fs::remove_dir_all(&dir).unwrap();
}
