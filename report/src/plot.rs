//! The leaderboard as a picture: bits per pixel (log scale) against Dice, every trial a point
//! coloured by variant, the Pareto front as the staircase of what is attainable (the best Dice
//! at or below each rate; a straight line between two trials would promise settings nobody
//! trained), baseline codecs as curves, the bpp budget as a vertical rule. The Dice axis spans
//! the data, not 0-1, so that the front's steps are visible.

use orchestra_api::Variant;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::figure::{draw_legend, Figure};
use crate::leaderboard::Leaderboard;

/// Each variant's colour, from Okabe and Ito's palette (told apart with the common forms of
/// colour blindness); the dashboard draws with the same.
pub fn variant_rgb(v: Variant) -> (u8, u8, u8) {
    match v {
        Variant::D1 => (0, 114, 178),
        Variant::D2 => (230, 159, 0),
        Variant::D3 => (0, 158, 115),
        Variant::D4 => (204, 121, 167),
    }
}

fn colour(v: Variant) -> RGBColor {
    let (r, g, b) = variant_rgb(v);
    RGBColor(r, g, b)
}

/// The baselines' colours: the rest of Okabe and Ito's palette, black left out (the Pareto
/// front's line is black; a first baseline drawn in black could not be told from it) and a
/// grey in its place.
pub const BASELINE_RGB: [(u8, u8, u8); 4] = [(213, 94, 0), (86, 180, 233), (120, 120, 120), (240, 228, 66)];

const BASELINE_COLOURS: [RGBColor; 4] = [
    RGBColor(BASELINE_RGB[0].0, BASELINE_RGB[0].1, BASELINE_RGB[0].2),
    RGBColor(BASELINE_RGB[1].0, BASELINE_RGB[1].1, BASELINE_RGB[1].2),
    RGBColor(BASELINE_RGB[2].0, BASELINE_RGB[2].1, BASELINE_RGB[2].2),
    RGBColor(BASELINE_RGB[3].0, BASELINE_RGB[3].1, BASELINE_RGB[3].2),
];

/// The x axis: every positive rate of the trials and the baselines with room on both sides (a
/// decade at least), or 0.001-1 bpp when there is none.
pub fn bpp_range(lb: &Leaderboard) -> (f64, f64) {
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

/// The y axis: every Dice of the trials and the baselines with a tenth of their span on either
/// side (the span at least 0.05), within 0-1; 0-1 when there is none.
pub fn dice_range(lb: &Leaderboard) -> (f64, f64) {
    let dice: Vec<f64> = lb
        .entries
        .iter()
        .map(|e| e.dice)
        .chain(lb.baselines.iter().flat_map(|c| c.points.iter().map(|p| p.1)))
        .filter(|d| d.is_finite())
        .collect();
    if dice.is_empty() {
        return (0.0, 1.0);
    }
    let lo = dice.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = dice.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let pad = (hi - lo).max(0.05) / 10.0;
    ((lo - pad).max(0.0), (hi + pad).min(1.0))
}

/// The Pareto front's trials as (bpp, Dice).
pub fn front_points(lb: &Leaderboard) -> Vec<(f64, f64)> {
    lb.front
        .iter()
        .filter_map(|t| lb.entries.iter().find(|e| &e.trial == t))
        .map(|e| (e.bpp, e.dice))
        .collect()
}

/// The attainable region's edge through `front`: from each point right at its Dice until a rate
/// that buys more, then up; on to `right` at the best Dice.
pub fn staircase(front: &[(f64, f64)], right: f64) -> Vec<(f64, f64)> {
    let mut pts = front.to_vec();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(2 * pts.len() + 1);
    let mut best = f64::NEG_INFINITY;
    for (bpp, dice) in pts {
        if dice <= best {
            continue;
        }
        if let Some(&(_, last)) = out.last() {
            out.push((bpp, last));
        }
        out.push((bpp, dice));
        best = dice;
    }
    if let Some(&(bpp, dice)) = out.last() {
        if right > bpp {
            out.push((right, dice));
        }
    }
    out
}

impl Figure for Leaderboard {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        draw(self, root)
    }
}

fn draw<DB: DrawingBackend>(lb: &Leaderboard, root: DrawingArea<DB, Shift>) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let (lo, hi) = bpp_range(lb);
    let (y_lo, y_hi) = dice_range(lb);
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: rate vs accuracy", lb.experiment), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo..hi).log_scale(), y_lo..y_hi)
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
                vec![(budget, y_lo), (budget, y_hi)],
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
    let front = staircase(&front_points(lb), hi);
    if !front.is_empty() {
        chart
            .draw_series(LineSeries::new(front, BLACK.stroke_width(2)))
            .map_err(err)?
            .label("Pareto front (attainable)")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_is_a_staircase_of_what_is_attainable() {
        // Out of order, with a point that buys nothing (more bits, no more Dice).
        let front = [(0.01, 0.8), (0.002, 0.6), (0.02, 0.8), (0.005, 0.7)];
        assert_eq!(
            staircase(&front, 0.1),
            vec![
                (0.002, 0.6),
                (0.005, 0.6),
                (0.005, 0.7),
                (0.01, 0.7),
                (0.01, 0.8),
                (0.1, 0.8)
            ]
        );
        assert_eq!(staircase(&[], 1.0), vec![]);
    }

    #[test]
    fn the_dice_axis_spans_the_data() {
        let mut lb: Leaderboard = serde_json::from_value(serde_json::json!({
            "experiment": "e", "entries": [], "front": [], "hypervolume": 0.0,
            "referenceBpp": 0.1, "baselines": [{"name": "JPEG", "points": [[0.5, 0.70], [1.0, 0.74]]}]
        }))
        .unwrap();
        let (lo, hi) = dice_range(&lb);
        assert!(
            (lo - 0.695).abs() < 1e-9 && (hi - 0.745).abs() < 1e-9,
            "{lo} {hi}"
        );
        lb.baselines.clear();
        assert_eq!(dice_range(&lb), (0.0, 1.0));
    }
}
