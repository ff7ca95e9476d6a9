//! ABXI's preprocessed text format (`DiMarzioBian/ABXI`, `data/afk/`), e.g. food-kitchen.
//!
//! A directory holds three files:
//! - `*_preprocessed.txt`: one user per line, `user_id item|unix_ts item|unix_ts ...`,
//!   chronological; ties keep the file order.
//! - `map_item*.txt`: JSON `{key: [item_id, domain]}` with domain 0 = A, 1 = B.
//! - `map_user*.txt`: JSON `{key: user_id}`.
//!
//! The id space is taken as published (it already satisfies the [`Dataset`] invariant; the
//! loader checks that it does). Every line is validated: numeric ids, ids inside the declared
//! ranges, non-decreasing timestamps, one line per user.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::{DataError, LineIssue, Result};
use super::{Dataset, ItemId, UserSequence};

/// The three files of an ABXI dataset directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbxiFiles {
    pub sequences: PathBuf,
    pub item_map: PathBuf,
    pub user_map: PathBuf,
}

impl AbxiFiles {
    /// Finds `*_preprocessed.txt`, `map_item*.txt` and `map_user*.txt` in `dir`.
    pub fn discover(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        let find = |pred: &dyn Fn(&str) -> bool, what: &str| -> Result<PathBuf> {
            names
                .iter()
                .find(|n| pred(n))
                .map(|n| dir.join(n))
                .ok_or_else(|| DataError::Missing {
                    path: dir.to_path_buf(),
                    what: what.to_string(),
                })
        };
        Ok(AbxiFiles {
            sequences: find(
                &|n| n.ends_with("_preprocessed.txt"),
                "an ABXI sequence file `*_preprocessed.txt`",
            )?,
            item_map: find(
                &|n| n.starts_with("map_item") && n.ends_with(".txt"),
                "an item map `map_item*.txt`",
            )?,
            user_map: find(
                &|n| n.starts_with("map_user") && n.ends_with(".txt"),
                "a user map `map_user*.txt`",
            )?,
        })
    }

    /// True when `dir` looks like an ABXI dataset directory.
    pub fn is_abxi_dir(dir: &Path) -> bool {
        dir.is_dir() && Self::discover(dir).is_ok()
    }
}

/// Loads an ABXI dataset directory (e.g. `../shared/data/food-kitchen`).
///
/// The dataset name is the directory name; domain names come from a `NAMEA-NAMEB` directory
/// name (`food-kitchen` gives `Food` and `Kitchen`), else `A` and `B`.
pub fn load(dir: &Path) -> Result<Dataset> {
    let files = AbxiFiles::discover(dir)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "abxi".to_string());
    load_files(&files, &name)
}

/// Loads an ABXI dataset from explicit file paths.
pub fn load_files(files: &AbxiFiles, name: &str) -> Result<Dataset> {
    let n_items = read_item_map(&files.item_map)?;
    let n_users = read_user_map(&files.user_map)?;
    let users = read_sequences(&files.sequences, n_items, n_users)?;
    Ok(Dataset {
        name: name.to_string(),
        domain_names: domain_names_from(name),
        n_items,
        users,
    })
}

fn domain_names_from(name: &str) -> [String; 2] {
    let capital = |s: &str| {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect())
            .unwrap_or_default()
    };
    match name.split('-').collect::<Vec<_>>().as_slice() {
        [a, b] if !a.is_empty() && !b.is_empty() => [capital(a), capital(b)],
        _ => ["A".to_string(), "B".to_string()],
    }
}

fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))
}

