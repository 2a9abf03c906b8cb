//! How long to wait between attempts: exponential backoff with full jitter, honoring what the
//! server asked for, within a per-delay cap and a total deadline.

use std::time::Duration;

/// When and how often a failed call is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 = never retry).
    pub max_attempts: u32,
    /// The backoff's first step; step `n` is `base_delay * 2^(n-1)` before jitter.
    pub base_delay: Duration,
    /// No single wait is longer than this, even when GitHub asks for more.
    pub max_delay: Duration,
    /// No retry starts later than this after the first attempt.
    pub max_total: Duration,
    /// One attempt, from sending the request to having read the whole answer; a slower answer
    /// is a timeout (retried like a lost answer).
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            max_total: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The wait after failed attempt number `attempt` (1-based). `server_hint` is what GitHub
    /// asked for (`Retry-After`/`x-ratelimit-reset`); it is honored as given, capped by
    /// `max_delay`. Without a hint: full jitter, a uniform draw from `0..=min(max_delay,
    /// base_delay * 2^(attempt-1))`, with `unit` in `[0, 1]` being that draw.
    pub fn delay(&self, attempt: u32, server_hint: Option<Duration>, unit: f64) -> Duration {
        if let Some(hint) = server_hint {
            return hint.min(self.max_delay);
        }
        let exp = attempt.saturating_sub(1).min(31);
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matches_the_design() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.base_delay, Duration::from_millis(250));
        assert_eq!(p.max_delay, Duration::from_secs(30));
        assert_eq!(p.max_total, Duration::from_secs(60));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_scales_it() {
        let p = RetryPolicy::default();
        let full = |n| p.delay(n, None, 1.0);
        assert_eq!(full(1), Duration::from_millis(250));
        assert_eq!(full(2), Duration::from_millis(500));
        assert_eq!(full(3), Duration::from_secs(1));
        assert_eq!(full(8), Duration::from_secs(30));
        assert_eq!(full(1_000), Duration::from_secs(30));
        assert_eq!(p.delay(3, None, 0.5), Duration::from_millis(500));
        assert_eq!(p.delay(3, None, 0.0), Duration::ZERO);
        assert_eq!(p.delay(3, None, 7.0), Duration::from_secs(1));
    }

    #[test]
    fn server_hint_is_honored_but_capped() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(5)), 0.0),
            Duration::from_secs(5)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3_600)), 0.0),
            Duration::from_secs(30)
        );
        let fast = RetryPolicy {
            max_delay: Duration::from_millis(20),
            ..p
        };
        assert_eq!(
            fast.delay(1, Some(Duration::from_secs(1)), 1.0),
            Duration::from_millis(20)
        );
    }
}
