//! Sequence numbers and retransmission over real TCP. The server's application messages (engine
//! events and business rejects) are implicitly numbered from 1 per session, across connections;
//! after a reconnect `EstablishAck.next_sequence` is one past the last one sent (and
//! `next_expected_sequence` one past the client's last message). A `RetransmitRequest` is answered
//! by a `Retransmission` header and exactly the messages originally sent, byte for byte —
//! including those produced while the client was disconnected (its resting order filled by
//! someone else); a range outside the kept window is `RetransmitReject(OutOfRange)`, and one
//! longer than `RETRANSMIT_COUNT_MAX` is `RetransmitReject(TooMany)`.

mod common;

use codec::*;
use common::{Harness, accepted, event, is_application, limit, message, next};
use engine::testkit::commands;
use gateway_binary::RETRANSMIT_COUNT_MAX;
use gateway_binary::client::{Client, Incoming};

fn request(client: &mut Client, from: u64, count: u32) {
    client
        .send_session(Session::RetransmitRequest(RetransmitRequest {
            from_sequence: Sequence::new(from),
            count: count.into(),
            reserved: Reserved::ZERO,
        }))
        .unwrap();
}

/// Asks for `from ..+ count` and returns the messages replayed (after checking the header).
fn retransmit(client: &mut Client, from: u64, count: u32) -> Vec<Incoming> {
    request(client, from, count);
    match next(client) {
        Incoming::Session(Session::Retransmission(header)) => {
            assert_eq!((header.from_sequence.get(), header.count.get()), (from, count));
        }
        other => panic!("expected a Retransmission, got {other:?}"),
    }
    (0..count).map(|_| next(client)).collect()
}

fn expect_reject(client: &mut Client, from: u64, count: u32) -> RetransmitRejectReason {
    request(client, from, count);
    match next(client) {
        Incoming::Session(Session::RetransmitReject(reject)) => {
            assert_eq!(reject.from_sequence.get(), from);
            reject.reason.get().unwrap()
        }
        other => panic!("expected a RetransmitReject, got {other:?}"),
    }
}

#[test]
fn a_reconnecting_client_recovers_everything_by_retransmission() {
    let harness = Harness::start(2, |_| {});
    let mut maker = harness.client(1);
    let mut received = Vec::new();

    // Five application messages: three acceptances, a cancel, a business reject.
    let mut order_ids = Vec::new();
    for (id, price) in [(1, 600_000), (2, 610_000), (3, 620_000)] {
        maker.send(&limit(Side::Ask, price, 10, id)).unwrap();
        let incoming = next(&mut maker);
        order_ids.push(accepted(incoming).order_id.get());
        received.push(incoming);
    }
    maker.send(&commands::cancel(0, 1, order_ids[2])).unwrap();
    received.push(next(&mut maker));
    maker.send_raw(&message(99, 0, SCHEMA_ID, &[])).unwrap();
    received.push(next(&mut maker));
    assert!(received.iter().all(is_application));
    assert!(matches!(received[3], Incoming::Event(Event::OrderCanceled(_))));
    assert!(matches!(received[4], Incoming::Session(Session::BusinessReject(_))));

    // The maker goes away; meanwhile its first order is filled by someone else.
    drop(maker);
    let mut taker = harness.client(2);
    taker.send(&limit(Side::Bid, 600_000, 10, 1)).unwrap();
    accepted(next(&mut taker));
    let Event::Fill(_) = event(next(&mut taker)) else { panic!("expected the taker's fill") };
    // (The maker's side of the fill is routed before the taker's, so it is in the window now.)

    let mut maker = harness.reconnect(1, 6);
    assert_eq!(maker.ack.next_sequence.get(), 7, "five messages seen, one sent while away");
    assert_eq!(maker.ack.next_expected_sequence.get(), 6, "the client sent five application messages");

    // The gap first: the fill of the resting order, with the taker hidden.
    let missed = retransmit(&mut maker, 6, 1);
    let Event::Fill(fill) = event(missed[0]) else { panic!("expected the maker's fill, got {missed:?}") };
    assert_eq!((fill.maker_order_id.get(), fill.maker_client_order_id.get()), (order_ids[0], 1));
    assert_eq!((fill.quantity_lots.get(), fill.maker_remaining_lots.get()), (10, 0));
    assert_eq!((fill.taker_user_id, fill.taker_order_id), (UserId::ZERO, OrderId::ZERO));

    // Then everything, exactly as it was first sent.
    let everything = retransmit(&mut maker, 1, 6);
    assert_eq!(everything[..5], received[..]);
    assert_eq!(everything[5], missed[0]);
    assert_eq!(retransmit(&mut maker, 2, 3), received[1..4]);

    // The session goes on numbering from 7: a new order, then the whole range again.
    maker.send(&commands::cancel(0, 1, order_ids[1])).unwrap();
    let canceled = next(&mut maker);
    assert!(matches!(canceled, Incoming::Event(Event::OrderCanceled(_))));
    assert_eq!(retransmit(&mut maker, 7, 1), [canceled]);
}

#[test]
fn retransmission_requests_outside_the_window_are_refused() {
    let harness = Harness::start(1, |config| config.retransmit_window = 4);
    let mut client = harness.client(1);
    // Nothing sent yet: every range is out of range.
    assert_eq!(expect_reject(&mut client, 1, 1), RetransmitRejectReason::OutOfRange);

    let mut received = Vec::new();
    for id in 1..=6 {
        client.send(&limit(Side::Bid, 500_000, 1, id)).unwrap();
        received.push(next(&mut client));
    }
    // Six sent, the last four kept (3..=6).
    for (from, count) in [(0, 1), (1, 1), (2, 2), (7, 1), (5, 3), (3, 0), (u64::MAX, 1)] {
        assert_eq!(expect_reject(&mut client, from, count), RetransmitRejectReason::OutOfRange, "{from} +{count}");
    }
    assert_eq!(expect_reject(&mut client, 3, RETRANSMIT_COUNT_MAX + 1), RetransmitRejectReason::TooMany);
    assert_eq!(expect_reject(&mut client, 3, u32::MAX), RetransmitRejectReason::TooMany);
    // Exactly the kept window is fine.
    assert_eq!(retransmit(&mut client, 3, 4), received[2..]);
    assert_eq!(retransmit(&mut client, 6, 1), received[5..]);
    // Rejects and retransmissions are not application messages: the numbering is unchanged.
    client.send(&limit(Side::Bid, 500_000, 1, 7)).unwrap();
    let seventh = next(&mut client);
    assert_eq!(retransmit(&mut client, 7, 1), [seventh]);
}

#[test]
fn heartbeats_carry_the_next_sequence() {
    let harness = Harness::start(1, |_| {});
    let mut client = Client::connect_with(harness.address, &common::secret(1), 1, 500).unwrap();
    for id in 1..=3 {
        client.send(&limit(Side::Bid, 500_000, 1, id)).unwrap();
        accepted(next(&mut client));
    }
    // Idle now: the server's heartbeat says its next application message is the fourth.
    match client.receive().unwrap() {
        Incoming::Session(Session::SequenceHeartbeat(beat)) => assert_eq!(beat.next_sequence.get(), 4),
        other => panic!("expected a heartbeat, got {other:?}"),
    }
}
