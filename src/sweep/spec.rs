//! The sweep file: a base run configuration, axes to cross, extra explicit runs and seeds,
//! resolved into a [`Plan`] of concrete configurations.
//!
//! Resolution works on generic TOML values (a dotted key such as `gca.positions` is set by
//! walking nested tables), so the sweep machinery does not depend on the fields of the
//! trainer's configuration type; each resolved configuration is then checked by a
//! [`ConfigCheck`] (by default, by deserialising it into [`crate::train::RunConfig`]).
//!
//! ```toml
//! name = "gca-demo"
//! base = "configs/smoke.toml"      # a RunConfig TOML (relative to this file), or an inline table
//! seeds = [1, 2]
//!
//! [[axis]]
//! key = "gca.positions"
//! label = "gca"                    # slug label; default: the key's last segment
//! values = [[0], [0, 1]]
//!
//! [[axis]]
//! key = "model.d_model"
//! values = [32, 64]
//!
//! [[run]]                          # an extra run, crossed with the seeds only
//! label = "base-d48"
//! set = { "gca.positions" = [], "model.d_model" = 48 }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use toml::{Spanned, Table, Value};

use super::plan::{Plan, PlannedRun};
use crate::train::config::config_hash;

/// Checks one resolved configuration; returns a readable reason when it is not a valid run.
pub type ConfigCheck = fn(&Table) -> std::result::Result<(), String>;

/// A parsed sweep file.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepSpec {
    /// The sweep's name (used for the default output folder and the Slurm job name).
    pub name: String,
    /// Where the sweep was read from (for error messages and the plan file).
    pub origin: String,
    /// The base configuration every run starts from.
    pub base: Table,
    /// Seeds crossed with every combination; empty means "the base's own seed".
    pub seeds: Vec<i64>,
    /// Dotted key that receives the seed.
    pub seed_key: String,
    /// Axes crossed with each other, in file order (the last varies fastest).
    pub axes: Vec<Axis>,
    /// Extra explicit runs (e.g. scaled baselines), each crossed with the seeds.
    pub extras: Vec<ExtraRun>,
    pub order: RunOrder,
}

/// One axis of the cross product.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Dotted key the values are written to; `None` merges table values at the root
    /// (an axis of whole "variants", several keys at once).
    pub key: Option<String>,
    /// Short label used in run ids.
    pub label: String,
    pub values: Vec<Value>,
    /// One slug fragment per value.
    pub names: Vec<String>,
}

/// An extra explicit run: the base with some keys set.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraRun {
    pub label: String,
    /// Dotted keys (or nested tables) to set on the base.
    pub set: Table,
    pub seeds: Vec<i64>,
}

/// A resolved run before ids are assigned: slug parts, configuration, seed, settings shown.
struct Candidate {
    parts: Vec<String>,
    config: Table,
    seed: Option<i64>,
    settings: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    name: String,
    /// Documentation for humans: accepted (and type-checked) but not used.
    #[serde(default, rename = "description")]
    _description: Option<String>,
    base: RawBase,
    #[serde(default)]
    seeds: Vec<i64>,
    #[serde(default = "default_seed_key")]
    seed_key: String,
    #[serde(default, rename = "axis")]
    axes: Vec<RawAxis>,
    #[serde(default, rename = "run")]
    runs: Vec<RawExtra>,
    #[serde(default)]
    order: RunOrder,
}

/// The order of runs in the plan (and so the order a local sweep starts them in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunOrder {
    /// Every seed of a configuration after the other (seeds vary fastest).
    #[default]
    ConfigMajor,
    /// Every configuration (axes and extra runs) with the first seed, then with the second...:
    /// a sweep stopped early still covers every configuration.
    SeedMajor,
}

