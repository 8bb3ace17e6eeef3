//! Forecast accuracy measures.
//!
//! MASE here is scaled by the in-sample mean absolute error of the *weekly* seasonal naive
//! forecast on the training data (Hyndman & Koehler's definition with the seasonal period
//! one week), so 1.0 means "as good as repeating last week" and the scale is defined even when
//! net load crosses zero, where MAPE is not.

/// Mean absolute error; `None` for empty or mismatched input.
pub fn mae(actual: &[f64], forecast: &[f64]) -> Option<f64> {
    if actual.is_empty() || actual.len() != forecast.len() {
        return None;
    }
    let sum: f64 = actual
        .iter()
        .zip(forecast)
        .map(|(a, f)| (a - f).abs())
        .sum();
    Some(sum / actual.len() as f64)
}

/// Mean absolute percentage error, %, over points with `|actual| >= min_abs` (MAPE is
/// meaningless near zero). `None` when no point qualifies.
pub fn mape(actual: &[f64], forecast: &[f64], min_abs: f64) -> Option<f64> {
    let (sum, count) = actual
        .iter()
        .zip(forecast)
        .filter(|(a, _)| a.abs() >= min_abs && a.abs() > 0.0)
        .fold((0.0, 0usize), |(sum, count), (a, f)| {
            (sum + ((a - f) / a).abs(), count + 1)
        });
    (count > 0).then(|| 100.0 * sum / count as f64)
}

/// Mean absolute scaled error against a precomputed `scale` (see [`seasonal_naive_mae`]).
pub fn mase(actual: &[f64], forecast: &[f64], scale: f64) -> Option<f64> {
    if !(scale > 0.0 && scale.is_finite()) {
        return None;
    }
    mae(actual, forecast).map(|e| e / scale)
}

/// In-sample MAE of the seasonal naive forecast `y[t - lag]` over `history`.
pub fn seasonal_naive_mae(history: &[f64], lag: usize) -> Option<f64> {
    if lag == 0 || history.len() <= lag {
        return None;
    }
    let sum: f64 = (lag..history.len())
        .map(|t| (history[t] - history[t - lag]).abs())
        .sum();
    Some(sum / (history.len() - lag) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures() {
        assert_eq!(mae(&[1.0, 2.0], &[2.0, 0.0]), Some(1.5));
        assert_eq!(mae(&[], &[]), None);
        assert_eq!(
            mape(&[100.0, 0.0, 200.0], &[110.0, 5.0, 180.0], 1.0),
            Some(10.0)
        );
        assert_eq!(mape(&[0.0], &[1.0], 0.0), None);
        assert_eq!(seasonal_naive_mae(&[1.0, 2.0, 3.0, 5.0], 2), Some(2.5));
        assert_eq!(mase(&[1.0], &[3.0], 2.0), Some(1.0));
        assert_eq!(mase(&[1.0], &[3.0], 0.0), None);
    }
}
