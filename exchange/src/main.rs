//! The `exchange` server: recovers the engine from its data directory, runs the engine thread
//! with a durable journal, and (with `--demo`) a demo market. Operator subcommands rebuild and
//! inspect state offline. See `exchange --help` and docs/operations.md.

use clap::{Parser, Subcommand};
use exchange::config::{Config, DurabilitySetting, IdleStrategy};
use exchange::runtime::{self, Runtime};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A low-latency crypto exchange. Without a subcommand it runs the server (`exchange --demo`
/// for a demo market). Settings come from the config file (default: the built-in exchange.toml),
/// then environment variables, then flags. See docs/operations.md.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Configuration file (TOML). Default: the built-in configuration.
    #[arg(long, global = true, env = "EXCHANGE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (journal, snapshots, users, FIX session stores); overrides `data_dir`
    /// (default `./data`).
    #[arg(long, global = true, env = "EXCHANGE_DATA")]
    data: Option<PathBuf>,
    /// Journal durability; overrides `journal.durability`. `none` is unsafe (benchmarks only).
    #[arg(long, global = true, env = "EXCHANGE_DURABILITY", value_enum)]
    durability: Option<DurabilitySetting>,
    /// Engine idle strategy; overrides `engine.idle`.
    #[arg(long, global = true, env = "EXCHANGE_IDLE", value_enum)]
    idle: Option<IdleStrategy>,
    /// With `--idle spin-park`: µs a thread spins on its empty ring before parking; overrides
    /// `engine.idle_spin_us`.
    #[arg(long, global = true, env = "EXCHANGE_IDLE_SPIN_US")]
    idle_spin_us: Option<u64>,
    /// Core to pin the engine thread to; overrides `engine.core`.
    #[arg(long, global = true, env = "EXCHANGE_CORE")]
    core: Option<usize>,
    /// HTTP port (REST API, WebSocket, trading page at /app/, /metrics); overrides the port of
    /// `http.listen`.
    #[arg(long, global = true, env = "EXCHANGE_HTTP_PORT")]
    http_port: Option<u16>,
    /// SBE binary gateway port; overrides the port of `binary.listen`.
    #[arg(long, global = true, env = "EXCHANGE_SBE_PORT")]
    sbe_port: Option<u16>,
    /// Which threads serve the SBE sockets; overrides `binary.io`.
    #[arg(long, global = true, env = "EXCHANGE_SBE_IO", value_enum)]
    sbe_io: Option<exchange::config::BinaryIo>,
    /// Core to pin the SBE gateway's I/O thread to (with `--sbe-io thread`); overrides
    /// `binary.io_core`.
    #[arg(long, global = true, env = "EXCHANGE_SBE_IO_CORE")]
    sbe_io_core: Option<usize>,
    /// FIX gateway port; overrides the port of `fix.listen`.
    #[arg(long, global = true, env = "EXCHANGE_FIX_PORT")]
    fix_port: Option<u16>,
    /// Which threads serve the FIX sockets; overrides `fix.io`.
    #[arg(long, global = true, env = "EXCHANGE_FIX_IO", value_enum)]
    fix_io: Option<exchange::config::FixIo>,
    /// Core to pin the FIX gateway's I/O thread to (with `--fix-io thread`); overrides
    /// `fix.io_core`.
    #[arg(long, global = true, env = "EXCHANGE_FIX_IO_CORE")]
    fix_io_core: Option<usize>,
    /// Journal segment size in bytes; overrides `journal.segment_bytes`.
    #[arg(long, global = true, env = "EXCHANGE_SEGMENT_BYTES")]
    segment_bytes: Option<u64>,
    /// Snapshot every N commands; overrides `snapshot.every_commands`.
    #[arg(long, global = true, env = "EXCHANGE_SNAPSHOT_EVERY")]
    snapshot_every: Option<u64>,
    /// Session token (JWT) lifetime in seconds; overrides `users.jwt_ttl_seconds`.
    #[arg(long, global = true, env = "EXCHANGE_JWT_TTL_SECONDS")]
    jwt_ttl_seconds: Option<u64>,
    /// Turns the Postgres sink on (overrides `sinks.postgres.url`).
    #[arg(long, global = true, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Turns the Kafka sink on (overrides `sinks.kafka.brokers`).
    #[arg(long, global = true, env = "KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Kafka brokers of the replicated journal and the lease (overrides `cluster.brokers`).
    #[arg(long, global = true, env = "EXCHANGE_CLUSTER_BROKERS")]
    cluster_brokers: Option<String>,
    /// This gateway process's id (`exchange gateway`; `[cluster] gateway_id`).
    #[arg(long, global = true, env = "EXCHANGE_GATEWAY_ID")]
    gateway_id: Option<u64>,
    /// Turns the Redis sink on (overrides `sinks.redis.url`).
    #[arg(long, global = true, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// Start (or replay) even when the journal ends before what its manifest or the newest
    /// snapshot recorded as durable: the missing commands are lost for good and their sequences
    /// and order ids are handed out again. Logged as an error. See docs/operations.md, "Journal
    /// loss". Never set it by default (there is deliberately no environment variable).
    #[arg(long, global = true)]
    accept_journal_loss: bool,
    #[command(subcommand)]
    command: Option<Subcommands>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// Register and fund demo users 1 to 4 (public keys: docs/operations.md, "Demo users") and run
    /// a market maker keeping 15 levels per side around a drifting fair price and a few traders
    /// taking with IOC limits near it (docs/operations.md, "Demo market").
    #[arg(long, env = "EXCHANGE_DEMO")]
    demo: bool,
    /// Demo commands per second (orders, cancels, replaces and top-up deposits).
    #[arg(long, default_value_t = 200, env = "EXCHANGE_DEMO_RATE")]
    demo_rate: u64,
    /// Create this many funded load-test users (ids from 1,000,001, secrets documented in
    /// docs/benchmarks.md) for loadgen: an SBE API key each and, when the FIX gateway is enabled,
    /// a FIX session `LOAD<user id>` → `EXCHANGE` with the same key. Never on a public machine:
    /// their secrets are public.
    #[arg(long, default_value_t = 0, env = "EXCHANGE_LOAD_USERS")]
    load_users: u64,
    /// Stop the demo flow after this many commands (0: never). The first fund the demo users: 16
    /// with the default four assets.
    #[arg(long, default_value_t = 0)]
    demo_orders: u64,
    /// Shut down by itself after this many seconds (0: run until SIGINT/SIGTERM).
    #[arg(long, default_value_t = 0)]
    run_for: u64,
    /// Print a status line every N seconds (0: never).
    #[arg(long, default_value_t = 5)]
    status_every: u64,
    /// Print `ACKED <sequence>` on stdout whenever the durable, executed sequence advances (for
    /// crash tests: every printed sequence must survive a kill -9).
    #[arg(long, hide = true)]
    print_acks: bool,
}

