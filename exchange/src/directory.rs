//! Mirrors the REST gateway's user directory (users and API keys, kept in
//! `<data_dir>/users/users.log`) into the Postgres `users` and `api_keys` tables
//! ([`sinks::directory`]), when the Postgres sink is configured.
//!
//! A task on the HTTP runtime looks at [`UserStore::version`] every [`POLL`] and, when it moved
//! (or after a failure), writes the whole directory again: idempotent upserts, so a write that
//! failed halfway or ran twice changes nothing, and the table catches up after Postgres comes
//! back or on the next start. The directory is small (one row per user and key); if it grows to
//! millions a change log would replace the full copy.

use base64::Engine as _;
use gateway_json::UserStore;
use sinks::directory::{DirectoryKey, DirectoryUser, write_directory};
use sinks::sqlx::postgres::PgPoolOptions;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the store's version is looked at.
pub const POLL: Duration = Duration::from_millis(500);

/// What the mirror has done (for tests and logs).
#[derive(Debug, Default)]
pub struct DirectoryStats {
    /// The store version last written (0: none yet).
    pub written_version: AtomicU64,
    /// Directory writes that succeeded.
    pub writes: AtomicU64,
    /// Writes that failed (retried).
    pub failures: AtomicU64,
}

/// The directory as the Postgres rows.
fn rows(users: &UserStore) -> (u64, Vec<DirectoryUser>, Vec<DirectoryKey>) {
    let (version, users, keys) = users.directory();
    let users = users
        .into_iter()
        .map(|user| DirectoryUser { user_id: user.id.get(), username: user.username, registered_ms: user.created_ms })
        .collect();
    let keys = keys
        .into_iter()
        .filter_map(|key| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(&key.api_key).ok()?;
            Some(DirectoryKey {
                public_key: <[u8; 32]>::try_from(bytes).ok()?,
                user_id: key.user_id.get(),
                label: key.label,
                created_ms: key.created_ms,
                revoked_ms: key.revoked_ms,
            })
        })
        .collect();
    (version, users, keys)
}

/// Starts the mirror on the current Tokio runtime.
///
/// # Errors
/// A malformed Postgres URL.
pub fn start(url: &str, users: Arc<UserStore>) -> Result<Arc<DirectoryStats>, String> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy(url)
        .map_err(|e| format!("postgres url: {e}"))?;
    let stats = Arc::new(DirectoryStats::default());
    let task_stats = stats.clone();
    tokio::spawn(async move {
        let mut written: Option<u64> = None;
        let mut failing = false;
        loop {
            if written != Some(users.version()) {
                let (version, user_rows, key_rows) = rows(&users);
                match write_directory(&pool, &user_rows, &key_rows).await {
                    Ok(()) => {
                        written = Some(version);
                        task_stats.written_version.store(version, Ordering::Release);
                        task_stats.writes.fetch_add(1, Ordering::Relaxed);
                        if failing {
                            tracing::info!(
                                users = user_rows.len(),
                                keys = key_rows.len(),
                                "user directory in Postgres"
                            );
                        }
                        failing = false;
                    }
                    Err(error) => {
                        task_stats.failures.fetch_add(1, Ordering::Relaxed);
                        // Usually the sink has not run its migrations yet, or Postgres is away.
                        if !failing {
                            tracing::warn!(%error, "user directory not written to Postgres yet; retrying");
                        }
                        failing = true;
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    });
    Ok(stats)
}
