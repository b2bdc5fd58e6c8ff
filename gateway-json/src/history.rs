//! Per-user history kept in memory from the engine's events: fills, orders that left the book,
//! deposits and withdrawals, newest first and bounded per user ([`HISTORY_PER_USER_DEFAULT`]
//! records of each kind). The account views ([`crate::AccountViews`]) feed it from the egress
//! events; the signed `GET /wapi/v1/history/*` and `/wapi/v1/capital/*` endpoints read it.
//!
//! Only what happened since the server started is here, and only the newest records of each
//! user. When a store is configured ([`HistorySource`], the Postgres sink in the exchange binary),
//! `GET /wapi/v1/history/fills`, `/wapi/v1/history/orders`, `/wapi/v1/capital/deposits` and
//! `/wapi/v1/capital/withdrawals` answer from it instead, complete and surviving restarts
//! (docs/rest-api.md).

use crate::accounts::OpenOrder;
use crate::auth::{self, SignedParams};
use crate::private::PrivateState;
use crate::{ApiError, ApiResult};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use codec::{AssetId, ClientOrderId, MarketId, OrderId, Side, UserId};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;

/// Records of each kind kept per user (fills, closed orders, deposits, withdrawals).
pub const HISTORY_PER_USER_DEFAULT: usize = 1_000;

/// One side of a trade, as one user saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillRecord {
    /// Trade id, sequential per market.
    pub trade_id: u64,
    /// The user's order.
    pub order_id: OrderId,
    /// The order's client id (0: none).
    pub client_order_id: ClientOrderId,
    /// Market.
    pub market_id: MarketId,
    /// The user's side.
    pub side: Side,
    /// Trade price, ticks.
    pub price_ticks: u64,
    /// Trade quantity, lots.
    pub quantity_lots: u64,
    /// Fee charged to the user, quote minor units.
    pub fee: u64,
    /// Whether the user's order was the resting one.
    pub is_maker: bool,
    /// Trade time, ns.
    pub timestamp_ns: u64,
}

/// How an order left the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedStatus {
    /// Completely filled.
    Filled,
    /// Cancelled (by the user, a mass cancel, self-trade prevention or an operator).
    Cancelled,
    /// Its unfilled remainder expired (IOC, FOK, market orders), for the reason named (Backpack's
    /// `OrderExpiryReason`, see [`marketdata::expiry_reason_name`]).
    Expired(&'static str),
    /// A trigger order fired but the order it carried could not be placed.
    TriggerFailed,
}

impl ClosedStatus {
    /// Backpack's name of the status.
    pub fn name(self) -> &'static str {
        match self {
            Self::Filled => "Filled",
            Self::Cancelled => "Cancelled",
            Self::Expired(_) => "Expired",
            Self::TriggerFailed => "TriggerFailed",
        }
    }

    /// Backpack's `expiryReason`: the reason of an expiry, `None` otherwise.
    pub fn expiry_reason(self) -> Option<&'static str> {
        match self {
            Self::Expired(reason) => Some(reason),
            Self::Filled | Self::Cancelled | Self::TriggerFailed => None,
        }
    }
}

/// An order that is no longer open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedOrder {
    /// The order as it was when it closed (fills included).
    pub order: OpenOrder,
    /// How it closed.
    pub status: ClosedStatus,
}

/// A deposit or a withdrawal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRecord {
    /// The engine sequence of the command: unique and stable.
    pub id: u64,
    /// Asset.
    pub asset_id: AssetId,
    /// Amount, the asset's minor units.
    pub amount: u64,
    /// Time of the command, ns.
    pub timestamp_ns: u64,
    /// What the withdrawal request named (none for deposits and operator withdrawals).
    pub details: Option<WithdrawalDetails>,
}

/// What a `POST /wapi/v1/capital/withdrawals` named; kept for display only (there is no
/// blockchain behind this exchange).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawalDetails {
    /// Destination address, as sent.
    pub address: String,
    /// Blockchain name, as sent.
    pub blockchain: String,
    /// The client's id of the request, as sent.
    pub client_id: Option<String>,
}

