//! The per-session rate limit over real TCP: a token bucket of `burst` messages refilled at
//! `messages_per_second`. Application messages beyond it get `BusinessReject(Throttled)` (with
//! their client sequence and client order id, and without reaching the engine or using up the id);
//! the bucket refills with time, not with a new connection (it belongs to the session); more than
//! `throttle_strikes_max` throttled messages in a row end the session with `Terminate(Throttled)`,
//! after every message sent before it. Session-layer messages (retransmission requests) are not
//! throttled.

mod common;

use codec::*;
use common::{Harness, Raw, accepted, business_reject, is_application, limit, next, secret};
use gateway_binary::client::Incoming;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Sends `orders` in one write, so the gateway reads them within microseconds of each other.
fn send_all(raw: &mut Raw, orders: &[Command]) {
    let mut bytes = Vec::new();
    for order in orders {
        let message = order.to_vec();
        let mut frame = vec![0; frame_length(message.len())];
        encode_frame(&message, &mut frame).unwrap();
        bytes.extend_from_slice(&frame);
    }
    raw.write(&bytes).unwrap();
}

/// Receives `count` application messages; returns the business rejects (sorted by client
/// sequence) and the client order ids accepted (sorted).
fn collect(raw: &mut Raw, count: usize) -> (Vec<BusinessReject>, Vec<u64>) {
    let (mut rejects, mut accepted_ids) = (Vec::new(), Vec::new());
    while rejects.len() + accepted_ids.len() < count {
        match raw.receive().expect("connection open") {
            Incoming::Session(Session::BusinessReject(reject)) => rejects.push(reject),
            Incoming::Event(Event::OrderAccepted(accepted)) => accepted_ids.push(accepted.client_order_id.get()),
            Incoming::Session(Session::SequenceHeartbeat(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    rejects.sort_by_key(|r| r.client_sequence.get());
    accepted_ids.sort_unstable();
    (rejects, accepted_ids)
}

#[test]
fn messages_beyond_the_rate_are_throttled_and_the_bucket_refills() {
    let harness = Harness::start(1, |config| {
        config.messages_per_second = 10;
        config.burst = 3;
    });
    let (mut raw, _) = Raw::logon(harness.address, &secret(1), 5_000);
    let orders: Vec<Command> = (1..=6).map(|id| limit(Side::Bid, 500_000, 1, id)).collect();
    send_all(&mut raw, &orders);
    let (rejects, accepted_ids) = collect(&mut raw, 6);
    assert_eq!(accepted_ids, [1, 2, 3], "the burst");
    for (reject, id) in rejects.iter().zip(4..) {
        assert_eq!(reject.reason.get(), Ok(RejectReason::Throttled));
        assert_eq!((reject.client_sequence.get(), reject.client_order_id.get()), (id, id));
        assert_eq!(reject.ref_template_id.get(), NewOrder::TEMPLATE_ID);
    }
    assert_eq!(harness.gateway().stats().commands.load(Ordering::Relaxed), 3);

    // Session-layer messages are not counted: a retransmission is served at once.
    raw.send_session(Session::RetransmitRequest(RetransmitRequest {
        from_sequence: Sequence::new(1),
        count: 1.into(),
        reserved: Reserved::ZERO,
    }));
    assert!(matches!(raw.receive(), Some(Incoming::Session(Session::Retransmission(_)))));
    assert!(raw.receive().is_some_and(|m| is_application(&m)));

    // 250 ms at 10 per second: two tokens. The throttled ids were not used up.
    std::thread::sleep(Duration::from_millis(250));
    send_all(&mut raw, &orders[3..]);
    let (rejects, accepted_ids) = collect(&mut raw, 3);
    assert_eq!(accepted_ids, [4, 5]);
    assert_eq!(rejects.len(), 1);
    assert_eq!((rejects[0].reason.get(), rejects[0].client_order_id.get()), (Ok(RejectReason::Throttled), 6));
}

#[test]
fn persistent_abuse_ends_the_session() {
    let harness = Harness::start(1, |config| {
        config.messages_per_second = 4;
        config.burst = 1;
        config.throttle_strikes_max = 3;
    });
    let (mut raw, _) = Raw::logon(harness.address, &secret(1), 5_000);
    raw.send_command(&limit(Side::Bid, 500_000, 1, 1));
    assert_eq!(accepted(raw.receive().unwrap()).client_order_id.get(), 1);
    // Three strikes are rejected; the fourth in a row ends the session. Every reject sent
    // before the Terminate arrives before it.
    let orders: Vec<Command> = (2..=5).map(|id| limit(Side::Bid, 500_000, 1, id)).collect();
    send_all(&mut raw, &orders);
    let (before, reason) = raw.until_terminate();
    assert_eq!(reason, TerminateReason::Throttled);
    let sequences: Vec<u64> = before
        .into_iter()
        .map(|m| {
            let reject = business_reject(m);
            assert_eq!(reject.reason.get(), Ok(RejectReason::Throttled));
            reject.client_sequence.get()
        })
        .collect();
    assert_eq!(sequences, [2, 3, 4]);

    // The session survives its connection: the rejects are kept, and the client's fifth
    // message was counted.
    let mut client = harness.reconnect(1, 5);
    assert_eq!((client.ack.next_sequence.get(), client.ack.next_expected_sequence.get()), (5, 6));
    // After a pause (a token per 250 ms) an order goes through again.
    std::thread::sleep(Duration::from_millis(300));
    client.send(&limit(Side::Bid, 500_000, 1, 6)).unwrap();
    assert_eq!(accepted(next(&mut client)).client_order_id.get(), 6);
}

#[test]
fn the_rate_limit_belongs_to_the_session_not_the_connection() {
    let harness = Harness::start(1, |config| {
        config.messages_per_second = 1;
        config.burst = 2;
    });
    let (mut raw, _) = Raw::logon(harness.address, &secret(1), 5_000);
    send_all(&mut raw, &[limit(Side::Bid, 500_000, 1, 1), limit(Side::Bid, 500_000, 1, 2)]);
    assert_eq!(collect(&mut raw, 2).1, [1, 2]);
    drop(raw);
    // A new connection does not bring a new burst.
    let mut client = harness.reconnect(1, 3);
    client.send(&limit(Side::Bid, 500_000, 1, 3)).unwrap();
    let reject = business_reject(next(&mut client));
    assert_eq!((reject.reason.get(), reject.client_order_id.get()), (Ok(RejectReason::Throttled), 3));
}
