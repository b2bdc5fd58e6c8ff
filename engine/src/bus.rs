//! The engine's message bus: the ingress ring (commands from every gateway into the engine thread)
//! and the egress broadcast ring (events out to every consumer). Gateways, market data and sinks
//! depend on these types only, never on the server that wires them.
//!
//! # Ingress
//! [`IngressRing`] is a bounded lock-free multi-producer queue (crossbeam's `ArrayQueue`) of
//! fixed-size [`IngressCommand`]s, with a doorbell: a push wakes the engine thread if it parked
//! on the empty ring ([`crate::doorbell`]; nothing sleeps a fixed nap while work waits). A push into a full ring fails at once and hands the command
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
//! # Backpressure from gating consumers
//! A consumer inside the process that drains the ring continuously and must not lose events (the
//! gateways' dispatchers, the market-data feed) subscribes as *gating*
//! ([`BroadcastRing::subscribe_gating`]): before overwriting an event such a consumer has not
//! read yet, the publisher waits for it (spin, yield, then short sleeps). So one command whose
//! output is larger than the ring (a mass cancel of 100,000 orders) never laps a consumer that
//! keeps up; the engine thread is slowed to the pace of the slowest gating consumer instead.
//!
//! The wait is bounded: if the consumer the publisher waits for does not read that one event
//! within [`GATING_STALL_MAX`], it is considered stuck and overwritten (it then gets
//! [`ReadError::Lagged`] like any other consumer), and a lapped consumer never holds the publisher
//! back again until it has caught up (sought past the gap). A stuck consumer therefore costs the
//! engine at most one such wait. Gating consumers must never wait for the engine themselves
//! (no blocking push into the ingress ring, no waiting for a command's outcome): the wait would
//! then be a deadlock broken only by the bound. Per-client slowness (a full socket) stays the
//! consumer's business: it cuts that client, it does not stop reading the ring. Consumers doing
//! network I/O to other systems (the sinks) are not gating: they catch up from the journal.
//!
//! # Lag
//! A reader that falls more than the ring's capacity behind gets [`ReadError::Lagged`] with the
//! position it lost: it never silently skips events. It can then catch up from the durable
//! journal (events are a pure function of the journaled commands, so re-executing the journal
//! regenerates them exactly), resynchronise from a snapshot, or ask the engine thread for a
//! consistent read of its state ([`EngineReads`]).

use crate::Engine;
use crate::doorbell::{Doorbell, Idle, IdlePolicy};
use crate::latency::{CommandTrace, GatewayStamps};
use codec::{Command, Event};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A command waiting on the ingress ring.
#[derive(Debug, Clone, Copy)]
pub struct IngressCommand {
    /// Who sent it (a gateway session, see [`origin`]; 0: internal). Copied onto every event it
    /// causes so gateways can route responses back.
    pub origin: u64,
    /// The command.
    pub command: Command,
    /// When the gateway read it and pushed it (zero from producers that do not trace): the start
    /// of its wire-to-wire trace ([`crate::latency`]). Beside the command, not in it: the
    /// command's wire layout and journal record stay as they are.
    pub stamps: GatewayStamps,
    /// The gateway process that sent the command through the commands topic, and its sequence
    /// there (journaled with the command; the engine drops duplicates). `None` for commands from
    /// gateways inside the engine's process.
    pub gateway: Option<codec::GatewayTag>,
}

impl IngressCommand {
    /// An untraced command (internal producers, tools, tests).
    pub fn new(origin: u64, command: Command) -> Self {
        Self { origin, command, stamps: GatewayStamps::default(), gateway: None }
    }

    /// A command from a gateway that read its request at `received_ns` ([`crate::latency::clock_ns`])
    /// and pushes it now.
    pub fn traced(origin: u64, command: Command, received_ns: u64) -> Self {
        Self { origin, command, stamps: GatewayStamps::received_at(received_ns), gateway: None }
    }

