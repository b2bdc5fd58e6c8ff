//! The skeleton the gateways' I/O threads share (`IoMode::Thread` of the SBE and FIX gateways):
//! one mio poll owns the listening socket, every connection and a waker on the egress ring's
//! doorbell. What is the same for every protocol lives here: the spin-then-park idle decision,
//! accepting under the connection limit, reading a socket until it would block (at most
//! [`READS_PER_TURN_MAX`] reads a turn), and a connection's batched out buffer that keeps what a
//! socket would not take. The protocols (session logic, framing, how a connection ends) stay in
//! the gateways, which implement [`Connections`] for their thread.
//!
//! Invariants: connection ids are their sockets' poll tokens, above [`LISTENER`] and [`WAKER`];
//! an out buffer holds at most [`OUT_BUFFER_BYTES_MAX`] taken from its queue at a time (plus
//! what a closing connection appends), so a peer that does not read backs its bounded queue up.

use crate::bus::Consumer;
use crate::doorbell::{IdlePolicy, SPIN_DEFAULT, consumer_idle};
use crate::latency::{CommandTrace, clock_ns, wire_latency};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The listening socket's token.
pub const LISTENER: Token = Token(0);
/// The waker's token (the engine's publications and the gateway's shutdown).
pub const WAKER: Token = Token(1);
/// The first connection id (ids are the connections' tokens, above the reserved ones).
pub const FIRST_CONNECTION_ID: u64 = 2;
/// Readiness events taken from one `epoll_wait`.
pub const EVENTS_MAX: usize = 1_024;
/// Bytes asked of the kernel per read.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Reads of one socket per turn: a peer that keeps its socket full cannot starve the others (it
/// is read again next turn).
pub const READS_PER_TURN_MAX: usize = 16;
/// Bytes taken from a connection's queue into its out buffer at a time (the tokio mode's
/// `BufWriter` capacity).
pub const OUT_BUFFER_BYTES_MAX: usize = 64 * 1024;
/// Egress events routed per turn before the sockets are looked at again.
pub const EVENTS_PER_TURN_MAX: usize = 4_096;
/// Traced acknowledgements one out buffer records at most per write (more are dropped from the
/// histograms, never from the socket).
pub const ACKS_PER_WRITE_MAX: usize = 1_024;
/// Bytes read and dropped at a time from a closing connection.
const DISCARD_CHUNK_BYTES: usize = 4_096;

/// Wakes the I/O thread out of `epoll_wait` (an eventfd in its poll set).
pub struct IoWaker(pub mio::Waker);

impl crate::doorbell::Waker for IoWaker {
    fn wake(&self) {
        let _ = self.0.wake();
    }
}

/// What [`listen`] sets up for an I/O thread.
pub struct Listening {
    /// The poll set: the listener under [`LISTENER`], the waker under [`WAKER`].
    pub poll: Poll,
    /// The non-blocking listening socket.
    pub listener: TcpListener,
    /// Where it listens (the port chosen when `address` asked for 0).
    pub local_addr: SocketAddr,
    /// The waker to register on the egress ring.
    pub waker: Arc<IoWaker>,
}

/// Binds `address` and builds the poll set of an I/O thread.
///
/// # Errors
/// The socket cannot be bound, or the poll set or its waker cannot be created.
pub fn listen(address: SocketAddr) -> std::io::Result<Listening> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let local_addr = listener.local_addr()?;
    let poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(IoWaker(mio::Waker::new(poll.registry(), WAKER)?));
    Ok(Listening { poll, listener, local_addr, waker })
}

/// One protocol's I/O thread, as [`run_turns`] drives it.
pub trait Reactor: Connections {
    /// The gateway is stopping: [`run_turns`] returns.
    fn is_stopping(&self) -> bool;
    /// The poll set (the listener, the connections, the waker).
    fn poll(&mut self) -> &mut Poll;
    /// Whether any connection is open (with none the thread parks at once).
    fn has_connections(&self) -> bool;
    /// Routes the next event the engine published; whether there was one.
    fn dispatch_next(&mut self, consumer: &mut Consumer) -> bool;
    /// Ends the turn: writes what is queued and, when `timers_due`, runs the protocol's timers
    /// (in the order the protocol needs); whether that counts as work.
    fn finish_turn(&mut self, timers_due: bool) -> bool;
}

