//! ClOrdIDs along replace chains, over real TCP: every ClOrdID an open order has carried (its
//! original one, those of its replaces, its current one) is a duplicate for a new order, a
//! replace or a cancel; a rejected message changes nothing (reports keep the order's current
//! ClOrdID); a cancel or replace must name the order's latest ClOrdID; the chain survives a
//! gateway restart; an OrderCancelReject about a known order carries its OrderID.

mod common;

use common::{Fix, Harness, now};

/// Sends an OrderCancelReplaceRequest on BTC_USDC (limit).
fn replace(fix: &mut Fix, cl_ord_id: &str, orig: &str, side: &str, price: &str, quantity: &str) {
    fix.send(
        "G",
        &[
            (11, cl_ord_id),
            (41, orig),
            (55, "BTC_USDC"),
            (54, side),
            (38, quantity),
            (40, "2"),
            (44, price),
            (60, &now()),
        ],
    );
}

/// Sends an OrderCancelRequest on BTC_USDC.
fn cancel(fix: &mut Fix, cl_ord_id: &str, orig: &str, side: &str) {
    fix.send("F", &[(11, cl_ord_id), (41, orig), (55, "BTC_USDC"), (54, side), (60, &now())]);
}

/// Places `R-1` (a sell) and replaces it to `R-2`, `R-3`, `R-4`; returns its OrderID.
fn replaced_three_times(fix: &mut Fix) -> String {
    fix.limit("R-1", "2", "60000", "0.0001");
    let new = fix.expect("8");
    assert_eq!(new.at(150), "0", "{new:?}");
    for (n, quantity) in [(2, "0.0002"), (3, "0.0003"), (4, "0.0004")] {
        replace(fix, &format!("R-{n}"), &format!("R-{}", n - 1), "2", "60000", quantity);
        let replaced = fix.expect("8");
        assert_eq!((replaced.at(150), replaced.at(11), replaced.at(37)), ("5", format!("R-{n}").as_str(), new.at(37)));
    }
    new.at(37).to_string()
}

/// Asserts that a NewOrderSingle named `cl_ord_id` is rejected as a duplicate (103=6).
fn assert_duplicate_new(fix: &mut Fix, cl_ord_id: &str) {
    fix.limit(cl_ord_id, "2", "61000", "0.0001");
    let rejected = fix.expect("8");
    assert_eq!(
        (rejected.at(150), rejected.at(39), rejected.at(11), rejected.at(103)),
        ("8", "8", cl_ord_id, "6"),
        "{rejected:?}"
    );
}

#[test]
fn every_cl_ord_id_of_an_open_orders_chain_is_a_duplicate_and_a_reject_changes_nothing() {
    let harness = Harness::start(2, |_| {});
    let mut fix = harness.client(1);
    let order_id = replaced_three_times(&mut fix);
    // The current name, an intermediate one and the original one: all duplicates.
    assert_duplicate_new(&mut fix, "R-4");
    assert_duplicate_new(&mut fix, "R-2");
    assert_duplicate_new(&mut fix, "R-1");
    // A replace or a cancel asking for a name of the chain is refused too (102=6), about the
    // known order.
    replace(&mut fix, "R-3", "R-4", "2", "60000", "0.0005");
    let reject = fix.expect("9");
    assert_eq!(
        (reject.at(11), reject.at(41), reject.at(37), reject.at(39), reject.at(434), reject.at(102)),
        ("R-3", "R-4", order_id.as_str(), "0", "2", "6"),
        "{reject:?}"
    );
    cancel(&mut fix, "R-2", "R-4", "2");
    let reject = fix.expect("9");
    assert_eq!((reject.at(11), reject.at(37), reject.at(434), reject.at(102)), ("R-2", order_id.as_str(), "1", "6"));
    // The rejects changed nothing: a fill reports the order under its current name…
    let mut taker = harness.client(2);
    taker.limit("T-1", "1", "60000", "0.0001");
    assert_eq!(taker.expect("8").at(150), "0");
    let fill = fix.expect("8");
    assert_eq!((fill.at(150), fill.at(11), fill.at(37), fill.at(151)), ("F", "R-4", order_id.as_str(), "0.0003"));
    // …and a cancel by the current name hits that order, the only one of the session.
    cancel(&mut fix, "X-1", "R-4", "2");
    let canceled = fix.expect("8");
    assert_eq!(
        (canceled.at(150), canceled.at(11), canceled.at(41), canceled.at(37)),
        ("4", "X-1", "R-4", order_id.as_str())
    );
    fix.send("q", &[(11, "MC-1"), (530, "7"), (60, &now())]);
    assert_eq!(fix.expect("r").at(533), "0");
    // Once the order is done its names are free again.
    fix.limit("R-4", "2", "61000", "0.0001");
    assert_eq!(fix.expect("8").at(150), "0");
}

