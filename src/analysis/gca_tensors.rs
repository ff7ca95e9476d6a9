//! The orthogonality statistics ([`super::orthogonality`]) of the GCA tensors a run captured
//! (`gca.P.D.x`, `x_prime`, `y`, `mask`), per GCA position and query domain, and
//! [`RunSet::tensor_stats_frame`] over a set of runs.
//!
//! A compact run ([`crate::runs::compact`]) keeps, in place of its tensors, one row per valid
//! captured row ([`capture_stats_frame`]), from which [`gca_stats_of_capture`] recomputes the
//! same statistics.
//!
//! `capture_stats.parquet` columns: `position` (Int64, GCA position), `domain` (String, query
//! domain), `case` (Int64, the sequence's index in the capture batch), `step` (Int64, the
//! position in the sequence), `seq_len` (Int64, the captured sequence length), then for X' against
//! X: `abs_cos_x_xprime` (Float64, null where either row has zero norm), `energy_x_prime`
//! (|X'|²), `energy_x_prime_parallel` ((X·X')²/|X|²); and for the key/value rows paired with X
//! ([`CosXY::Auto`]): `abs_cos_x_y`, `energy_y`, `energy_y_parallel` (the energies null when Y
//! was not captured).

use std::collections::BTreeSet;

use polars::prelude::*;

use super::orthogonality::{
    abs_cos, abs_cos_xy, cos_stats_of_rows, key_value_rows, row_cos_pairs, CosOptions, CosStats,
    CosXY, RowCos,
};
use crate::data::Domain;
use crate::runs::{LoadReport, RunError, RunSet};

/// Statistics of one GCA module (position, query domain) of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct GcaTensorStats {
    pub position: usize,
    pub domain: Domain,
    pub x_xprime: CosStats,
    pub x_y: Option<CosStats>,
}

fn three<'a>(
    t: &'a dyn crate::runs::foreign::TensorSource,
    name: &str,
    path: &std::path::Path,
) -> Result<ndarray::ArrayView3<'a, f32>, RunError> {
    t.f32(name)?
        .into_dimensionality::<ndarray::Ix3>()
        .map_err(|_| RunError::invalid(path, format!("{name}: expected a [batch, len, d] tensor")))
}

/// The `(position, domain)` of every `gca.P.D.x` tensor.
fn gca_groups(
    t: &dyn crate::runs::foreign::TensorSource,
    path: &std::path::Path,
) -> Result<BTreeSet<(usize, Domain)>, RunError> {
    let mut groups = BTreeSet::new();
    for name in t.names() {
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() == 4 && parts[0] == "gca" && parts[3] == "x" {
            let pos = parts[1].parse::<usize>().map_err(|_| {
                RunError::invalid(path, format!("tensor `{name}`: position is not an integer"))
            })?;
            let dom: Domain = parts[2]
                .parse()
                .map_err(|e| RunError::invalid(path, format!("tensor `{name}`: {e}")))?;
            groups.insert((pos, dom));
        }
    }
    Ok(groups)
}

/// The tensors of one GCA module: X, X', the optional mask and Y.
struct GcaGroup<'a> {
    x: ndarray::ArrayView3<'a, f32>,
    x_prime: ndarray::ArrayView3<'a, f32>,
    mask: Option<ndarray::ArrayView2<'a, u8>>,
    y: Option<ndarray::ArrayView3<'a, f32>>,
}

fn gca_group<'a>(
    t: &'a dyn crate::runs::foreign::TensorSource,
    p: &str,
    path: &std::path::Path,
) -> Result<GcaGroup<'a>, RunError> {
    let mask_name = format!("{p}.mask");
    let mask = if t.contains(&mask_name) {
        Some(
            t.u8(&mask_name)?
                .into_dimensionality::<ndarray::Ix2>()
                .map_err(|_| {
                    RunError::invalid(path, format!("{mask_name}: expected a [batch, len] tensor"))
                })?,
        )
    } else {
        None
    };
    let y_name = format!("{p}.y");
    Ok(GcaGroup {
        x: three(t, &format!("{p}.x"), path)?,
        x_prime: three(t, &format!("{p}.x_prime"), path)?,
        mask,
        y: if t.contains(&y_name) {
            Some(three(t, &y_name, path)?)
        } else {
            None
        },
    })
}

