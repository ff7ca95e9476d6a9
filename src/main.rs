//! The `cdsr-lab` command line: parses arguments and calls the library.
//! Each subcommand's argument struct and handler live in the library module that owns it.
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cdsr-lab",
    version,
    about = "Cross-domain sequential recommendation lab"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect datasets.
    #[command(subcommand)]
    Data(cdsr_lab::data::cli::DataCommand),
    /// Plan, run and follow sweeps of many runs (locally or on Slurm).
    #[command(subcommand)]
    Sweep(cdsr_lab::sweep::cli::SweepCommand),
    /// Train a model from a TOML run config.
    Train(cdsr_lab::train::cli::TrainArgs),
    /// The main demo: train a small real study on food-kitchen, analyse it, write the figures.
    Demo(cdsr_lab::demo::DemoArgs),
    /// The results of a tree of runs as one table, each run labelled by what sets it apart.
    Runs(cdsr_lab::runs::cli::RunsArgs),
    /// Regenerate every figure (PNG and SVG) from a tree of runs.
    Figures(cdsr_lab::plot::cli::FiguresArgs),
    /// AutoCDSR's diagnostic: per test case, single-domain vs cross-domain hits and a_cd.
    Diagnose(cdsr_lab::analysis::cli::DiagnoseArgs),
    /// The study report (means over seeds, tests, correlations, parameter matching) of a
    /// study table saved as CSV.
    Report(cdsr_lab::analysis::cli::ReportArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Data(cmd) => cdsr_lab::data::cli::run(cmd),
        Command::Sweep(cmd) => cdsr_lab::sweep::cli::run(cmd),
        Command::Train(args) => cdsr_lab::train::cli::run(args),
        Command::Demo(args) => cdsr_lab::demo::run(args),
        Command::Runs(args) => cdsr_lab::runs::cli::run(args),
        Command::Figures(args) => cdsr_lab::plot::cli::run(args),
        Command::Diagnose(args) => cdsr_lab::analysis::cli::run(args),
        Command::Report(args) => cdsr_lab::analysis::cli::report(args),
    }
}
