//! Fuzzes every decoder of the codec: `Command::decode`, `Event::decode`, `Session::decode`,
//! `decode_journaled` (a journal payload or a Kafka commands-topic record: a command and an
//! optional gateway origin) and `FrameDecoder::next_frame` (and the messages inside complete
//! frames) must never panic, and whatever decodes must re-encode to the same known block.

#![no_main]

use codec::{Command, DecodeError, Event, FrameDecoder, MESSAGE_HEADER_BYTES, Session};
use libfuzzer_sys::fuzz_target;

/// Decodes `bytes` as a command, as an event and as a session message and checks what decodes.
fn decode_messages(bytes: &[u8]) {
    let mut decoded = 0;
    if let Ok((command, consumed)) = Command::decode(bytes) {
        decoded += 1;
        check(bytes, &command.to_vec(), consumed);
        let _ = command.user_id();
    }
    if let Ok((event, consumed)) = Event::decode(bytes) {
        decoded += 1;
        check(bytes, &event.to_vec(), consumed);
        let _ = event.sequence();
    }
    if let Ok((session, consumed)) = Session::decode(bytes) {
        decoded += 1;
        check(bytes, &session.to_vec(), consumed);
    }
    assert!(decoded <= 1, "the envelopes' template ids overlap");
    if let Ok((command, tag)) = codec::decode_journaled(bytes) {
        // What decodes re-encodes (in this version's layout) to a payload that decodes the same.
        let mut out = [0u8; codec::origin::JOURNALED_BYTES_MAX];
        let written = codec::encode_journaled(&command, tag, &mut out).expect("a decoded command fits");
        assert_eq!(codec::decode_journaled(&out[..written]), Ok((command, tag)));
    }
}

/// A decoded message re-encodes to the header's template and the same known block. A block
/// shorter than this schema version's (an older version's `NewOrder`, 56 bytes before version 3)
/// decodes with the appended fields zero, so only its own bytes compare and the rest re-encode as
/// zeros.
fn check(input: &[u8], encoded: &[u8], consumed: usize) {
    assert!(consumed <= input.len());
    assert_eq!(encoded[2..6], input[2..6], "template and schema ids");
    let known = encoded.len() - MESSAGE_HEADER_BYTES;
    let block = usize::from(u16::from_le_bytes([input[0], input[1]])).min(known);
    assert!(consumed >= MESSAGE_HEADER_BYTES + block);
    assert_eq!(encoded[MESSAGE_HEADER_BYTES..][..block], input[MESSAGE_HEADER_BYTES..][..block]);
    assert!(encoded[MESSAGE_HEADER_BYTES + block..].iter().all(|&byte| byte == 0), "appended fields absent: zero");
}

fuzz_target!(|data: &[u8]| {
    decode_messages(data);

    // Treat the input as a TCP stream: consume frame after frame until one is incomplete or bad.
    let mut rest = data;
    loop {
        match FrameDecoder::next_frame(rest) {
            Ok(Some((message, length))) => {
                assert!(length <= rest.len() && !message.is_empty());
                decode_messages(message);
                rest = &rest[length..];
            }
            Ok(None) => break,
            Err(DecodeError::WrongEncodingType(_) | DecodeError::InvalidFrameLength(_)) => break,
            Err(other) => panic!("unexpected frame error {other:?}"),
        }
    }
});
