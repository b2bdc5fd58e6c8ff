//! Connections and sessions: logon, inbound validation, heartbeats, retransmission, terminate.

use crate::logon_verifier::{LogonCheck, LogonVerifier};
use crate::recent_ids::RecentClientOrderIds;
use crate::{KEEP_ALIVE_MS_MAX, KEEP_ALIVE_MS_MIN, LOGON_CONTEXT, RETRANSMIT_COUNT_MAX, Shared, TokenBucket};
use bytes::{Bytes, BytesMut};
use codec::*;
use engine::bus::{IngressCommand, origin};
use engine::latency::{CommandTrace, clock_ns, wire_latency};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// Time a connection has to complete its logon.
const LOGON_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the writer of an ending connection has to flush what is queued and the Terminate.
pub(crate) const WRITER_GRACE: Duration = Duration::from_secs(1);

/// Encodes a message with its SOFH into a shareable buffer.
pub(crate) fn frame(encode: impl FnOnce(&mut [u8]) -> Option<usize>) -> Bytes {
    let mut message = [0u8; 256];
    let length = encode(&mut message).expect("every message fits 256 bytes");
    let mut out = vec![0u8; frame_length(length)];
    encode_frame(&message[..length], &mut out).expect("sized above");
    Bytes::from(out)
}

pub(crate) fn session_frame(message: Session) -> Bytes {
    frame(|out| message.encode(out))
}

pub(crate) fn event_frame(event: &Event) -> Bytes {
    frame(|out| event.encode(out))
}

/// A session's recent outbound frames for retransmission, oldest first. Each one is kept as its
/// difference from the frame before it (byte-wise XOR: consecutive messages of a session share
/// their header, user, market and the high bytes of their ids, sequences and timestamps), packed
/// ([`pack_frame`]) back to back in one byte ring, with each one's packed length; the oldest and
/// the newest frame are also kept whole, to rebuild the others forwards and to take the next
/// difference. A message costs about a quarter of its frame's bytes plus two, not an allocation
/// and a `Bytes` handle of its own: with many sessions holding up to `retransmit_window`
/// acknowledgements each, that is most of the gateway's memory per order (docs/benchmarks.md,
/// "Memory per resting order"). The price: a retransmission rebuilds every frame from the
/// oldest up to the last one it sends (a few milliseconds for a full window of 100k).
pub(crate) struct FrameWindow {
    bytes: VecDeque<u8>,
    lengths: VecDeque<u16>,
    /// The oldest frame held, whole (empty when none is held).
    oldest: Vec<u8>,
    /// The newest frame pushed, whole: the base of the next frame's difference.
    newest: Vec<u8>,
    frames_max: usize,
}

/// Bytes of a frame's length at the start of its packed form.
const PACKED_LENGTH_BYTES: usize = 2;
/// Bytes a mask of [`pack_frame`] covers (one bit each).
const PACK_CHUNK_BYTES: usize = 8;

/// Byte `index` of `frame` XOR byte `index` of `base` (zero past the end of `base`): the
/// difference [`pack_frame`] keeps, and its inverse.
fn xor_at(frame: &[u8], base: &[u8], index: usize) -> u8 {
    frame[index] ^ base.get(index).copied().unwrap_or(0)
}

/// Appends `frame`'s difference from `base` to `out` packed: `frame`'s length (`u16`,
/// little-endian), then for each run of [`PACK_CHUNK_BYTES`] bytes of `frame XOR base` (`base`
/// read as zero past its end) a mask byte (bit `i` set: byte `i` of the run is not zero) and the
/// run's non-zero bytes. Frames are fixed layouts of mostly small integers and a session's
/// consecutive frames differ in few bytes, so most bytes of the difference are zero: an
/// acknowledgement of 126 bytes packs into about 27 (about 56 against an empty base). Returns the
/// packed length.
fn pack_frame(frame: &[u8], base: &[u8], length: u16, out: &mut VecDeque<u8>) -> usize {
    let before = out.len();
    out.extend(length.to_le_bytes());
    for start in (0..frame.len()).step_by(PACK_CHUNK_BYTES) {
        let end = (start + PACK_CHUNK_BYTES).min(frame.len());
        let mask = (start..end).fold(0u8, |mask, i| mask | (u8::from(xor_at(frame, base, i) != 0) << (i - start)));
        out.push_back(mask);
        out.extend((start..end).map(|i| xor_at(frame, base, i)).filter(|&byte| byte != 0));
    }
    out.len() - before
}

/// Turns `frame`, the base of a difference [`pack_frame`] packed into `packed` (exactly its
/// packed bytes), into the frame packed: in place, so rebuilding costs no allocation.
fn unpack_frame(mut packed: impl Iterator<Item = u8>, frame: &mut Vec<u8>) {
    let length = u16::from_le_bytes([packed.next().unwrap_or(0), packed.next().unwrap_or(0)]);
    // The base reads as zero past its end; its bytes past the frame's length are not needed.
    frame.resize(usize::from(length), 0);
    for chunk in frame.chunks_mut(PACK_CHUNK_BYTES) {
        let mask = packed.next().unwrap_or(0);
        for (i, byte) in chunk.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *byte ^= packed.next().unwrap_or(0);
            }
        }
    }
}

