//! The engine's message bus: the ingress ring (commands from every gateway into the engine thread)
//! and the egress broadcast ring (events out to every consumer). Gateways, market data and sinks
//! depend on these types only, never on the server that wires them.
//!
//! # Ingress
//! [`IngressRing`] is a bounded lock-free multi-producer queue (crossbeam's `ArrayQueue`) of
//! fixed-size [`IngressCommand`]s. A push into a full ring fails at once and hands the command
//! back: the gateway answers "busy" in its protocol; nothing blocks and nothing is dropped
//! silently.
//!
//! # Egress
//! The engine thread publishes each event once; every consumer (gateway sessions, market data,
//! each sink) reads it with its own cursor.
//!
//! A fixed array of slots, each holding one encoded SBE event (header + block) and the origin of
//! the command that caused it. Publication is a per-slot seqlock made of atomics only (no
//! `unsafe`): the writer marks the slot odd ("being written"), stores the words, then marks it
//! with the even stamp of its position; readers copy the words and accept them only if the stamp
//! was the expected one before and after the copy.
//!
//! The writer never waits for readers. A reader that falls more than the ring's capacity behind
//! gets [`ReadError::Lagged`] with the position it lost: it never silently skips events. It can
//! then catch up from the durable journal (events are a pure function of the journaled commands,
//! so re-executing the journal regenerates them exactly) or resynchronise from a snapshot.

use codec::{Command, Event};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};

/// A command waiting on the ingress ring.
#[derive(Debug, Clone, Copy)]
pub struct IngressCommand {
    /// Who sent it (a gateway session, see [`origin`]; 0: internal). Copied onto every event it
    /// causes so gateways can route responses back.
    pub origin: u64,
    /// The command.
    pub command: Command,
}

/// The ingress ring shared by every producer.
pub type IngressRing = crossbeam_queue::ArrayQueue<IngressCommand>;

/// Origin tags: the top byte names the gateway, the rest the session (and anything else the
/// gateway wants to correlate).
pub mod origin {
    /// Internal producers (demo, admin tools).
    pub const INTERNAL: u8 = 0;
    /// The SBE binary gateway.
    pub const BINARY: u8 = 1;
    /// The FIX gateway.
    pub const FIX: u8 = 2;
    /// The REST gateway.
    pub const REST: u8 = 3;

    /// An origin tag from a gateway id and a 56-bit session-local value.
    pub const fn tag(gateway: u8, value: u64) -> u64 {
        (gateway as u64) << 56 | (value & ((1 << 56) - 1))
    }

    /// The gateway id of a tag.
    pub const fn gateway(tag: u64) -> u8 {
        (tag >> 56) as u8
    }

    /// The session-local value of a tag.
    pub const fn value(tag: u64) -> u64 {
        tag & ((1 << 56) - 1)
    }
}

/// Words of event payload per slot: the largest event (header + block) rounded up.
const SLOT_WORDS: usize = Event::ENCODED_BYTES_MAX.div_ceil(8);

struct Slot {
    /// `2·position + 2` once published; `2·position + 1` while being written.
    stamp: AtomicU64,
    /// Origin tag of the command (e.g. a gateway session id) and the payload length.
    origin: AtomicU64,
    length: AtomicU64,
    words: [AtomicU64; SLOT_WORDS],
}

/// The ring shared by the publisher and its consumers.
pub struct BroadcastRing {
    slots: Box<[Slot]>,
    mask: u64,
    /// Next position to publish; everything before it is readable (unless overwritten).
    head: AtomicU64,
}

/// One event read from the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Position in the ring's stream (0, 1, 2, … across the process's life).
    pub position: u64,
    /// Origin tag given at publication.
    pub origin: u64,
    /// Whether this is the last event of its command (a gateway waiting for a command's whole
    /// outcome can answer once it sees it).
    pub last_of_command: bool,
    /// The event.
    pub event: Event,
}

/// High bit of a slot's length word: the event is the last of its command.
const LAST_OF_COMMAND: u64 = 1 << 63;

