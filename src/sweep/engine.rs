//! The one place the sweep touches the trainer: checking a resolved configuration and
//! training it into a run directory.

use std::path::Path;

use anyhow::{bail, Result};
use toml::Table;

/// Checks that a resolved configuration is a valid run configuration.
pub fn check_run_config(_config: &Table) -> std::result::Result<(), String> {
    Ok(())
}

/// Trains `config` into `run_dir` (resuming from its checkpoint when `resume`).
pub fn train_run_config(
    _config: &Table,
    run_id: &str,
    _run_dir: &Path,
    _resume: bool,
) -> Result<()> {
    bail!("run {run_id}: the trainer is not part of this build yet")
}
