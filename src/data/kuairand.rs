//! KuaiRand-1K as AutoCDSR ships it (`snap-research/AutoCDSR`, `data/`): gzip TFRecord files of
//! `tf.train.Example` rows (`sequence_data`: item ids, -1 = out of vocabulary;
//! `sequence_event_type`: the domain/tab id) in `training/`, `evaluation/`, `testing/`, and
//! the same rows decoded to `decoded_tsv/{training,evaluation,testing}.tsv.gz`.
//!
//! AutoCDSR's pipeline, applied to each row: drop OOV tokens, keep the two configured domains
//! (default 9 = A and 4 = B), drop rows shorter than `min_len` (10), keep the last `max_len`
//! (800) tokens. Items are then re-indexed densely to the [`Dataset`] invariant: A items in
//! increasing original id, then B items. An original id seen in both domains becomes two
//! items, one per domain (it never happens for domains 9 and 4 of KuaiRand-1K). Timestamps are
//! the token's position in the original row. Rows are ordered by (file set, partition number,
//! row), so the TFRecord and TSV forms give identical datasets.
//!
//! Refused with the file and record or line: an empty (0-byte) file or one without rows, a
//! `.gz` file that is not gzip, two partition files with the same number, a record repeating
//! another byte for byte, a (partition, row) pair on two TSV lines, and a file set that keeps
//! no row after the pipeline. Each would otherwise add or drop users without a word.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::error::{DataError, LineIssue, RecordIssue, Result};
use super::split::FileSets;
use super::tfrecord::{
    list_tfrecord_files, partition_number, read_maybe_gz, read_records, Example,
};
use super::{Dataset, ItemId, UserSequence};

/// The three file sets, in dataset order.
pub const FILE_SETS: [&str; 3] = ["training", "evaluation", "testing"];

/// Feature names of the TFRecord rows.
pub const ITEMS_FEATURE: &str = "sequence_data";
pub const DOMAINS_FEATURE: &str = "sequence_event_type";

/// Options of AutoCDSR's preprocessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KuaiRandConfig {
    /// Source domain ids mapped to A and B.
    pub domains: [i64; 2],
    /// Rows shorter than this (after filtering) are dropped.
    pub min_len: usize,
    /// Keep at most the last `max_len` tokens.
    pub max_len: usize,
}

impl Default for KuaiRandConfig {
    fn default() -> Self {
        KuaiRandConfig {
            domains: [9, 4],
            min_len: 10,
            max_len: 800,
        }
    }
}

/// One raw row as stored: original item ids and domain ids, before any filtering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    pub partition: u64,
    pub row: usize,
    pub items: Vec<i64>,
    pub domains: Vec<i64>,
}

/// A loaded KuaiRand dataset.
#[derive(Debug, Clone)]
pub struct KuaiRand {
    pub dataset: Dataset,
    /// Users of each file set (training, evaluation, testing).
    pub file_sets: FileSets,
    /// Original item id of each dense id (index 0 = padding, -1).
    pub original_ids: Vec<i64>,
    /// Rows dropped as too short, per file set.
    pub dropped_rows: [usize; 3],
}

/// Reads every TFRecord file of one file-set directory, rows in (partition, row) order.
pub fn read_tfrecord_set(dir: &Path) -> Result<Vec<RawRow>> {
    let files = list_tfrecord_files(dir)?;
    if files.is_empty() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            what: "`*.tfrecord*` files".into(),
        });
    }
    let numbered: Vec<(u64, &PathBuf)> = files
        .iter()
        .map(|f| {
            (
                partition_number(&f.file_name().unwrap_or_default().to_string_lossy()),
                f,
            )
        })
        .collect();
    // Files come sorted by partition number: a copy of a partition sits next to it.
    if let Some(w) = numbered.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(DataError::invalid(
            dir,
            format!(
                "`{}` and `{}` have the same partition number: each partition's rows would be \
                 read twice",
                w[0].1.display(),
                w[1].1.display()
            ),
        ));
    }
    let per_file: Vec<Vec<RawRow>> = files
        .par_iter()
        .map(|f| read_tfrecord_file(f))
        .collect::<Result<_>>()?;
    Ok(per_file.into_iter().flatten().collect())
}

