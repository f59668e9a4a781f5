//! Dice and IoU per foreground class, per image. An image where both the prediction and the
//! truth lack a class scores 1 for that class (no NaN on empty masks).

use orchestra_api::SegmentationScores;
use tch::{Kind, Tensor};

/// Per-image, per-foreground-class scores: two (N, classes - 1) tensors.
pub fn dice_iou(pred: &Tensor, truth: &Tensor, classes: i64) -> (Tensor, Tensor) {
    let mut dice = Vec::new();
    let mut iou = Vec::new();
    for c in 1..classes {
        let p = pred.eq(c).flatten(1, -1).to_kind(Kind::Float);
        let t = truth.eq(c).flatten(1, -1).to_kind(Kind::Float);
        let inter = (&p * &t).sum_dim_intlist(1, false, Kind::Float);
        let ps = p.sum_dim_intlist(1, false, Kind::Float);
        let ts = t.sum_dim_intlist(1, false, Kind::Float);
        let union = &ps + &ts - &inter;
        let empty = union.eq(0.0);
        let one = Tensor::ones_like(&inter);
        dice.push(one.where_self(&empty, &(&inter * 2.0 / (&ps + &ts).clamp_min(1.0))));
        iou.push(one.where_self(&empty, &(&inter / union.clamp_min(1.0))));
    }
    (Tensor::stack(&dice, 1), Tensor::stack(&iou, 1))
}

/// Mean Dice and IoU over every row (image or volume) and foreground class, and per class, from
/// `dice_iou`'s rows.
pub fn summarise(dice_rows: &[Tensor], iou_rows: &[Tensor], count: usize) -> SegmentationScores {
    let dice = Tensor::cat(dice_rows, 0).to_kind(Kind::Double);
    let iou = Tensor::cat(iou_rows, 0).to_kind(Kind::Double);
    let per_class =
        |t: &Tensor| -> Vec<f64> { Vec::try_from(t.mean_dim(0, false, Kind::Double)).unwrap_or_default() };
    SegmentationScores {
        dice: dice.mean(Kind::Double).double_value(&[]),
        iou: iou.mean(Kind::Double).double_value(&[]),
        dice_per_class: per_class(&dice),
        iou_per_class: per_class(&iou),
        images: count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[i64], n: i64) -> Tensor {
        Tensor::from_slice(v).view([n, -1])
    }

    fn values(x: &Tensor) -> Vec<f64> {
        Vec::try_from(x.flatten(0, -1).to_kind(Kind::Double)).unwrap()
    }

    #[test]
    fn hand_computed_cases() {
        // Image 0: perfect. Image 1: disjoint. Image 2: both empty. Image 3: 2 of 3 predicted
        // pixels right, truth has 4: dice = 2*2/(3+4) = 4/7, iou = 2/5.
        let pred = t(
            &[
                1, 1, 0, 0, 0, 0, /**/ 1, 1, 0, 0, 0, 0, /**/ 0, 0, 0, 0, 0, 0, /**/ 1, 1, 1,
                0, 0, 0,
            ],
            4,
        );
        let truth = t(
            &[
                1, 1, 0, 0, 0, 0, /**/ 0, 0, 1, 1, 0, 0, /**/ 0, 0, 0, 0, 0, 0, /**/ 0, 1, 1,
                1, 1, 0,
            ],
            4,
        );
        let (dice, iou) = dice_iou(&pred, &truth, 2);
        let d = values(&dice);
        let i = values(&iou);
        let expect_d = [1.0, 0.0, 1.0, 4.0 / 7.0];
        let expect_i = [1.0, 0.0, 1.0, 2.0 / 5.0];
        for k in 0..4 {
            assert!((d[k] - expect_d[k]).abs() < 1e-6, "dice[{k}] = {}", d[k]);
            assert!((i[k] - expect_i[k]).abs() < 1e-6, "iou[{k}] = {}", i[k]);
        }
    }

    #[test]
    fn multi_class_scores_each_foreground_class() {
        // One image; class 1 perfect, class 2 predicted where truth has nothing.
        let pred = t(&[1, 1, 2, 0], 1);
        let truth = t(&[1, 1, 0, 0], 1);
        let (dice, iou) = dice_iou(&pred, &truth, 3);
        assert_eq!(dice.size(), [1, 2]);
        assert_eq!(values(&dice), vec![1.0, 0.0]);
        assert_eq!(values(&iou), vec![1.0, 0.0]);
    }
}
