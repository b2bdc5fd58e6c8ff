//! [`Doorbell`]: how a consumer of a ring sleeps while it is empty without a fixed nap, and how
//! producers wake it.
//!
//! A consumer that found nothing spins for a configurable time ([`IdleWait::spin`]), then parks
//! on the doorbell until a producer rings it (or a bound, [`IdleWait::park_max`], passes: the
//! consumer has other duties, such as noticing a shutdown). A producer rings after each push or
//! publication: a counter increment and, only when a consumer is parked, one `futex` wake
//! syscall (Linux) for every consumer parked on that ring. So an idle path costs the producers
//! nothing but an atomic add while consumers spin, and a wake-up while they sleep; it never
//! costs the length of a nap.
//!
//! # Why no wake-up is lost
//! The consumer reads the counter, announces itself (`sleepers`), checks the ring once more, and
//! sleeps only while the counter still holds the value it read. A producer increments the counter
//! after making its work visible, then reads `sleepers`. Every step is sequentially consistent:
//! either the producer's increment comes before the consumer's read of the counter (and the
//! consumer's check sees the work), or it comes after (and the futex refuses to sleep on a
//! changed value, or the producer sees the sleeper and wakes it).
//!
//! # Parking somewhere else
//! A consumer that also waits for sockets (the SBE gateway's I/O thread) cannot sleep on the
//! futex: it sleeps in `epoll_wait`. It registers a [`Waker`] (an eventfd in its poll set) and
//! parks with [`Doorbell::park_elsewhere`], which announces it in `sleepers` exactly like a futex
//! park, so the producer's [`Doorbell::ring`] calls its waker too: the same argument holds, with
//! the eventfd's counter in the futex's place (a wake before the `epoll_wait` leaves the eventfd
//! readable, so the wait returns at once).
//!
//! `unsafe` here is the futex system call alone, on a counter this struct owns.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a consumer waits on an empty ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleWait {
    /// Spin this long after the last item before parking ([`Duration::MAX`]: never park, a
    /// busy spin for machines with a core to spare; zero: park at once).
    pub spin: Duration,
    /// Longest single park: the consumer wakes up at least this often even if nothing is rung.
    pub park_max: Duration,
}

/// Longest single park of the engine thread and the dispatchers by default: their other duties
/// (a shutdown, an engine read) wait at most this long on an idle machine.
pub const PARK_MAX_DEFAULT: Duration = Duration::from_millis(1);

impl IdleWait {
    /// Spin `spin`, then park (at most [`PARK_MAX_DEFAULT`] at a time).
    pub const fn spin_then_park(spin: Duration) -> Self {
        Self { spin, park_max: PARK_MAX_DEFAULT }
    }

    /// Never park.
    pub const fn busy_spin() -> Self {
        Self { spin: Duration::MAX, park_max: PARK_MAX_DEFAULT }
    }
}

/// How a consumer waits on an empty ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Spin, then park on the ring's doorbell (busy spin with [`Duration::MAX`]).
    Wait(IdleWait),
    /// The behaviour before the doorbell, kept only to measure against: spin 100 polls, yield
    /// 100 times, then sleep `nap` per empty poll (on a VM a 20 µs nap takes 50-70 µs).
    Nap {
        /// Length of each nap.
        nap: Duration,
    },
}

/// The default spin before parking: long enough to catch the next message of a burst, short
/// enough that a 2-core machine keeps its cores for the other threads.
pub const SPIN_DEFAULT: Duration = Duration::from_micros(50);

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy::Wait(IdleWait::spin_then_park(SPIN_DEFAULT))
    }
}

