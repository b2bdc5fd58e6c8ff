//! Many sessions at once over real TCP: 40 threads each log on as their own user and place,
//! partly cancel and mass-cancel orders. Every session receives only its own user's reports, in
//! the order of its commands, and its numbering is gap-free: a retransmission of everything it
//! received replays exactly those messages, and nothing exists beyond them.

mod common;

use codec::*;
use common::{Harness, next};
use engine::testkit::commands;
use gateway_binary::client::{Client, Incoming};
use std::sync::Barrier;

const SESSIONS: u64 = 40;
const ORDERS: u64 = 5;

fn session(harness: &Harness, user: u64, start: &Barrier) {
    // Everyone logs on at the same moment, then works at full speed.
    start.wait();
    let mut client = harness.client(user);
    let mut received = Vec::new();
    let mut receive = |client: &mut Client| {
        let incoming = next(client);
        received.push(incoming);
        match incoming {
            Incoming::Event(event) => event,
            other => panic!("user {user}: unexpected {other:?}"),
        }
    };
    // Bids only, so nobody trades with anybody: every report is about the session's own orders.
    let mut order_ids = Vec::new();
    for id in 1..=ORDERS {
        client.send(&common::limit(Side::Bid, 400_000 + user * 100 + id, 1 + id, id)).unwrap();
        let Event::OrderAccepted(accepted) = receive(&mut client) else { panic!("user {user}: expected acceptance") };
        assert_eq!((accepted.user_id.get(), accepted.client_order_id.get()), (user, id));
        order_ids.push(accepted.order_id);
    }
    for order_id in &order_ids[..2] {
        client.send(&commands::cancel(0, 1, order_id.get())).unwrap();
        let Event::OrderCanceled(canceled) = receive(&mut client) else { panic!("user {user}: expected a cancel") };
        assert_eq!((canceled.user_id.get(), canceled.order_id), (user, *order_id));
    }
    client.send(&commands::mass_cancel(0, 1, SideFilter::Both)).unwrap();
    for order_id in &order_ids[2..] {
        let Event::OrderCanceled(canceled) = receive(&mut client) else { panic!("user {user}: expected a cancel") };
        assert_eq!((canceled.user_id.get(), canceled.order_id), (user, *order_id));
    }
    let Event::MassCancelReport(report) = receive(&mut client) else { panic!("user {user}: expected the report") };
    assert_eq!((report.user_id.get(), report.canceled_count.get()), (user, 3));

    // Gap-free: messages 1..=n are exactly what was received, and there is no n + 1.
    let count = received.len() as u32;
    assert_eq!(count as u64, 2 * ORDERS + 1);
    client
        .send_session(Session::RetransmitRequest(RetransmitRequest {
            from_sequence: Sequence::new(1),
            count: count.into(),
            reserved: Reserved::ZERO,
        }))
        .unwrap();
    assert!(matches!(next(&mut client), Incoming::Session(Session::Retransmission(_))), "user {user}");
    let replayed: Vec<Incoming> = (0..count).map(|_| next(&mut client)).collect();
    assert_eq!(replayed, received, "user {user}");
    client
        .send_session(Session::RetransmitRequest(RetransmitRequest {
            from_sequence: Sequence::new(u64::from(count) + 1),
            count: 1.into(),
            reserved: Reserved::ZERO,
        }))
        .unwrap();
    match next(&mut client) {
        Incoming::Session(Session::RetransmitReject(reject)) => {
            assert_eq!(reject.reason.get(), Ok(RetransmitRejectReason::OutOfRange), "user {user}");
        }
        other => panic!("user {user}: expected RetransmitReject, got {other:?}"),
    }
}

#[test]
fn forty_sessions_get_only_their_own_reports_without_gaps() {
    let harness = Harness::start(SESSIONS, |_| {});
    let start = Barrier::new(SESSIONS as usize);
    std::thread::scope(|scope| {
        for user in 1..=SESSIONS {
            let (harness, start) = (&harness, &start);
            scope.spawn(move || session(harness, user, start));
        }
    });
    let stats = harness.gateway().stats();
    assert_eq!(stats.logons.load(std::sync::atomic::Ordering::Relaxed), SESSIONS);
    assert_eq!(stats.commands.load(std::sync::atomic::Ordering::Relaxed), SESSIONS * (ORDERS + 3));
    assert_eq!(stats.business_rejects.load(std::sync::atomic::Ordering::Relaxed), 0);
}
