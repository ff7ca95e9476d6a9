//! `cdsr-lab figures RUNS_DIR --out DIR`: regenerate every figure from a tree of runs.
use std::path::PathBuf;

use cdsr_lab::runs::LoadOptions;

/// Arguments of `cdsr-lab figures`.
#[derive(clap::Args, Debug)]
pub struct FiguresArgs {
    /// Directory holding run directories (searched recursively).
    pub runs_dir: PathBuf,
    /// Where the PNG and SVG files go.
    #[arg(long, default_value = "figures")]
    pub out: PathBuf,
    /// Also draw the curves of runs still training (or failed), up to their last epoch.
    #[arg(long)]
    pub include_incomplete: bool,
}

pub fn run(args: FiguresArgs) -> anyhow::Result<()> {
    let options = LoadOptions {
        include_incomplete: args.include_incomplete,
        ..LoadOptions::default()
    };
    let report = cdsr_lab::plot::figures_from_runs(&args.runs_dir, &args.out, options)?;
    println!("{} runs from {}", report.runs, args.runs_dir.display());
    report.print();
    Ok(())
}