impl IdlePolicy {
    /// This policy for a consumer that has someone to answer quickly only while `serving` (a
    /// gateway dispatcher with a connection open, the REST dispatcher with a request waiting for
    /// its answer). With nobody to serve, a spin-then-park wait parks at once (spin zero): every
    /// publication wakes every consumer of the egress ring, and a dispatcher that spun its
    /// [`IdleWait::spin`] after each one for no client cost the other threads of a 2-core machine
    /// most of a core (issue #17). It still wakes on every ring and consumes every event; only
    /// the spin goes. A busy spin stays a busy spin (the operator chose to spend the cores, and a
    /// parked consumer would cost the engine a wake-up syscall per publication); the nap policy
    /// is kept as it was measured.
    #[must_use]
    pub fn when_serving(self, serving: bool) -> Self {
        match self {
            IdlePolicy::Wait(wait) if !serving && wait.spin != Duration::MAX => {
                IdlePolicy::Wait(IdleWait { spin: Duration::ZERO, ..wait })
            }
            other => other,
        }
    }
}

/// Empty polls of [`IdlePolicy::Nap`] spent spinning, then yielding, before the naps.
const NAP_SPINS: u32 = 100;
const NAP_YIELDS: u32 = 200;

/// An idle consumer's progress through one empty stretch: spinning since `since`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Idle {
    since: Option<Instant>,
    polls: u32,
}

impl Idle {
    /// The consumer found work: the next empty stretch starts spinning afresh.
    #[inline]
    pub fn reset(&mut self) {
        self.since = None;
        self.polls = 0;
    }
}

/// How the egress ring's consumers on the order path (the gateways' dispatchers) wait: set once
/// at start-up by the server from its idle setting, read by each dispatcher when it starts.
/// Process-wide, like the engine's own setting, so every gateway follows it without being
/// configured one by one.
static CONSUMER_IDLE: std::sync::OnceLock<IdlePolicy> = std::sync::OnceLock::new();

/// Sets [`consumer_idle`]; only the first call counts (false after that).
pub fn set_consumer_idle(policy: IdlePolicy) -> bool {
    CONSUMER_IDLE.set(policy).is_ok()
}

/// How the dispatchers wait on an empty egress ring ([`IdlePolicy::default`] unless set).
pub fn consumer_idle() -> IdlePolicy {
    CONSUMER_IDLE.get().copied().unwrap_or_default()
}

/// Wakes a consumer parked outside the futex (in `epoll_wait`, say): see [`Doorbell::add_waker`].
pub trait Waker: Send + Sync {
    /// Makes the parked consumer return (called by a producer; must not block).
    fn wake(&self);
}

/// A wake-up counter shared by a ring's producers and its parked consumers.
#[derive(Default)]
pub struct Doorbell {
    /// Bumped by every ring; parked consumers sleep on it.
    rings: AtomicU32,
    /// Consumers parked or about to park.
    sleepers: AtomicU32,
    /// Of `sleepers`, those parked elsewhere ([`Self::park_elsewhere`]): the wake path calls
    /// the wakers only while one is (a spinning I/O thread costs the producer no syscall).
    elsewhere: AtomicU32,
    /// Consumers that park elsewhere than on the futex ([`Self::park_elsewhere`]).
    wakers: Mutex<Vec<Arc<dyn Waker>>>,
}

impl std::fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doorbell")
            .field("rings", &self.rings)
            .field("sleepers", &self.sleepers)
            .field("elsewhere", &self.elsewhere)
            .finish()
    }
}

