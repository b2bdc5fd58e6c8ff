//! Hashing: the state hash (a fixed, documented function of the state) and the fast hasher of the
//! engine's lookup maps.

use core::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// FNV-1a, 64-bit, over the little-endian bytes of each value fed in. Stable across platforms,
/// builds and runs, so a state hash can be compared between a live engine and a replay.
#[derive(Debug, Clone)]
pub struct StateHasher {
    state: u64,
}

impl Default for StateHasher {
    fn default() -> Self {
        Self { state: 0xcbf2_9ce4_8422_2325 }
    }
}

impl StateHasher {
    /// Feeds bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.state ^= u64::from(byte);
            self.state = self.state.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Feeds a u64.
    pub fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }

    /// Feeds a u128.
    pub fn u128(&mut self, value: u128) {
        self.bytes(&value.to_le_bytes());
    }

    /// The hash of everything fed so far.
    pub fn finish(&self) -> u64 {
        self.state
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
