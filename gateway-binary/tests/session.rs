//! The binary gateway over real TCP: logon, order flow with execution reports to the right
//! sessions (and nothing of the counterparty), and the user id always taken from the session.

mod common;

use codec::*;
use common::{Harness, limit};
use gateway_binary::client::{ClientError, Incoming};

fn event(incoming: Incoming) -> Event {
    match incoming {
        Incoming::Event(event) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn order_flow_reaches_both_sides_with_counterparty_hidden() {
    let harness = Harness::start(2, |_| {});
    let mut maker = harness.client(1);
    let mut taker = harness.client(2);
    assert_eq!(maker.ack.user_id.get(), 1);
    assert_eq!((maker.ack.next_sequence.get(), maker.ack.next_expected_sequence.get()), (1, 1));

    // The message claims user 2; the session is user 1's, and that is what the engine sees.
    let mut order = limit(Side::Ask, 600_000, 10, 77);
    if let Command::NewOrder(m) = &mut order {
        m.user_id = UserId::new(2);
    }
    maker.send(&order).unwrap();
    let Event::OrderAccepted(accepted) = event(maker.receive_application().unwrap()) else { panic!() };
    assert_eq!((accepted.user_id.get(), accepted.client_order_id.get()), (1, 77));

    taker.send(&limit(Side::Bid, 600_000, 4, 5)).unwrap();
    let Event::OrderAccepted(taker_order) = event(taker.receive_application().unwrap()) else { panic!() };
    let Event::Fill(taker_fill) = event(taker.receive_application().unwrap()) else { panic!() };
    assert_eq!((taker_fill.quantity_lots.get(), taker_fill.taker_order_id), (4, taker_order.order_id));
    assert_eq!((taker_fill.maker_user_id, taker_fill.maker_order_id), (UserId::ZERO, OrderId::ZERO), "maker hidden");

    let Event::Fill(maker_fill) = event(maker.receive_application().unwrap()) else { panic!() };
    assert_eq!((maker_fill.maker_order_id, maker_fill.maker_remaining_lots.get()), (accepted.order_id, 6));
    assert_eq!((maker_fill.taker_user_id, maker_fill.taker_order_id), (UserId::ZERO, OrderId::ZERO), "taker hidden");

    // A cancel by client id gets its report on the same session.
    maker.send(&engine::testkit::commands::cancel(0, 1, accepted.order_id.get())).unwrap();
    let Event::OrderCanceled(canceled) = event(maker.receive_application().unwrap()) else { panic!() };
    assert_eq!(canceled.canceled_lots.get(), 6);
}

#[test]
fn logon_is_refused_for_unknown_keys_bad_signatures_and_second_connections() {
    let harness = Harness::start(1, |_| {});
    // Unknown key.
    let error = gateway_binary::client::Client::connect(harness.address, &[9; 32], 1).err().unwrap();
    assert!(matches!(&error, ClientError::Protocol(m) if m.contains("Terminate")), "{error}");
    // A second connection for a logged-on key.
    let _first = harness.client(1);
    let error = gateway_binary::client::Client::connect(harness.address, &common::secret(1), 1).err().unwrap();
    assert!(matches!(&error, ClientError::Protocol(m) if m.contains("DuplicateSession")), "{error}");
}
