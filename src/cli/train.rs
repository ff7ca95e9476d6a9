//! `cdsr-lab train` and `cdsr-lab step`: arguments and handlers (thin shells over
//! [`cdsr_lab::train::train`] and [`cdsr_lab::train::step_bench`]).

use std::path::PathBuf;

use clap::Args;

use cdsr_lab::data;
use cdsr_lab::train::step_bench::{
    set_gca_positions, time_autocdsr_overhead, time_steps, AutoCdsrSwitch, PinnedBatch,
};
use cdsr_lab::train::{train, ComputeDevice, RunConfig, TrainOptions};

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
    /// Override the config's `train.device` (cpu or cuda; part of the run id when not cpu).
    #[arg(long)]
    pub device: Option<ComputeDevice>,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let mut cfg = RunConfig::from_file(&args.config)?;
    if let Some(s) = args.seed {
        cfg.train.seed = s;
    }
    if let Some(d) = args.device {
        cfg.train.device = d;
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

/// Time training steps on the pinned batch (the speed anchor and the GPU smoke check): prints
/// one JSON line with the median step time and every step's loss.
#[derive(Debug, Args)]
pub struct StepArgs {
    /// The run config whose model and optimiser step.
    #[arg(long, default_value = "configs/abxi-cpu.toml")]
    pub config: PathBuf,
    /// The pinned batch (rows 0..256 of food-kitchen's training layout and their negatives).
    #[arg(long, default_value = "data/fixtures/train_step_batch.npz")]
    pub batch: PathBuf,
    /// The food-kitchen dataset folder (default: food-kitchen under the shared data folder).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// cpu or cuda (default: the config's `train.device`).
    #[arg(long)]
    pub device: Option<ComputeDevice>,
    /// GCA positions: `none`, `0`, `0,1` (default: the config's).
    #[arg(long, default_value = "")]
    pub gca_positions: String,
    /// Compute threads of the CPU kernels.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// `on`: time AutoCDSR's update (`[autocdsr]` with Pareto-MTL weights) instead of the plain
    /// step; `off`: the plain step; default: the config's.
    #[arg(long, default_value = "")]
    pub autocdsr: String,
}

pub fn step(args: StepArgs) -> anyhow::Result<()> {
    let mut cfg = RunConfig::from_file(&args.config)?;
    set_gca_positions(&mut cfg, &args.gca_positions)?;
    AutoCdsrSwitch::parse(&args.autocdsr)?.apply(&mut cfg)?;
    cfg.train.threads = Some(args.threads.max(1));
    if let Some(d) = args.device {
        cfg.train.device = d;
    }
    let data_dir = match args.data {
        Some(d) => d,
        None => data::shared_data_dir()
            .ok_or_else(|| {
                anyhow::anyhow!("shared data folder not found: pass --data or set CDSR_SHARED_DATA")
            })?
            .join("food-kitchen"),
    };
    let ds = data::load(&data_dir)?.dataset;
    let pinned = PinnedBatch::load(&args.batch, &ds, &cfg)?;
    let times = time_steps(&cfg, &ds, &pinned, args.warmup, args.steps)?;
    println!(
        "{}",
        times.summary(&args.config.display().to_string(), &cfg)
    );
    Ok(())
}

/// Time AutoCDSR's training steps against the base model's on the same batches of the
/// trainer's first epoch, alternating: prints one JSON line with each side's per-phase sums and
/// medians and the overhead.
#[derive(Debug, Args)]
pub struct AutocdsrStepArgs {
    /// A run config with an `[autocdsr]` section; the base model is the same without it.
    #[arg(long)]
    pub config: PathBuf,
    /// Compute threads (default: the config's `train.threads`).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Untimed steps of each side first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed steps of each side.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
}

pub fn autocdsr_step(args: AutocdsrStepArgs) -> anyhow::Result<()> {
    let mut cfg = RunConfig::from_file(&args.config)?;
    if let Some(n) = args.threads {
        cfg.train.threads = Some(n.max(1));
    }
    let times = time_autocdsr_overhead(&cfg, args.warmup, args.steps)?;
    println!(
        "{}",
        times.summary(&args.config.display().to_string(), &cfg)
    );
    Ok(())
}
