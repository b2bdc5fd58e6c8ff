//! Snapshots are taken by the snapshotter thread from its shadow engine, never by the engine
//! thread, and they are exactly the live engine's state:
//! - every snapshot written during a run restores to the state hash of a fresh engine that
//!   replays the journal up to the snapshot's sequence, and the final one equals the live
//!   engine's (checked by `Runtime::shutdown`, which fails on a difference);
//! - when the bounded snapshot feed is full, the engine thread drops its offers instead of
//!   waiting, and the shadow reads the missing commands from the journal: snapshots stay exact;
//! - while the snapshotter is stuck in the middle of a snapshot (its file is a FIFO nobody reads
//!   yet), the engine thread keeps executing and publishing every command; the shadow then
//!   catches up and the final snapshot matches;
//! - recovery, which replays without building events, reaches the state a replay with events
//!   reaches, serialised byte for byte.

use codec::Command;
use engine::journal::JournalReader;
use engine::snapshot::list_snapshots;
use engine::{CommandContext, Engine, EngineConfig, OrderBook};
use exchange::config::{Config, DurabilitySetting};
use exchange::demo::DemoFlow;
use exchange::egress::ReadError;
use exchange::runtime::{IngressCommand, Runtime, recover};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Commands each run feeds.
const COMMANDS: u64 = 3_000;
/// Book capacity of the tests' engines (the demo flow rests far fewer orders).
const ORDERS_PER_MARKET_MAX: usize = 8_192;
/// How long a test waits for progress before it fails.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);

