//! [`OrderTable`]: compact per-order records keyed by order id, for the views that follow the
//! engine's events outside the engine (market-data publisher, REST account views, gateway
//! dispatchers).
//!
//! Order ids are handed out in increasing order and the events that open orders arrive in that
//! order, so a table sorted by id grows by appending. Records sit in one `Vec` (no per-entry
//! allocation, no hash table kept at most 7/8 full and doubled, no B-tree nodes kept half full
//! by appends), and their ids in another as their low 32 bits, with one `(first entry, high 32
//! bits)` pair per run of entries sharing the high half of their ids (a new run every 2^32
//! orders): a live order costs its record, four bytes and one bit. Removing an order only marks
//! it dead; when dead entries outnumber live ones the table is compacted in place, so removal is
//! amortised O(1) and the table never holds more than twice its live entries (plus
//! [`COMPACT_DEAD_MIN`]). Lookups are binary searches. Capacity beyond the entries is never
//! written, so it costs address space, not resident memory.
//!
//! Invariants: `lows` and `values` have one element per entry; ids (`high << 32 | low`) strictly
//! increase along the entries; `highs` holds, ascending by both, the first entry of each run of
//! entries whose ids share their high half and that half, the first run starting at entry 0
//! (`highs` is empty exactly when there is no entry); `dead` has one bit per entry, set for a
//! removed one; `live` counts the clear bits.
//!
//! [`OrderTerms`] packs an order's small enums into one byte for the views' records.

use codec::{OrderType, SelfTradePrevention, Side, TimeInForce, WireEnum};

/// Dead entries tolerated before any compaction (below it compacting would not pay).
pub const COMPACT_DEAD_MIN: usize = 64;

const BITS_PER_WORD: usize = 64;

/// The low half of an order id (what the table keeps per entry).
fn low_of(id: u64) -> u32 {
    id as u32
}

/// The high half of an order id (kept once per run of entries).
fn high_of(id: u64) -> u32 {
    (id >> 32) as u32
}

/// Records of type `V` by order id (`u64`), ascending. See the module docs.
#[derive(Debug, Clone)]
pub struct OrderTable<V> {
    lows: Vec<u32>,
    values: Vec<V>,
    highs: Vec<(usize, u32)>,
    dead: Vec<u64>,
    live: usize,
}

impl<V> Default for OrderTable<V> {
    fn default() -> Self {
        Self { lows: Vec::new(), values: Vec::new(), highs: Vec::new(), dead: Vec::new(), live: 0 }
    }
}

