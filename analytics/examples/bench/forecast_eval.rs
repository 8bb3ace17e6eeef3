//! Rolling-origin evaluation of the forecasting methods.
//!
//! At every origin the method sees only the values before it, forecasts the horizon, and the
//! errors of all leads are pooled. Models are refitted every `refit_every` periods on their
//! trailing training window. MASE is scaled by the weekly seasonal naive MAE of the initial
//! training part of each series (see `forecast::metrics`).

use std::time::Instant;

use gridmesh_analytics::forecast::{
    ForecastConfig, Forecaster, HoltWinters, Method, Objective, metrics,
};
use gridmesh_analytics::stats::median;

use crate::data;

/// Every method, baselines first.
pub(crate) const METHODS: [Method; 6] = [
    Method::SeasonalNaive,
    Method::SameWeekdayMean,
    Method::HoltWinters,
    Method::HoltWintersAr,
    Method::LagRegression,
    Method::Ensemble,
];

/// How to evaluate one series.
#[derive(Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) periods_per_day: usize,
    pub(crate) horizon: usize,
    /// First origin = number of values in the initial training part.
    pub(crate) first_origin: usize,
    pub(crate) origin_step: usize,
    pub(crate) refit_every: usize,
    pub(crate) training_weeks: usize,
    /// Points with |actual| below this are left out of MAPE.
    pub(crate) mape_min_abs: f64,
}

/// Pooled errors of one method on one series.
#[derive(Clone, Copy, Default)]
pub(crate) struct Score {
    pub(crate) mape: f64,
    pub(crate) mase: f64,
    /// Milliseconds of fitting and forecasting per origin.
    pub(crate) ms_per_origin: f64,
}

/// Taylor's own fit (one-step errors) of Holt-Winters, for comparison with the default fit.
#[derive(Clone, Copy)]
pub(crate) struct ClassicHw {
    pub(crate) ar: bool,
}

impl ClassicHw {
    fn name(self) -> &'static str {
        if self.ar {
            "holt-winters-ar, one-step fit"
        } else {
            "holt-winters, one-step fit"
        }
    }

    fn evaluate(self, series: &[f64], spec: Spec) -> Result<Score, String> {
        let window = spec.training_weeks * 7 * spec.periods_per_day;
        let mut model: Option<(usize, HoltWinters)> = None;
        score_origins(series, spec, |origin, history| {
            let trailing = &history[history.len().saturating_sub(window)..];
            if model
                .as_ref()
                .is_none_or(|(at, _)| origin - at >= spec.refit_every)
            {
                let fitted =
                    HoltWinters::fit(trailing, spec.periods_per_day, self.ar, Objective::OneStep)
                        .map_err(|e| e.to_string())?;
                model = Some((origin, fitted));
            }
            let (_, hw) = model.as_ref().expect("fitted just above");
            Ok(hw.forecast(trailing, spec.horizon))
        })
    }
}

pub(crate) fn evaluate(series: &[f64], spec: Spec, method: Method) -> Result<Score, String> {
    let config = ForecastConfig {
        periods_per_day: spec.periods_per_day,
        horizon: spec.horizon,
        method,
        training_weeks: spec.training_weeks,
    };
    let mut model: Option<(usize, Forecaster)> = None;
    score_origins(series, spec, |origin, history| {
        let stale = model
            .as_ref()
            .is_none_or(|(fitted_at, _)| origin - fitted_at >= spec.refit_every);
        if stale {
            let fitted = Forecaster::fit(config, history).map_err(|e| e.to_string())?;
            model = Some((origin, fitted));
        }
        let (_, forecaster) = model.as_ref().expect("fitted just above");
        let forecast = forecaster.forecast(history).map_err(|e| e.to_string())?;
        if forecast.method != method {
            return Err(format!(
                "{} fell back to {}",
                method.name(),
                forecast.method.name()
            ));
        }
        Ok(forecast.values)
    })
}

/// Runs `forecast(origin, history before origin)` at every origin and pools the errors.
fn score_origins(
    series: &[f64],
    spec: Spec,
    mut forecast: impl FnMut(usize, &[f64]) -> Result<Vec<f64>, String>,
) -> Result<Score, String> {
    let week = 7 * spec.periods_per_day;
    let scale = metrics::seasonal_naive_mae(&series[..spec.first_origin], week)
        .ok_or("training part shorter than a week")?;
    let started = Instant::now();
    let (mut actual, mut predicted) = (Vec::new(), Vec::new());
    let mut origins = 0usize;
    let last_origin = series.len() - spec.horizon;
    for origin in (spec.first_origin..=last_origin).step_by(spec.origin_step) {
        let values = forecast(origin, &series[..origin])?;
        actual.extend_from_slice(&series[origin..origin + spec.horizon]);
        predicted.extend_from_slice(&values);
        origins += 1;
    }
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(Score {
        mape: metrics::mape(&actual, &predicted, spec.mape_min_abs).unwrap_or(f64::NAN),
        mase: metrics::mase(&actual, &predicted, scale).unwrap_or(f64::NAN),
        ms_per_origin: elapsed_ms / origins.max(1) as f64,
    })
}

fn print_table(title: &str, rows: &[(&str, Score)]) {
    println!("\n{title}\n");
    println!("| method | MAPE % | MASE | ms / origin |");
    println!("|---|---:|---:|---:|");
    for (name, s) in rows {
        println!(
            "| {name} | {:.2} | {:.3} | {:.2} |",
            s.mape, s.mase, s.ms_per_origin
        );
    }
}

