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
//!     superseded ClOrdIDs and a stop's StopPx (sequence field 0; see [`OrderRecord`]); the last record of an order
//!     id wins, a closed order's record removes it;
//!   - kind 3: a base: every outbound number up to `sequence` is used (written first by a
//!     compaction, whose file then holds only the resend window and the open orders);
//!   - kind 4: the next expected inbound number (`sequence`), as of the batch it ends.
//! - `inbound.seq`: the next expected inbound sequence number, 8 bytes little-endian.
//! - `unsynced.boot`: present while the store is written without `fsync` (`Durability::None`):
//!   the boot id of the kernel (`/proc/sys/kernel/random/boot_id`) whose page cache holds the
//!   writes. Written and synced at open, the store's only syncs under `None`.
//! - `reset.required`: present when the store may have lost records the counterparty saw (it
//!   was written without `fsync` under another boot: a power loss or a kernel crash may have
//!   dropped its tail). Until a Logon with ResetSeqNumFlag=Y resets the numbers, the session
//!   refuses to resume them, so that no number the counterparty saw is used again.
//!
//! Invariants: an outbound message's record is written to the log before its bytes are handed
//! to the socket (the session's syncer does both, in order, one write per batch), so after a
//! process crash the next outbound number is never reused: a written record is in the page
//! cache, which outlives the process. How much a power loss (or kernel crash) can take depends
//! on the durability ([`Durability`], the exchange's `--durability`):
//! - `Fsync`: each batch is also `fsync`ed (one `fdatasync` per batch, group commit: a batch is
//!   everything queued while the previous one was being synced) before its messages are sent,
//!   so a power loss loses nothing the counterparty has seen.
//! - `None`: records are never `fsync`ed. A power loss can lose the log's tail, so after a
//!   restart under another boot the store cannot know how far the numbers went: it requires a
//!   sequence reset (`reset.required`) rather than reuse a number (docs/fix.md, "Persistence").
//!
//! The inbound number is written to `inbound.seq` on every change, before the message's command
//! reaches the engine (a process crash keeps it: it is in the page cache), and into the log with
//! the next batch, so under `Fsync` the one `fsync` of a batch also makes durable every inbound
//! number its messages acknowledge (a power loss keeps that). At start the larger of the two
//! wins (`inbound.seq` is synced at every log rewrite under `Fsync`, so it is never older than
//! the last reset). A truncated last record (crash while appending) is ignored on load. A
//! compaction writes a complete new file, syncs it (under `Fsync`) and renames it over the log,
//! so a crash leaves either the old or the new file.

use crate::encoder::time;
use bytes::Bytes;
use codec::{OrderType, Side};
pub use engine::journal::Durability;
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
    /// StopPx(99) of a stop order (OrdType 3 or 4) in ticks; 0 for other orders.
    pub stop_price_ticks: u64,
    /// Whether the stop has been triggered (it then reports as the order it placed).
    pub triggered: bool,
    /// The order's current ClOrdID(11) (after replaces, the latest).
    pub cl_ord_id: Box<str>,
    /// The ClOrdIDs it carried before, oldest first (still in use while the order is open).
    pub superseded: Vec<Box<str>>,
}

/// Longest ClOrdID a record holds (its length is one byte).
const NAME_BYTES_MAX: usize = u8::MAX as usize;
/// Most superseded ClOrdIDs a record holds (their count is one byte).
const SUPERSEDED_MAX: usize = u8::MAX as usize;
/// Bytes of a record's stop fields: StopPx in ticks (u64) and the triggered flag (u8).
const STOP_BYTES: usize = 9;

