//! The OpenAPI 3 document of the REST API, generated from the handlers' `#[utoipa::path]`
//! annotations and the schema types below, served at `GET /api/v1/openapi.json`.
//!
//! To document a new endpoint: annotate its handler with `#[utoipa::path(...)]` and add the
//! handler to `paths(...)` of [`ApiDoc`] (and any new schema type to `components(schemas(...))`).
//! The test `openapi_lists_every_route` (gateway-json/tests/openapi.rs) fails for a route of the
//! routers that the document does not list.
//!
//! The schema types here exist for the document only (the handlers build their JSON directly,
//! with the field names below); decimal values are strings.

#![allow(dead_code)]

use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// The API document: every public and signed endpoint.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Exchange REST API (Backpack compatible)",
        version = "1",
        description = "Backpack Exchange compatible REST API. Signed endpoints need X-API-Key, X-Signature, \
                       X-Timestamp and X-Window (see docs/rest-api.md for the signed string) or a session token \
                       (`Authorization: Bearer`). Errors are `{code, message}`. The WebSocket API is not REST and \
                       is not described here (docs/websocket-api.md)."
    ),
    paths(
        // Public market data (lib.rs).
        crate::assets,
        crate::markets,
        crate::market,
        crate::ticker,
        crate::tickers,
        crate::depth,
        crate::trades,
        crate::trades_history,
        crate::klines,
        crate::status,
        crate::time,
        serve,
        // Signed orders and balances (private.rs).
        crate::private::order_execute,
        crate::private::order_query,
        crate::private::order_cancel,
        crate::private::order_query_all,
        crate::private::balance_query,
        // Batch and cancel-all (batch.rs).
        crate::batch::orders_execute,
        crate::batch::orders_cancel_all,
        // History (history.rs) and capital (capital.rs).
        crate::history::fill_history,
        crate::history::order_history,
        crate::capital::deposits,
        crate::capital::withdrawals,
        crate::capital::withdraw,
        // Users, sessions and API keys (sessions.rs).
        crate::sessions::register,
        crate::sessions::login,
        crate::sessions::refresh,
        crate::sessions::account,
        crate::sessions::list_keys,
        crate::sessions::create_key,
        crate::sessions::revoke_key,
        // Admin API (admin.rs).
        crate::admin::create_user,
        crate::admin::deposit,
        crate::admin::withdraw,
        crate::admin::halt,
        crate::admin::resume,
        // AMM pools (amm.rs).
        crate::amm::liquidity_add,
        crate::amm::liquidity_remove,
        crate::amm::swap_execute,
        crate::amm::route_execute,
        crate::amm::shares_query,
        crate::amm::quote,
        crate::amm::pools,
    ),
    components(schemas(
        ErrorBody,
        Asset,
        AssetToken,
        Market,
        Ticker,
        Depth,
        Trade,
        Kline,
        ServerStatus,
        ExecuteOrderRequest,
        CancelOrderRequest,
        CancelAllRequest,
        Order,
        ExecuteOrdersRequest,
        BatchOrder,
        BatchError,
        BatchResult,
        SideName,
        OrderTypeName,
        TimeInForceName,
        SelfTradePreventionName,
        SortDirection,
        MarketType,
        FillType,
        CancelAllOrderType,
        Blockchain,
        Balance,
        OrderHistoryEntry,
        Fill,
        Deposit,
        Withdrawal,
        WithdrawalRequest,
        crate::sessions::Credentials,
        crate::sessions::NewKey,
        crate::sessions::KeyReference,
        crate::admin::Transfer,
        crate::admin::MarketReference,
        LiquidityAddRequest,
        LiquidityRemoveRequest,
        SwapRequest,
        RouteRequest,
        LiquidityChange,
        SwapResult,
        RouteResult,
        AmmQuote,
        PoolSwapQuote,
        BookQuote,
        RouteQuote,
        QuoteError,
        PoolQuoteResult,
        BookQuoteResult,
        RouteQuoteResult,
        Pool,
        PoolShares,
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "Markets", description = "Public market data"),
        (name = "System", description = "Status, time and this document"),
        (name = "Order", description = "Signed order entry and queries"),
        (name = "Capital", description = "Signed balances, deposits and withdrawals"),
        (name = "History", description = "Signed fill and order history"),
        (name = "Users", description = "Registration, login (session tokens) and API key management"),
        (name = "Admin", description = "Operator API: users, deposits, withdrawals, market halts (admin token)"),
        (name = "AMM", description = "Liquidity pools: signed liquidity, swaps and routed orders; public quotes and pools"),
    )
)]
pub struct ApiDoc;

