//! Deposits and withdrawals: `GET /wapi/v1/capital/deposits` (`depositQueryAll`),
//! `GET /wapi/v1/capital/withdrawals` (`withdrawalQueryAll`) and
//! `POST /wapi/v1/capital/withdrawals` (`withdraw`). See docs/rest-api.md.
//!
//! There is no blockchain behind this exchange: a withdrawal request debits the user's
//! available balance through the engine's `Withdraw` command (journaled like every command) and
//! is recorded as `confirmed` at once; the address and blockchain are kept for display only.
//! Deposits are credits by an operator (engine `Deposit`), shown with source `administrator`.
//!
//! Both lists come from the in-memory [`crate::history::History`] (recent, since the start), or
//! from the [`crate::history::HistorySource`] when one is configured (every transfer, across
//! restarts; a withdrawal's request details still come from memory, the only place they are).

use crate::auth::{self, SignedParams};
use crate::history::{Page, TransferRecord, WithdrawalDetails, datetime, store_unavailable};
use crate::private::{PrivateState, reject_error};
use crate::{ApiError, ApiResult, ok};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use codec::decimal::{DecimalError, parse_fixed};
use codec::{Amount, AssetId, BalanceChange, Command, Event, Reserved, Withdraw};
use serde_json::{Value, json};

/// Blockchain names a withdrawal request may name (Backpack's list).
pub const BLOCKCHAINS: &[&str] = &[
    "Solana",
    "Ethereum",
    "Polygon",
    "Bitcoin",
    "Internal",
    "EqualsMoney",
    "Cardano",
    "Hyperliquid",
    "Story",
    "Bsc",
    "Dogecoin",
    "Sui",
    "XRP",
    "Litecoin",
    "Berachain",
    "Arbitrum",
    "Base",
    "Optimism",
    "Tron",
    "Avalanche",
];

/// Longest destination address or client id accepted, bytes.
pub const WITHDRAWAL_TEXT_MAX: usize = 128;

fn amount_text(state: &PrivateState, asset: AssetId, amount: u64) -> (String, String) {
    match state.config.assets.get(asset.get() as usize) {
        Some(config) => {
            (config.symbol.clone(), marketdata::format::format_trimmed(u128::from(amount), config.decimals))
        }
        None => (String::new(), amount.to_string()),
    }
}

fn deposit_json(state: &PrivateState, deposit: &TransferRecord) -> Value {
    let (symbol, quantity) = amount_text(state, deposit.asset_id, deposit.amount);
    json!({
        "id": deposit.id,
        "toAddress": null,
        "fromAddress": null,
        "confirmationBlockNumber": null,
        "identifier": null,
        "source": "administrator",
        "status": "confirmed",
        "subaccountId": null,
        "symbol": symbol,
        "quantity": quantity,
        "createdAt": datetime(deposit.timestamp_ns),
    })
}

fn withdrawal_json(state: &PrivateState, withdrawal: &TransferRecord) -> Value {
    let (symbol, quantity) = amount_text(state, withdrawal.asset_id, withdrawal.amount);
    let details = withdrawal.details.as_ref();
    json!({
        "id": withdrawal.id,
        "blockchain": details.map_or("Internal", |d| d.blockchain.as_str()),
        "clientId": details.and_then(|d| d.client_id.clone()),
        "identifier": null,
        "quantity": quantity,
        "fee": "0",
        "symbol": symbol,
        "status": "confirmed",
        "subaccountId": null,
        "toAddress": details.map_or("", |d| d.address.as_str()),
        "transactionHash": null,
        "createdAt": datetime(withdrawal.timestamp_ns),
    })
}

/// `GET /wapi/v1/capital/deposits` (`depositQueryAll`).
#[utoipa::path(
    get,
    path = "/wapi/v1/capital/deposits",
    tag = "Capital",
    description = "The user's deposits, newest first (instruction `depositQueryAll`). Deposits are operator credits \
                   (source `administrator`). Without a history store only the newest 1000 per user since the server \
                   started are kept; with the Postgres sink configured every deposit is read from Postgres (one \
                   made milliseconds ago may not be there yet). 503 when the store cannot be read.",
    params(crate::openapi::TransferQuery, crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "Deposits", body = Vec<crate::openapi::Deposit>),
        (status = 400, description = "Bad parameter", body = crate::openapi::ErrorBody),
        (status = 401, description = "Bad signature", body = crate::openapi::ErrorBody),
        (status = 503, description = "History store unavailable", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn deposits(
    State(state): State<PrivateState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = auth::query_params(query.as_deref())?;
    let user = state.authenticate(&headers, "depositQueryAll", &params)?;
    state.fresh_views()?;
    let page = Page::parse(&params)?;
    let (records, total) = match &state.history_source {
        // The store pages and counts itself.
        Some(store) => {
            let stored = store.deposits(user, page.query(None, None)).await.map_err(|e| store_unavailable(&e))?;
            (stored.records, stored.total)
        }
        None => {
            let deposits = state.dispatch.views.history().deposits(user);
            page.apply_counted(deposits.into_iter().filter(|d| page.contains(d.timestamp_ns)).collect())
        }
    };
    page.respond(total, records.iter().map(|d| deposit_json(&state, d)).collect())
}

/// `GET /wapi/v1/capital/withdrawals` (`withdrawalQueryAll`).
#[utoipa::path(
    get,
    path = "/wapi/v1/capital/withdrawals",
    tag = "Capital",
    description = "The user's withdrawals, newest first (instruction `withdrawalQueryAll`). Without a history store \
                   only the newest 1000 per user since the server started are kept; with the Postgres sink \
                   configured every withdrawal is read from Postgres (one made milliseconds ago may not be there \
                   yet). The address, blockchain and client id a request named are kept in memory only: after a \
                   restart its withdrawal shows blockchain `Internal` and an empty address. 503 when the store \
                   cannot be read.",
    params(crate::openapi::TransferQuery, crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "Withdrawals", body = Vec<crate::openapi::Withdrawal>),
        (status = 400, description = "Bad parameter", body = crate::openapi::ErrorBody),
        (status = 401, description = "Bad signature", body = crate::openapi::ErrorBody),
        (status = 503, description = "History store unavailable", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn withdrawals(
    State(state): State<PrivateState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let params = auth::query_params(query.as_deref())?;
    let user = state.authenticate(&headers, "withdrawalQueryAll", &params)?;
    state.fresh_views()?;
    let page = Page::parse(&params)?;
    let history = state.dispatch.views.history();
    let (records, total) = match &state.history_source {
        // The store pages and counts itself; the request details are in memory only.
        Some(store) => {
            let mut stored =
                store.withdrawals(user, page.query(None, None)).await.map_err(|e| store_unavailable(&e))?;
            history.attach_withdrawal_details(user, &mut stored.records);
            (stored.records, stored.total)
        }
        None => {
            let withdrawals = history.withdrawals(user).into_iter().filter(|w| page.contains(w.timestamp_ns));
            page.apply_counted(withdrawals.collect())
        }
    };
    page.respond(total, records.iter().map(|w| withdrawal_json(&state, w)).collect())
}

fn text_param<'a>(params: &'a SignedParams, name: &str) -> Result<&'a str, ApiError> {
    let text = params.get(name).ok_or_else(|| ApiError::bad_request(format!("Missing required parameter: {name}")))?;
    if text.is_empty() || text.len() > WITHDRAWAL_TEXT_MAX || text.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "Invalid {name}: expected 1 to {WITHDRAWAL_TEXT_MAX} printable characters"
        )));
    }
    Ok(text)
}

