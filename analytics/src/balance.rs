//! Energy balance of a feeder: how much of the energy entering at the head meter does not
//! reach the customer meters.
//!
//! Once per day the feeder actor feeds the day's head-meter import and the sum of its
//! customer meters' net energy. The loss ratio is `(head - customers) / head`. Technical
//! losses of an LV/MV feeder are a few percent; more than that means non-technical losses
//! (theft, bypassed or broken meters, wrong topology). Two rules:
//!
//! - [`AlertKind::EnergyLoss`]: the ratio is above [`BalanceRules::loss_band`] for
//!   [`BalanceRules::days_sustained`] days in a row.
//! - [`AlertKind::EnergyBalanceStep`]: the ratio rose by more than
//!   [`BalanceRules::step_threshold`] (and more than 4 robust σ) above the median of the
//!   feeder's own last [`BalanceRules::history_days`] days, for `days_sustained` days — a
//!   step that stays under the band is still a new bypass. Only rises count: a fall in
//!   losses is good news or a head-meter fault, which the head meter's own VEE catches.
//!
//! Days with too few customer meters reporting ([`BalanceRules::min_coverage`]) are skipped:
//! missing meters look exactly like losses. While a step alert is open its days are kept out
//! of the history, so a persistent step stays raised until the ratio returns (or the operator
//! re-baselines with [`EnergyBalanceMonitor::rebaseline`], e.g. after a topology change).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::alert::{AlertEvent, AlertKey, AlertKind, Asset, ClearReason, Raise, Severity};
use crate::error::{Result, invalid};
use crate::stats::{MAD_TO_SIGMA, median_mad};
use crate::sustain::{Edge, Sustain};

/// Energy-balance settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceRules {
    /// Loss ratio above which a day counts as lossy (0.08 = 8 %).
    pub loss_band: f64,
    /// Consecutive days needed to raise (and to clear).
    pub days_sustained: u32,
    /// Smallest rise of the ratio above the feeder's median that counts as a step.
    pub step_threshold: f64,
    /// Days of history for the step rule.
    pub history_days: usize,
    /// Days of history needed before the step rule judges.
    pub min_history_days: usize,
    /// Share of the feeder's customer meters that must have reported the whole day.
    pub min_coverage: f64,
}

impl Default for BalanceRules {
    /// 8 % band for 3 days; a 3-point step against 28 days (at least 7); 98 % coverage.
    fn default() -> BalanceRules {
        BalanceRules {
            loss_band: 0.08,
            days_sustained: 3,
            step_threshold: 0.03,
            history_days: 28,
            min_history_days: 7,
            min_coverage: 0.98,
        }
    }
}

/// One day of a feeder's energy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BalanceDay {
    /// Local day number.
    pub day: i64,
    /// UTC ms at the end of that day (when the result is confirmed).
    pub end_ts_ms: i64,
    /// Energy imported through the head meter, Wh.
    pub head_wh: f64,
    /// Sum of customer import minus export, Wh.
    pub customers_wh: f64,
    /// Customer meters with a complete day.
    pub meters_reporting: u32,
    /// Customer meters registered on the feeder.
    pub meters_expected: u32,
}

/// `(head - customers) / head`; `None` without head energy.
pub fn loss_ratio(head_wh: f64, customers_wh: f64) -> Option<f64> {
    (head_wh.is_finite() && customers_wh.is_finite() && head_wh > 0.0)
        .then(|| (head_wh - customers_wh) / head_wh)
}

/// What one day's balance did.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceOutcome {
    /// The day's loss ratio, if the day was judged.
    pub loss_ratio: Option<f64>,
    /// Alerts raised or cleared.
    pub events: Vec<AlertEvent>,
}

/// Energy-balance state machine of one feeder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyBalanceMonitor {
    feeder_id: String,
    rules: BalanceRules,
    band: Sustain,
    step: Sustain,
    history: VecDeque<f64>,
    run_start_day: [i64; 2],
}

