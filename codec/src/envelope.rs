//! [`Command`] and [`Event`]: the closed sets of messages in each direction, with header-checked
//! decoding and encoding.

use crate::DecodeError;
use crate::header::{MESSAGE_HEADER_BYTES, MessageHeader, SCHEMA_ID};
use crate::messages::*;
use zerocopy::{FromBytes, IntoBytes};

/// Reads the header and returns it with the root block's bytes (exactly the declared length).
fn split_message(bytes: &[u8]) -> Result<(MessageHeader, &[u8], usize), DecodeError> {
    let (header, rest) = MessageHeader::read_from_prefix(bytes)
        .map_err(|_| DecodeError::ShortBuffer { needed: MESSAGE_HEADER_BYTES, available: bytes.len() })?;
    if header.schema_id.get() != SCHEMA_ID {
        return Err(DecodeError::WrongSchema(header.schema_id.get()));
    }
    let block_length = usize::from(header.block_length.get());
    if rest.len() < block_length {
        return Err(DecodeError::ShortBuffer { needed: MESSAGE_HEADER_BYTES + block_length, available: bytes.len() });
    }
    Ok((header, &rest[..block_length], MESSAGE_HEADER_BYTES + block_length))
}

/// Reads a known block from a (possibly longer) declared block.
fn read_block<M: Message>(header: &MessageHeader, block: &[u8]) -> Result<M, DecodeError> {
    if block.len() < usize::from(M::BLOCK_LENGTH) {
        if M::MIN_BLOCK_LENGTH < M::BLOCK_LENGTH && block.len() == usize::from(M::MIN_BLOCK_LENGTH) {
            // An older version's whole block: the fields appended since then read as zero,
            // their documented "none" value.
            let mut message = M::new_zeroed();
            message.as_mut_bytes()[..block.len()].copy_from_slice(block);
            return Ok(message);
        }
        return Err(DecodeError::BlockTooShort {
            template_id: M::TEMPLATE_ID,
            expected: M::BLOCK_LENGTH,
            actual: header.block_length.get(),
        });
    }
    // The block is at least as long as M: a longer block comes from a newer schema version that
    // appended fields, which this version ignores.
    Ok(M::read_from_prefix(block).map(|(message, _)| message).expect("length checked above"))
}

/// Writes header + block into `out`, returning the bytes written, or `None` if `out` is too short.
fn write_message<M: Message>(message: &M, out: &mut [u8]) -> Option<usize> {
    let total = MESSAGE_HEADER_BYTES + usize::from(M::BLOCK_LENGTH);
    let out = out.get_mut(..total)?;
    let header = MessageHeader::new(M::TEMPLATE_ID, M::BLOCK_LENGTH);
    out[..MESSAGE_HEADER_BYTES].copy_from_slice(header.as_bytes());
    out[MESSAGE_HEADER_BYTES..].copy_from_slice(message.as_bytes());
    Some(total)
}

macro_rules! envelope {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub enum $name {
            $($variant($variant)),+
        }

        impl $name {
            /// Size of the largest encoded message (header included) of this direction.
            pub const ENCODED_BYTES_MAX: usize = {
                let mut max = 0;
                $(
                    let n = MESSAGE_HEADER_BYTES + size_of::<$variant>();
                    if n > max { max = n; }
                )+
                max
            };

            /// Decodes one message from the start of `bytes`; returns it and the bytes consumed
            /// (header plus the declared block length, which may exceed the known block).
            ///
            /// # Errors
            /// Short buffer, wrong schema id, unknown template id or a declared block shorter than
            /// the message's. Enum fields are *not* checked here: accessors report them.
            pub fn decode(bytes: &[u8]) -> Result<(Self, usize), DecodeError> {
                let (header, block, consumed) = split_message(bytes)?;
                let message = match header.template_id.get() {
                    $(<$variant as Message>::TEMPLATE_ID => $name::$variant(read_block(&header, block)?),)+
                    other => return Err(DecodeError::UnknownTemplate(other)),
                };
                Ok((message, consumed))
            }

            /// Encodes header and block into `out`; returns the bytes written, or `None` when
            /// `out` is shorter than the message.
            pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
                match self {
                    $($name::$variant(m) => write_message(m, out)),+
                }
            }

            /// Encodes into a new vector (convenience for tests and tools, not the hot path).
            pub fn to_vec(&self) -> Vec<u8> {
                let mut out = vec![0; Self::ENCODED_BYTES_MAX];
                let n = self.encode(&mut out).expect("buffer sized for the largest message");
                out.truncate(n);
                out
            }

            /// The message's template id.
            pub fn template_id(&self) -> u16 {
                match self {
                    $($name::$variant(_) => <$variant as Message>::TEMPLATE_ID),+
                }
            }

            /// The message's schema name.
            pub fn name(&self) -> &'static str {
                match self {
                    $($name::$variant(_) => <$variant as Message>::NAME),+
                }
            }
        }

        $(
            impl From<$variant> for $name {
                fn from(message: $variant) -> Self {
                    $name::$variant(message)
                }
            }
        )+
    };
}