impl<V> OrderTable<V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// A table of `records` in any order; of two records with one id the later wins.
    pub fn from_unsorted(mut records: Vec<(u64, V)>) -> Self {
        // Stable: equal ids keep their order, and the later one is kept below.
        records.sort_by_key(|(id, _)| *id);
        let mut table = Self::new();
        for (id, value) in records {
            if table.last_id() == Some(id) {
                if let Some(last) = table.values.last_mut() {
                    *last = value;
                }
            } else {
                table.push(id, value);
                table.live += 1;
            }
        }
        table
    }

    /// Appends an entry whose id is above every other (its dead bit clear; `live` unchanged).
    fn push(&mut self, id: u64, value: V) {
        if self.highs.last().map(|&(_, high)| high) != Some(high_of(id)) {
            self.highs.push((self.lows.len(), high_of(id)));
        }
        self.lows.push(low_of(id));
        self.values.push(value);
        if self.dead.len() * BITS_PER_WORD < self.lows.len() {
            self.dead.push(0);
        }
    }

    /// The id of the newest entry.
    fn last_id(&self) -> Option<u64> {
        let &(_, high) = self.highs.last()?;
        Some(u64::from(high) << 32 | u64::from(*self.lows.last()?))
    }

    /// The entries of run `run`.
    fn run_range(&self, run: usize) -> std::ops::Range<usize> {
        let start = self.highs[run].0;
        let end = self.highs.get(run + 1).map_or(self.lows.len(), |&(next, _)| next);
        start..end
    }

    /// Live records.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no record is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Removes every record.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    fn is_dead(&self, index: usize) -> bool {
        self.dead[index / BITS_PER_WORD] & (1 << (index % BITS_PER_WORD)) != 0
    }

    fn set_dead(&mut self, index: usize, dead: bool) {
        let bit = 1u64 << (index % BITS_PER_WORD);
        if dead {
            self.dead[index / BITS_PER_WORD] |= bit;
        } else {
            self.dead[index / BITS_PER_WORD] &= !bit;
        }
    }

    fn position(&self, id: u64) -> Result<usize, usize> {
        // The common case first: the newest order.
        match self.last_id() {
            None => return Err(0),
            Some(last) if last == id => return Ok(self.lows.len() - 1),
            Some(last) if last < id => return Err(self.lows.len()),
            Some(_) => {}
        }
        match self.highs.binary_search_by_key(&high_of(id), |&(_, high)| high) {
            Ok(run) => {
                let range = self.run_range(run);
                let start = range.start;
                self.lows[range].binary_search(&low_of(id)).map(|i| start + i).map_err(|i| start + i)
            }
            Err(run) => Err(self.highs.get(run).map_or(self.lows.len(), |&(start, _)| start)),
        }
    }

    /// The live record of `id`.
    pub fn get(&self, id: u64) -> Option<&V> {
        let index = self.position(id).ok()?;
        (!self.is_dead(index)).then(|| &self.values[index])
    }

    /// The live record of `id`, mutably.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut V> {
        let index = self.position(id).ok()?;
        if self.is_dead(index) { None } else { Some(&mut self.values[index]) }
    }

    /// Inserts or replaces the record of `id`; returns the live record it replaced. Appending
    /// (an id above every other) is O(1); an id below the newest costs a rebuild of the table.
    pub fn insert(&mut self, id: u64, value: V) -> Option<V> {
        match self.position(id) {
            Ok(index) => {
                let previous = std::mem::replace(&mut self.values[index], value);
                if self.is_dead(index) {
                    self.set_dead(index, false);
                    self.live += 1;
                    None
                } else {
                    Some(previous)
                }
            }
            Err(index) => {
                if index == self.lows.len() {
                    self.push(id, value);
                } else {
                    // Out of order (never from one engine's events): rebuild, dead entries
                    // included.
                    let entries: Vec<(u64, bool)> = self.ids().map(|(i, entry)| (entry, self.is_dead(i))).collect();
                    let mut values = std::mem::take(&mut self.values);
                    values.insert(index, value);
                    let live = self.live;
                    *self = Self::new();
                    let ids = entries[..index]
                        .iter()
                        .copied()
                        .chain(std::iter::once((id, false)))
                        .chain(entries[index..].iter().copied());
                    for ((entry, dead), value) in ids.zip(values) {
                        self.push(entry, value);
                        let at = self.lows.len() - 1;
                        self.set_dead(at, dead);
                    }
                    self.live = live;
                }
                self.live += 1;
                None
            }
        }
    }

    /// Every entry's index and id, dead ones included, ascending.
    fn ids(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        (0..self.highs.len()).flat_map(move |run| {
            let high = u64::from(self.highs[run].1) << 32;
            self.run_range(run).map(move |index| (index, high | u64::from(self.lows[index])))
        })
    }

    /// Removes the record of `id` and returns it (a copy: the slot stays until compaction).
    pub fn remove(&mut self, id: u64) -> Option<V>
    where
        V: Copy,
    {
        let index = self.position(id).ok()?;
        if self.is_dead(index) {
            return None;
        }
        let value = self.values[index];
        self.set_dead(index, true);
        self.live -= 1;
        let dead = self.lows.len() - self.live;
        if dead > self.live && dead >= COMPACT_DEAD_MIN {
            self.compact();
        }
        Some(value)
    }

    /// Drops the dead entries and gives back capacity that is mostly unused.
    fn compact(&mut self) {
        let dead = std::mem::take(&mut self.dead);
        let is_dead = |index: usize| dead[index / BITS_PER_WORD] & (1 << (index % BITS_PER_WORD)) != 0;
        // Each run keeps its high half and starts where its first survivor lands.
        let mut highs = Vec::with_capacity(self.highs.len());
        let mut kept = 0usize;
        for run in 0..self.highs.len() {
            let survivors = self.run_range(run).filter(|&index| !is_dead(index)).count();
            if survivors > 0 {
                highs.push((kept, self.highs[run].1));
                kept += survivors;
            }
        }
        let mut index = 0;
        self.lows.retain(|_| {
            let keep = !is_dead(index);
            index += 1;
            keep
        });
        let mut index = 0;
        self.values.retain(|_| {
            let keep = !is_dead(index);
            index += 1;
            keep
        });
        self.highs = highs;
        let len = self.lows.len();
        if self.values.capacity() > 4 * len.max(COMPACT_DEAD_MIN) {
            self.values.shrink_to(2 * len);
            self.lows.shrink_to(2 * len);
        }
        self.dead = vec![0; len.div_ceil(BITS_PER_WORD)];
        debug_assert_eq!(len, self.live);
        debug_assert_eq!(len, kept);
    }

    /// The live records, ascending by id.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> + '_ {
        self.ids().filter(|(index, _)| !self.is_dead(*index)).map(|(index, id)| (id, &self.values[index]))
    }
}

