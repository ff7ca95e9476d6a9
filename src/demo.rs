//! The README's main command, `cdsr-lab demo`, in two parts:
//!
//! 1. **The study from its committed runs.** It loads the compact runs of the GCA study
//!    (`results/study/runs`, [`crate::runs::compact`]), writes the study report and draws every
//!    figure of the paper from them (`figures/study/`), without training. The report says which
//!    GCA-against-baseline differences are significant over the committed seeds and which the
//!    study is too small to resolve.
//! 2. **A model that learns.** It trains the demo sweep (`sweeps/demo.toml`: ABXI at width 16
//!    without and with GCA_early, on the full food-kitchen data, validation early stopping with
//!    an epoch and a wall-time cap) with the sweep runner and tests each run's NDCG@10 against
//!    the random ranker's over its test cases, and the GCA run against the baseline case by case
//!    (one seed each: seed-to-seed differences are not covered, see [`DemoReport`]).
//!
//! Run again, it skips the finished runs and resumes an interrupted one. Next to the runs it
//! writes `study.csv` and `report.txt` (the report it prints).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::analysis::stats::{paired_t, TTest};
use crate::analysis::study::{study_frame, BaselineComparison, StudyReport};
use crate::data::Domain;
use crate::eval::{names, Metrics};
use crate::plot::{figures_of_study, FiguresReport};
use crate::runs::{load_runs, read_test_cases, write_atomic, write_csv, LoadOptions, LoadedRun};
use crate::sweep::engine::check_run_config;
use crate::sweep::local::{run_local, LocalOptions};
use crate::sweep::plan::SweepDir;
use crate::sweep::spec::SweepSpec;

/// Significance level of the demo's statements (two-sided, uncorrected).
pub const ALPHA: f64 = 0.05;

/// Where the demo reads and writes.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The committed runs of the study (compact or full); `None` skips part 1.
    pub study_runs: Option<PathBuf>,
    /// The sweep file to train.
    pub sweep: PathBuf,
    /// The sweep output folder (runs, status, logs).
    pub out: PathBuf,
    /// Where figures go: the study's into `FIGURES/study/`, the trained runs' into `FIGURES/`.
    pub figures: PathBuf,
    /// Runs at once.
    pub jobs: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            study_runs: Some(PathBuf::from("results/study/runs")),
            sweep: PathBuf::from("sweeps/demo.toml"),
            out: PathBuf::from("runs/demo"),
            figures: PathBuf::from("figures"),
            jobs: 2,
        }
    }
}

/// The study regenerated from its committed runs.
pub struct StudyPart {
    pub runs: usize,
    /// Runs that stopped at a cap while still improving.
    pub capped: usize,
    pub report: StudyReport,
    pub figures: FiguresReport,
}

impl StudyPart {
    /// Comparisons with the baseline significant at [`ALPHA`], and the others.
    pub fn split_by_significance(&self) -> (Vec<&BaselineComparison>, Vec<&BaselineComparison>) {
        self.report
            .baseline_comparisons
            .iter()
            .partition(|c| c.test.p_value < ALPHA)
    }
}

/// One trained run against the random ranker, per domain.
pub struct LearnedDomain {
    pub domain: Domain,
    pub cases: usize,
    /// NDCG@10 over the run's test cases (the run's reported NDCG@10).
    pub ndcg_10: f64,
    /// The random ranker's expected NDCG@10 with the run's number of negatives.
    pub random_ndcg_10: f64,
    /// One-sample t-test of the per-case NDCG@10 against `random_ndcg_10`.
    pub test: TTest,
}

/// One trained run of the demo sweep.
pub struct LearnedRun {
    pub run_id: String,
    pub setting: String,
    pub epochs_run: u32,
    pub best_epoch: Option<u32>,
    pub stop_reason: String,
    pub wall_time_s: Option<f64>,
    pub domains: Vec<LearnedDomain>,
}

/// Two trained runs compared on the same test cases (paired by case).
pub struct CaseComparison {
    pub setting: String,
    pub reference: String,
    /// Epochs each of the two runs trained (a time cap can stop them at different epochs).
    pub epochs: (u32, u32),
    pub domain: Domain,
    pub test: TTest,
}

/// The trained runs.
pub struct TrainingPart {
    pub trained_now: usize,
    pub already_complete: usize,
    /// The study report of the trained runs (also written to `OUT/report.txt`).
    pub report: StudyReport,
    pub runs: Vec<LearnedRun>,
    /// Each GCA run against the baseline, per domain, case by case.
    pub comparisons: Vec<CaseComparison>,
    pub figures: FiguresReport,
}

/// What the demo produced; its `Display` is the report the demo prints.
pub struct DemoReport {
    pub study: Option<StudyPart>,
    pub training: TrainingPart,
}

