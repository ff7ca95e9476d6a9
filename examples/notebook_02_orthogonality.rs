//! Generated from `notebooks/02-orthogonality.ipynb` by `tests/notebooks.rs` (do not edit: edit the
//! notebook, then `CDSR_WRITE_NOTEBOOK_EXAMPLES=1 cargo test --test notebooks`).
//! Run: `cargo run --example notebook_02_orthogonality`.
#![allow(unused_variables)]

#[rustfmt::skip]
fn main() -> anyhow::Result<()> {
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/notebooks"))?;

    use std::path::Path;
    use cdsr_lab::train::{train, RunConfig, TrainOptions};
    // The repository's 300-user slice of food-kitchen and the seconds-long smoke configuration.
    let mut cfg = RunConfig::from_file(Path::new("../configs/smoke.toml"))?;
    cfg.data.path = "../data/food-kitchen-mini".into();

    use cdsr_lab::model::GateActivation;
    for (positions, gate) in [(vec![0], GateActivation::Sigmoid), (vec![1], GateActivation::Sigmoid),
                              (vec![0, 1], GateActivation::Sigmoid), (vec![0, 1], GateActivation::Tanh)] {
        for seed in [1u64, 2] {
            let mut c = cfg.clone();
            c.gca.positions = positions.clone();
            c.gca.gate = gate;
            c.train.seed = seed;
            let dir = Path::new("../runs/notebooks/orthogonality").join(c.run_id());
            train(&c, &dir, TrainOptions { resume: true, ..Default::default() })?;
        }
    }

    use cdsr_lab::runs::{load_runs, LoadOptions};
    use cdsr_lab::analysis::study::{study_frame, StudyReport};
    let set = load_runs(Path::new("../runs/notebooks/orthogonality"), LoadOptions::default())?;
    let (study, _) = study_frame(&set)?;
    println!("{}", study.select(["run_id", "variant", "domain", "ndcg@10", "cos_x_xprime", "cos_x_y"])?);
    println!("{}", StudyReport::of(&study, "ndcg@10")?);

    let (tensor_stats, _) = set.tensor_stats_frame()?;
    println!("{tensor_stats}");

    let _shown = cdsr_lab::plot::orthogonality_vs_ndcg(&study)?;

    let _shown = cdsr_lab::plot::cos_boxplots(&study)?;

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

    let set = load_runs(Path::new("../runs/notebooks/interventions"), LoadOptions::default())?;
    let (iv_study, _) = study_frame(&set)?;
    println!("{}", StudyReport::of(&iv_study, "ndcg@10")?);
    let _shown = cdsr_lab::plot::metric_by_setting(&iv_study, "ndcg@10")?;

    use cdsr_lab::analysis::cases::{case_cos_frame, case_cos_by_group};
    // Per test case: |cos(X, X')| at the scored position against hit@10 and the reciprocal rank
    // (point-biserial and Spearman with bootstrap intervals, logistic fit with one intercept per run).
    let (cases, _) = case_cos_frame(&set)?;
    println!("{}", case_cos_by_group(&cases, &["setting", "domain"], 1000, 1)?);
    let _shown = cdsr_lab::plot::case_cos_vs_hit(&cases)?;

    Ok(())
}
