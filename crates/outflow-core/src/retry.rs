//! The retry policy shared by every destination (and, later, the engine's scheduler).
//!
//! `max_attempts` counts every attempt including the first. After failed attempt `n` the
//! delay is `min(initial_delay_ms × backoff_multiplier^(n-1), max_delay_ms)`, then jitter of
//! up to ±`jitter` (10 % by default) is applied, never exceeding `max_delay_ms`. A
//! `Retry-After` larger than that replaces it, capped at `max_delay_ms`.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Status codes retried unless a destination overrides the list (`retry_on_status`):
/// timeouts, "too early", rate limits and transient server errors. Every other 4xx is
/// permanent.
pub const DEFAULT_RETRYABLE_STATUSES: &[u16] = &[408, 425, 429, 500, 502, 503, 504];

/// How failed deliveries are retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, including the first. At least 1.
    pub max_attempts: u32,
    /// Delay after the first failed attempt, in milliseconds.
    pub initial_delay_ms: u64,
    /// Upper bound of any delay, in milliseconds.
    pub max_delay_ms: u64,
    /// Growth factor between consecutive delays; greater than 1.0.
    pub backoff_multiplier: f64,
    /// Fraction of random spread applied to each delay (0.1 = ±10 %); 0 switches it off.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
}

fn default_jitter() -> f64 {
    0.1
}

impl Default for RetryPolicy {
    /// Seed 000's defaults: 3 attempts, 1 s initial delay, 30 s cap, ×2.0.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_delay_ms: 1000,
            max_delay_ms: 30_000,
            backoff_multiplier: 2.0,
            jitter: default_jitter(),
        }
    }
}

