//! Per-session persistence: the outbound message log (with the session's open orders) and the
//! inbound sequence number.
//!
//! Layout, in `<store_dir>/<SenderCompID>@<TargetCompID>/` (the client's CompIDs; `@` cannot
//! occur in a CompID, so two sessions never share a directory):
//! - `outbound.log`: records `[u32 record length][u64 sequence][u8 kind][u8 msg type length]…`
//!   (little-endian), in the order they were written:
//!   - kind 0: an administrative message (only its number is kept: it is gap-filled on resend);
//!   - kind 1: an application message `[msg type][21-byte SendingTime][body]` (resent as it was);
//!   - kind 2: the state of an order placed through the session, with its current and
//!     superseded ClOrdIDs (sequence field 0; see [`OrderRecord`]); the last record of an order
//!     id wins, a closed order's record removes it;
//!   - kind 3: a base: every outbound number up to `sequence` is used (written first by a
//!     compaction, whose file then holds only the resend window and the open orders);
//!   - kind 4: the next expected inbound number (`sequence`), as of the batch it ends.
//! - `inbound.seq`: the next expected inbound sequence number, 8 bytes little-endian.
//!
//! Invariants: an outbound message's record is written and `fsync`ed before its bytes are handed
//! to the socket (the session's syncer does both, in order, one `fsync` per batch), so after a
//! crash the next outbound number is never reused. The inbound number is written to
//! `inbound.seq` on every change, before the message's command reaches the engine (a process
//! crash keeps it: it is in the page cache), and into the log with the next batch, so the one
//! `fsync` of a batch also makes durable every inbound number its messages acknowledge (a power
//! loss keeps that). At start the larger of the two wins (`inbound.seq` is synced at every log
//! rewrite, so it is never older than the last reset). A truncated last record (crash while
//! appending) is ignored on load. A compaction writes a complete new file,
//! syncs it and renames it over the log, so a crash leaves either the old or the new file.

use crate::encoder::time;
use bytes::Bytes;
use codec::{OrderType, Side};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const KIND_ADMIN: u8 = 0;
const KIND_APPLICATION: u8 = 1;
const KIND_ORDER: u8 = 2;
const KIND_BASE: u8 = 3;
const KIND_INBOUND: u8 = 4;

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

/// The state of an order placed through a session, as its reports need it (kept across
/// restarts so that fills of an order placed before a restart reach the session with the right
/// CumQty, LeavesQty and AvgPx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    /// The engine's order id.
    pub order_id: u64,
    /// The engine's client order id (the hash of the original ClOrdID).
    pub client_order_id: u64,
    /// Market.
    pub market_id: u32,
    /// Side.
    pub side: Side,
    /// Order type.
    pub order_type: OrderType,
    /// Limit price in ticks (0 for market orders).
    pub price_ticks: u64,
    /// Order quantity in lots (filled part included).
    pub quantity_lots: u64,
    /// Filled so far, in lots.
    pub cum_lots: u64,
    /// Σ price × quantity of the fills, in ticks × lots (for AvgPx).
    pub notional: u128,
    /// The order's current ClOrdID(11) (after replaces, the latest).
    pub cl_ord_id: Box<str>,
    /// The ClOrdIDs it carried before, oldest first (still in use while the order is open).
    pub superseded: Vec<Box<str>>,
}

/// Longest ClOrdID a record holds (its length is one byte).
const NAME_BYTES_MAX: usize = u8::MAX as usize;
/// Most superseded ClOrdIDs a record holds (their count is one byte).
const SUPERSEDED_MAX: usize = u8::MAX as usize;

