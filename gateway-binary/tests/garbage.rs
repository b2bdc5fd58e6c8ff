//! Garbage over real TCP. Broken framing cannot be resynchronised, so a wrong SOFH encoding type
//! or a frame length outside the allowed bounds ends the connection with
//! `Terminate(ProtocolError)`, before or after logon, while the gateway goes on serving everyone
//! else. A well-framed message the gateway cannot use (unknown template, foreign schema, a block
//! shorter than the template's) is a `BusinessReject(MalformedMessage)` numbered like any other
//! application message, and the session goes on. Server-only or logon messages inside a session
//! are protocol errors; a client `Terminate` is answered with `Terminate(Finished)`.

mod common;

use codec::*;
use common::{Harness, Raw, accepted, business_reject, limit, message, new_order, next, secret};
use gateway_binary::client::Incoming;
use std::sync::atomic::Ordering;

#[test]
fn a_wrong_encoding_type_ends_only_that_connection() {
    let harness = Harness::start(3, |_| {});
    let mut bystander = harness.client(1);
    bystander.send(&limit(Side::Bid, 600_000, 1, 1)).unwrap();
    accepted(next(&mut bystander));

    // After logon: a frame whose SOFH says SBE 1.0 big-endian (0x5BE0, the registered value for
    // big-endian SBE) instead of SBE 1.0 little-endian (0xEB50).
    let (mut raw, _) = Raw::logon(harness.address, &secret(2), 5_000);
    let order = limit(Side::Bid, 600_000, 1, 2).to_vec();
    let mut frame = vec![0u8; frame_length(order.len())];
    encode_frame(&order, &mut frame).unwrap();
    assert_eq!(frame[4..6], [0xEB, 0x50], "SBE 1.0 little-endian, the SOFH field big-endian");
    frame[4..6].copy_from_slice(&SOFH_ENCODING_SBE_BE.to_be_bytes());
    raw.write(&frame).unwrap();
    assert_eq!(raw.expect_terminate(), TerminateReason::ProtocolError);

    // Before logon: text instead of a frame.
    let mut raw = Raw::connect(harness.address);
    raw.write(b"GET / HTTP/1.1\r\nHost: exchange\r\n\r\n").unwrap();
    assert_eq!(raw.expect_terminate(), TerminateReason::ProtocolError);

    // Nothing reached the engine from those connections, and everyone else is served.
    bystander.send(&limit(Side::Bid, 600_000, 1, 2)).unwrap();
    assert_eq!(accepted(next(&mut bystander)).client_order_id.get(), 2);
    let mut newcomer = harness.client(3);
    newcomer.send(&limit(Side::Bid, 600_000, 1, 1)).unwrap();
    assert_eq!(accepted(next(&mut newcomer)).user_id.get(), 3);
    // The user whose connection was cut can log on again.
    let mut again = harness.reconnect(2, 1);
    again.send(&limit(Side::Bid, 600_000, 1, 3)).unwrap();
    assert_eq!(accepted(next(&mut again)).client_order_id.get(), 3);
    assert_eq!(harness.gateway().stats().commands.load(Ordering::Relaxed), 4);
}

#[test]
fn frame_lengths_out_of_bounds_are_protocol_errors() {
    let harness = Harness::start(1, |_| {});
    // Above the maximum: declared, not sent (the server must not wait for 4 KiB + 1).
    for length in [FRAME_BYTES_MAX as u32 + 1, u32::MAX] {
        let (mut raw, _) = Raw::logon(harness.address, &secret(1), 5_000);
        let mut header = length.to_be_bytes().to_vec();
        header.extend_from_slice(&SOFH_ENCODING_SBE_LE.to_be_bytes());
        raw.write(&header).unwrap();
        assert_eq!(raw.expect_terminate(), TerminateReason::ProtocolError, "length {length}");
    }
    // Below the minimum (a SOFH and a message header): 6 and 13.
    for length in [0u32, 6, 13] {
        let (mut raw, _) = Raw::logon(harness.address, &secret(1), 5_000);
        let mut frame = length.to_be_bytes().to_vec();
        frame.extend_from_slice(&SOFH_ENCODING_SBE_LE.to_be_bytes());
        frame.resize(14, 0);
        raw.write(&frame).unwrap();
        assert_eq!(raw.expect_terminate(), TerminateReason::ProtocolError, "length {length}");
    }
    // Before logon too.
    let mut raw = Raw::connect(harness.address);
    raw.write(&[0, 0, 0x10, 1, 0xEB, 0x50]).unwrap();
    assert_eq!(raw.expect_terminate(), TerminateReason::ProtocolError);
    // The largest allowed frame is read whole (and refused as a message, not as a frame).
    let (mut raw, _) = Raw::logon(harness.address, &secret(1), 5_000);
    raw.send(&message(999, (FRAME_BYTES_MAX - 14) as u16, SCHEMA_ID, &[0; FRAME_BYTES_MAX - 14]));
    let reject = business_reject(raw.receive().unwrap());
    assert_eq!((reject.reason.get(), reject.ref_template_id.get()), (Ok(RejectReason::MalformedMessage), 999));
}

