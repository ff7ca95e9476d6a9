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
//! ranges, non-decreasing timestamps, one line per user, and a line for every user of the user
//! map, so a sequence file cut short is an error (its last line must end with a newline, see
//! [`super::text`]). A directory with a `*_preprocessed.txt` is taken as an ABXI directory:
//! two candidates for one of the three files, or a missing map, is an error naming them.
//! Maps with a key written twice, ids not exactly `1..=n` (items) or `0..n` (users), or a
//! domain without items are refused; a leading UTF-8 byte-order mark is dropped.

use std::path::{Path, PathBuf};

use super::error::{DataError, LineIssue, Result};
use super::{text, Dataset, ItemId, UserSequence};

/// The three files of an ABXI dataset directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbxiFiles {
    pub sequences: PathBuf,
    pub item_map: PathBuf,
    pub user_map: PathBuf,
}

impl AbxiFiles {
    /// Finds `*_preprocessed.txt`, `map_item*.txt` and `map_user*.txt` in `dir`: exactly one
    /// of each (two candidates are an error naming both, never a silent pick by name).
    pub fn discover(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        let find = |pred: &dyn Fn(&str) -> bool, what: &str| -> Result<PathBuf> {
            let found: Vec<&String> = names.iter().filter(|n| pred(n)).collect();
            match found.as_slice() {
                [one] => Ok(dir.join(one)),
                [] => Err(DataError::Missing {
                    path: dir.to_path_buf(),
                    what: format!(
                        "{what} (an ABXI directory holds `*_preprocessed.txt`, \
                         `map_item*.txt` and `map_user*.txt`)"
                    ),
                }),
                several => Err(DataError::invalid(
                    dir,
                    format!(
                        "{} files could be {what}: {}; keep one per directory",
                        several.len(),
                        several
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        };
        Ok(AbxiFiles {
            sequences: find(
                &is_sequence_file,
                "the ABXI sequence file `*_preprocessed.txt`",
            )?,
            item_map: find(&is_item_map, "the item map `map_item*.txt`")?,
            user_map: find(&is_user_map, "the user map `map_user*.txt`")?,
        })
    }

    /// True when `dir` holds any of the three files: the directory is meant as an ABXI
    /// dataset, so a missing or doubled file is reported by [`load`] rather than the directory
    /// being taken for something else.
    pub fn is_abxi_dir(dir: &Path) -> bool {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.filter_map(|e| e.ok()).any(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| is_sequence_file(n) || is_item_map(n) || is_user_map(n))
            })
        })
    }
}

fn is_sequence_file(name: &str) -> bool {
    name.ends_with("_preprocessed.txt")
}

fn is_item_map(name: &str) -> bool {
    name.starts_with("map_item") && name.ends_with(".txt")
}

fn is_user_map(name: &str) -> bool {
    name.starts_with("map_user") && name.ends_with(".txt")
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

/// A JSON object's entries in file order, duplicate keys kept (a `HashMap` would keep the
/// last one silently).
struct Entries<V>(Vec<(String, V)>);

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for Entries<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Entries<V>, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// Reads a JSON map file: its entries, refusing a key that appears twice.
fn read_json_map<V: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<(String, V)>> {
    let text = text::read_text(path)?;
    let Entries(entries) = serde_json::from_str(&text).map_err(|error| DataError::Json {
        path: path.to_path_buf(),
        error,
    })?;
    let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
        return Err(DataError::invalid(
            path,
            format!("key `{}` appears twice", w[0]),
        ));
    }
    if entries.is_empty() {
        return Err(DataError::invalid(path, "the map is empty"));
    }
    Ok(entries)
}