envelope!(
    /// Every command the engine accepts.
    Command { NewOrder, CancelOrder, CancelReplace, MassCancel, Deposit, Withdraw, MarketControl, AddLiquidity, RemoveLiquidity, Swap, RoutedOrder }
);

envelope!(
    /// Every event the engine emits.
    Event {
        OrderAccepted,
        OrderRejected,
        Fill,
        OrderCanceled,
        OrderExpired,
        OrderReplaced,
        BookLevelUpdate,
        BalanceUpdate,
        MassCancelReport,
        MarketStatusChanged,
        LiquidityAdded,
        LiquidityRemoved,
        SwapExecuted,
        OrderRouted,
        TriggerPending,
        TriggerPlaced,
        TriggerFailed,
    }
);

envelope!(
    /// The binary gateway's session-layer messages (both directions).
    Session {
        Negotiate,
        NegotiateResponse,
        Establish,
        EstablishAck,
        SequenceHeartbeat,
        RetransmitRequest,
        Retransmission,
        RetransmitReject,
        Terminate,
        BusinessReject,
    }
);

impl Command {
    /// The user the command acts for.
    pub fn user_id(&self) -> crate::UserId {
        match self {
            Command::NewOrder(m) => m.user_id,
            Command::CancelOrder(m) => m.user_id,
            Command::CancelReplace(m) => m.user_id,
            Command::MassCancel(m) => m.user_id,
            Command::Deposit(m) => m.user_id,
            Command::Withdraw(m) => m.user_id,
            // An operator command acts for no user.
            Command::MarketControl(_) => crate::UserId::ZERO,
            Command::AddLiquidity(m) => m.user_id,
            Command::RemoveLiquidity(m) => m.user_id,
            Command::Swap(m) => m.user_id,
            Command::RoutedOrder(m) => m.user_id,
        }
    }
}

impl Event {
    /// The sequence of the command that caused the event.
    pub fn sequence(&self) -> crate::Sequence {
        match self {
            Event::OrderAccepted(m) => m.sequence,
            Event::OrderRejected(m) => m.sequence,
            Event::Fill(m) => m.sequence,
            Event::OrderCanceled(m) => m.sequence,
            Event::OrderExpired(m) => m.sequence,
            Event::OrderReplaced(m) => m.sequence,
            Event::BookLevelUpdate(m) => m.sequence,
            Event::BalanceUpdate(m) => m.sequence,
            Event::MassCancelReport(m) => m.sequence,
            Event::MarketStatusChanged(m) => m.sequence,
            Event::LiquidityAdded(m) => m.sequence,
            Event::LiquidityRemoved(m) => m.sequence,
            Event::SwapExecuted(m) => m.sequence,
            Event::OrderRouted(m) => m.sequence,
            Event::TriggerPending(m) => m.sequence,
            Event::TriggerPlaced(m) => m.sequence,
            Event::TriggerFailed(m) => m.sequence,
        }
    }
}
