//! Proves the decoders refuse every malformed input with the right [`DecodeError`] and accept
//! what SBE allows: every truncation of every message is `ShortBuffer`; unknown template ids
//! (including the id of a message of one envelope given to the decoder of another: `Command`,
//! `Event` and `Session` ids are disjoint) are `UnknownTemplate`; a foreign schema id is `WrongSchema`; a declared block shorter than the
//! message's is `BlockTooShort`; a longer one is accepted with its tail skipped and counted in
//! `consumed`; and unknown enum codes surface from the `.get()` accessors as `InvalidEnumValue`.

#[macro_use]
mod common;

use codec::*;
use zerocopy::{FromBytes, IntoBytes};

/// A command, an event or a session message, so every message can go through one loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Any {
    Command(Command),
    Event(Event),
    Session(Session),
}

/// The envelope decoders, by name.
const ENVELOPES: [&str; 3] = ["Command", "Event", "Session"];

/// Decodes `bytes` with the envelope named `envelope`, keeping only the template id.
fn decode_with(envelope: &str, bytes: &[u8]) -> Result<u16, DecodeError> {
    match envelope {
        "Command" => Command::decode(bytes).map(|(m, _)| m.template_id()),
        "Event" => Event::decode(bytes).map(|(m, _)| m.template_id()),
        "Session" => Session::decode(bytes).map(|(m, _)| m.template_id()),
        other => panic!("unknown envelope {other}"),
    }
}

impl Any {
    fn name(&self) -> &'static str {
        match self {
            Any::Command(m) => m.name(),
            Any::Event(m) => m.name(),
            Any::Session(m) => m.name(),
        }
    }

    fn template_id(&self) -> u16 {
        match self {
            Any::Command(m) => m.template_id(),
            Any::Event(m) => m.template_id(),
            Any::Session(m) => m.template_id(),
        }
    }

    /// The name of the envelope that holds the message.
    fn envelope(&self) -> &'static str {
        match self {
            Any::Command(_) => "Command",
            Any::Event(_) => "Event",
            Any::Session(_) => "Session",
        }
    }

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

    /// The older version's block length its decoder also accepts (else the current one).
    fn min_block_length(&self) -> u16 {
        match self {
            Any::Command(Command::NewOrder(_)) => NewOrder::MIN_BLOCK_LENGTH,
            _ => (self.to_vec().len() - MESSAGE_HEADER_BYTES) as u16,
        }
    }

    /// Decodes `bytes` with the envelope of `self`.
    fn decode_like(&self, bytes: &[u8]) -> Result<(Any, usize), DecodeError> {
        match self {
            Any::Command(_) => Command::decode(bytes).map(|(m, n)| (Any::Command(m), n)),
            Any::Event(_) => Event::decode(bytes).map(|(m, n)| (Any::Event(m), n)),
            Any::Session(_) => Session::decode(bytes).map(|(m, n)| (Any::Session(m), n)),
        }
    }
}

/// Fills a message's block with bytes 1, 2, 3, ... and zeroes its `reserved` field (if any).
fn patterned<M: Message>(zero_reserved: impl Fn(&mut M)) -> M {
    let bytes: Vec<u8> = (1..=size_of::<M>()).map(|i| i as u8).collect();
    let mut message = M::read_from_bytes(&bytes).unwrap();
    zero_reserved(&mut message);
    message
}

macro_rules! all_messages {
    ($($msg:ident => $envelope:ident { $($field:ident),+ $(,)? }),+ $(,)?) => {
        vec![$(Any::$envelope($envelope::$msg(patterned::<$msg>(|m| {
            zero_reserved!(m, $($field),+);
        })))),+]
    };
}

/// Sets `m.reserved` to zero when the field list contains `reserved`.
macro_rules! zero_reserved {
    ($m:ident, reserved $(, $rest:ident)*) => {
        $m.reserved = Reserved::ZERO;
    };
    ($m:ident, $first:ident $(, $rest:ident)*) => {
        zero_reserved!($m $(, $rest)*);
    };
    ($m:ident) => {
        let _ = $m;
    };
}

/// One instance of every message, with non-zero fields.
fn all() -> Vec<Any> {
    for_each_message!(all_messages)
}

fn set_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

const BLOCK_LENGTH_AT: usize = 0;
const TEMPLATE_ID_AT: usize = 2;
const SCHEMA_ID_AT: usize = 4;
const VERSION_AT: usize = 6;

#[test]
fn the_instances_cover_every_message() {
    let all = all();
    assert_eq!(all.len(), 38);
    for envelope in ENVELOPES {
        assert!(all.iter().any(|m| m.envelope() == envelope), "no {envelope} message");
    }
    for message in &all {
        let bytes = message.to_vec();
        assert_eq!(message.decode_like(&bytes), Ok((*message, bytes.len())), "{}", message.name());
    }
}

