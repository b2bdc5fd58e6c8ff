//! The whole path through the SBE gateway of the real server: log on as a demo user, place an
//! order, get its acknowledgement (sent only once the command is durable), `kill -9` the server,
//! restart it, and find the order still resting (cancelling it succeeds).

use codec::*;
use gateway_binary::client::{Client, Incoming};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BINARY: &str = env!("CARGO_BIN_EXE_exchange");
/// Demo user 2's API secret (see `exchange::demo::demo_secrets`).
const SECRET: [u8; 32] = [2; 32];

/// Starts the server with the demo users (funding only) and returns it with the SBE port.
fn start(dir: &std::path::Path) -> (Child, u16) {
    let mut child = Command::new(BINARY)
        .args(["--data", dir.to_str().unwrap(), "--http-port", "0", "--sbe-port", "0", "--fix-port", "0"])
        .args(["run", "--demo", "--demo-orders", "16", "--status-every", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let port = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "server exited early");
        if line.contains("binary gateway listening")
            && let Some(address) = line.split("listen=").nth(1)
        {
            break address.split_whitespace().next().unwrap().rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, port)
}

fn next_event(client: &mut Client) -> Event {
    match client.receive_application().unwrap() {
        Incoming::Event(event) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn acknowledged_order_survives_kill_dash_nine() {
    let dir = std::env::temp_dir().join(format!("exchange-binary-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut server, port) = start(&dir);
    let mut client = Client::connect(("127.0.0.1", port), &SECRET, 1).unwrap();
    assert_eq!(client.ack.user_id.get(), 2);
    // A bid far below the market (BTC_USDC, 1,000 USDC), 0.001 BTC. The demo funding may still be
    // on its way: retry (with a fresh client order id) while funds are missing.
    let accepted = (4242..4300)
        .find_map(|client_order_id| {
            let order =
                engine::testkit::commands::limit(0, 1, Side::Bid, 10_000, 100, TimeInForce::Gtc, client_order_id);
            client.send(&order).unwrap();
            match next_event(&mut client) {
                Event::OrderAccepted(accepted) => Some(accepted),
                Event::OrderRejected(r) if r.reason.get() == Ok(RejectReason::InsufficientBalance) => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    None
                }
                other => panic!("unexpected {other:?}"),
            }
        })
        .expect("the order is accepted once the demo users are funded");

    server.kill().unwrap(); // SIGKILL, right after the acknowledgement
    server.wait().unwrap();

    let (mut server, port) = start(&dir);
    let mut client = Client::connect(("127.0.0.1", port), &SECRET, 1).unwrap();
    client.send(&engine::testkit::commands::cancel(0, 1, accepted.order_id.get())).unwrap();
    let Event::OrderCanceled(canceled) = next_event(&mut client) else { panic!("the acknowledged order is gone") };
    assert_eq!((canceled.order_id, canceled.canceled_lots.get()), (accepted.order_id, 100));
    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(server.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
}
