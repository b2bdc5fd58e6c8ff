//! The load-test users that `exchange --load-users N` creates, and [`setup`], which creates and
//! funds users through the admin API instead.
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

/// Users created for a run through the admin API.
#[derive(Debug, Clone)]
pub struct AdminSetup {
    /// The HTTP server's address.
    pub address: String,
    /// The admin bearer token (`[admin] token` / `EXCHANGE_ADMIN_TOKEN` of the server).
    pub token: String,
    /// How many users.
    pub count: usize,
    /// Deposits per user: (asset symbol, decimal quantity).
    pub deposits: Vec<(String, String)>,
}

/// A user of the run: its id and the API secret (Ed25519 seed) registered for it.
pub type ApiUser = (u64, [u8; 32]);

/// Creates `count` users through the admin API (`POST /api/v1/admin/users`, usernames
/// `loadgen-<unix ms>-<k>`), funds each (`POST /api/v1/admin/deposits`), logs each in
/// (`POST /api/v1/auth/login`) and registers a fresh Ed25519 key from the operating system's
/// random source (`POST /api/v1/account/keys` with `publicKey`). The keys go into the server's
/// shared credential registry, so they sign REST requests and log on to the SBE gateway alike
/// (the FIX sessions are configured at the server's start and stay the load-test users').
///
/// # Errors
/// A refused or failed call, with the server's answer.
pub fn setup(config: &AdminSetup) -> Result<Vec<ApiUser>, String> {
    use crate::http::{Client, request};
    use base64::Engine as _;
    let mut client = Client::connect(&config.address)?;
    let bearer = format!("Bearer {}", config.token);
    let tag = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let json = |response: crate::http::Response, what: &str, expected: u16| {
        if response.status != expected {
            return Err(format!("{what}: {} {}", response.status, String::from_utf8_lossy(&response.body)));
        }
        serde_json::from_slice::<serde_json::Value>(&response.body).map_err(|e| format!("{what}: {e}"))
    };
    let mut random = std::fs::File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?;
    let mut users = Vec::with_capacity(config.count);
    for k in 0..config.count {
        let username = format!("loadgen-{tag}-{k}");
        let password = format!("loadgen password {tag} {k}");
        let credentials = serde_json::json!({"username": username, "password": password}).to_string();
        let admin = [("Authorization", bearer.as_str())];
        let created = json(
            client.call(&request("POST", "/api/v1/admin/users", &admin, Some(&credentials)))?,
            "create user (admin token wrong or admin API off?)",
            201,
        )?;
        let user_id = created.get("userId").and_then(|v| v.as_u64()).ok_or("create user: no userId")?;
        for (symbol, quantity) in &config.deposits {
            let body = serde_json::json!({"userId": user_id, "symbol": symbol, "quantity": quantity}).to_string();
            json(client.call(&request("POST", "/api/v1/admin/deposits", &admin, Some(&body)))?, "deposit", 200)?;
        }
        let login = json(client.call(&request("POST", "/api/v1/auth/login", &[], Some(&credentials)))?, "login", 200)?;
        let token = login.get("token").and_then(|v| v.as_str()).ok_or("login: no token")?;
        let mut secret = [0u8; 32];
        std::io::Read::read_exact(&mut random, &mut secret).map_err(|e| format!("/dev/urandom: {e}"))?;
        let public = ed25519_dalek::SigningKey::from_bytes(&secret).verifying_key().to_bytes();
        let public = base64::engine::general_purpose::STANDARD.encode(public);
        let body = serde_json::json!({"label": "loadgen", "publicKey": public}).to_string();
        let session = format!("Bearer {token}");
        json(
            client.call(&request(
                "POST",
                "/api/v1/account/keys",
                &[("Authorization", session.as_str())],
                Some(&body),
            ))?,
            "register key",
            201,
        )?;
        users.push((user_id, secret));
    }
    Ok(users)
}
