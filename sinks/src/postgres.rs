//! The Postgres sink: orders, order events, trades, a double-entry ledger and materialized
//! balances, written in batched transactions with the sink's progress in the same transaction.
//!
//! Schema: `migrations/` (applied at start with sqlx's migrator; `sqlx migrate run` applies the
//! same files). Each [`Sink::write`] is one transaction:
//!
//! 1. `SELECT last_sequence FROM sink_progress WHERE sink = 'postgres' FOR UPDATE` (locks out a
//!    second writer; a mismatch with the sink's own cursor aborts and reconnects);
//! 2. multi-row `INSERT … SELECT FROM UNNEST($1::bigint[], …)` per table, one statement each;
//! 3. `UPDATE sink_progress SET last_sequence = <last command of the batch>`; `COMMIT`.
//!
//! A crash anywhere before the commit leaves neither rows nor progress; after it, both. The
//! cursor read back at start is therefore exactly what the tables hold, and the driver feeds
//! the sink the next command: exactly once. Inserts also carry `ON CONFLICT DO NOTHING` on
//! their natural keys (sequence + event index, market + trade id) as a second line of defence.
//!
//! [`Queries`] reads the history back (fills, orders, deposits, withdrawals and balances of a
//! user; a market's trades and klines) for the REST API.

use crate::{CommandEvents, Resume, Sink, SinkError};
use codec::{BalanceChange, Event, WireEnum};
use engine::EngineConfig;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, PgPool, Row};
use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;

/// The files of `migrations/`: version, description, SQL. Append new files here, in version
/// order; never edit one a database may have run (sqlx checks their checksums).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (20261124000001, "init", include_str!("../../migrations/20261124000001_init.sql")),
    (20261125000001, "trades by time", include_str!("../../migrations/20261125000001_trades_by_time.sql")),
    (20261125000002, "ledger entry time", include_str!("../../migrations/20261125000002_ledger_entry_time.sql")),
    (20261125000003, "user directory", include_str!("../../migrations/20261125000003_user_directory.sql")),
    (20261126000001, "order expiry reason", include_str!("../../migrations/20261126000001_order_expiry_reason.sql")),
    (20261207000001, "trigger orders", include_str!("../../migrations/20261207000001_trigger_orders.sql")),
];

/// The schema migrations, embedded (the same files `sqlx migrate run` applies).
pub fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(*version, Cow::Borrowed(*description), MigrationType::Simple, Cow::Borrowed(*sql), false)
        })
        .collect();
    Migrator { migrations: Cow::Owned(migrations), ignore_missing: false, locking: true, no_tx: false }
}

/// Name of this sink's row in `sink_progress`.
const SINK: &str = "postgres";

/// Reference data written at every start.
#[derive(Debug, Clone)]
pub struct Reference {
    /// Assets and markets.
    pub engine_config: EngineConfig,
    /// API keys: (user, Ed25519 public key).
    pub api_keys: Vec<(u64, [u8; 32])>,
}

/// The Postgres sink.
pub struct PostgresSink {
    url: String,
    reference: Reference,
    runtime: tokio::runtime::Runtime,
    connection: Option<PgConnection>,
    /// Balances as of `cursor` (what the `balances` table holds).
    balances: HashMap<(u64, u32), (u64, u64)>,
    cursor: u64,
    quote_of_market: HashMap<u32, u32>,
}

impl PostgresSink {
    /// A sink for `url` (`postgres://user@host:port/db`); connects on [`Sink::open`].
    ///
    /// # Errors
    /// The tokio runtime cannot be created.
    pub fn new(url: &str, reference: Reference) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let quote_of_market = reference.engine_config.markets.iter().map(|m| (m.id.get(), m.quote.get())).collect();
        Ok(Self {
            url: url.to_string(),
            reference,
            runtime,
            connection: None,
            balances: HashMap::new(),
            cursor: 0,
            quote_of_market,
        })
    }
}

fn db(error: impl std::fmt::Display) -> SinkError {
    SinkError::Service(format!("postgres: {error}"))
}

fn signed(value: u64) -> Result<i64, SinkError> {
    i64::try_from(value).map_err(|_| SinkError::Service(format!("postgres: id {value} exceeds BIGINT")))
}

impl Sink for PostgresSink {
    fn name(&self) -> &'static str {
        SINK
    }

    fn open(&mut self) -> Result<Resume, SinkError> {
        self.connection = None;
        let options = PgConnectOptions::from_str(&self.url).map_err(db)?;
        let reference = self.reference.clone();
        let (connection, cursor, balances) = self.runtime.block_on(async move {
            let mut connection = PgConnection::connect_with(&options).await.map_err(db)?;
            migrator().run_direct(&mut connection).await.map_err(db)?;
            write_reference(&mut connection, &reference).await?;
            sqlx::query("INSERT INTO sink_progress (sink, last_sequence) VALUES ($1, 0) ON CONFLICT DO NOTHING")
                .bind(SINK)
                .execute(&mut connection)
                .await
                .map_err(db)?;
            let cursor: i64 = sqlx::query_scalar("SELECT last_sequence FROM sink_progress WHERE sink = $1")
                .bind(SINK)
                .fetch_one(&mut connection)
                .await
                .map_err(db)?;
            let rows = sqlx::query("SELECT user_id, asset_id, available::text, locked::text FROM balances")
                .fetch_all(&mut connection)
                .await
                .map_err(db)?;
            let mut balances = HashMap::with_capacity(rows.len());
            for row in rows {
                let user: i64 = row.get(0);
                let asset: i32 = row.get(1);
                let available: String = row.get(2);
                let locked: String = row.get(3);
                balances.insert((user as u64, asset as u32), (parse(&available)?, parse(&locked)?));
            }
            Ok::<_, SinkError>((connection, cursor as u64, balances))
        })?;
        self.connection = Some(connection);
        self.cursor = cursor;
        self.balances = balances;
        Ok(Resume::After(cursor))
    }

    fn write(&mut self, commands: &[CommandEvents]) -> Result<(), SinkError> {
        let Some(last) = commands.last().map(|c| c.sequence) else { return Ok(()) };
        let mut rows = Rows::build(commands, &self.balances, &self.quote_of_market)?;
        let connection = self.connection.as_mut().ok_or_else(|| db("not connected"))?;
        let expected = self.cursor;
        let result = self.runtime.block_on(rows.apply(connection, expected, last));
        if let Err(error) = result {
            // The transaction rolled back; the connection may be gone: reconnect on open().
            self.connection = None;
            return Err(error);
        }
        self.balances.extend(rows.balances.drain());
        self.cursor = last;
        Ok(())
    }
}

fn parse(text: &str) -> Result<u64, SinkError> {
    text.parse().map_err(|_| db(format!("not a u64 amount: {text}")))
}

async fn write_reference(connection: &mut PgConnection, reference: &Reference) -> Result<(), SinkError> {
    let mut tx = connection.begin().await.map_err(db)?;
    for asset in &reference.engine_config.assets {
        sqlx::query(
            "INSERT INTO assets (asset_id, symbol, decimals) VALUES ($1, $2, $3)
             ON CONFLICT (asset_id) DO UPDATE SET symbol = EXCLUDED.symbol, decimals = EXCLUDED.decimals",
        )
        .bind(asset.id.get() as i32)
        .bind(&asset.symbol)
        .bind(i16::from(asset.decimals))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    for market in &reference.engine_config.markets {
        sqlx::query(
            "INSERT INTO markets (market_id, symbol, base_asset_id, quote_asset_id, tick_size, lot_size,
                                  maker_fee_ppm, taker_fee_ppm)
             VALUES ($1, $2, $3, $4, $5::numeric, $6::numeric, $7, $8)
             ON CONFLICT (market_id) DO UPDATE SET symbol = EXCLUDED.symbol, tick_size = EXCLUDED.tick_size,
                 lot_size = EXCLUDED.lot_size, maker_fee_ppm = EXCLUDED.maker_fee_ppm,
                 taker_fee_ppm = EXCLUDED.taker_fee_ppm",
        )
        .bind(market.id.get() as i32)
        .bind(&market.symbol)
        .bind(market.base.get() as i32)
        .bind(market.quote.get() as i32)
        .bind(market.tick_size.to_string())
        .bind(market.lot_size.to_string())
        .bind(market.maker_fee_ppm as i32)
        .bind(market.taker_fee_ppm as i32)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    for (user, key) in &reference.api_keys {
        sqlx::query("INSERT INTO users (user_id, first_sequence) VALUES ($1, 0) ON CONFLICT DO NOTHING")
            .bind(signed(*user)?)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO api_keys (public_key, user_id) VALUES ($1, $2)
             ON CONFLICT (public_key) DO UPDATE SET user_id = EXCLUDED.user_id",
        )
        .bind(key.as_slice())
        .bind(signed(*user)?)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)
}

