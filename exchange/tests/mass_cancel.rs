//! One command whose output is far larger than the egress ring (issue #16 defect 6), with the
//! real server binary: the egress ring is made small by configuration (`engine.egress_capacity`)
//! so that thousands of resting orders are enough. A user with thousands of resting orders cancels
//! them all with one mass cancel over SBE, another does the same over FIX. Every session stays
//! connected and receives every one of its cancels (the engine waits for the in-process
//! consumers instead of lapping them), and the REST depth is served from an up-to-date market
//! view afterwards (not 503 "resynchronising").

mod support;

use codec::*;
use engine::testkit::commands;
use gateway_binary::client::{Client, Incoming};
use gateway_fix::parser::{Parsed, parse};
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::fix::{FixClient, Msg, get};
use support::{FIX_LISTENING, HTTP_LISTENING, SBE_LISTENING, Server};

/// First load-test user (`--load-users`), see exchange::demo: it trades over SBE.
const SBE_USER: u64 = 1_000_001;
/// The second load-test user: it trades over FIX (session `LOAD<id>`).
const FIX_USER: u64 = 1_000_002;
/// Events the egress ring holds: far fewer than one mass cancel below produces (an
/// `OrderCanceled` and a `BookLevelUpdate` per order).
const EGRESS_CAPACITY: usize = 256;
/// Resting orders of the SBE user.
const SBE_ORDERS: u64 = 3_000;
/// Resting orders of the FIX user.
const FIX_ORDERS: u64 = 2_000;
/// Orders sent before their acknowledgements are read: their events (an acceptance, a book and a
/// balance update each) fit the egress ring many times over.
const PIPELINED: usize = 16;
/// Distinct bid prices each user's orders are spread over (so the REST depth shows them all).
const LEVELS: u64 = 20;
/// Longest wait for the market view to show what the engine did.
const VIEW_DEADLINE: Duration = Duration::from_secs(20);

/// `config` with the `key = …` line of `[section]` replaced by `key = value`.
fn set(config: &str, section: &str, key: &str, value: &str) -> String {
    let start = config.find(&format!("\n[{section}]\n")).unwrap_or_else(|| panic!("[{section}]"));
    let offset = start + config[start..].find(&format!("\n{key} = ")).unwrap_or_else(|| panic!("{section}.{key}"));
    let end = offset + 1 + config[offset + 1..].find('\n').unwrap();
    format!("{}\n{key} = {value}{}", &config[..offset], &config[end..])
}

/// The server with two funded load-test users, a small egress ring, room for the orders, and no
/// message throttles in the way of placing them quickly.
fn start(dir: &Path) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let mut config = exchange::config::DEFAULT_CONFIG.to_string();
    config = set(&config, "engine", "egress_capacity", &EGRESS_CAPACITY.to_string());
    config = set(&config, "engine", "open_orders_per_user_max", "10000");
    for section in ["binary", "fix"] {
        config = set(&config, section, "messages_per_second", "1000000");
        config = set(&config, section, "burst", "100000");
    }
    let path = dir.join("exchange.toml");
    std::fs::write(&path, config).unwrap();
    let args = ["--config", path.to_str().unwrap(), "run", "--load-users", "2", "--status-every", "0"];
    Server::start_waiting_for(
        dir,
        &args,
        &[],
        &[HTTP_LISTENING, SBE_LISTENING, FIX_LISTENING, "load-test users funded"],
    )
}

/// Bid price of the `index`-th order: `LEVELS` prices far below any real market.
fn price_ticks(user: u64, index: u64) -> u64 {
    let base = if user == SBE_USER { 10_000 } else { 20_000 };
    base + index % LEVELS
}

