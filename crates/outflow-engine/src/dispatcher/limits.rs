//! Per-destination-key isolation: in-flight counts against `per_destination_concurrency`
//! and the key's circuit breaker, in one table.
//!
//! The table is behind a `std` mutex held only for map operations, never across an await.
//! An admitted attempt holds a [`KeyPermit`]; dropping it frees the key's slot and wakes
//! the dispatcher, so a freed slot is used at once rather than at the next poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use super::CircuitView;
use super::breaker::{Breaker, CircuitState};
use crate::BreakerSettings;

/// Above this many keys, idle healthy keys are forgotten, so inline destinations with ever
/// new hosts cannot grow the table without bound.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug, Default)]
struct KeyState {
    in_flight: usize,
    breaker: Breaker,
}

impl KeyState {
    fn idle_and_healthy(&self) -> bool {
        self.in_flight == 0 && self.breaker.consecutive_failures() == 0
    }
}

/// Every destination key's limits and breaker.
#[derive(Debug)]
pub struct KeyTable {
    keys: Mutex<HashMap<String, KeyState>>,
    per_key: usize,
    breaker: BreakerSettings,
    /// Notified whenever an attempt ends (a key slot and a global slot are free again).
    pub slot_freed: Notify,
}

impl KeyTable {
    /// An empty table: at most `per_key` attempts per key (at least 1).
    pub fn new(per_key: usize, breaker: BreakerSettings) -> Self {
        KeyTable {
            keys: Mutex::new(HashMap::new()),
            per_key: per_key.max(1),
            breaker,
            slot_freed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, KeyState>> {
        // A panic while holding this lock cannot leave a count half-updated (each update is
        // one statement), so a poisoned table is still usable.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keys that must not be claimed now: saturated, open, or half-open with the probe in
    /// flight.
    pub fn skip_keys(&self, now: Instant) -> Vec<String> {
        let mut keys = self.lock();
        keys.iter_mut()
            .filter_map(|(key, st)| {
                let blocked = st.in_flight >= self.per_key || st.breaker.allowance(now) == Some(0);
                blocked.then(|| key.clone())
            })
            .collect()
    }

    /// Starts an attempt on `key` if its concurrency limit and breaker allow it.
    pub fn try_admit(self: &Arc<Self>, key: &str, now: Instant) -> Option<KeyPermit> {
        let mut keys = self.lock();
        if keys.len() > PRUNE_ABOVE {
            keys.retain(|_, st| !st.idle_and_healthy());
        }
        let st = keys.entry(key.to_string()).or_default();
        if st.in_flight >= self.per_key || !st.breaker.admit(now) {
            return None;
        }
        st.in_flight += 1;
        Some(KeyPermit { table: self.clone(), key: key.to_string(), verdict: false })
    }

    /// The earliest instant an open circuit lets a probe through.
    pub fn next_reopen(&self, now: Instant) -> Option<Instant> {
        let mut keys = self.lock();
        keys.values_mut()
            .filter_map(|st| {
                st.breaker.state(now);
                st.breaker.reopens_at()
            })
            .min()
    }

    /// Every key's circuit, sorted by key.
    pub fn views(&self, now: Instant) -> Vec<CircuitView> {
        let mut keys = self.lock();
        let mut out: Vec<CircuitView> = keys
            .iter_mut()
            .map(|(key, st)| CircuitView {
                key: key.clone(),
                state: st.breaker.state_name(now),
                consecutive_failures: st.breaker.consecutive_failures(),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    fn with_key<R>(&self, key: &str, f: impl FnOnce(&mut KeyState) -> R) -> R {
        let mut keys = self.lock();
        f(keys.entry(key.to_string()).or_default())
    }
}

/// A running attempt's hold on its key. Report the verdict with [`KeyPermit::success`] or
/// [`KeyPermit::failure`]; dropping it frees the slot.
#[derive(Debug)]
pub struct KeyPermit {
    table: Arc<KeyTable>,
    key: String,
    verdict: bool,
}

impl KeyPermit {
    /// The destination key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The attempt succeeded: the circuit closes.
    pub fn success(&mut self) {
        self.verdict = true;
        let was_closed = self.table.with_key(&self.key, |st| {
            let closed = st.breaker.state(Instant::now()) == CircuitState::Closed;
            st.breaker.on_success();
            closed
        });
        if !was_closed {
            tracing::info!(key = %self.key, "Circuit closed: destination answered again");
            metrics::gauge!("outflow_circuit_open", "key" => self.key.clone()).set(0.0);
        }
    }

    /// The attempt failed. Returns the consecutive failure count when this failure opened
    /// the circuit.
    pub fn failure(&mut self, now: Instant) -> Option<u32> {
        self.verdict = true;
        let settings = &self.table.breaker;
        let opened = self.table.with_key(&self.key, |st| {
            st.breaker.on_failure(now, settings).then(|| st.breaker.consecutive_failures())
        });
        if opened.is_some() {
            metrics::gauge!("outflow_circuit_open", "key" => self.key.clone()).set(1.0);
        }
        opened
    }
}

impl Drop for KeyPermit {
    fn drop(&mut self) {
        let verdict = self.verdict;
        self.table.with_key(&self.key, |st| {
            st.in_flight = st.in_flight.saturating_sub(1);
            if !verdict {
                st.breaker.on_abandoned();
            }
        });
        self.table.slot_freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn table(per_key: usize) -> Arc<KeyTable> {
        Arc::new(KeyTable::new(
            per_key,
            BreakerSettings { failure_threshold: 2, cool_down: Duration::from_secs(5) },
        ))
    }

    #[test]
    fn per_key_limit_and_skip_list() {
        let t = table(2);
        let now = Instant::now();
        let a1 = t.try_admit("a", now).unwrap();
        let _a2 = t.try_admit("a", now).unwrap();
        assert!(t.try_admit("a", now).is_none());
        let _b = t.try_admit("b", now).unwrap();
        assert_eq!(t.skip_keys(now), vec!["a".to_string()]);
        drop(a1);
        assert!(t.skip_keys(now).is_empty());
        assert!(t.try_admit("a", now).is_some());
    }

    #[test]
    fn open_circuit_is_skipped_until_one_probe_goes() {
        let t = table(4);
        let now = Instant::now();
        for _ in 0..2 {
            let mut p = t.try_admit("k", now).unwrap();
            p.failure(now);
        }
        assert_eq!(t.skip_keys(now), vec!["k".to_string()]);
        assert_eq!(t.views(now)[0].state, "open");
        assert_eq!(t.views(now)[0].consecutive_failures, 2);
        assert!(t.try_admit("k", now).is_none());
        assert_eq!(t.next_reopen(now), Some(now + Duration::from_secs(5)));

        let later = now + Duration::from_secs(5);
        assert!(t.skip_keys(later).is_empty());
        let mut probe = t.try_admit("k", later).unwrap();
        assert!(t.try_admit("k", later).is_none(), "one probe only");
        assert_eq!(t.skip_keys(later), vec!["k".to_string()]);
        probe.success();
        drop(probe);
        assert_eq!(t.views(later)[0].state, "closed");
        assert!(t.skip_keys(later).is_empty());
    }
}
