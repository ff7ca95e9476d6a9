//! Shared look of all figures: colour palette, text sizes, number formats.
use plotters::prelude::*;
use plotters::style::TextStyle;

use super::render::FONT;

/// Okabe–Ito colour-blind-safe palette, darkest-first.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0x00, 0x9E, 0x73), // bluish green
    RGBColor(0xE6, 0x9F, 0x00), // orange
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0x56, 0xB4, 0xE9), // sky blue
    RGBColor(0x00, 0x00, 0x00), // black
];

/// The `i`-th series colour (cycles).
pub(crate) fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// The colour that marks runs stopped at a cap while still improving.
pub(crate) fn capped() -> RGBColor {
    PALETTE[1]
}

pub(crate) fn title() -> TextStyle<'static> {
    (FONT, 22).into_font().color(&BLACK)
}

pub(crate) fn caption() -> TextStyle<'static> {
    (FONT, 18).into_font().color(&BLACK)
}

pub(crate) fn axis_label() -> TextStyle<'static> {
    (FONT, 16).into_font().color(&BLACK)
}

pub(crate) fn tick_label() -> TextStyle<'static> {
    (FONT, 13).into_font().color(&BLACK)
}

pub(crate) fn legend() -> TextStyle<'static> {
    (FONT, 14).into_font().color(&BLACK)
}

/// A p-value as the papers print it: 3 significant digits, scientific below 0.001.
pub(crate) fn p_value(p: f64) -> String {
    if p < 1e-3 {
        format!("{p:.2e}")
    } else {
        format!("{p:.3}")
    }
}

/// A parameter count in millions, e.g. `2.53M`.
pub(crate) fn millions(n: f64) -> String {
    format!("{:.2}M", n / 1e6)
}

/// `[lo, hi]` widened by `frac` of its span on each side (a fixed pad when the span is zero),
/// so points never sit on the frame.
pub(crate) fn padded(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * frac
    } else {
        lo.abs().max(1e-3) * 0.1
    };
    (lo - pad, hi + pad)
}

/// Min and max of finite values; `None` when there are none.
pub(crate) fn range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p_values_switch_to_scientific_below_one_thousandth() {
        assert_eq!(p_value(0.0312), "0.031");
        assert_eq!(p_value(0.00042), "4.20e-4");
    }

    #[test]
    fn padding_widens_by_fraction_or_fixed_amount() {
        assert_eq!(padded(0.0, 10.0, 0.05), (-0.5, 10.5));
        let (lo, hi) = padded(2.0, 2.0, 0.05);
        assert!((lo - 1.8).abs() < 1e-12 && (hi - 2.2).abs() < 1e-12);
        assert_eq!(range([3.0, f64::NAN, -1.0, 2.0]), Some((-1.0, 3.0)));
        assert_eq!(range(Vec::<f64>::new()), None);
    }
}
