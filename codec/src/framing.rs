//! Simple Open Framing Header (SOFH) framing for TCP streams.

use crate::DecodeError;
use crate::header::{FRAMING_HEADER_BYTES, FramingHeader, MESSAGE_HEADER_BYTES, SOFH_ENCODING_SBE_LE};
use zerocopy::{FromBytes, IntoBytes, big_endian};

/// Largest frame (SOFH included) a peer may send. Bounds every receive buffer.
pub const FRAME_BYTES_MAX: usize = 4096;

/// Smallest valid frame: the framing header and an SBE message header.
const FRAME_BYTES_MIN: usize = FRAMING_HEADER_BYTES + MESSAGE_HEADER_BYTES;

/// The total length (SOFH included) of the frame for a message of `message_bytes`.
pub const fn frame_length(message_bytes: usize) -> usize {
    FRAMING_HEADER_BYTES + message_bytes
}

/// Writes a SOFH followed by `message` into `out`; returns the frame length, or `None` if `out`
/// is too short or the frame would exceed [`FRAME_BYTES_MAX`].
pub fn encode_frame(message: &[u8], out: &mut [u8]) -> Option<usize> {
    let total = frame_length(message.len());
    if total > FRAME_BYTES_MAX {
        return None;
    }
    let out = out.get_mut(..total)?;
    let header = FramingHeader {
        message_length: big_endian::U32::new(total as u32),
        encoding_type: big_endian::U16::new(SOFH_ENCODING_SBE_LE),
    };
    out[..FRAMING_HEADER_BYTES].copy_from_slice(header.as_bytes());
    out[FRAMING_HEADER_BYTES..].copy_from_slice(message);
    Some(total)
}

/// Splits a byte stream into SBE messages. Stateless: call [`FrameDecoder::next_frame`] on the
/// unconsumed part of the receive buffer.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameDecoder;

impl FrameDecoder {
    /// Looks for one complete frame at the start of `buffer`.
    ///
    /// Returns `Ok(None)` when more bytes are needed, or `Ok(Some((message, frame_length)))` with
    /// the SBE message (without the SOFH) and the bytes to consume.
    ///
    /// # Errors
    /// A wrong encoding type or a length outside `FRAME_BYTES_MIN..=FRAME_BYTES_MAX`: the stream
    /// cannot be resynchronised and the connection should be closed.
    pub fn next_frame(buffer: &[u8]) -> Result<Option<(&[u8], usize)>, DecodeError> {
        let Ok((header, _)) = FramingHeader::read_from_prefix(buffer) else {
            return Ok(None);
        };
        let encoding = header.encoding_type.get();
        if encoding != SOFH_ENCODING_SBE_LE {
            return Err(DecodeError::WrongEncodingType(encoding));
        }
        let length = header.message_length.get();
        let length_bytes = length as usize;
        if !(FRAME_BYTES_MIN..=FRAME_BYTES_MAX).contains(&length_bytes) {
            return Err(DecodeError::InvalidFrameLength(length));
        }
        match buffer.get(FRAMING_HEADER_BYTES..length_bytes) {
            Some(message) => Ok(Some((message, length_bytes))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::SOFH_ENCODING_SBE_BE;

    #[test]
    fn round_trip_and_partial_reads() {
        let message = [7u8; 16];
        let mut out = [0u8; 64];
        let n = encode_frame(&message, &mut out).unwrap();
        assert_eq!(n, 22);
        // Both SOFH fields are big-endian (network byte order); 0xEB50 is SBE 1.0 little-endian.
        assert_eq!(&out[..6], &[0, 0, 0, 22, 0xEB, 0x50]);
        for cut in 0..n {
            assert_eq!(FrameDecoder::next_frame(&out[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (body, used) = FrameDecoder::next_frame(&out[..n]).unwrap().unwrap();
        assert_eq!((body, used), (&message[..], n));
    }

    #[test]
    fn rejects_bad_encoding_and_lengths() {
        let bad_encoding = [0, 0, 0, 22, 0x12, 0x34];
        assert_eq!(FrameDecoder::next_frame(&bad_encoding), Err(DecodeError::WrongEncodingType(0x1234)));
        // SBE 1.0 big-endian: a well-formed SOFH, but not the byte order of our messages.
        let big_endian_sbe = [0, 0, 0, 22, 0x5B, 0xE0];
        assert_eq!(
            FrameDecoder::next_frame(&big_endian_sbe),
            Err(DecodeError::WrongEncodingType(SOFH_ENCODING_SBE_BE))
        );
        // The same bytes read little-endian would be 0x50EB: also refused.
        let swapped = [0, 0, 0, 22, 0x50, 0xEB];
        assert_eq!(FrameDecoder::next_frame(&swapped), Err(DecodeError::WrongEncodingType(0x50EB)));
        let too_short = [0, 0, 0, 5, 0xEB, 0x50];
        assert_eq!(FrameDecoder::next_frame(&too_short), Err(DecodeError::InvalidFrameLength(5)));
        let too_long = [0, 1, 0, 0, 0xEB, 0x50];
        assert_eq!(FrameDecoder::next_frame(&too_long), Err(DecodeError::InvalidFrameLength(65536)));
        assert_eq!(encode_frame(&[0; FRAME_BYTES_MAX], &mut [0; 2 * FRAME_BYTES_MAX]), None);
    }
}
