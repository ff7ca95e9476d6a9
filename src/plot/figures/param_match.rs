//! Figure 2: NDCG@10 against parameter count — the baseline scaled up by hidden size versus
//! the baseline plus GCA (the parameter-matched comparison).
use plotters::coord::Shift;
use plotters::prelude::*;
use polars::prelude::DataFrame;

use super::{
    capped_rows, distinct, draw_capped_rings, draw_legend, draw_panel_grid, frame_err, legend_line,
};
use crate::analysis::describe;
use crate::eval::names;
use crate::plot::frame::{f64s, labels};
use crate::plot::render::{draw_err, Figure, Plot};
use crate::plot::style::{self, color, millions, padded, range};
use crate::plot::{FrameError, PlotError};

const NAME: &str = "ndcg_vs_params";

/// Figure 2: for each domain, NDCG@10 against total parameter count, one series per variant
/// (e.g. `baseline`, `+GCA_early`, `+GCA_stack`). Each run is a faint dot; at each parameter
/// count the series shows the mean across seeds with a ±1 standard deviation bar (from
/// [`crate::analysis::describe::summary`]), and a line joins the means in parameter order — for
/// the baseline this is its scaling curve. A run that stopped at a cap while still improving
/// (`converged` false, when the frame has that column) gets a hollow ring, named in the legend.
///
/// Columns read: `variant`, `domain` (labels), `params` and `ndcg@10` (numbers), one row per
/// run and domain. Output name: `ndcg_vs_params`.
pub fn ndcg_vs_params(df: &DataFrame) -> Result<Plot, PlotError> {
    let err = frame_err(NAME);
    let variants = labels(df, "variant").map_err(&err)?;
    let domains = labels(df, "domain").map_err(&err)?;
    let params = f64s(df, "params").map_err(&err)?;
    let ndcg = f64s(df, names::NDCG_10).map_err(&err)?;
    let capped = capped_rows(df).map_err(&err)?;
    let rows: Vec<(String, String, f64, f64, bool)> = variants
        .into_iter()
        .zip(domains)
        .zip(params.into_iter().zip(ndcg))
        .zip(capped)
        .filter_map(|(((v, d), (p, y)), c)| Some((v?, d?, p?, y?, c)))
        .collect();
    if rows.is_empty() {
        return Err(err(FrameError::Empty(
            "no row has variant, domain, params and ndcg@10 all set".into(),
        )));
    }
    let variant_names = distinct(rows.iter().map(|r| r.0.clone()));
    let mut domain_names = distinct(rows.iter().map(|r| r.1.clone()));
    domain_names.sort();

    let mut panels = Vec::new();
    for domain in &domain_names {
        let mut series = Vec::new();
        for variant in &variant_names {
            let runs: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| &r.0 == variant && &r.1 == domain)
                .map(|r| (r.2, r.3))
                .collect();
            let mut counts = distinct(runs.iter().map(|r| r.0.to_bits()));
            counts.sort_by(|a, b| f64::from_bits(*a).total_cmp(&f64::from_bits(*b)));
            let mut means = Vec::new();
            for bits in counts {
                let p = f64::from_bits(bits);
                let ys: Vec<f64> = runs.iter().filter(|r| r.0 == p).map(|r| r.1).collect();
                let s = describe::summary(&ys).map_err(|e| PlotError::Stats {
                    figure: NAME,
                    message: e.to_string(),
                })?;
                means.push((p, s.mean, s.sd.unwrap_or(0.0)));
            }
            series.push(Series {
                variant: variant.clone(),
                runs,
                means,
            });
        }
        panels.push(Panel {
            domain: domain.clone(),
            series,
            capped: rows
                .iter()
                .filter(|r| &r.1 == domain && r.4)
                .map(|r| (r.2 / 1e6, r.3))
                .collect(),
        });
    }
    Plot::render(&ParamFigure { panels })
}

struct Series {
    variant: String,
    /// (parameters, NDCG@10) per run.
    runs: Vec<(f64, f64)>,
    /// (parameters, mean, standard deviation) per parameter count, ascending.
    means: Vec<(f64, f64, f64)>,
}

struct Panel {
    domain: String,
    series: Vec<Series>,
    /// (parameters in millions, NDCG@10) of the runs that stopped at a cap while still
    /// improving.
    capped: Vec<(f64, f64)>,
}

struct ParamFigure {
    panels: Vec<Panel>,
}

impl Figure for ParamFigure {
    fn name(&self) -> &str {
        NAME
    }

    fn size(&self) -> (u32, u32) {
        (620 * self.panels.len() as u32, 520)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        draw_panel_grid(
            root,
            NAME,
            "Parameter-matched comparison: NDCG@10 vs parameter count",
            (1, self.panels.len()),
            &self.panels,
            draw_panel,
        )
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Result<(), PlotError> {
    let series = &panel.series;
    let xs = series.iter().flat_map(|s| s.runs.iter().map(|r| r.0 / 1e6));
    let ys = series.iter().flat_map(|s| {
        s.runs
            .iter()
            .map(|r| r.1)
            .chain(s.means.iter().flat_map(|m| [m.1 - m.2, m.1 + m.2]))
    });
    let (x0, x1) = range(xs)
        .map(|(a, b)| padded(a, b, 0.08))
        .unwrap_or((0.0, 1.0));
    let (y0, y1) = range(ys)
        .map(|(a, b)| padded(a, b, 0.15))
        .unwrap_or((0.0, 1.0));

    let mut chart = ChartBuilder::on(area)
        .caption(format!("domain {}", panel.domain), style::caption())
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(68)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err(NAME))?;
    chart
        .configure_mesh()
        .x_desc("parameters (millions)")
        .y_desc("NDCG@10")
        .x_label_formatter(&|x| millions(x * 1e6))
        .axis_desc_style(style::axis_label())
        .label_style(style::tick_label())
        .x_labels(6)
        .y_labels(6)
        .draw()
        .map_err(draw_err(NAME))?;

    for (k, s) in series.iter().enumerate() {
        let c = color(k);
        chart
            .draw_series(
                s.runs
                    .iter()
                    .map(|&(p, y)| Circle::new((p / 1e6, y), 3, c.mix(0.35).filled())),
            )
            .map_err(draw_err(NAME))?;
        chart
            .draw_series(s.means.iter().map(|&(p, m, sd)| {
                ErrorBar::new_vertical(p / 1e6, m - sd, m, m + sd, c.stroke_width(2), 10)
            }))
            .map_err(draw_err(NAME))?;
        chart
            .draw_series(LineSeries::new(
                s.means.iter().map(|&(p, m, _)| (p / 1e6, m)),
                c.stroke_width(2),
            ))
            .map_err(draw_err(NAME))?
            .label(format!("{} ({} runs)", s.variant, s.runs.len()))
            .legend(legend_line(c));
    }
    draw_capped_rings(&mut chart, &panel.capped, NAME)?;
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight, NAME)?;
    Ok(())
}
