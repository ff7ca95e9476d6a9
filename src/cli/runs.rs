//! `cdsr-lab runs RUNS_DIR`: the results of a tree of runs as one table, each run labelled by
//! what tells it apart from the others; `cdsr-lab runs compact SRC DST`: compact copies of the
//! finished runs of a tree ([`cdsr_lab::runs::compact`]).
use std::path::PathBuf;

use anyhow::Context;

use cdsr_lab::runs::{load_runs, write_csv, LoadOptions};

/// Arguments of `cdsr-lab runs`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub command: Option<RunsCommand>,
    /// Directory holding run directories (searched recursively).
    #[arg(required = true)]
    pub runs_dir: Option<PathBuf>,
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

/// Subcommands of `cdsr-lab runs`.
#[derive(clap::Subcommand, Debug)]
pub enum RunsCommand {
    /// Copy the finished runs under SRC into DST/RUN_ID/ in compact form: per-row statistics
    /// of the captured tensors (capture_stats.parquet) in place of tensors.safetensors, no
    /// checkpoint. Runs already in DST are left as they are; unfinished runs are listed.
    Compact {
        /// Directory holding run directories (searched recursively).
        src: PathBuf,
        /// Directory to write the compact runs into.
        dst: PathBuf,
    },
}

pub fn run(args: RunsArgs) -> anyhow::Result<()> {
    if let Some(RunsCommand::Compact { src, dst }) = &args.command {
        let report = cdsr_lab::runs::compact_runs(src, dst)?;
        print!("{report}");
        return Ok(());
    }
    let runs_dir = args
        .runs_dir
        .expect("clap requires RUNS_DIR without a subcommand");
    let options = LoadOptions {
        include_incomplete: args.include_incomplete,
        ..LoadOptions::default()
    };
    let set = load_runs(&runs_dir, options)?;
    set.report.eprint_skipped();
    anyhow::ensure!(
        !set.is_empty(),
        "no {}run under {}",
        if args.include_incomplete {
            ""
        } else {
            "complete "
        },
        runs_dir.display()
    );
    let metrics: Vec<&str> = args.metrics.iter().map(String::as_str).collect();
    let table = if args.over_seeds {
        set.seed_means_frame(&metrics, args.full_ranking)
    } else {
        set.results_frame(&metrics, args.full_ranking)
    };
    let mut table = table.with_context(|| format!("runs under {}", runs_dir.display()))?;
    if let Some(path) = &args.csv {
        write_csv(path, &mut table)?;
    }
    println!("{} runs from {}", set.len(), runs_dir.display());
    print!("{}", cdsr_lab::runs::frames::text_table(&table, 4));
    Ok(())
}
