//! One interpreter of the planner's actions. The local runner (processes), the reconciler
//! (Kubernetes objects) and the search replay (a simulation) each say what one kind of action
//! means to them, by implementing `Runner`; `Action::carry_out` is the only place that takes an
//! action apart, so a new action is one new method that every runner must then answer.

use std::collections::BTreeMap;

use orchestra_api::{TrialSpec, Variant};

use crate::planner::Action;

/// What carries out the planner's actions. `Done<'a>` is what one action gives back: a
/// `Result` for the runners that act at once, a future of one for the reconciler, whose
/// actions are API requests.
pub trait Runner {
    type Done<'a>
    where
        Self: 'a;

    /// Record a new trial (phase Pending).
    fn create_trial<'a>(
        &'a mut self,
        name: &'a str,
        variant: Variant,
        params: &'a BTreeMap<String, f64>,
        spec: &'a TrialSpec,
    ) -> Self::Done<'a>;

    /// Start gang `attempt` of a trial, training to step `until` (phase Running).
    fn start_trial<'a>(
        &'a mut self,
        name: &'a str,
        attempt: u32,
        until: u64,
        promotion: bool,
    ) -> Self::Done<'a>;

    /// Give up on a trial (phase Failed).
    fn fail_trial<'a>(&'a mut self, name: &'a str, reason: &'a str) -> Self::Done<'a>;

    /// Stop a trial for good (phase Stopped).
    fn stop_trial<'a>(&'a mut self, name: &'a str, reason: &'a str) -> Self::Done<'a>;

    /// Stop a running trial's gang and give its attempt back (phase Pending).
    fn suspend_trial<'a>(&'a mut self, name: &'a str) -> Self::Done<'a>;
}

impl Action {
    /// Has `runner` carry out this action.
    pub fn carry_out<'a, R: Runner>(&'a self, runner: &'a mut R) -> R::Done<'a> {
        match self {
            Action::CreateTrial {
                name,
                variant,
                params,
                spec,
            } => runner.create_trial(name, *variant, params, spec),
            Action::StartTrial {
                name,
                attempt,
                until,
                promotion,
            } => runner.start_trial(name, *attempt, *until, *promotion),
            Action::FailTrial { name, reason } => runner.fail_trial(name, reason),
            Action::StopTrial { name, reason } => runner.stop_trial(name, reason),
            Action::SuspendTrial { name } => runner.suspend_trial(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes down what it was asked, in order.
    #[derive(Default)]
    struct Journal(Vec<String>);

    impl Runner for Journal {
        type Done<'a> = ();

        fn create_trial<'a>(
            &'a mut self,
            name: &'a str,
            variant: Variant,
            params: &'a BTreeMap<String, f64>,
            _: &'a TrialSpec,
        ) {
            self.0.push(format!("create {name} {variant} {params:?}"));
        }
        fn start_trial<'a>(&'a mut self, name: &'a str, attempt: u32, until: u64, promotion: bool) {
            self.0.push(format!("start {name} {attempt} {until} {promotion}"));
        }
        fn fail_trial<'a>(&'a mut self, name: &'a str, reason: &'a str) {
            self.0.push(format!("fail {name} {reason}"));
        }
        fn stop_trial<'a>(&'a mut self, name: &'a str, reason: &'a str) {
            self.0.push(format!("stop {name} {reason}"));
        }
        fn suspend_trial<'a>(&'a mut self, name: &'a str) {
            self.0.push(format!("suspend {name}"));
        }
    }

    #[test]
    fn each_action_reaches_its_own_method_with_its_fields() {
        let spec: TrialSpec = serde_yaml::from_str(
            "experiment: e\ntrial: t\nvariant: D4\ndataset: synthetic://lesion\n\
             model: { inputSize: 32 }\nsteps: 4\nstore: memory://x\n",
        )
        .unwrap();
        let actions = [
            Action::CreateTrial {
                name: "t".into(),
                variant: Variant::D4,
                params: BTreeMap::from([("lambdaRate".to_string(), 0.5)]),
                spec: Box::new(spec),
            },
            Action::StartTrial {
                name: "t".into(),
                attempt: 2,
                until: 30,
                promotion: true,
            },
            Action::FailTrial {
                name: "t".into(),
                reason: "r1".into(),
            },
            Action::StopTrial {
                name: "t".into(),
                reason: "r2".into(),
            },
            Action::SuspendTrial { name: "t".into() },
        ];
        let mut journal = Journal::default();
        for a in &actions {
            a.carry_out(&mut journal);
        }
        assert_eq!(
            journal.0,
            [
                "create t D4 {\"lambdaRate\": 0.5}",
                "start t 2 30 true",
                "fail t r1",
                "stop t r2",
                "suspend t"
            ]
        );
    }
}
