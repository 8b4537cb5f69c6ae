//! Circuit breaker of one destination key.
//!
//! Closed: attempts flow; `failure_threshold` consecutive failed attempts open it. Open:
//! nothing is claimed for the key until `cool_down` has passed. Half-open: exactly one probe
//! attempt is let through; its success closes the circuit, its failure opens it again for
//! another cool-down. So a dead endpoint costs one probe per cool-down, not a storm.
//!
//! Time is passed in (`now`) rather than read, so the state machine is tested without
//! sleeping.

use std::time::Instant;

use crate::BreakerSettings;

/// Where a circuit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Attempts flow.
    Closed,
    /// Paused until the instant, then half-open.
    Open {
        /// When a probe may go.
        until: Instant,
    },
    /// One probe may go (`probing` once it has been let through).
    HalfOpen {
        /// Whether the probe is in flight.
        probing: bool,
    },
}

/// The breaker of one destination key.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: CircuitState,
    consecutive_failures: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker { state: CircuitState::Closed, consecutive_failures: 0 }
    }
}

impl Breaker {
    /// The current state as of `now` (an open circuit whose cool-down ended is half-open).
    pub fn state(&mut self, now: Instant) -> CircuitState {
        if let CircuitState::Open { until } = self.state
            && now >= until
        {
            self.state = CircuitState::HalfOpen { probing: false };
        }
        self.state
    }

    /// Consecutive failed attempts.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The state name the API shows: `closed`, `open` or `half_open`.
    pub fn state_name(&mut self, now: Instant) -> &'static str {
        match self.state(now) {
            CircuitState::Closed => "closed",
            CircuitState::Open { .. } => "open",
            CircuitState::HalfOpen { .. } => "half_open",
        }
    }

    /// How many attempts may start now at most (`None` = no breaker limit): 0 while open or
    /// while the half-open probe is in flight, 1 when a probe may go.
    pub fn allowance(&mut self, now: Instant) -> Option<usize> {
        match self.state(now) {
            CircuitState::Closed => None,
            CircuitState::Open { .. } | CircuitState::HalfOpen { probing: true } => Some(0),
            CircuitState::HalfOpen { probing: false } => Some(1),
        }
    }

    /// Notes that an attempt starts. Returns `false` when the breaker refuses it.
    pub fn admit(&mut self, now: Instant) -> bool {
        match self.state(now) {
            CircuitState::Closed => true,
            CircuitState::Open { .. } | CircuitState::HalfOpen { probing: true } => false,
            CircuitState::HalfOpen { probing: false } => {
                self.state = CircuitState::HalfOpen { probing: true };
                true
            }
        }
    }

    /// A successful attempt: the endpoint works, whatever the state was.
    pub fn on_success(&mut self) {
        self.state = CircuitState::Closed;
        self.consecutive_failures = 0;
    }

    /// A failed attempt. Returns `true` when this failure opened the circuit.
    pub fn on_failure(&mut self, now: Instant, settings: &BreakerSettings) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.state(now) {
            CircuitState::Closed if self.consecutive_failures >= settings.failure_threshold => {
                self.state = CircuitState::Open { until: now + settings.cool_down };
                true
            }
            CircuitState::HalfOpen { .. } => {
                self.state = CircuitState::Open { until: now + settings.cool_down };
                true
            }
            // Attempts that started before the circuit opened keep it open; they do not
            // extend the cool-down.
            _ => false,
        }
    }

    /// An admitted attempt ended without a verdict (released at shutdown, aborted): a
    /// half-open circuit may send another probe.
    pub fn on_abandoned(&mut self) {
        if let CircuitState::HalfOpen { probing: true } = self.state {
            self.state = CircuitState::HalfOpen { probing: false };
        }
    }

    /// When an open circuit will let a probe through.
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.state {
            CircuitState::Open { until } => Some(until),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings { failure_threshold: 3, cool_down: Duration::from_secs(10) }
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let s = settings();
        let t0 = Instant::now();
        let mut b = Breaker::default();
        assert!(!b.on_failure(t0, &s));
        assert!(!b.on_failure(t0, &s));
        assert_eq!(b.state_name(t0), "closed");
        assert_eq!(b.allowance(t0), None);
        assert!(b.on_failure(t0, &s));
        assert_eq!(b.state(t0), CircuitState::Open { until: t0 + s.cool_down });
        assert_eq!(b.state_name(t0), "open");
        assert_eq!(b.consecutive_failures(), 3);
        assert_eq!(b.allowance(t0), Some(0));
        assert!(!b.admit(t0 + Duration::from_secs(9)));
        assert_eq!(b.reopens_at(), Some(t0 + s.cool_down));
    }

    #[test]
    fn a_success_resets_the_count() {
        let s = settings();
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.on_failure(t0, &s);
        b.on_failure(t0, &s);
        b.on_success();
        assert_eq!(b.consecutive_failures(), 0);
        assert!(!b.on_failure(t0, &s));
        assert!(!b.on_failure(t0, &s));
        assert_eq!(b.state_name(t0), "closed");
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let s = settings();
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.on_failure(t0, &s);
        }
        let later = t0 + s.cool_down;
        assert_eq!(b.state_name(later), "half_open");
        assert_eq!(b.allowance(later), Some(1));
        assert!(b.admit(later));
        assert_eq!(b.allowance(later), Some(0));
        assert!(!b.admit(later), "a second probe must wait for the first one's verdict");
        assert_eq!(b.state_name(later), "half_open");
    }

    #[test]
    fn probe_success_closes() {
        let s = settings();
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.on_failure(t0, &s);
        }
        let later = t0 + s.cool_down;
        assert!(b.admit(later));
        b.on_success();
        assert_eq!(b.state_name(later), "closed");
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.allowance(later), None);
    }

    #[test]
    fn probe_failure_reopens_for_another_cool_down() {
        let s = settings();
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.on_failure(t0, &s);
        }
        let probe_at = t0 + Duration::from_secs(12);
        assert!(b.admit(probe_at));
        assert!(b.on_failure(probe_at, &s));
        assert_eq!(b.state(probe_at), CircuitState::Open { until: probe_at + s.cool_down });
        assert_eq!(b.consecutive_failures(), 4);
        assert_eq!(b.state_name(probe_at + Duration::from_secs(9)), "open");
        assert_eq!(b.state_name(probe_at + s.cool_down), "half_open");
    }

    #[test]
    fn late_failures_while_open_do_not_extend_the_cool_down() {
        let s = settings();
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.on_failure(t0, &s);
        }
        assert!(!b.on_failure(t0 + Duration::from_secs(5), &s));
        assert_eq!(b.reopens_at(), Some(t0 + s.cool_down));
    }

    #[test]
    fn an_abandoned_probe_frees_the_probe_slot() {
        let s = settings();
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.on_failure(t0, &s);
        }
        let later = t0 + s.cool_down;
        assert!(b.admit(later));
        b.on_abandoned();
        assert_eq!(b.allowance(later), Some(1));
    }
}
