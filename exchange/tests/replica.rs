//! The read-only market-data replica (`exchange replica`) against a real Redis
//! (`scripts/services`): before any snapshot it answers 503; the real server runs the demo with
//! the Redis sink until its flow stops, is stopped with SIGTERM (the sink writes a final
//! snapshot), and the replica's depth then equals the server's last depth, level for level, and
//! names the sequence the sink wrote. With an unreachable Redis the replica answers 503.
//!
//! Needs `EXCHANGE_TEST_REDIS_URL`; skipped loudly without it, failed under
//! `EXCHANGE_REQUIRE_SERVICES=1` (scripts/test).

use serde_json::Value;
use sinks::redis_client as redis;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_exchange");

fn redis_url() -> Option<String> {
    match std::env::var("EXCHANGE_TEST_REDIS_URL").ok().filter(|v| !v.is_empty()) {
        Some(url) => Some(url),
        None => {
            assert!(
                std::env::var("EXCHANGE_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "EXCHANGE_TEST_REDIS_URL must be set under EXCHANGE_REQUIRE_SERVICES=1: scripts/test starts Redis"
            );
            eprintln!("\n!!! SKIPPED: EXCHANGE_TEST_REDIS_URL not set. Run `source scripts/services` first. !!!\n");
            None
        }
    }
}

/// GET `path`; the status code and the parsed JSON body.
fn get_json(port: u16, path: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {response}")))
}

/// Starts the binary with `args` and waits for its "listen=IP:PORT" log line.
fn start(args: &[&str], marker: &str) -> (Child, u16) {
    let mut child = Command::new(BINARY)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BROKERS")
        .env_remove("REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let port = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{args:?} exited before listening");
        if line.contains(marker)
            && let Some(address) = line.split("listen=").nth(1)
        {
            break address.split_whitespace().next().unwrap().rsplit(':').next().unwrap().parse::<u16>().unwrap();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, port)
}

fn replica(config: &Path, extra: &[&str]) -> (Child, u16) {
    let mut args = vec!["--config", config.to_str().unwrap(), "--http-port", "0"];
    args.extend_from_slice(extra);
    args.push("replica");
    start(&args, "replica HTTP listening")
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn replica_serves_the_servers_last_depth_from_redis() {
    let Some(redis_url) = redis_url() else { return };
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("exchange-replica-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = format!("replica{id}-");
    let config = dir.join("exchange.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[sinks.redis]\nurl = \"{redis_url}\"\nprefix = \"{prefix}\"\ndepth = 100000\ninterval_ms = 100\n",
            exchange::config::DEFAULT_CONFIG
        ),
    )
    .unwrap();

    // No snapshot yet: 503 in the API's terms; bad requests: 400.
    let (mut replica_child, replica_port) = replica(&config, &[]);
    let (status, body) = get_json(replica_port, "/api/v1/depth?symbol=BTC_USDC");
    assert_eq!((status, body["code"].as_str()), (503, Some("SERVICE_UNAVAILABLE")), "{body}");
    let (status, body) = get_json(replica_port, "/api/v1/depth?symbol=NOPE_USDC");
    assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_CLIENT_REQUEST")), "{body}");
    let (status, body) = get_json(replica_port, "/api/v1/depth");
    assert_eq!(status, 400, "{body}");
    let (status, body) = get_json(replica_port, "/api/v1/depth?symbol=BTC_USDC&limit=0");
    assert_eq!(status, 400, "{body}");
    let (status, body) = get_json(replica_port, "/api/v1/status");
    assert_eq!((status, body["status"].as_str()), (200, Some("Ok")), "{body}");

    // The server trades a bounded demo flow with the Redis sink on.
    let data = dir.join("data");
    let (mut server, server_port) = start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
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
            "--demo-orders",
            "3000",
        ],
        "HTTP listening",
    );
    // While it runs, the replica serves the (conflated) snapshots.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get_json(replica_port, "/api/v1/depth?symbol=BTC_USDC&limit=5");
        if status == 200 && body["asks"].as_array().is_some_and(|a| !a.is_empty()) {
            assert!(body["asks"].as_array().unwrap().len() <= 5 && body["bids"].as_array().unwrap().len() <= 5);
            break;
        }
        assert!(Instant::now() < deadline, "the replica should serve a snapshot: {status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Wait until the demo flow has stopped and the server's books are still.
    let (_, markets) = get_json(server_port, "/api/v1/markets");
    let symbols: Vec<String> =
        markets.as_array().unwrap().iter().map(|m| m["symbol"].as_str().unwrap().to_string()).collect();
    assert!(symbols.len() > 1, "{markets}");
    let books = || -> Vec<Value> {
        let books = symbols.iter().map(|s| get_json(server_port, &format!("/api/v1/depth?symbol={s}&limit=5000")).1);
        books.map(|mut b| b.as_object_mut().map(|o| o.remove("timestamp")).map(|_| b).unwrap()).collect()
    };
    let mut last = books();
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_secs(2) {
        assert!(Instant::now() < deadline + Duration::from_secs(60), "the demo flow should stop");
        std::thread::sleep(Duration::from_millis(200));
        let now = books();
        if now != last {
            still_since = Instant::now();
        }
        last = now;
    }
    assert!(last.iter().any(|b| b["asks"].as_array().is_some_and(|a| !a.is_empty())), "{last:?}");
    let server_books = last;

    // SIGTERM: the sink writes its final snapshot before the server exits.
    let status = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(server.wait().unwrap().success(), "the server should exit cleanly on SIGTERM");

    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let sequence: u64 = redis::cmd("GET").arg(format!("{prefix}sequence")).query(&mut connection).unwrap();
    for (symbol, server_depth) in symbols.iter().zip(&server_books) {
        let (status, replica_depth) = get_json(replica_port, &format!("/api/v1/depth?symbol={symbol}&limit=5000"));
        assert_eq!(status, 200, "{replica_depth}");
        assert_eq!(replica_depth["asks"], server_depth["asks"], "{symbol} asks");
        assert_eq!(replica_depth["bids"], server_depth["bids"], "{symbol} bids");
        assert_eq!(replica_depth["lastUpdateId"], Value::from(sequence.to_string()), "{symbol}: the sink's sequence");
        let server_update: u64 = server_depth["lastUpdateId"].as_str().unwrap().parse().unwrap();
        assert!(sequence >= server_update, "sink sequence {sequence} < {symbol}'s last update {server_update}");
        assert!(replica_depth["timestamp"].as_u64().is_some_and(|t| t > 0), "{replica_depth}");
        // `limit` keeps the best levels: the lowest asks and the highest bids (listed last).
        let (_, top) = get_json(replica_port, &format!("/api/v1/depth?symbol={symbol}&limit=2"));
        let asks = server_depth["asks"].as_array().unwrap();
        let bids = server_depth["bids"].as_array().unwrap();
        assert_eq!(top["asks"].as_array().unwrap()[..], asks[..asks.len().min(2)]);
        assert_eq!(top["bids"].as_array().unwrap()[..], bids[bids.len().saturating_sub(2)..]);
    }
    stop(&mut replica_child);

    // Redis unreachable: 503.
    let (mut unreachable, port) = replica(&config, &["--redis-url", "redis://127.0.0.1:1/"]);
    let (status, body) = get_json(port, "/api/v1/depth?symbol=BTC_USDC");
    assert_eq!((status, body["code"].as_str()), (503, Some("SERVICE_UNAVAILABLE")), "{body}");
    stop(&mut unreachable);

    let _: () = redis::cmd("EVAL")
        .arg("for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end")
        .arg(0)
        .arg(format!("{prefix}*"))
        .query(&mut connection)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
