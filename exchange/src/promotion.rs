//! The phases of a replicated node's promotion to primary, timed: where a failover's time goes
//! (docs/deployment.md, "Replicated journal and failover").
//!
//! A failover is, from the kill of the old primary: the lease moves (the group coordinator's
//! session timeout), then this node appends its epoch marker, reads the log up to it (caught
//! up), starts its runtime and gateways (serving), and commits its first batch under the new
//! epoch (its first acknowledgement follows at once). Each phase is stamped with the wall clock
//! when it is reached, logged ("promotion phase") and exported on `/metrics` as milliseconds
//! after the lease was acquired, so a failover measured from outside (the kill) can be split
//! into its phases.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A phase of a promotion, in the order they are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromotionPhase {
    /// The group coordinator assigned the lease partition to this node.
    LeaseAcquired,
    /// This node's epoch marker is in the journal topic.
    EpochAppended,
    /// The log up to the marker is applied: the state is the authoritative one.
    CaughtUp,
    /// The runtime and the gateways are up and listening.
    Serving,
    /// The first batch under the new epoch is in the journal topic (and acknowledged).
    FirstCommit,
}

/// Number of [`PromotionPhase`]s.
const PHASES: usize = 5;

impl PromotionPhase {
    /// Every phase, in order.
    pub const ALL: [Self; PHASES] =
        [Self::LeaseAcquired, Self::EpochAppended, Self::CaughtUp, Self::Serving, Self::FirstCommit];

    /// The phase's name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::LeaseAcquired => "lease acquired",
            Self::EpochAppended => "epoch appended",
            Self::CaughtUp => "caught up",
            Self::Serving => "serving",
            Self::FirstCommit => "first commit",
        }
    }

    /// The `/metrics` gauge of the phase (milliseconds after the lease was acquired) and its help.
    fn gauge(self) -> (&'static str, &'static str) {
        match self {
            Self::LeaseAcquired => (
                "exchange_cluster_lease_acquired_unix_ms",
                "When this node acquired the lease (ms since the UNIX epoch; 0: never).",
            ),
            Self::EpochAppended => (
                "exchange_cluster_promotion_epoch_appended_ms",
                "Promotion: epoch marker appended, ms after the lease was acquired.",
            ),
            Self::CaughtUp => (
                "exchange_cluster_promotion_caught_up_ms",
                "Promotion: log applied up to the own marker, ms after the lease was acquired.",
            ),
            Self::Serving => (
                "exchange_cluster_promotion_serving_ms",
                "Promotion: runtime and gateways listening, ms after the lease was acquired.",
            ),
            Self::FirstCommit => (
                "exchange_cluster_promotion_first_commit_ms",
                "Promotion: first batch of the new epoch committed, ms after the lease was acquired.",
            ),
        }
    }
}

/// Microseconds since the UNIX epoch, now (wall clock: comparable across processes on one
/// machine, which is what splitting a failover measured from outside needs).
pub fn unix_us_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// When each [`PromotionPhase`] was reached (µs since the UNIX epoch; 0: not yet). Shared by the
/// promotion, the runtime's replicator and `/metrics`.
#[derive(Debug, Default)]
pub struct PromotionTimeline {
    reached_unix_us: [AtomicU64; PHASES],
    /// The whole timeline was logged (once every phase was reached).
    reported: AtomicBool,
}

impl PromotionTimeline {
    /// Records that `phase` was reached now (see [`Self::mark_at`]).
    pub fn mark(&self, phase: PromotionPhase) {
        self.mark_at(phase, unix_us_now());
    }

    /// Records that `phase` was reached at `unix_us` (only the first time) and logs it with the
    /// time since the lease was acquired; once every phase is reached (serving and the first
    /// commit may come in either order: they are marked by different threads) the whole
    /// promotion is logged in one line.
    pub fn mark_at(&self, phase: PromotionPhase, unix_us: u64) {
        let slot = &self.reached_unix_us[phase as usize];
        if slot.compare_exchange(0, unix_us, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return;
        }
        tracing::info!(phase = phase.name(), unix_us, since_lease_ms = self.since_lease_ms(phase), "promotion phase");
        let complete = PromotionPhase::ALL.iter().all(|&phase| self.reached_unix_us(phase).is_some());
        if complete && !self.reported.swap(true, Ordering::AcqRel) {
            let ms = |phase| self.since_lease_ms(phase).unwrap_or(0);
            // One line with every phase: what the failover test reads.
            tracing::info!(
                lease_unix_us = self.reached_unix_us(PromotionPhase::LeaseAcquired).unwrap_or(0),
                epoch_appended_ms = ms(PromotionPhase::EpochAppended),
                caught_up_ms = ms(PromotionPhase::CaughtUp),
                serving_ms = ms(PromotionPhase::Serving),
                first_commit_ms = ms(PromotionPhase::FirstCommit),
                "promotion timeline"
            );
        }
    }

    /// When `phase` was reached (µs since the UNIX epoch), if it was.
    pub fn reached_unix_us(&self, phase: PromotionPhase) -> Option<u64> {
        Some(self.reached_unix_us[phase as usize].load(Ordering::Acquire)).filter(|&at| at > 0)
    }

    /// Milliseconds from the lease's acquisition to `phase`, if both were reached.
    pub fn since_lease_ms(&self, phase: PromotionPhase) -> Option<u64> {
        let lease = self.reached_unix_us(PromotionPhase::LeaseAcquired)?;
        Some(self.reached_unix_us(phase)?.saturating_sub(lease) / 1_000)
    }

    /// The `/metrics` gauges: when the lease was acquired, and each later phase reached so far in
    /// ms after it.
    pub fn gauges(&self) -> Vec<(&'static str, &'static str, f64)> {
        let mut gauges = Vec::with_capacity(PHASES);
        for phase in PromotionPhase::ALL {
            let (name, help) = phase.gauge();
            let value = match phase {
                PromotionPhase::LeaseAcquired => self.reached_unix_us(phase).map(|us| us / 1_000),
                _ => self.since_lease_ms(phase),
            };
            if let Some(value) = value {
                gauges.push((name, help, value as f64));
            }
        }
        gauges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_kept_once_and_reported_after_the_lease() {
        let timeline = PromotionTimeline::default();
        assert!(timeline.gauges().is_empty());
        timeline.mark_at(PromotionPhase::LeaseAcquired, 10_000_000);
        timeline.mark_at(PromotionPhase::EpochAppended, 10_030_000);
        timeline.mark_at(PromotionPhase::EpochAppended, 10_090_000);
        timeline.mark_at(PromotionPhase::Serving, 10_250_000);
        assert_eq!(timeline.since_lease_ms(PromotionPhase::EpochAppended), Some(30), "the first mark counts");
        assert_eq!(timeline.since_lease_ms(PromotionPhase::CaughtUp), None);
        let gauges: Vec<(&str, f64)> = timeline.gauges().into_iter().map(|(name, _, value)| (name, value)).collect();
        assert_eq!(
            gauges,
            [
                ("exchange_cluster_lease_acquired_unix_ms", 10_000.0),
                ("exchange_cluster_promotion_epoch_appended_ms", 30.0),
                ("exchange_cluster_promotion_serving_ms", 250.0),
            ]
        );
    }
}
