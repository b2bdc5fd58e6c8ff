//! The progress line shown while a run goes: an indicatif bar on a terminal, a plain line per
//! second otherwise (so logs of scripted runs still show progress).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters the sender and receivers bump and the progress line reads.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests sent (warm-up included).
    pub sent: AtomicU64,
    /// Requests answered (warm-up included).
    pub answered: AtomicU64,
    /// Rejections.
    pub rejects: AtomicU64,
    /// Errors.
    pub errors: AtomicU64,
}

impl Counters {
    /// Adds one to a counter.
    #[inline]
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Draws progress about once a second.
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    started: Instant,
    last_draw: Instant,
    last_sent: u64,
}

impl Progress {
    /// Progress for a run of `total` (warm-up included); `enabled` false draws nothing.
    pub fn new(enabled: bool, label: &str, total: Duration) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (enabled && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total.as_millis() as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(&format!("{label} {{elapsed:>4}} [{{bar:30}}] {{msg}}"))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        let now = Instant::now();
        Self { bar, plain: enabled && !terminal, started: now, last_draw: now, last_sent: 0 }
    }

    /// Redraws if a second has passed since the last draw.
    pub fn tick(&mut self, counters: &Counters) {
        let now = Instant::now();
        let since = now.duration_since(self.last_draw);
        if since < Duration::from_secs(1) {
            return;
        }
        let sent = counters.sent.load(Ordering::Relaxed);
        let rate = (sent - self.last_sent) as f64 / since.as_secs_f64();
        let message = format!(
            "sent {sent} ({rate:.0}/s) answered {} rejects {} errors {}",
            counters.answered.load(Ordering::Relaxed),
            counters.rejects.load(Ordering::Relaxed),
            counters.errors.load(Ordering::Relaxed)
        );
        if let Some(bar) = &self.bar {
            bar.set_position(now.duration_since(self.started).as_millis() as u64);
            bar.set_message(message);
        } else if self.plain {
            eprintln!("[{:6.1} s] {message}", now.duration_since(self.started).as_secs_f64());
        }
        self.last_draw = now;
        self.last_sent = sent;
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
