-- The exchange's Postgres schema, written by the Postgres sink (sinks/src/postgres.rs) from the
-- engine's event stream. Every amount is an exact integer in the engine's units (NUMERIC(20,0)
-- holds any u64): prices in ticks, quantities in lots, balances and fees in the asset's minor
-- units. Nothing here is written by anything but the sink; the engine's journal stays the source
-- of truth and this database can be rebuilt from it.

-- Reference data, upserted from the configuration at every start.
CREATE TABLE assets (
    asset_id   INTEGER PRIMARY KEY,
    symbol     TEXT NOT NULL UNIQUE,
    decimals   SMALLINT NOT NULL
);

CREATE TABLE markets (
    market_id      INTEGER PRIMARY KEY,
    symbol         TEXT NOT NULL UNIQUE,
    base_asset_id  INTEGER NOT NULL REFERENCES assets,
    quote_asset_id INTEGER NOT NULL REFERENCES assets,
    tick_size      NUMERIC(20, 0) NOT NULL,  -- quote minor units per tick
    lot_size       NUMERIC(20, 0) NOT NULL,  -- base minor units per lot
    maker_fee_ppm  INTEGER NOT NULL,
    taker_fee_ppm  INTEGER NOT NULL
);

-- Users appear with their first event (or their API key).
CREATE TABLE users (
    user_id        BIGINT PRIMARY KEY,
    first_sequence BIGINT NOT NULL
);

-- Ed25519 public keys from the configuration.
CREATE TABLE api_keys (
    public_key BYTEA PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users
);

-- Orders in their latest state (the full history is in order_events).
CREATE TABLE orders (
    order_id              BIGINT PRIMARY KEY,
    user_id               BIGINT NOT NULL,
    market_id             INTEGER NOT NULL,
    client_order_id       NUMERIC(20, 0) NOT NULL,
    side                  SMALLINT NOT NULL,           -- 1 bid, 2 ask (codec::Side)
    order_type            SMALLINT NOT NULL,           -- 1 limit, 2 market
    time_in_force         SMALLINT NOT NULL,           -- 1 GTC, 2 IOC, 3 FOK
    self_trade_prevention SMALLINT NOT NULL,
    post_only             BOOLEAN NOT NULL,
    price_ticks           NUMERIC(20, 0) NOT NULL,
    quantity_lots         NUMERIC(20, 0) NOT NULL,
    quote_quantity        NUMERIC(20, 0) NOT NULL,
    filled_lots           NUMERIC(20, 0) NOT NULL,
    remaining_lots        NUMERIC(20, 0) NOT NULL,
    status                TEXT NOT NULL CHECK (status IN ('new', 'partially_filled', 'filled', 'canceled', 'expired')),
    created_sequence      BIGINT NOT NULL,
    updated_sequence      BIGINT NOT NULL,
    created_ns            BIGINT NOT NULL,
    updated_ns            BIGINT NOT NULL
);
CREATE INDEX orders_by_user ON orders (user_id, order_id DESC);

-- Every order lifecycle event (accepted, rejected, fill, canceled, expired, replaced, mass cancel
-- report), market status change (user 0) and AMM pool event (liquidity added / removed, swap
-- executed, order routed), one row per event, keyed by the command's sequence and the event's
-- index in it.
CREATE TABLE order_events (
    sequence     BIGINT NOT NULL,
    event_index  INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    user_id      BIGINT NOT NULL,
    market_id    INTEGER NOT NULL,
    order_id     BIGINT,
    timestamp_ns BIGINT NOT NULL,
    details      JSONB NOT NULL,                       -- the event as JSON (sinks::json)
    PRIMARY KEY (sequence, event_index)
);
CREATE INDEX order_events_by_user ON order_events (user_id, sequence DESC);

-- Trades; trade ids are sequential per market.
CREATE TABLE trades (
    market_id             INTEGER NOT NULL,
    trade_id              BIGINT NOT NULL,
    sequence              BIGINT NOT NULL,
    timestamp_ns          BIGINT NOT NULL,
    price_ticks           NUMERIC(20, 0) NOT NULL,
    quantity_lots         NUMERIC(20, 0) NOT NULL,
    quote_amount          NUMERIC(20, 0) NOT NULL,
    taker_side            SMALLINT NOT NULL,
    maker_user_id         BIGINT NOT NULL,
    maker_order_id        BIGINT NOT NULL,
    maker_fee             NUMERIC(20, 0) NOT NULL,
    taker_user_id         BIGINT NOT NULL,
    taker_order_id        BIGINT NOT NULL,
    taker_fee             NUMERIC(20, 0) NOT NULL,
    PRIMARY KEY (market_id, trade_id)
);
CREATE INDEX trades_by_maker ON trades (maker_user_id, sequence DESC);
CREATE INDEX trades_by_taker ON trades (taker_user_id, sequence DESC);

-- Double-entry ledger: every balance change is one row that debits one account and credits
-- another by the same amount, referencing the engine sequence that caused it. Accounts:
--   user:<id>:available, user:<id>:locked   a user's balances (credit-normal)
--   external                                deposits come from it, withdrawals go to it
--   clearing                                trade settlement within one command (nets to zero)
--   fees                                    fees collected
-- An account's balance is SUM(credits) - SUM(debits); per asset all accounts sum to zero.
CREATE TABLE ledger_entries (
    sequence       BIGINT NOT NULL,
    entry_index    INTEGER NOT NULL,
    asset_id       INTEGER NOT NULL,
    debit_account  TEXT NOT NULL,
    credit_account TEXT NOT NULL,
    amount         NUMERIC(20, 0) NOT NULL CHECK (amount > 0),
    reason         SMALLINT NOT NULL,                  -- codec::BalanceChange, 0 for fee
    PRIMARY KEY (sequence, entry_index)
);
CREATE INDEX ledger_by_credit ON ledger_entries (credit_account, asset_id);
CREATE INDEX ledger_by_debit ON ledger_entries (debit_account, asset_id);

-- Balances as of the sink's last applied sequence.
CREATE TABLE balances (
    user_id   BIGINT NOT NULL,
    asset_id  INTEGER NOT NULL,
    available NUMERIC(20, 0) NOT NULL,
    locked    NUMERIC(20, 0) NOT NULL,
    sequence  BIGINT NOT NULL,
    PRIMARY KEY (user_id, asset_id)
);

-- The last engine sequence applied, updated in the same transaction as the rows it covers:
-- this is what makes the sink exactly once.
CREATE TABLE sink_progress (
    sink          TEXT PRIMARY KEY,
    last_sequence BIGINT NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
