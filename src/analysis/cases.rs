//! Orthogonality case by case: each test case's `|cos(X, X')|` at its scored position against
//! whether the run ranked the case's target in its top 10 (hit@10) and its reciprocal rank.
//!
//! The paper correlates run means (one point per run); this module asks the same question
//! within runs, where width, gate and seed are held fixed.
//!
//! - Input: the trainer writes, for a run with GCA, one column `abs_cos@P` per GCA position `P`
//!   in `test_cases.parquet`: the |cos| between the query input `X` and the cross-attention
//!   output `X'` (as the gate reads it) of the module of the case's target domain, at the last
//!   (scored) position; null where that position is padding or either row is zero (no
//!   cross-domain key), since the cosine is undefined there. [`case_cos_frame`] gathers them.
//! - [`case_cos_association`]: the point-biserial correlation of |cos| with hit@10 (Pearson
//!   with a 0/1 variable, p-value as scipy's `pointbiserialr`), Spearman's rho of |cos| with the
//!   reciprocal rank, each with a seeded percentile bootstrap interval over cases
//!   ([`crate::analysis::stats::bootstrap_pearson`], [`crate::analysis::stats::bootstrap_spearman`]), and a logistic fit of hit@10 on |cos| with
//!   the run as a grouping factor ([`logistic_with_group_intercepts`]: one intercept per run,
//!   so the slope is the within-run association).
//! - [`case_cos_by_group`]: the same per group of a [`case_cos_frame`] (e.g. per setting and
//!   domain), as a frame.

use std::collections::HashMap;

use polars::prelude::*;
use statrs::distribution::{ContinuousCDF, Normal};

use super::stats::{
    bootstrap_pearson, bootstrap_spearman, column_keys, group_rows, pearson, spearman, Bootstrap,
    Correlation, Interval, StatsError,
};
use super::study::RunLabels;
use crate::runs::frames::{bool_column, f64_column};
use crate::runs::{LoadReport, RunSet};

pub use crate::runs::ABS_COS_PREFIX;

/// A logistic regression of a binary outcome on one covariate with one intercept per group:
/// `logit P(y = 1) = alpha_group + slope * x`, fitted by Newton's method (maximum likelihood).
///
/// Groups whose outcomes are all 0 or all 1 carry no information on the slope (their intercept
/// diverges) and are left out, counted in `groups_dropped`. The standard error is the inverse
/// observed information of the slope with the intercepts profiled out; the interval and p-value
/// are Wald's (normal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupedLogistic {
    /// Change in the log-odds of `y` per unit of `x`.
    pub slope: f64,
    pub se: f64,
    pub z: f64,
    pub p_value: f64,
    pub ci95: Interval,
    /// Observations and groups used.
    pub n: usize,
    pub groups: usize,
    pub groups_dropped: usize,
    pub iterations: usize,
}

/// `log(1 + e^eta)` without overflow.
fn softplus(eta: f64) -> f64 {
    if eta > 0.0 {
        eta + (-eta).exp().ln_1p()
    } else {
        eta.exp().ln_1p()
    }
}

fn sigmoid(eta: f64) -> f64 {
    1.0 / (1.0 + (-eta).exp())
}