#[derive(Debug, Default)]
struct UserHistory {
    fills: VecDeque<FillRecord>,
    orders: VecDeque<ClosedOrder>,
    deposits: VecDeque<TransferRecord>,
    withdrawals: VecDeque<TransferRecord>,
}

/// The history of every user, bounded per user.
#[derive(Debug)]
pub struct History {
    users: RwLock<HashMap<UserId, UserHistory>>,
    per_user_max: usize,
}

impl Default for History {
    fn default() -> Self {
        Self::new(HISTORY_PER_USER_DEFAULT)
    }
}

fn push<T>(list: &mut VecDeque<T>, item: T, max: usize) {
    list.push_front(item);
    list.truncate(max.max(1));
}

impl History {
    /// Empty, keeping `per_user_max` records of each kind per user.
    pub fn new(per_user_max: usize) -> Self {
        Self { users: RwLock::new(HashMap::new()), per_user_max }
    }

    fn with_user(&self, user: UserId, update: impl FnOnce(&mut UserHistory, usize)) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        update(users.entry(user).or_default(), self.per_user_max);
    }

    fn read<T>(&self, user: UserId, read: impl FnOnce(&UserHistory) -> T) -> Option<T> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.get(&user).map(read)
    }

    /// Records one side of a trade.
    pub fn record_fill(&self, user: UserId, fill: FillRecord) {
        self.with_user(user, |history, max| push(&mut history.fills, fill, max));
    }

    /// Records an order that left the book.
    pub fn record_closed(&self, user: UserId, order: OpenOrder, status: ClosedStatus) {
        self.with_user(user, |history, max| push(&mut history.orders, ClosedOrder { order, status }, max));
    }

    /// Records a deposit.
    pub fn record_deposit(&self, user: UserId, deposit: TransferRecord) {
        self.with_user(user, |history, max| push(&mut history.deposits, deposit, max));
    }

    /// Records a withdrawal.
    pub fn record_withdrawal(&self, user: UserId, withdrawal: TransferRecord) {
        self.with_user(user, |history, max| push(&mut history.withdrawals, withdrawal, max));
    }

    /// Attaches a withdrawal request's details to the user's withdrawal `id`; returns the
    /// record, or `None` when the user has no such withdrawal.
    pub fn annotate_withdrawal(&self, user: UserId, id: u64, details: WithdrawalDetails) -> Option<TransferRecord> {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        let record = users.get_mut(&user)?.withdrawals.iter_mut().find(|w| w.id == id)?;
        record.details = Some(details);
        Some(record.clone())
    }

    /// Attaches to each of `withdrawals` (the user's, read from a store) the request details
    /// this history holds for the same id, if any.
    pub fn attach_withdrawal_details(&self, user: UserId, withdrawals: &mut [TransferRecord]) {
        self.read(user, |h| {
            for withdrawal in withdrawals.iter_mut() {
                if let Some(known) = h.withdrawals.iter().find(|w| w.id == withdrawal.id) {
                    withdrawal.details.clone_from(&known.details);
                }
            }
        });
    }

    /// A user's fills, newest first, that `keep` accepts.
    pub fn fills(&self, user: UserId, keep: impl Fn(&FillRecord) -> bool) -> Vec<FillRecord> {
        self.read(user, |h| h.fills.iter().filter(|f| keep(f)).copied().collect()).unwrap_or_default()
    }

    /// A user's closed orders, most recently closed first, that `keep` accepts.
    pub fn closed_orders(&self, user: UserId, keep: impl Fn(&ClosedOrder) -> bool) -> Vec<ClosedOrder> {
        self.read(user, |h| h.orders.iter().filter(|o| keep(o)).copied().collect()).unwrap_or_default()
    }

    /// One of a user's closed orders.
    pub fn closed_order(&self, user: UserId, order_id: OrderId) -> Option<ClosedOrder> {
        self.read(user, |h| h.orders.iter().find(|o| o.order.order_id == order_id).copied()).flatten()
    }

    /// A user's deposits, newest first.
    pub fn deposits(&self, user: UserId) -> Vec<TransferRecord> {
        self.read(user, |h| h.deposits.iter().cloned().collect()).unwrap_or_default()
    }

    /// A user's withdrawals, newest first.
    pub fn withdrawals(&self, user: UserId) -> Vec<TransferRecord> {
        self.read(user, |h| h.withdrawals.iter().cloned().collect()).unwrap_or_default()
    }
}

