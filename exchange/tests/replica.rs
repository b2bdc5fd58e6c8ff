//! The read-only market-data replica (`exchange replica`) against a real Redis
//! (`scripts/services`): before any snapshot it answers 503; the real server runs the demo with
//! the Redis sink while a WebSocket client of the replica follows `depth.BTC_USDC` (from a REST
//! snapshot of the replica, gap-free by the usual rule) and `trade.BTC_USDC`; Redis is stopped
//! (depth answers 503 after the 2 s grace) and restarted empty (the sink writes again, depth is
//! back, the streams go on). When the flow has
//! stopped and the server was stopped with SIGTERM (the sink writes a final snapshot): the
//! replica's depth equals the server's last depth level for level, for every market; the
//! client's book (snapshot + diffs) equals it too; the client received every trade of the
//! server, in order, with its price and quantity; depth ids are sink (engine) sequences. With an
//! unreachable Redis the replica answers 503.
//!
//! Needs `EXCHANGE_TEST_REDIS_URL`; skipped loudly without it, failed under
//! `EXCHANGE_REQUIRE_SERVICES=1` (scripts/test).

mod support;

use serde_json::Value;
use sinks::redis_client as redis;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::replica::{Recorder, stop};
use support::{DepthBook, apply_depth};

const BINARY: &str = env!("CARGO_BIN_EXE_exchange");

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

/// GET `path`; the body as text.
fn get_text(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split_once("\r\n\r\n").map_or(String::new(), |(_, body)| body.to_string())
}

fn replica(config: &Path, extra: &[&str]) -> (Child, u16) {
    let mut args = vec!["--config", config.to_str().unwrap(), "--http-port", "0"];
    args.extend_from_slice(extra);
    args.push("replica");
    start(&args, "replica HTTP listening")
}

