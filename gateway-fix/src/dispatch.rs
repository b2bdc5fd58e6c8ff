//! The dispatcher: reads the engine's egress ring and turns the events about orders placed
//! through this gateway into FIX application messages for the sessions concerned.
//!
//! Routing (as in the SBE gateway): an event goes to the session whose command caused it (the
//! origin tag), and an event about an order placed through this gateway (a maker fill, a cancel
//! caused by someone else's command) goes to the session that placed it. Reports carry no
//! counterparty identifiers.
//!
//! Correlation: each session keeps a FIFO of its commands in flight (`Pending`). The engine
//! processes a session's commands in order and answers each with exactly one event
//! (OrderAccepted or OrderRejected for a new order; OrderCanceled(UserRequested) or OrderRejected
//! for a cancel; OrderReplaced or OrderRejected for a replace; MassCancelReport or OrderRejected
//! for a mass cancel), so the front of the FIFO is the command an answer belongs to.
//!
//! Order state (quantity, cumulative quantity and notional for CumQty/LeavesQty/AvgPx) is kept
//! here for open orders of this gateway, keyed by order id, and persisted in the owning
//! session's store with each report (so that after a restart the dispatcher starts from the
//! stores' open orders: fills of orders placed before the restart reach their session).
//!
//! Outbound messages are stored per session as they are built and handed to the syncer in
//! batches: whenever the ring is drained (or every [`BATCH_MAX`] events); the syncer writes each
//! batch to the store (and `fsync`s it once under `Durability::Fsync`) before sending it, off
//! this thread.

use crate::Shared;
use crate::app::{MarketInfo, Pending, cxl_rej_reason, open_status, ord_rej_reason};
use crate::encoder::Body;
use crate::session::{AckTrace, SessionState, set_pending_ack};
use crate::store::OrderRecord;
use codec::*;
use engine::bus::{Consumer, Published, ReadError, origin};
use engine::doorbell::{Idle, consumer_idle};
use engine::latency::clock_ns;
use engine::order_table::OrderTable;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Events handled before touched sessions are flushed.
const BATCH_MAX: usize = 256;

#[derive(Debug, Clone, Copy)]
struct OrderInfo {
    session: u64,
    market: MarketId,
    side: Side,
    order_type: OrderType,
    price: u64,
    quantity: u64,
    cum: u64,
    /// Σ price × quantity of the fills, in ticks × lots.
    notional: u128,
    /// StopPx(99) of a stop order (OrdType 3 or 4); 0 for other orders.
    stop_price: u64,
    /// Whether the stop has been triggered: its reports then show the order it placed (OrdType
    /// 1 or 2, no StopPx), except the rejection of a stop whose order could not be placed.
    triggered: bool,
}

/// Routes the egress ring to the sessions: the body of the dispatcher thread
/// ([`crate::IoMode::Tokio`]) or part of each turn of the I/O thread ([`crate::IoMode::Thread`]).
pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
    /// Open orders of this gateway by order id (ids arrive ascending: the table appends).
    orders: OrderTable<OrderInfo>,
    /// (session, engine client order id) → order id, for the status in cancel rejects.
    by_client: HashMap<(u64, u64), OrderId>,
    touched: Vec<u64>,
    last_sequence: u64,
    exec_counter: u64,
    /// Events routed since the touched sessions were last flushed.
    batch: usize,
    /// The sequence of the last command whose first event was seen (see [`track_ack`]).
    traced_sequence: u64,
}

/// The dispatcher thread ([`crate::IoMode::Tokio`]).
pub(crate) fn run(shared: Arc<Shared>, mut consumer: Consumer) {
    let mut dispatcher = Dispatcher::new(shared.clone());
    let mut idle = Idle::default();
    let policy = consumer_idle();
    while !shared.stopping.load(Ordering::Acquire) {
        if dispatcher.dispatch_next(&mut consumer) {
            idle.reset();
        } else {
            // Spin, then park until the engine publishes: no fixed nap (engine::doorbell).
            // With no connection open, park at once (issue #17).
            let serving = shared.stats.connections.load(Ordering::Relaxed) > 0;
            consumer.idle(&mut idle, policy.when_serving(serving));
        }
    }
}

