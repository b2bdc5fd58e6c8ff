//! Users, passwords, API keys and sessions: the [`UserStore`].
//!
//! The engine only knows numeric user ids. Who a user is (a username and an argon2id password
//! hash) and which Ed25519 API keys act for them live here, in an append-only record file
//! `<dir>/users.log` (the server uses `<data_dir>/users/`), **not** in the engine journal:
//!
//! - one record per line: `<crc32c of the JSON, 8 hex digits> <JSON>\n`, where the JSON is a
//!   user (`{"type":"user","id","username","passwordHash","createdAt"}`), a key
//!   (`{"type":"key","apiKey","userId","label","createdAt"}`) or a revocation
//!   (`{"type":"revoke","apiKey","revokedAt"}`); times in ms since the epoch;
//! - a record is written and `fdatasync`ed before the request that made it is answered;
//! - at start the file is replayed; a torn or damaged *last* record (a crash mid-write) is
//!   dropped and cut off, a damaged record followed by others refuses to start.
//!
//! Every active key is registered in the shared [`Credentials`] (the table the signed REST API
//! and the SBE gateway read), and removed from it when revoked, so a revoked key is refused by
//! the next request.
//!
//! # Replicated directory (a cluster)
//! In a cluster (docs/deployment.md, "User directory") the replicated primary is the single
//! writer of user ids: its store is given a [`DirectoryLog`] (the Kafka users topic) and every
//! record is appended there, and acknowledged by it, **before** it is written to the local file,
//! applied, or answered; a record the log refuses is answered `503` and changes nothing. Every
//! other process (gateway processes, a promoting standby) applies the log's records with
//! [`UserStore::apply_replicated`], which is idempotent: a record already known changes nothing.
//!
//! Sessions are stateless HS256 JWTs ([`UserStore::login`], [`UserStore::verify_jwt`]) signed
//! with a secret from the configuration, or a random one per process (then every session ends
//! when the server restarts).

use crate::ApiError;
use crate::auth::unauthorized;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::StatusCode;
use base64::Engine as _;
use codec::{FixedBytes, UserId};
use gateway_binary::Credentials;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Name of the record file inside the store's directory.
pub const USERS_FILE: &str = "users.log";
/// Default first id of a new user (demo users are 1..=4; config users should stay below).
pub const FIRST_USER_ID_DEFAULT: u64 = 10_000;
/// Default session (JWT) lifetime.
pub const JWT_TTL_DEFAULT: Duration = Duration::from_secs(15 * 60);
/// Longest a session may be kept alive by renewals ([`UserStore::renew`]) after the password
/// login that started it: past this, the user logs in again (a stolen token cannot be renewed
/// forever).
pub const SESSION_RENEWAL_MAX: Duration = Duration::from_secs(24 * 60 * 60);
/// Default shortest password.
pub const PASSWORD_MIN_DEFAULT: usize = 8;
/// Longest password accepted (bounds the hashing work per request).
pub const PASSWORD_MAX: usize = 256;
/// Most API keys (active or revoked) a user may have.
pub const KEYS_PER_USER_MAX: usize = 50;
/// Longest key label, characters.
pub const LABEL_MAX: usize = 64;

/// The authoritative log of directory records in a cluster (the Kafka users topic): the primary's
/// store appends every record here before it applies it.
pub trait DirectoryLog: Send + Sync {
    /// Appends one record, exactly as the record file holds it (`<crc32c> <JSON>`, without the
    /// newline), and returns once the log has it durably.
    ///
    /// # Errors
    /// The log did not take it (or its outcome is unknown): the store refuses the change.
    fn append(&self, line: &str) -> Result<(), String>;
}

/// Why a record from the directory log was not applied ([`UserStore::apply_replicated`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicatedError {
    /// The line is not a record (checksum, JSON).
    #[error("not a directory record: {0}")]
    Malformed(String),
    /// It contradicts the directory here (a user id or name, or a key, already taken otherwise).
    #[error("conflicts with the directory here: {0}")]
    Conflict(String),
}

/// Settings of the user store.
#[derive(Debug, Clone)]
pub struct UsersConfig {
    /// Directory of the record file (created if missing).
    pub dir: PathBuf,
    /// HS256 secret of session tokens; `None`: random per process.
    pub jwt_secret: Option<Vec<u8>>,
    /// Session token lifetime.
    pub jwt_ttl: Duration,
    /// Smallest id a new user may get.
    pub first_user_id: u64,
    /// Ids never given to a new user (e.g. the load-test users' range).
    pub reserved_ids: Vec<RangeInclusive<u64>>,
    /// Shortest password accepted.
    pub password_min: usize,
    /// Login attempts per username: burst.
    pub login_burst_per_user: u32,
    /// Login and registration attempts per client IP: burst.
    pub login_burst_per_ip: u32,
    /// One attempt is regained every this long (per username and per IP).
    pub login_refill: Duration,
}

impl UsersConfig {
    /// Defaults with the record file in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            jwt_secret: None,
            jwt_ttl: JWT_TTL_DEFAULT,
            first_user_id: FIRST_USER_ID_DEFAULT,
            reserved_ids: Vec::new(),
            password_min: PASSWORD_MIN_DEFAULT,
            login_burst_per_user: 10,
            login_burst_per_ip: 30,
            login_refill: Duration::from_secs(6),
        }
    }
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The engine's user id.
    pub id: UserId,
    /// Unique, lower case.
    pub username: String,
    /// Registration time, ms since the epoch.
    pub created_ms: u64,
}