// ----------------------------------------------------------------------------------------------
// A durable store of history.
// ----------------------------------------------------------------------------------------------

/// The filters and page of a history query, as the store sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only this market.
    pub market: Option<MarketId>,
    /// Only this order (of the user).
    pub order: Option<OrderId>,
    /// Earliest time, ns, inclusive (fills: trade time; orders: creation time).
    pub from_ns: u64,
    /// Latest time, ns, inclusive.
    pub to_ns: u64,
    /// Oldest first (else newest first).
    pub ascending: bool,
    /// Records to return at most.
    pub limit: u32,
    /// Records to skip first (in the requested direction).
    pub offset: u32,
}

/// An order in its latest state, read from a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredOrder {
    /// The order (fills so far included).
    pub order: OpenOrder,
    /// Backpack's name of its status: `New`, `PartiallyFilled`, `Filled`, `Cancelled`, `Expired`,
    /// `TriggerPending` or `TriggerFailed`. For an order placed as a trigger order,
    /// `order.trigger_price_ticks` is its trigger price also after it fired.
    pub status: &'static str,
    /// Backpack's name of the reason it expired (`expiryReason`), `None` unless it expired.
    pub expiry_reason: Option<&'static str>,
}

/// What a store answers: records, or why the store could not be read.
pub type HistoryFuture<'a, T> = Pin<Box<dyn Future<Output = Result<Vec<T>, String>> + Send + 'a>>;

/// One page of a [`HistorySource`] answer and how many records matched the query in all (the
/// `X-TOTAL` header; the in-memory history counts the same way, see [`Page::apply_counted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage<T> {
    /// At most the query's `limit` records, after its `offset`.
    pub records: Vec<T>,
    /// Records matching the query's filters (user, market, order, time range), every page
    /// together: also when the page is past the end and empty.
    pub total: usize,
}

/// What a [`HistorySource`] answers: a page with its total, or why the store could not be read.
pub type HistoryPageFuture<'a, T> = Pin<Box<dyn Future<Output = Result<HistoryPage<T>, String>> + Send + 'a>>;

/// A durable store of every user's fills, orders, deposits and withdrawals (the Postgres sink's
/// tables, wired in the exchange binary). When the private REST state has one, the fill, order,
/// deposit and withdrawal history endpoints answer from it alone: it is the source, the in-memory
/// [`History`] is not consulted (except for a withdrawal request's display-only details, which
/// no store holds: see [`HistorySource::withdrawals`]).
///
/// The store lags the engine by the sink's batching (normally milliseconds): a fill made just
/// before the query may be missing from the answer until the sink has written it.
pub trait HistorySource: Send + Sync {
    /// The user's fills matching `query`, newest first unless `query.ascending`, and how many
    /// matched.
    fn fills(&self, user: UserId, query: HistoryQuery) -> HistoryPageFuture<'_, FillRecord>;
    /// The user's orders (open and closed) matching `query`, newest first unless
    /// `query.ascending`, and how many matched.
    fn orders(&self, user: UserId, query: HistoryQuery) -> HistoryPageFuture<'_, StoredOrder>;
    /// The user's deposits in `query`'s time range and page (its `market` and `order` are
    /// `None`: a deposit has neither), by engine sequence, newest first unless `query.ascending`,
    /// and how many matched. Ids, amounts and times as [`History::deposits`] records them.
    fn deposits(&self, user: UserId, query: HistoryQuery) -> HistoryPageFuture<'_, TransferRecord>;
    /// The user's withdrawals, as [`HistorySource::deposits`]. Their `details` are `None`: what a
    /// withdrawal request named is not journaled, so the handler takes it from the in-memory
    /// [`History`] while that still holds the withdrawal.
    fn withdrawals(&self, user: UserId, query: HistoryQuery) -> HistoryPageFuture<'_, TransferRecord>;
}

/// `503 SERVICE_UNAVAILABLE` for a store that failed: details go to the log, not to the client.
pub(crate) fn store_unavailable(error: &str) -> ApiError {
    tracing::warn!(%error, "history store query failed");
    ApiError {
        status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
        code: "SERVICE_UNAVAILABLE",
        message: "History store unavailable, try again".into(),
    }
}

