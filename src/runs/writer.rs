//! [`RunWriter`]: the one way a trainer records a run directory.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use polars::prelude::{CsvWriter, DataFrame, ParquetWriter, SerWriter};
use serde::Serialize;

use super::error::RunError;
use super::format::*;
use super::tensors::TensorSet;

/// Writes `bytes` to `path` through `path.tmp`, a sync and a rename, so a reader (or a kill,
/// or a power cut) never sees a half-written file. The project's one atomic writer: run
/// directories, sweeps, checkpoints and figures all go through it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp).map_err(|e| RunError::io(&tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| RunError::io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| RunError::io(path, e))
}

/// Writes `df` as CSV (with a header) to `path` through a temporary file and a rename.
pub fn write_csv(path: &Path, df: &mut DataFrame) -> Result<(), RunError> {
    let mut bytes = Vec::new();
    CsvWriter::new(&mut bytes)
        .finish(df)
        .map_err(|e| RunError::Polars {
            path: path.to_path_buf(),
            source: e,
        })?;
    write_atomic(path, &bytes)
}

/// Writes `df` as Parquet to `path` through a temporary file and a rename.
pub fn write_parquet(path: &Path, df: &mut DataFrame) -> Result<(), RunError> {
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes)
        .finish(df)
        .map_err(|e| RunError::Polars {
            path: path.to_path_buf(),
            source: e,
        })?;
    write_atomic(path, &bytes)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Records one training run as a directory in format v1 (see `docs/run-format.md`).
///
/// ```
/// use cdsr_lab::data::Domain;
/// use cdsr_lab::runs::{metrics, FinalResults, RunIdentity, RunWriter, Split, TensorSet};
///
/// let root = tempfile::tempdir().unwrap();
/// let config = serde_json::json!({ "model": { "hidden": 256 }, "gca": { "positions": [0] } });
/// let id = RunIdentity { run_id: "abxi-gca0-s1".into(), model: "abxi".into(),
///                        dataset: "food-kitchen".into(), seed: 1 };
/// let mut run = RunWriter::create(root.path(), id, &config).unwrap();
/// run.log_metrics(1, Split::Train, None, [("loss", 5.1)]).unwrap();
/// run.log_metrics(1, Split::Valid, Some(Domain::A), [("ndcg@10", 0.12), ("mrr", 0.1)]).unwrap();
/// let mut t = TensorSet::new();
/// t.add_f32("gca.0.A.x", &[1, 2, 2], vec![1.0, 0.0, 0.0, 1.0]).unwrap();
/// t.add_f32("gca.0.A.x_prime", &[1, 2, 2], vec![0.0, 1.0, 0.0, 1.0]).unwrap();
/// t.add_u8("gca.0.A.mask", &[1, 2], vec![1, 1]).unwrap();
/// run.write_tensors(&t).unwrap();
/// let mut test = std::collections::BTreeMap::new();
/// test.insert(Domain::A, metrics([("ndcg@10", 0.15)]));
/// let dir = run
///     .finish(FinalResults { best_epoch: Some(1), epochs_run: 1, test, ..Default::default() })
///     .unwrap();
/// assert!(dir.join("run.json").exists());
/// ```
pub struct RunWriter {
    dir: PathBuf,
    manifest: RunManifest,
    metrics: File,
    started: Instant,
}

