//! Every figure of a tree of runs in one call ([`figures_from_runs`]), which is what
//! `cdsr-lab figures` and the demo run.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::{
    attention_share, case_cos_vs_hit, cos_boxplots, metric_by_setting, metrics_by_gca_positions,
    ndcg_vs_params, orthogonality_vs_ndcg, parallel_coordinates, training_curves, ParallelLines,
    Plot, PlotError,
};
use crate::analysis::attention::load_samples;
use crate::analysis::cases::case_cos_frame;
use crate::analysis::study::study_frame;
use crate::eval::names;
use crate::runs::{load_runs, LoadOptions, LoadReport, RunSet};

/// What happened to one figure.
#[derive(Debug)]
pub enum FigureOutcome {
    /// Written: the PNG and SVG paths.
    Written { name: String, files: [PathBuf; 2] },
    /// Not drawn because the runs hold no input for it (e.g. no GCA run, no AutoCDSR samples).
    Skipped { name: String, reason: String },
}

impl std::fmt::Display for FigureOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FigureOutcome::Written { files, .. } => {
                write!(f, "wrote {} and .svg", files[0].display())
            }
            FigureOutcome::Skipped { name, reason } => write!(f, "skipped {name}: {reason}"),
        }
    }
}

/// The figures of a run tree and the runs that could not be read.
#[derive(Debug)]
pub struct FiguresReport {
    pub runs: usize,
    pub figures: Vec<FigureOutcome>,
    /// Runs skipped by the loader or whose tensors could not be read, with reasons.
    pub skipped_runs: Vec<(PathBuf, String)>,
}

impl FiguresReport {
    /// Prints what `cdsr-lab figures` and the demo print: each figure written or skipped on
    /// stdout, each run that could not be read on stderr.
    pub fn print(&self) {
        for f in &self.figures {
            println!("{f}");
        }
        crate::runs::reader::eprint_skipped(&self.skipped_runs);
    }
}

fn non_null(df: &DataFrame, col: &str) -> PolarsResult<DataFrame> {
    df.filter(&df.column(col)?.is_not_null())
}

/// The metric of the parallel-coordinates figure that [`figures_of_study`] draws.
pub const PARALLEL_METRIC: &str = "test.A.ndcg@10";

/// At most this many parameter axes in [`parallel_coordinates_of_runs`].
const MAX_PARALLEL_AXES: usize = 8;

/// [`parallel_coordinates`] of a run set: the config keys whose values differ across its runs
/// (the seed and execution settings left out; of keys that split the runs into the same groups
/// the first; at most 8, those with more distinct values first) against `metric`, a column of [`RunSet::runs_frame`] such as `test.A.ndcg@10`.
/// `None` when no key differs or no run has the metric.
///
/// ```
/// use cdsr_lab::plot::{parallel_coordinates_of_runs, ParallelLines};
/// use cdsr_lab::runs::{load_runs, LoadOptions};
/// let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/foreign_runs/hydra");
/// let set = load_runs(&dir, LoadOptions::default()).unwrap();
/// let fig = parallel_coordinates_of_runs(&set, "test.A.ndcg@10", ParallelLines::PerSeedGroup)
///     .unwrap()
///     .expect("the sweep varies gca");
/// assert!(fig.svg().contains("3 seed groups"));
/// ```
pub fn parallel_coordinates_of_runs(
    set: &RunSet,
    metric: &str,
    lines: ParallelLines,
) -> Result<Option<Plot>, PlotError> {
    let frame_error = |e: PolarsError| PlotError::Stats {
        figure: "parallel_coordinates",
        message: e.to_string(),
    };
    let runs = set.runs_frame().map_err(frame_error)?;
    if crate::runs::frames::column(&runs, metric).is_err() {
        return Ok(None);
    }
    let ignored = crate::runs::frames::SEED_AND_EXECUTION_KEYS;
    // (column, distinct values, each run's value as an index into them)
    let mut axes: Vec<(String, usize, Vec<usize>)> = Vec::new();
    for c in runs.columns() {
        let name = c.name().as_str();
        let Some(key) = name.strip_prefix("config.") else {
            continue;
        };
        if ignored.contains(&key) {
            continue;
        }
        let values = (0..c.len())
            .map(|i| c.get(i).map(|v| v.to_string()))
            .collect::<PolarsResult<Vec<_>>>()
            .map_err(frame_error)?;
        let seen = crate::runs::frames::distinct(values.iter().cloned());
        let groups = values
            .iter()
            .map(|v| {
                seen.iter()
                    .position(|s| s == v)
                    .expect("seen holds every value")
            })
            .collect();
        if seen.len() > 1 {
            axes.push((name.to_owned(), seen.len(), groups));
        }
    }
    axes.sort_by_key(|a| std::cmp::Reverse(a.1));
    // Keys that split the runs into the same groups (`d_model` and `ffn_hidden`) are one axis,
    // the first, as in the run labels.
    let mut kept: Vec<(String, usize, Vec<usize>)> = Vec::new();
    for axis in axes {
        if !kept.iter().any(|k| k.2 == axis.2) {
            kept.push(axis);
        }
    }
    let mut axes = kept;
    axes.truncate(MAX_PARALLEL_AXES);
    if axes.is_empty() {
        return Ok(None);
    }
    let names: Vec<&str> = axes.iter().map(|a| a.0.as_str()).collect();
    parallel_coordinates(&runs, &names, metric, lines).map(Some)
}

