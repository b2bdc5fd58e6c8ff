//! The memory benchmark: how many bytes of the server's resident memory each resting order
//! costs, for the whole process (engine, market-data views, REST account views, gateway
//! dispatchers and sessions).
//!
//! [`run`] logs on `users` SBE sessions (load-test users of `exchange --load-users N`), reads the
//! server's resident set size (`VmRSS` of `/proc/<pid>/status`, so the server must run on this
//! machine), then places `orders` GTC bids far below any ask (on `levels` distinct prices per
//! market, so they rest and never trade), each session paced under its rate limit and waiting
//! for every acknowledgement of a window before sending the next. Once every order is
//! acknowledged it waits for the resident set to stop growing (the market-data publisher and the
//! REST views consume the engine's events on their own threads), reads it again and reports
//! `(after - before) / orders`.
//!
//! The engine allocates (and pre-faults) its order slots at start-up, so they are in the
//! "before" figure: the result is what the process adds per resting order on top of them.

use codec::{Event, Side, TimeInForce};
use engine::testkit::commands;
use gateway_binary::client::{Client, ClientError, Incoming};
use std::time::{Duration, Instant};

/// Orders a session sends before it waits for their acknowledgements (below the gateway's
/// default burst of 1,000, so a window never trips the throttle).
pub const WINDOW_ORDERS: usize = 500;
/// How often the resident set is sampled while waiting for it to settle.
const SETTLE_SAMPLE: Duration = Duration::from_millis(200);
/// Consecutive unchanged samples that count as settled.
const SETTLE_SAMPLES_STABLE: u32 = 5;
/// Longest wait for the resident set to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Read timeout while waiting for acknowledgements.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// What to fill.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// SBE gateway address.
    pub address: String,
    /// Process id of the server (its `/proc/<pid>/status` is read).
    pub pid: u32,
    /// Resting orders to place in all.
    pub orders: u64,
    /// Sessions (load-test users from `first_user`), orders split evenly between them.
    pub users: u64,
    /// First load-test user.
    pub first_user: u64,
    /// Markets the orders go to, round robin within each session.
    pub markets: Vec<u32>,
    /// Highest bid price, ticks (bids go from here down over `levels` prices).
    pub price_ticks: u64,
    /// Distinct prices per market.
    pub levels: u64,
    /// Quantity of each order, lots.
    pub lots: u64,
    /// Most orders per second per session (keep it under the gateway's `messages_per_second`).
    pub rate_per_session: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:9100".into(),
            pid: 0,
            orders: 1_000_000,
            users: 8,
            first_user: crate::users::LOAD_USER_FIRST,
            markets: vec![1],
            price_ticks: 100_000,
            levels: 1_000,
            lots: 20,
            rate_per_session: 9_000,
        }
    }
}

/// The measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReport {
    /// Orders placed and acknowledged as resting.
    pub orders: u64,
    /// Resident set before the first order, bytes.
    pub rss_before_bytes: u64,
    /// Resident set once settled after the last acknowledgement, bytes.
    pub rss_after_bytes: u64,
    /// Time to place and acknowledge every order.
    pub fill_time: Duration,
}

impl MemoryReport {
    /// `(after - before) / orders`, bytes (0 if the resident set shrank).
    pub fn rss_per_resting_order(&self) -> u64 {
        self.rss_after_bytes.saturating_sub(self.rss_before_bytes) / self.orders.max(1)
    }
}

impl std::fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "resting orders: {} (placed in {:.1} s)", self.orders, self.fill_time.as_secs_f64())?;
        writeln!(f, "rss before: {} bytes", self.rss_before_bytes)?;
        writeln!(f, "rss after: {} bytes", self.rss_after_bytes)?;
        writeln!(f, "rss per resting order: {} bytes", self.rss_per_resting_order())
    }
}

/// The resident set size of process `pid`, bytes (`VmRSS` of `/proc/<pid>/status`).
///
/// # Errors
/// The process does not exist or its status has no readable `VmRSS`.
pub fn resident_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).ok_or_else(|| format!("{path}: no VmRSS"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|e| format!("{path}: VmRSS {line:?}: {e}"))?;
    Ok(kib * 1024)
}

/// One session's share of the orders.
struct Share {
    user: u64,
    orders: u64,
}