impl Dispatcher {
    /// A dispatcher that knows the open orders the session stores remember (placed before a
    /// restart).
    pub fn new(shared: Arc<Shared>) -> Self {
        let mut dispatcher = Dispatcher {
            shared: shared.clone(),
            orders: OrderTable::new(),
            by_client: HashMap::new(),
            touched: Vec::new(),
            last_sequence: u64::MAX,
            exec_counter: 0,
            batch: 0,
            traced_sequence: 0,
        };
        // In no particular order: collected, then sorted once.
        let mut remembered: Vec<(u64, OrderInfo)> = Vec::new();
        for session in &shared.sessions {
            let state = session.lock().unwrap_or_else(|e| e.into_inner());
            for order in state.orders.values() {
                let info = OrderInfo {
                    session: state.session_id,
                    market: MarketId::new(order.market_id),
                    side: order.side,
                    order_type: order.order_type,
                    price: order.price_ticks,
                    quantity: order.quantity_lots,
                    cum: order.cum_lots,
                    notional: order.notional,
                    stop_price: order.stop_price_ticks,
                    triggered: order.triggered,
                };
                remembered.push((order.order_id, info));
                dispatcher.by_client.insert((state.session_id, order.client_order_id), OrderId::new(order.order_id));
            }
        }
        dispatcher.orders = OrderTable::from_unsorted(remembered);
        dispatcher
    }

    /// Routes the next event of the ring; `false` when there was none (the touched sessions
    /// are then flushed to the syncer, as they are every [`BATCH_MAX`] events).
    pub fn dispatch_next(&mut self, consumer: &mut Consumer) -> bool {
        match consumer.try_next() {
            Ok(published) => {
                track_ack(&published, &mut self.traced_sequence);
                self.route(published.origin, &published.event);
                if published.last_of_command {
                    set_pending_ack(None);
                }
                self.batch += 1;
                if self.batch >= BATCH_MAX {
                    self.flush();
                    self.batch = 0;
                }
                true
            }
            Err(ReadError::Empty) => {
                self.flush();
                self.batch = 0;
                false
            }
            Err(lagged @ ReadError::Lagged { oldest, .. }) => {
                // Reports were lost: cut every connection (clients reconnect and reconcile).
                tracing::error!(%lagged, "FIX dispatcher lagged; cutting all connections");
                for session in &self.shared.sessions {
                    session.lock().unwrap_or_else(|e| e.into_inner()).cut();
                }
                consumer.seek(oldest);
                true
            }
        }
    }
}

/// Hands the trace of a traced FIX command to the first report sent to its session (see
/// `session::PENDING_ACK`) when `published` is the command's first event (`traced_sequence`:
/// the last command seen).
fn track_ack(published: &Published, traced_sequence: &mut u64) {
    let sequence = published.event.sequence().get();
    if sequence != *traced_sequence {
        *traced_sequence = sequence;
        let ack = (origin::gateway(published.origin) == origin::FIX && published.trace.is_complete())
            .then(|| (origin::value(published.origin), AckTrace { trace: published.trace, picked_ns: clock_ns() }));
        set_pending_ack(ack);
    }
}

/// Persists an order's state in its session's store (with the report being built).
fn persist(state: &mut SessionState, order_id: OrderId, client_order_id: ClientOrderId, info: &OrderInfo, open: bool) {
    let record = OrderRecord {
        order_id: order_id.get(),
        client_order_id: client_order_id.get(),
        market_id: info.market.get(),
        side: info.side,
        order_type: info.order_type,
        price_ticks: info.price,
        quantity_lots: info.quantity,
        cum_lots: info.cum,
        notional: info.notional,
        stop_price_ticks: info.stop_price,
        triggered: info.triggered,
        cl_ord_id: state.ids.text(client_order_id).into(),
        superseded: state.ids.superseded(client_order_id.get()),
    };
    state.store_order(record, open);
}

/// OrdStatus after a fill: filled (2) when the fill completed the order, else partially filled.
fn status(info: &OrderInfo, done: bool) -> &'static str {
    if done {
        "2"
    } else if info.cum > 0 {
        "1"
    } else {
        "0"
    }
}

impl Dispatcher {
    fn flush(&mut self) {
        for session_id in self.touched.drain(..) {
            if let Some(session) = self.shared.session(session_id) {
                session.lock().unwrap_or_else(|e| e.into_inner()).flush();
            }
        }
    }

