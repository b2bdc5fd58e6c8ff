//! The REST fill and order history read from Postgres: the real server with the Postgres sink
//! (`scripts/services`) trades in its demo market, stops, and restarts with an empty in-memory
//! history; `GET /wapi/v1/history/fills` and `/wapi/v1/history/orders` still list every fill and
//! order of the first run, signed by each demo user, and never another user's; the public
//! `GET /api/v1/trades/history` lists every trade of the first run, exactly as the journal holds
//! it, and `GET /api/v1/klines` aggregates them (1m candles equal to the journal's, weeks and
//! months holding them all). `GET /wapi/v1/capital/deposits` lists every deposit of the first run
//! as the journal holds it (id = engine sequence, amount, time); a withdrawal requested in the
//! second run is listed from Postgres exactly as its request answered, and after another restart
//! every deposit and withdrawal of both runs still is (the request's address, which is not
//! journaled, gone). The four lists send Backpack's pagination headers (`X-TOTAL`, `X-PAGE-COUNT`,
//! `X-CURRENT-PAGE`, `X-PAGE-SIZE`) counted in Postgres, equal to what the in-memory history sends
//! for as many records, on a page past the end too. With Postgres stopped the endpoints answer `503 SERVICE_UNAVAILABLE`.
//! `/metrics` shows the sink's `exchange_sink_*` series, its cursor reaching the engine's last
//! sequence, before and after the outage (which it counts as a failure).
//!
//! Needs `EXCHANGE_TEST_DATABASE_URL` (and `EXCHANGE_SERVICES_CTL` for the outage part); skipped
//! loudly without it, failed under `EXCHANGE_REQUIRE_SERVICES=1` (scripts/test).

mod support;

use base64::Engine as _;
use codec::Event;
use ed25519_dalek::{Signer, SigningKey};
use exchange::config::Config;
use serde_json::Value;
use sinks::History;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_exchange");

fn command(config: &Path, data: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(["--config", config.to_str().unwrap(), "--data", data.to_str().unwrap()])
        .args(["--http-port", "0", "--sbe-port", "0", "--fix-port", "0"])
        .args(["run", "--demo"])
        .args(extra)
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BROKERS")
        .env_remove("REDIS_URL");
    command
}

/// Starts the server and returns it with its HTTP port.
fn start(config: &Path, data: &Path, extra: &[&str]) -> (Child, u16) {
    let mut child = command(config, data, extra).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let port = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "server exited before listening");
        if line.contains("HTTP listening") {
            let address = line.split("listen=").nth(1).unwrap();
            break address.split_whitespace().next().unwrap().rsplit(':').next().unwrap().parse::<u16>().unwrap();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, port)
}

/// A GET signed by demo user `user` (secret: 32 bytes of `user`); `query` is also what is signed.
fn get(port: u16, user: u8, path: &str, instruction: &str, query: &str) -> (u16, Value) {
    let (status, _, body) = signed_with_headers(port, user, "GET", &format!("{path}?{query}"), instruction, query, "");
    (status, body)
}

/// Backpack's pagination headers, in this order.
const PAGINATION_HEADERS: [&str; 4] = ["x-total", "x-page-count", "x-current-page", "x-page-size"];

/// [`get`], with the answer's pagination headers ([`PAGINATION_HEADERS`], `None` where absent).
fn get_paged(port: u16, user: u8, path: &str, instruction: &str, query: &str) -> (u16, [Option<u64>; 4], Value) {
    let (status, headers, body) =
        signed_with_headers(port, user, "GET", &format!("{path}?{query}"), instruction, query, "");
    let pagination = PAGINATION_HEADERS.map(|name| headers.get(name).map(|v| v.parse().unwrap()));
    (status, pagination, body)
}

/// The pagination headers the in-memory history sends for a query matching `total` records,
/// asked for `limit` of them after `offset` (gateway-json's `Page::respond`).
fn pagination(total: usize, limit: usize, offset: usize) -> [Option<u64>; 4] {
    [total, total.div_ceil(limit), offset / limit + 1, limit].map(|n| Some(n as u64))
}

/// A POST of a JSON object signed by demo user `user` (its fields are what is signed).
fn post(port: u16, user: u8, path: &str, instruction: &str, body: &Value) -> (u16, Value) {
    let fields = body.as_object().unwrap().iter();
    let params: Vec<String> = fields.map(|(k, v)| format!("{k}={}", v.as_str().unwrap())).collect();
    let (status, _, answer) =
        signed_with_headers(port, user, "POST", path, instruction, &params.join("&"), &body.to_string());
    (status, answer)
}

