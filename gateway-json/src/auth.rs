//! Backpack request signing: the signed string and its verification.
//!
//! A signed request carries `X-API-Key` (base64 of the 32-byte Ed25519 public key),
//! `X-Signature` (base64 of the 64-byte signature), `X-Timestamp` (ms since the epoch) and
//! optionally `X-Window` (ms, default [`WINDOW_DEFAULT_MS`], at most [`WINDOW_MAX_MS`]). The
//! signature covers
//!
//! ```text
//! instruction=<name>[&<key>=<value>...]&timestamp=<X-Timestamp>&window=<X-Window or 5000>
//! ```
//!
//! where the parameters are the JSON body's top-level keys (POST / DELETE) or the query's keys
//! (GET), sorted by key (byte order), each value exactly as the client wrote it: a JSON string
//! without its quotes (escapes decoded), any other JSON value as its raw text (`100.00`, `true`),
//! a query value URL-decoded. Every failure is `401 UNAUTHORIZED` with a message saying which
//! check failed.

use crate::ApiError;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use codec::{FixedBytes, UserId};
use gateway_binary::Credentials;
use serde_json::value::RawValue;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

/// `X-Window` when the header is absent, ms.
pub const WINDOW_DEFAULT_MS: u64 = 5_000;
/// Largest `X-Window` accepted, ms.
pub const WINDOW_MAX_MS: u64 = 60_000;

/// `401 UNAUTHORIZED` with a message.
pub fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError { status: StatusCode::UNAUTHORIZED, code: "UNAUTHORIZED", message: message.into() }
}

/// Signed parameters: key → value as the client wrote it, sorted by key.
pub type SignedParams = BTreeMap<String, String>;

/// Parses a JSON object body into its signed parameters, keeping each value's raw text
/// (strings unquoted). An empty body is an empty object.
///
/// # Errors
/// `400 INVALID_CLIENT_REQUEST` when the body is not a JSON object.
pub fn body_params(body: &[u8]) -> Result<SignedParams, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(SignedParams::new());
    }
    // Values borrowed from the body (no copy until they go into the parameters); a duplicate
    // key keeps its last value, as serde_json's map does.
    let raw: BTreeMap<String, &RawValue> =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("Malformed JSON body: {e}")))?;
    let mut params = SignedParams::new();
    for (key, value) in raw {
        let text = value.get();
        let text = match text.strip_prefix('"').and_then(|inner| inner.strip_suffix('"')) {
            // A string without escapes is its text between the quotes (RawValue checked it).
            Some(inner) if !inner.contains('\\') => inner.to_string(),
            Some(_) => {
                serde_json::from_str::<String>(text).map_err(|_| ApiError::bad_request("Malformed JSON string"))?
            }
            None => text.to_string(),
        };
        params.insert(key, text);
    }
    Ok(params)
}

/// [`body_params`] of a request to a signed endpoint, authentication first: a body that does
/// not parse is `401` when the request carries no credentials at all (no `X-Signature` or
/// `X-API-Key`, no session token), as it would be with a valid body, so an unauthenticated
/// caller learns nothing about how the body is checked. With credentials it is `400` (the
/// signature covers the parameters, so it cannot be checked without them).
///
/// # Errors
/// `401 UNAUTHORIZED` as above; `400 INVALID_CLIENT_REQUEST` as [`body_params`].
pub fn signed_body_params(headers: &HeaderMap, body: &[u8]) -> Result<SignedParams, ApiError> {
    body_params(body).map_err(|error| unless_credentials(headers, error))
}

/// `error` (a body that does not parse) when the request carries credentials; else the `401`
/// that a request without them gets whatever its body (see [`signed_body_params`]).
pub fn unless_credentials(headers: &HeaderMap, error: ApiError) -> ApiError {
    let signed = headers.contains_key("x-signature") || headers.contains_key("x-api-key");
    if signed || crate::sessions::bearer(headers).is_some() { error } else { unauthorized("Missing header x-api-key") }
}

/// Parses a query string into its signed parameters (URL-decoded; a repeated key keeps its
/// first value).
///
/// # Errors
/// `400 INVALID_CLIENT_REQUEST` for a malformed query string.
pub fn query_params(query: Option<&str>) -> Result<SignedParams, ApiError> {
    let Some(query) = query else { return Ok(SignedParams::new()) };
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|_| ApiError::bad_request("Malformed query string"))?;
    let mut params = SignedParams::new();
    for (key, value) in pairs {
        params.entry(key).or_insert(value);
    }
    Ok(params)
}

/// The string a client signs.
pub fn signing_string(instruction: &str, params: &SignedParams, timestamp: u64, window: u64) -> String {
    let mut text = format!("instruction={instruction}");
    for (key, value) in params {
        text.push('&');
        text.push_str(key);
        text.push('=');
        text.push_str(value);
    }
    text.push_str(&format!("&timestamp={timestamp}&window={window}"));
    text
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    let value = headers.get(name).ok_or_else(|| unauthorized(format!("Missing header {name}")))?;
    value.to_str().map(str::trim).map_err(|_| unauthorized(format!("Invalid header {name}")))
}

