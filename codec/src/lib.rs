//! SBE-compatible fixed-layout binary messages: every command into the matching engine, every
//! event out of it, and the session layer of the binary order-entry gateway.
//!
//! `schema/exchange.xml` is the single source of truth (FIX Trading Community SBE 1.0 semantics,
//! little-endian). The Rust layouts in [`messages`] mirror it byte for byte, which a test checks,
//! so clients can generate their own codecs with the standard SBE tools.
//!
//! A message on the wire is the 8-byte [`MessageHeader`] followed by its root block. On a TCP
//! stream each message is preceded by a [`FramingHeader`] (SOFH). Decoding never panics: short
//! buffers, unknown templates, foreign schemas and bad lengths are [`DecodeError`]s. A block longer
//! than this version knows is accepted and its tail ignored (forward compatibility); a shorter one
//! is refused.

pub mod decimal;
pub mod header;
pub mod messages;
pub mod origin;
pub mod types;

mod envelope;
mod framing;

pub use envelope::{Command, Event, Session};
pub use framing::{FRAME_BYTES_MAX, FrameDecoder, encode_frame, frame_length};
pub use header::*;
pub use messages::*;
pub use origin::{GatewayTag, decode_journaled, encode_journaled};
pub use types::*;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header or block needs.
    #[error("buffer too short: need {needed} bytes, have {available}")]
    ShortBuffer {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The header names another schema.
    #[error("wrong schema id {0}")]
    WrongSchema(u16),
    /// No message with that template id (in this direction).
    #[error("unknown template id {0}")]
    UnknownTemplate(u16),
    /// The header's block length is shorter than the message's known block.
    #[error("block length {actual} shorter than {expected} for template {template_id}")]
    BlockTooShort {
        /// The template.
        template_id: u16,
        /// Bytes this version requires.
        expected: u16,
        /// Bytes the header declares.
        actual: u16,
    },
    /// An enum field holds an unknown code.
    #[error("invalid value {value} for {enum_name}")]
    InvalidEnumValue {
        /// The enum type.
        enum_name: &'static str,
        /// The code found.
        value: u16,
    },
    /// A SOFH frame declares an encoding type other than SBE little-endian.
    #[error("unsupported framing encoding type {0:#06x}")]
    WrongEncodingType(u16),
    /// A SOFH frame length is below the minimum or above [`FRAME_BYTES_MAX`].
    #[error("invalid frame length {0}")]
    InvalidFrameLength(u32),
}
