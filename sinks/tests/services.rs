//! The sinks against real Postgres, Kafka (tansu) and Redis (started by `scripts/services`):
//! every event type lands in its table/topic, the ledger equals the engine's balances, and
//! outages of the service, restarts of the sink and a ring too small to keep up (so the sink
//! lags and catches up from the journal) neither lose nor duplicate anything.
//!
//! Each test needs its service's URL (`EXCHANGE_TEST_DATABASE_URL`, `EXCHANGE_TEST_KAFKA_BROKERS`,
//! `EXCHANGE_TEST_REDIS_URL`; test-only names so that servers spawned by other tests do not
//! turn their sinks on by inheriting `DATABASE_URL` & co). Without it
//! the test is skipped with a loud message, unless `EXCHANGE_REQUIRE_SERVICES=1` (set by
//! `scripts/test`), in which case it fails. Outages use `EXCHANGE_SERVICES_CTL`.

use codec::*;
use engine::bus::BroadcastRing;
use engine::journal::{Durability, JournalConfig, JournalWriter};
use engine::testkit::commands::*;
use engine::{CommandContext, Engine, EngineConfig};
use sinks::kafka::{KafkaConfig, KafkaSink};
use sinks::postgres::{HistoryFilter, Paged, PostgresSink, Queries, Reference, TransferKind, TransferRow};
use sinks::redis::{RedisConfig, RedisSink};
use sinks::{CommandEvents, Driver, DriverConfig, History, Sink};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The service URL, or `None` (skip) when a developer runs the test without it.
fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("EXCHANGE_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{var} is not set but EXCHANGE_REQUIRE_SERVICES=1: scripts/test must start the services"
            );
            eprintln!("\n!!! SKIPPED: {var} not set. Run `source scripts/services` first (scripts/test does). !!!\n");
            None
        }
    }
}

/// Stops or starts a service through scripts/services-ctl.
fn control(service: &str, action: &str) -> bool {
    let Ok(ctl) = std::env::var("EXCHANGE_SERVICES_CTL") else {
        eprintln!("EXCHANGE_SERVICES_CTL not set: no {service} outage in this run");
        return false;
    };
    let status = std::process::Command::new(ctl).args([service, action]).status().expect("services-ctl runs");
    assert!(status.success(), "services-ctl {service} {action} failed");
    true
}

