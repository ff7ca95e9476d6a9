//! Hydra job folders (a single run's output folder, or each numbered job folder of a
//! multirun): `.hydra/config.yaml` is the run's config, `.hydra/overrides.yaml` its
//! differences, and the metrics are those of the one logger folder (TensorBoard event files or
//! a Lightning CSVLogger folder) somewhere inside the job folder.
//!
//! - `config.yaml` is flattened to dotted keys. Hydra saves it with its `${...}`
//!   interpolations unresolved; a value that is one interpolation of another key
//!   (`${train.batch_size}`) takes that key's value and type, and text with interpolations of
//!   keys (`abxi-d${model.d_model}`) gets their values written in. Anything else, resolvers
//!   (`${oc.env:HOME}`, `${now:%H}`), relative keys (`${.x}`), keys that are missing or name
//!   a section, stays as its literal text: it is only known where the job ran.
//! - `overrides.yaml` (`gca=early`, `+extra=1`, `train.seed=2`) is kept as config keys under
//!   `overrides.` (`overrides.gca = "early"`), values read as YAML; the seed's key is left
//!   out (the seed is the run's seed) and deletions (`~key`) are not kept.
//! - The logger's own hyperparameters (hparams plugin, `hparams.yaml`) are read too; the
//!   job's config wins where both name a key. A job with no logger folder, or with several, is
//!   an error naming the job folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::logged::{flat_config, ForeignKind};
use super::mapping::TagMapper;
use crate::runs::RunError;

/// The file that marks a Hydra job folder.
pub const HYDRA_CONFIG: &str = ".hydra/config.yaml";
/// The job's command-line overrides.
pub const HYDRA_OVERRIDES: &str = ".hydra/overrides.yaml";

/// The logger folder of a Hydra job and its kind.
pub fn logger_of_job(job: &Path) -> Result<(PathBuf, ForeignKind), RunError> {
    let mut found = Vec::new();
    let mut stack = vec![job.to_owned()];
    while let Some(dir) = stack.pop() {
        if let Some(kind) = ForeignKind::logger(&dir) {
            found.push((dir, kind));
            continue;
        }
        for entry in std::fs::read_dir(&dir).map_err(|e| RunError::io(&dir, e))? {
            let entry = entry.map_err(|e| RunError::io(&dir, e))?;
            let is_dir = entry
                .file_type()
                .map_err(|e| RunError::io(&entry.path(), e))?
                .is_dir();
            if is_dir && entry.file_name() != ".hydra" {
                stack.push(entry.path());
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(RunError::invalid(
            job,
            "Hydra job without metrics: no TensorBoard event file or Lightning metrics.csv inside",
        )),
        _ => Err(RunError::invalid(
            job,
            format!(
                "Hydra job with several logger folders, cannot tell which is the run: {}",
                found
                    .iter()
                    .map(|(d, _)| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The job's config (flattened, interpolations resolved) with its overrides under
/// `overrides.` (see the module doc).
pub fn job_config(job: &Path, mapper: &TagMapper) -> Result<BTreeMap<String, Value>, RunError> {
    let config = flat_config(&super::yaml::read_yaml(&job.join(HYDRA_CONFIG))?);
    let mut flat = resolve_interpolations(&config);
    let overrides_path = job.join(HYDRA_OVERRIDES);
    if overrides_path.is_file() {
        for (key, value) in read_overrides(&overrides_path)? {
            if key != mapper.mapping.seed {
                flat.insert(format!("overrides.{key}"), value);
            }
        }
    }
    Ok(flat)
}

/// The overrides of `overrides.yaml` as (key, value), deletions left out.
pub fn read_overrides(path: &Path) -> Result<Vec<(String, Value)>, RunError> {
    let list = super::yaml::read_yaml(path)?;
    let items = match list {
        Value::Null => Vec::new(),
        Value::Array(items) => items,
        other => {
            return Err(RunError::invalid(
                path,
                format!("expected a list of overrides, found {other}"),
            ))
        }
    };
    let mut out = Vec::new();
    for item in items {
        let Value::String(text) = item else {
            return Err(RunError::invalid(
                path,
                format!("override {item} is not text"),
            ));
        };
        if text.starts_with('~') {
            continue;
        }
        let text = text.trim_start_matches('+');
        let Some((key, value)) = text.split_once('=') else {
            return Err(RunError::invalid(
                path,
                format!("override `{text}` is not KEY=VALUE"),
            ));
        };
        let value = super::yaml::parse_yaml(value, path)
            .unwrap_or_else(|_| Value::String(value.to_owned()));
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// How deep interpolations may refer to interpolations; deeper (or cyclic) ones stay text.
const MAX_INTERPOLATION_DEPTH: usize = 16;

/// `flat` with the interpolations of keys resolved (see the module doc).
pub fn resolve_interpolations(flat: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    flat.iter()
        .map(|(k, v)| (k.clone(), resolve(v, flat, 0).unwrap_or_else(|| v.clone())))
        .collect()
}

/// The value of `v` with its interpolations resolved; `None` when one cannot be.
fn resolve(v: &Value, flat: &BTreeMap<String, Value>, depth: usize) -> Option<Value> {
    let Value::String(s) = v else {
        return Some(v.clone());
    };
    if !s.contains("${") {
        return Some(v.clone());
    }
    if depth >= MAX_INTERPOLATION_DEPTH {
        return None;
    }
    let refs = key_references(s)?;
    let target = |key: &str| resolve(flat.get(key)?, flat, depth + 1);
    if let [(0, end, key)] = refs[..] {
        if end == s.len() {
            return target(key);
        }
    }
    let mut out = String::new();
    let mut last = 0;
    for (start, end, key) in refs {
        out.push_str(&s[last..start]);
        match target(key)? {
            Value::String(t) => out.push_str(&t),
            Value::Null => out.push_str("None"),
            Value::Array(_) | Value::Object(_) => return None,
            other => out.push_str(&other.to_string()),
        }
        last = end;
    }
    out.push_str(&s[last..]);
    Some(Value::String(out))
}

/// The `${key}` references of `s` as (start, end, key); `None` when any interpolation is not a
/// plain absolute key (a resolver, a relative or nested reference, an escaped or unclosed one).
fn key_references(s: &str) -> Option<Vec<(usize, usize, &str)>> {
    let mut refs = Vec::new();
    let mut from = 0;
    while let Some(i) = s[from..].find("${") {
        let start = from + i;
        if start > 0 && s.as_bytes()[start - 1] == b'\\' {
            return None;
        }
        let close = start + s[start..].find('}')?;
        let key = &s[start + 2..close];
        let plain = !key.is_empty()
            && !key.starts_with('.')
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        if !plain {
            return None;
        }
        refs.push((start, close + 1, key));
        from = close + 1;
    }
    Some(refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn interpolations_of_keys_resolve_and_resolvers_stay_text() {
        let flat: BTreeMap<String, Value> = [
            ("train.batch_size", json!(256)),
            ("train.eval_batch_size", json!("${train.batch_size}")),
            ("name", json!("abxi-b${train.eval_batch_size}")),
            ("data.path", json!("${oc.env:HOME}/data")),
            ("missing", json!("${nowhere}")),
            ("cycle", json!("${cycle}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let r = resolve_interpolations(&flat);
        assert_eq!(r["train.eval_batch_size"], json!(256));
        assert_eq!(r["name"], json!("abxi-b256"));
        assert_eq!(r["data.path"], json!("${oc.env:HOME}/data"));
        assert_eq!(r["missing"], json!("${nowhere}"));
        assert_eq!(r["cycle"], json!("${cycle}"));
    }
}
