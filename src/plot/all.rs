//! Every figure of a tree of runs in one call ([`figures_from_runs`]), which is what
//! `cdsr-lab figures` and the demo run.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::{
    attention_share, case_cos_vs_hit, cos_boxplots, metric_by_setting, metrics_by_gca_positions,
    ndcg_vs_params, orthogonality_vs_ndcg, training_curves, Plot, PlotError,
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
        for (path, reason) in &self.skipped_runs {
            eprintln!("skipped run {}: {reason}", path.display());
        }
    }
}

fn non_null(df: &DataFrame, col: &str) -> PolarsResult<DataFrame> {
    df.clone()
        .lazy()
        .filter(polars::prelude::col(col).is_not_null())
        .collect()
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
    let epochs = set.epochs_frame()?;
    emit(
        "training_curves",
        training_curves(&epochs, &[names::LOSS, names::NDCG_10]).map(Some),
        "",
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
