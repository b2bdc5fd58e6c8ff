//! Gateway processes (`exchange gateway`) in front of a replicated primary, with real processes
//! and a real Kafka-protocol broker (tansu, `source scripts/services`):
//!
//! - a replicated primary (`exchange standby --demo`, alone in its lease group, so it promotes)
//!   and two gateway processes (ids 1 and 2) share a journal topic and a commands topic;
//! - demo user 2 places signed limit orders through the primary's own REST port and through both
//!   gateways, interleaved; every gateway answer has the JSON shape of the primary's (same keys,
//!   `status: New`), and the order→ack latency of each path is printed (p50/p99);
//! - a bad order (one the engine rejects: more than the balance) and a malformed one (rejected
//!   by the REST layer) get the same status and `{code, message}` through a gateway as on the
//!   primary;
//! - every order a gateway acknowledged is open on the primary; a gateway refuses to register
//!   users (`403 FORBIDDEN`);
//! - a gateway is killed, its last command is sent again to the commands topic with the same
//!   (gateway id, gateway sequence) as a restarted gateway re-sending its outbox would, the
//!   gateway is restarted: the command is not executed twice (the primary's open orders are
//!   unchanged) and the restarted gateway's new orders are acknowledged.
//!
//!
//! And across a failover: a primary and a standby (fixed HTTP ports) and one gateway; a client
//! places orders through the gateway while the primary is `kill -9`ed; every order the gateway
//! acknowledged is open on the new primary, every request answered after the kill is too, no
//! client id is executed twice, and the time from the kill to the gateway's next acknowledgement
//! is printed.
//!
//! Needs `EXCHANGE_TEST_KAFKA_BROKERS`; skipped loudly without it, failed under
//! `EXCHANGE_REQUIRE_SERVICES=1` (scripts/test).

mod support;

use exchange::cluster::commands::CommandsProducer;
use exchange::cluster::log::{ClusterError, Followed, LogFollower};
use exchange::config::DEFAULT_CONFIG;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::{HTTP_LISTENING, JSON, Server, request, signature_lines};

/// Demo user 2's API secret (`exchange::demo::demo_secrets`).
const SECRET: [u8; 32] = [2; 32];
/// Orders per path for the latency comparison.
const ORDERS_PER_PATH: usize = 100;
/// Orders per path before measuring (a process's first order pays connection set-up: the
/// producer's id and metadata requests, the first fetches).
const WARM_UP_ORDERS: usize = 5;
/// Requests through the gateway across the failover (the primary dies at a third of them).
const REQUESTS_ACROSS_FAILOVER: u32 = 90;
/// How long anything may take (debug build, shared machine).
const PATIENCE: Duration = Duration::from_secs(60);
/// A request body larger than the REST API's limit (`[http] body_bytes_max`, 64 KiB by default).
const BODY_BYTES_OVER_LIMIT: usize = 70 * 1024;

fn call(port: u16, method: &str, path: &str, body: &str, signed: Option<(&str, &str)>) -> (u16, Value) {
    let mut headers = JSON.to_string();
    if let Some((instruction, params)) = signed {
        headers += &signature_lines(&SECRET, &format!("instruction={instruction}{params}"));
    }
    let response = request(port, method, path, &headers, body);
    (response.status(), response.json(path))
}

/// A resting bid far below the market: `(status, body, latency)`.
fn place(port: u16, price: &str, quantity: &str, client_id: u32) -> (u16, Value, Duration) {
    let body = json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": price,
                      "quantity": quantity, "clientId": client_id});
    let params =
        format!("&clientId={client_id}&orderType=Limit&price={price}&quantity={quantity}&side=Bid&symbol=BTC_USDC");
    let started = Instant::now();
    let (status, order) = call(port, "POST", "/api/v1/order", &body.to_string(), Some(("orderExecute", &params)));
    (status, order, started.elapsed())
}

/// A resting bid without a client id: `(status, body)`.
fn place_unlabelled(port: u16, quantity: &str) -> (u16, Value) {
    let body = json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "1000.0",
                      "quantity": quantity});
    let params = format!("&orderType=Limit&price=1000.0&quantity={quantity}&side=Bid&symbol=BTC_USDC");
    call(port, "POST", "/api/v1/order", &body.to_string(), Some(("orderExecute", &params)))
}

