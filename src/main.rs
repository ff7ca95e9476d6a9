//! The `cdsr-lab` command line: parses arguments and calls the library.
//! Each subcommand's argument struct and handler live in [`cli`], one module per library
//! module it calls; the library itself has no command line.
use clap::{Parser, Subcommand};

mod cli;

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
    Data(cli::data::DataCommand),
    /// Plan, run and follow sweeps of many runs (locally or on Slurm).
    #[command(subcommand)]
    Sweep(cli::sweep::SweepCommand),
    /// Train a model from a TOML run config.
    Train(cli::train::TrainArgs),
    /// Time training steps on the pinned batch (speed anchor, GPU smoke check).
    Step(cli::train::StepArgs),
    /// Time AutoCDSR's training step against the same model's without it, side by side.
    AutocdsrStep(cli::train::AutocdsrStepArgs),
    /// The main demo: train a small real study on food-kitchen, analyse it, write the figures.
    Demo(cli::demo::DemoArgs),
    /// The results of a tree of runs as one table, each run labelled by what sets it apart.
    Runs(cli::runs::RunsArgs),
    /// Regenerate every figure (PNG and SVG) from a tree of runs.
    Figures(cli::plot::FiguresArgs),
    /// AutoCDSR's diagnostic: per test case, single-domain vs cross-domain hits and a_cd.
    Diagnose(cli::analysis::DiagnoseArgs),
    /// The study report (means over seeds, tests, correlations, parameter matching) of study
    /// tables saved as CSV and folders of runs.
    Report(cli::analysis::ReportArgs),
    /// Per test case, |cos(X, X')| at the scored position against hit@10 and the reciprocal
    /// rank: correlations with bootstrap intervals and a logistic fit within runs, per group.
    Cases(cli::analysis::CasesArgs),
}

/// A failed command prints one message, the error and its causes (`error: A: B`), and exits
/// with status 1. Returning the error from `main` would print its Debug form, which carries a
/// stack backtrace whenever `RUST_BACKTRACE` is set: noise for a user's mistake.
fn main() -> std::process::ExitCode {
    // A reader that stops early (`cdsr-lab sweep plan FILE | head`) closes the pipe: end quietly
    // as other command-line tools do, instead of panicking on the failed write.
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Data(cmd) => cli::data::run(cmd),
        Command::Sweep(cmd) => cli::sweep::run(cmd),
        Command::Train(args) => cli::train::run(args),
        Command::Step(args) => cli::train::step(args),
        Command::AutocdsrStep(args) => cli::train::autocdsr_step(args),
        Command::Demo(args) => cli::demo::run(args),
        Command::Runs(args) => cli::runs::run(args),
        Command::Figures(args) => cli::plot::run(args),
        Command::Diagnose(args) => cli::analysis::run(args),
        Command::Report(args) => cli::analysis::report(args),
        Command::Cases(args) => cli::analysis::cases(args),
    }
}