/// The latest state of an order changed by a batch.
#[derive(Debug, Default)]
struct OrderChange {
    status: Option<&'static str>,
    /// codec::ExpireReason code, when the order expired.
    expire_reason: Option<i16>,
    /// codec::RejectReason code, when a fired trigger order could not be placed.
    trigger_failed_reason: Option<i16>,
    /// `status` applies only if the row is not a pending trigger order: an `OrderReplaced` says
    /// `new` / `partially_filled`, but a replaced pending trigger is still pending (the sink
    /// cannot tell from this batch alone when the trigger was placed in an earlier one).
    status_unless_pending: bool,
    remaining: Option<u64>,
    price: Option<u64>,
    quantity: Option<u64>,
    filled_delta: u64,
    sequence: u64,
    timestamp_ns: u64,
}

/// Column vectors of one batch, ready for `UNNEST`.
#[derive(Debug, Default)]
struct Rows {
    users: Vec<i64>,
    user_first: Vec<i64>,
    // orders (new)
    o_id: Vec<i64>,
    o_user: Vec<i64>,
    o_market: Vec<i32>,
    o_client: Vec<String>,
    o_side: Vec<i16>,
    o_type: Vec<i16>,
    o_tif: Vec<i16>,
    o_stp: Vec<i16>,
    o_post: Vec<bool>,
    o_price: Vec<String>,
    o_quantity: Vec<String>,
    o_quote: Vec<String>,
    o_sequence: Vec<i64>,
    o_ns: Vec<i64>,
    /// 'new', or 'trigger_pending' for a trigger order.
    o_status: Vec<&'static str>,
    o_trigger_price: Vec<Option<String>>,
    o_trigger_kind: Vec<Option<i16>>,
    o_stop_loss_trigger: Vec<Option<String>>,
    o_stop_loss_limit: Vec<Option<String>>,
    o_take_profit_trigger: Vec<Option<String>>,
    o_take_profit_limit: Vec<Option<String>>,
    /// Trigger orders that fired in this batch: their `OrderAccepted` adds no row (the
    /// `TriggerPending` one, maybe of an earlier batch, is the order's row).
    fired: std::collections::HashSet<u64>,
    changes: Vec<(u64, OrderChange)>,
    change_index: HashMap<u64, usize>,
    // order_events
    e_sequence: Vec<i64>,
    e_index: Vec<i32>,
    e_kind: Vec<&'static str>,
    e_user: Vec<i64>,
    e_market: Vec<i32>,
    e_order: Vec<Option<i64>>,
    e_ns: Vec<i64>,
    e_details: Vec<String>,
    // trades
    t_market: Vec<i32>,
    t_id: Vec<i64>,
    t_sequence: Vec<i64>,
    t_ns: Vec<i64>,
    t_price: Vec<String>,
    t_quantity: Vec<String>,
    t_quote: Vec<String>,
    t_side: Vec<i16>,
    t_maker: Vec<i64>,
    t_maker_order: Vec<i64>,
    t_maker_fee: Vec<String>,
    t_taker: Vec<i64>,
    t_taker_order: Vec<i64>,
    t_taker_fee: Vec<String>,
    // ledger
    l_sequence: Vec<i64>,
    l_index: Vec<i32>,
    l_asset: Vec<i32>,
    l_debit: Vec<String>,
    l_credit: Vec<String>,
    l_amount: Vec<String>,
    l_reason: Vec<i16>,
    l_ns: Vec<i64>,
    /// Balances after the batch, for the (user, asset) pairs it touched.
    balances: HashMap<(u64, u32), (u64, u64)>,
    balance_sequence: HashMap<(u64, u32), u64>,
}

fn account(user: u64, bucket: &str) -> String {
    format!("user:{user}:{bucket}")
}

