//! `cdsr-lab diagnose`: AutoCDSR's success/failure diagnostic of two trained runs;
//! `cdsr-lab report`: the study report of a study table saved as CSV.

use std::path::PathBuf;

use cdsr_lab::analysis::attention::{
    pair_warnings, share_by_cell, success_cells, write_success_cells,
};

/// Arguments of `cdsr-lab diagnose`.
#[derive(clap::Args, Debug)]
pub struct DiagnoseArgs {
    /// Run directory of the single-domain model (e.g. `model.kind = "sasrec-single"`).
    #[arg(long)]
    pub single: PathBuf,
    /// Run directory of the cross-domain (merged-sequence) model; its `samples.parquet` is
    /// written.
    #[arg(long)]
    pub cross: PathBuf,
    /// Print the cells only; write no `samples.parquet` (e.g. for a second cross-domain model
    /// whose samples should not enter the figure).
    #[arg(long)]
    pub print_only: bool,
}

/// Writes `CROSS/samples.parquet` and prints the mean `a_cd` per domain, layer and
/// success/failure cell with 95% intervals.
pub fn run(args: DiagnoseArgs) -> anyhow::Result<()> {
    for w in pair_warnings(&args.single, &args.cross) {
        eprintln!("warning: {w}");
    }
    let samples = if args.print_only {
        success_cells(&args.single, &args.cross)?
    } else {
        let s = write_success_cells(&args.single, &args.cross)?;
        println!(
            "wrote {} ({} rows)",
            args.cross.join(cdsr_lab::runs::SAMPLES_PARQUET).display(),
            s.height()
        );
        s
    };
    println!("{}", share_by_cell(&samples, &["domain", "layer"], 0.95)?);
    Ok(())
}

/// Arguments of `cdsr-lab report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// A study table as CSV (the demo's `study.csv`).
    pub study_csv: PathBuf,
    /// The accuracy metric the report compares.
    #[arg(long, default_value = cdsr_lab::eval::names::NDCG_10)]
    pub metric: String,
    /// Also write the report to this file (atomically).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also draw the metric by setting with 95% intervals (`metric_by_setting.png`/`.svg`)
    /// into this folder: the figure that needs only the table.
    #[arg(long)]
    pub figures: Option<PathBuf>,
}

/// Prints (and optionally writes) [`cdsr_lab::analysis::study::StudyReport`] of a saved study table, so
/// the committed `results/*/report.txt` are recomputed from their `study.csv`.
pub fn report(args: ReportArgs) -> anyhow::Result<()> {
    let study = cdsr_lab::analysis::study::read_study_csv(&args.study_csv)?;
    let report = cdsr_lab::analysis::study::StudyReport::of(&study, &args.metric)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.study_csv.display()))?;
    let text = report.to_string();
    if let Some(out) = &args.out {
        cdsr_lab::runs::write_atomic(out, text.as_bytes())?;
    }
    print!("{text}");
    if let Some(dir) = &args.figures {
        let [png, _] = cdsr_lab::plot::metric_by_setting(&study, &args.metric)?.save(dir)?;
        println!("wrote {} (and .svg)", png.display());
    }
    Ok(())
}
