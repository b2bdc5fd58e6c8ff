//! The progress bar shown while a run goes: elapsed time, requests sent and the live rate,
//! answers, the p99 of the last second's acknowledgements, rejects and errors (an `indicatif`
//! bar on stderr). Drawn only when both stdout and stderr are terminals, so runs whose output
//! goes to a file or a pipe (CI logs, `| tee`) stay clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters the sender and receivers bump and the progress bar (and the ramp monitor) read.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests sent (warm-up included).
    pub sent: AtomicU64,
    /// Requests answered (warm-up included).
    pub answered: AtomicU64,
    /// Rejections, any reason.
    pub rejects: AtomicU64,
    /// Of those, refusals by the gateway itself (SBE `BusinessReject`, FIX
    /// BusinessMessageReject, engine `Throttled`): throttling answers fast but is not throughput.
    pub gateway_rejects: AtomicU64,
    /// Errors.
    pub errors: AtomicU64,
    /// Requests sent per ramp step (empty without a ramp).
    pub step_sent: Vec<AtomicU64>,
}

impl Counters {
    /// Counters for a run with `steps` ramp steps.
    pub fn with_steps(steps: usize) -> Self {
        Self { step_sent: (0..steps).map(|_| AtomicU64::new(0)).collect(), ..Self::default() }
    }

    /// Adds one to a counter.
    #[inline]
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request of ramp step `step` as sent (nothing for `NO_STEP` or without a ramp).
    #[inline]
    pub fn bump_step(&self, step: u32) {
        if let Some(counter) = self.step_sent.get(step as usize) {
            Self::bump(counter);
        }
    }

    /// Requests sent per ramp step so far.
    pub fn step_sent(&self) -> Vec<u64> {
        self.step_sent.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

/// Draws progress about once a second.
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    last_draw: Instant,
    last_sent: u64,
    p99_ns: Option<u64>,
}

impl Progress {
    /// Progress for a run of `total` (warm-up included); `enabled` false draws nothing, and
    /// nothing is drawn either unless stdout and stderr are terminals.
    pub fn new(enabled: bool, label: &str, total: Duration) -> Self {
        let terminal = std::io::stderr().is_terminal() && std::io::stdout().is_terminal();
        let bar = (enabled && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total.as_millis() as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(&format!("{label} {{elapsed:>4}} [{{bar:30}}] {{msg}}"))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        let now = Instant::now();
        Self { bar, started: now, last_draw: now, last_sent: 0, p99_ns: None }
    }

    /// Whether the bar is drawn at all.
    pub fn visible(&self) -> bool {
        self.bar.is_some()
    }

    /// Whether a second has passed since the last draw (the next [`Progress::tick`] draws).
    pub fn due(&self) -> bool {
        self.last_draw.elapsed() >= Duration::from_secs(1)
    }

    /// Sets the acknowledgement p99 of the last interval shown (None: no answers in it).
    pub fn set_p99(&mut self, p99_ns: Option<u64>) {
        self.p99_ns = p99_ns;
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
        let p99 = self.p99_ns.map_or_else(String::new, |ns| format!(" p99 {:.1} µs", ns as f64 / 1e3));
        let message = format!(
            "sent {sent} ({rate:.0}/s) answered {}{p99} rejects {} errors {}",
            counters.answered.load(Ordering::Relaxed),
            counters.rejects.load(Ordering::Relaxed),
            counters.errors.load(Ordering::Relaxed)
        );
        if let Some(bar) = &self.bar {
            bar.set_position(now.duration_since(self.started).as_millis() as u64);
            bar.set_message(message);
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
