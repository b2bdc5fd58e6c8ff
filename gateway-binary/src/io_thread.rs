//! [`crate::IoMode::Thread`]: one dedicated thread owns every SBE socket and is also the egress
//! ring's dispatcher, so an order crosses two thread boundaries (this thread → the engine → this
//! thread) instead of four (tokio reader → engine → dispatcher → tokio writer).
//!
//! Each turn of its loop: `epoll_wait` (through mio) for socket readiness; accept; read every
//! readable socket until it would block (a bounded number of reads per turn) and hand the bytes
//! to the connection's [`Inbound`] (the same session logic as the tokio mode: logon, throttle,
//! sequencing, rejects, ingress push); route what the engine published (the same
//! [`Dispatcher`]); then write, once per connection, everything queued for it (batched). A socket
//! that would block keeps its bytes in the connection's out buffer (at most
//! [`OUT_BUFFER_BYTES_MAX`] taken from its queue at a time); the queue behind it is the same
//! bounded one as in the tokio mode, so a peer that does not read is cut as a slow consumer by
//! the same rule.
//!
//! Idle: after a turn without work it keeps polling (sockets with a zero timeout, and the ring)
//! for the configured spin time, then blocks in `epoll_wait` with a [`mio::Waker`] registered on
//! the egress ring's doorbell ([`engine::doorbell::Doorbell::park_elsewhere`]): a publication
//! or a socket wakes it, never a fixed nap. The wait is bounded by the next heartbeat check.

use crate::Shared;
use crate::dispatch::{Dispatcher, terminate_all};
use crate::session::{
    ACKS_PER_WRITE_MAX, AckTrace, Connection, HEARTBEAT_CHECK_INTERVAL, Inbound, Outbound, ReadyList,
};
use crate::session::{WRITER_GRACE, session_frame};
use bytes::BytesMut;
use codec::{FRAME_BYTES_MAX, Reserved, Session, Terminate, TerminateReason};
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
const FIRST_CONNECTION_TOKEN: usize = 2;
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
pub(crate) const OUT_BUFFER_BYTES_MAX: usize = 64 * 1024;
/// Longest `epoll_wait` when no heartbeat check is due sooner.
const PARK_MAX: Duration = HEARTBEAT_CHECK_INTERVAL;

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
    /// The handle its session and the dispatcher queue frames on.
    link: Connection,
    outbound: mpsc::Receiver<Outbound>,
    kill: watch::Receiver<Option<TerminateReason>>,
    /// Bytes read and not yet a whole frame.
    buffer: BytesMut,
    /// Bytes to write, from `written` on.
    out: Vec<u8>,
    written: usize,
    /// Traced acknowledgements in `out`, recorded once it is written.
    acks: Vec<AckTrace>,
    /// Ending: the Terminate is queued; closed once `out` is written or at this deadline.
    closing: Option<Instant>,
}

impl Socket {
    /// Takes frames from the queue into the out buffer, up to [`OUT_BUFFER_BYTES_MAX`].
    fn refill(&mut self) {
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        while self.out.len() - self.written < OUT_BUFFER_BYTES_MAX {
            let Ok(message) = self.outbound.try_recv() else { break };
            self.out.extend_from_slice(&message.frame);
            if let Some(ack) = message.ack
                && self.acks.len() < ACKS_PER_WRITE_MAX
            {
                self.acks.push(ack);
            }
        }
    }

