//! Code shared by the integration tests that run the real server binary: start it on ephemeral
//! ports and read the bound ports from its log, plain HTTP/1.1 requests over a `TcpStream`, and
//! Backpack-style Ed25519 request signing, reading `--print-acks` acknowledgements, and (in `fix`)
//! a minimal FIX client.
//!
//! Each test file is its own crate that includes this module with `mod support;` and uses only
//! part of it, so unused items are expected there: hence the `allow(dead_code)` (clippy runs with
//! `-D warnings`).
#![allow(dead_code)]

pub mod cluster;
pub mod fix;
pub mod process;
pub mod replica;

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// The server binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_exchange");

/// The log line the server writes once its HTTP listener is bound.
pub const HTTP_LISTENING: &str = "HTTP listening";
/// The log line the SBE (binary) gateway writes once bound.
pub const SBE_LISTENING: &str = "binary gateway listening";
/// The log line the FIX gateway writes once bound.
pub const FIX_LISTENING: &str = "FIX gateway listening";

/// A fresh (emptied) data directory for one test: `<tmp>/exchange-<name>-<pid>`.
pub fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("exchange-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `exchange --data <dir> --http-port 0 --sbe-port 0 --fix-port 0`: the server binary on a data
/// directory with every listener on an ephemeral port; add the remaining arguments.
pub fn command(dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command.args(["--data", dir.to_str().unwrap(), "--http-port", "0", "--sbe-port", "0", "--fix-port", "0"]);
    // The sinks are on only where a test says so (its config, or its `env`), never by inheritance.
    command.env_remove("DATABASE_URL").env_remove("KAFKA_BROKERS").env_remove("REDIS_URL");
    command
}

/// A running server binary on ephemeral ports; killed (SIGKILL) and reaped when dropped.
pub struct Server {
    child: Option<Child>,
    dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    wait_for: Vec<String>,
    remove_dir: bool,
    /// The bound HTTP port.
    pub http: u16,
    /// The bound SBE port, if its "listening" line was awaited.
    pub sbe: Option<u16>,
    /// The bound FIX port, if its "listening" line was awaited.
    pub fix: Option<u16>,
}

impl Server {
    /// Starts `exchange --data <dir> --http-port 0 --sbe-port 0 --fix-port 0 <args>` with `env`
    /// and waits until it logs that HTTP is listening.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_waiting_for(dir, args, env, &[HTTP_LISTENING])
    }

    /// Like [`Server::start`], but waits until a log line containing each of `wait_for` has been
    /// written; the port of [`HTTP_LISTENING`], [`SBE_LISTENING`] and [`FIX_LISTENING`] is read
    /// from its `listen=IP:PORT`, other markers are only waited for.
    pub fn start_waiting_for(dir: &Path, args: &[&str], env: &[(&str, &str)], wait_for: &[&str]) -> Self {
        let mut server = Self {
            child: None,
            dir: dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            wait_for: wait_for.iter().map(|w| w.to_string()).collect(),
            remove_dir: false,
            http: 0,
            sbe: None,
            fix: None,
        };
        server.spawn();
        server
    }

    /// Removes the data directory when the server is dropped (after it was killed).
    pub fn remove_dir_on_drop(mut self) -> Self {
        self.remove_dir = true;
        self
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id of the server.
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// The SBE port (panics unless its "listening" line was awaited).
    pub fn sbe_port(&self) -> u16 {
        self.sbe.expect("the SBE gateway's listening line was awaited")
    }

    /// The FIX port (panics unless its "listening" line was awaited).
    pub fn fix_port(&self) -> u16 {
        self.fix.expect("the FIX gateway's listening line was awaited")
    }

    /// `kill -9` and reap the server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `kill -9` the server and start it again on the same data directory, arguments and
    /// environment (the ports change).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Waits up to `timeout` for the server to exit on its own (e.g. `--run-for`); its status.
    pub fn wait(&mut self, timeout: std::time::Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("the server runs");
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "the server did not stop within {timeout:?}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM (a clean shutdown) and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the server runs");
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        child.wait().unwrap()
    }

    fn spawn(&mut self) {
        let mut child = command(&self.dir)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut pending = self.wait_for.clone();
        let mut line = String::new();
        while !pending.is_empty() {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "server exited before it was ready: waiting for {pending:?}"
            );
            let Some(index) = pending.iter().position(|marker| line.contains(marker.as_str())) else { continue };
            let marker = pending.remove(index);
            let port = || {
                let address = line.split("listen=").nth(1).unwrap_or_else(|| panic!("no listen= in {line}"));
                address.split_whitespace().next().unwrap().rsplit(':').next().unwrap().parse::<u16>().unwrap()
            };
            match marker.as_str() {
                HTTP_LISTENING => self.http = port(),
                SBE_LISTENING => self.sbe = Some(port()),
                FIX_LISTENING => self.fix = Some(port()),
                _ => {} // a readiness line without an address
            }
        }
        // Keep draining the log so the server never blocks on a full pipe; kept in a file under
        // `EXCHANGE_TEST_LOG_DIR` when set, to see what a failing test's server said.
        let kept = std::env::var_os("EXCHANGE_TEST_LOG_DIR").and_then(|dir| {
            let name = format!("server-{}-{}.log", std::process::id(), child.id());
            std::fs::create_dir_all(&dir).and_then(|()| std::fs::File::create(Path::new(&dir).join(name))).ok()
        });
        let log: Box<dyn std::io::Write + Send> = match kept {
            Some(file) => Box::new(file),
            None => Box::new(std::io::sink()),
        };
        std::thread::spawn(move || {
            let mut log = log;
            std::io::copy(&mut stderr, &mut log)
        });
        self.child = Some(child);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One HTTP/1.1 response, as received.
pub struct Response {
    /// The whole response: status line, headers and body.
    pub raw: String,
}

impl Response {
    /// The status code (0 if there was no status line).
    pub fn status(&self) -> u16 {
        self.raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    /// The status line and headers (everything when there is no blank line).
    pub fn head(&self) -> &str {
        self.raw.split_once("\r\n\r\n").map_or(&self.raw, |(head, _)| head)
    }

    /// The body (empty when there is no blank line).
    pub fn body(&self) -> &str {
        self.raw.split_once("\r\n\r\n").map_or("", |(_, body)| body)
    }

    /// The body as JSON; panics with the whole response (and `context`) if it is not JSON.
    pub fn json(&self, context: &str) -> Value {
        serde_json::from_str(self.body()).unwrap_or_else(|e| panic!("{context}: {e}: {}", self.raw))
    }
}

/// One HTTP/1.1 request to `127.0.0.1:port` with `Connection: close`. `headers` are complete
/// header lines (`"Name: value\r\n"`) sent after `Host`; a read error (the server may close early,
/// e.g. on an oversized body) keeps what was received.
pub fn request(port: u16, method: &str, path: &str, headers: &str, body: &str) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    Response { raw }
}

/// The Content-Type header line of the JSON API tests.
pub const JSON: &str = "Content-Type: application/json; charset=utf-8\r\n";

/// Backpack signature headers of `secret` over `signed` (`instruction=..` and the sorted `&k=v`
/// parameters) followed by `&timestamp=<now ms>&window=5000`, as `(name, value)` pairs.
pub fn signature(secret: &[u8; 32], signed: &str) -> Vec<(&'static str, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = SigningKey::from_bytes(secret);
    let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let text = format!("{signed}&timestamp={timestamp}&window=5000");
    vec![
        ("X-API-Key", b64.encode(key.verifying_key().to_bytes())),
        ("X-Signature", b64.encode(key.sign(text.as_bytes()).to_bytes())),
        ("X-Timestamp", timestamp.to_string()),
        ("X-Window", "5000".to_string()),
    ]
}

/// [`signature`] as header lines for [`request`].
pub fn signature_lines(secret: &[u8; 32], signed: &str) -> String {
    header_lines(&signature(secret, signed))
}

/// `(name, value)` pairs as header lines for [`request`].
pub fn header_lines(headers: &[(&str, String)]) -> String {
    headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect()
}

/// The values of the test-service variables `names` (set by `source scripts/services`:
/// `EXCHANGE_TEST_DATABASE_URL`, `EXCHANGE_TEST_REDIS_URL`, `EXCHANGE_TEST_KAFKA_BROKERS`,
/// `EXCHANGE_SERVICES_CTL`), in order; `None` with a loud SKIPPED line when one is missing, and a
/// failure instead under `EXCHANGE_REQUIRE_SERVICES=1` (scripts/test), so a test that needs a
/// real service can never pass by not running.
pub fn services<const N: usize>(names: [&str; N]) -> Option<[String; N]> {
    let values = names.map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
    if values.iter().all(Option::is_some) {
        return Some(values.map(Option::unwrap_or_default));
    }
    assert!(
        std::env::var("EXCHANGE_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{names:?} must be set under EXCHANGE_REQUIRE_SERVICES=1: scripts/test starts the services"
    );
    eprintln!("\n!!! SKIPPED: {names:?} not set. Run `source scripts/services` first (scripts/test does). !!!\n");
    None
}

/// Creates the database `name` (dropping an older one) on the Postgres server of `url`; returns
/// the URL of the new database.
#[cfg(feature = "sinks")]
pub fn fresh_database(url: &str, name: &str) -> String {
    use sinks::sqlx;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let queries = sinks::postgres::Queries::connect(url).await.unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(queries.pool()).await;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(queries.pool()).await.unwrap();
    });
    format!("{}/{name}", url.rsplit_once('/').unwrap().0)
}