/// Reads the item map and checks that its ids are exactly `1..=n_a` (domain 0) followed by
/// `n_a+1..=n_a+n_b` (domain 1). Returns `[n_a, n_b]`. An item whose domain breaks that
/// layout is named by its key and id.
pub fn read_item_map(path: &Path) -> Result<[usize; 2]> {
    let mut map: Vec<(String, (i64, i64))> = read_json_map(path)?;
    for (key, (_, dom)) in &map {
        if !matches!(dom, 0 | 1) {
            return Err(DataError::invalid(
                path,
                format!("item `{key}`: domain {dom}, expected 0 (A) or 1 (B)"),
            ));
        }
    }
    let total = map.len();
    map.sort_by_key(|(_, (id, _))| *id);
    for (i, (key, (id, _))) in map.iter().enumerate() {
        if *id < 1 || *id as usize > total {
            return Err(DataError::invalid(
                path,
                format!("item `{key}`: id {id} outside 1..={total} (the map has {total} items)"),
            ));
        }
        if i > 0 && map[i - 1].1 .0 == *id {
            return Err(DataError::invalid(
                path,
                format!("item id {id} is used twice: `{}` and `{key}`", map[i - 1].0),
            ));
        }
    }
    // Ids are now exactly 1..=total in order; their domains must read 0...0 1...1.
    let dom: Vec<i64> = map.iter().map(|(_, (_, d))| *d).collect();
    if let Some(i) = dom.windows(2).position(|w| w == [1, 0]) {
        // A B id followed by an A id. The item that differs from both its neighbours is the
        // one out of place: the A id inside the B ids, else the B id inside the A ids.
        let culprit = if dom.get(i + 2) == Some(&1) { i + 1 } else { i };
        let (key, (id, d)) = &map[culprit];
        let name = |d: i64| if d == 0 { "0 (A)" } else { "1 (B)" };
        return Err(DataError::invalid(
            path,
            format!(
                "item `{key}` (id {id}) is in domain {}, but the ids around it are in domain {}: \
                 A ids must be 1..=n_A and B ids follow them (is its domain or its id wrong?)",
                name(*d),
                name(1 - d)
            ),
        ));
    }
    let n_a = dom.iter().filter(|&&d| d == 0).count();
    let n = [n_a, total - n_a];
    if let Some(d) = n.iter().position(|&k| k == 0) {
        return Err(DataError::invalid(
            path,
            format!(
                "no item of domain {d} ({}): a cross-domain dataset needs both",
                ["A", "B"][d]
            ),
        ));
    }
    Ok(n)
}

/// Reads the user map and checks its ids are `0..n_users`. Returns `n_users`.
pub fn read_user_map(path: &Path) -> Result<usize> {
    let mut map: Vec<(String, i64)> = read_json_map(path)?;
    let n = map.len();
    map.sort_by_key(|(_, id)| *id);
    for (i, (key, id)) in map.iter().enumerate() {
        if *id < 0 || *id as usize >= n {
            return Err(DataError::invalid(
                path,
                format!("user `{key}`: id {id} outside 0..{n} (the map has {n} users)"),
            ));
        }
        if i > 0 && map[i - 1].1 == *id {
            return Err(DataError::invalid(
                path,
                format!("user id {id} is used twice: `{}` and `{key}`", map[i - 1].0),
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

/// Reads the sequence file; lines in file order, blank lines skipped. Every user of the map
/// has exactly one line, and the file ends with a newline ([`text::check_final_newline`]):
/// a file cut short is an error, not a dataset with fewer users or interactions.
pub fn read_sequences(
    path: &Path,
    n_items: [usize; 2],
    n_users: usize,
) -> Result<Vec<UserSequence>> {
    let text = text::read_text(path)?;
    text::check_final_newline(path, &text)?;
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
    if users.is_empty() {
        return Err(DataError::invalid(path, "no user lines: the file is empty"));
    }
    if let Some(missing) = seen.iter().position(|&s| !s) {
        return Err(DataError::invalid(
            path,
            format!(
                "{} user lines but the user map declares {n_users} users: user {missing} has \
                 no line (is the file cut short?)",
                users.len()
            ),
        ));
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
