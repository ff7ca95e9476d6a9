//! The figure functions, one file per figure, and the drawing helpers they share.
use plotters::coord::Shift;
use plotters::prelude::*;

use plotters::coord::types::RangedCoordf64;
use polars::prelude::DataFrame;

use super::frame::{bools, has};
use super::render::draw_err;
use super::{style, FrameError, PlotError};

mod attention;
mod curves;
mod interventions;
mod orthogonality;
mod parallel;
mod param_match;
mod positions;

pub use attention::{attention_share, SuccessCell};
pub use curves::training_curves;
pub use interventions::{case_cos_vs_hit, metric_by_setting};
pub use orthogonality::{cos_boxplots, orthogonality_vs_ndcg};
pub use parallel::{parallel_coordinates, ParallelLines};
pub use param_match::ndcg_vs_params;
pub use positions::metrics_by_gca_positions;

/// Splits `root` into a title strip and a `rows × cols` grid of panels (row-major).
pub(crate) fn panel_grid<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    figure: &str,
    title: &str,
    rows: usize,
    cols: usize,
) -> Result<Vec<DrawingArea<DB, Shift>>, PlotError> {
    let body = root
        .titled(title, style::title())
        .map_err(draw_err(figure))?;
    Ok(body.split_evenly((rows.max(1), cols.max(1))))
}

/// Draws one panel per area of a `rows × cols` [`panel_grid`] under `title` (row-major), with
/// `draw` for each panel.
pub(crate) fn draw_panel_grid<DB: DrawingBackend, P>(
    root: &DrawingArea<DB, Shift>,
    figure: &str,
    title: &str,
    (rows, cols): (usize, usize),
    panels: &[P],
    mut draw: impl FnMut(&DrawingArea<DB, Shift>, &P) -> Result<(), PlotError>,
) -> Result<(), PlotError> {
    let areas = panel_grid(root, figure, title, rows, cols)?;
    for (area, panel) in areas.iter().zip(panels) {
        draw(area, panel)?;
    }
    Ok(())
}

/// A categorical x axis: category `i` sits at `x = i`; [`category_label`] names integer ticks.
pub(crate) fn category_axis(n: usize) -> std::ops::Range<f64> {
    -0.5..(n.max(1) as f64 - 0.5)
}

/// The category label for tick `x` of a [`category_axis`].
pub(crate) fn category_label(names: &[String], x: f64) -> String {
    let i = x.round();
    if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
        names[i as usize].clone()
    } else {
        String::new()
    }
}

pub(crate) use crate::runs::frames::distinct;

/// Wraps a [`FrameError`] with the figure's name.
pub(crate) fn frame_err(figure: &'static str) -> impl Fn(FrameError) -> PlotError {
    move |source| PlotError::Frame { figure, source }
}

/// Draws the series legend of `chart` at `position` in the project's legend style.
pub(crate) fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    figure: &str,
) -> Result<(), PlotError> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(style::legend())
        .draw()
        .map_err(draw_err(figure))
}

/// A legend entry marker: a short line in `color`.
pub(crate) fn legend_line(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
}

/// A legend entry marker: a filled dot in `color`.
pub(crate) fn legend_dot(color: RGBColor) -> impl Fn((i32, i32)) -> Circle<(i32, i32), i32> {
    move |(x, y)| Circle::new((x + 10, y), 4, color.filled())
}

/// The legend entry of a run that stopped at a cap while still improving.
pub(crate) const CAPPED: &str = "stopped at a cap, still improving";

/// Per row of a frame with one row per run (or per run and domain): whether that run stopped at
/// a cap while still improving (`converged` false). All false without a `converged` column: a
/// run that does not record why it stopped is not marked.
pub(crate) fn capped_rows(df: &DataFrame) -> Result<Vec<bool>, FrameError> {
    if !has(df, "converged") {
        return Ok(vec![false; df.height()]);
    }
    Ok(bools(df, "converged")?
        .into_iter()
        .map(|c| c == Some(false))
        .collect())
}

/// Draws a hollow ring around each point of a run that stopped at a cap while still improving,
/// with the legend entry [`CAPPED`] when there is any (the caller draws the legend).
pub(crate) fn draw_capped_rings<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    points: &[(f64, f64)],
    figure: &str,
) -> Result<(), PlotError> {
    if points.is_empty() {
        return Ok(());
    }
    let c = style::capped();
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 6, c.stroke_width(2))))
        .map_err(draw_err(figure))?
        .label(CAPPED)
        .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.stroke_width(2)));
    Ok(())
}

/// A title suffix counting the runs that stopped at a cap while still improving (empty when
/// none), for figures that summarise runs rather than draw each one.
pub(crate) fn capped_note(capped: usize, runs: usize) -> String {
    if capped == 0 {
        String::new()
    } else {
        format!(" · {capped} of {runs} runs {CAPPED}")
    }
}

/// Runs that stopped at a cap while still improving, and all runs, in a frame with one or more
/// rows per run: counted by `run_id` when the frame has it, else by row.
pub(crate) fn capped_runs(df: &DataFrame) -> Result<(usize, usize), FrameError> {
    let capped = capped_rows(df)?;
    if !has(df, "run_id") {
        return Ok((capped.iter().filter(|&&c| c).count(), df.height()));
    }
    let ids = super::frame::labels(df, "run_id")?;
    let all = distinct(ids.iter().flatten().cloned());
    let capped_ids = distinct(
        ids.iter()
            .zip(&capped)
            .filter(|(_, &c)| c)
            .filter_map(|(id, _)| id.clone()),
    );
    Ok((capped_ids.len(), all.len()))
}
