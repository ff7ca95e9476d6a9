//! `cdsr-lab diagnose`: AutoCDSR's success/failure diagnostic of two trained runs.

use std::path::PathBuf;

use super::attention::{share_by_cell, success_cells, write_success_cells};

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
    let samples = if args.print_only {
        success_cells(&args.single, &args.cross)?
    } else {
        let s = write_success_cells(&args.single, &args.cross)?;
        println!(
            "wrote {} ({} rows)",
            args.cross.join(crate::runs::SAMPLES_PARQUET).display(),
            s.height()
        );
        s
    };
    println!("{}", share_by_cell(&samples, &["domain", "layer"], 0.95)?);
    Ok(())
}
