//! `cdsr-lab train`: arguments and handler (a thin shell over [`cdsr_lab::train::train`]).

use std::path::PathBuf;

use clap::Args;

use cdsr_lab::train::{train, RunConfig, TrainOptions};

/// Train a model from a TOML run config into a run directory.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The run config (see `configs/*.toml`).
    #[arg(long)]
    pub config: PathBuf,
    /// Parent directory of the run directory (`OUT/RUN_ID`).
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// Override the config's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue an interrupted run from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let mut cfg = RunConfig::from_file(&args.config)?;
    if let Some(s) = args.seed {
        cfg.train.seed = s;
    }
    let dir = args.out.join(cfg.run_id());
    if dir.exists() && !args.resume {
        anyhow::bail!("run directory {} already exists: pass --resume to continue it, or choose another --out", dir.display());
    }
    let s = train(
        &cfg,
        &dir,
        TrainOptions {
            resume: args.resume,
            progress: !args.quiet,
            stop_after_epochs: None,
        },
    )?;
    print!("{s}");
    Ok(())
}
