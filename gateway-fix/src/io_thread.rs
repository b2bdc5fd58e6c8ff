//! [`crate::IoMode::Thread`]: one dedicated thread owns every FIX socket and is also the egress
//! ring's dispatcher and the session stores' syncer, so an order crosses two thread boundaries
//! (this thread → the engine → this thread) instead of five (tokio reader → engine → dispatcher
//! → syncer → tokio writer).
//!
//! Each turn of its loop: `epoll_wait` (through mio) for socket readiness; accept; read every
//! readable socket until it would block (a bounded number of reads per turn) and hand the bytes
//! to the connection's [`Inbound`] (the same session logic as the tokio mode: logon, sequence
//! numbers, resends, rejects, throttle, ingress push); route what the engine published (the same
//! [`Dispatcher`]); run one syncer round (the same store writes: under `Durability::None` a
//! `write` without `fsync`, under `Fsync` one `fdatasync` for every session's batch of the turn);
//! then write, once per connection, everything queued for it (batched). A socket that would
//! block keeps its bytes in the connection's out buffer (at most [`OUT_BUFFER_BYTES_MAX`] taken
//! from its queue at a time); the queue behind it is the same bounded one as in the tokio mode,
//! so a peer that does not read is cut as a slow consumer by the same rule.
//!
//! Idle: after a turn without work it keeps polling (sockets with a zero timeout, and the ring)
//! for the configured spin time, then blocks in `epoll_wait` with a [`mio::Waker`] registered on
//! the egress ring's doorbell ([`engine::doorbell::Doorbell::park_elsewhere`]): a publication
//! or a socket wakes it, never a fixed nap. The wait is bounded by the next timer check
//! ([`TIMER_INTERVAL`]: logon timeouts, heartbeats, TestRequests, the shutdown's Logouts).

use crate::Shared;
use crate::dispatch::Dispatcher;
use crate::session::{ACKS_PER_WRITE_MAX, AckTrace, Flow, Inbound, Outbound, TIMER_INTERVAL, WRITER_GRACE, sync_round};
use bytes::BytesMut;
use engine::bus::{Consumer, origin};
use engine::doorbell::{IdlePolicy, consumer_idle};
use engine::latency::{clock_ns, wire_latency};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The listening socket's token.
const LISTENER: Token = Token(0);
/// The waker's token (the engine's publications and the gateway's shutdown).
pub(crate) const WAKER: Token = Token(1);
/// Connection ids start above the reserved tokens (they are the connections' tokens).
pub(crate) const FIRST_CONNECTION_ID: u64 = 2;
/// Readiness events taken from one `epoll_wait`.
const EVENTS_MAX: usize = 1_024;
/// Bytes asked of the kernel per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Reads of one socket per turn: a peer that keeps its socket full cannot starve the others (it
/// is read again next turn).
const READS_PER_TURN_MAX: usize = 16;
/// Egress events routed per turn before the sockets are looked at again.
const EVENTS_PER_TURN_MAX: usize = 4_096;
/// Bytes taken from a connection's queue into its out buffer at a time (the tokio mode's
/// `BufWriter` capacity).
const OUT_BUFFER_BYTES_MAX: usize = 64 * 1024;
/// How long a stopping gateway keeps writing the Logouts of its connections.
const SHUTDOWN_WRITE_MAX: Duration = Duration::from_millis(100);

/// Wakes the I/O thread out of `epoll_wait` (an eventfd in its poll set).
pub(crate) struct IoWaker(pub mio::Waker);

impl engine::doorbell::Waker for IoWaker {
    fn wake(&self) {
        let _ = self.0.wake();
    }
}

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
    /// Bytes to write, from `written` on.
    out: Vec<u8>,
    written: usize,
    /// Traced acknowledgements in `out`, recorded once it is written.
    acks: Vec<AckTrace>,
    /// Ending: closed once everything queued is written, or at this deadline.
    closing: Option<Instant>,
}