impl FrameWindow {
    fn new(frames_max: usize) -> Self {
        Self { bytes: VecDeque::new(), lengths: VecDeque::new(), oldest: Vec::new(), newest: Vec::new(), frames_max }
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// Appends a frame, forgetting the oldest beyond the window's size.
    fn push(&mut self, frame: &[u8]) {
        // The packed form is at most the frame, its length and a mask per chunk.
        let packed_max = frame.len() + PACKED_LENGTH_BYTES + frame.len().div_ceil(PACK_CHUNK_BYTES);
        let (Ok(length), true) = (u16::try_from(frame.len()), packed_max <= usize::from(u16::MAX)) else {
            // Never: frames are at most 264 bytes. Forget everything rather than keep a window
            // whose sequences no longer match.
            debug_assert!(false, "frame of {} bytes", frame.len());
            self.bytes.clear();
            self.lengths.clear();
            self.oldest.clear();
            return;
        };
        if self.lengths.is_empty() {
            self.oldest.clear();
            self.oldest.extend_from_slice(frame);
        }
        let packed = pack_frame(frame, &self.newest, length, &mut self.bytes);
        // Fits: bounded by `packed_max` above.
        self.lengths.push_back(packed as u16);
        self.newest.clear();
        self.newest.extend_from_slice(frame);
        while self.lengths.len() > self.frames_max {
            let forgotten = self.lengths.pop_front().map_or(0, usize::from);
            self.bytes.drain(..forgotten);
            // The next frame becomes the oldest: rebuild it from its difference.
            match self.lengths.front() {
                Some(&next) => unpack_frame(self.bytes.range(..usize::from(next)).copied(), &mut self.oldest),
                None => self.oldest.clear(),
            }
        }
    }

    /// Copies of up to `count` frames after skipping the `skip` oldest.
    fn frames(&self, skip: usize, count: usize) -> impl Iterator<Item = Bytes> + '_ {
        // Each frame is rebuilt from the one before; the oldest's difference is from a frame no
        // longer held, so it is taken whole.
        let mut frame = self.oldest.clone();
        let mut offset = 0usize;
        let all = self.lengths.iter().enumerate().map(move |(index, length)| {
            let length = usize::from(*length);
            if index > 0 {
                unpack_frame(self.bytes.range(offset..offset + length).copied(), &mut frame);
            }
            offset += length;
            // Only the frames handed out are copied.
            (index >= skip).then(|| Bytes::from(frame.clone()))
        });
        all.skip(skip).take(count).flatten()
    }
}

/// The acknowledgement of a traced command on its way to the socket: the engine's stamps and
/// when the dispatcher read it. The writer records it once the bytes are written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AckTrace {
    pub trace: CommandTrace,
    pub picked_ns: u64,
}

/// One frame for a connection's writer, with the trace of the command it acknowledges.
pub(crate) struct Outbound {
    pub frame: Bytes,
    pub ack: Option<AckTrace>,
}

impl From<Bytes> for Outbound {
    fn from(frame: Bytes) -> Self {
        Self { frame, ack: None }
    }
}

/// Traced acknowledgements one writer batch records at most (more are dropped from the
/// histograms, never from the socket): a bound on the writer's buffer of them.
pub(crate) const ACKS_PER_WRITE_MAX: usize = 1_024;

/// Connections with something for their writer (frames queued or a kill), by id: how the
/// I/O thread of [`crate::IoMode::Thread`] learns which sockets to write without looking at
/// every one. Only that thread pushes and drains it (the mutex is never contended); bounded by
/// what one turn of it delivers.
#[derive(Debug, Default)]
pub(crate) struct ReadyList {
    ids: Mutex<Vec<u64>>,
}

impl ReadyList {
    fn mark(&self, connection_id: u64) {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).push(connection_id);
    }

    /// Takes the marked ids into `into` (which it clears first).
    pub fn take(&self, into: &mut Vec<u64>) {
        into.clear();
        std::mem::swap(&mut *self.ids.lock().unwrap_or_else(|e| e.into_inner()), into);
    }
}

/// The live connection of a session: the handle its session and the dispatcher use to reach
/// its writer (a tokio task, or the I/O thread).
#[derive(Clone)]
pub(crate) struct Connection {
    pub id: u64,
    pub outbound: mpsc::Sender<Outbound>,
    pub kill: watch::Sender<Option<TerminateReason>>,
    /// Set under [`crate::IoMode::Thread`]: the writer is told this way, not by a task wake-up.
    pub ready: Option<Arc<ReadyList>>,
}

impl Connection {
    /// Queues a frame for the writer.
    ///
    /// # Errors
    /// The queue is full (the peer does not read fast enough) or the writer is gone.
    pub fn send(&self, message: Outbound) -> Result<(), TerminateReason> {
        let sent = self.outbound.try_send(message).map_err(|_| TerminateReason::SlowConsumer);
        self.notify();
        sent
    }

    /// Tells the writer to send `reason` in a Terminate and close.
    pub fn terminate(&self, reason: TerminateReason) {
        let _ = self.kill.send(Some(reason));
        self.notify();
    }

    fn notify(&self) {
        if let Some(ready) = &self.ready {
            ready.mark(self.id);
        }
    }
}

