//! AutoCDSR's cross-domain attention share (methods.md, "AutoCDSR").
//!
//! - [`cross_domain_share`]: `a_cd = Σ_i Σ_j softmax(A)_ij [domain(x_i) != domain(x_j)]` of one
//!   attention map `[heads, len, len]`, averaged over heads, raw and normalised per valid
//!   query row.
//! - [`share_by_cell`]: mean and t-based confidence interval of `a_cd` per success/failure
//!   cell (single-domain model hit x cross-domain model hit), within groups such as
//!   `["domain", "layer"]`, from the `samples.parquet` records of one or many runs
//!   ([`load_samples`]).
//! - [`success_cells`]: builds those records from two trained runs' `test_cases.parquet`
//!   (a single-domain model and a cross-domain model evaluated on the same test cases);
//!   [`write_success_cells`] saves them as the cross-domain run's `samples.parquet`;
//!   [`pair_warnings`] says when the two runs look mixed up.

use super::describe::summary;
use super::stats::{group_rows, StatsError};
use crate::data::Domain;
use crate::eval::names;
use crate::runs::frames::f64_column;
use crate::runs::{read_test_cases as read_typed_test_cases, LoadReport, RunSet};
use ndarray::ArrayView3;
use polars::prelude::*;

/// The cross-domain attention share of one sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrossDomainShare {
    /// Σ over valid query rows of the attention mass on keys of the other domain (mean over
    /// heads).
    pub raw: f64,
    /// `raw` divided by the number of valid query rows (0 when there are none).
    pub normalised: f64,
    pub valid_rows: usize,
}

/// `a_cd` of an attention map `probs` (`[heads, len, len]`, rows are softmax distributions
/// over keys) for a sequence whose position `i` belongs to `domains[i]` (`None` = padding:
/// neither a query row nor a cross-domain key). The one-sequence view of
/// [`crate::model::attention_share::attention_share`], which it calls.
pub fn cross_domain_share(
    probs: ArrayView3<'_, f32>,
    domains: &[Option<Domain>],
) -> Result<CrossDomainShare, StatsError> {
    use crate::model::attention_share::{attention_share, ShareConfig};
    let (heads, lq, lk) = probs.dim();
    if lq != domains.len() || lk != domains.len() || heads == 0 {
        return Err(StatsError::Invalid(format!(
            "attention map {:?} does not match {} positions",
            probs.shape(),
            domains.len()
        )));
    }
    let labels = ndarray::Array2::from_shape_fn((1, lq), |(_, i)| {
        domains[i].map_or(0, |d| d.index() as i64)
    });
    let valid = ndarray::Array2::from_shape_fn((1, lq), |(_, i)| domains[i].is_some());
    let share = attention_share(
        probs.insert_axis(ndarray::Axis(0)),
        labels.view(),
        valid.view(),
        &ShareConfig::two_domains(),
    )
    .map_err(|e| StatsError::Invalid(e.to_string()))?;
    Ok(CrossDomainShare {
        raw: share.raw_head_mean()[0],
        normalised: share.norm_head_mean()[0],
        valid_rows: share.valid_rows[0],
    })
}

/// What looks wrong with the pair of runs given to [`success_cells`], as warnings: the same
/// run in both places (every case then lands on the diagonal cells, both hit or both miss), or
/// a single-domain slot holding a model that reads both domains. Runs whose `run.json` cannot
/// be read give no warning here ([`success_cells`] reports them).
pub fn pair_warnings(single: &std::path::Path, cross: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let (Ok(s), Ok(c)) = (
        crate::runs::read_manifest(single),
        crate::runs::read_manifest(cross),
    ) else {
        return out;
    };
    let same_dir = match (single.canonicalize(), cross.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => single == cross,
    };
    if same_dir || s.run_id == c.run_id {
        out.push(format!(
            "the single-domain and the cross-domain run are the same run (`{}`): every case \
             lands in the both-hit or both-miss cell",
            c.run_id
        ));
    }
    let single_kind = crate::model::ModelKind::SasrecSingle.as_str();
    if s.model != single_kind {
        out.push(format!(
            "the single-domain run {} is a `{}` model, which reads both domains; the \
             diagnostic compares a `{single_kind}` model with a cross-domain one",
            single.display(),
            s.model
        ));
    }
    out
}

