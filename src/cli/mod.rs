//! The subcommands of `cdsr-lab`: each module holds one subcommand's arguments (clap) and a
//! handler that calls the library and prints.

pub mod analysis;
pub mod data;
pub mod demo;
pub mod plot;
pub mod runs;
pub mod sweep;
pub mod train;
