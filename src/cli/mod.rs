//! The subcommands of `cdsr-lab`: each module holds one subcommand's arguments (clap) and a
//! handler that calls the library and prints.

pub mod analysis;
pub mod data;
pub mod demo;
pub mod plot;
pub mod runs;
pub mod sweep;
pub mod train;

/// Says on stderr which runs a load left out and why (each report in turn).
pub fn print_skipped<'a>(reports: impl IntoIterator<Item = &'a cdsr_lab::runs::LoadReport>) {
    for report in reports {
        for (dir, why) in &report.skipped {
            eprintln!("skipped run {}: {why}", dir.display());
        }
    }
}
