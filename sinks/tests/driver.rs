//! The driver without any service: a sink that keeps commands in memory and fails on purpose
//! (before or after "committing", like a lost connection), fed through a ring far too small to
//! keep up, started late, restarted, must end up holding every command exactly once, with the
//! same events the engine published live. Also: journal replay regenerates the live events.

use codec::*;
use engine::bus::BroadcastRing;
use engine::journal::{Durability, JournalConfig, JournalWriter};
use engine::testkit::commands::*;
use engine::{CommandContext, Engine, EngineConfig};
use sinks::{CommandEvents, Driver, DriverConfig, History, Resume, Sink, SinkError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn config() -> EngineConfig {
    let mut config = EngineConfig::sample();
    config.limits.orders_per_market_max = 4_096;
    config
}

fn stream(count: u64) -> Vec<Command> {
    let mut commands: Vec<Command> = (1..=4).flat_map(|u| [deposit(u, 0, 1 << 40), deposit(u, 1, 1 << 50)]).collect();
    for i in 0..count {
        let side = if i % 2 == 0 { Side::Bid } else { Side::Ask };
        commands.push(limit(1 + i % 4, 1, side, 995 + (i * 7) % 11, 1 + i % 13, TimeInForce::Gtc, 0));
    }
    commands
}

/// What the fake service durably holds.
#[derive(Default)]
struct Store {
    commands: Vec<CommandEvents>,
}

struct FlakySink {
    store: Arc<Mutex<Store>>,
    writes: u64,
}

impl Sink for FlakySink {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn open(&mut self) -> Result<Resume, SinkError> {
        let store = self.store.lock().unwrap();
        Ok(Resume::After(store.commands.last().map_or(0, |c| c.sequence)))
    }

    fn write(&mut self, commands: &[CommandEvents]) -> Result<(), SinkError> {
        self.writes += 1;
        // Every 7th write fails before committing, every 11th after (the commit happened but the
        // acknowledgement was lost): both must neither lose nor duplicate.
        if self.writes % 7 == 0 {
            return Err(SinkError::Service("connection reset before commit".into()));
        }
        let mut store = self.store.lock().unwrap();
        let last = store.commands.last().map_or(0, |c| c.sequence);
        assert_eq!(commands[0].sequence, last + 1, "the driver resumes right after the durable cursor");
        store.commands.extend_from_slice(commands);
        if self.writes % 11 == 0 {
            return Err(SinkError::Service("connection reset after commit".into()));
        }
        Ok(())
    }
}

#[test]
fn every_command_exactly_once_through_failures_lag_and_restarts() {
    let dir = std::env::temp_dir().join(format!("sinks-driver-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let journal_config = JournalConfig { durability: Durability::None, segment_bytes_max: 16 << 10 };
    let (mut journal, _) = JournalWriter::open(&dir.join("journal"), journal_config, 0).unwrap();
    let config = config();
    let mut engine = Engine::new(&config).unwrap();
    let ring = BroadcastRing::new(64);
    let durable = Arc::new(AtomicU64::new(0));
    let history = History {
        engine_config: config.clone(),
        journal_dir: dir.join("journal"),
        snapshot_dir: dir.join("snapshots"),
    };
    let store = Arc::new(Mutex::new(Store::default()));
    let mut log = Vec::new();
    let mut run = |commands: &[Command], engine: &mut Engine, snapshot: bool| {
        let mut bytes = [0u8; Command::ENCODED_BYTES_MAX];
        for chunk in commands.chunks(8) {
            let sequences: Vec<u64> = chunk
                .iter()
                .map(|c| {
                    let n = c.encode(&mut bytes).unwrap();
                    journal.append(7, &bytes[..n]).unwrap()
                })
                .collect();
            journal.commit().unwrap();
            for (command, sequence) in chunk.iter().zip(sequences) {
                let mut events = Vec::new();
                engine.execute(CommandContext::new(sequence, 7), command, &mut events);
                ring.publish_command(0, &events);
                log.push(CommandEvents { sequence, events });
                durable.store(sequence, Ordering::Release);
            }
        }
        if snapshot {
            let mut bytes = Vec::new();
            let at = durable.load(Ordering::Acquire);
            engine.write_snapshot(at, &mut bytes);
            engine::snapshot::write_snapshot_file(&dir.join("snapshots"), at, &bytes).unwrap();
        }
    };
    let start = |store: &Arc<Mutex<Store>>| {
        let sink = Box::new(FlakySink { store: store.clone(), writes: 0 });
        let config =
            DriverConfig { batch_commands: 50, linger: Duration::from_millis(1), retry: Duration::from_millis(5) };
        let durable = durable.clone();
        let floor = Arc::new(AtomicU64::new(0));
        Driver::start(sink, config, history.clone(), ring.clone(), move || durable.load(Ordering::Acquire), floor)
            .unwrap()
    };
    let commands = stream(3_000);
    run(&commands[..1_000], &mut engine, true);
    let driver = start(&store);
    run(&commands[1_000..2_000], &mut engine, true);
    std::thread::sleep(Duration::from_millis(50));
    driver.abort();
    run(&commands[2_000..], &mut engine, false);
    let driver = start(&store);
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = durable.load(Ordering::Acquire);
    while driver.stats().cursor.load(Ordering::Acquire) < last {
        assert!(Instant::now() < deadline, "stuck at {}", driver.stats().cursor.load(Ordering::Acquire));
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = driver.stats();
    assert!(stats.connected.load(Ordering::Acquire), "caught up: the session is open and healthy");
    driver.shutdown(Duration::from_secs(5));
    assert!(!stats.connected.load(Ordering::Acquire), "stopped: no session");
    assert!(stats.failures.load(Ordering::Relaxed) > 0, "failures were injected");
    let writes = stats.write_latency.count();
    assert!(writes > 0 && stats.write_latency.sum_ns() > 0, "every write call is timed");
    assert_eq!(stats.write_latency.bucket_counts().iter().sum::<u64>(), writes);
    assert!(stats.replayed.load(Ordering::Relaxed) > 0, "the journal filled gaps");
    let store = store.lock().unwrap();
    assert_eq!(store.commands.len(), log.len(), "every command once");
    assert!(store.commands == log, "the same events as published live, in order");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn journal_replay_regenerates_the_live_events() {
    let dir = std::env::temp_dir().join(format!("sinks-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let journal_config = JournalConfig { durability: Durability::None, segment_bytes_max: 8 << 10 };
    let (mut journal, _) = JournalWriter::open(&dir.join("journal"), journal_config, 0).unwrap();
    let config = config();
    let mut engine = Engine::new(&config).unwrap();
    let mut log = Vec::new();
    let mut bytes = [0u8; Command::ENCODED_BYTES_MAX];
    for (i, command) in stream(600).iter().enumerate() {
        let n = command.encode(&mut bytes).unwrap();
        let sequence = journal.append(i as u64, &bytes[..n]).unwrap();
        journal.commit().unwrap();
        let mut events = Vec::new();
        engine.execute(CommandContext::new(sequence, i as u64), command, &mut events);
        log.push(CommandEvents { sequence, events });
        if sequence == 300 {
            let mut snapshot = Vec::new();
            engine.write_snapshot(300, &mut snapshot);
            engine::snapshot::write_snapshot_file(&dir.join("snapshots"), 300, &snapshot).unwrap();
        }
    }
    let history = History {
        engine_config: config.clone(),
        journal_dir: dir.join("journal"),
        snapshot_dir: dir.join("snapshots"),
    };
    // From scratch (no snapshot at or before 100) and from the snapshot at 300.
    for after in [100, 450] {
        let mut replayed = Vec::new();
        let last = sinks::replay(&history, after, 608, &mut |c| {
            replayed.push(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(last, 608);
        assert!(replayed == log[after as usize..], "replay after {after} equals the live events");
    }
    assert_eq!(sinks::engine_at(&history, 608).unwrap().state_hash(), engine.state_hash());
    // Past the end of the journal: a clear error, not silence.
    let error = sinks::replay(&history, 600, 700, &mut |_| Ok(())).unwrap_err();
    assert!(error.to_string().contains("ends at 608"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Catch-up streams a journal of many segments: every window `(after, up_to]`, whatever segment
/// boundaries it crosses, regenerates the live events; the walk stops at `up_to` (damage further
/// on goes unread); a pruned start and damage inside the window are clear errors.
#[test]
fn catch_up_streams_a_multi_segment_journal() {
    let dir = std::env::temp_dir().join(format!("sinks-segments-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let journal_config = JournalConfig { durability: Durability::None, segment_bytes_max: 2 << 10 };
    let (mut journal, _) = JournalWriter::open(&dir.join("journal"), journal_config, 0).unwrap();
    let config = config();
    let mut engine = Engine::new(&config).unwrap();
    let mut log = Vec::new();
    let mut bytes = [0u8; Command::ENCODED_BYTES_MAX];
    for (i, command) in stream(400).iter().enumerate() {
        let n = command.encode(&mut bytes).unwrap();
        let sequence = journal.append(i as u64, &bytes[..n]).unwrap();
        if i % 5 == 4 {
            journal.commit().unwrap();
        }
        let mut events = Vec::new();
        engine.execute(CommandContext::new(sequence, i as u64), command, &mut events);
        log.push(CommandEvents { sequence, events });
    }
    journal.commit().unwrap();
    drop(journal);
    let last = log.len() as u64;
    let history = History {
        engine_config: config.clone(),
        journal_dir: dir.join("journal"),
        snapshot_dir: dir.join("snapshots"),
    };
    let segments = engine::journal::list_segments(&history.journal_dir).unwrap();
    assert!(segments.len() >= 10, "the journal spans many segments ({})", segments.len());
    let replay = |after: u64, up_to: u64| {
        let mut replayed = Vec::new();
        sinks::replay(&history, after, up_to, &mut |c| {
            replayed.push(c);
            Ok(())
        })
        .map(|end| (end, replayed))
    };
    // Windows starting and ending on, just before and just after segment boundaries.
    let mut edges: Vec<u64> = segments.iter().flat_map(|(first, _)| [first - 1, *first, first + 1]).collect();
    edges.extend([0, last - 1, last]);
    edges.retain(|s| *s <= last);
    edges.sort_unstable();
    edges.dedup();
    for (i, &after) in edges.iter().enumerate() {
        for &up_to in edges[i..].iter().step_by(3) {
            let (end, replayed) = replay(after, up_to).unwrap();
            assert_eq!(end, up_to.max(after), "({after}, {up_to}]");
            assert!(replayed == log[after as usize..up_to as usize], "({after}, {up_to}] equals the live events");
        }
    }
    // Damage in a later segment: a catch-up ending before it does not read it.
    let damaged = &segments[segments.len() - 3];
    let mut segment = std::fs::read(&damaged.1).unwrap();
    segment[engine::journal::SEGMENT_HEADER_BYTES + engine::journal::RECORD_HEADER_BYTES + 1] ^= 0x01;
    std::fs::write(&damaged.1, &segment).unwrap();
    let (end, replayed) = replay(10, damaged.0 - 1).unwrap();
    assert_eq!(end, damaged.0 - 1);
    assert!(replayed == log[10..damaged.0 as usize - 1]);
    // A window reaching into it is refused, naming the damage.
    let error = replay(10, damaged.0 + 1).unwrap_err();
    assert!(error.to_string().contains("checksum"), "{error}");
    // Pruned below the cursor: the gap is named, not skipped.
    std::fs::remove_file(&segments[0].1).unwrap();
    let error = replay(5, 20).unwrap_err();
    assert!(error.to_string().contains("pruned?"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}
