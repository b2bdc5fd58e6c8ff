//! FIX order state across a server crash, with the real server binary: a resting order placed
//! and partly filled over FIX, `kill -9`, a restart on the same data directory, and a fill by
//! another FIX session afterwards that reaches the order's session as an ExecutionReport with
//! the right ClOrdID, CumQty, LeavesQty and AvgPx (the FIX gateway's session store keeps the
//! order, reconciled with the recovered book). Under both `--durability` settings: the store is
//! written before a message is sent, so after a `kill -9` the gateway's numbers continue after
//! the last one the client received, even when nothing was ever `fsync`ed.

mod support;

use gateway_fix::parser::{Parsed, parse};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};
use support::fix::{FixClient, Msg, get};
use support::{FIX_LISTENING, Server};

/// First load-test user (`--load-users`), see exchange::demo.
const LOAD_USER_FIRST: u64 = 1_000_001;

/// Starts the server with `durability` and two load-test users (each with a FIX session
/// `LOAD<id>`); returns it once the users are funded.
fn start(dir: &Path, durability: &str) -> Server {
    Server::start_waiting_for(
        dir,
        &["--durability", durability, "run", "--load-users", "2"],
        &[],
        &[FIX_LISTENING, "load-test users funded"],
    )
}

/// A load-test user's FIX session that also checks the numbers it receives across restarts.
struct Fix {
    client: FixClient,
    /// MsgSeqNum of the last message received from the gateway (0: none yet).
    last_received: u64,
}

impl std::ops::Deref for Fix {
    type Target = FixClient;
    fn deref(&self) -> &FixClient {
        &self.client
    }
}

impl std::ops::DerefMut for Fix {
    fn deref_mut(&mut self) -> &mut FixClient {
        &mut self.client
    }
}

impl Fix {
    /// Connects with the next number to send and the last number received (the session's).
    fn connect(port: u16, user: u64, next_seq: u64, last_received: u64) -> Self {
        Self { client: FixClient::connect(port, user, next_seq), last_received }
    }

    fn logon(&mut self, reset: bool) {
        let mut body = vec![(98, "0".to_string()), (108, "30".to_string())];
        if reset {
            body.push((141, "Y".to_string()));
            self.last_received = 0;
        }
        self.send("A", &body);
        assert_eq!(get(&self.expect(&["A"]), 35), "A");
    }

    /// The next message of one of `types` (heartbeats and resend requests are skipped); every
    /// message must carry a number above the last one received (none reused; messages the test
    /// did not read before a crash make gaps).
    fn expect(&mut self, types: &[&str]) -> Msg {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no {types:?}");
            if let Parsed::Complete(message, used) = parse(&self.buffer) {
                let owned: Msg = message.fields().map(|(t, v)| (t, String::from_utf8_lossy(v).into_owned())).collect();
                self.buffer.drain(..used);
                let seq: u64 = get(&owned, 34).parse().unwrap();
                assert!(seq > self.last_received, "MsgSeqNum reused after {}: {owned:?}", self.last_received);
                self.last_received = seq;
                if types.contains(&get(&owned, 35)) {
                    return owned;
                }
                assert!(matches!(get(&owned, 35), "0" | "1" | "2"), "unexpected {owned:?}");
                continue;
            }
            let mut chunk = [0u8; 4096];
            let read = self.stream.read(&mut chunk).unwrap();
            assert!(read > 0, "the server closed the connection");
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    fn limit(&mut self, cl_ord_id: &str, side: &str, price: &str, quantity: &str) {
        let fields = [(11, cl_ord_id), (55, "BTC_USDC"), (54, side), (38, quantity), (40, "2"), (44, price)];
        self.send("D", &fields.map(|(t, v)| (t, v.to_string())));
    }
}

#[test]
fn fills_after_a_crash_reach_the_fix_session_with_the_right_quantities() {
    crash_and_fill("fix-restart", "fsync");
}

#[test]
fn without_fsync_a_crash_loses_no_fix_sequence_number_or_order() {
    crash_and_fill("fix-restart-none", "none");
}

fn crash_and_fill(name: &str, durability: &str) {
    let dir = support::data_dir(name);
    let mut server = start(&dir, durability);
    let port = server.fix_port();
    let (maker_user, taker_user) = (LOAD_USER_FIRST, LOAD_USER_FIRST + 1);
    let mut maker = Fix::connect(port, maker_user, 1, 0);
    maker.logon(true);
    let mut taker = Fix::connect(port, taker_user, 1, 0);
    taker.logon(true);
    // The users' funding is on the ring when the log says so; wait until it is applied.
    let mut attempt = 0;
    let new = loop {
        attempt += 1;
        maker.limit(&format!("M{attempt}"), "2", "60000", "0.0003");
        let report = maker.expect(&["8"]);
        if get(&report, 150) == "0" {
            break report;
        }
        assert!(attempt < 50, "never funded: {report:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let cl_ord_id = get(&new, 11).to_string();
    let order_id = get(&new, 37).to_string();
    // A partial fill before the crash.
    taker.limit("T1", "1", "60000", "0.0001");
    assert_eq!(get(&taker.expect(&["8"]), 150), "0");
    let fill = maker.expect(&["8"]);
    assert_eq!((get(&fill, 150), get(&fill, 14), get(&fill, 151)), ("F", "0.0001", "0.0002"));

    server.restart(); // SIGKILL, then start again on the same data
    let port = server.fix_port();

    // Both sessions come back with their sequence numbers (the Logon answers carry a number
    // above the last one received before the crash); the taker fills more of the order.
    let mut maker = Fix::connect(port, maker_user, maker.next_seq, maker.last_received);
    maker.logon(false);
    let mut taker = Fix::connect(port, taker_user, taker.next_seq, taker.last_received);
    taker.logon(false);
    taker.limit("T2", "1", "60000", "0.00015");
    let report = taker.expect(&["8"]);
    assert_eq!(get(&report, 150), "0", "{report:?}");
    let fill = maker.expect(&["8"]);
    assert_eq!((get(&fill, 150), get(&fill, 39), get(&fill, 37)), ("F", "1", order_id.as_str()), "{fill:?}");
    assert_eq!(get(&fill, 11), cl_ord_id, "the ClOrdID survives the restart");
    assert_eq!(
        (get(&fill, 32), get(&fill, 31), get(&fill, 14), get(&fill, 151), get(&fill, 6)),
        ("0.00015", "60000", "0.00025", "0.00005", "60000"),
        "{fill:?}"
    );
    // And the last part: Filled.
    taker.limit("T3", "1", "60000", "0.00005");
    let fill = maker.expect(&["8"]);
    assert_eq!((get(&fill, 39), get(&fill, 14), get(&fill, 151)), ("2", "0.0003", "0"), "{fill:?}");

    server.kill();
    std::fs::remove_dir_all(&dir).unwrap();
}
