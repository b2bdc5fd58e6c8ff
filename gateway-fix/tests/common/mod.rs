//! Test harness: a real FIX gateway on a loopback port in front of a real engine loop (pop the
//! ingress ring, execute, publish every event with its origin), and a scripted FIX client that
//! writes raw tag=value messages and reads the answers with the crate's parser.
//!
//! The gateway serves its sockets as `GATEWAY_FIX_IO` says (`tokio`, the default, or `thread`):
//! every test file runs against both modes (scripts/test runs the suite once per mode).

#![allow(dead_code)]

use base64::Engine as _;
use codec::UserId;
use ed25519_dalek::Signer;
use engine::bus::{BroadcastRing, IngressRing};
use engine::testkit::{EngineLoop, commands};
use engine::{CommandContext, Engine, EngineConfig};
use gateway_fix::encoder::{checksum, time};
use gateway_fix::parser::{Parsed, parse};
use gateway_fix::{FixGateway, GatewayConfig, IoMode, SessionConfig, logon_payload};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a test waits for any one message before failing.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The gateway's CompID.
pub const GATEWAY: &str = "EXCH";

/// Ed25519 seed of session `n`'s user.
pub fn secret(n: u64) -> [u8; 32] {
    [(n + 100) as u8; 32]
}

/// The client's CompID of session `n`.
pub fn client_id(n: u64) -> String {
    format!("CLIENT{n}")
}

fn unique_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("gateway-fix-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The I/O mode under test: `GATEWAY_FIX_IO=thread` for [`IoMode::Thread`], else tokio.
pub fn io_mode() -> IoMode {
    match std::env::var("GATEWAY_FIX_IO").as_deref() {
        Ok("thread") => IoMode::Thread,
        Ok("tokio") | Err(_) => IoMode::Tokio,
        Ok(other) => panic!("GATEWAY_FIX_IO={other}: expected tokio or thread"),
    }
}

pub struct Harness {
    pub address: SocketAddr,
    pub store_dir: PathBuf,
    users: u64,
    config: GatewayConfig,
    ingress: Arc<IngressRing>,
    egress: Arc<BroadcastRing>,
    gateway: Option<FixGateway>,
    engine: Option<EngineLoop>,
    runtime: Option<tokio::runtime::Runtime>,
}

fn sessions(users: u64) -> Vec<SessionConfig> {
    (1..=users)
        .map(|n| SessionConfig {
            sender_comp_id: client_id(n),
            target_comp_id: GATEWAY.into(),
            user_id: UserId::new(n),
            public_key: ed25519_dalek::SigningKey::from_bytes(&secret(n)).verifying_key().to_bytes(),
        })
        .collect()
}

impl Harness {
    /// Sessions 1..=users (user n, funded with BTC and USDC).
    pub fn start(users: u64, configure: impl FnOnce(&mut GatewayConfig)) -> Self {
        Self::start_with_engine(users, configure, |_| {})
    }

    /// [`Self::start`] with the engine's configuration changed by `engine` first.
    pub fn start_with_engine(
        users: u64,
        configure: impl FnOnce(&mut GatewayConfig),
        engine: impl FnOnce(&mut EngineConfig),
    ) -> Self {
        let mut config = GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            store_dir: unique_dir(),
            io: io_mode(),
            ..GatewayConfig::default()
        };
        configure(&mut config);
        let ingress = Arc::new(IngressRing::new(1024));
        let egress = BroadcastRing::new(1 << 14);
        let mut engine_config = EngineConfig::sample();
        engine_config.limits.orders_per_market_max = 4096;
        engine(&mut engine_config);
        let mut engine = Engine::new(&engine_config).unwrap();
        let mut events = Vec::new();
        let mut sequence = 0;
        for user in 1..=users {
            for (asset, amount) in [(0, 100_000_000), (1, 10_000_000_000)] {
                sequence += 1;
                engine.execute(CommandContext::new(sequence, 0), &commands::deposit(user, asset, amount), &mut events);
            }
        }
        let engine_loop = EngineLoop::start(engine, sequence, ingress.clone(), egress.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let mut harness = Self {
            address: "127.0.0.1:0".parse().unwrap(),
            store_dir: config.store_dir.clone(),
            users,
            config,
            ingress,
            egress,
            gateway: None,
            engine: Some(engine_loop),
            runtime: Some(runtime),
        };
        harness.start_gateway();
        harness
    }

    fn start_gateway(&mut self) {
        let runtime = self.runtime.as_ref().unwrap();
        let gateway = runtime
            .block_on(FixGateway::start(
                self.config.clone(),
                sessions(self.users),
                &EngineConfig::sample(),
                self.ingress.clone(),
                &self.egress,
            ))
            .unwrap();
        self.address = gateway.local_addr();
        self.gateway = Some(gateway);
    }

    /// Stops the gateway and starts a new one on the same store (a new port).
    pub fn restart_gateway(&mut self) {
        self.restart_gateway_after(|_| {});
    }

    /// Like [`Harness::restart_gateway`], running `between` on the store directory while no
    /// gateway runs.
    pub fn restart_gateway_after(&mut self, between: impl FnOnce(&std::path::Path)) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown();
        }
        between(&self.store_dir);
        self.start_gateway();
    }

    /// Stops the gateway (as the server does at exit); it is not started again.
    pub fn shutdown_gateway(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown();
        }
    }

    pub fn gateway(&self) -> &FixGateway {
        self.gateway.as_ref().unwrap()
    }

    pub fn stat(&self, read: impl Fn(&gateway_fix::GatewayStats) -> &AtomicU64) -> u64 {
        read(&self.gateway().stats()).load(Ordering::Relaxed)
    }

    /// A connected, logged-on client of session `n` (sequence numbers reset).
    pub fn client(&self, n: u64) -> Fix {
        let mut fix = Fix::connect(self.address, n);
        let logon = fix.logon(30, true);
        assert_eq!(logon.msg_type(), "A", "{logon:?}");
        fix
    }

    /// A connected, logged-on FIXT.1.1 client of session `n` (sequence numbers reset).
    pub fn client_fixt(&self, n: u64) -> Fix {
        let mut fix = Fix::connect_fixt(self.address, n);
        let logon = fix.logon(30, true);
        assert_eq!((logon.msg_type(), logon.at(8), logon.at(1137)), ("A", FIXT, "9"), "{logon:?}");
        fix
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
        let _ = std::fs::remove_dir_all(&self.store_dir);
    }
}

