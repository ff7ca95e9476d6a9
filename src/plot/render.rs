//! One drawing, two formats: renders a [`Figure`] to SVG text and to an RGB bitmap, writes
//! both atomically, and shows the SVG inline in evcxr.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::PlotError;
use crate::runs::write_atomic;

/// DejaVu Sans (Bitstream Vera licence, `assets/fonts/DejaVuSans-LICENSE.txt`).
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The font family name every figure asks for; the embedded font is registered under it.
pub(crate) const FONT: &str = "sans-serif";

/// Registers the embedded DejaVu Sans as plotters' `sans-serif` family (all styles fall back
/// to it). Idempotent and cheap after the first call; every render calls it, so callers never
/// need to.
pub fn register_font() {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // The bytes are a fixed, valid TrueType file compiled into the binary; a failure here
        // is a build defect, caught by every plot test.
        if plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_err() {
            panic!("embedded DejaVuSans.ttf is not a valid font");
        }
    });
}

/// A figure that knows how to draw itself on any plotters backend.
///
/// Implementors hold data already extracted from DataFrames (and statistics already computed),
/// so drawing twice — once per format — gives identical pictures.
pub trait Figure {
    /// File stem of the outputs (`NAME.png`, `NAME.svg`).
    fn name(&self) -> &str;
    /// Width and height in pixels (the SVG uses the same user units).
    fn size(&self) -> (u32, u32);
    /// Draws the whole figure on `root` (already filled white).
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>;
}

/// A rendered figure: SVG text and an RGB bitmap of the same drawing.
#[derive(Clone)]
pub struct Plot {
    name: String,
    svg: String,
    png: image::RgbImage,
}

impl std::fmt::Debug for Plot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plot")
            .field("name", &self.name)
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

/// Converts any plotters drawing error into a [`PlotError::Draw`] for `figure`.
pub(crate) fn draw_err<E: std::fmt::Debug>(figure: &str) -> impl FnOnce(E) -> PlotError + '_ {
    move |e| PlotError::Draw {
        figure: figure.to_string(),
        message: format!("{e:?}"),
    }
}

impl Plot {
    /// Draws `fig` into both formats.
    pub fn render<F: Figure>(fig: &F) -> Result<Plot, PlotError> {
        register_font();
        let (w, h) = fig.size();
        let name = fig.name().to_string();

        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err(&name))?;
            fig.draw(&root)?;
            root.present().map_err(draw_err(&name))?;
        }

        let mut pixels = vec![0u8; w as usize * h as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err(&name))?;
            fig.draw(&root)?;
            root.present().map_err(draw_err(&name))?;
        }
        let png = image::RgbImage::from_raw(w, h, pixels).ok_or_else(|| PlotError::Draw {
            figure: name.clone(),
            message: "bitmap buffer has the wrong length".into(),
        })?;
        Ok(Plot { name, svg, png })
    }

    /// File stem of the outputs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Width and height in pixels.
    pub fn size(&self) -> (u32, u32) {
        self.png.dimensions()
    }

    /// The SVG document.
    pub fn svg(&self) -> &str {
        &self.svg
    }

    /// The bitmap (what [`Plot::save`] encodes as PNG).
    pub fn bitmap(&self) -> &image::RgbImage {
        &self.png
    }

    /// The bitmap encoded as PNG.
    pub fn png_bytes(&self) -> Result<Vec<u8>, PlotError> {
        let mut out = std::io::Cursor::new(Vec::new());
        self.png
            .write_to(&mut out, image::ImageFormat::Png)
            .map_err(|e| PlotError::Draw {
                figure: self.name.clone(),
                message: format!("PNG encoding: {e}"),
            })?;
        Ok(out.into_inner())
    }

    /// Writes `dir/NAME.png` and `dir/NAME.svg` (creating `dir`), each through a temporary
    /// file and a rename. Returns the two paths, PNG first.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<[PathBuf; 2], PlotError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| PlotError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let png_path = dir.join(format!("{}.png", self.name));
        let svg_path = dir.join(format!("{}.svg", self.name));
        write_atomic(&png_path, &self.png_bytes()?)?;
        write_atomic(&svg_path, self.svg.as_bytes())?;
        Ok([png_path, svg_path])
    }

    /// evcxr's rich display hook: a cell ending in a `Plot` shows the SVG inline.
    pub fn evcxr_display(&self) {
        println!("{}", self.evcxr_content());
    }

    /// The exact text [`Plot::evcxr_display`] prints (evcxr's content protocol).
    pub fn evcxr_content(&self) -> String {
        format!(
            "EVCXR_BEGIN_CONTENT image/svg+xml\n{}\nEVCXR_END_CONTENT",
            self.svg.trim_end()
        )
    }
}