/// An order's side, type, time in force, self-trade prevention and post-only flag in one byte,
/// for the views' compact per-order records (five separate bytes would pad a record by a word):
/// each enum as its position in [`WireEnum::ALL`] (bit 0 side, bit 1 type, bits 2–3 time in
/// force, bits 4–5 self-trade prevention, bit 6 post-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderTerms(u8);

const TERMS_SIDE_SHIFT: u32 = 0;
const TERMS_TYPE_SHIFT: u32 = 1;
const TERMS_TIF_SHIFT: u32 = 2;
const TERMS_STP_SHIFT: u32 = 4;
const TERMS_POST_ONLY_SHIFT: u32 = 6;
// Each enum's variants fit its bits.
const _: () = assert!(Side::ALL.len() <= 1 << (TERMS_TYPE_SHIFT - TERMS_SIDE_SHIFT));
const _: () = assert!(OrderType::ALL.len() <= 1 << (TERMS_TIF_SHIFT - TERMS_TYPE_SHIFT));
const _: () = assert!(TimeInForce::ALL.len() <= 1 << (TERMS_STP_SHIFT - TERMS_TIF_SHIFT));
const _: () = assert!(SelfTradePrevention::ALL.len() <= 1 << (TERMS_POST_ONLY_SHIFT - TERMS_STP_SHIFT));

/// The position of `value` in its enum's [`WireEnum::ALL`] (every variant is there, and fits
/// the field: asserted above).
fn variant_index<E: WireEnum + PartialEq>(value: E) -> u8 {
    E::ALL.iter().position(|variant| *variant == value).map_or(0, |index| index as u8)
}

/// The variant whose [`variant_index`] is in the `bits` bits of `terms` from `shift` (only
/// values [`variant_index`] wrote are ever read back).
fn variant_at<E: WireEnum>(terms: u8, shift: u32, bits: u32) -> E {
    let index = usize::from((terms >> shift) & ((1u8 << bits) - 1));
    E::ALL[index.min(E::ALL.len() - 1)]
}

impl OrderTerms {
    /// The terms of an order.
    pub fn new(
        side: Side,
        order_type: OrderType,
        time_in_force: TimeInForce,
        self_trade_prevention: SelfTradePrevention,
        post_only: bool,
    ) -> Self {
        Self(
            variant_index(side) << TERMS_SIDE_SHIFT
                | variant_index(order_type) << TERMS_TYPE_SHIFT
                | variant_index(time_in_force) << TERMS_TIF_SHIFT
                | variant_index(self_trade_prevention) << TERMS_STP_SHIFT
                | u8::from(post_only) << TERMS_POST_ONLY_SHIFT,
        )
    }

    /// Side.
    pub fn side(self) -> Side {
        variant_at(self.0, TERMS_SIDE_SHIFT, TERMS_TYPE_SHIFT - TERMS_SIDE_SHIFT)
    }

    /// Order type.
    pub fn order_type(self) -> OrderType {
        variant_at(self.0, TERMS_TYPE_SHIFT, TERMS_TIF_SHIFT - TERMS_TYPE_SHIFT)
    }

    /// Time in force.
    pub fn time_in_force(self) -> TimeInForce {
        variant_at(self.0, TERMS_TIF_SHIFT, TERMS_STP_SHIFT - TERMS_TIF_SHIFT)
    }

    /// Self-trade prevention.
    pub fn self_trade_prevention(self) -> SelfTradePrevention {
        variant_at(self.0, TERMS_STP_SHIFT, TERMS_POST_ONLY_SHIFT - TERMS_STP_SHIFT)
    }

