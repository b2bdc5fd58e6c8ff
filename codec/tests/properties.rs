//! Property-based tests (proptest) of the codec: `Command::decode`, `Event::decode`,
//! `Session::decode` and `FrameDecoder::next_frame` never panic on arbitrary bytes (up to ~300 bytes, and on inputs that
//! start with a plausible header so the block paths are reached), every error they return is
//! consistent with the input, and every message round-trips encode → decode for arbitrary field
//! values (including unknown enum codes), alone and as SOFH frames in a stream read in pieces.

#[macro_use]
mod common;

use codec::*;
use proptest::collection::vec;
use proptest::prelude::*;
use zerocopy::FromBytes;
use zerocopy::little_endian::{U16, U32};

/// A command, an event or a session message, so every message can go through one loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Any {
    Command(Command),
    Event(Event),
    Session(Session),
}

impl Any {
    fn to_vec(self) -> Vec<u8> {
        match self {
            Any::Command(m) => m.to_vec(),
            Any::Event(m) => m.to_vec(),
            Any::Session(m) => m.to_vec(),
        }
    }

    fn encode(&self, out: &mut [u8]) -> Option<usize> {
        match self {
            Any::Command(m) => m.encode(out),
            Any::Event(m) => m.encode(out),
            Any::Session(m) => m.encode(out),
        }
    }

    fn decode_like(&self, bytes: &[u8]) -> Result<(Any, usize), DecodeError> {
        match self {
            Any::Command(_) => Command::decode(bytes).map(|(m, n)| (Any::Command(m), n)),
            Any::Event(_) => Event::decode(bytes).map(|(m, n)| (Any::Event(m), n)),
            Any::Session(_) => Session::decode(bytes).map(|(m, n)| (Any::Session(m), n)),
        }
    }
}

/// Builds a field from an arbitrary `u64` (truncated to the field's width; reserved stays zero).
trait FromU64 {
    fn from_u64(value: u64) -> Self;
}

macro_rules! from_u64_integers {
    ($($ty:ident($native:ty)),+ $(,)?) => {
        $(impl FromU64 for $ty {
            fn from_u64(value: u64) -> Self {
                $ty::new(value as $native)
            }
        })+
    };
}

from_u64_integers!(
    UserId(u64),
    OrderId(u64),
    ClientOrderId(u64),
    MarketId(u32),
    AssetId(u32),
    Ticks(u64),
    Lots(u64),
    Amount(u64),
    Sequence(u64),
    TimestampNs(u64),
    TradeId(u64),
    OrderCount(u32),
    Shares(u64),
    U16(u16),
    U32(u32),
);

macro_rules! from_u64_codes {
    ($($enum:ident => $code:ident),+ $(,)?) => {
        $(impl FromU64 for $code {
            /// Any raw code of the field's width, known to the enum or not.
            fn from_u64(value: u64) -> Self {
                $code::read_from_bytes(&value.to_le_bytes()[..size_of::<$code>()]).unwrap()
            }
        })+
    };
}

for_each_enum!(from_u64_codes);

impl<const N: usize> FromU64 for FixedBytes<N> {
    /// The value's 8 bytes, repeated, each repetition flipped differently, so every byte varies.
    fn from_u64(value: u64) -> Self {
        let bytes = value.to_le_bytes();
        FixedBytes(std::array::from_fn(|i| bytes[i % 8] ^ (i / 8).wrapping_mul(0x35) as u8))
    }
}

impl<const N: usize> FromU64 for Reserved<N> {
    fn from_u64(_: u64) -> Self {
        Reserved::ZERO
    }
}

/// The most fields any message has.
const FIELDS_MAX: usize = 20;

macro_rules! build_all {
    ($($msg:ident => $envelope:ident { $($field:ident),+ $(,)? }),+ $(,)?) => {
        /// Every message, its fields taken in order from `values`.
        fn build_all(values: &[u64]) -> Vec<Any> {
            vec![$({
                let mut values = values.iter().copied();
                let message = $msg { $($field: FromU64::from_u64(values.next().unwrap()),)+ };
                Any::$envelope($envelope::$msg(message))
            }),+]
        }
    };
}

for_each_message!(build_all);

/// Field values biased towards edges.
fn field_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => any::<u64>(),
        1 => 0..=3u64,
        1 => Just(u64::MAX),
        1 => (0..64u32).prop_map(|shift| 1u64 << shift),
    ]
}

fn field_values() -> impl Strategy<Value = Vec<u64>> {
    vec(field_value(), FIELDS_MAX)
}

