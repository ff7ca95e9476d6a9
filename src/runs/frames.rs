//! Run logs as polars DataFrames (schemas documented in [`crate::runs`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use polars::prelude::*;

use super::format::*;
use super::reader::{LoadedRun, RunSet};
use crate::eval::names;

/// The column of `df` called `name`, found by comparing names, not through the frame's cached
/// schema. In an evcxr notebook every cell is its own library with its own copy of polars' hash
/// seed, so a frame whose schema was cached in one cell misses every `DataFrame::column` lookup
/// made elsewhere; every library function that reads a caller's frame by name goes through here.
pub fn column<'a>(df: &'a DataFrame, name: &str) -> PolarsResult<&'a Column> {
    df.columns()
        .iter()
        .find(|c| c.name().as_str() == name)
        .ok_or_else(|| polars_err!(ColumnNotFound: "{name}"))
}

/// The numbers of column `name` of `df` as `f64`: the one reading of a numeric column that
/// statistics and figures share.
///
/// The rule: a value is `Some` only when it is a finite number; null, NaN and ±infinity all
/// read as `None` (a missing value, which statistics leave out and figures do not draw). A
/// column of any integer or float type is read this way, and so is a column holding no value
/// at all whatever its type (an empty CSV column is read back as strings). Any other column
/// (strings, Booleans, lists) is an error naming the column and its type.
pub fn f64_column(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<f64>>> {
    let col = column(df, name)?;
    let numeric = col.dtype().is_primitive_numeric();
    if !numeric && col.null_count() < col.len() {
        polars_bail!(SchemaMismatch: "column `{name}` has type {}, expected a number", col.dtype());
    }
    let cast = col.cast(&DataType::Float64)?;
    Ok(cast
        .f64()?
        .iter()
        .map(|v| v.filter(|x| x.is_finite()))
        .collect())
}

/// The values of Boolean column `name` of `df` (nulls read as `None`); any other type is an
/// error naming the column and its type.
pub fn bool_column(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<bool>>> {
    let col = column(df, name)?;
    match col.bool() {
        Ok(ca) => Ok(ca.iter().collect()),
        Err(_) => {
            polars_bail!(SchemaMismatch: "column `{name}` has type {}, expected a boolean", col.dtype())
        }
    }
}

/// Flattens nested JSON into dotted keys: `{"gca": {"positions": [0, 1]}}` becomes
/// `gca.positions -> [0, 1]`. Arrays are leaves (kept whole).
pub fn flatten_json(value: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
        match v {
            serde_json::Value::Object(map) if !map.is_empty() => {
                for (k, child) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, child, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

/// One column from JSON values (`None` = absent): Boolean if all present values are booleans,
/// Int64 if all are integers, Float64 if all are numbers, String if all are strings, and
/// otherwise String holding compact JSON (arrays such as `[0,1]`, mixed types).
pub fn json_column(name: &str, values: &[Option<&serde_json::Value>]) -> Column {
    use serde_json::Value as V;
    let present = || values.iter().flatten().filter(|v| !v.is_null());
    let name = PlSmallStr::from(name);
    if present().all(|v| v.is_boolean()) {
        let data: Vec<Option<bool>> = values.iter().map(|v| v.and_then(V::as_bool)).collect();
        return Column::new(name, data);
    }
    if present().all(|v| v.is_i64()) {
        let data: Vec<Option<i64>> = values.iter().map(|v| v.and_then(V::as_i64)).collect();
        return Column::new(name, data);
    }
    if present().all(|v| v.is_number()) {
        let data: Vec<Option<f64>> = values.iter().map(|v| v.and_then(V::as_f64)).collect();
        return Column::new(name, data);
    }
    let data: Vec<Option<String>> = values
        .iter()
        .map(|v| match v {
            None | Some(V::Null) => None,
            Some(V::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        })
        .collect();
    Column::new(name, data)
}

/// The test-metric columns of [`RunSet::results_frame`]: `EVAL.DOMAIN.METRIC` for the sampled
/// test and, with `full_ranking`, the full-ranking one.
pub(crate) fn test_metric_names(metrics: &[&str], full_ranking: bool) -> Vec<String> {
    let evals: &[&str] = if full_ranking {
        &["test", "test_full"]
    } else {
        &["test"]
    };
    let mut names = Vec::new();
    for eval in evals {
        for d in crate::data::Domain::BOTH {
            for m in metrics {
                names.push(format!("{eval}.{d}.{m}"));
            }
        }
    }
    names
}

/// Config keys that set how a run executes, not what it computes: runs that differ only in
/// these are the same experiment, so [`config_labels`] leaves them out.
const EXECUTION_KEYS: [&str; 2] = ["train.threads", "train.eval_batch_size"];

/// What tells each run of a set apart, for legends: the config values that differ across the
/// runs, as `key value` pairs joined by `, ` (`d_model 256, lr 0.0001`). `runs` holds each run's
/// id and config.
///
/// A key is named by its last part (`d_model`) unless two differing keys share it. Keys whose
/// values really differ come first, those with more distinct values before those with fewer
/// (`d_model 16, seed 1, gate tanh`); keys that split the runs into the same groups are named
/// by the first, with the count of the others (`d_model 256 (+1)` where `ffn_hidden` changes
/// with it); a key that only some runs have (a `gca` section against
/// `gca = none`) is named once per top-level section, so a GCA run reads `positions [0]` rather
/// than every setting its section holds. Thread count and evaluation batch size are left out (they do not
/// change results). A run with nothing to tell it apart (a set of one) is labelled by its id,
/// and runs with equal labels get their ids added.
///
/// ```
/// use cdsr_lab::runs::frames::config_labels;
/// use serde_json::json;
/// let base = json!({"model": {"d_model": 64}, "optim": {"lr": 1e-3}, "train": {"seed": 1}});
/// let wide = json!({"model": {"d_model": 256}, "optim": {"lr": 1e-3}, "train": {"seed": 1}});
/// let slow = json!({"model": {"d_model": 256}, "optim": {"lr": 1e-4}, "train": {"seed": 1}});
/// let labels = config_labels(&[("r1", &base), ("r2", &wide), ("r3", &slow)]);
/// assert_eq!(labels, ["d_model 64, lr 0.001", "d_model 256, lr 0.001", "d_model 256, lr 0.0001"]);
/// assert_eq!(config_labels(&[("only", &base)]), ["only"]);
/// ```
pub fn config_labels(runs: &[(&str, &serde_json::Value)]) -> Vec<String> {
    labels_ignoring(runs, &EXECUTION_KEYS)
}

/// The config keys that do not tell experiments apart when runs are averaged over seeds.
pub(crate) const SEED_AND_EXECUTION_KEYS: [&str; 3] =
    ["train.seed", EXECUTION_KEYS[0], EXECUTION_KEYS[1]];

/// [`config_labels`] with the flattened keys `ignored` left out.
pub(crate) fn labels_ignoring(
    runs: &[(&str, &serde_json::Value)],
    ignored: &[&str],
) -> Vec<String> {
    use serde_json::Value;
    let flat: Vec<BTreeMap<String, Value>> = runs.iter().map(|(_, c)| flatten_json(c)).collect();
    let keys: BTreeSet<&String> = flat
        .iter()
        .flat_map(|f| f.keys())
        .filter(|k| !ignored.contains(&k.as_str()))
        .collect();
    // (key, whether two runs that have it hold different values), most distinct values first
    let mut varying: Vec<(&String, usize)> = keys
        .into_iter()
        .filter(|k| flat.iter().any(|f| f.get(*k) != flat[0].get(*k)))
        .map(|k| (k, distinct(flat.iter().filter_map(|f| f.get(k))).len()))
        .collect();
    varying.sort_by_key(|&(_, values)| std::cmp::Reverse(values));
    // Keys that split the runs into the same groups (`d_model` and `ffn_hidden`; `lr`,
    // `weight_decay` and the patiences of one optimiser schedule) tell the same runs apart:
    // the first names them, with the count of the others (`d_model 256 (+1)`).
    let groups = |k: &String| {
        let values: Vec<Option<&Value>> = flat.iter().map(|f| f.get(k)).collect();
        let seen = distinct(values.iter().copied());
        values
            .iter()
            .map(|v| seen.iter().position(|s| s == v))
            .collect::<Vec<_>>()
    };
    let all_varying: Vec<&String> = varying.iter().map(|(k, _)| *k).collect();
    let section = |k: &str| k.split('.').next().unwrap_or(k).to_owned();
    // A key that some runs with its section leave out (a GCA option serialised only when set,
    // like `cos_penalty`) tells those runs apart as much as a second value would.
    let omitted_within_section = |k: &String| {
        let prefix = format!("{}.", section(k));
        flat.iter()
            .any(|f| !f.contains_key(k) && f.keys().any(|o| o.starts_with(&prefix)))
    };
    let mut kept: Vec<(&String, bool, usize, Vec<Option<usize>>)> = Vec::new();
    for (k, values) in varying {
        let differs = values > 1 || omitted_within_section(k);
        let g = groups(k);
        match kept
            .iter_mut()
            .find(|(_, d, _, kg)| differs && *d && *kg == g)
        {
            Some(first) => first.2 += 1,
            None => kept.push((k, differs, 0, g)),
        }
    }
    let varying: Vec<(&String, bool, usize)> = kept
        .into_iter()
        .map(|(k, d, more, _)| (k, d, more))
        .collect();
    let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_owned();
    let name = |k: &String| {
        let short = last(k);
        let shared = all_varying.iter().filter(|o| last(o) == short).count() > 1;
        if shared {
            k.clone()
        } else {
            short
        }
    };
    // The top-level section (`gca`, `autocdsr`): a run that has a section others lack is told
    // apart by one of its keys, however deeply the section nests.
    let mut labels: Vec<String> = flat
        .iter()
        .zip(runs)
        .map(|(f, (id, _))| {
            let mut parts = Vec::new();
            let mut named_sections = BTreeSet::new();
            for (k, differs, more) in &varying {
                let Some(v) = f.get(*k) else { continue };
                if !differs && named_sections.contains(&section(k)) {
                    continue;
                }
                named_sections.insert(section(k));
                let shown = match v {
                    Value::Null => "none".to_owned(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let more = if *more > 0 {
                    format!(" (+{more})")
                } else {
                    String::new()
                };
                parts.push(format!("{} {shown}{more}", name(k)));
            }
            if parts.is_empty() {
                (*id).to_owned()
            } else {
                parts.join(", ")
            }
        })
        .collect();
    let counts = labels.iter().fold(HashMap::new(), |mut m, l| {
        *m.entry(l.clone()).or_insert(0usize) += 1;
        m
    });
    for (label, (id, _)) in labels.iter_mut().zip(runs) {
        if counts[label.as_str()] > 1 {
            *label = format!("{label} ({id})");
        }
    }
    labels
}

/// `df` as a plain-text table for a terminal or a log: every row and column, whole strings,
/// floats with `decimals` digits (nulls as `-`), text left-aligned and numbers right-aligned.
/// (Polars' own display previews: it elides rows, columns and long strings.)
///
/// ```
/// use cdsr_lab::runs::frames::text_table;
/// use polars::prelude::*;
/// let df = df!("label" => ["d_model 64", "d_model 256"], "ndcg" => [Some(0.16712), None]).unwrap();
/// assert_eq!(
///     text_table(&df, 3),
///     "label         ndcg\nd_model 64   0.167\nd_model 256      -\n"
/// );
/// ```
pub fn text_table(df: &DataFrame, decimals: usize) -> String {
    let cell = |v: PolarsResult<AnyValue>| match v {
        Ok(AnyValue::Null) | Err(_) => "-".to_owned(),
        Ok(AnyValue::Float64(v)) => format!("{v:.decimals$}"),
        Ok(AnyValue::Float32(v)) => format!("{v:.decimals$}"),
        Ok(AnyValue::String(v)) => v.to_owned(),
        Ok(v) => v.to_string(),
    };
    let right: Vec<bool> = df
        .columns()
        .iter()
        .map(|c| c.dtype().is_primitive_numeric())
        .collect();
    // The header, then one row of cells per frame row.
    let mut rows: Vec<Vec<String>> =
        vec![df.columns().iter().map(|c| c.name().to_string()).collect()];
    rows.extend((0..df.height()).map(|i| df.columns().iter().map(|c| cell(c.get(i))).collect()));
    let widths: Vec<usize> = (0..right.len())
        .map(|j| rows.iter().map(|r| r[j].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .zip(&right)
            .map(|((text, &w), &right)| {
                if right {
                    format!("{text:>w$}")
                } else {
                    format!("{text:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Distinct values in first-appearance order.
pub(crate) fn distinct<T: PartialEq + Clone>(values: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn str_col<'a>(name: &str, it: impl Iterator<Item = &'a str>) -> Column {
    Column::new(name.into(), it.collect::<Vec<&str>>())
}

/// Wide per-domain final metric columns: `PREFIX.DOMAIN.METRIC`.
fn metric_columns(prefix: &str, per_run: &[Option<&DomainMetrics>]) -> Vec<Column> {
    let mut keys = BTreeSet::new();
    for (d, m) in per_run.iter().flatten().flat_map(|dm| dm.iter()) {
        for k in m.keys() {
            keys.insert((*d, k.clone()));
        }
    }
    keys.into_iter()
        .map(|(d, k)| {
            let data: Vec<Option<f64>> = per_run
                .iter()
                .map(|dm| {
                    dm.and_then(|dm| dm.get(&d))
                        .and_then(|m| m.get(&k))
                        .map(|v| v.0)
                })
                .collect();
            Column::new(format!("{prefix}.{d}.{k}").into(), data)
        })
        .collect()
}

impl RunSet {
    /// One row per run (wide); see the schema in [`crate::runs`].
    pub fn runs_frame(&self) -> PolarsResult<DataFrame> {
        let runs = &self.runs;
        let labels = self.labels();
        // Complete runs: the final results; running ones: their best epoch so far.
        let best: Vec<Option<(Option<u32>, DomainMetrics)>> =
            runs.iter().map(LoadedRun::best_so_far).collect();
        let mut cols = vec![
            str_col("run_id", runs.iter().map(|r| r.manifest.run_id.as_str())),
            str_col("label", labels.iter().map(String::as_str)),
            Column::new(
                "path".into(),
                runs.iter()
                    .map(|r| r.dir.to_string_lossy().into_owned())
                    .collect::<Vec<_>>(),
            ),
            str_col("model", runs.iter().map(|r| r.manifest.model.as_str())),
            str_col("dataset", runs.iter().map(|r| r.manifest.dataset.as_str())),
            Column::new(
                "seed".into(),
                runs.iter()
                    .map(|r| r.manifest.seed as i64)
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "status".into(),
                runs.iter()
                    .map(|r| r.manifest.status.to_string())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "best_epoch".into(),
                best.iter()
                    .map(|b| b.as_ref().and_then(|b| b.0).map(i64::from))
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "epochs_run".into(),
                runs.iter()
                    .map(|r| match r.manifest.status {
                        RunStatus::Complete => i64::from(r.manifest.epochs_run),
                        // The manifest counts epochs when the run ends; until then, the log does.
                        _ => r
                            .metrics
                            .iter()
                            .map(|m| i64::from(m.epoch))
                            .max()
                            .unwrap_or(0),
                    })
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "stop_reason".into(),
                runs.iter()
                    .map(|r| r.manifest.stopped_by().map(StopReason::as_str))
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "converged".into(),
                runs.iter()
                    .map(|r| r.manifest.converged())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                names::WALL_TIME_S.into(),
                runs.iter()
                    .map(|r| r.manifest.wall_time_s)
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "params.total".into(),
                runs.iter()
                    .map(|r| r.manifest.params.total as i64)
                    .collect::<Vec<_>>(),
            ),
        ];
        let modules: BTreeSet<&String> = runs
            .iter()
            .flat_map(|r| r.manifest.params.by_module.keys())
            .collect();
        for m in modules {
            let data: Vec<Option<i64>> = runs
                .iter()
                .map(|r| r.manifest.params.by_module.get(m).map(|&v| v as i64))
                .collect();
            cols.push(Column::new(format!("params.{m}").into(), data));
        }
        let flat: Vec<BTreeMap<String, serde_json::Value>> = runs
            .iter()
            .map(|r| flatten_json(&r.manifest.config))
            .collect();
        let keys: BTreeSet<&String> = flat.iter().flat_map(|f| f.keys()).collect();
        for k in keys {
            let values: Vec<Option<&serde_json::Value>> = flat.iter().map(|f| f.get(k)).collect();
            cols.push(json_column(&format!("config.{k}"), &values));
        }
        let test: Vec<Option<&DomainMetrics>> =
            best.iter().map(|b| b.as_ref().map(|b| &b.1)).collect();
        cols.extend(metric_columns("test", &test));
        let full: Vec<_> = runs.iter().map(|r| r.manifest.test_full.as_ref()).collect();
        cols.extend(metric_columns("test_full", &full));
        DataFrame::new(runs.len(), cols)
    }

    /// The results at a glance, one row per run: `label`, `status`, `params`, `epochs_run`,
    /// `best_epoch`, `stop_reason`, `converged` (false: stopped at a cap while the stopping rule
    /// still saw improvement), `wall_time_s`, then `test.D.METRIC` for each of `metrics` and both
    /// domains, and the full-ranking `test_full.D.METRIC` when `full_ranking` is set. What
    /// `cdsr-lab runs` prints.
    /// A run still training shows its best epoch so far ([`LoadedRun::best_so_far`]).
    /// A metric that no run recorded is an error naming the metrics there are.
    ///
    /// ```
    /// use cdsr_lab::runs::{load_runs, LoadOptions};
    /// let root = tempfile::tempdir().unwrap();
    /// let set = load_runs(root.path(), LoadOptions::default()).unwrap();
    /// let err = set.results_frame(&["ndcg@10"], false).unwrap_err().to_string();
    /// assert!(err.contains("test.A.ndcg@10"), "{err}");
    /// ```
    pub fn results_frame(&self, metrics: &[&str], full_ranking: bool) -> PolarsResult<DataFrame> {
        let all = self.runs_frame()?;
        let mut names = vec![
            "label",
            "status",
            "params.total",
            "epochs_run",
            "best_epoch",
            "stop_reason",
            "converged",
            names::WALL_TIME_S,
        ];
        let wanted = test_metric_names(metrics, full_ranking);
        let recorded = |prefix: &str| {
            all.get_column_names()
                .iter()
                .filter_map(|c| c.as_str().strip_prefix(prefix).map(str::to_owned))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for w in &wanted {
            if column(&all, w).is_err() {
                let eval = w.split('.').next().unwrap_or("test");
                polars_bail!(ColumnNotFound: "{w}: no run recorded it (recorded: {})", recorded(&format!("{eval}.A.")));
            }
        }
        names.extend(wanted.iter().map(String::as_str));
        let cols = names
            .iter()
            .map(|n| column(&all, n).cloned())
            .collect::<PolarsResult<Vec<_>>>()?;
        let mut df = DataFrame::new(all.height(), cols)?;
        df.rename("params.total", "params".into())?;
        Ok(df)
    }

    /// One row per (run, evaluation, domain, metric) of the final results (long form).
    pub fn final_metrics_frame(&self) -> PolarsResult<DataFrame> {
        let (mut id, mut model, mut dataset, mut seed) = (vec![], vec![], vec![], vec![]);
        let (mut eval, mut domain, mut metric, mut value) = (vec![], vec![], vec![], vec![]);
        for r in &self.runs {
            let m = &r.manifest;
            let sets = [("test", Some(&m.test)), ("test_full", m.test_full.as_ref())];
            for (label, set) in sets {
                for (d, ms) in set.into_iter().flatten() {
                    for (k, v) in ms {
                        id.push(m.run_id.as_str());
                        model.push(m.model.as_str());
                        dataset.push(m.dataset.as_str());
                        seed.push(m.seed as i64);
                        eval.push(label);
                        domain.push(d.to_string());
                        metric.push(k.as_str());
                        value.push(v.0);
                    }
                }
            }
        }
        let n = id.len();
        DataFrame::new(
            n,
            vec![
                Column::new("run_id".into(), id),
                Column::new("model".into(), model),
                Column::new("dataset".into(), dataset),
                Column::new("seed".into(), seed),
                Column::new("eval".into(), eval),
                Column::new("domain".into(), domain),
                Column::new("metric".into(), metric),
                Column::new("value".into(), value),
            ],
        )
    }

    /// Per run, what tells it apart from the other runs of the set ([`config_labels`]).
    pub fn labels(&self) -> Vec<String> {
        let runs: Vec<(&str, &serde_json::Value)> = self
            .runs
            .iter()
            .map(|r| (r.manifest.run_id.as_str(), &r.manifest.config))
            .collect();
        config_labels(&runs)
    }

    /// One row per (run, epoch, split, domain) with one Float64 column per metric key.
    pub fn epochs_frame(&self) -> PolarsResult<DataFrame> {
        let n: usize = self.runs.iter().map(|r| r.metrics.len()).sum();
        let mut keys: BTreeSet<&str> = BTreeSet::new();
        for r in &self.runs {
            for row in &r.metrics {
                keys.extend(row.values.keys().map(String::as_str));
            }
        }
        let run_labels = self.labels();
        let mut id = Vec::with_capacity(n);
        let mut label = Vec::with_capacity(n);
        let mut epoch = Vec::with_capacity(n);
        let mut split = Vec::with_capacity(n);
        let mut domain: Vec<Option<&str>> = Vec::with_capacity(n);
        let mut values: HashMap<&str, Vec<Option<f64>>> =
            keys.iter().map(|k| (*k, Vec::with_capacity(n))).collect();
        for (r, run_label) in self.runs.iter().zip(&run_labels) {
            for row in &r.metrics {
                id.push(r.manifest.run_id.as_str());
                label.push(run_label.as_str());
                epoch.push(i64::from(row.epoch));
                split.push(row.split.as_str());
                domain.push(row.domain.map(crate::data::Domain::as_str));
                for k in &keys {
                    values
                        .get_mut(k)
                        .expect("key collected above")
                        .push(row.values.get(*k).map(|v| v.0));
                }
            }
        }
        let mut cols = vec![
            Column::new("run_id".into(), id),
            Column::new("label".into(), label),
            Column::new("epoch".into(), epoch),
            Column::new("split".into(), split),
            Column::new("domain".into(), domain),
        ];
        for k in keys {
            let data = values.remove(k).expect("key collected above");
            cols.push(Column::new(k.into(), data));
        }
        DataFrame::new(n, cols)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn f64_column_reads_finite_numbers_and_nothing_else() {
        let df = polars::df!(
            "float" => [Some(0.5), None, Some(f64::NAN), Some(f64::INFINITY), Some(-2.0)],
            "int" => [Some(3i64), None, Some(-1), Some(0), Some(7)],
            "text" => ["0.5", "x", "1", "2", "3"],
            "flag" => [true, false, true, true, false]
        )
        .unwrap();
        assert_eq!(
            super::f64_column(&df, "float").unwrap(),
            [Some(0.5), None, None, None, Some(-2.0)]
        );
        assert_eq!(
            super::f64_column(&df, "int").unwrap(),
            [Some(3.0), None, Some(-1.0), Some(0.0), Some(7.0)]
        );
        // Strings and Booleans are not numbers, even when they would parse as one.
        for name in ["text", "flag"] {
            let err = super::f64_column(&df, name).unwrap_err().to_string();
            assert!(err.contains(&format!("column `{name}` has type")), "{err}");
            assert!(err.contains("expected a number"), "{err}");
        }
        assert!(super::f64_column(&df, "absent")
            .unwrap_err()
            .to_string()
            .contains("absent"));
        // A column with no value is empty whatever its type (an empty CSV column reads as str).
        let empty = polars::df!("x" => [None::<&str>, None]).unwrap();
        assert_eq!(super::f64_column(&empty, "x").unwrap(), [None, None]);
        assert_eq!(
            super::bool_column(&df, "flag").unwrap(),
            [Some(true), Some(false), Some(true), Some(true), Some(false)]
        );
        assert!(super::bool_column(&df, "int")
            .unwrap_err()
            .to_string()
            .contains("expected a boolean"));
    }

    use super::config_labels;
    use serde_json::json;

    #[test]
    fn labels_name_a_gca_section_once_and_leave_execution_settings_out() {
        let gca = |positions: serde_json::Value| {
            json!({"gca": {"positions": positions, "gate": "sigmoid", "heads": 4},
                   "train": {"seed": 1, "threads": 2}})
        };
        let base = json!({"gca": null, "train": {"seed": 1, "threads": 1}});
        let early = gca(json!([0]));
        let stack = gca(json!([0, 1]));
        let labels = config_labels(&[("b", &base), ("e", &early), ("s", &stack)]);
        assert_eq!(labels, ["gca none", "positions [0]", "positions [0,1]"]);

        // GCA runs that agree on every GCA setting are named by one of them.
        let labels = config_labels(&[("b", &base), ("e", &early), ("e2", &early)]);
        assert_eq!(
            labels,
            ["gca none", "gate sigmoid (e)", "gate sigmoid (e2)"]
        );

        // A nested section only some runs have (AutoCDSR+'s bottleneck tokens inside AutoCDSR's
        // section, which the baseline lacks) is named once, by its first key.
        let seed = |s: u64| json!({"seed": s});
        let plain = json!({"train": seed(1)});
        let auto = json!({"train": seed(1), "autocdsr": {"ib": null, "pareto": {"max_iter": 250}}});
        let plus = json!({"train": seed(1),
                          "autocdsr": {"ib": {"tokens": 4}, "pareto": {"max_iter": 250}}});
        let plain2 = json!({"train": seed(2)});
        let labels = config_labels(&[("p", &plain), ("a", &auto), ("x", &plus), ("q", &plain2)]);
        assert_eq!(
            labels,
            ["seed 1", "seed 1, ib none", "seed 1, tokens 4", "seed 2"]
        );

        // An option written only when set (`cos_penalty`) names the one run that sets it, even
        // when no other run holds a second value of it.
        let mut penalised = early.clone();
        penalised["gca"]["cos_penalty"] = json!(1.0);
        let runs = [
            ("b", &base),
            ("e", &early),
            ("s", &stack),
            ("p", &penalised),
        ];
        assert_eq!(
            config_labels(&runs),
            [
                "gca none",
                "positions [0]",
                "positions [0,1]",
                "positions [0], cos_penalty 1.0"
            ]
        );
    }

    #[test]
    fn labels_order_keys_by_their_distinct_values_and_qualify_shared_names() {
        let a = json!({"model": {"d": 1, "heads": 2, "layers": 1, "dropout": 0.1},
                       "gca": {"heads": 4}, "optim": {"lr": 0.001}});
        let b = json!({"model": {"d": 2, "heads": 4, "layers": 2, "dropout": 0.5},
                       "gca": {"heads": 8}, "optim": {"lr": 0.0001}});
        let c = json!({"model": {"d": 3, "heads": 4, "layers": 2, "dropout": 0.5},
                       "gca": {"heads": 8}, "optim": {"lr": 0.0001}});
        let labels = config_labels(&[("a", &a), ("b", &b), ("c", &c)]);
        assert_eq!(
            labels,
            [
                "d 1, gca.heads 4 (+4)",
                "d 2, gca.heads 8 (+4)",
                "d 3, gca.heads 8 (+4)",
            ]
        );
    }
}
