//! Thread scheduling priority: background threads that must never delay the engine thread.
//!
//! The snapshotter (a shadow engine that hashes, serialises and writes ~100 MB at 1M resting
//! orders) would otherwise share the CPU with the engine thread as an equal: on a 2-core machine
//! that is what clients saw as a snapshot "pause". [`lower_current_thread`] puts the calling
//! thread in Linux's `SCHED_IDLE` class, whose threads run only when no normal thread wants the
//! core and are preempted as soon as one wakes; if that is refused it falls back to nice 19.
//! Elsewhere it does nothing.
#![allow(unsafe_code)]

/// How the calling thread's priority was lowered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lowered {
    /// `SCHED_IDLE`: runs only on otherwise idle cores.
    SchedIdle,
    /// Nice 19 (lowest weight among normal threads): `SCHED_IDLE` was refused.
    Nice19,
    /// Unchanged (not Linux, or both calls refused; the error is logged).
    Unchanged,
}

/// Lowest nice value (least CPU share among normal threads).
#[cfg(target_os = "linux")]
const NICE_LOWEST: libc::c_int = 19;

/// Lowers the calling thread's (only this thread's, not the process's) scheduling priority, see
/// the module docs.
pub fn lower_current_thread() -> Lowered {
    #[cfg(target_os = "linux")]
    {
        let parameters = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` with pid 0 changes the calling thread only (Linux threads
        // are scheduled as tasks); `parameters` is a valid, initialised `sched_param` that
        // outlives the call, and priority 0 is the only one `SCHED_IDLE` accepts.
        let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &parameters) };
        if result == 0 {
            return Lowered::SchedIdle;
        }
        let idle_error = std::io::Error::last_os_error();
        // SAFETY: `gettid` has no preconditions; `setpriority(PRIO_PROCESS, tid, …)` on Linux
        // changes that one thread's nice value and reads no memory of ours.
        let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE_LOWEST) };
        if result == 0 {
            return Lowered::Nice19;
        }
        tracing::warn!(%idle_error, nice_error = %std::io::Error::last_os_error(), "could not lower a background thread's priority");
        Lowered::Unchanged
    }
    #[cfg(not(target_os = "linux"))]
    {
        Lowered::Unchanged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy of the calling thread as the kernel reports it.
    #[cfg(target_os = "linux")]
    fn policy_of_current_thread() -> libc::c_int {
        // SAFETY: pid 0 is the calling thread; no memory is passed.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn lowers_only_the_calling_thread() {
        let before = policy_of_current_thread();
        let (lowered, policy) =
            std::thread::spawn(|| (lower_current_thread(), policy_of_current_thread())).join().unwrap();
        match lowered {
            Lowered::SchedIdle => assert_eq!(policy, libc::SCHED_IDLE),
            Lowered::Nice19 => assert_eq!(policy, before),
            Lowered::Unchanged => panic!("an unprivileged thread may always lower its own priority"),
        }
        // The spawning thread keeps its own class.
        assert_eq!(policy_of_current_thread(), before);
        assert_ne!(before, libc::SCHED_IDLE);
    }
}
