//! Compact copies of run directories, small enough to commit next to the results they back.
//!
//! A compact run holds what the analysis reads: `run.json`, `config.toml`, `metrics.jsonl`,
//! `test_cases.parquet` and `samples.parquet` as they are, and in place of
//! `tensors.safetensors` (the raw captured tensors, megabytes per run)
//! `capture_stats.parquet`: per captured row, the |cos| and energies that the orthogonality
//! statistics are made of ([`crate::analysis::gca_tensors::capture_stats_frame`]). The trainer's
//! `checkpoint/` is left out. The loaders read a compact run like any other, and
//! [`crate::runs::RunSet::tensor_stats_frame`] recomputes the same statistics from it; an
//! analysis that needs the raw tensors gets [`RunError::Compact`].
//!
//! Each run is written file by file with [`write_atomic`] into `DST/.RUN_ID.partial/`,
//! `run.json` last, and the folder is renamed to `DST/RUN_ID/` when complete, so a stopped
//! compaction leaves no half run under its id; the next one starts that run afresh.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::error::RunError;
use super::format::*;
use super::reader::{find_run_dirs, load_run};
use super::writer::{write_atomic, write_parquet};

/// What happened to one source run.
#[derive(Debug, Clone, PartialEq)]
pub enum CompactOutcome {
    /// Written to this directory.
    Written(PathBuf),
    /// The destination already holds this run (same `run.json`): left as it is.
    AlreadyThere(PathBuf),
}

/// The outcome of [`compact_runs`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompactReport {
    /// Compact runs written now.
    pub written: Vec<PathBuf>,
    /// Runs the destination already held.
    pub already_there: Vec<PathBuf>,
    /// Source runs not compacted, with the reason (not complete, a foreign run, unreadable).
    pub skipped: Vec<(PathBuf, String)>,
    /// Bytes of the written runs' source directories and of their compact copies.
    pub source_bytes: u64,
    pub compact_bytes: u64,
}

impl std::fmt::Display for CompactReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} runs compacted ({:.1} MB -> {:.1} MB), {} already there, {} skipped",
            self.written.len(),
            self.source_bytes as f64 / 1e6,
            self.compact_bytes as f64 / 1e6,
            self.already_there.len(),
            self.skipped.len()
        )?;
        // Each reason names its run directory.
        for (_, reason) in &self.skipped {
            writeln!(f, "  skipped {reason}")?;
        }
        Ok(())
    }
}

/// Reads a compact run's `capture_stats.parquet` (columns in
/// [`crate::analysis::gca_tensors`]).
pub fn read_capture_stats(run_dir: &Path) -> Result<DataFrame, RunError> {
    let path = run_dir.join(CAPTURE_STATS_PARQUET);
    let file = std::fs::File::open(&path).map_err(|e| RunError::io(&path, e))?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| RunError::Polars { path, source: e })
}

/// The files copied as they are, when present.
const COPIED: [&str; 4] = [
    CONFIG_TOML,
    METRICS_JSONL,
    TEST_CASES_PARQUET,
    SAMPLES_PARQUET,
];

/// Total size of the files directly in `dir` and below it.
fn dir_bytes(dir: &Path) -> Result<u64, RunError> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| RunError::io(dir, e))? {
        let entry = entry.map_err(|e| RunError::io(dir, e))?;
        let meta = entry
            .metadata()
            .map_err(|e| RunError::io(&entry.path(), e))?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Writes the compact copy of the complete run at `src` to `dst_parent/RUN_ID/` (see the
/// module doc). A destination that holds the same `run.json` is left as it is
/// ([`CompactOutcome::AlreadyThere`]); one that holds another run under that id is an error,
/// as is a run that is not complete or is not a cdsr-lab run directory.
pub fn compact_run(src: &Path, dst_parent: &Path) -> Result<CompactOutcome, RunError> {
    let manifest_path = src.join(RUN_JSON);
    if !manifest_path.is_file() {
        return Err(RunError::invalid(
            src,
            "no run.json: only cdsr-lab run directories are compacted (a foreign run is read where it is)",
        ));
    }
    let run = load_run(src)?;
    if run.manifest.status != RunStatus::Complete {
        return Err(RunError::invalid(
            src,
            format!(
                "status is `{}`, not `complete`: only finished runs are compacted",
                run.manifest.status
            ),
        ));
    }
    let manifest = std::fs::read(&manifest_path).map_err(|e| RunError::io(&manifest_path, e))?;
    let id = &run.manifest.run_id;
    let dst = dst_parent.join(id);
    if dst.exists() {
        let there = std::fs::read(dst.join(RUN_JSON)).map_err(|e| RunError::io(&dst, e))?;
        return if there == manifest {
            Ok(CompactOutcome::AlreadyThere(dst))
        } else {
            Err(RunError::invalid(
                &dst,
                format!(
                    "holds another run.json for run `{id}` than {}",
                    src.display()
                ),
            ))
        };
    }
    let partial = dst_parent.join(format!(".{id}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| RunError::io(&partial, e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| RunError::io(&partial, e))?;
    for name in COPIED {
        let from = src.join(name);
        if from.is_file() {
            let bytes = std::fs::read(&from).map_err(|e| RunError::io(&from, e))?;
            write_atomic(&partial.join(name), &bytes)?;
        }
    }
    if run.is_compact() {
        let from = run.capture_stats_path();
        let bytes = std::fs::read(&from).map_err(|e| RunError::io(&from, e))?;
        write_atomic(&partial.join(CAPTURE_STATS_PARQUET), &bytes)?;
    } else if let Some(tensors) = super::foreign::open_run_tensors(&run)? {
        let mut stats = crate::analysis::gca_tensors::capture_stats_frame(tensors.as_ref(), src)?;
        write_parquet(&partial.join(CAPTURE_STATS_PARQUET), &mut stats)?;
    }
    write_atomic(&partial.join(RUN_JSON), &manifest)?;
    std::fs::rename(&partial, &dst).map_err(|e| RunError::io(&dst, e))?;
    Ok(CompactOutcome::Written(dst))
}

/// Compacts every run under `src_root` (nested runs too) into `dst_root/RUN_ID/`
/// ([`compact_run`]). Runs that are not complete, foreign runs and unreadable runs are
/// listed in the report, not errors, so a tree that is still training can be compacted
/// again later: runs already compacted are left as they are. Writing errors are errors.
pub fn compact_runs(src_root: &Path, dst_root: &Path) -> Result<CompactReport, RunError> {
    std::fs::create_dir_all(dst_root).map_err(|e| RunError::io(dst_root, e))?;
    let mut report = CompactReport::default();
    for src in find_run_dirs(src_root)? {
        match compact_run(&src, dst_root) {
            Ok(CompactOutcome::Written(dst)) => {
                report.source_bytes += dir_bytes(&src)?;
                report.compact_bytes += dir_bytes(&dst)?;
                report.written.push(dst);
            }
            Ok(CompactOutcome::AlreadyThere(dst)) => report.already_there.push(dst),
            Err(e @ (RunError::Io { .. } | RunError::Polars { .. })) => return Err(e),
            Err(e) => report.skipped.push((src, e.to_string())),
        }
    }
    Ok(report)
}
