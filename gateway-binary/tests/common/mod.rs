//! Test harness: a real gateway on a loopback port in front of a real engine. The engine loop is
//! the runtime's minus the journal (durability is the runtime's concern, tested there): pop the
//! ingress ring, execute, publish every event to the egress ring with its origin.
//!
//! The gateway serves its sockets as `GATEWAY_BINARY_IO` says (`tokio`, the default, or
//! `thread`): every test file runs against both modes (scripts/test runs the suite once per
//! mode).
//!
//! Also a raw connection ([`Raw`]) for driving the protocol by hand (bad logons, garbage), and
//! small helpers shared by the test files.

#![allow(dead_code)]

use codec::*;
use ed25519_dalek::Signer;
use engine::bus::{BroadcastRing, IngressRing};
use engine::testkit::{EngineLoop, commands};
use engine::{CommandContext, Engine, EngineConfig};
use gateway_binary::client::{Client, ClientError, Incoming, api_key_of};
use gateway_binary::session::logon_payload;
use gateway_binary::{BinaryGateway, Credentials, GatewayConfig, IoMode};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a test waits for any one message before failing.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Secret of test user `n`: 32 bytes of `n + 100`.
pub fn secret(user: u64) -> [u8; 32] {
    [(user + 100) as u8; 32]
}

/// The I/O mode under test: `GATEWAY_BINARY_IO=thread` for [`IoMode::Thread`], else tokio.
pub fn io_mode() -> IoMode {
    match std::env::var("GATEWAY_BINARY_IO").as_deref() {
        Ok("thread") => IoMode::Thread,
        Ok("tokio") | Err(_) => IoMode::Tokio,
        Ok(other) => panic!("GATEWAY_BINARY_IO={other}: expected tokio or thread"),
    }
}