    /// A command a gateway process sent through the commands topic (exactly once: `tag`).
    pub fn from_gateway(origin: u64, command: Command, tag: codec::GatewayTag) -> Self {
        Self { origin, command, stamps: GatewayStamps::default(), gateway: Some(tag) }
    }
}

/// The ingress ring shared by every producer: a bounded lock-free queue and the doorbell the
/// engine thread parks on when it is empty ([`crate::doorbell`]).
#[derive(Debug)]
pub struct IngressRing {
    queue: crossbeam_queue::ArrayQueue<IngressCommand>,
    doorbell: Doorbell,
}

impl IngressRing {
    /// A ring of `capacity` commands, allocated now.
    ///
    /// # Panics
    /// If `capacity` is zero.
    pub fn new(capacity: usize) -> Self {
        Self { queue: crossbeam_queue::ArrayQueue::new(capacity), doorbell: Doorbell::default() }
    }

    /// Pushes a command and wakes the engine thread if it is parked; a full ring hands the
    /// command back at once.
    ///
    /// # Errors
    /// The ring is full.
    // Handing the command back by value is the point (a producer retries or rejects it without
    // an allocation on the order path); boxing it to shrink the `Err` would allocate per push.
    #[allow(clippy::result_large_err)]
    pub fn push(&self, item: IngressCommand) -> Result<(), IngressCommand> {
        self.queue.push(item)?;
        self.doorbell.ring();
        Ok(())
    }

    /// Takes the oldest command (engine thread).
    pub fn pop(&self) -> Option<IngressCommand> {
        self.queue.pop()
    }

    /// Commands waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no command waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Capacity, commands.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Engine thread, after finding the ring empty: spins or parks as `policy` says until a
    /// producer pushes (see [`Doorbell::idle`]).
    pub fn idle(&self, idle: &mut Idle, policy: IdlePolicy) {
        self.doorbell.idle_with(idle, policy, || !self.queue.is_empty());
    }
}

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
    /// The command's trace ([`CommandTrace`]): received, pushed, popped, committed, published,
    /// template id. Written and read under the same seqlock as the event.
    trace: [AtomicU64; TRACE_WORDS],
}

/// Words of a [`CommandTrace`] in a slot.
const TRACE_WORDS: usize = 6;

fn trace_words(trace: &CommandTrace) -> [u64; TRACE_WORDS] {
    [
        trace.gateway.received_ns,
        trace.gateway.pushed_ns,
        trace.popped_ns,
        trace.committed_ns,
        trace.published_ns,
        u64::from(trace.template_id),
    ]
}

fn trace_of_words(words: [u64; TRACE_WORDS]) -> CommandTrace {
    CommandTrace {
        gateway: GatewayStamps { received_ns: words[0], pushed_ns: words[1] },
        popped_ns: words[2],
        committed_ns: words[3],
        published_ns: words[4],
        template_id: words[5] as u16,
    }
}

/// Gating consumers one ring can have at once (the process wires a handful: the order-entry
/// dispatchers, the REST dispatcher, the market-data feed).
pub const GATING_CONSUMERS_MAX: usize = 16;

/// How long the publisher waits for a gating consumer to read the one event it is about to
/// overwrite before it declares that consumer stuck and overwrites the event anyway. A consumer
/// that keeps up reads an event in microseconds; this only ends waits for a consumer that stopped.
pub const GATING_STALL_MAX: Duration = Duration::from_millis(500);

/// A free gate (no consumer registered in it).
const GATE_FREE: u64 = u64::MAX;

/// Spins, then yields, then sleeps while waiting for a gating consumer.
const GATING_SPINS: u32 = 64;
const GATING_YIELDS: u32 = 1_024;
const GATING_SLEEP: Duration = Duration::from_micros(20);

