//! Figure 5: AutoCDSR's diagnostic — cross-domain attention share by success/failure cell
//! (did the single-domain model and the cross-domain model each hit?) and by layer.
use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;
use polars::prelude::DataFrame;

use super::{
    category_axis, category_label, distinct, draw_legend, frame_err, legend_dot, legend_line,
    panel_grid,
};
use crate::analysis::describe;
use crate::eval::names;
use crate::plot::frame::{bools, f64s, has, labels};
use crate::plot::render::{draw_err, Figure, Plot};
use crate::plot::style::{self, color, padded, range};
use crate::plot::{FrameError, PlotError};

const NAME: &str = "attention_share";

/// Where a test sample falls by the HR@10 outcome of the single-domain and the cross-domain
/// model. `SingleOnly` is the case AutoCDSR's paper studies: transfer hurt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SuccessCell {
    BothHit,
    SingleOnly,
    CrossOnly,
    BothMiss,
}

impl SuccessCell {
    pub const ALL: [SuccessCell; 4] = [
        SuccessCell::BothHit,
        SuccessCell::SingleOnly,
        SuccessCell::CrossOnly,
        SuccessCell::BothMiss,
    ];

    pub fn of(hit_single: bool, hit_cross: bool) -> SuccessCell {
        match (hit_single, hit_cross) {
            (true, true) => SuccessCell::BothHit,
            (true, false) => SuccessCell::SingleOnly,
            (false, true) => SuccessCell::CrossOnly,
            (false, false) => SuccessCell::BothMiss,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SuccessCell::BothHit => "both hit",
            SuccessCell::SingleOnly => "single hit, cross miss",
            SuccessCell::CrossOnly => "cross hit, single miss",
            SuccessCell::BothMiss => "both miss",
        }
    }
}

/// Figure 5: left, the mean cross-domain attention share `a_cd` of the cross-domain model per
/// [`SuccessCell`] and domain, with ±1 standard error bars and the sample count; right (when
/// a `layer` column is present), the mean share per layer for each cell. With per-layer rows,
/// the left panel uses each sample's share summed over layers. Means and standard errors come
/// from [`crate::analysis::describe::summary`].
///
/// Columns read (the run format's `samples.parquet`): `domain` (label), `hit_single`,
/// `hit_cross` (booleans), `a_cd` (number); with per-layer rows also `layer` and `sample`
/// (integers; `run_id` too when the frame holds several runs). Output name: `attention_share`.
pub fn attention_share(samples: &DataFrame) -> Result<Plot, PlotError> {
    let err = frame_err(NAME);
    let domains = labels(samples, "domain").map_err(&err)?;
    let single = bools(samples, "hit_single").map_err(&err)?;
    let cross = bools(samples, "hit_cross").map_err(&err)?;
    let share = f64s(samples, names::A_CD).map_err(&err)?;
    let layered = has(samples, "layer");
    let (layer, sample) = if layered {
        let mut sample = labels(samples, "sample").map_err(&err)?;
        // Frames of several runs (`load_samples` adds `run_id`) repeat sample numbers: a
        // sample is (run, sample).
        if has(samples, "run_id") {
            let runs = labels(samples, "run_id").map_err(&err)?;
            for (s, r) in sample.iter_mut().zip(runs) {
                if let (Some(s), Some(r)) = (s.as_mut(), r) {
                    *s = format!("{r}/{s}");
                }
            }
        }
        (f64s(samples, "layer").map_err(&err)?, sample)
    } else {
        (vec![None; samples.height()], vec![None; samples.height()])
    };

    struct Row {
        domain: String,
        cell: SuccessCell,
        share: f64,
        layer: Option<i64>,
        sample: Option<String>,
    }
    let rows: Vec<Row> = (0..samples.height())
        .filter_map(|i| {
            Some(Row {
                domain: domains[i].clone()?,
                cell: SuccessCell::of(single[i]?, cross[i]?),
                share: share[i]?,
                layer: layer[i].map(|l| l as i64),
                sample: sample[i].clone(),
            })
        })
        .collect();
    if rows.is_empty() {
        return Err(err(FrameError::Empty(
            "no row has domain, hit_single, hit_cross and a_cd all set".into(),
        )));
    }
    let mut domain_names = distinct(rows.iter().map(|r| r.domain.clone()));
    domain_names.sort();
    let summarise = |values: &[f64]| {
        describe::summary(values).map_err(|e| PlotError::Stats {
            figure: NAME,
            message: e.to_string(),
        })
    };

    // Per-sample totals: one value per (domain, sample, cell), summed over layers if layered.
    let mut totals: BTreeMap<(String, SuccessCell, Option<String>, usize), f64> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        // Without per-layer rows each row is its own sample.
        let key = match &r.sample {
            Some(s) if layered => (r.domain.clone(), r.cell, Some(s.clone()), 0),
            _ => (r.domain.clone(), r.cell, None, i),
        };
        *totals.entry(key).or_insert(0.0) += r.share;
    }
    let mut by_cell = Vec::new();
    for domain in &domain_names {
        let mut bars = Vec::new();
        for (c, cell) in SuccessCell::ALL.iter().enumerate() {
            let vals: Vec<f64> = totals
                .iter()
                .filter(|(k, _)| &k.0 == domain && k.1 == *cell)
                .map(|(_, v)| *v)
                .collect();
            if vals.is_empty() {
                continue;
            }
            let s = summarise(&vals)?;
            bars.push(Bar {
                category: c,
                mean: s.mean,
                sem: s.sem.unwrap_or(0.0),
                n: s.n,
            });
        }
        by_cell.push((domain.clone(), bars));
    }

    let mut by_layer = Vec::new();
    if layered {
        let layers = {
            let mut l = distinct(rows.iter().filter_map(|r| r.layer));
            l.sort();
            l
        };
        for cell in SuccessCell::ALL {
            let mut line = Vec::new();
            for &l in &layers {
                let vals: Vec<f64> = rows
                    .iter()
                    .filter(|r| r.cell == cell && r.layer == Some(l))
                    .map(|r| r.share)
                    .collect();
                if !vals.is_empty() {
                    line.push((l, summarise(&vals)?.mean));
                }
            }
            if !line.is_empty() {
                by_layer.push((cell, line));
            }
        }
    }
    Plot::render(&AttentionFigure {
        summed_over_layers: layered,
        by_cell,
        by_layer,
    })
}

