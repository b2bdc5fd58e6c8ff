//! Logon over real TCP, driven by hand: an unknown key, a signature over the wrong nonce or by the
//! wrong key, an `Establish` without `Negotiate` and an application message before logon all end
//! with `Terminate(Unauthenticated)` and a closed connection; a second connection for a logged-on
//! key gets `Terminate(DuplicateSession)` while the first keeps working; a revoked key cannot log
//! on; the granted keep-alive is the clamped one. Every refusal is counted. Frames written together
//! with `Establish` follow its verdict in order (in `thread` mode the signature is checked off the
//! I/O thread meanwhile: gateway-binary/src/logon_verifier.rs has the tests that hold it there).

mod common;

use codec::*;
use common::{Harness, Raw, accepted, limit, secret, sign};
use gateway_binary::client::{Client, Incoming, api_key_of};
use gateway_binary::session::logon_payload;
use gateway_binary::{KEEP_ALIVE_MS_MAX, KEEP_ALIVE_MS_MIN};
use std::sync::atomic::Ordering;

fn logon_failures(harness: &Harness) -> u64 {
    harness.gateway().stats().logon_failures.load(Ordering::Relaxed)
}

#[test]
fn an_unknown_key_is_refused_at_negotiate() {
    let harness = Harness::start(1, |_| {});
    let mut raw = Raw::connect(harness.address);
    raw.send_session(Session::Negotiate(Negotiate { api_key: api_key_of(&[9; 32]), timestamp_ns: TimestampNs::ZERO }));
    assert_eq!(raw.expect_terminate(), TerminateReason::Unauthenticated);
    assert_eq!(logon_failures(&harness), 1);
    // Through the library client too.
    assert!(Client::connect(harness.address, &[9; 32], 1).is_err());
    assert_eq!(logon_failures(&harness), 2);
}

#[test]
fn bad_signatures_are_refused() {
    let harness = Harness::start(2, |_| {});
    let key = api_key_of(&secret(1));

    // Signed correctly, but over another nonce than the one the server sent (a replayed logon).
    let mut raw = Raw::connect(harness.address);
    let nonce = raw.negotiate(key);
    let mut wrong_nonce = nonce;
    wrong_nonce[0] ^= 1;
    raw.establish(sign(&secret(1), &logon_payload(&wrong_nonce, &key)), 5_000);
    assert_eq!(raw.expect_terminate(), TerminateReason::Unauthenticated);

    // The right payload signed by another user's key.
    let mut raw = Raw::connect(harness.address);
    let nonce = raw.negotiate(key);
    raw.establish(sign(&secret(2), &logon_payload(&nonce, &key)), 5_000);
    assert_eq!(raw.expect_terminate(), TerminateReason::Unauthenticated);

    // The payload without its context prefix.
    let mut raw = Raw::connect(harness.address);
    let nonce = raw.negotiate(key);
    let unprefixed = [&nonce[..], &key.0[..]].concat();
    raw.establish(sign(&secret(1), &unprefixed), 5_000);
    assert_eq!(raw.expect_terminate(), TerminateReason::Unauthenticated);

    // Zeros.
    let mut raw = Raw::connect(harness.address);
    raw.negotiate(key);
    raw.establish([0; 64], 5_000);
    assert_eq!(raw.expect_terminate(), TerminateReason::Unauthenticated);

    // Something else than Establish after Negotiate.
    let mut raw = Raw::connect(harness.address);
    raw.negotiate(key);
    raw.send_command(&limit(Side::Bid, 600_000, 1, 1));
    assert_eq!(raw.expect_terminate(), TerminateReason::Unauthenticated);

    assert_eq!(logon_failures(&harness), 5);
    assert_eq!(harness.gateway().stats().logons.load(Ordering::Relaxed), 0);
    // None of this left a session behind: the key logs on normally.
    let mut client = harness.client(1);
    client.send(&limit(Side::Bid, 600_000, 1, 1)).unwrap();
    assert_eq!(accepted(client.receive_application().unwrap()).user_id.get(), 1);
}

#[test]
fn messages_before_logon_are_refused() {
    let harness = Harness::start(1, |_| {});
    // An order as the very first message: nothing reaches the engine.
    let mut raw = Raw::connect(harness.address);
    raw.send_command(&limit(Side::Bid, 600_000, 1, 1));
    assert_eq!(raw.expect_terminate(), TerminateReason::Unauthenticated);
    // Establish without Negotiate (no nonce was issued).
    let mut raw = Raw::connect(harness.address);
    raw.establish([0; 64], 5_000);
    assert_eq!(raw.expect_terminate(), TerminateReason::Unauthenticated);
    // A session message that only the server sends.
    let mut raw = Raw::connect(harness.address);
    raw.send_session(Session::SequenceHeartbeat(SequenceHeartbeat { next_sequence: Sequence::new(1) }));
    assert_eq!(raw.expect_terminate(), TerminateReason::Unauthenticated);
    assert_eq!(harness.gateway().stats().commands.load(Ordering::Relaxed), 0);
}

