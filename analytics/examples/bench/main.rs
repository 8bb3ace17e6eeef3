//! Accuracy benchmarks on public data (see `scripts/bench-analytics.sh`, which fetches it).
//!
//! ```text
//! bench forecast-taylor   <taylor.csv>
//! bench forecast-simbench <simbench network dir>
//! bench anomaly-simbench  <simbench network dir> [--seeds N] [--settings Z:FLOOR,...]
//! ```
//!
//! Everything is deterministic; the anomaly benchmark varies only with its seeds, and prints
//! the median over them.

mod anomaly_eval;
mod data;
mod forecast_eval;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("forecast-taylor") => path_arg(&args).and_then(forecast_eval::taylor),
        Some("forecast-simbench") => path_arg(&args).and_then(forecast_eval::simbench),
        Some("anomaly-simbench") => path_arg(&args).and_then(|dir| {
            let settings = settings_arg(&args)?;
            anomaly_eval::simbench(dir, number_arg(&args, "--seeds", 5), &settings)
        }),
        _ => Err(
            "usage: bench forecast-taylor <csv> | forecast-simbench <dir> | \
                  anomaly-simbench <dir> [--seeds N] [--settings Z:FLOOR,...]"
                .to_owned(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn path_arg(args: &[String]) -> Result<&str, String> {
    args.get(1)
        .map(String::as_str)
        .ok_or_else(|| "missing the data path".to_owned())
}

fn number_arg(args: &[String], flag: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `--settings 6:0.1,8:0.3`: robust-z threshold and scale floor pairs (default: the crate's).
fn settings_arg(args: &[String]) -> Result<Vec<(f64, f64)>, String> {
    let Some(i) = args.iter().position(|a| a == "--settings") else {
        let d = gridmesh_analytics::anomaly::AnomalyRules::default();
        return Ok(vec![(d.z_threshold, d.scale_floor)]);
    };
    let list = args.get(i + 1).ok_or("--settings needs a value")?;
    list.split(',')
        .map(|pair| {
            let (z, floor) = pair
                .split_once(':')
                .ok_or(format!("{pair}: expected Z:FLOOR"))?;
            let parse = |v: &str| v.parse::<f64>().map_err(|e| format!("{pair}: {e}"));
            Ok((parse(z)?, parse(floor)?))
        })
        .collect()
}