/// Runs turns until the gateway stops: poll (spin, then park), accept and read what is ready,
/// read again what was cut short, route up to [`EVENTS_PER_TURN_MAX`] published events, finish
/// the turn (writes; timers every `timer_interval`, which also bounds a park). `gateway` names the
/// gateway in the logs.
pub fn run_turns(
    reactor: &mut impl Reactor,
    consumer: &mut Consumer,
    events: &mut Events,
    timer_interval: Duration,
    gateway: &str,
) {
    let mut idle = IdleSpin::from_policy();
    let mut next_check = Instant::now() + timer_interval;
    // Connections whose reads stopped at [`READS_PER_TURN_MAX`]: read again before the turn ends,
    // and (if cut short again) next turn.
    let mut read_again = Vec::new();
    while !reactor.is_stopping() {
        let no_connections = !reactor.has_connections();
        let polled = idle.poll(reactor.poll(), events, consumer, no_connections, next_check);
        if let Err(error) = polled
            && error.kind() != ErrorKind::Interrupted
        {
            tracing::error!(%error, "{gateway} gateway I/O thread: poll failed");
            break;
        }
        let mut worked = handle_events(events, reactor, &mut read_again);
        for id in std::mem::take(&mut read_again) {
            if reactor.read(id) {
                read_again.push(id);
            }
            worked = true;
        }
        let mut routed = 0;
        while routed < EVENTS_PER_TURN_MAX && reactor.dispatch_next(consumer) {
            routed += 1;
        }
        worked |= routed > 0;
        let timers_due = Instant::now() >= next_check;
        worked |= reactor.finish_turn(timers_due);
        if timers_due {
            next_check = Instant::now() + timer_interval;
        }
        if worked {
            idle.worked();
        }
    }
}

/// The spin-then-park decision of an I/O thread: after a turn without work it keeps polling
/// with a zero timeout for the configured spin time, then blocks in `epoll_wait` announced on the
/// egress ring's doorbell ([`Consumer::park_elsewhere`]), so a publication or a socket wakes it.
struct IdleSpin {
    spin: Duration,
    never_park: bool,
    idle_since: Option<Instant>,
}

impl IdleSpin {
    /// From the consumers' idle policy (the legacy nap strategy has no meaning here: spin the
    /// default time, then block).
    #[must_use]
    fn from_policy() -> Self {
        let (spin, never_park) = match consumer_idle() {
            IdlePolicy::Wait(wait) => (wait.spin, wait.spin == Duration::MAX),
            IdlePolicy::Nap { .. } => (SPIN_DEFAULT, false),
        };
        Self { spin, never_park, idle_since: None }
    }

    /// Polls the sockets: parks until `wake_by` when idle long enough (at once when `no_connections`:
    /// nobody to answer quickly, issue #17), otherwise looks without waiting.
    ///
    /// # Errors
    /// `epoll_wait` failed.
    fn poll(
        &mut self,
        poll: &mut Poll,
        events: &mut Events,
        consumer: &Consumer,
        no_connections: bool,
        wake_by: Instant,
    ) -> std::io::Result<()> {
        let now = Instant::now();
        let since = *self.idle_since.get_or_insert(now);
        let park = !self.never_park && (no_connections || now.duration_since(since) >= self.spin);
        let polled = if park {
            let timeout = wake_by.saturating_duration_since(now);
            consumer.park_elsewhere(|| poll.poll(events, Some(timeout)))
        } else {
            None
        };
        match polled {
            Some(polled) => polled,
            // Spinning, or an event was published just before parking: look without waiting.
            None => poll.poll(events, Some(Duration::ZERO)),
        }
    }

    /// The turn did work: the spin time starts again.
    fn worked(&mut self) {
        self.idle_since = None;
    }
}

/// What an I/O thread does with the readiness events [`handle_events`] hands it.
pub trait Connections {
    /// The listener is readable: accept (see [`accept_ready`]).
    fn accept(&mut self);
    /// Connection `id` is readable, closed by the peer or failed: read it (see [`read_ready`]).
    /// Whether its reads stopped at [`READS_PER_TURN_MAX`] (it is read again).
    fn read(&mut self, id: u64) -> bool;
    /// Connection `id` is writable: write it this turn.
    fn writable(&mut self, id: u64);
}

