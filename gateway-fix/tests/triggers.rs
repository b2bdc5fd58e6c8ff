//! Stop orders and price bands over real TCP: OrdType 3 (Stop) and 4 (Stop limit) with StopPx(99)
//! are acknowledged New (ExecType 0) with their StopPx, reported Triggered (ExecType L) when a
//! trade reaches the stop price, then fill; a stop whose order cannot be placed is Rejected
//! (ExecType 8) with Text, OrdType 3 / 4 and its StopPx (as is a stop rejected on arrival); a stop
//! is cancelled like any order, and keeps its StopPx across a gateway restart (the session store
//! holds it); a missing StopPx is a session reject; a limit price outside the band is ExecType 8
//! with Text.

mod common;

use common::{Harness, now};
use engine::PriceBand;

/// A trade of 0.0001 BTC at `price`: user 3 rests an ask, user 2 takes it.
fn trade_at(seller: &mut common::Fix, buyer: &mut common::Fix, id: &str, price: &str) {
    seller.limit(&format!("{id}-S"), "2", price, "0.0001");
    assert_eq!(seller.expect("8").at(150), "0");
    buyer.limit(&format!("{id}-B"), "1", price, "0.0001");
    assert_eq!(buyer.expect("8").at(150), "0");
    assert_eq!(buyer.expect("8").at(150), "F");
    assert_eq!(seller.expect("8").at(150), "F");
}

fn stop(fix: &mut common::Fix, cl_ord_id: &str, side: &str, stop_px: &str, quantity: &str) {
    fix.send(
        "D",
        &[(11, cl_ord_id), (55, "BTC_USDC"), (54, side), (60, &now()), (38, quantity), (40, "3"), (99, stop_px)],
    );
}

#[test]
fn a_stop_is_new_then_triggered_then_filled() {
    let harness = Harness::start(3, |_| {});
    let (mut owner, mut buyer, mut seller) = (harness.client(1), harness.client(2), harness.client(3));
    trade_at(&mut seller, &mut buyer, "T1", "60000");
    stop(&mut owner, "STOP-1", "2", "59000", "0.0001");
    let new = owner.expect("8");
    assert_eq!((new.at(150), new.at(39), new.at(40), new.at(99), new.at(11)), ("0", "0", "3", "59000", "STOP-1"));
    // A bid for the stop to sell into, then a trade at the stop price.
    buyer.limit("BID", "1", "58000", "0.0002");
    assert_eq!(buyer.expect("8").at(150), "0");
    trade_at(&mut seller, &mut buyer, "T2", "59000");
    let triggered = owner.expect("8");
    assert_eq!((triggered.at(150), triggered.at(39), triggered.at(37)), ("L", "0", new.at(37)));
    assert_eq!(triggered.at(40), "1", "now a market order");
    let fill = owner.expect("8");
    assert_eq!((fill.at(150), fill.at(39), fill.at(31), fill.at(32)), ("F", "2", "58000", "0.0001"));
    // The maker hears its fill; the seller whose trade fired the stop hears nothing of it.
    assert_eq!(buyer.expect("8").at(150), "F");
    seller.assert_silent(std::time::Duration::from_millis(200));
}

#[test]
fn a_stop_that_cannot_be_placed_is_rejected_and_one_can_be_cancelled() {
    let harness = Harness::start(3, |_| {});
    let (mut owner, mut buyer, mut seller) = (harness.client(1), harness.client(2), harness.client(3));
    trade_at(&mut seller, &mut buyer, "T1", "60000");
    // Owner holds 1 BTC: a stop selling 5 is accepted (pending stops reserve nothing).
    stop(&mut owner, "BIG", "2", "59000", "5");
    assert_eq!(owner.expect("8").at(150), "0");
    owner.send(
        "D",
        &[
            (11, "SL"),
            (55, "BTC_USDC"),
            (54, "1"),
            (60, &now()),
            (38, "0.0001"),
            (40, "4"),
            (44, "61500"),
            (99, "61000"),
        ],
    );
    let stop_limit = owner.expect("8");
    assert_eq!((stop_limit.at(40), stop_limit.at(44), stop_limit.at(99)), ("4", "61500", "61000"));
    owner.send("F", &[(11, "SL-C"), (41, "SL"), (55, "BTC_USDC"), (54, "1"), (60, &now())]);
    let canceled = owner.expect("8");
    assert_eq!((canceled.at(150), canceled.at(39), canceled.at(41)), ("4", "4", "SL"));

    trade_at(&mut seller, &mut buyer, "T2", "59000");
    let triggered = owner.expect("8");
    assert_eq!((triggered.at(150), triggered.at(11)), ("L", "BIG"));
    let rejected = owner.expect("8");
    assert_eq!((rejected.at(150), rejected.at(39), rejected.at(11)), ("8", "8", "BIG"));
    assert_eq!(rejected.at(58), "insufficient funds");
    // What was rejected is the stop order as sent: OrdType 3 with its StopPx.
    assert_eq!((rejected.at(40), rejected.at(99)), ("3", "59000"), "{rejected:?}");
}

