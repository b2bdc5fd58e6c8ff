//! SBE batching: `Batches` cuts each connection's requests into runs of N consecutive ones,
//! written together when the last is due, without touching the schedule (every request keeps
//! its own due time and is sent exactly once, in order); and a batched run against the
//! in-process SBE gateway sends N orders per write with each order's latency still counted from
//! its own scheduled time (so the early orders of a batch show the batching delay as send lag),
//! while `ack_from_write_due` measures from the batch's scheduled write time.

mod common;

use loadgen::sbe::{SbeConfig, run};
use loadgen::schedule::{Batches, Schedule};
use std::time::Duration;

#[test]
fn batches_hold_n_requests_of_one_connection_with_their_own_due_times() {
    let (rate, connections, total, size) = (1_000, 3, 100, 4);
    let schedule = Schedule::new(rate, connections);
    let batches: Vec<_> = Batches::new(schedule.clone(), connections, total, size).collect();
    let mut seen = Vec::new();
    let mut last_write = 0;
    for batch in &batches {
        // N requests per write, except each connection's last batch.
        let tail = batch.requests.last().unwrap().0 + connections as u64 >= total;
        if !tail {
            assert_eq!(batch.requests.len(), size, "{batch:?}");
        }
        assert!(batch.requests.len() <= size);
        for &(index, due) in &batch.requests {
            assert_eq!(schedule.connection(index), batch.connection, "{batch:?}");
            assert_eq!(due, schedule.due_ns(index), "scheduled times are preserved");
            seen.push(index);
        }
        // Consecutive requests of the connection, written when the last one is due.
        for pair in batch.requests.windows(2) {
            assert_eq!(pair[1].0, pair[0].0 + connections as u64);
        }
        assert_eq!(batch.write_due_ns(), schedule.due_ns(batch.requests.last().unwrap().0));
        assert!(batch.write_due_ns() >= last_write, "writes come in time order");
        last_write = batch.write_due_ns();
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..total).collect::<Vec<_>>(), "every request exactly once");
    // 100 requests over 3 connections (34, 33, 33) in batches of 4: 9 batches each.
    assert_eq!(batches.len(), 27);

    // Size 1 is the unbatched schedule: one request per write at its own due time.
    let single: Vec<_> = Batches::new(schedule.clone(), connections, total, 1).collect();
    assert_eq!(single.len(), total as usize);
    for (index, batch) in single.iter().enumerate() {
        assert_eq!(batch.requests, vec![(index as u64, schedule.due_ns(index as u64))]);
    }
}

#[test]
fn a_batched_run_measures_each_order_from_its_own_scheduled_time() {
    let harness = common::Harness::start(1);
    // 200/s on one connection in batches of 10: a write every 50 ms, whose first order was due
    // 45 ms earlier.
    let config = SbeConfig {
        address: harness.address.to_string(),
        connections: 1,
        rate: 200,
        duration: Duration::from_secs(1),
        warmup: Duration::ZERO,
        batch: 10,
        ..SbeConfig::default()
    };
    let report = run(&config).unwrap();
    println!("{report}");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.sent, 200);
    assert_eq!(report.answered, 200);
    assert_eq!(report.settings.get("batch").map(String::as_str), Some("10"));
    let lag = report.latency("send_lag").unwrap();
    // The last order of each batch is written on time, the first 45 ms late.
    assert!(lag.min_ns < 5_000_000, "{lag:?}");
    assert!(lag.max_ns >= 44_000_000, "{lag:?}");
    // Latency counts from each order's own scheduled time, so it includes that lag.
    let ack = report.latency("ack_all").unwrap();
    assert!(ack.max_ns >= 44_000_000, "{ack:?}");
    let uncorrected = report.latency("ack_all_uncorrected").unwrap();
    assert!(uncorrected.p50_ns < ack.p50_ns, "{uncorrected:?} vs {ack:?}");
    // Measured from each batch's scheduled write time instead, the batching delay is left out.
    let from_write = report.latency("ack_from_write_due").unwrap();
    assert_eq!(from_write.count, 200);
    assert!(from_write.p50_ns < ack.p50_ns, "{from_write:?} vs {ack:?}");
}
