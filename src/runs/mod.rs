//! Run directories (format v1, `docs/run-format.md`): the writer every trainer uses, the
//! reader, and run logs as polars DataFrames.
//!
//! - [`RunWriter`] creates a run directory, appends `metrics.jsonl` rows, writes
//!   `tensors.safetensors` ([`TensorSet`]) and `samples.parquet`, and marks the run complete.
//! - [`load_run`] reads one run strictly; [`load_runs`] reads a tree of runs in parallel
//!   (rayon) and returns a [`RunSet`] whose [`LoadReport`] lists every skipped run with its
//!   reason: not `complete`, a truncated `metrics.jsonl`, a non-finite metric (see
//!   [`NanPolicy`]), an unknown format version, unreadable JSON.
//! - [`compact`] copies runs into a compact form to commit: per-row statistics of the
//!   captured tensors (`capture_stats.parquet`) in place of the tensors, no checkpoint.
//! - [`foreign`] reads runs written by other tools: TensorBoard event files, Lightning
//!   CSVLogger and Hydra folders as they are (`docs/foreign-runs.md`), and CSV / JSON-lines
//!   metrics with `.npy` or safetensors tensors mapped by a `manifest.toml`.
//!
//! # Frames (the public schemas; figures and notebooks build on these names)
//!
//! [`RunSet::runs_frame`]: one row per run, wide.
//! | column | type | meaning |
//! |---|---|---|
//! | `run_id`, `path`, `model`, `dataset`, `status` | String | identity; `path` = run directory |
//! | `label` | String | what tells the run apart from the others of the set ([`RunSet::labels`]) |
//! | `seed`, `epochs_run`, `params.total` | Int64 | |
//! | `best_epoch` | Int64 (nullable) | for a run still training, the best so far |
//! | `stop_reason` | String (nullable) | `early_stop`, `epoch_cap`, `time_cap` or `failed` ([`RunManifest::stopped_by`]); null while running |
//! | `converged` | Boolean (nullable) | stopped by early stopping, not at a cap ([`RunManifest::converged`]) |
//! | `wall_time_s` | Float64 (nullable) | |
//! | `params.MODULE` | Int64 (nullable) | one column per module in any run (`params.gca.0`) |
//! | `config.KEY.SUBKEY` | inferred | the config flattened to dotted keys: Boolean, Int64, Float64 or String; arrays and mixed types as compact JSON String (`config.gca.positions` = `"[0,1]"`) |
//! | `test.D.METRIC` | Float64 (nullable) | final test metric, e.g. `test.A.ndcg@10`; for a run still training, at its best epoch so far ([`LoadedRun::best_so_far`]) |
//! | `test_full.D.METRIC` | Float64 (nullable) | full-ranking test metric when recorded |
//!
//! [`RunSet::final_metrics_frame`]: the final metrics in long form, one row per
//! (run, evaluation, domain, metric): `run_id`, `model`, `dataset` (String), `seed` (Int64),
//! `eval` (`"test"` / `"test_full"`), `domain` (`"A"` / `"B"`), `metric` (String),
//! `value` (Float64).
//!
//! [`RunSet::epochs_frame`]: one row per `metrics.jsonl` line = (run, epoch, split, domain):
//! `run_id` (String), `label` (String: what tells the run apart from the others of the set,
//! [`RunSet::labels`]), `epoch` (Int64), `split` (`"train"`/`"valid"`/`"test"`),
//! `domain` (String, null for whole-model rows), then one Float64 column per metric key found
//! in any run (`loss`, `ndcg@10`, `mrr`, `a_cd`, `wall_time_s`, ...), null where a row lacks it.
//!
//! [`RunSet::tensor_stats_frame`]: one row per (run, GCA position, query domain), from
//! `tensors.safetensors` (computed in [`crate::analysis::gca_tensors`]; definitions in
//! [`crate::analysis::orthogonality`]):
//! `run_id` (String), `position` (Int64), `domain` (String), `cos_x_xprime` (Float64,
//! mean |cos(X,X')|), `cos_x_y` (Float64, nullable when `y` was not captured),
//! `parallel_share`, `orthogonal_share` (Float64, energy shares of X' along / orthogonal to X),
//! `cos_x_xprime_q10`, `cos_x_xprime_q50`, `cos_x_xprime_q90` (Float64 quantiles of the
//! per-row |cos|), `n_valid`, `n_zero_norm` (Int64).
//!
//! Every frame is an eager `DataFrame`. The crate builds polars without its lazy engine, to
//! keep the build short: for `.lazy()` queries, add `polars` with the `lazy` feature to your
//! own dependencies. Joins go on `run_id`.
//!
//! ```
//! use cdsr_lab::runs::{load_runs, LoadOptions};
//! let root = tempfile::tempdir().unwrap();
//! let set = load_runs(root.path(), LoadOptions::default()).unwrap();
//! assert!(set.is_empty() && set.report.is_clean());
//! let frame = set.runs_frame().unwrap();
//! assert_eq!(frame.height(), 0);
//! ```
pub mod compact;
pub mod config_view;
pub mod error;
pub mod foreign;
pub mod format;
pub mod frames;
pub mod progress;
pub mod reader;
pub mod tensors;
pub mod test_cases;
pub mod writer;

pub use compact::{compact_run, compact_runs, read_capture_stats, CompactOutcome, CompactReport};
pub use config_view::RunConfigView;
pub use error::RunError;
pub use format::{
    metrics, DomainMetrics, FinalResults, LoadedRun, MetricValue, Metrics, MetricsRow, ParamCounts,
    Resume, RunIdentity, RunManifest, RunStatus, Split, StopReason, CAPTURE_STATS_PARQUET,
    EARLIER_TRAINER, FORMAT_VERSION, RUN_FORMAT, RUN_JSON, SAMPLES_PARQUET, TEST_CASES_PARQUET,
    TRAINER,
};
pub use progress::{training_progress, TrainingProgress};
pub use reader::{
    find_run_dirs, load_required_runs, load_run, load_run_dirs, load_runs, read_manifest,
    read_metrics, scan_run_tree, LoadOptions, LoadReport, NanPolicy, RunSet, RunTree,
};
pub use tensors::{map_npy_f32, MappedNpy, MappedTensors, Tensor, TensorData, TensorSet};
pub use test_cases::{
    read_test_cases, test_cases_frame, CaseCos, TestCase, TestCases, ABS_COS_PREFIX,
};
pub use writer::{write_atomic, write_csv, write_parquet, RunWriter};
