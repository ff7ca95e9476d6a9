//! A generic interactions table (CSV with a header, or Parquet) so any dataset can be brought
//! in: one row per interaction with columns `user`, `item`, `domain`, `timestamp` (names
//! configurable).
//!
//! - `domain` values are mapped to A and B by a pair given in [`TableConfig::domains`]; rows of
//!   any other domain are dropped (counted). Without a pair, the table must have exactly two
//!   distinct domain values, taken in sorted order (A = the smaller).
//! - Each user's interactions are sorted by `timestamp` (integer), stably: ties keep the
//!   table's row order.
//! - What is refused, with the line (CSV) or row (Parquet): see [`load`].
//! - Users and items keep their original keys ([`Table::user_keys`], [`Table::item_keys`]);
//!   dense ids follow the [`Dataset`] invariant, items in increasing key order within a domain
//!   (numeric keys numerically). An item key seen in both domains becomes two items.

use std::collections::HashMap;
use std::path::Path;

use polars::prelude::*;

use super::error::{DataError, LineIssue, Result};
use super::{text, Dataset, ItemId, UserSequence};

/// CSV or Parquet, from the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Csv,
    Parquet,
}

impl TableFormat {
    /// `.csv` (also `.tsv` is not accepted) or `.parquet`/`.pq`.
    pub fn of_path(path: &Path) -> Option<TableFormat> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(TableFormat::Csv),
            "parquet" | "pq" => Some(TableFormat::Parquet),
            _ => None,
        }
    }
}

/// Column names of an interactions table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableColumns {
    pub user: String,
    pub item: String,
    pub domain: String,
    pub timestamp: String,
}

impl Default for TableColumns {
    fn default() -> Self {
        TableColumns {
            user: "user".into(),
            item: "item".into(),
            domain: "domain".into(),
            timestamp: "timestamp".into(),
        }
    }
}

/// How to read an interactions table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableConfig {
    pub columns: TableColumns,
    /// The domain values that become A and B; `None`: the two values present, sorted.
    pub domains: Option<[String; 2]>,
}

/// A loaded table.
#[derive(Debug, Clone)]
pub struct Table {
    pub dataset: Dataset,
    /// Original user key per dataset user.
    pub user_keys: Vec<String>,
    /// Original item key per dense id (index 0, padding, is empty).
    pub item_keys: Vec<String>,
    /// Rows whose domain is neither of the pair.
    pub dropped_rows: usize,
}

/// Numeric-aware key order: integers numerically, then other strings.
fn key_order(s: &str) -> (bool, i64, &str) {
    match s.parse::<i64>() {
        Ok(v) => (false, v, s),
        Err(_) => (true, 0, s),
    }
}

/// Start line (1-based) and field count of each non-blank record of a CSV text, header
/// included. Quoting as in RFC 4180: a quoted field may hold commas, newlines and doubled
/// quotes. `Err(line)` when a quoted field opened on `line` is never closed.
fn csv_records(text: &str) -> std::result::Result<Vec<(usize, usize)>, usize> {
    let mut out = Vec::new();
    let (mut line, mut start, mut fields) = (1, 1, 1);
    let (mut quoted, mut blank, mut quote_line) = (false, true, 0);
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                quote_line = line;
                blank = false;
            }
            ',' if !quoted => {
                fields += 1;
                blank = false;
            }
            '\n' => {
                line += 1;
                if !quoted {
                    if !blank {
                        out.push((start, fields));
                    }
                    (start, fields, blank) = (line, 1, true);
                }
            }
            '\r' => {}
            _ => blank = false,
        }
    }
    if quoted {
        return Err(quote_line);
    }
    if !blank {
        out.push((start, fields));
    }
    Ok(out)
}