pub struct Harness {
    pub address: SocketAddr,
    pub credentials: Arc<Credentials>,
    /// While set, the engine thread leaves the ingress ring alone (to fill it up).
    pub engine_paused: Arc<AtomicBool>,
    gateway: Option<BinaryGateway>,
    engine: Option<EngineLoop>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Harness {
    /// Users 1..=users registered and funded with BTC and USDC.
    pub fn start(users: u64, configure: impl FnOnce(&mut GatewayConfig)) -> Self {
        Self::start_with(users, 1024, configure)
    }

    /// As [`Harness::start`], with an ingress ring of `ingress_capacity` commands.
    pub fn start_with(users: u64, ingress_capacity: usize, configure: impl FnOnce(&mut GatewayConfig)) -> Self {
        Self::start_with_engine(users, ingress_capacity, configure, |_| {})
    }

    /// As [`Harness::start_with`], with the engine's configuration changed by `engine` first.
    pub fn start_with_engine(
        users: u64,
        ingress_capacity: usize,
        configure: impl FnOnce(&mut GatewayConfig),
        engine: impl FnOnce(&mut EngineConfig),
    ) -> Self {
        let mut config =
            GatewayConfig { listen: "127.0.0.1:0".parse().unwrap(), io: io_mode(), ..GatewayConfig::default() };
        configure(&mut config);
        let ingress = Arc::new(IngressRing::new(ingress_capacity));
        let egress = BroadcastRing::new(1 << 16);
        let credentials = Arc::new(Credentials::default());
        let mut engine_config = EngineConfig::sample();
        engine_config.limits.orders_per_market_max = 4096;
        engine(&mut engine_config);
        let mut engine = Engine::new(&engine_config).unwrap();
        let mut events = Vec::new();
        let mut sequence = 0;
        for user in 1..=users {
            credentials.insert(api_key_of(&secret(user)), UserId::new(user));
            for (asset, amount) in [(0, 100_000_000), (1, 10_000_000_000)] {
                sequence += 1;
                engine.execute(CommandContext::new(sequence, 0), &commands::deposit(user, asset, amount), &mut events);
            }
        }
        let engine_loop = EngineLoop::start(engine, sequence, ingress.clone(), egress.clone());
        let engine_paused = engine_loop.pause_switch();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let gateway = runtime.block_on(BinaryGateway::start(config, credentials.clone(), ingress, &egress)).unwrap();
        Self {
            address: gateway.local_addr(),
            credentials,
            engine_paused,
            gateway: Some(gateway),
            engine: Some(engine_loop),
            runtime: Some(runtime),
        }
    }

    /// A logged-on client of user `user` (a new session: next expected sequence 1).
    pub fn client(&self, user: u64) -> Client {
        let mut client = Client::connect(self.address, &secret(user), 1).unwrap();
        client.set_read_timeout(Some(RECEIVE_TIMEOUT)).unwrap();
        client
    }

    /// Logs user `user` on again after a disconnect. The server notices a dropped connection
    /// asynchronously, so a logon racing it is refused with `DuplicateSession`: retry for a while.
    pub fn reconnect(&self, user: u64, next_expected_sequence: u64) -> Client {
        let deadline = Instant::now() + RECEIVE_TIMEOUT;
        loop {
            match Client::connect(self.address, &secret(user), next_expected_sequence) {
                Ok(mut client) => {
                    client.set_read_timeout(Some(RECEIVE_TIMEOUT)).unwrap();
                    return client;
                }
                Err(ClientError::Protocol(message))
                    if message.contains("DuplicateSession") && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => panic!("reconnect of user {user} failed: {error}"),
            }
        }
    }

    pub fn gateway(&self) -> &BinaryGateway {
        self.gateway.as_ref().unwrap()
    }

    /// Open connections according to the gateway's counters.
    pub fn connections(&self) -> u64 {
        self.gateway().stats().connections.load(Ordering::Relaxed)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown();
        }
        drop(self.engine.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Polls `condition` every few milliseconds until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A GTC limit on BTC_USDC (market 1).
pub fn limit(side: Side, price: u64, lots: u64, client_order_id: u64) -> Command {
    commands::limit(0, 1, side, price, lots, TimeInForce::Gtc, client_order_id)
}

/// The `NewOrder` block of a command built by [`limit`].
pub fn new_order(side: Side, price: u64, lots: u64, client_order_id: u64) -> NewOrder {
    let Command::NewOrder(order) = limit(side, price, lots, client_order_id) else { unreachable!() };
    order
}

/// An SBE message (header + `block`) with an arbitrary header.
pub fn message(template_id: u16, block_length: u16, schema_id: u16, block: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + block.len());
    for field in [block_length, template_id, schema_id, SCHEMA_VERSION] {
        bytes.extend_from_slice(&field.to_le_bytes());
    }
    bytes.extend_from_slice(block);
    bytes
}

/// Whether a message is an application message of the server (numbered in the session).
pub fn is_application(incoming: &Incoming) -> bool {
    matches!(incoming, Incoming::Event(_) | Incoming::Session(Session::BusinessReject(_)))
}

pub fn event(incoming: Incoming) -> Event {
    match incoming {
        Incoming::Event(event) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

pub fn business_reject(incoming: Incoming) -> BusinessReject {
    match incoming {
        Incoming::Session(Session::BusinessReject(reject)) => reject,
        other => panic!("expected a BusinessReject, got {other:?}"),
    }
}

pub fn accepted(incoming: Incoming) -> OrderAccepted {
    match event(incoming) {
        Event::OrderAccepted(accepted) => accepted,
        other => panic!("expected OrderAccepted, got {other:?}"),
    }
}

/// The next message that is not a heartbeat; fails on a Terminate.
pub fn next(client: &mut Client) -> Incoming {
    client.receive_application().unwrap_or_else(|error| panic!("while waiting for a message: {error}"))
}

/// A connection driven by hand: frames anything, decodes what comes back, notices the close.
pub struct Raw {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl Raw {
    pub fn connect(address: SocketAddr) -> Self {
        let stream = TcpStream::connect(address).unwrap();
        Self::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Self {
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(RECEIVE_TIMEOUT)).unwrap();
        Self { stream, buffer: Vec::new() }
    }

    /// Writes bytes as they are (no framing). Errors are returned: the server may have closed.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Frames `message` with a SOFH and sends it.
    pub fn send(&mut self, message: &[u8]) {
        let mut frame = vec![0; frame_length(message.len())];
        encode_frame(message, &mut frame).unwrap();
        self.write(&frame).unwrap();
    }

    pub fn send_session(&mut self, message: Session) {
        self.send(&message.to_vec());
    }

    pub fn send_command(&mut self, command: &Command) {
        self.send(&command.to_vec());
    }

    /// The next message, or `None` once the server closed the connection (EOF or reset).
    /// Panics on a timeout or on bytes that are not a valid server message.
    pub fn receive(&mut self) -> Option<Incoming> {
        loop {
            if let Some((message, used)) = FrameDecoder::next_frame(&self.buffer).expect("server framing") {
                let incoming = match Event::decode(message) {
                    Ok((event, _)) => Incoming::Event(event),
                    Err(_) => Incoming::Session(Session::decode(message).expect("a server message").0),
                };
                self.buffer.drain(..used);
                return Some(incoming);
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    assert!(self.buffer.is_empty(), "connection closed inside a frame");
                    return None;
                }
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == io::ErrorKind::ConnectionReset => return None,
                Err(error) => panic!("receive: {error}"),
            }
        }
    }

    /// Reads until a `Terminate`, returning the messages before it (heartbeats excluded) and its
    /// reason; then checks that the server closed the connection.
    pub fn until_terminate(&mut self) -> (Vec<Incoming>, TerminateReason) {
        let mut before = Vec::new();
        loop {
            match self.receive() {
                Some(Incoming::Session(Session::Terminate(terminate))) => {
                    let reason = terminate.reason.get().expect("a known terminate reason");
                    self.assert_closed();
                    return (before, reason);
                }
                Some(Incoming::Session(Session::SequenceHeartbeat(_))) => {}
                Some(other) => before.push(other),
                None => panic!("connection closed without a Terminate after {before:?}"),
            }
        }
    }

    /// Expects a `Terminate` as the next message (heartbeats aside) and the close after it.
    pub fn expect_terminate(&mut self) -> TerminateReason {
        let (before, reason) = self.until_terminate();
        assert!(before.is_empty(), "messages before the Terminate({reason:?}): {before:?}");
        reason
    }

    /// Asserts that the server closed the connection (nothing more arrives).
    pub fn assert_closed(&mut self) {
        if let Some(extra) = self.receive() {
            panic!("expected the connection to be closed, got {extra:?}");
        }
    }

    /// Sends `Negotiate` and returns the server nonce (panics on anything else).
    pub fn negotiate(&mut self, api_key: PublicKey) -> [u8; 32] {
        self.send_session(Session::Negotiate(Negotiate { api_key, timestamp_ns: TimestampNs::ZERO }));
        match self.receive() {
            Some(Incoming::Session(Session::NegotiateResponse(response))) => response.server_nonce.0,
            other => panic!("expected NegotiateResponse, got {other:?}"),
        }
    }

    /// Sends `Establish` with the given signature.
    pub fn establish(&mut self, signature: [u8; 64], keep_alive_ms: u32) {
        self.send_session(Session::Establish(Establish {
            signature: FixedBytes(signature),
            next_expected_sequence: Sequence::new(1),
            keep_alive_ms: keep_alive_ms.into(),
            reserved: Reserved::ZERO,
        }));
    }

    /// A full, correct logon.
    pub fn logon(address: SocketAddr, secret: &[u8; 32], keep_alive_ms: u32) -> (Self, EstablishAck) {
        let mut raw = Self::connect(address);
        let ack = raw.logon_on(secret, keep_alive_ms);
        (raw, ack)
    }

    /// A full, correct logon on this connection.
    pub fn logon_on(&mut self, secret: &[u8; 32], keep_alive_ms: u32) -> EstablishAck {
        let api_key = api_key_of(secret);
        let nonce = self.negotiate(api_key);
        self.establish(sign(secret, &logon_payload(&nonce, &api_key)), keep_alive_ms);
        match self.receive() {
            Some(Incoming::Session(Session::EstablishAck(ack))) => ack,
            other => panic!("expected EstablishAck, got {other:?}"),
        }
    }
}

/// An Ed25519 signature of `payload` with the seed `secret`.
pub fn sign(secret: &[u8; 32], payload: &[u8]) -> [u8; 64] {
    ed25519_dalek::SigningKey::from_bytes(secret).sign(payload).to_bytes()
}
