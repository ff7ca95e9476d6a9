//! Lightning CSVLogger folders (`version_N/`): `metrics.csv` and `hparams.yaml`.
//!
//! `metrics.csv` is sparse: Lightning writes one row per logging call, so train and
//! validation values sit on different rows with empty cells elsewhere. Each non-empty cell is
//! one value of its column at the row's epoch; `epoch` (counted from 0 by Lightning) becomes
//! the 1-based epoch of cdsr-lab, and `step` is not read. Every other column must be mapped
//! by the patterns of `foreign-runs.toml` or listed in its `ignore`: a column that is not
//! is an error at line 1 of the file, as is a row without an epoch at its line.
//! `hparams.yaml` is the config, flattened to dotted keys.

use std::path::Path;

use serde_json::Value;

use super::logged::{flat_config, Logged, LoggerRun, Position, Source};
use crate::runs::RunError;

/// Lightning's metrics file.
pub const METRICS_CSV: &str = "metrics.csv";
/// Lightning's hyperparameters file (CSVLogger and TensorBoardLogger).
pub const HPARAMS_YAML: &str = "hparams.yaml";

/// Reads a CSVLogger folder (see the module doc).
pub fn read_lightning_csv(dir: &Path) -> Result<LoggerRun, RunError> {
    let path = dir.join(METRICS_CSV);
    let records = super::read_records(&path)?;
    let mut run = LoggerRun::default();
    for (line, record) in records {
        let epoch = match record.get("epoch") {
            Some(v) => v.as_u64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            }),
            None => None,
        };
        let Some(epoch) = epoch else {
            return Err(RunError::Line {
                path,
                line,
                reason: "column `epoch` is missing, empty or not a whole number".into(),
            });
        };
        for (column, value) in record {
            let value = match value {
                Value::Null => continue,
                Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                Value::String(s) if s.eq_ignore_ascii_case("nan") => f64::NAN,
                other => {
                    return Err(RunError::Line {
                        path,
                        line,
                        reason: format!("column `{column}`: {other} is not a number"),
                    })
                }
            };
            run.sources.entry(column.clone()).or_insert_with(|| Source {
                file: path.clone(),
                at: Position::Line(1),
            });
            run.values.push(Logged {
                name: column,
                epoch: epoch as u32 + 1,
                value,
            });
        }
    }
    let hparams = dir.join(HPARAMS_YAML);
    if hparams.is_file() {
        run.config = flat_config(&super::yaml::read_yaml(&hparams)?);
    }
    Ok(run)
}
