//! The dashboard's charts, drawn on the server as SVG: the front (every finished trial a point
//! shaped and coloured by variant, the attainable staircase, the budget rule, the hypervolume's
//! reference point, the codecs' curves) and a trial's curves (Dice, bpp and losses over steps
//! on one x axis, the rungs marked). Points carry their trial's name; the page's script shows
//! the trial's row on hover and opens the trial on a click.

use std::fmt::Write;

use orchestra_api::Variant;
use orchestra_report::plot::{bpp_range, dice_range, front_points, staircase, variant_rgb, BASELINE_RGB};

use super::view::TrialPage;
use crate::leaderboard::Leaderboard;

const W: f64 = 720.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;

/// A linear or logarithmic map from data to pixels.
#[derive(Clone, Copy, Debug)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    from: f64,
    to: f64,
}

impl Axis {
    fn at(&self, v: f64) -> f64 {
        let f = |x: f64| if self.log { x.max(1e-12).log10() } else { x };
        let t = (f(v) - f(self.lo)) / (f(self.hi) - f(self.lo)).max(1e-12);
        self.from + t * (self.to - self.from)
    }

    /// Round values inside the axis: 1-2-5 steps, or the powers of ten and their 2 and 5
    /// multiples on a log axis.
    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut out = Vec::new();
            let mut decade = 10f64.powi(self.lo.max(1e-12).log10().floor() as i32);
            while decade <= self.hi {
                for m in [1.0, 2.0, 5.0] {
                    let v = decade * m;
                    if v >= self.lo && v <= self.hi {
                        out.push(v);
                    }
                }
                decade *= 10.0;
            }
            return out;
        }
        let span = (self.hi - self.lo).max(1e-12);
        let raw = span / 6.0;
        let mag = 10f64.powi(raw.log10().floor() as i32);
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * mag);
        let mut v = (self.lo / step).ceil() * step;
        let mut out = Vec::new();
        while v <= self.hi + step * 1e-9 {
            out.push(v);
            v += step;
        }
        out
    }
}

impl Axis {
    /// The ticks with their labels: on a linear axis with as many decimals as the step needs, so
    /// that neighbours never read the same.
    fn labelled_ticks(&self) -> Vec<(f64, String)> {
        let ticks = self.ticks();
        if self.log || ticks.len() < 2 {
            return ticks.into_iter().map(|t| (t, label(t))).collect();
        }
        let step = ticks[1] - ticks[0];
        let decimals = (-(step.log10().floor())).max(0.0) as usize;
        ticks
            .into_iter()
            .map(|t| {
                let s = format!("{t:.decimals$}");
                (
                    t,
                    if s.starts_with("-0") && t.abs() < step / 2.0 {
                        "0".into()
                    } else {
                        s
                    },
                )
            })
            .collect()
    }
}

/// A number as a tick label: as few digits as tell it apart.
fn label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-4..1e5).contains(&a) {
        return format!("{v:.0e}");
    }
    let digits = (-(a.log10().floor()) as i32 + 1).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

pub fn variant_colour(v: Variant) -> String {
    let (r, g, b) = variant_rgb(v);
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// The marker shapes, one per variant (the shape says what the colour says).
fn markers() -> String {
    let mut s = String::from("<defs>");
    for (v, shape) in [
        (Variant::D1, "<circle r=\"4.5\"/>".to_string()),
        (
            Variant::D2,
            "<rect x=\"-4\" y=\"-4\" width=\"8\" height=\"8\"/>".to_string(),
        ),
        (Variant::D3, "<path d=\"M0,-5.5L5,4H-5Z\"/>".to_string()),
        (
            Variant::D4,
            "<path d=\"M0,-5.5L5.5,0L0,5.5L-5.5,0Z\"/>".to_string(),
        ),
    ] {
        let _ = write!(
            s,
            "<g id=\"m-{v}\" fill=\"{c}\" stroke=\"#222\" stroke-width=\".6\">{shape}</g>",
            c = variant_colour(v)
        );
    }
    s.push_str("</defs>");
    s
}

fn frame(s: &mut String, x: &Axis, y: &Axis, x_title: &str, y_title: &str, bottom_labels: bool) {
    let (top, bottom) = (y.to, y.from);
    for (t, text) in y.labelled_ticks() {
        let py = y.at(t);
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{py:.1}\" y2=\"{py:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            text
        );
    }
    for (t, text) in x.labelled_ticks() {
        let px = x.at(t);
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{top:.1}\" y2=\"{bottom:.1}\"/>"
        );
        if bottom_labels {
            let _ = write!(
                s,
                "<text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                bottom + 16.0,
                text
            );
        }
    }
    let _ = write!(
        s,
        "<rect class=\"axes\" x=\"{LEFT}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\"/>",
        W - RIGHT - LEFT,
        bottom - top
    );
    if bottom_labels {
        let _ = write!(
            s,
            "<text class=\"title\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{x_title}</text>",
            (LEFT + W - RIGHT) / 2.0,
            bottom + 34.0
        );
    }
    let _ = write!(
        s,
        "<text class=\"title\" transform=\"translate(14,{:.1}) rotate(-90)\" text-anchor=\"middle\">{y_title}</text>",
        (top + bottom) / 2.0
    );
}