impl RunWriter {
    /// Creates `parent/<run_id>/` (which must not exist yet), writes `config.toml` and a
    /// `run.json` with status `running`, and opens `metrics.jsonl` for appending.
    ///
    /// `config` is any serde-serialisable configuration whose top level is a map (a struct);
    /// `None` fields are left out of `config.toml` (TOML has no null) but kept as `null` in
    /// `run.json`.
    pub fn create<C: Serialize + ?Sized>(
        parent: &Path,
        identity: RunIdentity,
        config: &C,
    ) -> Result<Self, RunError> {
        check_run_id(&identity.run_id)?;
        let dir = parent.join(&identity.run_id);
        std::fs::create_dir_all(parent).map_err(|e| RunError::io(parent, e))?;
        std::fs::create_dir(&dir).map_err(|e| RunError::io(&dir, e))?;
        let config_path = dir.join(CONFIG_TOML);
        let toml_text = toml::to_string(config).map_err(|e| RunError::Config {
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&config_path, toml_text.as_bytes())?;
        let config_json = serde_json::to_value(config).map_err(|e| RunError::Config {
            path: dir.join(RUN_JSON),
            reason: e.to_string(),
        })?;
        let manifest = RunManifest {
            format: RUN_FORMAT.to_owned(),
            format_version: FORMAT_VERSION,
            run_id: identity.run_id,
            status: RunStatus::Running,
            model: identity.model,
            dataset: identity.dataset,
            seed: identity.seed,
            config: config_json,
            params: ParamCounts::default(),
            best_epoch: None,
            epochs_run: 0,
            wall_time_s: None,
            test: Default::default(),
            test_full: None,
            failure: None,
            stop_reason: None,
            trained_with: vec![TRAINER.to_owned()],
            resumes: Vec::new(),
        };
        let metrics_path = dir.join(METRICS_JSONL);
        let metrics = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&metrics_path)
            .map_err(|e| RunError::io(&metrics_path, e))?;
        let writer = RunWriter {
            dir,
            manifest,
            metrics,
            started: Instant::now(),
        };
        writer.write_manifest()?;
        Ok(writer)
    }

