//! What the TensorBoard, Lightning and Hydra readers share: which kind of folder a run is, and
//! how logged scalars and a config become a [`LoadedRun`] (see `docs/foreign-runs.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::mapping::{TagMapper, TagMeaning};
use crate::data::Domain;
use crate::runs::format::*;
use crate::runs::frames::flatten_json;
use crate::runs::reader::LoadedRun;
use crate::runs::RunError;

/// The kinds of run folder read besides native run directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignKind {
    /// A folder with a `manifest.toml` (see [`super::load_foreign`]).
    Manifest,
    /// A Hydra job folder: `.hydra/config.yaml`, with the logger's folder somewhere inside.
    Hydra,
    /// A folder holding `events.out.tfevents.*` files.
    TensorBoard,
    /// A Lightning CSVLogger folder: `metrics.csv` with `hparams.yaml` (or named `version_N`).
    LightningCsv,
}

impl ForeignKind {
    /// The kind of run folder `dir` is, if any (a native `run.json` is not looked at).
    pub fn of(dir: &Path) -> Option<ForeignKind> {
        if dir.join(super::FOREIGN_MANIFEST).is_file() {
            Some(ForeignKind::Manifest)
        } else if dir.join(super::hydra::HYDRA_CONFIG).is_file() {
            Some(ForeignKind::Hydra)
        } else {
            ForeignKind::logger(dir)
        }
    }

    /// A logger's folder: TensorBoard event files or a Lightning CSVLogger folder.
    pub fn logger(dir: &Path) -> Option<ForeignKind> {
        if !super::tensorboard::event_files(dir)
            .unwrap_or_default()
            .is_empty()
        {
            return Some(ForeignKind::TensorBoard);
        }
        let versioned = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("version_"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let csv = dir.join(super::lightning::METRICS_CSV).is_file();
        (csv && (versioned || dir.join(super::lightning::HPARAMS_YAML).is_file()))
            .then_some(ForeignKind::LightningCsv)
    }
}

/// One logged value before mapping: its tag or column, epoch and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub name: String,
    pub epoch: u32,
    pub value: f64,
}

/// Where a tag or column was found: a file and a line (CSV) or record (event file).
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub file: PathBuf,
    pub at: Position,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Position {
    /// 1-based line of a text file.
    Line(usize),
    /// 0-based record of an event file.
    Record(usize),
}

impl Source {
    /// An error at this place.
    pub fn error(&self, reason: String) -> RunError {
        match self.at {
            Position::Line(line) => RunError::Line {
                path: self.file.clone(),
                line,
                reason,
            },
            Position::Record(r) => RunError::invalid(&self.file, format!("record {r}: {reason}")),
        }
    }
}

/// A logger's run as read from disk, before the mapping is applied.
#[derive(Debug, Clone, Default)]
pub struct LoggerRun {
    /// Flattened config (dotted keys).
    pub config: BTreeMap<String, Value>,
    pub values: Vec<Logged>,
    /// Where each tag or column first appears, for errors.
    pub sources: BTreeMap<String, Source>,
    /// Set when the files show a run still being written, with why.
    pub still_written: Option<String>,
}

/// The run id of a run folder: its name, with its parent's for names that only number a run
/// (`version_0` and Hydra's `0`, `1`, ...): `abxi-d64/version_0` is `abxi-d64-version_0`.
pub fn run_id_of(dir: &Path) -> String {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into())
    };
    let own = name(dir);
    let numbered = own.strip_prefix("version_").unwrap_or(&own);
    if !numbered.is_empty() && numbered.bytes().all(|b| b.is_ascii_digit()) {
        if let Some(parent) = dir.parent() {
            return format!("{}-{own}", name(parent));
        }
    }
    own
}

/// Metric rows from logged values: one row per (epoch, split, domain), later values of a
/// metric replacing earlier ones within it. A name no pattern maps is an error at its
/// [`Source`] (under `dir` when it has none).
pub fn rows_of(
    run: &LoggerRun,
    mapper: &TagMapper,
    dir: &Path,
) -> Result<Vec<MetricsRow>, RunError> {
    let values = &run.values;
    let mut rows: BTreeMap<(u32, Split, Option<Domain>), Metrics> = BTreeMap::new();
    for v in values {
        match mapper.classify(&v.name) {
            Some(TagMeaning::Ignored) => {}
            Some(TagMeaning::Metric { split, domain, key }) => {
                rows.entry((v.epoch, split, domain))
                    .or_default()
                    .insert(key, MetricValue(v.value));
            }
            None => {
                let reason = mapper.unmapped(&v.name);
                return Err(match run.sources.get(&v.name) {
                    Some(source) => source.error(reason),
                    None => RunError::invalid(dir, reason),
                });
            }
        }
    }
    Ok(rows
        .into_iter()
        .map(|((epoch, split, domain), values)| MetricsRow {
            epoch,
            split,
            domain,
            values,
        })
        .collect())
}

/// Nested JSON from dotted keys (the inverse of [`flatten_json`]).
pub fn unflatten(flat: &BTreeMap<String, Value>) -> Value {
    let mut root = serde_json::Map::new();
    for (key, value) in flat {
        let mut node = &mut root;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                node.insert(part.to_owned(), value.clone());
                break;
            }
            let child = node
                .entry(part.to_owned())
                .or_insert_with(|| Value::Object(Default::default()));
            if !child.is_object() {
                *child = Value::Object(Default::default());
            }
            node = child.as_object_mut().expect("just made an object");
        }
    }
    Value::Object(root)
}

