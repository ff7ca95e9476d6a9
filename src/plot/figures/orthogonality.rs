//! Figures 1 and 3: orthogonality |cos(X, X')| against NDCG@10, and its distribution next to
//! the reference |cos(X, Y)|.
use plotters::coord::Shift;
use plotters::prelude::*;
use polars::prelude::DataFrame;

use super::{
    capped_note, capped_rows, capped_runs, category_axis, category_label, distinct,
    draw_capped_rings, draw_legend, draw_panel_grid, frame_err, legend_dot, legend_line,
    panel_grid,
};
use crate::analysis::describe;
use crate::eval::names;
use crate::plot::frame::{f64s, has, labels};
use crate::plot::render::{draw_err, Figure, Plot};
use crate::plot::style::{self, color, p_value, padded, range};
use crate::plot::{FrameError, PlotError};

const SCATTER: &str = "orthogonality_vs_ndcg";
const BOXES: &str = "cos_boxplots";
const PANEL_W: u32 = 560;
const PANEL_H: u32 = 430;

/// Figure 1: for each model (rows) and domain (columns), one point per run at
/// (|cos(X, X')|, NDCG@10), the least-squares line, and Pearson's r, its two-sided p-value and
/// n in the legend (all from [`crate::analysis::describe`]). A run that stopped at a cap while
/// still improving (`converged` false) gets a hollow ring, named in the legend.
///
/// Columns read: `model`, `domain` (any type, used as labels), `cos_x_xprime` and `ndcg@10`
/// (numbers), and `converged` (boolean) when present. Rows with a null in any of the others
/// are left out. Output name:
/// `orthogonality_vs_ndcg`.
pub fn orthogonality_vs_ndcg(df: &DataFrame) -> Result<Plot, PlotError> {
    let err = frame_err(SCATTER);
    let models = labels(df, "model").map_err(&err)?;
    let domains = labels(df, "domain").map_err(&err)?;
    let xs = f64s(df, "cos_x_xprime").map_err(&err)?;
    let ys = f64s(df, names::NDCG_10).map_err(&err)?;
    let capped = capped_rows(df).map_err(&err)?;

    let rows: Vec<(String, String, f64, f64, bool)> = models
        .into_iter()
        .zip(domains)
        .zip(xs.into_iter().zip(ys))
        .zip(capped)
        .filter_map(|(((m, d), (x, y)), c)| Some((m?, d?, x?, y?, c)))
        .collect();
    if rows.is_empty() {
        return Err(err(FrameError::Empty(
            "no row has model, domain, cos_x_xprime and ndcg@10 all set".into(),
        )));
    }
    let model_names = distinct(rows.iter().map(|r| r.0.clone()));
    let mut domain_names = distinct(rows.iter().map(|r| r.1.clone()));
    domain_names.sort();

    let mut panels = Vec::new();
    for model in &model_names {
        for domain in &domain_names {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| &r.0 == model && &r.1 == domain)
                .map(|r| (r.2, r.3))
                .collect();
            let capped = rows
                .iter()
                .filter(|r| &r.0 == model && &r.1 == domain && r.4)
                .map(|r| (r.2, r.3))
                .collect();
            let fit = if points.len() >= 3 {
                let (x, y): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
                Some(Fit::compute(&x, &y)?)
            } else {
                None
            };
            panels.push(ScatterPanel {
                title: format!("{model} · domain {domain}"),
                points,
                capped,
                fit,
            });
        }
    }
    Plot::render(&ScatterFigure {
        cols: domain_names.len(),
        rows: model_names.len(),
        panels,
    })
}

/// Pearson correlation and least-squares line of one panel, from the analysis library.
struct Fit {
    r: f64,
    p: f64,
    n: usize,
    slope: f64,
    intercept: f64,
}

impl Fit {
    fn compute(x: &[f64], y: &[f64]) -> Result<Fit, PlotError> {
        let stats_err = |e: describe::StatsError| PlotError::Stats {
            figure: SCATTER,
            message: e.to_string(),
        };
        let c = crate::analysis::stats::pearson(x, y).map_err(stats_err)?;
        let line = describe::linear_fit(x, y).map_err(stats_err)?;
        Ok(Fit {
            r: c.r,
            p: c.p_value,
            n: c.n,
            slope: line.slope,
            intercept: line.intercept,
        })
    }
}

struct ScatterPanel {
    title: String,
    points: Vec<(f64, f64)>,
    /// The points of runs that stopped at a cap while still improving.
    capped: Vec<(f64, f64)>,
    fit: Option<Fit>,
}

struct ScatterFigure {
    rows: usize,
    cols: usize,
    panels: Vec<ScatterPanel>,
}

impl Figure for ScatterFigure {
    fn name(&self) -> &str {
        SCATTER
    }

    fn size(&self) -> (u32, u32) {
        (PANEL_W * self.cols as u32, PANEL_H * self.rows as u32 + 50)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        draw_panel_grid(
            root,
            SCATTER,
            "Orthogonality |cos(X, X')| vs NDCG@10 (one point per run)",
            (self.rows, self.cols),
            &self.panels,
            draw_scatter_panel,
        )
    }
}

