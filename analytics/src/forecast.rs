//! Load forecasting at the series' own resolution, with the baselines it must beat.
//!
//! A forecast is made at an *origin*: `history` is the regular series (no gaps — run VEE
//! first) ending with the newest observed period, and the forecast is the next `horizon`
//! periods. Models are fitted on the trailing [`ForecastConfig::training_weeks`] and reused
//! across origins until the caller refits (the actors refit daily; the benchmarks weekly).
//!
//! Methods ([`Method`]):
//! - [`Method::SameWeekdayMean`]: mean of the same period in the last 4 weeks (baseline).
//! - [`Method::SeasonalNaive`]: the same period last week.
//! - [`Method::HoltWinters`]: Taylor's double-seasonal Holt-Winters (baseline).
//! - [`Method::HoltWintersAr`]: the same with an AR(1) adjustment of the one-step error and a
//!   fitted smoothing of the seasonal indices — the default, because it had the lowest MASE
//!   on the Taylor series and on the SimBench LV grids (`docs/analytics.md`).
//! - [`Method::LagRegression`]: same-time-of-week lags plus recent-level correction.
//! - [`Method::Ensemble`]: the mean of `HoltWintersAr` and `LagRegression`.
//!
//! **Fallback.** When the history is too short for the configured method the forecaster
//! steps down to what the history supports: `SameWeekdayMean` over the weeks there are (at
//! least one week), then yesterday's value at the same time (at least a day), then the newest
//! value. [`Forecast::method`] says which one produced the numbers.

mod baseline;
mod holt_winters;
mod lag_regression;
mod linalg;
pub mod metrics;

use serde::{Deserialize, Serialize};

use crate::error::{AnalyticsError, Result, invalid};
use crate::time::DAY_MS;

pub use holt_winters::{HoltWinters, HwParams, Objective};
pub use lag_regression::LagRegression;

/// A forecasting method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    /// The same period one week earlier.
    SeasonalNaive,
    /// Mean of the same period over the last (up to) 4 weeks.
    SameWeekdayMean,
    /// Double-seasonal Holt-Winters.
    HoltWinters,
    /// Double-seasonal Holt-Winters with AR(1) error adjustment and seasonal smoothing.
    HoltWintersAr,
    /// Lag regression with recent-level correction.
    LagRegression,
    /// Mean of `HoltWintersAr` and `LagRegression`.
    Ensemble,
    /// The same time of day, the latest day observed (fallback only).
    DailyNaive,
    /// The newest value repeated (fallback only).
    Persistence,
}

impl Method {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::SeasonalNaive => "seasonal-naive",
            Method::SameWeekdayMean => "same-weekday-mean",
            Method::HoltWinters => "holt-winters",
            Method::HoltWintersAr => "holt-winters-ar",
            Method::LagRegression => "lag-regression",
            Method::Ensemble => "ensemble",
            Method::DailyNaive => "daily-naive",
            Method::Persistence => "persistence",
        }
    }
}

/// Forecast settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastConfig {
    /// Periods per day: 96 at 15 minutes, 48 at 30 minutes.
    pub periods_per_day: usize,
    /// Periods to forecast; a day (= `periods_per_day`) for day-ahead.
    pub horizon: usize,
    /// The method.
    pub method: Method,
    /// Trailing weeks used to fit and run the models (default 12: more weeks average out
    /// more noise; 12 weeks of 15-minute values are 65 KB per feeder).
    pub training_weeks: usize,
}

impl Default for ForecastConfig {
    /// Day-ahead at 15 minutes with the default method and 12 training weeks.
    fn default() -> ForecastConfig {
        ForecastConfig {
            periods_per_day: 96,
            horizon: 96,
            method: Method::HoltWintersAr,
            training_weeks: 12,
        }
    }
}

impl ForecastConfig {
    /// Day-ahead forecasting with the default method for a series of step `step_ms`.
    pub fn day_ahead(step_ms: i64) -> Result<ForecastConfig> {
        if step_ms <= 0 || DAY_MS % step_ms != 0 {
            return Err(invalid("step_ms", step_ms, "must divide a day evenly"));
        }
        let periods_per_day = (DAY_MS / step_ms) as usize;
        Ok(ForecastConfig {
            periods_per_day,
            horizon: periods_per_day,
            method: Method::HoltWintersAr,
            training_weeks: 12,
        })
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.periods_per_day == 0 || self.periods_per_day > 1440 {
            return Err(invalid(
                "periods_per_day",
                self.periods_per_day,
                "must be 1..=1440",
            ));
        }
        if self.horizon == 0 || self.horizon > 7 * self.periods_per_day {
            return Err(invalid(
                "horizon",
                self.horizon,
                "must be 1..=one week of periods",
            ));
        }
        if self.training_weeks < 3 {
            return Err(invalid(
                "training_weeks",
                self.training_weeks,
                "must be at least 3",
            ));
        }
        if matches!(self.method, Method::DailyNaive | Method::Persistence) {
            return Err(invalid(
                "method",
                self.method.name(),
                "daily-naive and persistence are fallbacks, not selectable methods",
            ));
        }
        Ok(())
    }

