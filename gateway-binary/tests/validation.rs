//! What the gateway checks before the engine, over real TCP: an enum field holding an unknown code
//! is `BusinessReject(InvalidEnumValue)`; ledger and market commands (`Deposit`, `Withdraw`,
//! `MarketControl`) are not order entry and get `BusinessReject(InvalidOrderType)`; a client order id is single-use per session
//! (a retry of a filled order is `BusinessReject(DuplicateClientOrderId)` and never reaches the
//! engine), within a bounded window; an order refused because the engine was busy can be retried
//! with the same client order id. None of these reach the engine.

mod common;

use codec::*;
use common::{Harness, accepted, business_reject, event, limit, new_order, next};
use engine::testkit::commands;
use std::sync::atomic::Ordering;

fn commands_sent(harness: &Harness) -> u64 {
    harness.gateway().stats().commands.load(Ordering::Relaxed)
}

#[test]
fn unknown_enum_codes_are_rejected_before_the_engine() {
    let harness = Harness::start(1, |_| {});
    let mut client = harness.client(1);
    // One NewOrder per enum field, each with a code outside its enum.
    let mut orders = Vec::new();
    for (field, client_order_id) in (0..5).zip(1..) {
        let mut order = new_order(Side::Bid, 600_000, 1, client_order_id);
        let mut bytes = Command::NewOrder(order).to_vec();
        // side, order type, time in force, self-trade prevention, post-only: offsets 44..=48 of
        // the block, after the 8-byte header.
        bytes[8 + 44 + field] = 9;
        order = match Command::decode(&bytes).unwrap().0 {
            Command::NewOrder(order) => order,
            _ => unreachable!(),
        };
        orders.push(order);
    }
    for order in &orders {
        client.send(&Command::NewOrder(*order)).unwrap();
    }
    let mass_cancel = Command::MassCancel(MassCancel { side: SideFilter::Both.into(), ..Default::default() });
    let mut bad_mass_cancel = mass_cancel.to_vec();
    bad_mass_cancel[8 + 12] = 3; // side filter
    client.send_raw(&bad_mass_cancel).unwrap();
    let mut bad_kinds = mass_cancel.to_vec();
    bad_kinds[8 + 13] = 3; // order kind filter
    client.send_raw(&bad_kinds).unwrap();

    for (index, order) in orders.iter().enumerate() {
        let reject = business_reject(next(&mut client));
        assert_eq!(reject.reason.get(), Ok(RejectReason::InvalidEnumValue));
        assert_eq!((reject.client_sequence.get(), reject.client_order_id), (index as u64 + 1, order.client_order_id));
        assert_eq!(reject.ref_template_id.get(), NewOrder::TEMPLATE_ID);
    }
    for _ in 0..2 {
        let reject = business_reject(next(&mut client));
        assert_eq!((reject.reason.get(), reject.ref_template_id.get()), (Ok(RejectReason::InvalidEnumValue), 4));
    }
    assert_eq!(commands_sent(&harness), 0);

    // A rejected id was not used up: the corrected order goes through with it.
    client.send(&limit(Side::Bid, 600_000, 1, 1)).unwrap();
    assert_eq!(accepted(next(&mut client)).client_order_id.get(), 1);
    client.send(&mass_cancel).unwrap();
    let Event::OrderCanceled(_) = event(next(&mut client)) else { panic!("expected the cancel") };
    let Event::MassCancelReport(report) = event(next(&mut client)) else { panic!("expected the report") };
    assert_eq!(report.canceled_count.get(), 1);
}

#[test]
fn ledger_commands_are_not_order_entry() {
    let harness = Harness::start(1, |_| {});
    let mut client = harness.client(1);
    client.send(&commands::deposit(1, 1, 1_000_000)).unwrap();
    client.send(&commands::withdraw(1, 1, 1_000_000)).unwrap();
    // Nor may a client halt a market.
    client.send(&commands::market_control(1, true)).unwrap();
    for (sequence, template) in [(1, Deposit::TEMPLATE_ID), (2, Withdraw::TEMPLATE_ID), (3, MarketControl::TEMPLATE_ID)]
    {
        let reject = business_reject(next(&mut client));
        assert_eq!(reject.reason.get(), Ok(RejectReason::InvalidOrderType));
        assert_eq!((reject.client_sequence.get(), reject.ref_template_id.get()), (sequence, template));
    }
    assert_eq!(commands_sent(&harness), 0);
}