/// Name of the security scheme of the Ed25519-signed requests.
pub const SIGNATURE_SCHEME: &str = "signature";
/// Name of the security scheme of session tokens (`Authorization: Bearer <JWT>`).
pub const SESSION_SCHEME: &str = "session";
/// Name of the security scheme of the admin API (`Authorization: Bearer <admin token>`).
pub const ADMIN_SCHEME: &str = "admin";

/// Adds the security schemes the annotations name, and marks every signed endpoint (an operation
/// with the `X-Signature` header parameter, see [`SignatureHeaders`]) whose annotation names no
/// scheme as accepting a signature or a session token.
pub struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SIGNATURE_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "Backpack Ed25519 request signing. X-API-Key is the base64 Ed25519 public key, but it is not a \
                 static API key: every request also needs X-Signature (base64 Ed25519 signature of \
                 `instruction=<name>&<sorted params>&timestamp=<X-Timestamp>&window=<X-Window>`), X-Timestamp \
                 (ms) and optionally X-Window (ms, default 5000, at most 60000); the server checks the \
                 signature and the time window. See docs/rest-api.md.",
            ))),
        );
        components.add_security_scheme(
            SESSION_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "Session token from POST /api/v1/auth/login (HS256 JWT, short-lived). Also accepted by \
                         every signed endpoint in place of the signature headers.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ADMIN_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The operator's admin token (configured on the server; the admin API is served only \
                         when one is set).",
                    ))
                    .build(),
            ),
        );
        for item in openapi.paths.paths.values_mut() {
            let operations =
                [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch].into_iter().flatten();
            for operation in operations {
                let signed =
                    operation.parameters.iter().flatten().any(|parameter| {
                        parameter.parameter_in == ParameterIn::Header && parameter.name == "X-Signature"
                    });
                if signed && operation.security.is_none() {
                    operation.security = Some(vec![
                        SecurityRequirement::new(SIGNATURE_SCHEME, Vec::<String>::new()),
                        SecurityRequirement::new(SESSION_SCHEME, Vec::<String>::new()),
                    ]);
                }
            }
        }
    }
}

/// The document as JSON text (built once).
pub fn document_json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into()))
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "System",
    description = "This OpenAPI 3 document.",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
pub(crate) async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document_json()).into_response()
}

// ----------------------------------------------------------------------------------------------
// Parameters.
// ----------------------------------------------------------------------------------------------

/// The signature headers of every signed request. They are optional in the document because a
/// session token (`Authorization: Bearer`, scheme `session`) may replace them; without one, the
/// first three are required.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct SignatureHeaders {
    /// Base64 of the 32-byte Ed25519 public key (required unless a session token is sent).
    #[param(rename = "X-API-Key", required = false)]
    api_key: String,
    /// Base64 of the Ed25519 signature of the signed string (required unless a session token is sent).
    #[param(rename = "X-Signature", required = false)]
    signature: String,
    /// Client time, ms since the epoch (required unless a session token is sent).
    #[param(rename = "X-Timestamp", required = false)]
    timestamp: u64,
    /// Validity window, ms (default 5000, at most 60000).
    #[param(rename = "X-Window")]
    window: Option<u64>,
}

/// `symbol`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SymbolQuery {
    /// Market symbol, e.g. `BTC_USDC`.
    symbol: String,
}

