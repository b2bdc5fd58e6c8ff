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
//! [`reactor::OUT_BUFFER_BYTES_MAX`] taken from its queue at a time); the queue behind it is the same
//! bounded one as in the tokio mode, so a peer that does not read is cut as a slow consumer by
//! the same rule.
//!
//! Idle: after a turn without work it keeps polling (sockets with a zero timeout, and the ring)
//! for the configured spin time, then blocks in `epoll_wait` with a [`mio::Waker`] registered on
//! the egress ring's doorbell ([`engine::doorbell::Doorbell::park_elsewhere`]): a publication
//! or a socket wakes it, never a fixed nap. The wait is bounded by the next heartbeat check.
//!
//! Logon signatures are not checked here: a connection's `Establish` goes to the verifier thread
//! ([`crate::logon_verifier`]) and the connection waits, reading nothing, until the verdict comes
//! back (the verifier rings this thread's waker); then this thread finishes the logon, handles
//! what the client sent after `Establish` and reads the socket again. Meanwhile every other
//! connection is served.
//!
//! The loop's skeleton (idle decision, accept, reads, the batched out buffer) is
//! [`engine::reactor`], shared with the FIX gateway; what is SBE's (sessions, Terminate) is here.

use crate::Shared;
use crate::dispatch::{Dispatcher, terminate_all};
use crate::logon_verifier::LogonVerifier;
use crate::session::{Connection, HEARTBEAT_CHECK_INTERVAL, Inbound, Outbound, ReadyList};
use crate::session::{WRITER_GRACE, session_frame};
use bytes::BytesMut;
use codec::{FRAME_BYTES_MAX, Reserved, Session, Terminate, TerminateReason};
use engine::bus::{Consumer, origin};
use engine::reactor::{self, Connections, OutBuffer, Reactor, ReadEnd};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Poll};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// One socket and what this thread keeps for it.
struct Socket {
    stream: TcpStream,
    /// The session logic of the connection.
    inbound: Inbound,
    /// The handle its session and the dispatcher queue frames on.
    link: Connection,
    outbound: mpsc::Receiver<Outbound>,
    kill: watch::Receiver<Option<TerminateReason>>,
    /// Bytes read and not yet a whole frame (or, while its logon is verified, not yet handled).
    buffer: BytesMut,
    /// When the newest bytes of `buffer` were read.
    received_ns: u64,
    /// Frames to write.
    out: OutBuffer,
    /// Ending: the Terminate is queued; closed once `out` is written or at this deadline.
    closing: Option<Instant>,
}

impl Socket {
    /// Writes what the out buffer holds, refilling it from the queue while the socket takes it.
    /// Err: the socket failed (the connection is dropped).
    fn flush(&mut self) -> std::io::Result<()> {
        let outbound = &mut self.outbound;
        self.out
            .flush(&mut self.stream, origin::BINARY, |out| match outbound.try_recv() {
                Ok(message) => {
                    out.push(&message.frame, message.ack.map(|ack| (ack.trace, ack.picked_ns)));
                    true
                }
                Err(_) => false,
            })
            .map(|_| ())
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
                self.out.push(&message.frame, None);
            }
        }
        let terminate =
            session_frame(Session::Terminate(Terminate { reason: reason.into(), reserved: Reserved::ZERO }));
        self.out.push(&terminate, None);
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
    /// Connections to write this turn (read, writable, timers).
    marked: Vec<u64>,
    /// Scratch for [`ReadyList::take`] (its capacity swaps with the list's).
    from_sessions: Vec<u64>,
    dispatcher: Dispatcher,
    /// Where logon signatures are checked.
    verifier: LogonVerifier,
    /// Connections whose reads after a logon verdict stopped at [`reactor::READS_PER_TURN_MAX`]:
    /// read again next turn.
    resumed_reads: Vec<u64>,
}

/// Why a connection's reads stopped before its socket would block.
enum ReadStop {
    /// End the connection with this reason.
    End(TerminateReason),
    /// Its logon signature is being checked: read the rest after the verdict.
    AwaitVerdict,
}

/// Runs the I/O thread until the gateway stops.
pub(crate) fn run(
    shared: Arc<Shared>,
    poll: Poll,
    listener: TcpListener,
    mut consumer: Consumer,
    verifier: LogonVerifier,
) {
    let mut thread = IoThread {
        shared,
        poll,
        listener,
        sockets: HashMap::new(),
        ready: Arc::new(ReadyList::default()),
        marked: Vec::new(),
        from_sessions: Vec::new(),
        dispatcher: Dispatcher::new(),
        verifier,
        resumed_reads: Vec::new(),
    };
    let mut events = Events::with_capacity(reactor::EVENTS_MAX);
    reactor::run_turns(&mut thread, &mut consumer, &mut events, HEARTBEAT_CHECK_INTERVAL, "binary");
    thread.shut_down();
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
        self.dispatcher.dispatch_next(&self.shared, consumer)
    }

    /// Logon verdicts (and the reads they resume), writes, then (when due) heartbeats and
    /// deadlines with their own write; writing is not counted as work (what it writes was
    /// counted when queued), a verdict or a resumed read is.
    fn finish_turn(&mut self, timers_due: bool) -> bool {
        let worked = self.take_verdicts();
        self.write_marked();
        if timers_due {
            self.check_timers();
        }
        worked
    }
}