fn open_order_ids(port: u16) -> BTreeSet<String> {
    let (status, open) =
        call(port, "GET", "/api/v1/orders?symbol=BTC_USDC", "", Some(("orderQueryAll", "&symbol=BTC_USDC")));
    assert_eq!(status, 200, "{open}");
    open.as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_string()).collect()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

fn percentile(samples: &mut [Duration], fraction: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() - 1) as f64 * fraction).round() as usize]
}

/// Waits until `port` shows demo user 2 funded (a standby answers only `/metrics` and `/health`
/// until it is promoted).
fn wait_funded(port: u16) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let headers = JSON.to_string() + &signature_lines(&SECRET, "instruction=balanceQuery");
        // A standby's status listener closes when it promotes, before the server's opens.
        let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        let response = if listening {
            request(port, "GET", "/api/v1/capital", &headers, "")
        } else {
            support::Response { raw: String::new() }
        };
        if response.status() == 200 && response.json("capital").get("USDC").is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "demo user 2 never funded on port {port}: {}", response.raw);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The payload of the last command gateway `gateway_id` sent, read from the journal topic.
fn last_command_of(brokers: &str, topic: &str, gateway_id: u64) -> Vec<u8> {
    let mut follower = LogFollower::open(brokers, topic, 1).unwrap();
    let end = follower.end_offset().unwrap();
    let mut last = None;
    follower
        .read_until::<ClusterError, _>(end, PATIENCE, &mut |followed| {
            if let Followed::Command(record) = followed
                && let Ok((_, Some(tag))) = codec::decode_journaled(record.payload)
                && tag.gateway_id == gateway_id
            {
                last = Some(record.payload.to_vec());
            }
            Ok(())
        })
        .unwrap();
    last.expect("the gateway's commands are in the log")
}