/// Reads one TFRecord file of KuaiRand rows.
pub fn read_tfrecord_file(path: &Path) -> Result<Vec<RawRow>> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partition = partition_number(&name);
    let records = read_records(path)?;
    // Two identical records are a copy (two users never share an 800-token history): read
    // twice, they would add a user in silence.
    let mut first: HashMap<&[u8], usize> = HashMap::with_capacity(records.len());
    for (i, rec) in records.iter().enumerate() {
        if let Some(j) = first.insert(rec.as_slice(), i) {
            return Err(DataError::Record {
                path: path.to_path_buf(),
                record: i,
                issue: RecordIssue::Other(format!("repeats record {j} byte for byte")),
            });
        }
    }
    records
        .iter()
        .enumerate()
        .map(|(i, rec)| {
            let err = |issue| DataError::Record {
                path: path.to_path_buf(),
                record: i,
                issue,
            };
            let ex = Example::decode_record(rec).map_err(err)?;
            let items = ex
                .int64_list(ITEMS_FEATURE)
                .ok_or(RecordIssue::MissingFeature(ITEMS_FEATURE))
                .map_err(err)?;
            let domains = ex
                .int64_list(DOMAINS_FEATURE)
                .ok_or(RecordIssue::MissingFeature(DOMAINS_FEATURE))
                .map_err(err)?;
            if items.len() != domains.len() {
                return Err(err(RecordIssue::LengthMismatch(items.len(), domains.len())));
            }
            if let Some(&bad) = items.iter().find(|&&v| v < -1) {
                return Err(err(RecordIssue::Other(format!(
                    "item id {bad}: ids are >= 0, or -1 for out of vocabulary"
                ))));
            }
            Ok(RawRow {
                partition,
                row: i,
                items: items.to_vec(),
                domains: domains.to_vec(),
            })
        })
        .collect()
}

/// Reads one decoded TSV file (`partition<TAB>row<TAB>items<TAB>domains`, `#` header),
/// rows sorted by (partition, row). A file without rows, a (partition, row) pair on two lines,
/// or a last line without a newline ([`super::text::check_final_newline`]) is an error.
pub fn read_tsv(path: &Path) -> Result<Vec<RawRow>> {
    let text = super::text::decode_utf8(path, read_maybe_gz(path)?)?;
    super::text::check_final_newline(path, &text)?;
    // (line number, row), sorted by (partition, row) then line.
    let mut rows: Vec<(usize, RawRow)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let row = parse_tsv_line(line).map_err(|issue| DataError::line(path, i + 1, issue))?;
        rows.push((i + 1, row));
    }
    if rows.is_empty() {
        return Err(DataError::invalid(
            path,
            "no rows (only a header or blank lines)",
        ));
    }
    rows.sort_by_key(|(line, r)| (r.partition, r.row, *line));
    if let Some(w) = rows
        .windows(2)
        .find(|w| (w[0].1.partition, w[0].1.row) == (w[1].1.partition, w[1].1.row))
    {
        let (first, (line, r)) = (w[0].0, &w[1]);
        return Err(DataError::line(
            path,
            *line,
            LineIssue::Other(format!(
                "partition_{} row {} is also on line {first}",
                r.partition, r.row
            )),
        ));
    }
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

fn parse_tsv_line(line: &str) -> std::result::Result<RawRow, LineIssue> {
    let mut f = line.split('\t');
    let part = f.next().ok_or(LineIssue::MissingField("partition"))?;
    let row = f.next().ok_or(LineIssue::MissingField("row"))?;
    let items = f.next().ok_or(LineIssue::MissingField("sequence_data"))?;
    let domains = f
        .next()
        .ok_or(LineIssue::MissingField("sequence_event_type"))?;
    if f.next().is_some() {
        return Err(LineIssue::Other(
            "more than 4 tab-separated fields (partition, row, items, domains)".into(),
        ));
    }
    let bad = |field, value: &str, expected| LineIssue::BadField {
        field,
        value: value.chars().take(40).collect(),
        expected,
    };
    // Exactly `partition_N`: the first digits anywhere in the field would read a damaged
    // `partiti8n_201` as partition 8 and reorder its rows without a word.
    let partition: u64 = part
        .strip_prefix("partition_")
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad("partition", part, "`partition_N`"))?;
    let row = row.parse().map_err(|_| bad("row", row, "a row number"))?;
    let ints = |field, s: &str| -> std::result::Result<Vec<i64>, LineIssue> {
        s.split_ascii_whitespace()
            .map(|t| t.parse::<i64>().map_err(|_| bad(field, t, "an integer")))
            .collect()
    };
    let items = ints("sequence_data", items)?;
    let domains = ints("sequence_event_type", domains)?;
    if items.len() != domains.len() {
        return Err(LineIssue::Other(format!(
            "{} items but {} domains",
            items.len(),
            domains.len()
        )));
    }
    if let Some(&v) = items.iter().find(|&&v| v < -1) {
        return Err(LineIssue::ItemOutOfRange {
            id: v,
            max: u64::MAX,
        });
    }
    Ok(RawRow {
        partition,
        row,
        items,
        domains,
    })
}