    /// Post-only.
    pub fn post_only(self) -> bool {
        (self.0 >> TERMS_POST_ONLY_SHIFT) & 1 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A seeded mix of appends, out-of-order inserts, replacements, updates and removals gives
    /// the same answers as a `BTreeMap` at every step, compactions included.
    #[test]
    fn behaves_like_an_ordered_map() {
        check_against_an_ordered_map(0);
    }

    /// The same with ids that now and then jump by 2^31 (so past 2^32, 2^33, ...): runs of
    /// entries with different high halves, out-of-order inserts and compactions across them.
    #[test]
    fn ids_past_32_bits_behave_like_an_ordered_map() {
        check_against_an_ordered_map(1 << 31);
    }

    fn check_against_an_ordered_map(jump: u64) {
        let mut table: OrderTable<u32> = OrderTable::new();
        let mut reference: BTreeMap<u64, u32> = BTreeMap::new();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next_id = 1u64;
        for step in 0..50_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            match state % 10 {
                0..=4 => {
                    assert_eq!(table.insert(next_id, step), reference.insert(next_id, step));
                    next_id += 1 + state % 3;
                    if jump > 0 && state % 97 == 0 {
                        next_id += jump;
                    }
                }
                5 => {
                    let id = 1 + (state >> 8) % next_id;
                    assert_eq!(table.insert(id, step), reference.insert(id, step));
                }
                6 => {
                    let id = 1 + (state >> 8) % next_id;
                    if let Some(value) = table.get_mut(id) {
                        *value += 1;
                    }
                    if let Some(value) = reference.get_mut(&id) {
                        *value += 1;
                    }
                }
                _ => {
                    let id = 1 + (state >> 8) % next_id;
                    assert_eq!(table.remove(id), reference.remove(&id));
                }
            }
            assert_eq!(table.len(), reference.len());
            let id = 1 + (state >> 16) % next_id;
            assert_eq!(table.get(id), reference.get(&id));
            if step % 1_000 == 0 {
                let listed: Vec<(u64, u32)> = table.iter().map(|(id, v)| (id, *v)).collect();
                let expected: Vec<(u64, u32)> = reference.iter().map(|(id, v)| (*id, *v)).collect();
                assert_eq!(listed, expected);
                assert!(table.lows.len() <= 2 * table.len() + COMPACT_DEAD_MIN);
            }
        }
    }

    #[test]
    fn removing_most_orders_gives_the_memory_back() {
        let mut table: OrderTable<u64> = OrderTable::new();
        for id in 1..=100_000 {
            table.insert(id, id);
        }
        for id in 1..=99_000 {
            assert_eq!(table.remove(id), Some(id));
        }
        assert_eq!(table.len(), 1_000);
        assert!(table.lows.len() <= 2 * 1_000 + COMPACT_DEAD_MIN);
        assert!(table.values.capacity() <= 8 * 1_000 + 4 * COMPACT_DEAD_MIN);
        assert_eq!(table.iter().next(), Some((99_001, &99_001)));
    }

    #[test]
    fn from_unsorted_sorts_and_keeps_the_later_duplicate() {
        let table = OrderTable::from_unsorted(vec![(5, 'a'), (2, 'b'), (5, 'c'), (9, 'd')]);
        assert_eq!(table.iter().collect::<Vec<_>>(), vec![(2, &'b'), (5, &'c'), (9, &'d')]);
        assert_eq!(table.len(), 3);
    }

    /// Every combination of side, type, time in force, self-trade prevention and post-only
    /// comes back from its one byte.
    #[test]
    fn every_combination_of_terms_comes_back() {
        let mut seen = std::collections::HashSet::new();
        for &side in Side::ALL {
            for &order_type in OrderType::ALL {
                for &time_in_force in TimeInForce::ALL {
                    for &self_trade_prevention in SelfTradePrevention::ALL {
                        for post_only in [false, true] {
                            let terms =
                                OrderTerms::new(side, order_type, time_in_force, self_trade_prevention, post_only);
                            assert!(seen.insert(terms));
                            assert_eq!(terms.side(), side);
                            assert_eq!(terms.order_type(), order_type);
                            assert_eq!(terms.time_in_force(), time_in_force);
                            assert_eq!(terms.self_trade_prevention(), self_trade_prevention);
                            assert_eq!(terms.post_only(), post_only);
                        }
                    }
                }
            }
        }
    }
}
