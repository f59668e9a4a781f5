//! Real training on synthetic data: the variants train exactly their parameter groups, a few
//! dozen steps learn, the rate loss lowers the rate, and resumed runs equal uninterrupted ones.

mod common;

use common::{interrupted_then_resumed, snapshot, tiny_spec, trainer};
use orchestra_api::{Precision, Variant};
use orchestra_worker::nets::Group;
use orchestra_worker::store::checkpoint::TrialStore;
use orchestra_worker::store::Store;
use orchestra_worker::train::{run_trial, Outcome, RunOptions, StepMetrics, Trainer};

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

/// D4 learns: within a bounded budget, the segmentation loss of the last 5 steps falls below
/// 0.8 of the first 5 and held-out Dice rises by 0.2. A few dozen steps suffice on most CPUs;
/// the budget leaves room for kernel paths that learn more slowly.
#[test]
fn d4_learns_within_a_bounded_budget() {
    d4_learns(Precision::Fp32);
}

/// bf16 autocast: the forward passes compute in bf16 (the first step's losses differ from
/// fp32's), the weights and optimizer state stay fp32, and D4 learns within the same budget
/// as in fp32.
#[test]
fn d4_learns_in_bf16_with_fp32_master_weights() {
    let first = |precision| {
        let mut spec = tiny_spec(Variant::D4, "memory://first", "first");
        spec.hyper.precision = precision;
        trainer(spec).train_step().unwrap()
    };
    let (fp32, bf16) = (first(Precision::Fp32), first(Precision::Bf16));
    assert!(bf16.loss_seg.is_finite() && bf16.loss_rate.unwrap().is_finite());
    assert_ne!(
        fp32.loss_seg, bf16.loss_seg,
        "bf16 arithmetic in the forward pass"
    );
    let t = d4_learns(Precision::Bf16);
    for (name, v) in t.model.named_variables() {
        assert_eq!(v.kind(), tch::Kind::Float, "{name} stays fp32");
    }
}

fn d4_learns(precision: Precision) -> Trainer {
    let mut spec = tiny_spec(Variant::D4, "memory://learn", "learn");
    spec.steps = 300;
    spec.hyper.augment = false;
    spec.hyper.precision = precision;
    let mut t = trainer(spec);
    let untrained = t.evaluate().scores.dice;
    let mean = |m: &[StepMetrics]| m.iter().map(|m| m.loss_seg).sum::<f64>() / m.len() as f64;
    let mut trained = untrained;
    let steps = common::train_until(&mut t, 300, 20, "loss_seg x0.8 and Dice +0.2", |t, m| {
        trained = t.evaluate().scores.dice;
        mean(&m[m.len() - 5..]) < 0.8 * mean(&m[..5]) && trained > untrained + 0.2
    });
    eprintln!(
        "D4 ({precision:?}) in {} steps: Dice {untrained:.3} -> {trained:.3}, loss_seg {:.4} -> {:.4}",
        steps.len(),
        mean(&steps[..5]),
        mean(&steps[steps.len() - 5..])
    );
    t
}