impl OrderRecord {
    /// Payload after the record header: order id, client order id, market, flags (side, type,
    /// open), price, quantity, cum, notional, `[u8 length][current ClOrdID]`, then (absent in
    /// records written before chains were kept) `[u8 count]` and per superseded ClOrdID
    /// `[u8 length][bytes]`.
    fn encode(&self, open: bool, out: &mut Vec<u8>) {
        let name = |text: &str| -> Vec<u8> { text.as_bytes()[..text.len().min(NAME_BYTES_MAX)].to_vec() };
        let cl_ord_id = name(&self.cl_ord_id);
        let skip = self.superseded.len().saturating_sub(SUPERSEDED_MAX);
        let superseded: Vec<Vec<u8>> = self.superseded[skip..].iter().map(|text| name(text)).collect();
        let chain_bytes: usize = 1 + superseded.iter().map(|name| 1 + name.len()).sum::<usize>();
        let length = 10 + 8 + 8 + 4 + 3 + 8 * 3 + 16 + 1 + cl_ord_id.len() + chain_bytes;
        out.extend_from_slice(&(length as u32).to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&[KIND_ORDER, 0]);
        out.extend_from_slice(&self.order_id.to_le_bytes());
        out.extend_from_slice(&self.client_order_id.to_le_bytes());
        out.extend_from_slice(&self.market_id.to_le_bytes());
        out.push(u8::from(self.side == Side::Ask));
        out.push(u8::from(self.order_type == OrderType::Market));
        out.push(u8::from(open));
        for value in [self.price_ticks, self.quantity_lots, self.cum_lots] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        out.extend_from_slice(&self.notional.to_le_bytes());
        out.push(cl_ord_id.len() as u8);
        out.extend_from_slice(&cl_ord_id);
        out.push(superseded.len() as u8);
        for name in &superseded {
            out.push(name.len() as u8);
            out.extend_from_slice(name);
        }
    }

    /// Decodes the payload of a kind-2 record (after the 10-byte record header): the order and
    /// whether it is still open.
    fn decode(payload: &[u8]) -> Option<(Self, bool)> {
        let u64_at = |at: usize| payload.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        let order_id = u64_at(0)?;
        let client_order_id = u64_at(8)?;
        let market_id = u32::from_le_bytes(payload.get(16..20)?.try_into().ok()?);
        let flags = payload.get(20..23)?;
        let notional = u128::from_le_bytes(payload.get(47..63)?.try_into().ok()?);
        let length = usize::from(*payload.get(63)?);
        let cl_ord_id = std::str::from_utf8(payload.get(64..64 + length)?).ok()?;
        let mut superseded = Vec::new();
        let mut at = 64 + length;
        if let Some(&count) = payload.get(at) {
            at += 1;
            for _ in 0..count {
                let length = usize::from(*payload.get(at)?);
                superseded.push(std::str::from_utf8(payload.get(at + 1..at + 1 + length)?).ok()?.into());
                at += 1 + length;
            }
        }
        let record = Self {
            order_id,
            client_order_id,
            market_id,
            side: if flags[0] == 1 { Side::Ask } else { Side::Bid },
            order_type: if flags[1] == 1 { OrderType::Market } else { OrderType::Limit },
            price_ticks: u64_at(23)?,
            quantity_lots: u64_at(31)?,
            cum_lots: u64_at(39)?,
            notional,
            cl_ord_id: cl_ord_id.into(),
            superseded,
        };
        Some((record, flags[2] == 1))
    }
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
    /// The open orders of the session, by order id.
    pub orders: HashMap<u64, OrderRecord>,
    /// Records in the log (a measure of how much a compaction would save).
    pub records: usize,
}

/// The files of one session. The log is written only by the session's syncer (and at open);
/// the inbound number by the session's connection task.
#[derive(Debug)]
pub struct StoreFiles {
    directory: PathBuf,
    log: Mutex<File>,
    inbound: File,
}

fn append_admin_record(out: &mut Vec<u8>, kind: u8, sequence: u64) {
    out.extend_from_slice(&10u32.to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&[kind, 0]);
}

/// Encodes an administrative message's record (its number only).
pub fn encode_admin(out: &mut Vec<u8>, sequence: u64) {
    append_admin_record(out, KIND_ADMIN, sequence);
}

/// Encodes the next expected inbound number.
pub fn encode_inbound(out: &mut Vec<u8>, next_inbound: u64) {
    append_admin_record(out, KIND_INBOUND, next_inbound);
}

/// Encodes an application message's record.
pub fn encode_application(out: &mut Vec<u8>, message: &StoredMessage) {
    let length = 10 + message.msg_type.len() + time::LENGTH + message.body.len();
    out.extend_from_slice(&(length as u32).to_le_bytes());
    out.extend_from_slice(&message.sequence.to_le_bytes());
    out.push(KIND_APPLICATION);
    out.push(message.msg_type.len() as u8);
    out.extend_from_slice(&message.msg_type);
    out.extend_from_slice(&message.sending_time);
    out.extend_from_slice(&message.body);
}

/// Encodes an order's state (`open` false: the order is done and forgotten).
pub fn encode_order(out: &mut Vec<u8>, order: &OrderRecord, open: bool) {
    order.encode(open, out);
}

