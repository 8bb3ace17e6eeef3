//! Feeder and transformer loading, reverse power flow, and predicted overloads.
//!
//! Loading is `100 · √(P² + Q²) / S_rated` per window (the interval mean of P and Q). Three
//! conditions, each with its own sustain rule and alert key:
//!
//! - [`AlertKind::LoadingHigh`] (minor) above [`LoadingRules::warn_percent`];
//! - [`AlertKind::Overload`] (critical) above [`LoadingRules::overload_percent`];
//! - [`AlertKind::ReverseFlow`] (major) when net P < −margin (a share of the rating), i.e.
//!   generation behind the asset exports through it.
//!
//! Warning and overload are separate alerts on purpose: an overload is also above the warning
//! threshold, so both are open during an overload and the warning outlives it while load
//! comes down, which is what an operator wants to watch.
//!
//! [`PredictedOverloadMonitor`] checks each new forecast against the rating and raises once
//! while forecasts keep crossing it, clearing when a forecast no longer does.

use serde::{Deserialize, Serialize};

use crate::alert::{AlertEvent, AlertKey, AlertKind, Asset, ClearReason, Raise, Severity};
use crate::error::{Result, invalid};
use crate::sustain::{Edge, Sustain};

/// Loading in percent of the rating. `rating_va` must be finite and above zero.
pub fn loading_percent(p_w: f64, q_var: f64, rating_va: f64) -> Result<f64> {
    if !(rating_va.is_finite() && rating_va > 0.0) {
        return Err(invalid("rating_va", rating_va, "must be above 0"));
    }
    if !(p_w.is_finite() && q_var.is_finite()) {
        return Err(invalid(
            "p_w / q_var",
            format!("{p_w} / {q_var}"),
            "must be finite",
        ));
    }
    Ok(100.0 * p_w.hypot(q_var) / rating_va)
}

/// Loading rule settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadingRules {
    /// Warning threshold, % of rating.
    pub warn_percent: f64,
    /// Overload threshold, % of rating.
    pub overload_percent: f64,
    /// Windows above a threshold before its alert.
    pub raise_after_windows: u32,
    /// Windows below before it clears.
    pub clear_after_windows: u32,
    /// Reverse flow when P < −(this share of the rating, %).
    pub reverse_margin_percent: f64,
    /// Windows of reverse flow before its alert.
    pub reverse_after_windows: u32,
}

impl Default for LoadingRules {
    /// Warn above 90 %, overload above 100 %, both for 2 windows (30 minutes); reverse flow
    /// beyond 5 % of the rating for 2 windows.
    fn default() -> LoadingRules {
        LoadingRules {
            warn_percent: 90.0,
            overload_percent: 100.0,
            raise_after_windows: 2,
            clear_after_windows: 2,
            reverse_margin_percent: 5.0,
            reverse_after_windows: 2,
        }
    }
}

impl LoadingRules {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        if !ok(self.warn_percent) || !ok(self.overload_percent) {
            return Err(invalid(
                "warn_percent / overload_percent",
                format!("{} / {}", self.warn_percent, self.overload_percent),
                "must be above 0",
            ));
        }
        if self.warn_percent > self.overload_percent {
            return Err(invalid(
                "warn_percent",
                self.warn_percent,
                "must not exceed overload_percent",
            ));
        }
        if !(self.reverse_margin_percent.is_finite() && self.reverse_margin_percent >= 0.0) {
            return Err(invalid(
                "reverse_margin_percent",
                self.reverse_margin_percent,
                "must be 0 or more",
            ));
        }
        Ok(())
    }
}

/// One window's result.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadingWindow {
    /// Loading, % of rating.
    pub loading_percent: f64,
    /// Alerts raised or cleared by this window.
    pub events: Vec<AlertEvent>,
}

/// Loading state machine of one feeder or transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadingMonitor {
    asset: Asset,
    rating_va: f64,
    rules: LoadingRules,
    warn: Sustain,
    overload: Sustain,
    reverse: Sustain,
    /// Start of the current run above warn / overload / in reverse, ms.
    since: [i64; 3],
}

