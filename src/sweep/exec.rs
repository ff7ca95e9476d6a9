//! Executing one planned run: skip it when complete, resume it from its checkpoint when one
//! exists, start it fresh otherwise, and keep its attempt record up to date.
//!
//! This is what a local worker's child process and a Slurm array task both run
//! (`cdsr-lab sweep exec`), so a run behaves the same wherever it executes.

use std::path::Path;

use anyhow::{bail, Context, Result};
use toml::Table;

use super::plan::{PlannedRun, SweepDir};
use super::status::{run_is_complete, this_host, unix_now, AttemptRecord, RunState};

/// Trains one resolved configuration into `run_dir`, continuing from its checkpoint when
/// `resume` is true.
pub type TrainFn = fn(config: &Table, run_id: &str, run_dir: &Path, resume: bool) -> Result<()>;

/// What [`exec_run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOutcome {
    /// `run.json` already said complete; nothing ran.
    AlreadyComplete,
    /// Trained from scratch to completion.
    Trained,
    /// Continued from a checkpoint to completion.
    Resumed,
}

/// Runs `run` into `dir.run(id)` with `train`, recording the attempt as `executor`.
pub fn exec_run(
    dir: &SweepDir,
    run: &PlannedRun,
    executor: &str,
    train: TrainFn,
) -> Result<ExecOutcome> {
    let run_dir = dir.run(&run.id);
    std::fs::create_dir_all(dir.records())
        .with_context(|| format!("cannot create {}", dir.records().display()))?;
    // A Slurm task and a local worker (or two requeued tasks) never train one run together;
    // the wait lets a worker of a killed runner finish exiting.
    let _lock = super::lock::Lock::acquire_within(
        &dir.run_lock(&run.id),
        &format!("run {}", run.id),
        std::time::Duration::from_secs(10),
    )?;
    let previous = AttemptRecord::load(dir, &run.id)?;
    if run_is_complete(&run_dir) {
        if let Some(mut r) = previous.filter(|r| r.state != RunState::Complete) {
            r.state = RunState::Complete;
            r.error = None;
            r.save(dir)?;
        }
        return Ok(ExecOutcome::AlreadyComplete);
    }
    // The trainer's own test (a checkpoint file, not just its folder), so a run killed while
    // creating the folder starts clean instead of being recorded as resumed.
    let resume = super::engine::has_checkpoint(&run_dir);
    if run_dir.exists() && !resume {
        // Killed before its first checkpoint: nothing to continue from, start clean.
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("cannot clear unfinished run {}", run_dir.display()))?;
    }
    std::fs::create_dir_all(dir.runs())
        .with_context(|| format!("cannot create {}", dir.runs().display()))?;
    let started_at = unix_now();
    let mut record = AttemptRecord {
        id: run.id.clone(),
        state: RunState::Running,
        attempts: previous.as_ref().map_or(0, |r| r.attempts) + 1,
        resumed: resume,
        host: this_host(),
        pid: std::process::id(),
        executor: executor.to_owned(),
        started_at,
        finished_at: None,
        duration_s: None,
        total_duration_s: previous.as_ref().map_or(0.0, |r| r.total_duration_s),
        error: None,
    };
    record.save(dir)?;
    let result = train(&run.config, &run.id, &run_dir, resume).and_then(|()| {
        if run_is_complete(&run_dir) {
            Ok(())
        } else {
            bail!(
                "training returned but {} does not say complete",
                run_dir.join("run.json").display()
            )
        }
    });
    let finished_at = unix_now();
    record.finished_at = Some(finished_at);
    record.duration_s = Some(finished_at - started_at);
    record.total_duration_s += finished_at - started_at;
    match result {
        Ok(()) => {
            record.state = RunState::Complete;
            record.save(dir)?;
            Ok(if resume {
                ExecOutcome::Resumed
            } else {
                ExecOutcome::Trained
            })
        }
        Err(e) => {
            record.state = RunState::Failed;
            record.error = Some(format!("{e:#}"));
            record.save(dir)?;
            Err(e.context(format!("run {} failed", run.id)))
        }
    }
}

/// Exits this process as soon as standard input reaches end-of-file.
///
/// The local runner gives each child a pipe as stdin and never writes to it: when the runner
/// dies (even by SIGKILL) the pipe closes and the child stops too, instead of training on as
/// an orphan that a restarted sweep would race with.
pub fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        use std::io::Read;
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut sink) {
                Ok(0) | Err(_) => std::process::exit(130),
                Ok(_) => {}
            }
        }
    });
}
