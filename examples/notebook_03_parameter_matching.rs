//! Generated from `notebooks/03-parameter-matching.ipynb` by `tests/notebooks.rs` (do not edit: edit the
//! notebook, then `CDSR_WRITE_NOTEBOOK_EXAMPLES=1 cargo test --test notebooks`).
//! Run: `cargo run --example notebook_03_parameter_matching`.
#![allow(unused_variables)]

#[rustfmt::skip]
fn main() -> anyhow::Result<()> {
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/notebooks"))?;

    use std::path::Path;
    use cdsr_lab::train::{train, RunConfig, TrainOptions};
    // The repository's 300-user slice of food-kitchen and the seconds-long smoke configuration.
    let mut cfg = RunConfig::from_file(Path::new("../configs/smoke.toml"))?;
    cfg.data.path = "../data/food-kitchen-mini".into();

    let mut jobs = Vec::new();
    for d in [16usize, 24, 32] {
        jobs.push((d, vec![]));
    }
    jobs.push((16, vec![0]));
    jobs.push((16, vec![0, 1]));
    for (d, positions) in jobs {
        for seed in [1u64, 2] {
            let mut c = cfg.clone();
            c.model.d_model = d;
            c.model.ffn_hidden = 2 * d;
            c.gca.positions = positions.clone();
            c.train.seed = seed;
            let dir = Path::new("../runs/notebooks/param-match").join(c.run_id());
            train(&c, &dir, TrainOptions { resume: true, ..Default::default() })?;
        }
    }

    use cdsr_lab::runs::{load_runs, LoadOptions};
    use cdsr_lab::analysis::study::{study_frame, StudyReport};
    let set = load_runs(Path::new("../runs/notebooks/param-match"), LoadOptions::default())?;
    let (study, _) = study_frame(&set)?;
    println!("{}", StudyReport::of(&study, "ndcg@10")?);

    let _shown = cdsr_lab::plot::ndcg_vs_params(&study)?;

    let _shown = cdsr_lab::plot::metrics_by_gca_positions(&study, &["ndcg@10", "hr@10"])?;

    let foreign = load_runs(Path::new("../tests/fixtures/foreign_runs/hydra"), LoadOptions::default())?;
    let (foreign_study, _) = study_frame(&foreign)?;
    println!("{}", StudyReport::of(&foreign_study, "ndcg@10")?);

    use cdsr_lab::plot::{parallel_coordinates_of_runs, ParallelLines};
    let _shown = parallel_coordinates_of_runs(&foreign, "test.A.ndcg@10", ParallelLines::PerSeedGroup)?.expect("the sweep varies gca");

    Ok(())
}