impl Doorbell {
    /// Producer side: called after the work is visible (pushed, published).
    #[inline]
    pub fn ring(&self) {
        self.rings.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.wake_all();
        }
    }

    #[cold]
    fn wake_all(&self) {
        futex::wake_all(&self.rings);
        if self.elsewhere.load(Ordering::SeqCst) > 0 {
            for waker in self.wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                waker.wake();
            }
        }
    }

    /// Registers a consumer that parks elsewhere ([`Self::park_elsewhere`]): every ring that
    /// finds a sleeper also calls `waker`. Kept until [`Self::remove_waker`].
    pub fn add_waker(&self, waker: Arc<dyn Waker>) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers.push(waker);
    }

    /// Unregisters a waker added by [`Self::add_waker`] (the same `Arc`).
    pub fn remove_waker(&self, waker: &Arc<dyn Waker>) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers.retain(|held| !Arc::ptr_eq(held, waker));
    }

    /// Consumer side, for a consumer whose waker was added ([`Self::add_waker`]): announces it
    /// as a sleeper, and unless `ready()` turns true calls `park` (which sleeps until the waker
    /// is called, or for its own reasons). See the module docs for why no wake-up is lost.
    pub fn park_elsewhere<T>(&self, ready: impl Fn() -> bool, park: impl FnOnce() -> T) -> Option<T> {
        // `elsewhere` first: a producer that sees the sleeper also sees that it parks elsewhere.
        self.elsewhere.fetch_add(1, Ordering::SeqCst);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let parked = (!ready()).then(park);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        self.elsewhere.fetch_sub(1, Ordering::SeqCst);
        parked
    }

    /// Consumer side, after an empty poll: waits as `policy` says (see [`Self::idle`]).
    pub fn idle_with(&self, idle: &mut Idle, policy: IdlePolicy, ready: impl Fn() -> bool) {
        match policy {
            IdlePolicy::Wait(wait) => self.idle(idle, wait, ready),
            IdlePolicy::Nap { nap } => {
                idle.polls = idle.polls.saturating_add(1);
                if idle.polls < NAP_SPINS {
                    std::hint::spin_loop();
                } else if idle.polls < NAP_YIELDS {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(nap);
                }
            }
        }
    }

    /// Consumer side, after an empty poll: spins while `idle` is younger than `wait.spin`, then
    /// parks until a ring (or `wait.park_max`) unless `ready()` turns true first. Returns after
    /// one spin step or one park; the caller polls again.
    pub fn idle(&self, idle: &mut Idle, wait: IdleWait, ready: impl Fn() -> bool) {
        let now = Instant::now();
        let since = *idle.since.get_or_insert(now);
        if now.duration_since(since) < wait.spin {
            std::hint::spin_loop();
            return;
        }
        let seen = self.rings.load(Ordering::SeqCst);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        if !ready() {
            futex::wait(&self.rings, seen, wait.park_max);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // The futex system call: two audited blocks, each with its SAFETY comment.
mod futex {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    /// Sleeps while `word` holds `expected`, at most `timeout` (spurious returns are fine: the
    /// caller polls again).
    pub(super) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word`, which lives as long as this
        // call (borrowed); the timeout is a valid relative timespec on the stack. The kernel only
        // compares and sleeps; it writes no user memory.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                expected,
                &timeout as *const libc::timespec,
            );
        }
    }

    /// Wakes every thread sleeping on `word`.
    pub(super) fn wake_all(word: &AtomicU32) {
        // SAFETY: FUTEX_WAKE only uses the address of `word` as a key; it reads and writes no
        // user memory.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod futex {
    //! Without futexes: a short sleep, so a consumer never waits longer than this for work
    //! (the production target is Linux).
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    pub(super) fn wait(_word: &AtomicU32, _expected: u32, timeout: Duration) {
        std::thread::sleep(timeout.min(Duration::from_micros(50)));
    }

    pub(super) fn wake_all(_word: &AtomicU32) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn a_parked_consumer_is_woken_by_a_ring_long_before_its_park_bound() {
        let doorbell = Arc::new(Doorbell::default());
        let work = Arc::new(AtomicBool::new(false));
        let wait = IdleWait { spin: Duration::ZERO, park_max: Duration::from_secs(10) };
        let consumer = {
            let (doorbell, work) = (doorbell.clone(), work.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut idle = Idle::default();
                while !work.load(Ordering::SeqCst) {
                    doorbell.idle(&mut idle, wait, || work.load(Ordering::SeqCst));
                }
                started.elapsed()
            })
        };
        // Let it park.
        while doorbell.sleepers.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(20));
        work.store(true, Ordering::SeqCst);
        doorbell.ring();
        let waited = consumer.join().unwrap();
        assert!(waited < Duration::from_secs(5), "woken by the ring, not the 10 s bound: {waited:?}");
    }

    /// A consumer parked elsewhere (here on a channel, standing in for `epoll_wait`) is woken by
    /// the ring through its registered waker, not by its 10 s bound. Fails without the waker
    /// call in `wake_all`.
    #[test]
    fn a_consumer_parked_elsewhere_is_woken_through_its_waker() {
        struct ChannelWaker(std::sync::Mutex<std::sync::mpsc::Sender<()>>);
        impl Waker for ChannelWaker {
            fn wake(&self) {
                let _ = self.0.lock().unwrap().send(());
            }
        }
        let doorbell = Arc::new(Doorbell::default());
        let work = Arc::new(AtomicBool::new(false));
        let (sender, receiver) = std::sync::mpsc::channel();
        let waker: Arc<dyn Waker> = Arc::new(ChannelWaker(std::sync::Mutex::new(sender)));
        doorbell.add_waker(waker.clone());
        let consumer = {
            let (doorbell, work) = (doorbell.clone(), work.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                while !work.load(Ordering::SeqCst) {
                    doorbell.park_elsewhere(
                        || work.load(Ordering::SeqCst),
                        || receiver.recv_timeout(Duration::from_secs(10)),
                    );
                }
                started.elapsed()
            })
        };
        while doorbell.sleepers.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(20));
        work.store(true, Ordering::SeqCst);
        doorbell.ring();
        let waited = consumer.join().unwrap();
        assert!(waited < Duration::from_secs(5), "woken through the waker, not the 10 s bound: {waited:?}");
        doorbell.remove_waker(&waker);
        assert!(doorbell.wakers.lock().unwrap().is_empty());
        assert_eq!(doorbell.elsewhere.load(Ordering::SeqCst), 0);
    }

    /// A consumer with nobody to serve parks on its first empty poll instead of spinning its
    /// (here 10 s) spin time; serving, it spins first. Fails without [`IdlePolicy::when_serving`]
    /// zeroing the spin (the consumer is never seen parked within the 5 s bound).
    #[test]
    fn a_consumer_with_nobody_to_serve_parks_without_spinning() {
        let doorbell = Arc::new(Doorbell::default());
        let policy = IdlePolicy::Wait(IdleWait { spin: Duration::from_secs(10), park_max: Duration::from_secs(10) });
        let consumer = {
            let doorbell = doorbell.clone();
            std::thread::spawn(move || {
                let mut idle = Idle::default();
                doorbell.idle_with(&mut idle, policy.when_serving(false), || false);
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while doorbell.sleepers.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        let parked = doorbell.sleepers.load(Ordering::SeqCst) == 1;
        // Wake it either way (a parked consumer returns on the ring, a spinning one on its own).
        while !consumer.is_finished() {
            doorbell.ring();
            std::thread::sleep(Duration::from_millis(1));
        }
        consumer.join().unwrap();
        assert!(parked, "with nobody to serve, the first empty poll parks instead of spinning 10 s");

        // Serving, the same policy spins first: the first empty poll returns without parking.
        let mut idle = Idle::default();
        let started = Instant::now();
        doorbell.idle_with(&mut idle, policy.when_serving(true), || false);
        assert!(started.elapsed() < Duration::from_secs(5), "serving: one spin step, no park");
        // A busy spin stays one, served or not.
        let busy = IdlePolicy::Wait(IdleWait::busy_spin());
        assert_eq!(busy.when_serving(false), busy);
    }

    #[test]
    fn a_consumer_spins_for_its_spin_time_before_parking() {
        let doorbell = Doorbell::default();
        let mut idle = Idle::default();
        let wait = IdleWait { spin: Duration::from_millis(30), park_max: Duration::from_millis(1) };
        let started = Instant::now();
        doorbell.idle(&mut idle, wait, || false);
        assert!(started.elapsed() < Duration::from_millis(30), "the first empty poll only spins");
        while started.elapsed() < Duration::from_millis(31) {
            doorbell.idle(&mut idle, wait, || false);
        }
        // Spin time over: the next idle call parks (bounded by park_max) and leaves no sleeper.
        doorbell.idle(&mut idle, wait, || false);
        assert_eq!(doorbell.sleepers.load(Ordering::SeqCst), 0);
        idle.reset();
        let again = Instant::now();
        doorbell.idle(&mut idle, wait, || false);
        assert!(again.elapsed() < Duration::from_millis(30), "after work, spinning starts afresh");
    }
}
