//! `loadgen`: the command line of the open-loop latency profiler.
//!
//! ```text
//! loadgen baseline --messages 20000 --size 70 --rate 2000
//! loadgen sbe --address 127.0.0.1:9100 --connections 4 --rate 2000 --duration 10 [--baseline] [--batch 16]
//! loadgen sbe --find-max --batch 16 --connections 8 --duration 5
//! loadgen fix --address 127.0.0.1:9200 --connections 4 --rate 2000 --duration 10 [--baseline]
//! loadgen sbe --profile exchange-core --rate 5000 --baseline --plot ec.svg
//! loadgen sbe --replay engine/benches/data/sample-flow.csv --rate 2000
//! loadgen sbe --ramp 2000:20000:2000:3 --connections 8
//! loadgen rest --address 127.0.0.1:8080 --connections 4 --rate 500 --duration 10 [--baseline]
//! loadgen sbe --rate 2000 --baseline --metrics 127.0.0.1:8080   # + server-side stages
//! loadgen rest --admin-token $EXCHANGE_ADMIN_TOKEN --connections 4 --rate 500
//! loadgen fdatasync --dir data/journal --count 500
//! loadgen ws --address 127.0.0.1:8080 --subscribers 50 --symbol BTC_USDC --streams depth,trade --duration 10
//! loadgen memory --address 127.0.0.1:9100 --pid $SERVER_PID --orders 1000000 --users 8
//! ```
//!
//! Exit status: 0 for a clean run, 1 when the run could not start, 2 when it completed with
//! errors (unanswered requests, lost connections…: see the `errors` line).

use clap::{Args, Parser, Subcommand};
use loadgen::LoadError;
use loadgen::baseline::{BaselineConfig, FRAMED_NEW_ORDER_BYTES};
use loadgen::fix::FixConfig;
use loadgen::flow::{Mix, Placement, PriceModel};
use loadgen::profile::Profile;
use loadgen::ramp::Ramp;
use loadgen::report::{Report, write_hdr_log, write_json};
use loadgen::rest::RestConfig;
use loadgen::sbe::SbeConfig;
use loadgen::users::{AdminSetup, LOAD_USER_FIRST};
use loadgen::ws::WsConfig;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Open-loop, coordinated-omission-corrected latency profiler: every latency is measured from
/// the request's scheduled send time, t0 + i/rate.
#[derive(Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Raw loopback TCP ping-pong (in-process echo server): the floor every gateway figure is
    /// divided by.
    Baseline(BaselineArgs),
    /// Open-loop order flow over the SBE gateway, one session per load-test user (start the
    /// server with `exchange --load-users N`).
    Sbe(SbeArgs),
    /// The same open-loop order flow over the FIX gateway, one session `LOAD<user id>` per
    /// load-test user (start the server with `exchange --load-users N`).
    Fix(FixArgs),
    /// The same open-loop order flow as signed REST requests (`POST` / `DELETE /api/v1/order`)
    /// over keep-alive HTTP/1.1 connections, one user per connection.
    Rest(RestArgs),
    /// WebSocket subscriber load: N clients subscribe to a symbol's public streams and count
    /// frames, depth update-id gaps, lag notices and the latency from each frame's event time.
    Ws(WsArgs),
    /// Resident memory per resting order: fills N resting orders through the SBE gateway and
    /// prints `rss per resting order: <N> bytes` (the server's RSS growth divided by the
    /// orders; the server must run on this machine).
    Memory(MemoryArgs),
    /// The disk's floor for durable acknowledgements: append + fdatasync times in a directory
    /// (the journal's), for the `--durability fsync` goals measured in the same run.
    Fdatasync(FdatasyncArgs),
}

#[derive(Args)]
struct FdatasyncArgs {
    /// Directory on the journal's file system.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Appends, each followed by one fdatasync.
    #[arg(long, default_value_t = 500)]
    count: u64,
    /// Also write the result as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn placement(text: &str) -> Result<Placement, String> {
    match text {
        "sides" => Ok(Placement::Sides),
        "band" => Ok(Placement::Band),
        _ => Err(format!("unknown placement {text:?} (sides or band)")),
    }
}

fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text.parse().map_err(|_| format!("not a number of seconds: {text:?}"))?;
    Duration::try_from_secs_f64(value).map_err(|e| e.to_string())
}

/// A `--pin` core list (a newtype, so clap takes it as one value, not many).
#[derive(Debug, Clone)]
struct CoreList(Vec<usize>);

fn cores(text: &str) -> Result<CoreList, String> {
    loadgen::schedule::parse_cores(text).map(CoreList)
}

/// Pacing and placement.
#[derive(Args)]
struct Timing {
    /// Spin (instead of sleeping) for the last this-many microseconds before each due time.
    #[arg(long, default_value_t = 50)]
    spin_us: u64,
    /// Pin threads to cores, e.g. `0,1` or `0-3`: the sender on the first, receivers (and the
    /// baseline's echo server) on the next ones, wrapping.
    #[arg(long, value_parser = cores)]
    pin: Option<CoreList>,
}

/// Where results go.
#[derive(Args)]
struct Output {
    /// Also write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the histograms as an HdrHistogram interval log (V2, compressed).
    #[arg(long)]
    hdr_log: Option<PathBuf>,
    /// Also draw the latency-by-percentile plot (SVG): one curve per message type, the
    /// baseline's dashed.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress bar (it is drawn only when stdout and stderr are terminals anyway).
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct BaselineArgs {
    /// Measured messages (warm-up messages come on top).
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Bytes per message (default: a framed SBE NewOrder).
    #[arg(long, default_value_t = FRAMED_NEW_ORDER_BYTES)]
    size: usize,
    /// Messages per second.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Warm-up, seconds, at the same rate, not recorded.
    #[arg(long, default_value = "2", value_parser = seconds)]
    warmup: Duration,
    /// Seconds to wait for the last echoes.
    #[arg(long, default_value = "5", value_parser = seconds)]
    drain: Duration,
    #[command(flatten)]
    timing: Timing,
    #[command(flatten)]
    output: Output,
}

/// Settings shared by the gateway targets.
#[derive(Args)]
struct GatewayArgs {
    /// Gateway address (default: 127.0.0.1:9100 for sbe, 127.0.0.1:9200 for fix).
    #[arg(long)]
    address: Option<String>,
    /// Sessions, each logged on as its own load-test user.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// User of the first connection (the next ones follow).
    #[arg(long, default_value_t = LOAD_USER_FIRST)]
    first_user: u64,
    /// Instead of the load-test users of `exchange --load-users N`: create one user per
    /// connection through the admin API with this token (default: the EXCHANGE_ADMIN_TOKEN
    /// environment variable, if set), fund it and register a fresh API key for it (sbe and
    /// rest; the FIX sessions are the server's configured ones).
    #[arg(long)]
    admin_token: Option<String>,
    /// The HTTP server of the admin API (default: --address for rest, 127.0.0.1:8080 otherwise).
    #[arg(long)]
    admin_address: Option<String>,
    /// Deposits for each created user, ASSET:QUANTITY, repeatable.
    #[arg(long, default_values_t = ["USDC:100000000".to_owned(), "BTC:1000".to_owned()])]
    deposit: Vec<String>,
    /// Requests per second over all connections.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Measured seconds.
    #[arg(long, default_value = "10", value_parser = seconds)]
    duration: Duration,
    /// Warm-up seconds before (same rate, not recorded).
    #[arg(long, default_value = "2", value_parser = seconds)]
    warmup: Duration,
    /// Seconds to wait for outstanding responses after the last send.
    #[arg(long, default_value = "5", value_parser = seconds)]
    drain: Duration,
    /// Workload profile: `default`, `exchange-core` (9% GTC, 3% IOC, 6% cancel, 82% replace
    /// around a tight mid) or `w-obrs` (70% GTC in mid ± 1 tick, 20% cancel, 10% market); the
    /// mix and price options below override its settings one by one.
    #[arg(long, default_value = "default", value_parser = clap::value_parser!(Profile))]
    profile: Profile,
    /// Instead of a mix, replay an order-flow CSV file (`side,price,qty` per line: side B/S or
    /// buy/sell, price in ticks, quantity in lots; `#` comments and a header allowed) as GTC
    /// limits on --market at the offered rate; row i goes to connection i mod C, cycling.
    #[arg(long, conflicts_with = "profile")]
    replay: Option<PathBuf>,
    /// Percent GTC limit orders (profile default: 80).
    #[arg(long)]
    limit_pct: Option<u32>,
    /// Percent market orders (default: 5).
    #[arg(long)]
    market_pct: Option<u32>,
    /// Percent IOC limit orders (default: 5).
    #[arg(long)]
    ioc_pct: Option<u32>,
    /// Percent cancels of the connection's open orders (default: 10).
    #[arg(long)]
    cancel_pct: Option<u32>,
    /// Percent cancel-replaces of the connection's open orders (default: 0).
    #[arg(long)]
    replace_pct: Option<u32>,
    /// Market id (1: BTC_USDC).
    #[arg(long, default_value_t = 1)]
    market: u32,
    /// Mid price, ticks (600000: 60,000 USDC on BTC_USDC).
    #[arg(long)]
    mid: Option<u64>,
    /// Limit prices are mid ± 1..=spread ticks (default: 100).
    #[arg(long)]
    spread: Option<u64>,
    /// Percent of GTC limits priced across the mid (they take liquidity; default: 10).
    #[arg(long)]
    cross_pct: Option<u32>,
    /// Percent of IOC orders priced across the mid (default: as --cross-pct).
    #[arg(long)]
    ioc_cross_pct: Option<u32>,
    /// Crossing prices go 1..=this many ticks through the mid (default: as --spread).
    #[arg(long)]
    cross_ticks: Option<u64>,
    /// Price placement: `sides` (own side of the mid unless crossing) or `band` (anywhere in
    /// mid ± spread whatever the side).
    #[arg(long, value_parser = placement)]
    placement: Option<Placement>,
    /// Smallest quantity, lots (price × lots must reach the market's minimum notional;
    /// default: 2).
    #[arg(long)]
    lots_min: Option<u64>,
    /// Largest quantity, lots (default: 20).
    #[arg(long)]
    lots_max: Option<u64>,
    /// Ramp the offered rate within one run: FROM:TO:STEP[:SECONDS] (requests/s; each step
    /// lasts SECONDS, default --duration). One table row per step; stops at the first step not
    /// sustained (answered < 95% of offered, p99 > --ramp-p99-max-ms, > 1% refused by the
    /// gateway, or errors).
    #[arg(long, conflicts_with = "baseline")]
    ramp: Option<String>,
    /// The p99 limit of a sustained --ramp step, milliseconds.
    #[arg(long, default_value_t = 10.0)]
    ramp_p99_max_ms: f64,
    /// Open orders per connection before limit orders turn into cancels (0: unbounded).
    #[arg(long, default_value_t = 500)]
    max_open: usize,
    /// Seed of the order flows.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Do not mass-cancel the users' orders before and after the run.
    #[arg(long)]
    no_cleanup: bool,
    /// First run the loopback baseline at the same rate, duration and message size, then print
    /// gateway/baseline ratios per percentile.
    #[arg(long)]
    baseline: bool,
    /// Baseline message size, bytes.
    #[arg(long, default_value_t = FRAMED_NEW_ORDER_BYTES)]
    size: usize,
    /// The server's HTTP address, whose `/metrics` is read before and after the run to print the
    /// server-side wire-to-wire and stage latencies of the run (default: --address for rest,
    /// port 8080 of --address's host otherwise). Unreachable: a warning, and no server figures.
    #[arg(long)]
    metrics: Option<String>,
    /// Do not read the server's `/metrics`.
    #[arg(long, conflicts_with = "metrics")]
    no_metrics: bool,
    #[command(flatten)]
    timing: Timing,
    #[command(flatten)]
    output: Output,
}

#[derive(Args)]
struct SbeArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Orders per socket write, per connection: each connection's next N orders are written
    /// together when the last of them is due (every order keeps its own scheduled time).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Instead of one run, run at increasing offered rates (from --start-rate, × --rate-factor,
    /// up to --max-rate) until fewer than 95% are answered per second or p99 > 10 ms (with
    /// --batch > 1: measured from each batch's scheduled write time) twice in a row; prints
    /// achieved vs offered per step (and writes the steps to --json).
    #[arg(long, conflicts_with = "ramp")]
    find_max: bool,
    /// First offered rate of --find-max.
    #[arg(long, default_value_t = 2_000)]
    start_rate: u64,
    /// Rate growth per --find-max step.
    #[arg(long, default_value_t = 1.5)]
    rate_factor: f64,
    /// Highest offered rate of --find-max.
    #[arg(long, default_value_t = 1_000_000)]
    max_rate: u64,
    /// Attempts again at a --find-max step that was not sustained before stopping.
    #[arg(long, default_value_t = 1)]
    retries: usize,
    /// The p99 limit of a sustained --find-max step, milliseconds (a large value sweeps for
    /// throughput alone).
    #[arg(long, default_value_t = 10.0)]
    p99_max_ms: f64,
}

