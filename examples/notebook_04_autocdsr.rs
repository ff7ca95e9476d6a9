//! Generated from `notebooks/04-autocdsr.ipynb` by `tests/notebooks.rs` (do not edit: edit the
//! notebook, then `CDSR_WRITE_NOTEBOOK_EXAMPLES=1 cargo test --test notebooks`).
//! Run: `cargo run --example notebook_04_autocdsr`.
#![allow(unused_variables)]

#[rustfmt::skip]
fn main() -> anyhow::Result<()> {
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/notebooks"))?;

    use std::path::Path;
    use cdsr_lab::runs::{load_required_runs, LoadOptions};
    use cdsr_lab::analysis::study::{read_study_csv, study_frame, ReportSection, StudyReport};
    // The committed runs, each trained to early stop: the study table has one row per (run, domain).
    let committed = load_required_runs(Path::new("../results/autocdsr/early-stop/runs"), LoadOptions::default())?;
    let (table, _) = study_frame(&committed)?;
    let report = StudyReport::of(&table, "ndcg@10")?;
    print!("{}", report.section(ReportSection::Variants));
    print!("\n{}", report.section(ReportSection::AgainstBaseline));

    // The same comparison after a 4-epoch cap (every run still improving): AutoCDSR's lead there
    // is faster convergence, which the converged table above does not keep.
    let capped = StudyReport::of(&read_study_csv(Path::new("../results/autocdsr/study.csv"))?, "ndcg@10")?;
    print!("{}", capped.section(ReportSection::AgainstBaseline));

    use cdsr_lab::analysis::attention::{load_samples, share_by_cell};
    use cdsr_lab::runs::frames::text_table;
    let (committed_samples, _) = load_samples(&committed)?;
    print!("{}", text_table(&share_by_cell(&committed_samples, &["domain", "layer"], 0.95)?, 4));

    let _shown = cdsr_lab::plot::attention_share(&committed_samples)?;

    use cdsr_lab::train::{train, RunConfig, TrainOptions};
    // The repository's 300-user slice of food-kitchen and the seconds-long smoke configuration.
    let mut cfg = RunConfig::from_file(Path::new("../configs/smoke.toml"))?;
    cfg.data.path = "../data/food-kitchen-mini".into();

    use cdsr_lab::model::ModelKind;
    use cdsr_lab::train::AutoCdsrConfig;
    cfg.model.kind = ModelKind::Sasrec;
    cfg.model.layers = 2;
    cfg.gca.positions.clear();
    cfg.optim.lr = 1e-2;
    cfg.optim.warmup_epochs = 0;
    cfg.train.epochs = 6;
    cfg.train.full_ranking = false;
    let runs = Path::new("../runs/notebooks/autocdsr");
    let mut dirs = Vec::new();
    for (name, kind, auto) in [
        ("single", ModelKind::SasrecSingle, None),
        ("sasrec", ModelKind::Sasrec, None),
        ("autocdsr", ModelKind::Sasrec, Some(AutoCdsrConfig::default())),
    ] {
        let mut c = cfg.clone();
        c.name = Some(name.into());
        c.model.kind = kind;
        c.autocdsr = auto;
        let dir = runs.join(c.run_id());
        train(&c, &dir, TrainOptions { resume: true, ..Default::default() })?;
        dirs.push(dir);
    }

    use cdsr_lab::runs::load_runs;
    let set = load_runs(runs, LoadOptions::default())?;
    let (study, _) = study_frame(&set)?;
    println!("{}", study.select(["run_id", "setting", "domain", "ndcg@10", "hr@10", "a_cd", "wall_time_s"])?);

    // a_cd of the merged stream at validation, epoch by epoch: AutoCDSR pushes it down.
    let epochs = set.epochs_frame()?;
    let _shown = cdsr_lab::plot::training_curves(&epochs, &["loss", "a_cd"])?;

    use cdsr_lab::analysis::attention::write_success_cells;
    // Single-domain model vs AutoCDSR, case by case: writes samples.parquet into the AutoCDSR run.
    let samples = write_success_cells(&dirs[0], &dirs[2])?;
    print!("{}", text_table(&share_by_cell(&samples, &["domain", "layer"], 0.95)?, 4));

    let _shown = cdsr_lab::plot::attention_share(&samples)?;

    Ok(())
}
