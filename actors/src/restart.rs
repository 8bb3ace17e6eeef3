//! Restart intensity: the one_for_one policy every GridMesh supervisor applies.
//!
//! ractor has no restart strategies of its own (its default stops the parent when any child
//! dies), so each supervisor keeps a [`RestartBudget`] per child: a child may fail
//! `max_restarts` times within `window`; each restart waits a little longer (exponential
//! backoff from 10 ms, capped at 1 s) so a crash loop does not spin; one failure more than the
//! budget escalates, i.e. the supervisor fails itself and lets its own supervisor decide. At
//! the top, the node supervisor's escalation makes the process exit non-zero.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What a supervisor does about one child failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart the child after this delay.
    Restart {
        /// Backoff before the restart.
        after: Duration,
    },
    /// Too many failures in the window: give up and fail the supervisor.
    Escalate,
}

/// Failure history of one child.
#[derive(Debug, Clone)]
pub struct RestartBudget {
    max_restarts: u32,
    window: Duration,
    failures: VecDeque<Instant>,
}

impl RestartBudget {
    /// A budget of `max_restarts` within `window`.
    pub fn new(max_restarts: u32, window: Duration) -> Self {
        Self {
            max_restarts,
            window,
            failures: VecDeque::new(),
        }
    }

    /// Records a failure at `now` and decides.
    pub fn record_failure(&mut self, now: Instant) -> RestartDecision {
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        let recent = self.failures.len() as u32;
        if recent > self.max_restarts {
            return RestartDecision::Escalate;
        }
        let exp = (recent - 1).min(7);
        let after = Duration::from_millis(if recent == 1 { 0 } else { 10 << exp })
            .min(Duration::from_secs(1));
        RestartDecision::Restart { after }
    }

    /// Failures currently inside the window (as of the last recorded failure).
    pub fn recent_failures(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn restarts_up_to_the_limit_then_escalates() {
        let start = Instant::now();
        let mut budget = RestartBudget::new(3, Duration::from_secs(5));
        assert_eq!(
            budget.record_failure(start),
            RestartDecision::Restart {
                after: Duration::ZERO
            }
        );
        assert!(matches!(
            budget.record_failure(start),
            RestartDecision::Restart { .. }
        ));
        assert!(matches!(
            budget.record_failure(start),
            RestartDecision::Restart { .. }
        ));
        assert_eq!(budget.record_failure(start), RestartDecision::Escalate);
    }

    #[test]
    fn failures_outside_the_window_are_forgiven() {
        let start = Instant::now();
        let mut budget = RestartBudget::new(1, Duration::from_secs(5));
        assert!(matches!(
            budget.record_failure(start),
            RestartDecision::Restart { .. }
        ));
        let later = start + Duration::from_secs(6);
        assert!(matches!(
            budget.record_failure(later),
            RestartDecision::Restart { .. }
        ));
        assert_eq!(budget.recent_failures(), 1);
    }

    proptest! {
        #[test]
        fn never_more_restarts_than_the_budget_in_any_window(
            gaps_ms in prop::collection::vec(0u64..3000, 1..60), max in 0u32..5,
        ) {
            let window = Duration::from_secs(5);
            let mut budget = RestartBudget::new(max, window);
            let mut now = Instant::now();
            let mut restarts: Vec<Instant> = Vec::new();
            for gap in gaps_ms {
                now += Duration::from_millis(gap);
                if let RestartDecision::Restart { after } = budget.record_failure(now) {
                    prop_assert!(after <= Duration::from_secs(1));
                    restarts.push(now);
                    let in_window =
                        restarts.iter().filter(|t| now.duration_since(**t) <= window).count();
                    prop_assert!(in_window as u32 <= max);
                }
            }
        }
    }
}
