//! Runs written by other tools (a PyTorch script, a notebook): a directory with a
//! `manifest.toml` that maps a CSV or JSON-lines metrics file and `.npy` or safetensors
//! tensors onto the canonical names of run format v1.
//!
//! ```toml
//! format = "cdsr-lab-foreign"
//! format_version = 1
//! run_id = "torch-abxi-gca0-s1"
//! model = "abxi"
//! dataset = "food-kitchen"
//! seed = 1
//! # status = "complete"            (default)
//! # best_epoch = 12                 (optional)
//!
//! [config]                          # optional: any table, flattened like a native config
//! hidden = 256
//!
//! [params]                          # optional
//! total = 2534912
//!
//! [metrics]
//! file = "log.csv"                  # .csv or .jsonl (one JSON object per line)
//! epoch = "ep"                      # column names in the file (defaults: epoch, split, domain)
//! split = "phase"
//! domain = "dom"
//! [metrics.split_values]            # the file's split names -> train / valid / test
//! val = "valid"
//! [metrics.domain_values]           # the file's domain names -> A / B (default: A, B)
//! food = "A"
//! kitchen = "B"
//! [metrics.rename]                  # the file's metric columns -> canonical keys
//! "NDCG@10" = "ndcg@10"
//! # Metric columns not renamed keep their name, lower-cased.
//!
//! # Final test metrics: the test rows of the best epoch (or of the last epoch when
//! # best_epoch is absent) unless given explicitly as [test.A] / [test.B] tables.
//!
//! [tensors]                         # canonical name -> file, or file + key in a safetensors file
//! "gca.0.A.x" = "x_a.npy"
//! "gca.0.A.x_prime" = { file = "captures.safetensors", key = "enc.gca0.out_a" }
//! ```
//!
//! A foreign run loads into the same [`LoadedRun`] as a native one (so it joins every frame);
//! its tensors are read through [`TensorSource`].
//!
//! Runs as other trainers leave them load without a manifest ([`ForeignKind`],
//! `docs/foreign-runs.md`): TensorBoard event files ([`tensorboard`]), Lightning CSVLogger
//! folders ([`lightning`]) and Hydra job folders ([`hydra`]), their tags and columns mapped by
//! one `foreign-runs.toml` for a whole tree ([`mapping`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ndarray::ArrayViewD;
use polars::prelude::*;
use serde::Deserialize;

pub mod hydra;
pub mod lightning;
pub mod logged;
pub mod mapping;
pub mod tensorboard;
mod yaml;

pub use logged::ForeignKind;
pub use mapping::{ForeignMapping, TagMapper, FOREIGN_MAPPING};

use super::error::RunError;
use super::format::*;
use super::tensors::{map_npy_f32, MappedNpy, MappedTensors};
use crate::data::Domain;

/// The manifest file name that marks a foreign run directory.
pub const FOREIGN_MANIFEST: &str = "manifest.toml";
/// `manifest.toml`'s `format` field.
pub const FOREIGN_FORMAT: &str = "cdsr-lab-foreign";
pub const FOREIGN_FORMAT_VERSION: u32 = 1;

/// `manifest.toml` of a foreign run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForeignManifest {
    pub format: String,
    pub format_version: u32,
    pub run_id: String,
    pub model: String,
    pub dataset: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "complete")]
    pub status: RunStatus,
    #[serde(default)]
    pub best_epoch: Option<u32>,
    #[serde(default)]
    pub wall_time_s: Option<f64>,
    #[serde(default)]
    pub config: Option<toml::Table>,
    #[serde(default)]
    pub params: ParamCounts,
    pub metrics: Option<ForeignMetrics>,
    #[serde(default)]
    pub test: BTreeMap<Domain, BTreeMap<String, f64>>,
    #[serde(default)]
    pub tensors: BTreeMap<String, ForeignTensor>,
}

fn complete() -> RunStatus {
    RunStatus::Complete
}

/// How to read the metrics file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForeignMetrics {
    pub file: PathBuf,
    #[serde(default = "default_epoch")]
    pub epoch: String,
    #[serde(default = "default_split")]
    pub split: String,
    #[serde(default = "default_domain")]
    pub domain: String,
    #[serde(default)]
    pub split_values: HashMap<String, Split>,
    #[serde(default)]
    pub domain_values: HashMap<String, Domain>,
    #[serde(default)]
    pub rename: HashMap<String, String>,
}

