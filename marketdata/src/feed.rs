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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The running consumer thread. Stops (and is joined) on [`Feed::shutdown`] or drop.
pub struct Feed {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Feed {
    /// Starts a thread that applies every event `consumer` reads to `view`, one engine command
    /// at a time. Idle strategy like the gateways' dispatchers: spin, then yield, then sleep
    /// 50 µs while the ring is empty.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(view: Arc<MarketView>, consumer: Consumer) -> std::io::Result<Self> {
        Self::spawn(Target::View(view), consumer, None)
    }

    /// Like [`Feed::start`], but through `publisher`: it applies each command to its view and
    /// publishes the streams (and runs its timers: conflated depth, tickers).
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start_publishing(publisher: Arc<Publisher>, consumer: Consumer) -> std::io::Result<Self> {
        Self::spawn(Target::Publisher(publisher), consumer, None)
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
        Self::spawn(Target::Publisher(publisher), consumer, Some(reads))
    }

    fn spawn(target: Target, consumer: Consumer, reads: Option<Arc<EngineReads>>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("marketdata".into())
            .spawn(move || run(&target, consumer, reads.as_deref(), &thread_stop))?;
        Ok(Self { stop, thread: Some(thread) })
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

fn run(target: &Target, mut consumer: Consumer, reads: Option<&EngineReads>, stop: &AtomicBool) {
    let mut idle = 0u32;
    let mut command: Vec<Event> = Vec::new();
    let mut since_tick = 0u32;
    while !stop.load(Ordering::Acquire) {
        match consumer.try_next() {
            Ok(published) => {
                idle = 0;
                command.push(published.event);
                if published.last_of_command {
                    target.apply(&command);
                    command.clear();
                    target.view().set_consumed(published.position + 1);
                    since_tick += 1;
                    if since_tick >= TICK_EVERY_COMMANDS {
                        since_tick = 0;
                        target.tick();
                    }
                }
            }
            Err(ReadError::Empty) => {
                idle = idle.saturating_add(1);
                if idle % 64 == 0 {
                    since_tick = 0;
                    target.tick();
                }
                if idle < 64 {
                    std::hint::spin_loop();
                } else if idle < 128 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
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