/// Loads the runs under `runs_dir` (complete ones only unless `options` includes runs still
/// training) and writes figures 1-6, NDCG@10 by setting and the per-case |cos| figure into
/// `out_dir` as PNG and SVG. A figure whose input is
/// absent is skipped with the reason; drawing errors are errors.
pub fn figures_from_runs(
    runs_dir: &Path,
    out_dir: &Path,
    options: LoadOptions,
) -> anyhow::Result<FiguresReport> {
    let set = load_runs(runs_dir, options)?;
    if set.is_empty() {
        anyhow::bail!(
            "no {}run under {} ({} skipped)",
            if options.include_incomplete {
                ""
            } else {
                "complete "
            },
            runs_dir.display(),
            set.report.skipped.len()
        );
    }
    figures_of_runs(&set, out_dir)
}

/// [`figures_from_runs`] for runs already loaded. Runs still training (loaded with
/// [`LoadOptions::include_incomplete`](crate::runs::LoadOptions)) have their curves drawn up to
/// the last epoch written, while the figures of final results (which read the manifest's test
/// metrics) leave them out.
pub fn figures_of_runs(set: &RunSet, out_dir: &Path) -> anyhow::Result<FiguresReport> {
    let (study, tensor_report) = study_frame(set)?;
    figures_of_study(set, &study, tensor_report, out_dir)
}

/// [`figures_of_runs`] for a caller that already built the set's
/// [`study_frame`](crate::analysis::study::study_frame) (the demo writes it as CSV too), so the
/// captured tensors are read once; `tensor_report` is the study frame's list of unreadable runs.
pub fn figures_of_study(
    set: &RunSet,
    study: &DataFrame,
    tensor_report: LoadReport,
    out_dir: &Path,
) -> anyhow::Result<FiguresReport> {
    let mut figures = Vec::new();
    let mut emit = |name: &str, plot: Result<Option<Plot>, PlotError>, why: &str| {
        let outcome = match plot? {
            Some(p) => FigureOutcome::Written {
                name: name.to_owned(),
                files: p.save(out_dir)?,
            },
            None => FigureOutcome::Skipped {
                name: name.to_owned(),
                reason: why.to_owned(),
            },
        };
        figures.push(outcome);
        Ok::<_, anyhow::Error>(())
    };
    let with_cos = non_null(study, "cos_x_xprime")?;
    let no_capture = "no run has captured GCA tensors";
    emit(
        "orthogonality_vs_ndcg",
        (with_cos.height() > 0)
            .then(|| orthogonality_vs_ndcg(&with_cos))
            .transpose(),
        no_capture,
    )?;
    emit("ndcg_vs_params", ndcg_vs_params(study).map(Some), "")?;
    let with_y = non_null(&with_cos, "cos_x_y")?;
    emit(
        "cos_boxplots",
        (with_y.height() > 0)
            .then(|| cos_boxplots(&with_y))
            .transpose(),
        no_capture,
    )?;
    emit(
        "metrics_by_gca_positions",
        metrics_by_gca_positions(study, &[names::NDCG_10, names::HR_10]).map(Some),
        "",
    )?;
    emit(
        "metric_by_setting",
        metric_by_setting(study, "ndcg@10").map(Some),
        "",
    )?;
    let (cases, cases_report) = case_cos_frame(set)?;
    emit(
        "case_cos_vs_hit",
        (cases.height() > 0)
            .then(|| case_cos_vs_hit(&cases))
            .transpose(),
        "no GCA run has per-case |cos| in test_cases.parquet",
    )?;
    let (samples, samples_report) = load_samples(set)?;
    emit(
        "attention_share",
        (samples.height() > 0)
            .then(|| attention_share(&samples))
            .transpose(),
        "no run has AutoCDSR samples (samples.parquet)",
    )?;
    let epochs = epochs_with_convergence(set)?;
    emit(
        "training_curves",
        training_curves(&epochs, &[names::LOSS, names::NDCG_10]).map(Some),
        "",
    )?;
    emit(
        "parallel_coordinates",
        parallel_coordinates_of_runs(set, PARALLEL_METRIC, ParallelLines::PerSeedGroup),
        &format!("no config value differs across the runs, or no run has {PARALLEL_METRIC}"),
    )?;
    let mut skipped_runs = set.report.skipped.clone();
    skipped_runs.extend(tensor_report.skipped);
    skipped_runs.extend(samples_report.skipped);
    skipped_runs.extend(cases_report.skipped);
    Ok(FiguresReport {
        runs: set.len(),
        figures,
        skipped_runs,
    })
}

/// The set's [`RunSet::epochs_frame`] with each run's `converged` flag
/// ([`crate::runs::RunManifest::converged`]), so that the training curves mark the runs that
/// stopped at a cap while still improving.
fn epochs_with_convergence(set: &RunSet) -> PolarsResult<DataFrame> {
    let mut epochs = set.epochs_frame()?;
    let by_id: std::collections::HashMap<&str, Option<bool>> = set
        .runs
        .iter()
        .map(|r| (r.manifest.run_id.as_str(), r.manifest.converged()))
        .collect();
    let converged: Vec<Option<bool>> = epochs
        .column("run_id")?
        .str()?
        .iter()
        .map(|id| id.and_then(|id| by_id.get(id).copied().flatten()))
        .collect();
    epochs.with_column(Column::new("converged".into(), converged))?;
    Ok(epochs)
}