/// The front: the published leaderboard's trials (finished ones filled, those the search
/// stopped early hollow, at the scores of the rung they reached), drawn on a log or linear bpp
/// axis.
pub fn front(lb: &Leaderboard, log_x: bool) -> String {
    let h = 420.0;
    let (x, y) = front_axes(lb, log_x, h);
    let mut s = format!(
        "<svg class=\"chart front\" viewBox=\"0 0 {W} {h}\" role=\"img\" aria-labelledby=\"front-title\"><title id=\"front-title\">Dice against bits per pixel for {} finished trials; the front is the staircase of what is attainable</title>{}",
        lb.entries.len(),
        markers()
    );
    frame(
        &mut s,
        &x,
        &y,
        if log_x {
            "bits per pixel, real bitstream (log scale)"
        } else {
            "bits per pixel, real bitstream"
        },
        "Dice, held-out",
        true,
    );
    for (i, c) in lb.baselines.iter().enumerate() {
        let (r, g, b) = BASELINE_RGB[i % BASELINE_RGB.len()];
        let pts: Vec<String> = c
            .points
            .iter()
            .filter(|p| p.0 > 0.0 || !log_x)
            .map(|p| format!("{:.1},{:.1}", x.at(p.0), y.at(p.1.clamp(y.lo, y.hi))))
            .collect();
        let _ = write!(
            s,
            "<polyline class=\"baseline\" stroke=\"#{r:02x}{g:02x}{b:02x}\" points=\"{}\"><title>{} (codec baseline)</title></polyline>",
            pts.join(" "),
            html_escape(&c.name)
        );
    }
    let stair = staircase(&front_points(lb), x.hi);
    if !stair.is_empty() {
        let pts: Vec<String> = stair
            .iter()
            .map(|p| format!("{:.1},{:.1}", x.at(p.0), y.at(p.1)))
            .collect();
        let _ = write!(s, "<polyline class=\"staircase\" points=\"{}\"/>", pts.join(" "));
    }
    rules(&mut s, lb, &x, &y);
    points(&mut s, lb, &x, &y);
    s.push_str("</svg>");
    s
}

/// The front's axes: every trial's rate and Dice (those stopped early too) and the reference
/// point inside; bpp from 0 on a linear axis.
fn front_axes(lb: &Leaderboard, log_x: bool, h: f64) -> (Axis, Axis) {
    let (mut x_lo, mut x_hi) = bpp_range(lb);
    x_hi = x_hi.max(lb.reference_bpp * 1.05);
    for b in lb.stopped.iter().map(|s| s.bpp).filter(|b| *b > 0.0) {
        x_lo = x_lo.min(b / 2.0);
        x_hi = x_hi.max(b * 2.0);
    }
    if !log_x {
        x_lo = 0.0;
    }
    let (mut y_lo, mut y_hi) = dice_range(lb);
    for s in &lb.stopped {
        y_lo = y_lo.min((s.dice - 0.02).max(0.0));
        y_hi = y_hi.max((s.dice + 0.02).min(1.0));
    }
    let x = Axis {
        lo: x_lo,
        hi: x_hi,
        log: log_x,
        from: LEFT,
        to: W - RIGHT,
    };
    let y = Axis {
        lo: y_lo,
        hi: y_hi,
        log: false,
        from: h - 48.0,
        to: 12.0,
    };
    (x, y)
}