/// A book as `price → quantity` strings: asks, bids.
pub type DepthBook = (std::collections::BTreeMap<String, String>, std::collections::BTreeMap<String, String>);

/// Applies REST depth (`asks`/`bids`) or a depth diff or snapshot frame (`a`/`b`) to `book`; a
/// zero quantity removes the level.
pub fn apply_depth(book: &mut DepthBook, data: &Value) {
    for (keys, side) in [(["a", "asks"], &mut book.0), (["b", "bids"], &mut book.1)] {
        for key in keys {
            for level in data[key].as_array().into_iter().flatten() {
                let (price, quantity) = (level[0].as_str().unwrap(), level[1].as_str().unwrap());
                if quantity.trim_end_matches('0').trim_end_matches('.').is_empty() {
                    side.remove(price);
                } else {
                    side.insert(price.into(), quantity.into());
                }
            }
        }
    }
}

/// Spawns `command` with `--print-acks` appended (stdout piped, stderr discarded) and a thread
/// that forwards every `ACKED <n>` line's sequence to the returned channel until stdout closes.
pub fn spawn_with_acks(command: &mut Command) -> (Child, std::sync::mpsc::Receiver<u64>, std::thread::JoinHandle<()>) {
    let mut child = command.arg("--print-acks").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, acks) = std::sync::mpsc::channel::<u64>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(sequence) = line.strip_prefix("ACKED ").and_then(|n| n.parse().ok()) {
                let _ = sender.send(sequence);
            }
        }
    });
    (child, acks, reader)
}