#[test]
fn every_truncation_is_a_short_buffer() {
    for message in all() {
        let bytes = message.to_vec();
        for cut in 0..bytes.len() {
            let needed = if cut < MESSAGE_HEADER_BYTES { MESSAGE_HEADER_BYTES } else { bytes.len() };
            assert_eq!(
                message.decode_like(&bytes[..cut]),
                Err(DecodeError::ShortBuffer { needed, available: cut }),
                "{} cut at {cut}",
                message.name()
            );
        }
    }
}

#[test]
fn trailing_bytes_are_not_consumed() {
    for message in all() {
        let mut bytes = message.to_vec();
        let len = bytes.len();
        bytes.extend_from_slice(&[0xEE; 40]);
        assert_eq!(message.decode_like(&bytes), Ok((message, len)), "{}", message.name());
    }
}

#[test]
fn unknown_template_ids_are_refused() {
    let all = all();
    let mut bytes = vec![0u8; MESSAGE_HEADER_BYTES + 200];
    bytes[..MESSAGE_HEADER_BYTES].copy_from_slice(MessageHeader::new(0, 200).as_bytes());
    for envelope in ENVELOPES {
        let ids: Vec<u16> = all.iter().filter(|m| m.envelope() == envelope).map(Any::template_id).collect();
        for template_id in 0..=u16::MAX {
            set_u16(&mut bytes, TEMPLATE_ID_AT, template_id);
            let decoded = decode_with(envelope, &bytes);
            if ids.contains(&template_id) {
                assert_eq!(decoded, Ok(template_id), "{envelope}");
            } else {
                assert_eq!(decoded, Err(DecodeError::UnknownTemplate(template_id)), "{envelope}");
            }
        }
    }
}

#[test]
fn a_message_of_another_envelope_is_an_unknown_template() {
    for message in all() {
        let bytes = message.to_vec();
        for envelope in ENVELOPES.into_iter().filter(|&e| e != message.envelope()) {
            assert_eq!(
                decode_with(envelope, &bytes),
                Err(DecodeError::UnknownTemplate(message.template_id())),
                "{} through {envelope}::decode",
                message.name()
            );
        }
    }
}

#[test]
fn a_foreign_schema_is_refused() {
    for message in all() {
        for schema_id in [0, 2, 0x0100, u16::MAX] {
            let mut bytes = message.to_vec();
            set_u16(&mut bytes, SCHEMA_ID_AT, schema_id);
            assert_eq!(message.decode_like(&bytes), Err(DecodeError::WrongSchema(schema_id)), "{}", message.name());
            // Even with just the header: the schema is checked before the block.
            assert_eq!(message.decode_like(&bytes[..MESSAGE_HEADER_BYTES]), Err(DecodeError::WrongSchema(schema_id)));
        }
    }
}

#[test]
fn a_shorter_declared_block_is_refused() {
    for message in all() {
        let bytes = message.to_vec();
        let known = (bytes.len() - MESSAGE_HEADER_BYTES) as u16;
        for declared in 0..known {
            if declared == message.min_block_length() {
                continue; // an older version's block: accepted (see below)
            }
            let mut short = bytes.clone();
            set_u16(&mut short, BLOCK_LENGTH_AT, declared);
            assert_eq!(
                message.decode_like(&short),
                Err(DecodeError::BlockTooShort {
                    template_id: message.template_id(),
                    expected: known,
                    actual: declared,
                }),
                "{} declared {declared}",
                message.name()
            );
        }
    }
}

#[test]
fn a_longer_declared_block_is_accepted_and_its_tail_skipped() {
    for message in all() {
        let bytes = message.to_vec();
        let known = bytes.len() - MESSAGE_HEADER_BYTES;
        for extra in [1usize, 7, 8, 64, 1000] {
            let mut longer = bytes.clone();
            set_u16(&mut longer, BLOCK_LENGTH_AT, (known + extra) as u16);
            set_u16(&mut longer, VERSION_AT, SCHEMA_VERSION + 1); // as a newer sender would
            longer.extend((0..extra).map(|i| 0xA0 ^ i as u8));
            let consumed = MESSAGE_HEADER_BYTES + known + extra;
            assert_eq!(longer.len(), consumed);
            assert_eq!(
                message.decode_like(&longer),
                Ok((message, consumed)),
                "{} with {extra} extra bytes",
                message.name()
            );
            // The declared tail must be present in full.
            assert_eq!(
                message.decode_like(&longer[..consumed - 1]),
                Err(DecodeError::ShortBuffer { needed: consumed, available: consumed - 1 })
            );
            // Bytes after the declared block belong to the next message.
            longer.extend_from_slice(&[0x55; 9]);
            assert_eq!(message.decode_like(&longer), Ok((message, consumed)));
        }
    }
}