/// An API key of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Base64 of the 32-byte Ed25519 public key (the `X-API-Key`).
    pub api_key: String,
    /// Owner.
    pub user_id: UserId,
    /// The owner's name for it.
    pub label: String,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Revocation time, if revoked.
    pub revoked_ms: Option<u64>,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O on the record file.
    #[error("user store {path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A damaged record that is not the last one.
    #[error("user store {path}: damaged record on line {line}: {reason}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
enum Record {
    #[serde(rename_all = "camelCase")]
    User { id: u64, username: String, password_hash: String, created_at: u64 },
    #[serde(rename_all = "camelCase")]
    Key { api_key: String, user_id: u64, label: String, created_at: u64 },
    #[serde(rename_all = "camelCase")]
    Revoke { api_key: String, revoked_at: u64 },
}

struct StoredUser {
    user: User,
    password_hash: String,
}

struct Inner {
    users: HashMap<u64, StoredUser>,
    by_name: HashMap<String, u64>,
    keys: HashMap<String, ApiKey>,
    next_id: u64,
    file: File,
    file_len: u64,
    /// Records written since the store was opened (see [`UserStore::version`]).
    version: u64,
}

/// Claims of a session token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id, as a string (JWT convention).
    sub: String,
    /// Issued at, seconds.
    iat: u64,
    /// Expiry, seconds.
    exp: u64,
    /// Token kind.
    typ: String,
    /// Time of the password login that started this session, seconds (kept across renewals);
    /// 0 in tokens issued before renewal existed (their `iat` counts instead).
    #[serde(default)]
    auth: u64,
}

const SESSION_TYPE: &str = "session";

/// A session token as handed to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The JWT.
    pub token: String,
    /// Its user.
    pub user_id: UserId,
    /// Expiry, ms since the epoch.
    pub expires_ms: u64,
}

/// A simple per-key token bucket: `burst` attempts, one regained every `refill`.
struct Limiter {
    burst: u32,
    refill: Duration,
    buckets: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Limiter {
    fn new(burst: u32, refill: Duration) -> Self {
        Self { burst: burst.max(1), refill: refill.max(Duration::from_millis(1)), buckets: Mutex::new(HashMap::new()) }
    }

    fn try_take(&self, key: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            // Forget buckets that are full again anyway.
            let full_after = self.refill * self.burst;
            buckets.retain(|_, (_, last)| now.saturating_duration_since(*last) < full_after);
        }
        let (tokens, last) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        let regained = (now.saturating_duration_since(*last).as_nanos() / self.refill.as_nanos()) as u64;
        if regained > 0 {
            *tokens = (u64::from(*tokens) + regained).min(u64::from(self.burst)) as u32;
            *last = if *tokens == self.burst { now } else { *last + self.refill * regained as u32 };
        }
        if *tokens > 0 {
            *tokens -= 1;
            true
        } else {
            false
        }
    }
}

/// Users, API keys and sessions. See the module documentation.
pub struct UserStore {
    inner: Mutex<Inner>,
    path: PathBuf,
    credentials: Arc<Credentials>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    config: UsersConfig,
    /// A hash verified when the username is unknown, so both failures cost the same.
    dummy_hash: String,
    per_user: Limiter,
    per_ip: Limiter,
    /// Set on a cluster's primary: every record goes to this log first (module documentation).
    directory_log: Mutex<Option<Arc<dyn DirectoryLog>>>,
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStore").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    crate::auth::now_ms()
}

fn internal(message: impl Into<String>) -> ApiError {
    ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, code: "INTERNAL_ERROR", message: message.into() }
}

fn argon2() -> argon2::Argon2<'static> {
    argon2::Argon2::default()
}

fn hash_password(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| internal("No randomness available"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| internal("Salt encoding failed"))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|_| internal("Password hashing failed"))
}

fn password_matches(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| argon2().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A username as stored: trimmed, lower case, 3 to 64 of `a-z 0-9 . _ @ + -`.
fn normalise_username(username: &str) -> Result<String, ApiError> {
    let name = username.trim().to_lowercase();
    let valid = (3..=64).contains(&name.chars().count())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._@+-".contains(c));
    if !valid {
        return Err(ApiError::bad_request("Invalid username: 3 to 64 characters of letters, digits and . _ @ + -"));
    }
    Ok(name)
}

/// Decodes a base64 Ed25519 public key, refusing bytes that are not a valid curve point.
pub fn decode_public_key(text: &str) -> Result<[u8; 32], ApiError> {
    let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("Invalid publicKey: expected base64 of a 32-byte Ed25519 public key"))?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| ApiError::bad_request("Invalid publicKey: not an Ed25519 public key"))?;
    Ok(bytes)
}