fn draw_scatter_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &ScatterPanel,
) -> Result<(), PlotError> {
    let e = draw_err(SCATTER);
    let (x_lo, x_hi) = match range(panel.points.iter().map(|p| p.0)) {
        Some(r) => r,
        None => {
            area.draw_text(
                &format!("{}: no runs", panel.title),
                &style::caption(),
                (20, 20),
            )
            .map_err(e)?;
            return Ok(());
        }
    };
    // The fitted line spans the data's x range; include its ends in the y range so it is
    // never drawn over the axes.
    let line_ys = panel
        .fit
        .iter()
        .flat_map(|f| [f.intercept + f.slope * x_lo, f.intercept + f.slope * x_hi]);
    let (y_lo, y_hi) =
        range(panel.points.iter().map(|p| p.1).chain(line_ys)).expect("points are non-empty");
    let (x0, x1) = padded(x_lo, x_hi, 0.06);
    let (y0, y1) = padded(y_lo, y_hi, 0.25);

    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, style::caption())
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(68)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err(SCATTER))?;
    chart
        .configure_mesh()
        .x_desc("|cos(X, X')|")
        .y_desc("NDCG@10")
        .axis_desc_style(style::axis_label())
        .label_style(style::tick_label())
        .x_labels(6)
        .y_labels(6)
        .draw()
        .map_err(draw_err(SCATTER))?;

    let dots = color(0);
    chart
        .draw_series(
            panel
                .points
                .iter()
                .map(|&p| Circle::new(p, 4, dots.mix(0.75).filled())),
        )
        .map_err(draw_err(SCATTER))?
        .label(format!("runs ({})", panel.points.len()))
        .legend(legend_dot(dots));
    draw_capped_rings(&mut chart, &panel.capped, SCATTER)?;
    if let Some(f) = &panel.fit {
        let line = color(1);
        chart
            .draw_series(LineSeries::new(
                [
                    (x_lo, f.intercept + f.slope * x_lo),
                    (x_hi, f.intercept + f.slope * x_hi),
                ],
                line.stroke_width(2),
            ))
            .map_err(draw_err(SCATTER))?
            .label(format!(
                "fit: r = {:.3}, p = {}, n = {}",
                f.r,
                p_value(f.p),
                f.n
            ))
            .legend(legend_line(line));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight, SCATTER)?;
    Ok(())
}

/// Figure 3: box plots of |cos(X, Y)| (query stream against key/value stream, the reference)
/// next to |cos(X, X')| (query against cross-attention output), one pair per model — or per
/// model and domain when a `domain` column is present. Boxes span the quartiles, whiskers reach
/// the most extreme values within 1.5 IQR, points beyond are drawn, the diamond is the mean
/// (printed above the box). Quantiles and means come from [`crate::analysis::describe`].
///
/// The title counts the runs that stopped at a cap while still improving.
///
/// Columns read: `model` (label), optional `domain` (label), `cos_x_y`, `cos_x_xprime`
/// (numbers; one row per run, or per run and GCA position), optional `converged` (boolean) and
/// `run_id` (label, to count runs rather than rows). Output name: `cos_boxplots`.
pub fn cos_boxplots(df: &DataFrame) -> Result<Plot, PlotError> {
    let err = frame_err(BOXES);
    let models = labels(df, "model").map_err(&err)?;
    let domains = if has(df, "domain") {
        labels(df, "domain").map_err(&err)?
    } else {
        vec![None; df.height()]
    };
    let xy = f64s(df, "cos_x_y").map_err(&err)?;
    let xxp = f64s(df, "cos_x_xprime").map_err(&err)?;

    let group_of = |i: usize| -> Option<String> {
        let m = models[i].clone()?;
        Some(match &domains[i] {
            Some(d) => format!("{m} · {d}"),
            None => m,
        })
    };
    let groups = distinct((0..df.height()).filter_map(group_of));
    let mut boxes = Vec::new();
    for g in &groups {
        let rows: Vec<usize> = (0..df.height())
            .filter(|&i| group_of(i).as_deref() == Some(g.as_str()))
            .collect();
        let a: Vec<f64> = rows.iter().filter_map(|&i| xy[i]).collect();
        let b: Vec<f64> = rows.iter().filter_map(|&i| xxp[i]).collect();
        boxes.push([BoxStats::compute(&a)?, BoxStats::compute(&b)?]);
    }
    if boxes.iter().all(|pair| pair.iter().all(Option::is_none)) {
        return Err(err(FrameError::Empty(
            "no row has a model and a value of cos_x_y or cos_x_xprime".into(),
        )));
    }
    let (capped, runs) = capped_runs(df).map_err(&err)?;
    Plot::render(&BoxFigure {
        groups,
        boxes,
        note: capped_note(capped, runs),
    })
}

/// Tukey box statistics of one sample.
struct BoxStats {
    q1: f64,
    median: f64,
    q3: f64,
    whisker_lo: f64,
    whisker_hi: f64,
    outliers: Vec<f64>,
    mean: f64,
    n: usize,
}