/// Reads a CSV text checked for shape first: every record has the header's number of fields
/// (a ragged row is named by its line), at least one row, a final newline. Returns the frame
/// (every column as text) and the start line of each row.
fn read_csv(
    path: &Path,
    table_err: impl Fn(PolarsError) -> DataError,
) -> Result<(DataFrame, Vec<usize>)> {
    let text = text::read_text(path)?;
    text::check_final_newline(path, &text)?;
    let records = csv_records(&text).map_err(|line| {
        DataError::line(
            path,
            line,
            LineIssue::Other("a quoted field is never closed".into()),
        )
    })?;
    let Some(&(_, width)) = records.first() else {
        return Err(DataError::invalid(
            path,
            "empty file: no header and no rows",
        ));
    };
    if let Some(&(line, n)) = records.iter().find(|(_, n)| *n != width) {
        return Err(DataError::line(
            path,
            line,
            LineIssue::Other(format!("{n} fields, but the header (line 1) has {width}")),
        ));
    }
    if records.len() == 1 {
        return Err(DataError::invalid(
            path,
            "no rows: the file holds only its header",
        ));
    }
    // Every column as text: ids stay exact and each bad value is reported by line.
    let df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .into_reader_with_file_handle(std::io::Cursor::new(text.into_bytes()))
        .finish()
        .map_err(table_err)?;
    let lines: Vec<usize> = records[1..].iter().map(|&(line, _)| line).collect();
    if df.height() != lines.len() {
        return Err(DataError::invalid(
            path,
            format!(
                "{} rows read but the file holds {} records: is the quoting unusual?",
                df.height(),
                lines.len()
            ),
        ));
    }
    Ok((df, lines))
}

