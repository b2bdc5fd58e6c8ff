-- The time of the command behind each ledger entry, and indexes to list a user's deposits and
-- withdrawals (sinks::postgres::Queries::transfers, the REST GET /wapi/v1/capital/deposits and
-- /wapi/v1/capital/withdrawals). A deposit is the entry that debits `external` and credits
-- `user:<id>:available` with reason 1 (codec::BalanceChange::Deposit); a withdrawal debits
-- `user:<id>:available` and credits `external` with reason 2 (Withdrawal). Its id is the engine
-- sequence, its time the command's, as the REST API's in-memory history shows them. The indexes
-- are partial (only those entries) and in the lists' order (sequence, then entry index), so a
-- page is read in order, without sorting the user's whole history.
--
-- Entries written before this migration get time 0 (1970-01-01): the events that carried their
-- time are in the journal, not here (a database rebuilt from the journal has every time). They are
-- still listed. Adding a column with a constant default rewrites nothing (Postgres 11+); the default
-- is dropped at once, so the sink must give every new entry its time.
ALTER TABLE ledger_entries ADD COLUMN timestamp_ns BIGINT NOT NULL DEFAULT 0;
ALTER TABLE ledger_entries ALTER COLUMN timestamp_ns DROP DEFAULT;

CREATE INDEX ledger_deposits ON ledger_entries (credit_account, sequence, entry_index)
    WHERE reason = 1 AND debit_account = 'external';
CREATE INDEX ledger_withdrawals ON ledger_entries (debit_account, sequence, entry_index)
    WHERE reason = 2 AND credit_account = 'external';