/// Checks `Code::get()` over every raw value of its width against `WireEnum::from_code`.
macro_rules! check_enum_codes {
    ($($enum:ident => $code:ident),+ $(,)?) => {$({
        let max: u32 = if size_of::<$code>() == 1 { 0xFF } else { 0xFFFF };
        let mut valid = 0;
        for raw in 0..=max {
            let bytes = raw.to_le_bytes();
            let code = $code::read_from_bytes(&bytes[..size_of::<$code>()]).unwrap();
            assert_eq!(u32::from(code.raw()), raw);
            match <$enum as WireEnum>::ALL.iter().find(|v| u32::from(v.code()) == raw) {
                Some(&variant) => {
                    valid += 1;
                    assert_eq!(code.get(), Ok(variant));
                    assert_eq!(code, $code::from(variant));
                    assert_eq!(format!("{code:?}"), format!("{variant:?}"));
                }
                None => {
                    assert_eq!(
                        code.get(),
                        Err(DecodeError::InvalidEnumValue {
                            enum_name: stringify!($enum),
                            value: raw as u16,
                        })
                    );
                    assert_eq!(format!("{code:?}"), format!("{}({raw})", stringify!($code)));
                }
            }
        }
        assert_eq!(valid, <$enum as WireEnum>::ALL.len(), "{}", stringify!($enum));
    })+};
}

#[test]
fn every_unknown_enum_code_is_reported_by_get() {
    for_each_enum!(check_enum_codes);
}

/// The error an accessor returns for an unknown code.
fn invalid<T>(enum_name: &'static str, value: u16) -> Result<T, DecodeError> {
    Err(DecodeError::InvalidEnumValue { enum_name, value })
}

#[test]
fn invalid_enum_codes_decode_and_are_reported_by_the_accessors() {
    // Decoding does not check enum fields (a message with an unknown code must still reach the
    // engine, which rejects it with a reason); the accessors do.
    let mut bytes = Command::NewOrder(NewOrder {
        side: Side::Bid.into(),
        order_type: OrderType::Limit.into(),
        time_in_force: TimeInForce::Gtc.into(),
        ..NewOrder::default()
    })
    .to_vec();
    let block = MESSAGE_HEADER_BYTES;
    bytes[block + 44] = 0; // side
    bytes[block + 45] = 3; // orderType
    bytes[block + 46] = 0xFF; // timeInForce
    bytes[block + 47] = 4; // selfTradePrevention
    bytes[block + 48] = 2; // postOnly
    let (Command::NewOrder(order), _) = Command::decode(&bytes).unwrap() else {
        panic!("not a NewOrder");
    };
    assert_eq!(order.side.get(), invalid("Side", 0));
    assert_eq!(order.order_type.get(), invalid("OrderType", 3));
    assert_eq!(order.time_in_force.get(), invalid("TimeInForce", 0xFF));
    assert_eq!(order.self_trade_prevention.get(), invalid("SelfTradePrevention", 4));
    assert_eq!(order.post_only.get(), invalid("Boolean", 2));

    let mut bytes = Command::MassCancel(MassCancel::default()).to_vec();
    bytes[block + 12] = 3;
    let (Command::MassCancel(cancel), _) = Command::decode(&bytes).unwrap() else {
        panic!("not a MassCancel");
    };
    assert_eq!(cancel.side.get(), invalid("SideFilter", 3));

    let mut bytes = Event::OrderRejected(OrderRejected::default()).to_vec();
    bytes[block + 44..block + 46].copy_from_slice(&999u16.to_le_bytes());
    let (Event::OrderRejected(rejected), _) = Event::decode(&bytes).unwrap() else {
        panic!("not an OrderRejected");
    };
    assert_eq!(rejected.reason.get(), invalid("RejectReason", 999));

    let mut bytes = Event::OrderCanceled(OrderCanceled::default()).to_vec();
    bytes[block + 61] = 0;
    let (Event::OrderCanceled(canceled), _) = Event::decode(&bytes).unwrap() else {
        panic!("not an OrderCanceled");
    };
    assert_eq!(canceled.reason.get(), invalid("CancelReason", 0));

    let mut bytes = Event::OrderExpired(OrderExpired::default()).to_vec();
    bytes[block + 61] = 5;
    let (Event::OrderExpired(expired), _) = Event::decode(&bytes).unwrap() else {
        panic!("not an OrderExpired");
    };
    assert_eq!(expired.reason.get(), invalid("ExpireReason", 5));

    let mut bytes = Event::BalanceUpdate(BalanceUpdate::default()).to_vec();
    bytes[block + 44] = 7;
    let (Event::BalanceUpdate(balance), _) = Event::decode(&bytes).unwrap() else {
        panic!("not a BalanceUpdate");
    };
    assert_eq!(balance.reason.get(), invalid("BalanceChange", 7));

    let mut bytes = Session::RetransmitReject(RetransmitReject::default()).to_vec();
    bytes[block + 8] = 0;
    let (Session::RetransmitReject(reject), _) = Session::decode(&bytes).unwrap() else {
        panic!("not a RetransmitReject");
    };
    assert_eq!(reject.reason.get(), invalid("RetransmitRejectReason", 0));

    let mut bytes = Session::Terminate(Terminate::default()).to_vec();
    bytes[block] = 8;
    let (Session::Terminate(terminate), _) = Session::decode(&bytes).unwrap() else {
        panic!("not a Terminate");
    };
    assert_eq!(terminate.reason.get(), invalid("TerminateReason", 8));

    let mut bytes = Session::BusinessReject(BusinessReject::default()).to_vec();
    bytes[block + 16..block + 18].copy_from_slice(&0u16.to_le_bytes());
    let (Session::BusinessReject(reject), _) = Session::decode(&bytes).unwrap() else {
        panic!("not a BusinessReject");
    };
    assert_eq!(reject.reason.get(), invalid("RejectReason", 0));
}

