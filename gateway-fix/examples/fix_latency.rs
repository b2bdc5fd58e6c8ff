//! Order → ExecutionReport round trip over loopback, open loop, next to a raw TCP ping-pong (the
//! floor) measured in the same run with the same message size and schedule.
//!
//! ```text
//! cargo run --release -p gateway-fix --example fix_latency -- [orders per second] [seconds] [store parent dir]
//! ```
//!
//! An engine loop (no journal) and the FIX gateway run in-process; one session sends
//! NewOrderSingle (IOC limit buys far below the market: each is accepted, then expires) at a
//! fixed rate. The latency of order `i` is measured from its *scheduled* send time (so a stalled
//! sender does not hide queueing) to the ExecutionReport New. The session store goes under the
//! given directory (default: the system's temporary directory): each batch of reports is fsynced
//! before it is sent, so the disk's fsync latency is part of the figure (use `/dev/shm` to
//! measure the gateway without it).

use base64::Engine as _;
use codec::UserId;
use ed25519_dalek::Signer;
use engine::bus::{BroadcastRing, IngressCommand, IngressRing};
use engine::testkit::commands;
use engine::{CommandContext, Engine, EngineConfig};
use gateway_fix::encoder::{checksum, time};
use gateway_fix::parser::{Parsed, parse};
use gateway_fix::{FixGateway, GatewayConfig, SessionConfig, logon_payload};
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn frame(fields: &[(u32, String)]) -> Vec<u8> {
    let body: String = fields.iter().map(|(tag, value)| format!("{tag}={value}\x01")).collect();
    let mut message = format!("8=FIX.4.4\x019={}\x01{body}", body.len()).into_bytes();
    let sum = checksum(&message);
    message.extend_from_slice(format!("10={sum:03}\x01").as_bytes());
    message
}

fn now() -> String {
    String::from_utf8_lossy(&time::format(time::now_ms())).into_owned()
}

fn header(msg_type: &str, seq: u64) -> Vec<(u32, String)> {
    vec![(35, msg_type.into()), (49, "BENCH".into()), (56, "EXCH".into()), (34, seq.to_string()), (52, now())]
}

fn new_order(seq: u64) -> Vec<u8> {
    let mut fields = header("D", seq);
    fields.extend([
        (11, format!("{seq:012}")),
        (55, "BTC_USDC".into()),
        (54, "1".into()),
        (60, now()),
        (38, "0.00001".into()),
        (40, "2".into()),
        (44, "0.1".into()),
        (59, "3".into()),
    ]);
    frame(&fields)
}

fn print(name: &str, histogram: &Histogram<u64>) {
    println!(
        "{name:>10}: n={} p50={}µs p90={}µs p99={}µs p99.9={}µs max={}µs",
        histogram.len(),
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.9),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max()
    );
}

/// Sends `count` messages made by `make(i)` on the schedule `start + i / rate`.
fn pace(stream: &mut TcpStream, count: u64, interval: Duration, start: Instant, make: impl Fn(u64) -> Vec<u8>) {
    for i in 0..count {
        let message = make(i);
        let due = start + interval * i as u32;
        // Sleep while far from the due time, yield when close: on a small machine a spinning
        // sender would starve the gateway's threads.
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            if due - now > Duration::from_micros(200) {
                std::thread::sleep(due - now - Duration::from_micros(100));
            } else {
                std::thread::yield_now();
            }
        }
        stream.write_all(&message).unwrap();
    }
}

