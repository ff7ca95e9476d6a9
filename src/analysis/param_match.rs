//! Parameter-matched comparisons: does a model with GCA beat the same baseline scaled up to
//! the same parameter count?
//!
//! - [`LogLinearFit`]: `accuracy = a + b ln(params)` over the baseline family (ordinary least
//!   squares), with the t-based confidence interval of the mean response.
//! - [`param_match`]: for each GCA run, the baseline size with the nearest parameter count
//!   (nearest in `|ln(p_baseline / p_gca)|`; when several baseline runs have that count,
//!   e.g. one per seed, their mean accuracy), the baseline parameters the fit needs to reach
//!   the GCA run's accuracy, `params_needed = exp((acc - a) / b)`, and the paper's
//!   parameter-efficiency ratio `params_needed / params_gca` (> 1: GCA is more
//!   parameter-efficient). Its interval inverts the fit's confidence band (the parameter
//!   counts whose band contains the GCA accuracy, i.e. a calibration interval); it is `None`
//!   when the band does not cross the accuracy within 1e-6..1e6 times the GCA run's count.
//!   Both are `None` when the baselines' accuracy does not grow with their size (slope <= 0):
//!   such a family defines no parameter efficiency (extrapolating a falling line would give
//!   ratios like 1e59).

use polars::prelude::*;
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::stats::{column_keys, Interval, StatsError};
use crate::runs::frames::f64_column;

/// `accuracy = intercept + slope * ln(params)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogLinearFit {
    pub intercept: f64,
    pub slope: f64,
    pub n: usize,
    /// Residual standard error (n - 2 degrees of freedom); 0 for an exact fit.
    pub residual_se: f64,
    pub r_squared: f64,
    mean_log_params: f64,
    sxx: f64,
}

impl LogLinearFit {
    /// Least-squares fit over `(params, accuracy)` points; needs 3 points, positive params,
    /// finite values, and at least two distinct parameter counts.
    pub fn fit(points: &[(f64, f64)]) -> Result<Self, StatsError> {
        if points.len() < 3 {
            return Err(StatsError::TooFew {
                need: 3,
                got: points.len(),
            });
        }
        if points
            .iter()
            .any(|(p, a)| !(p.is_finite() && *p > 0.0 && a.is_finite()))
        {
            return Err(StatsError::Invalid(
                "parameter counts must be positive and accuracies finite".into(),
            ));
        }
        let n = points.len() as f64;
        let lx: Vec<f64> = points.iter().map(|(p, _)| p.ln()).collect();
        let mx = lx.iter().sum::<f64>() / n;
        let my = points.iter().map(|(_, a)| a).sum::<f64>() / n;
        let sxx: f64 = lx.iter().map(|x| (x - mx).powi(2)).sum();
        if sxx == 0.0 {
            return Err(StatsError::Constant("the parameter count"));
        }
        let sxy: f64 = lx
            .iter()
            .zip(points)
            .map(|(x, (_, y))| (x - mx) * (y - my))
            .sum();
        let syy: f64 = points.iter().map(|(_, y)| (y - my).powi(2)).sum();
        let slope = sxy / sxx;
        let intercept = my - slope * mx;
        let sse: f64 = lx
            .iter()
            .zip(points)
            .map(|(x, (_, y))| (y - intercept - slope * x).powi(2))
            .sum();
        Ok(LogLinearFit {
            intercept,
            slope,
            n: points.len(),
            residual_se: (sse / (n - 2.0)).sqrt(),
            r_squared: if syy > 0.0 { 1.0 - sse / syy } else { 1.0 },
            mean_log_params: mx,
            sxx,
        })
    }

    /// The fitted accuracy at `params`.
    pub fn predict(&self, params: f64) -> f64 {
        self.intercept + self.slope * params.ln()
    }

    /// Confidence interval of the mean accuracy at `params`:
    /// `ŷ ± t_{n-2} s sqrt(1/n + (ln p - mean ln p)² / Sxx)`.
    pub fn predict_interval(&self, params: f64, level: f64) -> Interval {
        let half = self.half_width(params.ln(), level);
        let y = self.predict(params);
        Interval {
            low: y - half,
            high: y + half,
            level,
        }
    }

    fn half_width(&self, lx: f64, level: f64) -> f64 {
        let t = StudentsT::new(0.0, 1.0, self.n as f64 - 2.0)
            .expect("n >= 3")
            .inverse_cdf(0.5 + level / 2.0);
        t * self.residual_se
            * (1.0 / self.n as f64 + (lx - self.mean_log_params).powi(2) / self.sxx).sqrt()
    }

