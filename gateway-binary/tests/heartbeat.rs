//! Keep-alive over real TCP, with the shortest interval the server grants (a request below
//! `KEEP_ALIVE_MS_MIN` is raised to it): the server sends `SequenceHeartbeat` after an interval
//! without application messages; a client that keeps sending heartbeats stays logged on however
//! long it is otherwise idle; a client silent for more than twice the interval gets
//! `Terminate(KeepAliveTimeout)`, and its session can be resumed.

mod common;

use codec::*;
use common::{Harness, Raw, accepted, next, secret};
use gateway_binary::KEEP_ALIVE_MS_MIN;
use gateway_binary::client::{Client, Incoming};
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(KEEP_ALIVE_MS_MIN as u64);

#[test]
fn a_silent_client_gets_heartbeats_then_is_cut() {
    let harness = Harness::start(1, |_| {});
    // Asks for 100 ms; gets the minimum.
    let started = Instant::now();
    let (mut raw, ack) = Raw::logon(harness.address, &secret(1), 100);
    assert_eq!(ack.keep_alive_ms.get(), KEEP_ALIVE_MS_MIN);

    let mut heartbeats = Vec::new();
    let terminate = loop {
        match raw.receive() {
            Some(Incoming::Session(Session::SequenceHeartbeat(beat))) => heartbeats.push((started.elapsed(), beat)),
            Some(Incoming::Session(Session::Terminate(terminate))) => break terminate,
            other => panic!("expected heartbeats then a Terminate, got {other:?}"),
        }
    };
    let silent = started.elapsed();
    assert_eq!(terminate.reason.get(), Ok(TerminateReason::KeepAliveTimeout));
    raw.assert_closed();
    assert!(silent > 2 * INTERVAL, "cut after {silent:?}, before twice the interval");
    assert!(silent < 4 * INTERVAL, "cut only after {silent:?}");
    assert!(!heartbeats.is_empty(), "the server sends heartbeats while idle");
    let (first, beat) = heartbeats[0];
    assert!(first >= INTERVAL - Duration::from_millis(50), "first heartbeat after {first:?}");
    assert_eq!(beat.next_sequence.get(), 1);

    // The session is not lost with its connection.
    let client = harness.reconnect(1, 1);
    assert_eq!(client.ack.next_sequence.get(), 1);
}

#[test]
fn a_client_sending_heartbeats_stays_logged_on() {
    let harness = Harness::start(1, |_| {});
    let mut client = Client::connect_with(harness.address, &secret(1), 1, 100).unwrap();
    assert_eq!(client.ack.keep_alive_ms.get(), KEEP_ALIVE_MS_MIN);
    client.set_read_timeout(Some(INTERVAL / 5)).unwrap();
    let started = Instant::now();
    let mut server_heartbeats = 0;
    // Idle for well over twice the interval, sending a heartbeat every 40% of it.
    while started.elapsed() < 3 * INTERVAL {
        client.send_session(Session::SequenceHeartbeat(SequenceHeartbeat { next_sequence: Sequence::new(1) })).unwrap();
        let deadline = Instant::now() + INTERVAL * 2 / 5;
        while Instant::now() < deadline {
            match client.receive() {
                Ok(Incoming::Session(Session::SequenceHeartbeat(_))) => server_heartbeats += 1,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => break, // read timeout
            }
        }
    }
    assert!(server_heartbeats >= 2, "{server_heartbeats} server heartbeats in {:?}", started.elapsed());
    client.set_read_timeout(Some(common::RECEIVE_TIMEOUT)).unwrap();
    client.send(&common::limit(Side::Bid, 500_000, 1, 1)).unwrap();
    assert_eq!(accepted(next(&mut client)).client_order_id.get(), 1);
}
