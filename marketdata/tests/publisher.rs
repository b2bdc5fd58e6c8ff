//! The publisher without sockets: encode once (one buffer shared by every subscriber), nothing
//! encoded for streams without subscribers, gap-free depth ids, lag handling (resync with a
//! snapshot that continues gap-free, disconnect policy, too many resyncs), conflated depth,
//! private streams filed per user, and the AMM pool stream.

use bytes::Bytes;
use codec::*;
use engine::EngineConfig;
use marketdata::{Delivery, LagPolicy, MarketView, Publisher, PublisherConfig, StreamKey};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn level(market: u32, side: Side, price: u64, lots: u64) -> Event {
    Event::BookLevelUpdate(BookLevelUpdate {
        timestamp_ns: TimestampNs::new(1_700_000_000_000_000_000),
        price_ticks: Ticks::new(price),
        quantity_lots: Lots::new(lots),
        order_count: OrderCount::new(u32::from(lots > 0)),
        market_id: MarketId::new(market),
        side: side.into(),
        ..Default::default()
    })
}

fn publisher(config: PublisherConfig) -> Arc<Publisher> {
    let engine = EngineConfig::sample();
    Publisher::new(Arc::new(MarketView::new(&engine)), &engine, config)
}

fn json(frame: &Bytes) -> Value {
    serde_json::from_slice(frame).unwrap()
}

async fn frames(subscription: &marketdata::Subscription) -> Vec<Bytes> {
    match tokio::time::timeout(Duration::from_secs(5), subscription.next()).await.unwrap() {
        Delivery::Frames(frames) => frames,
        other => panic!("expected frames, got {other:?}"),
    }
}

/// A book rebuilt from depth frames: `(price text, quantity text)` per side.
#[derive(Default, Debug, PartialEq)]
struct Rebuilt {
    asks: BTreeMap<String, String>,
    bids: BTreeMap<String, String>,
    last: u64,
}

impl Rebuilt {
    fn apply(&mut self, data: &Value) {
        for (key, side) in [("a", &mut self.asks), ("b", &mut self.bids)] {
            for level in data[key].as_array().unwrap() {
                let (price, quantity) = (level[0].as_str().unwrap(), level[1].as_str().unwrap());
                if quantity == "0" {
                    side.remove(price);
                } else {
                    side.insert(price.into(), quantity.into());
                }
            }
        }
    }
}

#[tokio::test]
async fn encodes_once_for_every_subscriber() {
    let publisher = publisher(PublisherConfig::default());
    let key = StreamKey::Depth(MarketId::new(1));
    let subscriptions: Vec<_> = (0..50).map(|_| publisher.connect()).collect();
    for subscription in &subscriptions {
        assert!(subscription.subscribe(key).unwrap());
        assert!(!subscription.subscribe(key).unwrap(), "already subscribed");
    }
    // Nobody listens to market 2: nothing is encoded for it.
    publisher.on_command(&[level(2, Side::Bid, 10, 1)]);
    assert_eq!(publisher.stats().frames_encoded.load(Ordering::Relaxed), 0);
    publisher.on_command(&[level(1, Side::Bid, 10, 5), level(1, Side::Ask, 12, 3), level(1, Side::Bid, 10, 4)]);
    assert_eq!(publisher.stats().frames_encoded.load(Ordering::Relaxed), 1);
    assert_eq!(publisher.stats().frames_queued.load(Ordering::Relaxed), 50);
    let mut pointers = Vec::new();
    for subscription in &subscriptions {
        let frames = frames(subscription).await;
        assert_eq!(frames.len(), 1);
        pointers.push(frames[0].as_ptr());
        let value = json(&frames[0]);
        assert_eq!(value["stream"], "depth.BTC_USDC");
        let data = &value["data"];
        assert_eq!((data["e"].as_str(), data["s"].as_str()), (Some("depth"), Some("BTC_USDC")));
        assert_eq!((data["U"].as_u64(), data["u"].as_u64()), (Some(1), Some(3)), "one diff per command");
        assert_eq!(data["b"], serde_json::json!([["1.0", "0.00004"]]), "last value of a level wins");
        assert_eq!(data["a"], serde_json::json!([["1.2", "0.00003"]]));
        assert_eq!(data["T"].as_u64(), Some(1_700_000_000_000_000), "µs");
        assert!(data["E"].as_u64().unwrap() > 1_700_000_000_000_000);
    }
    assert!(pointers.windows(2).all(|w| w[0] == w[1]), "every subscriber got the same buffer");
    drop(subscriptions);
    assert_eq!(publisher.stats().subscribers.load(Ordering::Relaxed), 0);
    assert!(!publisher.has_subscribers(&key), "dropping a subscription unsubscribes it");
}

