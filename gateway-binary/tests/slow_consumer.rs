//! A client that stops reading, over real TCP. Once its socket buffers are full and its outbound
//! queue overflows, the gateway cuts it (`SlowConsumer`) without blocking anything else: its
//! connection slot is released even though the client keeps the socket open, its session is
//! detached with every message kept, and it can log on again and recover by retransmission.

mod common;

use codec::*;
use common::{Harness, Raw, business_reject, message, next, secret, wait_until};
use gateway_binary::client::Incoming;
use std::io::Write;
use std::time::Duration;

const WINDOW: u32 = 1_000;

/// A connection whose receive buffer is as small as the kernel allows, so that it fills fast.
fn small_buffer_connection(harness: &Harness) -> Raw {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4_096).unwrap();
        socket.connect(harness.address).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    Raw::from_stream(stream)
}

#[test]
fn a_client_that_stops_reading_is_cut_and_its_session_survives() {
    let harness = Harness::start(2, |config| {
        config.retransmit_window = WINDOW as usize;
        config.outbound_queue_max = 2 * WINDOW as usize;
    });
    let mut raw = small_buffer_connection(&harness);
    raw.logon_on(&secret(1), 60_000);
    // Fill the window with business rejects (reading them, to keep up for now).
    for _ in 0..WINDOW {
        raw.send(&message(99, 0, SCHEMA_ID, &[]));
    }
    for _ in 0..WINDOW {
        business_reject(raw.receive().unwrap());
    }
    // Now ask for the whole window again and again without reading: each request is 30 bytes in
    // and ~38 KB out. The kernel buffers fill, the writer blocks, the queue overflows.
    let request = {
        let message = Session::RetransmitRequest(RetransmitRequest {
            from_sequence: Sequence::new(1),
            count: WINDOW.into(),
            reserved: Reserved::ZERO,
        })
        .to_vec();
        let mut frame = vec![0; frame_length(message.len())];
        encode_frame(&message, &mut frame).unwrap();
        frame
    };
    // Paced, so that the writer keeps emptying the queue into the socket until the socket is
    // full (rather than the queue overflowing while the writer is merely busy).
    raw.stream.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    for _ in 0..300 {
        if raw.stream.write_all(&request).is_err() {
            break; // the server stopped reading
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // The connection is released while the client still holds its socket open, unread.
    assert!(
        wait_until(Duration::from_secs(5), || harness.connections() == 0),
        "a connection whose client does not read is never released ({} open)",
        harness.connections()
    );

    // Everyone else was served meanwhile, and the session is intact.
    let mut other = harness.client(2);
    other.send(&common::limit(Side::Bid, 500_000, 1, 1)).unwrap();
    assert!(matches!(next(&mut other), Incoming::Event(Event::OrderAccepted(_))));
    let mut again = harness.reconnect(1, u64::from(WINDOW) + 1);
    assert_eq!(again.ack.next_sequence.get(), u64::from(WINDOW) + 1);
    again
        .send_session(Session::RetransmitRequest(RetransmitRequest {
            from_sequence: Sequence::new(u64::from(WINDOW)),
            count: 1.into(),
            reserved: Reserved::ZERO,
        }))
        .unwrap();
    assert!(matches!(next(&mut again), Incoming::Session(Session::Retransmission(_))));
    assert_eq!(business_reject(next(&mut again)).client_sequence.get(), u64::from(WINDOW));
    drop(raw);
}