    /// The parameter count at which the fit reaches `accuracy`; `None` when accuracy does not
    /// grow with the parameter count (slope <= 0).
    pub fn params_for(&self, accuracy: f64) -> Option<f64> {
        if self.slope <= 0.0 {
            return None;
        }
        let p = ((accuracy - self.intercept) / self.slope).exp();
        p.is_finite().then_some(p)
    }

    /// The calibration interval of the parameter count reaching `accuracy`: the `ln p` where
    /// the confidence band contains `accuracy`, searched in `[ln lo, ln hi]`.
    fn params_interval(&self, accuracy: f64, lo: f64, hi: f64, level: f64) -> Option<(f64, f64)> {
        let center = self.params_for(accuracy)?.ln();
        if !(lo.ln()..=hi.ln()).contains(&center) {
            return None;
        }
        // g(x) = |ŷ(x) - acc| - half(x) is <= 0 inside the set; find its two roots.
        let g =
            |x: f64| (self.intercept + self.slope * x - accuracy).abs() - self.half_width(x, level);
        let root = |mut inside: f64, mut outside: f64| {
            if g(outside) <= 0.0 {
                return None;
            }
            for _ in 0..200 {
                let mid = 0.5 * (inside + outside);
                if g(mid) <= 0.0 {
                    inside = mid;
                } else {
                    outside = mid;
                }
            }
            Some(0.5 * (inside + outside))
        };
        let a = root(center, lo.ln())?;
        let b = root(center, hi.ln())?;
        Some((a.exp(), b.exp()))
    }
}

/// One run's parameter count and accuracy.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamPoint {
    pub run_id: String,
    pub params: f64,
    pub accuracy: f64,
}

/// A GCA run matched against the baseline family.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamMatch {
    pub gca: ParamPoint,
    /// The baseline with the nearest parameter count: the first such run's id, its count,
    /// and the mean accuracy of all baseline runs with that count.
    pub nearest_baseline: ParamPoint,
    /// How many baseline runs (seeds) `nearest_baseline.accuracy` averages.
    pub nearest_baseline_runs: usize,
    /// `gca.accuracy - nearest_baseline.accuracy`.
    pub accuracy_gain: f64,
    /// Baseline parameters the fit needs to reach the GCA run's accuracy.
    pub params_needed: Option<f64>,
    /// `params_needed / gca.params`.
    pub efficiency_ratio: Option<f64>,
    /// Interval of the ratio from the fit's confidence band (see the module doc).
    pub ratio_interval: Option<Interval>,
}

/// Matches each GCA run against the baseline family (see the module doc).
///
/// ```
/// use cdsr_lab::analysis::param_match::{param_match, ParamPoint};
/// let p = |id: &str, params: f64, acc: f64| ParamPoint { run_id: id.into(), params, accuracy: acc };
/// // Baselines exactly on acc = 0.1 ln(p) - 1.3: doubling the parameters adds 0.1 ln 2.
/// let base: Vec<_> = [1e6, 2e6, 4e6, 8e6].iter()
///     .map(|&q| p("b", q, 0.1 * q.ln() - 1.3)).collect();
/// let gca = vec![p("g", 2.5e6, 0.1 * 5e6f64.ln() - 1.3)]; // as accurate as a 5M baseline
/// let m = param_match(&gca, &base, 0.95).unwrap();
/// assert!((m[0].efficiency_ratio.unwrap() - 2.0).abs() < 1e-9);
/// assert_eq!(m[0].nearest_baseline.params, 2e6);
/// ```
pub fn param_match(
    gca: &[ParamPoint],
    baselines: &[ParamPoint],
    level: f64,
) -> Result<Vec<ParamMatch>, StatsError> {
    let pts: Vec<(f64, f64)> = baselines.iter().map(|b| (b.params, b.accuracy)).collect();
    let fit = LogLinearFit::fit(&pts)?;
    gca.iter()
        .map(|g| {
            if !(g.params > 0.0 && g.accuracy.is_finite()) {
                return Err(StatsError::Invalid(format!(
                    "run {}: params must be positive and accuracy finite",
                    g.run_id
                )));
            }
            let first = baselines
                .iter()
                .min_by(|a, b| {
                    let da = (a.params / g.params).ln().abs();
                    let db = (b.params / g.params).ln().abs();
                    da.total_cmp(&db)
                })
                .expect("fit needs >= 3 baselines");
            // The seeds of that size: compare against their mean, not whichever came first.
            let same_size: Vec<f64> = baselines
                .iter()
                .filter(|b| b.params == first.params)
                .map(|b| b.accuracy)
                .collect();
            let nearest = ParamPoint {
                accuracy: super::stats::mean(&same_size),
                ..first.clone()
            };
            let needed = fit.params_for(g.accuracy);
            let ratio_interval = fit
                .params_interval(g.accuracy, g.params * 1e-6, g.params * 1e6, level)
                .map(|(a, b)| Interval {
                    low: a.min(b) / g.params,
                    high: a.max(b) / g.params,
                    level,
                });
            Ok(ParamMatch {
                accuracy_gain: g.accuracy - nearest.accuracy,
                gca: g.clone(),
                nearest_baseline: nearest,
                nearest_baseline_runs: same_size.len(),
                params_needed: needed,
                efficiency_ratio: needed.map(|p| p / g.params),
                ratio_interval,
            })
        })
        .collect()
}