/// Fits [`GroupedLogistic`] to `x`, `y` and group labels `group` (any integers).
///
/// With a single group and a 0/1 covariate the slope is the log odds ratio of the 2x2 table
/// and its standard error `sqrt(1/a + 1/b + 1/c + 1/d)`:
/// ```
/// use cdsr_lab::analysis::cases::logistic_with_group_intercepts;
/// // x = 1: 30 hits, 10 misses; x = 0: 20 hits, 40 misses.
/// let mut x = Vec::new();
/// let mut y = Vec::new();
/// for (xv, hits, misses) in [(1.0, 30, 10), (0.0, 20, 40)] {
///     x.extend(std::iter::repeat(xv).take(hits + misses));
///     y.extend((0..hits + misses).map(|i| i < hits));
/// }
/// let fit = logistic_with_group_intercepts(&x, &y, &vec![0; x.len()]).unwrap();
/// let log_or = ((30.0 * 40.0) / (10.0 * 20.0f64)).ln();
/// assert!((fit.slope - log_or).abs() < 1e-9);
/// let se = (1.0 / 30.0 + 1.0 / 10.0 + 1.0 / 20.0 + 1.0 / 40.0f64).sqrt();
/// assert!((fit.se - se).abs() < 1e-9);
/// ```
pub fn logistic_with_group_intercepts(
    x: &[f64],
    y: &[bool],
    group: &[usize],
) -> Result<GroupedLogistic, StatsError> {
    if x.len() != y.len() || x.len() != group.len() {
        return Err(StatsError::Invalid(format!(
            "x, y and group have {}, {} and {} values",
            x.len(),
            y.len(),
            group.len()
        )));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(StatsError::NonFinite("x"));
    }
    // Compact group indices; keep the groups with both outcomes.
    let mut index: HashMap<usize, usize> = HashMap::new();
    let g: Vec<usize> = group
        .iter()
        .map(|k| {
            let next = index.len();
            *index.entry(*k).or_insert(next)
        })
        .collect();
    let n_groups = index.len();
    let (mut count, mut hits) = (vec![0usize; n_groups], vec![0usize; n_groups]);
    for (&gi, &yi) in g.iter().zip(y) {
        count[gi] += 1;
        hits[gi] += yi as usize;
    }
    let informative: Vec<bool> = (0..n_groups)
        .map(|k| hits[k] > 0 && hits[k] < count[k])
        .collect();
    let rows: Vec<usize> = (0..x.len()).filter(|&i| informative[g[i]]).collect();
    let groups = informative.iter().filter(|&&k| k).count();
    if rows.len() < groups + 2 {
        return Err(StatsError::TooFew {
            need: groups + 2,
            got: rows.len(),
        });
    }
    let mut alpha: Vec<f64> = (0..n_groups)
        .map(|k| {
            let p = hits[k] as f64 / count[k] as f64;
            if informative[k] {
                (p / (1.0 - p)).ln()
            } else {
                0.0
            }
        })
        .collect();
    let mut slope = 0.0;
    let log_lik = |slope: f64, alpha: &[f64]| -> f64 {
        rows.iter()
            .map(|&i| {
                let eta = alpha[g[i]] + slope * x[i];
                (if y[i] { eta } else { 0.0 }) - softplus(eta)
            })
            .sum()
    };
    // Score and information at (slope, alpha): the slope's gradient and information, and per
    // group the intercept's gradient, information and cross term with the slope.
    struct Newton {
        g_slope: f64,
        i_slope: f64,
        g_alpha: Vec<f64>,
        i_alpha: Vec<f64>,
        cross: Vec<f64>,
    }
    let newton = |slope: f64, alpha: &[f64]| -> Newton {
        let mut s = Newton {
            g_slope: 0.0,
            i_slope: 0.0,
            g_alpha: vec![0.0; n_groups],
            i_alpha: vec![0.0; n_groups],
            cross: vec![0.0; n_groups],
        };
        for &i in &rows {
            let p = sigmoid(alpha[g[i]] + slope * x[i]);
            let (r, w) = (y[i] as u8 as f64 - p, p * (1.0 - p));
            s.g_slope += r * x[i];
            s.i_slope += w * x[i] * x[i];
            s.g_alpha[g[i]] += r;
            s.i_alpha[g[i]] += w;
            s.cross[g[i]] += w * x[i];
        }
        s
    };
    // The slope's information with the intercepts profiled out (Schur complement).
    let schur = |s: &Newton| -> f64 {
        s.i_slope
            - (0..n_groups)
                .filter(|&k| informative[k])
                .map(|k| s.cross[k] * s.cross[k] / s.i_alpha[k])
                .sum::<f64>()
    };
    let mut ll = log_lik(slope, &alpha);
    let mut iterations = 0;
    loop {
        iterations += 1;
        let s = newton(slope, &alpha);
        let info = schur(&s);
        if info <= 1e-12 * s.i_slope.max(f64::MIN_POSITIVE) {
            return Err(StatsError::Constant("x within the groups"));
        }
        let adjusted: f64 = (0..n_groups)
            .filter(|&k| informative[k])
            .map(|k| s.cross[k] * s.g_alpha[k] / s.i_alpha[k])
            .sum();
        let d_slope = (s.g_slope - adjusted) / info;
        let d_alpha: Vec<f64> = (0..n_groups)
            .map(|k| {
                if informative[k] {
                    (s.g_alpha[k] - s.cross[k] * d_slope) / s.i_alpha[k]
                } else {
                    0.0
                }
            })
            .collect();
        // Step halving keeps the likelihood from falling (Newton overshoots far from the
        // optimum).
        let mut step = 1.0;
        let mut next_slope;
        let mut next_alpha: Vec<f64>;
        let mut next_ll;
        loop {
            next_slope = slope + step * d_slope;
            next_alpha = alpha
                .iter()
                .zip(&d_alpha)
                .map(|(a, d)| a + step * d)
                .collect();
            next_ll = log_lik(next_slope, &next_alpha);
            if next_ll >= ll - 1e-12 * ll.abs() || step < 1e-6 {
                break;
            }
            step /= 2.0;
        }
        let moved = (step * d_slope)
            .abs()
            .max(d_alpha.iter().fold(0.0f64, |m, d| m.max((step * d).abs())));
        slope = next_slope;
        alpha = next_alpha;
        ll = next_ll;
        if moved < 1e-10 {
            break;
        }
        if iterations >= 100 {
            return Err(StatsError::Invalid(
                "the logistic fit did not converge in 100 Newton steps".into(),
            ));
        }
    }
    let info = schur(&newton(slope, &alpha));
    let se = 1.0 / info.sqrt();
    let z = slope / se;
    let normal = Normal::standard();
    let q = normal.inverse_cdf(0.975);
    Ok(GroupedLogistic {
        slope,
        se,
        z,
        p_value: (2.0 * normal.cdf(-z.abs())).clamp(0.0, 1.0),
        ci95: Interval {
            low: slope - q * se,
            high: slope + q * se,
            level: 0.95,
        },
        n: rows.len(),
        groups,
        groups_dropped: n_groups - groups,
        iterations,
    })
}

