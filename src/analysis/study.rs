//! The study table: one row per (run, target domain) that joins a run's identity, its GCA
//! variant, its parameter count and final test metrics with its GCA tensor statistics. This is
//! the frame the paper's tables and figures 1-4 are drawn from, and what a notebook starts with.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `run_id`, `model`, `dataset` | String | identity |
//! | `seed` | Int64 | |
//! | `variant` | String | [`Variant`] label: `baseline`, `+GCA_early`, `+GCA_stack`, `+GCA[1]`, ... |
//! | `positions` | String | GCA position set as compact JSON, `[]` for none |
//! | `gate`, `layer_norm` | String, Boolean (null without GCA) | GCA gate activation and LayerNorm |
//! | `objective` | String | `rec` (plain), `autocdsr` (Pareto-MTL `a_cd`), `autocdsr-plus` (IB tokens, share onto them), each with `-fixed` for a fixed weight |
//! | `setting` | String | what the report groups seeds by: the variant plus gate/LayerNorm for GCA runs (`+GCA_early sigmoid LN`) and any intervention on X' (`+GCA_early sigmoid LN orthogonal`, `... cos_penalty +0.1`), the objective (`AutoCDSR`, `AutoCDSR+`, `AutoCDSR every 4` for Pareto-MTL weights recomputed every 4th step), or `single-domain` for `sasrec-single` |
//! | `d_model` | Int64 (nullable) | `config.model.d_model` |
//! | `params` | Float64 | total trainable parameters |
//! | `domain` | String | `A` / `B` |
//! | `ndcg@1` ... `auc` | Float64 | final test metrics (sampled negatives) |
//! | `cos_x_xprime`, `cos_x_y` | Float64 (nullable) | mean over the run's GCA positions of the query domain's mean \|cos\| (null without GCA or capture) |
//! | `a_cd` | Float64 (nullable) | the merged stream's cross-domain attention share on the test cases of the domain, at the best epoch (`metrics.jsonl`) |
//! | `wall_time_s` | Float64 (nullable) | the run's training wall time |
//! | `stop_reason` | String (nullable) | `early_stop`, `epoch_cap`, `time_cap` ([`crate::runs::RunManifest::stopped_by`]) |
//! | `converged` | Boolean (nullable) | stopped by early stopping; false: stopped at a cap while still improving |
//!
//! ```
//! use cdsr_lab::analysis::study::Variant;
//! assert_eq!(Variant::of(&[], 2).label(), "baseline");
//! assert_eq!(Variant::of(&[0], 2).label(), "+GCA_early");
//! assert_eq!(Variant::of(&[0, 1, 2], 2).label(), "+GCA_stack");
//! assert_eq!(Variant::of(&[1], 2).label(), "+GCA[1]");
//! ```

use std::collections::BTreeMap;

use polars::prelude::*;

use crate::data::Domain;
use crate::eval::names;
use crate::eval::Metrics;
use crate::runs::frames::f64_column;
use crate::runs::{LoadReport, RunConfigView, RunSet};

/// Where a run has GCA modules, named as in the paper.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    /// No GCA module.
    Baseline,
    /// GCA after the embedding only (position 0).
    Early,
    /// GCA at every position `0..=layers`.
    Stack,
    /// Any other position set.
    Positions(Vec<usize>),
}

impl Variant {
    /// The variant of a position set in a model with `layers` encoder blocks.
    pub fn of(positions: &[usize], layers: usize) -> Variant {
        let mut p = positions.to_vec();
        p.sort_unstable();
        p.dedup();
        if p.is_empty() {
            Variant::Baseline
        } else if p == [0] && layers > 0 {
            Variant::Early
        } else if p == (0..=layers).collect::<Vec<_>>() {
            Variant::Stack
        } else {
            Variant::Positions(p)
        }
    }