/// Loads the TFRecord form: `root/{training,evaluation,testing}/*.tfrecord.gz`.
pub fn load_tfrecord(root: &Path, cfg: KuaiRandConfig) -> Result<KuaiRand> {
    let sets = FILE_SETS
        .iter()
        .map(|s| read_tfrecord_set(&root.join(s)))
        .collect::<Result<Vec<_>>>()?;
    let k = build(sets.try_into().unwrap(), cfg, &dataset_name(root));
    check_file_sets(&k, root, cfg)?;
    Ok(k)
}

/// Refuses a file set left without rows by the pipeline (every row too short, or in other
/// domains): training or evaluation on it would silently have no users.
fn check_file_sets(k: &KuaiRand, root: &Path, cfg: KuaiRandConfig) -> Result<()> {
    let fs = &k.file_sets;
    for (s, range) in [&fs.train, &fs.valid, &fs.test].into_iter().enumerate() {
        if range.is_empty() {
            return Err(DataError::invalid(
                root,
                format!(
                    "no row of `{}` keeps at least {} tokens of domains {} and {} ({} rows dropped)",
                    FILE_SETS[s],
                    cfg.min_len.max(1),
                    cfg.domains[0],
                    cfg.domains[1],
                    k.dropped_rows[s]
                ),
            ));
        }
    }
    Ok(())
}

