//! Descriptive statistics of one sample and the least-squares line of a pair: what figures
//! print as means, error bars, box plots and fitted lines (correlations and tests are in
//! [`crate::analysis::stats`]).
//!
//! Conventions follow numpy: the standard deviation is the sample one (`ddof = 1`), the
//! standard error is `sd / sqrt(n)`, quantiles interpolate linearly between order statistics
//! (`numpy.quantile(..., method="linear")`), and the fitted line is ordinary least squares
//! (`numpy.polyfit(x, y, 1)`). Inputs with NaN or infinity are refused, never averaged.
//!
//! ```
//! use cdsr_lab::analysis::describe::{linear_fit, quantiles, summary};
//! let s = summary(&[1.0, 2.0, 3.0, 4.0]).unwrap();
//! assert_eq!((s.n, s.mean), (4, 2.5));
//! assert!((s.sd.unwrap() - 1.6666666666666667f64.sqrt()).abs() < 1e-15);
//! assert_eq!(quantiles(&[4.0, 1.0, 3.0, 2.0], &[0.25, 0.5]).unwrap(), vec![1.75, 2.5]);
//! let line = linear_fit(&[0.0, 1.0, 2.0], &[1.0, 3.0, 5.0]).unwrap();
//! assert_eq!((line.slope, line.intercept), (2.0, 1.0));
//! ```

use statrs::distribution::{ContinuousCDF, StudentsT};

pub use super::stats::StatsError;
use super::stats::{percentile, Interval};

/// Size, mean and spread of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (`ddof = 1`); `None` for a single value.
    pub sd: Option<f64>,
    /// Standard error of the mean, `sd / sqrt(n)`; `None` for a single value.
    pub sem: Option<f64>,
}

impl Summary {
    /// The t-based confidence interval of the mean at `level` (e.g. 0.95), `mean ± t * sem`
    /// with `n - 1` degrees of freedom; `None` for a single value.
    ///
    /// ```
    /// use cdsr_lab::analysis::describe::summary;
    /// let ci = summary(&[0.2, 0.4]).unwrap().mean_interval(0.95).unwrap();
    /// // t(0.975, 1) = 12.706..., sem = 0.1
    /// assert!((ci.high - (0.3 + 1.2706204736174707)).abs() < 1e-12);
    /// assert!(summary(&[0.2]).unwrap().mean_interval(0.95).is_none());
    /// ```
    pub fn mean_interval(&self, level: f64) -> Option<Interval> {
        let sem = self.sem?;
        let t = StudentsT::new(0.0, 1.0, (self.n - 1) as f64)
            .ok()?
            .inverse_cdf(0.5 + level / 2.0);
        Some(Interval {
            low: self.mean - t * sem,
            high: self.mean + t * sem,
            level,
        })
    }
}

fn check_finite(values: &[f64], what: &'static str) -> Result<(), StatsError> {
    if values.iter().any(|v| !v.is_finite()) {
        return Err(StatsError::NonFinite(what));
    }
    Ok(())
}

/// [`Summary`] of `values` (at least one, all finite).
pub fn summary(values: &[f64]) -> Result<Summary, StatsError> {
    if values.is_empty() {
        return Err(StatsError::TooFew { need: 1, got: 0 });
    }
    check_finite(values, "values")?;
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let sd = (n > 1)
        .then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    Ok(Summary {
        n,
        mean,
        sd,
        sem: sd.map(|s| s / (n as f64).sqrt()),
    })
}

/// The `qs` quantiles (each in `[0, 1]`) of `values`, interpolating linearly between order
/// statistics as numpy's default does.
pub fn quantiles(values: &[f64], qs: &[f64]) -> Result<Vec<f64>, StatsError> {
    if values.is_empty() {
        return Err(StatsError::TooFew { need: 1, got: 0 });
    }
    check_finite(values, "values")?;
    if let Some(q) = qs.iter().find(|q| !(0.0..=1.0).contains(*q)) {
        return Err(StatsError::Invalid(format!(
            "quantile {q} is outside [0, 1]"
        )));
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Ok(qs.iter().map(|&q| percentile(&sorted, q)).collect())
}

/// The least-squares line `y = intercept + slope * x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearFit {
    pub slope: f64,
    pub intercept: f64,
}

impl LinearFit {
    /// The line's value at `x`.
    pub fn at(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }
}