fn next_event(client: &mut Client) -> Event {
    match client.receive_application().unwrap() {
        Incoming::Event(event) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// The BTC_USDC bids of the REST depth as (ticks, lots), or the HTTP status when it is not 200.
fn depth_bids(http: u16) -> Result<Vec<(u64, u64)>, u16> {
    let response = support::request(http, "GET", "/api/v1/depth?symbol=BTC_USDC&limit=1000", "", "");
    if response.status() != 200 {
        return Err(response.status());
    }
    let body = response.json("depth");
    // BTC_USDC: tick 0.1 USDC, lot 0.00001 BTC.
    let units = |text: &Value, scale: f64| (text.as_str().unwrap().parse::<f64>().unwrap() * scale).round() as u64;
    Ok(body["bids"].as_array().unwrap().iter().map(|level| (units(&level[0], 10.0), units(&level[1], 1e5))).collect())
}

/// What the depth must show: every level of each user still resting, `lots` per order.
fn expected_bids(users: &[(u64, u64)], lots: u64) -> Vec<(u64, u64)> {
    let mut levels = std::collections::BTreeMap::<u64, u64>::new();
    for &(user, orders) in users {
        for index in 0..orders {
            *levels.entry(price_ticks(user, index)).or_default() += lots;
        }
    }
    levels.into_iter().collect()
}

/// Waits until the REST depth shows exactly `expected`; a 503 (stale view) that never clears or
/// different levels fail the test.
fn wait_for_depth(http: u16, expected: &[(u64, u64)], context: &str) {
    let deadline = Instant::now() + VIEW_DEADLINE;
    let mut last = Err(0);
    while Instant::now() < deadline {
        last = depth_bids(http);
        if let Ok(bids) = &last {
            let mut bids = bids.clone();
            bids.sort_unstable();
            if bids == expected {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{context}: the REST depth never showed the book; last answer {last:?}");
}

#[test]
fn mass_cancels_larger_than_the_egress_ring_reach_every_session_and_the_market_view() {
    let dir = support::data_dir("mass-cancel");
    let server = start(&dir).remove_dir_on_drop();
    let mut sbe = Client::connect(("127.0.0.1", server.sbe_port()), &exchange::demo::load_user_secret(SBE_USER), 1)
        .expect("SBE logon");
    let mut fix = FixClient::connect(server.fix_port(), FIX_USER, 1);
    fix.logon();

    // Resting bids, a few at a time (what one batch of them causes fits the ring easily).
    for chunk in (0..SBE_ORDERS).collect::<Vec<_>>().chunks(PIPELINED) {
        for &index in chunk {
            let order =
                commands::limit(0, 1, Side::Bid, price_ticks(SBE_USER, index), 100, TimeInForce::Gtc, index + 1);
            sbe.send(&order).unwrap();
        }
        for &index in chunk {
            match next_event(&mut sbe) {
                Event::OrderAccepted(accepted) => assert_eq!(accepted.client_order_id.get(), index + 1),
                other => panic!("order {index}: {other:?}"),
            }
        }
    }
    for chunk in (0..FIX_ORDERS).collect::<Vec<_>>().chunks(PIPELINED) {
        for &index in chunk {
            let price = format!("{}.{}", price_ticks(FIX_USER, index) / 10, price_ticks(FIX_USER, index) % 10);
            fix.limit(&format!("o{index}"), &price, "0.001");
        }
        for &index in chunk {
            let report = fix.expect(&["8"]);
            assert_eq!((get(&report, 150), get(&report, 11)), ("0", format!("o{index}").as_str()));
        }
    }
    wait_for_depth(server.http, &expected_bids(&[(SBE_USER, SBE_ORDERS), (FIX_USER, FIX_ORDERS)], 100), "resting");

    // One SBE mass cancel: thousands of events in one command, many times the egress ring.
    sbe.send(&commands::mass_cancel(0, 0, SideFilter::Both)).unwrap();
    let mut canceled = std::collections::BTreeSet::new();
    loop {
        match sbe.receive_application() {
            Ok(Incoming::Event(Event::OrderCanceled(order))) => {
                assert!(canceled.insert(order.client_order_id.get()), "{order:?} twice");
            }
            Ok(Incoming::Event(Event::MassCancelReport(report))) => {
                assert_eq!(report.canceled_count.get() as u64, SBE_ORDERS);
                break;
            }
            other => panic!("the SBE session, after {} cancels: {other:?}", canceled.len()),
        }
    }
    assert_eq!(canceled, (1..=SBE_ORDERS).collect(), "every cancel reached the SBE session");
    wait_for_depth(server.http, &expected_bids(&[(FIX_USER, FIX_ORDERS)], 100), "after the SBE mass cancel");

    // The FIX session, which heard nothing of it, is still connected: its own mass cancel.
    fix.send("q", &[(11, "all".into()), (530, "7".into())]);
    let mut canceled = std::collections::BTreeSet::new();
    loop {
        let message = fix.expect(&["8", "r"]);
        if get(&message, 35) == "r" {
            assert_eq!((get(&message, 531), get(&message, 533)), ("7", FIX_ORDERS.to_string().as_str()));
            break;
        }
        assert_eq!(get(&message, 150), "4", "{message:?}");
        assert!(canceled.insert(get(&message, 11).to_string()), "{message:?} twice");
    }
    assert_eq!(canceled.len() as u64, FIX_ORDERS, "every cancel reached the FIX session");
    wait_for_depth(server.http, &[], "after both mass cancels");

    // Both sessions still trade, and the view follows.
    sbe.send(&commands::limit(0, 1, Side::Bid, 10_000, 100, TimeInForce::Gtc, 999_999)).unwrap();
    let last = next_event(&mut sbe);
    assert!(matches!(last, Event::OrderAccepted(_)), "the SBE session is alive: {last:?}");
    fix.limit("last", "2000.0", "0.002");
    assert_eq!(get(&fix.expect(&["8"]), 150), "0", "the FIX session is alive");
    wait_for_depth(server.http, &[(10_000, 100), (20_000, 200)], "after the last orders");
}

/// What the mass-cancel test does with a load-test user's FIX session beyond sending.
trait LoadSession {
    /// Logs on with a sequence reset and waits for the Logon reply.
    fn logon(&mut self);
    /// The next message of one of `types` (heartbeats and test requests are skipped); a logout
    /// or a closed connection fails the test.
    fn expect(&mut self, types: &[&str]) -> Msg;
    /// Sends a limit buy (NewOrderSingle) of `quantity` at `price` on BTC_USDC.
    fn limit(&mut self, cl_ord_id: &str, price: &str, quantity: &str);
}

impl LoadSession for FixClient {
    fn logon(&mut self) {
        self.send("A", &[(98, "0".into()), (108, "30".into()), (141, "Y".into())]);
        self.expect(&["A"]);
    }

    fn expect(&mut self, types: &[&str]) -> Msg {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "no {types:?}");
            if let Parsed::Complete(message, used) = parse(&self.buffer) {
                let owned: Msg = message.fields().map(|(t, v)| (t, String::from_utf8_lossy(v).into_owned())).collect();
                self.buffer.drain(..used);
                if types.contains(&get(&owned, 35)) {
                    return owned;
                }
                assert!(matches!(get(&owned, 35), "0" | "1"), "the FIX session got {owned:?} waiting for {types:?}");
                continue;
            }
            let mut chunk = [0u8; 65536];
            let read = self.stream.read(&mut chunk).unwrap();
            assert!(read > 0, "the server closed the FIX connection");
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    fn limit(&mut self, cl_ord_id: &str, price: &str, quantity: &str) {
        let fields = [(11, cl_ord_id), (55, "BTC_USDC"), (54, "1"), (38, quantity), (40, "2"), (44, price)];
        self.send("D", &fields.map(|(t, v)| (t, v.to_string())));
    }
}

/// The runtime's half of the market view's recovery, in process: a feed that is lapped anyway
/// (here: one subscribed without gating, the way a gating one ends up after a stall) has its
/// reseed served by the engine thread between batches, and the view is fresh and complete again
/// without a restart.
#[test]
fn the_engine_thread_reseeds_a_lapped_market_view() {
    let dir = support::data_dir("mass-cancel-reseed");
    let mut config = exchange::config::Config::load(None).unwrap();
    config.data_dir = dir.clone();
    config.engine.egress_capacity = 16;
    config.engine.open_orders_per_user_max = 10_000;
    config.journal.durability = exchange::config::DurabilitySetting::None;
    config.snapshot.every_commands = 0;
    let engine_config = config.engine_config().unwrap();
    let (recovered, writer) = exchange::runtime::recover(&config, &engine_config, false, true).unwrap();
    let view = Arc::new(marketdata::MarketView::new(&engine_config));
    view.seed_books(&recovered.engine);
    let publisher = marketdata::Publisher::new(view.clone(), &engine_config, Default::default());
    let runtime = exchange::runtime::Runtime::start(&config, recovered, writer.unwrap()).unwrap();
    let feed = marketdata::Feed::start_publishing_with_reseed(
        publisher,
        runtime.egress.subscribe_from(0),
        runtime.reads.clone(),
    )
    .unwrap();

    // Far more events than 16 slots in a few batches: the non-gating feed is lapped.
    let mut commands = vec![commands::deposit(SBE_USER, 1, 10_000_000_000_000)];
    commands.extend((0..SBE_ORDERS).map(|index| {
        commands::limit(SBE_USER, 1, Side::Bid, price_ticks(SBE_USER, index), 100, TimeInForce::Gtc, index + 1)
    }));
    for command in commands {
        let mut item = exchange::runtime::IngressCommand::new(0, command);
        while let Err(returned) = runtime.ring.push(item) {
            item = returned;
            std::thread::yield_now();
        }
    }
    let expected = expected_bids(&[(SBE_USER, SBE_ORDERS)], 100);
    let deadline = Instant::now() + VIEW_DEADLINE;
    loop {
        let mut bids = view.depth(MarketId::new(1), 1_000).unwrap().bids;
        bids.sort_unstable();
        let caught_up = view.consumed() == runtime.egress.head();
        if caught_up && !view.is_stale() && bids == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the view never recovered: stale {}, consumed {} of {} events, bids {bids:?}, expected {expected:?}",
            view.is_stale(),
            view.consumed(),
            runtime.egress.head(),
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!runtime.reads.is_pending());
    feed.shutdown();
    runtime.shutdown().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
