//! Generated from `notebooks/03-parameter-matching.ipynb` by `tests/notebooks.rs` (do not edit: edit the
//! notebook, then `CDSR_WRITE_NOTEBOOK_EXAMPLES=1 cargo test --test notebooks`).
//! Run: `cargo run --example notebook_03_parameter_matching`.
#![allow(unused_variables)]

#[rustfmt::skip]
fn main() -> anyhow::Result<()> {
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/notebooks"))?;

    use std::path::Path;
    use cdsr_lab::runs::{load_required_runs, LoadOptions};
    use cdsr_lab::analysis::study::{study_frame, ReportSection, StudyReport};
    let runs = load_required_runs(Path::new("../results/study/runs"), LoadOptions::default())?;
    let (study, _) = study_frame(&runs)?;
    let report = StudyReport::of(&study, "ndcg@10")?;
    // Each GCA setting against the baseline of its width (paired by seed), then against the
    // baselines' log-linear fit of accuracy on parameters.
    print!("{}", report.section(ReportSection::AgainstBaseline));
    print!("\n{}", report.section(ReportSection::ParamMatching));

    let _shown = cdsr_lab::plot::ndcg_vs_params(&study)?;

    let foreign = load_required_runs(Path::new("../tests/fixtures/foreign_runs/hydra"), LoadOptions::default())?;
    let (foreign_study, _) = study_frame(&foreign)?;
    println!("{}", StudyReport::of(&foreign_study, "ndcg@10")?);

    use cdsr_lab::plot::{parallel_coordinates_of_runs, ParallelLines};
    let _shown = parallel_coordinates_of_runs(&foreign, "test.A.ndcg@10", ParallelLines::PerSeedGroup)?.expect("the sweep varies gca");

    Ok(())
}
