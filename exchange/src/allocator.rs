//! How the server asks the C allocator (glibc `malloc`, which Rust's `System` allocator calls)
//! to place large blocks.
//!
//! The views that follow the engine outside it (REST account views, the market-data publisher's
//! order table, the SBE dispatcher's owners, each session's retransmit window) are vectors that
//! grow by doubling while orders arrive. glibc serves a block from its heaps (one per thread
//! class, the "arenas") unless it is at least the *mmap threshold*, which starts at 128 KiB but
//! rises to the size of every mapped block freed, up to 32 MiB. Once a table's first doubling
//! freed a mapped block, every later doubling up to 32 MiB came from an arena: a new block, a copy,
//! and the old block freed inside the arena, written and resident, rarely reused (the next
//! doubling needs twice as much). At 1M resting orders that garbage was ~75 MB, about 75 bytes per
//! resting order (docs/benchmarks.md, "Memory per resting order").
//!
//! [`map_large_allocations`] fixes the threshold at [`MAP_THRESHOLD_BYTES`], which also turns
//! the rising rule off: every large block is then its own mapping, a vector grows with `mremap`
//! (no copy, no garbage) and a freed large block goes back to the kernel. The cost is a system
//! call per large allocation and free, which the hot paths do not make (their room is reserved
//! at start-up).
#![allow(unsafe_code)]

/// Blocks of at least this many bytes get their own mapping (glibc's initial default, kept fixed).
pub const MAP_THRESHOLD_BYTES: usize = 128 * 1024;

/// Fixes the allocator's mmap threshold at [`MAP_THRESHOLD_BYTES`] (see the module docs). Call
/// it first thing in `main`, before the large structures are allocated. Returns whether the
/// allocator accepted it (always false outside glibc, where there is nothing to do).
pub fn map_large_allocations() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only sets a tuning parameter of glibc's allocator (thread-safe, it
        // takes the arena locks); `M_MMAP_THRESHOLD` with a value below `HEAP_MAX / 2` is valid.
        // No memory of ours is passed or read.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MAP_THRESHOLD_BYTES as libc::c_int) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Bytes in blocks glibc has mapped on their own (`hblkhd` of `mallinfo2`, process-wide).
    fn mapped_block_bytes() -> usize {
        // SAFETY: `mallinfo2` takes no arguments and returns a plain struct by value.
        unsafe { libc::mallinfo2() }.hblkhd
    }

    /// A block of 4 MiB allocated and freed raises glibc's default (dynamic) threshold to 4 MiB,
    /// so a following 1 MiB vector would come from an arena; with the threshold fixed it is
    /// mapped on its own. Fails without [`map_large_allocations`] (the 1 MiB block is not mapped).
    #[test]
    fn a_large_vector_is_mapped_even_after_a_larger_block_was_freed() {
        assert!(map_large_allocations(), "glibc refused the threshold");
        drop(std::hint::black_box(vec![1u8; 4 << 20]));
        let before = mapped_block_bytes();
        let table = std::hint::black_box(vec![1u8; 1 << 20]);
        let after = mapped_block_bytes();
        assert!(after >= before + table.len(), "1 MiB vector not mapped on its own: {before} -> {after}");
    }
}