/// `POST /wapi/v1/capital/withdrawals` (`withdraw`).
#[utoipa::path(
    post,
    path = "/wapi/v1/capital/withdrawals",
    tag = "Capital",
    description = "Request a withdrawal (instruction `withdraw`). There is no blockchain behind this exchange: the \
                   amount is debited from the available balance by the engine's `Withdraw` command and the \
                   withdrawal is `confirmed` at once; address and blockchain are recorded for display only.",
    request_body(content = crate::openapi::WithdrawalRequest, content_type = "application/json"),
    params(crate::openapi::SignatureHeaders),
    responses(
        (status = 200, description = "The withdrawal", body = crate::openapi::Withdrawal),
        (status = 400, description = "Bad parameter or insufficient funds", body = crate::openapi::ErrorBody),
        (status = 401, description = "Bad signature", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn withdraw(State(state): State<PrivateState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let params = auth::signed_body_params(&headers, &body)?;
    let user = state.authenticate(&headers, "withdraw", &params)?;
    let symbol = params.get("symbol").ok_or_else(|| ApiError::bad_request("Missing required parameter: symbol"))?;
    let (index, asset) = state
        .config
        .assets
        .iter()
        .enumerate()
        .find(|(_, asset)| asset.symbol == *symbol)
        .ok_or_else(|| ApiError::bad_request(format!("Unknown asset: {symbol}")))?;
    let quantity =
        params.get("quantity").ok_or_else(|| ApiError::bad_request("Missing required parameter: quantity"))?;
    let amount = parse_fixed(quantity, asset.decimals)
        .map_err(|error| match error {
            DecimalError::TooPrecise(_) => ApiError::bad_request(format!(
                "Invalid quantity: {quantity} has more than {} decimal places",
                asset.decimals
            )),
            DecimalError::Overflow => ApiError::bad_request(format!("Invalid quantity: {quantity} is too large")),
            DecimalError::Malformed => {
                ApiError::bad_request(format!("Invalid quantity: {quantity} is not a positive decimal number"))
            }
        })
        .and_then(|amount| {
            if amount == 0 { Err(ApiError::bad_request("Invalid quantity: must be positive")) } else { Ok(amount) }
        })?;
    let address = text_param(&params, "address")?.to_string();
    let blockchain = text_param(&params, "blockchain")?;
    if !BLOCKCHAINS.contains(&blockchain) {
        return Err(ApiError::bad_request(format!("Invalid blockchain: {blockchain}")));
    }
    let client_id = match params.get("clientId") {
        None => None,
        Some(_) => Some(text_param(&params, "clientId")?.to_string()),
    };
    let details = WithdrawalDetails { address, blockchain: blockchain.to_string(), client_id };
    let asset_id = AssetId::new(index as u32);
    let command =
        Command::Withdraw(Withdraw { user_id: user, amount: Amount::new(amount), asset_id, reserved: Reserved::ZERO });
    for event in state.execute(command).await? {
        match event {
            Event::OrderRejected(rejected) => return Err(reject_error(rejected.reason)),
            Event::BalanceUpdate(update)
                if update.user_id == user && update.reason.get() == Ok(BalanceChange::Withdrawal) =>
            {
                // The views recorded the withdrawal before this answer was released.
                let record = state
                    .dispatch
                    .views
                    .history()
                    .annotate_withdrawal(user, update.sequence.get(), details.clone())
                    .unwrap_or(TransferRecord {
                        id: update.sequence.get(),
                        asset_id,
                        amount,
                        timestamp_ns: update.timestamp_ns.get(),
                        details: Some(details.clone()),
                    });
                return ok(withdrawal_json(&state, &record));
            }
            _ => {}
        }
    }
    Err(ApiError {
        status: StatusCode::BAD_GATEWAY,
        code: "INTERNAL_ERROR",
        message: "Unexpected engine answer".into(),
    })
}