#[tokio::test]
async fn lagging_subscriber_is_resynchronised_with_a_snapshot() {
    let publisher = publisher(PublisherConfig { queue_frames: 4, ..PublisherConfig::default() });
    let key = StreamKey::Depth(MarketId::new(1));
    let slow = publisher.connect();
    slow.subscribe(key).unwrap();
    for price in 1..=20 {
        publisher.on_command(&[level(1, Side::Bid, price, price)]);
    }
    let first = frames(&slow).await;
    assert_eq!(first.len(), 4, "the bound");
    let mut book = Rebuilt::default();
    for frame in &first {
        book.apply(&json(frame)["data"]);
    }
    let lagged = match slow.next().await {
        Delivery::Lagged(lagged) => lagged,
        other => panic!("expected a lag signal, got {other:?}"),
    };
    assert_eq!(lagged, vec![(key, 16)], "16 frames dropped, and said so");
    assert!(std::str::from_utf8(&slow.lag_notice(&lagged)).unwrap().contains(r#""depth.BTC_USDC":16"#));
    // Still lagging until resynchronised: more frames are dropped, not queued.
    publisher.on_command(&[level(1, Side::Ask, 100, 1)]);
    assert!(slow.resync(&lagged.iter().map(|(k, _)| *k).collect::<Vec<_>>()));
    // The snapshot takes one of the 4 slots.
    for price in 101..=103 {
        publisher.on_command(&[level(1, Side::Ask, price, 2)]);
    }
    let after = frames(&slow).await;
    let snapshot = json(&after[0]);
    assert_eq!(snapshot["data"]["e"], "depthSnapshot");
    let snapshot_id = snapshot["data"]["u"].as_u64().unwrap();
    assert_eq!(snapshot_id, 21, "every update so far");
    let mut book = Rebuilt { last: snapshot_id, ..Rebuilt::default() };
    book.apply(&snapshot["data"]);
    for frame in &after[1..] {
        let data = &json(frame)["data"];
        assert_eq!(data["U"].as_u64().unwrap(), book.last + 1, "gap-free after the snapshot");
        book.last = data["u"].as_u64().unwrap();
        book.apply(data);
    }
    assert_eq!(book.last, 24);
    let view = publisher.view().depth(MarketId::new(1), 1_000).unwrap();
    assert_eq!((book.asks.len(), book.bids.len()), (view.asks.len(), view.bids.len()));
    assert_eq!(view.last_update_id, book.last);
}

#[tokio::test]
async fn disconnect_policy_and_too_many_resyncs_close_with_a_reason() {
    let strict =
        publisher(PublisherConfig { queue_frames: 2, lag_policy: LagPolicy::Disconnect, ..PublisherConfig::default() });
    let subscription = strict.connect();
    subscription.subscribe(StreamKey::Depth(MarketId::new(1))).unwrap();
    for price in 1..=3 {
        strict.on_command(&[level(1, Side::Bid, price, 1)]);
    }
    match subscription.next().await {
        Delivery::Closed(reason) => assert!(reason.contains("Lagging"), "{reason}"),
        other => panic!("expected a close, got {other:?}"),
    }
    assert_eq!(strict.stats().lag_disconnects.load(Ordering::Relaxed), 1);

    let lenient = publisher(PublisherConfig { queue_frames: 1, resyncs_max: 2, ..PublisherConfig::default() });
    let subscription = lenient.connect();
    let key = StreamKey::Trade(MarketId::new(1));
    subscription.subscribe(key).unwrap();
    for round in 0..3 {
        for id in 0..3 {
            lenient.on_command(&[Event::Fill(Fill {
                trade_id: TradeId::new(round * 10 + id),
                price_ticks: Ticks::new(10),
                quantity_lots: Lots::new(1),
                market_id: MarketId::new(1),
                taker_side: Side::Bid.into(),
                ..Default::default()
            })]);
        }
        assert_eq!(frames(&subscription).await.len(), 1);
        let Delivery::Lagged(lagged) = subscription.next().await else { panic!("lag expected") };
        assert_eq!(lagged, vec![(key, 2)]);
        assert_eq!(subscription.resync(&[key]), round < 2, "round {round}");
    }
    assert!(matches!(subscription.next().await, Delivery::Closed(reason) if reason.contains("resynchronisations")));
}

#[tokio::test]
async fn conflated_depth_accumulates_a_window() {
    let publisher = publisher(PublisherConfig::default());
    let subscription = publisher.connect();
    subscription.subscribe(StreamKey::DepthConflated(MarketId::new(1), marketdata::Conflation::Ms200)).unwrap();
    publisher.on_command(&[level(1, Side::Bid, 10, 5)]);
    publisher.on_command(&[level(1, Side::Bid, 10, 0), level(1, Side::Ask, 12, 1)]);
    publisher.on_command(&[level(1, Side::Bid, 11, 2)]);
    publisher.tick(Instant::now());
    assert_eq!(publisher.stats().frames_encoded.load(Ordering::Relaxed), 0, "window not over yet");
    publisher.tick(Instant::now() + Duration::from_millis(250));
    let frames = frames(&subscription).await;
    assert_eq!(frames.len(), 1);
    let value = json(&frames[0]);
    assert_eq!(value["stream"], "depth.200ms.BTC_USDC");
    let data = &value["data"];
    assert_eq!((data["U"].as_u64(), data["u"].as_u64()), (Some(1), Some(4)));
    assert_eq!(data["b"], serde_json::json!([["1.0", "0"], ["1.1", "0.00002"]]));
    assert_eq!(data["a"], serde_json::json!([["1.2", "0.00001"]]));
}

#[tokio::test]
async fn private_streams_are_filed_per_user() {
    let publisher = publisher(PublisherConfig::default());
    let (alice, bob) = (publisher.connect(), publisher.connect());
    alice.subscribe(StreamKey::OrderUpdate(UserId::new(1), None)).unwrap();
    alice.subscribe(StreamKey::BalanceUpdate(UserId::new(1))).unwrap();
    bob.subscribe(StreamKey::OrderUpdate(UserId::new(2), Some(MarketId::new(1)))).unwrap();
    let accepted = |user: u64, order: u64| {
        Event::OrderAccepted(OrderAccepted {
            user_id: UserId::new(user),
            order_id: OrderId::new(order),
            price_ticks: Ticks::new(640_000),
            quantity_lots: Lots::new(100),
            market_id: MarketId::new(1),
            side: Side::Bid.into(),
            order_type: OrderType::Limit.into(),
            time_in_force: TimeInForce::Gtc.into(),
            ..Default::default()
        })
    };
    publisher.on_command(&[accepted(1, 7)]);
    publisher.on_command(&[accepted(2, 8)]);
    publisher.on_command(&[Event::BalanceUpdate(BalanceUpdate {
        user_id: UserId::new(2),
        available: Amount::new(5),
        asset_id: AssetId::new(1),
        reason: BalanceChange::Deposit.into(),
        ..Default::default()
    })]);
    let mine = frames(&alice).await;
    assert_eq!(mine.len(), 1, "only alice's order, not bob's balance");
    let value = json(&mine[0]);
    assert_eq!(value["stream"], "account.orderUpdate");
    assert_eq!(value["data"]["i"], "7");
    assert_eq!(value["data"]["e"], "orderAccepted");
    let his = frames(&bob).await;
    assert_eq!(json(&his[0])["stream"], "account.orderUpdate.BTC_USDC");
    assert_eq!(json(&his[0])["data"]["i"], "8");
}

/// `amm.<symbol>`: one frame per pool event of a real engine, encoded once for every subscriber,
/// with the reserves after in the assets' decimals, and no user id (the worked example of
/// docs/amm.md: a 10 SOL × 20 USDC pool, buying 1 SOL costs 2.22891 USDC with the 30 bps fee).
#[tokio::test]
async fn pool_events_stream_without_user_ids() {
    use engine::testkit::commands::*;
    let config = EngineConfig::sample_with_pools();
    let publisher = Publisher::new(Arc::new(MarketView::new(&config)), &config, PublisherConfig::default());
    assert!(publisher.parse("amm.BTC_USDC").unwrap_err().contains("No AMM pool"), "BTC_USDC has no pool");
    assert!(publisher.parse("amm.NOPE").is_err());
    let marketdata::StreamSpec::Public(key) = publisher.parse("amm.SOL_USDC").unwrap() else { panic!("public") };
    assert_eq!(key, StreamKey::Amm(MarketId::new(3)));
    let (first, second) = (publisher.connect(), publisher.connect());
    first.subscribe(key).unwrap();
    second.subscribe(key).unwrap();
    let other = publisher.connect();
    other.subscribe(StreamKey::Amm(MarketId::new(2))).unwrap();

    let mut engine = engine::Engine::new(&config).unwrap();
    let mut sequence = 0;
    let mut run = |command: Command| {
        sequence += 1;
        let mut events = Vec::new();
        engine.execute(engine::CommandContext::new(sequence, sequence), &command, &mut events);
        publisher.on_command(&events);
        events
    };
    for user in 1..=2 {
        run(deposit(user, 1, 1_000_000_000));
        run(deposit(user, 3, 100_000_000_000));
    }
    assert_eq!(publisher.stats().frames_encoded.load(Ordering::Relaxed), 0, "deposits are no pool events");
    run(add_liquidity(1, 3, 10_000_000_000, 20_000_000));
    run(swap(2, 3, Side::Bid, SwapMode::ExactOut, 1_000_000_000, 0));
    let sold = run(swap(2, 3, Side::Ask, SwapMode::ExactIn, 500_000_000, 0));
    let Event::SwapExecuted(sold) = sold[0] else { panic!("{sold:?}") };
    run(remove_liquidity(1, 3, 447_212_595));
    assert_eq!(publisher.stats().frames_encoded.load(Ordering::Relaxed), 4, "once per event");
    assert_eq!(publisher.stats().frames_queued.load(Ordering::Relaxed), 8);

    let frames_first = frames(&first).await;
    let frames_second = frames(&second).await;
    assert_eq!(frames_first.len(), 4);
    for (a, b) in frames_first.iter().zip(&frames_second) {
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same buffer for both subscribers");
    }
    let data: Vec<Value> = frames_first
        .iter()
        .map(|frame| {
            let value = json(frame);
            assert_eq!(value["stream"], "amm.SOL_USDC");
            value["data"].clone()
        })
        .collect();
    let keys = |data: &Value| data.as_object().unwrap().keys().cloned().collect::<Vec<_>>().join(",");
    let sorted = |mut list: Vec<&str>| {
        list.sort_unstable();
        list.join(",")
    };
    let liquidity_keys = sorted(vec!["e", "E", "s", "b", "q", "n", "x", "y", "L", "T"]);
    let swap_keys = sorted(vec!["e", "E", "s", "S", "i", "o", "f", "x", "y", "L", "T"]);

    let added = &data[0];
    assert_eq!(keys(added), liquidity_keys, "no user id: {added}");
    assert_eq!(added["e"], "liquidityAdded");
    assert_eq!(added["s"], "SOL_USDC");
    assert_eq!((added["b"].as_str(), added["q"].as_str()), (Some("10"), Some("20")));
    assert_eq!(added["n"], "447212595", "√(10¹⁰ · 2·10⁷) − 1000 locked");
    assert_eq!(
        (added["x"].as_str(), added["y"].as_str(), added["L"].as_str()),
        (Some("10"), Some("20"), Some("447213595"))
    );
    assert_eq!(added["T"].as_u64(), Some(0), "the test engine's clock: ns → µs");
    assert!(added["E"].as_u64().unwrap() > 1_700_000_000_000_000);

    let bought = &data[1];
    assert_eq!(keys(bought), swap_keys, "no user id: {bought}");
    assert_eq!((bought["e"].as_str(), bought["S"].as_str()), (Some("swap"), Some("Bid")));
    assert_eq!((bought["i"].as_str(), bought["o"].as_str()), (Some("2.22891"), Some("1")), "USDC in, SOL out");
    assert_eq!(bought["f"], "0.006687", "in the input asset");
    assert_eq!((bought["x"].as_str(), bought["y"].as_str()), (Some("9"), Some("22.22891")));
    assert_eq!(bought["L"], "447213595", "a swap mints nothing");

    let sell = &data[2];
    assert_eq!(keys(sell), swap_keys);
    assert_eq!((sell["S"].as_str(), sell["i"].as_str()), (Some("Ask"), Some("0.5")), "SOL in");
    let usdc = |units: u64| marketdata::format::format_trimmed(u128::from(units), 6);
    assert_eq!(sell["o"].as_str(), Some(&*usdc(sold.amount_out.get())));
    assert_eq!(sell["f"], marketdata::format::format_trimmed(u128::from(sold.fee.get()), 9));
    assert_eq!((sell["x"].as_str(), sell["y"].as_str()), (Some("9.5"), Some(&*usdc(sold.quote_reserve.get()))));

    let removed = &data[3];
    assert_eq!(keys(removed), liquidity_keys);
    assert_eq!(
        (removed["e"].as_str(), removed["n"].as_str(), removed["L"].as_str()),
        (Some("liquidityRemoved"), Some("447212595"), Some("1000"))
    );
    let pool = engine.pool(MarketId::new(3)).unwrap();
    let view = publisher.view().pools().pool(MarketId::new(3)).unwrap();
    assert_eq!((view.base_reserve, view.quote_reserve), (pool.base_reserve, pool.quote_reserve));
    assert_eq!(removed["x"], marketdata::format::format_trimmed(u128::from(pool.base_reserve), 9));
    assert_eq!(removed["y"], usdc(pool.quote_reserve));
    assert!(pool.base_reserve > 0 && pool.quote_reserve > 0, "the locked minimum keeps both");
    assert!(publisher.has_subscribers(&StreamKey::Amm(MarketId::new(2))));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), other.next()).await.is_err(),
        "nothing on ETH_USDC's pool stream"
    );
}

