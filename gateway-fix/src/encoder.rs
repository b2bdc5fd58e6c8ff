//! Outgoing messages: a body writer and the framing around it (header, BodyLength, CheckSum).
//!
//! Invariants: every message produced starts `8=<BeginString>|9=<n>|35=<type>|49=..|56=..|34=<seq>|`
//! (BeginString `FIX.4.4` or `FIXT.1.1`, the session's)
//! with the exact body length and checksum; the CompID piece is prebuilt once per session
//! ([`Header`]), so encoding a message is a few `extend_from_slice` calls into one buffer.

use crate::parser::SOH;
use bytes::Bytes;

/// The byte sum modulo 256 of `bytes` (FIX CheckSum).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, &b| acc.wrapping_add(b))
}

/// Writes `value` in decimal into `out`.
pub fn push_uint(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut n = digits.len();
    loop {
        n -= 1;
        digits[n] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[n..]);
}

fn uint_len(mut value: u64) -> usize {
    let mut n = 1;
    while value >= 10 {
        value /= 10;
        n += 1;
    }
    n
}

/// The application fields of a message (everything after the standard header), as tag=value
/// pairs each ended by SOH.
#[derive(Debug, Default, Clone)]
pub struct Body(pub Vec<u8>);

impl Body {
    /// An empty body.
    pub fn new() -> Self {
        Self(Vec::with_capacity(256))
    }

    /// Appends `tag=value|`. Values with SOH are the caller's bug; SOH bytes are replaced by
    /// spaces so the framing stays valid.
    pub fn field(&mut self, tag: u32, value: impl AsRef<[u8]>) -> &mut Self {
        push_uint(&mut self.0, u64::from(tag));
        self.0.push(b'=');
        self.0.extend(value.as_ref().iter().map(|&b| if b == SOH { b' ' } else { b }));
        self.0.push(SOH);
        self
    }

    /// Appends `tag=<decimal>|`.
    pub fn uint(&mut self, tag: u32, value: u64) -> &mut Self {
        push_uint(&mut self.0, u64::from(tag));
        self.0.push(b'=');
        push_uint(&mut self.0, value);
        self.0.push(SOH);
        self
    }
}

/// The prebuilt pieces of one session's header.
#[derive(Debug, Clone)]
pub struct Header {
    /// `8=<BeginString>|9=`.
    begin: Vec<u8>,
    /// `49=<our CompID>|56=<their CompID>|34=`.
    comp_ids: Vec<u8>,
}

/// Resend markers of a message: `43=Y|` and `122=<original SendingTime>|`.
#[derive(Debug, Clone, Copy)]
pub struct PossDup<'a> {
    /// The original SendingTime, if known (gap fills have none).
    pub orig_sending_time: Option<&'a [u8]>,
}

impl Header {
    /// Pieces for a FIX 4.4 session where we are `sender` and the counterparty `target`.
    pub fn new(sender: &str, target: &str) -> Self {
        Self::with_begin_string(crate::parser::BEGIN_STRING, sender, target)
    }

    /// Pieces for a session with BeginString `begin_string` (`FIX.4.4` or `FIXT.1.1`).
    pub fn with_begin_string(begin_string: &[u8], sender: &str, target: &str) -> Self {
        let mut begin = b"8=".to_vec();
        begin.extend_from_slice(begin_string);
        begin.extend_from_slice(b"\x019=");
        let mut comp_ids = Vec::new();
        comp_ids.extend_from_slice(b"49=");
        comp_ids.extend_from_slice(sender.as_bytes());
        comp_ids.extend_from_slice(b"\x0156=");
        comp_ids.extend_from_slice(target.as_bytes());
        comp_ids.extend_from_slice(b"\x0134=");
        Self { begin, comp_ids }
    }

    /// The BeginString this header writes.
    pub fn begin_string(&self) -> &[u8] {
        &self.begin[2..self.begin.len() - 3]
    }