impl Rows {
    /// Turns a batch of commands into rows. `before`: balances before the batch.
    fn build(
        commands: &[CommandEvents],
        before: &HashMap<(u64, u32), (u64, u64)>,
        quote_of_market: &HashMap<u32, u32>,
    ) -> Result<Self, SinkError> {
        let mut rows = Rows::default();
        let mut seen_users = std::collections::HashSet::new();
        for command in commands {
            let sequence = signed(command.sequence)?;
            let mut entry_index = 0i32;
            for (index, event) in command.events.iter().enumerate() {
                let mut user_seen = |rows: &mut Rows, user: u64| -> Result<(), SinkError> {
                    if user != 0 && seen_users.insert(user) {
                        rows.users.push(signed(user)?);
                        rows.user_first.push(sequence);
                    }
                    Ok(())
                };
                let ns = crate::json::timestamp_ns(event) as i64;
                let (lifecycle, user, market, order) = match event {
                    Event::OrderAccepted(m) => (true, m.user_id.get(), m.market_id.get(), Some(m.order_id.get())),
                    Event::OrderRejected(m) => (true, m.user_id.get(), m.market_id.get(), None),
                    Event::Fill(m) => (true, m.taker_user_id.get(), m.market_id.get(), Some(m.taker_order_id.get())),
                    Event::OrderCanceled(m) => (true, m.user_id.get(), m.market_id.get(), Some(m.order_id.get())),
                    Event::OrderExpired(m) => (true, m.user_id.get(), m.market_id.get(), Some(m.order_id.get())),
                    Event::OrderReplaced(m) => (true, m.user_id.get(), m.market_id.get(), Some(m.order_id.get())),
                    Event::MassCancelReport(m) => (true, m.user_id.get(), m.market_id.get(), None),
                    Event::MarketStatusChanged(m) => (true, 0, m.market_id.get(), None),
                    Event::LiquidityAdded(m) => (true, m.user_id.get(), m.market_id.get(), None),
                    Event::LiquidityRemoved(m) => (true, m.user_id.get(), m.market_id.get(), None),
                    Event::SwapExecuted(m) => (true, m.user_id.get(), m.market_id.get(), None),
                    Event::OrderRouted(m) => {
                        let order = Some(m.order_id.get()).filter(|&id| id != 0);
                        (true, m.user_id.get(), m.market_id.get(), order)
                    }
                    Event::TriggerPending(m) => (true, m.user_id.get(), m.market_id.get(), Some(m.order_id.get())),
                    Event::TriggerPlaced(m) => (true, m.user_id.get(), m.market_id.get(), Some(m.order_id.get())),
                    Event::TriggerFailed(m) => (true, m.user_id.get(), m.market_id.get(), Some(m.order_id.get())),
                    Event::BookLevelUpdate(_) | Event::BalanceUpdate(_) => (false, 0, 0, None),
                };
                if lifecycle {
                    user_seen(&mut rows, user)?;
                    rows.e_sequence.push(sequence);
                    rows.e_index.push(index as i32);
                    rows.e_kind.push(crate::json::type_name(event));
                    rows.e_user.push(signed(user)?);
                    rows.e_market.push(market as i32);
                    rows.e_order.push(order.map(signed).transpose()?);
                    rows.e_ns.push(ns);
                    rows.e_details.push(crate::json::event_json(event, index).to_string());
                }
                match event {
                    Event::OrderAccepted(m) if rows.fired.contains(&m.order_id.get()) => {}
                    Event::OrderAccepted(m) => {
                        let ticks = |t: codec::Ticks| Some(t.get()).filter(|&v| v != 0).map(|v| v.to_string());
                        rows.o_status.push("new");
                        rows.o_trigger_price.push(None);
                        rows.o_trigger_kind.push(None);
                        rows.o_stop_loss_trigger.push(ticks(m.stop_loss_trigger_ticks));
                        rows.o_stop_loss_limit.push(ticks(m.stop_loss_limit_ticks));
                        rows.o_take_profit_trigger.push(ticks(m.take_profit_trigger_ticks));
                        rows.o_take_profit_limit.push(ticks(m.take_profit_limit_ticks));
                        rows.o_id.push(signed(m.order_id.get())?);
                        rows.o_user.push(signed(m.user_id.get())?);
                        rows.o_market.push(m.market_id.get() as i32);
                        rows.o_client.push(m.client_order_id.get().to_string());
                        rows.o_side.push(m.side.raw() as i16);
                        rows.o_type.push(m.order_type.raw() as i16);
                        rows.o_tif.push(m.time_in_force.raw() as i16);
                        rows.o_stp.push(m.self_trade_prevention.raw() as i16);
                        rows.o_post.push(m.post_only.raw() == 1);
                        rows.o_price.push(m.price_ticks.get().to_string());
                        rows.o_quantity.push(m.quantity_lots.get().to_string());
                        rows.o_quote.push(m.quote_quantity.get().to_string());
                        rows.o_sequence.push(sequence);
                        rows.o_ns.push(ns);
                    }
                    Event::TriggerPending(m) => {
                        rows.o_status.push("trigger_pending");
                        rows.o_trigger_price.push(Some(m.trigger_price_ticks.get().to_string()));
                        rows.o_trigger_kind.push(Some(m.trigger_kind.raw() as i16));
                        for column in [
                            &mut rows.o_stop_loss_trigger,
                            &mut rows.o_stop_loss_limit,
                            &mut rows.o_take_profit_trigger,
                            &mut rows.o_take_profit_limit,
                        ] {
                            column.push(None);
                        }
                        rows.o_id.push(signed(m.order_id.get())?);
                        rows.o_user.push(signed(m.user_id.get())?);
                        rows.o_market.push(m.market_id.get() as i32);
                        rows.o_client.push(m.client_order_id.get().to_string());
                        rows.o_side.push(m.side.raw() as i16);
                        rows.o_type.push(m.order_type.raw() as i16);
                        rows.o_tif.push(m.time_in_force.raw() as i16);
                        rows.o_stp.push(m.self_trade_prevention.raw() as i16);
                        rows.o_post.push(m.post_only.raw() == 1);
                        rows.o_price.push(m.price_ticks.get().to_string());
                        rows.o_quantity.push(m.quantity_lots.get().to_string());
                        rows.o_quote.push(m.quote_quantity.get().to_string());
                        rows.o_sequence.push(sequence);
                        rows.o_ns.push(ns);
                    }
                    Event::TriggerPlaced(m) => {
                        rows.fired.insert(m.order_id.get());
                        let change = rows.change(m.order_id.get(), command.sequence, ns as u64);
                        change.status = Some("new");
                        change.status_unless_pending = false;
                    }
                    Event::TriggerFailed(m) => {
                        let change = rows.change(m.order_id.get(), command.sequence, ns as u64);
                        change.status = Some("trigger_failed");
                        change.status_unless_pending = false;
                        change.trigger_failed_reason = Some(m.reason.raw() as i16);
                        change.remaining = Some(0);
                    }
                    Event::Fill(m) => {
                        user_seen(&mut rows, m.maker_user_id.get())?;
                        rows.t_market.push(m.market_id.get() as i32);
                        rows.t_id.push(signed(m.trade_id.get())?);
                        rows.t_sequence.push(sequence);
                        rows.t_ns.push(ns);
                        rows.t_price.push(m.price_ticks.get().to_string());
                        rows.t_quantity.push(m.quantity_lots.get().to_string());
                        rows.t_quote.push(m.quote_amount.get().to_string());
                        rows.t_side.push(m.taker_side.raw() as i16);
                        rows.t_maker.push(signed(m.maker_user_id.get())?);
                        rows.t_maker_order.push(signed(m.maker_order_id.get())?);
                        rows.t_maker_fee.push(m.maker_fee.get().to_string());
                        rows.t_taker.push(signed(m.taker_user_id.get())?);
                        rows.t_taker_order.push(signed(m.taker_order_id.get())?);
                        rows.t_taker_fee.push(m.taker_fee.get().to_string());
                        let lots = m.quantity_lots.get();
                        // Done is the fill's flag, not `remaining == 0`: a quote-quantity market
                        // order has 0 remaining lots on every fill.
                        for (order, remaining, done) in [
                            (m.maker_order_id.get(), m.maker_remaining_lots.get(), m.completes_maker()),
                            (m.taker_order_id.get(), m.taker_remaining_lots.get(), m.completes_taker()),
                        ] {
                            let change = rows.change(order, command.sequence, ns as u64);
                            change.filled_delta += lots;
                            change.remaining = Some(remaining);
                            change.status = Some(if done { "filled" } else { "partially_filled" });
                            change.status_unless_pending = false;
                        }
                        let fee = u128::from(m.maker_fee.get()) + u128::from(m.taker_fee.get());
                        if fee > 0 {
                            let quote = quote_of_market.get(&m.market_id.get()).copied().unwrap_or(0);
                            rows.entry(sequence, ns, &mut entry_index, quote, "clearing".into(), "fees".into(), fee, 0);
                        }
                    }
                    Event::OrderCanceled(m) => {
                        let change = rows.change(m.order_id.get(), command.sequence, ns as u64);
                        change.status = Some("canceled");
                        change.status_unless_pending = false;
                        change.remaining = Some(0);
                    }
                    Event::OrderExpired(m) => {
                        let change = rows.change(m.order_id.get(), command.sequence, ns as u64);
                        change.status = Some("expired");
                        change.status_unless_pending = false;
                        change.expire_reason = Some(m.reason.raw() as i16);
                        change.remaining = Some(0);
                    }
                    Event::OrderReplaced(m) => {
                        let change = rows.change(m.order_id.get(), command.sequence, ns as u64);
                        change.price = Some(m.price_ticks.get());
                        change.quantity = Some(m.quantity_lots.get());
                        change.remaining = Some(m.remaining_lots.get());
                        // Placed (or filled) earlier in this batch: certainly no longer pending.
                        let placed_in_batch = change.status.is_some();
                        change.status = Some(if m.filled_lots.get() > 0 { "partially_filled" } else { "new" });
                        change.status_unless_pending = !placed_in_batch;
                    }
                    Event::BalanceUpdate(m) => {
                        let (user, asset) = (m.user_id.get(), m.asset_id.get());
                        user_seen(&mut rows, user)?;
                        let key = (user, asset);
                        let (previous_available, previous_locked) =
                            rows.balances.get(&key).or_else(|| before.get(&key)).copied().unwrap_or((0, 0));
                        let (available, locked) = (m.available.get(), m.locked.get());
                        let delta_available = i128::from(available) - i128::from(previous_available);
                        let delta_locked = i128::from(locked) - i128::from(previous_locked);
                        let reason = m.reason.get().ok();
                        let code = m.reason.raw() as i16;
                        let (available_account, locked_account) = (account(user, "available"), account(user, "locked"));
                        let counter = match reason {
                            Some(BalanceChange::Deposit | BalanceChange::Withdrawal) => "external",
                            // AMM liquidity and swaps: the pools' reserves, one account for all pools.
                            Some(BalanceChange::Pool) => "pools",
                            _ => "clearing",
                        };
                        if delta_available != 0 && delta_available == -delta_locked {
                            // Lock or release: between the user's own two accounts.
                            let (from, to) = if delta_available < 0 {
                                (available_account, locked_account)
                            } else {
                                (locked_account, available_account)
                            };
                            rows.entry(
                                sequence,
                                ns,
                                &mut entry_index,
                                asset,
                                from,
                                to,
                                delta_available.unsigned_abs(),
                                code,
                            );
                        } else {
                            for (delta, user_account) in
                                [(delta_available, available_account), (delta_locked, locked_account)]
                            {
                                if delta > 0 {
                                    rows.entry(
                                        sequence,
                                        ns,
                                        &mut entry_index,
                                        asset,
                                        counter.into(),
                                        user_account,
                                        delta.unsigned_abs(),
                                        code,
                                    );
                                } else if delta < 0 {
                                    rows.entry(
                                        sequence,
                                        ns,
                                        &mut entry_index,
                                        asset,
                                        user_account,
                                        counter.into(),
                                        delta.unsigned_abs(),
                                        code,
                                    );
                                }
                            }
                        }
                        rows.balances.insert(key, (available, locked));
                        rows.balance_sequence.insert(key, command.sequence);
                    }
                    _ => {}
                }
            }
        }
        Ok(rows)
    }

    fn change(&mut self, order: u64, sequence: u64, timestamp_ns: u64) -> &mut OrderChange {
        let index = *self.change_index.entry(order).or_insert_with(|| {
            self.changes.push((order, OrderChange::default()));
            self.changes.len() - 1
        });
        let change = &mut self.changes[index].1;
        change.sequence = sequence;
        change.timestamp_ns = timestamp_ns;
        change
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        sequence: i64,
        timestamp_ns: i64,
        index: &mut i32,
        asset: u32,
        debit: String,
        credit: String,
        amount: u128,
        reason: i16,
    ) {
        self.l_sequence.push(sequence);
        self.l_index.push(*index);
        *index += 1;
        self.l_asset.push(asset as i32);
        self.l_debit.push(debit);
        self.l_credit.push(credit);
        self.l_amount.push(amount.to_string());
        self.l_reason.push(reason);
        self.l_ns.push(timestamp_ns);
    }

