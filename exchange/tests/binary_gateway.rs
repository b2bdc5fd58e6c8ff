//! The whole path through the SBE gateway of the real server: log on as a demo user, place an
//! order, get its acknowledgement (sent only once the command is durable), `kill -9` the server,
//! restart it, and find the order still resting (cancelling it succeeds).

mod support;

use codec::*;
use gateway_binary::client::{Client, Incoming};
use support::{SBE_LISTENING, Server};

/// Demo user 2's API secret (see `exchange::demo::demo_secrets`).
const SECRET: [u8; 32] = [2; 32];

/// Starts the server with the demo users (funding only), once its SBE gateway listens.
fn start(dir: &std::path::Path) -> Server {
    let args = ["run", "--demo", "--demo-orders", "16", "--status-every", "0"];
    Server::start_waiting_for(dir, &args, &[], &[SBE_LISTENING])
}

fn next_event(client: &mut Client) -> Event {
    match client.receive_application().unwrap() {
        Incoming::Event(event) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn acknowledged_order_survives_kill_dash_nine() {
    let dir = support::data_dir("binary-e2e");
    let mut server = start(&dir);
    let port = server.sbe_port();
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

    server.restart(); // SIGKILL, right after the acknowledgement, then start again on the same data
    let port = server.sbe_port();
    let mut client = Client::connect(("127.0.0.1", port), &SECRET, 1).unwrap();
    client.send(&engine::testkit::commands::cancel(0, 1, accepted.order_id.get())).unwrap();
    let Event::OrderCanceled(canceled) = next_event(&mut client) else { panic!("the acknowledged order is gone") };
    assert_eq!((canceled.order_id, canceled.canceled_lots.get()), (accepted.order_id, 100));
    assert!(server.terminate().success());
    std::fs::remove_dir_all(&dir).unwrap();
}
