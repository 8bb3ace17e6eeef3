//! Same-time-of-week lag regression with a recent-level correction.
//!
//! The forecast for a target period `t`, made at origin `T` (lead `h = t - T`), is the mean of
//! the same period in the last four weeks (the "mean of 4 same weekdays" baseline) plus a
//! linear correction fitted by ridge least squares on the training window:
//!
//! ```text
//! ŷ(t) = L̄ + β · [L₁ - L̄, L₂ - L̄, L₃ - L̄,      how much more recent weeks count
//!                 y(t - jD) - y(t - jD - W),    the latest same time of day vs. its week-before
//!                 mean over the last day of (y - y₋W),  the recent level shift
//!                 y(T) - y(T - W),              the newest deviation (fades with lead)
//!                 1]
//! ```
//!
//! where `Lₖ = y(t - kW)`, `D` and `W` are a day and a week of periods and `j = ⌈h / D⌉`.
//! Coefficients are fitted separately for up to [`LEAD_BLOCKS`] blocks of leads, because the
//! newest observation matters at lead 1 and hardly at lead 96. The ridge shrinks every
//! correction towards zero, i.e. towards the baseline itself, so with little data the model
//! degrades to the baseline instead of to noise.

use crate::error::{AnalyticsError, Result};
use crate::forecast::linalg::NormalEquations;

/// Number of features (including the intercept).
const FEATURES: usize = 7;
/// Weekly lags averaged by the baseline part.
const LAG_WEEKS: usize = 4;
/// Lead blocks with their own coefficients, at most.
const LEAD_BLOCKS: usize = 8;
/// Training origins per day.
const ORIGINS_PER_DAY: usize = 8;
/// Ridge strength relative to the mean diagonal of XᵀX.
const RIDGE: f64 = 1e-3;

/// A fitted lag regression.
#[derive(Debug, Clone, PartialEq)]
pub struct LagRegression {
    periods_per_day: usize,
    horizon: usize,
    /// Coefficients per lead block.
    coefficients: Vec<[f64; FEATURES]>,
}

impl LagRegression {
    /// History needed to compute the features for a horizon (no training).
    pub fn feature_history(periods_per_day: usize, horizon: usize) -> usize {
        let week = 7 * periods_per_day;
        let extra_weeks = (horizon.max(1) - 1) / week;
        (LAG_WEEKS + extra_weeks) * week + periods_per_day
    }

    /// History needed to fit: the features plus two weeks of training targets.
    pub fn min_history(periods_per_day: usize, horizon: usize) -> usize {
        Self::feature_history(periods_per_day, horizon) + 2 * 7 * periods_per_day
    }

    /// Fits the coefficients on `history` for leads `1..=horizon`.
    pub fn fit(history: &[f64], periods_per_day: usize, horizon: usize) -> Result<LagRegression> {
        let needed = Self::min_history(periods_per_day, horizon);
        if horizon == 0 || history.len() < needed {
            return Err(AnalyticsError::InvalidInput(format!(
                "lag regression needs {needed} values of history and a horizon of at least 1, \
                 got {} values and horizon {horizon}",
                history.len()
            )));
        }
        let blocks = horizon.min(LEAD_BLOCKS);
        let mut equations = vec![NormalEquations::new(FEATURES); blocks];
        let stride = (periods_per_day / ORIGINS_PER_DAY).max(1);
        let first_origin = Self::feature_history(periods_per_day, horizon) - 1;
        for origin in (first_origin..history.len() - 1).step_by(stride) {
            let known = &history[..=origin];
            for lead in 1..=horizon.min(history.len() - 1 - origin) {
                let x = features(known, lead, periods_per_day);
                let baseline = lag_mean(known, lead, periods_per_day);
                let block = block_of(lead, horizon, blocks);
                equations[block].add(&x, history[origin + lead] - baseline);
            }
        }
        let coefficients = equations
            .iter()
            .map(|eq| {
                let beta = (eq.rows() > FEATURES).then(|| eq.solve(RIDGE)).flatten();
                let mut out = [0.0; FEATURES];
                if let Some(beta) = beta {
                    out.copy_from_slice(&beta);
                }
                out
            })
            .collect();
        Ok(LagRegression {
            periods_per_day,
            horizon,
            coefficients,
        })
    }