/// A session: one per API key, outliving its connections.
pub(crate) struct SessionState {
    pub user_id: UserId,
    pub session_id: u64,
    /// Sequence the next outbound application message gets.
    pub next_outbound: u64,
    /// Sequence the next inbound application message gets.
    pub next_inbound: u64,
    /// Recent outbound application messages, oldest first (the newest has sequence
    /// `next_outbound - 1`).
    pub window: FrameWindow,
    pub connection: Option<Connection>,
    pub last_outbound: Instant,
    /// The session's rate limit: it belongs to the session, so a reconnect does not refill it.
    bucket: TokenBucket,
    /// Throttled application messages in a row (across connections).
    strikes: u32,
    /// Client order ids already used in this session (bounded, oldest forgotten first).
    recent_client_ids: RecentClientOrderIds,
}

impl SessionState {
    fn new(user_id: UserId, session_id: u64, config: &crate::GatewayConfig) -> Self {
        Self {
            user_id,
            session_id,
            next_outbound: 1,
            next_inbound: 1,
            window: FrameWindow::new(config.retransmit_window),
            connection: None,
            last_outbound: Instant::now(),
            bucket: TokenBucket::new(config.messages_per_second, config.burst, Instant::now()),
            strikes: 0,
            recent_client_ids: RecentClientOrderIds::new(config.client_order_ids_remembered),
        }
    }

    /// Numbers, keeps and (if connected) sends an outbound application message. A connection
    /// whose queue is full is cut with `SlowConsumer`; the message stays in the window.
    pub fn push_application(&mut self, frame: Bytes) {
        self.push_traced_application(frame, None);
    }

    /// [`Self::push_application`] for the acknowledgement of a traced command.
    pub fn push_traced_application(&mut self, frame: Bytes, ack: Option<AckTrace>) {
        self.next_outbound += 1;
        self.window.push(&frame);
        self.last_outbound = Instant::now();
        if let Some(connection) = &self.connection
            && connection.send(Outbound { frame, ack }).is_err()
        {
            connection.terminate(TerminateReason::SlowConsumer);
            self.connection = None;
        }
    }

    /// Records a client order id; false if the session used it before.
    fn remember_client_order_id(&mut self, id: u64) -> bool {
        self.recent_client_ids.remember(id)
    }

    /// Undoes [`Self::remember_client_order_id`] for the id just remembered, when its command
    /// never reached the engine (ingress full): the client is told to retry, with the same id.
    fn forget_last_client_order_id(&mut self, id: u64) {
        self.recent_client_ids.forget_last(id);
    }
}

pub(crate) async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let open = shared.stats.connections.load(Ordering::Relaxed) as usize;
        if open >= shared.config.connections_max {
            tracing::warn!(%peer, open, "binary gateway: connection limit reached");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            let connection_id = shared.next_session_id.fetch_add(1, Ordering::Relaxed);
            run_connection(stream, shared.clone(), connection_id).await;
            shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// How often a connection checks its logon deadline, keep-alive and the server's shutdown.
pub(crate) const HEARTBEAT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The inbound side of one connection, without its I/O (shared by both [`crate::IoMode`]s):
/// bytes read go in ([`Self::handle_frames`]), the clock comes in ([`Self::check_timers`]); what
/// it says goes to the connection's [`Connection`] handle; `Err` ends the connection with that
/// reason.
pub(crate) struct Inbound {
    phase: Phase,
    last_inbound: Instant,
    started: Instant,
}

impl Inbound {
    /// A connection just accepted: awaiting `Negotiate`.
    pub fn new() -> Self {
        let now = Instant::now();
        Self { phase: Phase::AwaitNegotiate, last_inbound: now, started: now }
    }

    /// Handles every complete frame in `buffer` (read at `received_ns`) and removes them.
    /// `verifier`: where a logon's signature is checked (`None`: here, inline). With a verifier,
    /// handling stops after the `Establish` until [`Self::logon_verified`]: the frames after it
    /// stay in `buffer` (see [`Self::is_verifying_logon`]).
    ///
    /// # Errors
    /// The reason to end the connection: a bad frame, a failed logon, a protocol error, more
    /// than two frames' worth of bytes without a complete frame.
    pub fn handle_frames(
        &mut self,
        shared: &Shared,
        buffer: &mut BytesMut,
        link: &Connection,
        received_ns: u64,
        verifier: Option<&LogonVerifier>,
    ) -> Result<(), TerminateReason> {
        loop {
            if self.is_verifying_logon() {
                // The rest waits for the verdict. `buffer` holds at most what was read with the
                // `Establish`: nothing more is read meanwhile.
                return Ok(());
            }
            let (message, used) = match FrameDecoder::next_frame(buffer) {
                Ok(Some((message, used))) => (message.to_vec(), used),
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(%error, "binary gateway: bad frame");
                    return Err(TerminateReason::ProtocolError);
                }
            };
            let _ = buffer.split_to(used);
            self.last_inbound = Instant::now();
            handle_message(shared, &mut self.phase, &message, link, received_ns, verifier)?;
        }
        if buffer.len() > 2 * FRAME_BYTES_MAX {
            return Err(TerminateReason::ProtocolError);
        }
        Ok(())
    }

    /// Every [`HEARTBEAT_CHECK_INTERVAL`]: the logon deadline, the peer's keep-alive, our own
    /// heartbeat, the server's shutdown.
    ///
    /// # Errors
    /// The reason to end the connection.
    pub fn check_timers(&mut self, shared: &Shared, link: &Connection) -> Result<(), TerminateReason> {
        match &self.phase {
            Phase::Established { session, keep_alive } => {
                if self.last_inbound.elapsed() > *keep_alive * 2 {
                    return Err(TerminateReason::KeepAliveTimeout);
                }
                let mut state = session.lock().unwrap_or_else(|e| e.into_inner());
                if state.last_outbound.elapsed() >= *keep_alive {
                    let beat = session_frame(Session::SequenceHeartbeat(SequenceHeartbeat {
                        next_sequence: Sequence::new(state.next_outbound),
                    }));
                    state.last_outbound = Instant::now();
                    let _ = link.send(beat.into());
                }
            }
            _ => {
                if self.started.elapsed() > LOGON_TIMEOUT {
                    return Err(TerminateReason::Unauthenticated);
                }
            }
        }
        if shared.stopping.load(Ordering::Acquire) {
            return Err(TerminateReason::ServerShutdown);
        }
        Ok(())
    }

    /// Whether the connection's logon signature is being checked elsewhere: it handles no frame
    /// until [`Self::logon_verified`] (and the I/O thread reads nothing more of its socket).
    pub fn is_verifying_logon(&self) -> bool {
        matches!(self.phase, Phase::VerifyingLogon { .. })
    }

    /// The verdict on the signature of the `Establish` this connection is waiting on: the logon
    /// completes exactly as it does when checked inline (`EstablishAck`, or the same refusals).
    /// Without a check pending, nothing happens. The caller then hands the frames still in the
    /// buffer to [`Self::handle_frames`].
    ///
    /// # Errors
    /// `Unauthenticated` (bad signature) or `DuplicateSession`: the connection ends.
    pub fn logon_verified(&mut self, shared: &Shared, link: &Connection, valid: bool) -> Result<(), TerminateReason> {
        let Phase::VerifyingLogon { key, user_id, keep_alive_ms } = self.phase else { return Ok(()) };
        if !valid {
            shared.stats.logon_failures.fetch_add(1, Ordering::Relaxed);
            return Err(TerminateReason::Unauthenticated);
        }
        establish_session(shared, &mut self.phase, key, user_id, keep_alive_ms, link)
    }

    /// The connection ends: its session (if this connection still owns it) is left without one.
    pub fn detach(&self, connection_id: u64) {
        if let Phase::Established { session, .. } = &self.phase {
            let mut state = session.lock().unwrap_or_else(|e| e.into_inner());
            if state.connection.as_ref().is_some_and(|c| c.id == connection_id) {
                state.connection = None;
            }
        }
    }
}