/// `exchange gateway`: the server's options and where the gateway's state starts.
#[cfg(feature = "sinks")]
#[derive(Debug, Clone, clap::Args)]
struct GatewayArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Start from this engine snapshot (a file, or a snapshot directory such as a standby's
    /// `data/snapshots`: its newest usable one) and its recorded journal topic position, reading
    /// only the records after it, instead of the whole topic from its first record.
    #[arg(long)]
    snapshot: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Subcommands {
    /// Run the server (the default).
    Run(RunArgs),
    /// A hot standby of a replicated primary: rebuilds its local journal from the Kafka journal
    /// topic (`[cluster]`), follows it with its own engine, takes the snapshots, and when it gets
    /// the lease appends an epoch marker, catches up and serves as the primary in the same
    /// process (the same as `run --durability replicated`). Exit code 75: this node was primary
    /// and was deposed (fenced). See docs/deployment.md, "Replicated journal and failover".
    #[cfg(feature = "sinks")]
    Standby(RunArgs),
    /// A gateway process: the REST/WebSocket API of a replicated primary, on any machine, without
    /// an engine of its own authority. Sends each command through the Kafka commands topic
    /// (`[cluster] commands_topic`, key = `[cluster] gateway_id`) and answers from the journal
    /// topic, which it follows with its own engine. See docs/deployment.md, "Gateway processes".
    #[cfg(feature = "sinks")]
    Gateway(GatewayArgs),
    /// Rebuild the state from the newest snapshot and the journal (read-only) and print the
    /// state hash and counts.
    Replay {
        /// Ignore snapshots: replay the whole journal from sequence 1 (needs every segment).
        #[arg(long)]
        from_scratch: bool,
    },
    /// Journal tools.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Recover the data directory and write a snapshot of the result (the server must be stopped).
    Snapshot,
    /// A read-only market-data replica: serves the public REST market data and the public
    /// WebSocket streams on the HTTP port, without a data directory. By default from the Redis
    /// sink's keys (`--redis-url` or `sinks.redis`); with `--from-log` by following the
    /// replicated journal topic (`--cluster-brokers` or `[cluster] brokers`, `journal_topic`)
    /// with its own engine:
    /// every diff and trade, engine ids. See docs/operations.md and docs/deployment.md.
    #[cfg(feature = "sinks")]
    Replica {
        /// Milliseconds between two reads of the sink's `sequence` key (Redis source).
        #[arg(long, default_value_t = 50)]
        poll_ms: u64,
        /// Follow the replicated journal topic instead of the Redis sink.
        #[arg(long)]
        from_log: bool,
        /// With `--from-log`: start from this engine snapshot (a file, or a snapshot directory such
        /// as a standby's `data/snapshots`: its newest usable one) instead of sequence 1.
        #[arg(long)]
        snapshot: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum JournalCommand {
    /// Print the journal's records, one per line.
    Dump {
        /// First sequence to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most records to print (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
}

fn main() -> ExitCode {
    // Before anything large is allocated: views that grow by doubling leave no copies behind.
    let large_allocations_mapped = exchange::allocator::map_large_allocations();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EXCHANGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if !large_allocations_mapped {
        tracing::debug!("allocator mmap threshold left as is (not glibc, or refused)");
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, Box<dyn std::error::Error>> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(data) = &cli.data {
        config.data_dir = data.clone();
    }
    if let Some(durability) = cli.durability {
        config.journal.durability = durability;
    }
    if let Some(idle) = cli.idle {
        config.engine.idle = idle;
    }
    if let Some(spin) = cli.idle_spin_us {
        config.engine.idle_spin_us = spin;
    }
    if cli.core.is_some() {
        config.engine.core = cli.core;
    }
    if let Some(port) = cli.http_port {
        config.http.listen.set_port(port);
    }
    if let Some(port) = cli.sbe_port {
        config.binary.listen.set_port(port);
    }
    if let Some(io) = cli.sbe_io {
        config.binary.io = io;
    }
    if let Some(core) = cli.sbe_io_core {
        config.binary.io_core = Some(core);
    }
    if let Some(port) = cli.fix_port {
        config.fix.listen.set_port(port);
    }
    if let Some(io) = cli.fix_io {
        config.fix.io = io;
    }
    if let Some(core) = cli.fix_io_core {
        config.fix.io_core = Some(core);
    }
    if let Some(bytes) = cli.segment_bytes {
        config.journal.segment_bytes = bytes;
    }
    if let Some(every) = cli.snapshot_every {
        config.snapshot.every_commands = every;
    }
    if let Some(seconds) = cli.jwt_ttl_seconds {
        config.users.jwt_ttl_seconds = seconds;
    }
    // Secrets come from the environment rather than flags (flags show in `ps`).
    if let Ok(secret) = std::env::var("EXCHANGE_JWT_SECRET") {
        config.users.jwt_secret = secret;
    }
    if let Ok(token) = std::env::var("EXCHANGE_ADMIN_TOKEN") {
        config.admin.token = token;
    }
    if let Some(url) = cli.database_url.as_ref().filter(|u| !u.is_empty()) {
        config.sinks.postgres = Some(exchange::config::PostgresSinkSection { url: url.clone() });
    }
    if let Some(brokers) = cli.kafka_brokers.as_ref().filter(|b| !b.is_empty()) {
        match &mut config.sinks.kafka {
            Some(kafka) => kafka.brokers = brokers.clone(),
            None => config.sinks.kafka = Some(exchange::config::KafkaSinkSection::new(brokers)),
        }
    }
    if let Some(brokers) = cli.cluster_brokers.as_ref().filter(|b| !b.is_empty()) {
        config.cluster.brokers = brokers.clone();
    }
    if let Some(gateway_id) = cli.gateway_id {
        config.cluster.gateway_id = gateway_id;
    }
    #[cfg(feature = "sinks")]
    if matches!(cli.command, Some(Subcommands::Standby(_))) {
        config.journal.durability = DurabilitySetting::Replicated;
    }
    if let Some(url) = cli.redis_url.as_ref().filter(|u| !u.is_empty()) {
        match &mut config.sinks.redis {
            Some(redis) => redis.url = url.clone(),
            None => config.sinks.redis = Some(exchange::config::RedisSinkSection::new(url)),
        }
    }
    Ok(config)
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let config = load_config(&cli)?;
    let engine_config = config.engine_config()?;
    match &cli.command {
        None => serve(&config, engine_config, cli.run.clone(), cli.accept_journal_loss),
        Some(Subcommands::Run(args)) => serve(&config, engine_config, args.clone(), cli.accept_journal_loss),
        #[cfg(feature = "sinks")]
        Some(Subcommands::Standby(args)) => serve(&config, engine_config, args.clone(), cli.accept_journal_loss),
        #[cfg(feature = "sinks")]
        Some(Subcommands::Gateway(args)) => {
            serve_gateway(&config, engine_config, args.run.clone(), args.snapshot.as_deref())
        }
        Some(Subcommands::Replay { from_scratch }) => {
            require_data(&config)?;
            let started = Instant::now();
            let mode = runtime::RecoveryMode {
                from_scratch: *from_scratch,
                open_writer: false,
                accept_journal_loss: cli.accept_journal_loss,
            };
            let (recovered, _) = runtime::recover_with(&config, &engine_config, mode)?;
            let elapsed = started.elapsed();
            let engine = &recovered.engine;
            println!("data directory   {}", config.data_dir.display());
            match &recovered.snapshot {
                Some((sequence, path)) => println!("snapshot         {} (sequence {sequence})", path.display()),
                None => println!("snapshot         none"),
            }
            println!(
                "replayed         {} commands in {:.3} s ({:.0} commands/s)",
                recovered.replayed,
                elapsed.as_secs_f64(),
                recovered.replayed as f64 / elapsed.as_secs_f64().max(1e-9)
            );
            if let Some((path, offset)) = &recovered.torn_tail {
                println!(
                    "torn tail        {} at offset {offset} (ignored; a server start truncates it)",
                    path.display()
                );
            }
            println!("last sequence    {}", recovered.last_sequence);
            println!("accounts         {}", engine.ledger().account_count());
            let mut resting = 0;
            engine.visit_markets(&mut |_, book| resting += engine::Book::len(book));
            println!("resting orders   {resting}");
            println!("next order id    {}", engine.next_order_id());
            println!("state hash       {:#018x}", engine.state_hash());
            engine.validate().map_err(|e| format!("invariant broken after replay: {e}"))?;
            println!("invariants       ok");
            Ok(())
        }
        Some(Subcommands::Journal { command: JournalCommand::Dump { from, limit } }) => {
            // Streamed: a dump of a long journal holds one record at a time, and stops reading at
            // the limit.
            let take = if *limit == 0 { usize::MAX } else { *limit };
            let mut printed = 0;
            let reader = engine::journal::JournalReader::open(&config.journal_dir())?;
            if reader.is_empty() {
                return Err(format!(
                    "no journal in {}: nothing to dump (is --data right?)",
                    config.journal_dir().display()
                )
                .into());
            }
            let visited = reader.for_each_after(from.saturating_sub(1), |record| {
                match codec::decode_journaled(record.payload) {
                    Ok((command, None)) => println!("{} {} {:?}", record.sequence, record.timestamp_ns, command),
                    Ok((command, Some(gateway))) => {
                        println!("{} {} {:?} {:?}", record.sequence, record.timestamp_ns, command, gateway)
                    }
                    Err(error) => println!("{} {} <undecodable: {error}>", record.sequence, record.timestamp_ns),
                }
                printed += 1;
                let done = printed == take;
                Ok::<_, engine::journal::JournalError>(if done {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                })
            })?;
            if let Some((path, offset)) = visited.torn_tail {
                println!("# torn tail in {} at offset {offset}", path.display());
            }
            Ok(())
        }
        #[cfg(feature = "sinks")]
        Some(Subcommands::Replica { from_log: true, snapshot, .. }) => {
            if config.cluster.brokers.is_empty() {
                return Err("replica --from-log needs --cluster-brokers (or [cluster] brokers)".into());
            }
            let replica_config = exchange::log_replica::LogReplicaConfig {
                brokers: config.cluster.brokers.clone(),
                topic: config.cluster.journal_topic.clone(),
                replication: config.cluster.replication,
                snapshot: snapshot.clone(),
                checkpoint_every: config.cluster.checkpoint_every,
                snapshot_topic: exchange::cluster::snapshots::SnapshotTopic::of(&config.cluster),
            };
            let replica = exchange::log_replica::LogReplica::start(replica_config, &engine_config)?;
            exchange::log_replica::serve(replica, config.http.listen)
        }
        #[cfg(feature = "sinks")]
        Some(Subcommands::Replica { poll_ms, snapshot, .. }) => {
            if snapshot.is_some() {
                return Err("replica --snapshot needs --from-log (the Redis source has no engine)".into());
            }
            let redis = config.sinks.redis.as_ref().ok_or("replica needs --redis-url (or [sinks.redis] url)")?;
            let mut replica_config = exchange::replica::ReplicaConfig::new(&redis.url, &redis.prefix);
            replica_config.poll = Duration::from_millis((*poll_ms).max(1));
            let replica = exchange::replica::Replica::start(replica_config, &engine_config)?;
            exchange::replica::serve(replica, config.http.listen)
        }
        Some(Subcommands::Snapshot) => {
            require_data(&config)?;
            let mode = runtime::RecoveryMode {
                from_scratch: false,
                open_writer: true,
                accept_journal_loss: cli.accept_journal_loss,
            };
            let (recovered, _) = runtime::recover_with(&config, &engine_config, mode)?;
            let mut bytes = Vec::new();
            recovered.engine.write_snapshot(recovered.last_sequence, &mut bytes);
            let path = engine::snapshot::write_snapshot_file(&config.snapshot_dir(), recovered.last_sequence, &bytes)?;
            println!("snapshot at sequence {} written to {}", recovered.last_sequence, path.display());
            Ok(())
        }
    }
}

/// The trading page's address as a browser on this machine reaches it: a wildcard listen
/// address (`0.0.0.0`, `::`) is shown as loopback.
fn page_url(listen: std::net::SocketAddr, path: &str) -> String {
    let host = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip if ip.is_unspecified() => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}{path}/", std::net::SocketAddr::new(host, listen.port()))
}

/// Refuses an operator tool on a data directory without a journal or snapshot: a mistyped
/// `--data` would otherwise "successfully" rebuild an empty exchange.
fn require_data(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let journal = engine::journal::list_segments(&config.journal_dir())?;
    let snapshots = engine::snapshot::list_snapshots(&config.snapshot_dir())?;
    if journal.is_empty() && snapshots.is_empty() {
        return Err(format!(
            "no journal in {} and no snapshot in {}: nothing to recover (is --data right? the server writes its \
             journal under its data directory, default ./data)",
            config.journal_dir().display(),
            config.snapshot_dir().display()
        )
        .into());
    }
    Ok(())
}

fn serve(
    config: &Config,
    engine_config: engine::EngineConfig,
    args: RunArgs,
    accept_journal_loss: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    // A per-process seed for the engine's lookup maps, so clients cannot precompute colliding ids.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()).rotate_left(32);
    engine::set_lookup_hash_seed(seed);
    if config.journal.durability == DurabilitySetting::Replicated {
        return serve_replicated(config, engine_config, args);
    }
    let mode = runtime::RecoveryMode { from_scratch: false, open_writer: true, accept_journal_loss };
    let (recovered, writer) = runtime::recover_with(config, &engine_config, mode)?;
    let writer = writer.expect("recover opened the writer");
    serve_recovered(config, engine_config, args, recovered, Role::Standalone(writer), started)
}

/// A gateway process: catch up with the log, then serve the same API as the primary with the
/// commands going to the commands topic (docs/deployment.md, "Gateway processes").
#[cfg(feature = "sinks")]
fn serve_gateway(
    config: &Config,
    engine_config: engine::EngineConfig,
    mut args: RunArgs,
    snapshot: Option<&std::path::Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    // The demo and load-test users' keys are served (--demo, --load-users), but the demo market
    // and the funding are the primary's business (serve_recovered skips them here).
    args.print_acks = false;
    let caught_up = exchange::cluster::gateway::catch_up(config, &engine_config, snapshot)?;
    let exchange::cluster::gateway::CaughtUp { engine, last_sequence, position } = caught_up;
    let recovered =
        runtime::Recovered { engine, last_sequence, snapshot: None, replayed: 0, torn_tail: None, prefaulted: false };
    serve_recovered(config, engine_config, args, recovered, Role::Gateway(Box::new(position)), Instant::now())
}

/// The replicated primary and the hot standby are one code path: follow the log until this node
/// holds the lease, promote, then serve (docs/deployment.md, "Replicated journal and failover").
#[cfg(feature = "sinks")]
fn serve_replicated(
    config: &Config,
    engine_config: engine::EngineConfig,
    args: RunArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let status = Arc::new(exchange::cluster::standby::StandbyStatus::default());
    // One user directory for the life of the process: the standby keeps it current from the
    // users topic, so that a promotion reads only what came after (docs/deployment.md, "User
    // directory").
    let (credentials, user_store) = open_directory(config)?;
    loop {
        let cluster = &config.cluster;
        let following = exchange::cluster::users::follow_in_background(
            &cluster.brokers,
            &cluster.users_topic,
            cluster.replication,
            user_store.clone(),
            exchange::cluster::users::FollowMode::Standby,
        )?;
        let users_writer = exchange::cluster::users::UsersTopic::open(
            &cluster.brokers,
            &cluster.users_topic,
            cluster.replication,
            Duration::from_millis(cluster.delivery_timeout_ms.max(1)),
        )?;
        let promoted = exchange::cluster::standby::follow_until_promoted(config, &engine_config, &stop, status.clone());
        let Some(promoted) = promoted? else {
            following.stop();
            tracing::info!("standby stopped");
            return Ok(());
        };
        if args.print_acks {
            // For the failover test: the state the new primary starts serving from.
            use std::io::Write;
            let recovered = &promoted.recovered;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "PROMOTED {} {:#018x}", recovered.last_sequence, recovered.engine.state_hash())
                .and_then(|_| out.flush());
        }
        let cluster = ClusterPrimary {
            replicator: promoted.replicator,
            lease: promoted.lease,
            rings: promoted.rings,
            timeline: promoted.timeline,
            directory: Some((credentials.clone(), user_store.clone())),
            users_following: Some(following),
            users_writer: Some(users_writer),
        };
        let role = Role::Primary(promoted.writer, Box::new(cluster));
        match serve_recovered(config, engine_config.clone(), args.clone(), promoted.recovered, role, Instant::now()) {
            // Only the epoch marker was appended: this node is a standby again. It rebuilds
            // from the log and rejoins the lease group as its youngest member (a new client
            // id), so it does not take the lease back from whoever holds it now.
            Err(error) if error.is::<LeaseLostBeforeServing>() => {
                tracing::warn!("lease lost before serving: following the log again as a standby");
                if args.print_acks {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "DEMOTED").and_then(|_| out.flush());
                }
            }
            served => return served,
        }
    }
}

/// A promoted node lost the lease before it served anything (it appended only its epoch
/// marker): it goes back to following the log instead of exiting.
#[cfg(feature = "sinks")]
#[derive(Debug)]
struct LeaseLostBeforeServing;

#[cfg(feature = "sinks")]
impl std::fmt::Display for LeaseLostBeforeServing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("lease lost before serving")
    }
}

