-- One market's trades by time, for the klines query (sinks::postgres::Queries::klines):
--     ... FROM trades WHERE market_id = $1 AND timestamp_ns >= $2 AND timestamp_ns < $5
-- Without it the query read every trade of the market (the primary key orders them by trade id,
-- not by time). The public trade history (Queries::market_trades, by market and trade id) and a
-- user's fills (trades_by_maker / trades_by_taker) keep their own indexes.
--
-- A plain CREATE INDEX (inside the migration's transaction) blocks writes to `trades` while it is
-- built: the sink waits at start-up, the engine does not (the sink catches up from the journal).
CREATE INDEX trades_by_market_time ON trades (market_id, timestamp_ns);