#[test]
fn a_cancel_or_replace_must_name_the_latest_cl_ord_id() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    let order_id = replaced_three_times(&mut fix);
    for (request, superseded) in [("X-1", "R-1"), ("X-2", "R-3")] {
        replace(&mut fix, request, superseded, "2", "60000", "0.0009");
        let reject = fix.expect("9");
        assert_eq!(
            (reject.at(11), reject.at(41), reject.at(37), reject.at(39), reject.at(434), reject.at(102)),
            (request, superseded, order_id.as_str(), "0", "2", "99"),
            "{reject:?}"
        );
        assert!(reject.at(58).contains("R-4"), "the text names the latest ClOrdID: {reject:?}");
    }
    cancel(&mut fix, "X-3", "R-2", "2");
    let reject = fix.expect("9");
    assert_eq!((reject.at(37), reject.at(434), reject.at(102)), (order_id.as_str(), "1", "99"), "{reject:?}");
    // Nothing changed: the latest name still replaces, and the request names are not taken.
    replace(&mut fix, "X-1", "R-4", "2", "60000", "0.0009");
    let replaced = fix.expect("8");
    assert_eq!((replaced.at(150), replaced.at(11), replaced.at(41), replaced.at(38)), ("5", "X-1", "R-4", "0.0009"));
}

#[test]
fn an_order_cancel_reject_about_a_known_order_carries_its_order_id() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    fix.limit("K-1", "1", "50000", "0.0001");
    let new = fix.expect("8");
    // Refused by the engine (a replace that changes nothing)…
    replace(&mut fix, "K-2", "K-1", "1", "50000", "0.0001");
    let reject = fix.expect("9");
    assert_eq!((reject.at(37), reject.at(39), reject.at(434)), (new.at(37), "0", "2"), "{reject:?}");
    // …and by the gateway (a price off the tick grid).
    replace(&mut fix, "K-3", "K-1", "1", "50000.05", "0.0001");
    let reject = fix.expect("9");
    assert_eq!((reject.at(37), reject.at(39), reject.at(434)), (new.at(37), "0", "2"), "{reject:?}");
    // An unknown order: NONE.
    cancel(&mut fix, "K-4", "NOPE", "1");
    let reject = fix.expect("9");
    assert_eq!((reject.at(37), reject.at(39), reject.at(102)), ("NONE", "8", "1"), "{reject:?}");
}

#[test]
fn the_chain_of_cl_ord_ids_survives_a_gateway_restart() {
    let mut harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    let order_id = replaced_three_times(&mut fix);
    let next_seq = fix.next_seq;
    drop(fix);
    harness.restart_gateway();
    let mut fix = Fix::connect(harness.address, 1);
    fix.next_seq = next_seq;
    assert_eq!(fix.logon(30, false).msg_type(), "A");
    assert_duplicate_new(&mut fix, "R-2");
    assert_duplicate_new(&mut fix, "R-4");
    replace(&mut fix, "X-1", "R-3", "2", "60000", "0.0009");
    let reject = fix.expect("9");
    assert_eq!((reject.at(37), reject.at(102)), (order_id.as_str(), "99"), "{reject:?}");
    cancel(&mut fix, "X-2", "R-4", "2");
    let canceled = fix.expect("8");
    assert_eq!((canceled.at(150), canceled.at(41), canceled.at(37)), ("4", "R-4", order_id.as_str()));
}