/// Regenerates the study from its committed runs and trains the demo sweep (see the module
/// doc). Writes `OUT/demo.txt` (the report it returns), and for the trained runs
/// `OUT/study.csv` and `OUT/report.txt` (their study table and report).
pub fn run_demo(opts: &DemoOptions) -> Result<DemoReport> {
    let study = match &opts.study_runs {
        Some(dir) => Some(study_part(dir, &opts.figures.join("study"))?),
        None => None,
    };
    let training = training_part(opts)?;
    let report = DemoReport { study, training };
    write_atomic(&opts.out.join("demo.txt"), report.to_string().as_bytes())?;
    Ok(report)
}

fn study_part(runs: &std::path::Path, figures: &std::path::Path) -> Result<StudyPart> {
    let set = load_runs(runs, LoadOptions::default())?;
    if set.is_empty() {
        bail!(
            "no complete run under {} ({} skipped)",
            runs.display(),
            set.report.skipped.len()
        );
    }
    let (study, tensor_report) = study_frame(&set)?;
    let report = StudyReport::of(&study, names::NDCG_10)?;
    let capped = set
        .runs
        .iter()
        .filter(|r| r.manifest.converged() == Some(false))
        .count();
    let figures = figures_of_study(&set, &study, tensor_report, figures)
        .with_context(|| format!("drawing figures into {}", figures.display()))?;
    Ok(StudyPart {
        runs: set.len(),
        capped,
        report,
        figures,
    })
}

fn training_part(opts: &DemoOptions) -> Result<TrainingPart> {
    let spec = SweepSpec::from_path(&opts.sweep)?;
    let plan = spec.resolve(check_run_config)?;
    let dir = SweepDir::new(&opts.out);
    eprintln!(
        "training {} runs of `{}` into {}",
        plan.runs.len(),
        plan.sweep,
        dir.root.display()
    );
    let local = run_local(&plan, &dir, &LocalOptions::new(opts.jobs)?)?;
    if !local.failed.is_empty() {
        let (id, why) = &local.failed[0];
        bail!(
            "{} demo runs failed; first: {id}: {why} (log: {})",
            local.failed.len(),
            dir.logs().join(format!("{id}.log")).display()
        );
    }
    let set = load_runs(&dir.runs(), LoadOptions::default())?;
    let (mut study, tensor_report) = study_frame(&set)?;
    let report = StudyReport::of(&study, names::NDCG_10)?;
    write_csv(&dir.root.join("study.csv"), &mut study)?;
    write_atomic(&dir.root.join("report.txt"), report.to_string().as_bytes())?;
    let labels = crate::analysis::study::RunLabels::of;
    let mut runs = Vec::new();
    let mut per_case: Vec<(String, u32, CaseNdcg)> = Vec::new();
    for run in &set.runs {
        let (learned, cases) = learned_run(run, labels(&run.manifest).setting)?;
        per_case.push((learned.setting.clone(), learned.epochs_run, cases));
        runs.push(learned);
    }
    let mut comparisons = Vec::new();
    if let Some((_, base_epochs, base)) = per_case.iter().find(|(s, ..)| s == "baseline") {
        for (setting, epochs, cases) in per_case.iter().filter(|(s, ..)| s != "baseline") {
            for ((domain, a), (_, b)) in cases.iter().zip(base) {
                comparisons.push(CaseComparison {
                    setting: setting.clone(),
                    reference: "baseline".into(),
                    epochs: (*epochs, *base_epochs),
                    domain: *domain,
                    test: paired_t(a, b)?,
                });
            }
        }
    }
    let figures = figures_of_study(&set, &study, tensor_report, &opts.figures)
        .with_context(|| format!("drawing figures into {}", opts.figures.display()))?;
    Ok(TrainingPart {
        trained_now: local.completed.len(),
        already_complete: local.skipped,
        report,
        runs,
        comparisons,
        figures,
    })
}

/// Per domain, a run's NDCG@10 of each test case, in case order.
type CaseNdcg = Vec<(Domain, Vec<f64>)>;

/// A run against the random ranker, and its per-case NDCG@10 per domain (in case order).
fn learned_run(run: &LoadedRun, setting: String) -> Result<(LearnedRun, CaseNdcg)> {
    let m = &run.manifest;
    let negatives = m
        .config
        .pointer("/train/eval_negatives")
        .and_then(|v| v.as_u64())
        .with_context(|| format!("{}: no train.eval_negatives in run.json", run.dir.display()))?
        as usize;
    let random = Metrics::random(negatives).ndcg_10;
    let cases = read_test_cases(&run.dir)?;
    let mut domains = Vec::new();
    let mut per_case = Vec::new();
    for domain in [Domain::A, Domain::B] {
        let ndcg: Vec<f64> = cases
            .cases
            .iter()
            .filter(|c| c.domain == domain)
            .map(|c| Metrics::of_rank(c.rank, negatives).ndcg_10)
            .collect();
        let test = paired_t(&ndcg, &vec![random; ndcg.len()])?;
        domains.push(LearnedDomain {
            domain,
            cases: ndcg.len(),
            ndcg_10: random + test.mean_difference,
            random_ndcg_10: random,
            test,
        });
        per_case.push((domain, ndcg));
    }
    Ok((
        LearnedRun {
            run_id: m.run_id.clone(),
            setting,
            epochs_run: m.epochs_run,
            best_epoch: m.best_epoch,
            stop_reason: m
                .stopped_by()
                .map_or_else(|| "-".to_owned(), |s| s.as_str().to_owned()),
            wall_time_s: m.wall_time_s,
            domains,
        },
        per_case,
    ))
}

