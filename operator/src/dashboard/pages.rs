//! The dashboard's pages as HTML: the Experiments, one Experiment (front, trials, search,
//! conditions), one trial (curves, scores, checkpoints, how to reproduce it). Real tables with
//! headers, links and buttons the keyboard reaches, and text beside every colour.

use std::collections::BTreeMap;
use std::fmt::Write;

use orchestra_api::TrialPhase;

use super::charts::{self, html_escape as esc, variant_colour};
use super::view::{by_phase, EventView, ExperimentList, ExperimentView, TrialPage, TrialView};

/// Numbers as every page shows them (the browser test reads them back this way).
pub fn dice(v: f64) -> String {
    format!("{v:.4}")
}

pub fn bpp(v: f64) -> String {
    format!("{v:.5}")
}

fn opt(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map_or_else(|| "—".to_string(), f)
}

/// Seconds as "1 h 02 min", "3 min 05 s" or "42 s".
pub fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

fn phase_word(p: TrialPhase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| format!("{p:?}"))
}

/// A whole page around `main` (or `main` alone, for a live update).
pub fn page(
    title: &str,
    crumbs: &[(&str, Option<String>)],
    main: &str,
    version: u64,
    source: &str,
) -> String {
    let mut nav = String::new();
    for (i, (text, href)) in crumbs.iter().enumerate() {
        if i > 0 {
            nav.push_str(" <span aria-hidden=\"true\">›</span> ");
        }
        match href {
            Some(h) => {
                let _ = write!(nav, "<a href=\"{}\">{}</a>", esc(h), esc(text));
            }
            None => {
                let _ = write!(nav, "<span aria-current=\"page\">{}</span>", esc(text));
            }
        }
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{} · Orchestra</title><link rel=\"stylesheet\" href=\"/assets/dashboard.css\"><script src=\"/assets/dashboard.js\" defer></script></head><body><header><nav aria-label=\"Breadcrumb\">{nav}</nav><span id=\"live\" role=\"status\" aria-live=\"polite\">live</span></header><main id=\"main\" data-version=\"{version}\">{main}</main><footer>Orchestra dashboard · {}</footer><div id=\"tip\" role=\"tooltip\" hidden></div></body></html>",
        esc(title),
        esc(source)
    )
}

