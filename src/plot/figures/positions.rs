//! Figure 4: metrics by GCA position set (the stacking sweep), mean ± standard deviation
//! across seeds.
use plotters::coord::Shift;
use plotters::prelude::*;
use polars::prelude::DataFrame;

use super::{
    capped_rows, category_axis, category_label, distinct, draw_capped_rings, draw_legend,
    draw_panel_grid, frame_err, legend_dot,
};
use crate::analysis::describe;
use crate::plot::frame::{f64s, labels};
use crate::plot::render::{draw_err, Figure, Plot};
use crate::plot::style::{self, color, padded, range};
use crate::plot::{FrameError, PlotError};

const NAME: &str = "metrics_by_gca_positions";

/// Figure 4: one panel per metric in `metrics` (e.g. `["ndcg@10", "hr@10"]`); along x the GCA
/// position sets (e.g. `[]` for the baseline, `[0]`, `[1]`, `[0, 1]`, ...), ordered by size
/// then lexicographically; per domain a marker at the mean across seeds with a ±1 standard
/// deviation bar (from [`crate::analysis::describe::summary`]) and each seed as a faint dot; a
/// run that stopped at a cap while still improving (`converged` false, when the frame has that
/// column) gets a hollow ring, named in the legend.
///
/// Columns read: `positions` (a list of integers or any label; an empty list is the baseline),
/// `domain` (label) and each metric (numbers), one row per run and domain. Output name:
/// `metrics_by_gca_positions`.
pub fn metrics_by_gca_positions(df: &DataFrame, metrics: &[&str]) -> Result<Plot, PlotError> {
    let err = frame_err(NAME);
    if metrics.is_empty() {
        return Err(err(FrameError::Empty("no metric requested".into())));
    }
    let positions = labels(df, "positions").map_err(&err)?;
    let domains = labels(df, "domain").map_err(&err)?;
    let mut sets = distinct(positions.iter().flatten().cloned());
    // "[0, 1]" sorts after "[0]" and "[2]": by number of positions, then by text.
    sets.sort_by(|a, b| {
        let size = |s: &str| {
            if s == "[]" {
                0
            } else {
                s.matches(',').count() + 1
            }
        };
        (size(a), a).cmp(&(size(b), b))
    });
    let mut domain_names = distinct(domains.iter().flatten().cloned());
    domain_names.sort();

    let capped = capped_rows(df).map_err(&err)?;
    let mut panels = Vec::new();
    for &metric in metrics {
        let values = f64s(df, metric).map_err(&err)?;
        let mut series = Vec::new();
        for domain in &domain_names {
            let mut points = Vec::new();
            for (i, set) in sets.iter().enumerate() {
                let runs: Vec<(f64, bool)> = (0..df.height())
                    .filter(|&r| {
                        positions[r].as_ref() == Some(set) && domains[r].as_ref() == Some(domain)
                    })
                    .filter_map(|r| Some((values[r]?, capped[r])))
                    .collect();
                let ys: Vec<f64> = runs.iter().map(|r| r.0).collect();
                if ys.is_empty() {
                    continue;
                }
                let s = describe::summary(&ys).map_err(|e| PlotError::Stats {
                    figure: NAME,
                    message: e.to_string(),
                })?;
                points.push(Point {
                    category: i,
                    mean: s.mean,
                    std: s.sd.unwrap_or(0.0),
                    seeds: runs,
                });
            }
            series.push((domain.clone(), points));
        }
        if series.iter().all(|(_, p)| p.is_empty()) {
            return Err(err(FrameError::Empty(format!(
                "no row has positions, domain and {metric} all set"
            ))));
        }
        panels.push(Panel {
            metric: metric.to_string(),
            series,
        });
    }
    Plot::render(&PositionsFigure {
        sets: sets.iter().map(|s| display_set(s)).collect(),
        panels,
    })
}

/// `[]` reads better as "none (baseline)" on the axis.
fn display_set(s: &str) -> String {
    if s == "[]" {
        "none".to_string()
    } else {
        s.to_string()
    }
}

struct Point {
    category: usize,
    mean: f64,
    std: f64,
    /// Each run's value, and whether it stopped at a cap while still improving.
    seeds: Vec<(f64, bool)>,
}

struct Panel {
    metric: String,
    series: Vec<(String, Vec<Point>)>,
}

struct PositionsFigure {
    sets: Vec<String>,
    panels: Vec<Panel>,
}

impl Figure for PositionsFigure {
    fn name(&self) -> &str {
        NAME
    }

    fn size(&self) -> (u32, u32) {
        let w = (200 + 110 * self.sets.len() as u32).max(560);
        (w, 430 * self.panels.len() as u32 + 50)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        draw_panel_grid(
            root,
            NAME,
            "Metrics by GCA position set (mean ± sd across seeds)",
            (self.panels.len(), 1),
            &self.panels,
            |area, panel| self.draw_panel(area, panel),
        )
    }
}

impl PositionsFigure {
    fn draw_panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        panel: &Panel,
    ) -> Result<(), PlotError> {
        let points = panel.series.iter().flat_map(|(_, p)| p);
        let (lo, hi) = range(points.flat_map(|p| {
            p.seeds
                .iter()
                .map(|s| s.0)
                .chain([p.mean - p.std, p.mean + p.std])
        }))
        .expect("panel has points");
        let (y0, y1) = padded(lo, hi, 0.15);
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(68)
            .build_cartesian_2d(category_axis(self.sets.len()), y0..y1)
            .map_err(draw_err(NAME))?;
        let names = self.sets.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("GCA positions")
            .y_desc(panel.metric.to_uppercase().as_str())
            .x_label_formatter(&|x| category_label(&names, *x))
            .axis_desc_style(style::axis_label())
            .label_style(style::tick_label())
            .draw()
            .map_err(draw_err(NAME))?;

        let n = panel.series.len() as f64;
        let mut rings = Vec::new();
        for (k, (domain, pts)) in panel.series.iter().enumerate() {
            let c = color(k);
            // Domains side by side within a category.
            let dx = (k as f64 - (n - 1.0) / 2.0) * 0.2;
            chart
                .draw_series(pts.iter().flat_map(|p| {
                    p.seeds.iter().map(move |&(y, _)| {
                        Circle::new((p.category as f64 + dx, y), 3, c.mix(0.3).filled())
                    })
                }))
                .map_err(draw_err(NAME))?;
            rings.extend(pts.iter().flat_map(|p| {
                p.seeds
                    .iter()
                    .filter(|s| s.1)
                    .map(move |&(y, _)| (p.category as f64 + dx, y))
            }));
            chart
                .draw_series(pts.iter().map(|p| {
                    let x = p.category as f64 + dx;
                    ErrorBar::new_vertical(
                        x,
                        p.mean - p.std,
                        p.mean,
                        p.mean + p.std,
                        c.stroke_width(2),
                        10,
                    )
                }))
                .map_err(draw_err(NAME))?;
            chart
                .draw_series(
                    pts.iter()
                        .map(|p| Circle::new((p.category as f64 + dx, p.mean), 5, c.filled())),
                )
                .map_err(draw_err(NAME))?
                .label(format!("domain {domain}"))
                .legend(legend_dot(c));
        }
        draw_capped_rings(&mut chart, &rings, NAME)?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft, NAME)?;
        Ok(())
    }
}