/// `marketType` (may repeat).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct MarketsQuery {
    /// `SPOT` (every market is spot); another type alone gives an empty list.
    market_type: Option<MarketType>,
}

/// Ticker window.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TickerQuery {
    /// Market symbol (required for `/ticker`).
    symbol: Option<String>,
    /// `1d` (default) or `1w`.
    interval: Option<String>,
}

/// Depth.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DepthQuery {
    /// Market symbol.
    symbol: String,
    /// Levels per side, 1 to 5000 (default 1000).
    limit: Option<u64>,
}

/// Recent trades.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TradesQuery {
    /// Market symbol.
    symbol: String,
    /// 1 to 1000 (default 100).
    limit: Option<u64>,
    /// Skip this many of the most recent trades (`/trades/history` only).
    offset: Option<u64>,
}

/// Klines.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct KlinesQuery {
    /// Market symbol.
    symbol: String,
    /// `1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1month`.
    interval: String,
    /// Seconds since the epoch.
    start_time: u64,
    /// Seconds since the epoch (default: now).
    end_time: Option<u64>,
}

/// One order by id or client id.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct OrderQuery {
    /// Market symbol.
    symbol: String,
    /// Exchange order id.
    order_id: Option<String>,
    /// Client id.
    client_id: Option<u32>,
}

/// Open orders.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OpenOrdersQuery {
    /// Market symbol (all markets when absent).
    symbol: Option<String>,
}

/// Fill history filters (snake_case names are accepted too: `order_id`, `fill_type`,
/// `market_type`, `sort_direction`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct FillHistoryQuery {
    /// Only fills of this order.
    order_id: Option<String>,
    /// Only fills of this market.
    symbol: Option<String>,
    /// From this time, ms (inclusive).
    from: Option<u64>,
    /// To this time, ms (inclusive).
    to: Option<u64>,
    /// 1 to 1000 (default 100).
    limit: Option<u64>,
    /// Skip this many (default 0).
    offset: Option<u64>,
    /// `User` (every fill here); other Backpack fill types give an empty list.
    fill_type: Option<FillType>,
    /// `SPOT`; other types give an empty list.
    market_type: Option<MarketType>,
    /// `Desc` (default, newest first) or `Asc`.
    sort_direction: Option<SortDirection>,
}

/// Order history filters (snake_case names accepted too).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct OrderHistoryQuery {
    /// Only this order.
    order_id: Option<String>,
    /// Only this market.
    symbol: Option<String>,
    /// Created from this time, ms (inclusive).
    from: Option<u64>,
    /// Created up to this time, ms (inclusive).
    to: Option<u64>,
    /// 1 to 1000 (default 100).
    limit: Option<u64>,
    /// Skip this many (default 0).
    offset: Option<u64>,
    /// `SPOT`; other types give an empty list.
    market_type: Option<MarketType>,
    /// `Desc` (default, newest first) or `Asc`.
    sort_direction: Option<SortDirection>,
}

/// Deposit / withdrawal history filters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TransferQuery {
    /// From this time, ms (inclusive).
    from: Option<u64>,
    /// To this time, ms (inclusive).
    to: Option<u64>,
    /// 1 to 1000 (default 100).
    limit: Option<u64>,
    /// Skip this many (default 0).
    offset: Option<u64>,
}

// ----------------------------------------------------------------------------------------------
// Bodies.
// ----------------------------------------------------------------------------------------------

/// Every error: `{code, message}` (codes such as `INVALID_CLIENT_REQUEST`, `INVALID_ORDER`,
/// `UNAUTHORIZED`, `RESOURCE_NOT_FOUND`, `INSUFFICIENT_FUNDS`, `TOO_MANY_REQUESTS`,
/// `PAYLOAD_TOO_LARGE`).
#[derive(ToSchema)]
pub struct ErrorBody {
    /// Error code.
    code: String,
    /// Explanation.
    message: String,
}

