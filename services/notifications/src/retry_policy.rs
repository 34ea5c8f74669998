//! When a failed webhook delivery is tried again, when it is given up, and
//! when an endpoint is left alone: exponential back-off with full jitter
//! (capped) within a retry window, and a per-endpoint circuit breaker.
//! Pure decisions on times and counts; the worker stores their results.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;

/// The timings of retries and of the breaker (`[notifications]`).
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// The first retry's ceiling; each failure doubles it.
    pub backoff_base: Duration,
    /// The longest pause between two attempts.
    pub backoff_max: Duration,
    /// How long after it was queued a delivery is retried before it is
    /// dead-lettered.
    pub window: Duration,
    /// Failures in a row that open an endpoint's circuit.
    pub circuit_failures: i32,
    /// How long an open circuit holds deliveries back before one probe.
    pub circuit_cooldown: Duration,
}

/// What becomes of a delivery after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    RetryAt(DateTime<Utc>),
    /// The window has passed: dead-lettered.
    Dead,
}

/// An endpoint's circuit breaker as stored on its webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breaker {
    pub consecutive_failures: i32,
    pub open_until: Option<DateTime<Utc>>,
}

impl RetryPolicy {
    /// The ceiling of the pause after `attempts` failed attempts:
    /// base × 2^(attempts−1), capped.
    pub fn backoff_ceiling(&self, attempts: i32) -> Duration {
        let doublings = attempts.saturating_sub(1).clamp(0, 30) as u32;
        self.backoff_base
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max)
            .max(self.backoff_base.min(self.backoff_max))
    }

    /// A pause drawn uniformly from [base, ceiling] ("full jitter" with a
    /// floor, so a retry never comes at once): many endpoints failing
    /// together do not retry in lock-step.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let ceiling = self.backoff_ceiling(attempts);
        let floor = self.backoff_base.min(ceiling);
        if ceiling <= floor {
            return floor;
        }
        rand::rng().random_range(floor..=ceiling)
    }

    /// After the `attempts`th attempt failed at `now`: a retry within the
    /// window (the last one at its end), or dead-lettered.
    pub fn after_failure(
        &self,
        queued_at: DateTime<Utc>,
        attempts: i32,
        now: DateTime<Utc>,
    ) -> AfterFailure {
        let deadline = queued_at + self.window;
        if now >= deadline {
            return AfterFailure::Dead;
        }
        let pause =
            chrono::Duration::from_std(self.backoff(attempts)).unwrap_or(chrono::Duration::MAX);
        AfterFailure::RetryAt((now + pause).min(deadline))
    }
}

impl Breaker {
    pub const CLOSED: Self = Self {
        consecutive_failures: 0,
        open_until: None,
    };

    /// Whether deliveries may be attempted at `now` (closed, or open with
    /// its cool-down over: a probe).
    pub fn admits(&self, now: DateTime<Utc>) -> bool {
        self.open_until.is_none_or(|until| until <= now)
    }

    /// Whether the circuit has tripped: only one delivery (a probe) is
    /// tried at a time until one succeeds.
    pub fn is_tripped(&self, policy: &RetryPolicy) -> bool {
        self.consecutive_failures >= policy.circuit_failures
    }

    /// Any success closes the circuit.
    pub fn after_success(&self) -> Self {
        Self::CLOSED
    }

    /// A failure counts; reaching the threshold (or a failed probe) opens
    /// the circuit for the cool-down.
    pub fn after_failure(&self, policy: &RetryPolicy, now: DateTime<Utc>) -> Self {
        let consecutive_failures = self.consecutive_failures.saturating_add(1);
        let open_until = (consecutive_failures >= policy.circuit_failures).then(|| {
            now + chrono::Duration::from_std(policy.circuit_cooldown)
                .unwrap_or(chrono::Duration::MAX)
        });
        Self {
            consecutive_failures,
            open_until,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(60),
            window: Duration::from_secs(24 * 3600),
            circuit_failures: 3,
            circuit_cooldown: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_backoff_ceiling_doubles_up_to_its_cap() {
        let policy = policy();
        let ceilings: Vec<u64> = (1..=8)
            .map(|attempts| policy.backoff_ceiling(attempts).as_secs())
            .collect();
        assert_eq!(ceilings, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(policy.backoff_ceiling(1_000).as_secs(), 60);
        assert_eq!(policy.backoff_ceiling(0).as_secs(), 2);
    }

    #[test]
    fn jitter_stays_within_base_and_ceiling_and_varies() {
        let policy = policy();
        for attempts in 1..12 {
            let ceiling = policy.backoff_ceiling(attempts);
            let draws: Vec<Duration> = (0..200).map(|_| policy.backoff(attempts)).collect();
            assert!(
                draws
                    .iter()
                    .all(|pause| *pause >= policy.backoff_base && *pause <= ceiling)
            );
            if attempts >= 3 {
                let first = draws[0];
                assert!(draws.iter().any(|pause| *pause != first), "jittered");
            }
        }
    }

    #[test]
    fn a_delivery_is_retried_until_the_window_ends_then_dead() {
        let policy = policy();
        let queued = Utc::now();
        match policy.after_failure(queued, 1, queued) {
            AfterFailure::RetryAt(at) => {
                assert!(at >= queued + chrono::Duration::seconds(2));
                assert!(at <= queued + chrono::Duration::seconds(2));
            }
            AfterFailure::Dead => panic!("retried"),
        }
        // Near the end the last retry is at the deadline, not after it.
        let late = queued + chrono::Duration::seconds(24 * 3600 - 1);
        assert_eq!(
            policy.after_failure(queued, 20, late),
            AfterFailure::RetryAt(queued + chrono::Duration::seconds(24 * 3600))
        );
        let over = queued + chrono::Duration::seconds(24 * 3600);
        assert_eq!(policy.after_failure(queued, 21, over), AfterFailure::Dead);
    }

    #[test]
    fn the_breaker_opens_after_the_threshold_probes_after_the_cooldown_and_closes_on_success() {
        let policy = policy();
        let now = Utc::now();
        let once = Breaker::CLOSED.after_failure(&policy, now);
        let twice = once.after_failure(&policy, now);
        assert_eq!(twice.open_until, None);
        assert!(twice.admits(now) && !twice.is_tripped(&policy));
        let open = twice.after_failure(&policy, now);
        let cooldown_over = now + chrono::Duration::seconds(30);
        assert_eq!(open.open_until, Some(cooldown_over));
        assert!(!open.admits(now + chrono::Duration::seconds(29)));
        assert!(open.admits(cooldown_over), "half-open: one probe");
        assert!(open.is_tripped(&policy));
        // A failed probe opens it again for another cool-down.
        let later = cooldown_over + chrono::Duration::seconds(1);
        let reopened = open.after_failure(&policy, later);
        assert_eq!(
            reopened.open_until,
            Some(later + chrono::Duration::seconds(30))
        );
        assert!(!reopened.admits(later));
        assert_eq!(reopened.after_success(), Breaker::CLOSED);
        assert!(Breaker::CLOSED.admits(now));
    }
}
