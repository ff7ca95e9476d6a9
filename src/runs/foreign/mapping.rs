//! `foreign-runs.toml`: how the tags of TensorBoard event files and the columns of Lightning
//! `metrics.csv` files map onto (split, domain, metric), for every run below the folder that
//! holds it. The split, domain and metric tables are those of a foreign `manifest.toml`
//! (`split_values`, `domain_values`, `rename`), read by the same functions.
//!
//! ```toml
//! model = "abxi"                    # the runs' model and dataset (default: "unknown")
//! dataset = "food-kitchen"
//! seed = "train.seed"               # config key of the seed (default "seed")
//! params = "n_params"               # config key of the parameter count (optional)
//! patterns = ["{split}/{metric}/{domain}", "{split}/{metric}"]   # tried in order
//! ignore = ["lr-Adam"]              # names that are not metrics (besides epoch, step, hp_metric)
//! [split_values]
//! val = "valid"
//! [domain_values]
//! food = "A"
//! [rename]
//! loss_epoch = "loss"
//! ```
//!
//! In a pattern, `{split}` matches a split name (`train`, `valid`, `test` or a key of
//! `split_values`), `{domain}` a domain name (`A`, `B` or a key of `domain_values`), and
//! `{metric}` any non-empty text; everything else is literal. The first pattern that matches
//! the whole name wins; the metric is renamed by `rename` or else lower-cased.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::data::Domain;
use crate::runs::{RunError, Split};

/// The mapping file's name; the nearest one in a run folder or the folders above it applies.
pub const FOREIGN_MAPPING: &str = "foreign-runs.toml";

/// Names that are never metrics: the step and epoch columns of Lightning's `metrics.csv`, and
/// the placeholder `hp_metric` that Lightning's TensorBoardLogger logs.
pub const ALWAYS_IGNORED: [&str; 3] = ["epoch", "step", "hp_metric"];

/// The patterns used when a mapping names none.
pub const DEFAULT_PATTERNS: [&str; 4] = [
    "{split}/{metric}/{domain}",
    "{split}/{metric}",
    "{split}_{metric}_{domain}",
    "{split}_{metric}",
];

/// `foreign-runs.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForeignMapping {
    #[serde(default = "unknown")]
    pub model: String,
    #[serde(default = "unknown")]
    pub dataset: String,
    /// Config key of the run's seed (moved to `train.seed`, as native configs hold it).
    #[serde(default = "default_seed_key")]
    pub seed: String,
    /// Config key of the total parameter count (moved out of the config to `params.total`).
    #[serde(default)]
    pub params: Option<String>,
    #[serde(default = "default_patterns")]
    pub patterns: Vec<String>,
    #[serde(default)]
    pub ignore: Vec<String>,
    #[serde(default)]
    pub split_values: HashMap<String, Split>,
    #[serde(default)]
    pub domain_values: HashMap<String, Domain>,
    #[serde(default)]
    pub rename: HashMap<String, String>,
}

fn unknown() -> String {
    "unknown".into()
}
fn default_seed_key() -> String {
    "seed".into()
}
fn default_patterns() -> Vec<String> {
    DEFAULT_PATTERNS.iter().map(|p| p.to_string()).collect()
}

impl Default for ForeignMapping {
    fn default() -> Self {
        ForeignMapping {
            model: unknown(),
            dataset: unknown(),
            seed: default_seed_key(),
            params: None,
            patterns: default_patterns(),
            ignore: Vec::new(),
            split_values: HashMap::new(),
            domain_values: HashMap::new(),
            rename: HashMap::new(),
        }
    }
}

/// A split name through a `split_values` table, then the canonical names.
pub(crate) fn map_split(values: &HashMap<String, Split>, raw: &str) -> Option<Split> {
    values.get(raw).copied().or(match raw {
        "train" => Some(Split::Train),
        "valid" => Some(Split::Valid),
        "test" => Some(Split::Test),
        _ => None,
    })
}

/// A domain name through a `domain_values` table, then `A` / `B`.
pub(crate) fn map_domain(values: &HashMap<String, Domain>, raw: &str) -> Result<Domain, String> {
    match values.get(raw) {
        Some(d) => Ok(*d),
        None => raw.parse(),
    }
}

