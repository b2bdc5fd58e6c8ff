//! The dispatcher: reads the engine's egress ring and hands each event to the sessions it
//! concerns, as a numbered application message.
//!
//! Routing: an event goes to the session whose command caused it (the origin tag), and an event
//! about a resting order placed through this gateway (a maker fill, a cancel or expiry caused by
//! someone else's command) goes to the session that placed the order. A fill shown to one side
//! has the other side's identifiers, remaining quantity and fee zeroed (and, shown to the maker,
//! whether it completed the taker): no user learns another's orders. Book and balance updates
//! are not sent on order-entry sessions.

use crate::Shared;
use crate::session::{AckTrace, SessionState, event_frame};
use codec::*;
use engine::bus::{Consumer, Published, ReadError, origin};
use engine::doorbell::{Idle, consumer_idle};
use engine::latency::clock_ns;
use engine::order_table::OrderTable;
use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

thread_local! {
    /// The trace of the command whose events are being routed, with the session that sent it:
    /// taken by the first frame delivered to that session (its acknowledgement), so the routing
    /// code needs no knowledge of it. Dispatcher thread only.
    static PENDING_ACK: Cell<Option<(u64, AckTrace)>> = const { Cell::new(None) };
}

/// Sets [`PENDING_ACK`] when `published` is the first event of a traced command of this
/// gateway's (`traced_sequence`: the last command seen), and clears it after its last event.
fn track_ack(published: &Published, traced_sequence: &mut u64) {
    let sequence = published.event.sequence().get();
    if sequence != *traced_sequence {
        *traced_sequence = sequence;
        let ack = (origin::gateway(published.origin) == origin::BINARY && published.trace.is_complete())
            .then(|| (origin::value(published.origin), AckTrace { trace: published.trace, picked_ns: clock_ns() }));
        PENDING_ACK.set(ack);
    }
}

/// The routing state of the egress ring's consumer (the dispatcher thread, or the I/O thread of
/// [`crate::IoMode::Thread`]).
pub(crate) struct Dispatcher {
    /// Open orders placed through this gateway: order id → session id (12 bytes and a bit per
    /// open order: ids arrive ascending, so the table only appends).
    owners: OrderTable<u64>,
    /// The command sequence of the last event seen (see [`track_ack`]).
    traced_sequence: u64,
}

impl Dispatcher {
    pub fn new() -> Self {
        Self { owners: OrderTable::new(), traced_sequence: 0 }
    }

    /// Routes the next event of the egress ring to its sessions. False when the ring is empty.
    pub fn dispatch_next(&mut self, shared: &Shared, consumer: &mut Consumer) -> bool {
        match consumer.try_next() {
            Ok(published) => {
                track_ack(&published, &mut self.traced_sequence);
                route(shared, &mut self.owners, published.origin, &published.event);
                if published.last_of_command {
                    PENDING_ACK.set(None);
                }
                true
            }
            Err(ReadError::Empty) => false,
            Err(lagged @ ReadError::Lagged { oldest, .. }) => {
                // Events were lost for this gateway: sessions cannot be trusted to have every
                // report. Cut every connection (clients reconnect and reconcile) and go on.
                tracing::error!(%lagged, "binary gateway dispatcher lagged; terminating all connections");
                terminate_all(shared, TerminateReason::SlowConsumer);
                consumer.seek(oldest);
                true
            }
        }
    }
}

/// Cuts every connected session's connection with `reason`.
pub(crate) fn terminate_all(shared: &Shared, reason: TerminateReason) {
    for session in shared.sessions.lock().unwrap_or_else(|e| e.into_inner()).values() {
        if let Some(connection) = session.lock().unwrap_or_else(|e| e.into_inner()).connection.take() {
            connection.terminate(reason);
        }
    }
}

pub(crate) fn run(shared: Arc<Shared>, mut consumer: Consumer) {
    let mut dispatcher = Dispatcher::new();
    let mut idle = Idle::default();
    let policy = consumer_idle();
    while !shared.stopping.load(Ordering::Acquire) {
        if dispatcher.dispatch_next(&shared, &mut consumer) {
            idle.reset();
        } else {
            // Spin, then park until the engine publishes: no fixed nap (engine::doorbell). With
            // no connection open there is nobody to answer quickly: park at once (issue #17).
            let serving = shared.stats.connections.load(Ordering::Relaxed) > 0;
            consumer.idle(&mut idle, policy.when_serving(serving));
        }
    }
    // Shutdown: tell connected clients.
    terminate_all(&shared, TerminateReason::ServerShutdown);
}

fn session_by_id(shared: &Shared, session_id: u64) -> Option<Arc<Mutex<SessionState>>> {
    let key = *shared.session_keys.lock().unwrap_or_else(|e| e.into_inner()).get(&session_id)?;
    shared.sessions.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned()
}

