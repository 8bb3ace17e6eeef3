//! Small robust statistics shared by the rules.

/// Scale factor that turns a median absolute deviation into a standard deviation for normal
/// data.
pub const MAD_TO_SIGMA: f64 = 1.4826;

/// The median of finite values; `None` when there are none. Sorts a copy.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    median_in_place(&mut sorted)
}

/// The median, sorting `values` in place (which must all be finite).
pub fn median_in_place(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Median and median absolute deviation of finite values.
pub fn median_mad(values: &[f64]) -> Option<(f64, f64)> {
    let center = median(values)?;
    let mut deviations: Vec<f64> = values
        .iter()
        .filter(|v| v.is_finite())
        .map(|v| (v - center).abs())
        .collect();
    let mad = median_in_place(&mut deviations)?;
    Some((center, mad))
}

/// Arithmetic mean; `None` for an empty slice.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        // One wild value moves neither the median nor the MAD much.
        assert_eq!(median_mad(&[1.0, 2.0, 3.0, 4.0, 1000.0]), Some((3.0, 1.0)));
    }
}