impl LoadingMonitor {
    /// A monitor for `asset` rated `rating_va` (must be above zero).
    pub fn new(asset: Asset, rating_va: f64, rules: LoadingRules) -> Result<LoadingMonitor> {
        rules.validate()?;
        loading_percent(0.0, 0.0, rating_va)?;
        let sustain = |after| Sustain::new(after, rules.clear_after_windows);
        Ok(LoadingMonitor {
            asset,
            rating_va,
            warn: sustain(rules.raise_after_windows)?,
            overload: sustain(rules.raise_after_windows)?,
            reverse: sustain(rules.reverse_after_windows)?,
            rules,
            since: [0; 3],
        })
    }

    /// Feeds one window's mean active and reactive power (W, var; `q_var` 0 when unknown).
    pub fn observe(
        &mut self,
        window_start_ms: i64,
        window_end_ms: i64,
        p_w: f64,
        q_var: f64,
    ) -> Result<LoadingWindow> {
        let loading = loading_percent(p_w, q_var, self.rating_va)?;
        let reverse_limit_w = -self.rules.reverse_margin_percent / 100.0 * self.rating_va;
        let conditions = [
            (loading > self.rules.warn_percent, AlertKind::LoadingHigh),
            (loading > self.rules.overload_percent, AlertKind::Overload),
            (p_w < reverse_limit_w, AlertKind::ReverseFlow),
        ];
        // Clears go out before raises, and the overload's clear before the warning's, so a
        // consumer applying the events in order never sees an overload without its warning.
        let (mut clears, mut raises) = (Vec::new(), Vec::new());
        for (i, (violating, kind)) in conditions.into_iter().enumerate() {
            let sustain = match i {
                0 => &mut self.warn,
                1 => &mut self.overload,
                _ => &mut self.reverse,
            };
            if violating && sustain.violating_run() == 0 {
                self.since[i] = window_start_ms;
            }
            let Some(edge) = sustain.observe(violating) else {
                continue;
            };
            let key = AlertKey::new(kind, self.asset.clone());
            match edge {
                Edge::Raised { .. } => raises.push(AlertEvent::Raise(self.raise(
                    key,
                    self.since[i],
                    window_end_ms,
                    loading,
                    p_w,
                ))),
                Edge::Cleared => clears.insert(
                    0,
                    AlertEvent::Clear {
                        key,
                        ts_ms: window_end_ms,
                        reason: ClearReason::Recovered,
                    },
                ),
            }
        }
        let mut events = clears;
        events.append(&mut raises);
        Ok(LoadingWindow {
            loading_percent: loading,
            events,
        })
    }

    fn raise(&self, key: AlertKey, since: i64, ts: i64, loading: f64, p_w: f64) -> Raise {
        let (severity, value, limit, message) = match key.kind {
            AlertKind::ReverseFlow => (
                Severity::Major,
                p_w,
                -self.rules.reverse_margin_percent / 100.0 * self.rating_va,
                format!(
                    "reverse power flow: net P {:.1} kW through {} (rating {:.0} kVA)",
                    p_w / 1000.0,
                    self.asset.id,
                    self.rating_va / 1000.0
                ),
            ),
            kind => {
                let (severity, limit) = if kind == AlertKind::Overload {
                    (Severity::Critical, self.rules.overload_percent)
                } else {
                    (Severity::Minor, self.rules.warn_percent)
                };
                let message = format!(
                    "{} loaded {loading:.1} % of {:.0} kVA (limit {limit} %)",
                    self.asset.id,
                    self.rating_va / 1000.0
                );
                (severity, loading, limit, message)
            }
        };
        Raise {
            key,
            severity,
            since_ts_ms: since,
            ts_ms: ts,
            value,
            limit,
            message,
        }
    }
}