/// A store written under another configuration could name a market this server does not have:
/// `503` rather than a panic on the index.
fn known_markets(state: &PrivateState, mut markets: impl Iterator<Item = MarketId>) -> Result<(), ApiError> {
    let count = state.config.markets.len() as u64;
    match markets.find(|m| !(1..=count).contains(&u64::from(m.get()))) {
        None => Ok(()),
        Some(market) => Err(store_unavailable(&format!("the store names unknown market {}", market.get()))),
    }
}

// ----------------------------------------------------------------------------------------------
// The signed history endpoints.
// ----------------------------------------------------------------------------------------------

/// History records returned when `limit` is absent.
pub const HISTORY_LIMIT_DEFAULT: u64 = 100;
/// Largest history `limit`.
pub const HISTORY_LIMIT_MAX: u64 = 1_000;

/// A parameter by its camelCase name or, as some clients send it, its snake_case name.
pub(crate) fn either<'a>(params: &'a SignedParams, camel: &str, snake: &str) -> Option<&'a str> {
    params.get(camel).or_else(|| params.get(snake)).map(String::as_str)
}

/// An unsigned integer parameter (camelCase or snake_case name) within `range`.
pub(crate) fn number(
    params: &SignedParams,
    camel: &str,
    snake: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ApiError> {
    let Some(text) = either(params, camel, snake) else { return Ok(None) };
    let valid = !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| text.parse::<u64>().ok()).flatten().filter(|v| range.contains(v)).map(Some).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid {camel}: {text} (expected an integer from {} to {})",
            range.start(),
            range.end()
        ))
    })
}

/// `limit`, `offset`, `from` / `to` (ms, inclusive) and `sortDirection` of a history query.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Page {
    limit: usize,
    offset: usize,
    from_ns: u64,
    to_ns: u64,
    ascending: bool,
}

impl Page {
    pub(crate) fn parse(params: &SignedParams) -> Result<Self, ApiError> {
        let limit = number(params, "limit", "limit", 1..=HISTORY_LIMIT_MAX)?.unwrap_or(HISTORY_LIMIT_DEFAULT);
        let offset = number(params, "offset", "offset", 0..=u64::from(u32::MAX))?.unwrap_or(0);
        const MS_MAX: u64 = u64::MAX / 1_000_000;
        let from = number(params, "from", "from", 0..=MS_MAX)?.unwrap_or(0);
        let to = number(params, "to", "to", 0..=MS_MAX)?;
        if to.is_some_and(|to| to < from) {
            return Err(ApiError::bad_request("Invalid time range: to is before from"));
        }
        let ascending = match either(params, "sortDirection", "sort_direction") {
            None | Some("Desc") => false,
            Some("Asc") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!("Invalid sortDirection: {other} (expected Asc or Desc)")));
            }
        };
        Ok(Self {
            limit: limit as usize,
            offset: offset as usize,
            from_ns: from * 1_000_000,
            // `to` is inclusive to the millisecond.
            to_ns: to.map_or(u64::MAX, |to| to * 1_000_000 + 999_999),
            ascending,
        })
    }

    /// The store's form of this page with the given filters.
    pub(crate) fn query(&self, market: Option<MarketId>, order: Option<OrderId>) -> HistoryQuery {
        HistoryQuery {
            market,
            order,
            from_ns: self.from_ns,
            to_ns: self.to_ns,
            ascending: self.ascending,
            limit: self.limit as u32,
            offset: self.offset as u32,
        }
    }

    /// Whether a record at `timestamp_ns` lies in [from, to].
    pub(crate) fn contains(&self, timestamp_ns: u64) -> bool {
        (self.from_ns..=self.to_ns).contains(&timestamp_ns)
    }

    /// The requested page of `records` (newest first), in the requested direction, and how many
    /// records matched in all (for the pagination headers).
    pub(crate) fn apply_counted<T>(&self, mut records: Vec<T>) -> (Vec<T>, usize) {
        let total = records.len();
        if self.ascending {
            records.reverse();
        }
        (records.into_iter().skip(self.offset).take(self.limit).collect(), total)
    }

    /// The JSON array `items` with Backpack's pagination headers: `X-PAGE-SIZE` (the limit),
    /// `X-CURRENT-PAGE` (1-based, the page the offset falls in), `X-TOTAL` (`total`, the records
    /// matching the query in all) and `X-PAGE-COUNT`.
    pub(crate) fn respond(&self, total: usize, items: Vec<Value>) -> ApiResult {
        use axum::response::IntoResponse;
        let mut response = axum::Json(Value::Array(items)).into_response();
        let headers = response.headers_mut();
        let value = |n: usize| axum::http::HeaderValue::from(n as u64);
        headers.insert(HEADER_PAGE_SIZE, value(self.limit));
        headers.insert(HEADER_CURRENT_PAGE, value(self.offset / self.limit.max(1) + 1));
        headers.insert(HEADER_TOTAL, value(total));
        headers.insert(HEADER_PAGE_COUNT, value(total.div_ceil(self.limit.max(1))));
        Ok(response)
    }
}

