//! What the reconciler writes back: statuses by server-side apply, events through the
//! Recorder, the Experiment's conditions, and the leaderboard (status, ConfigMap, plot).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use orchestra_api::{ExperimentPhase, ExperimentStatus, Trial};
use orchestra_store::layout::ExperimentKeys;

use super::builders;
use super::context::{Context, Error};
use super::names;
use super::scope::{apply_params, patch_status, with_store, Scope};
use crate::leaderboard::Leaderboard;
use crate::planner::Plan;
use crate::results;
use crate::summary::Summary;

/// Publishes an event about `regarding`; a failure to publish is logged, not fatal.
pub(super) async fn publish_event(
    ctx: &Context,
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    send_event(ctx, regarding, &ev).await;
}

/// Hands an event to the Recorder; a failure is logged, never the reconcile's error (an event
/// is a report, not part of the state).
async fn send_event(ctx: &Context, regarding: &ObjectReference, ev: &Event) {
    if let Err(e) = ctx.recorder.publish(ev, regarding).await {
        let note = ev.note.as_deref().unwrap_or_default();
        tracing::warn!(error = %e, reason = %ev.reason, note, "could not publish an event");
    }
}

/// Publishes an event about one of the Experiment's trials, on the Experiment (where a sweep is
/// followed) with the Trial as its related object, its note `<trial>` or `<trial>: <detail>`.
/// The related object is what keeps trials apart: the Recorder folds events with the same
/// reason, action and objects into one series that keeps its first note, so without it the
/// second trial to start would only add to a series that names the first.
pub(super) async fn publish_trial_event(
    scope: &Scope<'_>,
    t: &Trial,
    type_: EventType,
    (reason, action): (&str, &str),
    detail: Option<&str>,
) {
    let trial = t.name_any();
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(detail.map_or_else(|| trial.clone(), |d| format!("{trial}: {d}"))),
        action: action.into(),
        secondary: Some(t.object_ref(&())),
    };
    send_event(scope.ctx, &scope.exp_ref, &ev).await;
}

/// Ranks the Experiment's trials, reading from the store only those that ended since the last
/// ranking (what was read before is kept in the Experiment's memo).
async fn rank_from_store(scope: &Scope<'_>) -> Result<Arc<Leaderboard>, Error> {
    let (memos, ns, name) = (&scope.ctx.memos, scope.ns.as_str(), scope.name.as_str());
    let generation = scope.exp.metadata.generation.unwrap_or(0);
    let mut read = memos.read_so_far(ns, name, generation);
    let exp = scope.exp.clone();
    let (lb, read) = with_store(&scope.exp.spec.store, move |store| {
        let lb = results::leaderboard_after(store, &exp, &mut read)?;
        Ok((lb, read))
    })
    .await?;
    memos.keep_read(ns, name, generation, read);
    Ok(Arc::new(lb))
}

/// Whether a look draws the leaderboard's plot, and whether it waits for it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Plot {
    No,
    /// Drawn in a task of its own that the look does not wait for: at a thousand trials a plot
    /// took a good part of a second.
    Aside,
    /// Drawn before the look ends: the Experiment ended, and whoever sees it ended finds its
    /// final plot in the store.
    Final,
}

/// Draws the leaderboard's plot into the store (as `Plot` says). Drawings of one Experiment
/// take turns, and one started before another that already finished is dropped, so an older
/// plot never replaces a newer one.
async fn draw(scope: &Scope<'_>, lb: &Leaderboard, plot: Plot) {
    if plot == Plot::No {
        return;
    }
    let (turn, last) = scope.ctx.memos.next_drawing(&scope.ns, &scope.name);
    let dir = std::env::temp_dir().join(format!("orchestra-operator-{}-{}", scope.ns, scope.name));
    let (uri, lb) = (scope.exp.spec.store.clone(), lb.clone());
    let drawing = async move {
        let drawn = with_store(&uri, move |store| {
            let mut last = last.lock().expect("a drawing does not panic");
            if *last < turn {
                results::write_leaderboard(store, &lb, &dir)?;
                *last = turn;
            }
            Ok(())
        })
        .await;
        if let Err(e) = drawn {
            tracing::warn!(store = %uri, error = %e, "could not publish the leaderboard plot");
        }
    };
    match plot {
        Plot::Final => drawing.await,
        _ => {
            tokio::spawn(drawing);
        }
    }
}