/// A market.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Market {
    symbol: String,
    base_symbol: String,
    quote_symbol: String,
    /// `SPOT`.
    market_type: String,
    /// `{price: {minPrice, maxPrice, tickSize}, quantity: {minQuantity, maxQuantity, stepSize}}`.
    filters: serde_json::Value,
    /// `Open`.
    order_book_state: String,
    /// Date-time without zone.
    created_at: String,
    visible: bool,
}

/// 24 h (or 1 week) statistics.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ticker {
    symbol: String,
    first_price: String,
    last_price: String,
    price_change: String,
    /// A fraction: `"0.0125"` is +1.25 %.
    price_change_percent: String,
    high: String,
    low: String,
    volume: String,
    quote_volume: String,
    trades: String,
}

/// Order book depth; both sides sorted by ascending price.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Depth {
    /// `[["price", "quantity"]]`.
    asks: Vec<Vec<String>>,
    /// `[["price", "quantity"]]`, the best bid last.
    bids: Vec<Vec<String>>,
    last_update_id: String,
    /// µs.
    timestamp: u64,
}

/// A public trade.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trade {
    id: u64,
    price: String,
    quantity: String,
    quote_quantity: String,
    /// ms.
    timestamp: u64,
    is_buyer_maker: bool,
}

/// A candle.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Kline {
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    start: String,
    end: String,
    open: String,
    high: String,
    low: String,
    close: String,
    volume: String,
    quote_volume: String,
    trades: String,
}

/// `GET /api/v1/status`.
#[derive(ToSchema)]
pub struct ServerStatus {
    /// `Ok`.
    status: String,
    message: Option<String>,
}

/// An order to execute (`orderExecute`).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteOrderRequest {
    symbol: String,
    side: SideName,
    order_type: OrderTypeName,
    /// Decimal string on the tick grid (limit orders).
    price: Option<String>,
    /// Decimal string on the step grid.
    quantity: Option<String>,
    /// Market orders by quote amount, either side: a buy spends at most this much quote, fee
    /// included; a sell sells whole lots for at most this much notional (before its fee).
    quote_quantity: Option<String>,
    /// `GTC` by default.
    time_in_force: Option<TimeInForceName>,
    post_only: Option<bool>,
    client_id: Option<u32>,
    /// `RejectTaker` by default.
    self_trade_prevention: Option<SelfTradePreventionName>,
}

/// `DELETE /api/v1/order` body.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelOrderRequest {
    symbol: String,
    order_id: Option<String>,
    client_id: Option<u32>,
}

/// `DELETE /api/v1/orders` body.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelAllRequest {
    symbol: String,
    /// `RestingLimitOrder` cancels only resting orders, `ConditionalOrder` only pending trigger
    /// orders (status `TriggerPending`); without it, both.
    order_type: Option<CancelAllOrderType>,
}

/// An order.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    id: String,
    client_id: Option<u32>,
    symbol: String,
    side: String,
    order_type: String,
    quantity: Option<String>,
    quote_quantity: Option<String>,
    executed_quantity: String,
    executed_quote_quantity: String,
    price: Option<String>,
    time_in_force: String,
    self_trade_prevention: String,
    post_only: bool,
    /// `New`, `PartiallyFilled`, `Filled`, `Cancelled`, `Expired`, `TriggerPending`.
    status: String,
    /// ms.
    created_at: u64,
    /// A pending trigger order's trigger price (status `TriggerPending`).
    trigger_price: Option<String>,
    /// Attached stop-loss trigger price (only on an order placed with one).
    stop_loss_trigger_price: Option<String>,
    /// Attached stop-loss limit price (none: a market stop-loss).
    stop_loss_limit_price: Option<String>,
    /// `LastPrice` when a stop-loss is attached.
    stop_loss_trigger_by: Option<String>,
    /// Attached take-profit trigger price.
    take_profit_trigger_price: Option<String>,
    /// Attached take-profit limit price (none: a market take-profit).
    take_profit_limit_price: Option<String>,
    /// `LastPrice` when a take-profit is attached.
    take_profit_trigger_by: Option<String>,
}

