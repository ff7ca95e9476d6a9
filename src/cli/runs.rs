//! `cdsr-lab runs RUNS_DIR`: the results of a tree of runs as one table, each run labelled by
//! what tells it apart from the others.
use std::path::PathBuf;

use anyhow::Context;

use cdsr_lab::runs::{load_runs, write_csv, LoadOptions};

/// Arguments of `cdsr-lab runs`.
#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    /// Directory holding run directories (searched recursively).
    pub runs_dir: PathBuf,
    /// Test metrics to show, per domain (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "ndcg@10,hr@10")]
    pub metrics: Vec<String>,
    /// Add the full-ranking test metrics.
    #[arg(long)]
    pub full_ranking: bool,
    /// Also list runs still training (or failed), with the test metrics of their best epoch
    /// so far.
    #[arg(long)]
    pub include_incomplete: bool,
    /// One row per experiment instead of per run: runs that differ only in their seed are
    /// averaged, each metric with its sample standard deviation (`METRIC sd`).
    #[arg(long)]
    pub over_seeds: bool,
    /// Also write the table as CSV to this file.
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

pub fn run(args: RunsArgs) -> anyhow::Result<()> {
    let options = LoadOptions {
        include_incomplete: args.include_incomplete,
        ..LoadOptions::default()
    };
    let set = load_runs(&args.runs_dir, options)?;
    for (path, reason) in &set.report.skipped {
        eprintln!("skipped run {}: {reason}", path.display());
    }
    anyhow::ensure!(
        !set.is_empty(),
        "no {}run under {}",
        if args.include_incomplete {
            ""
        } else {
            "complete "
        },
        args.runs_dir.display()
    );
    let metrics: Vec<&str> = args.metrics.iter().map(String::as_str).collect();
    let table = if args.over_seeds {
        set.seed_means_frame(&metrics, args.full_ranking)
    } else {
        set.results_frame(&metrics, args.full_ranking)
    };
    let mut table = table.with_context(|| format!("runs under {}", args.runs_dir.display()))?;
    if let Some(path) = &args.csv {
        write_csv(path, &mut table)?;
    }
    println!("{} runs from {}", set.len(), args.runs_dir.display());
    print!("{}", cdsr_lab::runs::frames::text_table(&table, 4));
    Ok(())
}
