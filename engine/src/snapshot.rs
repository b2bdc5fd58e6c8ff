//! Snapshots: the complete engine state at a sequence, checksummed, so recovery replays only the
//! journal after it.
//!
//! # Format (little-endian)
//! Magic `EXSNAP01`, format version u32, reserved u32, sequence u64, state hash u64
//! ([`Engine::state_hash`]: XXH3-64 from version 3 on; versions 1 and 2 recorded FNV-1a over the
//! same words), asset count u32, market count u32, next order id u64; per market: next trade id
//! u64, halted flag u64 (0 or 1; absent in version 1, whose markets are all open), order count
//! u64, then every resting order (bids then asks, each side in priority order) as 11 u64 fields; the ledger:
//! account count u64, per account the user id and (available, locked) per asset; per asset the
//! fees collected u64, deposited u128 and withdrawn u128; (version 2) the AMM pools: pool count
//! u64, per pool its market id u64, base reserve u64, quote reserve u64, total shares u64, holder
//! count u64 and per holder (user id u64, shares u64) in user id order; finally a CRC32C u32 of
//! all preceding bytes. (Version 4, before the CRC) per market its last trade price u64 (0: none),
//! its pending trigger count u64 and each trigger (rising then falling, each in firing order) as
//! 13 u64 words ([`crate::triggers::PendingTrigger`]); older versions restore with no last price
//! and no triggers. Version 5 adds a 14th word per trigger (its attached sibling, 0: none) and,
//! after each market's triggers, its open attachments: count u64 and each as 9 u64 words
//! ([`crate::triggers::Attachment`], parent id order); version 4 restores with no siblings and
//! no attachments. Version 6 adds a 10th word per attachment (its accumulated lots not yet
//! covered by a child, [`crate::triggers::Attachment::uncovered_lots`]) and, after the last
//! market's attachments, the gateway processes' deduplication state: count u64 and per gateway
//! (gateway id u64, highest gateway sequence applied u64) in gateway id order; version 5 restores
//! with no uncovered lots and no gateways. Version 1 snapshots (before pools) are still read:
//! their pools are empty.
//! Versions 1 and 2 are still read: their recorded hash is checked with the FNV-1a hash they were
//! written with (the layout is otherwise that of version 2, or version 1 as said). Version 3
//! changed only the hash function. The ledger's pool account is rebuilt from the pools' reserves.
//!
//! Restoring inserts the orders in priority order, which rebuilds the same queues; the restored
//! engine's [`Engine::state_hash`] must equal the stored hash, or the snapshot is refused.
//!
//! # Taking one
//! [`Engine::write_snapshot`] serialises into a caller-owned buffer: a linear pass over the state,
//! plus one more to hash it (hundreds of milliseconds for 1M resting orders). The exchange's
//! engine thread never calls it while trading: a snapshotter thread keeps a shadow engine that
//! applies the same journaled commands and serialises that (see `exchange::runtime`);
//! [`write_snapshot_file`] then writes and syncs the file.

use crate::book::{Book, RestingOrder};
use crate::config::EngineConfig;
use crate::engine::Engine;
use codec::{ClientOrderId, OrderId, SelfTradePrevention, Side, Ticks, UserId, WireEnum};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Snapshot magic.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"EXSNAP01";
/// Snapshot format version (6: attachments' uncovered lots and the gateway processes'
/// deduplication state; 5: attached stop-loss / take-profit; 4: markets' last trade prices and
/// pending trigger orders; 3: the state hash is XXH3-64; 2 and 1 recorded FNV-1a).
pub const SNAPSHOT_VERSION: u32 = 6;
/// The first format version with the attachments' uncovered lots.
const UNCOVERED_LOTS_VERSION: u32 = 6;
/// The first format version with the gateway deduplication section.
const GATEWAYS_VERSION: u32 = 6;
/// The first format version with the trigger section.
const TRIGGERS_VERSION: u32 = 4;
/// The first format version with siblings and attachments (attached stop-loss / take-profit).
const ATTACHMENTS_VERSION: u32 = 5;
/// Words per pending trigger in the trigger section of version 4.
const TRIGGER_WORDS_V4: usize = 13;
/// The last format version whose recorded state hash is the legacy FNV-1a.
const LEGACY_HASH_VERSION_MAX: u32 = 2;