/// Accepts, reads and marks for writing as `events` say; whether there were any. The connections
/// whose reads stopped at [`READS_PER_TURN_MAX`] go to `read_again`.
pub fn handle_events(events: &Events, connections: &mut impl Connections, read_again: &mut Vec<u64>) -> bool {
    let mut any = false;
    for event in events {
        match event.token() {
            LISTENER => connections.accept(),
            WAKER => {}
            Token(token) => {
                let id = token as u64;
                if (event.is_readable() || event.is_read_closed() || event.is_error()) && connections.read(id) {
                    read_again.push(id);
                }
                if event.is_writable() {
                    connections.writable(id);
                }
            }
        }
        any = true;
    }
    any
}

/// Accepts every pending connection: beyond `open_max` open ones a connection is dropped at
/// once; the others get `TCP_NODELAY`, the next id of `next_id` and a registration under that id,
/// then go to `accepted`. `gateway` names the gateway in the logs.
pub fn accept_ready(
    listener: &TcpListener,
    registry: &Registry,
    next_id: &AtomicU64,
    mut open: usize,
    open_max: usize,
    gateway: &str,
    mut accepted: impl FnMut(TcpStream, u64),
) {
    loop {
        let (mut stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(error) if error.kind() == ErrorKind::WouldBlock => return,
            Err(error) => {
                tracing::debug!(%error, "{gateway} gateway: accept failed");
                return;
            }
        };
        if open >= open_max {
            tracing::warn!(%peer, open, "{gateway} gateway: connection limit reached");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let Ok(token) = usize::try_from(id) else { continue };
        if let Err(error) = registry.register(&mut stream, Token(token), Interest::READABLE | Interest::WRITABLE) {
            tracing::warn!(%peer, %error, "{gateway} gateway: cannot register a connection");
            continue;
        }
        accepted(stream, id);
        open += 1;
    }
}

/// How [`read_ready`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd<E> {
    /// The socket would block: everything it had is handled.
    Drained,
    /// [`READS_PER_TURN_MAX`] reads: read it again next turn.
    Again,
    /// The peer closed the connection or the socket failed.
    PeerGone,
    /// The protocol refused what was read.
    Refused(E),
}

