//! The orthogonality intervention study: accuracy by setting (with and without a projection or
//! penalty on X') with confidence intervals, and per test case, the hit rate against
//! |cos(X, X')| at the scored position.
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use polars::prelude::DataFrame;

use super::{
    capped_rows, category_axis, distinct, draw_capped_rings, draw_legend, draw_panel_grid,
    frame_err, legend_dot,
};
use crate::analysis::describe;
use crate::plot::frame::{bools, f64s, labels};
use crate::plot::render::{draw_err, Figure, Plot};
use crate::plot::style::{self, color, padded, range};
use crate::plot::{FrameError, PlotError};

const BY_SETTING: &str = "metric_by_setting";
const CASES: &str = "case_cos_vs_hit";
const PANEL_W: u32 = 560;
const PANEL_H: u32 = 430;

fn stats_err(figure: &'static str) -> impl Fn(describe::StatsError) -> PlotError {
    move |e| PlotError::Stats {
        figure,
        message: e.to_string(),
    }
}

/// One category of a panel: the mean of its runs, a confidence interval and the runs, each
/// with whether it stopped at a cap while still improving.
struct Point {
    category: usize,
    mean: f64,
    low: f64,
    high: f64,
    runs: Vec<(f64, bool)>,
}

struct SettingPanel {
    title: String,
    points: Vec<Point>,
}

struct SettingFigure {
    metric: String,
    settings: Vec<String>,
    rows: usize,
    cols: usize,
    panels: Vec<SettingPanel>,
}

impl SettingFigure {
    /// Height of the band under each panel that holds the turned setting names: about 8 pixels
    /// per character of the longest, at least 150.
    fn label_area(&self) -> u32 {
        let longest = self.settings.iter().map(|s| s.chars().count()).max();
        (24 + 8 * longest.unwrap_or(0) as u32).max(150)
    }
}

/// NDCG@10 (or any `metric`) by setting: one panel per (`d_model`, `domain`), along x the
/// settings present in the frame (sorted, `baseline` first), a marker at the mean over seeds
/// with its 95% t interval ([`describe::Summary::mean_interval`]; a single run has none) and
/// each run as a faint dot; a run that stopped at a cap while still improving (`converged`
/// false) is drawn as a hollow red ring and named in the legend.
///
/// Columns read: `setting`, `d_model` and `domain` (labels), `metric` (numbers) and, when
/// present, `converged` (boolean), one row per run and domain (the study frame). Output name:
/// `metric_by_setting`.
pub fn metric_by_setting(df: &DataFrame, metric: &str) -> Result<Plot, PlotError> {
    let err = frame_err(BY_SETTING);
    let settings = labels(df, "setting").map_err(&err)?;
    let widths = labels(df, "d_model").map_err(&err)?;
    let domains = labels(df, "domain").map_err(&err)?;
    let values = f64s(df, metric).map_err(&err)?;
    let capped = capped_rows(df).map_err(&err)?;
    let rows: Vec<(String, String, String, f64, bool)> = (0..df.height())
        .filter_map(|i| {
            Some((
                settings[i].clone()?,
                widths[i].clone().unwrap_or_else(|| "-".into()),
                domains[i].clone()?,
                values[i]?,
                capped[i],
            ))
        })
        .collect();
    if rows.is_empty() {
        return Err(err(FrameError::Empty(format!(
            "no row has setting, domain and {metric} all set"
        ))));
    }
    let mut names = distinct(rows.iter().map(|r| r.0.clone()));
    names.sort_by_key(|s| (s != "baseline", s.clone()));
    let mut width_names = distinct(rows.iter().map(|r| r.1.clone()));
    width_names.sort_by_key(|w| (w.parse::<i64>().unwrap_or(i64::MAX), w.clone()));
    let mut domain_names = distinct(rows.iter().map(|r| r.2.clone()));
    domain_names.sort();
    let mut panels = Vec::new();
    for w in &width_names {
        for d in &domain_names {
            let mut points = Vec::new();
            for (k, s) in names.iter().enumerate() {
                let runs: Vec<(f64, bool)> = rows
                    .iter()
                    .filter(|r| &r.0 == s && &r.1 == w && &r.2 == d)
                    .map(|r| (r.3, r.4))
                    .collect();
                if runs.is_empty() {
                    continue;
                }
                let ys: Vec<f64> = runs.iter().map(|r| r.0).collect();
                let sm = describe::summary(&ys).map_err(stats_err(BY_SETTING))?;
                let ci = sm.mean_interval(0.95);
                points.push(Point {
                    category: k,
                    mean: sm.mean,
                    low: ci.map_or(sm.mean, |c| c.low),
                    high: ci.map_or(sm.mean, |c| c.high),
                    runs,
                });
            }
            panels.push(SettingPanel {
                title: format!("d {w} · domain {d}"),
                points,
            });
        }
    }
    Plot::render(&SettingFigure {
        metric: metric.to_owned(),
        settings: names,
        rows: width_names.len(),
        cols: domain_names.len(),
        panels,
    })
}

