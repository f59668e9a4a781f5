//! Real training on synthetic data: the variants train exactly their parameter groups, a few
//! dozen steps learn, the rate loss lowers the rate, and resumed runs equal uninterrupted ones.

mod common;

use std::collections::BTreeMap;

use common::tiny_spec;
use orchestra_api::{TrialSpec, Variant};
use orchestra_worker::data::Dataset;
use orchestra_worker::nets::Group;
use orchestra_worker::store::checkpoint::TrialStore;
use orchestra_worker::store::Store;
use orchestra_worker::train::{run_trial, Outcome, RunOptions, Trainer};
use tch::Tensor;

fn trainer(spec: TrialSpec) -> Trainer {
    let data = Dataset::open(&spec.dataset, spec.model.input_size).unwrap();
    Trainer::new(spec, data).unwrap()
}

fn snapshot(t: &Trainer) -> BTreeMap<String, Tensor> {
    t.model
        .named_variables()
        .into_iter()
        .map(|(n, v)| (n, v.detach().copy()))
        .collect()
}

#[test]
fn each_variant_trains_exactly_its_parameter_groups() {
    let expect: [(Variant, &[Group]); 4] = [
        (Variant::D1, &[Group::Segmentor, Group::Critic]),
        (
            Variant::D2,
            &[
                Group::Compressor,
                Group::Reconstructor,
                Group::BitModel,
                Group::Segmentor,
            ],
        ),
        (Variant::D3, &Group::ALL),
        (Variant::D4, &Group::ALL),
    ];
    for (variant, groups) in expect {
        let mut t = trainer(tiny_spec(variant, "memory://groups", "groups"));
        let present: Vec<Group> = Group::ALL
            .into_iter()
            .filter(|g| t.model.param_count(*g) > 0)
            .collect();
        assert_eq!(present, groups.to_vec(), "{variant}: networks built");
        // Step 0 has w_dis = 0 during warm-up; step 1 exercises the critic's gradient into S.
        let before = snapshot(&t);
        t.train_step().unwrap();
        t.train_step().unwrap();
        let after = snapshot(&t);
        for g in groups {
            let changed = before
                .iter()
                .filter(|(n, _)| Group::of(n) == Some(*g) && !n.contains("running_"))
                .any(|(n, v)| !v.equal(&after[n]));
            assert!(changed, "{variant}: group {g:?} did not change");
        }
    }
}

#[test]
fn the_critic_step_leaves_c_and_s_alone_and_clips_d() {
    let mut t = trainer(tiny_spec(Variant::D3, "memory://critic", "critic"));
    t.train_step().unwrap();
    let clip = t.spec.hyper.d_clip;
    for (name, p) in t.model.group_params(Group::Critic) {
        let m = p.abs().max().double_value(&[]);
        assert!(m <= clip + 1e-7, "{name}: |w| = {m} exceeds the clip {clip}");
    }
}

#[test]
fn d4_learns_in_a_few_dozen_steps() {
    let mut spec = tiny_spec(Variant::D4, "memory://learn", "learn");
    spec.steps = 60;
    spec.hyper.augment = false;
    let mut t = trainer(spec);
    let untrained = t.evaluate().scores.dice;
    let mut first = Vec::new();
    let mut last = Vec::new();
    for i in 0..60 {
        let m = t.train_step().unwrap();
        if i < 5 {
            first.push(m.loss_seg);
        } else if i >= 55 {
            last.push(m.loss_seg);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&last) < 0.8 * mean(&first),
        "loss_seg {:.4} -> {:.4}",
        mean(&first),
        mean(&last)
    );
    let trained = t.evaluate().scores.dice;
    eprintln!(
        "D4: Dice {untrained:.3} -> {trained:.3}, loss_seg {:.4} -> {:.4}",
        mean(&first),
        mean(&last)
    );
    assert!(trained > untrained + 0.2, "Dice {untrained:.3} -> {trained:.3}");
}

