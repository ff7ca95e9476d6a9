//! Reading run directories: one run strictly, or a whole tree in parallel with a report of
//! every run that was skipped and why.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::error::RunError;
use super::format::*;
// Where the type lived first; kept so that `runs::reader::LoadedRun` still names it.
pub use super::format::LoadedRun;

/// What to do with non-finite (NaN / infinite, stored as `null`) metric values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NanPolicy {
    /// Skip the whole run and report where the first non-finite value is (default): a diverged
    /// run never enters a statistic silently.
    #[default]
    SkipRun,
    /// Keep the run; non-finite values appear as NaN in the frames.
    Keep,
}

/// Options of [`load_runs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    pub nan_policy: NanPolicy,
    /// Also load runs whose status is `running` or `failed` (default: skip them).
    pub include_incomplete: bool,
}

/// Runs that were not loaded, each with the reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    pub skipped: Vec<(PathBuf, String)>,
}

impl LoadReport {
    pub fn is_clean(&self) -> bool {
        self.skipped.is_empty()
    }

    /// Says on stderr which runs the load left out and why ([`eprint_skipped`]).
    pub fn eprint_skipped(&self) {
        eprint_skipped(&self.skipped);
    }
}

/// What the commands print for runs a load or a figure left out: `skipped run DIR: WHY` on
/// stderr, one line each.
pub fn eprint_skipped(skipped: &[(PathBuf, String)]) {
    for (dir, why) in skipped {
        eprintln!("skipped run {}: {why}", dir.display());
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} run(s) skipped", self.skipped.len())?;
        for (path, reason) in &self.skipped {
            writeln!(f, "  {}: {reason}", path.display())?;
        }
        Ok(())
    }
}

/// Reads and checks `run.json` of a run directory.
pub fn read_manifest(dir: &Path) -> Result<RunManifest, RunError> {
    let path = dir.join(RUN_JSON);
    let bytes = std::fs::read(&path).map_err(|e| RunError::io(&path, e))?;
    // Check the format and version before the full schema, so a future version gets a
    // version error rather than a confusing field error.
    #[derive(serde::Deserialize)]
    struct Head {
        format: Option<String>,
        format_version: Option<u32>,
    }
    let head: Head = serde_json::from_slice(&bytes).map_err(|e| RunError::Json {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let format = head.format.unwrap_or_default();
    let version = head.format_version.unwrap_or(0);
    if format != RUN_FORMAT || version != FORMAT_VERSION {
        return Err(RunError::Version {
            path,
            format,
            version,
            expected: RUN_FORMAT,
            expected_version: FORMAT_VERSION,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| RunError::Json {
        path,
        reason: e.to_string(),
    })
}

/// Reads `metrics.jsonl`. An incomplete last line (no final newline: the writer was killed
/// mid-line) or any unparsable line is an error naming the line.
pub fn read_metrics(dir: &Path) -> Result<Vec<MetricsRow>, RunError> {
    let path = dir.join(METRICS_JSONL);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RunError::io(&path, e)),
    };
    let mut rows = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        if !line.ends_with('\n') {
            return Err(RunError::Line {
                path,
                line: line_no,
                reason: "incomplete last line (truncated file: was the run killed?)".into(),
            });
        }
        if line.trim().is_empty() {
            continue;
        }
        let row: MetricsRow = serde_json::from_str(line).map_err(|e| RunError::Line {
            path: path.clone(),
            line: line_no,
            reason: e.to_string(),
        })?;
        rows.push(row);
    }
    Ok(rows)
}

/// Loads one run strictly: any problem is an error. Non-finite values are kept as NaN.
pub fn load_run(dir: &Path) -> Result<LoadedRun, RunError> {
    if !dir.join(RUN_JSON).is_file() && super::foreign::is_foreign_run(dir) {
        return super::foreign::load_any_foreign(dir);
    }
    let manifest = read_manifest(dir)?;
    let metrics = read_metrics(dir)?;
    Ok(LoadedRun {
        dir: dir.to_owned(),
        manifest,
        metrics,
    })
}

/// The first non-finite metric of a run, described for a report.
pub fn first_non_finite(run: &LoadedRun) -> Option<String> {
    for (label, set) in [
        ("test", Some(&run.manifest.test)),
        ("test_full", run.manifest.test_full.as_ref()),
    ] {
        for (domain, m) in set.into_iter().flatten() {
            for (k, v) in m {
                if !v.0.is_finite() {
                    return Some(format!("{RUN_JSON}: {label}.{domain}.{k} is not finite"));
                }
            }
        }
    }
    for (i, row) in run.metrics.iter().enumerate() {
        for (k, v) in &row.values {
            if !v.0.is_finite() {
                return Some(format!(
                    "{METRICS_JSONL}: row {} (epoch {}, {}): {k} is not finite",
                    i + 1,
                    row.epoch,
                    row.split
                ));
            }
        }
    }
    None
}

/// What a walk of a run tree found: the run directories, and the directories that look like
/// an unfinished or emptied run but hold no `run.json`, each with what it holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunTree {
    pub runs: Vec<PathBuf>,
    pub not_runs: Vec<(PathBuf, String)>,
}