/// A stop order rejected when it arrives (by the engine: its StopPx already reached; by the
/// gateway: a quantity off the lot grid) echoes OrdType 3 / 4 and its StopPx, not 1 / 2.
#[test]
fn a_rejected_stop_echoes_its_order_type_and_stop_price() {
    let harness = Harness::start(3, |_| {});
    let (mut owner, mut buyer, mut seller) = (harness.client(1), harness.client(2), harness.client(3));
    trade_at(&mut seller, &mut buyer, "T1", "60000");
    // A sell stop at 61 000: the last trade (60 000) is already below it.
    stop(&mut owner, "REACHED", "2", "61000", "0.0001");
    let rejected = owner.expect("8");
    assert_eq!((rejected.at(150), rejected.at(39), rejected.at(11)), ("8", "8", "REACHED"));
    assert_eq!((rejected.at(40), rejected.at(99), rejected.get(44)), ("3", "61000", None), "{rejected:?}");
    // A buy stop limit at 59 000 (already above it), limit 59 500.
    owner.send(
        "D",
        &[
            (11, "REACHED-L"),
            (55, "BTC_USDC"),
            (54, "1"),
            (60, &now()),
            (38, "0.0001"),
            (40, "4"),
            (44, "59500"),
            (99, "59000"),
        ],
    );
    let rejected = owner.expect("8");
    assert_eq!((rejected.at(150), rejected.at(11)), ("8", "REACHED-L"));
    assert_eq!((rejected.at(40), rejected.at(44), rejected.at(99)), ("4", "59500", "59000"), "{rejected:?}");
    // Refused by the gateway itself.
    stop(&mut owner, "OFF-LOT", "2", "59000", "0.000015");
    let rejected = owner.expect("8");
    assert_eq!((rejected.at(150), rejected.at(11)), ("8", "OFF-LOT"));
    assert_eq!((rejected.at(40), rejected.at(99)), ("3", "59000"), "{rejected:?}");
}

/// The session store keeps a pending stop's StopPx: after a gateway restart the stop still
/// reports as a stop (OrdType 3 with StopPx) when it is cancelled.
#[test]
fn a_pending_stop_keeps_its_stop_price_across_a_gateway_restart() {
    let mut harness = Harness::start(3, |_| {});
    let (mut owner, mut buyer, mut seller) = (harness.client(1), harness.client(2), harness.client(3));
    trade_at(&mut seller, &mut buyer, "T1", "60000");
    stop(&mut owner, "KEPT", "2", "59000", "0.0001");
    let new = owner.expect("8");
    assert_eq!((new.at(150), new.at(40), new.at(99)), ("0", "3", "59000"));
    let next_seq = owner.next_seq;
    drop((owner, buyer, seller));
    harness.restart_gateway();
    let mut owner = common::Fix::connect(harness.address, 1);
    owner.next_seq = next_seq;
    assert_eq!(owner.logon(30, false).msg_type(), "A");
    owner.send("F", &[(11, "KEPT-C"), (41, "KEPT"), (55, "BTC_USDC"), (54, "2"), (60, &now())]);
    let canceled = owner.expect("8");
    assert_eq!((canceled.at(150), canceled.at(39), canceled.at(41)), ("4", "4", "KEPT"));
    assert_eq!((canceled.at(40), canceled.at(99)), ("3", "59000"), "{canceled:?}");
}

#[test]
fn a_stop_without_stop_px_is_a_session_reject() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    fix.send("D", &[(11, "NOPX"), (55, "BTC_USDC"), (54, "2"), (60, &now()), (38, "0.0001"), (40, "3")]);
    let reject = fix.expect("3");
    assert_eq!(reject.at(371), "99");
}

#[test]
fn a_price_outside_the_band_is_rejected_with_text() {
    let harness = Harness::start_with_engine(
        3,
        |_| {},
        |config| {
            config.markets[0].price_band = PriceBand { max_multiplier_ppm: 1_100_000, min_multiplier_ppm: 900_000 };
        },
    );
    let (mut owner, mut buyer, mut seller) = (harness.client(1), harness.client(2), harness.client(3));
    trade_at(&mut seller, &mut buyer, "T1", "60000");
    owner.limit("FAR", "1", "70000", "0.0001");
    let rejected = owner.expect("8");
    assert_eq!((rejected.at(150), rejected.at(39), rejected.at(11)), ("8", "8", "FAR"));
    assert_eq!(rejected.at(58), "price is outside the market's price band");
}