/// Reads a run's `test_cases.parquet` as a frame, naming the file on failure
/// ([`crate::runs::test_cases`]).
pub fn read_test_cases(run_dir: &std::path::Path) -> Result<DataFrame, StatsError> {
    crate::runs::test_cases::read_test_cases_frame(run_dir)
        .map_err(|e| StatsError::Invalid(e.to_string()))
}

/// AutoCDSR's diagnostic records: for each test case, whether the single-domain model
/// (`single`, e.g. `kind = "sasrec-single"`) and the cross-domain model (`cross`) hit
/// (HR@10), with the cross-domain model's `a_cd` per layer. Columns (the `samples.parquet`
/// format): `sample`, `domain`, `hit_single`, `hit_cross`, `a_cd`, `layer`; one row per case
/// and layer. The two runs must have been evaluated on the same test cases (same dataset
/// and `max_len`); otherwise the error says where they differ.
pub fn success_cells(
    single: &std::path::Path,
    cross: &std::path::Path,
) -> Result<DataFrame, StatsError> {
    let read = |run| read_typed_test_cases(run).map_err(|e| StatsError::Invalid(e.to_string()));
    let (s, c) = (read(single)?, read(cross)?);
    if s.cases.len() != c.cases.len() {
        return Err(StatsError::Invalid(format!(
            "{} has {} test cases but {} has {}: the runs were not evaluated on the same cases",
            single.display(),
            s.cases.len(),
            cross.display(),
            c.cases.len()
        )));
    }
    if let Some(i) = (0..s.cases.len()).find(|&i| s.cases[i].domain != c.cases[i].domain) {
        return Err(StatsError::Invalid(format!(
            "test case {i} is in domain {} in {} but {} in {}: not the same test cases",
            s.cases[i].domain,
            single.display(),
            c.cases[i].domain,
            cross.display()
        )));
    }
    if c.layers == 0 {
        return Err(StatsError::Invalid(format!(
            "{} has no per-layer attention share (a_cd@L columns): is it a merged-sequence model?",
            cross.display()
        )));
    }
    let (mut sample, mut domain, mut hit_single, mut hit_cross, mut a_cd, mut layer) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for l in 0..c.layers {
        for (i, (sc, cc)) in s.cases.iter().zip(&c.cases).enumerate() {
            sample.push(i as i64);
            domain.push(cc.domain.to_string());
            hit_single.push(sc.hit_10);
            hit_cross.push(cc.hit_10);
            a_cd.push(cc.a_cd.as_ref().map(|v| v[l]));
            layer.push(l as i64);
        }
    }
    let n = sample.len();
    Ok(DataFrame::new(
        n,
        vec![
            Column::new("sample".into(), sample),
            Column::new("domain".into(), domain),
            Column::new("hit_single".into(), hit_single),
            Column::new("hit_cross".into(), hit_cross),
            Column::new(names::A_CD.into(), a_cd),
            Column::new("layer".into(), layer),
        ],
    )?)
}

/// [`success_cells`] of the two runs, written (atomically) as `cross/samples.parquet`;
/// returns the frame.
pub fn write_success_cells(
    single: &std::path::Path,
    cross: &std::path::Path,
) -> anyhow::Result<DataFrame> {
    let mut df = success_cells(single, cross)?;
    crate::runs::write_parquet(&cross.join(crate::runs::SAMPLES_PARQUET), &mut df)?;
    Ok(df)
}