/// Files only a run directory holds: a directory with some of them but no `run.json` is
/// reported rather than passed over in silence.
const RUN_FILES: [&str; 6] = [
    CONFIG_TOML,
    METRICS_JSONL,
    TENSORS_SAFETENSORS,
    CAPTURE_STATS_PARQUET,
    TEST_CASES_PARQUET,
    SAMPLES_PARQUET,
];

/// The trainer's checkpoint folder inside a run directory (never a run).
const CHECKPOINT_DIR: &str = "checkpoint";

/// Walks `root` (see [`find_run_dirs`]) and also lists every directory that is empty or holds
/// run files without a `run.json`.
pub fn scan_run_tree(root: &Path) -> Result<RunTree, RunError> {
    let mut tree = RunTree::default();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let native = dir.join(RUN_JSON).is_file();
        let foreign = !native && super::foreign::is_foreign_run(&dir);
        let is_run = native || foreign;
        if is_run {
            tree.runs.push(dir.clone());
        }
        // A foreign run's folder holds its logger's own folders (a Hydra job's event files):
        // they belong to that run, so the walk does not look inside it.
        if foreign {
            continue;
        }
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| RunError::io(&dir, e))? {
            let entry = entry.map_err(|e| RunError::io(&dir, e))?;
            let ft = entry
                .file_type()
                .map_err(|e| RunError::io(&entry.path(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // A run's own checkpoint folder is not a nested run tree.
            if ft.is_dir() && !(is_run && name == CHECKPOINT_DIR) {
                stack.push(entry.path());
            }
            names.push(name);
        }
        if is_run || dir == root {
            continue;
        }
        let mut found: Vec<&str> = RUN_FILES
            .into_iter()
            .filter(|f| names.iter().any(|n| n == f))
            .collect();
        if names.iter().any(|n| n == CHECKPOINT_DIR) {
            found.push(CHECKPOINT_DIR);
        }
        if names.is_empty() {
            tree.not_runs.push((
                dir,
                "empty directory: no run.json (were its files removed?)".into(),
            ));
        } else if !found.is_empty() {
            tree.not_runs.push((
                dir,
                format!(
                    "holds {} but no run.json: an unfinished or damaged run, not loaded",
                    found.join(", ")
                ),
            ));
        }
    }
    tree.runs.sort();
    tree.not_runs.sort();
    Ok(tree)
}

/// Every run directory under `root` (a directory holding `run.json`, or a run folder of
/// another tool: [`super::foreign::ForeignKind`]), sorted by path. `root` itself may be a run directory, and a run
/// directory may hold further run directories (results kept next to the run they
/// re-examine): they are searched too, all but a run's `checkpoint/` folder.
pub fn find_run_dirs(root: &Path) -> Result<Vec<PathBuf>, RunError> {
    Ok(scan_run_tree(root)?.runs)
}

/// A set of loaded runs plus the report of those skipped.
#[derive(Debug, Clone, Default)]
pub struct RunSet {
    pub runs: Vec<LoadedRun>,
    pub report: LoadReport,
}

impl RunSet {
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

/// Loads every run under `root` in parallel (rayon). Runs that cannot be read, are not
/// complete, or hold non-finite metrics (with [`NanPolicy::SkipRun`]) are skipped and listed
/// in the report; the walk itself failing (unreadable `root`) is an error.
///
/// Directories that are empty or hold run files without `run.json` are listed in the report
/// too ([`scan_run_tree`]), so a run whose files were removed does not vanish without a word.
pub fn load_runs(root: &Path, options: LoadOptions) -> Result<RunSet, RunError> {
    let tree = scan_run_tree(root)?;
    let mut set = load_run_dirs(&tree.runs, options);
    set.report.skipped.extend(tree.not_runs);
    set.report.skipped.sort();
    Ok(set)
}

/// Loads the runs under `root` like [`load_runs`], for analyses that depend on them (the
/// notebooks' committed runs under `results/`): a missing `root`, or one where no run loads,
/// is an error that names `root` and, for the latter, the first reason a run was skipped,
/// instead of an empty table further on.
pub fn load_required_runs(root: &Path, options: LoadOptions) -> Result<RunSet, RunError> {
    if !root.is_dir() {
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(RunError::invalid(
            root,
            format!("no run tree here (relative paths start at {cwd})"),
        ));
    }
    let set = load_runs(root, options)?;
    if set.is_empty() {
        let why = match set.report.skipped.first() {
            None => "it holds no run directory".to_owned(),
            Some((path, reason)) => format!(
                "{} run(s) skipped, the first {}: {reason}",
                set.report.skipped.len(),
                path.display()
            ),
        };
        return Err(RunError::invalid(root, format!("no run loaded: {why}")));
    }
    Ok(set)
}

/// Loads the given run directories in parallel; see [`load_runs`].
///
/// A run id is the key that frames join on, so it names one run: when several directories
/// hold the same `run_id` (a run directory copied), the first by path is kept and each other
/// is reported as skipped, saying whether it is an identical copy or a different run under
/// the same id. Counting a copy twice would change every mean over seeds without a word.
pub fn load_run_dirs(dirs: &[PathBuf], options: LoadOptions) -> RunSet {
    let results: Vec<Result<LoadedRun, (PathBuf, String)>> = dirs
        .par_iter()
        .map(|dir| {
            let run = load_run(dir).map_err(|e| (dir.clone(), e.to_string()))?;
            if !options.include_incomplete && run.manifest.status != RunStatus::Complete {
                let mut reason = format!("status is `{}`, not `complete`", run.manifest.status);
                if let Some(f) = &run.manifest.failure {
                    reason.push_str(&format!(" ({f})"));
                }
                return Err((dir.clone(), reason));
            }
            if options.nan_policy == NanPolicy::SkipRun {
                if let Some(reason) = first_non_finite(&run) {
                    return Err((dir.clone(), reason));
                }
            }
            Ok(run)
        })
        .collect();
    let mut set = RunSet::default();
    let mut first_of: std::collections::HashMap<String, usize> = Default::default();
    for r in results {
        match r {
            Ok(run) => match first_of.get(&run.manifest.run_id) {
                Some(&k) => {
                    let kept = &set.runs[k];
                    let how = if kept.manifest == run.manifest && kept.metrics == run.metrics {
                        "an identical copy"
                    } else {
                        "a different run under the same id: give one of them another run_id"
                    };
                    let reason = format!(
                        "duplicate run id `{}`, already loaded from {} ({how})",
                        run.manifest.run_id,
                        kept.dir.display()
                    );
                    set.report.skipped.push((run.dir, reason));
                }
                None => {
                    first_of.insert(run.manifest.run_id.clone(), set.runs.len());
                    set.runs.push(run);
                }
            },
            Err(skip) => set.report.skipped.push(skip),
        }
    }
    set
}