#[test]
fn undecodable_messages_are_business_rejects_and_the_session_continues() {
    let harness = Harness::start(1, |_| {});
    let mut client = harness.client(1);
    let order = new_order(Side::Bid, 600_000, 1, 7);
    let encoded = Command::NewOrder(order).to_vec();
    let order_block = &encoded[MESSAGE_HEADER_BYTES..];

    // 1. An unknown template inside a valid frame.
    client.send_raw(&message(77, 56, SCHEMA_ID, order_block)).unwrap();
    // 2. A NewOrder whose header declares a block shorter than NewOrder's oldest (56 bytes).
    client.send_raw(&message(NewOrder::TEMPLATE_ID, 40, SCHEMA_ID, &order_block[..40])).unwrap();
    // 3. A NewOrder whose header is right but whose frame ends early.
    client.send_raw(&message(NewOrder::TEMPLATE_ID, 56, SCHEMA_ID, &order_block[..20])).unwrap();
    // 4. Another schema's NewOrder.
    client.send_raw(&message(NewOrder::TEMPLATE_ID, 56, 2, order_block)).unwrap();
    // 5. A session message with a short block.
    client.send_raw(&message(RetransmitRequest::TEMPLATE_ID, 8, SCHEMA_ID, &[1, 0, 0, 0, 0, 0, 0, 0])).unwrap();
    // 6. An event (server → client direction) sent by the client.
    client.send_raw(&Event::OrderAccepted(OrderAccepted::default()).to_vec()).unwrap();
    // 7. A good order: the session still works, and it is the client's 7th message.
    client.send_raw(&Command::NewOrder(order).to_vec()).unwrap();

    let expected_templates = [77, NewOrder::TEMPLATE_ID, NewOrder::TEMPLATE_ID, NewOrder::TEMPLATE_ID, 205, 101];
    for (index, template) in expected_templates.into_iter().enumerate() {
        let reject = business_reject(next(&mut client));
        assert_eq!(reject.reason.get(), Ok(RejectReason::MalformedMessage), "message {}", index + 1);
        assert_eq!(reject.client_sequence.get(), index as u64 + 1, "numbered in the session");
        assert_eq!(reject.ref_template_id.get(), template);
        assert_eq!(reject.client_order_id, ClientOrderId::ZERO, "nothing is read from a message that failed");
    }
    assert_eq!(accepted(next(&mut client)).client_order_id.get(), 7);

    // A longer block than this version knows (a newer client) is accepted, its tail ignored.
    let mut longer = order_block.to_vec();
    longer[8] = 8; // client order id 8
    longer.extend_from_slice(&[0xAB; 16]);
    client.send_raw(&message(NewOrder::TEMPLATE_ID, longer.len() as u16, SCHEMA_ID, &longer)).unwrap();
    assert_eq!(accepted(next(&mut client)).client_order_id.get(), 8);

    assert_eq!(harness.gateway().stats().business_rejects.load(Ordering::Relaxed), 6);
    drop(client);
    let again = harness.reconnect(1, 9);
    assert_eq!(again.ack.next_expected_sequence.get(), 9, "8 client messages, rejected ones included");
    assert_eq!(again.ack.next_sequence.get(), 9, "6 rejects and 2 acceptances");
}

#[test]
fn out_of_protocol_session_messages_end_the_session() {
    let harness = Harness::start(1, |_| {});
    let server_only = [
        Session::NegotiateResponse(NegotiateResponse::default()),
        Session::EstablishAck(EstablishAck::default()),
        Session::Retransmission(Retransmission::default()),
        Session::RetransmitReject(RetransmitReject::default()),
        Session::BusinessReject(BusinessReject::default()),
        // Logon messages again.
        Session::Negotiate(Negotiate::default()),
        Session::Establish(Establish::default()),
    ];
    for message in server_only {
        let (mut raw, _) = Raw::logon(harness.address, &secret(1), 5_000);
        raw.send_session(message);
        assert_eq!(raw.expect_terminate(), TerminateReason::ProtocolError, "{}", message.name());
    }
    // The client's own Terminate: any reason, answered with Finished.
    let (mut raw, _) = Raw::logon(harness.address, &secret(1), 5_000);
    raw.send_session(Session::Terminate(Terminate {
        reason: TerminateReason::KeepAliveTimeout.into(),
        ..Default::default()
    }));
    assert_eq!(raw.expect_terminate(), TerminateReason::Finished);
    // A heartbeat is fine and answered with nothing.
    let mut client = harness.client(1);
    client.send_session(Session::SequenceHeartbeat(SequenceHeartbeat { next_sequence: Sequence::new(1) })).unwrap();
    client.send(&limit(Side::Bid, 600_000, 1, 1)).unwrap();
    assert!(matches!(next(&mut client), Incoming::Event(Event::OrderAccepted(_))));
}