    pub fn label(&self) -> String {
        match self {
            Variant::Baseline => "baseline".into(),
            Variant::Early => "+GCA_early".into(),
            Variant::Stack => "+GCA_stack".into(),
            Variant::Positions(p) => format!(
                "+GCA[{}]",
                p.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// What a run trains for: the plain recommendation loss, or AutoCDSR's (AutoCDSR+ with IB
/// tokens) with Pareto-MTL or a fixed weight. The study frame's `objective` column holds
/// [`Objective::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    Rec,
    AutoCdsr { plus: bool, fixed: bool },
}

impl Objective {
    /// From a run's `[autocdsr]` section (absent or null: [`Objective::Rec`]).
    pub fn of_config(config: &RunConfigView) -> Objective {
        let Some(a) = &config.autocdsr else {
            return Objective::Rec;
        };
        Objective::AutoCdsr {
            plus: a.ib.is_some(),
            fixed: a.weighting.kind.as_deref() == Some("fixed"),
        }
    }

    /// `rec`, `autocdsr`, `autocdsr-plus`, each AutoCDSR one with `-fixed` for a fixed weight.
    pub fn as_str(self) -> &'static str {
        match self {
            Objective::Rec => "rec",
            Objective::AutoCdsr {
                plus: false,
                fixed: false,
            } => "autocdsr",
            Objective::AutoCdsr {
                plus: false,
                fixed: true,
            } => "autocdsr-fixed",
            Objective::AutoCdsr {
                plus: true,
                fixed: false,
            } => "autocdsr-plus",
            Objective::AutoCdsr {
                plus: true,
                fixed: true,
            } => "autocdsr-plus-fixed",
        }
    }
}

/// Whether `suffix` is what [`intervention_label`] appends to a GCA setting.
fn is_intervention_suffix(suffix: &str) -> bool {
    matches!(suffix, " orthogonal" | " parallel") || suffix.starts_with(" cos_penalty ")
}

/// The GCA setting among `settings` that `setting` (`REF suffix`) is an intervention on, with
/// the intervention (the suffix without its space); `None` when `setting` is none.
fn intervened_on<'a>(
    setting: &'a str,
    settings: impl IntoIterator<Item = &'a str>,
) -> Option<(&'a str, &'a str)> {
    settings.into_iter().find_map(|r| {
        let suffix = setting.strip_prefix(r)?;
        (r != "baseline" && is_intervention_suffix(suffix)).then(|| (r, &suffix[1..]))
    })
}

/// A GCA intervention of a run's config (`gca.project`, `gca.cos_penalty`) as the suffix of its
/// setting label: ` orthogonal`, ` parallel`, ` cos_penalty +0.1`; empty for none.
fn intervention_label(config: &RunConfigView) -> String {
    let mut s = String::new();
    if let Some(p) = config.gca.project.as_deref().filter(|p| *p != "none") {
        s.push(' ');
        s.push_str(p);
    }
    if let Some(w) = config.gca.cos_penalty.filter(|w| *w != 0.0) {
        s.push_str(&format!(" cos_penalty {w:+}"));
    }
    s
}

/// AutoCDSR's Pareto-MTL weights recomputed on every n-th step only
/// (`autocdsr.weighting.every`) as the suffix of its setting label: ` every 4`; empty for
/// every step.
fn pareto_schedule_label(config: &RunConfigView) -> String {
    match config.autocdsr.as_ref().and_then(|a| a.weighting.every) {
        Some(n) if n > 1 => format!(" every {n}"),
        _ => String::new(),
    }
}

/// How the study frame labels one run (its `variant`, `positions`, `gate`, `layer_norm`,
/// `objective` and `setting` columns).
#[derive(Debug, Clone, PartialEq)]
pub struct RunLabels {
    pub variant: String,
    pub positions: Vec<usize>,
    /// Gate activation and LayerNorm flag; `None` without GCA.
    pub gate: Option<String>,
    pub layer_norm: Option<bool>,
    pub objective: Objective,
    /// What the report groups seeds by (see the module doc).
    pub setting: String,
}

impl RunLabels {
    pub fn of(m: &crate::runs::RunManifest) -> RunLabels {
        let config = m.config_view();
        let positions = config.gca.positions.clone();
        let layers = config.model.layers.unwrap_or(1);
        let variant = Variant::of(&positions, layers).label();
        let has_gca = !positions.is_empty();
        let gate = config.gca.gate.as_deref().filter(|_| has_gca);
        let layer_norm = config.gca.layer_norm.filter(|_| has_gca);
        let objective = Objective::of_config(&config);
        let setting = if m.model == crate::model::ModelKind::SasrecSingle.as_str() {
            "single-domain".to_owned()
        } else if has_gca {
            setting_label(&variant, gate, layer_norm, objective) + &intervention_label(&config)
        } else {
            setting_label(&variant, gate, layer_norm, objective) + &pareto_schedule_label(&config)
        };
        RunLabels {
            variant,
            positions,
            gate: gate.map(str::to_owned),
            layer_norm,
            objective,
            setting,
        }
    }
}

/// The report's grouping label (see the module doc's `setting`), without the intervention.
fn setting_label(
    variant: &str,
    gate: Option<&str>,
    ln: Option<bool>,
    objective: Objective,
) -> String {
    match (objective, gate) {
        (Objective::AutoCdsr { plus, fixed }, _) => format!(
            "AutoCDSR{}{}",
            if plus { "+" } else { "" },
            if fixed { " fixed" } else { "" }
        ),
        (Objective::Rec, Some(g)) => format!(
            "{variant} {g}{}",
            if ln.unwrap_or(true) { " LN" } else { " noLN" }
        ),
        (Objective::Rec, None) => variant.to_owned(),
    }
}

/// One row of the study table: a run and one of its target domains (see the module doc for
/// the columns).
#[derive(Debug, Clone, PartialEq)]
pub struct StudyRow {
    pub run_id: String,
    pub model: String,
    pub dataset: String,
    pub seed: u64,
    /// [`Variant::label`].
    pub variant: String,
    /// The GCA position set as compact JSON, `[]` for none.
    pub positions: String,
    /// GCA gate activation (`None` without GCA).
    pub gate: Option<String>,
    /// GCA LayerNorm (`None` without GCA).
    pub layer_norm: Option<bool>,
    pub objective: Objective,
    /// What the report groups seeds by.
    pub setting: String,
    pub d_model: Option<usize>,
    pub params: u64,
    pub domain: Domain,
    /// The final test metrics (sampled negatives), in the order of [`Metrics::KEYS`].
    pub metrics: [Option<f64>; 10],
    /// Mean over the run's GCA positions of the query domain's mean |cos(X, X')|.
    pub cos_x_xprime: Option<f64>,
    /// The same of |cos(X, Y)|.
    pub cos_x_y: Option<f64>,
    /// The merged stream's `a_cd` on the domain's test cases at the best epoch.
    pub a_cd: Option<f64>,
    pub wall_time_s: Option<f64>,
    /// Why the run stopped ([`crate::runs::RunManifest::stopped_by`]).
    pub stop_reason: Option<crate::runs::StopReason>,
    /// Stopped by early stopping, not at a cap ([`crate::runs::RunManifest::converged`]).
    pub converged: Option<bool>,
}

/// The study table's rows of `set`: one per (run, target domain with final test metrics).
/// Runs without tensors get no tensor statistics; runs whose tensors cannot be read are
/// listed in the returned report.
pub fn study_rows(set: &RunSet) -> PolarsResult<(Vec<StudyRow>, LoadReport)> {
    let (stats, report) = set.tensor_stats_frame()?;
    // Mean over positions per (run, domain).
    let mut cos: BTreeMap<(String, String), (f64, usize, f64, usize)> = BTreeMap::new();
    if stats.height() > 0 {
        let ids = stats.column("run_id")?.str()?.clone();
        let doms = stats.column("domain")?.str()?.clone();
        let cx = f64_column(&stats, "cos_x_xprime")?;
        let cy = f64_column(&stats, "cos_x_y")?;
        for i in 0..stats.height() {
            let (Some(id), Some(d)) = (ids.get(i), doms.get(i)) else {
                continue;
            };
            let e = cos
                .entry((id.to_owned(), d.to_owned()))
                .or_insert((0.0, 0, 0.0, 0));
            if let Some(v) = cx[i] {
                e.0 += v;
                e.1 += 1;
            }
            if let Some(v) = cy[i] {
                e.2 += v;
                e.3 += 1;
            }
        }
    }
    let mut rows = Vec::new();
    for run in &set.runs {
        let m = &run.manifest;
        let labels = RunLabels::of(m);
        let d_model = m.config_view().model.d_model;
        let pos_label =
            serde_json::to_string(&labels.positions).expect("a list of integers serialises");
        for d in Domain::BOTH {
            let Some(test) = m.test.get(&d) else {
                continue;
            };
            let a_cd = run
                .metrics
                .iter()
                .find(|r| {
                    r.split == crate::runs::Split::Test
                        && r.domain == Some(d)
                        && Some(r.epoch) == m.best_epoch
                })
                .and_then(|r| r.values.get(names::A_CD))
                .map(|x| x.0);
            let c = cos.get(&(m.run_id.clone(), d.to_string()));
            rows.push(StudyRow {
                run_id: m.run_id.clone(),
                model: m.model.clone(),
                dataset: m.dataset.clone(),
                seed: m.seed,
                variant: labels.variant.clone(),
                positions: pos_label.clone(),
                gate: labels.gate.clone(),
                layer_norm: labels.layer_norm,
                objective: labels.objective,
                setting: labels.setting.clone(),
                d_model,
                params: m.params.total,
                domain: d,
                metrics: Metrics::KEYS.map(|k| test.get(k).map(|x| x.0)),
                cos_x_xprime: c.filter(|c| c.1 > 0).map(|c| c.0 / c.1 as f64),
                cos_x_y: c.filter(|c| c.3 > 0).map(|c| c.2 / c.3 as f64),
                a_cd,
                wall_time_s: m.wall_time_s,
                stop_reason: m.stopped_by(),
                converged: m.converged(),
            });
        }
    }
    Ok((rows, report))
}

/// The study table of `rows` (see the module doc).
pub fn study_rows_frame(rows: &[StudyRow]) -> PolarsResult<DataFrame> {
    fn col<T, P>(name: &str, rows: &[StudyRow], f: impl Fn(&StudyRow) -> T) -> Column
    where
        Series: NamedFrom<Vec<T>, P>,
        P: ?Sized,
    {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<T>>())
    }
    let mut columns = vec![
        col("run_id", rows, |r| r.run_id.clone()),
        col("model", rows, |r| r.model.clone()),
        col("dataset", rows, |r| r.dataset.clone()),
        col("seed", rows, |r| r.seed as i64),
        col("variant", rows, |r| r.variant.clone()),
        col("positions", rows, |r| r.positions.clone()),
        col("gate", rows, |r| r.gate.clone()),
        col("layer_norm", rows, |r| r.layer_norm),
        col("objective", rows, |r| r.objective.as_str()),
        col("setting", rows, |r| r.setting.clone()),
        col("d_model", rows, |r| r.d_model.map(|x| x as i64)),
        col("params", rows, |r| r.params as f64),
        col("domain", rows, |r| r.domain.to_string()),
    ];
    for (i, k) in Metrics::KEYS.iter().enumerate() {
        columns.push(col(k, rows, |r| r.metrics[i]));
    }
    columns.push(col("cos_x_xprime", rows, |r| r.cos_x_xprime));
    columns.push(col("cos_x_y", rows, |r| r.cos_x_y));
    columns.push(col(names::A_CD, rows, |r| r.a_cd));
    columns.push(col(names::WALL_TIME_S, rows, |r| r.wall_time_s));
    columns.push(col("stop_reason", rows, |r| {
        r.stop_reason.map(|s| s.as_str())
    }));
    columns.push(col("converged", rows, |r| r.converged));
    DataFrame::new(rows.len(), columns)
}

