//! The sustain rule every alert shares: raise after N consecutive violating windows, clear
//! after M consecutive clean ones.
//!
//! A window is whatever the caller observes once per period (a 15-minute interval, a 10-minute
//! voltage mean, a day of energy balance). A window without data should not be fed at all: it
//! neither confirms nor breaks a run, so a missing reading cannot clear an overload.

use serde::{Deserialize, Serialize};

use crate::error::{Result, require_count};

/// A change of the sustained state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The condition has now held for `raise_after` windows.
    Raised {
        /// Index (in observations) of the first window of the violating run.
        run_start: u64,
    },
    /// The condition has now been absent for `clear_after` windows.
    Cleared,
}

/// Raise/clear hysteresis over consecutive windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sustain {
    raise_after: u32,
    clear_after: u32,
    violating_run: u32,
    clean_run: u32,
    active: bool,
    observed: u64,
}

impl Sustain {
    /// A rule that raises after `raise_after` and clears after `clear_after` windows (≥ 1).
    pub fn new(raise_after: u32, clear_after: u32) -> Result<Sustain> {
        Ok(Sustain {
            raise_after: require_count("raise_after_windows", raise_after)?,
            clear_after: require_count("clear_after_windows", clear_after)?,
            violating_run: 0,
            clean_run: 0,
            active: false,
            observed: 0,
        })
    }

    /// Feeds one window; returns the edge it completes, if any.
    pub fn observe(&mut self, violating: bool) -> Option<Edge> {
        self.observed += 1;
        if violating {
            self.clean_run = 0;
            self.violating_run = self.violating_run.saturating_add(1);
            if !self.active && self.violating_run >= self.raise_after {
                self.active = true;
                let run_start = self.observed - u64::from(self.violating_run);
                return Some(Edge::Raised { run_start });
            }
        } else {
            self.violating_run = 0;
            self.clean_run = self.clean_run.saturating_add(1);
            if self.active && self.clean_run >= self.clear_after {
                self.active = false;
                return Some(Edge::Cleared);
            }
        }
        None
    }

    /// Whether the condition is currently raised.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Consecutive violating windows so far (0 after a clean one).
    pub fn violating_run(&self) -> u32 {
        self.violating_run
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn raises_after_n_and_clears_after_m() {
        let mut rule = Sustain::new(3, 2).unwrap();
        assert_eq!(rule.observe(true), None);
        assert_eq!(rule.observe(true), None);
        assert_eq!(rule.observe(true), Some(Edge::Raised { run_start: 0 }));
        assert_eq!(
            rule.observe(true),
            None,
            "a continuing condition is not raised again"
        );
        assert_eq!(rule.observe(false), None);
        assert_eq!(rule.observe(true), None, "one clean window does not clear");
        assert_eq!(rule.observe(false), None);
        assert_eq!(rule.observe(false), Some(Edge::Cleared));
        assert!(Sustain::new(0, 1).is_err());
    }

    proptest! {
        #![proptest_config(crate::test_config(256))]
        /// Edges alternate raise/clear, a raise needs N violating windows in a row right
        /// before it, a clear needs M clean ones, and the state follows the edges.
        #[test]
        fn edges_alternate_and_respect_the_windows(
            windows in prop::collection::vec(any::<bool>(), 0..400),
            raise_after in 1u32..6,
            clear_after in 1u32..6,
        ) {
            let mut rule = Sustain::new(raise_after, clear_after).unwrap();
            let mut active = false;
            for (i, violating) in windows.iter().enumerate() {
                match rule.observe(*violating) {
                    Some(Edge::Raised { run_start }) => {
                        prop_assert!(!active, "raised twice without a clear");
                        let n = raise_after as usize;
                        prop_assert!(i + 1 >= n && windows[i + 1 - n..=i].iter().all(|v| *v));
                        prop_assert!(run_start as usize <= i + 1 - n);
                        active = true;
                    }
                    Some(Edge::Cleared) => {
                        prop_assert!(active, "cleared without a raise");
                        let m = clear_after as usize;
                        prop_assert!(i + 1 >= m && windows[i + 1 - m..=i].iter().all(|v| !*v));
                        active = false;
                    }
                    None => {}
                }
                prop_assert_eq!(rule.is_active(), active);
            }
            // A long enough violating tail always ends raised, a clean one always clear.
            let tail = raise_after.max(clear_after) as usize;
            if windows.len() >= tail {
                let last = &windows[windows.len() - tail..];
                if last.iter().all(|v| *v) { prop_assert!(active); }
                if last.iter().all(|v| !*v) { prop_assert!(!active); }
            }
        }
    }
}