#[test]
fn a_client_order_id_is_used_once_per_session() {
    let harness = Harness::start(2, |_| {});
    let mut buyer = harness.client(1);
    let mut seller = harness.client(2);
    seller.send(&limit(Side::Ask, 600_000, 10, 1)).unwrap();
    accepted(next(&mut seller));

    // Fully filled at once: the order is no longer open, so the engine alone would accept a
    // second order with the same id. The gateway does not.
    buyer.send(&limit(Side::Bid, 600_000, 10, 42)).unwrap();
    assert_eq!(accepted(next(&mut buyer)).client_order_id.get(), 42);
    let Event::Fill(fill) = event(next(&mut buyer)) else { panic!("expected the fill") };
    assert_eq!(fill.taker_remaining_lots.get(), 0);
    let Event::Fill(_) = event(next(&mut seller)) else { panic!("expected the maker fill") };
    let sent = commands_sent(&harness);

    buyer.send(&limit(Side::Bid, 600_000, 10, 42)).unwrap();
    let reject = business_reject(next(&mut buyer));
    assert_eq!(reject.reason.get(), Ok(RejectReason::DuplicateClientOrderId));
    assert_eq!((reject.client_sequence.get(), reject.client_order_id.get()), (2, 42));
    assert_eq!(commands_sent(&harness), sent, "the retry never reached the engine");
    // Nothing else comes for the retry: the next message answers the next command.
    buyer.send(&commands::mass_cancel(0, 0, SideFilter::Both)).unwrap();
    let Event::MassCancelReport(report) = event(next(&mut buyer)) else { panic!("expected no second acceptance") };
    assert_eq!(report.canceled_count.get(), 0);

    // Client order id 0 means "none" and is never deduplicated.
    for _ in 0..2 {
        buyer.send(&limit(Side::Bid, 500_000, 1, 0)).unwrap();
        assert_eq!(accepted(next(&mut buyer)).client_order_id.get(), 0);
    }
    // Another user's session has its own ids.
    seller.send(&limit(Side::Ask, 700_000, 1, 42)).unwrap();
    assert_eq!(accepted(next(&mut seller)).client_order_id.get(), 42);
    // The ids survive a reconnect: they belong to the session, not the connection.
    drop(buyer);
    let mut buyer = harness.reconnect(1, 7);
    buyer.send(&limit(Side::Bid, 600_000, 10, 42)).unwrap();
    assert_eq!(business_reject(next(&mut buyer)).reason.get(), Ok(RejectReason::DuplicateClientOrderId));
}

#[test]
fn the_idempotency_window_is_bounded() {
    let harness = Harness::start(1, |config| config.client_order_ids_remembered = 2);
    let mut client = harness.client(1);
    let mut order_ids = Vec::new();
    for id in 1..=3 {
        client.send(&limit(Side::Bid, 500_000, 1, id)).unwrap();
        order_ids.push(accepted(next(&mut client)).order_id.get());
    }
    client.send(&commands::cancel(0, 1, order_ids[0])).unwrap();
    let Event::OrderCanceled(_) = event(next(&mut client)) else { panic!("expected the cancel") };
    // Id 1 is the oldest of three with a window of two: forgotten, so usable again; 3 is not.
    client.send(&limit(Side::Bid, 500_000, 1, 1)).unwrap();
    assert_eq!(accepted(next(&mut client)).client_order_id.get(), 1);
    client.send(&limit(Side::Bid, 500_000, 1, 3)).unwrap();
    assert_eq!(business_reject(next(&mut client)).reason.get(), Ok(RejectReason::DuplicateClientOrderId));
}

#[test]
fn an_order_refused_as_engine_busy_can_be_retried_with_its_client_order_id() {
    let harness = Harness::start_with(1, 2, |_| {});
    let mut client = harness.client(1);
    harness.engine_paused.store(true, std::sync::atomic::Ordering::Relaxed);
    for id in 1..=3 {
        client.send(&limit(Side::Bid, 500_000, 1, id)).unwrap();
    }
    let reject = business_reject(next(&mut client));
    assert_eq!(reject.reason.get(), Ok(RejectReason::EngineBusy));
    assert_eq!((reject.client_sequence.get(), reject.client_order_id.get()), (3, 3));
    assert_eq!(harness.gateway().stats().ingress_busy.load(Ordering::Relaxed), 1);

    harness.engine_paused.store(false, std::sync::atomic::Ordering::Relaxed);
    for id in 1..=2 {
        assert_eq!(accepted(next(&mut client)).client_order_id.get(), id);
    }
    // "Retry later" means it: the id was not used up by the refused attempt.
    client.send(&limit(Side::Bid, 500_000, 1, 3)).unwrap();
    assert_eq!(accepted(next(&mut client)).client_order_id.get(), 3);
}