    fn exec_id(&mut self, sequence: Sequence) -> String {
        if sequence.get() != self.last_sequence {
            self.last_sequence = sequence.get();
            self.exec_counter = 0;
        }
        self.exec_counter += 1;
        format!("{}-{}", sequence.get(), self.exec_counter)
    }

    fn with_session(&mut self, session_id: u64, build: impl FnOnce(&mut SessionState)) {
        let Some(session) = self.shared.session(session_id).cloned() else { return };
        build(&mut session.lock().unwrap_or_else(|e| e.into_inner()));
        if !self.touched.contains(&session_id) {
            self.touched.push(session_id);
        }
    }

    fn market(&self, id: MarketId) -> Option<MarketInfo> {
        self.shared.markets.by_id(id).cloned()
    }

    fn route(&mut self, tag: u64, event: &Event) {
        let origin_session = (origin::gateway(tag) == origin::FIX).then(|| origin::value(tag));
        match event {
            Event::OrderAccepted(accepted) => {
                if self.orders.get(accepted.order_id.get()).is_some() {
                    // A triggered stop order placed: its owner heard ExecType L already, and the
                    // command was someone else's trade.
                    return;
                }
                let Some(session) = origin_session else { return };
                let exec_id = self.exec_id(accepted.sequence);
                let Some(market) = self.market(accepted.market_id) else { return };
                let info = OrderInfo {
                    session,
                    market: accepted.market_id,
                    side: accepted.side.get().unwrap_or(Side::Bid),
                    order_type: accepted.order_type.get().unwrap_or(OrderType::Limit),
                    price: accepted.price_ticks.get(),
                    quantity: accepted.quantity_lots.get(),
                    cum: 0,
                    notional: 0,
                    stop_price: 0,
                    triggered: false,
                };
                self.orders.insert(accepted.order_id.get(), info);
                self.by_client.insert((session, accepted.client_order_id.get()), accepted.order_id);
                self.with_session(session, |state| {
                    if matches!(state.pending.front(), Some(Pending::New { .. })) {
                        state.pending.pop_front();
                    }
                    persist(state, accepted.order_id, accepted.client_order_id, &info, true);
                    let cl_ord_id = state.ids.text(accepted.client_order_id);
                    let mut body = Body::new();
                    header(&mut body, accepted.order_id, &cl_ord_id, None, &exec_id, "0", "0");
                    instrument(&mut body, &market, &info);
                    body.uint(14, 0).field(151, market.quantity(info.quantity)).field(6, "0");
                    state.send_app(b"8", body);
                });
            }
            Event::TriggerPending(pending) => {
                let Some(session) = origin_session else { return };
                let exec_id = self.exec_id(pending.sequence);
                let Some(market) = self.market(pending.market_id) else { return };
                let info = OrderInfo {
                    session,
                    market: pending.market_id,
                    side: pending.side.get().unwrap_or(Side::Bid),
                    order_type: pending.order_type.get().unwrap_or(OrderType::Limit),
                    price: pending.price_ticks.get(),
                    quantity: pending.quantity_lots.get(),
                    cum: 0,
                    notional: 0,
                    stop_price: pending.trigger_price_ticks.get(),
                    triggered: false,
                };
                self.orders.insert(pending.order_id.get(), info);
                self.by_client.insert((session, pending.client_order_id.get()), pending.order_id);
                self.with_session(session, |state| {
                    if matches!(state.pending.front(), Some(Pending::New { .. })) {
                        state.pending.pop_front();
                    }
                    persist(state, pending.order_id, pending.client_order_id, &info, true);
                    let cl_ord_id = state.ids.text(pending.client_order_id);
                    let mut body = Body::new();
                    // FIX 4.4: a stop order waiting for its StopPx is New.
                    header(&mut body, pending.order_id, &cl_ord_id, None, &exec_id, "0", "0");
                    instrument(&mut body, &market, &info);
                    body.uint(14, 0).field(151, market.quantity(info.quantity)).field(6, "0");
                    state.send_app(b"8", body);
                });
            }
            Event::TriggerPlaced(placed) => {
                let Some(info) = self.orders.get_mut(placed.order_id.get()) else { return };
                // From here on it reports as the plain market or limit order it placed.
                info.triggered = true;
                let info = *info;
                let exec_id = self.exec_id(placed.sequence);
                let Some(market) = self.market(info.market) else { return };
                self.with_session(info.session, |state| {
                    let cl_ord_id = state.ids.text(placed.client_order_id);
                    let mut body = Body::new();
                    // ExecType L: triggered or activated by system (FIX 4.4); still New.
                    header(&mut body, placed.order_id, &cl_ord_id, None, &exec_id, "L", "0");
                    instrument(&mut body, &market, &info);
                    body.field(99, market.price(placed.trigger_price_ticks.get()));
                    body.uint(14, 0).field(151, market.quantity(info.quantity)).field(6, "0");
                    state.send_app(b"8", body);
                });
            }
            Event::TriggerFailed(failed) => {
                let Some(info) = self.orders.remove(failed.order_id.get()) else { return };
                self.by_client.remove(&(info.session, failed.client_order_id.get()));
                let reason = failed.reason.get().unwrap_or(RejectReason::MalformedMessage);
                let exec_id = self.exec_id(failed.sequence);
                let Some(market) = self.market(info.market) else { return };
                // What was rejected is the stop order the client sent: OrdType 3/4 with StopPx.
                let info = OrderInfo { triggered: false, ..info };
                self.with_session(info.session, |state| {
                    persist(state, failed.order_id, failed.client_order_id, &info, false);
                    let cl_ord_id = state.ids.text(failed.client_order_id);
                    let mut body = Body::new();
                    header(&mut body, failed.order_id, &cl_ord_id, None, &exec_id, "8", "8");
                    instrument(&mut body, &market, &info);
                    totals(&mut body, &market, &info, 0);
                    body.uint(103, u64::from(ord_rej_reason(reason))).field(58, reason.message());
                    state.send_app(b"8", body);
                });
            }
            Event::Fill(fill) => {
                for maker in [true, false] {
                    // Done by the fill's flag for the taker, not `remaining == 0`: a quote-quantity
                    // market order shows 0 remaining on every fill.
                    let (order_id, remaining, done) = if maker {
                        (fill.maker_order_id, fill.maker_remaining_lots.get(), fill.completes_maker())
                    } else {
                        (fill.taker_order_id, fill.taker_remaining_lots.get(), fill.completes_taker())
                    };
                    let client_order_id = if maker { fill.maker_client_order_id } else { fill.taker_client_order_id };
                    let Some(info) = self.orders.get_mut(order_id.get()) else { continue };
                    info.cum += fill.quantity_lots.get();
                    info.notional += u128::from(fill.price_ticks.get()) * u128::from(fill.quantity_lots.get());
                    let info = *info;
                    if done {
                        self.orders.remove(order_id.get());
                        self.by_client.remove(&(info.session, client_order_id.get()));
                    }
                    let exec_id = self.exec_id(fill.sequence);
                    let Some(market) = self.market(info.market) else { continue };
                    self.with_session(info.session, |state| {
                        persist(state, order_id, client_order_id, &info, !done);
                        let cl_ord_id = state.ids.text(client_order_id);
                        let mut body = Body::new();
                        header(&mut body, order_id, &cl_ord_id, None, &exec_id, "F", status(&info, done));
                        instrument(&mut body, &market, &info);
                        body.field(32, market.quantity(fill.quantity_lots.get()));
                        body.field(31, market.price(fill.price_ticks.get()));
                        totals(&mut body, &market, &info, remaining);
                        body.field(851, if maker { "1" } else { "2" });
                        state.send_app(b"8", body);
                    });
                }
            }
            Event::OrderCanceled(canceled) => {
                let info = self.orders.remove(canceled.order_id.get());
                if let Some(info) = info {
                    self.by_client.remove(&(info.session, canceled.client_order_id.get()));
                }
                let answer = canceled.reason.get() == Ok(CancelReason::UserRequested);
                // Only the owner's own requests come from another of its sessions; a cancel by
                // self-trade prevention may happen in someone else's command (a fired stop).
                let by_owner =
                    matches!(canceled.reason.get(), Ok(CancelReason::UserRequested | CancelReason::MassCancel));
                let origin_session = origin_session.filter(|_| by_owner || info.is_none());
                let exec_id = self.exec_id(canceled.sequence);
                let targets = targets(info.map(|i| i.session), origin_session);
                let Some(market) = self.market(canceled.market_id) else { return };
                let owner = info.map(|i| i.session);
                let info = info.unwrap_or(OrderInfo {
                    session: 0,
                    market: canceled.market_id,
                    side: canceled.side.get().unwrap_or(Side::Bid),
                    order_type: OrderType::Limit,
                    price: 0,
                    quantity: canceled.filled_lots.get() + canceled.canceled_lots.get(),
                    cum: canceled.filled_lots.get(),
                    notional: 0,
                    stop_price: 0,
                    triggered: false,
                });
                for session in targets.into_iter().flatten() {
                    self.with_session(session, |state| {
                        if owner == Some(session) {
                            persist(state, canceled.order_id, canceled.client_order_id, &info, false);
                        }
                        let mut cl_ord_id = state.ids.text(canceled.client_order_id);
                        let mut orig = None;
                        if answer
                            && Some(session) == origin_session
                            && let Some(Pending::Cancel { .. }) = state.pending.front()
                            && let Some(Pending::Cancel { cl_ord_id: request, orig: original }) =
                                state.pending.pop_front()
                        {
                            cl_ord_id = request.into();
                            orig = Some(original);
                        }
                        let mut body = Body::new();
                        header(&mut body, canceled.order_id, &cl_ord_id, orig.as_deref(), &exec_id, "4", "4");
                        instrument(&mut body, &market, &info);
                        totals(&mut body, &market, &info, 0);
                        if let Some(text) = canceled.reason.get().ok().and_then(cancel_text) {
                            body.field(58, text);
                        }
                        state.send_app(b"8", body);
                    });
                }
            }
            Event::OrderExpired(expired) => {
                let info = self.orders.remove(expired.order_id.get());
                let Some(info) = info else { return };
                self.by_client.remove(&(info.session, expired.client_order_id.get()));
                let exec_id = self.exec_id(expired.sequence);
                let Some(market) = self.market(expired.market_id) else { return };
                self.with_session(info.session, |state| {
                    persist(state, expired.order_id, expired.client_order_id, &info, false);
                    let cl_ord_id = state.ids.text(expired.client_order_id);
                    let mut body = Body::new();
                    header(&mut body, expired.order_id, &cl_ord_id, None, &exec_id, "C", "C");
                    instrument(&mut body, &market, &info);
                    totals(&mut body, &market, &info, 0);
                    state.send_app(b"8", body);
                });
            }
            Event::OrderReplaced(replaced) => {
                let info = self.orders.get_mut(replaced.order_id.get()).map(|info| {
                    info.price = replaced.price_ticks.get();
                    info.quantity = replaced.quantity_lots.get();
                    *info
                });
                let exec_id = self.exec_id(replaced.sequence);
                let Some(market) = self.market(replaced.market_id) else { return };
                let info = info.unwrap_or(OrderInfo {
                    session: 0,
                    market: replaced.market_id,
                    side: replaced.side.get().unwrap_or(Side::Bid),
                    order_type: OrderType::Limit,
                    price: replaced.price_ticks.get(),
                    quantity: replaced.quantity_lots.get(),
                    cum: replaced.filled_lots.get(),
                    notional: 0,
                    stop_price: 0,
                    triggered: false,
                });
                let owner = (info.session != 0).then_some(info.session);
                for session in targets(owner, origin_session).into_iter().flatten() {
                    self.with_session(session, |state| {
                        let old = state.ids.text(replaced.client_order_id);
                        let mut cl_ord_id = old.clone();
                        let mut orig = None;
                        if Some(session) == origin_session
                            && let Some(Pending::Replace { .. }) = state.pending.front()
                            && let Some(Pending::Replace { cl_ord_id: request, orig: original }) =
                                state.pending.pop_front()
                        {
                            state.ids.replaced(replaced.client_order_id.get(), &request);
                            cl_ord_id = request.into();
                            orig = Some(original);
                        }
                        if owner == Some(session) {
                            persist(state, replaced.order_id, replaced.client_order_id, &info, true);
                        }
                        let remaining = replaced.remaining_lots.get();
                        let status = if info.cum > 0 { "1" } else { "0" };
                        let mut body = Body::new();
                        header(&mut body, replaced.order_id, &cl_ord_id, orig.as_deref(), &exec_id, "5", status);
                        instrument(&mut body, &market, &info);
                        totals(&mut body, &market, &info, remaining);
                        state.send_app(b"8", body);
                    });
                }
            }
            Event::OrderRejected(rejected) => {
                let Some(session) = origin_session else { return };
                let exec_id = self.exec_id(rejected.sequence);
                let reason = rejected.reason.get().unwrap_or(RejectReason::MalformedMessage);
                let market = self.market(rejected.market_id);
                // The session's own open order the request was about (never another session's).
                let known_id = if rejected.order_id != OrderId::ZERO {
                    Some(rejected.order_id)
                } else {
                    self.by_client.get(&(session, rejected.client_order_id.get())).copied()
                };
                let known = known_id
                    .and_then(|id| self.orders.get(id.get()).map(|info| (id, *info)))
                    .filter(|(_, info)| info.session == session);
                let template = rejected.command_template_id.get();
                self.with_session(session, |state| {
                    let pending = state.pending.pop_front();
                    if let Some(Pending::Replace { cl_ord_id, .. }) = &pending {
                        // Refused: the ClOrdID it asked for is free again.
                        state.ids.release(cl_ord_id);
                    }
                    let mut body = Body::new();
                    match (template, pending) {
                        (3 | 2, Some(Pending::Cancel { cl_ord_id, orig } | Pending::Replace { cl_ord_id, orig })) => {
                            // OrderID(37) of a known order; NONE only when it is unknown (FIX).
                            match known {
                                Some((order_id, info)) => {
                                    body.uint(37, order_id.get()).field(39, open_status(info.cum))
                                }
                                None => body.field(37, "NONE").field(39, "8"),
                            };
                            body.field(11, &*cl_ord_id).field(41, &*orig);
                            body.field(434, if template == 2 { "1" } else { "2" });
                            body.uint(102, u64::from(cxl_rej_reason(reason))).field(58, reason.message());
                            state.send_app(b"9", body);
                        }
                        (4, Some(Pending::MassCancel { cl_ord_id, request_type })) => {
                            body.field(37, "NONE").field(11, &*cl_ord_id).uint(530, u64::from(request_type));
                            body.field(531, "0").uint(532, if reason == RejectReason::UnknownMarket { 1 } else { 99 });
                            body.field(58, reason.message());
                            state.send_app(b"r", body);
                        }
                        (_, pending) => {
                            let cl_ord_id = state.ids.text(rejected.client_order_id);
                            if matches!(pending, Some(Pending::New { .. })) {
                                state.ids.rejected_new(rejected.client_order_id.get());
                            }
                            body.field(37, "NONE")
                                .field(11, &cl_ord_id)
                                .field(17, &exec_id)
                                .field(150, "8")
                                .field(39, "8");
                            if let Some(market) = &market {
                                body.field(55, &market.symbol);
                            }
                            if let Some(Pending::New { side, lots, ticks, order_type, stop_ticks }) = pending {
                                body.field(54, if side == Side::Bid { "1" } else { "2" });
                                if let Some(market) = &market {
                                    body.field(38, market.quantity(lots));
                                    body.field(40, ord_type(order_type, stop_ticks != 0));
                                    if ticks != 0 {
                                        body.field(44, market.price(ticks));
                                    }
                                    if stop_ticks != 0 {
                                        body.field(99, market.price(stop_ticks));
                                    }
                                }
                            }
                            body.uint(14, 0).uint(151, 0).field(6, "0");
                            body.uint(103, u64::from(ord_rej_reason(reason))).field(58, reason.message());
                            state.send_app(b"8", body);
                        }
                    }
                });
            }
            Event::MassCancelReport(report) => {
                let Some(session) = origin_session else { return };
                let market = self.market(report.market_id);
                self.with_session(session, |state| {
                    let (cl_ord_id, request_type) = match state.pending.front() {
                        Some(Pending::MassCancel { .. }) => match state.pending.pop_front() {
                            Some(Pending::MassCancel { cl_ord_id, request_type }) => {
                                (cl_ord_id.to_string(), request_type)
                            }
                            _ => ("NONE".into(), 7),
                        },
                        _ => ("NONE".into(), if report.market_id == MarketId::ZERO { 7 } else { 1 }),
                    };
                    let mut body = Body::new();
                    body.field(11, cl_ord_id).field(37, format!("MC-{}", report.sequence.get()));
                    body.uint(530, u64::from(request_type)).uint(531, u64::from(request_type));
                    if let Some(market) = &market {
                        body.field(55, &market.symbol);
                    }
                    body.uint(533, u64::from(report.canceled_count.get()));
                    state.send_app(b"r", body);
                });
            }
            // AMM pool commands are served by the REST API only.
            Event::BookLevelUpdate(_)
            | Event::BalanceUpdate(_)
            | Event::MarketStatusChanged(_)
            | Event::LiquidityAdded(_)
            | Event::LiquidityRemoved(_)
            | Event::SwapExecuted(_)
            | Event::OrderRouted(_) => {}
        }
    }
}