impl UserStore {
    /// Opens (or creates) the store in `config.dir`, replays its records, registers every
    /// active key in `credentials`.
    ///
    /// # Errors
    /// The directory or file cannot be created or read, or a record other than the last is
    /// damaged.
    pub fn open(config: UsersConfig, credentials: Arc<Credentials>) -> Result<Self, StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        std::fs::create_dir_all(&config.dir).map_err(io(&config.dir))?;
        let path = config.dir.join(USERS_FILE);
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path))?;
        let (records, good_len) = parse_records(&path, &bytes)?;
        if good_len < bytes.len() {
            tracing::warn!(path = %path.display(), dropped = bytes.len() - good_len, "user store: dropping a torn last record");
            file.set_len(good_len as u64).map_err(io(&path))?;
            file.sync_data().map_err(io(&path))?;
        }
        let mut inner = Inner {
            users: HashMap::new(),
            by_name: HashMap::new(),
            keys: HashMap::new(),
            next_id: config.first_user_id.max(1),
            file,
            file_len: good_len as u64,
            version: 0,
        };
        for record in records {
            apply(&mut inner, record);
        }
        inner.next_id = next_free_id(&config, inner.next_id);
        for key in inner.keys.values().filter(|key| key.revoked_ms.is_none()) {
            if let Ok(bytes) = decode_public_key(&key.api_key) {
                credentials.insert(FixedBytes(bytes), key.user_id);
            }
        }
        tracing::info!(path = %path.display(), users = inner.users.len(), keys = inner.keys.len(), "user store loaded");
        let secret = match &config.jwt_secret {
            Some(secret) => secret.clone(),
            None => {
                let mut secret = vec![0u8; 32];
                getrandom::fill(&mut secret)
                    .map_err(|e| StoreError::Io { path: path.clone(), source: std::io::Error::other(e.to_string()) })?;
                secret
            }
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let dummy_hash = hash_password("not a real password").unwrap_or_default();
        Ok(Self {
            inner: Mutex::new(inner),
            path,
            credentials,
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
            per_user: Limiter::new(config.login_burst_per_user, config.login_refill),
            per_ip: Limiter::new(config.login_burst_per_ip, config.login_refill),
            config,
            dummy_hash,
            directory_log: Mutex::new(None),
        })
    }

    /// Makes `log` the authoritative log of this store's own changes (a cluster's primary): from
    /// now on a registration, key or revocation is appended there first and refused (`503`) when
    /// the log does not take it. Replaces the log of an earlier promotion of this process (a
    /// node that went back to following and was promoted again); returns whether one was set.
    pub fn set_directory_log(&self, log: Arc<dyn DirectoryLog>) -> bool {
        self.directory_log.lock().unwrap_or_else(|e| e.into_inner()).replace(log).is_some()
    }

    /// Applies one record of the directory log (a line as [`DirectoryLog::append`] got it, a
    /// trailing newline allowed), unless this store already has it: returns whether it changed
    /// anything. A new key is usable, a revoked one refused, from the next request on; a new user
    /// moves the next free id past it (a promoted primary goes on numbering after it). With
    /// `persist` the record is also appended to the local record file (a cache: a write failure
    /// is logged, the record applied all the same).
    ///
    /// # Errors
    /// A malformed line, or a record that contradicts this directory (nothing is applied).
    pub fn apply_replicated(&self, line: &[u8], persist: bool) -> Result<bool, ReplicatedError> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let record = parse_line(line).map_err(ReplicatedError::Malformed)?;
        let conflict = |what: String| Err(ReplicatedError::Conflict(what));
        let mut inner = self.lock();
        match &record {
            Record::User { id, username, .. } => match (inner.users.get(id), inner.by_name.get(username)) {
                (Some(stored), _) if stored.user.username == *username => return Ok(false),
                (Some(stored), _) => {
                    return conflict(format!("user {id} is {:?} here, not {username:?}", stored.user.username));
                }
                (None, Some(other)) => return conflict(format!("username {username:?} is user {other} here")),
                (None, None) => {}
            },
            Record::Key { api_key, user_id, .. } => {
                if let Some(key) = inner.keys.get(api_key) {
                    if key.user_id.get() == *user_id {
                        return Ok(false);
                    }
                    return conflict(format!("key {api_key} belongs to user {} here", key.user_id));
                }
                let bytes = decode_public_key(api_key).map_err(|e| ReplicatedError::Malformed(e.message))?;
                match self.credentials.user_of(&FixedBytes(bytes)) {
                    Some(owner) if owner.get() != *user_id => {
                        return conflict(format!("key {api_key} is configured for user {owner} here"));
                    }
                    _ => self.credentials.insert(FixedBytes(bytes), UserId::new(*user_id)),
                }
            }
            Record::Revoke { api_key, .. } => match inner.keys.get(api_key) {
                Some(key) if key.revoked_ms.is_some() => return Ok(false),
                Some(_) => {
                    if let Ok(bytes) = decode_public_key(api_key) {
                        self.credentials.revoke(&FixedBytes(bytes));
                    }
                }
                None => return conflict(format!("revokes key {api_key}, unknown here")),
            },
        }
        if persist {
            let mut text = Vec::with_capacity(line.len() + 1);
            text.extend_from_slice(line);
            text.push(b'\n');
            match inner.file.write_all(&text).and_then(|()| inner.file.sync_data()) {
                Ok(()) => inner.file_len += text.len() as u64,
                Err(error) => {
                    tracing::error!(%error, path = %self.path.display(), "user store cache write failed");
                    let length = inner.file_len;
                    let _ = inner.file.set_len(length);
                }
            }
        }
        inner.version += 1;
        apply(&mut inner, record);
        inner.next_id = next_free_id(&self.config, inner.next_id);
        Ok(true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one record and `fdatasync`s it; on failure the file is cut back and nothing
    /// changes.
    fn persist(&self, inner: &mut Inner, record: Record) -> Result<(), ApiError> {
        let json = serde_json::to_string(&record).map_err(|_| internal("Record encoding failed"))?;
        let line = format!("{:08x} {json}\n", crc32c::crc32c(json.as_bytes()));
        let unavailable = || ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "SERVICE_UNAVAILABLE",
            message: "User store unavailable, retry later".into(),
        };
        let log = self.directory_log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(log) = log {
            // The log is the directory: nothing is applied, written or answered before it has
            // the record (a failover must not lose a user whose orders are in the journal).
            if let Err(error) = log.append(line.trim_end_matches('\n')) {
                tracing::error!(%error, "user directory log refused a record; change refused");
                return Err(unavailable());
            }
            // From here the record is in the directory: the local file is only a cache.
            match inner.file.write_all(line.as_bytes()).and_then(|()| inner.file.sync_data()) {
                Ok(()) => inner.file_len += line.len() as u64,
                Err(error) => {
                    tracing::error!(%error, path = %self.path.display(), "user store cache write failed");
                    let length = inner.file_len;
                    let _ = inner.file.set_len(length);
                }
            }
            inner.version += 1;
            apply(inner, record);
            return Ok(());
        }
        let result = inner.file.write_all(line.as_bytes()).and_then(|()| inner.file.sync_data());
        if let Err(error) = result {
            tracing::error!(%error, path = %self.path.display(), "user store write failed");
            let _ = inner.file.set_len(inner.file_len);
            return Err(unavailable());
        }
        inner.file_len += line.len() as u64;
        inner.version += 1;
        apply(inner, record);
        Ok(())
    }

    /// A number that changes whenever a user or key is added or a key revoked (for mirrors of
    /// the directory, which copy it again when it moved).
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// Every user and every key (revoked ones included), with the [`Self::version`] they belong
    /// to: users by id, keys by creation time.
    pub fn directory(&self) -> (u64, Vec<User>, Vec<ApiKey>) {
        let inner = self.lock();
        let mut users: Vec<User> = inner.users.values().map(|stored| stored.user.clone()).collect();
        users.sort_by_key(|user| user.id.get());
        let mut keys: Vec<ApiKey> = inner.keys.values().cloned().collect();
        keys.sort_by(|a, b| (a.created_ms, &a.api_key).cmp(&(b.created_ms, &b.api_key)));
        (inner.version, users, keys)
    }

    /// Whether a login or registration attempt from `ip` (and for `username`, if given) is
    /// within the rate limits.
    ///
    /// # Errors
    /// `429 TOO_MANY_REQUESTS`.
    pub fn check_rate(&self, ip: Option<std::net::IpAddr>, username: Option<&str>) -> Result<(), ApiError> {
        let now = Instant::now();
        let too_many = || ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "TOO_MANY_REQUESTS",
            message: "Too many attempts, retry later".into(),
        };
        if let Some(ip) = ip {
            if !self.per_ip.try_take(&ip.to_string(), now) {
                return Err(too_many());
            }
        }
        if let Some(username) = username {
            if !self.per_user.try_take(&username.trim().to_lowercase(), now) {
                return Err(too_many());
            }
        }
        Ok(())
    }

    /// Registers a user with a password (argon2id); the new id is the next free one from the
    /// configured first id. Slow (password hashing): call from a blocking context.
    ///
    /// # Errors
    /// `400 INVALID_CLIENT_REQUEST`: bad username, password too short or long, username taken;
    /// `503` when the record cannot be written.
    pub fn register(&self, username: &str, password: &str) -> Result<User, ApiError> {
        let username = normalise_username(username)?;
        let length = password.chars().count();
        if length < self.config.password_min || password.len() > PASSWORD_MAX {
            return Err(ApiError::bad_request(format!(
                "Invalid password: {} to {PASSWORD_MAX} characters",
                self.config.password_min
            )));
        }
        if self.lock().by_name.contains_key(&username) {
            return Err(ApiError::bad_request("Username already taken"));
        }
        let password_hash = hash_password(password)?;
        let mut inner = self.lock();
        // Checked again: another registration may have taken the name while hashing.
        if inner.by_name.contains_key(&username) {
            return Err(ApiError::bad_request("Username already taken"));
        }
        let id = inner.next_id;
        let created_at = now_ms();
        self.persist(&mut inner, Record::User { id, username: username.clone(), password_hash, created_at })?;
        inner.next_id = next_free_id(&self.config, id + 1);
        Ok(User { id: UserId::new(id), username, created_ms: created_at })
    }

    /// Checks a password and issues a session token. Unknown user and wrong password fail the
    /// same way after the same work. Slow: call from a blocking context.
    ///
    /// # Errors
    /// `401 UNAUTHORIZED` "Invalid username or password".
    pub fn login(&self, username: &str, password: &str) -> Result<Session, ApiError> {
        let name = username.trim().to_lowercase();
        let found = {
            let inner = self.lock();
            inner.by_name.get(&name).and_then(|id| inner.users.get(id)).map(|u| (u.user.id, u.password_hash.clone()))
        };
        let (user_id, hash) = match found {
            Some((id, hash)) => (Some(id), hash),
            None => (None, self.dummy_hash.clone()),
        };
        let matches = password.len() <= PASSWORD_MAX && password_matches(password, &hash);
        match user_id {
            Some(user_id) if matches => self.issue(user_id),
            _ => Err(unauthorized("Invalid username or password")),
        }
    }

    /// A session token for `user_id`, valid for the configured lifetime.
    ///
    /// # Errors
    /// Encoding failure (500).
    pub fn issue(&self, user_id: UserId) -> Result<Session, ApiError> {
        self.issue_since(user_id, now_ms() / 1_000)
    }

    /// A session token for `user_id` whose session began (password login) at `auth` seconds:
    /// valid for the configured lifetime, but never past `auth` + [`SESSION_RENEWAL_MAX`].
    fn issue_since(&self, user_id: UserId, auth: u64) -> Result<Session, ApiError> {
        let iat = now_ms() / 1_000;
        let exp = (iat + self.config.jwt_ttl.as_secs().max(1)).min(auth.saturating_add(SESSION_RENEWAL_MAX.as_secs()));
        let claims = Claims { sub: user_id.get().to_string(), iat, exp, typ: SESSION_TYPE.into(), auth };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| internal("Token encoding failed"))?;
        Ok(Session { token, user_id, expires_ms: exp * 1_000 })
    }

    /// Verifies a session token (signature, algorithm HS256, expiry, a known user); returns its
    /// user. For every transport: REST `Authorization: Bearer`, WebSocket.
    ///
    /// # Errors
    /// `401 UNAUTHORIZED`.
    pub fn verify_jwt(&self, token: &str) -> Result<UserId, ApiError> {
        self.verify_claims(token).map(|(user_id, _)| user_id)
    }

    /// Renews a valid session token: a new token for the same user and session, valid for the
    /// configured lifetime from now (so a page can keep a session alive while it is open), but
    /// never past [`SESSION_RENEWAL_MAX`] after the password login that started the session.
    ///
    /// # Errors
    /// `401 UNAUTHORIZED` for a token [`Self::verify_jwt`] refuses, or a session that reached
    /// [`SESSION_RENEWAL_MAX`] ("Session too old to renew, log in again").
    pub fn renew(&self, token: &str) -> Result<Session, ApiError> {
        let (user_id, claims) = self.verify_claims(token)?;
        let auth = if claims.auth == 0 { claims.iat } else { claims.auth };
        let now = now_ms() / 1_000;
        if now >= auth.saturating_add(SESSION_RENEWAL_MAX.as_secs()) {
            return Err(unauthorized("Session too old to renew, log in again"));
        }
        self.issue_since(user_id, auth)
    }

    /// [`Self::verify_jwt`], also returning the claims.
    fn verify_claims(&self, token: &str) -> Result<(UserId, Claims), ApiError> {
        let data =
            jsonwebtoken::decode::<Claims>(token.trim(), &self.decoding, &self.validation).map_err(
                |error| match error.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => unauthorized("Session expired, log in again"),
                    _ => unauthorized("Invalid session token"),
                },
            )?;
        let claims = data.claims;
        let id = claims.sub.parse::<u64>().map_err(|_| unauthorized("Invalid session token"))?;
        if claims.typ != SESSION_TYPE || !self.lock().users.contains_key(&id) {
            return Err(unauthorized("Invalid session token"));
        }
        Ok((UserId::new(id), claims))
    }

    /// A user by id.
    pub fn user(&self, user_id: UserId) -> Option<User> {
        self.lock().users.get(&user_id.get()).map(|stored| stored.user.clone())
    }

    /// A user by name (case-insensitive).
    pub fn user_by_name(&self, username: &str) -> Option<User> {
        let inner = self.lock();
        let id = inner.by_name.get(&username.trim().to_lowercase())?;
        inner.users.get(id).map(|stored| stored.user.clone())
    }

    /// Number of registered users.
    pub fn user_count(&self) -> usize {
        self.lock().users.len()
    }

    /// A user's keys, oldest first (revoked ones included, marked).
    pub fn keys(&self, user_id: UserId) -> Vec<ApiKey> {
        let mut keys: Vec<ApiKey> = self.lock().keys.values().filter(|key| key.user_id == user_id).cloned().collect();
        keys.sort_by(|a, b| (a.created_ms, &a.api_key).cmp(&(b.created_ms, &b.api_key)));
        keys
    }

    /// Registers `public_key` for `user_id` and makes it usable at once.
    ///
    /// # Errors
    /// `400`: invalid key, key already registered (to anyone, or in the configuration), label
    /// too long, too many keys; `404` unknown user; `503` when the record cannot be written.
    pub fn add_key(&self, user_id: UserId, public_key: [u8; 32], label: &str) -> Result<ApiKey, ApiError> {
        let label = label.trim();
        if label.chars().count() > LABEL_MAX || label.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!("Invalid label: at most {LABEL_MAX} printable characters")));
        }
        let api_key = base64::engine::general_purpose::STANDARD.encode(public_key);
        let mut inner = self.lock();
        if !inner.users.contains_key(&user_id.get()) {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                code: "RESOURCE_NOT_FOUND",
                message: "User not found".into(),
            });
        }
        if inner.keys.contains_key(&api_key) || self.credentials.user_of(&FixedBytes(public_key)).is_some() {
            return Err(ApiError::bad_request("API key already registered"));
        }
        if inner.keys.values().filter(|key| key.user_id == user_id).count() >= KEYS_PER_USER_MAX {
            return Err(ApiError::bad_request(format!("Too many API keys (at most {KEYS_PER_USER_MAX} per user)")));
        }
        let created_at = now_ms();
        self.persist(
            &mut inner,
            Record::Key { api_key: api_key.clone(), user_id: user_id.get(), label: label.to_string(), created_at },
        )?;
        self.credentials.insert(FixedBytes(public_key), user_id);
        Ok(inner.keys[&api_key].clone())
    }

    /// Generates an Ed25519 key pair for `user_id`, registers its public key; returns the key
    /// and the 32-byte secret seed (shown once, never stored).
    ///
    /// # Errors
    /// As [`Self::add_key`].
    pub fn generate_key(&self, user_id: UserId, label: &str) -> Result<(ApiKey, [u8; 32]), ApiError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|_| internal("No randomness available"))?;
        let public = gateway_binary::client::api_key_of(&secret);
        Ok((self.add_key(user_id, public.0, label)?, secret))
    }

    /// Revokes one of `user_id`'s keys: it is refused from the next request on.
    ///
    /// # Errors
    /// `404 RESOURCE_NOT_FOUND` when the key is not an active key of this user; `503` when the
    /// record cannot be written.
    pub fn revoke_key(&self, user_id: UserId, api_key: &str) -> Result<ApiKey, ApiError> {
        let not_found = || ApiError {
            status: StatusCode::NOT_FOUND,
            code: "RESOURCE_NOT_FOUND",
            message: "API key not found".into(),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(api_key.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(not_found)?;
        let canonical = base64::engine::general_purpose::STANDARD.encode(bytes);
        let mut inner = self.lock();
        match inner.keys.get(&canonical) {
            Some(key) if key.user_id == user_id && key.revoked_ms.is_none() => {}
            _ => return Err(not_found()),
        }
        // Removed from the live table first: even if the record cannot be written, the key stops
        // working now (and the request fails, so the owner retries).
        self.credentials.revoke(&FixedBytes(bytes));
        self.persist(&mut inner, Record::Revoke { api_key: canonical.clone(), revoked_at: now_ms() })?;
        Ok(inner.keys[&canonical].clone())
    }

    /// The record file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn next_free_id(config: &UsersConfig, mut id: u64) -> u64 {
    id = id.max(config.first_user_id).max(1);
    while let Some(range) = config.reserved_ids.iter().find(|range| range.contains(&id)) {
        id = range.end().saturating_add(1);
    }
    id
}

fn apply(inner: &mut Inner, record: Record) {
    match record {
        Record::User { id, username, password_hash, created_at } => {
            inner.by_name.insert(username.clone(), id);
            inner.users.insert(
                id,
                StoredUser { user: User { id: UserId::new(id), username, created_ms: created_at }, password_hash },
            );
            inner.next_id = inner.next_id.max(id + 1);
        }
        Record::Key { api_key, user_id, label, created_at } => {
            let key = ApiKey {
                api_key: api_key.clone(),
                user_id: UserId::new(user_id),
                label,
                created_ms: created_at,
                revoked_ms: None,
            };
            inner.keys.insert(api_key, key);
        }
        Record::Revoke { api_key, revoked_at } => {
            if let Some(key) = inner.keys.get_mut(&api_key) {
                key.revoked_ms = Some(revoked_at);
            }
        }
    }
}

/// Parses the record file; returns the records and the length of the good prefix (shorter than
/// the file when the last record is torn).
fn parse_records(path: &Path, bytes: &[u8]) -> Result<(Vec<Record>, usize), StoreError> {
    let mut records = Vec::new();
    let mut offset = 0;
    let mut line_number = 0;
    while offset < bytes.len() {
        line_number += 1;
        let Some(end) = bytes[offset..].iter().position(|&b| b == b'\n') else {
            // No newline: the last record was torn mid-write.
            return Ok((records, offset));
        };
        let line = &bytes[offset..offset + end];
        let next = offset + end + 1;
        match parse_line(line) {
            Ok(record) => records.push(record),
            Err(reason) if next >= bytes.len() => {
                tracing::warn!(line = line_number, reason, "user store: damaged last record");
                return Ok((records, offset));
            }
            Err(reason) => {
                return Err(StoreError::Corrupt { path: path.to_path_buf(), line: line_number, reason });
            }
        }
        offset = next;
    }
    Ok((records, offset))
}

fn parse_line(line: &[u8]) -> Result<Record, String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
    let (crc, json) = text.split_once(' ').ok_or("no checksum")?;
    let crc = u32::from_str_radix(crc, 16).map_err(|_| "bad checksum field".to_string())?;
    if crc32c::crc32c(json.as_bytes()) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_str(json).map_err(|e| format!("bad record: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("users-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn users_keys_and_revocations_survive_reopening_and_a_torn_tail() {
        let dir = dir("reopen");
        let credentials = Arc::new(Credentials::default());
        let mut config = UsersConfig::new(&dir);
        config.reserved_ids = vec![10_001..=10_002];
        let store = UserStore::open(config.clone(), credentials.clone()).unwrap();
        let alice = store.register("Alice", "correct horse").unwrap();
        assert_eq!((alice.id, alice.username.as_str()), (UserId::new(10_000), "alice"));
        assert_eq!(store.register("ALICE", "another password").unwrap_err().message, "Username already taken");
        assert!(store.register("bob", "short").is_err());
        assert!(store.register("b", "long enough").is_err());
        let bob = store.register("bob", "long enough").unwrap();
        assert_eq!(bob.id, UserId::new(10_003), "reserved ids are skipped");
        let (key, secret) = store.generate_key(alice.id, "bot").unwrap();
        let public = gateway_binary::client::api_key_of(&secret);
        assert_eq!(credentials.user_of(&public), Some(alice.id));
        let (second, _) = store.generate_key(alice.id, "").unwrap();
        assert!(store.add_key(bob.id, public.0, "stolen").is_err(), "a key belongs to one user");
        assert_eq!(store.revoke_key(bob.id, &key.api_key).unwrap_err().status, StatusCode::NOT_FOUND);
        store.revoke_key(alice.id, &second.api_key).unwrap();
        assert!(store.revoke_key(alice.id, &second.api_key).is_err(), "already revoked");
        drop(store);

        // A torn last record (crash mid-write) is dropped.
        let path = dir.join(USERS_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"0000abcd {\"type\":\"user\",\"id\":").unwrap();
        drop(file);
        let credentials = Arc::new(Credentials::default());
        let store = UserStore::open(config.clone(), credentials.clone()).unwrap();
        assert_eq!(store.user_count(), 2);
        assert_eq!(store.user_by_name("bob").unwrap().id, bob.id);
        assert_eq!(credentials.user_of(&public), Some(alice.id), "active keys are registered at start");
        let second_bytes = decode_public_key(&second.api_key).unwrap();
        assert_eq!(credentials.user_of(&FixedBytes(second_bytes)), None, "revoked keys are not");
        let keys = store.keys(alice.id);
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().any(|k| k.api_key == second.api_key && k.revoked_ms.is_some()));
        assert_eq!(store.register("carol", "long enough").unwrap().id, UserId::new(10_004));
        assert!(store.login("alice", "correct horse").is_ok());
        drop(store);

        // Damage in the middle refuses to start.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            UserStore::open(config, Arc::new(Credentials::default())),
            Err(StoreError::Corrupt { line: 1, .. })
        ));
    }

    #[test]
    fn sessions_verify_and_expire() {
        let dir = dir("jwt");
        let mut config = UsersConfig::new(&dir);
        config.jwt_secret = Some(b"secret".to_vec());
        let store = UserStore::open(config.clone(), Arc::new(Credentials::default())).unwrap();
        let user = store.register("dave", "password1").unwrap();
        assert_eq!(store.login("dave", "password2").unwrap_err().message, "Invalid username or password");
        assert_eq!(store.login("nobody", "password1").unwrap_err().message, "Invalid username or password");
        let session = store.login("Dave", "password1").unwrap();
        assert_eq!(store.verify_jwt(&session.token), Ok(user.id));
        // Another secret does not verify it.
        let mut other = config.clone();
        other.jwt_secret = Some(b"other".to_vec());
        other.dir = dir.join("other");
        let other = UserStore::open(other, Arc::new(Credentials::default())).unwrap();
        assert!(other.verify_jwt(&session.token).is_err());
        // Tampering with the payload breaks the signature.
        let parts: Vec<&str> = session.token.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap().replace(&user.id.to_string(), "1");
        let forged = format!("{}.{}.{}", parts[0], b64.encode(payload), parts[2]);
        assert!(store.verify_jwt(&forged).is_err());
        // "alg":"none" is refused.
        let none = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
        assert!(store.verify_jwt(&none).is_err());
        // An expired token.
        let claims = Claims {
            sub: user.id.get().to_string(),
            iat: 1,
            exp: now_ms() / 1_000 - 1,
            typ: "session".into(),
            auth: 0,
        };
        let expired =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"secret"))
                .unwrap();
        assert_eq!(store.verify_jwt(&expired).unwrap_err().message, "Session expired, log in again");
        assert_eq!(store.renew(&expired).unwrap_err().message, "Session expired, log in again");
    }

    #[test]
    fn renewal_keeps_the_session_but_not_past_its_bound() {
        let dir = dir("renew");
        let mut config = UsersConfig::new(&dir);
        config.jwt_secret = Some(b"secret".to_vec());
        let store = UserStore::open(config, Arc::new(Credentials::default())).unwrap();
        let user = store.register("erin", "password1").unwrap();
        let session = store.login("erin", "password1").unwrap();
        let renewed = store.renew(&session.token).unwrap();
        assert_eq!(renewed.user_id, user.id);
        assert_eq!(store.verify_jwt(&renewed.token), Ok(user.id));
        let sign = |claims: &Claims| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(b"secret")).unwrap()
        };
        let now = now_ms() / 1_000;
        let bound = SESSION_RENEWAL_MAX.as_secs();
        // A session that began almost SESSION_RENEWAL_MAX ago renews only up to that bound.
        let old = Claims {
            sub: user.id.get().to_string(),
            iat: now,
            exp: now + 60,
            typ: "session".into(),
            auth: now + 30 - bound,
        };
        let renewed = store.renew(&sign(&old)).unwrap();
        assert_eq!(renewed.expires_ms, (now + 30) * 1_000);
        // One that began SESSION_RENEWAL_MAX ago is not renewed (its token is still valid).
        let too_old = Claims { auth: now - bound, ..old };
        assert_eq!(store.verify_jwt(&sign(&too_old)), Ok(user.id));
        assert_eq!(store.renew(&sign(&too_old)).unwrap_err().message, "Session too old to renew, log in again");
    }

    /// The log of a primary's store in a test: every record appended, or a refusal.
    #[derive(Default)]
    struct RecordingLog {
        lines: Mutex<Vec<String>>,
        refuse: std::sync::atomic::AtomicBool,
    }

    impl DirectoryLog for RecordingLog {
        fn append(&self, line: &str) -> Result<(), String> {
            if self.refuse.load(std::sync::atomic::Ordering::Relaxed) {
                return Err("broker away".into());
            }
            self.lines.lock().unwrap().push(line.to_string());
            Ok(())
        }
    }

    #[test]
    fn a_follower_applies_the_primarys_directory_log_once_and_the_primary_answers_only_what_the_log_took() {
        let primary_dir = dir("log-primary");
        let log = Arc::new(RecordingLog::default());
        let primary = UserStore::open(UsersConfig::new(&primary_dir), Arc::new(Credentials::default())).unwrap();
        assert!(!primary.set_directory_log(log.clone()));
        let alice = primary.register("alice", "password1").unwrap();
        let (key, secret) = primary.generate_key(alice.id, "bot").unwrap();
        let (revoked, revoked_secret) = primary.generate_key(alice.id, "old").unwrap();
        primary.revoke_key(alice.id, &revoked.api_key).unwrap();
        assert_eq!(log.lines.lock().unwrap().len(), 4, "every change is in the log");

        // A follower (a gateway process): the same users and keys, usable at once.
        let follower_credentials = Arc::new(Credentials::default());
        let follower = UserStore::open(UsersConfig::new(dir("log-follower")), follower_credentials.clone()).unwrap();
        let lines = log.lines.lock().unwrap().clone();
        for line in &lines {
            assert_eq!(follower.apply_replicated(line.as_bytes(), false), Ok(true), "{line}");
        }
        assert_eq!(follower.user_by_name("alice").unwrap().id, alice.id);
        assert_eq!(follower_credentials.user_of(&gateway_binary::client::api_key_of(&secret)), Some(alice.id));
        assert_eq!(follower_credentials.user_of(&gateway_binary::client::api_key_of(&revoked_secret)), None);
        assert!(follower.login("alice", "password1").is_ok(), "the password hash came along");
        assert_eq!(follower.keys(alice.id).len(), 2);
        // Read again (a restart, a re-delivery): nothing changes.
        let version = follower.version();
        for line in &lines {
            assert_eq!(follower.apply_replicated(format!("{line}\n").as_bytes(), false), Ok(false));
        }
        assert_eq!(follower.version(), version);
        assert!(follower.path().metadata().unwrap().len() == 0, "without persist the local file is untouched");
        assert!(matches!(follower.apply_replicated(b"00000000 {}", false), Err(ReplicatedError::Malformed(_))));

        // A promoted standby persists them and numbers new users after the highest id seen.
        let standby_dir = dir("log-standby");
        let standby = UserStore::open(UsersConfig::new(&standby_dir), Arc::new(Credentials::default())).unwrap();
        for line in &lines {
            standby.apply_replicated(line.as_bytes(), true).unwrap();
        }
        assert_eq!(standby.register("bob", "password2").unwrap().id, UserId::new(alice.id.get() + 1));
        drop(standby);
        let reopened = UserStore::open(UsersConfig::new(&standby_dir), Arc::new(Credentials::default())).unwrap();
        assert_eq!(reopened.keys(alice.id), primary.keys(alice.id), "the local file holds the applied records");

        // A record contradicting the directory is refused whole.
        let other = UserStore::open(UsersConfig::new(dir("log-other")), Arc::new(Credentials::default())).unwrap();
        other.register("mallory", "password3").unwrap();
        assert!(matches!(other.apply_replicated(lines[0].as_bytes(), false), Err(ReplicatedError::Conflict(_))));
        assert!(other.user_by_name("alice").is_none());
        let unknown_key_revocation = lines[3].as_bytes();
        assert!(matches!(other.apply_replicated(unknown_key_revocation, false), Err(ReplicatedError::Conflict(_))));

        // When the log refuses, the primary refuses too, and nothing changes there.
        log.refuse.store(true, std::sync::atomic::Ordering::Relaxed);
        let refused = primary.register("carol", "password4").unwrap_err();
        assert_eq!((refused.status, refused.code), (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"));
        assert!(primary.user_by_name("carol").is_none());
        assert!(primary.add_key(alice.id, gateway_binary::client::api_key_of(&[5; 32]).0, "x").is_err());
        assert_eq!(primary.keys(alice.id).len(), 2);
        drop(primary);
        let reopened = UserStore::open(UsersConfig::new(&primary_dir), Arc::new(Credentials::default())).unwrap();
        assert!(reopened.user_by_name("carol").is_none(), "not in the local file either");
        assert_eq!(key.user_id, alice.id);
    }

    #[test]
    fn limiter_allows_a_burst_then_one_per_interval() {
        let limiter = Limiter::new(3, Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!((0..5).filter(|_| limiter.try_take("a", start)).count(), 3);
        assert!(limiter.try_take("b", start), "per key");
        assert!(!limiter.try_take("a", start + Duration::from_millis(900)));
        assert!(limiter.try_take("a", start + Duration::from_millis(1_100)));
        assert!(!limiter.try_take("a", start + Duration::from_millis(1_200)));
        assert_eq!((0..5).filter(|_| limiter.try_take("a", start + Duration::from_secs(60))).count(), 3);
    }
}
