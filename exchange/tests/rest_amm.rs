//! The AMM pool endpoints on the real server (`--demo`, ephemeral ports): demo user 2 funds the
//! SOL_USDC pool with 10 SOL and 20 USDC over signed REST, the public quote shows what buying 1 SOL
//! costs on the pool (the worked example plus the 30 bps fee) next to the book, user 3 swaps with
//! a slippage limit (one too tight, then one that fits) and routes a market order between book
//! and pool, cannot burn user 2's liquidity, an unsigned request is refused, and user 2
//! withdraws. Proves the AMM router, the pool view and the
//! engine's pool commands are wired into the server.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{JSON, Server, request, signature_lines};

/// One HTTP request, signed as demo `user` (secret: 32 bytes of the user id) when `signed` is
/// `Some(instruction)`: the signed parameters are the JSON body's (or the query's) keys, sorted.
fn call(port: u16, user: u8, method: &str, path: &str, body: &Value, signed: Option<&str>) -> (u16, Value) {
    let mut headers = JSON.to_string();
    let body_text = if body.is_null() { String::new() } else { body.to_string() };
    if let Some(instruction) = signed {
        let mut pairs: Vec<(String, String)> = body
            .as_object()
            .map(|o| {
                o.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect()
            })
            .unwrap_or_default();
        pairs.sort();
        let params: String = pairs.iter().map(|(k, v)| format!("&{k}={v}")).collect();
        headers += &signature_lines(&[user; 32], &format!("instruction={instruction}{params}"));
    }
    let response = request(port, method, path, &headers, &body_text);
    (response.status(), response.json(path))
}