fn decimal_header(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(_) => {
            let text = header(headers, name)?;
            let valid = !text.is_empty() && text.len() <= 19 && text.bytes().all(|b| b.is_ascii_digit());
            valid
                .then(|| text.parse().ok())
                .flatten()
                .map(Some)
                .ok_or_else(|| unauthorized(format!("Invalid header {name}: expected milliseconds")))
        }
    }
}

/// Most decompressed public keys a thread keeps (see [`verifying_key`]); past it the cache is
/// emptied and refills with the keys in use.
pub const VERIFYING_KEYS_CACHED_MAX: usize = 4_096;

thread_local! {
    /// Public keys already decompressed by this thread, by their 32 bytes.
    static VERIFYING_KEYS: RefCell<HashMap<[u8; 32], ed25519_dalek::VerifyingKey>> = RefCell::new(HashMap::new());
}

/// The Ed25519 public key of `bytes`, decompressed (`None`: not a curve point). Decompressing
/// costs a field square root, a sizeable part of one verification, and gives the same answer for
/// the same bytes every time, so each thread keeps the keys it has seen. The cache decides
/// nothing about access: whether a key is registered is asked of the credentials on every
/// request, before this.
fn verifying_key(bytes: &[u8; 32]) -> Option<ed25519_dalek::VerifyingKey> {
    VERIFYING_KEYS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(key) = cache.get(bytes) {
            return Some(*key);
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes).ok()?;
        if cache.len() >= VERIFYING_KEYS_CACHED_MAX {
            cache.clear();
        }
        cache.insert(*bytes, key);
        Some(key)
    })
}

/// Verifies a request's signature headers against `instruction` and `params` at time `now_ms`;
/// returns the key's user.
///
/// # Errors
/// `401 UNAUTHORIZED`: a header is missing or malformed, the window is 0 or above
/// [`WINDOW_MAX_MS`], the timestamp is more than the window in the past or in the future, the
/// key is not registered, or the signature does not verify.
pub fn verify(
    credentials: &Credentials,
    headers: &HeaderMap,
    instruction: &str,
    params: &SignedParams,
    now_ms: u64,
) -> Result<UserId, ApiError> {
    let key_text = header(headers, "x-api-key")?;
    let signature_text = header(headers, "x-signature")?;
    let timestamp =
        decimal_header(headers, "x-timestamp")?.ok_or_else(|| unauthorized("Missing header x-timestamp"))?;
    let window = decimal_header(headers, "x-window")?.unwrap_or(WINDOW_DEFAULT_MS);
    verify_signature(credentials, key_text, signature_text, timestamp, window, instruction, params, now_ms)
}