/// The body of `POST /api/v1/orders`: 1 to [`crate::batch::BATCH_ORDERS_MAX`] orders (an empty
/// batch is `400`).
pub struct ExecuteOrdersRequest(Vec<ExecuteOrderRequest>);

impl utoipa::PartialSchema for ExecuteOrdersRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(utoipa::openapi::Ref::from_schema_name("ExecuteOrderRequest"))
            .min_items(Some(1))
            .max_items(Some(crate::batch::BATCH_ORDERS_MAX))
            .into()
    }
}

impl ToSchema for ExecuteOrdersRequest {
    fn name() -> std::borrow::Cow<'static, str> {
        "ExecuteOrdersRequest".into()
    }
}

/// `operation` of an executed order of a batch.
#[derive(ToSchema)]
pub enum BatchOk {
    /// Executed.
    Ok,
}

/// `operation` of a refused order of a batch.
#[derive(ToSchema)]
pub enum BatchErr {
    /// Refused.
    Err,
}

/// An executed order of a batch: the Order, tagged `operation: "Ok"`.
#[derive(ToSchema)]
pub struct BatchOrder {
    #[serde(flatten)]
    order: Order,
    operation: BatchOk,
}

/// A refused order of a batch, tagged `operation: "Err"`.
#[derive(ToSchema)]
pub struct BatchError {
    code: String,
    message: String,
    operation: BatchErr,
}

/// One result of a batch: an Order or an error, told apart by `operation`.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum BatchResult {
    /// Executed.
    Order(Box<BatchOrder>),
    /// Refused.
    Error(BatchError),
}

/// `side`.
#[derive(ToSchema)]
pub enum SideName {
    /// Buy.
    Bid,
    /// Sell.
    Ask,
}

/// `orderType`.
#[derive(ToSchema)]
pub enum OrderTypeName {
    /// At `price` or better.
    Limit,
    /// At the book's prices (immediate or cancel).
    Market,
}

/// `timeInForce`.
#[derive(ToSchema)]
pub enum TimeInForceName {
    /// Good till cancelled.
    GTC,
    /// Immediate or cancel.
    IOC,
    /// Fill or kill.
    FOK,
}

/// `selfTradePrevention`.
#[derive(ToSchema)]
pub enum SelfTradePreventionName {
    /// Cancel the incoming order.
    RejectTaker,
    /// Cancel the resting order.
    RejectMaker,
    /// Cancel both.
    RejectBoth,
    /// Trade with oneself.
    Allow,
}

/// `sortDirection` of a history query.
#[derive(ToSchema)]
pub enum SortDirection {
    /// Oldest first.
    Asc,
    /// Newest first (default).
    Desc,
}

/// Backpack's market types (`marketType`, any case); every market here is `SPOT`.
#[derive(ToSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum MarketType {
    /// Spot.
    SPOT,
    /// Perpetual future (none here).
    PERP,
    /// Inverse perpetual (none here).
    IPERP,
    /// Dated future (none here).
    DATED,
    /// Prediction market (none here).
    PREDICTION,
    /// Request for quote (none here).
    RFQ,
}

/// Backpack's fill types (`fillType`); every fill here is `User`.
#[derive(ToSchema)]
pub enum FillType {
    /// An ordinary fill.
    User,
    /// Liquidation (none here).
    BookLiquidation,
    /// Auto-deleveraging (none here).
    Adl,
    /// Backstop liquidation (none here).
    Backstop,
    /// Liquidation (none here).
    Liquidation,
    /// Every liquidation kind (none here).
    AllLiquidation,
    /// Collateral conversion (none here).
    CollateralConversion,
    /// Collateral conversion and spot liquidation (none here).
    CollateralConversionAndSpotLiquidation,
}

/// `orderType` of a cancel-all.
#[derive(ToSchema)]
pub enum CancelAllOrderType {
    /// Resting orders only (not pending trigger orders).
    RestingLimitOrder,
    /// Pending trigger (stop / take-profit) orders only, status `TriggerPending`.
    ConditionalOrder,
}