/// The Experiments: name, phase, trials by phase, progress, best under the budget, the front's
/// hypervolume and age; filtered by namespace and phase.
pub fn experiments(
    list: &ExperimentList,
    namespace: Option<&str>,
    phase: Option<&str>,
    now_ms: i64,
) -> String {
    let views = &list.views;
    let mut s = String::from("<h1>Experiments</h1>");
    problems(&mut s, &list.problems);
    s.push_str(&filters(views, namespace, phase));
    let shown: Vec<&ExperimentView> = views
        .iter()
        .filter(|v| namespace.is_none_or(|n| n.is_empty() || v.namespace == n))
        .filter(|v| phase.is_none_or(|p| p.is_empty() || v.phase == p))
        .collect();
    if shown.is_empty() {
        s.push_str("<p>No Experiments here yet. Start one with <code>orchestra run experiments/quickstart.yaml</code> or <code>kubectl apply -f</code> an Experiment.</p>");
        return s;
    }
    s.push_str("<table id=\"experiments\" class=\"sortable\"><caption>Experiments and their best trials</caption><thead><tr><th scope=\"col\">Experiment</th><th scope=\"col\">Namespace</th><th scope=\"col\">Phase</th><th scope=\"col\">Trials by phase</th><th scope=\"col\">Progress</th><th scope=\"col\">Best under the budget</th><th scope=\"col\">Hypervolume</th><th scope=\"col\">Age</th></tr></thead><tbody>");
    for v in shown {
        let finished = v
            .trials
            .iter()
            .filter(|t| {
                matches!(
                    t.phase,
                    TrialPhase::Succeeded | TrialPhase::Failed | TrialPhase::Stopped
                )
            })
            .count();
        let counts: Vec<String> = by_phase(&v.trials)
            .iter()
            .map(|(p, n)| format!("{n} {}", phase_word(*p).to_lowercase()))
            .collect();
        let best = v.leaderboard.as_ref().and_then(|lb| {
            let w = lb.winner.as_ref()?;
            let e = lb.entries.iter().find(|e| &e.trial == w)?;
            Some(format!(
                "<a href=\"{}trials/{t}/\">{t}</a>: Dice {} at {} bpp",
                experiment_href(v),
                dice(e.dice),
                bpp(e.bpp),
                t = esc(&e.trial)
            ))
        });
        let hv = v
            .leaderboard
            .as_ref()
            .filter(|lb| !lb.entries.is_empty())
            .map(|lb| format!("{:.5}", lb.hypervolume));
        let age = v
            .created_ms
            .map(|c| duration(((now_ms - c) as f64 / 1000.0).max(0.0)))
            .unwrap_or_else(|| "—".into());
        let _ = write!(
            s,
            "<tr data-ns=\"{ns}\" data-p=\"{p}\"><th scope=\"row\"><a href=\"{href}\">{name}</a></th><td>{ns}</td><td><span class=\"phase {p}\">{p}</span></td><td>{counts}</td><td><progress max=\"{total}\" value=\"{finished}\"></progress> {finished}/{total}</td><td>{best}</td><td>{hv}</td><td>{age}</td></tr>",
            ns = esc(&v.namespace),
            p = esc(&v.phase),
            href = experiment_href(v),
            name = esc(&v.name),
            counts = if counts.is_empty() { "none yet".to_string() } else { counts.join(" · ") },
            total = v.total,
            best = best.unwrap_or_else(|| "—".into()),
            hv = hv.unwrap_or_else(|| "—".into()),
        );
    }
    s.push_str("</tbody></table>");
    s
}

/// The list's filters, as a form that works without the script (which submits it on a change).
fn filters(views: &[ExperimentView], namespace: Option<&str>, phase: Option<&str>) -> String {
    let mut out = String::new();
    let namespaces: std::collections::BTreeSet<&str> = views.iter().map(|v| v.namespace.as_str()).collect();
    let phases: std::collections::BTreeSet<&str> = views.iter().map(|v| v.phase.as_str()).collect();
    out.push_str("<form class=\"filters\" method=\"get\"><label>Namespace <select name=\"namespace\" data-autosubmit><option value=\"\">all</option>");
    for n in &namespaces {
        let sel = if Some(*n) == namespace { " selected" } else { "" };
        let _ = write!(out, "<option{sel}>{}</option>", esc(n));
    }
    out.push_str("</select></label> <label>Phase <select name=\"phase\" data-autosubmit><option value=\"\">all</option>");
    for p in &phases {
        let sel = if Some(*p) == phase { " selected" } else { "" };
        let _ = write!(out, "<option{sel}>{}</option>", esc(p));
    }
    out.push_str("</select></label> <button type=\"submit\">Filter</button></form>");
    out
}

pub fn experiment_href(v: &ExperimentView) -> String {
    format!("/ns/{}/experiments/{}/", esc(&v.namespace), esc(&v.name))
}