impl OrderRecord {
    /// Payload after the record header: order id, client order id, market, flags (side, type,
    /// open), price, quantity, cum, notional, `[u8 length][current ClOrdID]`, then (absent in
    /// records written before chains were kept) `[u8 count]` and per superseded ClOrdID
    /// `[u8 length][bytes]`, then (absent in records written before stop orders were kept: read
    /// as no stop) the StopPx in ticks u64 and the triggered flag u8.
    fn encode(&self, open: bool, out: &mut Vec<u8>) {
        let name = |text: &str| -> Vec<u8> { text.as_bytes()[..text.len().min(NAME_BYTES_MAX)].to_vec() };
        let cl_ord_id = name(&self.cl_ord_id);
        let skip = self.superseded.len().saturating_sub(SUPERSEDED_MAX);
        let superseded: Vec<Vec<u8>> = self.superseded[skip..].iter().map(|text| name(text)).collect();
        let chain_bytes: usize = 1 + superseded.iter().map(|name| 1 + name.len()).sum::<usize>();
        let length = 10 + 8 + 8 + 4 + 3 + 8 * 3 + 16 + 1 + cl_ord_id.len() + chain_bytes + STOP_BYTES;
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
        out.extend_from_slice(&self.stop_price_ticks.to_le_bytes());
        out.push(u8::from(self.triggered));
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
        let (stop_price_ticks, triggered) = match payload.get(at..at + STOP_BYTES) {
            Some(stop) => (u64::from_le_bytes(stop[..8].try_into().ok()?), stop[8] == 1),
            None => (0, false),
        };
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
            stop_price_ticks,
            triggered,
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
    /// The store may have lost records the counterparty saw (see `reset.required` in the module
    /// docs): the numbers must be reset before the session resumes.
    pub reset_required: bool,
}

/// Where Linux names the current boot (a new random id at every boot).
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// Stands for the boot id where the kernel does not provide one (no loss is ever detected).
const BOOT_ID_UNKNOWN: &str = "unknown";
/// File holding the boot id under which the store was written without `fsync`.
const UNSYNCED_BOOT_FILE: &str = "unsynced.boot";
/// File whose presence says the numbers must be reset before the session resumes.
const RESET_REQUIRED_FILE: &str = "reset.required";

fn current_boot_id() -> String {
    std::fs::read_to_string(BOOT_ID_PATH).map_or_else(|_| BOOT_ID_UNKNOWN.to_string(), |id| id.trim().to_string())
}

/// Writes `contents` to `directory/name` and syncs the file and the directory.
fn write_synced(directory: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(directory.join(name))?;
    file.write_all(contents)?;
    file.sync_all()?;
    File::open(directory)?.sync_all()
}

/// The files of one session. The log is written only by the session's syncer (and at open);
/// the inbound number by the session's connection task.
#[derive(Debug)]
pub struct StoreFiles {
    directory: PathBuf,
    log: Mutex<File>,
    inbound: File,
    /// Whether writes are `fsync`ed (`Durability::Fsync`) or left to the page cache.
    sync: bool,
}

/// File syncs (`fsync`/`fdatasync` calls) a store operation made.
pub type Syncs = u64;

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
    /// of the log in memory; its writes are synced as `durability` says.
    ///
    /// # Errors
    /// File system errors.
    pub fn open(directory: &Path, window: usize, durability: Durability) -> io::Result<(Self, Recovered)> {
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
        recovered.reset_required = Self::check_boot(directory, durability, &log, &inbound)?;
        let sync = durability == Durability::Fsync;
        Ok((Self { directory: directory.to_path_buf(), log: Mutex::new(log), inbound, sync }, recovered))
    }

