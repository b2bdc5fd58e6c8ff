//! Random input over real TCP never hurts the gateway. A seeded generator (deterministic, a bounded
//! number of cases) produces byte streams — pure noise, frames of noise, well-framed messages of
//! every template with blocks of random length and content, plausible order-entry commands with
//! random fields, session messages with random fields — and sends each on a fresh connection,
//! before logon or after it. Every case ends with a `Terminate` (any reason) and a close, or with
//! the session still going until the client closes; everything the server sends is a valid
//! message; no connection is leaked; and afterwards the same user, and a fresh one, log on and
//! trade normally.

mod common;

use codec::*;
use common::{Harness, Raw, accepted, next, secret, wait_until};
use gateway_binary::client::{Incoming, api_key_of};
use std::net::Shutdown;
use std::time::Duration;

const CASES_BEFORE_LOGON: u64 = 120;
const CASES_AFTER_LOGON: u64 = 120;
const SEED: u64 = 0x5EED_0000_F022_0001;

/// SplitMix64: small, seedable, good enough to spread bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, length: usize) -> Vec<u8> {
        (0..length).map(|_| self.next() as u8).collect()
    }
}

/// Every template of the schema, with its block length.
const TEMPLATES: [(u16, u16); 27] = [
    (NewOrder::TEMPLATE_ID, NewOrder::BLOCK_LENGTH),
    (CancelOrder::TEMPLATE_ID, CancelOrder::BLOCK_LENGTH),
    (CancelReplace::TEMPLATE_ID, CancelReplace::BLOCK_LENGTH),
    (MassCancel::TEMPLATE_ID, MassCancel::BLOCK_LENGTH),
    (Deposit::TEMPLATE_ID, Deposit::BLOCK_LENGTH),
    (Withdraw::TEMPLATE_ID, Withdraw::BLOCK_LENGTH),
    (MarketControl::TEMPLATE_ID, MarketControl::BLOCK_LENGTH),
    (OrderAccepted::TEMPLATE_ID, OrderAccepted::BLOCK_LENGTH),
    (OrderRejected::TEMPLATE_ID, OrderRejected::BLOCK_LENGTH),
    (Fill::TEMPLATE_ID, Fill::BLOCK_LENGTH),
    (OrderCanceled::TEMPLATE_ID, OrderCanceled::BLOCK_LENGTH),
    (OrderExpired::TEMPLATE_ID, OrderExpired::BLOCK_LENGTH),
    (OrderReplaced::TEMPLATE_ID, OrderReplaced::BLOCK_LENGTH),
    (BookLevelUpdate::TEMPLATE_ID, BookLevelUpdate::BLOCK_LENGTH),
    (BalanceUpdate::TEMPLATE_ID, BalanceUpdate::BLOCK_LENGTH),
    (MassCancelReport::TEMPLATE_ID, MassCancelReport::BLOCK_LENGTH),
    (MarketStatusChanged::TEMPLATE_ID, MarketStatusChanged::BLOCK_LENGTH),
    (Negotiate::TEMPLATE_ID, Negotiate::BLOCK_LENGTH),
    (NegotiateResponse::TEMPLATE_ID, NegotiateResponse::BLOCK_LENGTH),
    (Establish::TEMPLATE_ID, Establish::BLOCK_LENGTH),
    (EstablishAck::TEMPLATE_ID, EstablishAck::BLOCK_LENGTH),
    (SequenceHeartbeat::TEMPLATE_ID, SequenceHeartbeat::BLOCK_LENGTH),
    (RetransmitRequest::TEMPLATE_ID, RetransmitRequest::BLOCK_LENGTH),
    (Retransmission::TEMPLATE_ID, Retransmission::BLOCK_LENGTH),
    (RetransmitReject::TEMPLATE_ID, RetransmitReject::BLOCK_LENGTH),
    (Terminate::TEMPLATE_ID, Terminate::BLOCK_LENGTH),
    (BusinessReject::TEMPLATE_ID, BusinessReject::BLOCK_LENGTH),
];

