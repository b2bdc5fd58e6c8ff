//! Order entry over the SBE binary gateway: log on, place a limit order, cancel it, print every
//! report the server sends.
//!
//! Start an exchange with its demo users in one terminal:
//!
//! ```text
//! cargo run --release -p exchange -- --demo
//! ```
//!
//! and run this in another:
//!
//! ```text
//! cargo run -p gateway-binary --example order_entry
//! cargo run -p gateway-binary --example order_entry -- 127.0.0.1:9100 3
//! ```
//!
//! Arguments: the gateway address (default `127.0.0.1:9100`) and the demo user (default 2). With
//! `--demo` the exchange registers the API keys of demo users 1 to 4, user `n`'s secret (an
//! Ed25519 seed) being 32 bytes of value `n` — public knowledge, for demos only. The order is a
//! GTC bid for 10 lots (0.0001 BTC) on BTC_USDC (market 1) at 540000 ticks (54,000 USDC), about
//! 10% under the demo's mid price, so it normally rests until the cancel (the demo's traders do
//! sell into the book at times: any fill is printed too). The protocol is described in
//! docs/binary-protocol.md.

use codec::*;
use gateway_binary::client::{Client, ClientError, Incoming};
use std::process::ExitCode;
use std::time::Duration;

const MARKET_BTC_USDC: u32 = 1;
const PRICE_TICKS: u64 = 540_000;
const QUANTITY_LOTS: u64 = 10;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:9100".into());
    let user: u8 = match args.next().map(|user| user.parse()) {
        None => 2,
        Some(Ok(user)) => user,
        Some(Err(_)) => {
            eprintln!("usage: order_entry [ADDRESS] [DEMO_USER]");
            return ExitCode::FAILURE;
        }
    };
    match run(&address, user) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("order_entry: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(address: &str, user: u8) -> Result<(), ClientError> {
    let secret = [user; 32];
    let mut client = Client::connect(address, &secret, 1)?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    let ack = client.ack;
    println!(
        "logged on to {address} as user {} (next server sequence {}, keep-alive {} ms)",
        ack.user_id,
        ack.next_sequence,
        ack.keep_alive_ms.get()
    );
    // The session belongs to the API key and outlives connections: the server's application
    // messages are numbered on from earlier runs (a client that missed some would ask for them
    // with a RetransmitRequest), and a client order id can be used only once per session. The
    // number of our next message is one we have not used yet.
    let mut sequence = ack.next_sequence.get();
    let client_order_id = ack.next_expected_sequence.get();

    // The user id in the message is ignored: the server uses the session's.
    let order = Command::NewOrder(NewOrder {
        user_id: UserId::ZERO,
        client_order_id: ClientOrderId::new(client_order_id),
        price_ticks: Ticks::new(PRICE_TICKS),
        quantity_lots: Lots::new(QUANTITY_LOTS),
        quote_quantity: Amount::ZERO,
        market_id: MarketId::new(MARKET_BTC_USDC),
        side: Side::Bid.into(),
        order_type: OrderType::Limit.into(),
        time_in_force: TimeInForce::Gtc.into(),
        self_trade_prevention: SelfTradePrevention::RejectTaker.into(),
        post_only: false.into(),
        ..NewOrder::default()
    });
    println!("-> NewOrder: bid {QUANTITY_LOTS} lots at {PRICE_TICKS} ticks, client order id {client_order_id}");
    client.send(&order)?;

    // The acceptance (or a refusal) comes first.
    let incoming = client.receive_application()?;
    print_report(&mut sequence, &incoming);
    if let Incoming::Event(Event::OrderAccepted(accepted)) = incoming {
        println!("-> CancelOrder: order {}", accepted.order_id);
        client.send(&Command::CancelOrder(CancelOrder {
            user_id: UserId::ZERO,
            order_id: accepted.order_id,
            client_order_id: ClientOrderId::ZERO,
            market_id: MarketId::new(MARKET_BTC_USDC),
            reserved: Reserved::ZERO,
        }))?;
        // Fills may come first (the order crossed, or someone sold into it meanwhile); then the
        // cancel is confirmed, or refused as UnknownOrder if nothing was left open.
        loop {
            let incoming = client.receive_application()?;
            print_report(&mut sequence, &incoming);
            if matches!(
                incoming,
                Incoming::Event(Event::OrderCanceled(_) | Event::OrderRejected(_))
                    | Incoming::Session(Session::BusinessReject(_))
            ) {
                break;
            }
        }
    }

    // Log out: the server answers with its own Terminate and closes.
    client.send_session(Session::Terminate(Terminate {
        reason: TerminateReason::Finished.into(),
        reserved: Reserved::ZERO,
    }))?;
    match client.receive_application() {
        Err(ClientError::Terminated(reason)) => println!("<- Terminate({reason:?}): logged out"),
        Ok(other) => println!("<- {other:?}"),
        Err(error) => return Err(error),
    }
    Ok(())
}

/// Prints one server message; application messages with their implicit sequence number.
fn print_report(sequence: &mut u64, incoming: &Incoming) {
    let numbered = matches!(incoming, Incoming::Event(_) | Incoming::Session(Session::BusinessReject(_)));
    let prefix = if numbered {
        *sequence += 1;
        format!("<- #{}", *sequence - 1)
    } else {
        "<-".to_string()
    };
    match incoming {
        Incoming::Event(Event::OrderAccepted(m)) => println!(
            "{prefix} OrderAccepted: order {} (client id {}) {:?} {} lots at {} ticks on market {}",
            m.order_id, m.client_order_id, m.side, m.quantity_lots, m.price_ticks, m.market_id
        ),
        Incoming::Event(Event::Fill(m)) => {
            // The counterparty's fields are zeroed: a non-zero maker order id means ours rested.
            let (role, remaining, done) = if m.maker_order_id != OrderId::ZERO {
                ("maker", m.maker_remaining_lots, m.completes_maker())
            } else {
                ("taker", m.taker_remaining_lots, m.completes_taker())
            };
            // The order is done when the fill says so (a quote-quantity market order shows 0 lots
            // left on every fill).
            let state = if done { "order filled".to_string() } else { format!("{remaining} lots left open") };
            println!(
                "{prefix} Fill: trade {} of {} lots at {} ticks as {role}, {state}",
                m.trade_id, m.quantity_lots, m.price_ticks
            );
        }
        Incoming::Event(Event::OrderCanceled(m)) => println!(
            "{prefix} OrderCanceled: order {} ({} lots cancelled, {} filled, reason {:?})",
            m.order_id, m.canceled_lots, m.filled_lots, m.reason
        ),
        Incoming::Event(Event::OrderRejected(m)) => {
            let reason = m.reason.get().map_or_else(|_| format!("{:?}", m.reason), |r| format!("{r:?} ({r})"));
            println!("{prefix} OrderRejected: {reason}");
        }
        Incoming::Session(Session::BusinessReject(m)) => {
            let reason = m.reason.get().map_or_else(|_| format!("{:?}", m.reason), |r| format!("{r:?} ({r})"));
            println!("{prefix} BusinessReject of client message #{}: {reason}", m.client_sequence);
        }
        other => println!("{prefix} {other:?}"),
    }
}