impl EnergyBalanceMonitor {
    /// A monitor for one feeder.
    pub fn new(feeder_id: impl Into<String>, rules: BalanceRules) -> Result<EnergyBalanceMonitor> {
        let fraction = |v: f64| v.is_finite() && v > 0.0 && v < 1.0;
        if !fraction(rules.loss_band) || !fraction(rules.step_threshold) {
            return Err(invalid(
                "loss_band / step_threshold",
                format!("{} / {}", rules.loss_band, rules.step_threshold),
                "must be ratios between 0 and 1 (0.08 = 8 %)",
            ));
        }
        if !(rules.min_coverage.is_finite() && (0.0..=1.0).contains(&rules.min_coverage)) {
            return Err(invalid(
                "min_coverage",
                rules.min_coverage,
                "must be within 0..=1",
            ));
        }
        if rules.min_history_days < 3 || rules.history_days < rules.min_history_days {
            return Err(invalid(
                "history_days / min_history_days",
                format!("{} / {}", rules.history_days, rules.min_history_days),
                "need min_history_days >= 3 and history_days >= min_history_days",
            ));
        }
        Ok(EnergyBalanceMonitor {
            feeder_id: feeder_id.into(),
            band: Sustain::new(rules.days_sustained, rules.days_sustained)?,
            step: Sustain::new(rules.days_sustained, rules.days_sustained)?,
            rules,
            history: VecDeque::new(),
            run_start_day: [0; 2],
        })
    }

    /// Feeds one day.
    pub fn observe_day(&mut self, day: &BalanceDay) -> BalanceOutcome {
        let coverage = if day.meters_expected == 0 {
            0.0
        } else {
            f64::from(day.meters_reporting) / f64::from(day.meters_expected)
        };
        let ratio = loss_ratio(day.head_wh, day.customers_wh);
        let Some(ratio) = ratio.filter(|_| coverage >= self.rules.min_coverage) else {
            return BalanceOutcome {
                loss_ratio: None,
                events: Vec::new(),
            };
        };

        let mut events = Vec::new();
        let lossy = ratio > self.rules.loss_band;
        events.extend(self.judge(0, lossy, ratio, day, self.rules.loss_band));
        let step = self.step_deviation(ratio);
        let (stepped, baseline) = step.map_or((false, f64::NAN), |(s, b)| (s, b));
        events.extend(self.judge(1, stepped, ratio, day, baseline));
        if !self.step.is_active() && !stepped {
            self.history.push_back(ratio);
            while self.history.len() > self.rules.history_days {
                self.history.pop_front();
            }
        }
        BalanceOutcome {
            loss_ratio: Some(ratio),
            events,
        }
    }

    /// Forgets the history (after a known topology change); open alerts clear on their own.
    pub fn rebaseline(&mut self) {
        self.history.clear();
    }

    /// `(is a step, baseline median)` when there is enough history.
    fn step_deviation(&self, ratio: f64) -> Option<(bool, f64)> {
        if self.history.len() < self.rules.min_history_days {
            return None;
        }
        let history: Vec<f64> = self.history.iter().copied().collect();
        let (median, mad) = median_mad(&history)?;
        let deviation = ratio - median;
        let stepped = deviation > self.rules.step_threshold && deviation > 4.0 * MAD_TO_SIGMA * mad;
        Some((stepped, median))
    }

