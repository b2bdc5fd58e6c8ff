//! Property-based fuzzing of the parser: on any byte stream (random bytes, and valid messages
//! with random corruption) it never panics, always makes progress (no hang) and only asks for
//! more bytes while the buffered input is within one maximal message (bounded memory). Also over
//! TCP: garbage before a Logon does not stop a session from logging on.

mod common;

use common::{Fix, Harness, frame};
use gateway_fix::parser::{MESSAGE_BYTES_MAX, Parsed, parse};
use proptest::prelude::*;

/// Largest buffer the parser may leave waiting for more bytes: the header around a maximal body.
const PENDING_MAX: usize = MESSAGE_BYTES_MAX + 32;

/// Runs the parser over `bytes` as a receive loop would; returns the messages found.
fn drain(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    let mut messages = 0;
    for _ in 0..=bytes.len() {
        match parse(rest) {
            Parsed::Complete(message, used) => {
                assert!(used > 0 && used <= rest.len());
                assert!(!message.msg_type().is_empty());
                messages += 1;
                rest = &rest[used..];
            }
            Parsed::Garbled(skip) => {
                assert!(skip > 0 && skip <= rest.len(), "skip {skip} of {}", rest.len());
                rest = &rest[skip..];
            }
            Parsed::Incomplete => {
                assert!(rest.len() < PENDING_MAX, "waiting with {} bytes buffered", rest.len());
                return messages;
            }
        }
    }
    panic!("no progress");
}

fn valid(seq: u64, text: &str) -> Vec<u8> {
    frame(&[
        (35, "1".to_string()),
        (49, "A".into()),
        (56, "B".into()),
        (34, seq.to_string()),
        (52, "20260101-00:00:00.000".into()),
        (112, text.into()),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..8192)) {
        drain(&bytes);
    }

    #[test]
    fn fix_like_bytes(parts in proptest::collection::vec(
        prop_oneof![
            Just(b"8=FIX.4.4\x01".to_vec()),
            Just(b"8=FIXT.1.1\x01".to_vec()),
            Just(b"8=FIXT.1".to_vec()),
            Just(b"9=".to_vec()),
            Just(b"35=D\x01".to_vec()),
            Just(b"10=".to_vec()),
            Just(vec![1u8]),
            proptest::collection::vec(b'0'..=b'9', 1..6),
            proptest::collection::vec(any::<u8>(), 0..16),
        ],
        0..200,
    )) {
        drain(&parts.concat());
    }

    #[test]
    fn corrupted_messages_around_valid_ones(
        flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..4),
        text in "[a-z]{1,20}",
    ) {
        let mut corrupted = valid(1, &text);
        for (index, byte) in flips {
            let n = corrupted.len();
            corrupted[index % n] = byte;
        }
        let mut stream = valid(1, "before");
        stream.extend_from_slice(&corrupted);
        stream.extend_from_slice(&valid(2, "after"));
        let found = drain(&stream);
        // The messages around the corruption are never lost... unless the corruption itself
        // declares a longer body that swallows the next message; at least the first survives.
        prop_assert!(found >= 1);
    }
}

#[test]
fn a_huge_declared_length_is_garbled_not_awaited() {
    let bytes = b"8=FIX.4.4\x019=99999\x0135=0\x01";
    assert!(matches!(parse(bytes), Parsed::Garbled(_)));
}

#[test]
fn garbage_before_logon_over_tcp() {
    let harness = Harness::start(1, |_| {});
    let mut fix = Fix::connect(harness.address, 1);
    let mut noise: Vec<u8> = (0..20_000u32).map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    noise.extend_from_slice(b"8=FIX.4.4\x019=12\x01");
    fix.write(&noise).unwrap();
    let logon = fix.logon(30, true);
    assert_eq!(logon.msg_type(), "A", "{logon:?}");
    assert!(harness.stat(|s| &s.garbled) >= 1);
}