/// Blockchain names a withdrawal request may name (Backpack's names, those of
/// `capital::BLOCKCHAINS`; recorded only).
#[derive(ToSchema)]
// The variants are the names themselves.
#[allow(clippy::upper_case_acronyms, missing_docs)]
pub enum Blockchain {
    Solana,
    Ethereum,
    Polygon,
    Bitcoin,
    Internal,
    EqualsMoney,
    Cardano,
    Hyperliquid,
    Story,
    Bsc,
    Dogecoin,
    Sui,
    XRP,
    Litecoin,
    Berachain,
    Arbitrum,
    Base,
    Optimism,
    Tron,
    Avalanche,
}

/// An asset of `GET /api/v1/assets`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Asset {
    symbol: String,
    /// The symbol.
    display_name: String,
    /// Always null.
    coingecko_id: Option<String>,
    /// One token, network `Internal`.
    tokens: Vec<AssetToken>,
}

/// An asset's representation on a network, with its deposit and withdrawal limits.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetToken {
    /// `Internal`.
    blockchain: String,
    display_name: String,
    /// Empty.
    contract_address: String,
    /// False: deposits are operator credits.
    deposit_enabled: bool,
    /// `"0"`.
    minimum_deposit: String,
    withdraw_enabled: bool,
    /// One minor unit of the asset.
    minimum_withdrawal: String,
    /// The largest amount a withdrawal carries (2^64 − 1 minor units).
    maximum_withdrawal: Option<String>,
    /// `"0"`.
    withdrawal_fee: String,
}

/// One asset's balance in `GET /api/v1/capital` (`{"BTC": Balance, ...}`).
#[derive(ToSchema)]
pub struct Balance {
    available: String,
    locked: String,
    /// Always `"0"`.
    staked: String,
}

/// An order of the order history.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderHistoryEntry {
    id: String,
    client_id: Option<u32>,
    symbol: String,
    side: String,
    order_type: String,
    quantity: Option<String>,
    quote_quantity: Option<String>,
    executed_quantity: String,
    executed_quote_quantity: String,
    price: Option<String>,
    time_in_force: String,
    self_trade_prevention: String,
    post_only: bool,
    /// As in [`Order`], or `TriggerFailed` (a fired trigger order whose order could not be placed).
    status: String,
    /// Date-time `YYYY-MM-DDTHH:MM:SS.mmm` (UTC).
    created_at: String,
    /// Why it expired (status `Expired` only), a name of Backpack's `OrderExpiryReason`:
    /// `ImmediateOrCancel`, `InsufficientLiquidity` (a market order ran out of book) or
    /// `InsufficientFunds` (a market buy ran out of quote, a sell by quote quantity out of base,
    /// or a quote quantity too small for one lot).
    expiry_reason: Option<String>,
    system_order_type: Option<String>,
    /// The trigger price of an order placed as a trigger order (from Postgres also after it
    /// fired; in memory while it is pending or when it failed).
    trigger_price: Option<String>,
    /// Attached stop-loss trigger price (only on an order placed with one).
    stop_loss_trigger_price: Option<String>,
    /// Attached stop-loss limit price (none: a market stop-loss).
    stop_loss_limit_price: Option<String>,
    /// `LastPrice` when a stop-loss is attached.
    stop_loss_trigger_by: Option<String>,
    /// Attached take-profit trigger price.
    take_profit_trigger_price: Option<String>,
    /// Attached take-profit limit price (none: a market take-profit).
    take_profit_limit_price: Option<String>,
    /// `LastPrice` when a take-profit is attached.
    take_profit_trigger_by: Option<String>,
    /// `LastPrice` on a trigger order.
    trigger_by: Option<String>,
    /// A trigger order's quantity.
    trigger_quantity: Option<String>,
}

/// A fill of the user's.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fill {
    trade_id: u64,
    order_id: String,
    client_id: Option<String>,
    symbol: String,
    side: String,
    price: String,
    quantity: String,
    fee: String,
    fee_symbol: String,
    is_maker: bool,
    /// Date-time `YYYY-MM-DDTHH:MM:SS.mmm` (UTC).
    timestamp: String,
    system_order_type: Option<String>,
}