#[test]
fn replica_serves_market_data_and_streams_from_redis() {
    let Some([redis_url, ctl]) = support::services(["EXCHANGE_TEST_REDIS_URL", "EXCHANGE_SERVICES_CTL"]) else {
        return;
    };
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("exchange-replica-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = format!("replica{id}-");
    let config = dir.join("exchange.toml");
    // Every level and enough trades per write that the replica misses none (see the docs).
    std::fs::write(
        &config,
        format!(
            "{}\n[sinks.redis]\nurl = \"{redis_url}\"\nprefix = \"{prefix}\"\ndepth = 100000\ntrades = 5000\ninterval_ms = 100\n",
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
    let (status, markets) = get_json(replica_port, "/api/v1/markets");
    assert_eq!(status, 200, "{markets}");
    let symbols: Vec<String> =
        markets.as_array().unwrap().iter().map(|m| m["symbol"].as_str().unwrap().to_string()).collect();
    assert!(symbols.len() > 1 && symbols.contains(&"BTC_USDC".to_string()), "{markets}");
    // Trades can be followed from the start (depth only once the view is fresh).
    let trades = Recorder::start(replica_port, &["trade.BTC_USDC"]);

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
            // About 12 s of demo (it keeps its rate closely): it still moves the books after the
            // Redis outage below, however long the sink takes to come back on a loaded machine.
            "--demo-rate",
            "500",
            "--demo-orders",
            "6000",
        ],
        "HTTP listening",
    );
    // While it runs, the replica serves the (conflated) snapshots; a client follows the diffs
    // from one of the replica's snapshots.
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
    let depth = Recorder::start(replica_port, &["depth.BTC_USDC"]);
    let (_, first_snapshot) = get_json(replica_port, "/api/v1/depth?symbol=BTC_USDC&limit=5000");

    // Redis goes away (and comes back empty: no persistence in the test instance). Once the
    // replica has missed it for 2 s depth answers 503; when the sink has written again it answers
    // 200, and the streams go on from the replica's last state (checked gap-free below).
    let control = |action: &str| {
        let status = Command::new(&ctl).args(["redis", action]).status().unwrap();
        assert!(status.success(), "services-ctl redis {action}");
    };
    control("stop");
    let outage = Instant::now();
    loop {
        let (status, body) = get_json(replica_port, "/api/v1/depth?symbol=BTC_USDC");
        if status == 503 {
            assert_eq!(body["code"], "SERVICE_UNAVAILABLE", "{body}");
            assert!(outage.elapsed() >= Duration::from_millis(1_500), "stale only after the grace period");
            break;
        }
        assert!(outage.elapsed() < Duration::from_secs(10), "depth should be unavailable without Redis: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    control("start");
    let back = Instant::now();
    while get_json(replica_port, "/api/v1/depth?symbol=BTC_USDC").0 != 200 {
        assert!(back.elapsed() < Duration::from_secs(30), "depth should come back with Redis");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Wait until the demo flow has stopped and the server's books are still.
    let books = |port: u16| -> Vec<Value> {
        let books = symbols.iter().map(|s| get_json(port, &format!("/api/v1/depth?symbol={s}&limit=5000")).1);
        books.map(|mut b| b.as_object_mut().map(|o| o.remove("timestamp")).map(|_| b).unwrap()).collect()
    };
    let mut last = books(server_port);
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_secs(2) {
        assert!(Instant::now() < deadline + Duration::from_secs(60), "the demo flow should stop");
        std::thread::sleep(Duration::from_millis(200));
        let now = books(server_port);
        if now != last {
            still_since = Instant::now();
        }
        last = now;
    }
    assert!(last.iter().any(|b| b["asks"].as_array().is_some_and(|a| !a.is_empty())), "{last:?}");
    let server_books = last;
    let (_, server_trades) = get_json(server_port, "/api/v1/trades?symbol=BTC_USDC&limit=1000");

    // SIGTERM: the sink writes its final snapshot before the server exits.
    let status = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(server.wait().unwrap().success(), "the server should exit cleanly on SIGTERM");

    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let sequence: u64 = redis::cmd("GET").arg(format!("{prefix}sequence")).query(&mut connection).unwrap();
    // The replica has mirrored the final write when its /health names that sequence.
    let mirrored = Instant::now() + Duration::from_secs(10);
    while get_text(replica_port, "/health") != format!("ok {sequence}\n") {
        assert!(Instant::now() < mirrored, "the replica should mirror sequence {sequence}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300)); // the last frames reach the recorders
    for (symbol, server_depth) in symbols.iter().zip(&server_books) {
        let (status, replica_depth) = get_json(replica_port, &format!("/api/v1/depth?symbol={symbol}&limit=5000"));
        assert_eq!(status, 200, "{replica_depth}");
        assert_eq!(replica_depth["asks"], server_depth["asks"], "{symbol} asks");
        assert_eq!(replica_depth["bids"], server_depth["bids"], "{symbol} bids");
        // Depth ids are sink sequences: the write in which the market last changed.
        let update: u64 = replica_depth["lastUpdateId"].as_str().unwrap().parse().unwrap();
        assert!(update > 0 && update <= sequence, "{symbol}: lastUpdateId {update}, sink sequence {sequence}");
        assert!(replica_depth["timestamp"].as_u64().is_some_and(|t| t > 0), "{replica_depth}");
        // `limit` keeps the best levels: the lowest asks and the highest bids (listed last).
        let (_, top) = get_json(replica_port, &format!("/api/v1/depth?symbol={symbol}&limit=2"));
        let asks = server_depth["asks"].as_array().unwrap();
        let bids = server_depth["bids"].as_array().unwrap();
        assert_eq!(top["asks"].as_array().unwrap()[..], asks[..asks.len().min(2)]);
        assert_eq!(top["bids"].as_array().unwrap()[..], bids[bids.len().saturating_sub(2)..]);
    }

    // The depth stream: the first snapshot plus the diffs after it, gap-free, is the final book.
    let frames = depth.stop();
    let snapshot_id: u64 = first_snapshot["lastUpdateId"].as_str().unwrap().parse().unwrap();
    let mut book: DepthBook = Default::default();
    apply_depth(&mut book, &first_snapshot);
    let mut previous = snapshot_id;
    let mut diffs = 0;
    for frame in &frames {
        assert_eq!(frame["stream"], "depth.BTC_USDC", "{frame}");
        let data = &frame["data"];
        let (first, last) = (data["U"].as_u64().unwrap(), data["u"].as_u64().unwrap());
        assert!(first <= last && last <= sequence, "ids are sink sequences: {data}");
        if last <= snapshot_id {
            continue;
        }
        assert_eq!(first, previous + 1, "gap-free after the snapshot: {data}");
        previous = last;
        apply_depth(&mut book, data);
        diffs += 1;
    }
    let mut expected: DepthBook = Default::default();
    apply_depth(&mut expected, &server_books[symbols.iter().position(|s| s == "BTC_USDC").unwrap()]);
    assert!(diffs > 3, "the demo moves the book ({diffs} diffs)");
    assert_eq!(book, expected, "snapshot {snapshot_id} + {diffs} diffs = the server's last book");

    // The trade stream: every trade of the server, in order, none twice.
    let frames = trades.stop();
    let streamed: Vec<(u64, String, String)> = frames
        .iter()
        .map(|f| {
            assert_eq!(f["stream"], "trade.BTC_USDC", "{f}");
            let data = &f["data"];
            (data["t"].as_u64().unwrap(), data["p"].as_str().unwrap().into(), data["q"].as_str().unwrap().into())
        })
        .collect();
    let expected: Vec<(u64, String, String)> = server_trades
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (t["id"].as_u64().unwrap(), t["price"].as_str().unwrap().into(), t["quantity"].as_str().unwrap().into())
        })
        .collect();
    eprintln!("{} BTC trades, {diffs} depth diffs", expected.len());
    assert!(!expected.is_empty() && expected.len() < 1000, "all of the demo's BTC trades: {}", expected.len());
    assert_eq!(streamed, expected, "the replica streamed every trade, in order");
    let (_, replica_trades) = get_json(replica_port, "/api/v1/trades?symbol=BTC_USDC&limit=1000");
    assert_eq!(replica_trades, server_trades, "REST trades from the replica");
    let metrics = get_text(replica_port, "/metrics");
    assert!(metrics.contains(&format!("exchange_replica_sequence {sequence}\n")), "{metrics}");
    assert!(metrics.contains("exchange_replica_trades_missed_total 0\n"), "{metrics}");
    assert!(metrics.contains("exchange_replica_stale 0\n"), "{metrics}");
    assert!(!metrics.contains("exchange_replica_failures_total 0\n"), "the outage counted: {metrics}");
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