/// One Experiment: its state, the front, the trial table, the search's rungs, conditions and
/// events.
pub fn experiment(v: &ExperimentView, log_x: bool) -> String {
    let mut s = format!(
        "<h1>{} <span class=\"phase {p}\">{p}</span></h1><p class=\"lead\">{}</p>",
        esc(&v.name),
        esc(v.message.as_deref().unwrap_or("")),
        p = esc(&v.phase)
    );
    if let Some(src) = &v.phase_source {
        let _ = write!(s, "<p class=\"note\">{}</p>", esc(src));
    }
    problems(&mut s, &v.problems);
    s.push_str("<section aria-labelledby=\"h-front\"><h2 id=\"h-front\">Rate against accuracy</h2>");
    match &v.leaderboard {
        Some(lb) if !lb.entries.is_empty() || !lb.stopped.is_empty() => {
            let _ = write!(
                s,
                "<p><a class=\"toggle\" href=\"?x={}\">{}</a></p>",
                if log_x { "linear" } else { "log" },
                if log_x {
                    "Show bpp on a linear axis"
                } else {
                    "Show bpp on a log axis"
                }
            );
            s.push_str(&charts::front(lb, log_x));
            s.push_str(&legend());
            let winner = lb
                .winner
                .as_ref()
                .and_then(|w| lb.entries.iter().find(|e| &e.trial == w));
            let _ = write!(
                s,
                "<p id=\"summary\">Best under the budget ({}): {}. Front: {} trials. Hypervolume <span id=\"hypervolume\">{:.5}</span> (reference {} bpp, Dice 0).</p>",
                lb.bpp_budget.map_or("none set".to_string(), |b| format!("{} bpp", bpp(b))),
                winner.map_or("none".to_string(), |e| format!(
                    "<a href=\"trials/{t}/\">{t}</a>, Dice {} at {} bpp",
                    dice(e.dice),
                    bpp(e.bpp),
                    t = esc(&e.trial)
                )),
                lb.front.len(),
                lb.hypervolume,
                bpp(lb.reference_bpp)
            );
        }
        _ => s.push_str("<p>No trial has finished yet: the front appears with the first result.</p>"),
    }
    s.push_str("</section>");
    trial_table(&mut s, &v.trials);
    rung_ladder(&mut s, v);
    conditions(&mut s, v);
    s
}

fn legend() -> String {
    let mut s = String::from("<ul class=\"legend\" aria-label=\"Legend\">");
    for (v, shape) in [
        (orchestra_api::Variant::D1, "● circle"),
        (orchestra_api::Variant::D2, "■ square"),
        (orchestra_api::Variant::D3, "▲ triangle"),
        (orchestra_api::Variant::D4, "◆ diamond"),
    ] {
        let _ = write!(
            s,
            "<li><span style=\"color:{}\" aria-hidden=\"true\">{}</span> {v}: {}</li>",
            variant_colour(v),
            &shape[..shape.find(' ').unwrap_or(0)],
            &shape[shape.find(' ').map_or(0, |i| i + 1)..]
        );
    }
    s.push_str("<li>hollow: stopped early by the search, at its last rung</li><li>black staircase: the front, the best Dice attainable at or below each rate</li><li>dashed vertical: the bpp budget</li></ul>");
    s
}

fn problems(s: &mut String, problems: &[String]) {
    if problems.is_empty() {
        return;
    }
    s.push_str("<div class=\"problems\" role=\"alert\"><h2>What is wrong</h2><ul>");
    for p in problems {
        let _ = write!(s, "<li>{}</li>", esc(p));
    }
    s.push_str("</ul></div>");
}

