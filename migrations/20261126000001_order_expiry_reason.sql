-- Why an order expired: the engine's codec::ExpireReason code (1 ImmediateOrCancel,
-- 2 NoLiquidity, 3 FundsExhausted), NULL unless status is 'expired'. The REST order history
-- shows it as Backpack's expiryReason (marketdata::expiry_reason_name).
ALTER TABLE orders ADD COLUMN expire_reason SMALLINT;