/// Verifies a signature given as its parts (the WebSocket `"signature": [key, signature,
/// timestamp, window]`) against `instruction` and `params` at time `now_ms`; returns the key's
/// user. Same checks and messages as [`verify`].
///
/// # Errors
/// `401 UNAUTHORIZED` as for [`verify`].
#[allow(clippy::too_many_arguments)]
pub fn verify_signature(
    credentials: &Credentials,
    key_text: &str,
    signature_text: &str,
    timestamp: u64,
    window: u64,
    instruction: &str,
    params: &SignedParams,
    now_ms: u64,
) -> Result<UserId, ApiError> {
    if window == 0 || window > WINDOW_MAX_MS {
        return Err(unauthorized(format!("Invalid X-Window {window}: must be from 1 to {WINDOW_MAX_MS} ms")));
    }
    if now_ms.saturating_sub(timestamp) > window {
        return Err(unauthorized("Request has expired: X-Timestamp is older than the window"));
    }
    if timestamp.saturating_sub(now_ms) > window {
        return Err(unauthorized("X-Timestamp is too far in the future"));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let key: [u8; 32] = b64
        .decode(key_text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| unauthorized("Invalid X-API-Key: expected base64 of a 32-byte Ed25519 public key"))?;
    let signature: [u8; 64] = b64
        .decode(signature_text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| unauthorized("Invalid X-Signature: expected base64 of a 64-byte Ed25519 signature"))?;
    let user = credentials.user_of(&FixedBytes(key)).ok_or_else(|| unauthorized("Unknown API key"))?;
    let verifying = verifying_key(&key).ok_or_else(|| unauthorized("Invalid API key"))?;
    let message = signing_string(instruction, params, timestamp, window);
    verifying
        .verify_strict(message.as_bytes(), &ed25519_dalek::Signature::from_bytes(&signature))
        .map_err(|_| unauthorized("Invalid signature"))?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_string_sorts_and_keeps_raw_values() {
        let params =
            body_params(br#"{"symbol":"BTC_USDT","orderId":28,"price":"100.00","postOnly":true,"q":1.50}"#).unwrap();
        assert_eq!(
            signing_string("orderCancel", &params, 1_614_550_000_000, 5_000),
            "instruction=orderCancel&orderId=28&postOnly=true&price=100.00&q=1.50&symbol=BTC_USDT\
             &timestamp=1614550000000&window=5000"
        );
        assert_eq!(
            signing_string("balanceQuery", &SignedParams::new(), 1, 2),
            "instruction=balanceQuery&timestamp=1&window=2"
        );
        assert_eq!(query_params(Some("symbol=SOL%5FUSDC&a=1&a=2")).unwrap()["a"], "1");
        assert!(body_params(b"[1]").is_err());
        assert!(body_params(b"  ").unwrap().is_empty());
    }

    /// String values are signed unescaped whether or not they carry escapes (the fast path for
    /// plain strings and the decoding path give the same text).
    #[test]
    fn body_params_unescape_strings_and_keep_raw_numbers() {
        let params = body_params(br#"{"a":"x\"y","b":"\u0041\n","c":"plain","d":-1.50e3,"e":null,"f":""}"#).unwrap();
        assert_eq!(params["a"], "x\"y");
        assert_eq!(params["b"], "A\n");
        assert_eq!(params["c"], "plain");
        assert_eq!(params["d"], "-1.50e3");
        assert_eq!(params["e"], "null");
        assert_eq!(params["f"], "");
        assert_eq!(body_params(br#"{"a":"1","a":"2"}"#).unwrap()["a"], "2", "the last of a repeated key");
        assert!(body_params(br#"{"a":"\x"}"#).is_err(), "an invalid escape is malformed");
    }

    /// A key whose decompressed form this thread keeps still needs to be registered: revoking it
    /// refuses the next request, and a key that is not a curve point is refused every time.
    #[test]
    fn cached_keys_still_answer_to_the_registry() {
        let secret = [9u8; 32];
        let signing = ed25519_dalek::SigningKey::from_bytes(&secret);
        let key = gateway_binary::client::api_key_of(&secret);
        let credentials = Credentials::default();
        credentials.insert(key, UserId::new(7));
        let b64 = base64::engine::general_purpose::STANDARD;
        let params = body_params(br#"{"symbol":"BTC_USDC"}"#).unwrap();
        let now = 1_764_021_600_000;
        let message = signing_string("orderCancel", &params, now, 5_000);
        let signature = b64.encode(ed25519_dalek::Signer::sign(&signing, message.as_bytes()).to_bytes());
        let key_text = b64.encode(key.0);
        let check = |credentials: &Credentials| {
            verify_signature(credentials, &key_text, &signature, now, 5_000, "orderCancel", &params, now)
        };
        assert_eq!(check(&credentials), Ok(UserId::new(7)));
        assert_eq!(check(&credentials), Ok(UserId::new(7)), "verified again from the cache");
        credentials.revoke(&key);
        assert_eq!(check(&credentials).unwrap_err().message, "Unknown API key");
        // Registered bytes that are no curve point (about half of all y have no x on the curve).
        let not_a_point = (2u8..=255)
            .map(|y| {
                let mut bytes = [0u8; 32];
                bytes[0] = y;
                bytes
            })
            .find(|bytes| ed25519_dalek::VerifyingKey::from_bytes(bytes).is_err())
            .expect("a y without a point");
        credentials.insert(FixedBytes(not_a_point), UserId::new(8));
        for _ in 0..2 {
            let error = verify_signature(
                &credentials,
                &b64.encode(not_a_point),
                &signature,
                now,
                5_000,
                "orderCancel",
                &params,
                now,
            )
            .unwrap_err();
            assert_eq!(error.message, "Invalid API key");
        }
    }

    /// The worked example of docs/rest-api.md.
    #[test]
    fn documented_example_verifies() {
        let secret = [7u8; 32];
        let credentials = Credentials::default();
        credentials.insert(gateway_binary::client::api_key_of(&secret), UserId::new(42));
        let body = br#"{"symbol":"BTC_USDC","side":"Bid","orderType":"Limit","price":"64000.0","quantity":"0.00100","clientId":42}"#;
        let params = body_params(body).unwrap();
        let timestamp = 1_764_021_600_000;
        assert_eq!(
            signing_string("orderExecute", &params, timestamp, 5_000),
            "instruction=orderExecute&clientId=42&orderType=Limit&price=64000.0&quantity=0.00100&side=Bid\
             &symbol=BTC_USDC&timestamp=1764021600000&window=5000"
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=".parse().unwrap());
        headers.insert(
            "x-signature",
            "YfHPmYT/XxXLOkJDPSeKKfwnMHWj22lmW6lP0bczPvaRPhtorN3/u4fyHffdD3zjN0V5NipDSXW6Lglkjpr6DQ==".parse().unwrap(),
        );
        headers.insert("x-timestamp", "1764021600000".parse().unwrap());
        headers.insert("x-window", "5000".parse().unwrap());
        assert_eq!(verify(&credentials, &headers, "orderExecute", &params, timestamp + 4_000), Ok(UserId::new(42)));
        assert_eq!(
            verify(&credentials, &headers, "orderExecute", &params, timestamp + 5_001).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }
}
