//! A zero-copy FIX tag=value parser over the receive buffer.
//!
//! Invariants:
//! - [`parse`] never allocates, never panics and looks at most [`MESSAGE_BYTES_MAX`] bytes (plus
//!   the header) before deciding: a message is either complete, incomplete (wait for more bytes,
//!   only while the declared length is within bounds) or garbled (skip bytes and resynchronise).
//! - A complete message starts with `8=FIX.4.4` or `8=FIXT.1.1` ([`BEGIN_STRINGS`]), then
//!   `9=<BodyLength>`, then `35=<MsgType>`; the
//!   body length is exact (the bytes after the `9=` field up to and including the SOH before
//!   `10=`) and the checksum (the byte sum modulo 256 of everything before `10=`) matches.
//! - A [`Message`] borrows the buffer: fields are byte ranges, looked up by tag with a linear
//!   scan over at most [`FIELDS_MAX`] entries kept in a fixed array.
//! - Garbled input is reported with the number of bytes to drop: up to the next `8=FIX` that could
//!   start a message, so the stream resynchronises without consuming a sequence number.

/// Largest BodyLength accepted; longer messages are garbled.
pub const MESSAGE_BYTES_MAX: usize = 4096;
/// Most fields one message may have; more makes it garbled.
pub const FIELDS_MAX: usize = 128;
/// The FIX 4.4 BeginString.
pub const BEGIN_STRING: &[u8] = b"FIX.4.4";
/// The FIXT 1.1 BeginString (FIX 5.0 SP2 application messages over the FIXT session layer).
pub const BEGIN_STRING_FIXT: &[u8] = b"FIXT.1.1";
/// The BeginStrings accepted; any other makes a message garbled.
pub const BEGIN_STRINGS: [&[u8]; 2] = [BEGIN_STRING, BEGIN_STRING_FIXT];
/// Field separator.
pub const SOH: u8 = 0x01;

/// The fixed prefixes `8=<BeginString>|9=` of the accepted BeginStrings.
const PREFIXES: [&[u8]; 2] = [b"8=FIX.4.4\x019=", b"8=FIXT.1.1\x019="];

/// One field: tag and the value's byte range in the buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Field {
    tag: u32,
    start: u32,
    end: u32,
}

/// A complete, checksummed message borrowed from the receive buffer.
#[derive(Clone)]
pub struct Message<'a> {
    bytes: &'a [u8],
    fields: [Field; FIELDS_MAX],
    count: usize,
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(self.bytes).replace('\x01', "|"))
    }
}

impl<'a> Message<'a> {
    /// The whole message as received (header to checksum).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// BeginString (8): one of [`BEGIN_STRINGS`].
    pub fn begin_string(&self) -> &'a [u8] {
        self.value_at(0)
    }

    /// MsgType (35), always present.
    pub fn msg_type(&self) -> &'a [u8] {
        self.value_at(2)
    }

    fn value_at(&self, index: usize) -> &'a [u8] {
        let field = self.fields[index];
        &self.bytes[field.start as usize..field.end as usize]
    }

    /// The first value of `tag`.
    pub fn get(&self, tag: u32) -> Option<&'a [u8]> {
        (0..self.count).find(|&i| self.fields[i].tag == tag).map(|i| self.value_at(i))
    }

    /// The first value of `tag` as UTF-8 text.
    pub fn text(&self, tag: u32) -> Option<&'a str> {
        self.get(tag).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// `(tag, value)` of every field in order (header and trailer included).
    pub fn fields(&self) -> impl Iterator<Item = (u32, &'a [u8])> + '_ {
        (0..self.count).map(|i| (self.fields[i].tag, self.value_at(i)))
    }

    /// Whether a tag occurs more than once.
    pub fn has_repeated_tag(&self) -> Option<u32> {
        for i in 0..self.count {
            for j in i + 1..self.count {
                if self.fields[i].tag == self.fields[j].tag {
                    return Some(self.fields[i].tag);
                }
            }
        }
        None
    }
}