fn setup(name: &str, every_commands: u64, feed_commands: usize) -> (PathBuf, Config, EngineConfig) {
    let dir = std::env::temp_dir().join(format!("exchange-snapshots-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::load(None).unwrap();
    config.data_dir = dir.clone();
    config.journal.durability = DurabilitySetting::None;
    config.snapshot.every_commands = every_commands;
    config.snapshot.every_seconds = 0;
    config.snapshot.prune_journal = false;
    config.snapshot.feed_commands = feed_commands;
    // Small books: every check below builds fresh engines, whose books are allocated up front.
    config.engine.orders_per_market_max = ORDERS_PER_MARKET_MAX;
    let engine_config = config.engine_config().unwrap();
    (dir, config, engine_config)
}

fn push(runtime: &Runtime, origin: u64, command: Command) {
    let mut item = IngressCommand::new(origin, command);
    while let Err(returned) = runtime.ring.push(item) {
        item = returned;
        std::thread::yield_now();
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The state hash of a fresh engine after the journal's commands up to `sequence`.
fn replayed_hash(config: &Config, engine_config: &EngineConfig, sequence: u64) -> u64 {
    let mut engine = Engine::new(engine_config).unwrap();
    let mut events = Vec::new();
    let visited = JournalReader::open(&config.journal_dir())
        .unwrap()
        .for_each_after(0, |record| {
            let (command, _) = Command::decode(record.payload).unwrap();
            events.clear();
            engine.execute(CommandContext::new(record.sequence, record.timestamp_ns), &command, &mut events);
            Ok::<_, engine::journal::JournalError>(if record.sequence == sequence {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })
        .unwrap();
    assert_eq!(visited.last_sequence, sequence);
    engine.state_hash()
}

/// A fresh engine after the journal's commands up to `sequence`, with events built (as the live
/// engine runs).
fn replayed_with_events(config: &Config, engine_config: &EngineConfig, sequence: u64) -> Engine {
    let mut engine = Engine::new(engine_config).unwrap();
    let mut events = Vec::new();
    let visited = JournalReader::open(&config.journal_dir())
        .unwrap()
        .for_each_after(0, |record| {
            let (command, gateway) = codec::decode_journaled(record.payload).unwrap();
            events.clear();
            let context = CommandContext::new(record.sequence, record.timestamp_ns).with_gateway(gateway);
            engine.execute(context, &command, &mut events);
            Ok::<_, engine::journal::JournalError>(if record.sequence == sequence {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })
        .unwrap();
    assert_eq!(visited.last_sequence, sequence);
    engine
}

/// Every snapshot in the directory restores to the replayed state at its sequence; returns
/// their sequences, oldest first.
fn check_snapshots(config: &Config, engine_config: &EngineConfig) -> Vec<u64> {
    let mut sequences = Vec::new();
    for (sequence, path) in list_snapshots(&config.snapshot_dir()).unwrap() {
        let bytes = std::fs::read(&path).unwrap();
        let (restored, at) = Engine::restore_snapshot(engine_config, OrderBook::with_capacity, &bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(at, sequence);
        assert_eq!(
            restored.state_hash(),
            replayed_hash(config, engine_config, sequence),
            "snapshot at {sequence} differs from the journal replayed to it"
        );
        sequences.push(sequence);
    }
    sequences.reverse();
    sequences
}

/// Starts a runtime on the directory, feeds the demo flow's commands `from..to` (the journal
/// holds the first `from`), shuts down; checks the shadow's progress and every snapshot. Returns
/// the snapshots' sequences and the feed's overflows.
fn run_and_check(config: &Config, engine_config: &EngineConfig, from: u64, to: u64) -> (Vec<u64>, u64) {
    let (recovered, writer) = recover(config, engine_config, false, true).unwrap();
    assert_eq!(recovered.last_sequence, from);
    let runtime = Runtime::start(config, recovered, writer.unwrap()).unwrap();
    for command in DemoFlow::new(engine_config).take(to as usize).skip(from as usize) {
        push(&runtime, 0, command);
    }
    wait_for("every command executed", || runtime.stats.last_sequence.load(Ordering::Acquire) == to);
    let stats = runtime.stats.clone();
    runtime.shutdown().expect("the shadow's final state equals the live engine's");
    let overflows = stats.snapshot_feed_overflows.load(Ordering::Relaxed);
    assert_eq!(stats.shadow_sequence.load(Ordering::Relaxed), to);
    assert_eq!(stats.snapshot_sequence.load(Ordering::Relaxed), to, "a final snapshot at the last sequence");
    let sequences = check_snapshots(config, engine_config);
    assert_eq!(sequences.last(), Some(&to));
    let (recovered, _) = recover(config, engine_config, true, false).unwrap();
    assert_eq!(stats.state_hash.load(Ordering::Relaxed), recovered.engine.state_hash());
    (sequences, overflows)
}

#[test]
fn every_snapshot_equals_the_journal_replayed_to_its_sequence() {
    const EVERY: u64 = 250;
    let (dir, config, engine_config) = setup("exact", EVERY, 1 << 16);
    let (sequences, _) = run_and_check(&config, &engine_config, 0, COMMANDS);
    // Snapshots by count: the shadow applies the feed in order, so at exactly every 250.
    let expected: Vec<u64> = (1..=COMMANDS / EVERY).map(|n| n * EVERY).collect();
    assert_eq!(sequences, expected);
    // After a restart the shadow starts from the recovered state, not from scratch.
    let (sequences, _) = run_and_check(&config, &engine_config, COMMANDS, COMMANDS + 1_010);
    let expected: Vec<u64> = (1..=(COMMANDS + 1_010) / EVERY).map(|n| n * EVERY).chain([COMMANDS + 1_010]).collect();
    assert_eq!(sequences, expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Recovery replays without building events ([`Engine::execute_without_events`]); the same
/// journal replayed with events reaches the same state, serialised byte for byte.
#[test]
fn a_replay_without_events_serialises_to_the_same_bytes_as_one_with_events() {
    let (dir, config, engine_config) = setup("silent", 0, 1 << 16);
    run_and_check(&config, &engine_config, 0, COMMANDS);
    let (recovered, _) = recover(&config, &engine_config, true, false).unwrap();
    assert_eq!(recovered.last_sequence, COMMANDS);
    let with_events = replayed_with_events(&config, &engine_config, COMMANDS);
    let (mut silent_bytes, mut bytes) = (Vec::new(), Vec::new());
    let silent_hash = recovered.engine.write_snapshot(COMMANDS, &mut silent_bytes);
    let hash = with_events.write_snapshot(COMMANDS, &mut bytes);
    assert_eq!(silent_hash, hash, "state hash without events");
    assert!(silent_bytes == bytes, "a replay without events serialises to other bytes");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_feed_is_caught_up_from_the_journal() {
    let (dir, config, engine_config) = setup("overflow", 100, 2);
    let (sequences, overflows) = run_and_check(&config, &engine_config, 0, COMMANDS);
    assert!(overflows > 0, "a 2-command feed must overflow under {COMMANDS} queued commands");
    assert!(sequences.len() >= 2, "snapshots were taken: {sequences:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_engine_thread_keeps_going_while_a_snapshot_is_stuck() {
    const FIRST_SNAPSHOT: u64 = 100;
    let (dir, config, engine_config) = setup("stuck", FIRST_SNAPSHOT, 16);
    // The first snapshot's temporary file is a FIFO: opening it for writing blocks until the
    // test reads it, so the snapshotter is stuck inside that snapshot.
    std::fs::create_dir_all(config.snapshot_dir()).unwrap();
    let fifo = config.snapshot_dir().join(format!("snapshot-{FIRST_SNAPSHOT:020}.snap.tmp"));
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success(), "mkfifo");
    let (recovered, writer) = recover(&config, &engine_config, false, true).unwrap();
    let runtime = Runtime::start(&config, recovered, writer.unwrap()).unwrap();
    let mut consumer = runtime.egress.subscribe();
    let commands: Vec<Command> = DemoFlow::new(&engine_config).take(COMMANDS as usize).collect();
    for (index, command) in commands.iter().take(FIRST_SNAPSHOT as usize).enumerate() {
        push(&runtime, index as u64 + 1, *command);
    }
    wait_for("the snapshotter to reach the first snapshot", || {
        runtime.stats.shadow_sequence.load(Ordering::Acquire) == FIRST_SNAPSHOT
    });
    // Stuck in the snapshot: the rest of the flow is executed and published all the same.
    for (index, command) in commands.iter().enumerate().skip(FIRST_SNAPSHOT as usize) {
        push(&runtime, index as u64 + 1, *command);
    }
    let mut last_origin = 0;
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    while last_origin < COMMANDS {
        match consumer.try_next() {
            Ok(published) => last_origin = last_origin.max(published.origin),
            Err(ReadError::Empty) => {
                assert!(Instant::now() < deadline, "engine thread stalled at origin {last_origin}");
                std::thread::yield_now();
            }
            Err(lagged) => panic!("consumer lagged: {lagged}"),
        }
    }
    // The engine thread stores its batch's statistics after publishing the batch's events.
    wait_for("the engine thread's batch statistics", || {
        runtime.stats.last_sequence.load(Ordering::Acquire) == COMMANDS
    });
    assert_eq!(runtime.stats.shadow_sequence.load(Ordering::Acquire), FIRST_SNAPSHOT, "the shadow is still stuck");
    assert_eq!(runtime.stats.snapshots.load(Ordering::Acquire), 0);
    assert!(runtime.stats.snapshot_feed_overflows.load(Ordering::Acquire) > 0, "a 16-command feed overflowed");
    // Unstick it (the FIFO cannot be fsynced, so that one snapshot fails; later ones work).
    let mut reader = std::fs::File::open(&fifo).unwrap();
    std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
    wait_for("the shadow to catch up", || runtime.stats.shadow_sequence.load(Ordering::Acquire) == COMMANDS);
    let stats = runtime.stats.clone();
    runtime.shutdown().expect("the shadow's final state equals the live engine's");
    assert_eq!(stats.snapshot_sequence.load(Ordering::Relaxed), COMMANDS);
    let sequences = check_snapshots(&config, &engine_config);
    assert_eq!(sequences.last(), Some(&COMMANDS));
    std::fs::remove_dir_all(&dir).unwrap();
}
