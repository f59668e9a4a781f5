//! The benchmark's Experiments: `count` random searches of `trials` single-worker D4 trials
//! each, `parallelism` at a time, all writing to one store. Small resource requests, so that
//! what limits how many run at once is the Experiments' parallelism and the fake nodes' pod
//! slots, not CPU.

use orchestra_api::Experiment;

pub struct Sweep<'a> {
    pub namespace: &'a str,
    pub count: usize,
    pub trials: usize,
    pub parallelism: usize,
    pub steps: u64,
    /// `file:///...`: the operator and the fake workers both reach it.
    pub store: &'a str,
}

impl Sweep<'_> {
    pub fn name(&self, i: usize) -> String {
        format!("bench-{i:03}")
    }

    /// Experiment `i` (its random search seeded by `i`).
    pub fn experiment(&self, i: usize) -> Experiment {
        let text = format!(
            "apiVersion: orchestra.dev/v1alpha1\nkind: Experiment\n\
             metadata: {{ name: {name}, namespace: {ns} }}\n\
             spec:\n  dataset: synthetic://lesion\n  model: {{ inputSize: 64 }}\n  variants: [D4]\n\
             \x20 steps: {steps}\n  store: {store}\n  parallelism: {parallelism}\n\
             \x20 algorithm: {{ type: random, seed: {seed}, samples: {trials} }}\n\
             \x20 search:\n    lambdaRate: {{ type: logUniform, min: 0.001, max: 1.0 }}\n\
             \x20 resources: {{ cpu: 10m, memory: 16Mi }}\n",
            name = self.name(i),
            ns = self.namespace,
            steps = self.steps,
            store = self.store,
            parallelism = self.parallelism,
            seed = i + 1,
            trials = self.trials,
        );
        serde_yaml::from_str(&text).expect("the benchmark's Experiment parses")
    }

    pub fn total_trials(&self) -> usize {
        self.count * self.trials
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_experiment_is_valid_and_plans_its_trials() {
        let sweep = Sweep {
            namespace: "bench",
            count: 3,
            trials: 250,
            parallelism: 40,
            steps: 10,
            store: "file:///tmp/orchestra-bench",
        };
        for i in 0..sweep.count {
            let e = sweep.experiment(i);
            let name = sweep.name(i);
            e.spec.validate(&name, &name).expect("valid");
            assert!(crate::k8s::reconcile::cluster_problems(&e).is_none());
            assert_eq!(crate::candidates::candidates(&name, &e.spec).len(), 250);
            assert_eq!(e.spec.parallelism, 40);
        }
        assert_eq!(sweep.total_trials(), 750);
    }
}