#[test]
fn gateway_processes_answer_like_the_primary_and_execute_each_command_once() {
    let Some([brokers]) = support::services(["EXCHANGE_TEST_KAFKA_BROKERS"]) else { return };
    let root = support::data_dir("cluster-gateway");
    std::fs::create_dir_all(&root).unwrap();
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
    );
    let (journal_topic, commands_topic) = (format!("gw.journal.{unique}"), format!("gw.commands.{unique}"));
    let config_path = root.join("exchange.toml");
    std::fs::write(
        &config_path,
        format!(
            "{DEFAULT_CONFIG}\n[cluster]\nbrokers = \"{brokers}\"\njournal_topic = \"{journal_topic}\"\nusers_topic = \"{journal_topic}.users\"\n\
             lease_topic = \"gw.lease.{unique}\"\nlease_group = \"gw.{unique}\"\nsession_timeout_ms = 1000\n\
             commands_topic = \"{commands_topic}\"\ncommands_partitions = 2\n"
        ),
    )
    .unwrap();
    let config = config_path.to_str().unwrap();
    let primary = Server::start(
        &root.join("primary"),
        &["--config", config, "standby", "--demo", "--demo-orders", "16", "--status-every", "0"],
        &[],
    );
    wait_funded(primary.http);
    let gateway_args = |id: &'static str| -> Vec<&str> {
        vec!["--config", config, "--gateway-id", id, "gateway", "--demo", "--status-every", "0"]
    };
    let gateway_one = Server::start_waiting_for(&root.join("g1"), &gateway_args("1"), &[], &[HTTP_LISTENING]);
    let mut gateway_two = Server::start_waiting_for(&root.join("g2"), &gateway_args("2"), &[], &[HTTP_LISTENING]);
    wait_funded(gateway_one.http);
    wait_funded(gateway_two.http);

    // Orders through each path, interleaved so that both see the same load.
    let ports = [("primary", primary.http), ("gateway 1", gateway_one.http), ("gateway 2", gateway_two.http)];
    let mut latencies: [Vec<Duration>; 3] = Default::default();
    let mut acked_by_gateways = Vec::new();
    let mut primary_keys = None;
    for round in 0..WARM_UP_ORDERS + ORDERS_PER_PATH {
        for (path, (name, port)) in ports.iter().enumerate() {
            let client_id = (1_000 + round * ports.len() + path) as u32;
            let (status, order, latency) = place(*port, "1000.0", "0.01000", client_id);
            assert_eq!(status, 200, "{name}: {order}");
            assert_eq!(order["status"], "New", "{name}: {order}");
            assert_eq!(order["clientId"], client_id, "{name}: {order}");
            let shape = keys(&order);
            match &primary_keys {
                None => primary_keys = Some(shape),
                Some(expected) => assert_eq!(&shape, expected, "{name} answers another JSON shape: {order}"),
            }
            if round >= WARM_UP_ORDERS {
                latencies[path].push(latency);
            }
            if path > 0 {
                acked_by_gateways.push(order["id"].as_str().unwrap().to_string());
            }
        }
    }
    for (path, (name, _)) in ports.iter().enumerate() {
        let samples = &mut latencies[path];
        let (p50, p99) = (percentile(samples, 0.50), percentile(samples, 0.99));
        println!(
            "order→ack via {name}: p50 {:.2} ms, p99 {:.2} ms ({} orders after {WARM_UP_ORDERS} unmeasured)",
            ms(p50),
            ms(p99),
            samples.len()
        );
    }

    // Errors: one the engine decides (more than the balance) and one the REST layer decides.
    for (price, quantity) in [("1000.0", "100000.00000"), ("1000.05", "0.01000")] {
        let (status, expected, _) = place(primary.http, price, quantity, 7);
        assert!(status >= 400, "{expected}");
        for (name, port) in &ports[1..] {
            let (gateway_status, error, _) = place(*port, price, quantity, 7);
            assert_eq!((gateway_status, &error), (status, &expected), "{name}");
        }
    }

    // Bad requests get the same status and the same body from a gateway process as from the
    // primary: oversized, unsigned, signed with another key, a malformed body, an unknown
    // market, an unknown route (issue #19 follow-up, gap 2).
    let order = json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "1000.0",
                       "quantity": "0.01000"})
    .to_string();
    let params = "&orderType=Limit&price=1000.0&quantity=0.01000&side=Bid&symbol=BTC_USDC";
    let signed = JSON.to_string() + &signature_lines(&SECRET, &format!("instruction=orderExecute{params}"));
    let wrongly_signed = JSON.to_string() + &signature_lines(&[9; 32], &format!("instruction=orderExecute{params}"));
    let oversized = format!("{{\"symbol\":\"{}\"}}", "X".repeat(BODY_BYTES_OVER_LIMIT));
    let bad_requests: [(&str, &str, &str, &str); 7] = [
        ("POST", "/api/v1/order", &signed, &oversized),
        ("POST", "/api/v1/order", JSON, &order),
        ("POST", "/api/v1/order", &wrongly_signed, &order),
        ("POST", "/api/v1/order", &signed, "{\"symbol\": \"BTC_USDC\", \"side\": "),
        ("POST", "/api/v1/order", &signed, "\u{1}\u{2} not json"),
        ("GET", "/api/v1/depth?symbol=NOPE_NOPE", "", ""),
        ("GET", "/api/v1/no-such-route", "", ""),
    ];
    for (method, path, headers, body) in bad_requests {
        let expected = request(primary.http, method, path, headers, body);
        assert!(expected.status() >= 400, "{method} {path}: {}", expected.raw);
        for (name, port) in &ports[1..] {
            let answer = request(*port, method, path, headers, body);
            assert_eq!(
                (answer.status(), answer.body()),
                (expected.status(), expected.body()),
                "{name}: {method} {path} ({} body bytes)",
                body.len()
            );
        }
    }

    // A gateway creates no users (each process numbers new users from its own directory).
    let register = json!({"username": "someone", "password": "a long enough password"}).to_string();
    let refused = request(gateway_one.http, "POST", "/api/v1/auth/register", JSON, &register);
    assert_eq!((refused.status(), refused.json("register")["code"].as_str()), (403, Some("FORBIDDEN")));

    // Every acknowledgement of a gateway is an order on the primary.
    let open_on_primary = open_order_ids(primary.http);
    for id in &acked_by_gateways {
        assert!(open_on_primary.contains(id), "order {id} acknowledged by a gateway is not on the primary");
    }

    // A command re-sent after a gateway restart is not executed twice. The order re-sent is
    // cancelled first (through the primary), so executing it again would open it again.
    let (status, order, _) = place(gateway_two.http, "1000.0", "0.01000", 500);
    assert_eq!(status, 200, "{order}");
    let id = order["id"].as_str().unwrap();
    let params = format!("&orderId={id}&symbol=BTC_USDC");
    let cancel = json!({"symbol": "BTC_USDC", "orderId": id}).to_string();
    let (status, canceled) = call(primary.http, "DELETE", "/api/v1/order", &cancel, Some(("orderCancel", &params)));
    assert_eq!((status, &canceled["status"]), (200, &json!("Cancelled")), "{canceled}");
    let resent = last_command_of(&brokers, &journal_topic, 2);
    assert!(matches!(codec::decode_journaled(&resent), Ok((codec::Command::NewOrder(_), Some(_)))));
    gateway_two.kill();
    let before = open_order_ids(primary.http);
    let outbox = CommandsProducer::open(&brokers, &commands_topic, 2, 1, 2).unwrap();
    outbox.send(&resent).unwrap();
    outbox.flush(PATIENCE);
    gateway_two.restart();
    wait_funded(gateway_two.http);
    let (status, order, _) = place(gateway_two.http, "1000.0", "0.01000", 999);
    assert_eq!((status, &order["status"]), (200, &json!("New")), "{order}");
    // The new order's command was sent after the re-sent one, on the same partition (key =
    // gateway id): once it is answered, the re-sent one was consumed.
    let after = open_order_ids(primary.http);
    let added: Vec<_> = after.difference(&before).collect();
    assert_eq!(
        added,
        [order["id"].as_str().unwrap()],
        "only the new order was added, the re-sent one was not executed"
    );

    // The engine's table of gateway ids fills up (gateways 1 and 2 and as many more as it
    // holds, sent straight to the commands topic): a further gateway's order is rejected with
    // TooManyGateways, which its client sees as a 503 (before, the command was dropped without
    // an answer and the request timed out).
    let health = |port: u16| -> u64 {
        let body = request(port, "GET", "/health", "", "").body().to_string();
        body.trim().strip_prefix("ok ").and_then(|s| s.parse().ok()).unwrap_or(0)
    };
    let before = health(primary.http);
    let filler = engine::testkit::commands::limit(1, 99, codec::Side::Bid, 1, 1, codec::TimeInForce::Gtc, 0);
    let fillers = engine::GATEWAYS_MAX as u64 - 2;
    {
        use sinks::rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
        let producer: ThreadedProducer<DefaultProducerContext> =
            sinks::rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
        for gateway_id in 100..100 + fillers {
            let mut record = [0u8; 512];
            let tag = codec::GatewayTag { gateway_id, gateway_sequence: 1 };
            let length = codec::encode_journaled(&filler, Some(tag), &mut record).unwrap();
            let key = gateway_id.to_string();
            producer.send(BaseRecord::to(&commands_topic).key(&key).payload(&record[..length])).unwrap();
        }
        producer.flush(PATIENCE).unwrap();
    }
    let deadline = Instant::now() + PATIENCE;
    while health(primary.http) < before + fillers {
        assert!(Instant::now() < deadline, "the primary should execute the {fillers} filler commands");
        std::thread::sleep(Duration::from_millis(100));
    }
    let gateway_three = Server::start_waiting_for(&root.join("g3"), &gateway_args("3"), &[], &[HTTP_LISTENING]);
    wait_funded(gateway_three.http);
    let (status, refused, _) = place(gateway_three.http, "1000.0", "0.01000", 4_097);
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["code"], "SERVICE_UNAVAILABLE", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("Too many gateway processes"), "{refused}");
    let (status, order, _) = place(gateway_one.http, "1000.0", "0.01000", 4_098);
    assert_eq!((status, &order["status"]), (200, &json!("New")), "a gateway in the table goes on: {order}");

    drop((primary, gateway_one, gateway_two, gateway_three));
    let _ = std::fs::remove_dir_all(&root);
}