fn params_text(params: &BTreeMap<String, f64>) -> String {
    if params.is_empty() {
        return "defaults".into();
    }
    params
        .iter()
        .map(|(k, v)| format!("{k}={}", short(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn short(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

fn trial_table(s: &mut String, trials: &[TrialView]) {
    s.push_str("<section aria-labelledby=\"h-trials\"><h2 id=\"h-trials\">Trials</h2>");
    let variants: std::collections::BTreeSet<String> = trials.iter().map(|t| t.variant.to_string()).collect();
    let phases: std::collections::BTreeSet<String> = trials.iter().map(|t| phase_word(t.phase)).collect();
    s.push_str("<div class=\"filters\" data-table=\"trials\"><label>Variant <select data-filter=\"v\"><option value=\"\">all</option>");
    for v in &variants {
        let _ = write!(s, "<option>{v}</option>");
    }
    s.push_str("</select></label> <label>Phase <select data-filter=\"p\"><option value=\"\">all</option>");
    for p in &phases {
        let _ = write!(s, "<option>{p}</option>");
    }
    let _ = write!(
        s,
        "</select></label> <label>Name <input type=\"search\" data-filter=\"t\" placeholder=\"part of a name\"></label> <span class=\"count\" aria-live=\"polite\">{} trials</span></div>",
        trials.len()
    );
    s.push_str("<table id=\"trials\" class=\"sortable\"><caption>Every trial: click a column's name to sort by it</caption><thead><tr>");
    // Numeric columns sort by the number their cells show (Duration by the seconds it keeps
    // aside); rows stay lean, since a thousand of them make most of the page.
    for (i, (h, numeric)) in [
        ("Trial", false),
        ("Variant", false),
        ("Parameters", false),
        ("Phase", false),
        ("Step", true),
        ("Dice", true),
        ("IoU", true),
        ("bpp", true),
        ("Attempts", true),
        ("Duration", true),
        ("Rung", true),
        ("Why it stopped", false),
    ]
    .iter()
    .enumerate()
    {
        let _ = write!(
            s,
            "<th scope=\"col\" aria-sort=\"none\"{}><button type=\"button\" data-col=\"{i}\">{h}</button></th>",
            if *numeric { " data-num" } else { "" }
        );
    }
    s.push_str("</tr></thead><tbody>");
    for t in trials {
        let num = |v: Option<f64>, f: fn(f64) -> String| format!("<td>{}</td>", opt(v, f));
        let _ = write!(
            s,
            "<tr data-t=\"{name}\"><th scope=\"row\"><a href=\"trials/{name}/\">{name}</a></th><td class=\"v {v}\">{v}</td><td>{params}</td><td>{p}</td>{step}{d}{iou}{b}<td>{att}</td>{dur}{rung}<td>{why}</td></tr>",
            name = esc(&t.name),
            v = t.variant,
            p = phase_word(t.phase),
            params = esc(&params_text(&t.params)),
            step = num(t.step.map(|s| s as f64), |x| format!("{x}")),
            d = num(t.dice, dice),
            iou = num(t.iou, dice),
            b = num(t.bpp, bpp),
            att = t.attempts.map_or("—".to_string(), |a| a.to_string()),
            dur = match t.seconds {
                Some(x) => format!("<td data-s=\"{:.0}\">{}</td>", x, duration(x)),
                None => "<td>—</td>".to_string(),
            },
            rung = num(t.rung().map(|s| s as f64), |x| format!("{x}")),
            why = esc(t.message.as_deref().unwrap_or("")),
        );
    }
    s.push_str("</tbody></table></section>");
}

/// The search's ladder: per rung, how many trials reached it, went on, wait there or were
/// stopped there (named when few).
fn rung_ladder(s: &mut String, v: &ExperimentView) {
    let spec = &v.experiment.spec;
    let schedule = spec.algorithm.schedule(spec.steps);
    let mut steps: std::collections::BTreeSet<u64> = std::collections::BTreeSet::new();
    for b in 0..schedule.brackets() {
        steps.extend(schedule.rungs(b, spec.steps));
    }
    s.push_str("<section aria-labelledby=\"h-search\"><h2 id=\"h-search\">Search</h2>");
    if steps.len() <= 1 {
        let kind = serde_json::to_value(&spec.algorithm)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(String::from))
            .unwrap_or_else(|| "this search".into());
        let _ = write!(
            s,
            "<p>{}: every trial trains to step {} in one go; there are no rungs.</p></section>",
            esc(&kind),
            spec.steps
        );
        return;
    }
    s.push_str("<table id=\"rungs\"><caption>Rungs: where the search looks at trials and decides which go on</caption><thead><tr><th scope=\"col\">Rung (step)</th><th scope=\"col\">Reached</th><th scope=\"col\">Went on</th><th scope=\"col\">Waiting</th><th scope=\"col\">Stopped here</th><th scope=\"col\">Best Dice there</th></tr></thead><tbody>");
    for step in steps {
        let reached: Vec<&TrialView> = v
            .trials
            .iter()
            .filter(|t| t.rungs.iter().any(|r| r.step == step))
            .collect();
        let went_on = reached
            .iter()
            .filter(|t| t.rung().is_some_and(|r| r > step) || t.target.is_some_and(|g| g > step))
            .count();
        let waiting = reached
            .iter()
            .filter(|t| t.phase == TrialPhase::Paused && t.rung() == Some(step))
            .count();
        let stopped: Vec<&&TrialView> = reached
            .iter()
            .filter(|t| t.phase == TrialPhase::Stopped && t.rung() == Some(step))
            .collect();
        let best = reached
            .iter()
            .filter_map(|t| t.rungs.iter().find(|r| r.step == step).map(|r| r.dice))
            .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.max(d))));
        let names: Vec<String> = stopped
            .iter()
            .take(8)
            .map(|t| format!("<a href=\"trials/{n}/\">{n}</a>", n = esc(&t.name)))
            .collect();
        let more = stopped.len().saturating_sub(8);
        let _ = write!(
            s,
            "<tr><th scope=\"row\">{step}</th><td>{}</td><td>{went_on}</td><td>{waiting}</td><td>{}{}{}</td><td>{}</td></tr>",
            reached.len(),
            stopped.len(),
            if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) },
            if more > 0 { format!(" and {more} more") } else { String::new() },
            opt(best, dice)
        );
    }
    s.push_str("</tbody></table>");
    let decisions: Vec<EventView> = v
        .events
        .iter()
        .filter(|e| SEARCH_DECISIONS.contains(&e.reason.as_str()))
        .cloned()
        .collect();
    if !decisions.is_empty() {
        s.push_str("<h3>Its decisions, the newest first</h3>");
        event_list(s, &decisions, "decisions");
    }
    s.push_str("</section>");
}

