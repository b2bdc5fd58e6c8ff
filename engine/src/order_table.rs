//! [`OrderTable`]: compact per-order records keyed by order id, for the views that follow the
//! engine's events outside the engine (market-data publisher, REST account views, gateway
//! dispatchers).
//!
//! Order ids are handed out in increasing order and the events that open orders arrive in that
//! order, so a table sorted by id grows by appending. Records sit in one `Vec` (no per-entry
//! allocation, no hash table kept at most 7/8 full and doubled, no B-tree nodes kept half full
//! by appends): a live order costs the size of its id and record plus one bit. Removing an order
//! only marks it dead; when dead entries outnumber live ones the table is compacted in place, so
//! removal is amortised O(1) and the table never holds more than twice its live entries (plus
//! [`COMPACT_DEAD_MIN`]). Lookups are binary searches. Capacity beyond the entries is never
//! written, so it costs address space, not resident memory.
//!
//! Invariants: ids strictly increase along `entries`; `dead` has one bit per entry, set for a
//! removed one; `live` counts the clear bits.

/// Dead entries tolerated before any compaction (below it compacting would not pay).
pub const COMPACT_DEAD_MIN: usize = 64;

const BITS_PER_WORD: usize = 64;

/// Records of type `V` by order id (`u64`), ascending. See the module docs.
#[derive(Debug, Clone)]
pub struct OrderTable<V> {
    entries: Vec<(u64, V)>,
    dead: Vec<u64>,
    live: usize,
}

impl<V> Default for OrderTable<V> {
    fn default() -> Self {
        Self { entries: Vec::new(), dead: Vec::new(), live: 0 }
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
        let mut entries: Vec<(u64, V)> = Vec::with_capacity(records.len());
        for record in records {
            match entries.last_mut() {
                Some(last) if last.0 == record.0 => *last = record,
                _ => entries.push(record),
            }
        }
        let live = entries.len();
        Self { dead: vec![0; live.div_ceil(BITS_PER_WORD)], entries, live }
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
        match self.entries.last() {
            Some((last, _)) if *last == id => Ok(self.entries.len() - 1),
            Some((last, _)) if *last < id => Err(self.entries.len()),
            _ => self.entries.binary_search_by_key(&id, |(entry, _)| *entry),
        }
    }

    /// The live record of `id`.
    pub fn get(&self, id: u64) -> Option<&V> {
        let index = self.position(id).ok()?;
        (!self.is_dead(index)).then(|| &self.entries[index].1)
    }

    /// The live record of `id`, mutably.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut V> {
        let index = self.position(id).ok()?;
        if self.is_dead(index) { None } else { Some(&mut self.entries[index].1) }
    }

    /// Inserts or replaces the record of `id`; returns the live record it replaced. Appending
    /// (an id above every other) is O(1); an id below the newest costs a shift of the entries
    /// after it.
    pub fn insert(&mut self, id: u64, value: V) -> Option<V> {
        match self.position(id) {
            Ok(index) => {
                let previous = std::mem::replace(&mut self.entries[index].1, value);
                if self.is_dead(index) {
                    self.set_dead(index, false);
                    self.live += 1;
                    None
                } else {
                    Some(previous)
                }
            }
            Err(index) => {
                if index == self.entries.len() {
                    self.entries.push((id, value));
                    if self.dead.len() * BITS_PER_WORD < self.entries.len() {
                        self.dead.push(0);
                    }
                } else {
                    // Out of order (never from one engine's events): rebuild the dead bits.
                    let dead: Vec<bool> = (0..self.entries.len()).map(|i| self.is_dead(i)).collect();
                    self.entries.insert(index, (id, value));
                    self.dead = vec![0; self.entries.len().div_ceil(BITS_PER_WORD)];
                    for (i, is_dead) in dead.into_iter().enumerate() {
                        let at = if i < index { i } else { i + 1 };
                        self.set_dead(at, is_dead);
                    }
                }
                self.live += 1;
                None
            }
        }
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
        let value = self.entries[index].1;
        self.set_dead(index, true);
        self.live -= 1;
        let dead = self.entries.len() - self.live;
        if dead > self.live && dead >= COMPACT_DEAD_MIN {
            self.compact();
        }
        Some(value)
    }

    /// Drops the dead entries and gives back capacity that is mostly unused.
    fn compact(&mut self) {
        let mut index = 0;
        let dead = std::mem::take(&mut self.dead);
        self.entries.retain(|_| {
            let keep = dead[index / BITS_PER_WORD] & (1 << (index % BITS_PER_WORD)) == 0;
            index += 1;
            keep
        });
        if self.entries.capacity() > 4 * self.entries.len().max(COMPACT_DEAD_MIN) {
            self.entries.shrink_to(2 * self.entries.len());
        }
        self.dead = vec![0; self.entries.len().div_ceil(BITS_PER_WORD)];
        debug_assert_eq!(self.entries.len(), self.live);
    }

    /// The live records, ascending by id.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> + '_ {
        self.entries.iter().enumerate().filter(|(index, _)| !self.is_dead(*index)).map(|(_, (id, value))| (*id, value))
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
                assert!(table.entries.len() <= 2 * table.len() + COMPACT_DEAD_MIN);
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
        assert!(table.entries.len() <= 2 * 1_000 + COMPACT_DEAD_MIN);
        assert!(table.entries.capacity() <= 8 * 1_000 + 4 * COMPACT_DEAD_MIN);
        assert_eq!(table.iter().next(), Some((99_001, &99_001)));
    }

    #[test]
    fn from_unsorted_sorts_and_keeps_the_later_duplicate() {
        let table = OrderTable::from_unsorted(vec![(5, 'a'), (2, 'b'), (5, 'c'), (9, 'd')]);
        assert_eq!(table.iter().collect::<Vec<_>>(), vec![(2, &'b'), (5, &'c'), (9, &'d')]);
        assert_eq!(table.len(), 3);
    }
}