fn default_seed_key() -> String {
    super::engine::SEED_KEY.to_owned()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawBase {
    Path(String),
    Inline(Table),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAxis {
    key: Option<Spanned<String>>,
    label: Option<String>,
    values: Spanned<Vec<Value>>,
    names: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtra {
    label: Spanned<String>,
    set: Table,
    seeds: Option<Vec<i64>>,
}

impl SweepSpec {
    /// Reads a sweep file; a `base` path is resolved relative to the file's folder.
    pub fn from_path(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read sweep file {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::from_toml_str(&text, dir, &path.display().to_string())
    }

    /// Parses sweep TOML; `base_dir` resolves a relative `base` path, `origin` names the
    /// source in error messages.
    pub fn from_toml_str(text: &str, base_dir: &Path, origin: &str) -> Result<Self> {
        let raw: RawSweep = toml::from_str(text).with_context(|| format!("sweep file {origin}"))?;
        let at = |span: std::ops::Range<usize>| format!("{origin}:{}", line_of(text, span.start));
        let base = match raw.base {
            RawBase::Inline(t) => t,
            RawBase::Path(p) => {
                let path: PathBuf = base_dir.join(&p);
                let base_text = std::fs::read_to_string(&path).with_context(|| {
                    format!("{origin}: cannot read base config {}", path.display())
                })?;
                toml::from_str(&base_text)
                    .with_context(|| format!("base config {}", path.display()))?
            }
        };
        check_slug_fragment(&raw.name).with_context(|| format!("{origin}: `name`"))?;
        check_dotted(&raw.seed_key).with_context(|| format!("{origin}: `seed_key`"))?;
        check_seeds(&raw.seeds).with_context(|| format!("{origin}: `seeds`"))?;
        let mut axes = Vec::new();
        for a in raw.axes {
            let where_ = at(a.key.as_ref().map_or(a.values.span(), |k| k.span()));
            let key = a.key.map(|k| k.into_inner());
            let values = a.values.into_inner();
            if values.is_empty() {
                bail!("{where_}: axis has no values");
            }
            if let Some(k) = &key {
                check_dotted(k).with_context(|| where_.clone())?;
            } else if values.iter().any(|v| !v.is_table()) {
                bail!("{where_}: an axis without `key` needs table values (merged at the root)");
            }
            let label = match (&a.label, &key) {
                (Some(l), _) => l.clone(),
                (None, Some(k)) => k.rsplit('.').next().unwrap_or(k).to_owned(),
                (None, None) => String::new(),
            };
            if !label.is_empty() {
                check_slug_fragment(&label).with_context(|| format!("{where_}: `label`"))?;
            }
            let names = match a.names {
                Some(n) if n.len() != values.len() => bail!(
                    "{where_}: `names` has {} entries but `values` has {}",
                    n.len(),
                    values.len()
                ),
                Some(n) => {
                    for name in &n {
                        check_slug_fragment(name).with_context(|| format!("{where_}: `names`"))?;
                    }
                    n
                }
                None => values.iter().map(value_slug).collect(),
            };
            axes.push(Axis {
                key,
                label,
                values,
                names,
            });
        }
        let mut extras = Vec::new();
        for r in raw.runs {
            let where_ = at(r.label.span());
            let label = r.label.into_inner();
            check_slug_fragment(&label).with_context(|| format!("{where_}: `label`"))?;
            let seeds = r.seeds.unwrap_or_else(|| raw.seeds.clone());
            check_seeds(&seeds).with_context(|| format!("{where_}: `seeds`"))?;
            extras.push(ExtraRun {
                label,
                set: r.set,
                seeds,
            });
        }
        Ok(SweepSpec {
            name: raw.name,
            origin: origin.to_owned(),
            base,
            seeds: raw.seeds,
            seed_key: raw.seed_key,
            axes,
            extras,
            order: raw.order,
        })
    }

    /// Resolves every run (the cross product of the axes, then the extra runs, each with every
    /// seed), checks each configuration with `check`, and drops exact duplicates.
    pub fn resolve(&self, check: ConfigCheck) -> Result<Plan> {
        let mut candidates: Vec<Candidate> = Vec::new();
        let with_seeds = |seeds: &[i64],
                          parts: Vec<String>,
                          cfg: Table,
                          settings: BTreeMap<String, String>,
                          out: &mut Vec<_>|
         -> Result<()> {
            if seeds.is_empty() {
                let seed = get_dotted(&cfg, &self.seed_key).and_then(Value::as_integer);
                let mut parts = parts;
                if let Some(s) = seed {
                    parts.push(format!("s{s}"));
                }
                out.push(Candidate {
                    parts,
                    config: cfg,
                    seed,
                    settings,
                });
                return Ok(());
            }
            for &s in seeds {
                let mut cfg = cfg.clone();
                set_dotted(&mut cfg, &self.seed_key, Value::Integer(s))?;
                let mut parts = parts.clone();
                parts.push(format!("s{s}"));
                let mut settings = settings.clone();
                settings.insert(self.seed_key.clone(), s.to_string());
                out.push(Candidate {
                    parts,
                    config: cfg,
                    seed: Some(s),
                    settings,
                });
            }
            Ok(())
        };
        if !self.axes.is_empty() || self.extras.is_empty() {
            let total: usize = self.axes.iter().map(|a| a.values.len()).product();
            for combo in 0..total {
                let mut cfg = self.base.clone();
                let mut parts = Vec::new();
                let mut settings = BTreeMap::new();
                let mut rest = combo;
                let mut choice = vec![0; self.axes.len()];
                for (i, axis) in self.axes.iter().enumerate().rev() {
                    choice[i] = rest % axis.values.len();
                    rest /= axis.values.len();
                }
                for (axis, &vi) in self.axes.iter().zip(&choice) {
                    let value = &axis.values[vi];
                    match &axis.key {
                        Some(k) => {
                            set_dotted(&mut cfg, k, value.clone())
                                .with_context(|| format!("{}: axis `{k}`", self.origin))?;
                            settings.insert(k.clone(), value.to_string());
                        }
                        None => {
                            let t = value.as_table().expect("checked when parsing");
                            merge_into(&mut cfg, t).with_context(|| {
                                format!("{}: axis `{}`", self.origin, axis.label)
                            })?;
                            settings.insert(axis.label.clone(), axis.names[vi].clone());
                        }
                    }
                    parts.push(format!("{}{}", axis.label, axis.names[vi]));
                }
                with_seeds(&self.seeds, parts, cfg, settings, &mut candidates)?;
            }
        }
        for extra in &self.extras {
            let mut cfg = self.base.clone();
            merge_into(&mut cfg, &extra.set)
                .with_context(|| format!("{}: run `{}`", self.origin, extra.label))?;
            let mut settings = BTreeMap::new();
            settings.insert("run".to_owned(), extra.label.clone());
            with_seeds(
                &extra.seeds,
                vec![extra.label.clone()],
                cfg,
                settings,
                &mut candidates,
            )?;
        }

        if self.order == RunOrder::SeedMajor {
            // Stable: within one seed the configurations keep their file order.
            let rank = |seed: Option<i64>| {
                let seeds = self
                    .seeds
                    .iter()
                    .chain(self.extras.iter().flat_map(|e| &e.seeds));
                seeds
                    .clone()
                    .position(|&s| Some(s) == seed)
                    .unwrap_or(usize::MAX)
            };
            candidates.sort_by_key(|c| rank(c.seed));
        }
        let mut runs: Vec<PlannedRun> = Vec::new();
        let mut by_hash: BTreeMap<String, usize> = BTreeMap::new();
        let mut duplicates = Vec::new();
        for Candidate {
            parts,
            config,
            seed,
            settings,
        } in candidates
        {
            let hash = config_hash(&config);
            let slug = slug_of(&parts);
            if let Some(&first) = by_hash.get(&hash) {
                duplicates.push((slug, runs[first].id.clone()));
                continue;
            }
            let id = format!("{slug}-{}", &hash[..8]);
            if let Some(other) = runs.iter().find(|r| r.id[r.id.len() - 8..] == hash[..8]) {
                bail!(
                    "{}: runs {} and {id} differ but share a short hash; rename a label",
                    self.origin,
                    other.id
                );
            }
            check(&config)
                .map_err(|reason| anyhow::anyhow!("{}: run {id}: {reason}", self.origin))?;
            by_hash.insert(hash, runs.len());
            runs.push(PlannedRun {
                index: runs.len(),
                id,
                seed,
                settings,
                config,
            });
        }
        Ok(Plan::new(
            self.name.clone(),
            self.origin.clone(),
            runs,
            duplicates,
        ))
    }
}

/// The no-op check, for configurations that are validated elsewhere.
pub fn accept_any(_: &Table) -> std::result::Result<(), String> {
    Ok(())
}

/// Sets `value` at a dotted key, creating missing intermediate tables.
pub fn set_dotted(table: &mut Table, key: &str, value: Value) -> Result<()> {
    check_dotted(key)?;
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("non-empty");
    let mut cur = table;
    for (depth, p) in parts.iter().enumerate() {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        cur = match entry {
            Value::Table(t) => t,
            other => bail!(
                "`{}` is a {} in the base config, not a table, so `{key}` cannot be set",
                parts[..=depth].join("."),
                other.type_str()
            ),
        };
    }
    cur.insert(last.to_owned(), value);
    Ok(())
}

/// The value at a dotted key, if every step exists.
pub fn get_dotted<'a>(table: &'a Table, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.');
    let mut cur = table.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_table()?.get(p)?;
    }
    Some(cur)
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else replaces; keys
/// containing dots are dotted paths.
pub fn merge_into(base: &mut Table, over: &Table) -> Result<()> {
    for (k, v) in over {
        match (v, get_dotted(base, k).map(Value::is_table)) {
            (Value::Table(sub), Some(true)) => {
                let mut parts = k.split('.');
                let mut cur = base
                    .get_mut(parts.next().expect("non-empty"))
                    .and_then(Value::as_table_mut);
                for p in parts {
                    cur = cur.and_then(|t| t.get_mut(p)).and_then(Value::as_table_mut);
                }
                merge_into(cur.expect("checked to be a table"), sub)?;
            }
            _ => set_dotted(base, k, v.clone())?,
        }
    }
    Ok(())
}

fn check_dotted(key: &str) -> Result<()> {
    if key.is_empty() || key.split('.').any(str::is_empty) {
        bail!("`{key}` is not a dotted key (expected e.g. `gca.positions`)");
    }
    Ok(())
}

fn check_seeds(seeds: &[i64]) -> Result<()> {
    if let Some(s) = seeds.iter().find(|&&s| s < 0) {
        bail!("seed {s} is negative");
    }
    let mut sorted = seeds.to_vec();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        bail!("seeds repeat");
    }
    Ok(())
}

fn check_slug_fragment(s: &str) -> Result<()> {
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!(
            "`{s}` must be non-empty ASCII letters, digits, `-`, `_` or `.` (it goes into run ids)"
        );
    }
    Ok(())
}

/// A short file-name-safe rendering of an axis value: `[0, 1]` -> `0_1`, `[]` -> `none`,
/// `0.5` -> `0p5`, `true` -> `true`.
pub fn value_slug(v: &Value) -> String {
    match v {
        Value::String(s) => s
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect(),
        Value::Integer(i) => i.to_string().replace('-', "m"),
        Value::Float(f) => format!("{f}").replace('.', "p").replace('-', "m"),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => d.to_string().replace([':', '-', '.'], ""),
        Value::Array(a) if a.is_empty() => "none".to_owned(),
        Value::Array(a) => a.iter().map(value_slug).collect::<Vec<_>>().join("_"),
        Value::Table(t) => format!("t{}", &config_hash(t)[..6]),
    }
}

fn slug_of(parts: &[String]) -> String {
    let slug = parts.join("-");
    let slug = if slug.is_empty() {
        "run".to_owned()
    } else {
        slug
    };
    // Long slugs make unreadable directory names; the hash keeps the id unique anyway.
    match slug.char_indices().nth(80) {
        Some((cut, _)) => slug[..cut].trim_end_matches('-').to_owned(),
        None => slug,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    1 + text[..offset.min(text.len())].matches('\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> SweepSpec {
        SweepSpec::from_toml_str(text, Path::new("."), "test.toml").unwrap()
    }

    #[test]
    fn crosses_axes_last_fastest_then_extras_with_seeds() {
        let s = spec(
            r#"
name = "t"
seeds = [1, 2]
[base]
seed = 0
model = { hidden = 16 }
[[axis]]
key = "gca.positions"
label = "gca"
values = [[0], [0, 1]]
[[axis]]
key = "model.hidden"
values = [32, 64]
[[run]]
label = "base-h48"
set = { "model.hidden" = 48, gca = { positions = [] } }
"#,
        );
        let plan = s.resolve(accept_any).unwrap();
        let slugs: Vec<String> = plan
            .runs
            .iter()
            .map(|r| r.id[..r.id.len() - 9].to_owned())
            .collect();
        assert_eq!(
            slugs,
            [
                "gca0-hidden32-s1",
                "gca0-hidden32-s2",
                "gca0-hidden64-s1",
                "gca0-hidden64-s2",
                "gca0_1-hidden32-s1",
                "gca0_1-hidden32-s2",
                "gca0_1-hidden64-s1",
                "gca0_1-hidden64-s2",
                "base-h48-s1",
                "base-h48-s2",
            ]
        );
        let r = &plan.runs[5];
        assert_eq!(r.index, 5);
        assert_eq!(r.seed, Some(2));
        assert_eq!(
            get_dotted(&r.config, "model.hidden"),
            Some(&Value::Integer(32))
        );
        assert_eq!(
            get_dotted(&r.config, "gca.positions"),
            Some(&Value::Array(vec![Value::Integer(0), Value::Integer(1)]))
        );
        let b = &plan.runs[9];
        assert_eq!(
            get_dotted(&b.config, "model.hidden"),
            Some(&Value::Integer(48))
        );
        assert_eq!(
            get_dotted(&b.config, "gca.positions"),
            Some(&Value::Array(vec![]))
        );
        assert_eq!(b.settings["run"], "base-h48");
    }

    #[test]
    fn seed_major_order_covers_every_configuration_first() {
        let s = spec(
            "name = \"t\"\nbase = {}\norder = \"seed-major\"\nseeds = [7, 3]\n\
             [[axis]]\nkey = \"x\"\nvalues = [1, 2]\n[[run]]\nlabel = \"b\"\nset = { x = 9 }\n",
        );
        let plan = s.resolve(accept_any).unwrap();
        let slugs: Vec<&str> = plan.runs.iter().map(|r| &r.id[..r.id.len() - 9]).collect();
        assert_eq!(slugs, ["x1-s7", "x2-s7", "b-s7", "x1-s3", "x2-s3", "b-s3"]);
    }

    #[test]
    fn duplicate_configs_are_dropped_and_reported() {
        let s = spec(
            r#"
name = "t"
base = { x = 1 }
[[axis]]
key = "x"
values = [1, 2]
[[run]]
label = "again"
set = { x = 2 }
"#,
        );
        let plan = s.resolve(accept_any).unwrap();
        assert_eq!(plan.runs.len(), 2);
        assert_eq!(plan.duplicates.len(), 1);
        assert_eq!(plan.duplicates[0].0, "again");
        assert_eq!(plan.duplicates[0].1, plan.runs[1].id);
    }

    #[test]
    fn bad_input_names_the_file_line_and_key() {
        let err = SweepSpec::from_toml_str(
            "name = \"t\"\nbase = { gca = 3 }\n[[axis]]\nkey = \"gca..x\"\nvalues = [1]\n",
            Path::new("."),
            "s.toml",
        )
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "s.toml:4: `gca..x` is not a dotted key (expected e.g. `gca.positions`)"
        );
        let s = spec("name = \"t\"\nbase = { gca = 3 }\n[[axis]]\nkey = \"gca.x\"\nvalues = [1]\n");
        let err = s.resolve(accept_any).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "test.toml: axis `gca.x`: `gca` is a integer in the base config, not a table, so `gca.x` cannot be set"
        );
        let err = SweepSpec::from_toml_str(
            "name = \"t\"\nbase = {}\nseed = [1]\n",
            Path::new("."),
            "s.toml",
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `seed`"),
            "{err:#}"
        );
        assert!(format!("{err:#}").contains("line 3"), "{err:#}");
        let err = spec("name = \"t\"\nbase = {}\n[[axis]]\nkey = \"a\"\nvalues = [1, 2]\n")
            .resolve(|c| match c.get("a").and_then(Value::as_integer) {
                Some(2) => Err("a must be 1".into()),
                _ => Ok(()),
            })
            .unwrap_err();
        assert!(format!("{err}").starts_with("test.toml: run a2-"), "{err}");
        assert!(format!("{err}").ends_with(": a must be 1"), "{err}");
    }

    #[test]
    fn value_slugs() {
        let v = |s: &str| -> Value {
            toml::from_str::<Table>(&format!("v = {s}")).unwrap()["v"].clone()
        };
        assert_eq!(value_slug(&v("[0, 1]")), "0_1");
        assert_eq!(value_slug(&v("[]")), "none");
        assert_eq!(value_slug(&v("0.5")), "0p5");
        assert_eq!(value_slug(&v("-3")), "m3");
        assert_eq!(value_slug(&v("\"sig moid\"")), "sig_moid");
        assert_eq!(value_slug(&v("false")), "false");
    }
}