/// The reasons of the events in which the search promotes or stops a trial at a rung.
const SEARCH_DECISIONS: [&str; 2] = ["TrialPromoted", "TrialStoppedEarly"];

fn conditions(s: &mut String, v: &ExperimentView) {
    s.push_str("<section aria-labelledby=\"h-state\"><h2 id=\"h-state\">Conditions and events</h2>");
    if v.conditions.is_empty() && v.events.is_empty() {
        s.push_str("<p>This runner keeps no conditions or events (a local run keeps each trial's log: open a trial).</p></section>");
        return;
    }
    if !v.conditions.is_empty() {
        s.push_str("<table id=\"conditions\"><thead><tr><th scope=\"col\">Condition</th><th scope=\"col\">Status</th><th scope=\"col\">Reason</th><th scope=\"col\">Message</th></tr></thead><tbody>");
        for c in &v.conditions {
            let _ = write!(
                s,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.kind),
                esc(&c.status),
                esc(&c.reason),
                esc(&c.message)
            );
        }
        s.push_str("</tbody></table>");
    }
    if !v.events.is_empty() {
        s.push_str("<h3>Recent events</h3>");
        event_list(s, &v.events, "events");
    }
    s.push_str("</section>");
}

/// One trial: its curves, scores, rungs, attempts, checkpoints and how to reproduce it.
pub fn trial(v: &ExperimentView, p: &TrialPage) -> String {
    let t = &p.row;
    let mut s = format!(
        "<h1>{} <span class=\"phase {ph}\">{ph}</span></h1><p class=\"lead\"><span class=\"v {v}\">{v}</span> · {} · of <a href=\"../../\">{}</a></p>",
        esc(&t.name),
        esc(&params_text(&t.params)),
        esc(&v.name),
        ph = phase_word(t.phase),
        v = t.variant
    );
    problems(&mut s, &p.problems);
    s.push_str("<section aria-labelledby=\"h-curves\"><h2 id=\"h-curves\">Curves</h2>");
    s.push_str(&charts::curves(p));
    s.push_str("</section>");
    let _ = write!(
        s,
        "<section aria-labelledby=\"h-scores\"><h2 id=\"h-scores\">Scores</h2><table id=\"scores\"><tbody><tr><th scope=\"row\">Dice</th><td id=\"dice\">{}</td></tr><tr><th scope=\"row\">IoU</th><td>{}</td></tr><tr><th scope=\"row\">bpp (real bitstream)</th><td id=\"bpp\">{}</td></tr><tr><th scope=\"row\">Step reached</th><td>{} of {}</td></tr><tr><th scope=\"row\">Attempts</th><td>{}</td></tr><tr><th scope=\"row\">Training time</th><td>{}</td></tr><tr><th scope=\"row\">Message</th><td>{}</td></tr></tbody></table></section>",
        opt(t.dice, dice),
        opt(t.iou, dice),
        opt(t.bpp, bpp),
        t.step.map_or("—".into(), |s| s.to_string()),
        p.steps,
        match t.attempts {
            Some(a) => format!("{a} ({} restarts), {} promotions", a.saturating_sub(1), t.promotions),
            None => "not known from a store alone (open the run folder, or the operator's dashboard)".into(),
        },
        opt(t.seconds, duration),
        esc(t.message.as_deref().unwrap_or("—"))
    );
    history(&mut s, &p.history);
    if !t.rungs.is_empty() {
        s.push_str("<section aria-labelledby=\"h-rungs\"><h2 id=\"h-rungs\">Rungs reached</h2><table id=\"trial-rungs\"><thead><tr><th scope=\"col\">Step</th><th scope=\"col\">Dice</th><th scope=\"col\">bpp</th></tr></thead><tbody>");
        for r in &t.rungs {
            let _ = write!(
                s,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td></tr>",
                r.step,
                dice(r.dice),
                bpp(r.bpp)
            );
        }
        s.push_str("</tbody></table></section>");
    }
    checkpoints(&mut s, p);
    reproduce(&mut s, v, p);
    if let Some(log) = &p.log_tail {
        let _ = write!(
            s,
            "<section aria-labelledby=\"h-log\"><h2 id=\"h-log\">Log</h2><details><summary>The last lines of its worker's log</summary><pre>{}</pre></details></section>",
            esc(log)
        );
    }
    s
}

