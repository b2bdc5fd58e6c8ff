//! The cluster tests' harness: `exchange standby` node processes whose output the test reads
//! line by line (restarted the way a supervisor would when they exit deposed), and the test's own
//! replay of the authoritative log.
//!
//! Each cluster test has its own [`NodeLine`] type (what it waits for in a node's output) and
//! adds its own waits (`impl Node<Line>`) on top of [`Node::wait_for`].

use codec::{Command, Event};
use engine::{CommandContext, Engine};
use exchange::cluster::log::{ClusterError, Followed, LogFollower};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

/// How long anything a node is expected to do may take (debug build, shared machine).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The exit code of a deposed primary (`runtime::FENCED_EXIT_CODE`).
pub const DEPOSED_EXIT_CODE: i32 = exchange::runtime::FENCED_EXIT_CODE;

/// Restarts the test made as a supervisor: a node exited on its own with the deposed code.
pub static SUPERVISED_RESTARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A node exited on its own with `code`: counted if it is the deposed code (fenced or lease lost
/// while primary, which a supervisor answers with a restart), a failure otherwise.
pub fn supervised_exit(name: &str, code: Option<i32>) {
    assert_eq!(code, Some(DEPOSED_EXIT_CODE), "node {name} exited with {code:?}, not the deposed code");
    let restarts = SUPERVISED_RESTARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    eprintln!("node {name} exited deposed (code {DEPOSED_EXIT_CODE}): restarted as a standby ({restarts} so far)");
}

/// Deposed exits the test answered so far ([`SUPERVISED_RESTARTS`]).
pub fn supervised_restarts() -> usize {
    SUPERVISED_RESTARTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// What a node's output says, as one cluster test needs it.
pub trait NodeLine: Sized + Send + 'static {
    /// Promoted at this sequence with this state hash (`PROMOTED` on stdout).
    fn promoted(sequence: u64, hash: String) -> Self;
    /// The node lost the lease before serving and follows the log again (`DEMOTED` on stdout).
    fn demoted() -> Self;
    /// What a line of the node's log (stderr) says, if it is something the test waits for (it
    /// may also just record the line).
    fn from_log(line: String) -> Option<Self>;
}

/// One `exchange standby` process (primary once it holds the lease). Its log goes to
/// `<dir>.<pid>.log`.
pub struct Node<L> {
    pub name: &'static str,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub lines: Receiver<L>,
}

impl<L: NodeLine> Node<L> {
    pub fn start(name: &'static str, dir: &Path, config: &Path) -> Self {
        let (sender, lines) = std::sync::mpsc::channel();
        let mut node = Self { name, dir: dir.to_path_buf(), config: config.to_path_buf(), child: None, lines };
        node.spawn(sender);
        node
    }

    fn spawn(&mut self, sender: Sender<L>) {
        let mut command = super::command(&self.dir);
        command
            .args(["--config", self.config.to_str().unwrap(), "standby", "--demo", "--demo-orders", "16"])
            .args(["--status-every", "0", "--print-acks"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let out = sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("PROMOTED ") {
                    let mut fields = rest.split(' ');
                    let sequence = fields.next().unwrap().parse().unwrap();
                    let _ = out.send(L::promoted(sequence, fields.next().unwrap().to_string()));
                } else if line == "DEMOTED" {
                    let _ = out.send(L::demoted());
                }
            }
        });
        let log_path = self.dir.with_extension(format!("{}.log", child.id()));
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(log_path).unwrap();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if let Some(said) = L::from_log(line) {
                    let _ = sender.send(said);
                }
            }
        });
        self.child = Some(child);
    }

    /// Kills (SIGKILL) and starts the node again on its data directory, as a standby.
    pub fn restart(&mut self) {
        self.kill();
        let (sender, lines) = std::sync::mpsc::channel();
        self.lines = lines;
        self.spawn(sender);
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(std::process::Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }

    /// Waits for the next line `pick` accepts (others are dropped). If the process exits with
    /// the deposed code meanwhile, the test does what a supervisor does: it restarts the node as
    /// a standby (counted) and goes on waiting; any other exit fails the test.
    pub fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(L) -> Option<T>) -> T {
        let mut deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(value) = pick(line) {
                        return value;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let state = self.diagnose();
                    panic!("node {}: no {what} within {PATIENCE:?}\n{state}", self.name)
                }
                // Its output closed: the process exited (its log, `<dir>.<pid>.log`, says why).
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let mut child = self.child.take().expect("a node waited for runs");
                    let code = child.wait().unwrap().code();
                    supervised_exit(self.name, code);
                    let (sender, lines) = std::sync::mpsc::channel();
                    self.lines = lines;
                    self.spawn(sender);
                    deadline = Instant::now() + PATIENCE;
                }
            }
        }
    }
    /// The state of a node the test waited for in vain: its process (alive or not, its kernel
    /// state and where each thread waits) and the end of its log.
    pub fn diagnose(&mut self) -> String {
        let Some(child) = self.child.as_mut() else { return "no process".into() };
        let pid = child.id();
        let mut report = format!("pid {pid}, data {}\n", self.dir.display());
        match child.try_wait() {
            Ok(Some(status)) => report += &format!("exited: {status}\n"),
            _ => {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                report += &status.lines().filter(|l| l.starts_with("State")).collect::<Vec<_>>().join("\n");
                report += "\n";
                if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                    for task in tasks.flatten() {
                        let read = |f: &str| std::fs::read_to_string(task.path().join(f)).unwrap_or_default();
                        report += &format!("  thread {} wchan {}\n", read("comm").trim(), read("wchan").trim());
                    }
                }
            }
        }
        let log = std::fs::read_to_string(self.dir.with_extension(format!("{pid}.log"))).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        report += &format!("log ({} lines), last 30:\n", log.lines().count());
        for line in tail.iter().rev() {
            report += line;
            report += "\n";
        }
        report
    }

    /// Waits up to `timeout` for the process to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl<L> Node<L> {
    /// Kills (SIGKILL) and reaps the process, if it runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // It may have exited on its own (deposed, fenced or lease lost: a supervisor's
            // restart, which this planned restart stands for); any other exit is a failure.
            if let Ok(Some(status)) = child.try_wait() {
                supervised_exit(self.name, status.code());
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl<L> Drop for Node<L> {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A frozen process ignores SIGKILL until it is continued.
            let _ = std::process::Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
        }
        self.kill();
    }
}

