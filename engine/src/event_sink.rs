//! Where the engine puts the events of a command: a caller's `Vec<Event>` (the live engine and
//! every consumer that reads events) or [`NoEvents`] (replays that rebuild state only: recovery,
//! the snapshotter's and the standby's shadow engines).
//!
//! The engine is generic over the sink ([`crate::Engine::execute_into`]), so the no-events path
//! is compiled separately: pushing is a no-op there and the events are never built. The engine
//! never decides anything by reading its own events back (what it needs of its latest fill it
//! keeps beside the taker), so both paths reach the same state: the test
//! `replay_without_events_reaches_the_same_state` in `engine/tests/properties.rs` checks it.

use codec::Event;

/// A destination for the events of [`crate::Engine::execute_into`].
pub trait EventSink {
    /// Whether the events are kept. `false` lets the engine skip work done only to describe
    /// a change (e.g. looking up a price level's new total for its update event).
    const KEEPS_EVENTS: bool;

    /// [`Self::KEEPS_EVENTS`] of this sink (for functions that take `&mut impl EventSink`).
    #[inline(always)]
    fn keeps_events(&self) -> bool {
        Self::KEEPS_EVENTS
    }

    /// Appends one event.
    fn push(&mut self, event: Event);

    /// The index the next pushed event will have (a handle for [`Self::mark_taker_order_complete`]).
    fn next_index(&self) -> usize;

    /// Marks the [`codec::Fill`] at `fill_index` (an earlier [`Self::next_index`]) as completing
    /// its taker order: a quote-quantity order learns that it is done only when matching ends.
    fn mark_taker_order_complete(&mut self, fill_index: usize);
}

impl EventSink for Vec<Event> {
    const KEEPS_EVENTS: bool = true;

    #[inline]
    fn push(&mut self, event: Event) {
        Vec::push(self, event);
    }

    #[inline]
    fn next_index(&self) -> usize {
        self.len()
    }

    fn mark_taker_order_complete(&mut self, fill_index: usize) {
        match self.get_mut(fill_index) {
            Some(Event::Fill(fill)) => fill.taker_order_complete = true.into(),
            // The engine recorded this index when it pushed the fill, in this same command.
            other => unreachable!("taker fill index {fill_index} holds {other:?}, not a fill"),
        }
    }
}

/// The sink of a replay that rebuilds state only: every event is dropped unbuilt.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    const KEEPS_EVENTS: bool = false;

    #[inline(always)]
    fn push(&mut self, _event: Event) {}

    #[inline(always)]
    fn next_index(&self) -> usize {
        0
    }

    #[inline(always)]
    fn mark_taker_order_complete(&mut self, _fill_index: usize) {}
}