/// A received message, owned.
#[derive(Clone, PartialEq, Eq)]
pub struct Msg {
    pub fields: Vec<(u32, String)>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (tag, value) in &self.fields {
            write!(f, "{tag}={value}|")?;
        }
        Ok(())
    }
}

impl Msg {
    pub fn get(&self, tag: u32) -> Option<&str> {
        self.fields.iter().find(|(t, _)| *t == tag).map(|(_, v)| v.as_str())
    }

    /// The value of `tag`, which must be present.
    pub fn at(&self, tag: u32) -> &str {
        self.get(tag).unwrap_or_else(|| panic!("tag {tag} missing in {self:?}"))
    }

    pub fn msg_type(&self) -> &str {
        self.at(35)
    }

    pub fn seq(&self) -> u64 {
        self.at(34).parse().unwrap()
    }
}

/// Frames `fields` (everything from MsgType on) with BeginString FIX.4.4, BodyLength and CheckSum.
pub fn frame(fields: &[(u32, String)]) -> Vec<u8> {
    frame_with(FIX44, fields)
}

/// BeginStrings.
pub const FIX44: &str = "FIX.4.4";
/// FIXT 1.1 (with FIX 5.0 SP2 application messages).
pub const FIXT: &str = "FIXT.1.1";

/// Frames `fields` with BeginString `begin`.
pub fn frame_with(begin: &str, fields: &[(u32, String)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (tag, value) in fields {
        body.extend_from_slice(format!("{tag}={value}\x01").as_bytes());
    }
    let mut message = format!("8={begin}\x019={}\x01", body.len()).into_bytes();
    message.extend_from_slice(&body);
    let sum = checksum(&message);
    message.extend_from_slice(format!("10={sum:03}\x01").as_bytes());
    message
}

pub fn now() -> String {
    String::from_utf8(time::format(time::now_ms()).to_vec()).unwrap()
}

/// A scripted FIX client over a raw TCP connection.
pub struct Fix {
    pub stream: TcpStream,
    buffer: Vec<u8>,
    pub session: u64,
    pub sender: String,
    pub next_seq: u64,
    /// BeginString of what this client writes (and, for FIXT.1.1, its Logon carries 1137=9).
    pub begin: &'static str,
}

impl Fix {
    pub fn connect(address: SocketAddr, session: u64) -> Self {
        let stream = TcpStream::connect(address).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(RECEIVE_TIMEOUT)).unwrap();
        Self { stream, buffer: Vec::new(), session, sender: client_id(session), next_seq: 1, begin: FIX44 }
    }

    /// A client that speaks FIXT.1.1 / FIX 5.0 SP2.
    pub fn connect_fixt(address: SocketAddr, session: u64) -> Self {
        Self { begin: FIXT, ..Self::connect(address, session) }
    }

    /// Standard header fields for a message with `seq`.
    pub fn header(&self, msg_type: &str, seq: u64) -> Vec<(u32, String)> {
        vec![
            (35, msg_type.to_string()),
            (49, self.sender.clone()),
            (56, GATEWAY.to_string()),
            (34, seq.to_string()),
            (52, now()),
        ]
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a message with the next sequence number and the given body fields.
    pub fn send(&mut self, msg_type: &str, body: &[(u32, &str)]) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.send_with_seq(msg_type, seq, body);
    }

    pub fn send_with_seq(&mut self, msg_type: &str, seq: u64, body: &[(u32, &str)]) {
        let mut fields = self.header(msg_type, seq);
        fields.extend(body.iter().map(|(t, v)| (*t, v.to_string())));
        let bytes = self.frame(&fields);
        self.write(&bytes).unwrap();
    }

    /// Frames `fields` in this client's BeginString.
    pub fn frame(&self, fields: &[(u32, String)]) -> Vec<u8> {
        frame_with(self.begin, fields)
    }

    /// Logon fields, signed.
    pub fn logon_fields(&self, seq: u64, heartbeat: u32, reset: bool, key_of: u64) -> Vec<(u32, String)> {
        let mut fields = self.header("A", seq);
        let sending_time = fields[4].1.clone();
        let payload = logon_payload(
            sending_time.as_bytes(),
            seq.to_string().as_bytes(),
            self.sender.as_bytes(),
            GATEWAY.as_bytes(),
        );
        let key = ed25519_dalek::SigningKey::from_bytes(&secret(key_of));
        let b64 = base64::engine::general_purpose::STANDARD;
        fields.push((98, "0".into()));
        fields.push((108, heartbeat.to_string()));
        if self.begin == FIXT {
            fields.push((1137, "9".into()));
        }
        if reset {
            fields.push((141, "Y".into()));
        }
        fields.push((553, b64.encode(key.verifying_key().to_bytes())));
        fields.push((554, b64.encode(key.sign(&payload).to_bytes())));
        fields
    }

    /// Sends a Logon (resetting sequence numbers if `reset`) and returns the answer.
    pub fn logon(&mut self, heartbeat: u32, reset: bool) -> Msg {
        if reset {
            self.next_seq = 1;
        }
        let fields = self.logon_fields(self.next_seq, heartbeat, reset, self.session);
        self.next_seq += 1;
        let bytes = self.frame(&fields);
        self.write(&bytes).unwrap();
        self.receive().expect("an answer to the logon")
    }

    /// The next message, or `None` once the server closed the connection.
    pub fn receive(&mut self) -> Option<Msg> {
        loop {
            match parse(&self.buffer) {
                Parsed::Complete(message, used) => {
                    let fields = message.fields().map(|(t, v)| (t, String::from_utf8_lossy(v).into_owned())).collect();
                    self.buffer.drain(..used);
                    return Some(Msg { fields });
                }
                Parsed::Garbled(_) => panic!("the server sent a garbled message: {:?}", self.buffer),
                Parsed::Incomplete => {}
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == io::ErrorKind::ConnectionReset => return None,
                Err(error) => panic!("receive: {error}"),
            }
        }
    }

    /// The next message that is not a Heartbeat.
    pub fn next(&mut self) -> Msg {
        loop {
            let message = self.receive().expect("a message, not a close");
            if message.msg_type() != "0" {
                return message;
            }
        }
    }

    /// The next non-heartbeat message, which must be of `msg_type`.
    pub fn expect(&mut self, msg_type: &str) -> Msg {
        loop {
            let message = self.receive().expect("a message, not a close");
            if message.msg_type() == msg_type {
                return message;
            }
            assert_eq!(message.msg_type(), "0", "expected {msg_type}, got {message:?}");
        }
    }

    /// Expects a Logout (returning its text) and then the close.
    pub fn expect_logout(&mut self) -> String {
        let logout = self.expect("5");
        self.assert_closed();
        logout.get(58).unwrap_or_default().to_string()
    }

    pub fn assert_closed(&mut self) {
        if let Some(extra) = self.receive() {
            panic!("expected the connection to be closed, got {extra:?}");
        }
    }

    /// Asserts that nothing but heartbeats arrives within `quiet`.
    pub fn assert_silent(&mut self, quiet: Duration) {
        self.stream.set_read_timeout(Some(quiet)).unwrap();
        let deadline = Instant::now() + quiet;
        while Instant::now() < deadline {
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("closed"),
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
                Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                Err(error) => panic!("{error}"),
            }
            while let Parsed::Complete(message, used) = parse(&self.buffer) {
                assert_eq!(message.msg_type(), b"0", "expected silence, got {message:?}");
                self.buffer.drain(..used);
            }
        }
        self.stream.set_read_timeout(Some(RECEIVE_TIMEOUT)).unwrap();
    }

    /// A limit NewOrderSingle on BTC_USDC.
    pub fn limit(&mut self, cl_ord_id: &str, side: &str, price: &str, quantity: &str) {
        self.send(
            "D",
            &[(11, cl_ord_id), (55, "BTC_USDC"), (54, side), (60, &now()), (38, quantity), (40, "2"), (44, price)],
        );
    }
}