enum Phase {
    AwaitNegotiate,
    AwaitEstablish {
        key: PublicKey,
        user_id: UserId,
        nonce: [u8; 32],
    },
    /// `Establish` received, its signature handed to the verifier thread: nothing else is
    /// handled until the verdict. `keep_alive_ms` is the clamped one asked for.
    VerifyingLogon {
        key: PublicKey,
        user_id: UserId,
        keep_alive_ms: u32,
    },
    Established {
        session: Arc<Mutex<SessionState>>,
        keep_alive: Duration,
    },
}

/// The writer half: drains the outbound queue, batching writes; on a kill signal writes the
/// Terminate immediately and closes.
async fn write_loop(
    socket: tokio::net::tcp::OwnedWriteHalf,
    mut outbound: mpsc::Receiver<Outbound>,
    mut kill: watch::Receiver<Option<TerminateReason>>,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, socket);
    let mut acks: Vec<AckTrace> = Vec::with_capacity(ACKS_PER_WRITE_MAX);
    loop {
        tokio::select! {
            biased;
            changed = kill.changed() => {
                let reason = if changed.is_ok() { *kill.borrow() } else { None };
                // What was queued before the kill goes out first: it is numbered, and the
                // Terminate must be the last message. Not for a slow consumer: the queue is the
                // problem then (its messages stay in the retransmission window).
                if reason != Some(TerminateReason::SlowConsumer) {
                    while let Ok(message) = outbound.try_recv() {
                        if writer.write_all(&message.frame).await.is_err() {
                            return;
                        }
                    }
                }
                if let Some(reason) = reason {
                    let terminate = session_frame(Session::Terminate(Terminate { reason: reason.into(), reserved: Reserved::ZERO }));
                    let _ = writer.write_all(&terminate).await;
                }
                let _ = writer.flush().await;
                let _ = writer.shutdown().await;
                return;
            }
            message = outbound.recv() => {
                let Some(message) = message else {
                    let _ = writer.flush().await;
                    return;
                };
                let mut message = message;
                loop {
                    if writer.write_all(&message.frame).await.is_err() {
                        return;
                    }
                    if let Some(ack) = message.ack
                        && acks.len() < ACKS_PER_WRITE_MAX
                    {
                        acks.push(ack);
                    }
                    let Ok(next) = outbound.try_recv() else { break };
                    message = next;
                }
                if writer.flush().await.is_err() {
                    return;
                }
                // The bytes are in the socket: the end of each acknowledged command's trace.
                let written_ns = clock_ns();
                for ack in acks.drain(..) {
                    wire_latency().record(origin::BINARY, &ack.trace, ack.picked_ns, written_ns);
                }
            }
        }
    }
}