#[derive(Args)]
struct FixArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Symbol(55) of --market.
    #[arg(long, default_value = "BTC_USDC")]
    symbol: String,
    /// Decimals of one price tick (BTC_USDC: 1, tick 0.1 USDC).
    #[arg(long, default_value_t = 1)]
    price_decimals: u32,
    /// Decimals of one lot (BTC_USDC: 5, lot 0.00001 BTC).
    #[arg(long, default_value_t = 5)]
    quantity_decimals: u32,
    /// The gateway's CompID (TargetCompID).
    #[arg(long, default_value = "EXCHANGE")]
    target_comp_id: String,
}

#[derive(Args)]
struct RestArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// The symbol of --market.
    #[arg(long, default_value = "BTC_USDC")]
    symbol: String,
    /// Decimals of one price tick (BTC_USDC: 1, tick 0.1 USDC).
    #[arg(long, default_value_t = 1)]
    price_decimals: u32,
    /// Decimals of one lot (BTC_USDC: 5, lot 0.00001 BTC).
    #[arg(long, default_value_t = 5)]
    quantity_decimals: u32,
    /// X-Window of the signed requests, ms.
    #[arg(long, default_value_t = 5_000)]
    window_ms: u64,
}

#[derive(Args)]
struct MemoryArgs {
    /// SBE gateway address.
    #[arg(long, default_value = "127.0.0.1:9100")]
    address: String,
    /// Process id of the server (its /proc/<pid>/status VmRSS is read).
    #[arg(long)]
    pid: u32,
    /// Resting orders to place.
    #[arg(long, default_value_t = 1_000_000)]
    orders: u64,
    /// Sessions, one per load-test user from --first-user (the server needs
    /// `--load-users` at least this many, and `engine.open_orders_per_user_max` at least
    /// orders / users / markets).
    #[arg(long, default_value_t = 8)]
    users: u64,
    /// User of the first session.
    #[arg(long, default_value_t = LOAD_USER_FIRST)]
    first_user: u64,
    /// Market ids the orders go to, round robin.
    #[arg(long, default_value = "1", value_delimiter = ',')]
    markets: Vec<u32>,
    /// Highest bid price, ticks (bids go down from it; keep it far below the touch).
    #[arg(long, default_value_t = 100_000)]
    price_ticks: u64,
    /// Distinct bid prices per market.
    #[arg(long, default_value_t = 1_000)]
    levels: u64,
    /// Quantity of each order, lots (price x quantity must reach the market's min notional).
    #[arg(long, default_value_t = 20)]
    lots: u64,
    /// Most orders per second per session (under the gateway's messages_per_second).
    #[arg(long, default_value_t = 9_000)]
    rate_per_session: u64,
}

