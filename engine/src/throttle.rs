//! Admission control shared by every gateway: the per-session message-rate limit (a token
//! bucket), applied before a command reaches the ingress ring.

use std::time::Instant;

/// A token bucket: `rate` tokens per second, at most `burst` banked.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_second: u32,
    burst: u32,
    /// Tokens in millionths, so refills at any rate are exact integers.
    micro_tokens: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_second: u32, burst: u32, now: Instant) -> Self {
        Self { rate_per_second, burst: burst.max(1), micro_tokens: u64::from(burst.max(1)) * 1_000_000, last: now }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed_us = now.saturating_duration_since(self.last).as_micros().min(u128::from(u32::MAX)) as u64;
        self.last = now;
        let capacity = u64::from(self.burst) * 1_000_000;
        self.micro_tokens = (self.micro_tokens + elapsed_us * u64::from(self.rate_per_second)).min(capacity);
        if self.micro_tokens >= 1_000_000 {
            self.micro_tokens -= 1_000_000;
            true
        } else {
            false
        }
    }

    /// The configured sustained rate.
    pub fn rate_per_second(&self) -> u32 {
        self.rate_per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100, 5, start);
        assert_eq!((0..10).filter(|_| bucket.try_take(start)).count(), 5, "the burst");
        assert!(!bucket.try_take(start));
        assert!(bucket.try_take(start + Duration::from_millis(10)), "one token per 10 ms");
        assert!(!bucket.try_take(start + Duration::from_millis(15)));
        let later = start + Duration::from_secs(10);
        assert_eq!((0..10).filter(|_| bucket.try_take(later)).count(), 5, "never more than the burst banked");
    }
}