/// Places `share.orders` resting bids through `client`, `WINDOW_ORDERS` at a time, waiting for
/// each window's acknowledgements. Every order must rest: a reject is an error.
fn fill(client: &mut Client, share: &Share, config: &MemoryConfig) -> Result<(), String> {
    let window_time = Duration::from_secs_f64(WINDOW_ORDERS as f64 / config.rate_per_session.max(1) as f64);
    let mut placed = 0u64;
    while placed < share.orders {
        let started = Instant::now();
        let count = (share.orders - placed).min(WINDOW_ORDERS as u64);
        for k in placed..placed + count {
            let market = config.markets[(k % config.markets.len() as u64) as usize];
            let level = (k / config.markets.len() as u64) % config.levels.max(1);
            let price = config.price_ticks.saturating_sub(level).max(1);
            let order = commands::limit(share.user, market, Side::Bid, price, config.lots, TimeInForce::Gtc, k + 1);
            client.send(&order).map_err(|e| format!("user {}: send: {e}", share.user))?;
        }
        let mut answered = 0u64;
        while answered < count {
            match client.receive_application() {
                Ok(Incoming::Event(Event::OrderAccepted(_))) => answered += 1,
                Ok(Incoming::Event(Event::OrderRejected(rejected))) => {
                    return Err(format!(
                        "user {}: order {} rejected (reason {}): lower --orders, or raise the server's \
                         engine.open_orders_per_user_max / orders_per_market_max",
                        share.user,
                        rejected.client_order_id.get(),
                        rejected.reason.raw()
                    ));
                }
                Ok(Incoming::Session(session)) => {
                    return Err(format!("user {}: unexpected {session:?} (throttled?)", share.user));
                }
                Ok(Incoming::Event(_)) => {}
                Err(ClientError::Io(e)) => return Err(format!("user {}: waiting for acks: {e}", share.user)),
                Err(e) => return Err(format!("user {}: {e}", share.user)),
            }
        }
        placed += count;
        if let Some(rest) = window_time.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Ok(())
}

/// Waits until the resident set of `pid` has not changed for `SETTLE_SAMPLES_STABLE` samples in
/// a row (or `SETTLE_TIMEOUT` passed) and returns it.
fn settled_resident_bytes(pid: u32) -> Result<u64, String> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut last = resident_bytes(pid)?;
    let mut stable = 0;
    while stable < SETTLE_SAMPLES_STABLE && Instant::now() < deadline {
        std::thread::sleep(SETTLE_SAMPLE);
        let now = resident_bytes(pid)?;
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
    }
    Ok(last)
}

/// Runs the benchmark (see the module docs).
///
/// # Errors
/// Logon failure, a rejected order, a lost connection, or an unreadable `/proc/<pid>/status`.
pub fn run(config: &MemoryConfig) -> Result<MemoryReport, String> {
    if config.markets.is_empty() || config.users == 0 || config.orders == 0 {
        return Err("need at least one market, one user and one order".into());
    }
    let shares: Vec<Share> = (0..config.users)
        .map(|k| Share {
            user: config.first_user + k,
            orders: config.orders / config.users + u64::from(k < config.orders % config.users),
        })
        .collect();
    let mut clients = Vec::with_capacity(shares.len());
    for share in &shares {
        let secret = crate::users::load_user_secret(share.user);
        let mut client = Client::connect_with(&config.address, &secret, 1, gateway_binary::KEEP_ALIVE_MS_MAX)
            .map_err(|e| format!("logon of load-test user {} at {}: {e}", share.user, config.address))?;
        client.set_read_timeout(Some(ACK_TIMEOUT)).map_err(|e| e.to_string())?;
        clients.push(client);
    }
    let rss_before_bytes = settled_resident_bytes(config.pid)?;
    let started = Instant::now();
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = clients
            .iter_mut()
            .zip(&shares)
            .map(|(client, share)| scope.spawn(move || fill(client, share, config)))
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or_else(|_| Err("a session thread panicked".into())))
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>, String>>()?;
    let fill_time = started.elapsed();
    let rss_after_bytes = settled_resident_bytes(config.pid)?;
    // The sessions stay logged on until the figure is taken (the orders outlive them anyway).
    drop(clients);
    Ok(MemoryReport { orders: config.orders, rss_before_bytes, rss_after_bytes, fill_time })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_order_figure_is_the_growth_divided_by_the_orders() {
        let report = MemoryReport {
            orders: 1_000,
            rss_before_bytes: 10_000_000,
            rss_after_bytes: 10_250_000,
            fill_time: Duration::ZERO,
        };
        assert_eq!(report.rss_per_resting_order(), 250);
        assert!(report.to_string().contains("rss per resting order: 250 bytes\n"));
    }

    #[test]
    fn reads_this_process_resident_set() {
        let rss = resident_bytes(std::process::id()).unwrap();
        assert!(rss > 0);
    }
}