/// Computes the orthogonality statistics of every `gca.P.D.*` group in a tensors file
/// (memory-mapped). Shapes that disagree are an error naming the tensors; `path` names the
/// run in errors.
pub fn gca_tensor_stats(
    t: &dyn crate::runs::foreign::TensorSource,
    path: &std::path::Path,
    options: CosOptions,
) -> Result<Vec<GcaTensorStats>, RunError> {
    let bad = |name: &str, e: String| RunError::invalid(path, format!("{name}: {e}"));
    let mut out = Vec::new();
    for (pos, dom) in gca_groups(t, path)? {
        let p = format!("gca.{pos}.{dom}");
        let g = gca_group(t, &p, path)?;
        let x_xprime =
            abs_cos(g.x, g.x_prime, g.mask, options).map_err(|e| bad(&p, e.to_string()))?;
        let x_y = match g.y {
            Some(y) => Some(
                abs_cos_xy(g.x, y, g.mask, CosXY::Auto, options)
                    .map_err(|e| bad(&p, e.to_string()))?,
            ),
            None => None,
        };
        out.push(GcaTensorStats {
            position: pos,
            domain: dom,
            x_xprime,
            x_y,
        });
    }
    Ok(out)
}

/// One row per valid captured row of every GCA module of a run (the columns in the module
/// doc): what a compact run keeps in place of its tensors. `path` names the run in errors.
pub fn capture_stats_frame(
    t: &dyn crate::runs::foreign::TensorSource,
    path: &std::path::Path,
) -> Result<DataFrame, RunError> {
    let bad = |name: &str, e: String| RunError::invalid(path, format!("{name}: {e}"));
    let (mut pos, mut dom, mut case, mut step, mut seq_len) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut cxx, mut exx, mut exx_par) = (vec![], vec![], vec![]);
    let (mut cxy, mut eyy, mut eyy_par) = (vec![], vec![], vec![]);
    for (position, domain) in gca_groups(t, path)? {
        let p = format!("gca.{position}.{domain}");
        let g = gca_group(t, &p, path)?;
        let rows = row_cos_pairs(g.x, g.x_prime, g.mask).map_err(|e| bad(&p, e.to_string()))?;
        let y_rows = match g.y {
            Some(y) => {
                let kv = key_value_rows(g.x, y, g.mask, CosXY::Auto)
                    .map_err(|e| bad(&p, e.to_string()))?;
                Some(row_cos_pairs(g.x, kv.view(), g.mask).map_err(|e| bad(&p, e.to_string()))?)
            }
            None => None,
        };
        for (k, (b, r)) in rows.iter().enumerate() {
            pos.push(position as i64);
            dom.push(domain.to_string());
            case.push(*b as i64);
            step.push(r.position as i64);
            seq_len.push(g.x.dim().1 as i64);
            cxx.push(r.abs_cos);
            exx.push(r.energy_total);
            exx_par.push(r.energy_parallel);
            // Both pair lists walk the same valid rows in the same order.
            let y = y_rows.as_ref().map(|ys| ys[k].1);
            cxy.push(y.and_then(|y| y.abs_cos));
            eyy.push(y.map(|y| y.energy_total));
            eyy_par.push(y.map(|y| y.energy_parallel));
        }
    }
    let height = pos.len();
    DataFrame::new(
        height,
        vec![
            Column::new("position".into(), pos),
            Column::new("domain".into(), dom),
            Column::new("case".into(), case),
            Column::new("step".into(), step),
            Column::new("seq_len".into(), seq_len),
            Column::new("abs_cos_x_xprime".into(), cxx),
            Column::new("energy_x_prime".into(), exx),
            Column::new("energy_x_prime_parallel".into(), exx_par),
            Column::new("abs_cos_x_y".into(), cxy),
            Column::new("energy_y".into(), eyy),
            Column::new("energy_y_parallel".into(), eyy_par),
        ],
    )
    .map_err(|e| RunError::Polars {
        path: path.to_owned(),
        source: e,
    })
}