/// Loads the TSV form: `dir/{training,evaluation,testing}.tsv.gz` (`dir` may also be the
/// dataset root holding `decoded_tsv/`).
pub fn load_tsv(dir: &Path, cfg: KuaiRandConfig) -> Result<KuaiRand> {
    let dir: PathBuf = if dir.join("decoded_tsv").is_dir() {
        dir.join("decoded_tsv")
    } else {
        dir.to_path_buf()
    };
    let sets = FILE_SETS
        .iter()
        .map(|s| {
            let gz = dir.join(format!("{s}.tsv.gz"));
            let plain = dir.join(format!("{s}.tsv"));
            read_tsv(if gz.exists() || !plain.exists() {
                &gz
            } else {
                &plain
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let root = if dir.file_name().is_some_and(|n| n == "decoded_tsv") {
        dir.parent().unwrap_or(&dir)
    } else {
        &dir
    };
    let k = build(sets.try_into().unwrap(), cfg, &dataset_name(root));
    check_file_sets(&k, root, cfg)?;
    Ok(k)
}

fn dataset_name(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kuairand".into())
}

/// Applies AutoCDSR's pipeline to the raw rows of the three file sets.
pub fn build(sets: [Vec<RawRow>; 3], cfg: KuaiRandConfig, name: &str) -> KuaiRand {
    // Filter and truncate: (original item, domain index, position) per kept token.
    let mut kept: [Vec<Vec<(i64, usize, i64)>>; 3] = Default::default();
    let mut dropped_rows = [0usize; 3];
    for (s, rows) in sets.iter().enumerate() {
        for r in rows {
            let mut toks: Vec<(i64, usize, i64)> = r
                .items
                .iter()
                .zip(&r.domains)
                .enumerate()
                .filter(|(_, (&it, _))| it >= 0)
                .filter_map(|(pos, (&it, &d))| {
                    cfg.domains
                        .iter()
                        .position(|&x| x == d)
                        .map(|di| (it, di, pos as i64))
                })
                .collect();
            if toks.len() < cfg.min_len.max(1) {
                dropped_rows[s] += 1;
                continue;
            }
            if toks.len() > cfg.max_len {
                toks.drain(..toks.len() - cfg.max_len);
            }
            kept[s].push(toks);
        }
    }
    // Dense ids: A items by original id, then B items.
    let mut per_domain: [Vec<i64>; 2] = Default::default();
    for toks in kept.iter().flatten() {
        for &(it, d, _) in toks {
            per_domain[d].push(it);
        }
    }
    for v in per_domain.iter_mut() {
        v.sort_unstable();
        v.dedup();
    }
    let n_items = [per_domain[0].len(), per_domain[1].len()];
    let mut original_ids = Vec::with_capacity(n_items[0] + n_items[1] + 1);
    original_ids.push(-1);
    let mut index: [HashMap<i64, ItemId>; 2] = Default::default();
    for d in 0..2 {
        index[d].reserve(per_domain[d].len());
        for &it in &per_domain[d] {
            index[d].insert(it, original_ids.len() as ItemId);
            original_ids.push(it);
        }
    }
    let mut users = Vec::new();
    let mut bounds = [0usize; 4];
    for (s, rows) in kept.iter().enumerate() {
        for toks in rows {
            users.push(UserSequence {
                user: users.len() as u32,
                items: toks.iter().map(|&(it, d, _)| index[d][&it]).collect(),
                timestamps: toks.iter().map(|&(_, _, p)| p).collect(),
            });
        }
        bounds[s + 1] = users.len();
    }
    KuaiRand {
        dataset: Dataset {
            name: name.to_string(),
            domain_names: [
                format!("tab{}", cfg.domains[0]),
                format!("tab{}", cfg.domains[1]),
            ],
            n_items,
            users,
        },
        file_sets: FileSets {
            train: bounds[0]..bounds[1],
            valid: bounds[1]..bounds[2],
            test: bounds[2]..bounds[3],
        },
        original_ids,
        dropped_rows,
    }
}

/// True when `dir` holds the TFRecord form (`training/*.tfrecord*`).
pub fn is_tfrecord_root(dir: &Path) -> bool {
    list_tfrecord_files(&dir.join("training")).is_ok_and(|f| !f.is_empty())
}

/// True when `dir` holds the TSV form (`training.tsv.gz`, directly or under `decoded_tsv/`).
pub fn is_tsv_dir(dir: &Path) -> bool {
    dir.join("training.tsv.gz").is_file() || dir.join("decoded_tsv/training.tsv.gz").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(p: u64, items: &[i64], domains: &[i64]) -> RawRow {
        RawRow {
            partition: p,
            row: 0,
            items: items.to_vec(),
            domains: domains.to_vec(),
        }
    }

    #[test]
    fn pipeline_filters_truncates_and_reindexes() {
        let cfg = KuaiRandConfig {
            domains: [9, 4],
            min_len: 3,
            max_len: 4,
        };
        let train = vec![
            // OOV and domain 0 dropped -> [50(9), 7(4), 50(9), 30(9), 7(4)] -> last 4
            row(0, &[50, -1, 7, 99, 50, 30, 7], &[9, 9, 4, 0, 9, 9, 4]),
            // too short after filtering
            row(1, &[1, 2, 3], &[9, 0, 0]),
        ];
        let valid = vec![row(2, &[30, 8, 50], &[9, 4, 9])];
        let k = build([train, valid, vec![]], cfg, "k");
        // A originals {30, 50} -> 1, 2; B originals {7, 8} -> 3, 4
        assert_eq!(k.dataset.n_items, [2, 2]);
        assert_eq!(k.original_ids, vec![-1, 30, 50, 7, 8]);
        assert_eq!(k.dataset.users[0].items, vec![3, 2, 1, 3]);
        assert_eq!(k.dataset.users[0].timestamps, vec![2, 4, 5, 6]);
        assert_eq!(k.dataset.users[1].items, vec![1, 4, 2]);
        assert_eq!(k.dropped_rows, [1, 0, 0]);
        assert_eq!(
            k.file_sets,
            FileSets {
                train: 0..1,
                valid: 1..2,
                test: 2..2
            }
        );
    }

    #[test]
    fn tsv_line_errors() {
        assert!(parse_tsv_line("partition_1\t0\t1 2\t9 9").is_ok());
        assert_eq!(
            parse_tsv_line("partition_1\t0\t1 2").unwrap_err(),
            LineIssue::MissingField("sequence_event_type")
        );
        assert!(matches!(
            parse_tsv_line("partition_1\t0\t1 x\t9 9").unwrap_err(),
            LineIssue::BadField {
                field: "sequence_data",
                ..
            }
        ));
        assert!(matches!(
            parse_tsv_line("partition_1\t0\t1 2\t9").unwrap_err(),
            LineIssue::Other(_)
        ));
        for part in [
            "partiti8n_201",
            "partition_",
            "partition_+1",
            "xpartition_1",
        ] {
            assert!(matches!(
                parse_tsv_line(&format!("{part}\t0\t1\t9")).unwrap_err(),
                LineIssue::BadField {
                    field: "partition",
                    ..
                }
            ));
        }
    }
}
