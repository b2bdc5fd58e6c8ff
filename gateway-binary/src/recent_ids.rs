//! [`RecentClientOrderIds`]: the client order ids a session used last, for duplicate `ClOrdID`
//! rejects, in about 16 bytes per id instead of the ~27 of a `HashSet<u64>` beside a
//! `VecDeque<u64>` (the set kept each id a second time, in buckets a doubling table leaves half
//! empty).
//!
//! The ids sit once, oldest first, in a ring; a linear-probing hash index holds each id's
//! *position* in that ring as a `u32` (positions count the ids ever remembered, modulo
//! [`POSITION_MASK`] + 1, far more than the ring ever holds). The index is at most
//! [`LOAD_PERCENT_MAX`] full; removal shifts the following entries back (no tombstones), so a
//! lookup stops at the first free slot. Ids are hashed with the standard library's keyed SipHash
//! (a random key per process), so a client cannot choose ids that collide.
//!
//! Invariants: every id in `ids` has exactly one index slot holding its position, and every
//! occupied slot holds the position of an id in `ids`; `ids.len() <= remembered_max`.

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// Most ids a session can be configured to remember (positions must stay below the mask).
pub const REMEMBERED_MAX: usize = 1 << 30;
/// Positions are counted modulo `POSITION_MASK + 1`; `FREE` is above them all.
const POSITION_MASK: u32 = (1 << 31) - 1;
/// An index slot holding no position.
const FREE: u32 = u32::MAX;
/// Most occupied index slots per hundred.
const LOAD_PERCENT_MAX: usize = 75;
/// Index slots allocated on the first id.
const INDEX_SLOTS_MIN: usize = 16;

/// See the module docs.
#[derive(Debug)]
pub struct RecentClientOrderIds {
    ids: VecDeque<u64>,
    /// Position of `ids[0]`.
    first: u32,
    /// `FREE` or a position; the length is zero or a power of two.
    index: Vec<u32>,
    hasher: RandomState,
    remembered_max: usize,
}

impl RecentClientOrderIds {
    /// Remembers up to `remembered_max` ids (at most [`REMEMBERED_MAX`]).
    pub fn new(remembered_max: usize) -> Self {
        Self {
            ids: VecDeque::new(),
            first: 0,
            index: Vec::new(),
            hasher: RandomState::new(),
            remembered_max: remembered_max.min(REMEMBERED_MAX),
        }
    }

