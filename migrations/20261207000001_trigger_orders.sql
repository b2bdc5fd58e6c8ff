-- Trigger orders (stop / take-profit, issue #20) and attached stop-loss / take-profit in the order
-- history. A trigger order gets its row when it is placed (engine TriggerPending), with status
-- 'trigger_pending'; when it fires (TriggerPlaced) it becomes 'new' and follows the ordinary
-- statuses; when the order it carries cannot be placed it ends 'trigger_failed' with the reason.
-- The sink fills the new columns from the events (sinks/src/postgres.rs, Rows::build); the REST
-- order history shows them as Backpack's triggerPrice / triggerBy / triggerQuantity and
-- stopLossTriggerPrice / stopLossLimitPrice / takeProfitTriggerPrice / takeProfitLimitPrice.
--
-- The status constraint of the init migration is replaced by one that also allows the two
-- trigger statuses (a CHECK cannot be altered in place; the inline constraint's name is
-- Postgres's default, orders_status_check). Existing rows satisfy both.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN
    ('new', 'partially_filled', 'filled', 'canceled', 'expired', 'trigger_pending', 'trigger_failed'));

-- NULL for an order that was never a trigger order. The trigger kind is the engine's
-- codec::TriggerKind code as it recorded the order (1 Stop, 2 TakeProfit); every trigger fires on
-- the last trade price (Backpack's triggerBy LastPrice, the only one there is), so triggerBy needs
-- no column.
ALTER TABLE orders ADD COLUMN trigger_price_ticks NUMERIC(20, 0);
ALTER TABLE orders ADD COLUMN trigger_kind SMALLINT;
-- Why a fired trigger order could not be placed: the codec::RejectReason code of the engine's
-- TriggerFailed event; NULL unless status is 'trigger_failed'.
ALTER TABLE orders ADD COLUMN trigger_failed_reason SMALLINT;

-- Attached stop-loss / take-profit of a parent order, as accepted (engine OrderAccepted since
-- schema version 3); NULL when not set. A limit price NULL with its trigger set: a market child.
ALTER TABLE orders ADD COLUMN stop_loss_trigger_ticks NUMERIC(20, 0);
ALTER TABLE orders ADD COLUMN stop_loss_limit_ticks NUMERIC(20, 0);
ALTER TABLE orders ADD COLUMN take_profit_trigger_ticks NUMERIC(20, 0);
ALTER TABLE orders ADD COLUMN take_profit_limit_ticks NUMERIC(20, 0);