/// Text(58) of an ExecutionReport Canceled the owner did not ask for with this order's own
/// cancel request: why the order left the book.
fn cancel_text(reason: CancelReason) -> Option<&'static str> {
    match reason {
        CancelReason::UserRequested => None,
        CancelReason::MassCancel => Some("canceled by a mass cancel of the order's owner"),
        CancelReason::SelfTradePrevention => {
            Some("canceled by self-trade prevention: it would have traded with another order of the same user")
        }
        CancelReason::Administrative => Some("canceled by the exchange (administrative, e.g. a market halt)"),
        CancelReason::OneCancelsOther => Some("canceled: the other order of its stop-loss / take-profit pair fired"),
    }
}

/// The sessions an event about an order goes to: its owner and the session that acted on it.
fn targets(owner: Option<u64>, origin: Option<u64>) -> [Option<u64>; 2] {
    match (owner, origin) {
        (Some(owner), Some(origin)) if owner != origin => [Some(owner), Some(origin)],
        (Some(session), _) | (None, Some(session)) => [Some(session), None],
        (None, None) => [None, None],
    }
}

/// OrderID, ClOrdID, OrigClOrdID, ExecID, ExecType, OrdStatus.
fn header(
    body: &mut Body,
    order_id: OrderId,
    cl_ord_id: &str,
    orig: Option<&str>,
    exec_id: &str,
    exec_type: &str,
    status: &str,
) {
    body.uint(37, order_id.get()).field(11, cl_ord_id);
    if let Some(orig) = orig {
        body.field(41, orig);
    }
    body.field(17, exec_id).field(150, exec_type).field(39, status);
}