/// The statistics of every GCA module from a run's capture statistics
/// ([`capture_stats_frame`], read from `capture_stats.parquet`): the same as
/// [`gca_tensor_stats`] on the tensors they came from. A missing or mistyped column is an
/// error naming `path` and the column.
pub fn gca_stats_of_capture(
    df: &DataFrame,
    path: &std::path::Path,
    options: CosOptions,
) -> Result<Vec<GcaTensorStats>, RunError> {
    let col_err = |c: &str, e: PolarsError| RunError::invalid(path, format!("column `{c}`: {e}"));
    let ints = |c: &str| -> Result<Vec<Option<i64>>, RunError> {
        df.column(c)
            .and_then(|s| s.i64().map(|a| a.iter().collect()))
            .map_err(|e| col_err(c, e))
    };
    let floats = |c: &str| -> Result<Vec<Option<f64>>, RunError> {
        df.column(c)
            .and_then(|s| s.f64().map(|a| a.iter().collect()))
            .map_err(|e| col_err(c, e))
    };
    let domains: Vec<Option<String>> = df
        .column("domain")
        .and_then(|s| {
            s.str()
                .map(|a| a.iter().map(|v| v.map(str::to_owned)).collect())
        })
        .map_err(|e| col_err("domain", e))?;
    let (position, step, seq_len) = (ints("position")?, ints("step")?, ints("seq_len")?);
    let (cxx, exx, exx_par) = (
        floats("abs_cos_x_xprime")?,
        floats("energy_x_prime")?,
        floats("energy_x_prime_parallel")?,
    );
    let (cxy, eyy, eyy_par) = (
        floats("abs_cos_x_y")?,
        floats("energy_y")?,
        floats("energy_y_parallel")?,
    );
    struct Rows {
        len: usize,
        x_xprime: Vec<RowCos>,
        x_y: Vec<RowCos>,
    }
    let mut groups: std::collections::BTreeMap<(usize, Domain), Rows> = Default::default();
    for i in 0..df.height() {
        let missing = |c: &str| RunError::invalid(path, format!("row {i}: `{c}` is null"));
        let usize_of = |v: Option<i64>, c: &str| -> Result<usize, RunError> {
            let v = v.ok_or_else(|| missing(c))?;
            usize::try_from(v)
                .map_err(|_| RunError::invalid(path, format!("row {i}: `{c}` is {v}")))
        };
        let domain: Domain = domains[i]
            .as_deref()
            .ok_or_else(|| missing("domain"))?
            .parse()
            .map_err(|e| RunError::invalid(path, format!("row {i}: {e}")))?;
        let rows = groups
            .entry((usize_of(position[i], "position")?, domain))
            .or_insert(Rows {
                len: usize_of(seq_len[i], "seq_len")?,
                x_xprime: Vec::new(),
                x_y: Vec::new(),
            });
        let at = usize_of(step[i], "step")?;
        rows.x_xprime.push(RowCos {
            position: at,
            abs_cos: cxx[i],
            energy_total: exx[i].ok_or_else(|| missing("energy_x_prime"))?,
            energy_parallel: exx_par[i].ok_or_else(|| missing("energy_x_prime_parallel"))?,
        });
        if let (Some(total), Some(parallel)) = (eyy[i], eyy_par[i]) {
            rows.x_y.push(RowCos {
                position: at,
                abs_cos: cxy[i],
                energy_total: total,
                energy_parallel: parallel,
            });
        }
    }
    let bad = |(p, d): (usize, Domain), e: String| {
        RunError::invalid(path, format!("GCA position {p}, domain {d}: {e}"))
    };
    groups
        .into_iter()
        .map(|(key, rows)| {
            let stats = |r: &[RowCos]| {
                cos_stats_of_rows(r, rows.len, options).map_err(|e| bad(key, e.to_string()))
            };
            Ok(GcaTensorStats {
                position: key.0,
                domain: key.1,
                x_xprime: stats(&rows.x_xprime)?,
                x_y: if rows.x_y.is_empty() {
                    None
                } else {
                    Some(stats(&rows.x_y)?)
                },
            })
        })
        .collect()
}