    fn judge(
        &mut self,
        rule: usize,
        violating: bool,
        ratio: f64,
        day: &BalanceDay,
        limit: f64,
    ) -> Option<AlertEvent> {
        let sustain = if rule == 0 {
            &mut self.band
        } else {
            &mut self.step
        };
        if violating && sustain.violating_run() == 0 {
            self.run_start_day[rule] = day.day;
        }
        let edge = sustain.observe(violating)?;
        let kind = [AlertKind::EnergyLoss, AlertKind::EnergyBalanceStep][rule];
        let key = AlertKey::new(kind, Asset::feeder(&self.feeder_id));
        Some(match edge {
            Edge::Raised { .. } => {
                let days_back = day.day - self.run_start_day[rule];
                AlertEvent::Raise(Raise {
                    key,
                    severity: Severity::Major,
                    since_ts_ms: day.end_ts_ms - (days_back + 1) * crate::time::DAY_MS,
                    ts_ms: day.end_ts_ms,
                    value: ratio,
                    limit,
                    message: format!(
                        "feeder {} loses {:.1} % of its head energy ({} rule, reference {:.1} %) \
                         for {} days",
                        self.feeder_id,
                        100.0 * ratio,
                        kind.as_str(),
                        100.0 * limit,
                        days_back + 1
                    ),
                })
            }
            Edge::Cleared => AlertEvent::Clear {
                key,
                ts_ms: day.end_ts_ms,
                reason: ClearReason::Recovered,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DAY_MS;
    use proptest::prelude::*;

    fn day(d: i64, ratio: f64) -> BalanceDay {
        BalanceDay {
            day: d,
            end_ts_ms: (d + 1) * DAY_MS,
            head_wh: 1_000_000.0,
            customers_wh: 1_000_000.0 * (1.0 - ratio),
            meters_reporting: 100,
            meters_expected: 100,
        }
    }

    fn run(m: &mut EnergyBalanceMonitor, ratios: &[f64]) -> Vec<(AlertKind, bool)> {
        ratios
            .iter()
            .enumerate()
            .flat_map(|(d, r)| m.observe_day(&day(d as i64, *r)).events)
            .map(|e| (e.key().kind, e.is_raise()))
            .collect()
    }

    #[test]
    fn sustained_losses_above_the_band_raise_and_clear() {
        let mut m = EnergyBalanceMonitor::new("f", BalanceRules::default()).unwrap();
        let mut ratios = vec![0.12, 0.12, 0.04, 0.12, 0.12, 0.12, 0.12];
        ratios.extend([0.04; 3]);
        let events = run(&mut m, &ratios);
        assert_eq!(
            events,
            vec![
                (AlertKind::EnergyLoss, true),
                (AlertKind::EnergyLoss, false)
            ]
        );
    }

    #[test]
    fn a_step_under_the_band_is_caught_and_stays_raised() {
        let mut m = EnergyBalanceMonitor::new("f", BalanceRules::default()).unwrap();
        let mut ratios: Vec<f64> = (0..20).map(|d| 0.03 + 0.002 * f64::from(d % 3)).collect();
        ratios.extend([0.07; 40]);
        let events = run(&mut m, &ratios);
        assert_eq!(
            events,
            vec![(AlertKind::EnergyBalanceStep, true)],
            "{events:?}"
        );
        // Back to normal: clears after the sustain days.
        let back: Vec<(AlertKind, bool)> = (60..64)
            .flat_map(|d| m.observe_day(&day(d, 0.032)).events)
            .map(|e| (e.key().kind, e.is_raise()))
            .collect();
        assert_eq!(back, vec![(AlertKind::EnergyBalanceStep, false)]);
    }

    #[test]
    fn incomplete_days_and_bad_settings() {
        let mut m = EnergyBalanceMonitor::new("f", BalanceRules::default()).unwrap();
        let mut partial = day(0, 0.5);
        partial.meters_reporting = 90;
        assert_eq!(m.observe_day(&partial).loss_ratio, None);
        assert_eq!(loss_ratio(0.0, 10.0), None);
        let bad = BalanceRules {
            loss_band: 8.0,
            ..BalanceRules::default()
        };
        assert!(EnergyBalanceMonitor::new("f", bad).is_err());
    }

    proptest! {
        #![proptest_config(crate::test_config(256))]
        #[test]
        fn balance_alerts_alternate_per_kind(
            ratios in prop::collection::vec(-0.1f64..0.3, 1..200),
        ) {
            let mut m = EnergyBalanceMonitor::new("f", BalanceRules::default()).unwrap();
            let mut open = [false; 2];
            for (kind, raise) in run(&mut m, &ratios) {
                let i = usize::from(kind == AlertKind::EnergyBalanceStep);
                prop_assert_ne!(open[i], raise);
                open[i] = raise;
            }
        }
    }
}