impl BoxStats {
    fn compute(values: &[f64]) -> Result<Option<BoxStats>, PlotError> {
        if values.is_empty() {
            return Ok(None);
        }
        let stats_err = |e: describe::StatsError| PlotError::Stats {
            figure: BOXES,
            message: e.to_string(),
        };
        let q = describe::quantiles(values, &[0.25, 0.5, 0.75]).map_err(stats_err)?;
        let mean = describe::summary(values).map_err(stats_err)?.mean;
        let (q1, median, q3) = (q[0], q[1], q[2]);
        let (lo_fence, hi_fence) = (q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1));
        let inside = || {
            values
                .iter()
                .copied()
                .filter(|v| *v >= lo_fence && *v <= hi_fence)
        };
        Ok(Some(BoxStats {
            q1,
            median,
            q3,
            whisker_lo: inside().fold(f64::INFINITY, f64::min),
            whisker_hi: inside().fold(f64::NEG_INFINITY, f64::max),
            outliers: values
                .iter()
                .copied()
                .filter(|v| *v < lo_fence || *v > hi_fence)
                .collect(),
            mean,
            n: values.len(),
        }))
    }
}

struct BoxFigure {
    groups: Vec<String>,
    /// Says how many of the runs stopped at a cap while still improving.
    note: String,
    /// Per group: [|cos(X, Y)|, |cos(X, X')|].
    boxes: Vec<[Option<BoxStats>; 2]>,
}

impl Figure for BoxFigure {
    fn name(&self) -> &str {
        BOXES
    }

    fn size(&self) -> (u32, u32) {
        (260 + 170 * self.groups.len() as u32, 620)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let area = &panel_grid(
            root,
            BOXES,
            &format!(
                "|cos(X, Y)| (reference) vs |cos(X, X')| (cross-attention output){}",
                self.note
            ),
            1,
            1,
        )?[0];
        let all = self.boxes.iter().flatten().flatten();
        let (lo, hi) = range(all.flat_map(|b| {
            [b.whisker_lo, b.whisker_hi]
                .into_iter()
                .chain(b.outliers.iter().copied())
                .chain([b.mean])
        }))
        .expect("at least one box");
        let (y0, y1) = padded(lo.min(0.0), hi, 0.12);
        let mut chart = ChartBuilder::on(area)
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(68)
            .build_cartesian_2d(category_axis(self.groups.len()), y0..y1)
            .map_err(draw_err(BOXES))?;
        let names = self.groups.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("model")
            .y_desc("|cos|")
            .x_label_formatter(&|x| category_label(&names, *x))
            .axis_desc_style(style::axis_label())
            .label_style(style::tick_label())
            .draw()
            .map_err(draw_err(BOXES))?;

        let half = 0.14;
        for (k, label) in ["|cos(X, Y)|", "|cos(X, X')|"].into_iter().enumerate() {
            let c = color(k);
            let offset = if k == 0 { -0.19 } else { 0.19 };
            let mut elements: Vec<DynElement<DB, (f64, f64)>> = Vec::new();
            for (g, pair) in self.boxes.iter().enumerate() {
                let Some(b) = &pair[k] else { continue };
                let x = g as f64 + offset;
                elements.push(
                    Rectangle::new([(x - half, b.q1), (x + half, b.q3)], c.mix(0.25).filled())
                        .into_dyn(),
                );
                elements.push(
                    Rectangle::new([(x - half, b.q1), (x + half, b.q3)], c.stroke_width(2))
                        .into_dyn(),
                );
                elements.push(
                    PathElement::new(
                        vec![(x - half, b.median), (x + half, b.median)],
                        c.stroke_width(3),
                    )
                    .into_dyn(),
                );
                for (from, to) in [(b.q1, b.whisker_lo), (b.q3, b.whisker_hi)] {
                    elements.push(PathElement::new(vec![(x, from), (x, to)], c).into_dyn());
                    elements.push(
                        PathElement::new(vec![(x - half / 2.0, to), (x + half / 2.0, to)], c)
                            .into_dyn(),
                    );
                }
                for &o in &b.outliers {
                    elements.push(Circle::new((x, o), 3, c).into_dyn());
                }
                elements.push(TriangleMarker::new((x, b.mean), 6, BLACK.filled()).into_dyn());
                let top = b
                    .whisker_hi
                    .max(b.outliers.iter().copied().fold(b.mean, f64::max));
                elements.push(
                    Text::new(
                        format!("{:.3} (n={})", b.mean, b.n),
                        (x - half, top + (y1 - y0) * 0.05),
                        style::tick_label(),
                    )
                    .into_dyn(),
                );
            }
            chart
                .draw_series(elements)
                .map_err(draw_err(BOXES))?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 18, y + 5)], c.mix(0.5).filled())
                });
        }
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(draw_err(BOXES))?
            .label("mean (printed above box)")
            .legend(|(x, y)| TriangleMarker::new((x + 9, y), 6, BLACK.filled()));
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight, BOXES)?;
        Ok(())
    }
}
