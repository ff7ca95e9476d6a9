//! `cdsr-lab data ...` subcommands.
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Print users, items and interactions per domain and the length distribution.
    Stats {
        /// Dataset directory (ABXI files, KuaiRand TFRecords) or interactions table.
        path: std::path::PathBuf,
    },
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Stats { path } => {
            anyhow::bail!("data stats {}: not implemented yet", path.display())
        }
    }
}