/// The test's own copy of the authoritative log: every command, and an engine replaying them.
pub struct LogReplay {
    follower: LogFollower,
    /// (timestamp, command, gateway tag) of sequences 1.. (index = sequence - 1).
    pub commands: Vec<(u64, Command, Option<codec::GatewayTag>)>,
    engine: Engine,
    applied: u64,
    /// (market, trade id) of every fill of the replayed commands.
    pub trades: BTreeSet<(u32, u64)>,
}

impl LogReplay {
    /// A replay of the log `follower` reads, by `engine` (fresh, as the nodes start).
    pub fn new(follower: LogFollower, engine: Engine) -> Self {
        Self { follower, commands: Vec::new(), engine, applied: 0, trades: BTreeSet::new() }
    }

    /// Reads the log until it holds `sequence` (or, with `None`, until nothing more arrives for
    /// a while).
    pub fn read(&mut self, sequence: Option<u64>) {
        let deadline = Instant::now() + PATIENCE;
        let mut quiet_since = Instant::now();
        loop {
            let commands = &mut self.commands;
            let read = self
                .follower
                .poll::<ClusterError, _>(Duration::from_millis(50), &mut |followed| {
                    if let Followed::Command(record) = followed {
                        assert_eq!(record.sequence, commands.len() as u64 + 1);
                        let (command, gateway) = codec::decode_journaled(record.payload).unwrap();
                        commands.push((record.timestamp_ns, command, gateway));
                    }
                    Ok(())
                })
                .unwrap();
            if read > 0 {
                quiet_since = Instant::now();
            }
            let done = match sequence {
                Some(sequence) => self.commands.len() as u64 >= sequence,
                None => self.follower.at_end() && quiet_since.elapsed() > Duration::from_millis(500),
            };
            if done {
                return;
            }
            assert!(Instant::now() < deadline, "the log does not reach {sequence:?}");
        }
    }

    /// The state hash after replaying the log up to `sequence`.
    pub fn hash_at(&mut self, sequence: u64) -> String {
        self.read(Some(sequence));
        let mut events = Vec::new();
        while self.applied < sequence {
            let (timestamp_ns, command, gateway) = &self.commands[self.applied as usize];
            self.applied += 1;
            let context = CommandContext::new(self.applied, *timestamp_ns).with_gateway(*gateway);
            self.engine.execute(context, command, &mut events);
            for event in events.drain(..) {
                if let Event::Fill(fill) = event {
                    self.trades.insert((fill.market_id.get(), fill.trade_id.get()));
                }
            }
        }
        format!("{:#018x}", self.engine.state_hash())
    }

    /// Commands read so far (sequences 1..=this).
    pub fn read_len(&self) -> u64 {
        self.commands.len() as u64
    }

    /// The client order ids of the new orders up to `sequence`.
    pub fn client_ids_until(&self, sequence: u64) -> BTreeSet<u32> {
        self.commands[..sequence as usize]
            .iter()
            .filter_map(|(_, command, _)| match command {
                Command::NewOrder(order) => u32::try_from(order.client_order_id.get()).ok(),
                _ => None,
            })
            .collect()
    }

    /// The client order id of the new order at `sequence`, if it is one.
    pub fn client_order_id_at(&self, sequence: u64) -> Option<u64> {
        match self.commands.get(sequence as usize - 1) {
            Some((_, Command::NewOrder(order), _)) => Some(order.client_order_id.get()),
            _ => None,
        }
    }
}

/// The value at `fraction` (0.0..=1.0) of the way through `sorted`.
pub fn percentile(sorted: &[u64], fraction: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

/// A small deterministic generator (xorshift64), seeded from the environment or the clock.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}