/// A number that is a whole non-negative value (JSON integer or integral float).
fn whole(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 2f64.powi(53))
            .map(|f| f as u64)
    })
}

/// Builds the [`LoadedRun`] of a logger's run: the mapping's model and dataset, the seed and
/// parameter count taken from their config keys (the seed kept as `train.seed`), final test
/// metrics from the last epoch with test rows. `flat_config` is the run's flattened config.
pub fn loaded_run(
    dir: &Path,
    mapper: &TagMapper,
    mut flat_config: BTreeMap<String, Value>,
    metrics: Vec<MetricsRow>,
    still_written: Option<String>,
) -> LoadedRun {
    let m = &mapper.mapping;
    let seed = flat_config.remove(&m.seed);
    let seed_value = seed.as_ref().and_then(whole).unwrap_or(0);
    if let Some(s) = seed {
        flat_config.insert("train.seed".into(), s);
    }
    let total = m
        .params
        .as_ref()
        .and_then(|k| flat_config.remove(k))
        .as_ref()
        .and_then(whole)
        .unwrap_or(0);
    let epochs_run = metrics.iter().map(|r| r.epoch).max().unwrap_or(0);
    let test_epoch = metrics
        .iter()
        .filter(|r| r.split == Split::Test)
        .map(|r| r.epoch)
        .max();
    let mut test = DomainMetrics::new();
    for r in metrics
        .iter()
        .filter(|r| r.split == Split::Test && Some(r.epoch) == test_epoch)
    {
        if let Some(d) = r.domain {
            test.entry(d).or_default().extend(r.values.clone());
        }
    }
    let status = if still_written.is_some() {
        RunStatus::Running
    } else {
        RunStatus::Complete
    };
    LoadedRun {
        dir: dir.to_owned(),
        manifest: RunManifest {
            format: RUN_FORMAT.to_owned(),
            format_version: FORMAT_VERSION,
            run_id: run_id_of(dir),
            status,
            model: m.model.clone(),
            dataset: m.dataset.clone(),
            seed: seed_value,
            config: unflatten(&flat_config),
            params: ParamCounts {
                total,
                by_module: Default::default(),
            },
            best_epoch: None,
            epochs_run,
            wall_time_s: None,
            test,
            test_full: None,
            // Foreign loggers do not record why training stopped.
            stop_reason: None,
            // For a run still being written, why it counts as one (the loader's skip reason).
            failure: still_written,
            trained_with: Vec::new(),
            resumes: Vec::new(),
        },
        metrics,
    }
}

/// Reads a logger's folder (TensorBoard or Lightning CSV) without its mapping applied.
pub fn read_logger(dir: &Path, kind: ForeignKind) -> Result<LoggerRun, RunError> {
    match kind {
        ForeignKind::TensorBoard => super::tensorboard::read_tensorboard(dir),
        ForeignKind::LightningCsv => super::lightning::read_lightning_csv(dir),
        ForeignKind::Manifest | ForeignKind::Hydra => Err(RunError::invalid(
            dir,
            "not a TensorBoard or Lightning CSVLogger folder",
        )),
    }
}

/// Loads a TensorBoard or Lightning folder, or a Hydra job, as a [`LoadedRun`] with the
/// mapping that applies to it ([`TagMapper::for_dir`]).
pub fn load_logged(dir: &Path, kind: ForeignKind) -> Result<LoadedRun, RunError> {
    let mapper = TagMapper::for_dir(dir)?;
    let (logger_dir, logger_kind, mut config) = match kind {
        ForeignKind::Hydra => {
            let (logger_dir, logger_kind) = super::hydra::logger_of_job(dir)?;
            (
                logger_dir,
                logger_kind,
                super::hydra::job_config(dir, &mapper)?,
            )
        }
        other => (dir.to_owned(), other, BTreeMap::new()),
    };
    let logged = read_logger(&logger_dir, logger_kind)?;
    let metrics = rows_of(&logged, &mapper, &logger_dir)?;
    // A Hydra job's own config wins over what its logger recorded as hyperparameters.
    let mut flat = logged.config;
    flat.append(&mut config);
    Ok(loaded_run(
        dir,
        &mapper,
        flat,
        metrics,
        logged.still_written,
    ))
}

/// [`flatten_json`] of a config that may be `null` (an empty file): no keys.
pub fn flat_config(config: &Value) -> BTreeMap<String, Value> {
    if config.is_null() {
        return BTreeMap::new();
    }
    let mut flat = flatten_json(config);
    flat.remove("");
    flat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_and_unflatten() {
        assert_eq!(
            run_id_of(Path::new("x/abxi-d64/version_0")),
            "abxi-d64-version_0"
        );
        assert_eq!(run_id_of(Path::new("sweep/multirun/3")), "multirun-3");
        assert_eq!(run_id_of(Path::new("tb/abxi-d256-s1")), "abxi-d256-s1");
        let v = serde_json::json!({"model": {"d_model": 64}, "gca": {"positions": [0, 1]}});
        assert_eq!(unflatten(&flatten_json(&v)), v);
    }
}