fn config() -> EngineConfig {
    // Pools beside ETH_USDC (2) and SOL_USDC (3), so the stream has AMM events too.
    let mut config = EngineConfig::sample_with_pools();
    config.limits.orders_per_market_max = 4_096;
    config
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// A command stream producing every event type.
fn stream(seed: u64, count: usize) -> Vec<Command> {
    let mut rng = XorShift(seed);
    let mut commands = Vec::new();
    for user in 1..=6 {
        commands.push(deposit(user, 0, 50_000_000));
        commands.push(deposit(user, 1, 5_000_000_000));
        commands.push(deposit(user, 2, 1_000_000_000));
    }
    // 1 ETH : 2000 USDC into the ETH_USDC pool.
    commands.push(add_liquidity(1, 2, 100_000_000, 2_000_000_000));
    let mut halted = false;
    let mut orders = 1u64;
    for _ in 0..count {
        // Cancels and replaces aim at recent order ids (most older ones are no longer open).
        let recent = rng.range(orders.saturating_sub(40).max(1), orders);
        let user = rng.range(1, 6);
        let side = if rng.next() % 2 == 0 { Side::Bid } else { Side::Ask };
        let kind = rng.next() % 66;
        if kind <= 37 {
            orders += 1;
        }
        commands.push(match kind {
            0..=29 => limit(user, 1, side, rng.range(990, 1010), rng.range(1, 50), TimeInForce::Gtc, rng.range(0, 9)),
            30..=32 => market(user, 1, side, rng.range(1, 20)),
            // By quote quantity, both sides: some complete on their last fill, some run out of book.
            33..=34 if side == Side::Bid => market_buy_quote(user, 1, rng.range(1_000, 30_000)),
            33..=34 => market_sell_quote(user, 1, rng.range(1_000, 30_000)),
            35..=37 => limit(user, 1, side, rng.range(990, 1010), rng.range(1, 50), TimeInForce::Ioc, 0),
            38..=41 => cancel(user, 1, recent),
            42..=50 => replace(user, 1, recent, rng.range(985, 1015), rng.range(0, 60)),
            51..=53 => deposit(user, 1, rng.range(1, 1_000_000)),
            54..=56 => withdraw(user, 1, rng.range(1, 1_000_000)),
            57..=59 => mass_cancel(user, 1, SideFilter::Both),
            60..=62 => swap(user, 2, side, SwapMode::ExactIn, rng.range(10_000, 10_000_000), 0),
            63 => add_liquidity(user, 2, rng.range(100_000, 10_000_000), rng.range(100_000, 100_000_000)),
            64 => remove_liquidity(user, 2, rng.range(1, 1_000_000)),
            // Halts and resumes BTC_USDC in turn (orders in between are rejected).
            _ => {
                halted = !halted;
                market_control(1, halted)
            }
        });
    }
    commands
}

/// A miniature runtime: journal (group commit), engine, egress ring, durable sequence.
struct Venue {
    dir: PathBuf,
    config: EngineConfig,
    engine: Engine,
    journal: JournalWriter,
    ring: Arc<BroadcastRing>,
    durable: Arc<AtomicU64>,
    /// Every command's events, for the expectations.
    log: Vec<CommandEvents>,
}

impl Venue {
    fn new(name: &str, ring_capacity: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("sinks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let journal_config = JournalConfig { durability: Durability::None, segment_bytes_max: 64 << 10 };
        let (journal, _) = JournalWriter::open(&dir.join("journal"), journal_config, 0).unwrap();
        let config = config();
        Self {
            engine: Engine::new(&config).unwrap(),
            config,
            journal,
            ring: BroadcastRing::new(ring_capacity),
            durable: Arc::new(AtomicU64::new(0)),
            log: Vec::new(),
            dir,
        }
    }

    fn history(&self) -> History {
        History {
            engine_config: self.config.clone(),
            journal_dir: self.dir.join("journal"),
            snapshot_dir: self.dir.join("snapshots"),
        }
    }

    fn run(&mut self, commands: &[Command]) {
        for chunk in commands.chunks(16) {
            let mut sequences = Vec::new();
            let mut bytes = [0u8; Command::ENCODED_BYTES_MAX];
            for command in chunk {
                let length = command.encode(&mut bytes).unwrap();
                sequences.push(self.journal.append(7, &bytes[..length]).unwrap());
            }
            self.journal.commit().unwrap();
            let mut events = Vec::new();
            for (command, sequence) in chunk.iter().zip(sequences) {
                events.clear();
                self.engine.execute(CommandContext::new(sequence, 7), command, &mut events);
                self.ring.publish_command(0, &events);
                self.log.push(CommandEvents { sequence, events: events.clone() });
                self.durable.store(sequence, Ordering::Release);
            }
        }
    }

    fn snapshot(&self) {
        let mut bytes = Vec::new();
        let sequence = self.durable.load(Ordering::Acquire);
        self.engine.write_snapshot(sequence, &mut bytes);
        engine::snapshot::write_snapshot_file(&self.dir.join("snapshots"), sequence, &bytes).unwrap();
    }

    fn last(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    fn start(&self, sink: Box<dyn Sink>) -> Driver {
        let config = DriverConfig { batch_commands: 200, ..DriverConfig::default() };
        let floor = Arc::new(AtomicU64::new(0));
        let durable = self.durable.clone();
        let durable = move || durable.load(Ordering::Acquire);
        Driver::start(sink, config, self.history(), self.ring.clone(), durable, floor).unwrap()
    }

    fn events(&self) -> impl Iterator<Item = (u64, usize, &Event)> {
        self.log.iter().flat_map(|c| c.events.iter().enumerate().map(move |(i, e)| (c.sequence, i, e)))
    }
}

impl Drop for Venue {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for(driver: &Driver, sequence: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while driver.stats().cursor.load(Ordering::Acquire) < sequence {
        assert!(Instant::now() < deadline, "{what}: sink stuck at {}", driver.stats().cursor.load(Ordering::Acquire));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh database on the server of `url`, so tests do not share progress rows.
/// Held by every test using Postgres: one of them stops it (an outage) while it runs.
static POSTGRES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fresh_database(url: &str, name: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let database = format!("{name}_{}", std::process::id());
    runtime.block_on(async {
        let queries = Queries::connect(url).await.unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {database}")).execute(queries.pool()).await;
        sqlx::query(&format!("CREATE DATABASE {database}")).execute(queries.pool()).await.unwrap();
    });
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{database}")
}

#[test]
fn postgres_sink_is_exactly_once_through_outages_restarts_and_lag() {
    let Some(url) = service("EXCHANGE_TEST_DATABASE_URL") else { return };
    let _postgres = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let url = fresh_database(&url, "sink_test");
    // A tiny ring: the sink lags and must catch up from the journal.
    let mut venue = Venue::new("postgres", 256);
    let commands = stream(0x5eed_0001, 6_000);
    let reference = || Reference { engine_config: venue_config(), api_keys: vec![(1, [7; 32])] };
    let (first, rest) = commands.split_at(1_500);
    venue.run(first);
    venue.snapshot();
    // The sink starts late: everything so far comes from snapshot-less replay of the journal.
    let driver = venue.start(Box::new(PostgresSink::new(&url, reference()).unwrap()));
    let (second, rest) = rest.split_at(1_500);
    venue.run(second);
    wait_for(&driver, venue.last(), "initial catch-up");
    // Postgres crashes during the stream, and comes back.
    let outage = control("postgres", "stop");
    let (third, rest) = rest.split_at(1_500);
    venue.run(third);
    if outage {
        std::thread::sleep(Duration::from_millis(500));
        control("postgres", "start");
    }
    wait_for(&driver, venue.last(), "after the Postgres outage");
    if outage {
        assert!(driver.stats().failures.load(Ordering::Relaxed) > 0, "the outage was noticed");
    }
    // The sink process "crashes" (aborted without a final write) and a new one resumes.
    venue.snapshot();
    let replayed_before = driver.stats().replayed.load(Ordering::Relaxed);
    driver.abort();
    venue.run(&rest[..750]);
    let driver = venue.start(Box::new(PostgresSink::new(&url, reference()).unwrap()));
    venue.run(&rest[750..]);
    wait_for(&driver, venue.last(), "after the sink restart");
    assert!(replayed_before > 0, "the first sink caught up from the journal");
    assert!(driver.stats().replayed.load(Ordering::Relaxed) > 0, "the restarted sink caught up from the journal");
    driver.shutdown(Duration::from_secs(10));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let queries = Queries::connect(&url).await.unwrap();
        let pool = queries.pool();
        assert_eq!(queries.progress().await.unwrap(), venue.last());
        // Trades: exactly the engine's fills.
        let expected: BTreeSet<(i32, i64)> = venue
            .events()
            .filter_map(|(_, _, e)| match e {
                Event::Fill(f) => Some((f.market_id.get() as i32, f.trade_id.get() as i64)),
                _ => None,
            })
            .collect();
        let rows: Vec<(i32, i64)> =
            sqlx::query_as("SELECT market_id, trade_id FROM trades ORDER BY 1, 2").fetch_all(pool).await.unwrap();
        assert!(expected.len() > 500, "the stream trades");
        assert_eq!(rows.len(), expected.len(), "no trade missing or duplicated");
        assert_eq!(rows.into_iter().collect::<BTreeSet<_>>(), expected);
        // Every lifecycle event, once, with its kind.
        let mut kinds: BTreeMap<String, i64> = BTreeMap::new();
        for (_, _, event) in venue.events() {
            if !matches!(event, Event::BookLevelUpdate(_) | Event::BalanceUpdate(_)) {
                *kinds.entry(sinks::json::type_name(event).to_string()).or_default() += 1;
            }
        }
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT kind, count(*) FROM order_events GROUP BY kind").fetch_all(pool).await.unwrap();
        assert_eq!(rows.into_iter().collect::<BTreeMap<_, _>>(), kinds);
        for kind in [
            "order_accepted",
            "order_rejected",
            "fill",
            "order_canceled",
            "order_expired",
            "order_replaced",
            "mass_cancel_report",
            "market_status_changed",
            "liquidity_added",
            "liquidity_removed",
            "swap_executed",
        ] {
            assert!(kinds.contains_key(kind), "the stream produced no {kind}");
        }
        // Balances and the ledger equal the engine's balances.
        let mut engine_balances = HashMap::new();
        venue.engine.ledger().visit_balances(&mut |user, asset, balance| {
            engine_balances.insert((user.get() as i64, asset.get() as i32), (balance.available, balance.locked));
        });
        let rows: Vec<(i64, i32, String, String)> =
            sqlx::query_as("SELECT user_id, asset_id, available::text, locked::text FROM balances")
                .fetch_all(pool)
                .await
                .unwrap();
        let stored: HashMap<_, _> =
            rows.into_iter().map(|(u, a, av, lk)| ((u, a), (av.parse().unwrap(), lk.parse().unwrap()))).collect();
        let nonzero: HashMap<_, _> =
            engine_balances.iter().filter(|(_, v)| **v != (0, 0)).map(|(k, v)| (*k, *v)).collect();
        let stored_nonzero: HashMap<_, _> =
            stored.iter().filter(|(_, v)| **v != (0u64, 0u64)).map(|(k, v)| (*k, *v)).collect();
        assert_eq!(stored_nonzero, nonzero, "materialized balances");
        let ledger: Vec<(String, i32, String)> = sqlx::query_as(
            "SELECT account, asset_id, sum(amount)::text FROM (
                 SELECT credit_account AS account, asset_id, amount FROM ledger_entries
                 UNION ALL SELECT debit_account, asset_id, -amount FROM ledger_entries) e
             GROUP BY account, asset_id",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let mut per_asset_total: HashMap<i32, i128> = HashMap::new();
        let mut checked = 0;
        for (account, asset, sum) in ledger {
            let sum: i128 = sum.parse().unwrap();
            *per_asset_total.entry(asset).or_default() += sum;
            let parts: Vec<&str> = account.split(':').collect();
            match parts.as_slice() {
                ["user", user, bucket] => {
                    let (available, locked) =
                        engine_balances.get(&(user.parse().unwrap(), asset)).copied().unwrap_or((0, 0));
                    let want = if *bucket == "available" { available } else { locked };
                    assert_eq!(sum, i128::from(want), "ledger {account} asset {asset}");
                    checked += 1;
                }
                ["fees"] => {
                    let fees = venue.engine.ledger().fees_collected(AssetId::new(asset as u32));
                    assert_eq!(sum, i128::from(fees), "fees asset {asset}");
                }
                ["clearing"] => assert_eq!(sum, 0, "clearing nets to zero"),
                ["pools"] => {
                    let pooled = venue.engine.ledger().pooled(AssetId::new(asset as u32));
                    assert_eq!(sum, i128::from(pooled), "pool reserves asset {asset}");
                }
                ["external"] => {
                    let (deposits, withdrawals) = venue.engine.ledger().flows(AssetId::new(asset as u32));
                    assert_eq!(-sum, deposits as i128 - withdrawals as i128, "external asset {asset}");
                }
                _ => panic!("unknown account {account}"),
            }
        }
        assert!(checked >= 12, "user accounts checked: {checked}");
        assert!(per_asset_total.values().all(|t| *t == 0), "double entry: every asset sums to zero");
        // Every ledger entry carries its command's time (the venue runs every command at 7 ns).
        let untimed: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_entries WHERE timestamp_ns <> 7")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(untimed, 0, "ledger entries without their command's time");
        // Deposits and withdrawals, from the ledger: per user exactly the engine's, with the ids,
        // amounts (the change of available) and times the REST API's in-memory history records.
        let mut available: HashMap<(u64, u32), u64> = HashMap::new();
        let mut transfers: BTreeMap<(u64, bool), Vec<TransferRow>> = BTreeMap::new();
        for (_, _, event) in venue.events() {
            let Event::BalanceUpdate(b) = event else { continue };
            let key = (b.user_id.get(), b.asset_id.get());
            let before = available.insert(key, b.available.get()).unwrap_or(0);
            let (deposit, amount) = match b.reason.get() {
                Ok(BalanceChange::Deposit) => (true, b.available.get() - before),
                Ok(BalanceChange::Withdrawal) => (false, before - b.available.get()),
                _ => continue,
            };
            let row =
                TransferRow { sequence: b.sequence.get(), asset_id: key.1, amount, timestamp_ns: b.timestamp_ns.get() };
            transfers.entry((key.0, deposit)).or_default().push(row);
        }
        let all = HistoryFilter {
            market_id: None,
            order_id: None,
            from_ns: 0,
            to_ns: u64::MAX,
            ascending: false,
            limit: 100_000,
            offset: 0,
        };
        for user in 1..=6 {
            for (deposit, kind) in [(true, TransferKind::Deposit), (false, TransferKind::Withdrawal)] {
                let mut expected = transfers.get(&(user, deposit)).cloned().unwrap_or_default();
                assert!(expected.len() > 3, "user {user} {kind:?}s in the stream: {}", expected.len());
                let count = expected.len() as u64;
                let oldest_first = queries.transfers(user, kind, &HistoryFilter { ascending: true, ..all }).await;
                let paged = |rows: &[TransferRow], total| Paged { rows: rows.to_vec(), total };
                assert_eq!(oldest_first.unwrap(), paged(&expected, count), "user {user} {kind:?}s, oldest first");
                // A page, and a page past the end, carry the count of every matching transfer.
                let page = HistoryFilter { ascending: true, limit: 3, offset: 2, ..all };
                assert_eq!(
                    queries.transfers(user, kind, &page).await.unwrap(),
                    paged(&expected[2..5], count),
                    "a page"
                );
                let beyond = HistoryFilter { limit: 3, offset: count as u32 + 2, ..all };
                assert_eq!(queries.transfers(user, kind, &beyond).await.unwrap(), paged(&[], count), "past the end");
                expected.reverse();
                assert_eq!(queries.transfers(user, kind, &all).await.unwrap(), paged(&expected, count), "newest first");
                let later = HistoryFilter { from_ns: expected[0].timestamp_ns + 1, ..all };
                assert_eq!(queries.transfers(user, kind, &later).await.unwrap(), paged(&[], 0), "after the last one");
                let later_beyond = HistoryFilter { offset: 5, ..later };
                assert_eq!(queries.transfers(user, kind, &later_beyond).await.unwrap(), paged(&[], 0), "none at all");
            }
        }
        let by_market = HistoryFilter { market_id: Some(1), ..all };
        assert!(queries.transfers(1, TransferKind::Deposit, &by_market).await.is_err(), "no market to filter on");
        // The history API.
        let fills = queries.fills(1, Some(1), None, 10).await.unwrap();
        assert_eq!(fills.len(), 10);
        assert!(fills.windows(2).all(|w| w[0].sequence >= w[1].sequence), "newest first");
        let orders = queries.orders(1, None, None, 5).await.unwrap();
        assert_eq!(orders.len(), 5);
        // Orders that ended in an expiry keep its reason (the engine's code); a quote-quantity
        // market order that completed on its last fill is filled, with no reason.
        let mut expected: BTreeMap<i64, (String, Option<i16>)> = BTreeMap::new();
        let mut by_quote = BTreeSet::new();
        for (_, _, event) in venue.events() {
            match event {
                Event::OrderAccepted(a) if a.quote_quantity.get() > 0 => {
                    by_quote.insert(a.order_id.get() as i64);
                }
                Event::OrderExpired(x) => {
                    expected.insert(x.order_id.get() as i64, ("expired".into(), Some(x.reason.raw() as i16)));
                }
                Event::Fill(f) if f.completes_taker() && by_quote.contains(&(f.taker_order_id.get() as i64)) => {
                    expected.insert(f.taker_order_id.get() as i64, ("filled".into(), None));
                }
                _ => {}
            }
        }
        let completed = expected.iter().filter(|(id, (status, _))| by_quote.contains(id) && status == "filled").count();
        let expired_by_quote = expected.iter().filter(|(id, (status, _))| by_quote.contains(id) && status == "expired");
        assert!(completed > 10 && expired_by_quote.count() > 0, "quote-quantity orders of both endings in the stream");
        let rows: Vec<(i64, String, Option<i16>)> = sqlx::query_as(
            "SELECT order_id, status, expire_reason FROM orders WHERE status = 'expired' OR order_id = ANY($1)",
        )
        .bind(by_quote.iter().copied().collect::<Vec<i64>>())
        .fetch_all(pool)
        .await
        .unwrap();
        let stored: BTreeMap<i64, (String, Option<i16>)> =
            rows.into_iter().map(|(id, status, reason)| (id, (status, reason))).collect();
        for (id, ending) in &expected {
            assert_eq!(stored.get(id), Some(ending), "order {id}");
        }
        let history = queries.order_history(1, &all).await.unwrap();
        assert_eq!(history.total, history.rows.len() as u64, "every order of user 1 in one page, counted");
        let history = history.rows;
        assert!(history.iter().any(|o| o.status == "expired" && o.expire_reason.is_some()), "reasons in the history");
        assert!(history.iter().all(|o| (o.status == "expired") == o.expire_reason.is_some()));
        // Pages of orders and fills carry the count of every match, a page past the end too.
        let orders_total = history.len() as u64;
        let page = HistoryFilter { limit: 3, offset: 2, ..all };
        let orders_page = queries.order_history(1, &page).await.unwrap();
        assert_eq!(orders_page, Paged { rows: history[2..5].to_vec(), total: orders_total }, "a page of orders");
        let beyond = HistoryFilter { limit: 3, offset: orders_total as u32, ..all };
        let orders_beyond = queries.order_history(1, &beyond).await.unwrap();
        assert_eq!(orders_beyond, Paged { rows: vec![], total: orders_total }, "orders past the end");
        let all_fills = queries.fill_history(1, &all).await.unwrap();
        let fills_total = all_fills.rows.len() as u64;
        assert!(
            fills_total > 5 && all_fills.total == fills_total,
            "{} fills, counted {}",
            fills_total,
            all_fills.total
        );
        let fills_page = queries.fill_history(1, &page).await.unwrap();
        assert_eq!(fills_page, Paged { rows: all_fills.rows[2..5].to_vec(), total: fills_total }, "a page of fills");
        let market_1 = HistoryFilter { market_id: Some(1), ..all };
        let on_market_1 = all_fills.rows.iter().filter(|f| f.market_id == 1).count() as u64;
        let fills_beyond = queries.fill_history(1, &HistoryFilter { offset: 100_000, ..market_1 }).await.unwrap();
        assert_eq!(fills_beyond, Paged { rows: vec![], total: on_market_1 }, "fills of market 1 past the end");
        let balances = queries.balances(1).await.unwrap();
        assert!(!balances.is_empty());
    });
}

/// `EXPLAIN` of `sql` with its parameters (`account` first when given), as one text; sequential
/// scans allowed or ruled out.
async fn explain(
    connection: &mut sqlx::PgConnection,
    sql: &str,
    account: Option<&str>,
    bind: &[i64],
    seqscan: bool,
) -> String {
    sqlx::query(&format!("SET enable_seqscan = {seqscan}")).execute(&mut *connection).await.unwrap();
    let explain = format!("EXPLAIN {sql}");
    let mut query = sqlx::query_scalar::<_, String>(&explain);
    if let Some(account) = account {
        query = query.bind(account.to_string());
    }
    for value in bind {
        query = query.bind(*value);
    }
    query.fetch_all(&mut *connection).await.unwrap().join("\n")
}

/// The planner reads the indexes the history queries were given (migrations/20261125*): the
/// klines query a market's trades by time (`trades_by_market_time`), on its own for a recent range
/// of a large table and whenever sequential scans are ruled out; the deposit and withdrawal lists
/// their partial ledger indexes.
#[test]
fn history_queries_use_their_indexes() {
    use sinks::postgres::{KlineBuckets, klines_sql, transfers_sql};
    let Some(url) = service("EXCHANGE_TEST_DATABASE_URL") else { return };
    let _postgres = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let url = fresh_database(&url, "index_test");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let queries = Queries::connect(&url).await.unwrap();
        let pool = queries.pool();
        sinks::postgres::migrator().run(pool).await.unwrap();
        // 200,000 trades, one a second, on 4 markets in turn.
        const START_S: i64 = 1_764_000_000;
        sqlx::query(
            "INSERT INTO trades SELECT i % 4 + 1, i, i, ($1 + i) * 1000000000, 1000 + i % 7, 1, 1000, 1 + i % 2,
                 1, i, 0, 2, i, 0
             FROM generate_series(1, 200000) i",
        )
        .bind(START_S)
        .execute(pool)
        .await
        .unwrap();
        // 60,000 credits to the available accounts of 100 users, a quarter of them deposits.
        sqlx::query(
            "INSERT INTO ledger_entries SELECT i, 0, 1, CASE WHEN i % 4 = 0 THEN 'external' ELSE 'clearing' END,
                 'user:' || (i % 100) || ':available', 5, CASE WHEN i % 4 = 0 THEN 1 ELSE 5 END, i
             FROM generate_series(1, 60000) i",
        )
        .execute(pool)
        .await
        .unwrap();
        sqlx::query("ANALYZE").execute(pool).await.unwrap();
        let mut connection = pool.acquire().await.unwrap();

        // The last hours of market 1 (900 of its 50,000 trades an hour), every bucket shape: the
        // planner picks the index by itself. (Over every trade of the market it rightly prefers
        // the primary key's `market_id` prefix or a sequential scan: nothing to skip.)
        let end_s = START_S + 200_000;
        for (buckets, hours) in [(KlineBuckets::Seconds(60), 1), (KlineBuckets::Week, 3), (KlineBuckets::Month, 3)] {
            let from_ns = (end_s - hours * 3_600) * 1_000_000_000;
            let trades_before_ns = (end_s + buckets.longest_s() as i64) * 1_000_000_000;
            let recent = [1, from_ns, end_s, 1_000, trades_before_ns];
            let plan = explain(&mut connection, &klines_sql(buckets), None, &recent, true).await;
            eprintln!("klines {buckets:?}, the last {hours} h of market 1 (200,000 trades in the table):\n{plan}");
            assert!(plan.contains("trades_by_market_time"), "{buckets:?}: a recent range reads the index:\n{plan}");
        }

        // A user's deposits (600 among 60,000 entries), and withdrawals (none here: sequential
        // scans ruled out to show the index can serve the query).
        let page = [0, i64::MAX, 100, 0];
        let deposits = transfers_sql(TransferKind::Deposit, false);
        let plan = explain(&mut connection, &deposits, Some("user:8:available"), &page, true).await;
        eprintln!("deposits of one user (60,000 ledger entries in the table):\n{plan}");
        assert!(plan.contains("ledger_deposits"), "deposits:\n{plan}");
        let withdrawals = transfers_sql(TransferKind::Withdrawal, true);
        let plan = explain(&mut connection, &withdrawals, Some("user:8:available"), &page, false).await;
        assert!(plan.contains("ledger_withdrawals"), "withdrawals:\n{plan}");
    });
}

fn venue_config() -> EngineConfig {
    config()
}

#[test]
fn kafka_sink_is_exactly_once_through_outages_and_restarts() {
    let Some(brokers) = service("EXCHANGE_TEST_KAFKA_BROKERS") else { return };
    let mut kafka = KafkaConfig::new(&brokers);
    let prefix = format!("t{}-", std::process::id());
    kafka.orders_topic = format!("{prefix}orders");
    kafka.trades_topic = format!("{prefix}trades");
    kafka.balances_topic = format!("{prefix}balance-events");
    kafka.book_topic = format!("{prefix}book-updates");
    kafka.pools_topic = format!("{prefix}amm-events");
    let mut venue = Venue::new("kafka", 512);
    let commands = stream(0x5eed_0002, 3_000);
    let (first, rest) = commands.split_at(800);
    venue.run(first);
    let driver = venue.start(Box::new(KafkaSink::new(kafka.clone()).unwrap()));
    let (second, rest) = rest.split_at(800);
    venue.run(second);
    wait_for(&driver, venue.last(), "initial catch-up");
    // The broker freezes during the stream.
    let outage = control("kafka", "stop");
    let (third, rest) = rest.split_at(800);
    venue.run(third);
    if outage {
        std::thread::sleep(Duration::from_secs(2));
        control("kafka", "start");
    }
    wait_for(&driver, venue.last(), "after the broker outage");
    // The sink crashes and a new one resumes from what the partitions hold.
    driver.abort();
    venue.run(&rest[..300]);
    let driver = venue.start(Box::new(KafkaSink::new(kafka.clone()).unwrap()));
    venue.run(&rest[300..]);
    wait_for(&driver, venue.last(), "after the sink restart");
    driver.shutdown(Duration::from_secs(10));

    // Read every topic back from the beginning.
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("{prefix}check"))
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("fetch.wait.max.ms", "50")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for topic in
        [&kafka.orders_topic, &kafka.trades_topic, &kafka.balances_topic, &kafka.book_topic, &kafka.pools_topic]
    {
        for partition in 0..kafka.partitions {
            assignment.add_partition_offset(topic, partition, rdkafka::Offset::Beginning).unwrap();
        }
    }
    consumer.assign(&assignment).unwrap();
    let expected: BTreeMap<(u64, u32), String> = venue
        .events()
        .map(|(sequence, index, event)| {
            let topic = match event {
                Event::Fill(_) => &kafka.trades_topic,
                Event::BalanceUpdate(_) => &kafka.balances_topic,
                Event::BookLevelUpdate(_) => &kafka.book_topic,
                Event::LiquidityAdded(_)
                | Event::LiquidityRemoved(_)
                | Event::SwapExecuted(_)
                | Event::OrderRouted(_) => &kafka.pools_topic,
                _ => &kafka.orders_topic,
            };
            ((sequence, index as u32), topic.clone())
        })
        .collect();
    let mut seen: BTreeMap<(u64, u32), String> = BTreeMap::new();
    let mut duplicates = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < expected.len() && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            let position = sinks::kafka::position_of(message.headers()).expect("sequence headers");
            let payload: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
            assert_eq!(payload["sequence"].as_u64(), Some(position.0));
            if seen.insert(position, message.topic().to_string()).is_some() {
                duplicates += 1;
                if duplicates < 10 {
                    eprintln!(
                        "duplicate {position:?} in {} partition {} offset {}",
                        message.topic(),
                        message.partition(),
                        message.offset()
                    );
                }
            }
        }
    }
    // Drain a little longer: a duplicate would arrive after the last expected message.
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let position = sinks::kafka::position_of(message.headers()).expect("sequence headers");
            if seen.insert(position, message.topic().to_string()).is_some() {
                duplicates += 1;
            }
        }
    }
    assert_eq!(duplicates, 0, "no event written twice");
    assert_eq!(seen.len(), expected.len(), "no event missing");
    assert_eq!(seen, expected, "every event in its topic");
}