/// Events as a list, the newest first, each with its kind, reason, note and age.
fn event_list(s: &mut String, events: &[EventView], id: &str) {
    let _ = write!(s, "<ul class=\"events\" id=\"{id}\">");
    for e in events.iter().take(20) {
        let _ = write!(
            s,
            "<li><strong>{}</strong> {}: {}{}</li>",
            esc(&e.kind),
            esc(&e.reason),
            esc(&e.note),
            e.age_s
                .map_or(String::new(), |a| format!(" ({} ago)", duration(a as f64)))
        );
    }
    s.push_str("</ul>");
}

/// A trial's starts, restarts, failed attempts and stops, with their reasons.
fn history(s: &mut String, history: &[EventView]) {
    if history.is_empty() {
        return;
    }
    s.push_str("<section aria-labelledby=\"h-history\"><h2 id=\"h-history\">Attempts and restarts</h2>");
    event_list(s, history, "history");
    s.push_str("</section>");
}

fn checkpoints(s: &mut String, p: &TrialPage) {
    s.push_str("<section aria-labelledby=\"h-ckpt\"><h2 id=\"h-ckpt\">Checkpoints</h2>");
    if p.checkpoints.is_empty() {
        s.push_str("<p>None yet.</p></section>");
        return;
    }
    s.push_str("<table id=\"checkpoints\"><thead><tr><th scope=\"col\">Step</th><th scope=\"col\">Size</th><th scope=\"col\">Resumes from</th></tr></thead><tbody>");
    for c in &p.checkpoints {
        let _ = write!(
            s,
            "<tr><th scope=\"row\">{}</th><td>{:.1} MB</td><td>{}</td></tr>",
            c.step,
            c.bytes as f64 / 1e6,
            if c.latest { "yes" } else { "" }
        );
    }
    s.push_str("</tbody></table><p><a href=\"model\" download>Download the model</a> (the latest checkpoint's weights, safetensors)</p></section>");
}

