//! `hyper.codePretrainSteps`: C and g learn to rebuild the image through the code before a
//! compressing trial's own steps. What it trains and what it leaves alone, that the trial's
//! optimiser starts afresh after it, that it is refused where it makes no sense, that a resumed
//! run does not repeat it (it equals an uninterrupted one), and what the result says it cost.
//! And `hyper.reconstructionWeight`, the same objective kept beside the segmentation loss
//! during the trial's own steps.

mod common;

use common::{interrupted_then_resumed, snapshot, tiny_spec, trainer};
use orchestra_api::{TrialSpec, Variant};
use orchestra_worker::store::checkpoint::TrialStore;
use orchestra_worker::store::Store;
use orchestra_worker::train::reconstruction_loss::reconstruction_loss;
use orchestra_worker::train::{run_trial, Outcome, RunOptions, Trainer};
use tch::Kind;

/// C and g learn (the reconstruction loss falls by a third); s, the critic and the bit model
/// are bit-for-bit as they were; the trial has taken no step and its optimiser none either.
#[test]
fn pre_training_teaches_c_and_g_and_leaves_the_rest_alone() {
    let mut t = trainer(tiny_spec(Variant::D4, "memory://pretrain-groups", "pre"));
    let before = snapshot(&t);
    let mut seen = Vec::new();
    let losses = t
        .pretrain_code(40, &mut |done, loss| seen.push((done, loss)))
        .unwrap();
    assert_eq!(seen.len(), 40);
    assert_eq!(seen.last().unwrap().0, 40);
    eprintln!(
        "reconstruction MSE: first tenth {:.4}, last tenth {:.4}",
        losses.first, losses.last
    );
    assert!(seen.iter().all(|(_, l)| l.is_finite() && *l > 0.0), "{seen:?}");
    assert!(
        losses.last < 0.67 * losses.first,
        "the reconstruction did not learn: {losses:?}"
    );
    let after = snapshot(&t);
    for (name, old) in &before {
        let same = old.equal(&after[name]);
        let trained = name.starts_with("c.") || name.starts_with("g.");
        if !trained {
            assert!(same, "{name} changed in the code pre-training");
        }
    }
    for prefix in ["c.", "g."] {
        assert!(
            before
                .iter()
                .filter(|(n, _)| n.starts_with(prefix) && !n.ends_with("running_var"))
                .all(|(n, old)| !old.equal(&after[n])),
            "every tensor of {prefix} learns"
        );
    }
    assert_eq!(t.step, 0);
    let ckpt = t.checkpoint(0.0);
    assert!(
        ckpt.optimizer_steps.iter().all(|(_, n)| *n == 0),
        "{:?}",
        ckpt.optimizer_steps
    );
    assert!(
        ckpt.optimizer
            .iter()
            .all(|(n, m)| m.abs().sum(Kind::Double).double_value(&[]) == 0.0 || !n.starts_with("main.")),
        "the trial's optimiser forgets the pre-training's moments"
    );
    let m = t.train_step().unwrap();
    assert!(m.loss_seg.is_finite());
    assert_eq!(t.step, 1);
}

/// D1 has no code to pre-train, and a trial that has trained is past it.
#[test]
fn pre_training_is_refused_for_d1_and_after_the_first_step() {
    let mut d1 = trainer(tiny_spec(Variant::D1, "memory://pretrain-d1", "d1"));
    let err = d1.pretrain_code(2, &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("compressing variant"), "{err}");
    let mut d4 = trainer(tiny_spec(Variant::D4, "memory://pretrain-late", "late"));
    d4.train_step().unwrap();
    let err = d4.pretrain_code(2, &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("before the trial's first step"), "{err}");
}

fn with_pretraining(store: &str) -> TrialSpec {
    let mut spec = tiny_spec(Variant::D4, store, "resume");
    spec.hyper.code_pretrain_steps = 12;
    spec
}

/// metrics.jsonl's lines but for the evaluations' training seconds (wall-clock).
fn metrics(uri: &str) -> Vec<serde_json::Value> {
    let ts = TrialStore::new(Store::open(uri).unwrap(), "tests", "resume");
    let text = String::from_utf8(ts.store.get(&ts.keys.metrics()).unwrap().unwrap().to_vec()).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().map(|o| o.remove("trainSeconds"));
            v
        })
        .collect()
}

/// The pre-training changes what the trial learns, runs once: a run interrupted after its
/// first checkpoint and resumed equals an uninterrupted one (a resumed run that pre-trained
/// again would overwrite the checkpoint's C and g), and the result counts its steps.
#[test]
fn a_resumed_run_does_not_pre_train_again() {
    let Outcome::Finished(plain) = run_trial(
        &tiny_spec(Variant::D4, "memory://pretrain-none", "resume"),
        &RunOptions::default(),
    )
    .unwrap() else {
        panic!("did not finish")
    };
    let Outcome::Finished(a) =
        run_trial(&with_pretraining("memory://pretrain-a"), &RunOptions::default()).unwrap()
    else {
        panic!("did not finish")
    };
    assert_ne!(
        metrics("memory://pretrain-none"),
        metrics("memory://pretrain-a"),
        "the pre-training changed nothing"
    );
    let b = interrupted_then_resumed(&with_pretraining("memory://pretrain-b"), 5);
    assert_eq!(
        metrics("memory://pretrain-a"),
        metrics("memory://pretrain-b"),
        "losses differ after resume"
    );
    assert_eq!(a.scores, b.scores);
    assert_eq!((plain.code_pretrain_steps(), plain.steps_in_all()), (0, 8));
    assert_eq!((b.code_pretrain_steps(), b.steps_in_all()), (12, 8 + 12));
}

/// g's map against the image on the trial's first training batch, in inference mode.
fn rebuild_error(t: &Trainer) -> f64 {
    let (images, _) = t.shard_batch(0, 0);
    let map = tch::no_grad(|| t.model.rebuild(&images, false)).expect("a compressing variant");
    reconstruction_loss(&map, &images, map.size()[1]).double_value(&[])
}

/// With a reconstruction weight, C and g keep rebuilding the image while s learns: the step
/// reports the term, it falls, and g's map ends nearer the image than the same trial's without
/// the term (same seed, same batches). D1 has no g and reports no such term.
#[test]
fn a_reconstruction_weight_keeps_g_near_the_image() {
    let run = |weight: f64, name: &str| {
        let mut spec = tiny_spec(Variant::D4, &format!("memory://recon-{name}"), name);
        (spec.steps, spec.hyper.reconstruction_weight) = (30, weight);
        let mut t = trainer(spec);
        let losses: Vec<Option<f64>> = (0..30)
            .map(|_| t.train_step().unwrap().loss_reconstruction)
            .collect();
        (rebuild_error(&t), losses)
    };
    let (plain, none) = run(0.0, "off");
    assert!(none.iter().all(Option::is_none), "no weight, no term: {none:?}");
    let (kept, losses) = run(10.0, "on");
    let losses: Vec<f64> = losses
        .into_iter()
        .map(|l| l.expect("the term is reported"))
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    eprintln!("g's map against the image: {plain:.4} without the term, {kept:.4} with it; {losses:?}");
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{losses:?}");
    assert!(mean(&losses[25..]) < 0.67 * mean(&losses[..5]), "{losses:?}");
    assert!(kept < 0.67 * plain, "without {plain}, with {kept}");
    let mut d1 = tiny_spec(Variant::D1, "memory://recon-d1", "d1");
    d1.hyper.reconstruction_weight = 10.0;
    assert_eq!(trainer(d1).train_step().unwrap().loss_reconstruction, None);
}
