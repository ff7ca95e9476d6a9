//! Generated from `notebooks/02-orthogonality.ipynb` by `tests/notebooks.rs` (do not edit: edit the
//! notebook, then `CDSR_WRITE_NOTEBOOK_EXAMPLES=1 cargo test --test notebooks`).
//! Run: `cargo run --example notebook_02_orthogonality`.
#![allow(unused_variables)]

#[rustfmt::skip]
fn main() -> anyhow::Result<()> {
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/notebooks"))?;

    use std::path::Path;
    use cdsr_lab::runs::{load_required_runs, LoadOptions};
    use cdsr_lab::analysis::study::{study_frame, ReportSection, StudyReport};
    let runs = load_required_runs(Path::new("../results/study/runs"), LoadOptions::default())?;
    // One row per (run, domain): settings, metrics, mean |cos(X, X')| and |cos(X, Y)|.
    let (study, _) = study_frame(&runs)?;
    let report = StudyReport::of(&study, "ndcg@10")?;
    print!("{}", report.section(ReportSection::Correlations));
    print!("{}", report.section(ReportSection::Notes));

    let _shown = cdsr_lab::plot::orthogonality_vs_ndcg(&study)?;

    let _shown = cdsr_lab::plot::cos_boxplots(&study)?;

    let (tensor_stats, _) = runs.tensor_stats_frame()?;
    println!("{}", tensor_stats.head(Some(6)));

    let torch_run = load_required_runs(Path::new("../tests/fixtures/foreign_run"), LoadOptions::default())?;
    let (torch_stats, _) = torch_run.tensor_stats_frame()?;
    println!("{torch_stats}");

    let committed = load_required_runs(Path::new("../results/orthogonality/runs"), LoadOptions::default())?;
    let (interventions_study, _) = study_frame(&committed)?;
    let committed_report = StudyReport::of(&interventions_study, "ndcg@10")?;
    // Pooled over GCA_early and GCA_stack, then per setting.
    print!("{}", committed_report.section(ReportSection::InterventionEffects));
    print!("\n{}", committed_report.section(ReportSection::AgainstBaseline));
    let _shown = cdsr_lab::plot::metric_by_setting(&interventions_study, "ndcg@10")?;

    use cdsr_lab::analysis::cases::{case_cos_frame, case_cos_by_group};
    let (committed_cases, _) = case_cos_frame(&committed)?;
    println!("{}", case_cos_by_group(&committed_cases, &["setting", "domain"], 1000, 1)?);
    let _shown = cdsr_lab::plot::case_cos_vs_hit(&committed_cases)?;

    use cdsr_lab::train::{train, RunConfig, TrainOptions};
    // The repository's 300-user slice of food-kitchen and the seconds-long smoke configuration.
    let mut cfg = RunConfig::from_file(Path::new("../configs/smoke.toml"))?;
    cfg.data.path = "../data/food-kitchen-mini".into();

    use cdsr_lab::model::Projection;
    // GCA_early, 2 seeds: X' as is, projected, and penalised at both signs.
    let mut interventions = cfg.clone();
    interventions.gca.positions = vec![0];
    for seed in [1u64, 2] {
        for (project, penalty) in [(Projection::None, 0.0), (Projection::Orthogonal, 0.0),
                                   (Projection::Parallel, 0.0), (Projection::None, 1.0), (Projection::None, -1.0)] {
            let mut c = interventions.clone();
            c.gca.project = project;
            c.gca.cos_penalty = penalty;
            c.train.seed = seed;
            let dir = Path::new("../runs/notebooks/interventions").join(c.run_id());
            train(&c, &dir, TrainOptions { resume: true, ..Default::default() })?;
        }
    }

    use cdsr_lab::runs::load_runs;
    let set = load_runs(Path::new("../runs/notebooks/interventions"), LoadOptions::default())?;
    let (iv_study, _) = study_frame(&set)?;
    println!("{}", StudyReport::of(&iv_study, "ndcg@10")?);
    let _shown = cdsr_lab::plot::metric_by_setting(&iv_study, "ndcg@10")?;

    // Per test case: |cos(X, X')| at the scored position against hit@10 and the reciprocal rank
    // (point-biserial and Spearman with bootstrap intervals, logistic fit with one intercept per run).
    let (cases, _) = case_cos_frame(&set)?;
    println!("{}", case_cos_by_group(&cases, &["setting", "domain"], 1000, 1)?);
    let _shown = cdsr_lab::plot::case_cos_vs_hit(&cases)?;

    Ok(())
}
