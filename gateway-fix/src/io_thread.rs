//! [`crate::IoMode::Thread`]: one dedicated thread owns every FIX socket and is also the egress
//! ring's dispatcher (and, under `Durability::None`, the session stores' syncer), so an order
//! crosses two thread boundaries (this thread → the engine → this thread; under `Fsync` a third
//! to the syncer thread and back) instead of five (tokio reader → engine → dispatcher → syncer →
//! tokio writer).
//!
//! Each turn of its loop: `epoll_wait` (through mio) for socket readiness; accept; read every
//! readable socket until it would block (a bounded number of reads per turn) and hand the bytes
//! to the connection's [`Inbound`] (the same session logic as the tokio mode: logon, sequence
//! numbers, resends, rejects, throttle, ingress push); route what the engine published (the same
//! [`Dispatcher`]); then the store round and the writes:
//! - under `Durability::None` this thread runs one syncer round itself (the same store writes: a
//!   `write` without `fsync`, cheap), which queues the messages onto their connections;
//! - under `Fsync` the round runs on the syncer thread (as in the tokio mode: one `fdatasync` per
//!   session's batch, a batch being everything queued while the previous one was synced), which
//!   queues the durable messages onto their connections and hands their ids back through a
//!   [`Delivery`], waking this thread's poll. So this thread never waits for the disk: it keeps
//!   reading, routing and writing while a sync is in flight, and a message still reaches its
//!   socket only after its store record is durable;
//!
//! then it writes, once per connection, everything queued for it (batched). A socket that would
//! block keeps its bytes in the connection's out buffer (at most
//! [`reactor::OUT_BUFFER_BYTES_MAX`] taken from its queue at a time); the queue behind it is the same bounded one as in the tokio mode,
//! so a peer that does not read is cut as a slow consumer by the same rule.
//!
//! Idle: after a turn without work it keeps polling (sockets with a zero timeout, and the ring)
//! for the configured spin time, then blocks in `epoll_wait` with a [`mio::Waker`] registered on
//! the egress ring's doorbell ([`engine::doorbell::Doorbell::park_elsewhere`]): a publication
//! or a socket wakes it, never a fixed nap. The wait is bounded by the next timer check
//! ([`TIMER_INTERVAL`]: logon timeouts, heartbeats, TestRequests, the shutdown's Logouts).
//!
//! The loop's skeleton (idle decision, accept, reads, the batched out buffer) is
//! [`engine::reactor`], shared with the SBE gateway; what is FIX's (sessions, syncer) is here.
//!
//! An ending connection is closed once its queue is empty and nothing for it is still at the
//! syncer (the messages on their way hold a sender of its queue; only the session logic's own
//! one is left), or after [`WRITER_GRACE`]: a Logout being synced is written before the close.

use crate::Shared;
use crate::dispatch::Dispatcher;
use crate::session::{Delivery, Flow, Inbound, Outbound, TIMER_INTERVAL, WRITER_GRACE, sync_round};
use bytes::BytesMut;
use engine::bus::{Consumer, origin};
use engine::reactor::{self, Connections, OutBuffer, Reactor, ReadEnd};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Poll};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How long a stopping gateway keeps writing the Logouts of its connections.
const SHUTDOWN_WRITE_MAX: Duration = Duration::from_millis(100);

/// One socket and what this thread keeps for it.
struct Socket {
    stream: TcpStream,
    /// The session logic of the connection.
    inbound: Inbound,
    outbound: mpsc::Receiver<Outbound>,
    /// Set when the connection is cut (slow consumer, lost events, store failure).
    kill: watch::Receiver<bool>,
    /// Bytes read and not yet a whole message.
    buffer: BytesMut,
    /// Messages to write.
    out: OutBuffer,
    /// Ending: closed once everything queued is written, or at this deadline.
    closing: Option<Instant>,
}

impl Socket {
    /// Writes what the out buffer holds, refilling it from the queue while the socket takes it.
    /// Ok(true): everything queued is written. Err: the socket failed.
    fn flush(&mut self) -> std::io::Result<bool> {
        let outbound = &mut self.outbound;
        self.out.flush(&mut self.stream, origin::FIX, |out| match outbound.try_recv() {
            Ok(message) => {
                out.push(&message.bytes, message.ack.map(|ack| (ack.trace, ack.picked_ns)));
                true
            }
            Err(_) => false,
        })
    }

