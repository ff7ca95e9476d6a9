//! Errors of reading and writing run directories; each names the file (and line or field).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {reason}")]
    Json { path: PathBuf, reason: String },
    #[error("{path}: line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: unsupported format `{format}` version {version} (this crate reads `{expected}` version {expected_version})")]
    Version {
        path: PathBuf,
        format: String,
        version: u32,
        expected: &'static str,
        expected_version: u32,
    },
    #[error("{path}: {reason}")]
    Tensors { path: PathBuf, reason: String },
    #[error("tensor `{name}`: {reason}")]
    TensorShape { name: String, reason: String },
    #[error("{path}: config cannot be written as TOML: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("invalid run id `{0}`: use letters, digits, `-`, `_` and `.` only")]
    RunId(String),
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: the run is compact: its captured tensors are kept as per-row statistics (capture_stats.parquet), not as raw tensors; analyses of the raw tensors need the full run (retrain it from its config.toml)")]
    Compact { path: PathBuf },
    #[error("{path}: {source}")]
    Polars {
        path: PathBuf,
        source: polars::error::PolarsError,
    },
}

impl RunError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        RunError::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn invalid(path: &Path, reason: impl Into<String>) -> Self {
        RunError::Invalid {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}