    /// Writes what the out buffer holds, refilling it from the queue while the socket takes it.
    /// Err: the socket failed (the connection is dropped).
    fn flush(&mut self) -> std::io::Result<()> {
        loop {
            self.refill();
            if self.written == self.out.len() {
                return Ok(());
            }
            while self.written < self.out.len() {
                match self.stream.write(&self.out[self.written..]) {
                    Ok(0) => return Err(ErrorKind::WriteZero.into()),
                    Ok(written) => self.written += written,
                    Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(error) if error.kind() == ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
            }
            // The bytes are in the socket: the end of each acknowledged command's trace.
            let written_ns = clock_ns();
            for ack in self.acks.drain(..) {
                wire_latency().record(origin::BINARY, &ack.trace, ack.picked_ns, written_ns);
            }
        }
    }

    /// Starts ending the connection with `reason`: leaves its session, queues what was queued
    /// before (unless the queue is the problem: a slow consumer) and the Terminate.
    fn close(&mut self, reason: TerminateReason) {
        if self.closing.is_some() {
            return;
        }
        self.inbound.detach(self.link.id);
        tracing::debug!(connection = self.link.id, ?reason, "binary gateway: connection ends");
        if reason == TerminateReason::SlowConsumer {
            while self.outbound.try_recv().is_ok() {}
        } else {
            while let Ok(message) = self.outbound.try_recv() {
                self.out.extend_from_slice(&message.frame);
            }
        }
        let terminate =
            session_frame(Session::Terminate(Terminate { reason: reason.into(), reserved: Reserved::ZERO }));
        self.out.extend_from_slice(&terminate);
        self.closing = Some(Instant::now() + WRITER_GRACE);
    }
}

/// The thread's state.
struct IoThread {
    shared: Arc<Shared>,
    poll: Poll,
    listener: TcpListener,
    sockets: HashMap<u64, Socket>,
    ready: Arc<ReadyList>,
    /// Connections whose reads stopped at [`READS_PER_TURN_MAX`] (read again next turn).
    read_again: Vec<u64>,
    /// Connections to write this turn (read, writable, timers).
    marked: Vec<u64>,
    /// Scratch for [`ReadyList::take`] (its capacity swaps with the list's).
    from_sessions: Vec<u64>,
    dispatcher: Dispatcher,
}

/// Runs the I/O thread until the gateway stops.
pub(crate) fn run(shared: Arc<Shared>, poll: Poll, listener: TcpListener, mut consumer: Consumer) {
    let mut thread = IoThread {
        shared,
        poll,
        listener,
        sockets: HashMap::new(),
        ready: Arc::new(ReadyList::default()),
        read_again: Vec::new(),
        marked: Vec::new(),
        from_sessions: Vec::new(),
        dispatcher: Dispatcher::new(),
    };
    let mut events = Events::with_capacity(EVENTS_MAX);
    let (spin, never_park) = match consumer_idle() {
        IdlePolicy::Wait(wait) => (wait.spin, wait.spin == Duration::MAX),
        // The legacy nap strategy has no meaning here: spin the default time, then block.
        IdlePolicy::Nap { .. } => (engine::doorbell::SPIN_DEFAULT, false),
    };
    let mut idle_since: Option<Instant> = None;
    let mut next_check = Instant::now() + HEARTBEAT_CHECK_INTERVAL;
    while !thread.shared.stopping.load(Ordering::Acquire) {
        let now = Instant::now();
        let since = *idle_since.get_or_insert(now);
        // With no socket open there is nobody to answer quickly: park at once (issue #17).
        let park = !never_park && (thread.sockets.is_empty() || now.duration_since(since) >= spin);
        let polled = if park {
            let timeout = next_check.saturating_duration_since(now).min(PARK_MAX);
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
            tracing::error!(%error, "binary gateway I/O thread: poll failed");
            break;
        }
        let mut worked = false;
        for event in events.iter() {
            match event.token() {
                LISTENER => thread.accept(),
                WAKER => {}
                Token(token) => {
                    let id = token as u64;
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        thread.read(id);
                    }
                    if event.is_writable() {
                        thread.marked_for_write(id);
                    }
                }
            }
            worked = true;
        }
        for id in std::mem::take(&mut thread.read_again) {
            thread.read(id);
            worked = true;
        }
        let mut routed = 0;
        while routed < EVENTS_PER_TURN_MAX && thread.dispatcher.dispatch_next(&thread.shared, &mut consumer) {
            routed += 1;
        }
        worked |= routed > 0;
        thread.write_marked();
        if Instant::now() >= next_check {
            thread.check_timers();
            next_check = Instant::now() + HEARTBEAT_CHECK_INTERVAL;
        }
        if worked {
            idle_since = None;
        }
    }
    thread.shut_down();
}