    /// Writes the batch and the progress in one transaction.
    async fn apply(&mut self, connection: &mut PgConnection, expected: u64, last: u64) -> Result<(), SinkError> {
        let mut tx = connection.begin().await.map_err(db)?;
        let progress: i64 = sqlx::query_scalar("SELECT last_sequence FROM sink_progress WHERE sink = $1 FOR UPDATE")
            .bind(SINK)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        if progress as u64 != expected {
            return Err(db(format!("sink_progress is {progress}, expected {expected}: another writer? reloading")));
        }
        if !self.users.is_empty() {
            sqlx::query(
                "INSERT INTO users (user_id, first_sequence) SELECT * FROM UNNEST($1::bigint[], $2::bigint[])
                 ON CONFLICT (user_id) DO UPDATE SET first_sequence = EXCLUDED.first_sequence
                 WHERE users.first_sequence = 0",
            )
            .bind(&self.users)
            .bind(&self.user_first)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        if !self.o_id.is_empty() {
            sqlx::query(
                "INSERT INTO orders (order_id, user_id, market_id, client_order_id, side, order_type, time_in_force,
                     self_trade_prevention, post_only, price_ticks, quantity_lots, quote_quantity, filled_lots,
                     remaining_lots, status, created_sequence, updated_sequence, created_ns, updated_ns,
                     trigger_price_ticks, trigger_kind, stop_loss_trigger_ticks, stop_loss_limit_ticks,
                     take_profit_trigger_ticks, take_profit_limit_ticks)
                 SELECT o.id, o.user_id, o.market, o.client::numeric, o.side, o.type, o.tif, o.stp, o.post,
                     o.price::numeric, o.quantity::numeric, o.quote::numeric, 0, o.quantity::numeric, o.status,
                     o.seq, o.seq, o.ns, o.ns, o.trigger_price::numeric, o.trigger_kind, o.sl_trigger::numeric,
                     o.sl_limit::numeric, o.tp_trigger::numeric, o.tp_limit::numeric
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::int[], $4::text[], $5::smallint[], $6::smallint[],
                     $7::smallint[], $8::smallint[], $9::bool[], $10::text[], $11::text[], $12::text[],
                     $13::bigint[], $14::bigint[], $15::text[], $16::text[], $17::smallint[], $18::text[],
                     $19::text[], $20::text[], $21::text[])
                     AS o(id, user_id, market, client, side, type, tif, stp, post, price, quantity, quote, seq, ns,
                          status, trigger_price, trigger_kind, sl_trigger, sl_limit, tp_trigger, tp_limit)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&self.o_id)
            .bind(&self.o_user)
            .bind(&self.o_market)
            .bind(&self.o_client)
            .bind(&self.o_side)
            .bind(&self.o_type)
            .bind(&self.o_tif)
            .bind(&self.o_stp)
            .bind(&self.o_post)
            .bind(&self.o_price)
            .bind(&self.o_quantity)
            .bind(&self.o_quote)
            .bind(&self.o_sequence)
            .bind(&self.o_ns)
            .bind(&self.o_status)
            .bind(&self.o_trigger_price)
            .bind(&self.o_trigger_kind)
            .bind(&self.o_stop_loss_trigger)
            .bind(&self.o_stop_loss_limit)
            .bind(&self.o_take_profit_trigger)
            .bind(&self.o_take_profit_limit)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        if !self.changes.is_empty() {
            let mut ids = Vec::with_capacity(self.changes.len());
            let mut statuses = Vec::with_capacity(self.changes.len());
            let mut expire_reasons = Vec::with_capacity(self.changes.len());
            let mut remaining = Vec::with_capacity(self.changes.len());
            let mut prices = Vec::with_capacity(self.changes.len());
            let mut quantities = Vec::with_capacity(self.changes.len());
            let mut filled = Vec::with_capacity(self.changes.len());
            let mut sequences = Vec::with_capacity(self.changes.len());
            let mut times = Vec::with_capacity(self.changes.len());
            let mut failed_reasons = Vec::with_capacity(self.changes.len());
            let mut unless_pending = Vec::with_capacity(self.changes.len());
            for (order, change) in &self.changes {
                failed_reasons.push(change.trigger_failed_reason);
                unless_pending.push(change.status_unless_pending);
                ids.push(signed(*order)?);
                statuses.push(change.status.map(str::to_string));
                expire_reasons.push(change.expire_reason);
                remaining.push(change.remaining.map(|v| v.to_string()));
                prices.push(change.price.map(|v| v.to_string()));
                quantities.push(change.quantity.map(|v| v.to_string()));
                filled.push(change.filled_delta.to_string());
                sequences.push(signed(change.sequence)?);
                times.push(change.timestamp_ns as i64);
            }
            sqlx::query(
                "UPDATE orders o SET status = CASE WHEN u.unless_pending AND o.status = 'trigger_pending'
                         THEN o.status ELSE COALESCE(u.status, o.status) END,
                     remaining_lots = COALESCE(u.remaining::numeric, o.remaining_lots),
                     price_ticks = COALESCE(u.price::numeric, o.price_ticks),
                     quantity_lots = COALESCE(u.quantity::numeric, o.quantity_lots),
                     filled_lots = o.filled_lots + u.filled::numeric,
                     expire_reason = COALESCE(u.expire_reason, o.expire_reason),
                     trigger_failed_reason = COALESCE(u.failed_reason, o.trigger_failed_reason),
                     updated_sequence = u.seq, updated_ns = u.ns
                 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                     $8::bigint[], $9::smallint[], $10::smallint[], $11::bool[]) AS u(id, status, remaining, price,
                     quantity, filled, seq, ns, expire_reason, failed_reason, unless_pending)
                 WHERE o.order_id = u.id",
            )
            .bind(&ids)
            .bind(&statuses)
            .bind(&remaining)
            .bind(&prices)
            .bind(&quantities)
            .bind(&filled)
            .bind(&sequences)
            .bind(&times)
            .bind(&expire_reasons)
            .bind(&failed_reasons)
            .bind(&unless_pending)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        if !self.e_sequence.is_empty() {
            sqlx::query(
                "INSERT INTO order_events (sequence, event_index, kind, user_id, market_id, order_id, timestamp_ns,
                     details)
                 SELECT e.seq, e.idx, e.kind, e.user_id, e.market, e.order_id, e.ns, e.details::jsonb
                 FROM UNNEST($1::bigint[], $2::int[], $3::text[], $4::bigint[], $5::int[], $6::bigint[],
                     $7::bigint[], $8::text[]) AS e(seq, idx, kind, user_id, market, order_id, ns, details)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&self.e_sequence)
            .bind(&self.e_index)
            .bind(&self.e_kind)
            .bind(&self.e_user)
            .bind(&self.e_market)
            .bind(&self.e_order)
            .bind(&self.e_ns)
            .bind(&self.e_details)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        if !self.t_id.is_empty() {
            sqlx::query(
                "INSERT INTO trades (market_id, trade_id, sequence, timestamp_ns, price_ticks, quantity_lots,
                     quote_amount, taker_side, maker_user_id, maker_order_id, maker_fee, taker_user_id,
                     taker_order_id, taker_fee)
                 SELECT t.market, t.id, t.seq, t.ns, t.price::numeric, t.quantity::numeric, t.quote::numeric,
                     t.side, t.maker, t.maker_order, t.maker_fee::numeric, t.taker, t.taker_order,
                     t.taker_fee::numeric
                 FROM UNNEST($1::int[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[],
                     $7::text[], $8::smallint[], $9::bigint[], $10::bigint[], $11::text[], $12::bigint[],
                     $13::bigint[], $14::text[])
                     AS t(market, id, seq, ns, price, quantity, quote, side, maker, maker_order, maker_fee, taker,
                         taker_order, taker_fee)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&self.t_market)
            .bind(&self.t_id)
            .bind(&self.t_sequence)
            .bind(&self.t_ns)
            .bind(&self.t_price)
            .bind(&self.t_quantity)
            .bind(&self.t_quote)
            .bind(&self.t_side)
            .bind(&self.t_maker)
            .bind(&self.t_maker_order)
            .bind(&self.t_maker_fee)
            .bind(&self.t_taker)
            .bind(&self.t_taker_order)
            .bind(&self.t_taker_fee)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        if !self.l_sequence.is_empty() {
            sqlx::query(
                "INSERT INTO ledger_entries (sequence, entry_index, asset_id, debit_account, credit_account, amount,
                     reason, timestamp_ns)
                 SELECT l.seq, l.idx, l.asset, l.debit, l.credit, l.amount::numeric, l.reason, l.ns
                 FROM UNNEST($1::bigint[], $2::int[], $3::int[], $4::text[], $5::text[], $6::text[], $7::smallint[],
                     $8::bigint[])
                     AS l(seq, idx, asset, debit, credit, amount, reason, ns)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&self.l_sequence)
            .bind(&self.l_index)
            .bind(&self.l_asset)
            .bind(&self.l_debit)
            .bind(&self.l_credit)
            .bind(&self.l_amount)
            .bind(&self.l_reason)
            .bind(&self.l_ns)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        if !self.balances.is_empty() {
            let mut users = Vec::with_capacity(self.balances.len());
            let mut assets = Vec::with_capacity(self.balances.len());
            let mut available = Vec::with_capacity(self.balances.len());
            let mut locked = Vec::with_capacity(self.balances.len());
            let mut sequences = Vec::with_capacity(self.balances.len());
            for (key, (a, l)) in &self.balances {
                users.push(signed(key.0)?);
                assets.push(key.1 as i32);
                available.push(a.to_string());
                locked.push(l.to_string());
                sequences.push(signed(self.balance_sequence.get(key).copied().unwrap_or(last))?);
            }
            sqlx::query(
                "INSERT INTO balances (user_id, asset_id, available, locked, sequence)
                 SELECT b.user_id, b.asset, b.available::numeric, b.locked::numeric, b.seq
                 FROM UNNEST($1::bigint[], $2::int[], $3::text[], $4::text[], $5::bigint[])
                     AS b(user_id, asset, available, locked, seq)
                 ON CONFLICT (user_id, asset_id) DO UPDATE SET available = EXCLUDED.available,
                     locked = EXCLUDED.locked, sequence = EXCLUDED.sequence",
            )
            .bind(&users)
            .bind(&assets)
            .bind(&available)
            .bind(&locked)
            .bind(&sequences)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        sqlx::query("UPDATE sink_progress SET last_sequence = $2, updated_at = now() WHERE sink = $1")
            .bind(SINK)
            .bind(signed(last)?)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// Rows this batch inserts or updates (for throughput figures).
    fn row_count(&self) -> usize {
        self.users.len()
            + self.o_id.len()
            + self.changes.len()
            + self.e_sequence.len()
            + self.t_id.len()
            + self.l_sequence.len()
            + self.balances.len()
    }
}

/// Rows a batch of commands turns into (for throughput figures).
///
/// # Errors
/// An id beyond `BIGINT`.
pub fn rows_of(commands: &[CommandEvents], engine_config: &EngineConfig) -> Result<usize, SinkError> {
    let quote = engine_config.markets.iter().map(|m| (m.id.get(), m.quote.get())).collect();
    Ok(Rows::build(commands, &HashMap::new(), &quote)?.row_count())
}

/// A trade as the history API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillRecord {
    /// Market.
    pub market_id: u32,
    /// Trade id (per market).
    pub trade_id: u64,
    /// Engine sequence of the command that traded.
    pub sequence: u64,
    /// Time of the command.
    pub timestamp_ns: u64,
    /// Price, ticks.
    pub price_ticks: u64,
    /// Quantity, lots.
    pub quantity_lots: u64,
    /// Notional, quote minor units.
    pub quote_amount: u64,
    /// This user's order.
    pub order_id: u64,
    /// This user's side: 1 bid, 2 ask.
    pub side: u8,
    /// Whether this user was the maker.
    pub is_maker: bool,
    /// This user's fee, quote minor units.
    pub fee: u64,
    /// Client id of this user's order (0: none or unknown).
    pub client_order_id: u64,
}

/// A trade as the public trade history returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketTrade {
    /// Trade id (per market).
    pub trade_id: u64,
    /// Time of the trade, ns.
    pub timestamp_ns: u64,
    /// Price, ticks.
    pub price_ticks: u64,
    /// Quantity, lots.
    pub quantity_lots: u64,
    /// Notional, quote minor units.
    pub quote_amount: u64,
    /// The taker's side: 1 bid, 2 ask.
    pub taker_side: u8,
}

/// How [`Queries::klines`] buckets trades (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KlineBuckets {
    /// A fixed number of seconds (at least 1), buckets aligned on the epoch.
    Seconds(u64),
    /// Calendar weeks starting Monday 00:00 UTC.
    Week,
    /// Calendar months starting on the 1st, 00:00 UTC (`date_trunc('month', ...)`).
    Month,
}

