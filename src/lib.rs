//! cdsr-lab: train, record and analyse cross-domain sequential recommendation models.
//!
//! The modules follow the life of a study:
//! - [`data`]: load real interaction data (ABXI files, KuaiRand TFRecords, generic tables)
//!   into one [`data::Dataset`], split it leave-one-out and lay it out for training and evaluation.
//! - [`eval`]: the ranking protocol (sampled negatives and full ranking) and its metrics.
//! - [`model`]: ABXI- and SASRec-style encoders, gated cross-attention (GCA), AutoCDSR parts.
//! - [`train`]: the training loop, schedules, checkpoints and resume.
//! - [`runs`]: the on-disk run format (writer and reader) and run logs as polars DataFrames.
//! - [`analysis`]: orthogonality, correlation statistics, parameter matching, attention shares.
//! - [`plot`]: the paper's figures with plotters, as PNG and SVG.
//! - [`sweep`]: studies as sweeps of many runs, run locally in parallel or as a Slurm job array,
//!   resumable after any interruption.
//! - [`demo`]: the README's main command, a small real study end to end (train, analyse, draw).
//!
//! The command line `cdsr-lab` is a separate binary (`src/main.rs`, `src/cli/`) that only calls
//! these modules; the library has none, and `default-features = false` (the `cli` feature off)
//! leaves out its argument parser.

pub mod analysis;
pub mod data;
pub mod demo;
pub mod eval;
pub mod model;
pub mod plot;
pub mod runs;
pub mod sweep;
pub mod train;

/// The polars version the frames are built with, for notebooks and downstream crates.
pub use polars;

// What most programs start from: a dataset, a run config to train, a tree of runs to analyse
// and the study table and report made from it.
pub use analysis::study::{study_frame, StudyReport};
pub use data::{Dataset, Domain};
pub use runs::{load_runs, LoadOptions, RunSet};
pub use train::{RunConfig, RunSummary, TrainOptions};