fn reproduce(s: &mut String, v: &ExperimentView, p: &TrialPage) {
    let _ = write!(
        s,
        "<section aria-labelledby=\"h-repro\"><h2 id=\"h-repro\">Reproduce it</h2><p>Save <a href=\"spec.yaml\" download=\"{t}.yaml\">its trial spec</a> and run the worker on it (add <code>--resume</code> to continue from its latest checkpoint in the same store):</p><pre><code>orchestra-worker train --spec {t}.yaml</code></pre><p>Or the whole sweep: <code>orchestra run {e}.yaml</code> with <a href=\"../../spec.yaml\" download=\"{e}.yaml\">its Experiment</a>.</p><details><summary>The trial spec</summary><pre>{}</pre></details></section>",
        esc(&p.spec_yaml),
        t = esc(&p.row.name),
        e = esc(&v.name)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(42.4), "42 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(3725.0), "1 h 02 min");
    }

    #[test]
    fn the_search_shows_its_rungs_and_its_decisions_with_their_times() {
        let experiment: orchestra_api::Experiment = serde_yaml::from_str(
            "apiVersion: orchestra.dev/v1alpha1\nkind: Experiment\nmetadata: { name: e }\nspec:\n  dataset: synthetic://lesion\n  model: { inputSize: 64 }\n  variants: [D4]\n  search: { lambdaRate: { type: uniform, min: 0.1, max: 1.0 } }\n  algorithm: { type: asha, samples: 3, eta: 3, minSteps: 10 }\n  steps: 90\n  store: memory://\n",
        )
        .unwrap();
        let event = |reason: &str, note: &str, age_s| EventView {
            kind: "Normal".into(),
            reason: reason.into(),
            note: note.into(),
            trial: None,
            age_s: Some(age_s),
        };
        let v = ExperimentView {
            namespace: "ns".into(),
            name: "e".into(),
            experiment,
            phase: "Running".into(),
            message: None,
            conditions: Vec::new(),
            events: vec![
                event("TrialStoppedEarly", "e-d4-001: below the top third at step 10", 5),
                event("TrialStarted", "e-d4-002: 1 worker(s)", 20),
                event("TrialPromoted", "e-d4-000: continues to step 30", 65),
            ],
            trials: Vec::new(),
            total: 3,
            leaderboard: None,
            created_ms: None,
            phase_source: None,
            problems: Vec::new(),
        };
        let mut s = String::new();
        rung_ladder(&mut s, &v);
        assert!(s.contains("<th scope=\"row\">10</th>"), "{s}");
        let decisions = &s[s.find("id=\"decisions\"").expect("the decisions")..];
        assert!(
            decisions.contains("TrialStoppedEarly: e-d4-001: below the top third at step 10 (5 s ago)")
                && decisions.contains("TrialPromoted: e-d4-000: continues to step 30 (1 min 05 s ago)")
                && !decisions.contains("TrialStarted"),
            "{decisions}"
        );
    }

    #[test]
    fn parameters_are_short() {
        let p: BTreeMap<String, f64> = [("lambdaRate".to_string(), 0.05), ("k".into(), 3.0)].into();
        assert_eq!(params_text(&p), "k=3, lambdaRate=0.05");
        assert_eq!(params_text(&BTreeMap::new()), "defaults");
    }
}
