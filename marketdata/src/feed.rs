//! The consumer thread that feeds a [`MarketView`] from the egress ring.
//!
//! Subscribe it as a gating consumer ([`engine::bus::BroadcastRing::subscribe_gating_from`]) so
//! the engine waits for it rather than lapping it. If it is lapped all the same (it stalled for
//! longer than the ring's bound), the books can no longer be trusted: with a reseed source
//! ([`Feed::start_publishing_with_reseed`]) the feed asks the engine thread to copy its books into
//! the view (the view answers 503 for depth meanwhile) and resumes at the egress position that copy
//! corresponds to, so the view recovers by itself; without one it stays stale.

use crate::{MarketView, Publisher};
use codec::Event;
use engine::bus::{Consumer, EngineReads, ReadError};
use engine::doorbell::{Idle, IdlePolicy, consumer_idle};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The running consumer thread. Stops (and is joined) on [`Feed::shutdown`] or drop.
pub struct Feed {
    stop: Arc<AtomicBool>,
    /// Empty polls of the egress ring so far (each is one spin step or one park): how often the
    /// idle thread woke up without an event.
    empty_polls: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Feed {
    /// Starts a thread that applies every event `consumer` reads to `view`, one engine command
    /// at a time. Idle strategy like the gateways' dispatchers ([`consumer_idle`]): spin, then
    /// park on the egress ring's doorbell until the engine publishes (no fixed nap); with no
    /// stream subscriber it parks at once ([`IdlePolicy::when_serving`]).
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(view: Arc<MarketView>, consumer: Consumer) -> std::io::Result<Self> {
        Self::spawn(Target::View(view), consumer, None, consumer_idle())
    }

    /// Like [`Feed::start`], but through `publisher`: it applies each command to its view and
    /// publishes the streams (and runs its timers: conflated depth, tickers).
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start_publishing(publisher: Arc<Publisher>, consumer: Consumer) -> std::io::Result<Self> {
        Self::spawn(Target::Publisher(publisher), consumer, None, consumer_idle())
    }

    /// Like [`Feed::start_publishing`], and when the feed lost events it reseeds the view's books
    /// (and the publisher's open orders) from the engine through `reads`, served by the engine
    /// thread, instead of staying stale until a restart.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start_publishing_with_reseed(
        publisher: Arc<Publisher>,
        consumer: Consumer,
        reads: Arc<EngineReads>,
    ) -> std::io::Result<Self> {
        Self::spawn(Target::Publisher(publisher), consumer, Some(reads), consumer_idle())
    }

    fn spawn(
        target: Target,
        consumer: Consumer,
        reads: Option<Arc<EngineReads>>,
        policy: IdlePolicy,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let empty_polls = Arc::new(AtomicU64::new(0));
        let (thread_stop, thread_empty_polls) = (stop.clone(), empty_polls.clone());
        let thread = std::thread::Builder::new().name("marketdata".into()).spawn(move || {
            run(&target, consumer, reads.as_deref(), policy, &thread_stop, &thread_empty_polls);
        })?;
        Ok(Self { stop, empty_polls, thread: Some(thread) })
    }

    /// Empty polls of the egress ring so far (each one spin step or one park): how often the
    /// thread looked for an event and found none, a measure of its idle cost.
    pub fn empty_polls(&self) -> u64 {
        self.empty_polls.load(Ordering::Relaxed)
    }

    /// Stops the thread and waits for it.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[derive(Clone)]
enum Target {
    View(Arc<MarketView>),
    Publisher(Arc<Publisher>),
}

impl Target {
    fn view(&self) -> &MarketView {
        match self {
            Self::View(view) => view,
            Self::Publisher(publisher) => publisher.view(),
        }
    }

    fn apply(&self, events: &[Event]) {
        match self {
            Self::View(view) => view.apply_command(events),
            Self::Publisher(publisher) => publisher.on_command(events),
        }
    }

    fn tick(&self) {
        if let Self::Publisher(publisher) = self {
            publisher.tick(Instant::now());
        }
    }