#[derive(Args)]
struct WsArgs {
    /// The HTTP server's address (the WebSocket is at ws://ADDRESS/).
    #[arg(long, default_value = "127.0.0.1:8080")]
    address: String,
    /// WebSocket clients.
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// Symbol whose streams are subscribed.
    #[arg(long, default_value = "BTC_USDC")]
    symbol: String,
    /// Stream kinds, comma-separated (`depth`, `trade`, `bookTicker`, `ticker`, `depth.200ms`,
    /// `kline.1m`…), each subscribed as KIND.SYMBOL.
    #[arg(long, default_value = "depth,trade", value_delimiter = ',')]
    streams: Vec<String>,
    /// Seconds each client reads after subscribing.
    #[arg(long, default_value = "10", value_parser = seconds)]
    duration: Duration,
    /// Fail (exit status 2) unless at least this many frames arrived in all.
    #[arg(long, default_value_t = 0)]
    min_frames: u64,
    /// Latency origin: `frame` (the frame's `E`, the answering server's fan-out delay) or
    /// `engine` (the event's engine time `T`: how far behind the engine, e.g. via a replica).
    #[arg(long, default_value = "frame", value_parser = latency_origin)]
    since: loadgen::ws::LatencyOrigin,
    #[command(flatten)]
    output: Output,
}

