//! What a runner (the reconciler, the local runner, the search replay) observed of one trial:
//! the planner's and the search's input, in one place.

use orchestra_api::{RungScore, TrialPhase};

/// What the runner knows about one trial.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedTrial {
    pub name: String,
    pub phase: TrialPhase,
    /// Attempts started so far.
    pub attempts: u32,
    /// When the phase last changed (seconds since the Unix epoch).
    pub since: u64,
    /// The step target of its latest gang (0 before the first): a rung, or `steps`.
    pub target: u64,
    /// Gangs started by a promotion; `attempts - promotions` counts against maxAttempts.
    pub promotions: u32,
    /// Its scores at the rungs it reached, lowest first.
    pub rungs: Vec<RungScore>,
    /// Processes of an earlier gang still run (a failed or suspended gang's pods terminating):
    /// no new gang of this trial starts until they are gone, since two gangs of one trial would
    /// both write its checkpoints. Its place is kept meanwhile.
    pub draining: bool,
}

impl ObservedTrial {
    /// A trial as first seen: no gang started, no rung reached.
    pub fn new(name: &str, phase: TrialPhase, attempts: u32, since: u64) -> ObservedTrial {
        ObservedTrial {
            name: name.to_string(),
            phase,
            attempts,
            since,
            target: 0,
            promotions: 0,
            rungs: Vec::new(),
            draining: false,
        }
    }

    /// Attempts that count against maxAttempts: the first start and the restarts.
    pub(crate) fn failures_allowed_used(&self) -> u32 {
        self.attempts.saturating_sub(self.promotions)
    }
}