    /// Forecasts `horizon` (at most the fitted horizon) periods after the end of `history`.
    ///
    /// # Panics
    ///
    /// If `history` holds fewer than [`LagRegression::feature_history`] values;
    /// [`crate::forecast::Forecaster`] falls back before that can happen.
    pub fn forecast(&self, history: &[f64], horizon: usize) -> Vec<f64> {
        debug_assert!(history.len() >= Self::feature_history(self.periods_per_day, horizon));
        let blocks = self.coefficients.len();
        (1..=horizon)
            .map(|lead| {
                let x = features(history, lead, self.periods_per_day);
                let beta =
                    &self.coefficients[block_of(lead.min(self.horizon), self.horizon, blocks)];
                let correction: f64 = x.iter().zip(beta).map(|(x, b)| x * b).sum();
                lag_mean(history, lead, self.periods_per_day) + correction
            })
            .collect()
    }

    /// The horizon the model was fitted for.
    pub fn horizon(&self) -> usize {
        self.horizon
    }
}

fn block_of(lead: usize, horizon: usize, blocks: usize) -> usize {
    ((lead - 1) * blocks / horizon).min(blocks - 1)
}

/// Periods back from the target to the newest observed same time of week.
fn first_week_back(lead: usize, week: usize) -> usize {
    week * lead.div_ceil(week)
}

/// Value `back` periods before the target `lead` periods after the end of `known`.
fn before_target(known: &[f64], lead: usize, back: usize) -> f64 {
    known[known.len() - 1 + lead - back]
}

fn lag_mean(known: &[f64], lead: usize, periods_per_day: usize) -> f64 {
    let week = 7 * periods_per_day;
    let first = first_week_back(lead, week);
    (0..LAG_WEEKS)
        .map(|k| before_target(known, lead, first + k * week))
        .sum::<f64>()
        / LAG_WEEKS as f64
}

fn features(known: &[f64], lead: usize, periods_per_day: usize) -> [f64; FEATURES] {
    let week = 7 * periods_per_day;
    let first = first_week_back(lead, week);
    let mean = lag_mean(known, lead, periods_per_day);
    let lag = |k: usize| before_target(known, lead, first + k * week) - mean;

    let day_back = periods_per_day * lead.div_ceil(periods_per_day);
    let same_time_of_day = before_target(known, lead, day_back);
    let same_time_week_before = before_target(known, lead, day_back + week);

    let n = known.len();
    let last_day = &known[n - periods_per_day..];
    let week_before = &known[n - periods_per_day - week..n - week];
    let level_shift = last_day
        .iter()
        .zip(week_before)
        .map(|(now, then)| now - then)
        .sum::<f64>()
        / periods_per_day as f64;

    [
        lag(0),
        lag(1),
        lag(2),
        same_time_of_day - same_time_week_before,
        level_shift,
        known[n - 1] - known[n - 1 - week],
        1.0,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weekly_pattern(weeks: usize, ppd: usize) -> Vec<f64> {
        (0..weeks * 7 * ppd)
            .map(|t| {
                let phase = (t % (7 * ppd)) as f64;
                100.0 + (phase * 0.37).sin() * 20.0
            })
            .collect()
    }

    #[test]
    fn a_pure_weekly_pattern_is_forecast_exactly() {
        let ppd = 24;
        let series = weekly_pattern(8, ppd);
        let (train, test) = series.split_at(7 * 7 * ppd);
        let model = LagRegression::fit(train, ppd, ppd).unwrap();
        for (f, a) in model.forecast(train, ppd).iter().zip(test) {
            assert!((f - a).abs() < 1e-6, "{f} vs {a}");
        }
    }

    #[test]
    fn a_level_shift_is_carried_into_the_forecast() {
        let ppd = 24;
        let mut series = weekly_pattern(10, ppd);
        // Shifts of varying size start at varying times, so the model can learn to use the
        // recent level; the last one is 30 units three days before the end.
        for (start_day, size) in [(36, 10.0), (45, -15.0), (52, 25.0), (60, 5.0), (67, 30.0)] {
            series[start_day * ppd..]
                .iter_mut()
                .for_each(|v| *v += size);
        }
        let model = LagRegression::fit(&series, ppd, ppd).unwrap();
        let forecast = model.forecast(&series, ppd);
        let truth_next_day: Vec<f64> = weekly_pattern(11, ppd)[70 * ppd..71 * ppd]
            .iter()
            .map(|v| v + 10.0 - 15.0 + 25.0 + 5.0 + 30.0)
            .collect();
        let baseline = crate::forecast::baseline::same_weekday_mean(&series, 7 * ppd, 4, ppd);
        let err = |f: &[f64]| -> f64 {
            f.iter()
                .zip(&truth_next_day)
                .map(|(f, a)| (f - a).abs())
                .sum::<f64>()
                / ppd as f64
        };
        assert!(
            err(&forecast) < 0.5 * err(&baseline),
            "{} vs {}",
            err(&forecast),
            err(&baseline)
        );
    }

    #[test]
    fn refuses_short_history() {
        assert!(LagRegression::fit(&[1.0; 500], 24, 24).is_err());
    }
}