/// A complete compacted log: the base (every number below `next_outbound` used), the next
/// expected inbound number, the resend window and the open orders.
pub fn encode_image<'a>(
    next_outbound: u64,
    next_inbound: u64,
    window: impl Iterator<Item = &'a StoredMessage>,
    orders: impl Iterator<Item = &'a OrderRecord>,
) -> Vec<u8> {
    let mut out = Vec::new();
    append_admin_record(&mut out, KIND_BASE, next_outbound - 1);
    encode_inbound(&mut out, next_inbound);
    for order in orders {
        order.encode(true, &mut out);
    }
    for message in window {
        encode_application(&mut out, message);
    }
    out
}

impl StoreFiles {
    /// Opens (creating) the store in `directory`, keeping at most `window` application messages
    /// of the log in memory.
    ///
    /// # Errors
    /// File system errors.
    pub fn open(directory: &Path, window: usize) -> io::Result<(Self, Recovered)> {
        std::fs::create_dir_all(directory)?;
        // A compaction interrupted before its rename: the old log is still the valid one.
        let _ = std::fs::remove_file(directory.join("outbound.log.new"));
        let mut log = OpenOptions::new().read(true).append(true).create(true).open(directory.join("outbound.log"))?;
        let inbound = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(directory.join("inbound.seq"))?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)?;
        let mut recovered = Recovered { next_outbound: 1, next_inbound: 1, ..Recovered::default() };
        let mut position = 0;
        let mut valid_end = 0;
        let mut logged_inbound = 1;
        while let Some(header) = bytes.get(position..position + 4) {
            let length = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
            let Some(record) = bytes.get(position + 4..position + 4 + length) else { break };
            if record.len() < 10 {
                break;
            }
            let sequence = u64::from_le_bytes(record[..8].try_into().expect("8 bytes"));
            let kind = record[8];
            let type_length = usize::from(record[9]);
            match kind {
                KIND_APPLICATION => {
                    let rest = &record[10..];
                    if rest.len() < type_length + time::LENGTH {
                        break;
                    }
                    let msg_type = Bytes::copy_from_slice(&rest[..type_length]);
                    let sending_time =
                        rest[type_length..type_length + time::LENGTH].try_into().expect("length checked");
                    let body = Bytes::copy_from_slice(&rest[type_length + time::LENGTH..]);
                    recovered.messages.push(StoredMessage { sequence, msg_type, sending_time, body });
                    if recovered.messages.len() > window.saturating_mul(2).max(1024) {
                        let excess = recovered.messages.len() - window;
                        recovered.messages.drain(..excess);
                    }
                    recovered.next_outbound = recovered.next_outbound.max(sequence + 1);
                }
                KIND_ORDER => {
                    let Some((order, open)) = OrderRecord::decode(&record[10..]) else { break };
                    if open {
                        recovered.orders.insert(order.order_id, order);
                    } else {
                        recovered.orders.remove(&order.order_id);
                    }
                }
                KIND_INBOUND => logged_inbound = sequence,
                KIND_BASE => {
                    recovered.messages.retain(|m| m.sequence <= sequence);
                    recovered.next_outbound = sequence + 1;
                }
                _ => recovered.next_outbound = recovered.next_outbound.max(sequence + 1),
            }
            recovered.records += 1;
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
        recovered.next_inbound = recovered.next_inbound.max(logged_inbound);
        Ok((Self { directory: directory.to_path_buf(), log: Mutex::new(log), inbound }, recovered))
    }

    /// Appends encoded records to the log and makes them durable (one `fsync`).
    ///
    /// # Errors
    /// File system errors.
    pub fn append_and_sync(&self, records: &[u8]) -> io::Result<()> {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if !records.is_empty() {
            log.write_all(records)?;
            log.sync_data()?;
        }
        Ok(())
    }

