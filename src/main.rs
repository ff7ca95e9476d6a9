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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Data(cmd) => cdsr_lab::data::cli::run(cmd),
    }
}
