//! The REST fill, order, deposit, withdrawal and public trade history read from the Postgres
//! sink's tables ([`gateway_json::history::HistorySource`] and [`gateway_json::TradeSource`] over
//! [`sinks::postgres::Queries`]).
//!
//! When `[sinks.postgres]` is configured, `GET /wapi/v1/history/fills`, `/wapi/v1/history/orders`,
//! `/wapi/v1/capital/deposits`, `/wapi/v1/capital/withdrawals`, `/api/v1/trades/history` and
//! `/api/v1/klines` answer from Postgres alone: complete, and the same after a restart. The sink
//! writes a few milliseconds behind the engine, so a trade made just before the query can be
//! missing from the answer until the sink has written it. A failed query answers `503`.

use codec::{
    AssetId, ClientOrderId, ExpireReason, MarketId, OrderId, OrderType, SelfTradePrevention, Side, TimeInForce, UserId,
    WireEnum,
};
use gateway_json::accounts::AttachedTriggers;
use gateway_json::history::{
    FillRecord, HistoryFuture, HistoryPage, HistoryPageFuture, HistoryQuery, HistorySource, StoredOrder, TransferRecord,
};
use gateway_json::{OpenOrder, TradeSource};
use marketdata::{Candle, KlineInterval, TradeRecord};
use sinks::postgres::{HistoryFilter, KlineBuckets, Paged, Queries, TransferKind};

/// History from the Postgres sink's tables.
#[derive(Debug, Clone)]
pub struct PostgresHistory {
    queries: Queries,
}

impl PostgresHistory {
    /// A lazily connecting reader of the sink's database at `url` (call inside a Tokio runtime).
    ///
    /// # Errors
    /// Bad URL.
    pub fn new(url: &str) -> Result<Self, String> {
        Ok(Self { queries: Queries::connect_lazy(url).map_err(|e| e.to_string())? })
    }
}

fn filter(query: &HistoryQuery) -> HistoryFilter {
    HistoryFilter {
        market_id: query.market.map(MarketId::get),
        order_id: query.order.map(OrderId::get),
        from_ns: query.from_ns,
        to_ns: query.to_ns,
        ascending: query.ascending,
        limit: query.limit,
        offset: query.offset,
    }
}

/// A page of rows as the handlers' page of records, each row converted by `record`.
fn page<R, T>(paged: Paged<R>, record: impl FnMut(R) -> Result<T, String>) -> Result<HistoryPage<T>, String> {
    let total = usize::try_from(paged.total).map_err(|_| format!("postgres: count {} exceeds usize", paged.total))?;
    Ok(HistoryPage { records: paged.rows.into_iter().map(record).collect::<Result<_, _>>()?, total })
}

/// A stored wire code as its enum, or an error naming the bad value.
fn code<T: WireEnum>(value: u8) -> Result<T, String> {
    T::from_code(u16::from(value)).ok_or_else(|| format!("postgres: bad {} code {value}", T::NAME))
}

/// Backpack's name of a stored order status.
fn status(stored: &str) -> Result<&'static str, String> {
    Ok(match stored {
        "new" => "New",
        "partially_filled" => "PartiallyFilled",
        "filled" => "Filled",
        "canceled" => "Cancelled",
        "expired" => "Expired",
        "trigger_pending" => "TriggerPending",
        "trigger_failed" => "TriggerFailed",
        other => return Err(format!("postgres: unknown order status {other}")),
    })
}

impl PostgresHistory {
    /// The user's deposits or withdrawals from the ledger, as the in-memory history records them:
    /// id = engine sequence, time = the command's (no request details: they are not stored).
    fn transfers(
        &self,
        user: UserId,
        kind: TransferKind,
        query: HistoryQuery,
    ) -> HistoryPageFuture<'_, TransferRecord> {
        Box::pin(async move {
            let rows = self.queries.transfers(user.get(), kind, &filter(&query)).await.map_err(|e| e.to_string())?;
            page(rows, |row| {
                Ok(TransferRecord {
                    id: row.sequence,
                    asset_id: AssetId::new(row.asset_id),
                    amount: row.amount,
                    timestamp_ns: row.timestamp_ns,
                    details: None,
                })
            })
        })
    }
}