/// A deposit.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deposit {
    /// The engine sequence of the credit.
    id: u64,
    to_address: Option<String>,
    from_address: Option<String>,
    confirmation_block_number: Option<u64>,
    identifier: Option<String>,
    /// `administrator`.
    source: String,
    /// `confirmed`.
    status: String,
    subaccount_id: Option<u64>,
    symbol: String,
    quantity: String,
    created_at: String,
}

/// A withdrawal.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Withdrawal {
    /// The engine sequence of the debit.
    id: u64,
    blockchain: String,
    client_id: Option<String>,
    identifier: Option<String>,
    quantity: String,
    /// Always `"0"`.
    fee: String,
    symbol: String,
    /// `confirmed`.
    status: String,
    subaccount_id: Option<u64>,
    to_address: String,
    transaction_hash: Option<String>,
    created_at: String,
}

/// `POST /wapi/v1/capital/withdrawals` body.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WithdrawalRequest {
    /// Destination (recorded only).
    #[schema(min_length = 1, max_length = 128)]
    address: String,
    /// Backpack blockchain name (recorded only).
    blockchain: Blockchain,
    #[schema(min_length = 1, max_length = 128)]
    client_id: Option<String>,
    /// Decimal string in the asset's precision.
    quantity: String,
    /// Asset symbol, e.g. `USDC`.
    symbol: String,
    /// Ignored.
    two_factor_token: Option<String>,
}

// ----------------------------------------------------------------------------------------------
// AMM pools (amm.rs, docs/amm.md). Amounts are decimal strings in the asset's own units; shares
// are integers written as strings (a JSON number is accepted in requests too).
// ----------------------------------------------------------------------------------------------

/// `symbol` of a pool (every pool when absent).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PoolQuery {
    /// Market symbol of a pool, e.g. `SOL_USDC`.
    symbol: Option<String>,
}

/// `GET /api/v1/amm/quote` parameters: exactly one of `quantity` and `quoteQuantity`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct AmmQuoteQuery {
    /// Market symbol of a pool.
    symbol: String,
    /// `Bid` (buy base) or `Ask` (sell base).
    side: String,
    /// Base amount: paid in (`Ask`) or received (`Bid`).
    quantity: Option<String>,
    /// Quote amount: paid in (`Bid`) or received (`Ask`).
    quote_quantity: Option<String>,
}

/// `POST /api/v1/amm/liquidity` body.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiquidityAddRequest {
    symbol: String,
    /// The most base to deposit.
    base_quantity: String,
    /// The most quote to deposit.
    quote_quantity: String,
    /// Fewest shares to accept (default 0: any).
    min_shares: Option<String>,
}

/// `DELETE /api/v1/amm/liquidity` body.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiquidityRemoveRequest {
    symbol: String,
    /// Shares to burn (the signer's own).
    shares: String,
    /// Least base to receive (default: any).
    min_base_quantity: Option<String>,
    /// Least quote to receive (default: any).
    min_quote_quantity: Option<String>,
}

/// `POST /api/v1/amm/swap` body: exactly one of `quantity` and `quoteQuantity`, the fixed amount
/// (`Bid` + `quoteQuantity` pays exactly that, `Bid` + `quantity` receives exactly that, and the
/// reverse for `Ask`).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwapRequest {
    symbol: String,
    /// `Bid` buys base, `Ask` sells it.
    side: String,
    /// Base amount.
    quantity: Option<String>,
    /// Quote amount.
    quote_quantity: Option<String>,
    /// Slippage limit when the input is fixed: the least to receive.
    min_amount_out: Option<String>,
    /// Slippage limit when the output is fixed: the most to pay.
    max_amount_in: Option<String>,
}

/// `POST /api/v1/amm/route` body.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteRequest {
    symbol: String,
    /// `Bid` or `Ask`.
    side: String,
    /// Base amount, a positive multiple of the market's step size.
    quantity: String,
    /// The most quote to pay (`Bid`) or the least to receive (`Ask`); default: none.
    quote_limit: Option<String>,
}