/// The ring shared by the publisher and its consumers.
pub struct BroadcastRing {
    slots: Box<[Slot]>,
    mask: u64,
    /// Next position to publish; everything before it is readable (unless overwritten).
    head: AtomicU64,
    /// The cursor of each gating consumer ([`GATE_FREE`] for an unused gate).
    gates: [AtomicU64; GATING_CONSUMERS_MAX],
    /// Publisher's cache: no gating consumer that still needs a position below this was
    /// registered at the last scan, so publications that overwrite only positions below it need
    /// not look at the gates. Lowered by registrations and seeks.
    gate_floor: AtomicU64,
    /// Serialises raising `gate_floor` (the publisher, after a scan) with lowering it (a
    /// registration or a backward seek), so a scan that missed a new gate cannot raise the floor
    /// above it. Taken only on those rare paths, never per event.
    gate_floor_lock: Mutex<()>,
    /// See [`GATING_STALL_MAX`] (shorter in tests).
    stall_max: Duration,
    /// Rung once per published command: consumers parked on an empty ring wake up.
    doorbell: Doorbell,
}

/// What publishing one command cost in waiting for gating consumers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backpressure {
    /// Time spent waiting for gating consumers to make room, ns.
    pub waited_ns: u64,
    /// Gating consumers overwritten after [`GATING_STALL_MAX`] without progress (they lag).
    pub stuck_consumers: u32,
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
    /// The stamps of the command that caused it (all zero when it was not traced).
    pub trace: CommandTrace,
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
        Self::with_stall_max(capacity, GATING_STALL_MAX)
    }

    /// A ring like [`Self::new`] whose publisher gives up on a stuck gating consumer after
    /// `stall_max` instead of [`GATING_STALL_MAX`] (tests of the stuck-consumer path).
    pub fn with_stall_max(capacity: usize, stall_max: Duration) -> Arc<Self> {
        let capacity = capacity.next_power_of_two().max(2);
        let slots = (0..capacity)
            .map(|_| Slot {
                stamp: AtomicU64::new(0),
                origin: AtomicU64::new(0),
                length: AtomicU64::new(0),
                words: std::array::from_fn(|_| AtomicU64::new(0)),
                trace: std::array::from_fn(|_| AtomicU64::new(0)),
            })
            .collect();
        Arc::new(Self {
            slots,
            mask: capacity as u64 - 1,
            head: AtomicU64::new(0),
            gates: std::array::from_fn(|_| AtomicU64::new(GATE_FREE)),
            gate_floor: AtomicU64::new(GATE_FREE),
            gate_floor_lock: Mutex::new(()),
            stall_max,
            doorbell: Doorbell::default(),
        })
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Registers the waker of a consumer that parks elsewhere than on the ring's futex
    /// ([`Consumer::park_elsewhere`]): publications call it while that consumer is parked.
    ///
    /// # Errors
    /// [`crate::doorbell::WakerSlotsFull`]: [`crate::doorbell::WAKER_SLOTS_MAX`] wakers are
    /// registered already.
    pub fn add_waker(&self, waker: Arc<dyn crate::doorbell::Waker>) -> Result<(), crate::doorbell::WakerSlotsFull> {
        self.doorbell.add_waker(waker)
    }

    /// Unregisters a waker added by [`Self::add_waker`]; whether it was registered.
    pub fn remove_waker(&self, waker: &Arc<dyn crate::doorbell::Waker>) -> bool {
        self.doorbell.remove_waker(waker)
    }

    /// Next position to be published.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Publishes every event of one command, marking the last. Single publisher only (the engine
    /// thread); never allocates. Waits (bounded, see the module docs) before overwriting an event
    /// a gating consumer has not read; says how long.
    pub fn publish_command(&self, origin: u64, events: &[Event]) -> Backpressure {
        self.publish_traced_command(origin, &CommandTrace::default(), events)
    }

    /// [`Self::publish_command`] with the command's trace stored beside each of its events.
    pub fn publish_traced_command(&self, origin: u64, trace: &CommandTrace, events: &[Event]) -> Backpressure {
        let mut pressure = Backpressure::default();
        let trace = trace_words(trace);
        for (index, event) in events.iter().enumerate() {
            self.publish_one(origin, &trace, event, index + 1 == events.len(), &mut pressure);
        }
        self.doorbell.ring();
        pressure
    }

    /// Publishes one event as a command of its own (marked last of its command).
    pub fn publish(&self, origin: u64, event: &Event) -> Backpressure {
        let mut pressure = Backpressure::default();
        self.publish_one(origin, &[0; TRACE_WORDS], event, true, &mut pressure);
        self.doorbell.ring();
        pressure
    }

    fn publish_one(
        &self,
        origin: u64,
        trace: &[u64; TRACE_WORDS],
        event: &Event,
        last_of_command: bool,
        pressure: &mut Backpressure,
    ) {
        let mut bytes = [0u8; SLOT_WORDS * 8];
        let length = event.encode(&mut bytes).expect("slot fits the largest event");
        let position = self.head.load(Ordering::Relaxed);
        let capacity = self.slots.len() as u64;
        if let Some(overwritten) = position.checked_sub(capacity)
            && self.gate_floor.load(Ordering::Acquire) <= overwritten
        {
            self.make_room(overwritten, pressure);
        }
        let slot = &self.slots[(position & self.mask) as usize];
        slot.stamp.store(2 * position + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        slot.origin.store(origin, Ordering::Relaxed);
        slot.length.store(length as u64 | if last_of_command { LAST_OF_COMMAND } else { 0 }, Ordering::Relaxed);
        for (word, chunk) in slot.words.iter().zip(bytes.chunks_exact(8)) {
            word.store(u64::from_le_bytes(chunk.try_into().expect("8 bytes")), Ordering::Relaxed);
        }
        for (word, value) in slot.trace.iter().zip(trace) {
            word.store(*value, Ordering::Relaxed);
        }
        slot.stamp.store(2 * position + 2, Ordering::Release);
        self.head.store(position + 1, Ordering::Release);
    }

    /// The lowest cursor among gating consumers that still need `overwritten` or a later event
    /// (those below it were lapped already and hold nothing back), or [`GATE_FREE`].
    fn slowest_gate(&self, overwritten: u64) -> u64 {
        self.gates
            .iter()
            .map(|gate| gate.load(Ordering::Acquire))
            .filter(|&cursor| cursor != GATE_FREE && cursor >= overwritten)
            .min()
            .unwrap_or(GATE_FREE)
    }

    /// Waits until no gating consumer still needs event `overwritten`, or until the one that
    /// does has made no progress for the stall bound. Cold: reached only when a gating consumer
    /// is a whole ring behind.
    #[cold]
    fn make_room(&self, overwritten: u64, pressure: &mut Backpressure) {
        {
            let _floor = self.gate_floor_lock.lock().unwrap_or_else(|e| e.into_inner());
            let slowest = self.slowest_gate(overwritten);
            if slowest > overwritten {
                self.gate_floor.store(slowest, Ordering::Release);
                return;
            }
        }
        let started = Instant::now();
        let mut polls = 0u32;
        loop {
            if polls < GATING_SPINS {
                std::hint::spin_loop();
            } else if polls < GATING_YIELDS {
                std::thread::yield_now();
            } else {
                std::thread::sleep(GATING_SLEEP);
            }
            polls = polls.saturating_add(1);
            if self.slowest_gate(overwritten) > overwritten {
                // Room; the floor is raised by the next publication's scan, under the lock.
                break;
            }
            if started.elapsed() >= self.stall_max {
                // Stuck: overwrite. Its cursor is now lapped, so the next scan ignores it.
                pressure.stuck_consumers += 1;
                break;
            }
        }
        pressure.waited_ns += started.elapsed().as_nanos() as u64;
    }

    /// A consumer starting at the next event to be published.
    pub fn subscribe(self: &Arc<Self>) -> Consumer {
        Consumer { ring: self.clone(), cursor: self.head(), gate: None }
    }

    /// A consumer starting at `position` (e.g. 0 for "everything still in the ring").
    pub fn subscribe_from(self: &Arc<Self>, position: u64) -> Consumer {
        Consumer { ring: self.clone(), cursor: position, gate: None }
    }

    /// A gating consumer (see the module docs) starting at the next event to be published.
    ///
    /// # Panics
    /// When [`GATING_CONSUMERS_MAX`] gating consumers exist already (a wiring error).
    pub fn subscribe_gating(self: &Arc<Self>) -> Consumer {
        self.subscribe_gating_from(self.head())
    }

    /// A gating consumer (see the module docs) starting at `position`.
    ///
    /// # Panics
    /// When [`GATING_CONSUMERS_MAX`] gating consumers exist already (a wiring error).
    pub fn subscribe_gating_from(self: &Arc<Self>, position: u64) -> Consumer {
        let gate = self
            .gates
            .iter()
            .position(|gate| gate.compare_exchange(GATE_FREE, position, Ordering::AcqRel, Ordering::Relaxed).is_ok())
            .unwrap_or_else(|| panic!("more than {GATING_CONSUMERS_MAX} gating consumers on one egress ring"));
        let _floor = self.gate_floor_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.gate_floor.fetch_min(position, Ordering::AcqRel);
        Consumer { ring: self.clone(), cursor: position, gate: Some(gate) }
    }
}

/// A read of the engine's state run on the engine thread: the engine, and the egress position
/// its state corresponds to (every event before it published, none after).
pub type EngineRead = Box<dyn FnOnce(&Engine, u64) + Send>;

/// Reads of the engine's state that other threads ask the engine thread to run between batches,
/// e.g. the market-data feed reseeding its books after it lost events. The engine thread checks
/// [`Self::is_pending`] (one atomic load) once per batch.
#[derive(Default)]
pub struct EngineReads {
    pending: Mutex<Vec<EngineRead>>,
    any: AtomicBool,
}

impl std::fmt::Debug for EngineReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineReads").field("pending", &self.is_pending()).finish()
    }
}