/// The statistics of a run's GCA modules from its tensors, or for a compact run from its
/// capture statistics; `None` when the run captured nothing.
pub fn run_gca_stats(
    run: &crate::runs::LoadedRun,
    options: CosOptions,
) -> Result<Option<Vec<GcaTensorStats>>, RunError> {
    if run.is_compact() {
        let df = crate::runs::read_capture_stats(&run.dir)?;
        return gca_stats_of_capture(&df, &run.capture_stats_path(), options).map(Some);
    }
    match crate::runs::foreign::open_run_tensors(run)? {
        None => Ok(None),
        Some(t) => gca_tensor_stats(t.as_ref(), &run.dir, options).map(Some),
    }
}

impl RunSet {
    /// One row per (run, GCA position, query domain) with the orthogonality statistics of the
    /// captured tensors (computed in parallel over runs, files memory-mapped; a compact run's
    /// from its capture statistics, [`run_gca_stats`]). Runs without a tensors file
    /// contribute no rows; runs whose tensors are unreadable or have shapes that
    /// disagree are listed in the returned report and contribute no rows.
    pub fn tensor_stats_frame(&self) -> PolarsResult<(DataFrame, LoadReport)> {
        use rayon::prelude::*;
        let opts = CosOptions::default();
        let results: Vec<(usize, Result<Vec<GcaTensorStats>, RunError>)> = self
            .runs
            .par_iter()
            .enumerate()
            .filter_map(|(i, r)| run_gca_stats(r, opts).transpose().map(|s| (i, s)))
            .collect();
        let mut report = LoadReport::default();
        let (mut id, mut pos, mut dom) = (vec![], vec![], vec![]);
        let (mut cxx, mut cxy, mut par, mut orth) = (vec![], vec![], vec![], vec![]);
        let (mut q10, mut q50, mut q90, mut n, mut nz) = (vec![], vec![], vec![], vec![], vec![]);
        for (i, res) in results {
            let run = &self.runs[i];
            match res {
                Err(e) => report.skipped.push((run.dir.clone(), e.to_string())),
                Ok(stats) => {
                    for s in stats {
                        id.push(run.manifest.run_id.clone());
                        pos.push(s.position as i64);
                        dom.push(s.domain.to_string());
                        cxx.push(s.x_xprime.mean_abs_cos);
                        cxy.push(s.x_y.as_ref().map(|c| c.mean_abs_cos));
                        par.push(s.x_xprime.parallel_share());
                        orth.push(s.x_xprime.orthogonal_share());
                        q10.push(s.x_xprime.quantile(0.1));
                        q50.push(s.x_xprime.quantile(0.5));
                        q90.push(s.x_xprime.quantile(0.9));
                        n.push(s.x_xprime.n as i64);
                        nz.push(s.x_xprime.n_zero_norm as i64);
                    }
                }
            }
        }
        let height = id.len();
        let df = DataFrame::new(
            height,
            vec![
                Column::new("run_id".into(), id),
                Column::new("position".into(), pos),
                Column::new("domain".into(), dom),
                Column::new("cos_x_xprime".into(), cxx),
                Column::new("cos_x_y".into(), cxy),
                Column::new("parallel_share".into(), par),
                Column::new("orthogonal_share".into(), orth),
                Column::new("cos_x_xprime_q10".into(), q10),
                Column::new("cos_x_xprime_q50".into(), q50),
                Column::new("cos_x_xprime_q90".into(), q90),
                Column::new("n_valid".into(), n),
                Column::new("n_zero_norm".into(), nz),
            ],
        )?;
        Ok((df, report))
    }
}
