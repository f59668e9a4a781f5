//! Recording what the reconciler observed change since its last look: each transition of a
//! trial becomes its status and its events, once.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::runtime::events::EventType;
use kube::ResourceExt;
use orchestra_api::{RungRecord, Trial, TrialPhase, TrialResult, TrialStatus};

use super::context::Error;
use super::names;
use super::observe::{format_time, Transition};
use super::scope::Scope;
use super::status::publish_trial_event;
use crate::summary::shown_bpp;

/// Records one transition; returns the trial, the status it wrote (later actions of the same
/// reconciliation build on it) and whether the trial finished (the leaderboard's plot is then
/// redrawn).
pub(super) async fn record(
    scope: &Scope<'_>,
    trials: &BTreeMap<String, Arc<Trial>>,
    transition: &Transition,
) -> Result<(String, TrialStatus, bool), Error> {
    Ok(match transition {
        Transition::Succeeded { trial, result } => (
            trial.clone(),
            succeeded(scope, &trials[trial], result).await?,
            true,
        ),
        Transition::Paused { trial, record } => {
            (trial.clone(), paused(scope, &trials[trial], record).await?, false)
        }
        Transition::AttemptFailed {
            trial,
            attempt,
            reason,
        } => (
            trial.clone(),
            attempt_failed(scope, &trials[trial], *attempt, reason).await?,
            false,
        ),
        Transition::Unschedulable {
            trial,
            pending,
            waited,
        } => (
            trial.clone(),
            unschedulable(scope, &trials[trial], pending, *waited).await?,
            false,
        ),
    })
}

/// The gang finished and its result covers the step target.
async fn succeeded(scope: &Scope<'_>, t: &Trial, result: &TrialResult) -> Result<TrialStatus, Error> {
    let trial = t.name_any();
    let mut status = t.status.clone().unwrap_or_default();
    status.phase = TrialPhase::Succeeded;
    status.finished_at = Some(format_time(scope.now));
    status.dice = Some(result.scores.dice);
    status.bpp = Some(shown_bpp(result));
    status.last_checkpoint_step = Some(result.steps);
    status.rungs.push(RungRecord::of_result(result).score());
    status.result = Some(result.clone());
    status.message = Some(format!("finished {} steps", result.steps));
    scope.write_trial_status(&trial, &status).await?;
    // One event, on the Experiment (where a sweep is followed) and related to the Trial; the
    // Trial's status says the same (an event per trial object too would be one more API write).
    let note = format!("Dice {:.4} at {:.5} bpp", result.scores.dice, shown_bpp(result));
    publish_trial_event(
        scope,
        t,
        EventType::Normal,
        ("TrialSucceeded", "Finish"),
        Some(&note),
    )
    .await;
    Ok(status)
}

/// The gang reached its rung: the trial waits there, with its scores, for the search.
async fn paused(scope: &Scope<'_>, t: &Trial, record: &RungRecord) -> Result<TrialStatus, Error> {
    let trial = t.name_any();
    let mut status = t.status.clone().unwrap_or_default();
    let score = record.score();
    status.phase = TrialPhase::Paused;
    status.finished_at = Some(format_time(scope.now));
    status.dice = Some(score.dice);
    status.bpp = Some(score.bpp);
    status.last_checkpoint_step = Some(record.step);
    status.rungs.push(score);
    let note = format!(
        "rung {} reached at step {}: Dice {:.4} at {:.5} bpp",
        status.rungs.len() - 1,
        record.step,
        score.dice,
        score.bpp
    );
    status.message = Some(note.clone());
    scope.write_trial_status(&trial, &status).await?;
    publish_trial_event(
        scope,
        t,
        EventType::Normal,
        ("TrialReachedRung", "Observe"),
        Some(&note),
    )
    .await;
    Ok(status)
}

/// A rank failed: the whole gang goes, since survivors of a failed rank never rejoin on their
/// own; the planner restarts it from the latest checkpoint if attempts remain.
async fn attempt_failed(
    scope: &Scope<'_>,
    t: &Trial,
    attempt: u32,
    reason: &str,
) -> Result<TrialStatus, Error> {
    let trial = t.name_any();
    let note = format!("attempt {attempt} failed: {reason}");
    let mut status = t.status.clone().unwrap_or_default();
    status.phase = TrialPhase::AttemptFailed;
    status.finished_at = Some(format_time(scope.now));
    status.message = Some(note.clone());
    scope.write_trial_status(&trial, &status).await?;
    scope.delete_job(&names::job(&trial, attempt)).await?;
    publish_trial_event(
        scope,
        t,
        EventType::Warning,
        ("AttemptFailed", "Observe"),
        Some(&note),
    )
    .await;
    Ok(status)
}

/// Part of the gang is still unscheduled after the gang timeout: said once per distinct message.
async fn unschedulable(
    scope: &Scope<'_>,
    t: &Trial,
    pending: &[String],
    waited: u64,
) -> Result<TrialStatus, Error> {
    let trial = t.name_any();
    let mut status = t.status.clone().unwrap_or_default();
    let message = format!(
        "gang not fully scheduled after {waited}s: {} pending ({})",
        pending.len(),
        pending.join(", ")
    );
    if status.message.as_deref() == Some(message.as_str()) {
        return Ok(status);
    }
    status.message = Some(message.clone());
    scope.write_trial_status(&trial, &status).await?;
    publish_trial_event(
        scope,
        t,
        EventType::Warning,
        ("GangUnschedulable", "Schedule"),
        Some(&message),
    )
    .await;
    Ok(status)
}