#[test]
fn encode_refuses_a_short_output_buffer() {
    for message in all() {
        let len = message.to_vec().len();
        let mut out = vec![0u8; len];
        for short in 0..len {
            assert_eq!(message.encode(&mut out[..short]), None, "{} into {short} bytes", message.name());
        }
        assert_eq!(message.encode(&mut out), Some(len));
        let max = match message {
            Any::Command(_) => Command::ENCODED_BYTES_MAX,
            Any::Event(_) => Event::ENCODED_BYTES_MAX,
            Any::Session(_) => Session::ENCODED_BYTES_MAX,
        };
        assert!(len <= max, "{}: {len} bytes, envelope maximum {max}", message.name());
    }
    // Each maximum is reached by one of the envelope's messages.
    for (envelope, max) in [
        ("Command", Command::ENCODED_BYTES_MAX),
        ("Event", Event::ENCODED_BYTES_MAX),
        ("Session", Session::ENCODED_BYTES_MAX),
    ] {
        let longest = all().iter().filter(|m| m.envelope() == envelope).map(|m| m.to_vec().len()).max();
        assert_eq!(longest, Some(max), "{envelope}::ENCODED_BYTES_MAX");
    }
}

/// A version-1/2 sender's `NewOrder` (56-byte block, version 2 in its header) still decodes, the
/// trigger fields of version 3 reading as zero (no trigger, nothing attached); a block between the
/// two lengths is refused.
#[test]
fn a_version_2_new_order_is_still_accepted() {
    let order = NewOrder {
        user_id: UserId::new(7),
        client_order_id: ClientOrderId::new(9),
        price_ticks: Ticks::new(100),
        quantity_lots: Lots::new(3),
        market_id: MarketId::new(1),
        side: Side::Bid.into(),
        order_type: OrderType::Limit.into(),
        time_in_force: TimeInForce::Gtc.into(),
        ..NewOrder::default()
    };
    let current = Command::NewOrder(order).to_vec();
    let mut old = Vec::new();
    old.extend_from_slice(&56u16.to_le_bytes()); // blockLength of version 2
    old.extend_from_slice(&1u16.to_le_bytes()); // templateId
    old.extend_from_slice(&SCHEMA_ID.to_le_bytes());
    old.extend_from_slice(&2u16.to_le_bytes()); // version 2
    old.extend_from_slice(&current[MESSAGE_HEADER_BYTES..MESSAGE_HEADER_BYTES + 56]);
    let (decoded, consumed) = Command::decode(&old).unwrap();
    assert_eq!(consumed, MESSAGE_HEADER_BYTES + 56);
    assert_eq!(decoded, Command::NewOrder(order));
    let Command::NewOrder(decoded) = decoded else { unreachable!() };
    assert_eq!(decoded.trigger_kind.get(), Ok(TriggerKind::None));
    assert_eq!(decoded.trigger_price_ticks, Ticks::ZERO);

    let mut between = current.clone();
    between[..2].copy_from_slice(&64u16.to_le_bytes());
    assert_eq!(Command::decode(&between), Err(DecodeError::BlockTooShort { template_id: 1, expected: 96, actual: 64 }));
}