#[test]
fn the_rate_loss_lowers_the_estimated_rate() {
    let rate = |variant| {
        let mut spec = tiny_spec(variant, "memory://rate", "rate");
        spec.steps = 40;
        spec.hyper.lambda_rate = 2.0;
        let mut t = trainer(spec);
        for _ in 0..40 {
            t.train_step().unwrap();
        }
        t.evaluate().rate.unwrap().bpp_estimate
    };
    let (d3, d4) = (rate(Variant::D3), rate(Variant::D4));
    eprintln!("estimated rate after 40 steps: D3 {d3:.5} bpp, D4 {d4:.5} bpp");
    assert!(d4 < 0.9 * d3, "D4 estimate {d4:.5} bpp is not below D3's {d3:.5}");
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let straight = tiny_spec(Variant::D4, "memory://resume-a", "resume");
    let Outcome::Finished(a) = run_trial(&straight, &RunOptions::default()).unwrap() else {
        panic!("did not finish")
    };

    let interrupted = tiny_spec(Variant::D4, "memory://resume-b", "resume");
    let opts = RunOptions {
        stop_after: Some(3),
        ..Default::default()
    };
    assert!(matches!(
        run_trial(&interrupted, &opts).unwrap(),
        Outcome::Paused { step: 3 }
    ));
    let err = run_trial(&interrupted, &RunOptions::default())
        .err()
        .expect("refuses to overwrite");
    assert!(err.to_string().contains("--resume"), "{err}");
    let resume = RunOptions {
        resume: true,
        ..Default::default()
    };
    let Outcome::Finished(b) = run_trial(&interrupted, &resume).unwrap() else {
        panic!("did not finish")
    };

    let metrics = |uri: &str| {
        let ts = TrialStore::new(Store::open(uri).unwrap(), "tests", "resume");
        String::from_utf8(ts.store.get(&ts.key("metrics.jsonl")).unwrap().unwrap().to_vec()).unwrap()
    };
    assert_eq!(
        metrics("memory://resume-a"),
        metrics("memory://resume-b"),
        "losses differ after resume"
    );
    assert_eq!(a.scores, b.scores);
    assert_eq!(a.rate, b.rate);

    // A finished trial is not retrained.
    let Outcome::Finished(c) = run_trial(&interrupted, &resume).unwrap() else {
        panic!("did not finish")
    };
    assert_eq!(c.timings, b.timings, "the stored result is returned as is");
}

#[test]
fn trials_checkpoint_and_resume_on_s3() {
    use orchestra_store::moto::{create_bucket, point_at, start_moto, SERIAL};
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let moto = start_moto();
    create_bucket(moto.port, "trials");
    point_at(moto.port);
    let spec = tiny_spec(Variant::D4, "s3://trials/runs", "on-s3");
    let opts = RunOptions {
        stop_after: Some(5),
        ..Default::default()
    };
    assert!(matches!(
        run_trial(&spec, &opts).unwrap(),
        Outcome::Paused { step: 5 }
    ));
    let resume = RunOptions {
        resume: true,
        ..Default::default()
    };
    let Outcome::Finished(result) = run_trial(&spec, &resume).unwrap() else {
        panic!("did not finish")
    };
    assert_eq!(result.steps, 8);
    let ts = TrialStore::new(Store::open("s3://trials/runs").unwrap(), "tests", "on-s3");
    assert_eq!(ts.latest_step().unwrap(), Some(8));
    assert!(ts.store.get(&ts.key("result.json")).unwrap().is_some());
    // The same trial straight through in memory gives the same scores: S3 changed nothing.
    let Outcome::Finished(memory) = run_trial(
        &tiny_spec(Variant::D4, "memory://s3-twin", "on-s3"),
        &RunOptions::default(),
    )
    .unwrap() else {
        panic!("did not finish")
    };
    assert_eq!(memory.scores, result.scores);
}