impl HistorySource for PostgresHistory {
    fn fills(&self, user: UserId, query: HistoryQuery) -> HistoryPageFuture<'_, FillRecord> {
        Box::pin(async move {
            let rows = self.queries.fill_history(user.get(), &filter(&query)).await.map_err(|e| e.to_string())?;
            page(rows, |row| {
                Ok(FillRecord {
                    trade_id: row.trade_id,
                    order_id: OrderId::new(row.order_id),
                    client_order_id: ClientOrderId::new(row.client_order_id),
                    market_id: MarketId::new(row.market_id),
                    side: code::<Side>(row.side)?,
                    price_ticks: row.price_ticks,
                    quantity_lots: row.quantity_lots,
                    fee: row.fee,
                    is_maker: row.is_maker,
                    timestamp_ns: row.timestamp_ns,
                })
            })
        })
    }

    fn orders(&self, user: UserId, query: HistoryQuery) -> HistoryPageFuture<'_, StoredOrder> {
        Box::pin(async move {
            let rows = self.queries.order_history(user.get(), &filter(&query)).await.map_err(|e| e.to_string())?;
            page(rows, |row| {
                Ok(StoredOrder {
                    order: OpenOrder {
                        order_id: OrderId::new(row.order_id),
                        client_order_id: ClientOrderId::new(row.client_order_id),
                        market_id: MarketId::new(row.market_id),
                        side: code::<Side>(row.side)?,
                        order_type: code::<OrderType>(row.order_type)?,
                        price_ticks: row.price_ticks,
                        quantity_lots: row.quantity_lots,
                        quote_quantity: row.quote_quantity,
                        filled_lots: row.filled_lots,
                        executed_quote: row.executed_quote,
                        time_in_force: code::<TimeInForce>(row.time_in_force)?,
                        self_trade_prevention: code::<SelfTradePrevention>(row.self_trade_prevention)?,
                        post_only: row.post_only,
                        created_ns: row.created_ns,
                        // Kept after the order fired: the history says it was a trigger order.
                        trigger_price_ticks: row.trigger_price_ticks.unwrap_or(0),
                        attached: AttachedTriggers {
                            stop_loss_trigger_ticks: row.stop_loss_trigger_ticks.unwrap_or(0),
                            stop_loss_limit_ticks: row.stop_loss_limit_ticks.unwrap_or(0),
                            take_profit_trigger_ticks: row.take_profit_trigger_ticks.unwrap_or(0),
                            take_profit_limit_ticks: row.take_profit_limit_ticks.unwrap_or(0),
                        },
                    },
                    status: status(&row.status)?,
                    expiry_reason: row
                        .expire_reason
                        .map(|code| marketdata::expiry_reason_name(ExpireReason::from_code(u16::from(code)))),
                })
            })
        })
    }

    fn deposits(&self, user: UserId, query: HistoryQuery) -> HistoryPageFuture<'_, TransferRecord> {
        self.transfers(user, TransferKind::Deposit, query)
    }

    fn withdrawals(&self, user: UserId, query: HistoryQuery) -> HistoryPageFuture<'_, TransferRecord> {
        self.transfers(user, TransferKind::Withdrawal, query)
    }
}

impl TradeSource for PostgresHistory {
    fn trades(&self, market: MarketId, limit: u32, offset: u64) -> HistoryFuture<'_, TradeRecord> {
        Box::pin(async move {
            let rows = self.queries.market_trades(market.get(), limit, offset).await.map_err(|e| e.to_string())?;
            rows.into_iter()
                .map(|row| {
                    Ok(TradeRecord {
                        id: row.trade_id,
                        price_ticks: row.price_ticks,
                        quantity_lots: row.quantity_lots,
                        quote_amount: row.quote_amount,
                        timestamp_ns: row.timestamp_ns,
                        // The taker sold: the buyer was the maker.
                        buyer_is_maker: code::<Side>(row.taker_side)? == Side::Ask,
                    })
                })
                .collect()
        })
    }

    fn klines(
        &self,
        market: MarketId,
        interval: KlineInterval,
        start: u64,
        end: u64,
        max: u32,
    ) -> HistoryFuture<'_, Candle> {
        Box::pin(async move {
            let buckets = match interval {
                KlineInterval::Seconds(length) => KlineBuckets::Seconds(length),
                KlineInterval::Week => KlineBuckets::Week,
                KlineInterval::Month => KlineBuckets::Month,
            };
            let from = interval.bucket_start(start);
            let rows = self.queries.klines(market.get(), buckets, from, end, max).await.map_err(|e| e.to_string())?;
            Ok(rows
                .into_iter()
                .map(|row| Candle {
                    start: row.start,
                    end: interval.bucket_end(row.start),
                    open: row.open,
                    high: row.high,
                    low: row.low,
                    close: row.close,
                    volume_lots: row.volume_lots,
                    quote_volume: row.quote_volume,
                    trades: row.trades,
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_status_has_a_backpack_name() {
        for (stored, name) in [
            ("new", "New"),
            ("partially_filled", "PartiallyFilled"),
            ("filled", "Filled"),
            ("canceled", "Cancelled"),
            ("expired", "Expired"),
            ("trigger_pending", "TriggerPending"),
            ("trigger_failed", "TriggerFailed"),
        ] {
            assert_eq!(status(stored), Ok(name));
        }
        assert!(status("open").is_err());
    }

    #[test]
    fn bad_codes_are_errors_not_panics() {
        assert_eq!(code::<Side>(2), Ok(Side::Ask));
        assert!(code::<Side>(9).is_err());
        assert!(code::<TimeInForce>(0).is_err());
    }
}
