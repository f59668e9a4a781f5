//! What every chart of this crate shares: the embedded font, the legend's style, and writing one
//! drawing as both SVG and PNG at the same size. A chart only says how it draws itself.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// Pixels of every written chart.
const SIZE: (u32, u32) = (900, 600);

/// A chart that can draw itself on any plotters backend.
pub trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static;
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bundled DejaVu Sans is a valid font; failure would only lose text in PNGs.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Writes `<stem>.svg` and `<stem>.png` (the font is embedded, so PNGs render the same on
/// machines without system fonts); the two paths, or the file that failed and why.
pub fn write_figure(figure: &impl Figure, stem: &Path) -> Result<(PathBuf, PathBuf), String> {
    register_font();
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    figure
        .draw(SVGBackend::new(&svg, SIZE).into_drawing_area())
        .map_err(|e| format!("{}: {e}", svg.display()))?;
    figure
        .draw(BitMapBackend::new(&png, SIZE).into_drawing_area())
        .map_err(|e| format!("{}: {e}", png.display()))?;
    Ok((svg, png))
}

/// The legend of the series drawn so far, in the charts' common style, lower right.
pub(crate) fn draw_legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: plotters::coord::CoordTranslate,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| e.to_string())
}
