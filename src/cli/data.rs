//! `cdsr-lab data ...` subcommands.
use clap::Subcommand;

use cdsr_lab::data::source;
use cdsr_lab::data::stats::DatasetStats;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Print users, items and interactions per domain and the length distribution.
    Stats {
        /// Dataset directory (ABXI files, KuaiRand TFRecords) or interactions table.
        path: std::path::PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Stats { path, json } => {
            let loaded = source::load(&path)?;
            let stats = DatasetStats::of(&loaded.dataset);
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("format        {}\n{}", loaded.format, stats.render());
            }
            Ok(())
        }
    }
}