/// The association of per-case |cos| with per-case accuracy (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct CaseCosAssociation {
    /// Pearson's r of |cos| with hit@10 as 0/1 (point-biserial), its t-test p-value and
    /// Fisher-z interval, and its bootstrap interval over cases.
    pub point_biserial: Correlation,
    pub point_biserial_bootstrap: Bootstrap,
    /// Spearman's rho of |cos| with the reciprocal rank, and its bootstrap interval.
    pub rank: Correlation,
    pub rank_bootstrap: Bootstrap,
    /// hit@10 on |cos| with one intercept per run.
    pub logistic: GroupedLogistic,
}

/// Computes [`CaseCosAssociation`] of cases with `abs_cos`, `hit`, reciprocal rank `rr` and run
/// label `run`; bootstrap intervals at 95% from `resamples` seeded resamples of the cases.
pub fn case_cos_association(
    abs_cos: &[f64],
    hit: &[bool],
    rr: &[f64],
    run: &[usize],
    resamples: usize,
    seed: u64,
) -> Result<CaseCosAssociation, StatsError> {
    let h: Vec<f64> = hit.iter().map(|&b| b as u8 as f64).collect();
    let point_biserial = pearson(abs_cos, &h)?;
    let point_biserial_bootstrap = bootstrap_pearson(abs_cos, &h, resamples, 0.95, seed)?;
    let rank = spearman(abs_cos, rr)?;
    let rank_bootstrap = bootstrap_spearman(abs_cos, rr, resamples, 0.95, seed)?;
    let logistic = logistic_with_group_intercepts(abs_cos, hit, run)?;
    Ok(CaseCosAssociation {
        point_biserial,
        point_biserial_bootstrap,
        rank,
        rank_bootstrap,
        logistic,
    })
}