fn latency_origin(text: &str) -> Result<loadgen::ws::LatencyOrigin, String> {
    match text {
        "frame" => Ok(loadgen::ws::LatencyOrigin::Frame),
        "engine" => Ok(loadgen::ws::LatencyOrigin::Engine),
        other => Err(format!("expected frame or engine, not {other}")),
    }
}

/// Creates the run's users through the admin API when a token is given.
fn admin_users(args: &GatewayArgs, default_address: &str, config: &mut SbeConfig) -> Result<(), String> {
    let Some(token) = args.admin_token.clone().or_else(|| std::env::var("EXCHANGE_ADMIN_TOKEN").ok()) else {
        return Ok(());
    };
    let deposits = args
        .deposit
        .iter()
        .map(|text| {
            text.split_once(':')
                .map(|(asset, quantity)| (asset.to_owned(), quantity.to_owned()))
                .ok_or_else(|| format!("--deposit {text:?}: expected ASSET:QUANTITY"))
        })
        .collect::<Result<_, _>>()?;
    let setup = AdminSetup {
        address: args.admin_address.clone().unwrap_or_else(|| default_address.to_owned()),
        token,
        count: config.connections,
        deposits,
    };
    let users = loadgen::users::setup(&setup).map_err(|e| format!("admin setup: {e}"))?;
    eprintln!(
        "created and funded {} users through the admin API: {:?}",
        users.len(),
        users.iter().map(|u| u.0).collect::<Vec<_>>()
    );
    config.users = Some(users.into());
    Ok(())
}

