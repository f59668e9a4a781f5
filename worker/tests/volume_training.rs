//! 3D trials: the paper's networks trained on patches of synthetic cardiac volumes (a 3D C and g,
//! nnU-Net's 3D U-Net as s, the critic on 3D label maps), evaluated on whole held-out volumes by
//! sliding window, with the rate of each volume's one real bitstream; and, when
//! `../shared/data` is there, the same on ACDC's real cardiac MR.

mod common;

use orchestra_api::{Hyper, ModelSpec, Preset, TrialSpec, Variant};
use orchestra_worker::data::{TrainingData, VolumeSet};
use orchestra_worker::eval::volumes::predict_volume;
use orchestra_worker::nets::Model;
use orchestra_worker::train::{run_trial, Outcome, RunOptions, Trainer};
use tch::{Device, Tensor};

const HEARTS: &str = "synthetic://heart3d?n=10&sides=16x48x48&seed=3&val=2";

fn spec_3d(variant: Variant, store: &str, trial: &str, steps: u64) -> TrialSpec {
    TrialSpec {
        dataset: HEARTS.into(),
        model: ModelSpec {
            downsample: Some(8),
            code_channels: Some(4),
            patch: Some(vec![16, 32, 32]),
            ..ModelSpec::new(Preset::Small, 32, 3)
        },
        hyper: Hyper {
            batch_size: 2,
            dis_warmup_steps: 5,
            ..Hyper::default()
        },
        steps,
        eval_every: 0,
        checkpoint_every: steps,
        ..common::tiny_spec(variant, store, trial)
    }
}

/// A D4 trial learns the two structures of the synthetic hearts within the test budget, scored
/// on whole held-out volumes, and its rate is the real stream's over the volumes' voxels.
#[test]
fn a_3d_d4_trial_learns_on_synthetic_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let spec = spec_3d(Variant::D4, &store, "heart-d4", 60);
    let data = TrainingData::open(&spec.dataset, &spec.model).unwrap();
    let mut trainer = Trainer::new(spec.clone(), data).unwrap();
    let before = trainer.evaluate();
    let first = trainer.train_step().unwrap();
    for _ in 1..spec.steps {
        trainer.train_step().unwrap();
    }
    let last = trainer.train_step().unwrap();
    let after = trainer.evaluate();
    eprintln!(
        "3D D4, {} steps: whole-volume Dice {:.3} -> {:.3} {:?}, bpp {:?}",
        spec.steps + 1,
        before.scores.dice,
        after.scores.dice,
        after.scores.dice_per_class,
        after.rate.as_ref().and_then(|r| r.bpp)
    );
    assert!(
        last.loss_seg < first.loss_seg,
        "loss {} -> {}",
        first.loss_seg,
        last.loss_seg
    );
    assert_eq!(after.scores.images, 2, "two whole validation volumes");
    assert_eq!(after.scores.dice_per_class.len(), 2, "myocardium and blood pool");
    assert!(
        after.scores.dice > before.scores.dice + 0.2 && after.scores.dice > 0.4,
        "whole-volume Dice {:.3} -> {:.3} ({:?})",
        before.scores.dice,
        after.scores.dice,
        after.scores.dice_per_class
    );
    let rate = after.rate.expect("D4 has a rate");
    assert_eq!(rate.round_trip_failures, 0);
    // 16 x 48 x 48 volumes at f = 8: one 4 x 2 x 6 x 6 code each, 288 bits before coding.
    assert_eq!(rate.code_bits, 288);
    let voxels = (16 * 48 * 48) as f64;
    assert!((rate.bits_per_pixel_raw - 288.0 / voxels).abs() < 1e-12);
    let bpp = rate.bpp.unwrap();
    let stream_bits = rate.mean_stream_bytes.unwrap() * 8.0;
    assert!(
        (bpp - stream_bits / voxels).abs() < 1e-12,
        "{bpp} vs {stream_bits} bits"
    );
    assert!(bpp > 0.0 && bpp < 0.05, "{bpp}");
}

/// A whole volume's prediction with one window covering it equals one forward pass of the
/// networks over the padded volume (the sliding window adds nothing when there is one window).
#[test]
fn one_window_prediction_is_one_forward_pass() {
    let set = VolumeSet::open("synthetic://heart3d?n=2&sides=16x32x32&seed=9&val=1").unwrap();
    let spec = ModelSpec {
        downsample: Some(8),
        patch: Some(vec![16, 32, 32]),
        ..ModelSpec::new(Preset::Small, 32, 3)
    };
    orchestra_worker::nets::rng::reseed(1);
    let model = Model::new(
        orchestra_worker::nets::config::resolve(&spec, 1, 3),
        Variant::D2,
        Device::Cpu,
    );
    let vol = &set.val[0];
    let p = predict_volume(&model, None, &vol.voxels, vol.sides, Device::Cpu, 4);
    let direct = tch::no_grad(|| {
        let x = Tensor::from_slice(&vol.voxels).view([1, 1, 16, 32, 32]);
        model.labels(&model.forward(&x, false).probs)
    });
    let direct: Vec<u8> = Vec::<i64>::try_from(direct.flatten(0, -1))
        .unwrap()
        .into_iter()
        .map(|v| v as u8)
        .collect();
    assert_eq!(p.labels, direct);
}