/// What [`parse`] found at the start of the buffer.
#[derive(Debug)]
// The message lives on the stack on purpose: boxing it would allocate per message.
#[allow(clippy::large_enum_variant)]
pub enum Parsed<'a> {
    /// A complete message of `used` bytes.
    Complete(Message<'a>, usize),
    /// More bytes are needed.
    Incomplete,
    /// Not a valid message: drop this many bytes (at least one) and try again.
    Garbled(usize),
}

/// Parses the first message of `buffer`.
pub fn parse(buffer: &[u8]) -> Parsed<'_> {
    if buffer.is_empty() {
        return Parsed::Incomplete;
    }
    // The fixed prefix "8=FIX.4.4\x019=" or "8=FIXT.1.1\x019=".
    let mut matched = None;
    for candidate in PREFIXES {
        let length = buffer.len().min(candidate.len());
        if buffer[..length] == candidate[..length] {
            if buffer.len() < candidate.len() {
                return Parsed::Incomplete;
            }
            matched = Some(candidate);
            break;
        }
    }
    let Some(prefix) = matched else { return Parsed::Garbled(resync(buffer)) };
    // BodyLength digits.
    let mut position = prefix.len();
    let mut body_length = 0usize;
    loop {
        let Some(&byte) = buffer.get(position) else { return Parsed::Incomplete };
        match byte {
            b'0'..=b'9' if position - prefix.len() < 5 => body_length = body_length * 10 + usize::from(byte - b'0'),
            SOH if position > prefix.len() => break,
            _ => return Parsed::Garbled(resync(buffer)),
        }
        position += 1;
    }
    if body_length > MESSAGE_BYTES_MAX {
        return Parsed::Garbled(resync(buffer));
    }
    let body_start = position + 1;
    let body_end = body_start + body_length; // the index of "10="
    let total = body_end + 7; // "10=NNN\x01"
    if buffer.len() < total {
        return Parsed::Incomplete;
    }
    let trailer = &buffer[body_end..total];
    if &trailer[..3] != b"10=" || trailer[6] != SOH || !trailer[3..6].iter().all(u8::is_ascii_digit) {
        return Parsed::Garbled(resync(buffer));
    }
    let declared = trailer[3..6].iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    let sum = buffer[..body_end].iter().fold(0u32, |acc, &b| acc.wrapping_add(u32::from(b))) % 256;
    if declared != sum || body_length == 0 || buffer[body_end - 1] != SOH {
        return Parsed::Garbled(resync(buffer));
    }
    let bytes = &buffer[..total];
    let mut message = Message { bytes, fields: [Field::default(); FIELDS_MAX], count: 0 };
    message.fields[0] = Field { tag: 8, start: 2, end: prefix.len() as u32 - 3 };
    message.fields[1] = Field { tag: 9, start: prefix.len() as u32, end: position as u32 };
    message.count = 2;
    let mut cursor = body_start;
    while cursor < total {
        let Some(field) = field_at(bytes, cursor) else { return Parsed::Garbled(resync(buffer)) };
        if message.count == FIELDS_MAX {
            return Parsed::Garbled(resync(buffer));
        }
        message.fields[message.count] = field;
        message.count += 1;
        cursor = field.end as usize + 1;
    }
    // MsgType third; CheckSum last and only there.
    if message.fields[2].tag != 35 || message.fields[2].start == message.fields[2].end {
        return Parsed::Garbled(resync(buffer));
    }
    let last = message.count - 1;
    if message.fields[last].tag != 10 || (2..last).any(|i| matches!(message.fields[i].tag, 8..=10)) {
        return Parsed::Garbled(resync(buffer));
    }
    Parsed::Complete(message, total)
}

/// The field starting at `start`: digits, '=', a non-empty value, SOH.
fn field_at(bytes: &[u8], start: usize) -> Option<Field> {
    let mut position = start;
    let mut tag = 0u32;
    while let Some(&byte) = bytes.get(position) {
        match byte {
            b'0'..=b'9' if position - start < 9 => tag = tag * 10 + u32::from(byte - b'0'),
            b'=' if position > start && bytes[start] != b'0' => break,
            _ => return None,
        }
        position += 1;
    }
    let value_start = position + 1;
    let length = bytes.get(value_start..)?.iter().position(|&b| b == SOH)?;
    if length == 0 {
        return None;
    }
    Some(Field { tag, start: value_start as u32, end: (value_start + length) as u32 })
}

