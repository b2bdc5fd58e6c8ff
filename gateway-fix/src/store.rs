//! Per-session persistence: the outbound message log and the inbound sequence number.
//!
//! Layout, in `<store_dir>/<SenderCompID>@<TargetCompID>/` (the client's CompIDs; `@` cannot
//! occur in a CompID, so two sessions never share a directory):
//! - `outbound.log`: one record per outbound sequenced message, in sequence order:
//!   `[u32 record length][u64 sequence][u8 kind][u8 msg type length][msg type][21-byte SendingTime][body]`
//!   (little-endian). Kind 0 is an administrative message (only its number is kept: it is
//!   gap-filled on resend), kind 1 an application message with its body (resent as it was).
//! - `inbound.seq`: the next expected inbound sequence number, 8 bytes little-endian.
//!
//! Invariants: an outbound message is appended and `fsync`ed ([`Store::sync`]) before its bytes
//! are handed to the socket, so after a crash the next outbound number is never reused. The
//! inbound number is written on every change and synced with the outbound log (a crash may lose
//! the last increments: the client is then asked to resend, and PossDup replays are handled).
//! A truncated last record (crash while appending) is ignored on load. A logon with
//! ResetSeqNumFlag truncates both.

use crate::encoder::time;
use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// An application message kept for resending.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Its sequence number.
    pub sequence: u64,
    /// MsgType.
    pub msg_type: Bytes,
    /// The original SendingTime.
    pub sending_time: [u8; time::LENGTH],
    /// The fields after the standard header.
    pub body: Bytes,
}

/// What a store held at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Next outbound sequence number.
    pub next_outbound: u64,
    /// Next expected inbound sequence number.
    pub next_inbound: u64,
    /// The last application messages (at most the requested window), oldest first.
    pub messages: Vec<StoredMessage>,
}

/// The open files of one session.
#[derive(Debug)]
pub struct Store {
    log: File,
    inbound: File,
}

impl Store {
    /// Opens (creating) the store in `directory`, keeping at most `window` application messages
    /// of the log in memory.
    ///
    /// # Errors
    /// File system errors.
    pub fn open(directory: &Path, window: usize) -> io::Result<(Self, Recovered)> {
        std::fs::create_dir_all(directory)?;
        let mut log = OpenOptions::new().read(true).append(true).create(true).open(directory.join("outbound.log"))?;
        let inbound = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(directory.join("inbound.seq"))?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)?;
        let mut recovered = Recovered { next_outbound: 1, next_inbound: 1, messages: Vec::new() };
        let mut position = 0;
        let mut valid_end = 0;
        while let Some(header) = bytes.get(position..position + 4) {
            let length = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
            let Some(record) = bytes.get(position + 4..position + 4 + length) else { break };
            if record.len() < 10 {
                break;
            }
            let sequence = u64::from_le_bytes(record[..8].try_into().expect("8 bytes"));
            let kind = record[8];
            let type_length = usize::from(record[9]);
            if kind == 1 {
                let Some(rest) = record.get(10..) else { break };
                if rest.len() < type_length + time::LENGTH {
                    break;
                }
                let msg_type = Bytes::copy_from_slice(&rest[..type_length]);
                let sending_time = rest[type_length..type_length + time::LENGTH].try_into().expect("length checked");
                let body = Bytes::copy_from_slice(&rest[type_length + time::LENGTH..]);
                recovered.messages.push(StoredMessage { sequence, msg_type, sending_time, body });
                if recovered.messages.len() > window.saturating_mul(2).max(1024) {
                    let excess = recovered.messages.len() - window;
                    recovered.messages.drain(..excess);
                }
            }
            recovered.next_outbound = sequence + 1;
            position += 4 + length;
            valid_end = position;
        }
        if recovered.messages.len() > window {
            let excess = recovered.messages.len() - window;
            recovered.messages.drain(..excess);
        }
        if valid_end != bytes.len() {
            // A torn last record: drop it so appends continue on a record boundary.
            log.set_len(valid_end as u64)?;
        }
        let mut number = [0u8; 8];
        if inbound.read_exact_at(&mut number, 0).is_ok() {
            recovered.next_inbound = u64::from_le_bytes(number).max(1);
        }
        Ok((Self { log, inbound }, recovered))
    }

    /// Appends an administrative message's number.
    ///
    /// # Errors
    /// File system errors.
    pub fn append_admin(&mut self, sequence: u64) -> io::Result<()> {
        let mut record = Vec::with_capacity(14);
        record.extend_from_slice(&10u32.to_le_bytes());
        record.extend_from_slice(&sequence.to_le_bytes());
        record.extend_from_slice(&[0, 0]);
        self.log.write_all(&record)
    }

    /// Appends an application message.
    ///
    /// # Errors
    /// File system errors.
    pub fn append_application(&mut self, message: &StoredMessage) -> io::Result<()> {
        let length = 10 + message.msg_type.len() + time::LENGTH + message.body.len();
        let mut record = Vec::with_capacity(4 + length);
        record.extend_from_slice(&(length as u32).to_le_bytes());
        record.extend_from_slice(&message.sequence.to_le_bytes());
        record.push(1);
        record.push(message.msg_type.len() as u8);
        record.extend_from_slice(&message.msg_type);
        record.extend_from_slice(&message.sending_time);
        record.extend_from_slice(&message.body);
        self.log.write_all(&record)
    }

    /// Records the next expected inbound number (not synced; see the module docs).
    ///
    /// # Errors
    /// File system errors.
    pub fn set_inbound(&mut self, next_inbound: u64) -> io::Result<()> {
        self.inbound.write_all_at(&next_inbound.to_le_bytes(), 0)
    }

    /// Makes everything written so far durable.
    ///
    /// # Errors
    /// File system errors.
    pub fn sync(&mut self) -> io::Result<()> {
        self.log.sync_data()?;
        self.inbound.sync_data()
    }

    /// Forgets everything (ResetSeqNumFlag): both series restart at 1.
    ///
    /// # Errors
    /// File system errors.
    pub fn reset(&mut self) -> io::Result<()> {
        self.log.set_len(0)?;
        self.set_inbound(1)?;
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_torn_tail() {
        let dir = std::env::temp_dir().join(format!("gateway-fix-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let (mut store, recovered) = Store::open(&dir, 10).unwrap();
            assert_eq!((recovered.next_outbound, recovered.next_inbound), (1, 1));
            store.append_admin(1).unwrap();
            let message = StoredMessage {
                sequence: 2,
                msg_type: Bytes::from_static(b"8"),
                sending_time: time::format(0),
                body: Bytes::from_static(b"11=a\x01"),
            };
            store.append_application(&message).unwrap();
            store.set_inbound(7).unwrap();
            store.sync().unwrap();
        }
        // A torn record at the end.
        OpenOptions::new().append(true).open(dir.join("outbound.log")).unwrap().write_all(&[50, 0, 0, 0, 3]).unwrap();
        let (_, recovered) = Store::open(&dir, 10).unwrap();
        assert_eq!((recovered.next_outbound, recovered.next_inbound), (3, 7));
        assert_eq!(recovered.messages.len(), 1);
        assert_eq!(&recovered.messages[0].body[..], b"11=a\x01");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
