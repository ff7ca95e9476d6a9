//! One entry point for every on-disk format: [`load`] detects the format of a path.

use std::path::Path;

use super::error::{DataError, Result};
use super::split::{FileSets, Split};
use super::{abxi, kuairand, table, Dataset};

/// The on-disk formats the crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// ABXI's `*_preprocessed.txt` + item and user maps (a directory).
    Abxi,
    /// KuaiRand-1K as gzip TFRecords: `{training,evaluation,testing}/*.tfrecord.gz`.
    KuaiRandTfRecord,
    /// KuaiRand-1K decoded: `{training,evaluation,testing}.tsv.gz`.
    KuaiRandTsv,
    /// A generic interactions table (CSV or Parquet).
    Table,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Abxi => "abxi",
            Format::KuaiRandTfRecord => "kuairand-tfrecord",
            Format::KuaiRandTsv => "kuairand-tsv",
            Format::Table => "table",
        })
    }
}

/// A loaded dataset plus what its format says about splitting it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub format: Format,
    pub dataset: Dataset,
    /// Users partitioned by file set (KuaiRand); `None` means leave-one-out.
    pub file_sets: Option<FileSets>,
}

impl Loaded {
    /// The split the format calls for: by file set when there are file sets, else
    /// leave-one-out.
    pub fn default_split(&self) -> Split {
        match &self.file_sets {
            Some(s) => Split::by_file_sets(&self.dataset, s),
            None => Split::leave_one_out(&self.dataset),
        }
    }
}

/// Detects the format of `path`.
pub fn detect(path: &Path) -> Result<Format> {
    if !path.exists() {
        return Err(DataError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    }
    if path.is_dir() {
        if abxi::AbxiFiles::is_abxi_dir(path) {
            return Ok(Format::Abxi);
        }
        if kuairand::is_tfrecord_root(path) {
            return Ok(Format::KuaiRandTfRecord);
        }
        if kuairand::is_tsv_dir(path) {
            return Ok(Format::KuaiRandTsv);
        }
    } else if table::TableFormat::of_path(path).is_some() {
        return Ok(Format::Table);
    }
    Err(DataError::Missing {
        path: path.to_path_buf(),
        what: "a dataset: an ABXI directory (`*_preprocessed.txt`, `map_item*.txt`, \
               `map_user*.txt`), a KuaiRand directory (`training/*.tfrecord.gz` or \
               `training.tsv.gz`) or a `.csv`/`.parquet` interactions table"
            .to_string(),
    })
}

/// Loads any supported dataset path.
pub fn load(path: &Path) -> Result<Loaded> {
    let format = detect(path)?;
    match format {
        Format::Abxi => Ok(Loaded {
            format,
            dataset: abxi::load(path)?,
            file_sets: None,
        }),
        Format::KuaiRandTfRecord | Format::KuaiRandTsv => {
            let cfg = kuairand::KuaiRandConfig::default();
            let k = if format == Format::KuaiRandTfRecord {
                kuairand::load_tfrecord(path, cfg)?
            } else {
                kuairand::load_tsv(path, cfg)?
            };
            Ok(Loaded {
                format,
                dataset: k.dataset,
                file_sets: Some(k.file_sets),
            })
        }
        Format::Table => Ok(Loaded {
            format,
            dataset: table::load(path, &table::TableConfig::default())?.dataset,
            file_sets: None,
        }),
    }
}
