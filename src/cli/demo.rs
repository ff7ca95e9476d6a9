//! `cdsr-lab demo`: arguments and handler (a thin shell over [`cdsr_lab::demo::run_demo`]).

use std::path::PathBuf;

use anyhow::Result;
use cdsr_lab::demo::{run_demo, DemoOptions};

/// Arguments of `cdsr-lab demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// The committed runs of the GCA study, whose report and figures are regenerated.
    #[arg(long, default_value = "results/study/runs")]
    pub study: PathBuf,
    /// Only train, report and draw the sweep (skip the committed study).
    #[arg(long)]
    pub no_study: bool,
    /// Sweep file to train.
    #[arg(long, default_value = "sweeps/demo.toml")]
    pub sweep: PathBuf,
    /// Sweep output folder.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Figure folder (the study's figures go to its `study/` folder).
    #[arg(long, default_value = "figures")]
    pub figures: PathBuf,
    /// Runs at once (each gets cores / jobs threads; small models use two cores better as
    /// two one-thread runs than as one two-thread run).
    #[arg(long, short, default_value_t = 2)]
    pub jobs: usize,
}

/// `cdsr-lab demo`.
pub fn run(args: DemoArgs) -> Result<()> {
    let r = run_demo(&DemoOptions {
        study_runs: (!args.no_study).then_some(args.study),
        sweep: args.sweep,
        out: args.out,
        figures: args.figures,
        jobs: args.jobs,
    })?;
    println!("{r}");
    if let Some(study) = &r.study {
        study.figures.print();
    }
    r.training.figures.print();
    Ok(())
}