/// The `samples.parquet` records of every run that has one, with a `run_id` column first;
/// unreadable files are listed in the report.
pub fn load_samples(runs: &RunSet) -> Result<(DataFrame, LoadReport), StatsError> {
    use rayon::prelude::*;
    let parts: Vec<(usize, PolarsResult<DataFrame>)> = runs
        .runs
        .par_iter()
        .enumerate()
        .filter(|(_, r)| r.samples_path().exists())
        .map(|(i, r)| {
            let read = std::fs::File::open(r.samples_path())
                .map_err(PolarsError::from)
                .and_then(|f| ParquetReader::new(f).finish())
                .and_then(|mut df| {
                    let n = df.height();
                    df.insert_column(
                        0,
                        Column::new("run_id".into(), vec![r.manifest.run_id.as_str(); n]),
                    )?;
                    Ok(df)
                });
            (i, read)
        })
        .collect();
    let mut report = LoadReport::default();
    let mut frames = Vec::new();
    for (i, res) in parts {
        match res {
            Ok(df) => frames.push(df),
            Err(e) => report
                .skipped
                .push((runs.runs[i].samples_path(), e.to_string())),
        }
    }
    let mut iter = frames.into_iter();
    let Some(mut all) = iter.next() else {
        return Ok((DataFrame::empty(), report));
    };
    for df in iter {
        all.vstack_mut(&df).map_err(|e| {
            StatsError::Frame(format!("samples.parquet files have different columns: {e}"))
        })?;
    }
    Ok((all, report))
}

/// Mean `a_cd` with a t-based confidence interval per (groups of `by`, `hit_single`,
/// `hit_cross`) cell. `df` needs Boolean `hit_single`, `hit_cross` and numeric `a_cd`
/// (non-finite values are an error). Output columns: the `by` columns (String),
/// `hit_single`, `hit_cross` (Boolean), `n` (Int64), `mean`, `sd`, `ci_low`, `ci_high`
/// (Float64; the interval is null for n < 2), sorted by the group keys then the cell.
pub fn share_by_cell(df: &DataFrame, by: &[&str], level: f64) -> Result<DataFrame, StatsError> {
    let a = f64_column(df, names::A_CD)?;
    if let Some(i) = a.iter().position(Option::is_none) {
        // Frames stacked from many runs: name the run as well as the row.
        let run = df
            .column("run_id")
            .ok()
            .and_then(|c| {
                c.str()
                    .ok()
                    .and_then(|c| c.get(i))
                    .map(|id| format!(" (run {id})"))
            })
            .unwrap_or_default();
        return Err(StatsError::Invalid(format!(
            "a_cd is null or not finite at row {i}{run}"
        )));
    }
    let mut keys: Vec<&str> = by.to_vec();
    keys.extend(["hit_single", "hit_cross"]);
    let mut groups = group_rows(df, &keys)?;
    groups.sort_by(|x, y| x.0.cmp(&y.0));
    let mut key_cols: Vec<Vec<String>> = vec![Vec::new(); by.len()];
    let (mut hs, mut hc, mut n, mut mean, mut sd, mut lo, mut hi) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (key, rows) in &groups {
        for (c, k) in key_cols.iter_mut().zip(key) {
            c.push(k.clone());
        }
        let parse = |s: &str| -> Result<bool, StatsError> {
            match s {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(StatsError::Invalid(format!(
                    "hit_single / hit_cross must be Boolean, found `{other}`"
                ))),
            }
        };
        hs.push(parse(&key[by.len()])?);
        hc.push(parse(&key[by.len() + 1])?);
        // Every value is present (checked above).
        let v: Vec<f64> = rows.iter().filter_map(|&i| a[i]).collect();
        let cell = summary(&v)?;
        let ci = cell.mean_interval(level);
        n.push(cell.n as i64);
        mean.push(cell.mean);
        sd.push(cell.sd);
        lo.push(ci.map(|c| c.low));
        hi.push(ci.map(|c| c.high));
    }
    let mut cols: Vec<Column> = by
        .iter()
        .zip(key_cols)
        .map(|(name, v)| Column::new((*name).into(), v))
        .collect();
    cols.extend([
        Column::new("hit_single".into(), hs),
        Column::new("hit_cross".into(), hc),
        Column::new("n".into(), n),
        Column::new("mean".into(), mean),
        Column::new("sd".into(), sd),
        Column::new("ci_low".into(), lo),
        Column::new("ci_high".into(), hi),
    ]);
    Ok(DataFrame::new(groups.len(), cols)?)
}
