//! The floor: a raw loopback TCP ping-pong with the same message size, rate and schedule as a
//! gateway run.
//!
//! An in-process echo server thread listens on `127.0.0.1:0` and writes back every byte it
//! reads. The client sends fixed-size messages (by default 70 bytes, the size of a framed SBE
//! `NewOrder`) on the same open-loop schedule and pacer as the gateway run, and a receiver
//! thread times each echo from the message's *scheduled* send time. Whatever the gateway adds
//! on top of this (decoding, the ingress ring, the engine, the journal, the egress ring,
//! encoding) is the ratio printed by `loadgen sbe --baseline`.
//!
//! Threads: one sender, one receiver, one echo server (each pinned to the next core of `--pin`
//! when given).

use crate::latency::{Histograms, Sent};
use crate::progress::{Counters, Progress};
use crate::report::Report;
use crate::schedule::{Clock, Pacer, Schedule, pin_current_thread};
use crate::{LoadError, achieved_rate};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Bytes of a framed SBE `NewOrder`: SOFH (6) + message header (8) + block (56).
pub const FRAMED_NEW_ORDER_BYTES: usize =
    codec::frame_length(codec::MESSAGE_HEADER_BYTES + <codec::NewOrder as codec::Message>::BLOCK_LENGTH as usize);

/// Histograms of a baseline run: the round trip (from the scheduled send time), the same
/// measured from the actual send time (a diagnostic), and the sender's lateness.
pub const BASELINE_HISTOGRAMS: &[&str] = &["rtt", "rtt_uncorrected", "send_lag"];
const RTT: usize = 0;
const RTT_UNCORRECTED: usize = 1;
const SEND_LAG: usize = 2;

/// A pause of the echo server, for tests of the latency accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoStall {
    /// The echo server pauses once, after echoing this many messages.
    pub after_messages: u64,
    /// For this long.
    pub pause: Duration,
}

/// Baseline settings.
#[derive(Debug, Clone)]
pub struct BaselineConfig {
    /// Measured messages (warm-up messages come on top).
    pub messages: u64,
    /// Bytes per message (at least 8: the first 8 carry the message's index).
    pub size: usize,
    /// Messages per second.
    pub rate: u64,
    /// Warm-up sent before the measured messages, at the same rate.
    pub warmup: Duration,
    /// How long to wait for the last echoes after the last send.
    pub drain: Duration,
    /// The pacer spins for this long before each due time instead of sleeping.
    pub spin: Duration,
    /// Cores for the sender, receiver and echo threads, in that order (empty: no pinning).
    pub pin: Vec<usize>,
    /// Draw a progress line.
    pub progress: bool,
    /// Fault injection: pause the echo server once (tests).
    pub echo_stall: Option<EchoStall>,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            messages: 20_000,
            size: FRAMED_NEW_ORDER_BYTES,
            rate: 2_000,
            warmup: Duration::from_secs(2),
            drain: Duration::from_secs(5),
            spin: Duration::from_micros(50),
            pin: Vec::new(),
            progress: false,
            echo_stall: None,
        }
    }
}

struct ReceiverResult {
    histograms: Histograms,
    answered: u64,
    first_ns: u64,
    last_ns: u64,
    errors: BTreeMap<String, u64>,
}

fn pin(cores: &[usize], slot: usize) {
    if !cores.is_empty() {
        pin_current_thread(cores[slot % cores.len()]);
    }
}