/// Symbol, Side, OrderQty, OrdType, Price.
fn instrument(body: &mut Body, market: &MarketInfo, info: &OrderInfo) {
    body.field(55, &market.symbol).field(54, if info.side == Side::Bid { "1" } else { "2" });
    body.field(38, market.quantity(info.quantity));
    // A stop reports as one (3 or 4, with StopPx) until triggered, then as the order it placed.
    let as_stop = info.stop_price != 0 && !info.triggered;
    body.field(40, ord_type(info.order_type, as_stop));
    if info.price != 0 {
        body.field(44, market.price(info.price));
    }
    if as_stop {
        body.field(99, market.price(info.stop_price));
    }
}

/// OrdType(40): 1 market, 2 limit, 3 stop, 4 stop limit.
fn ord_type(order_type: OrderType, stop: bool) -> &'static str {
    match (order_type, stop) {
        (OrderType::Market, false) => "1",
        (OrderType::Limit, false) => "2",
        (OrderType::Market, true) => "3",
        (OrderType::Limit, true) => "4",
    }
}

/// CumQty, LeavesQty, AvgPx (truncated to the quote asset's minor unit).
fn totals(body: &mut Body, market: &MarketInfo, info: &OrderInfo, leaves: u64) {
    body.field(14, market.quantity(info.cum)).field(151, market.quantity(leaves));
    if info.cum == 0 {
        body.field(6, "0");
    } else {
        let average = info.notional * u128::from(market.tick_size) / u128::from(info.cum);
        body.field(6, market.quote_amount(average));
    }
}
