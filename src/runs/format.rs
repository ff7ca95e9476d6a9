//! The serde types of run directory format v1 (see `docs/run-format.md`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::data::Domain;

/// `run.json`'s `format` field.
pub const RUN_FORMAT: &str = "cdsr-lab-run";
/// The run directory format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// File names inside a run directory.
pub const RUN_JSON: &str = "run.json";
pub const CONFIG_TOML: &str = "config.toml";
pub const METRICS_JSONL: &str = "metrics.jsonl";
pub const TENSORS_SAFETENSORS: &str = "tensors.safetensors";
pub const SAMPLES_PARQUET: &str = "samples.parquet";
/// Per test case at the best epoch: rank, hit and attention share (written by the trainer).
pub const TEST_CASES_PARQUET: &str = "test_cases.parquet";
/// A compact run's per-row statistics of its captured GCA tensors, kept in place of
/// `tensors.safetensors` ([`crate::runs::compact`]).
pub const CAPTURE_STATS_PARQUET: &str = "capture_stats.parquet";

/// Where a run stands. Only `Complete` runs are analysed; the others are reported as skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Complete,
    Failed,
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunStatus::Running => "running",
            RunStatus::Complete => "complete",
            RunStatus::Failed => "failed",
        })
    }
}

/// Why a run stopped training (`stop_reason` in `run.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The validation score did not improve for more than `optim.early_stop_patience`
    /// epochs: the run converged by the stopping rule.
    EarlyStop,
    /// It reached `train.epochs` first.
    EpochCap,
    /// It reached `train.max_wall_time_s` first.
    TimeCap,
    /// It failed (see `failure`).
    Failed,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::EarlyStop => "early_stop",
            StopReason::EpochCap => "epoch_cap",
            StopReason::TimeCap => "time_cap",
            StopReason::Failed => "failed",
        }
    }

    /// Stopped by a budget (epochs or time) while the stopping rule still saw improvement
    /// within its patience: not converged.
    pub fn is_cap(self) -> bool {
        matches!(self, StopReason::EpochCap | StopReason::TimeCap)
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The evaluation split a metrics row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A metric value. JSON has no NaN or infinity, so a non-finite value is written as `null`
/// and read back as NaN: the reader then reports the run (see [`crate::runs::NanPolicy`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MetricValue(pub f64);

impl Serialize for MetricValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_finite() {
            s.serialize_f64(self.0)
        } else {
            s.serialize_none()
        }
    }
}

impl<'de> Deserialize<'de> for MetricValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(MetricValue(
            Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN),
        ))
    }
}

/// Metric name (`ndcg@10`, `hr@5`, `mrr`, `auc`, `loss`, ...) to value.
pub type Metrics = BTreeMap<String, MetricValue>;

/// Final metrics per target domain.
pub type DomainMetrics = BTreeMap<Domain, Metrics>;

/// Builds a [`Metrics`] map from `(name, value)` pairs.
pub fn metrics<'a>(pairs: impl IntoIterator<Item = (&'a str, f64)>) -> Metrics {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), MetricValue(v)))
        .collect()
}

/// Parameter counts: the total and any breakdown by module (`embedding`, `gca.0`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParamCounts {
    pub total: u64,
    #[serde(default)]
    pub by_module: BTreeMap<String, u64>,
}

/// The identity of a run: what the writer needs before training starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// Unique id; also the directory name. Letters, digits, `-`, `_`, `.` only.
    pub run_id: String,
    /// Model family: `abxi`, `sasrec`, `bert4rec`, ...
    pub model: String,
    /// Dataset name, e.g. `food-kitchen`.
    pub dataset: String,
    pub seed: u64,
}

/// `run.json`: the run's identity, configuration, parameter counts, status and final metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    pub format: String,
    pub format_version: u32,
    pub run_id: String,
    pub status: RunStatus,
    pub model: String,
    pub dataset: String,
    pub seed: u64,
    /// The run configuration as nested JSON; the reader flattens it to dotted columns.
    pub config: serde_json::Value,
    #[serde(default)]
    pub params: ParamCounts,
    #[serde(default)]
    pub best_epoch: Option<u32>,
    #[serde(default)]
    pub epochs_run: u32,
    #[serde(default)]
    pub wall_time_s: Option<f64>,
    /// Final test metrics (sampled-negative protocol) at the best epoch.
    #[serde(default)]
    pub test: DomainMetrics,
    /// Optional: full ranking over the domain's items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_full: Option<DomainMetrics>,
    /// Why a `failed` run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Why training stopped; see [`RunManifest::stopped_by`] for runs that do not record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    /// The trainers that trained the run ([`TRAINER`] of each), in order: one unless a build
    /// of another version resumed it. A seed gives the same numbers only under the same
    /// trainer. Empty for foreign runs and for runs written before 0.2.0 ([`EARLIER_TRAINER`]
    /// once such a run is resumed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trained_with: Vec<String>,
    /// Each time training was resumed from a checkpoint, in order: after which epoch and by
    /// which trainer, so the epochs each build trained are known. Empty for a run trained in
    /// one go; a run written by a build without the field lists only the resumes made after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumes: Vec<Resume>,
}