    /// Whether nothing more can come for the connection: its queue is empty and every sender
    /// but the session logic's own is gone (the messages the syncer holds for it hold one each).
    fn drained(&self) -> bool {
        self.outbound.is_empty() && self.outbound.sender_strong_count() <= 1
    }

    /// Starts ending the connection: its session is left (what it queued is written first).
    fn close(&mut self) {
        if self.closing.is_none() {
            self.inbound.end();
            self.closing = Some(Instant::now() + WRITER_GRACE);
        }
    }
}

/// The thread's state.
struct IoThread {
    shared: Arc<Shared>,
    poll: Poll,
    listener: TcpListener,
    sockets: HashMap<u64, Socket>,
    /// Connections to write this turn (read, writable, handed messages by the syncer).
    marked: Vec<u64>,
    /// Scratch for the syncer rounds.
    scheduled: Vec<u64>,
    dispatcher: Dispatcher,
    /// Under `Durability::Fsync`: the connections the syncer thread handed durable messages
    /// (none: this thread runs the syncer rounds).
    delivery: Option<Arc<Delivery>>,
}

/// Runs the I/O thread until the gateway stops.
/// `delivery`: the syncer thread's hand-back (under `Durability::Fsync`); none: this thread runs
/// the syncer rounds.
pub(crate) fn run(
    shared: Arc<Shared>,
    poll: Poll,
    listener: TcpListener,
    mut consumer: Consumer,
    delivery: Option<Arc<Delivery>>,
) {
    let mut thread = IoThread {
        dispatcher: Dispatcher::new(shared.clone()),
        shared,
        poll,
        listener,
        sockets: HashMap::new(),
        marked: Vec::new(),
        scheduled: Vec::new(),
        delivery,
    };
    let mut events = Events::with_capacity(reactor::EVENTS_MAX);
    reactor::run_turns(&mut thread, &mut consumer, &mut events, TIMER_INTERVAL, "FIX");
    thread.shut_down(&mut events);
}

impl Reactor for IoThread {
    fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Acquire)
    }

    fn poll(&mut self) -> &mut Poll {
        &mut self.poll
    }

    fn has_connections(&self) -> bool {
        !self.sockets.is_empty()
    }

    fn dispatch_next(&mut self, consumer: &mut Consumer) -> bool {
        self.dispatcher.dispatch_next(consumer)
    }

    /// The timers first (when due: what they queue goes out in this turn's syncer round), then
    /// the syncer round and the writes, which count as work.
    fn finish_turn(&mut self, timers_due: bool) -> bool {
        if timers_due {
            self.check_timers();
        }
        self.write_marked()
    }
}

impl Connections for IoThread {
    fn accept(&mut self) {
        let Self { shared, poll, listener, sockets, .. } = self;
        let open = sockets.len();
        let open_max = shared.config.connections_max;
        reactor::accept_ready(
            listener,
            poll.registry(),
            &shared.next_connection_id,
            open,
            open_max,
            "FIX",
            |stream, id| {
                let (sender, outbound) = mpsc::channel::<Outbound>(shared.config.outbound_queue_max);
                let (kill_sender, kill) = watch::channel(false);
                shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                sockets.insert(
                    id,
                    Socket {
                        stream,
                        inbound: Inbound::new(shared.clone(), id, sender, kill_sender),
                        outbound,
                        kill,
                        buffer: BytesMut::with_capacity(2 * crate::parser::MESSAGE_BYTES_MAX),
                        out: OutBuffer::default(),
                        closing: None,
                    },
                );
            },
        );
    }

