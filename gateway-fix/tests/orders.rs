//! Application flows over real TCP: NewOrderSingle → ExecutionReport New, a cross with fills
//! reported to both sessions, cancel, replace, mass cancel, gateway and engine rejections.

mod common;

use common::{Harness, now};

#[test]
fn new_order_single_is_acknowledged() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    fix.limit("A-1", "1", "60000.1", "0.00015");
    let report = fix.expect("8");
    assert_eq!((report.at(150), report.at(39), report.at(11)), ("0", "0", "A-1"));
    assert_eq!((report.at(55), report.at(54), report.at(38), report.at(44)), ("BTC_USDC", "1", "0.00015", "60000.1"));
    assert_eq!((report.at(14), report.at(151), report.at(6)), ("0", "0.00015", "0"));
    assert!(report.at(37).parse::<u64>().unwrap() > 0);
    assert!(!report.at(17).is_empty());
    assert_eq!(harness.stat(|s| &s.commands), 1);
}

#[test]
fn a_cross_reports_fills_to_both_sessions() {
    let harness = Harness::start(2, |_| {});
    let mut maker = harness.client(1);
    let mut taker = harness.client(2);
    maker.limit("M1", "2", "60000", "0.0002");
    let new = maker.expect("8");
    assert_eq!(new.at(150), "0");
    taker.limit("T1", "1", "60000.1", "0.0001");
    assert_eq!(taker.expect("8").at(150), "0");
    let fill = taker.expect("8");
    assert_eq!((fill.at(150), fill.at(39), fill.at(11)), ("F", "2", "T1"));
    assert_eq!(
        (fill.at(31), fill.at(32), fill.at(14), fill.at(151), fill.at(6)),
        ("60000", "0.0001", "0.0001", "0", "60000")
    );
    let fill = maker.expect("8");
    assert_eq!((fill.at(150), fill.at(39), fill.at(11)), ("F", "1", "M1"));
    assert_eq!((fill.at(31), fill.at(32), fill.at(14), fill.at(151)), ("60000", "0.0001", "0.0001", "0.0001"));
    assert_eq!(fill.at(37), new.at(37));
    // No counterparty identifiers.
    assert!(fill.fields.iter().all(|(_, value)| value != "T1" && value != "CLIENT2"), "{fill:?}");
    // The rest fills too.
    taker.limit("T2", "1", "60000", "0.0001");
    taker.expect("8");
    assert_eq!(taker.expect("8").at(39), "2");
    let fill = maker.expect("8");
    assert_eq!((fill.at(39), fill.at(14), fill.at(151)), ("2", "0.0002", "0"));
}

#[test]
fn cancel_and_cancel_reject() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    fix.limit("C1", "1", "50000", "0.0001");
    let new = fix.expect("8");
    fix.send("F", &[(11, "C2"), (41, "C1"), (55, "BTC_USDC"), (54, "1"), (60, &now())]);
    let canceled = fix.expect("8");
    assert_eq!((canceled.at(150), canceled.at(39), canceled.at(11), canceled.at(41)), ("4", "4", "C2", "C1"));
    assert_eq!((canceled.at(37), canceled.at(151)), (new.at(37), "0"));
    // Again: the order is gone.
    fix.send("F", &[(11, "C3"), (41, "C1"), (55, "BTC_USDC"), (54, "1"), (60, &now())]);
    let reject = fix.expect("9");
    assert_eq!((reject.at(11), reject.at(41), reject.at(434), reject.at(102)), ("C3", "C1", "1", "1"));
}

