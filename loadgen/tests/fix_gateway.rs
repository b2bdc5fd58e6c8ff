//! Smoke test of the FIX target against a real FIX gateway and engine in-process (the harness in
//! `common/fix.rs`, with one `LOAD<user id>` session per load-test user registered as
//! `exchange --load-users N` does): the sessions log on with the keys loadgen derives itself,
//! orders (decimal prices and quantities on BTC_USDC's grid) are acknowledged by ClOrdID,
//! cancels are answered, latencies land in the histograms, and a clean run has no errors and no
//! unanswered requests; a second run on the same sessions is clean too, and the
//! baseline comparison works for this target.

mod common;

use common::fix::FixHarness;
use loadgen::fix::{FixConfig, run};
use loadgen::sbe::SbeConfig;
use std::time::Duration;

fn config(address: std::net::SocketAddr, connections: usize) -> FixConfig {
    FixConfig {
        run: SbeConfig {
            address: address.to_string(),
            connections,
            rate: 200,
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            drain: Duration::from_secs(5),
            ..SbeConfig::default()
        },
        ..FixConfig::default()
    }
}

#[test]
fn fix_orders_are_acknowledged_and_measured_without_errors() {
    let harness = FixHarness::start(2);
    let report = run(&config(harness.address, 2)).unwrap();
    println!("{report}");

    assert_eq!(report.kind, "fix");
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert_eq!(report.unanswered, 0);
    assert!((380..=420).contains(&report.sent), "sent {}", report.sent);
    assert_eq!(report.answered, report.sent);
    // Acknowledged as new orders: prices and quantities were on the grid (an off-grid value
    // would be an ExecutionReport Rejected, counted under `rejected`).
    let accepted = report.outcomes.get("accepted").copied().unwrap_or(0);
    assert!(accepted > 0, "{:?}", report.outcomes);
    assert_eq!(report.outcomes.get("rejected").copied().unwrap_or(0), 0, "{:?}", report.rejects);
    assert!(report.outcomes.get("sent_cancel").copied().unwrap_or(0) > 0, "{:?}", report.outcomes);
    assert!(report.outcomes.get("canceled").copied().unwrap_or(0) > 0, "{:?}", report.outcomes);

    let ack = report.histogram("ack_all").unwrap();
    assert!(!ack.is_empty());
    assert_eq!(ack.len(), report.answered);
    assert!(ack.min() > 0 && ack.max() < 5_000_000_000, "{:?}", report.latency("ack_all"));
    assert!(report.latency("ack_limit").unwrap().count > 0);
    assert!((report.achieved_send_rate - 200.0).abs() < 20.0, "sent at {}/s", report.achieved_send_rate);
}

#[test]
fn a_second_fix_run_and_the_baseline_comparison_are_clean() {
    let harness = FixHarness::start(1);
    let mut config = config(harness.address, 1);
    config.run.duration = Duration::from_millis(500);
    config.run.warmup = Duration::ZERO;
    let first = run(&config).unwrap();
    assert!(first.errors.is_empty() && first.answered > 0, "{first}");
    let baseline = loadgen::baseline::BaselineConfig {
        messages: 100,
        rate: 200,
        warmup: Duration::from_millis(100),
        ..Default::default()
    };
    let comparison = loadgen::compare_with(&baseline, || run(&config)).unwrap();
    println!("{comparison}");
    assert_eq!(comparison.gateway.kind, "fix");
    assert!(comparison.gateway.errors.is_empty(), "{:?}", comparison.gateway.errors);
    assert!(comparison.ratios.iter().all(|r| r.gateway_ns > 0 && r.baseline_ns > 0));
}

#[test]
fn cancel_replaces_are_refused_up_front() {
    let harness = FixHarness::start(1);
    let mut config = config(harness.address, 1);
    config.run.mix.limit_pct = 70;
    config.run.mix.replace_pct = 10;
    let error = run(&config).unwrap_err().to_string();
    assert!(error.contains("replace"), "{error}");
}
