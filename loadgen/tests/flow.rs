//! The order flow: the mix is honoured, prices sit around the mid and cross it as often as
//! asked, every limit order clears BTC_USDC's 1 USDC minimum notional, client order ids are
//! unique, and cancels and replaces only ever address the connection's own open orders, with a
//! limit order sent instead when there is none and a cancel when there are too many.

use codec::*;
use engine::testkit::profiles::{FlowRow, parse_flow_csv};
use loadgen::flow::{Mix, OpenOrder, OpenOrders, OrderFlow, PriceModel, RequestKind};
use loadgen::profile::Profile;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Plays the exchange's part crudely: every GTC limit order rests at once.
fn drive(flow: &mut OrderFlow, open: &mut OpenOrders, count: usize) -> Vec<loadgen::flow::Request> {
    let mut requests = Vec::new();
    for _ in 0..count {
        let request = flow.next(open);
        if let Command::NewOrder(order) = request.command
            && request.kind == RequestKind::Limit
        {
            let side = order.side.get().unwrap();
            open.insert(
                request.key,
                OpenOrder {
                    side,
                    price_ticks: order.price_ticks.get(),
                    remaining_lots: order.quantity_lots.get(),
                    busy: false,
                },
            );
        }
        if let Command::CancelReplace(_) = request.command {
            // Answered at once.
            open.get_mut(request.key).unwrap().busy = false;
        }
        requests.push(request);
    }
    requests
}

#[test]
fn mixes_must_add_up() {
    assert!(Mix::default().validate().is_ok());
    let error = Mix { limit_pct: 90, ..Mix::default() }.validate().unwrap_err();
    assert!(error.contains("110%"), "{error}");
}

#[test]
fn the_mix_prices_and_ids_are_as_configured() {
    let mix = Mix { limit_pct: 60, market_pct: 10, ioc_pct: 10, cancel_pct: 10, replace_pct: 10 };
    let prices = PriceModel::default();
    let mut flow = OrderFlow::new(mix, prices, 0, 7, 5_000);
    let mut open = OpenOrders::default();
    let requests = drive(&mut flow, &mut open, 20_000);

    let mut kinds = BTreeMap::new();
    for request in &requests {
        *kinds.entry(request.kind).or_insert(0u32) += 1;
    }
    let share = |kind| f64::from(kinds.get(&kind).copied().unwrap_or(0)) / 200.0;
    for (kind, pct) in [
        (RequestKind::Limit, 60.0),
        (RequestKind::Market, 10.0),
        (RequestKind::Ioc, 10.0),
        (RequestKind::Cancel, 10.0),
        (RequestKind::Replace, 10.0),
    ] {
        assert!((share(kind) - pct).abs() < 2.0, "{kind:?}: {}% instead of {pct}%", share(kind));
    }

    let mut ids = HashSet::new();
    let (mut limits, mut crossing) = (0, 0);
    for request in &requests {
        let Command::NewOrder(order) = request.command else { continue };
        assert_eq!(order.client_order_id.get(), request.key);
        assert!(request.key >= 5_000 && ids.insert(request.key), "client order ids are fresh");
        assert_eq!(order.market_id.get(), 1);
        let lots = order.quantity_lots.get();
        assert!((prices.lots_min..=prices.lots_max).contains(&lots));
        if request.kind == RequestKind::Market {
            assert_eq!(order.order_type.get(), Ok(OrderType::Market));
            continue;
        }
        let price = order.price_ticks.get();
        assert!(price.abs_diff(prices.mid_ticks) <= prices.spread_ticks && price != prices.mid_ticks);
        assert!(price * lots >= 1_000_000, "notional {} below the minimum", price * lots);
        let tif = if request.kind == RequestKind::Ioc { TimeInForce::Ioc } else { TimeInForce::Gtc };
        assert_eq!(order.time_in_force.get(), Ok(tif));
        limits += 1;
        let buy = order.side.get() == Ok(Side::Bid);
        if buy == (price > prices.mid_ticks) {
            crossing += 1;
        }
    }
    let crossing_pct = f64::from(crossing) * 100.0 / f64::from(limits);
    assert!((crossing_pct - 10.0).abs() < 2.0, "{crossing_pct}% crossing");
}

