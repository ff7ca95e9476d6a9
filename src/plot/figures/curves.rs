//! Figure 6: training curves — any metric of `metrics.jsonl` against epoch, a panel per metric
//! and domain, a colour per run, a line style per split.
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use polars::prelude::DataFrame;

use super::{
    capped_rows, distinct, draw_capped_rings, draw_legend, draw_panel_grid, frame_err, legend_line,
};
use crate::plot::frame::{f64s, has, labels};
use crate::plot::render::{draw_err, Figure, Plot};
use crate::plot::style::{self, color, padded, range};
use crate::plot::{FrameError, PlotError};

const NAME: &str = "training_curves";
/// Legends list at most this many series; the rest are drawn but not named.
const MAX_LEGEND: usize = 12;
/// Panels per row.
const COLUMNS: usize = 3;
/// Splits in the order their line styles are given (solid, dashed, dotted); others follow.
const SPLIT_ORDER: [&str; 3] = ["train", "valid", "test"];

/// Figure 6: for each metric in `metrics` (e.g. `["loss", "ndcg@10"]`) a panel per domain that
/// has values of it (`ndcg@10 · A`, `ndcg@10 · B`; one panel for whole-model rows such as the
/// training loss), each holding a line per (run, split) against epoch. A run keeps its colour in
/// every panel; within a panel the first split is drawn solid, the second dashed, the third
/// dotted (train, valid, test in that order), so validation and the test evaluations made at
/// improving epochs read apart. The last point of a run that stopped at a cap while still
/// improving (`converged` false) gets a hollow ring, named in the legend.
///
/// Columns read (the run format's `metrics.jsonl`, several runs stacked, as
/// [`RunSet::epochs_frame`](crate::runs::RunSet::epochs_frame) gives them): `epoch` (number),
/// `split`, optional `label` (what tells the runs apart, e.g. `d_model 256, lr 0.0001`) or else
/// `run_id` to name runs, optional `domain` (a null domain is a whole-model row), optional
/// `converged` (boolean; [`crate::plot::figures_of_runs`] adds it from the runs) and each metric
/// (numbers). Output name: `training_curves`.
pub fn training_curves(df: &DataFrame, metrics: &[&str]) -> Result<Plot, PlotError> {
    let err = frame_err(NAME);
    if metrics.is_empty() {
        return Err(err(FrameError::Empty("no metric requested".into())));
    }
    let n = df.height();
    let epochs = f64s(df, "epoch").map_err(&err)?;
    let splits: Vec<String> = labels(df, "split")
        .map_err(&err)?
        .into_iter()
        .map(|s| s.unwrap_or_else(|| "?".into()))
        .collect();
    let runs = match ["label", "run_id"].into_iter().find(|c| has(df, c)) {
        Some(c) => labels(df, c).map_err(&err)?,
        None => vec![None; n],
    };
    let domains = if has(df, "domain") {
        labels(df, "domain").map_err(&err)?
    } else {
        vec![None; n]
    };
    let run_names = distinct(runs.iter().cloned());
    let capped = capped_rows(df).map_err(&err)?;

    let mut panels = Vec::new();
    for &metric in metrics {
        let values = f64s(df, metric).map_err(&err)?;
        let rows: Vec<usize> = (0..n)
            .filter(|&i| epochs[i].is_some() && values[i].is_some())
            .collect();
        if rows.is_empty() {
            return Err(err(FrameError::Empty(format!(
                "no row has both epoch and {metric}"
            ))));
        }
        for domain in distinct(rows.iter().map(|&i| domains[i].clone())) {
            let in_panel: Vec<usize> = rows
                .iter()
                .copied()
                .filter(|&i| domains[i] == domain)
                .collect();
            let mut panel_splits = distinct(in_panel.iter().map(|&i| &splits[i]));
            panel_splits.sort_by_key(|s| SPLIT_ORDER.iter().position(|o| o == s).unwrap_or(3));
            let keys = distinct(in_panel.iter().map(|&i| (&runs[i], &splits[i])));
            let lines = keys
                .into_iter()
                .map(|(run, split)| {
                    let mut points: Vec<(f64, f64)> = in_panel
                        .iter()
                        .filter(|&&i| runs[i] == *run && splits[i] == *split)
                        .map(|&i| (epochs[i].unwrap_or(0.0), values[i].unwrap_or(0.0)))
                        .collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let name = match run {
                        Some(r) => format!("{r} · {split}"),
                        None => split.clone(),
                    };
                    Line {
                        name,
                        capped: in_panel.iter().any(|&i| runs[i] == *run && capped[i]),
                        color: color(run_names.iter().position(|r| r == run).unwrap_or(0)),
                        dash: panel_splits.iter().position(|s| *s == split).unwrap_or(0),
                        points,
                    }
                })
                .collect();
            let title = match domain {
                Some(d) => format!("{metric} · {d}"),
                None => metric.to_owned(),
            };
            panels.push(Panel {
                title,
                metric: metric.to_owned(),
                lines,
            });
        }
    }
    Plot::render(&CurvesFigure { panels })
}