/// A free TCP port on loopback (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A node process, killed (SIGKILL) and reaped when dropped.
struct Node(std::process::Child);

impl Node {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The admin token of the nodes (`EXCHANGE_ADMIN_TOKEN`): deposits for registered users.
const ADMIN_TOKEN: &str = "cluster-gateway-admin-token-0123456789";

/// `exchange standby` on a fixed HTTP port (it listens only once promoted), with the admin API
/// on ([`ADMIN_TOKEN`]); its log goes to `<dir>.log`.
fn standby(dir: &std::path::Path, config: &str, http: u16) -> Node {
    let log = std::fs::File::create(dir.with_extension("log")).unwrap();
    let child = std::process::Command::new(support::BINARY)
        .args(["--data", dir.to_str().unwrap(), "--http-port", &http.to_string(), "--sbe-port", "0", "--fix-port", "0"])
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BROKERS")
        .env_remove("REDIS_URL")
        .env("EXCHANGE_ADMIN_TOKEN", ADMIN_TOKEN)
        .args(["--config", config, "standby", "--demo", "--demo-orders", "16"])
        .args(["--status-every", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Node(child)
}

/// Two engine nodes (the first takes the lease, the second follows as its standby) and one
/// gateway process, on topics of their own (named `<prefix>.*.<unique>`) with a 1 s session
/// timeout; returns once the primary and the gateway serve the funded demo users.
struct Cluster {
    root: std::path::PathBuf,
    port_a: u16,
    port_b: u16,
    node_a: Node,
    node_b: Node,
    gateway: Server,
}

impl Cluster {
    fn start(brokers: &str, name: &str, prefix: &str, gateway_id: u64) -> Self {
        let root = support::data_dir(name);
        std::fs::create_dir_all(&root).unwrap();
        let unique = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
        );
        let config_path = root.join("exchange.toml");
        std::fs::write(
            &config_path,
            format!(
                "{DEFAULT_CONFIG}\n[cluster]\nbrokers = \"{brokers}\"\njournal_topic = \"{prefix}.journal.{unique}\"\n\
                 lease_topic = \"{prefix}.lease.{unique}\"\nlease_group = \"{prefix}.{unique}\"\nsession_timeout_ms = 1000\n\
                 commands_topic = \"{prefix}.commands.{unique}\"\nusers_topic = \"{prefix}.users.{unique}\"\n"
            ),
        )
        .unwrap();
        let config = config_path.to_str().unwrap();
        let (port_a, port_b) = (free_port(), free_port());
        let node_a = standby(&root.join("a"), config, port_a);
        wait_funded(port_a);
        let node_b = standby(&root.join("b"), config, port_b);
        let gateway_id = gateway_id.to_string();
        let gateway = Server::start_waiting_for(
            &root.join("g"),
            &["--config", config, "--gateway-id", &gateway_id, "gateway", "--demo"],
            &[],
            &[HTTP_LISTENING],
        );
        wait_funded(gateway.http);
        Self { root, port_a, port_b, node_a, node_b, gateway }
    }
}

#[test]
fn a_gateway_serves_across_a_failover_and_executes_each_command_once() {
    let Some([brokers]) = support::services(["EXCHANGE_TEST_KAFKA_BROKERS"]) else { return };
    let Cluster { root, port_a: _, port_b, mut node_a, node_b, gateway } =
        Cluster::start(&brokers, "cluster-gateway-failover", "gwf", 5);
    // Give the standby time to join the lease group behind the primary.
    std::thread::sleep(Duration::from_secs(2));

    let mut acked = Vec::new();
    let mut unanswered = Vec::new();
    let mut killed_at = None;
    let mut first_ack_after_kill = None;
    // No client ids (the engine refuses a second open order with the same one, which would hide
    // a double execution): each request has its own quantity instead.
    for request in 1..=REQUESTS_ACROSS_FAILOVER {
        let quantity = format!("0.{:05}", 1_000 + request);
        if request == REQUESTS_ACROSS_FAILOVER / 3 {
            node_a.kill();
            killed_at = Some(Instant::now());
        }
        let (status, order) = place_unlabelled(gateway.http, &quantity);
        match status {
            200 => {
                assert_eq!(order["status"], "New", "{order}");
                acked.push((quantity, order["id"].as_str().unwrap().to_string()));
                if let (Some(killed), None) = (killed_at, first_ack_after_kill) {
                    first_ack_after_kill = Some(killed.elapsed());
                }
            }
            _ => unanswered.push((quantity, status, order)),
        }
    }
    let failover = first_ack_after_kill.expect("the gateway acknowledged orders after the failover");
    println!(
        "kill -9 of the primary → next acknowledgement through the gateway: {:.0} ms; {} unanswered: {unanswered:?}",
        ms(failover),
        unanswered.len()
    );
    wait_funded(port_b);
    let (status, open) =
        call(port_b, "GET", "/api/v1/orders?symbol=BTC_USDC", "", Some(("orderQueryAll", "&symbol=BTC_USDC")));
    assert_eq!(status, 200, "{open}");
    let open: Vec<(String, String)> = open
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["quantity"].as_str().unwrap().to_string(), o["id"].as_str().unwrap().to_string()))
        .collect();
    for (quantity, id) in &acked {
        assert!(open.contains(&(quantity.clone(), id.clone())), "acknowledged order {id} ({quantity}) lost: {open:?}");
    }
    // An unanswered request may or may not have taken effect, but nothing is executed twice.
    let mut quantities: Vec<&str> = open.iter().map(|(quantity, _)| quantity.as_str()).collect();
    quantities.sort_unstable();
    let count = quantities.len();
    quantities.dedup();
    assert_eq!(quantities.len(), count, "a request executed twice: {open:?}");
    assert!(count >= acked.len());
    drop((node_a, node_b, gateway));
    let _ = std::fs::remove_dir_all(&root);
}

