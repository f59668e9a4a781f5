//! How an Experiment searches: which candidates it draws (grid, seeded random, Sobol) and how
//! it spends steps on them (every trial to the full budget, or rungs with early stopping:
//! ASHA, Hyperband, the median stopping rule).

use serde::{Deserialize, Serialize};

use crate::validation::Problems;

/// The search algorithm (`spec.algorithm`).
///
/// ```yaml
/// algorithm: { type: grid }                                  # every combination, in order
/// algorithm: { type: random, seed: 1, samples: 16 }          # independent draws per variant
/// algorithm: { type: sobol, seed: 1, samples: 16 }           # a scrambled Sobol sequence
/// algorithm: { type: asha, sampler: sobol, seed: 1, samples: 27, eta: 3, minSteps: 100 }
/// algorithm: { type: hyperband, sampler: random, seed: 1, samples: 27, eta: 3, minSteps: 100, brackets: 3 }
/// algorithm: { type: medianStop, sampler: grid, seed: 1, minSteps: 100, minTrials: 3 }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Algorithm {
    #[serde(rename = "type")]
    pub kind: AlgorithmKind,
    /// Where asha, hyperband and medianStop draw their candidates from (default: random). The
    /// grid is then taken in a seeded shuffled order, so that early rungs see a fair sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<Sampler>,
    #[serde(default)]
    pub seed: u64,
    /// Candidates per variant, for the random and Sobol samplers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u32>,
    /// Reduction factor of successive halving: the top 1/eta of a rung go on, and each rung is
    /// eta times as many steps as the one below (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<u32>,
    /// Steps of the lowest rung (asha, hyperband), or the interval between the median stopping
    /// rule's looks (medianStop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_steps: Option<u64>,
    /// Hyperband: the number of brackets (bracket b starts at minSteps * eta^b; default: as
    /// many as fit below `steps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brackets: Option<u32>,
    /// medianStop: a trial is only stopped once this many other trials reached the same step
    /// (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_trials: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum AlgorithmKind {
    #[default]
    Grid,
    Random,
    Sobol,
    Asha,
    Hyperband,
    MedianStop,
}

/// How candidates are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Sampler {
    Grid,
    Random,
    Sobol,
}

/// The candidates of one variant, as the planner generates them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// Every combination; in lexical order, or in the order of a seeded permutation.
    Grid {
        shuffle: Option<u64>,
    },
    Random {
        seed: u64,
        samples: u32,
    },
    Sobol {
        seed: u64,
        samples: u32,
    },
}

/// How steps are spent on candidates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Every trial trains to `steps` in one go.
    Full,
    /// Successive halving: trial i belongs to bracket i mod brackets.len(); each bracket's
    /// rungs are its step targets, the last one `steps`. One bracket is ASHA.
    Halving { eta: u32, brackets: Vec<Vec<u64>> },
    /// A look every `interval` steps: a trial whose objective there is below the median of
    /// the others' (once `min_trials` others reached that step) is stopped.
    MedianStop { rungs: Vec<u64>, min_trials: u32 },
}

impl Schedule {
    /// Every rung a trial of bracket `bracket` may stop at, ending with `steps`.
    pub fn rungs(&self, bracket: usize, steps: u64) -> Vec<u64> {
        match self {
            Schedule::Full => vec![steps],
            Schedule::Halving { brackets, .. } => brackets[bracket % brackets.len()].clone(),
            Schedule::MedianStop { rungs, .. } => rungs.clone(),
        }
    }

    pub fn brackets(&self) -> usize {
        match self {
            Schedule::Halving { brackets, .. } => brackets.len(),
            _ => 1,
        }
    }
}

pub const DEFAULT_ETA: u32 = 3;
pub const DEFAULT_MIN_TRIALS: u32 = 3;
/// The most rungs one trial may stop at: each is a process start and an evaluation.
pub const MAX_RUNGS: usize = 64;

