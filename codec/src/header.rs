//! The SBE message header and the Simple Open Framing Header (SOFH).

use zerocopy::big_endian;
use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The schema id of every message in this crate (`id` attribute of the schema XML).
pub const SCHEMA_ID: u16 = 1;
/// The schema version this crate writes. Readers do not reject other versions: a version only
/// appends fields or gives reserved bytes a meaning (an older sender wrote them as 0), so a newer
/// message is read by its known prefix (its longer block is skipped) and an older one must still
/// carry every field this version reads (else `BlockTooShort`). Version 2: `Fill` gained
/// `taker_order_complete` in a formerly reserved byte. Version 3: `NewOrder` gained its trigger
/// fields (a kind in a formerly reserved byte, five prices appended; a version-1/2 block of 56
/// bytes still decodes, the new fields zero) and the events `TriggerPending`, `TriggerPlaced`
/// and `TriggerFailed`; `ExpireReason::PriceBand` and reject reasons 308, 309 and 405.
pub const SCHEMA_VERSION: u16 = 3;

/// The standard 8-byte SBE message header that starts every message.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C)]
pub struct MessageHeader {
    /// Length of the root block that follows the header, in bytes.
    pub block_length: U16,
    /// Which message this is.
    pub template_id: U16,
    /// Which schema the template id belongs to; must be [`SCHEMA_ID`].
    pub schema_id: U16,
    /// The schema version the sender encoded with.
    pub version: U16,
}

/// Size of [`MessageHeader`] in bytes.
pub const MESSAGE_HEADER_BYTES: usize = 8;
const _: () = assert!(size_of::<MessageHeader>() == MESSAGE_HEADER_BYTES);

impl MessageHeader {
    /// The header for a message of this schema and version.
    pub const fn new(template_id: u16, block_length: u16) -> Self {
        Self {
            block_length: U16::new(block_length),
            template_id: U16::new(template_id),
            schema_id: U16::new(SCHEMA_ID),
            version: U16::new(SCHEMA_VERSION),
        }
    }
}

/// SOFH encoding type for SBE version 1.0, little-endian, as registered by the FIX Simple Open
/// Framing Header standard (v1.0, table "Encoding_Types"). Not to be confused with `0x5BE0`,
/// which the same table registers for SBE 1.0 *big*-endian: our messages are little-endian.
pub const SOFH_ENCODING_SBE_LE: u16 = 0xEB50;

/// SOFH encoding type for SBE version 1.0, big-endian: never sent, and refused on receipt (our
/// SBE messages are little-endian). Named so tests and docs can tell the two apart.
pub const SOFH_ENCODING_SBE_BE: u16 = 0x5BE0;

/// Simple Open Framing Header: 4-byte big-endian message length (including this header) and a
/// 2-byte big-endian encoding type. Precedes each SBE message on a TCP stream.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C)]
pub struct FramingHeader {
    /// Total frame length in bytes, this header included.
    pub message_length: big_endian::U32,
    /// Encoding type; [`SOFH_ENCODING_SBE_LE`] for our messages.
    pub encoding_type: big_endian::U16,
}

/// Size of [`FramingHeader`] in bytes.
pub const FRAMING_HEADER_BYTES: usize = 6;
const _: () = assert!(size_of::<FramingHeader>() == FRAMING_HEADER_BYTES);
