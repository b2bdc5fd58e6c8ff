//! Postgres sink throughput: rows per second written by the sink's batched transactions
//! (multi-row `INSERT … SELECT FROM UNNEST`, one transaction per 1000 commands, progress row
//! included), next to a baseline measured in the same run on the same server: the same
//! `order_events` rows inserted one `INSERT` per row (one transaction per 1000 rows).
//!
//! `cargo run --release -p sinks --example postgres_throughput` with `EXCHANGE_TEST_DATABASE_URL`
//! (or `DATABASE_URL`) set, e.g. after `source scripts/services`. `SINKS_BENCH_QUICK=1`: small
//! sizes (the smoke run in scripts/test, a debug build; the database does the work either way).
//! An example rather than a `cargo bench` target so CI does not build sqlx and librdkafka a second
//! time in the release profile.

use codec::*;
use engine::testkit::commands::*;
use engine::{CommandContext, Engine, EngineConfig};
use sinks::postgres::{PostgresSink, Queries, Reference};
use sinks::{CommandEvents, Sink};
use std::time::Instant;

fn stream(count: usize) -> Vec<Command> {
    let mut state = 0x5eed_cafe_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut commands = Vec::new();
    for user in 1..=20 {
        commands.push(deposit(user, 0, 1_000_000_000));
        commands.push(deposit(user, 1, 100_000_000_000));
    }
    for _ in 0..count {
        let user = 1 + next() % 20;
        let side = if next() % 2 == 0 { Side::Bid } else { Side::Ask };
        commands.push(limit(user, 1, side, 990 + next() % 21, 1 + next() % 50, TimeInForce::Gtc, 0));
    }
    commands
}

fn database(url: &str, name: &str, runtime: &tokio::runtime::Runtime) -> String {
    runtime.block_on(async {
        let queries = Queries::connect(url).await.unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(queries.pool()).await;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(queries.pool()).await.unwrap();
    });
    format!("{}/{name}", url.rsplit_once('/').unwrap().0)
}

fn main() {
    let Some(url) = std::env::var("EXCHANGE_TEST_DATABASE_URL").or_else(|_| std::env::var("DATABASE_URL")).ok() else {
        eprintln!("postgres bench skipped: set EXCHANGE_TEST_DATABASE_URL (source scripts/services)");
        return;
    };
    let quick = std::env::var("SINKS_BENCH_QUICK").is_ok();
    let count = if quick { 2_000 } else { 50_000 };
    let config = EngineConfig::sample();
    let mut engine = Engine::new(&config).unwrap();
    let mut log = Vec::new();
    for (i, command) in stream(count).iter().enumerate() {
        let mut events = Vec::new();
        let sequence = i as u64 + 1;
        engine.execute(CommandContext::new(sequence, sequence), command, &mut events);
        log.push(CommandEvents { sequence, events });
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let id = std::process::id();

    // The sink: batched transactions.
    let sink_url = database(&url, &format!("bench_sink_{id}"), &runtime);
    let mut sink = PostgresSink::new(&sink_url, Reference { engine_config: config.clone(), api_keys: vec![] }).unwrap();
    sink.open().unwrap();
    let rows: usize = log.chunks(1_000).map(|chunk| sinks::postgres::rows_of(chunk, &config).unwrap()).sum();
    let started = Instant::now();
    for chunk in log.chunks(1_000) {
        sink.write(chunk).unwrap();
    }
    let batched = started.elapsed();

    // Baseline: one INSERT per order_events row.
    let baseline_url = database(&url, &format!("bench_base_{id}"), &runtime);
    let mut baseline =
        PostgresSink::new(&baseline_url, Reference { engine_config: config.clone(), api_keys: vec![] }).unwrap();
    baseline.open().unwrap();
    let events: Vec<(i64, i32, &'static str, i64, String)> = log
        .iter()
        .flat_map(|c| {
            c.events
                .iter()
                .enumerate()
                .filter(|(_, e)| !matches!(e, Event::BookLevelUpdate(_) | Event::BalanceUpdate(_)))
                .map(|(i, e)| {
                    (
                        c.sequence as i64,
                        i as i32,
                        sinks::json::type_name(e),
                        1i64,
                        sinks::json::event_json(e, i).to_string(),
                    )
                })
        })
        .collect();
    let single = runtime.block_on(async {
        let queries = Queries::connect(&baseline_url).await.unwrap();
        let started = Instant::now();
        for chunk in events.chunks(1_000) {
            let mut tx = queries.pool().begin().await.unwrap();
            for (sequence, index, kind, user, details) in chunk {
                sqlx::query(
                    "INSERT INTO order_events (sequence, event_index, kind, user_id, market_id, order_id,
                         timestamp_ns, details) VALUES ($1, $2, $3, $4, 1, NULL, 0, $5::jsonb)",
                )
                .bind(sequence)
                .bind(index)
                .bind(*kind)
                .bind(user)
                .bind(details)
                .execute(&mut *tx)
                .await
                .unwrap();
            }
            tx.commit().await.unwrap();
        }
        started.elapsed()
    });
    let rate = |rows: usize, elapsed: std::time::Duration| rows as f64 / elapsed.as_secs_f64();
    println!(
        "postgres sink throughput ({count} commands, {} events)",
        log.iter().map(|c| c.events.len()).sum::<usize>()
    );
    println!(
        "  batched sink (UNNEST, 1000 commands/tx, all tables)   {rows:>8} rows in {:>7.3} s  {:>10.0} rows/s",
        batched.as_secs_f64(),
        rate(rows, batched)
    );
    println!(
        "  baseline (one INSERT per row, order_events only)      {:>8} rows in {:>7.3} s  {:>10.0} rows/s",
        events.len(),
        single.as_secs_f64(),
        rate(events.len(), single)
    );
    runtime.block_on(async {
        let queries = Queries::connect(&url).await.unwrap();
        for name in [format!("bench_sink_{id}"), format!("bench_base_{id}")] {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(queries.pool()).await;
        }
    });
}