impl std::fmt::Display for DemoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(s) = &self.study {
            write!(f, "{s}")?;
        }
        let t = &self.training;
        writeln!(
            f,
            "\n== 2. A model that learns ({} runs trained now, {} already complete) ==\n",
            t.trained_now, t.already_complete
        )?;
        writeln!(f, "{}", t.report)?;
        for r in &t.runs {
            writeln!(
                f,
                "{} ({}): {} epochs, best {}, stopped by {}, {:.0} s",
                r.setting,
                r.run_id,
                r.epochs_run,
                r.best_epoch.map_or_else(|| "-".into(), |e| e.to_string()),
                r.stop_reason,
                r.wall_time_s.unwrap_or(f64::NAN)
            )?;
            for d in &r.domains {
                let verdict = if d.test.p_value < ALPHA {
                    "significant"
                } else {
                    "not resolved"
                };
                writeln!(
                    f,
                    "  domain {}: NDCG@10 {:.4} against the random ranker's {:.4} ({:.1}x) over {} test cases, t {:.1}, p {:.1e}: {verdict}",
                    d.domain,
                    d.ndcg_10,
                    d.random_ndcg_10,
                    d.ndcg_10 / d.random_ndcg_10,
                    d.cases,
                    d.test.t,
                    d.test.p_value
                )?;
            }
        }
        for c in &t.comparisons {
            let verdict = if c.test.p_value >= ALPHA {
                "not resolved".to_owned()
            } else if c.epochs.0 != c.epochs.1 {
                format!(
                    "beyond test-case noise, but the runs trained {} and {} epochs: mostly the training budget",
                    c.epochs.0, c.epochs.1
                )
            } else {
                "beyond test-case noise, but with one seed each it may be seed-to-seed variation"
                    .to_owned()
            };
            writeln!(
                f,
                "{} against the {}, domain {}: {:+.4} NDCG@10 over the same test cases, p {:.3} (paired by case): {verdict}",
                c.setting, c.reference, c.domain, c.test.mean_difference, c.test.p_value,
            )?;
        }
        if !t.comparisons.is_empty() {
            writeln!(
                f,
                "One seed per setting: the demo cannot separate a GCA effect from seed-to-seed variation (part 1 shows the seed spread of the study)."
            )?;
        }
        Ok(())
    }
}

impl std::fmt::Display for StudyPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self;
        writeln!(
            f,
            "== 1. The GCA study from its committed runs ({} runs, {} stopped at a cap while still improving) ==\n",
            s.runs, s.capped
        )?;
        writeln!(f, "{}", s.report)?;
        let (significant, unresolved) = s.split_by_significance();
        writeln!(
            f,
            "Against the baseline of the same width: {} of {} differences are significant at p < {ALPHA} (uncorrected):",
            significant.len(),
            s.report.baseline_comparisons.len()
        )?;
        for c in &significant {
            writeln!(
                f,
                "  {} d {} {}: {:+.4} ({:+.1}%), p {:.3}, {} runs",
                c.setting,
                c.d_model.map_or_else(|| "-".into(), |d| d.to_string()),
                c.domain,
                c.test.mean_difference,
                100.0 * c.relative_gain(),
                c.test.p_value,
                c.n
            )?;
        }
        if let Some(largest) = unresolved
            .iter()
            .map(|c| c.test.mean_difference.abs())
            .max_by(f64::total_cmp)
        {
            let which = if significant.is_empty() {
                "all"
            } else {
                "the other"
            };
            writeln!(
                f,
                "  {which} {} (|difference| up to {largest:.4}) are within the seed spread: too few seeds to resolve them",
                unresolved.len()
            )?;
        }
        for c in &s.report.correlations {
            let verdict = if c.pearson.p_value < ALPHA {
                "significant"
            } else {
                "not resolved"
            };
            writeln!(
                f,
                "  |cos(X, X')| vs NDCG@10, {} {}: r {:+.3} (p {:.3}, n {}): {verdict}",
                c.model, c.domain, c.pearson.r, c.pearson.p_value, c.pearson.n
            )?;
        }
        if s.capped > 0 {
            writeln!(
                f,
                "  {} of these runs stopped at their epoch cap while still improving: the differences are between undertrained models",
                s.capped
            )?;
        }

        Ok(())
    }
}