/// Reads a CSV or Parquet interactions table.
///
/// Refused, with the file and the line (CSV) or row (Parquet): a table without rows, a ragged
/// CSV row, a CSV without a final newline, a missing value, a non-integer timestamp (also a
/// floating-point Parquet column: NaN or 1e30 are no time), a row repeating another one
/// exactly, and a domain pair of which one domain has no rows. A leading UTF-8 byte-order mark
/// is dropped.
pub fn load(path: &Path, cfg: &TableConfig) -> Result<Table> {
    let format = TableFormat::of_path(path).ok_or_else(|| {
        DataError::invalid(path, "unknown table extension: expected .csv or .parquet")
    })?;
    if !path.is_file() {
        return Err(DataError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let table_err = |error| DataError::Table {
        path: path.to_path_buf(),
        error,
    };
    let (df, csv_lines) = match format {
        TableFormat::Csv => read_csv(path, table_err)?,
        TableFormat::Parquet => {
            let f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
            let df = ParquetReader::new(f).finish().map_err(table_err)?;
            if df.height() == 0 {
                return Err(DataError::invalid(path, "no rows"));
            }
            (df, Vec::new())
        }
    };
    // Error locations: CSV line numbers, Parquet row numbers (0-based).
    let at = |row: usize, issue: LineIssue| match format {
        TableFormat::Csv => DataError::line(path, csv_lines[row], issue),
        TableFormat::Parquet => DataError::invalid(path, format!("row {row}: {issue}")),
    };
    let where_is = |row: usize| match format {
        TableFormat::Csv => format!("line {}", csv_lines[row]),
        TableFormat::Parquet => format!("row {row}"),
    };
    let c = &cfg.columns;
    let text_col = |name: &str| -> Result<Vec<Option<String>>> {
        let col = df.column(name).map_err(|_| {
            DataError::invalid(
                path,
                format!("missing column `{name}` (have {:?})", df.get_column_names()),
            )
        })?;
        let s = col.cast(&DataType::String).map_err(table_err)?;
        Ok(s.str()
            .map_err(table_err)?
            .iter()
            .map(|v| v.map(str::to_string))
            .collect())
    };
    let users = text_col(&c.user)?;
    let items = text_col(&c.item)?;
    let domains = text_col(&c.domain)?;
    let ts: Vec<Option<i64>> = {
        let col = df
            .column(&c.timestamp)
            .map_err(|_| DataError::invalid(path, format!("missing column `{}`", c.timestamp)))?;
        if col.dtype() == &DataType::String {
            let s = col.str().map_err(table_err)?;
            let mut out = Vec::with_capacity(s.len());
            for (row, v) in s.iter().enumerate() {
                out.push(match v {
                    None => None,
                    Some(t) => Some(t.trim().parse::<i64>().map_err(|_| {
                        at(
                            row,
                            LineIssue::BadField {
                                field: "timestamp",
                                value: t.chars().take(40).collect(),
                                expected: "an integer",
                            },
                        )
                    })?),
                });
            }
            out
        } else if col.dtype().is_float() {
            return Err(DataError::invalid(
                path,
                format!(
                    "column `{}` holds {} numbers: timestamps must be integers (e.g. unix \
                     seconds), as in a CSV table; convert the column to int64",
                    c.timestamp,
                    col.dtype()
                ),
            ));
        } else {
            let s = col.cast(&DataType::Int64).map_err(table_err)?;
            s.i64().map_err(table_err)?.iter().collect()
        }
    };
    // The domain pair.
    let pair: [String; 2] = match &cfg.domains {
        Some(p) => p.clone(),
        None => {
            let mut vals: Vec<&str> = domains.iter().flatten().map(|s| s.as_str()).collect();
            vals.sort_by_key(|s| key_order(s));
            vals.dedup();
            match vals.as_slice() {
                [a, b] => [a.to_string(), b.to_string()],
                _ => {
                    return Err(DataError::invalid(
                        path,
                        format!(
                            "column `{}` has {} distinct value(s) {:?}: a cross-domain table has \
                             exactly two, or names the two to keep in `TableConfig::domains`",
                            c.domain,
                            vals.len(),
                            vals.iter().take(5).collect::<Vec<_>>()
                        ),
                    ))
                }
            }
        }
    };
    // Rows -> (row, user key, item key, domain index, ts), validated.
    let mut rows: Vec<(usize, &str, &str, usize, i64)> = Vec::with_capacity(df.height());
    let mut dropped_rows = 0;
    for row in 0..df.height() {
        let need = |v: &Option<String>, field: &'static str| -> Result<()> {
            if v.is_none() {
                Err(at(row, LineIssue::MissingField(field)))
            } else {
                Ok(())
            }
        };
        need(&users[row], "user")?;
        need(&items[row], "item")?;
        need(&domains[row], "domain")?;
        let t = ts[row].ok_or_else(|| at(row, LineIssue::MissingField("timestamp")))?;
        let d = domains[row].as_deref().unwrap();
        let Some(di) = pair.iter().position(|p| p == d) else {
            dropped_rows += 1;
            continue;
        };
        rows.push((
            row,
            users[row].as_deref().unwrap(),
            items[row].as_deref().unwrap(),
            di,
            t,
        ));
    }
    for (d, name) in pair.iter().enumerate() {
        if !rows.iter().any(|r| r.3 == d) {
            return Err(DataError::invalid(
                path,
                format!(
                    "no row has `{}` = `{name}`: domain {} is empty",
                    c.domain,
                    ["A", "B"][d]
                ),
            ));
        }
    }
    // An exact repeat of a row (same user, item, domain and time) is a copy, not a second
    // interaction: it would silently weigh that interaction twice.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| (rows[i].1, rows[i].2, rows[i].3, rows[i].4, rows[i].0));
    if let Some(w) = order.windows(2).find(|w| {
        let (a, b) = (&rows[w[0]], &rows[w[1]]);
        (a.1, a.2, a.3, a.4) == (b.1, b.2, b.3, b.4)
    }) {
        return Err(DataError::invalid(
            path,
            format!(
                "{} repeats {} (same user, item, domain and timestamp): remove the copy",
                where_is(rows[w[1]].0),
                where_is(rows[w[0]].0)
            ),
        ));
    }
    // Dense item ids.
    let mut per_domain: [Vec<&str>; 2] = Default::default();
    for &(_, _, it, d, _) in &rows {
        per_domain[d].push(it);
    }
    for v in per_domain.iter_mut() {
        v.sort_by_key(|s| key_order(s));
        v.dedup();
    }
    let n_items = [per_domain[0].len(), per_domain[1].len()];
    let mut item_keys = vec![String::new()];
    let mut index: [HashMap<&str, ItemId>; 2] = Default::default();
    for d in 0..2 {
        for &k in &per_domain[d] {
            index[d].insert(k, item_keys.len() as ItemId);
            item_keys.push(k.to_string());
        }
    }
    // Users in key order, interactions stably sorted by time.
    let mut by_user: HashMap<&str, Vec<(i64, ItemId)>> = HashMap::new();
    for &(_, u, it, d, t) in &rows {
        by_user.entry(u).or_default().push((t, index[d][it]));
    }
    let mut user_keys: Vec<&str> = by_user.keys().copied().collect();
    user_keys.sort_by_key(|s| key_order(s));
    let users: Vec<UserSequence> = user_keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let mut v = by_user.remove(k).unwrap();
            v.sort_by_key(|&(t, _)| t);
            UserSequence {
                user: i as u32,
                items: v.iter().map(|&(_, it)| it).collect(),
                timestamps: v.iter().map(|&(t, _)| t).collect(),
            }
        })
        .collect();
    let name = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Table {
        dataset: Dataset {
            name,
            domain_names: pair,
            n_items,
            users,
        },
        user_keys: user_keys.into_iter().map(str::to_string).collect(),
        item_keys,
        dropped_rows,
    })
}
