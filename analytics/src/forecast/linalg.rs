//! Just enough linear algebra for small least-squares fits.

/// Solves `(A + ridge·I) x = b` for a symmetric positive semi-definite `A` (row-major, n × n)
/// by Cholesky decomposition. `None` when the system is singular even with the ridge.
pub(crate) fn solve_spd(a: &[f64], b: &[f64], ridge: f64) -> Option<Vec<f64>> {
    let n = b.len();
    debug_assert_eq!(a.len(), n * n, "matrix must be n × n");
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut sum = a[i * n + j] + if i == j { ridge } else { 0.0 };
            for k in 0..j {
                sum -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if sum <= 0.0 || !sum.is_finite() {
                    return None;
                }
                l[i * n + i] = sum.sqrt();
            } else {
                l[i * n + j] = sum / l[j * n + j];
            }
        }
    }

    // Forward then backward substitution: L y = b, Lᵀ x = y.
    let mut y = vec![0.0; n];
    for i in 0..n {
        let sum: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (b[i] - sum) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let sum: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (y[i] - sum) / l[i * n + i];
    }
    Some(x)
}

/// Accumulates the normal equations `XᵀX` and `Xᵀy` one row at a time.
#[derive(Debug, Clone)]
pub(crate) struct NormalEquations {
    n: usize,
    xtx: Vec<f64>,
    xty: Vec<f64>,
    rows: usize,
}

impl NormalEquations {
    pub(crate) fn new(n: usize) -> NormalEquations {
        NormalEquations {
            n,
            xtx: vec![0.0; n * n],
            xty: vec![0.0; n],
            rows: 0,
        }
    }

    pub(crate) fn add(&mut self, x: &[f64], y: f64) {
        debug_assert_eq!(x.len(), self.n);
        for i in 0..self.n {
            self.xty[i] += x[i] * y;
            for j in 0..self.n {
                self.xtx[i * self.n + j] += x[i] * x[j];
            }
        }
        self.rows += 1;
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Ridge solution with `ridge` relative to the mean diagonal of `XᵀX`.
    pub(crate) fn solve(&self, relative_ridge: f64) -> Option<Vec<f64>> {
        let trace: f64 = (0..self.n).map(|i| self.xtx[i * self.n + i]).sum();
        let ridge = relative_ridge * (trace / self.n as f64).max(f64::MIN_POSITIVE);
        solve_spd(&self.xtx, &self.xty, ridge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_exact_coefficients() {
        let mut eq = NormalEquations::new(3);
        for i in 0..50 {
            let x = [1.0, f64::from(i), f64::from(i * i % 7)];
            eq.add(&x, 2.0 + 0.5 * x[1] - 3.0 * x[2]);
        }
        let beta = eq.solve(1e-12).unwrap();
        for (got, want) in beta.iter().zip([2.0, 0.5, -3.0]) {
            assert!((got - want).abs() < 1e-6, "{beta:?}");
        }
    }

    #[test]
    fn singular_without_ridge_is_refused() {
        assert_eq!(solve_spd(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0], 0.0), None);
        assert!(solve_spd(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0], 1e-6).is_some());
    }
}