/// Bytes to drop to reach the next possible message start (`8=FIX` after the first byte), or all
/// but a tail that could be the beginning of one.
fn resync(buffer: &[u8]) -> usize {
    const START: &[u8] = b"8=FIX";
    if let Some(offset) = buffer[1..].windows(START.len()).position(|w| w == START) {
        return offset + 1;
    }
    // Keep a tail that is a prefix of START.
    for keep in (1..START.len()).rev() {
        if buffer.len() > keep && buffer[buffer.len() - keep..] == START[..keep] {
            return buffer.len() - keep;
        }
    }
    buffer.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::checksum;

    fn build(body: &str) -> Vec<u8> {
        let body = body.replace('|', "\x01");
        let mut message = format!("8=FIX.4.4\x019={}\x01{}", body.len(), body).into_bytes();
        let sum = checksum(&message);
        message.extend_from_slice(format!("10={sum:03}\x01").as_bytes());
        message
    }

    #[test]
    fn parses_a_message() {
        let bytes = build("35=0|49=A|56=B|34=1|52=20260101-00:00:00.000|");
        let Parsed::Complete(message, used) = parse(&bytes) else { panic!() };
        assert_eq!(used, bytes.len());
        assert_eq!(message.msg_type(), b"0");
        assert_eq!(message.get(49), Some(&b"A"[..]));
        assert_eq!(message.get(34), Some(&b"1"[..]));
        assert_eq!(message.get(999), None);
    }

    #[test]
    fn incomplete_then_complete() {
        let bytes = build("35=0|49=A|56=B|34=1|");
        for cut in 0..bytes.len() {
            assert!(matches!(parse(&bytes[..cut]), Parsed::Incomplete), "cut {cut}");
        }
    }

    #[test]
    fn garbled_checksum_and_length() {
        let mut bytes = build("35=0|49=A|56=B|34=1|");
        let n = bytes.len();
        bytes[n - 2] = if bytes[n - 2] == b'0' { b'1' } else { b'0' };
        assert!(matches!(parse(&bytes), Parsed::Garbled(n2) if n2 == n));
        let wrong_length = b"8=FIX.4.4\x019=5\x0135=0\x0149=A\x0110=000\x01".to_vec();
        assert!(matches!(parse(&wrong_length), Parsed::Garbled(_)));
        let not_msgtype = build("49=A|35=0|56=B|34=1|");
        assert!(matches!(parse(&not_msgtype), Parsed::Garbled(_)));
    }

    #[test]
    fn resynchronises_on_the_next_message() {
        let mut bytes = b"garbage8=FI".to_vec();
        assert!(matches!(parse(&bytes), Parsed::Garbled(7)));
        bytes.drain(..7);
        assert!(matches!(parse(&bytes), Parsed::Incomplete));
    }

    #[test]
    fn fixt_begin_string() {
        let body = "35=0|49=A|56=B|34=1|".replace('|', "\x01");
        let mut bytes = format!("8=FIXT.1.1\x019={}\x01{}", body.len(), body).into_bytes();
        let sum = checksum(&bytes);
        bytes.extend_from_slice(format!("10={sum:03}\x01").as_bytes());
        let Parsed::Complete(message, used) = parse(&bytes) else { panic!() };
        assert_eq!((used, message.begin_string(), message.msg_type()), (bytes.len(), &b"FIXT.1.1"[..], &b"0"[..]));
        for cut in 0..bytes.len() {
            assert!(matches!(parse(&bytes[..cut]), Parsed::Incomplete), "cut {cut}");
        }
        let fix44 = build("35=0|");
        let Parsed::Complete(message, _) = parse(&fix44) else { panic!() };
        assert_eq!(message.begin_string(), b"FIX.4.4");
        let other = b"8=FIX.4.2\x019=5\x0135=0\x0110=000\x01";
        assert!(matches!(parse(other), Parsed::Garbled(_)));
    }
}
