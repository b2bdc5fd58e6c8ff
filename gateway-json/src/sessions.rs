//! Registration, login (session tokens) and API key management: [`sessions_router`].
//!
//! - `POST /api/v1/auth/register` `{username, password}` → `201` the user;
//! - `POST /api/v1/auth/login` `{username, password}` → a session token (HS256 JWT) to send as
//!   `Authorization: Bearer <token>` to every signed endpoint instead of a signature;
//! - `POST /api/v1/auth/refresh` with a valid session token → a new token of the same session
//!   (same answer as login), so an open page keeps its session without the password; bounded
//!   by [`crate::users::SESSION_RENEWAL_MAX`] after the login;
//! - with a session token only (an API key cannot manage keys): `GET /api/v1/account`,
//!   `GET /api/v1/account/keys`, `POST /api/v1/account/keys` (`{label?, publicKey?}`: registers
//!   the given public key, or generates a key pair and returns its secret once),
//!   `DELETE /api/v1/account/keys` (`{apiKey}`).
//!
//! Password hashing is slow by design: it runs on the blocking pool, at most
//! [`HASHING_CONCURRENCY`] at a time; login and registration are rate limited per client IP and
//! login also per username (`429 TOO_MANY_REQUESTS`).

use crate::auth::unauthorized;
use crate::users::{ApiKey, User, UserStore, decode_public_key};
use crate::{ApiError, ApiResult};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::Engine as _;
use codec::UserId;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;
use utoipa::ToSchema;

/// Password hashes computed at the same time, at most.
pub const HASHING_CONCURRENCY: usize = 4;

/// The token of an `Authorization: Bearer <token>` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

/// The client's IP address, when the server records it (`ConnectInfo`).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(crate::limits::client_ip(&parts.extensions)))
    }
}

/// Parses a JSON body strictly (unknown fields refused).
pub(crate) fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("Malformed JSON body: {e}")))
}

/// `{username, password}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// 3 to 64 characters of letters, digits and `. _ @ + -`; case-insensitive, stored lower case.
    #[schema(min_length = 3, max_length = 64, pattern = "^[A-Za-z0-9._@+-]{3,64}$")]
    pub username: String,
    /// At least the configured minimum length (default 8), at most 256 bytes.
    #[schema(min_length = 8, max_length = 256)]
    pub password: String,
}

/// `{label?, publicKey?}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewKey {
    /// A name for the key (at most 64 characters).
    #[serde(default)]
    pub label: String,
    /// Base64 of an Ed25519 public key to register; absent: the server generates a key pair.
    pub public_key: Option<String>,
}

/// `{apiKey}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyReference {
    /// Base64 public key of the key to revoke.
    pub api_key: String,
}

/// The state of [`sessions_router`].
#[derive(Clone)]
pub struct Sessions {
    users: Arc<UserStore>,
    hashing: Arc<Semaphore>,
}

impl Sessions {
    /// Runs a password-hashing operation on the blocking pool, bounded in concurrency.
    async fn hashing<T: Send + 'static>(
        &self,
        work: impl FnOnce(&UserStore) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let unavailable = || ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "SERVICE_UNAVAILABLE",
            message: "Server busy, retry later".into(),
        };
        let _permit = self.hashing.acquire().await.map_err(|_| unavailable())?;
        let users = self.users.clone();
        tokio::task::spawn_blocking(move || work(&users)).await.map_err(|_| unavailable())?
    }

    /// The user of a session token (API keys are not accepted here).
    fn session_user(&self, headers: &HeaderMap) -> Result<UserId, ApiError> {
        let token = bearer(headers).ok_or_else(|| unauthorized("Missing session token (Authorization: Bearer)"))?;
        self.users.verify_jwt(token)
    }
}

pub(crate) fn user_json(user: &User) -> Value {
    json!({ "userId": user.id.get(), "username": user.username, "createdAt": user.created_ms })
}

fn key_json(key: &ApiKey) -> Value {
    json!({
        "apiKey": key.api_key,
        "label": key.label,
        "createdAt": key.created_ms,
        "revoked": key.revoked_ms.is_some(),
        "revokedAt": key.revoked_ms,
    })
}

/// The routes of this module, at the server root. Merge into the server's router.
pub fn sessions_router(users: Arc<UserStore>) -> Router {
    let state = Sessions { users, hashing: Arc::new(Semaphore::new(HASHING_CONCURRENCY)) };
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/account", get(account))
        .route("/api/v1/account/keys", get(list_keys).post(create_key).delete(revoke_key))
        .with_state(state)
}

/// Registers a user.
#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "Users",
    request_body = Credentials,
    responses(
        (status = 201, description = "The new user: `{userId, username, createdAt}` (ms)"),
        (status = 400, description = "Bad username or password, or username taken"),
        (status = 429, description = "Too many attempts from this IP"),
    )
)]
pub async fn register(State(state): State<Sessions>, ClientIp(ip): ClientIp, body: Bytes) -> ApiResult {
    let request: Credentials = json_body(&body)?;
    state.users.check_rate(ip, None)?;
    let user = state.hashing(move |users| users.register(&request.username, &request.password)).await?;
    tracing::info!(user = user.id.get(), username = %user.username, "user registered");
    Ok((StatusCode::CREATED, axum::Json(user_json(&user))).into_response())
}