/// A metric name through a `rename` table, else lower-cased.
pub(crate) fn metric_key(rename: &HashMap<String, String>, raw: &str) -> String {
    rename
        .get(raw)
        .cloned()
        .unwrap_or_else(|| raw.to_lowercase())
}

/// What a tag or column is.
#[derive(Debug, Clone, PartialEq)]
pub enum TagMeaning {
    Metric {
        split: Split,
        domain: Option<Domain>,
        key: String,
    },
    /// In [`ALWAYS_IGNORED`] or the mapping's `ignore` list.
    Ignored,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Split,
    Domain,
    Metric,
}

/// A mapping with its patterns parsed, ready to classify names.
#[derive(Debug, Clone)]
pub struct TagMapper {
    pub mapping: ForeignMapping,
    /// Where the mapping came from (`None`: defaults).
    pub source: Option<PathBuf>,
    patterns: Vec<Vec<Part>>,
    splits: Vec<String>,
    domains: Vec<String>,
}

impl TagMapper {
    /// Checks the patterns: each names `{split}` and `{metric}` once, `{domain}` at most once,
    /// and no other placeholder.
    pub fn new(mapping: ForeignMapping, source: Option<PathBuf>) -> Result<TagMapper, RunError> {
        let at = source
            .clone()
            .unwrap_or_else(|| PathBuf::from(FOREIGN_MAPPING));
        let patterns = mapping
            .patterns
            .iter()
            .map(|p| parse_pattern(p).map_err(|e| RunError::invalid(&at, e)))
            .collect::<Result<_, _>>()?;
        let mut splits: Vec<String> = ["train", "valid", "test"].map(String::from).to_vec();
        splits.extend(mapping.split_values.keys().cloned());
        let mut domains: Vec<String> = ["A", "B"].map(String::from).to_vec();
        domains.extend(mapping.domain_values.keys().cloned());
        // Longest names first, so `validation` is tried before `valid`.
        splits.sort_by_key(|s| std::cmp::Reverse(s.len()));
        domains.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(TagMapper {
            mapping,
            source,
            patterns,
            splits,
            domains,
        })
    }

    /// The mapping that applies to `dir`: the nearest `foreign-runs.toml` in it or above it,
    /// else the defaults.
    pub fn for_dir(dir: &Path) -> Result<TagMapper, RunError> {
        for d in dir.ancestors() {
            let path = d.join(FOREIGN_MAPPING);
            if path.is_file() {
                let text = std::fs::read_to_string(&path).map_err(|e| RunError::io(&path, e))?;
                let mapping: ForeignMapping =
                    toml::from_str(&text).map_err(|e| RunError::invalid(&path, e.to_string()))?;
                return TagMapper::new(mapping, Some(path));
            }
        }
        TagMapper::new(ForeignMapping::default(), None)
    }

    /// What `name` is; `None` when no pattern matches it and it is not ignored.
    pub fn classify(&self, name: &str) -> Option<TagMeaning> {
        if ALWAYS_IGNORED.contains(&name) || self.mapping.ignore.iter().any(|i| i == name) {
            return Some(TagMeaning::Ignored);
        }
        for pattern in &self.patterns {
            let mut caps = Captures::default();
            if !self.matches(pattern, name, &mut caps) {
                continue;
            }
            let (Some(split), Some(metric)) = (caps.split, caps.metric) else {
                continue;
            };
            let split = map_split(&self.mapping.split_values, split)?;
            let domain = match caps.domain {
                Some(d) => Some(map_domain(&self.mapping.domain_values, d).ok()?),
                None => None,
            };
            return Some(TagMeaning::Metric {
                split,
                domain,
                key: metric_key(&self.mapping.rename, metric),
            });
        }
        None
    }

    /// Why `name` was not mapped, for an error message.
    pub fn unmapped(&self, name: &str) -> String {
        let from = match &self.source {
            Some(p) => p.display().to_string(),
            None => format!("the default patterns (no {FOREIGN_MAPPING} found)"),
        };
        format!(
            "`{name}` matches no pattern of {from} ({}); add a pattern, or list it in `ignore`",
            self.mapping.patterns.join(", ")
        )
    }

