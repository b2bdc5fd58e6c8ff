//! Coordinated-omission correction. Latency is measured from each request's *scheduled* send
//! time, so a stall makes every request scheduled during it accrue latency, whether the stall is
//! the server's (requests keep being sent, open loop, and queue up) or the generator's own
//! (requests go out late, and that lateness counts). The first tests replay both situations in
//! virtual time through the same `Schedule` and `Sent` accounting the generator uses and show
//! what a naive measurement would have hidden; the last one stalls a real echo server under the
//! real baseline generator.

use hdrhistogram::Histogram;
use loadgen::baseline::{BaselineConfig, EchoStall};
use loadgen::latency::{Sent, new_histogram, record};
use loadgen::schedule::Schedule;
use std::time::Duration;

const MS: u64 = 1_000_000;
const SERVICE: u64 = 5_000; // 5 µs per request

struct Simulated {
    corrected: Histogram<u64>,
    uncorrected: Histogram<u64>,
}

/// An open-loop generator at 1000/s for 1 s against a FIFO server taking 5 µs per request.
/// `generator_stall`: the generator cannot send during `[from, to)` and sends what fell due at
/// `to`, back to back. `server_stall`: the server processes nothing during `[from, to)`.
fn simulate(generator_stall: Option<(u64, u64)>, server_stall: Option<(u64, u64)>) -> Simulated {
    let schedule = Schedule::new(1_000, 1);
    let (mut corrected, mut uncorrected) = (new_histogram(), new_histogram());
    let mut server_free = 0;
    for index in 0..1_000 {
        let due = schedule.due_ns(index);
        let actual = match generator_stall {
            Some((from, to)) if (from..to).contains(&due) => to,
            _ => due,
        };
        let sent = Sent { scheduled_ns: due, actual_ns: actual };
        let mut start = actual.max(server_free);
        if let Some((from, to)) = server_stall
            && (from..to).contains(&start)
        {
            start = to;
        }
        let done = start + SERVICE;
        server_free = done;
        record(&mut corrected, sent.latency_ns(done));
        record(&mut uncorrected, sent.uncorrected_ns(done));
    }
    Simulated { corrected, uncorrected }
}

fn above(histogram: &Histogram<u64>, ns: u64) -> u64 {
    histogram.iter_recorded().filter(|v| v.value_iterated_to() > ns).map(|v| v.count_at_value()).sum()
}

#[test]
fn without_stalls_latency_is_the_service_time() {
    let run = simulate(None, None);
    assert_eq!(run.corrected.len(), 1_000);
    assert!(run.corrected.max() <= SERVICE + SERVICE / 100);
    assert_eq!(run.corrected.max(), run.uncorrected.max());
}

#[test]
fn a_server_stall_adds_latency_to_every_request_scheduled_during_it() {
    // The server stops for 100 ms at t = 500 ms. The open-loop generator keeps sending: the 100
    // requests due in that window queue up and each waits for the rest of the stall.
    let run = simulate(None, Some((500 * MS, 600 * MS)));
    assert_eq!(above(&run.corrected, MS), 100, "every request scheduled in the stall is slow");
    assert!(above(&run.corrected, 50 * MS) >= 50, "half of them waited over half the stall");
    assert!(run.corrected.max() >= 100 * MS);
    // The requests spread evenly from ~100 ms down to ~0: the 99th percentile is far above the
    // service time, though only 10% of requests met the stall.
    assert!(run.corrected.value_at_quantile(0.99) > 80 * MS);

    // A closed-loop generator (next request only after the previous answer, timed from its own
    // send) would have sent one request into the stall and reported a single slow sample.
    let schedule = Schedule::new(1_000, 1);
    let mut closed = new_histogram();
    let (mut previous_done, mut server_free) = (0, 0);
    for index in 0..1_000 {
        let send = schedule.due_ns(index).max(previous_done);
        let mut start = send.max(server_free);
        if (500 * MS..600 * MS).contains(&start) {
            start = 600 * MS;
        }
        previous_done = start + SERVICE;
        server_free = previous_done;
        record(&mut closed, previous_done - send);
    }
    assert_eq!(above(&closed, MS), 1, "the closed loop hides 99 of the 100 slow requests");
}

#[test]
fn latency_counts_from_the_scheduled_not_the_actual_send_time() {
    // The generator itself stalls for 100 ms (descheduled, blocked in a write…) and sends the
    // 100 overdue requests at once when it resumes. The server answers each in 5 µs.
    let run = simulate(Some((500 * MS, 600 * MS)), None);
    // Measured from the actual send, nothing happened.
    assert_eq!(above(&run.uncorrected, MS), 0);
    assert!(run.uncorrected.max() < MS, "only the burst's queueing: {}", run.uncorrected.max());
    // Measured from the schedule, the 100 requests that should have gone out during the stall
    // waited up to 100 ms, as users arriving then would have.
    assert_eq!(above(&run.corrected, MS), 100);
    assert!(run.corrected.max() >= 100 * MS);
    // And the send lag tells whose fault it was.
    let late = Sent { scheduled_ns: 500 * MS, actual_ns: 600 * MS };
    assert_eq!((late.send_lag_ns(), late.latency_ns(600 * MS + SERVICE)), (100 * MS, 100 * MS + SERVICE));
}

#[test]
fn a_real_echo_stall_shows_up_in_every_later_scheduled_request() {
    // 1000 messages/s; the echo server freezes for 100 ms after echoing message 200.
    let report = loadgen::baseline::run(&BaselineConfig {
        messages: 600,
        rate: 1_000,
        warmup: Duration::ZERO,
        echo_stall: Some(EchoStall { after_messages: 200, pause: Duration::from_millis(100) }),
        ..BaselineConfig::default()
    })
    .unwrap();
    println!("{report}");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let rtt = report.histogram("rtt").unwrap();
    assert_eq!(rtt.len(), 600);
    assert!(rtt.max() >= 90 * MS, "the message in front of the stall waited it out: {}", rtt.max());
    // About 100 messages were scheduled during the stall, waiting from ~100 ms down to ~0;
    // some 80 of them more than 20 ms. A generator that waited for each echo would show one.
    let slow = above(rtt, 20 * MS);
    assert!(slow >= 50, "only {slow} messages over 20 ms");
    // The generator kept its schedule through the stall: open loop.
    assert!(report.achieved_send_rate > 900.0, "sent at {}/s", report.achieved_send_rate);
}
