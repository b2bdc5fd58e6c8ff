//! Logon signatures checked off the I/O thread ([`crate::IoMode::Thread`]).
//!
//! An Ed25519 `verify_strict` costs 50–100 µs on this machine. The I/O thread serves every SBE
//! socket, so checking a logon there would hold every established session's orders for that long,
//! and a burst of logons for that many times as long. Instead the connection's
//! [`crate::session::Inbound`] hands the check ([`LogonCheck`]) to one verifier thread and waits in
//! a "logon pending" state: it handles no further frame and the I/O thread reads nothing more of
//! its socket until the verdict. The verifier sends the verdict ([`LogonVerdict`]) back on a
//! channel and wakes the I/O thread through its mio waker (the eventfd the egress doorbell also
//! uses); the I/O thread then finishes the logon (`EstablishAck`, or `Terminate(Unauthenticated)`)
//! and handles what the client sent after `Establish`, in order: the wire is the same as with the
//! check done inline.
//!
//! Invariants: at most [`LOGON_VERIFICATIONS_PENDING_MAX`] checks are pending (handed over and
//! their verdict not yet taken by the I/O thread); a logon beyond it is refused with
//! `Terminate(Throttled)`. Only the I/O thread submits and takes verdicts, so the count
//! ([`crate::GatewayStats::logon_verifications_pending`]) has one writer. A connection has at
//! most one check pending (it reads nothing while waiting); a verdict for a connection that has
//! gone since is dropped (connection ids are never reused).
//!
//! The tokio mode checks inline, in the connection's own task: the check then holds that task and
//! the runtime worker it runs on, not the other connections' tasks on the other workers.

use crate::GatewayStats;
use codec::{PublicKey, Signature, TerminateReason};
use engine::doorbell::Waker;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;

/// Logon signature checks the I/O thread may have waiting for a verdict at once (about 5–25 ms
/// of verification at 20–100 µs each): beyond it a logon is refused with `Terminate(Throttled)`,
/// the client logs on again later. A reconnect storm larger than this is spread over retries
/// rather than queued without limit.
pub const LOGON_VERIFICATIONS_PENDING_MAX: usize = 256;

/// A logon signature to check: the connection's, over the nonce it was sent, with its API key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogonCheck {
    /// The connection that sent the `Establish`.
    pub connection_id: u64,
    /// The API key named in its `Negotiate`.
    pub key: PublicKey,
    /// The nonce the server sent that connection.
    pub nonce: [u8; 32],
    /// The `Establish`'s signature.
    pub signature: Signature,
}

/// The verdict on a [`LogonCheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogonVerdict {
    /// The connection that sent the `Establish`.
    pub connection_id: u64,
    /// Whether the signature is valid (`verify_strict`).
    pub valid: bool,
}

/// The I/O thread's end of the verifier thread: hands checks over, takes verdicts back.
pub(crate) struct LogonVerifier {
    /// `None` once dropping: the verifier thread ends when this closes.
    checks: Option<SyncSender<LogonCheck>>,
    verdicts: Receiver<LogonVerdict>,
    /// The pending count lives in the gateway's counters (for metrics and tests).
    stats: Arc<GatewayStats>,
    thread: Option<JoinHandle<()>>,
}

