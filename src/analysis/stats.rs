//! Correlations, intervals and tests for comparing runs: Pearson and Spearman with two-sided
//! p-values, Fisher-z and seeded bootstrap intervals, Holm and Benjamini-Hochberg adjustments,
//! Welch and paired t-tests, and group-by helpers over polars frames.
//!
//! Every function checks its input and returns [`StatsError`] rather than NaN: too few
//! points, lengths that disagree, non-finite values, or a constant series (undefined r).
//! p-values match `scipy.stats` (`pearsonr`, `spearmanr`, `ttest_ind(equal_var=False)`,
//! `ttest_rel`); see `tests/analysis_stats.rs` and `scripts/python/analysis_fixtures.py`.

use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

use crate::runs::frames::f64_column;

/// Why a statistic could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    #[error("need at least {need} points, got {got}")]
    TooFew { need: usize, got: usize },
    #[error("x has {0} values but y has {1}")]
    Length(usize, usize),
    #[error("{0} contains a non-finite value (NaN or infinity)")]
    NonFinite(&'static str),
    #[error("{0} is constant: the statistic is undefined")]
    Constant(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("frame: {0}")]
    Frame(String),
}

impl From<PolarsError> for StatsError {
    fn from(e: PolarsError) -> Self {
        StatsError::Frame(e.to_string())
    }
}

/// A closed interval `[low, high]` at a confidence `level`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    pub level: f64,
}

/// A correlation coefficient with its two-sided p-value (H0: no correlation) and the
/// Fisher-z confidence interval at 95%.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Correlation {
    pub r: f64,
    pub p_value: f64,
    pub n: usize,
    pub ci95: Interval,
}

fn check_pair(x: &[f64], y: &[f64], need: usize) -> Result<(), StatsError> {
    if x.len() != y.len() {
        return Err(StatsError::Length(x.len(), y.len()));
    }
    if x.len() < need {
        return Err(StatsError::TooFew { need, got: x.len() });
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(StatsError::NonFinite("x"));
    }
    if y.iter().any(|v| !v.is_finite()) {
        return Err(StatsError::NonFinite("y"));
    }
    Ok(())
}

pub(crate) fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Sample variance (n - 1 in the denominator).
fn variance(x: &[f64]) -> f64 {
    let m = mean(x);
    x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() as f64 - 1.0)
}