/// Raises [`AlertKind::PredictedOverload`] when a forecast crosses the rating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictedOverloadMonitor {
    asset: Asset,
    rating_va: f64,
    threshold_percent: f64,
    active: bool,
}

impl PredictedOverloadMonitor {
    /// Alerts when forecast loading (P only; forecasts carry no Q) exceeds
    /// `threshold_percent` of `rating_va`.
    pub fn new(
        asset: Asset,
        rating_va: f64,
        threshold_percent: f64,
    ) -> Result<PredictedOverloadMonitor> {
        loading_percent(0.0, 0.0, rating_va)?;
        if !(threshold_percent.is_finite() && threshold_percent > 0.0) {
            return Err(invalid(
                "threshold_percent",
                threshold_percent,
                "must be above 0",
            ));
        }
        Ok(PredictedOverloadMonitor {
            asset,
            rating_va,
            threshold_percent,
            active: false,
        })
    }

    /// Checks a forecast of mean power (W) per period, the first starting at
    /// `first_start_ms`, each `step_ms` long, issued at `issued_ms`.
    pub fn observe_forecast(
        &mut self,
        issued_ms: i64,
        first_start_ms: i64,
        step_ms: i64,
        forecast_w: &[f64],
    ) -> Vec<AlertEvent> {
        let limit_w = self.threshold_percent / 100.0 * self.rating_va;
        let crossing = forecast_w.iter().position(|p| p.abs() > limit_w);
        let key = AlertKey::new(AlertKind::PredictedOverload, self.asset.clone());
        match (crossing, self.active) {
            (Some(i), false) => {
                self.active = true;
                let peak = forecast_w.iter().fold(0.0f64, |m, p| m.max(p.abs()));
                let at_ms = first_start_ms + i as i64 * step_ms;
                vec![AlertEvent::Raise(Raise {
                    key,
                    severity: Severity::Major,
                    since_ts_ms: at_ms,
                    ts_ms: issued_ms,
                    value: 100.0 * peak / self.rating_va,
                    limit: self.threshold_percent,
                    message: format!(
                        "forecast load of {} exceeds {} % of its {:.0} kVA rating from {} \
                         (peak {:.1} %)",
                        self.asset.id,
                        self.threshold_percent,
                        self.rating_va / 1000.0,
                        crate::time::format_utc(at_ms),
                        100.0 * peak / self.rating_va
                    ),
                })]
            }
            (None, true) => {
                self.active = false;
                vec![AlertEvent::Clear {
                    key,
                    ts_ms: issued_ms,
                    reason: ClearReason::Recovered,
                }]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const W: i64 = 900_000;

    fn run(monitor: &mut LoadingMonitor, p_kw: &[f64]) -> Vec<AlertEvent> {
        p_kw.iter()
            .enumerate()
            .flat_map(|(i, p)| {
                let start = i as i64 * W;
                monitor
                    .observe(start, start + W, p * 1000.0, 0.0)
                    .unwrap()
                    .events
            })
            .collect()
    }

    fn kinds(events: &[AlertEvent]) -> Vec<(AlertKind, bool)> {
        events
            .iter()
            .map(|e| (e.key().kind, e.is_raise()))
            .collect()
    }

    #[test]
    fn loading_formula_and_bad_ratings() {
        assert!((loading_percent(300_000.0, 400_000.0, 500_000.0).unwrap() - 100.0).abs() < 1e-9);
        assert!(loading_percent(1.0, 0.0, 0.0).is_err());
        assert!(loading_percent(1.0, 0.0, f64::NAN).is_err());
        assert!(loading_percent(f64::INFINITY, 0.0, 1.0).is_err());
        let asset = Asset::feeder("f");
        assert!(LoadingMonitor::new(asset.clone(), 0.0, LoadingRules::default()).is_err());
        let bad = LoadingRules {
            warn_percent: 120.0,
            ..LoadingRules::default()
        };
        assert!(LoadingMonitor::new(asset, 1000.0, bad).is_err());
    }

    #[test]
    fn sustained_overload_raises_warning_and_overload_once_each() {
        let mut m =
            LoadingMonitor::new(Asset::feeder("f1"), 100_000.0, LoadingRules::default()).unwrap();
        // 110 kW on 100 kVA for three windows, then back to 50 kW.
        let events = run(&mut m, &[50.0, 110.0, 110.0, 110.0, 50.0, 50.0]);
        assert_eq!(
            kinds(&events),
            vec![
                (AlertKind::LoadingHigh, true),
                (AlertKind::Overload, true),
                (AlertKind::Overload, false),
                (AlertKind::LoadingHigh, false),
            ]
        );
        let AlertEvent::Raise(overload) = &events[1] else {
            panic!("expected the overload raise")
        };
        assert_eq!(
            (overload.severity, overload.since_ts_ms, overload.ts_ms),
            (Severity::Critical, W, 3 * W)
        );
    }

    #[test]
    fn reverse_flow_beyond_the_margin_only() {
        let mut m =
            LoadingMonitor::new(Asset::transformer("t"), 100_000.0, LoadingRules::default())
                .unwrap();
        assert!(
            run(&mut m, &[-4.0, -4.0, -4.0]).is_empty(),
            "within the 5 % margin"
        );
        let events = run(&mut m, &[-20.0, -20.0, 10.0, 10.0]);
        assert_eq!(
            kinds(&events),
            vec![
                (AlertKind::ReverseFlow, true),
                (AlertKind::ReverseFlow, false)
            ]
        );
    }

    #[test]
    fn predicted_overload_raises_once_per_crossing_episode() {
        let mut m = PredictedOverloadMonitor::new(Asset::feeder("f"), 100_000.0, 100.0).unwrap();
        let below = vec![80_000.0; 96];
        let mut above = below.clone();
        above[70] = 105_000.0;
        assert!(m.observe_forecast(0, 0, W, &below).is_empty());
        let events = m.observe_forecast(1, 0, W, &above);
        assert!(matches!(&events[..], [AlertEvent::Raise(r)] if r.since_ts_ms == 70 * W));
        assert!(
            m.observe_forecast(2, 0, W, &above).is_empty(),
            "still crossing: no repeat"
        );
        assert!(matches!(
            &m.observe_forecast(3, 0, W, &below)[..],
            [AlertEvent::Clear { .. }]
        ));
    }

    proptest! {
        #![proptest_config(crate::test_config(256))]
        #[test]
        fn loading_is_homogeneous_and_symmetric(
            p in -1e7f64..1e7, q in -1e7f64..1e7, rating in 1.0f64..1e8, k in 0.1f64..10.0
        ) {
            let l = loading_percent(p, q, rating).unwrap();
            prop_assert!(l >= 0.0);
            prop_assert!((loading_percent(-p, q, rating).unwrap() - l).abs() <= 1e-9 * l.max(1.0));
            let scaled = loading_percent(k * p, k * q, rating).unwrap();
            prop_assert!((scaled - k * l).abs() <= 1e-9 * (k * l).max(1.0));
            prop_assert!(l >= 100.0 * p.abs().max(q.abs()) / rating - 1e-9);
        }

        /// Per kind, raises and clears alternate starting with a raise, and an overload is
        /// never open without the warning.
        #[test]
        fn loading_alerts_alternate(p_kw in prop::collection::vec(-40.0f64..140.0, 1..300)) {
            let mut m = LoadingMonitor::new(Asset::feeder("f"), 100_000.0, LoadingRules::default())
                .unwrap();
            let (mut warn, mut overload, mut reverse) = (false, false, false);
            for (kind, raise) in kinds(&run(&mut m, &p_kw)) {
                let open = match kind {
                    AlertKind::LoadingHigh => &mut warn,
                    AlertKind::Overload => &mut overload,
                    _ => &mut reverse,
                };
                prop_assert_ne!(*open, raise, "{:?} raised twice or cleared while closed", kind);
                *open = raise;
                prop_assert!(!overload || warn, "overload open without the warning");
            }
        }
    }
}