#[test]
fn replace_then_cancel_by_the_new_cl_ord_id() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    fix.limit("R1", "1", "50000", "0.0001");
    let new = fix.expect("8");
    fix.send(
        "G",
        &[
            (11, "R2"),
            (41, "R1"),
            (55, "BTC_USDC"),
            (54, "1"),
            (38, "0.0003"),
            (40, "2"),
            (44, "50000.5"),
            (60, &now()),
        ],
    );
    let replaced = fix.expect("8");
    assert_eq!((replaced.at(150), replaced.at(39), replaced.at(11), replaced.at(41)), ("5", "0", "R2", "R1"));
    assert_eq!((replaced.at(38), replaced.at(44), replaced.at(151)), ("0.0003", "50000.5", "0.0003"));
    assert_eq!(replaced.at(37), new.at(37));
    // A replace that changes nothing is refused with an OrderCancelReject.
    fix.send(
        "G",
        &[
            (11, "R3"),
            (41, "R2"),
            (55, "BTC_USDC"),
            (54, "1"),
            (38, "0.0003"),
            (40, "2"),
            (44, "50000.5"),
            (60, &now()),
        ],
    );
    let reject = fix.expect("9");
    assert_eq!((reject.at(11), reject.at(41), reject.at(434), reject.at(39)), ("R3", "R2", "2", "0"));
    fix.send("F", &[(11, "R4"), (41, "R2"), (55, "BTC_USDC"), (54, "1"), (60, &now())]);
    let canceled = fix.expect("8");
    assert_eq!((canceled.at(150), canceled.at(11), canceled.at(41)), ("4", "R4", "R2"));
}

#[test]
fn mass_cancel_reports_the_count() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    for n in 0..3 {
        fix.limit(&format!("Q{n}"), "1", "40000", "0.0001");
        fix.expect("8");
    }
    fix.send("q", &[(11, "MC1"), (530, "7"), (60, &now())]);
    for _ in 0..3 {
        assert_eq!(fix.expect("8").at(150), "4");
    }
    let report = fix.expect("r");
    assert_eq!((report.at(11), report.at(530), report.at(531), report.at(533)), ("MC1", "7", "7", "3"));
    fix.send("q", &[(11, "MC2"), (530, "1"), (55, "ETH_USDC"), (60, &now())]);
    let report = fix.expect("r");
    assert_eq!((report.at(11), report.at(55), report.at(533)), ("MC2", "ETH_USDC", "0"));
}

#[test]
fn rejections_unknown_symbol_off_tick_and_engine() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    fix.send("D", &[(11, "U1"), (55, "DOGE_USDC"), (54, "1"), (38, "1"), (40, "2"), (44, "1"), (60, &now())]);
    let reject = fix.expect("j");
    assert_eq!((reject.at(380), reject.at(379), reject.at(372)), ("2", "U1", "D"));
    // Off the tick grid (0.1 USDC).
    fix.limit("P1", "1", "60000.15", "0.0001");
    let rejected = fix.expect("8");
    assert_eq!((rejected.at(150), rejected.at(39), rejected.at(11), rejected.at(103)), ("8", "8", "P1", "99"));
    assert_eq!(rejected.at(58), "price is not a multiple of the tick size");
    // Off the lot grid.
    fix.limit("P2", "1", "60000", "0.000015");
    assert_eq!(fix.expect("8").at(58), "quantity is not a multiple of the step size");
    // The engine refuses: not enough USDC (10 000 available).
    fix.limit("P3", "1", "60000", "1");
    let rejected = fix.expect("8");
    assert_eq!((rejected.at(150), rejected.at(103), rejected.at(11), rejected.at(54)), ("8", "3", "P3", "1"));
    // Post-only that would take.
    fix.limit("S1", "2", "60000", "0.0001");
    fix.expect("8");
    fix.send(
        "D",
        &[(11, "P4"), (55, "BTC_USDC"), (54, "1"), (38, "0.0001"), (40, "2"), (44, "60000"), (18, "6"), (60, &now())],
    );
    let rejected = fix.expect("8");
    assert_eq!((rejected.at(150), rejected.at(103)), ("8", "11"));
}

#[test]
fn market_ioc_order_expires_its_remainder() {
    let harness = Harness::start(2, |_| {});
    let mut maker = harness.client(1);
    let mut taker = harness.client(2);
    maker.limit("M", "2", "60000", "0.0001");
    maker.expect("8");
    taker.send("D", &[(11, "MK"), (55, "BTC_USDC"), (54, "1"), (38, "0.0003"), (40, "1"), (59, "3"), (60, &now())]);
    assert_eq!(taker.expect("8").at(150), "0");
    let fill = taker.expect("8");
    assert_eq!((fill.at(150), fill.at(39), fill.at(32)), ("F", "1", "0.0001"));
    let expired = taker.expect("8");
    assert_eq!((expired.at(150), expired.at(39), expired.at(14), expired.at(151)), ("C", "C", "0.0001", "0"));
}

