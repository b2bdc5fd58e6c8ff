//! Hashing: the state hash (a fixed, documented function of the state) and the fast hasher of the
//! engine's lookup maps.

use core::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use xxhash_rust::xxh3::Xxh3Default;

/// Bytes of state words the [`StateHasher`] gathers before handing them to xxh3 in one call: large
/// enough that the per-call cost of the streaming hasher vanishes, small enough to stay in L1.
const STATE_HASH_CHUNK_BYTES: usize = 4096;

/// The words of the state, fed in a fixed order; implemented by the current hash and by the
/// legacy one that older snapshots were checked with.
pub(crate) trait StateWords {
    /// Feeds a u64.
    fn u64(&mut self, value: u64);
    /// Feeds a u128.
    fn u128(&mut self, value: u128);
}

/// The state hash: XXH3-64 (seed 0) over the little-endian bytes of every word fed in, in order.
/// A specified function, stable across platforms, builds and runs, so a state hash can be
/// compared between a live engine, a snapshot and a replay. Words are gathered into a chunk and
/// hashed a chunk at a time (the result does not depend on the chunking).
#[derive(Clone)]
pub struct StateHasher {
    xxh3: Xxh3Default,
    chunk: Box<[u8; STATE_HASH_CHUNK_BYTES]>,
    filled: usize,
}

impl core::fmt::Debug for StateHasher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StateHasher").field("hash", &self.finish()).finish()
    }
}

impl Default for StateHasher {
    fn default() -> Self {
        Self { xxh3: Xxh3Default::new(), chunk: Box::new([0; STATE_HASH_CHUNK_BYTES]), filled: 0 }
    }
}

impl StateHasher {
    /// Feeds bytes.
    pub fn bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = STATE_HASH_CHUNK_BYTES - self.filled;
            let take = room.min(bytes.len());
            self.chunk[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == STATE_HASH_CHUNK_BYTES {
                self.xxh3.update(&self.chunk[..]);
                self.filled = 0;
            }
        }
    }

    /// Feeds a u64.
    #[inline]
    pub fn u64(&mut self, value: u64) {
        if self.filled + 8 <= STATE_HASH_CHUNK_BYTES {
            self.chunk[self.filled..self.filled + 8].copy_from_slice(&value.to_le_bytes());
            self.filled += 8;
            if self.filled == STATE_HASH_CHUNK_BYTES {
                self.xxh3.update(&self.chunk[..]);
                self.filled = 0;
            }
        } else {
            self.bytes(&value.to_le_bytes());
        }
    }

    /// Feeds a u128.
    pub fn u128(&mut self, value: u128) {
        self.bytes(&value.to_le_bytes());
    }

    /// The hash of everything fed so far.
    pub fn finish(&self) -> u64 {
        let mut xxh3 = self.xxh3.clone();
        xxh3.update(&self.chunk[..self.filled]);
        xxh3.digest()
    }
}

impl StateWords for StateHasher {
    #[inline]
    fn u64(&mut self, value: u64) {
        StateHasher::u64(self, value);
    }
    fn u128(&mut self, value: u128) {
        StateHasher::u128(self, value);
    }
}

/// The state hash of snapshot format versions 1 and 2: FNV-1a, 64-bit, a byte at a time over the
/// same words. Kept only to check those snapshots when they are restored.
#[derive(Debug, Clone)]
pub(crate) struct LegacyStateHasher {
    state: u64,
}

impl Default for LegacyStateHasher {
    fn default() -> Self {
        Self { state: 0xcbf2_9ce4_8422_2325 }
    }
}

impl LegacyStateHasher {
    fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.state ^= u64::from(byte);
            self.state = self.state.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash of everything fed so far.
    pub(crate) fn finish(&self) -> u64 {
        self.state
    }
}

impl StateWords for LegacyStateHasher {
    fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }
    fn u128(&mut self, value: u128) {
        self.bytes(&value.to_le_bytes());
    }
}

/// Seed given to lookup maps created from now on (see [`set_lookup_hash_seed`]).
static LOOKUP_HASH_SEED: AtomicU64 = AtomicU64::new(0);

/// Sets the seed of the engine's lookup-map hasher for maps created afterwards. The server sets a
/// random one at start-up so that clients cannot precompute colliding client order ids. The seed
/// changes only where entries sit in memory, never what the engine does: maps are never iterated
/// on the state path (a test runs the same stream under different seeds and compares hashes).
pub fn set_lookup_hash_seed(seed: u64) {
    LOOKUP_HASH_SEED.store(seed, Ordering::Relaxed);
}

/// Builds [`IdHasher`]s from the seed current when the map was created.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeededIdHasher {
    seed: u64,
}

impl Default for SeededIdHasher {
    fn default() -> Self {
        Self { seed: LOOKUP_HASH_SEED.load(Ordering::Relaxed) }
    }
}

impl BuildHasher for SeededIdHasher {
    type Hasher = IdHasher;

    #[inline]
    fn build_hasher(&self) -> IdHasher {
        IdHasher { state: self.seed }
    }
}

/// Multiply-xorshift hasher for integer keys (ids), seeded per process.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher {
    state: u64,
}

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        let x = self.state;
        (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (x >> 32)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.state = (self.state.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.state = (self.state.rotate_left(5) ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    #[inline]
    fn write_u16(&mut self, value: u16) {
        self.write_u64(u64::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunked hasher is XXH3-64 of the concatenated little-endian words, wherever the chunk
    /// boundaries fall (a u128 straddles one here).
    #[test]
    fn state_hash_is_xxh3_of_the_words_in_order() {
        let mut hasher = StateHasher::default();
        let mut bytes = Vec::new();
        for word in 0..1_000u64 {
            let value = word.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            hasher.u64(value);
            bytes.extend_from_slice(&value.to_le_bytes());
            if word % 97 == 0 {
                let wide = u128::from(value) << 64 | u128::from(word);
                hasher.u128(wide);
                bytes.extend_from_slice(&wide.to_le_bytes());
            }
            hasher.bytes(&[word as u8]);
            bytes.push(word as u8);
        }
        assert!(bytes.len() > 2 * STATE_HASH_CHUNK_BYTES);
        assert_eq!(hasher.finish(), xxhash_rust::xxh3::xxh3_64(&bytes));
        assert_eq!(StateHasher::default().finish(), xxhash_rust::xxh3::xxh3_64(&[]));
    }

    /// The legacy hash is FNV-1a, pinned by its published test vector.
    #[test]
    fn legacy_state_hash_is_fnv1a() {
        let mut legacy = LegacyStateHasher::default();
        legacy.bytes(b"a");
        assert_eq!(legacy.finish(), 0xaf63_dc4c_8601_ec8c);
    }
}