/// Ordinary least-squares line through `(x, y)`: at least two points, `x` not constant.
pub fn linear_fit(x: &[f64], y: &[f64]) -> Result<LinearFit, StatsError> {
    if x.len() != y.len() {
        return Err(StatsError::Length(x.len(), y.len()));
    }
    if x.len() < 2 {
        return Err(StatsError::TooFew {
            need: 2,
            got: x.len(),
        });
    }
    check_finite(x, "x")?;
    check_finite(y, "y")?;
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    if sxx == 0.0 {
        return Err(StatsError::Constant("x"));
    }
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let slope = sxy / sxx;
    Ok(LinearFit {
        slope,
        intercept: my - slope * mx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::stats::pearson;

    #[test]
    fn summary_of_one_value_has_no_spread() {
        let s = summary(&[0.25]).unwrap();
        assert_eq!((s.n, s.mean, s.sd, s.sem), (1, 0.25, None, None));
    }

    #[test]
    fn summary_matches_hand_computation() {
        // mean 4, squared deviations 4 + 0 + 4 = 8, sd = sqrt(8 / 2) = 2, sem = 2 / sqrt(3).
        let s = summary(&[2.0, 4.0, 6.0]).unwrap();
        assert_eq!((s.n, s.mean, s.sd), (3, 4.0, Some(2.0)));
        assert!((s.sem.unwrap() - 2.0 / 3f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        // numpy.quantile([10, 20, 30, 40, 50], [0, 0.1, 0.5, 0.9, 1]) = [10, 14, 30, 46, 50]
        let q = quantiles(&[50.0, 10.0, 40.0, 20.0, 30.0], &[0.0, 0.1, 0.5, 0.9, 1.0]).unwrap();
        let want = [10.0, 14.0, 30.0, 46.0, 50.0];
        for (a, b) in q.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{q:?}");
        }
    }

    #[test]
    fn bad_inputs_are_errors_not_nan() {
        assert_eq!(
            summary(&[]).unwrap_err(),
            StatsError::TooFew { need: 1, got: 0 }
        );
        assert_eq!(
            summary(&[1.0, f64::NAN]).unwrap_err(),
            StatsError::NonFinite("values")
        );
        assert!(quantiles(&[1.0], &[1.5]).is_err());
        assert_eq!(
            linear_fit(&[1.0, 1.0], &[2.0, 3.0]).unwrap_err(),
            StatsError::Constant("x")
        );
        assert_eq!(
            linear_fit(&[1.0], &[2.0]).unwrap_err(),
            StatsError::TooFew { need: 2, got: 1 }
        );
        assert_eq!(
            linear_fit(&[1.0, 2.0], &[2.0]).unwrap_err(),
            StatsError::Length(2, 1)
        );
    }

    #[test]
    fn pearson_matches_closed_form() {
        // r = 0.6 (sxy = 3, sxx = syy = 5); with 2 degrees of freedom the two-sided p-value
        // is 1 - t / sqrt(2 + t^2) = 1 - r = 0.4 exactly (scipy.stats.pearsonr agrees).
        let c = pearson(&[1.0, 2.0, 3.0, 4.0], &[2.0, 1.0, 4.0, 3.0]).unwrap();
        assert!(
            (c.r - 0.6).abs() < 1e-12 && (c.p_value - 0.4).abs() < 1e-12,
            "{c:?}"
        );
        assert_eq!(c.n, 4);
        let perfect = pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap();
        assert_eq!((perfect.r, perfect.p_value), (-1.0, 0.0));
        assert_eq!(
            pearson(&[1.0, 2.0, 3.0], &[1.0, 1.0, 1.0]).unwrap_err(),
            StatsError::Constant("y")
        );
    }

    #[test]
    fn fitted_line_matches_numpy_polyfit() {
        // numpy.polyfit([0.1, 0.2, 0.3, 0.4], [0.12, 0.11, 0.14, 0.13], 1)
        //   = [0.06, 0.11] (slope, intercept)
        let f = linear_fit(&[0.1, 0.2, 0.3, 0.4], &[0.12, 0.11, 0.14, 0.13]).unwrap();
        assert!((f.slope - 0.06).abs() < 1e-12, "{f:?}");
        assert!((f.intercept - 0.11).abs() < 1e-12, "{f:?}");
        assert!((f.at(0.5) - 0.14).abs() < 1e-12);
    }
}
