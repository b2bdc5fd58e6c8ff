//! The gateway origin of a journaled command: which remote gateway process sent it and that
//! gateway's own sequence number for it (`exchange gateway`, issue #19 item 3).
//!
//! # Journal representation
//! A journal record's payload is one [`crate::Command`] (SBE header + block). A command that came
//! through the Kafka commands topic from a gateway process is followed, in the same payload, by a
//! second SBE message: [`GatewayOrigin`] (template id [`GatewayOrigin::TEMPLATE_ID`], a 16-byte
//! block: gateway id u64, gateway sequence u64, little-endian). It is a journal-only message: no
//! client sends it and it is not a [`crate::Command`] variant, so every wire protocol is
//! unchanged.
//!
//! Compatibility: a payload without the trailer (every record written before gateway processes
//! existed, and every command from a gateway inside the engine's process) decodes with no origin,
//! so old journals replay as before. A reader that ignores the trailer (an older binary, whose
//! `Command::decode` stops at the command's block) still reads the command, but not the
//! deduplication state: downgrading a node that has journaled gateway commands is not supported.
//!
//! The trailer's block length is read from its header like any SBE block: a longer block (fields
//! appended in a later version) is accepted, a shorter one refused.

use crate::header::{MESSAGE_HEADER_BYTES, MessageHeader, SCHEMA_ID};
use crate::{Command, DecodeError};
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Which gateway process sent a command, and its place in that gateway's own sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GatewayTag {
    /// The gateway process's configured id (`[cluster] gateway_id`, non-zero).
    pub gateway_id: u64,
    /// Strictly increasing per gateway id across its restarts; the engine applies a command
    /// only if this is above the highest it applied for the gateway (exactly once).
    pub gateway_sequence: u64,
}

/// The trailer block (see the module documentation).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C)]
pub struct GatewayOrigin {
    /// [`GatewayTag::gateway_id`].
    pub gateway_id: U64,
    /// [`GatewayTag::gateway_sequence`].
    pub gateway_sequence: U64,
}

impl GatewayOrigin {
    /// Template id: in the range 60–69, journal-only messages (not commands, not events).
    pub const TEMPLATE_ID: u16 = 60;
    /// Block length this version writes.
    pub const BLOCK_LENGTH: u16 = 16;
}

const _: () = assert!(size_of::<GatewayOrigin>() == GatewayOrigin::BLOCK_LENGTH as usize);

/// Bytes of a journal payload at most: the largest command and the trailer.
pub const JOURNALED_BYTES_MAX: usize = Command::ENCODED_BYTES_MAX + MESSAGE_HEADER_BYTES + size_of::<GatewayOrigin>();

/// Encodes `command` and, with a tag, the [`GatewayOrigin`] trailer into `out`; returns the bytes
/// written, or `None` when `out` is too short.
pub fn encode_journaled(command: &Command, tag: Option<GatewayTag>, out: &mut [u8]) -> Option<usize> {
    let length = command.encode(out)?;
    let Some(tag) = tag else { return Some(length) };
    let end = length + MESSAGE_HEADER_BYTES + size_of::<GatewayOrigin>();
    let trailer = out.get_mut(length..end)?;
    let header = MessageHeader::new(GatewayOrigin::TEMPLATE_ID, GatewayOrigin::BLOCK_LENGTH);
    trailer[..MESSAGE_HEADER_BYTES].copy_from_slice(header.as_bytes());
    let block =
        GatewayOrigin { gateway_id: U64::new(tag.gateway_id), gateway_sequence: U64::new(tag.gateway_sequence) };
    trailer[MESSAGE_HEADER_BYTES..].copy_from_slice(block.as_bytes());
    Some(end)
}

/// Decodes a journal payload: the command and its gateway origin, if it has one.
///
/// # Errors
/// The command does not decode, or bytes follow it that are not a whole [`GatewayOrigin`].
pub fn decode_journaled(payload: &[u8]) -> Result<(Command, Option<GatewayTag>), DecodeError> {
    let (command, consumed) = Command::decode(payload)?;
    let rest = &payload[consumed..];
    if rest.is_empty() {
        return Ok((command, None));
    }
    let (header, block) = MessageHeader::read_from_prefix(rest)
        .map_err(|_| DecodeError::ShortBuffer { needed: consumed + MESSAGE_HEADER_BYTES, available: payload.len() })?;
    if header.schema_id.get() != SCHEMA_ID {
        return Err(DecodeError::WrongSchema(header.schema_id.get()));
    }
    if header.template_id.get() != GatewayOrigin::TEMPLATE_ID {
        return Err(DecodeError::UnknownTemplate(header.template_id.get()));
    }
    let declared = usize::from(header.block_length.get());
    if declared < size_of::<GatewayOrigin>() {
        return Err(DecodeError::BlockTooShort {
            template_id: GatewayOrigin::TEMPLATE_ID,
            expected: GatewayOrigin::BLOCK_LENGTH,
            actual: header.block_length.get(),
        });
    }
    if block.len() < declared {
        return Err(DecodeError::ShortBuffer {
            needed: payload.len() - block.len() + declared,
            available: payload.len(),
        });
    }
    let (origin, _) = GatewayOrigin::read_from_prefix(block).expect("length checked above");
    Ok((
        command,
        Some(GatewayTag { gateway_id: origin.gateway_id.get(), gateway_sequence: origin.gateway_sequence.get() }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Deposit, UserId};

    fn deposit() -> Command {
        Command::Deposit(Deposit { user_id: UserId::new(7), ..Deposit::default() })
    }

    #[test]
    fn a_payload_without_trailer_is_an_old_record() {
        let command = deposit();
        assert_eq!(decode_journaled(&command.to_vec()), Ok((command, None)));
    }

    #[test]
    fn the_trailer_round_trips_and_damage_is_an_error() {
        let command = deposit();
        let tag = GatewayTag { gateway_id: 3, gateway_sequence: 1 << 40 };
        let mut out = [0u8; JOURNALED_BYTES_MAX];
        let length = encode_journaled(&command, Some(tag), &mut out).unwrap();
        assert_eq!(length, command.to_vec().len() + 24);
        assert_eq!(decode_journaled(&out[..length]), Ok((command, Some(tag))));
        assert!(decode_journaled(&out[..length - 1]).is_err(), "a torn trailer");
        let mut foreign = out;
        foreign[command.to_vec().len() + 2] = 99;
        assert_eq!(decode_journaled(&foreign[..length]), Err(DecodeError::UnknownTemplate(99)));
    }
}