    fn week(&self) -> usize {
        7 * self.periods_per_day
    }

    fn window(&self) -> usize {
        self.training_weeks * self.week()
    }
}

/// A forecast and the method that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// One value per period after the origin.
    pub values: Vec<f64>,
    /// The method actually used (differs from the configured one after a fallback).
    pub method: Method,
}

/// The fitted part of a model.
#[derive(Debug, Clone, PartialEq)]
enum Fitted {
    Simple(Method),
    HoltWinters(HoltWinters, Method),
    LagRegression(LagRegression),
    Ensemble(HoltWinters, LagRegression),
}

/// A fitted forecaster for one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecaster {
    config: ForecastConfig,
    fitted: Fitted,
}

impl Forecaster {
    /// Fits `config.method` on the trailing window of `history`, or the best fallback the
    /// history supports.
    pub fn fit(config: ForecastConfig, history: &[f64]) -> Result<Forecaster> {
        config.validate()?;
        check_history(history)?;
        let window = trailing(history, config.window());
        let method = usable_method(&config, config.method, window.len());
        let ppd = config.periods_per_day;
        let fitted = match method {
            Method::HoltWinters | Method::HoltWintersAr => Fitted::HoltWinters(
                HoltWinters::fit(
                    window,
                    ppd,
                    method == Method::HoltWintersAr,
                    Objective::Horizon(config.horizon),
                )?,
                method,
            ),
            Method::LagRegression => {
                Fitted::LagRegression(LagRegression::fit(window, ppd, config.horizon)?)
            }
            Method::Ensemble => Fitted::Ensemble(
                HoltWinters::fit(window, ppd, true, Objective::Horizon(config.horizon))?,
                LagRegression::fit(window, ppd, config.horizon)?,
            ),
            simple => Fitted::Simple(simple),
        };
        Ok(Forecaster { config, fitted })
    }

    /// The method the fit produced (the configured one, or its fallback).
    pub fn method(&self) -> Method {
        match &self.fitted {
            Fitted::Simple(method) | Fitted::HoltWinters(_, method) => *method,
            Fitted::LagRegression(_) => Method::LagRegression,
            Fitted::Ensemble(..) => Method::Ensemble,
        }
    }

    /// The settings.
    pub fn config(&self) -> &ForecastConfig {
        &self.config
    }

    /// Forecasts `config.horizon` periods after the end of `history`. A history shorter than
    /// the fitted method needs falls back as described in the module docs.
    pub fn forecast(&self, history: &[f64]) -> Result<Forecast> {
        check_history(history)?;
        let c = &self.config;
        let window = trailing(history, c.window());
        let wanted = self.method();
        let method = usable_method(c, wanted, window.len());
        let horizon = c.horizon;
        let values = match (&self.fitted, method == wanted) {
            (Fitted::HoltWinters(model, _), true) => model.forecast(window, horizon),
            (Fitted::LagRegression(model), true) => model.forecast(window, horizon),
            (Fitted::Ensemble(hw, lag), true) => {
                let a = hw.forecast(window, horizon);
                let b = lag.forecast(window, horizon);
                a.iter().zip(&b).map(|(a, b)| (a + b) / 2.0).collect()
            }
            _ => simple_forecast(method, window, c),
        };
        Ok(Forecast { values, method })
    }
}

/// Forecasts with a method that needs no fitting (baselines and fallbacks).
pub fn simple_forecast(method: Method, history: &[f64], config: &ForecastConfig) -> Vec<f64> {
    let (ppd, week, horizon) = (config.periods_per_day, config.week(), config.horizon);
    match method {
        Method::SeasonalNaive if history.len() >= week => {
            baseline::seasonal_naive(history, week, horizon)
        }
        Method::DailyNaive if history.len() >= ppd => {
            baseline::seasonal_naive(history, ppd, horizon)
        }
        Method::Persistence => baseline::persistence(history, horizon),
        _ if history.len() >= week => baseline::same_weekday_mean(history, week, 4, horizon),
        _ if history.len() >= ppd => baseline::seasonal_naive(history, ppd, horizon),
        _ => baseline::persistence(history, horizon),
    }
}