#[test]
fn a_second_connection_for_a_logged_on_key_is_refused_and_the_first_keeps_working() {
    let harness = Harness::start(1, |_| {});
    let mut first = harness.client(1);

    let mut second = Raw::connect(harness.address);
    let nonce = second.negotiate(api_key_of(&secret(1)));
    second.establish(sign(&secret(1), &logon_payload(&nonce, &api_key_of(&secret(1)))), 5_000);
    assert_eq!(second.expect_terminate(), TerminateReason::DuplicateSession);

    first.send(&limit(Side::Bid, 600_000, 1, 1)).unwrap();
    assert_eq!(accepted(first.receive_application().unwrap()).client_order_id.get(), 1);

    // Once the first says goodbye, the key can log on again, into the same session.
    first
        .send_session(Session::Terminate(Terminate {
            reason: TerminateReason::Finished.into(),
            reserved: Reserved::ZERO,
        }))
        .unwrap();
    match first.receive() {
        Ok(Incoming::Session(Session::Terminate(t))) => assert_eq!(t.reason.get(), Ok(TerminateReason::Finished)),
        other => panic!("expected Terminate(Finished), got {other:?}"),
    }
    let again = Client::connect(harness.address, &secret(1), 2).unwrap();
    assert_eq!((again.ack.next_sequence.get(), again.ack.next_expected_sequence.get()), (2, 2));
}

#[test]
fn a_revoked_key_cannot_log_on() {
    let harness = Harness::start(1, |_| {});
    drop(harness.client(1));
    harness.credentials.revoke(&api_key_of(&secret(1)));
    let mut raw = Raw::connect(harness.address);
    raw.send_session(Session::Negotiate(Negotiate {
        api_key: api_key_of(&secret(1)),
        timestamp_ns: TimestampNs::ZERO,
    }));
    assert_eq!(raw.expect_terminate(), TerminateReason::Unauthenticated);
}

#[test]
fn the_keep_alive_granted_is_clamped() {
    let harness = Harness::start(3, |_| {});
    let (_a, ack) = Raw::logon(harness.address, &secret(1), 1);
    assert_eq!(ack.keep_alive_ms.get(), KEEP_ALIVE_MS_MIN);
    let (_b, ack) = Raw::logon(harness.address, &secret(2), u32::MAX);
    assert_eq!(ack.keep_alive_ms.get(), KEEP_ALIVE_MS_MAX);
    let (_c, ack) = Raw::logon(harness.address, &secret(3), 1_234);
    assert_eq!((ack.keep_alive_ms.get(), ack.user_id.get()), (1_234, 3));
}

/// Frames written together with `Establish` are handled after the logon's verdict, in order, the
/// same in both I/O modes (in `thread` mode the signature is checked on the verifier thread while
/// the rest waits): after a good signature `EstablishAck` then the orders' answers; after a bad
/// one `Terminate(Unauthenticated)` alone, and nothing reaches the engine.
#[test]
fn frames_sent_with_establish_follow_its_verdict() {
    let harness = Harness::start(1, |_| {});
    let key = api_key_of(&secret(1));
    let framed = |message: Vec<u8>| {
        let mut frame = vec![0; frame_length(message.len())];
        encode_frame(&message, &mut frame).unwrap();
        frame
    };
    let establish = |signature: [u8; 64]| {
        framed(
            Session::Establish(Establish {
                signature: FixedBytes(signature),
                next_expected_sequence: Sequence::new(1),
                keep_alive_ms: 5_000u32.into(),
                reserved: Reserved::ZERO,
            })
            .to_vec(),
        )
    };
    let order = |client_order_id| framed(limit(Side::Bid, 600_000, 1, client_order_id).to_vec());

    let mut refused = Raw::connect(harness.address);
    refused.negotiate(key);
    refused.write(&[establish([0; 64]), order(1)].concat()).unwrap();
    assert_eq!(refused.expect_terminate(), TerminateReason::Unauthenticated);
    assert_eq!(harness.gateway().stats().commands.load(Ordering::Relaxed), 0);

    let mut raw = Raw::connect(harness.address);
    let nonce = raw.negotiate(key);
    raw.write(&[establish(sign(&secret(1), &logon_payload(&nonce, &key))), order(1), order(2)].concat()).unwrap();
    match raw.receive() {
        Some(Incoming::Session(Session::EstablishAck(ack))) => assert_eq!(ack.user_id.get(), 1),
        other => panic!("expected EstablishAck, got {other:?}"),
    }
    for client_order_id in 1..=2 {
        assert_eq!(accepted(raw.receive().unwrap()).client_order_id.get(), client_order_id);
    }
}