/// Template ids: every known one, their neighbours and anything else.
fn template_id() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => prop::sample::select(
            [1..=6u16, 101..=109, 200..=209].into_iter().flatten().collect::<Vec<_>>()
        ),
        1 => prop::sample::select(vec![0u16, 7, 99, 100, 110, 199, 210, 229, 230, u16::MAX]),
        1 => any::<u16>(),
    ]
}

/// Checks one `Command::decode`, `Event::decode` or `Session::decode` outcome against the input.
fn check_decoded<M: Copy>(
    bytes: &[u8],
    result: Result<(M, usize), DecodeError>,
    template_id: impl Fn(&M) -> u16,
    reencode: impl Fn(&M) -> Vec<u8>,
) -> Result<(), TestCaseError> {
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    match result {
        Ok((message, consumed)) => {
            let encoded = reencode(&message);
            let known = encoded.len() - MESSAGE_HEADER_BYTES;
            let block = usize::from(u16_at(0));
            prop_assert!(consumed <= bytes.len());
            prop_assert_eq!(consumed, MESSAGE_HEADER_BYTES + block);
            // The only block shorter than the current one that is accepted is an older version's
            // (NewOrder before its trigger fields, version 3).
            let oldest =
                if u16_at(2) == NewOrder::TEMPLATE_ID { usize::from(NewOrder::BLOCK_LENGTH_V2) } else { known };
            prop_assert!(block >= oldest, "block shorter than the oldest known version was accepted");
            prop_assert_eq!(u16_at(2), template_id(&message));
            prop_assert_eq!(u16_at(4), SCHEMA_ID);
            // Re-encoding gives back the part of the block both versions know unchanged, and the
            // fields an older block lacks as zero.
            let common = known.min(block);
            prop_assert_eq!(&encoded[MESSAGE_HEADER_BYTES..][..common], &bytes[MESSAGE_HEADER_BYTES..][..common]);
            prop_assert!(
                encoded[MESSAGE_HEADER_BYTES + common..].iter().all(|&b| b == 0),
                "fields missing from an older block are not zero"
            );
        }
        Err(DecodeError::ShortBuffer { needed, available }) => {
            prop_assert_eq!(available, bytes.len());
            prop_assert!(needed > available);
        }
        Err(DecodeError::WrongSchema(schema_id)) => {
            prop_assert!(bytes.len() >= MESSAGE_HEADER_BYTES);
            prop_assert_eq!(schema_id, u16_at(4));
            prop_assert_ne!(schema_id, SCHEMA_ID);
        }
        Err(DecodeError::UnknownTemplate(id)) => prop_assert_eq!(id, u16_at(2)),
        Err(DecodeError::BlockTooShort { template_id, expected, actual }) => {
            prop_assert_eq!(template_id, u16_at(2));
            prop_assert_eq!(actual, u16_at(0));
            prop_assert!(actual < expected);
        }
        Err(other) => prop_assert!(false, "unexpected error {other:?} from a message decoder"),
    }
    Ok(())
}

/// Runs every message decoder over `bytes` and checks every outcome.
fn check_message_decoders(bytes: &[u8]) -> Result<(), TestCaseError> {
    check_decoded(bytes, Command::decode(bytes), Command::template_id, |m| m.to_vec())?;
    check_decoded(bytes, Event::decode(bytes), Event::template_id, |m| m.to_vec())?;
    check_decoded(bytes, Session::decode(bytes), Session::template_id, |m| m.to_vec())
}

/// Runs every message decoder and the frame decoder over `bytes` and checks every outcome.
fn check_all_decoders(bytes: &[u8]) -> Result<(), TestCaseError> {
    check_message_decoders(bytes)?;
    check_frame(bytes)
}