/// Pearson r of already-checked data; `None` when either series is constant.
fn pearson_r(x: &[f64], y: &[f64]) -> Option<f64> {
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return None;
    }
    // One square root of the product: exact ±1 for perfectly linear data (as scipy).
    Some((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// Two-sided p-value of r under H0 (t = r sqrt((n-2)/(1-r²)), Student t with n-2 df).
fn correlation_p(r: f64, n: usize) -> f64 {
    if r.abs() >= 1.0 {
        return 0.0;
    }
    let df = n as f64 - 2.0;
    let t = r * (df / (1.0 - r * r)).sqrt();
    two_sided_t(t, df)
}

fn two_sided_t(t: f64, df: f64) -> f64 {
    let dist = StudentsT::new(0.0, 1.0, df).expect("df > 0 checked by callers");
    (2.0 * dist.cdf(-t.abs())).clamp(0.0, 1.0)
}

/// Fisher-z confidence interval of a correlation `r` from `n` points (needs n > 3):
/// `tanh(atanh(r) ± z_{(1+level)/2} / sqrt(n-3))`, as scipy's `confidence_interval()`.
pub fn fisher_z_interval(r: f64, n: usize, level: f64) -> Result<Interval, StatsError> {
    if n <= 3 {
        return Err(StatsError::TooFew { need: 4, got: n });
    }
    if !(0.0..1.0).contains(&level) || level <= 0.0 {
        return Err(StatsError::Invalid(format!(
            "level {level} must be in (0, 1)"
        )));
    }
    let z = r.clamp(-1.0, 1.0).atanh();
    let se = 1.0 / (n as f64 - 3.0).sqrt();
    let q = Normal::standard().inverse_cdf(0.5 + level / 2.0);
    Ok(Interval {
        low: (z - q * se).tanh(),
        high: (z + q * se).tanh(),
        level,
    })
}

fn correlation_from_r(r: f64, n: usize) -> Correlation {
    let ci95 = if n > 3 {
        fisher_z_interval(r, n, 0.95).expect("n > 3")
    } else {
        Interval {
            low: -1.0,
            high: 1.0,
            level: 0.95,
        }
    };
    Correlation {
        r,
        p_value: correlation_p(r, n),
        n,
        ci95,
    }
}

/// Pearson correlation with its two-sided p-value (scipy `pearsonr`) and Fisher-z 95% CI.
///
/// ```
/// use cdsr_lab::analysis::stats::pearson;
/// let c = pearson(&[1.0, 2.0, 3.0, 4.0], &[2.0, 4.0, 5.0, 9.0]).unwrap();
/// assert!((c.r - 0.9647638212377322).abs() < 1e-12); // scipy.stats.pearsonr
/// ```
pub fn pearson(x: &[f64], y: &[f64]) -> Result<Correlation, StatsError> {
    check_pair(x, y, 3)?;
    let r = pearson_r(x, y).ok_or(if mean_abs_dev(x) == 0.0 {
        StatsError::Constant("x")
    } else {
        StatsError::Constant("y")
    })?;
    Ok(correlation_from_r(r, x.len()))
}

fn mean_abs_dev(x: &[f64]) -> f64 {
    let m = mean(x);
    x.iter().map(|v| (v - m).abs()).sum()
}

/// Ranks 1..=n with ties given their average rank (scipy `rankdata(method="average")`).
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = avg;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman rank correlation (average ranks for ties) with the two-sided p-value of
/// scipy `spearmanr` (t with n-2 df) and the Fisher-z 95% CI of the rank correlation.
pub fn spearman(x: &[f64], y: &[f64]) -> Result<Correlation, StatsError> {
    check_pair(x, y, 3)?;
    pearson(&average_ranks(x), &average_ranks(y))
}

/// A seeded percentile bootstrap interval of any paired statistic: resample `(x_i, y_i)` pairs
/// with replacement `resamples` times (ChaCha8 from `seed`, so results are reproducible);
/// resamples where the statistic is not finite (e.g. a constant resample) are dropped and
/// counted in the result.
pub fn bootstrap_interval(
    x: &[f64],
    y: &[f64],
    statistic: impl Fn(&[f64], &[f64]) -> Option<f64> + Sync,
    resamples: usize,
    level: f64,
    seed: u64,
) -> Result<Bootstrap, StatsError> {
    check_pair(x, y, 2)?;
    let n = x.len();
    let estimate = statistic(x, y).unwrap_or(f64::NAN);
    bootstrap_resamples(
        n,
        resamples,
        level,
        seed,
        estimate,
        || (vec![0.0; n], vec![0.0; n]),
        |(xs, ys), draws| {
            for (k, &j) in draws.iter().enumerate() {
                xs[k] = x[j];
                ys[k] = y[j];
            }
            statistic(xs, ys)
        },
    )
}

/// Percentile bootstrap interval of Spearman's rho, the same resamples (and so the same
/// interval, up to rounding) as [`bootstrap_interval`] with [`spearman`] as the statistic.
/// Each resample is ranked in O(n) from the full sample's sorted order (a resample holds each
/// case some number of times, and its ranks follow from those counts), instead of sorting
/// every resample: on tens of thousands of cases this is most of the per-case analysis.
pub fn bootstrap_spearman(
    x: &[f64],
    y: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Result<Bootstrap, StatsError> {
    check_pair(x, y, 2)?;
    let n = x.len();
    let estimate = spearman(x, y).map(|c| c.r).unwrap_or(f64::NAN);
    let (tx, ty) = (TieGroups::new(x), TieGroups::new(y));
    bootstrap_resamples(
        n,
        resamples,
        level,
        seed,
        estimate,
        || (vec![0u32; n], vec![0.0; n], vec![0.0; n]),
        |(counts, rx, ry), draws| {
            counts.fill(0);
            for &j in draws {
                counts[j] += 1;
            }
            // One occupied tie group: that variable is constant in the resample.
            if tx.resample_ranks(counts, rx) < 2 || ty.resample_ranks(counts, ry) < 2 {
                return None;
            }
            weighted_pearson_r(counts, rx, ry)
        },
    )
}

/// The cases in ascending order of one variable, in groups of equal values.
struct TieGroups {
    order: Vec<usize>,
    /// Group g is `order[starts[g]..starts[g + 1]]`.
    starts: Vec<usize>,
}

impl TieGroups {
    fn new(x: &[f64]) -> Self {
        let mut order: Vec<usize> = (0..x.len()).collect();
        order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
        let mut starts = vec![0];
        for k in 1..order.len() {
            if x[order[k]] != x[order[k - 1]] {
                starts.push(k);
            }
        }
        starts.push(order.len());
        Self { order, starts }
    }

    /// Average ranks (1-based, ties averaged) within the resample that holds case j
    /// `counts[j]` times, written to `ranks[j]` for the cases it holds; returns the number of
    /// distinct values the resample holds.
    fn resample_ranks(&self, counts: &[u32], ranks: &mut [f64]) -> usize {
        let mut below = 0u64;
        let mut distinct = 0;
        for g in self.starts.windows(2) {
            let members = &self.order[g[0]..g[1]];
            let m: u64 = members.iter().map(|&j| counts[j] as u64).sum();
            if m == 0 {
                continue;
            }
            let avg = below as f64 + (m as f64 + 1.0) / 2.0;
            for &j in members {
                ranks[j] = avg;
            }
            below += m;
            distinct += 1;
        }
        distinct
    }
}

/// Pearson's r of the sample that holds (x_j, y_j) `w[j]` times (None when either is constant).
/// Entries with weight 0 only need to be finite: they add 0 (no branch, so the loops vectorise).
fn weighted_pearson_r(w: &[u32], x: &[f64], y: &[f64]) -> Option<f64> {
    let (mut sw, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for ((&wj, &xj), &yj) in w.iter().zip(x).zip(y) {
        let wj = wj as f64;
        sw += wj;
        sx += wj * xj;
        sy += wj * yj;
    }
    let (mx, my) = (sx / sw, sy / sw);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for ((&wj, &xj), &yj) in w.iter().zip(x).zip(y) {
        let wj = wj as f64;
        let (dx, dy) = (xj - mx, yj - my);
        sxy += wj * dx * dy;
        sxx += wj * dx * dx;
        syy += wj * dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return None;
    }
    Some((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// The resampling behind every bootstrap here: `resamples` draws of n indices with replacement,
/// `statistic(scratch, draws)` on each, the percentile interval at `level` of the finite values.
fn bootstrap_resamples<S>(
    n: usize,
    resamples: usize,
    level: f64,
    seed: u64,
    estimate: f64,
    scratch: impl Fn() -> S + Sync,
    statistic: impl Fn(&mut S, &[usize]) -> Option<f64> + Sync,
) -> Result<Bootstrap, StatsError> {
    if resamples == 0 || !(level > 0.0 && level < 1.0) {
        return Err(StatsError::Invalid(format!(
            "need resamples > 0 and 0 < level < 1, got {resamples} and {level}"
        )));
    }
    // Resamples are split into fixed blocks, each with its own stream of one seeded RNG, so
    // the result does not depend on the number of threads.
    const BLOCK: usize = 256;
    let stats: Vec<Option<f64>> = (0..resamples.div_ceil(BLOCK))
        .into_par_iter()
        .flat_map_iter(|blk| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(blk as u64);
            let count = BLOCK.min(resamples - blk * BLOCK);
            let mut draws = vec![0usize; n];
            let mut state = scratch();
            let statistic = &statistic;
            (0..count)
                .map(move |_| {
                    for d in draws.iter_mut() {
                        *d = rng.random_range(0..n);
                    }
                    statistic(&mut state, &draws).filter(|v| v.is_finite())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut values: Vec<f64> = stats.iter().flatten().copied().collect();
    let dropped = resamples - values.len();
    if values.is_empty() {
        return Err(StatsError::Invalid(
            "the statistic was undefined on every resample".into(),
        ));
    }
    values.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    Ok(Bootstrap {
        interval: Interval {
            low: percentile(&values, alpha),
            high: percentile(&values, 1.0 - alpha),
            level,
        },
        estimate,
        resamples: values.len(),
        dropped,
    })
}

/// Linear-interpolated percentile of sorted data (numpy's default "linear" method).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Result of [`bootstrap_interval`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bootstrap {
    pub interval: Interval,
    /// The statistic on the full data.
    pub estimate: f64,
    /// Resamples used, and those dropped because the statistic was undefined on them.
    pub resamples: usize,
    pub dropped: usize,
}

/// Percentile bootstrap interval of Pearson's r (see [`bootstrap_interval`]).
pub fn bootstrap_pearson(
    x: &[f64],
    y: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Result<Bootstrap, StatsError> {
    bootstrap_interval(x, y, pearson_r, resamples, level, seed)
}

/// Holm step-down adjusted p-values (family-wise error), in the input order.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut idx: Vec<usize> = (0..m).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut out = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in idx.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

/// Benjamini-Hochberg adjusted p-values (false discovery rate), in the input order.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut idx: Vec<usize> = (0..m).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut out = vec![0.0; m];
    let mut running: f64 = 1.0;
    for (rank, &i) in idx.iter().enumerate().rev() {
        running = running.min(p[i] * m as f64 / (rank + 1) as f64).min(1.0);
        out[i] = running;
    }
    out
}

/// A t-test result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TTest {
    pub t: f64,
    pub df: f64,
    pub p_value: f64,
    /// mean(a) - mean(b) (for the paired test: the mean difference).
    pub mean_difference: f64,
}

/// Welch's unequal-variance t-test of mean(a) = mean(b) (scipy `ttest_ind(equal_var=False)`).
pub fn welch_t(a: &[f64], b: &[f64]) -> Result<TTest, StatsError> {
    for (name, v) in [("a", a), ("b", b)] {
        if v.len() < 2 {
            return Err(StatsError::TooFew {
                need: 2,
                got: v.len(),
            });
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(StatsError::NonFinite(name));
        }
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (va, vb) = (variance(a) / na, variance(b) / nb);
    if va + vb == 0.0 {
        return Err(StatsError::Constant("a and b"));
    }
    let diff = mean(a) - mean(b);
    let t = diff / (va + vb).sqrt();
    let df = (va + vb).powi(2) / (va * va / (na - 1.0) + vb * vb / (nb - 1.0));
    Ok(TTest {
        t,
        df,
        p_value: two_sided_t(t, df),
        mean_difference: diff,
    })
}

/// Paired t-test of mean(a - b) = 0, e.g. the same seeds with and without GCA
/// (scipy `ttest_rel`).
pub fn paired_t(a: &[f64], b: &[f64]) -> Result<TTest, StatsError> {
    check_pair(a, b, 2)?;
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len() as f64;
    let sd = variance(&d).sqrt();
    if sd == 0.0 {
        return Err(StatsError::Constant("a - b"));
    }
    let md = mean(&d);
    let t = md / (sd / n.sqrt());
    Ok(TTest {
        t,
        df: n - 1.0,
        p_value: two_sided_t(t, n - 1.0),
        mean_difference: md,
    })
}

/// Which correlation [`correlation_by_group`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Pearson,
    Spearman,
}

/// Values of a column as display strings (for group keys; nulls become `"null"`).
pub fn column_keys(df: &DataFrame, name: &str) -> Result<Vec<String>, StatsError> {
    let s = crate::runs::frames::column(df, name)?
        .as_materialized_series()
        .cast(&DataType::String)?;
    Ok(s.str()?
        .iter()
        .map(|v| v.unwrap_or("null").to_owned())
        .collect())
}

/// Groups as (key values, row indices).
pub type Groups = Vec<(Vec<String>, Vec<usize>)>;

/// Row indices of each group of `by` columns, in order of first appearance.
pub fn group_rows(df: &DataFrame, by: &[&str]) -> Result<Groups, StatsError> {
    let keys: Vec<Vec<String>> = by
        .iter()
        .map(|c| column_keys(df, c))
        .collect::<Result<_, _>>()?;
    let mut order: Groups = Vec::new();
    let mut index: std::collections::HashMap<Vec<String>, usize> = Default::default();
    for row in 0..df.height() {
        let key: Vec<String> = keys.iter().map(|k| k[row].clone()).collect();
        let slot = *index.entry(key.clone()).or_insert_with(|| {
            order.push((key, Vec::new()));
            order.len() - 1
        });
        order[slot].1.push(row);
    }
    Ok(order)
}

/// Correlation of column `x` with column `y` within each group of `by` (e.g.
/// `["model", "domain"]`). Rows where x or y is missing (null, NaN or infinite:
/// [`crate::runs::frames::f64_column`]) are dropped (counted in `n_dropped`).
/// Output columns: the `by` columns (String), `n` (Int64), `n_dropped` (Int64), `r`,
/// `p_value`, `ci_low`, `ci_high` (Fisher-z 95%), `p_holm`, `p_bh` (adjusted across the
/// groups) — all Float64; groups where r is undefined get nulls and a `note`.
pub fn correlation_by_group(
    df: &DataFrame,
    by: &[&str],
    x: &str,
    y: &str,
    method: Method,
) -> Result<DataFrame, StatsError> {
    let xs = f64_column(df, x)?;
    let ys = f64_column(df, y)?;
    let groups = group_rows(df, by)?;
    let mut key_cols: Vec<Vec<String>> = vec![Vec::new(); by.len()];
    let (mut n, mut dropped) = (Vec::new(), Vec::new());
    let (mut r, mut p, mut lo, mut hi, mut note) = (vec![], vec![], vec![], vec![], vec![]);
    for (key, rows) in &groups {
        for (c, k) in key_cols.iter_mut().zip(key) {
            c.push(k.clone());
        }
        let (gx, gy): (Vec<f64>, Vec<f64>) = rows.iter().filter_map(|&i| xs[i].zip(ys[i])).unzip();
        n.push(gx.len() as i64);
        dropped.push((rows.len() - gx.len()) as i64);
        let res = match method {
            Method::Pearson => pearson(&gx, &gy),
            Method::Spearman => spearman(&gx, &gy),
        };
        match res {
            Ok(c) => {
                r.push(Some(c.r));
                p.push(Some(c.p_value));
                let ci = (c.n > 3).then_some(c.ci95);
                lo.push(ci.map(|i| i.low));
                hi.push(ci.map(|i| i.high));
                note.push(None);
            }
            Err(e) => {
                r.push(None);
                p.push(None);
                lo.push(None);
                hi.push(None);
                note.push(Some(e.to_string()));
            }
        }
    }
    let valid_p: Vec<f64> = p.iter().flatten().copied().collect();
    let (h, bh) = (holm(&valid_p), benjamini_hochberg(&valid_p));
    let (mut p_holm, mut p_bh, mut k) = (Vec::new(), Vec::new(), 0);
    for pv in &p {
        if pv.is_some() {
            p_holm.push(Some(h[k]));
            p_bh.push(Some(bh[k]));
            k += 1;
        } else {
            p_holm.push(None);
            p_bh.push(None);
        }
    }
    let height = groups.len();
    let mut cols: Vec<Column> = by
        .iter()
        .zip(key_cols)
        .map(|(name, vals)| Column::new((*name).into(), vals))
        .collect();
    cols.extend([
        Column::new("n".into(), n),
        Column::new("n_dropped".into(), dropped),
        Column::new("r".into(), r),
        Column::new("p_value".into(), p),
        Column::new("ci_low".into(), lo),
        Column::new("ci_high".into(), hi),
        Column::new("p_holm".into(), p_holm),
        Column::new("p_bh".into(), p_bh),
        Column::new("note".into(), note),
    ]);
    Ok(DataFrame::new(height, cols)?)
}