/// The budget's rule and the hypervolume's reference point.
fn rules(s: &mut String, lb: &Leaderboard, x: &Axis, y: &Axis) {
    if let Some(budget) = lb.bpp_budget.filter(|b| *b >= x.lo && *b <= x.hi) {
        let px = x.at(budget);
        let _ = write!(
            s,
            "<line class=\"budget\" x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/><text class=\"note\" x=\"{:.1}\" y=\"24\">budget {}</text>",
            y.to,
            y.from,
            px + 4.0,
            label(budget)
        );
    }
    let rx = x.at(lb.reference_bpp);
    let _ = write!(
        s,
        "<path class=\"reference\" d=\"M{rx:.1},{:.1}l-5,9h10z\"><title>hypervolume reference: {} bpp, Dice 0</title></path><text class=\"note\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">reference</text>",
        y.from,
        label(lb.reference_bpp),
        rx - 6.0,
        y.from - 4.0
    );
}

/// Every trial's point: those stopped early hollow, the front's as links the keyboard reaches.
fn points(s: &mut String, lb: &Leaderboard, x: &Axis, y: &Axis) {
    for st in &lb.stopped {
        let _ = write!(
            s,
            "<use class=\"stopped\" href=\"#m-{}\" x=\"{:.1}\" y=\"{:.1}\" data-t=\"{}\"/>",
            st.variant,
            x.at(st.bpp.max(x.lo)),
            y.at(st.dice),
            html_escape(&st.trial)
        );
    }
    for e in &lb.entries {
        let (px, py) = (x.at(e.bpp.max(x.lo)), y.at(e.dice));
        let point = format!(
            "<use href=\"#m-{}\" x=\"{px:.1}\" y=\"{py:.1}\" data-t=\"{}\"/>",
            e.variant,
            html_escape(&e.trial)
        );
        if e.on_front {
            // Named for screen readers.
            let _ = write!(
                s,
                "<a href=\"trials/{t}/\" aria-label=\"{t}, {v}, on the front: Dice {:.4} at {} bpp\">{point}</a>",
                e.dice,
                label(e.bpp),
                t = html_escape(&e.trial),
                v = e.variant
            );
        } else {
            s.push_str(&point);
        }
    }
}

/// A named line in a colour.
type Series<'a> = (&'a str, &'a str, &'a [(f64, f64)]);