/// With a strong rate weight, D4's estimated rate falls at least 10 % below D3's (trained in
/// step with it, from the same seed) within a bounded budget.
#[test]
fn the_rate_loss_lowers_the_estimated_rate() {
    let rate_trainer = |variant| {
        let mut spec = tiny_spec(variant, "memory://rate", "rate");
        spec.steps = 200;
        spec.hyper.lambda_rate = 2.0;
        trainer(spec)
    };
    let rate = |t: &Trainer| t.evaluate().rate.unwrap().bpp_estimate;
    let (mut d3, mut d4) = (rate_trainer(Variant::D3), rate_trainer(Variant::D4));
    let steps = common::train_until(&mut d4, 200, 20, "D4's estimate 10 % below D3's", |d4, m| {
        while (d3.step as usize) < m.len() {
            d3.train_step().unwrap();
        }
        rate(d4) < 0.9 * rate(&d3)
    });
    eprintln!(
        "estimated rate after {} steps: D3 {:.5} bpp, D4 {:.5} bpp",
        steps.len(),
        rate(&d3),
        rate(&d4)
    );
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
        Outcome::Paused { step: 3, .. }
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

    // Every line but the evaluations' training seconds (wall-clock, different in every run).
    let metrics = |uri: &str| {
        let ts = TrialStore::new(Store::open(uri).unwrap(), "tests", "resume");
        let text = String::from_utf8(ts.store.get(&ts.keys.metrics()).unwrap().unwrap().to_vec()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                if let Some(seconds) = v.as_object_mut().and_then(|o| o.remove("trainSeconds")) {
                    assert!(seconds.as_f64().is_some_and(|s| s > 0.0), "{l}");
                }
                v
            })
            .collect();
        lines
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

/// Promotion never retrains: a trial run rung by rung (`until` 3, then 6, then to the end)
/// trains exactly the steps of an uninterrupted one, leaves a rung record at each target (after
/// its checkpoint), and ends with the same scores.
#[test]
fn a_trial_promoted_rung_by_rung_equals_an_uninterrupted_one() {
    use orchestra_store::layout;
    let straight = tiny_spec(Variant::D4, "memory://rungs-a", "rungs");
    let Outcome::Finished(a) = run_trial(&straight, &RunOptions::default()).unwrap() else {
        panic!("did not finish")
    };
    let laddered = tiny_spec(Variant::D4, "memory://rungs-b", "rungs");
    let ts = TrialStore::new(Store::open("memory://rungs-b").unwrap(), "tests", "rungs");
    for (i, target) in [3u64, 6].into_iter().enumerate() {
        let opts = RunOptions {
            resume: i > 0,
            until: Some(target),
            ..Default::default()
        };
        let Outcome::Paused { step, rung: Some(r) } = run_trial(&laddered, &opts).unwrap() else {
            panic!("no rung record at {target}")
        };
        assert_eq!((step, r.step), (target, target));
        assert_eq!(
            ts.latest_step().unwrap(),
            Some(target),
            "the checkpoint is at the rung"
        );
        let stored = layout::read_rung(&ts.store, &ts.keys, target).unwrap().unwrap();
        assert_eq!(stored, *r);
        assert!(r.bpp() > 0.0 && r.bpp() < 1.0, "{}", r.bpp());
        assert!(
            r.rate.as_ref().unwrap().bpp.is_some(),
            "ranked by the real bitstream"
        );
    }
    let resume = RunOptions {
        resume: true,
        ..Default::default()
    };
    let Outcome::Finished(b) = run_trial(&laddered, &resume).unwrap() else {
        panic!("did not finish")
    };
    assert_eq!(a.scores, b.scores);
    assert_eq!(a.rate, b.rate);
    let steps: Vec<u64> = layout::read_rungs(&ts.store, &ts.keys)
        .unwrap()
        .iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, vec![3, 6, 8], "a record at each target and at the end");
    // The losses of every step are those of the uninterrupted run.
    let losses = |uri: &str| -> Vec<String> {
        let ts = TrialStore::new(Store::open(uri).unwrap(), "tests", "rungs");
        let text = String::from_utf8(ts.store.get(&ts.keys.metrics()).unwrap().unwrap().to_vec()).unwrap();
        text.lines()
            .filter(|l| !l.contains("\"eval\""))
            .map(String::from)
            .collect()
    };
    assert_eq!(losses("memory://rungs-a"), losses("memory://rungs-b"));
}

#[test]
fn trials_checkpoint_and_resume_on_s3() {
    use orchestra_store::moto::{create_bucket, point_at, start_moto, SERIAL};
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let moto = start_moto();
    create_bucket(moto.port, "trials");
    point_at(moto.port);
    let spec = tiny_spec(Variant::D4, "s3://trials/runs", "on-s3");
    let result = interrupted_then_resumed(&spec, 5);
    assert_eq!(result.steps, 8);
    let ts = TrialStore::new(Store::open("s3://trials/runs").unwrap(), "tests", "on-s3");
    assert_eq!(ts.latest_step().unwrap(), Some(8));
    assert!(ts.store.get(&ts.keys.result()).unwrap().is_some());
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
