//! The orthogonality statistics ([`super::orthogonality`]) of the GCA tensors a run captured
//! (`gca.P.D.x`, `x_prime`, `y`, `mask`), per GCA position and query domain, and
//! [`RunSet::tensor_stats_frame`] over a set of runs.

use std::collections::BTreeSet;

use polars::prelude::*;

use super::orthogonality::{abs_cos, abs_cos_xy, CosOptions, CosStats, CosXY};
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

/// Computes the orthogonality statistics of every `gca.P.D.*` group in a tensors file
/// (memory-mapped). Shapes that disagree are an error naming the tensors.
fn three<'a>(
    t: &'a dyn crate::runs::foreign::TensorSource,
    name: &str,
    path: &std::path::Path,
) -> Result<ndarray::ArrayView3<'a, f32>, RunError> {
    t.f32(name)?
        .into_dimensionality::<ndarray::Ix3>()
        .map_err(|_| RunError::invalid(path, format!("{name}: expected a [batch, len, d] tensor")))
}

/// `path` names the run in errors.
pub fn gca_tensor_stats(
    t: &dyn crate::runs::foreign::TensorSource,
    path: &std::path::Path,
    options: CosOptions,
) -> Result<Vec<GcaTensorStats>, RunError> {
    let mut groups: BTreeSet<(usize, Domain)> = BTreeSet::new();
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
    let bad = |name: &str, e: String| RunError::invalid(path, format!("{name}: {e}"));
    let mut out = Vec::new();
    for (pos, dom) in groups {
        let p = format!("gca.{pos}.{dom}");
        let x = three(t, &format!("{p}.x"), path)?;
        let xp = three(t, &format!("{p}.x_prime"), path)?;
        let mask_name = format!("{p}.mask");
        let mask = if t.contains(&mask_name) {
            Some(
                t.u8(&mask_name)?
                    .into_dimensionality::<ndarray::Ix2>()
                    .map_err(|_| bad(&mask_name, "expected a [batch, len] tensor".into()))?,
            )
        } else {
            None
        };
        let x_xprime = abs_cos(x, xp, mask, options).map_err(|e| bad(&p, e.to_string()))?;
        let x_y = if t.contains(&format!("{p}.y")) {
            let y = three(t, &format!("{p}.y"), path)?;
            Some(abs_cos_xy(x, y, mask, CosXY::Auto, options).map_err(|e| bad(&p, e.to_string()))?)
        } else {
            None
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

impl RunSet {
    /// One row per (run, GCA position, query domain) with the orthogonality statistics of the
    /// captured tensors (computed in parallel over runs, files memory-mapped). Runs without a
    /// tensors file contribute no rows; runs whose tensors are unreadable or have shapes that
    /// disagree are listed in the returned report and contribute no rows.
    pub fn tensor_stats_frame(&self) -> PolarsResult<(DataFrame, LoadReport)> {
        use rayon::prelude::*;
        let opts = CosOptions::default();
        let results: Vec<(usize, Result<Vec<GcaTensorStats>, RunError>)> = self
            .runs
            .par_iter()
            .enumerate()
            .filter_map(|(i, r)| match crate::runs::foreign::open_run_tensors(r) {
                Ok(None) => None,
                Ok(Some(t)) => Some((i, gca_tensor_stats(t.as_ref(), &r.dir, opts))),
                Err(e) => Some((i, Err(e))),
            })
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