/// Backpack's pagination header: records matching the query in all.
pub const HEADER_TOTAL: &str = "x-total";
/// Backpack's pagination header: pages of `limit` records the matches make.
pub const HEADER_PAGE_COUNT: &str = "x-page-count";
/// Backpack's pagination header: the 1-based page this answer is.
pub const HEADER_CURRENT_PAGE: &str = "x-current-page";
/// Backpack's pagination header: the page size (`limit`).
pub const HEADER_PAGE_SIZE: &str = "x-page-size";

/// Backpack's market types (`marketType`); every market here is `SPOT`.
const MARKET_TYPES: &[&str] = &["SPOT", "PERP", "IPERP", "DATED", "PREDICTION", "RFQ"];

/// `YYYY-MM-DDTHH:MM:SS.mmm` (UTC, no zone), Backpack's date-time format.
pub(crate) fn datetime(timestamp_ns: u64) -> String {
    let ms = timestamp_ns / 1_000_000;
    format!("{}.{:03}", marketdata::interval::format_datetime(ms / 1_000, 'T'), ms % 1_000)
}

/// An optional `orderId` / `order_id` filter.
fn order_filter(params: &SignedParams) -> Result<Option<OrderId>, ApiError> {
    Ok(number(params, "orderId", "order_id", 1..=u64::MAX)?.map(OrderId::new))
}

/// An optional `symbol` filter.
fn market_filter(state: &PrivateState, params: &SignedParams) -> Result<Option<MarketId>, ApiError> {
    match params.get("symbol") {
        None => Ok(None),
        Some(_) => Ok(Some(state.config.markets[state.market(params)?].id)),
    }
}

/// Whether a `marketType` / `market_type` filter admits spot markets (the only kind here).
///
/// # Errors
/// `400` for a value that is not one of Backpack's market types.
fn spot_wanted(params: &SignedParams) -> Result<bool, ApiError> {
    match either(params, "marketType", "market_type") {
        None => Ok(true),
        Some(kind) if MARKET_TYPES.iter().any(|known| kind.eq_ignore_ascii_case(known)) => {
            Ok(kind.eq_ignore_ascii_case("SPOT"))
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid marketType: {other} (expected one of {})",
            MARKET_TYPES.join(", ")
        ))),
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Bid => "Bid",
        Side::Ask => "Ask",
    }
}

