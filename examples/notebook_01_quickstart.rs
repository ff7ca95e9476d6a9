//! Generated from `notebooks/01-quickstart.ipynb` by `tests/notebooks.rs` (do not edit: edit the
//! notebook, then `CDSR_WRITE_NOTEBOOK_EXAMPLES=1 cargo test --test notebooks`).
//! Run: `cargo run --example notebook_01_quickstart`.
#![allow(unused_variables)]

#[rustfmt::skip]
fn main() -> anyhow::Result<()> {
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/notebooks"))?;

    use std::path::Path;
    use cdsr_lab::runs::{load_required_runs, LoadOptions};
    use cdsr_lab::analysis::study::{study_frame, ReportSection, StudyReport};
    // Every run directory under the folder, read in parallel. A missing or empty folder is an
    // error naming it (a checkout without the committed runs), never an empty table.
    let study_runs = load_required_runs(Path::new("../results/study/runs"), LoadOptions::default())?;
    print!("{} runs loaded, {}", study_runs.len(), study_runs.report);
    // One row per (run, domain): settings, parameters, test metrics, |cos(X, X')|.
    let (study, _) = study_frame(&study_runs)?;
    // NDCG@10 per setting, mean and sd over the 3 seeds.
    print!("{}", StudyReport::of(&study, "ndcg@10")?.section(ReportSection::Variants));

    let _shown = cdsr_lab::plot::metrics_by_gca_positions(&study, &["ndcg@10", "hr@10"])?;

    use cdsr_lab::data;
    let loaded = data::load(std::path::Path::new("../data/food-kitchen-mini"))?;
    println!("{}", data::DatasetStats::of(&loaded.dataset).render());

    use cdsr_lab::train::{train, RunConfig, TrainOptions};
    // The repository's 300-user slice of food-kitchen and the seconds-long smoke configuration.
    let mut cfg = RunConfig::from_file(Path::new("../configs/smoke.toml"))?;
    cfg.data.path = "../data/food-kitchen-mini".into();

    let summary = train(&cfg, &Path::new("../runs/notebooks/quickstart").join(cfg.run_id()),
                        TrainOptions { resume: true, ..Default::default() })?;
    println!("{summary}");

    use cdsr_lab::runs::load_runs;
    let set = load_runs(Path::new("../runs/notebooks/quickstart"), LoadOptions::default())?;
    let epochs = set.epochs_frame()?;
    println!("{epochs}");

    let results = set.results_frame(&["ndcg@10", "hr@10"], false)?;
    print!("{}", cdsr_lab::runs::frames::text_table(&results, 4));

    let _shown = cdsr_lab::plot::training_curves(&epochs, &["loss", "ndcg@10"])?;

    Ok(())
}
