//! Figure 6: training curves — any metric of `metrics.jsonl` against epoch, per run, split and
//! domain.
use plotters::coord::Shift;
use plotters::prelude::*;
use polars::prelude::DataFrame;

use super::{distinct, draw_legend, frame_err, legend_line, panel_grid};
use crate::plot::frame::{f64s, has, labels};
use crate::plot::render::{draw_err, Figure, Plot};
use crate::plot::style::{self, color, padded, range};
use crate::plot::{FrameError, PlotError};

const NAME: &str = "training_curves";
/// Legends list at most this many series; the rest are drawn but not named.
const MAX_LEGEND: usize = 12;

/// Figure 6: one panel per metric in `metrics` (e.g. `["loss", "ndcg@10"]`), each a line per
/// (run, split, domain) that has values of it, against epoch.
///
/// Columns read (the run format's `metrics.jsonl`, several runs stacked): `epoch` (number),
/// `split`, optional `run_id` and `domain` (labels; a null domain is a whole-model row) and
/// each metric (numbers). Output name: `training_curves`.
pub fn training_curves(df: &DataFrame, metrics: &[&str]) -> Result<Plot, PlotError> {
    let err = frame_err(NAME);
    if metrics.is_empty() {
        return Err(err(FrameError::Empty("no metric requested".into())));
    }
    let n = df.height();
    let epochs = f64s(df, "epoch").map_err(&err)?;
    let splits = labels(df, "split").map_err(&err)?;
    let runs = if has(df, "run_id") {
        labels(df, "run_id").map_err(&err)?
    } else {
        vec![None; n]
    };
    let domains = if has(df, "domain") {
        labels(df, "domain").map_err(&err)?
    } else {
        vec![None; n]
    };
    let key = |i: usize| -> String {
        let mut parts: Vec<&str> = Vec::new();
        if let Some(r) = &runs[i] {
            parts.push(r);
        }
        parts.push(splits[i].as_deref().unwrap_or("?"));
        if let Some(d) = &domains[i] {
            parts.push(d);
        }
        parts.join(" · ")
    };

    let mut panels = Vec::new();
    for &metric in metrics {
        let values = f64s(df, metric).map_err(&err)?;
        let rows: Vec<usize> = (0..n)
            .filter(|&i| epochs[i].is_some() && values[i].is_some())
            .collect();
        let keys = distinct(rows.iter().map(|&i| key(i)));
        let lines: Vec<(String, Vec<(f64, f64)>)> = keys
            .into_iter()
            .map(|k| {
                let mut pts: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|&&i| key(i) == k)
                    .map(|&i| (epochs[i].unwrap_or(0.0), values[i].unwrap_or(0.0)))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                (k, pts)
            })
            .collect();
        if lines.is_empty() {
            return Err(err(FrameError::Empty(format!(
                "no row has both epoch and {metric}"
            ))));
        }
        panels.push((metric.to_string(), lines));
    }
    Plot::render(&CurvesFigure { panels })
}

/// A line's legend name and its (epoch, value) points.
type NamedLine = (String, Vec<(f64, f64)>);

struct CurvesFigure {
    /// Per metric: its name and one line per (run, split, domain).
    panels: Vec<(String, Vec<NamedLine>)>,
}

impl Figure for CurvesFigure {
    fn name(&self) -> &str {
        NAME
    }

    fn size(&self) -> (u32, u32) {
        let cols = self.panels.len().min(2) as u32;
        let rows = self.panels.len().div_ceil(2) as u32;
        (640 * cols, 440 * rows + 50)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let cols = self.panels.len().min(2);
        let areas = panel_grid(
            root,
            NAME,
            "Training curves",
            self.panels.len().div_ceil(2),
            cols,
        )?;
        for (area, (metric, lines)) in areas.iter().zip(&self.panels) {
            draw_panel(area, metric, lines)?;
        }
        Ok(())
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    metric: &str,
    lines: &[(String, Vec<(f64, f64)>)],
) -> Result<(), PlotError> {
    let pts = || lines.iter().flat_map(|(_, p)| p.iter());
    let (e0, e1) = range(pts().map(|p| p.0)).expect("lines are non-empty");
    let (v0, v1) = range(pts().map(|p| p.1)).expect("lines are non-empty");
    let (x0, x1) = if e0 == e1 {
        (e0 - 0.5, e1 + 0.5)
    } else {
        (e0, e1)
    };
    let (y0, y1) = padded(v0, v1, 0.08);
    let mut chart = ChartBuilder::on(area)
        .caption(metric, style::caption())
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(68)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err(NAME))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(metric)
        .x_labels(8)
        .y_labels(6)
        .axis_desc_style(style::axis_label())
        .label_style(style::tick_label())
        .draw()
        .map_err(draw_err(NAME))?;
    for (k, (name, p)) in lines.iter().enumerate() {
        let c = color(k);
        let series = chart
            .draw_series(LineSeries::new(p.iter().copied(), c.stroke_width(2)))
            .map_err(draw_err(NAME))?;
        if k < MAX_LEGEND {
            series.label(name.as_str()).legend(legend_line(c));
        }
        if p.len() == 1 {
            // A single epoch has no line to draw: show the point.
            chart
                .draw_series(p.iter().map(|&q| Circle::new(q, 4, c.filled())))
                .map_err(draw_err(NAME))?;
        }
    }
    if lines.len() > MAX_LEGEND {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(draw_err(NAME))?
            .label(format!("… {} more", lines.len() - MAX_LEGEND))
            .legend(|(x, y)| Circle::new((x, y), 0, WHITE));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight, NAME)?;
    Ok(())
}
