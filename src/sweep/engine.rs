//! The one place the sweep touches the trainer: checking a resolved configuration against
//! [`RunConfig`] and training it into a run directory with [`train::train`].

use std::path::Path;

use anyhow::{Context, Result};
use toml::{Table, Value};

use crate::train::{self, RunConfig, TrainOptions};

/// Dotted key of the seed in a [`RunConfig`].
pub const SEED_KEY: &str = "train.seed";

fn to_run_config(config: &Table) -> std::result::Result<RunConfig, String> {
    let cfg: RunConfig = Value::Table(config.clone())
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_owned())?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Checks that a resolved configuration is a valid [`RunConfig`] (unknown keys included).
pub fn check_run_config(config: &Table) -> std::result::Result<(), String> {
    to_run_config(config).map(|_| ())
}

/// Whether `run_dir` holds a checkpoint that training can resume from.
pub fn has_checkpoint(run_dir: &Path) -> bool {
    train::checkpoint::path(run_dir).is_file()
}

/// Trains `config` into `run_dir` (resuming from its checkpoint when `resume`).
pub fn train_run_config(config: &Table, run_id: &str, run_dir: &Path, resume: bool) -> Result<()> {
    let cfg = to_run_config(config).map_err(|e| anyhow::anyhow!("run {run_id}: {e}"))?;
    let opts = TrainOptions {
        resume,
        progress: false,
        stop_after_epochs: None,
    };
    train::train(&cfg, run_dir, opts).with_context(|| format!("training run {run_id}"))?;
    Ok(())
}
