//! Parallel coordinates: parameters against a metric, one line per run or per group of runs
//! that differ only in their seed.
use plotters::coord::Shift;
use plotters::prelude::*;
use polars::prelude::DataFrame;

use super::{capped_note, capped_runs, distinct, frame_err};
use crate::analysis::describe;
use crate::plot::frame::{f64s, labels};
use crate::plot::render::{draw_err, Figure, Plot};
use crate::plot::style::{self, range};
use crate::plot::{FrameError, PlotError};

const NAME: &str = "parallel_coordinates";

/// What one line of [`parallel_coordinates`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParallelLines {
    /// One line per row (run).
    PerRun,
    /// One line per set of rows with equal values on every parameter axis (runs that differ
    /// only in what is not drawn, such as the seed), at the mean of their metric values.
    PerSeedGroup,
}

/// One vertical axis: numbers (ticks at the ends) or categories (a tick per value).
enum Axis {
    Numeric { name: String, lo: f64, hi: f64 },
    Categorical { name: String, values: Vec<String> },
}

impl Axis {
    fn name(&self) -> &str {
        match self {
            Axis::Numeric { name, .. } | Axis::Categorical { name, .. } => name,
        }
    }

    /// Height in [0, 1] of a value of this axis (its label for a categorical one).
    fn height(&self, value: &AxisValue) -> f64 {
        match (self, value) {
            (Axis::Numeric { lo, hi, .. }, AxisValue::Number(v)) if hi > lo => (v - lo) / (hi - lo),
            (Axis::Categorical { values, .. }, AxisValue::Label(l)) if values.len() > 1 => {
                values.iter().position(|x| x == l).unwrap_or(0) as f64 / (values.len() - 1) as f64
            }
            _ => 0.5,
        }
    }

    /// (height, text) of the axis ticks; long category names are cut to fit between axes.
    fn ticks(&self) -> Vec<(f64, String)> {
        match self {
            Axis::Numeric { lo, hi, .. } if hi > lo => {
                vec![(0.0, short(*lo)), (1.0, short(*hi))]
            }
            Axis::Numeric { lo, .. } => vec![(0.5, short(*lo))],
            Axis::Categorical { values, .. } => values
                .iter()
                .map(|v| (self.height(&AxisValue::Label(v.clone())), cut(v)))
                .collect(),
        }
    }
}

#[derive(Clone, PartialEq)]
enum AxisValue {
    Number(f64),
    Label(String),
}

/// Longest tick text, in characters.
const MAX_TICK_CHARS: usize = 18;

/// `text` cut to [`MAX_TICK_CHARS`], with `…` where it was cut.
fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_TICK_CHARS {
        return text.to_owned();
    }
    let head: String = text.chars().take(MAX_TICK_CHARS - 1).collect();
    format!("{head}…")
}