/// The five conditions for `phase`, keeping each one's transition time while its status holds.
pub fn conditions(
    previous: &[Condition],
    phase: ExperimentPhase,
    created: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: u64,
) -> Vec<Condition> {
    let wanted = [
        (
            "Created",
            created,
            if created { "TrialsCreated" } else { "NoTrials" },
        ),
        ("Running", phase == ExperimentPhase::Running, reason),
        ("Suspended", phase == ExperimentPhase::Suspended, reason),
        ("Succeeded", phase == ExperimentPhase::Succeeded, reason),
        ("Failed", phase == ExperimentPhase::Failed, reason),
    ];
    wanted
        .iter()
        .map(|(kind, on, reason)| {
            let status = if *on { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c.type_ == *kind && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| {
                    Time(k8s_openapi::jiff::Timestamp::from_second(now as i64).expect("a valid time"))
                });
            Condition {
                type_: kind.to_string(),
                status: status.into(),
                reason: reason.to_string(),
                message: if *on { message.to_string() } else { String::new() },
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect()
}

/// An invalid Experiment: a Failed status and condition with the reason (the event once per
/// distinct message), and nothing else.
pub(super) async fn reject_invalid(
    scope: &Scope<'_>,
    previous: &ExperimentStatus,
    message: String,
) -> Result<(), Error> {
    let exp = scope.exp;
    let status = ExperimentStatus {
        phase: ExperimentPhase::Failed,
        message: Some(message.clone()),
        conditions: conditions(
            &previous.conditions,
            ExperimentPhase::Failed,
            false,
            "InvalidSpec",
            &message,
            exp.metadata.generation,
            scope.now,
        ),
        observed_generation: exp.metadata.generation,
        ..Default::default()
    };
    if previous.message.as_deref() != Some(message.as_str()) {
        publish_event(
            scope.ctx,
            &scope.exp_ref,
            EventType::Warning,
            "InvalidSpec",
            "Validate",
            message,
        )
        .await;
    }
    patch_status(&scope.experiments, &scope.name, &status).await?;
    Ok(())
}

/// Ranks the finished trials from the store (when `rerank`, or the first time this process
/// looks at this generation of the Experiment; else the last ranking stands) and publishes the
/// leaderboard as a ConfigMap; with `plot`, also its plot in the store (a failure there is
/// logged, the ranking still counts).
pub(super) async fn publish_leaderboard(
    scope: &Scope<'_>,
    rerank: bool,
    plot: Plot,
    ended: bool,
) -> Result<Arc<Leaderboard>, Error> {
    let (memos, ns, exp) = (&scope.ctx.memos, scope.ns.as_str(), scope.name.as_str());
    let generation = scope.exp.metadata.generation.unwrap_or(0);
    let known = memos.ranking(ns, exp, generation);
    let lb = match known {
        // Unchanged, and published when it was ranked (or to be, when its time comes).
        Some(lb) if !rerank && plot == Plot::No && !ended && !memos.config_map_pending(ns, exp) => {
            return Ok(lb)
        }
        Some(lb) if !rerank => lb,
        _ => rank_from_store(scope).await?,
    };
    draw(scope, &lb, plot).await;
    memos.remember_ranking(ns, exp, generation, &lb);
    let cms: Api<ConfigMap> = Api::namespaced(scope.ctx.client.clone(), &scope.ns);
    let (markdown, json) = config_map_content(&scope.name, &scope.exp.spec.store, &lb);
    // Written when it changed (a trial finished), at most every CONFIG_MAP_EVERY seconds
    // while trials finish, and when the Experiment ends.
    let name = names::leaderboard_config_map(&scope.name);
    if memos.config_map_due(ns, exp, &(&markdown, &json), scope.now, ended) {
        let cm = builders::leaderboard_config_map(scope.exp, markdown, json);
        if let Err(e) = cms.patch(&name, &apply_params(), &Patch::Apply(&cm)).await {
            memos.unpublished(ns, exp);
            return Err(e.into());
        }
    }
    Ok(lb)
}

/// Entries the leaderboard ConfigMap holds at most (besides the front): a ConfigMap holds 1 MiB,
/// some 4,000 entries, and every write sends it whole.
const CONFIG_MAP_ENTRIES: usize = 100;

/// The leaderboard ConfigMap's Markdown and JSON: the best entries and the whole front, and
/// where the whole leaderboard is when some are left out.
fn config_map_content(experiment: &str, store: &str, lb: &Leaderboard) -> (String, String) {
    let short = lb.shortened(CONFIG_MAP_ENTRIES);
    let mut markdown = short.to_markdown();
    let left_out = lb.entries.len() - short.entries.len() + lb.stopped.len() - short.stopped.len();
    if left_out > 0 {
        markdown += &format!(
            "\n{} of {} ranked trials shown here (the best and the whole front), {} of {} stopped ones; all of them: {} in the store {}\n",
            short.entries.len(),
            lb.entries.len(),
            short.stopped.len(),
            lb.stopped.len(),
            ExperimentKeys::new(experiment).leaderboard("json"),
            store
        );
    }
    let json = serde_json::to_string_pretty(&short).expect("leaderboard serialises");
    (markdown, json)
}

/// The Experiment's status from the summary and the leaderboard; an event when it finished.
pub(super) async fn write_experiment_status(
    scope: &Scope<'_>,
    previous: &ExperimentStatus,
    decision: &Plan,
    summary: &Summary,
    lb: &Leaderboard,
    created: bool,
) -> Result<(), Error> {
    let reason = match decision.phase {
        ExperimentPhase::Failed => "FailureBudgetSpent",
        ExperimentPhase::Succeeded => "AllTrialsFinished",
        ExperimentPhase::Running => "TrialsRunning",
        ExperimentPhase::Suspended => "SpecSuspend",
        ExperimentPhase::Pending => "Waiting",
    };
    let generation = scope.exp.metadata.generation;
    let status = ExperimentStatus {
        phase: decision.phase,
        progress: summary.progress(),
        trials_total: summary.total,
        trials_succeeded: summary.succeeded,
        trials_failed: summary.failed,
        trials_running: summary.running,
        best: summary.best.clone(),
        pareto_front: lb.front_entries(),
        hypervolume: (!lb.entries.is_empty()).then_some(lb.hypervolume),
        message: Some(decision.message.clone()),
        top: lb.top(5),
        leaderboard_config_map: Some(names::leaderboard_config_map(&scope.name)),
        conditions: conditions(
            &previous.conditions,
            decision.phase,
            created,
            reason,
            &decision.message,
            generation,
            scope.now,
        ),
        observed_generation: generation,
        trials_stopped: summary.stopped,
        rungs: if scope.exp.spec.algorithm.is_multi_fidelity() {
            summary.rungs.clone()
        } else {
            Vec::new()
        },
    };
    // An unchanged status is not written again (most looks change nothing).
    if status != *previous {
        patch_status(&scope.experiments, &scope.name, &status).await?;
    }
    if decision.phase != previous.phase {
        let (type_, reason, action) = match decision.phase {
            ExperimentPhase::Succeeded => (EventType::Normal, "Succeeded", "Finish"),
            ExperimentPhase::Failed => (EventType::Warning, "Failed", "Finish"),
            ExperimentPhase::Suspended => (EventType::Normal, "Suspended", "Suspend"),
            ExperimentPhase::Running if previous.phase == ExperimentPhase::Suspended => {
                (EventType::Normal, "Resumed", "Resume")
            }
            _ => return Ok(()),
        };
        publish_event(
            scope.ctx,
            &scope.exp_ref,
            type_,
            reason,
            action,
            decision.message.clone(),
        )
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestra_api::Variant;
    use orchestra_report::leaderboard::{BppSource, Entry};

    fn board(n: usize) -> Leaderboard {
        let entries: Vec<Entry> = (0..n)
            .map(|i| Entry {
                trial: format!("e-d4-{i:04}"),
                variant: Variant::D4,
                params: [("lambdaRate".to_string(), 0.1 + i as f64 / 1e4)].into(),
                bpp: 0.004,
                bpp_source: BppSource::Bitstream,
                bpp_estimate: Some(0.0039),
                dice: 0.9 - i as f64 / 1e5,
                iou: 0.8,
                dice_per_class: vec![0.9],
                // The last one is on the front (the lowest rate), far down the ranking.
                on_front: i == 0 || i == n - 1,
                steps: 10,
                teacher_steps: 0,
                pretrain_steps: 0,
            })
            .collect();
        let front = vec![entries[n - 1].trial.clone(), entries[0].trial.clone()];
        Leaderboard {
            experiment: "e".into(),
            entries,
            front,
            bpp_budget: Some(0.01),
            winner: Some("e-d4-0000".into()),
            reference_bpp: 0.1,
            hypervolume: 0.08,
            baselines: Vec::new(),
            stopped: Vec::new(),
        }
    }

    #[test]
    fn the_config_map_holds_the_best_and_the_front_and_says_where_the_rest_is() {
        let (markdown, json) = config_map_content("e", "s3://runs/e", &board(5_000));
        let short: Leaderboard = serde_json::from_str(&json).unwrap();
        assert_eq!(
            short.entries.len(),
            CONFIG_MAP_ENTRIES + 1,
            "the best and the front"
        );
        assert_eq!(short.entries.last().unwrap().trial, "e-d4-4999");
        assert_eq!(short.front.len(), 2);
        assert!(
            markdown.contains("101 of 5000 ranked trials shown here")
                && markdown.contains("e/leaderboard.json in the store s3://runs/e"),
            "{markdown}"
        );
        // Far under a ConfigMap's 1 MiB, whatever the number of trials.
        assert!(
            markdown.len() + json.len() < 100_000,
            "{} bytes",
            markdown.len() + json.len()
        );
        let (markdown, json) = config_map_content("e", "s3://runs/e", &board(50));
        assert!(!markdown.contains("shown here"), "{markdown}");
        assert_eq!(serde_json::from_str::<Leaderboard>(&json).unwrap(), board(50));
    }
}
