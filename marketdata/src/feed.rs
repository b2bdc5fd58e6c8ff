//! The consumer thread that feeds a [`MarketView`] from the egress ring.

use crate::{MarketView, Publisher};
use codec::Event;
use engine::bus::{Consumer, ReadError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
        Self::spawn(Target::View(view), consumer)
    }

    /// Like [`Feed::start`], but through `publisher`: it applies each command to its view and
    /// publishes the streams (and runs its timers: conflated depth, tickers).
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start_publishing(publisher: Arc<Publisher>, consumer: Consumer) -> std::io::Result<Self> {
        Self::spawn(Target::Publisher(publisher), consumer)
    }

    fn spawn(target: Target, consumer: Consumer) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("marketdata".into())
            .spawn(move || run(&target, consumer, &thread_stop))?;
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
}

/// Commands between two timer checks while busy.
const TICK_EVERY_COMMANDS: u32 = 256;

fn run(target: &Target, mut consumer: Consumer, stop: &AtomicBool) {
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
                // Book updates were lost: the books can no longer be trusted. Keep going from the
                // oldest event still held (trades and candles stay useful) and flag the view; the
                // streams would have gaps, so their subscribers are closed.
                tracing::error!(%lagged, "market data consumer lagged; market view is stale until resynchronised");
                target.apply(&command);
                command.clear();
                target.view().mark_stale();
                if let Target::Publisher(publisher) = target {
                    publisher.close_all("Market data feed lost events; reconnect later");
                }
                consumer.seek(oldest);
            }
        }
    }
}