impl EngineReads {
    /// Asks for `read` to run on the engine thread at its next batch boundary.
    pub fn submit(&self, read: EngineRead) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).push(read);
        self.any.store(true, Ordering::Release);
    }

    /// Whether a read waits.
    pub fn is_pending(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Runs every waiting read. Engine thread only, between batches, with every event of the
    /// commands executed so far published (`egress_head` is the ring's head).
    pub fn serve(&self, engine: &Engine, egress_head: u64) {
        let reads = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            self.any.store(false, Ordering::Release);
            std::mem::take(&mut *pending)
        };
        for read in reads {
            read(engine, egress_head);
        }
    }
}

/// A reader with its own cursor.
pub struct Consumer {
    ring: Arc<BroadcastRing>,
    cursor: u64,
    /// Index of its gate in the ring, for a gating consumer.
    gate: Option<usize>,
}

impl Consumer {
    /// The next position this consumer will read.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Whether the publisher waits for this consumer (see [`BroadcastRing::subscribe_gating`]).
    pub fn is_gating(&self) -> bool {
        self.gate.is_some()
    }

    /// Moves the cursor (e.g. to the oldest available position after a lag, once the gap has
    /// been filled from the journal).
    pub fn seek(&mut self, position: u64) {
        self.cursor = position;
        if let Some(gate) = self.gate {
            // Even a forward seek (past a gap, after a lag) may land below the floor, which
            // ignored this consumer while it was lapped: lower it, under the lock.
            let ring = &*self.ring;
            let _floor = ring.gate_floor_lock.lock().unwrap_or_else(|e| e.into_inner());
            ring.gates[gate].store(position, Ordering::Release);
            ring.gate_floor.fetch_min(position, Ordering::AcqRel);
        }
    }