/// One series: legend name, colour (the run's), dash (0 solid, 1 dashed, 2+ dotted: the
/// split's place in its panel) and its (epoch, value) points.
struct Line {
    name: String,
    /// The run stopped at a cap while still improving: its last point gets a ring.
    capped: bool,
    color: RGBColor,
    dash: usize,
    points: Vec<(f64, f64)>,
}

struct Panel {
    title: String,
    metric: String,
    lines: Vec<Line>,
}

struct CurvesFigure {
    panels: Vec<Panel>,
}

impl Figure for CurvesFigure {
    fn name(&self) -> &str {
        NAME
    }

    fn size(&self) -> (u32, u32) {
        let cols = self.panels.len().min(COLUMNS) as u32;
        let rows = self.panels.len().div_ceil(COLUMNS) as u32;
        (640 * cols, 440 * rows + 50)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let cols = self.panels.len().min(COLUMNS);
        draw_panel_grid(
            root,
            NAME,
            "Training curves",
            (self.panels.len().div_ceil(COLUMNS), cols),
            &self.panels,
            draw_panel,
        )
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Result<(), PlotError> {
    let lines = &panel.lines;
    let pts = || lines.iter().flat_map(|l| l.points.iter());
    let (e0, e1) = range(pts().map(|p| p.0)).expect("lines are non-empty");
    let (v0, v1) = range(pts().map(|p| p.1)).expect("lines are non-empty");
    let (x0, x1) = if e0 == e1 {
        (e0 - 0.5, e1 + 0.5)
    } else {
        (e0, e1)
    };
    let (y0, y1) = padded(v0, v1, 0.08);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, style::caption())
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(68)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err(NAME))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(panel.metric.as_str())
        // Epochs are whole numbers: no more ticks than epochs, printed without decimals.
        .x_labels(((x1 - x0).round() as usize + 1).clamp(2, 8))
        .x_label_formatter(&|e| format!("{e:.0}"))
        .y_labels(6)
        .axis_desc_style(style::axis_label())
        .label_style(style::tick_label())
        .draw()
        .map_err(draw_err(NAME))?;
    for (k, line) in lines.iter().enumerate() {
        let c = line.color;
        let p = line.points.iter().copied();
        let stroke = c.stroke_width(2);
        // (dash length, gap) in pixels for the dashed and dotted styles.
        let dashes = match line.dash {
            0 => None,
            1 => Some((9, 5)),
            _ => Some((2, 4)),
        };
        let series = match dashes {
            None => chart.draw_series(LineSeries::new(p, stroke)),
            Some((on, off)) => chart.draw_series(DashedLineSeries::new(p, on, off, stroke)),
        }
        .map_err(draw_err(NAME))?;
        if k < MAX_LEGEND {
            let series = series.label(line.name.as_str());
            match dashes {
                None => {
                    series.legend(legend_line(c));
                }
                Some((on, off)) => {
                    series.legend(move |(x, y)| {
                        DashedPathElement::new(vec![(x, y), (x + 20, y)], on, off, stroke)
                    });
                }
            }
        }
        if line.points.len() == 1 {
            // A single epoch has no line to draw: show the point.
            chart
                .draw_series(line.points.iter().map(|&q| Circle::new(q, 4, c.filled())))
                .map_err(draw_err(NAME))?;
        }
    }
    let ends: Vec<(f64, f64)> = lines
        .iter()
        .filter(|l| l.capped)
        .filter_map(|l| l.points.last().copied())
        .collect();
    draw_capped_rings(&mut chart, &ends, NAME)?;
    if lines.len() > MAX_LEGEND {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(draw_err(NAME))?
            .label(format!("… {} more", lines.len() - MAX_LEGEND))
            .legend(|(x, y)| Circle::new((x, y), 0, WHITE));
    }
    draw_legend(&mut chart, legend_corner(lines, (y0, y1)), NAME)?;
    Ok(())
}

/// The right-hand corner the lines end farther from: a loss falls towards the lower right, a
/// ranking metric rises towards the upper right, and the legend should cover neither.
fn legend_corner(lines: &[Line], (y0, y1): (f64, f64)) -> SeriesLabelPosition {
    let ends: Vec<f64> = lines
        .iter()
        .filter_map(|l| l.points.last())
        .map(|p| p.1)
        .collect();
    let mean_end = ends.iter().sum::<f64>() / ends.len().max(1) as f64;
    if mean_end > (y0 + y1) / 2.0 {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    }
}