pub(crate) fn taylor(path: &str) -> Result<(), String> {
    let series = data::read_single_column(path)?;
    let ppd = 48;
    if series.len() != 12 * 7 * ppd {
        return Err(format!("expected 4032 half-hours, got {}", series.len()));
    }
    println!("# Taylor England & Wales demand: 12 weeks half-hourly, train 8, test 4");
    let base = Spec {
        periods_per_day: ppd,
        horizon: ppd,
        first_origin: 8 * 7 * ppd,
        origin_step: 1,
        refit_every: usize::MAX,
        training_weeks: 12,
        mape_min_abs: 0.0,
    };
    let modes = [
        (
            "origins every half-hour, leads 1-48, fitted once on weeks 1-8",
            base,
        ),
        (
            "origins at midnight (28 day-ahead forecasts), fitted once on weeks 1-8",
            Spec {
                origin_step: ppd,
                ..base
            },
        ),
    ];
    for (title, spec) in modes {
        let mut rows = METHODS
            .iter()
            .map(|m| evaluate(&series, spec, *m).map(|s| (m.name(), s)))
            .collect::<Result<Vec<_>, _>>()?;
        for classic in [ClassicHw { ar: false }, ClassicHw { ar: true }] {
            rows.push((classic.name(), classic.evaluate(&series, spec)?));
        }
        print_table(&format!("## Taylor, {title}"), &rows);
    }
    Ok(())
}

/// Per-series scores of every method, for one kind of series of many grids.
type GridScores = Vec<(String, Vec<Score>)>;

pub(crate) fn simbench(dir: &str) -> Result<(), String> {
    let grids = data::lv_grids(dir)?;
    let chosen = data::distinct_grids(&grids);
    let mut load_columns: Vec<String> = chosen
        .iter()
        .flat_map(|g| g.loads.iter().map(|(p, _)| p.clone()))
        .collect();
    load_columns.sort();
    load_columns.dedup();
    let mut res_columns: Vec<String> = chosen
        .iter()
        .flat_map(|g| g.generators.iter().map(|(p, _)| p.clone()))
        .collect();
    res_columns.sort();
    res_columns.dedup();
    let load_profiles = data::read_profiles(dir, "LoadProfile.csv", &load_columns)?;
    let res_profiles = data::read_profiles(dir, "RESProfile.csv", &res_columns)?;
    let len = load_profiles.values().next().map_or(0, Vec::len);

    let network = dir.trim_end_matches('/').rsplit('/').next().unwrap_or(dir);
    println!(
        "# SimBench {network}: the {} distinct LV grids of {} LV subnets, 2016 at 15 min, \
         day-ahead at midnight, {} origins from day 57, refit weekly on the trailing 12 weeks",
        chosen.len(),
        grids.len(),
        (len - 96 - 8 * 7 * 96) / 96 + 1
    );
    let ppd = 96;
    let spec = Spec {
        periods_per_day: ppd,
        horizon: ppd,
        first_origin: 8 * 7 * ppd,
        origin_step: ppd,
        refit_every: 7 * ppd,
        training_weeks: 12,
        mape_min_abs: 0.0,
    };
    let mut gross: GridScores = Vec::new();
    let mut net: GridScores = Vec::new();
    for grid in &chosen {
        let load = data::weighted_sum(&grid.loads, &load_profiles, len);
        let generation = data::weighted_sum(&grid.generators, &res_profiles, len);
        let net_load: Vec<f64> = load.iter().zip(&generation).map(|(l, g)| l - g).collect();
        let train = &net_load[..spec.first_origin];
        let mean_abs = train.iter().map(|v| v.abs()).sum::<f64>() / train.len() as f64;
        let net_spec = Spec {
            mape_min_abs: 0.1 * mean_abs,
            ..spec
        };
        let score = |series: &[f64], spec: Spec| {
            METHODS
                .iter()
                .map(|m| evaluate(series, spec, *m))
                .collect::<Result<Vec<_>, _>>()
        };
        gross.push((grid.name.clone(), score(&load, spec)?));
        net.push((grid.name.clone(), score(&net_load, net_spec)?));
    }
    report("load of the loads only (no generation)", &gross);
    report(
        "net load = loads - generation (MAPE over |y| >= 10 % of mean |y|)",
        &net,
    );
    Ok(())
}

fn report(title: &str, scores: &GridScores) {
    println!("\n## {title}\n");
    let header: Vec<&str> = METHODS.iter().map(|m| m.name()).collect();
    println!("| grid | metric | {} |", header.join(" | "));
    println!("|---|---|{}", "---:|".repeat(METHODS.len()));
    for (name, row) in scores {
        for (metric, get) in [
            ("MASE", (|s: &Score| s.mase) as fn(&Score) -> f64),
            ("MAPE %", |s: &Score| s.mape),
        ] {
            let cells: Vec<String> = row.iter().map(|s| format!("{:.3}", get(s))).collect();
            println!("| {name} | {metric} | {} |", cells.join(" | "));
        }
    }
    for (metric, get) in [
        ("MASE", (|s: &Score| s.mase) as fn(&Score) -> f64),
        ("MAPE %", |s: &Score| s.mape),
    ] {
        let cells: Vec<String> = (0..METHODS.len())
            .map(|i| {
                let values: Vec<f64> = scores.iter().map(|(_, r)| get(&r[i])).collect();
                format!("{:.3}", median(&values).unwrap_or(f64::NAN))
            })
            .collect();
        println!("| median | {metric} | {} |", cells.join(" | "));
    }
    let best = METHODS
        .iter()
        .position(|m| *m == Method::HoltWintersAr)
        .expect("the default method is evaluated");
    for (i, baseline) in METHODS.iter().enumerate().filter(|(i, _)| *i != best) {
        let wins = scores
            .iter()
            .filter(|(_, s)| s[best].mase < s[i].mase)
            .count();
        println!(
            "\n{} beats {} on MASE on {wins} of {} grids",
            METHODS[best].name(),
            baseline.name(),
            scores.len()
        );
    }
}