#[test]
fn cancels_and_replaces_address_only_own_open_orders() {
    let mix = Mix { limit_pct: 50, market_pct: 0, ioc_pct: 0, cancel_pct: 30, replace_pct: 20 };
    // Without crossing, a replace moves its order on its own side of the mid.
    let prices = PriceModel { cross_pct: 0, ioc_cross_pct: 0, ..PriceModel::default() };
    let mut flow = OrderFlow::new(mix, prices, 0, 3, 1);
    let mut open = OpenOrders::default();
    let mut placed = HashSet::new();
    let mut canceled = HashSet::new();
    for _ in 0..5_000 {
        let request = flow.next(&mut open);
        match request.command {
            Command::NewOrder(_) => {
                placed.insert(request.key);
                open.insert(
                    request.key,
                    OpenOrder { side: Side::Bid, price_ticks: 599_950, remaining_lots: 5, busy: false },
                );
            }
            Command::CancelOrder(cancel) => {
                assert_eq!((cancel.order_id, cancel.client_order_id.get()), (OrderId::ZERO, request.key));
                assert!(placed.contains(&request.key) && canceled.insert(request.key), "cancel of {}", request.key);
                assert!(open.get(request.key).is_none(), "a cancelled order leaves the open set at once");
            }
            Command::CancelReplace(replace) => {
                assert_eq!((replace.order_id, replace.client_order_id.get()), (OrderId::ZERO, request.key));
                assert!(placed.contains(&request.key) && !canceled.contains(&request.key));
                let order = open.get_mut(request.key).unwrap();
                assert!(order.busy, "a replaced order is busy until answered");
                assert_ne!(replace.new_price_ticks.get(), order.price_ticks, "a replace changes the price");
                assert!(replace.new_price_ticks.get() < 600_000, "a bid stays a passive bid");
                order.busy = false;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn substitutions_keep_the_open_set_bounded_and_never_cancel_nothing() {
    // Only cancels asked for, nothing open: limit orders go out instead.
    let cancels_only = Mix { limit_pct: 0, market_pct: 0, ioc_pct: 0, cancel_pct: 100, replace_pct: 0 };
    let mut flow = OrderFlow::new(cancels_only, PriceModel::default(), 0, 1, 1);
    let mut open = OpenOrders::default();
    let request = flow.next(&mut open);
    assert_eq!((request.kind, request.substituted), (RequestKind::Limit, true));

    // Only limits asked for, at most 10 open: the 11th request cancels one instead.
    let limits_only = Mix { limit_pct: 100, market_pct: 0, ioc_pct: 0, cancel_pct: 0, replace_pct: 0 };
    let mut flow = OrderFlow::new(limits_only, PriceModel::default(), 10, 1, 1);
    let requests = drive(&mut flow, &mut open, 1_000);
    assert!(open.len() <= 10);
    assert!(requests.iter().filter(|r| r.kind == RequestKind::Cancel).all(|r| r.substituted));
    assert!(requests.iter().any(|r| r.kind == RequestKind::Cancel));
}

#[test]
fn open_orders_remove_and_pick_consistently() {
    let mut open = OpenOrders::default();
    let order = OpenOrder { side: Side::Ask, price_ticks: 600_010, remaining_lots: 3, busy: false };
    for key in 1..=5 {
        open.insert(key, order);
    }
    assert_eq!(open.remove(2), Some(order));
    assert_eq!(open.remove(2), None);
    assert_eq!(open.remove(5).map(|o| o.remaining_lots), Some(3));
    assert_eq!(open.len(), 3);
    for key in [1, 3, 4] {
        assert!(open.get(key).is_some());
    }
    // Whatever is left is what cancels pick.
    let cancels = Mix { limit_pct: 0, market_pct: 0, ioc_pct: 0, cancel_pct: 100, replace_pct: 0 };
    let mut flow = OrderFlow::new(cancels, PriceModel::default(), 0, 9, 100);
    let mut picked: Vec<u64> = (0..3).map(|_| flow.next(&mut open).key).collect();
    picked.sort_unstable();
    assert_eq!(picked, [1, 3, 4]);
    assert!(open.is_empty());
}

/// Kind shares (percent) of `count` requests of a profile's flow, and the requests.
fn profile_run(profile: Profile, seed: u64, count: usize) -> (BTreeMap<RequestKind, f64>, Vec<loadgen::flow::Request>) {
    let mut flow = OrderFlow::new(profile.mix(), profile.prices(), 0, seed, 1);
    let mut open = OpenOrders::default();
    let requests = drive(&mut flow, &mut open, count);
    let mut shares = BTreeMap::new();
    for request in &requests {
        *shares.entry(request.kind).or_insert(0.0) += 100.0 / count as f64;
    }
    (shares, requests)
}

fn assert_shares(name: &str, shares: &BTreeMap<RequestKind, f64>, expected: &[(RequestKind, f64)], tolerance: f64) {
    for &(kind, pct) in expected {
        let got = shares.get(&kind).copied().unwrap_or(0.0);
        assert!((got - pct).abs() <= tolerance, "{name}: {kind:?} {got:.2}% instead of {pct}% (±{tolerance})");
    }
}

#[test]
fn the_exchange_core_profile_sends_its_mix_and_prices() {
    let profile = Profile::ExchangeCore;
    // 50,000 requests: a share's standard deviation is at most 0.22 points, so ±1 is > 4 sigma.
    let (shares, requests) = profile_run(profile, 11, 50_000);
    assert_shares(
        "exchange-core",
        &shares,
        &[
            (RequestKind::Limit, 9.0),
            (RequestKind::Ioc, 3.0),
            (RequestKind::Market, 0.0),
            (RequestKind::Cancel, 6.0),
            (RequestKind::Replace, 82.0),
        ],
        1.0,
    );
    assert!(requests.iter().filter(|r| r.substituted).count() < 50, "the book never runs dry here");
    let (mut limits, mut crossing) = (0u32, 0u32);
    for request in &requests {
        match request.command {
            Command::NewOrder(order) => {
                let (price, buy) = (order.price_ticks.get(), order.side.get() == Ok(Side::Bid));
                let through = if buy { price as i64 - 600_000 } else { 600_000 - price as i64 };
                if request.kind == RequestKind::Ioc {
                    assert!((1..=3).contains(&through), "every IOC crosses by 1-3 ticks: {through}");
                } else {
                    assert!(price.abs_diff(600_000) <= 30 && price != 600_000, "{price}");
                    limits += 1;
                    if through > 0 {
                        assert!(through <= 3, "crossing limits go 1-3 ticks through: {through}");
                        crossing += 1;
                    }
                }
                assert!((2..=100).contains(&order.quantity_lots.get()));
            }
            Command::CancelReplace(replace) => {
                // Within the band (one tick further when the drawn price was the current one).
                assert!(replace.new_price_ticks.get().abs_diff(600_000) <= 31);
            }
            _ => {}
        }
    }
    let crossing_pct = f64::from(crossing) * 100.0 / f64::from(limits);
    assert!((crossing_pct - 10.0).abs() < 3.0, "{crossing_pct:.1}% of {limits} GTC limits cross");
}

#[test]
fn the_w_obrs_profile_sends_its_mix_in_a_one_tick_band() {
    let profile = Profile::WObrs;
    let (shares, requests) = profile_run(profile, 5, 50_000);
    assert_shares(
        "w-obrs",
        &shares,
        &[
            (RequestKind::Limit, 70.0),
            (RequestKind::Market, 10.0),
            (RequestKind::Cancel, 20.0),
            (RequestKind::Ioc, 0.0),
            (RequestKind::Replace, 0.0),
        ],
        1.0,
    );
    // Prices anywhere in mid ± 1 whatever the side: each of the three about a third of limits.
    let mut at = BTreeMap::new();
    for request in requests.iter().filter(|r| r.kind == RequestKind::Limit) {
        let Command::NewOrder(order) = request.command else { unreachable!() };
        *at.entry((order.side.get().unwrap() == Side::Bid, order.price_ticks.get())).or_insert(0u32) += 1;
    }
    let total: u32 = at.values().sum();
    assert_eq!(at.len(), 6, "both sides at 599,999, 600,000 and 600,001: {at:?}");
    for (&(buy, price), &count) in &at {
        assert!(price.abs_diff(600_000) <= 1);
        let pct = f64::from(count) * 100.0 / f64::from(total);
        assert!((pct - 100.0 / 6.0).abs() < 2.0, "buy={buy} at {price}: {pct:.1}%");
    }
}

#[test]
fn the_default_profile_is_the_default_mix() {
    assert_eq!(Profile::Default.mix(), Mix::default());
    assert_eq!(Profile::Default.prices(), PriceModel::default());
    assert_eq!("exchange-core".parse::<Profile>(), Ok(Profile::ExchangeCore));
    assert_eq!("W_OBRS".parse::<Profile>(), Ok(Profile::WObrs));
    let error = "lmax".parse::<Profile>().unwrap_err();
    assert!(error.contains("unknown profile") && error.contains("w-obrs"), "{error}");
    for profile in Profile::ALL {
        assert!(profile.mix().validate().is_ok(), "{profile}");
    }
}

#[test]
fn a_replay_sends_the_file_in_order_over_the_connections_and_cycles() {
    let rows: Arc<[FlowRow]> =
        parse_flow_csv("side,price,qty\nB,100,1\nS,101,2\nB,102,3\nS,103,4\nB,104,5\n").unwrap().into();
    let connections = 2;
    let mut flows: Vec<OrderFlow> = (0..connections)
        .map(|k| OrderFlow::replaying(rows.clone(), k, connections, PriceModel::default(), 0, k as u64, 1))
        .collect();
    let mut opens = vec![OpenOrders::default(); connections];
    let mut sent = Vec::new();
    for i in 0..10 {
        let k = i % connections;
        let request = flows[k].next(&mut opens[k]);
        let Command::NewOrder(order) = request.command else { panic!("{request:?}") };
        assert_eq!(order.time_in_force.get(), Ok(TimeInForce::Gtc));
        assert_eq!(order.client_order_id.get(), request.key);
        sent.push((order.side.get().unwrap(), order.price_ticks.get(), order.quantity_lots.get()));
    }
    // Connection 0 sends rows 0, 2, 4, 1, 3; connection 1 rows 1, 3, 0, 2, 4 (each cycles on its
    // own with stride 2): interleaved round robin, request i is row i mod 5, the file in order.
    let prices: Vec<u64> = sent.iter().map(|&(_, price, _)| price).collect();
    assert_eq!(prices, [100, 101, 102, 103, 104, 100, 101, 102, 103, 104]);
    assert_eq!(sent[1], (Side::Ask, 101, 2));
}

#[test]
fn a_replay_at_max_open_cancels_first_and_keeps_the_row() {
    let rows: Arc<[FlowRow]> = parse_flow_csv("B,100,1\nB,101,1\nB,102,1\n").unwrap().into();
    let mut flow = OrderFlow::replaying(rows, 0, 1, PriceModel::default(), 2, 1, 1);
    let mut open = OpenOrders::default();
    let requests = drive(&mut flow, &mut open, 6);
    let kinds: Vec<_> = requests.iter().map(|r| r.kind).collect();
    use RequestKind::{Cancel, Limit};
    assert_eq!(kinds, [Limit, Limit, Cancel, Limit, Cancel, Limit]);
    let prices: Vec<u64> = requests
        .iter()
        .filter_map(|r| match r.command {
            Command::NewOrder(order) => Some(order.price_ticks.get()),
            _ => None,
        })
        .collect();
    assert_eq!(prices, [100, 101, 102, 100], "no row is skipped by a cancel");
}