    /// Whether anybody waits for a stream frame: only then is the spin before parking worth its
    /// CPU. The books are maintained regardless (every event is consumed either way).
    fn serving(&self) -> bool {
        match self {
            Self::View(_) => false,
            Self::Publisher(publisher) => publisher.stats().subscribers.load(Ordering::Relaxed) > 0,
        }
    }

    /// Replaces what was built from events with the engine's state (engine thread).
    fn reseed(&self, engine: &engine::Engine) {
        match self {
            Self::View(view) => view.seed_books(engine),
            Self::Publisher(publisher) => publisher.reseed(engine),
        }
    }
}

/// Polls between checks whether the engine thread has served a reseed.
const RESEED_POLL: Duration = Duration::from_micros(200);

/// Marks "no reseed served yet".
const NOT_SERVED: u64 = u64::MAX;

/// Has the engine thread copy its books into the view; returns the egress position the copy
/// corresponds to (resume reading there), or `None` if the feed was stopped while waiting.
fn reseed(target: &Target, reads: &EngineReads, stop: &AtomicBool) -> Option<u64> {
    let served = Arc::new(AtomicU64::new(NOT_SERVED));
    let (reseeded, served_by_engine) = (target.clone(), served.clone());
    reads.submit(Box::new(move |engine, egress_head| {
        reseeded.reseed(engine);
        served_by_engine.store(egress_head, Ordering::Release);
    }));
    while !stop.load(Ordering::Acquire) {
        let position = served.load(Ordering::Acquire);
        if position != NOT_SERVED {
            return Some(position);
        }
        std::thread::sleep(RESEED_POLL);
    }
    None
}

/// Commands between two timer checks while busy.
const TICK_EVERY_COMMANDS: u32 = 256;

/// Longest time between two timer checks while idle (conflated depth windows are at least
/// 200 ms, tickers 1 s): the feed checks after every park or spin step once this has passed.
const TICK_IDLE_EVERY: Duration = Duration::from_millis(1);

fn run(
    target: &Target,
    mut consumer: Consumer,
    reads: Option<&EngineReads>,
    policy: IdlePolicy,
    stop: &AtomicBool,
    empty_polls: &AtomicU64,
) {
    let mut idle = Idle::default();
    let mut command: Vec<Event> = Vec::new();
    let mut since_tick = 0u32;
    let mut last_tick = Instant::now();
    while !stop.load(Ordering::Acquire) {
        match consumer.try_next() {
            Ok(published) => {
                idle.reset();
                command.push(published.event);
                if published.last_of_command {
                    target.apply(&command);
                    command.clear();
                    target.view().set_consumed(published.position + 1);
                    since_tick += 1;
                    if since_tick >= TICK_EVERY_COMMANDS {
                        since_tick = 0;
                        last_tick = Instant::now();
                        target.tick();
                    }
                }
            }
            Err(ReadError::Empty) => {
                empty_polls.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if now.duration_since(last_tick) >= TICK_IDLE_EVERY {
                    since_tick = 0;
                    last_tick = now;
                    target.tick();
                }
                // Spin, then park until the engine publishes: no fixed nap (engine::doorbell,
                // issue #17); a park lasts at most the policy's bound, so `stop` is still seen.
                // With no stream subscriber nobody waits for a frame: park at once.
                consumer.idle(&mut idle, policy.when_serving(target.serving()));
            }
            Err(lagged @ ReadError::Lagged { oldest, .. }) => {
                // Book updates were lost: the books can no longer be trusted. Flag the view; the
                // streams would have gaps, so their subscribers are closed.
                tracing::error!(%lagged, "market data consumer lagged; market view is stale until resynchronised");
                target.apply(&command);
                command.clear();
                target.view().mark_stale();
                if let Target::Publisher(publisher) = target {
                    publisher.close_all("Market data feed lost events; reconnect later");
                }
                // With the engine's books: reseed and resume exactly where the copy ends (the
                // view is fresh again). Without: go on from the oldest event still held (trades
                // and candles stay useful), stale until a restart.
                let resume = match reads {
                    Some(reads) => match reseed(target, reads, stop) {
                        Some(position) => {
                            tracing::info!(position, "market view reseeded from the engine's books");
                            target.view().set_consumed(position);
                            position
                        }
                        None => break,
                    },
                    None => oldest,
                };
                consumer.seek(resume);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::bus::BroadcastRing;
    use engine::doorbell::IdleWait;
    use engine::testkit::commands;
    use engine::{CommandContext, Engine, EngineConfig};

    /// A park bound far longer than any wait the test allows: anything delivered sooner was
    /// woken by the doorbell, not by a timer.
    const LONG_PARK: Duration = Duration::from_secs(5);

    /// How long the feed sits on an empty ring.
    const IDLE_FOR: Duration = Duration::from_millis(200);

    /// Longest wait for an event once published (a wake-up, far below [`LONG_PARK`]).
    const DELIVERY: Duration = Duration::from_millis(500);

    /// Empty polls allowed while idle: the first park, and a spurious futex return or two.
    const IDLE_POLLS_MAX: u64 = 4;

    fn publish_deposit(engine: &mut Engine, ring: &BroadcastRing, sequence: u64) {
        let mut events = Vec::new();
        engine.execute(CommandContext::new(sequence, sequence * 1_000), &commands::deposit(1, 1, 1_000), &mut events);
        ring.publish_command(0, &events);
    }

    #[test]
    fn an_idle_feed_parks_on_the_doorbell_and_wakes_when_the_engine_publishes() {
        let config = EngineConfig::sample();
        let mut engine = Engine::new(&config).unwrap();
        let ring = BroadcastRing::new(64);
        let view = Arc::new(MarketView::new(&config));
        let policy = IdlePolicy::Wait(IdleWait { spin: Duration::ZERO, park_max: LONG_PARK });
        let feed = Feed::spawn(Target::View(view.clone()), ring.subscribe_from(0), None, policy).unwrap();

        // Idle: parked, not polling on a timer (a 50 µs nap loop polls thousands of times here).
        std::thread::sleep(IDLE_FOR);
        let polls = feed.empty_polls();
        assert!(polls <= IDLE_POLLS_MAX, "{polls} empty polls while idle for {IDLE_FOR:?}");

        // A publication wakes it at once, long before its park bound.
        let published = Instant::now();
        publish_deposit(&mut engine, &ring, 1);
        while view.consumed() == 0 {
            assert!(published.elapsed() < DELIVERY, "the feed did not wake on the doorbell");
            std::thread::sleep(Duration::from_millis(1));
        }

        // Stop, and wake it with one more publication so the test need not wait out the park.
        feed.stop.store(true, Ordering::Release);
        publish_deposit(&mut engine, &ring, 2);
        feed.shutdown();
    }

    #[test]
    fn a_publishing_feed_with_no_subscriber_parks_at_once_instead_of_spinning() {
        let config = EngineConfig::sample();
        let mut engine = Engine::new(&config).unwrap();
        let ring = BroadcastRing::new(64);
        let view = Arc::new(MarketView::new(&config));
        let publisher = crate::Publisher::new(view.clone(), &config, crate::PublisherConfig::default());
        // A spin far longer than the test: only `when_serving` makes it park.
        let policy = IdlePolicy::Wait(IdleWait { spin: LONG_PARK, park_max: LONG_PARK });
        let feed = Feed::spawn(Target::Publisher(publisher), ring.subscribe_from(0), None, policy).unwrap();

        std::thread::sleep(IDLE_FOR);
        let polls = feed.empty_polls();
        assert!(polls <= IDLE_POLLS_MAX, "{polls} empty polls with no subscriber for {IDLE_FOR:?}");

        feed.stop.store(true, Ordering::Release);
        publish_deposit(&mut engine, &ring, 1);
        feed.shutdown();
    }
}