    fn matches<'a>(&self, parts: &[Part], s: &'a str, caps: &mut Captures<'a>) -> bool {
        let Some((first, rest)) = parts.split_first() else {
            return s.is_empty();
        };
        match first {
            Part::Literal(l) => s
                .strip_prefix(l.as_str())
                .is_some_and(|r| self.matches(rest, r, caps)),
            Part::Split | Part::Domain => {
                let names = if *first == Part::Split {
                    &self.splits
                } else {
                    &self.domains
                };
                for name in names {
                    if let Some(r) = s.strip_prefix(name.as_str()) {
                        let taken = &s[..name.len()];
                        if *first == Part::Split {
                            caps.split = Some(taken);
                        } else {
                            caps.domain = Some(taken);
                        }
                        if self.matches(rest, r, caps) {
                            return true;
                        }
                    }
                }
                false
            }
            Part::Metric => {
                for end in (1..=s.len()).filter(|&i| s.is_char_boundary(i)) {
                    caps.metric = Some(&s[..end]);
                    if self.matches(rest, &s[end..], caps) {
                        return true;
                    }
                }
                false
            }
        }
    }
}

#[derive(Default)]
struct Captures<'a> {
    split: Option<&'a str>,
    domain: Option<&'a str>,
    metric: Option<&'a str>,
}

fn parse_pattern(pattern: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("pattern `{pattern}`: `{{` without `}}`"))?;
                parts.push(match &rest[1..end] {
                    "split" => Part::Split,
                    "domain" => Part::Domain,
                    "metric" => Part::Metric,
                    other => {
                        return Err(format!(
                        "pattern `{pattern}`: unknown placeholder `{{{other}}}` (use {{split}}, {{domain}}, {{metric}})"
                    ))
                    }
                });
                rest = &rest[end + 1..];
            }
            Some(i) => {
                parts.push(Part::Literal(rest[..i].to_owned()));
                rest = &rest[i..];
            }
            None => {
                parts.push(Part::Literal(rest.to_owned()));
                rest = "";
            }
        }
    }
    let count = |p: &Part| parts.iter().filter(|q| *q == p).count();
    if count(&Part::Split) != 1 || count(&Part::Metric) != 1 || count(&Part::Domain) > 1 {
        return Err(format!(
            "pattern `{pattern}`: name {{split}} and {{metric}} once each, {{domain}} at most once"
        ));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_classify_tags_and_columns() {
        let mut mapping = ForeignMapping::default();
        mapping.split_values.insert("val".into(), Split::Valid);
        mapping.domain_values.insert("food".into(), Domain::A);
        mapping.rename.insert("loss_epoch".into(), "loss".into());
        let m = TagMapper::new(mapping, None).unwrap();
        let metric = |split, domain, key: &str| {
            Some(TagMeaning::Metric {
                split,
                domain,
                key: key.into(),
            })
        };
        assert_eq!(
            m.classify("val/NDCG@10/food"),
            metric(Split::Valid, Some(Domain::A), "ndcg@10")
        );
        assert_eq!(m.classify("train/loss"), metric(Split::Train, None, "loss"));
        assert_eq!(
            m.classify("val_a_cd_food"),
            metric(Split::Valid, Some(Domain::A), "a_cd")
        );
        assert_eq!(
            m.classify("train_wall_time_s"),
            metric(Split::Train, None, "wall_time_s")
        );
        assert_eq!(
            m.classify("train_loss_epoch"),
            metric(Split::Train, None, "loss")
        );
        assert_eq!(m.classify("epoch"), Some(TagMeaning::Ignored));
        assert_eq!(m.classify("grad_norm"), None);
        assert!(m.unmapped("grad_norm").contains("{split}/{metric}"));
        let bad = ForeignMapping {
            patterns: vec!["{split}/{name}".into()],
            ..ForeignMapping::default()
        };
        let err = TagMapper::new(bad, None).unwrap_err().to_string();
        assert!(err.contains("unknown placeholder `{name}`"), "{err}");
    }
}
