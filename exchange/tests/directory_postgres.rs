//! The user directory in Postgres: on the real server with the Postgres sink (`scripts/services`),
//! users registered through the REST API appear in `users` with their names, and their API keys
//! in `api_keys` (`source = 'api'`, label, creation, revocation); keys from the configuration
//! stay `source = 'config'`. After `kill -9` and a restart the directory is written again,
//! identical (no duplicates, nothing lost), and a user registered after the restart follows.
//! Password hashes never reach Postgres.
//!
//! Needs `EXCHANGE_TEST_DATABASE_URL`; skipped loudly without it, failed under
//! `EXCHANGE_REQUIRE_SERVICES=1` (scripts/test).

mod support;

use base64::Engine as _;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use sinks::sqlx::{self, Row};
use std::time::{Duration, Instant};
use support::Server;

/// One HTTP request; the status and the JSON body.
fn request(port: u16, method: &str, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let authorization = token.map_or(String::new(), |token| format!("Authorization: Bearer {token}\r\n"));
    let headers = format!("Content-Type: application/json\r\n{authorization}");
    let response = support::request(port, method, path, &headers, &body.to_string());
    (response.status(), serde_json::from_str(response.body()).unwrap_or(Value::Null))
}

/// Registers `username` and logs in; the user id and a session token.
fn user(port: u16, username: &str) -> (u64, String) {
    let credentials = json!({"username": username, "password": "correct horse battery"});
    let (status, body) = request(port, "POST", "/api/v1/auth/register", None, &credentials);
    assert_eq!(status, 201, "{body}");
    let (status, session) = request(port, "POST", "/api/v1/auth/login", None, &credentials);
    assert_eq!(status, 200, "{session}");
    (
        body["userId"].as_u64().unwrap_or_else(|| panic!("a userId: {body}")),
        session["token"].as_str().unwrap().to_string(),
    )
}

/// `(user_id, username, registered_ms)` of every user with a name, and `(key, user, source, label,
/// revoked)` of every key.
type Directory = (Vec<(i64, String, i64)>, Vec<(String, i64, String, String, bool)>);

async fn directory(pool: &sqlx::PgPool) -> Directory {
    let users = sqlx::query("SELECT user_id, username, registered_ms FROM users WHERE username IS NOT NULL ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let keys =
        sqlx::query("SELECT public_key, user_id, source, label, revoked_ms IS NOT NULL FROM api_keys ORDER BY 1")
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|row| {
                let key: Vec<u8> = row.get(0);
                (base64::engine::general_purpose::STANDARD.encode(key), row.get(1), row.get(2), row.get(3), row.get(4))
            })
            .collect();
    (users, keys)
}

#[test]
fn registered_users_and_keys_reach_postgres() {
    let Some([server_url]) = support::services(["EXCHANGE_TEST_DATABASE_URL"]) else { return };
    let database = support::fresh_database(&server_url, &format!("exchange_directory_{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = support::data_dir("directory-pg");
    std::fs::create_dir_all(&dir).unwrap();
    // One configured key, for user 7.
    let configured =
        base64::engine::general_purpose::STANDARD.encode(SigningKey::from_bytes(&[5u8; 32]).verifying_key().to_bytes());
    let config = dir.join("exchange.toml");
    std::fs::write(
        &config,
        format!("{}\n[[api_keys]]\nuser_id = 7\npublic_key = \"{configured}\"\n", exchange::config::DEFAULT_CONFIG),
    )
    .unwrap();
    let env = [("DATABASE_URL", database.as_str()), ("EXCHANGE_JWT_SECRET", "a-test-secret-that-survives-restarts")];
    let mut server = Server::start(&dir, &["--config", config.to_str().unwrap(), "run"], &env).remove_dir_on_drop();
    let port = server.http;

    let (alice, alice_token) = user(port, "alice");
    let (bob, _) = user(port, "Bob");
    let (status, generated) =
        request(port, "POST", "/api/v1/account/keys", Some(&alice_token), &json!({"label": "trading bot"}));
    assert_eq!(status, 201, "{generated}");
    let own_public = base64::engine::general_purpose::STANDARD
        .encode(SigningKey::from_bytes(&[77u8; 32]).verifying_key().to_bytes());
    let (status, body) = request(
        port,
        "POST",
        "/api/v1/account/keys",
        Some(&alice_token),
        &json!({"publicKey": own_public, "label": "laptop"}),
    );
    assert_eq!(status, 201, "{body}");
    let bot = generated["apiKey"].as_str().unwrap_or_else(|| panic!("apiKey: {generated}")).to_string();
    let (status, body) = request(port, "DELETE", "/api/v1/account/keys", Some(&alice_token), &json!({"apiKey": bot}));
    assert_eq!(status, 200, "{body}");

    let pool = runtime.block_on(sqlx::PgPool::connect(&database)).unwrap();
    let expected_keys = {
        let mut keys = vec![
            (bot.clone(), alice as i64, "api".to_string(), "trading bot".to_string(), true),
            (own_public.clone(), alice as i64, "api".to_string(), "laptop".to_string(), false),
        ];
        keys.sort();
        keys
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let written = loop {
        let (users, keys) = runtime.block_on(directory(&pool));
        let mut api_keys: Vec<_> = keys.iter().filter(|k| k.2 == "api").cloned().collect();
        api_keys.sort();
        if users.len() == 2 && api_keys == expected_keys {
            break (users, keys);
        }
        assert!(Instant::now() < deadline, "the directory should reach Postgres: {users:?} {keys:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let names: Vec<(i64, &str)> = written.0.iter().map(|(id, name, _)| (*id, name.as_str())).collect();
    assert_eq!(names, [(alice as i64, "alice"), (bob as i64, "bob")], "usernames lower case");
    assert!(written.0.iter().all(|(_, _, registered)| *registered > 1_700_000_000_000), "{:?}", written.0);
    let config_keys: Vec<_> = written.1.iter().filter(|k| k.2 == "config").collect();
    assert_eq!(config_keys, [&(configured.clone(), 7, "config".to_string(), String::new(), false)], "{:?}", written.1);
    let columns: Vec<String> = runtime
        .block_on(
            sqlx::query_scalar(
                "SELECT column_name::text FROM information_schema.columns WHERE table_name IN ('users', 'api_keys')",
            )
            .fetch_all(&pool),
        )
        .unwrap();
    assert!(!columns.iter().any(|c| c.contains("password") || c.contains("secret")), "{columns:?}");

    // kill -9 and restart: the directory is written again, identical.
    server.restart();
    let stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(runtime.block_on(directory(&pool)), written, "no duplicates, nothing lost after a restart");
    let (carol, _) = user(server.http, "carol");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !runtime.block_on(directory(&pool)).0.iter().any(|(id, name, _)| *id == carol as i64 && name == "carol") {
        assert!(Instant::now() < deadline, "a user registered after the restart reaches Postgres");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server);
    runtime.block_on(pool.close());
}