    /// Replaces the log by `image` (see [`encode_image`]): written to a new file, synced, renamed
    /// over the log; the directory is synced too.
    ///
    /// # Errors
    /// File system errors.
    pub fn replace(&self, image: &[u8]) -> io::Result<()> {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.directory.join("outbound.log");
        let staging = self.directory.join("outbound.log.new");
        {
            let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&staging)?;
            file.write_all(image)?;
            file.sync_data()?;
        }
        std::fs::rename(&staging, &path)?;
        File::open(&self.directory)?.sync_all()?;
        *log = OpenOptions::new().read(true).append(true).open(&path)?;
        self.inbound.sync_data()
    }

    /// Records the next expected inbound number in `inbound.seq` (not synced; the log gets it
    /// with the next batch, see the module docs).
    ///
    /// # Errors
    /// File system errors.
    pub fn set_inbound(&self, next_inbound: u64) -> io::Result<()> {
        self.inbound.write_all_at(&next_inbound.to_le_bytes(), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: u64, cum: u64) -> OrderRecord {
        OrderRecord {
            order_id: id,
            client_order_id: id * 10,
            market_id: 1,
            side: Side::Ask,
            order_type: OrderType::Limit,
            price_ticks: 600_000,
            quantity_lots: 10,
            cum_lots: cum,
            notional: u128::from(cum) * 600_000,
            cl_ord_id: format!("C{id}").into(),
            superseded: (0..id % 3).map(|n| format!("C{id}-{n}").into()).collect(),
        }
    }

    #[test]
    fn an_order_record_without_a_chain_still_decodes() {
        // Records written before chains were kept end right after the current ClOrdID.
        let mut record = order(9, 1);
        record.superseded.clear();
        let mut bytes = Vec::new();
        record.encode(true, &mut bytes);
        bytes.pop();
        assert_eq!(OrderRecord::decode(&bytes[14..]), Some((record.clone(), true)));
        record.superseded = vec!["A".into(), "BB".into()];
        let mut bytes = Vec::new();
        record.encode(false, &mut bytes);
        assert_eq!(OrderRecord::decode(&bytes[14..]), Some((record, false)));
    }

    #[test]
    fn survives_reopen_torn_tail_and_compaction() {
        let dir = std::env::temp_dir().join(format!("gateway-fix-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let message = StoredMessage {
            sequence: 2,
            msg_type: Bytes::from_static(b"8"),
            sending_time: time::format(0),
            body: Bytes::from_static(b"11=a\x01"),
        };
        {
            let (store, recovered) = StoreFiles::open(&dir, 10).unwrap();
            assert_eq!((recovered.next_outbound, recovered.next_inbound), (1, 1));
            let mut records = Vec::new();
            encode_admin(&mut records, 1);
            encode_application(&mut records, &message);
            encode_order(&mut records, &order(7, 0), true);
            encode_order(&mut records, &order(8, 0), true);
            encode_order(&mut records, &order(7, 4), true);
            encode_order(&mut records, &order(8, 10), false);
            store.set_inbound(7).unwrap();
            encode_inbound(&mut records, 6);
            store.append_and_sync(&records).unwrap();
        }
        // A torn record at the end.
        OpenOptions::new().append(true).open(dir.join("outbound.log")).unwrap().write_all(&[50, 0, 0, 0, 3]).unwrap();
        let (store, recovered) = StoreFiles::open(&dir, 10).unwrap();
        assert_eq!((recovered.next_outbound, recovered.next_inbound), (3, 7));
        assert_eq!(recovered.messages.len(), 1);
        assert_eq!(&recovered.messages[0].body[..], b"11=a\x01");
        assert_eq!(recovered.orders.len(), 1);
        assert_eq!(recovered.orders[&7], order(7, 4));
        // Compaction: base 41 (next 42), the window and the open order.
        let open = order(7, 5);
        store.replace(&encode_image(42, 7, [&message].into_iter(), [&open].into_iter())).unwrap();
        let mut more = Vec::new();
        encode_admin(&mut more, 42);
        // A power loss that kept the log but not inbound.seq: the log's number wins.
        encode_inbound(&mut more, 9);
        store.append_and_sync(&more).unwrap();
        drop(store);
        let (_, recovered) = StoreFiles::open(&dir, 10).unwrap();
        assert_eq!((recovered.next_outbound, recovered.next_inbound, recovered.records), (43, 9, 6));
        assert_eq!((recovered.messages.len(), &recovered.orders[&7]), (1, &open));
        // A reset: base 0, no window.
        let (store, _) = StoreFiles::open(&dir, 10).unwrap();
        store.set_inbound(1).unwrap();
        store.replace(&encode_image(1, 1, std::iter::empty(), std::iter::empty())).unwrap();
        drop(store);
        let (_, recovered) = StoreFiles::open(&dir, 10).unwrap();
        assert_eq!((recovered.next_outbound, recovered.next_inbound), (1, 1));
        assert_eq!((recovered.messages.len(), recovered.orders.len()), (0, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
