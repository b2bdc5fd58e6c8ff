//! Smoke test of the SBE load generator against a real gateway and engine in-process (the
//! harness in `common/`): sessions log on as the load-test users with the secrets loadgen
//! derives itself, orders are acknowledged, latencies land in the histograms, and a clean run
//! reports no errors and no unanswered requests. Also runs the baseline-vs-gateway comparison.

mod common;

use common::Harness;
use loadgen::sbe::{SbeConfig, run};
use std::time::Duration;

fn config(address: std::net::SocketAddr) -> SbeConfig {
    SbeConfig {
        address: address.to_string(),
        connections: 2,
        rate: 200,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(500),
        drain: Duration::from_secs(5),
        ..SbeConfig::default()
    }
}

#[test]
fn orders_are_acknowledged_and_measured_without_errors() {
    let harness = Harness::start(2);
    let report = run(&config(harness.address)).unwrap();
    println!("{report}");

    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert_eq!(report.unanswered, 0);
    // 200/s for 2 s measured: about 400 requests, every one answered.
    assert!((380..=420).contains(&report.sent), "sent {}", report.sent);
    assert_eq!(report.answered, report.sent);
    assert!(report.outcomes.get("accepted").copied().unwrap_or(0) > 0, "{:?}", report.outcomes);

    let ack = report.histogram("ack_all").unwrap();
    assert_eq!(ack.len(), report.answered);
    assert!(ack.min() > 0 && ack.max() < 5_000_000_000, "latencies are plausible: {:?}", report.latency("ack_all"));
    let limits = report.latency("ack_limit").unwrap();
    assert!(limits.count > 0 && limits.p50_ns > 0);
    // The mix sends cancels of the connections' own open orders, and they are answered.
    assert!(report.outcomes.get("sent_cancel").copied().unwrap_or(0) > 0, "{:?}", report.outcomes);
    assert!(report.outcomes.get("canceled").copied().unwrap_or(0) > 0, "{:?}", report.outcomes);
    // Rejects, if any, are named by their numbered reason.
    for reason in report.rejects.keys() {
        let code: u16 = reason.split(' ').next().unwrap().parse().unwrap();
        assert!(code >= 100, "{reason}");
    }
    // The send rate matches the offered one.
    assert!((report.achieved_send_rate - 200.0).abs() < 20.0, "sent at {}/s", report.achieved_send_rate);
}

#[test]
fn a_second_run_on_the_same_sessions_is_clean_too() {
    // Sessions (and their remembered client order ids and resting orders) outlive connections:
    // a later run must pick fresh client order ids and start from a clean book.
    let harness = Harness::start(1);
    let mut config = config(harness.address);
    config.connections = 1;
    config.duration = Duration::from_millis(500);
    config.warmup = Duration::ZERO;
    for _ in 0..2 {
        let report = run(&config).unwrap();
        assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
        assert!(
            !report.rejects.keys().any(|r| r.starts_with("401")),
            "duplicate client order ids: {:?}",
            report.rejects
        );
        assert!(report.answered > 0);
    }
}

#[test]
fn an_unknown_user_cannot_log_on() {
    let harness = Harness::start(1);
    let mut unknown = config(harness.address);
    unknown.first_user = 42;
    let error = run(&unknown).unwrap_err().to_string();
    assert!(error.contains("user 42"), "{error}");
    // The first session logs on, the second (an unregistered user) cannot: the run fails
    // cleanly, closing the first.
    let mut two = config(harness.address);
    two.connections = 2;
    let error = run(&two).unwrap_err().to_string();
    assert!(error.contains("connection 1 (user 1000002)"), "{error}");
    // And the first user's session is free again.
    let mut one = config(harness.address);
    one.connections = 1;
    one.duration = Duration::from_millis(200);
    one.warmup = Duration::ZERO;
    let report = run(&one).unwrap();
    assert!(report.errors.is_empty() && report.answered > 0, "{report}");
}

#[test]
fn compare_divides_the_gateway_by_the_baseline() {
    let harness = Harness::start(1);
    let mut sbe = config(harness.address);
    sbe.connections = 1;
    sbe.duration = Duration::from_secs(1);
    sbe.warmup = Duration::from_millis(200);
    let baseline = loadgen::baseline::BaselineConfig {
        messages: 200,
        rate: 200,
        warmup: Duration::from_millis(200),
        ..Default::default()
    };
    let comparison = loadgen::compare(&baseline, &sbe).unwrap();
    let text = comparison.to_string();
    println!("{text}");
    assert!(text.contains("gateway ack_all / baseline rtt"), "{text}");
    let labels: Vec<_> = comparison.ratios.iter().map(|r| r.percentile.as_str()).collect();
    assert_eq!(labels, ["p50", "p90", "p99", "p99.9", "p99.99", "max"]);
    for ratio in &comparison.ratios {
        assert!(ratio.baseline_ns > 0 && ratio.gateway_ns > 0, "{ratio:?}");
        assert!((ratio.ratio - ratio.gateway_ns as f64 / ratio.baseline_ns as f64).abs() < 1e-9);
    }
    assert!(comparison.baseline.errors.is_empty() && comparison.gateway.errors.is_empty());
}

#[test]
fn a_ramp_reports_each_step_and_a_replay_sends_the_file() {
    let harness = Harness::start(2);
    // Two 1 s steps, 100/s then 200/s, with the exchange-core profile (mostly replaces).
    let profile = loadgen::profile::Profile::ExchangeCore;
    let ramp = loadgen::ramp::Ramp::parse("100:200:100:1", Duration::from_secs(1)).unwrap();
    let ramped = SbeConfig {
        mix: profile.mix(),
        prices: profile.prices(),
        rate: 100,
        duration: ramp.duration(),
        ramp: Some(ramp),
        ramp_p99_max_ns: 1_000_000_000,
        ..config(harness.address)
    };
    let report = run(&ramped).unwrap();
    println!("{report}");
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    let offered: Vec<u64> = report.ramp.iter().map(|row| row.offered).collect();
    assert_eq!(offered, [100, 200]);
    for row in &report.ramp {
        assert_eq!(row.sent, row.offered, "a 1 s step sends its rate's worth");
        assert_eq!(row.answered, row.sent);
        assert!(row.sustained && !row.partial && row.p50_ns > 0 && row.p99_ns >= row.p50_ns, "{row:?}");
    }
    assert_eq!(report.sent, 300);
    assert_eq!(report.offered_rate, 150.0);
    assert!(report.outcomes.get("replaced").copied().unwrap_or(0) > 100, "{:?}", report.outcomes);

    // Replay: the sample's rows as GTC limits, cycling through the file.
    let text = "side,price,qty\nB,599990,5\nS,600010,5\nB,599980,3\nS,600020,3\n";
    let rows = engine::testkit::profiles::parse_flow_csv(text).unwrap();
    let replayed = SbeConfig { replay: Some(rows.into()), ..config(harness.address) };
    let report = run(&replayed).unwrap();
    assert!(report.errors.is_empty() && report.rejects.is_empty(), "{report}");
    assert_eq!(report.answered, report.sent);
    assert_eq!(report.outcomes.get("sent_limit"), report.outcomes.get("accepted"));
    assert!(!report.settings.contains_key("mix"), "a replay has no mix");
}