#[cfg(feature = "sinks")]
impl std::error::Error for LeaseLostBeforeServing {}

#[cfg(not(feature = "sinks"))]
fn serve_replicated(
    _config: &Config,
    _engine_config: engine::EngineConfig,
    _args: RunArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    Err("durability \"replicated\" needs the `sinks` feature (Kafka)".into())
}

/// What a replicated primary serves with.
#[cfg(feature = "sinks")]
struct ClusterPrimary {
    replicator: exchange::cluster::standby::TopicReplicator,
    lease: exchange::cluster::lease::Lease,
    rings: runtime::Rings,
    timeline: Arc<exchange::promotion::PromotionTimeline>,
    /// The process's user directory (kept current while it was a standby).
    directory: Option<(Arc<gateway_binary::Credentials>, Arc<gateway_json::UserStore>)>,
    /// The standby's reader of the users topic (stopped by the promotion's users step, beside the
    /// rest of the start: its poll takes up to 20 ms to notice).
    users_following: Option<exchange::cluster::users::UsersFollowing>,
    /// The users topic writer, connected while this node was a standby.
    users_writer: Option<exchange::cluster::users::UsersTopic>,
}

/// Without the `sinks` feature there is no replicated primary.
#[cfg(not(feature = "sinks"))]
enum ClusterPrimary {}