struct Bar {
    category: usize,
    mean: f64,
    sem: f64,
    n: usize,
}

struct AttentionFigure {
    summed_over_layers: bool,
    by_cell: Vec<(String, Vec<Bar>)>,
    by_layer: Vec<(SuccessCell, Vec<(i64, f64)>)>,
}

impl Figure for AttentionFigure {
    fn name(&self) -> &str {
        NAME
    }

    fn size(&self) -> (u32, u32) {
        if self.by_layer.is_empty() {
            (820, 540)
        } else {
            (1440, 540)
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let cols = if self.by_layer.is_empty() { 1 } else { 2 };
        let areas = panel_grid(
            root,
            NAME,
            "Cross-domain attention share a_cd by outcome of single- vs cross-domain model",
            1,
            cols,
        )?;
        self.draw_cells(&areas[0])?;
        if cols == 2 {
            self.draw_layers(&areas[1])?;
        }
        Ok(())
    }
}

impl AttentionFigure {
    fn draw_cells<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<(), PlotError> {
        let bars = self.by_cell.iter().flat_map(|(_, b)| b);
        let (_, hi) = range(bars.map(|b| b.mean + b.sem)).unwrap_or((0.0, 1.0));
        let y1 = if hi > 0.0 { hi * 1.25 } else { 1.0 };
        let names: Vec<String> = SuccessCell::ALL
            .iter()
            .map(|c| c.label().to_string())
            .collect();
        let mut chart = ChartBuilder::on(area)
            .caption(
                if self.summed_over_layers {
                    "by outcome (share summed over layers)"
                } else {
                    "by outcome"
                },
                style::caption(),
            )
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(68)
            .build_cartesian_2d(category_axis(names.len()), 0.0..y1)
            .map_err(draw_err(NAME))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("outcome (HR@10 of single-domain / cross-domain model)")
            .y_desc("a_cd (cross-domain attention share)")
            .x_label_formatter(&|x| category_label(&names, *x))
            .axis_desc_style(style::axis_label())
            .label_style(style::tick_label())
            .draw()
            .map_err(draw_err(NAME))?;
        let n = self.by_cell.len() as f64;
        let width = 0.7 / n.max(1.0);
        for (k, (domain, bars)) in self.by_cell.iter().enumerate() {
            let c = color(k);
            let dx = (k as f64 - (n - 1.0) / 2.0) * width;
            chart
                .draw_series(bars.iter().map(|b| {
                    let x = b.category as f64 + dx;
                    Rectangle::new(
                        [(x - width / 2.2, 0.0), (x + width / 2.2, b.mean)],
                        c.mix(0.7).filled(),
                    )
                }))
                .map_err(draw_err(NAME))?
                .label(format!("domain {domain}"))
                .legend(legend_dot(c));
            chart
                .draw_series(bars.iter().map(|b| {
                    let x = b.category as f64 + dx;
                    ErrorBar::new_vertical(x, b.mean - b.sem, b.mean, b.mean + b.sem, BLACK, 8)
                }))
                .map_err(draw_err(NAME))?;
            chart
                .draw_series(bars.iter().map(|b| {
                    let x = b.category as f64 + dx - width / 2.2;
                    Text::new(
                        format!("n={}", b.n),
                        (x, b.mean + b.sem + y1 * 0.02),
                        style::tick_label(),
                    )
                }))
                .map_err(draw_err(NAME))?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight, NAME)?;
        Ok(())
    }

    fn draw_layers<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<(), PlotError> {
        let layers = self
            .by_layer
            .iter()
            .flat_map(|(_, l)| l.iter().map(|p| p.0 as f64));
        let (l0, l1) = range(layers).expect("by_layer is non-empty");
        let (_, hi) = range(
            self.by_layer
                .iter()
                .flat_map(|(_, l)| l.iter().map(|p| p.1)),
        )
        .expect("by_layer is non-empty");
        let (x0, x1) = padded(l0, l1, 0.08);
        let mut chart = ChartBuilder::on(area)
            .caption("by layer (mean over samples)", style::caption())
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(68)
            .build_cartesian_2d(x0..x1, 0.0..(hi * 1.2).max(1e-6))
            .map_err(draw_err(NAME))?;
        chart
            .configure_mesh()
            .x_desc("layer")
            .y_desc("a_cd (cross-domain attention share)")
            .x_labels((l1 - l0) as usize + 1)
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 {
                    format!("{}", x.round() as i64)
                } else {
                    String::new()
                }
            })
            .axis_desc_style(style::axis_label())
            .label_style(style::tick_label())
            .draw()
            .map_err(draw_err(NAME))?;
        for (cell, line) in &self.by_layer {
            let c = color(*cell as usize);
            let pts: Vec<(f64, f64)> = line.iter().map(|&(l, m)| (l as f64, m)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(draw_err(NAME))?
                .label(cell.label())
                .legend(legend_line(c));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                .map_err(draw_err(NAME))?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight, NAME)?;
        Ok(())
    }
}