/// A request signed by demo user `user` over `instruction` and the `&`-separated `params`: the
/// answer's status, headers (lowercase names) and JSON body.
fn signed_with_headers(
    port: u16,
    user: u8,
    method: &str,
    target: &str,
    instruction: &str,
    params: &str,
    body: &str,
) -> (u16, BTreeMap<String, String>, Value) {
    let path = target.split('?').next().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = SigningKey::from_bytes(&[user; 32]);
    let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let mut params: Vec<&str> = params.split('&').filter(|p| !p.is_empty()).collect();
    params.sort_unstable();
    let mut text = format!("instruction={instruction}");
    for param in params {
        text.push('&');
        text.push_str(param);
    }
    text.push_str(&format!("&timestamp={timestamp}&window=5000"));
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {}\r\nX-Signature: {}\r\n\
         X-Timestamp: {timestamp}\r\nX-Window: 5000\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        b64.encode(key.verifying_key().to_bytes()),
        b64.encode(key.sign(text.as_bytes()).to_bytes()),
        body.len(),
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    (status, headers, serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {response}")))
}

/// Every record of a history endpoint, paged 1000 at a time with `offset`.
fn all(port: u16, user: u8, path: &str, instruction: &str) -> Vec<Value> {
    let mut records = Vec::new();
    loop {
        let query = format!("limit=1000&offset={}", records.len());
        let (status, page) = get(port, user, path, instruction, &query);
        assert_eq!(status, 200, "{path}: {page}");
        let page = page.as_array().unwrap().clone();
        let done = page.len() < 1000;
        records.extend(page);
        if done {
            return records;
        }
    }
}

/// Per user: the (symbol, trade id, order id) of its fills and the ids of its orders, from the
/// journal (every event regenerated by replay).
type Reference = BTreeMap<u64, (BTreeSet<(String, u64, u64)>, BTreeSet<u64>)>;

fn reference(config_path: &Path, data: &Path) -> Reference {
    let config = Config::load(Some(config_path)).unwrap();
    let engine_config = config.engine_config().unwrap();
    let history = History {
        engine_config: engine_config.clone(),
        journal_dir: data.join("journal"),
        snapshot_dir: data.join("snapshots"),
    };
    let contents = engine::journal::JournalReader::open(&data.join("journal")).unwrap().read_after(0).unwrap();
    let symbol = |market: codec::MarketId| engine_config.markets[market.get() as usize - 1].symbol.clone();
    let mut reference = Reference::new();
    sinks::replay_from(
        &history,
        engine::Engine::new(&engine_config).unwrap(),
        0,
        0,
        contents.last_sequence,
        &mut |c| {
            for event in &c.events {
                match event {
                    Event::Fill(f) => {
                        let trade = (f.market_id, f.trade_id.get());
                        let maker = (symbol(trade.0), trade.1, f.maker_order_id.get());
                        let taker = (symbol(trade.0), trade.1, f.taker_order_id.get());
                        reference.entry(f.maker_user_id.get()).or_default().0.insert(maker);
                        reference.entry(f.taker_user_id.get()).or_default().0.insert(taker);
                    }
                    Event::OrderAccepted(a) => {
                        reference.entry(a.user_id.get()).or_default().1.insert(a.order_id.get());
                    }
                    _ => {}
                }
            }
            Ok(())
        },
    )
    .unwrap();
    reference
}

/// A deposit or withdrawal as the journal gives it: its fields (`id`, `symbol`, `quantity`,
/// `createdAt`) are the engine sequence of the command, the change of the user's available
/// balance and the command's time (what the in-memory history records).
struct Transfer {
    fields: Value,
    /// The command's time, ms.
    ms: u64,
}

/// Per user, id → each deposit and each withdrawal the journal gives.
type Transfers = BTreeMap<u64, (BTreeMap<u64, Transfer>, BTreeMap<u64, Transfer>)>;

fn journal_transfers(config_path: &Path, data: &Path) -> Transfers {
    let config = Config::load(Some(config_path)).unwrap();
    let engine_config = config.engine_config().unwrap();
    let history = History {
        engine_config: engine_config.clone(),
        journal_dir: data.join("journal"),
        snapshot_dir: data.join("snapshots"),
    };
    let contents = engine::journal::JournalReader::open(&data.join("journal")).unwrap().read_after(0).unwrap();
    let mut available: BTreeMap<(u64, u32), u64> = BTreeMap::new();
    let mut transfers = Transfers::new();
    sinks::replay_from(
        &history,
        engine::Engine::new(&engine_config).unwrap(),
        0,
        0,
        contents.last_sequence,
        &mut |c| {
            for event in &c.events {
                let Event::BalanceUpdate(b) = event else { continue };
                let (user, asset) = (b.user_id.get(), b.asset_id.get());
                let before = available.insert((user, asset), b.available.get()).unwrap_or(0);
                let (deposit, amount) = match b.reason.get() {
                    Ok(codec::BalanceChange::Deposit) => (true, b.available.get() - before),
                    Ok(codec::BalanceChange::Withdrawal) => (false, before - b.available.get()),
                    _ => continue,
                };
                let spec = &engine_config.assets[asset as usize];
                let ms = b.timestamp_ns.get() / 1_000_000;
                let fields = serde_json::json!({
                    "id": b.sequence.get(),
                    "symbol": spec.symbol,
                    "quantity": marketdata::format::format_trimmed(u128::from(amount), spec.decimals),
                    "createdAt": format!("{}.{:03}", marketdata::interval::format_datetime(ms / 1_000, 'T'), ms % 1_000),
                });
                let lists = transfers.entry(user).or_default();
                let list = if deposit { &mut lists.0 } else { &mut lists.1 };
                list.insert(b.sequence.get(), Transfer { fields, ms });
            }
            Ok(())
        },
    )
    .unwrap();
    transfers
}

/// Asserts that `served` (a deposit or withdrawal list, newest first, each id once) holds every
/// record of `journal` with the journal's fields.
fn assert_transfers(served: &[Value], journal: &BTreeMap<u64, Transfer>, what: &str) {
    let ids: Vec<u64> = served.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{what}: newest first, each once: {ids:?}");
    let served: BTreeMap<u64, &Value> = served.iter().map(|t| (t["id"].as_u64().unwrap(), t)).collect();
    for (id, transfer) in journal {
        let listed = served.get(id).unwrap_or_else(|| panic!("{what}: {id} of the journal is not listed"));
        for (key, value) in transfer.fields.as_object().unwrap() {
            assert_eq!(&listed[key], value, "{what} {id}: {key}");
        }
        assert_eq!(listed["status"], "confirmed", "{what} {id}");
    }
}

/// Per symbol, trade id → the public trade JSON the journal's fills give.
type Trades = BTreeMap<String, BTreeMap<u64, Value>>;

/// Per symbol, the 1m klines (JSON, by start) of the journal's trades, and the first trade's price.
type Klines = BTreeMap<String, (BTreeMap<u64, Value>, String)>;

fn journal_trades(config_path: &Path, data: &Path) -> (Trades, Klines) {
    let config = Config::load(Some(config_path)).unwrap();
    let engine_config = config.engine_config().unwrap();
    let history = History {
        engine_config: engine_config.clone(),
        journal_dir: data.join("journal"),
        snapshot_dir: data.join("snapshots"),
    };
    let contents = engine::journal::JournalReader::open(&data.join("journal")).unwrap().read_after(0).unwrap();
    let mut trades = Trades::new();
    // Per symbol and minute: open, high, low, close, volume, quote volume, trades (integers).
    let mut minutes: BTreeMap<String, BTreeMap<u64, [u128; 7]>> = BTreeMap::new();
    sinks::replay_from(
        &history,
        engine::Engine::new(&engine_config).unwrap(),
        0,
        0,
        contents.last_sequence,
        &mut |c| {
            for event in &c.events {
                if let Event::Fill(f) = event {
                    let market = &engine_config.markets[f.market_id.get() as usize - 1];
                    let format = marketdata::format::MarketFormat::new(&engine_config, market);
                    let trade = serde_json::json!({
                        "id": f.trade_id.get(),
                        "price": format.price(f.price_ticks.get()),
                        "quantity": format.quantity(u128::from(f.quantity_lots.get())),
                        "quoteQuantity": format.quote(u128::from(f.quote_amount.get())),
                        "timestamp": f.timestamp_ns.get() / 1_000_000,
                        "isBuyerMaker": f.taker_side.get() == Ok(codec::Side::Ask),
                    });
                    trades.entry(market.symbol.clone()).or_default().insert(f.trade_id.get(), trade);
                    let (price, lots) = (u128::from(f.price_ticks.get()), u128::from(f.quantity_lots.get()));
                    let minute = f.timestamp_ns.get() / 1_000_000_000 / 60 * 60;
                    let candle = minutes
                        .entry(market.symbol.clone())
                        .or_default()
                        .entry(minute)
                        .or_insert([price, price, price, price, 0, 0, 0]);
                    candle[1] = candle[1].max(price);
                    candle[2] = candle[2].min(price);
                    candle[3] = price;
                    candle[4] += lots;
                    candle[5] += u128::from(f.quote_amount.get());
                    candle[6] += 1;
                }
            }
            Ok(())
        },
    )
    .unwrap();
    let datetime = |seconds: u64| marketdata::interval::format_datetime(seconds, ' ');
    let mut klines = Klines::new();
    for (symbol, minutes) in minutes {
        let market = engine_config.markets.iter().find(|m| m.symbol == symbol).unwrap();
        let format = marketdata::format::MarketFormat::new(&engine_config, market);
        let ticks = |value: u128| format.price(u64::try_from(value).unwrap());
        let first = ticks(minutes.values().next().unwrap()[0]);
        let candles = minutes
            .into_iter()
            .map(|(start, c)| {
                let candle = serde_json::json!({
                    "start": datetime(start), "end": datetime(start + 60),
                    "open": ticks(c[0]), "high": ticks(c[1]), "low": ticks(c[2]), "close": ticks(c[3]),
                    "volume": format.quantity(c[4]), "quoteVolume": format.quote(c[5]), "trades": c[6].to_string(),
                });
                (start, candle)
            })
            .collect();
        klines.insert(symbol, (candles, first));
    }
    (trades, klines)
}

/// A public GET (no signature needed; the signed headers `get` adds are ignored).
fn public(port: u16, path: &str, query: &str) -> (u16, Value) {
    get(port, 2, path, "none", query)
}

/// Every trade `GET /api/v1/trades/history` serves for `symbol`, paged 1000 at a time back from
/// the newest with `offset`. The demo trades on meanwhile, so a page can repeat trades of the
/// previous one (never skip one): each id keeps the JSON first served.
fn served_trades(port: u16, symbol: &str) -> BTreeMap<u64, Value> {
    let (mut trades, mut offset) = (BTreeMap::new(), 0);
    loop {
        let (status, page) =
            public(port, "/api/v1/trades/history", &format!("symbol={symbol}&limit=1000&offset={offset}"));
        assert_eq!(status, 200, "{symbol}: {page}");
        let page = page.as_array().unwrap().clone();
        let ids: Vec<u64> = page.iter().map(|t| t["id"].as_u64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{symbol}: oldest first within a page");
        for trade in &page {
            let id = trade["id"].as_u64().unwrap();
            let first = trades.entry(id).or_insert_with(|| trade.clone());
            assert_eq!(first, trade, "{symbol}: trade {id} served the same twice");
        }
        if page.len() < 1000 {
            return trades;
        }
        offset += page.len();
    }
}

fn fill_keys(fills: &[Value]) -> BTreeSet<(String, u64, u64)> {
    fills
        .iter()
        .map(|f| {
            let order = f["orderId"].as_str().unwrap().parse().unwrap();
            (f["symbol"].as_str().unwrap().to_string(), f["tradeId"].as_u64().unwrap(), order)
        })
        .collect()
}

fn order_ids(orders: &[Value]) -> BTreeSet<u64> {
    orders.iter().map(|o| o["id"].as_str().unwrap().parse().unwrap()).collect()
}

#[test]
fn history_endpoints_read_postgres_across_a_restart() {
    let Some([server_url]) = support::services(["EXCHANGE_TEST_DATABASE_URL"]) else { return };
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("exchange-history-pg-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let database = support::fresh_database(&server_url, &format!("exchange_history_{id}"));
    let config_path = dir.join("exchange.toml");
    let config_text = format!("{}\n[sinks.postgres]\nurl = \"{database}\"\n", exchange::config::DEFAULT_CONFIG);
    std::fs::write(&config_path, config_text).unwrap();

    // Run 1: the demo trades, then a graceful stop (the sink writes everything).
    let status = command(&config_path, &data, &["--demo-rate", "300", "--run-for", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // Run 1 made every record by this millisecond; run 2 starts in a later one.
    let run_1_end_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    std::thread::sleep(Duration::from_millis(2));
    let before = reference(&config_path, &data);
    let (trades_before, klines_before) = journal_trades(&config_path, &data);
    let transfers_before = journal_transfers(&config_path, &data);
    assert!(!trades_before.is_empty(), "the demo traded in run 1");
    // Every minute that ends before run 2 starts holds trades of run 1 only.
    let run_2_start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let traders = [2u64, 3, 4];
    for user in traders {
        assert!(before.get(&user).is_some_and(|(fills, _)| !fills.is_empty()), "demo user {user} traded in run 1");
    }

    // Run 2: a fresh process, its in-memory history empty; the demo trades on (its users' keys
    // are registered by --demo), slowly.
    let (mut server, port) = start(&config_path, &data, &["--demo-rate", "20"]);
    // `/metrics` shows the sink following the engine.
    sink_caught_up_in_metrics(port);
    let mut seen = BTreeMap::new();
    for user in traders {
        let fills = all(port, user as u8, "/wapi/v1/history/fills", "fillHistoryQueryAll");
        let orders = all(port, user as u8, "/wapi/v1/history/orders", "orderHistoryQueryAll");
        let (fills_before, orders_before) = &before[&user];
        let (fill_set, order_set) = (fill_keys(&fills), order_ids(&orders));
        assert_eq!(fill_set.len(), fills.len(), "user {user}: no fill listed twice");
        assert!(fill_set.is_superset(fills_before), "user {user}: every fill of run 1 is still listed");
        assert!(order_set.is_superset(orders_before), "user {user}: every order of run 1 is still listed");
        // Newest first.
        let trade_times: Vec<&str> = fills.iter().map(|f| f["timestamp"].as_str().unwrap()).collect();
        assert!(trade_times.windows(2).all(|w| w[0] >= w[1]), "user {user}: fills newest first");
        let ids: Vec<u64> = orders.iter().map(|o| o["id"].as_str().unwrap().parse().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "user {user}: orders newest first");
        // An expired order says why, in Backpack's names (the demo's market orders can expire).
        for order in &orders {
            let reason = order["expiryReason"].as_str();
            if order["status"] == "Expired" {
                let names = ["ImmediateOrCancel", "InsufficientLiquidity", "InsufficientFunds"];
                assert!(reason.is_some_and(|r| names.contains(&r)), "user {user}: {order}");
            } else {
                assert_eq!(order["expiryReason"], Value::Null, "user {user}: {order}");
            }
        }
        seen.insert(user, (fills, orders));
    }

    // Backpack's pagination headers from Postgres, over run 1's records (a time range the demo,
    // trading on, adds nothing to): exactly what the in-memory history sends for as many records.
    // `X-TOTAL` counts every match, on a middle page and on a page past the end too.
    let lists = [
        ("/wapi/v1/history/fills", "fillHistoryQueryAll"),
        ("/wapi/v1/history/orders", "orderHistoryQueryAll"),
        ("/wapi/v1/capital/deposits", "depositQueryAll"),
        ("/wapi/v1/capital/withdrawals", "withdrawalQueryAll"),
    ];
    const PAGE: usize = 7;
    let run_1 = format!("to={run_1_end_ms}");
    for user in traders {
        let (fills, orders) = &before[&user];
        let (deposits, withdrawals) = &transfers_before[&user];
        let journal = [fills.len(), orders.len(), deposits.len(), withdrawals.len()];
        assert!(journal[0] > PAGE && journal[1] > PAGE, "user {user}: pages of run 1's fills and orders");
        for ((path, instruction), count) in lists.into_iter().zip(journal) {
            let what = format!("user {user} {path}");
            let query = format!("{run_1}&limit=1000");
            let (status, headers, listed) = get_paged(port, user as u8, path, instruction, &query);
            assert_eq!(status, 200, "{what}: {listed}");
            assert_eq!(listed.as_array().unwrap().len(), count, "{what}: every record of run 1");
            assert_eq!(headers, pagination(count, 1000, 0), "{what}: {PAGINATION_HEADERS:?}");
            for offset in [PAGE, count + PAGE] {
                let query = format!("{run_1}&limit={PAGE}&offset={offset}");
                let (status, headers, page) = get_paged(port, user as u8, path, instruction, &query);
                assert_eq!(status, 200, "{what}: {page}");
                let expected = count.saturating_sub(offset).min(PAGE);
                assert_eq!(page.as_array().unwrap().len(), expected, "{what}, offset {offset}");
                assert_eq!(headers, pagination(count, PAGE, offset), "{what}, offset {offset}: {PAGINATION_HEADERS:?}");
            }
        }
        // Nothing matches: 0 records on 0 pages.
        for (path, instruction) in lists {
            let (status, headers, none) = get_paged(port, user as u8, path, instruction, "from=1&to=2&offset=10");
            assert_eq!((status, none), (200, serde_json::json!([])), "user {user} {path}: nothing in 1970");
            assert_eq!(headers, pagination(0, 100, 10), "user {user} {path}: nothing in 1970");
        }
    }

    // The public trade history: every trade of run 1, as the journal holds it (JSON included).
    for (symbol, journal) in &trades_before {
        let served = served_trades(port, symbol);
        for (id, trade) in journal {
            assert_eq!(served.get(id), Some(trade), "{symbol}: trade {id} of run 1 served as journaled");
        }
        // Trade ids are sequential per market: nothing is missing from the store.
        let ids: Vec<u64> = served.keys().copied().collect();
        assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "{symbol}: every trade id, once");
        // The page back from the newest: `offset` skips the most recent ones.
        let newest = *ids.last().unwrap();
        let (status, page) = public(port, "/api/v1/trades/history", &format!("symbol={symbol}&limit=2&offset=1"));
        assert_eq!(status, 200, "{page}");
        let page_ids: Vec<u64> = page.as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect();
        assert!(page_ids.len() == 2 && page_ids[0] + 1 == page_ids[1] && page_ids[1] >= newest - 1, "{page}");
    }
    // Klines aggregated in Postgres: the 1m candles of run 1 equal the journal's; a week and a
    // month hold every trade of run 1 (and those of run 2 so far), opening at run 1's first price.
    for (symbol, (minutes, first_price)) in &klines_before {
        let (status, served) = public(port, "/api/v1/klines", &format!("symbol={symbol}&interval=1m&startTime=0"));
        assert_eq!(status, 200, "{served}");
        let served: BTreeMap<String, &Value> =
            served.as_array().unwrap().iter().map(|k| (k["start"].as_str().unwrap().to_string(), k)).collect();
        let datetime = |seconds: u64| marketdata::interval::format_datetime(seconds, ' ');
        for (start, candle) in minutes {
            let kline = served.get(&datetime(*start)).copied().unwrap_or_else(|| panic!("{symbol}: 1m kline {start}"));
            if *start + 60 <= run_2_start {
                assert_eq!(kline, candle, "{symbol}: 1m kline at {start}");
            } else {
                // The minute run 2 started in: run 1's trades first, perhaps some of run 2's after.
                assert_eq!(kline["open"], candle["open"], "{symbol}: 1m kline at {start} opens with run 1");
                let count = |k: &Value| k["trades"].as_str().unwrap().parse::<u64>().unwrap();
                assert!(count(kline) >= count(candle), "{symbol}: 1m kline at {start} holds run 1's trades");
            }
        }
        let run_1_trades = trades_before[symbol].len() as u64;
        for interval in ["1w", "1month", "3d"] {
            let (status, served) =
                public(port, "/api/v1/klines", &format!("symbol={symbol}&interval={interval}&startTime=0"));
            assert_eq!(status, 200, "{served}");
            let served = served.as_array().unwrap();
            let count: u64 = served.iter().map(|k| k["trades"].as_str().unwrap().parse::<u64>().unwrap()).sum();
            assert!(count >= run_1_trades, "{symbol} {interval}: {count} trades, run 1 had {run_1_trades}");
            assert_eq!(served[0]["open"], first_price.as_str(), "{symbol} {interval}: opens at the first trade");
        }
        let (status, none) =
            public(port, "/api/v1/klines", &format!("symbol={symbol}&interval=1m&startTime=0&endTime=60"));
        assert_eq!((status, none), (200, serde_json::json!([])), "no trade in 1970");
    }
    let symbol = trades_before.keys().next().unwrap();
    for query in [format!("symbol={symbol}&limit=0"), format!("symbol={symbol}&offset=-1"), "symbol=NOPE".into()] {
        let (status, body) = public(port, "/api/v1/trades/history", &query);
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["code"], "INVALID_CLIENT_REQUEST", "{query}: {body}");
    }
    let (status, far) = public(port, "/api/v1/trades/history", &format!("symbol={symbol}&offset={}", u64::MAX));
    assert_eq!((status, far), (200, serde_json::json!([])), "an offset past every trade");

    // Filters on the store: one order's fills, one symbol, the oldest first, a time window.
    let (fills, _) = &seen[&2];
    let order = fills[0]["orderId"].as_str().unwrap();
    let (status, by_order) = get(port, 2, "/wapi/v1/history/fills", "fillHistoryQueryAll", &format!("orderId={order}"));
    assert_eq!(status, 200, "{by_order}");
    let expected: Vec<&Value> = fills.iter().filter(|f| f["orderId"] == order).collect();
    assert_eq!(by_order.as_array().unwrap().iter().collect::<Vec<_>>(), expected, "fills of order {order}");
    let symbol = fills[0]["symbol"].as_str().unwrap();
    let (_, by_symbol) =
        get(port, 2, "/wapi/v1/history/fills", "fillHistoryQueryAll", &format!("symbol={symbol}&limit=1000"));
    let by_symbol = by_symbol.as_array().unwrap();
    assert!(!by_symbol.is_empty() && by_symbol.iter().all(|f| f["symbol"] == symbol), "symbol filter");
    let (_, oldest) = get(port, 2, "/wapi/v1/history/fills", "fillHistoryQueryAll", "limit=3&sortDirection=Asc");
    let oldest: Vec<&Value> = oldest.as_array().unwrap().iter().collect();
    assert_eq!(oldest, fills.iter().rev().take(3).collect::<Vec<_>>(), "oldest first");
    let (_, none) = get(port, 2, "/wapi/v1/history/orders", "orderHistoryQueryAll", "from=1&to=2");
    assert_eq!(none, serde_json::json!([]), "nothing was created in 1970");

    // Deposits from Postgres: every deposit of run 1 (the demo's funding), as the journal holds it.
    for user in traders {
        let deposits = all(port, user as u8, "/wapi/v1/capital/deposits", "depositQueryAll");
        let journal = &transfers_before[&user].0;
        assert!(!journal.is_empty(), "demo user {user} was funded in run 1");
        assert_transfers(&deposits, journal, &format!("user {user} deposits"));
        assert!(deposits.iter().all(|d| d["source"] == "administrator"), "{deposits:?}");
    }
    // A time window and a page in the other direction.
    let (first_id, first) = transfers_before[&2].0.first_key_value().unwrap();
    let (at, ms) = (&first.fields["createdAt"], first.ms);
    let (status, window) =
        get(port, 2, "/wapi/v1/capital/deposits", "depositQueryAll", &format!("from={ms}&to={ms}&sortDirection=Asc"));
    assert_eq!(status, 200, "{window}");
    let window = window.as_array().unwrap();
    assert_eq!(window[0]["id"], *first_id, "the oldest deposit at {at}: {window:?}");
    assert!(window.iter().all(|d| d["createdAt"] == *at), "only deposits made at {at}: {window:?}");

    // Withdrawals: each trader requests one; once the sink has written it, Postgres lists it
    // exactly as the request's answer (the request's details from memory, the rest from Postgres).
    let mut requested = BTreeMap::new();
    for user in traders {
        let request = serde_json::json!({
            "address": format!("addr-{user}"), "blockchain": "Solana", "clientId": format!("w-{user}"),
            "quantity": "1.5", "symbol": "USDC",
        });
        let (status, withdrawal) = post(port, user as u8, "/wapi/v1/capital/withdrawals", "withdraw", &request);
        assert_eq!(status, 200, "{withdrawal}");
        requested.insert(user, withdrawal);
    }
    for user in traders {
        let id = &requested[&user]["id"];
        let deadline = Instant::now() + Duration::from_secs(10);
        let listed = loop {
            let withdrawals = all(port, user as u8, "/wapi/v1/capital/withdrawals", "withdrawalQueryAll");
            if let Some(listed) = withdrawals.iter().find(|w| w["id"] == *id) {
                break listed.clone();
            }
            assert!(Instant::now() < deadline, "user {user}: withdrawal {id} never reached Postgres");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(listed, requested[&user], "user {user}: the withdrawal as its request answered");
    }

    // Outage: Postgres stopped → 503, back → 200.
    if let Ok(ctl) = std::env::var("EXCHANGE_SERVICES_CTL") {
        let control = |action: &str| assert!(Command::new(&ctl).args(["postgres", action]).status().unwrap().success());
        control("stop");
        let (status, body) = get(port, 2, "/wapi/v1/history/fills", "fillHistoryQueryAll", "");
        let (trades_status, trades_body) = public(port, "/api/v1/trades/history", &format!("symbol={symbol}"));
        let (klines_status, klines_body) =
            public(port, "/api/v1/klines", &format!("symbol={symbol}&interval=1h&startTime=0"));
        let capital =
            [("/wapi/v1/capital/deposits", "depositQueryAll"), ("/wapi/v1/capital/withdrawals", "withdrawalQueryAll")]
                .map(|(path, instruction)| (path, get(port, 2, path, instruction, "")));
        control("start");
        for (path, (status, body)) in capital {
            assert_eq!(status, 503, "{path}: {body}");
            assert_eq!(body["code"], "SERVICE_UNAVAILABLE", "{path}: {body}");
        }
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "SERVICE_UNAVAILABLE", "{body}");
        assert_eq!(trades_status, 503, "{trades_body}");
        assert_eq!(trades_body["code"], "SERVICE_UNAVAILABLE", "{trades_body}");
        assert_eq!(klines_status, 503, "{klines_body}");
        assert_eq!(klines_body["code"], "SERVICE_UNAVAILABLE", "{klines_body}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(port, 2, "/wapi/v1/history/fills", "fillHistoryQueryAll", "").0 != 200 {
            assert!(Instant::now() < deadline, "history back after Postgres restarted");
            std::thread::sleep(Duration::from_millis(200));
        }
        // The sink failed while Postgres was down, reconnected, and caught up.
        let metrics = sink_caught_up_in_metrics(port);
        let failures = value(&metrics, "exchange_sink_failures_total{sink=\"postgres\"}").unwrap();
        assert!(failures >= 1.0, "the outage counted as a sink failure: {metrics}");
    }
    stop(&mut server);

    // No user ever saw another user's rows: everything listed is theirs in the journal.
    let after = reference(&config_path, &data);
    for user in traders {
        let (fills, orders) = &seen[&user];
        let (own_fills, own_orders) = &after[&user];
        assert!(fill_keys(fills).is_subset(own_fills), "user {user}: only its own fills");
        assert!(order_ids(orders).is_subset(own_orders), "user {user}: only its own orders");
    }

    // Run 3: another fresh process. Every deposit and withdrawal of runs 1 and 2, as the journal
    // holds them, only the user's own; the withdrawal requests' address, blockchain and client id
    // were kept in run 2's memory only (they are not journaled), so they show as an operator's.
    let transfers_after = journal_transfers(&config_path, &data);
    let journaled = engine::journal::JournalReader::open(&data.join("journal")).unwrap().read_after(0).unwrap();
    let (mut server, port) = start(&config_path, &data, &["--demo-rate", "20"]);
    // Run 2 was killed, perhaps while its sink was still catching up after the outage: wait for
    // this run's sink to have written everything run 2 journaled.
    runtime.block_on(async {
        let queries = sinks::postgres::Queries::connect(&database).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while queries.progress().await.unwrap() < journaled.last_sequence {
            assert!(Instant::now() < deadline, "the sink never caught up with run 2");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    for user in traders {
        let (deposits_journal, withdrawals_journal) = &transfers_after[&user];
        let deposits = all(port, user as u8, "/wapi/v1/capital/deposits", "depositQueryAll");
        let withdrawals = all(port, user as u8, "/wapi/v1/capital/withdrawals", "withdrawalQueryAll");
        assert_transfers(&deposits, deposits_journal, &format!("user {user} deposits after a restart"));
        assert_transfers(&withdrawals, withdrawals_journal, &format!("user {user} withdrawals after a restart"));
        assert!(deposits.len() > transfers_before[&user].0.len(), "user {user}: run 2's funding too");
        // Only the user's own: everything listed up to run 2's end is in its journal lists.
        let last_of_run_2 = |list: &BTreeMap<u64, Transfer>| list.keys().last().copied().unwrap_or(0);
        for (served, journal) in [(&deposits, deposits_journal), (&withdrawals, withdrawals_journal)] {
            for record in served.iter().filter(|r| r["id"].as_u64().unwrap() <= last_of_run_2(journal)) {
                assert!(journal.contains_key(&record["id"].as_u64().unwrap()), "user {user}: {record}");
            }
        }
        let request = &requested[&user];
        let withdrawal = withdrawals.iter().find(|w| w["id"] == request["id"]).unwrap();
        let mut without_details = request.clone();
        without_details["blockchain"] = "Internal".into();
        without_details["toAddress"] = "".into();
        without_details["clientId"] = Value::Null;
        assert_eq!(withdrawal, &without_details, "user {user}: run 2's withdrawal after a restart");
    }
    stop(&mut server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The server's `/metrics` text.
fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of `series` (name and labels, exactly as rendered) in a scrape.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until the Postgres sink's cursor in `/metrics` reaches the engine's last sequence at the
/// first scrape (the demo trades on), and checks the `exchange_sink_*` series; returns the
/// last scrape.
fn sink_caught_up_in_metrics(port: u16) -> String {
    let target = value(&scrape(port), "exchange_last_sequence").expect("exchange_last_sequence");
    assert!(target > 0.0, "the server has executed commands");
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = scrape(port);
        let cursor = value(&metrics, "exchange_sink_cursor{sink=\"postgres\"}").expect("the sink's cursor");
        if cursor >= target {
            break metrics;
        }
        assert!(Instant::now() < deadline, "the sink's cursor {cursor} reached {target}: {metrics}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(value(&metrics, "exchange_sink_connected{sink=\"postgres\"}"), Some(1.0), "{metrics}");
    let lag = value(&metrics, "exchange_sink_lag_commands{sink=\"postgres\"}").expect("the sink's lag");
    assert!(lag >= 0.0, "{metrics}");
    for series in [
        "exchange_sink_commands_total{sink=\"postgres\"}",
        "exchange_sink_replayed_total{sink=\"postgres\"}",
        "exchange_sink_failures_total{sink=\"postgres\"}",
        "exchange_sink_lags_total{sink=\"postgres\"}",
        "exchange_sink_write_seconds_count{sink=\"postgres\"}",
        "exchange_sink_write_seconds_bucket{sink=\"postgres\",le=\"+Inf\"}",
    ] {
        assert!(value(&metrics, series).is_some(), "{series} in {metrics}");
    }
    assert!(value(&metrics, "exchange_sink_write_seconds_count{sink=\"postgres\"}").unwrap() > 0.0, "{metrics}");
    // One HELP and TYPE per family, whatever the number of sinks.
    for family in ["exchange_sink_cursor", "exchange_sink_commands_total", "exchange_sink_write_seconds"] {
        assert_eq!(metrics.matches(&format!("# TYPE {family} ")).count(), 1, "{family}: {metrics}");
        assert_eq!(metrics.matches(&format!("# HELP {family} ")).count(), 1, "{family}: {metrics}");
    }
    metrics
}

/// Stops the server (SIGKILL is fine: its journal was written before every acknowledgement).
fn stop(server: &mut Child) {
    server.kill().unwrap();
    server.wait().unwrap();
}
