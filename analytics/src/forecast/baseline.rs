//! The simple forecasts: the baselines to beat and the fallbacks for short history.
//!
//! Every function takes `history` ending at the forecast origin (its last value is the newest
//! observation) and returns `horizon` values for the periods after it.

/// `y[t - week]` (repeated weekly if the horizon is longer than a week).
pub(crate) fn seasonal_naive(history: &[f64], period: usize, horizon: usize) -> Vec<f64> {
    debug_assert!(history.len() >= period && period > 0);
    let n = history.len();
    (1..=horizon)
        .map(|h| {
            let back = period * h.div_ceil(period);
            history[n + h - 1 - back]
        })
        .collect()
}

/// Mean of the same time of week over the last `weeks` weeks available in `history`
/// (at least one). For horizons beyond a week the lags start at the nearest observed week.
pub(crate) fn same_weekday_mean(
    history: &[f64],
    week: usize,
    weeks: usize,
    horizon: usize,
) -> Vec<f64> {
    let n = history.len();
    debug_assert!(n >= week && week > 0);
    (1..=horizon)
        .map(|h| {
            let target = n - 1 + h;
            let first_back = week * h.div_ceil(week);
            let values: Vec<f64> = (0..weeks)
                .map(|k| first_back + k * week)
                .take_while(|back| *back <= target)
                .map(|back| history[target - back])
                .collect();
            values.iter().sum::<f64>() / values.len() as f64
        })
        .collect()
}

/// The newest value, repeated.
pub(crate) fn persistence(history: &[f64], horizon: usize) -> Vec<f64> {
    let last = history.last().copied().unwrap_or(0.0);
    vec![last; horizon]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seasonal_naive_repeats_the_period() {
        let history = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(seasonal_naive(&history, 3, 4), vec![4.0, 5.0, 6.0, 4.0]);
        assert_eq!(seasonal_naive(&history, 2, 3), vec![5.0, 6.0, 5.0]);
    }

    #[test]
    fn same_weekday_mean_averages_the_available_weeks() {
        // Period 2, three "weeks": values at the same phase are 1, 3, 5 and 2, 4, 6.
        let history = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(same_weekday_mean(&history, 2, 4, 2), vec![3.0, 4.0]);
        assert_eq!(same_weekday_mean(&history, 2, 2, 3), vec![4.0, 5.0, 4.0]);
    }
}