/// One row per test case and GCA position of every GCA run in `set` that recorded per-case
/// |cos| (see the module doc), with a defined |cos|. Columns: `run_id`, `setting` (the study
/// frame's label), `d_model` (Int64, nullable), `seed` (Int64), `domain`, `position` (Int64,
/// the GCA position), `sample` (Int64), `abs_cos` (Float64), `hit@10` (Boolean), `rr`
/// (Float64, 1 / rank). Runs without GCA, without `test_cases.parquet` or without the
/// `abs_cos@P` columns (trained before the trainer recorded them) contribute no rows; runs whose
/// `test_cases.parquet` cannot be read are in the returned report with the reason.
pub fn case_cos_frame(set: &RunSet) -> Result<(DataFrame, LoadReport), StatsError> {
    let mut report = LoadReport::default();
    let mut run_id = Vec::new();
    let mut setting = Vec::new();
    let mut d_model = Vec::new();
    let mut seed = Vec::new();
    let mut domain = Vec::new();
    let mut position = Vec::new();
    let mut sample = Vec::new();
    let mut abs_cos = Vec::new();
    let mut hit = Vec::new();
    let mut rr = Vec::new();
    for run in &set.runs {
        let m = &run.manifest;
        let labels = RunLabels::of(m);
        if labels.positions.is_empty() {
            continue;
        }
        if !run.dir.join(crate::runs::TEST_CASES_PARQUET).exists() {
            continue;
        }
        let cases = match super::attention::read_test_cases(&run.dir) {
            Ok(c) => c,
            Err(e) => {
                report.skipped.push((run.dir.clone(), e.to_string()));
                continue;
            }
        };
        let recorded = labels
            .positions
            .iter()
            .all(|p| cases.column(&format!("{ABS_COS_PREFIX}{p}")).is_ok());
        if !recorded {
            continue;
        }
        let samples = f64_column(&cases, "sample")?;
        let domains = column_keys(&cases, "domain")?;
        let ranks = f64_column(&cases, "rank")?;
        let hits = bool_column(&cases, "hit@10")?;
        let d = m.config_view().model.d_model.map(|x| x as i64);
        for &p in &labels.positions {
            let cos = f64_column(&cases, &format!("{ABS_COS_PREFIX}{p}"))?;
            for i in 0..cases.height() {
                let (Some(c), Some(rank), Some(s)) =
                    (cos[i], ranks[i].filter(|&r| r >= 1.0), samples[i])
                else {
                    continue;
                };
                run_id.push(m.run_id.clone());
                setting.push(labels.setting.clone());
                d_model.push(d);
                seed.push(m.seed as i64);
                domain.push(domains[i].clone());
                position.push(p as i64);
                sample.push(s as i64);
                abs_cos.push(c);
                hit.push(hits[i] == Some(true));
                rr.push(1.0 / rank);
            }
        }
    }
    let height = run_id.len();
    let df = DataFrame::new(
        height,
        vec![
            Column::new("run_id".into(), run_id),
            Column::new("setting".into(), setting),
            Column::new("d_model".into(), d_model),
            Column::new("seed".into(), seed),
            Column::new("domain".into(), domain),
            Column::new("position".into(), position),
            Column::new("sample".into(), sample),
            Column::new("abs_cos".into(), abs_cos),
            Column::new("hit@10".into(), hit),
            Column::new("rr".into(), rr),
        ],
    )?;
    Ok((df, report))
}