/// What this process serves as.
enum Role {
    /// The engine, with its local journal only.
    Standalone(engine::journal::JournalWriter),
    /// The replicated primary (its local journal, the journal topic, the lease).
    #[cfg_attr(not(feature = "sinks"), allow(dead_code))]
    Primary(engine::journal::JournalWriter, Box<ClusterPrimary>),
    /// A gateway process: no engine of authority; follows the log from this position.
    #[cfg(feature = "sinks")]
    Gateway(Box<exchange::cluster::gateway::LogPosition>),
}

/// What the handlers are wired to: the engine runtime, or a gateway process's core (the same
/// rings, fed through Kafka).
enum Core {
    Engine(Runtime),
    #[cfg(feature = "sinks")]
    Gateway(exchange::cluster::gateway::GatewayCore),
}

impl Core {
    fn ring(&self) -> &Arc<runtime::IngressRing> {
        match self {
            Core::Engine(runtime) => &runtime.ring,
            #[cfg(feature = "sinks")]
            Core::Gateway(core) => &core.ring,
        }
    }

    fn egress(&self) -> &Arc<exchange::egress::BroadcastRing> {
        match self {
            Core::Engine(runtime) => &runtime.egress,
            #[cfg(feature = "sinks")]
            Core::Gateway(core) => &core.egress,
        }
    }

