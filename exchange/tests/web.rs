//! The trading page and the demo faucet on the real server binary: the page's files are served
//! under `/app/` with their media types and security headers, `/` sends browsers there, and the
//! faucet credits exactly its fixed amounts through the engine, to signed requests and session
//! tokens alike, in demo mode only (and is 404 elsewhere). The page itself is tested in a real
//! browser by scripts/web-test.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::{Server, signature_lines};

/// Starts the server with `run <run_args>` on a fresh data directory removed afterwards.
fn start(name: &str, run_args: &[&str]) -> Server {
    let dir = support::data_dir(&format!("web-{name}"));
    let args: Vec<&str> = ["run"].into_iter().chain(run_args.iter().copied()).collect();
    Server::start(&dir, &args, &[]).remove_dir_on_drop()
}

/// One HTTP request: (status, headers in lower case, body). `signed` is the instruction to sign
/// as demo user 2 (no parameters).
fn request(port: u16, method: &str, path: &str, extra: &str, signed: Option<&str>) -> (u16, String, String) {
    let mut headers = format!("Content-Type: application/json\r\n{extra}");
    if let Some(instruction) = signed {
        headers += &signature_lines(&[2u8; 32], &format!("instruction={instruction}"));
    }
    let body = if method == "POST" { "{}" } else { "" };
    response(support::request(port, method, path, &headers, body))
}

/// A `POST` with a JSON body.
fn request_body(port: u16, path: &str, body: &str, headers: &str) -> (u16, String, String) {
    response(support::request(port, "POST", path, &format!("Content-Type: application/json\r\n{headers}"), body))
}

/// (status, headers in lower case, body).
fn response(response: support::Response) -> (u16, String, String) {
    (response.status(), response.head().to_ascii_lowercase(), response.body().to_string())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn the_page_is_served_under_app_and_browsers_asking_for_root_are_sent_there() {
    let server = start("page", &[]);
    let port = server.http;

    let (status, head, _) = request(port, "GET", "/", "", None);
    assert_eq!(status, 307, "{head}");
    assert!(head.contains("location: /app/"), "{head}");
    let (status, head, _) = request(port, "GET", "/app", "", None);
    assert_eq!(status, 308, "{head}");

    let (status, head, body) = request(port, "GET", "/app/", "", None);
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html; charset=utf-8"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'self'"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(body.contains("<script type=\"module\" src=\"./js/app.js\">"), "{body}");
    for (path, media_type) in
        [("/app/style.css", "text/css"), ("/app/js/app.js", "text/javascript"), ("/app/js/book.js", "text/javascript")]
    {
        let (status, head, body) = request(port, "GET", path, "", None);
        assert_eq!(status, 200, "{path}");
        assert!(head.contains(&format!("content-type: {media_type}")), "{path}: {head}");
        assert!(!body.is_empty(), "{path}");
    }
    // Only the page's own files: no directory walking, no unknown names.
    for path in ["/app/js/nope.js", "/app/../Cargo.toml", "/app/%2e%2e/Cargo.toml", "/app/e2e/package.json"] {
        assert_eq!(request(port, "GET", path, "", None).0, 404, "{path}");
    }
    // Not in demo mode: the page hides the faucet, and the faucet does not exist.
    let (status, _, body) = request(port, "GET", "/app/config.json", "", None);
    assert_eq!((status, json(&body)["demo"].as_bool()), (200, Some(false)));
    assert_eq!(request(port, "POST", "/api/v1/demo/faucet", "", Some("demoFaucet")).0, 404);
}

#[test]
fn the_demo_faucet_credits_fixed_amounts_through_the_engine() {
    // The demo flow stops after its 16 funding deposits, so balances only move by the faucet.
    let server = start("faucet", &["--demo", "--demo-orders", "16"]);
    let port = server.http;
    let (_, _, body) = request(port, "GET", "/app/config.json", "", None);
    assert_eq!(json(&body)["demo"], true);

    let sol = || {
        let (status, _, body) = request(port, "GET", "/api/v1/capital", "", Some("balanceQuery"));
        assert_eq!(status, 200, "{body}");
        json(&body)["SOL"]["available"].as_str().map(str::to_string)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while sol().as_deref() != Some("1000000") {
        assert!(Instant::now() < deadline, "demo user 2 was never funded: {:?}", sol());
        std::thread::sleep(Duration::from_millis(100));
    }

    // Unauthenticated or wrongly signed: refused, nothing credited.
    assert_eq!(request(port, "POST", "/api/v1/demo/faucet", "", None).0, 401);
    assert_eq!(request(port, "POST", "/api/v1/demo/faucet", "", Some("balanceQuery")).0, 401);

    let (status, _, body) = request(port, "POST", "/api/v1/demo/faucet", "", Some("demoFaucet"));
    assert_eq!(status, 200, "{body}");
    let credited = json(&body)["credited"].clone();
    assert_eq!(credited["SOL"], "100");
    assert_eq!(credited["BTC"], "100");
    assert_eq!(credited["USDC"], "100000", "quote assets get more");
    // Answered after the engine executed the deposits: the balance already shows them.
    assert_eq!(sol().as_deref(), Some("1000100"));

    // A registered user with a session token (the page's way) claims too, into its own account.
    let register = r#"{"username":"faucet-user","password":"correct horse battery"}"#;
    let (status, _, body) = request_body(port, "/api/v1/auth/register", register, "");
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = request_body(port, "/api/v1/auth/login", register, "");
    assert_eq!(status, 200, "{body}");
    let bearer = format!("Authorization: Bearer {}\r\n", json(&body)["token"].as_str().unwrap());
    let (status, _, body) = request_body(port, "/api/v1/demo/faucet", "{}", &bearer);
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = request(port, "GET", "/api/v1/capital", &bearer, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["USDC"]["available"], "100000");
    assert_eq!(sol().as_deref(), Some("1000100"), "demo user 2 untouched");

    // One claim per user per cooldown.
    let (status, _, body) = request(port, "POST", "/api/v1/demo/faucet", "", Some("demoFaucet"));
    assert_eq!(status, 429, "{body}");
    assert_eq!(json(&body)["code"], "TOO_MANY_REQUESTS");
    assert_eq!(sol().as_deref(), Some("1000100"));
}