/// [`param_match`] over a runs frame: rows where the Boolean column `is_gca` is true are GCA
/// runs, the others baselines; `params` and `accuracy` name numeric columns (e.g.
/// `params.total`, `test.A.ndcg@10`); matching is done separately within each group of `by`
/// (e.g. `["dataset"]`). Output: the `by` columns, `run_id`, `params`, `accuracy`,
/// `baseline_run_id`, `baseline_params`, `baseline_accuracy` (mean over `baseline_runs` runs
/// of that size), `baseline_runs`, `accuracy_gain`,
/// `params_needed`, `efficiency_ratio`, `ratio_low`, `ratio_high`, and the fit's `slope`,
/// `intercept`, `r_squared`, `n_baselines`.
pub fn param_match_frame(
    df: &DataFrame,
    by: &[&str],
    is_gca: &str,
    params: &str,
    accuracy: &str,
    level: f64,
) -> Result<DataFrame, StatsError> {
    let flag: Vec<Option<bool>> = crate::runs::frames::column(df, is_gca)?
        .as_materialized_series()
        .cast(&DataType::Boolean)?
        .bool()?
        .iter()
        .collect();
    let p = f64_column(df, params)?;
    let a = f64_column(df, accuracy)?;
    let ids = column_keys(df, "run_id")?;
    let groups = super::stats::group_rows(df, by)?;
    let mut keys: Vec<Vec<String>> = vec![Vec::new(); by.len()];
    let mut out: Vec<(ParamMatch, LogLinearFit)> = Vec::new();
    for (key, rows) in groups {
        // A GCA run's missing value enters as NaN: `param_match` rejects it, naming the run.
        let point = |i: usize| ParamPoint {
            run_id: ids[i].clone(),
            params: p[i].unwrap_or(f64::NAN),
            accuracy: a[i].unwrap_or(f64::NAN),
        };
        let g: Vec<ParamPoint> = rows
            .iter()
            .filter(|&&i| flag[i] == Some(true))
            .map(|&i| point(i))
            .collect();
        let b: Vec<ParamPoint> = rows
            .iter()
            .filter(|&&i| flag[i] == Some(false) && p[i].is_some() && a[i].is_some())
            .map(|&i| point(i))
            .collect();
        if g.is_empty() {
            continue;
        }
        let fit = LogLinearFit::fit(&b.iter().map(|x| (x.params, x.accuracy)).collect::<Vec<_>>())
            .map_err(|e| StatsError::Invalid(format!("group {key:?}: baseline fit: {e}")))?;
        for m in param_match(&g, &b, level)? {
            for (c, k) in keys.iter_mut().zip(&key) {
                c.push(k.clone());
            }
            out.push((m, fit));
        }
    }
    let mut cols: Vec<Column> = by
        .iter()
        .zip(keys)
        .map(|(n, v)| Column::new((*n).into(), v))
        .collect();
    macro_rules! col {
        ($name:expr, $f:expr) => {
            cols.push(Column::new(
                $name.into(),
                out.iter().map($f).collect::<Vec<_>>(),
            ))
        };
    }
    col!("run_id", |(m, _)| m.gca.run_id.clone());
    col!("params", |(m, _)| m.gca.params);
    col!("accuracy", |(m, _)| m.gca.accuracy);
    col!("baseline_run_id", |(m, _)| m
        .nearest_baseline
        .run_id
        .clone());
    col!("baseline_params", |(m, _)| m.nearest_baseline.params);
    col!("baseline_accuracy", |(m, _)| m.nearest_baseline.accuracy);
    col!("baseline_runs", |(m, _)| m.nearest_baseline_runs as i64);
    col!("accuracy_gain", |(m, _)| m.accuracy_gain);
    col!("params_needed", |(m, _)| m.params_needed);
    col!("efficiency_ratio", |(m, _)| m.efficiency_ratio);
    col!("ratio_low", |(m, _)| m.ratio_interval.map(|i| i.low));
    col!("ratio_high", |(m, _)| m.ratio_interval.map(|i| i.high));
    col!("slope", |(_, f)| f.slope);
    col!("intercept", |(_, f)| f.intercept);
    col!("r_squared", |(_, f)| f.r_squared);
    col!("n_baselines", |(_, f)| f.n as i64);
    Ok(DataFrame::new(out.len(), cols)?)
}