/// Runs the baseline.
///
/// # Errors
/// Invalid settings, or the loopback connection cannot be set up.
pub fn run(config: &BaselineConfig) -> Result<Report, LoadError> {
    if config.size < 8 {
        return Err(LoadError::new("the baseline message size must be at least 8 bytes"));
    }
    if config.messages == 0 || config.rate == 0 {
        return Err(LoadError::new("the baseline needs at least one message and a positive rate"));
    }
    let schedule = Schedule::new(config.rate, 1);
    let warmup_count = schedule.count_before(config.warmup.as_nanos() as u64);
    let total = warmup_count + config.messages;
    let size = config.size;

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let echo = {
        let (cores, stall) = (config.pin.clone(), config.echo_stall);
        std::thread::Builder::new().name("loadgen-echo".into()).spawn(move || {
            pin(&cores, 2);
            let Ok((mut stream, _)) = listener.accept() else { return };
            let _ = stream.set_nodelay(true);
            let mut buffer = vec![0u8; 64 * 1024];
            let mut echoed = 0u64;
            let mut stalled = stall.is_none();
            loop {
                let read = match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => return,
                    Ok(read) => read,
                };
                echoed += read as u64;
                if let Some(stall) = stall
                    && !stalled
                    && echoed / size as u64 >= stall.after_messages
                {
                    stalled = true;
                    std::thread::sleep(stall.pause);
                }
                if stream.write_all(&buffer[..read]).is_err() {
                    return;
                }
            }
        })?
    };

    let client = TcpStream::connect(address)?;
    client.set_nodelay(true)?;
    let mut reader = client.try_clone()?;
    reader.set_read_timeout(Some(config.drain.max(Duration::from_millis(100))))?;

    let clock = Clock::start();
    let start_ns = clock.now_ns() + 5_000_000;
    let actual_sends: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let counters = Arc::new(Counters::default());
    let sender_done = Arc::new(AtomicBool::new(false));

    let receiver = {
        let (actual_sends, counters, cores) = (actual_sends.clone(), counters.clone(), config.pin.clone());
        let schedule = schedule.clone();
        std::thread::Builder::new().name("loadgen-receive".into()).spawn(move || {
            pin(&cores, 1);
            let mut result = ReceiverResult {
                histograms: Histograms::new(BASELINE_HISTOGRAMS),
                answered: 0,
                first_ns: 0,
                last_ns: 0,
                errors: BTreeMap::new(),
            };
            let mut buffer = vec![0u8; 64 * 1024];
            let mut pending = Vec::with_capacity(2 * size);
            let mut received = 0u64;
            while received < total {
                let read = match reader.read(&mut buffer) {
                    Ok(0) => {
                        *result.errors.entry("echo connection closed".into()).or_default() += 1;
                        break;
                    }
                    Ok(read) => read,
                    Err(error) => {
                        let key =
                            if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                                "no echo within the drain time".to_owned()
                            } else {
                                format!("receive: {error}")
                            };
                        *result.errors.entry(key).or_default() += 1;
                        break;
                    }
                };
                let now = clock.now_ns();
                pending.extend_from_slice(&buffer[..read]);
                let mut offset = 0;
                while pending.len() - offset >= size {
                    let index = u64::from_le_bytes(pending[offset..offset + 8].try_into().expect("8 bytes"));
                    offset += size;
                    received += 1;
                    Counters::bump(&counters.answered);
                    let Some(actual) = actual_sends.get(index as usize) else {
                        *result.errors.entry("echo of an unknown message".into()).or_default() += 1;
                        continue;
                    };
                    if index < warmup_count {
                        continue;
                    }
                    let sent = Sent {
                        scheduled_ns: start_ns + schedule.due_ns(index),
                        actual_ns: actual.load(Ordering::Acquire),
                    };
                    result.histograms.record(RTT, sent.latency_ns(now));
                    if sent.actual_ns != 0 {
                        result.histograms.record(RTT_UNCORRECTED, sent.uncorrected_ns(now));
                        result.histograms.record(SEND_LAG, sent.send_lag_ns());
                    }
                    if result.answered == 0 {
                        result.first_ns = now;
                    }
                    result.answered += 1;
                    result.last_ns = now;
                }
                pending.drain(..offset);
            }
            result
        })?
    };

    let sender = {
        let (actual_sends, counters, cores, done) =
            (actual_sends.clone(), counters.clone(), config.pin.clone(), sender_done.clone());
        let pacer = Pacer::new(config.spin);
        let mut stream = client.try_clone()?;
        let schedule = schedule.clone();
        std::thread::Builder::new().name("loadgen-send".into()).spawn(move || {
            pin(&cores, 0);
            let mut message = vec![0u8; size];
            let mut error = None;
            let (mut first, mut last, mut sent) = (0, 0, 0u64);
            for index in 0..total {
                let actual = pacer.wait_until(&clock, start_ns + schedule.due_ns(index));
                actual_sends[index as usize].store(actual, Ordering::Release);
                message[..8].copy_from_slice(&index.to_le_bytes());
                if let Err(e) = stream.write_all(&message) {
                    error = Some(format!("send: {e}"));
                    break;
                }
                Counters::bump(&counters.sent);
                if index >= warmup_count {
                    if sent == 0 {
                        first = actual;
                    }
                    last = actual;
                    sent += 1;
                }
            }
            done.store(true, Ordering::Release);
            (sent, first, last, error)
        })?
    };

    let total_time = Duration::from_nanos(schedule.due_ns(total));
    let mut progress = Progress::new(config.progress, "baseline", total_time);
    while !sender_done.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
        progress.tick(&counters);
    }
    progress.finish();
    let (sent, first_send, last_send, send_error) = sender.join().map_err(|_| LoadError::new("sender panicked"))?;
    let mut result = receiver.join().map_err(|_| LoadError::new("receiver panicked"))?;
    let _ = client.shutdown(std::net::Shutdown::Both);
    drop(client);
    let _ = echo.join();

    let mut errors = std::mem::take(&mut result.errors);
    if let Some(error) = send_error {
        *errors.entry(error).or_default() += 1;
    }
    let unanswered = sent.saturating_sub(result.answered);
    if unanswered > 0 {
        *errors.entry("unanswered".into()).or_default() += unanswered;
    }
    let settings = BTreeMap::from([
        ("size_bytes".to_owned(), size.to_string()),
        ("messages".to_owned(), config.messages.to_string()),
        ("spin_us".to_owned(), config.spin.as_micros().to_string()),
    ]);
    let histograms: Vec<_> = result.histograms.iter().map(|(name, h)| (name.to_owned(), h.clone())).collect();
    Ok(Report {
        kind: "baseline".into(),
        target: format!("loopback echo {address}"),
        connections: 1,
        settings,
        offered_rate: config.rate as f64,
        achieved_send_rate: achieved_rate(sent, first_send, last_send),
        achieved_response_rate: achieved_rate(result.answered, result.first_ns, result.last_ns),
        warmup_s: config.warmup.as_secs_f64(),
        duration_s: config.messages as f64 / config.rate as f64,
        sent,
        answered: result.answered,
        unanswered,
        latencies: histograms.iter().map(|(name, h)| crate::latency::LatencySummary::of(name, h)).collect(),
        outcomes: BTreeMap::from([("echoed".to_owned(), result.answered)]),
        rejects: BTreeMap::new(),
        errors,
        histograms,
        ramp: Vec::new(),
    })
}