/// Reads the item map and checks that its ids are exactly `1..=n_a` (domain 0) followed by
/// `n_a+1..=n_a+n_b` (domain 1). Returns `[n_a, n_b]`.
pub fn read_item_map(path: &Path) -> Result<[usize; 2]> {
    let text = read_to_string(path)?;
    let map: HashMap<String, (i64, i64)> =
        serde_json::from_str(&text).map_err(|source| DataError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    let mut n = [0usize; 2];
    for (key, &(_, dom)) in &map {
        match dom {
            0 | 1 => n[dom as usize] += 1,
            _ => {
                return Err(DataError::invalid(
                    path,
                    format!("item `{key}`: domain {dom}, expected 0 (A) or 1 (B)"),
                ))
            }
        }
    }
    let total = n[0] + n[1];
    let mut seen = vec![false; total + 1];
    for (key, &(id, dom)) in &map {
        if id < 1 || id as usize > total {
            return Err(DataError::invalid(
                path,
                format!("item `{key}`: id {id} outside 1..={total}"),
            ));
        }
        let in_a = (id as usize) <= n[0];
        if in_a != (dom == 0) {
            return Err(DataError::invalid(
                path,
                format!(
                    "item `{key}`: id {id} is in domain {dom} but A ids must be 1..={} and B ids after",
                    n[0]
                ),
            ));
        }
        if std::mem::replace(&mut seen[id as usize], true) {
            return Err(DataError::invalid(
                path,
                format!("item id {id} is used twice"),
            ));
        }
    }
    Ok(n)
}

/// Reads the user map and checks its ids are `0..n_users`. Returns `n_users`.
pub fn read_user_map(path: &Path) -> Result<usize> {
    let text = read_to_string(path)?;
    let map: HashMap<String, i64> =
        serde_json::from_str(&text).map_err(|source| DataError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    let n = map.len();
    let mut seen = vec![false; n];
    for (key, &id) in &map {
        if id < 0 || id as usize >= n {
            return Err(DataError::invalid(
                path,
                format!("user `{key}`: id {id} outside 0..{n}"),
            ));
        }
        if std::mem::replace(&mut seen[id as usize], true) {
            return Err(DataError::invalid(
                path,
                format!("user id {id} is used twice"),
            ));
        }
    }
    Ok(n)
}

fn parse_int(field: &'static str, s: &str, expected: &'static str) -> Result<i64, LineIssue> {
    s.parse::<i64>().map_err(|_| LineIssue::BadField {
        field,
        value: s.chars().take(40).collect(),
        expected,
    })
}

/// Parses one sequence line: `user item|ts item|ts ...`.
fn parse_line(line: &str, n_items: [usize; 2], n_users: usize) -> Result<UserSequence, LineIssue> {
    let max_item = (n_items[0] + n_items[1]) as u64;
    let mut fields = line.split_ascii_whitespace();
    let user_s = fields.next().ok_or(LineIssue::MissingField("user"))?;
    let user = parse_int("user", user_s, "an integer user id")?;
    if user < 0 || user as usize >= n_users {
        return Err(LineIssue::UserOutOfRange { id: user, n_users });
    }
    let mut items = Vec::with_capacity(64);
    let mut timestamps = Vec::with_capacity(64);
    for (index, tok) in fields.enumerate() {
        let (item_s, ts_s) = tok.split_once('|').ok_or_else(|| LineIssue::BadField {
            field: "interaction",
            value: tok.chars().take(40).collect(),
            expected: "`item|timestamp`",
        })?;
        let item = parse_int("item", item_s, "an integer item id")?;
        if item < 1 || item as u64 > max_item {
            return Err(LineIssue::ItemOutOfRange {
                id: item,
                max: max_item,
            });
        }
        let ts = parse_int("timestamp", ts_s, "an integer unix time")?;
        if let Some(&prev) = timestamps.last() {
            if ts < prev {
                return Err(LineIssue::UnsortedTimestamps {
                    index,
                    prev,
                    next: ts,
                });
            }
        }
        items.push(item as ItemId);
        timestamps.push(ts);
    }
    if items.is_empty() {
        return Err(LineIssue::Empty);
    }
    Ok(UserSequence {
        user: user as u32,
        items,
        timestamps,
    })
}

/// Reads the sequence file; lines in file order, blank lines skipped.
pub fn read_sequences(
    path: &Path,
    n_items: [usize; 2],
    n_users: usize,
) -> Result<Vec<UserSequence>> {
    let text = read_to_string(path)?;
    let mut users = Vec::with_capacity(n_users);
    let mut seen = vec![false; n_users];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let seq = parse_line(line, n_items, n_users)
            .map_err(|issue| DataError::line(path, i + 1, issue))?;
        if std::mem::replace(&mut seen[seq.user as usize], true) {
            return Err(DataError::line(
                path,
                i + 1,
                LineIssue::DuplicateUser(seq.user as i64),
            ));
        }
        users.push(seq);
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_line_and_keeps_tie_order() {
        let s = parse_line("3 5|10 2|10 7|11", [5, 3], 4).unwrap();
        assert_eq!(s.user, 3);
        assert_eq!(s.items, vec![5, 2, 7]);
        assert_eq!(s.timestamps, vec![10, 10, 11]);
    }

    #[test]
    fn line_issues() {
        let n = [5, 3];
        assert_eq!(
            parse_line("0 9|1", n, 1).unwrap_err(),
            LineIssue::ItemOutOfRange { id: 9, max: 8 }
        );
        assert_eq!(
            parse_line("0 0|1", n, 1).unwrap_err(),
            LineIssue::ItemOutOfRange { id: 0, max: 8 }
        );
        assert!(matches!(
            parse_line("0 x|1", n, 1).unwrap_err(),
            LineIssue::BadField { field: "item", .. }
        ));
        assert!(matches!(
            parse_line("0 3-1", n, 1).unwrap_err(),
            LineIssue::BadField {
                field: "interaction",
                ..
            }
        ));
        assert_eq!(
            parse_line("0 1|5 2|4", n, 1).unwrap_err(),
            LineIssue::UnsortedTimestamps {
                index: 1,
                prev: 5,
                next: 4
            }
        );
        assert_eq!(
            parse_line("2 1|5", n, 2).unwrap_err(),
            LineIssue::UserOutOfRange { id: 2, n_users: 2 }
        );
        assert_eq!(parse_line("0", n, 1).unwrap_err(), LineIssue::Empty);
    }

    #[test]
    fn domain_names() {
        assert_eq!(domain_names_from("food-kitchen"), ["Food", "Kitchen"]);
        assert_eq!(domain_names_from("x"), ["A", "B"]);
    }
}