#[test]
fn redis_snapshot_equals_the_engine_book_through_outages() {
    let Some(url) = service("EXCHANGE_TEST_REDIS_URL") else { return };
    let mut redis_config = RedisConfig::new(&url);
    redis_config.prefix = format!("t{}:", std::process::id());
    redis_config.interval = Duration::from_millis(100);
    redis_config.depth = 1_000;
    let mut venue = Venue::new("redis", 512);
    let commands = stream(0x5eed_0003, 3_000);
    let (first, rest) = commands.split_at(1_000);
    venue.run(first);
    venue.snapshot();
    let driver = venue.start(Box::new(RedisSink::new(redis_config.clone(), venue_config())));
    let (second, rest) = rest.split_at(1_000);
    venue.run(second);
    wait_for(&driver, venue.last(), "initial seed");
    // Redis dies (losing everything) during the stream and comes back empty.
    let outage = control("redis", "stop");
    venue.run(&rest[..500]);
    if outage {
        std::thread::sleep(Duration::from_millis(300));
        control("redis", "start");
    }
    venue.run(&rest[500..]);
    wait_for(&driver, venue.last(), "after the Redis outage");
    if outage {
        assert!(driver.stats().failures.load(Ordering::Relaxed) > 0, "the outage was noticed");
    }
    driver.shutdown(Duration::from_secs(10));
    // The final snapshot (written at shutdown) equals the engine's book at its sequence.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let (sequence, bids, asks) = sinks::redis::read_book(&mut connection, &redis_config.prefix, "BTC_USDC").unwrap();
    assert_eq!(sequence, venue.last());
    let book = venue.engine.book(MarketId::new(1)).unwrap();
    let mut engine_bids = Vec::new();
    engine::Book::visit_levels(book, Side::Bid, &mut |l| {
        engine_bids.push((l.price.get(), l.total_lots, l.order_count));
        true
    });
    let mut engine_asks = Vec::new();
    engine::Book::visit_levels(book, Side::Ask, &mut |l| {
        engine_asks.push((l.price.get(), l.total_lots, l.order_count));
        true
    });
    assert!(!engine_bids.is_empty() && !engine_asks.is_empty());
    assert_eq!(bids, engine_bids, "bids at sequence {sequence}");
    assert_eq!(asks, engine_asks, "asks at sequence {sequence}");
    let stored: u64 = redis::cmd("GET").arg(format!("{}sequence", redis_config.prefix)).query(&mut connection).unwrap();
    assert_eq!(stored, sequence);
}