/// One problem with a policy's values, as a (field, message) pair for the config validator.
pub type PolicyProblem = (&'static str, String);

impl RetryPolicy {
    /// Checks the values are usable: positive, consistent, multiplier above 1.0.
    pub fn problems(&self) -> Vec<PolicyProblem> {
        let mut out = Vec::new();
        if self.max_attempts == 0 {
            out.push(("max_attempts", "must be at least 1 (it counts the first attempt)".into()));
        }
        if self.initial_delay_ms == 0 {
            out.push(("initial_delay_ms", "must be a positive number of milliseconds".into()));
        }
        if self.max_delay_ms == 0 {
            out.push(("max_delay_ms", "must be a positive number of milliseconds".into()));
        } else if self.max_delay_ms < self.initial_delay_ms {
            out.push((
                "max_delay_ms",
                format!(
                    "must be at least initial_delay_ms ({}), got {}",
                    self.initial_delay_ms, self.max_delay_ms
                ),
            ));
        }
        if !(self.backoff_multiplier.is_finite() && self.backoff_multiplier > 1.0) {
            out.push((
                "backoff_multiplier",
                format!("must be greater than 1.0 (e.g. 2.0), got {}", self.backoff_multiplier),
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            out.push(("jitter", format!("must be between 0.0 and 1.0, got {}", self.jitter)));
        }
        out
    }

    /// The same policy without jitter (deterministic delays, for tests and benchmarks).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = 0.0;
        self
    }

    /// Whether another attempt may follow attempt number `attempt` (1-based).
    pub fn allows_attempt_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The delay after failed attempt `attempt` (1-based) before jitter:
    /// `min(initial × multiplier^(attempt-1), max)`.
    pub fn base_delay_after(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1024) as i32;
        let raw = self.initial_delay_ms as f64 * self.backoff_multiplier.powi(exponent);
        let capped = if raw.is_finite() {
            raw.min(self.max_delay_ms as f64)
        } else {
            self.max_delay_ms as f64
        };
        Duration::from_millis(capped.round() as u64)
    }

    /// The delay after failed attempt `attempt` with jitter drawn from `unit_random` (a
    /// number in `[0, 1)`), honouring a server's `Retry-After` when it asks for longer.
    pub fn delay_after(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        unit_random: f64,
    ) -> Duration {
        let base = self.base_delay_after(attempt).as_millis() as f64;
        let spread = base * self.jitter * (unit_random.clamp(0.0, 1.0) * 2.0 - 1.0);
        let jittered = (base + spread).clamp(0.0, self.max_delay_ms as f64);
        let mut delay = Duration::from_millis(jittered.round() as u64);
        if let Some(asked) = retry_after
            && asked > delay
        {
            delay = asked.min(Duration::from_millis(self.max_delay_ms));
        }
        delay
    }

    /// [`Self::delay_after`] with jitter from the thread's random generator.
    pub fn delay_after_random(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        self.delay_after(attempt, retry_after, rand::random::<f64>())
    }
}

/// Whether an HTTP status is worth retrying, given a destination's override list.
pub fn is_retryable_status(status: u16, retry_on: Option<&[u16]>) -> bool {
    retry_on.unwrap_or(DEFAULT_RETRYABLE_STATUSES).contains(&status)
}

/// Parses a `Retry-After` header: delta-seconds or an HTTP date (relative to `now`).
/// Dates in the past mean "now" (zero); garbage means no hint.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(initial: u64, mult: f64, max: u64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial_delay_ms: initial,
            max_delay_ms: max,
            backoff_multiplier: mult,
            jitter: 0.0,
        }
    }

    #[test]
    fn seed_sequence_without_jitter() {
        let p = policy(1000, 2.0, 30_000);
        let got: Vec<u64> =
            (1..=7).map(|n| p.delay_after(n, None, 0.5).as_millis() as u64).collect();
        assert_eq!(got, [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    }

    #[test]
    fn fractional_multiplier() {
        let p = policy(500, 1.5, 5000);
        let got: Vec<u64> = (1..=6).map(|n| p.base_delay_after(n).as_millis() as u64).collect();
        assert_eq!(got, [500, 750, 1125, 1688, 2531, 3797]);
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_under_max() {
        let p = RetryPolicy { jitter: 0.1, ..policy(1000, 2.0, 30_000) };
        assert_eq!(p.delay_after(1, None, 0.0).as_millis(), 900);
        assert_eq!(p.delay_after(1, None, 1.0).as_millis(), 1100);
        // At the cap jitter may only go down.
        assert_eq!(p.delay_after(9, None, 1.0).as_millis(), 30_000);
        assert_eq!(p.delay_after(9, None, 0.0).as_millis(), 27_000);
    }

    #[test]
    fn retry_after_replaces_when_larger_and_is_capped() {
        let p = policy(1000, 2.0, 30_000);
        assert_eq!(p.delay_after(1, Some(Duration::from_secs(5)), 0.5), Duration::from_secs(5));
        assert_eq!(p.delay_after(3, Some(Duration::from_secs(1)), 0.5), Duration::from_secs(4));
        assert_eq!(p.delay_after(1, Some(Duration::from_secs(999)), 0.5), Duration::from_secs(30));
    }

    #[test]
    fn attempts_count_the_first() {
        let p = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
        assert!(p.allows_attempt_after(1));
        assert!(p.allows_attempt_after(2));
        assert!(!p.allows_attempt_after(3));
    }

    #[test]
    fn problems_are_reported() {
        let bad = RetryPolicy {
            max_attempts: 0,
            initial_delay_ms: 5000,
            max_delay_ms: 1000,
            backoff_multiplier: 1.0,
            jitter: 2.0,
        };
        let fields: Vec<_> = bad.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["max_attempts", "max_delay_ms", "backoff_multiplier", "jitter"]);
        assert!(RetryPolicy::default().problems().is_empty());
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert!(is_retryable_status(s, None), "{s}");
        }
        for s in [400, 401, 403, 404, 410, 422, 501] {
            assert!(!is_retryable_status(s, None), "{s}");
        }
        assert!(is_retryable_status(404, Some(&[404])));
        assert!(!is_retryable_status(503, Some(&[404])));
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    proptest::proptest! {
        #[test]
        fn delay_never_exceeds_max(initial in 1u64..100_000, extra in 0u64..1_000_000,
                                   mult in 1.01f64..10.0, attempt in 1u32..200, r in 0.0f64..1.0,
                                   jitter in 0.0f64..1.0, ra in proptest::option::of(0u64..10_000_000)) {
            let p = RetryPolicy { max_attempts: 5, initial_delay_ms: initial,
                                  max_delay_ms: initial + extra, backoff_multiplier: mult, jitter };
            let d = p.delay_after(attempt, ra.map(Duration::from_millis), r);
            proptest::prop_assert!(d <= Duration::from_millis(p.max_delay_ms));
        }
    }
}