/// `GET /wapi/v1/history/fills` (`fillHistoryQueryAll`).
#[utoipa::path(
    get,
    path = "/wapi/v1/history/fills",
    tag = "History",
    description = "The user's fills, newest first (instruction `fillHistoryQueryAll`). camelCase and snake_case \
                   keys are both accepted (`orderId` / `order_id`, `fillType` / `fill_type`, ...). Without a history \
                   store only the newest 1000 fills per user since the server started are kept; with the Postgres \
                   sink configured every fill is read from Postgres (a fill made milliseconds ago may not be there \
                   yet). 503 when the store cannot be read.",
    params(crate::openapi::FillHistoryQuery, crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "Fills", body = Vec<crate::openapi::Fill>),
        (status = 400, description = "Bad parameter", body = crate::openapi::ErrorBody),
        (status = 401, description = "Bad signature", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn fill_history(
    State(state): State<PrivateState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = auth::query_params(query.as_deref())?;
    let user = state.authenticate(&headers, "fillHistoryQueryAll", &params)?;
    state.fresh_views()?;
    let page = Page::parse(&params)?;
    let market = market_filter(&state, &params)?;
    let order = order_filter(&params)?;
    // Every fill here is an ordinary user fill (no liquidations, no conversions).
    let user_fills = match either(&params, "fillType", "fill_type") {
        None | Some("User") => true,
        Some(
            "BookLiquidation"
            | "Adl"
            | "Backstop"
            | "Liquidation"
            | "AllLiquidation"
            | "CollateralConversion"
            | "CollateralConversionAndSpotLiquidation",
        ) => false,
        Some(other) => return Err(ApiError::bad_request(format!("Invalid fillType: {other}"))),
    };
    if !spot_wanted(&params)? || !user_fills {
        return page.respond(0, Vec::new());
    }
    let (fills, total) = match &state.history_source {
        // The store pages and counts itself.
        Some(store) => {
            let stored = store.fills(user, page.query(market, order)).await.map_err(|e| store_unavailable(&e))?;
            known_markets(&state, stored.records.iter().map(|f| f.market_id))?;
            (stored.records, stored.total)
        }
        None => page.apply_counted(state.dispatch.views.history().fills(user, |fill| {
            market.is_none_or(|m| fill.market_id == m)
                && order.is_none_or(|o| fill.order_id == o)
                && page.contains(fill.timestamp_ns)
        })),
    };
    let out = fills
        .iter()
        .map(|fill| {
            let index = fill.market_id.get() as usize - 1;
            let (market, format) = (&state.config.markets[index], &state.formats[index]);
            let quote_symbol = state.config.assets.get(market.quote.get() as usize).map_or("", |a| a.symbol.as_str());
            json!({
                "tradeId": fill.trade_id,
                "orderId": fill.order_id.get().to_string(),
                "clientId": (fill.client_order_id != ClientOrderId::ZERO).then(|| fill.client_order_id.get().to_string()),
                "symbol": market.symbol,
                "side": side_name(fill.side),
                "price": format.price(fill.price_ticks),
                "quantity": format.quantity(u128::from(fill.quantity_lots)),
                "fee": format.quote(u128::from(fill.fee)),
                "feeSymbol": quote_symbol,
                "isMaker": fill.is_maker,
                "timestamp": datetime(fill.timestamp_ns),
                "systemOrderType": null,
            })
        })
        .collect();
    page.respond(total, out)
}

/// `GET /wapi/v1/history/orders` (`orderHistoryQueryAll`).
#[utoipa::path(
    get,
    path = "/wapi/v1/history/orders",
    tag = "History",
    description = "The user's orders, open and closed, newest first (instruction `orderHistoryQueryAll`). Without a \
                   history store, closed orders: only the newest 1000 per user since the server started; with the \
                   Postgres sink configured every order is read from Postgres (in the state the sink last wrote). \
                   503 when the store cannot be read.",
    params(crate::openapi::OrderHistoryQuery, crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "Orders", body = Vec<crate::openapi::OrderHistoryEntry>),
        (status = 400, description = "Bad parameter", body = crate::openapi::ErrorBody),
        (status = 401, description = "Bad signature", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn order_history(
    State(state): State<PrivateState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = auth::query_params(query.as_deref())?;
    let user = state.authenticate(&headers, "orderHistoryQueryAll", &params)?;
    state.fresh_views()?;
    let page = Page::parse(&params)?;
    let market = market_filter(&state, &params)?;
    let order = order_filter(&params)?;
    if !spot_wanted(&params)? {
        return page.respond(0, Vec::new());
    }
    let wanted = |o: &OpenOrder| {
        market.is_none_or(|m| o.market_id == m)
            && order.is_none_or(|id| o.order_id == id)
            && page.contains(o.created_ns)
    };
    if let Some(store) = &state.history_source {
        let orders = store.orders(user, page.query(market, order)).await.map_err(|e| store_unavailable(&e))?;
        known_markets(&state, orders.records.iter().map(|o| o.order.market_id))?;
        let out = orders
            .records
            .iter()
            .map(|stored| order_history_json(&state, &stored.order, stored.status, stored.expiry_reason))
            .collect();
        return page.respond(orders.total, out);
    }
    let views = &state.dispatch.views;
    let mut orders: Vec<(OpenOrder, &'static str, Option<&'static str>)> = views
        .open_orders(user, None)
        .into_iter()
        .filter(|o| wanted(o))
        .map(|o| (o, crate::private::open_status(&o), None))
        .collect();
    orders.extend(
        views
            .history()
            .closed_orders(user, |c| wanted(&c.order))
            .into_iter()
            .map(|c| (c.order, c.status.name(), c.status.expiry_reason())),
    );
    // Newest first: order ids grow with time.
    orders.sort_by_key(|(order, _, _)| std::cmp::Reverse(order.order_id));
    let (orders, total) = page.apply_counted(orders);
    let out = orders
        .iter()
        .map(|(order, status, expiry_reason)| order_history_json(&state, order, status, *expiry_reason))
        .collect();
    page.respond(total, out)
}

/// One entry of the order history.
fn order_history_json(state: &PrivateState, order: &OpenOrder, status: &str, expiry_reason: Option<&str>) -> Value {
    let mut value = state.order_json(order, status);
    value["createdAt"] = json!(datetime(order.created_ns));
    value["expiryReason"] = json!(expiry_reason);
    value["systemOrderType"] = Value::Null;
    // A trigger order's Backpack fields besides `triggerPrice` (which `order_json` sets).
    if order.trigger_price_ticks != 0 {
        let format = &state.formats[order.market_id.get() as usize - 1];
        value["triggerBy"] = json!(crate::private::TRIGGER_BY_LAST_PRICE);
        if order.quantity_lots > 0 {
            value["triggerQuantity"] = json!(format.quantity(u128::from(order.quantity_lots)));
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(id: u64) -> TransferRecord {
        TransferRecord { id, asset_id: AssetId::new(0), amount: id, timestamp_ns: id, details: None }
    }

    #[test]
    fn newest_first_and_bounded_per_user() {
        let history = History::new(3);
        let (a, b) = (UserId::new(1), UserId::new(2));
        for id in 1..=5 {
            history.record_deposit(a, transfer(id));
        }
        history.record_deposit(b, transfer(9));
        let ids: Vec<u64> = history.deposits(a).iter().map(|d| d.id).collect();
        assert_eq!(ids, [5, 4, 3]);
        assert_eq!(history.deposits(b).len(), 1);
        assert!(history.withdrawals(a).is_empty());
        assert!(history.deposits(UserId::new(3)).is_empty());
    }

    #[test]
    fn stored_withdrawals_get_the_details_memory_still_holds() {
        let history = History::new(10);
        let (a, b) = (UserId::new(1), UserId::new(2));
        history.record_withdrawal(a, transfer(7));
        let details = WithdrawalDetails { address: "x".into(), blockchain: "Solana".into(), client_id: None };
        history.annotate_withdrawal(a, 7, details.clone()).unwrap();
        let mut stored = vec![transfer(9), transfer(7), transfer(3)];
        history.attach_withdrawal_details(b, &mut stored);
        assert!(stored.iter().all(|w| w.details.is_none()), "another user's details are never attached");
        history.attach_withdrawal_details(a, &mut stored);
        let attached: Vec<Option<WithdrawalDetails>> = stored.into_iter().map(|w| w.details).collect();
        assert_eq!(attached, [None, Some(details), None], "by id, only where memory knows it");
    }

    #[test]
    fn withdrawal_details_only_on_the_owners_record() {
        let history = History::new(10);
        let (a, b) = (UserId::new(1), UserId::new(2));
        history.record_withdrawal(a, transfer(7));
        let details = WithdrawalDetails { address: "x".into(), blockchain: "Solana".into(), client_id: None };
        assert!(history.annotate_withdrawal(b, 7, details.clone()).is_none(), "another user's withdrawal");
        assert_eq!(history.annotate_withdrawal(a, 7, details.clone()).unwrap().details, Some(details));
    }
}