impl Figure for SettingFigure {
    fn name(&self) -> &str {
        BY_SETTING
    }

    fn size(&self) -> (u32, u32) {
        let w = (200 + 70 * self.settings.len() as u32).max(PANEL_W);
        let h = PANEL_H + self.label_area() - 150;
        (w * self.cols as u32, h * self.rows as u32 + 50)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let title = format!(
            "{} by setting (mean and 95% t interval over seeds)",
            self.metric
        );
        draw_panel_grid(
            root,
            BY_SETTING,
            &title,
            (self.rows, self.cols),
            &self.panels,
            |area, panel| self.draw_panel(area, panel),
        )
    }
}

impl SettingFigure {
    fn draw_panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        panel: &SettingPanel,
    ) -> Result<(), PlotError> {
        let area = area
            .titled(&panel.title, style::caption())
            .map_err(draw_err(BY_SETTING))?;
        let Some((lo, hi)) = range(
            panel
                .points
                .iter()
                .flat_map(|p| p.runs.iter().map(|r| r.0).chain([p.low, p.high])),
        ) else {
            return Ok(());
        };
        let (y0, y1) = padded(lo, hi, 0.15);
        let mut chart = ChartBuilder::on(&area)
            .margin(12)
            .x_label_area_size(self.label_area())
            .y_label_area_size(68)
            .build_cartesian_2d(category_axis(self.settings.len()), y0..y1)
            .map_err(draw_err(BY_SETTING))?;
        let names = self.settings.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(self.settings.len().max(2))
            // The setting names are drawn below, turned: side by side they run into each other.
            .x_label_formatter(&|_| String::new())
            .label_style(style::tick_label())
            .y_desc(self.metric.to_uppercase().as_str())
            .axis_desc_style(style::axis_label())
            .draw()
            .map_err(draw_err(BY_SETTING))?;
        let turned = style::tick_label()
            .transform(plotters::style::FontTransform::Rotate90)
            .pos(Pos::new(HPos::Left, VPos::Center));
        chart
            .draw_series(names.iter().enumerate().map(|(i, name)| {
                EmptyElement::at((i as f64, y0)) + Text::new(name.clone(), (0, 8), turned.clone())
            }))
            .map_err(draw_err(BY_SETTING))?;
        let c = color(0);
        chart
            .draw_series(panel.points.iter().flat_map(|p| {
                p.runs
                    .iter()
                    .filter(|r| !r.1)
                    .map(move |&(y, _)| Circle::new((p.category as f64, y), 3, c.mix(0.3).filled()))
            }))
            .map_err(draw_err(BY_SETTING))?;
        let rings: Vec<(f64, f64)> = panel
            .points
            .iter()
            .flat_map(|p| {
                p.runs
                    .iter()
                    .filter(|r| r.1)
                    .map(move |&(y, _)| (p.category as f64, y))
            })
            .collect();
        draw_capped_rings(&mut chart, &rings, BY_SETTING)?;
        if !rings.is_empty() {
            draw_legend(&mut chart, SeriesLabelPosition::LowerRight, BY_SETTING)?;
        }
        chart
            .draw_series(panel.points.iter().map(|p| {
                ErrorBar::new_vertical(
                    p.category as f64,
                    p.low,
                    p.mean,
                    p.high,
                    c.stroke_width(2),
                    10,
                )
            }))
            .map_err(draw_err(BY_SETTING))?;
        chart
            .draw_series(
                panel
                    .points
                    .iter()
                    .map(|p| Circle::new((p.category as f64, p.mean), 5, c.filled())),
            )
            .map_err(draw_err(BY_SETTING))?;
        Ok(())
    }
}

/// One bin of cases: mean |cos|, hit rate and its normal-approximation 95% interval.
struct Bin {
    cos: f64,
    rate: f64,
    half_width: f64,
}

struct CaseSeries {
    label: String,
    bins: Vec<Bin>,
}

struct CasePanel {
    title: String,
    series: Vec<CaseSeries>,
}

struct CaseFigure {
    panels: Vec<CasePanel>,
}

/// Cases per |cos| bin: the hit rate of a bin is read to about ±0.03 at 1,000 cases.
const BINS: usize = 10;