/// Builds the study table of `set` (see the module doc): [`study_rows`] as a frame. Runs
/// without tensors contribute null tensor columns; runs whose tensors cannot be read are listed
/// in the returned report.
pub fn study_frame(set: &RunSet) -> PolarsResult<(DataFrame, LoadReport)> {
    let (rows, report) = study_rows(set)?;
    Ok((study_rows_frame(&rows)?, report))
}

/// (model, variant, d_model, domain).
type CellKey = (String, String, Option<i64>, String);

/// Mean and spread of one metric for one (model, setting, d_model, domain) cell across seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantSummary {
    pub model: String,
    /// The study frame's `setting` (variant, gate and LayerNorm, or the AutoCDSR objective).
    pub variant: String,
    pub d_model: Option<i64>,
    pub domain: String,
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation across seeds (`None` for one seed).
    pub sd: Option<f64>,
    pub params: f64,
    /// Mean test `a_cd` over the cell's runs that logged it.
    pub a_cd: Option<f64>,
    /// Mean training wall time (s) over the cell's runs.
    pub wall_time_s: Option<f64>,
    /// Runs of the cell that stopped at a cap while still improving; `None` when the study
    /// table does not record convergence (no `converged` column).
    pub unconverged: Option<usize>,
}

/// The correlation of |cos(X, X')| with the metric over GCA runs of one (model, domain).
#[derive(Debug, Clone, PartialEq)]
pub struct CosCorrelation {
    pub model: String,
    pub domain: String,
    pub pearson: crate::analysis::stats::Correlation,
    pub spearman: crate::analysis::stats::Correlation,
}

/// One setting against a reference setting of the same model, width and domain, over seeds:
/// the plain baseline, or for an intervention on X' (`+GCA_early sigmoid LN orthogonal`) also
/// the GCA setting it intervenes on (`+GCA_early sigmoid LN`).
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineComparison {
    pub model: String,
    pub setting: String,
    /// `baseline`, or the GCA setting an intervention changes.
    pub reference: String,
    pub d_model: Option<i64>,
    pub domain: String,
    /// The setting's runs and the baseline's runs in the test.
    pub n: usize,
    pub n_baseline: usize,
    pub mean: f64,
    pub baseline_mean: f64,
    /// Paired by seed (both sides ran the same seeds), else Welch's test over all runs.
    pub paired: bool,
    /// `mean_difference` is the setting's mean minus the baseline's.
    pub test: crate::analysis::stats::TTest,
    /// Runs on either side that stopped at a cap while still improving (`None`: not recorded).
    pub unconverged: Option<usize>,
}

impl BaselineComparison {
    /// The difference relative to the baseline's mean.
    pub fn relative_gain(&self) -> f64 {
        self.test.mean_difference / self.baseline_mean
    }
}

/// One intervention on X' (`orthogonal`, `parallel`, `cos_penalty +1`, ...) pooled over every
/// GCA setting it was applied to: each run of `REF intervention` minus the run of `REF` with the
/// same model, width, domain and seed, over all settings `REF`. Three seeds per setting give a
/// paired test with 2 degrees of freedom; pooled, the test asks whether the intervention moves
/// the metric the same way wherever it is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct InterventionEffect {
    pub model: String,
    pub d_model: Option<i64>,
    /// `A`, `B`, or `A+B`: per run, the mean over its domains (pairs whose runs have every
    /// domain of the table).
    pub domain: String,
    /// The setting-label suffix, without its leading space: `orthogonal`, `cos_penalty -1`.
    pub intervention: String,
    /// The GCA settings pooled (`+GCA_early sigmoid LN`, ...).
    pub settings: Vec<String>,
    /// Paired t-test over the pairs; `mean_difference` is intervened minus not.
    pub test: crate::analysis::stats::TTest,
    /// The pairs in the test.
    pub n: usize,
    /// 95% t interval of the mean difference.
    pub ci95: crate::analysis::stats::Interval,
}

/// The study-table columns that the comparisons of settings read, one entry per row.
struct ComparisonColumns<'a> {
    model: &'a [String],
    setting: &'a [String],
    d_model: &'a [Option<i64>],
    domain: &'a [String],
    seed: &'a [Option<i64>],
    acc: &'a [Option<f64>],
}

/// Every intervention on X' in the table against the GCA settings it changes, pooled over those
/// settings (see [`InterventionEffect`]); per (model, width) and domain, then over the domains.
/// Interventions with fewer than two pairs, or with constant differences, go to `notes`.
fn intervention_effects(
    columns: &ComparisonColumns,
    notes: &mut Vec<String>,
) -> Vec<InterventionEffect> {
    use crate::analysis::describe::summary;
    use crate::analysis::stats::paired_t;
    use std::collections::BTreeSet;
    // (model, d_model) -> setting -> (seed, domain) -> metric; rows without a seed cannot pair.
    type Runs<'a> = BTreeMap<(i64, &'a str), f64>;
    let mut cells: BTreeMap<(&str, Option<i64>), BTreeMap<&str, Runs>> = BTreeMap::new();
    let domains: BTreeSet<&str> = columns.domain.iter().map(String::as_str).collect();
    for i in 0..columns.model.len() {
        if let (Some(a), Some(s)) = (columns.acc[i], columns.seed[i]) {
            cells
                .entry((columns.model[i].as_str(), columns.d_model[i]))
                .or_default()
                .entry(columns.setting[i].as_str())
                .or_default()
                .insert((s, columns.domain[i].as_str()), a);
        }
    }
    let mut out = Vec::new();
    for ((model, d_model), settings) in &cells {
        // intervention -> domain label -> (reference settings, intervened values, reference values)
        type Pairs<'a> = BTreeMap<String, (BTreeSet<&'a str>, Vec<f64>, Vec<f64>)>;
        let mut pooled: BTreeMap<String, Pairs> = BTreeMap::new();
        for (s, runs) in settings {
            let Some((reference, intervention)) = intervened_on(s, settings.keys().copied()) else {
                continue;
            };
            let base = &settings[reference];
            let by_domain = pooled.entry(intervention.to_owned()).or_default();
            let mut push = |label: String, a: f64, b: f64| {
                let e = by_domain.entry(label).or_default();
                e.0.insert(reference);
                e.1.push(a);
                e.2.push(b);
            };
            for (key, a) in runs {
                if let Some(b) = base.get(key) {
                    push(key.1.to_owned(), *a, *b);
                }
            }
            if domains.len() > 1 {
                let seeds: BTreeSet<i64> = runs.keys().map(|k| k.0).collect();
                for sd in seeds {
                    let both = |r: &Runs| -> Option<f64> {
                        let v: Option<Vec<f64>> =
                            domains.iter().map(|d| r.get(&(sd, *d)).copied()).collect();
                        v.map(|v| v.iter().sum::<f64>() / v.len() as f64)
                    };
                    if let (Some(a), Some(b)) = (both(runs), both(base)) {
                        push(domains.iter().copied().collect::<Vec<_>>().join("+"), a, b);
                    }
                }
            }
        }
        for (intervention, by_domain) in pooled {
            for (domain, (refs, a, b)) in by_domain {
                let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
                let ci = summary(&d).ok().and_then(|s| s.mean_interval(0.95));
                match (paired_t(&a, &b), ci) {
                    (Ok(test), Some(ci95)) => out.push(InterventionEffect {
                        model: (*model).to_owned(),
                        d_model: *d_model,
                        domain,
                        intervention: intervention.clone(),
                        settings: refs.into_iter().map(str::to_owned).collect(),
                        test,
                        n: d.len(),
                        ci95,
                    }),
                    (Err(e), _) => notes.push(format!(
                        "{intervention} pooled over GCA settings, {model} d {} {domain}: {e}",
                        d_model.map_or("-".into(), |d| d.to_string())
                    )),
                    (Ok(_), None) => {}
                }
            }
        }
    }
    out
}