impl IoThread {
    fn accept(&mut self) {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) => {
                    tracing::debug!(%error, "binary gateway: accept failed");
                    return;
                }
            };
            if self.sockets.len() >= self.shared.config.connections_max {
                tracing::warn!(%peer, open = self.sockets.len(), "binary gateway: connection limit reached");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let id = self.shared.next_session_id.fetch_add(1, Ordering::Relaxed);
            let mut stream = stream;
            if let Err(error) =
                self.poll.registry().register(&mut stream, Token(id as usize), Interest::READABLE | Interest::WRITABLE)
            {
                tracing::warn!(%peer, %error, "binary gateway: cannot register a connection");
                continue;
            }
            let (sender, outbound) = mpsc::channel::<Outbound>(self.shared.config.outbound_queue_max);
            let (kill_sender, kill) = watch::channel(None);
            let link = Connection { id, outbound: sender, kill: kill_sender, ready: Some(self.ready.clone()) };
            self.shared.stats.connections.fetch_add(1, Ordering::Relaxed);
            self.sockets.insert(
                id,
                Socket {
                    stream,
                    inbound: Inbound::new(),
                    link,
                    outbound,
                    kill,
                    buffer: BytesMut::with_capacity(2 * FRAME_BYTES_MAX),
                    out: Vec::with_capacity(OUT_BUFFER_BYTES_MAX),
                    written: 0,
                    acks: Vec::new(),
                    closing: None,
                },
            );
        }
    }

    /// Reads a socket until it would block (or [`READS_PER_TURN_MAX`]), handling the frames.
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
                break None;
            }
            reads += 1;
            match socket.stream.read(&mut chunk) {
                Ok(0) => break Some(TerminateReason::Finished),
                Ok(length) => {
                    let received_ns = clock_ns();
                    socket.buffer.extend_from_slice(&chunk[..length]);
                    if let Err(reason) =
                        socket.inbound.handle_frames(&self.shared, &mut socket.buffer, &socket.link, received_ns)
                    {
                        break Some(reason);
                    }
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => break None,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => break Some(TerminateReason::Finished),
            }
        };
        if let Some(reason) = ending {
            socket.close(reason);
        }
        // Answers (logon, rejects) go out in the same turn.
        self.marked_for_write(id);
    }

    fn marked_for_write(&mut self, id: u64) {
        self.marked.push(id);
    }

    /// Writes every connection with something queued (marked by its session, the dispatcher or
    /// a writable event), once each; ends the ones killed from elsewhere and the finished ones.
    fn write_marked(&mut self) {
        let mut ids = std::mem::take(&mut self.marked);
        self.ready.take(&mut self.from_sessions);
        ids.extend_from_slice(&self.from_sessions);
        ids.sort_unstable();
        ids.dedup();
        for &id in &ids {
            let Some(socket) = self.sockets.get_mut(&id) else { continue };
            if socket.kill.has_changed().unwrap_or(false) {
                let reason = socket.kill.borrow_and_update().unwrap_or(TerminateReason::Finished);
                socket.close(reason);
            }
            let flushed = socket.flush();
            let done = socket.closing.is_some() && socket.written == socket.out.len();
            if flushed.is_err() || done {
                self.remove(id);
            }
        }
        ids.clear();
        self.marked = ids;
    }

    /// Heartbeats, logon and keep-alive deadlines, and the grace of ending connections.
    fn check_timers(&mut self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        for (&id, socket) in &mut self.sockets {
            match socket.closing {
                Some(deadline) if now >= deadline => expired.push(id),
                Some(_) => {}
                None => {
                    if let Err(reason) = socket.inbound.check_timers(&self.shared, &socket.link) {
                        socket.close(reason);
                    }
                    self.marked.push(id);
                }
            }
        }
        for id in expired {
            tracing::debug!(connection = id, "binary gateway: peer not reading; connection cut");
            self.remove(id);
        }
        self.write_marked();
    }

    fn remove(&mut self, id: u64) {
        if let Some(mut socket) = self.sockets.remove(&id) {
            socket.inbound.detach(id);
            let _ = self.poll.registry().deregister(&mut socket.stream);
            let _ = socket.stream.shutdown(std::net::Shutdown::Both);
            self.shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The gateway stops: every client is told `ServerShutdown`, with what the socket takes now.
    fn shut_down(&mut self) {
        terminate_all(&self.shared, TerminateReason::ServerShutdown);
        for socket in self.sockets.values_mut() {
            socket.close(TerminateReason::ServerShutdown);
        }
        let ids: Vec<u64> = self.sockets.keys().copied().collect();
        self.marked.extend_from_slice(&ids);
        self.write_marked();
        for id in ids {
            self.remove(id);
        }
    }
}

/// The first connection id under [`crate::IoMode::Thread`] (ids are the connections' tokens).
pub(crate) const FIRST_CONNECTION_ID: u64 = FIRST_CONNECTION_TOKEN as u64;