/// Logs in: a session token for the signed endpoints.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "Users",
    request_body = Credentials,
    responses(
        (status = 200, description = "`{token, tokenType: \"Bearer\", userId, expiresAt}` (ms)"),
        (status = 400, description = "Body is not `{username, password}`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Invalid username or password"),
        (status = 429, description = "Too many attempts for this username or from this IP"),
    )
)]
pub async fn login(State(state): State<Sessions>, ClientIp(ip): ClientIp, body: Bytes) -> ApiResult {
    let request: Credentials = json_body(&body)?;
    state.users.check_rate(ip, Some(&request.username))?;
    let session = state.hashing(move |users| users.login(&request.username, &request.password)).await?;
    session_json(&session)
}

/// The answer of login and refresh.
fn session_json(session: &crate::users::Session) -> ApiResult {
    crate::ok(json!({
        "token": session.token,
        "tokenType": "Bearer",
        "userId": session.user_id.get(),
        "expiresAt": session.expires_ms,
    }))
}

/// Renews a session: a new token for the caller's session, valid for the configured lifetime
/// from now (no password needed; an API key cannot do this).
#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh",
    tag = "Users",
    security(("session" = [])),
    responses(
        (status = 200, description = "`{token, tokenType: \"Bearer\", userId, expiresAt}` (ms), as login"),
        (status = 401, description = "Missing, invalid or expired session token, or a session older than the renewal bound (24 h)"),
    )
)]
pub async fn refresh(State(state): State<Sessions>, headers: HeaderMap) -> ApiResult {
    let token = bearer(&headers).ok_or_else(|| unauthorized("Missing session token (Authorization: Bearer)"))?;
    let session = state.users.renew(token)?;
    session_json(&session)
}

/// The logged-in user.
#[utoipa::path(
    get,
    path = "/api/v1/account",
    tag = "Users",
    security(("session" = [])),
    responses(
        (status = 200, description = "`{userId, username, createdAt}`"),
        (status = 401, description = "Missing, invalid or expired session token"),
    )
)]
pub async fn account(State(state): State<Sessions>, headers: HeaderMap) -> ApiResult {
    let user_id = state.session_user(&headers)?;
    let user = state.users.user(user_id).ok_or_else(|| unauthorized("Invalid session token"))?;
    crate::ok(user_json(&user))
}

/// The logged-in user's API keys (revoked ones marked).
#[utoipa::path(
    get,
    path = "/api/v1/account/keys",
    tag = "Users",
    security(("session" = [])),
    responses(
        (status = 200, description = "`[{apiKey, label, createdAt, revoked, revokedAt}]`, oldest first"),
        (status = 401, description = "Missing, invalid or expired session token"),
    )
)]
pub async fn list_keys(State(state): State<Sessions>, headers: HeaderMap) -> ApiResult {
    let user_id = state.session_user(&headers)?;
    crate::ok(Value::Array(state.users.keys(user_id).iter().map(key_json).collect()))
}

/// Creates an API key: registers the given public key, or generates a key pair and returns
/// its secret (base64 of the 32-byte seed) once.
#[utoipa::path(
    post,
    path = "/api/v1/account/keys",
    tag = "Users",
    security(("session" = [])),
    request_body = Option<NewKey>,
    responses(
        (status = 201, description = "The key; with `secret` when generated (shown only now)"),
        (status = 400, description = "Invalid or already registered key, label too long, too many keys"),
        (status = 401, description = "Missing, invalid or expired session token"),
    )
)]
pub async fn create_key(State(state): State<Sessions>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let user_id = state.session_user(&headers)?;
    let request: NewKey = if body.iter().all(u8::is_ascii_whitespace) { NewKey::default() } else { json_body(&body)? };
    let answer = match request.public_key {
        Some(public_key) => key_json(&state.users.add_key(user_id, decode_public_key(&public_key)?, &request.label)?),
        None => {
            let (key, secret) = state.users.generate_key(user_id, &request.label)?;
            let mut answer = key_json(&key);
            answer["secret"] = json!(base64::engine::general_purpose::STANDARD.encode(secret));
            answer
        }
    };
    tracing::info!(user = user_id.get(), key = %answer["apiKey"], "API key created");
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// Revokes one of the logged-in user's API keys; it is refused from the next request on.
#[utoipa::path(
    delete,
    path = "/api/v1/account/keys",
    tag = "Users",
    security(("session" = [])),
    request_body = KeyReference,
    responses(
        (status = 200, description = "The revoked key"),
        (status = 400, description = "Body is not `{apiKey}`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or expired session token"),
        (status = 404, description = "Not an active key of this user"),
    )
)]
pub async fn revoke_key(State(state): State<Sessions>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let user_id = state.session_user(&headers)?;
    let request: KeyReference = json_body(&body)?;
    let key = state.users.revoke_key(user_id, &request.api_key)?;
    tracing::info!(user = user_id.get(), key = %key.api_key, "API key revoked");
    crate::ok(key_json(&key))
}