impl Connections for IoThread {
    fn accept(&mut self) {
        let Self { shared, poll, listener, sockets, ready, .. } = self;
        let open = sockets.len();
        let open_max = shared.config.connections_max;
        reactor::accept_ready(
            listener,
            poll.registry(),
            &shared.next_session_id,
            open,
            open_max,
            "binary",
            |stream, id| {
                let (sender, outbound) = mpsc::channel::<Outbound>(shared.config.outbound_queue_max);
                let (kill_sender, kill) = watch::channel(None);
                let link = Connection { id, outbound: sender, kill: kill_sender, ready: Some(ready.clone()) };
                shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                sockets.insert(
                    id,
                    Socket {
                        stream,
                        inbound: Inbound::new(),
                        link,
                        outbound,
                        kill,
                        buffer: BytesMut::with_capacity(2 * FRAME_BYTES_MAX),
                        received_ns: 0,
                        out: OutBuffer::default(),
                        closing: None,
                    },
                );
            },
        );
    }

    /// Reads a socket until it would block (or [`reactor::READS_PER_TURN_MAX`]), handling the
    /// frames.
    fn read(&mut self, id: u64) -> bool {
        let Some(socket) = self.sockets.get_mut(&id) else { return false };
        if socket.closing.is_some() {
            reactor::discard_ready(&mut socket.stream);
            return false;
        }
        if socket.inbound.is_verifying_logon() {
            // Left in the socket until the verdict (then read: see `take_verdicts`).
            return false;
        }
        let Self { shared, verifier, .. } = self;
        let Socket { stream, inbound, link, buffer, received_ns: buffer_received_ns, .. } = &mut *socket;
        let mut read_again = false;
        let ending = match reactor::read_ready(stream, |bytes, received_ns| {
            buffer.extend_from_slice(bytes);
            *buffer_received_ns = received_ns;
            inbound.handle_frames(shared, buffer, link, received_ns, Some(verifier)).map_err(ReadStop::End)?;
            if inbound.is_verifying_logon() { Err(ReadStop::AwaitVerdict) } else { Ok(()) }
        }) {
            ReadEnd::Drained | ReadEnd::Refused(ReadStop::AwaitVerdict) => None,
            ReadEnd::Again => {
                read_again = true;
                None
            }
            ReadEnd::PeerGone => Some(TerminateReason::Finished),
            ReadEnd::Refused(ReadStop::End(reason)) => Some(reason),
        };
        if let Some(reason) = ending {
            socket.close(reason);
        }
        // Answers (logon, rejects) go out in the same turn.
        self.marked.push(id);
        read_again
    }

    fn writable(&mut self, id: u64) {
        self.marked.push(id);
    }
}

impl IoThread {
    /// Finishes the logons whose verdict came back: each connection's logon completes (or it
    /// ends), the frames it sent after `Establish` are handled in order, and its socket is read
    /// again (it was left alone meanwhile; with edge-triggered readiness nothing else would read
    /// it). Also reads again the connections whose resumed reads were cut short last turn.
    /// Whether there was any of either.
    fn take_verdicts(&mut self) -> bool {
        let mut worked = false;
        for id in std::mem::take(&mut self.resumed_reads) {
            if self.read(id) {
                self.resumed_reads.push(id);
            }
            worked = true;
        }
        while let Some(verdict) = self.verifier.next_verdict() {
            worked = true;
            let id = verdict.connection_id;
            // Gone or ending since: the verdict is of no use.
            let Some(socket) = self.sockets.get_mut(&id) else { continue };
            if socket.closing.is_some() {
                continue;
            }
            let Socket { inbound, link, buffer, received_ns, .. } = &mut *socket;
            let resumed = inbound
                .logon_verified(&self.shared, link, verdict.valid)
                .and_then(|()| inbound.handle_frames(&self.shared, buffer, link, *received_ns, Some(&self.verifier)));
            self.marked.push(id);
            match resumed {
                Err(reason) => socket.close(reason),
                Ok(()) => {
                    if self.read(id) {
                        self.resumed_reads.push(id);
                    }
                }
            }
        }
        worked
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
            let done = socket.closing.is_some() && socket.out.is_written();
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
            reactor::close_socket(self.poll.registry(), &mut socket.stream);
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
