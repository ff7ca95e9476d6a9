//! The paper's figures, drawn with plotters from the DataFrames of [`crate::runs`] and
//! [`crate::analysis`], as PNG and SVG.
//!
//! Owns: the figure functions (one per figure, each taking DataFrames and returning a
//! [`Plot`]), the embedded font, the rendering of one drawing into both formats, and the
//! `cdsr-lab figures` command ([`cli`]).
//!
//! A [`Plot`] holds the figure rendered in memory as SVG text and as an RGB bitmap;
//! [`Plot::save`] writes `NAME.png` and `NAME.svg` (each through a temporary name and a
//! rename). In an evcxr notebook a [`Plot`] that ends a cell displays itself inline as SVG.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary (`assets/fonts/`, Bitstream Vera
//! licence), so figures render identically with no system font installed.
//!
//! Statistics printed on figures (Pearson r, p-values, fitted lines, means and spreads) come
//! from [`crate::analysis::describe`]; this module only draws.
//!
//! ```
//! use cdsr_lab::plot;
//! // Two epochs of one run's training loss, drawn as a training-curve figure.
//! let df = polars::df!(
//!     "run_id" => ["r1", "r1"], "epoch" => [1i64, 2], "split" => ["train", "train"],
//!     "domain" => [None::<&str>, None], "loss" => [2.0, 1.5],
//! ).unwrap();
//! let fig = plot::training_curves(&df, &["loss"]).unwrap();
//! assert!(fig.svg().contains("epoch"));
//! ```

mod all;
mod figures;
mod frame;
mod render;
mod style;

pub use all::{
    figures_from_runs, figures_of_runs, figures_of_study, parallel_coordinates_of_runs,
    FigureOutcome, FiguresReport, PARALLEL_METRIC,
};
pub use figures::*;
pub use frame::FrameError;
pub use render::{register_font, Figure, Plot};

/// Everything that can go wrong while making a figure.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// An input DataFrame lacks a column, has it with the wrong type, or has no usable rows.
    #[error("figure `{figure}`: {source}")]
    Frame {
        figure: &'static str,
        #[source]
        source: FrameError,
    },
    /// A statistic shown on the figure could not be computed.
    #[error("figure `{figure}`: {message}")]
    Stats {
        figure: &'static str,
        message: String,
    },
    /// plotters failed while drawing.
    #[error("figure `{figure}`: drawing failed: {message}")]
    Draw { figure: String, message: String },
    /// Creating the output folder failed.
    #[error("writing {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing an output file failed (the error names the file).
    #[error("writing {0}")]
    Write(#[from] crate::runs::RunError),
}