    /// Whether the numbers must be reset (see the module docs): the store was written without
    /// `fsync` under another boot (a power loss or kernel crash may have dropped its tail, and
    /// a clean reboot cannot be told apart), or an earlier start found so and no reset happened
    /// since. Records the answer in `reset.required` (synced, so it outlives another crash), and
    /// leaves `unsynced.boot` naming this boot under `None`, or, under `Fsync`, syncs what the
    /// earlier unsynced writes left and removes it.
    fn check_boot(directory: &Path, durability: Durability, log: &File, inbound: &File) -> io::Result<bool> {
        let boot = current_boot_id();
        let unsynced_under = std::fs::read_to_string(directory.join(UNSYNCED_BOOT_FILE)).ok();
        let mut reset_required = directory.join(RESET_REQUIRED_FILE).exists();
        if !reset_required && unsynced_under.as_deref().is_some_and(|under| under.trim() != boot) {
            reset_required = true;
            let why = format!(
                "written without fsync under boot {}, opened under boot {boot}\n",
                unsynced_under.as_deref().unwrap_or_default().trim()
            );
            write_synced(directory, RESET_REQUIRED_FILE, why.as_bytes())?;
        }
        match durability {
            Durability::None if unsynced_under.as_deref().map(str::trim) != Some(boot.as_str()) => {
                write_synced(directory, UNSYNCED_BOOT_FILE, boot.as_bytes())?;
            }
            Durability::None => {}
            Durability::Fsync if unsynced_under.is_some() => {
                // Make durable what was written without fsync before forgetting that it was.
                log.sync_data()?;
                inbound.sync_data()?;
                std::fs::remove_file(directory.join(UNSYNCED_BOOT_FILE))?;
                File::open(directory)?.sync_all()?;
            }
            Durability::Fsync => {}
        }
        Ok(reset_required)
    }