/// A [`case_cos_by_group`] table as text, one line per group: its key, the test cases and runs,
/// then each statistic with its 95% interval and p-value (`-` where it is null, the note
/// saying why), so the command line shows every column of the table at any terminal width.
pub fn case_cos_text(table: &DataFrame, by: &[&str]) -> Result<String, StatsError> {
    use std::fmt::Write;
    let keys: Vec<Vec<String>> = by
        .iter()
        .map(|c| column_keys(table, c))
        .collect::<Result<_, _>>()?;
    let counts = |c: &str| column_keys(table, c);
    let (n, runs, note) = (counts("n")?, counts("runs")?, counts("note")?);
    let f = |c: &str| f64_column(table, c);
    let stat =
        |v: &[Option<f64>], lo: &[Option<f64>], hi: &[Option<f64>], p: &[Option<f64>], i: usize| {
            match (v[i], lo[i], hi[i], p[i]) {
                (Some(v), Some(lo), Some(hi), Some(p)) => {
                    format!("{v:+.3} [{lo:+.3}, {hi:+.3}] p {p:.1e}")
                }
                (Some(v), _, _, Some(p)) => format!("{v:+.3} p {p:.1e}"),
                _ => "-".to_owned(),
            }
        };
    let (pb, pb_lo, pb_hi, p_pb) = (f("r_pb")?, f("r_pb_low")?, f("r_pb_high")?, f("p_pb")?);
    let (rho, rho_lo, rho_hi, p_rho) = (f("rho_rr")?, f("rho_low")?, f("rho_high")?, f("p_rho")?);
    let (lg, lg_lo, lg_hi, p_lg) = (
        f("logit_slope")?,
        f("logit_low")?,
        f("logit_high")?,
        f("p_logit")?,
    );
    let width: Vec<usize> = keys
        .iter()
        .zip(by)
        .map(|(k, c)| {
            k.iter()
                .chain([&(*c).to_owned()])
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let head: Vec<String> = by
        .iter()
        .zip(&width)
        .map(|(c, w)| format!("{c:<w$}"))
        .collect();
    let _ = writeln!(
        out,
        "{}  cases/runs  r_pb(|cos|, hit@10) [95% CI]   rho(|cos|, 1/rank) [95% CI]   logit slope per run [95% CI]",
        head.join("  ")
    );
    for i in 0..table.height() {
        let key: Vec<String> = keys
            .iter()
            .zip(&width)
            .map(|(k, w)| format!("{:<w$}", k[i]))
            .collect();
        let _ = write!(
            out,
            "{}  {:>6}/{:<3}  {:<29}  {:<29}  {}",
            key.join("  "),
            n[i],
            runs[i],
            stat(&pb, &pb_lo, &pb_hi, &p_pb, i),
            stat(&rho, &rho_lo, &rho_hi, &p_rho, i),
            stat(&lg, &lg_lo, &lg_hi, &p_lg, i),
        );
        if note[i] != "null" {
            let _ = write!(out, "  ({})", note[i]);
        }
        out.push('\n');
    }
    Ok(out)
}

/// [`case_cos_association`] within each group of `by` columns of a [`case_cos_frame`] (e.g.
/// `["setting", "d_model", "domain", "position"]`). Output columns: the `by` columns (String),
/// `n`, `runs` (Int64), `r_pb`, `r_pb_low`, `r_pb_high` (bootstrap 95%), `p_pb`, `rho_rr`,
/// `rho_low`, `rho_high`, `p_rho`, `logit_slope`, `logit_se`, `logit_low`, `logit_high`,
/// `p_logit` (Float64), `runs_dropped` (Int64: runs with all hits or all misses), `note`
/// (why a group has nulls).
pub fn case_cos_by_group(
    df: &DataFrame,
    by: &[&str],
    resamples: usize,
    seed: u64,
) -> Result<DataFrame, StatsError> {
    let cos = f64_column(df, "abs_cos")?;
    let hit = bool_column(df, "hit@10")?;
    let rr = f64_column(df, "rr")?;
    let runs = column_keys(df, "run_id")?;
    let groups = group_rows(df, by)?;
    let mut keys: Vec<Vec<String>> = vec![Vec::new(); by.len()];
    let (mut n, mut n_runs, mut dropped, mut note) = (vec![], vec![], vec![], vec![]);
    let mut values: Vec<Vec<Option<f64>>> = vec![Vec::new(); 13];
    for (key, rows) in &groups {
        for (c, k) in keys.iter_mut().zip(key) {
            c.push(k.clone());
        }
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let run: Vec<usize> = rows
            .iter()
            .map(|&i| {
                let next = ids.len();
                *ids.entry(runs[i].as_str()).or_insert(next)
            })
            .collect();
        // A missing value enters as NaN: the statistics reject the group, which gets a note.
        let x: Vec<f64> = rows.iter().map(|&i| cos[i].unwrap_or(f64::NAN)).collect();
        let h: Vec<bool> = rows.iter().map(|&i| hit[i] == Some(true)).collect();
        let r: Vec<f64> = rows.iter().map(|&i| rr[i].unwrap_or(f64::NAN)).collect();
        n.push(rows.len() as i64);
        n_runs.push(ids.len() as i64);
        match case_cos_association(&x, &h, &r, &run, resamples, seed) {
            Ok(a) => {
                let l = &a.logistic;
                let row = [
                    a.point_biserial.r,
                    a.point_biserial_bootstrap.interval.low,
                    a.point_biserial_bootstrap.interval.high,
                    a.point_biserial.p_value,
                    a.rank.r,
                    a.rank_bootstrap.interval.low,
                    a.rank_bootstrap.interval.high,
                    a.rank.p_value,
                    l.slope,
                    l.se,
                    l.ci95.low,
                    l.ci95.high,
                    l.p_value,
                ];
                for (col, v) in values.iter_mut().zip(row) {
                    col.push(Some(v));
                }
                dropped.push(Some(l.groups_dropped as i64));
                note.push(None);
            }
            Err(e) => {
                for col in values.iter_mut() {
                    col.push(None);
                }
                dropped.push(None);
                note.push(Some(e.to_string()));
            }
        }
    }
    let mut cols: Vec<Column> = by
        .iter()
        .zip(keys)
        .map(|(name, vals)| Column::new((*name).into(), vals))
        .collect();
    cols.push(Column::new("n".into(), n));
    cols.push(Column::new("runs".into(), n_runs));
    let names = [
        "r_pb",
        "r_pb_low",
        "r_pb_high",
        "p_pb",
        "rho_rr",
        "rho_low",
        "rho_high",
        "p_rho",
        "logit_slope",
        "logit_se",
        "logit_low",
        "logit_high",
        "p_logit",
    ];
    for (name, col) in names.iter().zip(values) {
        cols.push(Column::new((*name).into(), col));
    }
    cols.push(Column::new("runs_dropped".into(), dropped));
    cols.push(Column::new("note".into(), note));
    Ok(DataFrame::new(groups.len(), cols)?)
}
