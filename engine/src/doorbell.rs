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
//! # No lock on the producer's path
//! The producer of the egress ring is the engine thread, which takes no lock. The wakers live
//! in a fixed set of [`WAKER_SLOTS_MAX`] slots, each an atomic pointer: a ring loads them and
//! calls the wakers it finds, with one counter increment around the pass (`waking`); it never
//! waits for anybody. Registering and removing (a gateway starting and stopping) are the slow
//! side: they serialise on a mutex of their own, and a removal clears the slot, then waits until
//! no wake pass that could have loaded the old pointer is still running before it releases the
//! waker (see [`waker_slots`]).
//!
//! `unsafe` here is the futex system call, on a counter this struct owns, and the waker slots'
//! pointers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use waker_slots::{WAKER_SLOTS_MAX, WakerSlotsFull};

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
    /// Consumers that park elsewhere than on the futex ([`Self::park_elsewhere`]): read by the
    /// producers without a lock.
    wakers: waker_slots::WakerSlots,
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
            self.wakers.wake_all();
        }
    }

    /// Registers a consumer that parks elsewhere ([`Self::park_elsewhere`]): every ring that
    /// finds a sleeper also calls `waker`. Kept until [`Self::remove_waker`]. Called when a
    /// gateway starts, never on the producers' path.
    ///
    /// # Errors
    /// [`WakerSlotsFull`]: [`WAKER_SLOTS_MAX`] wakers are registered already.
    pub fn add_waker(&self, waker: Arc<dyn Waker>) -> Result<(), WakerSlotsFull> {
        self.wakers.add(waker)
    }

    /// Unregisters a waker added by [`Self::add_waker`] (the same `Arc`); whether it was
    /// registered. Returns once no ring can still be calling it (a ring's pass over the wakers
    /// lasts a few system calls).
    pub fn remove_waker(&self, waker: &Arc<dyn Waker>) -> bool {
        self.wakers.remove(waker)
    }

    /// Number of registered wakers.
    pub fn wakers_registered(&self) -> usize {
        self.wakers.registered()
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

#[allow(unsafe_code)] // The slots' pointers: four audited blocks, each with its SAFETY comment.
pub mod waker_slots {
    //! The doorbell's wakers as a fixed set of slots that a producer reads without a lock.
    //!
    //! A slot holds null or a pointer from `Box::into_raw` of a registered `Arc<dyn Waker>`
    //! (boxed: the `Arc` of a trait object is a fat pointer, an atomic holds a thin one).
    //!
    //! Invariants:
    //! - Only [`WakerSlots::add`] puts a pointer into a slot and only [`WakerSlots::remove`] takes
    //!   one out; both hold `registry`, so a pointer is released by exactly one remover, and a
    //!   remover may read the waker behind a slot (nobody else frees it meanwhile).
    //! - A wake pass increments `waking` before it loads any slot and decrements it after its
    //!   last call. A remover clears the slot first, then waits for `waking` to read zero, then
    //!   releases the waker. Every operation is sequentially consistent, so a pass that loaded
    //!   the old pointer comes before the clearing in the single total order, hence its increment
    //!   does too, and `waking` cannot read zero until that pass has decremented: the waker is
    //!   released only after every call on it returned. A pass that starts after the clearing
    //!   cannot load the pointer.
    //! - A remover that never sees zero within [`REMOVE_WAIT_MAX`] (producers ringing without a
    //!   pause) does not release the waker: it keeps it in `registry` until the doorbell drops.
    //!   That leak is bounded by one waker per such removal (a gateway stop) and has not been
    //!   seen with the egress ring, whose single producer makes `waking` zero between passes.
    use super::Waker;
    use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// Wakers one doorbell holds at once: one per I/O thread parked on the ring (the SBE and
    /// FIX gateways', with room for gateways started while stopped ones are not yet dropped).
    pub const WAKER_SLOTS_MAX: usize = 8;

    /// Longest a removal waits for the wake passes in progress before it keeps the waker until
    /// the doorbell drops (see the module docs).
    pub const REMOVE_WAIT_MAX: Duration = Duration::from_millis(100);

    /// [`super::Doorbell::add_waker`] found every slot taken.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct WakerSlotsFull;

    impl std::fmt::Display for WakerSlotsFull {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "every one of the doorbell's {WAKER_SLOTS_MAX} waker slots is taken")
        }
    }

    impl std::error::Error for WakerSlotsFull {}

    type Entry = Arc<dyn Waker>;

    /// The slots (see the module docs).
    #[derive(Default)]
    pub(crate) struct WakerSlots {
        slots: [AtomicPtr<Entry>; WAKER_SLOTS_MAX],
        /// Wake passes in progress.
        waking: AtomicU32,
        /// Serialises [`Self::add`] and [`Self::remove`]; holds the wakers whose removal could
        /// not wait for the passes in progress (released when the doorbell drops).
        registry: Mutex<Vec<Entry>>,
    }

    impl WakerSlots {
        /// Calls every registered waker; takes no lock and waits for nobody.
        pub(crate) fn wake_all(&self) {
            self.waking.fetch_add(1, Ordering::SeqCst);
            for slot in &self.slots {
                let entry = slot.load(Ordering::SeqCst);
                if !entry.is_null() {
                    // SAFETY: a non-null slot points to a live `Box<Entry>` (from `add`), and
                    // `remove` releases it only after clearing the slot and seeing `waking` at
                    // zero, which cannot happen before this pass decrements it below (module
                    // docs). Only a shared reference is made.
                    unsafe { (*entry).wake() };
                }
            }
            self.waking.fetch_sub(1, Ordering::SeqCst);
        }

        /// Puts `waker` in a free slot.
        pub(crate) fn add(&self, waker: Entry) -> Result<(), WakerSlotsFull> {
            let _registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
            let Some(slot) = self.slots.iter().find(|slot| slot.load(Ordering::SeqCst).is_null()) else {
                return Err(WakerSlotsFull);
            };
            slot.store(Box::into_raw(Box::new(waker)), Ordering::SeqCst);
            Ok(())
        }

        /// Clears the slot holding `waker` and releases it once no pass can be calling it;
        /// whether it was registered.
        pub(crate) fn remove(&self, waker: &Entry) -> bool {
            let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
            let found = self.slots.iter().find(|slot| {
                let entry = slot.load(Ordering::SeqCst);
                // SAFETY: a non-null slot points to a live `Box<Entry>`; only a remover releases
                // it, and removers hold `registry`, as this one does.
                !entry.is_null() && Arc::ptr_eq(unsafe { &*entry }, waker)
            });
            let Some(slot) = found else { return false };
            let entry = slot.swap(std::ptr::null_mut(), Ordering::SeqCst);
            // SAFETY: `entry` came from `Box::into_raw` in `add`, and the slot that held it is
            // cleared: this remover (under `registry`) is its only owner now. It is dropped
            // below only once no pass can be calling it (module docs).
            let entry = unsafe { Box::from_raw(entry) };
            let deadline = Instant::now() + REMOVE_WAIT_MAX;
            loop {
                if self.waking.load(Ordering::SeqCst) == 0 {
                    drop(entry);
                    return true;
                }
                if Instant::now() >= deadline {
                    tracing::warn!("doorbell: producers never paused; a removed waker is kept until the ring drops");
                    registry.push(*entry);
                    return true;
                }
                std::thread::yield_now();
            }
        }

        /// Number of registered wakers.
        pub(crate) fn registered(&self) -> usize {
            self.slots.iter().filter(|slot| !slot.load(Ordering::SeqCst).is_null()).count()
        }
    }

    impl Drop for WakerSlots {
        fn drop(&mut self) {
            for slot in &mut self.slots {
                let entry = std::mem::replace(slot.get_mut(), std::ptr::null_mut());
                if !entry.is_null() {
                    // SAFETY: `&mut self`: no pass or remover is running; the pointer came from
                    // `Box::into_raw` in `add` and no remover took it out (the slot held it).
                    drop(unsafe { Box::from_raw(entry) });
                }
            }
        }
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
    use std::sync::atomic::{AtomicBool, AtomicU64};

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
        doorbell.add_waker(waker.clone()).unwrap();
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
        assert!(doorbell.remove_waker(&waker));
        assert_eq!(doorbell.wakers_registered(), 0);
        assert_eq!(doorbell.elsewhere.load(Ordering::SeqCst), 0);
    }

    /// A waker that counts its calls and notices a call after it started being dropped.
    struct CountingWaker {
        /// `LIVE` until its drop starts.
        state: AtomicU32,
        calls: Arc<AtomicU64>,
        used_after_release: Arc<AtomicBool>,
    }

    const LIVE: u32 = 0x11FE;
    const RELEASED: u32 = 0xDEAD;

    impl Waker for CountingWaker {
        fn wake(&self) {
            // A call lasts a while (an eventfd write can be descheduled): a release during it
            // is seen by the second look.
            let until = Instant::now() + Duration::from_micros(20);
            let live_at_start = self.state.load(Ordering::SeqCst) == LIVE;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            if !live_at_start || self.state.load(Ordering::SeqCst) != LIVE {
                self.used_after_release.store(true, Ordering::SeqCst);
            }
            self.calls.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Drop for CountingWaker {
        fn drop(&mut self) {
            self.state.store(RELEASED, Ordering::SeqCst);
            // Widen the window in which a pass that still held the pointer would call it.
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Registering more than [`WAKER_SLOTS_MAX`] wakers is a named error (the gateway's start
    /// fails with it), and a removed waker frees its slot.
    #[test]
    fn more_wakers_than_the_slots_is_an_error_and_removal_frees_a_slot() {
        struct Nothing;
        impl Waker for Nothing {
            fn wake(&self) {}
        }
        let doorbell = Doorbell::default();
        let wakers: Vec<Arc<dyn Waker>> = (0..WAKER_SLOTS_MAX).map(|_| Arc::new(Nothing) as Arc<dyn Waker>).collect();
        for waker in &wakers {
            doorbell.add_waker(waker.clone()).unwrap();
        }
        let one_more: Arc<dyn Waker> = Arc::new(Nothing);
        let refused = doorbell.add_waker(one_more.clone());
        assert_eq!(refused, Err(WakerSlotsFull));
        assert!(refused.unwrap_err().to_string().contains(&WAKER_SLOTS_MAX.to_string()));
        assert!(!doorbell.remove_waker(&one_more), "never registered");
        assert!(doorbell.remove_waker(&wakers[3]));
        assert!(!doorbell.remove_waker(&wakers[3]), "removed once");
        doorbell.add_waker(one_more.clone()).unwrap();
        assert_eq!(doorbell.wakers_registered(), WAKER_SLOTS_MAX);
        // The doorbell releases what it still holds when it drops.
        drop(doorbell);
        assert_eq!(Arc::strong_count(&one_more), 1);
        assert_eq!(Arc::strong_count(&wakers[0]), 1);
    }

    /// A ring never waits for another thread's use of the waker set: while one producer is
    /// inside a slow waker call (300 ms, standing in for a descheduled thread), another
    /// producer's ring returns at once. Fails with the old `Mutex<Vec<_>>` of wakers, under which
    /// the second ring waited for the first one's lock (about 300 ms).
    #[test]
    fn a_ring_never_waits_for_another_thread_using_the_wakers() {
        struct SlowOnce {
            slow: AtomicBool,
            inside: AtomicBool,
        }
        impl Waker for SlowOnce {
            fn wake(&self) {
                if self.slow.swap(false, Ordering::SeqCst) {
                    self.inside.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        }
        let doorbell = Arc::new(Doorbell::default());
        let waker = Arc::new(SlowOnce { slow: AtomicBool::new(true), inside: AtomicBool::new(false) });
        doorbell.add_waker(waker.clone()).unwrap();
        // A consumer announced as parked elsewhere, so that rings call the wakers.
        doorbell.elsewhere.fetch_add(1, Ordering::SeqCst);
        doorbell.sleepers.fetch_add(1, Ordering::SeqCst);
        let first = {
            let doorbell = doorbell.clone();
            std::thread::spawn(move || doorbell.ring())
        };
        while !waker.inside.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let started = Instant::now();
        doorbell.ring();
        let waited = started.elapsed();
        first.join().unwrap();
        assert!(waited < Duration::from_millis(150), "the second ring waited {waited:?} for the first");
    }

    /// Wakers registered and removed over and over while producers ring: every parked consumer
    /// is woken by every publication (never by its bound), and no removed waker is called once
    /// it is being released (each waker notices a call after its drop started). The second check
    /// fails if a removal releases the waker without waiting for the wake passes in progress
    /// (verified by dropping the wait in `WakerSlots::remove`).
    #[test]
    fn wakers_come_and_go_while_producers_ring_without_a_lost_wake_or_a_late_call() {
        const PUBLICATIONS: u64 = 3_000;
        const PARK_BOUND: Duration = Duration::from_secs(2);
        let doorbell = Arc::new(Doorbell::default());
        let published = Arc::new(AtomicU64::new(0));
        let used_after_release = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        // The parked consumer: an I/O thread stand-in whose waker stays registered.
        let (sender, receiver) = std::sync::mpsc::sync_channel::<()>(1);
        struct ChannelWaker(std::sync::mpsc::SyncSender<()>);
        impl Waker for ChannelWaker {
            fn wake(&self) {
                let _ = self.0.try_send(());
            }
        }
        doorbell.add_waker(Arc::new(ChannelWaker(sender))).unwrap();
        let consumer = {
            let (doorbell, published) = (doorbell.clone(), published.clone());
            std::thread::spawn(move || {
                let mut seen = 0;
                let mut bound_hits = 0;
                while seen < PUBLICATIONS {
                    let parked = doorbell.park_elsewhere(
                        || published.load(Ordering::SeqCst) > seen,
                        || receiver.recv_timeout(PARK_BOUND),
                    );
                    if let Some(Err(_)) = parked {
                        bound_hits += 1;
                    }
                    seen = published.load(Ordering::SeqCst);
                }
                bound_hits
            })
        };
        // Two threads churning wakers through the other slots.
        let churners: Vec<_> = (0..2)
            .map(|_| {
                let (doorbell, done, used_after_release) = (doorbell.clone(), done.clone(), used_after_release.clone());
                std::thread::spawn(move || {
                    let calls = Arc::new(AtomicU64::new(0));
                    let mut rounds = 0u64;
                    while !done.load(Ordering::SeqCst) {
                        let waker: Arc<dyn Waker> = Arc::new(CountingWaker {
                            state: AtomicU32::new(LIVE),
                            calls: calls.clone(),
                            used_after_release: used_after_release.clone(),
                        });
                        doorbell.add_waker(waker.clone()).unwrap();
                        std::thread::yield_now();
                        assert!(doorbell.remove_waker(&waker));
                        rounds += 1;
                    }
                    (rounds, calls.load(Ordering::SeqCst))
                })
            })
            .collect();
        // The producer: publish, ring; every few publications let the consumer park again.
        for _ in 0..PUBLICATIONS {
            published.fetch_add(1, Ordering::SeqCst);
            doorbell.ring();
            if published.load(Ordering::SeqCst) % 8 == 0 {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        let bound_hits = consumer.join().unwrap();
        done.store(true, Ordering::SeqCst);
        let mut churned_calls = 0;
        for churner in churners {
            let (rounds, calls) = churner.join().unwrap();
            assert!(rounds > 0);
            churned_calls += calls;
        }
        assert_eq!(bound_hits, 0, "a parked consumer waited for its bound instead of being woken");
        assert!(churned_calls > 0, "the churned wakers were rung while registered");
        assert!(!used_after_release.load(Ordering::SeqCst), "a waker was called after its release started");
        assert_eq!(doorbell.wakers_registered(), 1);
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
