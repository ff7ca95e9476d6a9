//! The README's main command, `cdsr-lab demo`: a small real study end to end. It trains the
//! demo sweep (`sweeps/demo.toml`: ABXI baselines at several widths, +GCA_early and +GCA_stack,
//! on the real food-kitchen data) with the sweep runner, analyses the runs (the study table,
//! |cos(X, X')| against NDCG@10, the parameter-matched comparison) and writes every figure.
//! Run again, it skips the finished runs and resumes an interrupted one. Next to the runs it
//! writes `study.csv` (the study table) and `report.txt` (the report it prints).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::analysis::study::{study_frame, StudyReport};
use crate::eval::names;
use crate::plot::{figures_of_study, FiguresReport};
use crate::runs::{load_runs, write_atomic, write_csv, LoadOptions};
use crate::sweep::engine::check_run_config;
use crate::sweep::local::{run_local, LocalOptions};
use crate::sweep::plan::SweepDir;
use crate::sweep::spec::SweepSpec;

/// Where the demo reads and writes.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The sweep file to train.
    pub sweep: PathBuf,
    /// The sweep output folder (runs, status, logs).
    pub out: PathBuf,
    /// Where figures go.
    pub figures: PathBuf,
    /// Runs at once.
    pub jobs: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            sweep: PathBuf::from("sweeps/demo.toml"),
            out: PathBuf::from("runs/demo"),
            figures: PathBuf::from("figures"),
            jobs: 2,
        }
    }
}

/// What the demo produced.
pub struct DemoReport {
    pub trained_now: usize,
    pub already_complete: usize,
    pub report: StudyReport,
    pub figures: FiguresReport,
}

/// Trains, analyses and draws (see the module doc).
pub fn run_demo(opts: &DemoOptions) -> Result<DemoReport> {
    let spec = SweepSpec::from_path(&opts.sweep)?;
    let plan = spec.resolve(check_run_config)?;
    let dir = SweepDir::new(&opts.out);
    eprintln!(
        "training {} runs of `{}` into {}",
        plan.runs.len(),
        plan.sweep,
        dir.root.display()
    );
    let local = run_local(&plan, &dir, &LocalOptions::new(opts.jobs)?)?;
    if !local.failed.is_empty() {
        let (id, why) = &local.failed[0];
        bail!(
            "{} demo runs failed; first: {id}: {why} (log: {})",
            local.failed.len(),
            dir.logs().join(format!("{id}.log")).display()
        );
    }
    let set = load_runs(&dir.runs(), LoadOptions::default())?;
    let (mut study, tensor_report) = study_frame(&set)?;
    let report = StudyReport::of(&study, names::NDCG_10)?;
    // The tables next to the runs: the study frame as CSV and the report as text.
    write_csv(&dir.root.join("study.csv"), &mut study)?;
    write_atomic(&dir.root.join("report.txt"), report.to_string().as_bytes())?;
    let figures = figures_of_study(&set, &study, tensor_report, &opts.figures)
        .with_context(|| format!("drawing figures into {}", opts.figures.display()))?;
    Ok(DemoReport {
        trained_now: local.completed.len(),
        already_complete: local.skipped,
        report,
        figures,
    })
}