/// The paper's tables over a study frame: per-variant means, each setting against the baseline of
/// its width, the |cos|–accuracy correlation and the parameter-matched comparison, all on one
/// metric (NDCG@10 by default).
#[derive(Debug, Clone, PartialEq)]
pub struct StudyReport {
    pub metric: String,
    pub variants: Vec<VariantSummary>,
    /// Every non-baseline setting against the plain baseline of the same model, `d_model` and
    /// domain, where both have at least two runs.
    pub baseline_comparisons: Vec<BaselineComparison>,
    /// Each intervention on X' pooled over the GCA settings it changes.
    pub intervention_effects: Vec<InterventionEffect>,
    pub correlations: Vec<CosCorrelation>,
    /// Per (model, domain): the GCA runs matched against that model's baselines.
    pub param_matches: Vec<(
        String,
        String,
        Vec<crate::analysis::param_match::ParamMatch>,
    )>,
    /// The parameter matches summarised per (model, domain, setting).
    pub param_summary: Vec<ParamMatchSummary>,
    /// Statistics that could not be computed (too few runs, constant values), with the reason.
    pub notes: Vec<String>,
}

/// The parameter-matched comparison of one (model, domain, setting) cell of GCA runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamMatchSummary {
    pub model: String,
    pub domain: String,
    pub setting: String,
    /// GCA runs in the cell.
    pub n: usize,
    /// Mean accuracy gain over each run's nearest baseline.
    pub mean_gain: f64,
    /// Median parameter-efficiency ratio (runs whose ratio the fit gives).
    pub median_ratio: Option<f64>,
}