fn default_epoch() -> String {
    "epoch".into()
}
fn default_split() -> String {
    "split".into()
}
fn default_domain() -> String {
    "domain".into()
}

/// Where a canonical tensor lives.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ForeignTensor {
    /// A `.npy` file (whole array), or a safetensors file holding a tensor of the canonical name.
    File(PathBuf),
    /// A tensor named `key` inside a safetensors file.
    Keyed { file: PathBuf, key: String },
}

/// Reads and checks `manifest.toml`.
pub fn read_foreign_manifest(dir: &Path) -> Result<ForeignManifest, RunError> {
    let path = dir.join(FOREIGN_MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| RunError::io(&path, e))?;
    #[derive(Deserialize)]
    struct Head {
        format: Option<String>,
        format_version: Option<u32>,
    }
    let head: Head = toml::from_str(&text).map_err(|e| RunError::invalid(&path, e.to_string()))?;
    let (format, version) = (
        head.format.unwrap_or_default(),
        head.format_version.unwrap_or(0),
    );
    if format != FOREIGN_FORMAT || version != FOREIGN_FORMAT_VERSION {
        return Err(RunError::Version {
            path,
            format,
            version,
            expected: FOREIGN_FORMAT,
            expected_version: FOREIGN_FORMAT_VERSION,
        });
    }
    toml::from_str(&text).map_err(|e| RunError::invalid(&path, e.to_string()))
}

/// One raw metrics record before mapping: column -> JSON value.
type Record = BTreeMap<String, serde_json::Value>;

fn read_records(path: &Path) -> Result<Vec<(usize, Record)>, RunError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "jsonl" | "ndjson" => {
            let text = std::fs::read_to_string(path).map_err(|e| RunError::io(path, e))?;
            let mut out = Vec::new();
            for (i, line) in text.split_inclusive('\n').enumerate() {
                if !line.ends_with('\n') && !line.trim().is_empty() {
                    // Tolerate a final line without newline only if it parses completely.
                    if serde_json::from_str::<Record>(line).is_err() {
                        return Err(RunError::Line {
                            path: path.to_owned(),
                            line: i + 1,
                            reason: "incomplete last line (truncated file?)".into(),
                        });
                    }
                }
                if line.trim().is_empty() {
                    continue;
                }
                let rec: Record = serde_json::from_str(line).map_err(|e| RunError::Line {
                    path: path.to_owned(),
                    line: i + 1,
                    reason: e.to_string(),
                })?;
                out.push((i + 1, rec));
            }
            Ok(out)
        }
        "csv" => {
            let df = CsvReadOptions::default()
                .with_has_header(true)
                .try_into_reader_with_file_path(Some(path.to_owned()))
                .and_then(|r| r.finish())
                .map_err(|e| RunError::Polars {
                    path: path.to_owned(),
                    source: e,
                })?;
            let mut out: Vec<(usize, Record)> =
                (0..df.height()).map(|i| (i + 2, Record::new())).collect();
            for col in df.columns() {
                let name = col.name().to_string();
                let s = col.as_materialized_series();
                for (i, rec) in out.iter_mut().enumerate() {
                    let v = s.get(i).map_err(|e| RunError::Polars {
                        path: path.to_owned(),
                        source: e,
                    })?;
                    let json = match v {
                        AnyValue::Null => serde_json::Value::Null,
                        AnyValue::String(s) => serde_json::Value::String(s.to_owned()),
                        AnyValue::StringOwned(s) => serde_json::Value::String(s.to_string()),
                        AnyValue::Boolean(b) => serde_json::Value::Bool(b),
                        other => match other.extract::<f64>() {
                            Some(f) if other.is_integer() => serde_json::json!(f as i64),
                            Some(f) => serde_json::json!(f),
                            None => serde_json::Value::String(other.to_string()),
                        },
                    };
                    rec.1.insert(name.clone(), json);
                }
            }
            Ok(out)
        }
        other => Err(RunError::invalid(
            path,
            format!("metrics file extension `.{other}`: expected .csv or .jsonl"),
        )),
    }
}