impl KlineBuckets {
    /// The longest bucket, seconds (a month: 31 days).
    pub fn longest_s(self) -> u64 {
        match self {
            Self::Seconds(length) => length.max(1),
            Self::Week => 7 * 86_400,
            Self::Month => 31 * 86_400,
        }
    }
}

/// The SQL of [`Queries::klines`] (public for `EXPLAIN` in tests and tools). Parameters: `$1`
/// market id, `$2` first trade time (ns, inclusive), `$3` end of the bucket starts (s,
/// exclusive), `$4` most buckets, `$5` trade time bound (ns, exclusive; any time past the last
/// bucket's end). `$1`, `$2` and `$5` select the trades on the `trades_by_market_time` index.
pub fn klines_sql(buckets: KlineBuckets) -> String {
    // `s`: the trade's time in whole seconds (bigint division truncates; times are positive).
    const WEEK_ORIGIN: i64 = 4 * 86_400; // 1970-01-05, a Monday.
    let bucket = match buckets {
        KlineBuckets::Seconds(length) => format!("(s / {length}) * {length}", length = length.max(1)),
        KlineBuckets::Week => {
            format!("CASE WHEN s < {WEEK_ORIGIN} THEN 0 ELSE (s - {WEEK_ORIGIN}) / 604800 * 604800 + {WEEK_ORIGIN} END")
        }
        KlineBuckets::Month => {
            "EXTRACT(EPOCH FROM date_trunc('month', TIMESTAMP '1970-01-01' + s * INTERVAL '1 second'))::bigint"
                .to_string()
        }
    };
    format!(
        "WITH t AS (
             SELECT {bucket} AS bucket, trade_id, price_ticks, quantity_lots, quote_amount
             FROM (SELECT timestamp_ns / 1000000000 AS s, trade_id, price_ticks, quantity_lots, quote_amount
                   FROM trades WHERE market_id = $1 AND timestamp_ns >= $2 AND timestamp_ns < $5) seconds
         )
         SELECT bucket, ((array_agg(price_ticks ORDER BY trade_id ASC))[1])::text, MAX(price_ticks)::text,
             MIN(price_ticks)::text, ((array_agg(price_ticks ORDER BY trade_id DESC))[1])::text,
             SUM(quantity_lots)::text, SUM(quote_amount)::text, COUNT(*)
         FROM t WHERE bucket < $3 GROUP BY bucket ORDER BY bucket LIMIT $4"
    )
}

/// The SQL of [`Queries::transfers`] (public for `EXPLAIN` in tests and tools). Parameters: `$1`
/// the user's available account (`user:<id>:available`), `$2` / `$3` the time range (ns,
/// inclusive), `$4` limit, `$5` offset. The last column, `total`, is the number of entries
/// matching before the page is cut ([`Paged::total`]).
pub fn transfers_sql(kind: TransferKind, ascending: bool) -> String {
    // Literal reason and counter account, so that the planner matches the partial index
    // (`ledger_deposits` / `ledger_withdrawals`).
    let (user_column, external_column, reason) = match kind {
        TransferKind::Deposit => ("credit_account", "debit_account", BalanceChange::Deposit),
        TransferKind::Withdrawal => ("debit_account", "credit_account", BalanceChange::Withdrawal),
    };
    let reason = reason.code();
    let direction = if ascending { "ASC" } else { "DESC" };
    format!(
        "SELECT sequence, asset_id, amount::text, timestamp_ns, COUNT(*) OVER () AS {TOTAL_COLUMN}
         FROM ledger_entries
         WHERE {user_column} = $1 AND {external_column} = 'external' AND reason = {reason}
             AND timestamp_ns BETWEEN $2 AND $3
         ORDER BY sequence {direction}, entry_index {direction} LIMIT $4 OFFSET $5"
    )
}

