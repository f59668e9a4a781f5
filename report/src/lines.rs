//! Line charts of one quantity against another, one line per series (benchmarks: hypervolume
//! against compute spent), with an optional horizontal target line. SVG and PNG.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::figure::{draw_legend, Figure};

/// One line: a name and its (x, y) points in order of x.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub series: &'a [Series],
    /// A labelled horizontal rule (a target level).
    pub target: Option<(&'a str, f64)>,
    /// The y axis spans the data (differences of a few hundredths visible) instead of
    /// starting at zero.
    pub zoom: bool,
}

const COLOURS: [RGBColor; 10] = [
    RGBColor(117, 117, 117),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

impl Figure for LineChart<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        draw(self, root)
    }
}

/// The y axis: from zero to a little above the highest value, or (zoomed) around the values.
fn y_range(ys: Vec<f64>, zoom: bool) -> (f64, f64) {
    let hi = ys.iter().copied().fold(0.0f64, f64::max).max(1e-9);
    if !zoom {
        return (0.0, hi * 1.08);
    }
    let lo = ys.iter().copied().fold(hi, f64::min);
    let pad = ((hi - lo) * 0.08).max(1e-6);
    ((lo - pad).max(0.0), hi + pad)
}

fn draw<DB: DrawingBackend>(c: &LineChart, root: DrawingArea<DB, Shift>) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let xs = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(c.target.map(|t| t.1));
    let x_hi = xs.fold(0.0f64, f64::max).max(1e-9) * 1.02;
    let (y_lo, y_hi) = y_range(ys.collect(), c.zoom);
    let mut chart = ChartBuilder::on(&root)
        .caption(c.title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_hi, y_lo..y_hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(c.x_desc)
        .y_desc(c.y_desc)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    if let Some((label, y)) = c.target {
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, y), (x_hi, y)],
                BLACK.mix(0.4).stroke_width(1),
            ))
            .map_err(err)?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.4)));
    }
    for (i, s) in c.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(s.points.clone(), colour.stroke_width(2)))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    draw_legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
}