impl Socket {
    /// Takes messages from the queue into the out buffer, up to [`OUT_BUFFER_BYTES_MAX`].
    fn refill(&mut self) {
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        while self.out.len() - self.written < OUT_BUFFER_BYTES_MAX {
            let Ok(message) = self.outbound.try_recv() else { break };
            self.out.extend_from_slice(&message.bytes);
            if let Some(ack) = message.ack
                && self.acks.len() < ACKS_PER_WRITE_MAX
            {
                self.acks.push(ack);
            }
        }
    }

    /// Writes what the out buffer holds, refilling it from the queue while the socket takes it.
    /// Ok(true): everything queued is written. Err: the socket failed.
    fn flush(&mut self) -> std::io::Result<bool> {
        loop {
            self.refill();
            if self.written == self.out.len() {
                return Ok(true);
            }
            while self.written < self.out.len() {
                match self.stream.write(&self.out[self.written..]) {
                    Ok(0) => return Err(ErrorKind::WriteZero.into()),
                    Ok(written) => self.written += written,
                    Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(false),
                    Err(error) if error.kind() == ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
            }
            // The bytes are in the socket: the end of each acknowledged command's trace.
            let written_ns = clock_ns();
            for ack in self.acks.drain(..) {
                wire_latency().record(origin::FIX, &ack.trace, ack.picked_ns, written_ns);
            }
        }
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
    /// Connections whose reads stopped at [`READS_PER_TURN_MAX`] (read again next turn).
    read_again: Vec<u64>,
    /// Connections to write this turn (read, writable, handed messages by the syncer).
    marked: Vec<u64>,
    /// Scratch for the syncer rounds.
    scheduled: Vec<u64>,
    dispatcher: Dispatcher,
}

/// Runs the I/O thread until the gateway stops.
pub(crate) fn run(shared: Arc<Shared>, poll: Poll, listener: TcpListener, mut consumer: Consumer) {
    let mut thread = IoThread {
        dispatcher: Dispatcher::new(shared.clone()),
        shared,
        poll,
        listener,
        sockets: HashMap::new(),
        read_again: Vec::new(),
        marked: Vec::new(),
        scheduled: Vec::new(),
    };
    let mut events = Events::with_capacity(EVENTS_MAX);
    let (spin, never_park) = match consumer_idle() {
        IdlePolicy::Wait(wait) => (wait.spin, wait.spin == Duration::MAX),
        // The legacy nap strategy has no meaning here: spin the default time, then block.
        IdlePolicy::Nap { .. } => (engine::doorbell::SPIN_DEFAULT, false),
    };
    let mut idle_since: Option<Instant> = None;
    let mut next_check = Instant::now() + TIMER_INTERVAL;
    while !thread.shared.stopping.load(Ordering::Acquire) {
        let now = Instant::now();
        let since = *idle_since.get_or_insert(now);
        // With no socket open there is nobody to answer quickly: park at once (issue #17).
        let park = !never_park && (thread.sockets.is_empty() || now.duration_since(since) >= spin);
        let polled = if park {
            let timeout = next_check.saturating_duration_since(now);
            consumer.park_elsewhere(|| thread.poll.poll(&mut events, Some(timeout)))
        } else {
            None
        };
        let polled = match polled {
            Some(polled) => polled,
            // Spinning, or an event was published just before parking: look without waiting.
            None => thread.poll.poll(&mut events, Some(Duration::ZERO)),
        };
        if let Err(error) = polled
            && error.kind() != ErrorKind::Interrupted
        {
            tracing::error!(%error, "FIX gateway I/O thread: poll failed");
            break;
        }
        let mut worked = thread.handle_events(&events);
        for id in std::mem::take(&mut thread.read_again) {
            thread.read(id);
            worked = true;
        }
        let mut routed = 0;
        while routed < EVENTS_PER_TURN_MAX && thread.dispatcher.dispatch_next(&mut consumer) {
            routed += 1;
        }
        worked |= routed > 0;
        if Instant::now() >= next_check {
            thread.check_timers();
            next_check = Instant::now() + TIMER_INTERVAL;
        }
        worked |= thread.write_marked();
        if worked {
            idle_since = None;
        }
    }
    thread.shut_down(&mut events);
}

impl IoThread {
    /// Accepts, reads and marks for writing as the readiness events say; whether there were any.
    fn handle_events(&mut self, events: &Events) -> bool {
        let mut any = false;
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept(),
                WAKER => {}
                Token(token) => {
                    let id = token as u64;
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        self.read(id);
                    }
                    if event.is_writable() {
                        self.marked.push(id);
                    }
                }
            }
            any = true;
        }
        any
    }

    fn accept(&mut self) {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) => {
                    tracing::debug!(%error, "FIX gateway: accept failed");
                    return;
                }
            };
            if self.sockets.len() >= self.shared.config.connections_max {
                tracing::warn!(%peer, open = self.sockets.len(), "FIX gateway: connection limit reached");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let id = self.shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
            let mut stream = stream;
            let Ok(token) = usize::try_from(id) else { continue };
            if let Err(error) =
                self.poll.registry().register(&mut stream, Token(token), Interest::READABLE | Interest::WRITABLE)
            {
                tracing::warn!(%peer, %error, "FIX gateway: cannot register a connection");
                continue;
            }
            let (sender, outbound) = mpsc::channel::<Outbound>(self.shared.config.outbound_queue_max);
            let (kill_sender, kill) = watch::channel(false);
            self.shared.stats.connections.fetch_add(1, Ordering::Relaxed);
            self.sockets.insert(
                id,
                Socket {
                    stream,
                    inbound: Inbound::new(self.shared.clone(), id, sender, kill_sender),
                    outbound,
                    kill,
                    buffer: BytesMut::with_capacity(2 * crate::parser::MESSAGE_BYTES_MAX),
                    out: Vec::with_capacity(OUT_BUFFER_BYTES_MAX),
                    written: 0,
                    acks: Vec::new(),
                    closing: None,
                },
            );
        }
    }

    /// Reads a socket until it would block (or [`READS_PER_TURN_MAX`]), handling the messages.
    fn read(&mut self, id: u64) {
        let Some(socket) = self.sockets.get_mut(&id) else { return };
        if socket.closing.is_some() {
            // Ending: what the peer still sends is not read; drop it so the socket can close.
            let mut discard = [0u8; 4096];
            while matches!(socket.stream.read(&mut discard), Ok(n) if n > 0) {}
            return;
        }
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        let mut reads = 0;
        let ending = loop {
            if reads == READS_PER_TURN_MAX {
                self.read_again.push(id);
                break false;
            }
            reads += 1;
            match socket.stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(length) => {
                    let received_ns = clock_ns();
                    socket.buffer.extend_from_slice(&chunk[..length]);
                    if socket.inbound.handle_bytes(&mut socket.buffer, received_ns) == Flow::Close {
                        break true;
                    }
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => break false,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        if ending {
            socket.close();
        }
        // Answers (logon, rejects, a refused logon's Logout) go out in the same turn.
        self.marked.push(id);
    }

    /// Runs one syncer round (store writes, then the messages onto the connections' queues) and
    /// writes every connection with something queued, once each; removes the cut ones and the
    /// ended ones whose queue is written. Whether anything was done.
    fn write_marked(&mut self) -> bool {
        let mut marked = std::mem::take(&mut self.marked);
        let synced = sync_round(&self.shared, &mut self.scheduled, &mut marked);
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
                Ok(done) if done && socket.closing.is_some() => self.remove(id),
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
            let _ = self.poll.registry().deregister(&mut socket.stream);
            let _ = socket.stream.shutdown(std::net::Shutdown::Both);
            self.shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The gateway stops: what the peers sent before is handled first (a peer that already
    /// disconnected gets no Logout, whose number it would never see), then every logged-on
    /// session is sent a Logout (its timer sees the stop), written with what the sockets take
    /// within [`SHUTDOWN_WRITE_MAX`].
    fn shut_down(&mut self, events: &mut Events) {
        if self.poll.poll(events, Some(Duration::ZERO)).is_ok() {
            self.handle_events(events);
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
        // What the sessions queued last reaches their stores.
        let mut delivered = Vec::new();
        sync_round(&self.shared, &mut self.scheduled, &mut delivered);
    }
}