/// One kline as [`Queries::klines`] aggregates it from the `trades` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KlineRow {
    /// Bucket start, seconds since the epoch.
    pub start: u64,
    /// First trade price (lowest trade id), ticks.
    pub open: u64,
    /// Highest trade price, ticks.
    pub high: u64,
    /// Lowest trade price, ticks.
    pub low: u64,
    /// Last trade price (highest trade id), ticks.
    pub close: u64,
    /// Base volume, lots (exact `NUMERIC` sum).
    pub volume_lots: u128,
    /// Quote volume, quote minor units (exact `NUMERIC` sum).
    pub quote_volume: u128,
    /// Number of trades.
    pub trades: u64,
}

/// Which transfers [`Queries::transfers`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// Credits from `external` (engine `Deposit`).
    Deposit,
    /// Debits to `external` (engine `Withdraw`).
    Withdrawal,
}

/// A deposit or a withdrawal, read from the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferRow {
    /// Engine sequence of the command (the REST API's id of the transfer).
    pub sequence: u64,
    /// Asset.
    pub asset_id: u32,
    /// Amount, the asset's minor units.
    pub amount: u64,
    /// Time of the command, ns (0: written before the ledger stored times).
    pub timestamp_ns: u64,
}

/// Filters and page of a history query ([`Queries::fill_history`], [`Queries::order_history`],
/// [`Queries::transfers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Only this market.
    pub market_id: Option<u32>,
    /// Only this order of the user.
    pub order_id: Option<u64>,
    /// Earliest time, ns, inclusive (fills: trade time; orders: creation time).
    pub from_ns: u64,
    /// Latest time, ns, inclusive.
    pub to_ns: u64,
    /// Oldest first (else newest first).
    pub ascending: bool,
    /// Rows to return at most.
    pub limit: u32,
    /// Rows to skip first, in the requested direction.
    pub offset: u32,
}

/// The SQL of [`Queries::order_history`] (public for `EXPLAIN` in tests and tools). Parameters:
/// `$1` user id, `$2` market id or NULL, `$3` order id or NULL, `$4` / `$5` the creation time
/// range (ns, inclusive), `$6` limit, `$7` offset. The inner query cuts the page and counts the
/// matches (the last column, `total`); only then does the outer one sum each order's traded
/// quote: that per-order subquery runs for the page's rows whatever the plan (one that sorts
/// after the count's window would otherwise run it for every match).
pub fn order_history_sql(ascending: bool) -> String {
    let direction = if ascending { "ASC" } else { "DESC" };
    format!(
        "SELECT {ORDER_COLUMNS}, o.{TOTAL_COLUMN}
         FROM (SELECT o.*, COUNT(*) OVER () AS {TOTAL_COLUMN} FROM orders o
               WHERE o.user_id = $1 AND ($2::int IS NULL OR o.market_id = $2)
                   AND ($3::bigint IS NULL OR o.order_id = $3) AND o.created_ns BETWEEN $4 AND $5
               ORDER BY o.order_id {direction} LIMIT $6 OFFSET $7) o
         ORDER BY o.order_id {direction}"
    )
}

/// The SQL of [`Queries::fill_history`] (public for `EXPLAIN` in tests and tools). Parameters as
/// [`order_history_sql`]'s, the time range being the trade's. The user's maker and taker sides
/// share the filters (the planner pushes them into each branch and its index); the page is cut
/// and the matches counted (the last column, `total`) before each fill's client order id is
/// looked up, as in [`order_history_sql`].
pub fn fill_history_sql(ascending: bool) -> String {
    let direction = if ascending { "ASC" } else { "DESC" };
    let order = format!("sequence {direction}, trade_id {direction}, is_maker {direction}");
    format!(
        "WITH f AS (
             SELECT market_id, trade_id, sequence, timestamp_ns, price_ticks, quantity_lots, quote_amount,
                 maker_order_id AS order_id, maker_fee AS fee, (3 - taker_side)::smallint AS side, TRUE AS is_maker
             FROM trades WHERE maker_user_id = $1
             UNION ALL
             SELECT market_id, trade_id, sequence, timestamp_ns, price_ticks, quantity_lots, quote_amount,
                 taker_order_id, taker_fee, taker_side, FALSE
             FROM trades WHERE taker_user_id = $1
         ), page AS (
             SELECT f.*, COUNT(*) OVER () AS {TOTAL_COLUMN} FROM f
             WHERE ($2::int IS NULL OR f.market_id = $2) AND ($3::bigint IS NULL OR f.order_id = $3)
                 AND f.timestamp_ns BETWEEN $4 AND $5
             ORDER BY {order} LIMIT $6 OFFSET $7
         )
         SELECT p.market_id, p.trade_id, p.sequence, p.timestamp_ns, p.price_ticks::text, p.quantity_lots::text,
             p.quote_amount::text, p.order_id, p.fee::text, p.side, p.is_maker,
             COALESCE((SELECT o.client_order_id FROM orders o WHERE o.order_id = p.order_id), 0)::text,
             p.{TOTAL_COLUMN}
         FROM page p ORDER BY {order}"
    )
}

/// One page of a history query ([`Queries::fill_history`], [`Queries::order_history`],
/// [`Queries::transfers`]) and how many rows the query matched in all, the pages together (for
/// the REST API's `X-TOTAL` and `X-PAGE-COUNT` headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paged<T> {
    /// The page: at most the filter's `limit` rows, after its `offset`.
    pub rows: Vec<T>,
    /// Rows matching the filter's market, order and time range, regardless of `limit` and
    /// `offset`.
    pub total: u64,
}

/// Name of the column each history query adds, `COUNT(*) OVER ()`: a window over every row
/// the `WHERE` kept, computed before `LIMIT` and `OFFSET`, so each row of a page carries the
/// number of matching rows in one round trip.
const TOTAL_COLUMN: &str = "total";

/// Runs a history query (`fetch`, the rows of a filter's page, each with its [`TOTAL_COLUMN`])
/// and returns its page and total. An empty page past the end carries no total: the same query
/// is then asked for its first row only, which does.
async fn counted<F, Fut>(filter: &HistoryFilter, fetch: F) -> Result<(Vec<sqlx::postgres::PgRow>, u64), SinkError>
where
    F: Fn(HistoryFilter) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<sqlx::postgres::PgRow>, SinkError>>,
{
    let total_of = |rows: &[sqlx::postgres::PgRow]| -> Result<u64, SinkError> {
        rows.first().map_or(Ok(0), |row| {
            let total: i64 = row.try_get(TOTAL_COLUMN).map_err(db)?;
            u64::try_from(total).map_err(|_| db(format!("negative count {total}")))
        })
    };
    let rows = fetch(*filter).await?;
    let total = if rows.is_empty() && filter.offset > 0 {
        total_of(&fetch(HistoryFilter { limit: 1, offset: 0, ..*filter }).await?)?
    } else {
        total_of(&rows)?
    };
    Ok((rows, total))
}

/// A time in ns as BIGINT, saturating (the API's open-ended `to` is `u64::MAX`).
fn saturating(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

/// An order as the history API returns it (its latest state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    /// Exchange order id.
    pub order_id: u64,
    /// Market.
    pub market_id: u32,
    /// Client order id.
    pub client_order_id: u64,
    /// 1 bid, 2 ask.
    pub side: u8,
    /// 1 limit, 2 market.
    pub order_type: u8,
    /// Limit price, ticks.
    pub price_ticks: u64,
    /// Quantity, lots.
    pub quantity_lots: u64,
    /// Filled, lots.
    pub filled_lots: u64,
    /// `new`, `partially_filled`, `filled`, `canceled` or `expired`.
    pub status: String,
    /// Time of the command that created it.
    pub created_ns: u64,
    /// Time of the last change.
    pub updated_ns: u64,
    /// 1 GTC, 2 IOC, 3 FOK.
    pub time_in_force: u8,
    /// codec::SelfTradePrevention code.
    pub self_trade_prevention: u8,
    /// Post-only.
    pub post_only: bool,
    /// Quote quantity (market buys by quote), minor units.
    pub quote_quantity: u64,
    /// Quote traded so far (sum of its trades' notionals), minor units.
    pub executed_quote: u64,
    /// Why it expired: the `codec::ExpireReason` code; `None` unless `status` is `expired`.
    pub expire_reason: Option<u8>,
    /// Trigger price, ticks, of an order placed as a trigger order (also after it fired).
    pub trigger_price_ticks: Option<u64>,
    /// The `codec::TriggerKind` code of a trigger order.
    pub trigger_kind: Option<u8>,
    /// Why a fired trigger order could not be placed: the `codec::RejectReason` code; `None`
    /// unless `status` is `trigger_failed`.
    pub trigger_failed_reason: Option<u16>,
    /// Attached stop-loss trigger price, ticks.
    pub stop_loss_trigger_ticks: Option<u64>,
    /// Attached stop-loss limit price, ticks.
    pub stop_loss_limit_ticks: Option<u64>,
    /// Attached take-profit trigger price, ticks.
    pub take_profit_trigger_ticks: Option<u64>,
    /// Attached take-profit limit price, ticks.
    pub take_profit_limit_ticks: Option<u64>,
}