    /// After [`ReadError::Empty`]: spins or parks as `policy` says until the engine publishes
    /// (see [`Doorbell::idle`]); returns after one step, the caller reads again.
    pub fn idle(&self, idle: &mut Idle, policy: IdlePolicy) {
        let ring = &*self.ring;
        ring.doorbell.idle_with(idle, policy, || ring.head.load(Ordering::Acquire) > self.cursor);
    }

    /// After [`ReadError::Empty`], for a consumer that sleeps elsewhere than on the ring's futex
    /// (the SBE gateway's I/O thread, in `epoll_wait`): runs `park` unless an event arrived
    /// meanwhile, announced so that the next publication calls the waker registered with
    /// [`BroadcastRing::add_waker`] (see [`Doorbell::park_elsewhere`]). `None`: not parked.
    pub fn park_elsewhere<T>(&self, park: impl FnOnce() -> T) -> Option<T> {
        let ring = &*self.ring;
        ring.doorbell.park_elsewhere(|| ring.head.load(Ordering::Acquire) > self.cursor, park)
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
        let trace = trace_of_words(std::array::from_fn(|index| slot.trace[index].load(Ordering::Relaxed)));
        fence(Ordering::Acquire);
        if slot.stamp.load(Ordering::Relaxed) != expected {
            return Err(lagged(ring));
        }
        // The publisher wrote a valid encoding; a failure here would be a torn read, which the
        // stamps exclude.
        let (event, _) = Event::decode(&bytes[..length.min(bytes.len())]).map_err(|_| lagged(ring))?;
        let published = Published {
            position: self.cursor,
            origin,
            last_of_command: length_word & LAST_OF_COMMAND != 0,
            event,
            trace,
        };
        self.cursor += 1;
        if let Some(gate) = self.gate {
            // Release: the copy above happens before the publisher may reuse the slot.
            ring.gates[gate].store(self.cursor, Ordering::Release);
        }
        Ok(published)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(gate) = self.gate {
            self.ring.gates[gate].store(GATE_FREE, Ordering::Release);
        }
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
    fn a_command_trace_reaches_every_event_of_its_command() {
        let ring = BroadcastRing::new(8);
        let mut consumer = ring.subscribe();
        let trace = CommandTrace {
            gateway: GatewayStamps { received_ns: 1, pushed_ns: 2 },
            popped_ns: 3,
            committed_ns: 4,
            published_ns: 5,
            template_id: 6,
        };
        ring.publish_traced_command(7, &trace, &[event(1), event(2)]);
        ring.publish(8, &event(3));
        assert_eq!(consumer.try_next().unwrap().trace, trace);
        assert_eq!(consumer.try_next().unwrap().trace, trace);
        assert_eq!(consumer.try_next().unwrap().trace, CommandTrace::default(), "untraced");
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
    fn a_gating_consumer_is_never_lapped_by_one_huge_command() {
        let ring = BroadcastRing::new(8);
        let total = 20_000u64;
        let mut gating = ring.subscribe_gating();
        assert!(gating.is_gating());
        let reader = std::thread::spawn(move || {
            let mut next = 0;
            while next < total {
                match gating.try_next() {
                    Ok(published) => {
                        assert_eq!(published.event, event(next), "in order, none skipped");
                        assert_eq!(published.last_of_command, next + 1 == total);
                        next += 1;
                        if next % 1_000 == 0 {
                            // A slow moment: the publisher must wait, not overwrite.
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                    Err(ReadError::Empty) => std::thread::yield_now(),
                    Err(lagged) => panic!("a gating consumer lagged: {lagged}"),
                }
            }
        });
        let events: Vec<Event> = (0..total).map(event).collect();
        let pressure = ring.publish_command(0, &events);
        reader.join().unwrap();
        assert!(pressure.waited_ns > 0, "2,500 ring lengths in one command: the publisher waited");
        assert_eq!(pressure.stuck_consumers, 0);
    }

    #[test]
    fn a_stuck_gating_consumer_costs_the_publisher_one_bounded_wait() {
        let stall = Duration::from_millis(50);
        let ring = BroadcastRing::with_stall_max(4, stall);
        let mut stuck = ring.subscribe_gating();
        let started = Instant::now();
        let events: Vec<Event> = (0..1_000).map(event).collect();
        let pressure = ring.publish_command(0, &events);
        let elapsed = started.elapsed();
        assert_eq!(pressure.stuck_consumers, 1, "given up on once, then ignored while lapped");
        assert!(elapsed >= stall && elapsed < 10 * stall, "one stall, not one per event: {elapsed:?}");
        assert_eq!(stuck.try_next(), Err(ReadError::Lagged { lost_position: 0, oldest: 996 }));
        // Once it has sought past the gap it holds the publisher back again.
        stuck.seek(996);
        let reader = std::thread::spawn(move || {
            let mut seen = 0;
            while seen < 100 {
                match stuck.try_next() {
                    Ok(_) => seen += 1,
                    Err(ReadError::Empty) => std::thread::yield_now(),
                    Err(lagged) => panic!("lagged after catching up: {lagged}"),
                }
            }
        });
        std::thread::sleep(Duration::from_millis(5));
        let pressure = ring.publish_command(0, &events[..100]);
        reader.join().unwrap();
        assert_eq!(pressure.stuck_consumers, 0);
    }

    #[test]
    fn consumers_registered_or_sought_behind_the_cached_floor_are_waited_for() {
        let ring = BroadcastRing::with_stall_max(8, Duration::from_millis(20));
        let events: Vec<Event> = (0..8).map(event).collect();
        // One keeping up: the publisher's cached floor rises with it.
        let mut fast = ring.subscribe_gating();
        for _ in 0..4 {
            assert_eq!(ring.publish_command(0, &events), Backpressure::default());
            while fast.try_next().is_ok() {}
        }
        // A newcomer at the oldest event still held: the next publication would overwrite it.
        let late = ring.subscribe_gating_from(ring.head() - 8);
        assert_eq!(ring.publish(0, &event(0)).stuck_consumers, 1, "waited for the newcomer");
        while fast.try_next().is_ok() {}
        drop(late);
        // A consumer that was lapped and then sought to the oldest event held, the way a
        // dispatcher resumes after a lag, is waited for again.
        let mut lapped = ring.subscribe_gating();
        for _ in 0..2 {
            ring.publish_command(0, &events);
            while fast.try_next().is_ok() {}
        }
        let Err(ReadError::Lagged { oldest, .. }) = lapped.try_next() else { panic!("lapped") };
        lapped.seek(oldest);
        assert_eq!(ring.publish(0, &event(0)).stuck_consumers, 1, "waited for the consumer after its seek");
    }

    #[test]
    fn dropped_gating_consumers_free_their_gate_and_hold_nothing_back() {
        let ring = BroadcastRing::new(4);
        let consumers: Vec<Consumer> = (0..GATING_CONSUMERS_MAX).map(|_| ring.subscribe_gating()).collect();
        drop(consumers);
        let again: Vec<Consumer> = (0..GATING_CONSUMERS_MAX).map(|_| ring.subscribe_gating()).collect();
        drop(again);
        let events: Vec<Event> = (0..100).map(event).collect();
        assert_eq!(ring.publish_command(0, &events), Backpressure::default());
        // A plain consumer is still lapped, as before.
        let mut plain = ring.subscribe_from(0);
        assert!(!plain.is_gating());
        assert!(matches!(plain.try_next(), Err(ReadError::Lagged { .. })));
    }

    #[test]
    fn engine_reads_run_on_serve_with_the_egress_head() {
        let engine = crate::Engine::new(&crate::EngineConfig::sample()).unwrap();
        let reads = EngineReads::default();
        assert!(!reads.is_pending());
        let seen = Arc::new(AtomicU64::new(0));
        let seen_by_read = seen.clone();
        reads.submit(Box::new(move |engine, head| {
            assert!(engine.book(MarketId::new(1)).is_some());
            seen_by_read.store(head, Ordering::Release);
        }));
        assert!(reads.is_pending());
        reads.serve(&engine, 42);
        assert_eq!(seen.load(Ordering::Acquire), 42);
        assert!(!reads.is_pending(), "each read runs once");
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