/// minSteps, minSteps * eta, ... below `steps`, then `steps`.
fn ladder(min_steps: u64, eta: u64, steps: u64) -> Vec<u64> {
    let mut rungs = Vec::new();
    let mut r = min_steps.max(1);
    while r < steps && rungs.len() < MAX_RUNGS - 1 {
        rungs.push(r);
        r = r.saturating_mul(eta.max(2));
    }
    rungs.push(steps);
    rungs
}

impl Algorithm {
    pub fn grid() -> Algorithm {
        Algorithm::default()
    }

    /// Whether trials stop at rungs below `steps` (and may be stopped early there).
    pub fn is_multi_fidelity(&self) -> bool {
        matches!(
            self.kind,
            AlgorithmKind::Asha | AlgorithmKind::Hyperband | AlgorithmKind::MedianStop
        )
    }

    pub fn sampling(&self) -> Sampling {
        let samples = self.samples.unwrap_or(1);
        let sampler = match self.kind {
            AlgorithmKind::Grid => Sampler::Grid,
            AlgorithmKind::Random => Sampler::Random,
            AlgorithmKind::Sobol => Sampler::Sobol,
            _ => self.sampler.unwrap_or(Sampler::Random),
        };
        match sampler {
            Sampler::Grid => Sampling::Grid {
                shuffle: self.is_multi_fidelity().then_some(self.seed),
            },
            Sampler::Random => Sampling::Random {
                seed: self.seed,
                samples,
            },
            Sampler::Sobol => Sampling::Sobol {
                seed: self.seed,
                samples,
            },
        }
    }

    pub fn schedule(&self, steps: u64) -> Schedule {
        let eta = self.eta.unwrap_or(DEFAULT_ETA).max(2);
        let min_steps = self.min_steps.unwrap_or(steps).clamp(1, steps.max(1));
        match self.kind {
            AlgorithmKind::Grid | AlgorithmKind::Random | AlgorithmKind::Sobol => Schedule::Full,
            AlgorithmKind::Asha => Schedule::Halving {
                eta,
                brackets: vec![ladder(min_steps, eta as u64, steps)],
            },
            AlgorithmKind::Hyperband => {
                let most = ladder(min_steps, eta as u64, steps).len();
                let count = self.brackets.map_or(most, |b| (b as usize).clamp(1, most));
                let brackets = (0..count)
                    .map(|b| {
                        let start = (0..b).fold(min_steps, |r, _| r.saturating_mul(eta as u64));
                        ladder(start, eta as u64, steps)
                    })
                    .collect();
                Schedule::Halving { eta, brackets }
            }
            AlgorithmKind::MedianStop => {
                let mut rungs: Vec<u64> = (1..MAX_RUNGS as u64)
                    .map(|k| k.saturating_mul(min_steps))
                    .take_while(|&r| r < steps)
                    .collect();
                rungs.push(steps);
                Schedule::MedianStop {
                    rungs,
                    min_trials: self.min_trials.unwrap_or(DEFAULT_MIN_TRIALS),
                }
            }
        }
    }

    /// Candidates of one variant before `maxTrials`, counted (never listed); `grid` is the size
    /// of the variant's grid.
    pub fn candidate_count(&self, grid: u64) -> u64 {
        match self.sampling() {
            Sampling::Grid { .. } => grid,
            Sampling::Random { samples, .. } | Sampling::Sobol { samples, .. } => samples as u64,
        }
    }