    /// Reads a socket until it would block (or [`reactor::READS_PER_TURN_MAX`]), handling the
    /// messages.
    fn read(&mut self, id: u64) -> bool {
        let Some(socket) = self.sockets.get_mut(&id) else { return false };
        if socket.closing.is_some() {
            reactor::discard_ready(&mut socket.stream);
            return false;
        }
        let Socket { stream, inbound, buffer, .. } = &mut *socket;
        let mut read_again = false;
        let ending = match reactor::read_ready(stream, |bytes, received_ns| {
            buffer.extend_from_slice(bytes);
            match inbound.handle_bytes(buffer, received_ns) {
                Flow::Close => Err(()),
                Flow::Continue => Ok(()),
            }
        }) {
            ReadEnd::Drained => false,
            ReadEnd::Again => {
                read_again = true;
                false
            }
            ReadEnd::PeerGone | ReadEnd::Refused(()) => true,
        };
        if ending {
            socket.close();
        }
        // Answers (logon, rejects, a refused logon's Logout) go out in the same turn.
        self.marked.push(id);
        read_again
    }

    fn writable(&mut self, id: u64) {
        self.marked.push(id);
    }
}

impl IoThread {
    /// Runs one syncer round (store writes, then the messages onto the connections' queues), or
    /// takes the connections the syncer thread handed messages, and writes every connection with
    /// something queued, once each; removes the cut ones and the ended ones whose queue is
    /// written. Whether anything was done.
    fn write_marked(&mut self) -> bool {
        let mut marked = std::mem::take(&mut self.marked);
        let synced = match &self.delivery {
            Some(delivery) => delivery.take(&mut marked),
            None => sync_round(&self.shared, &mut self.scheduled, &mut marked),
        };
        let worked = synced || !marked.is_empty();
        marked.sort_unstable();
        marked.dedup();
        for &id in &marked {
            let Some(socket) = self.sockets.get_mut(&id) else { continue };
            if socket.kill.has_changed().unwrap_or(false) {
                // Cut: nothing more is written (as the tokio writer).
                self.remove(id);
                continue;
            }
            match socket.flush() {
                Ok(done) if done && socket.closing.is_some() && socket.drained() => self.remove(id),
                Ok(_) => {}
                Err(_) => {
                    socket.close();
                    self.remove(id);
                }
            }
        }
        marked.clear();
        self.marked = marked;
        worked
    }

    /// Every [`TIMER_INTERVAL`]: each connection's timers (logon timeout, heartbeats,
    /// TestRequests, the shutdown's Logout), the connections cut from elsewhere, and the grace of
    /// ending connections.
    fn check_timers(&mut self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        for (&id, socket) in &mut self.sockets {
            match socket.closing {
                Some(deadline) if now >= deadline => expired.push(id),
                Some(_) => {}
                None => {
                    if socket.kill.has_changed().unwrap_or(false) || socket.inbound.check_timers() == Flow::Close {
                        socket.close();
                    }
                }
            }
            self.marked.push(id);
        }
        for id in expired {
            tracing::debug!(connection = id, "FIX gateway: peer not reading; connection cut");
            self.remove(id);
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(mut socket) = self.sockets.remove(&id) {
            socket.inbound.end();
            reactor::close_socket(self.poll.registry(), &mut socket.stream);
            self.shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The gateway stops: what the peers sent before is handled first (a peer that already
    /// disconnected gets no Logout, whose number it would never see), then every logged-on
    /// session is sent a Logout (its timer sees the stop), written with what the sockets take
    /// within [`SHUTDOWN_WRITE_MAX`].
    fn shut_down(&mut self, events: &mut Events) {
        if self.poll.poll(events, Some(Duration::ZERO)).is_ok() {
            reactor::handle_events(events, self, &mut Vec::new());
        }
        self.check_timers();
        let deadline = Instant::now() + SHUTDOWN_WRITE_MAX;
        loop {
            let ids: Vec<u64> = self.sockets.keys().copied().collect();
            self.marked.extend_from_slice(&ids);
            self.write_marked();
            if self.sockets.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let ids: Vec<u64> = self.sockets.keys().copied().collect();
        for id in ids {
            self.remove(id);
        }
        // What the sessions queued last reaches their stores (a syncer thread drains its queue
        // before it stops).
        if self.delivery.is_none() {
            let mut delivered = Vec::new();
            sync_round(&self.shared, &mut self.scheduled, &mut delivered);
        }
    }
}