/// The columns [`order_record`] reads, over `orders o`.
const ORDER_COLUMNS: &str =
    "o.order_id, o.market_id, o.client_order_id::text, o.side, o.order_type, o.price_ticks::text,
     o.quantity_lots::text, o.filled_lots::text, o.status, o.created_ns, o.updated_ns, o.time_in_force,
     o.self_trade_prevention, o.post_only, o.quote_quantity::text,
     (SELECT COALESCE(SUM(t.quote_amount), 0) FROM trades t
      WHERE (t.maker_user_id = o.user_id AND t.maker_order_id = o.order_id)
         OR (t.taker_user_id = o.user_id AND t.taker_order_id = o.order_id))::text,
     o.expire_reason, o.trigger_price_ticks::text, o.trigger_kind, o.trigger_failed_reason,
     o.stop_loss_trigger_ticks::text, o.stop_loss_limit_ticks::text, o.take_profit_trigger_ticks::text,
     o.take_profit_limit_ticks::text";

fn order_record(row: &sqlx::postgres::PgRow) -> Result<OrderRecord, SinkError> {
    Ok(OrderRecord {
        order_id: row.get::<i64, _>(0) as u64,
        market_id: row.get::<i32, _>(1) as u32,
        client_order_id: parse(&row.get::<String, _>(2))?,
        side: row.get::<i16, _>(3) as u8,
        order_type: row.get::<i16, _>(4) as u8,
        price_ticks: parse(&row.get::<String, _>(5))?,
        quantity_lots: parse(&row.get::<String, _>(6))?,
        filled_lots: parse(&row.get::<String, _>(7))?,
        status: row.get(8),
        created_ns: row.get::<i64, _>(9) as u64,
        updated_ns: row.get::<i64, _>(10) as u64,
        time_in_force: row.get::<i16, _>(11) as u8,
        self_trade_prevention: row.get::<i16, _>(12) as u8,
        post_only: row.get(13),
        quote_quantity: parse(&row.get::<String, _>(14))?,
        executed_quote: parse(&row.get::<String, _>(15))?,
        expire_reason: row.get::<Option<i16>, _>(16).map(|code| code as u8),
        trigger_price_ticks: optional(row, 17)?,
        trigger_kind: row.get::<Option<i16>, _>(18).map(|code| code as u8),
        trigger_failed_reason: row.get::<Option<i16>, _>(19).map(|code| code as u16),
        stop_loss_trigger_ticks: optional(row, 20)?,
        stop_loss_limit_ticks: optional(row, 21)?,
        take_profit_trigger_ticks: optional(row, 22)?,
        take_profit_limit_ticks: optional(row, 23)?,
    })
}

/// A nullable `NUMERIC` column read as text.
fn optional(row: &sqlx::postgres::PgRow, column: usize) -> Result<Option<u64>, SinkError> {
    row.get::<Option<String>, _>(column).as_deref().map(parse).transpose()
}

/// Read-only queries over the sink's tables (for the REST history endpoints).
#[derive(Debug, Clone)]
pub struct Queries {
    pool: PgPool,
}

impl Queries {
    /// Connects a small pool.
    ///
    /// # Errors
    /// Bad URL or the database is unreachable.
    pub async fn connect(url: &str) -> Result<Self, SinkError> {
        let pool = PgPoolOptions::new().max_connections(4).connect(url).await.map_err(db)?;
        Ok(Self { pool })
    }