/// A deposit into or a withdrawal from a pool.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiquidityChange {
    symbol: String,
    /// Base taken (add) or paid out (remove).
    base_quantity: String,
    /// Quote taken (add) or paid out (remove).
    quote_quantity: String,
    /// Shares minted (add) or burned (remove).
    shares: String,
    /// The user's shares after.
    user_shares: String,
    total_shares: String,
    /// Reserves after.
    base_reserve: String,
    quote_reserve: String,
}

/// An executed swap.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwapResult {
    symbol: String,
    side: String,
    asset_in: String,
    asset_out: String,
    /// Paid in, fee included.
    amount_in: String,
    amount_out: String,
    /// In the input asset.
    fee: String,
    /// Quote per base, rounded down.
    price: Option<String>,
    /// Reserves after.
    base_reserve: String,
    quote_reserve: String,
}

/// An executed routed order.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteResult {
    symbol: String,
    side: String,
    quantity: String,
    /// The book leg's order id; null when everything went to the pool.
    order_id: Option<String>,
    book_quantity: String,
    book_quote: String,
    pool_quantity: String,
    pool_quote: String,
    total_quote: String,
    /// Average quote per base.
    price: Option<String>,
}

/// `GET /api/v1/amm/quote` answer.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmmQuote {
    symbol: String,
    side: String,
    asset_in: String,
    asset_out: String,
    /// The pool's swap.
    pool: PoolQuoteResult,
    /// The same trade as a market order through the book (null without book data).
    book: Option<BookQuoteResult>,
    /// The routed split (null unless a base `quantity` on the lot grid).
    route: Option<RouteQuoteResult>,
}

/// The pool's side of a quote.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolSwapQuote {
    amount_in: String,
    amount_out: String,
    fee: String,
    price: Option<String>,
    /// Quote per base before the swap.
    spot_price: Option<String>,
    /// A fraction: `"0.114455"` is 11.45 %.
    price_impact: String,
}

/// The book's side of a quote.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BookQuote {
    amount_in: String,
    amount_out: String,
    /// Taker fee in the quote asset.
    fee: String,
    /// Whether the fee is included in `amountIn` (buys) rather than taken from `amountOut` (sells).
    fee_in_amount_in: bool,
    price: Option<String>,
    /// False when the book is too thin for the whole amount.
    complete: bool,
}

/// The router's split of a quote.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteQuote {
    book_quantity: String,
    book_quote: String,
    pool_quantity: String,
    pool_quote: String,
    total_quote: String,
    price: Option<String>,
}

/// A venue that cannot fill the quoted trade.
#[derive(ToSchema)]
pub struct QuoteError {
    /// Why, e.g. `Not enough liquidity in the pool`.
    error: String,
}

/// The pool's quote or why there is none.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum PoolQuoteResult {
    /// Quoted.
    Quote(PoolSwapQuote),
    /// Not possible.
    Error(QuoteError),
}

/// The book's quote or why there is none.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum BookQuoteResult {
    /// Quoted.
    Quote(BookQuote),
    /// Not possible.
    Error(QuoteError),
}

/// The routed split or why there is none.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum RouteQuoteResult {
    /// Quoted.
    Quote(RouteQuote),
    /// Not possible.
    Error(QuoteError),
}

/// A pool.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pool {
    symbol: String,
    base_symbol: String,
    quote_symbol: String,
    /// Swap fee, basis points of the amount paid in.
    fee_bps: u32,
    base_reserve: String,
    quote_reserve: String,
    total_shares: String,
    /// Number of share holders.
    providers: u64,
    /// Spot price (quote per base); null for an empty pool.
    price: Option<String>,
}

/// The signer's position in a pool.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolShares {
    symbol: String,
    shares: String,
    total_shares: String,
    /// What the shares would withdraw now.
    base_quantity: String,
    quote_quantity: String,
}