async fn run_connection(stream: TcpStream, shared: Arc<Shared>, connection_id: u64) {
    let peer = stream.peer_addr().ok();
    let (mut reader, writer) = stream.into_split();
    let (outbound_sender, outbound) = mpsc::channel::<Outbound>(shared.config.outbound_queue_max);
    let (kill, kill_receiver) = watch::channel(None);
    let mut kill_watch = kill.subscribe();
    let mut writer_task = tokio::spawn(write_loop(writer, outbound, kill_receiver));
    let link = Connection { id: connection_id, outbound: outbound_sender, kill, ready: None };
    let mut inbound = Inbound::new();
    let mut buffer = BytesMut::with_capacity(2 * FRAME_BYTES_MAX);
    let mut heartbeat = tokio::time::interval(HEARTBEAT_CHECK_INTERVAL);
    // When the bytes in `buffer` were read: the start of the trace of the commands they hold.
    let mut received_ns = 0u64;

    let reason: TerminateReason = loop {
        // Logon signatures are checked inline: this task serves this connection alone.
        if let Err(reason) = inbound.handle_frames(&shared, &mut buffer, &link, received_ns, None) {
            tracing::debug!(?peer, ?reason, "binary gateway: inbound ends the connection");
            break reason;
        }
        tokio::select! {
            read = reader.read_buf(&mut buffer) => match read {
                Ok(0) | Err(_) => break TerminateReason::Finished,
                Ok(_) => received_ns = clock_ns(),
            },
            _ = heartbeat.tick() => {
                if let Err(reason) = inbound.check_timers(&shared, &link) {
                    break reason;
                }
            }
            _ = kill_watch.changed() => {
                // Cut from elsewhere (slow consumer, duplicate logon): the writer already sends
                // the Terminate.
                break kill_watch.borrow().unwrap_or(TerminateReason::Finished);
            }
        }
    };

    inbound.detach(connection_id);
    tracing::debug!(?peer, ?reason, "binary gateway: connection ends");
    let _ = link.kill.send(Some(reason));
    drop(link);
    // A writer blocked on a peer that does not read (its socket buffers full) would hold this
    // connection, and its slot, for as long as the peer keeps the socket open: give it a moment
    // to say goodbye, then cut it.
    if tokio::time::timeout(WRITER_GRACE, &mut writer_task).await.is_err() {
        tracing::debug!(?peer, "binary gateway: peer not reading; connection cut");
        writer_task.abort();
    }
}

fn business_reject(
    client_sequence: u64,
    client_order_id: ClientOrderId,
    template_id: u16,
    reason: RejectReason,
) -> Bytes {
    session_frame(Session::BusinessReject(BusinessReject {
        client_sequence: Sequence::new(client_sequence),
        client_order_id,
        reason: reason.into(),
        ref_template_id: template_id.into(),
        reserved: Reserved::ZERO,
    }))
}

/// Completes a logon whose signature is valid: the key's session (created on its first logon)
/// gets this connection, unless another connection holds it; `EstablishAck` is sent.
///
/// # Errors
/// `DuplicateSession`: another connection holds the session; or the connection is gone.
fn establish_session(
    shared: &Shared,
    phase: &mut Phase,
    key: PublicKey,
    user_id: UserId,
    keep_alive_ms: u32,
    link: &Connection,
) -> Result<(), TerminateReason> {
    let send = |frame: Bytes| link.send(frame.into());
    let session = {
        let mut sessions = shared.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .entry(key.0)
            .or_insert_with(|| {
                let session_id = shared.next_session_id.fetch_add(1, Ordering::Relaxed);
                shared.session_keys.lock().unwrap_or_else(|e| e.into_inner()).insert(session_id, key.0);
                Arc::new(Mutex::new(SessionState::new(user_id, session_id, &shared.config)))
            })
            .clone()
    };
    {
        let mut state = session.lock().unwrap_or_else(|e| e.into_inner());
        if state.connection.is_some() {
            shared.stats.logon_failures.fetch_add(1, Ordering::Relaxed);
            return Err(TerminateReason::DuplicateSession);
        }
        // The key may have been re-registered to another user since the session began.
        state.user_id = user_id;
        send(session_frame(Session::EstablishAck(EstablishAck {
            user_id,
            next_sequence: Sequence::new(state.next_outbound),
            next_expected_sequence: Sequence::new(state.next_inbound),
            keep_alive_ms: keep_alive_ms.into(),
            reserved: Reserved::ZERO,
        })))?;
        state.connection = Some(link.clone());
        state.last_outbound = Instant::now();
    }
    shared.stats.logons.fetch_add(1, Ordering::Relaxed);
    *phase = Phase::Established { session, keep_alive: Duration::from_millis(u64::from(keep_alive_ms)) };
    Ok(())
}