#[test]
fn the_user_is_always_the_sessions() {
    let harness = Harness::start(2, |_| {});
    let mut one = harness.client(1);
    let mut two = harness.client(2);
    // Account(1) and other identity-looking tags are not honoured: the order is user 1's.
    one.send(
        "D",
        &[(11, "X1"), (1, "2"), (55, "BTC_USDC"), (54, "1"), (38, "0.0001"), (40, "2"), (44, "50000"), (60, &now())],
    );
    let new = one.expect("8");
    assert_eq!(new.at(150), "0");
    // User 2 cannot cancel it, neither by ClOrdID nor by OrderID.
    two.send("F", &[(11, "Y1"), (41, "X1"), (55, "BTC_USDC"), (54, "1"), (60, &now())]);
    assert_eq!(two.expect("9").at(102), "1");
    two.send("F", &[(11, "Y2"), (41, "X1"), (37, new.at(37)), (55, "BTC_USDC"), (54, "1"), (60, &now())]);
    // Another user's order is unknown to this session: no OrderID, no status of it.
    let reject = two.expect("9");
    assert_eq!((reject.at(434), reject.at(37), reject.at(39), reject.at(102)), ("1", "NONE", "8", "1"), "{reject:?}");
    // Its owner can.
    one.send("F", &[(11, "X2"), (41, "X1"), (55, "BTC_USDC"), (54, "1"), (60, &now())]);
    assert_eq!(one.expect("8").at(150), "4");
}

#[test]
fn open_orders_survive_a_gateway_restart() {
    let mut harness = Harness::start(2, |_| {});
    let mut maker = harness.client(1);
    let mut taker = harness.client(2);
    maker.limit("K1", "2", "60000", "0.0003");
    let new = maker.expect("8");
    // Replaced (a new ClOrdID), then partly filled.
    maker.send(
        "G",
        &[(11, "K2"), (41, "K1"), (55, "BTC_USDC"), (54, "2"), (38, "0.0004"), (40, "2"), (44, "60000"), (60, &now())],
    );
    assert_eq!(maker.expect("8").at(150), "5");
    taker.limit("T1", "1", "60000", "0.0001");
    taker.expect("8");
    taker.expect("8");
    assert_eq!(maker.expect("8").at(14), "0.0001");
    let (maker_seq, taker_seq) = (maker.next_seq, taker.next_seq);
    drop((maker, taker));
    harness.restart_gateway();
    let mut maker = common::Fix::connect(harness.address, 1);
    maker.next_seq = maker_seq;
    maker.logon(30, false);
    let mut taker = common::Fix::connect(harness.address, 2);
    taker.next_seq = taker_seq;
    taker.logon(30, false);
    taker.limit("T2", "1", "60000", "0.0002");
    taker.expect("8");
    let fill = maker.expect("8");
    assert_eq!((fill.at(150), fill.at(39), fill.at(11), fill.at(37)), ("F", "1", "K2", new.at(37)));
    assert_eq!((fill.at(32), fill.at(14), fill.at(151), fill.at(6)), ("0.0002", "0.0003", "0.0001", "60000"));
    // The replaced ClOrdID still names the order.
    maker.send("F", &[(11, "K3"), (41, "K2"), (55, "BTC_USDC"), (54, "2"), (60, &now())]);
    let canceled = maker.expect("8");
    assert_eq!((canceled.at(150), canceled.at(41), canceled.at(14), canceled.at(151)), ("4", "K2", "0.0003", "0"));
}

#[test]
fn time_in_force_day_is_rejected_with_a_reason() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    fix.send(
        "D",
        &[(11, "D1"), (55, "BTC_USDC"), (54, "1"), (38, "0.0001"), (40, "2"), (44, "50000"), (59, "0"), (60, &now())],
    );
    let rejected = fix.expect("8");
    assert_eq!((rejected.at(150), rejected.at(39), rejected.at(11), rejected.at(103)), ("8", "8", "D1", "11"));
    assert!(rejected.at(58).contains("Day"), "{rejected:?}");
    // Without TimeInForce the order is good till canceled.
    fix.limit("D2", "1", "50000", "0.0001");
    assert_eq!(fix.expect("8").at(150), "0");
    // Explicit GTC too.
    fix.send(
        "D",
        &[(11, "D3"), (55, "BTC_USDC"), (54, "1"), (38, "0.0001"), (40, "2"), (44, "50000"), (59, "1"), (60, &now())],
    );
    assert_eq!(fix.expect("8").at(150), "0");
}

