//! Backoff after failed logins.
//!
//! Every failed login counts against the user name tried and against the caller's address,
//! existing user or not (so the answer reveals nothing about which names exist). After
//! `free_failures` failures in a row, each further attempt for that key is refused until a
//! delay has passed that doubles per failure, from `base` up to `max`; refused attempts do not
//! verify a password at all, so they cost the node nothing. A success clears the user's
//! count (not the address's: one good password must not reset an address that guesses many
//! names). Counts are forgotten `forget_after` after the last failure.
//!
//! The state is per node: an attacker spreading guesses over N nodes gets N times the rate,
//! still exponentially slowed. The table is bounded (`max_keys`); when full, the key whose
//! last failure is oldest is dropped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Throttle settings.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleSettings {
    /// Failures in a row allowed without delay.
    pub free_failures: u32,
    /// Delay after the first failure beyond the free ones.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Forget a key this long after its last failure.
    pub forget_after: Duration,
    /// Most keys tracked.
    pub max_keys: usize,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            free_failures: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
            forget_after: Duration::from_secs(3600),
            max_keys: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
    blocked_until: Instant,
}

/// Failed-login counts per key (`user:<name>`, `addr:<ip>`).
#[derive(Debug)]
pub struct LoginThrottle {
    settings: ThrottleSettings,
    entries: HashMap<String, Entry>,
}

impl LoginThrottle {
    /// An empty throttle.
    pub fn new(settings: ThrottleSettings) -> Self {
        Self {
            settings,
            entries: HashMap::new(),
        }
    }

    /// `Err(wait)` when any of `keys` is blocked at `now`.
    pub fn check(&self, keys: &[String], now: Instant) -> Result<(), Duration> {
        let wait = keys
            .iter()
            .filter_map(|k| self.entries.get(k))
            .filter(|e| now.duration_since(e.last) < self.settings.forget_after)
            .map(|e| e.blocked_until.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    /// Records a failure for every key; returns the longest delay now imposed.
    pub fn failure(&mut self, keys: &[String], now: Instant) -> Duration {
        let mut longest = Duration::ZERO;
        for key in keys {
            if !self.entries.contains_key(key) && self.entries.len() >= self.settings.max_keys {
                self.evict_oldest();
            }
            let forget = self.settings.forget_after;
            let entry = self.entries.entry(key.clone()).or_insert(Entry {
                failures: 0,
                last: now,
                blocked_until: now,
            });
            if now.duration_since(entry.last) >= forget {
                entry.failures = 0;
            }
            entry.failures += 1;
            entry.last = now;
            let delay = delay_after(&self.settings, entry.failures);
            entry.blocked_until = now + delay;
            longest = longest.max(delay);
        }
        longest
    }

    /// Clears `key` (a user after a successful login).
    pub fn success(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// The delay imposed after `failures` failures in a row.
    pub fn delay_after(&self, failures: u32) -> Duration {
        delay_after(&self.settings, failures)
    }

    fn evict_oldest(&mut self) {
        if let Some(oldest) = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.last)
            .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn delay_after(settings: &ThrottleSettings, failures: u32) -> Duration {
    let Some(over) = failures.checked_sub(settings.free_failures + 1) else {
        return Duration::ZERO;
    };
    settings
        .base
        .saturating_mul(1 << over.min(20))
        .min(settings.max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(user: &str) -> Vec<String> {
        vec![format!("user:{user}"), "addr:10.0.0.1".to_owned()]
    }

    #[test]
    fn free_failures_then_doubling_delays() {
        let mut t = LoginThrottle::new(ThrottleSettings::default());
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.failure(&keys("a"), now), Duration::ZERO);
        }
        assert!(t.check(&keys("a"), now).is_ok());
        assert_eq!(t.failure(&keys("a"), now), Duration::from_secs(1));
        assert!(t.check(&keys("a"), now).is_err());
        assert_eq!(t.failure(&keys("a"), now), Duration::from_secs(2));
        assert_eq!(t.failure(&keys("a"), now), Duration::from_secs(4));
        assert!(t.check(&keys("a"), now + Duration::from_secs(5)).is_ok());
    }

    #[test]
    fn success_clears_the_user_but_not_the_address() {
        let mut t = LoginThrottle::new(ThrottleSettings::default());
        let now = Instant::now();
        for _ in 0..5 {
            t.failure(&keys("a"), now);
        }
        t.success("user:a");
        assert!(t.check(&["user:a".to_owned()], now).is_ok());
        assert!(
            t.check(&keys("b"), now).is_err(),
            "the guessing address stays slowed"
        );
    }

    #[test]
    fn failures_are_forgotten() {
        let settings = ThrottleSettings::default();
        let mut t = LoginThrottle::new(settings);
        let now = Instant::now();
        for _ in 0..10 {
            t.failure(&keys("a"), now);
        }
        let later = now + settings.forget_after;
        assert!(t.check(&keys("a"), later).is_ok());
        assert_eq!(t.failure(&keys("a"), later), Duration::ZERO);
    }

    #[test]
    fn table_is_bounded() {
        let mut t = LoginThrottle::new(ThrottleSettings {
            max_keys: 10,
            ..ThrottleSettings::default()
        });
        let now = Instant::now();
        for i in 0..100 {
            t.failure(&[format!("user:{i}")], now + Duration::from_millis(i));
        }
        assert_eq!(t.len(), 10);
    }

    proptest! {
        #[test]
        fn delay_is_monotonic_and_capped(n in 0u32..200) {
            let t = LoginThrottle::new(ThrottleSettings::default());
            prop_assert!(t.delay_after(n) <= t.delay_after(n + 1));
            prop_assert!(t.delay_after(n) <= ThrottleSettings::default().max);
        }
    }
}