fn baseline(count: u64, interval: Duration, size: usize) -> Histogram<u64> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_nodelay(true).unwrap();
        let mut buffer = [0u8; 65536];
        while let Ok(read) = stream.read(&mut buffer) {
            if read == 0 || stream.write_all(&buffer[..read]).is_err() {
                return;
            }
        }
    });
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let start = Instant::now() + Duration::from_millis(50);
    let receiver = std::thread::spawn(move || {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut buffer = vec![0u8; size];
        for i in 0..count {
            reader.read_exact(&mut buffer).unwrap();
            let due = start + interval * i as u32;
            histogram.saturating_record(Instant::now().saturating_duration_since(due).as_micros() as u64);
        }
        histogram
    });
    pace(&mut stream, count, interval, start, |_| vec![b'x'; size]);
    receiver.join().unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rate: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let count = rate * seconds;
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));

    // Engine loop.
    let config = EngineConfig::sample();
    let mut engine = Engine::new(&config).unwrap();
    let mut events = Vec::new();
    engine.execute(CommandContext::new(1, 0), &commands::deposit(1, 1, 1_000_000_000_000), &mut events);
    let ingress = Arc::new(IngressRing::new(65_536));
    let egress = BroadcastRing::new(1 << 16);
    let stop = Arc::new(AtomicBool::new(false));
    let engine_thread = {
        let (ingress, egress, stop) = (ingress.clone(), egress.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut sequence = 1;
            let mut events = Vec::new();
            let mut idle = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let Some(IngressCommand { origin, command, .. }) = ingress.pop() else {
                    idle = idle.saturating_add(1);
                    if idle < 128 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    continue;
                };
                idle = 0;
                sequence += 1;
                events.clear();
                engine.execute(CommandContext::new(sequence, sequence), &command, &mut events);
                egress.publish_command(origin, &events);
            }
        })
    };

    // Gateway.
    let secret = [7u8; 32];
    let key = ed25519_dalek::SigningKey::from_bytes(&secret);
    let parent = args.get(3).map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let store_dir = parent.join(format!("fix-latency-{}", std::process::id()));
    let gateway_config = GatewayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store_dir: store_dir.clone(),
        messages_per_second: 10_000_000,
        burst: 1_000_000,
        ..GatewayConfig::default()
    };
    let session = SessionConfig {
        sender_comp_id: "BENCH".into(),
        target_comp_id: "EXCH".into(),
        user_id: UserId::new(1),
        public_key: key.verifying_key().to_bytes(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let gateway = runtime
        .block_on(FixGateway::start(gateway_config, vec![session], &config, ingress, &egress))
        .expect("gateway starts");

    // Logon.
    let mut stream = TcpStream::connect(gateway.local_addr()).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut fields = header("A", 1);
    let payload = logon_payload(fields[4].1.as_bytes(), b"1", b"BENCH", b"EXCH");
    let b64 = base64::engine::general_purpose::STANDARD;
    fields.extend([
        (98, "0".into()),
        (108, "30".into()),
        (141, "Y".into()),
        (553, b64.encode(key.verifying_key().to_bytes())),
        (554, b64.encode(key.sign(&payload).to_bytes())),
    ]);
    stream.write_all(&frame(&fields)).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let start = Instant::now() + Duration::from_millis(200);
    let receiver = std::thread::spawn(move || {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut buffer = Vec::with_capacity(1 << 20);
        let mut chunk = vec![0u8; 1 << 16];
        while histogram.len() < count {
            let read = reader.read(&mut chunk).unwrap();
            assert!(read > 0, "the gateway closed the connection");
            buffer.extend_from_slice(&chunk[..read]);
            let mut used_total = 0;
            loop {
                match parse(&buffer[used_total..]) {
                    Parsed::Complete(message, used) => {
                        if message.msg_type() == b"8" && message.get(150) == Some(b"0") {
                            let id: u64 = std::str::from_utf8(message.get(11).unwrap()).unwrap().parse().unwrap();
                            let due = start + interval * (id - 2) as u32;
                            histogram
                                .saturating_record(Instant::now().saturating_duration_since(due).as_micros() as u64);
                        }
                        used_total += used;
                    }
                    Parsed::Garbled(skip) => used_total += skip,
                    Parsed::Incomplete => break,
                }
            }
            buffer.drain(..used_total);
        }
        histogram
    });
    let size = new_order(2).len();
    pace(&mut stream, count, interval, start, |i| new_order(i + 2));
    let fix = receiver.join().unwrap();
    let floor = baseline(count, interval, size);

    println!("{count} orders at {rate}/s, {size}-byte NewOrderSingle");
    print("fix", &fix);
    print("tcp floor", &floor);
    for quantile in [0.5, 0.99, 0.999] {
        let ratio = fix.value_at_quantile(quantile) as f64 / floor.value_at_quantile(quantile).max(1) as f64;
        println!("ratio at p{}: {ratio:.1}×", quantile * 100.0);
    }
    gateway.shutdown();
    stop.store(true, Ordering::Relaxed);
    let _ = engine_thread.join();
    let _ = std::fs::remove_dir_all(store_dir);
}