/// Reads `stream` until it would block (at most [`READS_PER_TURN_MAX`] reads), handing each chunk
/// with its receive time to `on_bytes`; stops at the first refusal.
pub fn read_ready<E>(stream: &mut TcpStream, mut on_bytes: impl FnMut(&[u8], u64) -> Result<(), E>) -> ReadEnd<E> {
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    let mut reads = 0;
    loop {
        if reads == READS_PER_TURN_MAX {
            return ReadEnd::Again;
        }
        reads += 1;
        match stream.read(&mut chunk) {
            Ok(0) => return ReadEnd::PeerGone,
            Ok(length) => {
                let received_ns = clock_ns();
                if let Err(refusal) = on_bytes(&chunk[..length], received_ns) {
                    return ReadEnd::Refused(refusal);
                }
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => return ReadEnd::Drained,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return ReadEnd::PeerGone,
        }
    }
}

/// A closing connection: what the peer still sends is not read; drop it so the socket can close.
pub fn discard_ready(stream: &mut TcpStream) {
    let mut discard = [0u8; DISCARD_CHUNK_BYTES];
    while matches!(stream.read(&mut discard), Ok(n) if n > 0) {}
}

/// Deregisters and shuts down a connection's socket (it is removed).
pub fn close_socket(registry: &Registry, stream: &mut TcpStream) {
    let _ = registry.deregister(stream);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// A connection's bytes to write, from `written` on, with the traced acknowledgements they carry
/// (recorded once written).
pub struct OutBuffer {
    bytes: Vec<u8>,
    written: usize,
    acks: Vec<(CommandTrace, u64)>,
}

impl Default for OutBuffer {
    fn default() -> Self {
        Self { bytes: Vec::with_capacity(OUT_BUFFER_BYTES_MAX), written: 0, acks: Vec::new() }
    }
}

impl OutBuffer {
    /// Appends a message; `ack`: the trace of the command it acknowledges and when the
    /// dispatcher picked it (at most [`ACKS_PER_WRITE_MAX`] kept per write).
    pub fn push(&mut self, message: &[u8], ack: Option<(CommandTrace, u64)>) {
        self.bytes.extend_from_slice(message);
        if let Some(ack) = ack
            && self.acks.len() < ACKS_PER_WRITE_MAX
        {
            self.acks.push(ack);
        }
    }

    /// Everything appended is written.
    #[must_use]
    pub fn is_written(&self) -> bool {
        self.written == self.bytes.len()
    }

    /// Writes what the buffer holds, refilling it while the socket takes it: `take_next` appends
    /// one queued message (with [`Self::push`]) and says whether there was one. Written
    /// acknowledgements are recorded under `origin` (see [`crate::bus::origin`]).
    ///
    /// Ok(true): everything queued is written; Ok(false): the socket would block.
    ///
    /// # Errors
    /// The socket failed (the connection is dropped).
    pub fn flush(
        &mut self,
        stream: &mut impl Write,
        origin: u8,
        mut take_next: impl FnMut(&mut Self) -> bool,
    ) -> std::io::Result<bool> {
        loop {
            if self.is_written() {
                self.bytes.clear();
                self.written = 0;
            }
            while self.bytes.len() - self.written < OUT_BUFFER_BYTES_MAX && take_next(self) {}
            if self.is_written() {
                return Ok(true);
            }
            while self.written < self.bytes.len() {
                match stream.write(&self.bytes[self.written..]) {
                    Ok(0) => return Err(ErrorKind::WriteZero.into()),
                    Ok(written) => self.written += written,
                    Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(false),
                    Err(error) if error.kind() == ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
            }
            // The bytes are in the socket: the end of each acknowledged command's trace.
            let written_ns = clock_ns();
            for (trace, picked_ns) in self.acks.drain(..) {
                wire_latency().record(origin, &trace, picked_ns, written_ns);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The out buffer keeps what a blocked socket did not take and writes it first, in order,
    //! refilled from its queue at most [`OUT_BUFFER_BYTES_MAX`] at a time.
    use super::*;
    use std::collections::VecDeque;

    /// A socket that takes at most `room` bytes, then would block.
    struct Socket {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Socket {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let length = bytes.len().min(self.room);
            self.taken.extend_from_slice(&bytes[..length]);
            self.room -= length;
            Ok(length)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn take_from(queue: &mut VecDeque<Vec<u8>>) -> impl FnMut(&mut OutBuffer) -> bool + '_ {
        |out| match queue.pop_front() {
            Some(message) => {
                out.push(&message, None);
                true
            }
            None => false,
        }
    }

    #[test]
    fn a_blocked_socket_keeps_its_bytes_and_gets_them_first_in_order() {
        let messages: Vec<Vec<u8>> = (0..40u8).map(|index| vec![index; 4_000]).collect();
        let expected: Vec<u8> = messages.concat();
        let mut queue: VecDeque<Vec<u8>> = messages.into();
        let mut out = OutBuffer::default();
        let mut socket = Socket { taken: Vec::new(), room: 10_001 };
        assert!(!out.flush(&mut socket, origin_none(), take_from(&mut queue)).expect("no socket error"));
        assert!(!out.is_written());
        // Only one buffer's worth left the queue: the rest stays queued (the bounded queue backs up).
        assert!(queue.len() >= 40 - OUT_BUFFER_BYTES_MAX.div_ceil(4_000));
        socket.room = usize::MAX;
        assert!(out.flush(&mut socket, origin_none(), take_from(&mut queue)).expect("no socket error"));
        assert!(out.is_written() && queue.is_empty());
        assert_eq!(socket.taken, expected);
    }

    #[test]
    fn a_socket_that_takes_nothing_is_an_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut queue: VecDeque<Vec<u8>> = vec![b"bytes".to_vec()].into();
        let mut out = OutBuffer::default();
        let error = out.flush(&mut Closed, origin_none(), take_from(&mut queue)).expect_err("write zero");
        assert_eq!(error.kind(), ErrorKind::WriteZero);
    }

    /// No acknowledgement is traced in these tests: the origin is never recorded.
    fn origin_none() -> u8 {
        crate::bus::origin::INTERNAL
    }
}
