//! The leaderboard as a picture: bits per pixel (log scale) against Dice, every trial a point
//! coloured by variant, the Pareto front as a line, baseline codecs as curves, the bpp budget as
//! a vertical rule. Written as SVG and PNG (the font is embedded, so PNGs render the same on
//! machines without system fonts).

use std::path::Path;
use std::sync::Once;

use orchestra_api::Variant;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::leaderboard::Leaderboard;

fn colour(v: Variant) -> RGBColor {
    match v {
        Variant::D1 => RGBColor(117, 117, 117),
        Variant::D2 => RGBColor(31, 119, 180),
        Variant::D3 => RGBColor(44, 160, 44),
        Variant::D4 => RGBColor(214, 39, 40),
    }
}

const BASELINE_COLOURS: [RGBColor; 4] = [
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bundled DejaVu Sans is a valid font; failure would only lose text in PNGs.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// The x axis: every positive rate of the trials and the baselines with room on both sides (a
/// decade at least), or 0.001-1 bpp when there is none.
fn bpp_range(lb: &Leaderboard) -> (f64, f64) {
    let bpps: Vec<f64> = lb
        .entries
        .iter()
        .map(|e| e.bpp)
        .chain(lb.baselines.iter().flat_map(|c| c.points.iter().map(|p| p.0)))
        .filter(|b| *b > 0.0 && b.is_finite())
        .collect();
    if bpps.is_empty() {
        return (1e-3, 1.0);
    }
    let lo = bpps.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = bpps.iter().cloned().fold(0.0, f64::max);
    (lo / 2.0, (hi * 2.0).max(lo * 10.0))
}

/// The Pareto front's trials as (bpp, Dice), in the front's order.
fn front_points(lb: &Leaderboard) -> Vec<(f64, f64)> {
    lb.front
        .iter()
        .filter_map(|t| lb.entries.iter().find(|e| &e.trial == t))
        .map(|e| (e.bpp, e.dice))
        .collect()
}

fn draw<DB: DrawingBackend>(
    lb: &Leaderboard,
    root: DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let (lo, hi) = bpp_range(lb);
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: rate vs accuracy", lb.experiment), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("bits per pixel (log scale)")
        .y_desc("Dice (held-out)")
        .x_label_formatter(&|x| format!("{x:.3}"))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;

    if let Some(budget) = lb.bpp_budget {
        chart
            .draw_series(LineSeries::new(
                vec![(budget, 0.0), (budget, 1.0)],
                BLACK.mix(0.3).stroke_width(1),
            ))
            .map_err(err)?
            .label(format!("budget {budget} bpp"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.3)));
    }
    for (i, curve) in lb.baselines.iter().enumerate() {
        let c = BASELINE_COLOURS[i % BASELINE_COLOURS.len()];
        chart
            .draw_series(LineSeries::new(curve.points.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(curve.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
        chart
            .draw_series(curve.points.iter().map(|p| Cross::new(*p, 4, c)))
            .map_err(err)?;
    }
    let front = front_points(lb);
    if front.len() > 1 {
        chart
            .draw_series(LineSeries::new(front, BLACK.stroke_width(2)))
            .map_err(err)?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(2)));
    }
    for v in Variant::ALL {
        let pts: Vec<(f64, f64)> = lb
            .entries
            .iter()
            .filter(|e| e.variant == v)
            .map(|e| (e.bpp, e.dice))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let c = colour(v);
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 5, c.filled())))
            .map_err(err)?
            .label(v.to_string())
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, c.filled()));
    }
    draw_legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
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

/// Writes `<stem>.svg` and `<stem>.png`.
pub fn write_plots(
    lb: &Leaderboard,
    stem: &Path,
) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    register_font();
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    draw(lb, SVGBackend::new(&svg, (900, 600)).into_drawing_area())
        .map_err(|e| format!("{}: {e}", svg.display()))?;
    draw(lb, BitMapBackend::new(&png, (900, 600)).into_drawing_area())
        .map_err(|e| format!("{}: {e}", png.display()))?;
    Ok((svg, png))
}