/// The method to use for `len` values of history: `wanted` if possible, else a fallback.
fn usable_method(config: &ForecastConfig, wanted: Method, len: usize) -> Method {
    let ppd = config.periods_per_day;
    let needed = match wanted {
        Method::HoltWinters | Method::HoltWintersAr => HoltWinters::min_history(ppd),
        Method::LagRegression => LagRegression::min_history(ppd, config.horizon),
        Method::Ensemble => {
            LagRegression::min_history(ppd, config.horizon).max(HoltWinters::min_history(ppd))
        }
        Method::SeasonalNaive | Method::SameWeekdayMean => config.week(),
        Method::DailyNaive => ppd,
        Method::Persistence => 1,
    };
    if len >= needed {
        wanted
    } else if len >= config.week() {
        Method::SameWeekdayMean
    } else if len >= ppd {
        Method::DailyNaive
    } else {
        Method::Persistence
    }
}

fn trailing(history: &[f64], window: usize) -> &[f64] {
    &history[history.len().saturating_sub(window)..]
}

fn check_history(history: &[f64]) -> Result<()> {
    if history.is_empty() {
        return Err(AnalyticsError::InvalidInput(
            "cannot forecast from an empty history".to_owned(),
        ));
    }
    match history.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(AnalyticsError::InvalidInput(format!(
            "history value {i} is {}; fill gaps (VEE) before forecasting",
            history[i]
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(method: Method) -> ForecastConfig {
        ForecastConfig {
            periods_per_day: 24,
            horizon: 24,
            method,
            training_weeks: 8,
        }
    }

    #[test]
    fn settings_are_validated() {
        assert!(ForecastConfig::day_ahead(7 * 60_000).is_err());
        let c = ForecastConfig::day_ahead(15 * 60_000).unwrap();
        assert_eq!((c.periods_per_day, c.horizon), (96, 96));
        let mut bad = config(Method::Ensemble);
        bad.horizon = 0;
        assert!(bad.validate().is_err());
        assert!(config(Method::Persistence).validate().is_err());
        assert!(Forecaster::fit(config(Method::Ensemble), &[]).is_err());
        assert!(Forecaster::fit(config(Method::Ensemble), &[1.0, f64::NAN]).is_err());
    }

    #[test]
    fn long_history_uses_the_configured_method() {
        let history: Vec<f64> = (0..8 * 168).map(|t| 50.0 + (t % 24) as f64).collect();
        for method in [
            Method::SeasonalNaive,
            Method::SameWeekdayMean,
            Method::HoltWinters,
            Method::HoltWintersAr,
            Method::LagRegression,
            Method::Ensemble,
        ] {
            let model = Forecaster::fit(config(method), &history).unwrap();
            let forecast = model.forecast(&history).unwrap();
            assert_eq!(forecast.method, method);
            for (h, v) in forecast.values.iter().enumerate() {
                let expected = 50.0 + (h % 24) as f64;
                assert!((v - expected).abs() < 1e-6, "{method:?} lead {h}: {v}");
            }
        }
    }

    proptest! {
        // Each case fits Holt-Winters in a debug build; a few dozen cases cover the lengths.
        #![proptest_config(crate::test_config(32))]

        /// Whatever the history length, the forecast has the horizon's length, finite values,
        /// and a method that the history supports; short histories never error.
        #[test]
        fn fallback_always_forecasts(
            len in 1usize..(6 * 168),
            method_index in 0usize..6,
            level in -100.0f64..100.0,
        ) {
            let methods = [
                Method::SeasonalNaive,
                Method::SameWeekdayMean,
                Method::HoltWinters,
                Method::HoltWintersAr,
                Method::LagRegression,
                Method::Ensemble,
            ];
            let c = config(methods[method_index]);
            let history: Vec<f64> = (0..len).map(|t| level + ((t * 7) % 13) as f64).collect();
            let model = Forecaster::fit(c, &history).unwrap();
            let forecast = model.forecast(&history).unwrap();
            prop_assert_eq!(forecast.values.len(), c.horizon);
            prop_assert!(forecast.values.iter().all(|v| v.is_finite()));
            match forecast.method {
                Method::Persistence => prop_assert!(len < 24),
                Method::DailyNaive => prop_assert!((24..168).contains(&len)),
                Method::SameWeekdayMean if c.method != Method::SameWeekdayMean => {
                    prop_assert!(len >= 168)
                }
                m => prop_assert_eq!(m, c.method),
            }
            // A constant-free fallback still stays within the history's range.
            if matches!(forecast.method, Method::Persistence | Method::DailyNaive) {
                let lo = history.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = history.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                prop_assert!(forecast.values.iter().all(|v| *v >= lo && *v <= hi));
            }
        }
    }
}