fn finish(reports: &[&Report], output: &Output, json: impl FnOnce() -> serde_json::Value) -> ExitCode {
    if let Some(path) = &output.json
        && let Err(error) = write_json(path, &json())
    {
        eprintln!("error: cannot write {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    if let Some(path) = &output.hdr_log
        && let Err(error) = write_hdr_log(path, reports)
    {
        eprintln!("error: cannot write {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    if let Some(path) = &output.plot {
        let title = reports.iter().map(|r| format!("{} ({})", r.kind, r.target)).collect::<Vec<_>>().join(" vs ");
        let title = match reports.iter().find_map(|r| r.settings.get("workload")) {
            Some(workload) => format!("loadgen {title}, {workload}"),
            None => format!("loadgen {title}"),
        };
        if let Err(error) = loadgen::plot::write_plot(path, &title, reports) {
            eprintln!("error: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if reports.iter().any(|r| r.error_count() > 0) { ExitCode::from(2) } else { ExitCode::SUCCESS }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Baseline(args) => {
            let config = BaselineConfig {
                messages: args.messages,
                size: args.size,
                rate: args.rate,
                warmup: args.warmup,
                drain: args.drain,
                spin: Duration::from_micros(args.timing.spin_us),
                pin: args.timing.pin.clone().map(|c| c.0).unwrap_or_default(),
                progress: !args.output.quiet,
                echo_stall: None,
            };
            match loadgen::baseline::run(&config) {
                Ok(report) => {
                    print!("{report}");
                    finish(&[&report], &args.output, || serde_json::to_value(&report).unwrap_or_default())
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Commands::Sbe(sbe) => {
            let mut config = match gateway_config(&sbe.gateway, "127.0.0.1:9100") {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::FAILURE;
                }
            };
            config.batch = sbe.batch.max(1);
            let args = &sbe.gateway;
            if let Err(error) = admin_users(args, "127.0.0.1:8080", &mut config) {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
            if sbe.find_max {
                let rates = loadgen::sweep::rates(sbe.start_rate, sbe.rate_factor, sbe.max_rate);
                let result = loadgen::sweep::sweep(
                    &rates,
                    sbe.retries,
                    (sbe.p99_max_ms * 1e6) as u64,
                    |rate| loadgen::sbe::run(&SbeConfig { rate, ..config.clone() }),
                    |step, report| {
                        eprintln!(
                            "offered {}/s: answered {:.0}/s, p99 {:.1} µs{}",
                            step.offered,
                            step.achieved,
                            step.p99_ns as f64 / 1e3,
                            if report.error_count() > 0 {
                                format!(", errors {:?}", report.errors)
                            } else {
                                String::new()
                            }
                        )
                    },
                );
                return match result {
                    Ok(sweep) => {
                        print!("{sweep}");
                        if let Some(path) = &args.output.json
                            && let Err(error) = write_json(path, &serde_json::to_value(&sweep).unwrap_or_default())
                        {
                            eprintln!("error: cannot write {}: {error}", path.display());
                            return ExitCode::FAILURE;
                        }
                        ExitCode::SUCCESS
                    }
                    Err(error) => {
                        eprintln!("error: {error}");
                        ExitCode::FAILURE
                    }
                };
            }
            run_gateway(args, &config, false, || loadgen::sbe::run(&config))
        }
        Commands::Fix(fix) => {
            if fix.gateway.admin_token.is_some() {
                eprintln!("error: the fix target uses the server's configured LOAD<user> sessions: no --admin-token");
                return ExitCode::FAILURE;
            }
            let run = match gateway_config(&fix.gateway, "127.0.0.1:9200") {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let config = FixConfig {
                run,
                symbol: fix.symbol.clone(),
                price_decimals: fix.price_decimals,
                quantity_decimals: fix.quantity_decimals,
                target_comp_id: fix.target_comp_id.clone(),
                ..FixConfig::default()
            };
            run_gateway(&fix.gateway, &config.run, false, || loadgen::fix::run(&config))
        }
        Commands::Rest(rest) => {
            let mut run = match gateway_config(&rest.gateway, "127.0.0.1:8080") {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let address = run.address.clone();
            if let Err(error) = admin_users(&rest.gateway, &address, &mut run) {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
            let config = RestConfig {
                run,
                symbol: rest.symbol.clone(),
                price_decimals: rest.price_decimals,
                quantity_decimals: rest.quantity_decimals,
                window_ms: rest.window_ms,
            };
            run_gateway(&rest.gateway, &config.run, true, || loadgen::rest::run(&config))
        }
        Commands::Fdatasync(args) => {
            match loadgen::fsync::run(&loadgen::fsync::FsyncConfig { dir: args.dir.clone(), count: args.count }) {
                Ok(report) => {
                    print!("{report}");
                    if let Some(path) = &args.json
                        && let Err(error) = write_json(path, &serde_json::to_value(&report).unwrap_or_default())
                    {
                        eprintln!("error: cannot write {}: {error}", path.display());
                        return ExitCode::FAILURE;
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Commands::Memory(args) => {
            let config = loadgen::memory::MemoryConfig {
                address: args.address,
                pid: args.pid,
                orders: args.orders,
                users: args.users,
                first_user: args.first_user,
                markets: args.markets,
                price_ticks: args.price_ticks,
                levels: args.levels,
                lots: args.lots,
                rate_per_session: args.rate_per_session,
            };
            match loadgen::memory::run(&config) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Commands::Ws(ws) => {
            let config = WsConfig {
                address: ws.address.clone(),
                subscribers: ws.subscribers,
                symbol: ws.symbol.clone(),
                streams: ws.streams.clone(),
                duration: ws.duration,
                since: ws.since,
            };
            match loadgen::ws::run(&config) {
                Ok(report) => {
                    print!("{report}");
                    let status = finish(&[&report], &ws.output, || serde_json::to_value(&report).unwrap_or_default());
                    if report.answered < ws.min_frames {
                        eprintln!("error: {} frames, fewer than --min-frames {}", report.answered, ws.min_frames);
                        return ExitCode::from(2);
                    }
                    status
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The run settings of a gateway target.
fn gateway_config(args: &GatewayArgs, default_address: &str) -> Result<SbeConfig, String> {
    let profile_mix = args.profile.mix();
    let profile_prices = args.profile.prices();
    let mix = Mix {
        limit_pct: args.limit_pct.unwrap_or(profile_mix.limit_pct),
        market_pct: args.market_pct.unwrap_or(profile_mix.market_pct),
        ioc_pct: args.ioc_pct.unwrap_or(profile_mix.ioc_pct),
        cancel_pct: args.cancel_pct.unwrap_or(profile_mix.cancel_pct),
        replace_pct: args.replace_pct.unwrap_or(profile_mix.replace_pct),
    };
    let spread_ticks = args.spread.unwrap_or(profile_prices.spread_ticks);
    let cross_pct = args.cross_pct.unwrap_or(profile_prices.cross_pct);
    let prices = PriceModel {
        market_id: args.market,
        mid_ticks: args.mid.unwrap_or(profile_prices.mid_ticks),
        spread_ticks,
        cross_pct,
        ioc_cross_pct: args.ioc_cross_pct.unwrap_or(if args.profile == Profile::Default {
            cross_pct
        } else {
            profile_prices.ioc_cross_pct
        }),
        cross_ticks: args.cross_ticks.unwrap_or(if args.profile == Profile::Default {
            spread_ticks
        } else {
            profile_prices.cross_ticks
        }),
        placement: args.placement.unwrap_or(profile_prices.placement),
        lots_min: args.lots_min.unwrap_or(profile_prices.lots_min),
        lots_max: args.lots_max.unwrap_or(profile_prices.lots_max),
    };
    let (replay, workload) = match &args.replay {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("--replay {}: {e}", path.display()))?;
            let rows = engine::testkit::profiles::parse_flow_csv(&text)
                .map_err(|e| format!("--replay {}: {e}", path.display()))?;
            if rows.is_empty() {
                return Err(format!("--replay {}: no orders in the file", path.display()));
            }
            let workload = format!("replay {} ({} orders)", path.display(), rows.len());
            (Some(rows.into()), workload)
        }
        None => (None, args.profile.name().to_owned()),
    };
    let ramp = args.ramp.as_deref().map(|text| Ramp::parse(text, args.duration)).transpose()?;
    let (rate, duration) = match &ramp {
        Some(ramp) => (ramp.rates[0], ramp.duration()),
        None => (args.rate, args.duration),
    };
    Ok(SbeConfig {
        address: args.address.clone().unwrap_or_else(|| default_address.to_owned()),
        connections: args.connections,
        first_user: args.first_user,
        users: None,
        rate,
        duration,
        warmup: args.warmup,
        drain: args.drain,
        mix,
        prices,
        max_open: args.max_open,
        seed: args.seed,
        cleanup: !args.no_cleanup,
        spin: Duration::from_micros(args.timing.spin_us),
        pin: args.timing.pin.clone().map(|c| c.0).unwrap_or_default(),
        progress: !args.output.quiet,
        batch: 1,
        workload,
        replay,
        ramp,
        ramp_p99_max_ns: (args.ramp_p99_max_ms * 1e6) as u64,
    })
}

/// The address whose `/metrics` a run reads: `--metrics`, else the target's own address for the
/// HTTP target, else port 8080 of the target's host; `None` with `--no-metrics`.
fn metrics_address(args: &GatewayArgs, config: &SbeConfig, target_is_http: bool) -> Option<String> {
    if args.no_metrics {
        return None;
    }
    if let Some(address) = &args.metrics {
        return Some(address.clone());
    }
    if target_is_http {
        return Some(config.address.clone());
    }
    let host = config.address.rsplit_once(':').map_or(config.address.as_str(), |(host, _)| host);
    Some(format!("{host}:8080"))
}

/// One gateway run (any target), optionally after the baseline at the same rate, duration and
/// message size; prints and writes the results the same way for every target, followed by the
/// server's own latencies over the run (also under `server` in the JSON) when its `/metrics` can
/// be read.
fn run_gateway(
    args: &GatewayArgs,
    config: &SbeConfig,
    target_is_http: bool,
    run: impl FnOnce() -> Result<Report, LoadError>,
) -> ExitCode {
    let metrics = metrics_address(args, config, target_is_http);
    let before = metrics.as_deref().and_then(|address| match loadgen::server::Scrape::fetch(address) {
        Ok(scrape) => Some((address, scrape)),
        Err(error) => {
            eprintln!("warning: no server-side figures: {error}");
            None
        }
    });
    let server = || -> Option<loadgen::server::ServerLatency> {
        let (address, before) = before.as_ref()?;
        match loadgen::server::Scrape::fetch(address) {
            Ok(after) => {
                let latency = loadgen::server::ServerLatency::between(before, &after);
                print!("{latency}");
                Some(latency)
            }
            Err(error) => {
                eprintln!("warning: no server-side figures: {error}");
                None
            }
        }
    };
    let with_server = |mut json: serde_json::Value, server: &Option<loadgen::server::ServerLatency>| {
        if let (Some(object), Some(server)) = (json.as_object_mut(), server) {
            object.insert("server".into(), serde_json::to_value(server).unwrap_or_default());
        }
        json
    };
    if args.baseline {
        let baseline = BaselineConfig {
            messages: (args.rate as f64 * args.duration.as_secs_f64()).ceil().max(1.0) as u64,
            size: args.size,
            rate: args.rate,
            warmup: args.warmup,
            drain: args.drain,
            spin: config.spin,
            pin: config.pin.clone(),
            progress: config.progress,
            echo_stall: None,
        };
        match loadgen::compare_with(&baseline, run) {
            Ok(comparison) => {
                print!("{comparison}");
                let server = server();
                finish(&[&comparison.baseline, &comparison.gateway], &args.output, || {
                    with_server(serde_json::to_value(&comparison).unwrap_or_default(), &server)
                })
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        }
    } else {
        match run() {
            Ok(report) => {
                print!("{report}");
                let server = server();
                finish(&[&report], &args.output, || {
                    with_server(serde_json::to_value(&report).unwrap_or_default(), &server)
                })
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        }
    }
}