fn map_metrics(spec: &ForeignMetrics, dir: &Path) -> Result<Vec<MetricsRow>, RunError> {
    let path = dir.join(&spec.file);
    let records = read_records(&path)?;
    let mut rows = Vec::with_capacity(records.len());
    for (line, rec) in records {
        let err = |reason: String| RunError::Line {
            path: path.clone(),
            line,
            reason,
        };
        let epoch = rec
            .get(&spec.epoch)
            .and_then(|v| {
                v.as_u64().or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                })
            })
            .ok_or_else(|| {
                err(format!(
                    "column `{}` (epoch) is missing or not a whole number",
                    spec.epoch
                ))
            })?;
        let split_raw = rec
            .get(&spec.split)
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                err(format!(
                    "column `{}` (split) is missing or not text",
                    spec.split
                ))
            })?;
        let split = mapping::map_split(&spec.split_values, split_raw).ok_or_else(|| {
            err(format!(
                "split `{split_raw}` is not train/valid/test; map it in [metrics.split_values]"
            ))
        })?;
        let domain = match rec.get(&spec.domain) {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let raw = v
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string());
                if raw.is_empty() {
                    None
                } else {
                    Some(
                        mapping::map_domain(&spec.domain_values, &raw)
                            .map_err(|e| err(format!("{e}; map it in [metrics.domain_values]")))?,
                    )
                }
            }
        };
        let mut values = Metrics::new();
        for (k, v) in &rec {
            if k == &spec.epoch || k == &spec.split || k == &spec.domain {
                continue;
            }
            let key = mapping::metric_key(&spec.rename, k);
            let value = match v {
                serde_json::Value::Null => continue, // absent in this row (CSV empty cell)
                serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                serde_json::Value::String(s) if s.eq_ignore_ascii_case("nan") => f64::NAN,
                other => return Err(err(format!("metric `{k}` = {other} is not a number"))),
            };
            values.insert(key, MetricValue(value));
        }
        rows.push(MetricsRow {
            epoch: epoch as u32,
            split,
            domain,
            values,
        });
    }
    Ok(rows)
}

/// Whether `dir` is a run folder of another tool ([`ForeignKind::of`]).
pub fn is_foreign_run(dir: &Path) -> bool {
    ForeignKind::of(dir).is_some()
}

/// Loads any foreign run folder: a manifest run, or a TensorBoard, Lightning or Hydra one.
pub fn load_any_foreign(dir: &Path) -> Result<LoadedRun, RunError> {
    match ForeignKind::of(dir) {
        Some(ForeignKind::Manifest) => load_foreign(dir),
        Some(kind) => logged::load_logged(dir, kind),
        None => Err(RunError::invalid(
            dir,
            "not a run folder (no run.json, manifest.toml, .hydra/config.yaml, event file or Lightning metrics.csv)",
        )),
    }
}

/// Loads a foreign run directory (with a `manifest.toml`) into a [`LoadedRun`].
pub fn load_foreign(dir: &Path) -> Result<LoadedRun, RunError> {
    let m = read_foreign_manifest(dir)?;
    let metrics = match &m.metrics {
        Some(spec) => map_metrics(spec, dir)?,
        None => Vec::new(),
    };
    let epochs_run = metrics.iter().map(|r| r.epoch).max().unwrap_or(0);
    let test: DomainMetrics = if !m.test.is_empty() {
        m.test
            .iter()
            .map(|(d, ms)| {
                (
                    *d,
                    ms.iter()
                        .map(|(k, v)| (k.clone(), MetricValue(*v)))
                        .collect(),
                )
            })
            .collect()
    } else {
        let at = m.best_epoch.unwrap_or(epochs_run);
        let mut t = DomainMetrics::new();
        for r in metrics
            .iter()
            .filter(|r| r.split == Split::Test && r.epoch == at)
        {
            if let Some(d) = r.domain {
                t.entry(d).or_default().extend(r.values.clone());
            }
        }
        t
    };
    let config = match &m.config {
        Some(t) => serde_json::to_value(t)
            .map_err(|e| RunError::invalid(&dir.join(FOREIGN_MANIFEST), e.to_string()))?,
        None => serde_json::Value::Object(Default::default()),
    };
    Ok(LoadedRun {
        dir: dir.to_owned(),
        manifest: RunManifest {
            format: RUN_FORMAT.to_owned(),
            format_version: FORMAT_VERSION,
            run_id: m.run_id,
            status: m.status,
            model: m.model,
            dataset: m.dataset,
            seed: m.seed,
            config,
            params: m.params,
            best_epoch: m.best_epoch,
            epochs_run,
            wall_time_s: m.wall_time_s,
            test,
            test_full: None,
            failure: None,
            stop_reason: None,
            trained_with: Vec::new(),
            resumes: Vec::new(),
        },
        metrics,
    })
}

