//! The worked example of docs/binary-protocol.md, byte for byte: one framed `NewOrder` (user 0,
//! client order id 42, 600000 ticks, 10 lots, BTC_USDC = market 1, Bid, Limit, GTC,
//! RejectTaker) as the library client puts it on the wire. Both the hex dump and the annotated
//! field-by-field listing of the document are read and compared with the encoder's output (and
//! the annotated offsets with the positions), so the document cannot drift from the code.

use codec::*;

const DOCUMENT: &str = include_str!("../../docs/binary-protocol.md");

fn is_byte(token: &str) -> bool {
    token.len() == 2 && token.chars().all(|c| c.is_ascii_hexdigit())
}

fn byte(token: &str) -> u8 {
    u8::from_str_radix(token, 16).unwrap()
}

/// The document's section on the worked example.
fn section() -> &'static str {
    let start = DOCUMENT.find("## Worked example").expect("the worked example section");
    let end = DOCUMENT[start + 3..].find("\n## ").map_or(DOCUMENT.len(), |end| start + 3 + end);
    &DOCUMENT[start..end]
}

/// `0010: 00 00 …` lines: offset, then up to 16 bytes.
fn hex_dump() -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in section().lines() {
        let Some((offset, rest)) = line.split_once(": ") else { continue };
        if offset.len() != 4 || !offset.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        assert_eq!(usize::from_str_radix(offset, 16).unwrap(), bytes.len(), "dump offset {offset}");
        bytes.extend(rest.split_whitespace().map(byte));
    }
    bytes
}

/// The annotated listing after the marker: decimal frame offset, the field's bytes, then prose.
fn annotated() -> Vec<u8> {
    let marker = section().find("<!-- worked-example").expect("the marker of the annotated listing");
    let listing = &section()[marker..];
    let start = listing.find("```text\n").unwrap() + "```text\n".len();
    let end = start + listing[start..].find("```").unwrap();
    let mut bytes = Vec::new();
    for line in listing[start..end].lines() {
        let mut tokens = line.split_whitespace();
        let offset: usize = tokens.next().unwrap().parse().unwrap();
        assert_eq!(offset, bytes.len(), "annotated offset of {line:?}");
        bytes.extend(tokens.take_while(|t| is_byte(t)).map(byte));
    }
    bytes
}

#[test]
fn the_documented_new_order_frame_is_what_goes_on_the_wire() {
    let order = engine::testkit::commands::limit(0, 1, Side::Bid, 600_000, 10, TimeInForce::Gtc, 42);
    let message = order.to_vec();
    let mut frame = vec![0u8; frame_length(message.len())];
    encode_frame(&message, &mut frame).unwrap();
    assert_eq!(frame.len(), 110);

    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
    assert_eq!(hex(&hex_dump()), hex(&frame), "the hex dump");
    assert_eq!(hex(&annotated()), hex(&frame), "the field-by-field listing");

    // And it reads back as the same order.
    let (body, used) = FrameDecoder::next_frame(&frame).unwrap().unwrap();
    assert_eq!((Command::decode(body).unwrap().0, used), (order, 110));
}