/// Checks one `FrameDecoder::next_frame` outcome, and decodes the message of a complete frame.
fn check_frame(bytes: &[u8]) -> Result<(), TestCaseError> {
    let declared =
        bytes.get(..6).map(|h| (u32::from_be_bytes([h[0], h[1], h[2], h[3]]), u16::from_be_bytes([h[4], h[5]])));
    match FrameDecoder::next_frame(bytes) {
        Ok(None) => {
            if let Some((length, encoding)) = declared {
                prop_assert_eq!(encoding, SOFH_ENCODING_SBE_LE);
                prop_assert!(bytes.len() < length as usize);
            }
        }
        Ok(Some((message, length))) => {
            let (declared_length, encoding) = declared.unwrap();
            prop_assert_eq!(encoding, SOFH_ENCODING_SBE_LE);
            prop_assert_eq!(declared_length as usize, length);
            prop_assert!((FRAMING_HEADER_BYTES + MESSAGE_HEADER_BYTES..=FRAME_BYTES_MAX).contains(&length));
            prop_assert!(length <= bytes.len());
            prop_assert_eq!(message, &bytes[FRAMING_HEADER_BYTES..length]);
            check_message_decoders(message)?;
        }
        Err(DecodeError::WrongEncodingType(encoding)) => {
            prop_assert_eq!(Some(encoding), declared.map(|d| d.1));
            prop_assert_ne!(encoding, SOFH_ENCODING_SBE_LE);
        }
        Err(DecodeError::InvalidFrameLength(length)) => {
            prop_assert_eq!(Some(length), declared.map(|d| d.0));
            let length = length as usize;
            let valid = FRAMING_HEADER_BYTES + MESSAGE_HEADER_BYTES..=FRAME_BYTES_MAX;
            prop_assert!(!valid.contains(&length));
        }
        Err(other) => prop_assert!(false, "unexpected error {other:?} from the frame decoder"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Arbitrary bytes: no decoder panics, and every result is consistent with the input.
    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..=300)) {
        check_all_decoders(&bytes)?;
    }

    /// Bytes behind a plausible SBE header, so decoding reaches the block-length and template
    /// checks and reads blocks of every size around the known ones.
    #[test]
    fn decoders_never_panic_behind_a_plausible_header(
        template_id in template_id(),
        block_length in prop_oneof![0..=144u16, any::<u16>()],
        schema_id in prop_oneof![8 => Just(SCHEMA_ID), 1 => any::<u16>()],
        version in any::<u16>(),
        rest in vec(any::<u8>(), 0..=300),
    ) {
        let mut bytes = Vec::with_capacity(MESSAGE_HEADER_BYTES + rest.len());
        for value in [block_length, template_id, schema_id, version] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        bytes.extend_from_slice(&rest);
        check_all_decoders(&bytes)?;
        for cut in [0, 1, 7, 8, 9, bytes.len() / 2, bytes.len().saturating_sub(1)] {
            check_all_decoders(&bytes[..cut.min(bytes.len())])?;
        }
    }

    /// Bytes behind a plausible SOFH, so the frame decoder reaches its length checks and hands
    /// complete frames to the message decoders.
    #[test]
    fn frame_decoder_never_panics_behind_a_plausible_header(
        length in prop_oneof![0..=320u32, any::<u32>(), 4090..=4100u32],
        encoding in prop_oneof![8 => Just(SOFH_ENCODING_SBE_LE), 1 => any::<u16>()],
        rest in vec(any::<u8>(), 0..=300),
    ) {
        let mut bytes = Vec::with_capacity(FRAMING_HEADER_BYTES + rest.len());
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(&encoding.to_be_bytes());
        bytes.extend_from_slice(&rest);
        check_frame(&bytes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every message round-trips for arbitrary field values, enum fields holding any raw code.
    #[test]
    fn every_message_round_trips(values in field_values()) {
        for message in build_all(&values) {
            let bytes = message.to_vec();
            prop_assert_eq!(message.decode_like(&bytes), Ok((message, bytes.len())));

            // `encode` writes exactly the message into a larger buffer and leaves the rest alone.
            let mut out = vec![0xA5u8; bytes.len() + 16];
            prop_assert_eq!(message.encode(&mut out), Some(bytes.len()));
            prop_assert_eq!(&out[..bytes.len()], &bytes[..]);
            prop_assert!(out[bytes.len()..].iter().all(|&b| b == 0xA5));
        }
    }

    /// A stream of SOFH-framed messages, delivered in arbitrary pieces, decodes to the same
    /// messages in order.
    #[test]
    fn framed_streams_round_trip(
        picks in vec((any::<prop::sample::Index>(), field_values()), 1..8),
        chunk in 1..64usize,
    ) {
        let messages: Vec<Any> = picks
            .iter()
            .map(|(pick, values)| {
                let all = build_all(values);
                all[pick.index(all.len())]
            })
            .collect();
        let mut stream = Vec::new();
        for message in &messages {
            let bytes = message.to_vec();
            let mut frame = vec![0u8; frame_length(bytes.len())];
            prop_assert_eq!(encode_frame(&bytes, &mut frame), Some(frame.len()));
            stream.extend_from_slice(&frame);
        }

        // Receive `chunk` bytes at a time and decode every complete frame.
        let mut buffer: Vec<u8> = Vec::new();
        let mut decoded = Vec::new();
        for piece in stream.chunks(chunk) {
            buffer.extend_from_slice(piece);
            while let Some((message, length)) = FrameDecoder::next_frame(&buffer).unwrap() {
                let expected = messages[decoded.len()];
                let (got, consumed) = expected.decode_like(message).unwrap();
                prop_assert_eq!(consumed, message.len());
                decoded.push(got);
                buffer.drain(..length);
            }
        }
        prop_assert!(buffer.is_empty());
        prop_assert_eq!(decoded, messages);
    }
}
