//! Server-side wire-to-wire latency on the real server binary (issue #17): orders sent through
//! each gateway (SBE, FIX, REST) are each recorded once in `exchange_wire_to_wire_seconds` and
//! once in every stage of `exchange_stage_seconds`, under their gateway and message type, and the
//! stages add up: the median of the total is at least the median of each stage, and the stages'
//! sums add up to the total's sum.

mod support;

use codec::*;
use gateway_binary::client::{Client, Incoming};
use gateway_fix::parser::{Parsed, parse};
use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};
use support::fix::{FixClient, Msg, get};
use support::{FIX_LISTENING, HTTP_LISTENING, JSON, SBE_LISTENING, Server, request, signature_lines};

/// Load-test users (`--load-users 3`): one per gateway.
const SBE_USER: u64 = exchange::demo::LOAD_USER_FIRST;
const FIX_USER: u64 = SBE_USER + 1;
const REST_USER: u64 = SBE_USER + 2;
/// Orders each gateway sends.
const ORDERS: u64 = 12;
const STAGES: [&str; 6] = ["decode", "ingress_wait", "journal_commit", "engine", "egress_wait", "encode_write"];

/// The next FIX message of type `msg_type` (heartbeats skipped).
fn fix_expect(client: &mut FixClient, msg_type: &str) -> Msg {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no {msg_type}");
        if let Parsed::Complete(message, used) = parse(&client.buffer) {
            let owned: Msg = message.fields().map(|(t, v)| (t, String::from_utf8_lossy(v).into_owned())).collect();
            client.buffer.drain(..used);
            if get(&owned, 35) == msg_type {
                return owned;
            }
            continue;
        }
        let mut chunk = [0u8; 4096];
        let read = client.stream.read(&mut chunk).unwrap();
        assert!(read > 0, "the server closed the connection");
        client.buffer.extend_from_slice(&chunk[..read]);
    }
}

/// The values of `name` in a Prometheus text by label set (the text between the braces).
fn series(text: &str, name: &str) -> HashMap<String, f64> {
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| {
            let (labels, value) = rest.split_once("} ")?;
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The upper bound of the bucket holding the median of one histogram series (`labels` without
/// `le`, each followed by a comma).
fn median_bucket(text: &str, name: &str, labels: &str) -> f64 {
    let buckets = series(text, &format!("{name}_bucket"));
    let mut cumulative: Vec<(f64, f64)> = buckets
        .iter()
        .filter_map(|(set, count)| {
            let bound = set.strip_prefix(labels)?.strip_prefix("le=\"")?.strip_suffix('"')?;
            Some((if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? }, *count))
        })
        .collect();
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = cumulative.last().expect("buckets").1;
    cumulative.iter().find(|(_, count)| *count >= total / 2.0).expect("a median").0
}

#[test]
fn every_gateways_orders_are_timed_from_read_to_write_in_stages_that_add_up() {
    let dir = support::data_dir("wire-latency");
    let server = Server::start_waiting_for(
        &dir,
        &["run", "--load-users", "3"],
        &[],
        &[HTTP_LISTENING, SBE_LISTENING, FIX_LISTENING, "load-test users funded"],
    );
    let mut sent: HashMap<&str, u64> = HashMap::new();

    // SBE: resting bids far below any price, each acknowledged before the next.
    let mut sbe = Client::connect(("127.0.0.1", server.sbe_port()), &exchange::demo::load_user_secret(SBE_USER), 1)
        .expect("SBE logon");
    for client_order_id in 1..=ORDERS {
        let order = engine::testkit::commands::limit(0, 1, Side::Bid, 10_000, 100, TimeInForce::Gtc, client_order_id);
        sbe.send(&order).unwrap();
        match sbe.receive_application().unwrap() {
            Incoming::Event(Event::OrderAccepted(_) | Event::OrderRejected(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    sent.insert("sbe", ORDERS);

    // FIX.
    let mut fix = FixClient::connect(server.fix_port(), FIX_USER, 1);
    fix.send("A", &[(98, "0".to_string()), (108, "30".to_string()), (141, "Y".to_string())]);
    fix_expect(&mut fix, "A");
    for n in 1..=ORDERS {
        let fields = [
            (11, format!("W{n}")),
            (55, "BTC_USDC".into()),
            (54, "1".into()),
            (38, "0.001".into()),
            (40, "2".into()),
            (44, "1000".into()),
        ];
        fix.send("D", &fields);
        fix_expect(&mut fix, "8");
    }
    sent.insert("fix", ORDERS);

    // REST.
    let secret = exchange::demo::load_user_secret(REST_USER);
    for n in 1..=ORDERS {
        let body = format!(
            r#"{{"symbol":"BTC_USDC","side":"Bid","orderType":"Limit","price":"1000.0","quantity":"0.00100","clientId":{n}}}"#
        );
        let params = format!("&clientId={n}&orderType=Limit&price=1000.0&quantity=0.00100&side=Bid&symbol=BTC_USDC");
        let headers = format!("{JSON}{}", signature_lines(&secret, &format!("instruction=orderExecute{params}")));
        let response = request(server.http, "POST", "/api/v1/order", &headers, &body);
        assert!(matches!(response.status(), 200 | 400), "{}", response.body());
    }
    sent.insert("rest", ORDERS);

    // The SBE and FIX writers record right after their write: give them a moment.
    let metrics = (0..50)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            request(server.http, "GET", "/metrics", "", "").body().to_string()
        })
        .find(|text| {
            let counts = series(text, "exchange_wire_to_wire_seconds_count");
            sent.iter().all(|(gateway, orders)| {
                counts.get(&format!("gateway=\"{gateway}\",message=\"NewOrder\"")) == Some(&(*orders as f64))
            })
        })
        .unwrap_or_else(|| request(server.http, "GET", "/metrics", "", "").body().to_string());

    let totals = series(&metrics, "exchange_wire_to_wire_seconds_count");
    let total_sums = series(&metrics, "exchange_wire_to_wire_seconds_sum");
    let stage_counts = series(&metrics, "exchange_stage_seconds_count");
    let stage_sums = series(&metrics, "exchange_stage_seconds_sum");
    for (gateway, orders) in &sent {
        let labels = format!("gateway=\"{gateway}\",message=\"NewOrder\"");
        assert_eq!(totals.get(&labels), Some(&(*orders as f64)), "{gateway}: one total per order in\n{metrics}");
        let total_median = median_bucket(&metrics, "exchange_wire_to_wire_seconds", &format!("{labels},"));
        let mut stages_sum = 0.0;
        for stage in STAGES {
            let stage_labels = format!("{labels},stage=\"{stage}\"");
            assert_eq!(stage_counts.get(&stage_labels), Some(&(*orders as f64)), "{stage_labels} in\n{metrics}");
            stages_sum += stage_sums[&stage_labels];
            let stage_median = median_bucket(&metrics, "exchange_stage_seconds", &format!("{stage_labels},"));
            assert!(total_median >= stage_median, "{stage_labels}: median {stage_median} > total's {total_median}");
        }
        // Each stage's sum is of bucket-rounded values (HdrHistogram, 1%): so is the total's.
        let total_sum = total_sums[&labels];
        assert!(total_sum > 0.0);
        assert!(
            (stages_sum - total_sum).abs() <= 0.05 * total_sum,
            "{gateway}: stages {stages_sum} vs total {total_sum}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
