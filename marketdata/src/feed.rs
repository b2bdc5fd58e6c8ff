//! The consumer thread that feeds a [`MarketView`] from the egress ring.

use crate::MarketView;
use engine::bus::{Consumer, ReadError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The running consumer thread. Stops (and is joined) on [`Feed::shutdown`] or drop.
pub struct Feed {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Feed {
    /// Starts a thread that applies every event `consumer` reads to `view`. Idle strategy like
    /// the gateways' dispatchers: spin, then yield, then sleep 50 µs while the ring is empty.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(view: Arc<MarketView>, consumer: Consumer) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread =
            std::thread::Builder::new().name("marketdata".into()).spawn(move || run(&view, consumer, &thread_stop))?;
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

fn run(view: &MarketView, mut consumer: Consumer, stop: &AtomicBool) {
    let mut idle = 0u32;
    while !stop.load(Ordering::Acquire) {
        match consumer.try_next() {
            Ok(published) => {
                idle = 0;
                view.apply(&published.event);
                view.set_consumed(published.position + 1);
            }
            Err(ReadError::Empty) => {
                idle = idle.saturating_add(1);
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
                // oldest event still held (trades and candles stay useful) and flag the view.
                tracing::error!(%lagged, "market data consumer lagged; market view is stale until resynchronised");
                view.mark_stale();
                consumer.seek(oldest);
            }
        }
    }
}
