//! The session store honours the durability setting: under `Fsync` one `fsync` per batch
//! (group commit: a burst of reports shares few batches), under `None` every batch is written
//! but never synced, and in both the numbers and the resend window survive a restart. A store
//! written without `fsync` under another boot (a power loss may have dropped its tail) makes the
//! session require a sequence reset rather than reuse numbers.

mod common;

use common::{Fix, Harness};
use gateway_fix::store::Durability;

/// Orders sent back to back, without waiting for their reports.
const BURST: usize = 200;

/// A gateway (one session) with `durability` and a rate limit the burst stays under.
fn start(durability: Durability) -> Harness {
    Harness::start(1, |config| {
        config.durability = durability;
        config.burst = 10 * BURST as u32;
    })
}

/// Sends [`BURST`] resting orders at once, then reads their reports; returns the MsgSeqNum of
/// the last one.
fn burst(fix: &mut Fix) -> u64 {
    for n in 0..BURST {
        // Far below the market: they rest and nothing trades.
        fix.limit(&format!("B{n}"), "1", "1000", "0.0001");
    }
    let mut last = 0;
    for n in 0..BURST {
        let report = fix.expect("8");
        assert_eq!((report.at(150), report.at(11)), ("0", format!("B{n}").as_str()), "{report:?}");
        assert!(report.seq() > last, "numbers go up: {report:?}");
        last = report.seq();
    }
    last
}

/// Restarts the gateway and logs on again without a reset: the numbers continue where they
/// stopped, and a ResendRequest gets the stored reports back.
fn numbers_and_window_survive_a_restart(harness: &mut Harness, fix: Fix, last_received: u64) {
    let next_seq = fix.next_seq;
    drop(fix);
    harness.restart_gateway();
    let mut fix = Fix::connect(harness.address, 1);
    fix.next_seq = next_seq;
    let logon = fix.logon(30, false);
    assert_eq!((logon.msg_type(), logon.seq()), ("A", last_received + 1), "no number is used twice: {logon:?}");
    let from = last_received - 2;
    fix.send("2", &[(7, &from.to_string()), (16, &last_received.to_string())]);
    for sequence in from..=last_received {
        let resent = fix.expect("8");
        assert_eq!((resent.seq(), resent.at(43)), (sequence, "Y"), "{resent:?}");
    }
}

#[test]
fn under_durability_fsync_every_batch_is_synced_once_and_bursts_share_batches() {
    let mut harness = start(Durability::Fsync);
    let mut fix = harness.client(1);
    let last = burst(&mut fix);
    let batches = harness.stat(|s| &s.store_batches);
    let rewrites = harness.stat(|s| &s.store_rewrites);
    let syncs = harness.stat(|s| &s.store_syncs);
    // The logon's sequence reset rewrote the log (3 syncs: file, directory, inbound.seq), and so
    // may compactions (a round whose log grew past its bound writes a rewrite, not a batch).
    assert!(rewrites >= 1, "{rewrites}");
    assert_eq!(syncs, batches + 3 * rewrites, "one fsync per batch ({batches} batches, {rewrites} rewrites)");
    // Group commit: the reports written while a batch was being synced share the next one.
    assert!(batches + rewrites < BURST as u64, "{batches} batches and {rewrites} rewrites for {BURST} reports");
    numbers_and_window_survive_a_restart(&mut harness, fix, last);
}

#[test]
fn under_durability_none_every_batch_is_written_and_nothing_is_synced() {
    let mut harness = start(Durability::None);
    let mut fix = harness.client(1);
    let last = burst(&mut fix);
    assert!(harness.stat(|s| &s.store_rewrites) >= 1, "the logon's reset rewrote the log");
    assert_eq!(harness.stat(|s| &s.store_syncs), 0, "durability none: no fsync");
    numbers_and_window_survive_a_restart(&mut harness, fix, last);
}

#[test]
fn after_a_reboot_a_store_written_without_fsync_requires_a_sequence_reset() {
    let mut harness = start(Durability::None);
    let mut fix = harness.client(1);
    fix.limit("R1", "1", "1000", "0.0001");
    assert_eq!(fix.expect("8").at(150), "0");
    let next_seq = fix.next_seq;
    drop(fix);
    // As after a power loss: the store was written without fsync under a boot that is gone.
    harness.restart_gateway_after(|store| {
        std::fs::write(store.join("CLIENT1@EXCH").join("unsynced.boot"), "a-boot-before-the-power-loss").unwrap();
    });
    let refused = |harness: &Harness| {
        let mut fix = Fix::connect(harness.address, 1);
        fix.next_seq = next_seq;
        let answer = fix.logon(30, false);
        assert_eq!(answer.msg_type(), "5", "{answer:?}");
        assert!(answer.at(58).contains("ResetSeqNumFlag=Y"), "{answer:?}");
        fix.assert_closed();
    };
    refused(&harness);
    // Still required after another restart (the requirement is kept on disk).
    harness.restart_gateway();
    refused(&harness);
    // A reset is accepted (a Logon must be later than the last one, to the millisecond), and
    // afterwards the numbers resume normally, restart or not.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let mut fix = harness.client(1);
    fix.limit("R2", "1", "1000", "0.0001");
    let report = fix.expect("8");
    assert_eq!((report.at(150), report.seq()), ("0", 2));
    let next_seq = fix.next_seq;
    drop(fix);
    harness.restart_gateway();
    let mut fix = Fix::connect(harness.address, 1);
    fix.next_seq = next_seq;
    let logon = fix.logon(30, false);
    assert_eq!((logon.msg_type(), logon.seq()), ("A", 3), "{logon:?}");
}