/// A number in at most 4 significant digits.
fn short(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Parallel coordinates of `params` against `metric`: one vertical axis per parameter column
/// and a last one for the metric, each run (or seed group, see [`ParallelLines`]) a line
/// across them, coloured from blue (lowest metric) to red (highest). A numeric column without
/// nulls is a numeric axis scaled from its minimum to its maximum; any other column
/// (text, lists, booleans, a key some runs lack) is an axis of its values in sorted order,
/// `none` for a missing one.
///
/// Columns read: each of `params` (any type) and `metric` (numbers; rows without it are left
/// out), and `converged` (boolean) when present: the title counts the runs that stopped at a
/// cap while still improving. [`RunSet::runs_frame`](crate::runs::RunSet::runs_frame) gives
/// them as `config.KEY`, `test.D.METRIC` and `converged`. Output name: `parallel_coordinates`.
pub fn parallel_coordinates(
    df: &DataFrame,
    params: &[&str],
    metric: &str,
    lines: ParallelLines,
) -> Result<Plot, PlotError> {
    let err = frame_err(NAME);
    if params.is_empty() {
        return Err(err(FrameError::Empty("no parameter column given".into())));
    }
    let y = f64s(df, metric).map_err(&err)?;
    let rows: Vec<usize> = (0..df.height()).filter(|&i| y[i].is_some()).collect();
    if rows.is_empty() {
        return Err(err(FrameError::Empty(format!("no row has `{metric}`"))));
    }
    let mut axes = Vec::new();
    let mut columns: Vec<Vec<AxisValue>> = Vec::new();
    for &p in params {
        let numeric = f64s(df, p)
            .ok()
            .filter(|v| rows.iter().all(|&i| v[i].is_some()));
        match numeric {
            Some(v) => {
                let vals: Vec<f64> = rows.iter().map(|&i| v[i].expect("checked")).collect();
                let (lo, hi) = range(vals.iter().copied()).expect("rows is not empty");
                axes.push(Axis::Numeric {
                    name: p.to_owned(),
                    lo,
                    hi,
                });
                columns.push(vals.into_iter().map(AxisValue::Number).collect());
            }
            None => {
                let l = labels(df, p).map_err(&err)?;
                let vals: Vec<String> = rows
                    .iter()
                    .map(|&i| l[i].clone().unwrap_or_else(|| "none".into()))
                    .collect();
                let mut values = distinct(vals.iter().cloned());
                values.sort();
                axes.push(Axis::Categorical {
                    name: p.to_owned(),
                    values,
                });
                columns.push(vals.into_iter().map(AxisValue::Label).collect());
            }
        }
    }
    // (parameter values, metric values) per line.
    let mut groups: Vec<(Vec<AxisValue>, Vec<f64>)> = Vec::new();
    for (k, &i) in rows.iter().enumerate() {
        let key: Vec<AxisValue> = columns.iter().map(|c| c[k].clone()).collect();
        let value = y[i].expect("rows have the metric");
        let same = |g: &&mut (Vec<AxisValue>, Vec<f64>)| g.0 == key;
        match groups
            .iter_mut()
            .find(same)
            .filter(|_| lines == ParallelLines::PerSeedGroup)
        {
            Some(g) => g.1.push(value),
            None => groups.push((key, vec![value])),
        }
    }
    let mut polylines = Vec::new();
    for (key, values) in groups {
        let mean = describe::summary(&values)
            .map_err(|e| PlotError::Stats {
                figure: NAME,
                message: e.to_string(),
            })?
            .mean;
        polylines.push((key, mean, values.len()));
    }
    let (lo, hi) = range(polylines.iter().map(|p| p.1)).expect("at least one line");
    axes.push(Axis::Numeric {
        name: metric.to_owned(),
        lo,
        hi,
    });
    let lines_drawn = polylines
        .into_iter()
        .map(|(key, mean, n)| {
            let mut heights: Vec<f64> = key.iter().zip(&axes).map(|(v, a)| a.height(v)).collect();
            heights.push(
                axes.last()
                    .expect("metric axis")
                    .height(&AxisValue::Number(mean)),
            );
            let t = if hi > lo {
                (mean - lo) / (hi - lo)
            } else {
                0.5
            };
            (heights, t, n)
        })
        .collect();
    let (capped, runs) = capped_runs(df).map_err(&err)?;
    Plot::render(&ParallelFigure {
        axes,
        lines: lines_drawn,
        per_group: lines == ParallelLines::PerSeedGroup,
        note: capped_note(capped, runs),
    })
}

struct ParallelFigure {
    axes: Vec<Axis>,
    /// Heights on each axis, metric position in [0, 1] (for the colour), runs in the line.
    lines: Vec<(Vec<f64>, f64, usize)>,
    per_group: bool,
    /// Says how many runs stopped at a cap while still improving.
    note: String,
}

/// Blue (0) to red (1) through grey.
fn ramp(t: f64) -> RGBColor {
    let (a, b) = ((0x00, 0x72, 0xB2), (0xD5, 0x5E, 0x00));
    let mix = |x: u8, y: u8| (f64::from(x) + (f64::from(y) - f64::from(x)) * t).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

impl Figure for ParallelFigure {
    fn name(&self) -> &str {
        NAME
    }

    fn size(&self) -> (u32, u32) {
        ((170 * self.axes.len() as u32).max(640), 540)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let metric = self.axes.last().map(Axis::name).unwrap_or("");
        let what = if self.per_group {
            "seed groups (mean)"
        } else {
            "runs"
        };
        let title = format!(
            "Parameters against {metric}: {} {what}{}",
            self.lines.len(),
            self.note
        );
        let k = self.axes.len() as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(title, style::title())
            .margin(20)
            .build_cartesian_2d(-0.5..(k - 0.5), -0.16..1.08)
            .map_err(draw_err(NAME))?;
        for (j, axis) in self.axes.iter().enumerate() {
            let x = j as f64;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, 0.0), (x, 1.0)],
                    BLACK.mix(0.6).stroke_width(1),
                )))
                .map_err(draw_err(NAME))?;
            let name = axis.name().strip_prefix("config.").unwrap_or(axis.name());
            chart
                .draw_series(std::iter::once(Text::new(
                    name.to_owned(),
                    (x - 0.4, -0.08),
                    style::axis_label(),
                )))
                .map_err(draw_err(NAME))?;
            chart
                .draw_series(
                    axis.ticks().into_iter().map(|(h, text)| {
                        Text::new(text, (x + 0.03, h + 0.02), style::tick_label())
                    }),
                )
                .map_err(draw_err(NAME))?;
        }
        for (heights, t, n) in &self.lines {
            let c = ramp(*t);
            let width = if *n > 1 { 3 } else { 2 };
            chart
                .draw_series(std::iter::once(PathElement::new(
                    heights
                        .iter()
                        .enumerate()
                        .map(|(j, &h)| (j as f64, h))
                        .collect::<Vec<_>>(),
                    c.mix(0.85).stroke_width(width),
                )))
                .map_err(draw_err(NAME))?;
        }
        Ok(())
    }
}