    /// Checks which fields apply to the type, and their values.
    pub(crate) fn check(&self, p: &mut Problems, steps: u64) {
        let name = serde_json::to_value(self.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        self.check_applicable(p);
        self.check_values(p, steps, &name);
    }

    /// Each type-specific field given only to the types it applies to.
    fn check_applicable(&self, p: &mut Problems) {
        let kind = self.kind;
        let multi = self.is_multi_fidelity();
        let mut refuse = |field: &str, value: String, why: &str| {
            p.push(&format!("spec.algorithm.{field}"), value, why.to_string());
        };
        if self.sampler.is_some() && !multi {
            refuse(
                "sampler",
                format!("{:?}", self.sampler),
                "applies to asha, hyperband and medianStop only (the type itself is the sampler)",
            );
        }
        if self.eta.is_some() && !matches!(kind, AlgorithmKind::Asha | AlgorithmKind::Hyperband) {
            refuse(
                "eta",
                format!("{:?}", self.eta),
                "applies to asha and hyperband only",
            );
        }
        if self.brackets.is_some() && kind != AlgorithmKind::Hyperband {
            refuse(
                "brackets",
                format!("{:?}", self.brackets),
                "applies to hyperband only",
            );
        }
        if self.min_trials.is_some() && kind != AlgorithmKind::MedianStop {
            refuse(
                "minTrials",
                format!("{:?}", self.min_trials),
                "applies to medianStop only",
            );
        }
        if self.min_steps.is_some() && !multi {
            refuse(
                "minSteps",
                format!("{:?}", self.min_steps),
                "applies to asha, hyperband and medianStop only",
            );
        }
    }

    /// The fields' values: samples for the drawing samplers, eta's range, the multi-fidelity
    /// types' minSteps against `steps`, positive counts.
    fn check_values(&self, p: &mut Problems, steps: u64, name: &str) {
        let kind = self.kind;
        let multi = self.is_multi_fidelity();
        let mut refuse = |field: &str, value: String, why: &str| {
            p.push(&format!("spec.algorithm.{field}"), value, why.to_string());
        };
        let draws = matches!(self.sampling(), Sampling::Random { .. } | Sampling::Sobol { .. });
        match self.samples {
            None if draws => refuse("samples", "unset".into(), &format!("{name} needs samples >= 1")),
            Some(0) if draws => refuse("samples", "0".into(), "must be at least 1"),
            Some(s) if !draws => refuse(
                "samples",
                s.to_string(),
                "applies to the random and Sobol samplers only (the grid takes every combination)",
            ),
            _ => {}
        }
        if let Some(e) = self.eta {
            if !(2..=16).contains(&e) {
                refuse("eta", e.to_string(), "must be in 2..=16");
            }
        }
        if multi {
            match self.min_steps {
                None => refuse("minSteps", "unset".into(), &format!("{name} needs minSteps >= 1")),
                Some(m) if m == 0 || m >= steps => refuse(
                    "minSteps",
                    m.to_string(),
                    &format!("must be at least 1 and below spec.steps ({steps})"),
                ),
                Some(m) if kind == AlgorithmKind::MedianStop && steps / m >= MAX_RUNGS as u64 => refuse(
                    "minSteps",
                    m.to_string(),
                    &format!("gives more than {MAX_RUNGS} looks per trial: take a larger interval"),
                ),
                _ => {}
            }
        }
        if self.brackets == Some(0) {
            refuse("brackets", "0".into(), "must be at least 1");
        }
        if self.min_trials == Some(0) {
            refuse("minTrials", "0".into(), "must be at least 1");
        }
    }
}

// Kubernetes wants structural schemas: one object whose `type` says which fields apply (serde
// and `check` still decide each type's exact fields).
impl schemars::JsonSchema for Algorithm {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Algorithm".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "How candidates are drawn and steps spent: {type: grid}; {type: random|sobol, seed, samples}; {type: asha, sampler, seed, samples, eta, minSteps}; {type: hyperband, ..., brackets}; {type: medianStop, sampler, seed, samples, minSteps, minTrials}.",
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": { "type": "string", "enum": ["grid", "random", "sobol", "asha", "hyperband", "medianStop"] },
                "sampler": { "type": "string", "enum": ["grid", "random", "sobol"] },
                "seed": { "type": "integer", "minimum": 0 },
                "samples": { "type": "integer", "minimum": 1 },
                "eta": { "type": "integer", "minimum": 2, "maximum": 16 },
                "minSteps": { "type": "integer", "minimum": 1 },
                "brackets": { "type": "integer", "minimum": 1 },
                "minTrials": { "type": "integer", "minimum": 1 }
            },
            // What `check` says about which fields apply to which type, for the API server
            // (the range of minSteps against spec.steps is the spec's own rule).
            "x-kubernetes-validations": [
                { "rule": "!has(self.sampler) || self.type in ['asha', 'hyperband', 'medianStop']", "fieldPath": ".sampler",
                  "message": "applies to asha, hyperband and medianStop only (the type itself is the sampler)" },
                { "rule": "!has(self.eta) || self.type in ['asha', 'hyperband']", "fieldPath": ".eta",
                  "message": "applies to asha and hyperband only" },
                { "rule": "!has(self.brackets) || self.type == 'hyperband'", "fieldPath": ".brackets",
                  "message": "applies to hyperband only" },
                { "rule": "!has(self.minTrials) || self.type == 'medianStop'", "fieldPath": ".minTrials",
                  "message": "applies to medianStop only" },
                { "rule": "has(self.minSteps) == (self.type in ['asha', 'hyperband', 'medianStop'])", "fieldPath": ".minSteps",
                  "message": "asha, hyperband and medianStop need minSteps >= 1; the other types take none" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn algo(yaml: &str) -> Algorithm {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn rung_ladders() {
        let asha = algo("{type: asha, seed: 1, samples: 9, eta: 3, minSteps: 40}");
        assert_eq!(asha.schedule(480).rungs(0, 480), vec![40, 120, 360, 480]);
        let hb = algo("{type: hyperband, seed: 1, samples: 9, eta: 2, minSteps: 100}");
        let s = hb.schedule(800);
        assert_eq!(s.brackets(), 4);
        assert_eq!(s.rungs(0, 800), vec![100, 200, 400, 800]);
        assert_eq!(s.rungs(1, 800), vec![200, 400, 800]);
        assert_eq!(s.rungs(3, 800), vec![800]);
        assert_eq!(s.rungs(5, 800), vec![200, 400, 800], "trial 5 is in bracket 1");
        let median = algo("{type: medianStop, sampler: grid, minSteps: 150}");
        assert_eq!(median.schedule(400).rungs(0, 400), vec![150, 300, 400]);
        assert_eq!(Algorithm::grid().schedule(400), Schedule::Full);
    }

    #[test]
    fn fields_that_do_not_apply_are_refused() {
        let cases = [
            ("{type: grid, eta: 3}", "spec.algorithm.eta"),
            ("{type: random, seed: 1}", "spec.algorithm.samples"),
            ("{type: grid, samples: 3}", "spec.algorithm.samples"),
            ("{type: asha, samples: 3}", "spec.algorithm.minSteps"),
            (
                "{type: asha, samples: 3, minSteps: 500}",
                "spec.algorithm.minSteps",
            ),
            (
                "{type: asha, samples: 3, minSteps: 5, eta: 1}",
                "spec.algorithm.eta",
            ),
            (
                "{type: sobol, sampler: grid, samples: 3}",
                "spec.algorithm.sampler",
            ),
            (
                "{type: asha, samples: 3, minSteps: 5, brackets: 2}",
                "spec.algorithm.brackets",
            ),
            (
                "{type: medianStop, sampler: grid, minSteps: 1}",
                "spec.algorithm.minSteps",
            ),
        ];
        for (yaml, field) in cases {
            let mut p = Problems::default();
            algo(yaml).check(&mut p, 400);
            let fields: Vec<String> = p.problems().iter().map(|q| q.field.clone()).collect();
            assert!(fields.iter().any(|f| f == field), "{yaml}: {fields:?}");
        }
        let mut p = Problems::default();
        algo("{type: hyperband, sampler: sobol, seed: 2, samples: 8, eta: 2, minSteps: 50, brackets: 2}")
            .check(&mut p, 400);
        assert!(p.problems().is_empty(), "{:?}", p.problems());
    }
}