/// One resume of a run ([`RunManifest::resumes`]): training went on after `after_epoch`
/// (the checkpoint's epoch; later epochs' metrics were dropped) under `trainer` ([`TRAINER`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub after_epoch: u32,
    pub trainer: String,
}

/// This build's trainer as [`RunManifest::trained_with`] records it: `cdsr-lab VERSION`.
pub const TRAINER: &str = concat!("cdsr-lab ", env!("CARGO_PKG_VERSION"));

/// What [`RunManifest::trained_with`] records first for a run written before the field, when a
/// later version resumes it.
pub const EARLIER_TRAINER: &str = "cdsr-lab before 0.2.0";

impl RunManifest {
    /// Why the run stopped: `failed` for a failed run, the recorded `stop_reason` of a
    /// complete one, and for a complete run that does not record it, `early_stop` when it ran
    /// fewer epochs than its config's `train.epochs` and `epoch_cap` otherwise (such runs had no
    /// time cap). `None` while running, or when neither is known (a foreign run without
    /// `train.epochs`).
    pub fn stopped_by(&self) -> Option<StopReason> {
        match self.status {
            RunStatus::Failed => Some(StopReason::Failed),
            RunStatus::Running => None,
            RunStatus::Complete => self.stop_reason.or_else(|| {
                let cap = self.config_view().train.epochs?;
                Some(if u64::from(self.epochs_run) < cap {
                    StopReason::EarlyStop
                } else {
                    StopReason::EpochCap
                })
            }),
        }
    }

    /// Whether the run converged by its stopping rule (stopped early, not at a cap); `None`
    /// when [`RunManifest::stopped_by`] is unknown or the run failed.
    pub fn converged(&self) -> Option<bool> {
        match self.stopped_by()? {
            StopReason::Failed => None,
            s => Some(s == StopReason::EarlyStop),
        }
    }
}

/// One line of `metrics.jsonl`: one (epoch, split, domain) with its metric values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// 1-based epoch.
    pub epoch: u32,
    pub split: Split,
    /// `None` for whole-model rows (e.g. the training loss).
    pub domain: Option<Domain>,
    /// Metric keys (`loss`, `ndcg@10`, `a_cd`, `wall_time_s`, ...) and values.
    #[serde(flatten)]
    pub values: Metrics,
}

impl MetricsRow {
    /// A row from `(name, value)` pairs.
    pub fn new<'a>(
        epoch: u32,
        split: Split,
        domain: Option<Domain>,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Self {
        MetricsRow {
            epoch,
            split,
            domain,
            values: metrics(values),
        }
    }
}

/// Final results written by [`crate::runs::RunWriter::finish`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FinalResults {
    pub best_epoch: Option<u32>,
    pub epochs_run: u32,
    pub wall_time_s: Option<f64>,
    pub test: DomainMetrics,
    pub test_full: Option<DomainMetrics>,
    /// Why training stopped (`None`: not recorded).
    pub stop_reason: Option<StopReason>,
}

/// A run read from disk: its manifest and its per-epoch metrics rows.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedRun {
    pub dir: PathBuf,
    pub manifest: RunManifest,
    pub metrics: Vec<MetricsRow>,
}

impl LoadedRun {
    /// The path of the run's tensors file (it may not exist).
    pub fn tensors_path(&self) -> PathBuf {
        self.dir.join(TENSORS_SAFETENSORS)
    }

    /// The path of a compact run's capture statistics (it may not exist).
    pub fn capture_stats_path(&self) -> PathBuf {
        self.dir.join(CAPTURE_STATS_PARQUET)
    }

    /// Whether the run is compact ([`crate::runs::compact`]): its captured tensors are kept
    /// as per-row statistics (`capture_stats.parquet`), not as raw tensors.
    pub fn is_compact(&self) -> bool {
        self.capture_stats_path().is_file() && !self.tensors_path().exists()
    }

    /// The path of the run's samples file (it may not exist).
    pub fn samples_path(&self) -> PathBuf {
        self.dir.join(SAMPLES_PARQUET)
    }

    /// The path of the run's per-test-case file (it may not exist).
    pub fn test_cases_path(&self) -> PathBuf {
        self.dir.join(TEST_CASES_PARQUET)
    }

    /// The best epoch and its test metrics: the manifest's once the run is complete; while it
    /// runs (or after it failed), the last `test` rows of `metrics.jsonl`, since the trainer
    /// evaluates the test split at every epoch that improves validation (for a complete run the
    /// two agree; a complete run written elsewhere may name no best epoch). `None` before the
    /// first such epoch.
    pub fn best_so_far(&self) -> Option<(Option<u32>, DomainMetrics)> {
        let m = &self.manifest;
        if m.status == RunStatus::Complete {
            return Some((m.best_epoch, m.test.clone()));
        }
        let epoch = self
            .metrics
            .iter()
            .filter(|r| r.split == Split::Test)
            .map(|r| r.epoch)
            .max()?;
        let test = self
            .metrics
            .iter()
            .filter(|r| r.split == Split::Test && r.epoch == epoch)
            .filter_map(|r| Some((r.domain?, r.values.clone())))
            .collect();
        Some((Some(epoch), test))
    }
}