    fn reads(&self) -> &Arc<runtime::EngineReads> {
        match self {
            Core::Engine(runtime) => &runtime.reads,
            #[cfg(feature = "sinks")]
            Core::Gateway(core) => &core.reads,
        }
    }

    fn metrics(&self) -> &Arc<exchange::metrics::Metrics> {
        match self {
            Core::Engine(runtime) => &runtime.metrics,
            #[cfg(feature = "sinks")]
            Core::Gateway(core) => &core.metrics,
        }
    }

    fn stats(&self) -> &Arc<runtime::RuntimeStats> {
        match self {
            Core::Engine(runtime) => &runtime.stats,
            #[cfg(feature = "sinks")]
            Core::Gateway(core) => &core.stats,
        }
    }

    fn is_finished(&self) -> bool {
        match self {
            Core::Engine(runtime) => runtime.is_finished(),
            #[cfg(feature = "sinks")]
            Core::Gateway(core) => core.is_finished(),
        }
    }

    fn shutdown(self) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Core::Engine(runtime) => Ok(runtime.shutdown()?),
            #[cfg(feature = "sinks")]
            Core::Gateway(core) => Ok(core.shutdown()?),
        }
    }
}

/// This process's user directory: the users store (`<data_dir>/users/users.log`) and the API key
/// table it feeds. Registered users and their API keys are not in the journal (docs/rest-api.md);
/// new ids start above every configured and demo user and skip the load-test range.
fn open_directory(
    config: &Config,
) -> Result<(Arc<gateway_binary::Credentials>, Arc<gateway_json::UserStore>), Box<dyn std::error::Error>> {
    let credentials = Arc::new(gateway_binary::Credentials::default());
    let users_config = gateway_json::UsersConfig {
        jwt_secret: (!config.users.jwt_secret.is_empty()).then(|| config.users.jwt_secret.as_bytes().to_vec()),
        jwt_ttl: Duration::from_secs(config.users.jwt_ttl_seconds.max(1)),
        first_user_id: config.users.first_user_id.max(config.configured_user_id_max() + 1).max(5),
        reserved_ids: vec![exchange::demo::LOAD_USER_FIRST..=1_999_999],
        password_min: config.users.password_min_length,
        login_burst_per_user: config.users.login_burst_per_user,
        login_burst_per_ip: config.users.login_burst_per_ip,
        login_refill: Duration::from_secs(config.users.login_refill_seconds.max(1)),
        ..gateway_json::UsersConfig::new(config.users_dir())
    };
    let user_store = Arc::new(gateway_json::UserStore::open(users_config, credentials.clone())?);
    if config.users.jwt_secret.is_empty() {
        tracing::warn!(
            "no users.jwt_secret configured: session tokens are signed with a random key and end at restart"
        );
    }
    Ok((credentials, user_store))
}