    /// Frames a complete message.
    pub fn encode(
        &self,
        msg_type: &[u8],
        sequence: u64,
        sending_time: &[u8],
        poss_dup: Option<PossDup<'_>>,
        body: &[u8],
    ) -> Bytes {
        let orig = poss_dup.and_then(|p| p.orig_sending_time);
        let length = 3
            + msg_type.len()
            + 1
            + self.comp_ids.len()
            + uint_len(sequence)
            + 1
            + if poss_dup.is_some() { 5 } else { 0 }
            + 3
            + sending_time.len()
            + 1
            + orig.map_or(0, |t| 5 + t.len())
            + body.len();
        let mut out = Vec::with_capacity(length + 32);
        out.extend_from_slice(&self.begin);
        push_uint(&mut out, length as u64);
        out.push(SOH);
        let start = out.len();
        out.extend_from_slice(b"35=");
        out.extend_from_slice(msg_type);
        out.push(SOH);
        out.extend_from_slice(&self.comp_ids);
        push_uint(&mut out, sequence);
        out.push(SOH);
        if poss_dup.is_some() {
            out.extend_from_slice(b"43=Y\x01");
        }
        out.extend_from_slice(b"52=");
        out.extend_from_slice(sending_time);
        out.push(SOH);
        if let Some(time) = orig {
            out.extend_from_slice(b"122=");
            out.extend_from_slice(time);
            out.push(SOH);
        }
        out.extend_from_slice(body);
        debug_assert_eq!(out.len() - start, length);
        let sum = checksum(&out);
        out.extend_from_slice(b"10=");
        out.extend_from_slice(&[b'0' + sum / 100, b'0' + sum / 10 % 10, b'0' + sum % 10, SOH]);
        Bytes::from(out)
    }
}

/// UTC timestamps as FIX writes them: `YYYYMMDD-HH:MM:SS.sss`.
pub mod time {
    /// Length of a formatted timestamp.
    pub const LENGTH: usize = 21;

    /// Milliseconds since the Unix epoch, now.
    pub fn now_ms() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }

    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    fn civil_from_days(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (if m <= 2 { y + 1 } else { y }, m, d)
    }

    /// Formats milliseconds since the epoch.
    pub fn format(ms: i64) -> [u8; LENGTH] {
        let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
        let (y, mo, d) = civil_from_days(days);
        let (h, mi, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
        let mut out = [0u8; LENGTH];
        let mut put = |at: usize, value: i64, width: usize| {
            let mut v = value;
            for i in (0..width).rev() {
                out[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, y, 4);
        put(4, mo, 2);
        put(6, d, 2);
        put(9, h, 2);
        put(12, mi, 2);
        put(15, s, 2);
        put(18, milli, 3);
        out[8] = b'-';
        out[11] = b':';
        out[14] = b':';
        out[17] = b'.';
        out
    }

    /// Parses `YYYYMMDD-HH:MM:SS[.sss[sss[sss]]]` into milliseconds since the epoch.
    pub fn parse(text: &[u8]) -> Option<i64> {
        if text.len() < 17 || text[8] != b'-' || text[11] != b':' || text[14] != b':' {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<i64> {
            text[range].iter().try_fold(0i64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0')))
        };
        let (y, mo, d) = (number(0..4)?, number(4..6)?, number(6..8)?);
        let (h, mi, s) = (number(9..11)?, number(12..14)?, number(15..17)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
            return None;
        }
        let milli = match text.len() {
            17 => 0,
            21 | 24 | 27 if text[17] == b'.' => {
                let fraction = number(18..text.len())?;
                let digits = text.len() - 18;
                fraction / 10i64.pow(digits as u32 - 3)
            }
            _ => return None,
        };
        Some(((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000 + s * 1000 + milli)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trip() {
            for ms in [0, 1_700_000_000_123, 1_798_761_599_999, 951_782_400_000] {
                assert_eq!(super::parse(&super::format(ms)), Some(ms));
            }
            assert_eq!(&super::format(1_700_000_000_123), b"20231114-22:13:20.123");
            assert_eq!(super::parse(b"20231114-22:13:20"), Some(1_700_000_000_000));
            assert_eq!(super::parse(b"20231114-22:13:20.123456"), Some(1_700_000_000_123));
            assert_eq!(super::parse(b"2023111422:13:20"), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{Parsed, parse};

    #[test]
    fn encoded_messages_parse() {
        let header = Header::new("GW", "CLIENT");
        let mut body = Body::new();
        body.field(58, "hello").uint(7, 12);
        for poss_dup in [None, Some(PossDup { orig_sending_time: Some(b"20231114-22:13:20.123") })] {
            let bytes = header.encode(b"8", 1234, b"20231114-22:13:20.999", poss_dup, &body.0);
            let Parsed::Complete(message, used) = parse(&bytes) else { panic!("{bytes:?}") };
            assert_eq!(used, bytes.len());
            assert_eq!(message.get(34), Some(&b"1234"[..]));
            assert_eq!(message.get(58), Some(&b"hello"[..]));
            assert_eq!(message.get(43).is_some(), poss_dup.is_some());
        }
        let fixt = Header::with_begin_string(b"FIXT.1.1", "GW", "CLIENT");
        assert_eq!(fixt.begin_string(), b"FIXT.1.1");
        let bytes = fixt.encode(b"0", 7, b"20231114-22:13:20.999", None, b"");
        let Parsed::Complete(message, _) = parse(&bytes) else { panic!("{bytes:?}") };
        assert_eq!((message.begin_string(), message.get(34)), (&b"FIXT.1.1"[..], Some(&b"7"[..])));
    }
}