    /// Reopens an existing run directory to continue training from a checkpoint taken after
    /// epoch `keep_through_epoch`: metrics rows of later epochs and an incomplete last line
    /// (left by a kill) are dropped, and the status goes back to `running`.
    pub fn resume(dir: &Path, keep_through_epoch: u32) -> Result<Self, RunError> {
        let manifest = super::reader::read_manifest(dir)?;
        let metrics_path = dir.join(METRICS_JSONL);
        let text = std::fs::read_to_string(&metrics_path).unwrap_or_default();
        let mut kept = String::new();
        for line in text.split_inclusive('\n') {
            if !line.ends_with('\n') {
                break; // the incomplete line of a killed writer
            }
            let row: MetricsRow = match serde_json::from_str(line) {
                Ok(r) => r,
                Err(_) => break,
            };
            if row.epoch <= keep_through_epoch {
                kept.push_str(line);
            }
        }
        write_atomic(&metrics_path, kept.as_bytes())?;
        let metrics = OpenOptions::new()
            .append(true)
            .open(&metrics_path)
            .map_err(|e| RunError::io(&metrics_path, e))?;
        let mut writer = RunWriter {
            dir: dir.to_owned(),
            manifest,
            metrics,
            started: Instant::now(),
        };
        writer.manifest.status = RunStatus::Running;
        writer.manifest.failure = None;
        if writer.manifest.trained_with.is_empty() {
            // Written before run.json named its trainer.
            writer
                .manifest
                .trained_with
                .push(EARLIER_TRAINER.to_owned());
        }
        if writer.manifest.trained_with.last().map(String::as_str) != Some(TRAINER) {
            writer.manifest.trained_with.push(TRAINER.to_owned());
        }
        writer.manifest.resumes.push(Resume {
            after_epoch: keep_through_epoch,
            trainer: TRAINER.to_owned(),
        });
        writer.write_manifest()?;
        Ok(writer)
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &RunManifest {
        &self.manifest
    }

    /// Records parameter counts (rewrites `run.json`).
    pub fn set_params(&mut self, params: ParamCounts) -> Result<(), RunError> {
        self.manifest.params = params;
        self.write_manifest()
    }

    /// Appends one row to `metrics.jsonl` as a single complete line, flushed at once.
    pub fn log(&mut self, row: &MetricsRow) -> Result<(), RunError> {
        let mut line = serde_json::to_string(row).map_err(|e| RunError::Json {
            path: self.dir.join(METRICS_JSONL),
            reason: e.to_string(),
        })?;
        line.push('\n');
        // One write call per line: a kill leaves at most one incomplete last line.
        self.metrics
            .write_all(line.as_bytes())
            .and_then(|_| self.metrics.flush())
            .map_err(|e| RunError::io(&self.dir.join(METRICS_JSONL), e))?;
        self.manifest.epochs_run = self.manifest.epochs_run.max(row.epoch);
        Ok(())
    }

    /// Appends one row built from `(name, value)` pairs.
    pub fn log_metrics<'a>(
        &mut self,
        epoch: u32,
        split: Split,
        domain: Option<crate::data::Domain>,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<(), RunError> {
        self.log(&MetricsRow::new(epoch, split, domain, values))
    }

    /// Writes `tensors.safetensors` (atomically; replaces an earlier one).
    pub fn write_tensors(&self, tensors: &TensorSet) -> Result<(), RunError> {
        tensors.write(&self.dir.join(TENSORS_SAFETENSORS))
    }

    /// Writes `samples.parquet` (atomically). Columns: see `docs/run-format.md`.
    pub fn write_samples(&self, samples: &mut DataFrame) -> Result<(), RunError> {
        write_parquet(&self.dir.join(SAMPLES_PARQUET), samples)
    }

    /// Writes `test_cases.parquet` (atomically). Columns: see `docs/run-format.md`.
    pub fn write_test_cases(&self, cases: &mut DataFrame) -> Result<(), RunError> {
        write_parquet(&self.dir.join(TEST_CASES_PARQUET), cases)
    }

    /// Marks the run `complete` with its final results; returns the run directory.
    pub fn finish(mut self, results: FinalResults) -> Result<PathBuf, RunError> {
        let m = &mut self.manifest;
        m.status = RunStatus::Complete;
        m.best_epoch = results.best_epoch;
        m.epochs_run = m.epochs_run.max(results.epochs_run);
        m.wall_time_s = results
            .wall_time_s
            .or(Some(self.started.elapsed().as_secs_f64()));
        m.test = results.test;
        m.test_full = results.test_full;
        m.stop_reason = results.stop_reason;
        self.write_manifest()?;
        Ok(self.dir)
    }

    /// Marks the run `failed` with a reason (e.g. "loss became NaN at epoch 3").
    pub fn fail(mut self, reason: &str) -> Result<PathBuf, RunError> {
        self.manifest.status = RunStatus::Failed;
        self.manifest.failure = Some(reason.to_owned());
        self.manifest.stop_reason = Some(StopReason::Failed);
        self.manifest.wall_time_s = Some(self.started.elapsed().as_secs_f64());
        self.write_manifest()?;
        Ok(self.dir)
    }

    /// Marks the run in `dir` `failed` with a reason, without a writer: for a failure before
    /// the writer was opened (e.g. the data of a run being resumed no longer loads) or after
    /// it was dropped (an error or panic that unwound through it). Rewrites `run.json` only.
    pub fn mark_failed(dir: &Path, reason: &str) -> Result<(), RunError> {
        let mut manifest = super::reader::read_manifest(dir)?;
        manifest.status = RunStatus::Failed;
        manifest.failure = Some(reason.to_owned());
        write_manifest_to(dir, &manifest)
    }

    fn write_manifest(&self) -> Result<(), RunError> {
        write_manifest_to(&self.dir, &self.manifest)
    }
}

fn write_manifest_to(dir: &Path, manifest: &RunManifest) -> Result<(), RunError> {
    let path = dir.join(RUN_JSON);
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| RunError::Json {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    write_atomic(&path, &text)
}

fn check_run_id(id: &str) -> Result<(), RunError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(RunError::RunId(id.to_owned()))
    }
}