/// Reads a study table written as CSV (the demo's `study.csv`, `cdsr-lab runs`-style tables
/// of [`study_frame`]), inferring each column's type from all rows, so a report can be
/// recomputed from the CSV alone: `StudyReport::of(&read_study_csv(path)?, "ndcg@10")`.
///
/// A table without the columns that describe GCA settings and AutoCDSR runs (`gate`,
/// `layer_norm`, `objective`, `setting`, `a_cd`, `wall_time_s`) is read as a table of plain
/// runs: `objective` is `rec`, `setting` the `variant`, the others null. Any other missing
/// column is an error naming every one missing.
pub fn read_study_csv(path: &std::path::Path) -> PolarsResult<DataFrame> {
    let mut df = CsvReadOptions::default()
        .with_infer_schema_length(None)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        // One line naming the file (polars' own message runs over several, with hints).
        .map_err(|e| {
            let first = e.to_string().lines().next().unwrap_or_default().to_owned();
            polars_err!(ComputeError: "{}: not a study table CSV: {first}", path.display())
        })?;
    let required = [
        "run_id", "model", "seed", "variant", "d_model", "params", "domain",
    ];
    let missing: Vec<&str> = required
        .into_iter()
        .filter(|c| df.column(c).is_err())
        .collect();
    if !missing.is_empty() {
        polars_bail!(ColumnNotFound: "{}: not a study table: no column {}", path.display(),
            missing.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "));
    }
    let n = df.height();
    let absent = |df: &DataFrame, c: &str| df.column(c).is_err();
    if absent(&df, "objective") {
        df.with_column(Column::new(
            "objective".into(),
            vec![Objective::Rec.as_str(); n],
        ))?;
    }
    if absent(&df, "setting") {
        let variant = df.column("variant")?.clone().with_name("setting".into());
        df.with_column(variant)?;
    }
    if absent(&df, "gate") {
        df.with_column(Column::full_null("gate".into(), n, &DataType::String))?;
    }
    if absent(&df, "layer_norm") {
        df.with_column(Column::full_null(
            "layer_norm".into(),
            n,
            &DataType::Boolean,
        ))?;
    }
    for c in ["a_cd", "wall_time_s", "cos_x_xprime", "cos_x_y"] {
        if absent(&df, c) {
            df.with_column(Column::full_null(c.into(), n, &DataType::Float64))?;
        }
    }
    Ok(df)
}

/// Stacks study tables ([`study_frame`]s, [`read_study_csv`]s) into one, so a report can pool
/// runs read from their directories with runs listed in a CSV: columns are aligned to the
/// first table's names and types (a column a later table lacks is null there), and a (run_id,
/// domain) row already in an earlier table is left out, so the first source of a run wins.
pub fn stack_study_tables(tables: &[DataFrame]) -> PolarsResult<DataFrame> {
    let Some(first) = tables.first() else {
        polars_bail!(NoData: "no study table to stack")
    };
    let schema = first.schema().clone();
    let mut seen = std::collections::HashSet::new();
    let mut out: Option<DataFrame> = None;
    for table in tables {
        let n = table.height();
        let columns = schema
            .iter()
            .map(|(name, dtype)| match table.column(name) {
                Ok(c) => c.cast(dtype),
                Err(_) => Ok(Column::full_null(name.clone(), n, dtype)),
            })
            .collect::<PolarsResult<Vec<_>>>()?;
        let aligned = DataFrame::new(n, columns)?;
        let keys = |c: &str| {
            crate::analysis::stats::column_keys(&aligned, c)
                .map_err(|e| polars_err!(ComputeError: "{e}"))
        };
        let (run, domain) = (keys("run_id")?, keys("domain")?);
        let keep: BooleanChunked = run
            .into_iter()
            .zip(domain)
            .map(|key| seen.insert(key))
            .collect();
        let kept = aligned.filter(&keep)?;
        match out.as_mut() {
            Some(o) => {
                o.vstack_mut(&kept)?;
            }
            None => out = Some(kept),
        }
    }
    Ok(out.expect("at least one table"))
}

impl StudyReport {
    /// Computes the report of `study` (a [`study_frame`]) on `metric` (e.g. `ndcg@10`).
    pub fn of(study: &DataFrame, metric: &str) -> PolarsResult<StudyReport> {
        use crate::analysis::describe::summary;
        use crate::analysis::param_match::{param_match, ParamPoint};
        use crate::analysis::stats::{pearson, spearman};
        let n = study.height();
        let s = |c: &str| -> PolarsResult<Vec<String>> {
            Ok(crate::runs::frames::column(study, c)?
                .str()?
                .iter()
                .map(|v| v.unwrap_or("").to_owned())
                .collect())
        };
        let f = |c: &str| f64_column(study, c);
        let (run_id, model, variant, domain) =
            (s("run_id")?, s("model")?, s("variant")?, s("domain")?);
        let (setting, objective) = (s("setting")?, s("objective")?);
        let (acd, wall) = (f(names::A_CD)?, f(names::WALL_TIME_S)?);
        // Convergence per row, when the table records it (tables written before it did not).
        let converged: Option<Vec<Option<bool>>> = crate::runs::frames::column(study, "converged")
            .is_ok()
            .then(|| crate::analysis::stats::column_keys(study, "converged"))
            .transpose()
            .map_err(|e| polars_err!(ComputeError: "{e}"))?
            .map(|keys| {
                keys.iter()
                    .map(|k| match k.as_str() {
                        "true" => Some(true),
                        "false" => Some(false),
                        _ => None,
                    })
                    .collect()
            });
        let unconverged_row = |i: usize| converged.as_ref().map(|c| (c[i] == Some(false)) as usize);
        let d_model: Vec<Option<i64>> = crate::runs::frames::column(study, "d_model")?
            .cast(&DataType::Int64)?
            .i64()?
            .to_vec();
        let (params, acc, cos) = (f("params")?, f(metric)?, f("cos_x_xprime")?);
        let seed: Vec<Option<i64>> = crate::runs::frames::column(study, "seed")?
            .cast(&DataType::Int64)?
            .i64()?
            .to_vec();
        let mut notes = Vec::new();
        // Per (model, setting, d_model, domain) cell: metric values, params, a_cd, wall time.
        type Cell = (Vec<f64>, f64, Vec<f64>, Vec<f64>, Option<usize>);
        let mut cells: BTreeMap<CellKey, Cell> = BTreeMap::new();
        for i in 0..n {
            if let Some(a) = acc[i] {
                let e = cells
                    .entry((
                        model[i].clone(),
                        setting[i].clone(),
                        d_model[i],
                        domain[i].clone(),
                    ))
                    .or_insert((
                        Vec::new(),
                        params[i].unwrap_or(f64::NAN),
                        vec![],
                        vec![],
                        converged.as_ref().map(|_| 0),
                    ));
                e.0.push(a);
                e.2.extend(acd[i]);
                e.3.extend(wall[i]);
                if let (Some(total), Some(u)) = (e.4.as_mut(), unconverged_row(i)) {
                    *total += u;
                }
            }
        }
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let variants = cells
            .into_iter()
            .filter_map(
                |((model, variant, d_model, domain), (v, params, a, w, u))| {
                    let sm = summary(&v).ok()?;
                    Some(VariantSummary {
                        model,
                        variant,
                        d_model,
                        domain,
                        n: sm.n,
                        mean: sm.mean,
                        sd: sm.sd,
                        params,
                        a_cd: mean(&a),
                        wall_time_s: mean(&w),
                        unconverged: u,
                    })
                },
            )
            .collect();
        let columns = ComparisonColumns {
            model: &model,
            setting: &setting,
            d_model: &d_model,
            domain: &domain,
            seed: &seed,
            acc: &acc,
        };
        let mut baseline_comparisons = baseline_comparisons(&columns, &mut notes);
        let intervention_effects = intervention_effects(&columns, &mut notes);
        if converged.is_some() {
            for c in baseline_comparisons.iter_mut() {
                let count = (0..n)
                    .filter(|&i| {
                        model[i] == c.model
                            && d_model[i] == c.d_model
                            && domain[i] == c.domain
                            && (setting[i] == c.setting || setting[i] == c.reference)
                            && acc[i].is_some()
                    })
                    .filter_map(unconverged_row)
                    .sum();
                c.unconverged = Some(count);
            }
        }
        // |cos| vs metric over GCA runs, per (model, domain).
        let mut pairs: BTreeMap<(String, String), (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for i in 0..n {
            if let (Some(c), Some(a)) = (cos[i], acc[i]) {
                let e = pairs
                    .entry((model[i].clone(), domain[i].clone()))
                    .or_default();
                e.0.push(c);
                e.1.push(a);
            }
        }
        let mut correlations = Vec::new();
        for ((model, domain), (x, y)) in pairs {
            match (pearson(&x, &y), spearman(&x, &y)) {
                (Ok(p), Ok(sp)) => correlations.push(CosCorrelation {
                    model,
                    domain,
                    pearson: p,
                    spearman: sp,
                }),
                (Err(e), _) | (_, Err(e)) => {
                    notes.push(format!("|cos| vs {metric}, {model} {domain}: {e}"))
                }
            }
        }
        // Parameter matching per (model, domain): baselines against every GCA run.
        let mut groups: BTreeMap<(String, String), (Vec<ParamPoint>, Vec<ParamPoint>)> =
            BTreeMap::new();
        for i in 0..n {
            let (Some(p), Some(a)) = (params[i], acc[i]) else {
                continue;
            };
            let point = ParamPoint {
                run_id: run_id[i].clone(),
                params: p,
                accuracy: a,
            };
            let e = groups
                .entry((model[i].clone(), domain[i].clone()))
                .or_default();
            // GCA runs against plain baselines; AutoCDSR runs are neither.
            match (variant[i].as_str(), objective[i].as_str()) {
                ("baseline", o) if o == Objective::Rec.as_str() => e.0.push(point),
                ("baseline", _) => {}
                _ => e.1.push(point),
            }
        }
        let mut param_matches = Vec::new();
        for ((model, domain), (base, gca)) in groups {
            if gca.is_empty() {
                continue;
            }
            match param_match(&gca, &base, 0.95) {
                Ok(m) => param_matches.push((model, domain, m)),
                Err(e) => notes.push(format!("parameter match, {model} {domain}: {e}")),
            }
        }
        let setting_of: BTreeMap<&str, &str> = run_id
            .iter()
            .zip(&setting)
            .map(|(r, s)| (r.as_str(), s.as_str()))
            .collect();
        let mut param_summary = Vec::new();
        for (model, domain, ms) in &param_matches {
            let mut by_setting: BTreeMap<&str, Vec<&crate::analysis::param_match::ParamMatch>> =
                BTreeMap::new();
            for m in ms {
                let s = setting_of.get(m.gca.run_id.as_str()).copied().unwrap_or("");
                by_setting.entry(s).or_default().push(m);
            }
            for (setting, ms) in by_setting {
                let mut ratios: Vec<f64> = ms.iter().filter_map(|m| m.efficiency_ratio).collect();
                ratios.sort_by(f64::total_cmp);
                let median_ratio = (!ratios.is_empty()).then(|| {
                    let k = ratios.len();
                    if k % 2 == 1 {
                        ratios[k / 2]
                    } else {
                        (ratios[k / 2 - 1] + ratios[k / 2]) / 2.0
                    }
                });
                param_summary.push(ParamMatchSummary {
                    model: model.clone(),
                    domain: domain.clone(),
                    setting: setting.to_owned(),
                    n: ms.len(),
                    mean_gain: ms.iter().map(|m| m.accuracy_gain).sum::<f64>() / ms.len() as f64,
                    median_ratio,
                });
            }
        }
        Ok(StudyReport {
            metric: metric.to_owned(),
            variants,
            baseline_comparisons,
            intervention_effects,
            correlations,
            param_matches,
            param_summary,
            notes,
        })
    }
}

/// Each non-baseline setting against the plain baseline (`setting` = `baseline`) of the same
/// (model, d_model, domain): a paired t-test over seeds when both ran the same seeds (at least
/// two), else Welch's test. Pairs that cannot be tested go to `notes` with the reason.
fn baseline_comparisons(
    columns: &ComparisonColumns,
    notes: &mut Vec<String>,
) -> Vec<BaselineComparison> {
    use crate::analysis::stats::{mean, paired_t, welch_t};
    type Key = (String, Option<i64>, String);
    // (model, d_model, domain) -> setting -> seed -> metric (a repeated seed keeps its runs
    // apart under a unique negative key, which then fails the paired test's seed match).
    let mut cells: BTreeMap<Key, BTreeMap<&str, BTreeMap<i64, f64>>> = BTreeMap::new();
    for i in 0..columns.model.len() {
        let Some(a) = columns.acc[i] else {
            continue;
        };
        let runs = cells
            .entry((
                columns.model[i].clone(),
                columns.d_model[i],
                columns.domain[i].clone(),
            ))
            .or_default()
            .entry(columns.setting[i].as_str())
            .or_default();
        let key = match columns.seed[i] {
            Some(s) if !runs.contains_key(&s) => s,
            _ => -1 - runs.len() as i64,
        };
        runs.insert(key, a);
    }
    let mut out = Vec::new();
    for ((model, d_model, domain), settings) in cells {
        // Every setting against the baseline; an intervention `REF suffix` also against `REF`.
        let pairs = settings
            .keys()
            .filter(|s| **s != "baseline")
            .flat_map(|s| {
                let intervened = intervened_on(s, settings.keys().copied());
                std::iter::once((*s, "baseline")).chain(intervened.map(|(r, _)| (*s, r)))
            })
            .collect::<Vec<_>>();
        for (setting, reference) in pairs {
            let (Some(runs), Some(base)) = (settings.get(setting), settings.get(reference)) else {
                continue;
            };
            let paired =
                runs.len() >= 2 && runs.keys().eq(base.keys()) && runs.keys().all(|&s| s >= 0);
            let (a, b): (Vec<f64>, Vec<f64>) = (
                runs.values().copied().collect(),
                base.values().copied().collect(),
            );
            let test = if paired {
                paired_t(&a, &b)
            } else {
                welch_t(&a, &b)
            };
            match test {
                Ok(test) => out.push(BaselineComparison {
                    model: model.clone(),
                    setting: setting.to_owned(),
                    reference: reference.to_owned(),
                    d_model,
                    domain: domain.clone(),
                    n: a.len(),
                    n_baseline: b.len(),
                    mean: mean(&a),
                    baseline_mean: mean(&b),
                    paired,
                    test,
                    unconverged: None,
                }),
                Err(e) => notes.push(format!(
                    "{setting} against the {reference}, {model} d {} {domain}: {e}",
                    d_model.map_or("-".into(), |d| d.to_string())
                )),
            }
        }
    }
    out
}

/// A part of a [`StudyReport`]'s text: the full report ([`std::fmt::Display`]) is every
/// section in this order, a blank line between; [`StudyReport::section`] gives one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportSection {
    /// The metric per variant: mean ± sd over seeds, parameters, `a_cd`, time.
    Variants,
    /// Each setting against the baseline of the same width (and each intervention on X'
    /// against the GCA setting it changes): paired or Welch's t-test.
    AgainstBaseline,
    /// Each intervention on X' pooled over the GCA settings it changes: paired t-test and 95%
    /// interval of the difference (empty without interventions).
    InterventionEffects,
    /// |cos(X, X')| against the metric over the GCA runs: Pearson and Spearman.
    Correlations,
    /// The parameter-matched comparison per setting: mean accuracy gain over the nearest
    /// baseline in parameters and the median parameter-efficiency ratio.
    ParamMatching,
    /// The same per GCA run (`per run:`, one line each).
    ParamMatchesPerRun,
    /// Statistics that could not be computed, with the reason (empty when there are none).
    Notes,
}

impl ReportSection {
    pub const ALL: [ReportSection; 7] = [
        ReportSection::Variants,
        ReportSection::AgainstBaseline,
        ReportSection::InterventionEffects,
        ReportSection::Correlations,
        ReportSection::ParamMatching,
        ReportSection::ParamMatchesPerRun,
        ReportSection::Notes,
    ];
}

impl StudyReport {
    /// The text of one section of the report, as the full report prints it.
    pub fn section(&self, section: ReportSection) -> String {
        let mut text = String::new();
        self.write_section(&mut text, section)
            .expect("writing to a String cannot fail");
        text
    }

    fn write_section(&self, f: &mut String, section: ReportSection) -> std::fmt::Result {
        use std::fmt::Write;
        let m = &self.metric;
        // The convergence column, only for tables that record it.
        let recorded = self.variants.iter().any(|v| v.unconverged.is_some());
        let unconv = |u: Option<usize>| match (recorded, u) {
            (false, _) => String::new(),
            (true, Some(u)) => format!(" {u:>6}"),
            (true, None) => format!(" {:>6}", "-"),
        };
        let unconv_head = if recorded { " unconv" } else { "" };
        // The label column: 24 wide, wider for longer labels (settings with an intervention).
        let w = self
            .variants
            .iter()
            .map(|v| v.variant.chars().count())
            .chain(
                self.baseline_comparisons
                    .iter()
                    .map(|c| c.setting.chars().count()),
            )
            .fold(24, usize::max);
        match section {
            ReportSection::Variants => {
                writeln!(f, "{m} by variant (mean ± sd over seeds)")?;
                writeln!(
                    f,
                    "{:<13} {:<w$} {:>5} {:>6} {:>11} {:>3} {:>8} {:>8} {:>7} {:>8}{unconv_head}",
                    "model",
                    "variant",
                    "d",
                    "domain",
                    "params",
                    "n",
                    "mean",
                    "sd",
                    "a_cd",
                    "time_s"
                )?;
                for v in &self.variants {
                    writeln!(
                        f,
                        "{:<13} {:<w$} {:>5} {:>6} {:>11.0} {:>3} {:>8.4} {:>8} {:>7} {:>8}{}",
                        v.model,
                        v.variant,
                        v.d_model.map_or("-".into(), |d| d.to_string()),
                        v.domain,
                        v.params,
                        v.n,
                        v.mean,
                        v.sd.map_or("-".into(), |s| format!("{s:.4}")),
                        v.a_cd.map_or("-".into(), |a| format!("{a:.4}")),
                        v.wall_time_s.map_or("-".into(), |t| format!("{t:.0}")),
                        unconv(v.unconverged),
                    )?;
                }
            }
            ReportSection::AgainstBaseline => {
                writeln!(
                    f,
                    "{m} against the baseline of the same width (n: seeds paired by a paired t-test (p), or runs / baseline runs for Welch's test)"
                )?;
                writeln!(
                    f,
                    "{:<13} {:<w$} {:>5} {:>6} {:>5} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9}{unconv_head}",
                    "model", "setting", "d", "domain", "n", "mean", "baseline", "diff", "rel", "t", "p"
                )?;
                let row = |f: &mut String, c: &BaselineComparison| {
                    writeln!(
                        f,
                        "{:<13} {:<w$} {:>5} {:>6} {:>5} {:>8.4} {:>8.4} {:>+8.4} {:>+6.1}% {:>7.2} {:>9.2e}{}",
                        c.model,
                        c.setting,
                        c.d_model.map_or("-".into(), |d| d.to_string()),
                        c.domain,
                        if c.paired {
                            format!("{}p", c.n)
                        } else {
                            format!("{}/{}", c.n, c.n_baseline)
                        },
                        c.mean,
                        c.baseline_mean,
                        c.test.mean_difference,
                        100.0 * c.relative_gain(),
                        c.test.t,
                        c.test.p_value,
                        unconv(c.unconverged),
                    )
                };
                let (against_baseline, against_gca): (Vec<_>, Vec<_>) = self
                    .baseline_comparisons
                    .iter()
                    .partition(|c| c.reference == "baseline");
                for c in against_baseline {
                    row(f, c)?;
                }
                if !against_gca.is_empty() {
                    writeln!(
                        f,
                        "\n{m} of each intervention on X' against the GCA setting it changes (same columns; `baseline` = that setting)"
                    )?;
                    for c in against_gca {
                        row(f, c)?;
                    }
                }
                let capped = self
                    .baseline_comparisons
                    .iter()
                    .filter(|c| c.unconverged.is_some_and(|u| u > 0))
                    .count();
                if capped > 0 {
                    writeln!(
                        f,
                        "warning: {capped} of these comparisons include runs stopped at a cap while still improving (unconv > 0): they measure convergence speed as much as accuracy"
                    )?;
                }
            }
            ReportSection::InterventionEffects => {
                if self.intervention_effects.is_empty() {
                    return Ok(());
                }
                writeln!(
                    f,
                    "{m} of each intervention on X' pooled over the GCA settings it changes (n: pairs of runs with the same setting, seed and domain; A+B: per run, the mean of the domains)"
                )?;
                writeln!(
                    f,
                    "{:<13} {:<16} {:>5} {:>6} {:>4} {:>8} {:>20} {:>7} {:>9}  settings",
                    "model", "intervention", "d", "domain", "n", "diff", "95% CI", "t", "p"
                )?;
                for e in &self.intervention_effects {
                    writeln!(
                        f,
                        "{:<13} {:<16} {:>5} {:>6} {:>4} {:>+8.4} {:>20} {:>7.2} {:>9.2e}  {}",
                        e.model,
                        e.intervention,
                        e.d_model.map_or("-".into(), |d| d.to_string()),
                        e.domain,
                        e.n,
                        e.test.mean_difference,
                        format!("{:+.4} .. {:+.4}", e.ci95.low, e.ci95.high),
                        e.test.t,
                        e.test.p_value,
                        e.settings.join(", "),
                    )?;
                }
            }
            ReportSection::Correlations => {
                writeln!(f, "|cos(X, X')| against {m} over GCA runs")?;
                for c in &self.correlations {
                    writeln!(
                        f,
                        "{:<8} {}: Pearson r {:+.3} (95% CI {:+.3} .. {:+.3}, p {:.2e}), Spearman rho {:+.3} (p {:.2e}), n {}",
                        c.model, c.domain, c.pearson.r, c.pearson.ci95.low, c.pearson.ci95.high,
                        c.pearson.p_value, c.spearman.r, c.spearman.p_value, c.pearson.n
                    )?;
                }
            }
            ReportSection::ParamMatching => {
                writeln!(f, "parameter-matched comparison ({m}; ratio = baseline parameters needed / GCA parameters)")?;
                for p in &self.param_summary {
                    writeln!(
                        f,
                        "{:<8} {}: {:<24} n {:>2}  mean gain {:+.4}  median ratio {}",
                        p.model,
                        p.domain,
                        p.setting,
                        p.n,
                        p.mean_gain,
                        p.median_ratio.map_or("-".into(), |r| format!("{r:.2}"))
                    )?;
                }
            }
            ReportSection::ParamMatchesPerRun => {
                writeln!(f, "per run:")?;
                for (model, domain, ms) in &self.param_matches {
                    for p in ms {
                        writeln!(
                            f,
                            "{model:<8} {domain}: {} ({:.0} params) vs nearest baseline {} ({:.0}, mean of {} runs): gain {:+.4}, ratio {}",
                            p.gca.run_id,
                            p.gca.params,
                            p.nearest_baseline.run_id,
                            p.nearest_baseline.params,
                            p.nearest_baseline_runs,
                            p.accuracy_gain,
                            p.efficiency_ratio.map_or("-".into(), |r| format!("{r:.2}"))
                        )?;
                    }
                }
            }
            ReportSection::Notes => {
                for n in &self.notes {
                    writeln!(f, "note: {n}")?;
                }
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for StudyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for section in ReportSection::ALL {
            let text = self.section(section);
            if text.is_empty() {
                continue;
            }
            // The per-run matches and the notes follow the table before directly.
            let joined = matches!(
                section,
                ReportSection::ParamMatchesPerRun | ReportSection::Notes
            );
            if !first && !joined {
                writeln!(f)?;
            }
            first = false;
            f.write_str(&text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (model, setting, d_model, domain, seed, metric).
    type Row<'a> = (&'a str, &'a str, i64, &'a str, i64, f64);

    /// Owned columns for [`ComparisonColumns`] of [`Row`]s.
    struct Table(
        Vec<String>,
        Vec<String>,
        Vec<Option<i64>>,
        Vec<String>,
        Vec<Option<i64>>,
        Vec<Option<f64>>,
    );

    impl Table {
        fn of(rows: &[Row]) -> Table {
            let text = |f: fn(&Row) -> String| rows.iter().map(f).collect();
            Table(
                text(|r| r.0.to_owned()),
                text(|r| r.1.to_owned()),
                rows.iter().map(|r| Some(r.2)).collect(),
                text(|r| r.3.to_owned()),
                rows.iter().map(|r| Some(r.4)).collect(),
                rows.iter().map(|r| Some(r.5)).collect(),
            )
        }

        fn columns(&self) -> ComparisonColumns<'_> {
            ComparisonColumns {
                model: &self.0,
                setting: &self.1,
                d_model: &self.2,
                domain: &self.3,
                seed: &self.4,
                acc: &self.5,
            }
        }
    }

    /// The pairing rule: the same seeds on both sides give a paired test, other seeds Welch's
    /// test, a single baseline run a note, a setting of another width or model none (p-values from scipy's `ttest_rel` and
    /// `ttest_ind(equal_var=False)`).
    #[test]
    fn settings_are_paired_with_the_baseline_by_seed_or_else_compared_by_welch() {
        let rows: [(&str, &str, i64, i64, f64); 12] = [
            ("abxi", "baseline", 16, 1, 0.20),
            ("abxi", "baseline", 16, 2, 0.25),
            ("abxi", "baseline", 16, 3, 0.21),
            ("abxi", "+GCA_early", 16, 1, 0.30),
            ("abxi", "+GCA_early", 16, 2, 0.34),
            ("abxi", "+GCA_early", 16, 3, 0.31),
            ("abxi", "+GCA_stack", 16, 1, 0.30),
            ("abxi", "+GCA_stack", 16, 5, 0.34),
            ("abxi", "+GCA_stack", 32, 1, 0.40),
            ("abxi", "+GCA_stack", 32, 2, 0.41),
            ("abxi", "baseline", 32, 1, 0.39),
            ("sasrec", "+GCA_early", 16, 1, 0.5),
        ];
        let table = Table::of(&rows.map(|r| (r.0, r.1, r.2, "A", r.3, r.4)));
        let columns = table.columns();
        let mut notes = Vec::new();
        let c = baseline_comparisons(&columns, &mut notes);
        assert_eq!(c.len(), 2, "{c:?}");
        // One width-32 baseline run: too few for either test, said in a note.
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("+GCA_stack against the baseline, abxi d 32 A:"),
            "{notes:?}"
        );
        let early = &c[0];
        assert_eq!(
            (early.setting.as_str(), early.paired, early.n),
            ("+GCA_early", true, 3)
        );
        assert!((early.test.t - 29.0).abs() < 1e-9);
        assert!((early.test.p_value - 0.001_186_944_038_478_553).abs() < 1e-9);
        assert!((early.relative_gain() - (0.95 - 0.66) / 0.66).abs() < 1e-12);
        let stack = &c[1];
        assert_eq!(
            (stack.setting.as_str(), stack.paired),
            ("+GCA_stack", false)
        );
        assert_eq!((stack.n, stack.n_baseline), (2, 3));
        assert!((stack.test.t - 3.973_597_071_195_13).abs() < 1e-9);
        assert!((stack.test.p_value - 0.051_637_339_107_371_31).abs() < 1e-6);
    }

    /// An intervention is pooled over the GCA settings it changes, pairing runs by setting, seed
    /// and domain, and over the domains by each run's mean; a run without its partner is left
    /// out (values from scipy's `ttest_rel` on the same pairs).
    #[test]
    fn an_intervention_is_pooled_over_the_settings_it_changes() {
        let rows: [(&str, i64, &str, f64); 14] = [
            ("+GCA_early sigmoid LN", 1, "A", 0.30),
            ("+GCA_early sigmoid LN", 2, "A", 0.32),
            ("+GCA_early sigmoid LN", 1, "B", 0.20),
            ("+GCA_early sigmoid LN", 2, "B", 0.21),
            ("+GCA_early sigmoid LN orthogonal", 1, "A", 0.31),
            ("+GCA_early sigmoid LN orthogonal", 2, "A", 0.35),
            ("+GCA_early sigmoid LN orthogonal", 1, "B", 0.22),
            ("+GCA_early sigmoid LN orthogonal", 2, "B", 0.23),
            ("+GCA_stack sigmoid LN", 1, "A", 0.28),
            ("+GCA_stack sigmoid LN", 1, "B", 0.19),
            ("+GCA_stack sigmoid LN orthogonal", 1, "A", 0.30),
            ("+GCA_stack sigmoid LN orthogonal", 1, "B", 0.20),
            // No seed-3 run of the setting it changes: unpaired, left out.
            ("+GCA_stack sigmoid LN orthogonal", 3, "A", 0.90),
            ("baseline", 1, "A", 0.10),
        ];
        let table = Table::of(&rows.map(|r| ("abxi", r.0, 16, r.2, r.1, r.3)));
        let columns = table.columns();
        let mut notes = Vec::new();
        let e = intervention_effects(&columns, &mut notes);
        assert!(notes.is_empty(), "{notes:?}");
        let got: Vec<(&str, &str, usize)> = e
            .iter()
            .map(|e| (e.intervention.as_str(), e.domain.as_str(), e.n))
            .collect();
        assert_eq!(
            got,
            [
                ("orthogonal", "A", 3),
                ("orthogonal", "A+B", 3),
                ("orthogonal", "B", 3)
            ]
        );
        assert_eq!(
            e[0].settings,
            ["+GCA_early sigmoid LN", "+GCA_stack sigmoid LN"]
        );
        // A: differences 0.01, 0.03, 0.02 -> mean 0.02, sd 0.01, t = 0.02 / (0.01 / sqrt 3).
        assert!((e[0].test.mean_difference - 0.02).abs() < 1e-12);
        assert!((e[0].test.t - 2.0 * 3f64.sqrt()).abs() < 1e-9);
        assert!((e[0].test.p_value - 0.074_179_900_227_448_58).abs() < 1e-9);
        // t(0.975, 2) = 4.302652729749462
        let half = 4.302_652_729_749_462 * 0.01 / 3f64.sqrt();
        assert!((e[0].ci95.low - (0.02 - half)).abs() < 1e-9);
        // A+B: per run, the mean of the domains' differences: 0.015, 0.025, 0.015.
        assert!((e[1].test.mean_difference - (0.015 + 0.025 + 0.015) / 3.0).abs() < 1e-12);
    }

    /// An intervention on X' is compared with the baseline and, paired by seed, with the GCA
    /// setting it changes; a setting that merely starts with another's name (as `AutoCDSR fixed`
    /// starts with `AutoCDSR`) is not.
    #[test]
    fn an_intervention_is_also_compared_with_the_setting_it_changes() {
        let rows: [(&str, i64, f64); 9] = [
            ("baseline", 1, 0.20),
            ("baseline", 2, 0.22),
            ("baseline", 3, 0.21),
            ("+GCA_early sigmoid LN", 1, 0.24),
            ("+GCA_early sigmoid LN", 2, 0.25),
            ("+GCA_early sigmoid LN", 3, 0.27),
            ("+GCA_early sigmoid LN orthogonal", 1, 0.25),
            ("+GCA_early sigmoid LN orthogonal", 2, 0.27),
            ("+GCA_early sigmoid LNx", 3, 0.30),
        ];
        let table = Table::of(&rows.map(|r| ("abxi", r.0, 16, "A", r.1, r.2)));
        let columns = table.columns();
        let mut notes = Vec::new();
        let c = baseline_comparisons(&columns, &mut notes);
        let pairs: Vec<(&str, &str, bool)> = c
            .iter()
            .map(|c| (c.setting.as_str(), c.reference.as_str(), c.paired))
            .collect();
        assert_eq!(
            pairs,
            [
                ("+GCA_early sigmoid LN", "baseline", true),
                ("+GCA_early sigmoid LN orthogonal", "baseline", false),
                (
                    "+GCA_early sigmoid LN orthogonal",
                    "+GCA_early sigmoid LN",
                    false
                ),
            ],
            "{notes:?}"
        );
        // One run of the look-alike setting: too few for a test, said in a note.
        assert!(notes
            .iter()
            .any(|n| n.starts_with("+GCA_early sigmoid LNx against the baseline")));
        let vs_gca = &c[2];
        assert!((vs_gca.mean - 0.26).abs() < 1e-12);
        assert!((vs_gca.baseline_mean - (0.24 + 0.25 + 0.27) / 3.0).abs() < 1e-12);
    }
}