#[test]
fn a_self_trade_prevention_cancel_says_why() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    fix.limit("S1", "2", "60000", "0.0001");
    assert_eq!(fix.expect("8").at(150), "0");
    // The taker is accepted, then canceled by self-trade prevention (the engine's default for
    // FIX orders: cancel the taker), with a Text saying so.
    fix.limit("S2", "1", "60000", "0.0001");
    assert_eq!(fix.expect("8").at(150), "0");
    let report = fix.expect("8");
    assert_eq!((report.at(150), report.at(39), report.at(11), report.at(151)), ("4", "4", "S2", "0"), "{report:?}");
    assert!(report.at(58).contains("self-trade"), "{report:?}");
    // A fill-or-kill only the user's own order could fill is rejected outright.
    fix.send(
        "D",
        &[(11, "S4"), (55, "BTC_USDC"), (54, "1"), (38, "0.0001"), (40, "2"), (44, "60000"), (59, "4"), (60, &now())],
    );
    let rejected = fix.expect("8");
    assert_eq!(
        (rejected.at(150), rejected.at(103), rejected.at(58)),
        ("8", "99", "order would trade against your own order")
    );
    // The resting order is untouched.
    fix.send("F", &[(11, "S3"), (41, "S1"), (55, "BTC_USDC"), (54, "2"), (60, &now())]);
    let canceled = fix.expect("8");
    assert_eq!((canceled.at(150), canceled.at(41)), ("4", "S1"));
    assert_eq!(canceled.get(58), None, "a cancel asked for needs no explanation: {canceled:?}");
}

/// What docs/fix.md's table says for orders that cannot trade at all.
#[test]
fn a_market_order_without_liquidity_and_an_unfillable_fok_are_rejected() {
    let harness = Harness::start(2, |_| {});
    let mut taker = harness.client(2);
    // Nothing on the book: a market order is rejected, not accepted then expired.
    taker.send("D", &[(11, "MK1"), (55, "BTC_USDC"), (54, "1"), (38, "0.0001"), (40, "1"), (60, &now())]);
    let rejected = taker.expect("8");
    assert_eq!((rejected.at(150), rejected.at(39), rejected.at(103)), ("8", "8", "99"), "{rejected:?}");
    assert_eq!((rejected.at(58), rejected.at(14), rejected.at(151)), ("no liquidity for a market order", "0", "0"));
    // A fill-or-kill that the book cannot fill completely: rejected, nothing trades.
    let mut maker = harness.client(1);
    maker.limit("M1", "2", "60000", "0.0001");
    maker.expect("8");
    taker.send(
        "D",
        &[(11, "FK1"), (55, "BTC_USDC"), (54, "1"), (38, "0.0002"), (40, "2"), (44, "60000"), (59, "4"), (60, &now())],
    );
    let rejected = taker.expect("8");
    assert_eq!((rejected.at(150), rejected.at(39), rejected.at(103)), ("8", "8", "11"), "{rejected:?}");
    assert_eq!(rejected.at(58), "fill-or-kill order cannot be filled completely");
    // An IOC limit order that crosses nothing: accepted, then expired.
    taker.send(
        "D",
        &[(11, "IOC1"), (55, "BTC_USDC"), (54, "1"), (38, "0.0001"), (40, "2"), (44, "59000"), (59, "3"), (60, &now())],
    );
    assert_eq!(taker.expect("8").at(150), "0");
    let expired = taker.expect("8");
    assert_eq!((expired.at(150), expired.at(39), expired.at(14), expired.at(151)), ("C", "C", "0", "0"));
    // A market order that exhausts the book: filled in part, the rest expired.
    taker.send("D", &[(11, "MK2"), (55, "BTC_USDC"), (54, "1"), (38, "0.0003"), (40, "1"), (60, &now())]);
    assert_eq!(taker.expect("8").at(150), "0");
    assert_eq!(taker.expect("8").at(150), "F");
    let expired = taker.expect("8");
    assert_eq!((expired.at(150), expired.at(39), expired.at(14), expired.at(151)), ("C", "C", "0.0001", "0"));
}