/// A request with `headers` (lines, each ending in CRLF) and a JSON body: `(status, body)`.
fn call_with(port: u16, method: &str, path: &str, headers: &str, body: &str) -> (u16, Value) {
    let response = request(port, method, path, &(JSON.to_string() + headers), body);
    (response.status(), response.json(path))
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// A resting bid of `0.01` at 1000 signed with `secret`: `(status, body)`.
fn place_signed(port: u16, secret: &[u8; 32]) -> (u16, Value) {
    let body = json!({"symbol": "BTC_USDC", "side": "Bid", "orderType": "Limit", "price": "1000.0",
                      "quantity": "0.01000"});
    let params = "&orderType=Limit&price=1000.0&quantity=0.01000&side=Bid&symbol=BTC_USDC";
    let headers = signature_lines(secret, &format!("instruction=orderExecute{params}"));
    call_with(port, "POST", "/api/v1/order", &headers, &body.to_string())
}

/// Registers `username` on `port` and logs in: `(user id, session token)`.
fn register_and_login(port: u16, username: &str) -> (u64, String) {
    let credentials = json!({"username": username, "password": "a long enough password"}).to_string();
    let (status, user) = call_with(port, "POST", "/api/v1/auth/register", "", &credentials);
    assert_eq!(status, 201, "{user}");
    let (status, session) = call_with(port, "POST", "/api/v1/auth/login", "", &credentials);
    assert_eq!(status, 200, "{session}");
    (user["userId"].as_u64().unwrap(), session["token"].as_str().unwrap().to_string())
}

/// Generates an API key for the session's user: `(public key, secret)`.
fn generate_key(port: u16, token: &str) -> (String, [u8; 32]) {
    use base64::Engine as _;
    let (status, key) = call_with(port, "POST", "/api/v1/account/keys", &bearer(token), r#"{"label":"bot"}"#);
    assert_eq!(status, 201, "{key}");
    let secret = base64::engine::general_purpose::STANDARD.decode(key["secret"].as_str().unwrap()).unwrap();
    (key["apiKey"].as_str().unwrap().to_string(), secret.try_into().unwrap())
}

/// Credits `user` with 100,000 USDC through the admin API of `port`.
fn deposit(port: u16, user: u64) {
    let body = json!({"userId": user, "symbol": "USDC", "quantity": "100000"}).to_string();
    let (status, answer) = call_with(port, "POST", "/api/v1/admin/deposits", &bearer(ADMIN_TOKEN), &body);
    assert_eq!(status, 200, "{answer}");
}

/// Polls `attempt` every 20 ms until it returns `Some`, for at most [`USERS_TOPIC_PATIENCE`]:
/// the value and how long it took.
fn within_users_patience<T>(what: &str, mut attempt: impl FnMut() -> Result<T, String>) -> (T, Duration) {
    let started = Instant::now();
    loop {
        match attempt() {
            Ok(value) => return (value, started.elapsed()),
            Err(last) => {
                assert!(started.elapsed() < USERS_TOPIC_PATIENCE, "{what} not within {USERS_TOPIC_PATIENCE:?}: {last}")
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long a change of the user directory on the primary may take to be honoured by a gateway
/// process (a produce, a fetch of the users topic; the deposit through the journal topic): the
/// goal is about a second, this bound leaves room for a loaded debug build.
const USERS_TOPIC_PATIENCE: Duration = Duration::from_secs(10);

/// The shared user directory (the users topic, docs/deployment.md "User directory"): a user and
/// keys registered on the primary **after** the gateway process started trade through it without
/// a restart, a key revoked on the primary is refused by the gateway, and a standby promoted
/// after the registration knows the user (its key works there, and it numbers new users after
/// the highest id it read); a user registered on that new primary reaches the gateway too.
#[test]
fn users_registered_on_the_primary_reach_a_running_gateway_and_a_promoted_standby() {
    let Some([brokers]) = support::services(["EXCHANGE_TEST_KAFKA_BROKERS"]) else { return };
    let Cluster { root, port_a, port_b, mut node_a, node_b, gateway } =
        Cluster::start(&brokers, "cluster-gateway-users", "gwu", 6);
    // Registered on the primary after the gateway started.
    let (alice, token) = register_and_login(port_a, "alice");
    let (_, trading_secret) = generate_key(port_a, &token);
    let (revoked_key, revoked_secret) = generate_key(port_a, &token);
    deposit(port_a, alice);
    let (order, took) = within_users_patience("alice's signed order through the gateway", || {
        match place_signed(gateway.http, &trading_secret) {
            (200, order) => Ok(order),
            (status, body) => Err(format!("{status} {body}")),
        }
    });
    assert_eq!(order["status"], "New", "{order}");
    println!("key registered on the primary → first order accepted through the gateway: {:.0} ms", ms(took));
    // Her password works on the gateway too (sessions are per process).
    let credentials = json!({"username": "alice", "password": "a long enough password"}).to_string();
    let (status, session) = call_with(gateway.http, "POST", "/api/v1/auth/login", "", &credentials);
    assert_eq!(status, 200, "{session}");
    let (status, account) =
        call_with(gateway.http, "GET", "/api/v1/account", &bearer(session["token"].as_str().unwrap()), "");
    assert_eq!((status, account["userId"].as_u64()), (200, Some(alice)), "{account}");

    // A key revoked on the primary is refused by the gateway.
    let (status, answer) = place_signed(gateway.http, &revoked_secret);
    assert_eq!(status, 200, "the second key works before its revocation: {answer}");
    let revoke = json!({"apiKey": revoked_key}).to_string();
    let (status, answer) = call_with(port_a, "DELETE", "/api/v1/account/keys", &bearer(&token), &revoke);
    assert_eq!(status, 200, "{answer}");
    let (refusal, took) = within_users_patience("the revoked key refused by the gateway", || {
        match place_signed(gateway.http, &revoked_secret) {
            (401, body) => Ok(body),
            (status, body) => Err(format!("{status} {body}")),
        }
    });
    assert_eq!(refusal["message"], "Unknown API key", "{refusal}");
    println!("key revoked on the primary → refused by the gateway: {:.0} ms", ms(took));
    // The user, two keys and a revocation: four records applied by the gateway's reader.
    let metrics = request(gateway.http, "GET", "/metrics", "", "").body().to_string();
    assert!(metrics.lines().any(|line| line == "exchange_cluster_users_applied_total 4"), "{metrics}");
    assert!(metrics.lines().any(|line| line == "exchange_cluster_users_refused_total 0"), "{metrics}");

    // A standby promoted after the registration knows alice and numbers after her.
    std::thread::sleep(Duration::from_secs(2)); // the standby joins the lease group
    node_a.kill();
    // Its status listener (before) answers nothing but /metrics and /health: wait for the server.
    let log_b = root.join("b.log");
    let deadline = Instant::now() + PATIENCE;
    while !std::fs::read_to_string(&log_b).unwrap_or_default().contains("phase=\"serving\"") {
        assert!(Instant::now() < deadline, "the standby never promoted");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_funded(port_b);
    let read = std::fs::read_to_string(&log_b).unwrap_or_default();
    let users_read = read.lines().find(|line| line.contains("users topic read up to")).unwrap_or("none");
    println!("the promoted standby's users topic step: {users_read}");
    let (status, order) = place_signed(port_b, &trading_secret);
    assert_eq!((status, &order["status"]), (200, &json!("New")), "alice's key on the promoted standby: {order}");
    let (status, _) = place_signed(port_b, &revoked_secret);
    assert_eq!(status, 401, "the revocation is known to the promoted standby");
    let (bob, bob_token) = register_and_login(port_b, "bob");
    assert!(bob > alice, "the new primary numbers after the highest id it read: bob {bob}, alice {alice}");
    let (_, bob_secret) = generate_key(port_b, &bob_token);
    deposit(port_b, bob);
    within_users_patience("bob's order (registered on the new primary) through the gateway", || {
        match place_signed(gateway.http, &bob_secret) {
            (200, order) => Ok(order),
            (status, body) => Err(format!("{status} {body}")),
        }
    });
    drop((node_a, node_b, gateway));
    let _ = std::fs::remove_dir_all(&root);
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
