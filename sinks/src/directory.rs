//! The user directory in Postgres: users registered through the REST API and their API keys.
//!
//! They are not engine state (the gateway keeps them in its own record file, fsynced before it
//! answers; see docs/rest-api.md), so they do not flow through the event stream like the other
//! tables. The exchange hands the whole directory to [`write_directory`] whenever it changed;
//! the statements are idempotent upserts, so a repeated or interrupted write is harmless and the
//! next one completes it. Keys from the configuration are written by the Postgres sink itself
//! (`source = 'config'`). Password hashes and secrets are never copied.

use sqlx::PgPool;

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// The engine's user id.
    pub user_id: u64,
    /// Unique, lower case.
    pub username: String,
    /// Registration time, ms since the epoch.
    pub registered_ms: u64,
}

/// An API key registered or generated through the REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryKey {
    /// The Ed25519 public key.
    pub public_key: [u8; 32],
    /// Owner.
    pub user_id: u64,
    /// The owner's name for it.
    pub label: String,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Revocation time, if revoked.
    pub revoked_ms: Option<u64>,
}

fn signed(value: u64) -> Result<i64, sqlx::Error> {
    i64::try_from(value).map_err(|_| sqlx::Error::Protocol(format!("{value} does not fit a BIGINT")))
}

/// Upserts every user and key in one transaction (users first: keys reference them).
///
/// # Errors
/// Postgres is unreachable, or the schema lacks the directory columns (migrations not yet run by
/// the sink): retry later.
pub async fn write_directory(pool: &PgPool, users: &[DirectoryUser], keys: &[DirectoryKey]) -> Result<(), sqlx::Error> {
    let mut ids = Vec::with_capacity(users.len());
    let mut names = Vec::with_capacity(users.len());
    let mut registered = Vec::with_capacity(users.len());
    for user in users {
        ids.push(signed(user.user_id)?);
        names.push(user.username.clone());
        registered.push(signed(user.registered_ms)?);
    }
    let mut public_keys = Vec::with_capacity(keys.len());
    let mut owners = Vec::with_capacity(keys.len());
    let mut labels = Vec::with_capacity(keys.len());
    let mut created = Vec::with_capacity(keys.len());
    let mut revoked: Vec<Option<i64>> = Vec::with_capacity(keys.len());
    for key in keys {
        public_keys.push(key.public_key.to_vec());
        owners.push(signed(key.user_id)?);
        labels.push(key.label.clone());
        created.push(signed(key.created_ms)?);
        revoked.push(key.revoked_ms.map(signed).transpose()?);
    }
    let mut tx = pool.begin().await?;
    // A user the engine saw first keeps its first_sequence; one registered before any event gets
    // 0 (the sink sets it at the first event).
    sqlx::query(
        "INSERT INTO users (user_id, first_sequence, username, registered_ms)
         SELECT id, 0, name, registered FROM UNNEST($1::bigint[], $2::text[], $3::bigint[]) AS u(id, name, registered)
         ON CONFLICT (user_id) DO UPDATE SET username = EXCLUDED.username, registered_ms = EXCLUDED.registered_ms
         WHERE users.username IS DISTINCT FROM EXCLUDED.username
            OR users.registered_ms IS DISTINCT FROM EXCLUDED.registered_ms",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&registered)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO api_keys (public_key, user_id, source, label, created_ms, revoked_ms)
         SELECT key, owner, 'api', label, created, revoked
         FROM UNNEST($1::bytea[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[])
             AS k(key, owner, label, created, revoked)
         ON CONFLICT (public_key) DO UPDATE SET user_id = EXCLUDED.user_id, source = 'api', label = EXCLUDED.label,
             created_ms = EXCLUDED.created_ms, revoked_ms = EXCLUDED.revoked_ms
         WHERE api_keys.revoked_ms IS DISTINCT FROM EXCLUDED.revoked_ms
            OR api_keys.label IS DISTINCT FROM EXCLUDED.label
            OR api_keys.source <> 'api'",
    )
    .bind(&public_keys)
    .bind(&owners)
    .bind(&labels)
    .bind(&created)
    .bind(&revoked)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
