//! The open-loop scheduler: due times are exact functions of the request index (no drift, no
//! dependence on responses), requests go round robin over connections, `count_before` agrees
//! with `due_ns`, and the pacer never sends early and never waits for a time already past (a
//! late generator catches up back to back instead of shifting the schedule).

use loadgen::schedule::{Clock, Pacer, Schedule, parse_cores};
use std::time::Duration;

#[test]
fn due_times_are_index_over_rate_without_drift() {
    let schedule = Schedule::new(3, 1);
    assert_eq!((0..4).map(|i| schedule.due_ns(i)).collect::<Vec<_>>(), [0, 333_333_333, 666_666_666, 1_000_000_000]);
    // Adding a rounded interval would drift by a nanosecond every three requests; the exact
    // formula lands on whole seconds however far the run goes.
    for seconds in [1u64, 1_000, 1_000_000] {
        assert_eq!(schedule.due_ns(3 * seconds), seconds * 1_000_000_000);
    }
    let fast = Schedule::new(2_000, 4);
    assert_eq!(fast.due_ns(1), 500_000);
    assert_eq!(fast.due_ns(20_000), 10_000_000_000);
}

#[test]
fn requests_go_round_robin_over_connections() {
    let schedule = Schedule::new(1_000, 4);
    let connections: Vec<_> = (0..9).map(|i| schedule.connection(i)).collect();
    assert_eq!(connections, [0, 1, 2, 3, 0, 1, 2, 3, 0]);
    // Each connection sees every fourth due time: rate / C per connection.
    let of_one: Vec<_> = (0..12).filter(|&i| schedule.connection(i) == 1).map(|i| schedule.due_ns(i)).collect();
    assert_eq!(of_one, [1_000_000, 5_000_000, 9_000_000]);
}

#[test]
fn count_before_is_the_first_index_due_at_or_after() {
    for rate in [1, 3, 7, 1_000, 2_000, 123_457] {
        let schedule = Schedule::new(rate, 1);
        for ns in [0, 1, 999_999, 1_000_000, 1_000_001, 333_333_333, 1_000_000_000, 2_500_000_001] {
            let count = schedule.count_before(ns);
            assert!(count == 0 || schedule.due_ns(count - 1) < ns, "rate {rate} ns {ns}");
            assert!(schedule.due_ns(count) >= ns, "rate {rate} ns {ns}");
        }
    }
    assert_eq!(Schedule::new(1_000, 1).count_before(1_000_000_000), 1_000);
}

#[test]
fn the_pacer_is_never_early_and_does_not_wait_for_the_past() {
    let clock = Clock::start();
    let pacer = Pacer::new(Duration::from_micros(50));
    let schedule = Schedule::new(10_000, 1);
    let start = clock.now_ns() + 1_000_000;
    for i in 0..20 {
        let due = start + schedule.due_ns(i);
        let sent = pacer.wait_until(&clock, due);
        assert!(sent >= due, "request {i} sent {} ns early", due - sent);
    }
    // A generator that fell 50 ms behind sends the overdue requests at once: the schedule does
    // not move, so their lateness is charged to them.
    std::thread::sleep(Duration::from_millis(50));
    let overdue = start + schedule.due_ns(21);
    let before = clock.now_ns();
    let sent = pacer.wait_until(&clock, overdue);
    assert!(sent - before < 5_000_000, "waited {} ns for a past due time", sent - before);
}

#[test]
fn core_lists_parse() {
    assert_eq!(parse_cores("0,1").unwrap(), [0, 1]);
    assert_eq!(parse_cores("0-3, 6").unwrap(), [0, 1, 2, 3, 6]);
    assert!(parse_cores("").is_err());
    assert!(parse_cores("3-1").is_err());
    assert!(parse_cores("a").is_err());
}