/// Handles one inbound message. `Err` ends the connection with that reason.
fn handle_message(
    shared: &Shared,
    phase: &mut Phase,
    message: &[u8],
    link: &Connection,
    received_ns: u64,
    verifier: Option<&LogonVerifier>,
) -> Result<(), TerminateReason> {
    let send = |frame: Bytes| link.send(frame.into());
    match phase {
        Phase::AwaitNegotiate => {
            let Ok((Session::Negotiate(negotiate), _)) = Session::decode(message) else {
                shared.stats.logon_failures.fetch_add(1, Ordering::Relaxed);
                return Err(TerminateReason::Unauthenticated);
            };
            let Some(user_id) = shared.credentials.user_of(&negotiate.api_key) else {
                shared.stats.logon_failures.fetch_add(1, Ordering::Relaxed);
                return Err(TerminateReason::Unauthenticated);
            };
            let mut nonce = [0u8; 32];
            getrandom::fill(&mut nonce).map_err(|_| TerminateReason::ServerShutdown)?;
            send(session_frame(Session::NegotiateResponse(NegotiateResponse {
                server_nonce: FixedBytes(nonce),
                timestamp_ns: TimestampNs::new(now_ns()),
            })))?;
            *phase = Phase::AwaitEstablish { key: negotiate.api_key, user_id, nonce };
            Ok(())
        }
        Phase::AwaitEstablish { key, user_id, nonce } => {
            let (key, user_id, nonce) = (*key, *user_id, *nonce);
            let Ok((Session::Establish(establish), _)) = Session::decode(message) else {
                shared.stats.logon_failures.fetch_add(1, Ordering::Relaxed);
                return Err(TerminateReason::Unauthenticated);
            };
            let keep_alive_ms = establish.keep_alive_ms.get().clamp(KEEP_ALIVE_MS_MIN, KEEP_ALIVE_MS_MAX);
            let Some(verifier) = verifier else {
                if !verify_logon(&key, &nonce, &establish.signature) {
                    shared.stats.logon_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(TerminateReason::Unauthenticated);
                }
                return establish_session(shared, phase, key, user_id, keep_alive_ms, link);
            };
            let check = LogonCheck { connection_id: link.id, key, nonce, signature: establish.signature };
            if let Err(reason) = verifier.submit(check) {
                shared.stats.logon_failures.fetch_add(1, Ordering::Relaxed);
                return Err(reason);
            }
            *phase = Phase::VerifyingLogon { key, user_id, keep_alive_ms };
            Ok(())
        }
        // Never: frames are not handled while verifying.
        Phase::VerifyingLogon { .. } => Err(TerminateReason::ProtocolError),
        Phase::Established { session, .. } => {
            // Session-layer messages first.
            if let Ok((message, _)) = Session::decode(message) {
                return match message {
                    Session::SequenceHeartbeat(_) => Ok(()),
                    Session::Terminate(_) => Err(TerminateReason::Finished),
                    Session::RetransmitRequest(request) => {
                        let state = session.lock().unwrap_or_else(|e| e.into_inner());
                        retransmit(&state, request, link)
                    }
                    // Logon messages again, or server-side messages from a client.
                    _ => Err(TerminateReason::ProtocolError),
                };
            }
            let mut state = session.lock().unwrap_or_else(|e| e.into_inner());
            let client_sequence = state.next_inbound;
            state.next_inbound += 1;
            let (command, template_id) = match Command::decode(message) {
                Ok((command, _)) => {
                    let template_id = command.template_id();
                    (command, template_id)
                }
                Err(_) => {
                    let template_id = message.get(2..4).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
                    shared.stats.business_rejects.fetch_add(1, Ordering::Relaxed);
                    state.push_application(business_reject(
                        client_sequence,
                        ClientOrderId::ZERO,
                        template_id,
                        RejectReason::MalformedMessage,
                    ));
                    return Ok(());
                }
            };
            let reject = |state: &mut SessionState, client_order_id, reason| {
                shared.stats.business_rejects.fetch_add(1, Ordering::Relaxed);
                state.push_application(business_reject(client_sequence, client_order_id, template_id, reason));
            };
            if !state.bucket.try_take(Instant::now()) {
                state.strikes += 1;
                if state.strikes > shared.config.throttle_strikes_max {
                    return Err(TerminateReason::Throttled);
                }
                reject(&mut state, client_order_id_of(&command), RejectReason::Throttled);
                return Ok(());
            }
            state.strikes = 0;
            let user_id = state.user_id;
            // The user is always the session's; the message's field is overwritten.
            let (command, client_order_id) = match command {
                Command::NewOrder(mut m) => {
                    m.user_id = user_id;
                    let enums_valid = m.side.get().is_ok()
                        && m.order_type.get().is_ok()
                        && m.time_in_force.get().is_ok()
                        && m.self_trade_prevention.get().is_ok()
                        && m.post_only.get().is_ok()
                        && m.trigger_kind.get().is_ok();
                    if !enums_valid {
                        reject(&mut state, m.client_order_id, RejectReason::InvalidEnumValue);
                        return Ok(());
                    }
                    if m.client_order_id != ClientOrderId::ZERO
                        && !state.remember_client_order_id(m.client_order_id.get())
                    {
                        reject(&mut state, m.client_order_id, RejectReason::DuplicateClientOrderId);
                        return Ok(());
                    }
                    (Command::NewOrder(m), m.client_order_id)
                }
                Command::CancelOrder(mut m) => {
                    m.user_id = user_id;
                    (Command::CancelOrder(m), m.client_order_id)
                }
                Command::CancelReplace(mut m) => {
                    m.user_id = user_id;
                    (Command::CancelReplace(m), m.client_order_id)
                }
                Command::MassCancel(mut m) => {
                    m.user_id = user_id;
                    if m.side.get().is_err() || m.kinds.get().is_err() {
                        reject(&mut state, ClientOrderId::ZERO, RejectReason::InvalidEnumValue);
                        return Ok(());
                    }
                    (Command::MassCancel(m), ClientOrderId::ZERO)
                }
                // Ledger and market-control commands are administrative, not order entry; AMM pool
                // commands are served by the REST API only (docs/amm.md).
                Command::Deposit(_)
                | Command::Withdraw(_)
                | Command::MarketControl(_)
                | Command::AddLiquidity(_)
                | Command::RemoveLiquidity(_)
                | Command::Swap(_)
                | Command::RoutedOrder(_) => {
                    reject(&mut state, ClientOrderId::ZERO, RejectReason::InvalidOrderType);
                    return Ok(());
                }
            };
            let tag = origin::tag(origin::BINARY, state.session_id);
            if shared.ingress.push(IngressCommand::traced(tag, command, received_ns)).is_err() {
                shared.stats.ingress_busy.fetch_add(1, Ordering::Relaxed);
                if matches!(command, Command::NewOrder(_)) && client_order_id != ClientOrderId::ZERO {
                    // EngineBusy says "retry later": the retry must not be a duplicate.
                    state.forget_last_client_order_id(client_order_id.get());
                }
                reject(&mut state, client_order_id, RejectReason::EngineBusy);
                return Ok(());
            }
            shared.stats.commands.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// The client order id a command carries (a new order's own, or the one a cancel or replace
/// refers to); zero for commands without one.
fn client_order_id_of(command: &Command) -> ClientOrderId {
    match command {
        Command::NewOrder(m) => m.client_order_id,
        Command::CancelOrder(m) => m.client_order_id,
        Command::CancelReplace(m) => m.client_order_id,
        Command::MassCancel(_)
        | Command::Deposit(_)
        | Command::Withdraw(_)
        | Command::MarketControl(_)
        | Command::AddLiquidity(_)
        | Command::RemoveLiquidity(_)
        | Command::Swap(_)
        | Command::RoutedOrder(_) => ClientOrderId::ZERO,
    }
}

fn retransmit(state: &SessionState, request: RetransmitRequest, link: &Connection) -> Result<(), TerminateReason> {
    let from = request.from_sequence.get();
    let count = request.count.get();
    let oldest = state.next_outbound - state.window.len() as u64;
    let reject = |reason: RetransmitRejectReason| {
        session_frame(Session::RetransmitReject(RetransmitReject {
            from_sequence: request.from_sequence,
            reason: reason.into(),
            reserved: Reserved::ZERO,
        }))
    };
    let send = |frame: Bytes| link.send(frame.into());
    if count > RETRANSMIT_COUNT_MAX {
        return send(reject(RetransmitRejectReason::TooMany));
    }
    if count == 0 || from < oldest || from.saturating_add(u64::from(count)) > state.next_outbound {
        return send(reject(RetransmitRejectReason::OutOfRange));
    }
    send(session_frame(Session::Retransmission(Retransmission {
        from_sequence: request.from_sequence,
        count: count.into(),
        reserved: Reserved::ZERO,
    })))?;
    let skip = (from - oldest) as usize;
    for frame in state.window.frames(skip, count as usize) {
        send(frame)?;
    }
    Ok(())
}

/// The bytes a client signs at logon.
pub fn logon_payload(nonce: &[u8; 32], api_key: &PublicKey) -> Vec<u8> {
    let mut payload = Vec::with_capacity(LOGON_CONTEXT.len() + 64);
    payload.extend_from_slice(LOGON_CONTEXT);
    payload.extend_from_slice(nonce);
    payload.extend_from_slice(&api_key.0);
    payload
}

/// Whether `signature` is `key`'s over the logon payload of `nonce` (strictly: no small-order
/// keys, canonical signatures only).
pub(crate) fn verify_logon(key: &PublicKey, nonce: &[u8; 32], signature: &Signature) -> bool {
    #[cfg(test)]
    crate::logon_verifier::gate::pass();
    let Ok(verifying) = ed25519_dalek::VerifyingKey::from_bytes(&key.0) else { return false };
    let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
    verifying.verify_strict(&logon_payload(nonce, key), &signature).is_ok()
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::FrameWindow;

    fn frame(sequence: u8, length: usize) -> Vec<u8> {
        vec![sequence; length]
    }

    /// The window keeps the newest `frames_max` frames, byte for byte, and hands out any run of
    /// them.
    #[test]
    fn keeps_the_newest_frames_byte_for_byte() {
        let mut window = FrameWindow::new(3);
        for sequence in 1..=5u8 {
            window.push(&frame(sequence, 10 + usize::from(sequence)));
        }
        assert_eq!(window.len(), 3);
        let all: Vec<Vec<u8>> = window.frames(0, 10).map(|b| b.to_vec()).collect();
        assert_eq!(all, vec![frame(3, 13), frame(4, 14), frame(5, 15)]);
        let middle: Vec<Vec<u8>> = window.frames(1, 1).map(|b| b.to_vec()).collect();
        assert_eq!(middle, vec![frame(4, 14)]);
    }

    /// Frames with zero and non-zero bytes anywhere, of every length up to two chunks past a
    /// multiple of eight (a partial last chunk, an empty frame), come back byte for byte.
    #[test]
    fn packing_keeps_every_byte() {
        let mut window = FrameWindow::new(100);
        let mut pushed = Vec::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for length in 0..=26usize {
            let frame: Vec<u8> = (0..length)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    if state % 3 == 0 { 0 } else { state as u8 | 1 }
                })
                .collect();
            window.push(&frame);
            pushed.push(frame);
        }
        let held: Vec<Vec<u8>> = window.frames(0, 100).map(|b| b.to_vec()).collect();
        assert_eq!(held, pushed);
        let tail: Vec<Vec<u8>> = window.frames(20, 3).map(|b| b.to_vec()).collect();
        assert_eq!(tail, pushed[20..23].to_vec());
    }

    /// An order acknowledgement (mostly small integers) costs about half its frame's bytes in
    /// the window. Fails with frames kept as they are (a message then costs its whole frame).
    #[test]
    fn an_acknowledgement_costs_about_half_its_frame() {
        use codec::{Event, OrderAccepted, Side, TimeInForce};
        let accepted = OrderAccepted {
            sequence: 1_234_567u64.into(),
            timestamp_ns: 1_765_000_000_123_456_789u64.into(),
            user_id: codec::UserId::new(1_000_003),
            order_id: codec::OrderId::new(987_654),
            client_order_id: codec::ClientOrderId::new(125_000),
            price_ticks: codec::Ticks::new(99_000),
            quantity_lots: 20u64.into(),
            quote_quantity: 0u64.into(),
            market_id: codec::MarketId::new(2),
            side: Side::Bid.into(),
            order_type: codec::OrderType::Limit.into(),
            time_in_force: TimeInForce::Gtc.into(),
            self_trade_prevention: codec::SelfTradePrevention::Allow.into(),
            post_only: false.into(),
            reserved: codec::Reserved::ZERO,
            stop_loss_trigger_ticks: codec::Ticks::new(0),
            stop_loss_limit_ticks: codec::Ticks::new(0),
            take_profit_trigger_ticks: codec::Ticks::new(0),
            take_profit_limit_ticks: codec::Ticks::new(0),
        };
        let frame = super::event_frame(&Event::OrderAccepted(accepted));
        let mut window = FrameWindow::new(10);
        window.push(&frame);
        assert_eq!(window.frames(0, 1).next().as_deref(), Some(&frame[..]));
        let cost = window.bytes.len() + std::mem::size_of::<u16>();
        assert!(cost * 100 <= frame.len() * 60, "{cost} bytes held for a frame of {}", frame.len());
    }

    /// The acknowledgement of the next order of the same session (the next sequence, order id
    /// and client order id, a little later, another price) costs about a third of its frame:
    /// only its difference from the one before is kept. Fails with each frame packed on its own
    /// (56 of 126 bytes). Both come back byte for byte, also once the first is forgotten.
    #[test]
    fn the_next_acknowledgement_costs_its_difference() {
        use codec::{Event, OrderAccepted, Side, TimeInForce};
        let accepted = |n: u64| OrderAccepted {
            sequence: (1_234_567 + 8 * n).into(),
            timestamp_ns: (1_765_000_000_123_456_789 + 25_013 * n).into(),
            user_id: codec::UserId::new(1_000_003),
            order_id: codec::OrderId::new(987_654 + 8 * n),
            client_order_id: codec::ClientOrderId::new(125_000 + n),
            price_ticks: codec::Ticks::new(99_000 + 37 * n),
            quantity_lots: (20 + n).into(),
            quote_quantity: 0u64.into(),
            market_id: codec::MarketId::new(2),
            side: Side::Bid.into(),
            order_type: codec::OrderType::Limit.into(),
            time_in_force: TimeInForce::Gtc.into(),
            self_trade_prevention: codec::SelfTradePrevention::Allow.into(),
            post_only: false.into(),
            reserved: codec::Reserved::ZERO,
            stop_loss_trigger_ticks: codec::Ticks::new(0),
            stop_loss_limit_ticks: codec::Ticks::new(0),
            take_profit_trigger_ticks: codec::Ticks::new(0),
            take_profit_limit_ticks: codec::Ticks::new(0),
        };
        let first = super::event_frame(&Event::OrderAccepted(accepted(0)));
        let second = super::event_frame(&Event::OrderAccepted(accepted(1)));
        let mut window = FrameWindow::new(2);
        window.push(&first);
        let first_cost = window.bytes.len();
        window.push(&second);
        let cost = window.bytes.len() - first_cost + std::mem::size_of::<u16>();
        assert!(cost * 100 <= second.len() * 40, "{cost} bytes held for a frame of {}", second.len());
        let held: Vec<bytes::Bytes> = window.frames(0, 2).collect();
        assert_eq!(held, vec![first.clone(), second.clone()]);
        let third = super::event_frame(&Event::OrderAccepted(accepted(2)));
        window.push(&third);
        let held: Vec<bytes::Bytes> = window.frames(0, 2).collect();
        assert_eq!(held, vec![second, third]);
    }

    /// Frames of different lengths and contents, pushed through a small window, come back byte
    /// for byte from any position while older ones are forgotten.
    #[test]
    fn differences_survive_forgetting_the_oldest() {
        let mut window = FrameWindow::new(5);
        let mut pushed: Vec<Vec<u8>> = Vec::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for step in 0..200usize {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let length = (state % 40) as usize;
            let frame: Vec<u8> =
                (0..length).map(|i| if (state >> (i % 60)) & 1 == 0 { 0 } else { (step + i) as u8 }).collect();
            window.push(&frame);
            pushed.push(frame);
            let held: Vec<Vec<u8>> = window.frames(0, 10).map(|b| b.to_vec()).collect();
            assert_eq!(held, pushed[pushed.len().saturating_sub(5)..].to_vec());
            let skip = step % 5;
            let some: Vec<Vec<u8>> = window.frames(skip, 2).map(|b| b.to_vec()).collect();
            let expected: Vec<Vec<u8>> = held.iter().skip(skip).take(2).cloned().collect();
            assert_eq!(some, expected);
        }
    }

    #[test]
    fn an_empty_window_keeps_nothing() {
        let mut window = FrameWindow::new(0);
        window.push(&frame(1, 40));
        assert_eq!(window.len(), 0);
        assert_eq!(window.frames(0, 1).count(), 0);
    }
}