    /// A small pool that connects on first use (so a server starts while Postgres is down; the
    /// queries fail until it is back). Call inside a Tokio runtime.
    ///
    /// # Errors
    /// Bad URL.
    pub fn connect_lazy(url: &str) -> Result<Self, SinkError> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(3))
            .connect_lazy(url)
            .map_err(db)?;
        Ok(Self { pool })
    }

    /// A user's fills, newest first, optionally on one market; `before_sequence` pages back.
    ///
    /// # Errors
    /// Database errors.
    pub async fn fills(
        &self,
        user_id: u64,
        market_id: Option<u32>,
        before_sequence: Option<u64>,
        limit: u32,
    ) -> Result<Vec<FillRecord>, SinkError> {
        let rows = sqlx::query(
            "SELECT market_id, trade_id, sequence, timestamp_ns, price_ticks::text, quantity_lots::text,
                 quote_amount::text, maker_user_id, maker_order_id, maker_fee::text, taker_user_id, taker_order_id,
                 taker_fee::text, taker_side
             FROM trades
             WHERE (maker_user_id = $1 OR taker_user_id = $1) AND ($2::int IS NULL OR market_id = $2)
                 AND ($3::bigint IS NULL OR sequence < $3)
             ORDER BY sequence DESC, trade_id DESC LIMIT $4",
        )
        .bind(signed(user_id)?)
        .bind(market_id.map(|m| m as i32))
        .bind(before_sequence.map(signed).transpose()?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut fills = Vec::with_capacity(rows.len());
        for row in rows {
            let maker: i64 = row.get(7);
            let taker: i64 = row.get(10);
            let taker_side: i16 = row.get(13);
            // A self-trade lists the taker side.
            let is_maker = maker as u64 == user_id && taker as u64 != user_id;
            let (order, fee, side) = if is_maker {
                (row.get::<i64, _>(8), row.get::<String, _>(9), if taker_side == 1 { 2 } else { 1 })
            } else {
                (row.get::<i64, _>(11), row.get::<String, _>(12), taker_side as u8)
            };
            fills.push(FillRecord {
                market_id: row.get::<i32, _>(0) as u32,
                trade_id: row.get::<i64, _>(1) as u64,
                sequence: row.get::<i64, _>(2) as u64,
                timestamp_ns: row.get::<i64, _>(3) as u64,
                price_ticks: parse(&row.get::<String, _>(4))?,
                quantity_lots: parse(&row.get::<String, _>(5))?,
                quote_amount: parse(&row.get::<String, _>(6))?,
                order_id: order as u64,
                side,
                is_maker,
                fee: parse(&fee)?,
                client_order_id: 0,
            });
        }
        Ok(fills)
    }

    /// A user's orders (latest state), newest first, optionally on one market; `before_order_id`
    /// pages back.
    ///
    /// # Errors
    /// Database errors.
    pub async fn orders(
        &self,
        user_id: u64,
        market_id: Option<u32>,
        before_order_id: Option<u64>,
        limit: u32,
    ) -> Result<Vec<OrderRecord>, SinkError> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders o
             WHERE o.user_id = $1 AND ($2::int IS NULL OR o.market_id = $2) AND ($3::bigint IS NULL OR o.order_id < $3)
             ORDER BY o.order_id DESC LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(signed(user_id)?)
            .bind(market_id.map(|m| m as i32))
            .bind(before_order_id.map(signed).transpose()?)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(order_record).collect()
    }

    /// The page of `user_id`'s rows that `filter` selects from a history query (`sql`, as
    /// [`order_history_sql`] and [`fill_history_sql`] build it: user, market, order id, from, to,
    /// limit and offset as `$1`..`$7`), with the number of matching rows ([`counted`]). Shared so
    /// that both histories bind their filters the same way.
    async fn history_page(
        &self,
        sql: &str,
        user_id: u64,
        filter: &HistoryFilter,
    ) -> Result<(Vec<sqlx::postgres::PgRow>, u64), SinkError> {
        let (user, pool) = (signed(user_id)?, &self.pool);
        counted(filter, |page| async move {
            sqlx::query(sql)
                .bind(user)
                .bind(page.market_id.map(|m| m as i32))
                .bind(page.order_id.map(saturating))
                .bind(saturating(page.from_ns))
                .bind(saturating(page.to_ns))
                .bind(i64::from(page.limit))
                .bind(i64::from(page.offset))
                .fetch_all(pool)
                .await
                .map_err(db)
        })
        .await
    }

    /// A user's orders (latest state) matching `filter`, by order id (newest first unless
    /// `filter.ascending`); `from_ns` / `to_ns` bound the creation time. With the number of
    /// matching orders.
    ///
    /// # Errors
    /// Database errors.
    pub async fn order_history(&self, user_id: u64, filter: &HistoryFilter) -> Result<Paged<OrderRecord>, SinkError> {
        let (rows, total) = self.history_page(&order_history_sql(filter.ascending), user_id, filter).await?;
        Ok(Paged { rows: rows.iter().map(order_record).collect::<Result<_, _>>()?, total })
    }

    /// A user's fills matching `filter`: one per side the user took in a trade (a self-trade
    /// gives two), by engine sequence (newest first unless `filter.ascending`). With the number of
    /// matching fills.
    ///
    /// # Errors
    /// Database errors.
    pub async fn fill_history(&self, user_id: u64, filter: &HistoryFilter) -> Result<Paged<FillRecord>, SinkError> {
        let (rows, total) = self.history_page(&fill_history_sql(filter.ascending), user_id, filter).await?;
        let rows = rows
            .iter()
            .map(|row| {
                Ok(FillRecord {
                    market_id: row.get::<i32, _>(0) as u32,
                    trade_id: row.get::<i64, _>(1) as u64,
                    sequence: row.get::<i64, _>(2) as u64,
                    timestamp_ns: row.get::<i64, _>(3) as u64,
                    price_ticks: parse(&row.get::<String, _>(4))?,
                    quantity_lots: parse(&row.get::<String, _>(5))?,
                    quote_amount: parse(&row.get::<String, _>(6))?,
                    order_id: row.get::<i64, _>(7) as u64,
                    fee: parse(&row.get::<String, _>(8))?,
                    side: row.get::<i16, _>(9) as u8,
                    is_maker: row.get(10),
                    client_order_id: parse(&row.get::<String, _>(11))?,
                })
            })
            .collect::<Result<_, SinkError>>()?;
        Ok(Paged { rows, total })
    }

    /// A market's trades: `limit` of them after skipping the `offset` most recent, oldest first
    /// (by trade id, the primary key's order).
    ///
    /// # Errors
    /// Database errors.
    pub async fn market_trades(&self, market_id: u32, limit: u32, offset: u64) -> Result<Vec<MarketTrade>, SinkError> {
        let rows = sqlx::query(
            "SELECT trade_id, timestamp_ns, price_ticks::text, quantity_lots::text, quote_amount::text, taker_side
             FROM (SELECT * FROM trades WHERE market_id = $1 ORDER BY trade_id DESC LIMIT $2 OFFSET $3) recent
             ORDER BY trade_id ASC",
        )
        .bind(i32::try_from(market_id).map_err(|_| db(format!("postgres: market {market_id} exceeds INTEGER")))?)
        .bind(i64::from(limit))
        .bind(saturating(offset))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(MarketTrade {
                    trade_id: row.get::<i64, _>(0) as u64,
                    timestamp_ns: row.get::<i64, _>(1) as u64,
                    price_ticks: parse(&row.get::<String, _>(2))?,
                    quantity_lots: parse(&row.get::<String, _>(3))?,
                    quote_amount: parse(&row.get::<String, _>(4))?,
                    taker_side: row.get::<i16, _>(5) as u8,
                })
            })
            .collect()
    }

    /// A market's klines: trades grouped by `buckets`, for the buckets starting in `[from_s,
    /// to_s)` (seconds; `from_s` should be a bucket start), oldest first, at most `limit`, only
    /// buckets with trades. Integer and `NUMERIC` arithmetic throughout. Reads the market's
    /// trades of `[from_s, to_s + the longest bucket)` through the `trades_by_market_time` index
    /// ([`klines_sql`]).
    ///
    /// # Errors
    /// Database errors.
    pub async fn klines(
        &self,
        market_id: u32,
        buckets: KlineBuckets,
        from_s: u64,
        to_s: u64,
        limit: u32,
    ) -> Result<Vec<KlineRow>, SinkError> {
        let sql = klines_sql(buckets);
        // A trade in a bucket starting before `to_s` is less than a bucket's length after it.
        let trades_before_s = to_s.saturating_add(buckets.longest_s());
        let rows = sqlx::query(&sql)
            .bind(i32::try_from(market_id).map_err(|_| db(format!("postgres: market {market_id} exceeds INTEGER")))?)
            .bind(saturating(from_s.saturating_mul(1_000_000_000)))
            .bind(saturating(to_s))
            .bind(i64::from(limit))
            .bind(saturating(trades_before_s.saturating_mul(1_000_000_000)))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let wide = |text: String| text.parse::<u128>().map_err(|_| db(format!("not a u128 sum: {text}")));
        rows.into_iter()
            .map(|row| {
                Ok(KlineRow {
                    start: row.get::<i64, _>(0) as u64,
                    open: parse(&row.get::<String, _>(1))?,
                    high: parse(&row.get::<String, _>(2))?,
                    low: parse(&row.get::<String, _>(3))?,
                    close: parse(&row.get::<String, _>(4))?,
                    volume_lots: wide(row.get(5))?,
                    quote_volume: wide(row.get(6))?,
                    trades: row.get::<i64, _>(7) as u64,
                })
            })
            .collect()
    }

    /// A user's deposits or withdrawals matching `filter` (its time range and page; transfers
    /// have no market and no order, so its `market_id` and `order_id` must be `None`): the
    /// ledger entries between the user's available account and `external` with the reason
    /// `kind` names, by engine sequence (newest first unless `filter.ascending`). Entries
    /// written before the ledger stored times have time 0 (migrations/20261125000002). With the
    /// number of matching entries.
    ///
    /// # Errors
    /// Database errors; a filter on a market or an order.
    pub async fn transfers(
        &self,
        user_id: u64,
        kind: TransferKind,
        filter: &HistoryFilter,
    ) -> Result<Paged<TransferRow>, SinkError> {
        if filter.market_id.is_some() || filter.order_id.is_some() {
            return Err(db("transfers have no market and no order to filter on"));
        }
        let sql = transfers_sql(kind, filter.ascending);
        let (user_account, sql, pool) = (&account(user_id, "available"), &sql, &self.pool);
        let (rows, total) = counted(filter, |page| async move {
            sqlx::query(sql)
                .bind(user_account)
                .bind(saturating(page.from_ns))
                .bind(saturating(page.to_ns))
                .bind(i64::from(page.limit))
                .bind(i64::from(page.offset))
                .fetch_all(pool)
                .await
                .map_err(db)
        })
        .await?;
        let rows = rows
            .iter()
            .map(|row| {
                Ok(TransferRow {
                    sequence: row.get::<i64, _>(0) as u64,
                    asset_id: row.get::<i32, _>(1) as u32,
                    amount: parse(&row.get::<String, _>(2))?,
                    timestamp_ns: row.get::<i64, _>(3) as u64,
                })
            })
            .collect::<Result<_, SinkError>>()?;
        Ok(Paged { rows, total })
    }

    /// A user's balances: (asset id, available, locked).
    ///
    /// # Errors
    /// Database errors.
    pub async fn balances(&self, user_id: u64) -> Result<Vec<(u32, u64, u64)>, SinkError> {
        let rows = sqlx::query(
            "SELECT asset_id, available::text, locked::text FROM balances WHERE user_id = $1 ORDER BY asset_id",
        )
        .bind(signed(user_id)?)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|row| {
                Ok((row.get::<i32, _>(0) as u32, parse(&row.get::<String, _>(1))?, parse(&row.get::<String, _>(2))?))
            })
            .collect()
    }

    /// The last sequence the Postgres sink applied.
    ///
    /// # Errors
    /// Database errors.
    pub async fn progress(&self) -> Result<u64, SinkError> {
        let value: Option<i64> = sqlx::query_scalar("SELECT last_sequence FROM sink_progress WHERE sink = $1")
            .bind(SINK)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(value.unwrap_or(0) as u64)
    }

    /// The underlying pool (for ad-hoc queries in tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// Every file of `migrations/` is embedded, with its version and exact text, in order: a
    /// file added without its line here would never run at start.
    #[test]
    fn every_migration_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
        let mut files: Vec<(i64, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "sql"))
            .map(|path| {
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                let version = name.split('_').next().unwrap().parse().unwrap();
                (version, std::fs::read_to_string(&path).unwrap())
            })
            .collect();
        files.sort();
        let embedded: Vec<(i64, String)> = MIGRATIONS.iter().map(|(v, _, sql)| (*v, sql.to_string())).collect();
        assert_eq!(embedded, files);
    }
}
