//! Trigger orders, price bands and the version-3 schema over the binary gateway (real TCP): a
//! version-2 client's 56-byte `NewOrder` is still accepted; a trigger order is answered
//! `TriggerPending`, and when another user's trade fires it its owner (only) receives
//! `TriggerPlaced`, the order's acceptance and fill, or `TriggerFailed` with the reason; a
//! pending trigger is cancelled like an order; a limit price outside the band is an
//! `OrderRejected` with reason `PriceOutsideBand`.

mod common;

use codec::*;
use common::{Harness, accepted, event, limit, next};
use engine::PriceBand;
use engine::testkit::commands;
use gateway_binary::client::Client;
use std::time::Duration;

/// A trade of one lot at `price` between users 2 (buyer) and 3 (resting seller).
fn trade_at(buyer: &mut Client, seller: &mut Client, price: u64, id: u64) {
    seller.send(&limit(Side::Ask, price, 1, id)).unwrap();
    accepted(next(seller));
    buyer.send(&commands::limit(0, 1, Side::Bid, price, 1, TimeInForce::Ioc, id)).unwrap();
    accepted(next(buyer));
    let Event::Fill(_) = event(next(buyer)) else { panic!("buyer fill") };
    let Event::Fill(_) = event(next(seller)) else { panic!("seller fill") };
}

#[test]
fn a_version_2_new_order_is_still_accepted() {
    let harness = Harness::start(1, |_| {});
    let mut client = harness.client(1);
    let current = limit(Side::Bid, 600_000, 1, 7).to_vec();
    let mut old = Vec::new();
    for field in [56u16, NewOrder::TEMPLATE_ID, SCHEMA_ID, 2] {
        old.extend_from_slice(&field.to_le_bytes());
    }
    old.extend_from_slice(&current[8..8 + 56]);
    client.send_raw(&old).unwrap();
    let order = accepted(next(&mut client));
    assert_eq!((order.client_order_id.get(), order.price_ticks.get()), (7, 600_000));
}

#[test]
fn a_trigger_order_reaches_only_its_owner() {
    let harness = Harness::start(3, |_| {});
    let (mut owner, mut buyer, mut seller) = (harness.client(1), harness.client(2), harness.client(3));
    trade_at(&mut buyer, &mut seller, 600_000, 1);
    // Stop-market sell of 1 lot at 590_000; and a cancellable second one.
    owner.send(&commands::trigger(0, 1, Side::Ask, TriggerKind::Stop, 590_000, 0, 1, 11)).unwrap();
    let Event::TriggerPending(pending) = event(next(&mut owner)) else { panic!("TriggerPending") };
    assert_eq!((pending.client_order_id.get(), pending.trigger_price_ticks.get()), (11, 590_000));
    owner.send(&commands::trigger(0, 1, Side::Ask, TriggerKind::Stop, 580_000, 0, 1, 12)).unwrap();
    let Event::TriggerPending(second) = event(next(&mut owner)) else { panic!("TriggerPending") };
    owner.send(&commands::cancel(0, 1, second.order_id.get())).unwrap();
    let Event::OrderCanceled(canceled) = event(next(&mut owner)) else { panic!("OrderCanceled") };
    assert_eq!(canceled.order_id, second.order_id);

    buyer.send(&limit(Side::Bid, 585_000, 1, 2)).unwrap();
    accepted(next(&mut buyer));
    trade_at(&mut buyer, &mut seller, 590_000, 3);
    let Event::TriggerPlaced(placed) = event(next(&mut owner)) else { panic!("TriggerPlaced") };
    assert_eq!((placed.order_id, placed.last_price_ticks.get()), (pending.order_id, 590_000));
    let order = accepted(next(&mut owner));
    assert_eq!(order.order_id, pending.order_id);
    let Event::Fill(fill) = event(next(&mut owner)) else { panic!("owner fill") };
    assert_eq!((fill.price_ticks.get(), fill.taker_order_id), (585_000, pending.order_id));
    let Event::Fill(_) = event(next(&mut buyer)) else { panic!("maker fill") };
    // The seller, whose trade fired the stop, hears nothing of it.
    seller.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert!(seller.receive_application().is_err(), "the seller heard of another user's order");
}

#[test]
fn a_failed_trigger_and_a_band_rejection_say_why() {
    let harness = Harness::start_with_engine(
        3,
        1024,
        |_| {},
        |config| {
            config.markets[0].price_band = PriceBand { max_multiplier_ppm: 1_100_000, min_multiplier_ppm: 900_000 };
        },
    );
    let (mut owner, mut buyer, mut seller) = (harness.client(1), harness.client(2), harness.client(3));
    trade_at(&mut buyer, &mut seller, 600_000, 1);
    owner.send(&limit(Side::Bid, 700_000, 1, 5)).unwrap();
    let Event::OrderRejected(rejected) = event(next(&mut owner)) else { panic!("OrderRejected") };
    assert_eq!(rejected.reason.get(), Ok(RejectReason::PriceOutsideBand));
    // User 1 holds 1 BTC (100_000 lots): a stop selling more fails when it fires.
    owner.send(&commands::trigger(0, 1, Side::Ask, TriggerKind::Stop, 590_000, 0, 200_000, 6)).unwrap();
    let Event::TriggerPending(pending) = event(next(&mut owner)) else { panic!("TriggerPending") };
    trade_at(&mut buyer, &mut seller, 590_000, 2);
    let Event::TriggerPlaced(_) = event(next(&mut owner)) else { panic!("TriggerPlaced") };
    let Event::TriggerFailed(failed) = event(next(&mut owner)) else { panic!("TriggerFailed") };
    assert_eq!((failed.order_id, failed.reason.get()), (pending.order_id, Ok(RejectReason::InsufficientBalance)));
}