fn framed(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0; frame_length(message.len())];
    encode_frame(message, &mut frame).unwrap();
    frame
}

/// A plausible order-entry command: valid header, small random values, enum codes mostly valid.
fn command(rng: &mut Rng) -> Command {
    let small = |rng: &mut Rng, n: u64| rng.below(n);
    match rng.below(4) {
        0 => {
            let mut bytes = Command::NewOrder(NewOrder {
                client_order_id: ClientOrderId::new(small(rng, 20)),
                price_ticks: Ticks::new(small(rng, 1_000_000)),
                quantity_lots: Lots::new(small(rng, 100)),
                quote_quantity: Amount::new(small(rng, 100_000_000) * u64::from(rng.below(4) == 0)),
                market_id: MarketId::new(small(rng, 4) as u32),
                ..Default::default()
            })
            .to_vec();
            // side, order type, time in force, self-trade prevention, post-only: mostly valid.
            for (offset, (lowest, count)) in (44..).zip([(1, 2), (1, 2), (1, 3), (0, 4), (0, 2)]) {
                bytes[8 + offset] = if rng.below(6) == 0 { rng.next() as u8 } else { lowest + rng.below(count) as u8 };
            }
            Command::decode(&bytes).unwrap().0
        }
        1 => Command::CancelOrder(CancelOrder {
            order_id: OrderId::new(small(rng, 50)),
            client_order_id: ClientOrderId::new(small(rng, 20)),
            market_id: MarketId::new(small(rng, 5) as u32),
            ..Default::default()
        }),
        2 => Command::CancelReplace(CancelReplace {
            order_id: OrderId::new(small(rng, 50)),
            client_order_id: ClientOrderId::new(small(rng, 20)),
            new_price_ticks: Ticks::new(small(rng, 1_000_000)),
            new_quantity_lots: Lots::new(small(rng, 100)),
            market_id: MarketId::new(small(rng, 5) as u32),
            ..Default::default()
        }),
        _ => {
            let mut bytes = Command::MassCancel(MassCancel {
                market_id: MarketId::new(small(rng, 5) as u32),
                ..Default::default()
            })
            .to_vec();
            bytes[8 + 12] = rng.below(4) as u8;
            Command::decode(&bytes).unwrap().0
        }
    }
}

/// One piece of a random stream.
fn chunk(rng: &mut Rng) -> Vec<u8> {
    match rng.below(8) {
        // Noise.
        0 => {
            let length = rng.below(64) as usize;
            rng.bytes(length)
        }
        // A frame of noise.
        1 => {
            let length = 8 + rng.below(120) as usize;
            framed(&rng.bytes(length))
        }
        // A SOFH with a random length (and encoding, sometimes), then noise.
        2 => {
            let mut bytes = (rng.below(2 * FRAME_BYTES_MAX as u64) as u32).to_be_bytes().to_vec();
            let encoding = if rng.below(4) == 0 { rng.next() as u16 } else { SOFH_ENCODING_SBE_LE };
            bytes.extend_from_slice(&encoding.to_be_bytes());
            let length = rng.below(32) as usize;
            bytes.extend(rng.bytes(length));
            bytes
        }
        // A known template with a block of random content and a length near the right one.
        3 | 4 => {
            let (template, block_length) = TEMPLATES[rng.below(TEMPLATES.len() as u64) as usize];
            let declared = match rng.below(4) {
                0 => rng.below(u64::from(block_length)) as u16,
                1 => block_length + rng.below(24) as u16,
                _ => block_length,
            };
            let actual = match rng.below(6) {
                0 => rng.below(u64::from(declared) + 1) as usize,
                _ => usize::from(declared),
            };
            let schema = if rng.below(10) == 0 { rng.next() as u16 } else { SCHEMA_ID };
            framed(&common::message(template, declared, schema, &rng.bytes(actual)))
        }
        // Plausible commands.
        5 | 6 => framed(&command(rng).to_vec()),
        // Session messages with random fields.
        _ => {
            let message = match rng.below(3) {
                0 => Session::RetransmitRequest(RetransmitRequest {
                    from_sequence: Sequence::new(rng.below(30)),
                    count: (rng.below(40) as u32).into(),
                    reserved: Reserved::ZERO,
                }),
                1 => Session::SequenceHeartbeat(SequenceHeartbeat { next_sequence: Sequence::new(rng.next()) }),
                _ => Session::Terminate(Terminate { reason: TerminateReasonCode::default(), reserved: Reserved::ZERO }),
            };
            framed(&message.to_vec())
        }
    }
}

