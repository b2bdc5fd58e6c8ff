//! A market-data feed that was lapped on the egress ring recovers by itself (issue #16 defect 6):
//! it marks the view stale, asks the engine thread (here: the test, which plays it, executing
//! commands, publishing their events and serving engine reads between them) for a copy of the
//! engine's books, resumes at the egress position that copy corresponds to, and is fresh again,
//! with later events applied on top exactly once.

use codec::*;
use engine::bus::{BroadcastRing, EngineReads};
use engine::testkit::commands;
use engine::{CommandContext, Engine, EngineConfig};
use marketdata::{Feed, MarketView, Publisher, PublisherConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait for the feed thread.
const DEADLINE: Duration = Duration::from_secs(10);

/// The engine thread's part: executes commands and publishes their events.
struct EngineThread {
    engine: Engine,
    sequence: u64,
    ring: Arc<BroadcastRing>,
}

impl EngineThread {
    fn run(&mut self, command: Command) -> Vec<Event> {
        self.sequence += 1;
        let mut events = Vec::new();
        self.engine.execute(CommandContext::new(self.sequence, self.sequence * 1_000), &command, &mut events);
        self.ring.publish_command(0, &events);
        events
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_lapped_feed_reseeds_its_books_from_the_engine_and_resumes_after_the_copy() {
    let config = EngineConfig::sample();
    let ring = BroadcastRing::new(4);
    let mut engine = EngineThread { engine: Engine::new(&config).unwrap(), sequence: 0, ring: ring.clone() };
    let view = Arc::new(MarketView::new(&config));
    let publisher = Publisher::new(view.clone(), &config, PublisherConfig::default());
    let reads = Arc::new(EngineReads::default());

    // Ten bids and a canceled one, all published before the feed starts at position 0: long
    // overwritten in a ring of 4, so its first read finds it lapped.
    engine.run(commands::deposit(1, 1, 1_000_000_000_000));
    for price in 1..=10 {
        engine.run(commands::gtc(1, 1, Side::Bid, price * 100, 1));
    }
    let Some(Event::OrderAccepted(accepted)) = engine.run(commands::gtc(1, 1, Side::Bid, 5_000, 3)).first().copied()
    else {
        panic!("the order to cancel rests");
    };
    assert!(matches!(engine.run(commands::cancel(1, 1, accepted.order_id.get()))[0], Event::OrderCanceled(_)));
    let feed = Feed::start_publishing_with_reseed(publisher.clone(), ring.subscribe_from(0), reads.clone()).unwrap();

    wait_until("the feed asks for a reseed", || reads.is_pending());
    assert!(view.is_stale(), "lapped: stale until reseeded");
    // More commands before the engine thread gets to the read: the copy includes them.
    engine.run(commands::gtc(1, 1, Side::Bid, 1_100, 2));
    reads.serve(&engine.engine, ring.head());
    wait_until("the view is reseeded", || !view.is_stale() && view.consumed() == ring.head());
    let bids = |view: &MarketView| view.depth(MarketId::new(1), 100).unwrap().bids;
    let mut expected: Vec<(u64, u64)> =
        (1..=11).rev().map(|price| (price * 100, if price == 11 { 2 } else { 1 })).collect();
    assert_eq!(bids(&view), expected, "the engine's book, without the canceled order");

    // Later events are applied on top of the copy, once.
    engine.run(commands::gtc(1, 1, Side::Bid, 1_200, 4));
    wait_until("the next command is applied", || view.consumed() == ring.head());
    expected.insert(0, (1_200, 4));
    assert_eq!(bids(&view), expected);
    assert!(!reads.is_pending(), "one reseed was enough");
    feed.shutdown();
}