/// Read access to a run's tensors by canonical name, whatever files hold them.
pub trait TensorSource {
    /// Canonical names available, sorted.
    fn names(&self) -> Vec<String>;
    fn f32(&self, name: &str) -> Result<ArrayViewD<'_, f32>, RunError>;
    /// Masks: u8 (or bool) tensors; a foreign f32 mask is not accepted.
    fn u8(&self, name: &str) -> Result<ArrayViewD<'_, u8>, RunError>;
    fn contains(&self, name: &str) -> bool {
        self.names().iter().any(|n| n == name)
    }
}

impl TensorSource for MappedTensors {
    fn names(&self) -> Vec<String> {
        MappedTensors::names(self)
    }
    fn f32(&self, name: &str) -> Result<ArrayViewD<'_, f32>, RunError> {
        MappedTensors::f32(self, name)
    }
    fn u8(&self, name: &str) -> Result<ArrayViewD<'_, u8>, RunError> {
        MappedTensors::u8(self, name)
    }
    fn contains(&self, name: &str) -> bool {
        MappedTensors::contains(self, name)
    }
}

enum Mapped {
    Npy(MappedNpy),
    Safetensors(MappedTensors, String),
}

/// The tensors of a foreign run, each file memory-mapped.
pub struct ForeignTensors {
    tensors: BTreeMap<String, Mapped>,
    dir: PathBuf,
}

/// Opens the tensors a foreign manifest maps (a `.npy` mask must be `u1`/`u8`; see
/// [`TensorSource::u8`]).
pub fn open_foreign_tensors(dir: &Path) -> Result<ForeignTensors, RunError> {
    let m = read_foreign_manifest(dir)?;
    let mut tensors = BTreeMap::new();
    for (name, t) in m.tensors {
        let (file, key) = match t {
            ForeignTensor::File(f) => (f, name.clone()),
            ForeignTensor::Keyed { file, key } => (file, key),
        };
        let path = dir.join(&file);
        let mapped = if path.extension().and_then(|e| e.to_str()) == Some("npy") {
            if name.ends_with(".mask") {
                // Masks are read as bytes: keep the whole map and decode on access.
                Mapped::Npy(MappedNpy::open_any(&path)?)
            } else {
                Mapped::Npy(map_npy_f32(&path)?)
            }
        } else {
            Mapped::Safetensors(MappedTensors::open(&path)?, key)
        };
        tensors.insert(name, mapped);
    }
    Ok(ForeignTensors {
        tensors,
        dir: dir.to_owned(),
    })
}

impl TensorSource for ForeignTensors {
    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
    fn f32(&self, name: &str) -> Result<ArrayViewD<'_, f32>, RunError> {
        match self.tensors.get(name) {
            Some(Mapped::Npy(n)) => n.view(),
            Some(Mapped::Safetensors(t, key)) => t.f32(key),
            None => Err(RunError::invalid(
                &self.dir.join(FOREIGN_MANIFEST),
                format!("no tensor mapped to `{name}`"),
            )),
        }
    }
    fn u8(&self, name: &str) -> Result<ArrayViewD<'_, u8>, RunError> {
        match self.tensors.get(name) {
            Some(Mapped::Npy(n)) => n.view_u8(),
            Some(Mapped::Safetensors(t, key)) => t.u8(key),
            None => Err(RunError::invalid(
                &self.dir.join(FOREIGN_MANIFEST),
                format!("no tensor mapped to `{name}`"),
            )),
        }
    }
    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Opens the tensors of any run (native `tensors.safetensors` or a foreign mapping);
/// `None` when the run captured none; [`RunError::Compact`] for a compact run, which keeps
/// statistics of its tensors but not the tensors.
pub fn open_run_tensors(run: &LoadedRun) -> Result<Option<Box<dyn TensorSource>>, RunError> {
    if run.dir.join(FOREIGN_MANIFEST).is_file() {
        let t = open_foreign_tensors(&run.dir)?;
        if t.tensors.is_empty() {
            return Ok(None);
        }
        return Ok(Some(Box::new(t)));
    }
    let p = run.tensors_path();
    if p.exists() {
        Ok(Some(Box::new(MappedTensors::open(&p)?)))
    } else if run.is_compact() {
        Err(RunError::Compact {
            path: run.dir.clone(),
        })
    } else {
        Ok(None)
    }
}
