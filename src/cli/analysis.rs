//! `cdsr-lab diagnose`: AutoCDSR's success/failure diagnostic of two trained runs;
//! `cdsr-lab report`: the study report of study tables and run folders;
//! `cdsr-lab cases`: per test case, |cos(X, X')| against hit@10 and the reciprocal rank.

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
/// success/failure cell with 95% intervals (every row: the output is committed as is).
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
    let cells = share_by_cell(&samples, &["domain", "layer"], 0.95)?;
    print!("{}", cdsr_lab::runs::frames::text_table(&cells, 4));
    Ok(())
}

/// Arguments of `cdsr-lab report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Study tables as CSV (the demo's `study.csv`) or folders of runs (searched
    /// recursively), whose study table is built from the runs; several are stacked into one
    /// table, the first source of a run winning.
    #[arg(required = true)]
    pub study: Vec<PathBuf>,
    /// The accuracy metric the report compares.
    #[arg(long, default_value = cdsr_lab::eval::names::NDCG_10)]
    pub metric: String,
    /// Also write the report to this file (atomically).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the study table as CSV to this file (atomically): from a folder of runs,
    /// the table the report is recomputed from.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Also draw the metric by setting with 95% intervals (`metric_by_setting.png`/`.svg`)
    /// into this folder: the figure that needs only the table.
    #[arg(long)]
    pub figures: Option<PathBuf>,
}

/// Prints (and optionally writes) [`cdsr_lab::analysis::study::StudyReport`] of a saved study
/// table or of a folder of runs, so the committed `results/*/report.txt` are recomputed from
/// their `study.csv`.
pub fn report(args: ReportArgs) -> anyhow::Result<()> {
    use cdsr_lab::analysis::study::{read_study_csv, stack_study_tables, study_frame, StudyReport};
    let mut tables = Vec::new();
    for path in &args.study {
        let table = if path.is_dir() {
            let set = cdsr_lab::runs::load_runs(path, cdsr_lab::runs::LoadOptions::default())?;
            let (table, load_report) = study_frame(&set)?;
            set.report.eprint_skipped();
            load_report.eprint_skipped();
            table
        } else {
            read_study_csv(path)?
        };
        tables.push(table);
    }
    let sources = || {
        args.study
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut study =
        stack_study_tables(&tables).map_err(|e| anyhow::anyhow!("{}: {e}", sources()))?;
    let report =
        StudyReport::of(&study, &args.metric).map_err(|e| anyhow::anyhow!("{}: {e}", sources()))?;
    if let Some(csv) = &args.csv {
        cdsr_lab::runs::write_csv(csv, &mut study)?;
    }
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

/// Arguments of `cdsr-lab cases`.
#[derive(clap::Args, Debug)]
pub struct CasesArgs {
    /// Folder of runs (searched recursively); GCA runs with per-case |cos| in their
    /// `test_cases.parquet` contribute.
    pub runs: PathBuf,
    /// Columns to group the test cases by (comma-separated): `setting`, `d_model`, `seed`,
    /// `domain`, `position`, `run_id`.
    #[arg(long, value_delimiter = ',', default_value = "setting,domain")]
    pub by: Vec<String>,
    /// Bootstrap resamples of the test cases for the intervals.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the table as CSV to this file (atomically).
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

/// Prints [`cdsr_lab::analysis::cases::case_cos_by_group`] of a folder of runs: per group, the
/// point-biserial and rank correlations of each test case's |cos(X, X')| with its hit@10 and
/// reciprocal rank, with bootstrap intervals, and the logistic fit with one intercept per run.
pub fn cases(args: CasesArgs) -> anyhow::Result<()> {
    use cdsr_lab::analysis::cases::{case_cos_by_group, case_cos_frame, case_cos_text};
    let set = cdsr_lab::runs::load_runs(&args.runs, cdsr_lab::runs::LoadOptions::default())?;
    let (frame, report) = case_cos_frame(&set)?;
    set.report.eprint_skipped();
    report.eprint_skipped();
    if frame.height() == 0 {
        anyhow::bail!(
            "{}: no GCA run with per-case |cos| in its test_cases.parquet",
            args.runs.display()
        );
    }
    let by: Vec<&str> = args.by.iter().map(String::as_str).collect();
    let mut table = case_cos_by_group(&frame, &by, args.resamples, args.seed)?;
    if let Some(csv) = &args.csv {
        cdsr_lab::runs::write_csv(csv, &mut table)?;
    }
    print!("{}", case_cos_text(&table, &by)?);
    Ok(())
}