/// The level update of `level` as the payload `on_mirrored_levels` takes.
fn level_update(market: u32, side: Side, price: u64, lots: u64) -> BookLevelUpdate {
    match level(market, side, price, lots) {
        Event::BookLevelUpdate(update) => update,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn mirrored_levels_take_the_source_sequence_as_update_ids() {
    let publisher = publisher(PublisherConfig::default());
    let market = MarketId::new(1);
    let subscription = publisher.connect();
    subscription.subscribe(StreamKey::Depth(market)).unwrap();
    // The first mirrored state at sequence 40: one diff U=1..u=40; the view's id is 40.
    publisher.on_mirrored_levels(market, &[level_update(1, Side::Bid, 10, 5), level_update(1, Side::Ask, 12, 3)], 40);
    // Sequence 55 changed the bid; an older sequence (a reseeded source) still moves ids forward.
    publisher.on_mirrored_levels(market, &[level_update(1, Side::Bid, 10, 0), level_update(1, Side::Bid, 9, 2)], 55);
    publisher.on_mirrored_levels(market, &[level_update(1, Side::Ask, 12, 1)], 50);
    let frames = frames(&subscription).await;
    let ids: Vec<(u64, u64)> = frames
        .iter()
        .map(|f| {
            let data = &json(f)["data"];
            (data["U"].as_u64().unwrap(), data["u"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(ids, [(1, 40), (41, 55), (56, 56)], "gap-free ranges ending at the source's sequences");
    let mut book = Rebuilt::default();
    for frame in &frames {
        book.apply(&json(frame)["data"]);
    }
    let depth = publisher.view().depth(market, 10).unwrap();
    assert_eq!(depth.last_update_id, 56);
    assert_eq!((depth.bids, depth.asks), (vec![(9, 2)], vec![(12, 1)]));
    assert_eq!(book.bids.len() + book.asks.len(), 2, "{book:?}");
}

/// Issue #16: a market buy by quote quantity filling against three price levels, from a real
/// engine. Its `account.orderUpdate` frames stay `PartiallyFilled` until the fill that completes
/// it, carry the order's own type (`MARKET`) and time in force, cumulative `z`/`Z`, no price,
/// and nothing follows the terminal frame. One that runs out of liquidity ends with an
/// `orderExpired` whose `R` is Backpack's `InsufficientLiquidity`, still its own order.
#[tokio::test]
async fn quote_quantity_market_order_updates_are_cumulative_and_end_once() {
    use engine::testkit::commands::*;
    let config = EngineConfig::sample();
    let publisher = Publisher::new(Arc::new(MarketView::new(&config)), &config, PublisherConfig::default());
    let buyer = publisher.connect();
    buyer.subscribe(StreamKey::OrderUpdate(UserId::new(2), None)).unwrap();
    let mut engine = engine::Engine::new(&config).unwrap();
    let mut sequence = 0;
    let mut run = |command: Command| {
        sequence += 1;
        let mut events = Vec::new();
        engine.execute(engine::CommandContext::new(sequence, sequence), &command, &mut events);
        assert!(!events.iter().any(|e| matches!(e, Event::OrderRejected(_))), "{events:?}");
        publisher.on_command(&events);
    };
    // BTC_USDC: one tick × one lot = 1 USDC minor unit; taker fee 500 ppm.
    run(deposit(1, 0, 10_000));
    run(deposit(2, 1, 1_000_000));
    for (price, lots) in [(20_000, 2), (20_010, 2), (20_020, 3)] {
        run(limit(1, 1, Side::Ask, price, lots, TimeInForce::Gtc, 0));
    }
    // 2 lots at 20_000 and 20_010 each, then 1 at 20_020 (100_090 with fees); a second lot there
    // would need 120_120.
    run(market_buy_quote(2, 1, 120_000));
    let updates: Vec<Value> = frames(&buyer).await.iter().map(|f| json(f)["data"].clone()).collect();
    let summary: Vec<(&str, &str, &str, &str, &str, &str)> = updates
        .iter()
        .map(|d| {
            let text = |key: &str| d[key].as_str().unwrap_or("-");
            (text("e"), text("X"), text("o"), text("f"), text("z"), text("Z"))
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("orderAccepted", "New", "MARKET", "IOC", "0.00000", "0"),
            ("orderFill", "PartiallyFilled", "MARKET", "IOC", "0.00002", "0.04"),
            ("orderFill", "PartiallyFilled", "MARKET", "IOC", "0.00004", "0.08002"),
            ("orderFill", "Filled", "MARKET", "IOC", "0.00005", "0.10004"),
        ],
        "{updates:#?}"
    );
    for update in &updates {
        assert_eq!(update["i"], updates[0]["i"]);
        assert!(update.get("p").is_none(), "a market order has no price: {update}");
        assert_eq!(update["Q"], "0.12");
    }
    let fill_prices: Vec<&str> = updates[1..].iter().map(|d| d["L"].as_str().unwrap()).collect();
    assert_eq!(fill_prices, ["2000.0", "2001.0", "2002.0"]);

    // Two lots left at 20_020: a buy for far more runs out of book and expires.
    run(market_buy_quote(2, 1, 500_000));
    let updates: Vec<Value> = frames(&buyer).await.iter().map(|f| json(f)["data"].clone()).collect();
    let summary: Vec<(&str, &str, &str, &str, &str)> = updates
        .iter()
        .map(|d| {
            let text = |key: &str| d[key].as_str().unwrap_or("-");
            (text("e"), text("X"), text("o"), text("z"), text("R"))
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("orderAccepted", "New", "MARKET", "0.00000", "-"),
            ("orderFill", "PartiallyFilled", "MARKET", "0.00002", "-"),
            ("orderExpired", "Expired", "MARKET", "0.00002", "InsufficientLiquidity"),
        ],
        "{updates:#?}"
    );
    assert!(updates[2].get("p").is_none());
}

/// Issue #19 item 4: a follower of the journal numbers depth diffs with engine sequences. Two
/// followers of the same commands, one from sequence 1 and one seeded from a snapshot at S, agree
/// on every diff after S (`U`/`u`), on `lastUpdateId` and on the book; each one's diffs are
/// gap-free (`U` = previous `u` + 1) and end at the sequence of the command that changed the
/// market.
#[tokio::test]
async fn sequenced_commands_number_diffs_with_engine_sequences_wherever_the_follower_started() {
    use engine::testkit::commands::*;
    let config = EngineConfig::sample();
    let market = MarketId::new(1);
    let mut commands = vec![deposit(1, 0, 1_000_000), deposit(2, 1, 100_000_000)];
    for step in 0..6u64 {
        commands.push(limit(1, 1, Side::Ask, 20_000 + step * 10, 3, TimeInForce::Gtc, 0));
        commands.push(limit(2, 1, Side::Bid, 19_000 + step * 10, 2, TimeInForce::Gtc, 0));
        // Crosses the best ask: a fill and a level change in one command.
        commands.push(limit(2, 1, Side::Bid, 20_000 + step * 10, 1, TimeInForce::Ioc, 0));
    }
    let snapshot_at = 8u64;
    let from_start = publisher(PublisherConfig::default());
    let from_start_stream = from_start.connect();
    from_start_stream.subscribe(StreamKey::Depth(market)).unwrap();
    let mut engine = engine::Engine::new(&config).unwrap();
    let mut snapshot = Vec::new();
    let mut sequences_changing_book = Vec::new();
    let mut tail = Vec::new();
    for (index, command) in commands.iter().enumerate() {
        let sequence = index as u64 + 1;
        let mut events = Vec::new();
        engine.execute(engine::CommandContext::new(sequence, sequence * 1_000), command, &mut events);
        assert!(!events.iter().any(|e| matches!(e, Event::OrderRejected(_))), "{events:?}");
        if events.iter().any(|e| matches!(e, Event::BookLevelUpdate(u) if u.market_id == market)) {
            sequences_changing_book.push(sequence);
        }
        from_start.on_sequenced_command(&events, sequence);
        if sequence == snapshot_at {
            engine.write_snapshot(sequence, &mut snapshot);
        }
        if sequence > snapshot_at {
            tail.push((sequence, events));
        }
    }
    let (restored, at) =
        engine::Engine::restore_snapshot(&config, engine::OrderBook::with_capacity, &snapshot).unwrap();
    assert_eq!(at, snapshot_at);
    let from_snapshot = publisher(PublisherConfig::default());
    from_snapshot.view().seed_books_at(&restored, at);
    let from_snapshot_stream = from_snapshot.connect();
    from_snapshot_stream.subscribe(StreamKey::Depth(market)).unwrap();
    for (sequence, events) in &tail {
        from_snapshot.on_sequenced_command(events, *sequence);
    }
    let ids = |frames: &[Bytes]| -> Vec<(u64, u64)> {
        frames
            .iter()
            .map(|f| {
                let data = &json(f)["data"];
                (data["U"].as_u64().unwrap(), data["u"].as_u64().unwrap())
            })
            .collect()
    };
    let all = ids(&frames(&from_start_stream).await);
    let ends: Vec<u64> = all.iter().map(|(_, last)| *last).collect();
    assert_eq!(ends, sequences_changing_book, "each diff ends at the sequence of its command");
    assert_eq!(all[0].0, 1);
    for pair in all.windows(2) {
        assert_eq!(pair[1].0, pair[0].1 + 1, "gap-free: {all:?}");
    }
    let after: Vec<(u64, u64)> = all.iter().copied().filter(|(_, last)| *last > snapshot_at).collect();
    let seeded = ids(&frames(&from_snapshot_stream).await);
    assert_eq!(seeded[0].0, snapshot_at + 1, "the first diff after the snapshot starts after it");
    assert_eq!(seeded[1..], after[1..], "both followers number the diffs after the snapshot alike");
    let (a, b) = (from_start.view().depth(market, 50).unwrap(), from_snapshot.view().depth(market, 50).unwrap());
    assert_eq!((a.bids, a.asks, a.last_update_id), (b.bids, b.asks, b.last_update_id));
}
