//! Typed errors of every loader: each names the file and the line, record or field at fault.

use std::path::PathBuf;

/// What is wrong with one line (text formats) or one record (TFRecord, table row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineIssue {
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` is `{value}`, expected {expected}")]
    BadField {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("item id {id} is outside the declared range 1..={max}")]
    ItemOutOfRange { id: i64, max: u64 },
    #[error("user id {id} is outside the declared range 0..{n_users}")]
    UserOutOfRange { id: i64, n_users: usize },
    #[error("timestamps go backwards at interaction {index}: {prev} then {next}")]
    UnsortedTimestamps { index: usize, prev: i64, next: i64 },
    #[error("user {0} appears on more than one line")]
    DuplicateUser(i64),
    #[error("no interactions")]
    Empty,
    #[error("{0}")]
    Other(String),
}

/// Any failure while reading a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: expected {what}, not found", path.display())]
    Missing { path: PathBuf, what: String },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}:{line}: {issue}", path.display())]
    Line {
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        issue: LineIssue,
    },
    #[error("{}: record {record}: {issue}", path.display())]
    Record {
        path: PathBuf,
        /// 0-based record index within the file.
        record: usize,
        issue: RecordIssue,
    },
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
    #[error("{}: {source}", path.display())]
    Table {
        path: PathBuf,
        #[source]
        source: polars::error::PolarsError,
    },
}

/// What is wrong with one TFRecord record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIssue {
    #[error("file ends inside the record ({0})")]
    Truncated(&'static str),
    #[error("length CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    LengthCrc { stored: u32, computed: u32 },
    #[error("data CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    DataCrc { stored: u32, computed: u32 },
    #[error("not a tf.train.Example: {0}")]
    Decode(String),
    #[error("feature `{0}` is missing or not an int64 list")]
    MissingFeature(&'static str),
    #[error("features have different lengths: {0} items, {1} domains")]
    LengthMismatch(usize, usize),
    #[error("{0}")]
    Other(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn line(path: impl Into<PathBuf>, line: usize, issue: LineIssue) -> Self {
        DataError::Line {
            path: path.into(),
            line,
            issue,
        }
    }
    pub(crate) fn invalid(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        DataError::Invalid {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