    /// Makes everything written so far durable and, if it was written without `fsync`, forgets
    /// that it was (removes `unsynced.boot`): called at a clean shutdown, so that a later reboot
    /// does not require a sequence reset.
    ///
    /// # Errors
    /// File system errors.
    pub fn settle(&self) -> io::Result<()> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.sync_data()?;
        self.inbound.sync_data()?;
        match std::fs::remove_file(self.directory.join(UNSYNCED_BOOT_FILE)) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
            Ok(()) => File::open(&self.directory)?.sync_all(),
        }
    }

    /// The numbers were reset (a Logon with ResetSeqNumFlag=Y, its rewrite done): the session
    /// may resume them from now on.
    ///
    /// # Errors
    /// File system errors.
    pub fn reset_done(&self) -> io::Result<()> {
        match std::fs::remove_file(self.directory.join(RESET_REQUIRED_FILE)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Appends encoded records to the log (one write) and, under `Durability::Fsync`, makes
    /// them durable (one `fdatasync`). Returns the syncs made (0 or 1).
    ///
    /// # Errors
    /// File system errors.
    pub fn append(&self, records: &[u8]) -> io::Result<Syncs> {
        if records.is_empty() {
            return Ok(0);
        }
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.write_all(records)?;
        if !self.sync {
            return Ok(0);
        }
        log.sync_data()?;
        Ok(1)
    }

    /// Holds the log as a write in progress does: the syncer's next write of this store waits
    /// until the guard drops (tests stand it for a long `fdatasync`).
    #[cfg(test)]
    pub(crate) fn hold_log(&self) -> std::sync::MutexGuard<'_, File> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the log by `image` (see [`encode_image`]): written to a new file, renamed over
    /// the log. Under `Durability::Fsync` the new file is synced before the rename, then the
    /// directory and `inbound.seq` (3 syncs); under `None` nothing is synced (a rename is atomic
    /// for a process crash). Returns the syncs made.
    ///
    /// # Errors
    /// File system errors.
    pub fn replace(&self, image: &[u8]) -> io::Result<Syncs> {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.directory.join("outbound.log");
        let staging = self.directory.join("outbound.log.new");
        {
            let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&staging)?;
            file.write_all(image)?;
            if self.sync {
                file.sync_data()?;
            }
        }
        std::fs::rename(&staging, &path)?;
        *log = OpenOptions::new().read(true).append(true).open(&path)?;
        if !self.sync {
            return Ok(0);
        }
        File::open(&self.directory)?.sync_all()?;
        self.inbound.sync_data()?;
        Ok(3)
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
            stop_price_ticks: if id % 2 == 0 { 590_000 } else { 0 },
            triggered: id % 4 == 0,
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
        bytes.truncate(bytes.len() - STOP_BYTES - 1);
        assert_eq!(OrderRecord::decode(&bytes[14..]), Some((record.clone(), true)));
        record.superseded = vec!["A".into(), "BB".into()];
        let mut bytes = Vec::new();
        record.encode(false, &mut bytes);
        assert_eq!(OrderRecord::decode(&bytes[14..]), Some((record, false)));
    }

    /// A stop order's StopPx and triggered flag round-trip; a record written before they were
    /// kept (ending after its chain) decodes as no stop.
    #[test]
    fn an_order_record_keeps_its_stop_price() {
        let mut record = order(4, 0);
        assert_eq!((record.stop_price_ticks, record.triggered), (590_000, true));
        let mut bytes = Vec::new();
        record.encode(true, &mut bytes);
        assert_eq!(OrderRecord::decode(&bytes[14..]), Some((record.clone(), true)));
        record.triggered = false;
        let mut bytes = Vec::new();
        record.encode(true, &mut bytes);
        assert_eq!(OrderRecord::decode(&bytes[14..]), Some((record.clone(), true)));
        bytes.truncate(bytes.len() - STOP_BYTES);
        let older = OrderRecord { stop_price_ticks: 0, triggered: false, ..record };
        assert_eq!(OrderRecord::decode(&bytes[14..]), Some((older, true)));
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
            let (store, recovered) = StoreFiles::open(&dir, 10, Durability::Fsync).unwrap();
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
            assert_eq!(store.append(&records).unwrap(), 1);
        }
        // A torn record at the end.
        OpenOptions::new().append(true).open(dir.join("outbound.log")).unwrap().write_all(&[50, 0, 0, 0, 3]).unwrap();
        let (store, recovered) = StoreFiles::open(&dir, 10, Durability::Fsync).unwrap();
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
        assert_eq!(store.append(&more).unwrap(), 1);
        drop(store);
        let (_, recovered) = StoreFiles::open(&dir, 10, Durability::Fsync).unwrap();
        assert_eq!((recovered.next_outbound, recovered.next_inbound, recovered.records), (43, 9, 6));
        assert_eq!((recovered.messages.len(), &recovered.orders[&7]), (1, &open));
        // A reset: base 0, no window.
        let (store, _) = StoreFiles::open(&dir, 10, Durability::Fsync).unwrap();
        store.set_inbound(1).unwrap();
        store.replace(&encode_image(1, 1, std::iter::empty(), std::iter::empty())).unwrap();
        drop(store);
        let (_, recovered) = StoreFiles::open(&dir, 10, Durability::Fsync).unwrap();
        assert_eq!((recovered.next_outbound, recovered.next_inbound), (1, 1));
        assert_eq!((recovered.messages.len(), recovered.orders.len()), (0, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_written_without_fsync_under_another_boot_requires_a_reset_until_one_is_done() {
        let dir = std::env::temp_dir().join(format!("gateway-fix-store-boot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let unsynced = dir.join(UNSYNCED_BOOT_FILE);
        let reset_required = |durability| StoreFiles::open(&dir, 10, durability).unwrap().1.reset_required;
        assert!(!reset_required(Durability::None));
        assert_eq!(std::fs::read_to_string(&unsynced).unwrap(), current_boot_id());
        assert!(!reset_required(Durability::None), "same boot: the page cache kept everything");
        assert!(!reset_required(Durability::Fsync));
        assert!(!unsynced.exists(), "synced now: no longer at risk");
        assert!(!reset_required(Durability::None));
        std::fs::write(&unsynced, "another boot").unwrap();
        assert!(reset_required(Durability::Fsync));
        assert!(!unsynced.exists());
        assert!(reset_required(Durability::None), "kept until a reset");
        let (store, recovered) = StoreFiles::open(&dir, 10, Durability::None).unwrap();
        assert!(recovered.reset_required);
        store.reset_done().unwrap();
        drop(store);
        assert!(!reset_required(Durability::None));
        // A clean shutdown syncs and forgets the risk: another boot then requires nothing.
        let (store, _) = StoreFiles::open(&dir, 10, Durability::None).unwrap();
        store.settle().unwrap();
        drop(store);
        assert!(!unsynced.exists());
        assert!(!reset_required(Durability::Fsync));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