/// Why a snapshot could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// I/O error.
    #[error("snapshot I/O error on {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad magic, version, checksum, truncation or a state that does not match the configuration.
    #[error("invalid snapshot: {0}")]
    Invalid(String),
}

/// A bounds-checked little-endian reader over snapshot bytes.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl Reader<'_> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&[u8], SnapshotError> {
        let slice = self
            .bytes
            .get(self.offset..self.offset + n)
            .ok_or_else(|| SnapshotError::Invalid(format!("truncated at offset {}", self.offset)))?;
        self.offset += n;
        Ok(slice)
    }
    pub(crate) fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub(crate) fn u128(&mut self) -> Result<u128, SnapshotError> {
        Ok(u128::from_le_bytes(self.take(16)?.try_into().unwrap()))
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> SnapshotError {
    SnapshotError::Invalid(message.into())
}

impl<B: Book> Engine<B> {
    /// Serialises the whole state as of `sequence` (the last command applied) into `out`;
    /// returns the state hash recorded in it (computed once, here).
    pub fn write_snapshot(&self, sequence: u64, out: &mut Vec<u8>) -> u64 {
        let state_hash = self.state_hash();
        out.clear();
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&sequence.to_le_bytes());
        out.extend_from_slice(&state_hash.to_le_bytes());
        out.extend_from_slice(&(self.ledger().asset_count() as u32).to_le_bytes());
        out.extend_from_slice(&(self.market_count() as u32).to_le_bytes());
        out.extend_from_slice(&self.next_order_id().get().to_le_bytes());
        let mut market_id = 0u32;
        self.visit_markets(&mut |next_trade_id, book| {
            market_id += 1;
            out.extend_from_slice(&next_trade_id.to_le_bytes());
            let halted = self.is_halted(codec::MarketId::new(market_id)).unwrap_or(false);
            out.extend_from_slice(&u64::from(halted).to_le_bytes());
            out.extend_from_slice(&(book.len() as u64).to_le_bytes());
            for side in [Side::Bid, Side::Ask] {
                book.visit_in_priority(side, &mut |order| {
                    for value in [
                        order.order_id.get(),
                        order.user_id.get(),
                        order.client_order_id.get(),
                        u64::from(order.side.code()),
                        order.price.get(),
                        order.quantity_lots,
                        order.filled_lots,
                        order.remaining_lots,
                        order.reserved,
                        u64::from(order.self_trade_prevention.code()),
                        u64::from(order.post_only),
                    ] {
                        out.extend_from_slice(&value.to_le_bytes());
                    }
                    true
                });
            }
        });
        self.ledger().write_snapshot(out);
        out.extend_from_slice(&(self.pools().len() as u64).to_le_bytes());
        for pool in self.pools() {
            for value in [
                u64::from(pool.market_id.get()),
                pool.base_reserve,
                pool.quote_reserve,
                pool.total_shares,
                pool.holders.len() as u64,
            ] {
                out.extend_from_slice(&value.to_le_bytes());
            }
            for (user, shares) in &pool.holders {
                out.extend_from_slice(&user.get().to_le_bytes());
                out.extend_from_slice(&shares.to_le_bytes());
            }
        }
        self.visit_trigger_state(&mut |last_trade_ticks, triggers| {
            out.extend_from_slice(&last_trade_ticks.to_le_bytes());
            out.extend_from_slice(&(triggers.len() as u64).to_le_bytes());
            for trigger in triggers.iter() {
                for word in trigger.words() {
                    out.extend_from_slice(&word.to_le_bytes());
                }
                out.extend_from_slice(&trigger.sibling.get().to_le_bytes());
            }
            out.extend_from_slice(&(triggers.attachments().count() as u64).to_le_bytes());
            for attachment in triggers.attachments() {
                for word in attachment.words() {
                    out.extend_from_slice(&word.to_le_bytes());
                }
            }
        });
        out.extend_from_slice(&(self.gateway_sequences().count() as u64).to_le_bytes());
        for (gateway_id, sequence) in self.gateway_sequences() {
            out.extend_from_slice(&gateway_id.to_le_bytes());
            out.extend_from_slice(&sequence.to_le_bytes());
        }
        let crc = crc32c::crc32c(out);
        out.extend_from_slice(&crc.to_le_bytes());
        state_hash
    }

    /// Rebuilds an engine from a snapshot; returns it with the snapshot's sequence.
    ///
    /// # Errors
    /// A damaged snapshot, one from another configuration, or one whose restored state hash
    /// differs from the recorded one.
    pub fn restore_snapshot(
        config: &EngineConfig,
        make_book: impl FnMut(usize) -> B,
        bytes: &[u8],
    ) -> Result<(Self, u64), SnapshotError> {
        if bytes.len() < 4 {
            return Err(invalid("shorter than its checksum"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err(invalid("checksum mismatch"));
        }
        let mut r = Reader { bytes: body, offset: 0 };
        if r.take(8)? != SNAPSHOT_MAGIC {
            return Err(invalid("bad magic"));
        }
        let version = r.u32()?;
        // Version 1 had no halted flag per market (every market open); versions 1 and 2 recorded
        // the legacy hash.
        if !(1..=SNAPSHOT_VERSION).contains(&version) {
            return Err(invalid(format!("unsupported version {version}")));
        }
        r.u32()?;
        let sequence = r.u64()?;
        let stored_hash = r.u64()?;
        let (asset_count, market_count) = (r.u32()? as usize, r.u32()? as usize);
        if asset_count != config.assets.len() || market_count != config.markets.len() {
            return Err(invalid(format!(
                "snapshot has {asset_count} assets and {market_count} markets, configuration {} and {}",
                config.assets.len(),
                config.markets.len()
            )));
        }
        let mut engine = Self::with_books(config, make_book).map_err(|e| invalid(e.to_string()))?;
        let next_order_id = r.u64()?;
        let mut markets = Vec::with_capacity(market_count);
        for _ in 0..market_count {
            let next_trade_id = r.u64()?;
            let halted = match version {
                1 => false,
                _ => match r.u64()? {
                    0 => false,
                    1 => true,
                    other => return Err(invalid(format!("bad halted flag {other}"))),
                },
            };
            let count = r.u64()? as usize;
            let mut orders = Vec::with_capacity(count.min(1 << 20));
            for _ in 0..count {
                let mut field = [0u64; 11];
                for value in &mut field {
                    *value = r.u64()?;
                }
                let side = Side::from_code(field[3] as u16).ok_or_else(|| invalid("bad side"))?;
                let stp = SelfTradePrevention::from_code(field[9] as u16).ok_or_else(|| invalid("bad STP"))?;
                orders.push(RestingOrder {
                    order_id: OrderId::new(field[0]),
                    user_id: UserId::new(field[1]),
                    client_order_id: ClientOrderId::new(field[2]),
                    side,
                    price: Ticks::new(field[4]),
                    quantity_lots: field[5],
                    filled_lots: field[6],
                    remaining_lots: field[7],
                    reserved: field[8],
                    self_trade_prevention: stp,
                    post_only: field[10] != 0,
                });
            }
            markets.push((next_trade_id, halted, orders));
        }
        engine.restore_markets(next_order_id, markets).map_err(invalid)?;
        engine.ledger_mut().read_snapshot(&mut r)?;
        if version >= 2 {
            let count = r.u64()? as usize;
            let mut pools = Vec::with_capacity(count.min(1 << 10));
            for _ in 0..count {
                let market_id =
                    codec::MarketId::new(u32::try_from(r.u64()?).map_err(|_| invalid("pool market id out of range"))?);
                let configured = engine.pool(market_id).ok_or_else(|| invalid(format!("no pool on {market_id}")))?;
                let mut pool = configured.clone();
                pool.base_reserve = r.u64()?;
                pool.quote_reserve = r.u64()?;
                pool.total_shares = r.u64()?;
                pool.holders.clear();
                let holders = r.u64()?;
                for _ in 0..holders {
                    let (user, shares) = (UserId::new(r.u64()?), r.u64()?);
                    if pool.holders.insert(user, shares).is_some() {
                        return Err(invalid(format!("pool {market_id}: holder {user} twice")));
                    }
                }
                pools.push(pool);
            }
            engine.restore_pools(pools).map_err(invalid)?;
        }
        if version >= TRIGGERS_VERSION {
            let mut markets = Vec::with_capacity(market_count);
            for _ in 0..market_count {
                let last_trade_ticks = r.u64()?;
                let count = r.u64()? as usize;
                if count > crate::triggers::TRIGGER_ORDERS_PER_MARKET_MAX {
                    return Err(invalid(format!("{count} pending triggers in one market")));
                }
                let mut triggers = crate::triggers::TriggerBook::default();
                for _ in 0..count {
                    let mut words = [0u64; TRIGGER_WORDS_V4];
                    for word in &mut words {
                        *word = r.u64()?;
                    }
                    let mut trigger =
                        crate::triggers::PendingTrigger::from_words(words).ok_or_else(|| invalid("bad trigger"))?;
                    if version >= ATTACHMENTS_VERSION {
                        trigger.sibling = OrderId::new(r.u64()?);
                    }
                    if triggers.get(trigger.order_id).is_some() || trigger.order_id.get() >= next_order_id {
                        return Err(invalid(format!("trigger {} duplicated or out of range", trigger.order_id)));
                    }
                    triggers.insert(trigger);
                }
                if version >= ATTACHMENTS_VERSION {
                    let count = r.u64()? as usize;
                    if count > crate::triggers::TRIGGER_ORDERS_PER_MARKET_MAX {
                        return Err(invalid(format!("{count} attachments in one market")));
                    }
                    for _ in 0..count {
                        let mut words = [0u64; crate::triggers::ATTACHMENT_WORDS];
                        let written = if version >= UNCOVERED_LOTS_VERSION {
                            crate::triggers::ATTACHMENT_WORDS
                        } else {
                            crate::triggers::ATTACHMENT_WORDS_V5
                        };
                        for word in &mut words[..written] {
                            *word = r.u64()?;
                        }
                        let attachment =
                            crate::triggers::Attachment::from_words(words).ok_or_else(|| invalid("bad attachment"))?;
                        if triggers.attachment(attachment.parent_order_id).is_some() {
                            return Err(invalid(format!("attachment of {} duplicated", attachment.parent_order_id)));
                        }
                        triggers.attach(attachment);
                    }
                }
                markets.push((last_trade_ticks, triggers));
            }
            engine.restore_trigger_state(markets).map_err(invalid)?;
        }
        if version >= GATEWAYS_VERSION {
            let count = r.u64()? as usize;
            if count > crate::engine::GATEWAYS_MAX {
                return Err(invalid(format!("{count} gateways in the deduplication state")));
            }
            let mut sequences = std::collections::BTreeMap::new();
            for _ in 0..count {
                let (gateway_id, sequence) = (r.u64()?, r.u64()?);
                if sequences.insert(gateway_id, sequence).is_some() {
                    return Err(invalid(format!("gateway {gateway_id} twice in the deduplication state")));
                }
            }
            engine.restore_gateway_sequences(sequences);
        }
        if r.offset != body.len() {
            return Err(invalid("trailing bytes"));
        }
        let hash = if version <= LEGACY_HASH_VERSION_MAX { engine.legacy_state_hash() } else { engine.state_hash() };
        if hash != stored_hash {
            return Err(invalid(format!("restored state hash {hash:#018x} != recorded {stored_hash:#018x}")));
        }
        engine.validate().map_err(|e| invalid(format!("restored state invalid: {e}")))?;
        Ok((engine, sequence))
    }
}

fn snapshot_name(sequence: u64) -> String {
    format!("snapshot-{sequence:020}.snap")
}

/// The CRC32C a snapshot records in its last four bytes, checked against all the bytes before
/// it (the format's own checksum, see the module documentation): what a copy of a snapshot
/// (e.g. reassembled from the chunks of the snapshot topic) is verified with before it is
/// restored.
///
/// # Errors
/// Shorter than the checksum, or the recorded checksum does not match the bytes.
pub fn recorded_checksum(bytes: &[u8]) -> Result<u32, SnapshotError> {
    let Some(split) = bytes.len().checked_sub(4) else { return Err(invalid("shorter than its checksum")) };
    let (body, recorded) = bytes.split_at(split);
    let recorded = u32::from_le_bytes(recorded.try_into().map_err(|_| invalid("shorter than its checksum"))?);
    if crc32c::crc32c(body) != recorded {
        return Err(invalid("checksum mismatch"));
    }
    Ok(recorded)
}

/// Writes a snapshot file atomically (temporary file, fsync, rename, directory fsync).
///
/// # Errors
/// I/O errors.
pub fn write_snapshot_file(dir: &Path, sequence: u64, bytes: &[u8]) -> Result<PathBuf, SnapshotError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(snapshot_name(sequence));
    let temporary = dir.join(format!("{}.tmp", snapshot_name(sequence)));
    let mut file = File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(bytes).map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    fs::rename(&temporary, &path).map_err(io(&path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(path)
}

/// Snapshot files in a directory, newest first.
///
/// # Errors
/// The directory cannot be read.
pub fn list_snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
    let mut snapshots = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(snapshots),
        Err(source) => return Err(SnapshotError::Io { path: dir.to_path_buf(), source }),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if let Some(sequence) = name
            .to_str()
            .and_then(|n| n.strip_prefix("snapshot-"))
            .and_then(|n| n.strip_suffix(".snap"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            snapshots.push((sequence, entry.path()));
        }
    }
    snapshots.sort_by(|a, b| b.cmp(a));
    Ok(snapshots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::commands::{deposit, limit};
    use crate::{CommandContext, OrderBook};
    use codec::TimeInForce;

    fn engine_with_orders() -> (EngineConfig, Engine) {
        let config = EngineConfig::sample();
        let mut engine = Engine::new(&config).unwrap();
        let mut events = Vec::new();
        let commands = [
            deposit(1, 0, 50_000_000),
            deposit(1, 1, 5_000_000_000),
            limit(1, 1, Side::Bid, 990, 10, TimeInForce::Gtc, 1),
            limit(1, 1, Side::Ask, 1_010, 10, TimeInForce::Gtc, 2),
        ];
        for (sequence, command) in commands.iter().enumerate() {
            engine.execute(CommandContext::new(sequence as u64 + 1, 1_000), command, &mut events);
        }
        assert_eq!(engine.book(codec::MarketId::new(1)).unwrap().len(), 2);
        (config, engine)
    }

    /// The gateway section of a state without gateway commands: its count word.
    const GATEWAY_COUNT_BYTES: usize = 8;

    /// Rewrites a snapshot's version and recorded hash (and its checksum).
    fn relabel(bytes: &[u8], version: u32, hash: u64) -> Vec<u8> {
        let mut body = bytes[..bytes.len() - 4].to_vec();
        body[8..12].copy_from_slice(&version.to_le_bytes());
        body[24..32].copy_from_slice(&hash.to_le_bytes());
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }

    /// A version-2 snapshot (FNV-1a recorded) still restores; the current version records the
    /// XXH3 hash, and a snapshot whose recorded hash is of the other function is refused.
    #[test]
    fn versions_before_3_are_checked_with_the_legacy_hash() {
        let (config, engine) = engine_with_orders();
        let mut bytes = Vec::new();
        let recorded = engine.write_snapshot(4, &mut bytes);
        assert_eq!(recorded, engine.state_hash());
        assert_ne!(engine.state_hash(), engine.legacy_state_hash());
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), SNAPSHOT_VERSION);

        // Versions before 4 end before the trigger section (3 words per market here: no trades,
        // no triggers, no attachments) and the gateway section (its count, zero).
        let without_triggers = {
            let cut = bytes.len() - 4 - GATEWAY_COUNT_BYTES - 24 * engine.market_count();
            let mut v = bytes[..cut].to_vec();
            v.extend_from_slice(&[0; 4]);
            v
        };
        let legacy = relabel(&without_triggers, 2, engine.legacy_state_hash());
        let (restored, sequence) = Engine::restore_snapshot(&config, OrderBook::with_capacity, &legacy).unwrap();
        assert_eq!((restored.state_hash(), sequence), (engine.state_hash(), 4));

        let current_with_legacy_hash = relabel(&bytes, SNAPSHOT_VERSION, engine.legacy_state_hash());
        assert!(Engine::restore_snapshot(&config, OrderBook::with_capacity, &current_with_legacy_hash).is_err());
        let legacy_with_current_hash = relabel(&without_triggers, 2, engine.state_hash());
        assert!(Engine::restore_snapshot(&config, OrderBook::with_capacity, &legacy_with_current_hash).is_err());
        let future = relabel(&bytes, SNAPSHOT_VERSION + 1, engine.state_hash());
        let error = Engine::restore_snapshot(&config, OrderBook::with_capacity, &future).err().unwrap();
        assert!(error.to_string().contains("unsupported version"), "{error}");
    }

    /// A version-4 snapshot (13 words per trigger, no attachment section) with a pending trigger
    /// still restores, to the same state.
    #[test]
    fn version_4_with_triggers_still_restores() {
        let (config, mut engine) = engine_with_orders();
        let mut events = Vec::new();
        let trigger =
            crate::testkit::commands::trigger(1, 1, codec::Side::Bid, codec::TriggerKind::Stop, 1_050, 0, 2, 0);
        engine.execute(CommandContext::new(5, 1_000), &trigger, &mut events);
        assert_eq!(engine.pending_triggers(codec::MarketId::new(1)), 1, "{events:?}");
        let mut bytes = Vec::new();
        engine.write_snapshot(5, &mut bytes);
        // Rebuild the trigger section as version 4 wrote it.
        let mut section_v5 = 0;
        let mut section_v4 = Vec::new();
        engine.visit_trigger_state(&mut |last_trade_ticks, triggers| {
            section_v5 += 8 * (3 + crate::triggers::TRIGGER_WORDS_V5 * triggers.len());
            section_v4.extend_from_slice(&last_trade_ticks.to_le_bytes());
            section_v4.extend_from_slice(&(triggers.len() as u64).to_le_bytes());
            for trigger in triggers.iter() {
                for word in trigger.words() {
                    section_v4.extend_from_slice(&word.to_le_bytes());
                }
            }
        });
        let mut v4 = bytes[..bytes.len() - 4 - GATEWAY_COUNT_BYTES - section_v5].to_vec();
        v4.extend_from_slice(&section_v4);
        v4.extend_from_slice(&[0; 4]);
        let v4 = relabel(&v4, 4, engine.state_hash());
        let (restored, _) = Engine::restore_snapshot(&config, OrderBook::with_capacity, &v4).unwrap();
        assert_eq!(restored.state_hash(), engine.state_hash());
        assert_eq!(restored.pending_triggers(codec::MarketId::new(1)), 1);
    }

    /// A version-5 snapshot (9 words per attachment, no uncovered lots) with an open attachment
    /// still restores, to the same state, with no uncovered lots.
    #[test]
    fn version_5_with_an_attachment_still_restores() {
        let (config, mut engine) = engine_with_orders();
        let mut events = Vec::new();
        let parent = crate::testkit::commands::with_attached(
            limit(1, 1, Side::Bid, 1_000, 5, TimeInForce::Gtc, 3),
            900,
            0,
            1_100,
            0,
        );
        engine.execute(CommandContext::new(5, 1_000), &parent, &mut events);
        let triggers = engine.triggers(codec::MarketId::new(1)).unwrap();
        assert_eq!(triggers.attachments().count(), 1, "{events:?}");
        let mut bytes = Vec::new();
        engine.write_snapshot(5, &mut bytes);
        // Rebuild the trigger section as version 5 wrote it.
        let mut section_v6 = 0;
        let mut section_v5 = Vec::new();
        engine.visit_trigger_state(&mut |last_trade_ticks, triggers| {
            let attachments = triggers.attachments().count();
            section_v6 += 8
                * (3 + crate::triggers::TRIGGER_WORDS_V5 * triggers.len()
                    + crate::triggers::ATTACHMENT_WORDS * attachments);
            section_v5.extend_from_slice(&last_trade_ticks.to_le_bytes());
            section_v5.extend_from_slice(&(triggers.len() as u64).to_le_bytes());
            for trigger in triggers.iter() {
                for word in trigger.words().into_iter().chain([trigger.sibling.get()]) {
                    section_v5.extend_from_slice(&word.to_le_bytes());
                }
            }
            section_v5.extend_from_slice(&(attachments as u64).to_le_bytes());
            for attachment in triggers.attachments() {
                for word in &attachment.words()[..crate::triggers::ATTACHMENT_WORDS_V5] {
                    section_v5.extend_from_slice(&word.to_le_bytes());
                }
            }
        });
        // Version 6 ends with the (empty) gateway section; version 5 has none.
        let mut v5 = bytes[..bytes.len() - 4 - GATEWAY_COUNT_BYTES - section_v6].to_vec();
        v5.extend_from_slice(&section_v5);
        v5.extend_from_slice(&[0; 4]);
        let v5 = relabel(&v5, 5, engine.state_hash());
        let (restored, _) = Engine::restore_snapshot(&config, OrderBook::with_capacity, &v5).unwrap();
        assert_eq!(restored.state_hash(), engine.state_hash());
        let attachment = *restored.triggers(codec::MarketId::new(1)).unwrap().attachments().next().unwrap();
        assert_eq!((attachment.stop_loss_trigger_ticks, attachment.uncovered_lots), (900, 0));
    }

    /// The gateway deduplication state is engine state: a duplicate changes nothing, the state
    /// hash covers the table, a version-6 snapshot carries it, and a version-5 snapshot (no
    /// gateway section) still restores, with an empty table.
    #[test]
    fn gateway_sequences_are_in_the_hash_and_the_snapshot() {
        let (config, mut engine) = engine_with_orders();
        let before = engine.state_hash();
        let mut version_5 = Vec::new();
        engine.write_snapshot(4, &mut version_5);
        let version_5 = relabel(
            &[&version_5[..version_5.len() - 4 - GATEWAY_COUNT_BYTES], &[0; 4][..]].concat(),
            5,
            engine.state_hash(),
        );
        let (restored, _) = Engine::restore_snapshot(&config, OrderBook::with_capacity, &version_5).unwrap();
        assert_eq!((restored.state_hash(), restored.gateway_sequences().count()), (before, 0));

        let tag = codec::GatewayTag { gateway_id: 9, gateway_sequence: 100 };
        let order = limit(1, 1, Side::Bid, 980, 1, TimeInForce::Gtc, 3);
        let mut events = Vec::new();
        engine.execute(CommandContext::new(5, 1_000).with_gateway(Some(tag)), &order, &mut events);
        assert!(!events.is_empty());
        let after_first = engine.state_hash();
        assert_ne!(after_first, before);
        // The same command again, and an older sequence of the same gateway: dropped, no events.
        for sequence in [100, 99] {
            events.clear();
            let again = codec::GatewayTag { gateway_sequence: sequence, ..tag };
            assert!(engine.is_duplicate(again));
            engine.execute(CommandContext::new(6, 1_000).with_gateway(Some(again)), &order, &mut events);
            assert!(events.is_empty(), "{events:?}");
            assert_eq!(engine.state_hash(), after_first);
        }
        assert_eq!(engine.book(codec::MarketId::new(1)).unwrap().len(), 3);
        // Another gateway's sequence 100 is not a duplicate.
        let other = codec::GatewayTag { gateway_id: 10, gateway_sequence: 100 };
        assert!(!engine.is_duplicate(other));

        let mut bytes = Vec::new();
        engine.write_snapshot(6, &mut bytes);
        let (restored, _) = Engine::restore_snapshot(&config, OrderBook::with_capacity, &bytes).unwrap();
        assert_eq!(restored.state_hash(), engine.state_hash());
        assert_eq!(restored.gateway_sequence(9), Some(100));
        assert!(restored.is_duplicate(tag));
    }

    /// A command from a gateway id beyond the deduplication table's room is rejected
    /// (`TooManyGateways`: one event, no state change, its gateway not remembered), the same way
    /// on every engine that executes it; gateways already in the table go on. (Before, it was
    /// dropped like a duplicate: no event at all.)
    #[test]
    fn a_command_from_a_gateway_beyond_the_table_is_rejected_deterministically() {
        let (config, mut engine) = engine_with_orders();
        let deposit = crate::testkit::commands::deposit(1, 0, 5);
        let mut events = Vec::new();
        for gateway_id in 0..crate::engine::GATEWAYS_MAX as u64 {
            let tag = codec::GatewayTag { gateway_id, gateway_sequence: 1 };
            engine.execute(CommandContext::new(10 + gateway_id, 1_000).with_gateway(Some(tag)), &deposit, &mut events);
        }
        let mut replica = {
            let mut bytes = Vec::new();
            engine.write_snapshot(10, &mut bytes);
            Engine::restore_snapshot(&config, OrderBook::with_capacity, &bytes).unwrap().0
        };
        let full = engine.state_hash();
        let beyond = codec::GatewayTag { gateway_id: crate::engine::GATEWAYS_MAX as u64, gateway_sequence: 1 };
        assert!(engine.gateway_table_full_for(beyond) && !engine.is_duplicate(beyond));
        let order = limit(1, 1, Side::Bid, 980, 1, TimeInForce::Gtc, 3);
        for engine in [&mut engine, &mut replica] {
            events.clear();
            engine.execute(CommandContext::new(9_000, 1_000).with_gateway(Some(beyond)), &order, &mut events);
            match events.as_slice() {
                [codec::Event::OrderRejected(rejected)] => {
                    assert_eq!(rejected.reason.get(), Ok(codec::RejectReason::TooManyGateways));
                    assert_eq!(rejected.user_id, order.user_id());
                }
                other => panic!("one rejection expected: {other:?}"),
            }
            assert_eq!(engine.state_hash(), full, "a rejection changes nothing");
            assert_eq!(engine.gateway_sequence(beyond.gateway_id), None);
        }
        // A gateway in the table goes on.
        events.clear();
        let known = codec::GatewayTag { gateway_id: 0, gateway_sequence: 2 };
        engine.execute(CommandContext::new(9_001, 1_000).with_gateway(Some(known)), &order, &mut events);
        assert!(matches!(events.first(), Some(codec::Event::OrderAccepted(_))), "{events:?}");
    }
}