/// Attached stop-loss / take-profit children in the `orders` table, written one command per
/// transaction (as the live sink does) and all in one (as a catch-up replay does): the parent
/// row carries its attached prices; each child gets a `trigger_pending` row when the first fill
/// creates it, and stays `trigger_pending` when the second fill grows it (an `OrderReplaced`,
/// which for an ordinary order means `new`) with its quantity grown; when the take-profit fires
/// it fills and the stop-loss is cancelled. Both ways end in the same rows, one per order.
#[test]
fn attached_children_stay_pending_while_they_grow_and_replay_to_the_same_rows() {
    let Some(url) = service("EXCHANGE_TEST_DATABASE_URL") else { return };
    let _postgres = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let config = config();
    let mut engine = Engine::new(&config).unwrap();
    let mut commands = Vec::new();
    for user in 1..=3 {
        commands.push(deposit(user, 0, 1_000_000_000));
        commands.push(deposit(user, 1, 1_000_000_000_000));
    }
    commands.extend([
        // A trade at 60,000: the reference price.
        gtc(2, 1, Side::Ask, 600_000, 10),
        limit(3, 1, Side::Bid, 600_000, 10, TimeInForce::Ioc, 0),
        // The parent: a bid with a market stop-loss at 59,000 and a take-profit at 62,000
        // (limit 61,900); two fills of 10 lots create, then grow, its children.
        with_attached(gtc(1, 1, Side::Bid, 600_000, 30), 590_000, 0, 620_000, 619_000),
        limit(2, 1, Side::Ask, 600_000, 10, TimeInForce::Ioc, 0),
        limit(2, 1, Side::Ask, 600_000, 10, TimeInForce::Ioc, 0),
    ]);
    let grown_at = commands.len();
    commands.extend([
        // A bid for the take-profit to sell into, then a trade at 62,000 fires it.
        gtc(3, 1, Side::Bid, 619_000, 20),
        gtc(2, 1, Side::Ask, 620_000, 10),
        limit(3, 1, Side::Bid, 620_000, 10, TimeInForce::Ioc, 0),
    ]);
    let batches: Vec<CommandEvents> = commands
        .iter()
        .enumerate()
        .map(|(index, command)| {
            let sequence = index as u64 + 1;
            let mut events = Vec::new();
            engine.execute(CommandContext::new(sequence, sequence), command, &mut events);
            assert!(!events.iter().any(|e| matches!(e, Event::OrderRejected(_))), "{command:?}: {events:?}");
            CommandEvents { sequence, events }
        })
        .collect();
    let reference = || Reference { engine_config: config.clone(), api_keys: vec![] };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    type OrderRow = (
        i64,
        String,
        String,
        Option<String>,
        Option<i16>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows = |database: &str| -> Vec<OrderRow> {
        runtime.block_on(async {
            let queries = Queries::connect(database).await.unwrap();
            sqlx::query_as(
                "SELECT order_id, status, quantity_lots::text, trigger_price_ticks::text, trigger_kind,
                     stop_loss_trigger_ticks::text, stop_loss_limit_ticks::text, take_profit_trigger_ticks::text,
                     take_profit_limit_ticks::text
                 FROM orders WHERE user_id = 1 ORDER BY order_id",
            )
            .fetch_all(queries.pool())
            .await
            .unwrap()
        })
    };
    let text = |value: &str| Some(value.to_string());

    // Live: one transaction per command.
    let live = fresh_database(&url, "sink_attached_live");
    let mut sink = PostgresSink::new(&live, reference()).unwrap();
    sink.open().unwrap();
    for batch in &batches[..grown_at] {
        sink.write(std::slice::from_ref(batch)).unwrap();
    }
    let grown = rows(&live);
    assert_eq!(grown.len(), 3, "the parent and its two children: {grown:?}");
    let (parent, stop_loss, take_profit) = (&grown[0], &grown[1], &grown[2]);
    assert_eq!(
        (parent.1.as_str(), parent.3.clone(), parent.5.clone(), parent.6.clone(), parent.7.clone(), parent.8.clone()),
        ("partially_filled", None, text("590000"), None, text("620000"), text("619000")),
        "{parent:?}"
    );
    for (child, trigger, kind) in [(stop_loss, "590000", 1), (take_profit, "620000", 2)] {
        assert_eq!(
            (child.1.as_str(), child.2.as_str(), child.3.clone(), child.4),
            ("trigger_pending", "20", text(trigger), Some(kind)),
            "a grown child is still pending: {child:?}"
        );
    }
    for batch in &batches[grown_at..] {
        sink.write(std::slice::from_ref(batch)).unwrap();
    }
    let done = rows(&live);
    let statuses: Vec<&str> = done.iter().map(|row| row.1.as_str()).collect();
    assert_eq!(statuses, ["partially_filled", "canceled", "filled"], "{done:?}");

    // Replay: every command in one transaction.
    let replayed = fresh_database(&url, "sink_attached_replay");
    let mut sink = PostgresSink::new(&replayed, reference()).unwrap();
    sink.open().unwrap();
    sink.write(&batches).unwrap();
    assert_eq!(rows(&replayed), done);
}
