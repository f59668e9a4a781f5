//! A compressing trial that starts from a finished D1 trial's weights (`hyper.warmStart`) and
//! learns from its predictions (`hyper.distill`): what is copied and what is not, what the
//! teacher adds to the loss, what the result says the trial cost, a source with no Experiment
//! around it, the rate warm-up, and the errors when a source is not there.

mod common;

use common::tiny_spec;
use orchestra_api::{Distill, DistillLoss, Experiment, ExperimentSpec, TrialSpec, Variant};
use orchestra_store::layout::{ExperimentKeys, TrialKeys};
use orchestra_worker::data::Dataset;
use orchestra_worker::store::Store;
use orchestra_worker::train::{run_trial, Outcome, RunOptions, Trainer};

/// The Experiment file a runner would have stored for trials like `spec`.
fn store_experiment(spec: &TrialSpec) {
    let base: ExperimentSpec = orchestra_api::parse_yaml(
        &format!(
            "dataset: {}\nmodel: {{ inputSize: 64 }}\nvariants: [D1, D4]\nsteps: {}\nstore: {}\n",
            spec.dataset, spec.steps, spec.store
        ),
        "test",
    )
    .unwrap();
    let exp = Experiment::new(
        &spec.experiment,
        ExperimentSpec {
            model: spec.model.clone(),
            hyper: spec.hyper.clone(),
            seed: spec.seed,
            ..base
        },
    );
    let store = Store::open(&spec.store).unwrap();
    let key = ExperimentKeys::new(&spec.experiment).spec();
    store.put(&key, serde_yaml::to_string(&exp).unwrap()).unwrap();
}

/// A finished D1 trial `tests-d1-000` in `store`.
fn finished_teacher(store: &str) -> orchestra_api::TrialResult {
    let d1 = tiny_spec(Variant::D1, store, "tests-d1-000");
    store_experiment(&d1);
    match run_trial(&d1, &RunOptions::default()).unwrap() {
        Outcome::Finished(r) => *r,
        Outcome::Paused { .. } => panic!("the teacher did not finish"),
    }
}

fn student(store: &str) -> TrialSpec {
    let mut s = tiny_spec(Variant::D4, store, "tests-d4-000");
    s.hyper.warm_start = Some("trial:tests-d1-000".into());
    s.hyper.distill = Some(Distill {
        from: "trial:tests-d1-000".into(),
        weight: 2.0,
        loss: DistillLoss::SegLoss,
    });
    s
}

fn trainer(spec: TrialSpec) -> Result<Trainer, orchestra_worker::train::TrainError> {
    let data = Dataset::open(&spec.dataset, spec.model.input_size).unwrap();
    Trainer::new(spec, data)
}

#[test]
fn a_d4_starts_from_the_d1_trial_and_learns_from_its_predictions() {
    let store = "memory://sources-taught";
    let teacher = finished_teacher(store);
    let spec = student(store);
    let mut t = trainer(spec.clone()).unwrap();
    // The warm start: every tensor of D1's with the same name and shape (its s but for the
    // first layer, which reads 3 image channels where D4's reads g's 1, and its critic).
    let d1 = trainer(tiny_spec(Variant::D1, "memory://sources-fresh", "x")).unwrap();
    let stored = Store::open(store).unwrap();
    let ts = orchestra_worker::store::checkpoint::TrialStore::new(stored, "tests", "tests-d1-000");
    let teacher_weights = ts.load_latest().unwrap().unwrap().weights;
    let (mut copied, mut fresh) = (0, Vec::new());
    for (name, var) in t.model.named_variables() {
        match teacher_weights
            .iter()
            .find(|(n, w)| *n == name && w.size() == var.size())
        {
            Some((_, w)) => {
                assert!(var.equal(w), "{name} was not copied from the teacher");
                copied += 1;
            }
            None => fresh.push(name),
        }
    }
    assert!(copied > 10, "only {copied} tensors copied");
    assert!(
        fresh.iter().any(|n| n.starts_with("c.")),
        "C has no teacher tensor"
    );
    assert!(
        fresh.iter().any(|n| n.starts_with("s.")),
        "s's first layer differs in shape"
    );
    assert!(d1.model.named_variables().len() > copied);
    // The teacher's term is in the loss, and the result counts the teacher's steps.
    let m = t.train_step().unwrap();
    let distill = m
        .loss_distill
        .expect("a distilling trial reports the teacher's term");
    assert!(distill.is_finite() && distill > 0.0, "{distill}");
    let Outcome::Finished(result) = run_trial(&spec, &RunOptions::default()).unwrap() else {
        panic!("did not finish")
    };
    assert_eq!(result.teachers.len(), 1, "one source, named twice, counted once");
    let cost = &result.teachers[0];
    assert_eq!((cost.variant, cost.steps), (Variant::D1, teacher.steps));
    assert_eq!(cost.source, "trial:tests-d1-000");
    assert_eq!(result.steps_in_all(), spec.steps + teacher.steps);
    // A trial in another store names it by its folder's URI: the same teacher.
    let mut elsewhere = tiny_spec(Variant::D4, "memory://sources-elsewhere", "tests-d4-000");
    elsewhere.hyper.distill = Some(Distill {
        from: format!("{store}/tests/tests-d1-000"),
        weight: 1.0,
        loss: DistillLoss::Mse,
    });
    let t = trainer(elsewhere).unwrap();
    assert_eq!(t.teachers[0].steps, teacher.steps);
}

