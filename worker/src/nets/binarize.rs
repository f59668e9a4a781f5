//! Stochastic binarization (Toderici et al. 2015) with a straight-through gradient.

use tch::{Kind, Tensor};

use super::rng;

/// Maps activations x in (-1, 1) to bits in {-1, +1}.
///
/// Training: b = +1 with probability (1 + x) / 2, else -1, so E[b] = x; the forward value is b
/// but the gradient passes straight through to x. Written `b + (x - x.detach())` rather than
/// `x + (b - x).detach()`: same gradient, but the forward value is exactly +-1 in floating point.
/// Inference: b = sign(x), with sign(0) = +1 so that every activation gives a bit.
pub fn binarize(x: &Tensor, train: bool) -> Tensor {
    if train {
        let p_plus = (x + 1.0) / 2.0;
        let b = rng::uniform_like(x).lt_tensor(&p_plus).to_kind(Kind::Float) * 2.0 - 1.0;
        &b + (x - x.detach())
    } else {
        x.ge(0.0).to_kind(Kind::Float) * 2.0 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_plus_minus_one_and_unbiased() {
        rng::reseed(0);
        let x = Tensor::full([20000], 0.4, (Kind::Float, tch::Device::Cpu));
        let b = binarize(&x, true);
        let values: Vec<f32> = Vec::try_from(b.unique_dim(0, true, false, false).0).unwrap();
        assert_eq!(values, vec![-1.0, 1.0]);
        let mean = b.mean(Kind::Float).double_value(&[]);
        assert!((mean - 0.4).abs() < 0.03, "E[b] = {mean}, expected 0.4");
    }

    #[test]
    fn inference_is_sign_with_zero_as_plus() {
        let x = Tensor::from_slice(&[-0.3f32, 0.0, 0.7]);
        let b: Vec<f32> = Vec::try_from(binarize(&x, false)).unwrap();
        assert_eq!(b, vec![-1.0, 1.0, 1.0]);
    }

    #[test]
    fn gradient_passes_straight_through() {
        let x = Tensor::from_slice(&[-0.5f32, 0.1, 0.9]).set_requires_grad(true);
        let b = binarize(&x, true);
        (b * Tensor::from_slice(&[1.0f32, 2.0, 3.0]))
            .sum(Kind::Float)
            .backward();
        let g: Vec<f32> = Vec::try_from(x.grad()).unwrap();
        assert_eq!(g, vec![1.0, 2.0, 3.0]);
    }
}