/// Why a read returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Nothing new yet.
    #[error("no new event")]
    Empty,
    /// The reader's next event was overwritten: it fell more than the capacity behind.
    #[error("consumer lagged: event at position {lost_position} was overwritten (oldest available {oldest})")]
    Lagged {
        /// The position the reader wanted.
        lost_position: u64,
        /// The oldest position still in the ring.
        oldest: u64,
    },
}

impl BroadcastRing {
    /// A ring of `capacity` slots (rounded up to a power of two), allocated now.
    pub fn new(capacity: usize) -> Arc<Self> {
        let capacity = capacity.next_power_of_two().max(2);
        let slots = (0..capacity)
            .map(|_| Slot {
                stamp: AtomicU64::new(0),
                origin: AtomicU64::new(0),
                length: AtomicU64::new(0),
                words: std::array::from_fn(|_| AtomicU64::new(0)),
            })
            .collect();
        Arc::new(Self { slots, mask: capacity as u64 - 1, head: AtomicU64::new(0) })
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Next position to be published.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Publishes every event of one command, marking the last. Single publisher only (the engine
    /// thread); never blocks, never allocates.
    pub fn publish_command(&self, origin: u64, events: &[Event]) {
        for (index, event) in events.iter().enumerate() {
            self.publish_one(origin, event, index + 1 == events.len());
        }
    }

    /// Publishes one event as a command of its own (marked last of its command).
    pub fn publish(&self, origin: u64, event: &Event) {
        self.publish_one(origin, event, true);
    }

    fn publish_one(&self, origin: u64, event: &Event, last_of_command: bool) {
        let mut bytes = [0u8; SLOT_WORDS * 8];
        let length = event.encode(&mut bytes).expect("slot fits the largest event");
        let position = self.head.load(Ordering::Relaxed);
        let slot = &self.slots[(position & self.mask) as usize];
        slot.stamp.store(2 * position + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        slot.origin.store(origin, Ordering::Relaxed);
        slot.length.store(length as u64 | if last_of_command { LAST_OF_COMMAND } else { 0 }, Ordering::Relaxed);
        for (word, chunk) in slot.words.iter().zip(bytes.chunks_exact(8)) {
            word.store(u64::from_le_bytes(chunk.try_into().expect("8 bytes")), Ordering::Relaxed);
        }
        slot.stamp.store(2 * position + 2, Ordering::Release);
        self.head.store(position + 1, Ordering::Release);
    }

    /// A consumer starting at the next event to be published.
    pub fn subscribe(self: &Arc<Self>) -> Consumer {
        Consumer { ring: self.clone(), cursor: self.head() }
    }

    /// A consumer starting at `position` (e.g. 0 for "everything still in the ring").
    pub fn subscribe_from(self: &Arc<Self>, position: u64) -> Consumer {
        Consumer { ring: self.clone(), cursor: position }
    }
}

/// A reader with its own cursor.
pub struct Consumer {
    ring: Arc<BroadcastRing>,
    cursor: u64,
}

impl Consumer {
    /// The next position this consumer will read.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Moves the cursor (e.g. to the oldest available position after a lag, once the gap has
    /// been filled from the journal).
    pub fn seek(&mut self, position: u64) {
        self.cursor = position;
    }

    /// Reads the next event.
    ///
    /// # Errors
    /// [`ReadError::Empty`] when caught up; [`ReadError::Lagged`] when the next event was
    /// overwritten (the cursor is left unchanged so the caller decides how to recover).
    pub fn try_next(&mut self) -> Result<Published, ReadError> {
        let ring = &*self.ring;
        let head = ring.head.load(Ordering::Acquire);
        if self.cursor >= head {
            return Err(ReadError::Empty);
        }
        let capacity = ring.slots.len() as u64;
        let lagged = |ring: &BroadcastRing| {
            let head = ring.head.load(Ordering::Acquire);
            ReadError::Lagged { lost_position: self.cursor, oldest: head.saturating_sub(capacity) }
        };
        if head - self.cursor > capacity {
            return Err(lagged(ring));
        }
        let slot = &ring.slots[(self.cursor & ring.mask) as usize];
        let expected = 2 * self.cursor + 2;
        let before = slot.stamp.load(Ordering::Acquire);
        if before != expected {
            return Err(lagged(ring));
        }
        let origin = slot.origin.load(Ordering::Relaxed);
        let length_word = slot.length.load(Ordering::Relaxed);
        let length = (length_word & !LAST_OF_COMMAND) as usize;
        let mut bytes = [0u8; SLOT_WORDS * 8];
        for (word, chunk) in slot.words.iter().zip(bytes.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        fence(Ordering::Acquire);
        if slot.stamp.load(Ordering::Relaxed) != expected {
            return Err(lagged(ring));
        }
        // The publisher wrote a valid encoding; a failure here would be a torn read, which the
        // stamps exclude.
        let (event, _) = Event::decode(&bytes[..length.min(bytes.len())]).map_err(|_| lagged(ring))?;
        let published =
            Published { position: self.cursor, origin, last_of_command: length_word & LAST_OF_COMMAND != 0, event };
        self.cursor += 1;
        Ok(published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::*;

    fn event(n: u64) -> Event {
        Event::BookLevelUpdate(BookLevelUpdate {
            sequence: Sequence::new(n),
            timestamp_ns: TimestampNs::new(n * 3),
            price_ticks: Ticks::new(n * 7),
            quantity_lots: Lots::new(n * 11),
            order_count: OrderCount::new(n as u32),
            market_id: MarketId::new(1),
            side: Side::Bid.into(),
            reserved: Reserved::ZERO,
        })
    }

    #[test]
    fn every_consumer_sees_every_event_in_order() {
        let ring = BroadcastRing::new(8);
        let mut a = ring.subscribe();
        let mut b = ring.subscribe();
        assert_eq!(a.try_next(), Err(ReadError::Empty));
        for n in 0..5 {
            ring.publish(n, &event(n));
        }
        for n in 0..5 {
            let got = a.try_next().unwrap();
            assert_eq!((got.position, got.origin, got.event), (n, n, event(n)));
        }
        assert_eq!(a.try_next(), Err(ReadError::Empty));
        assert_eq!(b.try_next().unwrap().event, event(0), "cursors are independent");
    }

    #[test]
    fn the_last_event_of_a_command_is_marked() {
        let ring = BroadcastRing::new(8);
        let mut consumer = ring.subscribe();
        ring.publish_command(7, &[event(1), event(2), event(3)]);
        let flags: Vec<_> = (0..3).map(|_| consumer.try_next().unwrap().last_of_command).collect();
        assert_eq!(flags, [false, false, true]);
    }

    #[test]
    fn a_lagging_consumer_is_told_not_skipped() {
        let ring = BroadcastRing::new(4);
        let mut slow = ring.subscribe();
        for n in 0..10 {
            ring.publish(0, &event(n));
        }
        assert_eq!(slow.try_next(), Err(ReadError::Lagged { lost_position: 0, oldest: 6 }));
        assert_eq!(slow.cursor(), 0, "the cursor stays where the gap is");
        slow.seek(6);
        assert_eq!(slow.try_next().unwrap().event, event(6));
    }

    #[test]
    fn concurrent_readers_never_see_torn_events() {
        let ring = BroadcastRing::new(64);
        let total = 200_000u64;
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let mut consumer = ring.subscribe_from(0);
                std::thread::spawn(move || {
                    let (mut seen, mut skipped) = (0u64, 0u64);
                    while consumer.cursor() < total {
                        match consumer.try_next() {
                            Ok(published) => {
                                assert_eq!(published.event, event(published.position), "torn or misplaced");
                                seen += 1;
                            }
                            Err(ReadError::Empty) => std::hint::spin_loop(),
                            Err(ReadError::Lagged { lost_position, oldest }) => {
                                // Resume at the oldest event still held; count what was lost.
                                let resume = oldest.max(lost_position + 1);
                                skipped += resume - lost_position;
                                consumer.seek(resume);
                            }
                        }
                    }
                    (seen, skipped)
                })
            })
            .collect();
        for n in 0..total {
            ring.publish(n, &event(n));
        }
        for reader in readers {
            let (seen, skipped) = reader.join().unwrap();
            assert!(seen > 0);
            assert_eq!(seen + skipped, total, "every position is either read or reported lost");
        }
    }
}