#[test]
fn pools_over_rest_on_the_real_server() {
    let dir = support::data_dir("rest-amm");
    let server = Server::start(&dir, &["run", "--demo", "--demo-rate", "200"], &[]);
    let port = server.http;

    let (status, pools) = call(port, 0, "GET", "/api/v1/amm/pools", &Value::Null, None);
    assert_eq!(status, 200, "{pools}");
    let symbols: Vec<&str> = pools.as_array().unwrap().iter().map(|p| p["symbol"].as_str().unwrap()).collect();
    assert_eq!(symbols, ["ETH_USDC", "SOL_USDC"]);
    assert_eq!(pools[1]["baseReserve"], "0", "the demo leaves the SOL_USDC pool empty");

    // The demo funds its users shortly after start.
    let deadline = Instant::now() + Duration::from_secs(20);
    for user in [2, 3] {
        loop {
            let (status, balances) = call(port, user, "GET", "/api/v1/capital", &Value::Null, Some("balanceQuery"));
            assert_eq!(status, 200, "{balances}");
            if balances.get("SOL").is_some() && balances.get("USDC").is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "demo user {user} was never funded: {balances}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // The demo market maker funds the ETH_USDC pool: 100 ETH at 3000.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, pools) = call(port, 0, "GET", "/api/v1/amm/pools?symbol=ETH_USDC", &Value::Null, None);
        if pools[0]["baseReserve"] != "0" {
            assert_eq!(
                pools[0]["price"].as_str().map(|p| p.starts_with("2") || p.starts_with("3")),
                Some(true),
                "{pools}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the demo never funded the ETH_USDC pool: {pools}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Unsigned or wrongly signed: 401, nothing happens.
    let add = json!({"symbol": "SOL_USDC", "baseQuantity": "10", "quoteQuantity": "20"});
    let (status, refused) = call(port, 2, "POST", "/api/v1/amm/liquidity", &add, None);
    assert_eq!((status, refused["code"].as_str()), (401, Some("UNAUTHORIZED")), "{refused}");
    let (status, refused) = call(port, 2, "POST", "/api/v1/amm/liquidity", &add, Some("swapExecute"));
    assert_eq!(status, 401, "{refused}");

    let (status, added) = call(port, 2, "POST", "/api/v1/amm/liquidity", &add, Some("liquidityAdd"));
    assert_eq!(status, 200, "{added}");
    assert_eq!((added["baseQuantity"].as_str(), added["quoteQuantity"].as_str()), (Some("10"), Some("20")));
    assert_eq!(added["totalShares"], "447213595", "⌊√(10·10⁹ · 20·10⁶)⌋");
    assert_eq!(added["shares"], "447212595", "minus the 1000 locked shares");

    // Malformed requests: 4xx with {code, message}, never a crash.
    for (method, path, body, instruction) in [
        ("POST", "/api/v1/amm/liquidity", json!({"baseQuantity": "1", "quoteQuantity": "1"}), "liquidityAdd"),
        ("POST", "/api/v1/amm/liquidity", json!({"symbol": "SOL_USDC", "baseQuantity": "1"}), "liquidityAdd"),
        (
            "POST",
            "/api/v1/amm/liquidity",
            json!({"symbol": "SOL_USDC", "baseQuantity": "1e3", "quoteQuantity": "1"}),
            "liquidityAdd",
        ),
        (
            "POST",
            "/api/v1/amm/liquidity",
            json!({"symbol": "SOL_USDC", "baseQuantity": "0.0000000001", "quoteQuantity": "1"}),
            "liquidityAdd",
        ),
        (
            "POST",
            "/api/v1/amm/liquidity",
            json!({"symbol": "NOPE", "baseQuantity": "1", "quoteQuantity": "1"}),
            "liquidityAdd",
        ),
        ("DELETE", "/api/v1/amm/liquidity", json!({"symbol": "SOL_USDC", "shares": "abc"}), "liquidityRemove"),
        ("DELETE", "/api/v1/amm/liquidity", json!({"symbol": "SOL_USDC"}), "liquidityRemove"),
        ("DELETE", "/api/v1/amm/liquidity", json!({"symbol": "SOL_USDC", "shares": "0"}), "liquidityRemove"),
        ("POST", "/api/v1/amm/swap", json!({"symbol": "SOL_USDC", "side": "Buy", "quantity": "1"}), "swapExecute"),
        ("POST", "/api/v1/amm/swap", json!({"symbol": "SOL_USDC", "side": "Bid", "quantity": "0"}), "swapExecute"),
        (
            "POST",
            "/api/v1/amm/swap",
            json!({"symbol": "SOL_USDC", "side": "Bid", "quantity": "99999999999999999999"}),
            "swapExecute",
        ),
        ("POST", "/api/v1/amm/route", json!({"symbol": "SOL_USDC", "side": "Bid"}), "routeExecute"),
    ] {
        let (status, error) = call(port, 2, method, path, &body, Some(instruction));
        assert!((400..500).contains(&status), "{method} {path} {body}: {status} {error}");
        assert!(error["code"].is_string() && error["message"].is_string(), "{error}");
    }
    for path in
        ["/api/v1/amm/quote?symbol=SOL_USDC", "/api/v1/amm/quote?side=Bid&quantity=1", "/api/v1/amm/pools?symbol=X"]
    {
        let (status, error) = call(port, 0, "GET", path, &Value::Null, None);
        assert!((400..500).contains(&status), "{path}: {status} {error}");
    }

    let (status, mine) = call(port, 2, "GET", "/api/v1/amm/shares", &Value::Null, Some("liquidityQuery"));
    assert_eq!(status, 200, "{mine}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut mine = mine;
    while mine.as_array().is_none_or(Vec::is_empty) {
        assert!(Instant::now() < deadline, "user 2's shares never showed: {mine}");
        std::thread::sleep(Duration::from_millis(50));
        mine = call(port, 2, "GET", "/api/v1/amm/shares", &Value::Null, Some("liquidityQuery")).1;
    }
    assert_eq!(mine[0]["shares"], "447212595", "{mine}");
    let (_, theirs) = call(port, 3, "GET", "/api/v1/amm/shares", &Value::Null, Some("liquidityQuery"));
    assert_eq!(theirs, json!([]), "user 3 sees no shares of user 2");

    // The quote is public; the view follows the engine's events, so wait for it to show the pool.
    let path = "/api/v1/amm/quote?symbol=SOL_USDC&side=Bid&quantity=1";
    let deadline = Instant::now() + Duration::from_secs(10);
    let quote = loop {
        let (status, quote) = call(port, 0, "GET", path, &Value::Null, None);
        assert_eq!(status, 200, "{quote}");
        if quote["pool"].get("amountIn").is_some() {
            break quote;
        }
        assert!(Instant::now() < deadline, "the pool view never saw the deposit: {quote}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // 20/9 = 2.222223 (rounded up) grossed up for 30 bps: ⌈2222223·10⁴/9970⌉ = 2228910.
    assert_eq!(quote["pool"]["amountIn"], "2.22891", "{quote}");
    assert_eq!(quote["pool"]["amountOut"], "1");
    assert_eq!(quote["pool"]["spotPrice"], "2");
    assert_eq!(quote["assetIn"], "USDC");
    assert!(quote.get("book").is_some(), "{quote}");
    assert!(quote["route"].get("totalQuote").is_some(), "{quote}");

    // User 3 swaps: a limit one minor unit too tight is refused, the quoted amount fills.
    let tight = json!({"symbol": "SOL_USDC", "side": "Bid", "quantity": "1", "maxAmountIn": "2.228909"});
    let (status, refused) = call(port, 3, "POST", "/api/v1/amm/swap", &tight, Some("swapExecute"));
    assert_eq!((status, refused["code"].as_str()), (400, Some("INVALID_ORDER")), "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("slippage"), "{refused}");
    let fits = json!({"symbol": "SOL_USDC", "side": "Bid", "quantity": "1", "maxAmountIn": "2.22891"});
    let (status, swapped) = call(port, 3, "POST", "/api/v1/amm/swap", &fits, Some("swapExecute"));
    assert_eq!(status, 200, "{swapped}");
    assert_eq!((swapped["amountIn"].as_str(), swapped["amountOut"].as_str()), (Some("2.22891"), Some("1")));
    assert_eq!(swapped["fee"], "0.006687");
    assert_eq!(swapped["baseReserve"], "9");

    // A routed market order: here the pool (about 2.5 USDC per SOL) beats the demo book (about
    // 150), so everything goes to the pool; a limit below the cost is refused.
    let route = json!({"symbol": "SOL_USDC", "side": "Bid", "quantity": "0.5", "quoteLimit": "0.01"});
    let (status, refused) = call(port, 3, "POST", "/api/v1/amm/route", &route, Some("routeExecute"));
    assert_eq!((status, refused["code"].as_str()), (400, Some("INVALID_ORDER")), "{refused}");
    let route = json!({"symbol": "SOL_USDC", "side": "Bid", "quantity": "0.5"});
    let (status, routed) = call(port, 3, "POST", "/api/v1/amm/route", &route, Some("routeExecute"));
    assert_eq!(status, 200, "{routed}");
    assert_eq!((routed["quantity"].as_str(), routed["poolQuantity"].as_str()), (Some("0.5"), Some("0.5")), "{routed}");
    assert_eq!(routed["bookQuantity"], "0");
    let off_grid = json!({"symbol": "SOL_USDC", "side": "Bid", "quantity": "0.001"});
    let (status, _) = call(port, 3, "POST", "/api/v1/amm/route", &off_grid, Some("routeExecute"));
    assert_eq!(status, 400);

    // Wrong limit for the mode, bad amounts, no pool on the market.
    let wrong = json!({"symbol": "SOL_USDC", "side": "Ask", "quantity": "1", "maxAmountIn": "1"});
    let (status, _) = call(port, 3, "POST", "/api/v1/amm/swap", &wrong, Some("swapExecute"));
    assert_eq!(status, 400);
    let both = json!({"symbol": "SOL_USDC", "side": "Ask", "quantity": "1", "quoteQuantity": "1"});
    let (status, _) = call(port, 3, "POST", "/api/v1/amm/swap", &both, Some("swapExecute"));
    assert_eq!(status, 400);
    let negative = json!({"symbol": "SOL_USDC", "side": "Ask", "quantity": "-1"});
    let (status, _) = call(port, 3, "POST", "/api/v1/amm/swap", &negative, Some("swapExecute"));
    assert_eq!(status, 400);
    let no_pool = json!({"symbol": "BTC_USDC", "side": "Ask", "quantity": "1"});
    let (status, missing) = call(port, 3, "POST", "/api/v1/amm/swap", &no_pool, Some("swapExecute"));
    assert_eq!((status, missing["code"].as_str()), (404, Some("RESOURCE_NOT_FOUND")), "{missing}");

    // User 3 holds no shares: user 2's liquidity is out of reach.
    let steal = json!({"symbol": "SOL_USDC", "shares": "1000"});
    let (status, refused) = call(port, 3, "DELETE", "/api/v1/amm/liquidity", &steal, Some("liquidityRemove"));
    assert_eq!((status, refused["code"].as_str()), (400, Some("INSUFFICIENT_FUNDS")), "{refused}");

    let all = json!({"symbol": "SOL_USDC", "shares": "447212595", "minBaseQuantity": "8.4"});
    let (status, removed) = call(port, 2, "DELETE", "/api/v1/amm/liquidity", &all, Some("liquidityRemove"));
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["userShares"], "0");
    assert_eq!(removed["totalShares"], "1000");

    let (status, pools) = call(port, 0, "GET", "/api/v1/amm/pools?symbol=SOL_USDC", &Value::Null, None);
    assert_eq!(status, 200, "{pools}");
    assert_eq!(pools.as_array().unwrap().len(), 1);

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