fn stream(rng: &mut Rng) -> Vec<u8> {
    let chunks = 1 + rng.below(12);
    (0..chunks).flat_map(|_| chunk(rng)).collect()
}

/// Sends `bytes`, closes the sending side, and reads everything until the server closes.
/// Returns whether the server ended with a Terminate.
fn play(raw: &mut Raw, bytes: &[u8], case: u64) -> bool {
    // The server may close while we are still writing: that is allowed.
    let _ = raw.write(bytes);
    let _ = raw.stream.shutdown(Shutdown::Write);
    let mut terminated = false;
    while let Some(incoming) = raw.receive() {
        assert!(!terminated, "case {case}: {incoming:?} after the Terminate");
        terminated = matches!(incoming, Incoming::Session(Session::Terminate(_)));
    }
    terminated
}

#[test]
fn random_streams_never_hurt_the_gateway() {
    let harness = Harness::start(2, |_| {});
    let mut rng = Rng(SEED);
    let mut terminated = 0;

    for case in 0..CASES_BEFORE_LOGON {
        let mut raw = Raw::connect(harness.address);
        // Sometimes get past Negotiate first, with the known key.
        if rng.below(3) == 0 {
            raw.negotiate(api_key_of(&secret(1)));
        }
        let bytes = stream(&mut rng);
        terminated += u64::from(play(&mut raw, &bytes, case));
    }
    for case in CASES_BEFORE_LOGON..CASES_BEFORE_LOGON + CASES_AFTER_LOGON {
        // Always the same user: a connection that left its session attached would make this
        // logon fail with DuplicateSession.
        let (mut raw, _) = Raw::logon(harness.address, &secret(1), 5_000);
        let bytes = stream(&mut rng);
        terminated += u64::from(play(&mut raw, &bytes, case));
    }
    // Nearly every case ends with a Terminate (a reset may swallow one when the server closes
    // with input unread).
    assert!(terminated >= (CASES_BEFORE_LOGON + CASES_AFTER_LOGON) * 9 / 10, "only {terminated} Terminates");

    // No connection task is left behind.
    assert!(
        wait_until(Duration::from_secs(5), || harness.connections() == 0),
        "{} connections still open",
        harness.connections()
    );
    // The fuzzed user and a fresh one trade normally.
    let mut fuzzed = harness.reconnect(1, 1);
    let mut fresh = harness.client(2);
    // Clear what the random streams left on the books, then quote.
    fuzzed.send(&engine::testkit::commands::mass_cancel(0, 0, SideFilter::Both)).unwrap();
    while !matches!(next(&mut fuzzed), Incoming::Event(Event::MassCancelReport(_))) {}
    fuzzed.send(&common::limit(Side::Ask, 990_000, 1, 1_000)).unwrap();
    assert_eq!(accepted(next(&mut fuzzed)).client_order_id.get(), 1_000);
    fresh.send(&common::limit(Side::Bid, 990_000, 1, 1)).unwrap();
    assert_eq!(accepted(next(&mut fresh)).user_id.get(), 2);
    let Event::Fill(fill) = common::event(next(&mut fresh)) else { panic!("expected a fill") };
    assert_eq!(fill.quantity_lots.get(), 1);
}