fn serve_recovered(
    config: &Config,
    engine_config: engine::EngineConfig,
    args: RunArgs,
    recovered: runtime::Recovered,
    #[cfg_attr(not(feature = "sinks"), allow(unused_mut))] mut role: Role,
    started: Instant,
) -> Result<(), Box<dyn std::error::Error>> {
    tracing::info!(
        data = %config.data_dir.display(),
        snapshot = ?recovered.snapshot.as_ref().map(|s| s.0),
        replayed = recovered.replayed,
        last_sequence = recovered.last_sequence,
        torn_tail = ?recovered.torn_tail,
        state_hash = format_args!("{:#018x}", recovered.engine.state_hash()),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered"
    );
    let http_threads = config.http.checked_worker_threads()?;
    let http_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(http_threads).enable_all().build()?;
    let listener = http_runtime
        .block_on(tokio::net::TcpListener::bind(config.http.listen))
        .map_err(|e| format!("cannot listen on {}: {e}", config.http.listen))?;
    #[cfg(feature = "sinks")]
    let (directory, standby_users_following, users_writer) = match &mut role {
        Role::Primary(_, primary) => {
            (primary.directory.take(), primary.users_following.take(), primary.users_writer.take())
        }
        _ => (None, None, None),
    };
    #[cfg(not(feature = "sinks"))]
    let directory = None;
    let (credentials, user_store) = match directory {
        Some(directory) => directory,
        None => open_directory(config)?,
    };
    for key in &config.api_keys {
        credentials.insert(codec::FixedBytes(key.key()?), codec::UserId::new(key.user_id));
    }
    #[cfg(feature = "sinks")]
    let is_gateway = matches!(role, Role::Gateway(_));
    #[cfg(not(feature = "sinks"))]
    let is_gateway = false;
    for user in exchange::demo::LOAD_USER_FIRST..exchange::demo::LOAD_USER_FIRST + args.load_users {
        let secret = exchange::demo::load_user_secret(user);
        credentials.insert(gateway_binary::client::api_key_of(&secret), codec::UserId::new(user));
    }
    if args.demo {
        for (user, secret) in exchange::demo::demo_secrets() {
            credentials.insert(gateway_binary::client::api_key_of(&secret), codec::UserId::new(user));
        }
    }
    // In a cluster the users topic is the directory (docs/deployment.md, "User directory"): the
    // primary reads it up to its marker (from where its standby's reader stopped), then appends
    // every change of its own there before answering; a gateway process reads it all, then
    // follows it.
    // The primary's reading runs beside the rest of the start (it is joined before any client
    // is served), so that it adds to a failover's time only what the rest does not cover.
    #[cfg(feature = "sinks")]
    let mut users_promotion = None;
    #[cfg(feature = "sinks")]
    let users_following = match &role {
        Role::Primary(_, primary) => {
            let (cluster, store) = (config.cluster.clone(), user_store.clone());
            let epoch = primary.replicator.epoch();
            let promotion = std::thread::Builder::new().name("users-promotion".into()).spawn(move || {
                let writer = match users_writer {
                    Some(writer) => writer,
                    None => exchange::cluster::users::UsersTopic::open(
                        &cluster.brokers,
                        &cluster.users_topic,
                        cluster.replication,
                        Duration::from_millis(cluster.delivery_timeout_ms.max(1)),
                    )?,
                };
                let standby_reader = standby_users_following.and_then(|following| following.stop());
                let topic = writer.promote(epoch, &store, standby_reader)?;
                let stats = topic.stats();
                store.set_directory_log(Arc::new(topic));
                Ok::<_, exchange::cluster::log::ClusterError>(stats)
            })?;
            users_promotion = Some(promotion);
            None
        }
        Role::Gateway(_) => {
            let cluster = &config.cluster;
            Some(exchange::cluster::users::follow_in_background(
                &cluster.brokers,
                &cluster.users_topic,
                cluster.replication,
                user_store.clone(),
                exchange::cluster::users::FollowMode::Gateway,
            )?)
        }
        Role::Standalone(_) => None,
    };
    // The REST market view starts from the recovered books and follows the egress ring from its
    // first event.
    let market_view = Arc::new(marketdata::MarketView::new(&engine_config));
    market_view.seed_books(&recovered.engine);
    // The WebSocket publisher feeds the view (diffs and snapshots share its update ids).
    let publisher =
        marketdata::Publisher::new(market_view.clone(), &engine_config, config.websocket.publisher_config());
    publisher.seed_orders(&recovered.engine);
    // So do the signed REST API's balance and open-order views.
    let account_views = Arc::new(gateway_json::AccountViews::from_engine(&recovered.engine, &engine_config));
    // The FIX gateway reconciles its sessions' stored open orders with the recovered books.
    let fix_resting = gateway_fix::EngineOrders::from_engine(&recovered.engine);
    // Sinks register their pruning floors before the engine thread can take a snapshot.
    let retention = Arc::new(runtime::Retention::default());
    let planned_sinks = exchange::publishers::plan(config, &engine_config, &retention)?;
    // The dispatchers the gateways start below wait on the egress ring as the engine waits on
    // the ingress ring.
    let spin = std::time::Duration::from_micros(config.engine.idle_spin_us);
    engine::doorbell::set_consumer_idle(config.engine.idle.consumer_policy(spin));
    #[cfg(feature = "sinks")]
    let (cluster_epoch, cluster_promotion) = match &role {
        Role::Primary(_, primary) => (Some(primary.replicator.epoch()), Some(primary.timeline.clone())),
        _ => (None, None),
    };
    #[cfg(not(feature = "sinks"))]
    let (cluster_epoch, cluster_promotion): (Option<i64>, Option<Arc<exchange::promotion::PromotionTimeline>>) =
        (None, None);
    #[cfg(feature = "sinks")]
    let (runtime, _lease, commands) = match role {
        Role::Primary(writer, cluster) => {
            let ClusterPrimary { replicator, lease, rings, .. } = *cluster;
            let applied = recovered.engine.gateway_sequences().collect();
            // Nothing was executed or acknowledged under this epoch yet: if the lease is gone
            // already, the node goes back to following the log. From here on, losing the
            // lease ends this process: it stops acknowledging.
            if !lease.commit_to_serving() {
                // The users topic step ends first: this process's store outlives this attempt
                // and must not get this attempt's writer after the next promotion's.
                if let Some(promotion) = users_promotion.take() {
                    let _ = promotion.join();
                }
                return Err(Box::new(LeaseLostBeforeServing));
            }
            let runtime = Runtime::start_replicated(config, recovered, writer, retention, Box::new(replicator), rings)?;
            // The gateway processes' commands (docs/deployment.md, "Gateway processes").
            let cluster = &config.cluster;
            let commands = exchange::cluster::commands::CommandsConsumer::start(
                &cluster.brokers,
                &cluster.commands_topic,
                cluster.commands_partitions,
                cluster.replication,
                applied,
                runtime.ring.clone(),
            )?;
            (Core::Engine(runtime), Some(lease), Some(commands))
        }
        Role::Standalone(writer) => {
            (Core::Engine(Runtime::start_with_retention(config, recovered, writer, retention)?), None, None)
        }
        Role::Gateway(position) => {
            let caught_up = exchange::cluster::gateway::CaughtUp {
                engine: recovered.engine,
                last_sequence: recovered.last_sequence,
                position: *position,
            };
            (Core::Gateway(exchange::cluster::gateway::GatewayCore::start(config, caught_up)?), None, None)
        }
    };
    #[cfg(not(feature = "sinks"))]
    let runtime = match role {
        Role::Primary(_, never) => match *never {},
        Role::Standalone(writer) => Core::Engine(Runtime::start_with_retention(config, recovered, writer, retention)?),
    };
    let sinks = match &runtime {
        Core::Engine(engine_runtime) => planned_sinks.start(config, &engine_config, engine_runtime)?,
        // The primary's sinks write the history; a gateway only reads it.
        #[cfg(feature = "sinks")]
        Core::Gateway(_) => exchange::publishers::Sinks::none(),
    };
    // Both are gating consumers: the engine waits for them rather than lapping them. Should the
    // market view lag all the same, it reseeds its books through the engine thread.
    let market_feed = marketdata::Feed::start_publishing_with_reseed(
        publisher.clone(),
        runtime.egress().subscribe_gating_from(0),
        runtime.reads().clone(),
    )?;
    let rest_gateway = gateway_json::RestGateway::start(account_views, runtime.egress().subscribe_gating_from(0))?;
    let http_address = listener.local_addr()?;
    tracing::info!(listen = %http_address, "HTTP listening (/metrics, /health, /api/v1, WebSocket at / and /ws)");
    // Every user and key of the directory is known before the first client is served.
    #[cfg(feature = "sinks")]
    let cluster_users = match users_promotion {
        Some(promotion) => Some(promotion.join().map_err(|_| "the users topic promotion panicked")??),
        None => users_following.as_ref().map(|following| following.stats()),
    };
    #[cfg(not(feature = "sinks"))]
    let cluster_users = None;
    if is_gateway && (config.binary.enabled || config.fix.enabled) {
        tracing::warn!("a gateway process serves REST and WebSocket only: the SBE and FIX gateways stay off");
    }
    let binary_gateway = if config.binary.enabled && !is_gateway {
        let gateway_config = gateway_binary::GatewayConfig {
            listen: config.binary.listen,
            connections_max: config.binary.connections_max,
            messages_per_second: config.binary.messages_per_second,
            burst: config.binary.burst,
            throttle_strikes_max: config.binary.throttle_strikes_max,
            retransmit_window: config.binary.retransmit_window,
            io: config.binary.io.mode(),
            io_core: config.binary.io_core,
            ..gateway_binary::GatewayConfig::default()
        };
        let (ingress, egress) = (runtime.ring().clone(), runtime.egress().clone());
        let gateway = http_runtime
            .block_on(gateway_binary::BinaryGateway::start(gateway_config, credentials.clone(), ingress, &egress))
            .map_err(|e| format!("cannot start the binary gateway on {}: {e}", config.binary.listen))?;
        Some(gateway)
    } else {
        None
    };
    let fix_gateway = if config.fix.enabled && !is_gateway {
        let mut sessions = Vec::new();
        for session in &config.fix_sessions {
            sessions.push(gateway_fix::SessionConfig {
                sender_comp_id: session.sender_comp_id.clone(),
                target_comp_id: session.target_comp_id.clone(),
                user_id: codec::UserId::new(session.user_id),
                public_key: exchange::config::decode_key(&session.public_key)
                    .map_err(|e| format!("FIX session {}: {e}", session.sender_comp_id))?,
            });
        }
        if args.demo {
            for (user, secret) in exchange::demo::demo_secrets() {
                sessions.push(gateway_fix::SessionConfig {
                    sender_comp_id: format!("DEMO{user}"),
                    target_comp_id: "EXCHANGE".into(),
                    user_id: codec::UserId::new(user),
                    public_key: gateway_binary::client::api_key_of(&secret).0,
                });
            }
        }
        // One session per load-test user (`loadgen fix`): SenderCompID `LOAD<user id>`, the
        // same key as the user's SBE API key.
        for user in exchange::demo::LOAD_USER_FIRST..exchange::demo::LOAD_USER_FIRST + args.load_users {
            sessions.push(gateway_fix::SessionConfig {
                sender_comp_id: format!("LOAD{user}"),
                target_comp_id: "EXCHANGE".into(),
                user_id: codec::UserId::new(user),
                public_key: gateway_binary::client::api_key_of(&exchange::demo::load_user_secret(user)).0,
            });
        }
        let gateway_config = gateway_fix::GatewayConfig {
            listen: config.fix.listen,
            store_dir: config.data_dir.join("fix"),
            // The session stores honour `--durability` as the journal does (docs/fix.md).
            durability: match config.journal.durability {
                DurabilitySetting::Fsync => gateway_fix::store::Durability::Fsync,
                DurabilitySetting::Replicated if config.cluster.local_fsync => gateway_fix::store::Durability::Fsync,
                DurabilitySetting::None | DurabilitySetting::Replicated => gateway_fix::store::Durability::None,
            },
            connections_max: config.fix.connections_max,
            messages_per_second: config.fix.messages_per_second,
            burst: config.fix.burst,
            throttle_strikes_max: config.fix.throttle_strikes_max,
            io: config.fix.io.mode(),
            io_core: config.fix.io_core,
            ..gateway_fix::GatewayConfig::default()
        };
        let (ingress, egress) = (runtime.ring().clone(), runtime.egress().clone());
        let gateway = http_runtime
            .block_on(gateway_fix::FixGateway::start_after_recovery(
                gateway_config,
                sessions,
                &engine_config,
                ingress,
                &egress,
                &fix_resting,
            ))
            .map_err(|e| format!("cannot start the FIX gateway on {}: {e}", config.fix.listen))?;
        Some(gateway)
    } else {
        None
    };

    let stop = Arc::new(AtomicBool::new(false));
    let limits = config.http.limits();
    let key_limiter =
        Arc::new(gateway_json::limits::KeyRateLimiter::new(limits.key_requests_per_second, limits.key_burst));
    let ip_limiter = Arc::new(gateway_json::limits::IpRateLimiter::new(limits.ip_requests_per_second, limits.ip_burst));
    // WebSocket private streams accept the same session tokens (JWT) as the REST API.
    let session_verifier: gateway_json::JwtVerifier = {
        let users = user_store.clone();
        Arc::new(move |token: &str| users.verify_jwt(token).ok())
    };
    let private_api = gateway_json::PrivateState::new(
        &rest_gateway,
        credentials.clone(),
        runtime.ring().clone(),
        Arc::new(engine_config.clone()),
    )
    .with_users(user_store.clone())
    .with_key_limits(key_limiter);
    // With the Postgres sink the fill, order, deposit, withdrawal and public trade history
    // endpoints read its tables.
    #[cfg(feature = "sinks")]
    let (private_api, trade_source) = match &config.sinks.postgres {
        Some(postgres) => {
            let _context = http_runtime.enter();
            let store = Arc::new(exchange::history_store::PostgresHistory::new(&postgres.url)?);
            tracing::info!("REST fill, order, deposit, withdrawal and trade history read from Postgres");
            exchange::directory::start(&postgres.url, user_store.clone())?;
            let trade_source: Arc<dyn gateway_json::TradeSource> = store.clone();
            (private_api.with_history_source(store), Some(trade_source))
        }
        None => (private_api, None),
    };
    #[cfg(not(feature = "sinks"))]
    let trade_source: Option<Arc<dyn gateway_json::TradeSource>> = None;
    let web = if config.web.enabled {
        let path = exchange::web::WebConfig::normalised_path(&config.web.path)?;
        Some(exchange::web::WebConfig { path, dir: config.web.dir.clone(), demo: args.demo })
    } else {
        None
    };
    if let Some(web) = &web {
        tracing::info!(url = %page_url(http_address, &web.path), "trading page (docs/web.md)");
    }
    if args.demo {
        tracing::info!(
            "demo users 1..=4: API keys (secret of user n: 32 bytes of value n) and FIX sessions DEMO1..DEMO4 -> \
             EXCHANGE are in docs/operations.md (\"Demo users\") and docs/fix.md"
        );
    }
    let faucet = args.demo.then(|| exchange::faucet::Faucet::new(&engine_config, private_api.clone()));
    let demo_stats = args.demo.then(|| Arc::new(exchange::demo::DemoStats::new(&engine_config)));
    let router = exchange::http::router(exchange::http::HttpState {
        metrics: runtime.metrics().clone(),
        stats: runtime.stats().clone(),
        ring: runtime.ring().clone(),
        binary: binary_gateway.as_ref().map(|gateway| gateway.stats()),
        fix: fix_gateway.as_ref().map(|gateway| gateway.stats()),
        market_view,
        engine_config: Arc::new(engine_config.clone()),
        private_api,
        users: user_store.clone(),
        admin_token: (!config.admin.token.is_empty()).then(|| config.admin.token.clone()),
        websocket: gateway_json::WsState::new(publisher, credentials.clone(), config.websocket.ws_config())
            .with_jwt(session_verifier),
        web,
        faucet,
        demo: demo_stats.clone(),
        trade_source,
        sinks: sinks.stats(),
        cluster_epoch,
        cluster_promotion: cluster_promotion.clone(),
        #[cfg(feature = "sinks")]
        cluster_commands: commands.as_ref().map(|commands| commands.stats()),
        #[cfg(not(feature = "sinks"))]
        cluster_commands: None,
        cluster_users,
    });
    if config.admin.token.is_empty() {
        tracing::info!("admin API off (no admin token)");
    }
    #[cfg(feature = "sinks")]
    let router = if is_gateway { exchange::cluster::gateway::refuse_directory_writes(router) } else { router };
    let router = gateway_json::limits::with_limits(router, &limits, ip_limiter);
    let listener = gateway_json::limits::LimitedListener::new(listener, &limits);
    let http_stop = stop.clone();
    http_runtime.spawn(async move {
        let shutdown = async move {
            while !http_stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        // Handlers and limits see the client's address (per-IP limits); connections get the
        // header-read and idle timeouts.
        gateway_json::limits::serve(listener, router, shutdown).await;
    });
    if let Some(timeline) = &cluster_promotion {
        timeline.mark(exchange::promotion::PromotionPhase::Serving);
    }
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;

    if args.load_users > 0 && !is_gateway {
        let funding = exchange::demo::load_user_funding(&engine_config, args.load_users);
        exchange::demo::push_all(runtime.ring(), funding, &stop);
        tracing::info!(users = args.load_users, first = exchange::demo::LOAD_USER_FIRST, "load-test users funded");
    }
    // A gateway process serves the demo users' keys; the demo market runs on the primary.
    let demo = demo_stats.filter(|_| !is_gateway).map(|stats| {
        let (ring, stop, config) = (runtime.ring().clone(), stop.clone(), engine_config.clone());
        let (rate, orders) = (args.demo_rate, args.demo_orders);
        tracing::info!(rate, "demo market running");
        std::thread::spawn(move || exchange::demo::run(config, ring, stop, stats, rate, orders))
    });

    let acks = args.print_acks.then(|| {
        let (stats, stop) = (runtime.stats().clone(), stop.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut printed = 0;
            while !stop.load(Ordering::Relaxed) {
                let durable = stats.last_sequence.load(Ordering::Acquire);
                if durable > printed {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ACKED {durable}").and_then(|_| out.flush());
                    printed = durable;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    });

    let deadline = (args.run_for > 0).then(|| Instant::now() + Duration::from_secs(args.run_for));
    let mut last_status = Instant::now();
    let mut last_commands = 0;
    while !stop.load(Ordering::Relaxed) && !runtime.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stop.store(true, Ordering::Relaxed);
        }
        if args.status_every > 0 && last_status.elapsed() >= Duration::from_secs(args.status_every) {
            let stats = runtime.stats();
            let commands = stats.commands.load(Ordering::Relaxed);
            let rate = (commands - last_commands) as f64 / last_status.elapsed().as_secs_f64();
            tracing::info!(
                sequence = stats.last_sequence.load(Ordering::Relaxed),
                commands_per_second = rate as u64,
                fills = stats.fills.load(Ordering::Relaxed),
                rejects = stats.rejects.load(Ordering::Relaxed),
                batches = stats.batches.load(Ordering::Relaxed),
                sinks = ?sinks.cursors(),
                "status"
            );
            last_status = Instant::now();
            last_commands = commands;
        }
    }
    tracing::info!("shutting down: draining the ring, final commit and snapshot");
    stop.store(true, Ordering::Relaxed);
    for thread in [demo, acks].into_iter().flatten() {
        let _ = thread.join();
    }
    if let Some(gateway) = binary_gateway {
        gateway.shutdown();
    }
    if let Some(gateway) = fix_gateway {
        gateway.shutdown();
    }
    #[cfg(feature = "sinks")]
    if let Some(commands) = commands {
        commands.shutdown();
    }
    #[cfg(feature = "sinks")]
    if let Some(following) = users_following {
        following.stop();
    }
    market_feed.shutdown();
    rest_gateway.shutdown();
    let stopped = runtime.shutdown();
    // The engine has published its last event: let the sinks write it (a sink whose service is
    // down gives up after the deadline and catches up from the journal on the next start).
    sinks.shutdown(Duration::from_secs(10));
    stopped?;
    http_runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
