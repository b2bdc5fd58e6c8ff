//! The load-test users that `exchange --load-users N` creates.
//!
//! These mirror `exchange::demo::LOAD_USER_FIRST` and `exchange::demo::load_user_secret`. They
//! are reimplemented here rather than imported because `exchange` is the server binary crate:
//! depending on it would compile the whole server (HTTP, journal, runtime) into the load
//! generator. The scheme is tiny and documented as public knowledge (benchmarks on a private
//! machine only), and the SBE smoke test logs on with these secrets against users registered
//! the same way, so a divergence shows up as a failed logon.

/// First user id of the load-test users (`--load-users N` creates `LOAD_USER_FIRST..+N`).
pub const LOAD_USER_FIRST: u64 = 1_000_001;

/// API secret (Ed25519 seed) of load-test user `user`: its id's 8 little-endian bytes, repeated
/// four times.
pub fn load_user_secret(user: u64) -> [u8; 32] {
    let mut secret = [0u8; 32];
    for chunk in secret.chunks_exact_mut(8) {
        chunk.copy_from_slice(&user.to_le_bytes());
    }
    secret
}