/// A trial's curves: Dice and IoU, bpp, and the losses, one chart each on the same steps.
pub fn curves(page: &TrialPage) -> String {
    let steps = page.steps.max(1) as f64;
    let panel = 150.0;
    let gap = 22.0;
    let h = 3.0 * (panel + gap) + 40.0;
    let mut s = format!(
        "<svg class=\"chart curves\" viewBox=\"0 0 {W} {h:.0}\" role=\"img\" aria-labelledby=\"curves-title\"><title id=\"curves-title\">{}: Dice, bits per pixel and losses against training step; dashed verticals are the rungs</title>",
        html_escape(&page.row.name)
    );
    let evals = &page.evals;
    let dice: Vec<(f64, f64)> = evals.iter().map(|e| (e.step as f64, e.dice)).collect();
    let iou: Vec<(f64, f64)> = evals.iter().map(|e| (e.step as f64, e.iou)).collect();
    let bpp: Vec<(f64, f64)> = evals
        .iter()
        .filter_map(|e| Some((e.step as f64, e.bpp?)))
        .collect();
    let thin = |f: &dyn Fn(&super::view::StepLine) -> Option<f64>| thin_out(&page.losses, f, 360);
    let seg = thin(&|l| Some(l.loss_seg));
    let rate = thin(&|l| l.loss_rate);
    let dis = thin(&|l| l.loss_dis);
    let panels: [(&str, Vec<Series>); 3] = [
        (
            "Dice / IoU",
            vec![("Dice", "#0072b2", &dice), ("IoU", "#56b4e9", &iou)],
        ),
        ("bpp", vec![("bpp (real bitstream)", "#d55e00", &bpp)]),
        (
            "loss",
            vec![
                ("segmentation", "#000000", &seg),
                ("rate", "#d55e00", &rate),
                ("critic", "#cc79a7", &dis),
            ],
        ),
    ];
    for (i, (title, series)) in panels.iter().enumerate() {
        let top = 10.0 + i as f64 * (panel + gap);
        let values: Vec<f64> = series
            .iter()
            .flat_map(|(_, _, p)| p.iter().map(|q| q.1))
            .collect();
        let (lo, hi) = span(&values);
        let x = Axis {
            lo: 0.0,
            hi: steps,
            log: false,
            from: LEFT,
            to: W - RIGHT,
        };
        let y = Axis {
            lo,
            hi,
            log: false,
            from: top + panel,
            to: top,
        };
        frame(&mut s, &x, &y, "training step", title, i == 2);
        for r in &page.rung_steps {
            let px = x.at(*r as f64);
            let _ = write!(
                s,
                "<line class=\"rung\" x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{top:.1}\" y2=\"{:.1}\"><title>rung at step {r}</title></line>",
                top + panel
            );
        }
        lines(&mut s, series, &x, &y, top);
        if series.iter().all(|(_, _, p)| p.is_empty()) {
            let _ = write!(
                s,
                "<text class=\"note\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">nothing recorded yet</text>",
                (LEFT + W - RIGHT) / 2.0,
                top + panel / 2.0
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// A panel's lines, their evaluations as points (when few enough to tell apart) and a legend.
fn lines(s: &mut String, series: &[Series], x: &Axis, y: &Axis, top: f64) {
    let mut legend_x = LEFT + 8.0;
    for &(name, colour, pts) in series {
        if pts.is_empty() {
            continue;
        }
        let line: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", x.at(p.0), y.at(p.1)))
            .collect();
        let _ = write!(
            s,
            "<polyline class=\"series\" stroke=\"{colour}\" points=\"{}\"/>",
            line.join(" ")
        );
        if pts.len() <= 40 {
            for p in pts.iter() {
                let _ = write!(
                    s,
                    "<circle class=\"dot\" fill=\"{colour}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\"><title>{name} {} at step {}</title></circle>",
                    x.at(p.0),
                    y.at(p.1),
                    label4(p.1),
                    p.0
                );
            }
        }
        let _ = write!(
            s,
            "<text class=\"legend\" x=\"{legend_x:.1}\" y=\"{:.1}\" fill=\"{colour}\">— {name}</text>",
            top + 14.0
        );
        legend_x += 9.0 * name.len() as f64 + 30.0;
    }
}

fn label4(v: f64) -> String {
    if v.abs() < 0.01 {
        format!("{v:.5}")
    } else {
        format!("{v:.4}")
    }
}

/// The values' range with a little room, or 0-1 with none.
fn span(values: &[f64]) -> (f64, f64) {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return (0.0, 1.0);
    }
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.1).max(1e-9);
    (
        (lo - pad).max(if lo >= 0.0 { 0.0 } else { f64::NEG_INFINITY }),
        hi + pad,
    )
}

/// A step series thinned to at most `most` points, each the mean of its bucket (a curve of a
/// hundred thousand steps stays a few kB).
fn thin_out(
    lines: &[super::view::StepLine],
    value: &dyn Fn(&super::view::StepLine) -> Option<f64>,
    most: usize,
) -> Vec<(f64, f64)> {
    let pts: Vec<(f64, f64)> = lines
        .iter()
        .filter_map(|l| value(l).filter(|v| v.is_finite()).map(|v| (l.step as f64, v)))
        .collect();
    if pts.len() <= most {
        return pts;
    }
    let per = pts.len().div_ceil(most);
    pts.chunks(per)
        .map(|c| {
            let n = c.len() as f64;
            (
                c.iter().map(|p| p.0).sum::<f64>() / n,
                c.iter().map(|p| p.1).sum::<f64>() / n,
            )
        })
        .collect()
}

/// Text made safe for HTML and SVG.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_axis() {
        let a = Axis {
            lo: 0.62,
            hi: 0.91,
            log: false,
            from: 0.0,
            to: 1.0,
        };
        let t = a.ticks();
        assert!(t.len() >= 3 && t.len() <= 8, "{t:?}");
        assert!(t.iter().all(|v| *v >= 0.62 && *v <= 0.91 + 1e-9), "{t:?}");
        assert_eq!(label(t[0]), "0.65");
        let l = Axis {
            lo: 0.0015,
            hi: 0.3,
            log: true,
            from: 0.0,
            to: 1.0,
        };
        let labels: Vec<String> = l.ticks().into_iter().map(label).collect();
        assert_eq!(labels, ["0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.2"]);
        assert!((l.at(0.0015) - 0.0).abs() < 1e-9 && (l.at(0.3) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn long_curves_are_thinned_to_bucket_means() {
        let lines: Vec<super::super::view::StepLine> = (1..=1000)
            .map(|i| super::super::view::StepLine {
                step: i,
                loss_seg: i as f64,
                loss_dis: None,
                loss_rate: None,
                lr: None,
            })
            .collect();
        let pts = thin_out(&lines, &|l| Some(l.loss_seg), 100);
        assert_eq!(pts.len(), 100);
        assert_eq!(pts[0], (5.5, 5.5));
        assert!(thin_out(&lines, &|l| l.loss_dis, 100).is_empty());
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