/// Per test case: hit@10 rate against |cos(X, X')| at the scored position
/// ([`crate::analysis::cases`]). One panel per domain; per setting one line through `BINS`
/// equal-count bins of its cases' |cos| (mean |cos| of the bin, hit rate with a 95% normal
/// interval), labelled with the point-biserial r of all its cases.
///
/// Columns read: `setting`, `domain` (labels), `abs_cos` (number) and `hit@10` (boolean), one
/// row per case (the [`crate::analysis::cases::case_cos_frame`]). Output name:
/// `case_cos_vs_hit`.
pub fn case_cos_vs_hit(df: &DataFrame) -> Result<Plot, PlotError> {
    let err = frame_err(CASES);
    let settings = labels(df, "setting").map_err(&err)?;
    let domains = labels(df, "domain").map_err(&err)?;
    let cos = f64s(df, "abs_cos").map_err(&err)?;
    let hit = bools(df, "hit@10").map_err(&err)?;
    let rows: Vec<(String, String, f64, bool)> = (0..df.height())
        .filter_map(|i| Some((settings[i].clone()?, domains[i].clone()?, cos[i]?, hit[i]?)))
        .collect();
    if rows.len() < BINS {
        return Err(err(FrameError::Empty(format!(
            "{} cases have setting, domain, abs_cos and hit@10 set; a figure needs {BINS}",
            rows.len()
        ))));
    }
    let mut setting_names = distinct(rows.iter().map(|r| r.0.clone()));
    setting_names.sort();
    let mut domain_names = distinct(rows.iter().map(|r| r.1.clone()));
    domain_names.sort();
    let mut panels = Vec::new();
    for d in &domain_names {
        let mut series = Vec::new();
        for s in &setting_names {
            let mut cases: Vec<(f64, bool)> = rows
                .iter()
                .filter(|r| &r.0 == s && &r.1 == d)
                .map(|r| (r.2, r.3))
                .collect();
            if cases.len() < BINS {
                continue;
            }
            let (x, y): (Vec<f64>, Vec<f64>) =
                cases.iter().map(|&(c, h)| (c, h as u8 as f64)).unzip();
            let r = crate::analysis::stats::pearson(&x, &y)
                .map(|c| format!("{:+.3}", c.r))
                .unwrap_or_else(|_| "-".into());
            cases.sort_by(|a, b| a.0.total_cmp(&b.0));
            let bins = (0..BINS)
                .map(|k| {
                    let part = &cases[k * cases.len() / BINS..(k + 1) * cases.len() / BINS];
                    let n = part.len() as f64;
                    let rate = part.iter().filter(|c| c.1).count() as f64 / n;
                    Bin {
                        cos: part.iter().map(|c| c.0).sum::<f64>() / n,
                        rate,
                        half_width: 1.959_963_984_540_054 * (rate * (1.0 - rate) / n).sqrt(),
                    }
                })
                .collect();
            series.push(CaseSeries {
                label: format!("{s} (r_pb {r}, n {})", cases.len()),
                bins,
            });
        }
        panels.push(CasePanel {
            title: format!("domain {d}"),
            series,
        });
    }
    Plot::render(&CaseFigure { panels })
}

impl Figure for CaseFigure {
    fn name(&self) -> &str {
        CASES
    }

    fn size(&self) -> (u32, u32) {
        (PANEL_W * self.panels.len() as u32, PANEL_H + 50)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        draw_panel_grid(
            root,
            CASES,
            "Hit@10 by |cos(X, X')| of the test case (equal-count bins, 95% intervals)",
            (1, self.panels.len()),
            &self.panels,
            draw_case_panel,
        )
    }
}

fn draw_case_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &CasePanel,
) -> Result<(), PlotError> {
    let bins = panel.series.iter().flat_map(|s| &s.bins);
    let Some((x_lo, x_hi)) = range(bins.clone().map(|b| b.cos)) else {
        return Ok(());
    };
    let (y_lo, y_hi) = range(bins.flat_map(|b| [b.rate - b.half_width, b.rate + b.half_width]))
        .expect("bins have rates");
    let (x0, x1) = padded(x_lo, x_hi, 0.05);
    let (y0, y1) = padded(y_lo, y_hi, 0.1);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, style::caption())
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(68)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err(CASES))?;
    chart
        .configure_mesh()
        .x_desc("|cos(X, X')| at the scored position")
        .y_desc("HR@10")
        .axis_desc_style(style::axis_label())
        .label_style(style::tick_label())
        .draw()
        .map_err(draw_err(CASES))?;
    for (k, s) in panel.series.iter().enumerate() {
        let c = color(k);
        chart
            .draw_series(s.bins.iter().map(|b| {
                ErrorBar::new_vertical(
                    b.cos,
                    b.rate - b.half_width,
                    b.rate,
                    b.rate + b.half_width,
                    c.stroke_width(1),
                    6,
                )
            }))
            .map_err(draw_err(CASES))?;
        chart
            .draw_series(LineSeries::new(
                s.bins.iter().map(|b| (b.cos, b.rate)),
                c.stroke_width(2),
            ))
            .map_err(draw_err(CASES))?;
        chart
            .draw_series(
                s.bins
                    .iter()
                    .map(|b| Circle::new((b.cos, b.rate), 4, c.filled())),
            )
            .map_err(draw_err(CASES))?
            .label(s.label.clone())
            .legend(legend_dot(c));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight, CASES)
}