fn deliver(shared: &Shared, session_id: u64, event: &Event) {
    if let Some(session) = session_by_id(shared, session_id) {
        let ack = PENDING_ACK.get().filter(|(origin_session, _)| *origin_session == session_id);
        if ack.is_some() {
            PENDING_ACK.set(None);
        }
        let ack = ack.map(|(_, ack)| ack);
        session.lock().unwrap_or_else(|e| e.into_inner()).push_traced_application(event_frame(event), ack);
    }
}

fn route(shared: &Shared, owners: &mut OrderTable<u64>, tag: u64, event: &Event) {
    let origin_session = (origin::gateway(tag) == origin::BINARY).then(|| origin::value(tag));
    match event {
        Event::OrderAccepted(accepted) => {
            // A fired trigger order keeps its owner; the command that fired it was someone
            // else's trade.
            if let Some(&owner) = owners.get(accepted.order_id.get()) {
                deliver(shared, owner, event);
            } else if let Some(session) = origin_session {
                owners.insert(accepted.order_id.get(), session);
                deliver(shared, session, event);
            }
        }
        Event::TriggerPending(pending) => {
            if let Some(session) = origin_session {
                owners.insert(pending.order_id.get(), session);
                deliver(shared, session, event);
            }
        }
        Event::TriggerPlaced(placed) => {
            if let Some(&owner) = owners.get(placed.order_id.get()) {
                deliver(shared, owner, event);
            }
        }
        Event::TriggerFailed(failed) => {
            if let Some(owner) = owners.remove(failed.order_id.get()) {
                deliver(shared, owner, event);
            }
        }
        Event::OrderRejected(_) | Event::MassCancelReport(_) => {
            if let Some(session) = origin_session {
                deliver(shared, session, event);
            }
        }
        Event::Fill(fill) => {
            let maker_session = owners.get(fill.maker_order_id.get()).copied();
            let taker_session = owners.get(fill.taker_order_id.get()).copied().or(origin_session);
            if fill.completes_maker() {
                owners.remove(fill.maker_order_id.get());
            }
            // Not `taker_remaining_lots == 0`: every fill of a quote-quantity market order shows
            // that; only the fill that completes the taker says it is done.
            if fill.completes_taker() {
                owners.remove(fill.taker_order_id.get());
            }
            match (maker_session, taker_session) {
                (Some(maker), Some(taker)) if maker == taker => deliver(shared, maker, event),
                (maker, taker) => {
                    if let Some(maker) = maker {
                        let mut shown = *fill;
                        shown.taker_user_id = UserId::ZERO;
                        shown.taker_order_id = OrderId::ZERO;
                        shown.taker_client_order_id = ClientOrderId::ZERO;
                        shown.taker_remaining_lots = Lots::ZERO;
                        shown.taker_fee = Amount::ZERO;
                        shown.taker_order_complete = false.into();
                        deliver(shared, maker, &Event::Fill(shown));
                    }
                    if let Some(taker) = taker {
                        let mut shown = *fill;
                        shown.maker_user_id = UserId::ZERO;
                        shown.maker_order_id = OrderId::ZERO;
                        shown.maker_client_order_id = ClientOrderId::ZERO;
                        shown.maker_remaining_lots = Lots::ZERO;
                        shown.maker_fee = Amount::ZERO;
                        deliver(shared, taker, &Event::Fill(shown));
                    }
                }
            }
        }
        Event::OrderCanceled(OrderCanceled { order_id, user_id, .. })
        | Event::OrderExpired(OrderExpired { order_id, user_id, .. }) => {
            let owner = owners.remove(order_id.get());
            let origin_session = origin_session
                .filter(|&origin| Some(origin) == owner || session_user(shared, origin) == Some(*user_id));
            route_to_owner_and_origin(shared, owner, origin_session, event);
        }
        Event::OrderReplaced(replaced) => {
            let owner = owners.get(replaced.order_id.get()).copied();
            route_to_owner_and_origin(shared, owner, origin_session, event);
        }
        // AMM pool events never come from this gateway's commands (it refuses them).
        Event::BookLevelUpdate(_)
        | Event::BalanceUpdate(_)
        | Event::MarketStatusChanged(_)
        | Event::LiquidityAdded(_)
        | Event::LiquidityRemoved(_)
        | Event::SwapExecuted(_)
        | Event::OrderRouted(_) => {}
    }
}

/// The user of a session: an order's events reach the session whose command caused them only
/// if it is the order owner's (a fired trigger order trades inside another user's command).
fn session_user(shared: &Shared, session_id: u64) -> Option<UserId> {
    let key = *shared.session_keys.lock().unwrap_or_else(|e| e.into_inner()).get(&session_id)?;
    shared.credentials.user_of(&FixedBytes(key))
}

fn route_to_owner_and_origin(shared: &Shared, owner: Option<u64>, origin_session: Option<u64>, event: &Event) {
    match (owner, origin_session) {
        (Some(owner), Some(origin)) if owner != origin => {
            // Both the session that placed the order and the one that acted on it (the same
            // user's, since only owners can cancel or replace) hear about it.
            deliver(shared, owner, event);
            deliver(shared, origin, event);
        }
        (Some(session), _) | (None, Some(session)) => deliver(shared, session, event),
        (None, None) => {}
    }
}
