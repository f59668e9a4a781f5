//! The segmentation losses of s's probabilities against the target (`Model::target`'s layout:
//! one map for binary tasks, one-hot classes otherwise): SegAN's mean squared error, and
//! nnU-Net's cross-entropy plus soft Dice.

use orchestra_api::{DistillLoss, SegLoss};
use tch::{Kind, Reduction, Tensor};

/// Keeps log() finite where a probability is 0.
const EPS: f64 = 1e-6;
/// nnU-Net's smoothing of the soft Dice: a class absent from both prediction and target scores 1.
const SMOOTH: f64 = 1e-5;

pub fn seg_loss(kind: SegLoss, probs: &Tensor, target: &Tensor) -> Tensor {
    match kind {
        SegLoss::Mse => probs.mse_loss(target, Reduction::Mean),
        SegLoss::DiceCe => dice_ce(probs, target),
    }
}

/// The distillation term: s's probabilities against a teacher's (`soft`, the same layout), by
/// their mean squared difference or by the trial's segmentation loss with `soft` as the target
/// (cross-entropy and soft Dice take soft targets as they are).
pub fn distill_loss(kind: DistillLoss, seg: SegLoss, probs: &Tensor, soft: &Tensor) -> Tensor {
    match kind {
        DistillLoss::Mse => seg_loss(SegLoss::Mse, probs, soft),
        DistillLoss::SegLoss => seg_loss(seg, probs, soft),
    }
}

/// Cross-entropy plus (1 - the mean soft Dice of the foreground classes), each sample's Dice
/// over its own voxels.
fn dice_ce(probs: &Tensor, target: &Tensor) -> Tensor {
    let binary = probs.size()[1] == 1;
    let (ce, fg_probs, fg_target) = if binary {
        let on: Tensor = target * (probs + EPS).log();
        let off: Tensor = (1.0 - target) * ((1.0 + EPS) - probs).log();
        let ce: Tensor = -(on + off);
        (
            ce.mean(Kind::Float),
            probs.shallow_clone(),
            target.shallow_clone(),
        )
    } else {
        let log_likelihood: Tensor = target * (probs + EPS).log();
        let ce = -log_likelihood.sum_dim_intlist(1, false, Kind::Float);
        let classes = probs.size()[1];
        (
            ce.mean(Kind::Float),
            probs.narrow(1, 1, classes - 1),
            target.narrow(1, 1, classes - 1),
        )
    };
    let spatial: Vec<i64> = (2..probs.dim() as i64).collect();
    let inter = (&fg_probs * &fg_target).sum_dim_intlist(spatial.as_slice(), false, Kind::Float);
    let total = fg_probs.sum_dim_intlist(spatial.as_slice(), false, Kind::Float)
        + fg_target.sum_dim_intlist(spatial.as_slice(), false, Kind::Float);
    let dice = (inter * 2.0 + SMOOTH) / (total + SMOOTH);
    ce + (1.0 - dice.mean(Kind::Float))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_hot(labels: &[i64], classes: i64) -> Tensor {
        Tensor::from_slice(labels)
            .view([1, -1])
            .one_hot(classes)
            .permute([0, 2, 1])
            .to_kind(Kind::Float)
    }

    #[test]
    fn a_perfect_prediction_scores_near_zero_and_a_missed_class_costs_a_dice() {
        let target = one_hot(&[0, 0, 1, 2, 2, 0], 3);
        let perfect = seg_loss(SegLoss::DiceCe, &target, &target).double_value(&[]);
        assert!(perfect.abs() < 1e-4, "{perfect}");
        // Class 1 (one voxel) predicted as background: CE of that voxel over 6, and class 1's
        // Dice of 0 halves the mean foreground Dice.
        let missed = one_hot(&[0, 0, 0, 2, 2, 0], 3);
        let loss = seg_loss(SegLoss::DiceCe, &missed, &target).double_value(&[]);
        let ce = -(EPS.ln()) / 6.0;
        assert!((loss - (ce + 0.5)).abs() < 1e-3, "{loss} vs {}", ce + 0.5);
        // MSE barely notices: 2 wrong values out of 18.
        let mse = seg_loss(SegLoss::Mse, &missed, &target).double_value(&[]);
        assert!((mse - 2.0 / 18.0).abs() < 1e-6, "{mse}");
    }

    #[test]
    fn distilling_by_the_seg_loss_weighs_a_mostly_background_volume_like_its_labels() {
        // 200 voxels, 4 of them foreground: the teacher is sure of everything, the student
        // misses the foreground class entirely.
        let labels: Vec<i64> = (0..200).map(|i| i64::from(i < 4)).collect();
        let teacher = one_hot(&labels, 2);
        let student = one_hot(&[0; 200], 2);
        let by_mse = distill_loss(DistillLoss::Mse, SegLoss::DiceCe, &student, &teacher).double_value(&[]);
        let by_seg = distill_loss(DistillLoss::SegLoss, SegLoss::DiceCe, &student, &teacher);
        let labels_loss = seg_loss(SegLoss::DiceCe, &student, &teacher);
        assert!((by_mse - 8.0 / 400.0).abs() < 1e-6, "{by_mse}");
        assert!((by_seg.double_value(&[]) - labels_loss.double_value(&[])).abs() < 1e-9);
        assert!(
            by_seg.double_value(&[]) > 50.0 * by_mse,
            "{by_seg} against {by_mse}"
        );
        // With segLoss: mse both are the squared difference.
        let mse_seg = distill_loss(DistillLoss::SegLoss, SegLoss::Mse, &student, &teacher).double_value(&[]);
        assert!((mse_seg - by_mse).abs() < 1e-9);
        // A student that agrees with its teacher scores what the labels would give it: ~0.
        let agree = distill_loss(DistillLoss::SegLoss, SegLoss::DiceCe, &teacher, &teacher).double_value(&[]);
        assert!(agree.abs() < 1e-4, "{agree}");
    }

    #[test]
    fn binary_maps_use_the_sigmoid_form() {
        let target = Tensor::from_slice(&[0.0f32, 1.0, 1.0, 0.0]).view([1, 1, 2, 2]);
        let half = Tensor::full([1, 1, 2, 2], 0.5, (Kind::Float, tch::Device::Cpu));
        let loss = seg_loss(SegLoss::DiceCe, &half, &target).double_value(&[]);
        // CE ln 2 everywhere; Dice 2 * 1 / (2 + 2) = 0.5.
        assert!((loss - (std::f64::consts::LN_2 + 0.5)).abs() < 1e-4, "{loss}");
    }
}