/// A 3D trial through `run_trial`: result, rung and checkpoint as for images, the leaderboard's
/// per-class scores filled; a volume dataset for a 2D model is refused with the reason.
#[test]
fn a_3d_trial_runs_end_to_end_and_mismatches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let spec = spec_3d(Variant::D1, &store, "heart-d1", 4);
    let outcome = run_trial(&spec, &RunOptions::default()).unwrap();
    let Outcome::Finished(result) = outcome else {
        panic!("finished")
    };
    assert_eq!(result.scores.dice_per_class.len(), 2);
    assert_eq!(result.source_bits_per_pixel, 16.0);

    let mut flat = spec_3d(Variant::D1, &store, "flat", 4);
    flat.model.dims = 2;
    flat.model.patch = None;
    let volumes = TrainingData::from(VolumeSet::open(HEARTS).unwrap());
    let err = Trainer::new(flat, volumes)
        .err()
        .expect("a 2D model on volumes")
        .to_string();
    assert!(err.contains("model.dims is not 3"), "{err}");
}

/// ACDC's real cine MR (when `../shared/data` is there): pairs read and checked, whole patients
/// held out, scans halved in-plane with the validation labels kept at the source resolution,
/// and a few D4 steps on real patches scored on whole real volumes.
#[test]
fn acdc_volumes_load_split_by_patient_and_train() {
    let Some(shared) = common::shared_data() else {
        return;
    };
    let root = shared.join("acdc");
    if !root.is_dir() {
        eprintln!("SKIP: {} is absent", root.display());
        return;
    }
    let uri = format!("file://{}?val=1&limit=6&downsample=1x2x2", root.display());
    let set = VolumeSet::open(&uri).unwrap();
    assert_eq!((set.train.len(), set.val.len(), set.classes), (4, 2, 4));
    let patient = |id: &str| id.split("_frame").next().unwrap().to_string();
    // fold=1 holds out the patient before fold 0's; three patients make three folds of one.
    let fold1 = VolumeSet::open(&format!("{uri}&fold=1")).unwrap();
    assert_eq!(patient(&fold1.val[0].id), "patient002");
    assert_eq!(patient(&set.val[0].id), "patient007");
    let err = VolumeSet::open(&format!("{uri}&fold=3"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("fold=3") && err.contains("fold 0 to 2"), "{err}");
    // Interleaved folds of six patients (001, 002, 007, 008, 011, 013) in pairs: fold 0 takes
    // the last and every third before it, where blocks take the last two.
    let six = format!("file://{}?val=2&limit=12&downsample=1x2x2", root.display());
    let held = |uri: String| {
        let mut p: Vec<String> = VolumeSet::open(&uri)
            .unwrap()
            .val
            .iter()
            .map(|v| patient(&v.id))
            .collect();
        p.dedup();
        p
    };
    assert_eq!(held(six.clone()), ["patient011", "patient013"]);
    assert_eq!(
        held(format!("{six}&folds=interleaved")),
        ["patient007", "patient013"]
    );
    assert_eq!(
        held(format!("{six}&folds=interleaved&fold=2")),
        ["patient001", "patient008"]
    );
    for v in &set.val {
        assert!(
            set.train.iter().all(|t| patient(&t.id) != patient(&v.id)),
            "{} is in both splits",
            v.id
        );
        let (source, labels) = v.truth();
        assert_eq!(labels.len(), source.iter().product::<usize>());
        assert_eq!(v.sides[0], source[0], "slices kept");
        assert_eq!(v.sides[1], source[1].div_ceil(2), "rows halved");
    }
    for v in set.train.iter().chain(&set.val) {
        // z-scored per volume.
        let n = v.voxels.len() as f64;
        let mean = v.voxels.iter().map(|&x| x as f64).sum::<f64>() / n;
        assert!(mean.abs() < 0.05, "{}: mean {mean}", v.id);
        assert!(!v.foreground.is_empty(), "{} has labelled voxels", v.id);
    }
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().display());
    let spec = TrialSpec {
        dataset: uri,
        model: ModelSpec {
            downsample: Some(4),
            patch: Some(vec![16, 64, 64]),
            ..ModelSpec::new(Preset::Small, 64, 3)
        },
        ..spec_3d(Variant::D4, &store, "acdc-d4", 4)
    };
    let mut trainer = Trainer::new(spec.clone(), TrainingData::from(set)).unwrap();
    for _ in 0..spec.steps {
        assert!(trainer.train_step().unwrap().loss_seg.is_finite());
    }
    let e = trainer.evaluate();
    assert_eq!(e.scores.dice_per_class.len(), 3, "RV, myocardium, LV");
    assert!(e.scores.dice_per_class.iter().all(|d| (0.0..=1.0).contains(d)));
    let rate = e.rate.unwrap();
    assert_eq!(rate.round_trip_failures, 0);
    assert!(rate.bpp.unwrap() > 0.0 && rate.bpp.unwrap() < rate.bits_per_pixel_raw * 1.5);
}