    /// Ids remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.ids.len()
    }

    /// Bytes reserved for the ids and their index.
    #[cfg(test)]
    fn reserved_bytes(&self) -> usize {
        self.ids.capacity() * std::mem::size_of::<u64>() + self.index.capacity() * std::mem::size_of::<u32>()
    }

    fn home(&self, id: u64) -> usize {
        self.hasher.hash_one(id) as usize & (self.index.len() - 1)
    }

    /// The id at `position`.
    fn id_at(&self, position: u32) -> u64 {
        self.ids[(position.wrapping_sub(self.first) & POSITION_MASK) as usize]
    }

    /// The index slot of `id`, if remembered.
    fn slot_of(&self, id: u64) -> Option<usize> {
        if self.index.is_empty() {
            return None;
        }
        let mask = self.index.len() - 1;
        let mut slot = self.home(id);
        loop {
            match self.index[slot] {
                FREE => return None,
                position if self.id_at(position) == id => return Some(slot),
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    /// Puts `position` (of an id in `ids`) into the index, which has a free slot.
    fn place(&mut self, position: u32) {
        let mask = self.index.len() - 1;
        let mut slot = self.home(self.id_at(position));
        while self.index[slot] != FREE {
            slot = (slot + 1) & mask;
        }
        self.index[slot] = position;
    }

    /// Frees `slot`, shifting back the entries after it that would no longer be found.
    fn vacate(&mut self, mut slot: usize) {
        let mask = self.index.len() - 1;
        let mut next = slot;
        loop {
            next = (next + 1) & mask;
            let position = self.index[next];
            if position == FREE {
                break;
            }
            let home = self.home(self.id_at(position));
            // Move the entry back unless its home lies cyclically in (slot, next].
            let stays = if slot <= next { slot < home && home <= next } else { slot < home || home <= next };
            if !stays {
                self.index[slot] = position;
                slot = next;
            }
        }
        self.index[slot] = FREE;
    }

    /// Doubles the index (or allocates the first one) when one more id would load it beyond
    /// [`LOAD_PERCENT_MAX`].
    fn make_room(&mut self) {
        if (self.ids.len() + 1) * 100 <= self.index.len() * LOAD_PERCENT_MAX {
            return;
        }
        let slots = (self.index.len() * 2).max(INDEX_SLOTS_MIN);
        self.index = vec![FREE; slots];
        for offset in 0..self.ids.len() as u32 {
            self.place(self.first.wrapping_add(offset) & POSITION_MASK);
        }
    }

    /// Records `id`; false if it is remembered already. Forgets the oldest id beyond
    /// `remembered_max`.
    pub fn remember(&mut self, id: u64) -> bool {
        if self.slot_of(id).is_some() {
            return false;
        }
        if self.remembered_max == 0 {
            return true;
        }
        if self.ids.len() == self.remembered_max {
            if let Some(&oldest) = self.ids.front()
                && let Some(slot) = self.slot_of(oldest)
            {
                self.vacate(slot);
            }
            self.ids.pop_front();
            self.first = self.first.wrapping_add(1) & POSITION_MASK;
        }
        self.make_room();
        let position = self.first.wrapping_add(self.ids.len() as u32) & POSITION_MASK;
        self.ids.push_back(id);
        self.place(position);
        true
    }

    /// Forgets `id` if it is the one remembered last.
    pub fn forget_last(&mut self, id: u64) {
        if self.ids.back() == Some(&id) {
            if let Some(slot) = self.slot_of(id) {
                self.vacate(slot);
            }
            self.ids.pop_back();
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against the plain set and queue it replaces, and its size per id.
    use super::*;
    use std::collections::HashSet;

    /// The structure it replaces, as it was.
    struct Model {
        set: HashSet<u64>,
        order: VecDeque<u64>,
        max: usize,
    }

    impl Model {
        fn remember(&mut self, id: u64) -> bool {
            if !self.set.insert(id) {
                return false;
            }
            self.order.push_back(id);
            if self.order.len() > self.max
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
            true
        }

        fn forget_last(&mut self, id: u64) {
            if self.order.back() == Some(&id) {
                self.order.pop_back();
                self.set.remove(&id);
            }
        }
    }

    fn check_invariants(recent: &RecentClientOrderIds) {
        let occupied = recent.index.iter().filter(|&&p| p != FREE).count();
        assert_eq!(occupied, recent.ids.len());
        for &id in &recent.ids {
            assert!(recent.slot_of(id).is_some(), "id {id} not found");
        }
    }

    /// Random ids from a small range (many duplicates), evictions and forgets, for several
    /// window sizes: every answer equals the model's.
    #[test]
    fn answers_like_a_set_and_a_queue() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for max in [0usize, 1, 2, 5, 64, 1_000] {
            let mut recent = RecentClientOrderIds::new(max);
            let mut model = Model { set: HashSet::new(), order: VecDeque::new(), max };
            for step in 0..20_000 {
                let id = next() % 3_000;
                if step % 7 == 3 {
                    let last = model.order.back().copied().unwrap_or(id);
                    recent.forget_last(last);
                    model.forget_last(last);
                } else {
                    assert_eq!(recent.remember(id), model.remember(id), "max {max}, step {step}, id {id}");
                }
                if step % 997 == 0 {
                    check_invariants(&recent);
                }
            }
            check_invariants(&recent);
            assert_eq!(recent.ids, model.order);
        }
    }

    /// 125,000 distinct ids (one session's share in the memory benchmark) cost at most 17 bytes
    /// each; the `HashSet<u64>` and `VecDeque<u64>` it replaces reserved 262,144 nine-byte
    /// buckets and 131,072 eight-byte slots, 27 bytes per id.
    #[test]
    fn an_id_costs_about_sixteen_bytes() {
        const IDS: usize = 125_000;
        let mut recent = RecentClientOrderIds::new(1 << 20);
        for id in 0..IDS as u64 {
            assert!(recent.remember(id * 7_919 + 13));
        }
        assert_eq!(recent.len(), IDS);
        assert!(!recent.remember(13));
        let per_id = recent.reserved_bytes() / IDS;
        assert!(per_id <= 17, "{per_id} bytes per id");
    }
}