#[test]
fn a_source_that_has_not_finished_is_named_in_the_error() {
    let store = "memory://sources-missing";
    let spec = student(store);
    store_experiment(&spec);
    let err = trainer(spec.clone()).err().expect("no teacher yet").to_string();
    assert!(
        err.contains("trial:tests-d1-000") && err.contains("has not finished"),
        "{err}"
    );
    // Paused, not finished: still refused (its weights are not the trained ones).
    let d1 = tiny_spec(Variant::D1, store, "tests-d1-000");
    let opts = RunOptions {
        stop_after: Some(2),
        ..Default::default()
    };
    assert!(matches!(run_trial(&d1, &opts).unwrap(), Outcome::Paused { .. }));
    let err = trainer(spec).err().expect("teacher paused").to_string();
    assert!(err.contains("has not finished"), "{err}");
}

#[test]
fn a_trial_without_an_experiment_is_a_source_through_the_spec_it_stored() {
    // A standalone D1 (`orchestra-worker train`): nothing but the trial in its store.
    let dir = tempfile::tempdir().unwrap();
    let store = &format!("file://{}", dir.path().display());
    let d1 = tiny_spec(Variant::D1, store, "solo-d1");
    let Outcome::Finished(teacher) = run_trial(&d1, &RunOptions::default()).unwrap() else {
        panic!("the teacher did not finish")
    };
    let stored = Store::open(store).unwrap();
    assert!(stored
        .get(&ExperimentKeys::new(&d1.experiment).spec())
        .unwrap()
        .is_none());
    let spec_key = TrialKeys::new(&d1.experiment, &d1.trial).spec();
    let text = stored
        .get(&spec_key)
        .unwrap()
        .expect("a finished trial stores its spec");
    let back: TrialSpec = orchestra_api::parse_yaml(&String::from_utf8_lossy(&text), &spec_key).unwrap();
    assert_eq!(back, d1);
    let mut d4 = tiny_spec(Variant::D4, "memory://sources-standalone-d4", "solo-d4");
    d4.hyper.warm_start = Some(format!("{store}/{}/solo-d1", d1.experiment));
    let t = trainer(d4.clone()).unwrap();
    assert_eq!(
        (t.teachers[0].variant, t.teachers[0].steps),
        (Variant::D1, teacher.steps)
    );
    // Without it, and with no Experiment either, nothing says which model the weights are.
    std::fs::remove_file(dir.path().join(&spec_key)).unwrap();
    let err = trainer(d4.clone()).err().expect("no spec left").to_string();
    assert!(
        err.contains("solo-d1") && err.contains("nothing says which model"),
        "{err}"
    );
    // A trial finished before trials stored their specs: its Experiment's spec says it.
    store_experiment(&d1);
    assert_eq!(trainer(d4).unwrap().teachers[0].steps, teacher.steps);
}

#[test]
fn the_rate_weight_ramps_up_over_the_warm_up() {
    let mut spec = tiny_spec(Variant::D4, "memory://sources-ramp", "ramp");
    spec.hyper.lambda_rate = 0.4;
    spec.hyper.rate_warmup_steps = 4;
    let mut t = trainer(spec).unwrap();
    let weights: Vec<f64> = (0..6)
        .map(|_| t.train_step().unwrap().lambda_rate.unwrap())
        .collect();
    let wanted = [0.0, 0.1, 0.2, 0.3, 0.4, 0.4];
    assert!(
        weights.iter().zip(wanted).all(|(w, x)| (w - x).abs() < 1e-12),
        "{weights:?}"
    );
    // D1 has no rate loss and reports none; D4 without a warm-up has its weight at once.
    let mut d1 = trainer(tiny_spec(Variant::D1, "memory://sources-ramp-d1", "d1")).unwrap();
    assert_eq!(d1.train_step().unwrap().lambda_rate, None);
}
