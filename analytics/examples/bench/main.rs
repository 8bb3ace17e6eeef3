//! Accuracy benchmarks on public data (see `scripts/bench-analytics.sh`, which fetches it).
//!
//! ```text
//! bench forecast-taylor   <taylor.csv>
//! bench forecast-simbench <simbench network dir>
//! bench anomaly-simbench  <simbench network dir> [--seeds N]
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
        Some("anomaly-simbench") => path_arg(&args)
            .and_then(|dir| anomaly_eval::simbench(dir, number_arg(&args, "--seeds", 5))),
        _ => Err(
            "usage: bench forecast-taylor <csv> | forecast-simbench <dir> | \
                  anomaly-simbench <dir> [--seeds N]"
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