impl LogonVerifier {
    /// Starts the verifier thread; it rings `waker` after each verdict it sends.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(waker: Arc<dyn Waker>, stats: Arc<GatewayStats>) -> std::io::Result<Self> {
        let (checks, inbox) = mpsc::sync_channel::<LogonCheck>(LOGON_VERIFICATIONS_PENDING_MAX);
        // Unbounded type, bounded use: a verdict answers a pending check, at most
        // LOGON_VERIFICATIONS_PENDING_MAX of them.
        let (outbox, verdicts) = mpsc::channel::<LogonVerdict>();
        let thread = std::thread::Builder::new().name("binary-logon".into()).spawn(move || {
            // Ends when the I/O thread drops its end (after the checks still queued).
            for check in inbox {
                let valid = crate::session::verify_logon(&check.key, &check.nonce, &check.signature);
                if outbox.send(LogonVerdict { connection_id: check.connection_id, valid }).is_err() {
                    return;
                }
                waker.wake();
            }
        })?;
        Ok(Self { checks: Some(checks), verdicts, stats, thread: Some(thread) })
    }

    /// Hands a check to the verifier thread.
    ///
    /// # Errors
    /// `Throttled`: [`LOGON_VERIFICATIONS_PENDING_MAX`] checks are pending already.
    /// `ServerShutdown`: the verifier thread is gone (never expected: it does not panic).
    pub fn submit(&self, check: LogonCheck) -> Result<(), TerminateReason> {
        let pending = &self.stats.logon_verifications_pending;
        if pending.load(Ordering::Relaxed) as usize >= LOGON_VERIFICATIONS_PENDING_MAX {
            return Err(TerminateReason::Throttled);
        }
        let Some(checks) = &self.checks else { return Err(TerminateReason::ServerShutdown) };
        match checks.try_send(check) {
            Ok(()) => {
                pending.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            // Not expected either: the channel holds as many as may be pending.
            Err(TrySendError::Full(_)) => Err(TerminateReason::Throttled),
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!("binary gateway: the logon verifier thread is gone");
                Err(TerminateReason::ServerShutdown)
            }
        }
    }

    /// The next verdict sent back, if any.
    pub fn next_verdict(&self) -> Option<LogonVerdict> {
        match self.verdicts.try_recv() {
            Ok(verdict) => {
                self.stats.logon_verifications_pending.fetch_sub(1, Ordering::Relaxed);
                Some(verdict)
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }
}

impl Drop for LogonVerifier {
    fn drop(&mut self) {
        drop(self.checks.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.stats.logon_verifications_pending.store(0, Ordering::Relaxed);
    }
}

/// A test hook: makes every logon signature check (inline or on the verifier thread) wait while
/// a test holds the gate closed.
#[cfg(test)]
pub(crate) mod gate {
    use std::sync::{Condvar, Mutex, MutexGuard};

    static CLOSED: Mutex<bool> = Mutex::new(false);
    static OPENED: Condvar = Condvar::new();
    /// Tests that use the gate run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// Called by every check before it verifies.
    pub fn pass() {
        let mut closed = CLOSED.lock().unwrap_or_else(|e| e.into_inner());
        while *closed {
            closed = OPENED.wait(closed).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Holds the tests that use the gate apart.
    pub fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The gate closed until the guard is dropped (also when the test fails).
    pub struct Closed(());

    /// Closes the gate.
    pub fn close() -> Closed {
        *CLOSED.lock().unwrap_or_else(|e| e.into_inner()) = true;
        Closed(())
    }

    impl Closed {
        /// Opens the gate now.
        pub fn open(self) {}
    }

    impl Drop for Closed {
        fn drop(&mut self) {
            *CLOSED.lock().unwrap_or_else(|e| e.into_inner()) = false;
            OPENED.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    //! `thread` mode with logon checks held at the test gate: an established session's order is
    //! answered while many logons wait for their verdict (with the check inline on the I/O thread
    //! it is not: the thread is stuck in the first check); what a client sends after `Establish`
    //! is handled after the verdict, in order, or dropped with the same `Terminate` as inline; a
    //! logon beyond [`LOGON_VERIFICATIONS_PENDING_MAX`] pending is refused with
    //! `Terminate(Throttled)`.

    use super::{LOGON_VERIFICATIONS_PENDING_MAX, gate};
    use crate::client::{Client, Incoming, api_key_of};
    use crate::session::logon_payload;
    use crate::{BinaryGateway, Credentials, GatewayConfig, GatewayStats, IoMode};
    use codec::*;
    use ed25519_dalek::Signer;
    use engine::bus::{BroadcastRing, IngressRing};
    use engine::testkit::{EngineLoop, commands};
    use engine::{CommandContext, Engine, EngineConfig};
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    /// How long a test waits for any one message or condition before failing.
    const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Logons held at the gate while the established session trades.
    const LOGONS_HELD: u64 = 16;

    fn secret(user: u64) -> [u8; 32] {
        [(user + 100) as u8; 32]
    }

    /// A gateway in `thread` mode in front of a real engine; users 1..=users funded.
    struct Gateway {
        gateway: Option<BinaryGateway>,
        _engine: EngineLoop,
        address: SocketAddr,
    }

    impl Gateway {
        fn start(users: u64) -> Self {
            let config = GatewayConfig {
                listen: "127.0.0.1:0".parse().expect("an address"),
                io: IoMode::Thread,
                ..GatewayConfig::default()
            };
            let ingress = Arc::new(IngressRing::new(1024));
            let egress = BroadcastRing::new(1 << 16);
            let credentials = Arc::new(Credentials::default());
            let mut engine = Engine::new(&EngineConfig::sample()).expect("the sample configuration");
            let mut events = Vec::new();
            let mut sequence = 0;
            for user in 1..=users {
                credentials.insert(api_key_of(&secret(user)), UserId::new(user));
                for (asset, amount) in [(0, 100_000_000), (1, 10_000_000_000)] {
                    sequence += 1;
                    let deposit = commands::deposit(user, asset, amount);
                    engine.execute(CommandContext::new(sequence, 0), &deposit, &mut events);
                }
            }
            let engine = EngineLoop::start(engine, sequence, ingress.clone(), egress.clone());
            // The I/O thread needs no runtime; `start` is async for the tokio mode.
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
            let gateway =
                runtime.block_on(BinaryGateway::start(config, credentials, ingress, &egress)).expect("started");
            let address = gateway.local_addr();
            Self { gateway: Some(gateway), _engine: engine, address }
        }

        fn stats(&self) -> Arc<GatewayStats> {
            self.gateway.as_ref().expect("running").stats()
        }

        fn pending(&self) -> usize {
            self.stats().logon_verifications_pending.load(Ordering::Relaxed) as usize
        }
    }

    impl Drop for Gateway {
        fn drop(&mut self) {
            if let Some(gateway) = self.gateway.take() {
                gateway.shutdown();
            }
        }
    }

    fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + RECEIVE_TIMEOUT;
        while !condition() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut frame = vec![0; frame_length(message.len())];
        encode_frame(message, &mut frame).expect("sized");
        frame
    }

    fn limit(client_order_id: u64) -> Command {
        commands::limit(0, 1, Side::Bid, 600_000, 1, TimeInForce::Gtc, client_order_id)
    }

    /// A connection driven by hand.
    struct Raw {
        stream: TcpStream,
        buffer: Vec<u8>,
    }

    impl Raw {
        fn connect(address: SocketAddr) -> Self {
            let stream = TcpStream::connect(address).expect("connected");
            stream.set_nodelay(true).expect("nodelay");
            stream.set_read_timeout(Some(RECEIVE_TIMEOUT)).expect("timeout");
            Self { stream, buffer: Vec::new() }
        }

        /// Sends `Negotiate` for `user`'s key; returns the nonce.
        fn negotiate(address: SocketAddr, user: u64) -> (Self, [u8; 32]) {
            let mut raw = Self::connect(address);
            let api_key = api_key_of(&secret(user));
            raw.write(&[Session::Negotiate(Negotiate { api_key, timestamp_ns: TimestampNs::ZERO }).to_vec()]);
            match raw.receive() {
                Some(Incoming::Session(Session::NegotiateResponse(response))) => (raw, response.server_nonce.0),
                other => panic!("expected NegotiateResponse, got {other:?}"),
            }
        }

        /// `Establish` signed by `user` over `nonce` (or all zeros), framed.
        fn establish(user: u64, nonce: Option<&[u8; 32]>) -> Vec<u8> {
            let signature = nonce.map_or([0; 64], |nonce| {
                let payload = logon_payload(nonce, &api_key_of(&secret(user)));
                ed25519_dalek::SigningKey::from_bytes(&secret(user)).sign(&payload).to_bytes()
            });
            Session::Establish(Establish {
                signature: FixedBytes(signature),
                next_expected_sequence: Sequence::new(1),
                keep_alive_ms: 5_000u32.into(),
                reserved: Reserved::ZERO,
            })
            .to_vec()
        }

        /// Writes the messages framed, in one write.
        fn write(&mut self, messages: &[Vec<u8>]) {
            let bytes: Vec<u8> = messages.iter().flat_map(|message| framed(message)).collect();
            self.stream.write_all(&bytes).expect("written");
        }

        /// The next message (heartbeats skipped), or `None` once the server closed.
        fn receive(&mut self) -> Option<Incoming> {
            loop {
                if let Some((message, used)) = FrameDecoder::next_frame(&self.buffer).expect("server framing") {
                    let incoming = match Event::decode(message) {
                        Ok((event, _)) => Incoming::Event(event),
                        Err(_) => Incoming::Session(Session::decode(message).expect("a server message").0),
                    };
                    self.buffer.drain(..used);
                    if matches!(incoming, Incoming::Session(Session::SequenceHeartbeat(_))) {
                        continue;
                    }
                    return Some(incoming);
                }
                let mut chunk = [0u8; 8192];
                match self.stream.read(&mut chunk) {
                    Ok(0) => return None,
                    Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
                    Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return None,
                    Err(error) => panic!("receive: {error}"),
                }
            }
        }

        /// The next message is `Terminate(reason)` and the connection closes after it.
        fn expect_terminate(&mut self, reason: TerminateReason) {
            match self.receive() {
                Some(Incoming::Session(Session::Terminate(terminate))) => {
                    assert_eq!(terminate.reason.get(), Ok(reason))
                }
                other => panic!("expected Terminate({reason:?}), got {other:?}"),
            }
            assert!(self.receive().is_none(), "the connection stays open after the Terminate");
        }

        fn expect_establish_ack(&mut self, user: u64) {
            match self.receive() {
                Some(Incoming::Session(Session::EstablishAck(ack))) => assert_eq!(ack.user_id.get(), user),
                other => panic!("expected EstablishAck, got {other:?}"),
            }
        }

        fn expect_accepted(&mut self, client_order_id: u64) {
            match self.receive() {
                Some(Incoming::Event(Event::OrderAccepted(accepted))) => {
                    assert_eq!(accepted.client_order_id.get(), client_order_id)
                }
                other => panic!("expected OrderAccepted({client_order_id}), got {other:?}"),
            }
        }
    }

    /// Fails with the signature checked inline on the I/O thread: the thread waits at the gate in
    /// the first logon's check and the order is never answered.
    #[test]
    fn an_established_session_is_answered_while_logons_are_being_verified() {
        let _serial = gate::serial();
        let gateway = Gateway::start(1 + LOGONS_HELD);
        let mut trader = Client::connect(gateway.address, &secret(1), 1).expect("logged on");
        trader.set_read_timeout(Some(RECEIVE_TIMEOUT)).expect("timeout");
        let mut waiting: Vec<(u64, Raw, [u8; 32])> = (2..=1 + LOGONS_HELD)
            .map(|user| {
                let (raw, nonce) = Raw::negotiate(gateway.address, user);
                (user, raw, nonce)
            })
            .collect();
        let held = gate::close();
        for (user, raw, nonce) in &mut waiting {
            raw.write(&[Raw::establish(*user, Some(nonce))]);
        }
        // Every logon handed over and held (with inline checks none is ever pending).
        wait_until(|| gateway.pending() == LOGONS_HELD as usize);

        trader.send(&limit(7)).expect("sent");
        match trader.receive_application() {
            Ok(Incoming::Event(Event::OrderAccepted(accepted))) => assert_eq!(accepted.client_order_id.get(), 7),
            other => panic!("no answer to an established session while logons are verified: {other:?}"),
        }
        assert_eq!(gateway.pending(), LOGONS_HELD as usize, "the logons were still waiting for their verdict");

        held.open();
        for (user, raw, _) in &mut waiting {
            raw.expect_establish_ack(*user);
        }
        assert!(wait_until(|| gateway.pending() == 0));
        assert_eq!(gateway.stats().logons.load(Ordering::Relaxed), 1 + LOGONS_HELD);
    }

    /// Frames sent with the `Establish` (in the same write) and after it (while the check is
    /// held) are handled after the `EstablishAck`, in order, as when the check is inline.
    #[test]
    fn what_follows_a_logon_is_handled_after_its_verdict_in_order() {
        let _serial = gate::serial();
        let gateway = Gateway::start(1);
        let held = gate::close();
        let (mut raw, nonce) = Raw::negotiate(gateway.address, 1);
        raw.write(&[Raw::establish(1, Some(&nonce)), limit(1).to_vec()]);
        assert!(wait_until(|| gateway.pending() == 1));
        raw.write(&[limit(2).to_vec(), limit(3).to_vec()]);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(gateway.stats().commands.load(Ordering::Relaxed), 0, "nothing reaches the engine before the logon");
        held.open();
        raw.expect_establish_ack(1);
        for client_order_id in 1..=3 {
            raw.expect_accepted(client_order_id);
        }
    }

    /// A bad signature checked off the I/O thread gets the same refusal as inline:
    /// `Terminate(Unauthenticated)` alone, and what followed the `Establish` never reaches the
    /// engine.
    #[test]
    fn a_bad_signature_is_refused_after_the_verdict() {
        let _serial = gate::serial();
        let gateway = Gateway::start(1);
        let held = gate::close();
        let (mut raw, _nonce) = Raw::negotiate(gateway.address, 1);
        raw.write(&[Raw::establish(1, None), limit(1).to_vec()]);
        assert!(wait_until(|| gateway.pending() == 1));
        held.open();
        raw.expect_terminate(TerminateReason::Unauthenticated);
        let stats = gateway.stats();
        assert_eq!(stats.logon_failures.load(Ordering::Relaxed), 1);
        assert_eq!(stats.commands.load(Ordering::Relaxed), 0);
        assert_eq!(stats.logons.load(Ordering::Relaxed), 0);
    }

    /// [`LOGON_VERIFICATIONS_PENDING_MAX`] checks pending: the next logon is refused with
    /// `Terminate(Throttled)` at once; the pending ones get their verdicts once the gate opens.
    #[test]
    fn a_logon_beyond_the_pending_bound_is_throttled() {
        let _serial = gate::serial();
        let gateway = Gateway::start(1);
        let held = gate::close();
        let mut pending: Vec<Raw> = (0..LOGON_VERIFICATIONS_PENDING_MAX)
            .map(|_| {
                let (mut raw, _nonce) = Raw::negotiate(gateway.address, 1);
                raw.write(&[Raw::establish(1, None)]);
                raw
            })
            .collect();
        assert!(wait_until(|| gateway.pending() == LOGON_VERIFICATIONS_PENDING_MAX));
        let (mut refused, _nonce) = Raw::negotiate(gateway.address, 1);
        refused.write(&[Raw::establish(1, None)]);
        refused.expect_terminate(TerminateReason::Throttled);
        assert_eq!(gateway.stats().logon_failures.load(Ordering::Relaxed), 1);
        held.open();
        for raw in &mut pending {
            raw.expect_terminate(TerminateReason::Unauthenticated);
        }
        assert_eq!(gateway.stats().logon_failures.load(Ordering::Relaxed), 1 + LOGON_VERIFICATIONS_PENDING_MAX as u64);
        assert!(wait_until(|| gateway.pending() == 0));
    }
}
